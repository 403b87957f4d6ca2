//! The panels of the window, one struct each. A panel owns its own view state (a checkbox,
//! the bound an overlay compares, a texture), draws from the runs it is handed, and returns
//! the [`Action`]s it asks for; the app applies them after the frame, in one place.
pub mod cross_norm;
pub mod decision;
pub mod designer;
pub mod inspector;
pub mod inspector_views;
pub mod lipschitz;
pub mod log;
pub mod overview;
pub mod runs;
pub mod smooth_overlay;
pub mod smoothing;
pub mod sweep;
pub mod tightness;
pub mod toolbar;

pub use decision::DecisionPanel;
pub use designer::Designer;
pub use inspector::InspectorPanel;
pub use lipschitz::LipschitzPanel;
pub use log::{LogLine, LogPanel};
pub use overview::OverviewPanel;
pub use runs::RunsPanel;
pub use smoothing::SmoothingPanel;
pub use sweep::SweepPanel;
pub use tightness::TightnessPanel;
pub use toolbar::{Notice, Toolbar};

use super::library::Library;
use super::live::LiveRun;
use super::series::RunSeries;
use crate::protocol::{Command, Level};
use egui::{Color32, RichText, Ui};
use std::path::PathBuf;

/// What the UI asks for while drawing; applied after the frame, in one place.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Start,
    Send(Command),
    OpenPresetDialog,
    SavePresetDialog,
    LoadPreset(PathBuf),
    ResetDefault,
    OpenRunDialog,
    RefreshRuns,
    ExportCsv,
    SavePlotPng {
        name: String,
        rect: egui::Rect,
    },
    PickDatasetFolder,
    DismissNotice,
    /// Overlay a run folder (a sweep group's runs, when clicked).
    OpenRun(PathBuf),
    OpenSweepDialog,
    OpenSweep(PathBuf),
    /// Build the Sweep tab's sweep from the designer's experiment and run it.
    StartSweep,
    StopSweep,
    ResumeSweep,
    ExportSweepCsv,
    /// Open test point `index` of the run in `run_dir` in the Inspector.
    InspectPoint {
        run_dir: PathBuf,
        index: usize,
    },
}

/// The views of the central panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Overview,
    Tightness,
    Lipschitz,
    Decision,
    Inspector,
    Runs,
    Sweep,
    Smoothing,
}

impl Tab {
    pub const ALL: [Tab; 8] = [
        Tab::Overview,
        Tab::Tightness,
        Tab::Lipschitz,
        Tab::Smoothing,
        Tab::Decision,
        Tab::Inspector,
        Tab::Runs,
        Tab::Sweep,
    ];
    pub fn title(self) -> &'static str {
        match self {
            Tab::Overview => "Accuracy & loss",
            Tab::Tightness => "Bound tightness",
            Tab::Lipschitz => "Lipschitz",
            Tab::Decision => "2-D view",
            Tab::Inspector => "Inspector",
            Tab::Runs => "Runs",
            Tab::Sweep => "Sweep",
            Tab::Smoothing => "Smoothing",
        }
    }
    pub fn parse(s: &str) -> Option<Tab> {
        match s {
            "overview" | "accuracy" => Some(Tab::Overview),
            "tightness" | "gap" => Some(Tab::Tightness),
            "lipschitz" => Some(Tab::Lipschitz),
            "decision" | "2d" => Some(Tab::Decision),
            "inspector" | "inspect" => Some(Tab::Inspector),
            "runs" | "compare" => Some(Tab::Runs),
            "sweep" => Some(Tab::Sweep),
            "smoothing" => Some(Tab::Smoothing),
            _ => None,
        }
    }
}

/// The tabs of the central panel, each with its own state.
#[derive(Default)]
pub struct Tabs {
    pub overview: OverviewPanel,
    pub tightness: TightnessPanel,
    pub lipschitz: LipschitzPanel,
    pub decision: DecisionPanel,
    pub inspector: InspectorPanel,
    pub runs: RunsPanel,
    pub sweep: SweepPanel,
    pub smoothing: SmoothingPanel,
}

