//! `ExperimentConfig`: everything that defines a run, loaded from and saved to TOML.
//!
//! Unknown keys and wrong types are rejected by serde (`deny_unknown_fields`) with the key
//! named; out-of-range values are found by [`ExperimentConfig::validate`], which returns every
//! problem with the dotted key it belongs to, so the GUI can mark the field.
//!
//! One file per section (`[dataset]`, `[model]`, `[train]`, `[optimizer]`, `[eval]`), each with
//! its closed lists as serde enums and the checks of its own keys; `validate.rs` holds the rules
//! that span sections.
mod dataset;
mod eval;
mod model;
mod optimizer;
mod smoothing;
mod train;
mod train_certified;
mod validate;

pub use dataset::{DatasetConfig, DatasetKind, FASHION_MNIST_DIR};
pub use eval::{parse_names, BoundMethod, Estimator, EvalConfig, VerifyConfig};
pub use model::{Arch, ModelConfig};
pub use optimizer::{LrSchedule, OptimizerConfig, OptimizerKind};
pub use smoothing::{Noise, RadiusNorm, SmoothingConfig};
pub use train::{Init, LipBound, Method, Norm, R2Lower, Ramp, RegStage, TrainConfig};
pub use validate::ADMM_MAX_DIM;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The reason is part of the message, not a `source` (a field so named would be one): an
    /// error chain printed with `{:#}` would say it twice.
    #[error("cannot read config file {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("invalid config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("invalid config {origin}:\n{}", list_problems(.problems))]
    Invalid {
        origin: String,
        problems: Vec<FieldError>,
    },
}

fn list_problems(problems: &[FieldError]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One invalid value: the dotted key (`train.eps`) and why it is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.field, self.message)
    }
}

/// The top-level `device` key: where the run's tensors live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceChoice {
    #[default]
    Auto,
    Cpu,
    Cuda,
}

impl DeviceChoice {
    pub fn parse(s: &str) -> Option<DeviceChoice> {
        match s {
            "auto" => Some(DeviceChoice::Auto),
            "cpu" => Some(DeviceChoice::Cpu),
            "cuda" | "gpu" => Some(DeviceChoice::Cuda),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExperimentConfig {
    /// Short name; becomes the prefix of the run folder.
    pub name: String,
    pub seed: u64,
    pub device: DeviceChoice,
    pub dataset: DatasetConfig,
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub optimizer: OptimizerConfig,
    pub eval: EvalConfig,
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        Self::default_experiment()
    }
}

impl ExperimentConfig {
    /// The built-in default: two moons, a small MLP, trains in seconds on CPU.
    pub fn default_experiment() -> Self {
        Self {
            name: "moons-mlp".into(),
            seed: 0,
            device: DeviceChoice::Auto,
            dataset: DatasetConfig::default(),
            model: ModelConfig::default(),
            train: TrainConfig {
                epochs: 30,
                ..TrainConfig::default()
            },
            optimizer: OptimizerConfig {
                lr: 1e-2,
                ..OptimizerConfig::default()
            },
            eval: EvalConfig {
                eps: vec![0.03],
                bounds: vec![BoundMethod::Ibp, BoundMethod::Crown],
                pgd_steps: 10,
                robust_subset: 400,
                ..EvalConfig::default()
            },
        }
    }

    /// Parses TOML; `origin` names the source (a file path) in messages.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let cfg: ExperimentConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let problems = cfg.validate();
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid {
                origin: origin.to_string(),
                problems,
            })
        }
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    pub fn to_toml_string(&self) -> String {
        // Serialising plain data with no maps keyed by non-strings cannot fail.
        toml::to_string_pretty(self).unwrap_or_default()
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.to_toml_string())
    }

    /// Every out-of-range value, with its dotted key and the allowed range.
    ///
    /// Problems come in the order of the file: name, dataset, model, train, optimizer, eval,
    /// then the rules that span sections. Two of those are reported where they always were,
    /// beside the keys they concern: the toy-data rule after `[dataset]`, the ADMM rule between
    /// `train.admm_penalty` and the PGD keys (the GUI lists problems in this order).
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let mut bad = |field: &str, message: String| {
            errs.push(FieldError {
                field: field.to_string(),
                message,
            })
        };
        self.validate_name(&mut bad);
        self.dataset.validate(&mut bad);
        validate::toy_data_needs_dense_model(self, &mut bad);
        self.model.validate(&mut bad);
        self.train.validate(&mut bad);
        validate::admm_fits(self, &mut bad);
        self.train.validate_pgd(&mut bad);
        self.optimizer.validate(&mut bad);
        self.eval.validate(&mut bad);
        validate::one_lipschitz_without_bounds(self, &mut bad);
        validate::lipsdp_only_for_mlps(self, &mut bad);
        errs
    }

    fn validate_name(&self, bad: &mut impl FnMut(&str, String)) {
        if self.name.trim().is_empty() {
            bad("name", "must not be empty".into());
        } else if self
            .name
            .chars()
            .any(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
        {
            bad(
                "name",
                format!(
                    "`{}` may only use letters, digits, `-`, `_` and `.` (it names the run folder)",
                    self.name
                ),
            );
        }
    }
}

