//! How tight a linear relaxation's margin bounds are (Zhu et al. 2020): at the input `x*_t`
//! where each row's relaxed bound is attained, the real network's margin `p_t` against the
//! bound `m_t` (r1), and how far the real pre-activations sit from where the chosen lines touch
//! the ReLU (r2); and their statistics over a set.
use super::memory::chunked;
use super::ops::{select, sum_rest};
use super::relax::{Relaxer, ReluTrace};
use super::walked;
use super::{margin_spec, Ball, BoundMethod, Relaxed};
use crate::linalg::batch_ranges;
use crate::metrics::GapStats;
use crate::model::{layers_f64, Layer, Network};
use tch::{Kind, Tensor};

/// The tightness terms of a linear relaxation's margin bounds on one batch.
pub struct Tightness {
    /// Margin lower bounds `m_t`, `[B, K]` (`m_y = 0`).
    pub margin_lower: Tensor,
    /// Margins `p_t` of the real network at the relaxed optimum `x*_t` of each row, `[B, K]`.
    pub margin_at_optimum: Tensor,
    /// `r1 = sum_t (p_t - m_t)`, `[B]`, >= 0.
    pub r1: Tensor,
    /// `r2`, `[B]`, >= 0: over unstable neurons that a row bounds with a line, the distance of
    /// the real pre-activation at `x*_t` to where that line touches the ReLU.
    pub r2: Tensor,
    /// Per row: `r2` of that row alone, `[B, K]`.
    pub r2_rows: Tensor,
    /// `r2` with `|z|` at every lower line, as Zhu et al. (2020) write it for Fast-Lin, `[B]`:
    /// the same as `r2` for Fast-Lin's lines; for CROWN's slope-0/1 lines it also counts
    /// pre-activations on the half-line where the line is tight.
    pub r2_abs: Tensor,
    /// Unstable neurons per ReLU layer, per example (`[B]` each, as floats).
    pub unstable: Vec<Tensor>,
}

/// r1 and r2 of Zhu et al. 2020 for the margin rows of `relaxed`.
///
/// `x*_t` minimises the relaxed (linear) lower bound of row `t` over the input set; the real
/// network at `x*_t` gives a feasible margin `p_t >= m_t`. r2 measures how far the real
/// pre-activations at `x*_t` sit from the points where the chosen lines touch the ReLU: the
/// lower line `a = alpha z` touches at 0 (Fast-Lin's `0 < alpha < 1`), on `z <= 0`
/// (`alpha = 0`) or on `z >= 0` (`alpha = 1`); the upper chord touches at `l` and `u`. When a
/// row's r2 is 0 the relaxation is exact at `x*_t`, hence `p_t = m_t` (Proposition 1).
pub fn tightness(net: &Network, x: &Tensor, y: &Tensor, ball: Ball, relaxed: Relaxed) -> Tightness {
    tightness_of(&walked(net), net.num_classes, x, y, ball, relaxed)
}

fn tightness_of(
    layers: &[Layer],
    classes: i64,
    x: &Tensor,
    y: &Tensor,
    ball: Ball,
    relaxed: Relaxed,
) -> Tightness {
    let mut run = |start: i64, len: i64| {
        let (xb, yb) = (x.narrow(0, start, len), y.narrow(0, start, len));
        tightness_batch(layers, classes, &xb, &yb, ball, relaxed)
    };
    let mut parts = chunked(layers, x, Some(relaxed), &mut run);
    let unstable = parts.split_off(6);
    let mut it = parts.into_iter();
    let mut next = || {
        it.next()
            .unwrap_or_else(|| Tensor::zeros([0], (Kind::Float, x.device())))
    };
    Tightness {
        margin_lower: next(),
        margin_at_optimum: next(),
        r1: next(),
        r2: next(),
        r2_rows: next(),
        r2_abs: next(),
        unstable,
    }
}

fn tightness_batch(
    layers: &[Layer],
    k: i64,
    x: &Tensor,
    y: &Tensor,
    ball: Ball,
    relaxed: Relaxed,
) -> Vec<Tensor> {
    let b = x.size()[0];
    let r = Relaxer::new(layers, x, ball, relaxed);
    let spec = margin_spec(y, k, x.kind());
    let (m, argmin, trace) = r.lower_bound_traced(layers.len(), spec);
    let m = m.scatter_value(1, &y.unsqueeze(1), 0.0);
    // The real network at every row's optimum, keeping the pre-activations of each ReLU.
    let mut h = argmin.flatten(0, 1);
    let mut pre: Vec<Option<Tensor>> = (0..layers.len()).map(|_| None).collect();
    for (i, layer) in layers.iter().enumerate() {
        if let Layer::Relu = layer {
            pre[i] = Some(h.shallow_clone());
        }
        h = layer.forward(&h);
    }
    let logits = h.reshape([b, k, k]);
    let own = logits
        .gather(2, &y.reshape([b, 1, 1]).expand([b, k, 1], false), false)
        .squeeze_dim(2);
    let p = own - logits.diagonal(0, 1, 2);
    let r1_rows = &p - &m;
    let (r2_rows, r2_abs_rows) = r2_per_row(&r, &trace, &pre, b, k);
    let unstable: Vec<Tensor> = r
        .lines
        .iter()
        .flatten()
        .map(|lines| {
            lines
                .unstable
                .flatten(1, -1)
                .sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)
        })
        .collect();
    let row_sum = |t: &Tensor| t.sum_dim_intlist([1i64].as_slice(), false, None::<Kind>);
    let mut out = vec![
        m,
        p,
        row_sum(&r1_rows),
        row_sum(&r2_rows),
        r2_rows,
        row_sum(&r2_abs_rows),
    ];
    out.extend(unstable);
    out
}

