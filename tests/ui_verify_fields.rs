//! The designer's fields of alpha-CROWN and complete verification (kittest): the optimiser's
//! fields appear only while alpha-CROWN certifies; the verification checkbox turns
//! `[eval.verify]` on with its defaults and shows its budget.
use certlab::config::{BoundMethod, ExperimentConfig};
use certlab::ui::App;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;

#[test]
fn alpha_and_verification_fields_follow_the_config() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let mut h = Harness::builder()
        .with_size(egui::vec2(1400.0, 1400.0))
        .build_eframe(move |_cc| {
            App::new(
                ExperimentConfig::default_experiment(),
                dir,
                App::engine_spawner(),
            )
        });
    h.run_steps(2);
    assert!(h.query_by_label("alpha-CROWN iterations").is_none());
    assert!(h.query_by_label("Verify: points").is_none());
    h.state_mut()
        .designer
        .cfg
        .eval
        .bounds
        .push(BoundMethod::AlphaCrown);
    h.run_steps(2);
    assert!(h.query_by_label("alpha-CROWN iterations").is_some());
    assert!(h.query_by_label("alpha-CROWN step").is_some());
    assert!(h.state().designer.cfg.eval.verify.is_none());
    h.get_by_label("Complete verification").click();
    h.run_steps(2);
    let v = h
        .state()
        .designer
        .cfg
        .eval
        .verify
        .clone()
        .expect("verification turned on");
    assert_eq!(v, certlab::config::VerifyConfig::default());
    assert!(h.query_by_label("Verify: points").is_some());
    assert!(h.query_by_label("Verify: seconds per point").is_some());
    // The config it shows is valid and keeps the settings through TOML.
    let cfg = h.state().designer.cfg.clone();
    assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    let back = ExperimentConfig::from_toml_str(&cfg.to_toml_string(), "round trip").unwrap();
    assert_eq!(back.eval.verify, cfg.eval.verify);
    assert!(back.eval.bounds.contains(&BoundMethod::AlphaCrown));
}
