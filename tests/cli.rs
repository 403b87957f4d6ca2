//! The command line and the run folder, through the real binary.
use std::path::Path;
use std::process::Command;

fn certlab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_certlab"))
}

fn manifest(p: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(p)
        .display()
        .to_string()
}

/// The per-epoch records of a run folder (without the final test evaluations).
fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r.get("model").is_none())
        .collect()
}

#[test]
fn run_writes_a_complete_run_folder_and_runs_lists_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("moons");
    let o = certlab()
        .args([
            "run",
            &manifest("presets/moons-mlp.toml"),
            "--epochs",
            "3",
            "--device",
            "cpu",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in [
        "config.toml",
        "metrics.jsonl",
        "model.safetensors",
        "model_best.safetensors",
        "log.txt",
        "summary.json",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let m = metrics(&out);
    assert_eq!(m.len(), 3);
    for (i, rec) in m.iter().enumerate() {
        assert_eq!(rec["epoch"], (i + 1) as u64);
        for key in ["step", "time_s", "train_loss", "clean_acc"] {
            assert!(rec[key].is_number(), "{key} in {rec}");
        }
        let acc = rec["clean_acc"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc));
        // Certified and PGD accuracy are on the robust subset: compare on the same points.
        let subset = rec["subset_clean_acc"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&subset));
        assert!(rec["cert_acc"]["ibp"].as_f64().unwrap() <= subset);
    }
    // The saved config reproduces the run, with the override applied.
    let cfg = certlab::config::ExperimentConfig::load(&out.join("config.toml")).unwrap();
    assert_eq!(cfg.train.epochs, 3);
    let o = certlab().args(["runs"]).arg(tmp.path()).output().unwrap();
    let listing = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert!(
        listing.contains("moons") && listing.contains("completed"),
        "{listing}"
    );
    // The accuracy shown is the best model's, on the test split (the run's final record).
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let best: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(best["model"], "best");
    assert_eq!(best["split"], "test");
    let acc = best["clean_acc"].as_f64().unwrap();
    assert!(
        listing.contains(&format!("{acc:.4}")) && listing.contains("test:best"),
        "final clean acc shown: {listing}"
    );

    // Running again into the same folder is refused and loses nothing.
    let before = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let o = certlab()
        .args([
            "run",
            &manifest("presets/moons-mlp.toml"),
            "--epochs",
            "1",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("already holds a run"), "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("metrics.jsonl")).unwrap(),
        before
    );
}

#[test]
fn bad_preset_errors_name_the_file_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("bad.toml");
    std::fs::write(&p, "[train]\neps = -1.0\n").unwrap();
    let o = certlab().arg("run").arg(&p).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("train.eps"),
        "{err}"
    );
    let o = certlab()
        .args(["run", "/nonexistent/x.toml"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("/nonexistent/x.toml"),
        "{err}"
    );
    let o = certlab()
        .args([
            "run",
            &manifest("presets/moons-mlp.toml"),
            "--device",
            "tpu",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("tpu") && err.contains("cuda"),
        "{err}"
    );
}

#[test]
fn missing_dataset_fails_with_the_file_named() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("mnist.toml");
    std::fs::write(
        &p,
        "[dataset]\nkind = \"mnist\"\npath = \"/nonexistent/mnist\"\n",
    )
    .unwrap();
    let out = tmp.path().join("run");
    let o = certlab()
        .arg("run")
        .arg(&p)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("/nonexistent/mnist/train-images-idx3-ubyte"),
        "{err}"
    );
    // The run folder records the failure.
    let summary = std::fs::read_to_string(out.join("summary.json")).unwrap();
    assert!(
        summary.contains("failed") && summary.contains("train-images"),
        "{summary}"
    );
}

#[test]
fn info_reports_torch_and_device() {
    let o = certlab().arg("info").output().unwrap();
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("torch version: 2.13.0"), "{text}");
    assert!(text.contains("device picked (auto): "), "{text}");
    assert!(text.contains("cuda available: "), "{text}");
    assert!(text.contains("threads: "), "{text}");
}

#[test]
fn fashion_mnist_mlp_one_epoch_reaches_80_percent() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("fmnist");
    let o = certlab()
        .args([
            "run",
            &manifest("presets/fmnist-mlp.toml"),
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = metrics(&out);
    let acc = m[0]["clean_acc"].as_f64().unwrap();
    assert!(acc >= 0.80, "clean test accuracy after one epoch: {acc}");
}

#[test]
fn ctrl_c_stops_cleanly_and_keeps_the_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let preset = tmp.path().join("long.toml");
    std::fs::write(
        &preset,
        "name = \"long\"\n[dataset]\nkind = \"moons\"\ntoy_points = 200\n[train]\nepochs = 100000\n",
    )
    .unwrap();
    let out = tmp.path().join("run");
    let mut child = certlab()
        .arg("run")
        .arg(&preset)
        .arg("--out")
        .arg(&out)
        .spawn()
        .unwrap();
    let metrics = out.join("metrics.jsonl");
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |s| s.lines().count()) < 2 {
        assert!(t0.elapsed().as_secs() < 60, "no metrics after 60 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(130),
        "Ctrl-C exits with 130 after a clean stop"
    );
    let summary = std::fs::read_to_string(out.join("summary.json")).unwrap();
    assert!(summary.contains("cancelled"), "{summary}");
    let kept = std::fs::read_to_string(&metrics).unwrap();
    assert!(kept.lines().count() >= 2 && kept.ends_with('\n'));
    assert!(out.join("model.safetensors").exists());
}

