//! The training loop: schedules, losses per method, per-epoch evaluation, metrics and events.
mod losses;
pub use losses::{certified_training_loss, cross_entropy, method_loss, robust_cross_entropy, CertifiedLoss};
//! Knows nothing of egui: it reports through a callback of [`Event`]s and polls [`Command`]s.
use crate::attack::{self, PgdConfig};
use crate::bounds::{self, Ball};
use crate::config::{DeviceChoice, ExperimentConfig, LrSchedule, Method, OptimizerKind, Ramp};
use crate::data::{self, Dataset};
use crate::eval;
use crate::lipschitz;
use crate::metrics::EvalRecord;
pub use crate::protocol::{Command, Event, Level, Outcome};
use crate::model::Network;
use crate::run::RunWriter;
use crossbeam_channel::Receiver;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::{nn, nn::OptimizerConfig, Device, Kind, Reduction, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] data::DataError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error("run folder: {0}")]
    Run(#[from] std::io::Error),
    #[error("training diverged at epoch {epoch}, step {step}: loss is {loss} (try a smaller learning rate or eps)")]
    NonFinite { epoch: u32, step: u64, loss: f64 },
    #[error("{0}")]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Device(#[from] crate::device::DeviceError),
    #[error("Lipschitz: {0}")]
    Lipschitz(String),
    #[error("{0}")]
    TooBig(String),
}

/// What the training loop listens to: commands from the UI and a cancel flag (Ctrl-C).
pub struct Control {
    pub commands: Receiver<Command>,
    pub cancel: Arc<AtomicBool>,
}

impl Control {
    /// Handles pending commands; blocks while paused. Returns true when the run must stop.
    fn should_stop(&self, emit: &mut dyn FnMut(Event)) -> bool {
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return true;
            }
            match self.commands.try_recv() {
                Ok(Command::Stop) => return true,
                Ok(Command::Pause) => {
                    emit(Event::Paused(true));
                    loop {
                        if self.cancel.load(Ordering::Relaxed) {
                            return true;
                        }
                        match self.commands.recv_timeout(Duration::from_millis(100)) {
                            Ok(Command::Resume) => {
                                emit(Event::Paused(false));
                                break;
                            }
                            Ok(Command::Stop) => return true,
                            Ok(Command::Pause) => {}
                            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                            // The controller is gone: nobody can resume us.
                            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return true,
                        }
                    }
                }
                Ok(Command::Resume) => {}
                Err(_) => return false,
            }
        }
    }
}

/// Schedules of one training step, from the CROWN-IBP reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Current training eps.
    pub eps: f64,
    /// Weight of the CROWN-IBP bound in the CROWN-IBP/IBP mix.
    pub beta: f64,
    /// Weight of the clean loss.
    pub kappa: f64,
    /// Multiplier of the r1/r2 weights (0 -> 1 over the regularizer warm-up).
    pub reg_factor: f64,
}

/// Fraction of the eps ramp done at a fractional epoch position `t` (epochs since start).
pub fn ramp_fraction(cfg: &ExperimentConfig, t: f64) -> f64 {
    let tc = &cfg.train;
    let start = tc.warmup_epochs as f64;
    if t < start {
        return 0.0;
    }
    if tc.ramp_epochs == 0 {
        return 1.0;
    }
    let f = ((t - start) / tc.ramp_epochs as f64).clamp(0.0, 1.0);
    match tc.ramp {
        Ramp::Linear => f,
        Ramp::Smoothed => {
            // t^4 on the first quarter, then linear, continuous with matching slope.
            let mid: f64 = 0.25;
            // Value at mid is a * mid^4, slope 4 a mid^3 equals the line's slope (1 - a mid^4)/(1 - mid).
            let a = 1.0 / (4.0 * mid.powi(3) * (1.0 - mid) + mid.powi(4));
            if f < mid {
                a * f.powi(4)
            } else {
                let v_mid = a * mid.powi(4);
                v_mid + (1.0 - v_mid) * (f - mid) / (1.0 - mid)
            }
        }
    }
}

