//! The workbench's UI logic, headless (egui_kittest, no GPU): Start plots points, Stop keeps
//! the run folder, an invalid field disables Start with its reason, a bad preset is refused.
//!
//! One test runs the real trainer end to end; the others speak for the trainer themselves
//! through a fake worker (`WorkerHandle::from_channels`), so they test the window alone. What
//! the trainer writes into a run folder on stop or failure is tested in tests/worker.rs and
//! tests/cli.rs.
use certlab::config::ExperimentConfig;
use certlab::metrics::{EvalRecord, GapStats};
use certlab::protocol::{Command, Event, Level, Outcome};
use certlab::ui::series::Metric;
use certlab::ui::{App, Spawner, Tab};
use certlab::worker::WorkerHandle;
use crossbeam_channel::{Receiver, Sender};
use egui::accesskit::Toggled;
use egui_kittest::kittest::{NodeT, Queryable};
use egui_kittest::Harness;
use std::path::Path;
use std::time::{Duration, Instant};

fn harness_with(runs_dir: &Path, cfg: ExperimentConfig, spawner: Spawner) -> Harness<'static, App> {
    let runs_dir = runs_dir.to_path_buf();
    Harness::builder()
        .with_size(egui::vec2(1400.0, 900.0))
        .build_eframe(move |_cc| App::new(cfg, runs_dir, spawner))
}

/// A window whose Start runs the real trainer.
fn harness(runs_dir: &Path, cfg: ExperimentConfig) -> Harness<'static, App> {
    harness_with(runs_dir, cfg, App::engine_spawner())
}

/// The test's end of a fake worker: what the window sends arrives on `commands`, and the
/// test speaks for the trainer on `events`.
struct FakeWorker {
    commands: Receiver<Command>,
    events: Sender<Event>,
}

impl FakeWorker {
    fn send(&self, event: Event) {
        self.events.send(event).unwrap();
    }
}

/// A window whose Start hands the app a fake worker, driven by the test.
fn fake_harness(runs_dir: &Path, cfg: ExperimentConfig) -> (Harness<'static, App>, FakeWorker) {
    let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
    let (ev_tx, ev_rx) = crossbeam_channel::unbounded();
    let spawner: Spawner = Box::new(move |_cfg, _target, _wake| {
        Ok(WorkerHandle::from_channels(cmd_tx.clone(), ev_rx.clone()))
    });
    let h = harness_with(runs_dir, cfg, spawner);
    let worker = FakeWorker {
        commands: cmd_rx,
        events: ev_tx,
    };
    (h, worker)
}

/// Clicks Start on a fake-worker window and sends the `Started` event of `run_dir`.
fn start_fake(h: &mut Harness<'static, App>, w: &FakeWorker, run_dir: &Path) {
    h.run_steps(2);
    h.get_by_label("▶ Start").click();
    h.run_steps(1);
    assert!(h.state().live.is_some(), "Start handed the app its worker");
    w.send(Event::Started {
        run_dir: run_dir.to_path_buf(),
        device: "cpu".into(),
        model: "mlp 2-64-64-2".into(),
        total_epochs: 3,
        steps_per_epoch: 10,
    });
    h.run_steps(2);
}

/// An evaluation with every plotted kind of metric: accuracies, a bound's certified accuracy,
/// Lipschitz estimates and tightness statistics.
fn record(epoch: u32) -> EvalRecord {
    let mut r = EvalRecord {
        epoch,
        clean_acc: 0.8,
        pgd_acc: Some(0.6),
        eval_eps: Some(0.1),
        ..EvalRecord::default()
    };
    r.cert_acc.insert("crown".into(), 0.4);
    r.lipschitz.insert("gram".into(), 12.0);
    r.lipschitz.insert("power".into(), 9.0);
    r.gap = Some(GapStats {
        method: "crown".into(),
        unstable_per_layer: vec![3.0, 1.0],
        r1_mean: 0.5,
        r2_mean: 0.1,
        frac_exact: 0.3,
        hist_edges: certlab::metrics::gap_hist_edges(),
        hist_counts: (0..11).collect(),
        cert_pgd_gap: Some(0.2),
    });
    r
}

/// Whether the checkbox labelled `label` is ticked.
fn ticked(h: &Harness<'static, App>, label: &str) -> bool {
    match h.get_by_label(label).accesskit_node().toggled() {
        Some(Toggled::True) => true,
        Some(Toggled::False) => false,
        other => panic!("`{label}` is not a checkbox: {other:?}"),
    }
}

