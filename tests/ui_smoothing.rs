//! The Smoothing tab and the smoothing fields of the designer, headless (egui_kittest): the tab
//! explains itself until a record has a smoothing curve, then lists the run's noise, levels and
//! abstain rate; the designer's "+" turns smoothing on and shows its settings. Every widget is
//! labelled (kittest's accessibility check would panic otherwise).
use certlab::config::ExperimentConfig;
use certlab::metrics::{EvalRecord, SmoothingCurve};
use certlab::protocol::Event;
use certlab::ui::Tab;
use egui_kittest::kittest::Queryable;

mod window;

#[test]
fn smoothing_tab_and_designer_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = ExperimentConfig::default_experiment();
    cfg.train.epochs = 2;
    let runs_dir = tmp.path().to_path_buf();
    let (mut h, _cmd_rx, ev_tx) = window::fake_window(runs_dir, cfg, [1400.0, 900.0]);
    h.run_steps(2);
    // The designer: smoothing is off, "+" adds a level and shows the settings.
    assert!(h.query_by_label("Smoothing noise").is_none());
    h.get_by_label("+").click();
    h.run_steps(2);
    assert_eq!(h.state().designer.cfg.eval.smoothing.sigma, vec![0.25]);
    h.get_by_label("Smoothing noise");
    h.get_by_label("Counting samples n");
    // The tab: empty, then one curve.
    h.get_by_label("▶ Start").click();
    h.run_steps(1);
    ev_tx
        .send(Event::Started {
            run_dir: tmp.path().join("run"),
            device: "cpu".into(),
            model: "mlp".into(),
            total_epochs: 2,
            steps_per_epoch: 10,
        })
        .unwrap();
    h.state_mut().tab = Tab::Smoothing;
    h.run_steps(2);
    assert!(h
        .query_by_label_contains("No smoothing certificates yet")
        .is_some());
    ev_tx
        .send(Event::Metrics(EvalRecord {
            epoch: 1,
            smoothing: Some(SmoothingCurve {
                radii: vec![0.0, 0.25, 0.5],
                cert_acc: vec![0.8, 0.6, 0.3],
                abstain: 0.125,
                norm: "l2".into(),
                noise: "gaussian".into(),
                sigma: vec![0.25],
                points: 8,
                secs_per_point: 0.5,
            }),
            ..EvalRecord::default()
        }))
        .unwrap();
    h.run_steps(3);
    assert!(h
        .query_by_label_contains("No smoothing certificates yet")
        .is_none());
    // In the summary table and the plot legend.
    assert!(h.query_all_by_label_contains("gaussian σ 0.25").count() >= 1);
    h.get_by_label("12.5%");
}
