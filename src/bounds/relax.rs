//! The backward linear relaxation of Fast-Lin and CROWN: every ReLU is bounded by two lines
//! (the chord above, the relaxation's choice below), and a linear function of one layer's
//! output is walked back to the input through the affine layers and those lines.
use super::ibp::ibp_bounds;
use super::input::input_minimum;
use super::ops::sum_rest;
use super::{unsupported, Ball, Intermediate, Relaxation, Relaxed};
use crate::model::{layer_shapes, Layer};
use tch::{Kind, Tensor};

/// The two lines of every ReLU of one layer, from its pre-activation bounds; each `[B, 1, ..]`
/// so that it broadcasts over specification rows.
pub(super) struct ReluLines {
    pub(super) l: Tensor,
    pub(super) u: Tensor,
    /// Unstable neurons (`l < 0 < u`), as 0/1.
    pub(super) unstable: Tensor,
    /// Slope of the lower line (1 active, 0 inactive, the relaxation's choice if unstable).
    pub(super) lower_slope: Tensor,
    /// Slope and intercept of the upper line (`s`, `-s l` if unstable; identity or 0 if not).
    pub(super) upper_slope: Tensor,
    pub(super) upper_icpt: Tensor,
}

impl ReluLines {
    pub(super) fn new(l: &Tensor, u: &Tensor, relax: Relaxation) -> Self {
        let active = l.ge(0.0).to_kind(l.kind());
        let unstable = l.lt(0.0).logical_and(&u.gt(0.0)).to_kind(l.kind());
        // The clamp keeps the stable entries (masked out below) free of 0/0, values and grads.
        let s = u / (u - l).clamp_min(1e-12);
        let upper_slope = &active + &unstable * &s;
        let upper_icpt = -(&unstable * &s * l);
        let lower_slope = match relax {
            Relaxation::Fastlin => upper_slope.shallow_clone(),
            Relaxation::Crown => &active + &unstable * u.ge_tensor(&l.neg()).to_kind(l.kind()),
        };
        let b = |t: Tensor| t.unsqueeze(1);
        ReluLines {
            l: b(l.shallow_clone()),
            u: b(u.shallow_clone()),
            unstable: b(unstable),
            lower_slope: b(lower_slope),
            upper_slope: b(upper_slope),
            upper_icpt: b(upper_icpt),
        }
    }
}

impl ReluLines {
    /// The lower-line slopes with alpha-CROWN's `alpha` (`[B or 1, S or 1, ..]`) in place of
    /// the relaxation's choice: stable neurons keep their slope (0 or 1), unstable ones take
    /// alpha.
    pub(super) fn lower_slope_with(&self, alpha: Option<&Tensor>) -> Tensor {
        match alpha {
            Some(alpha) => &self.lower_slope * (1.0 - &self.unstable) + &self.unstable * alpha,
            None => self.lower_slope.shallow_clone(),
        }
    }
}

/// What the backward pass of a specification chose at one ReLU layer: which unstable neurons
/// it bounded with the lower line and which with the upper line, per example and row.
pub(super) struct ReluTrace {
    pub(super) layer: usize,
    pub(super) lower: Tensor,
    pub(super) upper: Tensor,
}

/// The options of a backward pass beyond its specification.
#[derive(Default)]
pub(super) struct Pass<'p> {
    /// Collects which line each unstable neuron was bounded with (tightness terms).
    pub(super) trace: Option<&'p mut Vec<ReluTrace>>,
    /// Accumulates `sum |lambda| . intercept` (Fast-Lin's upper bound from its lower one).
    pub(super) spread: Option<&'p mut Tensor>,
    /// Per layer, lower-line slopes for the unstable neurons in place of the relaxation's
    /// choice (alpha-CROWN), `[B or 1, S or 1, ..]`, each in [0, 1].
    pub(super) slopes: Option<&'p [Option<Tensor>]>,
    /// Collects, per ReLU layer, what each neuron's upper line costs the bound,
    /// `-min(lambda, 0) * intercept` (`[B, S, ..]`, >= 0): where splitting helps most.
    pub(super) costs: Option<&'p mut Vec<(usize, Tensor)>>,
}

