//! The workbench's UI logic, headless (egui_kittest, no GPU): Start plots points, Stop keeps
//! the run folder, an invalid field disables Start with its reason, a bad preset is refused.
use certlab::config::ExperimentConfig;
use certlab::ui::series::Metric;
use certlab::ui::{App, Tab};
use egui_kittest::kittest::{NodeT, Queryable};
use egui_kittest::Harness;
use std::path::Path;
use std::time::{Duration, Instant};

fn harness(runs_dir: &Path, cfg: ExperimentConfig) -> Harness<'static, App> {
    let runs_dir = runs_dir.to_path_buf();
    Harness::builder()
        .with_size(egui::vec2(1400.0, 900.0))
        .build_eframe(move |_cc| App::new(cfg, runs_dir, App::engine_spawner()))
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
fn stop_ends_the_run_and_keeps_its_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let mut h = harness(tmp.path(), small_moons(100_000));
    h.run_steps(2);
    h.get_by_label("▶ Start").click();
    assert!(
        step_until(&mut h, 120, |app| app.live.as_ref().is_some_and(|l| l
            .series
            .records
            .len()
            >= 1)),
        "no evaluation arrived; log: {:?}",
        h.state().log
    );
    h.get_by_label("⏹ Stop").click();
    assert!(step_until(&mut h, 60, |app| app
        .live
        .as_ref()
        .is_some_and(|l| !l.is_running())));
    let live = h.state().live.as_ref().unwrap();
    assert_eq!(live.series.outcome.as_deref(), Some("cancelled"));
    let dir = live.run_dir().unwrap().to_path_buf();
    let run = certlab::run::load_run(&dir).unwrap();
    assert!(!run.metrics.is_empty(), "metrics so far are kept");
    assert_eq!(run.summary.unwrap().outcome, "cancelled");
    assert!(dir.join("model.safetensors").exists());
    assert!(h.state().notice.as_ref().unwrap().text.contains("stopped"));
    // Start is available again.
    assert!(!h.get_by_label("▶ Start").accesskit_node().is_disabled());
}

#[test]
fn an_invalid_field_disables_start_and_shows_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let mut h = harness(tmp.path(), small_moons(3));
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
    let mut h = harness(tmp.path(), small_moons(3));
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
    let mut h = harness(tmp.path(), small_moons(3));
    h.state_mut().tab = Tab::Runs;
    h.run_steps(2);
    assert_eq!(h.state().library.len(), 2, "both folders are listed");
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
    let before = h.state().library.len();
    h.state_mut().open_run(&tmp.path().join("exports"));
    assert!(h.state().notice.as_ref().unwrap().text.contains("exports"));
    assert_eq!(h.state().library.len(), before);
}

#[test]
fn a_worker_error_is_shown_in_the_window_and_the_run_folder_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = small_moons(3);
    cfg.dataset.kind = certlab::config::DatasetKind::Mnist;
    cfg.dataset.path = tmp.path().join("no-such-folder").display().to_string();
    let mut h = harness(tmp.path(), cfg);
    h.run_steps(2);
    h.get_by_label("▶ Start").click();
    assert!(step_until(&mut h, 60, |app| app
        .live
        .as_ref()
        .is_some_and(|l| !l.is_running())));
    let app = h.state();
    let live = app.live.as_ref().unwrap();
    assert_eq!(live.series.outcome.as_deref(), Some("failed"));
    let notice = app.notice.as_ref().unwrap();
    assert!(
        notice.text.contains("run failed") && notice.text.contains("no-such-folder"),
        "{}",
        notice.text
    );
    h.get_by_label_contains("run failed");
    // The folder holds the config, the log and the summary that says why.
    let dir = h
        .state()
        .live
        .as_ref()
        .unwrap()
        .run_dir()
        .map(|d| d.to_path_buf());
    let dir = dir.unwrap_or_else(|| {
        std::fs::read_dir(tmp.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
    });
    let run = certlab::run::load_run(&dir).unwrap();
    let summary = run.summary.unwrap();
    assert_eq!(summary.outcome, "failed");
    assert!(summary.error.unwrap().contains("no-such-folder"));
    // The window is still usable: Start is enabled again.
    assert!(!h.get_by_label("▶ Start").accesskit_node().is_disabled());
}
