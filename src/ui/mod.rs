//! The eframe workbench: experiment designer, live plots, run browser, 2-D view.
//!
//! Reads `Event`s from the worker and run folders from disk; never touches a tensor. It imports
//! only the leaves `protocol`, `metrics`, `config` and `run`, `worker` to start the trainer and
//! `sweep` to run and read sweeps.
//!
//! `app.rs` wires the window; every panel is a struct in `panels/` that owns its view state
//! and returns the `Action`s it asks for. The live run (`live.rs`) and the other runs
//! (`library.rs`) are the data the panels draw.
mod app;
mod autopilot;
pub mod bench;
pub mod bench_inspector;
mod export;
mod library;
mod live;
pub mod panels;
pub mod plots;
mod presets;
mod screenshot;
pub mod series;
mod sweep_plots;
pub mod sweep_view;
pub mod toy;
pub mod verify_plot;

pub use app::{App, Spawner};
pub use autopilot::{Autopilot, InspectShot};
pub use export::{runs_csv, summary_row, SummaryRow};
pub use library::Library;
pub use live::LiveRun;
pub use panels::{Action, Notice, Tab};

use crate::config::ExperimentConfig;
use std::path::PathBuf;

/// What `certlab gui` opens.
#[derive(Debug, Clone, Default)]
pub struct LaunchOptions {
    /// A preset to open instead of the built-in default experiment.
    pub preset: Option<PathBuf>,
    /// Run folders to overlay.
    pub open: Vec<PathBuf>,
    /// Where new runs go and which folder the run browser lists.
    pub runs_dir: PathBuf,
    /// Drive the window for screenshots (`make screenshots`).
    pub autopilot: Option<Autopilot>,
    /// Window size in points.
    pub size: [f32; 2],
    /// A sweep folder to open in the Sweep tab.
    pub sweep: Option<PathBuf>,
}

/// Opens the window and returns when it is closed.
pub fn launch(opts: LaunchOptions) -> anyhow::Result<()> {
    let cfg = match &opts.preset {
        Some(p) => ExperimentConfig::load(p)?,
        None => ExperimentConfig::default_experiment(),
    };
    let native = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("certlab")
            .with_inner_size(opts.size)
            .with_min_inner_size([900.0, 600.0]),
        ..Default::default()
    };
    eframe::run_native(
        "certlab",
        native,
        Box::new(move |_cc| {
            let mut app = App::new(cfg, opts.runs_dir.clone(), App::engine_spawner());
            app.preset_path = opts.preset.clone();
            for dir in &opts.open {
                app.open_run(dir);
            }
            if let Some(dir) = &opts.sweep {
                app.open_sweep(dir);
            }
            app.autopilot = opts.autopilot.clone();
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| anyhow::anyhow!("cannot open the window: {e}"))
}
