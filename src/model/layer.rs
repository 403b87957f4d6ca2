//! One layer of a [`Network`](super::Network): the tensors it holds ([`Layer`]), what it is
//! without tensors ([`LayerSpec`]), and how it is created and applied.
use super::circulant::{dc_dense, dc_forward};
use super::one_lipschitz::{aol_scale, sll_conv_t, sll_t, ONE_LIP_GRAM_ITERS};
use crate::linalg::gram_bound;
use tch::{nn, Kind, TchError, Tensor};

/// One layer. Tensors are shallow handles to the variables of the owning `VarStore`.
#[derive(Debug)]
pub enum Layer {
    /// `y = x W^T + b`, weight `[out, in]`.
    Linear {
        weight: Tensor,
        bias: Tensor,
    },
    /// Weight `[out, in, k, k]`.
    Conv2d {
        weight: Tensor,
        bias: Tensor,
        stride: i64,
        padding: i64,
    },
    Relu,
    /// Flattens all but the batch dimension.
    Flatten,
    /// `(x - mean) / std` per channel; `mean`, `std` shaped to broadcast over one example.
    Normalize {
        mean: Tensor,
        std: Tensor,
    },
    /// SDP-based Lipschitz layer (SLL, Araujo et al. 2023), dense, 1-Lipschitz by construction:
    /// `x - 2 W^T diag(t) relu(W x + b)` with `t_i = q_i / sum_j |W W^T|_ij q_j`,
    /// `q = exp(q_log)`. Weight `[inner, features]`; output width = input width.
    Sll {
        weight: Tensor,
        bias: Tensor,
        q_log: Tensor,
    },
    /// SLL block, convolutional: `x - 2 K^T diag(t) relu(K * x + b)` with `K` a `k x k` conv
    /// (stride 1, padding `k / 2`, `k` odd) from `channels` to `inner` channels, `K^T` its
    /// adjoint (the transposed conv), `t_i = q_i / sum_j |K K^T|_ij q_j` where `|K K^T|_ij` is the
    /// sum over offsets of the absolute cross-correlation of the kernels of channels `i` and
    /// `j` (the conv version of the SLL certificate). Weight `[inner, channels, k, k]`.
    SllConv {
        weight: Tensor,
        bias: Tensor,
        q_log: Tensor,
    },
    /// Convex potential layer (CPL, Meunier et al. 2022), dense, 1-Lipschitz by construction:
    /// `x - 2 / ||W||^2 W^T relu(W x + b)` with `||W||` the Gram-iteration *upper bound*
    /// ([`gram_bound`], [`ONE_LIP_GRAM_ITERS`] iterations), never a power-iteration estimate.
    Cpl {
        weight: Tensor,
        bias: Tensor,
    },
    /// Almost-orthogonal layer (AOL, Prach & Lampert 2022): `y = W D x + b`,
    /// `D_ii = (sum_j |W^T W|_ij)^(-1/2)`; `||W D||_2 <= 1`. Weight `[out, in]`.
    Aol {
        weight: Tensor,
        bias: Tensor,
    },
    /// Spectral-normalised linear layer: `y = W / g(W) x + b` with `g` the Gram-iteration upper
    /// bound on `||W||_2`, so `||W / g(W)||_2 <= 1`. Weight `[out, in]`.
    Spectral {
        weight: Tensor,
        bias: Tensor,
    },
    /// Zero channels appended to an image batch up to `channels` (an isometry: the channel lift
    /// in front of conv SLL blocks, whose output width equals their input width).
    PadChannels {
        channels: i64,
    },
    /// Diagonal-circulant layer (Araujo et al. 2019): `(diag(d) C x_pad)[..out] + b`, `C` the
    /// circulant matrix of `circ`, `d` = `diag`, both `[n]` with `n = max(in, out)`; bias `[out]`.
    Circulant {
        diag: Tensor,
        circ: Tensor,
        bias: Tensor,
        in_features: i64,
    },
}

/// A diagonal-circulant layer initialised as Araujo et al. 2019 do: `c_i ~ N(0, 2/n)`, `d_i`
/// uniform on {-1, 1} (Rademacher), bias 0 (their `alpha' = 0`). The random signs make every
/// output's density symmetric and the outputs uncorrelated, so the covariance after each ReLU
/// layer stays `(2/n) ||x||^2 I` at any depth.
fn circulant_layer(p: &nn::Path, in_features: i64, out_features: i64) -> Result<Layer, TchError> {
    let n = in_features.max(out_features);
    let signs = Tensor::f_randint(2, [n], (Kind::Float, p.device()))?
        .f_mul_scalar(2.0)?
        .f_sub_scalar(1.0)?;
    Ok(Layer::Circulant {
        diag: p.f_var_copy("diag", &signs)?,
        circ: p.f_randn("circ", &[n], 0.0, (2.0 / n as f64).sqrt())?,
        bias: p.f_zeros("bias", &[out_features])?,
        in_features,
    })
}

