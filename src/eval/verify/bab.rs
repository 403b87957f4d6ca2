//! Branch and bound on the unstable ReLUs of one point (Bunel et al. 2020; Wang et al. 2021
//! without the beta multipliers): the ball is split into subdomains by fixing the phase of one
//! unstable neuron at a time (its input's `l` or `u` clamped to 0), each subdomain re-bounded
//! by CROWN (or alpha-CROWN) with the split and its parent's bounds, best-first on the lowest
//! bound. A subdomain whose bound is positive is done; one whose neurons are all stable or split
//! is solved exactly as an LP ([`super::lp`]). The relaxed minimiser of each new subdomain, and
//! a few PGD steps from those of the worst ones, look for a counterexample.
use super::confirm;
use super::lp::{solve_leaf, Leaf, Split};
use crate::attack;
use crate::bounds::{bound_domains, AlphaSettings, Ball, DomainBounds};
use crate::config::Norm;
use crate::model::{Layer, Network};
use std::time::Instant;
use tch::{Kind, Tensor};

/// How a point's branch and bound ended.
pub(super) enum Outcome {
    Verified,
    /// A confirmed counterexample (`[1, ..]`, in the network's precision).
    Falsified(Tensor),
    /// Every subdomain was closed except leaves the LP could not decide, or too many open.
    Unknown,
    Timeout,
}

/// The knobs of the search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BabSettings {
    /// Subdomains split per round (their children are bounded in one batch).
    pub batch: usize,
    /// alpha-CROWN on every subdomain (`None`: CROWN).
    pub alpha: Option<AlphaSettings>,
    /// Give up (unknown) with more open subdomains than this.
    pub max_domains: usize,
    /// PGD steps from the relaxed minimisers of the worst subdomains, per round.
    pub pgd_steps: u32,
}

impl Default for BabSettings {
    fn default() -> Self {
        BabSettings {
            batch: 16,
            alpha: None,
            max_domains: 20_000,
            pgd_steps: 10,
        }
    }
}

/// One open subdomain (every tensor with batch 1).
struct Domain {
    worst: f64,
    /// Margin lower bounds `[1, K]` (entry `y` is `+inf`): a child keeps the larger of its own
    /// and its parent's per row (its set lies in its parent's), so bounds never loosen.
    margins: Tensor,
    bounds: Vec<Option<(Tensor, Tensor)>>,
    scores: Vec<Option<Tensor>>,
    argmin: Tensor,
    splits: Vec<Split>,
}

/// Branch and bound on the point `x` (`[1, ..]`, float64, with `x_net` the same point in the
/// network's precision) of label `y`, until `deadline`.
pub(super) fn branch_and_bound(
    net: &Network,
    layers: &[Layer],
    x: &Tensor,
    x_net: &Tensor,
    y: i64,
    ball: Ball,
    deadline: Instant,
    settings: &BabSettings,
) -> Outcome {
    let k = net.num_classes;
    let yt = Tensor::from_slice(&[y]);
    let root = bound_domains(layers, k, x, &yt, ball, None, settings.alpha);
    let mut open = domains_of(&root, vec![Vec::new()]);
    let mut undecided = false;
    loop {
        open.retain(|d| d.worst <= 0.0);
        if open.is_empty() {
            return if undecided {
                Outcome::Unknown
            } else {
                Outcome::Verified
            };
        }
        if Instant::now() >= deadline {
            return Outcome::Timeout;
        }
        if open.len() > settings.max_domains {
            return Outcome::Unknown;
        }
        // Best first: the lowest bounds at the end.
        open.sort_by(|a, b| b.worst.total_cmp(&a.worst));
        let take = settings.batch.min(open.len());
        let popped = open.split_off(open.len() - take);
        if let Some(cex) = descend_from(net, x_net, &popped, y, ball, settings.pgd_steps) {
            return Outcome::Falsified(cex);
        }
        let mut priors: Vec<Vec<(Tensor, Tensor)>> =
            (0..layers.len()).map(|_| Vec::new()).collect();
        let mut child_splits = Vec::new();
        let mut parents: Vec<Tensor> = Vec::new();
        for dom in popped {
            let Some((layer, neuron)) = choose_neuron(&dom) else {
                match solve_leaf(layers, x, y, ball, &dom.bounds, &dom.splits) {
                    Leaf::Verified => {}
                    Leaf::Candidate(c) => match confirm(net, x_net, &c, y, ball) {
                        Some(cex) => return Outcome::Falsified(cex),
                        None => undecided = true,
                    },
                    Leaf::Undecided => undecided = true,
                }
                continue;
            };
            for active in [true, false] {
                parents.push(dom.margins.shallow_clone());
                for (i, b) in dom.bounds.iter().enumerate() {
                    let Some((l, u)) = b else { continue };
                    let (mut l, mut u) = (l.copy(), u.copy());
                    if i == layer {
                        let (lf, uf) = (l.reshape([-1]), u.reshape([-1]));
                        let target = if active { &lf } else { &uf };
                        let _ = target.narrow(0, neuron, 1).fill_(0.0);
                        l = lf.reshape(l.size());
                        u = uf.reshape(u.size());
                    }
                    priors[i].push((l, u));
                }
                let mut splits = dom.splits.clone();
                splits.push(Split {
                    layer,
                    neuron,
                    active,
                });
                child_splits.push(splits);
            }
        }
        if child_splits.is_empty() {
            continue;
        }
        let n = child_splits.len() as i64;
        let priors: Vec<Option<(Tensor, Tensor)>> = priors
            .into_iter()
            .map(|p| {
                (!p.is_empty()).then(|| {
                    let (ls, us): (Vec<Tensor>, Vec<Tensor>) = p.into_iter().unzip();
                    (Tensor::cat(&ls, 0), Tensor::cat(&us, 0))
                })
            })
            .collect();
        let mut xshape = x.size();
        xshape[0] = n;
        let xs = x.expand(xshape.as_slice(), false);
        let ys = yt.expand([n], false);
        let db = bound_domains(layers, k, &xs, &ys, ball, Some(&priors), settings.alpha);
        let mut children = domains_of(&db, child_splits);
        for (c, p) in children.iter_mut().zip(&parents) {
            c.margins = c.margins.maximum(p);
            c.worst = c.worst.max(c.margins.min().double_value(&[]));
        }
        for c in &children {
            if c.worst <= 0.0 {
                if let Some(cex) = confirm(net, x_net, &c.argmin, y, ball) {
                    return Outcome::Falsified(cex);
                }
            }
        }
        open.extend(children);
    }
}

