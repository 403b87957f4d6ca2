//! The Inspector tab (the bound microscope), headless with egui_kittest: a click on a test
//! point in the 2-D view opens it in the Inspector, whose thread loads the run folder's model
//! and answers with every layer's bounds and the radii; moving eps replaces the request in
//! flight. The live run is a fake worker (the test sends its events); the model is a real
//! run folder trained by the binary.
use certlab::config::ExperimentConfig;
use certlab::metrics::{DecisionMap, PointStatus};
use certlab::protocol::Event;
use certlab::ui::{App, Tab};
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use egui_plot::PlotPoint;
use std::path::Path;
use std::time::{Duration, Instant};

mod window;

mod common;

const PRESET: &str = r#"
name = "moons-inspector"
seed = 2
device = "cpu"
[dataset]
kind = "moons"
toy_points = 300
[model]
arch = "mlp"
hidden = [12, 12]
[train]
method = "standard"
epochs = 2
batch_size = 32
[optimizer]
lr = 0.01
[eval]
eps = [0.05]
"#;

fn train(dir: &Path) -> std::path::PathBuf {
    common::train(dir, PRESET)
}

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

#[test]
fn clicking_a_point_in_the_2d_view_opens_it_in_the_inspector() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = train(tmp.path());
    let runs = tmp.path().join("runs");
    let cfg = ExperimentConfig::default_experiment();
    let (mut h, _cmd_rx, ev_tx) = window::fake_window(runs, cfg, [1400.0, 900.0]);
    h.run_steps(2);
    h.get_by_label("▶ Start").click();
    h.run_steps(1);
    ev_tx
        .send(Event::Started {
            run_dir: run_dir.clone(),
            device: "cpu".into(),
            model: "mlp".into(),
            total_epochs: 2,
            steps_per_epoch: 10,
        })
        .unwrap();
    let points = vec![[0.2f32, 0.3], [0.7, 0.6], [0.45, 0.85]];
    ev_tx
        .send(Event::Decision(DecisionMap {
            epoch: 1,
            resolution: 4,
            prob: vec![0.5; 16],
            points: points.clone(),
            labels: vec![0, 1, 0],
            status: vec![PointStatus::Certified; 3],
            eps: 0.05,
            norm_l2: false,
        }))
        .unwrap();
    h.state_mut().tab = Tab::Decision;
    h.run_steps(4);
    let transform = h
        .state()
        .tabs
        .decision
        .plot_transform
        .expect("the 2-D view drew its plot");
    let pos = transform.position_from_point(&PlotPoint::new(0.7, 0.6));
    h.hover_at(pos);
    h.run_steps(1);
    h.drag_at(pos);
    h.run_steps(1);
    h.event(egui::Event::PointerButton {
        pos,
        button: egui::PointerButton::Primary,
        pressed: false,
        modifiers: egui::Modifiers::NONE,
    });
    h.run_steps(2);
    assert_eq!(
        h.state().tab,
        Tab::Inspector,
        "the click opened the Inspector"
    );
    let insp = &h.state().tabs.inspector;
    assert_eq!(insp.index, 1, "the point clicked is the one inspected");
    assert_eq!(insp.source.as_deref(), Some(run_dir.as_path()));

    // The thread loads the run's model and answers: bounds of every layer, then the radii.
    let answered = step_until(&mut h, 120, |app| {
        let i = &app.tabs.inspector;
        i.point.as_ref().is_some_and(|p| p.index == 1) && i.radii.is_some() && !i.busy()
    });
    assert!(answered, "error: {:?}", h.state().tabs.inspector.error);
    let insp = &h.state().tabs.inspector;
    let p = insp.point.as_ref().unwrap();
    assert_eq!(p.bounds.layers.len(), 3, "two hidden layers and the logits");
    assert_eq!(p.bounds.layers[0].empirical.lower.len(), 12);
    let (_, _, radii) = insp.radii.as_ref().unwrap();
    if let Some(pgd) = radii.pgd {
        for (m, r) in &radii.methods {
            assert!(*r <= pgd, "{}: {r} > {pgd}", m.name());
        }
    }
    assert!(
        insp.statuses.is_some(),
        "the 2-D view's points got their status"
    );

    // Two slider moves in a row: the first request is replaced; the answer is the last eps's.
    let ctx = h.ctx.clone();
    h.state_mut().tabs.inspector.set_eps(&ctx, 0.11);
    h.state_mut().tabs.inspector.set_eps(&ctx, 0.02);
    let done = step_until(&mut h, 60, |app| {
        let i = &app.tabs.inspector;
        !i.busy() && i.point.as_ref().is_some_and(|p| p.bounds.eps == 0.02)
    });
    assert!(done, "the last eps was answered");
    assert_eq!(
        h.state().tabs.inspector.statuses.as_ref().unwrap().eps,
        0.02
    );

    // "largest certified ball": every point gets its largest certified eps on a grid up to
    // 4 eps = 0.08; a misclassified point is certified at none, so its radius is 0.
    h.get_by_label("largest certified ball").click();
    let balls = step_until(&mut h, 60, |app| {
        let i = &app.tabs.inspector;
        !i.busy() && i.statuses.as_ref().is_some_and(|s| s.radius.is_some())
    });
    assert!(balls, "the radii of the points arrived");
    let s = h.state().tabs.inspector.statuses.clone().unwrap();
    let radius = s.radius.unwrap();
    assert_eq!(radius.len(), s.status.len());
    assert!(radius.iter().all(|r| (0.0..=0.08 + 1e-12).contains(r)));
    let misclassified = s
        .status
        .iter()
        .filter(|st| **st == PointStatus::Misclassified);
    for (st, r) in s.status.iter().zip(&radius) {
        if *st == PointStatus::Misclassified {
            assert_eq!(*r, 0.0);
        }
    }
    assert!(misclassified.count() < s.status.len());
    assert!(radius.iter().any(|r| *r > 0.0), "some point is certified");
}
