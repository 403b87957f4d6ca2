//! The l_inf vs l_2 view (`eval.cross_norm`) on a PGD-trained and a RAT-trained run: each
//! record holds PGD accuracy under both norms, the own norm's equal to `pgd_acc`, all below the
//! clean accuracy of the same points; the RAT run is evaluated by majority vote and EOT-PGD.
use serde_json::Value;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_certlab");

fn last_record(method_lines: &str) -> Value {
    let tmp = tempfile::tempdir().unwrap();
    let preset = tmp.path().join("p.toml");
    std::fs::write(
        &preset,
        format!(
            r#"name = "moons-cross"
[dataset]
kind = "moons"
toy_points = 300
[model]
hidden = [32, 32]
[train]
{method_lines}
eps = 0.05
epochs = 2
pgd_steps = 3
[eval]
eps = [0.05, 0.1]
norm = "linf"
pgd_steps = 10
robust_subset = 60
cross_norm = true
cross_eps = [0.1, 0.3]
noise_draws = 5
eot_draws = 4
"#
        ),
    )
    .unwrap();
    let run_dir = tmp.path().join("run");
    let out = Command::new(BIN)
        .arg("run")
        .arg(&preset)
        .args(["--device", "cpu", "--out"])
        .arg(&run_dir)
        .env("CERTLAB_CHECK_ATTACKS", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

#[test]
fn both_norms_are_attacked_for_deterministic_and_randomized_models() {
    for method in [
        "method = \"pgd\"",
        "method = \"rat\"\nnoise = \"laplace\"\nnoise_sigma = 0.05",
    ] {
        let r = last_record(method);
        let cross = &r["cross_norm"];
        let clean = r["subset_clean_acc"].as_f64().unwrap();
        assert_eq!(cross["linf"]["0.05"], r["pgd_acc"], "{method}: {r}");
        assert_eq!(cross["linf"]["0.1"], r["more_eps"][0]["pgd_acc"]);
        for eps in ["0.1", "0.3"] {
            let acc = cross["l2"][eps]
                .as_f64()
                .unwrap_or_else(|| panic!("{method}: {r}"));
            assert!(acc <= clean, "{method}: l2 {eps}: {acc} > clean {clean}");
        }
        assert!(r["clean_acc"].as_f64().unwrap() > 0.5, "{method}: {r}");
    }
}
