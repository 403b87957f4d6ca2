//! Sound bounds on a network's outputs over an input set (an l_inf or l_2 ball clipped to the
//! data box [0, 1]): interval bound propagation (IBP), the backward linear relaxations Fast-Lin
//! and CROWN with IBP, exact or randomly projected intermediate bounds, and the tightness
//! statistics and regularizers r1 / r2 of Zhu et al. 2020.
//!
//! Everything here is plain tch arithmetic on the layer list of [`Network`], batched over
//! examples, on the network's device, and differentiable: the bounds are training losses.
//!
//! The backward pass keeps, for each example and each specification row, a linear function of
//! one layer's output, `lambda . h + offset`, and walks it back to the input, replacing each
//! ReLU by one of its two relaxation lines (DESIGN.md, "Backward linear relaxation").
//!
//! One file per idea: `input` (the input set and linear functions over it), `ibp` (interval
//! propagation), `relax` (the ReLU lines and the backward pass), `intermediate` (pre-activation
//! bounds by IBP or by exact backward passes), `patches` (those exact passes for a
//! convolution's neurons, one input window per neuron), `projection` (pre-activation bounds estimated
//! from random projections), `tightness` (r1 / r2 and their statistics), `memory` (splitting
//! batches to fit) and `ops` (small tensor helpers). This file holds the shared types and the
//! public entry points.
mod alpha;
mod certify;
mod domains;
mod ibp;
mod input;
mod intermediate;
mod memory;
mod ops;
mod optimum;
mod patches;
mod projection;
mod relax;
mod tightness;

pub use self::alpha::AlphaSettings;
pub use self::certify::{certify, certify_with, Certification, RECHECK_REL};
pub use self::domains::{bound_domains, DomainBounds};
pub use self::ibp::apply_linear;
pub use self::input::input_box;
pub use self::memory::training_bytes;
pub use self::optimum::relaxed_optimum;
pub use self::tightness::{gap_stats, tightness, Tightness};
pub use crate::config::BoundMethod;

use self::ibp::ibp_bounds;
use self::memory::chunked;
use self::relax::Relaxer;
use crate::config::Norm;
use crate::model::{Layer, Network};
use tch::{Kind, Tensor};

/// The perturbation set around each input: `{x' : ||x' - x|| <= eps, 0 <= x' <= 1}`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ball {
    pub eps: f64,
    pub norm: Norm,
}

// `BoundMethod` is a closed list the user writes (config); what each one computes is here.
impl BoundMethod {
    /// The linear relaxation behind the method; `None` for IBP.
    pub fn relaxed(self) -> Option<Relaxed> {
        match self {
            BoundMethod::Ibp => None,
            BoundMethod::CrownIbp => Some(Relaxed {
                relax: Relaxation::Crown,
                inter: Intermediate::Ibp,
            }),
            BoundMethod::Fastlin => Some(Relaxed {
                relax: Relaxation::Fastlin,
                inter: Intermediate::Exact,
            }),
            // alpha-CROWN starts from CROWN (and its memory is CROWN's, times the slopes).
            BoundMethod::Crown | BoundMethod::AlphaCrown => Some(Relaxed {
                relax: Relaxation::Crown,
                inter: Intermediate::Exact,
            }),
        }
    }
}

/// The lower line of an unstable ReLU (`l < 0 < u`); the upper line is always the chord
/// `a <= s (z - l)`, `s = u / (u - l)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relaxation {
    /// `a >= s z`: the same slope as the upper line (Fast-Lin, Wong & Kolter).
    Fastlin,
    /// `a >= z` when `u >= -l`, else `a >= 0` (CROWN's adaptive choice).
    Crown,
}

/// How the pre-activation bounds of the hidden ReLUs are obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intermediate {
    /// Interval propagation (cheap, loose).
    Ibp,
    /// A backward pass of the same relaxation for every neuron, layer by layer (tight, costly).
    Exact,
    /// Fast-Lin bounds whose l1 terms are estimated from `dim` Cauchy random projections with
    /// the median estimator (Wong et al. 2018). An estimate, not a guarantee: for training only.
    Projection { dim: i64 },
}

/// A linear relaxation and its intermediate bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relaxed {
    pub relax: Relaxation,
    pub inter: Intermediate,
}

