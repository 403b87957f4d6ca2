//! The plotted history of one run: its records and the curves derived from them, kept ready
//! to draw (`PlotPoints::Borrowed`), so a frame never rebuilds them.
use crate::config::ExperimentConfig;
use crate::metrics::{self, EvalRecord};
use egui::Color32;
use egui_plot::PlotPoint;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// At most this many points of one curve are drawn; longer curves are decimated for drawing
/// (every k-th point, the last one always kept). The stored records are never thinned.
pub const MAX_DRAWN_POINTS: usize = 1000;

/// One curve: all its points, their log10 (for log-scale plots; points with y <= 0 left out),
/// and the decimated copies that are drawn when the curve is long.
#[derive(Debug, Clone, Default)]
pub struct Curve {
    pub points: Vec<PlotPoint>,
    log: Vec<PlotPoint>,
    drawn: Vec<PlotPoint>,
    drawn_log: Vec<PlotPoint>,
}

impl Curve {
    fn push(&mut self, x: f64, y: f64) {
        self.points.push(PlotPoint::new(x, y));
        if y > 0.0 {
            self.log.push(PlotPoint::new(x, y.log10()));
        }
        decimate(&self.points, &mut self.drawn);
        decimate(&self.log, &mut self.drawn_log);
    }

    /// The points to draw (log10 of y when `log`): all of them, or a decimated copy past
    /// [`MAX_DRAWN_POINTS`].
    pub fn drawn(&self, log: bool) -> &[PlotPoint] {
        let (all, thin) = if log {
            (&self.log, &self.drawn_log)
        } else {
            (&self.points, &self.drawn)
        };
        if all.len() > MAX_DRAWN_POINTS {
            thin
        } else {
            all
        }
    }
}

/// Refreshes `thin` from `all` when `all` is too long to draw: every k-th point and the last.
fn decimate(all: &[PlotPoint], thin: &mut Vec<PlotPoint>) {
    if all.len() <= MAX_DRAWN_POINTS {
        return;
    }
    let stride = all.len().div_ceil(MAX_DRAWN_POINTS);
    thin.clear();
    thin.extend(all.iter().step_by(stride).copied());
    if let Some(last) = all.last() {
        if thin.last() != Some(last) {
            thin.push(*last);
        }
    }
}

/// What a curve shows; the key of [`RunSeries::curves`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    Clean,
    /// Clean accuracy on the robust subset (where PGD and certified accuracy are measured).
    SubsetClean,
    Train,
    Pgd,
    /// Verified accuracy from complete verification (`eval.verify`).
    Verified,
    Cert(String),
    TrainLoss,
    /// The loss of single batches as they are trained (x: fractional epoch); live runs only.
    BatchLoss,
    /// One weighted term of the training loss (`loss_parts`: clean_ce, robust_ce, r1, r2, ...).
    LossPart(String),
    Lipschitz(String),
    R1,
    R2,
    FracExact,
    Unstable(usize),
    CertPgdGap,
    TrainEps,
}

impl Metric {
    pub fn label(&self) -> String {
        match self {
            Metric::Clean => "clean".into(),
            Metric::SubsetClean => "clean (robust subset)".into(),
            Metric::Train => "train (clean)".into(),
            Metric::Pgd => "PGD".into(),
            Metric::Verified => "verified (complete)".into(),
            Metric::Cert(m) => format!("certified {m}"),
            Metric::TrainLoss => "train loss (epoch mean)".into(),
            Metric::BatchLoss => "batch loss".into(),
            Metric::LossPart(p) => format!("loss: {p}"),
            Metric::Lipschitz(m) => format!("Lipschitz {m}"),
            Metric::R1 => "r1 (mean)".into(),
            Metric::R2 => "r2 (mean)".into(),
            Metric::FracExact => "fraction exact".into(),
            Metric::Unstable(i) => format!("ReLU layer {}", i + 1),
            Metric::CertPgdGap => "PGD − certified".into(),
            Metric::TrainEps => "train eps".into(),
        }
    }
}

/// A run as the plots see it: a finished folder opened from disk, or the live run.
#[derive(Debug, Clone)]
pub struct RunSeries {
    pub name: String,
    pub dir: Option<PathBuf>,
    pub config: ExperimentConfig,
    pub records: Vec<EvalRecord>,
    /// How it ended ([`crate::protocol::Outcome::name`]), or `None` while running.
    pub outcome: Option<String>,
    pub color: Color32,
    pub visible: bool,
    pub curves: BTreeMap<Metric, Curve>,
    /// The last record's gap histogram: edges and counts.
    pub last_hist: Option<(Vec<f64>, Vec<u64>)>,
    /// Wall time of a finished run (`summary.json`).
    pub wall_s: Option<f64>,
}

