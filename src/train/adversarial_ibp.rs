//! The certified-training losses that combine a PGD point with IBP: SABR (Mueller et al. 2023)
//! and the expressive losses MTL-IBP, CC-IBP and Exp-IBP (De Palma et al. 2024), with the
//! warm-up regularizers of Shi et al. (2021) when they are on.
//!
//! Each runs PGD in the current (ramped) eps ball with `pgd_steps` steps of
//! `pgd_step_ratio * eps` from a random start, as PGD training does, then one IBP pass. With
//! `m_ibp` the IBP margin lower bound over the ball, `z*` the logits at the PGD point,
//! `m_adv = z*_y - z*` its margins and `a = mtl_alpha`:
//! - SABR: `kappa CE(z) + (1 - kappa) CE(-m_small)`, `m_small` the IBP bound over the small box
//!   of radius `sabr_lambda eps` (see `sabr`); the kappa ramp of IBP training applies, as in the
//!   reference code (`kappa_start` 1, `kappa_end` 0).
//! - MTL-IBP: `(1 - a) CE(z*) + a CE(-m_ibp)`.
//! - CC-IBP: `CE(-(a m_ibp + (1 - a) m_adv))`.
//! - Exp-IBP: `CE(z*)^(1 - a) CE(-m_ibp)^a`, per example, then the batch mean (the paper's
//!   definition; the reference code takes the powers of the batch means instead).
//!
//! The expressive losses have no clean term: at `a = 0` they are PGD training's loss, at
//! `a = 1` IBP training's robust term (IBP training with `final_kappa = 0` at the end of the
//! ramp), and in between they span the two.
use super::losses::{cross_entropy, robust_cross_entropy, BatchLoss};
use super::sabr::sabr_centre;
use super::shi_reg::shi_parts;
use super::Schedule;
use crate::attack::{self, PgdConfig};
use crate::bounds::{ibp_layer_bounds, Ball};
use crate::config::{ExperimentConfig, Method};
use crate::metrics::key;
use crate::model::Network;
use tch::{Kind, Reduction, Tensor};

/// Floor of a per-example cross-entropy raised to a power below 1 in Exp-IBP: the gradient of
/// `t^a` is infinite at `t = 0`, which a confident example reaches in float32.
const EXP_IBP_FLOOR: f64 = 1e-12;

/// The PGD point of PGD training in the ball (random start, `pgd_steps` steps).
pub fn training_pgd_point(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    ball: Ball,
    steps: u32,
    ratio: f64,
) -> Tensor {
    let pgd = PgdConfig {
        eps: ball.eps,
        norm: ball.norm,
        steps,
        step_ratio: ratio,
        random_start: true,
        restarts: 1,
        loss: attack::AttackLoss::CrossEntropy,
    };
    attack::pgd(net, x, y, &pgd).x_adv
}

/// Margin lower bounds `z_y - z_t` (entry `y` is 0) from interval bounds of the logits.
fn interval_margin(lo: &Tensor, hi: &Tensor, y: &Tensor) -> Tensor {
    let lo_y = lo.gather(1, &y.unsqueeze(1), false);
    (lo_y - hi).scatter_value(1, &y.unsqueeze(1), 0.0)
}

/// The loss of one batch for `sabr`, `mtl-ibp`, `cc-ibp` and `exp-ibp`.
pub fn adversarial_ibp_loss(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    cfg: &ExperimentConfig,
    sched: &Schedule,
) -> BatchLoss {
    let tc = &cfg.train;
    let ball = Ball {
        eps: sched.eps,
        norm: tc.norm,
    };
    let x_adv = training_pgd_point(net, x, y, ball, tc.pgd_steps, tc.pgd_step_ratio);
    adversarial_ibp_loss_at(net, x, y, &x_adv, cfg, sched)
}

