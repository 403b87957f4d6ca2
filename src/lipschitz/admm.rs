//! Training with a LipSDP certificate by ADMM (Pauli et al. 2021): (1) SGD on the loss plus
//! the coupling to the projected weights, (2) the projection onto the weights that the LipSDP
//! multipliers certify ([`admm_projection`], an SDP), (3) the dual update.
use super::clarabel::{clarabel_qp, tri};
use super::lipsdp::lipsdp;
use super::{LipError, Settings};
// The largest LMI [`admm_projection`] takes is a config limit (validated before a run starts).
use crate::config::ADMM_MAX_DIM;
use crate::model::{Layer, Network};
use tch::{Device, Kind, Tensor};

/// The second step of the ADMM of Pauli et al. 2021: the weights `Wbar_0..Wbar_m` nearest
/// (Frobenius) to `v` whose LipSDP-Neuron certificate with the multipliers `t` (one per hidden
/// neuron, held fixed: the matrix inequality is then linear in the weights after a Schur
/// complement on the last layer) is at most `rho`: with `rho_fixed = Some(L^2)` (the enforced
/// version); with `None`, `rho` is free and `mu rho` is added to the objective (the penalty
/// version; `mu` relative to the ADMM penalty). Solved with clarabel:
/// `min 1/2 ||Wbar - V||^2 (+ mu rho)` s.t.
/// `[[rho I, -(T_1 W_0)^T, ..], [-T_1 W_0, 2 T_1, ..], .., [.., 2 T_m, W_m^T], [.., W_m, I]] >= 0`.
/// Returns the weights (double, on `v`'s device) and `rho`.
pub fn admm_projection(
    v: &[Tensor],
    t: &[f64],
    rho_fixed: Option<f64>,
    mu: f64,
) -> Result<(Vec<Tensor>, f64), LipError> {
    use clarabel::solver::SupportedConeT;
    let m = v.len() - 1;
    if m == 0 {
        return Err(LipError::Solver(
            "the ADMM projection needs a hidden layer".into(),
        ));
    }
    let to_vec = |w: &Tensor| -> Vec<Vec<f64>> {
        Vec::<Vec<f64>>::try_from(&w.detach().to_kind(Kind::Double).to_device(Device::Cpu))
            .unwrap_or_default()
    };
    let vs: Vec<Vec<Vec<f64>>> = v.iter().map(to_vec).collect();
    let n_in = v[0].size()[1] as usize;
    let widths: Vec<usize> = v[..m].iter().map(|w| w.size()[0] as usize).collect();
    let n_out = v[m].size()[0] as usize;
    let h: usize = widths.iter().sum();
    if t.len() != h {
        return Err(LipError::Solver(format!(
            "{} multipliers for {h} hidden neurons",
            t.len()
        )));
    }
    let n = n_in + h + n_out;
    if n as i64 > ADMM_MAX_DIM {
        return Err(LipError::Solver(format!(
            "the ADMM projection's matrix inequality has dimension {n} (inputs + hidden + outputs); at most {ADMM_MAX_DIM} is supported"
        )));
    }
    let sqrt2 = std::f64::consts::SQRT_2;
    // Block offsets: input 0..n_in, hidden layer k from offs[k], outputs from offs[m].
    let mut offs = vec![n_in];
    for w in &widths {
        offs.push(offs[offs.len() - 1] + w);
    }
    // Columns: [rho when free], then every weight entry, layer by layer, row-major.
    let first = usize::from(rho_fixed.is_none());
    let nw: usize = vs.iter().map(|w| w.len() * w[0].len()).sum();
    let ncols = first + nw;
    let mut cols: Vec<Vec<(usize, f64)>> = vec![Vec::new(); ncols];
    let mut q = vec![0.0; ncols];
    let mut p_diag = vec![0.0; ncols];
    let mut b = vec![0.0; n * (n + 1) / 2];
    match rho_fixed {
        Some(rho) => (0..n_in).for_each(|i| b[tri(i, i)] = rho),
        None => {
            q[0] = mu;
            cols[0] = (0..n_in).map(|i| (tri(i, i), -1.0)).collect();
        }
    }
    for (g, &tg) in t.iter().enumerate() {
        b[tri(n_in + g, n_in + g)] = 2.0 * tg;
    }
    for o in 0..n_out {
        b[tri(offs[m] + o, offs[m] + o)] = 1.0;
    }
    let mut c = first;
    for (k, w) in vs.iter().enumerate() {
        // Layer k maps block `prev` (input or hidden k-1) to hidden k (or the outputs).
        let prev = if k == 0 { 0 } else { offs[k - 1] };
        for (i, row) in w.iter().enumerate() {
            let r = offs[k] + i;
            for (j, &vij) in row.iter().enumerate() {
                // s = b - A x: entry -t_r W_ij (hidden rows) or W_ij (outputs), times sqrt 2.
                let coef = if k < m { sqrt2 * t[r - n_in] } else { -sqrt2 };
                cols[c].push((tri(prev + j, r), coef));
                p_diag[c] = 1.0;
                q[c] = -vij;
                c += 1;
            }
        }
    }
    let x = clarabel_qp(
        &p_diag,
        q,
        cols,
        b,
        vec![SupportedConeT::PSDTriangleConeT(n)],
    )?;
    let rho = match rho_fixed {
        Some(r) => r,
        None => x[0],
    };
    let mut out = Vec::with_capacity(v.len());
    let mut c = first;
    for w in v {
        let (rows, cols_) = (w.size()[0], w.size()[1]);
        let len = (rows * cols_) as usize;
        out.push(
            Tensor::from_slice(&x[c..c + len])
                .reshape([rows, cols_])
                .to_device(w.device()),
        );
        c += len;
    }
    Ok((out, rho))
}

