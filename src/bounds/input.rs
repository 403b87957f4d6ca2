//! The input set, `{x' : ||x' - x|| <= eps, 0 <= x' <= 1}`, and linear functions over it: the
//! box that contains it, and the range and minimiser of `lambda . x'` that end every backward
//! pass.
use super::ops::{dot_rest, select, sum_rest};
use super::Ball;
use crate::config::Norm;
use tch::Tensor;

/// The box that contains the ball clipped to [0, 1].
pub fn input_box(x: &Tensor, ball: Ball) -> (Tensor, Tensor) {
    ((x - ball.eps).clamp_min(0.0), (x + ball.eps).clamp_max(1.0))
}

/// `(min, max)` of `lambda . x'` over the input set, `[B, S]` each, sharing the products with
/// the centre and the radii. l_inf: exact over the clipped box. l_2: the tighter of the ball's
/// `lambda . x -+ eps ||lambda||_2` and the box's (both sets contain the clipped ball).
pub(super) fn input_range(lambda: &Tensor, x: &Tensor, ball: Ball) -> (Tensor, Tensor) {
    let (lo, hi) = input_box(x, ball);
    let (lo, hi) = (lo.unsqueeze(1), hi.unsqueeze(1));
    let mid = dot_rest(lambda, &((&lo + &hi) / 2.0));
    let spread = dot_rest(&lambda.abs(), &((&hi - &lo) / 2.0));
    let (box_min, box_max) = (&mid - &spread, mid + spread);
    match ball.norm {
        Norm::Linf => (box_min, box_max),
        Norm::L2 => {
            let at_x = dot_rest(lambda, &x.unsqueeze(1));
            let reach = sum_rest(&lambda.square()).clamp_min(1e-30).sqrt() * ball.eps;
            let ball_min = &at_x - &reach;
            (ball_min.maximum(&box_min), (at_x + reach).minimum(&box_max))
        }
    }
}

/// `min lambda . x'` over the input set (the first half of [`input_range`]), `[B, S]`, and
/// optionally a feasible point attaining the relaxed bound (`[B, S, ..input]`).
pub(super) fn input_minimum(
    lambda: &Tensor,
    x: &Tensor,
    ball: Ball,
    argmin: bool,
) -> (Tensor, Option<Tensor>) {
    let value = input_range(lambda, x, ball).0;
    if !argmin {
        return (value, None);
    }
    let arg = match ball.norm {
        Norm::Linf => {
            let (lo, hi) = input_box(x, ball);
            select(&lambda.ge(0.0), &lo.unsqueeze(1), &hi.unsqueeze(1))
        }
        // The point returned must lie in the input set (ball and box), so that the real
        // network's value there is feasible and r1 = p - m >= 0: the ball's minimiser
        // projected onto the box (projection moves each coordinate towards x, which is in the
        // box, so the point stays in the ball). A box corner, where the box value is the larger
        // bound, can lie outside the l_2 ball: never returned.
        Norm::L2 => {
            let norm = sum_rest(&lambda.square()).clamp_min(1e-30).sqrt();
            let mut view = norm.size();
            view.extend(std::iter::repeat(1).take(lambda.dim() - 2));
            let step = lambda / norm.reshape(view.as_slice()) * ball.eps;
            (x.unsqueeze(1) - step).clamp(0.0, 1.0)
        }
    };
    (value, Some(arg))
}
