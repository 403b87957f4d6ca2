//! `certlab gui`: the workbench window.
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

// The flags of `certlab gui`.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct GuiArgs {
    /// A preset to open instead of the built-in default experiment.
    pub preset: Option<PathBuf>,
    /// Run folders to overlay on the plots.
    #[arg(long = "open")]
    pub open: Vec<PathBuf>,
    /// Where new runs go and which folder the run browser lists.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Window size in points, WIDTHxHEIGHT.
    #[arg(long, default_value = "1400x900")]
    pub size: String,
    /// Press Start as soon as the window opens.
    #[arg(long)]
    pub start: bool,
    /// Save the window of TAB as a PNG and quit after the last one (for `make screenshots`):
    /// TAB=FILE, TAB one of overview, tightness, lipschitz, smoothing, decision, inspector,
    /// runs, sweep.
    #[arg(long = "shot", value_name = "TAB=FILE")]
    pub shots: Vec<String>,
    /// With --shot: wait until the run has this many evaluations (or has ended).
    #[arg(long, default_value_t = 1)]
    pub shot_after: usize,
    /// With --shot: overlay every run of the runs folder.
    #[arg(long)]
    pub overlay_all: bool,
    /// A sweep folder to open in the Sweep tab.
    #[arg(long)]
    pub sweep: Option<PathBuf>,
    /// With --shot: open test point --inspect-index of this run folder in the Inspector and
    /// wait for its answers.
    #[arg(long)]
    pub inspect: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub inspect_index: usize,
    /// With --inspect: the eps slider (default: the run's eval eps).
    #[arg(long)]
    pub inspect_eps: Option<f64>,
    /// With --inspect: the layer drawn as bars (0: the first hidden layer).
    #[arg(long, default_value_t = 0)]
    pub inspect_layer: usize,
    /// With --inspect: tick the 2-D view's smoothed regions and noise cloud (a run with a
    /// smoothed classifier) and wait for them.
    #[arg(long)]
    pub inspect_smoothing: bool,
}

impl GuiArgs {
    /// Opens the window (driven by `--start` / `--shot` for screenshots).
    pub fn run(self) -> Result<i32> {
        let GuiArgs {
            preset,
            open,
            runs_dir,
            size,
            start,
            shots,
            shot_after,
            overlay_all,
            sweep,
            inspect,
            inspect_index,
            inspect_eps,
            inspect_layer,
            inspect_smoothing,
        } = self;
        let parsed_size = size
            .split_once('x')
            .and_then(|(w, h)| Some([w.parse::<f32>().ok()?, h.parse::<f32>().ok()?]))
            .with_context(|| format!("--size `{size}` is not WIDTHxHEIGHT, e.g. 1400x900"))?;
        let mut plan = Vec::new();
        for s in &shots {
            let (tab, file) = s
                .split_once('=')
                .with_context(|| format!("--shot `{s}` is not TAB=FILE"))?;
            let tab = crate::ui::Tab::parse(tab).with_context(|| {
                format!("--shot: unknown tab `{tab}`: expected overview, tightness, lipschitz, smoothing, decision, inspector, runs or sweep")
            })?;
            plan.push((tab, PathBuf::from(file)));
        }
        let autopilot = (start || !plan.is_empty()).then(|| crate::ui::Autopilot {
            start,
            after_evals: shot_after,
            quit_after_shots: !plan.is_empty(),
            shots: plan,
            overlay_all,
            inspect: inspect.map(|run_dir| crate::ui::InspectShot {
                run_dir,
                index: inspect_index,
                eps: inspect_eps,
                layer: inspect_layer,
                smoothing: inspect_smoothing,
            }),
            ..Default::default()
        });
        crate::ui::launch(crate::ui::LaunchOptions {
            preset,
            open,
            runs_dir,
            autopilot,
            size: parsed_size,
            sweep,
        })?;
        Ok(0)
    }
}
