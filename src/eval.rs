//! Evaluation: clean accuracy, PGD accuracy and certified accuracy per bound method.
use crate::attack::{self, PgdConfig};
use crate::bounds::{self, Ball, BoundMethod};
use crate::config::{ExperimentConfig, Norm};
use crate::metrics::{DecisionMap, EpsEval, PointStatus};
use crate::model::Network;
use tch::{Kind, Tensor};

/// One robust evaluation to run: an eps, a norm, the bound methods and the PGD budget.
#[derive(Debug, Clone, PartialEq)]
pub struct RobustSpec {
    pub eps: f64,
    pub norm: Norm,
    pub bounds: Vec<BoundMethod>,
    pub pgd_steps: u32,
    pub pgd_restarts: u32,
}

pub fn specs_from_config(cfg: &ExperimentConfig) -> Vec<RobustSpec> {
    let e = &cfg.eval;
    e.eps
        .iter()
        .map(|&eps| RobustSpec {
            eps,
            norm: e.norm,
            bounds: e
                .bounds
                .iter()
                .filter_map(|b| BoundMethod::parse(b))
                .collect(),
            pgd_steps: e.pgd_steps,
            pgd_restarts: e.pgd_restarts,
        })
        .collect()
}

/// Fraction of correctly classified examples, evaluated in batches without gradients.
pub fn clean_accuracy(net: &Network, x: &Tensor, y: &Tensor, batch: i64) -> f64 {
    let n = y.size()[0];
    if n == 0 {
        return 0.0;
    }
    tch::no_grad(|| {
        let mut correct = 0i64;
        let mut start = 0;
        while start < n {
            let len = batch.min(n - start);
            let xb = x.narrow(0, start, len);
            let yb = y.narrow(0, start, len);
            correct += attack::correct(net, &xb, &yb)
                .sum(Kind::Int64)
                .int64_value(&[]);
            start += len;
        }
        correct as f64 / n as f64
    })
}

/// Per-example results of a robust evaluation: clean-correct, PGD-robust, certified per method.
pub struct RobustMasks {
    pub clean: Tensor,
    pub pgd: Option<Tensor>,
    pub cert: Vec<(BoundMethod, Tensor)>,
}

/// Per-example robustness of one batch. A point is PGD-robust only if it is correct and no
/// restart finds an adversarial example; certified only if correct and every margin bound > 0.
pub fn robust_masks(net: &Network, x: &Tensor, y: &Tensor, spec: &RobustSpec) -> RobustMasks {
    let clean = tch::no_grad(|| attack::correct(net, x, y));
    let pgd = (spec.pgd_steps > 0).then(|| {
        let mut robust = clean.shallow_clone();
        for r in 0..spec.pgd_restarts.max(1) {
            let cfg = PgdConfig {
                eps: spec.eps,
                norm: spec.norm,
                steps: spec.pgd_steps,
                step_ratio: 2.5 / spec.pgd_steps as f64,
                random_start: r > 0 || spec.pgd_restarts > 1,
            };
            let x_adv = attack::pgd(net, x, y, &cfg);
            robust = robust.logical_and(&tch::no_grad(|| attack::correct(net, &x_adv, y)));
        }
        robust
    });
    let ball = Ball {
        eps: spec.eps,
        norm: spec.norm,
    };
    let cert = spec
        .bounds
        .iter()
        .map(|&m| {
            let ok =
                tch::no_grad(|| bounds::certified(&bounds::margin_lower(net, x, y, ball, m), y));
            (m, ok.logical_and(&clean))
        })
        .collect();
    RobustMasks { clean, pgd, cert }
}

