//! Validation of the keys of the certified-training methods of round 2: SABR's `sabr_lambda`
//! (Mueller et al. 2023), the expressive losses' `mtl_alpha` (De Palma et al. 2024), and the
//! IBP initialisation and warm-up regularizers of Shi et al. (2021).
use super::train::{Init, TrainConfig};

impl TrainConfig {
    /// `sabr_lambda`, `mtl_alpha`, `init` and `shi_reg_weight`, each checked for range and
    /// for a method that uses it.
    pub(super) fn validate_certified_methods(&self, bad: &mut impl FnMut(&str, String)) {
        let m = self.method;
        // SABR's box is a fraction of eps: 0 would be a point (PGD training without a bound),
        // more than 1 would leave the eps box.
        if !(self.sabr_lambda > 0.0 && self.sabr_lambda <= 1.0) {
            bad(
                "train.sabr_lambda",
                format!(
                    "{} is out of range: expected 0 < sabr_lambda <= 1 (1 is IBP)",
                    self.sabr_lambda
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.mtl_alpha) {
            bad(
                "train.mtl_alpha",
                format!(
                    "{} is out of range: expected 0 <= mtl_alpha <= 1 (0 is PGD, 1 is IBP)",
                    self.mtl_alpha
                ),
            );
        }
        if !(self.shi_reg_weight.is_finite() && self.shi_reg_weight >= 0.0) {
            bad(
                "train.shi_reg_weight",
                format!(
                    "{} is out of range: expected a finite value >= 0 (0 is off)",
                    self.shi_reg_weight
                ),
            );
        } else if self.shi_reg_weight > 0.0 && !m.ibp_based() {
            bad(
                "train.shi_reg_weight",
                format!(
                    "the regularizers of Shi et al. act on IBP bounds: use an IBP-based method (ibp, crown-ibp, sabr, mtl-ibp, cc-ibp, exp-ibp), not `{}`, or set 0",
                    m.name()
                ),
            );
        }
        if self.init == Init::Ibp && !m.ibp_based() {
            bad(
                "train.init",
                format!(
                    "the IBP initialisation is for IBP-based methods (ibp, crown-ibp, sabr, mtl-ibp, cc-ibp, exp-ibp), not `{}`: use `default`",
                    m.name()
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::train::Method;
    use super::super::ExperimentConfig;
    use super::*;

    fn fields(cfg: &ExperimentConfig) -> Vec<String> {
        cfg.validate().into_iter().map(|p| p.field).collect()
    }

    #[test]
    fn new_method_keys_are_range_checked_and_refused_where_unused() {
        let mut cfg = ExperimentConfig::default_experiment();
        for m in [Method::Sabr, Method::MtlIbp, Method::CcIbp, Method::ExpIbp] {
            cfg.train.method = m;
            cfg.train.eps = 0.1;
            cfg.train.init = Init::Ibp;
            cfg.train.shi_reg_weight = 0.5;
            assert!(cfg.validate().is_empty(), "{m:?}: {:?}", cfg.validate());
        }
        cfg.train.sabr_lambda = 0.0;
        cfg.train.mtl_alpha = 1.5;
        assert_eq!(fields(&cfg), ["train.sabr_lambda", "train.mtl_alpha"]);
        cfg.train.sabr_lambda = 1.0;
        cfg.train.mtl_alpha = 0.0;
        cfg.train.pgd_steps = 0;
        assert_eq!(fields(&cfg), ["train.pgd_steps"]);
        cfg.train.pgd_steps = 5;
        cfg.train.method = Method::Fastlin;
        assert_eq!(fields(&cfg), ["train.shi_reg_weight", "train.init"]);
        let msg = &cfg.validate()[0].message;
        assert!(msg.contains("fastlin") && msg.contains("sabr"), "{msg}");
        cfg.train.method = Method::Ibp;
        cfg.train.shi_reg_weight = f64::NAN;
        assert_eq!(fields(&cfg), ["train.shi_reg_weight"]);
    }

    #[test]
    fn new_method_names_parse_and_unknown_ones_list_them() {
        for m in Method::ALL {
            let text = format!("[train]\nmethod = \"{}\"\neps = 0.1\n", m.name());
            let cfg: ExperimentConfig = toml::from_str(&text).unwrap();
            assert_eq!(cfg.train.method, m);
        }
        let err = toml::from_str::<ExperimentConfig>("[train]\nmethod = \"sabre\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sabr") && err.contains("exp-ibp"), "{err}");
        let err = toml::from_str::<ExperimentConfig>("[train]\ninit = \"xavier\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ibp") && err.contains("default"), "{err}");
    }
}
