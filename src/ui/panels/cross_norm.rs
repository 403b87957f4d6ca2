//! The l_inf vs l_2 view (Araujo et al. 2020; `eval.cross_norm`): PGD accuracy of each shown
//! run under both attack norms. A model trained against one norm is often weak against the
//! other, so the cell to read is the attacked norm that is not the trained-for one.
//!
//! Two views of the same numbers: a compact cell of the run table (each attacked norm at its
//! smallest radius, the trained-for norm first) and, under the accuracy plot of the
//! "Accuracy & loss" tab, a heat map: one row per shown run, grouped by its trained-for norm
//! (`train.norm`), one column per attacked norm and radius, each cell coloured by the accuracy
//! and labelled with it.
use super::{titled, Action};
use crate::config::Norm;
use crate::metrics::{cross_norm_cells, EvalRecord};
use crate::ui::export::pct;
use crate::ui::plots::short_number;
use crate::ui::series::RunSeries;
use egui::{Color32, RichText, Ui};

/// The record whose cross-norm numbers stand for a run: the reported one (the final test
/// evaluation) when it has them, else the latest evaluation that has them.
pub fn cross_record(run: &RunSeries) -> Option<&EvalRecord> {
    run.reported()
        .filter(|r| !r.cross_norm.is_empty())
        .or_else(|| run.records.iter().rev().find(|r| !r.cross_norm.is_empty()))
}

/// `ℓ∞` / `ℓ2` for a norm's record key (`linf`, `l2`).
pub fn norm_symbol(key: &str) -> &str {
    match Norm::parse(key) {
        Some(Norm::Linf) => "ℓ∞",
        Some(Norm::L2) => "ℓ2",
        None => key,
    }
}

/// The run table's cell: each attacked norm's PGD accuracy at its smallest radius, the
/// trained-for norm first (`ℓ∞ 0.05: 61.0% · ℓ2 0.3: 58.0%`); `None` without `cross_norm`.
pub fn cross_cell(run: &RunSeries) -> Option<String> {
    let rec = cross_record(run)?;
    let cells = cross_norm_cells(rec, run.config.train.norm.name());
    let mut parts: Vec<String> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (norm, eps, acc) in &cells {
        if !seen.contains(&norm.as_str()) {
            seen.push(norm);
            parts.push(format!(
                "{} {}: {}",
                norm_symbol(norm),
                short_number(*eps),
                pct(*acc)
            ));
        }
    }
    Some(parts.join(" · "))
}

/// Every cross-norm number of a run, one per line (the cell's hover text).
pub fn cross_hover(run: &RunSeries) -> String {
    let Some(rec) = cross_record(run) else {
        return String::new();
    };
    let trained = run.config.train.norm.name();
    let mut lines = vec![format!(
        "PGD accuracy (trained for {}):",
        norm_symbol(trained)
    )];
    for (norm, eps, acc) in cross_norm_cells(rec, trained) {
        lines.push(format!(
            "{} eps {}: {}",
            norm_symbol(&norm),
            short_number(eps),
            pct(acc)
        ));
    }
    lines.join("\n")
}

/// One run's row of the heat map.
#[derive(Debug, Clone, PartialEq)]
pub struct HeatRow {
    pub name: String,
    pub color: Color32,
    pub trained: Norm,
    /// PGD accuracy per column of [`HeatMap::columns`] (`None`: not attacked there).
    pub values: Vec<Option<f64>>,
}

/// Trained-for norm (rows) against attacked norm and radius (columns).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeatMap {
    /// `(attack norm key, eps)`: l_inf first, each norm's radii increasing.
    pub columns: Vec<(String, f64)>,
    /// Runs trained for l_inf first, then l_2; in the order given within each.
    pub rows: Vec<HeatRow>,
}

/// The heat map of the runs that have `cross_norm` numbers.
pub fn heat_map(runs: &[&RunSeries]) -> HeatMap {
    let with: Vec<(&RunSeries, Vec<(String, f64, f64)>)> = runs
        .iter()
        .filter_map(|r| Some((*r, cross_norm_cells(cross_record(r)?, Norm::Linf.name()))))
        .collect();
    let mut columns: Vec<(String, f64)> = with
        .iter()
        .flat_map(|(_, c)| c.iter().map(|(n, e, _)| (n.clone(), *e)))
        .collect();
    columns.sort_by(|a, b| {
        (a.0 != Norm::Linf.name(), &a.0)
            .cmp(&(b.0 != Norm::Linf.name(), &b.0))
            .then(a.1.total_cmp(&b.1))
    });
    columns.dedup();
    let mut rows: Vec<HeatRow> = with
        .iter()
        .map(|(run, cells)| HeatRow {
            name: run.name.clone(),
            color: run.color,
            trained: run.config.train.norm,
            values: columns
                .iter()
                .map(|(n, e)| {
                    cells
                        .iter()
                        .find(|(cn, ce, _)| cn == n && ce == e)
                        .map(|c| c.2)
                })
                .collect(),
        })
        .collect();
    rows.sort_by_key(|r| r.trained != Norm::Linf);
    HeatMap { columns, rows }
}

