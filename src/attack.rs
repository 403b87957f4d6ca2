//! Attacks: FGSM and PGD for l_inf and l_2, always inside the ball and the data box [0, 1].
//!
//! Every iterate is projected first onto the ball around the clean input, then onto the box
//! (the order of torchattacks' `pgd.py`). Because the clean input lies in the box, clipping to
//! the box only moves each coordinate towards it, so the result stays in the ball as well.
//! [`pgd`] keeps, per example, the lowest-margin point it has seen over all steps and restarts
//! (the clean input included), so an example counts as robust only if no iterate broke it.
//!
//! In test builds (and when [`set_iterate_checks`] or `CERTLAB_CHECK_ATTACKS=1` turns it on)
//! every iterate is checked to lie in the ball and the box; a violation panics.
use crate::config::Norm;
use crate::model::Network;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use tch::{Kind, Reduction, Tensor};

/// The objective an attack maximises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttackLoss {
    /// Cross-entropy of the true label (Madry et al.).
    #[default]
    CrossEntropy,
    /// Minus the margin `z_y - max_{t != y} z_t` (Carlini-Wagner style).
    Margin,
}

impl AttackLoss {
    pub const ALL: [AttackLoss; 2] = [AttackLoss::CrossEntropy, AttackLoss::Margin];
    pub fn name(self) -> &'static str {
        match self {
            AttackLoss::CrossEntropy => "ce",
            AttackLoss::Margin => "margin",
        }
    }
    pub fn parse(s: &str) -> Option<AttackLoss> {
        Self::ALL.into_iter().find(|l| l.name() == s)
    }
}

/// PGD settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PgdConfig {
    pub eps: f64,
    pub norm: Norm,
    pub steps: u32,
    /// Step size as a multiple of eps.
    pub step_ratio: f64,
    /// Start the first restart at a uniform random point of the ball (later restarts always
    /// start at random; without it the first one starts at the clean input).
    pub random_start: bool,
    /// Independent runs of `steps` steps; the best point over all of them is kept.
    pub restarts: u32,
    pub loss: AttackLoss,
}

impl PgdConfig {
    /// The evaluation attack: step size `2.5 eps / steps` (Madry et al.), the first restart
    /// from the clean input, the others from random points.
    pub fn evaluation(eps: f64, norm: Norm, steps: u32, restarts: u32, loss: AttackLoss) -> Self {
        PgdConfig {
            eps,
            norm,
            steps,
            step_ratio: 2.5 / steps.max(1) as f64,
            random_start: false,
            restarts: restarts.max(1),
            loss,
        }
    }
}

/// The result of an attack on a batch.
#[derive(Debug)]
pub struct PgdResult {
    /// Per example, the lowest-margin point found (detached, in the ball and the box).
    pub x_adv: Tensor,
    /// The margin `z_y - max_{t != y} z_t` at `x_adv` (`[B]`); negative means misclassified.
    pub margin: Tensor,
}

static ITERATE_CHECKS: AtomicBool = AtomicBool::new(false);

/// Turns the per-iterate ball/box assertions on or off for this process (always on in the
/// library's unit tests).
pub fn set_iterate_checks(on: bool) {
    ITERATE_CHECKS.store(on, Ordering::Relaxed);
}

fn iterate_checks_on() -> bool {
    static FROM_ENV: OnceLock<bool> = OnceLock::new();
    cfg!(test)
        || ITERATE_CHECKS.load(Ordering::Relaxed)
        || *FROM_ENV.get_or_init(|| std::env::var("CERTLAB_CHECK_ATTACKS").is_ok_and(|v| v == "1"))
}

/// How far `x_adv` may leave the ball (relative to eps, plus an absolute floor) before it is
/// counted as outside: float rounding of `x + delta - x`.
const BALL_TOL_REL: f64 = 1e-5;
const BALL_TOL_ABS: f64 = 1e-6;