/// Steps the UI until `done` holds or `secs` pass; returns whether it held.
fn step_until(h: &mut Harness<'static, App>, secs: u64, done: impl Fn(&App) -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        h.run_steps(1);
        if done(h.state()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn small_moons(epochs: u32) -> ExperimentConfig {
    let mut cfg = ExperimentConfig::default_experiment();
    cfg.train.epochs = epochs;
    cfg.dataset.toy_points = 300;
    cfg.eval.robust_subset = 100;
    cfg
}

#[test]
fn start_on_the_default_preset_plots_points_and_the_2d_view() {
    let tmp = tempfile::tempdir().unwrap();
    let mut h = harness(tmp.path(), small_moons(3));
    h.run_steps(2);
    h.get_by_label("▶ Start").click();
    let plotted = step_until(&mut h, 120, |app| {
        app.live.as_ref().is_some_and(|l| {
            l.series
                .curves
                .get(&Metric::Clean)
                .is_some_and(|c| !c.points.is_empty())
                && l.series.curves.contains_key(&Metric::Cert("ibp".into()))
        })
    });
    assert!(
        plotted,
        "no evaluation was plotted; log: {:?}",
        h.state().log
    );
    let live = h.state().live.as_ref().unwrap();
    let clean = &live.series.curves[&Metric::Clean].points;
    assert_eq!(clean[0].x, 1.0, "first point is epoch 1");
    assert!((0.0..=1.0).contains(&clean[0].y));
    assert!(
        live.series
            .curves
            .get(&Metric::BatchLoss)
            .is_some_and(|c| !c.points.is_empty()),
        "batch losses are plotted while the epoch runs"
    );
    // The run ends by itself; its folder is on disk, its decision map was shown.
    assert!(step_until(&mut h, 120, |app| app
        .live
        .as_ref()
        .is_some_and(|l| !l.is_running())));
    let live = h.state().live.as_ref().unwrap();
    assert_eq!(live.series.outcome.as_deref(), Some("completed"));
    assert_eq!(live.series.records.len(), 3);
    let dir = live.run_dir().unwrap().to_path_buf();
    assert!(dir.starts_with(tmp.path()) && dir.join("metrics.jsonl").exists());
    let map = live
        .decision
        .as_ref()
        .expect("a 2-D run sends decision maps");
    assert_eq!(map.epoch, 3);
    assert_eq!(map.status.len(), map.points.len());
    h.state_mut().tab = Tab::Decision;
    h.run_steps(2);
    h.get_by_label_contains("■ certified");
    // The tightness tab shows the CROWN statistics of the default experiment.
    h.state_mut().tab = Tab::Tightness;
    h.run_steps(2);
    h.get_by_label_contains("Relaxation: crown");
}

#[test]
fn pause_and_stop_reach_the_worker_and_the_run_stays_on_screen() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut h, w) = fake_harness(tmp.path(), small_moons(3));
    let run_dir = tmp.path().join("moons-crown-ibp-1");
    start_fake(&mut h, &w, &run_dir);
    assert_eq!(
        h.state().live.as_ref().unwrap().run_dir(),
        Some(run_dir.as_path())
    );
    w.send(Event::Metrics(record(1)));
    h.run_steps(2);
    assert_eq!(h.state().live.as_ref().unwrap().series.records.len(), 1);
    // Start is disabled while the run trains.
    assert!(h.get_by_label("▶ Start").accesskit_node().is_disabled());
    h.get_by_label("⏸ Pause").click();
    h.run_steps(1);
    assert_eq!(w.commands.try_recv(), Ok(Command::Pause));
    w.send(Event::Paused(true));
    h.run_steps(2);
    h.get_by_label_contains("paused · epoch");
    h.get_by_label("▶ Resume").click();
    h.run_steps(1);
    assert_eq!(w.commands.try_recv(), Ok(Command::Resume));
    w.send(Event::Paused(false));
    h.run_steps(2);
    h.get_by_label("⏹ Stop").click();
    h.run_steps(1);
    assert_eq!(w.commands.try_recv(), Ok(Command::Stop));
    assert!(
        h.state().live.as_ref().unwrap().is_running(),
        "the run ends when the worker says so, not when Stop is clicked"
    );
    w.send(Event::Finished {
        outcome: Outcome::Cancelled,
    });
    h.run_steps(2);
    let live = h.state().live.as_ref().unwrap();
    assert!(!live.is_running());
    assert_eq!(live.series.outcome.as_deref(), Some("cancelled"));
    assert_eq!(
        live.series.records.len(),
        1,
        "the evaluations so far stay plotted"
    );
    let notice = &h.state().notice.as_ref().unwrap().text;
    assert!(
        notice.contains("stopped") && notice.contains(&run_dir.display().to_string()),
        "{notice}"
    );
    h.get_by_label_contains("stopped · epoch");
    // Start is available again.
    assert!(!h.get_by_label("▶ Start").accesskit_node().is_disabled());
}

