//! The command line: `certlab [gui] | run | runs | info | bench | bounds | eval | lipschitz`.
use crate::config::{DeviceChoice, ExperimentConfig};
use crate::run;
use crate::train;
use crate::worker::{self, Event, Level, Outcome, RunTarget};
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;

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
    Gui {
        /// A preset to open instead of the built-in default experiment.
        preset: Option<PathBuf>,
        /// Run folders to overlay on the plots.
        #[arg(long = "open")]
        open: Vec<PathBuf>,
        /// Where new runs go and which folder the run browser lists.
        #[arg(long, default_value = "runs")]
        runs_dir: PathBuf,
        /// Window size in points, WIDTHxHEIGHT.
        #[arg(long, default_value = "1400x900")]
        size: String,
        /// Press Start as soon as the window opens.
        #[arg(long)]
        start: bool,
        /// Save the window of TAB as a PNG and quit after the last one (for `make screenshots`):
        /// TAB=FILE, TAB one of overview, tightness, lipschitz, decision, runs.
        #[arg(long = "shot", value_name = "TAB=FILE")]
        shots: Vec<String>,
        /// With --shot: wait until the run has this many evaluations (or has ended).
        #[arg(long, default_value_t = 1)]
        shot_after: usize,
        /// With --shot: overlay every run of the runs folder.
        #[arg(long)]
        overlay_all: bool,
    },
    /// Train an experiment headless and write its run folder.
    Run {
        /// The experiment (a TOML preset).
        preset: PathBuf,
        /// The run folder to write (default: runs/<name>-<timestamp>); must not hold a run.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Override the number of epochs.
        #[arg(long)]
        epochs: Option<u32>,
        /// Override the device: auto, cpu or cuda.
        #[arg(long)]
        device: Option<String>,
    },
    /// List run folders under DIR with their final metrics.
    Runs {
        #[arg(default_value = "runs")]
        dir: PathBuf,
    },
    /// Print the torch version, the device picked, CUDA availability and thread count.
    Info,
    /// Certified bounds of a trained run: per-class logit bounds and margin lower bounds of the
    /// first N test points, as JSON.
    Bounds {
        /// The run folder (written by `certlab run` or the GUI).
        run_dir: PathBuf,
        /// Perturbation radius.
        #[arg(long)]
        eps: f64,
        /// linf or l2.
        #[arg(long, default_value = "linf")]
        norm: String,
        /// ibp, crown-ibp, fastlin or crown (fastlin and crown use exact intermediate bounds).
        #[arg(long, default_value = "crown")]
        method: String,
        /// Number of test points, in file order.
        #[arg(long, default_value_t = 10)]
        n: usize,
        /// Write the JSON to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Use model_best.safetensors instead of model.safetensors.
        #[arg(long)]
        best: bool,
        /// auto, cpu or cuda.
        #[arg(long, default_value = "auto")]
        device: String,
    },
    /// Evaluate a trained run: clean, PGD and certified accuracy on the first N test points.
    Eval {
        /// The run folder (written by `certlab run` or the GUI).
        run_dir: PathBuf,
        /// Perturbation radius.
        #[arg(long)]
        eps: f64,
        /// linf or l2 (default: the run's eval.norm).
        #[arg(long)]
        norm: Option<String>,
        /// Comma-separated: clean, pgd, ibp, crown-ibp, fastlin, crown
        /// (default: clean, pgd and the run's eval.bounds).
        #[arg(long, value_delimiter = ',')]
        methods: Option<Vec<String>>,
        /// PGD steps per restart (step size 2.5 eps / steps).
        #[arg(long, default_value_t = 20)]
        pgd_steps: u32,
        /// PGD restarts (the first from the clean point, the others from random points).
        #[arg(long, default_value_t = 1)]
        restarts: u32,
        /// PGD objective: ce (cross-entropy) or margin (Carlini-Wagner).
        #[arg(long, default_value = "ce")]
        pgd_loss: String,
        /// Number of test points, in file order (default: the run's eval.robust_subset; 0 = all).
        #[arg(long)]
        n: Option<usize>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Evaluate model_best.safetensors instead of model.safetensors.
        #[arg(long)]
        best: bool,
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Points per batch.
        #[arg(long, default_value_t = 256)]
        batch: i64,
    },
    /// Lipschitz constants of a trained run: per-layer and whole-network values of each
    /// estimator, with the seconds each took.
    Lipschitz {
        /// The run folder (written by `certlab run` or the GUI).
        run_dir: PathBuf,
        /// Comma-separated: power, gram, exact, product, lipsdp, empirical
        /// (default: power, gram, exact, product, empirical, and lipsdp for MLPs).
        #[arg(long, value_delimiter = ',')]
        methods: Option<Vec<String>>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Test points the empirical lower bound starts from.
        #[arg(long, default_value_t = 64)]
        n: usize,
        /// Gram iterations.
        #[arg(long, default_value_t = 8)]
        gram_iters: u32,
        /// Use model_best.safetensors instead of model.safetensors.
        #[arg(long)]
        best: bool,
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Measure training throughput (samples/s) of one epoch.
    Bench {
        /// The experiment to time (default: Fashion-MNIST MLP 2x100, batch 256).
        preset: Option<PathBuf>,
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Timed epochs (after one warm-up pass of 20 batches).
        #[arg(long, default_value_t = 1)]
        epochs: u32,
        /// Time certified-training steps instead (IBP, CROWN-IBP, Fast-Lin, CROWN; MLP 2x100
        /// and Small convnet on Fashion-MNIST, batch 256, l_inf eps 0.1).
        #[arg(long)]
        bounds: bool,
        /// With --bounds: timed steps per method (the slow exact methods on the convnet take
        /// a tenth of them).
        #[arg(long, default_value_t = 30)]
        steps: u32,
        /// With --bounds: mlp, small-conv or all.
        #[arg(long, default_value = "all")]
        arch: String,
        /// With --bounds: the methods to time, comma-separated (default: all of ibp,
        /// crown-ibp, fastlin, crown, fastlin-proj50).
        #[arg(long)]
        methods: Option<String>,
        /// With --bounds: examples per step.
        #[arg(long, default_value_t = 256)]
        batch: i64,
        /// Time UI frames instead: 5 overlaid runs of 500 epochs, every tab (no window, no GPU).
        #[arg(long)]
        ui: bool,
        /// With --ui: frames per tab.
        #[arg(long, default_value_t = 200)]
        frames: u32,
        /// Time the Lipschitz estimators instead (power and Gram at fixed iterations, exact) on
        /// a 3x3 conv 64->64 on a 32x32 input and on a 1024x1024 dense matrix.
        #[arg(long)]
        lipschitz: bool,
    },
}

