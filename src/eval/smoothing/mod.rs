//! Randomized smoothing (Cohen et al. 2019): the smoothed classifier
//! `g(x) = argmax_c P(f(x + delta) = c)` of a base network `f` and a noise `delta`, its Monte
//! Carlo certificate CERTIFY and its prediction PREDICT.
//!
//! CERTIFY: `n0` noisy copies pick the class `c_A` (the most frequent prediction); `n` fresh
//! copies count it (`n_A`); the exact Clopper-Pearson lower bound `p_A` at level `alpha` holds
//! with probability `1 - alpha`; the smoothed classifier is then constant on the ball of radius
//!   Gaussian N(0, sigma^2 I):            `sigma Phi^-1(p_A)`                (l_2, Cohen et al.)
//!   Laplace, scale `lambda = sigma/sqrt 2`: `-lambda ln(2 (1 - p_A))`     (l_1, Teng et al. 2020)
//!   uniform on `[-lambda, lambda]^d`, `lambda = sigma sqrt 3`: `2 lambda (p_A - 1/2)`
//!                                                                          (l_1, Yang et al. 2020)
//! and CERTIFY abstains when `p_A <= 1/2`. `sigma` is the per-coordinate standard deviation of
//! every noise, so that levels compare at equal variance.
//!
//! Several probes (noise levels): each runs CERTIFY at `alpha / K` (Bonferroni), so that all K
//! statements hold together with probability `1 - alpha`, and a point's certificate is the
//! largest radius among them (the smoothed classifier of that probe; Ettedgui et al. 2022).
//!
//! PREDICT: `n` copies; the top two counts `n_1 >= n_2`; abstain unless the two-sided binomial
//! test of `n_1` out of `n_1 + n_2` against 1/2 rejects at `alpha` (Hung et al. 2019).
//!
//! Noise is drawn on the network's device in batches of `batch` copies, and the class counts
//! stay there (one `bincount` per batch) until every point is done: one transfer at the end.
mod stats;

pub use stats::{
    beta_quantile, binomial_test_half, clopper_pearson_lower, inc_beta, normal_cdf, normal_quantile,
};

use crate::config::{Noise, Norm, RadiusNorm, SmoothingConfig};
use crate::metrics::SmoothingCurve;
use crate::model::Network;
use std::time::Instant;
use tch::{Kind, Tensor};

/// The prediction CERTIFY and PREDICT return when they abstain.
pub const ABSTAIN: i64 = -1;

/// One noise distribution at one level.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    pub noise: Noise,
    /// Per-coordinate standard deviation.
    pub sigma: f64,
}

impl Probe {
    /// The radius certified from the lower bound `p_a` (in [`Noise::radius_norm`]); 0 when
    /// `p_a <= 1/2`.
    pub fn radius(&self, p_a: f64) -> f64 {
        if p_a.is_nan() || p_a <= 0.5 {
            return 0.0;
        }
        let s = self.sigma;
        match self.noise {
            Noise::Gaussian => s * normal_quantile(p_a),
            Noise::Laplace => -(s / std::f64::consts::SQRT_2) * (2.0 * (1.0 - p_a)).ln(),
            Noise::Uniform => 2.0 * s * 3f64.sqrt() * (p_a - 0.5),
        }
    }
}

/// A sample of `noise` at level `sigma` shaped like `x`, on its device.
pub fn noise_like(x: &Tensor, noise: Noise, sigma: f64) -> Tensor {
    match noise {
        Noise::Gaussian => x.randn_like() * sigma,
        Noise::Laplace => {
            // Inverse CDF: u ~ U(-1/2, 1/2), -lambda sgn(u) ln(1 - 2|u|) (the log's argument kept
            // away from 0, where u = -1/2 would give an infinite draw).
            let lambda = sigma / std::f64::consts::SQRT_2;
            let u = x.rand_like() - 0.5;
            let mag = (u.abs() * -2.0 + 1.0).clamp_min(1e-30).log() * (-lambda);
            u.sign() * mag
        }
        Noise::Uniform => (x.rand_like() * 2.0 - 1.0) * (sigma * 3f64.sqrt()),
    }
}