impl Tabs {
    /// The central panel: the tab bar, which runs are shown, and the tab `current`.
    pub fn ui(
        &mut self,
        ui: &mut Ui,
        current: &mut Tab,
        mut live: Option<&mut LiveRun>,
        library: &mut Library,
    ) -> Vec<Action> {
        ui.horizontal(|ui| {
            for t in Tab::ALL {
                ui.selectable_value(current, t, t.title());
            }
        });
        let live_series = live.as_deref().map(|l| &l.series);
        showing_ui(ui, &library.visible(live_series), live_series);
        ui.separator();
        match *current {
            Tab::Overview => self.overview.ui(ui, &library.visible(live_series)),
            Tab::Tightness => self.tightness.ui(ui, &library.visible(live_series)),
            Tab::Lipschitz => self.lipschitz.ui(ui, &library.visible(live_series)),
            Tab::Smoothing => self.smoothing.ui(ui, &library.visible(live_series)),
            Tab::Decision => self.decision.ui(ui, live.as_deref()),
            Tab::Inspector => {
                let sources: Vec<(String, PathBuf)> = library
                    .all(live_series)
                    .filter_map(|r| r.dir.clone().map(|d| (r.name.clone(), d)))
                    .collect();
                self.inspector.ui(ui, &sources)
            }
            Tab::Runs => self
                .runs
                .ui(ui, live.as_mut().map(|l| &mut l.series), library),
            Tab::Sweep => self.sweep.ui(ui),
        }
    }
}

/// Which runs the plots show, in their colours (ticked in the Runs tab).
fn showing_ui(ui: &mut Ui, runs: &[&RunSeries], live: Option<&RunSeries>) {
    ui.horizontal_wrapped(|ui| {
        if runs.is_empty() {
            ui.label(
                RichText::new("No run shown: press Start, or tick runs in the Runs tab.").italics(),
            );
            return;
        }
        ui.label("Showing:");
        for r in runs {
            let text = if live.is_some_and(|l| std::ptr::eq(l, *r)) {
                format!("{} (live)", r.name)
            } else {
                r.name.clone()
            };
            ui.label(RichText::new(text).color(r.color));
        }
    });
    if let Some(warning) = incomparable(runs) {
        ui.label(RichText::new(warning).color(WARN_COLOR));
    }
}

/// A warning when the shown runs' robust numbers are measured at different radii or norms:
/// their PGD and certified curves are then not comparable, whatever the plot suggests.
pub fn incomparable(runs: &[&RunSeries]) -> Option<String> {
    let mut at: Vec<(String, String)> = runs
        .iter()
        .filter_map(|r| r.eval_at().map(|a| (a, r.name.clone())))
        .collect();
    at.sort();
    let first = at.first()?;
    let other = at.iter().find(|(a, _)| *a != first.0)?;
    Some(format!(
        "Not comparable: these runs are evaluated at different eps or norms ({} at {}, {} at {}); \
         their PGD and certified accuracies measure different things.",
        first.1, first.0, other.1, other.0
    ))
}

/// A plot with a header line: its title and a button that saves it as PNG.
fn titled(
    ui: &mut Ui,
    title: &str,
    file_stem: &str,
    actions: &mut Vec<Action>,
    body: impl FnOnce(&mut Ui) -> egui::Response,
) {
    let mut save = false;
    // The scope holds title, key, plot and axes: what "Save PNG" writes.
    let scope = ui.scope(|ui| {
        ui.horizontal(|ui| {
            ui.label(RichText::new(title).strong());
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                save = ui
                    .small_button("Save PNG")
                    .on_hover_text(format!(
                        "Write this plot to <runs>/exports/{file_stem}-<time>.png"
                    ))
                    .clicked();
            });
        });
        body(ui)
    });
    if save {
        actions.push(Action::SavePlotPng {
            name: file_stem.to_string(),
            rect: scope.response.rect,
        });
    }
}

/// The colour of error text (a field's problem, a failed run).
pub const ERROR_COLOR: Color32 = Color32::from_rgb(235, 87, 87);
/// The colour of warnings.
const WARN_COLOR: Color32 = Color32::from_rgb(230, 170, 20);

/// The colour of a message of `level`.
fn level_color(ui: &Ui, level: Level) -> Color32 {
    match level {
        Level::Info => ui.visuals().text_color(),
        Level::Warn => WARN_COLOR,
        Level::Error => ERROR_COLOR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ExperimentConfig, Norm};

    fn run(name: &str, eps: &[f64], norm: Norm) -> RunSeries {
        let mut cfg = ExperimentConfig::default_experiment();
        cfg.eval.eps = eps.to_vec();
        cfg.eval.norm = norm;
        RunSeries::new(name.into(), None, cfg, Color32::WHITE)
    }

    #[test]
    fn overlays_at_different_eval_eps_or_norms_are_flagged() {
        let a = run("a", &[0.1], Norm::Linf);
        let b = run("b", &[0.1], Norm::Linf);
        let c = run("c", &[0.3], Norm::Linf);
        let d = run("d", &[0.1], Norm::L2);
        let none = run("e", &[], Norm::Linf);
        assert_eq!(
            incomparable(&[&a, &b, &none]),
            None,
            "same eps and norm compare"
        );
        let w = incomparable(&[&a, &c]).unwrap();
        assert!(w.contains("0.1 linf") && w.contains("0.3 linf"), "{w}");
        let w = incomparable(&[&b, &d]).unwrap();
        assert!(w.contains("l2"), "{w}");
    }
}