/// A network prepared for backward passes on one batch: shapes, IBP bounds and the ReLU lines.
pub(super) struct Relaxer<'a> {
    pub(super) layers: &'a [Layer],
    pub(super) shapes: Vec<Vec<i64>>,
    pub(super) x: Tensor,
    pub(super) ball: Ball,
    /// `lines[i]` for every ReLU layer `i`.
    pub(super) lines: Vec<Option<ReluLines>>,
    pub(super) relax: Relaxation,
}

impl<'a> Relaxer<'a> {
    /// Computes the pre-activation bounds of every ReLU (with `relaxed.inter`) and its lines.
    pub(super) fn new(layers: &'a [Layer], x: &Tensor, ball: Ball, relaxed: Relaxed) -> Self {
        Self::with_priors(layers, x, ball, relaxed, None)
    }

    /// [`Relaxer::new`] on a subdomain of the input set: `priors[i]`, when given, are known
    /// bounds `(l, u)` (`[B, ..]`) on the input of ReLU layer `i` (a branch-and-bound split
    /// clamps one neuron's `l` or `u` to 0), intersected with the computed ones. The passes
    /// are then sound for the inputs of the set where those bounds hold.
    pub(super) fn with_priors(
        layers: &'a [Layer],
        x: &Tensor,
        ball: Ball,
        relaxed: Relaxed,
        priors: Option<&[Option<(Tensor, Tensor)>]>,
    ) -> Self {
        #[cfg(test)]
        super::tests::RELAXERS_BUILT.with(|c| c.set(c.get() + 1));
        let shapes = layer_shapes(layers, x);
        let ibp = ibp_bounds(layers, x, ball);
        let mut r = Relaxer {
            layers,
            shapes,
            x: x.shallow_clone(),
            ball,
            lines: (0..layers.len()).map(|_| None).collect(),
            relax: relaxed.relax,
        };
        match relaxed.inter {
            Intermediate::Projection { dim } => r.projected_lines(&ibp, relaxed.relax, dim),
            Intermediate::Ibp | Intermediate::Exact => r.intermediate_lines(&ibp, relaxed, priors),
        }
        r
    }

    pub(super) fn batch(&self) -> i64 {
        self.x.size()[0]
    }

    /// Walks `lambda . h_{upto} + 0` (`h_upto` the output of layer `upto - 1`, `lambda`
    /// `[B or 1, S, ..]`) back to the input. Returns `(lambda_input, offset)`.
    fn backward(
        &self,
        upto: usize,
        lambda: Tensor,
        trace: Option<&mut Vec<ReluTrace>>,
    ) -> (Tensor, Tensor) {
        self.backward_spread(upto, lambda, trace, None)
    }

    /// [`Relaxer::backward`]; with `spread`, also accumulates `sum |lambda| . intercept` over
    /// the ReLUs (with parallel lines, the upper bound is the lower one plus this spread).
    pub(super) fn backward_spread(
        &self,
        upto: usize,
        lambda: Tensor,
        trace: Option<&mut Vec<ReluTrace>>,
        spread: Option<&mut Tensor>,
    ) -> (Tensor, Tensor) {
        let pass = Pass {
            trace,
            spread,
            ..Pass::default()
        };
        self.backward_pass(upto, lambda, pass)
    }

