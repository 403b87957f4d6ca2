//! The verifier against independent truths: on tiny 2-D networks the exact smallest margin over
//! the l_inf ball, by enumerating every activation pattern and solving each pattern's 2-D LP
//! by its vertices; elsewhere, strong PGD (which must never break a verified point) and the
//! counterexamples themselves (inside the ball, misclassified).
use super::*;
use crate::bounds::tests::lin;
use crate::config::Norm;
use crate::model::{Layer, LayerSpec};
use tch::Device;

fn tiny_net(seed: i64, hidden: &[i64], d: i64, classes: i64) -> Network {
    tch::manual_seed(seed);
    let mut specs = Vec::new();
    let mut w = d;
    for &h in hidden {
        specs.push(lin(w, h));
        specs.push(LayerSpec::Relu);
        w = h;
    }
    specs.push(lin(w, classes));
    let net = Network::new(specs, &[d], classes, Device::Cpu).unwrap();
    // Steeper first-layer hyperplanes through points of the unit box, so that the decision
    // boundaries cross the data box (default-initialised nets are nearly constant on it).
    if let Layer::Linear { weight, bias } = &net.layers[0] {
        tch::no_grad(|| {
            let centres =
                Tensor::rand([weight.size()[0], d], (Kind::Float, Device::Cpu)) * 0.6 + 0.2;
            let _ = weight.shallow_clone().g_mul_scalar_(8.0);
            let through =
                -(weight * centres).sum_dim_intlist([1i64].as_slice(), false, None::<Kind>);
            bias.shallow_clone().copy_(&through);
        });
    }
    net
}

/// `(W, b)` of every Linear layer, in float64, row-major.
fn dense(net: &Network) -> Vec<(Vec<Vec<f64>>, Vec<f64>)> {
    net.layers
        .iter()
        .filter_map(|l| match l {
            Layer::Linear { weight, bias } => {
                let w = weight.to_kind(Kind::Double);
                let rows = (0..w.size()[0])
                    .map(|i| Vec::<f64>::try_from(w.get(i)).unwrap())
                    .collect();
                Some((
                    rows,
                    Vec::<f64>::try_from(bias.to_kind(Kind::Double)).unwrap(),
                ))
            }
            _ => None,
        })
        .collect()
}

/// An affine function of the 2-D input: `a . x + c`.
#[derive(Clone, Copy)]
struct Aff {
    a: [f64; 2],
    c: f64,
}

/// The smallest value of each objective over `{x in box : g(x) >= 0 for all g}`, by the vertices
/// of the polygon (pairwise intersections of the constraint lines and box edges); `None` when
/// the polygon is empty.
fn polygon_min(cons: &[Aff], lo: [f64; 2], hi: [f64; 2], obj: &[Aff]) -> Option<Vec<f64>> {
    let mut lines: Vec<Aff> = cons.to_vec();
    lines.push(Aff {
        a: [1.0, 0.0],
        c: -lo[0],
    });
    lines.push(Aff {
        a: [-1.0, 0.0],
        c: hi[0],
    });
    lines.push(Aff {
        a: [0.0, 1.0],
        c: -lo[1],
    });
    lines.push(Aff {
        a: [0.0, -1.0],
        c: hi[1],
    });
    let mut best: Option<Vec<f64>> = None;
    for i in 0..lines.len() {
        for j in i + 1..lines.len() {
            let (p, q) = (lines[i], lines[j]);
            let det = p.a[0] * q.a[1] - p.a[1] * q.a[0];
            if det.abs() < 1e-12 {
                continue;
            }
            let x0 = (-p.c * q.a[1] + q.c * p.a[1]) / det;
            let x1 = (-q.c * p.a[0] + p.c * q.a[0]) / det;
            let ok = lines
                .iter()
                .all(|g| g.a[0] * x0 + g.a[1] * x1 + g.c >= -1e-9);
            if !ok {
                continue;
            }
            let vals: Vec<f64> = obj
                .iter()
                .map(|o| o.a[0] * x0 + o.a[1] * x1 + o.c)
                .collect();
            best = Some(match best {
                None => vals,
                Some(b) => b.iter().zip(&vals).map(|(a, v)| a.min(*v)).collect(),
            });
        }
    }
    best
}

