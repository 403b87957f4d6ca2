//! The leaves of branch and bound: a domain where every ReLU is stable or split has a fixed
//! activation pattern, so the network is affine on it, `logits = c + H^T (x' - x)`, and the
//! smallest margin over the domain is a linear program: minimise `(H_y - H_t) . delta` over the
//! input set, subject to the split neurons' pre-activations having their phases
//! (`z_n(delta) >= 0` active, `<= 0` inactive). The stable neurons need no constraint: their
//! bounds already hold on the domain.
//!
//! The LP is solved by clarabel; its answer is not trusted as such. A lower bound is rebuilt
//! from its dual multipliers `mu >= 0` of the split constraints by weak duality, in closed form
//! over the input set: `min_{delta in S} (g + A^T mu) . delta - mu . b` (exact over the l_inf
//! box; over the l_2 ball the better of the ball's `-eps ||v||` and the box's value). A
//! negative optimum gives a candidate input that is checked on the network.
use crate::bounds::{apply_linear, input_box, Ball};
use crate::config::Norm;
use crate::model::Layer;
use clarabel::algebra::CscMatrix;
use clarabel::solver::{
    DefaultSettingsBuilder, DefaultSolver, IPSolver, SolverStatus, SupportedConeT,
};
use tch::{Kind, Tensor};

/// What a leaf's LPs say.
pub(super) enum Leaf {
    /// Every margin is positive on the domain (or the domain is empty).
    Verified,
    /// The LP optimum of some margin is negative there: this input (`[1, ..]`, in the set).
    Candidate(Tensor),
    /// The solver failed or its bound is not conclusive.
    Undecided,
}

/// A split of one neuron: layer index, flat neuron index, and whether it is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Split {
    pub(super) layer: usize,
    pub(super) neuron: i64,
    pub(super) active: bool,
}

/// Solves the leaf of `x` (`[1, ..]`, float64) with label `y`, whose ReLU inputs have the
/// bounds `bounds` (each `[1, ..]`, none unstable) and the given splits.
pub(super) fn solve_leaf(
    layers: &[Layer],
    x: &Tensor,
    y: i64,
    ball: Ball,
    bounds: &[Option<(Tensor, Tensor)>],
    splits: &[Split],
) -> Leaf {
    let Some((c, h, rows)) = affine_map(layers, x, bounds, splits) else {
        return Leaf::Undecided;
    };
    let k = c.size()[0];
    let (lo, hi) = input_box(x, ball);
    let lo = vec_of(&(lo - x).flatten(0, -1));
    let hi = vec_of(&(hi - x).flatten(0, -1));
    // Split rows as `A delta <= b`.
    let a_rows: Vec<Vec<f64>> = rows
        .iter()
        .map(|(g, _, active)| {
            if *active {
                g.iter().map(|v| -v).collect()
            } else {
                g.clone()
            }
        })
        .collect();
    let b_rows: Vec<f64> = rows
        .iter()
        .map(|(_, c0, active)| if *active { *c0 } else { -*c0 })
        .collect();
    let hy: Vec<f64> = vec_of(&h.select(1, y));
    let mut worst: Option<(f64, Vec<f64>)> = None;
    let mut undecided = false;
    for t in 0..k {
        if t == y {
            continue;
        }
        let ht = vec_of(&h.select(1, t));
        let g: Vec<f64> = hy.iter().zip(&ht).map(|(a, b)| a - b).collect();
        let constant = c.double_value(&[y]) - c.double_value(&[t]);
        let Some(sol) = solve_lp(&g, &a_rows, &b_rows, &lo, &hi, ball) else {
            return Leaf::Undecided;
        };
        let bound = match &sol {
            Lp::Infeasible(z) => {
                if farkas_value(&a_rows, &b_rows, z, &lo, &hi, ball) > 0.0 {
                    return Leaf::Verified;
                }
                return Leaf::Undecided;
            }
            Lp::Solved { mu, .. } => dual_bound(&g, &a_rows, &b_rows, mu, &lo, &hi, ball),
        };
        if bound + constant > 0.0 {
            continue;
        }
        let Lp::Solved { delta, value, .. } = sol else {
            unreachable!()
        };
        if value + constant < 0.0 {
            if worst.as_ref().is_none_or(|w| value + constant < w.0) {
                worst = Some((value + constant, delta));
            }
        } else {
            undecided = true;
        }
    }
    match worst {
        Some((_, delta)) => {
            let delta = Tensor::from_slice(&delta)
                .reshape(x.size())
                .to_kind(x.kind());
            Leaf::Candidate(crate::attack::project(&(x + delta), x, ball.eps, ball.norm))
        }
        None if undecided => Leaf::Undecided,
        None => Leaf::Verified,
    }
}

