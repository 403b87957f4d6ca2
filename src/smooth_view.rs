//! Randomized smoothing in the 2-D view (worker layer): the smoothed classifier's decision
//! regions on a grid and one point's noise cloud with its CERTIFY radius (Cohen et al. 2019),
//! for a run folder's model, as plain numbers.
//!
//! The smoothed classifier is `g(x) = argmax_c P(f(x + delta) = c)` with `delta` the run's noise
//! at level `sigma`. On the grid it is estimated by Monte Carlo: `draws` noisy copies of every
//! cell centre, all pushed through the base network `f` in large batches, and the majority
//! class per cell (with its vote share). A point's cloud is `samples` draws of `x + delta`
//! coloured by `f`; its radius is the engine's CERTIFY with the run's `n0`, `n` and `alpha`,
//! run before the cloud is drawn so that, under the same seed, it is the radius
//! `certlab smooth --points 1` reports for test point 0.
//!
//! Each job runs on its own thread named `smoothing-view` and answers once through a channel;
//! the window polls it (one job at a time, see [`VIEW_SEED`]), so a 64 x 64 grid with 128
//! draws per cell (half a million forward rows) never stalls a frame.
use crate::config::{ExperimentConfig, Method, Noise, RadiusNorm};
use crate::data::Dataset;
use crate::eval::smoothing::{self, noise_like, Probe, SmoothParams, ABSTAIN};
use crate::failure;
use crate::model::Network;
use crate::run;
use crate::train;
use crossbeam_channel::{bounded, Receiver};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// The seed of every job the window starts: the view is reproducible, and test point 0's
/// radius is the one `certlab smooth RUN --points 1` prints (its default `--seed` is 0; for
/// a later point the command's noise stream has been used by the points before it). The
/// global generator this seeds is reseeded by every model load anyway (`train::prepare`).
pub const VIEW_SEED: i64 = 0;

/// Noisy rows per forward pass on the grid.
const GRID_BATCH_ROWS: i64 = 1 << 16;

/// The noise and CERTIFY budget of a model's smoothed classifier.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SmoothSettings {
    pub noise: Noise,
    /// Per-coordinate standard deviation (as in `[eval.smoothing]`).
    pub sigma: f64,
    pub n0: u64,
    pub n: u64,
    pub alpha: f64,
    pub batch: u64,
}

impl SmoothSettings {
    /// The smoothed classifiers a run's config asks about: one per `eval.smoothing.sigma`
    /// level, then the training noise of `method = "gaussian"` or `"rat"` if it is not already
    /// one of them (CERTIFY's budget from `[eval.smoothing]` either way). Empty for a model
    /// without noise.
    pub fn of(cfg: &ExperimentConfig) -> Vec<SmoothSettings> {
        let s = &cfg.eval.smoothing;
        let at = |noise: Noise, sigma: f64| SmoothSettings {
            noise,
            sigma,
            n0: s.n0,
            n: s.n,
            alpha: s.alpha,
            batch: s.batch,
        };
        let mut out: Vec<SmoothSettings> = s.sigma.iter().map(|&sg| at(s.noise, sg)).collect();
        let t = &cfg.train;
        if matches!(t.method, Method::Gaussian | Method::Rat) && t.noise_sigma > 0.0 {
            let own = at(t.noise, t.noise_sigma);
            if !out
                .iter()
                .any(|o| o.noise == own.noise && o.sigma == own.sigma)
            {
                out.push(own);
            }
        }
        out
    }

    pub fn radius_norm(&self) -> RadiusNorm {
        self.noise.radius_norm()
    }

    fn probe(&self) -> Probe {
        Probe {
            noise: self.noise,
            sigma: self.sigma,
        }
    }
}

/// The smoothed classifier on a `resolution`^2 grid over [0, 1]^2, laid out as
/// [`crate::metrics::DecisionMap::prob`] (row-major, row 0 at x2 = 0, cell centres).
#[derive(Debug, Clone, PartialEq)]
pub struct SmoothedRegions {
    pub resolution: usize,
    pub draws: u64,
    pub settings: SmoothSettings,
    /// The majority class of each cell (ties to the lower class).
    pub majority: Vec<i64>,
    /// Each cell's vote share of class 1 (two classes; empty otherwise).
    pub share1: Vec<f32>,
}

/// One point's noise cloud and certificate.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseCloud {
    pub index: usize,
    pub center: [f32; 2],
    pub label: i64,
    pub settings: SmoothSettings,
    /// `x + delta` for each draw, and the base network's class there.
    pub samples: Vec<[f32; 2]>,
    pub predictions: Vec<i64>,
    /// CERTIFY's class, or [`ABSTAIN`].
    pub prediction: i64,
    /// The certified radius in [`SmoothSettings::radius_norm`] (0 when abstaining).
    pub radius: f64,
    /// The Clopper-Pearson lower bound on the top class's probability.
    pub p_a: f64,
}

