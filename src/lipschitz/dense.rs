//! Dense matrices and linear maps: power iteration (a *lower* estimate of `||A||_2`), the
//! exact norm by SVD, and the dense matrix of a small linear map. The Gram-iteration *upper*
//! bound is [`crate::linalg::gram_bound`].
use super::scalar;
use tch::{Device, Kind, Tensor};

fn vec_norm(t: &Tensor) -> Tensor {
    t.square().sum(t.kind()).sqrt()
}

/// A power-iteration estimate: `sigma = ||A v||` for a unit `v`, so `sigma <= ||A||_2`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerResult {
    pub sigma: f64,
    pub iters: u32,
}

/// Power iteration on `W^T W` for a matrix `[m, n]`: at most `max_iters` iterations, stopping
/// when the relative change of the estimate is `<= tol` (`tol = 0`: exactly `max_iters`).
pub fn power_dense(w: &Tensor, max_iters: u32, tol: f64) -> PowerResult {
    tch::no_grad(|| {
        let w = w.detach();
        let v = Tensor::randn([w.size()[1]], (w.kind(), w.device()));
        power_loop(v, max_iters, tol, |v| {
            let u = w.mv(v);
            (scalar(&vec_norm(&u)), w.tr().mv(&u))
        })
    })
}

/// The iteration both power methods share: from a random `v`, `step(v)` gives `||A v||` and
/// `A^T A v`, normalised into the next `v`, until `max_iters` or a relative change `<= tol`.
fn power_loop(
    mut v: Tensor,
    max_iters: u32,
    tol: f64,
    mut step: impl FnMut(&Tensor) -> (f64, Tensor),
) -> PowerResult {
    v = &v / vec_norm(&v);
    let mut sigma = 0.0;
    for it in 1..=max_iters.max(1) {
        let (s, g) = step(&v);
        v = (&g / vec_norm(&g).clamp_min(1e-300)).detach();
        let done = it > 1 && tol > 0.0 && (s - sigma).abs() <= tol * s;
        sigma = s;
        if done {
            return PowerResult { sigma, iters: it };
        }
    }
    PowerResult {
        sigma,
        iters: max_iters.max(1),
    }
}

/// The largest singular value of a matrix (or of every matrix of a batch, then the maximum),
/// by SVD.
pub fn exact_dense(w: &Tensor) -> f64 {
    tch::no_grad(|| scalar(&w.detach().svd(true, false).1.max()))
}

/// Power iteration on `A^T A` for any linear map `op` of inputs shaped `in_shape` (with a
/// leading batch dimension of 1), the adjoint by autograd.
pub fn power_operator(
    op: &dyn Fn(&Tensor) -> Tensor,
    in_shape: &[i64],
    opts: (Kind, Device),
    max_iters: u32,
    tol: f64,
) -> PowerResult {
    tch::with_grad(|| {
        power_loop(Tensor::randn(in_shape, opts), max_iters, tol, |v| {
            let x = v.detach().set_requires_grad(true);
            let y = op(&x);
            let s = scalar(&vec_norm(&y.detach()));
            let objective = y.square().sum(y.kind()) * 0.5;
            let g = Tensor::run_backward(&[objective], &[&x], false, false)
                .pop()
                .unwrap_or_else(|| x.zeros_like());
            (s, g)
        })
    })
}

