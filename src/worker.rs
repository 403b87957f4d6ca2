//! The background training thread: `Command`s in, `Event`s out, panics captured.
//!
//! The worker owns everything libtorch: the `VarStore` is created inside the thread and only
//! plain data crosses the channels. Its last event is always `Finished`; a channel that
//! disconnects without one means the thread died, which callers show as a crash. A failure,
//! error or panic, ends as one sentence naming what was being done (see `failure`); libtorch's
//! full text goes to the run's `log.txt` only.
use crate::config::ExperimentConfig;
use crate::failure;
pub use crate::protocol::{Command, Event, Level, Outcome};
use crate::run::{RunWriter, Summary};
use crate::train::{self, Control};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

/// Where the run folder goes.
#[derive(Debug, Clone, PartialEq)]
pub enum RunTarget {
    /// Exactly this folder (must not hold a run yet).
    Dir(PathBuf),
    /// A new `<name>-<timestamp>` folder inside this one.
    Under(PathBuf),
}

/// The caller's side of a worker.
pub struct WorkerHandle {
    pub commands: Sender<Command>,
    pub events: Receiver<Event>,
    /// Set to stop the run from outside the channel (Ctrl-C).
    pub cancel: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    /// A handle over channels someone else drives (tests of the UI).
    pub fn from_channels(commands: Sender<Command>, events: Receiver<Event>) -> Self {
        WorkerHandle {
            commands,
            events,
            cancel: Arc::new(AtomicBool::new(false)),
            thread: None,
        }
    }

    pub fn send(&self, cmd: Command) {
        // A finished worker no longer listens; that is not an error for the caller.
        let _ = self.commands.send(cmd);
    }

    /// Waits for the thread to end (after `Finished` was received or the channel closed).
    pub fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts training `cfg` on a thread named `trainer`. `wake` is called after every event
/// (the GUI passes `ctx.request_repaint`), so the worker never depends on the UI toolkit.
pub fn spawn(
    cfg: ExperimentConfig,
    target: RunTarget,
    device: tch::Device,
    wake: Box<dyn Fn() + Send>,
) -> std::io::Result<WorkerHandle> {
    // Refused before the run folder exists, against the memory of the device it will use.
    if let Err(e) = train::memory::check_on(&cfg, device) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::OutOfMemory,
            e.message,
        ));
    }
    spawn_job(
        cfg,
        target,
        device,
        wake,
        |cfg, device, run, control, emit| {
            let mut prep = train::prepare(cfg, device)?;
            train::train(cfg, &mut prep, run, control, emit)
        },
    )
}

/// Picks the device the config asks for, then spawns; for callers that must not touch tch.
pub fn spawn_for(
    cfg: ExperimentConfig,
    target: RunTarget,
    wake: Box<dyn Fn() + Send>,
) -> Result<WorkerHandle, String> {
    let device = crate::device::pick_device(cfg.device).map_err(|e| e.to_string())?;
    spawn(cfg, target, device, wake).map_err(|e| match e.kind() {
        std::io::ErrorKind::OutOfMemory => e.to_string(),
        _ => format!("cannot start the trainer thread: {e}"),
    })
}

/// The memory the run of `cfg` would need against this machine's available memory, as a line
/// ("Memory: about 1.2 GB (20.3 GB available)"), or the refusal at the key that drives it.
pub fn memory_check(cfg: &ExperimentConfig) -> Result<String, crate::config::FieldError> {
    use train::memory::{estimate, human};
    match train::memory::check_here(cfg)? {
        Some((est, available)) => Ok(format!(
            "Memory: {} ({} available)",
            est.describe(),
            human(available)
        )),
        None => estimate(cfg)
            .map(|e| format!("Memory: {}", e.describe()))
            .map_err(|message| crate::config::FieldError {
                field: "model".into(),
                message,
            }),
    }
}

/// Runs `job` on the trainer thread with the worker's run folder, panic capture and summary.
/// `spawn` uses it with the training loop; tests use it to inject failures.
pub fn spawn_job(
    cfg: ExperimentConfig,
    target: RunTarget,
    device: tch::Device,
    wake: Box<dyn Fn() + Send>,
    job: impl FnOnce(
            &ExperimentConfig,
            tch::Device,
            &mut RunWriter,
            &Control,
            &mut dyn FnMut(Event),
        ) -> Result<Outcome, train::TrainError>
        + Send
        + 'static,
) -> std::io::Result<WorkerHandle> {
    let (cmd_tx, cmd_rx) = bounded::<Command>(64);
    let (ev_tx, ev_rx) = bounded::<Event>(4096);
    let cancel = Arc::new(AtomicBool::new(false));
    let control = Control {
        commands: cmd_rx,
        cancel: cancel.clone(),
    };
    let thread = std::thread::Builder::new()
        .name("trainer".into())
        .spawn(move || {
            let mut emit = |e: Event| {
                let _ = ev_tx.send(e);
                wake();
            };
            let outcome = run_captured(&cfg, &target, device, &control, &mut emit, job);
            emit(Event::Finished { outcome });
        })?;
    Ok(WorkerHandle {
        commands: cmd_tx,
        events: ev_rx,
        cancel,
        thread: Some(thread),
    })
}

/// Runs one experiment, turning errors and panics into an outcome and writing the summary.
fn run_captured(
    cfg: &ExperimentConfig,
    target: &RunTarget,
    device: tch::Device,
    control: &Control,
    emit: &mut dyn FnMut(Event),
    job: impl FnOnce(
        &ExperimentConfig,
        tch::Device,
        &mut RunWriter,
        &Control,
        &mut dyn FnMut(Event),
    ) -> Result<Outcome, train::TrainError>,
) -> Outcome {
    let started = Instant::now();
    let writer = match target {
        RunTarget::Dir(d) => RunWriter::create(d, cfg),
        RunTarget::Under(base) => RunWriter::create_in(base, cfg),
    };
    let mut run = match writer {
        Ok(w) => w,
        Err(e) => {
            let message = format!("cannot create the run folder: {e}");
            emit(Event::Log {
                level: Level::Error,
                message: message.clone(),
            });
            return Outcome::Failed(message);
        }
    };
    // Until the job says what it does, a failure is named by this.
    failure::set_phase("starting the run");
    let result = failure::catch(|| job(cfg, device, &mut run, control, emit));
    // libtorch's full text (native frames) goes to log.txt only; the outcome is one sentence.
    let outcome = match result {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            if let Some(details) = e.details() {
                run.log(&format!("libtorch reported: {details}"));
            }
            Outcome::Failed(e.to_string())
        }
        Err(panic) => {
            run.log(&format!("the trainer panicked: {}", panic.details));
            Outcome::Failed(panic.sentence)
        }
    };
    let name = outcome.name();
    let error = match &outcome {
        Outcome::Failed(e) => Some(e.clone()),
        _ => None,
    };
    if let Some(e) = &error {
        run.log(&format!("error: {e}"));
        emit(Event::Log {
            level: Level::Error,
            message: e.clone(),
        });
    }
    run.log(&format!("finished: {name}"));
    let _ = run.write_summary(&Summary {
        outcome: name.into(),
        error,
        elapsed_s: started.elapsed().as_secs_f64(),
        device: crate::device::device_name(device),
    });
    outcome
}