impl NoiseCloud {
    pub fn abstains(&self) -> bool {
        self.prediction == ABSTAIN
    }
}

/// The cell centres of the grid, `[r^2, 2]`, x1 running fastest.
fn grid(resolution: usize, device: Device) -> Tensor {
    let r = resolution as i64;
    let ticks = (Tensor::arange(r, (Kind::Float, device)) + 0.5) / r as f64;
    let gx = ticks.repeat([r]);
    let gy = ticks.repeat_interleave_self_int(r, 0, None);
    Tensor::stack(&[gx, gy], 1)
}

fn to_f32(t: &Tensor) -> Result<Vec<f32>, String> {
    let flat = t.to_device(Device::Cpu).to_kind(Kind::Float).reshape([-1]);
    Vec::<f32>::try_from(flat).map_err(|e| e.to_string())
}

fn to_i64(t: &Tensor) -> Result<Vec<i64>, String> {
    let flat = t.to_device(Device::Cpu).to_kind(Kind::Int64).reshape([-1]);
    Vec::<i64>::try_from(flat).map_err(|e| e.to_string())
}

/// The smoothed classifier's regions: `draws` noisy copies per cell centre, the majority
/// class of the base network per cell.
pub fn smoothed_regions(
    net: &Network,
    settings: SmoothSettings,
    resolution: usize,
    draws: u64,
) -> Result<SmoothedRegions, String> {
    let classes = net.num_classes;
    let cells = grid(resolution, net.device());
    let total = cells.size()[0];
    let draws_i = draws.max(1) as i64;
    let per_chunk = (GRID_BATCH_ROWS / draws_i).max(1);
    let mut counts = Vec::new();
    tch::no_grad(|| {
        let mut start = 0;
        while start < total {
            let c = per_chunk.min(total - start);
            let chunk = cells.narrow(0, start, c);
            let copies = chunk.unsqueeze(0).expand([draws_i, c, 2], false);
            let noisy = &copies + noise_like(&copies, settings.noise, settings.sigma);
            let pred = net
                .forward(&noisy.reshape([draws_i * c, 2]))
                .argmax(1, false)
                .reshape([draws_i, c]);
            // [c, classes] vote counts of this chunk.
            counts.push(pred.one_hot(classes).sum_dim_intlist(0, false, Kind::Int64));
            start += c;
        }
    });
    let counts = Tensor::cat(&counts, 0);
    let majority = to_i64(&counts.argmax(1, false))?;
    let share1 = if classes == 2 {
        to_f32(&(counts.select(1, 1).to_kind(Kind::Float) / draws_i as f64))?
    } else {
        Vec::new()
    };
    Ok(SmoothedRegions {
        resolution,
        draws,
        settings,
        majority,
        share1,
    })
}

/// CERTIFY on the point `x` (`[1, 2]`), then `samples` draws of its noise cloud. With `seed`
/// the noise generator is seeded first (the same stream as `certlab smooth --seed`).
pub fn noise_cloud(
    net: &Network,
    x: &Tensor,
    index: usize,
    label: i64,
    settings: SmoothSettings,
    samples: usize,
    seed: Option<i64>,
) -> Result<NoiseCloud, String> {
    if let Some(s) = seed {
        tch::manual_seed(s);
    }
    let params = SmoothParams {
        probes: vec![settings.probe()],
        n0: settings.n0,
        n: settings.n,
        alpha: settings.alpha,
        batch: settings.batch,
    };
    let cert = smoothing::certify(net, x, &params, &mut |_| false)
        .and_then(|c| c.into_iter().next())
        .ok_or("CERTIFY returned no certificate")?;
    let (pts, pred) = tch::no_grad(|| {
        let copies = x.expand([samples as i64, 2], false);
        let noisy = &copies + noise_like(&copies, settings.noise, settings.sigma);
        let pred = net.forward(&noisy).argmax(1, false);
        (noisy, pred)
    });
    let flat = to_f32(&pts)?;
    let c = to_f32(x)?;
    Ok(NoiseCloud {
        index,
        center: [c[0], c[1]],
        label,
        settings,
        samples: flat.chunks_exact(2).map(|p| [p[0], p[1]]).collect(),
        predictions: to_i64(&pred)?,
        prediction: cert.prediction,
        radius: cert.radius,
        p_a: cert.p_a,
    })
}

/// What the 2-D view asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum SmoothJob {
    Regions { resolution: usize, draws: u64 },
    Cloud { index: usize, samples: usize },
}

/// Its answer.
#[derive(Debug, Clone, PartialEq)]
pub enum SmoothAnswer {
    Regions(SmoothedRegions),
    Cloud(NoiseCloud),
}

