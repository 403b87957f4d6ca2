//! LipSDP-Neuron (Fazlyab et al. 2019) for MLPs: the matrix inequality over all hidden
//! neurons, solved with clarabel's PSD cone for small nets and by a feasible-multiplier
//! first-order method for larger ones; every value is re-verified from the multipliers.
use super::clarabel::{clarabel_solve, tri};
use super::dense::exact_dense;
use super::{LipError, Settings};
use crate::model::{Layer, Network};
use tch::{Device, Kind, Tensor};

/// The weights `W_0, .., W_m` (double precision, detached) of an MLP
/// `[Normalize] [Flatten] Linear (ReLU Linear)*`, a leading Normalize folded into `W_0`;
/// an error naming the layer for anything else.
pub fn mlp_weights(net: &Network) -> Result<Vec<Tensor>, String> {
    let mut ws: Vec<Tensor> = Vec::new();
    let mut scale: Option<Tensor> = None;
    let mut expect_linear = true;
    for (i, layer) in net.layers.iter().enumerate() {
        match layer {
            Layer::Normalize { std, .. } if ws.is_empty() => {
                let per_input = Tensor::ones(net.input_shape.as_slice(), (Kind::Double, std.device()))
                    / std.detach().to_kind(Kind::Double);
                scale = Some(per_input.reshape([-1]));
            }
            Layer::Flatten if ws.is_empty() => {}
            Layer::Linear { .. }
            | Layer::Aol { .. }
            | Layer::Spectral { .. }
            | Layer::Circulant { .. }
                if expect_linear =>
            {
                let w = tch::no_grad(|| layer.effective_weight())
                    .ok_or_else(|| format!("layer {i} has no weight"))?
                    .detach()
                    .to_kind(Kind::Double);
                let w = match (ws.is_empty(), &scale) {
                    (true, Some(sc)) => w * sc.unsqueeze(0),
                    _ => w,
                };
                ws.push(w);
                expect_linear = false;
            }
            Layer::Relu if !expect_linear => expect_linear = true,
            other => {
                return Err(format!(
                    "LipSDP-Neuron handles MLPs (Linear and ReLU layers alternating); layer {i} is `{}`",
                    other.kind_name()
                ))
            }
        }
    }
    if ws.is_empty() || expect_linear {
        return Err("LipSDP-Neuron needs an MLP that ends with a linear layer".into());
    }
    Ok(ws)
}

/// A LipSDP value and how it was found.
#[derive(Debug, Clone, PartialEq)]
pub struct LipSdpResult {
    /// `sqrt(rho)`, re-verified from the multipliers.
    pub value: f64,
    /// The multipliers (diagonal of T over all hidden neurons).
    pub t: Vec<f64>,
    pub solver: &'static str,
    /// Size of the matrix inequality (reduced input dimension + hidden neurons).
    pub dim: i64,
}

/// The LipSDP-Neuron problem of an MLP with weights `W_0..W_m` (`m` hidden layers), the input
/// block reduced to `r = rank(W_0)` dimensions (`W_0 = U S V^T` -> `U S`: the block `-rho I`
/// on the null space of `W_0` decouples).
pub(super) struct SdpProblem {
    /// `U S` (`[h_1, r]`) and `W_1..W_m` (double).
    pub(super) ws: Vec<Tensor>,
    /// Hidden widths.
    pub(super) widths: Vec<i64>,
    pub(super) r: i64,
}

impl SdpProblem {
    pub(super) fn new(ws: &[Tensor]) -> Self {
        let (u, sv, _) = ws[0].svd(true, true);
        let keep = sv
            .gt(sv.max().double_value(&[]) * 1e-13)
            .sum(Kind::Int64)
            .int64_value(&[])
            .max(1);
        let w0 = u.narrow(1, 0, keep) * sv.narrow(0, 0, keep).unsqueeze(0);
        let mut red = vec![w0];
        red.extend(ws[1..].iter().map(|w| w.shallow_clone()));
        let widths = ws[..ws.len() - 1].iter().map(|w| w.size()[0]).collect();
        SdpProblem {
            ws: red,
            widths,
            r: keep,
        }
    }

    pub(super) fn hidden(&self) -> i64 {
        self.widths.iter().sum()
    }