/// A diverging red-yellow-green scale for an accuracy in [0, 1].
pub fn accuracy_color(acc: f64) -> Color32 {
    let stops = [
        (215.0, 48.0, 39.0),
        (254.0, 224.0, 139.0),
        (26.0, 152.0, 80.0),
    ];
    let t = acc.clamp(0.0, 1.0) * 2.0;
    let (a, b, f) = if t <= 1.0 {
        (stops[0], stops[1], t)
    } else {
        (stops[1], stops[2], t - 1.0)
    };
    let mix = |p: f64, q: f64| (p + (q - p) * f).round() as u8;
    Color32::from_rgb(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// The heat map's section of the accuracy tab, when a shown run has `cross_norm` numbers.
pub fn cross_norm_ui(ui: &mut Ui, runs: &[&RunSeries], actions: &mut Vec<Action>) {
    let map = heat_map(runs);
    if map.rows.is_empty() {
        return;
    }
    titled(
        ui,
        "Cross-norm PGD accuracy: trained-for norm (rows) vs attacked norm (columns)",
        "cross-norm",
        actions,
        |ui| {
            egui::Grid::new("cross-norm-heat")
                .spacing([3.0, 3.0])
                .show(ui, |ui| {
                    ui.label(RichText::new("run · trained for").small());
                    for (norm, eps) in &map.columns {
                        ui.label(
                            RichText::new(format!("{} {}", norm_symbol(norm), short_number(*eps)))
                                .strong(),
                        );
                    }
                    ui.end_row();
                    for row in &map.rows {
                        ui.label(
                            RichText::new(format!(
                                "{} · {}",
                                row.name,
                                norm_symbol(row.trained.name())
                            ))
                            .color(row.color),
                        );
                        for (v, (norm, eps)) in row.values.iter().zip(&map.columns) {
                            heat_cell_ui(ui, *v, row, norm, *eps);
                        }
                        ui.end_row();
                    }
                })
                .response
        },
    );
}

/// One cell: the accuracy on its colour, the run, norm and radius on hover.
fn heat_cell_ui(ui: &mut Ui, v: Option<f64>, row: &HeatRow, norm: &str, eps: f64) {
    let Some(v) = v else {
        ui.label("–");
        return;
    };
    let fill = accuracy_color(v);
    egui::Frame::new()
        .fill(fill)
        .corner_radius(3.0)
        .inner_margin(egui::Margin::symmetric(8, 3))
        .show(ui, |ui| {
            ui.set_min_width(48.0);
            ui.label(RichText::new(pct(v)).color(Color32::BLACK))
        })
        .response
        .on_hover_text(format!(
            "{} (trained for {}): PGD accuracy {} under {} at eps {}",
            row.name,
            norm_symbol(row.trained.name()),
            pct(v),
            norm_symbol(norm),
            short_number(eps)
        ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ExperimentConfig;

    fn run(name: &str, trained: Norm, cross: &[(&str, &str, f64)]) -> RunSeries {
        let mut cfg = ExperimentConfig::default_experiment();
        cfg.train.norm = trained;
        let mut r = RunSeries::new(name.into(), None, cfg, Color32::RED);
        let mut rec = EvalRecord {
            epoch: 1,
            ..EvalRecord::default()
        };
        for (n, e, a) in cross {
            rec.cross_norm
                .entry(n.to_string())
                .or_default()
                .insert(e.to_string(), *a);
        }
        r.push(rec);
        r
    }

    #[test]
    fn heat_map_rows_are_grouped_by_trained_norm_and_cells_are_the_records_numbers() {
        let a = run("a", Norm::L2, &[("l2", "0.5", 0.6), ("linf", "0.1", 0.2)]);
        let b = run(
            "b",
            Norm::Linf,
            &[
                ("linf", "0.1", 0.7),
                ("linf", "0.05", 0.8),
                ("l2", "0.5", 0.3),
            ],
        );
        let none = run("c", Norm::Linf, &[]);
        let m = heat_map(&[&a, &b, &none]);
        assert_eq!(
            m.columns,
            vec![
                ("linf".to_string(), 0.05),
                ("linf".to_string(), 0.1),
                ("l2".to_string(), 0.5)
            ]
        );
        assert_eq!(m.rows.len(), 2);
        assert_eq!(
            (m.rows[0].name.as_str(), m.rows[0].trained),
            ("b", Norm::Linf)
        );
        assert_eq!(m.rows[0].values, vec![Some(0.8), Some(0.7), Some(0.3)]);
        assert_eq!(m.rows[1].values, vec![None, Some(0.2), Some(0.6)]);
        // The table cell: trained-for norm first, each norm at its smallest radius.
        assert_eq!(cross_cell(&a).unwrap(), "ℓ2 0.5: 60.0% · ℓ∞ 0.1: 20.0%");
        assert_eq!(cross_cell(&b).unwrap(), "ℓ∞ 0.05: 80.0% · ℓ2 0.5: 30.0%");
        assert!(cross_cell(&none).is_none());
    }

    #[test]
    fn colour_scale_runs_red_to_green_through_yellow() {
        assert_eq!(accuracy_color(0.0), Color32::from_rgb(215, 48, 39));
        assert_eq!(accuracy_color(0.5), Color32::from_rgb(254, 224, 139));
        assert_eq!(accuracy_color(1.0), Color32::from_rgb(26, 152, 80));
        assert_eq!(accuracy_color(2.0), accuracy_color(1.0));
        let g = |v: f64| accuracy_color(v).g();
        assert!(g(0.25) > g(0.0) && g(0.5) > g(0.25));
    }
}