/// Accuracies of one robust evaluation over a set, in batches.
pub fn robust_eval(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    spec: &RobustSpec,
    batch: i64,
) -> EpsEval {
    let n = y.size()[0];
    let mut pgd_count = 0i64;
    let mut cert_counts = vec![0i64; spec.bounds.len()];
    let mut start = 0;
    while start < n {
        let len = batch.min(n - start);
        let m = robust_masks(
            net,
            &x.narrow(0, start, len),
            &y.narrow(0, start, len),
            spec,
        );
        if let Some(p) = &m.pgd {
            pgd_count += p.sum(Kind::Int64).int64_value(&[]);
        }
        for (c, (_, t)) in cert_counts.iter_mut().zip(&m.cert) {
            *c += t.sum(Kind::Int64).int64_value(&[]);
        }
        start += len;
    }
    let frac = |c: i64| if n == 0 { 0.0 } else { c as f64 / n as f64 };
    EpsEval {
        eps: spec.eps,
        pgd_acc: (spec.pgd_steps > 0).then(|| frac(pgd_count)),
        cert_acc: spec
            .bounds
            .iter()
            .zip(cert_counts)
            .map(|(m, c)| (m.name().to_string(), frac(c)))
            .collect(),
    }
}

/// The decision regions of a 2-D model on a `resolution`^2 grid over [0, 1]^2, and the status
/// of the first `max_points` test points at the first eval eps.
pub fn decision_map(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    spec: Option<&RobustSpec>,
    epoch: u32,
    resolution: usize,
    max_points: i64,
) -> DecisionMap {
    let device = net.device();
    let r = resolution as i64;
    let ticks = (Tensor::arange(r, (Kind::Float, device)) + 0.5) / r as f64;
    let gx = ticks.repeat([r]);
    let gy = ticks.repeat_interleave_self_int(r, 0, None);
    let grid = Tensor::stack(&[gx, gy], 1);
    let prob = tch::no_grad(|| {
        let logits = net.forward(&grid);
        if net.num_classes == 2 {
            logits.softmax(1, Kind::Float).select(1, 1)
        } else {
            logits.argmax(1, false).to_kind(Kind::Float)
        }
    });
    let n = max_points.min(y.size()[0]);
    let xs = x.narrow(0, 0, n);
    let ys = y.narrow(0, 0, n);
    let status = match spec {
        Some(spec) => {
            let m = robust_masks(net, &xs, &ys, spec);
            let clean = Vec::<bool>::try_from(&m.clean).unwrap_or_default();
            let pgd = m
                .pgd
                .as_ref()
                .map(|p| Vec::<bool>::try_from(p).unwrap_or_default());
            let cert: Option<Vec<bool>> = m.cert.iter().fold(None, |acc, (_, t)| {
                let v = Vec::<bool>::try_from(t).unwrap_or_default();
                Some(match acc {
                    None => v,
                    Some(a) => a.iter().zip(&v).map(|(p, q)| *p || *q).collect(),
                })
            });
            (0..n as usize)
                .map(|i| {
                    if !clean[i] {
                        PointStatus::Misclassified
                    } else if cert.as_ref().is_some_and(|c| c[i]) {
                        PointStatus::Certified
                    } else if pgd.as_ref().is_some_and(|p| p[i]) {
                        PointStatus::PgdRobust
                    } else {
                        PointStatus::CleanOnly
                    }
                })
                .collect()
        }
        None => {
            let clean = tch::no_grad(|| attack::correct(net, &xs, &ys));
            Vec::<bool>::try_from(&clean)
                .unwrap_or_default()
                .into_iter()
                .map(|c| {
                    if c {
                        PointStatus::CleanOnly
                    } else {
                        PointStatus::Misclassified
                    }
                })
                .collect()
        }
    };
    let pts =
        Vec::<f32>::try_from(xs.to_device(tch::Device::Cpu).reshape([-1])).unwrap_or_default();
    DecisionMap {
        epoch,
        resolution,
        prob: Vec::<f32>::try_from(prob.to_device(tch::Device::Cpu)).unwrap_or_default(),
        points: pts.chunks_exact(2).map(|c| [c[0], c[1]]).collect(),
        labels: Vec::<i64>::try_from(ys.to_device(tch::Device::Cpu)).unwrap_or_default(),
        status,
        eps: spec.map_or(0.0, |s| s.eps),
        norm_l2: spec.is_some_and(|s| s.norm == Norm::L2),
    }
}