/// `(c [K], H [d, K], split rows (g, c0, active))` of the network on the leaf's pattern, with
/// each split neuron's pre-activation `c0 + g . delta`. `None` if a neuron is still unstable.
#[allow(clippy::type_complexity)]
fn affine_map(
    layers: &[Layer],
    x: &Tensor,
    bounds: &[Option<(Tensor, Tensor)>],
    splits: &[Split],
) -> Option<(Tensor, Tensor, Vec<(Vec<f64>, f64, bool)>)> {
    tch::no_grad(|| {
        let d: i64 = x.size()[1..].iter().product();
        let mut shape = vec![d];
        shape.extend_from_slice(&x.size()[1..]);
        let mut h = Tensor::eye(d, (x.kind(), x.device())).reshape(shape.as_slice());
        let mut c = x.shallow_clone();
        let mut rows = Vec::new();
        for (i, layer) in layers.iter().enumerate() {
            match layer {
                Layer::Linear { weight, .. } | Layer::Conv2d { weight, .. } => {
                    h = apply_linear(layer, weight, &h);
                    c = layer.forward(&c);
                }
                Layer::Normalize { std, .. } => {
                    h = &h / std;
                    c = layer.forward(&c);
                }
                Layer::Flatten => {
                    h = h.flatten(1, -1);
                    c = c.flatten(1, -1);
                }
                Layer::Relu => {
                    let (l, u) = bounds[i].as_ref()?;
                    if l.lt(0.0).logical_and(&u.gt(0.0)).any().int64_value(&[]) != 0 {
                        return None;
                    }
                    let (hf, cf) = (h.flatten(1, -1), c.flatten(0, -1));
                    for s in splits.iter().filter(|s| s.layer == i) {
                        rows.push((
                            vec_of(&hf.select(1, s.neuron)),
                            cf.double_value(&[s.neuron]),
                            s.active,
                        ));
                    }
                    let mask = l.ge(0.0).to_kind(x.kind());
                    h = &h * &mask;
                    c = &c * &mask;
                }
                _ => return None,
            }
        }
        Some((c.flatten(0, -1), h.flatten(1, -1), rows))
    })
}

fn vec_of(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(
        t.to_kind(Kind::Double)
            .to_device(tch::Device::Cpu)
            .contiguous(),
    )
    .unwrap_or_default()
}

/// What clarabel returned.
enum Lp {
    Solved {
        delta: Vec<f64>,
        value: f64,
        /// Dual multipliers of the split rows.
        mu: Vec<f64>,
    },
    /// Primal infeasible: the certificate's entries on the split rows.
    Infeasible(Vec<f64>),
}

