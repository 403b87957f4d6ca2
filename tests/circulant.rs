//! Diagonal-circulant networks (Araujo et al. 2019) through the rest of the engine: the bounds
//! contain every sampled logit, PGD stays in the ball, the Lipschitz estimators order as they
//! must, and the exact norm of a square circulant layer with unit diagonal is `max |FFT(c)|`.
use certlab::attack::{self, AttackLoss, PgdConfig};
use certlab::bounds::{logit_bounds, Ball, BoundMethod};
use certlab::config::{Arch, Estimator, ModelConfig, Norm};
use certlab::lipschitz::{self, Settings};
use certlab::model::{Layer, Network};
use tch::{Device, Kind, Tensor};

fn circulant_net(seed: i64, input: &[i64], hidden: &[i64]) -> Network {
    tch::manual_seed(seed);
    let cfg = ModelConfig {
        arch: Arch::Circulant,
        hidden: hidden.to_vec(),
        normalize: false,
    };
    Network::from_config(&cfg, input, 3, None, Device::Cpu).unwrap()
}

#[test]
fn bounds_of_a_circulant_network_hold_on_sampled_points() {
    let net = circulant_net(3, &[6], &[9, 5]);
    let f32 = (Kind::Float, Device::Cpu);
    let x = Tensor::rand([4, 6], f32) * 0.8 + 0.1;
    for (eps, norm) in [(0.05, Norm::Linf), (0.2, Norm::L2)] {
        let ball = Ball { eps, norm };
        for method in BoundMethod::ALL {
            let (lo, hi) = logit_bounds(&net, &x, ball, method);
            for _ in 0..200 {
                let d = Tensor::rand_like(&x) * 2.0 - 1.0;
                let d = match norm {
                    Norm::Linf => d * eps,
                    Norm::L2 => {
                        let n = d.norm_scalaropt_dim(2.0, [1i64].as_slice(), true);
                        d / n * eps * Tensor::rand([4, 1], f32)
                    }
                };
                let z = net.forward(&(&x + d).clamp(0.0, 1.0));
                let slack = 1e-4;
                let below = (&lo - &z).max().double_value(&[]);
                let above = (&z - &hi).max().double_value(&[]);
                assert!(below < slack && above < slack, "{:?} {norm:?}", method);
            }
        }
    }
    // PGD on it stays in the ball and does not beat the bound.
    let y = Tensor::from_slice(&[0i64, 1, 2, 0]);
    let cfg = PgdConfig::evaluation(0.05, Norm::Linf, 10, 1, AttackLoss::CrossEntropy);
    let adv = attack::pgd(&net, &x, &y, &cfg);
    assert!(attack::feasibility_violation(&adv.x_adv, &x, 0.05, Norm::Linf).is_none());
}

#[test]
fn lipschitz_estimators_see_the_explicit_matrix() {
    let net = circulant_net(5, &[1, 4, 4], &[20, 12]);
    let r = lipschitz::estimate(
        &net,
        &[
            Estimator::Power,
            Estimator::Exact,
            Estimator::Gram,
            Estimator::Toeplitz,
        ],
        None,
        &Settings::default(),
    )
    .unwrap();
    assert_eq!(r.layers.len(), 3, "{:?}", r.layers);
    for l in &r.layers {
        assert_eq!(l.kind, "circulant");
        let v = &l.values;
        assert!(v["power"] <= v["exact"] * (1.0 + 1e-6));
        assert!(v["exact"] <= v["gram"] * (1.0 + 1e-9));
        assert_eq!(v["exact"], v["toeplitz"]);
    }
    // A square layer with unit diagonal is circulant: its norm is the largest |FFT(c)|.
    let Layer::Circulant { circ, .. } = &net.layers[3] else {
        panic!("layer 3 is {}", net.layers[3].kind_name());
    };
    let c = circ.detach().to_kind(Kind::Double);
    let fft_max = c
        .fft_fft(None, -1, "backward")
        .abs()
        .max()
        .double_value(&[]);
    let n = c.size()[0];
    let square = certlab::model::dc_dense(&c.ones_like(), &c, n, n);
    let svd = lipschitz::exact_dense(&square);
    assert!((svd - fft_max).abs() < 1e-9 * fft_max, "{svd} vs {fft_max}");
}
