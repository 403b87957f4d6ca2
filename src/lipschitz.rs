//! Lipschitz constants (l_2 operator norms) of layers and networks, the differentiable bounds
//! that `method = "lipschitz"` trains with, and the l_2 certificate they give.
//!
//! Estimators, per layer and for the whole network:
//! - `power`: power iteration on `A^T A` (a *lower* estimate of `||A||_2`; stops when the
//!   relative change is below a tolerance).
//! - `gram`: Gram iteration ([`gram_bound`]): a guaranteed *upper* bound at every iteration
//!   count, converging super-linearly; conv layers are handled batched over the FFT blocks.
//! - `exact`: the SVD of a dense weight; for a conv layer the largest singular value over the
//!   FFT blocks of the kernel, i.e. the exact norm of the *circular* convolution (see below).
//! - `product`: the product over layers of the per-layer exact norms (the classical bound).
//! - `lipsdp`: LipSDP-Neuron (Fazlyab et al. 2019) for MLPs, solved with clarabel's PSD cone
//!   for small nets and by a feasible-multiplier first-order method for larger ones; the value
//!   reported is always re-verified from the multiplier (a Cholesky factorisation and an
//!   eigenvalue in double precision), so it is a certified upper bound.
//! - `empirical`: a lower bound on the true constant: the largest difference quotient
//!   `||f(x + d) - f(x)|| / ||d||` found by power iteration on `d` from data points.
//!
//! At the network level `power`, `gram` and `exact` are the products of the per-layer values of
//! that estimator (the exact Lipschitz constant of a ReLU network is NP-hard to compute), so
//! network `exact` equals `product`; `empirical <= true constant <= lipsdp <= product`.
//!
//! Conv layers. The FFT view is exact for the circular convolution on an `N x N` grid. A
//! stride-1 layer with zero padding `p <= k - 1` on an `n x n` input is a crop of the full
//! linear correlation of the input, which equals the circular one on `N = n + k - 1` (no
//! wrap-around). A stride-`s` layer is a stride-1 valid correlation of the polyphase
//! components of its zero-padded input (an isometric rearrangement) with the kernel
//! rearranged to `[co, ci s^2, ceil(k/s), ceil(k/s)]` ([`polyphase_kernel`]), so the same
//! argument applies on the polyphase grid. These FFT values are guaranteed upper bounds for the
//! layer as applied; they are the `exact` and `gram` values reported for conv layers of a
//! network, while `power` runs on the layer as applied (zero padding and stride) and stays
//! below the layer's true norm.
pub use crate::config::Estimator;
use crate::config::LipBound;
pub use crate::model::gram_bound;
use crate::model::{layers_f64, Layer, Network};
use std::collections::BTreeMap;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum LipError {
    #[error("Lipschitz estimator `{estimator}`: {message}")]
    Unsupported {
        estimator: &'static str,
        message: String,
    },
    #[error("LipSDP: {0}")]
    Solver(String),
    #[error("Lipschitz estimator `empirical` needs data points")]
    NoData,
}

/// Knobs of the estimators.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Power iteration: at most this many iterations...
    pub power_iters: u32,
    /// ...stopping when the relative change of the estimate is below this.
    pub power_tol: f64,
    /// Gram iterations.
    pub gram_iters: u32,
    /// Empirical bound: data points used and power-iteration steps per point.
    pub empirical_points: i64,
    pub empirical_steps: u32,
    /// LipSDP: first-order steps on the multipliers (the larger nets).
    pub lipsdp_steps: u32,
    /// LipSDP: the largest SDP dimension (reduced input + hidden neurons) handed to clarabel;
    /// larger nets use the first-order method.
    pub lipsdp_clarabel_max_dim: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            power_iters: 200,
            power_tol: 1e-7,
            gram_iters: 8,
            empirical_points: 64,
            empirical_steps: 30,
            lipsdp_steps: 200,
            lipsdp_clarabel_max_dim: 60,
        }
    }
}

impl Settings {
    /// Cheaper settings for the per-epoch evaluation during training.
    pub fn per_epoch() -> Self {
        Self {
            power_iters: 50,
            power_tol: 1e-5,
            gram_iters: 6,
            empirical_points: 32,
            empirical_steps: 15,
            lipsdp_steps: 60,
            lipsdp_clarabel_max_dim: 40,
        }
    }
}

fn scalar(t: &Tensor) -> f64 {
    t.to_kind(Kind::Double).double_value(&[])
}

fn vec_norm(t: &Tensor) -> Tensor {
    t.square().sum(t.kind()).sqrt()
}

// ---------------------------------------------------------------------------------------------
// Dense matrices

/// A power-iteration estimate: `sigma = ||A v||` for a unit `v`, so `sigma <= ||A||_2`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerResult {
    pub sigma: f64,
    pub iters: u32,
}

/// Power iteration on `W^T W` for a matrix `[m, n]`: at most `max_iters` iterations, stopping
/// when the relative change of the estimate is `<= tol` (`tol = 0`: exactly `max_iters`).
pub fn power_dense(w: &Tensor, max_iters: u32, tol: f64) -> PowerResult {
    tch::no_grad(|| {
        let w = w.detach();
        let v = Tensor::randn([w.size()[1]], (w.kind(), w.device()));
        power_loop(v, max_iters, tol, |v| {
            let u = w.mv(v);
            (scalar(&vec_norm(&u)), w.tr().mv(&u))
        })
    })
}

/// The iteration both power methods share: from a random `v`, `step(v)` gives `||A v||` and
/// `A^T A v`, normalised into the next `v`, until `max_iters` or a relative change `<= tol`.
fn power_loop(
    mut v: Tensor,
    max_iters: u32,
    tol: f64,
    mut step: impl FnMut(&Tensor) -> (f64, Tensor),
) -> PowerResult {
    v = &v / vec_norm(&v);
    let mut sigma = 0.0;
    for it in 1..=max_iters.max(1) {
        let (s, g) = step(&v);
        v = (&g / vec_norm(&g).clamp_min(1e-300)).detach();
        let done = it > 1 && tol > 0.0 && (s - sigma).abs() <= tol * s;
        sigma = s;
        if done {
            return PowerResult { sigma, iters: it };
        }
    }
    PowerResult {
        sigma,
        iters: max_iters.max(1),
    }
}

/// The largest singular value of a matrix (or of every matrix of a batch, then the maximum),
/// by SVD.
pub fn exact_dense(w: &Tensor) -> f64 {
    tch::no_grad(|| scalar(&w.detach().svd(true, false).1.max()))
}

// ---------------------------------------------------------------------------------------------
// Convolutions

/// The FFT blocks of a kernel `[co, ci, k, k]` zero-padded to `[nh, nw]`: `[nh, nw/2+1, co, ci]`
/// (complex). The circular convolution on an `nh x nw` grid is block-diagonalised by the 2-D
/// DFT with these blocks; the other half of the frequencies are complex conjugates (same
/// singular values).
pub fn conv_fft_blocks(kernel: &Tensor, nh: i64, nw: i64) -> Tensor {
    kernel
        .fft_rfft2([nh, nw].as_slice(), [-2i64, -1].as_slice(), "backward")
        .permute([2, 3, 0, 1])
}

/// Gram-iteration upper bound on the norm of the circular convolution of `kernel` on an
/// `nh x nw` grid: the maximum over frequencies of the batched Gram bound. Differentiable.
pub fn gram_conv(kernel: &Tensor, nh: i64, nw: i64, iters: u32) -> Tensor {
    gram_bound(&conv_fft_blocks(kernel, nh, nw), iters).max()
}

/// The exact norm of the circular convolution of `kernel` on an `nh x nw` grid (the largest
/// singular value over the FFT blocks).
pub fn exact_conv_circular(kernel: &Tensor, nh: i64, nw: i64) -> f64 {
    tch::no_grad(|| exact_dense(&conv_fft_blocks(&kernel.detach(), nh, nw)))
}

/// The circular convolution (PyTorch's cross-correlation with wrap-around) of `x`
/// `[B, ci, n, n]`, output `[B, co, n, n]`.
pub fn circular_conv(kernel: &Tensor, x: &Tensor) -> Tensor {
    let k = kernel.size()[2];
    x.pad([0, k - 1, 0, k - 1].as_slice(), "circular", None)
        .conv2d(kernel, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1)
}

/// Power iteration on `A^T A` for any linear map `op` of inputs shaped `in_shape` (with a
/// leading batch dimension of 1), the adjoint by autograd.
pub fn power_operator(
    op: &dyn Fn(&Tensor) -> Tensor,
    in_shape: &[i64],
    opts: (Kind, Device),
    max_iters: u32,
    tol: f64,
) -> PowerResult {
    tch::with_grad(|| {
        power_loop(Tensor::randn(in_shape, opts), max_iters, tol, |v| {
            let x = v.detach().set_requires_grad(true);
            let y = op(&x);
            let s = scalar(&vec_norm(&y.detach()));
            let objective = y.square().sum(y.kind()) * 0.5;
            let g = Tensor::run_backward(&[objective], &[&x], false, false)
                .pop()
                .unwrap_or_else(|| x.zeros_like());
            (s, g)
        })
    })
}

/// The dense matrix `[out, in]` of a linear map of inputs shaped `in_shape` (without batch
/// dimension), built by applying it to the standard basis (for small maps only).
pub fn dense_matrix(
    op: &dyn Fn(&Tensor) -> Tensor,
    in_shape: &[i64],
    opts: (Kind, Device),
) -> Tensor {
    tch::no_grad(|| {
        let n: i64 = in_shape.iter().product();
        let eye = Tensor::eye(n, opts);
        let mut shape = vec![n];
        shape.extend_from_slice(in_shape);
        let out = op(&eye.reshape(shape.as_slice()));
        out.reshape([n, -1]).tr()
    })
}

// ---------------------------------------------------------------------------------------------
// Networks

fn forward_layers(layers: &[Layer], x: &Tensor) -> Tensor {
    layers.iter().fold(x.shallow_clone(), |h, l| l.forward(&h))
}

/// The l_2 Lipschitz constant of a Normalize layer: `1 / min(std)`.
fn normalize_factor(std: &Tensor) -> f64 {
    1.0 / scalar(&std.min())
}

/// The kernel `[co, ci s^2, k', k']` (`k' = ceil(k / s)`) of the stride-1 correlation that a
/// stride-`s` correlation with `kernel` `[co, ci, k, k]` is on the polyphase components of its
/// input: `K'[o, (c, a, b), u, v] = K[o, c, s u + a, s v + b]` (zero beyond `k`). Differentiable.
pub fn polyphase_kernel(kernel: &Tensor, stride: i64) -> Tensor {
    if stride <= 1 {
        return kernel.shallow_clone();
    }
    let size = kernel.size();
    let (co, ci, k) = (size[0], size[1], size[2]);
    let kp = (k + stride - 1) / stride;
    let extra = kp * stride - k;
    kernel
        .pad([0, extra, 0, extra].as_slice(), "constant", Some(0.0))
        .reshape([co, ci, kp, stride, kp, stride])
        .permute([0, 1, 3, 5, 2, 4])
        .reshape([co, ci * stride * stride, kp, kp])
}

/// The kernel and the circular grid whose FFT norm bounds a conv layer (stride `s`, zero
/// padding `p`) on an input `in_shape` from above. Stride 1: the layer is a crop of the full
/// linear correlation, which is the circular one on `n + k - 1` (no wrap-around). Stride `s`:
/// the layer is a stride-1 *valid* correlation with [`polyphase_kernel`] of the polyphase
/// components of the zero-padded input (an isometric embedding of the input), of spatial size
/// `m = ceil((n + 2p) / s)`: the circular one on `m + k' - 1` bounds it.
fn conv_operator(
    in_shape: &[i64],
    kernel: &Tensor,
    stride: i64,
    padding: i64,
) -> (Tensor, i64, i64) {
    let (h, w) = (in_shape[in_shape.len() - 2], in_shape[in_shape.len() - 1]);
    if stride <= 1 {
        let k = kernel.size()[2];
        return (kernel.shallow_clone(), h + k - 1, w + k - 1);
    }
    let kp = polyphase_kernel(kernel, stride);
    let k = kp.size()[2];
    let m = |n: i64| (n + 2 * padding + stride - 1) / stride;
    (kp, m(h) + k - 1, m(w) + k - 1)
}

/// A differentiable guaranteed upper bound on the l_2 Lipschitz constant of one layer (a
/// scalar tensor), or `None` for layers that are 1-Lipschitz or whose constant is 1 (ReLU,
/// Flatten, SLL, CPL).
pub fn layer_gram_bound(layer: &Layer, in_shape: &[i64], iters: u32) -> Option<Tensor> {
    match layer {
        Layer::Conv2d {
            weight,
            stride,
            padding,
            ..
        } => {
            let (kernel, nh, nw) = conv_operator(in_shape, weight, *stride, *padding);
            Some(gram_conv(&kernel, nh, nw, iters))
        }
        Layer::Normalize { std, .. } => Some(std.min().reciprocal()),
        l => l.effective_weight().map(|w| gram_bound(&w, iters)),
    }
}