/// [`adversarial_ibp_loss`] with the PGD point `x_adv` given (in the ball, detached).
pub fn adversarial_ibp_loss_at(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    x_adv: &Tensor,
    cfg: &ExperimentConfig,
    sched: &Schedule,
) -> BatchLoss {
    let tc = &cfg.train;
    let ball = Ball {
        eps: sched.eps,
        norm: tc.norm,
    };
    // SABR propagates the small box around the shifted PGD point; the others the eps ball.
    let (centre, ibp_ball) = if tc.method == Method::Sabr {
        let tau = tc.sabr_lambda * sched.eps;
        let small = Ball {
            eps: tau,
            norm: tc.norm,
        };
        (sabr_centre(x, x_adv, ball, tau), small)
    } else {
        (x.shallow_clone(), ball)
    };
    let bounds = ibp_layer_bounds(net, &centre, ibp_ball);
    let (lo, hi) = &bounds[bounds.len() - 1];
    let m_ibp = interval_margin(lo, hi, y);
    let a = tc.mtl_alpha;
    let (logits, mut parts) = match tc.method {
        Method::Sabr => {
            let logits = net.forward(x);
            let clean = cross_entropy(&logits, y) * sched.kappa;
            let robust = robust_cross_entropy(&m_ibp, y) * (1.0 - sched.kappa);
            (
                logits,
                vec![(key::LOSS_CLEAN_CE, clean), (key::LOSS_ROBUST_CE, robust)],
            )
        }
        _ => {
            let logits = tch::no_grad(|| net.forward(x));
            let z_adv = net.forward(x_adv);
            (logits, expressive_parts(tc.method, &z_adv, &m_ibp, y, a))
        }
    };
    parts.extend(shi_parts(net, &centre, ibp_ball, Some(&bounds), tc, sched));
    BatchLoss::new(logits, parts)
}

