//! The autopilot of `make screenshots`: drives the real window to start a run, wait, save
//! PNGs of tabs and quit.
use super::app::App;
use super::panels::Tab;
use crate::protocol::Command;
use std::path::PathBuf;

/// Drives the real window for `make screenshots`: start a run, wait, save PNGs of tabs, quit.
#[derive(Debug, Clone, Default)]
pub struct Autopilot {
    pub start: bool,
    /// Take the shots once the live run has this many evaluations (or has ended).
    pub after_evals: usize,
    /// (tab, file) pairs, in order.
    pub shots: Vec<(Tab, PathBuf)>,
    /// Overlay every run found in the runs folder.
    pub overlay_all: bool,
    /// Close the window after the last shot.
    pub quit_after_shots: bool,
    /// Open a test point in the Inspector and wait for its answers before the shots.
    pub inspect: Option<InspectShot>,
    pub(crate) frames_waited: u32,
    pub(crate) began: bool,
}

/// The point the Inspector shows in the screenshots.
#[derive(Debug, Clone, Default)]
pub struct InspectShot {
    pub run_dir: PathBuf,
    pub index: usize,
    /// The slider's eps (default: the run's eval eps).
    pub eps: Option<f64>,
    /// The layer whose bars and neuron are drawn (index into the inspected layers).
    pub layer: usize,
    /// Tick the 2-D view's "smoothed regions" and "noise cloud and certified radius" (a run
    /// with a smoothed classifier) and wait for both.
    pub smoothing: bool,
}

impl App {
    /// Whether the Inspector has answered for the shot's point at the shot's eps (setting the
    /// eps and the layer once the run is loaded).
    fn inspector_ready(&mut self, ctx: &egui::Context, shot: &InspectShot) -> bool {
        let insp = &mut self.tabs.inspector;
        if insp.error.is_some() {
            return true;
        }
        if insp.subject.is_none() {
            return false;
        }
        if let Some(eps) = shot.eps.filter(|e| *e != insp.eps) {
            insp.set_eps(ctx, eps);
            return false;
        }
        insp.layer = shot.layer;
        let answered =
            !insp.busy() && !insp.smooth.busy() && insp.point.is_some() && insp.radii.is_some();
        if !answered || !shot.smoothing {
            return answered;
        }
        // Ticked only now: the smoothing jobs then draw from torch's seeded generator alone,
        // as `certlab smooth` does. The tab is shown, as the overlay's jobs start when drawn.
        insp.smooth.show_regions = true;
        insp.smooth.show_cloud = true;
        let settled = insp.smooth.settled(&shot.run_dir, insp.index);
        self.tab = Tab::Inspector;
        settled
    }

    /// One step of `make screenshots`.
    pub(super) fn autopilot_step(&mut self, ctx: &egui::Context) {
        let Some(mut ap) = self.autopilot.take() else {
            return;
        };
        if !ap.began {
            ap.began = true;
            if ap.overlay_all {
                for r in &mut self.library.runs {
                    r.visible = true;
                }
            }
            if ap.start {
                self.start(ctx);
            }
            if let Some(shot) = &ap.inspect {
                self.tabs.inspector.select(ctx, &shot.run_dir, shot.index);
            }
        }
        if self.screenshots.is_pending() {
            if self.screenshots.receive(ctx).is_some() {
                // The next shot shows the window, not a message about the last one.
                self.notice = None;
                ap.shots.remove(0);
                ap.frames_waited = 0;
                ctx.request_repaint();
            }
            self.autopilot = Some(ap);
            return;
        }
        let ready = match &self.live {
            Some(l) => !l.is_running() || l.series.records.len() >= ap.after_evals,
            None => true,
        };
        let ready = ready
            && match ap.inspect.clone() {
                Some(shot) => self.inspector_ready(ctx, &shot),
                None => true,
            };
        if !ready {
            self.autopilot = Some(ap);
            return;
        }
        let Some((tab, path)) = ap.shots.first().cloned() else {
            if !ap.quit_after_shots {
                return; // Only asked to start: the window stays, the autopilot is done.
            }
            if self.live.as_ref().is_some_and(|l| l.is_running()) {
                self.send(Command::Stop);
            }
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            return;
        };
        if self.tab != tab {
            self.tab = tab;
            ap.frames_waited = 0;
        }
        // A few frames for layout, fonts and plot bounds to settle.
        ap.frames_waited += 1;
        if ap.frames_waited > 5 {
            self.screenshots.request(ctx, path, None);
        }
        ctx.request_repaint();
        self.autopilot = Some(ap);
    }
}
