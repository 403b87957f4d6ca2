//! Fast-Lin pre-activation bounds estimated from random projections (Wong et al. 2018): the
//! l1 norms (l_2 ball: l2 norms) of the rows of the relaxed network's affine maps are estimated
//! from Cauchy (Gaussian) directions pushed forward, instead of one backward pass per neuron.
//! An estimate, not a guarantee: for training only.
use super::ibp::apply_linear;
use super::input::input_box;
use super::relax::{Relaxer, ReluLines};
use super::{unsupported, Relaxation};
use crate::config::Norm;
use crate::model::Layer;
use tch::{Kind, Tensor};

impl Relaxer<'_> {
    /// Fast-Lin pre-activation bounds with the l1 (l_2: squared l2) terms estimated from random
    /// projections, propagated forward through the relaxed network (Wong et al. 2018).
    ///
    /// With the Fast-Lin lines an unstable ReLU is `a = s z + e`, `e in [0, -s l]`, so every
    /// pre-activation is an affine map of the input and of the `e`s: its bounds are the value at
    /// the centre of that box plus or minus the l1 norms of the rows scaled by the radii. The
    /// norms are estimated from `dim` directions per source (input, each ReLU layer).
    pub(super) fn projected_lines(
        &mut self,
        ibp: &[(Tensor, Tensor)],
        relax: Relaxation,
        dim: i64,
    ) {
        let b = self.batch();
        let opts = (self.x.kind(), self.x.device());
        let (lo, hi) = input_box(&self.x, self.ball);
        let mut centre = match self.ball.norm {
            Norm::Linf => (&lo + &hi) / 2.0,
            Norm::L2 => self.x.shallow_clone(),
        };
        let in_shape = self.shapes[0].clone();
        let mut dshape = vec![b, dim];
        dshape.extend_from_slice(&in_shape);
        // Each source: its directions `[B, dim, ..]` and whether they estimate an l1 norm
        // (Cauchy, median) or a squared l2 norm (Gaussian, mean of squares).
        let mut sources: Vec<(Tensor, bool)> = vec![match self.ball.norm {
            Norm::Linf => (
                ((&hi - &lo) / 2.0).unsqueeze(1) * cauchy(&dshape, opts),
                true,
            ),
            Norm::L2 => (
                Tensor::randn(dshape.as_slice(), opts) * self.ball.eps,
                false,
            ),
        }];
        for i in 0..self.layers.len() {
            let layer = &self.layers[i];
            if let Layer::Relu = layer {
                let relu_before = self.layers[..i].iter().any(|l| matches!(l, Layer::Relu));
                let (il, iu) = &ibp[i - 1];
                let (l, u) = if !relu_before {
                    (il.shallow_clone(), iu.shallow_clone())
                } else {
                    let radius = sources
                        .iter()
                        .map(|(d, l1)| {
                            if *l1 {
                                d.abs().median_dim(1, false).0
                            } else {
                                d.square().mean_dim(1, false, None::<Kind>).sqrt()
                            }
                        })
                        .fold(centre.zeros_like(), |acc, r| acc + r);
                    (
                        (&centre - &radius).maximum(il),
                        (&centre + &radius).minimum(iu),
                    )
                };
                let lines = ReluLines::new(&l, &u, Relaxation::Fastlin);
                let slope = lines.upper_slope.squeeze_dim(1);
                let e_radius = (lines.upper_icpt.squeeze_dim(1)) / 2.0;
                centre = &centre * &slope + &e_radius;
                for (d, _) in sources.iter_mut() {
                    *d = &*d * slope.unsqueeze(1);
                }
                let mut shape = vec![b, dim];
                shape.extend_from_slice(&self.shapes[i + 1]);
                sources.push((e_radius.unsqueeze(1) * cauchy(&shape, opts), true));
                // Bounds are Fast-Lin's estimate; the output pass may still use CROWN's lines.
                self.lines[i] = Some(ReluLines::new(&l, &u, relax));
            } else {
                centre = layer.forward(&centre);
                for (d, _) in sources.iter_mut() {
                    let flat = d.flatten(0, 1);
                    let moved = match layer {
                        Layer::Linear { weight, .. } | Layer::Conv2d { weight, .. } => {
                            apply_linear(layer, weight, &flat)
                        }
                        Layer::Normalize { std, .. } => flat / std,
                        Layer::Flatten => flat.flatten(1, -1),
                        Layer::Relu => unreachable!(),
                        l => unsupported(l),
                    };
                    let mut shape = vec![b, dim];
                    shape.extend_from_slice(&moved.size()[1..]);
                    *d = moved.reshape(shape.as_slice());
                }
            }
        }
    }
}

/// Standard Cauchy samples.
fn cauchy(shape: &[i64], opts: (Kind, tch::Device)) -> Tensor {
    ((Tensor::rand(shape, opts) - 0.5) * std::f64::consts::PI).tan()
}
