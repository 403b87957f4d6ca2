//! Networks as an ordered list of layers that the bound, attack and Lipschitz code can walk.
//!
//! Parameters live in a `VarStore` under `layers.{i}.weight` / `layers.{i}.bias` (`i` the
//! index in [`Network::layers`]), in PyTorch's shapes, so `model.safetensors` loads into an
//! `nn.Sequential` with the same layer order.
//!
//! Files: `layer` (one layer: its tensors, its spec, how it is created and applied), `arch` (the
//! layer lists of the architectures), `one_lipschitz` (helpers of the AOL, SLL and CPL layers),
//! `circulant` (diagonal-circulant layers by FFT).
mod arch;
mod circulant;
mod layer;
mod one_lipschitz;

pub use arch::architecture;
pub use circulant::{circulant_matrix, dc_dense, dc_forward};
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
                Layer::Circulant {
                    diag, circ, bias, ..
                } => vec![
                    diag.shallow_clone(),
                    circ.shallow_clone(),
                    bias.shallow_clone(),
                ],
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
    ///
    /// The file is checked against the network first (see [`check_weights_file`]): libtorch
    /// would convert a tensor of another dtype, broadcast one of another shape, or fail with a
    /// native backtrace on a damaged file.
    pub fn load_weights(&mut self, path: &Path) -> Result<(), ModelError> {
        let err = |message: String| ModelError::Load {
            path: path.display().to_string(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => err("file not found".into()),
            _ => err(e.to_string()),
        })?;
        let mut vars: Vec<(String, Vec<i64>, Kind)> = self
            .vs
            .variables()
            .into_iter()
            .map(|(name, t)| (name, t.size(), t.kind()))
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        check_weights_file(&bytes, &vars).map_err(err)?;
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

/// One tensor of a safetensors header.
#[derive(serde::Deserialize)]
struct WeightsEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// The safetensors dtypes libtorch loads, with their sizes in bytes.
fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" => 1,
        "I16" | "F16" | "BF16" => 2,
        "I32" | "F32" => 4,
        "I64" | "F64" => 8,
        _ => return None,
    })
}