/// The per-class counts of the base network's predictions on `num` noisy copies of the point
/// `x` (`[1, ..]`): `[classes]` int64 on `x`'s device (not read back here).
pub fn class_counts(net: &Network, x: &Tensor, probe: Probe, num: u64, batch: u64) -> Tensor {
    tch::no_grad(|| {
        let classes = net.num_classes;
        let mut counts = Tensor::zeros([classes], (Kind::Int64, x.device()));
        let mut left = num as i64;
        let batch = batch.max(1) as i64;
        while left > 0 {
            let b = batch.min(left);
            let mut shape = x.size();
            shape[0] = b;
            let copies = x.expand(shape.as_slice(), false);
            let noisy = &copies + noise_like(&copies, probe.noise, probe.sigma);
            let pred = net.forward(&noisy).argmax(1, false);
            counts += pred.bincount(None::<Tensor>, classes);
            left -= b;
        }
        counts
    })
}

/// Settings of CERTIFY: the probes and the Monte Carlo budget.
#[derive(Debug, Clone, PartialEq)]
pub struct SmoothParams {
    pub probes: Vec<Probe>,
    pub n0: u64,
    pub n: u64,
    /// Over all probes together (each runs at `alpha / probes`).
    pub alpha: f64,
    pub batch: u64,
}

impl SmoothParams {
    pub fn from_config(c: &SmoothingConfig) -> Self {
        SmoothParams {
            probes: c
                .sigma
                .iter()
                .map(|&sigma| Probe {
                    noise: c.noise,
                    sigma,
                })
                .collect(),
            n0: c.n0,
            n: c.n,
            alpha: c.alpha,
            batch: c.batch,
        }
    }
    /// The norm of the radii (that of the first probe's noise; all probes share it).
    pub fn radius_norm(&self) -> RadiusNorm {
        self.probes
            .first()
            .map_or(RadiusNorm::L2, |p| p.noise.radius_norm())
    }
}

/// CERTIFY's answer for one point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Certificate {
    /// The certified class, or [`ABSTAIN`].
    pub prediction: i64,
    /// The certified radius (0 when abstaining).
    pub radius: f64,
    /// The probe that gave it (index into [`SmoothParams::probes`]); `None` when abstaining.
    pub probe: Option<usize>,
    /// Its Clopper-Pearson lower bound on `p_A`.
    pub p_a: f64,
}

/// The best certificate over the probes from the counts `(c_A, n_A)` of each, at `alpha / K`.
pub fn best_certificate(params: &SmoothParams, per_probe: &[(i64, u64)]) -> Certificate {
    let k = params.probes.len().max(1) as f64;
    let mut best = Certificate {
        prediction: ABSTAIN,
        radius: 0.0,
        probe: None,
        p_a: 0.0,
    };
    for (j, (probe, &(class, n_a))) in params.probes.iter().zip(per_probe).enumerate() {
        let p_a = clopper_pearson_lower(n_a, params.n, params.alpha / k);
        let radius = probe.radius(p_a);
        if p_a > 0.5 && (best.probe.is_none() || radius > best.radius) {
            best = Certificate {
                prediction: class,
                radius,
                probe: Some(j),
                p_a,
            };
        }
    }
    best
}

/// CERTIFY on every point of `x` (`[P, ..]`); `stop(i)` is asked before point `i` and ends the
/// run early (`None`). The counts stay on the device until the last point.
pub fn certify(
    net: &Network,
    x: &Tensor,
    params: &SmoothParams,
    stop: &mut dyn FnMut(usize) -> bool,
) -> Option<Vec<Certificate>> {
    let points = x.size()[0];
    let mut chosen = Vec::new();
    let mut counted = Vec::new();
    for i in 0..points {
        if stop(i as usize) {
            return None;
        }
        let xi = x.narrow(0, i, 1);
        for &probe in &params.probes {
            let selection = class_counts(net, &xi, probe, params.n0, params.batch);
            let c_a = selection.argmax(0, true);
            let estimation = class_counts(net, &xi, probe, params.n, params.batch);
            counted.push(estimation.gather(0, &c_a, false));
            chosen.push(c_a);
        }
    }
    if points == 0 {
        return Some(vec![]);
    }
    let k = params.probes.len();
    let chosen = Vec::<i64>::try_from(Tensor::cat(&chosen, 0)).ok()?;
    let counted = Vec::<i64>::try_from(Tensor::cat(&counted, 0)).ok()?;
    Some(
        (0..points as usize)
            .map(|i| {
                let per_probe: Vec<(i64, u64)> = (0..k)
                    .map(|j| (chosen[i * k + j], counted[i * k + j].max(0) as u64))
                    .collect();
                best_certificate(params, &per_probe)
            })
            .collect(),
    )
}

