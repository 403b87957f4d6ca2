//! The records of a run: one [`EvalRecord`] per evaluation, written as a line of
//! `metrics.jsonl` and sent to the UI as `Event::Metrics`. Plain data: no tensors, no egui.
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which examples an evaluation ran on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// The validation split, held out of the training data: per-epoch evaluation and model
    /// selection.
    Val,
    /// The test split: only the final evaluation of the last and best models, or every epoch
    /// of a run without a validation split (`dataset.val_size = 0`, and runs written before it).
    Test,
}

/// Which saved model a final test evaluation is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinalModel {
    /// `model.safetensors`: the network at the end of the run.
    Last,
    /// `model_best.safetensors`: the network of the best validation evaluation.
    Best,
}

/// One evaluation. Accuracies are fractions in [0, 1].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvalRecord {
    pub epoch: u32,
    /// The split evaluated; absent in runs written before validation splits (test).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
    /// Set on the final test evaluations only: which model they are of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<FinalModel>,
    /// Optimiser steps taken so far.
    pub step: u64,
    /// Seconds since the run started.
    pub time_s: f64,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// The epoch means of the weighted terms of the training loss (`clean_ce`, `robust_ce`,
    /// `r1`, `r2`, `lipschitz`: those the method has); they add up to `train_loss` (ADMM's
    /// coupling term aside).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub loss_parts: BTreeMap<String, f64>,
    /// Training accuracy on clean inputs over the epoch.
    pub train_acc: f64,
    /// Clean accuracy on the whole evaluated split (`split`).
    pub clean_acc: f64,
    /// The training eps in force at the end of the epoch (after the ramp).
    pub train_eps: f64,
    pub lr: f64,
    /// Robust evaluation at the first eval eps (on the fixed robust subset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_eps: Option<f64>,
    /// Clean accuracy on the robust subset: the points `pgd_acc` and `cert_acc` are measured
    /// on, so `cert <= pgd <= subset_clean_acc` holds line by line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subset_clean_acc: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pgd_acc: Option<f64>,
    /// Certified accuracy keyed by bound method (`ibp`, `crown-ibp`, `fastlin`, `crown`, `lipschitz`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub cert_acc: BTreeMap<String, f64>,
    /// Evaluations at the further eval eps values, if more than one is configured.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub more_eps: Vec<EpsEval>,
    /// Lipschitz estimates of the whole network keyed by estimator (`eval.lipschitz`: power,
    /// gram, exact, product, lipsdp, empirical); with `method = "lipschitz"` also `train_bound`
    /// (the guaranteed bound the training controls, after the epoch) and, with `lip_target`,
    /// `train_bound_max` (its largest value after any optimiser step of the epoch).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub lipschitz: BTreeMap<String, f64>,
    /// Relaxation-gap statistics (Zhu et al. 2020).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gap: Option<GapStats>,
    /// The l_inf vs l_2 view (`eval.cross_norm`): PGD accuracy keyed by attack norm (`linf`,
    /// `l2`), then by radius: the run's own norm at the eval eps, the other at `eval.cross_eps`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub cross_norm: BTreeMap<String, BTreeMap<String, f64>>,
    /// Randomized-smoothing certified accuracy against the radius (`[eval.smoothing]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smoothing: Option<SmoothingCurve>,
    /// Verified accuracy at the first eval eps from complete verification (`eval.verify`), on
    /// the first `verify.points` points of the robust subset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_acc: Option<f64>,
    /// What decided each verified point (`eval.verify`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyStats>,
}

/// Certified accuracy of the smoothed classifier against the radius (Cohen et al. 2019): the
/// fraction of the certified points that CERTIFY classifies correctly with radius >= `radii[i]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SmoothingCurve {
    pub radii: Vec<f64>,
    pub cert_acc: Vec<f64>,
    /// Fraction of the points where CERTIFY abstains.
    pub abstain: f64,
    /// The norm of the radii: `l2` (Gaussian noise) or `l1` (Laplace, uniform).
    pub norm: String,
    /// The noise and its levels (best certificate over the levels).
    pub noise: String,
    pub sigma: Vec<f64>,
    pub points: usize,
    /// Wall-clock seconds per certified point (all levels).
    pub secs_per_point: f64,
}

/// A complete verifier's verdict on one point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// A bound proves every margin positive on the whole ball.
    Verified,
    /// A concrete input of the ball is misclassified.
    Falsified,
    /// The search ended without deciding (e.g. a numerically undecided leaf).
    Unknown,
    /// The point's time budget ran out.
    Timeout,
}

/// The stage of the verification cascade that decided a point, cheapest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyStage {
    /// Misclassified at the clean input.
    Clean,
    /// PGD found a misclassified input.
    Pgd,
    Ibp,
    Crown,
    AlphaCrown,
    /// Branch and bound on the unstable ReLUs (leaves solved as LPs).
    Bab,
}

