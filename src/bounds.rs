//! Sound bounds on a network's outputs over an input set (an l_inf or l_2 ball clipped to the
//! data box [0, 1]): interval bound propagation (IBP), the backward linear relaxations Fast-Lin
//! and CROWN with IBP, exact or randomly projected intermediate bounds, and the tightness
//! statistics and regularizers r1 / r2 of seed 001.
//!
//! Everything here is plain tch arithmetic on the layer list of [`Network`], batched over
//! examples, on the network's device, and differentiable: the bounds are training losses.
//!
//! The backward pass keeps, for each example and each specification row, a linear function of
//! one layer's output, `lambda . h + offset`, and walks it back to the input, replacing each
//! ReLU by one of its two relaxation lines (DESIGN.md, "Backward linear relaxation").
pub use crate::config::BoundMethod;
use crate::config::Norm;
use crate::metrics::GapStats;
use crate::model::{layer_shapes, layers_f64, Layer, Network};
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
            BoundMethod::Crown => Some(Relaxed {
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

// ---------------------------------------------------------------------------------------------
// Interval bound propagation

/// Interval bounds `(lower, upper)` of every layer's output, by interval propagation.
/// Entry `i` bounds the output of layer `i`; the last entry bounds the logits.
pub fn ibp_layer_bounds(net: &Network, x: &Tensor, ball: Ball) -> Vec<(Tensor, Tensor)> {
    ibp_bounds(&net.layers, x, ball)
}

fn ibp_bounds(layers: &[Layer], x: &Tensor, ball: Ball) -> Vec<(Tensor, Tensor)> {
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

fn unsupported(layer: &Layer) -> ! {
    panic!(
        "IBP/CROWN bounds do not support `{}` layers: 1-Lipschitz networks are certified with the l_2 Lipschitz certificate (`lipschitz`)",
        layer.kind_name()
    )
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

// ---------------------------------------------------------------------------------------------
// Backward linear relaxation

fn numel(shape: &[i64]) -> i64 {
    shape.iter().product()
}

/// Sums every dimension after the first two (`[B, S, ...] -> [B, S]`).
fn sum_rest(t: &Tensor) -> Tensor {
    if t.dim() <= 2 {
        return t.shallow_clone();
    }
    t.flatten(2, -1)
        .sum_dim_intlist([2i64].as_slice(), false, None::<Kind>)
}

/// `sum_rest(a * v)` for `a` `[B or 1, S, ..]` and `v` `[B or 1, 1, ..]`, as a batched
/// matrix product (no `[B, S, ..]` temporary).
fn dot_rest(a: &Tensor, v: &Tensor) -> Tensor {
    let (ba, s) = (a.size()[0], a.size()[1]);
    let bv = v.size()[0];
    let b = ba.max(bv);
    let a = a.flatten(2, -1).expand([b, s, -1], false);
    let v = v.flatten(2, -1).expand([b, 1, -1], false);
    a.matmul(&v.transpose(1, 2)).squeeze_dim(2)
}

/// The two lines of every ReLU of one layer, from its pre-activation bounds; each `[B, 1, ..]`
/// so that it broadcasts over specification rows.
struct ReluLines {
    l: Tensor,
    u: Tensor,
    /// Unstable neurons (`l < 0 < u`), as 0/1.
    unstable: Tensor,
    /// Slope of the lower line (1 active, 0 inactive, the relaxation's choice if unstable).
    lower_slope: Tensor,
    /// Slope and intercept of the upper line (`s`, `-s l` if unstable; identity or 0 if not).
    upper_slope: Tensor,
    upper_icpt: Tensor,
}

impl ReluLines {
    fn new(l: &Tensor, u: &Tensor, relax: Relaxation) -> Self {
        let active = l.ge(0.0).to_kind(l.kind());
        let unstable = l.lt(0.0).logical_and(&u.gt(0.0)).to_kind(l.kind());
        // The clamp keeps the stable entries (masked out below) free of 0/0, values and grads.
        let s = u / (u - l).clamp_min(1e-12);
        let upper_slope = &active + &unstable * &s;
        let upper_icpt = -(&unstable * &s * l);
        let lower_slope = match relax {
            Relaxation::Fastlin => upper_slope.shallow_clone(),
            Relaxation::Crown => &active + &unstable * u.ge_tensor(&l.neg()).to_kind(l.kind()),
        };
        let b = |t: Tensor| t.unsqueeze(1);
        ReluLines {
            l: b(l.shallow_clone()),
            u: b(u.shallow_clone()),
            unstable: b(unstable),
            lower_slope: b(lower_slope),
            upper_slope: b(upper_slope),
            upper_icpt: b(upper_icpt),
        }
    }
}

/// What the backward pass of a specification chose at one ReLU layer: which unstable neurons
/// it bounded with the lower line and which with the upper line, per example and row.
struct ReluTrace {
    layer: usize,
    lower: Tensor,
    upper: Tensor,
}

/// A network prepared for backward passes on one batch: shapes, IBP bounds and the ReLU lines.
struct Relaxer<'a> {
    layers: &'a [Layer],
    shapes: Vec<Vec<i64>>,
    x: Tensor,
    ball: Ball,
    /// `lines[i]` for every ReLU layer `i`.
    lines: Vec<Option<ReluLines>>,
    relax: Relaxation,
}

impl<'a> Relaxer<'a> {
    /// Computes the pre-activation bounds of every ReLU (with `relaxed.inter`) and its lines.
    fn new(layers: &'a [Layer], x: &Tensor, ball: Ball, relaxed: Relaxed) -> Self {
        let shapes = layer_shapes(layers, x);
        let ibp = ibp_bounds(layers, x, ball);
        let mut r = Relaxer {
            layers,
            shapes,
            x: x.shallow_clone(),
            ball,
            lines: (0..layers.len()).map(|_| None).collect(),
            relax: relaxed.relax,
        };
        match relaxed.inter {
            Intermediate::Projection { dim } => r.projected_lines(&ibp, relaxed.relax, dim),
            Intermediate::Ibp | Intermediate::Exact => {
                for i in 0..layers.len() {
                    if !matches!(layers[i], Layer::Relu) || i == 0 {
                        continue;
                    }
                    let (il, iu) = &ibp[i - 1];
                    let relu_before = layers[..i].iter().any(|l| matches!(l, Layer::Relu));
                    let (l, u) = if relaxed.inter == Intermediate::Ibp || !relu_before {
                        // Before the first ReLU the network is affine and IBP is exact for
                        // a single affine map on a box (and the l_2 radius is exact too).
                        (il.shallow_clone(), iu.shallow_clone())
                    } else {
                        let (l, u) = r.exact_bounds(i, il, iu);
                        // Both are sound: keep the intersection.
                        (l.maximum(il), u.minimum(iu))
                    };
                    r.lines[i] = Some(ReluLines::new(&l, &u, relaxed.relax));
                }
            }
        }
        r
    }

    fn batch(&self) -> i64 {
        self.x.size()[0]
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
        let n = numel(shape);
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
        let most = unstable
            .sum_dim_intlist([1i64].as_slice(), false, Kind::Int64)
            .max()
            .int64_value(&[]);
        let opts = (self.x.kind(), self.x.device());
        // `[B or 1, k, n]` one-hot rows, and the neuron of each row per example (`None`: the
        // same rows, `union`, for every example).
        let (k, eye, rows) = if 4 * most > 3 * u {
            // Per-example rows would save little: the batch's union, example-independent
            // (batch 1, so less memory) until the first ReLU on the way back.
            let eye = Tensor::eye(n, opts).index_select(0, &union).unsqueeze(0);
            (u, eye, None)
        } else {
            let rows = unstable
                .to_kind(Kind::Uint8)
                .argsort_stable(true, 1, true)
                .narrow(1, 0, most);
            let eye = Tensor::eye(n, opts)
                .index_select(0, &rows.flatten(0, -1))
                .reshape([b, most, n]);
            (most, eye, Some(rows))
        };
        let batch_rows = eye.size()[0];
        let mut full = vec![batch_rows, k];
        full.extend_from_slice(shape);
        let (lower, upper) = if self.relax == Relaxation::Fastlin {
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
        };
        let (lo, hi) = match rows {
            None => (
                il.index_copy(1, &union, &lower),
                iu.index_copy(1, &union, &upper),
            ),
            Some(rows) => (il.scatter(1, &rows, &lower), iu.scatter(1, &rows, &upper)),
        };
        (lo.reshape(out.as_slice()), hi.reshape(out.as_slice()))
    }

    /// Walks `lambda . h_{upto} + 0` (`h_upto` the output of layer `upto - 1`, `lambda`
    /// `[B or 1, S, ..]`) back to the input. Returns `(lambda_input, offset)`.
    fn backward(
        &self,
        upto: usize,
        lambda: Tensor,
        trace: Option<&mut Vec<ReluTrace>>,
    ) -> (Tensor, Tensor) {
        self.backward_spread(upto, lambda, trace, None)
    }

    /// [`Relaxer::backward`]; with `spread`, also accumulates `sum |lambda| . intercept` over
    /// the ReLUs (with parallel lines, the upper bound is the lower one plus this spread).
    fn backward_spread(
        &self,
        upto: usize,
        mut lambda: Tensor,
        mut trace: Option<&mut Vec<ReluTrace>>,
        mut spread: Option<&mut Tensor>,
    ) -> (Tensor, Tensor) {
        let s = lambda.size()[1];
        let mut offset = Tensor::zeros([1, s], (self.x.kind(), self.x.device()));
        for i in (0..upto).rev() {
            let b = lambda.size()[0];
            let in_shape = &self.shapes[i];
            let mut full = vec![b, s];
            full.extend_from_slice(in_shape);
            match &self.layers[i] {
                Layer::Linear { weight, bias } => {
                    offset = offset + lambda.matmul(bias);
                    lambda = lambda.matmul(weight);
                }
                Layer::Conv2d {
                    weight,
                    bias,
                    stride,
                    padding,
                } => {
                    let out_shape = &self.shapes[i + 1];
                    offset = offset
                        + lambda
                            .flatten(3, -1)
                            .sum_dim_intlist([3i64].as_slice(), false, None::<Kind>)
                            .matmul(bias);
                    let k = weight.size()[2];
                    let pad = |dim: usize| {
                        in_shape[dim] - ((out_shape[dim] - 1) * stride - 2 * padding + k)
                    };
                    let flat = lambda.reshape([b * s, out_shape[0], out_shape[1], out_shape[2]]);
                    lambda = flat
                        .conv_transpose2d(
                            weight,
                            None::<Tensor>,
                            [*stride; 2],
                            [*padding; 2],
                            [pad(1), pad(2)],
                            1,
                            [1; 2],
                        )
                        .reshape(full.as_slice());
                }
                Layer::Flatten => lambda = lambda.reshape(full.as_slice()),
                Layer::Normalize { mean, std } => {
                    let scaled = &lambda / std;
                    offset = offset - sum_rest(&(&scaled * mean));
                    lambda = scaled;
                }
                Layer::Relu => {
                    let Some(lines) = &self.lines[i] else {
                        unreachable!("every ReLU has its lines before a backward pass")
                    };
                    let pos = lambda.clamp_min(0.0);
                    let neg = lambda.clamp_max(0.0);
                    offset = offset + sum_rest(&(&neg * &lines.upper_icpt));
                    if let Some(sp) = spread.as_deref_mut() {
                        *sp = &*sp + sum_rest(&(lambda.abs() * &lines.upper_icpt));
                    }
                    if let Some(t) = trace.as_deref_mut() {
                        t.push(ReluTrace {
                            layer: i,
                            lower: pos.gt(0.0).logical_and(&lines.unstable.gt(0.0)),
                            upper: neg.lt(0.0).logical_and(&lines.unstable.gt(0.0)),
                        });
                    }
                    lambda = pos * &lines.lower_slope + neg * &lines.upper_slope;
                }
                l => unsupported(l),
            }
        }
        (lambda, offset)
    }

    /// Lower bound of `lambda . h_upto` over the input set (`[B, S]`), and with `argmin` the
    /// input that attains the bound of the relaxed problem (`[B, S, ..input]`).
    fn lower_bound(&self, upto: usize, lambda: Tensor) -> Tensor {
        let (lambda, offset) = self.backward(upto, lambda, None);
        let (value, _) = input_minimum(&lambda, &self.x, self.ball, false);
        value + offset
    }

    /// [`Relaxer::lower_bound`] with the argmin and the ReLU choices, for the tightness terms.
    fn lower_bound_traced(&self, upto: usize, lambda: Tensor) -> (Tensor, Tensor, Vec<ReluTrace>) {
        let mut trace = Vec::new();
        let (lambda, offset) = self.backward(upto, lambda, Some(&mut trace));
        let (value, argmin) = input_minimum(&lambda, &self.x, self.ball, true);
        let Some(argmin) = argmin else {
            unreachable!("input_minimum returns the argmin when asked")
        };
        (value + offset, argmin, trace)
    }

    /// Fast-Lin pre-activation bounds with the l1 (l_2: squared l2) terms estimated from random
    /// projections, propagated forward through the relaxed network (Wong et al. 2018).
    ///
    /// With the Fast-Lin lines an unstable ReLU is `a = s z + e`, `e in [0, -s l]`, so every
    /// pre-activation is an affine map of the input and of the `e`s: its bounds are the value at
    /// the centre of that box plus or minus the l1 norms of the rows scaled by the radii. The
    /// norms are estimated from `dim` directions per source (input, each ReLU layer).
    fn projected_lines(&mut self, ibp: &[(Tensor, Tensor)], relax: Relaxation, dim: i64) {
        let b = self.batch();
        let opts = (self.x.kind(), self.x.device());
        let (lo, hi) = input_box(&self.x, self.ball);
        let mut centre = match self.ball.norm {
            Norm::Linf => (&lo + &hi) / 2.0,
            Norm::L2 => self.x.shallow_clone(),
        };
        let in_shape = self.shapes[0].clone();
        let mut dshape = vec![b, dim];
        dshape.extend_from_slice(&in_shape);
        // Each source: its directions `[B, dim, ..]` and whether they estimate an l1 norm
        // (Cauchy, median) or a squared l2 norm (Gaussian, mean of squares).
        let mut sources: Vec<(Tensor, bool)> = vec![match self.ball.norm {
            Norm::Linf => (
                ((&hi - &lo) / 2.0).unsqueeze(1) * cauchy(&dshape, opts),
                true,
            ),
            Norm::L2 => (
                Tensor::randn(dshape.as_slice(), opts) * self.ball.eps,
                false,
            ),
        }];
        for i in 0..self.layers.len() {
            let layer = &self.layers[i];
            if let Layer::Relu = layer {
                let relu_before = self.layers[..i].iter().any(|l| matches!(l, Layer::Relu));
                let (il, iu) = &ibp[i - 1];
                let (l, u) = if !relu_before {
                    (il.shallow_clone(), iu.shallow_clone())
                } else {
                    let radius = sources
                        .iter()
                        .map(|(d, l1)| {
                            if *l1 {
                                d.abs().median_dim(1, false).0
                            } else {
                                d.square().mean_dim(1, false, None::<Kind>).sqrt()
                            }
                        })
                        .fold(centre.zeros_like(), |acc, r| acc + r);
                    (
                        (&centre - &radius).maximum(il),
                        (&centre + &radius).minimum(iu),
                    )
                };
                let lines = ReluLines::new(&l, &u, Relaxation::Fastlin);
                let slope = lines.upper_slope.squeeze_dim(1);
                let e_radius = (lines.upper_icpt.squeeze_dim(1)) / 2.0;
                centre = &centre * &slope + &e_radius;
                for (d, _) in sources.iter_mut() {
                    *d = &*d * slope.unsqueeze(1);
                }
                let mut shape = vec![b, dim];
                shape.extend_from_slice(&self.shapes[i + 1]);
                sources.push((e_radius.unsqueeze(1) * cauchy(&shape, opts), true));
                // Bounds are Fast-Lin's estimate; the output pass may still use CROWN's lines.
                self.lines[i] = Some(ReluLines::new(&l, &u, relax));
            } else {
                centre = layer.forward(&centre);
                for (d, _) in sources.iter_mut() {
                    let flat = d.flatten(0, 1);
                    let moved = match layer {
                        Layer::Linear { weight, .. } | Layer::Conv2d { weight, .. } => {
                            apply_linear(layer, weight, &flat)
                        }
                        Layer::Normalize { std, .. } => flat / std,
                        Layer::Flatten => flat.flatten(1, -1),
                        Layer::Relu => unreachable!(),
                        l => unsupported(l),
                    };
                    let mut shape = vec![b, dim];
                    shape.extend_from_slice(&moved.size()[1..]);
                    *d = moved.reshape(shape.as_slice());
                }
            }
        }
    }
}

/// `a` where `cond`, else `b` (broadcasting).
fn select(cond: &Tensor, a: &Tensor, b: &Tensor) -> Tensor {
    a.where_self(cond, b)
}

/// Standard Cauchy samples.
fn cauchy(shape: &[i64], opts: (Kind, tch::Device)) -> Tensor {
    ((Tensor::rand(shape, opts) - 0.5) * std::f64::consts::PI).tan()
}

/// `(min, max)` of `lambda . x'` over the input set, `[B, S]` each, sharing the products with
/// the centre and the radii. l_inf: exact over the clipped box. l_2: the tighter of the ball's
/// `lambda . x -+ eps ||lambda||_2` and the box's (both sets contain the clipped ball).
fn input_range(lambda: &Tensor, x: &Tensor, ball: Ball) -> (Tensor, Tensor) {
    let (lo, hi) = input_box(x, ball);
    let (lo, hi) = (lo.unsqueeze(1), hi.unsqueeze(1));
    let mid = dot_rest(lambda, &((&lo + &hi) / 2.0));
    let spread = dot_rest(&lambda.abs(), &((&hi - &lo) / 2.0));
    let (box_min, box_max) = (&mid - &spread, mid + spread);
    match ball.norm {
        Norm::Linf => (box_min, box_max),
        Norm::L2 => {
            let at_x = dot_rest(lambda, &x.unsqueeze(1));
            let reach = sum_rest(&lambda.square()).clamp_min(1e-30).sqrt() * ball.eps;
            let ball_min = &at_x - &reach;
            (ball_min.maximum(&box_min), (at_x + reach).minimum(&box_max))
        }
    }
}

/// `min lambda . x'` over the input set (the first half of [`input_range`]), `[B, S]`, and
/// optionally a feasible point attaining the relaxed bound (`[B, S, ..input]`).
fn input_minimum(
    lambda: &Tensor,
    x: &Tensor,
    ball: Ball,
    argmin: bool,
) -> (Tensor, Option<Tensor>) {
    let value = input_range(lambda, x, ball).0;
    if !argmin {
        return (value, None);
    }
    let arg = match ball.norm {
        Norm::Linf => {
            let (lo, hi) = input_box(x, ball);
            select(&lambda.ge(0.0), &lo.unsqueeze(1), &hi.unsqueeze(1))
        }
        // The point returned must lie in the input set (ball and box), so that the real
        // network's value there is feasible and r1 = p - m >= 0: the ball's minimiser
        // projected onto the box (projection moves each coordinate towards x, which is in the
        // box, so the point stays in the ball). A box corner, where the box value is the larger
        // bound, can lie outside the l_2 ball: never returned.
        Norm::L2 => {
            let norm = sum_rest(&lambda.square()).clamp_min(1e-30).sqrt();
            let mut view = norm.size();
            view.extend(std::iter::repeat(1).take(lambda.dim() - 2));
            let step = lambda / norm.reshape(view.as_slice()) * ball.eps;
            (x.unsqueeze(1) - step).clamp(0.0, 1.0)
        }
    };
    (value, Some(arg))
}

/// The rows `e_y - e_t` of the margin specification, `[B, K, K]` (row `y` is zero).
fn margin_spec(y: &Tensor, k: i64, kind: Kind) -> Tensor {
    let eye = Tensor::eye(k, (kind, y.device()));
    let own = eye.index_select(0, y).unsqueeze(1);
    own - eye.unsqueeze(0)
}

/// Rough number of floats a backward pass over one example needs, to split big batches.
fn floats_per_example(layers: &[Layer], shapes: &[Vec<i64>], relaxed: Option<Relaxed>) -> i64 {
    let widest = shapes.iter().map(|s| numel(s)).max().unwrap_or(1);
    match relaxed.map(|r| r.inter) {
        Some(Intermediate::Exact) => (1..layers.len())
            .filter(|&i| matches!(layers[i], Layer::Relu))
            .map(|i| {
                2 * numel(&shapes[i]) * shapes[..i].iter().map(|s| numel(s)).max().unwrap_or(1)
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
    let mut shape = vec![1];
    shape.extend_from_slice(&net.input_shape);
    let x = Tensor::zeros(shape.as_slice(), (Kind::Float, net.vs.device()));
    let shapes = layer_shapes(&net.layers, &x);
    let per = floats_per_example(&net.layers, &shapes, Some(relaxed)) as u64;
    5 * 4 * per * batch.max(1) as u64
}

/// Runs `f` on slices of the batch small enough for the backward passes, and concatenates.
fn chunked(
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
    let mut parts: Vec<Vec<Tensor>> = Vec::new();
    let mut start = 0;
    while start < b {
        let len = chunk.min(b - start);
        parts.push(f(start, len));
        start += len;
    }
    (0..parts[0].len())
        .map(|j| Tensor::cat(&parts.iter().map(|p| &p[j]).collect::<Vec<_>>(), 0))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Public bounds

/// Lower bounds of the margins `z_y - z_t` for every class `t` (`[B, K]`, entry `y` is 0).
pub fn margin_lower(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    ball: Ball,
    method: BoundMethod,
) -> Tensor {
    match method.relaxed() {
        None => ibp_margin(&net.layers, x, y, ball),
        Some(relaxed) => margin_lower_relaxed(net, x, y, ball, relaxed),
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
    let mut run = |start: i64, len: i64| {
        let (xb, yb) = (x.narrow(0, start, len), y.narrow(0, start, len));
        let r = Relaxer::new(&net.layers, &xb, ball, relaxed);
        let spec = margin_spec(&yb, net.num_classes, x.kind());
        let m = r.lower_bound(net.layers.len(), spec);
        // Row y is zero: its bound is exactly 0 (no rounding noise).
        vec![m.scatter_value(1, &yb.unsqueeze(1), 0.0)]
    };
    chunked(&net.layers, x, Some(relaxed), &mut run).remove(0)
}

/// Lower and upper bounds of every logit, `[B, K]` each.
pub fn logit_bounds(
    net: &Network,
    x: &Tensor,
    ball: Ball,
    method: BoundMethod,
) -> (Tensor, Tensor) {
    let Some(relaxed) = method.relaxed() else {
        let bounds = ibp_bounds(&net.layers, x, ball);
        let (lo, hi) = &bounds[bounds.len() - 1];
        return (lo.shallow_clone(), hi.shallow_clone());
    };
    let k = net.num_classes;
    let mut run = |start: i64, len: i64| {
        let xb = x.narrow(0, start, len);
        let r = Relaxer::new(&net.layers, &xb, ball, relaxed);
        let eye = Tensor::eye(k, (x.kind(), x.device()));
        let spec = Tensor::cat(&[&eye, &eye.neg()], 0).unsqueeze(0);
        let lower = r.lower_bound(net.layers.len(), spec);
        vec![lower.narrow(1, 0, k), lower.narrow(1, k, k).neg()]
    };
    let mut parts = chunked(&net.layers, x, Some(relaxed), &mut run);
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
            let ibp = ibp_bounds(&net.layers, x, ball);
            (1..net.layers.len())
                .filter(|&i| matches!(net.layers[i], Layer::Relu))
                .map(|i| (ibp[i - 1].0.shallow_clone(), ibp[i - 1].1.shallow_clone()))
                .collect()
        }
        Some(relaxed) => {
            let r = Relaxer::new(&net.layers, x, ball, relaxed);
            r.lines
                .iter()
                .flatten()
                .map(|lines| (lines.l.squeeze_dim(1), lines.u.squeeze_dim(1)))
                .collect()
        }
    }
}

/// Whether every margin lower bound is positive (certified), per example.
pub fn certified(margins_lower: &Tensor, y: &Tensor) -> Tensor {
    let k = margins_lower.size()[1];
    // Entry y is 0 by construction; count it as positive.
    let onehot = y.one_hot(k).to_kind(Kind::Bool);
    margins_lower.gt(0.0).logical_or(&onehot).all_dim(1, false)
}

// ---------------------------------------------------------------------------------------------
// Tightness (seed 001)

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
    /// Unstable neurons per ReLU layer, per example (`[B]` each, as floats).
    pub unstable: Vec<Tensor>,
}

/// r1 and r2 of seed 001 for the margin rows of `relaxed`.
///
/// `x*_t` minimises the relaxed (linear) lower bound of row `t` over the input set; the real
/// network at `x*_t` gives a feasible margin `p_t >= m_t`. r2 measures how far the real
/// pre-activations at `x*_t` sit from the points where the chosen lines touch the ReLU: the
/// lower line `a = alpha z` touches at 0 (Fast-Lin's `0 < alpha < 1`), on `z <= 0`
/// (`alpha = 0`) or on `z >= 0` (`alpha = 1`); the upper chord touches at `l` and `u`. When a
/// row's r2 is 0 the relaxation is exact at `x*_t`, hence `p_t = m_t` (Proposition 1).
pub fn tightness(net: &Network, x: &Tensor, y: &Tensor, ball: Ball, relaxed: Relaxed) -> Tightness {
    tightness_of(&net.layers, net.num_classes, x, y, ball, relaxed)
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
    let unstable = parts.split_off(5);
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
    let mut r2_rows = Tensor::zeros([b, k], (x.kind(), x.device()));
    for t in &trace {
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
        let d = select(&t.lower, &to_lower, &zero) + select(&t.upper, &to_upper, &zero);
        r2_rows = r2_rows + sum_rest(&d);
    }
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
    let mut out = vec![
        m,
        p,
        r1_rows.sum_dim_intlist([1i64].as_slice(), false, None::<Kind>),
        r2_rows.sum_dim_intlist([1i64].as_slice(), false, None::<Kind>),
        r2_rows,
    ];
    out.extend(unstable);
    out
}

/// Tightness statistics of a linear relaxation on a set, in batches, without gradients, in
/// double precision; `None` for IBP.
pub fn gap_stats(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    ball: Ball,
    method: BoundMethod,
    batch: i64,
) -> Option<GapStats> {
    let relaxed = method.relaxed()?;
    let n = y.size()[0];
    if n == 0 {
        return None;
    }
    let edges = crate::metrics::gap_hist_edges();
    let mut counts = vec![0u64; edges.len() - 1];
    let mut unstable: Vec<f64> = Vec::new();
    let (mut r1_sum, mut r2_sum, mut exact) = (0.0, 0.0, 0i64);
    let mut start = 0;
    let layers = layers_f64(&net.layers);
    tch::no_grad(|| {
        while start < n {
            let len = batch.max(1).min(n - start);
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
            start += len;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attack::{self, AttackLoss, PgdConfig};
    use crate::model::LayerSpec;
    use tch::Device;

    const LINEAR_METHODS: [BoundMethod; 3] = [
        BoundMethod::CrownIbp,
        BoundMethod::Fastlin,
        BoundMethod::Crown,
    ];

    fn lin(i: i64, o: i64) -> LayerSpec {
        LayerSpec::Linear {
            in_features: i,
            out_features: o,
        }
    }

    fn conv(i: i64, o: i64, k: i64, s: i64, p: i64) -> LayerSpec {
        LayerSpec::Conv2d {
            in_channels: i,
            out_channels: o,
            kernel: k,
            stride: s,
            padding: p,
        }
    }

    /// A random network in double precision.
    fn net64(specs: Vec<LayerSpec>, input: &[i64], classes: i64, seed: i64) -> Network {
        tch::manual_seed(seed);
        let mut net = Network::new(specs, input, classes, Device::Cpu);
        net.vs.double();
        net
    }

    fn mlp64(d: i64, hidden: &[i64], classes: i64, seed: i64) -> Network {
        let mut specs = Vec::new();
        let mut w = d;
        for &h in hidden {
            specs.push(lin(w, h));
            specs.push(LayerSpec::Relu);
            w = h;
        }
        specs.push(lin(w, classes));
        net64(specs, &[d], classes, seed)
    }

    /// Normalize, a stride-2 conv whose transpose needs output padding (7 -> 3), a padded conv,
    /// flatten and two dense layers: every layer kind the bounds walk.
    fn conv64(seed: i64) -> Network {
        let specs = vec![
            LayerSpec::Normalize {
                mean: vec![0.4],
                std: vec![0.7],
            },
            conv(1, 4, 4, 2, 1),
            LayerSpec::Relu,
            conv(4, 5, 3, 1, 1),
            LayerSpec::Relu,
            LayerSpec::Flatten,
            lin(45, 12),
            LayerSpec::Relu,
            lin(12, 3),
        ];
        net64(specs, &[1, 7, 7], 3, seed)
    }

    fn opts() -> (Kind, Device) {
        (Kind::Double, Device::Cpu)
    }

    /// `n` random points of the ball clipped to the box around each example, `[B * n, ..]`.
    fn samples(x: &Tensor, ball: Ball, n: i64, corners: bool) -> Tensor {
        let b = x.size()[0];
        let mut shape = vec![b, n];
        shape.extend_from_slice(&x.size()[1..]);
        let x0 = x.unsqueeze(1);
        let d: i64 = x.size()[1..].iter().product();
        let delta = match (ball.norm, corners) {
            (Norm::Linf, false) => (Tensor::rand(shape.as_slice(), opts()) * 2.0 - 1.0) * ball.eps,
            (Norm::Linf, true) => {
                Tensor::rand(shape.as_slice(), opts())
                    .gt(0.5)
                    .to_kind(Kind::Double)
                    * (2.0 * ball.eps)
                    - ball.eps
            }
            (Norm::L2, _) => {
                let g = Tensor::randn(shape.as_slice(), opts());
                let norm = g
                    .flatten(2, -1)
                    .square()
                    .sum_dim_intlist([2i64].as_slice(), false, None::<Kind>)
                    .sqrt();
                let mut view = vec![b, n];
                view.extend(std::iter::repeat(1).take(x.dim() - 1));
                let radius = if corners {
                    Tensor::ones([b, n], opts())
                } else {
                    Tensor::rand([b, n], opts()).pow_tensor_scalar(1.0 / d as f64)
                };
                g / norm.reshape(view.as_slice()) * radius.reshape(view.as_slice()) * ball.eps
            }
        };
        (x0 + delta).clamp(0.0, 1.0).flatten(0, 1)
    }

    /// The logits of sampled points: uniform in the set, its corners / sphere, and PGD points.
    fn sampled_logits(net: &Network, x: &Tensor, y: &Tensor, ball: Ball) -> (Tensor, Vec<Tensor>) {
        let b = x.size()[0];
        let mut pts = vec![samples(x, ball, 300, false), samples(x, ball, 100, true)];
        let pgd = attack::pgd(
            net,
            x,
            y,
            &PgdConfig::evaluation(ball.eps, ball.norm, 30, 2, AttackLoss::Margin),
        );
        pts.push(pgd.x_adv);
        let all = Tensor::cat(&pts, 0);
        let n = all.size()[0];
        // Pre-activations of every ReLU, for the intermediate bounds.
        let mut h = all;
        let mut pre = Vec::new();
        for layer in &net.layers {
            if let Layer::Relu = layer {
                pre.push(h.shallow_clone());
            }
            h = layer.forward(&h);
        }
        let _ = (b, n);
        (h, pre)
    }

    /// Index of the example each sampled row came from (the sample layout above).
    fn owners(b: i64) -> Tensor {
        let a = Tensor::arange(b, (Kind::Int64, Device::Cpu));
        Tensor::cat(
            &[
                a.repeat_interleave_self_int(300, 0, None),
                a.repeat_interleave_self_int(100, 0, None),
                a,
            ],
            0,
        )
    }

    fn check_sound(net: &Network, x: &Tensor, y: &Tensor, ball: Ball, what: &str) {
        let b = x.size()[0];
        // Not under no_grad: PGD needs gradients.
        let (logits, pre) = sampled_logits(net, x, y, ball);
        let (logits, pre): (Tensor, Vec<Tensor>) =
            (logits.detach(), pre.iter().map(|p| p.detach()).collect());
        let own = owners(b);
        let ys = y.index_select(0, &own);
        let tol = 1e-9;
        for method in BoundMethod::ALL {
            let (lo, hi) = tch::no_grad(|| logit_bounds(net, x, ball, method));
            let (lo, hi) = (lo.index_select(0, &own), hi.index_select(0, &own));
            let below = (&lo - &logits).max().double_value(&[]);
            let above = (&logits - &hi).max().double_value(&[]);
            assert!(
                below <= tol && above <= tol,
                "{what} {}: a sampled logit is outside the bounds by {below:e} / {above:e}",
                method.name()
            );
            let m = tch::no_grad(|| margin_lower(net, x, y, ball, method)).index_select(0, &own);
            let margins = logits.gather(1, &ys.unsqueeze(1), false) - &logits;
            let worst = (&m - &margins).max().double_value(&[]);
            assert!(
                worst <= tol,
                "{what} {}: a sampled margin is below the margin bound by {worst:e}",
                method.name()
            );
            let relu = tch::no_grad(|| relu_bounds(net, x, ball, method.relaxed()));
            assert_eq!(relu.len(), pre.len());
            for (j, ((l, u), z)) in relu.iter().zip(&pre).enumerate() {
                let (l, u) = (l.index_select(0, &own), u.index_select(0, &own));
                let out = (&l - z)
                    .max()
                    .double_value(&[])
                    .max((z - &u).max().double_value(&[]));
                assert!(
                    out <= tol,
                    "{what} {}: ReLU layer {j} pre-activation outside its bounds by {out:e}",
                    method.name()
                );
            }
        }
    }

    #[test]
    fn every_method_is_sound_on_random_mlps_and_convnets() {
        for seed in 0..3 {
            for norm in [Norm::Linf, Norm::L2] {
                for eps in [0.03, 0.15] {
                    let ball = Ball { eps, norm };
                    tch::manual_seed(100 + seed);
                    let net = mlp64(6, &[12, 10], 4, seed);
                    let x = Tensor::rand([5, 6], opts());
                    let y = Tensor::randint(4, [5], (Kind::Int64, Device::Cpu));
                    check_sound(
                        &net,
                        &x,
                        &y,
                        ball,
                        &format!("mlp seed {seed} {norm:?} eps {eps}"),
                    );
                    let net = conv64(seed);
                    let x = Tensor::rand([3, 1, 7, 7], opts());
                    let y = Tensor::randint(3, [3], (Kind::Int64, Device::Cpu));
                    check_sound(
                        &net,
                        &x,
                        &y,
                        ball,
                        &format!("conv seed {seed} {norm:?} eps {eps}"),
                    );
                }
            }
        }
    }

    #[test]
    fn eps_zero_gives_the_forward_pass() {
        for net in [mlp64(5, &[8, 8], 3, 7), conv64(7)] {
            let mut shape = vec![4];
            shape.extend_from_slice(&net.input_shape);
            let x = Tensor::rand(shape.as_slice(), opts());
            let y = Tensor::randint(net.num_classes, [4], (Kind::Int64, Device::Cpu));
            let logits = net.forward(&x);
            let margins = logits.gather(1, &y.unsqueeze(1), false) - &logits;
            for norm in [Norm::Linf, Norm::L2] {
                let ball = Ball { eps: 0.0, norm };
                for method in BoundMethod::ALL {
                    let (lo, hi) = logit_bounds(&net, &x, ball, method);
                    let m = margin_lower(&net, &x, &y, ball, method);
                    for (t, what) in [(&lo, "lower"), (&hi, "upper")] {
                        let err = (t - &logits).abs().max().double_value(&[]);
                        assert!(err < 1e-10, "{} {norm:?}: logit {what} bound differs from the forward pass by {err:e}", method.name());
                    }
                    let err = (&m - &margins).abs().max().double_value(&[]);
                    assert!(
                        err < 1e-10,
                        "{}: margin bound differs by {err:e}",
                        method.name()
                    );
                }
            }
        }
    }

    /// With no unstable neuron the network is affine on the ball: the relaxations must find
    /// the exact minimum of each margin, computed here from the Jacobian (autograd).
    #[test]
    fn without_unstable_neurons_the_linear_bounds_are_exact() {
        let net = mlp64(6, &[10, 10], 3, 3);
        tch::manual_seed(5);
        let x = Tensor::rand([6, 6], opts()) * 0.8 + 0.1;
        let y = Tensor::randint(3, [6], (Kind::Int64, Device::Cpu));
        for norm in [Norm::Linf, Norm::L2] {
            let ball = Ball { eps: 2e-3, norm };
            for (l, u) in relu_bounds(&net, &x, ball, None) {
                let straddle = l
                    .lt(0.0)
                    .logical_and(&u.gt(0.0))
                    .sum(Kind::Int64)
                    .int64_value(&[]);
                assert_eq!(
                    straddle, 0,
                    "test set-up: IBP already finds an unstable neuron"
                );
            }
            for i in 0..6 {
                let xi = x.narrow(0, i, 1).detach().set_requires_grad(true);
                let yi = y.int64_value(&[i]);
                let logits = net.forward(&xi);
                for t in 0..3 {
                    let m_t = logits.double_value(&[0, yi]) - logits.double_value(&[0, t]);
                    let exact = if t == yi {
                        0.0
                    } else {
                        let g = Tensor::run_backward(
                            &[logits.get(0).get(yi) - logits.get(0).get(t)],
                            &[&xi],
                            true,
                            false,
                        );
                        let g = &g[0];
                        match norm {
                            Norm::Linf => {
                                m_t - g.abs().sum(Kind::Double).double_value(&[]) * ball.eps
                            }
                            Norm::L2 => {
                                m_t - g.square().sum(Kind::Double).sqrt().double_value(&[])
                                    * ball.eps
                            }
                        }
                    };
                    for method in LINEAR_METHODS {
                        let m = margin_lower(
                            &net,
                            &x.narrow(0, i, 1),
                            &y.narrow(0, i, 1),
                            ball,
                            method,
                        );
                        let got = m.double_value(&[0, t]);
                        assert!(
                            (got - exact).abs() < 1e-10,
                            "{} {norm:?}: point {i} row {t}: bound {got} vs exact minimum {exact}",
                            method.name()
                        );
                    }
                    let ibp = margin_lower(
                        &net,
                        &x.narrow(0, i, 1),
                        &y.narrow(0, i, 1),
                        ball,
                        BoundMethod::Ibp,
                    );
                    assert!(ibp.double_value(&[0, t]) <= exact + 1e-12);
                }
            }
        }
    }

    /// On a tiny 2-D network the true minimum margin over the ball comes from a fine grid; every
    /// bound lies below it, and the gaps are reported.
    #[test]
    fn tiny_2d_network_bounds_are_below_the_grid_minimum() {
        let net = mlp64(2, &[8, 8], 3, 11);
        let x = Tensor::from_slice(&[0.45f64, 0.6]).reshape([1, 2]);
        let logits = net.forward(&x);
        let y = logits.argmax(1, false);
        let yi = y.int64_value(&[0]);
        let n = 601;
        for norm in [Norm::Linf, Norm::L2] {
            let ball = Ball { eps: 0.3, norm };
            let unstable: i64 = relu_bounds(&net, &x, ball, BoundMethod::Crown.relaxed())
                .iter()
                .map(|(l, u)| {
                    l.lt(0.0)
                        .logical_and(&u.gt(0.0))
                        .sum(Kind::Int64)
                        .int64_value(&[])
                })
                .sum();
            assert!(
                unstable > 0,
                "test set-up: no unstable neuron, the bounds would be exact"
            );
            let g = Tensor::linspace(-ball.eps, ball.eps, n, opts());
            let gx = g.unsqueeze(1).expand([n, n], false).reshape([-1]);
            let gy = g.unsqueeze(0).expand([n, n], false).reshape([-1]);
            let mut pts = Tensor::stack(&[gx, gy], 1) + &x;
            if norm == Norm::L2 {
                let keep = (&pts - &x)
                    .square()
                    .sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)
                    .le(ball.eps * ball.eps);
                pts = pts.index_select(0, &keep.nonzero().squeeze_dim(1));
            }
            let z = net.forward(&pts.clamp(0.0, 1.0));
            let mut report = String::new();
            for t in 0..3 {
                if t == yi {
                    continue;
                }
                let true_min = (z.select(1, yi) - z.select(1, t)).min().double_value(&[]);
                for method in BoundMethod::ALL {
                    let m = margin_lower(&net, &x, &y, ball, method).double_value(&[0, t]);
                    assert!(
                        m <= true_min + 1e-12,
                        "{} {norm:?}: bound {m} above the grid minimum {true_min}",
                        method.name()
                    );
                    report += &format!(
                        "  {norm:?} row {t} {:<9} gap {:.4}\n",
                        method.name(),
                        true_min - m
                    );
                }
            }
            eprintln!(
                "gap to the grid minimum (601x601 grid, {unstable} unstable neurons):\n{report}"
            );
        }
    }

    #[test]
    fn l2_optimum_point_is_feasible_at_the_box_edges() {
        // Points on the faces of the box: the clipped box's minimum often beats the ball's.
        // The point where p_t is measured must still be in the ball and the box, so that
        // p_t >= m_t (r1 >= 0) for every row; a corner of the clipped box can lie outside the
        // l_2 ball, where the relaxation says nothing.
        let mut checked = 0;
        for seed in 0..4 {
            let net = mlp64(6, &[16, 16], 3, 20 + seed);
            tch::manual_seed(seed as i64);
            let x = Tensor::rand([200, 6], opts()).round();
            let y = Tensor::randint(3, [200], (Kind::Int64, Device::Cpu));
            for eps in [0.2, 0.5, 1.0] {
                for relax in [Relaxation::Crown, Relaxation::Fastlin] {
                    let ball = Ball {
                        eps,
                        norm: Norm::L2,
                    };
                    let relaxed = Relaxed {
                        relax,
                        inter: Intermediate::Exact,
                    };
                    let t = tightness(&net, &x, &y, ball, relaxed);
                    let gaps = &t.margin_at_optimum - &t.margin_lower;
                    let worst = gaps.min().double_value(&[]);
                    assert!(
                        worst >= -1e-10,
                        "{relax:?} eps {eps} seed {seed}: p_t < m_t by {worst:e}"
                    );
                    assert!(t.r1.min().double_value(&[]) >= -1e-10, "r1 < 0");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 24);
    }

    #[test]
    fn proposition_1_r2_zero_means_r1_zero_and_both_are_nonnegative() {
        let net = mlp64(4, &[6], 3, 2);
        tch::manual_seed(9);
        // Inside [0.1, 0.9]: the l_2 ball stays in the box, so x*_t is the relaxed optimum for
        // both norms (near the box edges the l_2 input term is not attained and r1 can be > 0
        // with r2 = 0: that looseness is in the input set, not in the ReLU relaxation).
        let x = Tensor::rand([400, 4], opts()) * 0.8 + 0.1;
        let y = Tensor::randint(3, [400], (Kind::Int64, Device::Cpu));
        let mut exact_rows_with_unstable = 0;
        let mut loose_rows = 0;
        for relax in [Relaxation::Crown, Relaxation::Fastlin] {
            for norm in [Norm::Linf, Norm::L2] {
                let ball = Ball { eps: 0.08, norm };
                let relaxed = Relaxed {
                    relax,
                    inter: Intermediate::Exact,
                };
                let t = tightness(&net, &x, &y, ball, relaxed);
                assert!(t.r1.min().double_value(&[]) >= -1e-10, "r1 < 0");
                assert!(t.r2.min().double_value(&[]) >= 0.0, "r2 < 0");
                let gaps = &t.margin_at_optimum - &t.margin_lower;
                assert!(gaps.min().double_value(&[]) >= -1e-10, "p_t < m_t");
                // The margin bound agrees with margin_lower.
                let m = margin_lower_relaxed(&net, &x, &y, ball, relaxed);
                assert!((&m - &t.margin_lower).abs().max().double_value(&[]) < 1e-12);
                let unstable = &t.unstable[0];
                for i in 0..400 {
                    for r in 0..3 {
                        if r == y.int64_value(&[i]) {
                            continue;
                        }
                        let r2 = t.r2_rows.double_value(&[i, r]);
                        let r1 = gaps.double_value(&[i, r]);
                        if r2 <= 1e-12 {
                            assert!(r1 <= 1e-9, "{relax:?} {norm:?}: point {i} row {r}: r2 = {r2:e} but r1 = {r1:e}");
                            if unstable.double_value(&[i]) > 0.0 {
                                exact_rows_with_unstable += 1;
                            }
                        } else if r1 > 1e-6 {
                            loose_rows += 1;
                        }
                    }
                }
            }
        }
        assert!(
            exact_rows_with_unstable > 0,
            "no row with r2 = 0 despite unstable neurons: the test checks nothing"
        );
        assert!(loose_rows > 0, "no loose row: eps too small for the test");
    }

    #[test]
    fn gap_stats_count_exact_points_and_fill_the_histogram() {
        let net = mlp64(4, &[6, 6], 3, 4);
        tch::manual_seed(1);
        let x = Tensor::rand([50, 4], opts());
        let y = Tensor::randint(3, [50], (Kind::Int64, Device::Cpu));
        // At a tiny eps nothing is unstable: every bound is exact.
        let tiny = gap_stats(
            &net,
            &x,
            &y,
            Ball {
                eps: 1e-6,
                norm: Norm::Linf,
            },
            BoundMethod::Crown,
            16,
        )
        .unwrap();
        assert_eq!(tiny.frac_exact, 1.0);
        assert!(tiny.unstable_per_layer.iter().all(|&u| u == 0.0));
        let wide = gap_stats(
            &net,
            &x,
            &y,
            Ball {
                eps: 0.3,
                norm: Norm::Linf,
            },
            BoundMethod::Crown,
            16,
        )
        .unwrap();
        assert!(wide.frac_exact < 1.0 && wide.r1_mean > 0.0 && wide.r2_mean > 0.0);
        assert_eq!(wide.unstable_per_layer.len(), 2);
        assert_eq!(
            wide.hist_counts.iter().sum::<u64>(),
            50 * 2,
            "one entry per point and row t != y"
        );
        assert_eq!(wide.hist_edges.len(), wide.hist_counts.len() + 1);
        // The mean unstable count agrees with the pre-activation bounds.
        let relu = relu_bounds(
            &net,
            &x,
            Ball {
                eps: 0.3,
                norm: Norm::Linf,
            },
            BoundMethod::Crown.relaxed(),
        );
        let count = relu[0]
            .0
            .lt(0.0)
            .logical_and(&relu[0].1.gt(0.0))
            .sum(Kind::Double)
            .double_value(&[])
            / 50.0;
        assert!((count - wide.unstable_per_layer[0]).abs() < 1e-12);
        assert!(gap_stats(
            &net,
            &x,
            &y,
            Ball {
                eps: 0.3,
                norm: Norm::Linf
            },
            BoundMethod::Ibp,
            16
        )
        .is_none());
    }

    /// With many projections, the estimated Fast-Lin intermediate bounds approach the exact ones
    /// (the median of |Cauchy| samples estimates an l1 norm).
    #[test]
    fn random_projections_approach_the_exact_fastlin_bounds() {
        for net in [mlp64(20, &[30, 30, 20], 4, 5), conv64(5)] {
            let mut shape = vec![3];
            shape.extend_from_slice(&net.input_shape);
            tch::manual_seed(3);
            let x = Tensor::rand(shape.as_slice(), opts());
            let ball = Ball {
                eps: 0.05,
                norm: Norm::Linf,
            };
            let exact = relu_bounds(&net, &x, ball, BoundMethod::Fastlin.relaxed());
            let proj = relu_bounds(
                &net,
                &x,
                ball,
                Some(Relaxed {
                    relax: Relaxation::Fastlin,
                    inter: Intermediate::Projection { dim: 4000 },
                }),
            );
            let ibp = relu_bounds(&net, &x, ball, None);
            for (j, ((le, ue), (lp, up))) in exact.iter().zip(&proj).enumerate().skip(1) {
                // Where IBP already proves a neuron stable for an example, the exact pass may
                // keep the interval bounds (they decide nothing): compare the others.
                let (il, iu) = &ibp[j];
                let keep = il.lt(0.0).logical_and(&iu.gt(0.0));
                assert!(
                    keep.any().int64_value(&[]) != 0,
                    "layer {j}: nothing unstable"
                );
                let re = ((ue - le) / 2.0).masked_select(&keep);
                let rp = ((up - lp) / 2.0).masked_select(&keep);
                let rel = ((&rp - &re).abs() / re.clamp_min(1e-9))
                    .max()
                    .double_value(&[]);
                assert!(
                    rel < 0.15,
                    "layer {j}: projected radius off by {rel:.3} relative"
                );
                let ce = ((ue + le) / 2.0).masked_select(&keep);
                let cp = ((up + lp) / 2.0).masked_select(&keep);
                let dc = ((&cp - &ce).abs() / re.clamp_min(1e-9))
                    .max()
                    .double_value(&[]);
                assert!(
                    dc < 0.15,
                    "layer {j}: projected centre off by {dc:.3} radii"
                );
            }
        }
    }
}
