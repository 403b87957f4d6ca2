//! `certlab run`: train an experiment headless.
use super::parse_device;
use crate::config::ExperimentConfig;
use crate::protocol::{Event, Level, Outcome};
use crate::worker::{self, RunTarget};
use anyhow::{bail, Result};
use clap::Args;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;

// The flags of `certlab run`.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct RunArgs {
    /// The experiment (a TOML preset).
    pub preset: PathBuf,
    /// The run folder to write (default: runs/<name>-<timestamp>); must not hold a run.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override the number of epochs.
    #[arg(long)]
    pub epochs: Option<u32>,
    /// Override the device: auto, cpu or cuda.
    #[arg(long)]
    pub device: Option<String>,
    /// Validate and print the memory estimate; create nothing (exit 1 if it cannot fit).
    #[arg(long)]
    pub dry_run: bool,
    /// Torch threads (default: one per core); a sweep gives each of its runs a share.
    #[arg(long)]
    pub threads: Option<usize>,
}

impl RunArgs {
    /// Trains the preset on a worker thread, printing progress to stderr; the run folder
    /// on stdout when it completes. Exit code 130 when stopped by Ctrl-C.
    pub fn run(self) -> Result<i32> {
        let RunArgs {
            preset,
            out,
            epochs,
            device,
            dry_run,
            threads,
        } = self;
        super::set_threads(threads)?;
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
        if dry_run {
            return Ok(dry_run_report(&cfg));
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
}

/// `--dry-run`: the estimate's parts, its total and the available memory on stdout; the
/// refusal on stderr. Exit code 0 when it fits, 1 when not.
fn dry_run_report(cfg: &ExperimentConfig) -> i32 {
    use crate::train::memory::{available_memory, check, estimate, human};
    let est = match estimate(cfg) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    for (part, bytes) in &est.parts {
        println!("{part:<16} {:>10}", human(*bytes));
    }
    println!("{:<16} {:>10}", "total", human(est.total_bytes));
    let Some(available) = available_memory() else {
        println!("available memory unknown");
        return 0;
    };
    println!("{:<16} {:>10}", "available", human(available));
    match check(cfg, available) {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("error: {}", e.message);
            1
        }
    }
}
