//! One epoch's evaluation: clean accuracy on the validation split (the test split when there is
//! none, and at the end of a run), PGD and certified accuracy at every eval eps on its fixed
//! robust subset, the l_2 certificate from a Lipschitz bound, the
//! Lipschitz estimates, and the tightness statistics of the relaxation (Zhu et al. 2020).
use super::noisy::{noisy_accuracy, noisy_robust_eval, InputNoise};
use super::smoothing::{self, SmoothParams};
use super::verify::{verify, VerifySettings};
use super::{clean_accuracy, decision_map, robust_eval, specs_from_config, RobustSpec};
use crate::bounds::{self, Ball};
use crate::config::{BoundMethod, Estimator, ExperimentConfig, Method, Norm, VerifyConfig};
use crate::data::Dataset;
use crate::failure::set_phase;
use crate::lipschitz;
use crate::metrics::{key, DecisionMap, EvalRecord, Split};
use crate::model::Network;
use crate::protocol::Level;
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

/// Gram iterations of the body bound in the l_2 Lipschitz certificate (double precision; more
/// iterations, a tighter certificate).
pub const CERT_GRAM_ITERS: u32 = 10;

/// How many points of the robust subset the tightness statistics use.
pub const GAP_POINTS: i64 = 200;

/// The linear relaxation whose tightness statistics an evaluation reports: the training
/// method's own, else the first linear bound method of the evaluation; `None` if there is none.
pub fn gap_method(cfg: &ExperimentConfig) -> Option<BoundMethod> {
    match cfg.train.method {
        Method::CrownIbp => Some(BoundMethod::CrownIbp),
        Method::Fastlin => Some(BoundMethod::Fastlin),
        // alpha-CROWN's statistics are CROWN's (its starting relaxation), labelled as such:
        // the r2 terms of Zhu et al. are defined for fixed lines, not optimised slopes.
        _ => cfg
            .eval
            .bounds
            .iter()
            .copied()
            .find(|m| m.relaxed().is_some())
            .map(|m| match m {
                BoundMethod::AlphaCrown => BoundMethod::Crown,
                m => m,
            }),
    }
}

/// What every evaluation of a run computes, and on which split, fixed when the run starts.
pub struct Evaluator {
    specs: Vec<RobustSpec>,
    split: Split,
    /// The evaluated split, whole (clean accuracy).
    x: Tensor,
    y: Tensor,
    /// Its fixed robust subset: the first `eval.robust_subset` points.
    robust_x: Tensor,
    robust_y: Tensor,
    /// Input dimension, for the l_inf-to-l_2 radius of the Lipschitz certificate.
    input_dim: i64,
    lip_estimators: Vec<Estimator>,
    /// Whether to report the l_2 certificate from a Lipschitz bound (`cert_acc["lipschitz"]`).
    lip_certificate: bool,
    gap_method: Option<BoundMethod>,
    /// Randomized smoothing (`[eval.smoothing]`) and how many points of the subset it certifies.
    smoothing: Option<(SmoothParams, i64)>,
    /// `eval.cross_norm`: PGD with the other norm at `eval.cross_eps`.
    cross: Option<Vec<RobustSpec>>,
    /// A randomized model (`rat`): its input noise and `(eval.noise_draws, eval.eot_draws)`.
    randomized: Option<(InputNoise, (u32, u32))>,
    /// Complete verification at the first eval eps (`eval.verify`).
    verify: Option<VerifyConfig>,
}

/// Why an evaluation did not finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted;

/// Who runs an evaluation: asked between its parts whether to stop, told what went wrong.
pub trait EvalListener {
    fn should_stop(&mut self) -> bool;
    fn log(&mut self, level: Level, message: String);
}

impl Evaluator {
    /// The per-epoch evaluation: on the validation split, or on the test split when the data
    /// has none (`dataset.val_size = 0`).
    pub fn new(cfg: &ExperimentConfig, data: &Dataset) -> Self {
        if data.val_len() > 0 {
            Self::on(cfg, data, Split::Val)
        } else {
            Self::on(cfg, data, Split::Test)
        }
    }