/// The product over layers of [`layer_gram_bound`]: a differentiable, guaranteed upper bound
/// on the network's l_2 Lipschitz constant (the bound of `method = "lipschitz"`, `gram`).
pub fn network_gram_bound(net: &Network, shapes: &[Vec<i64>], iters: u32) -> Tensor {
    let mut total = Tensor::ones([], (Kind::Float, net.device()));
    for (i, layer) in net.layers.iter().enumerate() {
        if let Some(b) = layer_gram_bound(layer, &shapes[i], iters) {
            total *= b.to_kind(Kind::Float);
        }
    }
    total
}

/// One layer's values in a [`Report`].
#[derive(Debug, Clone, PartialEq)]
pub struct LayerValues {
    /// Index of the layer in the network (the `i` of `layers.{i}` in model.safetensors).
    pub index: usize,
    pub kind: &'static str,
    pub values: BTreeMap<String, f64>,
}

/// Per-layer and whole-network estimates, with the seconds each estimator took.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub layers: Vec<LayerValues>,
    pub network: BTreeMap<String, f64>,
    pub seconds: BTreeMap<String, f64>,
    /// How a value was obtained where that matters (e.g. which LipSDP solver).
    pub notes: Vec<String>,
}

impl Report {
    /// `{"layers":[{"index":i,"kind":..,"<method>":v}],"network":{..},"seconds":{..},"notes":[..]}`.
    pub fn to_json(&self) -> serde_json::Value {
        let layers: Vec<serde_json::Value> = self
            .layers
            .iter()
            .map(|l| {
                let mut m = serde_json::Map::new();
                m.insert("index".into(), serde_json::json!(l.index));
                m.insert("kind".into(), serde_json::json!(l.kind));
                for (k, v) in &l.values {
                    m.insert(k.clone(), serde_json::json!(v));
                }
                serde_json::Value::Object(m)
            })
            .collect();
        serde_json::json!({
            "layers": layers,
            "network": self.network,
            "seconds": self.seconds,
            "notes": self.notes,
        })
    }
}

/// A per-layer estimate of one layer (double precision), or `None` for layers with constant 1.
fn layer_value(layer: &Layer, in_shape: &[i64], est: Estimator, s: &Settings) -> Option<f64> {
    match layer {
        Layer::Relu | Layer::Flatten | Layer::PadChannels { .. } => None,
        Layer::Normalize { std, .. } => Some(normalize_factor(std)),
        // 1-Lipschitz by construction (nonlinear residual blocks).
        Layer::Sll { .. } | Layer::SllConv { .. } | Layer::Cpl { .. } => Some(1.0),
        Layer::Conv2d {
            weight,
            stride,
            padding,
            ..
        } => {
            let w = weight.detach().to_kind(Kind::Double);
            let (kernel, nh, nw) = conv_operator(in_shape, &w, *stride, *padding);
            Some(match est {
                Estimator::Power => {
                    let (st, pd) = (*stride, *padding);
                    let op = |x: &Tensor| x.conv2d(&w, None::<Tensor>, [st; 2], [pd; 2], [1; 2], 1);
                    let mut shape = vec![1];
                    shape.extend_from_slice(in_shape);
                    power_operator(
                        &op,
                        &shape,
                        (Kind::Double, w.device()),
                        s.power_iters,
                        s.power_tol,
                    )
                    .sigma
                }
                Estimator::Gram => {
                    tch::no_grad(|| scalar(&gram_conv(&kernel, nh, nw, s.gram_iters)))
                }
                _ => exact_conv_circular(&kernel, nh, nw),
            })
        }
        l => {
            let w = tch::no_grad(|| l.effective_weight())?
                .detach()
                .to_kind(Kind::Double);
            Some(match est {
                Estimator::Power => power_dense(&w, s.power_iters, s.power_tol).sigma,
                Estimator::Gram => tch::no_grad(|| scalar(&gram_bound(&w, s.gram_iters))),
                _ => exact_dense(&w),
            })
        }
    }
}

/// Runs the estimators on a network. `data`: points for the empirical lower bound (`[B, ..]`).
pub fn estimate(
    net: &Network,
    estimators: &[Estimator],
    data: Option<&Tensor>,
    s: &Settings,
) -> Result<Report, LipError> {
    let shapes = net.layer_shapes();
    let mut report = Report::default();
    let mut per_layer: Vec<LayerValues> = net
        .layers
        .iter()
        .enumerate()
        .filter(|(_, l)| !matches!(l, Layer::Relu | Layer::Flatten | Layer::PadChannels { .. }))
        .map(|(index, l)| LayerValues {
            index,
            kind: l.kind_name(),
            values: BTreeMap::new(),
        })
        .collect();
    for &est in estimators {
        let started = Instant::now();
        let value = match est {
            Estimator::Power | Estimator::Gram | Estimator::Exact | Estimator::Product => {
                let inner = if est == Estimator::Product {
                    Estimator::Exact
                } else {
                    est
                };
                let mut total = 1.0;
                for lv in per_layer.iter_mut() {
                    let layer = &net.layers[lv.index];
                    if let Some(v) = layer_value(layer, &shapes[lv.index], inner, s) {
                        total *= v;
                        if est.per_layer() {
                            lv.values.insert(est.name().to_string(), v);
                        }
                    }
                }
                total
            }
            Estimator::Lipsdp => {
                let ws = mlp_weights(net).map_err(|message| LipError::Unsupported {
                    estimator: "lipsdp",
                    message,
                })?;
                let r = lipsdp(&ws, s)?;
                report.notes.push(format!(
                    "lipsdp: {} (SDP dimension {}), verified from the multipliers",
                    r.solver, r.dim
                ));
                r.value
            }
            Estimator::Empirical => {
                let x = data.ok_or(LipError::NoData)?;
                let n = x.size()[0].min(s.empirical_points);
                empirical_lower_bound(net, &x.narrow(0, 0, n), s.empirical_steps)
            }
        };
        if est == Estimator::Product && estimators.contains(&Estimator::Exact) {
            // Same per-layer SVDs as `exact`: report the same number (no rounding drift).
            if let Some(&v) = report.network.get("exact") {
                report.network.insert("product".into(), v);
                report
                    .seconds
                    .insert("product".into(), started.elapsed().as_secs_f64());
                continue;
            }
        }
        report.network.insert(est.name().to_string(), value);
        report
            .seconds
            .insert(est.name().to_string(), started.elapsed().as_secs_f64());
    }
    per_layer.retain(|l| !l.values.is_empty() || estimators.iter().any(|e| e.per_layer()));
    report.layers = per_layer;
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// Empirical lower bound

/// A lower bound on the network's l_2 Lipschitz constant: from every point `x` of `points`,
/// power iteration on the perturbation `d` (gradient ascent on `||f(x + d) - f(x)||^2` at fixed
/// `||d||`, which is power iteration on the local Jacobian), at two radii; the largest exact
/// difference quotient `||f(x + d) - f(x)|| / ||d||` seen. Every quotient is a true lower bound
/// (computed in double precision).
pub fn empirical_lower_bound(net: &Network, points: &Tensor, steps: u32) -> f64 {
    let layers = layers_f64(&net.layers);
    let x = points.detach().to_kind(Kind::Double);
    let b = x.size()[0];
    if b == 0 {
        return 0.0;
    }
    let per_row = |t: &Tensor| -> Tensor {
        t.reshape([b, -1])
            .square()
            .sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)
            .sqrt()
    };
    let bshape = |t: &Tensor| -> Vec<i64> {
        let mut s = vec![b];
        s.extend(std::iter::repeat_n(1, t.dim() - 1));
        s
    };
    let fx = tch::no_grad(|| forward_layers(&layers, &x));
    let mut best = 0.0f64;
    for radius in [1e-4f64, 1e-1] {
        let mut d = x.randn_like();
        let mut scale = (per_row(&d).reciprocal() * radius).reshape(bshape(&d).as_slice());
        d = &d * &scale;
        for _ in 0..steps.max(1) {
            let di = d.detach().set_requires_grad(true);
            let diff = tch::with_grad(|| forward_layers(&layers, &(&x + &di)) - &fx);
            let q = per_row(&diff.detach()) / per_row(&di.detach());
            best = best.max(tch::no_grad(|| scalar(&q.max())));
            let objective = diff.square().sum(Kind::Double) * 0.5;
            let g = Tensor::run_backward(&[objective], &[&di], false, false)
                .pop()
                .unwrap_or_else(|| di.zeros_like());
            let gn = per_row(&g).clamp_min(1e-300);
            scale = (gn.reciprocal() * radius).reshape(bshape(&g).as_slice());
            d = (g * &scale).detach();
        }
        let q =
            tch::no_grad(|| per_row(&(forward_layers(&layers, &(&x + &d)) - &fx)) / per_row(&d));
        best = best.max(scalar(&q.max()));
    }
    best
}

// ---------------------------------------------------------------------------------------------
// LipSDP-Neuron

/// The weights `W_0, .., W_m` (double precision, detached) of an MLP
/// `[Normalize] [Flatten] Linear (ReLU Linear)*`, a leading Normalize folded into `W_0`;
/// an error naming the layer for anything else.
pub fn mlp_weights(net: &Network) -> Result<Vec<Tensor>, String> {
    let mut ws: Vec<Tensor> = Vec::new();
    let mut scale: Option<Tensor> = None;
    let mut expect_linear = true;
    for (i, layer) in net.layers.iter().enumerate() {
        match layer {
            Layer::Normalize { std, .. } if ws.is_empty() => {
                let per_input = Tensor::ones(net.input_shape.as_slice(), (Kind::Double, std.device()))
                    / std.detach().to_kind(Kind::Double);
                scale = Some(per_input.reshape([-1]));
            }
            Layer::Flatten if ws.is_empty() => {}
            Layer::Linear { .. } | Layer::Aol { .. } | Layer::Spectral { .. } if expect_linear => {
                let w = tch::no_grad(|| layer.effective_weight())
                    .ok_or_else(|| format!("layer {i} has no weight"))?
                    .detach()
                    .to_kind(Kind::Double);
                let w = match (ws.is_empty(), &scale) {
                    (true, Some(sc)) => w * sc.unsqueeze(0),
                    _ => w,
                };
                ws.push(w);
                expect_linear = false;
            }
            Layer::Relu if !expect_linear => expect_linear = true,
            other => {
                return Err(format!(
                    "LipSDP-Neuron handles MLPs (Linear and ReLU layers alternating); layer {i} is `{}`",
                    other.kind_name()
                ))
            }
        }
    }
    if ws.is_empty() || expect_linear {
        return Err("LipSDP-Neuron needs an MLP that ends with a linear layer".into());
    }
    Ok(ws)
}

/// A LipSDP value and how it was found.
#[derive(Debug, Clone, PartialEq)]
pub struct LipSdpResult {
    /// `sqrt(rho)`, re-verified from the multipliers.
    pub value: f64,
    /// The multipliers (diagonal of T over all hidden neurons).
    pub t: Vec<f64>,
    pub solver: &'static str,
    /// Size of the matrix inequality (reduced input dimension + hidden neurons).
    pub dim: i64,
}

/// The LipSDP-Neuron problem of an MLP with weights `W_0..W_m` (`m` hidden layers), the input
/// block reduced to `r = rank(W_0)` dimensions (`W_0 = U S V^T` -> `U S`: the block `-rho I`
/// on the null space of `W_0` decouples).
struct SdpProblem {
    /// `U S` (`[h_1, r]`) and `W_1..W_m` (double).
    ws: Vec<Tensor>,
    /// Hidden widths.
    widths: Vec<i64>,
    r: i64,
}

impl SdpProblem {
    fn new(ws: &[Tensor]) -> Self {
        let (u, sv, _) = ws[0].svd(true, true);
        let keep = sv
            .gt(sv.max().double_value(&[]) * 1e-13)
            .sum(Kind::Int64)
            .int64_value(&[])
            .max(1);
        let w0 = u.narrow(1, 0, keep) * sv.narrow(0, 0, keep).unsqueeze(0);
        let mut red = vec![w0];
        red.extend(ws[1..].iter().map(|w| w.shallow_clone()));
        let widths = ws[..ws.len() - 1].iter().map(|w| w.size()[0]).collect();
        SdpProblem {
            ws: red,
            widths,
            r: keep,
        }
    }

    fn hidden(&self) -> i64 {
        self.widths.iter().sum()
    }