/// Loads a run folder's network (on the CPU, `best`: `model_best.safetensors`) and data.
fn load(run_dir: &Path, best: bool) -> Result<(Network, Dataset), String> {
    let file = if best {
        run::BEST_MODEL_FILE
    } else {
        run::MODEL_FILE
    };
    let data = run::load_run(run_dir).map_err(|e| e.to_string())?;
    let prep = train::prepare(&data.config, Device::Cpu).map_err(|e| e.to_string())?;
    let mut net = prep.net;
    net.load_weights(&run_dir.join(file))
        .map_err(|e| e.to_string())?;
    if prep.data.input_shape != [2] {
        return Err("the smoothed 2-D view is for 2-D inputs".into());
    }
    Ok((net, prep.data))
}

/// Runs one job on the calling thread.
pub fn run_smooth_job(
    run_dir: &Path,
    best: bool,
    settings: SmoothSettings,
    job: &SmoothJob,
    seed: Option<i64>,
) -> Result<SmoothAnswer, String> {
    let (net, data) = load(run_dir, best)?;
    match *job {
        SmoothJob::Regions { resolution, draws } => {
            if let Some(s) = seed {
                tch::manual_seed(s);
            }
            smoothed_regions(&net, settings, resolution, draws).map(SmoothAnswer::Regions)
        }
        SmoothJob::Cloud { index, samples } => {
            if index as i64 >= data.test_len() {
                return Err(format!("test index {index} is out of range"));
            }
            let x = data.test_x.narrow(0, index as i64, 1).to_kind(Kind::Float);
            let label = data.test_y.int64_value(&[index as i64]);
            noise_cloud(&net, &x, index, label, settings, samples, seed).map(SmoothAnswer::Cloud)
        }
    }
}

/// Runs one job on a thread of its own, seeded with [`VIEW_SEED`]; the answer (or the error, or the panic as a
/// sentence) comes once through the returned channel, after which `wake` is called.
pub fn spawn_smooth_job(
    run_dir: PathBuf,
    best: bool,
    settings: SmoothSettings,
    job: SmoothJob,
    wake: Box<dyn Fn() + Send>,
) -> Result<Receiver<Result<SmoothAnswer, String>>, String> {
    let (tx, rx) = bounded(1);
    std::thread::Builder::new()
        .name("smoothing-view".into())
        .spawn(move || {
            let answer =
                failure::catch(|| run_smooth_job(&run_dir, best, settings, &job, Some(VIEW_SEED)))
                    .unwrap_or_else(|panic| Err(panic.sentence));
            let _ = tx.send(answer);
            wake();
        })
        .map_err(|e| format!("cannot start the smoothing thread: {e}"))?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::smoothing::normal_cdf;
    use crate::model::{Layer, LayerSpec};

    #[test]
    fn a_linear_models_vote_shares_are_the_gaussian_closed_form() {
        // For f(x) = argmax(W x + b) with two classes, P(f(x + delta) = 1) under N(0, s^2 I)
        // is Phi(m(x) / (s ||w||)) with m = (w_1 - w_0) x + (b_1 - b_0).
        tch::manual_seed(3);
        let spec = LayerSpec::Linear {
            in_features: 2,
            out_features: 2,
        };
        let net = Network::new(vec![spec], &[2], 2, Device::Cpu).unwrap();
        let Layer::Linear { weight, bias } = &net.layers[0] else {
            panic!("linear layer expected");
        };
        let w = Vec::<f64>::try_from(weight.to_kind(Kind::Double).reshape([-1])).unwrap();
        let b = Vec::<f64>::try_from(bias.to_kind(Kind::Double)).unwrap();
        let (w1, w2, b0) = (w[2] - w[0], w[3] - w[1], b[1] - b[0]);
        let norm = (w1 * w1 + w2 * w2).sqrt();
        let sigma = 0.3;
        let settings = SmoothSettings {
            noise: Noise::Gaussian,
            sigma,
            n0: 10,
            n: 10,
            alpha: 0.01,
            batch: 10,
        };
        let (r, draws) = (12, 400);
        let reg = smoothed_regions(&net, settings, r, draws).unwrap();
        assert_eq!(reg.share1.len(), r * r);
        let se = (0.25 / draws as f64).sqrt();
        let mut worst: f64 = 0.0;
        for row in 0..r {
            for col in 0..r {
                let (x1, x2) = ((col as f64 + 0.5) / r as f64, (row as f64 + 0.5) / r as f64);
                let p = normal_cdf((w1 * x1 + w2 * x2 + b0) / (sigma * norm));
                let got = reg.share1[row * r + col] as f64;
                worst = worst.max((got - p).abs());
                assert_eq!(reg.majority[row * r + col], i64::from(got > 0.5));
            }
        }
        assert!(worst < 5.0 * se, "{worst} vs 5 se {}", 5.0 * se);
    }
}