/// A perturbation radius (`train.eps`, `eval.eps[i]`): finite, >= 0, and at most 10 since
/// inputs live in [0, 1].
fn check_eps(bad: &mut impl FnMut(&str, String), field: &str, eps: f64) {
    if !eps.is_finite() || eps < 0.0 {
        bad(
            field,
            format!("{eps} is out of range: eps must be finite and >= 0"),
        );
    } else if eps > 10.0 {
        bad(
            field,
            format!("{eps} is out of range: inputs live in [0, 1], expected eps <= 10"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_round_trips_through_toml() {
        let cfg = ExperimentConfig::default_experiment();
        let text = cfg.to_toml_string();
        let back = ExperimentConfig::from_toml_str(&text, "test").expect("valid");
        assert_eq!(cfg, back);
    }

    #[test]
    fn missing_file_is_named_and_its_reason_said_once() {
        let err = ExperimentConfig::load(Path::new("/nonexistent/x.toml")).unwrap_err();
        // As `main` prints an error: the whole chain.
        let chain = format!("{:#}", anyhow::Error::from(err));
        assert!(chain.contains("/nonexistent/x.toml"), "{chain}");
        assert_eq!(chain.matches("No such file").count(), 1, "{chain}");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = ExperimentConfig::from_toml_str("[train]\nepochz = 3\n", "x.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("epochz"), "{msg}");
        assert!(msg.contains("epochs"), "allowed keys listed: {msg}");
        assert!(msg.contains("x.toml"), "{msg}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err =
            ExperimentConfig::from_toml_str("[train]\nepochs = \"ten\"\n", "x.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("epochs"), "{msg}");
        assert!(msg.contains("integer") || msg.contains("u32"), "{msg}");
    }

    #[test]
    fn unknown_enum_value_lists_allowed() {
        let err = ExperimentConfig::from_toml_str("[train]\nmethod = \"magic\"\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("magic") && err.contains("crown-ibp"), "{err}");
    }

    #[test]
    fn out_of_range_values_name_field_and_range() {
        let text = "[train]\neps = -0.1\nbatch_size = 0\n[optimizer]\nlr = 0.0\n[eval]\nbounds = [\"ibp\"]\n";
        let Err(ConfigError::Invalid { problems, .. }) =
            ExperimentConfig::from_toml_str(text, "x.toml")
        else {
            panic!("expected Invalid");
        };
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        for f in ["train.eps", "train.batch_size", "optimizer.lr", "eval.eps"] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
        let eps = problems.iter().find(|p| p.field == "train.eps").unwrap();
        assert!(eps.message.contains(">= 0"), "{}", eps.message);
    }
}
