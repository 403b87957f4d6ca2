//! The statistics of randomized smoothing, in double precision and without dependencies: the
//! exact Clopper-Pearson lower confidence bound (a beta quantile, found by bisection on the
//! regularized incomplete beta function), the two-sided binomial test of PREDICT, and the
//! standard normal CDF and quantile of the Gaussian radius.
//!
//! `I_x(a, b)` is evaluated by its continued fraction (modified Lentz), `Q(a, x)` (for `erfc`)
//! by its series or continued fraction, `ln Gamma` by Lanczos (g = 7, 9 terms): each to about
//! 1e-14 relative, far below the resolution a confidence bound needs.

/// `ln Gamma(x)` for `x > 0` (Lanczos approximation, reflection below 1/2).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Gamma(x) Gamma(1 - x) = pi / sin(pi x).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The continued fraction of the incomplete beta function (modified Lentz's method); converges
/// fast for `x < (a + 1) / (a + b + 2)`.
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..100_000 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-16 {
            break;
        }
    }
    h
}

/// The regularized incomplete beta function `I_x(a, b)` (`a, b > 0`, `x` in [0, 1]): the CDF of
/// Beta(a, b) at `x`.
pub fn inc_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (-x).ln_1p();
    let front = ln_front.exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_cf(a, b, x) / a
    } else {
        1.0 - front * beta_cf(b, a, 1.0 - x) / b
    }
}

/// The `q`-quantile of Beta(a, b): the `x` with `I_x(a, b) = q`, by bisection (`I_x` increases
/// in `x`) to the resolution of a double.
pub fn beta_quantile(q: f64, a: f64, b: f64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if inc_beta(a, b, mid) < q {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    // `lo` has `I_lo(a, b) < q`: the side that keeps a lower confidence bound conservative.
    lo
}

/// The exact one-sided Clopper-Pearson lower confidence bound at level `alpha` on a binomial
/// proportion from `k` successes in `n` trials: the `p` with `P(Bin(n, p) >= k) = alpha`, i.e.
/// the `alpha`-quantile of Beta(k, n - k + 1); 0 when `k = 0`. It is
/// `proportion_confint(k, n, alpha = 2 alpha, method = "beta")[0]` of Cohen et al. (2019).
pub fn clopper_pearson_lower(k: u64, n: u64, alpha: f64) -> f64 {
    if k == 0 || n == 0 {
        return 0.0;
    }
    let k = k.min(n);
    beta_quantile(alpha, k as f64, (n - k) as f64 + 1.0)
}

/// `P(Bin(n, 1/2) >= m)`.
fn half_binomial_upper_tail(m: u64, n: u64) -> f64 {
    if m == 0 {
        1.0
    } else if m > n {
        0.0
    } else {
        // P(Bin(n, p) >= m) = I_p(m, n - m + 1).
        inc_beta(m as f64, (n - m) as f64 + 1.0, 0.5)
    }
}

/// The two-sided p-value of the binomial test of `k` successes in `n` trials against
/// proportion 1/2 (scipy's `binom_test(k, n, 0.5)`): by symmetry, twice the tail beyond
/// `max(k, n - k)`, at most 1.
pub fn binomial_test_half(k: u64, n: u64) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let m = k.max(n - k.min(n));
    (2.0 * half_binomial_upper_tail(m, n)).min(1.0)
}

/// The regularized upper incomplete gamma function `Q(a, x)`, by its series (`x < a + 1`) or
/// its continued fraction.
fn gamma_q(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let ln_front = -x + a * x.ln() - ln_gamma(a);
    if x < a + 1.0 {
        let (mut ap, mut sum, mut del) = (a, 1.0 / a, 1.0 / a);
        for _ in 0..10_000 {
            ap += 1.0;
            del *= x / ap;
            sum += del;
            if del.abs() < sum.abs() * 1e-17 {
                break;
            }
        }
        1.0 - sum * ln_front.exp()
    } else {
        const TINY: f64 = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / TINY;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..10_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            d = if d.abs() < TINY { TINY } else { d };
            c = b + an / c;
            c = if c.abs() < TINY { TINY } else { c };
            d = 1.0 / d;
            let del = d * c;
            h *= del;
            if (del - 1.0).abs() < 1e-16 {
                break;
            }
        }
        ln_front.exp() * h
    }
}

/// The complementary error function, accurate in the tails (`erfc(z) = Q(1/2, z^2)`, z >= 0).
pub fn erfc(z: f64) -> f64 {
    if z >= 0.0 {
        gamma_q(0.5, z * z)
    } else {
        2.0 - gamma_q(0.5, z * z)
    }
}

