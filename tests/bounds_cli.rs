//! Certified training through the real binary, its gap statistics in metrics.jsonl, and
//! `certlab bounds`.
use std::path::Path;

mod common;
use common::certlab;

const PRESET: &str = r#"
name = "moons-crown-ibp-r2"
seed = 3
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
r2_weight = 0.1
reg_warmup_epochs = 1
[optimizer]
lr = 0.01
[eval]
eps = [0.05]
bounds = ["ibp", "crown-ibp", "fastlin", "crown"]
pgd_steps = 10
robust_subset = 100
"#;

fn train(dir: &Path) -> std::path::PathBuf {
    let (out, o) = common::train_run(dir, PRESET);
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("soundness violation"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn certified_training_writes_every_bound_and_the_gap_statistics() {
    let tmp = tempfile::tempdir().unwrap();
    let run = train(tmp.path());
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let recs: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Three epochs on the validation split, then the last and best models on the test split.
    let epochs = recs.iter().filter(|r| r.get("model").is_none()).count();
    assert_eq!(epochs, 3);
    let finals: Vec<_> = recs.iter().filter_map(|r| r.get("model")).collect();
    assert_eq!(finals, ["last", "best"]);
    for r in &recs {
        let clean = r["clean_acc"].as_f64().unwrap();
        let pgd = r["pgd_acc"].as_f64().unwrap();
        for m in ["ibp", "crown-ibp", "fastlin", "crown"] {
            let c = r["cert_acc"][m]
                .as_f64()
                .unwrap_or_else(|| panic!("cert_acc.{m} in {r}"));
            assert!(
                c <= pgd + 1e-12 && pgd <= 1.0 && (0.0..=1.0).contains(&c),
                "{m}: {r}"
            );
        }
        assert!(pgd <= 1.0 && clean <= 1.0);
        let subset_clean = r["subset_clean_acc"].as_f64().unwrap();
        assert!(
            pgd <= subset_clean + 1e-12,
            "PGD above clean on the same points: {r}"
        );
        let g = &r["gap"];
        assert_eq!(
            g["method"], "crown-ibp",
            "the training method's relaxation: {r}"
        );
        assert_eq!(g["unstable_per_layer"].as_array().unwrap().len(), 2);
        let counts: u64 = g["hist_counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap())
            .sum();
        assert_eq!(counts, 100, "one gap per point and other class (2 classes)");
        for k in ["r1_mean", "r2_mean", "frac_exact"] {
            let v = g[k].as_f64().unwrap();
            assert!(v >= 0.0 && v.is_finite(), "{k} = {v}");
        }
        assert!(g["frac_exact"].as_f64().unwrap() <= 1.0);
        let gap = g["cert_pgd_gap"].as_f64().unwrap();
        let c = r["cert_acc"]["crown-ibp"].as_f64().unwrap();
        assert!((gap - (pgd - c)).abs() < 1e-12);
    }
}

#[test]
fn bounds_command_writes_sound_logit_and_margin_bounds() {
    let tmp = tempfile::tempdir().unwrap();
    let run = train(tmp.path());
    for method in ["ibp", "crown-ibp", "fastlin", "crown"] {
        for (eps, norm) in [(0.0, "linf"), (0.08, "linf"), (0.08, "l2")] {
            let out = tmp.path().join(format!("{method}-{eps}-{norm}.json"));
            let o = certlab()
                .arg("bounds")
                .arg(&run)
                .args([
                    "--eps",
                    &eps.to_string(),
                    "--norm",
                    norm,
                    "--method",
                    method,
                ])
                .args(["--n", "25", "--device", "cpu", "--out"])
                .arg(&out)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let j = json(&out);
            assert_eq!(j["method"], method);
            assert_eq!(j["norm"], norm);
            assert_eq!(j["eps"].as_f64().unwrap(), eps);
            let points = j["points"].as_array().unwrap();
            assert_eq!(points.len(), 25);
            for (i, p) in points.iter().enumerate() {
                assert_eq!(p["index"].as_u64().unwrap(), i as u64);
                let y = p["label"].as_u64().unwrap() as usize;
                let f = |k: &str| -> Vec<f64> {
                    p[k].as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_f64().unwrap())
                        .collect()
                };
                let (lo, hi, m) = (f("logits_lower"), f("logits_upper"), f("margin_lower"));
                assert_eq!((lo.len(), hi.len(), m.len()), (2, 2, 2));
                assert_eq!(m[y], 0.0);
                for t in 0..2 {
                    assert!(lo[t] <= hi[t] + 1e-6, "{method} point {i}: {lo:?} > {hi:?}");
                    if eps == 0.0 {
                        assert!(
                            (hi[t] - lo[t]).abs() < 1e-4,
                            "{method}: eps 0 must be the forward pass"
                        );
                    }
                }
                // The margin bound cannot be above the margin at the clean point.
                let mid = |t: usize| (lo[t] + hi[t]) / 2.0;
                if eps == 0.0 {
                    for t in 0..2 {
                        assert!((m[t] - (mid(y) - mid(t))).abs() < 1e-4);
                    }
                }
            }
        }
    }
    // Bad input names the option and the choices; the file already there is left alone.
    let keep = tmp.path().join("crown-0.08-linf.json");
    let before = std::fs::read(&keep).unwrap();
    let o = certlab()
        .arg("bounds")
        .arg(&run)
        .args(["--eps", "0.1", "--method", "deepoly", "--out"])
        .arg(&keep)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--method `deepoly`") && err.contains("crown-ibp"),
        "{err}"
    );
    assert_eq!(std::fs::read(&keep).unwrap(), before);
}