/// What one ADMM iteration did, for the log and `metrics.jsonl`.
#[derive(Debug, Clone, Copy)]
pub struct AdmmStep {
    /// Certified LipSDP value of the projected weights `Wbar` (re-solved, not the fixed-T one).
    pub projected_bound: f64,
    /// Primal residual `||W - Wbar||_F / ||W||_F`.
    pub residual: f64,
}

/// The state of the ADMM of Pauli et al. 2021 for a plain MLP (`[Flatten] Linear (ReLU
/// Linear)*`): the projected weights `Wbar` and the scaled duals `Y`, one per Linear layer
/// (double).
pub struct Admm {
    pub wbar: Vec<Tensor>,
    y: Vec<Tensor>,
    penalty: f64,
}

/// The Linear weights of a plain MLP, live (differentiable), in layer order.
fn linear_weights(net: &Network) -> Result<Vec<Tensor>, String> {
    let mut ws = Vec::new();
    for (i, layer) in net.layers.iter().enumerate() {
        match layer {
            Layer::Linear { weight, .. } => ws.push(weight.shallow_clone()),
            Layer::Relu | Layer::Flatten => {}
            other => {
                return Err(format!(
                    "ADMM trains plain MLPs; layer {i} is `{}`",
                    other.kind_name()
                ))
            }
        }
    }
    if ws.len() < 2 {
        return Err("ADMM needs at least one hidden layer".into());
    }
    Ok(ws)
}

impl Admm {
    /// Starts from `Wbar = W`, `Y = 0`.
    pub fn new(net: &Network, penalty: f64) -> Result<Admm, String> {
        let ws = linear_weights(net)?;
        let wbar = ws
            .iter()
            .map(|w| w.detach().to_kind(Kind::Double).copy())
            .collect();
        let y = ws
            .iter()
            .map(|w| Tensor::zeros(w.size().as_slice(), (Kind::Double, w.device())))
            .collect();
        Ok(Admm { wbar, y, penalty })
    }

    /// The coupling term of the W-step: `penalty / 2 sum_k ||W_k - Wbar_k + Y_k / penalty||^2`
    /// (differentiable in the network's weights).
    pub fn coupling(&self, net: &Network) -> Tensor {
        let ws = linear_weights(net).unwrap_or_default();
        let mut total = Tensor::zeros([], (Kind::Float, net.device()));
        for ((w, wbar), y) in ws.iter().zip(&self.wbar).zip(&self.y) {
            let target = (wbar - y / self.penalty).to_kind(Kind::Float);
            total = total + (w - target).square().sum(Kind::Float);
        }
        total * (self.penalty / 2.0)
    }

