//! The "Accuracy & loss" tab: clean, PGD, verified and certified accuracy over epochs, which
//! stage decided the verified points, and the loss.
use super::cross_norm::{cross_norm_ui, heat_map};
use super::{titled, Action};
use crate::config::BoundMethod;
use crate::ui::plots::{CurvePlot, YAxis};
use crate::ui::series::{cert_methods, Metric, RunSeries};
use crate::ui::verify_plot::verify_stages_ui;
use egui::Ui;

#[derive(Debug, Default)]
pub struct OverviewPanel {
    /// Which bound's certified accuracy the overlay of several runs shows.
    pub compare_bound: Option<String>,
}

impl OverviewPanel {
    pub fn ui(&mut self, ui: &mut Ui, runs: &[&RunSeries]) -> Vec<Action> {
        let mut actions = Vec::new();
        let h = ui.available_height();
        let acc_h = (h * 0.55 - 30.0).max(120.0);
        // The cross-norm heat map (runs with `eval.cross_norm`) takes its rows from the loss plot.
        let heat_rows = heat_map(runs).rows.len();
        let heat_h = if heat_rows > 0 {
            60.0 + 26.0 * heat_rows as f32
        } else {
            0.0
        };
        let loss_h = (h - acc_h - heat_h - 70.0).max(100.0);
        // Overlaid runs: clean, PGD and one bound's certified accuracy each, or it is a thicket.
        let several = runs.len() > 1;
        let bounds = cert_methods(runs.iter().copied());
        if several && !bounds.is_empty() {
            self.compare_bound_ui(ui, &bounds);
        }
        let chosen = self.compare_bound.clone();
        titled(
            ui,
            "Accuracy: clean vs PGD vs verified vs certified",
            "accuracy",
            &mut actions,
            |ui| {
                let keep = |m: &Metric| match m {
                    Metric::Clean | Metric::Pgd | Metric::Verified => true,
                    Metric::SubsetClean => !several,
                    Metric::Cert(b) => !several || chosen.as_ref() == Some(b),
                    _ => false,
                };
                let response = CurvePlot {
                    id: "accuracy",
                    y_label: "accuracy",
                    y_axis: YAxis::Fraction,
                    height: acc_h,
                    keep: &keep,
                }
                .ui(ui, runs);
                // Which stage decided the verified points (runs with `eval.verify`).
                verify_stages_ui(ui, runs, 50.0 + 22.0 * runs.len() as f32);
                response
            },
        );
        cross_norm_ui(ui, runs, &mut actions);
        titled(ui, "Loss", "loss", &mut actions, |ui| {
            let keep = |m: &Metric| {
                matches!(
                    m,
                    Metric::TrainLoss | Metric::BatchLoss | Metric::LossPart(_)
                )
            };
            // (Batch losses exist for the live run only.)
            CurvePlot {
                id: "loss",
                y_label: "loss",
                y_axis: YAxis::Linear,
                height: loss_h,
                keep: &keep,
            }
            .ui(ui, runs)
        });
        actions
    }

    /// The bound whose certified accuracy the overlay shows: CROWN when the runs have it.
    fn compare_bound_ui(&mut self, ui: &mut Ui, bounds: &[String]) {
        if !self
            .compare_bound
            .as_ref()
            .is_some_and(|b| bounds.contains(b))
        {
            self.compare_bound = bounds
                .iter()
                .find(|b| *b == BoundMethod::Crown.name())
                .or(bounds.first())
                .cloned();
        }
        ui.horizontal(|ui| {
            let l = ui.label("Certified accuracy of the overlaid runs by");
            let current = self.compare_bound.clone().unwrap_or_default();
            egui::ComboBox::from_id_salt("compare-bound")
                .selected_text(current)
                .show_ui(ui, |ui| {
                    for b in bounds {
                        ui.selectable_value(&mut self.compare_bound, Some(b.clone()), b);
                    }
                })
                .response
                .labelled_by(l.id);
        });
    }
}
