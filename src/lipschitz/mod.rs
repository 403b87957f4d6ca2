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
//! - `toeplitz`: for conv layers the Toeplitz bound (Araujo et al. 2021), the supremum over all
//!   frequencies of the kernel's symbol: it bounds the layer on inputs of every size (`exact` is
//!   for the layer's own input size); dense layers take their exact norm.
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
//!
//! Files: `dense` (power iteration, SVD, dense matrices of linear maps), `conv` (FFT blocks,
//! circular and polyphase convolutions), `toeplitz` (the Toeplitz bound), `empirical` (the lower bound), `lipsdp` (LipSDP-Neuron
//! and its solvers; `clarabel` holds the solver interface), `admm` (training by ADMM, Pauli et
//! al. 2021), `training` (the bounds the training loss and the enforced bound use),
//! `certificate` (the l_2 certificate).
mod admm;
mod certificate;
mod clarabel;
mod conv;
mod dense;
mod empirical;
mod lipsdp;
mod toeplitz;
mod training;

pub use crate::config::Estimator;
pub use crate::linalg::gram_bound;
pub use admm::{admm_projection, Admm, AdmmStep};
pub use certificate::{
    body_lipsdp, certificate_parts, l2_certified, l2_radius, CertificateParts, CERT_SAFETY,
};
pub use conv::{circular_conv, conv_fft_blocks, exact_conv_circular, gram_conv, polyphase_kernel};
pub use dense::{dense_matrix, exact_dense, power_dense, power_operator, PowerResult};
pub use empirical::empirical_lower_bound;
pub use lipsdp::{lipsdp, mlp_weights, LipSdpResult};
pub use toeplitz::{grid_factor, toeplitz_conv, TOEPLITZ_GRID};
pub use training::{enforce_bound, guaranteed_bound, lipsdp_training_bound, training_bound};

use crate::model::{Layer, Network};
use conv::conv_operator;
use std::collections::BTreeMap;
use std::time::Instant;
use tch::{Kind, Tensor};

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
    /// Toeplitz bound: grid points per frequency axis.
    pub toeplitz_grid: i64,
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
            toeplitz_grid: TOEPLITZ_GRID,
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
            toeplitz_grid: TOEPLITZ_GRID,
        }
    }
}

/// The value of a one-element tensor, in double precision.
fn scalar(t: &Tensor) -> f64 {
    t.to_kind(Kind::Double).double_value(&[])
}

/// The l_2 Lipschitz constant of a Normalize layer: `1 / min(std)`.
fn normalize_factor(std: &Tensor) -> f64 {
    1.0 / scalar(&std.min())
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
                // A grid too coarse for the kernel gives no finite bound.
                Estimator::Toeplitz => {
                    toeplitz_conv(&kernel, s.toeplitz_grid, None).unwrap_or(f64::INFINITY)
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
            Estimator::Power
            | Estimator::Gram
            | Estimator::Exact
            | Estimator::Toeplitz
            | Estimator::Product => {
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
                    "lipsdp: {} (SDP dimension {}), verified from the multipliers, with the \
                     certificate's rounding margin (1 + {CERT_SAFETY:e})",
                    r.solver, r.dim
                ));
                // The value is an upper bound computed in floating point: the same safety factor
                // as the l_2 certificate's body bound.
                r.value * (1.0 + CERT_SAFETY)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Arch, ModelConfig};
    use crate::model::LayerSpec;
    use tch::Device;

    pub(super) fn rel(a: f64, b: f64) -> f64 {
        (a - b) / b.abs()
    }

    pub(super) fn net_of(specs: Vec<LayerSpec>, input: &[i64], classes: i64, seed: i64) -> Network {
        tch::manual_seed(seed);
        Network::new(specs, input, classes, Device::Cpu).unwrap()
    }

    pub(super) fn mlp(d: i64, hidden: &[i64], classes: i64, seed: i64) -> Network {
        tch::manual_seed(seed);
        let cfg = ModelConfig {
            hidden: hidden.to_vec(),
            ..ModelConfig::default()
        };
        Network::from_config(&cfg, &[d], classes, None, Device::Cpu).unwrap()
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
}
