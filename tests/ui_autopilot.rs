//! The screenshot autopilot (`certlab gui --inspect RUN --inspect-smoothing --shot ...`) on a
//! Gaussian-trained moons run written by the binary, headless with egui_kittest: it opens the
//! point, moves the eps slider, ticks the 2-D view's two smoothing toggles and is done only
//! once the smoothed regions and the point's noise cloud are answered. The radius it then shows
//! is `certlab smooth`'s at the view's seed: ticking after the Inspector's own requests leaves
//! torch's seeded stream to the smoothing jobs alone. Its own file: a test running beside it
//! in one process would draw from the same global generator.
use certlab::config::ExperimentConfig;
use certlab::smooth_view::VIEW_SEED;
use certlab::ui::{Autopilot, InspectShot, Tab};
use egui_kittest::kittest::{NodeT, Queryable};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod window;

const BIN: &str = env!("CARGO_BIN_EXE_certlab");

fn train(dir: &Path) -> PathBuf {
    let preset = dir.join("p.toml");
    std::fs::write(
        &preset,
        r#"name = "moons-smooth-shot"
seed = 5
device = "cpu"
[dataset]
kind = "moons"
toy_points = 300
[model]
hidden = [16, 16]
[train]
method = "gaussian"
noise_sigma = 0.15
epochs = 3
batch_size = 32
[optimizer]
lr = 0.01
[eval]
eps = [0.05]
norm = "l2"
[eval.smoothing]
sigma = [0.15]
n0 = 50
n = 2000
batch = 500
points = 4
"#,
    )
    .unwrap();
    let out = dir.join("run");
    let o = Command::new(BIN)
        .arg("run")
        .arg(&preset)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

#[test]
fn the_autopilot_ticks_the_smoothing_toggles_and_waits_for_their_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = train(tmp.path());
    let runs = tmp.path().to_path_buf();
    let (mut h, _cmd_rx, _ev_tx) = window::fake_window(
        runs,
        ExperimentConfig::default_experiment(),
        [1400.0, 900.0],
    );
    h.run_steps(1);
    // No shots and no quit: the autopilot hands itself back (None) once it is ready.
    let mut autopilot = Autopilot::default();
    autopilot.inspect = Some(InspectShot {
        run_dir: run_dir.clone(),
        index: 0,
        eps: Some(0.07),
        layer: 0,
        smoothing: true,
    });
    h.state_mut().autopilot = Some(autopilot);
    let t0 = Instant::now();
    while h.state().autopilot.is_some() && t0.elapsed() < Duration::from_secs(180) {
        h.run_steps(1);
        std::thread::sleep(Duration::from_millis(20));
    }
    let app = h.state();
    assert!(app.autopilot.is_none(), "the autopilot never got ready");
    assert_eq!(app.tab, Tab::Inspector);
    let insp = &app.tabs.inspector;
    assert_eq!(insp.eps, 0.07);
    let o = &insp.smooth;
    assert!(o.error.is_none(), "{:?}", o.error);
    assert!(o.show_regions && o.show_cloud, "both toggles ticked");
    assert!(!o.busy());
    assert_eq!(o.regions.as_ref().unwrap().majority.len(), 64 * 64);
    let drawn = o
        .drawing(0)
        .expect("point 0's cloud is there when the shot is taken");
    assert_eq!(drawn.samples.len(), 300);

    // The radius is the command line's at the view's seed.
    let s = o.settings().unwrap();
    let out = Command::new(BIN)
        .arg("smooth")
        .arg(&run_dir)
        .args([
            "--sigma", "0.15", "--noise", "gaussian", "--n0", "50", "--n", "2000",
        ])
        .args([
            "--alpha",
            &s.alpha.to_string(),
            "--batch",
            &s.batch.to_string(),
        ])
        .args(["--points", "1", "--seed", &VIEW_SEED.to_string(), "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        drawn.radius,
        v["points"][0]["radius"].as_f64().unwrap(),
        "{v}"
    );

    // The toggles are the window's own checkboxes, ticked.
    h.run_steps(2);
    for label in ["smoothed regions", "noise cloud and certified radius"] {
        let node = h.get_by_label(label);
        assert_eq!(
            node.accesskit_node().toggled(),
            Some(egui::accesskit::Toggled::True),
            "{label}"
        );
    }
}
