//! Small helpers over index ranges and dense tensors that several engine modules share.
use tch::{Kind, Tensor};

/// `(start, len)` of consecutive batches of at most `size` that cover `0..n`.
pub fn batch_ranges(n: i64, size: i64) -> impl Iterator<Item = (i64, i64)> {
    let size = size.max(1);
    (0..n.max(0))
        .step_by(size as usize)
        .map(move |start| (start, size.min(n - start)))
}

/// Frobenius norm of every matrix of a batch (`[.., 1, 1]`), scaled by the largest entry
/// first so that squaring cannot overflow.
pub fn frobenius(g: &Tensor) -> Tensor {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_ranges_cover_every_index_once_in_order() {
        for (n, size) in [(0, 3), (1, 3), (7, 3), (9, 3), (5, 100), (4, 0)] {
            let mut seen = Vec::new();
            for (start, len) in batch_ranges(n, size) {
                assert!(
                    len >= 1 && len <= size.max(1),
                    "n {n} size {size}: len {len}"
                );
                seen.extend(start..start + len);
            }
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "n {n} size {size}");
        }
    }

    #[test]
    fn gram_bound_gradient_is_the_top_singular_pair() {
        // d sigma_1 / dW = u_1 v_1^T; the converged Gram bound must have the same gradient.
        tch::manual_seed(2);
        let w = Tensor::randn([12, 9], (Kind::Double, tch::Device::Cpu)).set_requires_grad(true);
        let g = gram_bound(&w, 8);
        let grad = Tensor::run_backward(&[g], &[&w], false, false)
            .pop()
            .unwrap();
        let (u, _, v) = w.detach().svd(true, true);
        let expected = u.select(1, 0).outer(&v.select(1, 0));
        let err = (grad - expected).abs().max().double_value(&[]);
        assert!(err < 1e-4, "{err}");
    }
}
