//! Networks as an ordered list of layers that the bound, attack and Lipschitz code can walk.
//!
//! Parameters live in a `VarStore` under `layers.{i}.weight` / `layers.{i}.bias` (`i` the
//! index in [`Network::layers`]), in PyTorch's shapes, so `model.safetensors` loads into an
//! `nn.Sequential` with the same layer order.
use crate::config::{Arch, ModelConfig};
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model: {0}")]
    Shape(String),
    #[error("cannot save model to {path}: {message}")]
    Save { path: String, message: String },
    #[error("cannot load model from {path}: {message}")]
    Load { path: String, message: String },
}

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
}

/// Gram iterations of the guaranteed spectral-norm bounds inside CPL and spectral-normalised
/// layers. Any count gives an upper bound; 6 is within ~1e-3 of the true norm in practice.
pub const ONE_LIP_GRAM_ITERS: u32 = 6;

/// Frobenius norm of every matrix of a batch (`[.., 1, 1]`), scaled by the largest entry
/// first so that squaring cannot overflow.
fn frobenius(g: &Tensor) -> Tensor {
    let a = g.abs();
    let m = a
        .amax([-2i64, -1].as_slice(), true)
        .clamp_min(1e-30)
        .detach();
    (&a / &m)
        .square()
        .sum_dim_intlist([-2i64, -1].as_slice(), true, None::<Kind>)
        .sqrt()
        * m
}

/// Gram-iteration upper bound on the largest singular value of a matrix `[m, n]`, or of every
/// matrix of a batch `[.., m, n]` (real or complex), after `iters` iterations (Delattre et
/// al. 2023). With `G_0 = W`, `G_{t+1} = G_t^H G_t`: `sigma_1(W)^(2^t) = sigma_1(G_t) <=
/// ||G_t||_F`, so `||G_t||_F^(1/2^t)` bounds `sigma_1(W)` from above at *every* `t` (t = 0 is the
/// Frobenius norm) and converges super-linearly. Each step divides by the Frobenius norm and
/// accumulates its logarithm, so nothing overflows. Differentiable (autograd) in `w`.
/// Returns the batch shape (a scalar for one matrix).
pub fn gram_bound(w: &Tensor, iters: u32) -> Tensor {
    let size = w.size();
    let nd = size.len();
    assert!(nd >= 2, "gram_bound: expected a matrix, got shape {size:?}");
    // The smaller Gram side: same non-zero singular values, cheaper products.
    let mut g = if size[nd - 1] > size[nd - 2] {
        w.mh()
    } else {
        w.shallow_clone()
    };
    let mut log_scale: Option<Tensor> = None;
    for _ in 0..iters {
        let f = frobenius(&g).clamp_min(1e-30);
        g = &g / &f;
        g = g.mh().matmul(&g);
        let l = f.log();
        log_scale = Some(match log_scale {
            None => l * 2.0,
            Some(s) => (s + l) * 2.0,
        });
    }
    let last = frobenius(&g).clamp_min(1e-30).log();
    let total = match log_scale {
        None => last,
        Some(s) => s + last,
    };
    (total / 2f64.powi(iters as i32))
        .exp()
        .squeeze_dim(-1)
        .squeeze_dim(-1)
}

/// The column scaling of AOL: `d_j = (sum_i |W^T W|_ij)^(-1/2)` for weight `[out, in]`.
pub fn aol_scale(weight: &Tensor) -> Tensor {
    let wtw = weight.tr().matmul(weight).abs();
    (wtw.sum_dim_intlist([1i64].as_slice(), false, None::<Kind>) + 1e-12).rsqrt()
}

/// The conv SLL multipliers: `t_i = q_i / sum_j M_ij q_j` with
/// `M_ij = sum_offsets |(K_i * K_j)(offset)|` for a kernel `[inner, channels, k, k]`.
pub fn sll_conv_t(weight: &Tensor, q_log: &Tensor) -> Tensor {
    let k = weight.size()[2];
    let kk = weight
        .conv2d(weight, None::<Tensor>, [1, 1], [k - 1, k - 1], [1, 1], 1)
        .abs()
        .sum_dim_intlist([2i64, 3].as_slice(), false, None::<Kind>);
    let q = q_log.exp();
    &q / (kk.matmul(&q) + 1e-12)
}

