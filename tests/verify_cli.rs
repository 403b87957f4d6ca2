//! Complete verification through the real binary: `eval.verify` in metrics.jsonl, consistent
//! with the bounds and PGD of the same evaluation, and `certlab verify --json`'s shape.
use std::collections::BTreeSet;
use std::path::Path;

mod common;
use common::certlab;

const PRESET: &str = r#"
name = "moons-verify"
seed = 5
device = "cpu"
[dataset]
kind = "moons"
toy_points = 600
[model]
arch = "mlp"
hidden = [16, 16]
[train]
method = "crown-ibp"
epochs = 3
batch_size = 32
eps = 0.05
ramp_epochs = 2
[optimizer]
lr = 0.01
[eval]
eps = [0.05]
bounds = ["ibp", "crown", "alpha-crown"]
alpha_iters = 10
pgd_steps = 10
robust_subset = 60
[eval.verify]
timeout_s = 2.0
points = 60
"#;

fn train(dir: &Path) -> std::path::PathBuf {
    common::train(dir, PRESET)
}

/// `certlab verify RUN ARGS..`.
fn verify(run: &Path, args: &[&str]) -> std::process::Output {
    certlab()
        .arg("verify")
        .arg(run)
        .args(args)
        .output()
        .unwrap()
}

fn keys(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn evaluations_carry_verified_accuracy_between_the_bounds_and_pgd() {
    let tmp = tempfile::tempdir().unwrap();
    let run = train(tmp.path());
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let mut seen = 0;
    for line in text.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let Some(verified) = r["verified_acc"].as_f64() else {
            continue;
        };
        seen += 1;
        let cert = |m: &str| r["cert_acc"][m].as_f64().unwrap();
        let pgd = r["pgd_acc"].as_f64().unwrap();
        // Same 60 points: a verified point resists every attack; the cascade contains CROWN
        // and alpha-CROWN (one point of slack: the float32 bounds recheck borderline points).
        assert!(verified <= pgd + 1e-9, "{line}");
        assert!(cert("alpha-crown") >= cert("crown") - 1e-9, "{line}");
        assert!(
            verified >= cert("alpha-crown") - 1.0 / 60.0 - 1e-9,
            "{line}"
        );
        let v = &r["verify"];
        let sum = |o: &serde_json::Value| -> u64 {
            o.as_object()
                .map_or(0, |m| m.values().map(|c| c.as_u64().unwrap()).sum())
        };
        let total = sum(&v["verified_by"])
            + sum(&v["falsified_by"])
            + v["unknown"].as_u64().unwrap()
            + v["timeout"].as_u64().unwrap();
        assert_eq!(total, 60, "{line}");
        assert_eq!(sum(&v["verified_by"]) as f64 / 60.0, verified, "{line}");
    }
    assert!(seen >= 1, "no evaluation with verified_acc:\n{text}");
}

#[test]
fn verify_json_has_the_documented_shape_and_consistent_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let run = train(tmp.path());
    let o = verify(
        &run,
        &["--eps", "0.08", "--n", "40", "--timeout-s", "2", "--json"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let top: BTreeSet<String> = [
        "eps",
        "norm",
        "timeout_s",
        "points",
        "verified_acc",
        "falsified",
        "unknown",
    ]
    .map(String::from)
    .into();
    assert_eq!(keys(&v), top);
    let point_keys: BTreeSet<String> = [
        "index",
        "label",
        "verdict",
        "seconds",
        "decided_by",
        "counterexample",
    ]
    .map(String::from)
    .into();
    let points = v["points"].as_array().unwrap();
    assert_eq!(points.len(), 40);
    let mut verified = 0;
    let mut falsified = 0;
    for p in points {
        assert_eq!(keys(p), point_keys);
        match p["verdict"].as_str().unwrap() {
            "verified" => verified += 1,
            "falsified" => {
                falsified += 1;
                let c = p["counterexample"].as_array().unwrap();
                assert_eq!(c.len(), 2);
                assert!(c.iter().all(|x| (0.0..=1.0).contains(&x.as_f64().unwrap())));
            }
            "unknown" | "timeout" => assert!(p["decided_by"].is_null()),
            other => panic!("unknown verdict {other}"),
        }
        if p["verdict"] != "falsified" {
            assert!(p["counterexample"].is_null());
        }
    }
    assert_eq!(v["falsified"].as_u64().unwrap(), falsified);
    assert_eq!(v["verified_acc"].as_f64().unwrap(), verified as f64 / 40.0);
    assert_eq!(
        v["unknown"].as_u64().unwrap(),
        40 - verified - falsified,
        "unknown counts unknown and timeout"
    );
    // A bad flag is named.
    let o = verify(&run, &["--eps", "0.1", "--norm", "l3"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--norm"));
    // So is a thread count of 0; one thread gives the same verdicts (same JSON but seconds).
    let o = verify(&run, &["--eps", "0.1", "--threads", "0"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--threads 0"));
    let o = verify(
        &run,
        &[
            "--eps",
            "0.08",
            "--n",
            "40",
            "--timeout-s",
            "2",
            "--json",
            "--threads",
            "1",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let one: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let verdicts = |v: &serde_json::Value| -> Vec<String> {
        v["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["verdict"].to_string())
            .collect()
    };
    // (A point that ran out of time in either pass says nothing.)
    for (a, b) in verdicts(&one).iter().zip(verdicts(&v)) {
        assert!(
            a == &b || a.contains("timeout") || b.contains("timeout"),
            "{a} vs {b}"
        );
    }
}
