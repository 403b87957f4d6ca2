//! The empirical range of every neuron's pre-activation over the input set of one point: the
//! smallest and largest value found by sampling the ball (uniform points and, for l_inf, its
//! vertices; for l_2, its sphere) and by projected gradient ascent / descent on each neuron,
//! batched over neurons (one copy of the input per neuron and direction).
//!
//! Every point visited lies in the ball and the data box (attack::project), so the range is an
//! inner bound of the true range: any sound bound must contain it. The bound microscope draws
//! it against the intervals of each method (their looseness is the ratio of the widths).
use super::inspect::Interval;
use crate::attack;
use crate::bounds::Ball;
use crate::config::Norm;
use crate::linalg::batch_ranges;
use crate::model::{layer_shapes, Network};
use std::sync::atomic::{AtomicBool, Ordering};
use tch::{Kind, Tensor};

/// How hard to look for the extremes of each neuron.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Search {
    /// Random points of the ball (half on its boundary: vertices for l_inf, sphere for l_2).
    pub samples: i64,
    /// Projected gradient steps per neuron and direction (0: sampling only).
    pub steps: u32,
    /// Starts per neuron: the first at the clean input, the others at random points.
    pub restarts: u32,
}

/// Floats of one batched neuron search (copies times the widest layer): bounds the memory of
/// a chunk of neurons.
const CHUNK_FLOATS: i64 = 1 << 23;

/// `[S, ..input]` random points of the ball around `x` (`[1, ..input]`), in the data box; the
/// clean point is the first.
fn sample_ball(x: &Tensor, ball: Ball, samples: i64) -> Tensor {
    let s = samples.max(1);
    let mut shape = x.size();
    shape[0] = s;
    let opts = (x.kind(), x.device());
    let half = s / 2;
    let delta = match ball.norm {
        Norm::Linf => {
            let inner = Tensor::rand(shape.as_slice(), opts) * 2.0 - 1.0;
            let vertex = inner.sign();
            let on_edge = Tensor::arange(s, opts).lt(half as f64);
            let mut view = vec![s];
            view.extend(std::iter::repeat_n(1, x.dim() - 1));
            vertex.where_self(&on_edge.reshape(view.as_slice()), &inner) * ball.eps
        }
        Norm::L2 => {
            let g = Tensor::randn(shape.as_slice(), opts);
            let flat = g.flatten(1, -1);
            let dim = flat.size()[1] as f64;
            let norms = flat.norm_scalaropt_dim(2.0, [1], true).clamp_min(1e-12);
            let u = Tensor::rand([s, 1], opts).pow_tensor_scalar(1.0 / dim);
            let on_edge = Tensor::arange(s, opts).lt(half as f64).unsqueeze(1);
            let radius = u.ones_like().where_self(&on_edge, &u) * ball.eps;
            (flat / norms * radius).reshape(shape.as_slice())
        }
    };
    let pts = attack::project(
        &(x + delta),
        &x.expand(shape.as_slice(), false),
        ball.eps,
        ball.norm,
    );
    Tensor::cat(&[x, &pts.narrow(0, 0, s - 1)], 0)
}

/// Outputs of the layers `outputs` (flattened, `[B, N_i]`) for a batch of inputs.
fn layer_outputs(net: &Network, x: &Tensor, outputs: &[usize]) -> Vec<Tensor> {
    let mut h = x.shallow_clone();
    let mut out = Vec::with_capacity(outputs.len());
    let last = outputs.iter().copied().max().unwrap_or(0);
    for (i, layer) in net.layers.iter().enumerate().take(last + 1) {
        h = layer.forward(&h);
        if outputs.contains(&i) {
            out.push(h.flatten(1, -1));
        }
    }
    out
}

/// The empirical range of every neuron of the layers `outputs` (their outputs, flattened), at
/// the point `x` (`[1, ..input]`). `None` when `cancel` was raised.
pub fn empirical_ranges(
    net: &Network,
    x: &Tensor,
    ball: Ball,
    outputs: &[usize],
    search: Search,
    cancel: &AtomicBool,
) -> Option<Vec<Interval>> {
    let pts = sample_ball(x, ball, search.samples);
    let sampled = tch::no_grad(|| layer_outputs(net, &pts, outputs));
    let mut ranges = Vec::with_capacity(outputs.len());
    for (&layer, z) in outputs.iter().zip(&sampled) {
        let (mut lo, mut hi) = (z.amin([0], false), z.amax([0], false));
        if search.steps > 0 && ball.eps > 0.0 {
            let (l, h) = neuron_search(net, x, ball, layer, search, cancel)?;
            lo = lo.minimum(&l);
            hi = hi.maximum(&h);
        }
        if cancel.load(Ordering::Relaxed) {
            return None;
        }
        ranges.push(Interval::from_tensors(&lo, &hi));
    }
    Some(ranges)
}

