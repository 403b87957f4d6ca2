//! Where a linear relaxation's margin bound is attained: for each margin row `t`, the input
//! `x*_t` of the set that minimises the relaxed (linear) lower bound (l_inf: the box corner
//! `x - eps sign(Lambda_t)` clipped to [0, 1]; l_2: `x - eps Lambda_t / ||Lambda_t||`, then
//! clipped). Passing it through the real network shows where each ReLU's pre-activation sits
//! against the lines the relaxation chose (the r2 term of Zhu et al. 2020), one point at a time.
use super::relax::Relaxer;
use super::{margin_spec, Ball, Relaxed};
use crate::model::Network;
use tch::Tensor;

/// The relaxed optimum of every margin row, `[B, K, ..input]` (row `y`'s is meaningless: that
/// row is zero).
pub fn relaxed_optimum(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    ball: Ball,
    relaxed: Relaxed,
) -> Tensor {
    let layers = super::walked(net);
    let r = Relaxer::new(&layers, x, ball, relaxed);
    let spec = margin_spec(y, net.num_classes, x.kind());
    let (_, argmin, _) = r.lower_bound_traced(layers.len(), spec);
    argmin
}
