//! The workbench window: designer on the left, controls and progress on top, plots in the
//! middle, the log at the bottom. Reads `Event`s and run folders; never touches a tensor.
use super::designer::{Designer, DesignerAction, ERROR_COLOR};
use super::plots::{gap_histogram_ui, short_number, CurvePlot, YAxis};
use super::series::{Metric, RunSeries, PALETTE};
use super::toy;
use crate::config::{ExperimentConfig, FieldError};
use crate::metrics::DecisionMap;
use crate::protocol::{Command, Event, Level, Outcome};
use crate::run;
use crate::worker::{RunTarget, WorkerHandle};
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use egui::{Color32, RichText, Ui};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Starts a worker for an experiment; the app calls it on Start. The real one is
/// [`crate::worker::spawn_for`]; tests may pass their own.
pub type Spawner =
    Box<dyn Fn(ExperimentConfig, RunTarget, Box<dyn Fn() + Send>) -> Result<WorkerHandle, String>>;

/// The views of the central panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Overview,
    Tightness,
    Lipschitz,
    Decision,
    Runs,
}

impl Tab {
    pub const ALL: [Tab; 5] = [
        Tab::Overview,
        Tab::Tightness,
        Tab::Lipschitz,
        Tab::Decision,
        Tab::Runs,
    ];
    pub fn title(self) -> &'static str {
        match self {
            Tab::Overview => "Accuracy & loss",
            Tab::Tightness => "Bound tightness",
            Tab::Lipschitz => "Lipschitz",
            Tab::Decision => "2-D view",
            Tab::Runs => "Runs",
        }
    }
    pub fn parse(s: &str) -> Option<Tab> {
        match s {
            "overview" | "accuracy" => Some(Tab::Overview),
            "tightness" | "gap" => Some(Tab::Tightness),
            "lipschitz" => Some(Tab::Lipschitz),
            "decision" | "2d" => Some(Tab::Decision),
            "runs" | "compare" => Some(Tab::Runs),
            _ => None,
        }
    }
}

/// One line of the log panel.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub level: Level,
    pub message: String,
}

/// A message at the top of the window until dismissed.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub level: Level,
    pub text: String,
}

/// The run being trained (or the last one, once it ended).
pub struct LiveRun {
    handle: Option<WorkerHandle>,
    pub series: RunSeries,
    pub device: String,
    pub model: String,
    pub total_epochs: u32,
    pub epoch: u32,
    pub epoch_fraction: f32,
    pub step: u64,
    pub paused: bool,
    pub finished: Option<Outcome>,
    pub decision: Option<DecisionMap>,
    decision_texture: Option<(u32, egui::TextureHandle)>,
    started: Instant,
}

impl LiveRun {
    pub fn is_running(&self) -> bool {
        self.finished.is_none()
    }
    pub fn run_dir(&self) -> Option<&Path> {
        self.series.dir.as_deref()
    }
    /// Fraction of the whole run done, in [0, 1].
    pub fn run_fraction(&self) -> f32 {
        if self.total_epochs == 0 {
            return 0.0;
        }
        let done = self.epoch.saturating_sub(1) as f32 + self.epoch_fraction;
        (done / self.total_epochs as f32).clamp(0.0, 1.0)
    }
}

/// What the UI asks for while drawing; applied after the frame, in one place.
#[derive(Debug, Clone, PartialEq)]
enum Action {
    Start,
    Send(Command),
    OpenPresetDialog,
    SavePresetDialog,
    LoadPreset(PathBuf),
    ResetDefault,
    OpenRunDialog,
    RefreshRuns,
    ExportCsv,
    SavePlotPng { name: String, rect: egui::Rect },
    PickDatasetFolder,
}

/// A screenshot the app asked for, on its way back from the renderer.
struct PendingShot {
    path: PathBuf,
    rect: Option<egui::Rect>,
    rx: Receiver<Arc<egui::ColorImage>>,
}

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
    pub(crate) frames_waited: u32,
    pub(crate) began: bool,
}

pub struct App {
    pub designer: Designer,
    pub live: Option<LiveRun>,
    /// Runs found in the runs folder or opened; `visible` ones are overlaid on the plots.
    pub library: Vec<RunSeries>,
    /// Folders that could not be read, with the reason.
    pub library_errors: Vec<String>,
    pub log: Vec<LogLine>,
    pub notice: Option<Notice>,
    pub tab: Tab,
    pub runs_dir: PathBuf,
    /// Where the designer's experiment came from (shown in the title bar).
    pub preset_path: Option<PathBuf>,
    pub log_scale: bool,
    /// Which bound's certified accuracy the overlay of several runs shows.
    pub compare_bound: Option<String>,
    spawner: Spawner,
    actions: Vec<Action>,
    shot: Option<PendingShot>,
    shot_tx_rx: (
        Sender<Arc<egui::ColorImage>>,
        Receiver<Arc<egui::ColorImage>>,
    ),
    pub autopilot: Option<Autopilot>,
    next_color: usize,
}

/// How long one frame may spend draining worker events.
const EVENT_BUDGET: Duration = Duration::from_millis(8);
/// Log lines kept in memory (the run folder's log.txt has them all).
const LOG_LINES: usize = 2000;

impl App {
    pub fn new(cfg: ExperimentConfig, runs_dir: PathBuf, spawner: Spawner) -> Self {
        let mut app = App {
            designer: Designer::new(cfg),
            live: None,
            library: Vec::new(),
            library_errors: Vec::new(),
            log: Vec::new(),
            notice: None,
            tab: Tab::Overview,
            runs_dir,
            preset_path: None,
            log_scale: true,
            compare_bound: None,
            spawner,
            actions: Vec::new(),
            shot: None,
            shot_tx_rx: crossbeam_channel::bounded(1),
            autopilot: None,
            next_color: 1,
        };
        app.refresh_runs();
        app
    }

