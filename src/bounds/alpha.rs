//! alpha-CROWN (Xu et al. 2021): CROWN whose lower-line slopes `alpha in [0, 1]` of the
//! unstable ReLUs are free variables, optimised by projected gradient ascent on the bound.
//!
//! Every ReLU `a = max(z, 0)` with `l < 0 < u` satisfies `a >= alpha z` for any `alpha` in
//! [0, 1], so every choice of the slopes gives a sound bound: the optimisation only picks among
//! sound bounds, and the best bound per element over the iterates is kept. As in auto_LiRPA,
//! the slopes are separate per example and per specification row (the output's margin rows,
//! and the rows of every intermediate layer's bound: each neuron's lower and upper bound gets
//! its own slopes for the ReLUs before it), initialised from CROWN's choice (so the first
//! iterate is CROWN's bound), and moved by Adam on `-sum(bound)` with the step decaying by
//! 0.98 per iteration, then clipped to [0, 1]. Intermediate bounds are recomputed at every
//! iterate with their own slopes and intersected with the best ones so far (all sound), and
//! the gradient flows through them to the slopes of earlier layers.
use super::input::input_minimum;
use super::ops::numel;
use super::patches;
use super::relax::{Pass, Relaxer, ReluLines};
use super::{Ball, Intermediate, Relaxation, Relaxed};
use crate::model::Layer;
use tch::{Kind, Tensor};

/// The optimiser of alpha-CROWN (`eval.alpha_iters`, `eval.alpha_lr`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlphaSettings {
    /// Bounds computed (the first with CROWN's slopes); one Adam step between two.
    pub iters: u32,
    /// Adam's step size on the slopes.
    pub lr: f64,
}

impl Default for AlphaSettings {
    fn default() -> Self {
        AlphaSettings { iters: 20, lr: 0.1 }
    }
}

/// Above this many floats, the slopes of one (intermediate) layer's bound are shared by its
/// rows instead of one set per row: the memory of per-row slopes is rows x neurons x batch.
const PER_ROW_FLOATS: i64 = 1 << 24;

/// Bounds of pre-activations, per layer (`Some` for ReLU layers), `[B, ..]` each.
pub(super) type LayerBounds = Vec<Option<(Tensor, Tensor)>>;

/// The optimised bound: the best lower bound of `spec . logits` per example and row, and the
/// best (intersected) pre-activation bounds of every ReLU layer.
pub(super) struct AlphaBound {
    pub(super) lower: Tensor,
    pub(super) relu_bounds: LayerBounds,
}

/// One set of slopes and its Adam state.
struct Slope {
    alpha: Tensor,
    m: Tensor,
    v: Tensor,
}

impl Slope {
    fn new(init: &Tensor, shape: &[i64]) -> Slope {
        let alpha = init
            .expand(shape, false)
            .detach()
            .copy()
            .set_requires_grad(true);
        Slope {
            m: alpha.zeros_like().detach(),
            v: alpha.zeros_like().detach(),
            alpha,
        }
    }
}

/// alpha-CROWN lower bounds of `spec . h_L` (`spec` `[B or 1, S, K]`) on `x`'s batch, with
/// optional known pre-activation bounds `priors` (see [`Relaxer::with_priors`]).
pub(super) fn alpha_lower(
    layers: &[Layer],
    x: &Tensor,
    ball: Ball,
    spec: &Tensor,
    priors: Option<&[Option<(Tensor, Tensor)>]>,
    settings: AlphaSettings,
) -> AlphaBound {
    tch::with_grad(|| alpha_lower_inner(layers, x, ball, spec, priors, settings))
}

