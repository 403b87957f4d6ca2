//! Evaluation: clean accuracy, PGD accuracy and certified accuracy per bound method, with a
//! consistency check between them; one epoch's evaluation ([`Evaluator`]); decision maps.
//!
//! A point is PGD-robust only if it is correctly classified and no iterate of any restart is
//! misclassified; certified only if every margin lower bound is positive. The clean input is
//! in the ball, and PGD only ever returns points of the ball, so a point certified by a sound
//! bound can be neither misclassified nor broken by PGD: when that happens the evaluation
//! reports a [`Violation`] naming the point and the bound method.
mod decision;
mod empirical;
mod epoch;
mod inspect;
pub mod noisy;
pub mod smoothing;
pub mod verify;
pub use decision::decision_map;
pub use empirical::{empirical_ranges, Search};
pub use epoch::{gap_method, EvalListener, Evaluator, Interrupted, CERT_GRAM_ITERS, GAP_POINTS};
pub use inspect::{
    InspectOptions, Interval, LayerInspection, MarginCurve, Microscope, PointBounds, Radii,
};
pub use smoothing::noise_like;

use crate::attack::{self, AttackLoss, PgdConfig};
use crate::bounds::{self, AlphaSettings, Ball, BoundMethod};
use crate::config::{ExperimentConfig, Norm};
use crate::device::synchronize;
use crate::metrics::EpsEval;
use crate::model::Network;
use std::fmt;
use std::time::Instant;
use tch::{Kind, Tensor};

/// One robust evaluation to run: an eps, a norm, the bound methods and the PGD budget.
#[derive(Debug, Clone, PartialEq)]
pub struct RobustSpec {
    pub eps: f64,
    pub norm: Norm,
    pub bounds: Vec<BoundMethod>,
    /// 0 turns PGD off.
    pub pgd_steps: u32,
    pub pgd_restarts: u32,
    pub pgd_loss: AttackLoss,
    /// The optimiser of `alpha-crown` (ignored by the other bounds).
    pub alpha: AlphaSettings,
}

impl RobustSpec {
    /// The attack of this evaluation (see [`PgdConfig::evaluation`]).
    pub fn pgd_config(&self) -> PgdConfig {
        PgdConfig::evaluation(
            self.eps,
            self.norm,
            self.pgd_steps,
            self.pgd_restarts,
            self.pgd_loss,
        )
    }
}

pub fn specs_from_config(cfg: &ExperimentConfig) -> Vec<RobustSpec> {
    let e = &cfg.eval;
    e.eps
        .iter()
        .map(|&eps| RobustSpec {
            eps,
            norm: e.norm,
            bounds: e.bounds.clone(),
            pgd_steps: e.pgd_steps,
            pgd_restarts: e.pgd_restarts,
            pgd_loss: AttackLoss::CrossEntropy,
            alpha: AlphaSettings {
                iters: e.alpha_iters,
                lr: e.alpha_lr,
            },
        })
        .collect()
}

/// Fraction of correctly classified examples, evaluated in batches without gradients.
pub fn clean_accuracy(net: &Network, x: &Tensor, y: &Tensor, batch: i64) -> f64 {
    let n = y.size()[0];
    if n == 0 {
        return 0.0;
    }
    tch::no_grad(|| {
        let mut correct = 0i64;
        let mut start = 0;
        while start < n {
            let len = batch.min(n - start);
            let xb = x.narrow(0, start, len);
            let yb = y.narrow(0, start, len);
            correct += attack::correct(net, &xb, &yb)
                .sum(Kind::Int64)
                .int64_value(&[]);
            start += len;
        }
        correct as f64 / n as f64
    })
}

/// A point that a bound certifies although it is misclassified or PGD breaks it: a bug in the
/// bound or in the attack.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// Index of the point in the evaluated set.
    pub index: i64,
    pub method: BoundMethod,
    pub eps: f64,
    pub norm: Norm,
    /// The smallest margin lower bound over the other classes (positive: certified).
    pub bound_margin: f64,
    /// The margin at the worst point the attack found (negative: misclassified there).
    pub attack_margin: f64,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "soundness violation: test point {} is certified by `{}` at eps {} ({}) with margin \
             lower bound {:.6e}, but the attack found a point of the ball with margin {:.6e} \
             (a bug in the bound or the attack)",
            self.index,
            self.method.name(),
            self.eps,
            self.norm.name(),
            self.bound_margin,
            self.attack_margin
        )
    }
}

