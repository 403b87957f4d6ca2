//! `certlab sweep`: run a sweep file locally or on Slurm; `sweep status`, `sweep report`.
use crate::sweep::{self, LocalOptions, PointState, SlurmArgs, SweepEvent, SweepFolder, SweepSpec};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Local,
    Slurm,
}

// The flags of `certlab sweep`.
#[derive(Args, Debug, Clone, PartialEq)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct SweepArgs {
    #[command(subcommand)]
    pub action: Option<SweepCmd>,
    /// The sweep file (`sweeps/*.toml`).
    #[arg(required = true)]
    pub file: Option<PathBuf>,
    /// Where the sweep folder `<name>/` goes (a shared file system for Slurm).
    #[arg(long, default_value = "runs/sweeps")]
    pub out: PathBuf,
    /// Runs at a time (local backend).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Torch threads per run (default: the cores divided by --jobs).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    #[arg(long, value_enum, default_value_t = Backend::Local)]
    pub backend: Backend,
    /// Print the points (and each one's memory estimate); start nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run failed points again too (crashed and cancelled ones always are).
    #[arg(long)]
    pub retry_failed: bool,
    /// Slurm: submit again what did not finish (needed once a sweep was submitted).
    #[arg(long)]
    pub resume: bool,
    /// Slurm: the partition (else `[slurm] partition`).
    #[arg(long)]
    pub partition: Option<String>,
    /// Slurm: the time limit per task, e.g. 01:00:00 (else `[slurm] time`).
    #[arg(long)]
    pub time: Option<String>,
    /// Slurm: the account (else `[slurm] account`).
    #[arg(long)]
    pub account: Option<String>,
    /// Slurm: CPUs per task (else `[slurm] cpus_per_task`, else 2).
    #[arg(long)]
    pub cpus_per_task: Option<u32>,
}

#[derive(Subcommand, Debug, Clone, PartialEq)]
pub enum SweepCmd {
    /// Each point's state from its run folder and, for Slurm sweeps, from squeue / sacct.
    Status { dir: PathBuf },
    /// Final test metrics per point; mean, std and 95% interval per group; the Pareto front.
    Report(ReportArgs),
    /// Run one point of a sweep folder (what a Slurm array task runs).
    #[command(hide = true)]
    RunPoint {
        dir: PathBuf,
        id: String,
        #[arg(long)]
        threads: Option<usize>,
    },
}

#[derive(Args, Debug, Clone, PartialEq)]
pub struct ReportArgs {
    pub dir: PathBuf,
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    #[arg(long)]
    pub csv: bool,
    /// The certified metric of the Pareto front: `best` or a bound method (`ibp`, `crown`...).
    #[arg(long, default_value = "best")]
    pub cert: String,
}

impl SweepArgs {
    pub fn run(self) -> Result<i32> {
        match self.action.clone() {
            Some(SweepCmd::Status { dir }) => status(&dir),
            Some(SweepCmd::Report(r)) => report(&r),
            Some(SweepCmd::RunPoint { dir, id, threads }) => run_point(&dir, &id, threads),
            None => self.start(),
        }
    }

    fn start(self) -> Result<i32> {
        let Some(file) = &self.file else {
            bail!("give a sweep file: certlab sweep SWEEP.toml");
        };
        if self.jobs == 0 {
            bail!("--jobs 0: give at least 1");
        }
        if self.dry_run {
            return dry_run(file, self.jobs);
        }
        let spec = SweepSpec::load(file)?;
        if self.backend == Backend::Local {
            // Every point must fit before the folder is written or anything starts.
            let points = spec.expand(file.parent().unwrap_or(Path::new(".")))?;
            check_memory(&points, self.jobs)?;
        }
        let folder = SweepFolder::create_or_open(file, &self.out)?;
        eprintln!(
            "sweep {} in {}: {} points",
            spec.name,
            folder.dir.display(),
            folder.points.len()
        );
        match self.backend {
            Backend::Local => self.run_local(&folder),
            Backend::Slurm => self.run_slurm(&folder, &spec),
        }
    }