fn alpha_lower_inner(
    layers: &[Layer],
    x: &Tensor,
    ball: Ball,
    spec: &Tensor,
    priors: Option<&[Option<(Tensor, Tensor)>]>,
    settings: AlphaSettings,
) -> AlphaBound {
    let crown = Relaxed {
        relax: Relaxation::Crown,
        inter: Intermediate::Exact,
    };
    let x = x.detach();
    // Detached layers: the graph of the optimisation reaches only the slopes.
    let detached: Vec<Layer> = layers
        .iter()
        .map(|l| l.map_tensors(&|t| t.detach()))
        .collect();
    let layers = detached.as_slice();
    let mut r = tch::no_grad(|| Relaxer::with_priors(layers, &x, ball, crown, priors));
    let n_layers = layers.len();
    let mut best = tch::no_grad(|| r.lower_bound(n_layers, spec.shallow_clone()));
    let mut bounds: LayerBounds = r
        .lines
        .iter()
        .map(|l| {
            l.as_ref()
                .map(|l| (l.l.squeeze_dim(1).detach(), l.u.squeeze_dim(1).detach()))
        })
        .collect();
    let relus: Vec<usize> = (0..n_layers).filter(|&i| r.lines[i].is_some()).collect();
    let any_unstable = relus.iter().any(|&i| {
        r.lines[i]
            .as_ref()
            .is_some_and(|l| l.unstable.sum(Kind::Float).double_value(&[]) > 0.0)
    });
    if settings.iters <= 1 || !any_unstable {
        return AlphaBound {
            lower: best,
            relu_bounds: bounds,
        };
    }
    let b = x.size()[0];
    let (mut out, mut inter) = init_slopes(&r, &relus, b, spec.size()[1]);
    for step in 1..=settings.iters {
        // Rebuild every ReLU's lines from bounds recomputed with the current slopes.
        for &j in &relus {
            if let Some((rows, slopes)) = &inter[j] {
                refresh(&mut r, j, rows, slopes, &mut bounds);
            }
        }
        let alphas: Vec<Option<Tensor>> = out
            .iter()
            .map(|s| s.as_ref().map(|s| s.alpha.shallow_clone()))
            .collect();
        let bound = lower_with(&r, n_layers, spec.shallow_clone(), &alphas);
        best = best.maximum(&bound.detach());
        if step == settings.iters {
            break;
        }
        let mut vars: Vec<&mut Slope> = out.iter_mut().flatten().collect();
        for (_, slopes) in inter.iter_mut().flatten() {
            vars.extend(slopes.iter_mut().flatten());
        }
        let inputs: Vec<Tensor> = vars.iter().map(|v| v.alpha.shallow_clone()).collect();
        let loss = bound.sum(bound.kind()).neg();
        if !loss.requires_grad() {
            break;
        }
        let grads = Tensor::run_backward(&[loss], &inputs, false, false);
        let lr = settings.lr * 0.98f64.powi(step as i32 - 1);
        tch::no_grad(|| {
            for (v, g) in vars.into_iter().zip(grads) {
                if !g.defined() {
                    continue;
                }
                adam_step(v, &g, lr, step);
            }
        });
        // Lines of the next iterate are rebuilt from scratch; drop this iterate's graph.
        for &j in &relus {
            if let Some((l, u)) = &bounds[j] {
                r.lines[j] = Some(ReluLines::new(l, u, Relaxation::Crown));
            }
        }
    }
    AlphaBound {
        lower: best.detach(),
        relu_bounds: bounds,
    }
}

/// The neurons of an intermediate layer whose bounds are optimised: the batch's union of
/// unstable neurons, or, when that saves at least a quarter of the rows, each example's own
/// (padded to the largest count with other neurons, whose bounds are sound too), as in the
/// exact intermediate bounds of CROWN.
enum Rows {
    /// `[u]` neuron indices, the same for every example.
    Shared(Tensor),
    /// `[B, k]` neuron indices per example.
    PerExample(Tensor),
}

impl Rows {
    /// The rows for the unstable mask `[B, 1, ..]`; `None` when no neuron is unstable.
    fn of(unstable: &Tensor) -> Option<Rows> {
        let unstable = unstable.flatten(1, -1).gt(0.0);
        let union = unstable.any_dim(0, false).nonzero().squeeze_dim(1);
        let u = union.size()[0];
        if u == 0 {
            return None;
        }
        let most = unstable
            .sum_dim_intlist([1i64].as_slice(), false, Kind::Int64)
            .max()
            .int64_value(&[]);
        Some(if 4 * most > 3 * u {
            Rows::Shared(union)
        } else {
            let rows = unstable
                .to_kind(Kind::Uint8)
                .argsort_stable(true, 1, true)
                .narrow(1, 0, most);
            Rows::PerExample(rows)
        })
    }