    /// The SDP step and the dual update: `Wbar = projection(W + Y / penalty)` with the LipSDP
    /// multipliers of that point held fixed, then `Y += penalty (W - Wbar)`. `target`: the
    /// enforced bound (else `mu` weighs `L^2` in the penalty version).
    pub fn step(
        &mut self,
        net: &Network,
        target: Option<f64>,
        mu: f64,
    ) -> Result<AdmmStep, String> {
        tch::no_grad(|| {
            let ws: Vec<Tensor> = linear_weights(net)?
                .iter()
                .map(|w| w.detach().to_kind(Kind::Double))
                .collect();
            let v: Vec<Tensor> = ws
                .iter()
                .zip(&self.y)
                .map(|(w, y)| w + y / self.penalty)
                .collect();
            let lip = lipsdp(&v, &Settings::default()).map_err(|e| e.to_string())?;
            // Zero multipliers would pin the matching last-layer weights to 0: floor them.
            let top = lip.t.iter().cloned().fold(0.0, f64::max).max(1e-12);
            let t: Vec<f64> = lip.t.iter().map(|&x| x.max(1e-3 * top)).collect();
            // A hair inside the target, so that the float32 copy stays below it.
            let rho_fixed = target.map(|l| (l * (1.0 - 1e-6)).powi(2));
            let (mut wbar, _) =
                admm_projection(&v, &t, rho_fixed, mu / self.penalty).map_err(|e| e.to_string())?;
            let mut bound = lipsdp(&wbar, &Settings::default())
                .map_err(|e| e.to_string())?
                .value;
            if let Some(l) = target {
                // The interior-point answer may sit a rounding error outside the set: ReLU
                // MLPs are positively homogeneous, so scaling every layer by s scales the
                // Lipschitz constant (and its LipSDP bound) by s^(layers).
                for _ in 0..3 {
                    if bound <= l * (1.0 - 1e-7) {
                        break;
                    }
                    let s = (l * (1.0 - 1e-6) / bound).powf(1.0 / wbar.len() as f64);
                    wbar = wbar.iter().map(|w| w * s).collect();
                    bound = lipsdp(&wbar, &Settings::default())
                        .map_err(|e| e.to_string())?
                        .value;
                }
            }
            let mut diff = 0.0;
            let mut norm = 0.0;
            for (k, w) in ws.iter().enumerate() {
                let d = w - &wbar[k];
                diff += d.square().sum(Kind::Double).double_value(&[]);
                norm += w.square().sum(Kind::Double).double_value(&[]);
                self.y[k] = &self.y[k] + d * self.penalty;
            }
            self.wbar = wbar;
            Ok(AdmmStep {
                projected_bound: bound,
                residual: (diff / norm.max(1e-300)).sqrt(),
            })
        })
    }

    /// Starts the enforced version inside the set: projects the initial weights onto it, puts
    /// the projection into the network, and clears the duals. Returns the projected bound.
    pub fn start_inside(&mut self, net: &Network, target: f64) -> Result<f64, String> {
        let st = self.step(net, Some(target), 0.0)?;
        self.swap_in(net);
        for y in &mut self.y {
            *y = y.zeros_like();
        }
        Ok(st.projected_bound)
    }

    /// Copies `Wbar` into the network (float32); returns the weights it replaced, for
    /// [`Admm::restore`].
    pub fn swap_in(&self, net: &Network) -> Vec<Tensor> {
        tch::no_grad(|| {
            let ws = linear_weights(net).unwrap_or_default();
            ws.into_iter()
                .zip(&self.wbar)
                .map(|(mut w, wbar)| {
                    let old = w.detach().copy();
                    w.copy_(&wbar.to_kind(w.kind()));
                    old
                })
                .collect()
        })
    }