/// The SLL multipliers `t_i = q_i / sum_j |W W^T|_ij q_j`.
pub fn sll_t(weight: &Tensor, q_log: &Tensor) -> Tensor {
    let q = q_log.exp();
    let wwt = weight.matmul(&weight.tr()).abs();
    &q / (wwt.matmul(&q) + 1e-12)
}

impl Layer {
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
        )
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
}

/// The layer list of an architecture for inputs of `input_shape` (without the batch dim).
pub fn architecture(
    cfg: &ModelConfig,
    input_shape: &[i64],
    num_classes: i64,
    normalize: Option<(Vec<f64>, Vec<f64>)>,
) -> Result<Vec<LayerSpec>, ModelError> {
    let mut specs = Vec::new();
    if let Some((mean, std)) = normalize {
        specs.push(LayerSpec::Normalize { mean, std });
    }
    match cfg.arch {
        Arch::Mlp => {
            let mut width: i64 = input_shape.iter().product();
            if input_shape.len() > 1 {
                specs.push(LayerSpec::Flatten);
            }
            for &h in &cfg.hidden {
                specs.push(LayerSpec::Linear {
                    in_features: width,
                    out_features: h,
                });
                specs.push(LayerSpec::Relu);
                width = h;
            }
            specs.push(LayerSpec::Linear {
                in_features: width,
                out_features: num_classes,
            });
        }
        Arch::Sll | Arch::Cpl => {
            // A spectral-normalised projection to width hidden[0], one residual block per
            // `hidden` entry (inner width that entry), a spectral-normalised last layer.
            let Some(&width) = cfg.hidden.first() else {
                return Err(ModelError::Shape(format!(
                    "`{}` needs at least one hidden width",
                    cfg.arch.name()
                )));
            };
            let d: i64 = input_shape.iter().product();
            if input_shape.len() > 1 {
                specs.push(LayerSpec::Flatten);
            }
            specs.push(LayerSpec::Spectral {
                in_features: d,
                out_features: width,
            });
            for &h in &cfg.hidden {
                specs.push(if cfg.arch == Arch::Sll {
                    LayerSpec::Sll {
                        features: width,
                        inner: h,
                    }
                } else {
                    LayerSpec::Cpl {
                        features: width,
                        inner: h,
                    }
                });
            }
            specs.push(LayerSpec::Spectral {
                in_features: width,
                out_features: num_classes,
            });
        }
        Arch::SllConv => {
            // Zero channels up to hidden[0], one conv SLL block (3x3) per `hidden` entry (inner
            // channels that entry) at full resolution, a spectral-normalised last layer.
            let (Some(&width), [channels, h, w]) = (cfg.hidden.first(), input_shape) else {
                return Err(ModelError::Shape(format!(
                    "`sll-conv` needs image inputs [channels, height, width] and at least one hidden width; got inputs {input_shape:?}, hidden {:?}",
                    cfg.hidden
                )));
            };
            if width < *channels {
                return Err(ModelError::Shape(format!(
                    "`sll-conv`: the first hidden width ({width} channels) is below the input's {channels} channels"
                )));
            }
            if width > *channels {
                specs.push(LayerSpec::PadChannels {
                    from: *channels,
                    to: width,
                });
            }
            for &inner in &cfg.hidden {
                specs.push(LayerSpec::SllConv {
                    channels: width,
                    inner,
                    kernel: 3,
                });
            }
            specs.push(LayerSpec::Flatten);
            specs.push(LayerSpec::Spectral {
                in_features: width * h * w,
                out_features: num_classes,
            });
        }
        Arch::Aol | Arch::Spectral => {
            let mut width: i64 = input_shape.iter().product();
            if input_shape.len() > 1 {
                specs.push(LayerSpec::Flatten);
            }
            let layer = |i: i64, o: i64| {
                if cfg.arch == Arch::Aol {
                    LayerSpec::Aol {
                        in_features: i,
                        out_features: o,
                    }
                } else {
                    LayerSpec::Spectral {
                        in_features: i,
                        out_features: o,
                    }
                }
            };
            for &h in &cfg.hidden {
                specs.push(layer(width, h));
                specs.push(LayerSpec::Relu);
                width = h;
            }
            specs.push(layer(width, num_classes));
        }
        Arch::SmallConv | Arch::LargeConv => {
            let [c, h, w] = input_shape else {
                return Err(ModelError::Shape(format!(
                    "`{}` needs image inputs [channels, height, width], got {input_shape:?}",
                    cfg.arch.name()
                )));
            };
            let convs: &[(i64, i64, i64, i64)] = if cfg.arch == Arch::SmallConv {
                &[(16, 4, 2, 1), (32, 4, 2, 1)]
            } else {
                &[(32, 3, 1, 1), (32, 4, 2, 1), (64, 3, 1, 1), (64, 4, 2, 1)]
            };
            let fcs: &[i64] = if cfg.arch == Arch::SmallConv {
                &[100]
            } else {
                &[512, 512]
            };
            let (mut ch, mut hh, mut ww) = (*c, *h, *w);
            for &(out, k, s, p) in convs {
                specs.push(LayerSpec::Conv2d {
                    in_channels: ch,
                    out_channels: out,
                    kernel: k,
                    stride: s,
                    padding: p,
                });
                specs.push(LayerSpec::Relu);
                ch = out;
                hh = (hh + 2 * p - k) / s + 1;
                ww = (ww + 2 * p - k) / s + 1;
                if hh < 1 || ww < 1 {
                    return Err(ModelError::Shape(format!(
                        "input {input_shape:?} is too small for `{}`",
                        cfg.arch.name()
                    )));
                }
            }
            specs.push(LayerSpec::Flatten);
            let mut width = ch * hh * ww;
            for &f in fcs {
                specs.push(LayerSpec::Linear {
                    in_features: width,
                    out_features: f,
                });
                specs.push(LayerSpec::Relu);
                width = f;
            }
            specs.push(LayerSpec::Linear {
                in_features: width,
                out_features: num_classes,
            });
        }
    }
    Ok(specs)
}

