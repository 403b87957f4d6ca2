//! Evaluation: clean accuracy, PGD accuracy and certified accuracy per bound method, with a
//! consistency check between them, and the `certlab eval` command.
//!
//! A point is PGD-robust only if it is correctly classified and no iterate of any restart is
//! misclassified; certified only if every margin lower bound is positive. The clean input is
//! in the ball, and PGD only ever returns points of the ball, so a point certified by a sound
//! bound can be neither misclassified nor broken by PGD: when that happens the evaluation
//! reports a [`Violation`] naming the point and the bound method.
use crate::attack::{self, AttackLoss, PgdConfig};
use crate::bounds::{self, Ball, BoundMethod};
use crate::config::{ExperimentConfig, Norm};
use crate::metrics::{DecisionMap, EpsEval, PointStatus};
use crate::model::Network;
use std::fmt;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// One robust evaluation to run: an eps, a norm, the bound methods and the PGD budget.
#[derive(Debug, Clone, PartialEq)]
pub struct RobustSpec {
    pub eps: f64,
    pub norm: Norm,
    pub bounds: Vec<BoundMethod>,
    /// 0 turns PGD off.
    pub pgd_steps: u32,
    pub pgd_restarts: u32,
    pub pgd_loss: AttackLoss,
}

impl RobustSpec {
    /// The attack of this evaluation (see [`PgdConfig::evaluation`]).
    pub fn pgd_config(&self) -> PgdConfig {
        PgdConfig::evaluation(
            self.eps,
            self.norm,
            self.pgd_steps,
            self.pgd_restarts,
            self.pgd_loss,
        )
    }
}

pub fn specs_from_config(cfg: &ExperimentConfig) -> Vec<RobustSpec> {
    let e = &cfg.eval;
    e.eps
        .iter()
        .map(|&eps| RobustSpec {
            eps,
            norm: e.norm,
            bounds: e.bounds.clone(),
            pgd_steps: e.pgd_steps,
            pgd_restarts: e.pgd_restarts,
            pgd_loss: AttackLoss::CrossEntropy,
        })
        .collect()
}

/// Fraction of correctly classified examples, evaluated in batches without gradients.
pub fn clean_accuracy(net: &Network, x: &Tensor, y: &Tensor, batch: i64) -> f64 {
    let n = y.size()[0];
    if n == 0 {
        return 0.0;
    }
    tch::no_grad(|| {
        let mut correct = 0i64;
        let mut start = 0;
        while start < n {
            let len = batch.min(n - start);
            let xb = x.narrow(0, start, len);
            let yb = y.narrow(0, start, len);
            correct += attack::correct(net, &xb, &yb)
                .sum(Kind::Int64)
                .int64_value(&[]);
            start += len;
        }
        correct as f64 / n as f64
    })
}

/// A point that a bound certifies although it is misclassified or PGD breaks it: a bug in the
/// bound or in the attack.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// Index of the point in the evaluated set.
    pub index: i64,
    pub method: BoundMethod,
    pub eps: f64,
    pub norm: Norm,
    /// The smallest margin lower bound over the other classes (positive: certified).
    pub bound_margin: f64,
    /// The margin at the worst point the attack found (negative: misclassified there).
    pub attack_margin: f64,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "soundness violation: test point {} is certified by `{}` at eps {} ({}) with margin \
             lower bound {:.6e}, but the attack found a point of the ball with margin {:.6e} \
             (a bug in the bound or the attack)",
            self.index,
            self.method.name(),
            self.eps,
            self.norm.name(),
            self.bound_margin,
            self.attack_margin
        )
    }
}

