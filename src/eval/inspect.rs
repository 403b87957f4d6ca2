//! The bound microscope: one input, one ball, every layer. For each neuron whose output feeds
//! a ReLU (and for the logits), the pre-activation interval that each bound method works with
//! (IBP; CROWN-IBP, whose hidden bounds are IBP's; Fast-Lin and CROWN, whose hidden bounds are
//! exact backward passes), against the empirical range found by sampling and by PGD on that
//! neuron; each class's margin lower bound; the certified radius of each method and the PGD
//! radius, found by bisection on eps; and the margin against eps.
//!
//! Nothing here is a second bound implementation: the intervals are the ones
//! `bounds::ibp_layer_bounds`, `bounds::relu_bounds` and `bounds::logit_bounds` compute for
//! certification. Everything runs on a float64 copy of the network, so that a tight interval
//! and an empirical extreme that meet (IBP is exact on the first affine layer) are not
//! separated by float32 rounding.
//!
//! Radii. A bound is sound at each eps where it is computed, so "certified at r" (a tested
//! eps) means the point is robust on the whole ball of radius r, monotone or not; PGD
//! succeeding at r' (a tested eps) means it is not robust there. Hence every certified radius
//! reported is strictly below the PGD radius reported, whatever the bisection does between.
use super::empirical::{empirical_ranges, Search};
use crate::attack::{self, AttackLoss, PgdConfig};
use crate::bounds::{self, Ball, BoundMethod};
use crate::config::Norm;
use crate::model::{layers_f64, Layer, Network};
use std::sync::atomic::{AtomicBool, Ordering};
use tch::{nn, Device, Kind, Tensor};

/// What to compute and how hard to search.
#[derive(Debug, Clone, PartialEq)]
pub struct InspectOptions {
    pub methods: Vec<BoundMethod>,
    /// The empirical range: sampling and PGD on each neuron.
    pub search: Search,
    /// PGD (margin loss) per eps tried for the PGD radius and the adversarial example.
    pub pgd_steps: u32,
    pub pgd_restarts: u32,
    /// Bisection steps of each radius (the bracket halves at each).
    pub bisect_steps: u32,
    /// Points of the margin-against-eps curve.
    pub curve_points: usize,
}

impl InspectOptions {
    /// A lighter search for the GUI, where an answer should come within a fraction of a
    /// second after the eps slider stops: fewer samples, one start per neuron, a coarser
    /// bisection and curve. The ranges are still inner bounds (every point is feasible).
    pub fn interactive(methods: Vec<BoundMethod>) -> Self {
        InspectOptions {
            methods,
            search: Search {
                samples: 128,
                steps: 15,
                restarts: 1,
            },
            pgd_steps: 20,
            pgd_restarts: 1,
            bisect_steps: 12,
            curve_points: 16,
        }
    }
}

impl Default for InspectOptions {
    fn default() -> Self {
        InspectOptions {
            methods: BoundMethod::ONE_PASS.to_vec(),
            search: Search {
                samples: 256,
                steps: 30,
                restarts: 2,
            },
            pgd_steps: 40,
            pgd_restarts: 2,
            bisect_steps: 16,
            curve_points: 24,
        }
    }
}

/// Per-neuron bounds `lower[j] <= z_j <= upper[j]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Interval {
    pub lower: Vec<f64>,
    pub upper: Vec<f64>,
}

impl Interval {
    pub(super) fn from_tensors(lo: &Tensor, hi: &Tensor) -> Self {
        Interval {
            lower: to_vec(lo),
            upper: to_vec(hi),
        }
    }
}

fn to_vec(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(
        t.detach()
            .flatten(0, -1)
            .to_kind(Kind::Double)
            .to_device(Device::Cpu),
    )
    .unwrap_or_default()
}

/// One layer whose output is a pre-activation (it feeds a ReLU) or the logits.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerInspection {
    /// Index in the network's layer list.
    pub layer: usize,
    /// `linear`, `conv`, ... ([`Layer::kind_name`]).
    pub kind: &'static str,
    /// Whether a ReLU follows (false: the logits).
    pub relu_after: bool,
    pub methods: Vec<(BoundMethod, Interval)>,
    pub empirical: Interval,
    /// Per linear relaxation: the real pre-activation of each neuron at the input where the
    /// relaxed bound of the worst margin row is attained (`bounds::relaxed_optimum`).
    pub optimum: Vec<(BoundMethod, Vec<f64>)>,
}