    /// `Q(T)` (`[H, H]`, minus the hidden block of the LMI) and `A` (`[H, r]`, the coupling to
    /// the input), differentiable in `t` and the weights.
    fn blocks(&self, t: &Tensor) -> (Tensor, Tensor) {
        let h = self.hidden();
        let opts = (Kind::Double, t.device());
        let m = self.widths.len();
        let mut q = Tensor::zeros([h, h], opts);
        let mut offs = vec![0i64];
        for w in &self.widths {
            offs.push(offs[offs.len() - 1] + w);
        }
        q += (t * 2.0).diag_embed(0, -2, -1);
        let last = &self.ws[m];
        let wtw = last.tr().matmul(last);
        let pad_last = wtw.pad(
            [offs[m - 1], h - offs[m], offs[m - 1], h - offs[m]].as_slice(),
            "constant",
            Some(0.0),
        );
        q -= pad_last;
        for k in 1..m {
            // Block (k, k-1): T_k W_k (hidden k from hidden k-1), entered as -T_k W_k in Q.
            let tk = t.narrow(0, offs[k], self.widths[k]);
            let blk = self.ws[k].shallow_clone() * tk.unsqueeze(1);
            let lower = blk.pad(
                [offs[k - 1], h - offs[k], offs[k], h - offs[k + 1]].as_slice(),
                "constant",
                Some(0.0),
            );
            q = q - &lower - lower.tr();
        }
        let t1 = t.narrow(0, 0, self.widths[0]);
        let a1 = &self.ws[0] * t1.unsqueeze(1);
        let a = a1.pad(
            [0, 0, 0, h - self.widths[0]].as_slice(),
            "constant",
            Some(0.0),
        );
        (q, a)
    }

    /// `rho(T) = lambda_max(A^T Q^-1 A)` when `Q(T)` is positive definite (then `sqrt(rho)` is a
    /// certified Lipschitz bound), else `None`. Differentiable.
    pub(super) fn rho(&self, t: &Tensor) -> Option<Tensor> {
        let (q, a) = self.blocks(t);
        let (l, info) = q.linalg_cholesky_ex(false, false);
        if info.int64_value(&[]) != 0 {
            return None;
        }
        let x = l.linalg_solve_triangular(&a, false, true, false);
        // The non-zero spectrum of X^T X equals that of X X^T: use the smaller.
        let gram = if x.size()[1] > x.size()[0] {
            x.matmul(&x.tr())
        } else {
            x.tr().matmul(&x)
        };
        let gram = (&gram + gram.tr()) * 0.5;
        let top = gram.linalg_eigvalsh("L").max();
        let v = top.double_value(&[]);
        v.is_finite().then_some(top)
    }

    /// A feasible start at least as good as the product bound: per-layer scalar multipliers
    /// `t_m = c_m (1 + d)`, `t_k = t_{k+1} c_k (1 + d)` (`c_k = ||W_k||^2`, `d = 1e-6`). With
    /// `2 a^T W b <= ||a||^2 + c ||b||^2` every hidden coefficient of the LMI is then negative,
    /// so `Q(T)` is positive definite and `rho(T) <= t_1 c_0 (1 + d) = product^2 (1 + d)^(m+1)`.
    /// The common scale is then refined (log grid, golden section): the result never exceeds
    /// that value.
    pub(super) fn initial_t(&self) -> Option<Tensor> {
        let m = self.widths.len();
        let c: Vec<f64> = self
            .ws
            .iter()
            .map(|w| exact_dense(w).powi(2).max(1e-300))
            .collect();
        let d = 1e-6;
        let mut scalars = vec![0.0f64; m];
        scalars[m - 1] = c[m] * (1.0 + d);
        for k in (0..m - 1).rev() {
            scalars[k] = scalars[k + 1] * c[k + 1] * (1.0 + d);
        }
        let dev = self.ws[0].device();
        let base: Vec<f64> = scalars
            .iter()
            .zip(&self.widths)
            .flat_map(|(&s, &w)| std::iter::repeat_n(s, w as usize))
            .collect();
        let base = Tensor::from_slice(&base).to_device(dev);
        let eval = |log_alpha: f64| -> f64 {
            tch::no_grad(|| {
                self.rho(&(&base * log_alpha.exp()))
                    .map_or(f64::INFINITY, |r| r.double_value(&[]))
            })
        };
        let mut best = (eval(0.0), 0.0);
        for j in -24..=24 {
            let la = j as f64 * 0.25;
            let v = eval(la);
            if v < best.0 {
                best = (v, la);
            }
        }
        if !best.0.is_finite() {
            return None;
        }
        let (mut lo, mut hi) = (best.1 - 0.25, best.1 + 0.25);
        let g = (5f64.sqrt() - 1.0) / 2.0;
        for _ in 0..40 {
            let a = hi - g * (hi - lo);
            let b = lo + g * (hi - lo);
            if eval(a) < eval(b) {
                hi = b;
            } else {
                lo = a;
            }
        }
        let la = if eval((lo + hi) / 2.0) < best.0 {
            (lo + hi) / 2.0
        } else {
            best.1
        };
        Some(base * la.exp())
    }
}