pub fn main_with(cli: Cli) -> Result<i32> {
    match cli.command {
        None => crate::ui::launch(crate::ui::LaunchOptions {
            runs_dir: PathBuf::from("runs"),
            size: [1400.0, 900.0],
            ..Default::default()
        })
        .map(|_| 0),
        Some(Cmd::Gui {
            preset,
            open,
            runs_dir,
            size,
            start,
            shots,
            shot_after,
            overlay_all,
        }) => gui_cmd(
            preset,
            open,
            runs_dir,
            &size,
            start,
            &shots,
            shot_after,
            overlay_all,
        ),
        Some(Cmd::Run {
            preset,
            out,
            epochs,
            device,
        }) => run_cmd(preset, out, epochs, device),
        Some(Cmd::Runs { dir }) => runs_cmd(&dir).map(|_| 0),
        Some(Cmd::Info) => {
            info_cmd();
            Ok(0)
        }
        Some(Cmd::Bounds {
            run_dir,
            eps,
            norm,
            method,
            n,
            out,
            best,
            device,
        }) => crate::eval::bounds_cmd(&crate::eval::BoundsOptions {
            run_dir,
            eps,
            norm,
            method,
            n,
            out,
            best,
            device,
        }),
        Some(Cmd::Eval {
            run_dir,
            eps,
            norm,
            methods,
            pgd_steps,
            restarts,
            pgd_loss,
            n,
            json,
            best,
            device,
            batch,
        }) => crate::eval::eval_cmd(&crate::eval::EvalOptions {
            run_dir,
            eps,
            norm,
            methods,
            pgd_steps,
            restarts,
            pgd_loss,
            n,
            json,
            best,
            device,
            batch,
        }),
        Some(Cmd::Lipschitz {
            run_dir,
            methods,
            json,
            n,
            gram_iters,
            best,
            device,
        }) => lipschitz_cmd(&run_dir, methods, json, n, gram_iters, best, &device).map(|_| 0),
        Some(Cmd::Bench {
            lipschitz: true,
            device,
            ..
        }) => crate::bench::bench_lipschitz_cmd(&device).map(|_| 0),
        Some(Cmd::Bench {
            ui: true, frames, ..
        }) => {
            crate::ui::bench::bench_ui_cmd(frames);
            Ok(0)
        }
        Some(Cmd::Bench {
            bounds: true,
            device,
            steps,
            arch,
            methods,
            batch,
            ..
        }) => crate::bench::bench_bounds_cmd(&device, steps, &arch, methods.as_deref(), batch)
            .map(|_| 0),
        Some(Cmd::Bench {
            preset,
            device,
            epochs,
            ..
        }) => crate::bench::bench_cmd(preset, &device, epochs).map(|_| 0),
    }
}