    fn count(&self) -> i64 {
        match self {
            Rows::Shared(r) => r.size()[0],
            Rows::PerExample(r) => r.size()[1],
        }
    }

    /// The specification `[e_n; -e_n]` of the rows, `[1 or B, 2k, ..shape]`.
    fn spec(&self, shape: &[i64], opts: (Kind, tch::Device)) -> Tensor {
        let n = numel(shape);
        let eye = Tensor::eye(n, opts);
        let (b, k, eye) = match self {
            Rows::Shared(r) => (1, r.size()[0], eye.index_select(0, r).unsqueeze(0)),
            Rows::PerExample(r) => {
                let (b, k) = (r.size()[0], r.size()[1]);
                (
                    b,
                    k,
                    eye.index_select(0, &r.flatten(0, -1)).reshape([b, k, n]),
                )
            }
        };
        let mut full = vec![b, 2 * k];
        full.extend_from_slice(shape);
        Tensor::cat(&[&eye, &eye.neg()], 1).reshape(full.as_slice())
    }

    /// The rows' entries of `t` (`[B, n]` -> `[B, k]`).
    fn gather(&self, t: &Tensor) -> Tensor {
        match self {
            Rows::Shared(r) => t.index_select(1, r),
            Rows::PerExample(r) => t.gather(1, r, false),
        }
    }

    /// `t` with the rows' entries replaced by `v`.
    fn scatter(&self, t: &Tensor, v: &Tensor) -> Tensor {
        match self {
            Rows::Shared(r) => t.index_copy(1, r, v),
            Rows::PerExample(r) => t.scatter(1, r, v),
        }
    }
}

/// The slopes of one bound: per layer, `Some` for the ReLUs before it.
type Slopes = Vec<Option<Slope>>;

/// The slopes of the output's bound (one per example, row `s` and neuron) and of every
/// intermediate layer's bound with its rows, all initialised from CROWN's choice.
#[allow(clippy::type_complexity)]
fn init_slopes(
    r: &Relaxer,
    relus: &[usize],
    b: i64,
    s: i64,
) -> (Slopes, Vec<Option<(Rows, Slopes)>>) {
    let n_layers = r.layers.len();
    // Slopes of the output's bound: one per example, row and neuron.
    let mut out: Slopes = (0..n_layers).map(|_| None).collect();
    for &i in relus {
        let lines = r.lines[i].as_ref().map(|l| &l.lower_slope);
        if let Some(init) = lines {
            out[i] = Some(Slope::new(init, &full_shape(b, s, &r.shapes[i])));
        }
    }
    // Each intermediate ReLU layer `j`: its rows (neurons unstable under CROWN's bounds, the
    // only ones whose bounds are recomputed) and the slopes of the ReLUs before it.
    let mut inter: Vec<Option<(Rows, Slopes)>> = (0..n_layers).map(|_| None).collect();
    for (k, &j) in relus.iter().enumerate().skip(1) {
        let Some(lines) = &r.lines[j] else { continue };
        let Some(rows) = Rows::of(&lines.unstable) else {
            continue;
        };
        let u = rows.count();
        let mut slopes: Slopes = (0..n_layers).map(|_| None).collect();
        for &i in &relus[..k] {
            let n_i = numel(&r.shapes[i]);
            let per_row = b * 2 * u * n_i <= PER_ROW_FLOATS;
            let rows_here = if per_row { 2 * u } else { 1 };
            if let Some(l) = &r.lines[i] {
                slopes[i] = Some(Slope::new(
                    &l.lower_slope,
                    &full_shape(b, rows_here, &r.shapes[i]),
                ));
            }
        }
        inter[j] = Some((rows, slopes));
    }
    (out, inter)
}