/// First-order improvement of the multipliers: gradient descent on `log rho` over `log t`
/// with backtracking (a step is kept only if `Q` stays positive definite and `rho` drops).
pub(super) fn improve_t(p: &SdpProblem, t0: &Tensor, steps: u32) -> (Tensor, f64) {
    let mut theta = t0.clamp_min(1e-300).log();
    let mut current = tch::no_grad(|| {
        p.rho(&theta.exp())
            .map_or(f64::INFINITY, |r| r.double_value(&[]))
    });
    let mut lr = 0.1;
    for _ in 0..steps {
        let th = theta.detach().set_requires_grad(true);
        let grad = tch::with_grad(|| {
            p.rho(&th.exp()).map(|r| {
                let obj = r.log();
                Tensor::run_backward(&[obj], &[&th], false, false).pop()
            })
        });
        let Some(Some(g)) = grad else { break };
        let gmax = g.abs().max().double_value(&[]);
        if !(gmax.is_finite() && gmax > 0.0) {
            break;
        }
        let dir = g / gmax;
        let mut accepted = false;
        for _ in 0..12 {
            let cand = &theta - &dir * lr;
            let v = tch::no_grad(|| {
                p.rho(&cand.exp())
                    .map_or(f64::INFINITY, |r| r.double_value(&[]))
            });
            if v < current {
                theta = cand;
                current = v;
                lr *= 1.5;
                accepted = true;
                break;
            }
            lr *= 0.5;
        }
        if !accepted {
            break;
        }
    }
    (theta.exp(), current)
}

/// LipSDP-Neuron for an MLP with weights `W_0..W_m` (double precision): clarabel for
/// problems up to `s.lipsdp_clarabel_max_dim`, the first-order method otherwise (and as the
/// fallback). The value is `sqrt(rho(T))` re-computed from the multipliers found.
pub fn lipsdp(ws: &[Tensor], s: &Settings) -> Result<LipSdpResult, LipError> {
    tch::no_grad(|| -> Result<LipSdpResult, LipError> {
        let ws: Vec<Tensor> = ws
            .iter()
            .map(|w| w.detach().to_kind(Kind::Double))
            .collect();
        if ws.len() == 1 {
            // No hidden layer: the LMI is `W^T W - rho I <= 0`, i.e. the spectral norm.
            let d = ws[0].size()[1];
            if d <= s.lipsdp_clarabel_max_dim {
                if let Ok(rho) = clarabel_linear(&ws[0]) {
                    return Ok(LipSdpResult {
                        value: rho.sqrt(),
                        t: vec![],
                        solver: "clarabel",
                        dim: d,
                    });
                }
            }
            return Ok(LipSdpResult {
                value: exact_dense(&ws[0]),
                t: vec![],
                solver: "spectral norm (no hidden layer)",
                dim: d,
            });
        }
        let p = SdpProblem::new(&ws);
        let dim = p.r + p.hidden();
        let finish = |t: Tensor, solver: &'static str| -> Result<LipSdpResult, LipError> {
            let rho = p
                .rho(&t)
                .ok_or_else(|| LipError::Solver("the multipliers found are not feasible".into()))?
                .double_value(&[]);
            Ok(LipSdpResult {
                value: rho.sqrt(),
                t: Vec::<f64>::try_from(&t.to_device(Device::Cpu)).unwrap_or_default(),
                solver,
                dim,
            })
        };
        if dim <= s.lipsdp_clarabel_max_dim {
            if let Ok(t) = clarabel_t(&p) {
                // Polish: the interior-point answer sits on the boundary; a few first-order
                // steps from a slightly inflated T keep Q positive definite.
                let t_in = &t * (1.0 + 1e-7) + 1e-12;
                let (t2, rho) = improve_t(&p, &t_in, 20);
                if rho.is_finite() {
                    return finish(t2, "clarabel");
                }
            }
        }
        let t0 = p
            .initial_t()
            .ok_or_else(|| LipError::Solver("no feasible multiplier found".into()))?;
        let (t, _) = improve_t(&p, &t0, s.lipsdp_steps);
        finish(t, "first-order")
    })
}