/// `min g . delta` s.t. `A delta <= b`, `lo <= delta <= hi`, and for l_2 `||delta|| <= eps`.
fn solve_lp(
    g: &[f64],
    a: &[Vec<f64>],
    b: &[f64],
    lo: &[f64],
    hi: &[f64],
    ball: Ball,
) -> Option<Lp> {
    let d = g.len();
    let m = a.len();
    let mut cols: Vec<Vec<(usize, f64)>> = vec![Vec::new(); d];
    let mut rhs: Vec<f64> = b.to_vec();
    for (r, row) in a.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            if v != 0.0 {
                cols[j].push((r, v));
            }
        }
    }
    for j in 0..d {
        cols[j].push((m + j, 1.0));
        cols[j].push((m + d + j, -1.0));
    }
    rhs.extend_from_slice(hi);
    rhs.extend(lo.iter().map(|v| -v));
    let mut cones = vec![SupportedConeT::NonnegativeConeT(m + 2 * d)];
    if ball.norm == Norm::L2 {
        let base = m + 2 * d;
        rhs.push(ball.eps);
        for (j, col) in cols.iter_mut().enumerate() {
            col.push((base + 1 + j, -1.0));
        }
        rhs.extend(std::iter::repeat_n(0.0, d));
        cones.push(SupportedConeT::SecondOrderConeT(d + 1));
    }
    let mut colptr = vec![0usize];
    let (mut rowval, mut nzval) = (Vec::new(), Vec::new());
    for col in cols {
        for (r, v) in col {
            rowval.push(r);
            nzval.push(v);
        }
        colptr.push(rowval.len());
    }
    let amat = CscMatrix::new(rhs.len(), d, colptr, rowval, nzval);
    let p = CscMatrix::new(d, d, vec![0; d + 1], vec![], vec![]);
    let settings = DefaultSettingsBuilder::default()
        .verbose(false)
        .max_iter(200)
        .build()
        .ok()?;
    let mut solver = DefaultSolver::new(&p, g, &amat, &rhs, &cones, settings).ok()?;
    solver.solve();
    let sol = &solver.solution;
    match sol.status {
        SolverStatus::Solved | SolverStatus::AlmostSolved => Some(Lp::Solved {
            delta: sol.x.clone(),
            value: g.iter().zip(&sol.x).map(|(a, b)| a * b).sum(),
            mu: sol.z[..m].iter().map(|v| v.max(0.0)).collect(),
        }),
        SolverStatus::PrimalInfeasible | SolverStatus::AlmostPrimalInfeasible => Some(
            Lp::Infeasible(sol.z[..m].iter().map(|v| v.max(0.0)).collect()),
        ),
        _ => None,
    }
}

/// `min_{delta in S} v . delta` over the input set (a valid lower bound for l_2: the better
/// of the ball's and the box's).
fn set_minimum(v: &[f64], lo: &[f64], hi: &[f64], ball: Ball) -> f64 {
    let boxed: f64 = v
        .iter()
        .zip(lo.iter().zip(hi))
        .map(|(&v, (&l, &h))| (v * l).min(v * h))
        .sum();
    match ball.norm {
        Norm::Linf => boxed,
        Norm::L2 => boxed.max(-ball.eps * v.iter().map(|a| a * a).sum::<f64>().sqrt()),
    }
}

/// Weak duality: for any `mu >= 0`, `min_S (g + A^T mu) . delta - mu . b` bounds the LP below.
fn dual_bound(
    g: &[f64],
    a: &[Vec<f64>],
    b: &[f64],
    mu: &[f64],
    lo: &[f64],
    hi: &[f64],
    ball: Ball,
) -> f64 {
    let mut v = g.to_vec();
    for (row, &m) in a.iter().zip(mu) {
        for (vj, aj) in v.iter_mut().zip(row) {
            *vj += m * aj;
        }
    }
    set_minimum(&v, lo, hi, ball) - mu.iter().zip(b).map(|(m, b)| m * b).sum::<f64>()
}

/// Farkas: if `min_S (A^T z) . delta - z . b > 0` for some `z >= 0`, no `delta` of `S`
/// satisfies `A delta <= b` (the domain is empty).
fn farkas_value(a: &[Vec<f64>], b: &[f64], z: &[f64], lo: &[f64], hi: &[f64], ball: Ball) -> f64 {
    let zero = vec![0.0; lo.len()];
    dual_bound(&zero, a, b, z, lo, hi, ball)
}