    /// The split this evaluator runs on.
    pub fn split(&self) -> Split {
        self.split
    }

    /// The same evaluation on the test split (the final one of a run with a validation split).
    pub fn on_test(cfg: &ExperimentConfig, data: &Dataset) -> Self {
        Self::on(cfg, data, Split::Test)
    }

    fn on(cfg: &ExperimentConfig, data: &Dataset, split: Split) -> Self {
        let (x, y) = match split {
            Split::Val => (&data.val_x, &data.val_y),
            Split::Test => (&data.test_x, &data.test_y),
        };
        let len = y.size()[0];
        let n = match cfg.eval.robust_subset {
            0 => len,
            k => (k as i64).min(len),
        };
        Evaluator {
            specs: specs_from_config(cfg),
            split,
            x: x.shallow_clone(),
            y: y.shallow_clone(),
            robust_x: x.narrow(0, 0, n),
            robust_y: y.narrow(0, 0, n),
            input_dim: data.input_shape.iter().product(),
            lip_estimators: cfg.eval.lipschitz.clone(),
            // For 1-Lipschitz networks, Lipschitz training, and whenever Lipschitz estimates
            // are asked for (so that a standard run can be compared).
            lip_certificate: cfg.model.arch.is_one_lipschitz()
                || cfg.train.method == Method::Lipschitz
                || !cfg.eval.lipschitz.is_empty(),
            gap_method: gap_method(cfg),
            cross: cfg.eval.cross_norm.then(|| {
                let other = match cfg.eval.norm {
                    Norm::Linf => Norm::L2,
                    Norm::L2 => Norm::Linf,
                };
                let specs = specs_from_config(cfg);
                let Some(own) = specs.first() else {
                    return vec![];
                };
                cfg.eval
                    .cross_eps
                    .iter()
                    .map(|&eps| RobustSpec {
                        eps,
                        norm: other,
                        bounds: vec![],
                        ..own.clone()
                    })
                    .collect()
            }),
            randomized: cfg.train.randomized().map(|(noise, sigma)| {
                let draws = (cfg.eval.noise_draws, cfg.eval.eot_draws);
                (InputNoise { noise, sigma }, draws)
            }),
            smoothing: (!cfg.eval.smoothing.is_off()).then(|| {
                let s = &cfg.eval.smoothing;
                (SmoothParams::from_config(s), (s.points as i64).min(n))
            }),
            verify: cfg.eval.verify.clone().filter(|v| v.points > 0),
        }
    }