/// Per-example results of a robust evaluation of one batch.
pub struct RobustMasks {
    /// Correctly classified (`[B]` bool).
    pub clean: Tensor,
    /// Correct and PGD found no misclassified point (`[B]` bool); `None` without PGD.
    pub pgd: Option<Tensor>,
    /// The lowest margin PGD found (`[B]`); `None` without PGD.
    pub pgd_margin: Option<Tensor>,
    /// Per bound method: correct and certified (`[B]` bool).
    pub cert: Vec<(BoundMethod, Tensor)>,
    /// Per bound method: the smallest margin lower bound over the other classes (`[B]`).
    pub bound_margin: Vec<Tensor>,
    /// Points certified by a bound but misclassified or broken by PGD (indices in the batch).
    pub violations: Vec<Violation>,
    /// Seconds spent in PGD and in each bound method (synchronised with the device).
    pub pgd_secs: f64,
    pub cert_secs: Vec<f64>,
}

/// Per-example robustness of one batch. A point is PGD-robust only if it is correct and no
/// restart finds an adversarial example; certified only if correct and every margin bound > 0.
pub fn robust_masks(net: &Network, x: &Tensor, y: &Tensor, spec: &RobustSpec) -> RobustMasks {
    let device = x.device();
    let clean = tch::no_grad(|| attack::correct(net, x, y));
    let started = Instant::now();
    let attacked = (spec.pgd_steps > 0).then(|| {
        let res = attack::pgd(net, x, y, &spec.pgd_config());
        let robust = tch::no_grad(|| attack::correct(net, &res.x_adv, y)).logical_and(&clean);
        (robust, res.margin)
    });
    synchronize(device);
    let pgd_secs = started.elapsed().as_secs_f64();
    let ball = Ball {
        eps: spec.eps,
        norm: spec.norm,
    };
    // Without PGD, the clean point is the only attack.
    let unbroken = attacked.as_ref().map_or(&clean, |(r, _)| r);
    let mut cert = Vec::new();
    let mut bound_margin = Vec::new();
    let mut cert_secs = Vec::new();
    let mut violations = Vec::new();
    for &method in &spec.bounds {
        let started = Instant::now();
        let c = bounds::certify_with(net, x, y, ball, method, spec.alpha);
        #[cfg(test)]
        let c = tests::unsound_shift(c, y);
        let (lower, certified) = (c.margin_lower, c.certified);
        let worst = bounds::worst_margin(&lower, y);
        synchronize(device);
        cert_secs.push(started.elapsed().as_secs_f64());
        let bad = certified.logical_and(&unbroken.logical_not());
        if bad.any().int64_value(&[]) != 0 {
            let attack_margin = match &attacked {
                Some((_, m)) => m.shallow_clone(),
                None => tch::no_grad(|| attack::margins(&net.forward(x), y)),
            };
            let idx = Vec::<i64>::try_from(bad.nonzero().reshape([-1])).unwrap_or_default();
            for i in idx {
                violations.push(Violation {
                    index: i,
                    method,
                    eps: spec.eps,
                    norm: spec.norm,
                    bound_margin: worst.double_value(&[i]),
                    attack_margin: attack_margin.double_value(&[i]),
                });
            }
        }
        cert.push((method, certified.logical_and(&clean)));
        bound_margin.push(worst);
    }
    let (pgd, pgd_margin) = match attacked {
        Some((r, m)) => (Some(r), Some(m)),
        None => (None, None),
    };
    RobustMasks {
        clean,
        pgd,
        pgd_margin,
        cert,
        bound_margin,
        violations,
        pgd_secs,
        cert_secs,
    }
}

/// The result of a robust evaluation over a set.
#[derive(Debug, Clone, PartialEq)]
pub struct RobustReport {
    /// The accuracies as written to `metrics.jsonl`.
    pub eval: EpsEval,
    /// Number of points evaluated.
    pub n: i64,
    /// Clean accuracy on the same points.
    pub clean_acc: f64,
    /// Every point certified by a bound but misclassified or broken by PGD (indices in the set).
    pub violations: Vec<Violation>,
    pub pgd_secs: f64,
    /// Seconds per bound method, in the order of `spec.bounds`.
    pub cert_secs: Vec<f64>,
}

/// Accuracies of one robust evaluation over a set, in batches.
pub fn robust_eval(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    spec: &RobustSpec,
    batch: i64,
) -> RobustReport {
    robust_eval_with_progress(net, x, y, spec, batch, &mut |_, _| {})
}

