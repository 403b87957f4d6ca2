//! The l_inf vs l_2 view in the window, headless (egui_kittest): two run folders whose records
//! hold `cross_norm` numbers (one trained for l_inf, one for l_2). The run table gets a
//! cross-norm column whose cells are the records' numbers, the CSV export has one column per
//! attack norm and radius, and with both runs ticked the accuracy tab shows the heat map with
//! the same numbers in its cells and the rows labelled by trained-for norm.
use certlab::config::{ExperimentConfig, Norm};
use certlab::metrics::EvalRecord;
use certlab::ui::Tab;
use egui_kittest::kittest::Queryable;
use std::collections::BTreeMap;
use std::path::Path;

mod window;

/// A run folder trained for `norm` whose last record has the cross-norm numbers `cross`.
fn write_run(dir: &Path, name: &str, norm: Norm, cross: &[(&str, &str, f64)]) {
    let mut cfg = ExperimentConfig::default_experiment();
    cfg.name = name.into();
    cfg.train.norm = norm;
    cfg.train.epochs = 2;
    cfg.eval.cross_norm = true;
    cfg.eval.cross_eps = vec![0.5];
    let mut w = certlab::run::RunWriter::create(&dir.join(name), &cfg).unwrap();
    let mut map: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for (n, e, a) in cross {
        map.entry(n.to_string())
            .or_default()
            .insert(e.to_string(), *a);
    }
    for epoch in 1..=2 {
        w.append_metrics(&EvalRecord {
            epoch,
            clean_acc: 0.9,
            // The first epoch's numbers are not the run's: the table shows the last.
            cross_norm: if epoch == 2 {
                map.clone()
            } else {
                BTreeMap::from([("linf".into(), BTreeMap::from([("0.1".into(), 0.01)]))])
            },
            ..EvalRecord::default()
        })
        .unwrap();
    }
}

#[test]
fn run_table_and_heat_map_show_the_records_cross_norm_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    write_run(
        tmp.path(),
        "pgd-linf",
        Norm::Linf,
        &[
            ("linf", "0.1", 0.612),
            ("linf", "0.05", 0.734),
            ("l2", "0.5", 0.271),
        ],
    );
    write_run(
        tmp.path(),
        "pgd-l2",
        Norm::L2,
        &[("l2", "0.5", 0.583), ("linf", "0.1", 0.146)],
    );
    let runs_dir = tmp.path().to_path_buf();
    let (mut h, _cmd_rx, _ev_tx) = window::fake_window(
        runs_dir,
        ExperimentConfig::default_experiment(),
        [1800.0, 1000.0],
    );
    h.state_mut().tab = Tab::Runs;
    h.run_steps(2);
    assert_eq!(h.state().library.runs.len(), 2);
    // The table: the trained-for norm first, each norm at its smallest radius.
    h.get_by_label("cross-norm PGD");
    h.get_by_label("ℓ∞ 0.05: 73.4% · ℓ2 0.5: 27.1%");
    h.get_by_label("ℓ2 0.5: 58.3% · ℓ∞ 0.1: 14.6%");
    // The CSV export: one column per attack norm and radius, the records' fractions.
    h.get_by_label("Export CSV").click();
    h.run_steps(2);
    let csv = std::fs::read_dir(tmp.path().join("exports"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let head: Vec<&str> = lines[0].split(',').collect();
    let col = |name: &str| {
        head.iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("{name} in {}", lines[0]))
    };
    let row = |run: &str| -> Vec<&str> {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("{run},")))
            .unwrap()
            .split(',')
            .collect()
    };
    assert_eq!(row("pgd-linf")[col("cross_linf_0.05")], "0.734");
    assert_eq!(row("pgd-linf")[col("cross_l2_0.5")], "0.271");
    assert_eq!(row("pgd-l2")[col("cross_linf_0.05")], "");
    assert_eq!(row("pgd-l2")[col("cross_linf_0.1")], "0.146");
    // The heat map, once the runs are ticked.
    h.state_mut().tab = Tab::Overview;
    h.run_steps(2);
    assert!(h
        .query_by_label_contains("Cross-norm PGD accuracy")
        .is_none());
    h.state_mut().tab = Tab::Runs;
    h.run_steps(1);
    h.get_by_label("pgd-linf").click();
    h.get_by_label("pgd-l2").click();
    h.run_steps(2);
    h.state_mut().tab = Tab::Overview;
    h.run_steps(3);
    h.get_by_label_contains("Cross-norm PGD accuracy");
    h.get_by_label("pgd-linf · ℓ∞");
    h.get_by_label("pgd-l2 · ℓ2");
    for col in ["ℓ∞ 0.05", "ℓ∞ 0.1", "ℓ2 0.5"] {
        h.get_by_label(col);
    }
    for cell in ["73.4%", "61.2%", "27.1%", "14.6%", "58.3%"] {
        h.get_by_label(cell);
    }
    // The l_2-trained run was not attacked with l_inf at 0.05: an empty cell.
    assert_eq!(h.query_all_by_label("–").count(), 1);
    // Its first epoch's value is not shown anywhere.
    assert!(h.query_by_label("1.0%").is_none());
}