#[allow(clippy::too_many_arguments)]
fn gui_cmd(
    preset: Option<PathBuf>,
    open: Vec<PathBuf>,
    runs_dir: PathBuf,
    size: &str,
    start: bool,
    shots: &[String],
    shot_after: usize,
    overlay_all: bool,
) -> Result<i32> {
    let parsed_size = size
        .split_once('x')
        .and_then(|(w, h)| Some([w.parse::<f32>().ok()?, h.parse::<f32>().ok()?]))
        .with_context(|| format!("--size `{size}` is not WIDTHxHEIGHT, e.g. 1400x900"))?;
    let mut plan = Vec::new();
    for s in shots {
        let (tab, file) = s
            .split_once('=')
            .with_context(|| format!("--shot `{s}` is not TAB=FILE"))?;
        let tab = crate::ui::Tab::parse(tab).with_context(|| {
            format!("--shot: unknown tab `{tab}`: expected overview, tightness, lipschitz, decision or runs")
        })?;
        plan.push((tab, PathBuf::from(file)));
    }
    let autopilot = (start || !plan.is_empty()).then(|| crate::ui::Autopilot {
        start,
        after_evals: shot_after,
        quit_after_shots: !plan.is_empty(),
        shots: plan,
        overlay_all,
        ..Default::default()
    });
    crate::ui::launch(crate::ui::LaunchOptions {
        preset,
        open,
        runs_dir,
        autopilot,
        size: parsed_size,
    })?;
    Ok(0)
}

/// `certlab lipschitz`: per-layer and whole-network Lipschitz values of a trained run.
fn lipschitz_cmd(
    run_dir: &std::path::Path,
    methods: Option<Vec<String>>,
    json: bool,
    n: usize,
    gram_iters: u32,
    best: bool,
    device: &str,
) -> Result<()> {
    use crate::lipschitz::{self, Estimator};
    if gram_iters > 30 {
        bail!("--gram-iters {gram_iters}: expected 0..=30");
    }
    let trained = crate::eval::load_trained(run_dir, device, best)?;
    let net = &trained.net;
    let estimators = match &methods {
        Some(names) => {
            let list =
                Estimator::parse_list(names).map_err(|e| anyhow::anyhow!("--methods: {e}"))?;
            if list.is_empty() {
                bail!(
                    "--methods is empty: expected a comma-separated list of {}",
                    Estimator::ALL.map(Estimator::name).join(", ")
                );
            }
            list
        }
        None => Estimator::ALL
            .into_iter()
            .filter(|e| *e != Estimator::Lipsdp || lipschitz::mlp_weights(net).is_ok())
            .collect(),
    };
    let (x, _) = trained.first_test_points(n.max(1));
    let settings = lipschitz::Settings {
        gram_iters,
        empirical_points: n.max(1) as i64,
        ..lipschitz::Settings::default()
    };
    let report = lipschitz::estimate(net, &estimators, Some(&x), &settings)?;
    if json {
        println!("{}", report.to_json());
        return Ok(());
    }
    println!(
        "run {} ({}): {}",
        run_dir.display(),
        trained.model_file,
        net.describe()
    );
    let per_layer: Vec<Estimator> = estimators
        .iter()
        .copied()
        .filter(|e| e.per_layer())
        .collect();
    if !per_layer.is_empty() {
        print!("{:<6} {:<10}", "layer", "kind");
        for e in &per_layer {
            print!(" {:>14}", e.name());
        }
        println!();
        for l in &report.layers {
            print!("{:<6} {:<10}", l.index, l.kind);
            for e in &per_layer {
                match l.values.get(e.name()) {
                    Some(v) => print!(" {v:>14.6}"),
                    None => print!(" {:>14}", "-"),
                }
            }
            println!();
        }
    }
    println!("{:<12} {:>14} {:>10}", "network", "value", "seconds");
    for e in &estimators {
        let v = report.network.get(e.name()).copied().unwrap_or(f64::NAN);
        let t = report.seconds.get(e.name()).copied().unwrap_or(f64::NAN);
        println!("{:<12} {v:>14.6} {t:>10.3}", e.name());
    }
    for note in &report.notes {
        println!("note: {note}");
    }
    Ok(())
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
    println!("device picked (auto): {}", crate::device::device_name(device));
    println!(
        "cuda available: {} ({} device(s), cudnn {})",
        tch::Cuda::is_available(),
        tch::Cuda::device_count(),
        tch::Cuda::cudnn_is_available()
    );
    println!("threads: {}", tch::get_num_threads());
}

