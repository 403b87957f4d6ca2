//! Certificates that survive rounding. A margin bound is computed in the network's precision
//! (float32); its rounding error grows with the magnitude of the values the computation passes
//! through, not with the result, so a small positive float32 bound can hide a negative true
//! one. A point counts as certified only when its float32 bound is positive and, if that bound
//! is within [`RECHECK_REL`] of the largest pre-activation magnitude on the ball, when the same
//! bound recomputed in float64 is positive too.
//!
//! Why this threshold: a float32 dot product of `n` terms errs by at most `n u sum |w_i h_i|`
//! (`u = 2^-24`); with `n` up to a few thousand and row l1 norms of order 10, that is below
//! `1e-3 max |h|`. Float64's own error is nine orders of magnitude smaller and is not resolved.
use super::ibp::ibp_bounds;
use super::walked;
use super::{certified, margin_lower_of, worst_margin, AlphaSettings, Ball, BoundMethod};
use crate::model::{layers_f64, Network};
use tch::{Kind, Tensor};

/// A float32 bound below this fraction of the largest pre-activation magnitude is recomputed
/// in float64 before the point counts as certified.
pub const RECHECK_REL: f64 = 1e-3;

/// Margin lower bounds of `method` and which points they certify, rounding-safe.
pub struct Certification {
    /// `[B, K]`, in the network's precision (`m_y = 0`).
    pub margin_lower: Tensor,
    /// `[B]` bool: every margin bound positive, in float64 where float32 was borderline.
    pub certified: Tensor,
    /// How many points needed the float64 recomputation.
    pub rechecked: i64,
}

pub fn certify(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    ball: Ball,
    method: BoundMethod,
) -> Certification {
    certify_with(net, x, y, ball, method, AlphaSettings::default())
}

/// [`certify`] with the optimiser settings of alpha-CROWN.
pub fn certify_with(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    ball: Ball,
    method: BoundMethod,
    alpha: AlphaSettings,
) -> Certification {
    tch::no_grad(|| {
        let lower = margin_lower_of(&walked(net), net.num_classes, x, y, ball, method, alpha);
        let cert = certified(&lower, y);
        if lower.kind() == Kind::Double {
            return Certification {
                margin_lower: lower,
                certified: cert,
                rechecked: 0,
            };
        }
        let worst = worst_margin(&lower, y).to_kind(Kind::Double);
        let scale = largest_magnitude(net, x, ball);
        let borderline = cert.logical_and(&worst.le_tensor(&(scale * RECHECK_REL + RECHECK_REL)));
        let idx = borderline.nonzero().reshape([-1]);
        let rechecked = idx.size()[0];
        if rechecked == 0 {
            return Certification {
                margin_lower: lower,
                certified: cert,
                rechecked,
            };
        }
        let layers = layers_f64(&walked(net));
        let xb = x.index_select(0, &idx).to_kind(Kind::Double);
        let yb = y.index_select(0, &idx);
        let exact = margin_lower_of(&layers, net.num_classes, &xb, &yb, ball, method, alpha);
        let ok = certified(&exact, &yb);
        let cert = cert.index_put(&[Some(idx)], &ok, false);
        Certification {
            margin_lower: lower,
            certified: cert,
            rechecked,
        }
    })
}

/// Per example, the largest magnitude of any interval bound of any layer on the ball (input
/// included), in float64.
fn largest_magnitude(net: &Network, x: &Tensor, ball: Ball) -> Tensor {
    let mut m = x
        .abs()
        .flatten(1, -1)
        .amax([1], false)
        .to_kind(Kind::Double)
        + ball.eps;
    for (lo, hi) in ibp_bounds(&walked(net), x, ball) {
        let layer_max = lo.abs().maximum(&hi.abs()).flatten(1, -1).amax([1], false);
        m = m.maximum(&layer_max.to_kind(Kind::Double));
    }
    m
}
