//! The sweep report: per point the numbers that stand for its run (the final test evaluation
//! of the best model by validation, [`metrics::reported`]); per group of points with the same
//! settings the mean, the standard deviation over seeds and a 95% interval (Student's t); and
//! the groups on the clean-vs-certified Pareto front.
use super::{PointState, SweepError, SweepFolder};
use crate::metrics;
use crate::run;
use serde::Serialize;
use std::collections::BTreeMap;

/// The certified metric that is the best of the bound methods, per run.
pub const CERT_BEST: &str = "cert_acc.best";
pub const CLEAN: &str = "clean_acc";
pub const PGD: &str = "pgd_acc";
pub const WALL: &str = "wall_s";

/// One point's final numbers.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PointResult {
    pub id: String,
    pub setting_index: usize,
    pub seed: u64,
    pub state: String,
    /// `clean_acc`, `pgd_acc`, `cert_acc.<method>`, `cert_acc.best`, `wall_s`.
    pub metrics: BTreeMap<String, f64>,
    /// Which record the numbers are from (`test:best`, `val`, ...).
    pub split: String,
    pub train_eps: f64,
    pub eval_eps: Option<f64>,
    pub eval_norm: String,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct MetricStats {
    pub mean: f64,
    /// Sample standard deviation over seeds (0 for one seed).
    pub std: f64,
    /// Half-width of the 95% interval of the mean (absent for one seed).
    pub ci95: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Group {
    pub setting_index: usize,
    pub settings: BTreeMap<String, toml::Value>,
    pub seeds: Vec<u64>,
    pub n_done: usize,
    pub metrics: BTreeMap<String, MetricStats>,
    pub pareto: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SweepReport {
    pub name: String,
    pub axes: Vec<String>,
    /// The certified metric the Pareto front is drawn with.
    pub pareto_metric: String,
    pub eval_eps: Option<f64>,
    pub eval_norm: String,
    pub groups: Vec<Group>,
    pub points: Vec<PointResult>,
}

/// Reads every point's run folder and builds the report; the front is over `clean_acc` and
/// `cert_metric` (a `cert_acc.<method>` key or [`CERT_BEST`]).
pub fn report(folder: &SweepFolder, cert_metric: &str) -> Result<SweepReport, SweepError> {
    let mut points = Vec::new();
    for p in &folder.points {
        let state = folder.state(p);
        let mut result = PointResult {
            id: p.id.clone(),
            setting_index: p.setting_index,
            seed: p.seed,
            state: state.label().into(),
            metrics: BTreeMap::new(),
            split: "-".into(),
            train_eps: p.config.train.eps,
            eval_eps: p.config.eval.eps.first().copied(),
            eval_norm: p.config.eval.norm.name().into(),
        };
        if state == PointState::Done {
            let data = run::load_run(&folder.run_dir(p))
                .map_err(|e| SweepError::Folder(format!("point {}: {e}", p.id)))?;
            if let Some(rec) = metrics::reported(&data.metrics) {
                result.split = metrics::split_label(rec).into();
                result.metrics = record_metrics(rec);
            }
            if let Some(s) = &data.summary {
                result.metrics.insert(WALL.into(), s.elapsed_s);
            }
        }
        points.push(result);
    }
    let first = folder.points.first();
    Ok(SweepReport {
        name: folder.spec.name.clone(),
        axes: folder.spec.axes.iter().map(|a| a.key.clone()).collect(),
        pareto_metric: cert_metric.into(),
        eval_eps: first.and_then(|p| p.config.eval.eps.first().copied()),
        eval_norm: first.map_or("-".into(), |p| p.config.eval.norm.name().into()),
        groups: group_results(folder, &points, cert_metric),
        points,
    })
}

/// The metrics of one evaluation record, flat.
fn record_metrics(rec: &metrics::EvalRecord) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    m.insert(CLEAN.into(), rec.clean_acc);
    if let Some(p) = rec.pgd_acc {
        m.insert(PGD.into(), p);
    }
    for (k, v) in &rec.cert_acc {
        m.insert(format!("cert_acc.{k}"), *v);
    }
    if let Some(best) = rec.cert_acc.values().copied().reduce(f64::max) {
        m.insert(CERT_BEST.into(), best);
    }
    m
}

/// Groups the points by setting, with each metric's statistics over the finished seeds.
pub fn group_results(
    folder: &SweepFolder,
    points: &[PointResult],
    cert_metric: &str,
) -> Vec<Group> {
    let mut groups: BTreeMap<usize, Group> = BTreeMap::new();
    for p in &folder.points {
        groups.entry(p.setting_index).or_insert_with(|| Group {
            setting_index: p.setting_index,
            settings: p.setting.clone(),
            seeds: Vec::new(),
            n_done: 0,
            metrics: BTreeMap::new(),
            pareto: false,
        });
    }
    let mut values: BTreeMap<(usize, String), Vec<f64>> = BTreeMap::new();
    for r in points {
        let Some(g) = groups.get_mut(&r.setting_index) else {
            continue;
        };
        g.seeds.push(r.seed);
        if r.metrics.is_empty() {
            continue;
        }
        g.n_done += 1;
        for (k, v) in &r.metrics {
            values
                .entry((r.setting_index, k.clone()))
                .or_default()
                .push(*v);
        }
    }
    for ((gi, key), vals) in values {
        if let Some(g) = groups.get_mut(&gi) {
            g.metrics.insert(key, stats(&vals));
        }
    }
    let mut groups: Vec<Group> = groups.into_values().collect();
    let coords: Vec<Option<(f64, f64)>> = groups
        .iter()
        .map(|g| Some((g.metrics.get(CLEAN)?.mean, g.metrics.get(cert_metric)?.mean)))
        .collect();
    for (g, on) in groups.iter_mut().zip(pareto_front(&coords)) {
        g.pareto = on;
    }
    groups
}

/// Mean, sample standard deviation and the 95% half-interval `t_{0.975, n-1} s / sqrt(n)`.
pub fn stats(v: &[f64]) -> MetricStats {
    let n = v.len();
    let mean = v.iter().sum::<f64>() / n.max(1) as f64;
    if n < 2 {
        return MetricStats {
            mean,
            std: 0.0,
            ci95: None,
        };
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let std = var.sqrt();
    MetricStats {
        mean,
        std,
        ci95: Some(t_975(n - 1) * std / (n as f64).sqrt()),
    }
}

/// Student's t quantile at 0.975 for `df` degrees of freedom (tabulated to 30, then the
/// normal's 1.96 plus the first correction term).
fn t_975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => T[df - 1],
        _ => 1.959_964 + 2.4 / df as f64,
    }
}

