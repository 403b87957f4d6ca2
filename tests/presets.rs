//! Every bundled preset loads and validates.
use certlab::config::ExperimentConfig;

#[test]
fn every_preset_loads_and_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("presets");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") {
            let cfg = ExperimentConfig::load(&p).unwrap_or_else(|e| panic!("{e}"));
            assert!(cfg.validate().is_empty());
            n += 1;
        }
    }
    assert!(n >= 3, "only {n} presets");
    // The default experiment is what the GUI opens: it is bundled too.
    let bundled = ExperimentConfig::load(&dir.join("moons-mlp.toml")).unwrap();
    assert_eq!(bundled, ExperimentConfig::default_experiment());
}
