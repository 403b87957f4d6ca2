//! The empirical *lower* bound on a network's l_2 Lipschitz constant: the largest difference
//! quotient found by power iteration on perturbations of data points.
use super::scalar;
use crate::model::{layers_f64, Layer, Network};
use tch::{Kind, Tensor};

fn forward_layers(layers: &[Layer], x: &Tensor) -> Tensor {
    layers.iter().fold(x.shallow_clone(), |h, l| l.forward(&h))
}

/// A lower bound on the network's l_2 Lipschitz constant: from every point `x` of `points`,
/// power iteration on the perturbation `d` (gradient ascent on `||f(x + d) - f(x)||^2` at fixed
/// `||d||`, which is power iteration on the local Jacobian), at two radii; the largest exact
/// difference quotient `||f(x + d) - f(x)|| / ||d||` seen. Every quotient is a true lower bound
/// (computed in double precision).
pub fn empirical_lower_bound(net: &Network, points: &Tensor, steps: u32) -> f64 {
    let layers = layers_f64(&net.layers);
    let x = points.detach().to_kind(Kind::Double);
    let b = x.size()[0];
    if b == 0 {
        return 0.0;
    }
    let per_row = |t: &Tensor| -> Tensor {
        t.reshape([b, -1])
            .square()
            .sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)
            .sqrt()
    };
    let bshape = |t: &Tensor| -> Vec<i64> {
        let mut s = vec![b];
        s.extend(std::iter::repeat_n(1, t.dim() - 1));
        s
    };
    let fx = tch::no_grad(|| forward_layers(&layers, &x));
    let mut best = 0.0f64;
    for radius in [1e-4f64, 1e-1] {
        let mut d = x.randn_like();
        let mut scale = (per_row(&d).reciprocal() * radius).reshape(bshape(&d).as_slice());
        d = &d * &scale;
        for _ in 0..steps.max(1) {
            let di = d.detach().set_requires_grad(true);
            let diff = tch::with_grad(|| forward_layers(&layers, &(&x + &di)) - &fx);
            let q = per_row(&diff.detach()) / per_row(&di.detach());
            best = best.max(tch::no_grad(|| scalar(&q.max())));
            let objective = diff.square().sum(Kind::Double) * 0.5;
            let g = Tensor::run_backward(&[objective], &[&di], false, false)
                .pop()
                .unwrap_or_else(|| di.zeros_like());
            let gn = per_row(&g).clamp_min(1e-300);
            scale = (gn.reciprocal() * radius).reshape(bshape(&g).as_slice());
            d = (g * &scale).detach();
        }
        let q =
            tch::no_grad(|| per_row(&(forward_layers(&layers, &(&x + &d)) - &fx)) / per_row(&d));
        best = best.max(scalar(&q.max()));
    }
    best
}