    /// The real spawner: the training engine on its own thread.
    pub fn engine_spawner() -> Spawner {
        Box::new(crate::worker::spawn_for)
    }

    // ----------------------------------------------------------------------------------------
    // Things a user (or a test) can do

    /// Starts the designer's experiment, if it is valid and nothing is running.
    pub fn start(&mut self, ctx: &egui::Context) {
        if self.live.as_ref().is_some_and(|l| l.is_running()) {
            return;
        }
        let (cfg, problems) = self.designer.checked();
        if !problems.is_empty() {
            self.notice = Some(Notice {
                level: Level::Error,
                text: format!("fix the experiment first: {}", problems[0]),
            });
            return;
        }
        let waker = ctx.clone();
        let wake: Box<dyn Fn() + Send> =
            Box::new(move || waker.request_repaint_after(Duration::from_millis(30)));
        match (self.spawner)(cfg.clone(), RunTarget::Under(self.runs_dir.clone()), wake) {
            Ok(handle) => {
                // The previous live run stays on the plots as an overlay.
                if let Some(prev) = self.live.take() {
                    if !prev.series.records.is_empty() {
                        self.adopt(prev.series);
                    }
                }
                let total = cfg.train.epochs;
                self.live = Some(LiveRun {
                    handle: Some(handle),
                    series: RunSeries::new(cfg.name.clone(), None, cfg, PALETTE[0]),
                    device: String::new(),
                    model: String::new(),
                    total_epochs: total,
                    epoch: 1,
                    epoch_fraction: 0.0,
                    step: 0,
                    paused: false,
                    finished: None,
                    decision: None,
                    decision_texture: None,
                    started: Instant::now(),
                });
                self.notice = None;
                self.push_log(Level::Info, "starting…".into());
            }
            Err(e) => {
                self.notice = Some(Notice {
                    level: Level::Error,
                    text: format!("cannot start: {e}"),
                })
            }
        }
    }

    pub fn send(&mut self, cmd: Command) {
        if let Some(h) = self.live.as_ref().and_then(|l| l.handle.as_ref()) {
            h.send(cmd);
        }
    }

    /// Opens a preset; a bad file leaves the current experiment as it was and says why.
    pub fn open_preset(&mut self, path: &Path) {
        match ExperimentConfig::load(path) {
            Ok(cfg) => {
                self.designer.set(cfg);
                self.preset_path = Some(path.to_path_buf());
                self.notice = Some(Notice {
                    level: Level::Info,
                    text: format!("opened preset {}", path.display()),
                });
            }
            Err(e) => {
                self.notice = Some(Notice {
                    level: Level::Error,
                    text: format!("cannot open preset: {e}"),
                })
            }
        }
    }

    /// Saves the designer's experiment (only when valid: a preset must load again).
    pub fn save_preset(&mut self, path: &Path) {
        let (cfg, problems) = self.designer.checked();
        if let Some(p) = problems.first() {
            self.notice = Some(Notice {
                level: Level::Error,
                text: format!("not saved: the experiment has an invalid field: {p}"),
            });
            return;
        }
        self.notice = Some(match cfg.save(path) {
            Ok(()) => {
                self.preset_path = Some(path.to_path_buf());
                Notice {
                    level: Level::Info,
                    text: format!("saved preset {}", path.display()),
                }
            }
            Err(e) => Notice {
                level: Level::Error,
                text: format!("cannot save preset {}: {e}", path.display()),
            },
        });
    }

    /// Reads a run folder and overlays it.
    pub fn open_run(&mut self, dir: &Path) {
        match run::load_run(dir) {
            Ok(data) => {
                if let Some(existing) = self
                    .library
                    .iter_mut()
                    .find(|r| r.dir.as_deref() == Some(dir))
                {
                    existing.visible = true;
                    return;
                }
                let color = self.take_color();
                let mut s = RunSeries::from_run(&data, color);
                s.visible = true;
                self.library.push(s);
            }
            Err(e) => {
                self.notice = Some(Notice {
                    level: Level::Error,
                    text: format!("cannot open run: {e}"),
                })
            }
        }
    }

    /// Re-reads the runs folder; keeps which runs were overlaid.
    pub fn refresh_runs(&mut self) {
        self.library_errors.clear();
        let Ok(found) = run::list_runs(&self.runs_dir) else {
            return; // No runs folder yet: nothing to list.
        };
        for r in found {
            match r {
                Ok(data) => {
                    if self.live.as_ref().and_then(|l| l.run_dir()) == Some(data.dir.as_path()) {
                        continue;
                    }
                    if let Some(i) = self
                        .library
                        .iter()
                        .position(|s| s.dir.as_ref() == Some(&data.dir))
                    {
                        let (visible, color) = (self.library[i].visible, self.library[i].color);
                        let mut s = RunSeries::from_run(&data, color);
                        s.visible = visible;
                        self.library[i] = s;
                    } else {
                        let color = self.take_color();
                        let mut s = RunSeries::from_run(&data, color);
                        s.visible = false;
                        self.library.push(s);
                    }
                }
                Err(e) => self.library_errors.push(e.to_string()),
            }
        }
    }