    /// Fills the evaluation fields of `rec`. The listener is asked between the robust
    /// evaluations whether to stop (exact bounds on a big subset take a while); when it says
    /// stop, the record is unfinished and must not be written. Soundness violations and failed
    /// estimates are logged to it.
    pub fn evaluate(
        &self,
        net: &Network,
        rec: &mut EvalRecord,
        listener: &mut dyn EvalListener,
    ) -> Result<(), Interrupted> {
        rec.split = Some(self.split);
        // What is being done, for the sentence of a libtorch failure (see `failure`).
        let epoch = rec.epoch;
        let part = |what: &str| set_phase(format!("evaluating epoch {epoch} ({what})"));
        part("clean accuracy");
        rec.clean_acc = match self.randomized {
            Some((noise, draws)) => {
                noisy_accuracy(net, &self.x, &self.y, None, noise, draws, 1024).0
            }
            None => clean_accuracy(net, &self.x, &self.y, 1024),
        };
        for (i, spec) in self.specs.iter().enumerate() {
            if listener.should_stop() {
                return Err(Interrupted);
            }
            part(&format!("robust accuracy at eps {}", spec.eps));
            let report = match self.randomized {
                Some((noise, draws)) => {
                    noisy_robust_eval(net, &self.robust_x, &self.robust_y, spec, noise, draws)
                }
                None => robust_eval(net, &self.robust_x, &self.robust_y, spec, 256),
            };
            for v in &report.violations {
                listener.log(Level::Error, v.to_string());
            }
            let r = report.eval;
            if i == 0 {
                rec.eval_eps = Some(r.eps);
                rec.subset_clean_acc = Some(report.clean_acc);
                rec.pgd_acc = r.pgd_acc;
                rec.cert_acc = r.cert_acc;
            } else {
                rec.more_eps.push(r);
            }
        }
        if let Some(cross) = &self.cross {
            part("attacks with the other norm");
            self.cross_norm(net, rec, cross);
        }
        if let (Some(v), Some(spec)) = (&self.verify, self.specs.first()) {
            if listener.should_stop() {
                return Err(Interrupted);
            }
            part("complete verification");
            self.verify(net, v, spec, rec);
        }
        if self.lip_certificate {
            part("Lipschitz certificate");
            self.lipschitz_certificate(net, rec);
        }
        if !self.lip_estimators.is_empty() {
            part("Lipschitz estimates");
            let n = self.robust_x.size()[0].min(64);
            match lipschitz::estimate(
                net,
                &self.lip_estimators,
                Some(&self.robust_x.narrow(0, 0, n)),
                &lipschitz::Settings::per_epoch(),
            ) {
                Ok(r) => rec.lipschitz = r.network,
                Err(e) => listener.log(Level::Warn, format!("Lipschitz estimates: {e}")),
            }
        }
        if self.smoothing.is_some() {
            part("randomized smoothing");
            self.smoothing_certificate(net, rec, listener)?;
        }
        part("tightness statistics");
        self.gap_stats(net, rec);
        Ok(())
    }

    /// `cross_norm`: PGD accuracy under both norms, the run's own at the eval eps (already
    /// measured) and the other at `eval.cross_eps` (EOT for a randomized model).
    fn cross_norm(&self, net: &Network, rec: &mut EvalRecord, cross: &[RobustSpec]) {
        let own_norm = self.specs.first().map_or(Norm::Linf, |s| s.norm);
        let own: BTreeMap<String, f64> = std::iter::once((rec.eval_eps, rec.pgd_acc))
            .chain(rec.more_eps.iter().map(|e| (Some(e.eps), e.pgd_acc)))
            .filter_map(|(eps, acc)| Some((format!("{}", eps?), acc?)))
            .collect();
        rec.cross_norm.insert(own_norm.name().into(), own);
        let (x, y) = (&self.robust_x, &self.robust_y);
        let mut other = BTreeMap::new();
        for spec in cross {
            let report = match self.randomized {
                Some((noise, draws)) => noisy_robust_eval(net, x, y, spec, noise, draws),
                None => robust_eval(net, x, y, spec, 256),
            };
            if let Some(acc) = report.eval.pgd_acc {
                other.insert(format!("{}", spec.eps), acc);
            }
            rec.cross_norm
                .insert(spec.norm.name().into(), other.clone());
        }
    }

    /// CERTIFY (Cohen et al. 2019) on the first `eval.smoothing.points` of the robust subset:
    /// `cert_acc["smoothing"]` at every eval eps (the eval ball inside the noise norm's ball, see
    /// [`smoothing::radius_in`]) and the certified-accuracy curve.
    fn smoothing_certificate(
        &self,
        net: &Network,
        rec: &mut EvalRecord,
        listener: &mut dyn EvalListener,
    ) -> Result<(), Interrupted> {
        let Some((params, points)) = &self.smoothing else {
            return Ok(());
        };
        let x = self.robust_x.narrow(0, 0, *points);
        let labels = Vec::<i64>::try_from(self.robust_y.narrow(0, 0, *points)).unwrap_or_default();
        let (certs, secs) = smoothing::certify_timed(net, &x, params, &mut |i| {
            i % 8 == 0 && listener.should_stop()
        })
        .ok_or(Interrupted)?;
        for (i, spec) in self.specs.iter().enumerate() {
            let r = smoothing::radius_in(params.radius_norm(), spec.eps, spec.norm, self.input_dim);
            let acc = smoothing::certified_accuracy(&certs, &labels, r);
            if i == 0 {
                rec.cert_acc.insert(key::SMOOTHING_CERT.into(), acc);
            } else if let Some(e) = rec.more_eps.get_mut(i - 1) {
                e.cert_acc.insert(key::SMOOTHING_CERT.into(), acc);
            }
        }
        rec.smoothing = Some(smoothing::curve(&certs, &labels, params, secs));
        Ok(())
    }