/// The exact smallest margin `min_{x' in ball} min_{t != y} z_y - z_t` of a 2-D MLP on the l_inf
/// ball, over every activation pattern.
fn exact_min_margin(net: &Network, x: [f64; 2], y: usize, eps: f64) -> f64 {
    let layers = dense(net);
    let hidden: Vec<usize> = layers[..layers.len() - 1]
        .iter()
        .map(|l| l.1.len())
        .collect();
    let total: usize = hidden.iter().sum();
    let lo = [(x[0] - eps).max(0.0), (x[1] - eps).max(0.0)];
    let hi = [(x[0] + eps).min(1.0), (x[1] + eps).min(1.0)];
    let mut best = f64::INFINITY;
    for pattern in 0..(1u64 << total) {
        let mut h: Vec<Aff> = vec![
            Aff {
                a: [1.0, 0.0],
                c: 0.0,
            },
            Aff {
                a: [0.0, 1.0],
                c: 0.0,
            },
        ];
        let mut cons = Vec::new();
        let mut bit = 0;
        for (li, (w, b)) in layers.iter().enumerate() {
            let z: Vec<Aff> = w
                .iter()
                .zip(b)
                .map(|(row, &bi)| {
                    let mut acc = Aff {
                        a: [0.0, 0.0],
                        c: bi,
                    };
                    for (wij, hj) in row.iter().zip(&h) {
                        acc.a[0] += wij * hj.a[0];
                        acc.a[1] += wij * hj.a[1];
                        acc.c += wij * hj.c;
                    }
                    acc
                })
                .collect();
            if li == layers.len() - 1 {
                h = z;
                break;
            }
            h = z
                .iter()
                .map(|zi| {
                    let on = pattern >> bit & 1 == 1;
                    bit += 1;
                    let s = if on { 1.0 } else { -1.0 };
                    cons.push(Aff {
                        a: [s * zi.a[0], s * zi.a[1]],
                        c: s * zi.c,
                    });
                    if on {
                        *zi
                    } else {
                        Aff {
                            a: [0.0, 0.0],
                            c: 0.0,
                        }
                    }
                })
                .collect();
        }
        let obj: Vec<Aff> = (0..h.len())
            .filter(|&t| t != y)
            .map(|t| Aff {
                a: [h[y].a[0] - h[t].a[0], h[y].a[1] - h[t].a[1]],
                c: h[y].c - h[t].c,
            })
            .collect();
        if let Some(v) = polygon_min(&cons, lo, hi, &obj) {
            best = v.into_iter().fold(best, f64::min);
        }
    }
    best
}