/// Everything at one eps.
#[derive(Debug, Clone, PartialEq)]
pub struct PointBounds {
    pub label: i64,
    pub predicted: i64,
    pub eps: f64,
    pub norm: Norm,
    pub layers: Vec<LayerInspection>,
    /// Per method, `z_y - z_t` lower bounds for every class `t` (entry `label` is 0).
    pub margins: Vec<(BoundMethod, Vec<f64>)>,
    /// The PGD (margin loss) point of lowest margin at eps, flattened, and its margin.
    pub x_adv: Vec<f64>,
    pub pgd_margin: f64,
}

/// The worst margin lower bound of each method against eps, and PGD's lowest margin found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MarginCurve {
    pub eps: Vec<f64>,
    pub methods: Vec<(BoundMethod, Vec<f64>)>,
    pub pgd: Vec<f64>,
}

/// Certified radius per method and the PGD radius (`None`: PGD never succeeded up to the
/// largest eps that matters, the whole data box).
#[derive(Debug, Clone, PartialEq)]
pub struct Radii {
    pub methods: Vec<(BoundMethod, f64)>,
    pub pgd: Option<f64>,
    pub curve: MarginCurve,
}

/// A float64 copy of a network, ready for inspection of any of its inputs.
pub struct Microscope {
    net: Network,
}

impl Microscope {
    /// Refuses networks the bound code cannot walk (1-Lipschitz layers).
    pub fn new(net: &Network) -> Result<Self, String> {
        bounds::check_supported(net)?;
        let copy = Network {
            vs: nn::VarStore::new(net.device()),
            layers: layers_f64(&bounds::walked(net)),
            specs: net.specs.clone(),
            input_shape: net.input_shape.clone(),
            num_classes: net.num_classes,
        };
        Ok(Microscope { net: copy })
    }

    pub fn network(&self) -> &Network {
        &self.net
    }

    /// One input `[..input]` or `[1, ..input]` as a float64 batch of one on the device.
    fn batch(&self, x: &Tensor) -> Tensor {
        let x = x.to_kind(Kind::Double).to_device(self.net.device());
        if x.dim() == self.net.input_shape.len() {
            x.unsqueeze(0)
        } else {
            x
        }
    }

    fn label(&self, y: i64) -> Tensor {
        Tensor::from_slice(&[y]).to_device(self.net.device())
    }

    /// The largest eps worth trying: beyond it the ball contains the whole data box.
    pub fn eps_limit(&self, norm: Norm) -> f64 {
        match norm {
            Norm::Linf => 1.0,
            Norm::L2 => (self.net.input_shape.iter().product::<i64>() as f64).sqrt(),
        }
    }

    /// Layers whose output is inspected: every ReLU's input and the last layer.
    fn inspected(&self) -> Vec<usize> {
        let layers = &self.net.layers;
        let mut out: Vec<usize> = (1..layers.len())
            .filter(|&i| matches!(layers[i], Layer::Relu))
            .map(|i| i - 1)
            .collect();
        out.push(layers.len() - 1);
        out
    }

    /// Per method, the interval of every inspected layer's output (in [`Self::inspected`] order).
    fn method_intervals(&self, x: &Tensor, ball: Ball, method: BoundMethod) -> Vec<Interval> {
        let net = &self.net;
        let mut out: Vec<Interval> = bounds::relu_bounds(net, x, ball, method.relaxed())
            .iter()
            .map(|(l, u)| Interval::from_tensors(l, u))
            .collect();
        let (lo, hi) = bounds::logit_bounds(net, x, ball, method);
        out.push(Interval::from_tensors(&lo, &hi));
        out
    }