impl RunSeries {
    pub fn new(
        name: String,
        dir: Option<PathBuf>,
        config: ExperimentConfig,
        color: Color32,
    ) -> Self {
        RunSeries {
            name,
            dir,
            config,
            records: Vec::new(),
            outcome: None,
            color,
            visible: true,
            curves: BTreeMap::new(),
            last_hist: None,
            wall_s: None,
        }
    }

    /// A run folder read back from disk.
    pub fn from_run(run: &crate::run::RunData, color: Color32) -> Self {
        let mut s = RunSeries::new(run.name(), Some(run.dir.clone()), run.config.clone(), color);
        for r in &run.metrics {
            s.push(r.clone());
        }
        s.outcome = run.summary.as_ref().map(|x| x.outcome.clone());
        s.wall_s = run.summary.as_ref().map(|x| x.elapsed_s);
        s
    }

    /// Wall time so far: the finished run's, else the last record's clock.
    pub fn wall_secs(&self) -> Option<f64> {
        self.wall_s
            .or_else(|| self.records.last().map(|r| r.time_s))
    }

    /// The radius and norm the run's robust numbers are measured at (`0.1 linf`), or `None`
    /// without a robust evaluation. Runs compare only where this is equal.
    pub fn eval_at(&self) -> Option<String> {
        let e = &self.config.eval;
        e.eps
            .first()
            .map(|eps| format!("{} {}", super::plots::short_number(*eps), e.norm.name()))
    }

    /// Adds one evaluation and extends every curve it has a value for. The final test
    /// evaluations are kept for the tables but drawn on no curve (the curves are per epoch,
    /// on one split).
    pub fn push(&mut self, rec: EvalRecord) {
        if rec.is_final() {
            self.records.push(rec);
            return;
        }
        let x = rec.epoch as f64;
        let mut add = |m: Metric, y: f64| {
            if y.is_finite() {
                self.curves.entry(m).or_default().push(x, y);
            }
        };
        add(Metric::Clean, rec.clean_acc);
        add(Metric::Train, rec.train_acc);
        add(Metric::TrainLoss, rec.train_loss);
        add(Metric::TrainEps, rec.train_eps);
        if let Some(c) = rec.subset_clean_acc {
            add(Metric::SubsetClean, c);
        }
        if let Some(p) = rec.pgd_acc {
            add(Metric::Pgd, p);
        }
        if let Some(v) = rec.verified_acc {
            add(Metric::Verified, v);
        }
        for (k, v) in &rec.cert_acc {
            add(Metric::Cert(k.clone()), *v);
        }
        for (k, v) in &rec.lipschitz {
            add(Metric::Lipschitz(k.clone()), *v);
        }
        // A single term is the loss itself: its parts only say something when there are several.
        if rec.loss_parts.len() > 1 {
            for (k, v) in &rec.loss_parts {
                add(Metric::LossPart(k.clone()), *v);
            }
        }
        if let Some(g) = &rec.gap {
            add(Metric::R1, g.r1_mean);
            add(Metric::R2, g.r2_mean);
            add(Metric::FracExact, g.frac_exact);
            for (i, u) in g.unstable_per_layer.iter().enumerate() {
                add(Metric::Unstable(i), *u);
            }
            if let Some(d) = g.cert_pgd_gap {
                add(Metric::CertPgdGap, d);
            }
            if !g.hist_counts.is_empty() {
                self.last_hist = Some((g.hist_edges.clone(), g.hist_counts.clone()));
            }
        }
        self.records.push(rec);
    }

    /// One batch's loss at fractional epoch `x` (from progress events).
    pub fn push_batch_loss(&mut self, x: f64, loss: f64) {
        if loss.is_finite() {
            self.curves
                .entry(Metric::BatchLoss)
                .or_default()
                .push(x, loss);
        }
    }

    /// The last epoch's evaluation.
    pub fn last(&self) -> Option<&EvalRecord> {
        metrics::last_epoch(&self.records)
    }

    /// The record whose numbers stand for the run ([`metrics::reported`]).
    pub fn reported(&self) -> Option<&EvalRecord> {
        metrics::reported(&self.records)
    }