    fn run_local(&self, folder: &SweepFolder) -> Result<i32> {
        let opts = LocalOptions {
            jobs: self.jobs,
            threads: self.threads,
            exe: std::env::current_exe().context("locating the certlab binary")?,
            retry_failed: self.retry_failed,
        };
        eprintln!(
            "{} at a time, {} torch threads each; Ctrl-C stops every run (the same command resumes)",
            opts.jobs,
            opts.threads_per_run()
        );
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = cancel.clone();
        let _ = ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed));
        let tty = std::io::stderr().is_terminal();
        let mut last_line = String::new();
        let progress = sweep::run_local(folder, &opts, cancel.clone(), |ev| match ev {
            SweepEvent::Started { id } => {
                clear(tty);
                eprintln!("{id} started");
            }
            SweepEvent::Finished {
                id,
                state,
                wall_secs,
            } => {
                clear(tty);
                let why = match &state {
                    PointState::Failed(e) => format!(": {e}"),
                    _ => String::new(),
                };
                eprintln!("{id} {} after {wall_secs:.1} s{why}", state.label());
            }
            SweepEvent::Progress(p) => {
                let line = p.line();
                if tty {
                    eprint!("\r{line}   ");
                } else if line != last_line {
                    eprintln!("{line}");
                }
                last_line = line;
            }
        })?;
        clear(tty);
        eprintln!("{}", progress.line());
        if cancel.load(Ordering::Relaxed) {
            eprintln!("stopped; run the same command again to resume");
            return Ok(130);
        }
        println!("{}", folder.dir.display());
        Ok(if progress.failed > 0 { 1 } else { 0 })
    }

    fn run_slurm(&self, folder: &SweepFolder, spec: &SweepSpec) -> Result<i32> {
        let submitted_before = folder.dir.join("slurm/jobs.txt").exists();
        if submitted_before && !self.resume {
            bail!(
                "{} was submitted before; pass --resume to submit what did not finish, or see \
                 `certlab sweep status {}`",
                folder.dir.display(),
                folder.dir.display()
            );
        }
        let exe = std::env::current_exe().context("locating the certlab binary")?;
        let args = SlurmArgs {
            partition: self.partition.clone().or(spec.slurm.partition.clone()),
            time: self.time.clone().or(spec.slurm.time.clone()),
            account: self.account.clone().or(spec.slurm.account.clone()),
            cpus_per_task: self.cpus_per_task.or(spec.slurm.cpus_per_task).unwrap_or(2),
            exe,
        };
        match sweep::submit(folder, &args, self.retry_failed)? {
            Some(job) => {
                eprintln!(
                    "submitted job array {job}; follow it with `certlab sweep status {}`",
                    folder.dir.display()
                );
                println!("{job}");
            }
            None => eprintln!("nothing to submit: every point is done or queued"),
        }
        Ok(0)
    }
}

fn clear(tty: bool) {
    if tty {
        eprint!("\r{}\r", " ".repeat(90));
    }
}

/// Refuses, before any point starts, a point that cannot fit in its share of the memory.
fn check_memory(points: &[sweep::Point], jobs: usize) -> Result<()> {
    use crate::train::memory::{available_memory, check};
    let Some(available) = available_memory() else {
        return Ok(());
    };
    let share = available / jobs.max(1) as u64;
    for p in points {
        if let Err(e) = check(&p.config, share) {
            bail!(
                "point {} cannot fit with --jobs {jobs} (nothing was started): `{}`: {}",
                p.id,
                e.field,
                e.message
            );
        }
    }
    Ok(())
}

fn dry_run(file: &Path, jobs: usize) -> Result<i32> {
    use crate::train::memory::{estimate, human};
    let spec = SweepSpec::load(file)?;
    let spec_dir = file.parent().unwrap_or(Path::new("."));
    let points = spec.expand(spec_dir)?;
    println!(
        "sweep {}: {} points ({:?} mode)",
        spec.name,
        points.len(),
        spec.mode
    );
    for p in &points {
        let overrides = crate::sweep::settings_label(&p.setting, false);
        let mem = estimate(&p.config).map_or("?".into(), |e| human(e.total_bytes));
        println!(
            "{}  seed {}  {}  memory about {mem}",
            p.id, p.seed, overrides
        );
    }
    match check_memory(&points, jobs) {
        Ok(()) => Ok(0),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(1)
        }
    }
}

fn status(dir: &Path) -> Result<i32> {
    let folder = SweepFolder::open(dir)?;
    let slurm = sweep::slurm_status(&folder)?;
    let mut counts = std::collections::BTreeMap::new();
    println!("{:<12} {:<20} {:<12} settings", "point", "folder", "slurm");
    for p in &folder.points {
        let state = folder.state(p);
        *counts.entry(state.label()).or_insert(0) += 1;
        let settings = crate::sweep::settings_label(&p.setting, false);
        println!(
            "{:<12} {:<20} {:<12} {settings} seed={}",
            p.id,
            state.label(),
            slurm.get(&p.id).map_or("-", String::as_str),
            p.seed
        );
    }
    let summary: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!("{} points: {}", folder.points.len(), summary.join(", "));
    Ok(0)
}

fn report(args: &ReportArgs) -> Result<i32> {
    let folder = SweepFolder::open(&args.dir)?;
    let metric = if args.cert == "best" {
        sweep::CERT_BEST.to_string()
    } else {
        format!("cert_acc.{}", args.cert)
    };
    let rep = sweep::report(&folder, &metric)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    } else if args.csv {
        print!("{}", rep.to_csv());
    } else {
        print!("{}", rep.to_table());
    }
    Ok(0)
}

fn run_point(dir: &Path, id: &str, threads: Option<usize>) -> Result<i32> {
    let folder = SweepFolder::open(dir)?;
    let Some(p) = folder.point(id) else {
        bail!("{} has no point {id}", dir.display());
    };
    if folder.state(p) == PointState::Done {
        eprintln!("{id} is done already");
        return Ok(0);
    }
    folder.clear_for_rerun(p)?;
    super::run::RunArgs {
        preset: folder.config_path(p),
        out: Some(folder.run_dir(p)),
        epochs: None,
        device: None,
        dry_run: false,
        threads,
    }
    .run()
}
