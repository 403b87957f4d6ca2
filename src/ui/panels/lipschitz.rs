//! The "Lipschitz" tab: the network's Lipschitz constant by estimator over epochs, and ADMM's
//! primal residual in its own plot when a run trains with ADMM (Pauli et al. 2021).
use super::{titled, Action};
use crate::metrics::key;
use crate::ui::plots::{CurvePlot, YAxis};
use crate::ui::series::{Metric, RunSeries};
use egui::Ui;

#[derive(Debug)]
pub struct LipschitzPanel {
    /// Draw the estimates on a log axis (this tab's own flag: the Tightness tab has its own).
    pub log_scale: bool,
}

impl Default for LipschitzPanel {
    fn default() -> Self {
        LipschitzPanel { log_scale: true }
    }
}

impl LipschitzPanel {
    pub fn ui(&mut self, ui: &mut Ui, runs: &[&RunSeries]) -> Vec<Action> {
        let mut actions = Vec::new();
        let any = runs
            .iter()
            .any(|r| r.curves.keys().any(|m| matches!(m, Metric::Lipschitz(_))));
        if !any {
            ui.add_space(20.0);
            ui.label("No Lipschitz estimates yet. Pick estimators under Evaluation → Lipschitz estimates; each evaluation then reports them.");
            return actions;
        }
        ui.checkbox(&mut self.log_scale, "log scale");
        let y = if self.log_scale {
            YAxis::Log
        } else {
            YAxis::Linear
        };
        // ADMM's primal residual is a ratio, not a Lipschitz constant: its own plot below.
        let residual = |m: &Metric| matches!(m, Metric::Lipschitz(k) if k == key::ADMM_RESIDUAL);
        let admm = runs.iter().any(|r| r.curves.keys().any(residual));
        let avail = ui.available_height() - 40.0;
        let h = if admm { avail * 0.65 - 40.0 } else { avail };
        titled(
            ui,
            "Lipschitz constant of the network, by estimator",
            "lipschitz",
            &mut actions,
            |ui| {
                let keep = |m: &Metric| matches!(m, Metric::Lipschitz(_)) && !residual(m);
                CurvePlot {
                    id: "lipschitz",
                    y_label: "Lipschitz (ℓ2)",
                    y_axis: y,
                    height: h.max(150.0),
                    keep: &keep,
                }
                .ui(ui, runs)
            },
        );
        if admm {
            let h = (avail * 0.35 - 40.0).max(100.0);
            titled(
                ui,
                "ADMM primal residual ‖W − Wbar‖ / ‖W‖ (Wbar: the weights projected onto the LipSDP set)",
                "admm",
                &mut actions,
                |ui| {
                    CurvePlot {
                        id: "admm",
                        y_label: "residual",
                        y_axis: YAxis::Log,
                        height: h,
                        keep: &residual,
                    }
                    .ui(ui, runs)
                },
            );
        }
        actions
    }
}