/// Which points are on the front when both coordinates are to be maximised: a point is on it
/// when no other point is at least as good in both and better in one. Missing points are off.
pub fn pareto_front(points: &[Option<(f64, f64)>]) -> Vec<bool> {
    points
        .iter()
        .map(|p| {
            let Some((x, y)) = *p else { return false };
            !points
                .iter()
                .flatten()
                .any(|&(a, b)| a >= x && b >= y && (a > x || b > y))
        })
        .collect()
}

impl SweepReport {
    /// One row per group: the settings, seeds done, then mean / std / ci95 of each metric.
    pub fn to_csv(&self) -> String {
        let mut keys: Vec<&String> = self.groups.iter().flat_map(|g| g.metrics.keys()).collect();
        keys.sort();
        keys.dedup();
        let mut out = String::new();
        let mut head: Vec<String> = self.axes.clone();
        head.push("n_done".into());
        for k in &keys {
            head.extend([format!("{k}_mean"), format!("{k}_std"), format!("{k}_ci95")]);
        }
        head.push("pareto".into());
        out.push_str(&head.join(","));
        out.push('\n');
        for g in &self.groups {
            let mut row: Vec<String> = self
                .axes
                .iter()
                .map(|a| g.settings.get(a).map_or(String::new(), |v| v.to_string()))
                .collect();
            row.push(g.n_done.to_string());
            for k in &keys {
                match g.metrics.get(*k) {
                    Some(s) => row.extend([
                        format!("{:.6}", s.mean),
                        format!("{:.6}", s.std),
                        s.ci95.map_or(String::new(), |c| format!("{c:.6}")),
                    ]),
                    None => row.extend([String::new(), String::new(), String::new()]),
                }
            }
            row.push(g.pareto.to_string());
            out.push_str(&row.join(","));
            out.push('\n');
        }
        out
    }

    /// The human table: one line per group with clean, PGD and the Pareto metric.
    pub fn to_table(&self) -> String {
        let mut out = format!(
            "sweep {}: {} groups, eval eps {} ({}); * = on the clean-vs-{} Pareto front\n",
            self.name,
            self.groups.len(),
            self.eval_eps.map_or("-".into(), |e| e.to_string()),
            self.eval_norm,
            self.pareto_metric
        );
        let fmt = |s: Option<&MetricStats>| match s {
            Some(MetricStats {
                mean,
                ci95: Some(c),
                ..
            }) => format!("{mean:.4}±{c:.4}"),
            Some(s) => format!("{:.4}", s.mean),
            None => "-".into(),
        };
        out.push_str(&format!(
            "  {:<40} {:>5} {:>15} {:>15} {:>15}\n",
            "settings", "done", "clean", "pgd", self.pareto_metric
        ));
        for g in &self.groups {
            let settings = super::settings_label(&g.settings, false);
            out.push_str(&format!(
                "{} {:<40} {:>2}/{:<2} {:>15} {:>15} {:>15}\n",
                if g.pareto { '*' } else { ' ' },
                if settings.is_empty() {
                    "(base)".into()
                } else {
                    settings
                },
                g.n_done,
                g.seeds.len(),
                fmt(g.metrics.get(CLEAN)),
                fmt(g.metrics.get(PGD)),
                fmt(g.metrics.get(&self.pareto_metric))
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_match_a_hand_computation() {
        let s = stats(&[0.70, 0.72, 0.74]);
        assert!((s.mean - 0.72).abs() < 1e-12);
        assert!((s.std - 0.02).abs() < 1e-12);
        // t_{0.975,2} = 4.303: 4.303 * 0.02 / sqrt(3).
        assert!((s.ci95.unwrap() - 4.303 * 0.02 / 3f64.sqrt()).abs() < 1e-9);
        assert_eq!(stats(&[0.5]).ci95, None);
        assert!((t_975(200) - 1.972).abs() < 0.002, "{}", t_975(200));
    }

    #[test]
    fn the_front_matches_a_brute_force_dominance_check() {
        // Deterministic pseudo-random clouds, checked against the definition pair by pair.
        let mut x = 7u64;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) % 20) as f64 / 20.0
        };
        for _ in 0..50 {
            let pts: Vec<Option<(f64, f64)>> = (0..12)
                .map(|i| if i == 5 { None } else { Some((next(), next())) })
                .collect();
            let front = pareto_front(&pts);
            for (i, p) in pts.iter().enumerate() {
                let Some(p) = p else {
                    assert!(!front[i]);
                    continue;
                };
                let dominated = pts
                    .iter()
                    .flatten()
                    .any(|q| (q.0 > p.0 && q.1 >= p.1) || (q.0 >= p.0 && q.1 > p.1));
                assert_eq!(front[i], !dominated, "point {i} {p:?}");
            }
            assert!(front.iter().any(|&f| f), "a non-empty set has a front");
        }
    }
}
