//! The "Sweep" tab: build a sweep from the experiment in the designer (one or two numeric
//! settings, their values or a range, the seeds), run it locally with a row per point, and read
//! the answer as it arrives: clean vs certified accuracy per group with error bars over seeds
//! and the Pareto front, and any metric against an axis with its 95% band.
use super::{titled, Action, ERROR_COLOR};
use crate::config::ExperimentConfig;
use crate::sweep::{Axis, Mode, PointState, SlurmOptions, SweepSpec};
use crate::ui::sweep_plots::{pareto_plot_ui, response_plot_ui};
use crate::ui::sweep_view::SweepView;
use egui::{RichText, Ui};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The settings offered for sweeping: dotted key and label.
pub const SWEEPABLE: &[(&str, &str)] = &[
    ("train.eps", "training eps"),
    ("train.r1_weight", "r1 weight"),
    ("train.r2_weight", "r2 weight"),
    ("train.final_kappa", "final kappa"),
    ("train.final_beta", "final beta"),
    ("train.lip_weight", "Lipschitz weight"),
    ("train.lip_target", "Lipschitz target"),
    ("train.epochs", "epochs"),
    ("train.batch_size", "batch size"),
    ("train.ramp_epochs", "eps ramp epochs"),
    ("train.pgd_steps", "PGD steps (training)"),
    ("train.sabr_lambda", "SABR small-box lambda"),
    ("train.mtl_alpha", "MTL/CC/Exp-IBP alpha"),
    ("train.shi_reg_weight", "Shi warm-up regularizer weight"),
    ("optimizer.lr", "learning rate"),
    ("optimizer.weight_decay", "weight decay"),
];

/// One axis as typed: a key and its values, with a range that can fill them.
#[derive(Debug, Clone, PartialEq)]
pub struct AxisDraft {
    pub key: String,
    /// Comma-separated values.
    pub values: String,
    pub from: f64,
    pub to: f64,
    pub count: usize,
    pub log: bool,
}

impl AxisDraft {
    fn new(key: &str, values: &str) -> Self {
        AxisDraft {
            key: key.into(),
            values: values.into(),
            from: 1e-3,
            to: 1.0,
            count: 4,
            log: true,
        }
    }

    /// The range as values: `count` points from `from` to `to`, evenly or log-evenly.
    pub fn fill(&mut self) {
        let n = self.count.max(1);
        let at = |i: usize| {
            let t = if n == 1 {
                0.0
            } else {
                i as f64 / (n - 1) as f64
            };
            if self.log && self.from > 0.0 && self.to > 0.0 {
                (self.from.ln() + t * (self.to.ln() - self.from.ln())).exp()
            } else {
                self.from + t * (self.to - self.from)
            }
        };
        self.values = (0..n)
            .map(|i| format!("{}", (at(i) * 1e6).round() / 1e6))
            .collect::<Vec<_>>()
            .join(", ");
    }
}

pub struct SweepPanel {
    pub name: String,
    pub axes: [AxisDraft; 2],
    pub second_axis: bool,
    pub seeds: String,
    pub jobs: usize,
    /// The sweep shown (built here or opened), running or not.
    pub view: Option<SweepView>,
    /// Why the sweep could not be built.
    pub build_error: Option<String>,
    /// The bound of the Pareto plot (`best` or a method), the metric and axis of the response plot.
    pub pareto_bound: String,
    pub response_metric: String,
    pub response_axis: usize,
    /// The group last clicked in the Pareto plot.
    pub selected_group: Option<usize>,
    /// The certlab binary that runs each point (default: this program).
    pub exe: Option<PathBuf>,
}

impl Default for SweepPanel {
    fn default() -> Self {
        SweepPanel {
            name: "sweep".into(),
            axes: [
                AxisDraft::new("train.r2_weight", "0, 0.01, 0.1, 0.5"),
                AxisDraft::new("optimizer.lr", "0.0005, 0.001"),
            ],
            second_axis: false,
            seeds: "0, 1, 2".into(),
            jobs: 1,
            view: None,
            build_error: None,
            pareto_bound: "best".into(),
            response_metric: crate::sweep::CERT_BEST.into(),
            response_axis: 0,
            selected_group: None,
            exe: None,
        }
    }
}