/// Per-example results of a robust evaluation of one batch.
pub struct RobustMasks {
    /// Correctly classified (`[B]` bool).
    pub clean: Tensor,
    /// Correct and PGD found no misclassified point (`[B]` bool); `None` without PGD.
    pub pgd: Option<Tensor>,
    /// The lowest margin PGD found (`[B]`); `None` without PGD.
    pub pgd_margin: Option<Tensor>,
    /// Per bound method: correct and certified (`[B]` bool).
    pub cert: Vec<(BoundMethod, Tensor)>,
    /// Per bound method: the smallest margin lower bound over the other classes (`[B]`).
    pub bound_margin: Vec<Tensor>,
    /// Points certified by a bound but misclassified or broken by PGD (indices in the batch).
    pub violations: Vec<Violation>,
    /// Seconds spent in PGD and in each bound method (synchronised with the device).
    pub pgd_secs: f64,
    pub cert_secs: Vec<f64>,
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// The smallest entry of each row of margin lower bounds, ignoring the label's own entry.
fn min_other_margin(margins_lower: &Tensor, y: &Tensor) -> Tensor {
    margins_lower
        .scatter_value(1, &y.unsqueeze(1), f64::INFINITY)
        .amin([1], false)
}

#[cfg(test)]
thread_local! {
    /// Test hook: a shift added to every margin lower bound, to make a bound unsound on
    /// purpose and prove that the consistency check catches it.
    static UNSOUND_SHIFT: std::cell::Cell<Option<f64>> = const { std::cell::Cell::new(None) };
}

/// Per-example robustness of one batch. A point is PGD-robust only if it is correct and no
/// restart finds an adversarial example; certified only if correct and every margin bound > 0.
pub fn robust_masks(net: &Network, x: &Tensor, y: &Tensor, spec: &RobustSpec) -> RobustMasks {
    let device = x.device();
    let clean = tch::no_grad(|| attack::correct(net, x, y));
    let started = Instant::now();
    let attacked = (spec.pgd_steps > 0).then(|| {
        let res = attack::pgd(net, x, y, &spec.pgd_config());
        let robust = tch::no_grad(|| attack::correct(net, &res.x_adv, y)).logical_and(&clean);
        (robust, res.margin)
    });
    sync(device);
    let pgd_secs = started.elapsed().as_secs_f64();
    let ball = Ball {
        eps: spec.eps,
        norm: spec.norm,
    };
    // Without PGD, the clean point is the only attack.
    let unbroken = attacked.as_ref().map_or(&clean, |(r, _)| r);
    let mut cert = Vec::new();
    let mut bound_margin = Vec::new();
    let mut cert_secs = Vec::new();
    let mut violations = Vec::new();
    for &method in &spec.bounds {
        let started = Instant::now();
        let lower = tch::no_grad(|| bounds::margin_lower(net, x, y, ball, method));
        #[cfg(test)]
        let lower = match UNSOUND_SHIFT.with(|c| c.get()) {
            Some(shift) => lower + shift,
            None => lower,
        };
        let certified = bounds::certified(&lower, y);
        let worst = min_other_margin(&lower, y);
        sync(device);
        cert_secs.push(started.elapsed().as_secs_f64());
        let bad = certified.logical_and(&unbroken.logical_not());
        if bad.any().int64_value(&[]) != 0 {
            let attack_margin = match &attacked {
                Some((_, m)) => m.shallow_clone(),
                None => tch::no_grad(|| attack::margins(&net.forward(x), y)),
            };
            let idx = Vec::<i64>::try_from(bad.nonzero().reshape([-1])).unwrap_or_default();
            for i in idx {
                violations.push(Violation {
                    index: i,
                    method,
                    eps: spec.eps,
                    norm: spec.norm,
                    bound_margin: worst.double_value(&[i]),
                    attack_margin: attack_margin.double_value(&[i]),
                });
            }
        }
        cert.push((method, certified.logical_and(&clean)));
        bound_margin.push(worst);
    }
    let (pgd, pgd_margin) = match attacked {
        Some((r, m)) => (Some(r), Some(m)),
        None => (None, None),
    };
    RobustMasks {
        clean,
        pgd,
        pgd_margin,
        cert,
        bound_margin,
        violations,
        pgd_secs,
        cert_secs,
    }
}

/// The result of a robust evaluation over a set.
#[derive(Debug, Clone, PartialEq)]
pub struct RobustReport {
    /// The accuracies as written to `metrics.jsonl`.
    pub eval: EpsEval,
    /// Number of points evaluated.
    pub n: i64,
    /// Clean accuracy on the same points.
    pub clean_acc: f64,
    /// Every point certified by a bound but misclassified or broken by PGD (indices in the set).
    pub violations: Vec<Violation>,
    pub pgd_secs: f64,
    /// Seconds per bound method, in the order of `spec.bounds`.
    pub cert_secs: Vec<f64>,
}

/// Accuracies of one robust evaluation over a set, in batches.
pub fn robust_eval(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    spec: &RobustSpec,
    batch: i64,
) -> RobustReport {
    robust_eval_with_progress(net, x, y, spec, batch, &mut |_, _| {})
}

/// [`robust_eval`], calling `progress(done, total)` after every batch.
pub fn robust_eval_with_progress(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    spec: &RobustSpec,
    batch: i64,
    progress: &mut dyn FnMut(i64, i64),
) -> RobustReport {
    let n = y.size()[0];
    let batch = batch.max(1);
    let mut clean_count = 0i64;
    let mut pgd_count = 0i64;
    let mut cert_counts = vec![0i64; spec.bounds.len()];
    let mut violations = Vec::new();
    let mut pgd_secs = 0.0;
    let mut cert_secs = vec![0.0; spec.bounds.len()];
    let count = |t: &Tensor| t.sum(Kind::Int64).int64_value(&[]);
    let mut start = 0;
    while start < n {
        let len = batch.min(n - start);
        let m = robust_masks(
            net,
            &x.narrow(0, start, len),
            &y.narrow(0, start, len),
            spec,
        );
        clean_count += count(&m.clean);
        if let Some(p) = &m.pgd {
            pgd_count += count(p);
        }
        for (c, (_, t)) in cert_counts.iter_mut().zip(&m.cert) {
            *c += count(t);
        }
        pgd_secs += m.pgd_secs;
        for (s, t) in cert_secs.iter_mut().zip(&m.cert_secs) {
            *s += t;
        }
        violations.extend(m.violations.into_iter().map(|v| Violation {
            index: v.index + start,
            ..v
        }));
        start += len;
        progress(start, n);
    }
    let frac = |c: i64| if n == 0 { 0.0 } else { c as f64 / n as f64 };
    RobustReport {
        eval: EpsEval {
            eps: spec.eps,
            pgd_acc: (spec.pgd_steps > 0).then(|| frac(pgd_count)),
            cert_acc: spec
                .bounds
                .iter()
                .zip(&cert_counts)
                .map(|(m, &c)| (m.name().to_string(), frac(c)))
                .collect(),
        },
        n,
        clean_acc: frac(clean_count),
        violations,
        pgd_secs,
        cert_secs,
    }
}

/// The decision regions of a 2-D model on a `resolution`^2 grid over [0, 1]^2, and the status
/// of the first `max_points` test points at the first eval eps.
pub fn decision_map(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    spec: Option<&RobustSpec>,
    epoch: u32,
    resolution: usize,
    max_points: i64,
) -> DecisionMap {
    let device = net.device();
    let r = resolution as i64;
    let ticks = (Tensor::arange(r, (Kind::Float, device)) + 0.5) / r as f64;
    let gx = ticks.repeat([r]);
    let gy = ticks.repeat_interleave_self_int(r, 0, None);
    let grid = Tensor::stack(&[gx, gy], 1);
    let prob = tch::no_grad(|| {
        let logits = net.forward(&grid);
        if net.num_classes == 2 {
            logits.softmax(1, Kind::Float).select(1, 1)
        } else {
            logits.argmax(1, false).to_kind(Kind::Float)
        }
    });
    let n = max_points.min(y.size()[0]);
    let xs = x.narrow(0, 0, n);
    let ys = y.narrow(0, 0, n);
    let status = match spec {
        Some(spec) => {
            let m = robust_masks(net, &xs, &ys, spec);
            let clean = Vec::<bool>::try_from(&m.clean).unwrap_or_default();
            let pgd = m
                .pgd
                .as_ref()
                .map(|p| Vec::<bool>::try_from(p).unwrap_or_default());
            let cert: Option<Vec<bool>> = m.cert.iter().fold(None, |acc, (_, t)| {
                let v = Vec::<bool>::try_from(t).unwrap_or_default();
                Some(match acc {
                    None => v,
                    Some(a) => a.iter().zip(&v).map(|(p, q)| *p || *q).collect(),
                })
            });
            (0..n as usize)
                .map(|i| {
                    if !clean[i] {
                        PointStatus::Misclassified
                    } else if cert.as_ref().is_some_and(|c| c[i]) {
                        PointStatus::Certified
                    } else if pgd.as_ref().is_some_and(|p| p[i]) {
                        PointStatus::PgdRobust
                    } else {
                        PointStatus::CleanOnly
                    }
                })
                .collect()
        }
        None => {
            let clean = tch::no_grad(|| attack::correct(net, &xs, &ys));
            Vec::<bool>::try_from(&clean)
                .unwrap_or_default()
                .into_iter()
                .map(|c| {
                    if c {
                        PointStatus::CleanOnly
                    } else {
                        PointStatus::Misclassified
                    }
                })
                .collect()
        }
    };
    let pts =
        Vec::<f32>::try_from(xs.to_device(tch::Device::Cpu).reshape([-1])).unwrap_or_default();
    DecisionMap {
        epoch,
        resolution,
        prob: Vec::<f32>::try_from(prob.to_device(tch::Device::Cpu)).unwrap_or_default(),
        points: pts.chunks_exact(2).map(|c| [c[0], c[1]]).collect(),
        labels: Vec::<i64>::try_from(ys.to_device(tch::Device::Cpu)).unwrap_or_default(),
        status,
        eps: spec.map_or(0.0, |s| s.eps),
        norm_l2: spec.is_some_and(|s| s.norm == Norm::L2),
    }
}

// ---------------------------------------------------------------------------------------------
// `certlab eval`

/// What `certlab eval` evaluates; the command line's `--methods`.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodSet {
    pub clean: bool,
    pub pgd: bool,
    pub bounds: Vec<BoundMethod>,
}

