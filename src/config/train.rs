//! `[train]`: the training method, its perturbation schedule, regularizers and Lipschitz control.
use super::{check_eps, Noise};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Cross-entropy on clean inputs.
    #[default]
    Standard,
    /// PGD adversarial training (Madry et al.).
    Pgd,
    /// Interval bound propagation (Gowal et al.).
    Ibp,
    /// CROWN-IBP (Zhang et al. 2020).
    CrownIbp,
    /// Convex outer polytope / Fast-Lin with exact intermediate bounds (Wong & Kolter), or
    /// with Cauchy random projections of dimension `train.proj_dim` when that is > 0.
    Fastlin,
    /// Cross-entropy plus `lip_weight` times a differentiable Lipschitz bound (Pauli et al.
    /// 2021); with `lip_target` > 0 the bound is also enforced after every step.
    Lipschitz,
    /// SABR (Mueller et al. 2023): IBP on a small box of radius `sabr_lambda * eps` around the
    /// PGD point, shifted to stay inside the eps box (and [0, 1]).
    Sabr,
    /// MTL-IBP (De Palma et al. 2024): `(1 - mtl_alpha) CE(adversarial) + mtl_alpha CE(IBP)`.
    MtlIbp,
    /// CC-IBP (De Palma et al. 2024): cross-entropy on the convex combination
    /// `mtl_alpha m_IBP + (1 - mtl_alpha) m_adversarial` of the margins.
    CcIbp,
    /// Exp-IBP (De Palma et al. 2024): `CE(adversarial)^(1 - mtl_alpha) CE(IBP)^mtl_alpha`.
    ExpIbp,
    /// Cross-entropy on inputs plus noise (`train.noise`, `train.noise_sigma`): the base
    /// classifier of randomized smoothing (Cohen et al. 2019).
    Gaussian,
    /// Randomized adversarial training (Araujo et al. 2019): PGD training against the model
    /// with noise (`train.noise`, `train.noise_sigma`) at its input, which stays at inference:
    /// the prediction is the majority over `eval.noise_draws` draws, attacked with EOT.
    Rat,
}

impl Method {
    pub const ALL: [Method; 12] = [
        Method::Standard,
        Method::Pgd,
        Method::Ibp,
        Method::CrownIbp,
        Method::Fastlin,
        Method::Lipschitz,
        Method::Sabr,
        Method::MtlIbp,
        Method::CcIbp,
        Method::ExpIbp,
        Method::Gaussian,
        Method::Rat,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Method::Standard => "standard",
            Method::Pgd => "pgd",
            Method::Ibp => "ibp",
            Method::CrownIbp => "crown-ibp",
            Method::Fastlin => "fastlin",
            Method::Lipschitz => "lipschitz",
            Method::Sabr => "sabr",
            Method::MtlIbp => "mtl-ibp",
            Method::CcIbp => "cc-ibp",
            Method::ExpIbp => "exp-ibp",
            Method::Gaussian => "gaussian",
            Method::Rat => "rat",
        }
    }
    /// Whether the method's loss uses the perturbation radius.
    pub fn uses_eps(self) -> bool {
        !matches!(
            self,
            Method::Standard | Method::Lipschitz | Method::Gaussian
        )
    }
    /// Whether the loss propagates interval bounds (IBP, alone or under CROWN-IBP): the methods
    /// the IBP initialisation and the warm-up regularizers of Shi et al. (2021) are for.
    pub fn ibp_based(self) -> bool {
        matches!(
            self,
            Method::Ibp
                | Method::CrownIbp
                | Method::Sabr
                | Method::MtlIbp
                | Method::CcIbp
                | Method::ExpIbp
        )
    }
    /// Whether the loss needs IBP/CROWN bounds of the network.
    pub fn uses_bounds(self) -> bool {
        self.ibp_based() || self == Method::Fastlin
    }
    /// Whether the loss runs PGD (`pgd_steps`, `pgd_step_ratio`).
    pub fn attacks(self) -> bool {
        matches!(
            self,
            Method::Pgd
                | Method::Rat
                | Method::Sabr
                | Method::MtlIbp
                | Method::CcIbp
                | Method::ExpIbp
        )
    }
    /// The expressive losses of De Palma et al. (2024), weighted by `mtl_alpha`.
    pub fn expressive(self) -> bool {
        matches!(self, Method::MtlIbp | Method::CcIbp | Method::ExpIbp)
    }
}

