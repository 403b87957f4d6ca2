//! Randomized classifiers with noise injected at the input (Araujo et al. 2019, randomized
//! adversarial training; Pinot et al. 2019): the prediction is the majority vote of the base
//! network over `draws` noisy copies, and attacks need expectation over transformation
//! (Athalye et al. 2018): PGD whose gradient averages the loss over `draws` noise samples at
//! every step.
use super::smoothing::noise_like;
use super::{RobustReport, RobustSpec};
use crate::attack::{self, PgdConfig};
use crate::config::{Noise, Norm};
use crate::metrics::EpsEval;
use crate::model::Network;
use tch::{Kind, Reduction, Tensor};

/// The noise a randomized model draws at its input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputNoise {
    pub noise: Noise,
    pub sigma: f64,
}

/// `draws` noisy copies of every row of `x`, copy-major: `[draws * B, ..]`.
fn noisy_copies(x: &Tensor, noise: InputNoise, draws: i64) -> Tensor {
    let mut reps = vec![draws];
    reps.extend(std::iter::repeat_n(1, x.dim() - 1));
    let copies = x.repeat(reps.as_slice());
    &copies + noise_like(&copies, noise.noise, noise.sigma)
}

/// The majority prediction of the randomized model over `draws` draws (`[B]` int64; ties go to
/// the lower class).
pub fn majority_predict(net: &Network, x: &Tensor, noise: InputNoise, draws: u32) -> Tensor {
    tch::no_grad(|| {
        let (b, k) = (x.size()[0], net.num_classes);
        let draws = draws.max(1) as i64;
        let pred = net
            .forward(&noisy_copies(x, noise, draws))
            .argmax(1, false)
            .reshape([draws, b]);
        let votes = pred
            .one_hot(k)
            .sum_dim_intlist([0i64].as_slice(), false, Kind::Int64);
        votes.argmax(1, false)
    })
}

/// Correctly classified by the majority vote (`[B]` bool).
pub fn majority_correct(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    noise: InputNoise,
    draws: u32,
) -> Tensor {
    majority_predict(net, x, noise, draws).eq_tensor(y)
}

/// PGD with expectation over transformation: each step ascends the cross-entropy averaged over
/// `draws` noise samples, then projects onto the ball and the box (as [`attack::pgd`]). Returns
/// the last iterate (detached, in the ball and the box).
pub fn eot_pgd(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    cfg: &PgdConfig,
    noise: InputNoise,
    draws: u32,
) -> Tensor {
    let x = x.detach();
    let draws = draws.max(1) as i64;
    let ys = y.repeat([draws]);
    let mut x_adv = if cfg.random_start {
        attack::project(
            &(&x + (x.rand_like() * 2.0 - 1.0) * cfg.eps),
            &x,
            cfg.eps,
            cfg.norm,
        )
    } else {
        x.shallow_clone()
    };
    let step = cfg.step_ratio * cfg.eps;
    for _ in 0..cfg.steps {
        let xa = x_adv.detach().set_requires_grad(true);
        let logits = net.forward(&noisy_copies(&xa, noise, draws));
        let loss = logits.cross_entropy_loss::<Tensor>(&ys, None, Reduction::Sum, -100, 0.0);
        let grad = Tensor::run_backward(&[loss], &[&xa], false, false).remove(0);
        let dir = match cfg.norm {
            Norm::Linf => grad.sign(),
            Norm::L2 => {
                let flat = grad.flatten(1, -1);
                let n = flat
                    .norm_scalaropt_dim(2.0, [1i64].as_slice(), false)
                    .clamp_min(1e-12);
                let mut shape = vec![-1i64];
                shape.extend(std::iter::repeat_n(1, grad.dim() - 1));
                &grad / n.reshape(shape.as_slice())
            }
        };
        x_adv = attack::project(&(xa.detach() + dir * step), &x, cfg.eps, cfg.norm);
    }
    x_adv.detach()
}