/// Checks a safetensors file (an 8-byte little-endian header length `n`, `n` bytes of JSON
/// giving each tensor's dtype, shape and data offsets, then the data) before libtorch reads it:
/// the header fits in the file, every tensor's offsets tile the data and match its dtype and
/// shape, and every variable of the network is there with its dtype and shape.
fn check_weights_file(bytes: &[u8], vars: &[(String, Vec<i64>, Kind)]) -> Result<(), String> {
    let len = bytes.len() as u64;
    let Some(n) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    else {
        return Err(format!(
            "not a safetensors file: {len} bytes, shorter than a header"
        ));
    };
    if n > len - 8 {
        return Err(format!(
            "damaged safetensors file: the header length {n} runs past the end of the file ({len} bytes)"
        ));
    }
    let (header, data) = bytes[8..].split_at(n as usize);
    let header: std::collections::BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(header)
            .map_err(|e| format!("damaged safetensors file: the header is not valid JSON ({e})"))?;
    let mut entries = Vec::new();
    for (name, value) in header.into_iter().filter(|(k, _)| k != "__metadata__") {
        let e: WeightsEntry = serde_json::from_value(value)
            .map_err(|e| format!("damaged safetensors file: tensor `{name}`: {e}"))?;
        let size = dtype_size(&e.dtype).ok_or_else(|| {
            format!(
                "tensor `{name}` has dtype `{}`, which cannot be loaded",
                e.dtype
            )
        })?;
        // Each partial product in i64, as libtorch computes a tensor's size.
        let bytes = e
            .shape
            .iter()
            .try_fold(size as i64, |a, &d| a.checked_mul(i64::try_from(d).ok()?))
            .map(|b| b as u64);
        let [start, end] = e.data_offsets;
        if bytes.is_none() || end < start || Some(end - start) != bytes {
            return Err(format!(
                "damaged safetensors file: tensor `{name}` ({} {:?}) has data offsets [{start}, {end}]",
                e.dtype, e.shape
            ));
        }
        entries.push((name, e));
    }
    // The tensors' data must tile the data section exactly, as safetensors requires.
    let mut spans: Vec<[u64; 2]> = entries.iter().map(|(_, e)| e.data_offsets).collect();
    spans.sort();
    let mut at = 0;
    for [start, end] in spans {
        if start != at {
            return Err(format!(
                "damaged safetensors file: tensor data at offsets {at}..{start} overlap or leave a gap"
            ));
        }
        at = end;
    }
    if at != data.len() as u64 {
        return Err(format!(
            "damaged safetensors file: the tensors hold {at} bytes of data, the file {}",
            data.len()
        ));
    }
    for (name, shape, kind) in vars {
        let Some((_, e)) = entries.iter().find(|(n, _)| n == name) else {
            return Err(format!(
                "tensor `{name}` is missing (was the model saved from another architecture?)"
            ));
        };
        let want = match kind {
            Kind::Float => "F32",
            Kind::Double => "F64",
            Kind::Half => "F16",
            Kind::BFloat16 => "BF16",
            _ => "(no floating-point dtype)",
        };
        let file_shape: Vec<i64> = e.shape.iter().map(|&d| d as i64).collect();
        if e.dtype != want || &file_shape != shape {
            return Err(format!(
                "tensor `{name}` is {} {:?} in the file but {want} {shape:?} in the network (was the model saved from another architecture?)",
                e.dtype, e.shape
            ));
        }
    }
    Ok(())
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

    /// A network's file with its safetensors header rewritten by `edit` (data left as is).
    fn edited_weights(dir: &Path, edit: impl Fn(&mut serde_json::Value)) -> std::path::PathBuf {
        let path = dir.join("model.safetensors");
        let stats = Some((vec![0.5, 0.5], vec![0.2, 0.3]));
        let net = Network::from_config(&mlp(vec![3]), &[2], 2, stats, Device::Cpu).unwrap();
        net.save(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        edit(&mut header);
        let text = header.to_string().into_bytes();
        let len = (text.len() as u64).to_le_bytes();
        std::fs::write(&path, [&len[..], &text, &bytes[8 + n..]].concat()).unwrap();
        path
    }

    fn load_err(path: &Path) -> String {
        let stats = Some((vec![0.5, 0.5], vec![0.2, 0.3]));
        let mut net = Network::from_config(&mlp(vec![3]), &[2], 2, stats, Device::Cpu).unwrap();
        let err = net.load_weights(path).unwrap_err().to_string();
        assert!(err.contains("model.safetensors"), "{err}");
        err
    }

    /// Found by tests/parsers_never_panic.rs: a trainable tensor stored as I32 (same byte
    /// count) made libtorch's `set_data` fail inside an `unwrap`, a panic.
    #[test]
    fn regression_integer_dtype_of_a_weight_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = edited_weights(dir.path(), |h| h["layers.1.bias"]["dtype"] = "I32".into());
        let err = load_err(&path);
        assert!(
            err.contains("`layers.1.bias` is I32") && err.contains("F32"),
            "{err}"
        );
    }

    /// Found by tests/parsers_never_panic.rs: a buffer of another dtype was loaded and
    /// silently changed the network's dtype (`layers.0.mean` became an integer tensor); a
    /// tensor of shape [1] was broadcast over the whole bias, and a weight of another shape
    /// failed with libtorch's native backtrace as the message, after half the network loaded.
    #[test]
    fn regression_other_dtype_or_shape_is_refused_not_converted() {
        let dir = tempfile::tempdir().unwrap();
        let path = edited_weights(dir.path(), |h| h["layers.0.mean"]["dtype"] = "I32".into());
        let err = load_err(&path);
        assert!(err.contains("`layers.0.mean` is I32"), "{err}");
        let path = edited_weights(dir.path(), |h| {
            // [1] with the 4 bytes of the first element; the rest of the data follows as before.
            h["layers.3.bias"]["shape"] = serde_json::json!([1]);
            h["layers.3.bias"]["data_offsets"] = serde_json::json!([52, 56]);
            h["layers.3.weight"]["data_offsets"] = serde_json::json!([56, 84]);
            h["layers.3.weight"]["shape"] = serde_json::json!([7]);
        });
        let err = load_err(&path);
        assert!(err.contains("`layers.3.bias` is F32 [1]"), "{err}");
    }

    #[test]
    fn damaged_weights_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = edited_weights(dir.path(), |_| {});
        let bytes = std::fs::read(&path).unwrap();
        let mut long = bytes.clone();
        long[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        std::fs::write(&path, long).unwrap();
        assert!(load_err(&path).contains("runs past the end"));
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(load_err(&path).contains("damaged"));
        let path = edited_weights(dir.path(), |h| {
            h.as_object_mut().unwrap().remove("layers.1.weight");
        });
        let err = load_err(&path);
        assert!(err.contains("damaged") || err.contains("missing"), "{err}");
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