/// Why `x_adv` is not in the ball of radius eps around `x` intersected with [0, 1], or `None`.
pub fn feasibility_violation(x_adv: &Tensor, x: &Tensor, eps: f64, norm: Norm) -> Option<String> {
    tch::no_grad(|| {
        let lo = x_adv.min().double_value(&[]);
        let hi = x_adv.max().double_value(&[]);
        if !(lo >= 0.0 && hi <= 1.0) {
            return Some(format!(
                "an iterate left the box [0, 1]: values span [{lo}, {hi}]"
            ));
        }
        let delta = (x_adv - x).flatten(1, -1);
        let dist = match norm {
            Norm::Linf => delta.abs().max().double_value(&[]),
            Norm::L2 => delta
                .to_kind(Kind::Double)
                .norm_scalaropt_dim(2.0, [1], false)
                .max()
                .double_value(&[]),
        };
        let tol = BALL_TOL_ABS + BALL_TOL_REL * eps;
        (!(dist <= eps + tol)).then(|| {
            format!(
                "an iterate left the ball: {} distance {dist} > eps {eps} (+{tol:.1e})",
                norm.name()
            )
        })
    })
}

fn check_iterate(x_adv: &Tensor, x: &Tensor, eps: f64, norm: Norm) {
    if iterate_checks_on() {
        if let Some(why) = feasibility_violation(x_adv, x, eps, norm) {
            panic!("attack invariant broken: {why}");
        }
    }
}

/// Shape `[-1, 1, .., 1]` that broadcasts a per-example value over an input batch.
fn per_example_shape(x: &Tensor) -> Vec<i64> {
    std::iter::once(-1)
        .chain(std::iter::repeat_n(1, x.dim().saturating_sub(1)))
        .collect()
}

fn l2_norms(t: &Tensor) -> Tensor {
    t.flatten(1, -1)
        .norm_scalaropt_dim(2.0, [1], false)
        .reshape(per_example_shape(t))
}

/// Projects `x_adv` onto the ball of radius eps around `x`, then onto the box [0, 1].
pub fn project(x_adv: &Tensor, x: &Tensor, eps: f64, norm: Norm) -> Tensor {
    let delta = x_adv - x;
    let delta = match norm {
        Norm::Linf => delta.clamp(-eps, eps),
        Norm::L2 => {
            let factor = (eps / l2_norms(&delta).clamp_min(1e-12)).clamp_max(1.0);
            delta * factor
        }
    };
    (x + delta).clamp(0.0, 1.0)
}

/// A uniform random point of the ball around `x`, projected onto the box.
fn random_point(x: &Tensor, eps: f64, norm: Norm) -> Tensor {
    let delta = match norm {
        Norm::Linf => (x.rand_like() * 2.0 - 1.0) * eps,
        Norm::L2 => {
            // Uniform in the ball: a uniform direction and a radius eps * u^(1/d).
            let g = x.randn_like();
            let dim = (x.numel() as i64 / x.size()[0].max(1)) as f64;
            let mut shape = per_example_shape(x);
            shape[0] = x.size()[0];
            let radius =
                Tensor::rand(&shape, (x.kind(), x.device())).pow_tensor_scalar(1.0 / dim) * eps;
            &g / l2_norms(&g).clamp_min(1e-12) * radius
        }
    };
    project(&(x + delta), x, eps, norm)
}

/// The margins `z_y - max_{t != y} z_t` of a batch of logits (`[B]`).
pub fn margins(logits: &Tensor, y: &Tensor) -> Tensor {
    let idx = y.unsqueeze(1);
    let z_y = logits.gather(1, &idx, false).squeeze_dim(1);
    let others = logits.scatter_value(1, &idx, f64::NEG_INFINITY);
    z_y - others.amax([1], false)
}