/// The weight initialisation (`train.init`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Init {
    /// PyTorch's default, `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`.
    #[default]
    Default,
    /// Shi et al. (2021): every weight but the last layer's drawn from `N(0, sigma^2)` with
    /// `sigma = sqrt(2 pi) / fan_in`, so that `E|w| fan_in / 2 = 1` and the expected IBP
    /// radius neither grows nor shrinks from layer to layer.
    Ibp,
}

impl Init {
    pub const ALL: [Init; 2] = [Init::Default, Init::Ibp];
    pub fn name(self) -> &'static str {
        match self {
            Init::Default => "default",
            Init::Ibp => "ibp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Norm {
    #[default]
    Linf,
    L2,
}

impl Norm {
    pub fn name(self) -> &'static str {
        match self {
            Norm::Linf => "linf",
            Norm::L2 => "l2",
        }
    }
    pub fn parse(s: &str) -> Option<Norm> {
        match s {
            "linf" | "l_inf" | "inf" => Some(Norm::Linf),
            "l2" | "l_2" | "2" => Some(Norm::L2),
            _ => None,
        }
    }
}

/// The differentiable Lipschitz bound of `method = "lipschitz"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LipBound {
    /// Product of per-layer Gram-iteration bounds (Delattre et al. 2023).
    #[default]
    Gram,
    /// LipSDP-Neuron with a feasible multiplier improved by first-order steps (Pauli et al.
    /// 2021).
    Lipsdp,
    /// The ADMM of Pauli et al. 2021: SGD on the loss plus the augmented-Lagrangian coupling to
    /// projected weights, and once per epoch the SDP step (clarabel) that projects them onto the
    /// LipSDP set (`lip_target` > 0: bound fixed to it, the evaluated and saved network is the
    /// projected one; else `lip_weight L^2` penalised). Small MLPs on 2-D data only.
    Admm,
}

impl LipBound {
    pub const ALL: [LipBound; 3] = [LipBound::Gram, LipBound::Lipsdp, LipBound::Admm];
    pub fn name(self) -> &'static str {
        match self {
            LipBound::Gram => "gram",
            LipBound::Lipsdp => "lipsdp",
            LipBound::Admm => "admm",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Ramp {
    #[default]
    Linear,
    /// t^4 for the first 25% of the ramp, then linear (CROWN-IBP's "smoothed").
    Smoothed,
}

/// What r2 measures at a lower line with CROWN's slope 0 or 1 (`train.r2_lower`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum R2Lower {
    /// The distance to the half-line where the line meets the ReLU: `relu(z)` for slope 0,
    /// `relu(-z)` for slope 1. Zero exactly when the line is tight at `z` (the exactness
    /// condition of those lines).
    #[default]
    HalfLine,
    /// `|z|` as Zhu et al. (2020) write it for Fast-Lin's lines, which meet the ReLU only at 0.
    Abs,
}

impl R2Lower {
    pub fn name(self) -> &'static str {
        match self {
            R2Lower::HalfLine => "half-line",
            R2Lower::Abs => "abs",
        }
    }
}

