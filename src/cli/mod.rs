//! The command line: `certlab [gui] | run | runs | info | bench | bounds | eval | inspect |
//! lipschitz | smooth | sweep`, one file per subcommand, each a clap `Args` struct with a `run`
//! method.
//! The command line: `certlab [gui] | run | runs | info | bench | bounds | eval | lipschitz |
//! verify`,
//! one file per subcommand, each a clap `Args` struct with a `run` method.
mod bench;
mod bench_bounds;
mod bounds;
mod eval;
mod gui;
mod inspect;
mod lipschitz;
mod run;
mod runs;
mod smooth;
mod sweep;
mod trained;
mod verify;

pub use bench::fashion_mlp_config;
pub use eval::{method_names, parse_methods, MethodSet};
pub use trained::{load_trained, TrainedRun};

use crate::config::DeviceChoice;
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "certlab",
    version,
    about = "A workbench for robustness experiments on neural networks"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Open the workbench window (the default).
    Gui(gui::GuiArgs),
    /// Train an experiment headless and write its run folder.
    Run(run::RunArgs),
    /// List run folders under DIR with their final metrics.
    Runs(runs::RunsArgs),
    /// Print the torch version, the device picked, CUDA availability and thread count.
    Info,
    /// Certified bounds of a trained run: per-class logit bounds and margin lower bounds of the
    /// first N test points, as JSON.
    Bounds(bounds::BoundsArgs),
    /// The bound microscope on one test point of a trained run: per-layer intervals of each bound
    /// method against the empirical range, margin bounds, certified and PGD radii.
    Inspect(inspect::InspectArgs),
    /// Evaluate a trained run: clean, PGD and certified accuracy on the first N test points.
    Eval(eval::EvalArgs),
    /// Lipschitz constants of a trained run: per-layer and whole-network values of each
    /// estimator, with the seconds each took.
    Lipschitz(lipschitz::LipschitzArgs),
    /// Measure training throughput (samples/s) of one epoch.
    Bench(bench::BenchArgs),
    /// Run a sweep file (settings x seeds) locally or as a Slurm job array; `sweep status DIR`,
    /// `sweep report DIR`.
    Sweep(sweep::SweepArgs),
    /// Randomized-smoothing certificates (Cohen et al. 2019) of a trained run's first test
    /// points: CERTIFY's class and radius per point, certified accuracy at a list of radii.
    Smooth(smooth::SmoothArgs),
    /// Complete verification of a trained run: per test point verified / falsified / unknown /
    /// timeout, by IBP, CROWN, alpha-CROWN and branch and bound.
    Verify(verify::VerifyArgs),
}

/// `--threads N` of the commands that take it: torch's intra-op threads (`None`: one per core).
fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(t) = threads {
        if t == 0 {
            anyhow::bail!("--threads 0: give at least 1");
        }
        tch::set_num_threads(t as i32);
    }
    Ok(())
}

/// Runs the command; returns the process exit code.
pub fn main_with(cli: Cli) -> Result<i32> {
    match cli.command {
        None => crate::ui::launch(crate::ui::LaunchOptions {
            runs_dir: PathBuf::from("runs"),
            size: [1400.0, 900.0],
            ..Default::default()
        })
        .map(|_| 0),
        Some(Cmd::Gui(args)) => args.run(),
        Some(Cmd::Run(args)) => args.run(),
        Some(Cmd::Runs(args)) => args.run().map(|_| 0),
        Some(Cmd::Info) => {
            info_cmd();
            Ok(0)
        }
        Some(Cmd::Bounds(args)) => args.run(),
        Some(Cmd::Eval(args)) => args.run(),
        Some(Cmd::Inspect(args)) => args.run(),
        Some(Cmd::Lipschitz(args)) => args.run().map(|_| 0),
        Some(Cmd::Bench(args)) => args.run().map(|_| 0),
        Some(Cmd::Sweep(args)) => args.run(),
        Some(Cmd::Smooth(args)) => args.run().map(|_| 0),
        Some(Cmd::Verify(args)) => args.run(),
    }
}

fn parse_device(s: &str) -> Result<DeviceChoice> {
    DeviceChoice::parse(s).with_context(|| format!("--device `{s}` is not one of: auto, cpu, cuda"))
}

fn info_cmd() {
    let device = tch::Device::cuda_if_available();
    println!("certlab {}", env!("CARGO_PKG_VERSION"));
    println!(
        "torch version: {}",
        option_env!("CERTLAB_TORCH_VERSION").unwrap_or("unknown")
    );
    println!(
        "torch lib: {}",
        option_env!("CERTLAB_TORCH_LIB").unwrap_or("unknown")
    );
    println!(
        "device picked (auto): {}",
        crate::device::device_name(device)
    );
    println!(
        "cuda available: {} ({} device(s), cudnn {})",
        tch::Cuda::is_available(),
        tch::Cuda::device_count(),
        tch::Cuda::cudnn_is_available()
    );
    println!("threads: {}", tch::get_num_threads());
}