/// Every name `--methods` accepts.
pub fn method_names() -> Vec<&'static str> {
    let mut names = vec!["clean", "pgd"];
    names.extend(BoundMethod::ALL.iter().map(|m| m.name()));
    names
}

/// Parses `--methods` names (`clean`, `pgd` and the bound methods); an unknown name is an
/// error that lists the allowed ones.
pub fn parse_methods(names: &[String]) -> Result<MethodSet, String> {
    let mut set = MethodSet {
        clean: false,
        pgd: false,
        bounds: vec![],
    };
    for raw in names {
        let name = raw.trim();
        match name {
            "" => {}
            "clean" => set.clean = true,
            "pgd" => set.pgd = true,
            _ => match BoundMethod::parse(name) {
                Some(m) if !set.bounds.contains(&m) => set.bounds.push(m),
                Some(_) => {}
                None => {
                    return Err(format!(
                        "--methods: unknown method `{name}`: expected a comma-separated list of {}",
                        method_names().join(", ")
                    ))
                }
            },
        }
    }
    if !set.clean && !set.pgd && set.bounds.is_empty() {
        return Err(format!(
            "--methods is empty: expected a comma-separated list of {}",
            method_names().join(", ")
        ));
    }
    Ok(set)
}

/// The options of `certlab eval`.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalOptions {
    pub run_dir: std::path::PathBuf,
    pub eps: f64,
    /// `None`: the run's `eval.norm`.
    pub norm: Option<String>,
    /// `None`: clean, pgd and the run's `eval.bounds`.
    pub methods: Option<Vec<String>>,
    pub pgd_steps: u32,
    pub restarts: u32,
    pub pgd_loss: String,
    /// `None`: the run's `eval.robust_subset` (0 = the whole test split).
    pub n: Option<usize>,
    pub json: bool,
    /// Evaluate `model_best.safetensors` instead of `model.safetensors`.
    pub best: bool,
    pub device: String,
    pub batch: i64,
}

