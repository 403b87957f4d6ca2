//! The local backend: N points at a time, each a `certlab run` child process with its share of
//! the cores (N x threads <= cores), so runs neither fight over threads nor share a process
//! (two trainings in one process are not bit-identical; separate processes are).
//!
//! Stopping sends SIGINT to every child, which ends its run after the current batch with its
//! metrics and model kept (`cancelled`); a child whose sweep process dies (even by kill -9)
//! gets the same signal from the kernel (`PR_SET_PDEATHSIG`), so no run is left orphaned and
//! a resume finds it cancelled and runs it again.
use super::{Point, PointState, SweepError, SweepFolder};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Runs at a time.
    pub jobs: usize,
    /// Torch threads per run (0: the cores divided by `jobs`).
    pub threads: usize,
    /// The certlab binary that runs each point.
    pub exe: PathBuf,
    /// Run failed points again (crashed and cancelled ones always are).
    pub retry_failed: bool,
}

impl LocalOptions {
    pub fn threads_per_run(&self) -> usize {
        if self.threads > 0 {
            return self.threads;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / self.jobs.max(1)).max(1)
    }
}

/// Counts for the progress line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SweepProgress {
    pub total: usize,
    pub done: usize,
    pub running: usize,
    pub failed: usize,
    /// Skipped because an earlier invocation finished them.
    pub skipped: usize,
    /// Seconds left, from the mean wall time of the runs finished so far.
    pub eta_secs: Option<f64>,
}

impl SweepProgress {
    pub fn line(&self) -> String {
        let eta = self.eta_secs.map_or("ETA -".into(), |s| {
            format!("ETA {}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
        });
        format!(
            "{}/{} done ({} from before), {} running, {} failed, {eta}",
            self.done, self.total, self.skipped, self.running, self.failed
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum SweepEvent {
    Started {
        id: String,
    },
    Finished {
        id: String,
        state: PointState,
        wall_secs: f64,
    },
    Progress(SweepProgress),
}

struct Running {
    id: String,
    child: Child,
    started: Instant,
}

/// Runs every point of `folder` that needs it, `opts.jobs` at a time, until all are done or
/// `cancel` is set. Returns the final counts.
pub fn run_local(
    folder: &SweepFolder,
    opts: &LocalOptions,
    cancel: Arc<AtomicBool>,
    mut on_event: impl FnMut(SweepEvent),
) -> Result<SweepProgress, SweepError> {
    let _lock = folder.lock()?;
    let mut progress = SweepProgress {
        total: folder.points.len(),
        ..Default::default()
    };
    let mut queue: VecDeque<&Point> = VecDeque::new();
    for p in &folder.points {
        match folder.state(p) {
            s if s.needs_run(opts.retry_failed) => queue.push_back(p),
            PointState::Done => progress.skipped += 1,
            _ => progress.failed += 1,
        }
    }
    progress.done = progress.skipped;
    let logs = folder.dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| SweepError::io(&logs, e))?;
    let threads = opts.threads_per_run();
    let mut running: Vec<Running> = Vec::new();
    let mut walls: Vec<f64> = Vec::new();
    let mut stopping = false;
    on_event(SweepEvent::Progress(progress.clone()));
    loop {
        if cancel.load(Ordering::Relaxed) && !stopping {
            stopping = true;
            for r in &running {
                // SAFETY: signalling a child this process started and has not reaped.
                unsafe { libc::kill(r.child.id() as i32, libc::SIGINT) };
            }
        }
        while !stopping && running.len() < opts.jobs.max(1) {
            let Some(p) = queue.pop_front() else { break };
            folder.clear_for_rerun(p)?;
            let child = spawn_point(folder, p, opts, threads, &logs)?;
            running.push(Running {
                id: p.id.clone(),
                child,
                started: Instant::now(),
            });
            on_event(SweepEvent::Started { id: p.id.clone() });
        }
        let mut i = 0;
        while i < running.len() {
            let finished = running[i]
                .child
                .try_wait()
                .map_err(|e| SweepError::Folder(format!("waiting for a run: {e}")))?;
            if finished.is_none() {
                i += 1;
                continue;
            }
            let r = running.swap_remove(i);
            let wall_secs = r.started.elapsed().as_secs_f64();
            let state = folder
                .point(&r.id)
                .map_or(PointState::Incomplete, |p| folder.state(p));
            match state {
                PointState::Done => {
                    progress.done += 1;
                    walls.push(wall_secs);
                }
                PointState::Cancelled => {}
                _ => progress.failed += 1,
            }
            on_event(SweepEvent::Finished {
                id: r.id,
                state,
                wall_secs,
            });
        }
        progress.running = running.len();
        progress.eta_secs = eta(&walls, queue.len() + running.len(), opts.jobs);
        on_event(SweepEvent::Progress(progress.clone()));
        if running.is_empty() && (queue.is_empty() || stopping) {
            return Ok(progress);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn eta(walls: &[f64], left: usize, jobs: usize) -> Option<f64> {
    if walls.is_empty() {
        return None;
    }
    let mean = walls.iter().sum::<f64>() / walls.len() as f64;
    Some(mean * (left as f64 / jobs.max(1) as f64).ceil())
}

fn spawn_point(
    folder: &SweepFolder,
    p: &Point,
    opts: &LocalOptions,
    threads: usize,
    logs: &std::path::Path,
) -> Result<Child, SweepError> {
    use std::os::unix::process::CommandExt;
    let log_path = logs.join(format!("{}.txt", p.id));
    let log = std::fs::File::create(&log_path).map_err(|e| SweepError::io(&log_path, e))?;
    let mut cmd = Command::new(&opts.exe);
    cmd.arg("run")
        .arg(folder.config_path(p))
        .arg("--out")
        .arg(folder.run_dir(p))
        .arg("--threads")
        .arg(threads.to_string())
        .env("OMP_NUM_THREADS", threads.to_string())
        .env("MKL_NUM_THREADS", threads.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: prctl and setpgid are async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // Its own process group: the terminal's Ctrl-C reaches the sweep, which stops the
            // children itself (once, cleanly) instead of racing it.
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT);
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| SweepError::Folder(format!("starting {}: {e}", opts.exe.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_split_the_cores_and_eta_counts_waves() {
        let o = |jobs, threads| LocalOptions {
            jobs,
            threads,
            exe: PathBuf::new(),
            retry_failed: false,
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert!(o(2, 0).threads_per_run() * 2 <= cores.max(2));
        assert_eq!(o(1, 0).threads_per_run(), cores);
        assert_eq!(o(4, 3).threads_per_run(), 3);
        assert_eq!(eta(&[], 5, 2), None);
        // 5 left at 2 at a time is 3 waves of the mean 10 s.
        assert_eq!(eta(&[8.0, 12.0], 5, 2), Some(30.0));
        let p = SweepProgress {
            total: 12,
            done: 5,
            running: 2,
            failed: 1,
            skipped: 2,
            eta_secs: Some(125.0),
        };
        assert_eq!(
            p.line(),
            "5/12 done (2 from before), 2 running, 1 failed, ETA 2m05s"
        );
    }
}
