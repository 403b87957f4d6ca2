//! `certlab inspect` through the real binary on a small trained toy run: the JSON shape of
//! issue 16, every method's interval containing the empirical range, each certified radius at
//! most the PGD radius, and errors that name the bad flag.
use serde_json::Value;
use std::path::Path;
use std::process::Output;

mod common;
use common::certlab;

const PRESET: &str = r#"
name = "moons-inspect"
seed = 5
device = "cpu"
[dataset]
kind = "moons"
toy_points = 400
[model]
arch = "mlp"
hidden = [12, 12]
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
bounds = ["ibp"]
pgd_steps = 5
robust_subset = 50
"#;

const METHODS: [&str; 4] = ["ibp", "crown-ibp", "fastlin", "crown"];

fn train(dir: &Path) -> std::path::PathBuf {
    common::train(dir, PRESET)
}

fn inspect(run: &Path, args: &[&str]) -> Output {
    certlab()
        .arg("inspect")
        .arg(run)
        .args(args)
        .output()
        .unwrap()
}

fn inspect_json(run: &Path, args: &[&str]) -> Value {
    let o = inspect(run, args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[test]
fn inspect_reports_sound_intervals_radii_and_the_issue_json_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let run = train(tmp.path());
    let mut checked_pgd = 0;
    for (index, norm, eps) in [
        ("0", "linf", "0.05"),
        ("7", "l2", "0.1"),
        ("12", "linf", "0.2"),
    ] {
        let v = inspect_json(
            &run,
            &["--index", index, "--eps", eps, "--norm", norm, "--json"],
        );
        assert_eq!(
            keys(&v),
            ["eps", "index", "label", "layers", "margins", "norm", "radius"]
        );
        assert_eq!(v["index"].as_i64().unwrap().to_string(), index);
        assert_eq!(v["norm"], norm);
        let label = v["label"].as_u64().unwrap() as usize;
        let layers = v["layers"].as_array().unwrap();
        // Two hidden layers feeding ReLUs, then the logits.
        let widths: Vec<usize> = layers
            .iter()
            .map(|l| l["empirical"]["lower"].as_array().unwrap().len())
            .collect();
        assert_eq!(widths, [12, 12, 2]);
        for l in layers {
            assert_eq!(keys(l), ["empirical", "kind", "layer", "methods"]);
            assert_eq!(l["kind"], "linear");
            assert_eq!(keys(&l["methods"]), {
                let mut m = METHODS.map(String::from).to_vec();
                m.sort();
                m
            });
            let (el, eu) = (
                floats(&l["empirical"]["lower"]),
                floats(&l["empirical"]["upper"]),
            );
            for m in METHODS {
                let (lo, hi) = (
                    floats(&l["methods"][m]["lower"]),
                    floats(&l["methods"][m]["upper"]),
                );
                for j in 0..el.len() {
                    let tol = 1e-9 * (1.0 + el[j].abs().max(eu[j].abs()));
                    assert!(el[j] <= eu[j]);
                    assert!(
                        lo[j] <= el[j] + tol && eu[j] <= hi[j] + tol,
                        "point {index}, layer {}, neuron {j}: {m} [{}, {}] misses [{}, {}]",
                        l["layer"],
                        lo[j],
                        hi[j],
                        el[j],
                        eu[j]
                    );
                }
            }
        }
        for m in METHODS {
            let margins = floats(&v["margins"][m]);
            assert_eq!(margins.len(), 2);
            assert_eq!(margins[label], 0.0);
        }
        let mut rk = METHODS.map(String::from).to_vec();
        rk.push("pgd".into());
        rk.sort();
        assert_eq!(keys(&v["radius"]), rk);
        if let Some(pgd) = v["radius"]["pgd"].as_f64() {
            checked_pgd += 1;
            for m in METHODS {
                let r = v["radius"][m].as_f64().unwrap();
                assert!(r <= pgd, "point {index}: {m} radius {r} > pgd radius {pgd}");
            }
        }
    }
    assert!(checked_pgd >= 2, "PGD broke only {checked_pgd} of 3 points");

    // --methods restricts the methods; the table names the looseness column.
    let v = inspect_json(
        &run,
        &[
            "--index",
            "1",
            "--eps",
            "0.05",
            "--methods",
            "ibp,crown",
            "--json",
        ],
    );
    assert_eq!(keys(&v["margins"]), ["crown", "ibp"]);
    let table = inspect(&run, &["--index", "1", "--eps", "0.05"]);
    assert!(table.status.success());
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("looseness") && text.contains("certified radius"),
        "{text}"
    );

    // Errors name the bad flag.
    let err = |args: &[&str]| {
        let o = inspect(&run, args);
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    let e = err(&["--index", "100000", "--eps", "0.05"]);
    assert!(
        e.contains("--index 100000") && e.contains("out of range"),
        "{e}"
    );
    let e = err(&["--index", "0", "--eps", "0.05", "--methods", "ibp,alpha"]);
    assert!(
        e.contains("--methods") && e.contains("`alpha`") && e.contains("crown-ibp"),
        "{e}"
    );
    let e = err(&["--index", "0", "--eps", "-1"]);
    assert!(e.contains("--eps"), "{e}");
    let e = err(&["--index", "0", "--eps", "0.1", "--norm", "l3"]);
    assert!(e.contains("--norm"), "{e}");
    let bare = tmp.path().join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    std::fs::copy(run.join("config.toml"), bare.join("config.toml")).unwrap();
    let o = inspect(&bare, &["--index", "0", "--eps", "0.05"]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("RUN_DIR") && e.contains("model.safetensors"),
        "{e}"
    );
}