/// The standard normal CDF `Phi(x) = erfc(-x / sqrt 2) / 2`.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// The standard normal quantile `Phi^{-1}(p)`: Acklam's rational approximation refined by two
/// Halley steps on `Phi`. `p > 1/2` is reduced to `1 - p` (exact in floating point there), so
/// the tail values near 1 that certificates need keep full precision.
pub fn normal_quantile(p: f64) -> f64 {
    if p.is_nan() || p <= 0.0 {
        return if p == 0.0 {
            f64::NEG_INFINITY
        } else {
            f64::NAN
        };
    }
    if p >= 1.0 {
        return if p == 1.0 { f64::INFINITY } else { f64::NAN };
    }
    if p > 0.5 {
        return -normal_quantile(1.0 - p);
    }
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let mut x = if p < 0.02425 {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    };
    for _ in 0..2 {
        let e = normal_cdf(x) - p;
        let u = e * (2.0 * std::f64::consts::PI).sqrt() * (0.5 * x * x).exp();
        x -= u / (1.0 + 0.5 * x * u);
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ln C(n, j)` as a sum of positive logarithms `ln((n - m + i) / i)`, `m = min(j, n - j)`:
    /// independent of `ln_gamma`, with a small relative error.
    fn ln_choose(n: u64, j: u64) -> f64 {
        let m = j.min(n - j);
        (1..=m)
            .map(|i| (((n - m + i) as f64) / i as f64).ln())
            .sum()
    }

    fn pmf(j: u64, n: u64, p: f64) -> f64 {
        (ln_choose(n, j) + j as f64 * p.ln() + (n - j) as f64 * (-p).ln_1p()).exp()
    }

    /// The binomial upper tail `P(Bin(n, p) >= k)` by brute force, independent of the incomplete
    /// beta function.
    fn brute_upper_tail(k: u64, n: u64, p: f64) -> f64 {
        (k..=n).map(|j| pmf(j, n, p)).sum()
    }

    #[test]
    fn ln_gamma_matches_factorials() {
        let mut fact = 1.0f64;
        for n in 1..30u32 {
            fact *= n as f64;
            let rel = (ln_gamma(n as f64 + 1.0) - fact.ln()) / fact.ln().max(1.0);
            assert!(rel.abs() < 1e-13, "n {n}: {}", ln_gamma(n as f64 + 1.0));
        }
        // Gamma(1/2) = sqrt(pi).
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-13);
    }

    #[test]
    fn clopper_pearson_has_the_closed_forms_at_the_ends() {
        for &(n, alpha) in &[(10u64, 0.001), (100, 0.05), (10_000, 0.001), (1, 0.1)] {
            assert_eq!(clopper_pearson_lower(0, n, alpha), 0.0);
            // k = n: P(Bin(n, p) >= n) = p^n = alpha.
            let all = clopper_pearson_lower(n, n, alpha);
            let expect = alpha.powf(1.0 / n as f64);
            assert!((all - expect).abs() < 1e-12, "n {n}: {all} vs {expect}");
            // k = 1: 1 - (1 - p)^n = alpha.
            let one = clopper_pearson_lower(1, n, alpha);
            let expect = 1.0 - (1.0 - alpha).powf(1.0 / n as f64);
            assert!((one - expect).abs() < 1e-12, "n {n}: {one} vs {expect}");
        }
    }

    #[test]
    fn clopper_pearson_solves_the_brute_force_binomial_tail() {
        for &(k, n, alpha) in &[
            (7u64, 20u64, 0.05),
            (95, 100, 0.001),
            (500, 1000, 0.01),
            (990, 1000, 0.001),
            (3, 1000, 0.1),
            (9_990, 10_000, 0.001),
        ] {
            let p = clopper_pearson_lower(k, n, alpha);
            let tail = brute_upper_tail(k, n, p);
            assert!(
                (tail - alpha).abs() < 1e-9 * alpha.max(1e-3),
                "{k}/{n}: tail {tail}"
            );
            // Conservative side: at p the tail is at most alpha, and a bit above p it exceeds it.
            assert!(tail <= alpha * (1.0 + 1e-9));
            assert!(brute_upper_tail(k, n, p * (1.0 + 1e-6)) > alpha);
            assert!(p < k as f64 / n as f64);
        }
    }

    #[test]
    fn binomial_test_matches_the_brute_force_two_sided_p_value() {
        for &(k, n) in &[
            (10u64, 10u64),
            (8, 10),
            (5, 10),
            (60, 100),
            (30, 100),
            (0, 7),
        ] {
            // scipy: the sum of the pmf over outcomes no more likely than k.
            let pk = pmf(k, n, 0.5);
            let brute: f64 = (0..=n)
                .map(|j| pmf(j, n, 0.5))
                .filter(|&q| q <= pk * (1.0 + 1e-9))
                .sum();
            let p = binomial_test_half(k, n);
            assert!(
                (p - brute.min(1.0)).abs() < 1e-10,
                "{k}/{n}: {p} vs {brute}"
            );
        }
    }

    #[test]
    fn normal_quantile_inverts_the_cdf_and_matches_known_values() {
        let known = [
            (0.975, 1.959_963_984_540_054),
            (0.5, 0.0),
            (0.841_344_746_068_542_9, 1.0),
            (0.001, -3.090_232_306_167_813_5),
            (1e-10, -6.361_340_902_404_056),
        ];
        for (p, x) in known {
            let q = normal_quantile(p);
            assert!((q - x).abs() < 1e-9, "p {p}: {q} vs {x}");
        }
        // Symmetry, exact in floating point for p > 1/2.
        assert_eq!(normal_quantile(1.0 - 0.25), -normal_quantile(0.25));
        for i in 1..200 {
            let p = i as f64 / 200.0;
            assert!((normal_cdf(normal_quantile(p)) - p).abs() < 1e-14, "p {p}");
        }
        // erfc against its closed values: erfc(0) = 1, erfc(1) = 0.157299207050285...
        assert!((erfc(0.0) - 1.0).abs() < 1e-15);
        assert!((erfc(1.0) - 0.157_299_207_050_285_13).abs() < 1e-15);
        assert!((erfc(-1.0) - 1.842_700_792_949_714_9).abs() < 1e-15);
    }
}
