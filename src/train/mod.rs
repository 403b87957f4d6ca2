//! Training: the loop (this file), its schedules, the loss of each method, the Lipschitz
//! control of `method = "lipschitz"`, and the reporter that writes the run folder and sends
//! events. Knows nothing of egui: it reports through a callback of [`Event`]s and polls
//! [`Command`]s.
mod control;
mod lipschitz_control;
mod losses;
mod prepare;
mod reporter;
mod schedule;

pub use control::Control;
pub use lipschitz_control::{LipschitzControl, ENFORCE_GRAM_ITERS};
pub use losses::{
    certified_training_loss, cross_entropy, method_loss, regularizer_weights, robust_cross_entropy,
    BatchLoss, CertifiedLoss,
};
pub use prepare::{optimizer, prepare, Prepared};
pub use reporter::Reporter;
pub use schedule::{learning_rate, ramp_fraction, schedule, Schedule};

use crate::config::ExperimentConfig;
use crate::data::Dataset;
use crate::eval::{EvalListener, Evaluator, Interrupted};
use crate::metrics::EvalRecord;
use crate::model::Network;
pub use crate::protocol::{Command, Event, Level, Outcome};
use crate::run::RunWriter;
use std::collections::BTreeMap;
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
    #[error("{0}")]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Device(#[from] crate::device::DeviceError),
    #[error("Lipschitz: {0}")]
    Lipschitz(String),
    #[error("{0}")]
    TooBig(String),
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
            "device {}, {} train / {} test examples of {}, model {} ({} parameters), method {}",
            crate::device::device_name(*device),
            data.train_len(),
            data.test_len(),
            data.name,
            net.describe(),
            net.num_parameters(),
            cfg.train.method.name()
        ),
    );
    let mut opt = optimizer(net, cfg)?;
    let evaluator = Evaluator::new(cfg, data);
    let mut lip = LipschitzControl::start(cfg, net, &mut rep)?;
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
            rep: &mut rep,
        };
        let Some(stats) = pass.run(epoch, &mut step)? else {
            lip.on_stop(net);
            let why = format!("stopped at epoch {epoch}, step {step}");
            return rep.stopped(net, why);
        };
        let last = epoch == cfg.train.epochs;
        let evaluate = last || epoch % cfg.eval.every_epochs == 0;
        lip.after_epoch(net, epoch, evaluate, cfg.train.lip_weight, &mut rep)?;
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
        let mut listener = Listening {
            rep: &mut rep,
            control,
        };
        if evaluator.evaluate(net, data, &mut rec, &mut listener) == Err(Interrupted) {
            let why = format!("stopped during the evaluation of epoch {epoch}");
            return rep.stopped(net, why);
        }
        lip.report(net, epoch, &mut rec, &mut rep);
        rec.time_s = rep.elapsed_secs();
        rep.record(&rec, net)?;
        rep.log(Level::Info, epoch_summary(&rec, cfg.train.epochs));
        if let Some(map) = evaluator.decision_map(net, data, epoch) {
            rep.emit(Event::Decision(map));
        }
        rep.emit(Event::Metrics(rec));
        lip.end_epoch(net, last);
    }
    Ok(Outcome::Completed)
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
        "epoch {}/{epochs}: loss {:.4}, train acc {:.4}, clean acc {:.4}{}{}",
        rec.epoch,
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
        let (cfg, data, net) = (self.cfg, self.data, self.net);
        let device = data.train_x.device();
        let n_train = data.train_len();
        let batch = cfg.train.batch_size as i64;
        let steps = steps_per_epoch(cfg, data);
        let perm = Tensor::randperm(n_train, (Kind::Int64, device));
        let mut loss_sum = Tensor::zeros([], (Kind::Float, device));
        let mut correct_sum = Tensor::zeros([], (Kind::Int64, device));
        let mut part_sums: BTreeMap<&'static str, Tensor> = BTreeMap::new();
        let mut sched = schedule(cfg, (epoch - 1) as f64);
        for (b, (start, len)) in crate::linalg::batch_ranges(n_train, batch).enumerate() {
            let idx = perm.narrow(0, start, len);
            let x = data.train_x.index_select(0, &idx);
            let y = data.train_y.index_select(0, &idx);
            sched = schedule(cfg, (epoch - 1) as f64 + b as f64 / steps as f64);
            let batch_loss = method_loss(net, &x, &y, cfg, &sched);
            let loss = self.lip.step_loss(net, batch_loss.total);
            let logits = batch_loss.logits;
            self.opt.zero_grad();
            loss.backward();
            let loss_value = loss.double_value(&[]);
            if !loss_value.is_finite() {
                return Err(TrainError::NonFinite {
                    epoch,
                    step: *step,
                    loss: loss_value,
                });
            }
            self.opt.step();
            self.lip.after_step(net)?;
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
}
