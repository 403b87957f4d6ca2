//! Randomized smoothing checked against closed forms: a linear classifier's smoothed version is
//! itself, with true radius `|margin| / ||w||`; a sampled attack on a smoothed MLP never
//! changes its prediction inside a certified radius.
use super::*;
use crate::config::Noise;
use crate::model::LayerSpec;
use tch::{Device, Kind, Tensor};

const F32: (Kind, Device) = (Kind::Float, Device::Cpu);

fn linear_net(d: i64, seed: i64) -> Network {
    tch::manual_seed(seed);
    let spec = LayerSpec::Linear {
        in_features: d,
        out_features: 2,
    };
    Network::new(vec![spec], &[d], 2, Device::Cpu).unwrap()
}

/// `(w_0 - w_1, b_0 - b_1)` of a two-class linear network.
fn linear_difference(net: &Network) -> (Tensor, f64) {
    let crate::model::Layer::Linear { weight, bias } = &net.layers[0] else {
        panic!("linear layer expected");
    };
    let w = (weight.get(0) - weight.get(1)).detach();
    let b = (bias.get(0) - bias.get(1)).double_value(&[]);
    (w, b)
}

/// Points at signed distances `t sigma` from the decision hyperplane, and their true radii.
fn points_at_distances(net: &Network, d: i64, sigma: f64, ts: &[f64]) -> (Tensor, Vec<f64>) {
    let (w, b) = linear_difference(net);
    let norm = w.norm().double_value(&[]);
    let unit = &w / norm;
    let base = Tensor::rand([d], F32);
    // Move `base` onto the hyperplane w.x + b = 0, then `t sigma` along the normal.
    let margin = (&w * &base).sum(Kind::Double).double_value(&[]) + b;
    let on_plane = &base - &unit * (margin / norm);
    let xs: Vec<Tensor> = ts.iter().map(|t| &on_plane + &unit * (t * sigma)).collect();
    (
        Tensor::stack(&xs, 0),
        ts.iter().map(|t| t.abs() * sigma).collect(),
    )
}

fn params(probes: &[Probe], n: u64, alpha: f64) -> SmoothParams {
    SmoothParams {
        probes: probes.to_vec(),
        n0: 100,
        n,
        alpha,
        batch: 20_000,
    }
}

#[test]
fn linear_classifier_certified_radius_is_below_the_true_one_and_approaches_it() {
    let d = 6;
    let net = linear_net(d, 11);
    let sigma = 0.5;
    let ts = [0.5, -0.8, 1.0, -1.5, 2.0];
    let (x, truth) = points_at_distances(&net, d, sigma, &ts);
    let labels: Vec<i64> = ts.iter().map(|&t| if t > 0.0 { 0 } else { 1 }).collect();
    let gauss = Probe {
        noise: Noise::Gaussian,
        sigma,
    };
    tch::manual_seed(5);
    // Soundness at a small alpha: the certificate is wrong with probability <= 1e-6 per point
    // (the tests share libtorch's generator, so the draws differ from run to run).
    let mut gaps = vec![];
    for n in [1_000u64, 100_000] {
        let certs = certify(&net, &x, &params(&[gauss], n, 1e-6), &mut |_| false).unwrap();
        let mut g = vec![];
        for ((c, &r), &y) in certs.iter().zip(&truth).zip(&labels) {
            // Near the boundary n = 1000 may not be enough to certify.
            assert!(c.prediction == y || c.prediction == ABSTAIN, "n {n}: {c:?}");
            assert!(c.radius <= r, "n {n}: certified {} > true {r}", c.radius);
            g.push(r - c.radius);
        }
        gaps.push(g);
    }
    for (i, (small, big)) in gaps[0].iter().zip(&gaps[1]).enumerate() {
        assert!(
            big < small,
            "point {i}: gap {big} at n 1e5 vs {small} at 1e3"
        );
        // The Clopper-Pearson bound at alpha 1e-6 is about 4.75 standard errors below p_A:
        // at most 0.05 sigma in radius over these distances.
        assert!(*big < 0.1 * sigma, "point {i}: gap {big} at n 1e5");
    }
}

#[test]
fn several_probes_split_alpha_and_keep_the_best_radius() {
    let probes = [
        Probe {
            noise: Noise::Gaussian,
            sigma: 0.25,
        },
        Probe {
            noise: Noise::Gaussian,
            sigma: 1.0,
        },
    ];
    let p = params(&probes, 1000, 0.01);
    // Probe 0 is sure of class 2, probe 1 less so but with a larger sigma.
    let c = best_certificate(&p, &[(2, 990), (2, 900)]);
    let r0 = 0.25 * normal_quantile(clopper_pearson_lower(990, 1000, 0.005));
    let r1 = 1.0 * normal_quantile(clopper_pearson_lower(900, 1000, 0.005));
    assert!(r1 > r0);
    assert_eq!((c.prediction, c.probe), (2, Some(1)));
    assert!((c.radius - r1).abs() < 1e-12);
    // Bonferroni makes each probe's bound lower than it would be alone.
    let alone = best_certificate(&params(&probes[1..], 1000, 0.01), &[(2, 900)]);
    assert!(alone.radius > c.radius);
    // Abstains when no probe's bound exceeds 1/2.
    let none = best_certificate(&p, &[(0, 510), (1, 400)]);
    assert_eq!(
        (none.prediction, none.radius, none.probe),
        (ABSTAIN, 0.0, None)
    );
}

