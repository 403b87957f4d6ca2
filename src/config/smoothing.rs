//! `[eval.smoothing]`: randomized-smoothing certification (Cohen et al. 2019) at every
//! evaluation, and the noise distributions smoothing and noisy training draw from.
use serde::{Deserialize, Serialize};

/// The noise of a smoothed classifier. `sigma` is always the per-coordinate standard deviation,
/// so that levels of different noises compare at equal variance (as Yang et al. 2020 do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Noise {
    /// N(0, sigma^2 I): certifies l_2 radii `sigma Phi^-1(p_A)` (Cohen et al. 2019).
    #[default]
    Gaussian,
    /// Laplace with scale `lambda = sigma / sqrt 2` per coordinate: certifies l_1 radii
    /// `-lambda ln(2 (1 - p_A))` (Teng et al. 2020; Yang et al. 2020).
    Laplace,
    /// Uniform on `[-lambda, lambda]^d`, `lambda = sigma sqrt 3`: certifies l_1 radii
    /// `2 lambda (p_A - 1/2)` (Yang et al. 2020).
    Uniform,
}

/// The norm a noise certifies radii in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RadiusNorm {
    L1,
    L2,
}

impl RadiusNorm {
    pub fn name(self) -> &'static str {
        match self {
            RadiusNorm::L1 => "l1",
            RadiusNorm::L2 => "l2",
        }
    }
}

impl Noise {
    pub const ALL: [Noise; 3] = [Noise::Gaussian, Noise::Laplace, Noise::Uniform];
    pub fn name(self) -> &'static str {
        match self {
            Noise::Gaussian => "gaussian",
            Noise::Laplace => "laplace",
            Noise::Uniform => "uniform",
        }
    }
    pub fn parse(s: &str) -> Option<Noise> {
        Self::ALL.into_iter().find(|n| n.name() == s)
    }
    /// The norm of the radii this noise certifies.
    pub fn radius_norm(self) -> RadiusNorm {
        match self {
            Noise::Gaussian => RadiusNorm::L2,
            Noise::Laplace | Noise::Uniform => RadiusNorm::L1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmoothingConfig {
    /// Noise levels (per-coordinate standard deviations); empty turns smoothing off. With
    /// several, a point's certificate is the best over them, alpha split between them
    /// (Bonferroni).
    pub sigma: Vec<f64>,
    pub noise: Noise,
    /// Samples that pick the class (CERTIFY's selection step).
    pub n0: u64,
    /// Fresh samples that count it.
    pub n: u64,
    /// Probability that a certificate is wrong (over all sigma together).
    pub alpha: f64,
    /// Noisy copies per forward pass.
    pub batch: u64,
    /// Points of the robust subset certified (the first ones).
    pub points: usize,
}

impl Default for SmoothingConfig {
    fn default() -> Self {
        Self {
            sigma: vec![],
            noise: Noise::Gaussian,
            n0: 100,
            n: 10_000,
            alpha: 0.001,
            batch: 1000,
            points: 100,
        }
    }
}

impl SmoothingConfig {
    /// Off: no noise level, nothing to certify.
    pub fn is_off(&self) -> bool {
        self.sigma.is_empty()
    }

    /// Every out-of-range key, named `eval.smoothing.<key>` (the CLI maps them to its flags).
    pub fn validate(&self, bad: &mut impl FnMut(&str, String)) {
        for (i, &s) in self.sigma.iter().enumerate() {
            if !(s.is_finite() && s > 0.0 && s <= 100.0) {
                bad(
                    &format!("eval.smoothing.sigma[{i}]"),
                    format!("{s} is out of range: expected 0 < sigma <= 100"),
                );
            }
        }
        if self.sigma.len() > 16 {
            bad(
                "eval.smoothing.sigma",
                format!("{} levels: expected at most 16", self.sigma.len()),
            );
        }
        if !(1..=10_000_000).contains(&self.n0) {
            bad(
                "eval.smoothing.n0",
                format!("{} is out of range: expected 1..=10000000", self.n0),
            );
        }
        if !(1..=100_000_000).contains(&self.n) {
            bad(
                "eval.smoothing.n",
                format!("{} is out of range: expected 1..=100000000", self.n),
            );
        }
        if !(self.alpha > 0.0 && self.alpha < 0.5) {
            bad(
                "eval.smoothing.alpha",
                format!("{} is out of range: expected 0 < alpha < 0.5", self.alpha),
            );
        }
        if !(1..=1_000_000).contains(&self.batch) {
            bad(
                "eval.smoothing.batch",
                format!("{} is out of range: expected 1..=1000000", self.batch),
            );
        }
        if !self.is_off() && self.points == 0 {
            bad("eval.smoothing.points", "must be >= 1".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ExperimentConfig;
    use super::*;

    #[test]
    fn smoothing_section_parses_validates_and_names_bad_keys() {
        let text = "[eval.smoothing]\nsigma = [0.25, 0.5]\nnoise = \"laplace\"\nn = 500\n";
        let cfg = ExperimentConfig::from_toml_str(text, "x.toml").unwrap();
        let s = &cfg.eval.smoothing;
        assert_eq!(s.sigma, vec![0.25, 0.5]);
        assert_eq!((s.noise, s.n, s.n0), (Noise::Laplace, 500, 100));
        let err = ExperimentConfig::from_toml_str("[eval.smoothing]\nnoise = \"cauchy\"\n", "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cauchy") && err.contains("uniform"), "{err}");
        let mut cfg = ExperimentConfig::default_experiment();
        cfg.eval.smoothing.sigma = vec![0.5, -1.0];
        cfg.eval.smoothing.alpha = 0.7;
        cfg.eval.smoothing.points = 0;
        let fields: Vec<String> = cfg.validate().into_iter().map(|p| p.field).collect();
        for f in [
            "eval.smoothing.sigma[1]",
            "eval.smoothing.alpha",
            "eval.smoothing.points",
        ] {
            assert!(fields.iter().any(|x| x == f), "{f} missing from {fields:?}");
        }
        // Off by default, and then not written to a saved config.
        let def = ExperimentConfig::default_experiment();
        assert!(def.eval.smoothing.is_off());
        assert!(!def.to_toml_string().contains("smoothing"));
    }
}
