//! The Sweep tab, headless (egui_kittest): a sweep built from the designer's experiment runs
//! its points through the real binary, rows and the report fill in as they finish, a group
//! opens its runs as overlays, and an invalid point is refused before anything is written.
use certlab::config::ExperimentConfig;
use certlab::sweep::PointState;
use certlab::ui::{App, Tab};
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use std::path::Path;
use std::time::{Duration, Instant};

fn window(runs_dir: &Path) -> Harness<'static, App> {
    let mut cfg = ExperimentConfig::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("presets/moons-crown-ibp.toml"),
    )
    .unwrap();
    cfg.train.epochs = 2;
    cfg.device = certlab::config::DeviceChoice::Cpu;
    let runs_dir = runs_dir.to_path_buf();
    let mut h = Harness::builder()
        .with_size(egui::vec2(1400.0, 900.0))
        .build_eframe(move |_cc| App::new(cfg, runs_dir, App::engine_spawner()));
    let app = h.state_mut();
    app.tab = Tab::Sweep;
    app.tabs.sweep.exe = Some(env!("CARGO_BIN_EXE_certlab").into());
    app.tabs.sweep.name = "ui".into();
    app.tabs.sweep.axes[0].key = "optimizer.lr".into();
    app.tabs.sweep.seeds = "0, 1".into();
    h.run_steps(2);
    h
}

#[test]
fn a_sweep_built_in_the_window_runs_and_reports_its_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let mut h = window(tmp.path());
    h.state_mut().tabs.sweep.axes[0].values = "0.003, 0.03".into();
    h.state_mut().tabs.sweep.jobs = 2;
    h.run_steps(2);
    assert!(h
        .query_by_label_contains("4 points = 2 settings × 2 seeds")
        .is_some());
    h.get_by_label("Start sweep").click();
    h.run_steps(2);
    assert!(h.state().tabs.sweep.is_running(), "Start runs the sweep");
    let t0 = Instant::now();
    while h.state().tabs.sweep.is_running() {
        assert!(
            t0.elapsed() < Duration::from_secs(180),
            "the sweep did not finish"
        );
        std::thread::sleep(Duration::from_millis(100));
        h.run_steps(1);
    }
    h.run_steps(2);
    let dir = tmp.path().join("sweeps/ui");
    {
        let view = h.state().tabs.sweep.view.as_ref().unwrap();
        assert!(view.error.is_none(), "{:?}", view.error);
        assert!(
            view.states.iter().all(|s| *s == PointState::Done),
            "{:?}",
            view.states
        );
        assert!(view.progress.iter().all(|p| *p == 1.0));
        let report = view.report.as_ref().unwrap();
        assert_eq!(report.groups.len(), 2);
        assert!(report.groups.iter().all(|g| g.n_done == 2));
        assert!(report.groups.iter().any(|g| g.pareto));
    }
    for id in ["p0000-s0", "p0000-s1", "p0001-s0", "p0001-s1"] {
        assert!(dir.join(id).join("summary.json").exists(), "{id}");
    }
    // The rows show each point's final numbers; the plots are drawn.
    assert!(h.query_by_label("p0001-s1").is_some());
    assert!(h
        .query_by_label_contains("Clean vs certified accuracy")
        .is_some());
    // A group's runs open as overlays (what clicking its marker does).
    let runs = h.state().tabs.sweep.view.as_ref().unwrap().group_runs(1);
    assert_eq!(runs.len(), 2);
    for r in runs {
        h.state_mut().open_run(&r);
    }
    h.run_steps(2);
    assert_eq!(h.state().visible_runs().len(), 2);
    // The report exports as CSV.
    h.get_by_label("Export CSV").click();
    h.run_steps(2);
    let csv = std::fs::read_dir(tmp.path().join("exports"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("sweep-ui"))
        .expect("the sweep CSV");
    let text = std::fs::read_to_string(csv.path()).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    // The sweep folder opens again from disk, as from the Runs tab.
    h.state_mut().tabs.sweep.view = None;
    h.state_mut().open_sweep(&dir);
    h.run_steps(2);
    let view = h.state().tabs.sweep.view.as_ref().unwrap();
    assert_eq!(view.report.as_ref().unwrap().groups.len(), 2);
}

#[test]
fn an_invalid_point_is_refused_in_the_tab_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let mut h = window(tmp.path());
    h.state_mut().tabs.sweep.axes[0].values = "0.01, -2".into();
    h.run_steps(1);
    h.get_by_label("Start sweep").click();
    h.run_steps(2);
    let err = h.state().tabs.sweep.build_error.clone().unwrap_or_default();
    assert!(
        err.contains("optimizer.lr") && err.contains("p0001-s0"),
        "{err}"
    );
    assert!(!tmp.path().join("sweeps").exists());
    assert!(!h.state().tabs.sweep.is_running());
    // The range filler writes log-spaced values.
    let mut a = h.state().tabs.sweep.axes[0].clone();
    a.from = 0.001;
    a.to = 0.1;
    a.count = 3;
    a.log = true;
    a.fill();
    assert_eq!(a.values, "0.001, 0.01, 0.1");
}
