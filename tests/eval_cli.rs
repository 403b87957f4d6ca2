//! `certlab eval` on a run folder made by `certlab run`.
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_certlab");

fn certlab(args: &[&str], run_dir: &Path) -> Output {
    Command::new(BIN)
        .arg("eval")
        .arg(run_dir)
        .args(args)
        // Every PGD iterate of the binary is checked to stay in the ball and the box.
        .env("CERTLAB_CHECK_ATTACKS", "1")
        .output()
        .expect("the certlab binary runs")
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn eval_json_reports_nested_accuracies_on_a_fresh_run() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let preset = concat!(env!("CARGO_MANIFEST_DIR"), "/presets/moons-mlp.toml");
    let status = Command::new(BIN)
        .args(["run", preset, "--epochs", "3", "--device", "cpu", "--out"])
        .arg(&run_dir)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );

    for (norm, eps) in [("linf", 0.05), ("l2", 0.08), ("linf", 0.0)] {
        let eps_s = eps.to_string();
        let v = json_of(&certlab(
            &[
                "--eps",
                &eps_s,
                "--norm",
                norm,
                "--methods",
                "clean,pgd,ibp",
                "--pgd-steps",
                "10",
                "--restarts",
                "2",
                "--n",
                "200",
                "--json",
            ],
            &run_dir,
        ));
        assert_eq!(v["eps"].as_f64(), Some(eps), "{v}");
        assert_eq!(v["norm"].as_str(), Some(norm), "{v}");
        assert_eq!(v["n"].as_i64(), Some(200), "{v}");
        let clean = v["clean_acc"].as_f64().unwrap();
        let pgd = v["pgd_acc"].as_f64().unwrap();
        let ibp = v["cert_acc"]["ibp"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&clean) && clean > 0.5, "{v}");
        assert!(
            ibp <= pgd && pgd <= clean,
            "cert <= pgd <= clean broken: {v}"
        );
        if eps == 0.0 {
            assert_eq!(pgd, clean, "PGD at eps 0 must equal clean accuracy: {v}");
        }
        assert_eq!(v["violations"].as_array().map(Vec::len), Some(0), "{v}");
    }

    // The loaded weights are the trained ones: clean accuracy on the whole test split equals
    // the last clean accuracy the training loop wrote to metrics.jsonl.
    let v = json_of(&certlab(
        &["--eps", "0.1", "--methods", "clean", "--n", "0", "--json"],
        &run_dir,
    ));
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let last: Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    assert_eq!(
        v["clean_acc"].as_f64(),
        last["clean_acc"].as_f64(),
        "{v} vs {last}"
    );
    assert!(v["pgd_acc"].is_null(), "pgd was not requested: {v}");

    // The table names every method it was asked for.
    let out = certlab(
        &["--eps", "0.05", "--methods", "clean,pgd,ibp", "--n", "50"],
        &run_dir,
    );
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    for word in ["clean", "pgd-20x1", "ibp", "accuracy"] {
        assert!(table.contains(word), "{word} missing from:\n{table}");
    }

    // An unknown method is refused with the allowed names.
    let out = certlab(&["--eps", "0.05", "--methods", "clean,deepfool"], &run_dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("deepfool"), "{err}");
    for name in ["clean", "pgd", "ibp", "crown-ibp", "fastlin", "crown"] {
        assert!(err.contains(name), "{name} not listed in: {err}");
    }
}