    /// `Q(T)` (`[H, H]`, minus the hidden block of the LMI) and `A` (`[H, r]`, the coupling to
    /// the input), differentiable in `t` and the weights.
    fn blocks(&self, t: &Tensor) -> (Tensor, Tensor) {
        let h = self.hidden();
        let opts = (Kind::Double, t.device());
        let m = self.widths.len();
        let mut q = Tensor::zeros([h, h], opts);
        let mut offs = vec![0i64];
        for w in &self.widths {
            offs.push(offs[offs.len() - 1] + w);
        }
        q += (t * 2.0).diag_embed(0, -2, -1);
        let last = &self.ws[m];
        let wtw = last.tr().matmul(last);
        let pad_last = wtw.pad(
            [offs[m - 1], h - offs[m], offs[m - 1], h - offs[m]].as_slice(),
            "constant",
            Some(0.0),
        );
        q -= pad_last;
        for k in 1..m {
            // Block (k, k-1): T_k W_k (hidden k from hidden k-1), entered as -T_k W_k in Q.
            let tk = t.narrow(0, offs[k], self.widths[k]);
            let blk = self.ws[k].shallow_clone() * tk.unsqueeze(1);
            let lower = blk.pad(
                [offs[k - 1], h - offs[k], offs[k], h - offs[k + 1]].as_slice(),
                "constant",
                Some(0.0),
            );
            q = q - &lower - lower.tr();
        }
        let t1 = t.narrow(0, 0, self.widths[0]);
        let a1 = &self.ws[0] * t1.unsqueeze(1);
        let a = a1.pad(
            [0, 0, 0, h - self.widths[0]].as_slice(),
            "constant",
            Some(0.0),
        );
        (q, a)
    }

    /// `rho(T) = lambda_max(A^T Q^-1 A)` when `Q(T)` is positive definite (then `sqrt(rho)` is a
    /// certified Lipschitz bound), else `None`. Differentiable.
    fn rho(&self, t: &Tensor) -> Option<Tensor> {
        let (q, a) = self.blocks(t);
        let (l, info) = q.linalg_cholesky_ex(false, false);
        if info.int64_value(&[]) != 0 {
            return None;
        }
        let x = l.linalg_solve_triangular(&a, false, true, false);
        // The non-zero spectrum of X^T X equals that of X X^T: use the smaller.
        let gram = if x.size()[1] > x.size()[0] {
            x.matmul(&x.tr())
        } else {
            x.tr().matmul(&x)
        };
        let gram = (&gram + gram.tr()) * 0.5;
        let top = gram.linalg_eigvalsh("L").max();
        let v = top.double_value(&[]);
        v.is_finite().then_some(top)
    }

    /// A feasible start at least as good as the product bound: per-layer scalar multipliers
    /// `t_m = c_m (1 + d)`, `t_k = t_{k+1} c_k (1 + d)` (`c_k = ||W_k||^2`, `d = 1e-6`). With
    /// `2 a^T W b <= ||a||^2 + c ||b||^2` every hidden coefficient of the LMI is then negative,
    /// so `Q(T)` is positive definite and `rho(T) <= t_1 c_0 (1 + d) = product^2 (1 + d)^(m+1)`.
    /// The common scale is then refined (log grid, golden section): the result never exceeds
    /// that value.
    fn initial_t(&self) -> Option<Tensor> {
        let m = self.widths.len();
        let c: Vec<f64> = self
            .ws
            .iter()
            .map(|w| exact_dense(w).powi(2).max(1e-300))
            .collect();
        let d = 1e-6;
        let mut scalars = vec![0.0f64; m];
        scalars[m - 1] = c[m] * (1.0 + d);
        for k in (0..m - 1).rev() {
            scalars[k] = scalars[k + 1] * c[k + 1] * (1.0 + d);
        }
        let dev = self.ws[0].device();
        let base: Vec<f64> = scalars
            .iter()
            .zip(&self.widths)
            .flat_map(|(&s, &w)| std::iter::repeat_n(s, w as usize))
            .collect();
        let base = Tensor::from_slice(&base).to_device(dev);
        let eval = |log_alpha: f64| -> f64 {
            tch::no_grad(|| {
                self.rho(&(&base * log_alpha.exp()))
                    .map_or(f64::INFINITY, |r| r.double_value(&[]))
            })
        };
        let mut best = (eval(0.0), 0.0);
        for j in -24..=24 {
            let la = j as f64 * 0.25;
            let v = eval(la);
            if v < best.0 {
                best = (v, la);
            }
        }
        if !best.0.is_finite() {
            return None;
        }
        let (mut lo, mut hi) = (best.1 - 0.25, best.1 + 0.25);
        let g = (5f64.sqrt() - 1.0) / 2.0;
        for _ in 0..40 {
            let a = hi - g * (hi - lo);
            let b = lo + g * (hi - lo);
            if eval(a) < eval(b) {
                hi = b;
            } else {
                lo = a;
            }
        }
        let la = if eval((lo + hi) / 2.0) < best.0 {
            (lo + hi) / 2.0
        } else {
            best.1
        };
        Some(base * la.exp())
    }
}

/// First-order improvement of the multipliers: gradient descent on `log rho` over `log t`
/// with backtracking (a step is kept only if `Q` stays positive definite and `rho` drops).
fn improve_t(p: &SdpProblem, t0: &Tensor, steps: u32) -> (Tensor, f64) {
    let mut theta = t0.clamp_min(1e-300).log();
    let mut current = tch::no_grad(|| {
        p.rho(&theta.exp())
            .map_or(f64::INFINITY, |r| r.double_value(&[]))
    });
    let mut lr = 0.1;
    for _ in 0..steps {
        let th = theta.detach().set_requires_grad(true);
        let grad = tch::with_grad(|| {
            p.rho(&th.exp()).map(|r| {
                let obj = r.log();
                Tensor::run_backward(&[obj], &[&th], false, false).pop()
            })
        });
        let Some(Some(g)) = grad else { break };
        let gmax = g.abs().max().double_value(&[]);
        if !(gmax.is_finite() && gmax > 0.0) {
            break;
        }
        let dir = g / gmax;
        let mut accepted = false;
        for _ in 0..12 {
            let cand = &theta - &dir * lr;
            let v = tch::no_grad(|| {
                p.rho(&cand.exp())
                    .map_or(f64::INFINITY, |r| r.double_value(&[]))
            });
            if v < current {
                theta = cand;
                current = v;
                lr *= 1.5;
                accepted = true;
                break;
            }
            lr *= 0.5;
        }
        if !accepted {
            break;
        }
    }
    (theta.exp(), current)
}

/// LipSDP-Neuron for an MLP with weights `W_0..W_m` (double precision): clarabel for
/// problems up to `s.lipsdp_clarabel_max_dim`, the first-order method otherwise (and as the
/// fallback). The value is `sqrt(rho(T))` re-computed from the multipliers found.
pub fn lipsdp(ws: &[Tensor], s: &Settings) -> Result<LipSdpResult, LipError> {
    tch::no_grad(|| -> Result<LipSdpResult, LipError> {
        let ws: Vec<Tensor> = ws
            .iter()
            .map(|w| w.detach().to_kind(Kind::Double))
            .collect();
        if ws.len() == 1 {
            // No hidden layer: the LMI is `W^T W - rho I <= 0`, i.e. the spectral norm.
            let d = ws[0].size()[1];
            if d <= s.lipsdp_clarabel_max_dim {
                if let Ok(rho) = clarabel_linear(&ws[0]) {
                    return Ok(LipSdpResult {
                        value: rho.sqrt(),
                        t: vec![],
                        solver: "clarabel",
                        dim: d,
                    });
                }
            }
            return Ok(LipSdpResult {
                value: exact_dense(&ws[0]),
                t: vec![],
                solver: "spectral norm (no hidden layer)",
                dim: d,
            });
        }
        let p = SdpProblem::new(&ws);
        let dim = p.r + p.hidden();
        let finish = |t: Tensor, solver: &'static str| -> Result<LipSdpResult, LipError> {
            let rho = p
                .rho(&t)
                .ok_or_else(|| LipError::Solver("the multipliers found are not feasible".into()))?
                .double_value(&[]);
            Ok(LipSdpResult {
                value: rho.sqrt(),
                t: Vec::<f64>::try_from(&t.to_device(Device::Cpu)).unwrap_or_default(),
                solver,
                dim,
            })
        };
        if dim <= s.lipsdp_clarabel_max_dim {
            if let Ok(t) = clarabel_t(&p) {
                // Polish: the interior-point answer sits on the boundary; a few first-order
                // steps from a slightly inflated T keep Q positive definite.
                let t_in = &t * (1.0 + 1e-7) + 1e-12;
                let (t2, rho) = improve_t(&p, &t_in, 20);
                if rho.is_finite() {
                    return finish(t2, "clarabel");
                }
            }
        }
        let t0 = p
            .initial_t()
            .ok_or_else(|| LipError::Solver("no feasible multiplier found".into()))?;
        let (t, _) = improve_t(&p, &t0, s.lipsdp_steps);
        finish(t, "first-order")
    })
}

/// Position of entry `(i, j)` in clarabel's packed PSD-triangle vector (upper triangle by
/// columns).
fn tri(i: usize, j: usize) -> usize {
    let (a, b) = if i <= j { (i, j) } else { (j, i) };
    b * (b + 1) / 2 + a
}

/// OpenBLAS (clarabel's LAPACK) on one thread: the PSD cones here are at most a few dozen
/// wide, and its thread pool spinning against libtorch's made a 34-wide LipSDP take 3.1 s
/// instead of 1.1 s (`certlab lipschitz RUN --methods lipsdp`, moons-lip-admm).
fn single_threaded_blas() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    extern "C" {
        fn openblas_set_num_threads(n: std::os::raw::c_int);
    }
    // SAFETY: a plain setter of the OpenBLAS library that build.rs links.
    ONCE.call_once(|| unsafe { openblas_set_num_threads(1) });
}

/// `min x_0` subject to `b - A x` in `cones` (`A` given by its columns).
fn clarabel_solve(
    ncols: usize,
    cols: Vec<Vec<(usize, f64)>>,
    b: Vec<f64>,
    cones: Vec<clarabel::solver::SupportedConeT<f64>>,
) -> Result<Vec<f64>, LipError> {
    let mut cost = vec![0.0; ncols];
    cost[0] = 1.0;
    clarabel_qp(&vec![0.0; ncols], cost, cols, b, cones)
}

/// `min 1/2 x^T diag(p) x + q^T x` subject to `b - A x` in `cones`.
fn clarabel_qp(
    p_diag: &[f64],
    q: Vec<f64>,
    cols: Vec<Vec<(usize, f64)>>,
    b: Vec<f64>,
    cones: Vec<clarabel::solver::SupportedConeT<f64>>,
) -> Result<Vec<f64>, LipError> {
    single_threaded_blas();
    let ncols = q.len();
    use clarabel::algebra::CscMatrix;
    use clarabel::solver::{DefaultSettingsBuilder, DefaultSolver, IPSolver, SolverStatus};
    let mut colptr = vec![0usize];
    let mut rowval = Vec::new();
    let mut nzval = Vec::new();
    for mut col in cols {
        col.sort_by_key(|e| e.0);
        for (row, v) in col {
            rowval.push(row);
            nzval.push(v);
        }
        colptr.push(rowval.len());
    }
    let a = CscMatrix::new(b.len(), ncols, colptr, rowval, nzval);
    let nz: Vec<usize> = (0..ncols).filter(|&i| p_diag[i] != 0.0).collect();
    let mut pcol = vec![0usize];
    for i in 0..ncols {
        pcol.push(pcol[i] + usize::from(p_diag[i] != 0.0));
    }
    let pm = CscMatrix::new(
        ncols,
        ncols,
        pcol,
        nz.clone(),
        nz.iter().map(|&i| p_diag[i]).collect(),
    );
    let cost = q;
    let settings = DefaultSettingsBuilder::default()
        .verbose(false)
        .max_iter(200)
        .build()
        .map_err(|e| LipError::Solver(format!("clarabel settings: {e:?}")))?;
    let mut solver = DefaultSolver::new(&pm, &cost, &a, &b, &cones, settings)
        .map_err(|e| LipError::Solver(format!("clarabel setup: {e:?}")))?;
    solver.solve();
    match solver.solution.status {
        SolverStatus::Solved | SolverStatus::AlmostSolved => Ok(solver.solution.x.clone()),
        other => Err(LipError::Solver(format!("clarabel: {other:?}"))),
    }
}

