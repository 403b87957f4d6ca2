//! Training: the loop (this file), its schedules, the loss of each method, the Lipschitz
//! control of `method = "lipschitz"`, and the reporter that writes the run folder and sends
//! events. Knows nothing of egui: it reports through a callback of [`Event`]s and polls
//! [`Command`]s.
mod adversarial_ibp;
mod control;
mod init;
mod lipschitz_control;
mod losses;
pub mod memory;
mod prepare;
mod reporter;
mod sabr;
mod schedule;
mod shi_reg;

pub use adversarial_ibp::{adversarial_ibp_loss, expressive_parts, training_pgd_point};
pub use control::Control;
pub use init::{ibp_init, ibp_init_std};
pub use lipschitz_control::{LipschitzControl, ENFORCE_GRAM_ITERS};
pub use losses::{
    certified_training_loss, cross_entropy, method_loss, regularizer_weights, robust_cross_entropy,
    BatchLoss, CertifiedLoss,
};
pub use prepare::{optimizer, prepare, Prepared};
pub use reporter::Reporter;
pub use sabr::sabr_centre;
pub use schedule::{learning_rate, ramp_fraction, schedule, Schedule};
pub use shi_reg::{shi_parts, shi_terms, shi_weight, SHI_EPS_AT_ZERO, SHI_TOL};

