//! The decision regions of a 2-D model and the status of each test point, for the 2-D view.
use super::{robust_masks, RobustSpec};
use crate::attack;
use crate::config::Norm;
use crate::metrics::{DecisionMap, PointStatus};
use crate::model::Network;
use tch::{Kind, Tensor};

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
