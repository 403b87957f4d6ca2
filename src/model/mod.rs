//! Networks as an ordered list of layers that the bound, attack and Lipschitz code can walk.
//!
//! Parameters live in a `VarStore` under `layers.{i}.weight` / `layers.{i}.bias` (`i` the
//! index in [`Network::layers`]), in PyTorch's shapes, so `model.safetensors` loads into an
//! `nn.Sequential` with the same layer order.
//!
//! Files: `layer` (one layer: its tensors, its spec, how it is created and applied), `arch` (the
//! layer lists of the architectures), `one_lipschitz` (helpers of the AOL, SLL and CPL layers).
mod arch;
mod layer;
mod one_lipschitz;

pub use arch::architecture;
pub use layer::{Layer, LayerSpec};
pub use one_lipschitz::{aol_scale, sll_conv_t, sll_t, ONE_LIP_GRAM_ITERS};

use crate::config::ModelConfig;
use crate::failure::{During, TorchFailure};
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
    /// libtorch could not build the network (its weights do not fit on the device).
    #[error(transparent)]
    Torch(#[from] TorchFailure),
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
    /// Seed the generator with `tch::manual_seed` first for reproducible weights. Fails, naming
    /// the layer, when its weights cannot be allocated on `device`.
    pub fn new(
        specs: Vec<LayerSpec>,
        input_shape: &[i64],
        num_classes: i64,
        device: Device,
    ) -> Result<Self, ModelError> {
        let vs = nn::VarStore::new(device);
        let root = vs.root() / "layers";
        let layers = specs
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                Layer::new(spec, &(&root / i), input_shape)
                    .during(|| format!("allocating the weights of layer {i}, {}", spec.label()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Network {
            vs,
            layers,
            specs,
            input_shape: input_shape.to_vec(),
            num_classes,
        })
    }

    pub fn from_config(
        cfg: &ModelConfig,
        input_shape: &[i64],
        num_classes: i64,
        normalize: Option<(Vec<f64>, Vec<f64>)>,
        device: Device,
    ) -> Result<Self, ModelError> {
        let specs = architecture(cfg, input_shape, num_classes, normalize)?;
        Self::new(specs, input_shape, num_classes, device)
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
        // libtorch's text has native frames after its first line: one line is enough here.
        let saved = self.vs.save(&tmp);
        saved.map_err(|e| err(crate::failure::reason(&e.to_string())))?;
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
            .map(LayerSpec::label)
            .collect::<Vec<_>>()
            .join(" > ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Arch;

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
        let net = Network::new(specs, &[1, 28, 28], 10, Device::Cpu).unwrap();
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
