//! The bound microscope's background thread (worker layer): it loads a run folder's
//! `model.safetensors` and test split, and answers the inspector panel's requests (one point's
//! bounds at an eps, its radii, the status of many points) with plain numbers.
//!
//! Each request carries its own cancel flag; the panel raises the flag of the request a newer
//! one replaces (the eps slider moved), and the engine checks it between steps, so a stale
//! computation stops early and the window never waits for it. Requests are answered in order
//! on a thread named `inspector`; a panic becomes a [`Reply::Failed`].
//!
//! The UI imports only this module's types; the result types of the engine
//! (`eval::PointBounds`, `eval::Radii`) are plain numbers and re-exported here.
use crate::attack::{self, AttackLoss, PgdConfig};
use crate::bounds::Ball;
use crate::config::{BoundMethod, ExperimentConfig, Norm};
use crate::data::Dataset;
use crate::eval::{decision_map, InspectOptions, Microscope};
use crate::failure;
use crate::metrics::{DecisionMap, PointStatus};
use crate::run;
use crate::train;
use crossbeam_channel::{unbounded, Receiver, Sender};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

pub use crate::eval::{Interval, LayerInspection, MarginCurve, PointBounds, Radii};

/// A run folder loaded for inspection: what the panel needs to know about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Subject {
    pub run_dir: PathBuf,
    pub name: String,
    /// Shape of one input without the batch dimension (`[2]` for the toys, `[C, H, W]`).
    pub input_shape: Vec<i64>,
    pub class_names: Vec<String>,
    pub test_len: usize,
    /// The run's eval norm and first eval eps (else its training eps): the slider's start.
    pub norm: Norm,
    pub eps: f64,
    /// For 2-D inputs: decision regions and the first test points (their indices 0..n).
    pub map: Option<DecisionMap>,
}

impl Subject {
    pub fn is_2d(&self) -> bool {
        self.input_shape == [2]
    }
}

/// What the panel asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Load a run folder (`model.safetensors`, or `model_best.safetensors` with `best`).
    Load { run_dir: PathBuf, best: bool },
    /// One test point's bounds, empirical ranges, margins and PGD point at one eps.
    Point {
        index: usize,
        eps: f64,
        norm: Norm,
        methods: Vec<BoundMethod>,
    },
    /// One test point's radii and margin-against-eps curve.
    Radii {
        index: usize,
        eps: f64,
        norm: Norm,
        methods: Vec<BoundMethod>,
    },
    /// The status of test points at one eps (certified by `method`, PGD, clean), and with
    /// `balls_up_to`, each one's largest certified eps on a grid up to that eps.
    Statuses {
        indices: Vec<usize>,
        eps: f64,
        norm: Norm,
        method: BoundMethod,
        balls_up_to: Option<f64>,
    },
    /// Test inputs, flattened, for thumbnails.
    Images { indices: Vec<usize> },
}

/// What the thread answers, in request order (cancelled requests get no answer).
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Loaded(Box<Subject>),
    Point {
        index: usize,
        /// The clean input, flattened.
        input: Vec<f32>,
        bounds: Box<PointBounds>,
        secs: f64,
    },
    Radii {
        index: usize,
        norm: Norm,
        radii: Box<Radii>,
        secs: f64,
    },
    Statuses {
        indices: Vec<usize>,
        eps: f64,
        status: Vec<PointStatus>,
        /// Largest certified eps per point (with `balls_up_to`).
        radius: Option<Vec<f64>>,
        secs: f64,
    },
    Images(Vec<(usize, Vec<f32>)>),
    Failed(String),
}

struct Job {
    request: Request,
    cancel: Arc<AtomicBool>,
}

/// The panel's side of the inspector thread.
pub struct InspectorHandle {
    jobs: Sender<Job>,
    pub replies: Receiver<Reply>,
}

impl InspectorHandle {
    /// Sends a request; returns its cancel flag (raise it when a newer request replaces it).
    pub fn send(&self, request: Request) -> Arc<AtomicBool> {
        let cancel = Arc::new(AtomicBool::new(false));
        let _ = self.jobs.send(Job {
            request,
            cancel: cancel.clone(),
        });
        cancel
    }
}

/// Starts the inspector thread. `wake` is called after every reply (the GUI passes a repaint
/// request), so the thread never depends on the UI toolkit.
pub fn spawn_inspector(wake: Box<dyn Fn() + Send>) -> Result<InspectorHandle, String> {
    let (job_tx, job_rx) = unbounded::<Job>();
    let (reply_tx, reply_rx) = unbounded::<Reply>();
    std::thread::Builder::new()
        .name("inspector".into())
        .spawn(move || {
            let mut state: Option<Loaded> = None;
            for job in job_rx.iter() {
                if job.cancel.load(Ordering::Relaxed) {
                    continue;
                }
                let reply = match failure::catch(|| answer(&mut state, job.request, &job.cancel)) {
                    Ok(Some(r)) => r,
                    Ok(None) => continue,
                    Err(panic) => Reply::Failed(panic.sentence),
                };
                if reply_tx.send(reply).is_err() {
                    break;
                }
                wake();
            }
        })
        .map_err(|e| format!("cannot start the inspector thread: {e}"))?;
    Ok(InspectorHandle {
        jobs: job_tx,
        replies: reply_rx,
    })
}

