//! The "Runs" tab: the run browser. Every run of the runs folder (and the live one) with its
//! final numbers; ticked runs are overlaid on every plot.
use super::cross_norm::{cross_cell, cross_hover};
use super::{Action, ERROR_COLOR};
use crate::ui::export::{pct, summary_row};
use crate::ui::library::Library;
use crate::ui::series::{cert_methods, RunSeries};
use egui::{RichText, Ui};

/// The run browser; what it shows is the [`Library`] (and the live run), which it edits only
/// through the overlay ticks.
#[derive(Debug, Default)]
pub struct RunsPanel;

/// The fixed columns of the table, before one column per certifying bound.
const COLUMNS: [&str; 12] = [
    "run (tick to overlay)",
    "data",
    "model",
    "method",
    "train eps",
    "eval eps",
    "epochs",
    "status",
    "wall",
    "split",
    "clean",
    "PGD",
];

impl RunsPanel {
    pub fn ui(
        &mut self,
        ui: &mut Ui,
        live: Option<&mut RunSeries>,
        library: &mut Library,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        ui.horizontal(|ui| {
            ui.label(format!("Runs folder: {}", library.dir.display()));
            if ui.button("Refresh").clicked() {
                actions.push(Action::RefreshRuns);
            }
            if ui.button("Open run folder…").clicked() {
                actions.push(Action::OpenRunDialog);
            }
            if ui
                .button("Open sweep folder…")
                .on_hover_text("A folder written by `certlab sweep` or the Sweep tab")
                .clicked()
            {
                actions.push(Action::OpenSweepDialog);
            }
            if ui
                .button("Export CSV")
                .on_hover_text("Write this table to <runs>/exports/")
                .clicked()
            {
                actions.push(Action::ExportCsv);
            }
        });
        ui.label(
            RichText::new("Tick runs to overlay them on every plot, each in its own colour.")
                .small(),
        );
        let sweeps = sweep_folders(&library.dir.join("sweeps"));
        if !sweeps.is_empty() {
            ui.horizontal_wrapped(|ui| {
                ui.label("Sweeps:");
                for dir in sweeps {
                    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
                    if ui
                        .button(name.unwrap_or_default())
                        .on_hover_text(format!("Open {} in the Sweep tab", dir.display()))
                        .clicked()
                    {
                        actions.push(Action::OpenSweep(dir));
                    }
                }
            });
        }
        for e in &library.errors {
            ui.label(RichText::new(e).color(ERROR_COLOR).small());
        }
        ui.separator();
        let cert_keys = cert_methods(library.all(live.as_deref()));
        // The cross-norm column only when a run has `eval.cross_norm` numbers.
        let cross = library
            .all(live.as_deref())
            .any(|r| cross_cell(r).is_some());
        let rows = live.into_iter().chain(library.runs.iter_mut());
        egui::ScrollArea::both().show(ui, |ui| {
            egui::Grid::new("runs-table")
                .striped(true)
                .num_columns(COLUMNS.len() + cert_keys.len() + usize::from(cross))
                .show(ui, |ui| {
                    for h in COLUMNS {
                        ui.label(RichText::new(h).strong());
                    }
                    for k in &cert_keys {
                        ui.label(RichText::new(format!("cert {k}")).strong());
                    }
                    if cross {
                        ui.label(RichText::new("cross-norm PGD").strong())
                            .on_hover_text("PGD accuracy under each attack norm at its smallest radius, the trained-for norm first (eval.cross_norm)");
                    }
                    ui.end_row();
                    for run in rows {
                        row_ui(ui, run, &cert_keys, cross);
                    }
                });
        });
        actions
    }
}

/// One run's row: its overlay tick (in its colour) and its final numbers.
fn row_ui(ui: &mut Ui, run: &mut RunSeries, cert_keys: &[String], cross: bool) {
    let name = RichText::new(run.name.clone()).color(run.color).strong();
    let folder = run
        .dir
        .as_ref()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    ui.checkbox(&mut run.visible, name).on_hover_text(folder);
    let r = summary_row(run);
    for cell in &r.cells {
        ui.label(cell);
    }
    for k in cert_keys {
        ui.label(
            r.cert
                .iter()
                .find(|(m, _)| m == k)
                .map_or("–".into(), |(_, v)| pct(*v)),
        );
    }
    if cross {
        match cross_cell(run) {
            Some(cell) => ui.label(cell).on_hover_text(cross_hover(run)),
            None => ui.label("–"),
        };
    }
    ui.end_row();
}

/// The sweep folders directly under `dir` (those with a `sweep.toml`), sorted.
fn sweep_folders(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join(crate::sweep::SWEEP_FILE).exists())
        .collect();
    found.sort();
    found
}
