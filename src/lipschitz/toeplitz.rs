//! The Toeplitz bound on a convolution's spectral norm (Araujo et al. 2021).
//!
//! A stride-1 correlation with kernel `K` `[co, ci, kh, kw]` is, on the infinite grid, the
//! block doubly-Toeplitz operator whose symbol is the matrix-valued trigonometric polynomial
//! `F(w) = sum_{p, q} K[:, :, p, q] e^{i (p w1 + q w2)}` (`co x ci`). Its norm is
//! `S = sup_w ||F(w)||_2`, and every layer of that kernel on a finite input (zero padding,
//! cropping; stride through the polyphase kernel, see `conv`) is a compression of it, so `S`
//! bounds the layer whatever the input size. On an `m x m` grid of frequencies, `F` is the
//! zero-padded 2-D DFT of the kernel, so `M = max_grid ||F||_2` is the exact norm of the
//! circular convolution on `m x m` (the FFT blocks of [`conv_fft_blocks`]).
//!
//! The grid maximum is below `S`; a finite-grid correction makes it an upper bound. Two are
//! used, and the smaller factor is applied (each is an upper bound, so their minimum is).
//!
//! The paper's (Araujo et al. 2021, after Pfister & Bresler 2018): for a trigonometric
//! polynomial `f` of degree `d` sampled on `S` equidistant points per axis,
//!   `max |f| <= (1 - alpha)^-1 max_grid |f|`,  `alpha = 2 d / S`,
//! with `d = floor(s / 2)` for an `s x s` kernel (their 3x3 example: `d = 1`, `S = 10`,
//! `alpha = 0.2`). It carries over to the matrix-valued `F`: if `u, v` are the top singular
//! vectors at the maximiser, `p(w) = u* F(w) v` is a scalar polynomial of the same degree with
//! `max |p| = S` and `|p| <= ||F||` on the grid. An even kernel's frequencies `0..s-1`, shifted
//! by an integer (which leaves every modulus unchanged), lie in `[-floor(s/2), floor(s/2)]`;
//! for a non-square kernel we take the larger axis's degree. (We read the theorem in the
//! thesis text of Araujo et al., not in Pfister & Bresler's paper, so its hypotheses, such as
//! per-axis versus total degree, are as the thesis states them: per-axis, `d = 1` in 2-D.)
//!
//! Ours, a second-order bound that is tighter on fine grids (3x3: 1.0098 against the paper's
//! 1.0323 at `m = 64`, 1.0765 against 1.0909 at `m = 24`; the paper's is tighter below
//! about `m = 20`) and is proven here:
//! let `w*` attain `S` with top right singular vector `v`, and `q(w) = ||F(w) v||^2`, a
//! nonnegative trigonometric polynomial of degree `kh - 1` in `w1` and `kw - 1` in `w2` with
//! `q <= S^2` and its maximum `S^2` at `w*` (gradient 0). The nearest grid point `g` is within
//! `pi / m` per coordinate, and `h(t) = q(w* + t (g - w*))` has exponential type
//! `T <= pi ((kh - 1) + (kw - 1)) / m`; Bernstein's inequality `|h''| <= T^2 sup |h|` and
//! Taylor give `M^2 >= q(g) >= S^2 (1 - T^2 / 2)`, so
//!   `S <= M / sqrt(1 - T^2 / 2)`  (grid fine enough that `T^2 < 2`).
//! For a 3x3 kernel: 1.0098 at m = 64, 1.0024 at m = 128.
use super::conv::conv_fft_blocks;
use super::dense::exact_dense;
use crate::linalg::gram_bound;
use tch::{Kind, Tensor};

/// The grid points per frequency axis of the `toeplitz` estimator (a 3x3 kernel's factor 1.0098).
pub const TOEPLITZ_GRID: i64 = 64;

/// The paper's factor `(1 - 2 d / m)^-1`, `d = floor(max(kh, kw) / 2)` (Araujo et al. 2021,
/// after Pfister & Bresler 2018); `None` when `2 d >= m`.
pub fn paper_grid_factor(kh: i64, kw: i64, m: i64) -> Option<f64> {
    let d = kh.max(kw) / 2;
    let alpha = 2.0 * d as f64 / m as f64;
    (m >= 1 && alpha < 1.0).then(|| 1.0 / (1.0 - alpha))
}

/// Our second-order factor `1 / sqrt(1 - T^2 / 2)`, `T = pi ((kh - 1) + (kw - 1)) / m`;
/// `None` when `T^2 >= 2`.
pub fn bernstein_grid_factor(kh: i64, kw: i64, m: i64) -> Option<f64> {
    if m < 1 {
        return None;
    }
    let t = std::f64::consts::PI * ((kh - 1) + (kw - 1)) as f64 / m as f64;
    let rest = 1.0 - 0.5 * t * t;
    (rest > 0.0).then(|| 1.0 / rest.sqrt())
}

