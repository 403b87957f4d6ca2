//! The top of the window: the menus, Start / Pause / Stop with the reason Start is disabled,
//! the live run's progress, and the notice line.
use super::{level_color, Action, ERROR_COLOR};
use crate::config::FieldError;
use crate::protocol::{Command, Level, Outcome, OUTCOME_COMPLETED, OUTCOME_FAILED};
use crate::ui::live::LiveRun;
use crate::ui::presets::bundled_presets;
use egui::{RichText, Ui};

/// A message at the top of the window until dismissed.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub level: Level,
    pub text: String,
}

/// What the toolbar shows, borrowed from the app for one frame; it has no state of its own.
pub struct Toolbar<'a> {
    /// The experiment's name, and the preset file it came from.
    pub title: String,
    /// Why the designer's experiment cannot start (empty when it can).
    pub problems: &'a [FieldError],
    pub running: bool,
    pub live: Option<&'a LiveRun>,
    pub notice: Option<&'a Notice>,
}

impl Toolbar<'_> {
    pub fn ui(self, ui: &mut Ui) -> Vec<Action> {
        let mut actions = Vec::new();
        egui::MenuBar::new().ui(ui, |ui| {
            menus_ui(ui, &mut actions);
            ui.separator();
            ui.label(RichText::new(&self.title).strong());
        });
        ui.horizontal(|ui| self.controls_ui(ui, &mut actions));
        if let Some(n) = self.notice {
            let color = level_color(ui, n.level);
            ui.horizontal(|ui| {
                ui.label(RichText::new(&n.text).color(color));
                if ui
                    .small_button("✖")
                    .on_hover_text("Dismiss (Esc)")
                    .clicked()
                {
                    actions.push(Action::DismissNotice);
                }
            });
        }
        ui.add_space(2.0);
        actions
    }

    /// Start, Pause / Resume, Stop; why Start is disabled; the live run's progress.
    fn controls_ui(&self, ui: &mut Ui, actions: &mut Vec<Action>) {
        let running = self.running;
        let can_start = !running && self.problems.is_empty();
        let start = ui
            .add_enabled(
                can_start,
                egui::Button::new(RichText::new("▶ Start").strong()),
            )
            .on_hover_text("Train the experiment on the left in the background");
        if start.clicked() {
            actions.push(Action::Start);
        }
        let paused = self.live.is_some_and(|l| l.paused);
        if paused {
            if ui
                .add_enabled(running, egui::Button::new("▶ Resume"))
                .clicked()
            {
                actions.push(Action::Send(Command::Resume));
            }
        } else if ui
            .add_enabled(running, egui::Button::new("⏸ Pause"))
            .clicked()
        {
            actions.push(Action::Send(Command::Pause));
        }
        if ui
            .add_enabled(running, egui::Button::new("⏹ Stop"))
            .clicked()
        {
            actions.push(Action::Send(Command::Stop));
        }
        if let Some(p) = self.problems.first() {
            let more = if self.problems.len() > 1 {
                format!(" (and {} more)", self.problems.len() - 1)
            } else {
                String::new()
            };
            ui.label(RichText::new(format!("Cannot start: {p}{more}")).color(ERROR_COLOR));
        }
        if let Some(live) = self.live {
            ui.separator();
            progress_ui(ui, live);
        }
    }
}

/// The Experiment and Runs menus.
fn menus_ui(ui: &mut Ui, actions: &mut Vec<Action>) {
    ui.menu_button("Experiment", |ui| {
        if ui.button("Default experiment").clicked() {
            actions.push(Action::ResetDefault);
        }
        if ui.button("Open preset…").clicked() {
            actions.push(Action::OpenPresetDialog);
        }
        if ui.button("Save preset as…").clicked() {
            actions.push(Action::SavePresetDialog);
        }
        ui.separator();
        ui.label(RichText::new("Bundled presets").small());
        for p in bundled_presets() {
            let name = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            if ui.button(name).clicked() {
                actions.push(Action::LoadPreset(p));
            }
        }
    });
    ui.menu_button("Runs", |ui| {
        if ui.button("Open run folder…").clicked() {
            actions.push(Action::OpenRunDialog);
        }
        if ui.button("Refresh runs folder").clicked() {
            actions.push(Action::RefreshRuns);
        }
        if ui.button("Export table as CSV").clicked() {
            actions.push(Action::ExportCsv);
        }
    });
}

/// The live run's state, epoch and run progress bars, device and step.
fn progress_ui(ui: &mut Ui, live: &LiveRun) {
    let state = match &live.finished {
        None if live.paused => "paused",
        None => "running",
        Some(Outcome::Completed) => OUTCOME_COMPLETED,
        Some(Outcome::Cancelled) => "stopped",
        Some(Outcome::Failed(_)) => OUTCOME_FAILED,
    };
    ui.label(format!(
        "{state} · epoch {}/{}",
        live.epoch, live.total_epochs
    ));
    ui.add(
        egui::ProgressBar::new(live.epoch_fraction)
            .desired_width(110.0)
            .text(format!("epoch {:.0}%", live.epoch_fraction * 100.0)),
    );
    ui.add(
        egui::ProgressBar::new(live.run_fraction())
            .desired_width(160.0)
            .text(format!("run {:.0}%", live.run_fraction() * 100.0)),
    );
    if !live.device.is_empty() {
        ui.label(RichText::new(format!("{} · step {}", live.device, live.step)).small());
    }
}
