//! Pre-activation bounds of the hidden ReLUs from interval propagation, or exact: a backward
//! pass of the same relaxation for every neuron that IBP leaves unstable, layer by layer, each
//! pass using the lines already found for the ReLUs before it.
use super::input::input_range;
use super::ops::numel;
use super::relax::{Relaxer, ReluLines};
use super::{Intermediate, Relaxation, Relaxed};
use crate::model::Layer;
use tch::{Kind, Tensor};

impl Relaxer<'_> {
    /// The lines of every ReLU from the interval bounds `ibp` (`relaxed.inter` Ibp) or from
    /// exact bounds intersected with them (Exact).
    /// With `priors`, known bounds of a ReLU's input are intersected with the interval ones
    /// before its exact pass and with the result after it.
    pub(super) fn intermediate_lines(
        &mut self,
        ibp: &[(Tensor, Tensor)],
        relaxed: Relaxed,
        priors: Option<&[Option<(Tensor, Tensor)>]>,
    ) {
        let layers = self.layers;
        for i in 0..layers.len() {
            if !matches!(layers[i], Layer::Relu) || i == 0 {
                continue;
            }
            let (il, iu) = match priors.and_then(|p| p[i].as_ref()) {
                Some((pl, pu)) => (ibp[i - 1].0.maximum(pl), ibp[i - 1].1.minimum(pu)),
                None => (ibp[i - 1].0.shallow_clone(), ibp[i - 1].1.shallow_clone()),
            };
            let (il, iu) = (&il, &iu);
            let relu_before = layers[..i].iter().any(|l| matches!(l, Layer::Relu));
            let (l, u) = if relaxed.inter == Intermediate::Ibp || !relu_before {
                // Before the first ReLU the network is affine and IBP is exact for
                // a single affine map on a box (and the l_2 radius is exact too).
                (il.shallow_clone(), iu.shallow_clone())
            } else {
                let (l, u) = self.exact_bounds(i, il, iu);
                // Both are sound: keep the intersection.
                (l.maximum(il), u.minimum(iu))
            };
            self.lines[i] = Some(ReluLines::new(&l, &u, relaxed.relax));
        }
    }

    /// Lower and upper bounds of the output of layer `i - 1` (the input of ReLU `i`), by a
    /// backward pass of the identity and its negation.
    ///
    /// Only the neurons that the interval bounds `(il, iu)` leave unstable get a backward pass
    /// (auto_LiRPA's sparse intermediate bounds): the others are stable already, and their
    /// interval bounds are kept. The rows are chosen per example: each example's unstable
    /// neurons first, padded to the batch's largest count with other neurons (whose bounds are
    /// sound too, and intersected with the interval ones by the caller), when that is at least
    /// a quarter fewer rows than the batch's union. On a trained network, where most neurons
    /// are stable for each example but not the same ones, that saves most of the work.
    fn exact_bounds(&self, i: usize, il: &Tensor, iu: &Tensor) -> (Tensor, Tensor) {
        let shape = &self.shapes[i];
        let b = self.batch();
        let (il, iu) = (il.flatten(1, -1), iu.flatten(1, -1));
        let unstable = il.lt(0.0).logical_and(&iu.gt(0.0));
        let union = unstable.any_dim(0, false).nonzero().squeeze_dim(1);
        let u = union.size()[0];
        let mut out = vec![b];
        out.extend_from_slice(shape);
        if u == 0 {
            return (il.reshape(out.as_slice()), iu.reshape(out.as_slice()));
        }
        if self.patches_apply(i) {
            let r = self.patch_bounds_at(i, &il, &iu, &unstable, None);
            return (r.0.reshape(out.as_slice()), r.1.reshape(out.as_slice()));
        }
        let most = unstable
            .sum_dim_intlist([1i64].as_slice(), false, Kind::Int64)
            .max()
            .int64_value(&[]);
        // The neuron of each row per example (`None`: the same rows, `union`, for every
        // example).
        let rows = if 4 * most > 3 * u {
            // Per-example rows would save little: the batch's union, example-independent
            // (batch 1, so less memory) until the first ReLU on the way back.
            None
        } else {
            let rows = unstable
                .to_kind(Kind::Uint8)
                .argsort_stable(true, 1, true)
                .narrow(1, 0, most);
            Some(rows)
        };
        let (lower, upper) = self.dense_rows_bounds(i, &union, rows.as_ref());
        let (lo, hi) = match rows {
            None => (
                il.index_copy(1, &union, &lower),
                iu.index_copy(1, &union, &upper),
            ),
            Some(rows) => (il.scatter(1, &rows, &lower), iu.scatter(1, &rows, &upper)),
        };
        (lo.reshape(out.as_slice()), hi.reshape(out.as_slice()))
    }

    /// [`Relaxer::exact_bounds`] for rows given as dense one-hot maps: `[Bp, k]` bounds of
    /// layer `i - 1`'s neurons `union` (every example) or `rows` (`[B, k]`, per example).
    pub(super) fn dense_rows_bounds(
        &self,
        i: usize,
        union: &Tensor,
        rows: Option<&Tensor>,
    ) -> (Tensor, Tensor) {
        let shape = &self.shapes[i];
        let n = numel(shape);
        let opts = (self.x.kind(), self.x.device());
        let (k, eye) = match rows {
            None => (
                union.size()[0],
                Tensor::eye(n, opts).index_select(0, union).unsqueeze(0),
            ),
            Some(rows) => {
                let (b, most) = (rows.size()[0], rows.size()[1]);
                let eye = Tensor::eye(n, opts)
                    .index_select(0, &rows.flatten(0, -1))
                    .reshape([b, most, n]);
                (most, eye)
            }
        };
        let batch_rows = eye.size()[0];
        let mut full = vec![batch_rows, k];
        full.extend_from_slice(shape);
        if self.relax == Relaxation::Fastlin {
            // Fast-Lin's two lines are parallel: one backward pass serves both bounds, the
            // upper one adding `|lambda| . intercept` at every ReLU (half the work).
            let mut spread = Tensor::zeros([1, k], opts);
            let (lambda, offset) =
                self.backward_spread(i, eye.reshape(full.as_slice()), None, Some(&mut spread));
            let (min, max) = input_range(&lambda, &self.x, self.ball);
            (min + &offset, max + offset + spread)
        } else {
            full[1] = 2 * k;
            let lambda = Tensor::cat(&[&eye, &eye.neg()], 1).reshape(full.as_slice());
            let both = self.lower_bound(i, lambda);
            (both.narrow(1, 0, k), both.narrow(1, k, k).neg())
        }
    }

    /// [`Relaxer::exact_bounds`] in patches form: every channel at each grid position where
    /// some example has a neuron in `wanted` (`[B, ..]`, e.g. the unstable ones); `[B, n]`
    /// bounds (`il`, `iu` elsewhere). `slopes` as in [`Relaxer::patch_bounds`].
    pub(super) fn patch_bounds_at(
        &self,
        i: usize,
        il: &Tensor,
        iu: &Tensor,
        wanted: &Tensor,
        slopes: Option<&[Option<Tensor>]>,
    ) -> (Tensor, Tensor) {
        let shape = &self.shapes[i];
        let (b, co, plane) = (il.size()[0], shape[0], shape[1] * shape[2]);
        let loc = wanted
            .reshape([b, co, plane])
            .any_dim(0, false)
            .any_dim(0, false)
            .nonzero()
            .squeeze_dim(1);
        let (lower, upper) = self.patch_bounds(i, &loc, self.relax == Relaxation::Fastlin, slopes);
        let place = |full: &Tensor, part: Tensor| {
            full.reshape([b, co, plane])
                .index_copy(2, &loc, &part.transpose(1, 2))
                .reshape([b, co * plane])
        };
        (place(il, lower), place(iu, upper))
    }
}