/// Interval bounds `(lower, upper)` of every layer's output, by interval propagation.
/// Entry `i` bounds the output of layer `i`; the last entry bounds the logits.
pub fn ibp_layer_bounds(net: &Network, x: &Tensor, ball: Ball) -> Vec<(Tensor, Tensor)> {
    ibp_bounds(&walked(net), x, ball)
}

/// Whether the bound code handles every layer of the network: Linear, Conv2d, ReLU, Flatten
/// and Normalize. The 1-Lipschitz layers (SLL, CPL, AOL, spectral) are refused: such networks
/// are certified with the l_2 Lipschitz certificate (`cert_acc` key `lipschitz`).
pub fn check_supported(net: &Network) -> Result<(), String> {
    match net.layers.iter().position(|l| l.is_one_lipschitz()) {
        None => Ok(()),
        Some(i) => Err(format!(
            "IBP/CROWN bounds do not support layer {i} (`{}`): 1-Lipschitz networks are certified with the l_2 Lipschitz certificate (`lipschitz`)",
            net.layers[i].kind_name()
        )),
    }
}

/// The layers as the passes walk them: each layer as it is, a diagonal-circulant layer as the
/// `Linear` layer of its explicit matrix ([`Layer::as_dense`], differentiable). One entry per
/// layer, so indices match `net.layers`.
pub(crate) fn walked(net: &Network) -> Vec<Layer> {
    net.layers
        .iter()
        .map(|l| {
            l.as_dense()
                .unwrap_or_else(|| l.map_tensors(&|t| t.shallow_clone()))
        })
        .collect()
}

/// Panics on a layer the passes cannot walk ([`check_supported`] tells beforehand).
fn unsupported(layer: &Layer) -> ! {
    panic!(
        "IBP/CROWN bounds do not support `{}` layers: 1-Lipschitz networks are certified with the l_2 Lipschitz certificate (`lipschitz`)",
        layer.kind_name()
    )
}

/// Lower bounds of the margins `z_y - z_t` for every class `t` (`[B, K]`, entry `y` is 0).
pub fn margin_lower(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    ball: Ball,
    method: BoundMethod,
) -> Tensor {
    margin_lower_with(net, x, y, ball, method, AlphaSettings::default())
}

/// [`margin_lower`] with the optimiser settings of alpha-CROWN (ignored by other methods).
pub fn margin_lower_with(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    ball: Ball,
    method: BoundMethod,
    alpha: AlphaSettings,
) -> Tensor {
    margin_lower_of(&walked(net), net.num_classes, x, y, ball, method, alpha)
}

/// [`margin_lower`] of a list of layers (e.g. double-precision copies) with `classes` outputs.
pub(crate) fn margin_lower_of(
    layers: &[Layer],
    classes: i64,
    x: &Tensor,
    y: &Tensor,
    ball: Ball,
    method: BoundMethod,
    alpha: AlphaSettings,
) -> Tensor {
    match (method, method.relaxed()) {
        (_, None) => ibp_margin(layers, x, y, ball),
        (BoundMethod::AlphaCrown, Some(relaxed)) => {
            let mut run = |start: i64, len: i64| {
                let (xb, yb) = (x.narrow(0, start, len), y.narrow(0, start, len));
                let spec = margin_spec(&yb, classes, x.kind());
                let m = alpha::alpha_lower(layers, &xb, ball, &spec, None, alpha).lower;
                vec![m.scatter_value(1, &yb.unsqueeze(1), 0.0)]
            };
            chunked(layers, x, Some(relaxed), &mut run).remove(0)
        }
        (_, Some(relaxed)) => relaxed_margin_of(layers, classes, x, y, ball, relaxed),
    }
}

fn ibp_margin(layers: &[Layer], x: &Tensor, y: &Tensor, ball: Ball) -> Tensor {
    let bounds = ibp_bounds(layers, x, ball);
    let (lo, hi) = &bounds[bounds.len() - 1];
    let lo_y = lo.gather(1, &y.unsqueeze(1), false);
    let m = lo_y - hi;
    m.scatter_value(1, &y.unsqueeze(1), 0.0)
}

/// [`margin_lower`] for a linear relaxation with any intermediate bounds.
pub fn margin_lower_relaxed(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    ball: Ball,
    relaxed: Relaxed,
) -> Tensor {
    relaxed_margin_of(&walked(net), net.num_classes, x, y, ball, relaxed)
}

