//! `certlab lipschitz` and Lipschitz training through the binary, on run folders made by
//! `certlab run`.
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_certlab");

fn run_preset(text: &str, dir: &Path) -> std::path::PathBuf {
    let preset = dir.join("preset.toml");
    std::fs::write(&preset, text).unwrap();
    let run_dir = dir.join("run");
    let out = Command::new(BIN)
        .arg("run")
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
    run_dir
}

fn certlab(args: &[&str], run_dir: &Path) -> Output {
    Command::new(BIN)
        .arg(args[0])
        .arg(run_dir)
        .args(&args[1..])
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
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

const MOONS_LIP: &str = r#"
name = "moons-lip"
[dataset]
kind = "moons"
toy_points = 300
[model]
arch = "mlp"
hidden = [16, 16]
[train]
method = "lipschitz"
epochs = 2
batch_size = 32
lip_weight = 0.05
lip_target = 4.0
[optimizer]
lr = 0.01
[eval]
eps = [0.05]
norm = "l2"
pgd_steps = 10
robust_subset = 200
lipschitz = ["gram", "lipsdp", "empirical"]
"#;

#[test]
fn lipschitz_json_on_a_lipschitz_trained_run() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = run_preset(MOONS_LIP, tmp.path());
    // Per-epoch records: the estimators, the enforced bound, the l_2 certificate.
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let recs: Vec<Value> = metrics
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r.get("model").is_none())
        .collect();
    assert_eq!(recs.len(), 2);
    for r in &recs {
        let lip = &r["lipschitz"];
        for k in [
            "gram",
            "lipsdp",
            "empirical",
            "train_bound",
            "train_bound_max",
        ] {
            assert!(lip[k].as_f64().is_some(), "{k} missing: {r}");
        }
        assert!(lip["train_bound_max"].as_f64().unwrap() <= 4.0, "{r}");
        assert!(lip["empirical"].as_f64().unwrap() <= lip["lipsdp"].as_f64().unwrap());
        assert!(r["cert_acc"]["lipschitz"].as_f64().is_some(), "{r}");
    }

    let v = json_of(&certlab(&["lipschitz", "--json"], &run_dir));
    let layers = v["layers"].as_array().unwrap();
    let idx: Vec<i64> = layers
        .iter()
        .map(|l| l["index"].as_i64().unwrap())
        .collect();
    assert_eq!(idx, vec![0, 2, 4]);
    for l in layers {
        assert_eq!(l["kind"], "linear");
        let (p, e, g) = (
            l["power"].as_f64().unwrap(),
            l["exact"].as_f64().unwrap(),
            l["gram"].as_f64().unwrap(),
        );
        assert!(p <= e * (1.0 + 1e-9) && e <= g * (1.0 + 1e-9), "{l}");
    }
    let net = &v["network"];
    let get = |k: &str| {
        net[k]
            .as_f64()
            .unwrap_or_else(|| panic!("network.{k}: {v}"))
    };
    for k in ["power", "gram", "exact", "product", "lipsdp", "empirical"] {
        assert!(v["seconds"][k].as_f64().unwrap() >= 0.0, "seconds.{k}");
    }
    assert!(get("empirical") <= get("lipsdp"));
    assert!(get("lipsdp") <= get("product") * (1.0 + 1e-9));
    assert!(get("product") <= get("gram") * (1.0 + 1e-9));
    assert!(
        get("gram") <= 4.0,
        "the enforced bound holds for the saved model: {net}"
    );

    // A subset, as a table.
    let out = certlab(&["lipschitz", "--methods", "exact,empirical"], &run_dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("exact") && text.contains("empirical"),
        "{text}"
    );
    assert!(!text.contains("lipsdp"), "{text}");

    let bad = certlab(&["lipschitz", "--methods", "gram,magic"], &run_dir);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("`magic`") && err.contains("empirical"),
        "{err}"
    );
}

#[test]
fn one_lipschitz_run_is_certified_by_its_margins_and_refused_by_ibp() {
    let tmp = tempfile::tempdir().unwrap();
    let preset = MOONS_LIP
        .replace("arch = \"mlp\"", "arch = \"sll\"")
        .replace("method = \"lipschitz\"", "method = \"standard\"")
        .replace("lip_weight = 0.05\nlip_target = 4.0\n", "")
        .replace(
            "\"gram\", \"lipsdp\", \"empirical\"",
            "\"gram\", \"empirical\"",
        );
    let run_dir = run_preset(&preset, tmp.path());
    let v = json_of(&certlab(
        &["lipschitz", "--json", "--methods", "gram,exact,empirical"],
        &run_dir,
    ));
    let kinds: Vec<&str> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["spectral", "sll", "sll", "spectral"]);
    assert!(v["network"]["gram"].as_f64().unwrap() <= 1.0 + 1e-5, "{v}");
    assert!(
        v["network"]["empirical"].as_f64().unwrap() <= 1.0 + 1e-5,
        "{v}"
    );
    let bad = certlab(&["lipschitz", "--methods", "lipsdp"], &run_dir);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("sll"));
    let out = certlab(
        &["eval", "--eps", "0.05", "--methods", "clean,ibp"],
        &run_dir,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("1-Lipschitz") && err.contains("spectral"),
        "{err}"
    );
}

const FMNIST_SLL_CONV: &str = r#"
name = "fmnist-sll-conv-tiny"
[dataset]
kind = "fashion-mnist"
train_size = 512
test_size = 200
[model]
arch = "sll-conv"
hidden = [4, 6]
[train]
method = "standard"
epochs = 1
batch_size = 64
[optimizer]
lr = 0.01
[eval]
eps = [0.3]
norm = "l2"
bounds = []
pgd_steps = 10
robust_subset = 100
lipschitz = ["gram", "empirical"]
"#;