#[test]
fn an_invalid_field_disables_start_and_shows_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut h, _w) = fake_harness(tmp.path(), small_moons(3));
    h.run_steps(2);
    assert!(!h.get_by_label("▶ Start").accesskit_node().is_disabled());
    // Type a radius list with a negative eps into the field.
    let field = h.get_by_label("Eval eps");
    field.focus();
    h.run_steps(1);
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.run_steps(1);
    h.get_by_label("Eval eps").type_text("-0.5");
    h.run_steps(3);
    assert_eq!(h.state().designer.eval_eps_text, "-0.5");
    assert!(h.get_by_label("▶ Start").accesskit_node().is_disabled());
    // The reason, at the field and beside Start.
    assert_eq!(
        h.query_all_by_label_contains("eps must be finite and >= 0")
            .count(),
        2
    );
    h.get_by_label_contains("Cannot start: `eval.eps[0]`");
    h.get_by_label_contains("⚠ Eval eps");
    // Clicking the disabled button starts nothing.
    h.get_by_label("▶ Start").click();
    h.run_steps(2);
    assert!(h.state().live.is_none());
    // A word where a number belongs is named.
    h.state_mut().designer.eval_eps_text = "0.1, abc".into();
    h.run_steps(2);
    assert_eq!(
        h.query_all_by_label_contains("`abc` is not a number")
            .count(),
        2,
        "the reason is shown at the field and beside Start"
    );
}

#[test]
fn a_bad_preset_shows_an_error_and_leaves_the_experiment_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut h, _w) = fake_harness(tmp.path(), small_moons(3));
    h.run_steps(2);
    let before = h.state().designer.cfg.clone();
    let bad = tmp.path().join("broken.toml");
    std::fs::write(
        &bad,
        "name = \"x\"\n[train]\nepochs = 3\nlearning_rate = 0.1\n",
    )
    .unwrap();
    h.state_mut().open_preset(&bad);
    h.run_steps(2);
    let notice = h.state().notice.clone().expect("an error is shown");
    assert!(
        notice.text.contains("broken.toml") && notice.text.contains("learning_rate"),
        "{}",
        notice.text
    );
    h.get_by_label_contains("cannot open preset");
    assert_eq!(
        h.state().designer.cfg,
        before,
        "the experiment is untouched"
    );
    let out_of_range = tmp.path().join("negative.toml");
    std::fs::write(&out_of_range, "[train]\neps = -1.0\n").unwrap();
    h.state_mut().open_preset(&out_of_range);
    h.run_steps(2);
    assert!(h
        .state()
        .notice
        .as_ref()
        .unwrap()
        .text
        .contains("train.eps"));
    assert_eq!(h.state().designer.cfg, before);
    // A good one is taken.
    let good = Path::new(env!("CARGO_MANIFEST_DIR")).join("presets/moons-ibp.toml");
    h.state_mut().open_preset(&good);
    h.run_steps(2);
    assert_eq!(
        h.state().designer.cfg,
        ExperimentConfig::load(&good).unwrap()
    );
}

#[test]
fn run_browser_overlays_folders_and_exports_the_table() {
    let tmp = tempfile::tempdir().unwrap();
    // Two finished runs on disk, written by the engine.
    for (name, epochs) in [("a", 2u32), ("b", 3)] {
        let mut cfg = small_moons(epochs);
        cfg.name = name.into();
        let mut w = certlab::run::RunWriter::create(&tmp.path().join(name), &cfg).unwrap();
        for e in 1..=epochs {
            w.append_metrics(&certlab::metrics::EvalRecord {
                epoch: e,
                clean_acc: 0.5 + 0.1 * e as f64,
                ..Default::default()
            })
            .unwrap();
        }
    }
    let (mut h, _w) = fake_harness(tmp.path(), small_moons(3));
    h.state_mut().tab = Tab::Runs;
    h.run_steps(2);
    assert_eq!(h.state().library.runs.len(), 2, "both folders are listed");
    assert!(
        h.state().visible_runs().is_empty(),
        "listed runs are not overlaid until ticked"
    );
    h.get_by_label("a").click();
    h.get_by_label("b").click();
    h.run_steps(2);
    let vis = h.state().visible_runs();
    assert_eq!(vis.len(), 2);
    assert_ne!(vis[0].color, vis[1].color, "distinct colours");
    assert_eq!(vis[1].curves[&Metric::Clean].points.len(), 3);
    h.get_by_label("Export CSV").click();
    h.run_steps(2);
    let exports = tmp.path().join("exports");
    let csv = std::fs::read_dir(&exports)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(csv).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("b,") && l.contains(",0.8,")),
        "{text}"
    );
    // A folder that is not a run is an error naming it, and changes nothing.
    let before = h.state().library.runs.len();
    h.state_mut().open_run(&tmp.path().join("exports"));
    assert!(h.state().notice.as_ref().unwrap().text.contains("exports"));
    assert_eq!(h.state().library.runs.len(), before);
}

