//! Complete verification of small networks: per point a verdict `verified` (a bound proves every
//! margin positive on the ball), `falsified` (a concrete input of the ball that the network
//! misclassifies), `unknown` or `timeout`, from a cascade of ever costlier stages that stops at
//! the first one that decides: the clean input, PGD, IBP, CROWN, alpha-CROWN, then branch and
//! bound on the unstable ReLUs ([`bab`]) with exact LPs at its leaves ([`lp`]).
//!
//! The bounds run in float64 on double-precision copies of the layers (a float32 bound can be
//! positive by rounding alone, see `bounds::certify`); every counterexample is re-checked on
//! the network itself, in its own precision: inside the ball and the box, and misclassified.
mod bab;
mod lp;
#[cfg(test)]
mod tests;

pub use bab::BabSettings;

use crate::attack::{self, AttackLoss, PgdConfig};
use crate::bounds::{certified, margin_lower_of, AlphaSettings, Ball, BoundMethod};
use crate::metrics::{Verdict, VerifyStage, VerifyStats};
use crate::model::{layers_f64, Network};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use tch::{Kind, Tensor};

/// The knobs of a verification.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VerifySettings {
    /// Time budget of one point, seconds (the cascade's batched stages count their share).
    pub timeout_s: f64,
    /// The alpha-CROWN stage.
    pub alpha: AlphaSettings,
    /// The PGD stage (margin loss).
    pub pgd_steps: u32,
    pub pgd_restarts: u32,
    pub bab: BabSettings,
}

impl VerifySettings {
    pub fn with_timeout(timeout_s: f64) -> Self {
        VerifySettings {
            timeout_s,
            alpha: AlphaSettings::default(),
            pgd_steps: 50,
            pgd_restarts: 5,
            bab: BabSettings::default(),
        }
    }
}

/// One point's verdict, as written by `certlab verify --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointVerdict {
    /// Index of the point in the verified set.
    pub index: usize,
    pub label: i64,
    pub verdict: Verdict,
    /// Time spent on this point (its share of the batched stages included).
    pub seconds: f64,
    /// The stage that decided; `null` for unknown and timeout.
    pub decided_by: Option<VerifyStage>,
    /// For a falsified point: the misclassified input, flattened.
    pub counterexample: Option<Vec<f64>>,
}

/// The verdicts of a set of points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub eps: f64,
    pub norm: String,
    pub timeout_s: f64,
    pub points: Vec<PointVerdict>,
    /// Fraction of the points verified.
    pub verified_acc: f64,
    pub falsified: usize,
    /// Points neither verified nor falsified (unknown or timeout).
    pub unknown: usize,
}

impl VerifyReport {
    /// The per-stage counts written to evaluation records.
    pub fn stats(&self) -> VerifyStats {
        let mut s = VerifyStats {
            points: self.points.len() as u64,
            timeout_s: self.timeout_s,
            ..VerifyStats::default()
        };
        for p in &self.points {
            let stage = p.decided_by.map(|d| d.name().to_string());
            match (p.verdict, stage) {
                (Verdict::Verified, Some(st)) => *s.verified_by.entry(st).or_default() += 1,
                (Verdict::Falsified, Some(st)) => *s.falsified_by.entry(st).or_default() += 1,
                (Verdict::Timeout, _) => s.timeout += 1,
                _ => s.unknown += 1,
            }
        }
        s
    }
}

/// A point's state along the cascade.
#[derive(Default)]
struct Decision {
    verdict: Option<(Verdict, Option<VerifyStage>)>,
    counterexample: Option<Tensor>,
    seconds: f64,
}

/// Verifies every point of `x` (`[N, ..]`, labels `y`) on the ball; `progress(done, total)`
/// after each point's branch and bound.
pub fn verify(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    ball: Ball,
    settings: &VerifySettings,
    progress: &mut dyn FnMut(usize, usize),
) -> VerifyReport {
    let n = y.size()[0] as usize;
    let labels = Vec::<i64>::try_from(y.to_kind(Kind::Int64)).unwrap_or_default();
    let mut dec: Vec<Decision> = (0..n).map(|_| Decision::default()).collect();
    cheap_stages(net, x, y, ball, settings, &mut dec);
    let layers = layers_f64(&crate::bounds::walked(net));
    let x64 = x.to_kind(Kind::Double);
    for i in 0..n {
        if dec[i].verdict.is_none() {
            let left = (settings.timeout_s - dec[i].seconds).max(0.0);
            let started = Instant::now();
            let deadline = started + Duration::from_secs_f64(left);
            let (xi, xn) = (x64.narrow(0, i as i64, 1), x.narrow(0, i as i64, 1));
            let out = tch::no_grad(|| {
                bab::branch_and_bound(
                    net,
                    &layers,
                    &xi,
                    &xn,
                    labels[i],
                    ball,
                    deadline,
                    &settings.bab,
                )
            });
            dec[i].seconds += started.elapsed().as_secs_f64();
            dec[i].verdict = Some(match out {
                bab::Outcome::Verified => (Verdict::Verified, Some(VerifyStage::Bab)),
                bab::Outcome::Falsified(cex) => {
                    dec[i].counterexample = Some(cex);
                    (Verdict::Falsified, Some(VerifyStage::Bab))
                }
                bab::Outcome::Unknown => (Verdict::Unknown, None),
                bab::Outcome::Timeout => (Verdict::Timeout, None),
            });
        }
        progress(i + 1, n);
    }
    report(ball, settings.timeout_s, &labels, dec)
}

