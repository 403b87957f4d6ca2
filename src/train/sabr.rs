//! SABR's small box (Mueller et al. 2023, "Certified training: small boxes are all you need").
//!
//! PGD finds a point `x*` of the eps ball; IBP is run on a box of radius `tau = lambda eps`
//! whose centre is `x*` moved just enough for the box to lie inside the eps ball, itself
//! clipped to the data domain [0, 1]. The cross-entropy on that box's margin bound is a loss
//! between PGD training's (lambda -> 0) and IBP training's (lambda = 1).
use crate::attack;
use crate::bounds::Ball;
use crate::config::Norm;
use tch::Tensor;

/// The centre `c` of SABR's small box for inputs `x`, PGD points `x_adv` (in the ball `ball`
/// around `x`, clipped to [0, 1]) and radius `tau <= ball.eps`. The small set is then
/// `B(c, tau)` clipped to [0, 1] (`Ball { eps: tau, .. }` around `c`); it contains `x_adv` and
/// lies inside `B(x, eps)` clipped to [0, 1].
///
/// l_inf: per coordinate, with `[lo, hi] = [x - eps, x + eps]` clipped to [0, 1], `c` is `x*`
/// clamped into `[lo + tau, hi - tau]`, so the box keeps its full width `2 tau` where the
/// clipped box is that wide (as the reference code shifts it). Where it is narrower, one side
/// is clipped by the data domain, and `c` is put `tau` inside the other side, so that the box
/// clipped to [0, 1] is exactly `[lo, hi]` (the reference code always takes `hi - tau`, which
/// leaves the eps box when only the upper side is clipped).
///
/// l_2: `c = x + P(x* - x)` with `P` the projection onto the ball of radius `eps - tau`,
/// then clipped to [0, 1] (a projection onto a convex set holding `x` and `x*`, so it moves
/// `c` towards both): `||c - x|| + tau <= eps` and `||x* - c|| <= tau`.
pub fn sabr_centre(x: &Tensor, x_adv: &Tensor, ball: Ball, tau: f64) -> Tensor {
    let shrunk = (ball.eps - tau).max(0.0);
    match ball.norm {
        Norm::L2 => attack::project(x_adv, x, shrunk, Norm::L2),
        Norm::Linf => {
            let lo = (x - ball.eps).clamp_min(0.0);
            let hi = (x + ball.eps).clamp_max(1.0);
            let (inner_lo, inner_hi) = (&lo + tau, &hi - tau);
            let shifted = x_adv.maximum(&inner_lo).minimum(&inner_hi);
            // Narrower than 2 tau: anchor at the unclipped side (the lower one when lo > 0).
            let narrow = inner_lo.gt_tensor(&inner_hi);
            let anchor = inner_hi.where_self(&lo.le(0.0), &inner_lo);
            anchor.where_self(&narrow, &shifted)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounds::input_box;
    use tch::{Device, Kind};

    fn max(t: &Tensor) -> f64 {
        t.max().double_value(&[])
    }

    /// Inputs at and near the data boundary (0, 0.02, 0.98, 1) and inside, PGD-like points
    /// anywhere in the clipped eps box, radii wide and narrow against the clipped box.
    fn cases() -> Vec<(Tensor, Tensor, f64)> {
        let mut out = Vec::new();
        for (k, eps) in [0.05, 0.1, 0.3, 0.7].into_iter().enumerate() {
            tch::manual_seed(k as i64);
            let mut x = Tensor::rand([64, 12], (Kind::Double, Device::Cpu));
            let edges = Tensor::from_slice(&[0.0f64, 0.02, 0.98, 1.0]).repeat([64, 1]);
            x = Tensor::cat(&[x, edges], 1);
            let (lo, hi) = input_box(
                &x,
                Ball {
                    eps,
                    norm: Norm::Linf,
                },
            );
            // Corners and interior points of the clipped box.
            let u = Tensor::rand_like(&x);
            let corners = u.gt(0.5).to_kind(Kind::Double);
            let interior = &lo + (&hi - &lo) * Tensor::rand_like(&x);
            let x_adv = (&lo + (&hi - &lo) * &corners).where_self(&u.gt(0.25), &interior);
            out.push((x, x_adv, eps));
        }
        out
    }

    #[test]
    fn linf_small_box_is_inside_the_eps_box_and_contains_the_pgd_point() {
        for (x, x_adv, eps) in cases() {
            let ball = Ball {
                eps,
                norm: Norm::Linf,
            };
            let (lo, hi) = input_box(&x, ball);
            for lambda in [0.05, 0.1, 0.4, 0.7, 1.0] {
                let tau = lambda * eps;
                let c = sabr_centre(&x, &x_adv, ball, tau);
                let small = Ball {
                    eps: tau,
                    norm: Norm::Linf,
                };
                let (s_lo, s_hi) = input_box(&c, small);
                let what = format!("eps {eps}, lambda {lambda}");
                assert!(max(&(&lo - &s_lo)) <= 1e-12, "{what}: below the eps box");
                assert!(max(&(&s_hi - &hi)) <= 1e-12, "{what}: above the eps box");
                assert!(
                    max(&(&s_lo - &x_adv)) <= 1e-12,
                    "{what}: misses the PGD point"
                );
                assert!(
                    max(&(&x_adv - &s_hi)) <= 1e-12,
                    "{what}: misses the PGD point"
                );
                // Full width 2 tau wherever the clipped eps box is that wide.
                let wide = (&hi - &lo).ge(2.0 * tau + 1e-9);
                let width = (&s_hi - &s_lo - 2.0 * tau).abs() * wide.to_kind(Kind::Double);
                assert!(max(&width) <= 1e-9, "{what}: the small box shrank");
                if lambda == 1.0 {
                    // The whole clipped eps box: SABR at lambda 1 is IBP.
                    assert!(max(&(&s_lo - &lo).abs()) <= 1e-12, "{what}");
                    assert!(max(&(&s_hi - &hi).abs()) <= 1e-12, "{what}");
                }
            }
        }
    }

    #[test]
    fn l2_small_ball_is_inside_the_eps_ball_and_contains_the_pgd_point() {
        let norm = |t: &Tensor| t.norm_scalaropt_dim(2.0, [1], false);
        for (x, _, eps) in cases() {
            let ball = Ball {
                eps,
                norm: Norm::L2,
            };
            // PGD-like points of the l_2 ball: on its sphere or inside, clipped to [0, 1].
            let dir = Tensor::randn_like(&x);
            let dir = &dir / norm(&dir).unsqueeze(1);
            let r = Tensor::rand([x.size()[0], 1], (Kind::Double, Device::Cpu)).clamp_min(0.6);
            let x_adv = (&x + dir * r * eps).clamp(0.0, 1.0);
            for lambda in [0.1, 0.5, 1.0] {
                let tau = lambda * eps;
                let c = sabr_centre(&x, &x_adv, ball, tau);
                let inside = max(&(norm(&(&c - &x)) + tau - eps));
                assert!(inside <= 1e-12, "eps {eps}, lambda {lambda}: {inside}");
                let reach = max(&(norm(&(&x_adv - &c)) - tau));
                assert!(reach <= 1e-12, "eps {eps}, lambda {lambda}: {reach}");
                assert!(max(&c) <= 1.0 && c.min().double_value(&[]) >= 0.0);
            }
        }
    }
}