fn run_cmd(
    preset: PathBuf,
    out: Option<PathBuf>,
    epochs: Option<u32>,
    device: Option<String>,
) -> Result<i32> {
    let mut cfg = ExperimentConfig::load(&preset)?;
    if let Some(e) = epochs {
        cfg.train.epochs = e;
    }
    if let Some(d) = &device {
        cfg.device = parse_device(d)?;
    }
    let problems = cfg.validate();
    if !problems.is_empty() {
        bail!(crate::config::ConfigError::Invalid {
            origin: "command-line overrides".into(),
            problems
        });
    }
    let dev = crate::device::pick_device(cfg.device)?;
    let target = match out {
        Some(d) => RunTarget::Dir(d),
        None => RunTarget::Under(PathBuf::from("runs")),
    };
    let mut handle = worker::spawn(cfg.clone(), target, dev, Box::new(|| {}))?;
    let cancel = handle.cancel.clone();
    // A second Ctrl-C while stopping is ignored: the run ends after the current batch.
    let _ = ctrlc::set_handler(move || cancel.store(true, Ordering::Relaxed));
    let tty = std::io::stderr().is_terminal();
    let mut total_epochs = cfg.train.epochs;
    let mut run_dir = None;
    let mut outcome = None;
    for ev in handle.events.iter() {
        match ev {
            Event::Started {
                run_dir: d,
                device,
                total_epochs: t,
                ..
            } => {
                total_epochs = t;
                eprintln!("run folder {} on {device}", d.display());
                run_dir = Some(d);
            }
            Event::Progress {
                epoch,
                epoch_fraction,
                loss,
                ..
            } => {
                if tty {
                    let done = ((epoch - 1) as f32 + epoch_fraction) / total_epochs as f32;
                    let bar = (done * 30.0).round() as usize;
                    eprint!(
                        "\r[{}{}] epoch {epoch}/{total_epochs} {:>3.0}%  loss {loss:.4}   ",
                        "#".repeat(bar),
                        " ".repeat(30 - bar.min(30)),
                        epoch_fraction * 100.0
                    );
                    let _ = std::io::stderr().flush();
                }
            }
            Event::Log { level, message } => {
                if tty {
                    eprint!("\r{}\r", " ".repeat(70));
                }
                match level {
                    Level::Info => eprintln!("{message}"),
                    Level::Warn => eprintln!("warning: {message}"),
                    Level::Error => eprintln!("error: {message}"),
                }
            }
            Event::Finished { outcome: o } => outcome = Some(o),
            Event::Metrics(_) | Event::Decision(_) | Event::Paused(_) => {}
        }
    }
    handle.join();
    match outcome {
        Some(Outcome::Completed) => {
            if let Some(d) = run_dir {
                println!("{}", d.display());
            }
            Ok(0)
        }
        Some(Outcome::Cancelled) => {
            eprintln!("stopped; metrics so far are kept");
            Ok(130)
        }
        // The error itself was printed when its log event arrived.
        Some(Outcome::Failed(_)) => Ok(1),
        None => bail!("the trainer thread ended without reporting an outcome"),
    }
}

fn fmt_acc(v: Option<f64>) -> String {
    v.map_or("-".into(), |a| format!("{:.4}", a))
}

fn runs_cmd(dir: &std::path::Path) -> Result<()> {
    let runs = run::list_runs(dir)?;
    if runs.is_empty() {
        println!("no run folders in {}", dir.display());
        return Ok(());
    }
    println!(
        "{:<40} {:<10} {:<10} {:>6} {:>9} {:>9} {:>9}  cert",
        "run", "method", "status", "epoch", "loss", "clean", "pgd"
    );
    for r in runs {
        match r {
            Ok(r) => {
                let last = r.last();
                let cert = last
                    .map(|m| {
                        m.cert_acc
                            .iter()
                            .map(|(k, v)| format!("{k}={v:.4}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                println!(
                    "{:<40} {:<10} {:<10} {:>6} {:>9} {:>9} {:>9}  {}",
                    r.name(),
                    r.config.train.method.name(),
                    r.status(),
                    last.map_or("-".into(), |m| m.epoch.to_string()),
                    last.map_or("-".into(), |m| format!("{:.4}", m.train_loss)),
                    fmt_acc(last.map(|m| m.clean_acc)),
                    fmt_acc(last.and_then(|m| m.pgd_acc)),
                    cert
                );
            }
            Err(e) => println!("(unreadable) {e}"),
        }
    }
    Ok(())
}