impl Layer {
    /// Creates the variables of one layer under `p` (`layers.{i}`) with PyTorch's default
    /// initialisation (`U(-1/sqrt(fan_in), 1/sqrt(fan_in))` for weights and biases; the
    /// diagonal-circulant layer follows its paper, see [`circulant_layer`]);
    /// `input_shape` is the network's input, which shapes a Normalize layer's statistics.
    /// Fails when libtorch cannot allocate the weights (a width too big for the device).
    pub fn new(spec: &LayerSpec, p: &nn::Path, input_shape: &[i64]) -> Result<Layer, TchError> {
        Ok(match spec {
            LayerSpec::Linear {
                in_features,
                out_features,
            } => {
                let bound = 1.0 / (*in_features as f64).sqrt();
                Layer::Linear {
                    weight: p.f_uniform("weight", &[*out_features, *in_features], -bound, bound)?,
                    bias: p.f_uniform("bias", &[*out_features], -bound, bound)?,
                }
            }
            LayerSpec::Conv2d {
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
            } => {
                let bound = 1.0 / ((in_channels * kernel * kernel) as f64).sqrt();
                Layer::Conv2d {
                    weight: p.f_uniform(
                        "weight",
                        &[*out_channels, *in_channels, *kernel, *kernel],
                        -bound,
                        bound,
                    )?,
                    bias: p.f_uniform("bias", &[*out_channels], -bound, bound)?,
                    stride: *stride,
                    padding: *padding,
                }
            }
            LayerSpec::Sll { features, inner } | LayerSpec::Cpl { features, inner } => {
                let bound = 1.0 / (*features as f64).sqrt();
                let weight = p.f_uniform("weight", &[*inner, *features], -bound, bound)?;
                let bias = p.f_uniform("bias", &[*inner], -bound, bound)?;
                if matches!(spec, LayerSpec::Sll { .. }) {
                    Layer::Sll {
                        weight,
                        bias,
                        q_log: p.f_zeros("q", &[*inner])?,
                    }
                } else {
                    Layer::Cpl { weight, bias }
                }
            }
            LayerSpec::Aol {
                in_features,
                out_features,
            }
            | LayerSpec::Spectral {
                in_features,
                out_features,
            } => {
                let bound = 1.0 / (*in_features as f64).sqrt();
                let weight =
                    p.f_uniform("weight", &[*out_features, *in_features], -bound, bound)?;
                let bias = p.f_uniform("bias", &[*out_features], -bound, bound)?;
                if matches!(spec, LayerSpec::Aol { .. }) {
                    Layer::Aol { weight, bias }
                } else {
                    Layer::Spectral { weight, bias }
                }
            }
            LayerSpec::SllConv {
                channels,
                inner,
                kernel,
            } => {
                let bound = 1.0 / ((channels * kernel * kernel) as f64).sqrt();
                Layer::SllConv {
                    weight: p.f_uniform(
                        "weight",
                        &[*inner, *channels, *kernel, *kernel],
                        -bound,
                        bound,
                    )?,
                    bias: p.f_uniform("bias", &[*inner], -bound, bound)?,
                    q_log: p.f_zeros("q", &[*inner])?,
                }
            }
            LayerSpec::PadChannels { to, .. } => Layer::PadChannels { channels: *to },
            LayerSpec::Circulant {
                in_features,
                out_features,
            } => circulant_layer(p, *in_features, *out_features)?,
            LayerSpec::Relu => Layer::Relu,
            LayerSpec::Flatten => Layer::Flatten,
            LayerSpec::Normalize { mean, std } => {
                let shape: Vec<i64> = if input_shape.len() == 3 {
                    vec![mean.len() as i64, 1, 1]
                } else {
                    vec![mean.len() as i64]
                };
                let device = p.device();
                let stat = |v: &[f64]| {
                    Tensor::f_from_slice(v)?
                        .f_to_kind(Kind::Float)?
                        .f_reshape(&shape)?
                        .f_to_device(device)
                };
                Layer::Normalize {
                    mean: p.add("mean", stat(mean)?, false),
                    std: p.add("std", stat(std)?, false),
                }
            }
        })
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            Layer::Linear { .. } => "linear",
            Layer::Conv2d { .. } => "conv",
            Layer::Relu => "relu",
            Layer::Flatten => "flatten",
            Layer::Normalize { .. } => "normalize",
            Layer::Sll { .. } => "sll",
            Layer::SllConv { .. } => "sll-conv",
            Layer::Cpl { .. } => "cpl",
            Layer::Aol { .. } => "aol",
            Layer::Spectral { .. } => "spectral",
            Layer::PadChannels { .. } => "pad-channels",
            Layer::Circulant { .. } => "circulant",
        }
    }

    /// Whether the layer is one of the 1-Lipschitz-by-construction layers (SLL, CPL, AOL,
    /// spectral-normalised, the channel padding), which the IBP/CROWN bound code does not handle.
    pub fn is_one_lipschitz(&self) -> bool {
        matches!(
            self,
            Layer::Sll { .. }
                | Layer::SllConv { .. }
                | Layer::Cpl { .. }
                | Layer::Aol { .. }
                | Layer::Spectral { .. }
                | Layer::PadChannels { .. }
        )
    }

    /// The weight the layer applies, for affine layers with a weight matrix or kernel
    /// (Linear, Conv2d, and the reparametrised AOL and spectral layers); differentiable.
    pub fn effective_weight(&self) -> Option<Tensor> {
        match self {
            Layer::Linear { weight, .. } | Layer::Conv2d { weight, .. } => {
                Some(weight.shallow_clone())
            }
            Layer::Aol { weight, .. } => Some(weight * aol_scale(weight).unsqueeze(0)),
            Layer::Spectral { weight, .. } => Some(weight / gram_bound(weight, ONE_LIP_GRAM_ITERS)),
            Layer::Circulant {
                diag,
                circ,
                bias,
                in_features,
            } => Some(dc_dense(diag, circ, *in_features, bias.size()[0])),
            _ => None,
        }
    }

    /// The same layer with every tensor mapped by `f` (e.g. a detached double-precision copy).
    pub fn map_tensors(&self, f: &dyn Fn(&Tensor) -> Tensor) -> Layer {
        match self {
            Layer::Linear { weight, bias } => Layer::Linear {
                weight: f(weight),
                bias: f(bias),
            },
            Layer::Conv2d {
                weight,
                bias,
                stride,
                padding,
            } => Layer::Conv2d {
                weight: f(weight),
                bias: f(bias),
                stride: *stride,
                padding: *padding,
            },
            Layer::Relu => Layer::Relu,
            Layer::Flatten => Layer::Flatten,
            Layer::Normalize { mean, std } => Layer::Normalize {
                mean: f(mean),
                std: f(std),
            },
            Layer::Sll {
                weight,
                bias,
                q_log,
            } => Layer::Sll {
                weight: f(weight),
                bias: f(bias),
                q_log: f(q_log),
            },
            Layer::SllConv {
                weight,
                bias,
                q_log,
            } => Layer::SllConv {
                weight: f(weight),
                bias: f(bias),
                q_log: f(q_log),
            },
            Layer::Cpl { weight, bias } => Layer::Cpl {
                weight: f(weight),
                bias: f(bias),
            },
            Layer::Aol { weight, bias } => Layer::Aol {
                weight: f(weight),
                bias: f(bias),
            },
            Layer::Spectral { weight, bias } => Layer::Spectral {
                weight: f(weight),
                bias: f(bias),
            },
            Layer::PadChannels { channels } => Layer::PadChannels {
                channels: *channels,
            },
            Layer::Circulant {
                diag,
                circ,
                bias,
                in_features,
            } => Layer::Circulant {
                diag: f(diag),
                circ: f(circ),
                bias: f(bias),
                in_features: *in_features,
            },
        }
    }

    /// Applies the layer to a batch.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            Layer::Linear { weight, bias } => x.linear(weight, Some(bias)),
            Layer::Conv2d {
                weight,
                bias,
                stride,
                padding,
            } => x.conv2d(weight, Some(bias), [*stride; 2], [*padding; 2], [1; 2], 1),
            Layer::Relu => x.relu(),
            Layer::Flatten => x.flatten(1, -1),
            Layer::Normalize { mean, std } => (x - mean) / std,
            Layer::Sll {
                weight,
                bias,
                q_log,
            } => {
                let t = sll_t(weight, q_log);
                let r = x.linear(weight, Some(bias)).relu() * t;
                x - r.matmul(weight) * 2.0
            }
            Layer::SllConv {
                weight,
                bias,
                q_log,
            } => {
                let p = weight.size()[2] / 2;
                let t = sll_conv_t(weight, q_log).reshape([1, -1, 1, 1]);
                let r = x
                    .conv2d(weight, Some(bias), [1, 1], [p, p], [1, 1], 1)
                    .relu()
                    * t;
                let back =
                    r.conv_transpose2d(weight, None::<Tensor>, [1, 1], [p, p], [0, 0], 1, [1, 1]);
                x - back * 2.0
            }
            Layer::Cpl { weight, bias } => {
                let norm = gram_bound(weight, ONE_LIP_GRAM_ITERS);
                let r = x.linear(weight, Some(bias)).relu();
                x - r.matmul(weight) * (2.0 / norm.square())
            }
            Layer::Aol { weight, bias } => {
                x.linear(&(weight * aol_scale(weight).unsqueeze(0)), Some(bias))
            }
            Layer::Spectral { weight, bias } => x.linear(
                &(weight / gram_bound(weight, ONE_LIP_GRAM_ITERS)),
                Some(bias),
            ),
            Layer::PadChannels { channels } => {
                let extra = channels - x.size()[1];
                x.constant_pad_nd([0, 0, 0, 0, 0, extra])
            }
            Layer::Circulant {
                diag, circ, bias, ..
            } => dc_forward(x, diag, circ, bias),
        }
    }

    /// Whether the layer is affine (linear map plus offset) in its input.
    pub fn is_affine(&self) -> bool {
        matches!(
            self,
            Layer::Linear { .. }
                | Layer::Conv2d { .. }
                | Layer::Flatten
                | Layer::Normalize { .. }
                | Layer::Aol { .. }
                | Layer::Spectral { .. }
                | Layer::PadChannels { .. }
                | Layer::Circulant { .. }
        )
    }

    /// The layer as the bound code sees it: a diagonal-circulant layer as the `Linear` layer of
    /// its explicit matrix (differentiable, so certified training works through it); `None` for
    /// every other layer, which the bound code takes as it is.
    pub fn as_dense(&self) -> Option<Layer> {
        match self {
            Layer::Circulant { bias, .. } => Some(Layer::Linear {
                weight: self.effective_weight()?,
                bias: bias.shallow_clone(),
            }),
            _ => None,
        }
    }
}