    /// The curves whose metric satisfies `keep`, in metric order.
    pub fn curves_where(
        &self,
        keep: impl Fn(&Metric) -> bool,
    ) -> impl Iterator<Item = (&Metric, &Curve)> {
        self.curves.iter().filter(move |(m, _)| keep(m))
    }
}

/// The certificate keys (bound methods) of the runs' reported evaluations, sorted, each once.
pub fn cert_methods<'a>(runs: impl Iterator<Item = &'a RunSeries>) -> Vec<String> {
    let mut keys: Vec<String> = runs
        .filter_map(|r| r.reported())
        .flat_map(|r| r.cert_acc.keys().cloned())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Distinct, readable colours for runs and curves (on the dark and the light theme).
pub const PALETTE: [Color32; 10] = [
    Color32::from_rgb(66, 133, 244),
    Color32::from_rgb(234, 67, 53),
    Color32::from_rgb(52, 168, 83),
    Color32::from_rgb(251, 188, 5),
    Color32::from_rgb(171, 71, 188),
    Color32::from_rgb(0, 172, 193),
    Color32::from_rgb(255, 112, 67),
    Color32::from_rgb(124, 179, 66),
    Color32::from_rgb(240, 98, 146),
    Color32::from_rgb(141, 110, 99),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::GapStats;

    #[test]
    fn curves_follow_the_records_and_long_ones_are_decimated_for_drawing_only() {
        let mut s = RunSeries::new("r".into(), None, ExperimentConfig::default(), PALETTE[0]);
        let n = 2500;
        for e in 1..=n {
            let mut r = EvalRecord {
                epoch: e,
                clean_acc: e as f64 / n as f64,
                ..EvalRecord::default()
            };
            if e % 2 == 0 {
                r.pgd_acc = Some(0.5);
                r.cert_acc.insert("ibp".into(), 0.25);
            }
            if e == n {
                r.gap = Some(GapStats {
                    unstable_per_layer: vec![3.0, 1.5],
                    hist_edges: vec![0.0, 1.0, 2.0],
                    hist_counts: vec![4, 5],
                    ..GapStats::default()
                });
            }
            s.push(r);
        }
        let clean = &s.curves[&Metric::Clean];
        assert_eq!(clean.points.len(), n as usize, "every record is kept");
        let drawn = clean.drawn(false);
        assert!(drawn.len() <= MAX_DRAWN_POINTS + 1, "{}", drawn.len());
        assert_eq!(
            drawn.last().unwrap().x,
            n as f64,
            "the newest point is always drawn"
        );
        assert_eq!(drawn[0].x, 1.0);
        let log = clean.drawn(true);
        assert!((log.last().unwrap().y - 0.0).abs() < 1e-12, "log10(1) = 0");
        assert_eq!(s.curves[&Metric::Pgd].points.len(), n as usize / 2);
        assert_eq!(s.curves[&Metric::Cert("ibp".into())].points[0].x, 2.0);
        assert_eq!(s.curves[&Metric::Unstable(1)].points[0].y, 1.5);
        assert_eq!(s.last_hist, Some((vec![0.0, 1.0, 2.0], vec![4, 5])));
        assert!(!s.curves.contains_key(&Metric::Lipschitz("gram".into())));
    }

    #[test]
    fn loss_parts_become_curves_only_when_there_are_several() {
        let mut s = RunSeries::new("r".into(), None, ExperimentConfig::default(), PALETTE[0]);
        let mut r = EvalRecord {
            epoch: 1,
            train_loss: 1.5,
            ..EvalRecord::default()
        };
        r.loss_parts.insert("clean_ce".into(), 1.5);
        s.push(r.clone());
        assert!(!s.curves.keys().any(|m| matches!(m, Metric::LossPart(_))));
        r.epoch = 2;
        r.loss_parts.insert("clean_ce".into(), 0.5);
        r.loss_parts.insert("robust_ce".into(), 0.75);
        r.loss_parts.insert("r2".into(), 0.25);
        s.push(r);
        let r2 = &s.curves[&Metric::LossPart("r2".into())];
        assert_eq!(r2.points.len(), 1);
        assert_eq!((r2.points[0].x, r2.points[0].y), (2.0, 0.25));
        assert_eq!(
            s.curves[&Metric::LossPart("clean_ce".into())].points.len(),
            1
        );
    }
}
