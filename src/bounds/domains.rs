//! Bounds on subdomains of an input set, for branch and bound: each domain is the input set
//! together with known bounds on some pre-activations (a split fixes a ReLU's phase by
//! clamping its input's `l` or `u` to 0), bounded by CROWN or alpha-CROWN with those bounds,
//! with what the branching needs: the tightened pre-activation bounds (the children's priors),
//! a score per unstable neuron and the relaxed minimiser of the worst margin (where to look
//! for a counterexample).
use super::alpha::{alpha_lower, AlphaSettings};
use super::input::input_minimum;
use super::relax::{Pass, Relaxer, ReluLines};
use super::{margin_spec, Ball, Intermediate, Relaxation, Relaxed};
use crate::model::{layer_shapes, Layer};
use tch::{Kind, Tensor};

/// The bounds of a batch of domains (row `d` of every tensor is domain `d`).
pub struct DomainBounds {
    /// Margin lower bounds `[D, K]` (entry `y` is 0).
    pub margin_lower: Tensor,
    /// The smallest margin bound over the other classes, `[D]`; `+inf` for a domain whose
    /// pre-activation bounds contradict each other (no input lies in it).
    pub worst: Tensor,
    /// Per layer, `Some((l, u))` (`[D, ..]`) for ReLU layers: bounds of its input.
    pub relu_bounds: Vec<Option<(Tensor, Tensor)>>,
    /// Per layer, `Some([D, n])` for ReLU layers: what each neuron's upper line costs the worst
    /// margin's bound (0 for stable neurons), the branching score (BaBSR-like, Bunel et al.
    /// 2020).
    pub scores: Vec<Option<Tensor>>,
    /// The input where the relaxed bound of the worst margin is attained, `[D, ..input]`.
    pub argmin: Tensor,
    /// The labels `[D]`.
    pub labels: Tensor,
}

/// Bounds of the margins `z_y - z_t` over each domain: the input set around `x` (`[D, ..]`,
/// usually one point repeated) with the known pre-activation bounds `priors` (per layer, `[D,
/// ..]`), by CROWN, or by alpha-CROWN when `alpha` is given. Without gradients.
pub fn bound_domains(
    layers: &[Layer],
    classes: i64,
    x: &Tensor,
    y: &Tensor,
    ball: Ball,
    priors: Option<&[Option<(Tensor, Tensor)>]>,
    alpha: Option<AlphaSettings>,
) -> DomainBounds {
    let spec = margin_spec(y, classes, x.kind());
    let crown = Relaxed {
        relax: Relaxation::Crown,
        inter: Intermediate::Exact,
    };
    let (lower, r) = match alpha {
        Some(settings) => {
            let ab = alpha_lower(layers, x, ball, &spec, priors, settings);
            let r = tch::no_grad(|| from_bounds(layers, x, ball, &ab.relu_bounds));
            (ab.lower, r)
        }
        None => tch::no_grad(|| {
            let r = Relaxer::with_priors(layers, x, ball, crown, priors);
            (r.lower_bound(layers.len(), spec.shallow_clone()), r)
        }),
    };
    tch::no_grad(|| {
        let margin_lower = lower.scatter_value(1, &y.unsqueeze(1), 0.0);
        let mut worst = lower
            .scatter_value(1, &y.unsqueeze(1), f64::INFINITY)
            .amin([1], false);
        let relu_bounds: Vec<Option<(Tensor, Tensor)>> = r
            .lines
            .iter()
            .map(|l| l.as_ref().map(|l| (l.l.squeeze_dim(1), l.u.squeeze_dim(1))))
            .collect();
        for (l, u) in relu_bounds.iter().flatten() {
            let tol = (l.abs() + u.abs() + 1.0) * 1e-6;
            let empty = l.gt_tensor(&(u + tol)).flatten(1, -1).any_dim(1, false);
            worst = worst.masked_fill(&empty, f64::INFINITY);
        }
        // The worst row alone, walked back once more for the scores and the minimiser.
        let d = x.size()[0];
        let k = spec.size()[2];
        let row = lower
            .scatter_value(1, &y.unsqueeze(1), f64::INFINITY)
            .argmin(1, true);
        let one = spec.expand([d, classes, k], false).gather(
            1,
            &row.unsqueeze(2).expand([d, 1, k], false),
            false,
        );
        let mut costs = Vec::new();
        let pass = Pass {
            costs: Some(&mut costs),
            ..Pass::default()
        };
        let (lambda, _) = r.backward_pass(layers.len(), one, pass);
        let (_, argmin) = input_minimum(&lambda, x, ball, true);
        let argmin = match argmin {
            Some(a) => a.squeeze_dim(1),
            None => x.shallow_clone(),
        };
        let mut scores: Vec<Option<Tensor>> = (0..layers.len()).map(|_| None).collect();
        for (i, c) in costs {
            scores[i] = Some(c.flatten(1, -1).to_kind(Kind::Double));
        }
        DomainBounds {
            margin_lower,
            worst,
            relu_bounds,
            scores,
            argmin,
            labels: y.shallow_clone(),
        }
    })
}

/// A relaxer whose ReLU lines come from given bounds (no intermediate passes).
fn from_bounds<'a>(
    layers: &'a [Layer],
    x: &Tensor,
    ball: Ball,
    bounds: &[Option<(Tensor, Tensor)>],
) -> Relaxer<'a> {
    Relaxer {
        layers,
        shapes: layer_shapes(layers, x),
        x: x.shallow_clone(),
        ball,
        lines: bounds
            .iter()
            .map(|b| {
                b.as_ref()
                    .map(|(l, u)| ReluLines::new(l, u, Relaxation::Crown))
            })
            .collect(),
        relax: Relaxation::Crown,
    }
}