/// A loaded run: its float64 microscope and its test split.
struct Loaded {
    scope: Microscope,
    data: Dataset,
}

impl Loaded {
    fn x(&self, index: usize) -> Tensor {
        self.data.test_x.get(index as i64)
    }
    fn y(&self, index: usize) -> i64 {
        self.data.test_y.int64_value(&[index as i64])
    }
}

fn flat_f32(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).to_device(Device::Cpu).flatten(0, -1))
        .unwrap_or_default()
}

/// Answers one request (`None`: cancelled).
fn answer(state: &mut Option<Loaded>, request: Request, cancel: &AtomicBool) -> Option<Reply> {
    let t0 = Instant::now();
    if let Request::Load { run_dir, best } = &request {
        return Some(match load(run_dir, *best) {
            Ok((loaded, subject)) => {
                *state = Some(loaded);
                Reply::Loaded(Box::new(subject))
            }
            Err(e) => {
                *state = None;
                Reply::Failed(e)
            }
        });
    }
    let Some(s) = state.as_ref() else {
        return Some(Reply::Failed("no run loaded".into()));
    };
    let opts = InspectOptions::interactive;
    match request {
        Request::Load { .. } => None,
        Request::Point {
            index,
            eps,
            norm,
            methods,
        } => {
            let ball = Ball { eps, norm };
            let b = s
                .scope
                .bounds_at(&s.x(index), s.y(index), ball, &opts(methods), cancel)?;
            Some(Reply::Point {
                index,
                input: flat_f32(&s.x(index)),
                bounds: Box::new(b),
                secs: t0.elapsed().as_secs_f64(),
            })
        }
        Request::Radii {
            index,
            eps,
            norm,
            methods,
        } => {
            let r = s
                .scope
                .radii(&s.x(index), s.y(index), norm, eps, &opts(methods), cancel)?;
            Some(Reply::Radii {
                index,
                norm,
                radii: Box::new(r),
                secs: t0.elapsed().as_secs_f64(),
            })
        }
        Request::Statuses {
            indices,
            eps,
            norm,
            method,
            balls_up_to,
        } => statuses(s, indices, Ball { eps, norm }, method, balls_up_to, cancel),
        Request::Images { indices } => Some(Reply::Images(
            indices
                .into_iter()
                .filter(|&i| (i as i64) < s.data.test_len())
                .map(|i| (i, flat_f32(&s.x(i))))
                .collect(),
        )),
    }
}

/// Loads the run folder's config, network and weights (on the CPU) and its test split.
fn load(run_dir: &Path, best: bool) -> Result<(Loaded, Subject), String> {
    let file = if best {
        run::BEST_MODEL_FILE
    } else {
        run::MODEL_FILE
    };
    let model_path = run_dir.join(file);
    if !model_path.exists() {
        return Err(format!(
            "{} has no {file} yet (a run saves its model after its first epoch)",
            run_dir.display()
        ));
    }
    let data = run::load_run(run_dir).map_err(|e| e.to_string())?;
    let cfg: ExperimentConfig = data.config;
    let prep = train::prepare(&cfg, Device::Cpu).map_err(|e| e.to_string())?;
    let mut net = prep.net;
    net.load_weights(&model_path).map_err(|e| e.to_string())?;
    let ds = prep.data;
    let scope = Microscope::new(&net).map_err(|e| format!("cannot inspect this run: {e}"))?;
    let map = (ds.input_shape == [2])
        .then(|| decision_map(&net, &ds.test_x, &ds.test_y, None, 0, 96, 400));
    let eps = cfg.eval.eps.first().copied().unwrap_or(cfg.train.eps);
    // A run trained and evaluated without eps still gets a ball to look at.
    let eps = if eps > 0.0 {
        eps
    } else {
        match cfg.eval.norm {
            Norm::Linf => 0.05,
            Norm::L2 => 0.5,
        }
    };
    let subject = Subject {
        run_dir: run_dir.to_path_buf(),
        name: run_dir.file_name().map_or_else(
            || run_dir.display().to_string(),
            |n| n.to_string_lossy().into(),
        ),
        input_shape: ds.input_shape.clone(),
        class_names: ds.class_names.clone(),
        test_len: ds.test_len() as usize,
        norm: cfg.eval.norm,
        eps,
        map,
    };
    Ok((Loaded { scope, data: ds }, subject))
}

