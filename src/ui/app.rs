//! The workbench window, wired: designer on the left, toolbar and progress on top, the tabs in
//! the middle, the log at the bottom. Each panel draws itself (`panels/`) and returns
//! [`Action`]s; they are applied here after the frame, in one place.
use super::autopilot::Autopilot;
use super::export::{export_path, runs_csv};
use super::library::Library;
use super::live::LiveRun;
use super::panels::{Action, Designer, LogPanel, Notice, Tab, Tabs, Toolbar};
use super::presets::bundled_presets_dir;
use super::screenshot::Screenshots;
use super::series::RunSeries;
use super::sweep_view::SweepView;
use crate::config::ExperimentConfig;
use crate::protocol::{Command, Level};
use crate::sweep::{LocalOptions, SweepFolder};
use crate::worker::{RunTarget, WorkerHandle};
use egui::Ui;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Starts a worker for an experiment; the app calls it on Start. The real one is
/// [`crate::worker::spawn_for`]; tests may pass their own.
pub type Spawner =
    Box<dyn Fn(ExperimentConfig, RunTarget, Box<dyn Fn() + Send>) -> Result<WorkerHandle, String>>;

pub struct App {
    /// The experiment editor (left panel).
    pub designer: Designer,
    pub live: Option<LiveRun>,
    /// The runs folder's runs and those opened.
    pub library: Library,
    pub log: LogPanel,
    pub notice: Option<Notice>,
    /// The tab the central panel shows.
    pub tab: Tab,
    pub tabs: Tabs,
    /// Where the designer's experiment came from (shown in the title bar).
    pub preset_path: Option<PathBuf>,
    pub autopilot: Option<Autopilot>,
    spawner: Spawner,
    pub(super) screenshots: Screenshots,
}

/// How long one frame may spend draining worker events.
const EVENT_BUDGET: Duration = Duration::from_millis(8);