/// `min rho` s.t. `rho I - W^T W` is PSD, with clarabel: the spectral norm squared (the
/// LipSDP problem of a network without hidden layer).
fn clarabel_linear(w: &Tensor) -> Result<f64, LipError> {
    let d = w.size()[1] as usize;
    let c = Vec::<Vec<f64>>::try_from(&w.tr().matmul(w).to_device(Device::Cpu))
        .map_err(|e| LipError::Solver(e.to_string()))?;
    let nvec = d * (d + 1) / 2;
    let sqrt2 = std::f64::consts::SQRT_2;
    let mut b = vec![0.0; nvec];
    for i in 0..d {
        for j in i..d {
            b[tri(i, j)] = -c[i][j] * if i == j { 1.0 } else { sqrt2 };
        }
    }
    let col: Vec<(usize, f64)> = (0..d).map(|i| (tri(i, i), -1.0)).collect();
    let x = clarabel_solve(
        1,
        vec![col],
        b,
        vec![clarabel::solver::SupportedConeT::PSDTriangleConeT(d)],
    )?;
    Ok(x[0])
}

/// Solves the LipSDP-Neuron SDP with clarabel: minimise `rho` subject to `t >= 0` and
/// `-M(rho, t)` in the PSD cone (upper triangle by columns, off-diagonals scaled by sqrt 2).
fn clarabel_t(p: &SdpProblem) -> Result<Tensor, LipError> {
    use clarabel::solver::SupportedConeT;
    let h = p.hidden() as usize;
    let r = p.r as usize;
    let n = r + h;
    let nvec = n * (n + 1) / 2;
    let sqrt2 = std::f64::consts::SQRT_2;
    let to_vec = |t: &Tensor| -> Vec<Vec<f64>> {
        Vec::<Vec<f64>>::try_from(&t.to_device(Device::Cpu)).unwrap_or_default()
    };
    let weights: Vec<Vec<Vec<f64>>> = p.ws.iter().map(to_vec).collect();
    // offs[k]: global index of the first neuron of hidden layer k (the input block is 0..r).
    let mut offs = vec![r];
    for w in &p.widths {
        offs.push(offs[offs.len() - 1] + *w as usize);
    }
    // Columns: rho, then t_g for every hidden neuron g.
    let ncols = 1 + h;
    let mut cols: Vec<Vec<(usize, f64)>> = vec![Vec::new(); ncols];
    // Nonnegative cone, rows 0..h: s = t.
    for g in 0..h {
        cols[1 + g].push((g, -1.0));
    }
    // PSD rows start at h; s = svec(-M), M = -rho E_in + sum_g t_g M_g + C.
    for i in 0..r {
        cols[0].push((h + tri(i, i), -1.0));
    }
    let m = p.widths.len();
    for k in 0..m {
        let prev = if k == 0 { 0 } else { offs[k - 1] };
        for (i, row) in weights[k].iter().enumerate() {
            let g = offs[k] + i;
            let col = &mut cols[1 + (g - r)];
            col.push((h + tri(g, g), -2.0));
            for (j, &v) in row.iter().enumerate() {
                if v != 0.0 {
                    col.push((h + tri(prev + j, g), sqrt2 * v));
                }
            }
        }
    }
    let mut b = vec![0.0; h + nvec];
    let last = &p.ws[m];
    let c = to_vec(&last.tr().matmul(last));
    let off = offs[m - 1];
    for i in 0..c.len() {
        for j in i..c.len() {
            let scale = if i == j { 1.0 } else { sqrt2 };
            b[h + tri(off + i, off + j)] = -scale * c[i][j];
        }
    }
    let cones = vec![
        SupportedConeT::NonnegativeConeT(h),
        SupportedConeT::PSDTriangleConeT(n),
    ];
    let x = clarabel_solve(ncols, cols, b, cones)?;
    let t: Vec<f64> = x[1..].iter().map(|v| v.max(0.0)).collect();
    Ok(Tensor::from_slice(&t).to_device(p.ws[0].device()))
}

// The largest LMI [`admm_projection`] takes is a config limit (validated before a run starts).
use crate::config::ADMM_MAX_DIM;

/// Seed 000's ADMM second step: the weights `Wbar_0..Wbar_m` nearest (Frobenius) to `v` whose
/// LipSDP-Neuron certificate with the multipliers `t` (one per hidden neuron, held fixed:
/// the matrix inequality is then linear in the weights after a Schur complement on the last
/// layer) is at most `rho`: with `rho_fixed = Some(L^2)` (the enforced version); with `None`,
/// `rho` is free and `mu rho` is added to the objective (the penalty version; `mu` relative to
/// the ADMM penalty). Solved with clarabel:
/// `min 1/2 ||Wbar - V||^2 (+ mu rho)` s.t.
/// `[[rho I, -(T_1 W_0)^T, ..], [-T_1 W_0, 2 T_1, ..], .., [.., 2 T_m, W_m^T], [.., W_m, I]] >= 0`.
/// Returns the weights (double, on `v`'s device) and `rho`.
pub fn admm_projection(
    v: &[Tensor],
    t: &[f64],
    rho_fixed: Option<f64>,
    mu: f64,
) -> Result<(Vec<Tensor>, f64), LipError> {
    use clarabel::solver::SupportedConeT;
    let m = v.len() - 1;
    if m == 0 {
        return Err(LipError::Solver(
            "the ADMM projection needs a hidden layer".into(),
        ));
    }
    let to_vec = |w: &Tensor| -> Vec<Vec<f64>> {
        Vec::<Vec<f64>>::try_from(&w.detach().to_kind(Kind::Double).to_device(Device::Cpu))
            .unwrap_or_default()
    };
    let vs: Vec<Vec<Vec<f64>>> = v.iter().map(to_vec).collect();
    let n_in = v[0].size()[1] as usize;
    let widths: Vec<usize> = v[..m].iter().map(|w| w.size()[0] as usize).collect();
    let n_out = v[m].size()[0] as usize;
    let h: usize = widths.iter().sum();
    if t.len() != h {
        return Err(LipError::Solver(format!(
            "{} multipliers for {h} hidden neurons",
            t.len()
        )));
    }
    let n = n_in + h + n_out;
    if n as i64 > ADMM_MAX_DIM {
        return Err(LipError::Solver(format!(
            "the ADMM projection's matrix inequality has dimension {n} (inputs + hidden + outputs); at most {ADMM_MAX_DIM} is supported"
        )));
    }
    let sqrt2 = std::f64::consts::SQRT_2;
    // Block offsets: input 0..n_in, hidden layer k from offs[k], outputs from offs[m].
    let mut offs = vec![n_in];
    for w in &widths {
        offs.push(offs[offs.len() - 1] + w);
    }
    // Columns: [rho when free], then every weight entry, layer by layer, row-major.
    let first = usize::from(rho_fixed.is_none());
    let nw: usize = vs.iter().map(|w| w.len() * w[0].len()).sum();
    let ncols = first + nw;
    let mut cols: Vec<Vec<(usize, f64)>> = vec![Vec::new(); ncols];
    let mut q = vec![0.0; ncols];
    let mut p_diag = vec![0.0; ncols];
    let mut b = vec![0.0; n * (n + 1) / 2];
    match rho_fixed {
        Some(rho) => (0..n_in).for_each(|i| b[tri(i, i)] = rho),
        None => {
            q[0] = mu;
            cols[0] = (0..n_in).map(|i| (tri(i, i), -1.0)).collect();
        }
    }
    for (g, &tg) in t.iter().enumerate() {
        b[tri(n_in + g, n_in + g)] = 2.0 * tg;
    }
    for o in 0..n_out {
        b[tri(offs[m] + o, offs[m] + o)] = 1.0;
    }
    let mut c = first;
    for (k, w) in vs.iter().enumerate() {
        // Layer k maps block `prev` (input or hidden k-1) to hidden k (or the outputs).
        let prev = if k == 0 { 0 } else { offs[k - 1] };
        for (i, row) in w.iter().enumerate() {
            let r = offs[k] + i;
            for (j, &vij) in row.iter().enumerate() {
                // s = b - A x: entry -t_r W_ij (hidden rows) or W_ij (outputs), times sqrt 2.
                let coef = if k < m { sqrt2 * t[r - n_in] } else { -sqrt2 };
                cols[c].push((tri(prev + j, r), coef));
                p_diag[c] = 1.0;
                q[c] = -vij;
                c += 1;
            }
        }
    }
    let x = clarabel_qp(
        &p_diag,
        q,
        cols,
        b,
        vec![SupportedConeT::PSDTriangleConeT(n)],
    )?;
    let rho = match rho_fixed {
        Some(r) => r,
        None => x[0],
    };
    let mut out = Vec::with_capacity(v.len());
    let mut c = first;
    for w in v {
        let (rows, cols_) = (w.size()[0], w.size()[1]);
        let len = (rows * cols_) as usize;
        out.push(
            Tensor::from_slice(&x[c..c + len])
                .reshape([rows, cols_])
                .to_device(w.device()),
        );
        c += len;
    }
    Ok((out, rho))
}

/// What one ADMM iteration did, for the log and `metrics.jsonl`.
#[derive(Debug, Clone, Copy)]
pub struct AdmmStep {
    /// Certified LipSDP value of the projected weights `Wbar` (re-solved, not the fixed-T one).
    pub projected_bound: f64,
    /// Primal residual `||W - Wbar||_F / ||W||_F`.
    pub residual: f64,
}

/// The state of seed 000's ADMM for a plain MLP (`[Flatten] Linear (ReLU Linear)*`): the
/// projected weights `Wbar` and the scaled duals `Y`, one per Linear layer (double).
pub struct Admm {
    pub wbar: Vec<Tensor>,
    y: Vec<Tensor>,
    penalty: f64,
}

/// The Linear weights of a plain MLP, live (differentiable), in layer order.
fn linear_weights(net: &Network) -> Result<Vec<Tensor>, String> {
    let mut ws = Vec::new();
    for (i, layer) in net.layers.iter().enumerate() {
        match layer {
            Layer::Linear { weight, .. } => ws.push(weight.shallow_clone()),
            Layer::Relu | Layer::Flatten => {}
            other => {
                return Err(format!(
                    "ADMM trains plain MLPs; layer {i} is `{}`",
                    other.kind_name()
                ))
            }
        }
    }
    if ws.len() < 2 {
        return Err("ADMM needs at least one hidden layer".into());
    }
    Ok(ws)
}

impl Admm {
    /// Starts from `Wbar = W`, `Y = 0`.
    pub fn new(net: &Network, penalty: f64) -> Result<Admm, String> {
        let ws = linear_weights(net)?;
        let wbar = ws
            .iter()
            .map(|w| w.detach().to_kind(Kind::Double).copy())
            .collect();
        let y = ws
            .iter()
            .map(|w| Tensor::zeros(w.size().as_slice(), (Kind::Double, w.device())))
            .collect();
        Ok(Admm { wbar, y, penalty })
    }

    /// The coupling term of the W-step: `penalty / 2 sum_k ||W_k - Wbar_k + Y_k / penalty||^2`
    /// (differentiable in the network's weights).
    pub fn coupling(&self, net: &Network) -> Tensor {
        let ws = linear_weights(net).unwrap_or_default();
        let mut total = Tensor::zeros([], (Kind::Float, net.device()));
        for ((w, wbar), y) in ws.iter().zip(&self.wbar).zip(&self.y) {
            let target = (wbar - y / self.penalty).to_kind(Kind::Float);
            total = total + (w - target).square().sum(Kind::Float);
        }
        total * (self.penalty / 2.0)
    }

