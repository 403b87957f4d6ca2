//! Attacks: PGD for l_inf and l_2, always inside the ball and the data box [0, 1].
use crate::config::Norm;
use crate::model::Network;
use tch::{Kind, Reduction, Tensor};

/// PGD settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PgdConfig {
    pub eps: f64,
    pub norm: Norm,
    pub steps: u32,
    /// Step size as a multiple of eps.
    pub step_ratio: f64,
    pub random_start: bool,
}

/// Projects `x_adv` onto the ball of radius eps around `x`, then onto the box [0, 1].
pub fn project(x_adv: &Tensor, x: &Tensor, eps: f64, norm: Norm) -> Tensor {
    let delta = x_adv - x;
    let delta = match norm {
        Norm::Linf => delta.clamp(-eps, eps),
        Norm::L2 => {
            let n = delta
                .flatten(1, -1)
                .norm_scalaropt_dim(2.0, [1], false)
                .clamp_min(1e-12);
            let factor = (eps / n).clamp_max(1.0);
            let shape: Vec<i64> = std::iter::once(-1)
                .chain(std::iter::repeat_n(1, x.dim() - 1))
                .collect();
            delta * factor.reshape(&shape)
        }
    };
    (x + delta).clamp(0.0, 1.0)
}

/// Maximises the cross-entropy loss inside the ball; returns the adversarial inputs (detached).
pub fn pgd(net: &Network, x: &Tensor, y: &Tensor, cfg: &PgdConfig) -> Tensor {
    let x = x.detach();
    if cfg.eps == 0.0 || cfg.steps == 0 {
        return x;
    }
    let step = cfg.eps * cfg.step_ratio;
    let mut x_adv = if cfg.random_start {
        let noise = match cfg.norm {
            Norm::Linf => (x.rand_like() * 2.0 - 1.0) * cfg.eps,
            Norm::L2 => x.randn_like() * (cfg.eps / (x.numel() as f64 / x.size()[0] as f64).sqrt()),
        };
        project(&(&x + noise), &x, cfg.eps, cfg.norm)
    } else {
        x.shallow_clone()
    };
    for _ in 0..cfg.steps {
        let xa = x_adv.detach().set_requires_grad(true);
        let loss =
            net.forward(&xa)
                .cross_entropy_loss::<Tensor>(y, None, Reduction::Sum, -100, 0.0);
        let grads = Tensor::run_backward(&[loss], &[&xa], false, false);
        let g = &grads[0];
        let direction = match cfg.norm {
            Norm::Linf => g.sign(),
            Norm::L2 => {
                let n = g
                    .flatten(1, -1)
                    .norm_scalaropt_dim(2.0, [1], false)
                    .clamp_min(1e-12);
                let shape: Vec<i64> = std::iter::once(-1)
                    .chain(std::iter::repeat_n(1, x.dim() - 1))
                    .collect();
                g / n.reshape(&shape)
            }
        };
        x_adv = project(&(xa.detach() + direction * step), &x, cfg.eps, cfg.norm);
    }
    x_adv.detach()
}

/// Whether the network classifies each input correctly (`[B]` bool).
pub fn correct(net: &Network, x: &Tensor, y: &Tensor) -> Tensor {
    net.forward(x)
        .argmax(1, false)
        .eq_tensor(y)
        .to_kind(Kind::Bool)
}
