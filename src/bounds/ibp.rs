//! Interval bound propagation: the box `[lo, hi]` around the input set pushed through every
//! layer, each affine map by its centre and `|W|` times its radius; for the l_2 ball the first
//! affine map's exact l_2 radius tightens the box.
use super::{input_box, unsupported, Ball};
use crate::config::Norm;
use crate::model::Layer;
use tch::Tensor;

/// Interval bounds `(lower, upper)` of every layer's output (see [`super::ibp_layer_bounds`]).
pub(super) fn ibp_bounds(layers: &[Layer], x: &Tensor, ball: Ball) -> Vec<(Tensor, Tensor)> {
    let (mut lo, mut hi) = input_box(x, ball);
    // For the l_2 ball: the elementwise scale the layers before the first affine map apply to
    // the input (Normalize divides by std), so that map's exact l_2 radius can be computed.
    let mut l2_scale = (ball.norm == Norm::L2).then(|| x.narrow(0, 0, 1).ones_like());
    let mut h = x.shallow_clone();
    let mut out = Vec::with_capacity(layers.len());
    for layer in layers {
        let (l, u) = match layer {
            Layer::Linear { weight, .. } | Layer::Conv2d { weight, .. } => {
                let centre = layer.forward(&((&lo + &hi) / 2.0));
                let radius = apply_linear(layer, &weight.abs(), &((&hi - &lo) / 2.0));
                let (mut l, mut u) = (&centre - &radius, &centre + &radius);
                if let Some(scale) = l2_scale.take() {
                    // Over the ball (ignoring the box): w.x' lies within w.x +- eps ||w * scale||_2.
                    // Both intervals contain the clipped ball's image: keep their intersection.
                    let centre2 = layer.forward(&h);
                    let radius2 =
                        apply_linear(layer, &weight.square(), &scale.square()).sqrt() * ball.eps;
                    l = l.maximum(&(&centre2 - &radius2));
                    u = u.minimum(&(&centre2 + &radius2));
                }
                (l, u)
            }
            Layer::Relu => (lo.relu(), hi.relu()),
            Layer::Flatten => {
                if let Some(s) = &mut l2_scale {
                    *s = s.flatten(1, -1);
                }
                (lo.flatten(1, -1), hi.flatten(1, -1))
            }
            Layer::Normalize { mean, std } => {
                if let Some(s) = &mut l2_scale {
                    *s = &*s / std;
                }
                ((&lo - mean) / std, (&hi - mean) / std)
            }
            l => unsupported(l),
        };
        if l2_scale.is_some() {
            h = layer.forward(&h);
        }
        out.push((l.shallow_clone(), u.shallow_clone()));
        lo = l;
        hi = u;
    }
    out
}

/// The linear part of a Linear or Conv2d layer, with weight `w` in place of the layer's own
/// (no bias): `x w^T` or `conv(x, w)`.
pub fn apply_linear(layer: &Layer, w: &Tensor, x: &Tensor) -> Tensor {
    match layer {
        Layer::Linear { .. } => x.matmul(&w.tr()),
        Layer::Conv2d {
            stride, padding, ..
        } => x.conv2d(w, None::<Tensor>, [*stride; 2], [*padding; 2], [1; 2], 1),
        _ => unreachable!("apply_linear is only called on Linear and Conv2d"),
    }
}
