//! The loss of one training batch for each method: cross-entropy (standard), at the PGD point
//! (Madry et al. 2018), on the negated margin lower bound of IBP / CROWN-IBP / Fast-Lin with the
//! tightness regularizers of Zhu et al. (2020), or plus a Lipschitz bound; SABR and the
//! expressive losses are in `adversarial_ibp`.
use super::Schedule;
use crate::attack::{self, PgdConfig};
use crate::bounds::{
    margin_lower, margin_lower_relaxed, tightness, Ball, BoundMethod, Intermediate, Relaxation,
    Relaxed,
};
use crate::config::{ExperimentConfig, LipBound, Method, R2Lower, RegStage, TrainConfig};
use crate::eval::noise_like;
use crate::eval::noisy::{eot_pgd, InputNoise};
use crate::metrics::key;
use crate::model::Network;
use tch::{Kind, Reduction, Tensor};

/// Mean cross-entropy of `logits` against the labels `y`.
pub fn cross_entropy(logits: &Tensor, y: &Tensor) -> Tensor {
    logits.cross_entropy_loss::<Tensor>(y, None, Reduction::Mean, -100, 0.0)
}

/// The robust cross-entropy: cross-entropy on `-m` for margin lower bounds `m` (`m_y = 0`),
/// an upper bound on the worst-case cross-entropy over the ball.
pub fn robust_cross_entropy(margins_lower: &Tensor, y: &Tensor) -> Tensor {
    cross_entropy(&(-margins_lower), y)
}