/// Per row, `[B, K]`: the distance of the real pre-activations `pre` at each row's optimum to
/// where the line the row chose touches the ReLU, summed over the unstable neurons it bounds;
/// and the same with `|z|` at every lower line (the paper's form).
fn r2_per_row(
    r: &Relaxer,
    trace: &[ReluTrace],
    pre: &[Option<Tensor>],
    b: i64,
    k: i64,
) -> (Tensor, Tensor) {
    let mut r2_rows = Tensor::zeros([b, k], (r.x.kind(), r.x.device()));
    let mut r2_abs_rows = r2_rows.zeros_like();
    for t in trace {
        let (Some(lines), Some(z)) = (&r.lines[t.layer], &pre[t.layer]) else {
            continue;
        };
        let mut shape = vec![b, k];
        shape.extend_from_slice(&r.shapes[t.layer]);
        let z = z.reshape(shape.as_slice());
        let alpha = &lines.lower_slope;
        let to_lower = select(
            &alpha.ge(1.0),
            &(-&z).relu(),
            &select(&alpha.le(0.0), &z.relu(), &z.abs()),
        );
        let to_upper = (&z - &lines.l).abs().minimum(&(&lines.u - &z).abs());
        let zero = z.zeros_like();
        let on_upper = select(&t.upper, &to_upper, &zero);
        let d = select(&t.lower, &to_lower, &zero) + &on_upper;
        let d_abs = select(&t.lower, &z.abs(), &zero) + on_upper;
        r2_rows = r2_rows + sum_rest(&d);
        r2_abs_rows = r2_abs_rows + sum_rest(&d_abs);
    }
    (r2_rows, r2_abs_rows)
}

/// Tightness statistics of a linear relaxation on a set, in batches, without gradients, in
/// double precision; `None` for IBP; CROWN's for alpha-CROWN.
pub fn gap_stats(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    ball: Ball,
    method: BoundMethod,
    batch: i64,
) -> Option<GapStats> {
    // alpha-CROWN's optimised slopes are not fixed lines: its statistics are CROWN's, so named.
    let method = match method {
        BoundMethod::AlphaCrown => BoundMethod::Crown,
        m => m,
    };
    let relaxed = method.relaxed()?;
    let n = y.size()[0];
    if n == 0 {
        return None;
    }
    let edges = crate::metrics::gap_hist_edges();
    let mut counts = vec![0u64; edges.len() - 1];
    let mut unstable: Vec<f64> = Vec::new();
    let (mut r1_sum, mut r2_sum, mut exact) = (0.0, 0.0, 0i64);
    let layers = layers_f64(&walked(net));
    tch::no_grad(|| {
        for (start, len) in batch_ranges(n, batch) {
            let (xb, yb) = (x.narrow(0, start, len), y.narrow(0, start, len));
            let xb = xb.to_kind(Kind::Double);
            let t = tightness_of(&layers, net.num_classes, &xb, &yb, ball, relaxed);
            r1_sum += t.r1.sum(Kind::Double).double_value(&[]);
            r2_sum += t.r2.sum(Kind::Double).double_value(&[]);
            let scale = t
                .margin_lower
                .abs()
                .sum_dim_intlist([1i64].as_slice(), false, Kind::Double)
                .clamp_min(1.0);
            exact +=
                t.r1.to_kind(Kind::Double)
                    .le_tensor(&(scale * 1e-6))
                    .sum(Kind::Int64)
                    .int64_value(&[]);
            if unstable.is_empty() {
                unstable = vec![0.0; t.unstable.len()];
            }
            for (u, c) in unstable.iter_mut().zip(&t.unstable) {
                *u += c.sum(Kind::Double).double_value(&[]);
            }
            let own = yb.one_hot(net.num_classes).to_kind(Kind::Bool);
            let gaps = (&t.margin_at_optimum - &t.margin_lower).masked_select(&own.logical_not());
            let gaps = Vec::<f64>::try_from(gaps.to_kind(Kind::Double)).unwrap_or_default();
            for g in gaps {
                let last = counts.len() - 1;
                let bin = edges[1..].iter().take_while(|&&e| g >= e).count();
                counts[bin.min(last)] += 1;
            }
        }
    });
    let nf = n as f64;
    Some(GapStats {
        method: method.name().to_string(),
        unstable_per_layer: unstable.iter().map(|u| u / nf).collect(),
        r1_mean: r1_sum / nf,
        r2_mean: r2_sum / nf,
        frac_exact: exact as f64 / nf,
        hist_edges: edges,
        hist_counts: counts,
        cert_pgd_gap: None,
    })
}