/// The summed attack objective of a batch (sum, so each example's gradient is its own).
fn attack_objective(logits: &Tensor, y: &Tensor, loss: AttackLoss) -> Tensor {
    match loss {
        AttackLoss::CrossEntropy => {
            logits.cross_entropy_loss::<Tensor>(y, None, Reduction::Sum, -100, 0.0)
        }
        AttackLoss::Margin => -margins(logits, y).sum(Kind::Float),
    }
}

/// The steepest-ascent direction of unit norm for a gradient: `sign(g)` (l_inf) or
/// `g / ||g||_2` (l_2).
fn ascent_direction(g: &Tensor, norm: Norm) -> Tensor {
    match norm {
        Norm::Linf => g.sign(),
        Norm::L2 => g / l2_norms(g).clamp_min(1e-12),
    }
}

/// The gradient of the attack objective at `x` and the (detached) logits there.
fn objective_gradient(net: &Network, x: &Tensor, y: &Tensor, loss: AttackLoss) -> (Tensor, Tensor) {
    let xa = x.detach().set_requires_grad(true);
    let logits = net.forward(&xa);
    let objective = attack_objective(&logits, y, loss);
    // Gradients with respect to the input only: nothing accumulates in the parameters.
    let mut grads = Tensor::run_backward(&[objective], &[&xa], false, false);
    let g = grads.pop().unwrap_or_else(|| xa.zeros_like());
    (g, logits.detach())
}

/// Fast gradient (sign) method: one step of length eps from `x`, projected onto the box.
pub fn fgsm(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    eps: f64,
    norm: Norm,
    loss: AttackLoss,
) -> Tensor {
    let x = x.detach();
    if eps == 0.0 {
        return x;
    }
    let (g, _) = objective_gradient(net, &x, y, loss);
    let x_adv = project(&(&x + ascent_direction(&g, norm) * eps), &x, eps, norm);
    check_iterate(&x_adv, &x, eps, norm);
    x_adv.detach()
}

/// Replaces, per example, the kept point by `candidate` where its margin is lower.
fn keep_lower(best_x: &mut Tensor, best_margin: &mut Tensor, candidate: &Tensor, margin: &Tensor) {
    let better = margin.lt_tensor(&*best_margin);
    *best_margin = margin.where_self(&better, &*best_margin);
    *best_x = candidate.where_self(&better.reshape(per_example_shape(candidate)), &*best_x);
}

/// Projected gradient ascent of the attack objective inside the ball and the box, with
/// restarts. Returns, per example, the point of lowest margin seen (the clean input, every
/// iterate of every restart, and the final iterates), detached.
pub fn pgd(net: &Network, x: &Tensor, y: &Tensor, cfg: &PgdConfig) -> PgdResult {
    let x = x.detach();
    let mut best_x = x.shallow_clone();
    let mut best_margin = tch::no_grad(|| margins(&net.forward(&x), y));
    if cfg.eps == 0.0 || cfg.steps == 0 {
        return PgdResult {
            x_adv: best_x,
            margin: best_margin,
        };
    }
    let step = cfg.eps * cfg.step_ratio;
    for restart in 0..cfg.restarts.max(1) {
        let mut x_adv = if cfg.random_start || restart > 0 {
            random_point(&x, cfg.eps, cfg.norm)
        } else {
            x.shallow_clone()
        };
        check_iterate(&x_adv, &x, cfg.eps, cfg.norm);
        for _ in 0..cfg.steps {
            let (g, logits) = objective_gradient(net, &x_adv, y, cfg.loss);
            tch::no_grad(|| {
                keep_lower(&mut best_x, &mut best_margin, &x_adv, &margins(&logits, y));
                x_adv = project(
                    &(&x_adv + ascent_direction(&g, cfg.norm) * step),
                    &x,
                    cfg.eps,
                    cfg.norm,
                );
            });
            #[cfg(test)]
            if let Some(offset) = tests::INJECT_AFTER_PROJECTION.with(|c| c.get()) {
                x_adv = x_adv + offset;
            }
            check_iterate(&x_adv, &x, cfg.eps, cfg.norm);
        }
        tch::no_grad(|| {
            let m = margins(&net.forward(&x_adv), y);
            keep_lower(&mut best_x, &mut best_margin, &x_adv, &m);
        });
    }
    PgdResult {
        x_adv: best_x,
        margin: best_margin,
    }
}

