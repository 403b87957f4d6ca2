//! The warm-up regularizers of Shi et al. (2021), "Fast certified robust training with short
//! warmup", on the IBP bounds of a batch.
//!
//! For each ReLU layer with pre-activation bounds `[l, u]`, centre `c = (u + l) / 2` and radius
//! `d = (u - l) / 2` (means over the batch and the neurons), and `d_0` the mean radius of the
//! input of the first affine layer:
//! - tightness: `relu(tol - d_0 / mean(d)) / tol`, which is zero while the bounds have grown by
//!   less than `1 / tol` since the input;
//! - ReLU balance: with `A = [l > 0]` (stably active) and `I = [u < 0]` (stably inactive),
//!   `r_mean = mean(c A) / -mean(c I)` and `r_var = sum((c - mean c)^2 A) / sum((c - mean c)^2 I)`,
//!   each folded to `min(r, 1 / r)`, and `(relu(tol - r_mean) + relu(tol - r_var)) / tol`, which
//!   is zero while neither side outweighs the other by more than `1 / tol`. A layer whose
//!   ratio is not finite (a side is empty) adds nothing, as in the reference code.
//!
//! Each is averaged over the ReLU layers and weighted `w (1 - eps / eps_max)`: they act during
//! the eps warm-up and ramp and vanish once eps reaches its final value. At eps = 0 the bounds
//! are taken on a box of radius [`SHI_EPS_AT_ZERO`], as the reference code does, so that the
//! regularizers also shape the clean warm-up epochs.
use super::Schedule;
use crate::bounds::{ibp_layer_bounds, input_box, Ball};
use crate::config::TrainConfig;
use crate::metrics::key;
use crate::model::{Layer, Network};
use tch::{Kind, Tensor};

/// `tol` of both regularizers (the paper's and the reference code's default).
pub const SHI_TOL: f64 = 0.5;
/// The radius of the box the regularizers see while eps is 0 (the reference's `min_eps_reg`).
pub const SHI_EPS_AT_ZERO: f64 = 1e-6;

/// The weight of the regularizers at this step: `shi_reg_weight (1 - eps / eps_max)`.
pub fn shi_weight(tc: &TrainConfig, sched: &Schedule) -> f64 {
    if tc.eps <= 0.0 {
        return 0.0;
    }
    (tc.shi_reg_weight * (1.0 - sched.eps / tc.eps)).max(0.0)
}

/// The box the regularizers see for a ball around `centre`: the ball itself, or a tiny box
/// while its radius is 0.
pub fn shi_ball(ball: Ball) -> Ball {
    Ball {
        eps: ball.eps.max(SHI_EPS_AT_ZERO),
        norm: ball.norm,
    }
}

/// The two regularizer terms (unweighted): `(tightness, relu_balance)`, from the IBP bounds
/// of every layer (`bounds[i]` bounds the output of layer `i`) over the input set `ball`
/// around `centre`.
pub fn shi_terms(
    layers: &[Layer],
    bounds: &[(Tensor, Tensor)],
    centre: &Tensor,
    ball: Ball,
) -> (Tensor, Tensor) {
    let first_affine = layers
        .iter()
        .position(|l| matches!(l, Layer::Linear { .. } | Layer::Conv2d { .. }))
        .unwrap_or(0);
    let (l0, u0) = match first_affine {
        0 => input_box(centre, ball),
        k => (
            bounds[k - 1].0.shallow_clone(),
            bounds[k - 1].1.shallow_clone(),
        ),
    };
    let d0 = ((u0 - l0) / 2.0).mean(Kind::Float);
    let zero = || d0.zeros_like();
    let (mut tight, mut balance, mut count) = (zero(), zero(), 0);
    let relu = |t: Tensor| t.relu() / SHI_TOL;
    for (i, layer) in layers.iter().enumerate().skip(1) {
        if !matches!(layer, Layer::Relu) {
            continue;
        }
        let (l, u) = &bounds[i - 1];
        count += 1;
        let c = (u + l) / 2.0;
        let d = ((u - l) / 2.0).mean(Kind::Float);
        tight += relu(-(&d0 / d.clamp_min(1e-12)) + SHI_TOL);
        let active = l.gt(0.0).to_kind(c.kind());
        let inactive = u.lt(0.0).to_kind(c.kind());
        let mean_ratio = (&c * &active).mean(Kind::Float) / -(&c * &inactive).mean(Kind::Float);
        let spread = (&c - c.mean(Kind::Float)).square();
        let var_ratio =
            (&spread * &active).sum(Kind::Float) / (&spread * &inactive).sum(Kind::Float);
        let fold = |r: Tensor| r.minimum(&(1.0 / r.clamp_min(1e-12)));
        let term = relu(-fold(mean_ratio) + SHI_TOL) + relu(-fold(var_ratio) + SHI_TOL);
        if term.f_double_value(&[]).is_ok_and(f64::is_finite) {
            balance += term;
        }
    }
    let n = count.max(1) as f64;
    (tight / n, balance / n)
}