/// A trained network loaded back from its run folder, with its test split.
pub struct TrainedRun {
    pub config: ExperimentConfig,
    pub net: Network,
    pub data: crate::data::Dataset,
    pub device: Device,
    /// `model.safetensors` or `model_best.safetensors`.
    pub model_file: &'static str,
}

impl TrainedRun {
    /// The first `n` test points in file order (`0`: all of them).
    pub fn first_test_points(&self, n: usize) -> (Tensor, Tensor) {
        let total = self.data.test_len();
        let n = if n == 0 { total } else { (n as i64).min(total) };
        (
            self.data.test_x.narrow(0, 0, n),
            self.data.test_y.narrow(0, 0, n),
        )
    }
}

/// Loads a run folder's config, rebuilds its network on `device` (auto, cpu, cuda) and loads
/// its weights (`best`: `model_best.safetensors`).
pub fn load_trained(
    run_dir: &std::path::Path,
    device: &str,
    best: bool,
) -> anyhow::Result<TrainedRun> {
    use anyhow::Context;
    let run = crate::run::load_run(run_dir)?;
    let choice = crate::config::DeviceChoice::parse(device)
        .with_context(|| format!("--device `{device}`: expected auto, cpu or cuda"))?;
    let device = crate::device::pick_device(choice)?;
    let prep = crate::train::prepare(&run.config, device)?;
    let mut net = prep.net;
    let model_file = if best {
        crate::run::BEST_MODEL_FILE
    } else {
        crate::run::MODEL_FILE
    };
    net.load_weights(&run_dir.join(model_file))?;
    Ok(TrainedRun {
        config: run.config,
        net,
        data: prep.data,
        device,
        model_file,
    })
}

/// The options of `certlab bounds`.
#[derive(Debug, Clone, PartialEq)]
pub struct BoundsOptions {
    pub run_dir: std::path::PathBuf,
    pub eps: f64,
    pub norm: String,
    pub method: String,
    pub n: usize,
    pub out: Option<std::path::PathBuf>,
    pub best: bool,
    pub device: String,
}