fn relaxed_margin_of(
    layers: &[Layer],
    classes: i64,
    x: &Tensor,
    y: &Tensor,
    ball: Ball,
    relaxed: Relaxed,
) -> Tensor {
    let mut run = |start: i64, len: i64| {
        let (xb, yb) = (x.narrow(0, start, len), y.narrow(0, start, len));
        let r = Relaxer::new(layers, &xb, ball, relaxed);
        let spec = margin_spec(&yb, classes, x.kind());
        let m = r.lower_bound(layers.len(), spec);
        // Row y is zero: its bound is exactly 0 (no rounding noise).
        vec![m.scatter_value(1, &yb.unsqueeze(1), 0.0)]
    };
    chunked(layers, x, Some(relaxed), &mut run).remove(0)
}

/// Lower and upper bounds of every logit, `[B, K]` each.
pub fn logit_bounds(
    net: &Network,
    x: &Tensor,
    ball: Ball,
    method: BoundMethod,
) -> (Tensor, Tensor) {
    let Some(relaxed) = method.relaxed() else {
        let bounds = ibp_bounds(&walked(net), x, ball);
        let (lo, hi) = &bounds[bounds.len() - 1];
        return (lo.shallow_clone(), hi.shallow_clone());
    };
    let k = net.num_classes;
    let layers = walked(net);
    let mut run = |start: i64, len: i64| {
        let xb = x.narrow(0, start, len);
        let eye = Tensor::eye(k, (x.kind(), x.device()));
        let spec = Tensor::cat(&[&eye, &eye.neg()], 0).unsqueeze(0);
        let lower = if method == BoundMethod::AlphaCrown {
            let settings = AlphaSettings::default();
            alpha::alpha_lower(&layers, &xb, ball, &spec, None, settings).lower
        } else {
            let r = Relaxer::new(&layers, &xb, ball, relaxed);
            r.lower_bound(layers.len(), spec)
        };
        vec![lower.narrow(1, 0, k), lower.narrow(1, k, k).neg()]
    };
    let mut parts = chunked(&layers, x, Some(relaxed), &mut run);
    let hi = parts.remove(1);
    (parts.remove(0), hi)
}

/// Pre-activation bounds `(l, u)` of every ReLU layer, in layer order, as used by `relaxed`
/// (`None`: IBP). Each is `[B, ..]`.
pub fn relu_bounds(
    net: &Network,
    x: &Tensor,
    ball: Ball,
    relaxed: Option<Relaxed>,
) -> Vec<(Tensor, Tensor)> {
    match relaxed {
        None => {
            let ibp = ibp_bounds(&walked(net), x, ball);
            (1..net.layers.len())
                .filter(|&i| matches!(net.layers[i], Layer::Relu))
                .map(|i| (ibp[i - 1].0.shallow_clone(), ibp[i - 1].1.shallow_clone()))
                .collect()
        }
        Some(relaxed) => {
            let layers = walked(net);
            let r = Relaxer::new(&layers, x, ball, relaxed);
            r.lines
                .iter()
                .flatten()
                .map(|lines| (lines.l.squeeze_dim(1), lines.u.squeeze_dim(1)))
                .collect()
        }
    }
}

/// The smallest margin lower bound over the other classes, per example (`[B]`; the label's
/// own entry is ignored): positive exactly when the point is certified.
pub fn worst_margin(margins_lower: &Tensor, y: &Tensor) -> Tensor {
    margins_lower
        .scatter_value(1, &y.unsqueeze(1), f64::INFINITY)
        .amin([1], false)
}

/// Whether every margin lower bound is positive (certified), per example.
pub fn certified(margins_lower: &Tensor, y: &Tensor) -> Tensor {
    let k = margins_lower.size()[1];
    // Entry y is 0 by construction; count it as positive.
    let onehot = y.one_hot(k).to_kind(Kind::Bool);
    margins_lower.gt(0.0).logical_or(&onehot).all_dim(1, false)
}

/// The rows `e_y - e_t` of the margin specification, `[B, K, K]` (row `y` is zero).
fn margin_spec(y: &Tensor, k: i64, kind: Kind) -> Tensor {
    let eye = Tensor::eye(k, (kind, y.device()));
    let own = eye.index_select(0, y).unsqueeze(1);
    own - eye.unsqueeze(0)
}

#[cfg(test)]
pub(crate) mod tests;