    /// Writes the table of final numbers of every listed run (and the live one) as CSV into
    /// `<runs>/exports/`; returns the file.
    pub fn export_csv(&mut self) -> Option<PathBuf> {
        let rows: Vec<&RunSeries> = self.all_runs().collect();
        let text = runs_csv(&rows);
        let path = self.export_path("runs", "csv");
        let result = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| std::fs::write(&path, text));
        match result {
            Ok(()) => {
                self.notice = Some(Notice {
                    level: Level::Info,
                    text: format!("table written to {}", path.display()),
                });
                Some(path)
            }
            Err(e) => {
                self.notice = Some(Notice {
                    level: Level::Error,
                    text: format!("cannot write {}: {e}", path.display()),
                });
                None
            }
        }
    }

    /// Every run the app knows: the live one first, then the library.
    pub fn all_runs(&self) -> impl Iterator<Item = &RunSeries> {
        self.live
            .iter()
            .map(|l| &l.series)
            .chain(self.library.iter())
    }

    /// The runs drawn on the plots.
    pub fn visible_runs(&self) -> Vec<&RunSeries> {
        self.all_runs().filter(|r| r.visible).collect()
    }

    // ----------------------------------------------------------------------------------------
    // Internals

    fn take_color(&mut self) -> Color32 {
        let c = PALETTE[self.next_color % PALETTE.len()];
        self.next_color += 1;
        c
    }

    fn adopt(&mut self, mut s: RunSeries) {
        if let Some(existing) = self
            .library
            .iter_mut()
            .find(|r| r.dir.is_some() && r.dir == s.dir)
        {
            s.color = existing.color;
            *existing = s;
        } else {
            s.color = self.take_color();
            self.library.push(s);
        }
    }

    fn export_path(&self, stem: &str, ext: &str) -> PathBuf {
        let stamp = run::utc_stamp(std::time::SystemTime::now());
        let base = self.runs_dir.join("exports");
        let mut p = base.join(format!("{stem}-{stamp}.{ext}"));
        let mut k = 2;
        while p.exists() {
            p = base.join(format!("{stem}-{stamp}-{k}.{ext}"));
            k += 1;
        }
        p
    }

    fn push_log(&mut self, level: Level, message: String) {
        self.log.push(LogLine { level, message });
        if self.log.len() > LOG_LINES {
            self.log.drain(..self.log.len() - LOG_LINES);
        }
    }

    /// Drains worker events for at most [`EVENT_BUDGET`].
    fn drain_events(&mut self) {
        let deadline = Instant::now() + EVENT_BUDGET;
        let mut logs = Vec::new();
        let mut notice = None;
        if let Some(live) = self.live.as_mut() {
            while live.finished.is_none() && Instant::now() < deadline {
                let Some(handle) = live.handle.as_ref() else {
                    break;
                };
                let event = match handle.events.try_recv() {
                    Ok(e) => e,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        let msg = "the trainer thread ended without reporting how (it crashed); the run folder keeps what was written".to_string();
                        logs.push((Level::Error, msg.clone()));
                        notice = Some(Notice {
                            level: Level::Error,
                            text: msg.clone(),
                        });
                        live.finished = Some(Outcome::Failed(msg));
                        live.series.outcome = Some("failed".into());
                        break;
                    }
                };
                match event {
                    Event::Started {
                        run_dir,
                        device,
                        model,
                        total_epochs,
                        ..
                    } => {
                        live.series.name = run_dir.file_name().map_or_else(
                            || run_dir.display().to_string(),
                            |n| n.to_string_lossy().into_owned(),
                        );
                        live.series.dir = Some(run_dir);
                        live.device = device;
                        live.model = model;
                        live.total_epochs = total_epochs;
                    }
                    Event::Progress {
                        epoch,
                        epoch_fraction,
                        step,
                        loss,
                    } => {
                        live.epoch = epoch;
                        live.epoch_fraction = epoch_fraction;
                        live.step = step;
                        live.series
                            .push_batch_loss(epoch as f64 - 1.0 + epoch_fraction as f64, loss);
                    }
                    Event::Metrics(rec) => live.series.push(rec),
                    Event::Decision(map) => live.decision = Some(map),
                    Event::Log { level, message } => logs.push((level, message)),
                    Event::Paused(p) => live.paused = p,
                    Event::Finished { outcome } => {
                        let folder = live
                            .run_dir()
                            .map(|d| format!(" (run folder {})", d.display()))
                            .unwrap_or_default();
                        let (name, n) = match &outcome {
                            Outcome::Completed => (
                                "completed",
                                Notice {
                                    level: Level::Info,
                                    text: format!(
                                        "run completed in {:.1} s{folder}",
                                        live.started.elapsed().as_secs_f64()
                                    ),
                                },
                            ),
                            Outcome::Cancelled => (
                                "cancelled",
                                Notice {
                                    level: Level::Warn,
                                    text: format!(
                                        "run stopped; metrics and model so far are kept{folder}"
                                    ),
                                },
                            ),
                            Outcome::Failed(e) => (
                                "failed",
                                Notice {
                                    level: Level::Error,
                                    text: format!("run failed: {e}{folder}"),
                                },
                            ),
                        };
                        live.series.outcome = Some(name.into());
                        live.finished = Some(outcome);
                        live.paused = false;
                        notice = Some(n);
                        if let Some(mut h) = live.handle.take() {
                            h.join();
                        }
                    }
                }
            }
        }
        for (level, message) in logs {
            self.push_log(level, message);
        }
        if notice.is_some() {
            self.notice = notice;
        }
    }

    fn apply_actions(&mut self, ctx: &egui::Context) {
        for action in std::mem::take(&mut self.actions) {
            match action {
                Action::Start => self.start(ctx),
                Action::Send(c) => self.send(c),
                Action::OpenPresetDialog => {
                    let mut d = rfd::FileDialog::new().add_filter("experiment", &["toml"]);
                    if let Some(dir) = bundled_presets_dir() {
                        d = d.set_directory(dir);
                    }
                    if let Some(p) = self.dialog(|| d.pick_file()) {
                        self.open_preset(&p);
                    }
                }
                Action::SavePresetDialog => {
                    let name = format!("{}.toml", self.designer.cfg.name);
                    let d = rfd::FileDialog::new()
                        .add_filter("experiment", &["toml"])
                        .set_file_name(name);
                    if let Some(p) = self.dialog(|| d.save_file()) {
                        self.save_preset(&p);
                    }
                }
                Action::LoadPreset(p) => self.open_preset(&p),
                Action::ResetDefault => {
                    self.designer.set(ExperimentConfig::default_experiment());
                    self.preset_path = None;
                }
                Action::OpenRunDialog => {
                    let d = rfd::FileDialog::new().set_directory(&self.runs_dir);
                    if let Some(p) = self.dialog(|| d.pick_folder()) {
                        self.open_run(&p);
                    }
                }
                Action::RefreshRuns => self.refresh_runs(),
                Action::ExportCsv => {
                    self.export_csv();
                }
                Action::SavePlotPng { name, rect } => {
                    let path = self.export_path(&name, "png");
                    self.request_shot(ctx, path, Some(rect));
                }
                Action::PickDatasetFolder => {
                    if let Some(p) = self.dialog(|| rfd::FileDialog::new().pick_folder()) {
                        self.designer.cfg.dataset.path = p.display().to_string();
                    }
                }
            }
        }
    }

    /// Runs a file dialog. rfd answers `None` at once when the desktop has no file-dialog
    /// service (xdg-desktop-portal): then say so, instead of a button that does nothing.
    fn dialog(&mut self, show: impl FnOnce() -> Option<PathBuf>) -> Option<PathBuf> {
        let t0 = Instant::now();
        let picked = show();
        if picked.is_none() && t0.elapsed() < Duration::from_millis(150) {
            self.notice = Some(Notice {
                level: Level::Warn,
                text: "no file dialog could open (is xdg-desktop-portal running?): type the folder into the field, pick a bundled preset from the Experiment menu, or pass files on the command line (certlab gui PRESET --open RUN_DIR)".into(),
            });
        }
        picked
    }

    /// Asks the renderer for the next frame's pixels; they are saved in `logic`.
    fn request_shot(&mut self, ctx: &egui::Context, path: PathBuf, rect: Option<egui::Rect>) {
        let tx = self.shot_tx_rx.0.clone();
        ctx.request_screenshot(move |img| {
            let _ = tx.try_send(img);
        });
        self.shot = Some(PendingShot {
            path,
            rect,
            rx: self.shot_tx_rx.1.clone(),
        });
        ctx.request_repaint();
    }

    /// Saves a screenshot that arrived; returns true when one was saved.
    fn receive_shot(&mut self, ctx: &egui::Context) -> bool {
        let Some(pending) = self.shot.as_ref() else {
            return false;
        };
        let Ok(img) = pending.rx.try_recv() else {
            ctx.request_repaint_after(Duration::from_millis(50));
            return false;
        };
        let ppp = ctx.pixels_per_point();
        let img = match pending.rect {
            Some(r) => img.region(&r, Some(ppp)),
            None => (*img).clone(),
        };
        let path = pending.path.clone();
        self.shot = None;
        self.notice = Some(match write_png(&path, &img) {
            Ok(()) => Notice {
                level: Level::Info,
                text: format!("image written to {}", path.display()),
            },
            Err(e) => Notice {
                level: Level::Error,
                text: format!("cannot write {}: {e}", path.display()),
            },
        });
        true
    }

    /// One step of `make screenshots`.
    fn autopilot_step(&mut self, ctx: &egui::Context) {
        let Some(mut ap) = self.autopilot.take() else {
            return;
        };
        if !ap.began {
            ap.began = true;
            if ap.overlay_all {
                for r in &mut self.library {
                    r.visible = true;
                }
            }
            if ap.start {
                self.start(ctx);
            }
        }
        if self.shot.is_some() {
            if self.receive_shot(ctx) {
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
        if !ready {
            self.autopilot = Some(ap);
            return;
        }
        let Some((tab, path)) = ap.shots.first().cloned() else {
            if !ap.quit_after_shots {
                return; // Only asked to start: the window stays, the autopilot is done.
            }
            if let Some(l) = &self.live {
                if l.is_running() {
                    self.send(Command::Stop);
                }
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
            self.request_shot(ctx, path, None);
        }
        ctx.request_repaint();
        self.autopilot = Some(ap);
    }

    // ----------------------------------------------------------------------------------------
    // Drawing

    /// The whole window (everything but the logic pass); separate from `eframe::App::ui` so
    /// benchmarks and tests can draw without a frame.
    pub fn show(&mut self, ui: &mut Ui) {
        let (cfg, problems) = self.designer.checked();
        let running = self.live.as_ref().is_some_and(|l| l.is_running());
        egui::Panel::top("toolbar").show(ui, |ui| self.toolbar_ui(ui, &cfg, &problems, running));
        egui::Panel::left("designer")
            .resizable(true)
            .default_size(330.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| {
                    ui.add_space(4.0);
                    if running {
                        ui.label(
                            RichText::new("The experiment is locked while it runs.").italics(),
                        );
                    }
                    for a in self.designer.ui(ui, &problems, running) {
                        match a {
                            DesignerAction::PickDatasetFolder => {
                                self.actions.push(Action::PickDatasetFolder)
                            }
                        }
                    }
                });
            });
        egui::Panel::bottom("log")
            .resizable(true)
            .default_size(120.0)
            .show(ui, |ui| self.log_ui(ui));
        egui::CentralPanel::default().show(ui, |ui| {
            ui.horizontal(|ui| {
                for t in Tab::ALL {
                    ui.selectable_value(&mut self.tab, t, t.title());
                }
            });
            self.showing_ui(ui);
            ui.separator();
            match self.tab {
                Tab::Overview => self.overview_ui(ui),
                Tab::Tightness => self.tightness_ui(ui),
                Tab::Lipschitz => self.lipschitz_ui(ui),
                Tab::Decision => self.decision_ui(ui),
                Tab::Runs => self.runs_ui(ui),
            }
        });
        if ui.ctx().input(|i| i.key_pressed(egui::Key::Escape)) {
            self.notice = None;
        }
    }

    /// Which runs the plots show, in their colours (ticked in the Runs tab).
    fn showing_ui(&self, ui: &mut Ui) {
        let runs = self.visible_runs();
        ui.horizontal_wrapped(|ui| {
            if runs.is_empty() {
                ui.label(
                    RichText::new("No run shown: press Start, or tick runs in the Runs tab.")
                        .italics(),
                );
                return;
            }
            ui.label("Showing:");
            for r in &runs {
                let live = self
                    .live
                    .as_ref()
                    .is_some_and(|l| std::ptr::eq(&l.series, *r));
                let text = if live {
                    format!("{} (live)", r.name)
                } else {
                    r.name.clone()
                };
                ui.label(RichText::new(text).color(r.color));
            }
        });
    }

    fn toolbar_ui(
        &mut self,
        ui: &mut Ui,
        cfg: &ExperimentConfig,
        problems: &[FieldError],
        running: bool,
    ) {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("Experiment", |ui| {
                if ui.button("Default experiment").clicked() {
                    self.actions.push(Action::ResetDefault);
                }
                if ui.button("Open preset…").clicked() {
                    self.actions.push(Action::OpenPresetDialog);
                }
                if ui.button("Save preset as…").clicked() {
                    self.actions.push(Action::SavePresetDialog);
                }
                ui.separator();
                ui.label(RichText::new("Bundled presets").small());
                for p in bundled_presets() {
                    let name = p
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    if ui.button(name).clicked() {
                        self.actions.push(Action::LoadPreset(p));
                    }
                }
            });
            ui.menu_button("Runs", |ui| {
                if ui.button("Open run folder…").clicked() {
                    self.actions.push(Action::OpenRunDialog);
                }
                if ui.button("Refresh runs folder").clicked() {
                    self.actions.push(Action::RefreshRuns);
                }
                if ui.button("Export table as CSV").clicked() {
                    self.actions.push(Action::ExportCsv);
                }
            });
            ui.separator();
            let title = match &self.preset_path {
                Some(p) => format!("{} — {}", cfg.name, p.display()),
                None => cfg.name.clone(),
            };
            ui.label(RichText::new(title).strong());
        });
        ui.horizontal(|ui| {
            let can_start = !running && problems.is_empty();
            let start = ui
                .add_enabled(
                    can_start,
                    egui::Button::new(RichText::new("▶ Start").strong()),
                )
                .on_hover_text("Train the experiment on the left in the background");
            if start.clicked() {
                self.actions.push(Action::Start);
            }
            let paused = self.live.as_ref().is_some_and(|l| l.paused);
            if paused {
                if ui
                    .add_enabled(running, egui::Button::new("▶ Resume"))
                    .clicked()
                {
                    self.actions.push(Action::Send(Command::Resume));
                }
            } else if ui
                .add_enabled(running, egui::Button::new("⏸ Pause"))
                .clicked()
            {
                self.actions.push(Action::Send(Command::Pause));
            }
            if ui
                .add_enabled(running, egui::Button::new("⏹ Stop"))
                .clicked()
            {
                self.actions.push(Action::Send(Command::Stop));
            }
            if let Some(p) = problems.first() {
                let more = if problems.len() > 1 {
                    format!(" (and {} more)", problems.len() - 1)
                } else {
                    String::new()
                };
                ui.label(RichText::new(format!("Cannot start: {p}{more}")).color(ERROR_COLOR));
            }
            if let Some(live) = &self.live {
                ui.separator();
                self.progress_ui(ui, live);
            }
        });
        if let Some(n) = self.notice.clone() {
            let color = match n.level {
                Level::Info => ui.visuals().text_color(),
                Level::Warn => Color32::from_rgb(230, 170, 20),
                Level::Error => ERROR_COLOR,
            };
            ui.horizontal(|ui| {
                ui.label(RichText::new(&n.text).color(color));
                if ui
                    .small_button("✖")
                    .on_hover_text("Dismiss (Esc)")
                    .clicked()
                {
                    self.notice = None;
                }
            });
        }
        ui.add_space(2.0);
    }

    fn progress_ui(&self, ui: &mut Ui, live: &LiveRun) {
        let state = match &live.finished {
            None if live.paused => "paused",
            None => "running",
            Some(Outcome::Completed) => "completed",
            Some(Outcome::Cancelled) => "stopped",
            Some(Outcome::Failed(_)) => "failed",
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

    fn log_ui(&mut self, ui: &mut Ui) {
        ui.horizontal(|ui| {
            ui.label(RichText::new("Log").strong());
            if let Some(d) = self.live.as_ref().and_then(|l| l.run_dir()) {
                ui.label(RichText::new(format!("run folder: {}", d.display())).small());
            }
        });
        egui::ScrollArea::vertical()
            .stick_to_bottom(true)
            .auto_shrink([false, false])
            .show(ui, |ui| {
                for line in &self.log {
                    let color = match line.level {
                        Level::Info => ui.visuals().text_color(),
                        Level::Warn => Color32::from_rgb(230, 170, 20),
                        Level::Error => ERROR_COLOR,
                    };
                    ui.label(RichText::new(&line.message).monospace().color(color));
                }
            });
    }

    /// A plot with a header line: its title and a button that saves it as PNG.
    fn titled(
        &mut self,
        ui: &mut Ui,
        title: &str,
        file_stem: &str,
        body: impl FnOnce(&mut Ui, &App) -> egui::Response,
    ) {
        let mut save = false;
        let app = &*self;
        // The scope holds title, key, plot and axes: what "Save PNG" writes.
        let scope = ui.scope(|ui| {
            ui.horizontal(|ui| {
                ui.label(RichText::new(title).strong());
                ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                    save = ui
                        .small_button("Save PNG")
                        .on_hover_text(format!(
                            "Write this plot to <runs>/exports/{file_stem}-<time>.png"
                        ))
                        .clicked();
                });
            });
            body(ui, app)
        });
        if save {
            self.actions.push(Action::SavePlotPng {
                name: file_stem.to_string(),
                rect: scope.response.rect,
            });
        }
    }

    fn overview_ui(&mut self, ui: &mut Ui) {
        let h = ui.available_height();
        let acc_h = (h * 0.55 - 30.0).max(120.0);
        let loss_h = (h - acc_h - 70.0).max(100.0);
        // Overlaid runs: clean, PGD and one bound's certified accuracy each, or it is a thicket.
        let runs = self.visible_runs();
        let several = runs.len() > 1;
        let bounds = cert_methods(runs.iter().copied());
        drop(runs);
        if several && !bounds.is_empty() {
            if !self
                .compare_bound
                .as_ref()
                .is_some_and(|b| bounds.contains(b))
            {
                self.compare_bound = bounds
                    .iter()
                    .find(|b| *b == "crown")
                    .or(bounds.first())
                    .cloned();
            }
            ui.horizontal(|ui| {
                let l = ui.label("Certified accuracy of the overlaid runs by");
                let current = self.compare_bound.clone().unwrap_or_default();
                egui::ComboBox::from_id_salt("compare-bound")
                    .selected_text(current)
                    .show_ui(ui, |ui| {
                        for b in &bounds {
                            ui.selectable_value(&mut self.compare_bound, Some(b.clone()), b);
                        }
                    })
                    .response
                    .labelled_by(l.id);
            });
        }
        let chosen = self.compare_bound.clone();
        self.titled(
            ui,
            "Accuracy: clean vs PGD vs certified",
            "accuracy",
            |ui, app| {
                let keep = |m: &Metric| match m {
                    Metric::Clean | Metric::Pgd => true,
                    Metric::SubsetClean => !several,
                    Metric::Cert(b) => !several || chosen.as_ref() == Some(b),
                    _ => false,
                };
                CurvePlot {
                    id: "accuracy",
                    y_label: "accuracy",
                    y_axis: YAxis::Fraction,
                    height: acc_h,
                    keep: &keep,
                }
                .ui(ui, &app.visible_runs())
            },
        );
        self.titled(ui, "Loss", "loss", |ui, app| {
            let keep = |m: &Metric| matches!(m, Metric::TrainLoss | Metric::BatchLoss);
            // (Batch losses exist for the live run only.)
            CurvePlot {
                id: "loss",
                y_label: "loss",
                y_axis: YAxis::Linear,
                height: loss_h,
                keep: &keep,
            }
            .ui(ui, &app.visible_runs())
        });
    }

    fn tightness_ui(&mut self, ui: &mut Ui) {
        let runs = self.visible_runs();
        let method = runs.iter().find_map(|r| {
            r.last()
                .and_then(|x| x.gap.as_ref())
                .map(|g| g.method.clone())
        });
        let Some(method) = method else {
            ui.add_space(20.0);
            ui.label("No tightness statistics yet. They come with every evaluation of a run that trains with CROWN-IBP or Fast-Lin, or that certifies with a linear bound (crown-ibp, fastlin, crown under Evaluation → Certify with).");
            return;
        };
        drop(runs);
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
            self.titled(
                &mut cols[0],
                "Unstable ReLUs per example, by layer",
                "unstable",
                |ui, app| {
                    let keep = |m: &Metric| matches!(m, Metric::Unstable(_));
                    CurvePlot {
                        id: "unstable",
                        y_label: "unstable neurons",
                        y_axis: YAxis::Linear,
                        height: row_h,
                        keep: &keep,
                    }
                    .ui(ui, &app.visible_runs())
                },
            );
            self.titled(
                &mut cols[1],
                "Tightness regularizers r1, r2 (mean)",
                "r1r2",
                |ui, app| {
                    let keep = |m: &Metric| matches!(m, Metric::R1 | Metric::R2);
                    CurvePlot {
                        id: "r1r2",
                        y_label: "r",
                        y_axis: log,
                        height: row_h,
                        keep: &keep,
                    }
                    .ui(ui, &app.visible_runs())
                },
            );
            self.titled(
                &mut cols[0],
                "Exact bounds and the certified–PGD gap",
                "exact",
                |ui, app| {
                    let keep = |m: &Metric| matches!(m, Metric::FracExact | Metric::CertPgdGap);
                    CurvePlot {
                        id: "exact",
                        y_label: "fraction",
                        y_axis: YAxis::Fraction,
                        height: row_h,
                        keep: &keep,
                    }
                    .ui(ui, &app.visible_runs())
                },
            );
            self.titled(
                &mut cols[1],
                "Histogram of p_t − m_t (last evaluation)",
                "gap-histogram",
                |ui, app| gap_histogram_ui(ui, &app.visible_runs(), row_h),
            );
        });
    }

    fn lipschitz_ui(&mut self, ui: &mut Ui) {
        let any = self
            .visible_runs()
            .iter()
            .any(|r| r.curves.keys().any(|m| matches!(m, Metric::Lipschitz(_))));
        if !any {
            ui.add_space(20.0);
            ui.label("No Lipschitz estimates yet. Pick estimators under Evaluation → Lipschitz estimates; each evaluation then reports them.");
            return;
        }
        ui.checkbox(&mut self.log_scale, "log scale");
        let y = if self.log_scale {
            YAxis::Log
        } else {
            YAxis::Linear
        };
        // ADMM's primal residual is a ratio, not a Lipschitz constant: its own plot below.
        let residual = |m: &Metric| matches!(m, Metric::Lipschitz(k) if k == ADMM_RESIDUAL);
        let admm = self
            .visible_runs()
            .iter()
            .any(|r| r.curves.keys().any(residual));
        let avail = ui.available_height() - 40.0;
        let h = if admm { avail * 0.65 - 40.0 } else { avail };
        self.titled(
            ui,
            "Lipschitz constant of the network, by estimator",
            "lipschitz",
            |ui, app| {
                let keep = |m: &Metric| matches!(m, Metric::Lipschitz(_)) && !residual(m);
                CurvePlot {
                    id: "lipschitz",
                    y_label: "Lipschitz (ℓ2)",
                    y_axis: y,
                    height: h.max(150.0),
                    keep: &keep,
                }
                .ui(ui, &app.visible_runs())
            },
        );
        if admm {
            let h = (avail * 0.35 - 40.0).max(100.0);
            self.titled(
                ui,
                "ADMM primal residual ‖W − Wbar‖ / ‖W‖ (Wbar: the weights projected onto the LipSDP set)",
                "admm",
                |ui, app| {
                    CurvePlot {
                        id: "admm",
                        y_label: "residual",
                        y_axis: YAxis::Log,
                        height: h,
                        keep: &residual,
                    }
                    .ui(ui, &app.visible_runs())
                },
            );
        }
    }

    fn decision_ui(&mut self, ui: &mut Ui) {
        let Some(live) = self.live.as_mut() else {
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
        toy::decision_ui(ui, map, &mut live.decision_texture, h.max(200.0));
    }

    fn runs_ui(&mut self, ui: &mut Ui) {
        ui.horizontal(|ui| {
            ui.label(format!("Runs folder: {}", self.runs_dir.display()));
            if ui.button("Refresh").clicked() {
                self.actions.push(Action::RefreshRuns);
            }
            if ui.button("Open run folder…").clicked() {
                self.actions.push(Action::OpenRunDialog);
            }
            if ui
                .button("Export CSV")
                .on_hover_text("Write this table to <runs>/exports/")
                .clicked()
            {
                self.actions.push(Action::ExportCsv);
            }
        });
        ui.label(
            RichText::new("Tick runs to overlay them on every plot, each in its own colour.")
                .small(),
        );
        for e in &self.library_errors {
            ui.label(RichText::new(e).color(ERROR_COLOR).small());
        }
        ui.separator();
        let cert_keys = cert_methods(self.all_runs());
        egui::ScrollArea::both().show(ui, |ui| {
            egui::Grid::new("runs-table")
                .striped(true)
                .num_columns(9 + cert_keys.len())
                .show(ui, |ui| {
                    for h in [
                        "run (tick to overlay)",
                        "data",
                        "model",
                        "method",
                        "eps",
                        "epochs",
                        "status",
                        "clean",
                        "PGD",
                    ] {
                        ui.label(RichText::new(h).strong());
                    }
                    for k in &cert_keys {
                        ui.label(RichText::new(format!("cert {k}")).strong());
                    }
                    ui.end_row();
                    let live_len = self.live.iter().count();
                    let n = live_len + self.library.len();
                    for i in 0..n {
                        let run = if i < live_len {
                            match self.live.as_mut() {
                                Some(l) => &mut l.series,
                                None => continue,
                            }
                        } else {
                            &mut self.library[i - live_len]
                        };
                        let name = RichText::new(run.name.clone()).color(run.color).strong();
                        let folder = run
                            .dir
                            .as_ref()
                            .map(|d| d.display().to_string())
                            .unwrap_or_default();
                        ui.checkbox(&mut run.visible, name).on_hover_text(folder);
                        let r = summary_row(run);
                        for cell in &r.cells {
                            ui.label(cell);
                        }
                        for k in &cert_keys {
                            ui.label(
                                r.cert
                                    .iter()
                                    .find(|(m, _)| m == k)
                                    .map_or("–".into(), |(_, v)| pct(*v)),
                            );
                        }
                        ui.end_row();
                    }
                });
        });
    }
}

