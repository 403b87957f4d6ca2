//! The IBP initialisation of Shi et al. (2021), "Fast certified robust training with short
//! warmup".
//!
//! Interval propagation maps a radius `r` through `W` to `|W| r`. With i.i.d. weights
//! `N(0, sigma^2)`, `E|w| = sigma sqrt(2 / pi)`, and the ReLU after the layer passes on about
//! half of a radius, so the expected radius of layer `i` is
//! `E(Delta_i) = fan_in * sigma * sqrt(2/pi) / 2 * E(Delta_{i-1})`. The default initialisation
//! (`U(-1/sqrt(n), 1/sqrt(n))`) gives a gain of `sqrt(n) / 4` per layer, so IBP bounds explode
//! with depth; `sigma = sqrt(2 pi) / fan_in` makes the gain 1. The last layer is left as it
//! is (the reference code does the same), and so are the biases.
use crate::model::{Layer, Network};
use tch::TchError;

/// The standard deviation of the IBP initialisation for a layer with `fan_in` inputs:
/// `sqrt(2 pi) / fan_in`.
pub fn ibp_init_std(fan_in: i64) -> f64 {
    (2.0 * std::f64::consts::PI).sqrt() / fan_in.max(1) as f64
}

/// The number of inputs of one output of a Linear (`in`) or Conv2d (`in_channels k k`) layer.
fn fan_in(layer: &Layer) -> Option<(i64, &tch::Tensor)> {
    match layer {
        Layer::Linear { weight, .. } | Layer::Conv2d { weight, .. } => {
            Some((weight.size()[1..].iter().product(), weight))
        }
        _ => None,
    }
}

/// Redraws the weights of every Linear and Conv2d layer but the last from
/// `N(0, (sqrt(2 pi) / fan_in)^2)`, in place (seed with `tch::manual_seed` first).
pub fn ibp_init(net: &Network) -> Result<(), TchError> {
    let affine: Vec<(i64, &tch::Tensor)> = net.layers.iter().filter_map(fan_in).collect();
    let Some((_, hidden)) = affine.split_last() else {
        return Ok(());
    };
    tch::no_grad(|| {
        for (n, weight) in hidden {
            let _ = weight.shallow_clone().f_normal_(0.0, ibp_init_std(*n))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounds::tests::{conv, lin};
    use crate::model::LayerSpec;
    use tch::{Device, Kind, Tensor};

    fn weights(net: &Network) -> Vec<Tensor> {
        net.layers
            .iter()
            .filter_map(fan_in)
            .map(|(_, w)| w.detach().copy())
            .collect()
    }

    /// The closed form of the paper: mean 0, standard deviation `sqrt(2 pi) / n`, and
    /// `E|w| n = 2` (so that the radius gain `n E|w| / 2` is 1), for dense and conv layers;
    /// the last layer and the biases are untouched.
    #[test]
    fn ibp_init_has_the_weight_statistics_of_the_paper() {
        tch::manual_seed(7);
        let specs = vec![
            conv(1, 32, 4, 2, 1),
            LayerSpec::Relu,
            conv(32, 64, 4, 2, 1),
            LayerSpec::Relu,
            LayerSpec::Flatten,
            lin(64 * 7 * 7, 300),
            LayerSpec::Relu,
            lin(300, 10),
        ];
        let net = Network::new(specs, &[1, 28, 28], 10, Device::Cpu).unwrap();
        let before = weights(&net);
        let biases_before: Vec<Tensor> = net.parameters().iter().map(|p| p.copy()).collect();
        ibp_init(&net).unwrap();
        let after = weights(&net);
        for (i, (w, n)) in after.iter().zip([16i64, 32 * 16, 64 * 49]).enumerate() {
            let sigma = (2.0 * std::f64::consts::PI).sqrt() / n as f64;
            let count = w.numel() as f64;
            let mean = w.mean(Kind::Double).double_value(&[]);
            let std = w.to_kind(Kind::Double).std(true).double_value(&[]);
            let abs_n = w.abs().mean(Kind::Double).double_value(&[]) * n as f64;
            // Sampling error of the standard deviation ~ sigma / sqrt(2 count).
            let tol = 5.0 / (2.0 * count).sqrt();
            assert!(
                (std / sigma - 1.0).abs() < tol,
                "layer {i}: std {std} vs {sigma}"
            );
            assert!(
                mean.abs() < 5.0 * sigma / count.sqrt(),
                "layer {i}: mean {mean}"
            );
            assert!(
                (abs_n / 2.0 - 1.0).abs() < tol * 2.0,
                "layer {i}: n E|w| = {abs_n}"
            );
        }
        assert!(after[3].equal(&before[3]), "the last layer was redrawn");
        for p in biases_before.iter().filter(|p| p.dim() == 1) {
            assert!(net.parameters().iter().any(|q| q.dim() == 1 && q.equal(p)));
        }
    }

    /// What the statistics are for: through a deep, wide ReLU MLP the mean IBP radius stays
    /// within a small factor of the input radius with the IBP initialisation, while the default
    /// initialisation multiplies it by about `sqrt(n) / 4` per layer.
    #[test]
    fn ibp_init_keeps_ibp_radii_from_exploding_with_depth() {
        use crate::bounds::{ibp_layer_bounds, Ball};
        tch::manual_seed(3);
        let width = 256;
        let mut specs = vec![lin(64, width), LayerSpec::Relu];
        for _ in 0..4 {
            specs.extend([lin(width, width), LayerSpec::Relu]);
        }
        specs.push(lin(width, 10));
        let x = Tensor::rand([64, 64], (Kind::Float, Device::Cpu)) * 0.8 + 0.1;
        let ball = Ball {
            eps: 0.01,
            norm: crate::config::Norm::Linf,
        };
        let growth = |net: &Network| {
            let b = ibp_layer_bounds(net, &x, ball);
            let radius = |i: usize| ((&b[i].1 - &b[i].0) / 2.0).mean(Kind::Double);
            // Pre-activation of the last hidden layer over that of the first.
            (radius(specs_len(net) - 3) / radius(0)).double_value(&[])
        };
        let net = Network::new(specs.clone(), &[64], 10, Device::Cpu).unwrap();
        let default_growth = growth(&net);
        ibp_init(&net).unwrap();
        let ibp_growth = growth(&net);
        assert!(
            (0.2..5.0).contains(&ibp_growth),
            "IBP init: radius grew {ibp_growth}x over 4 layers"
        );
        assert!(
            default_growth > 10.0 * ibp_growth,
            "default init grew {default_growth}x, IBP init {ibp_growth}x"
        );
    }

    fn specs_len(net: &Network) -> usize {
        net.layers.len()
    }
}