    /// Real pre-activations of the inspected layers at the relaxed optimum of the worst row.
    fn optimum(
        &self,
        x: &Tensor,
        y: &Tensor,
        ball: Ball,
        method: BoundMethod,
        margins: &[f64],
    ) -> Option<Vec<Vec<f64>>> {
        let relaxed = method.relaxed()?;
        let label = y.int64_value(&[0]);
        let worst = (0..margins.len())
            .filter(|&t| t as i64 != label)
            .min_by(|&a, &b| margins[a].total_cmp(&margins[b]))?;
        let opt = bounds::relaxed_optimum(&self.net, x, y, ball, relaxed);
        let mut h = opt.select(1, worst as i64);
        let inspected = self.inspected();
        let mut out = Vec::new();
        for (i, layer) in self.net.layers.iter().enumerate() {
            h = layer.forward(&h);
            if inspected.contains(&i) {
                out.push(to_vec(&h));
            }
        }
        Some(out)
    }

    /// Every layer's intervals, the empirical ranges, the margin bounds and the PGD point at
    /// one eps. `None` when `cancel` was raised.
    pub fn bounds_at(
        &self,
        x: &Tensor,
        label: i64,
        ball: Ball,
        opts: &InspectOptions,
        cancel: &AtomicBool,
    ) -> Option<PointBounds> {
        let x = self.batch(x);
        let y = self.label(label);
        let net = &self.net;
        let inspected = self.inspected();
        let mut per_method = Vec::new();
        let mut margins = Vec::new();
        let mut optima = Vec::new();
        for &m in &opts.methods {
            if cancel.load(Ordering::Relaxed) {
                return None;
            }
            let (intervals, margin, optimum) = tch::no_grad(|| {
                let intervals = self.method_intervals(&x, ball, m);
                let margin = to_vec(&bounds::margin_lower(net, &x, &y, ball, m));
                let optimum = self.optimum(&x, &y, ball, m, &margin);
                (intervals, margin, optimum)
            });
            per_method.push(intervals);
            margins.push((m, margin));
            if let Some(o) = optimum {
                optima.push((m, o));
            }
        }
        let empirical = empirical_ranges(net, &x, ball, &inspected, opts.search, cancel)?;
        let pgd = attack::pgd(net, &x, &y, &self.pgd(ball, opts));
        let predicted = tch::no_grad(|| net.forward(&x).argmax(1, false).int64_value(&[0]));
        let layers = inspected
            .iter()
            .enumerate()
            .zip(empirical)
            .map(|((k, &layer), empirical)| LayerInspection {
                layer,
                kind: net.layers[layer].kind_name(),
                relu_after: layer + 1 < net.layers.len(),
                methods: opts
                    .methods
                    .iter()
                    .zip(&per_method)
                    .map(|(&m, iv)| (m, iv[k].clone()))
                    .collect(),
                empirical,
                optimum: optima.iter().map(|(m, o)| (*m, o[k].clone())).collect(),
            })
            .collect();
        Some(PointBounds {
            label,
            predicted,
            eps: ball.eps,
            norm: ball.norm,
            layers,
            margins,
            x_adv: to_vec(&pgd.x_adv),
            pgd_margin: pgd.margin.double_value(&[0]),
        })
    }

    fn pgd(&self, ball: Ball, opts: &InspectOptions) -> PgdConfig {
        PgdConfig::evaluation(
            ball.eps,
            ball.norm,
            opts.pgd_steps,
            opts.pgd_restarts,
            AttackLoss::Margin,
        )
    }

    /// The smallest margin lower bound over the other classes at `ball`.
    fn worst_bound(&self, x: &Tensor, y: &Tensor, ball: Ball, method: BoundMethod) -> f64 {
        tch::no_grad(|| {
            let m = bounds::margin_lower(&self.net, x, y, ball, method);
            bounds::worst_margin(&m, y).double_value(&[0])
        })
    }

    /// The lowest margin PGD finds at `ball`.
    fn pgd_margin(&self, x: &Tensor, y: &Tensor, ball: Ball, opts: &InspectOptions) -> f64 {
        attack::pgd(&self.net, x, y, &self.pgd(ball, opts))
            .margin
            .double_value(&[0])
    }

