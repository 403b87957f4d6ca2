//! Small tensor helpers the bound passes share: sizes, sums over the trailing dimensions of
//! `[B, S, ..]` tensors (one entry per example and specification row) and selection.
use tch::{Kind, Tensor};

/// Number of elements of a tensor of this shape.
pub(super) fn numel(shape: &[i64]) -> i64 {
    shape.iter().product()
}

/// Sums every dimension after the first two (`[B, S, ...] -> [B, S]`).
pub(super) fn sum_rest(t: &Tensor) -> Tensor {
    if t.dim() <= 2 {
        return t.shallow_clone();
    }
    t.flatten(2, -1)
        .sum_dim_intlist([2i64].as_slice(), false, None::<Kind>)
}

/// `sum_rest(a * v)` for `a` `[B or 1, S, ..]` and `v` `[B or 1, 1, ..]`, as a batched
/// matrix product (no `[B, S, ..]` temporary).
pub(super) fn dot_rest(a: &Tensor, v: &Tensor) -> Tensor {
    let (ba, s) = (a.size()[0], a.size()[1]);
    let bv = v.size()[0];
    let b = ba.max(bv);
    let a = a.flatten(2, -1).expand([b, s, -1], false);
    let v = v.flatten(2, -1).expand([b, 1, -1], false);
    a.matmul(&v.transpose(1, 2)).squeeze_dim(2)
}

/// `a` where `cond`, else `b` (broadcasting).
pub(super) fn select(cond: &Tensor, a: &Tensor, b: &Tensor) -> Tensor {
    a.where_self(cond, b)
}