    /// The SDP step and the dual update: `Wbar = projection(W + Y / penalty)` with the LipSDP
    /// multipliers of that point held fixed, then `Y += penalty (W - Wbar)`. `target`: the
    /// enforced bound (else `mu` weighs `L^2` in the penalty version).
    pub fn step(
        &mut self,
        net: &Network,
        target: Option<f64>,
        mu: f64,
    ) -> Result<AdmmStep, String> {
        tch::no_grad(|| {
            let ws: Vec<Tensor> = linear_weights(net)?
                .iter()
                .map(|w| w.detach().to_kind(Kind::Double))
                .collect();
            let v: Vec<Tensor> = ws
                .iter()
                .zip(&self.y)
                .map(|(w, y)| w + y / self.penalty)
                .collect();
            let lip = lipsdp(&v, &Settings::default()).map_err(|e| e.to_string())?;
            // Zero multipliers would pin the matching last-layer weights to 0: floor them.
            let top = lip.t.iter().cloned().fold(0.0, f64::max).max(1e-12);
            let t: Vec<f64> = lip.t.iter().map(|&x| x.max(1e-3 * top)).collect();
            // A hair inside the target, so that the float32 copy stays below it.
            let rho_fixed = target.map(|l| (l * (1.0 - 1e-6)).powi(2));
            let (mut wbar, _) =
                admm_projection(&v, &t, rho_fixed, mu / self.penalty).map_err(|e| e.to_string())?;
            let mut bound = lipsdp(&wbar, &Settings::default())
                .map_err(|e| e.to_string())?
                .value;
            if let Some(l) = target {
                // The interior-point answer may sit a rounding error outside the set: ReLU
                // MLPs are positively homogeneous, so scaling every layer by s scales the
                // Lipschitz constant (and its LipSDP bound) by s^(layers).
                for _ in 0..3 {
                    if bound <= l * (1.0 - 1e-7) {
                        break;
                    }
                    let s = (l * (1.0 - 1e-6) / bound).powf(1.0 / wbar.len() as f64);
                    wbar = wbar.iter().map(|w| w * s).collect();
                    bound = lipsdp(&wbar, &Settings::default())
                        .map_err(|e| e.to_string())?
                        .value;
                }
            }
            let mut diff = 0.0;
            let mut norm = 0.0;
            for (k, w) in ws.iter().enumerate() {
                let d = w - &wbar[k];
                diff += d.square().sum(Kind::Double).double_value(&[]);
                norm += w.square().sum(Kind::Double).double_value(&[]);
                self.y[k] = &self.y[k] + d * self.penalty;
            }
            self.wbar = wbar;
            Ok(AdmmStep {
                projected_bound: bound,
                residual: (diff / norm.max(1e-300)).sqrt(),
            })
        })
    }

    /// Starts the enforced version inside the set: projects the initial weights onto it, puts
    /// the projection into the network, and clears the duals. Returns the projected bound.
    pub fn start_inside(&mut self, net: &Network, target: f64) -> Result<f64, String> {
        let st = self.step(net, Some(target), 0.0)?;
        self.swap_in(net);
        for y in &mut self.y {
            *y = y.zeros_like();
        }
        Ok(st.projected_bound)
    }

    /// Copies `Wbar` into the network (float32); returns the weights it replaced, for
    /// [`Admm::restore`].
    pub fn swap_in(&self, net: &Network) -> Vec<Tensor> {
        tch::no_grad(|| {
            let ws = linear_weights(net).unwrap_or_default();
            ws.into_iter()
                .zip(&self.wbar)
                .map(|(mut w, wbar)| {
                    let old = w.detach().copy();
                    w.copy_(&wbar.to_kind(w.kind()));
                    old
                })
                .collect()
        })
    }

    /// Puts back the weights [`Admm::swap_in`] replaced.
    pub fn restore(net: &Network, saved: &[Tensor]) {
        tch::no_grad(|| {
            for (mut w, old) in linear_weights(net)
                .unwrap_or_default()
                .into_iter()
                .zip(saved)
            {
                w.copy_(old);
            }
        })
    }
}

/// A differentiable LipSDP bound for training: `sqrt(rho(T, W))` with the multipliers `T`
/// held fixed (found by the first-order method on the detached weights, warm-started from
/// `warm`); any feasible `T` gives a certified bound, and `rho` is differentiable in the
/// weights. Returns the bound and the multipliers for the next call; `None` when no feasible
/// multiplier is found (the caller falls back to the Gram product).
pub fn lipsdp_training_bound(
    net: &Network,
    warm: Option<&Tensor>,
    steps: u32,
) -> Option<(Tensor, Tensor)> {
    // Differentiable weights (double), Normalize folded like `mlp_weights`.
    let detached = mlp_weights(net).ok()?;
    let p_detached = SdpProblem::new(&detached);
    // The previous step's multipliers, scaled up if the weight update made Q(T) indefinite
    // (Q(aT) = a (2T - off-diagonal) - W_m^T W_m), else a fresh start.
    let warm_start = warm.and_then(|t| {
        (0..6)
            .map(|i| t * 2f64.powi(i))
            .find(|t| tch::no_grad(|| p_detached.rho(t)).is_some())
    });
    let t_start = match warm_start {
        Some(t) => t,
        None => tch::no_grad(|| p_detached.initial_t())?,
    };
    let (t, _) = tch::no_grad(|| improve_t(&p_detached, &t_start, steps));
    // The live weights: W_0 itself (no SVD reduction, so gradients reach it).
    let mut live: Vec<Tensor> = Vec::new();
    let mut scale: Option<Tensor> = None;
    for layer in &net.layers {
        match layer {
            Layer::Normalize { std, .. } if live.is_empty() => {
                let per_input =
                    Tensor::ones(net.input_shape.as_slice(), (Kind::Double, std.device()))
                        / std.to_kind(Kind::Double);
                scale = Some(per_input.reshape([-1]));
            }
            l => {
                if let Some(w) = l.effective_weight() {
                    let w = w.to_kind(Kind::Double);
                    let w = match (live.is_empty(), &scale) {
                        (true, Some(sc)) => w * sc.unsqueeze(0),
                        _ => w,
                    };
                    live.push(w);
                }
            }
        }
    }
    let widths = live[..live.len() - 1].iter().map(|w| w.size()[0]).collect();
    let r = live[0].size()[1];
    let p = SdpProblem {
        ws: live,
        widths,
        r,
    };
    let rho = p.rho(&t)?;
    Some((rho.sqrt().to_kind(Kind::Float), t))
}

// ---------------------------------------------------------------------------------------------
// Training support

/// The bound `method = "lipschitz"` adds to the loss (differentiable).
pub fn training_bound(net: &Network, shapes: &[Vec<i64>], bound: LipBound) -> Tensor {
    match bound {
        // ADMM has no differentiable bound term (its W-step adds the coupling instead).
        LipBound::Gram | LipBound::Admm => {
            network_gram_bound(net, shapes, crate::model::ONE_LIP_GRAM_ITERS)
        }
        LipBound::Lipsdp => LIPSDP_WARM.with(|cell| {
            let warm = cell.borrow_mut().take();
            match lipsdp_training_bound(net, warm.as_ref(), 3) {
                Some((b, t)) => {
                    *cell.borrow_mut() = Some(t);
                    b
                }
                None => network_gram_bound(net, shapes, crate::model::ONE_LIP_GRAM_ITERS),
            }
        }),
    }
}

thread_local! {
    /// The LipSDP multipliers of the previous training step (warm start).
    static LIPSDP_WARM: std::cell::RefCell<Option<Tensor>> = const { std::cell::RefCell::new(None) };
}

/// A guaranteed upper bound on the network's Lipschitz constant in double precision (product of
/// per-layer Gram bounds), for enforcement and logging.
pub fn guaranteed_bound(net: &Network, shapes: &[Vec<i64>], iters: u32) -> f64 {
    tch::no_grad(|| {
        let layers = layers_f64(&net.layers);
        let mut total = 1.0;
        for (i, layer) in layers.iter().enumerate() {
            if let Some(b) = layer_gram_bound(layer, &shapes[i], iters) {
                total *= scalar(&b);
            }
        }
        total
    })
}

/// Enforces `guaranteed_bound <= target` by scaling the weights of the scalable layers (Linear
/// and Conv2d; the bound is homogeneous of degree 1 in each) by a common factor. Returns the
/// bound after the projection, or an error when no layer can be scaled.
pub fn enforce_bound(
    net: &Network,
    shapes: &[Vec<i64>],
    target: f64,
    iters: u32,
) -> Result<f64, String> {
    let before = guaranteed_bound(net, shapes, iters);
    if before <= target {
        return Ok(before);
    }
    let scalable: Vec<&Tensor> = net
        .layers
        .iter()
        .filter_map(|l| match l {
            Layer::Linear { weight, .. } | Layer::Conv2d { weight, .. } => Some(weight),
            _ => None,
        })
        .collect();
    if scalable.is_empty() {
        return Err(format!(
            "the Lipschitz bound {before:.6} exceeds lip_target {target} and the network has no Linear or Conv2d layer to rescale"
        ));
    }
    // A hair below the exact root, so rounding cannot leave the bound above the target.
    let factor = (target / before).powf(1.0 / scalable.len() as f64) * (1.0 - 1e-6);
    tch::no_grad(|| -> Result<(), String> {
        for w in scalable {
            let mut w = w.shallow_clone();
            let _scaled = w
                .f_mul_scalar_(factor)
                .map_err(|e| format!("rescaling the weights: {e}"))?;
        }
        Ok(())
    })?;
    let after = guaranteed_bound(net, shapes, iters);
    if after > target {
        return Err(format!(
            "rescaling left the Lipschitz bound at {after:.6} > lip_target {target}"
        ));
    }
    Ok(after)
}

// ---------------------------------------------------------------------------------------------
// l_2 certificates

/// What the l_2 certificate needs: a guaranteed Lipschitz bound of the body (every layer
/// before the last affine layer) and the effective weight of the last layer `[K, h]`.
pub struct CertificateParts {
    pub body_bound: f64,
    pub last_weight: Tensor,
}

/// Relative safety margin on the body bound, for the float32 rounding of the forward pass and
/// of the reparametrised weights.
pub const CERT_SAFETY: f64 = 1e-5;

pub fn certificate_parts(net: &Network, iters: u32) -> Option<CertificateParts> {
    let last = net.layers.last()?;
    let w = tch::no_grad(|| last.effective_weight())?;
    if w.dim() != 2 {
        return None;
    }
    let shapes = net.layer_shapes();
    let n = net.layers.len();
    let body = tch::no_grad(|| {
        let layers = layers_f64(&net.layers[..n - 1]);
        let mut total = 1.0;
        for (i, layer) in layers.iter().enumerate() {
            if let Some(b) = layer_gram_bound(layer, &shapes[i], iters) {
                total *= scalar(&b);
            }
        }
        total
    });
    // For an MLP, LipSDP of the body (the map to the last hidden activations: LipSDP with an
    // identity output layer) is often much tighter than the product; both are certified.
    let body = match body_lipsdp(net) {
        Some(v) if v < body => v,
        _ => body,
    };
    Some(CertificateParts {
        body_bound: body * (1.0 + CERT_SAFETY),
        last_weight: w.detach(),
    })
}

/// LipSDP-Neuron bound of the body of an MLP (every layer but the last linear one, so the
/// output is the last hidden activation): the MLP's weights with the last replaced by the
/// identity. `None` for other networks or when no feasible multiplier is found.
pub fn body_lipsdp(net: &Network) -> Option<f64> {
    let mut ws = mlp_weights(net).ok()?;
    if ws.len() < 2 {
        return None;
    }
    let last = ws.pop()?;
    let h = last.size()[1];
    ws.push(Tensor::eye(h, (Kind::Double, last.device())));
    lipsdp(&ws, &Settings::per_epoch()).ok().map(|r| r.value)
}

/// Certified l_2 radius of every point: `min_{j != y} (z_y - z_j) / (L_body ||w_y - w_j||)`
/// (negative when misclassified). `[B]`.
pub fn l2_radius(net: &Network, parts: &CertificateParts, x: &Tensor, y: &Tensor) -> Tensor {
    tch::no_grad(|| {
        let z = net.forward(x).to_kind(Kind::Double);
        let w = parts.last_weight.to_kind(Kind::Double);
        // ||w_i - w_j|| for every pair: [K, K].
        let diff = w.unsqueeze(1) - w.unsqueeze(0);
        let norms = diff
            .square()
            .sum_dim_intlist([2i64].as_slice(), false, None::<Kind>)
            .sqrt();
        let zy = z.gather(1, &y.unsqueeze(1), false);
        let margins = &zy - &z;
        let denom = norms.index_select(0, y) * parts.body_bound;
        let radius = margins / denom.clamp_min(1e-300);
        radius
            .scatter_value(1, &y.unsqueeze(1), f64::INFINITY)
            .amin([1i64].as_slice(), false)
    })
}