#[test]
fn a_worker_error_is_shown_in_the_window_and_start_is_enabled_again() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = small_moons(3);
    cfg.dataset.kind = certlab::config::DatasetKind::Mnist;
    let data = tmp.path().join("no-such-folder");
    cfg.dataset.path = data.display().to_string();
    let (mut h, w) = fake_harness(tmp.path(), cfg);
    h.run_steps(2);
    h.get_by_label("▶ Start").click();
    h.run_steps(1);
    // What the trainer sends when it cannot read the data set: no `Started`, the error, the end.
    let error = format!(
        "cannot open {}: No such file or directory",
        data.join("train-images-idx3-ubyte").display()
    );
    w.send(Event::Log {
        level: Level::Error,
        message: error.clone(),
    });
    w.send(Event::Finished {
        outcome: Outcome::Failed(error.clone()),
    });
    h.run_steps(2);
    let app = h.state();
    let live = app.live.as_ref().unwrap();
    assert!(!live.is_running());
    assert_eq!(live.series.outcome.as_deref(), Some("failed"));
    let notice = app.notice.as_ref().unwrap();
    assert!(
        notice.text.contains("run failed") && notice.text.contains("no-such-folder"),
        "{}",
        notice.text
    );
    assert!(app.log.lines.iter().any(|l| l.message == error));
    h.get_by_label_contains("run failed");
    h.get_by_label_contains("failed · epoch");
    // The window is still usable: Start is enabled again.
    assert!(!h.get_by_label("▶ Start").accesskit_node().is_disabled());
}

#[test]
fn a_worker_that_vanishes_without_finishing_is_shown_as_crashed() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut h, w) = fake_harness(tmp.path(), small_moons(3));
    start_fake(&mut h, &w, &tmp.path().join("run"));
    w.send(Event::Metrics(record(1)));
    drop(w); // The channel closes without `Finished`.
    h.run_steps(2);
    let app = h.state();
    let live = app.live.as_ref().unwrap();
    assert!(!live.is_running());
    assert!(matches!(live.finished, Some(Outcome::Failed(_))));
    assert_eq!(live.series.outcome.as_deref(), Some("failed"));
    assert_eq!(live.series.records.len(), 1, "what arrived stays plotted");
    assert!(app.notice.as_ref().unwrap().text.contains("crashed"));
    assert!(app.log.lines.iter().any(|l| l.message.contains("crashed")));
    assert!(!h.get_by_label("▶ Start").accesskit_node().is_disabled());
}

#[test]
fn each_tab_keeps_its_own_log_scale() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut h, w) = fake_harness(tmp.path(), small_moons(3));
    start_fake(&mut h, &w, &tmp.path().join("run"));
    w.send(Event::Metrics(record(1)));
    h.run_steps(2);
    let (tightness, lipschitz) = ("log scale for r1, r2", "log scale");
    h.state_mut().tab = Tab::Tightness;
    h.run_steps(2);
    assert!(ticked(&h, tightness), "log scale is on at first");
    h.get_by_label(tightness).click();
    h.run_steps(2);
    assert!(!ticked(&h, tightness));
    h.state_mut().tab = Tab::Lipschitz;
    h.run_steps(2);
    assert!(
        ticked(&h, lipschitz),
        "unticking the Tightness tab's log scale left the Lipschitz tab's alone"
    );
    h.get_by_label(lipschitz).click();
    h.run_steps(2);
    assert!(!ticked(&h, lipschitz));
    // And the other way round.
    h.state_mut().tab = Tab::Tightness;
    h.run_steps(2);
    assert!(!ticked(&h, tightness));
    h.get_by_label(tightness).click();
    h.run_steps(2);
    assert!(ticked(&h, tightness));
    h.state_mut().tab = Tab::Lipschitz;
    h.run_steps(2);
    assert!(!ticked(&h, lipschitz));
}