/// Recomputes the bounds of ReLU layer `j`'s input on `rows` with `slopes`, intersected with
/// the best so far (kept in `bounds`), and rebuilds its lines from them (carrying the graph
/// to the slopes).
fn refresh(r: &mut Relaxer, j: usize, rows: &Rows, slopes: &Slopes, bounds: &mut LayerBounds) {
    let opts = (r.x.kind(), r.x.device());
    let b = r.batch();
    let Some((bl, bu)) = &bounds[j] else { return };
    let shape = &r.shapes[j];
    let u = rows.count();
    let alphas: Vec<Option<Tensor>> = slopes
        .iter()
        .map(|s| s.as_ref().map(|s| s.alpha.shallow_clone()))
        .collect();
    let (fl, fu) = (bl.flatten(1, -1), bu.flatten(1, -1));
    let (lo, hi) = if r.patches_apply(j) && patches::shared_slopes(&alphas) {
        // A convolution's neurons: in patches form at the rows' positions, then the rows'
        // entries (the same neurons the dense pass bounds).
        let picked = rows.scatter(&fl.zeros_like(), &rows.gather(&fl).ones_like());
        let (pl, pu) = r.patch_bounds_at(j, &fl, &fu, &picked.gt(0.0), Some(&alphas));
        (rows.gather(&pl), rows.gather(&pu))
    } else {
        let lambda = rows.spec(shape, opts);
        let both = lower_with(r, j, lambda, &alphas);
        (both.narrow(1, 0, u), both.narrow(1, u, u).neg())
    };
    let lo = lo.maximum(&rows.gather(&fl));
    let hi = hi.minimum(&rows.gather(&fu));
    let mut out_shape = vec![b];
    out_shape.extend_from_slice(shape);
    let l = rows.scatter(&fl, &lo).reshape(out_shape.as_slice());
    let h = rows.scatter(&fu, &hi).reshape(out_shape.as_slice());
    bounds[j] = Some((l.detach(), h.detach()));
    r.lines[j] = Some(ReluLines::new(&l, &h, Relaxation::Crown));
}

/// `[b, rows, ..shape]`.
fn full_shape(b: i64, rows: i64, shape: &[i64]) -> Vec<i64> {
    let mut full = vec![b, rows];
    full.extend_from_slice(shape);
    full
}

/// Lower bound of `lambda . h_upto` with the given slopes.
fn lower_with(r: &Relaxer, upto: usize, lambda: Tensor, slopes: &[Option<Tensor>]) -> Tensor {
    let pass = Pass {
        slopes: Some(slopes),
        ..Pass::default()
    };
    let (lambda, offset) = r.backward_pass(upto, lambda, pass);
    input_minimum(&lambda, &r.x, r.ball, false).0 + offset
}

/// One Adam step (ascent on the bound: the loss is its negation), then the projection onto
/// [0, 1].
fn adam_step(v: &mut Slope, g: &Tensor, lr: f64, step: u32) {
    let (b1, b2, eps) = (0.9, 0.999, 1e-8);
    v.m = &v.m * b1 + g * (1.0 - b1);
    v.v = &v.v * b2 + g.square() * (1.0 - b2);
    let mhat = &v.m / (1.0 - b1.powi(step as i32));
    let vhat = &v.v / (1.0 - b2.powi(step as i32));
    let update = mhat / (vhat.sqrt() + eps) * lr;
    let next = (v.alpha.detach() - update).clamp(0.0, 1.0);
    v.alpha = next.set_requires_grad(true);
}

#[cfg(test)]
mod tests {
    use super::super::tests::{conv64, mlp64, opts, samples};
    use super::super::{margin_lower_with, relu_bounds, BoundMethod};
    use super::*;
    use crate::config::Norm;
    use crate::model::Network;
    use tch::Device;