/// Whether the network classifies each input correctly (`[B]` bool).
pub fn correct(net: &Network, x: &Tensor, y: &Tensor) -> Tensor {
    net.forward(x)
        .argmax(1, false)
        .eq_tensor(y)
        .to_kind(Kind::Bool)
}

#[cfg(test)]
pub(crate) mod tests {
    thread_local! {
        /// Test hook: a perturbation added to every iterate after its projection, to prove that
        /// the iterate checks fire.
        pub(super) static INJECT_AFTER_PROJECTION: std::cell::Cell<Option<f64>> = const { std::cell::Cell::new(None) };
    }

    use super::*;
    use crate::config::ModelConfig;
    use crate::model::LayerSpec;
    use tch::Device;

    pub(crate) fn vecf(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(t.to_kind(Kind::Double).reshape([-1])).unwrap()
    }

    /// A network with a single Linear layer `d -> 2`, weights set by hand.
    /// A network of one linear layer `x -> w x + b` (4 inputs, 2 classes).
    pub(crate) fn linear_net(w: &[[f32; 4]; 2], b: [f32; 2]) -> Network {
        let net = Network::new(
            vec![LayerSpec::Linear {
                in_features: 4,
                out_features: 2,
            }],
            &[4],
            2,
            Device::Cpu,
        )
        .unwrap();
        let crate::model::Layer::Linear { weight, bias } = &net.layers[0] else {
            unreachable!()
        };
        let flat: Vec<f32> = w.iter().flatten().copied().collect();
        tch::no_grad(|| {
            weight
                .shallow_clone()
                .copy_(&Tensor::from_slice(&flat).reshape([2, 4]));
            bias.shallow_clone().copy_(&Tensor::from_slice(&b));
        });
        net
    }

    fn mlp(input: i64, hidden: Vec<i64>, classes: i64, seed: i64) -> Network {
        tch::manual_seed(seed);
        let cfg = ModelConfig {
            hidden,
            ..ModelConfig::default()
        };
        Network::from_config(&cfg, &[input], classes, None, Device::Cpu).unwrap()
    }

    /// Exact minimum over `{x' : ||x' - x|| <= eps, x' in [0,1]^d}` of the margin
    /// `v.x' + c` of a two-class linear model with label 0 (`v = w_0 - w_1`), computed
    /// independently of the attack: l_inf is separable (each coordinate goes to
    /// `clip(x_i - eps sign(v_i))`); for l_2 the points are kept away from the box so the
    /// unconstrained optimum `x - eps v / ||v||` is feasible (asserted).
    fn exact_min_margin(x: &[f64], v: &[f64], c: f64, eps: f64, norm: Norm) -> f64 {
        match norm {
            Norm::Linf => {
                x.iter()
                    .zip(v)
                    .map(|(&xi, &vi)| vi * (xi - eps * vi.signum()).clamp(0.0, 1.0))
                    .sum::<f64>()
                    + c
            }
            Norm::L2 => {
                let nv = v.iter().map(|a| a * a).sum::<f64>().sqrt();
                let opt: Vec<f64> = x
                    .iter()
                    .zip(v)
                    .map(|(&xi, &vi)| xi - eps * vi / nv)
                    .collect();
                assert!(
                    opt.iter().all(|o| (0.0..=1.0).contains(o)),
                    "box must be inactive"
                );
                opt.iter().zip(v).map(|(o, vi)| o * vi).sum::<f64>() + c
            }
        }
    }