#[test]
fn a_torch_failure_mid_run_ends_the_console_with_one_sentence() {
    let tmp = tempfile::tempdir().unwrap();
    let preset = tmp.path().join("t.toml");
    std::fs::write(
        &preset,
        "name = \"t\"\n[dataset]\nkind = \"moons\"\ntoy_points = 200\n[train]\nepochs = 3\n",
    )
    .unwrap();
    // Step 9 of 4-step epochs: the first step of epoch 3 asks libtorch for 2^50 floats, through
    // a fallible op (an error) or a plain one (tch panics): the same sentence either way.
    for how in ["step", "panic"] {
        let out = tmp.path().join(how);
        let o = certlab()
            .arg("run")
            .arg(&preset)
            .arg("--out")
            .arg(&out)
            .env("CERTLAB_INJECT_TORCH_ERROR", format!("{how}:9"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{stderr}");
        let sentence = "training step 1 of epoch 3: out of memory (4503599.6 GB)";
        let last = stderr.lines().last();
        assert_eq!(last, Some(format!("error: {sentence}").as_str()), "{how}");
        assert!(
            !stderr.contains("frame #") && !stderr.contains("panicked"),
            "{stderr}"
        );
        let summary = std::fs::read_to_string(out.join("summary.json")).unwrap();
        let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
        assert_eq!(summary["error"], sentence);
        assert_eq!(metrics(&out).len(), 2, "epochs 1 and 2 are kept");
        let log = std::fs::read_to_string(out.join("log.txt")).unwrap();
        assert!(
            log.contains("frame #"),
            "the native frames go to log.txt: {log}"
        );
    }
}

#[test]
fn runs_columns_line_up_for_every_status() {
    use certlab::run::{RunWriter, Summary};
    let tmp = tempfile::tempdir().unwrap();
    let cfg = certlab::config::ExperimentConfig::default_experiment();
    // One completed run, one without summary.json ("running or crashed"), one cancelled.
    for (name, epoch, outcome) in [
        ("a-done", 12, Some("completed")),
        ("b-crashed", 3, None),
        ("c-stopped", 100, Some("cancelled")),
    ] {
        let mut w = RunWriter::create(&tmp.path().join(name), &cfg).unwrap();
        w.append_metrics(&certlab::metrics::EvalRecord {
            epoch,
            clean_acc: 0.5,
            ..Default::default()
        })
        .unwrap();
        if let Some(outcome) = outcome {
            w.write_summary(&Summary {
                outcome: outcome.into(),
                error: None,
                elapsed_s: 1.0,
                device: "cpu".into(),
            })
            .unwrap();
        }
    }
    let o = certlab().args(["runs"]).arg(tmp.path()).output().unwrap();
    assert!(o.status.success());
    let listing = String::from_utf8_lossy(&o.stdout).into_owned();
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 4, "{listing}");
    let header = lines[0];
    let col = |name: &str| header.find(name).unwrap();
    for (line, status, epoch) in [
        (lines[1], "completed", "12"),
        (lines[2], "running or crashed", "3"),
        (lines[3], "cancelled", "100"),
    ] {
        assert_eq!(line.find("standard"), Some(col("method")), "{listing}");
        assert_eq!(line.find(status), Some(col("status")), "{listing}");
        // Right-aligned: the epoch ends where its header ends, the accuracy likewise.
        let epoch_end = col("epoch") + "epoch".len();
        assert_eq!(
            &line[epoch_end - epoch.len()..epoch_end],
            epoch,
            "{listing}"
        );
        let clean_end = col("clean") + "clean".len();
        assert_eq!(&line[clean_end - 6..clean_end], "0.5000", "{listing}");
        // The eval eps and norm beside the training eps (runs compare only at equal ones),
        // and the wall time of runs that ended.
        let eval_end = col("eval_eps") + "eval_eps".len();
        assert_eq!(&line[eval_end - 9..eval_end], "0.03 linf", "{listing}");
        let wall_end = col("wall_s") + "wall_s".len();
        let wall = if status == "running or crashed" {
            "-"
        } else {
            "1.0"
        };
        assert_eq!(&line[wall_end - wall.len()..wall_end], wall, "{listing}");
    }
}

#[test]
fn missing_preset_is_named_once() {
    let tmp = tempfile::tempdir().unwrap();
    let o = certlab()
        .args(["run", "missing.toml"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("missing.toml"), "{err}");
    assert_eq!(
        err.matches("No such file or directory").count(),
        1,
        "the reason is said once: {err}"
    );
}
