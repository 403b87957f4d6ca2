//! Randomized smoothing on the Inspector's 2-D view, for a model with a smoothed classifier
//! (`[eval.smoothing]` levels, or `train.method = "gaussian"` / `"rat"`): the smoothed
//! classifier's decision regions in place of the base network's, and the selected point's
//! noise cloud (draws of `x + delta` coloured by the base network's class) with the ball of
//! its CERTIFY radius (Cohen et al. 2019; an l_2 circle for Gaussian noise, an l_1 diamond for
//! Laplace and uniform noise).
//!
//! The numbers come from [`crate::smooth_view`] jobs, each on its own thread; the overlay polls
//! them every frame and never waits.
use crate::config::RadiusNorm;
use crate::metrics::DecisionMap;
use crate::run;
use crate::smooth_view::{
    spawn_smooth_job, NoiseCloud, SmoothAnswer, SmoothJob, SmoothSettings, SmoothedRegions,
};
use crate::ui::toy;
use crossbeam_channel::Receiver;
use egui::{Color32, RichText, TextureHandle, TextureOptions, Ui};
use egui_plot::{Line, LineStyle, MarkerShape, PlotPoints, PlotUi, Points};
use std::path::{Path, PathBuf};

/// Grid cells per side and noise draws per cell of the smoothed regions.
pub const REGION_RESOLUTION: usize = 64;
pub const REGION_DRAWS: u64 = 128;
/// Draws shown in a point's noise cloud.
pub const CLOUD_SAMPLES: usize = 300;

type Job = Receiver<Result<SmoothAnswer, String>>;

/// The overlay's state: which run's smoothed classifiers it offers, what is shown, the
/// answers and the jobs in flight.
#[derive(Default)]
pub struct SmoothOverlay {
    source: Option<PathBuf>,
    /// One per noise level of the run (see [`SmoothSettings::of`]); empty: no overlay.
    pub options: Vec<SmoothSettings>,
    pub choice: usize,
    pub show_regions: bool,
    pub show_cloud: bool,
    pub regions: Option<SmoothedRegions>,
    pub cloud: Option<NoiseCloud>,
    texture: Option<TextureHandle>,
    regions_job: Option<Job>,
    cloud_job: Option<Job>,
    pub error: Option<String>,
}

/// What the plot draws of a point's cloud (a copy, so the plot closure borrows nothing).
#[derive(Debug, Clone, PartialEq)]
pub struct CloudDrawing {
    pub samples: Vec<(usize, [f64; 2])>,
    pub center: [f32; 2],
    pub radius: f64,
    pub l2: bool,
}

impl SmoothOverlay {
    /// The settings of the level shown.
    pub fn settings(&self) -> Option<SmoothSettings> {
        self.options.get(self.choice).copied()
    }

    /// Whether a job is still computing.
    pub fn busy(&self) -> bool {
        self.regions_job.is_some() || self.cloud_job.is_some()
    }

    /// Reads the run's config when the inspected run changes.
    fn sync(&mut self, run_dir: &Path) {
        if self.source.as_deref() == Some(run_dir) {
            return;
        }
        let (show_regions, show_cloud) = (self.show_regions, self.show_cloud);
        *self = SmoothOverlay {
            source: Some(run_dir.to_path_buf()),
            options: run::load_run(run_dir)
                .map(|r| SmoothSettings::of(&r.config))
                .unwrap_or_default(),
            show_regions,
            show_cloud,
            ..SmoothOverlay::default()
        };
    }

