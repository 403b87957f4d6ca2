//! The run being trained: its worker handle and what its events have told so far.
use super::panels::Notice;
use super::series::{RunSeries, PALETTE};
use crate::config::ExperimentConfig;
use crate::metrics::DecisionMap;
use crate::protocol::{Command, Event, Level, Outcome};
use crate::worker::WorkerHandle;
use crossbeam_channel::TryRecvError;
use std::path::Path;
use std::time::Instant;

/// The run being trained (or the last one, once it ended).
pub struct LiveRun {
    handle: Option<WorkerHandle>,
    pub series: RunSeries,
    pub device: String,
    pub model: String,
    pub total_epochs: u32,
    pub epoch: u32,
    pub epoch_fraction: f32,
    pub step: u64,
    pub paused: bool,
    pub finished: Option<Outcome>,
    pub decision: Option<DecisionMap>,
    started: Instant,
}

/// What one drain of the events brought for the rest of the window.
#[derive(Default)]
pub(super) struct Drained {
    pub logs: Vec<(Level, String)>,
    pub notice: Option<Notice>,
}

impl LiveRun {
    /// A run of `cfg` just handed to its worker.
    pub(super) fn new(handle: WorkerHandle, cfg: ExperimentConfig) -> Self {
        LiveRun {
            handle: Some(handle),
            total_epochs: cfg.train.epochs,
            series: RunSeries::new(cfg.name.clone(), None, cfg, PALETTE[0]),
            device: String::new(),
            model: String::new(),
            epoch: 1,
            epoch_fraction: 0.0,
            step: 0,
            paused: false,
            finished: None,
            decision: None,
            started: Instant::now(),
        }
    }

    pub fn is_running(&self) -> bool {
        self.finished.is_none()
    }
    pub fn run_dir(&self) -> Option<&Path> {
        self.series.dir.as_deref()
    }
    /// Fraction of the whole run done, in [0, 1].
    pub fn run_fraction(&self) -> f32 {
        if self.total_epochs == 0 {
            return 0.0;
        }
        let done = self.epoch.saturating_sub(1) as f32 + self.epoch_fraction;
        (done / self.total_epochs as f32).clamp(0.0, 1.0)
    }

    pub(super) fn send(&self, cmd: Command) {
        if let Some(h) = self.handle.as_ref() {
            h.send(cmd);
        }
    }

    /// Never leave a trainer running without its window: stop it and let it save.
    pub(super) fn stop_worker(&mut self) {
        if let Some(mut h) = self.handle.take() {
            h.send(Command::Stop);
            h.join();
        }
    }

    /// Takes the worker's events until `deadline`, the run's end, or an empty channel.
    pub(super) fn drain(&mut self, deadline: Instant) -> Drained {
        let mut out = Drained::default();
        while self.finished.is_none() && Instant::now() < deadline {
            let Some(handle) = self.handle.as_ref() else {
                break;
            };
            match handle.events.try_recv() {
                Ok(event) => self.apply(event, &mut out),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let msg = "the trainer thread ended without reporting how (it crashed); the run folder keeps what was written".to_string();
                    out.logs.push((Level::Error, msg.clone()));
                    out.notice = Some(Notice {
                        level: Level::Error,
                        text: msg.clone(),
                    });
                    let outcome = Outcome::Failed(msg);
                    self.series.outcome = Some(outcome.name().into());
                    self.finished = Some(outcome);
                    break;
                }
            }
        }
        out
    }

    fn apply(&mut self, event: Event, out: &mut Drained) {
        match event {
            Event::Started {
                run_dir,
                device,
                model,
                total_epochs,
                ..
            } => {
                self.series.name = run_dir.file_name().map_or_else(
                    || run_dir.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                self.series.dir = Some(run_dir);
                self.device = device;
                self.model = model;
                self.total_epochs = total_epochs;
            }
            Event::Progress {
                epoch,
                epoch_fraction,
                step,
                loss,
            } => {
                self.epoch = epoch;
                self.epoch_fraction = epoch_fraction;
                self.step = step;
                self.series
                    .push_batch_loss(epoch as f64 - 1.0 + epoch_fraction as f64, loss);
            }
            Event::Metrics(rec) => self.series.push(rec),
            Event::Decision(map) => self.decision = Some(map),
            Event::Log { level, message } => out.logs.push((level, message)),
            Event::Paused(p) => self.paused = p,
            Event::Finished { outcome } => out.notice = Some(self.finish(outcome)),
        }
    }

    /// The run ended as `outcome`: record it, join the thread, and say so.
    fn finish(&mut self, outcome: Outcome) -> Notice {
        let folder = self
            .run_dir()
            .map(|d| format!(" (run folder {})", d.display()))
            .unwrap_or_default();
        let notice = match &outcome {
            Outcome::Completed => Notice {
                level: Level::Info,
                text: format!(
                    "run completed in {:.1} s{folder}",
                    self.started.elapsed().as_secs_f64()
                ),
            },
            Outcome::Cancelled => Notice {
                level: Level::Warn,
                text: format!("run stopped; metrics and model so far are kept{folder}"),
            },
            Outcome::Failed(e) => Notice {
                level: Level::Error,
                text: format!("run failed: {e}{folder}"),
            },
        };
        self.series.outcome = Some(outcome.name().into());
        self.finished = Some(outcome);
        self.paused = false;
        if let Some(mut h) = self.handle.take() {
            h.join();
        }
        notice
    }
}
