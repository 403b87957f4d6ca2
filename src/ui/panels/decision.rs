//! The "2-D view" tab: the live run's decision regions on a toy data set and which test
//! points are certified, updated after every evaluation. Clicking a test point opens it in
//! the Inspector.
use super::inspector_views::nearest_point;
use super::Action;
use crate::ui::live::LiveRun;
use crate::ui::toy;
use egui::{RichText, Ui};

#[derive(Default)]
pub struct DecisionPanel {
    /// The regions image of the map last drawn, by epoch (a new run starts it again).
    texture: Option<(u32, egui::TextureHandle)>,
    /// The plot's last transform: where each test point is on screen.
    pub plot_transform: Option<egui_plot::PlotTransform>,
}

impl DecisionPanel {
    /// Forgets the cached image: a new run's maps start again at epoch 1.
    pub fn clear(&mut self) {
        self.texture = None;
    }

    /// Draws the tab; a click on a test point asks for [`Action::InspectPoint`].
    pub fn ui(&mut self, ui: &mut Ui, live: Option<&LiveRun>) -> Vec<Action> {
        let Some(live) = live else {
            ui.add_space(20.0);
            ui.label("Start a run on a 2-D toy data set (moons, circles, spirals, xor) to see its decision regions and which points are certified, updated after every evaluation.");
            return Vec::new();
        };
        let Some(map) = live.decision.as_ref() else {
            ui.add_space(20.0);
            ui.label(if live.series.config.dataset.kind.is_toy() {
                "Waiting for the first evaluation…"
            } else {
                "The 2-D view is for the toy data sets (their inputs are points in the unit square)."
            });
            return Vec::new();
        };
        ui.horizontal(|ui| {
            ui.label(format!(
                "epoch {} · eps {} ({})",
                map.epoch,
                map.eps,
                if map.norm_l2 { "ℓ2" } else { "ℓ∞" }
            ));
            for (s, n) in toy::status_counts(map) {
                ui.label(
                    RichText::new(format!("■ {} {n}", toy::status_label(s)))
                        .color(toy::status_color(s)),
                );
            }
        });
        let hint = if crate::smooth_view::SmoothSettings::of(&live.series.config).is_empty() {
            "Click a test point to inspect its bounds layer by layer."
        } else {
            "Click a test point to inspect its bounds layer by layer; the Inspector's 2-D view also draws the smoothed classifier's regions and the point's noise cloud with its certified radius."
        };
        ui.label(RichText::new(hint).small());
        let h = ui.available_height() - 10.0;
        let Some(r) = toy::decision_ui(ui, map, &mut self.texture, h.max(200.0)) else {
            return Vec::new();
        };
        self.plot_transform = Some(r.transform);
        let clicked = r
            .response
            .clicked()
            .then(|| r.response.interact_pointer_pos())
            .flatten()
            .and_then(|pos| nearest_point(&map.points, &r.transform, pos, 12.0));
        match (clicked, live.run_dir()) {
            (Some(index), Some(dir)) => vec![Action::InspectPoint {
                run_dir: dir.to_path_buf(),
                index,
            }],
            _ => Vec::new(),
        }
    }
}