#[test]
fn verdicts_agree_with_exhaustive_enumeration_of_activation_patterns() {
    let mut by_bab = 0;
    let mut verdicts = std::collections::BTreeMap::new();
    for seed in 0..3 {
        let net = tiny_net(seed, &[6, 6], 2, 3);
        tch::manual_seed(50 + seed);
        let x = Tensor::rand([8, 2], (Kind::Float, Device::Cpu));
        let y = tch::no_grad(|| net.forward(&x).argmax(1, false));
        let labels = Vec::<i64>::try_from(&y).unwrap();
        for i in 0..8 {
            let xi = Vec::<f64>::try_from(x.get(i).to_kind(Kind::Double)).unwrap();
            let xi = [xi[0], xi[1]];
            let yi = labels[i as usize] as usize;
            // The exact robust radius by bisection on the exact margin; then a radius just
            // inside it and one just outside, where the bounds alone are rarely enough.
            let (mut a, mut b) = (0.0, 0.5);
            if exact_min_margin(&net, xi, yi, b) > 0.0 {
                continue;
            }
            // The enumeration against sampling: no sampled point of the ball beats it.
            let grid = (Tensor::rand([4000, 2], (Kind::Double, Device::Cpu)) * 2.0 - 1.0) * b
                + Tensor::from_slice(&xi).unsqueeze(0);
            let grid = grid.clamp(0.0, 1.0).to_kind(Kind::Float);
            let sampled = tch::no_grad(|| {
                attack::margins(&net.forward(&grid), &y.get(i).expand([4000], false))
            });
            let sampled = sampled.min().double_value(&[]);
            let exact_b = exact_min_margin(&net, xi, yi, b);
            assert!(
                exact_b <= sampled + 1e-5,
                "enumeration {exact_b} above a sample {sampled}"
            );
            for _ in 0..12 {
                let m = (a + b) / 2.0;
                if exact_min_margin(&net, xi, yi, m) > 0.0 {
                    a = m;
                } else {
                    b = m;
                }
            }
            for eps in [0.9 * a, 1.1 * b] {
                let exact = exact_min_margin(&net, xi, yi, eps);
                if exact.abs() < 1e-7 {
                    continue;
                }
                let ball = Ball {
                    eps,
                    norm: Norm::Linf,
                };
                let settings = VerifySettings::with_timeout(30.0);
                let (xs, ys) = (x.narrow(0, i, 1), y.narrow(0, i, 1));
                let p = verify(&net, &xs, &ys, ball, &settings, &mut |_, _| {})
                    .points
                    .remove(0);
                *verdicts.entry(format!("{:?}", p.verdict)).or_insert(0) += 1;
                let what = format!(
                    "seed {seed} point {i} eps {eps}: exact min margin {exact:e}, {:?} by {:?}",
                    p.verdict, p.decided_by
                );
                match p.verdict {
                    Verdict::Verified => assert!(exact > 0.0, "{what}"),
                    Verdict::Falsified => assert!(exact < 0.0, "{what}"),
                    _ => panic!("a tiny network must be decided: {what}"),
                }
                if p.decided_by == Some(VerifyStage::Bab) {
                    by_bab += 1;
                }
            }
        }
    }
    // Both verdicts occur, and branch and bound decided some points the bounds could not.
    assert!(
        verdicts.len() == 2 && by_bab > 0,
        "{verdicts:?}, {by_bab} by branch and bound"
    );
}

#[test]
fn no_attack_breaks_a_verified_point_and_every_counterexample_is_real() {
    for norm in [Norm::Linf, Norm::L2] {
        let net = tiny_net(7, &[16, 16], 6, 4);
        tch::manual_seed(8);
        let x = Tensor::rand([24, 6], (Kind::Float, Device::Cpu));
        let y = tch::no_grad(|| net.forward(&x).argmax(1, false));
        // Two wrong labels: falsified at the clean input.
        let wrong = (y.narrow(0, 0, 2) + 1).remainder(4);
        y.narrow(0, 0, 2).copy_(&wrong);
        let eps = if norm == Norm::Linf { 0.04 } else { 0.1 };
        let ball = Ball { eps, norm };
        let report = verify(
            &net,
            &x,
            &y,
            ball,
            &VerifySettings::with_timeout(1.0),
            &mut |_, _| {},
        );
        let strong = PgdConfig {
            random_start: true,
            ..PgdConfig::evaluation(eps, norm, 100, 10, AttackLoss::Margin)
        };
        let pgd = attack::pgd(&net, &x, &y, &strong);
        let mut seen = std::collections::BTreeSet::new();
        for p in &report.points {
            let i = p.index as i64;
            eprintln!(
                "{norm:?} {i} {:?} {:?} {:.3}",
                p.verdict, p.decided_by, p.seconds
            );
            seen.insert(format!("{:?}", p.verdict));
            match p.verdict {
                Verdict::Verified => assert!(
                    pgd.margin.double_value(&[i]) > 0.0,
                    "{norm:?}: PGD breaks point {i}, verified by {:?}",
                    p.decided_by
                ),
                Verdict::Falsified => {
                    let c = p.counterexample.as_ref().expect("a counterexample");
                    let c = Tensor::from_slice(c).to_kind(Kind::Float).reshape([1, 6]);
                    let x0 = x.narrow(0, i, 1);
                    assert!(attack::feasibility_violation(&c, &x0, eps, norm).is_none());
                    let pred = net.forward(&c).argmax(1, false).int64_value(&[0]);
                    assert_ne!(
                        pred, p.label,
                        "{norm:?}: point {i}'s counterexample is classified right"
                    );
                }
                _ => {}
            }
        }
        assert!(
            seen.contains("Verified") && seen.contains("Falsified"),
            "{norm:?}: {seen:?}"
        );
        assert_eq!(report.points[0].decided_by, Some(VerifyStage::Clean));
    }
}