/// When CROWN-IBP trains with r1/r2 (`train.reg_stage`); Fast-Lin always trains with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RegStage {
    /// As Zhu et al. (2020) state it: only while the CROWN-IBP bound is in the loss (the weight
    /// is multiplied by beta, so the pure-IBP stage has no regularizer and no relaxed pass).
    #[default]
    First,
    /// Throughout, also after beta reaches 0 (the relaxed pass then runs for r1/r2 alone).
    Throughout,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub method: Method,
    pub epochs: u32,
    pub batch_size: usize,
    /// Training perturbation radius (reached at the end of the ramp).
    pub eps: f64,
    pub norm: Norm,
    /// Epochs trained at eps = 0 before the ramp starts.
    pub warmup_epochs: u32,
    /// Epochs over which eps grows from 0 to `eps` (per batch).
    pub ramp_epochs: u32,
    pub ramp: Ramp,
    /// CROWN-IBP: final weight of the CROWN-IBP bound in the mix (1 at the start of the ramp).
    pub final_beta: f64,
    /// CROWN-IBP / IBP: final weight of the clean loss (1 at the start of the ramp).
    pub final_kappa: f64,
    /// Weight of the tightness regularizer r1 (Zhu et al. 2020); 0 turns it off.
    pub r1_weight: f64,
    /// Weight of the tightness regularizer r2 (Zhu et al. 2020); 0 turns it off.
    pub r2_weight: f64,
    /// Epochs over which the regularizer weights grow from 0.
    pub reg_warmup_epochs: u32,
    /// r2 at CROWN's lower lines: `half-line` (the exactness condition) or `abs` (the paper's |z|).
    pub r2_lower: R2Lower,
    /// CROWN-IBP: r1/r2 in the `first` stage only (the paper) or `throughout`.
    pub reg_stage: RegStage,
    /// PGD training: steps and step size (relative to eps).
    pub pgd_steps: u32,
    pub pgd_step_ratio: f64,
    /// Fast-Lin: dimension of the Cauchy random projections for intermediate bounds (0 = exact).
    pub proj_dim: usize,
    /// Lipschitz method: weight of the bound in the loss.
    pub lip_weight: f64,
    /// Lipschitz method: keep the bound <= this after every step (0 = not enforced).
    pub lip_target: f64,
    /// Lipschitz method: which differentiable bound.
    pub lip_bound: LipBound,
    /// `lip_bound = "admm"`: the augmented-Lagrangian penalty (ADMM's rho).
    pub admm_penalty: f64,
    /// SABR: the small box's radius as a fraction of eps, in (0, 1] (1 is IBP).
    pub sabr_lambda: f64,
    /// MTL-IBP, CC-IBP, Exp-IBP: the weight of the IBP part, in [0, 1] (0 is PGD training,
    /// 1 is IBP training).
    pub mtl_alpha: f64,
    /// The weight initialisation: `default` or `ibp` (Shi et al. 2021).
    pub init: Init,
    /// The warm-up regularizers of Shi et al. (2021), bound tightness and ReLU balance, on the
    /// IBP bounds of the loss; weighted `shi_reg_weight (1 - eps / eps_max)`, so they fade out
    /// as eps reaches its final value. IBP-based methods only; 0 turns them off.
    pub shi_reg_weight: f64,
    /// Noise added to the training inputs (`gaussian`; noise augmentation under `pgd`): its
    /// per-coordinate standard deviation (0 = none) and distribution.
    pub noise_sigma: f64,
    pub noise: Noise,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            method: Method::Standard,
            epochs: 10,
            batch_size: 64,
            eps: 0.0,
            norm: Norm::Linf,
            warmup_epochs: 0,
            ramp_epochs: 0,
            ramp: Ramp::Linear,
            final_beta: 0.0,
            final_kappa: 0.5,
            r1_weight: 0.0,
            r2_weight: 0.0,
            reg_warmup_epochs: 0,
            r2_lower: R2Lower::HalfLine,
            reg_stage: RegStage::First,
            pgd_steps: 7,
            pgd_step_ratio: 0.25,
            proj_dim: 0,
            lip_weight: 0.0,
            lip_target: 0.0,
            lip_bound: LipBound::Gram,
            admm_penalty: 1.0,
            sabr_lambda: 0.4,
            mtl_alpha: 0.5,
            init: Init::Default,
            shi_reg_weight: 0.0,
            noise_sigma: 0.0,
            noise: Noise::Gaussian,
        }
    }
}

impl TrainConfig {
    /// The noise a randomized model (`rat`) draws at its input, at training and inference.
    pub fn randomized(&self) -> Option<(super::Noise, f64)> {
        (self.method == Method::Rat).then_some((self.noise, self.noise_sigma))
    }

    /// Whether the run trains by ADMM (`method = "lipschitz"`, `lip_bound = "admm"`).
    pub fn uses_admm(&self) -> bool {
        self.method == Method::Lipschitz && self.lip_bound == LipBound::Admm
    }

    /// Every key of the section but the PGD ones, which [`Self::validate_pgd`] checks: the
    /// ADMM rule that spans sections is reported between the two (see `ExperimentConfig::validate`).
    pub(super) fn validate(&self, bad: &mut impl FnMut(&str, String)) {
        self.validate_schedule(bad);
        self.validate_tightness(bad);
        self.validate_lipschitz(bad);
        self.validate_certified_methods(bad);
        self.validate_noise(bad);
    }

    /// `train.noise_sigma`: needed by `gaussian` and `rat`, allowed as augmentation under `pgd`.
    fn validate_noise(&self, bad: &mut impl FnMut(&str, String)) {
        let s = self.noise_sigma;
        if !(s.is_finite() && (0.0..=100.0).contains(&s)) {
            bad(
                "train.noise_sigma",
                format!("{s} is out of range: expected 0 <= sigma <= 100"),
            );
        } else if matches!(self.method, Method::Gaussian | Method::Rat) && s == 0.0 {
            bad(
                "train.noise_sigma",
                format!(
                    "method `{}` trains on noisy inputs: noise_sigma must be > 0",
                    self.method.name()
                ),
            );
        } else if s > 0.0 && !matches!(self.method, Method::Gaussian | Method::Pgd | Method::Rat) {
            bad(
                "train.noise_sigma",
                format!(
                    "noise is added under `gaussian` and `pgd` training, not `{}`: set 0",
                    self.method.name()
                ),
            );
        }
    }