#[test]
fn conv_sll_architecture_trains_and_is_certified_by_its_margins() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = run_preset(FMNIST_SLL_CONV, tmp.path());
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let r: Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    let get = |v: &Value| v.as_f64().unwrap_or_else(|| panic!("missing in {r}"));
    let (clean, pgd, cert) = (
        get(&r["subset_clean_acc"]),
        get(&r["pgd_acc"]),
        get(&r["cert_acc"]["lipschitz"]),
    );
    assert!(
        cert <= pgd && pgd <= clean,
        "cert {cert} pgd {pgd} clean {clean}"
    );
    assert!(clean > 0.3, "one epoch on 512 points learns something: {r}");
    let lip = &r["lipschitz"];
    assert!(get(&lip["gram"]) <= 1.0 + 1e-5, "{r}");
    assert!(
        get(&lip["empirical"]) <= get(&lip["gram"]) * (1.0 + 1e-6),
        "{r}"
    );

    let v = json_of(&certlab(
        &["lipschitz", "--json", "--methods", "power,gram,exact"],
        &run_dir,
    ));
    let layers: Vec<(i64, &str)> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["index"].as_i64().unwrap(), l["kind"].as_str().unwrap()))
        .collect();
    // Channel padding (0) and Flatten (3) are isometries and not listed.
    assert_eq!(
        layers,
        vec![(1, "sll-conv"), (2, "sll-conv"), (4, "spectral")]
    );
    let net = &v["network"];
    let (p, e, g) = (
        net["power"].as_f64().unwrap(),
        net["exact"].as_f64().unwrap(),
        net["gram"].as_f64().unwrap(),
    );
    assert!(
        p <= e * (1.0 + 1e-9) && e <= g * (1.0 + 1e-9) && g <= 1.0 + 1e-5,
        "{v}"
    );
}

#[test]
fn conv_sll_is_refused_on_toy_data_and_with_too_many_channels() {
    use certlab::config::{Arch, DatasetKind, ExperimentConfig};
    let mut c = ExperimentConfig::default_experiment();
    c.model.arch = Arch::SllConv;
    c.model.hidden = vec![8];
    c.eval.bounds.clear();
    let problems = c.validate();
    assert!(
        problems
            .iter()
            .any(|p| p.field == "model.arch" && p.message.contains("image")),
        "{problems:?}"
    );
    c.dataset.kind = DatasetKind::FashionMnist;
    assert!(c.validate().is_empty(), "{:?}", c.validate());
    c.model.hidden = vec![8, 1000];
    let problems = c.validate();
    assert!(
        problems
            .iter()
            .any(|p| p.field == "model.hidden" && p.message.contains("256")),
        "{problems:?}"
    );
}

#[test]
fn admm_enforced_training_keeps_the_certified_lipsdp_bound_at_every_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let preset = MOONS_LIP
        .replace("hidden = [16, 16]", "hidden = [8, 8]")
        .replace("epochs = 2", "epochs = 3")
        .replace(
            "lip_weight = 0.05\nlip_target = 4.0\n",
            "lip_target = 0.3\nlip_bound = \"admm\"\nadmm_penalty = 2.0\n",
        )
        .replace(
            "\"gram\", \"lipsdp\", \"empirical\"",
            "\"lipsdp\", \"empirical\"",
        );
    let run_dir = run_preset(&preset, tmp.path());
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let recs: Vec<Value> = metrics
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r.get("model").is_none())
        .collect();
    assert_eq!(recs.len(), 3);
    for r in &recs {
        let lip = &r["lipschitz"];
        let f = |k: &str| {
            lip[k]
                .as_f64()
                .unwrap_or_else(|| panic!("{k} missing: {r}"))
        };
        assert!(f("admm_lipsdp") <= 0.3 * (1.0 + 1e-6), "{r}");
        assert!(f("lipsdp") <= 0.3 * (1.0 + 1e-6), "{r}");
        assert!(f("empirical") <= f("lipsdp"), "{r}");
        assert!(f("admm_residual") >= 0.0, "{r}");
    }
    // The saved model is the projected one: certified by the CLI's own LipSDP.
    let v = json_of(&certlab(
        &["lipschitz", "--json", "--methods", "lipsdp"],
        &run_dir,
    ));
    let l = v["network"]["lipsdp"].as_f64().unwrap();
    assert!(l <= 0.3 * (1.0 + 1e-6), "{v}");
    assert!(l > 0.1, "the bound is active, not collapsed: {v}");
    let log = std::fs::read_to_string(run_dir.join("log.txt")).unwrap();
    assert!(log.contains("ADMM projection"), "{log}");
    assert!(log.contains("initial weights projected"), "{log}");
}

#[test]
fn admm_is_refused_beyond_small_mlps() {
    use certlab::config::{DatasetKind, ExperimentConfig, LipBound, Method};
    let mut c = ExperimentConfig::default_experiment();
    c.train.method = Method::Lipschitz;
    c.train.lip_target = 1.0;
    c.train.lip_bound = LipBound::Admm;
    let problems = c.validate();
    assert!(
        problems.iter().any(|p| p.field == "train.lip_bound"),
        "hidden {:?} is too wide: {problems:?}",
        c.model.hidden
    );
    c.model.hidden = vec![16, 16];
    assert!(c.validate().is_empty(), "{:?}", c.validate());
    c.dataset.kind = DatasetKind::FashionMnist;
    let problems = c.validate();
    assert!(
        problems
            .iter()
            .any(|p| p.field == "train.lip_bound" && p.message.contains("lipsdp")),
        "{problems:?}"
    );
}