/// Projected gradient descent and ascent on each neuron of layer `layer`'s output, in chunks
/// of neurons: `[N]` smallest and largest values seen over every iterate.
fn neuron_search(
    net: &Network,
    x: &Tensor,
    ball: Ball,
    layer: usize,
    search: Search,
    cancel: &AtomicBool,
) -> Option<(Tensor, Tensor)> {
    let n = tch::no_grad(|| layer_outputs(net, x, &[layer]))[0].size()[1];
    let per_copy: i64 = layer_shapes(&net.layers, x)
        .iter()
        .map(|s| s.iter().product::<i64>())
        .max()
        .unwrap_or(1);
    let chunk = (CHUNK_FLOATS / (2 * per_copy)).clamp(1, n);
    let (mut lows, mut highs) = (Vec::new(), Vec::new());
    for (start, len) in batch_ranges(n, chunk) {
        let (lo, hi) = search_chunk(net, x, ball, layer, start, len, search, cancel)?;
        lows.push(lo);
        highs.push(hi);
    }
    Some((Tensor::cat(&lows, 0), Tensor::cat(&highs, 0)))
}

/// [`neuron_search`] for the neurons `start..start + len`: `2 len` copies of `x`, the first
/// half ascending their neuron, the second half descending it.
#[allow(clippy::too_many_arguments)]
fn search_chunk(
    net: &Network,
    x: &Tensor,
    ball: Ball,
    layer: usize,
    start: i64,
    len: i64,
    search: Search,
    cancel: &AtomicBool,
) -> Option<(Tensor, Tensor)> {
    let opts = (x.kind(), x.device());
    let neurons = Tensor::arange_start(start, start + len, (Kind::Int64, x.device()));
    let idx = Tensor::cat(&[&neurons, &neurons], 0).unsqueeze(1);
    let sign = Tensor::cat(&[Tensor::ones([len], opts), -Tensor::ones([len], opts)], 0);
    let mut shape = x.size();
    shape[0] = 2 * len;
    let x0 = x.expand(shape.as_slice(), false).contiguous();
    let step = 2.5 * ball.eps / search.steps.max(1) as f64;
    // Best signed value (sign * z) seen per copy.
    let mut best = Tensor::full([2 * len], f64::NEG_INFINITY, opts);
    for restart in 0..search.restarts.max(1) {
        let mut xa = if restart == 0 {
            x0.shallow_clone()
        } else {
            sample_ball(x, ball, 2 * len + 1).narrow(0, 1, 2 * len)
        };
        for it in 0..=search.steps {
            if cancel.load(Ordering::Relaxed) {
                return None;
            }
            let xg = xa.detach().set_requires_grad(true);
            let z = layer_outputs(net, &xg, &[layer]).remove(0);
            let signed = z.gather(1, &idx, false).squeeze_dim(1) * &sign;
            best = best.maximum(&signed.detach());
            if it == search.steps {
                break;
            }
            let mut grads =
                Tensor::run_backward(&[signed.sum(signed.kind())], &[&xg], false, false);
            let g = grads.pop().unwrap_or_else(|| xg.zeros_like());
            xa = tch::no_grad(|| {
                let dir = match ball.norm {
                    Norm::Linf => g.sign(),
                    Norm::L2 => {
                        let flat = g.flatten(1, -1);
                        let norms = flat.norm_scalaropt_dim(2.0, [1], true).clamp_min(1e-12);
                        (flat / norms).reshape(g.size().as_slice())
                    }
                };
                attack::project(&(&xa + dir * step), &x0, ball.eps, ball.norm)
            });
        }
    }
    let hi = best.narrow(0, 0, len);
    let lo = -best.narrow(0, len, len);
    Some((lo, hi))
}
