//! Sound bounds on a network's outputs over an input set (l_inf or l_2 ball clipped to the
//! data box [0, 1]).
use crate::config::Norm;
use crate::model::{Layer, Network};
use tch::{Kind, Tensor};

/// The perturbation set around each input: `{x' : ||x' - x|| <= eps, 0 <= x' <= 1}`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ball {
    pub eps: f64,
    pub norm: Norm,
}

/// Which bound to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundMethod {
    Ibp,
    CrownIbp,
    Fastlin,
    Crown,
}

impl BoundMethod {
    pub const ALL: [BoundMethod; 4] = [
        BoundMethod::Ibp,
        BoundMethod::CrownIbp,
        BoundMethod::Fastlin,
        BoundMethod::Crown,
    ];
    pub fn name(self) -> &'static str {
        match self {
            BoundMethod::Ibp => "ibp",
            BoundMethod::CrownIbp => "crown-ibp",
            BoundMethod::Fastlin => "fastlin",
            BoundMethod::Crown => "crown",
        }
    }
    pub fn parse(s: &str) -> Option<BoundMethod> {
        Self::ALL.into_iter().find(|m| m.name() == s)
    }
}

/// Interval bounds `(lower, upper)` of every layer's output, by interval propagation.
/// Entry `i` bounds the output of layer `i`; the last entry bounds the logits.
pub fn ibp_layer_bounds(net: &Network, x: &Tensor, ball: Ball) -> Vec<(Tensor, Tensor)> {
    let (mut lo, mut hi) = input_box(x, ball);
    // For the l_2 ball: the elementwise scale the layers before the first affine map apply to
    // the input (Normalize divides by std), so that map's exact l_2 radius can be computed.
    let mut l2_scale = (ball.norm == Norm::L2).then(|| x.narrow(0, 0, 1).ones_like());
    let mut out = Vec::with_capacity(net.layers.len());
    for layer in &net.layers {
        let (l, u) = match layer {
            Layer::Linear { weight, .. } | Layer::Conv2d { weight, .. } => {
                let centre = layer.forward(&((&lo + &hi) / 2.0));
                let radius = apply_linear(layer, &weight.abs(), &((&hi - &lo) / 2.0));
                let (mut l, mut u) = (&centre - &radius, &centre + &radius);
                if let Some(scale) = l2_scale.take() {
                    // Over the ball (ignoring the box): w.x' lies within w.x +- eps ||w * scale||_2.
                    // Both intervals contain the clipped ball's image: keep their intersection.
                    let mut h = x.shallow_clone();
                    for prev in net.layers.iter().take_while(|p| !std::ptr::eq(*p, layer)) {
                        h = prev.forward(&h);
                    }
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
        };
        out.push((l.shallow_clone(), u.shallow_clone()));
        lo = l;
        hi = u;
    }
    out
}

/// The box that contains the ball clipped to [0, 1].
pub fn input_box(x: &Tensor, ball: Ball) -> (Tensor, Tensor) {
    ((x - ball.eps).clamp_min(0.0), (x + ball.eps).clamp_max(1.0))
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

/// Lower bounds of the margins `z_y - z_t` for every class `t` (`[B, K]`, entry `y` is 0).
pub fn margin_lower(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    ball: Ball,
    method: BoundMethod,
) -> Tensor {
    match method {
        BoundMethod::Ibp => {
            let bounds = ibp_layer_bounds(net, x, ball);
            let (lo, hi) = &bounds[bounds.len() - 1];
            let lo_y = lo.gather(1, &y.unsqueeze(1), false);
            let m = lo_y - hi;
            m.scatter_value(1, &y.unsqueeze(1), 0.0)
        }
        _ => unimplemented!(
            "bound method {} arrives with the bounds issue",
            method.name()
        ),
    }
}

/// Whether every margin lower bound is positive (certified), per example.
pub fn certified(margins_lower: &Tensor, y: &Tensor) -> Tensor {
    let k = margins_lower.size()[1];
    // Entry y is 0 by construction; count it as positive.
    let onehot = y.one_hot(k).to_kind(Kind::Bool);
    margins_lower.gt(0.0).logical_or(&onehot).all_dim(1, false)
}

/// The robust part of a certified-training loss: cross-entropy on `-m` where `m` is the
/// margin lower bound of the method (`m_y = 0`).
pub fn certified_training_loss(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    ball: Ball,
    tc: &crate::config::TrainConfig,
    sched: &crate::train::Schedule,
) -> Tensor {
    let _ = (tc, sched);
    let m = margin_lower(net, x, y, ball, BoundMethod::Ibp);
    (-m).cross_entropy_loss::<Tensor>(y, None, tch::Reduction::Mean, -100, 0.0)
}
