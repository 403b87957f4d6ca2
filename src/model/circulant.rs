//! Diagonal-circulant layers (Araujo et al. 2019): `y = (D C x_pad)[..out] + b`, with `C` the
//! `n x n` circulant matrix of a vector `c` (`C_ij = c_{(i - j) mod n}`), `D = diag(d)`, and
//! `n = max(in, out)`: the input is zero-padded to `n` and the output truncated to `out`, as
//! the paper does for layers whose widths differ. `C x` is the circular convolution `c * x`,
//! computed by FFT in `O(n log n)`; the layer holds `2 n + out` parameters instead of
//! `in out + out`.
//!
//! The bound code and the Lipschitz estimators see the layer through its explicit matrix
//! [`dc_dense`] (differentiable), so IBP, CROWN, CROWN-IBP, attacks and every estimator apply.
use tch::Tensor;

/// The circulant matrix of `c` (`[n]`): `C_ij = c_{(i - j) mod n}`. Differentiable.
pub fn circulant_matrix(c: &Tensor) -> Tensor {
    let n = c.size()[0];
    let i = Tensor::arange(n, (tch::Kind::Int64, c.device()));
    let idx = (i.unsqueeze(1) - i.unsqueeze(0) + n).remainder(n);
    c.index_select(0, &idx.reshape([-1])).reshape([n, n])
}

/// The explicit `[out, in]` matrix of a diagonal-circulant layer: `(diag(d) C)[..out, ..in]`.
pub fn dc_dense(diag: &Tensor, circ: &Tensor, in_features: i64, out_features: i64) -> Tensor {
    (diag.unsqueeze(1) * circulant_matrix(circ))
        .narrow(0, 0, out_features)
        .narrow(1, 0, in_features)
}

/// `x` `[B, in]` through the layer, by FFT: `irfft(rfft(x_pad) rfft(c))` is `C x_pad`.
pub fn dc_forward(x: &Tensor, diag: &Tensor, circ: &Tensor, bias: &Tensor) -> Tensor {
    let n = circ.size()[0];
    let width = x.size()[x.dim() - 1];
    let padded = if width < n {
        x.constant_pad_nd([0, n - width])
    } else {
        x.shallow_clone()
    };
    let spectrum =
        padded.fft_rfft(Some(n), -1, "backward") * circ.fft_rfft(Some(n), -1, "backward");
    let cx = spectrum.fft_irfft(Some(n), -1, "backward");
    let out = bias.size()[0];
    (cx * diag).narrow(-1, 0, out) + bias
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Arch, ModelConfig};
    use crate::model::{Layer, Network};
    use tch::{Device, Kind};

    const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

    #[test]
    fn the_layer_equals_its_explicit_matrix() {
        tch::manual_seed(4);
        for (i, o) in [(5, 5), (7, 3), (3, 8), (1, 4)] {
            let n = i.max(o);
            let (d, c, b) = (
                Tensor::randn([n], F64),
                Tensor::randn([n], F64),
                Tensor::randn([o], F64),
            );
            let x = Tensor::randn([6, i], F64);
            let by_fft = dc_forward(&x, &d, &c, &b);
            // The explicit matrix, written out entry by entry.
            let cv = Vec::<f64>::try_from(&c).unwrap();
            let dv = Vec::<f64>::try_from(&d).unwrap();
            let mut w = vec![0.0; (o * i) as usize];
            for r in 0..o as usize {
                for s in 0..i as usize {
                    w[r * i as usize + s] = dv[r] * cv[(r + n as usize - s) % n as usize];
                }
            }
            let w = Tensor::from_slice(&w).reshape([o, i]);
            assert!(
                (&w - dc_dense(&d, &c, i, o)).abs().max().double_value(&[]) < 1e-12,
                "{i}->{o}"
            );
            let dense = x.linear(&w, Some(&b));
            let err = (by_fft - dense).abs().max().double_value(&[]);
            assert!(err < 1e-10, "{i}->{o}: {err}");
        }
    }

    #[test]
    fn circulant_mlp_has_the_papers_parameter_count_and_trains() {
        tch::manual_seed(1);
        let cfg = ModelConfig {
            arch: Arch::Circulant,
            hidden: vec![100, 50],
            normalize: false,
        };
        let net = Network::from_config(&cfg, &[1, 28, 28], 10, None, Device::Cpu).unwrap();
        // 784 -> 100 (n 784), 100 -> 50 (n 100), 50 -> 10 (n 50): 2 n + out each.
        let expect = (2 * 784 + 100) + (2 * 100 + 50) + (2 * 50 + 10);
        let count: i64 = net.parameters().iter().map(|p| p.numel() as i64).sum();
        assert_eq!(count, expect);
        let x = Tensor::rand([3, 1, 28, 28], (Kind::Float, Device::Cpu));
        let loss = net.forward(&x).sum(Kind::Float);
        let params = net.parameters();
        let grads = Tensor::run_backward(&[loss], &params.iter().collect::<Vec<_>>(), false, false);
        assert!(grads
            .iter()
            .all(|g| g.abs().sum(Kind::Double).double_value(&[]) > 0.0));
        // Every circulant layer's effective weight reproduces its output.
        for l in net
            .layers
            .iter()
            .filter(|l| matches!(l, Layer::Circulant { .. }))
        {
            let w = l.effective_weight().unwrap();
            let h = Tensor::randn([2, w.size()[1]], (Kind::Float, Device::Cpu));
            let Layer::Circulant { bias, .. } = l else {
                unreachable!()
            };
            let err = (l.forward(&h) - h.linear(&w, Some(bias)))
                .abs()
                .max()
                .double_value(&[]);
            assert!(err < 1e-4, "{err}");
        }
    }

    #[test]
    fn init_follows_the_paper_rademacher_diagonal_gaussian_circulant_zero_bias() {
        tch::manual_seed(7);
        let cfg = ModelConfig {
            arch: Arch::Circulant,
            hidden: vec![400, 400],
            normalize: false,
        };
        let net = Network::from_config(&cfg, &[1, 28, 28], 10, None, Device::Cpu).unwrap();
        let mut layers = 0;
        for l in &net.layers {
            let Layer::Circulant {
                diag, circ, bias, ..
            } = l
            else {
                continue;
            };
            layers += 1;
            let n = diag.size()[0] as f64;
            let d = Vec::<f64>::try_from(diag.to_kind(Kind::Double)).unwrap();
            assert!(d.iter().all(|v| *v == 1.0 || *v == -1.0), "{d:?}");
            // Half +1: the count of +1 is Binomial(n, 1/2); 4 standard deviations.
            let plus = d.iter().filter(|v| **v > 0.0).count() as f64;
            assert!(
                (plus - n / 2.0).abs() < 4.0 * (n / 4.0).sqrt(),
                "{plus} of {n}"
            );
            // c_i ~ N(0, 2/n): the sample variance within 4 standard errors (var of s^2 is
            // 2 sigma^4 / n for a Gaussian), and mean near 0.
            let c = Vec::<f64>::try_from(circ.to_kind(Kind::Double)).unwrap();
            let var = c.iter().map(|v| v * v).sum::<f64>() / n;
            let want = 2.0 / n;
            assert!(
                (var - want).abs() < 4.0 * want * (2.0 / n).sqrt(),
                "{var} vs {want}"
            );
            let mean = c.iter().sum::<f64>() / n;
            assert!(mean.abs() < 4.0 * (want / n).sqrt(), "{mean}");
            assert_eq!(bias.abs().sum(Kind::Double).double_value(&[]), 0.0);
        }
        assert_eq!(layers, 3);
    }
}