    /// Certified radius of each method and the PGD radius, by bisection on eps over
    /// `[0, eps_limit]`, and the margin-against-eps curve up to a little past the largest of
    /// them (and past `show_eps`). `None` when `cancel` was raised.
    pub fn radii(
        &self,
        x: &Tensor,
        label: i64,
        norm: Norm,
        show_eps: f64,
        opts: &InspectOptions,
        cancel: &AtomicBool,
    ) -> Option<Radii> {
        let x = self.batch(x);
        let y = self.label(label);
        let limit = self.eps_limit(norm);
        let ball = |eps| Ball { eps, norm };
        let mut methods = Vec::new();
        for &m in &opts.methods {
            let certified = |eps: f64| self.worst_bound(&x, &y, ball(eps), m) > 0.0;
            let r = last_true(certified, limit, opts.bisect_steps, cancel)?;
            methods.push((m, r));
        }
        let broken = |eps: f64| self.pgd_margin(&x, &y, ball(eps), opts) < 0.0;
        let pgd = first_true(broken, limit, opts.bisect_steps, cancel)?;
        let top = methods
            .iter()
            .map(|(_, r)| *r)
            .chain(pgd)
            .chain(std::iter::once(show_eps))
            .fold(0.0f64, f64::max);
        let top = if top > 0.0 {
            (1.5 * top).min(limit)
        } else {
            0.1 * limit
        };
        let n = opts.curve_points.max(2);
        let mut curve = MarginCurve {
            eps: (0..n).map(|k| top * k as f64 / (n - 1) as f64).collect(),
            ..Default::default()
        };
        for &m in &opts.methods {
            let mut v = Vec::with_capacity(n);
            for &e in &curve.eps {
                if cancel.load(Ordering::Relaxed) {
                    return None;
                }
                v.push(self.worst_bound(&x, &y, ball(e), m));
            }
            curve.methods.push((m, v));
        }
        for &e in &curve.eps.clone() {
            if cancel.load(Ordering::Relaxed) {
                return None;
            }
            curve.pgd.push(self.pgd_margin(&x, &y, ball(e), opts));
        }
        Some(Radii {
            methods,
            pgd,
            curve,
        })
    }

    /// Which points `[N, ..input]` each method certifies at `ball` (`[N]` per method).
    pub fn certify_points(
        &self,
        x: &Tensor,
        y: &Tensor,
        ball: Ball,
        method: BoundMethod,
    ) -> Vec<bool> {
        let x = x.to_kind(Kind::Double).to_device(self.net.device());
        let y = y.to_device(self.net.device());
        tch::no_grad(|| {
            let m = bounds::margin_lower(&self.net, &x, &y, ball, method);
            let c = bounds::certified(&m, &y);
            Vec::<bool>::try_from(c.to_device(Device::Cpu)).unwrap_or_default()
        })
    }

    /// Per point, the largest eps of `grid` (increasing) at which `method` certifies it and at
    /// every smaller grid eps (0 when not even at the first).
    pub fn certified_radii_on_grid(
        &self,
        x: &Tensor,
        y: &Tensor,
        norm: Norm,
        method: BoundMethod,
        grid: &[f64],
        cancel: &AtomicBool,
    ) -> Option<Vec<f64>> {
        let n = y.size()[0] as usize;
        let mut radius = vec![0.0; n];
        let mut alive = vec![true; n];
        for &eps in grid {
            if cancel.load(Ordering::Relaxed) {
                return None;
            }
            let cert = self.certify_points(x, y, Ball { eps, norm }, method);
            for i in 0..n {
                alive[i] = alive[i] && cert.get(i).copied().unwrap_or(false);
                if alive[i] {
                    radius[i] = eps;
                }
            }
            if !alive.iter().any(|&a| a) {
                break;
            }
        }
        Some(radius)
    }
}

