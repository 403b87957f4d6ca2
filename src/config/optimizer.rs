//! `[optimizer]`: the optimiser and its learning-rate schedule.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    #[default]
    Adam,
    Sgd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    #[default]
    Constant,
    /// Multiply by `gamma` every `step_epochs` epochs.
    Step,
    /// Cosine decay to 0 over the run.
    Cosine,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub schedule: LrSchedule,
    pub step_epochs: u32,
    pub gamma: f64,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            kind: OptimizerKind::Adam,
            lr: 1e-3,
            momentum: 0.9,
            weight_decay: 0.0,
            schedule: LrSchedule::Constant,
            step_epochs: 10,
            gamma: 0.5,
        }
    }
}

impl OptimizerConfig {
    pub(super) fn validate(&self, bad: &mut impl FnMut(&str, String)) {
        if !(self.lr > 0.0 && self.lr <= 10.0) {
            bad(
                "optimizer.lr",
                format!("{} is out of range: expected 0 < lr <= 10", self.lr),
            );
        }
        if !(0.0..1.0).contains(&self.momentum) {
            bad(
                "optimizer.momentum",
                format!(
                    "{} is out of range: expected 0 <= momentum < 1",
                    self.momentum
                ),
            );
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bad(
                "optimizer.weight_decay",
                format!("{} is out of range: expected >= 0", self.weight_decay),
            );
        }
        if self.schedule == LrSchedule::Step {
            if self.step_epochs == 0 {
                bad("optimizer.step_epochs", "must be >= 1".into());
            }
            if !(self.gamma > 0.0 && self.gamma <= 1.0) {
                bad(
                    "optimizer.gamma",
                    format!("{} is out of range: expected 0 < gamma <= 1", self.gamma),
                );
            }
        }
    }
}
