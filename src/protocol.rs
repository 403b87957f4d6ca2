//! The messages between the workbench and the training thread. Plain data: the UI and the
//! engine both import this leaf, neither imports the other.
use crate::metrics::{DecisionMap, EvalRecord};
use std::path::PathBuf;

/// Sent to the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Pause,
    Resume,
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Completed,
    Cancelled,
    Failed(String),
}

/// Sent by the worker, in order; the last one is always `Finished`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Started {
        run_dir: PathBuf,
        device: String,
        model: String,
        total_epochs: u32,
        steps_per_epoch: u64,
    },
    Progress {
        epoch: u32,
        /// Fraction of the current epoch done, in [0, 1].
        epoch_fraction: f32,
        step: u64,
        loss: f64,
    },
    Metrics(EvalRecord),
    Decision(DecisionMap),
    Log {
        level: Level,
        message: String,
    },
    Paused(bool),
    Finished {
        outcome: Outcome,
    },
}

impl Outcome {
    /// The word written to `summary.json` and shown in the run browser.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Completed => OUTCOME_COMPLETED,
            Outcome::Cancelled => OUTCOME_CANCELLED,
            Outcome::Failed(_) => OUTCOME_FAILED,
        }
    }
}

/// The outcome names of `summary.json` (`Outcome::name`), for readers of run folders.
pub const OUTCOME_COMPLETED: &str = "completed";
pub const OUTCOME_CANCELLED: &str = "cancelled";
pub const OUTCOME_FAILED: &str = "failed";