impl VerifyStage {
    pub const ALL: [VerifyStage; 6] = [
        VerifyStage::Clean,
        VerifyStage::Pgd,
        VerifyStage::Ibp,
        VerifyStage::Crown,
        VerifyStage::AlphaCrown,
        VerifyStage::Bab,
    ];
    pub fn name(self) -> &'static str {
        match self {
            VerifyStage::Clean => "clean",
            VerifyStage::Pgd => "pgd",
            VerifyStage::Ibp => "ibp",
            VerifyStage::Crown => "crown",
            VerifyStage::AlphaCrown => "alpha-crown",
            VerifyStage::Bab => "bab",
        }
    }
}

/// Counts of a complete verification: how many points each stage decided.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VerifyStats {
    pub points: u64,
    /// Time budget per point, seconds.
    pub timeout_s: f64,
    /// Verified points per deciding stage name ([`VerifyStage::name`]).
    pub verified_by: BTreeMap<String, u64>,
    /// Falsified points per deciding stage name.
    pub falsified_by: BTreeMap<String, u64>,
    pub unknown: u64,
    pub timeout: u64,
}

/// Robust evaluation at one eps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EpsEval {
    pub eps: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pgd_acc: Option<f64>,
    pub cert_acc: BTreeMap<String, f64>,
}

/// Tightness statistics of the linear relaxation on the robust subset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GapStats {
    /// The bound method the statistics are for.
    pub method: String,
    /// Mean number of unstable ReLUs (l < 0 < u) per example, one entry per ReLU layer.
    pub unstable_per_layer: Vec<f64>,
    /// Mean r1 (sum over rows of `p_t - m_t`) per example.
    pub r1_mean: f64,
    /// Mean r2 per example.
    pub r2_mean: f64,
    /// Fraction of examples whose relaxed margin bound is exact (r1 within 1e-6 relative).
    pub frac_exact: f64,
    /// Histogram of `p_t - m_t` over all examples and rows t != y.
    pub hist_edges: Vec<f64>,
    pub hist_counts: Vec<u64>,
    /// PGD accuracy minus certified accuracy, when PGD ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_pgd_gap: Option<f64>,
}

/// How one test point fares at the eval eps, for the 2-D view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PointStatus {
    /// Correct, and at least one configured bound certifies the point (each is sound, so one
    /// certificate suffices; the 2-D view combines them with OR).
    Certified,
    /// Correct and no attack found an adversarial example, but not certified.
    PgdRobust,
    /// Correct on the clean point only.
    CleanOnly,
    Misclassified,
}

/// The decision regions of a 2-D model on a grid over [0, 1]^2, and the test points.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DecisionMap {
    pub epoch: u32,
    /// Grid cells per side; `prob` is row-major, row 0 at x2 = 0.
    pub resolution: usize,
    /// Probability of class 1 (two classes) or the arg-max class index (more), per cell.
    pub prob: Vec<f32>,
    pub points: Vec<[f32; 2]>,
    pub labels: Vec<i64>,
    pub status: Vec<PointStatus>,
    pub eps: f64,
    pub norm_l2: bool,
}

/// The record whose numbers stand for a run: the final test evaluation of the best model (by
/// validation), else of the last model, else the last epoch's evaluation.
pub fn reported(records: &[EvalRecord]) -> Option<&EvalRecord> {
    let final_of = |m: FinalModel| records.iter().rev().find(|r| r.model == Some(m));
    final_of(FinalModel::Best)
        .or_else(|| final_of(FinalModel::Last))
        .or_else(|| last_epoch(records))
}

/// The last epoch's evaluation (not a final test evaluation).
pub fn last_epoch(records: &[EvalRecord]) -> Option<&EvalRecord> {
    records.iter().rev().find(|r| !r.is_final())
}

/// What a record's numbers are, for tables: `test:best`, `test:last`, `test:no-val` (a run
/// evaluated on the test split every epoch: `dataset.val_size = 0`, or written before
/// validation splits), or `val` (a run without its final test evaluation yet).
pub fn split_label(rec: &EvalRecord) -> &'static str {
    match (rec.split(), rec.model) {
        (_, Some(FinalModel::Best)) => "test:best",
        (_, Some(FinalModel::Last)) => "test:last",
        (Split::Test, None) => "test:no-val",
        (Split::Val, None) => "val",
    }
}

/// The `cross_norm` entries of a record as `(attack norm, eps, PGD accuracy)`: norms in the
/// order `first_norm` then the others, each norm's radii in increasing order (the keys are
/// decimal strings, so they are sorted as numbers, not as text).
pub fn cross_norm_cells(rec: &EvalRecord, first_norm: &str) -> Vec<(String, f64, f64)> {
    let mut out: Vec<(String, f64, f64)> = rec
        .cross_norm
        .iter()
        .flat_map(|(norm, at)| {
            at.iter()
                .filter_map(move |(eps, acc)| Some((norm.clone(), eps.parse::<f64>().ok()?, *acc)))
        })
        .collect();
    out.sort_by(|a, b| {
        (a.0 != first_norm, &a.0)
            .cmp(&(b.0 != first_norm, &b.0))
            .then(a.1.total_cmp(&b.1))
    });
    out
}