/// PREDICT on every point of `x`: the top class, or [`ABSTAIN`] when the binomial test of the
/// top two counts does not reject 1/2 at `alpha`.
pub fn predict(
    net: &Network,
    x: &Tensor,
    probe: Probe,
    n: u64,
    alpha: f64,
    batch: u64,
) -> Vec<i64> {
    let points = x.size()[0];
    if points == 0 {
        return vec![];
    }
    let counts: Vec<Tensor> = (0..points)
        .map(|i| class_counts(net, &x.narrow(0, i, 1), probe, n, batch))
        .collect();
    let classes = net.num_classes as usize;
    let counts = Vec::<i64>::try_from(Tensor::stack(&counts, 0).reshape([-1])).unwrap_or_default();
    counts
        .chunks(classes.max(1))
        .map(|c| {
            let mut order: Vec<usize> = (0..c.len()).collect();
            order.sort_by_key(|&j| std::cmp::Reverse(c[j]));
            let n1 = c[order[0]].max(0) as u64;
            let n2 = order.get(1).map_or(0, |&j| c[j].max(0) as u64);
            if binomial_test_half(n1, n1 + n2) > alpha {
                ABSTAIN
            } else {
                order[0] as i64
            }
        })
        .collect()
}

/// The fraction of points that CERTIFY classifies correctly with radius >= `radius`.
pub fn certified_accuracy(certs: &[Certificate], labels: &[i64], radius: f64) -> f64 {
    if certs.is_empty() {
        return 0.0;
    }
    let ok = certs
        .iter()
        .zip(labels)
        .filter(|(c, &y)| c.prediction == y && c.radius >= radius)
        .count();
    ok as f64 / certs.len() as f64
}

/// The radius, in the noise's norm `to`, of the smallest ball of that norm that holds the
/// eval ball of radius `eps` in `norm` on `d` inputs: `||v||_2 <= sqrt(d) ||v||_inf`,
/// `||v||_1 <= sqrt(d) ||v||_2 <= d ||v||_inf`.
pub fn radius_in(to: RadiusNorm, eps: f64, norm: Norm, d: i64) -> f64 {
    let d = d.max(1) as f64;
    match (to, norm) {
        (RadiusNorm::L2, Norm::L2) => eps,
        (RadiusNorm::L2, Norm::Linf) | (RadiusNorm::L1, Norm::L2) => eps * d.sqrt(),
        (RadiusNorm::L1, Norm::Linf) => eps * d,
    }
}

/// Radii of the certified-accuracy curve: 41 steps from 0 to the largest certified radius.
pub fn curve_radii(certs: &[Certificate]) -> Vec<f64> {
    let top = certs.iter().map(|c| c.radius).fold(0.0, f64::max);
    if top <= 0.0 {
        return vec![0.0];
    }
    (0..=40).map(|i| top * i as f64 / 40.0).collect()
}

/// The certified-accuracy curve of a set of certificates.
pub fn curve(
    certs: &[Certificate],
    labels: &[i64],
    params: &SmoothParams,
    secs_per_point: f64,
) -> SmoothingCurve {
    let radii = curve_radii(certs);
    let n = certs.len().max(1) as f64;
    SmoothingCurve {
        cert_acc: radii
            .iter()
            .map(|&r| certified_accuracy(certs, labels, r))
            .collect(),
        radii,
        abstain: certs.iter().filter(|c| c.prediction == ABSTAIN).count() as f64 / n,
        norm: params.radius_norm().name().into(),
        noise: params.probes.first().map_or("", |p| p.noise.name()).into(),
        sigma: params.probes.iter().map(|p| p.sigma).collect(),
        points: certs.len(),
        secs_per_point,
    }
}

/// CERTIFY on the points `x` with labels `y`, timed: the certificates and seconds per point.
pub fn certify_timed(
    net: &Network,
    x: &Tensor,
    params: &SmoothParams,
    stop: &mut dyn FnMut(usize) -> bool,
) -> Option<(Vec<Certificate>, f64)> {
    let started = Instant::now();
    let certs = certify(net, x, params, stop)?;
    let secs = started.elapsed().as_secs_f64() / certs.len().max(1) as f64;
    Some((certs, secs))
}

#[cfg(test)]
mod tests;