/// The terms of MTL-IBP, CC-IBP or Exp-IBP with IBP weight `a`, from the logits at the PGD
/// point and the IBP margin bounds.
pub fn expressive_parts(
    method: Method,
    z_adv: &Tensor,
    m_ibp: &Tensor,
    y: &Tensor,
    a: f64,
) -> Vec<(&'static str, Tensor)> {
    match method {
        Method::MtlIbp => vec![
            (key::LOSS_ADV_CE, cross_entropy(z_adv, y) * (1.0 - a)),
            (key::LOSS_ROBUST_CE, robust_cross_entropy(m_ibp, y) * a),
        ],
        Method::CcIbp => {
            let z_adv_y = z_adv.gather(1, &y.unsqueeze(1), false);
            let m_adv = z_adv_y - z_adv;
            let mixed = m_ibp * a + m_adv * (1.0 - a);
            vec![(key::LOSS_ROBUST_CE, robust_cross_entropy(&mixed, y))]
        }
        Method::ExpIbp => {
            let per = |logits: &Tensor| {
                logits.cross_entropy_loss::<Tensor>(y, None, Reduction::None, -100, 0.0)
            };
            let (ce_adv, ce_ibp) = (per(z_adv), per(&(-m_ibp)));
            let loss = if a <= 0.0 {
                ce_adv
            } else if a >= 1.0 {
                ce_ibp
            } else {
                ce_adv.clamp_min(EXP_IBP_FLOOR).pow_tensor_scalar(1.0 - a)
                    * ce_ibp.clamp_min(EXP_IBP_FLOOR).pow_tensor_scalar(a)
            };
            vec![(key::LOSS_ROBUST_CE, loss.mean(Kind::Float))]
        }
        other => unreachable!("`{}` is not an expressive loss", other.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::losses::method_loss;
    use super::*;
    use crate::attack::tests::linear_net;
    use crate::bounds::tests::{conv, lin};
    use crate::config::{Init, Norm};
    use crate::model::LayerSpec;
    use tch::Device;

    const NEW: [Method; 4] = [Method::Sabr, Method::MtlIbp, Method::CcIbp, Method::ExpIbp];

    fn sched(eps: f64, kappa: f64) -> Schedule {
        Schedule {
            eps,
            beta: 0.0,
            kappa,
            reg_factor: 1.0,
        }
    }

    fn total(net: &Network, x: &Tensor, y: &Tensor, cfg: &ExperimentConfig, s: &Schedule) -> f64 {
        method_loss(net, x, y, cfg, s).total.double_value(&[])
    }

    /// Two classes, label 0, one linear layer: every term has a closed form at interior
    /// points. The IBP margin is `d - eps (|w_0|_1 + |w_1|_1)` (`d = z_0 - z_1`), the worst
    /// point of the ball gives `d - eps |w_0 - w_1|_1`, which PGD reaches, and
    /// `CE(m) = softplus(-m)`. MTL-IBP, CC-IBP and Exp-IBP must equal their definitions.
    #[test]
    fn expressive_losses_match_their_closed_forms_on_a_linear_model() {
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
        let l1 = |f: &dyn Fn(usize) -> f32| (0..4).map(|i| f(i).abs() as f64).sum::<f64>();
        let (w0, w1) = (l1(&|i| w[0][i]), l1(&|i| w[1][i]));
        let w01 = l1(&|i| w[0][i] - w[1][i]);
        let softplus = |t: f64| (1.0 + t.exp()).ln();
        let mut cfg = ExperimentConfig::default_experiment();
        cfg.train.eps = 0.1;
        cfg.train.pgd_steps = 10;
        cfg.train.pgd_step_ratio = 0.25;
        let eps = 0.1;
        for method in [Method::MtlIbp, Method::CcIbp, Method::ExpIbp] {
            for a in [0.0, 0.25, 0.5, 0.9, 1.0] {
                cfg.train.method = method;
                cfg.train.mtl_alpha = a;
                let want = points
                    .iter()
                    .map(|p| {
                        let z = |c: usize| {
                            (0..4).map(|i| (w[c][i] * p[i]) as f64).sum::<f64>() + b[c] as f64
                        };
                        let d = z(0) - z(1);
                        let (m_ibp, m_adv) = (d - eps * (w0 + w1), d - eps * w01);
                        let (ce_ibp, ce_adv) = (softplus(-m_ibp), softplus(-m_adv));
                        match method {
                            Method::MtlIbp => (1.0 - a) * ce_adv + a * ce_ibp,
                            Method::CcIbp => softplus(-(a * m_ibp + (1.0 - a) * m_adv)),
                            _ => ce_adv.powf(1.0 - a) * ce_ibp.powf(a),
                        }
                    })
                    .sum::<f64>()
                    / 3.0;
                let got = total(&net, &x, &y, &cfg, &sched(eps, 0.7));
                assert!(
                    (got - want).abs() < 1e-5 * (1.0 + want),
                    "{method:?} alpha {a}: {got} vs {want}"
                );
            }
        }
    }

    fn mlp() -> (Network, Tensor, Tensor) {
        tch::manual_seed(8);
        let specs = vec![
            lin(6, 24),
            LayerSpec::Relu,
            lin(24, 24),
            LayerSpec::Relu,
            lin(24, 4),
        ];
        let net = Network::new(specs, &[6], 4, Device::Cpu).unwrap();
        let x = Tensor::rand([16, 6], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(4, [16], (Kind::Int64, Device::Cpu));
        (net, x, y)
    }

    /// At alpha 0 the expressive losses are PGD training's loss at the same PGD point
    /// (`CE(z(x*))`), at alpha 1 IBP training's with kappa 0; SABR with lambda 1 is IBP
    /// training's at any kappa, whatever the PGD point.
    #[test]
    fn endpoints_are_pgd_and_ibp_training() {
        let (net, x, y) = mlp();
        let mut cfg = ExperimentConfig::default_experiment();
        cfg.train.eps = 0.1;
        for norm in [Norm::Linf, Norm::L2] {
            cfg.train.norm = norm;
            let eps = if norm == Norm::L2 { 0.5 } else { 0.1 };
            let ball = Ball { eps, norm };
            let x_adv = training_pgd_point(&net, &x, &y, ball, 10, 0.25);
            let pgd = cross_entropy(&net.forward(&x_adv), &y).double_value(&[]);
            let ibp_at = |kappa: f64| {
                let mut c = cfg.clone();
                c.train.method = Method::Ibp;
                method_loss(&net, &x, &y, &c, &sched(eps, kappa))
                    .total
                    .double_value(&[])
            };
            let at = |method: Method, cfg: &ExperimentConfig, kappa: f64| {
                let mut c = cfg.clone();
                c.train.method = method;
                adversarial_ibp_loss_at(&net, &x, &y, &x_adv, &c, &sched(eps, kappa))
                    .total
                    .double_value(&[])
            };
            let (ibp, ibp_kappa) = (ibp_at(0.0), ibp_at(0.6));
            assert!(ibp > pgd + 1e-3, "{norm:?}: IBP {ibp} vs PGD {pgd}");
            for method in [Method::MtlIbp, Method::CcIbp, Method::ExpIbp] {
                for (a, want) in [(0.0, pgd), (1.0, ibp)] {
                    cfg.train.mtl_alpha = a;
                    let got = at(method, &cfg, 0.0);
                    let what = format!("{norm:?} {method:?} alpha {a}");
                    assert!(
                        (got - want).abs() < 1e-5 * (1.0 + want),
                        "{what}: {got} vs {want}"
                    );
                }
                // In between: between the two.
                cfg.train.mtl_alpha = 0.5;
                let mid = at(method, &cfg, 0.0);
                assert!(mid > pgd - 1e-6 && mid < ibp + 1e-6, "{method:?}: {mid}");
            }
            cfg.train.sabr_lambda = 1.0;
            for (kappa, ibp) in [(0.0, ibp), (0.6, ibp_kappa)] {
                let sabr = at(Method::Sabr, &cfg, kappa);
                assert!((sabr - ibp).abs() < 1e-5 * (1.0 + ibp), "{sabr} vs {ibp}");
            }
            // A smaller box gives a smaller bound loss, still above PGD's.
            cfg.train.sabr_lambda = 0.2;
            let sabr = at(Method::Sabr, &cfg, 0.0);
            assert!(sabr < ibp && sabr > pgd - 1e-6, "{norm:?}: SABR {sabr}");
        }
    }

    /// Every new loss, with the Shi regularizers on, reaches every weight of an MLP and of a
    /// convnet with a finite, non-zero gradient, and its parts add up to it.
    #[test]
    fn new_losses_reach_every_weight_and_their_parts_add_up() {
        for conv_net in [false, true] {
            for method in NEW {
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
                    let net = Network::new(specs, &[1, 7, 7], 3, Device::Cpu).unwrap();
                    (net, Tensor::rand([8, 1, 7, 7], (Kind::Float, Device::Cpu)))
                } else {
                    let specs = vec![lin(5, 10), LayerSpec::Relu, lin(10, 3)];
                    let net = Network::new(specs, &[5], 3, Device::Cpu).unwrap();
                    (net, Tensor::rand([8, 5], (Kind::Float, Device::Cpu)))
                };
                super::super::ibp_init(&net).unwrap();
                let y = Tensor::randint(3, [8], (Kind::Int64, Device::Cpu));
                let mut cfg = ExperimentConfig::default_experiment();
                cfg.train.method = method;
                cfg.train.eps = 0.2;
                cfg.train.init = Init::Ibp;
                cfg.train.shi_reg_weight = 0.5;
                let b = method_loss(&net, &x, &y, &cfg, &sched(0.1, 0.5));
                let names: Vec<&str> = b.parts.iter().map(|p| p.0).collect();
                let head: &[&str] = match method {
                    Method::Sabr => &["clean_ce", "robust_ce"],
                    Method::MtlIbp => &["adv_ce", "robust_ce"],
                    _ => &["robust_ce"],
                };
                assert_eq!(names[..head.len()], *head, "{method:?}");
                assert_eq!(
                    names[head.len()..],
                    ["shi_tightness", "shi_relu"],
                    "{method:?}"
                );
                let sum: f64 = b.parts.iter().map(|(_, t)| t.double_value(&[])).sum();
                let total = b.total.double_value(&[]);
                assert!((sum - total).abs() <= 1e-6 * total.abs().max(1.0));
                b.total.backward();
                for (i, p) in net.parameters().iter().enumerate() {
                    let g = p.grad();
                    let norm = if g.defined() {
                        g.norm().double_value(&[])
                    } else {
                        0.0
                    };
                    assert!(
                        norm.is_finite() && norm > 0.0,
                        "{method:?} conv={conv_net}: parameter {i} gradient norm {norm}"
                    );
                }
            }
        }
    }
}
