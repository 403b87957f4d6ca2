//! The "2-D view" tab: the live run's decision regions on a toy data set and which test
//! points are certified, updated after every evaluation.
use crate::ui::live::LiveRun;
use crate::ui::toy;
use egui::{RichText, Ui};

#[derive(Default)]
pub struct DecisionPanel {
    /// The regions image of the map last drawn, by epoch (a new run starts it again).
    texture: Option<(u32, egui::TextureHandle)>,
}

impl DecisionPanel {
    /// Forgets the cached image: a new run's maps start again at epoch 1.
    pub fn clear(&mut self) {
        self.texture = None;
    }

    pub fn ui(&mut self, ui: &mut Ui, live: Option<&LiveRun>) {
        let Some(live) = live else {
            ui.add_space(20.0);
            ui.label("Start a run on a 2-D toy data set (moons, circles, spirals, xor) to see its decision regions and which points are certified, updated after every evaluation.");
            return;
        };
        let Some(map) = live.decision.as_ref() else {
            ui.add_space(20.0);
            ui.label(if live.series.config.dataset.kind.is_toy() {
                "Waiting for the first evaluation…"
            } else {
                "The 2-D view is for the toy data sets (their inputs are points in the unit square)."
            });
            return;
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
        let h = ui.available_height() - 10.0;
        toy::decision_ui(ui, map, &mut self.texture, h.max(200.0));
    }
}