    #[test]
    fn pgd_reaches_the_exact_minimum_margin_of_a_linear_model() {
        let w = [[0.8f32, -1.5, 0.3, 2.0], [-0.4, 0.5, -0.9, 0.1]];
        let b = [0.3f32, -0.1];
        let net = linear_net(&w, b);
        let v: Vec<f64> = (0..4).map(|i| (w[0][i] - w[1][i]) as f64).collect();
        let c = (b[0] - b[1]) as f64;
        // Interior points for l_2; the l_inf set also has points on and near the box edges,
        // where the box constraint is active.
        let interior = [
            [0.5f32, 0.45, 0.6, 0.55],
            [0.4, 0.6, 0.5, 0.5],
            [0.55, 0.5, 0.45, 0.6],
        ];
        let edges = [
            [0.0f32, 1.0, 0.02, 0.97],
            [1.0, 0.0, 1.0, 0.0],
            [0.3, 0.05, 0.99, 0.5],
        ];
        for (norm, eps, points) in [
            (Norm::Linf, 0.1, [interior, edges].concat()),
            (Norm::L2, 0.15, interior.to_vec()),
        ] {
            let flat: Vec<f32> = points.iter().flatten().copied().collect();
            let x = Tensor::from_slice(&flat).reshape([points.len() as i64, 4]);
            let y = Tensor::zeros([points.len() as i64], (Kind::Int64, Device::Cpu));
            for loss in AttackLoss::ALL {
                for random_start in [false, true] {
                    let cfg = PgdConfig {
                        eps,
                        norm,
                        steps: 40,
                        step_ratio: 0.5,
                        random_start,
                        restarts: 1,
                        loss,
                    };
                    let res = pgd(&net, &x, &y, &cfg);
                    let got = vecf(&res.margin);
                    // The reported margin is the network's margin at the returned point.
                    let at_point = vecf(&margins(&net.forward(&res.x_adv), &y));
                    for (i, p) in points.iter().enumerate() {
                        let xi: Vec<f64> = p.iter().map(|&a| a as f64).collect();
                        let want = exact_min_margin(&xi, &v, c, eps, norm);
                        assert!(
                            (got[i] - want).abs() < 1e-4,
                            "{norm:?} {loss:?} random_start={random_start} point {i}: pgd margin {} vs exact {want}",
                            got[i]
                        );
                        assert!((at_point[i] - got[i]).abs() < 1e-6);
                    }
                }
            }
        }
    }

    #[test]
    fn iterates_stay_in_ball_and_box_on_every_step() {
        // Points on the box faces and a huge step: projection has work to do every step.
        let net = mlp(6, vec![16, 16], 3, 3);
        let x = Tensor::rand([32, 6], (Kind::Float, Device::Cpu)).round() * 0.9
            + Tensor::rand([32, 6], (Kind::Float, Device::Cpu)) * 0.1;
        let x = x.clamp(0.0, 1.0);
        let y = Tensor::randint(3, [32], (Kind::Int64, Device::Cpu));
        for norm in [Norm::Linf, Norm::L2] {
            for loss in AttackLoss::ALL {
                let cfg = PgdConfig {
                    eps: 0.3,
                    norm,
                    steps: 15,
                    step_ratio: 2.0,
                    random_start: true,
                    restarts: 3,
                    loss,
                };
                // Every iterate is asserted inside `pgd` (unit tests build with the checks on);
                // here the returned points are checked again, independently.
                let res = pgd(&net, &x, &y, &cfg);
                let d = (&res.x_adv - &x).flatten(1, -1);
                let dist = match norm {
                    Norm::Linf => vecf(&d.abs().amax([1], false)),
                    Norm::L2 => vecf(
                        &d.to_kind(Kind::Double)
                            .square()
                            .sum_dim_intlist(&[1i64][..], false, Kind::Double)
                            .sqrt(),
                    ),
                };
                assert!(dist.iter().all(|&r| r <= 0.3 + 1e-5), "{norm:?}: {dist:?}");
                let v = vecf(&res.x_adv);
                assert!(v.iter().all(|a| (0.0..=1.0).contains(a)));
            }
        }
    }

