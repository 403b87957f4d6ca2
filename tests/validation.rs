//! Model selection off the test set: with a validation split, every per-epoch evaluation and
//! the choice of `model_best` use the validation split only, and the test split is read once,
//! at the end. Proven by training twice on IDX files that differ only in the test labels.
use certlab::config::{BoundMethod, DatasetKind, ExperimentConfig, Method};
use certlab::metrics::{EvalRecord, FinalModel, Split};
use certlab::model::Network;
use certlab::train::prepare;
use std::path::Path;
use tch::Device;

const SIDE: usize = 8;

fn idx(magic: u32, dims: &[u32], body: &[u8]) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(body);
    v
}

/// A small learnable image set: the label is the brightest of three bands, plus noise.
fn images(n: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let label = (next() % 3) as u8;
        for r in 0..SIDE {
            for _ in 0..SIDE {
                let band = (r * 3 / SIDE) as u8;
                let base = if band == label { 170 } else { 40 };
                pixels.push(base + (next() % 60) as u8);
            }
        }
        labels.push(label);
    }
    (pixels, labels)
}

fn write_set(dir: &Path, test_labels: &[u8]) {
    let s = SIDE as u32;
    let (train_px, train_lb) = images(500, 1);
    let (test_px, _) = images(200, 2);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("train-images-idx3-ubyte"),
        idx(2051, &[500, s, s], &train_px),
    )
    .unwrap();
    std::fs::write(
        dir.join("train-labels-idx1-ubyte"),
        idx(2049, &[500], &train_lb),
    )
    .unwrap();
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte"),
        idx(2051, &[200, s, s], &test_px),
    )
    .unwrap();
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte"),
        idx(2049, &[200], test_labels),
    )
    .unwrap();
}

fn config(data: &Path) -> ExperimentConfig {
    let mut cfg = ExperimentConfig::default_experiment();
    cfg.name = "val".into();
    cfg.dataset.kind = DatasetKind::Mnist;
    cfg.dataset.path = data.display().to_string();
    cfg.dataset.val_size = Some(100);
    cfg.model.hidden = vec![24];
    cfg.train.method = Method::Ibp;
    cfg.train.eps = 0.02;
    cfg.train.epochs = 4;
    cfg.train.batch_size = 50;
    cfg.eval.eps = vec![0.02];
    cfg.eval.bounds = vec![BoundMethod::Ibp];
    cfg.eval.pgd_steps = 5;
    cfg.eval.robust_subset = 0;
    cfg
}

/// Trains `cfg` with `certlab run` in a fresh process (two runs in one process need not be
/// bit-identical: MKL's kernels depend on buffer alignment), and reads back its records and
/// its best model.
fn run(cfg: &ExperimentConfig, dir: &Path) -> (Vec<EvalRecord>, Network) {
    let preset = dir.with_extension("toml");
    cfg.save(&preset).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_certlab"))
        .args([
            "run",
            preset.to_str().unwrap(),
            "--out",
            dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "certlab run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = certlab::run::load_run(dir).unwrap().metrics;
    let mut best = prepare(cfg, Device::Cpu).unwrap().net;
    best.load_weights(&dir.join("model_best.safetensors"))
        .unwrap();
    (records, best)
}

#[test]
fn the_test_split_influences_neither_training_nor_model_selection() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, labels) = images(200, 2);
    // The same test images with every label moved to another class.
    let corrupted: Vec<u8> = labels.iter().map(|l| (l + 1) % 3).collect();
    write_set(&tmp.path().join("clean"), &labels);
    write_set(&tmp.path().join("corrupt"), &corrupted);
    let (a, best_a) = run(
        &config(&tmp.path().join("clean")),
        &tmp.path().join("run-a"),
    );
    let (b, best_b) = run(
        &config(&tmp.path().join("corrupt")),
        &tmp.path().join("run-b"),
    );

    let epochs = |r: &[EvalRecord]| -> Vec<EvalRecord> {
        r.iter()
            .filter(|x| x.model.is_none())
            .map(|x| EvalRecord {
                time_s: 0.0,
                ..x.clone()
            })
            .collect()
    };
    let (ea, eb) = (epochs(&a), epochs(&b));
    assert_eq!(ea.len(), 4);
    assert!(ea.iter().all(|r| r.split == Some(Split::Val)), "{ea:?}");
    assert_eq!(
        ea, eb,
        "the per-epoch (validation) records depend on the test labels"
    );
    for (pa, pb) in best_a.parameters().iter().zip(best_b.parameters()) {
        assert!(pa.equal(&pb), "model_best differs between the runs");
    }
    // The final records are on the test split, of the last and the best model, and they do
    // see the labels: the corrupted ones give a different (low) accuracy.
    let finals = |r: &[EvalRecord]| -> Vec<(FinalModel, f64)> {
        r.iter()
            .filter_map(|x| x.model.map(|m| (m, x.clean_acc)))
            .collect()
    };
    let (fa, fb) = (finals(&a), finals(&b));
    assert_eq!(
        fa.iter().map(|f| f.0).collect::<Vec<_>>(),
        [FinalModel::Last, FinalModel::Best]
    );
    assert!(a
        .iter()
        .filter(|r| r.model.is_some())
        .all(|r| r.split == Some(Split::Test)));
    assert!(
        fa[1].1 > 0.6,
        "the model did not learn: test acc {}",
        fa[1].1
    );
    assert!(
        fb[1].1 < fa[1].1 - 0.3,
        "corrupted test labels gave {} vs {}",
        fb[1].1,
        fa[1].1
    );
    // The run folder holds the same records, and `reported` picks the best model's test one.
    let on_disk = certlab::run::load_run(&tmp.path().join("run-a")).unwrap();
    let reported = certlab::metrics::reported(&on_disk.metrics).unwrap();
    assert_eq!(reported.model, Some(FinalModel::Best));
    assert_eq!(certlab::metrics::split_label(reported), "test:best");
}

#[test]
fn without_a_validation_split_epochs_are_evaluated_on_the_test_split() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, labels) = images(200, 2);
    write_set(&tmp.path().join("data"), &labels);
    let mut cfg = config(&tmp.path().join("data"));
    cfg.dataset.val_size = Some(0);
    cfg.train.epochs = 2;
    let (records, _) = run(&cfg, &tmp.path().join("run"));
    assert_eq!(
        records.len(),
        2,
        "no final test records without a validation split"
    );
    assert!(records
        .iter()
        .all(|r| r.split == Some(Split::Test) && r.model.is_none()));
    assert_eq!(certlab::metrics::split_label(&records[1]), "test:no-val");
}