    /// Takes finished answers (never waits).
    fn poll(&mut self) {
        for job in [&mut self.regions_job, &mut self.cloud_job] {
            let Some(rx) = job else { continue };
            let answer = match rx.try_recv() {
                Ok(a) => a,
                Err(crossbeam_channel::TryRecvError::Empty) => continue,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    Err("the smoothing thread stopped without an answer".into())
                }
            };
            *job = None;
            match answer {
                Ok(SmoothAnswer::Regions(r)) => {
                    self.regions = Some(r);
                    self.texture = None;
                }
                Ok(SmoothAnswer::Cloud(c)) => self.cloud = Some(c),
                Err(e) => self.error = Some(e),
            }
        }
    }

    fn spawn(&mut self, ui: &Ui, job: SmoothJob) -> Option<Job> {
        let (dir, settings) = (self.source.clone()?, self.settings()?);
        let ctx = ui.ctx().clone();
        match spawn_smooth_job(
            dir,
            false,
            settings,
            job,
            Box::new(move || ctx.request_repaint()),
        ) {
            Ok(rx) => Some(rx),
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }

    /// Whether the cloud shown is not test point `index`'s at the shown settings.
    fn stale_cloud(&self, index: usize) -> bool {
        let settings = self.settings();
        self.cloud
            .as_ref()
            .is_none_or(|c| c.index != index || Some(c.settings) != settings)
    }

    /// Whether the regions shown are not the shown settings' smoothed classifier's.
    fn stale_regions(&self) -> bool {
        self.regions.as_ref().map(|r| Some(r.settings)) != Some(self.settings())
    }

    /// Whether everything the toggles ask for about `run_dir`'s test point `index` is on
    /// screen (or failed, or the run has no smoothed classifier): what the screenshot
    /// autopilot waits for. False until the overlay has been drawn for `run_dir`.
    pub fn settled(&self, run_dir: &Path, index: usize) -> bool {
        if self.source.as_deref() != Some(run_dir) {
            return false;
        }
        if self.options.is_empty() || self.error.is_some() {
            return true;
        }
        !self.busy()
            && !(self.show_cloud && self.stale_cloud(index))
            && !(self.show_regions && self.stale_regions())
    }

    /// Starts a job the toggles ask for that is not answered for the shown settings: one at a
    /// time, the cloud first. The jobs seed torch's one global generator
    /// ([`crate::smooth_view::VIEW_SEED`]), so two at once would draw from each other's stream.
    fn request(&mut self, ui: &Ui, index: usize) {
        let (stale_cloud, stale_regions) = (self.stale_cloud(index), self.stale_regions());
        if !self.busy() && self.show_cloud && stale_cloud {
            self.cloud_job = self.spawn(
                ui,
                SmoothJob::Cloud {
                    index,
                    samples: CLOUD_SAMPLES,
                },
            );
        } else if !self.busy() && self.show_regions && stale_regions {
            self.regions_job = self.spawn(
                ui,
                SmoothJob::Regions {
                    resolution: REGION_RESOLUTION,
                    draws: REGION_DRAWS,
                },
            );
        }
        if self.busy() {
            ui.ctx()
                .request_repaint_after(std::time::Duration::from_millis(50));
        }
    }

    /// The toggles and the certificate's line, above the 2-D view of `run_dir` with test
    /// point `index` selected. Nothing for a run without a smoothed classifier.
    pub fn controls_ui(&mut self, ui: &mut Ui, run_dir: &Path, index: usize) {
        self.sync(run_dir);
        self.poll();
        if self.options.is_empty() {
            return;
        }
        ui.horizontal_wrapped(|ui| {
            ui.checkbox(&mut self.show_regions, "smoothed regions")
                .on_hover_text(format!(
                    "The smoothed classifier's majority class, {REGION_DRAWS} noise draws per cell"
                ));
            ui.checkbox(&mut self.show_cloud, "noise cloud and certified radius")
                .on_hover_text("The selected point's noise draws coloured by the base network, and its CERTIFY radius; meanwhile only the selected point's eps ball is drawn, so the other balls do not cover its cloud");
            if self.options.len() > 1 {
                let label = |s: &SmoothSettings| format!("{} σ {}", s.noise.name(), s.sigma);
                let mut choice = self.choice;
                egui::ComboBox::from_label("smoothing level")
                    .selected_text(label(&self.options[choice.min(self.options.len() - 1)]))
                    .show_ui(ui, |ui| {
                        for (i, s) in self.options.iter().enumerate() {
                            ui.selectable_value(&mut choice, i, label(s));
                        }
                    });
                self.choice = choice;
            } else if let Some(s) = self.settings() {
                ui.label(format!("{} σ {}", s.noise.name(), s.sigma));
            }
            if self.busy() {
                ui.spinner();
            }
        });
        self.request(ui, index);
        if let Some(line) = self.certificate_line(index) {
            ui.label(RichText::new(line).small());
        }
        if let Some(e) = &self.error {
            ui.label(RichText::new(e).color(super::ERROR_COLOR).small());
        }
    }

    /// `CERTIFY: class 1, l2 radius 0.1234 (p_A >= 0.99, n = 10000)`, or the abstention.
    pub fn certificate_line(&self, index: usize) -> Option<String> {
        let c = self
            .cloud
            .as_ref()
            .filter(|c| c.index == index && self.show_cloud)?;
        let s = c.settings;
        Some(if c.abstains() {
            format!("CERTIFY abstains (p_A >= {:.4}, n = {})", c.p_a, s.n)
        } else {
            format!(
                "CERTIFY: class {}, {} radius {:.4} (p_A >= {:.4}, n = {}, alpha = {})",
                c.prediction,
                s.radius_norm().name(),
                c.radius,
                c.p_a,
                s.n,
                s.alpha
            )
        })
    }

    /// The smoothed regions' texture in place of `map`'s, when shown and computed.
    pub fn regions_texture(
        &mut self,
        ctx: &egui::Context,
        map: &DecisionMap,
    ) -> Option<egui::TextureId> {
        if !self.show_regions {
            return None;
        }
        let r = self.regions.as_ref()?;
        if self.texture.is_none() {
            let prob = if r.share1.is_empty() {
                r.majority.iter().map(|c| *c as f32).collect()
            } else {
                r.share1.clone()
            };
            let smoothed = DecisionMap {
                resolution: r.resolution,
                prob,
                ..map.clone()
            };
            self.texture = Some(ctx.load_texture(
                "smoothed-regions",
                toy::regions_image(&smoothed),
                TextureOptions::LINEAR,
            ));
        }
        self.texture.as_ref().map(|t| t.id())
    }

    /// The cloud of test point `index`, when shown and computed.
    pub fn drawing(&self, index: usize) -> Option<CloudDrawing> {
        let c = self
            .cloud
            .as_ref()
            .filter(|c| c.index == index && self.show_cloud)?;
        Some(CloudDrawing {
            samples: c
                .samples
                .iter()
                .zip(&c.predictions)
                .map(|(p, k)| (*k as usize, [p[0] as f64, p[1] as f64]))
                .collect(),
            center: c.center,
            radius: c.radius,
            l2: c.settings.radius_norm() == RadiusNorm::L2,
        })
    }
}