/// The shape (without the batch dimension) of the input of every layer and, last, of the
/// output, found by a forward pass of one zero example shaped like `x`'s rows.
pub fn layer_shapes(layers: &[Layer], x: &Tensor) -> Vec<Vec<i64>> {
    tch::no_grad(|| {
        let mut h = x.narrow(0, 0, 1).zeros_like();
        let mut shapes = vec![h.size()[1..].to_vec()];
        for layer in layers {
            h = layer.forward(&h);
            shapes.push(h.size()[1..].to_vec());
        }
        shapes
    })
}

/// Detached double-precision copies of the layers, for statistics and certificates that need
/// a tolerance float32 cannot resolve.
pub fn layers_f64(layers: &[Layer]) -> Vec<Layer> {
    layers
        .iter()
        .map(|l| l.map_tensors(&|t| t.detach().to_kind(Kind::Double)))
        .collect()
}

pub struct Network {
    pub vs: nn::VarStore,
    pub layers: Vec<Layer>,
    pub specs: Vec<LayerSpec>,
    /// Shape of one input, without the batch dimension.
    pub input_shape: Vec<i64>,
    pub num_classes: i64,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("specs", &self.specs)
            .field("input_shape", &self.input_shape)
            .finish()
    }
}

impl Network {
    /// Builds a network with PyTorch's default initialisation
    /// (`U(-1/sqrt(fan_in), 1/sqrt(fan_in))` for weights and biases).
    /// Seed the generator with `tch::manual_seed` first for reproducible weights.
    pub fn new(
        specs: Vec<LayerSpec>,
        input_shape: &[i64],
        num_classes: i64,
        device: Device,
    ) -> Self {
        let vs = nn::VarStore::new(device);
        let root = vs.root() / "layers";
        let layers = specs
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let p = &root / i;
                match spec {
                    LayerSpec::Linear {
                        in_features,
                        out_features,
                    } => {
                        let bound = 1.0 / (*in_features as f64).sqrt();
                        Layer::Linear {
                            weight: p.uniform(
                                "weight",
                                &[*out_features, *in_features],
                                -bound,
                                bound,
                            ),
                            bias: p.uniform("bias", &[*out_features], -bound, bound),
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
                            weight: p.uniform(
                                "weight",
                                &[*out_channels, *in_channels, *kernel, *kernel],
                                -bound,
                                bound,
                            ),
                            bias: p.uniform("bias", &[*out_channels], -bound, bound),
                            stride: *stride,
                            padding: *padding,
                        }
                    }
                    LayerSpec::Sll { features, inner } | LayerSpec::Cpl { features, inner } => {
                        let bound = 1.0 / (*features as f64).sqrt();
                        let weight = p.uniform("weight", &[*inner, *features], -bound, bound);
                        let bias = p.uniform("bias", &[*inner], -bound, bound);
                        if matches!(spec, LayerSpec::Sll { .. }) {
                            Layer::Sll {
                                weight,
                                bias,
                                q_log: p.zeros("q", &[*inner]),
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
                            p.uniform("weight", &[*out_features, *in_features], -bound, bound);
                        let bias = p.uniform("bias", &[*out_features], -bound, bound);
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
                            weight: p.uniform(
                                "weight",
                                &[*inner, *channels, *kernel, *kernel],
                                -bound,
                                bound,
                            ),
                            bias: p.uniform("bias", &[*inner], -bound, bound),
                            q_log: p.zeros("q", &[*inner]),
                        }
                    }
                    LayerSpec::PadChannels { to, .. } => Layer::PadChannels { channels: *to },
                    LayerSpec::Relu => Layer::Relu,
                    LayerSpec::Flatten => Layer::Flatten,
                    LayerSpec::Normalize { mean, std } => {
                        let shape: Vec<i64> = if input_shape.len() == 3 {
                            vec![mean.len() as i64, 1, 1]
                        } else {
                            vec![mean.len() as i64]
                        };
                        let mean_t = Tensor::from_slice(mean)
                            .to_kind(Kind::Float)
                            .reshape(&shape);
                        let std_t = Tensor::from_slice(std).to_kind(Kind::Float).reshape(&shape);
                        Layer::Normalize {
                            mean: p.add("mean", mean_t, false),
                            std: p.add("std", std_t, false),
                        }
                    }
                }
            })
            .collect();
        Network {
            vs,
            layers,
            specs,
            input_shape: input_shape.to_vec(),
            num_classes,
        }
    }

    pub fn from_config(
        cfg: &ModelConfig,
        input_shape: &[i64],
        num_classes: i64,
        normalize: Option<(Vec<f64>, Vec<f64>)>,
        device: Device,
    ) -> Result<Self, ModelError> {
        let specs = architecture(cfg, input_shape, num_classes, normalize)?;
        Ok(Self::new(specs, input_shape, num_classes, device))
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Logits for a batch shaped `[B, ..input_shape]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.layers
            .iter()
            .fold(x.shallow_clone(), |h, l| l.forward(&h))
    }

    /// The trainable parameters (weights and biases), in layer order.
    pub fn parameters(&self) -> Vec<Tensor> {
        self.layers
            .iter()
            .flat_map(|l| match l {
                Layer::Linear { weight, bias }
                | Layer::Conv2d { weight, bias, .. }
                | Layer::Cpl { weight, bias }
                | Layer::Aol { weight, bias }
                | Layer::Spectral { weight, bias } => {
                    vec![weight.shallow_clone(), bias.shallow_clone()]
                }
                Layer::Sll {
                    weight,
                    bias,
                    q_log,
                }
                | Layer::SllConv {
                    weight,
                    bias,
                    q_log,
                } => vec![
                    weight.shallow_clone(),
                    bias.shallow_clone(),
                    q_log.shallow_clone(),
                ],
                _ => vec![],
            })
            .collect()
    }

    /// [`layer_shapes`] of this network's input.
    pub fn layer_shapes(&self) -> Vec<Vec<i64>> {
        let mut shape = vec![1];
        shape.extend_from_slice(&self.input_shape);
        layer_shapes(
            &self.layers,
            &Tensor::zeros(shape.as_slice(), (Kind::Float, self.device())),
        )
    }

    pub fn num_parameters(&self) -> i64 {
        self.parameters().iter().map(|p| p.numel() as i64).sum()
    }

    /// Writes `model.safetensors` (keys `layers.{i}.weight`, `layers.{i}.bias`, and
    /// `layers.{i}.mean` / `.std` for Normalize). Written to a temporary file first, then
    /// renamed, so a crash never leaves a half-written model.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let tmp = path.with_extension("tmp.safetensors");
        let err = |message: String| ModelError::Save {
            path: path.display().to_string(),
            message,
        };
        self.vs.save(&tmp).map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
    }

    /// Loads weights saved by [`Network::save`] into this (same-architecture) network.
    pub fn load_weights(&mut self, path: &Path) -> Result<(), ModelError> {
        let err = |message: String| ModelError::Load {
            path: path.display().to_string(),
            message,
        };
        if !path.exists() {
            return Err(err("file not found".into()));
        }
        self.vs.load(path).map_err(|e| err(e.to_string()))
    }

    /// A one-line description, e.g. `Flatten > Linear(784->100) > ReLU > Linear(100->10)`.
    pub fn describe(&self) -> String {
        self.specs
            .iter()
            .map(|s| match s {
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
            })
            .collect::<Vec<_>>()
            .join(" > ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mlp(hidden: Vec<i64>) -> ModelConfig {
        ModelConfig {
            arch: Arch::Mlp,
            hidden,
            normalize: false,
        }
    }

    #[test]
    fn small_conv_shapes_match_wong_et_al() {
        let cfg = ModelConfig {
            arch: Arch::SmallConv,
            ..ModelConfig::default()
        };
        let specs = architecture(&cfg, &[1, 28, 28], 10, None).unwrap();
        // conv16 4x4 s2 p1: 28 -> 14; conv32: 14 -> 7; fc 32*7*7 -> 100 -> 10.
        assert!(specs.contains(&LayerSpec::Linear {
            in_features: 32 * 7 * 7,
            out_features: 100
        }));
        let net = Network::new(specs, &[1, 28, 28], 10, Device::Cpu);
        let out = net.forward(&Tensor::rand([3, 1, 28, 28], (Kind::Float, Device::Cpu)));
        assert_eq!(out.size(), vec![3, 10]);
    }

    #[test]
    fn large_conv_forward_shape() {
        let cfg = ModelConfig {
            arch: Arch::LargeConv,
            ..ModelConfig::default()
        };
        let net = Network::from_config(&cfg, &[3, 32, 32], 10, None, Device::Cpu).unwrap();
        let n_linear = net
            .layers
            .iter()
            .filter(|l| matches!(l, Layer::Linear { .. }))
            .count();
        assert_eq!(n_linear, 3);
        let out = net.forward(&Tensor::rand([2, 3, 32, 32], (Kind::Float, Device::Cpu)));
        assert_eq!(out.size(), vec![2, 10]);
    }

    #[test]
    fn safetensors_round_trip_gives_same_logits() {
        tch::manual_seed(1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let cfg = mlp(vec![7, 5]);
        let stats = Some((vec![0.3], vec![0.2]));
        let a = Network::from_config(&cfg, &[1, 4, 4], 3, stats.clone(), Device::Cpu).unwrap();
        a.save(&path).unwrap();
        tch::manual_seed(2);
        let mut b = Network::from_config(&cfg, &[1, 4, 4], 3, stats, Device::Cpu).unwrap();
        let x = Tensor::rand([5, 1, 4, 4], (Kind::Float, Device::Cpu));
        let before = (a.forward(&x) - b.forward(&x))
            .abs()
            .max()
            .double_value(&[]);
        assert!(before > 1e-3, "different seeds should differ");
        b.load_weights(&path).unwrap();
        let diff = (a.forward(&x) - b.forward(&x))
            .abs()
            .max()
            .double_value(&[]);
        assert_eq!(diff, 0.0);
        // Keys follow `layers.{i}.weight` with i the index in the layer list.
        let names: Vec<String> = Tensor::read_safetensors(&path)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        for key in [
            "layers.0.mean",
            "layers.2.weight",
            "layers.2.bias",
            "layers.6.weight",
        ] {
            assert!(names.contains(&key.to_string()), "{key} not in {names:?}");
        }
    }

    #[test]
    fn load_missing_file_is_named() {
        let mut net = Network::from_config(&mlp(vec![3]), &[2], 2, None, Device::Cpu).unwrap();
        let err = net
            .load_weights(Path::new("/nonexistent/model.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/model.safetensors"), "{err}");
    }

    #[test]
    fn normalize_is_not_trainable() {
        let net = Network::from_config(
            &mlp(vec![3]),
            &[2],
            2,
            Some((vec![0.5, 0.5], vec![0.1, 0.2])),
            Device::Cpu,
        )
        .unwrap();
        let trainable = net.vs.trainable_variables().len();
        assert_eq!(trainable, 4, "two Linear layers, weight and bias each");
        let x = Tensor::from_slice(&[0.6f32, 0.7]).reshape([1, 2]);
        let normed = net.layers[0].forward(&x);
        let v: Vec<f32> = normed.reshape([-1]).try_into().unwrap();
        assert!(
            (v[0] - 1.0).abs() < 1e-5 && (v[1] - 1.0).abs() < 1e-5,
            "{v:?}"
        );
    }
}