/// [`robust_eval`], calling `progress(done, total)` after every batch.
pub fn robust_eval_with_progress(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    spec: &RobustSpec,
    batch: i64,
    progress: &mut dyn FnMut(i64, i64),
) -> RobustReport {
    let n = y.size()[0];
    let batch = batch.max(1);
    let mut clean_count = 0i64;
    let mut pgd_count = 0i64;
    let mut cert_counts = vec![0i64; spec.bounds.len()];
    let mut violations = Vec::new();
    let mut pgd_secs = 0.0;
    let mut cert_secs = vec![0.0; spec.bounds.len()];
    let count = |t: &Tensor| t.sum(Kind::Int64).int64_value(&[]);
    let mut start = 0;
    while start < n {
        let len = batch.min(n - start);
        let m = robust_masks(
            net,
            &x.narrow(0, start, len),
            &y.narrow(0, start, len),
            spec,
        );
        clean_count += count(&m.clean);
        if let Some(p) = &m.pgd {
            pgd_count += count(p);
        }
        for (c, (_, t)) in cert_counts.iter_mut().zip(&m.cert) {
            *c += count(t);
        }
        pgd_secs += m.pgd_secs;
        for (s, t) in cert_secs.iter_mut().zip(&m.cert_secs) {
            *s += t;
        }
        violations.extend(m.violations.into_iter().map(|v| Violation {
            index: v.index + start,
            ..v
        }));
        start += len;
        progress(start, n);
    }
    let frac = |c: i64| if n == 0 { 0.0 } else { c as f64 / n as f64 };
    RobustReport {
        eval: EpsEval {
            eps: spec.eps,
            pgd_acc: (spec.pgd_steps > 0).then(|| frac(pgd_count)),
            cert_acc: spec
                .bounds
                .iter()
                .zip(&cert_counts)
                .map(|(m, &c)| (m.name().to_string(), frac(c)))
                .collect(),
        },
        n,
        clean_acc: frac(clean_count),
        violations,
        pgd_secs,
        cert_secs,
    }
}

#[cfg(test)]
mod tests {
    thread_local! {
        /// Test hook: a shift added to every margin lower bound, to make a bound unsound on
        /// purpose and prove that the consistency check catches it.
        pub(super) static UNSOUND_SHIFT: std::cell::Cell<Option<f64>> = const { std::cell::Cell::new(None) };
    }

    /// The certification with [`UNSOUND_SHIFT`] added to every margin bound, when set.
    pub(super) fn unsound_shift(c: bounds::Certification, y: &Tensor) -> bounds::Certification {
        match UNSOUND_SHIFT.with(|c| c.get()) {
            Some(shift) => {
                let lower = c.margin_lower + shift;
                bounds::Certification {
                    certified: bounds::certified(&lower, y),
                    margin_lower: lower,
                    rechecked: 0,
                }
            }
            None => c,
        }
    }

    use super::*;
    use crate::config::ModelConfig;
    use tch::Device;

    fn bools(t: &Tensor) -> Vec<bool> {
        Vec::<bool>::try_from(t).unwrap()
    }

    fn mlp(input: i64, hidden: Vec<i64>, classes: i64, seed: i64) -> Network {
        tch::manual_seed(seed);
        let cfg = ModelConfig {
            hidden,
            ..ModelConfig::default()
        };
        Network::from_config(&cfg, &[input], classes, None, Device::Cpu).unwrap()
    }

    /// Every bound method.
    const TESTED_BOUNDS: [BoundMethod; 5] = BoundMethod::ALL;

