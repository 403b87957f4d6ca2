//! Maths tests of the bounds against independent computations: sampled and PGD points, the
//! forward pass at eps 0, autograd Jacobians where the network is affine on the ball, a fine
//! grid on a 2-D input, and Proposition 1 of Zhu et al. 2020.
use super::*;
use crate::attack::{self, AttackLoss, PgdConfig};
use crate::model::LayerSpec;
use tch::Device;

thread_local! {
    /// Forces the dense backward pass where patches would apply (to compare the two).
    pub(crate) static DENSE_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Test hook: how many linear-relaxation passes (`Relaxer`s) were built on this thread,
    /// so that a test can prove a loss ran none.
    pub(crate) static RELAXERS_BUILT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

const LINEAR_METHODS: [BoundMethod; 3] = [
    BoundMethod::CrownIbp,
    BoundMethod::Fastlin,
    BoundMethod::Crown,
];

pub(crate) fn lin(i: i64, o: i64) -> LayerSpec {
    LayerSpec::Linear {
        in_features: i,
        out_features: o,
    }
}

pub(crate) fn conv(i: i64, o: i64, k: i64, s: i64, p: i64) -> LayerSpec {
    LayerSpec::Conv2d {
        in_channels: i,
        out_channels: o,
        kernel: k,
        stride: s,
        padding: p,
    }
}

/// A random network in double precision.
pub(crate) fn net64(specs: Vec<LayerSpec>, input: &[i64], classes: i64, seed: i64) -> Network {
    tch::manual_seed(seed);
    let mut net = Network::new(specs, input, classes, Device::Cpu).unwrap();
    net.vs.double();
    net
}

pub(crate) fn mlp64(d: i64, hidden: &[i64], classes: i64, seed: i64) -> Network {
    let mut specs = Vec::new();
    let mut w = d;
    for &h in hidden {
        specs.push(lin(w, h));
        specs.push(LayerSpec::Relu);
        w = h;
    }
    specs.push(lin(w, classes));
    net64(specs, &[d], classes, seed)
}

/// Normalize, a stride-2 conv whose transpose needs output padding (7 -> 3), a padded conv,
/// flatten and two dense layers: every layer kind the bounds walk.
pub(crate) fn conv64(seed: i64) -> Network {
    let specs = vec![
        LayerSpec::Normalize {
            mean: vec![0.4],
            std: vec![0.7],
        },
        conv(1, 4, 4, 2, 1),
        LayerSpec::Relu,
        conv(4, 5, 3, 1, 1),
        LayerSpec::Relu,
        LayerSpec::Flatten,
        lin(45, 12),
        LayerSpec::Relu,
        lin(12, 3),
    ];
    net64(specs, &[1, 7, 7], 3, seed)
}

pub(crate) fn opts() -> (Kind, Device) {
    (Kind::Double, Device::Cpu)
}

/// `n` random points of the ball clipped to the box around each example, `[B * n, ..]`.
pub(crate) fn samples(x: &Tensor, ball: Ball, n: i64, corners: bool) -> Tensor {
    let b = x.size()[0];
    let mut shape = vec![b, n];
    shape.extend_from_slice(&x.size()[1..]);
    let x0 = x.unsqueeze(1);
    let d: i64 = x.size()[1..].iter().product();
    let delta = match (ball.norm, corners) {
        (Norm::Linf, false) => (Tensor::rand(shape.as_slice(), opts()) * 2.0 - 1.0) * ball.eps,
        (Norm::Linf, true) => {
            Tensor::rand(shape.as_slice(), opts())
                .gt(0.5)
                .to_kind(Kind::Double)
                * (2.0 * ball.eps)
                - ball.eps
        }
        (Norm::L2, _) => {
            let g = Tensor::randn(shape.as_slice(), opts());
            let norm = g
                .flatten(2, -1)
                .square()
                .sum_dim_intlist([2i64].as_slice(), false, None::<Kind>)
                .sqrt();
            let mut view = vec![b, n];
            view.extend(std::iter::repeat(1).take(x.dim() - 1));
            let radius = if corners {
                Tensor::ones([b, n], opts())
            } else {
                Tensor::rand([b, n], opts()).pow_tensor_scalar(1.0 / d as f64)
            };
            g / norm.reshape(view.as_slice()) * radius.reshape(view.as_slice()) * ball.eps
        }
    };
    (x0 + delta).clamp(0.0, 1.0).flatten(0, 1)
}

/// The logits of sampled points: uniform in the set, its corners / sphere, and PGD points.
fn sampled_logits(net: &Network, x: &Tensor, y: &Tensor, ball: Ball) -> (Tensor, Vec<Tensor>) {
    let b = x.size()[0];
    let mut pts = vec![samples(x, ball, 300, false), samples(x, ball, 100, true)];
    let pgd = attack::pgd(
        net,
        x,
        y,
        &PgdConfig::evaluation(ball.eps, ball.norm, 30, 2, AttackLoss::Margin),
    );
    pts.push(pgd.x_adv);
    let all = Tensor::cat(&pts, 0);
    let n = all.size()[0];
    // Pre-activations of every ReLU, for the intermediate bounds.
    let mut h = all;
    let mut pre = Vec::new();
    for layer in &net.layers {
        if let Layer::Relu = layer {
            pre.push(h.shallow_clone());
        }
        h = layer.forward(&h);
    }
    let _ = (b, n);
    (h, pre)
}

/// Index of the example each sampled row came from (the sample layout above).
fn owners(b: i64) -> Tensor {
    let a = Tensor::arange(b, (Kind::Int64, Device::Cpu));
    Tensor::cat(
        &[
            a.repeat_interleave_self_int(300, 0, None),
            a.repeat_interleave_self_int(100, 0, None),
            a,
        ],
        0,
    )
}

fn check_sound(net: &Network, x: &Tensor, y: &Tensor, ball: Ball, what: &str) {
    let b = x.size()[0];
    // Not under no_grad: PGD needs gradients.
    let (logits, pre) = sampled_logits(net, x, y, ball);
    let (logits, pre): (Tensor, Vec<Tensor>) =
        (logits.detach(), pre.iter().map(|p| p.detach()).collect());
    let own = owners(b);
    let ys = y.index_select(0, &own);
    let tol = 1e-9;
    for method in BoundMethod::ALL {
        let (lo, hi) = tch::no_grad(|| logit_bounds(net, x, ball, method));
        let (lo, hi) = (lo.index_select(0, &own), hi.index_select(0, &own));
        let below = (&lo - &logits).max().double_value(&[]);
        let above = (&logits - &hi).max().double_value(&[]);
        assert!(
            below <= tol && above <= tol,
            "{what} {}: a sampled logit is outside the bounds by {below:e} / {above:e}",
            method.name()
        );
        let m = tch::no_grad(|| margin_lower(net, x, y, ball, method)).index_select(0, &own);
        let margins = logits.gather(1, &ys.unsqueeze(1), false) - &logits;
        let worst = (&m - &margins).max().double_value(&[]);
        assert!(
            worst <= tol,
            "{what} {}: a sampled margin is below the margin bound by {worst:e}",
            method.name()
        );
        let relu = tch::no_grad(|| relu_bounds(net, x, ball, method.relaxed()));
        assert_eq!(relu.len(), pre.len());
        for (j, ((l, u), z)) in relu.iter().zip(&pre).enumerate() {
            let (l, u) = (l.index_select(0, &own), u.index_select(0, &own));
            let out = (&l - z)
                .max()
                .double_value(&[])
                .max((z - &u).max().double_value(&[]));
            assert!(
                out <= tol,
                "{what} {}: ReLU layer {j} pre-activation outside its bounds by {out:e}",
                method.name()
            );
        }
    }
}

#[test]
fn every_method_is_sound_on_random_mlps_and_convnets() {
    for seed in 0..3 {
        for norm in [Norm::Linf, Norm::L2] {
            for eps in [0.03, 0.15] {
                let ball = Ball { eps, norm };
                tch::manual_seed(100 + seed);
                let net = mlp64(6, &[12, 10], 4, seed);
                let x = Tensor::rand([5, 6], opts());
                let y = Tensor::randint(4, [5], (Kind::Int64, Device::Cpu));
                check_sound(
                    &net,
                    &x,
                    &y,
                    ball,
                    &format!("mlp seed {seed} {norm:?} eps {eps}"),
                );
                let net = conv64(seed);
                let x = Tensor::rand([3, 1, 7, 7], opts());
                let y = Tensor::randint(3, [3], (Kind::Int64, Device::Cpu));
                check_sound(
                    &net,
                    &x,
                    &y,
                    ball,
                    &format!("conv seed {seed} {norm:?} eps {eps}"),
                );
            }
        }
    }
}

#[test]
fn eps_zero_gives_the_forward_pass() {
    for net in [mlp64(5, &[8, 8], 3, 7), conv64(7)] {
        let mut shape = vec![4];
        shape.extend_from_slice(&net.input_shape);
        let x = Tensor::rand(shape.as_slice(), opts());
        let y = Tensor::randint(net.num_classes, [4], (Kind::Int64, Device::Cpu));
        let logits = net.forward(&x);
        let margins = logits.gather(1, &y.unsqueeze(1), false) - &logits;
        for norm in [Norm::Linf, Norm::L2] {
            let ball = Ball { eps: 0.0, norm };
            for method in BoundMethod::ALL {
                let (lo, hi) = logit_bounds(&net, &x, ball, method);
                let m = margin_lower(&net, &x, &y, ball, method);
                for (t, what) in [(&lo, "lower"), (&hi, "upper")] {
                    let err = (t - &logits).abs().max().double_value(&[]);
                    assert!(
                        err < 1e-10,
                        "{} {norm:?}: logit {what} bound differs from the forward pass by {err:e}",
                        method.name()
                    );
                }
                let err = (&m - &margins).abs().max().double_value(&[]);
                assert!(
                    err < 1e-10,
                    "{}: margin bound differs by {err:e}",
                    method.name()
                );
            }
        }
    }
}

/// With no unstable neuron the network is affine on the ball: the relaxations must find
/// the exact minimum of each margin, computed here from the Jacobian (autograd).
#[test]
fn without_unstable_neurons_the_linear_bounds_are_exact() {
    let net = mlp64(6, &[10, 10], 3, 3);
    tch::manual_seed(5);
    let x = Tensor::rand([6, 6], opts()) * 0.8 + 0.1;
    let y = Tensor::randint(3, [6], (Kind::Int64, Device::Cpu));
    for norm in [Norm::Linf, Norm::L2] {
        let ball = Ball { eps: 2e-3, norm };
        for (l, u) in relu_bounds(&net, &x, ball, None) {
            let straddle = l
                .lt(0.0)
                .logical_and(&u.gt(0.0))
                .sum(Kind::Int64)
                .int64_value(&[]);
            assert_eq!(
                straddle, 0,
                "test set-up: IBP already finds an unstable neuron"
            );
        }
        for i in 0..6 {
            let xi = x.narrow(0, i, 1).detach().set_requires_grad(true);
            let yi = y.int64_value(&[i]);
            let logits = net.forward(&xi);
            for t in 0..3 {
                let m_t = logits.double_value(&[0, yi]) - logits.double_value(&[0, t]);
                let exact = if t == yi {
                    0.0
                } else {
                    let g = Tensor::run_backward(
                        &[logits.get(0).get(yi) - logits.get(0).get(t)],
                        &[&xi],
                        true,
                        false,
                    );
                    let g = &g[0];
                    match norm {
                        Norm::Linf => m_t - g.abs().sum(Kind::Double).double_value(&[]) * ball.eps,
                        Norm::L2 => {
                            m_t - g.square().sum(Kind::Double).sqrt().double_value(&[]) * ball.eps
                        }
                    }
                };
                for method in LINEAR_METHODS {
                    let m =
                        margin_lower(&net, &x.narrow(0, i, 1), &y.narrow(0, i, 1), ball, method);
                    let got = m.double_value(&[0, t]);
                    assert!(
                        (got - exact).abs() < 1e-10,
                        "{} {norm:?}: point {i} row {t}: bound {got} vs exact minimum {exact}",
                        method.name()
                    );
                }
                let ibp = margin_lower(
                    &net,
                    &x.narrow(0, i, 1),
                    &y.narrow(0, i, 1),
                    ball,
                    BoundMethod::Ibp,
                );
                assert!(ibp.double_value(&[0, t]) <= exact + 1e-12);
            }
        }
    }
}

/// On a tiny 2-D network the true minimum margin over the ball comes from a fine grid; every
/// bound lies below it, and the gaps are reported.
#[test]
fn tiny_2d_network_bounds_are_below_the_grid_minimum() {
    let net = mlp64(2, &[8, 8], 3, 11);
    let x = Tensor::from_slice(&[0.45f64, 0.6]).reshape([1, 2]);
    let logits = net.forward(&x);
    let y = logits.argmax(1, false);
    let yi = y.int64_value(&[0]);
    let n = 601;
    for norm in [Norm::Linf, Norm::L2] {
        let ball = Ball { eps: 0.3, norm };
        let unstable: i64 = relu_bounds(&net, &x, ball, BoundMethod::Crown.relaxed())
            .iter()
            .map(|(l, u)| {
                l.lt(0.0)
                    .logical_and(&u.gt(0.0))
                    .sum(Kind::Int64)
                    .int64_value(&[])
            })
            .sum();
        assert!(
            unstable > 0,
            "test set-up: no unstable neuron, the bounds would be exact"
        );
        let g = Tensor::linspace(-ball.eps, ball.eps, n, opts());
        let gx = g.unsqueeze(1).expand([n, n], false).reshape([-1]);
        let gy = g.unsqueeze(0).expand([n, n], false).reshape([-1]);
        let mut pts = Tensor::stack(&[gx, gy], 1) + &x;
        if norm == Norm::L2 {
            let keep = (&pts - &x)
                .square()
                .sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)
                .le(ball.eps * ball.eps);
            pts = pts.index_select(0, &keep.nonzero().squeeze_dim(1));
        }
        let z = net.forward(&pts.clamp(0.0, 1.0));
        let mut report = String::new();
        for t in 0..3 {
            if t == yi {
                continue;
            }
            let true_min = (z.select(1, yi) - z.select(1, t)).min().double_value(&[]);
            for method in BoundMethod::ALL {
                let m = margin_lower(&net, &x, &y, ball, method).double_value(&[0, t]);
                assert!(
                    m <= true_min + 1e-12,
                    "{} {norm:?}: bound {m} above the grid minimum {true_min}",
                    method.name()
                );
                report += &format!(
                    "  {norm:?} row {t} {:<9} gap {:.4}\n",
                    method.name(),
                    true_min - m
                );
            }
        }
        eprintln!("gap to the grid minimum (601x601 grid, {unstable} unstable neurons):\n{report}");
    }
}