impl App {
    pub fn new(cfg: ExperimentConfig, runs_dir: PathBuf, spawner: Spawner) -> Self {
        let mut app = App {
            designer: Designer::new(cfg),
            live: None,
            library: Library::new(runs_dir),
            log: LogPanel::default(),
            notice: None,
            tab: Tab::Overview,
            tabs: Tabs::default(),
            preset_path: None,
            autopilot: None,
            spawner,
            screenshots: Screenshots::new(),
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
        if self.is_running() {
            return;
        }
        let (cfg, problems) = self.designer.checked();
        if let Some(p) = problems.first() {
            self.notice = Some(Notice {
                level: Level::Error,
                text: format!("fix the experiment first: {p}"),
            });
            return;
        }
        let waker = ctx.clone();
        let wake: Box<dyn Fn() + Send> =
            Box::new(move || waker.request_repaint_after(Duration::from_millis(30)));
        match (self.spawner)(
            cfg.clone(),
            RunTarget::Under(self.library.dir.clone()),
            wake,
        ) {
            Ok(handle) => {
                // The previous live run stays on the plots as an overlay.
                if let Some(prev) = self.live.take() {
                    if !prev.series.records.is_empty() {
                        self.library.adopt(prev.series);
                    }
                }
                self.live = Some(LiveRun::new(handle, cfg));
                self.tabs.decision.clear();
                self.notice = None;
                self.log.push(Level::Info, "starting…".into());
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
        if let Some(live) = self.live.as_ref() {
            live.send(cmd);
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
        if let Err(e) = self.library.open(dir) {
            self.notice = Some(Notice {
                level: Level::Error,
                text: format!("cannot open run: {e}"),
            })
        }
    }

    /// Opens a sweep folder in the Sweep tab (a running sweep stays until it ends).
    pub fn open_sweep(&mut self, dir: &Path) {
        if self.tabs.sweep.is_running() {
            self.notice = Some(Notice {
                level: Level::Warn,
                text: "a sweep is running: stop it before opening another".into(),
            });
            return;
        }
        match SweepView::open(dir) {
            Ok(v) => {
                self.tabs.sweep.view = Some(v);
                self.tab = Tab::Sweep;
            }
            Err(e) => {
                self.notice = Some(Notice {
                    level: Level::Error,
                    text: format!("cannot open sweep: {e}"),
                })
            }
        }
    }

    /// Builds the Sweep tab's sweep over the designer's experiment under `<runs>/sweeps/` and
    /// runs it locally; a sweep of the same name and points resumes. Nothing starts when the
    /// experiment or any point is invalid: the reason shows in the tab.
    pub fn start_sweep(&mut self, ctx: &egui::Context) {
        let panel = &mut self.tabs.sweep;
        if panel.is_running() {
            return;
        }
        let (cfg, problems) = self.designer.checked();
        let built = match problems.first() {
            Some(p) => Err(format!("fix the experiment first: {p}")),
            None => panel.spec(&cfg).and_then(|spec| {
                SweepFolder::create_or_open_with(
                    spec,
                    &cfg.to_toml_string(),
                    "the designer's experiment",
                    &self.library.dir.join("sweeps"),
                )
                .map_err(|e| e.to_string())
            }),
        };
        match built {
            Ok(folder) => {
                panel.build_error = None;
                panel.view = Some(SweepView::new(folder));
                self.resume_sweep(ctx);
            }
            Err(e) => panel.build_error = Some(e),
        }
    }

    /// Runs the points of the shown sweep that are not done.
    pub fn resume_sweep(&mut self, ctx: &egui::Context) {
        let panel = &mut self.tabs.sweep;
        let exe = match panel.exe.clone().map_or_else(std::env::current_exe, Ok) {
            Ok(e) => e,
            Err(e) => {
                panel.build_error = Some(format!("cannot locate the certlab binary: {e}"));
                return;
            }
        };
        let opts = LocalOptions {
            jobs: panel.jobs.max(1),
            threads: 0,
            exe,
            retry_failed: false,
        };
        if let Some(view) = panel.view.as_mut() {
            let waker = ctx.clone();
            view.start(
                opts,
                Box::new(move || waker.request_repaint_after(Duration::from_millis(50))),
            );
        }
    }

    /// Writes the shown sweep's report table into `<runs>/exports/`.
    fn export_sweep_csv(&mut self) {
        let Some(report) = self
            .tabs
            .sweep
            .view
            .as_ref()
            .and_then(|v| v.report.as_ref())
        else {
            return;
        };
        let (stem, text) = (format!("sweep-{}", report.name), report.to_csv());
        self.write_export(&stem, "sweep report", &text);
    }

    /// Re-reads the runs folder; keeps which runs were overlaid.
    pub fn refresh_runs(&mut self) {
        let live_dir = self.live.as_ref().and_then(|l| l.run_dir());
        self.library.refresh(live_dir);
    }

    /// Writes the table of final numbers of every listed run (and the live one) as CSV into
    /// `<runs>/exports/`; returns the file.
    pub fn export_csv(&mut self) -> Option<PathBuf> {
        let rows: Vec<&RunSeries> = self.all_runs().collect();
        let text = runs_csv(&rows);
        self.write_export("runs", "table", &text)
    }

    /// Writes `text` to `<runs>/exports/<stem>-<time>.csv` and says where (or why not).
    fn write_export(&mut self, stem: &str, what: &str, text: &str) -> Option<PathBuf> {
        let path = export_path(&self.library.dir, stem, "csv");
        let result = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| std::fs::write(&path, text));
        match result {
            Ok(()) => {
                self.notice = Some(Notice {
                    level: Level::Info,
                    text: format!("{what} written to {}", path.display()),
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
        self.library.all(self.live.as_ref().map(|l| &l.series))
    }

    /// The runs drawn on the plots.
    pub fn visible_runs(&self) -> Vec<&RunSeries> {
        self.library.visible(self.live.as_ref().map(|l| &l.series))
    }

    fn is_running(&self) -> bool {
        self.live.as_ref().is_some_and(|l| l.is_running())
    }

    // ----------------------------------------------------------------------------------------
    // The frame: events in, panels drawn, actions applied

    /// Drains worker events for at most [`EVENT_BUDGET`].
    fn drain_events(&mut self) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let drained = live.drain(Instant::now() + EVENT_BUDGET);
        for (level, message) in drained.logs {
            self.log.push(level, message);
        }
        if drained.notice.is_some() {
            self.notice = drained.notice;
        }
    }

    /// The whole window (everything but the logic pass); separate from `eframe::App::ui` so
    /// benchmarks and tests can draw without a frame. Returns what the panels asked for.
    pub fn show(&mut self, ui: &mut Ui) -> Vec<Action> {
        let (cfg, problems) = self.designer.checked();
        let running = self.is_running();
        let mut actions = Vec::new();
        let toolbar = Toolbar {
            title: match &self.preset_path {
                Some(p) => format!("{} — {}", cfg.name, p.display()),
                None => cfg.name.clone(),
            },
            problems: &problems,
            running,
            live: self.live.as_ref(),
            notice: self.notice.as_ref(),
        };
        egui::Panel::top("toolbar").show(ui, |ui| actions.extend(toolbar.ui(ui)));
        egui::Panel::left("designer")
            .resizable(true)
            .default_size(330.0)
            .show(ui, |ui| {
                actions.extend(self.designer.ui(ui, &problems, running));
            });
        let run_dir = self.live.as_ref().and_then(|l| l.run_dir());
        egui::Panel::bottom("log")
            .resizable(true)
            .default_size(120.0)
            .show(ui, |ui| self.log.ui(ui, run_dir));
        egui::CentralPanel::default().show(ui, |ui| {
            let live = self.live.as_mut();
            actions.extend(self.tabs.ui(ui, &mut self.tab, live, &mut self.library));
        });
        if ui.ctx().input(|i| i.key_pressed(egui::Key::Escape)) {
            self.notice = None;
        }
        actions
    }

    fn apply(&mut self, ctx: &egui::Context, actions: Vec<Action>) {
        for action in actions {
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
                    let d = rfd::FileDialog::new().set_directory(&self.library.dir);
                    if let Some(p) = self.dialog(|| d.pick_folder()) {
                        self.open_run(&p);
                    }
                }
                Action::RefreshRuns => self.refresh_runs(),
                Action::ExportCsv => {
                    self.export_csv();
                }
                Action::SavePlotPng { name, rect } => {
                    let path = export_path(&self.library.dir, &name, "png");
                    self.screenshots.request(ctx, path, Some(rect));
                }
                Action::PickDatasetFolder => {
                    if let Some(p) = self.dialog(|| rfd::FileDialog::new().pick_folder()) {
                        self.designer.cfg.dataset.path = p.display().to_string();
                    }
                }
                Action::DismissNotice => self.notice = None,
                Action::OpenRun(dir) => self.open_run(&dir),
                Action::OpenSweep(dir) => self.open_sweep(&dir),
                Action::OpenSweepDialog => {
                    let d = rfd::FileDialog::new().set_directory(self.library.dir.join("sweeps"));
                    if let Some(p) = self.dialog(|| d.pick_folder()) {
                        self.open_sweep(&p);
                    }
                }
                Action::StartSweep => self.start_sweep(ctx),
                Action::ResumeSweep => self.resume_sweep(ctx),
                Action::StopSweep => {
                    if let Some(v) = &self.tabs.sweep.view {
                        v.stop();
                    }
                }
                Action::ExportSweepCsv => self.export_sweep_csv(),
                Action::InspectPoint { run_dir, index } => {
                    self.tab = Tab::Inspector;
                    self.tabs.inspector.select(ctx, &run_dir, index);
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

    /// Never leave a trainer running without its window: stop it and let it save.
    fn stop_worker(&mut self) {
        if let Some(live) = self.live.as_mut() {
            live.stop_worker();
        }
    }
}

impl eframe::App for App {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.drain_events();
        // The inspector's answers arrive whichever tab is shown.
        self.tabs.inspector.drain(ctx);
        if self.autopilot.is_some() {
            self.autopilot_step(ctx);
        } else if let Some(n) = self.screenshots.receive(ctx) {
            self.notice = Some(n);
        }
        if self.is_running() {
            // Progress bars move between events too.
            ctx.request_repaint_after(Duration::from_millis(250));
        }
    }

    fn ui(&mut self, ui: &mut Ui, _frame: &mut eframe::Frame) {
        let actions = self.show(ui);
        let ctx = ui.ctx().clone();
        self.apply(&ctx, actions);
    }

    fn on_exit(&mut self) {
        self.stop_worker();
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop_worker();
    }
}
