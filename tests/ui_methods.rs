//! The designer shows the knobs of the certified-training methods of round 2 only for the
//! methods that use them (headless, egui_kittest): SABR's box fraction, the expressive losses'
//! alpha, PGD settings for the methods that attack, the IBP initialisation and the Shi
//! regularizer weight for IBP-based methods.
use certlab::config::{ExperimentConfig, Method};
use certlab::ui::App;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;

#[test]
fn each_method_shows_exactly_its_own_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let fields = [
        "Small box / eps (lambda)",
        "IBP weight (alpha)",
        "PGD steps",
        "Initialisation",
        "Warm-up regularizer weight (Shi)",
    ];
    for method in Method::ALL {
        let mut cfg = ExperimentConfig::default_experiment();
        cfg.train.method = method;
        cfg.train.eps = 0.1;
        cfg.train.lip_weight = 0.01;
        let runs = tmp.path().to_path_buf();
        let mut h = Harness::builder()
            .with_size(egui::vec2(1400.0, 1400.0))
            .build_eframe(move |_cc| App::new(cfg, runs, App::engine_spawner()));
        h.run_steps(2);
        let want = [
            method == Method::Sabr,
            method.expressive(),
            method.attacks(),
            method.ibp_based(),
            method.ibp_based(),
        ];
        for (label, shown) in fields.iter().zip(want) {
            let found = h.query_by_label(label).is_some();
            assert_eq!(found, shown, "{}: `{label}`", method.name());
        }
    }
}