/// What a layer is, without tensors: used to build a network and to describe it.
#[derive(Debug, Clone, PartialEq)]
pub enum LayerSpec {
    Linear {
        in_features: i64,
        out_features: i64,
    },
    Conv2d {
        in_channels: i64,
        out_channels: i64,
        kernel: i64,
        stride: i64,
        padding: i64,
    },
    Relu,
    Flatten,
    Normalize {
        mean: Vec<f64>,
        std: Vec<f64>,
    },
    /// SLL block on `features` inputs with `inner` hidden units.
    Sll {
        features: i64,
        inner: i64,
    },
    /// CPL block on `features` inputs with `inner` hidden units.
    Cpl {
        features: i64,
        inner: i64,
    },
    Aol {
        in_features: i64,
        out_features: i64,
    },
    Spectral {
        in_features: i64,
        out_features: i64,
    },
    /// Conv SLL block on `channels` channels with `inner` hidden channels, `kernel x kernel`.
    SllConv {
        channels: i64,
        inner: i64,
        kernel: i64,
    },
    /// Zero channels appended, `from` -> `to`.
    PadChannels {
        from: i64,
        to: i64,
    },
    /// Diagonal-circulant layer `in_features -> out_features` (Araujo et al. 2019).
    Circulant {
        in_features: i64,
        out_features: i64,
    },
}