/// Parses `0, 0.01, 1e-3` into numbers, naming the first that is not one.
fn parse_numbers(text: &str, what: &str) -> Result<Vec<f64>, String> {
    let v: Result<Vec<f64>, String> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<f64>()
                .map_err(|_| format!("{what}: `{s}` is not a number"))
        })
        .collect();
    let v = v?;
    if v.is_empty() {
        return Err(format!("{what}: give at least one value"));
    }
    Ok(v)
}

impl SweepPanel {
    /// The sweep file the builder describes, over `cfg` (the designer's experiment).
    pub fn spec(&self, cfg: &ExperimentConfig) -> Result<SweepSpec, String> {
        let full: toml::Table = toml::from_str(&cfg.to_toml_string()).map_err(|e| e.to_string())?;
        let used = if self.second_axis { 2 } else { 1 };
        let mut axes = Vec::new();
        for a in &self.axes[..used] {
            let values = parse_numbers(&a.values, &a.key)?;
            let values = values
                .into_iter()
                .map(|x| {
                    if crate::sweep::is_integer(&full, &a.key) && x.fract() == 0.0 {
                        toml::Value::Integer(x as i64)
                    } else {
                        toml::Value::Float(x)
                    }
                })
                .collect();
            axes.push(Axis {
                key: a.key.clone(),
                values,
                range: None,
                scale: Default::default(),
            });
        }
        let seeds = parse_numbers(&self.seeds, "seeds")?;
        if seeds.iter().any(|s| *s < 0.0 || s.fract() != 0.0) {
            return Err("seeds: whole numbers >= 0".into());
        }
        let name: String = self
            .name
            .trim()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        Ok(SweepSpec {
            name: if name.is_empty() {
                "sweep".into()
            } else {
                name
            },
            base: PathBuf::from("base.toml"),
            seeds: seeds.into_iter().map(|s| s as u64).collect(),
            mode: Mode::Grid,
            samples: 0,
            sample_seed: 0,
            axes,
            set: BTreeMap::new(),
            slurm: SlurmOptions::default(),
        })
    }

    fn point_count(&self) -> Option<(usize, usize)> {
        let used = if self.second_axis { 2 } else { 1 };
        let settings: usize = self.axes[..used]
            .iter()
            .map(|a| parse_numbers(&a.values, "").map_or(0, |v| v.len()))
            .product();
        let seeds = parse_numbers(&self.seeds, "").ok()?.len();
        Some((settings, seeds))
    }

    pub fn is_running(&self) -> bool {
        self.view.as_ref().is_some_and(|v| v.is_running())
    }