use crate::config::ExperimentConfig;
use crate::data::Dataset;
use crate::eval::{EvalListener, Evaluator, Interrupted};
use crate::failure::{set_phase, TorchFailure};
use crate::metrics::{EvalRecord, FinalModel, Split};
use crate::model::Network;
pub use crate::protocol::{Command, Event, Level, Outcome};
use crate::run::RunWriter;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use tch::{nn, Kind, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error("run folder: {0}")]
    Run(#[from] std::io::Error),
    #[error("training diverged at epoch {epoch}, step {step}: loss is {loss} (try a smaller learning rate or eps)")]
    NonFinite { epoch: u32, step: u64, loss: f64 },
    /// A libtorch failure, named by what was being done (the phase when it came through `?`).
    #[error(transparent)]
    Torch(#[from] TorchFailure),
    #[error(transparent)]
    Device(#[from] crate::device::DeviceError),
    #[error("Lipschitz: {0}")]
    Lipschitz(String),
    #[error("{0}")]
    TooBig(String),
}

/// A `TchError` that reaches the loop through `?` is named by the current phase.
impl From<tch::TchError> for TrainError {
    fn from(e: tch::TchError) -> Self {
        TrainError::Torch(TorchFailure::in_phase(&e))
    }
}

impl TrainError {
    /// libtorch's full text behind a failure (with its native frames), for `log.txt` only.
    pub fn details(&self) -> Option<&str> {
        match self {
            TrainError::Torch(f) | TrainError::Model(crate::model::ModelError::Torch(f)) => {
                Some(&f.details)
            }
            _ => None,
        }
    }
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
    let Prepared { device, data, net } = prep;
    set_phase("starting the run");
    let steps_per_epoch = steps_per_epoch(cfg, data);
    let mut rep = Reporter::new(run, emit);
    rep.emit(Event::Started {
        run_dir: rep.run_dir(),
        device: crate::device::device_name(*device),
        model: net.describe(),
        total_epochs: cfg.train.epochs,
        steps_per_epoch,
    });
    rep.log(
        Level::Info,
        format!(
            "device {}, {} train / {} validation / {} test examples of {}, model {} ({} parameters), method {}",
            crate::device::device_name(*device),
            data.train_len(),
            data.val_len(),
            data.test_len(),
            data.name,
            net.describe(),
            net.num_parameters(),
            cfg.train.method.name()
        ),
    );
    let evaluator = Evaluator::new(cfg, data);
    injection_from_env();
    let (end, epoch, step) = run_epochs(cfg, data, net, &evaluator, control, &mut rep)?;
    if let End::Stopped(why) = &end {
        rep.stop(net, why.clone())?;
    }
    if evaluator.split() == Split::Val {
        if control.cancel.load(Ordering::Relaxed) {
            rep.log(
                Level::Warn,
                "interrupted: the final test evaluation is skipped".into(),
            );
        } else {
            final_test(cfg, data, net, control, &mut rep, epoch, step)?;
        }
    }
    Ok(match end {
        End::Completed => Outcome::Completed,
        End::Stopped(_) => Outcome::Cancelled,
    })
}

/// How the epochs ended.
enum End {
    Completed,
    /// Asked to stop; why.
    Stopped(String),
}

/// Trains and evaluates epoch after epoch. Returns how it ended, the last epoch begun and the
/// steps taken.
fn run_epochs(
    cfg: &ExperimentConfig,
    data: &Dataset,
    net: &Network,
    evaluator: &Evaluator,
    control: &Control,
    rep: &mut Reporter,
) -> Result<(End, u32, u64), TrainError> {
    set_phase("creating the optimizer");
    let mut opt = optimizer(net, cfg)?;
    set_phase("starting the Lipschitz control");
    let mut lip = LipschitzControl::start(cfg, net, rep)?;
    let mut step: u64 = 0;
    for epoch in 1..=cfg.train.epochs {
        let lr = learning_rate(cfg, epoch - 1);
        opt.set_lr(lr);
        lip.start_epoch();
        let mut pass = EpochPass {
            cfg,
            data,
            net,
            opt: &mut opt,
            lip: &mut lip,
            control,
            rep,
        };
        let Some(stats) = pass.run(epoch, &mut step)? else {
            lip.on_stop(net);
            let why = format!("stopped at epoch {epoch}, step {step}");
            return Ok((End::Stopped(why), epoch, step));
        };
        let last = epoch == cfg.train.epochs;
        let evaluate = last || epoch % cfg.eval.every_epochs == 0;
        set_phase(format!("ending epoch {epoch}"));
        lip.after_epoch(net, epoch, evaluate, cfg.train.lip_weight, rep)?;
        if !evaluate {
            continue;
        }
        let mut rec = EvalRecord {
            epoch,
            step,
            train_loss: stats.loss,
            train_acc: stats.acc,
            loss_parts: stats.parts,
            train_eps: stats.eps,
            lr,
            ..EvalRecord::default()
        };
        let mut listener = Listening { rep, control };
        set_phase(format!("evaluating epoch {epoch}"));
        if evaluator.evaluate(net, &mut rec, &mut listener) == Err(Interrupted) {
            let why = format!("stopped during the evaluation of epoch {epoch}");
            return Ok((End::Stopped(why), epoch, step));
        }
        set_phase(format!("evaluating epoch {epoch} (Lipschitz report)"));
        lip.report(net, epoch, &mut rec, rep);
        rec.time_s = rep.elapsed_secs();
        set_phase(format!("saving the model of epoch {epoch}"));
        rep.record(&rec, net, cfg)?;
        rep.log(Level::Info, epoch_summary(&rec, cfg.train.epochs));
        set_phase(format!("drawing the decision map of epoch {epoch}"));
        if let Some(map) = evaluator.decision_map(net, data, epoch) {
            rep.emit(Event::Decision(map));
        }
        rep.emit(Event::Metrics(rec));
        set_phase(format!("ending epoch {epoch}"));
        lip.end_epoch(net, last);
    }
    Ok((End::Completed, cfg.train.epochs, step))
}

/// The end of a run with a validation split: the last and the best model (selected on the
/// validation split) evaluated once on the test split, each a record with `split = "test"`
/// and `model`. Only Ctrl-C interrupts it. `model.safetensors` keeps the last model.
fn final_test(
    cfg: &ExperimentConfig,
    data: &Dataset,
    net: &mut Network,
    control: &Control,
    rep: &mut Reporter,
    epoch: u32,
    step: u64,
) -> Result<(), TrainError> {
    let test = Evaluator::on_test(cfg, data);
    for model in [FinalModel::Last, FinalModel::Best] {
        set_phase(format!("the final test evaluation of the {model:?} model").to_lowercase());
        if model == FinalModel::Best {
            let best = rep.best_model_path();
            if !best.exists() {
                continue;
            }
            net.load_weights(&best)?;
        }
        let mut rec = EvalRecord {
            epoch,
            step,
            model: Some(model),
            ..EvalRecord::default()
        };
        let mut listener = CancelOnly { control, rep };
        if test.evaluate(net, &mut rec, &mut listener) == Err(Interrupted) {
            rep.log(
                Level::Warn,
                "interrupted: the final test evaluation is incomplete".into(),
            );
            return Ok(());
        }
        rec.time_s = rep.elapsed_secs();
        rep.append(&rec)?;
        rep.log(Level::Info, final_summary(&rec));
        rep.emit(Event::Metrics(rec));
    }
    Ok(())
}

/// The log line of a final test evaluation.
fn final_summary(rec: &EvalRecord) -> String {
    let which = match rec.model {
        Some(FinalModel::Best) => "best (by validation)",
        _ => "last",
    };
    format!("test split, {which} model: {}", accuracies(rec))
}

/// `clean acc .., pgd acc .., cert[m] ..` of a record, for the log.
fn accuracies(rec: &EvalRecord) -> String {
    format!(
        "clean acc {:.4}{}{}{}",
        rec.clean_acc,
        rec.pgd_acc
            .map(|a| format!(", pgd acc {a:.4}"))
            .unwrap_or_default(),
        rec.cert_acc
            .iter()
            .map(|(k, v)| format!(", cert[{k}] {v:.4}"))
            .collect::<String>(),
        rec.verified_acc
            .map(|a| format!(", verified {a:.4}"))
            .unwrap_or_default()
    )
}

/// The final evaluation's listener: only Ctrl-C (the cancel flag) stops it.
struct CancelOnly<'a, 'r> {
    control: &'a Control,
    rep: &'a mut Reporter<'r>,
}

impl EvalListener for CancelOnly<'_, '_> {
    fn should_stop(&mut self) -> bool {
        self.control.cancel.load(Ordering::Relaxed)
    }
    fn log(&mut self, level: Level, message: String) {
        self.rep.log(level, message);
    }
}

/// The evaluation's view of the run: Stop and Pause are honoured between its parts, its
/// messages go to the log and the UI.
struct Listening<'a, 'r> {
    rep: &'a mut Reporter<'r>,
    control: &'a Control,
}

impl EvalListener for Listening<'_, '_> {
    fn should_stop(&mut self) -> bool {
        self.rep.should_stop(self.control)
    }
    fn log(&mut self, level: Level, message: String) {
        self.rep.log(level, message);
    }
}

fn steps_per_epoch(cfg: &ExperimentConfig, data: &Dataset) -> u64 {
    let batch = cfg.train.batch_size as i64;
    ((data.train_len() + batch - 1) / batch) as u64
}

/// The log line of an evaluated epoch.
fn epoch_summary(rec: &EvalRecord, epochs: u32) -> String {
    format!(
        "epoch {}/{epochs}: loss {:.4}, train acc {:.4}, {}",
        rec.epoch,
        rec.train_loss,
        rec.train_acc,
        accuracies(rec)
    )
}

/// The training statistics of one epoch.
struct EpochStats {
    /// Mean loss and clean training accuracy over the epoch's examples.
    loss: f64,
    acc: f64,
    /// The training eps at the end of the epoch.
    eps: f64,
    /// The epoch means of the weighted loss terms.
    parts: BTreeMap<String, f64>,
}

/// One pass over the shuffled training split.
struct EpochPass<'a, 'r> {
    cfg: &'a ExperimentConfig,
    data: &'a Dataset,
    net: &'a Network,
    opt: &'a mut nn::Optimizer,
    lip: &'a mut LipschitzControl,
    control: &'a Control,
    rep: &'a mut Reporter<'r>,
}

impl EpochPass<'_, '_> {
    /// Runs the epoch's steps; `None` when the run was asked to stop.
    fn run(&mut self, epoch: u32, step: &mut u64) -> Result<Option<EpochStats>, TrainError> {
        let (cfg, data) = (self.cfg, self.data);
        let device = data.train_x.device();
        let n_train = data.train_len();
        let batch = cfg.train.batch_size as i64;
        let steps = steps_per_epoch(cfg, data);
        set_phase(format!("shuffling the training set for epoch {epoch}"));
        let perm = Tensor::f_randperm(n_train, (Kind::Int64, device))?;
        let mut loss_sum = Tensor::zeros([], (Kind::Float, device));
        let mut correct_sum = Tensor::zeros([], (Kind::Int64, device));
        let mut part_sums: BTreeMap<&'static str, Tensor> = BTreeMap::new();
        let mut sched = schedule(cfg, (epoch - 1) as f64);
        for (b, (start, len)) in crate::linalg::batch_ranges(n_train, batch).enumerate() {
            set_phase(format!("training step {} of epoch {epoch}", b + 1));
            sched = schedule(cfg, (epoch - 1) as f64 + b as f64 / steps as f64);
            let idx = perm.narrow(0, start, len);
            let y = data.train_y.f_index_select(0, &idx)?;
            let (batch_loss, loss_value) = self.step(&idx, &y, &sched, epoch, *step)?;
            let (loss, logits) = (&batch_loss.total, &batch_loss.logits);
            *step += 1;
            let _ = tch::no_grad(|| {
                loss_sum += loss.detach() * len as f64;
                correct_sum += logits.argmax(1, false).eq_tensor(&y).sum(Kind::Int64);
                for (name, part) in &batch_loss.parts {
                    let sum = part_sums
                        .entry(*name)
                        .or_insert_with(|| Tensor::zeros([], (Kind::Float, device)));
                    *sum += part.detach() * len as f64;
                }
            });
            let done = (b + 1) as f32 / steps as f32;
            self.rep.progress(epoch, done, *step, loss_value);
            if self.rep.should_stop(self.control) {
                return Ok(None);
            }
        }
        let loss = loss_sum.double_value(&[]) / n_train as f64;
        self.rep.epoch_progress(epoch, 1.0, *step, loss);
        Ok(Some(EpochStats {
            loss,
            acc: correct_sum.double_value(&[]) / n_train as f64,
            eps: sched.eps,
            parts: part_sums
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.double_value(&[]) / n_train as f64))
                .collect(),
        }))
    }

    /// One step on the examples `idx` (labels `y`): the method's loss, its gradient, the
    /// update. Returns the loss terms (`total` as stepped on, with the Lipschitz penalty) and
    /// the total's value. The allocations that grow with the batch go through libtorch's
    /// fallible calls, so that an out-of-memory ends the run with a sentence; the ops inside
    /// the bounds panic instead, named by the phase (see `failure`).
    fn step(
        &mut self,
        idx: &Tensor,
        y: &Tensor,
        sched: &Schedule,
        epoch: u32,
        done_steps: u64,
    ) -> Result<(BatchLoss, f64), TrainError> {
        let net = self.net;
        let x = self.data.train_x.f_index_select(0, idx)?;
        // A real libtorch allocation failure: 2^50 floats, more than any machine has.
        let impossible = ([1i64 << 50], (Kind::Float, x.device()));
        match injected_failure(done_steps + 1) {
            Some(Injected::Error) => drop(Tensor::f_empty(impossible.0, impossible.1)?),
            Some(Injected::Panic) => drop(Tensor::empty(impossible.0, impossible.1)),
            None => {}
        }
        let BatchLoss {
            total,
            logits,
            parts,
        } = method_loss(net, &x, y, self.cfg, sched);
        let loss = self.lip.step_loss(net, total);
        self.opt.zero_grad();
        loss.f_backward()?;
        let loss_value = loss.f_double_value(&[])?;
        if !loss_value.is_finite() {
            return Err(TrainError::NonFinite {
                epoch,
                step: done_steps,
                loss: loss_value,
            });
        }
        self.opt.step();
        self.lip.after_step(net)?;
        let stepped = BatchLoss {
            total: loss,
            logits,
            parts,
        };
        Ok((stepped, loss_value))
    }
}