impl LayerSpec {
    /// A short name with the sizes, e.g. `Linear(784->100)`, as in [`Network::describe`].
    ///
    /// [`Network::describe`]: super::Network::describe
    pub fn label(&self) -> String {
        match self {
            LayerSpec::Linear {
                in_features,
                out_features,
            } => format!("Linear({in_features}->{out_features})"),
            LayerSpec::Conv2d {
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
            } => format!("Conv({in_channels}->{out_channels}, k{kernel} s{stride} p{padding})"),
            LayerSpec::Relu => "ReLU".into(),
            LayerSpec::Flatten => "Flatten".into(),
            LayerSpec::Normalize { .. } => "Normalize".into(),
            LayerSpec::Sll { features, inner } => format!("SLL({features}, inner {inner})"),
            LayerSpec::Cpl { features, inner } => format!("CPL({features}, inner {inner})"),
            LayerSpec::Aol {
                in_features,
                out_features,
            } => format!("AOL({in_features}->{out_features})"),
            LayerSpec::Spectral {
                in_features,
                out_features,
            } => format!("Spectral({in_features}->{out_features})"),
            LayerSpec::SllConv {
                channels,
                inner,
                kernel,
            } => format!("SLLConv({channels}, inner {inner}, k{kernel})"),
            LayerSpec::PadChannels { from, to } => format!("PadChannels({from}->{to})"),
            LayerSpec::Circulant {
                in_features,
                out_features,
            } => format!("Circulant({in_features}->{out_features})"),
        }
    }
}
