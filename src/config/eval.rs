//! `[eval]`: the radii, bound methods, PGD attack and Lipschitz estimators of each evaluation.
use super::{check_eps, Norm, SmoothingConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Evaluation radii; robust and certified accuracy are reported at each.
    pub eps: Vec<f64>,
    pub norm: Norm,
    /// Bound methods for certified accuracy: ibp, crown-ibp, fastlin, crown.
    pub bounds: Vec<BoundMethod>,
    /// PGD evaluation (0 steps turns it off).
    pub pgd_steps: u32,
    pub pgd_restarts: u32,
    /// Size of the fixed test subset used for the robust evaluation (0 = whole test set).
    pub robust_subset: usize,
    /// Evaluate every this many epochs (the last epoch is always evaluated).
    pub every_epochs: u32,
    /// Lipschitz estimators reported per evaluation: power, gram, exact, toeplitz, product,
    /// lipsdp, empirical.
    pub lipschitz: Vec<Estimator>,
    /// Randomized models (`train.method = "rat"`): the prediction is the majority vote over
    /// this many noise draws...
    pub noise_draws: u32,
    /// ...and PGD averages its gradient over this many (expectation over transformation).
    pub eot_draws: u32,
    /// The l_inf vs l_2 view (Araujo et al. 2020): also attack with the other norm than
    /// `eval.norm` at the radii `cross_eps` (PGD accuracy, `cross_norm` in the record).
    pub cross_norm: bool,
    pub cross_eps: Vec<f64>,
    /// alpha-CROWN: bounds computed per point (one Adam step between two) and Adam's step size.
    pub alpha_iters: u32,
    pub alpha_lr: f64,
    /// Randomized-smoothing certification (`[eval.smoothing]`; off without `sigma`). Tables
    /// come after the plain values, as TOML writes them.
    #[serde(skip_serializing_if = "SmoothingConfig::is_off")]
    pub smoothing: SmoothingConfig,
    /// Complete verification of the first `points` robust-subset points at the first eval eps
    /// (`verified_acc`); absent: off.
    pub verify: Option<VerifyConfig>,
}

/// `[eval.verify]`: the cascade IBP -> CROWN -> alpha-CROWN -> branch and bound per point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifyConfig {
    /// Time budget of one point, seconds.
    pub timeout_s: f64,
    /// How many points of the robust subset are verified.
    pub points: usize,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            timeout_s: 1.0,
            points: 100,
        }
    }
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            eps: vec![],
            norm: Norm::Linf,
            bounds: vec![],
            pgd_steps: 0,
            pgd_restarts: 1,
            robust_subset: 500,
            every_epochs: 1,
            lipschitz: vec![],
            smoothing: SmoothingConfig::default(),
            noise_draws: 10,
            eot_draws: 10,
            cross_norm: false,
            cross_eps: vec![],
            alpha_iters: 20,
            alpha_lr: 0.1,
            verify: None,
        }
    }
}

impl EvalConfig {
    pub(super) fn validate(&self, bad: &mut impl FnMut(&str, String)) {
        for (i, &eps) in self.eps.iter().enumerate() {
            check_eps(bad, &format!("eval.eps[{i}]"), eps);
        }
        if (!self.bounds.is_empty() || self.pgd_steps > 0) && self.eps.is_empty() {
            bad(
                "eval.eps",
                "robust evaluation (bounds or PGD) needs at least one eval eps".into(),
            );
        }
        if self.pgd_steps > 10_000 {
            bad(
                "eval.pgd_steps",
                format!("{} is out of range: expected 0..=10000", self.pgd_steps),
            );
        }
        if !(1..=100).contains(&self.pgd_restarts) {
            bad(
                "eval.pgd_restarts",
                format!("{} is out of range: expected 1..=100", self.pgd_restarts),
            );
        }
        if !(1..=1000).contains(&self.alpha_iters) {
            bad(
                "eval.alpha_iters",
                format!("{} is out of range: expected 1..=1000", self.alpha_iters),
            );
        }
        if !(self.alpha_lr.is_finite() && self.alpha_lr > 0.0 && self.alpha_lr <= 10.0) {
            bad(
                "eval.alpha_lr",
                format!(
                    "{} is out of range: expected a value in (0, 10]",
                    self.alpha_lr
                ),
            );
        }
        if let Some(v) = &self.verify {
            if !(v.timeout_s.is_finite() && v.timeout_s > 0.0 && v.timeout_s <= 3600.0) {
                bad(
                    "eval.verify.timeout_s",
                    format!("{} is out of range: expected (0, 3600]", v.timeout_s),
                );
            }
            if v.points > 0 && self.eps.is_empty() {
                bad("eval.eps", "eval.verify needs at least one eval eps".into());
            }
        }
        if self.every_epochs == 0 {
            bad("eval.every_epochs", "must be >= 1".into());
        }
        self.smoothing.validate(bad);
        for (i, &eps) in self.cross_eps.iter().enumerate() {
            check_eps(bad, &format!("eval.cross_eps[{i}]"), eps);
        }
        if self.cross_norm && (self.cross_eps.is_empty() || self.pgd_steps == 0) {
            bad(
                "eval.cross_norm",
                "attacking with the other norm needs eval.cross_eps radii and eval.pgd_steps > 0"
                    .into(),
            );
        }
        for (field, v) in [
            ("eval.noise_draws", self.noise_draws),
            ("eval.eot_draws", self.eot_draws),
        ] {
            if !(1..=10_000).contains(&v) {
                bad(field, format!("{v} is out of range: expected 1..=10000"));
            }
        }
    }
}