    fn run_with_injected_offset(offset: f64, eps: f64, norm: Norm) {
        let net = mlp(4, vec![8], 2, 1);
        let x = Tensor::full([4, 4], 0.5, (Kind::Float, Device::Cpu));
        let y = Tensor::zeros([4], (Kind::Int64, Device::Cpu));
        INJECT_AFTER_PROJECTION.with(|c| c.set(Some(offset)));
        let cfg = PgdConfig::evaluation(eps, norm, 3, 1, AttackLoss::CrossEntropy);
        let _ = pgd(&net, &x, &y, &cfg);
    }

    #[test]
    #[should_panic(expected = "left the ball")]
    fn iterate_check_is_active_ball() {
        // An iterate pushed 0.05 outside an l_inf ball of radius 0.1 (still inside the box).
        run_with_injected_offset(0.15, 0.1, Norm::Linf);
    }

    #[test]
    #[should_panic(expected = "left the box")]
    fn iterate_check_is_active_box() {
        run_with_injected_offset(0.6, 0.1, Norm::L2);
    }

    #[test]
    fn feasibility_check_matches_a_direct_computation() {
        let x = Tensor::from_slice(&[0.5f32, 0.5, 0.5, 0.5]).reshape([1, 4]);
        let inside = Tensor::from_slice(&[0.6f32, 0.4, 0.5, 0.5]).reshape([1, 4]);
        // l_2 distance sqrt(0.02) = 0.1414: inside radius 0.15, outside 0.14; l_inf 0.1.
        assert!(feasibility_violation(&inside, &x, 0.15, Norm::L2).is_none());
        assert!(feasibility_violation(&inside, &x, 0.14, Norm::L2).is_some());
        assert!(feasibility_violation(&inside, &x, 0.1, Norm::Linf).is_none());
        assert!(feasibility_violation(&inside, &x, 0.099, Norm::Linf).is_some());
        let outside_box = Tensor::from_slice(&[1.01f32, 0.5, 0.5, 0.5]).reshape([1, 4]);
        assert!(feasibility_violation(&outside_box, &x, 1.0, Norm::Linf)
            .is_some_and(|m| m.contains("box")));
    }

