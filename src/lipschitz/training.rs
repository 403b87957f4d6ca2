//! The bounds that `method = "lipschitz"` trains with: the differentiable training bound (Gram
//! product or LipSDP with fixed multipliers), the guaranteed bound in double precision, and the
//! enforced bound (a common rescaling of the weights).
use super::lipsdp::{improve_t, mlp_weights, SdpProblem};
use super::{layer_gram_bound, network_gram_bound, scalar};
use crate::config::LipBound;
use crate::model::{layers_f64, Layer, Network};
use tch::{Kind, Tensor};

/// A differentiable LipSDP bound for training: `sqrt(rho(T, W))` with the multipliers `T`
/// held fixed (found by the first-order method on the detached weights, warm-started from
/// `warm`); any feasible `T` gives a certified bound, and `rho` is differentiable in the
/// weights. Returns the bound and the multipliers for the next call; `None` when no feasible
/// multiplier is found (the caller falls back to the Gram product).
pub fn lipsdp_training_bound(
    net: &Network,
    warm: Option<&Tensor>,
    steps: u32,
) -> Option<(Tensor, Tensor)> {
    // Differentiable weights (double), Normalize folded like `mlp_weights`.
    let detached = mlp_weights(net).ok()?;
    let p_detached = SdpProblem::new(&detached);
    // The previous step's multipliers, scaled up if the weight update made Q(T) indefinite
    // (Q(aT) = a (2T - off-diagonal) - W_m^T W_m), else a fresh start.
    let warm_start = warm.and_then(|t| {
        (0..6)
            .map(|i| t * 2f64.powi(i))
            .find(|t| tch::no_grad(|| p_detached.rho(t)).is_some())
    });
    let t_start = match warm_start {
        Some(t) => t,
        None => tch::no_grad(|| p_detached.initial_t())?,
    };
    let (t, _) = tch::no_grad(|| improve_t(&p_detached, &t_start, steps));
    // The live weights: W_0 itself (no SVD reduction, so gradients reach it).
    let mut live: Vec<Tensor> = Vec::new();
    let mut scale: Option<Tensor> = None;
    for layer in &net.layers {
        match layer {
            Layer::Normalize { std, .. } if live.is_empty() => {
                let per_input =
                    Tensor::ones(net.input_shape.as_slice(), (Kind::Double, std.device()))
                        / std.to_kind(Kind::Double);
                scale = Some(per_input.reshape([-1]));
            }
            l => {
                if let Some(w) = l.effective_weight() {
                    let w = w.to_kind(Kind::Double);
                    let w = match (live.is_empty(), &scale) {
                        (true, Some(sc)) => w * sc.unsqueeze(0),
                        _ => w,
                    };
                    live.push(w);
                }
            }
        }
    }
    let widths = live[..live.len() - 1].iter().map(|w| w.size()[0]).collect();
    let r = live[0].size()[1];
    let p = SdpProblem {
        ws: live,
        widths,
        r,
    };
    let rho = p.rho(&t)?;
    Some((rho.sqrt().to_kind(Kind::Float), t))
}

/// The bound `method = "lipschitz"` adds to the loss (differentiable).
pub fn training_bound(net: &Network, shapes: &[Vec<i64>], bound: LipBound) -> Tensor {
    match bound {
        // ADMM has no differentiable bound term (its W-step adds the coupling instead).
        LipBound::Gram | LipBound::Admm => {
            network_gram_bound(net, shapes, crate::model::ONE_LIP_GRAM_ITERS)
        }
        LipBound::Lipsdp => LIPSDP_WARM.with(|cell| {
            let warm = cell.borrow_mut().take();
            match lipsdp_training_bound(net, warm.as_ref(), 3) {
                Some((b, t)) => {
                    *cell.borrow_mut() = Some(t);
                    b
                }
                None => network_gram_bound(net, shapes, crate::model::ONE_LIP_GRAM_ITERS),
            }
        }),
    }
}

thread_local! {
    /// The LipSDP multipliers of the previous training step (warm start).
    static LIPSDP_WARM: std::cell::RefCell<Option<Tensor>> = const { std::cell::RefCell::new(None) };
}

/// A guaranteed upper bound on the network's Lipschitz constant in double precision (product of
/// per-layer Gram bounds), for enforcement and logging.
pub fn guaranteed_bound(net: &Network, shapes: &[Vec<i64>], iters: u32) -> f64 {
    tch::no_grad(|| {
        let layers = layers_f64(&net.layers);
        let mut total = 1.0;
        for (i, layer) in layers.iter().enumerate() {
            if let Some(b) = layer_gram_bound(layer, &shapes[i], iters) {
                total *= scalar(&b);
            }
        }
        total
    })
}

/// Enforces `guaranteed_bound <= target` by scaling the weights of the scalable layers (Linear
/// and Conv2d; the bound is homogeneous of degree 1 in each) by a common factor. Returns the
/// bound after the projection, or an error when no layer can be scaled.
pub fn enforce_bound(
    net: &Network,
    shapes: &[Vec<i64>],
    target: f64,
    iters: u32,
) -> Result<f64, String> {
    let before = guaranteed_bound(net, shapes, iters);
    if before <= target {
        return Ok(before);
    }
    let scalable: Vec<&Tensor> = net
        .layers
        .iter()
        .filter_map(|l| match l {
            Layer::Linear { weight, .. } | Layer::Conv2d { weight, .. } => Some(weight),
            _ => None,
        })
        .collect();
    if scalable.is_empty() {
        return Err(format!(
            "the Lipschitz bound {before:.6} exceeds lip_target {target} and the network has no Linear or Conv2d layer to rescale"
        ));
    }
    // A hair below the exact root, so rounding cannot leave the bound above the target.
    let factor = (target / before).powf(1.0 / scalable.len() as f64) * (1.0 - 1e-6);
    tch::no_grad(|| -> Result<(), String> {
        for w in scalable {
            let mut w = w.shallow_clone();
            let _scaled = w
                .f_mul_scalar_(factor)
                .map_err(|e| format!("rescaling the weights: {e}"))?;
        }
        Ok(())
    })?;
    let after = guaranteed_bound(net, shapes, iters);
    if after > target {
        return Err(format!(
            "rescaling left the Lipschitz bound at {after:.6} > lip_target {target}"
        ));
    }
    Ok(after)
}