pub fn schedule(cfg: &ExperimentConfig, t: f64) -> Schedule {
    let tc = &cfg.train;
    let eps_max = tc.eps;
    let eps = eps_max * ramp_fraction(cfg, t);
    let (beta, kappa) = if eps_max > 0.0 {
        (
            (eps_max - eps * (1.0 - tc.final_beta)) / eps_max,
            (eps_max - eps * (1.0 - tc.final_kappa)) / eps_max,
        )
    } else {
        (1.0, 1.0)
    };
    let reg_factor = if tc.reg_warmup_epochs == 0 {
        1.0
    } else {
        (t / tc.reg_warmup_epochs as f64).clamp(0.0, 1.0)
    };
    Schedule {
        eps,
        beta,
        kappa,
        reg_factor,
    }
}

pub fn learning_rate(cfg: &ExperimentConfig, epoch: u32) -> f64 {
    let o = &cfg.optimizer;
    match o.schedule {
        LrSchedule::Constant => o.lr,
        LrSchedule::Step => o.lr * o.gamma.powi((epoch / o.step_epochs.max(1)) as i32),
        LrSchedule::Cosine => {
            let f = epoch as f64 / cfg.train.epochs.max(1) as f64;
            o.lr * 0.5 * (1.0 + (std::f64::consts::PI * f).cos())
        }
    }
}

/// Gram iterations of the guaranteed bound that the enforced training keeps below
/// `lip_target` and that is logged every epoch.
pub const ENFORCE_GRAM_ITERS: u32 = 6;

/// Gram iterations of the body bound in the l_2 Lipschitz certificate (double precision; more
/// iterations, a tighter certificate).
pub const CERT_GRAM_ITERS: u32 = 10;

/// How many points of the robust subset the tightness statistics use.
pub const GAP_POINTS: i64 = 200;

/// The linear relaxation whose tightness statistics an evaluation reports: the training
/// method's own, else the first linear bound method of the evaluation; `None` if there is none.
pub fn gap_method(cfg: &ExperimentConfig) -> Option<bounds::BoundMethod> {
    use bounds::BoundMethod;
    match cfg.train.method {
        Method::CrownIbp => Some(BoundMethod::CrownIbp),
        Method::Fastlin => Some(BoundMethod::Fastlin),
        _ => cfg.eval.bounds.iter().copied().find(|m| m.relaxed().is_some()),
    }
}

/// Builds the optimiser for a network.
pub fn optimizer(net: &Network, cfg: &ExperimentConfig) -> Result<nn::Optimizer, TchError> {
    let o = &cfg.optimizer;
    match o.kind {
        OptimizerKind::Adam => nn::Adam {
            wd: o.weight_decay,
            ..Default::default()
        }
        .build(&net.vs, o.lr),
        OptimizerKind::Sgd => nn::Sgd {
            momentum: o.momentum,
            wd: o.weight_decay,
            ..Default::default()
        }
        .build(&net.vs, o.lr),
    }
}
use tch::TchError;

/// Everything prepared before the first step: data on the device, the network.
pub struct Prepared {
    pub device: Device,
    pub data: Dataset,
    pub net: Network,
}

pub fn prepare(cfg: &ExperimentConfig, device: Device) -> Result<Prepared, TrainError> {
    tch::manual_seed(cfg.seed as i64);
    let mut data = data::load(&cfg.dataset, cfg.seed)?;
    let stats = cfg.model.normalize.then(|| data.channel_stats());
    let net = Network::from_config(
        &cfg.model,
        &data.input_shape,
        data.num_classes,
        stats,
        device,
    )?;
    check_memory(cfg, &net)?;
    data.train_x = data.train_x.to_device(device);
    data.train_y = data.train_y.to_device(device);
    data.test_x = data.test_x.to_device(device);
    data.test_y = data.test_y.to_device(device);
    Ok(Prepared { device, data, net })
}