/// `certlab bounds`: per-class logit bounds and margin lower bounds of the first N test points,
/// as JSON on stdout or in `--out` (written to a temporary file, then renamed).
pub fn bounds_cmd(opts: &BoundsOptions) -> anyhow::Result<i32> {
    use anyhow::{bail, Context};
    if !(opts.eps.is_finite() && opts.eps >= 0.0) {
        bail!("--eps {}: expected a finite value >= 0", opts.eps);
    }
    let norm = Norm::parse(&opts.norm)
        .with_context(|| format!("--norm `{}`: expected linf or l2", opts.norm))?;
    let method = BoundMethod::parse(&opts.method).with_context(|| {
        format!(
            "--method `{}`: expected one of {}",
            opts.method,
            BoundMethod::ALL.map(|m| m.name()).join(", ")
        )
    })?;
    if opts.n == 0 {
        bail!("--n 0: expected at least one point");
    }
    if let Some(out) = &opts.out {
        if out.is_dir() {
            bail!("--out {}: is a folder, expected a file name", out.display());
        }
    }
    let trained = load_trained(&opts.run_dir, &opts.device, opts.best)?;
    let net = &trained.net;
    bounds::check_supported(net).map_err(anyhow::Error::msg)?;
    let (x, y) = trained.first_test_points(opts.n);
    let ball = Ball {
        eps: opts.eps,
        norm,
    };
    let started = Instant::now();
    let (lower, upper, margin) = tch::no_grad(|| {
        let (lo, hi) = bounds::logit_bounds(net, &x, ball, method);
        (lo, hi, bounds::margin_lower(net, &x, &y, ball, method))
    });
    sync(trained.device);
    let secs = started.elapsed().as_secs_f64();
    let rows = |t: &Tensor| -> Vec<Vec<f64>> {
        Vec::<Vec<f64>>::try_from(t.to_kind(Kind::Double).to_device(Device::Cpu))
            .unwrap_or_default()
    };
    let (lower, upper, margin_rows) = (rows(&lower), rows(&upper), rows(&margin));
    let labels = Vec::<i64>::try_from(y.to_device(Device::Cpu)).unwrap_or_default();
    let certified = Vec::<bool>::try_from(bounds::certified(&margin, &y).to_device(Device::Cpu))
        .unwrap_or_default();
    let points: Vec<serde_json::Value> = (0..labels.len())
        .map(|i| {
            serde_json::json!({
                "index": i,
                "label": labels[i],
                "logits_lower": lower[i],
                "logits_upper": upper[i],
                "margin_lower": margin_rows[i],
                "certified": certified[i],
            })
        })
        .collect();
    let n_cert = certified.iter().filter(|&&c| c).count();
    let obj = serde_json::json!({
        "method": method.name(),
        "eps": opts.eps,
        "norm": norm.name(),
        "n": labels.len(),
        "certified": n_cert,
        "seconds": secs,
        "model": trained.model_file,
        "points": points,
    });
    match &opts.out {
        None => println!("{obj}"),
        Some(out) => {
            let tmp = out.with_extension("json.tmp");
            std::fs::write(&tmp, format!("{obj}\n"))
                .and_then(|_| std::fs::rename(&tmp, out))
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!(
                "{}: {} of {} points certified by {} at eps {} ({}), {:.3} s; wrote {}",
                opts.run_dir.display(),
                n_cert,
                labels.len(),
                method.name(),
                opts.eps,
                norm.name(),
                secs,
                out.display()
            );
        }
    }
    Ok(0)
}