#[test]
fn l2_optimum_point_is_feasible_at_the_box_edges() {
    // Points on the faces of the box: the clipped box's minimum often beats the ball's.
    // The point where p_t is measured must still be in the ball and the box, so that
    // p_t >= m_t (r1 >= 0) for every row; a corner of the clipped box can lie outside the
    // l_2 ball, where the relaxation says nothing.
    let mut checked = 0;
    for seed in 0..4 {
        let net = mlp64(6, &[16, 16], 3, 20 + seed);
        tch::manual_seed(seed as i64);
        let x = Tensor::rand([200, 6], opts()).round();
        let y = Tensor::randint(3, [200], (Kind::Int64, Device::Cpu));
        for eps in [0.2, 0.5, 1.0] {
            for relax in [Relaxation::Crown, Relaxation::Fastlin] {
                let ball = Ball {
                    eps,
                    norm: Norm::L2,
                };
                let relaxed = Relaxed {
                    relax,
                    inter: Intermediate::Exact,
                };
                let t = tightness(&net, &x, &y, ball, relaxed);
                let gaps = &t.margin_at_optimum - &t.margin_lower;
                let worst = gaps.min().double_value(&[]);
                assert!(
                    worst >= -1e-10,
                    "{relax:?} eps {eps} seed {seed}: p_t < m_t by {worst:e}"
                );
                assert!(t.r1.min().double_value(&[]) >= -1e-10, "r1 < 0");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 24);
}

#[test]
fn proposition_1_r2_zero_means_r1_zero_and_both_are_nonnegative() {
    let net = mlp64(4, &[6], 3, 2);
    tch::manual_seed(9);
    // Inside [0.1, 0.9]: the l_2 ball stays in the box, so x*_t is the relaxed optimum for
    // both norms (near the box edges the l_2 input term is not attained and r1 can be > 0
    // with r2 = 0: that looseness is in the input set, not in the ReLU relaxation).
    let x = Tensor::rand([400, 4], opts()) * 0.8 + 0.1;
    let y = Tensor::randint(3, [400], (Kind::Int64, Device::Cpu));
    let mut exact_rows_with_unstable = 0;
    let mut loose_rows = 0;
    for relax in [Relaxation::Crown, Relaxation::Fastlin] {
        for norm in [Norm::Linf, Norm::L2] {
            let ball = Ball { eps: 0.08, norm };
            let relaxed = Relaxed {
                relax,
                inter: Intermediate::Exact,
            };
            let t = tightness(&net, &x, &y, ball, relaxed);
            assert!(t.r1.min().double_value(&[]) >= -1e-10, "r1 < 0");
            assert!(t.r2.min().double_value(&[]) >= 0.0, "r2 < 0");
            let gaps = &t.margin_at_optimum - &t.margin_lower;
            assert!(gaps.min().double_value(&[]) >= -1e-10, "p_t < m_t");
            // The margin bound agrees with margin_lower.
            let m = margin_lower_relaxed(&net, &x, &y, ball, relaxed);
            assert!((&m - &t.margin_lower).abs().max().double_value(&[]) < 1e-12);
            let unstable = &t.unstable[0];
            for i in 0..400 {
                for r in 0..3 {
                    if r == y.int64_value(&[i]) {
                        continue;
                    }
                    let r2 = t.r2_rows.double_value(&[i, r]);
                    let r1 = gaps.double_value(&[i, r]);
                    if r2 <= 1e-12 {
                        assert!(
                            r1 <= 1e-9,
                            "{relax:?} {norm:?}: point {i} row {r}: r2 = {r2:e} but r1 = {r1:e}"
                        );
                        if unstable.double_value(&[i]) > 0.0 {
                            exact_rows_with_unstable += 1;
                        }
                    } else if r1 > 1e-6 {
                        loose_rows += 1;
                    }
                }
            }
        }
    }
    assert!(
        exact_rows_with_unstable > 0,
        "no row with r2 = 0 despite unstable neurons: the test checks nothing"
    );
    assert!(loose_rows > 0, "no loose row: eps too small for the test");
}

#[test]
fn gap_stats_count_exact_points_and_fill_the_histogram() {
    let net = mlp64(4, &[6, 6], 3, 4);
    tch::manual_seed(1);
    let x = Tensor::rand([50, 4], opts());
    let y = Tensor::randint(3, [50], (Kind::Int64, Device::Cpu));
    // At a tiny eps nothing is unstable: every bound is exact.
    let tiny = gap_stats(
        &net,
        &x,
        &y,
        Ball {
            eps: 1e-6,
            norm: Norm::Linf,
        },
        BoundMethod::Crown,
        16,
    )
    .unwrap();
    assert_eq!(tiny.frac_exact, 1.0);
    assert!(tiny.unstable_per_layer.iter().all(|&u| u == 0.0));
    let wide = gap_stats(
        &net,
        &x,
        &y,
        Ball {
            eps: 0.3,
            norm: Norm::Linf,
        },
        BoundMethod::Crown,
        16,
    )
    .unwrap();
    assert!(wide.frac_exact < 1.0 && wide.r1_mean > 0.0 && wide.r2_mean > 0.0);
    assert_eq!(wide.unstable_per_layer.len(), 2);
    assert_eq!(
        wide.hist_counts.iter().sum::<u64>(),
        50 * 2,
        "one entry per point and row t != y"
    );
    assert_eq!(wide.hist_edges.len(), wide.hist_counts.len() + 1);
    // The mean unstable count agrees with the pre-activation bounds.
    let relu = relu_bounds(
        &net,
        &x,
        Ball {
            eps: 0.3,
            norm: Norm::Linf,
        },
        BoundMethod::Crown.relaxed(),
    );
    let count = relu[0]
        .0
        .lt(0.0)
        .logical_and(&relu[0].1.gt(0.0))
        .sum(Kind::Double)
        .double_value(&[])
        / 50.0;
    assert!((count - wide.unstable_per_layer[0]).abs() < 1e-12);
    assert!(gap_stats(
        &net,
        &x,
        &y,
        Ball {
            eps: 0.3,
            norm: Norm::Linf
        },
        BoundMethod::Ibp,
        16
    )
    .is_none());
}

/// With many projections, the estimated Fast-Lin intermediate bounds approach the exact ones
/// (the median of |Cauchy| samples estimates an l1 norm).
#[test]
fn random_projections_approach_the_exact_fastlin_bounds() {
    for net in [mlp64(20, &[30, 30, 20], 4, 5), conv64(5)] {
        let mut shape = vec![3];
        shape.extend_from_slice(&net.input_shape);
        tch::manual_seed(3);
        let x = Tensor::rand(shape.as_slice(), opts());
        let ball = Ball {
            eps: 0.05,
            norm: Norm::Linf,
        };
        let exact = relu_bounds(&net, &x, ball, BoundMethod::Fastlin.relaxed());
        let proj = relu_bounds(
            &net,
            &x,
            ball,
            Some(Relaxed {
                relax: Relaxation::Fastlin,
                inter: Intermediate::Projection { dim: 4000 },
            }),
        );
        let ibp = relu_bounds(&net, &x, ball, None);
        for (j, ((le, ue), (lp, up))) in exact.iter().zip(&proj).enumerate().skip(1) {
            // Where IBP already proves a neuron stable for an example, the exact pass may
            // keep the interval bounds (they decide nothing): compare the others.
            let (il, iu) = &ibp[j];
            let keep = il.lt(0.0).logical_and(&iu.gt(0.0));
            assert!(
                keep.any().int64_value(&[]) != 0,
                "layer {j}: nothing unstable"
            );
            let re = ((ue - le) / 2.0).masked_select(&keep);
            let rp = ((up - lp) / 2.0).masked_select(&keep);
            let rel = ((&rp - &re).abs() / re.clamp_min(1e-9))
                .max()
                .double_value(&[]);
            assert!(
                rel < 0.15,
                "layer {j}: projected radius off by {rel:.3} relative"
            );
            let ce = ((ue + le) / 2.0).masked_select(&keep);
            let cp = ((up + lp) / 2.0).masked_select(&keep);
            let dc = ((&cp - &ce).abs() / re.clamp_min(1e-9))
                .max()
                .double_value(&[]);
            assert!(
                dc < 0.15,
                "layer {j}: projected centre off by {dc:.3} radii"
            );
        }
    }
}

/// With CROWN's lower lines (slope 0 or 1) the line is tight on a half-line, so the half-line
/// r2 vanishes on bounds that are exact while the paper's `|z|` form can still be positive;
/// with Fast-Lin's lines (tight only at 0) the two forms agree.
#[test]
fn half_line_r2_is_the_exactness_condition_of_crowns_lines() {
    let net = mlp64(4, &[8], 3, 5);
    tch::manual_seed(11);
    let x = Tensor::rand([400, 4], opts()) * 0.8 + 0.1;
    let y = Tensor::randint(3, [400], (Kind::Int64, Device::Cpu));
    let ball = Ball {
        eps: 0.08,
        norm: Norm::Linf,
    };
    let crown = Relaxed {
        relax: Relaxation::Crown,
        inter: Intermediate::Exact,
    };
    let t = tightness(&net, &x, &y, ball, crown);
    let diff = (&t.r2_abs - &t.r2).min().double_value(&[]);
    assert!(
        diff >= -1e-12,
        "abs form below the half-line form: {diff:e}"
    );
    let mut exact_but_abs_positive = 0;
    for i in 0..400 {
        let (r1, r2, r2_abs) = (
            t.r1.double_value(&[i]),
            t.r2.double_value(&[i]),
            t.r2_abs.double_value(&[i]),
        );
        if r1 <= 1e-9 && r2_abs > 1e-6 {
            exact_but_abs_positive += 1;
            assert!(
                r2 <= 1e-9,
                "point {i}: exact bound (r1 {r1:e}) but half-line r2 {r2:e}"
            );
        }
    }
    assert!(
        exact_but_abs_positive > 0,
        "no exact bound with a positive |z| term: the test checks nothing"
    );
    let fastlin = Relaxed {
        relax: Relaxation::Fastlin,
        inter: Intermediate::Exact,
    };
    let f = tightness(&net, &x, &y, ball, fastlin);
    let gap = (&f.r2_abs - &f.r2).abs().max().double_value(&[]);
    assert!(gap <= 1e-12, "Fast-Lin: the two forms differ by {gap:e}");
}

/// A float32 network whose margin bound is positive only by rounding: the hidden value
/// `2^25 - 0.5` rounds to `2^25`, and the next layer subtracts `2^25` again. The old rule
/// (`certified` on the float32 bound) certifies the point; the rounding-safe one refuses it,
/// and still certifies a point whose margin is clear.
#[test]
fn a_margin_positive_only_by_float32_rounding_is_not_certified() {
    let net = Network::new(
        vec![lin(1, 1), LayerSpec::Relu, lin(1, 2)],
        &[1],
        2,
        Device::Cpu,
    )
    .unwrap();
    let set = |i: usize, w: &[f32], b: &[f32]| {
        let Layer::Linear { weight, bias } = &net.layers[i] else {
            unreachable!()
        };
        tch::no_grad(|| {
            let shape = weight.size();
            weight
                .shallow_clone()
                .copy_(&Tensor::from_slice(w).reshape(shape.as_slice()));
            bias.shallow_clone().copy_(&Tensor::from_slice(b));
        });
    };
    let big = 33_554_432.0f32; // 2^25
    set(0, &[big], &[-0.5]);
    set(2, &[1.0, 0.0], &[-big, -0.25]);
    let x = Tensor::from_slice(&[1.0f32]).reshape([1, 1]);
    let y = Tensor::from_slice(&[0i64]);
    // True margin with these (float32) parameters: (2^25 - 0.5 - 2^25) - (-0.25) = -0.25.
    let true_margin = -0.25;
    let ball = Ball {
        eps: 0.0,
        norm: Norm::Linf,
    };
    let m32 = margin_lower(&net, &x, &y, ball, BoundMethod::Ibp);
    assert!(
        bool::try_from(certified(&m32, &y)).unwrap(),
        "precondition: float32 IBP should certify by rounding (margin {})",
        m32.double_value(&[0, 1])
    );
    for method in BoundMethod::ALL {
        let c = certify(&net, &x, &y, ball, method);
        assert!(
            !bool::try_from(c.certified.get(0)).unwrap(),
            "{}: certified although the true margin is {true_margin}",
            method.name()
        );
    }
    // A margin that is clear in float64 too is still certified.
    set(2, &[1.0, 0.0], &[-big, -10.0]);
    let c = certify(&net, &x, &y, ball, BoundMethod::Ibp);
    assert!(bool::try_from(c.certified.get(0)).unwrap());
}