/// How an injected failure surfaces: as a `TchError` from an `f_` op, or as the panic of the
/// plain op (tch unwraps the error), the two ways a libtorch failure reaches the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    Error,
    Panic,
}

thread_local! {
    /// The training step (counted from 1 over the run) whose allocation fails: a test hook.
    static INJECTED_FAILURE_AT: Cell<Option<(u64, Injected)>> = const { Cell::new(None) };
}

/// Makes training step `step` (counted from 1 over the run) of runs on this thread fail with a
/// real libtorch allocation error, as an out-of-memory would; `None` turns it off. For tests of
/// the failure path: `certlab run` reads `CERTLAB_INJECT_TORCH_ERROR=step:N` (an error) or
/// `panic:N` (a panic) into it.
#[doc(hidden)]
pub fn inject_torch_failure(at: Option<(u64, Injected)>) {
    INJECTED_FAILURE_AT.with(|c| c.set(at));
}

/// Reads `CERTLAB_INJECT_TORCH_ERROR` into the hook of this thread.
fn injection_from_env() {
    let Ok(spec) = std::env::var("CERTLAB_INJECT_TORCH_ERROR") else {
        return;
    };
    let at = |n: &str| n.parse().ok();
    let injected = match spec.split_once(':') {
        Some(("step", n)) => at(n).map(|n| (n, Injected::Error)),
        Some(("panic", n)) => at(n).map(|n| (n, Injected::Panic)),
        _ => None,
    };
    if injected.is_some() {
        inject_torch_failure(injected);
    }
}

fn injected_failure(step: u64) -> Option<Injected> {
    INJECTED_FAILURE_AT
        .with(|c| c.get())
        .and_then(|(at, how)| (at == step).then_some(how))
}