/// The batched stages: clean, PGD, IBP, CROWN, alpha-CROWN, each on the points still open,
/// its time shared among them.
fn cheap_stages(
    net: &Network,
    x: &Tensor,
    y: &Tensor,
    ball: Ball,
    settings: &VerifySettings,
    dec: &mut [Decision],
) {
    let open = |dec: &[Decision]| -> Vec<i64> {
        (0..dec.len() as i64)
            .filter(|&i| dec[i as usize].verdict.is_none())
            .collect()
    };
    let share = |dec: &mut [Decision], idx: &[i64], started: Instant| {
        let each = started.elapsed().as_secs_f64() / idx.len().max(1) as f64;
        for &i in idx {
            dec[i as usize].seconds += each;
        }
    };
    // Misclassified points, then PGD.
    let idx = open(dec);
    let started = Instant::now();
    let correct = tch::no_grad(|| attack::correct(net, x, y));
    let correct = Vec::<bool>::try_from(correct).unwrap_or_default();
    for &i in &idx {
        if !correct[i as usize] {
            dec[i as usize].verdict = Some((Verdict::Falsified, Some(VerifyStage::Clean)));
            dec[i as usize].counterexample = Some(x.narrow(0, i, 1));
        }
    }
    share(dec, &idx, started);
    let idx = open(dec);
    if !idx.is_empty() && settings.pgd_steps > 0 && ball.eps > 0.0 {
        let started = Instant::now();
        let t = Tensor::from_slice(&idx);
        let (xs, ys) = (x.index_select(0, &t), y.index_select(0, &t));
        let cfg = PgdConfig::evaluation(
            ball.eps,
            ball.norm,
            settings.pgd_steps,
            settings.pgd_restarts,
            AttackLoss::Margin,
        );
        let res = attack::pgd(net, &xs, &ys, &cfg);
        let margins = Vec::<f64>::try_from(res.margin.to_kind(Kind::Double)).unwrap_or_default();
        for (j, &i) in idx.iter().enumerate() {
            if margins[j] < 0.0 {
                let j = j as i64;
                let cand = res.x_adv.narrow(0, j, 1);
                if let Some(cex) =
                    confirm(net, &x.narrow(0, i, 1), &cand, ys.int64_value(&[j]), ball)
                {
                    dec[i as usize].verdict = Some((Verdict::Falsified, Some(VerifyStage::Pgd)));
                    dec[i as usize].counterexample = Some(cex);
                }
            }
        }
        share(dec, &idx, started);
    }
    let layers = layers_f64(&crate::bounds::walked(net));
    for (stage, method) in [
        (VerifyStage::Ibp, BoundMethod::Ibp),
        (VerifyStage::Crown, BoundMethod::Crown),
        (VerifyStage::AlphaCrown, BoundMethod::AlphaCrown),
    ] {
        let idx = open(dec);
        if idx.is_empty() {
            return;
        }
        let started = Instant::now();
        let t = Tensor::from_slice(&idx);
        let (xs, ys) = (
            x.index_select(0, &t).to_kind(Kind::Double),
            y.index_select(0, &t),
        );
        let lower = tch::no_grad(|| {
            margin_lower_of(
                &layers,
                net.num_classes,
                &xs,
                &ys,
                ball,
                method,
                settings.alpha,
            )
        });
        let ok = Vec::<bool>::try_from(certified(&lower, &ys)).unwrap_or_default();
        for (j, &i) in idx.iter().enumerate() {
            if ok[j] {
                dec[i as usize].verdict = Some((Verdict::Verified, Some(stage)));
            }
        }
        share(dec, &idx, started);
    }
}

/// `cand` (`[1, ..]`, any precision) as a counterexample for the point `x` (`[1, ..]`, the
/// network's precision) of label `y`: projected onto the ball and the box in the network's
/// precision, then kept only if it is inside them and the network misclassifies it.
fn confirm(net: &Network, x: &Tensor, cand: &Tensor, y: i64, ball: Ball) -> Option<Tensor> {
    tch::no_grad(|| {
        let c = attack::project(&cand.to_kind(x.kind()), x, ball.eps, ball.norm);
        if attack::feasibility_violation(&c, x, ball.eps, ball.norm).is_some() {
            return None;
        }
        let pred = net.forward(&c).argmax(1, false).int64_value(&[0]);
        (pred != y).then_some(c)
    })
}

fn report(ball: Ball, timeout_s: f64, labels: &[i64], dec: Vec<Decision>) -> VerifyReport {
    let points: Vec<PointVerdict> = dec
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let (verdict, decided_by) = d.verdict.unwrap_or((Verdict::Unknown, None));
            PointVerdict {
                index: i,
                label: labels[i],
                verdict,
                seconds: d.seconds,
                decided_by,
                counterexample: d.counterexample.map(|c| {
                    Vec::<f64>::try_from(c.flatten(0, -1).to_kind(Kind::Double)).unwrap_or_default()
                }),
            }
        })
        .collect();
    let count = |v: Verdict| points.iter().filter(|p| p.verdict == v).count();
    let n = points.len().max(1) as f64;
    VerifyReport {
        eps: ball.eps,
        norm: ball.norm.name().to_string(),
        timeout_s,
        verified_acc: count(Verdict::Verified) as f64 / n,
        falsified: count(Verdict::Falsified),
        unknown: count(Verdict::Unknown) + count(Verdict::Timeout),
        points,
    }
}