/// Edges of the histogram of `p_t - m_t`: 0, then decades from 1e-6 to 1e4 (the last bin also
/// holds everything above).
pub fn gap_hist_edges() -> Vec<f64> {
    let mut e = vec![0.0];
    e.extend((-6..=4).map(|p| 10f64.powi(p)));
    e
}

/// Keys of [`EvalRecord::cert_acc`] and [`EvalRecord::lipschitz`] that are not a bound method
/// or an estimator name.
pub mod key {
    /// `cert_acc`: the l_2 certificate from a Lipschitz bound.
    pub const LIPSCHITZ_CERT: &str = "lipschitz";
    /// `lipschitz`: the guaranteed bound `method = "lipschitz"` controls, after the epoch.
    pub const TRAIN_BOUND: &str = "train_bound";
    /// `lipschitz`: its largest value after any optimiser step of the epoch (`lip_target`).
    pub const TRAIN_BOUND_MAX: &str = "train_bound_max";
    /// `lipschitz`: LipSDP of the network trained with ADMM, and of its projected weights.
    pub const ADMM_LIPSDP: &str = "admm_lipsdp";
    pub const ADMM_PROJECTED_LIPSDP: &str = "admm_projected_lipsdp";
    /// `lipschitz`: the ADMM primal residual `||W - Wbar||_F / ||W||_F`.
    pub const ADMM_RESIDUAL: &str = "admm_residual";
    /// `loss_parts`: the weighted terms of the training loss (epoch means).
    pub const LOSS_CLEAN_CE: &str = "clean_ce";
    pub const LOSS_ROBUST_CE: &str = "robust_ce";
    pub const LOSS_R1: &str = "r1";
    pub const LOSS_R2: &str = "r2";
    pub const LOSS_LIPSCHITZ: &str = "lipschitz";
    /// Cross-entropy at the PGD point (MTL-IBP's adversarial term).
    pub const LOSS_ADV_CE: &str = "adv_ce";
    /// The warm-up regularizers of Shi et al. (2021): bound tightness, ReLU balance.
    pub const LOSS_SHI_TIGHTNESS: &str = "shi_tightness";
    pub const LOSS_SHI_RELU: &str = "shi_relu";
    /// `loss_parts`: cross-entropy on noisy inputs (`method = "gaussian"`).
    pub const LOSS_NOISY_CE: &str = "noisy_ce";
    /// `cert_acc`: randomized smoothing (Cohen et al. 2019) at the eval eps, in the noise's norm.
    pub const SMOOTHING_CERT: &str = "smoothing";
    /// The extra `lipschitz` keys in the order the Lipschitz tab colours them.
    pub const LIPSCHITZ_EXTRA: [&str; 5] = [
        TRAIN_BOUND,
        TRAIN_BOUND_MAX,
        ADMM_LIPSDP,
        ADMM_PROJECTED_LIPSDP,
        ADMM_RESIDUAL,
    ];
}

impl EvalRecord {
    /// The split this record's accuracies are on (records without one are on the test split).
    pub fn split(&self) -> Split {
        self.split.unwrap_or(Split::Test)
    }
    /// Whether this is an end-of-run test evaluation of a saved model (not an epoch's).
    pub fn is_final(&self) -> bool {
        self.model.is_some()
    }

    pub fn to_json_line(&self) -> String {
        // Plain numbers and strings only: serialisation cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_round_trips_and_skips_absent_parts() {
        let mut r = EvalRecord {
            epoch: 2,
            step: 40,
            time_s: 1.5,
            train_loss: 0.3,
            clean_acc: 0.9,
            ..EvalRecord::default()
        };
        let line = r.to_json_line();
        assert!(!line.contains("pgd_acc") && !line.contains("gap"), "{line}");
        assert!(line.contains("\"clean_acc\":0.9"), "{line}");
        r.cert_acc.insert("ibp".into(), 0.5);
        r.pgd_acc = Some(0.7);
        let back: EvalRecord = serde_json::from_str(&r.to_json_line()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn cross_norm_cells_put_the_first_norm_first_and_sort_radii_as_numbers() {
        let mut rec = EvalRecord::default();
        let at = |v: &[(&str, f64)]| v.iter().map(|(k, a)| (k.to_string(), *a)).collect();
        rec.cross_norm
            .insert("linf".into(), at(&[("0.1", 0.5), ("0.05", 0.7)]));
        rec.cross_norm
            .insert("l2".into(), at(&[("10", 0.1), ("2", 0.3), ("x", 0.9)]));
        let cells = cross_norm_cells(&rec, "linf");
        let got: Vec<(&str, f64, f64)> =
            cells.iter().map(|(n, e, a)| (n.as_str(), *e, *a)).collect();
        assert_eq!(
            got,
            vec![
                ("linf", 0.05, 0.7),
                ("linf", 0.1, 0.5),
                ("l2", 2.0, 0.3),
                ("l2", 10.0, 0.1)
            ]
        );
        assert_eq!(
            cross_norm_cells(&rec, "l2")[0],
            ("l2".to_string(), 2.0, 0.3)
        );
    }
}