/// The factor that turns the maximum over an `m x m` grid into a bound on the supremum: the
/// smaller of [`paper_grid_factor`] and [`bernstein_grid_factor`] (both upper bounds); `None`
/// when neither applies or the grid is smaller than the kernel.
pub fn grid_factor(kh: i64, kw: i64, m: i64) -> Option<f64> {
    if m < kh.max(kw) || m < 1 {
        return None;
    }
    match (
        paper_grid_factor(kh, kw, m),
        bernstein_grid_factor(kh, kw, m),
    ) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The Toeplitz bound `max_{m x m grid} ||F(w)||_2 * grid_factor` on the norm of every
/// stride-1 correlation with `kernel` `[co, ci, kh, kw]` (zero padding, any input size). The
/// per-frequency norms are exact (SVD) or, with `gram_iters`, Gram-iteration upper bounds
/// (cheaper, still a bound). `None` when the grid is too coarse for the kernel.
pub fn toeplitz_conv(kernel: &Tensor, m: i64, gram_iters: Option<u32>) -> Option<f64> {
    let size = kernel.size();
    let factor = grid_factor(size[2], size[3], m)?;
    let grid_max = tch::no_grad(|| {
        let blocks = conv_fft_blocks(&kernel.detach(), m, m);
        match gram_iters {
            None => exact_dense(&blocks),
            Some(iters) => gram_bound(&blocks, iters)
                .max()
                .to_kind(Kind::Double)
                .double_value(&[]),
        }
    });
    Some(grid_max * factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lipschitz::conv::exact_conv_circular;
    use crate::lipschitz::dense::dense_matrix;
    use tch::Device;

    const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

    #[test]
    fn toeplitz_bound_is_above_the_exact_norm_for_every_grid_size() {
        tch::manual_seed(12);
        for (co, ci, k, p, n) in [
            (3, 2, 3, 1, 6),
            (2, 4, 5, 2, 7),
            (4, 4, 3, 0, 5),
            (1, 1, 2, 1, 6),
        ] {
            let kernel = Tensor::randn([co, ci, k, k], F64);
            // The layer as applied (zero padding p on n x n), densely.
            let op = |x: &Tensor| x.conv2d(&kernel, None::<Tensor>, [1, 1], [p, p], [1, 1], 1);
            let layer = exact_dense(&dense_matrix(&op, &[ci, n, n], F64));
            // The supremum, approached on a fine grid (a lower bound on it).
            let fine = exact_conv_circular(&kernel, 256, 256);
            assert!(layer <= fine * (1.0 + 1e-9), "layer {layer} > sup {fine}");
            let mut last = f64::INFINITY;
            for m in [6i64, 8, 10, 12, 16, 24, 32, 64, 128] {
                let Some(t) = toeplitz_conv(&kernel, m, None) else {
                    assert!(m <= 2 * (k / 2) || m < k, "grid {m} refused for k {k}");
                    continue;
                };
                assert!(t >= fine * (1.0 - 1e-12), "k{k} grid {m}: {t} < sup {fine}");
                assert!(t >= layer && t >= exact_conv_circular(&kernel, n + k - 1, n + k - 1));
                let gram = toeplitz_conv(&kernel, m, Some(8)).unwrap();
                assert!(gram >= t * (1.0 - 1e-12), "gram {gram} < svd {t}");
                if 256 % m == 0 {
                    // The fine grid holds this one: the bound is at most its factor above it.
                    assert!(t <= fine * grid_factor(k, k, m).unwrap() * (1.0 + 1e-9));
                }
                last = t;
            }
            assert!(
                last / fine - 1.0 < 0.01,
                "k{k}: grid 128 {last} vs sup {fine}"
            );
        }
    }

    #[test]
    fn the_grid_correction_is_needed_and_sufficient() {
        // Random kernels whose supremum falls between the points of a coarse grid: the bare
        // grid maximum is below it, the corrected one above.
        tch::manual_seed(5);
        let mut below = 0;
        for _ in 0..20 {
            let kernel = Tensor::randn([1, 1, 3, 3], F64);
            let fine = exact_conv_circular(&kernel, 256, 256);
            let coarse = exact_conv_circular(&kernel, 16, 16);
            below += usize::from(coarse < fine * (1.0 - 1e-6));
            let t = toeplitz_conv(&kernel, 16, None).unwrap();
            assert!(t >= fine, "{t} < {fine}");
        }
        assert!(
            below > 5,
            "only {below} of 20 grid maxima below the supremum"
        );
        // Coarse grids: the paper's factor (ours would be 2.18 at m = 10, none at m = 8).
        assert_eq!(grid_factor(3, 3, 8), Some(4.0 / 3.0));
        assert_eq!(grid_factor(3, 3, 10), Some(1.25));
        assert_eq!(bernstein_grid_factor(3, 3, 8), None);
        // Fine grids: ours, below the paper's 1/(1 - 2/64).
        assert!((grid_factor(3, 3, 64).unwrap() - 1.0098).abs() < 1e-4);
        assert!(paper_grid_factor(3, 3, 64).unwrap() > 1.032);
        assert_eq!(grid_factor(3, 3, 2), None);
        assert_eq!(grid_factor(1, 1, 1), Some(1.0));
    }
}
