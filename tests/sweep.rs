//! `certlab sweep` through the real binary: a local sweep and its report, validation before
//! anything starts, resume after kill -9, and a real one-node Slurm cluster.
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn certlab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_certlab"))
}

/// `certlab sweep SPEC --out OUT EXTRA..`.
fn sweep_cmd(spec: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = certlab();
    c.arg("sweep").arg(spec).arg("--out").arg(out).args(extra);
    c
}

fn manifest(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// A sweep file over the moons CROWN-IBP preset: `lrs` x `seeds`, `epochs` each.
fn sweep_file(dir: &Path, name: &str, lrs: &str, seeds: &str, epochs: u32) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\nbase = \"{}\"\nseeds = {seeds}\n[[axis]]\nkey = \"optimizer.lr\"\nvalues = {lrs}\n[set]\n\"train.epochs\" = {epochs}\n\"device\" = \"cpu\"\n",
            manifest("presets/moons-crown-ibp.toml").display()
        ),
    )
    .unwrap();
    path
}

fn json(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The record that stands for a run: the final test evaluation of the best model.
fn final_clean(run: &Path) -> f64 {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let best = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .rfind(|r| r["model"] == "best")
        .expect("a final test record of the best model");
    best["clean_acc"].as_f64().unwrap()
}

#[test]
fn a_local_sweep_writes_every_point_and_the_report_aggregates_them() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = sweep_file(tmp.path(), "lr", "[0.003, 0.03]", "[0, 1]", 2);
    let out = tmp.path().join("out");
    let o = sweep_cmd(&spec, &out, &["--jobs", "2"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dir = out.join("lr");
    let points: Vec<Value> = std::fs::read_to_string(dir.join("points.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(points.len(), 4);
    for p in &points {
        let run = dir.join(p["run"].as_str().unwrap());
        let summary: Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(summary["outcome"], "completed", "{}", run.display());
        let cfg = std::fs::read_to_string(run.join("config.toml")).unwrap();
        assert!(cfg.contains(&format!("seed = {}", p["seed"])), "{cfg}");
        assert!(cfg.contains("epochs = 2"));
    }
    let rep = json(
        &certlab()
            .args(["sweep", "report", "--json"])
            .arg(&dir)
            .output()
            .unwrap(),
    );
    assert_eq!(rep["name"], "lr");
    assert_eq!(rep["axes"], serde_json::json!(["optimizer.lr"]));
    let groups = rep["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    for (gi, g) in groups.iter().enumerate() {
        assert_eq!(g["n_done"], 2);
        assert_eq!(g["seeds"], serde_json::json!([0, 1]));
        // The group's mean and std against the run folders, read independently.
        let clean: Vec<f64> = (0..2)
            .map(|s| final_clean(&dir.join(format!("p{gi:04}-s{s}"))))
            .collect();
        let mean = (clean[0] + clean[1]) / 2.0;
        let std = (clean[0] - clean[1]).abs() / 2f64.sqrt();
        let m = &g["metrics"]["clean_acc"];
        assert!((m["mean"].as_f64().unwrap() - mean).abs() < 1e-9, "{m}");
        assert!((m["std"].as_f64().unwrap() - std).abs() < 1e-9, "{m}");
        assert!((m["ci95"].as_f64().unwrap() - 12.706 * std / 2f64.sqrt()).abs() < 1e-6);
        assert!(g["metrics"]["cert_acc.best"]["mean"].is_number());
        assert!(g["pareto"].is_boolean());
    }
    assert!(groups.iter().any(|g| g["pareto"] == true));
    let csv = certlab()
        .args(["sweep", "report", "--csv"])
        .arg(&dir)
        .output()
        .unwrap();
    let csv = String::from_utf8_lossy(&csv.stdout);
    assert!(csv.starts_with("optimizer.lr,n_done,"), "{csv}");
    assert_eq!(csv.lines().count(), 3);
    // Running it again resumes: nothing left to do, nothing rerun.
    let again = sweep_cmd(&spec, &out, &[]).output().unwrap();
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("4/4 done (4 from before)"), "{err}");
    assert!(!dir.join("attempts").exists());
}

#[test]
fn a_bad_point_is_refused_before_anything_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = sweep_file(tmp.path(), "bad", "[0.01, -0.5]", "[0, 3]", 1);
    let out = tmp.path().join("out");
    let o = sweep_cmd(&spec, &out, &[]).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("optimizer.lr") && err.contains("p0001-s0"),
        "{err}"
    );
    assert!(!out.exists(), "nothing is written for an invalid sweep");
    // --dry-run prints the points of a good sweep and creates nothing.
    let spec = sweep_file(tmp.path(), "good", "[0.01, 0.02, 0.03]", "[0, 1]", 1);
    let o = sweep_cmd(&spec, &out, &["--dry-run"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("6 points"), "{text}");
    assert!(
        text.contains("p0002-s1") && text.contains("optimizer.lr=0.03"),
        "{text}"
    );
    assert!(!out.exists());
}

#[test]
fn a_point_that_cannot_fit_is_refused_before_any_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("mem.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"mem\"\nbase = \"{}\"\n[[axis]]\nkey = \"model.hidden\"\nvalues = [[16, 16], [65536, 65536]]\n",
            manifest("presets/moons-mlp.toml").display()
        ),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let o = sweep_cmd(&spec, &out, &[]).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("p0001-s0")
            && err.contains("model.hidden")
            && err.contains("nothing was started"),
        "{err}"
    );
    assert!(!out.exists(), "no sweep folder for a sweep that cannot run");
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_sweep_killed_with_sigkill_resumes_where_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    // Long enough per point that the kill lands while the second point trains.
    let spec = sweep_file(tmp.path(), "k", "[0.01, 0.02, 0.03]", "[0]", 60);
    let out = tmp.path().join("out");
    let dir = out.join("k");
    let mut child = sweep_cmd(&spec, &out, &["--jobs", "1", "--threads", "1"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let done = |id: &str| dir.join(id).join("summary.json").exists();
    wait_for("the first point", Duration::from_secs(120), || {
        done("p0000-s0")
    });
    wait_for("the second point to start", Duration::from_secs(30), || {
        dir.join("p0001-s0/metrics.jsonl").exists()
    });
    let first_summary = std::fs::read_to_string(dir.join("p0000-s0/summary.json")).unwrap();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // The orphaned run is stopped by the kernel's parent-death signal and keeps its folder.
    wait_for("the orphan to stop", Duration::from_secs(30), || {
        done("p0001-s0")
    });
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("p0001-s0/summary.json")).unwrap())
            .unwrap();
    assert_eq!(s["outcome"], "cancelled");
    let status = certlab()
        .args(["sweep", "status"])
        .arg(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("1 done") && text.contains("1 cancelled"),
        "{text}"
    );
    let o = sweep_cmd(&spec, &out, &["--jobs", "1"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for id in ["p0000-s0", "p0001-s0", "p0002-s0"] {
        assert!(done(id), "{id}");
    }
    // The finished point was not rerun; the cancelled one's folder was kept aside.
    assert_eq!(
        std::fs::read_to_string(dir.join("p0000-s0/summary.json")).unwrap(),
        first_summary
    );
    assert!(dir.join("attempts/p0001-s0.1/metrics.jsonl").exists());
}

#[test]
fn ctrl_c_stops_every_running_point_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = sweep_file(tmp.path(), "c", "[0.01, 0.02, 0.03]", "[0]", 60);
    let out = tmp.path().join("out");
    let dir = out.join("c");
    let child = sweep_cmd(&spec, &out, &["--jobs", "2", "--threads", "1"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("two points to train", Duration::from_secs(60), || {
        ["p0000-s0", "p0001-s0"]
            .iter()
            .all(|id| dir.join(id).join("metrics.jsonl").exists())
    });
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(
        err.contains("run the same command again to resume"),
        "{err}"
    );
    for id in ["p0000-s0", "p0001-s0"] {
        let s: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(id).join("summary.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(s["outcome"], "cancelled", "{id}");
    }
    assert!(
        !dir.join("p0002-s0").exists(),
        "nothing new starts after Ctrl-C"
    );
}

/// Stops the one-node cluster whatever the test does.
struct Cluster(PathBuf);

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(manifest("scripts/slurm-local.sh"))
            .arg("stop")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_sweep_runs_as_a_job_array_on_a_real_one_node_slurm() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster_dir = tmp.path().join("cluster");
    let started = Command::new("bash")
        .arg(manifest("scripts/slurm-local.sh"))
        .arg("start")
        .arg(&cluster_dir)
        .output()
        .unwrap();
    let _cluster = Cluster(cluster_dir.clone());
    assert!(
        started.status.success(),
        "the one-node Slurm did not start (make test installs slurmctld slurmd slurm-client \
         munge): {}",
        String::from_utf8_lossy(&started.stderr)
    );
    let conf = cluster_dir.join("slurm.conf");
    let spec = sweep_file(tmp.path(), "sl", "[0.003, 0.03]", "[0, 1]", 2);
    let out = tmp.path().join("shared");
    let sweep = |extra: &[&str]| {
        sweep_cmd(&spec, &out, &["--backend", "slurm", "--cpus-per-task", "1"])
            .env("SLURM_CONF", &conf)
            .args(extra)
            .output()
            .unwrap()
    };
    let o = sweep(&[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let job = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(job.parse::<u64>().is_ok(), "a job id: {job:?}");
    let dir = out.join("sl");
    let sbatch = std::fs::read_to_string(dir.join("slurm/array.sbatch")).unwrap();
    assert!(sbatch.contains("#SBATCH --array=0-3"), "{sbatch}");
    let status = || {
        let o = certlab()
            .env("SLURM_CONF", &conf)
            .args(["sweep", "status"])
            .arg(&dir)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    wait_for("the array to finish", Duration::from_secs(240), || {
        status().contains("4 points: 4 done")
    });
    let text = status();
    assert!(text.contains("COMPLETED"), "squeue's word is shown: {text}");
    // Submitting again needs --resume, and then there is nothing left to run.
    assert!(!sweep(&[]).status.success());
    let o = sweep(&["--resume"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("nothing to submit"));
    let rep = json(
        &certlab()
            .args(["sweep", "report", "--json"])
            .arg(&dir)
            .output()
            .unwrap(),
    );
    let groups = rep["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    assert!(groups.iter().all(|g| g["n_done"] == 2));
}