#[test]
fn l1_radii_follow_the_closed_forms() {
    let s: f64 = 0.5;
    let lap = Probe {
        noise: Noise::Laplace,
        sigma: s,
    };
    let uni = Probe {
        noise: Noise::Uniform,
        sigma: s,
    };
    for p in [0.6, 0.9, 0.999] {
        let lambda = s / 2f64.sqrt();
        assert!((lap.radius(p) - lambda * (1.0 / (2.0 * (1.0 - p))).ln()).abs() < 1e-12);
        let half_width = s * 3f64.sqrt();
        assert!((uni.radius(p) - 2.0 * half_width * (p - 0.5)).abs() < 1e-12);
    }
    for probe in [lap, uni] {
        assert_eq!(probe.radius(0.5), 0.0);
        assert_eq!(probe.radius(0.2), 0.0);
    }
}

#[test]
fn noise_samples_have_the_stated_law() {
    tch::manual_seed(1);
    let x = Tensor::zeros([400_000], F32);
    let sigma = 0.7;
    for noise in Noise::ALL {
        let z = noise_like(&x, noise, sigma).to_kind(Kind::Double);
        let std = z.std(true).double_value(&[]);
        assert!(
            (std / sigma - 1.0).abs() < 0.01,
            "{}: std {std}",
            noise.name()
        );
        let mean_abs = z.abs().mean(Kind::Double).double_value(&[]);
        let max_abs = z.abs().max().double_value(&[]);
        // E|z| = sigma sqrt(2/pi), lambda (Laplace), lambda / 2 (uniform).
        let expect = match noise {
            Noise::Gaussian => sigma * (2.0 / std::f64::consts::PI).sqrt(),
            Noise::Laplace => sigma / 2f64.sqrt(),
            Noise::Uniform => sigma * 3f64.sqrt() / 2.0,
        };
        assert!((mean_abs / expect - 1.0).abs() < 0.01, "{}", noise.name());
        if noise == Noise::Uniform {
            assert!(max_abs <= sigma * 3f64.sqrt() * (1.0 + 1e-6));
        }
    }
}

#[test]
fn predict_is_sure_far_from_the_boundary_and_abstains_on_it() {
    let d = 4;
    let net = linear_net(d, 3);
    let sigma = 0.3;
    let (x, _) = points_at_distances(&net, d, sigma, &[3.0, -3.0, 0.0]);
    let probe = Probe {
        noise: Noise::Gaussian,
        sigma,
    };
    tch::manual_seed(2);
    let pred = predict(&net, &x, probe, 2000, 0.001, 1000);
    assert_eq!(pred, vec![0, 1, ABSTAIN]);
}

/// An attack on the smoothed classifier: PGD on the expected softmax of the certified class
/// (expectation over `draws` noise samples, Athalye et al. 2018) in the l_2 ball of `radius`.
fn smoothed_pgd(net: &Network, x: &Tensor, class: i64, sigma: f64, radius: f64) -> Tensor {
    let draws = 128;
    let steps = 20;
    let mut delta = Tensor::zeros_like(x);
    for _ in 0..steps {
        let d = delta.detach().set_requires_grad(true);
        let copies = (x + &d).expand([draws, x.size()[1]], false);
        let noisy = &copies + copies.randn_like() * sigma;
        let prob = net
            .forward(&noisy)
            .softmax(-1, Kind::Float)
            .select(1, class)
            .mean(Kind::Float);
        let grad = Tensor::run_backward(&[prob], &[&d], false, false).remove(0);
        let step = &grad / (grad.norm().double_value(&[]) + 1e-12) * (2.5 * radius / steps as f64);
        let moved = d.detach() - step;
        let norm = moved.norm().double_value(&[]);
        delta = if norm > radius {
            moved * (radius / norm)
        } else {
            moved
        };
    }
    x + delta
}

