//! The "Bound tightness" tab: how far the linear relaxation is from exact (Zhu et al. 2020):
//! unstable ReLUs per layer, the regularizers r1 and r2, the fraction of exact bounds, and the
//! histogram of `p_t - m_t`.
use super::{titled, Action};
use crate::ui::plots::{gap_histogram_ui, CurvePlot, YAxis};
use crate::ui::series::{Metric, RunSeries};
use egui::Ui;

#[derive(Debug)]
pub struct TightnessPanel {
    /// Draw r1 and r2 on a log axis (this tab's own flag: the Lipschitz tab has its own).
    pub log_scale: bool,
}

impl Default for TightnessPanel {
    fn default() -> Self {
        TightnessPanel { log_scale: true }
    }
}

impl TightnessPanel {
    pub fn ui(&mut self, ui: &mut Ui, runs: &[&RunSeries]) -> Vec<Action> {
        let mut actions = Vec::new();
        let method = runs.iter().find_map(|r| {
            r.last()
                .and_then(|x| x.gap.as_ref())
                .map(|g| g.method.clone())
        });
        let Some(method) = method else {
            ui.add_space(20.0);
            ui.label("No tightness statistics yet. They come with every evaluation of a run that trains with CROWN-IBP or Fast-Lin, or that certifies with a linear bound (crown-ibp, fastlin, crown under Evaluation → Certify with).");
            return actions;
        };
        ui.horizontal(|ui| {
            ui.label(format!(
                "Relaxation: {method}, on the robust subset at the first eval eps."
            ));
            ui.checkbox(&mut self.log_scale, "log scale for r1, r2");
        });
        let h = ui.available_height();
        let row_h = ((h - 90.0) / 2.0).max(120.0);
        let log = if self.log_scale {
            YAxis::Log
        } else {
            YAxis::Linear
        };
        ui.columns(2, |cols| {
            titled(
                &mut cols[0],
                "Unstable ReLUs per example, by layer",
                "unstable",
                &mut actions,
                |ui| {
                    let keep = |m: &Metric| matches!(m, Metric::Unstable(_));
                    CurvePlot {
                        id: "unstable",
                        y_label: "unstable neurons",
                        y_axis: YAxis::Linear,
                        height: row_h,
                        keep: &keep,
                    }
                    .ui(ui, runs)
                },
            );
            titled(
                &mut cols[1],
                "Tightness regularizers r1, r2 (mean)",
                "r1r2",
                &mut actions,
                |ui| {
                    let keep = |m: &Metric| matches!(m, Metric::R1 | Metric::R2);
                    CurvePlot {
                        id: "r1r2",
                        y_label: "r",
                        y_axis: log,
                        height: row_h,
                        keep: &keep,
                    }
                    .ui(ui, runs)
                },
            );
            titled(
                &mut cols[0],
                "Exact bounds and the certified–PGD gap",
                "exact",
                &mut actions,
                |ui| {
                    let keep = |m: &Metric| matches!(m, Metric::FracExact | Metric::CertPgdGap);
                    CurvePlot {
                        id: "exact",
                        y_label: "fraction",
                        y_axis: YAxis::Fraction,
                        height: row_h,
                        keep: &keep,
                    }
                    .ui(ui, runs)
                },
            );
            titled(
                &mut cols[1],
                "Histogram of p_t − m_t (last evaluation)",
                "gap-histogram",
                &mut actions,
                |ui| gap_histogram_ui(ui, runs, row_h),
            );
        });
        actions
    }
}