/// The weighted regularizer parts (`shi_tightness`, `shi_relu`) of a batch, or none when
/// their weight is 0 at this step. `bounds` are the IBP bounds of the loss over `ball` around
/// `centre` when it has them (and the ball is not a point), else they are computed here.
pub fn shi_parts(
    net: &Network,
    centre: &Tensor,
    ball: Ball,
    bounds: Option<&[(Tensor, Tensor)]>,
    tc: &TrainConfig,
    sched: &Schedule,
) -> Vec<(&'static str, Tensor)> {
    let w = shi_weight(tc, sched);
    if w <= 0.0 {
        return Vec::new();
    }
    let own;
    let (bounds, ball) = match bounds {
        Some(b) if ball.eps > 0.0 => (b, ball),
        _ => {
            let ball = shi_ball(ball);
            own = ibp_layer_bounds(net, centre, ball);
            (own.as_slice(), ball)
        }
    };
    let (tight, balance) = shi_terms(&net.layers, bounds, centre, ball);
    vec![
        (key::LOSS_SHI_TIGHTNESS, tight * w),
        (key::LOSS_SHI_RELU, balance * w),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounds::tests::lin;
    use crate::config::{Method, Norm};
    use crate::model::LayerSpec;
    use tch::Device;

    fn values(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
    }

    /// The two terms, recomputed from the same bounds with plain loops over f64 values.
    fn by_hand(net: &Network, bounds: &[(Tensor, Tensor)], x: &Tensor, eps: f64) -> (f64, f64) {
        let x0 = values(x);
        let d0 = x0
            .iter()
            .map(|v| ((v + eps).min(1.0) - (v - eps).max(0.0)) / 2.0)
            .sum::<f64>()
            / x0.len() as f64;
        let (mut tight, mut balance, mut count) = (0.0, 0.0, 0.0);
        for (i, layer) in net.layers.iter().enumerate() {
            if !matches!(layer, Layer::Relu) {
                continue;
            }
            count += 1.0;
            let (l, u) = (values(&bounds[i - 1].0), values(&bounds[i - 1].1));
            let n = l.len() as f64;
            let c: Vec<f64> = l.iter().zip(&u).map(|(a, b)| (a + b) / 2.0).collect();
            let d = l.iter().zip(&u).map(|(a, b)| (b - a) / 2.0).sum::<f64>() / n;
            tight += (SHI_TOL - d0 / d).max(0.0) / SHI_TOL;
            let mean = c.iter().sum::<f64>() / n;
            let (mut ma, mut mi, mut va, mut vi) = (0.0, 0.0, 0.0, 0.0);
            for k in 0..c.len() {
                if l[k] > 0.0 {
                    ma += c[k] / n;
                    va += (c[k] - mean).powi(2);
                }
                if u[k] < 0.0 {
                    mi += c[k] / n;
                    vi += (c[k] - mean).powi(2);
                }
            }
            let fold = |r: f64| r.min(1.0 / r.max(1e-12));
            let t = ((SHI_TOL - fold(ma / -mi)).max(0.0) + (SHI_TOL - fold(va / vi)).max(0.0))
                / SHI_TOL;
            if t.is_finite() {
                balance += t;
            }
        }
        (tight / count, balance / count)
    }

    #[test]
    fn shi_terms_match_a_plain_recomputation_and_fade_with_eps() {
        tch::manual_seed(11);
        let specs = vec![
            lin(6, 40),
            LayerSpec::Relu,
            lin(40, 40),
            LayerSpec::Relu,
            lin(40, 3),
        ];
        let net = Network::new(specs, &[6], 3, Device::Cpu).unwrap();
        // Points near the data boundary too, so the input box is clipped.
        let x = Tensor::rand([32, 6], (Kind::Float, Device::Cpu)) * 1.1 - 0.05;
        let x = x.clamp(0.0, 1.0);
        for eps in [0.01, 0.1, 0.5] {
            let ball = Ball {
                eps,
                norm: Norm::Linf,
            };
            let bounds = ibp_layer_bounds(&net, &x, ball);
            let (t, b) = shi_terms(&net.layers, &bounds, &x, ball);
            let (t_want, b_want) = by_hand(&net, &bounds, &x, eps);
            let (t, b) = (t.double_value(&[]), b.double_value(&[]));
            assert!(
                (t - t_want).abs() <= 1e-4 * (1.0 + t_want),
                "eps {eps}: {t} vs {t_want}"
            );
            assert!(
                (b - b_want).abs() <= 1e-4 * (1.0 + b_want),
                "eps {eps}: {b} vs {b_want}"
            );
        }
        // The weight: w (1 - eps / eps_max), zero at eps_max, and no parts then.
        let tc = TrainConfig {
            method: Method::Ibp,
            eps: 0.2,
            shi_reg_weight: 0.5,
            ..TrainConfig::default()
        };
        let at = |eps: f64| Schedule {
            eps,
            beta: 1.0,
            kappa: 1.0,
            reg_factor: 1.0,
        };
        assert!((shi_weight(&tc, &at(0.0)) - 0.5).abs() < 1e-12);
        assert!((shi_weight(&tc, &at(0.05)) - 0.375).abs() < 1e-12);
        assert_eq!(shi_weight(&tc, &at(0.2)), 0.0);
        let ball = Ball {
            eps: 0.2,
            norm: Norm::Linf,
        };
        assert!(shi_parts(&net, &x, ball, None, &tc, &at(0.2)).is_empty());
        // At eps 0 the tiny box gives finite terms with gradients to the first layer.
        let zero = Ball {
            eps: 0.0,
            norm: Norm::Linf,
        };
        let parts = shi_parts(&net, &x, zero, None, &tc, &at(0.0));
        let names: Vec<&str> = parts.iter().map(|p| p.0).collect();
        assert_eq!(names, ["shi_tightness", "shi_relu"]);
        let total = parts
            .iter()
            .map(|p| p.1.shallow_clone())
            .reduce(|a, b| a + b)
            .unwrap();
        assert!(total.double_value(&[]).is_finite());
        total.backward();
        let g = net.parameters()[0].grad();
        assert!(g.defined() && g.norm().double_value(&[]).is_finite());
    }
}