/// Refuses a Fast-Lin training with exact intermediate bounds whose backward pass would not
/// fit in the machine's available memory (the process would be killed mid-run otherwise), and
/// says what to change.
fn check_memory(cfg: &ExperimentConfig, net: &Network) -> Result<(), TrainError> {
    use crate::bounds::{BoundMethod, Relaxed};
    if cfg.train.method != crate::config::Method::Fastlin || cfg.train.proj_dim > 0 {
        return Ok(());
    }
    let Some(available) = available_memory() else {
        return Ok(());
    };
    let Some(relaxed): Option<Relaxed> = BoundMethod::Fastlin.relaxed() else {
        return Ok(());
    };
    let batch = cfg.train.batch_size as i64;
    let need = crate::bounds::training_bytes(net, batch, relaxed);
    if need <= available {
        return Ok(());
    }
    // A tenth below the estimate's limit: available memory moves.
    let fits = (batch as u64 * available / need * 9 / 10).max(1);
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    Err(TrainError::TooBig(format!(
        "Fast-Lin with exact intermediate bounds on this {} needs about {:.1} GiB per step at \
         train.batch_size = {batch}, and {:.1} GiB is available: lower train.batch_size to {fits} \
         or less, or set train.proj_dim (random projections, e.g. 50)",
        cfg.model.arch.name(),
        gib(need),
        gib(available)
    )))
}

