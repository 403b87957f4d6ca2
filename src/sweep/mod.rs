//! Sweeps: any setting times seeds, each point an ordinary run folder, run locally in parallel
//! or as a Slurm job array, read back as groups (same settings, several seeds) with their
//! spread and the clean-vs-certified Pareto front.
//!
//! The pieces, one per file: the sweep file and its expansion (`spec`), the sweep folder with
//! its points and their states (`folder`), the two backends (`local`, `slurm`) and the report
//! (`report`). A backend only runs points; which points exist is decided by a [`Strategy`], so
//! a search that proposes points from finished results (an ask-and-tell optimiser) can plug in
//! beside the fixed grid / zip / random expansions without touching the backends.
mod folder;
mod local;
mod report;
mod slurm;
mod spec;

pub use folder::{PointState, SweepFolder, SWEEP_FILE};
pub use local::{run_local, LocalOptions, SweepEvent, SweepProgress};
pub use report::{
    group_results, pareto_front, report, Group, MetricStats, PointResult, SweepReport, CERT_BEST,
    CLEAN, PGD, WALL,
};
pub use slurm::{slurm_status, submit, write_sbatch, SlurmArgs};
pub use spec::{is_integer, Axis, Mode, Scale, SlurmOptions, SweepSpec};

/// A setting as `key=value` pairs joined by spaces, in key order (the CLI, the report and the
/// Sweep tab all write settings this way); `short` keeps only the last part of each dotted key.
pub fn settings_label(settings: &BTreeMap<String, toml::Value>, short: bool) -> String {
    settings
        .iter()
        .map(|(k, v)| {
            let k = if short {
                k.rsplit('.').next().unwrap_or(k)
            } else {
                k
            };
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

use crate::config::ExperimentConfig;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One run of a sweep: a setting (one value per axis) and a seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// `p0003-s1`: the setting's index and the seed; also the run folder's name.
    pub id: String,
    pub setting_index: usize,
    /// The axis values of this point's setting, by dotted key.
    pub setting: BTreeMap<String, toml::Value>,
    pub seed: u64,
    /// The validated config the point runs.
    pub config: ExperimentConfig,
}

/// Where the points of a sweep come from. The fixed expansions give every point at once; an
/// adaptive search would give more as results arrive (`done` holds the finished ones).
pub trait Strategy {
    fn propose(&mut self, done: &[PointResult]) -> Result<Vec<Point>, SweepError>;
}

/// The grid / zip / random expansion of a sweep file: all points, once.
pub struct FixedExpansion {
    pub spec: SweepSpec,
    pub spec_dir: PathBuf,
    proposed: bool,
}

impl FixedExpansion {
    pub fn new(spec: SweepSpec, spec_dir: PathBuf) -> Self {
        Self {
            spec,
            spec_dir,
            proposed: false,
        }
    }
}

impl Strategy for FixedExpansion {
    fn propose(&mut self, _done: &[PointResult]) -> Result<Vec<Point>, SweepError> {
        if std::mem::replace(&mut self.proposed, true) {
            return Ok(Vec::new());
        }
        self.spec.expand(&self.spec_dir)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: String },
    #[error("invalid sweep file {origin}: {message}")]
    Spec { origin: String, message: String },
    #[error("the sweep's base preset is invalid: {0}")]
    Base(String),
    #[error("point {point}: `{key}`: {message}")]
    Point {
        point: String,
        key: String,
        message: String,
    },
    #[error("{0}")]
    Folder(String),
    #[error("slurm: {0}")]
    Slurm(String),
}

impl SweepError {
    pub(crate) fn io(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        SweepError::Io {
            path: path.to_path_buf(),
            error: e.to_string(),
        }
    }
}