impl eframe::App for App {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.drain_events();
        if self.autopilot.is_some() {
            self.autopilot_step(ctx);
        } else {
            self.receive_shot(ctx);
        }
        if self.live.as_ref().is_some_and(|l| l.is_running()) {
            // Progress bars move between events too.
            ctx.request_repaint_after(Duration::from_millis(250));
        }
    }

    fn ui(&mut self, ui: &mut Ui, _frame: &mut eframe::Frame) {
        self.show(ui);
        let ctx = ui.ctx().clone();
        self.apply_actions(&ctx);
    }

    fn on_exit(&mut self) {
        self.stop_worker();
    }
}

/// The `metrics.jsonl` key of ADMM's primal residual (under `lipschitz`).
const ADMM_RESIDUAL: &str = "admm_residual";

impl App {
    /// Never leave a trainer running without its window: stop it and let it save.
    fn stop_worker(&mut self) {
        if let Some(mut h) = self.live.as_mut().and_then(|l| l.handle.take()) {
            h.send(Command::Stop);
            h.join();
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop_worker();
    }
}

/// One run's final numbers as table cells.
pub struct SummaryRow {
    /// data, model, method, eps, epochs, status, clean, PGD
    pub cells: Vec<String>,
    pub cert: Vec<(String, f64)>,
}

fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

pub fn summary_row(run: &RunSeries) -> SummaryRow {
    let c = &run.config;
    let last = run.last();
    let model = if !c.model.arch.uses_hidden() {
        c.model.arch.name().to_string()
    } else {
        format!(
            "{} {}",
            c.model.arch.name(),
            c.model
                .hidden
                .iter()
                .map(|h| h.to_string())
                .collect::<Vec<_>>()
                .join("x")
        )
    };
    let eps = if c.train.method.uses_eps() {
        format!("{} {}", short_number(c.train.eps), c.train.norm.name())
    } else {
        "–".into()
    };
    SummaryRow {
        cells: vec![
            c.dataset.kind.name().to_string(),
            model,
            super::designer::method_label(c.train.method).to_string(),
            eps,
            format!("{}/{}", last.map_or(0, |r| r.epoch), c.train.epochs),
            run.outcome.clone().unwrap_or_else(|| "running".into()),
            last.map_or("–".into(), |r| pct(r.clean_acc)),
            last.and_then(|r| r.pgd_acc).map_or("–".into(), pct),
        ],
        cert: last
            .map(|r| r.cert_acc.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default(),
    }
}

fn cert_methods<'a>(runs: impl Iterator<Item = &'a RunSeries>) -> Vec<String> {
    let mut keys: Vec<String> = runs
        .filter_map(|r| r.last())
        .flat_map(|r| r.cert_acc.keys().cloned())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The table of runs as CSV: one row per run with its final numbers (fractions, not percent).
pub fn runs_csv(runs: &[&RunSeries]) -> String {
    let cert_keys = cert_methods(runs.iter().copied());
    let lip_keys: Vec<String> = {
        let mut k: Vec<String> = runs
            .iter()
            .filter_map(|r| r.last())
            .flat_map(|r| r.lipschitz.keys().cloned())
            .collect();
        k.sort();
        k.dedup();
        k
    };
    let mut out = String::from(
        "run,folder,dataset,arch,hidden,method,train_eps,norm,epochs_done,epochs,status,clean_acc,pgd_acc,eval_eps",
    );
    for k in &cert_keys {
        out.push_str(&format!(",cert_{k}"));
    }
    for k in &lip_keys {
        out.push_str(&format!(",lipschitz_{k}"));
    }
    out.push_str(",r1_mean,r2_mean,frac_exact\n");
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    for r in runs {
        let c = &r.config;
        let last = r.last();
        let fields = [
            csv_field(&r.name),
            csv_field(
                &r.dir
                    .as_ref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
            ),
            c.dataset.kind.name().into(),
            c.model.arch.name().into(),
            csv_field(
                &c.model
                    .hidden
                    .iter()
                    .map(|h| h.to_string())
                    .collect::<Vec<_>>()
                    .join("x"),
            ),
            c.train.method.name().into(),
            c.train.eps.to_string(),
            c.train.norm.name().into(),
            last.map_or(0, |x| x.epoch).to_string(),
            c.train.epochs.to_string(),
            r.outcome.clone().unwrap_or_else(|| "running".into()),
            opt(last.map(|x| x.clean_acc)),
            opt(last.and_then(|x| x.pgd_acc)),
            opt(last.and_then(|x| x.eval_eps)),
        ];
        out.push_str(&fields.join(","));
        for k in &cert_keys {
            out.push(',');
            out.push_str(&opt(last.and_then(|x| x.cert_acc.get(k).copied())));
        }
        for k in &lip_keys {
            out.push(',');
            out.push_str(&opt(last.and_then(|x| x.lipschitz.get(k).copied())));
        }
        let gap = last.and_then(|x| x.gap.as_ref());
        out.push_str(&format!(
            ",{},{},{}\n",
            opt(gap.map(|g| g.r1_mean)),
            opt(gap.map(|g| g.r2_mean)),
            opt(gap.map(|g| g.frac_exact))
        ));
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn write_png(path: &Path, img: &egui::ColorImage) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let [w, h] = img.size;
    let mut enc = png::Encoder::new(file, w as u32, h as u32);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(std::io::Error::other)?;
    let bytes: Vec<u8> = img.pixels.iter().flat_map(|c| c.to_array()).collect();
    writer
        .write_image_data(&bytes)
        .map_err(std::io::Error::other)?;
    writer.finish().map_err(std::io::Error::other)
}

/// The bundled `presets/` folder: next to the working directory, or the source tree the
/// binary was built from.
pub fn bundled_presets_dir() -> Option<PathBuf> {
    [
        PathBuf::from("presets"),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("presets"),
    ]
    .into_iter()
    .find(|p| p.is_dir())
}

fn bundled_presets() -> Vec<PathBuf> {
    let Some(dir) = bundled_presets_dir() else {
        return vec![];
    };
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::EvalRecord;

    #[test]
    fn csv_has_one_row_per_run_with_the_last_numbers() {
        let mut a = RunSeries::new(
            "a,1".into(),
            None,
            ExperimentConfig::default_experiment(),
            PALETTE[0],
        );
        let mut rec = EvalRecord {
            epoch: 1,
            clean_acc: 0.5,
            ..EvalRecord::default()
        };
        a.push(rec.clone());
        rec.epoch = 2;
        rec.clean_acc = 0.75;
        rec.pgd_acc = Some(0.5);
        rec.cert_acc.insert("ibp".into(), 0.25);
        a.push(rec);
        a.outcome = Some("completed".into());
        let b = RunSeries::new(
            "b".into(),
            None,
            ExperimentConfig::default_experiment(),
            PALETTE[1],
        );
        let csv = runs_csv(&[&a, &b]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3, "{csv}");
        let head: Vec<&str> = lines[0].split(',').collect();
        let col = |name: &str| head.iter().position(|h| *h == name).unwrap();
        assert!(lines[1].starts_with("\"a,1\","), "{}", lines[1]);
        // Split after the quoted name.
        let row: Vec<&str> = lines[1]["\"a,1\"".len()..].split(',').collect();
        assert_eq!(row[col("clean_acc")], "0.75");
        assert_eq!(row[col("cert_ibp")], "0.25");
        assert_eq!(row[col("epochs_done")], "2");
        assert_eq!(row[col("status")], "completed");
        let row_b: Vec<&str> = lines[2].split(',').collect();
        assert_eq!(row_b[col("status")], "running");
        assert_eq!(row_b[col("cert_ibp")], "");
    }
}