/// `MemAvailable` of /proc/meminfo, in bytes (None where there is no such file).
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Trains a prepared experiment, writing the run folder and emitting events.
/// Returns the outcome; errors after the run folder exists are reported as `Failed` by the caller.
pub fn train(
    cfg: &ExperimentConfig,
    prep: &mut Prepared,
    run: &mut RunWriter,
    control: &Control,
    emit: &mut dyn FnMut(Event),
) -> Result<Outcome, TrainError> {
    let started = Instant::now();
    let Prepared { device, data, net } = prep;
    let device = *device;
    let n_train = data.train_len();
    let batch = cfg.train.batch_size as i64;
    let steps_per_epoch = ((n_train + batch - 1) / batch) as u64;
    emit(Event::Started {
        run_dir: run.dir().to_path_buf(),
        device: crate::device::device_name(device),
        model: net.describe(),
        total_epochs: cfg.train.epochs,
        steps_per_epoch,
    });
    let log = |run: &mut RunWriter, emit: &mut dyn FnMut(Event), level: Level, message: String| {
        run.log(&message);
        emit(Event::Log { level, message });
    };
    log(
        run,
        emit,
        Level::Info,
        format!(
            "device {}, {} train / {} test examples of {}, model {} ({} parameters), method {}",
            crate::device::device_name(device),
            n_train,
            data.test_len(),
            data.name,
            net.describe(),
            net.num_parameters(),
            cfg.train.method.name()
        ),
    );
    let mut opt = optimizer(net, cfg)?;
    let robust_x;
    let robust_y;
    {
        let n = if cfg.eval.robust_subset == 0 {
            data.test_len()
        } else {
            (cfg.eval.robust_subset as i64).min(data.test_len())
        };
        robust_x = data.test_x.narrow(0, 0, n);
        robust_y = data.test_y.narrow(0, 0, n);
    }
    let lip_shapes = net.layer_shapes();
    let admm_on = cfg.train.method == Method::Lipschitz
        && cfg.train.lip_bound == crate::config::LipBound::Admm;
    // ADMM enforces its bound by the projection; the others by rescaling after every step.
    let enforce = cfg.train.method == Method::Lipschitz && cfg.train.lip_target > 0.0 && !admm_on;
    let admm_target = (admm_on && cfg.train.lip_target > 0.0).then_some(cfg.train.lip_target);
    let mut admm = if admm_on {
        Some(lipschitz::Admm::new(net, cfg.train.admm_penalty).map_err(TrainError::Lipschitz)?)
    } else {
        None
    };
    if let (Some(a), Some(target)) = (admm.as_mut(), admm_target) {
        // The enforced version holds from the first step on (and for a run stopped early).
        let b = a.start_inside(net, target).map_err(TrainError::Lipschitz)?;
        log(
            run,
            emit,
            Level::Info,
            format!("ADMM: initial weights projected, LipSDP bound {b:.6} <= lip_target {target}"),
        );
    }
    let lip_estimators = cfg.eval.lipschitz.clone();
    // The l_2 Lipschitz certificate: for 1-Lipschitz networks, Lipschitz training, and whenever
    // Lipschitz estimates are asked for (so a standard run can be compared).
    let lip_certificate = cfg.model.arch.is_one_lipschitz()
        || cfg.train.method == Method::Lipschitz
        || !cfg.eval.lipschitz.is_empty();
    if enforce {
        // The bound holds from the first step on.
        let b =
            lipschitz::enforce_bound(net, &lip_shapes, cfg.train.lip_target, ENFORCE_GRAM_ITERS)
                .map_err(TrainError::Lipschitz)?;
        log(
            run,
            emit,
            Level::Info,
            format!(
                "Lipschitz bound enforced: {b:.6} <= lip_target {} (product of Gram bounds, {ENFORCE_GRAM_ITERS} iterations)",
                cfg.train.lip_target
            ),
        );
    }
    let mut step: u64 = 0;
    let mut best_score = f64::NEG_INFINITY;
    let mut last_progress = Instant::now() - Duration::from_secs(1);
    for epoch in 1..=cfg.train.epochs {
        let lr = learning_rate(cfg, epoch - 1);
        opt.set_lr(lr);
        let perm = Tensor::randperm(n_train, (Kind::Int64, device));
        let mut loss_sum = Tensor::zeros([], (Kind::Float, device));
        let mut correct_sum = Tensor::zeros([], (Kind::Int64, device));
        let mut sched = schedule(cfg, (epoch - 1) as f64);
        let mut epoch_bound_max = f64::NEG_INFINITY;
        for b in 0..steps_per_epoch as i64 {
            let len = batch.min(n_train - b * batch);
            let idx = perm.narrow(0, b * batch, len);
            let x = data.train_x.index_select(0, &idx);
            let y = data.train_y.index_select(0, &idx);
            sched = schedule(cfg, (epoch - 1) as f64 + b as f64 / steps_per_epoch as f64);
            let (loss, logits) = method_loss(net, &x, &y, cfg, &sched);
            let loss = match &admm {
                Some(a) => loss + a.coupling(net),
                None => loss,
            };
            opt.zero_grad();
            loss.backward();
            let loss_value = loss.double_value(&[]);
            if !loss_value.is_finite() {
                return Err(TrainError::NonFinite {
                    epoch,
                    step,
                    loss: loss_value,
                });
            }
            opt.step();
            if enforce {
                let b = lipschitz::enforce_bound(
                    net,
                    &lip_shapes,
                    cfg.train.lip_target,
                    ENFORCE_GRAM_ITERS,
                )
                .map_err(TrainError::Lipschitz)?;
                epoch_bound_max = epoch_bound_max.max(b);
            }
            step += 1;
            let _ = tch::no_grad(|| {
                loss_sum += loss.detach() * len as f64;
                correct_sum += logits.argmax(1, false).eq_tensor(&y).sum(Kind::Int64);
            });
            if last_progress.elapsed() >= Duration::from_millis(100) {
                last_progress = Instant::now();
                emit(Event::Progress {
                    epoch,
                    epoch_fraction: (b + 1) as f32 / steps_per_epoch as f32,
                    step,
                    loss: loss_value,
                });
            }
            if control.should_stop(emit) {
                if let (Some(a), Some(_)) = (&admm, admm_target) {
                    // The enforced version keeps only networks within the bound.
                    a.swap_in(net);
                }
                return stopped(
                    run,
                    emit,
                    net,
                    format!("stopped at epoch {epoch}, step {step}"),
                );
            }
        }
        emit(Event::Progress {
            epoch,
            epoch_fraction: 1.0,
            step,
            loss: loss_sum.double_value(&[]) / n_train as f64,
        });
        let last = epoch == cfg.train.epochs;
        let evaluate = last || epoch % cfg.eval.every_epochs == 0;
        // Seed 000's ADMM: one SDP step and dual update per epoch. The enforced version
        // evaluates and saves the projected network (within the bound), then trains on from W.
        let mut admm_report = None;
        let mut admm_saved = None;
        if let Some(a) = admm.as_mut() {
            let st = a
                .step(net, admm_target, cfg.train.lip_weight)
                .map_err(TrainError::Lipschitz)?;
            log(
                run,
                emit,
                Level::Info,
                format!(
                    "epoch {epoch}: ADMM projection, LipSDP bound of the projected weights {:.6}{}, residual ||W - Wbar|| / ||W|| {:.4}",
                    st.projected_bound,
                    admm_target
                        .map(|l| format!(" (target {l})"))
                        .unwrap_or_default(),
                    st.residual
                ),
            );
            admm_report = Some(st);
            if admm_target.is_some() && evaluate {
                admm_saved = Some(a.swap_in(net));
            }
        }
        if !evaluate {
            continue;
        }
        let mut rec = EvalRecord {
            epoch,
            step,
            train_loss: loss_sum.double_value(&[]) / n_train as f64,
            train_acc: correct_sum.double_value(&[]) / n_train as f64,
            train_eps: sched.eps,
            lr,
            ..EvalRecord::default()
        };
        rec.clean_acc = eval::clean_accuracy(net, &data.test_x, &data.test_y, 1024);
        let specs = eval::specs_from_config(cfg);
        for (i, spec) in specs.iter().enumerate() {
            // Exact bounds on a big subset take a while: Stop is honoured between the parts
            // of an evaluation too (the unfinished evaluation is not written).
            if control.should_stop(emit) {
                let why = format!("stopped during the evaluation of epoch {epoch}");
                return stopped(run, emit, net, why);
            }
            let report = eval::robust_eval(net, &robust_x, &robust_y, spec, 256);
            for v in &report.violations {
                log(run, emit, Level::Error, v.to_string());
            }
            let r = report.eval;
            if i == 0 {
                rec.eval_eps = Some(r.eps);
                rec.subset_clean_acc = Some(report.clean_acc);
                rec.pgd_acc = r.pgd_acc;
                rec.cert_acc = r.cert_acc;
            } else {
                rec.more_eps.push(r);
            }
        }
        if lip_certificate {
            // l_2 certificate from the Lipschitz bound: margin_ij / (L_body ||w_i - w_j||);
            // an l_inf ball of radius eps lies in the l_2 ball of radius eps sqrt(d).
            if let Some(parts) = lipschitz::certificate_parts(net, CERT_GRAM_ITERS) {
                let d: i64 = data.input_shape.iter().product();
                let radius =
                    tch::no_grad(|| lipschitz::l2_radius(net, &parts, &robust_x, &robust_y));
                let n = robust_y.size()[0].max(1) as f64;
                for (i, spec) in specs.iter().enumerate() {
                    let eps_l2 = match spec.norm {
                        crate::config::Norm::L2 => spec.eps,
                        crate::config::Norm::Linf => spec.eps * (d as f64).sqrt(),
                    };
                    let acc = radius.gt(eps_l2).sum(Kind::Int64).int64_value(&[]) as f64 / n;
                    if i == 0 {
                        rec.cert_acc.insert("lipschitz".into(), acc);
                    } else if let Some(e) = rec.more_eps.get_mut(i - 1) {
                        e.cert_acc.insert("lipschitz".into(), acc);
                    }
                }
            }
        }
        if !lip_estimators.is_empty() {
            let n = robust_x.size()[0].min(64);
            match lipschitz::estimate(
                net,
                &lip_estimators,
                Some(&robust_x.narrow(0, 0, n)),
                &lipschitz::Settings::per_epoch(),
            ) {
                Ok(r) => rec.lipschitz = r.network,
                Err(e) => log(run, emit, Level::Warn, format!("Lipschitz estimates: {e}")),
            }
        }
        if let Some(st) = admm_report {
            rec.lipschitz
                .insert("admm_projected_lipsdp".into(), st.projected_bound);
            rec.lipschitz.insert("admm_residual".into(), st.residual);
            if admm_target.is_some() {
                // The certified LipSDP value of the network evaluated and saved (float32).
                if let Ok(r) = lipschitz::mlp_weights(net).and_then(|ws| {
                    lipschitz::lipsdp(&ws, &lipschitz::Settings::default())
                        .map_err(|e| e.to_string())
                }) {
                    rec.lipschitz.insert("admm_lipsdp".into(), r.value);
                }
            }
        }
        if cfg.train.method == Method::Lipschitz {
            let bound = lipschitz::guaranteed_bound(net, &lip_shapes, ENFORCE_GRAM_ITERS);
            rec.lipschitz.insert("train_bound".into(), bound);
            if enforce && epoch_bound_max.is_finite() {
                rec.lipschitz
                    .insert("train_bound_max".into(), epoch_bound_max);
            }
            log(
                run,
                emit,
                Level::Info,
                format!(
                    "epoch {epoch}: Lipschitz bound {bound:.6}{}",
                    if enforce {
                        format!(
                            " (max after any step this epoch {epoch_bound_max:.6}, target {})",
                            cfg.train.lip_target
                        )
                    } else {
                        String::new()
                    }
                ),
            );
        }
        if let (Some(method), Some(spec)) = (gap_method(cfg), specs.first()) {
            let ball = Ball {
                eps: spec.eps,
                norm: spec.norm,
            };
            // At most GAP_POINTS points: the statistics run in double precision.
            let n_gap = robust_y.size()[0].min(GAP_POINTS);
            let (gx, gy) = (robust_x.narrow(0, 0, n_gap), robust_y.narrow(0, 0, n_gap));
            rec.gap = bounds::gap_stats(net, &gx, &gy, ball, method, 128).map(|mut g| {
                g.cert_pgd_gap = match (rec.pgd_acc, rec.cert_acc.get(method.name())) {
                    (Some(p), Some(c)) => Some(p - c),
                    _ => None,
                };
                g
            });
        }
        rec.time_s = started.elapsed().as_secs_f64();
        run.append_metrics(&rec)?;
        net.save(&run.model_path())?;
        let score = rec
            .cert_acc
            .values()
            .copied()
            .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))))
            .or(rec.pgd_acc)
            .unwrap_or(rec.clean_acc);
        if score > best_score {
            best_score = score;
            net.save(&run.best_model_path())?;
        }
        log(
            run,
            emit,
            Level::Info,
            format!(
                "epoch {epoch}/{}: loss {:.4}, train acc {:.4}, clean acc {:.4}{}{}",
                cfg.train.epochs,
                rec.train_loss,
                rec.train_acc,
                rec.clean_acc,
                rec.pgd_acc
                    .map(|a| format!(", pgd acc {a:.4}"))
                    .unwrap_or_default(),
                rec.cert_acc
                    .iter()
                    .map(|(k, v)| format!(", cert[{k}] {v:.4}"))
                    .collect::<String>()
            ),
        );
        if data.input_shape == [2] {
            let eps_spec = specs.first();
            emit(Event::Decision(eval::decision_map(
                net,
                &data.test_x,
                &data.test_y,
                eps_spec,
                epoch,
                64,
                400,
            )));
        }
        emit(Event::Metrics(rec));
        if let Some(saved) = admm_saved.filter(|_| !last) {
            lipschitz::Admm::restore(net, &saved);
        }
    }
    Ok(Outcome::Completed)
}