    /// Certified accuracy of the l_2 certificate `margin_ij / (L_body ||w_i - w_j||)` at every
    /// eval eps; an l_inf ball of radius eps lies in the l_2 ball of radius `eps sqrt(d)`.
    fn lipschitz_certificate(&self, net: &Network, rec: &mut EvalRecord) {
        let Some(parts) = lipschitz::certificate_parts(net, CERT_GRAM_ITERS) else {
            return;
        };
        let d = self.input_dim;
        let radius =
            tch::no_grad(|| lipschitz::l2_radius(net, &parts, &self.robust_x, &self.robust_y));
        let n = self.robust_y.size()[0].max(1) as f64;
        for (i, spec) in self.specs.iter().enumerate() {
            let eps_l2 = match spec.norm {
                Norm::L2 => spec.eps,
                Norm::Linf => spec.eps * (d as f64).sqrt(),
            };
            let acc = radius.gt(eps_l2).sum(Kind::Int64).int64_value(&[]) as f64 / n;
            if i == 0 {
                rec.cert_acc.insert(key::LIPSCHITZ_CERT.into(), acc);
            } else if let Some(e) = rec.more_eps.get_mut(i - 1) {
                e.cert_acc.insert(key::LIPSCHITZ_CERT.into(), acc);
            }
        }
    }

    /// Verified accuracy and the per-stage counts of complete verification on the first
    /// `v.points` points of the robust subset (IBP and alpha-CROWN use the run's settings).
    fn verify(&self, net: &Network, v: &VerifyConfig, spec: &RobustSpec, rec: &mut EvalRecord) {
        if bounds::check_supported(net).is_err() {
            return;
        }
        let n = self.robust_y.size()[0].min(v.points as i64);
        let ball = Ball {
            eps: spec.eps,
            norm: spec.norm,
        };
        let mut settings = VerifySettings::with_timeout(v.timeout_s);
        settings.alpha = spec.alpha;
        let report = verify(
            net,
            &self.robust_x.narrow(0, 0, n),
            &self.robust_y.narrow(0, 0, n),
            ball,
            &settings,
            &mut |_, _| {},
        );
        rec.verified_acc = Some(report.verified_acc);
        rec.verify = Some(report.stats());
    }

    /// Tightness statistics at the first eval eps, on at most [`GAP_POINTS`] points (they run
    /// in double precision).
    fn gap_stats(&self, net: &Network, rec: &mut EvalRecord) {
        let (Some(method), Some(spec)) = (self.gap_method, self.specs.first()) else {
            return;
        };
        let ball = Ball {
            eps: spec.eps,
            norm: spec.norm,
        };
        let n_gap = self.robust_y.size()[0].min(GAP_POINTS);
        let (gx, gy) = (
            self.robust_x.narrow(0, 0, n_gap),
            self.robust_y.narrow(0, 0, n_gap),
        );
        rec.gap = bounds::gap_stats(net, &gx, &gy, ball, method, 128).map(|mut g| {
            g.cert_pgd_gap = match (rec.pgd_acc, rec.cert_acc.get(method.name())) {
                (Some(p), Some(c)) => Some(p - c),
                _ => None,
            };
            g
        });
    }

    /// The decision map of a 2-D model at the first eval eps; `None` for other inputs.
    pub fn decision_map(&self, net: &Network, data: &Dataset, epoch: u32) -> Option<DecisionMap> {
        (data.input_shape == [2]).then(|| {
            decision_map(
                net,
                &data.test_x,
                &data.test_y,
                self.specs.first(),
                epoch,
                64,
                400,
            )
        })
    }
}