/// Points correctly classified whose certified l_2 radius exceeds `eps_l2` (`[B]` bool).
pub fn l2_certified(
    net: &Network,
    parts: &CertificateParts,
    x: &Tensor,
    y: &Tensor,
    eps_l2: f64,
) -> Tensor {
    l2_radius(net, parts, x, y).gt(eps_l2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attack::{self, AttackLoss, PgdConfig};
    use crate::config::{Arch, ExperimentConfig, Method, ModelConfig, Norm};
    use crate::model::LayerSpec;

    const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

    fn rel(a: f64, b: f64) -> f64 {
        (a - b) / b.abs()
    }

    #[test]
    fn dense_gram_upper_bounds_exact_and_power_lower_bounds_it() {
        tch::manual_seed(1);
        for (m, n) in [(30, 20), (64, 64), (10, 50), (100, 3), (1, 7)] {
            let w = Tensor::randn([m, n], F64);
            let exact = exact_dense(&w);
            // Independent: the square root of the top eigenvalue of W^T W.
            let eig = w
                .tr()
                .matmul(&w)
                .linalg_eigvalsh("L")
                .max()
                .double_value(&[])
                .sqrt();
            assert!(
                rel(exact, eig).abs() < 1e-10,
                "{m}x{n}: svd {exact} vs eig {eig}"
            );
            let mut prev = f64::INFINITY;
            for iters in 0..=10 {
                let g = gram_bound(&w, iters).double_value(&[]);
                assert!(
                    g >= exact * (1.0 - 1e-12),
                    "{m}x{n} iters {iters}: gram {g} < exact {exact}"
                );
                assert!(
                    g <= prev * (1.0 + 1e-12),
                    "{m}x{n}: gram not monotone at {iters}"
                );
                prev = g;
            }
            let fro = w.square().sum(Kind::Double).sqrt().double_value(&[]);
            assert!(rel(gram_bound(&w, 0).double_value(&[]), fro).abs() < 1e-12);
            // Gaussian matrices have clustered top singular values (sigma_2 / sigma_1 up to
            // ~0.99): 8 iterations here; 6 suffice with a spectral gap (below).
            let g8 = gram_bound(&w, 8).double_value(&[]);
            assert!(
                rel(g8, exact) < 1e-3,
                "{m}x{n}: gram x8 {g8} vs exact {exact}"
            );
            for iters in [1, 5, 50] {
                let p = power_dense(&w, iters, 0.0);
                assert!(
                    p.sigma <= exact * (1.0 + 1e-12),
                    "{m}x{n}: power {} > exact {exact}",
                    p.sigma
                );
            }
            let p = power_dense(&w, 5000, 1e-12);
            assert!(
                rel(p.sigma, exact).abs() < 1e-4,
                "{m}x{n}: power {} vs {exact}",
                p.sigma
            );
        }
        // Well-conditioned: a known spectrum with a 10% gap (sigma = 2, 1.8, then below 1.7):
        // within 1e-3 after 6 iterations.
        for (m, n) in [(40, 30), (30, 40), (64, 64)] {
            let k = m.min(n);
            let (u, _, _) = Tensor::randn([m, m], F64).svd(true, true);
            let (v, _, _) = Tensor::randn([n, n], F64).svd(true, true);
            let mut sv = vec![2.0, 1.8];
            sv.extend((0..k - 2).map(|i| 1.7 * (k - 2 - i) as f64 / (k - 2) as f64));
            let s = Tensor::from_slice(&sv).diag_embed(0, -2, -1);
            let w = u.narrow(1, 0, k).matmul(&s).matmul(&v.narrow(1, 0, k).tr());
            assert!(rel(exact_dense(&w), 2.0).abs() < 1e-12);
            let iters = (0..=6)
                .find(|&t| rel(gram_bound(&w, t).double_value(&[]), 2.0) < 1e-3)
                .unwrap_or_else(|| panic!("{m}x{n}: gram not within 1e-3 after 6 iterations"));
            assert!(
                iters >= 3,
                "{m}x{n}: converged at {iters}: the spectrum is not as built"
            );
        }
        // Large entries: the rescaling keeps the bound finite (1e200^(2^10) would overflow).
        let w = Tensor::randn([20, 20], F64) * 1e200;
        let g = gram_bound(&w, 10).double_value(&[]);
        assert!(g.is_finite() && g >= exact_dense(&w) * (1.0 - 1e-12), "{g}");
    }

    #[test]
    fn gram_bound_gradient_is_the_top_singular_pair() {
        // d sigma_1 / dW = u_1 v_1^T; the converged Gram bound must have the same gradient.
        tch::manual_seed(2);
        let w = Tensor::randn([12, 9], F64).set_requires_grad(true);
        let g = gram_bound(&w, 8);
        let grad = Tensor::run_backward(&[g], &[&w], false, false)
            .pop()
            .unwrap();
        let (u, _, v) = w.detach().svd(true, true);
        let expected = u.select(1, 0).outer(&v.select(1, 0));
        let err = (grad - expected).abs().max().double_value(&[]);
        assert!(err < 1e-4, "{err}");
    }

    #[test]
    fn conv_exact_is_the_svd_of_the_dense_circular_matrix() {
        tch::manual_seed(3);
        for (co, ci, k, n) in [(3, 2, 3, 5), (2, 3, 2, 4), (4, 4, 3, 6), (1, 1, 3, 7)] {
            let kernel = Tensor::randn([co, ci, k, k], F64);
            let op = |x: &Tensor| circular_conv(&kernel, x);
            let dense = dense_matrix(&op, &[ci, n, n], F64);
            assert_eq!(dense.size(), vec![co * n * n, ci * n * n]);
            // The dense matrix is of a circular map: shifting the input shifts the output.
            let x = Tensor::randn([1, ci, n, n], F64);
            let shifted = op(&x.roll([1, 2].as_slice(), [2, 3].as_slice()));
            let expect = op(&x).roll([1, 2].as_slice(), [2, 3].as_slice());
            assert!((shifted - expect).abs().max().double_value(&[]) < 1e-10);
            let svd = exact_dense(&dense);
            let fft = exact_conv_circular(&kernel, n, n);
            assert!(
                rel(fft, svd).abs() < 1e-10,
                "{co}x{ci}x{k} n {n}: fft {fft} vs dense {svd}"
            );
            for iters in 0..=8 {
                let g = gram_conv(&kernel, n, n, iters).double_value(&[]);
                assert!(
                    g >= svd * (1.0 - 1e-12),
                    "iters {iters}: gram {g} < exact {svd}"
                );
            }
            let g6 = gram_conv(&kernel, n, n, 6).double_value(&[]);
            assert!(rel(g6, svd) < 1e-3, "gram x6 {g6} vs {svd}");
            let p = power_operator(&op, &[1, ci, n, n], F64, 30, 0.0);
            assert!(p.sigma <= svd * (1.0 + 1e-12), "power {} > {svd}", p.sigma);
        }
    }

    #[test]
    fn fft_bound_on_the_grown_grid_covers_zero_padded_strided_convs() {
        // The documented guarantee: a conv with zero padding and stride on n x n is bounded by
        // the circular norm on (n + k - 1)^2; `layer_value` reports exactly that.
        tch::manual_seed(4);
        for (k, s, p, n) in [(3, 1, 1, 6), (4, 2, 1, 8), (3, 1, 0, 5), (4, 2, 2, 7)] {
            let kernel = Tensor::randn([3, 2, k, k], F64);
            let op = |x: &Tensor| x.conv2d(&kernel, None::<Tensor>, [s; 2], [p; 2], [1; 2], 1);
            let actual = exact_dense(&dense_matrix(&op, &[2, n, n], F64));
            let layer = Layer::Conv2d {
                weight: kernel.shallow_clone(),
                bias: Tensor::zeros([3], F64),
                stride: s,
                padding: p,
            };
            let st = Settings::default();
            let exact = layer_value(&layer, &[2, n, n], Estimator::Exact, &st).unwrap();
            let gram = layer_value(&layer, &[2, n, n], Estimator::Gram, &st).unwrap();
            let power = layer_value(&layer, &[2, n, n], Estimator::Power, &st).unwrap();
            assert!(
                actual <= exact * (1.0 + 1e-12),
                "k{k} s{s} p{p}: actual {actual} > fft {exact}"
            );
            assert!(exact <= gram * (1.0 + 1e-12));
            assert!(
                power <= actual * (1.0 + 1e-9),
                "power {power} > actual {actual}"
            );
            if s > 1 {
                // Tighter than the bound that ignores the stride.
                let unstrided = exact_conv_circular(&kernel, n + k - 1, n + k - 1);
                assert!(exact < unstrided, "stride {s}: {exact} vs {unstrided}");
            }
            assert!(
                rel(power, actual).abs() < 1e-3,
                "power {power} vs actual {actual}"
            );
        }
    }

    #[test]
    fn polyphase_fft_is_exact_for_circular_strided_convs() {
        // A circular stride-s correlation on n x n (s | n) is exactly the circular stride-1
        // correlation of the polyphase components with the polyphase kernel on (n/s)^2.
        tch::manual_seed(9);
        for (co, ci, k, s, n) in [
            (3, 2, 4, 2, 8),
            (2, 3, 3, 2, 6),
            (4, 1, 5, 3, 9),
            (2, 2, 2, 2, 4),
        ] {
            let kernel = Tensor::randn([co, ci, k, k], F64);
            let op = |x: &Tensor| {
                x.pad([0, k - 1, 0, k - 1].as_slice(), "circular", None)
                    .conv2d(&kernel, None::<Tensor>, [s, s], [0, 0], [1, 1], 1)
            };
            let dense = dense_matrix(&op, &[ci, n, n], F64);
            assert_eq!(dense.size()[0], co * (n / s) * (n / s));
            let svd = exact_dense(&dense);
            let kp = polyphase_kernel(&kernel, s);
            assert_eq!(
                kp.size(),
                vec![co, ci * s * s, (k + s - 1) / s, (k + s - 1) / s]
            );
            let fft = exact_conv_circular(&kp, n / s, n / s);
            assert!(
                rel(fft, svd).abs() < 1e-10,
                "k{k} s{s} n{n}: fft {fft} vs dense {svd}"
            );
        }
    }

    fn net_of(specs: Vec<LayerSpec>, input: &[i64], classes: i64, seed: i64) -> Network {
        tch::manual_seed(seed);
        Network::new(specs, input, classes, Device::Cpu)
    }

    fn mlp(d: i64, hidden: &[i64], classes: i64, seed: i64) -> Network {
        tch::manual_seed(seed);
        let cfg = ModelConfig {
            hidden: hidden.to_vec(),
            ..ModelConfig::default()
        };
        Network::from_config(&cfg, &[d], classes, None, Device::Cpu).unwrap()
    }

    #[test]
    fn lipsdp_lies_between_the_empirical_and_the_product_bound() {
        let st = Settings::default();
        for (i, (d, hidden, k)) in [
            (4, vec![8], 3),
            (5, vec![6, 5], 2),
            (3, vec![5, 4, 3], 3),
            (6, vec![10], 4),
        ]
        .into_iter()
        .enumerate()
        {
            let net = mlp(d, &hidden, k, 10 + i as i64);
            let x = Tensor::rand([64, d], (Kind::Float, Device::Cpu));
            let r = estimate(
                &net,
                &[Estimator::Product, Estimator::Lipsdp, Estimator::Empirical],
                Some(&x),
                &st,
            )
            .unwrap();
            let (prod, sdp, emp) = (
                r.network["product"],
                r.network["lipsdp"],
                r.network["empirical"],
            );
            assert!(emp > 0.0);
            assert!(
                emp <= sdp * (1.0 + 1e-9),
                "{hidden:?}: empirical {emp} > lipsdp {sdp}"
            );
            assert!(
                sdp <= prod * (1.0 + 1e-9),
                "{hidden:?}: lipsdp {sdp} > product {prod}"
            );
            assert!(
                r.notes.iter().any(|n| n.contains("clarabel")),
                "{:?}",
                r.notes
            );
            // The first-order method is feasible for the same SDP: never below its optimum.
            let ws = mlp_weights(&net).unwrap();
            let first = lipsdp(
                &ws,
                &Settings {
                    lipsdp_clarabel_max_dim: 0,
                    ..Settings::default()
                },
            )
            .unwrap();
            assert_eq!(first.solver, "first-order");
            // The first-order start already certifies the product bound (up to 1 + 1e-6 per
            // layer), by construction.
            let p = SdpProblem::new(&ws);
            let t0 = p.initial_t().unwrap();
            let start = p.rho(&t0).unwrap().double_value(&[]).sqrt();
            assert!(
                start <= prod * (1.0 + 1e-5),
                "start {start} > product {prod}"
            );
            assert!(first.value <= start * (1.0 + 1e-12));
            assert!(
                sdp <= first.value * (1.0 + 1e-4),
                "clarabel {sdp} > first-order {}",
                first.value
            );
            assert!(
                first.value <= prod * (1.0 + 1e-5),
                "first-order {} > product {prod}",
                first.value
            );
        }
    }

    #[test]
    fn admm_projection_is_feasible_and_nearer_than_rescaling() {
        for (seed, dims) in [
            (0, vec![3, 8, 6, 2]),
            (1, vec![2, 10, 3]),
            (2, vec![4, 5, 5, 5, 3]),
        ] {
            tch::manual_seed(400 + seed);
            let v: Vec<Tensor> = dims
                .windows(2)
                .map(|d| Tensor::randn([d[1], d[0]], F64))
                .collect();
            let lip = lipsdp(&v, &Settings::default()).unwrap();
            let top = lip.t.iter().cloned().fold(0.0, f64::max);
            let t: Vec<f64> = lip.t.iter().map(|&x| x.max(1e-3 * top)).collect();
            let tt = Tensor::from_slice(&t);
            // rho(T, W) by the Cholesky formula: independent of the LMI given to clarabel.
            let rho_t = |ws: &[Tensor]| {
                SdpProblem::new(ws)
                    .rho(&tt)
                    .map_or(f64::INFINITY, |r| r.double_value(&[]))
            };
            let dist = |a: &[Tensor], b: &[Tensor]| {
                a.iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).square().sum(Kind::Double).double_value(&[]))
                    .sum::<f64>()
                    .sqrt()
            };
            // Already inside: nothing moves.
            let loose = 2.0 * rho_t(&v).sqrt();
            let (same, _) = admm_projection(&v, &t, Some(loose * loose), 0.0).unwrap();
            let norm_v = dist(&v, &v.iter().map(|w| w.zeros_like()).collect::<Vec<_>>());
            assert!(
                dist(&same, &v) <= 1e-4 * norm_v,
                "{dims:?}: moved a feasible point"
            );
            // Enforced at half the bound.
            let l = 0.5 * lip.value;
            let (wbar, rho) = admm_projection(&v, &t, Some(l * l), 0.0).unwrap();
            assert_eq!(rho, l * l);
            let got = rho_t(&wbar);
            assert!(
                got <= l * l * (1.0 + 1e-5),
                "{dims:?}: rho_T(Wbar) {got} > {}",
                l * l
            );
            let certified = lipsdp(&wbar, &Settings::default()).unwrap().value;
            assert!(
                certified <= l * (1.0 + 1e-5),
                "{dims:?}: LipSDP {certified} > {l}"
            );
            // Feasible alternatives with the same multipliers are no nearer: uniform scaling
            // and scaling of the last layer alone (largest feasible factor on a fine grid).
            let d = dist(&wbar, &v);
            for last_only in [false, true] {
                let scaled = |s: f64| -> Vec<Tensor> {
                    v.iter()
                        .enumerate()
                        .map(|(k, w)| {
                            if !last_only || k == v.len() - 1 {
                                w * s
                            } else {
                                w.copy()
                            }
                        })
                        .collect()
                };
                let best = (1..=2000)
                    .rev()
                    .map(|i| i as f64 / 2000.0)
                    .find(|&s| rho_t(&scaled(s)) <= l * l);
                if let Some(s) = best {
                    let alt = dist(&scaled(s), &v);
                    assert!(
                        d <= alt * (1.0 + 1e-4) + 1e-6,
                        "{dims:?}: {d} > rescaling {alt}"
                    );
                }
            }
            // Penalty version: rho is free and pulled below rho_T(V); the LMI holds at it.
            let (wpen, rho_pen) = admm_projection(&v, &t, None, 10.0).unwrap();
            assert!(
                rho_pen < rho_t(&v),
                "{dims:?}: {rho_pen} not below {}",
                rho_t(&v)
            );
            assert!(rho_t(&wpen) <= rho_pen * (1.0 + 1e-5), "{dims:?}");
        }
    }

    #[test]
    fn lipsdp_of_a_single_linear_layer_is_its_spectral_norm() {
        for seed in 0..3 {
            let net = mlp(7, &[], 5, seed);
            let ws = mlp_weights(&net).unwrap();
            assert_eq!(ws.len(), 1);
            let r = lipsdp(&ws, &Settings::default()).unwrap();
            assert_eq!(r.solver, "clarabel");
            let exact = exact_dense(&ws[0]);
            assert!(
                rel(r.value, exact).abs() < 1e-6,
                "lipsdp {} vs svd {exact}",
                r.value
            );
        }
    }

    #[test]
    fn lipsdp_folds_normalize_and_refuses_convnets() {
        tch::manual_seed(5);
        let cfg = ModelConfig {
            hidden: vec![6],
            ..ModelConfig::default()
        };
        let net = Network::from_config(
            &cfg,
            &[1, 2, 2],
            3,
            Some((vec![0.5], vec![0.25])),
            Device::Cpu,
        )
        .unwrap();
        let ws = mlp_weights(&net).unwrap();
        let Layer::Linear { weight, .. } = &net.layers[2] else {
            panic!("layer 2 is the first Linear: {:?}", net.specs)
        };
        let expect = weight.to_kind(Kind::Double) * 4.0;
        assert!((&ws[0] - expect).abs().max().double_value(&[]) < 1e-12);
        let conv = net_of(
            vec![
                LayerSpec::Conv2d {
                    in_channels: 1,
                    out_channels: 2,
                    kernel: 3,
                    stride: 1,
                    padding: 1,
                },
                LayerSpec::Relu,
                LayerSpec::Flatten,
                LayerSpec::Linear {
                    in_features: 32,
                    out_features: 2,
                },
            ],
            &[1, 4, 4],
            2,
            6,
        );
        let err = estimate(&conv, &[Estimator::Lipsdp], None, &Settings::default()).unwrap_err();
        assert!(
            err.to_string().contains("layer 0") && err.to_string().contains("conv"),
            "{err}"
        );
    }

    #[test]
    fn network_values_are_products_of_layer_values() {
        let net = mlp(5, &[7, 6], 3, 7);
        let r = estimate(
            &net,
            &[
                Estimator::Power,
                Estimator::Gram,
                Estimator::Exact,
                Estimator::Product,
            ],
            None,
            &Settings::default(),
        )
        .unwrap();
        assert_eq!(
            r.layers.iter().map(|l| l.index).collect::<Vec<_>>(),
            vec![0, 2, 4]
        );
        for m in ["power", "gram", "exact"] {
            let prod: f64 = r.layers.iter().map(|l| l.values[m]).product();
            assert!(rel(r.network[m], prod).abs() < 1e-12, "{m}");
        }
        assert_eq!(r.network["product"], r.network["exact"]);
        for l in &r.layers {
            assert!(l.values["power"] <= l.values["exact"] * (1.0 + 1e-12));
            assert!(l.values["exact"] <= l.values["gram"] * (1.0 + 1e-12));
        }
        let j = r.to_json();
        assert_eq!(j["layers"][1]["index"], 2);
        assert_eq!(j["layers"][1]["kind"], "linear");
        assert!(
            j["network"]["gram"].as_f64().is_some() && j["seconds"]["exact"].as_f64().is_some()
        );
    }

    /// The Jacobian `[out, in]` of a layer at a point `x` `[1, in]`, by autograd.
    /// The Jacobian `[outputs, inputs]` (double) of `f` at one point `x` (`[1, ..]`), a row
    /// per output by autograd.
    fn jacobian(f: &dyn Fn(&Tensor) -> Tensor, x: &Tensor) -> Tensor {
        let xa = x.detach().set_requires_grad(true);
        let y = f(&xa).reshape([1, -1]);
        let rows: Vec<Tensor> = (0..y.size()[1])
            .map(|i| {
                Tensor::run_backward(&[y.select(1, i).sum(y.kind())], &[&xa], true, false)
                    .pop()
                    .unwrap()
                    .reshape([-1])
            })
            .collect();
        Tensor::stack(&rows, 0).to_kind(Kind::Double)
    }

    #[test]
    fn one_lipschitz_layers_have_jacobian_norm_at_most_one() {
        for kind in [Kind::Double, Kind::Float] {
            let o = (kind, Device::Cpu);
            for seed in 0..4 {
                tch::manual_seed(100 + seed);
                let (d, h) = (8, 12);
                // Large, badly scaled weights: the constraints must do all the work.
                let w = Tensor::randn([h, d], o) * 3.0;
                let w_rect = Tensor::randn([5, d], o) * 3.0;
                let b = Tensor::randn([h], o);
                let layers = [
                    Layer::Sll {
                        weight: w.shallow_clone(),
                        bias: b.shallow_clone(),
                        q_log: Tensor::randn([h], o),
                    },
                    Layer::Cpl {
                        weight: w.shallow_clone(),
                        bias: b.shallow_clone(),
                    },
                    Layer::Aol {
                        weight: w_rect.shallow_clone(),
                        bias: Tensor::randn([5], o),
                    },
                    Layer::Spectral {
                        weight: w_rect.shallow_clone(),
                        bias: Tensor::randn([5], o),
                    },
                ];
                for layer in &layers {
                    let mut worst: f64 = 0.0;
                    for _ in 0..20 {
                        let x = Tensor::randn([1, d], o) * 2.0;
                        let j = jacobian(&|t| layer.forward(t), &x);
                        worst = worst.max(exact_dense(&j));
                    }
                    assert!(
                        worst <= 1.0 + 1e-5,
                        "{} ({kind:?}, seed {seed}): Jacobian norm {worst}",
                        layer.kind_name()
                    );
                    assert!(
                        worst > 0.3,
                        "{}: suspiciously small {worst}",
                        layer.kind_name()
                    );
                }
                // The same residual without the SLL/CPL scaling is far from 1-Lipschitz: the
                // check above can fail.
                let naive = Layer::Sll {
                    weight: w.shallow_clone(),
                    bias: b.shallow_clone(),
                    q_log: Tensor::zeros([h], o),
                };
                let x = Tensor::randn([1, d], o);
                let raw = exact_dense(&jacobian(
                    &|xa| xa - xa.linear(&w, Some(&b)).relu().matmul(&w) * 2.0,
                    &x,
                ));
                let scaled = exact_dense(&jacobian(&|t| naive.forward(t), &x));
                assert!(raw > 2.0 && scaled <= 1.0 + 1e-5, "raw {raw}, sll {scaled}");
            }
        }
    }

    #[test]
    fn conv_sll_layer_has_jacobian_norm_at_most_one() {
        for kind in [Kind::Double, Kind::Float] {
            let o = (kind, Device::Cpu);
            for (seed, (c, inner, k, n)) in [(2, 4, 3, 5), (3, 3, 3, 4), (1, 5, 5, 6)]
                .into_iter()
                .enumerate()
            {
                tch::manual_seed(200 + seed as i64);
                let layer = Layer::SllConv {
                    weight: Tensor::randn([inner, c, k, k], o) * 2.0,
                    bias: Tensor::randn([inner], o),
                    q_log: Tensor::randn([inner], o),
                };
                let mut worst: f64 = 0.0;
                for _ in 0..10 {
                    let x = Tensor::randn([1, c, n, n], o);
                    let j = jacobian(&|t| layer.forward(t), &x);
                    assert_eq!(j.size(), [c * n * n, c * n * n], "same shape out");
                    worst = worst.max(exact_dense(&j));
                }
                assert!(worst <= 1.0 + 1e-5, "conv SLL {c}->{inner} k{k}: {worst}");
                assert!(worst > 0.3, "suspiciously small {worst}");
            }
        }
    }

    #[test]
    fn sll_conv_network_has_jacobian_norm_at_most_one() {
        // The whole `sll-conv` architecture (channel padding, two conv SLL blocks, spectral head)
        // with weights and multipliers pushed far from their initialisation.
        let cfg = ModelConfig {
            arch: Arch::SllConv,
            hidden: vec![3, 5],
            normalize: false,
        };
        for seed in 0..3 {
            tch::manual_seed(300 + seed);
            let net = Network::from_config(&cfg, &[2, 5, 5], 4, None, Device::Cpu).unwrap();
            assert!(matches!(net.layers[0], Layer::PadChannels { channels: 3 }));
            tch::no_grad(|| {
                for p in net.parameters() {
                    let mut p = p;
                    let noise = Tensor::randn(p.size().as_slice(), (p.kind(), p.device())) * 2.0;
                    p.copy_(&noise);
                }
            });
            let mut worst: f64 = 0.0;
            for _ in 0..8 {
                let x = Tensor::rand([1, 2, 5, 5], (Kind::Float, Device::Cpu));
                let j = jacobian(&|t| net.forward(t), &x);
                assert_eq!(j.size(), [4, 50]);
                worst = worst.max(exact_dense(&j));
            }
            assert!(
                worst <= 1.0 + 1e-4,
                "sll-conv seed {seed}: Jacobian norm {worst}"
            );
            assert!(worst > 0.05, "suspiciously small {worst}");
        }
    }

    #[test]
    fn one_lipschitz_architectures_build_and_have_product_bound_one() {
        for arch in [
            Arch::Sll,
            Arch::Cpl,
            Arch::Aol,
            Arch::Spectral,
            Arch::SllConv,
        ] {
            tch::manual_seed(8);
            let cfg = ModelConfig {
                arch,
                hidden: vec![16, 16],
                normalize: false,
            };
            let net = Network::from_config(&cfg, &[1, 4, 4], 3, None, Device::Cpu).unwrap();
            let out = net.forward(&Tensor::rand([5, 1, 4, 4], (Kind::Float, Device::Cpu)));
            assert_eq!(out.size(), vec![5, 3]);
            let r = estimate(
                &net,
                &[Estimator::Exact, Estimator::Gram],
                None,
                &Settings::default(),
            )
            .unwrap();
            assert!(
                r.network["exact"] <= 1.0 + 1e-5,
                "{}: {:?}",
                arch.name(),
                r.network
            );
            assert!(
                r.network["gram"] <= 1.0 + 1e-5,
                "{}: {:?}",
                arch.name(),
                r.network
            );
            assert!(crate::bounds::check_supported(&net).is_err());
            // Every parameter is trainable and reached by the loss.
            let loss = net
                .forward(&Tensor::rand([4, 1, 4, 4], (Kind::Float, Device::Cpu)))
                .sum(Kind::Float);
            let params = net.parameters();
            let grads =
                Tensor::run_backward(&[loss], &params.iter().collect::<Vec<_>>(), false, false);
            for (p, g) in params.iter().zip(&grads) {
                assert_eq!(p.size(), g.size());
                assert!(
                    g.abs().sum(Kind::Double).double_value(&[]) > 0.0,
                    "{}",
                    arch.name()
                );
            }
        }
    }

    fn moons_cfg(arch: Arch, method: Method) -> ExperimentConfig {
        let mut cfg = ExperimentConfig::default_experiment();
        cfg.model.arch = arch;
        cfg.model.hidden = vec![32, 32];
        cfg.dataset.toy_points = 400;
        cfg.train.method = method;
        cfg.train.epochs = 4;
        cfg.train.batch_size = 32;
        cfg.optimizer.lr = 0.02;
        cfg.eval.eps = vec![0.05];
        cfg.eval.norm = Norm::L2;
        cfg.eval.bounds = vec![];
        cfg.eval.pgd_steps = 10;
        cfg.eval.robust_subset = 0;
        cfg.device = crate::config::DeviceChoice::Cpu;
        cfg
    }

    fn train_run(cfg: &ExperimentConfig) -> (crate::train::Prepared, Vec<crate::train::Event>) {
        use crate::train::{Control, Event};
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
        let tmp = tempfile::tempdir().unwrap();
        let mut run = crate::run::RunWriter::create(&tmp.path().join("run"), cfg).unwrap();
        let mut prep = crate::train::prepare(cfg, Device::Cpu).unwrap();
        let (_tx, rx) = crossbeam_channel::bounded(1);
        let control = Control {
            commands: rx,
            cancel: Default::default(),
        };
        let mut events: Vec<Event> = Vec::new();
        crate::train::train(cfg, &mut prep, &mut run, &control, &mut |e| events.push(e)).unwrap();
        (prep, events)
    }

    fn records(events: &[crate::train::Event]) -> Vec<crate::metrics::EvalRecord> {
        events
            .iter()
            .filter_map(|e| match e {
                crate::train::Event::Metrics(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn enforced_training_keeps_the_bound_below_the_target() {
        let mut cfg = moons_cfg(Arch::Mlp, Method::Lipschitz);
        cfg.train.lip_target = 1.5;
        cfg.train.lip_weight = 0.0;
        cfg.optimizer.lr = 0.05; // large steps push the weights up between projections
        cfg.eval.lipschitz = vec![Estimator::Exact, Estimator::Gram, Estimator::Empirical];
        let (prep, events) = train_run(&cfg);
        let recs = records(&events);
        assert_eq!(recs.len(), 4);
        for r in &recs {
            let max = r.lipschitz["train_bound_max"];
            let now = r.lipschitz["train_bound"];
            assert!(
                max <= 1.5 && now <= 1.5,
                "epoch {}: {:?}",
                r.epoch,
                r.lipschitz
            );
            // Independent: the per-layer SVD product and the empirical lower bound.
            assert!(
                r.lipschitz["exact"] <= now * (1.0 + 1e-9),
                "{:?}",
                r.lipschitz
            );
            assert!(r.lipschitz["empirical"] <= r.lipschitz["exact"] * (1.0 + 1e-9));
            assert!(r.cert_acc.contains_key("lipschitz"));
        }
        // The projection is active: without it the same run ends far above the target.
        assert!(recs.last().unwrap().lipschitz["train_bound"] > 1.4);
        let final_exact: f64 =
            estimate(&prep.net, &[Estimator::Product], None, &Settings::default())
                .unwrap()
                .network["product"];
        assert!(final_exact <= 1.5, "{final_exact}");
        let mut free = cfg.clone();
        free.train.method = Method::Standard;
        free.train.lip_target = 0.0;
        let (free_prep, _) = train_run(&free);
        let free_bound = estimate(
            &free_prep.net,
            &[Estimator::Product],
            None,
            &Settings::default(),
        )
        .unwrap()
        .network["product"];
        assert!(
            free_bound > 1.5,
            "unconstrained training stays at {free_bound}"
        );
        let logged = events.iter().any(|e| {
            matches!(e, crate::train::Event::Log { message, .. } if message.contains("Lipschitz bound") && message.contains("target 1.5"))
        });
        assert!(logged);
    }

    #[test]
    fn the_regularizer_lowers_the_bound() {
        let mut cfg = moons_cfg(Arch::Mlp, Method::Lipschitz);
        cfg.train.lip_weight = 0.5;
        let (reg, _) = train_run(&cfg);
        cfg.train.method = Method::Standard;
        cfg.train.lip_weight = 0.0;
        let (plain, _) = train_run(&cfg);
        let b = |n: &Network| {
            estimate(n, &[Estimator::Product], None, &Settings::default())
                .unwrap()
                .network["product"]
        };
        assert!(
            b(&reg.net) < b(&plain.net),
            "{} vs {}",
            b(&reg.net),
            b(&plain.net)
        );
        cfg.train.method = Method::Lipschitz;
        cfg.train.lip_weight = 0.5;
        cfg.train.lip_bound = crate::config::LipBound::Lipsdp;
        cfg.train.epochs = 2;
        let (sdp, events) = train_run(&cfg);
        let recs = records(&events);
        assert!(recs.iter().all(|r| r.train_loss.is_finite()));
        assert!(b(&sdp.net) < b(&plain.net));
    }

    /// No PGD-l_2 point breaks a point the Lipschitz certificate certifies; and the attack is
    /// strong enough that an inflated certificate would be caught.
    #[test]
    fn l2_lipschitz_certificates_are_sound_against_pgd() {
        use crate::config::LipBound;
        for (arch, method, bound) in [
            (Arch::Sll, Method::Standard, LipBound::Gram),
            (Arch::Cpl, Method::Standard, LipBound::Gram),
            (Arch::Aol, Method::Standard, LipBound::Gram),
            (Arch::Spectral, Method::Standard, LipBound::Gram),
            (Arch::Mlp, Method::Lipschitz, LipBound::Gram),
            (Arch::Mlp, Method::Lipschitz, LipBound::Lipsdp),
        ] {
            let mut cfg = moons_cfg(arch, method);
            if method == Method::Lipschitz {
                cfg.train.lip_weight = 0.1;
                cfg.train.lip_bound = bound;
            }
            cfg.train.epochs = 6;
            let (prep, events) = train_run(&cfg);
            let recs = records(&events);
            assert!(recs.iter().all(|r| r.cert_acc.contains_key("lipschitz")));
            let net = &prep.net;
            let (x, y) = (&prep.data.test_x, &prep.data.test_y);
            let parts = certificate_parts(net, 6).unwrap();
            if arch == Arch::Mlp {
                // The body bound is LipSDP's when that is tighter than the Gram product.
                let shapes = net.layer_shapes();
                let n = net.layers.len();
                let gram_body: f64 = tch::no_grad(|| {
                    (0..n - 1)
                        .filter_map(|i| layer_gram_bound(&net.layers[i], &shapes[i], 6))
                        .map(|b| scalar(&b))
                        .product()
                });
                let sdp_body = body_lipsdp(net).unwrap();
                assert!(sdp_body <= gram_body, "{sdp_body} > {gram_body}");
                let expect = sdp_body * (1.0 + CERT_SAFETY);
                assert!(rel(parts.body_bound, expect).abs() < 1e-12);
            }
            let radius = l2_radius(net, &parts, x, y);
            let mut certified_any = false;
            let mut caught_inflated = false;
            for eps in [0.02, 0.05, 0.1, 0.2] {
                let cert = radius.gt(eps);
                let pgd = PgdConfig::evaluation(eps, Norm::L2, 50, 3, AttackLoss::Margin);
                let res = attack::pgd(net, x, y, &pgd);
                let broken = tch::no_grad(|| attack::correct(net, &res.x_adv, y)).logical_not();
                let bad = cert.logical_and(&broken).sum(Kind::Int64).int64_value(&[]);
                assert_eq!(
                    bad,
                    0,
                    "{} eps {eps}: {bad} certified points broken by PGD",
                    arch.name()
                );
                certified_any |= cert.sum(Kind::Int64).int64_value(&[]) > 0;
                // Ten times the radius is not a certificate: PGD breaks some such points.
                let inflated = (&radius * 10.0).gt(eps);
                caught_inflated |= inflated
                    .logical_and(&broken)
                    .sum(Kind::Int64)
                    .int64_value(&[])
                    > 0;
            }
            assert!(certified_any, "{}: nothing certified", arch.name());
            assert!(
                caught_inflated,
                "{}: PGD too weak to test the certificate",
                arch.name()
            );
        }
    }

    /// The conv path end to end: Gram bounds of conv layers (FFT blocks on the grown grid) in
    /// the training loss and the enforced bound, conv estimators per epoch, and the l_2
    /// certificate of a convnet checked against PGD point by point.
    #[test]
    fn lipschitz_training_and_certificate_on_a_small_convnet() {
        let mut cfg = ExperimentConfig::default_experiment();
        cfg.dataset = crate::config::DatasetConfig {
            kind: crate::config::DatasetKind::FashionMnist,
            train_size: 512,
            test_size: 200,
            ..Default::default()
        };
        cfg.model.arch = Arch::SmallConv;
        cfg.train.method = Method::Lipschitz;
        cfg.train.lip_weight = 0.01;
        cfg.train.lip_target = 3.0;
        cfg.train.epochs = 2;
        cfg.train.batch_size = 64;
        cfg.optimizer.lr = 0.003;
        cfg.eval.eps = vec![0.3];
        cfg.eval.norm = Norm::L2;
        cfg.eval.bounds = vec![];
        cfg.eval.pgd_steps = 20;
        cfg.eval.robust_subset = 0;
        cfg.eval.lipschitz = vec![Estimator::Power, Estimator::Exact, Estimator::Empirical];
        cfg.device = crate::config::DeviceChoice::Cpu;
        let (prep, events) = train_run(&cfg);
        let recs = records(&events);
        assert_eq!(recs.len(), 2);
        for r in &recs {
            let l = &r.lipschitz;
            assert!(
                l["train_bound_max"] <= 3.0 && l["train_bound"] <= 3.0,
                "{l:?}"
            );
            assert!(l["exact"] <= l["train_bound"] * (1.0 + 1e-9), "{l:?}");
            assert!(l["power"] <= l["exact"] * (1.0 + 1e-9), "{l:?}");
            assert!(l["empirical"] <= l["exact"] * (1.0 + 1e-9), "{l:?}");
            assert!(r.cert_acc["lipschitz"] <= r.pgd_acc.unwrap(), "{r:?}");
        }
        let net = &prep.net;
        let (x, y) = (&prep.data.test_x, &prep.data.test_y);
        let parts = certificate_parts(net, 10).unwrap();
        let radius = l2_radius(net, &parts, x, y);
        let mut certified = 0;
        for eps in [0.1, 0.3] {
            let cert = radius.gt(eps);
            certified += cert.sum(Kind::Int64).int64_value(&[]);
            let res = attack::pgd(
                net,
                x,
                y,
                &PgdConfig::evaluation(eps, Norm::L2, 30, 2, AttackLoss::Margin),
            );
            let broken = tch::no_grad(|| attack::correct(net, &res.x_adv, y)).logical_not();
            let bad = cert.logical_and(&broken).sum(Kind::Int64).int64_value(&[]);
            assert_eq!(bad, 0, "eps {eps}: {bad} certified points broken");
        }
        assert!(certified > 0, "nothing certified");
    }

    #[test]
    fn config_refuses_bounds_on_one_lipschitz_nets() {
        let mut cfg = moons_cfg(Arch::Sll, Method::Ibp);
        cfg.train.eps = 0.1;
        cfg.eval.bounds = vec![crate::config::BoundMethod::Ibp];
        cfg.eval.lipschitz = vec![Estimator::Lipsdp];
        let fields: Vec<String> = cfg.validate().into_iter().map(|p| p.field).collect();
        for f in ["eval.bounds", "train.method", "eval.lipschitz"] {
            assert!(fields.iter().any(|x| x == f), "{f} not in {fields:?}");
        }
    }
}
