//! The l_2 certificate from a Lipschitz bound: with the last layer kept apart, the radius
//! `margin_ij / (L_body ||w_i - w_j||)`.
use super::lipsdp::{lipsdp, mlp_weights};
use super::{layer_gram_bound, scalar, Settings};
use crate::model::{layers_f64, Network};
use tch::{Kind, Tensor};

/// What the l_2 certificate needs: a guaranteed Lipschitz bound of the body (every layer
/// before the last affine layer) and the effective weight of the last layer `[K, h]`.
pub struct CertificateParts {
    pub body_bound: f64,
    pub last_weight: Tensor,
}

/// Relative safety margin on the body bound, for the float32 rounding of the forward pass and
/// of the reparametrised weights.
pub const CERT_SAFETY: f64 = 1e-5;

pub fn certificate_parts(net: &Network, iters: u32) -> Option<CertificateParts> {
    let last = net.layers.last()?;
    let w = tch::no_grad(|| last.effective_weight())?;
    if w.dim() != 2 {
        return None;
    }
    let shapes = net.layer_shapes();
    let n = net.layers.len();
    let body = tch::no_grad(|| {
        let layers = layers_f64(&net.layers[..n - 1]);
        let mut total = 1.0;
        for (i, layer) in layers.iter().enumerate() {
            if let Some(b) = layer_gram_bound(layer, &shapes[i], iters) {
                total *= scalar(&b);
            }
        }
        total
    });
    // For an MLP, LipSDP of the body (the map to the last hidden activations: LipSDP with an
    // identity output layer) is often much tighter than the product; both are certified.
    let body = match body_lipsdp(net) {
        Some(v) if v < body => v,
        _ => body,
    };
    Some(CertificateParts {
        body_bound: body * (1.0 + CERT_SAFETY),
        last_weight: w.detach(),
    })
}

/// LipSDP-Neuron bound of the body of an MLP (every layer but the last linear one, so the
/// output is the last hidden activation): the MLP's weights with the last replaced by the
/// identity. `None` for other networks or when no feasible multiplier is found.
pub fn body_lipsdp(net: &Network) -> Option<f64> {
    let mut ws = mlp_weights(net).ok()?;
    if ws.len() < 2 {
        return None;
    }
    let last = ws.pop()?;
    let h = last.size()[1];
    ws.push(Tensor::eye(h, (Kind::Double, last.device())));
    lipsdp(&ws, &Settings::per_epoch()).ok().map(|r| r.value)
}

/// Certified l_2 radius of every point: `min_{j != y} (z_y - z_j) / (L_body ||w_y - w_j||)`
/// (negative when misclassified). `[B]`.
pub fn l2_radius(net: &Network, parts: &CertificateParts, x: &Tensor, y: &Tensor) -> Tensor {
    tch::no_grad(|| {
        let z = net.forward(x).to_kind(Kind::Double);
        let w = parts.last_weight.to_kind(Kind::Double);
        // ||w_i - w_j|| for every pair: [K, K].
        let diff = w.unsqueeze(1) - w.unsqueeze(0);
        let norms = diff
            .square()
            .sum_dim_intlist([2i64].as_slice(), false, None::<Kind>)
            .sqrt();
        let zy = z.gather(1, &y.unsqueeze(1), false);
        let margins = &zy - &z;
        let denom = norms.index_select(0, y) * parts.body_bound;
        let radius = margins / denom.clamp_min(1e-300);
        radius
            .scatter_value(1, &y.unsqueeze(1), f64::INFINITY)
            .amin([1i64].as_slice(), false)
    })
}

/// Points correctly classified whose certified l_2 radius exceeds `eps_l2` (`[B]` bool).
pub fn l2_certified(
    net: &Network,
    parts: &CertificateParts,
    x: &Tensor,
    y: &Tensor,
    eps_l2: f64,
) -> Tensor {
    l2_radius(net, parts, x, y).gt(eps_l2)
}
