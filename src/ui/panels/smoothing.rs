//! The "Smoothing" tab: randomized-smoothing certified accuracy against the radius (Cohen et
//! al. 2019), one curve per shown run (its noise and levels in the legend), from the run's
//! reported evaluation, with the abstain rate and seconds per certified point beside it.
use super::{titled, Action};
use crate::metrics::SmoothingCurve;
use crate::ui::series::RunSeries;
use egui::Ui;
use egui_plot::{Corner, Legend, Line, Plot, PlotPoints};

#[derive(Debug, Default)]
pub struct SmoothingPanel;

/// The smoothing curve that stands for a run: that of its reported evaluation, else of the
/// latest evaluation that has one.
pub fn run_curve(run: &RunSeries) -> Option<&SmoothingCurve> {
    run.reported()
        .and_then(|r| r.smoothing.as_ref())
        .or_else(|| run.records.iter().rev().find_map(|r| r.smoothing.as_ref()))
}

/// The legend label of a run's curve: run name, noise and levels.
pub fn curve_label(run: &str, c: &SmoothingCurve) -> String {
    let sigmas: Vec<String> = c.sigma.iter().map(|s| format!("{s}")).collect();
    format!("{run} · {} σ {}", c.noise, sigmas.join("/"))
}

impl SmoothingPanel {
    pub fn ui(&mut self, ui: &mut Ui, runs: &[&RunSeries]) -> Vec<Action> {
        let mut actions = Vec::new();
        let curves: Vec<(&RunSeries, &SmoothingCurve)> = runs
            .iter()
            .filter_map(|r| run_curve(r).map(|c| (*r, c)))
            .collect();
        if curves.is_empty() {
            ui.add_space(20.0);
            ui.label("No smoothing certificates yet. Add noise levels under Evaluation, Smoothing sigma; each evaluation then certifies with CERTIFY (Cohen et al. 2019).");
            return actions;
        }
        egui::Grid::new("smoothing-summary")
            .num_columns(4)
            .show(ui, |ui| {
                for h in ["run", "points", "abstain", "s / point"] {
                    ui.label(egui::RichText::new(h).strong());
                }
                ui.end_row();
                for (run, c) in &curves {
                    ui.label(egui::RichText::new(curve_label(&run.name, c)).color(run.color));
                    ui.label(format!("{}", c.points));
                    ui.label(format!("{:.1}%", 100.0 * c.abstain));
                    ui.label(format!("{:.3}", c.secs_per_point));
                    ui.end_row();
                }
            });
        let norm = curves[0].1.norm.clone();
        let h = (ui.available_height() - 40.0).max(150.0);
        titled(
            ui,
            "Certified accuracy of the smoothed classifier against the radius",
            "smoothing",
            &mut actions,
            |ui| {
                Plot::new("smoothing")
                    .height(h)
                    .x_axis_label(format!("{norm} radius"))
                    .y_axis_label("certified accuracy")
                    .include_x(0.0)
                    .include_y(0.0)
                    .include_y(1.0)
                    .legend(Legend::default().position(Corner::RightTop))
                    .show(ui, |p| {
                        for (run, c) in &curves {
                            let pts: Vec<[f64; 2]> = c
                                .radii
                                .iter()
                                .zip(&c.cert_acc)
                                .map(|(r, a)| [*r, *a])
                                .collect();
                            p.line(
                                Line::new(curve_label(&run.name, c), PlotPoints::from(pts))
                                    .color(run.color)
                                    .width(2.0),
                            );
                        }
                    })
                    .response
            },
        );
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ExperimentConfig;
    use crate::metrics::EvalRecord;

    #[test]
    fn a_run_is_drawn_from_its_latest_curve_with_its_levels_in_the_label() {
        let mut run = RunSeries::new(
            "g".into(),
            None,
            ExperimentConfig::default_experiment(),
            egui::Color32::RED,
        );
        assert!(run_curve(&run).is_none());
        for (epoch, acc) in [(1, 0.4), (2, 0.6)] {
            run.push(EvalRecord {
                epoch,
                smoothing: Some(SmoothingCurve {
                    radii: vec![0.0, 0.5],
                    cert_acc: vec![acc, acc / 2.0],
                    noise: "gaussian".into(),
                    sigma: vec![0.25, 0.5],
                    ..SmoothingCurve::default()
                }),
                ..EvalRecord::default()
            });
        }
        let c = run_curve(&run).unwrap();
        assert_eq!(c.cert_acc[0], 0.6);
        assert_eq!(curve_label("g", c), "g · gaussian σ 0.25/0.5");
    }
}