    /// Length of the run, batch size, eps and the CROWN-IBP / IBP mixing weights.
    fn validate_schedule(&self, bad: &mut impl FnMut(&str, String)) {
        if !(1..=100_000).contains(&self.epochs) {
            bad(
                "train.epochs",
                format!("{} is out of range: expected 1..=100000", self.epochs),
            );
        }
        if !(1..=65536).contains(&self.batch_size) {
            bad(
                "train.batch_size",
                format!("{} is out of range: expected 1..=65536", self.batch_size),
            );
        }
        check_eps(bad, "train.eps", self.eps);
        if self.method.uses_eps() && self.eps == 0.0 {
            bad(
                "train.eps",
                format!(
                    "method `{}` trains against a perturbation: eps must be > 0",
                    self.method.name()
                ),
            );
        }
        for (field, v) in [
            ("train.final_beta", self.final_beta),
            ("train.final_kappa", self.final_kappa),
        ] {
            if !(0.0..=1.0).contains(&v) {
                bad(
                    field,
                    format!("{v} is out of range: expected 0 <= value <= 1"),
                );
            }
        }
    }

    /// The tightness regularizers r1/r2 and Fast-Lin's random projections.
    fn validate_tightness(&self, bad: &mut impl FnMut(&str, String)) {
        for (field, v) in [
            ("train.r1_weight", self.r1_weight),
            ("train.r2_weight", self.r2_weight),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                bad(
                    field,
                    format!("{v} is out of range: expected a finite value >= 0"),
                );
            }
        }
        if (self.r1_weight > 0.0 || self.r2_weight > 0.0)
            && !matches!(self.method, Method::CrownIbp | Method::Fastlin)
        {
            bad(
                "train.method",
                format!(
                    "the tightness regularizers r1/r2 need a linear relaxation: use `crown-ibp` or `fastlin`, not `{}`",
                    self.method.name()
                ),
            );
        }
        if self.proj_dim > 100_000 {
            bad(
                "train.proj_dim",
                format!(
                    "{} is out of range: expected 0 (exact) ..= 100000",
                    self.proj_dim
                ),
            );
        }
        if self.proj_dim > 0 && self.method != Method::Fastlin {
            bad(
                "train.proj_dim",
                format!(
                    "random projections are for `fastlin` training, not `{}`: set 0",
                    self.method.name()
                ),
            );
        }
    }

    /// `method = "lipschitz"`: the weight, the target and ADMM's penalty.
    fn validate_lipschitz(&self, bad: &mut impl FnMut(&str, String)) {
        if !(self.lip_weight.is_finite() && self.lip_weight >= 0.0) {
            bad(
                "train.lip_weight",
                format!(
                    "{} is out of range: expected a finite value >= 0",
                    self.lip_weight
                ),
            );
        }
        if !(self.lip_target.is_finite() && self.lip_target >= 0.0) {
            bad(
                "train.lip_target",
                format!(
                    "{} is out of range: expected 0 (off) or a bound > 0",
                    self.lip_target
                ),
            );
        }
        if self.method == Method::Lipschitz && self.lip_weight == 0.0 && self.lip_target == 0.0 {
            bad(
                "train.lip_weight",
                "method `lipschitz` needs lip_weight > 0 or lip_target > 0".into(),
            );
        }
        if self.uses_admm() && !(self.admm_penalty.is_finite() && self.admm_penalty > 0.0) {
            bad(
                "train.admm_penalty",
                format!(
                    "{} is out of range: expected a value > 0",
                    self.admm_penalty
                ),
            );
        }
    }

    /// PGD training's steps and step size.
    pub(super) fn validate_pgd(&self, bad: &mut impl FnMut(&str, String)) {
        if self.method.attacks() && !(1..=1000).contains(&self.pgd_steps) {
            bad(
                "train.pgd_steps",
                format!("{} is out of range: expected 1..=1000", self.pgd_steps),
            );
        }
        if !(self.pgd_step_ratio > 0.0 && self.pgd_step_ratio <= 2.0) {
            bad(
                "train.pgd_step_ratio",
                format!(
                    "{} is out of range: expected 0 < ratio <= 2",
                    self.pgd_step_ratio
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ExperimentConfig;
    use super::*;

    #[test]
    fn method_needing_eps_rejects_zero() {
        let mut cfg = ExperimentConfig::default_experiment();
        cfg.train.method = Method::Ibp;
        cfg.train.eps = 0.0;
        assert!(cfg.validate().iter().any(|p| p.field == "train.eps"));
        cfg.train.eps = 0.1;
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    }
}