    pub fn ui(&mut self, ui: &mut Ui) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(v) = self.view.as_mut() {
            v.poll();
            if v.is_running() {
                ui.ctx()
                    .request_repaint_after(std::time::Duration::from_millis(500));
            }
        }
        egui::CollapsingHeader::new("Build a sweep from the experiment in the designer")
            .default_open(self.view.is_none())
            .show(ui, |ui| self.builder_ui(ui, &mut actions));
        ui.separator();
        let Some(view) = self.view.as_mut() else {
            ui.label(
                RichText::new(
                    "No sweep yet: build one above, or open a sweep folder from the Runs tab.",
                )
                .italics(),
            );
            return actions;
        };
        status_ui(ui, view, &mut actions);
        let h = ui.available_height();
        egui::ScrollArea::vertical()
            .id_salt("sweep-points")
            .max_height((h * 0.32).max(90.0))
            .show(ui, |ui| points_table_ui(ui, view));
        ui.separator();
        self.results_ui(ui, &mut actions);
        actions
    }

    fn builder_ui(&mut self, ui: &mut Ui, actions: &mut Vec<Action>) {
        let running = self.is_running();
        egui::Grid::new("sweep-builder")
            .num_columns(2)
            .show(ui, |ui| {
                let l = ui.label("Name");
                ui.text_edit_singleline(&mut self.name).labelled_by(l.id);
                ui.end_row();
                let used = if self.second_axis { 2 } else { 1 };
                for (i, a) in self.axes[..used].iter_mut().enumerate() {
                    axis_ui(ui, i, a);
                }
                ui.label("");
                ui.checkbox(&mut self.second_axis, "Second setting (grid of both)");
                ui.end_row();
                let l = ui.label("Seeds");
                ui.text_edit_singleline(&mut self.seeds).labelled_by(l.id);
                ui.end_row();
                ui.label("Runs at a time");
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                ui.add(egui::Slider::new(&mut self.jobs, 1..=cores.max(1)).text("jobs"));
                ui.end_row();
            });
        ui.horizontal(|ui| {
            if let Some((settings, seeds)) = self.point_count() {
                ui.label(format!(
                    "{} points = {settings} settings × {seeds} seeds; each run gets {} torch thread(s)",
                    settings * seeds,
                    (std::thread::available_parallelism().map_or(1, |n| n.get()) / self.jobs.max(1)).max(1)
                ));
            }
        });
        ui.horizontal(|ui| {
            let start = ui.add_enabled(!running, egui::Button::new("Start sweep"));
            if start
                .on_hover_text("Writes <runs>/sweeps/<name>/ and runs its points; a sweep of the same name resumes")
                .clicked()
            {
                actions.push(Action::StartSweep);
            }
        });
        if let Some(e) = &self.build_error {
            ui.label(RichText::new(e).color(ERROR_COLOR));
        }
    }

    fn results_ui(&mut self, ui: &mut Ui, actions: &mut Vec<Action>) {
        let Some(report) = self.view.as_ref().and_then(|v| v.report.clone()) else {
            return;
        };
        let mut cert_keys: Vec<String> = report
            .groups
            .iter()
            .flat_map(|g| g.metrics.keys())
            .filter_map(|k| k.strip_prefix("cert_acc.").map(String::from))
            .collect();
        cert_keys.sort();
        cert_keys.dedup();
        ui.horizontal(|ui| {
            egui::ComboBox::from_label("certified by")
                .selected_text(&self.pareto_bound)
                .show_ui(ui, |ui| {
                    for k in &cert_keys {
                        ui.selectable_value(&mut self.pareto_bound, k.clone(), k);
                    }
                });
            if ui
                .button("Export CSV")
                .on_hover_text("Write the report table to <runs>/exports/")
                .clicked()
            {
                actions.push(Action::ExportSweepCsv);
            }
        });
        let metric = format!("cert_acc.{}", self.pareto_bound);
        let Some(view) = self.view.as_mut() else {
            return;
        };
        if view.cert_metric != metric {
            view.cert_metric = metric;
            view.refresh_report();
        }
        let Some(report) = view.report.clone() else {
            return;
        };
        let mut clicked = None;
        let selected = self.selected_group;
        let w = ui.available_width();
        let h = (ui.available_height() - 40.0).max(160.0);
        ui.horizontal_top(|ui| {
            ui.vertical(|ui| {
                ui.set_width(w * 0.5 - 8.0);
                titled(
                    ui,
                    "Clean vs certified accuracy (groups, 95% intervals)",
                    "sweep-pareto",
                    actions,
                    |ui| {
                        let (resp, c) = pareto_plot_ui(ui, &report, h, selected);
                        clicked = c;
                        resp
                    },
                );
            });
            ui.vertical(|ui| {
                ui.set_width(w * 0.5 - 8.0);
                self.response_controls_ui(ui, &report);
                titled(
                    ui,
                    "Response over the sweep (mean, 95% band)",
                    "sweep-response",
                    actions,
                    |ui| {
                        response_plot_ui(
                            ui,
                            &report,
                            &self.response_metric,
                            self.response_axis,
                            h - 30.0,
                        )
                    },
                );
            });
        });
        // A click on a group opens its runs as overlays on every plot.
        if let Some(g) = clicked {
            self.selected_group = Some(g);
            if let Some(view) = &self.view {
                actions.extend(view.group_runs(g).into_iter().map(Action::OpenRun));
            }
        }
    }

    fn response_controls_ui(&mut self, ui: &mut Ui, report: &crate::sweep::SweepReport) {
        let mut metrics: Vec<String> = report
            .groups
            .iter()
            .flat_map(|g| g.metrics.keys().cloned())
            .collect();
        metrics.sort();
        metrics.dedup();
        ui.horizontal(|ui| {
            egui::ComboBox::from_label("metric")
                .selected_text(&self.response_metric)
                .show_ui(ui, |ui| {
                    for m in &metrics {
                        ui.selectable_value(&mut self.response_metric, m.clone(), m);
                    }
                });
            if report.axes.len() > 1 {
                egui::ComboBox::from_label("against")
                    .selected_text(
                        report
                            .axes
                            .get(self.response_axis)
                            .cloned()
                            .unwrap_or_default(),
                    )
                    .show_ui(ui, |ui| {
                        for (i, a) in report.axes.iter().enumerate() {
                            ui.selectable_value(&mut self.response_axis, i, a);
                        }
                    });
            }
        });
    }
}

