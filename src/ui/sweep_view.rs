//! A sweep folder as the Sweep tab sees it: its points with their states and progress, its
//! report, and, while it runs, the local backend on a thread of its own (each point a child
//! `certlab run` process). The window polls it once a frame; it never blocks.
use crate::sweep::{
    self, LocalOptions, PointState, SweepEvent, SweepFolder, SweepProgress, SweepReport,
};
use crossbeam_channel::{Receiver, TryRecvError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

struct Job {
    cancel: Arc<AtomicBool>,
    events: Receiver<SweepEvent>,
    thread: Option<JoinHandle<Result<SweepProgress, String>>>,
}

pub struct SweepView {
    pub folder: SweepFolder,
    /// Per point, in the folder's order.
    pub states: Vec<PointState>,
    /// Per point: the fraction of its epochs done (1 when finished).
    pub progress: Vec<f32>,
    pub counts: Option<SweepProgress>,
    pub report: Option<SweepReport>,
    /// The certified metric the report's Pareto front uses.
    pub cert_metric: String,
    /// Why the last start or read failed.
    pub error: Option<String>,
    job: Option<Job>,
    last_poll: Instant,
}

/// How often the running points' folders are read for their progress.
const POLL_EVERY: Duration = Duration::from_millis(800);

impl SweepView {
    pub fn new(folder: SweepFolder) -> Self {
        let n = folder.points.len();
        let mut v = SweepView {
            folder,
            states: vec![PointState::Pending; n],
            progress: vec![0.0; n],
            counts: None,
            report: None,
            cert_metric: sweep::CERT_BEST.into(),
            error: None,
            job: None,
            last_poll: Instant::now(),
        };
        v.reload();
        v
    }

    pub fn open(dir: &Path) -> Result<Self, String> {
        SweepFolder::open(dir)
            .map(Self::new)
            .map_err(|e| e.to_string())
    }

    pub fn dir(&self) -> &Path {
        &self.folder.dir
    }

    pub fn is_running(&self) -> bool {
        self.job.is_some()
    }

    /// Runs the points that need it, `opts.jobs` at a time; `wake` repaints the window.
    pub fn start(&mut self, opts: LocalOptions, wake: Box<dyn Fn() + Send>) {
        if self.job.is_some() {
            return;
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let cancel = Arc::new(AtomicBool::new(false));
        let folder = self.folder.clone();
        let flag = cancel.clone();
        let thread = std::thread::Builder::new()
            .name("sweep".into())
            .spawn(move || {
                let result = sweep::run_local(&folder, &opts, flag, |ev| {
                    let _ = tx.send(ev);
                    wake();
                });
                wake();
                result.map_err(|e| e.to_string())
            });
        match thread {
            Ok(t) => {
                self.error = None;
                self.job = Some(Job {
                    cancel,
                    events: rx,
                    thread: Some(t),
                })
            }
            Err(e) => self.error = Some(format!("cannot start the sweep thread: {e}")),
        }
    }

    /// Stops every running point after its current batch (they keep their folders; Start
    /// resumes).
    pub fn stop(&self) {
        if let Some(j) = &self.job {
            j.cancel.store(true, Ordering::Relaxed);
        }
    }

    /// Drains the runner's events and, now and then, reads the running points' progress.
    pub fn poll(&mut self) {
        let mut finished_any = false;
        let mut ended = false;
        let events: Vec<SweepEvent> = match &self.job {
            Some(job) => {
                let mut got = Vec::new();
                loop {
                    match job.events.try_recv() {
                        Ok(ev) => got.push(ev),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            ended = true;
                            break;
                        }
                    }
                }
                got
            }
            None => Vec::new(),
        };
        {
            for ev in events {
                match ev {
                    SweepEvent::Progress(p) => self.counts = Some(p),
                    SweepEvent::Started { id } => {
                        if let Some(i) = self.index(&id) {
                            self.states[i] = PointState::Incomplete;
                            self.progress[i] = 0.0;
                        }
                    }
                    SweepEvent::Finished { id, state, .. } => {
                        if let Some(i) = self.index(&id) {
                            self.progress[i] = if state == PointState::Done {
                                1.0
                            } else {
                                self.progress[i]
                            };
                            self.states[i] = state;
                        }
                        finished_any = true;
                    }
                }
            }
        }
        if ended {
            if let Some(mut job) = self.job.take() {
                if let Some(Ok(Err(e))) = job.thread.take().map(|t| t.join()) {
                    self.error = Some(e);
                }
            }
            self.reload();
            return;
        }
        if finished_any {
            self.refresh_report();
        }
        if self.job.is_some() && self.last_poll.elapsed() > POLL_EVERY {
            self.last_poll = Instant::now();
            self.read_progress();
        }
    }

    fn index(&self, id: &str) -> Option<usize> {
        self.folder.points.iter().position(|p| p.id == id)
    }

    /// Reads every point's state and progress from its folder, and the report.
    pub fn reload(&mut self) {
        for (i, p) in self.folder.points.iter().enumerate() {
            self.states[i] = self.folder.state(p);
        }
        self.read_progress();
        self.refresh_report();
    }

    fn read_progress(&mut self) {
        for (i, p) in self.folder.points.iter().enumerate() {
            self.progress[i] = match self.states[i] {
                PointState::Done => 1.0,
                PointState::Pending => 0.0,
                _ => {
                    epochs_done(&self.folder.run_dir(p)) as f32
                        / p.config.train.epochs.max(1) as f32
                }
            };
        }
    }

    pub fn refresh_report(&mut self) {
        match sweep::report(&self.folder, &self.cert_metric) {
            Ok(r) => self.report = Some(r),
            Err(e) => self.error = Some(e.to_string()),
        }
    }

    /// The run folders of a group's finished points (what clicking the group opens).
    pub fn group_runs(&self, setting_index: usize) -> Vec<PathBuf> {
        self.folder
            .points
            .iter()
            .zip(&self.states)
            .filter(|(p, s)| p.setting_index == setting_index && **s == PointState::Done)
            .map(|(p, _)| self.folder.run_dir(p))
            .collect()
    }

    /// The final metrics of each point, by id (from the report).
    pub fn point_metrics(&self) -> BTreeMap<&str, &BTreeMap<String, f64>> {
        self.report
            .iter()
            .flat_map(|r| r.points.iter().map(|p| (p.id.as_str(), &p.metrics)))
            .collect()
    }
}

/// The last evaluated epoch in a run folder's metrics (final test records aside).
fn epochs_done(dir: &Path) -> u32 {
    let text = std::fs::read_to_string(dir.join(crate::run::METRICS_FILE)).unwrap_or_default();
    text.lines()
        .rev()
        .filter(|l| !l.contains("\"model\":"))
        .find_map(|l| serde_json::from_str::<crate::metrics::EvalRecord>(l).ok())
        .map_or(0, |r| r.epoch)
}

impl Drop for SweepView {
    /// Closing the window stops the runs cleanly (their folders are kept; Start resumes).
    fn drop(&mut self) {
        if let Some(mut job) = self.job.take() {
            job.cancel.store(true, Ordering::Relaxed);
            if let Some(t) = job.thread.take() {
                let _ = t.join();
            }
        }
    }
}