/// `certlab eval`: loads a run folder, rebuilds its network and evaluates it on the first N
/// test points. Prints a table, or one JSON object with `--json`. Returns the exit code
/// (3 when a bound certifies a point that PGD breaks).
pub fn eval_cmd(opts: &EvalOptions) -> anyhow::Result<i32> {
    use anyhow::{bail, Context};
    use std::io::{IsTerminal, Write};
    if !(opts.eps.is_finite() && opts.eps >= 0.0) {
        bail!("--eps {}: expected a finite value >= 0", opts.eps);
    }
    if !(1..=100).contains(&opts.restarts) {
        bail!("--restarts {}: expected 1..=100", opts.restarts);
    }
    if opts.pgd_steps > 10_000 {
        bail!("--pgd-steps {}: expected 1..=10000", opts.pgd_steps);
    }
    if opts.batch < 1 {
        bail!("--batch {}: expected >= 1", opts.batch);
    }
    let pgd_loss = AttackLoss::parse(&opts.pgd_loss).with_context(|| {
        format!(
            "--pgd-loss `{}`: expected one of {}",
            opts.pgd_loss,
            AttackLoss::ALL.map(|l| l.name()).join(", ")
        )
    })?;
    let run = crate::run::load_run(&opts.run_dir)?;
    let cfg = run.config;
    let norm = match &opts.norm {
        Some(s) => Norm::parse(s).with_context(|| format!("--norm `{s}`: expected linf or l2"))?,
        None => cfg.eval.norm,
    };
    let methods = match &opts.methods {
        Some(names) => parse_methods(names).map_err(anyhow::Error::msg)?,
        None => {
            let mut names = vec!["clean".to_string(), "pgd".to_string()];
            names.extend(cfg.eval.bounds.iter().map(|b| b.name().to_string()));
            parse_methods(&names).map_err(anyhow::Error::msg)?
        }
    };
    if methods.pgd && opts.pgd_steps == 0 {
        bail!("--pgd-steps 0: PGD needs at least one step (or leave `pgd` out of --methods)");
    }
    let trained = load_trained(&opts.run_dir, &opts.device, opts.best)?;
    let (net, device, model_file) = (&trained.net, trained.device, trained.model_file);
    if !methods.bounds.is_empty() {
        bounds::check_supported(net).map_err(anyhow::Error::msg)?;
    }
    let (x, y) = trained.first_test_points(opts.n.unwrap_or(cfg.eval.robust_subset));
    let spec = RobustSpec {
        eps: opts.eps,
        norm,
        bounds: methods.bounds.clone(),
        pgd_steps: if methods.pgd { opts.pgd_steps } else { 0 },
        pgd_restarts: opts.restarts,
        pgd_loss,
    };
    let tty = std::io::stderr().is_terminal();
    let report = robust_eval_with_progress(net, &x, &y, &spec, opts.batch, &mut |done, all| {
        if tty {
            eprint!("\revaluating {done}/{all} points");
            let _ = std::io::stderr().flush();
        }
    });
    if tty {
        eprint!("\r{}\r", " ".repeat(40));
    }
    for v in &report.violations {
        eprintln!("error: {v}");
    }
    if opts.json {
        let cert: serde_json::Map<String, serde_json::Value> = report
            .eval
            .cert_acc
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::json!(v)))
            .collect();
        let obj = serde_json::json!({
            "eps": opts.eps,
            "norm": norm.name(),
            "n": report.n,
            "clean_acc": report.clean_acc,
            "pgd_acc": report.eval.pgd_acc,
            "cert_acc": cert,
            "pgd_steps": spec.pgd_steps,
            "pgd_restarts": spec.pgd_restarts,
            "pgd_loss": pgd_loss.name(),
            "model": model_file,
            "violations": report.violations.iter().map(|v| serde_json::json!({
                "index": v.index,
                "method": v.method.name(),
                "bound_margin": v.bound_margin,
                "attack_margin": v.attack_margin,
            })).collect::<Vec<_>>(),
        });
        println!("{obj}");
    } else {
        println!(
            "run {} ({model_file}): {}",
            opts.run_dir.display(),
            net.describe()
        );
        println!(
            "eps {} ({}), first {} test points, device {}",
            opts.eps,
            norm.name(),
            report.n,
            crate::device::device_name(device)
        );
        println!(
            "{:<12} {:>9} {:>8} {:>10} {:>12}",
            "method", "accuracy", "points", "time (s)", "points/s"
        );
        let row = |name: &str, acc: f64, secs: Option<f64>| {
            let count = (acc * report.n as f64).round() as i64;
            let (t, rate) = match secs {
                Some(s) => (
                    format!("{s:.3}"),
                    format!("{:.0}", report.n as f64 / s.max(1e-9)),
                ),
                None => ("-".into(), "-".into()),
            };
            println!("{name:<12} {acc:>9.4} {count:>8} {t:>10} {rate:>12}");
        };
        row("clean", report.clean_acc, None);
        if let Some(p) = report.eval.pgd_acc {
            let name = format!("pgd-{}x{}", spec.pgd_steps, spec.pgd_restarts);
            row(&name, p, Some(report.pgd_secs));
        }
        for (i, m) in spec.bounds.iter().enumerate() {
            if let Some(&acc) = report.eval.cert_acc.get(m.name()) {
                row(m.name(), acc, report.cert_secs.get(i).copied());
            }
        }
    }
    Ok(if report.violations.is_empty() { 0 } else { 3 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DatasetKind, Method, ModelConfig};
    use crate::train::{Control, Event, Level};

    fn bools(t: &Tensor) -> Vec<bool> {
        Vec::<bool>::try_from(t).unwrap()
    }

    fn mlp(input: i64, hidden: Vec<i64>, classes: i64, seed: i64) -> Network {
        tch::manual_seed(seed);
        let cfg = ModelConfig {
            hidden,
            ..ModelConfig::default()
        };
        Network::from_config(&cfg, &[input], classes, None, Device::Cpu).unwrap()
    }

    /// Every bound method.
    const TESTED_BOUNDS: [BoundMethod; 4] = BoundMethod::ALL;

    /// Checks cert <= pgd <= clean point by point, naming the first point that breaks it.
    fn assert_nested(m: &RobustMasks, what: &str) {
        let clean = bools(&m.clean);
        let pgd = m.pgd.as_ref().map(bools).unwrap_or_else(|| clean.clone());
        for i in 0..clean.len() {
            assert!(
                !pgd[i] || clean[i],
                "{what}: point {i} is PGD-robust but misclassified"
            );
            for (method, c) in &m.cert {
                let c = bools(c);
                assert!(
                    !c[i] || pgd[i],
                    "{what}: point {i} is certified by {} but PGD breaks it",
                    method.name()
                );
            }
        }
        assert!(m.violations.is_empty(), "{what}: {}", m.violations[0]);
    }

    #[test]
    fn pgd_at_eps_zero_equals_clean_accuracy() {
        let net = mlp(4, vec![16], 3, 5);
        let x = Tensor::rand([200, 4], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(3, [200], (Kind::Int64, Device::Cpu));
        for norm in [Norm::Linf, Norm::L2] {
            let spec = RobustSpec {
                eps: 0.0,
                norm,
                bounds: TESTED_BOUNDS.to_vec(),
                pgd_steps: 10,
                pgd_restarts: 3,
                pgd_loss: AttackLoss::Margin,
            };
            let r = robust_eval(&net, &x, &y, &spec, 64);
            let clean = clean_accuracy(&net, &x, &y, 64);
            assert_eq!(r.eval.pgd_acc, Some(clean));
            assert_eq!(r.clean_acc, clean);
            // At eps 0 IBP is exact: certified = correct (no ties on random data).
            assert_eq!(r.eval.cert_acc["ibp"], clean);
        }
    }

    #[test]
    fn pgd_is_at_least_as_strong_as_fgsm() {
        // A trained-looking net: random MLP on random labels, several radii.
        let net = mlp(8, vec![32, 32], 4, 11);
        let x = Tensor::rand([300, 8], (Kind::Float, Device::Cpu));
        let y = tch::no_grad(|| net.forward(&x).argmax(1, false)); // all clean-correct
        for norm in [Norm::Linf, Norm::L2] {
            for eps in [0.02, 0.05, 0.1] {
                let x_fgsm = attack::fgsm(&net, &x, &y, eps, norm, AttackLoss::CrossEntropy);
                let fgsm_margin = tch::no_grad(|| attack::margins(&net.forward(&x_fgsm), &y));
                let fgsm_robust = bools(&tch::no_grad(|| attack::correct(&net, &x_fgsm, &y)));
                let cfg = PgdConfig::evaluation(eps, norm, 20, 2, AttackLoss::CrossEntropy);
                let res = attack::pgd(&net, &x, &y, &cfg);
                let pgd_robust = bools(&tch::no_grad(|| attack::correct(&net, &res.x_adv, &y)));
                let n_fgsm = fgsm_robust.iter().filter(|&&b| b).count();
                let n_pgd = pgd_robust.iter().filter(|&&b| b).count();
                assert!(
                    n_pgd <= n_fgsm,
                    "{norm:?} eps {eps}: pgd {n_pgd} > fgsm {n_fgsm}"
                );
                let mean = |t: &Tensor| t.mean(Kind::Float).double_value(&[]);
                assert!(
                    mean(&res.margin) <= mean(&fgsm_margin) + 1e-6,
                    "{norm:?} eps {eps}: mean margin pgd {} > fgsm {}",
                    mean(&res.margin),
                    mean(&fgsm_margin)
                );
                if eps == 0.1 {
                    assert!(n_pgd < 300, "{norm:?}: the attack should break some points");
                }
            }
        }
    }

    #[test]
    fn an_unsound_bound_is_caught_and_the_point_and_method_named() {
        // Make IBP unsound on purpose (its margin lower bounds shifted up by 100, so every
        // point is "certified"): every point that is misclassified or that PGD breaks must
        // then come back as a violation, with its index in the whole set (batches of 7).
        let net = mlp(3, vec![16], 3, 21);
        let x = Tensor::rand([40, 3], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(3, [40], (Kind::Int64, Device::Cpu));
        let spec = RobustSpec {
            eps: 0.1,
            norm: Norm::Linf,
            bounds: vec![BoundMethod::Ibp],
            pgd_steps: 10,
            pgd_restarts: 1,
            pgd_loss: AttackLoss::CrossEntropy,
        };
        let honest = robust_eval(&net, &x, &y, &spec, 7);
        assert!(honest.violations.is_empty(), "{}", honest.violations[0]);
        // Independently: the points PGD (restart 0 starts at the clean point: deterministic)
        // does not leave correctly classified.
        let mut robust = Vec::new();
        for start in (0..40).step_by(7) {
            let len = 7.min(40 - start);
            let (xb, yb) = (x.narrow(0, start, len), y.narrow(0, start, len));
            let res = attack::pgd(&net, &xb, &yb, &spec.pgd_config());
            robust.extend(bools(&tch::no_grad(|| {
                attack::correct(&net, &res.x_adv, &yb)
            })));
        }
        let expected: Vec<i64> = (0..40).filter(|&i| !robust[i as usize]).collect();
        assert!(!expected.is_empty() && expected.len() < 40, "{expected:?}");
        UNSOUND_SHIFT.with(|c| c.set(Some(100.0)));
        let lying = robust_eval(&net, &x, &y, &spec, 7);
        UNSOUND_SHIFT.with(|c| c.set(None));
        let got: Vec<i64> = lying.violations.iter().map(|v| v.index).collect();
        assert_eq!(got, expected);
        let v = &lying.violations[0];
        assert_eq!(v.method, BoundMethod::Ibp);
        assert!(v.bound_margin > 0.0 && v.attack_margin <= 0.0, "{v:?}");
        let msg = v.to_string();
        assert!(
            msg.contains(&format!("test point {}", expected[0])) && msg.contains("`ibp`"),
            "{msg}"
        );
    }

    #[test]
    fn parse_methods_accepts_known_names_and_lists_them_on_error() {
        let names = |s: &str| s.split(',').map(String::from).collect::<Vec<_>>();
        let m = parse_methods(&names("clean,pgd,ibp,crown-ibp,fastlin,crown")).unwrap();
        assert!(m.clean && m.pgd);
        assert_eq!(m.bounds, BoundMethod::ALL.to_vec());
        let m = parse_methods(&names("crown, ibp,ibp")).unwrap();
        assert!(!m.clean && !m.pgd);
        assert_eq!(m.bounds, vec![BoundMethod::Crown, BoundMethod::Ibp]);
        let err = parse_methods(&names("clean,lipschitz")).unwrap_err();
        assert!(err.contains("`lipschitz`"), "{err}");
        for n in ["clean", "pgd", "ibp", "crown-ibp", "fastlin", "crown"] {
            assert!(err.contains(n), "{err}");
        }
        assert!(parse_methods(&names("")).is_err());
    }

    /// Trains a tiny IBP model on two moons for a few epochs through the real training loop
    /// and checks every evaluation: cert <= PGD <= clean, no soundness violation logged, and
    /// PGD at eps 0 equal to clean accuracy. Then re-checks the final model point by point.
    #[test]
    fn cert_le_pgd_le_clean_on_every_evaluation_of_a_training_run() {
        let mut cfg = ExperimentConfig::default_experiment();
        cfg.dataset.kind = DatasetKind::Moons;
        cfg.dataset.toy_points = 300;
        cfg.model.hidden = vec![32, 32];
        cfg.train.method = Method::Ibp;
        cfg.train.eps = 0.05;
        cfg.train.epochs = 4;
        cfg.train.ramp_epochs = 2;
        cfg.train.batch_size = 32;
        cfg.eval.eps = vec![0.0, 0.02, 0.05, 0.1];
        cfg.eval.bounds = TESTED_BOUNDS.to_vec();
        cfg.eval.pgd_steps = 20;
        cfg.eval.pgd_restarts = 2;
        cfg.eval.robust_subset = 0; // the whole test split, so clean_acc is on the same points
        cfg.device = crate::config::DeviceChoice::Cpu;
        let tmp = tempfile::tempdir().unwrap();
        let mut run = crate::run::RunWriter::create(&tmp.path().join("run"), &cfg).unwrap();
        let mut prep = crate::train::prepare(&cfg, Device::Cpu).unwrap();
        let (_tx, rx) = crossbeam_channel::bounded(1);
        let control = Control {
            commands: rx,
            cancel: Default::default(),
        };
        let mut events = Vec::new();
        crate::train::train(&cfg, &mut prep, &mut run, &control, &mut |e| events.push(e)).unwrap();
        let records: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::Metrics(r) => Some(r.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(records.len(), 4);
        let mut saw_certified = false;
        for r in &records {
            let mut evals = vec![EpsEval {
                eps: r.eval_eps.unwrap(),
                pgd_acc: r.pgd_acc,
                cert_acc: r.cert_acc.clone(),
            }];
            evals.extend(r.more_eps.iter().cloned());
            assert_eq!(evals.len(), 4);
            for e in evals {
                let pgd = e.pgd_acc.unwrap();
                assert!(
                    pgd <= r.clean_acc,
                    "epoch {} eps {}: pgd {pgd} > clean {}",
                    r.epoch,
                    e.eps,
                    r.clean_acc
                );
                if e.eps == 0.0 {
                    assert_eq!(
                        pgd, r.clean_acc,
                        "epoch {}: PGD at eps 0 must equal clean",
                        r.epoch
                    );
                }
                for (m, c) in &e.cert_acc {
                    assert!(
                        *c <= pgd,
                        "epoch {} eps {}: cert[{m}] {c} > pgd {pgd}",
                        r.epoch,
                        e.eps
                    );
                    saw_certified |= e.eps > 0.0 && *c > 0.0;
                }
            }
        }
        assert!(
            saw_certified,
            "the IBP-trained model should certify some points"
        );
        let errors: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::Log {
                    level: Level::Error,
                    message,
                } => Some(message.clone()),
                _ => None,
            })
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
        for spec in specs_from_config(&cfg) {
            let m = robust_masks(&prep.net, &prep.data.test_x, &prep.data.test_y, &spec);
            assert_nested(&m, &format!("final model, eps {}", spec.eps));
        }
    }
}