/// A bound on the margins over the perturbation set (`eval.bounds`, `certlab bounds --method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BoundMethod {
    /// Interval bound propagation through every layer (Gowal et al. 2018).
    Ibp,
    /// IBP intermediate bounds, CROWN relaxation for the output (Zhang et al. 2020).
    CrownIbp,
    /// Fast-Lin relaxation (lower line slope `u / (u - l)`) with exact intermediate bounds; the
    /// convex outer polytope of Wong & Kolter (2018) gives the same bound.
    Fastlin,
    /// CROWN relaxation (adaptive lower line) with exact intermediate bounds.
    Crown,
    /// CROWN with the lower-line slopes of the unstable ReLUs optimised per point by projected
    /// gradient ascent on the bound (Xu et al. 2021), intermediate layers included
    /// (`eval.alpha_iters`, `eval.alpha_lr`).
    AlphaCrown,
}

impl BoundMethod {
    pub const ALL: [BoundMethod; 5] = [
        BoundMethod::Ibp,
        BoundMethod::CrownIbp,
        BoundMethod::Fastlin,
        BoundMethod::Crown,
        BoundMethod::AlphaCrown,
    ];
    /// The methods that bound in one pass (no optimisation): what tools that call a bound many
    /// times per point (the inspector's radius bisection) use unless asked for more.
    pub const ONE_PASS: [BoundMethod; 4] = [
        BoundMethod::Ibp,
        BoundMethod::CrownIbp,
        BoundMethod::Fastlin,
        BoundMethod::Crown,
    ];
    pub fn name(self) -> &'static str {
        match self {
            BoundMethod::Ibp => "ibp",
            BoundMethod::CrownIbp => "crown-ibp",
            BoundMethod::Fastlin => "fastlin",
            BoundMethod::Crown => "crown",
            BoundMethod::AlphaCrown => "alpha-crown",
        }
    }
    pub fn parse(s: &str) -> Option<BoundMethod> {
        Self::ALL.into_iter().find(|m| m.name() == s)
    }
}

/// A Lipschitz estimator reported per evaluation (`eval.lipschitz`) and by `certlab lipschitz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Estimator {
    /// Power iteration per layer: a lower bound on each spectral norm.
    Power,
    /// Gram iteration per layer (Delattre et al. 2023): a guaranteed upper bound.
    Gram,
    /// Exact spectral norm per layer (SVD; FFT blocks for circular convs).
    Exact,
    /// Product of the per-layer Gram bounds.
    Product,
    /// LipSDP-Neuron (Fazlyab et al. 2019; Pauli et al. 2021) for MLPs.
    Lipsdp,
    /// The largest local Jacobian norm found near data points: a lower bound.
    Empirical,
    /// Per layer: for convs the Toeplitz bound (Araujo et al. 2021), the supremum over
    /// frequencies of the kernel's matrix-valued trigonometric polynomial (a grid maximum with a
    /// guaranteed correction), which bounds the layer on every input size; exact for dense layers.
    Toeplitz,
}

impl Estimator {
    pub const ALL: [Estimator; 7] = [
        Estimator::Power,
        Estimator::Gram,
        Estimator::Exact,
        Estimator::Product,
        Estimator::Lipsdp,
        Estimator::Empirical,
        Estimator::Toeplitz,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Estimator::Power => "power",
            Estimator::Gram => "gram",
            Estimator::Exact => "exact",
            Estimator::Product => "product",
            Estimator::Lipsdp => "lipsdp",
            Estimator::Empirical => "empirical",
            Estimator::Toeplitz => "toeplitz",
        }
    }
    pub fn parse(s: &str) -> Option<Estimator> {
        Self::ALL.into_iter().find(|e| e.name() == s)
    }
    /// Parses a list of names (blank entries skipped, repeats dropped); an unknown name is an
    /// error naming it and the allowed ones.
    pub fn parse_list(names: &[String]) -> Result<Vec<Estimator>, String> {
        parse_names(
            names,
            Self::parse,
            &Self::ALL.map(Self::name),
            "Lipschitz estimator",
        )
    }
    /// Whether the estimator has a per-layer value.
    pub fn per_layer(self) -> bool {
        matches!(
            self,
            Estimator::Power | Estimator::Gram | Estimator::Exact | Estimator::Toeplitz
        )
    }
}

/// Parses user-typed names of a closed list; an unknown one is an error listing `allowed`.
pub fn parse_names<T: PartialEq>(
    names: &[String],
    parse: impl Fn(&str) -> Option<T>,
    allowed: &[&str],
    what: &str,
) -> Result<Vec<T>, String> {
    let mut out = Vec::new();
    for n in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let v = parse(n).ok_or_else(|| {
            format!(
                "unknown {what} `{n}`: expected one of {}",
                allowed.join(", ")
            )
        })?;
        if !out.contains(&v) {
            out.push(v);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::ExperimentConfig;
    use super::*;

    #[test]
    fn unknown_bound_or_estimator_names_the_value_and_lists_allowed() {
        for (text, bad, allowed) in [
            ("[eval]\nbounds = [\"foo\"]\n", "foo", "crown-ibp"),
            ("[eval]\nlipschitz = [\"bar\"]\n", "bar", "empirical"),
        ] {
            let err = ExperimentConfig::from_toml_str(text, "x.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(bad) && err.contains(allowed), "{err}");
        }
        let names = |s: &str| s.split(',').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            Estimator::parse_list(&names("gram, exact,gram,")).unwrap(),
            vec![Estimator::Gram, Estimator::Exact]
        );
        let err = Estimator::parse_list(&names("gram,svd")).unwrap_err();
        assert!(err.contains("`svd`") && err.contains("lipsdp"), "{err}");
    }
}