    /// Checks cert <= pgd <= clean point by point, naming the first point that breaks it.
    #[test]
    fn pgd_at_eps_zero_equals_clean_accuracy() {
        let net = mlp(4, vec![16], 3, 5);
        let x = Tensor::rand([200, 4], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(3, [200], (Kind::Int64, Device::Cpu));
        for norm in [Norm::Linf, Norm::L2] {
            let spec = RobustSpec {
                eps: 0.0,
                norm,
                bounds: TESTED_BOUNDS.to_vec(),
                pgd_steps: 10,
                pgd_restarts: 3,
                pgd_loss: AttackLoss::Margin,
                alpha: AlphaSettings::default(),
            };
            let r = robust_eval(&net, &x, &y, &spec, 64);
            let clean = clean_accuracy(&net, &x, &y, 64);
            assert_eq!(r.eval.pgd_acc, Some(clean));
            assert_eq!(r.clean_acc, clean);
            // At eps 0 IBP is exact: certified = correct (no ties on random data).
            assert_eq!(r.eval.cert_acc["ibp"], clean);
        }
    }

    #[test]
    fn pgd_is_at_least_as_strong_as_fgsm() {
        // A trained-looking net: random MLP on random labels, several radii.
        let net = mlp(8, vec![32, 32], 4, 11);
        let x = Tensor::rand([300, 8], (Kind::Float, Device::Cpu));
        let y = tch::no_grad(|| net.forward(&x).argmax(1, false)); // all clean-correct
        for norm in [Norm::Linf, Norm::L2] {
            for eps in [0.02, 0.05, 0.1] {
                let x_fgsm = attack::fgsm(&net, &x, &y, eps, norm, AttackLoss::CrossEntropy);
                let fgsm_margin = tch::no_grad(|| attack::margins(&net.forward(&x_fgsm), &y));
                let fgsm_robust = bools(&tch::no_grad(|| attack::correct(&net, &x_fgsm, &y)));
                let cfg = PgdConfig::evaluation(eps, norm, 20, 2, AttackLoss::CrossEntropy);
                let res = attack::pgd(&net, &x, &y, &cfg);
                let pgd_robust = bools(&tch::no_grad(|| attack::correct(&net, &res.x_adv, &y)));
                let n_fgsm = fgsm_robust.iter().filter(|&&b| b).count();
                let n_pgd = pgd_robust.iter().filter(|&&b| b).count();
                // PGD from a random start is not better than FGSM on every single point (a
                // step can land in another basin), so a point or three either way is noise: the
                // test draws share libtorch's one generator with the tests running beside it.
                assert!(
                    n_pgd <= n_fgsm + 3,
                    "{norm:?} eps {eps}: pgd {n_pgd} > fgsm {n_fgsm} + 3"
                );
                let mean = |t: &Tensor| t.mean(Kind::Float).double_value(&[]);
                assert!(
                    mean(&res.margin) <= mean(&fgsm_margin) + 1e-6,
                    "{norm:?} eps {eps}: mean margin pgd {} > fgsm {}",
                    mean(&res.margin),
                    mean(&fgsm_margin)
                );
                if eps == 0.1 {
                    assert!(n_pgd < 300, "{norm:?}: the attack should break some points");
                }
            }
        }
    }

    #[test]
    fn an_unsound_bound_is_caught_and_the_point_and_method_named() {
        // Make IBP unsound on purpose (its margin lower bounds shifted up by 100, so every
        // point is "certified"): every point that is misclassified or that PGD breaks must
        // then come back as a violation, with its index in the whole set (batches of 7).
        let net = mlp(3, vec![16], 3, 21);
        let x = Tensor::rand([40, 3], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(3, [40], (Kind::Int64, Device::Cpu));
        let spec = RobustSpec {
            eps: 0.1,
            norm: Norm::Linf,
            bounds: vec![BoundMethod::Ibp],
            pgd_steps: 10,
            pgd_restarts: 1,
            pgd_loss: AttackLoss::CrossEntropy,
            alpha: AlphaSettings::default(),
        };
        let honest = robust_eval(&net, &x, &y, &spec, 7);
        assert!(honest.violations.is_empty(), "{}", honest.violations[0]);
        // Independently: the points PGD (restart 0 starts at the clean point: deterministic)
        // does not leave correctly classified.
        let mut robust = Vec::new();
        for start in (0..40).step_by(7) {
            let len = 7.min(40 - start);
            let (xb, yb) = (x.narrow(0, start, len), y.narrow(0, start, len));
            let res = attack::pgd(&net, &xb, &yb, &spec.pgd_config());
            robust.extend(bools(&tch::no_grad(|| {
                attack::correct(&net, &res.x_adv, &yb)
            })));
        }
        let expected: Vec<i64> = (0..40).filter(|&i| !robust[i as usize]).collect();
        assert!(!expected.is_empty() && expected.len() < 40, "{expected:?}");
        UNSOUND_SHIFT.with(|c| c.set(Some(100.0)));
        let lying = robust_eval(&net, &x, &y, &spec, 7);
        UNSOUND_SHIFT.with(|c| c.set(None));
        let got: Vec<i64> = lying.violations.iter().map(|v| v.index).collect();
        assert_eq!(got, expected);
        let v = &lying.violations[0];
        assert_eq!(v.method, BoundMethod::Ibp);
        assert!(v.bound_margin > 0.0 && v.attack_margin <= 0.0, "{v:?}");
        let msg = v.to_string();
        assert!(
            msg.contains(&format!("test point {}", expected[0])) && msg.contains("`ibp`"),
            "{msg}"
        );
    }
}
