//! Where the training loop's news goes: each message is written to the run folder's log and
//! sent as an event once, the progress events are throttled, and each evaluation is appended
//! to `metrics.jsonl` with the model saved beside it (the best one too).
use super::{Control, TrainError};
use crate::config::{ExperimentConfig, Method};
use crate::metrics::EvalRecord;
use crate::model::Network;
use crate::protocol::{Event, Level};
use crate::run::RunWriter;
use std::time::{Duration, Instant};

pub struct Reporter<'a> {
    run: &'a mut RunWriter,
    emit: &'a mut dyn FnMut(Event),
    started: Instant,
    last_progress: Instant,
    best_score: f64,
}

impl<'a> Reporter<'a> {
    pub fn new(run: &'a mut RunWriter, emit: &'a mut dyn FnMut(Event)) -> Self {
        Reporter {
            run,
            emit,
            started: Instant::now(),
            last_progress: Instant::now() - Duration::from_secs(1),
            best_score: f64::NEG_INFINITY,
        }
    }

    pub fn emit(&mut self, event: Event) {
        (self.emit)(event);
    }

    /// Writes `message` to `log.txt` and sends it to the UI.
    pub fn log(&mut self, level: Level, message: String) {
        self.run.log(&message);
        (self.emit)(Event::Log { level, message });
    }

    pub fn run_dir(&self) -> std::path::PathBuf {
        self.run.dir().to_path_buf()
    }

    pub fn elapsed_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// A progress event, at most every 100 ms.
    pub fn progress(&mut self, epoch: u32, epoch_fraction: f32, step: u64, loss: f64) {
        if self.last_progress.elapsed() >= Duration::from_millis(100) {
            self.last_progress = Instant::now();
            self.epoch_progress(epoch, epoch_fraction, step, loss);
        }
    }

    /// A progress event now (the end of an epoch).
    pub fn epoch_progress(&mut self, epoch: u32, epoch_fraction: f32, step: u64, loss: f64) {
        (self.emit)(Event::Progress {
            epoch,
            epoch_fraction,
            step,
            loss,
        });
    }

    /// Handles pending commands (blocks while paused); true when the run must stop.
    pub fn should_stop(&mut self, control: &Control) -> bool {
        control.should_stop(self.emit)
    }

    /// Appends an evaluation to `metrics.jsonl` and saves the model; also as the best model
    /// when its [`selection_score`] under `cfg` is the highest so far.
    pub fn record(
        &mut self,
        rec: &EvalRecord,
        net: &Network,
        cfg: &ExperimentConfig,
    ) -> Result<(), TrainError> {
        self.run.append_metrics(rec)?;
        net.save(&self.run.model_path())?;
        let score = selection_score(rec, cfg);
        if score > self.best_score {
            self.best_score = score;
            net.save(&self.run.best_model_path())?;
        }
        Ok(())
    }

    /// A run that was asked to stop: logs why and keeps the model so far.
    pub fn stop(&mut self, net: &Network, message: String) -> Result<(), TrainError> {
        self.log(Level::Warn, message);
        net.save(&self.run.model_path())?;
        Ok(())
    }

    /// Appends a record to `metrics.jsonl` without touching the saved models.
    pub fn append(&mut self, rec: &EvalRecord) -> Result<(), TrainError> {
        Ok(self.run.append_metrics(rec)?)
    }

    pub fn best_model_path(&self) -> std::path::PathBuf {
        self.run.best_model_path()
    }
}

/// What picks the best model among a run's (validation) evaluations: the accuracy the method
/// trains for. Standard training of an ordinary network: clean accuracy (its PGD accuracy is
/// highest at chance level, so PGD would pick an untrained network). PGD and RAT: PGD accuracy.
/// Noise training for smoothing: the smoothed certified accuracy, else clean. Certified
/// training, Lipschitz training and 1-Lipschitz architectures: the best certified accuracy,
/// else PGD, else clean.
pub fn selection_score(rec: &EvalRecord, cfg: &ExperimentConfig) -> f64 {
    let certified = rec.cert_acc.values().copied().reduce(f64::max);
    match cfg.train.method {
        Method::Standard if !cfg.model.arch.is_one_lipschitz() => rec.clean_acc,
        Method::Gaussian => certified.unwrap_or(rec.clean_acc),
        Method::Pgd | Method::Rat => rec.pgd_acc.unwrap_or(rec.clean_acc),
        _ => certified.or(rec.pgd_acc).unwrap_or(rec.clean_acc),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_model_is_picked_by_what_the_method_trains_for() {
        // An untrained network (chance: 10% clean, and PGD cannot lower it much) against a
        // trained one (high clean, low PGD, some certificates).
        let chance = EvalRecord {
            clean_acc: 0.10,
            pgd_acc: Some(0.10),
            ..EvalRecord::default()
        };
        let mut trained = EvalRecord {
            clean_acc: 0.80,
            pgd_acc: Some(0.04),
            ..EvalRecord::default()
        };
        let mut cfg = ExperimentConfig::default_experiment();
        let better = |a: &EvalRecord, b: &EvalRecord, cfg: &ExperimentConfig| {
            selection_score(a, cfg) > selection_score(b, cfg)
        };
        cfg.train.method = Method::Standard;
        assert!(
            better(&trained, &chance, &cfg),
            "standard training: by clean accuracy"
        );
        cfg.train.method = Method::Pgd;
        assert!(
            better(&chance, &trained, &cfg),
            "PGD training: by PGD accuracy"
        );
        cfg.train.method = Method::Ibp;
        trained.cert_acc.insert("ibp".into(), 0.02);
        trained.cert_acc.insert("crown".into(), 0.30);
        assert!(
            better(&trained, &chance, &cfg),
            "certified training: by the best certificate"
        );
        assert_eq!(selection_score(&trained, &cfg), 0.30);
        cfg.train.method = Method::Gaussian;
        assert_eq!(
            selection_score(&chance, &cfg),
            0.10,
            "no smoothing evaluated: clean"
        );
    }
}
