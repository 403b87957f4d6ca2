//! The worker's stop, NaN and panic paths: each ends with `Finished`, metrics so far kept.
use certlab::config::ExperimentConfig;
use certlab::run::{load_run, MODEL_FILE};
use certlab::train::{self, TrainError};
use certlab::worker::{self, Command, Event, Outcome, RunTarget};
use std::time::Duration;
use tch::Device;

fn toy_cfg(epochs: u32) -> ExperimentConfig {
    let mut cfg = ExperimentConfig::default_experiment();
    cfg.train.epochs = epochs;
    cfg.dataset.toy_points = 200;
    cfg
}

/// Collects events until `Finished` (or fails after a generous timeout).
fn drain(h: &worker::WorkerHandle, mut on: impl FnMut(&Event)) -> (Vec<Event>, Outcome) {
    let mut events = Vec::new();
    loop {
        let ev = h
            .events
            .recv_timeout(Duration::from_secs(120))
            .expect("worker must end with Finished, not hang or vanish");
        on(&ev);
        if let Event::Finished { outcome } = &ev {
            let o = outcome.clone();
            events.push(ev);
            return (events, o);
        }
        events.push(ev);
    }
}

#[test]
fn stop_ends_cleanly_and_keeps_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let mut h = worker::spawn(
        toy_cfg(10_000),
        RunTarget::Dir(run_dir.clone()),
        Device::Cpu,
        Box::new(|| {}),
    )
    .unwrap();
    let mut metrics_seen = 0;
    let (events, outcome) = drain(&h, |ev| {
        if let Event::Metrics(_) = ev {
            metrics_seen += 1;
            if metrics_seen == 2 {
                h.send(Command::Stop);
            }
        }
    });
    h.join();
    assert_eq!(outcome, Outcome::Cancelled);
    assert!(
        matches!(events[0], Event::Started { .. }),
        "first event is Started"
    );
    let run = load_run(&run_dir).unwrap();
    assert!(
        run.metrics.len() >= 2,
        "metrics so far are kept: {}",
        run.metrics.len()
    );
    assert!(run.metrics.len() < 10_000);
    assert_eq!(run.status(), "cancelled");
    assert!(run_dir.join(MODEL_FILE).exists());
}

#[test]
fn pause_holds_the_run_until_resume() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = worker::spawn(
        toy_cfg(10_000),
        RunTarget::Dir(dir.path().join("r")),
        Device::Cpu,
        Box::new(|| {}),
    )
    .unwrap();
    // Wait for the first metrics, then pause.
    loop {
        if let Event::Metrics(_) = h.events.recv_timeout(Duration::from_secs(60)).unwrap() {
            break;
        }
    }
    h.send(Command::Pause);
    loop {
        if let Event::Paused(true) = h.events.recv_timeout(Duration::from_secs(60)).unwrap() {
            break;
        }
    }
    // While paused, no training progress arrives.
    std::thread::sleep(Duration::from_millis(300));
    let during: Vec<Event> = h.events.try_iter().collect();
    assert!(
        !during
            .iter()
            .any(|e| matches!(e, Event::Metrics(_) | Event::Progress { .. })),
        "progress while paused: {during:?}"
    );
    h.send(Command::Resume);
    let mut resumed = false;
    let mut progressed = false;
    while !(resumed && progressed) {
        match h.events.recv_timeout(Duration::from_secs(60)).unwrap() {
            Event::Paused(false) => resumed = true,
            Event::Progress { .. } | Event::Metrics(_) if resumed => progressed = true,
            _ => {}
        }
    }
    h.send(Command::Stop);
    let (_, outcome) = drain(&h, |_| {});
    h.join();
    assert_eq!(outcome, Outcome::Cancelled);
}

#[test]
fn nan_loss_stops_with_a_clear_error_and_keeps_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let cfg = toy_cfg(2);
    let mut h = worker::spawn_job(
        cfg,
        RunTarget::Dir(run_dir.clone()),
        Device::Cpu,
        Box::new(|| {}),
        |cfg, device, run, control, emit| {
            let mut prep = train::prepare(cfg, device)?;
            // Two good epochs first: their metrics must survive the failure.
            train::train(cfg, &mut prep, run, control, emit)?;
            let mut all_nan = prep.data.train_x.copy();
            let _ = all_nan.fill_(f64::NAN);
            prep.data.train_x = all_nan;
            train::train(cfg, &mut prep, run, control, emit)
        },
    )
    .unwrap();
    let (events, outcome) = drain(&h, |_| {});
    h.join();
    let Outcome::Failed(msg) = outcome else {
        panic!("expected Failed, got {outcome:?}")
    };
    assert!(msg.contains("diverged") && msg.contains("NaN"), "{msg}");
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Log { message, .. } if message.contains("diverged"))));
    let run = load_run(&run_dir).unwrap();
    let epochs = run.metrics.iter().filter(|r| !r.is_final()).count();
    assert_eq!(epochs, 2, "metrics of the good epochs are kept");
    assert_eq!(run.status(), "failed");
    assert!(run.summary.unwrap().error.unwrap().contains("diverged"));
}

#[test]
fn panic_in_the_worker_becomes_a_failed_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let mut h = worker::spawn_job(
        toy_cfg(1),
        RunTarget::Dir(run_dir.clone()),
        Device::Cpu,
        Box::new(|| {}),
        |_, _, _, _, _| -> Result<Outcome, TrainError> {
            // A libtorch error surfaces as a panic in tch's plain ops.
            let a = tch::Tensor::zeros([2, 3], (tch::Kind::Float, Device::Cpu));
            let b = tch::Tensor::zeros([5, 7], (tch::Kind::Float, Device::Cpu));
            let _ = a.matmul(&b);
            Ok(Outcome::Completed)
        },
    )
    .unwrap();
    let (_, outcome) = drain(&h, |_| {});
    h.join();
    let Outcome::Failed(msg) = outcome else {
        panic!("expected Failed, got {outcome:?}")
    };
    assert!(msg.contains("crashed"), "{msg}");
    assert_eq!(load_run(&run_dir).unwrap().status(), "failed");
}

#[test]
fn unwritable_run_folder_fails_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let mut h = worker::spawn(
        toy_cfg(1),
        RunTarget::Dir(file.join("run")),
        Device::Cpu,
        Box::new(|| {}),
    )
    .unwrap();
    let (_, outcome) = drain(&h, |_| {});
    h.join();
    assert!(
        matches!(outcome, Outcome::Failed(ref m) if m.contains("run folder")),
        "{outcome:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "x",
        "nothing already written is lost"
    );
}