/// Bisection over `[0, limit]` on a predicate `p` that holds up to some eps and fails beyond:
/// `(last, first)`, the largest tested eps where `p` held (`None`: it fails at 0) and the
/// smallest where it failed (`None`: it holds at `limit`). Every reported eps was tested.
/// `None` when cancelled.
#[allow(clippy::type_complexity)]
fn bisect(
    mut p: impl FnMut(f64) -> bool,
    limit: f64,
    steps: u32,
    cancel: &AtomicBool,
) -> Option<(Option<f64>, Option<f64>)> {
    if !p(0.0) {
        return Some((None, Some(0.0)));
    }
    if p(limit) {
        return Some((Some(limit), None));
    }
    let (mut lo, mut hi) = (0.0, limit);
    for _ in 0..steps {
        if cancel.load(Ordering::Relaxed) {
            return None;
        }
        let mid = 0.5 * (lo + hi);
        if p(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some((Some(lo), Some(hi)))
}

/// The largest tested eps in `[0, limit]` where `holds` was true (0 when it fails at 0).
fn last_true(
    holds: impl FnMut(f64) -> bool,
    limit: f64,
    steps: u32,
    cancel: &AtomicBool,
) -> Option<f64> {
    bisect(holds, limit, steps, cancel).map(|(last, _)| last.unwrap_or(0.0))
}

/// The smallest tested eps in `[0, limit]` where `holds` was true (`Some(None)` when it fails
/// at `limit`).
fn first_true(
    mut holds: impl FnMut(f64) -> bool,
    limit: f64,
    steps: u32,
    cancel: &AtomicBool,
) -> Option<Option<f64>> {
    bisect(|e| !holds(e), limit, steps, cancel).map(|(_, first)| first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LayerSpec;

    fn lin(i: i64, o: i64) -> LayerSpec {
        LayerSpec::Linear {
            in_features: i,
            out_features: o,
        }
    }

    fn mlp(d: i64, hidden: &[i64], k: i64, seed: i64) -> Network {
        tch::manual_seed(seed);
        let mut specs = Vec::new();
        let mut w = d;
        for &h in hidden {
            specs.push(lin(w, h));
            specs.push(LayerSpec::Relu);
            w = h;
        }
        specs.push(lin(w, k));
        Network::new(specs, &[d], k, Device::Cpu).unwrap()
    }

    /// Normalize, two convs (one strided), flatten and two dense layers.
    fn convnet(seed: i64) -> Network {
        tch::manual_seed(seed);
        let conv = |i, o, k, s, p| LayerSpec::Conv2d {
            in_channels: i,
            out_channels: o,
            kernel: k,
            stride: s,
            padding: p,
        };
        let specs = vec![
            LayerSpec::Normalize {
                mean: vec![0.4],
                std: vec![0.7],
            },
            conv(1, 3, 4, 2, 1),
            LayerSpec::Relu,
            conv(3, 4, 3, 1, 1),
            LayerSpec::Relu,
            LayerSpec::Flatten,
            lin(36, 10),
            LayerSpec::Relu,
            lin(10, 3),
        ];
        Network::new(specs, &[1, 7, 7], 3, Device::Cpu).unwrap()
    }

    fn quick() -> InspectOptions {
        InspectOptions {
            search: Search {
                samples: 128,
                steps: 20,
                restarts: 2,
            },
            pgd_steps: 20,
            bisect_steps: 12,
            curve_points: 6,
            ..Default::default()
        }
    }

    fn never() -> AtomicBool {
        AtomicBool::new(false)
    }

    /// A sound bound contains every value the network takes on the ball; the empirical range
    /// is made of such values.
    fn assert_contains(pb: &PointBounds, what: &str) {
        for l in &pb.layers {
            for (m, iv) in &l.methods {
                for j in 0..iv.lower.len() {
                    let (el, eu) = (l.empirical.lower[j], l.empirical.upper[j]);
                    let tol = 1e-9 * (1.0 + eu.abs().max(el.abs()));
                    assert!(
                        iv.lower[j] <= el + tol && eu <= iv.upper[j] + tol,
                        "{what}: layer {} neuron {j}: {} [{}, {}] does not contain [{el}, {eu}]",
                        l.layer,
                        m.name(),
                        iv.lower[j],
                        iv.upper[j]
                    );
                }
            }
        }
    }

    #[test]
    fn every_method_contains_the_empirical_range_on_random_nets() {
        for (seed, norm, eps) in [
            (1, Norm::Linf, 0.05),
            (2, Norm::L2, 0.3),
            (3, Norm::Linf, 0.2),
        ] {
            let net = mlp(5, &[12, 9], 4, seed);
            let scope = Microscope::new(&net).unwrap();
            let x = Tensor::rand([5], (Kind::Double, Device::Cpu));
            let pb = scope
                .bounds_at(&x, 1, Ball { eps, norm }, &quick(), &never())
                .unwrap();
            assert_eq!(pb.layers.len(), 3);
            assert_eq!(pb.layers[0].empirical.lower.len(), 12);
            assert_contains(&pb, &format!("mlp seed {seed} {} {eps}", norm.name()));
        }
        let net = convnet(4);
        let scope = Microscope::new(&net).unwrap();
        let x = Tensor::rand([1, 7, 7], (Kind::Double, Device::Cpu));
        for (norm, eps) in [(Norm::Linf, 0.03), (Norm::L2, 0.2)] {
            let pb = scope
                .bounds_at(&x, 0, Ball { eps, norm }, &quick(), &never())
                .unwrap();
            assert_eq!(pb.layers[0].kind, "conv");
            assert_eq!(pb.layers[0].empirical.lower.len(), 3 * 3 * 3);
            assert_contains(&pb, &format!("convnet {}", norm.name()));
        }
    }

    /// On the first affine layer the interval of every method is IBP's, which is exact for an
    /// affine map of a box: the neuron search must reach both ends (a vertex of the box).
    #[test]
    fn the_neuron_search_reaches_the_exact_range_of_the_first_layer() {
        let net = mlp(6, &[10], 3, 7);
        let scope = Microscope::new(&net).unwrap();
        let x = Tensor::rand([6], (Kind::Double, Device::Cpu)) * 0.6 + 0.2;
        let ball = Ball {
            eps: 0.1,
            norm: Norm::Linf,
        };
        let pb = scope.bounds_at(&x, 0, ball, &quick(), &never()).unwrap();
        let first = &pb.layers[0];
        let ibp = &first.methods[0].1;
        for j in 0..10 {
            assert!((first.empirical.lower[j] - ibp.lower[j]).abs() < 1e-9);
            assert!((first.empirical.upper[j] - ibp.upper[j]).abs() < 1e-9);
        }
        // l_2, the ball inside the box: the range is w.x + b -+ eps ||w||_2 (closed form).
        let ball = Ball {
            eps: 0.1,
            norm: Norm::L2,
        };
        let pb = scope.bounds_at(&x, 0, ball, &quick(), &never()).unwrap();
        let Layer::Linear { weight, bias } = &scope.network().layers[0] else {
            unreachable!("an MLP starts with a linear layer")
        };
        let xb = scope.batch(&x);
        let centre = to_vec(&xb.matmul(&weight.tr()).squeeze_dim(0).g_add(bias));
        let reach = to_vec(
            &(weight
                .square()
                .sum_dim_intlist([1i64].as_slice(), false, None::<Kind>)
                .sqrt()
                * 0.1),
        );
        let e = &pb.layers[0].empirical;
        for j in 0..10 {
            assert!(
                (e.lower[j] - (centre[j] - reach[j])).abs() < 1e-6,
                "neuron {j} lower"
            );
            assert!(
                (e.upper[j] - (centre[j] + reach[j])).abs() < 1e-6,
                "neuron {j} upper"
            );
        }
    }

    /// What the methods guarantee between them: CROWN-IBP's hidden intervals are IBP's;
    /// Fast-Lin's and CROWN's exact hidden intervals are intersected with IBP's, so inside them.
    /// (Nothing is asserted between the methods' logit bounds or radii: not guaranteed.)
    #[test]
    fn hidden_intervals_are_ordered_where_the_construction_guarantees_it() {
        let net = mlp(4, &[16, 16, 8], 3, 11);
        let scope = Microscope::new(&net).unwrap();
        let x = Tensor::rand([4], (Kind::Double, Device::Cpu));
        let ball = Ball {
            eps: 0.15,
            norm: Norm::Linf,
        };
        let pb = scope.bounds_at(&x, 2, ball, &quick(), &never()).unwrap();
        for l in pb.layers.iter().filter(|l| l.relu_after) {
            let ibp = &l.methods[0].1;
            assert_eq!(l.methods[1].0, BoundMethod::CrownIbp);
            assert_eq!(&l.methods[1].1, ibp);
            for (_, iv) in &l.methods[2..] {
                for j in 0..ibp.lower.len() {
                    assert!(iv.lower[j] >= ibp.lower[j] && iv.upper[j] <= ibp.upper[j]);
                }
            }
        }
        // The margins: each method's lower bound is below the margin PGD reaches.
        for (m, margins) in &pb.margins {
            let worst = (0..3)
                .filter(|&t| t != 2)
                .map(|t| margins[t])
                .fold(f64::INFINITY, f64::min);
            assert!(worst <= pb.pgd_margin + 1e-9, "{}", m.name());
        }
    }

    #[test]
    fn each_certified_radius_is_below_the_pgd_radius_and_certifies() {
        let mut broken = 0;
        for seed in 5..11 {
            let norm = if seed % 2 == 0 { Norm::L2 } else { Norm::Linf };
            let net = mlp(3, &[10, 10], 3, seed);
            let scope = Microscope::new(&net).unwrap();
            let x = Tensor::rand([3], (Kind::Double, Device::Cpu));
            let label = tch::no_grad(|| {
                scope
                    .network()
                    .forward(&scope.batch(&x))
                    .argmax(1, false)
                    .int64_value(&[0])
            });
            let r = scope
                .radii(&x, label, norm, 0.01, &quick(), &never())
                .unwrap();
            // Some random nets give one class the whole box: nothing to break there.
            let pgd = r.pgd.unwrap_or(f64::INFINITY);
            broken += usize::from(r.pgd.is_some());
            assert!(pgd > 0.0, "the point is classified correctly");
            let y = scope.label(label);
            let xb = scope.batch(&x);
            for (m, radius) in &r.methods {
                assert!(*radius <= pgd, "{}: {radius} > pgd {pgd}", m.name());
                let ball = Ball { eps: *radius, norm };
                assert!(scope.worst_bound(&xb, &y, ball, *m) > 0.0, "{}", m.name());
            }
            // The curve: every bound below PGD's margin at every eps.
            for (m, v) in &r.curve.methods {
                for (k, b) in v.iter().enumerate() {
                    assert!(
                        *b <= r.curve.pgd[k] + 1e-9,
                        "{} at {}",
                        m.name(),
                        r.curve.eps[k]
                    );
                }
            }
        }
        assert!(broken >= 3, "only {broken} of 6 points had a PGD radius");
    }

    #[test]
    fn bisection_finds_a_threshold_to_its_resolution() {
        let cancel = never();
        let t = 0.3137;
        let lo = last_true(|e| e < t, 1.0, 20, &cancel).unwrap();
        let hi = first_true(|e| e >= t, 1.0, 20, &cancel).unwrap().unwrap();
        assert!(lo < t && t - lo < 2e-6, "{lo}");
        assert!(hi >= t && hi - t < 2e-6, "{hi}");
        assert_eq!(last_true(|_| false, 1.0, 20, &cancel), Some(0.0));
        assert_eq!(last_true(|_| true, 1.0, 20, &cancel), Some(1.0));
        assert_eq!(first_true(|_| false, 1.0, 20, &cancel), Some(None));
        let raised = AtomicBool::new(true);
        assert_eq!(last_true(|e| e < t, 1.0, 20, &raised), None);
    }

    #[test]
    fn grid_radii_match_pointwise_certification() {
        let net = mlp(2, &[8], 2, 9);
        let scope = Microscope::new(&net).unwrap();
        let x = Tensor::rand([6, 2], (Kind::Double, Device::Cpu));
        let y = tch::no_grad(|| scope.network().forward(&x).argmax(1, false));
        let grid: Vec<f64> = (0..10).map(|k| 0.02 * k as f64).collect();
        let m = BoundMethod::Crown;
        let radii = scope
            .certified_radii_on_grid(&x, &y, Norm::Linf, m, &grid, &never())
            .unwrap();
        for &eps in &grid {
            let cert = scope.certify_points(
                &x,
                &y,
                Ball {
                    eps,
                    norm: Norm::Linf,
                },
                m,
            );
            for i in 0..6 {
                if radii[i] >= eps {
                    assert!(cert[i], "point {i} at {eps}");
                }
            }
        }
    }
}