/// The loss of one batch and its weighted terms.
pub struct BatchLoss {
    /// The loss the optimiser steps on: the sum of `parts`.
    pub total: Tensor,
    /// Clean logits, for the training accuracy.
    pub logits: Tensor,
    /// Each weighted term of `total` (keys `metrics::key::LOSS_*`), for `loss_parts`.
    pub parts: Vec<(&'static str, Tensor)>,
}

impl BatchLoss {
    pub(super) fn new(logits: Tensor, parts: Vec<(&'static str, Tensor)>) -> Self {
        let total = parts
            .iter()
            .map(|(_, t)| t.shallow_clone())
            .reduce(|a, b| a + b)
            .unwrap_or_else(|| logits.zeros_like().sum(Kind::Float));
        BatchLoss {
            total,
            logits,
            parts,
        }
    }
}

/// The loss of one batch for the configured method.
pub fn method_loss(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    cfg: &ExperimentConfig,
    sched: &Schedule,
) -> BatchLoss {
    let tc = &cfg.train;
    let ce = |logits: &Tensor| cross_entropy(logits, y);
    match tc.method {
        Method::Standard => {
            let logits = net.forward(x);
            BatchLoss::new(
                logits.shallow_clone(),
                vec![(key::LOSS_CLEAN_CE, ce(&logits))],
            )
        }
        // Cohen et al. 2019: the base classifier of a smoothed one learns on noisy inputs (not
        // clipped to the box: certification adds the same unclipped noise).
        Method::Gaussian => {
            let noisy = x + noise_like(x, tc.noise, tc.noise_sigma);
            let logits = tch::no_grad(|| net.forward(x));
            let noisy_ce = ce(&net.forward(&noisy));
            BatchLoss::new(logits, vec![(key::LOSS_NOISY_CE, noisy_ce)])
        }
        // Araujo et al. 2019: PGD against the randomized model (a fresh noise draw at each step),
        // cross-entropy at the adversarial point under a fresh draw.
        Method::Rat => {
            let noise = InputNoise {
                noise: tc.noise,
                sigma: tc.noise_sigma,
            };
            let pgd = PgdConfig {
                eps: sched.eps,
                norm: tc.norm,
                steps: tc.pgd_steps,
                step_ratio: tc.pgd_step_ratio,
                random_start: true,
                restarts: 1,
                loss: attack::AttackLoss::CrossEntropy,
            };
            let x_adv = eot_pgd(net, x, y, &pgd, noise, 1);
            let logits = tch::no_grad(|| net.forward(x));
            let noisy = &x_adv + noise_like(&x_adv, tc.noise, tc.noise_sigma);
            let robust = ce(&net.forward(&noisy));
            BatchLoss::new(logits, vec![(key::LOSS_ROBUST_CE, robust)])
        }
        Method::Pgd => {
            // Madry et al.: cross-entropy at the strongest point PGD finds in the current
            // (ramped) ball; the clean logits only feed the training accuracy. With
            // `noise_sigma` > 0 the ball is around a noisy copy, clipped to the box.
            let x = &if tc.noise_sigma > 0.0 {
                (x + noise_like(x, tc.noise, tc.noise_sigma)).clamp(0.0, 1.0)
            } else {
                x.shallow_clone()
            };
            let pgd = PgdConfig {
                eps: sched.eps,
                norm: tc.norm,
                steps: tc.pgd_steps,
                step_ratio: tc.pgd_step_ratio,
                random_start: true,
                restarts: 1,
                loss: attack::AttackLoss::CrossEntropy,
            };
            let x_adv = attack::pgd(net, x, y, &pgd).x_adv;
            let logits = tch::no_grad(|| net.forward(x));
            let robust = ce(&net.forward(&x_adv));
            BatchLoss::new(logits, vec![(key::LOSS_ROBUST_CE, robust)])
        }
        Method::Ibp | Method::CrownIbp | Method::Fastlin => {
            let logits = net.forward(x);
            let ball = Ball {
                eps: sched.eps,
                norm: tc.norm,
            };
            let c = certified_training_loss(net, x, y, ball, tc, sched);
            let mut parts = vec![
                (key::LOSS_CLEAN_CE, ce(&logits) * sched.kappa),
                (key::LOSS_ROBUST_CE, c.robust * (1.0 - sched.kappa)),
            ];
            parts.extend(c.r1.map(|r| (key::LOSS_R1, r)));
            parts.extend(c.r2.map(|r| (key::LOSS_R2, r)));
            // Shi et al. (2021) on IBP's bounds (CROWN-IBP's intermediate bounds are IBP's).
            if tc.method.ibp_based() {
                parts.extend(super::shi_reg::shi_parts(net, x, ball, None, tc, sched));
            }
            BatchLoss::new(logits, parts)
        }
        Method::Sabr | Method::MtlIbp | Method::CcIbp | Method::ExpIbp => {
            super::adversarial_ibp::adversarial_ibp_loss(net, x, y, cfg, sched)
        }
        // Pauli et al. 2021 / Delattre et al. 2023: cross-entropy plus lip_weight times a
        // differentiable Lipschitz bound (the enforced version rescales after the optimiser
        // step: `LipschitzControl`).
        Method::Lipschitz => {
            let logits = net.forward(x);
            let mut parts = vec![(key::LOSS_CLEAN_CE, ce(&logits))];
            // ADMM's penalty acts in its SDP step; its W-step adds the coupling (`LipschitzControl`).
            if tc.lip_weight > 0.0 && tc.lip_bound != LipBound::Admm {
                let shapes = net.layer_shapes();
                let bound = crate::lipschitz::training_bound(net, &shapes, tc.lip_bound);
                parts.push((key::LOSS_LIPSCHITZ, bound * tc.lip_weight));
            }
            BatchLoss::new(logits, parts)
        }
    }
}

/// The certified-training terms of one batch: the robust cross-entropy and the weighted
/// tightness regularizers (`None` when off or weighted 0 at this step).
pub struct CertifiedLoss {
    pub robust: Tensor,
    pub r1: Option<Tensor>,
    pub r2: Option<Tensor>,
}

impl CertifiedLoss {
    /// `r1 + r2` as weighted, when any is on.
    pub fn regularizer(&self) -> Option<Tensor> {
        match (&self.r1, &self.r2) {
            (Some(a), Some(b)) => Some(a + b),
            (Some(a), None) | (None, Some(a)) => Some(a.shallow_clone()),
            (None, None) => None,
        }
    }
}

/// The weights of r1 and r2 at this step: warmed up by `reg_factor`; in CROWN-IBP, with
/// `reg_stage = "first"` (Zhu et al. 2020), also multiplied by beta, so that they vanish with
/// the CROWN-IBP bound and the pure-IBP stage trains without them.
pub fn regularizer_weights(tc: &TrainConfig, sched: &Schedule) -> (f64, f64) {
    let stage = match (tc.method, tc.reg_stage) {
        (Method::CrownIbp, RegStage::First) => sched.beta,
        _ => 1.0,
    };
    let f = sched.reg_factor * stage;
    (tc.r1_weight * f, tc.r2_weight * f)
}

/// The robust part of a certified-training loss: cross-entropy on `-m` where `m` is the
/// margin lower bound of the method (`m_y = 0`), plus `w1 r1` and `w2 r2` (means over the
/// batch, weights from [`regularizer_weights`]) for the linear relaxations.
///
/// IBP: `m_ibp`. CROWN-IBP: `beta m_crown_ibp + (1 - beta) m_ibp` (the CROWN part skipped once
/// beta is 0, as the reference does). Fast-Lin: exact intermediate bounds, or random projections
/// of dimension `tc.proj_dim` when that is > 0.
pub fn certified_training_loss(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    ball: Ball,
    tc: &TrainConfig,
    sched: &Schedule,
) -> CertifiedLoss {
    let ce = |m: &Tensor| robust_cross_entropy(m, y);
    let ibp = || margin_lower(net, x, y, ball, BoundMethod::Ibp);
    let relaxed = match tc.method {
        Method::CrownIbp => BoundMethod::CrownIbp.relaxed(),
        Method::Fastlin => Some(Relaxed {
            relax: Relaxation::Fastlin,
            inter: if tc.proj_dim > 0 {
                Intermediate::Projection {
                    dim: tc.proj_dim as i64,
                }
            } else {
                Intermediate::Exact
            },
        }),
        _ => None,
    };
    let Some(relaxed) = relaxed else {
        return CertifiedLoss {
            robust: ce(&ibp()),
            r1: None,
            r2: None,
        };
    };
    let (w1, w2) = regularizer_weights(tc, sched);
    let crown_ibp = tc.method == Method::CrownIbp;
    let want_reg = w1 > 0.0 || w2 > 0.0;
    let needs_relaxed = !crown_ibp || sched.beta > 0.0 || want_reg;
    let (mut r1, mut r2) = (None, None);
    let m_relaxed = if !needs_relaxed {
        None
    } else if want_reg {
        let t = tightness(net, x, y, ball, relaxed);
        let r2_terms = match tc.r2_lower {
            R2Lower::HalfLine => &t.r2,
            R2Lower::Abs => &t.r2_abs,
        };
        r1 = (w1 > 0.0).then(|| t.r1.mean(None::<Kind>) * w1);
        r2 = (w2 > 0.0).then(|| r2_terms.mean(None::<Kind>) * w2);
        Some(t.margin_lower)
    } else {
        Some(margin_lower_relaxed(net, x, y, ball, relaxed))
    };
    let m = match (crown_ibp, m_relaxed) {
        (true, Some(mc)) if sched.beta >= 1.0 => mc,
        (true, Some(mc)) => mc * sched.beta + ibp() * (1.0 - sched.beta),
        (true, None) => ibp(),
        (false, Some(mc)) => mc,
        (false, None) => unreachable!("Fast-Lin always computes its bound"),
    };
    CertifiedLoss {
        robust: ce(&m),
        r1,
        r2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attack::tests::{linear_net, vecf};
    use crate::bounds::tests::{conv, lin};
    use crate::config::Norm;
    use crate::model::LayerSpec;
    use tch::Device;

    #[test]
    fn every_training_loss_reaches_every_weight() {
        for conv_net in [false, true] {
            for (method, proj_dim, r1, r2) in [
                (Method::Ibp, 0, 0.0, 0.0),
                (Method::CrownIbp, 0, 0.0, 0.0),
                (Method::CrownIbp, 0, 0.5, 0.5),
                (Method::Fastlin, 0, 0.5, 0.5),
                (Method::Fastlin, 16, 0.0, 0.5),
            ] {
                tch::manual_seed(2);
                let (net, x) = if conv_net {
                    let specs = vec![
                        conv(1, 4, 4, 2, 1),
                        LayerSpec::Relu,
                        conv(4, 4, 3, 1, 1),
                        LayerSpec::Relu,
                        LayerSpec::Flatten,
                        lin(36, 10),
                        LayerSpec::Relu,
                        lin(10, 3),
                    ];
                    (
                        Network::new(specs, &[1, 7, 7], 3, Device::Cpu).unwrap(),
                        Tensor::rand([8, 1, 7, 7], (Kind::Float, Device::Cpu)),
                    )
                } else {
                    let specs = vec![
                        lin(5, 10),
                        LayerSpec::Relu,
                        lin(10, 10),
                        LayerSpec::Relu,
                        lin(10, 3),
                    ];
                    (
                        Network::new(specs, &[5], 3, Device::Cpu).unwrap(),
                        Tensor::rand([8, 5], (Kind::Float, Device::Cpu)),
                    )
                };
                let y = Tensor::randint(3, [8], (Kind::Int64, Device::Cpu));
                let tc = TrainConfig {
                    method,
                    proj_dim,
                    r1_weight: r1,
                    r2_weight: r2,
                    ..TrainConfig::default()
                };
                let sched = Schedule {
                    eps: 0.1,
                    beta: 0.5,
                    kappa: 0.5,
                    reg_factor: 1.0,
                };
                let c = certified_training_loss(
                    &net,
                    &x,
                    &y,
                    Ball {
                        eps: 0.1,
                        norm: Norm::Linf,
                    },
                    &tc,
                    &sched,
                );
                assert_eq!(c.regularizer().is_some(), r1 + r2 > 0.0);
                let loss = match c.regularizer() {
                    Some(r) => {
                        assert!(r.double_value(&[]) >= 0.0);
                        c.robust + r
                    }
                    None => c.robust,
                };
                loss.backward();
                for (i, p) in net.parameters().iter().enumerate() {
                    let g = p.grad();
                    assert!(
                        g.defined(),
                        "{method:?} conv={conv_net}: parameter {i} has no gradient"
                    );
                    let norm = g.norm().double_value(&[]);
                    assert!(norm.is_finite() && norm > 0.0, "{method:?} proj {proj_dim} conv={conv_net}: parameter {i} gradient norm {norm}");
                }
            }
        }
    }

    #[test]
    fn pgd_training_loss_is_the_worst_case_cross_entropy_of_a_linear_model() {
        // Two classes, label 0: CE = softplus(-margin), decreasing in the margin, so the
        // worst case over the l_inf ball is softplus(-(m(x) - eps ||w_0 - w_1||_1)) for
        // interior points. PGD-AT's loss (train::method_loss) must equal its mean.
        let w = [[0.8f32, -1.5, 0.3, 2.0], [-0.4, 0.5, -0.9, 0.1]];
        let b = [0.3f32, -0.1];
        let net = linear_net(&w, b);
        let points = [
            [0.5f32, 0.45, 0.6, 0.55],
            [0.4, 0.6, 0.5, 0.5],
            [0.55, 0.5, 0.45, 0.6],
        ];
        let flat: Vec<f32> = points.iter().flatten().copied().collect();
        let x = Tensor::from_slice(&flat).reshape([3, 4]);
        let y = Tensor::zeros([3], (Kind::Int64, Device::Cpu));
        let mut cfg = ExperimentConfig::default_experiment();
        cfg.train.method = Method::Pgd;
        cfg.train.eps = 0.1;
        cfg.train.pgd_steps = 10;
        cfg.train.pgd_step_ratio = 0.25;
        let v_l1: f64 = (0..4).map(|i| (w[0][i] - w[1][i]).abs() as f64).sum();
        let softplus = |t: f64| (1.0 + t.exp()).ln();
        for eps in [0.0, 0.05, 0.1] {
            let mut sched = super::super::schedule(&cfg, 100.0);
            sched.eps = eps;
            let BatchLoss {
                total: loss,
                logits,
                ..
            } = method_loss(&net, &x, &y, &cfg, &sched);
            let clean = vecf(&crate::attack::margins(&logits, &y));
            let want = clean
                .iter()
                .map(|m| softplus(-(m - eps * v_l1)))
                .sum::<f64>()
                / 3.0;
            let got = loss.double_value(&[]);
            assert!(
                (got - want).abs() < 1e-5,
                "eps {eps}: loss {got} vs worst case {want}"
            );
        }
    }

    /// Zhu et al. (2020) add r1/r2 to CROWN-IBP only in its first stage: at beta = 0 the loss
    /// is exactly the pure-IBP loss and no relaxed pass runs; at beta > 0 the weights are
    /// scaled by beta; with `reg_stage = "throughout"` they stay on at beta = 0.
    #[test]
    fn crown_ibp_regularizers_follow_beta_and_vanish_in_the_pure_ibp_stage() {
        use crate::bounds::tests::RELAXERS_BUILT;
        tch::manual_seed(4);
        let net = Network::new(
            vec![
                lin(5, 12),
                LayerSpec::Relu,
                lin(12, 12),
                LayerSpec::Relu,
                lin(12, 3),
            ],
            &[5],
            3,
            Device::Cpu,
        )
        .unwrap();
        let x = Tensor::rand([16, 5], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(3, [16], (Kind::Int64, Device::Cpu));
        let ball = Ball {
            eps: 0.1,
            norm: Norm::Linf,
        };
        let mut tc = TrainConfig {
            method: Method::CrownIbp,
            r1_weight: 0.5,
            r2_weight: 0.3,
            ..TrainConfig::default()
        };
        let sched = |beta: f64| Schedule {
            eps: 0.1,
            beta,
            kappa: 0.5,
            reg_factor: 1.0,
        };
        let passes = |tc: &TrainConfig, beta: f64| {
            RELAXERS_BUILT.with(|c| c.set(0));
            let c = certified_training_loss(&net, &x, &y, ball, tc, &sched(beta));
            (c, RELAXERS_BUILT.with(|c| c.get()))
        };
        let (c, built) = passes(&tc, 0.0);
        assert_eq!(built, 0, "a relaxed pass ran in the pure-IBP stage");
        assert!(c.r1.is_none() && c.r2.is_none());
        let ibp = robust_cross_entropy(&margin_lower(&net, &x, &y, ball, BoundMethod::Ibp), &y);
        assert_eq!(c.robust.double_value(&[]), ibp.double_value(&[]));
        // beta = 0.4: the weights are 0.4 times the configured ones.
        let (c, built) = passes(&tc, 0.4);
        assert!(built > 0);
        let t = tightness(&net, &x, &y, ball, BoundMethod::CrownIbp.relaxed().unwrap());
        let want_r1 = t.r1.mean(None::<Kind>).double_value(&[]) * 0.5 * 0.4;
        let want_r2 = t.r2.mean(None::<Kind>).double_value(&[]) * 0.3 * 0.4;
        let got_r1 = c.r1.unwrap().double_value(&[]);
        let got_r2 = c.r2.unwrap().double_value(&[]);
        assert!(
            (got_r1 - want_r1).abs() <= 1e-6 * (1.0 + want_r1),
            "{got_r1} vs {want_r1}"
        );
        assert!(
            (got_r2 - want_r2).abs() <= 1e-6 * (1.0 + want_r2),
            "{got_r2} vs {want_r2}"
        );
        // The earlier behaviour on request: r1/r2 on at beta = 0, with a relaxed pass for them.
        tc.reg_stage = RegStage::Throughout;
        let (c, built) = passes(&tc, 0.0);
        assert!(built > 0 && c.r1.is_some() && c.r2.is_some());
        // r2_lower = "abs" uses the paper's |z| form.
        tc.r2_lower = R2Lower::Abs;
        let (c, _) = passes(&tc, 1.0);
        let want_abs = t.r2_abs.mean(None::<Kind>).double_value(&[]) * 0.3;
        let got_abs = c.r2.unwrap().double_value(&[]);
        assert!(
            (got_abs - want_abs).abs() <= 1e-6 * (1.0 + want_abs),
            "{got_abs} vs {want_abs}"
        );
    }

    /// The parts of a batch's loss add up to the loss, each weighted as it enters it.
    #[test]
    fn loss_parts_add_up_to_the_loss() {
        tch::manual_seed(5);
        let net = Network::new(
            vec![lin(5, 10), LayerSpec::Relu, lin(10, 3)],
            &[5],
            3,
            Device::Cpu,
        )
        .unwrap();
        let x = Tensor::rand([12, 5], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(3, [12], (Kind::Int64, Device::Cpu));
        let mut cfg = ExperimentConfig::default_experiment();
        cfg.train.method = Method::CrownIbp;
        cfg.train.r1_weight = 0.2;
        cfg.train.r2_weight = 0.1;
        let sched = Schedule {
            eps: 0.05,
            beta: 0.5,
            kappa: 0.7,
            reg_factor: 1.0,
        };
        let b = method_loss(&net, &x, &y, &cfg, &sched);
        let names: Vec<&str> = b.parts.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["clean_ce", "robust_ce", "r1", "r2"]);
        let sum: f64 = b.parts.iter().map(|(_, t)| t.double_value(&[])).sum();
        let total = b.total.double_value(&[]);
        assert!(
            (sum - total).abs() <= 1e-6 * total.abs().max(1.0),
            "{sum} vs {total}"
        );
        let clean = cross_entropy(&b.logits, &y).double_value(&[]) * 0.7;
        assert!((b.parts[0].1.double_value(&[]) - clean).abs() <= 1e-6);
    }
}