    /// Puts back the weights [`Admm::swap_in`] replaced.
    pub fn restore(net: &Network, saved: &[Tensor]) {
        tch::no_grad(|| {
            for (mut w, old) in linear_weights(net)
                .unwrap_or_default()
                .into_iter()
                .zip(saved)
            {
                w.copy_(old);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lipschitz::lipsdp::SdpProblem;

    const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

    #[test]
    fn admm_projection_is_feasible_and_nearer_than_rescaling() {
        for (seed, dims) in [
            (0, vec![3, 8, 6, 2]),
            (1, vec![2, 10, 3]),
            (2, vec![4, 5, 5, 5, 3]),
        ] {
            tch::manual_seed(400 + seed);
            let v: Vec<Tensor> = dims
                .windows(2)
                .map(|d| Tensor::randn([d[1], d[0]], F64))
                .collect();
            let lip = lipsdp(&v, &Settings::default()).unwrap();
            let top = lip.t.iter().cloned().fold(0.0, f64::max);
            let t: Vec<f64> = lip.t.iter().map(|&x| x.max(1e-3 * top)).collect();
            let tt = Tensor::from_slice(&t);
            // rho(T, W) by the Cholesky formula: independent of the LMI given to clarabel.
            let rho_t = |ws: &[Tensor]| {
                SdpProblem::new(ws)
                    .rho(&tt)
                    .map_or(f64::INFINITY, |r| r.double_value(&[]))
            };
            let dist = |a: &[Tensor], b: &[Tensor]| {
                a.iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).square().sum(Kind::Double).double_value(&[]))
                    .sum::<f64>()
                    .sqrt()
            };
            // Already inside: nothing moves.
            let loose = 2.0 * rho_t(&v).sqrt();
            let (same, _) = admm_projection(&v, &t, Some(loose * loose), 0.0).unwrap();
            let norm_v = dist(&v, &v.iter().map(|w| w.zeros_like()).collect::<Vec<_>>());
            assert!(
                dist(&same, &v) <= 1e-4 * norm_v,
                "{dims:?}: moved a feasible point"
            );
            // Enforced at half the bound.
            let l = 0.5 * lip.value;
            let (wbar, rho) = admm_projection(&v, &t, Some(l * l), 0.0).unwrap();
            assert_eq!(rho, l * l);
            let got = rho_t(&wbar);
            assert!(
                got <= l * l * (1.0 + 1e-5),
                "{dims:?}: rho_T(Wbar) {got} > {}",
                l * l
            );
            let certified = lipsdp(&wbar, &Settings::default()).unwrap().value;
            assert!(
                certified <= l * (1.0 + 1e-5),
                "{dims:?}: LipSDP {certified} > {l}"
            );
            // Feasible alternatives with the same multipliers are no nearer: uniform scaling
            // and scaling of the last layer alone (largest feasible factor on a fine grid).
            let d = dist(&wbar, &v);
            for last_only in [false, true] {
                let scaled = |s: f64| -> Vec<Tensor> {
                    v.iter()
                        .enumerate()
                        .map(|(k, w)| {
                            if !last_only || k == v.len() - 1 {
                                w * s
                            } else {
                                w.copy()
                            }
                        })
                        .collect()
                };
                let best = (1..=2000)
                    .rev()
                    .map(|i| i as f64 / 2000.0)
                    .find(|&s| rho_t(&scaled(s)) <= l * l);
                if let Some(s) = best {
                    let alt = dist(&scaled(s), &v);
                    assert!(
                        d <= alt * (1.0 + 1e-4) + 1e-6,
                        "{dims:?}: {d} > rescaling {alt}"
                    );
                }
            }
            // Penalty version: rho is free and pulled below rho_T(V); the LMI holds at it.
            let (wpen, rho_pen) = admm_projection(&v, &t, None, 10.0).unwrap();
            assert!(
                rho_pen < rho_t(&v),
                "{dims:?}: {rho_pen} not below {}",
                rho_t(&v)
            );
            assert!(rho_t(&wpen) <= rho_pen * (1.0 + 1e-5), "{dims:?}");
        }
    }
}