/// Clean and EOT-PGD accuracy of the randomized model on `(x, y)` in batches: a point is
/// robust when the majority vote is right both at `x` and at the attack's last iterate.
pub fn noisy_accuracy(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    attack_cfg: Option<&PgdConfig>,
    noise: InputNoise,
    (noise_draws, eot_draws): (u32, u32),
    batch: i64,
) -> (f64, Option<f64>) {
    let n = y.size()[0];
    if n == 0 {
        return (0.0, attack_cfg.map(|_| 0.0));
    }
    let (mut clean, mut robust) = (0i64, 0i64);
    let mut start = 0;
    while start < n {
        let len = batch.max(1).min(n - start);
        let (xb, yb) = (x.narrow(0, start, len), y.narrow(0, start, len));
        let ok = majority_correct(net, &xb, &yb, noise, noise_draws);
        clean += ok.sum(Kind::Int64).int64_value(&[]);
        if let Some(cfg) = attack_cfg {
            let adv = eot_pgd(net, &xb, &yb, cfg, noise, eot_draws);
            let still = majority_correct(net, &adv, &yb, noise, noise_draws).logical_and(&ok);
            robust += still.sum(Kind::Int64).int64_value(&[]);
        }
        start += len;
    }
    (
        clean as f64 / n as f64,
        attack_cfg.map(|_| robust as f64 / n as f64),
    )
}

/// A randomized model's majority-vote clean and EOT-PGD accuracy on `(x, y)` at one eps, as
/// the report of a robust evaluation (no bounds: they would be of the base network, not of the
/// randomized model).
pub fn noisy_robust_eval(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    spec: &RobustSpec,
    noise: InputNoise,
    draws: (u32, u32),
) -> RobustReport {
    let started = std::time::Instant::now();
    let cfg = spec.pgd_config();
    let attack = (spec.pgd_steps > 0).then_some(&cfg);
    let (clean_acc, pgd_acc) = noisy_accuracy(net, x, y, attack, noise, draws, 256);
    RobustReport {
        eval: EpsEval {
            eps: spec.eps,
            pgd_acc,
            cert_acc: Default::default(),
        },
        n: y.size()[0],
        clean_acc,
        violations: vec![],
        pgd_secs: started.elapsed().as_secs_f64(),
        cert_secs: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LayerSpec;
    use tch::Device;

    fn net(seed: i64) -> Network {
        tch::manual_seed(seed);
        let specs = vec![
            LayerSpec::Linear {
                in_features: 4,
                out_features: 16,
            },
            LayerSpec::Relu,
            LayerSpec::Linear {
                in_features: 16,
                out_features: 3,
            },
        ];
        Network::new(specs, &[4], 3, Device::Cpu).unwrap()
    }

    #[test]
    fn majority_vote_counts_the_draws() {
        let net = net(1);
        let x = Tensor::rand([30, 4], (Kind::Float, Device::Cpu));
        // Vanishing noise: the vote is the plain prediction.
        let tiny = InputNoise {
            noise: Noise::Gaussian,
            sigma: 1e-9,
        };
        let plain = net.forward(&x).argmax(1, false);
        assert!(majority_predict(&net, &x, tiny, 5).equal(&plain));
        // Large noise: the vote over many draws is the most frequent class over those draws,
        // recomputed here by counting.
        let big = InputNoise {
            noise: Noise::Laplace,
            sigma: 3.0,
        };
        tch::manual_seed(7);
        let vote = majority_predict(&net, &x.narrow(0, 0, 1), big, 301);
        tch::manual_seed(7);
        let copies = noisy_copies(&x.narrow(0, 0, 1), big, 301);
        let preds = Vec::<i64>::try_from(net.forward(&copies).argmax(1, false)).unwrap();
        let mut counts = [0; 3];
        for p in preds {
            counts[p as usize] += 1;
        }
        let top = (0..3)
            .max_by_key(|&c| (counts[c], std::cmp::Reverse(c)))
            .unwrap();
        assert_eq!(vote.int64_value(&[0]), top as i64);
    }

    #[test]
    fn eot_pgd_stays_in_the_ball_and_lowers_the_expected_accuracy() {
        let net = net(2);
        let x = Tensor::rand([64, 4], (Kind::Float, Device::Cpu));
        let noise = InputNoise {
            noise: Noise::Gaussian,
            sigma: 0.05,
        };
        let y = majority_predict(&net, &x, noise, 25);
        for norm in [Norm::Linf, Norm::L2] {
            let eps = if norm == Norm::Linf { 0.3 } else { 0.6 };
            let cfg = PgdConfig {
                eps,
                norm,
                steps: 20,
                step_ratio: 0.1,
                random_start: false,
                restarts: 1,
                loss: attack::AttackLoss::CrossEntropy,
            };
            let adv = eot_pgd(&net, &x, &y, &cfg, noise, 8);
            assert!(attack::feasibility_violation(&adv, &x, eps, norm).is_none());
            let (clean, robust) = noisy_accuracy(&net, &x, &y, Some(&cfg), noise, (25, 8), 32);
            let robust = robust.unwrap();
            assert!(clean > 0.9, "labels are the vote itself: {clean}");
            assert!(robust < clean, "{norm:?}: the attack changes no vote");
        }
    }
}
