//! Memory: the floats a backward pass needs per example, the bytes a certified-training step
//! keeps, and the splitting of big batches into slices that fit.
use super::ops::numel;
use super::patches;
use super::walked;
use super::{Intermediate, Relaxed};
use crate::linalg::batch_ranges;
use crate::model::{layer_shapes, Layer, Network};
use tch::Tensor;

/// Rough number of floats a backward pass over one example needs, to split big batches.
fn floats_per_example(layers: &[Layer], shapes: &[Vec<i64>], relaxed: Option<Relaxed>) -> i64 {
    let widest = shapes.iter().map(|s| numel(s)).max().unwrap_or(1);
    match relaxed.map(|r| r.inter) {
        Some(Intermediate::Exact) => (1..layers.len())
            .filter(|&i| matches!(layers[i], Layer::Relu))
            .map(|i| {
                if patches::applies(layers, i) {
                    patches::floats(layers, shapes, i)
                } else {
                    2 * numel(&shapes[i]) * shapes[..i].iter().map(|s| numel(s)).max().unwrap_or(1)
                }
            })
            .max()
            .unwrap_or(1)
            .max(widest),
        _ => 16 * widest,
    }
}

/// Rough bytes a certified-training step with `relaxed` bounds keeps for its backward pass
/// (every chunk's graph lives until the backward): about five float tensors of
/// [`floats_per_example`] per example, measured on the Small convnet with exact bounds.
pub fn training_bytes(net: &Network, batch: i64, relaxed: Relaxed) -> u64 {
    let shapes = net.layer_shapes();
    let per = floats_per_example(&walked(net), &shapes, Some(relaxed)) as u64;
    5 * 4 * per * batch.max(1) as u64
}

/// Runs `f` on slices of the batch small enough for the backward passes, and concatenates.
pub(super) fn chunked(
    layers: &[Layer],
    x: &Tensor,
    relaxed: Option<Relaxed>,
    f: &mut dyn FnMut(i64, i64) -> Vec<Tensor>,
) -> Vec<Tensor> {
    const BUDGET_FLOATS: i64 = 1 << 26;
    let b = x.size()[0];
    let shapes = layer_shapes(layers, x);
    let per = floats_per_example(layers, &shapes, relaxed).max(1);
    let chunk = (BUDGET_FLOATS / per).clamp(1, b.max(1));
    if chunk >= b {
        return f(0, b);
    }
    let parts: Vec<Vec<Tensor>> = batch_ranges(b, chunk)
        .map(|(start, len)| f(start, len))
        .collect();
    (0..parts[0].len())
        .map(|j| Tensor::cat(&parts.iter().map(|p| &p[j]).collect::<Vec<_>>(), 0))
        .collect()
}