    /// The backward pass with every option (see [`Pass`]).
    pub(super) fn backward_pass(
        &self,
        upto: usize,
        mut lambda: Tensor,
        pass: Pass,
    ) -> (Tensor, Tensor) {
        let Pass {
            mut trace,
            mut spread,
            slopes,
            mut costs,
        } = pass;
        let s = lambda.size()[1];
        let mut offset = Tensor::zeros([1, s], (self.x.kind(), self.x.device()));
        for i in (0..upto).rev() {
            let b = lambda.size()[0];
            let in_shape = &self.shapes[i];
            let mut full = vec![b, s];
            full.extend_from_slice(in_shape);
            match &self.layers[i] {
                Layer::Linear { weight, bias } => {
                    offset = offset + lambda.matmul(bias);
                    lambda = lambda.matmul(weight);
                }
                Layer::Conv2d {
                    weight,
                    bias,
                    stride,
                    padding,
                } => {
                    let out_shape = &self.shapes[i + 1];
                    offset = offset
                        + lambda
                            .flatten(3, -1)
                            .sum_dim_intlist([3i64].as_slice(), false, None::<Kind>)
                            .matmul(bias);
                    let k = weight.size()[2];
                    let pad = |dim: usize| {
                        in_shape[dim] - ((out_shape[dim] - 1) * stride - 2 * padding + k)
                    };
                    let flat = lambda.reshape([b * s, out_shape[0], out_shape[1], out_shape[2]]);
                    lambda = flat
                        .conv_transpose2d(
                            weight,
                            None::<Tensor>,
                            [*stride; 2],
                            [*padding; 2],
                            [pad(1), pad(2)],
                            1,
                            [1; 2],
                        )
                        .reshape(full.as_slice());
                }
                Layer::Flatten => lambda = lambda.reshape(full.as_slice()),
                Layer::Normalize { mean, std } => {
                    let scaled = &lambda / std;
                    offset = offset - sum_rest(&(&scaled * mean));
                    lambda = scaled;
                }
                Layer::Relu => {
                    let Some(lines) = &self.lines[i] else {
                        unreachable!("every ReLU has its lines before a backward pass")
                    };
                    let pos = lambda.clamp_min(0.0);
                    let neg = lambda.clamp_max(0.0);
                    offset = offset + sum_rest(&(&neg * &lines.upper_icpt));
                    if let Some(sp) = spread.as_deref_mut() {
                        *sp = &*sp + sum_rest(&(lambda.abs() * &lines.upper_icpt));
                    }
                    if let Some(t) = trace.as_deref_mut() {
                        t.push(ReluTrace {
                            layer: i,
                            lower: pos.gt(0.0).logical_and(&lines.unstable.gt(0.0)),
                            upper: neg.lt(0.0).logical_and(&lines.unstable.gt(0.0)),
                        });
                    }
                    if let Some(c) = costs.as_deref_mut() {
                        c.push((i, -(&neg * &lines.upper_icpt)));
                    }
                    let lower_slope = lines.lower_slope_with(slopes.and_then(|s| s[i].as_ref()));
                    lambda = pos * lower_slope + neg * &lines.upper_slope;
                }
                l => unsupported(l),
            }
        }
        (lambda, offset)
    }

    /// Lower bound of `lambda . h_upto` over the input set (`[B, S]`), and with `argmin` the
    /// input that attains the bound of the relaxed problem (`[B, S, ..input]`).
    pub(super) fn lower_bound(&self, upto: usize, lambda: Tensor) -> Tensor {
        let (lambda, offset) = self.backward(upto, lambda, None);
        let (value, _) = input_minimum(&lambda, &self.x, self.ball, false);
        value + offset
    }

    /// [`Relaxer::lower_bound`] with the argmin and the ReLU choices, for the tightness terms.
    pub(super) fn lower_bound_traced(
        &self,
        upto: usize,
        lambda: Tensor,
    ) -> (Tensor, Tensor, Vec<ReluTrace>) {
        let mut trace = Vec::new();
        let (lambda, offset) = self.backward(upto, lambda, Some(&mut trace));
        let (value, argmin) = input_minimum(&lambda, &self.x, self.ball, true);
        let Some(argmin) = argmin else {
            unreachable!("input_minimum returns the argmin when asked")
        };
        (value + offset, argmin, trace)
    }
}