fn axis_ui(ui: &mut Ui, i: usize, a: &mut AxisDraft) {
    ui.label(format!("Setting {}", i + 1));
    ui.vertical(|ui| {
        let label = SWEEPABLE
            .iter()
            .find(|(k, _)| *k == a.key)
            .map_or(a.key.clone(), |(k, l)| format!("{l} ({k})"));
        egui::ComboBox::from_id_salt(("sweep-axis", i))
            .selected_text(label)
            .show_ui(ui, |ui| {
                for (k, l) in SWEEPABLE {
                    ui.selectable_value(&mut a.key, k.to_string(), format!("{l} ({k})"));
                }
            });
        ui.horizontal(|ui| {
            let l = ui.label("values");
            ui.text_edit_singleline(&mut a.values).labelled_by(l.id);
        });
        ui.horizontal(|ui| {
            ui.add(
                egui::DragValue::new(&mut a.from)
                    .speed(0.001)
                    .prefix("from "),
            );
            ui.add(egui::DragValue::new(&mut a.to).speed(0.001).prefix("to "));
            ui.add(
                egui::DragValue::new(&mut a.count)
                    .range(1..=50)
                    .prefix("n "),
            );
            ui.checkbox(&mut a.log, "log");
            if ui.small_button("Fill values").clicked() {
                a.fill();
            }
        });
    });
    ui.end_row();
}

fn status_ui(ui: &mut Ui, view: &mut SweepView, actions: &mut Vec<Action>) {
    ui.horizontal(|ui| {
        ui.label(RichText::new(format!("Sweep {}", view.folder.spec.name)).strong());
        ui.label(RichText::new(view.dir().display().to_string()).small());
        if view.is_running() {
            if ui
                .button("Stop")
                .on_hover_text("Stops every running point after its batch; Start resumes")
                .clicked()
            {
                actions.push(Action::StopSweep);
            }
        } else if view.states.iter().any(|s| s.needs_run(false)) && ui.button("Resume").clicked() {
            actions.push(Action::ResumeSweep);
        }
    });
    let done = view
        .states
        .iter()
        .filter(|s| **s == PointState::Done)
        .count();
    let failed = view
        .states
        .iter()
        .filter(|s| matches!(s, PointState::Failed(_)))
        .count();
    let line = match &view.counts {
        Some(c) if view.is_running() => c.line(),
        _ => format!("{done}/{} done, {failed} failed", view.states.len()),
    };
    ui.label(line);
    if let Some(e) = &view.error {
        ui.label(RichText::new(e).color(ERROR_COLOR));
    }
}

fn points_table_ui(ui: &mut Ui, view: &SweepView) {
    let metrics = view.point_metrics();
    egui::Grid::new("sweep-points-grid")
        .striped(true)
        .num_columns(7)
        .show(ui, |ui| {
            for h in [
                "point",
                "settings",
                "seed",
                "state",
                "progress",
                "clean",
                "certified (best)",
            ] {
                ui.label(RichText::new(h).strong());
            }
            ui.end_row();
            for (i, p) in view.folder.points.iter().enumerate() {
                ui.label(&p.id);
                let settings = crate::sweep::settings_label(&p.setting, true);
                ui.label(settings);
                ui.label(p.seed.to_string());
                match &view.states[i] {
                    PointState::Failed(e) => {
                        ui.label(RichText::new("failed").color(ERROR_COLOR))
                            .on_hover_text(e);
                    }
                    s => {
                        ui.label(s.label());
                    }
                }
                ui.add(
                    egui::ProgressBar::new(view.progress[i])
                        .desired_width(90.0)
                        .show_percentage(),
                );
                let m = metrics.get(p.id.as_str());
                let cell = |k: &str| {
                    m.and_then(|m| m.get(k))
                        .map_or("–".into(), |v| format!("{:.1}%", v * 100.0))
                };
                ui.label(cell(crate::sweep::CLEAN));
                ui.label(cell(crate::sweep::CERT_BEST));
                ui.end_row();
            }
        });
}