/// The domains of a batch of bounds, one per row.
fn domains_of(db: &DomainBounds, splits: Vec<Vec<Split>>) -> Vec<Domain> {
    let worst = Vec::<f64>::try_from(db.worst.to_kind(Kind::Double)).unwrap_or_default();
    let margins = db
        .margin_lower
        .scatter_value(1, &db.labels.unsqueeze(1), f64::INFINITY);
    splits
        .into_iter()
        .enumerate()
        .map(|(d, splits)| {
            let row = |t: &Tensor| t.narrow(0, d as i64, 1);
            Domain {
                worst: worst.get(d).copied().unwrap_or(f64::NEG_INFINITY),
                margins: row(&margins),
                bounds: db
                    .relu_bounds
                    .iter()
                    .map(|b| b.as_ref().map(|(l, u)| (row(l), row(u))))
                    .collect(),
                scores: db.scores.iter().map(|s| s.as_ref().map(row)).collect(),
                argmin: row(&db.argmin),
                splits,
            }
        })
        .collect()
}

/// The unstable neuron to split: the largest branching score, ties (a neuron the worst margin
/// does not use) broken by the height `-l u / (u - l)` of its triangle. `None`: a leaf.
fn choose_neuron(dom: &Domain) -> Option<(usize, i64)> {
    let mut best: Option<(f64, usize, i64)> = None;
    for (i, b) in dom.bounds.iter().enumerate() {
        let Some((l, u)) = b else { continue };
        let (l, u) = (l.flatten(0, -1), u.flatten(0, -1));
        let unstable = l.lt(0.0).logical_and(&u.gt(0.0));
        if unstable.any().int64_value(&[]) == 0 {
            continue;
        }
        let height = (-&l * &u / (&u - &l).clamp_min(1e-12)).to_kind(Kind::Double);
        let score = match &dom.scores[i] {
            Some(s) => s.flatten(0, -1).to_kind(Kind::Double) + height * 1e-6,
            None => height,
        };
        let score = score.masked_fill(&unstable.logical_not(), f64::NEG_INFINITY);
        let n = score.argmax(0, false).int64_value(&[]);
        let v = score.double_value(&[n]);
        if best.is_none_or(|(bv, _, _)| v > bv) {
            best = Some((v, i, n));
        }
    }
    best.map(|(_, i, n)| (i, n))
}

/// A few PGD steps on the margin from the relaxed minimisers of `doms`; the first confirmed
/// counterexample.
fn descend_from(
    net: &Network,
    x_net: &Tensor,
    doms: &[Domain],
    y: i64,
    ball: Ball,
    steps: u32,
) -> Option<Tensor> {
    if steps == 0 || doms.is_empty() {
        return None;
    }
    let starts: Vec<Tensor> = doms.iter().map(|d| d.argmin.shallow_clone()).collect();
    let mut xa = Tensor::cat(&starts, 0).to_kind(x_net.kind()).detach();
    let m = xa.size()[0];
    let ys = Tensor::from_slice(&[y]).expand([m], false);
    let step = ball.eps / 4.0;
    for _ in 0..steps {
        let xv = xa.detach().set_requires_grad(true);
        let margin = tch::with_grad(|| attack::margins(&net.forward(&xv), &ys));
        let worst = margin.argmin(0, false).int64_value(&[]);
        if margin.double_value(&[worst]) < 0.0 {
            if let Some(cex) = confirm(net, x_net, &xa.narrow(0, worst, 1), y, ball) {
                return Some(cex);
            }
        }
        if !margin.requires_grad() {
            return None;
        }
        let grads = tch::with_grad(|| {
            Tensor::run_backward(&[margin.sum(margin.kind())], &[&xv], false, false)
        });
        let g = &grads[0];
        let dir = match ball.norm {
            Norm::Linf => g.sign(),
            Norm::L2 => {
                let norm = g
                    .flatten(1, -1)
                    .norm_scalaropt_dim(2.0, [1], true)
                    .clamp_min(1e-12);
                let mut shape = vec![m];
                shape.extend(std::iter::repeat_n(1, (g.dim() - 1) as usize));
                g / norm.reshape(shape.as_slice())
            }
        };
        xa = tch::no_grad(|| attack::project(&(&xa - dir * step), x_net, ball.eps, ball.norm));
    }
    None
}