/// Whether the 2-D view draws test point `i`'s eps ball: every point's, except while a noise
/// cloud is shown, when only the selected point's. A hundred overlapping balls would cover the
/// cloud, and the balls certify the base network, not the smoothed classifier the cloud is
/// about; the selected point's ball stays to be compared with its certified radius.
pub fn eps_ball_drawn(cloud_shown: bool, i: usize, selected: usize) -> bool {
    !cloud_shown || i == selected
}

impl CloudDrawing {
    /// The ball's outline: a 64-gon (l_2) or a diamond (l_1), closed.
    pub fn outline(&self) -> Vec<[f64; 2]> {
        let (x, y, r) = (self.center[0] as f64, self.center[1] as f64, self.radius);
        let k = if self.l2 { 64 } else { 4 };
        let mut pts: Vec<[f64; 2]> = (0..k)
            .map(|i| {
                let a = i as f64 / k as f64 * std::f64::consts::TAU;
                [x + r * a.cos(), y + r * a.sin()]
            })
            .collect();
        pts.push(pts[0]);
        pts
    }

    /// Draws the samples (by predicted class) and, when certified, the radius ball.
    pub fn draw(&self, p: &mut PlotUi) {
        let classes = self.samples.iter().map(|s| s.0).max().map_or(0, |m| m + 1);
        for class in 0..classes {
            let pts: Vec<[f64; 2]> = self
                .samples
                .iter()
                .filter(|s| s.0 == class)
                .map(|s| s.1)
                .collect();
            if !pts.is_empty() {
                p.points(
                    Points::new(format!("noise draws, base class {class}"), pts)
                        .color(toy::class_color(class))
                        .shape(MarkerShape::Circle)
                        .filled(true)
                        .radius(1.5),
                );
            }
        }
        if self.radius > 0.0 {
            let name = format!(
                "certified {} radius {:.4}",
                if self.l2 { "ℓ2" } else { "ℓ1" },
                self.radius
            );
            p.line(
                Line::new(name, PlotPoints::new(self.outline()))
                    .color(Color32::BLACK)
                    .width(2.0)
                    .style(LineStyle::dashed_loose()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_a_cloud_only_the_selected_points_ball_is_drawn() {
        let drawn = |cloud| {
            (0..50)
                .filter(|i| eps_ball_drawn(cloud, *i, 7))
                .collect::<Vec<_>>()
        };
        assert_eq!(drawn(false), (0..50).collect::<Vec<_>>());
        assert_eq!(drawn(true), vec![7]);
    }

    #[test]
    fn the_ball_outline_is_at_the_radius_in_its_norm() {
        for l2 in [true, false] {
            let d = CloudDrawing {
                samples: vec![],
                center: [0.25, 0.5],
                radius: 0.2,
                l2,
            };
            let outline = d.outline();
            assert_eq!(outline.first(), outline.last());
            for q in outline {
                let (dx, dy) = (q[0] - 0.25, q[1] - 0.5);
                let norm = if l2 {
                    (dx * dx + dy * dy).sqrt()
                } else {
                    dx.abs() + dy.abs()
                };
                assert!((norm - 0.2).abs() < 1e-6, "{l2}: {norm}");
            }
        }
    }
}