    #[test]
    fn projection_is_the_exact_projection_for_linf_and_radial_for_l2() {
        let x = Tensor::from_slice(&[0.5f32, 0.95, 0.05]).reshape([1, 3]);
        let far = Tensor::from_slice(&[0.9f32, 1.3, -0.3]).reshape([1, 3]);
        // l_inf: clip(x + clip(far - x, -eps, eps), 0, 1), by hand.
        let p = vecf(&project(&far, &x, 0.1, Norm::Linf));
        for (a, b) in p.iter().zip([0.6, 1.0, 0.0]) {
            assert!((a - b).abs() < 1e-6, "{p:?}");
        }
        // l_2: delta (0.4, 0.35, -0.35) has norm 0.6344; scaled to 0.2, then clipped.
        let p = vecf(&project(&far, &x, 0.2, Norm::L2));
        let n = (0.4f64 * 0.4 + 2.0 * 0.35 * 0.35).sqrt();
        let want = [
            0.5 + 0.4 * 0.2 / n,
            (0.95 + 0.35 * 0.2 / n).min(1.0),
            (0.05 - 0.35 * 0.2 / n).max(0.0),
        ];
        for (a, b) in p.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{p:?} vs {want:?}");
        }
    }

    #[test]
    fn one_step_pgd_from_the_clean_point_is_fgsm() {
        let net = mlp(5, vec![12], 3, 7);
        let x = Tensor::rand([40, 5], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(3, [40], (Kind::Int64, Device::Cpu));
        for norm in [Norm::Linf, Norm::L2] {
            let x_fgsm = fgsm(&net, &x, &y, 0.2, norm, AttackLoss::CrossEntropy);
            let m_fgsm = vecf(&margins(&net.forward(&x_fgsm), &y));
            let m_clean = vecf(&margins(&net.forward(&x), &y));
            let cfg = PgdConfig {
                eps: 0.2,
                norm,
                steps: 1,
                step_ratio: 1.0,
                random_start: false,
                restarts: 1,
                loss: AttackLoss::CrossEntropy,
            };
            let m_pgd = vecf(&pgd(&net, &x, &y, &cfg).margin);
            for i in 0..40 {
                let want = m_clean[i].min(m_fgsm[i]);
                assert!(
                    (m_pgd[i] - want).abs() < 1e-6,
                    "{norm:?} {i}: {} vs {want}",
                    m_pgd[i]
                );
            }
        }
    }

    #[test]
    fn pgd_keeps_the_lowest_margin_over_all_iterates() {
        // A plain re-implementation of l_inf PGD (clip to the ball, then to the box) that
        // records every iterate's margin; a large step makes the iterates oscillate, so the
        // last one is often not the worst.
        let net = mlp(6, vec![24, 24], 3, 9);
        let x0 = Tensor::rand([64, 6], (Kind::Float, Device::Cpu));
        let y = tch::no_grad(|| net.forward(&x0).argmax(1, false));
        let (eps, steps, step) = (0.15, 8, 0.3);
        let margin_at = |x: &Tensor| vecf(&tch::no_grad(|| margins(&net.forward(x), &y)));
        let mut lowest = margin_at(&x0);
        let mut x = x0.shallow_clone();
        for _ in 0..steps {
            let xa = x.detach().set_requires_grad(true);
            let loss =
                net.forward(&xa)
                    .cross_entropy_loss::<Tensor>(&y, None, Reduction::Sum, -100, 0.0);
            let g = Tensor::run_backward(&[loss], &[&xa], false, false)
                .pop()
                .unwrap();
            let moved = x.detach() + g.sign() * step;
            x = moved
                .minimum(&(&x0 + eps))
                .maximum(&(&x0 - eps))
                .clamp(0.0, 1.0);
            for (l, m) in lowest.iter_mut().zip(margin_at(&x)) {
                *l = l.min(m);
            }
        }
        let last = margin_at(&x);
        let cfg = PgdConfig {
            eps,
            norm: Norm::Linf,
            steps,
            step_ratio: step / eps,
            random_start: false,
            restarts: 1,
            loss: AttackLoss::CrossEntropy,
        };
        let got = vecf(&pgd(&net, &x0, &y, &cfg).margin);
        for i in 0..64 {
            assert!(
                (got[i] - lowest[i]).abs() < 1e-5,
                "point {i}: {} vs {}",
                got[i],
                lowest[i]
            );
        }
        let earlier = (0..64).filter(|&i| last[i] > lowest[i] + 1e-4).count();
        assert!(
            earlier > 0,
            "the test needs points whose worst iterate is not the last"
        );
    }

    #[test]
    fn margins_match_a_loop() {
        let logits = Tensor::from_slice(&[1.0f32, 3.0, 2.0, -1.0, 0.5, 0.2]).reshape([2, 3]);
        let y = Tensor::from_slice(&[2i64, 0]);
        assert_eq!(vecf(&margins(&logits, &y)), vec![2.0 - 3.0, -1.0 - 0.5]);
    }

    #[test]
    fn eps_zero_returns_the_clean_input() {
        let net = mlp(3, vec![5], 2, 2);
        let x = Tensor::rand([6, 3], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(2, [6], (Kind::Int64, Device::Cpu));
        let cfg = PgdConfig {
            random_start: true,
            ..PgdConfig::evaluation(0.0, Norm::Linf, 10, 3, AttackLoss::Margin)
        };
        let res = pgd(&net, &x, &y, &cfg);
        assert_eq!(vecf(&(&res.x_adv - &x).abs().max()), vec![0.0]);
    }
}