/// `min rho` s.t. `rho I - W^T W` is PSD, with clarabel: the spectral norm squared (the
/// LipSDP problem of a network without hidden layer).
fn clarabel_linear(w: &Tensor) -> Result<f64, LipError> {
    let d = w.size()[1] as usize;
    let c = Vec::<Vec<f64>>::try_from(&w.tr().matmul(w).to_device(Device::Cpu))
        .map_err(|e| LipError::Solver(e.to_string()))?;
    let nvec = d * (d + 1) / 2;
    let sqrt2 = std::f64::consts::SQRT_2;
    let mut b = vec![0.0; nvec];
    for i in 0..d {
        for j in i..d {
            b[tri(i, j)] = -c[i][j] * if i == j { 1.0 } else { sqrt2 };
        }
    }
    let col: Vec<(usize, f64)> = (0..d).map(|i| (tri(i, i), -1.0)).collect();
    let x = clarabel_solve(
        1,
        vec![col],
        b,
        vec![clarabel::solver::SupportedConeT::PSDTriangleConeT(d)],
    )?;
    Ok(x[0])
}

/// Solves the LipSDP-Neuron SDP with clarabel: minimise `rho` subject to `t >= 0` and
/// `-M(rho, t)` in the PSD cone (upper triangle by columns, off-diagonals scaled by sqrt 2).
fn clarabel_t(p: &SdpProblem) -> Result<Tensor, LipError> {
    use clarabel::solver::SupportedConeT;
    let h = p.hidden() as usize;
    let r = p.r as usize;
    let n = r + h;
    let nvec = n * (n + 1) / 2;
    let sqrt2 = std::f64::consts::SQRT_2;
    let to_vec = |t: &Tensor| -> Vec<Vec<f64>> {
        Vec::<Vec<f64>>::try_from(&t.to_device(Device::Cpu)).unwrap_or_default()
    };
    let weights: Vec<Vec<Vec<f64>>> = p.ws.iter().map(to_vec).collect();
    // offs[k]: global index of the first neuron of hidden layer k (the input block is 0..r).
    let mut offs = vec![r];
    for w in &p.widths {
        offs.push(offs[offs.len() - 1] + *w as usize);
    }
    // Columns: rho, then t_g for every hidden neuron g.
    let ncols = 1 + h;
    let mut cols: Vec<Vec<(usize, f64)>> = vec![Vec::new(); ncols];
    // Nonnegative cone, rows 0..h: s = t.
    for g in 0..h {
        cols[1 + g].push((g, -1.0));
    }
    // PSD rows start at h; s = svec(-M), M = -rho E_in + sum_g t_g M_g + C.
    for i in 0..r {
        cols[0].push((h + tri(i, i), -1.0));
    }
    let m = p.widths.len();
    for k in 0..m {
        let prev = if k == 0 { 0 } else { offs[k - 1] };
        for (i, row) in weights[k].iter().enumerate() {
            let g = offs[k] + i;
            let col = &mut cols[1 + (g - r)];
            col.push((h + tri(g, g), -2.0));
            for (j, &v) in row.iter().enumerate() {
                if v != 0.0 {
                    col.push((h + tri(prev + j, g), sqrt2 * v));
                }
            }
        }
    }
    let mut b = vec![0.0; h + nvec];
    let last = &p.ws[m];
    let c = to_vec(&last.tr().matmul(last));
    let off = offs[m - 1];
    for i in 0..c.len() {
        for j in i..c.len() {
            let scale = if i == j { 1.0 } else { sqrt2 };
            b[h + tri(off + i, off + j)] = -scale * c[i][j];
        }
    }
    let cones = vec![
        SupportedConeT::NonnegativeConeT(h),
        SupportedConeT::PSDTriangleConeT(n),
    ];
    let x = clarabel_solve(ncols, cols, b, cones)?;
    let t: Vec<f64> = x[1..].iter().map(|v| v.max(0.0)).collect();
    Ok(Tensor::from_slice(&t).to_device(p.ws[0].device()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use crate::lipschitz::tests::{mlp, net_of, rel};
    use crate::lipschitz::{estimate, Estimator};
    use crate::model::LayerSpec;

    #[test]
    fn lipsdp_lies_between_the_empirical_and_the_product_bound() {
        let st = Settings::default();
        for (i, (d, hidden, k)) in [
            (4, vec![8], 3),
            (5, vec![6, 5], 2),
            (3, vec![5, 4, 3], 3),
            (6, vec![10], 4),
        ]
        .into_iter()
        .enumerate()
        {
            let net = mlp(d, &hidden, k, 10 + i as i64);
            let x = Tensor::rand([64, d], (Kind::Float, Device::Cpu));
            let r = estimate(
                &net,
                &[Estimator::Product, Estimator::Lipsdp, Estimator::Empirical],
                Some(&x),
                &st,
            )
            .unwrap();
            let (prod, sdp, emp) = (
                r.network["product"],
                r.network["lipsdp"],
                r.network["empirical"],
            );
            assert!(emp > 0.0);
            assert!(
                emp <= sdp * (1.0 + 1e-9),
                "{hidden:?}: empirical {emp} > lipsdp {sdp}"
            );
            assert!(
                sdp <= prod * (1.0 + 1e-9),
                "{hidden:?}: lipsdp {sdp} > product {prod}"
            );
            assert!(
                r.notes.iter().any(|n| n.contains("clarabel")),
                "{:?}",
                r.notes
            );
            // The first-order method is feasible for the same SDP: never below its optimum.
            let ws = mlp_weights(&net).unwrap();
            let first = lipsdp(
                &ws,
                &Settings {
                    lipsdp_clarabel_max_dim: 0,
                    ..Settings::default()
                },
            )
            .unwrap();
            assert_eq!(first.solver, "first-order");
            // The first-order start already certifies the product bound (up to 1 + 1e-6 per
            // layer), by construction.
            let p = SdpProblem::new(&ws);
            let t0 = p.initial_t().unwrap();
            let start = p.rho(&t0).unwrap().double_value(&[]).sqrt();
            assert!(
                start <= prod * (1.0 + 1e-5),
                "start {start} > product {prod}"
            );
            assert!(first.value <= start * (1.0 + 1e-12));
            assert!(
                sdp <= first.value * (1.0 + 1e-4),
                "clarabel {sdp} > first-order {}",
                first.value
            );
            assert!(
                first.value <= prod * (1.0 + 1e-5),
                "first-order {} > product {prod}",
                first.value
            );
        }
    }

    #[test]
    fn lipsdp_of_a_single_linear_layer_is_its_spectral_norm() {
        for seed in 0..3 {
            let net = mlp(7, &[], 5, seed);
            let ws = mlp_weights(&net).unwrap();
            assert_eq!(ws.len(), 1);
            let r = lipsdp(&ws, &Settings::default()).unwrap();
            assert_eq!(r.solver, "clarabel");
            let exact = exact_dense(&ws[0]);
            assert!(
                rel(r.value, exact).abs() < 1e-6,
                "lipsdp {} vs svd {exact}",
                r.value
            );
        }
    }

    #[test]
    fn lipsdp_folds_normalize_and_refuses_convnets() {
        tch::manual_seed(5);
        let cfg = ModelConfig {
            hidden: vec![6],
            ..ModelConfig::default()
        };
        let net = Network::from_config(
            &cfg,
            &[1, 2, 2],
            3,
            Some((vec![0.5], vec![0.25])),
            Device::Cpu,
        )
        .unwrap();
        let ws = mlp_weights(&net).unwrap();
        let Layer::Linear { weight, .. } = &net.layers[2] else {
            panic!("layer 2 is the first Linear: {:?}", net.specs)
        };
        let expect = weight.to_kind(Kind::Double) * 4.0;
        assert!((&ws[0] - expect).abs().max().double_value(&[]) < 1e-12);
        let conv = net_of(
            vec![
                LayerSpec::Conv2d {
                    in_channels: 1,
                    out_channels: 2,
                    kernel: 3,
                    stride: 1,
                    padding: 1,
                },
                LayerSpec::Relu,
                LayerSpec::Flatten,
                LayerSpec::Linear {
                    in_features: 32,
                    out_features: 2,
                },
            ],
            &[1, 4, 4],
            2,
            6,
        );
        let err = estimate(&conv, &[Estimator::Lipsdp], None, &Settings::default()).unwrap_err();
        assert!(
            err.to_string().contains("layer 0") && err.to_string().contains("conv"),
            "{err}"
        );
    }
}