/// Status of each point: misclassified, certified by `method`, PGD-robust, or broken by PGD.
fn statuses(
    s: &Loaded,
    indices: Vec<usize>,
    ball: Ball,
    method: BoundMethod,
    balls_up_to: Option<f64>,
    cancel: &AtomicBool,
) -> Option<Reply> {
    let t0 = Instant::now();
    let n = s.data.test_len();
    let idx: Vec<i64> = indices
        .iter()
        .map(|&i| i as i64)
        .filter(|&i| i < n)
        .collect();
    let it = Tensor::from_slice(&idx);
    let x = s.data.test_x.index_select(0, &it).to_kind(Kind::Double);
    let y = s.data.test_y.index_select(0, &it);
    let net = s.scope.network();
    let clean =
        Vec::<bool>::try_from(tch::no_grad(|| attack::correct(net, &x, &y))).unwrap_or_default();
    if cancel.load(Ordering::Relaxed) {
        return None;
    }
    let cfg = PgdConfig::evaluation(ball.eps, ball.norm, 20, 1, AttackLoss::Margin);
    let broken = attack::pgd(net, &x, &y, &cfg).margin.lt(0.0);
    let broken = Vec::<bool>::try_from(broken).unwrap_or_default();
    if cancel.load(Ordering::Relaxed) {
        return None;
    }
    let cert = s.scope.certify_points(&x, &y, ball, method);
    let status = (0..idx.len())
        .map(|i| {
            if !clean[i] {
                PointStatus::Misclassified
            } else if cert[i] {
                PointStatus::Certified
            } else if !broken[i] {
                PointStatus::PgdRobust
            } else {
                PointStatus::CleanOnly
            }
        })
        .collect();
    let radius = match balls_up_to {
        Some(top) => {
            let grid: Vec<f64> = (0..=32).map(|k| top * k as f64 / 32.0).collect();
            Some(
                s.scope
                    .certified_radii_on_grid(&x, &y, ball.norm, method, &grid, cancel)?,
            )
        }
        _ => None,
    };
    Some(Reply::Statuses {
        indices: idx.iter().map(|&i| i as usize).collect(),
        eps: ball.eps,
        status,
        radius,
        secs: t0.elapsed().as_secs_f64(),
    })
}

/// The relaxation lines `method` puts on a ReLU whose pre-activation bounds are
/// `[l, u]`, as `(lower_slope, lower_intercept, upper_slope, upper_intercept)` of
/// `a >= lower_slope z + lower_intercept` and `a <= upper_slope z + upper_intercept`
/// (DESIGN.md, "Backward linear relaxation"). IBP has no lines: its relaxation is the box
/// `relu(l) <= a <= relu(u)`, returned as two flat lines.
pub fn relu_lines(method: BoundMethod, l: f64, u: f64) -> (f64, f64, f64, f64) {
    if u <= 0.0 {
        return (0.0, 0.0, 0.0, 0.0);
    }
    if l >= 0.0 {
        return (1.0, 0.0, 1.0, 0.0);
    }
    let s = u / (u - l);
    match method {
        BoundMethod::Ibp => (0.0, 0.0, 0.0, u),
        BoundMethod::Fastlin => (s, 0.0, s, -s * l),
        // alpha-CROWN starts from CROWN's lines and moves each lower slope within [0, 1] per
        // point and row; the lines drawn are its starting point.
        BoundMethod::Crown | BoundMethod::CrownIbp | BoundMethod::AlphaCrown => {
            let a = if u >= -l { 1.0 } else { 0.0 };
            (a, 0.0, s, -s * l)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines drawn for each method bound the ReLU on `[l, u]` (checked on a grid), the
    /// upper chord meets it at both ends, and CROWN's lower line is the ReLU's own piece on the
    /// longer side.
    #[test]
    fn relu_lines_bound_the_relu_on_the_interval() {
        for (l, u) in [
            (-1.0, 2.0),
            (-2.0, 0.5),
            (-0.3, 0.3),
            (0.2, 1.0),
            (-1.0, -0.1),
        ] {
            for m in BoundMethod::ALL {
                let (ls, li, us, ui) = relu_lines(m, l, u);
                for k in 0..=100 {
                    let z = l + (u - l) * k as f64 / 100.0;
                    let a = f64::max(z, 0.0);
                    assert!(ls * z + li <= a + 1e-12, "{} lower at {z}", m.name());
                    assert!(a <= us * z + ui + 1e-12, "{} upper at {z}", m.name());
                }
                if m != BoundMethod::Ibp {
                    assert!((us * l + ui - l.max(0.0)).abs() < 1e-12);
                    assert!((us * u + ui - u.max(0.0)).abs() < 1e-12);
                }
            }
            if l < 0.0 && u > 0.0 {
                let (ls, ..) = relu_lines(BoundMethod::Crown, l, u);
                assert_eq!(ls, if u >= -l { 1.0 } else { 0.0 });
            }
        }
    }
}
