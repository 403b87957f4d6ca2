//! Randomized smoothing end to end: a Gaussian-trained run whose evaluations write
//! `cert_acc["smoothing"]` and the curve, and `certlab smooth --json` on its folder.
use serde_json::Value;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_certlab");

#[test]
fn gaussian_run_records_smoothing_and_certlab_smooth_prints_the_issue_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let preset = tmp.path().join("g.toml");
    std::fs::write(
        &preset,
        r#"name = "moons-gauss"
[dataset]
kind = "moons"
toy_points = 300
[model]
hidden = [32, 32]
[train]
method = "gaussian"
noise_sigma = 0.1
epochs = 3
[eval]
eps = [0.05, 0.1]
norm = "l2"
robust_subset = 40
[eval.smoothing]
sigma = [0.1, 0.2]
n0 = 50
n = 400
batch = 400
points = 20
"#,
    )
    .unwrap();
    let run_dir = tmp.path().join("run");
    let out = Command::new(BIN)
        .args(["run"])
        .arg(&preset)
        .args(["--device", "cpu", "--out"])
        .arg(&run_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let s = &last["smoothing"];
    let (radii, acc) = (
        s["radii"].as_array().unwrap(),
        s["cert_acc"].as_array().unwrap(),
    );
    assert_eq!(radii.len(), acc.len());
    assert_eq!(s["points"], 20);
    assert_eq!(s["norm"], "l2");
    let at_first = last["cert_acc"]["smoothing"].as_f64().unwrap();
    let at_second = last["more_eps"][0]["cert_acc"]["smoothing"]
        .as_f64()
        .unwrap();
    assert!(at_second <= at_first && at_first <= acc[0].as_f64().unwrap());
    assert!(
        at_first > 0.3,
        "a trained moons model certifies some points: {at_first}"
    );

    let out = Command::new(BIN)
        .arg("smooth")
        .arg(&run_dir)
        .args([
            "--sigma", "0.1", "--n0", "50", "--n", "400", "--alpha", "0.01",
        ])
        .args(["--points", "12", "--radii", "0,0.05,0.5", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sigma"], 0.1);
    assert_eq!(v["noise"], "gaussian");
    assert_eq!((v["n0"].as_u64(), v["n"].as_u64()), (Some(50), Some(400)));
    assert_eq!(v["alpha"], 0.01);
    let points = v["points"].as_array().unwrap();
    assert_eq!(points.len(), 12);
    let mut ok_at = [0usize; 3];
    for (i, p) in points.iter().enumerate() {
        assert_eq!(p["index"], i);
        let (pred, r) = (
            p["prediction"].as_i64().unwrap(),
            p["radius"].as_f64().unwrap(),
        );
        // Abstain is -1 with radius 0; a certified radius is below sigma Phi^-1(1) at n = 400.
        assert!(pred == -1 && r == 0.0 || pred >= 0 && r > 0.0, "{p}");
        assert!(r < 0.1 * 3.0);
        for (k, radius) in [0.0, 0.05, 0.5].iter().enumerate() {
            ok_at[k] += usize::from(pred == p["label"].as_i64().unwrap() && r >= *radius);
        }
    }
    for (k, key) in ["0", "0.05", "0.5"].iter().enumerate() {
        let acc = v["cert_acc_at"][key].as_f64().unwrap();
        assert!((acc - ok_at[k] as f64 / 12.0).abs() < 1e-12, "{key}: {acc}");
    }
    assert_eq!(v["cert_acc_at"]["0.5"], 0.0);
    // A bad flag is named.
    let bad = Command::new(BIN)
        .arg("smooth")
        .arg(&run_dir)
        .args(["--sigma", "0.1", "--noise", "cauchy"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--noise"));
}