#[test]
fn attacks_on_the_smoothed_classifier_never_succeed_inside_a_certified_radius() {
    tch::manual_seed(21);
    let specs = vec![
        LayerSpec::Linear {
            in_features: 2,
            out_features: 24,
        },
        LayerSpec::Relu,
        LayerSpec::Linear {
            in_features: 24,
            out_features: 3,
        },
    ];
    let net = Network::new(specs, &[2], 3, Device::Cpu).unwrap();
    let sigma = 0.25;
    let probe = Probe {
        noise: Noise::Gaussian,
        sigma,
    };
    let x = Tensor::rand([12, 2], F32) * 4.0 - 2.0;
    let certs = certify(&net, &x, &params(&[probe], 4000, 0.001), &mut |_| false).unwrap();
    let mut checked = 0;
    let mut flipped_outside = 0;
    for (i, c) in certs.iter().enumerate() {
        if c.prediction == ABSTAIN {
            continue;
        }
        let xi = x.narrow(0, i as i64, 1);
        // Inside: the gradient attack and random points of the sphere at 0.95 R.
        let mut inside = vec![smoothed_pgd(
            &net,
            &xi,
            c.prediction,
            sigma,
            0.95 * c.radius,
        )];
        for _ in 0..4 {
            let u = Tensor::randn([1, 2], F32);
            inside.push(&xi + &u / u.norm() * (0.95 * c.radius));
        }
        for xa in inside {
            let p = predict(&net, &xa, probe, 4000, 0.001, 4000)[0];
            assert!(
                p == c.prediction || p == ABSTAIN,
                "point {i}: certified {} at radius {}, attack inside gives {p}",
                c.prediction,
                c.radius
            );
            checked += 1;
        }
        // Outside (radius + 1.5), the same attack does change the prediction somewhere: the
        // check above could fail.
        let xa = smoothed_pgd(&net, &xi, c.prediction, sigma, c.radius + 1.5);
        let p = predict(&net, &xa, probe, 4000, 0.001, 4000)[0];
        flipped_outside += usize::from(p != c.prediction && p != ABSTAIN);
    }
    assert!(checked >= 20, "only {checked} attacks on certified points");
    assert!(
        flipped_outside > 0,
        "the attack never succeeds, even outside"
    );
}

#[test]
fn eval_balls_convert_to_the_noise_norm() {
    assert_eq!(radius_in(RadiusNorm::L2, 0.5, Norm::L2, 784), 0.5);
    assert!((radius_in(RadiusNorm::L2, 0.1, Norm::Linf, 784) - 2.8).abs() < 1e-12);
    assert!((radius_in(RadiusNorm::L1, 0.1, Norm::L2, 784) - 2.8).abs() < 1e-12);
    assert!((radius_in(RadiusNorm::L1, 0.1, Norm::Linf, 784) - 78.4).abs() < 1e-9);
    let certs = [
        Certificate {
            prediction: 1,
            radius: 0.5,
            probe: Some(0),
            p_a: 0.9,
        },
        Certificate {
            prediction: 0,
            radius: 1.0,
            probe: Some(0),
            p_a: 0.99,
        },
        Certificate {
            prediction: ABSTAIN,
            radius: 0.0,
            probe: None,
            p_a: 0.3,
        },
    ];
    let labels = [1, 1, 0];
    assert_eq!(certified_accuracy(&certs, &labels, 0.0), 1.0 / 3.0);
    assert_eq!(certified_accuracy(&certs, &labels, 0.6), 0.0);
    let p = params(
        &[Probe {
            noise: Noise::Gaussian,
            sigma: 0.5,
        }],
        100,
        0.001,
    );
    let c = curve(&certs, &labels, &p, 0.1);
    assert_eq!(c.radii.len(), 41);
    assert_eq!(*c.radii.last().unwrap(), 1.0);
    assert!((c.abstain - 1.0 / 3.0).abs() < 1e-12);
    assert!(c.cert_acc.windows(2).all(|w| w[0] >= w[1]));
}

#[test]
fn l1_radii_are_exact_for_a_threshold_in_one_dimension() {
    // f(x) = [x > x0 - r] at x0: the half-line is the worst case of both l_1 certificates, so
    // the radius from the exact p_A = P(delta > -r) is r itself. p_A from each noise's CDF
    // (Laplace of scale lambda = sigma / sqrt 2, uniform on [-lambda, lambda] with
    // lambda = sigma sqrt 3), and from draws of the sampler (which ties the sampler's
    // parameterisation to the radius formula).
    let sigma: f64 = 0.5;
    tch::manual_seed(8);
    let draws = 200_000;
    for noise in [Noise::Laplace, Noise::Uniform] {
        let probe = Probe { noise, sigma };
        let delta = noise_like(&Tensor::zeros([draws, 1], F32), noise, sigma);
        for r in [0.05, 0.2, 0.4] {
            let (p, slope) = match noise {
                Noise::Laplace => {
                    let lambda = sigma / 2f64.sqrt();
                    let p = 1.0 - 0.5 * (-r / lambda).exp();
                    (p, lambda / (1.0 - p))
                }
                _ => {
                    let lambda = sigma * 3f64.sqrt();
                    ((lambda + r) / (2.0 * lambda), 2.0 * lambda)
                }
            };
            assert!((probe.radius(p) - r).abs() < 1e-12, "{noise:?} {r}");
            let sampled = delta.gt(-r).to_kind(Kind::Double).mean(Kind::Double);
            let p_hat = sampled.double_value(&[]);
            let tol = 5.0 * slope * (p * (1.0 - p) / draws as f64).sqrt();
            let got = probe.radius(p_hat);
            assert!((got - r).abs() < tol, "{noise:?} r {r}: {got} (tol {tol})");
        }
    }
}