/// Ends a run that was asked to stop: logs why and keeps the model so far.
fn stopped(
    run: &mut RunWriter,
    emit: &mut dyn FnMut(Event),
    net: &Network,
    message: String,
) -> Result<Outcome, TrainError> {
    run.log(&message);
    emit(Event::Log {
        level: Level::Warn,
        message,
    });
    net.save(&run.model_path())?;
    Ok(Outcome::Cancelled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg_with(warmup: u32, ramp: u32, kind: Ramp) -> ExperimentConfig {
        let mut c = ExperimentConfig::default_experiment();
        c.train.method = Method::CrownIbp;
        c.train.eps = 0.2;
        c.train.warmup_epochs = warmup;
        c.train.ramp_epochs = ramp;
        c.train.ramp = kind;
        c.train.final_beta = 0.0;
        c.train.final_kappa = 0.5;
        c
    }

    #[test]
    fn exact_fastlin_that_cannot_fit_in_memory_is_refused_with_a_batch_that_fits() {
        let mut c = ExperimentConfig::default_experiment();
        c.dataset.kind = crate::config::DatasetKind::FashionMnist;
        c.dataset.train_size = 512;
        c.dataset.test_size = 128;
        c.model.arch = crate::config::Arch::SmallConv;
        c.train.method = Method::Fastlin;
        c.train.proj_dim = 0;
        c.train.batch_size = 1 << 22;
        let Err(TrainError::TooBig(msg)) = prepare(&c, Device::Cpu) else {
            panic!("a batch of 2^22 with exact Fast-Lin bounds on the Small convnet was accepted")
        };
        assert!(msg.contains("train.proj_dim"), "{msg}");
        let fits: i64 = msg
            .split("lower train.batch_size to ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no batch size suggested: {msg}"));
        // The suggestion fits by the same estimate, and random projections are not refused.
        c.train.batch_size = fits as usize;
        assert!(
            prepare(&c, Device::Cpu).is_ok(),
            "the suggested batch {fits} is refused too"
        );
        c.train.batch_size = 1 << 22;
        c.train.proj_dim = 50;
        assert!(prepare(&c, Device::Cpu).is_ok());
    }

    #[test]
    fn linear_ramp_and_crown_ibp_schedules() {
        let c = cfg_with(2, 4, Ramp::Linear);
        assert_eq!(schedule(&c, 1.0).eps, 0.0);
        let mid = schedule(&c, 4.0);
        assert!((mid.eps - 0.1).abs() < 1e-12);
        // beta = (eps_max - eps (1 - 0)) / eps_max = 0.5; kappa = (0.2 - 0.1*0.5)/0.2 = 0.75.
        assert!((mid.beta - 0.5).abs() < 1e-12);
        assert!((mid.kappa - 0.75).abs() < 1e-12);
        let end = schedule(&c, 9.0);
        assert!((end.eps - 0.2).abs() < 1e-12 && end.beta.abs() < 1e-12);
        assert!((end.kappa - 0.5).abs() < 1e-12);
    }

    #[test]
    fn smoothed_ramp_is_monotone_continuous_and_ends_at_one() {
        let c = cfg_with(0, 10, Ramp::Smoothed);
        let mut prev = 0.0;
        for i in 0..=1000 {
            let f = ramp_fraction(&c, i as f64 * 0.01);
            assert!(f >= prev - 1e-12, "not monotone at {i}");
            assert!(f - prev < 0.01, "jump at {i}: {prev} -> {f}");
            prev = f;
        }
        assert!((prev - 1.0).abs() < 1e-12);
        // Slower than linear at the start (the t^4 part).
        assert!(ramp_fraction(&c, 1.0) < 0.1);
    }

    #[test]
    fn step_and_cosine_lr() {
        let mut c = ExperimentConfig::default_experiment();
        c.optimizer.lr = 0.1;
        c.optimizer.schedule = LrSchedule::Step;
        c.optimizer.step_epochs = 2;
        c.optimizer.gamma = 0.5;
        assert!((learning_rate(&c, 3) - 0.05).abs() < 1e-12);
        assert!((learning_rate(&c, 4) - 0.025).abs() < 1e-12);
        c.optimizer.schedule = LrSchedule::Cosine;
        c.train.epochs = 10;
        assert!((learning_rate(&c, 5) - 0.05).abs() < 1e-12);
    }
}
