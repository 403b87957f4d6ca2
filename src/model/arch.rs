//! The layer lists of the architectures that `model.arch` names.
use super::{LayerSpec, ModelError};
use crate::config::{Arch, ModelConfig};

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
    let add = match cfg.arch {
        Arch::Mlp => mlp,
        Arch::Sll | Arch::Cpl => residual,
        Arch::SllConv => sll_conv,
        Arch::Aol | Arch::Spectral => one_lipschitz_mlp,
        Arch::SmallConv | Arch::LargeConv => convnet,
        Arch::Circulant => circulant_mlp,
    };
    add(cfg, input_shape, num_classes, &mut specs)?;
    Ok(specs)
}

/// Plain MLP: `[Flatten] (Linear ReLU)* Linear`.
fn mlp(
    cfg: &ModelConfig,
    input_shape: &[i64],
    num_classes: i64,
    specs: &mut Vec<LayerSpec>,
) -> Result<(), ModelError> {
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
    Ok(())
}

/// `sll` / `cpl`: a spectral-normalised projection to width hidden[0], one residual block per
/// `hidden` entry (inner width that entry), a spectral-normalised last layer.
fn residual(
    cfg: &ModelConfig,
    input_shape: &[i64],
    num_classes: i64,
    specs: &mut Vec<LayerSpec>,
) -> Result<(), ModelError> {
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
    Ok(())
}

/// `sll-conv`: zero channels up to hidden[0], one conv SLL block (3x3) per `hidden` entry
/// (inner channels that entry) at full resolution, a spectral-normalised last layer.
fn sll_conv(
    cfg: &ModelConfig,
    input_shape: &[i64],
    num_classes: i64,
    specs: &mut Vec<LayerSpec>,
) -> Result<(), ModelError> {
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
    Ok(())
}

/// `aol` / `spectral`: an MLP whose affine layers are AOL or spectral-normalised.
fn one_lipschitz_mlp(
    cfg: &ModelConfig,
    input_shape: &[i64],
    num_classes: i64,
    specs: &mut Vec<LayerSpec>,
) -> Result<(), ModelError> {
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
    Ok(())
}

/// `circulant` (Araujo et al. 2019): the MLP layout with every affine layer diagonal-circulant.
fn circulant_mlp(
    cfg: &ModelConfig,
    input_shape: &[i64],
    num_classes: i64,
    specs: &mut Vec<LayerSpec>,
) -> Result<(), ModelError> {
    mlp(cfg, input_shape, num_classes, specs)?;
    for s in specs.iter_mut() {
        if let LayerSpec::Linear {
            in_features,
            out_features,
        } = *s
        {
            *s = LayerSpec::Circulant {
                in_features,
                out_features,
            };
        }
    }
    Ok(())
}

/// `small-conv` / `large-conv` (Wong et al. 2018): convolutions, then fully connected layers.
fn convnet(
    cfg: &ModelConfig,
    input_shape: &[i64],
    num_classes: i64,
    specs: &mut Vec<LayerSpec>,
) -> Result<(), ModelError> {
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
    Ok(())
}
