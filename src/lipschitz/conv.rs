//! Convolutions in the circulant view: the FFT blocks of a kernel, the exact and Gram norms of
//! the circular convolution, and the polyphase rearrangement that brings strided layers to it.
use super::dense::exact_dense;
use crate::linalg::gram_bound;
use tch::Tensor;

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
pub(super) fn conv_operator(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lipschitz::dense::{dense_matrix, power_operator};
    use crate::lipschitz::tests::rel;
    use crate::lipschitz::{layer_value, Estimator, Settings};
    use crate::model::Layer;
    use tch::{Device, Kind};

    const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

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
}