    /// The cases: random MLPs and the conv net, both norms, a small and a large radius.
    fn cases() -> Vec<(String, Network, Tensor, Tensor, Ball)> {
        let mut out = Vec::new();
        for seed in 0..2 {
            for norm in [Norm::Linf, Norm::L2] {
                for eps in [0.05, 0.2] {
                    let ball = Ball { eps, norm };
                    tch::manual_seed(300 + seed);
                    let x = Tensor::rand([6, 6], opts());
                    let y = Tensor::randint(4, [6], (Kind::Int64, Device::Cpu));
                    let name = format!("mlp seed {seed} {norm:?} eps {eps}");
                    out.push((name, mlp64(6, &[16, 12], 4, seed), x, y, ball));
                    let x = Tensor::rand([3, 1, 7, 7], opts());
                    let y = Tensor::randint(3, [3], (Kind::Int64, Device::Cpu));
                    let name = format!("conv seed {seed} {norm:?} eps {eps}");
                    out.push((name, conv64(seed), x, y, ball));
                }
            }
        }
        out
    }

    #[test]
    fn alpha_crown_is_never_looser_than_crown_and_often_tighter() {
        let settings = AlphaSettings::default();
        let mut gained = 0.0;
        for (name, net, x, y, ball) in cases() {
            let crown = tch::no_grad(|| {
                margin_lower_with(&net, &x, &y, ball, BoundMethod::Crown, settings)
            });
            let alpha = tch::no_grad(|| {
                margin_lower_with(&net, &x, &y, ball, BoundMethod::AlphaCrown, settings)
            });
            let looser = (&crown - &alpha).max().double_value(&[]);
            assert!(looser <= 1e-9, "{name}: alpha-CROWN looser by {looser:e}");
            gained += (&alpha - &crown).sum(Kind::Double).double_value(&[]);
        }
        // The optimisation must do something on unstable random networks.
        assert!(
            gained > 1e-3,
            "alpha-CROWN never improved on CROWN ({gained:e})"
        );
    }

    #[test]
    fn optimised_intermediate_bounds_are_inside_crowns_and_contain_sampled_pre_activations() {
        let crown = Relaxed {
            relax: Relaxation::Crown,
            inter: Intermediate::Exact,
        };
        let mut tightened = 0.0;
        for (name, net, x, y, ball) in cases() {
            let k = net.num_classes;
            let spec = super::super::margin_spec(&y, k, x.kind());
            let ab = alpha_lower(&net.layers, &x, ball, &spec, None, AlphaSettings::default());
            let base = tch::no_grad(|| relu_bounds(&net, &x, ball, Some(crown)));
            let pts = samples(&x, ball, 200, false);
            let owner = Tensor::arange(x.size()[0], (Kind::Int64, Device::Cpu))
                .repeat_interleave_self_int(200, 0, None);
            let mut h = pts;
            let mut j = 0;
            for (i, layer) in net.layers.iter().enumerate() {
                if let Some((l, u)) = &ab.relu_bounds[i] {
                    let (bl, bu) = &base[j];
                    j += 1;
                    let outside = (bl - l)
                        .max()
                        .double_value(&[])
                        .max((u - bu).max().double_value(&[]));
                    assert!(
                        outside <= 1e-9,
                        "{name}: layer {i} looser than CROWN by {outside:e}"
                    );
                    tightened += ((l - bl) + (bu - u)).sum(Kind::Double).double_value(&[]);
                    let (l, u) = (l.index_select(0, &owner), u.index_select(0, &owner));
                    let out = (&l - &h)
                        .max()
                        .double_value(&[])
                        .max((&h - &u).max().double_value(&[]));
                    assert!(out <= 1e-9, "{name}: layer {i} misses a sample by {out:e}");
                }
                h = layer.forward(&h);
            }
        }
        assert!(
            tightened > 1e-3,
            "no intermediate bound improved ({tightened:e})"
        );
    }

    #[test]
    fn more_iterations_never_loosen_the_bound() {
        let (_, net, x, y, ball) = cases().remove(1);
        let spec = super::super::margin_spec(&y, net.num_classes, x.kind());
        let mut prev: Option<Tensor> = None;
        for iters in [1, 5, 20] {
            let settings = AlphaSettings { iters, lr: 0.1 };
            let b = alpha_lower(&net.layers, &x, ball, &spec, None, settings).lower;
            if let Some(p) = &prev {
                let looser = (p - &b).max().double_value(&[]);
                assert!(looser <= 1e-9, "{iters} iterations looser by {looser:e}");
            }
            prev = Some(b);
        }
    }
}