/// The dense matrix `[out, in]` of a linear map of inputs shaped `in_shape` (without batch
/// dimension), built by applying it to the standard basis (for small maps only).
pub fn dense_matrix(
    op: &dyn Fn(&Tensor) -> Tensor,
    in_shape: &[i64],
    opts: (Kind, Device),
) -> Tensor {
    tch::no_grad(|| {
        let n: i64 = in_shape.iter().product();
        let eye = Tensor::eye(n, opts);
        let mut shape = vec![n];
        shape.extend_from_slice(in_shape);
        let out = op(&eye.reshape(shape.as_slice()));
        out.reshape([n, -1]).tr()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::gram_bound;
    use crate::lipschitz::tests::rel;

    const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

    #[test]
    fn dense_gram_upper_bounds_exact_and_power_lower_bounds_it() {
        tch::manual_seed(1);
        for (m, n) in [(30, 20), (64, 64), (10, 50), (100, 3), (1, 7)] {
            let w = Tensor::randn([m, n], F64);
            let exact = exact_dense(&w);
            // Independent: the square root of the top eigenvalue of W^T W.
            let eig = w
                .tr()
                .matmul(&w)
                .linalg_eigvalsh("L")
                .max()
                .double_value(&[])
                .sqrt();
            assert!(
                rel(exact, eig).abs() < 1e-10,
                "{m}x{n}: svd {exact} vs eig {eig}"
            );
            let mut prev = f64::INFINITY;
            for iters in 0..=10 {
                let g = gram_bound(&w, iters).double_value(&[]);
                assert!(
                    g >= exact * (1.0 - 1e-12),
                    "{m}x{n} iters {iters}: gram {g} < exact {exact}"
                );
                assert!(
                    g <= prev * (1.0 + 1e-12),
                    "{m}x{n}: gram not monotone at {iters}"
                );
                prev = g;
            }
            let fro = w.square().sum(Kind::Double).sqrt().double_value(&[]);
            assert!(rel(gram_bound(&w, 0).double_value(&[]), fro).abs() < 1e-12);
            // Gaussian matrices have clustered top singular values (sigma_2 / sigma_1 up to
            // ~0.99): 8 iterations here; 6 suffice with a spectral gap (below).
            let g8 = gram_bound(&w, 8).double_value(&[]);
            assert!(
                rel(g8, exact) < 1e-3,
                "{m}x{n}: gram x8 {g8} vs exact {exact}"
            );
            for iters in [1, 5, 50] {
                let p = power_dense(&w, iters, 0.0);
                assert!(
                    p.sigma <= exact * (1.0 + 1e-12),
                    "{m}x{n}: power {} > exact {exact}",
                    p.sigma
                );
            }
            let p = power_dense(&w, 5000, 1e-12);
            assert!(
                rel(p.sigma, exact).abs() < 1e-4,
                "{m}x{n}: power {} vs {exact}",
                p.sigma
            );
        }
        // Well-conditioned: a known spectrum with a 10% gap (sigma = 2, 1.8, then below 1.7):
        // within 1e-3 after 6 iterations.
        for (m, n) in [(40, 30), (30, 40), (64, 64)] {
            let k = m.min(n);
            let (u, _, _) = Tensor::randn([m, m], F64).svd(true, true);
            let (v, _, _) = Tensor::randn([n, n], F64).svd(true, true);
            let mut sv = vec![2.0, 1.8];
            sv.extend((0..k - 2).map(|i| 1.7 * (k - 2 - i) as f64 / (k - 2) as f64));
            let s = Tensor::from_slice(&sv).diag_embed(0, -2, -1);
            let w = u.narrow(1, 0, k).matmul(&s).matmul(&v.narrow(1, 0, k).tr());
            assert!(rel(exact_dense(&w), 2.0).abs() < 1e-12);
            let iters = (0..=6)
                .find(|&t| rel(gram_bound(&w, t).double_value(&[]), 2.0) < 1e-3)
                .unwrap_or_else(|| panic!("{m}x{n}: gram not within 1e-3 after 6 iterations"));
            assert!(
                iters >= 3,
                "{m}x{n}: converged at {iters}: the spectrum is not as built"
            );
        }
        // Large entries: the rescaling keeps the bound finite (1e200^(2^10) would overflow).
        let w = Tensor::randn([20, 20], F64) * 1e200;
        let g = gram_bound(&w, 10).double_value(&[]);
        assert!(g.is_finite() && g >= exact_dense(&w) * (1.0 - 1e-12), "{g}");
    }
}
