//! Randomized smoothing in the 2-D view, on a Gaussian-trained moons run written by the binary:
//! the smoothed regions equal a Monte Carlo majority computed here, cell by cell, with our own
//! noise draws (within sampling error, and exactly where the vote is clear); a point's radius
//! is the one `certlab smooth` reports for it under the same seed; its cloud is spread as the
//! noise is. In the window (egui_kittest), the Inspector's 2-D view of the run offers the two
//! toggles, and the radius it draws for test point 0 is `certlab smooth`'s at its default seed.
use certlab::config::{ExperimentConfig, Noise};
use certlab::run;
use certlab::smooth_view::{run_smooth_job, SmoothAnswer, SmoothJob, SmoothSettings, VIEW_SEED};
use certlab::ui::{App, Tab};
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

mod window;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_certlab");
const SIGMA: f64 = 0.12;

fn train(dir: &Path) -> PathBuf {
    let preset = format!(
        r#"name = "moons-smooth"
seed = 4
device = "cpu"
[dataset]
kind = "moons"
toy_points = 300
[model]
hidden = [16, 16]
[train]
method = "gaussian"
noise_sigma = {SIGMA}
epochs = 3
batch_size = 32
[optimizer]
lr = 0.01
[eval]
eps = [0.05]
norm = "l2"
[eval.smoothing]
sigma = [{SIGMA}]
n0 = 50
n = 2000
batch = 500
points = 4
"#
    );
    common::train(dir, &preset)
}

/// `certlab smooth RUN --points 1 --json` with the run's settings and `seed`.
fn cli_smooth(run_dir: &Path, s: &SmoothSettings, seed: i64) -> serde_json::Value {
    let o = Command::new(BIN)
        .arg("smooth")
        .arg(run_dir)
        .args(["--sigma", &SIGMA.to_string(), "--noise", "gaussian"])
        .args(["--n0", "50", "--n", "2000", "--alpha", &s.alpha.to_string()])
        .args(["--batch", &s.batch.to_string(), "--points", "1"])
        .args(["--seed", &seed.to_string(), "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn settings(run_dir: &Path) -> SmoothSettings {
    let cfg = run::load_run(run_dir).unwrap().config;
    let all = SmoothSettings::of(&cfg);
    // eval.smoothing's level and the training noise are the same classifier: one option.
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(
        (all[0].noise, all[0].sigma, all[0].n),
        (Noise::Gaussian, SIGMA, 2000)
    );
    all[0]
}

#[test]
fn smoothed_regions_and_a_points_radius_match_independent_computations() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = train(tmp.path());
    let s = settings(&run_dir);

    // The regions against our own Monte Carlo majority over the base network.
    let (r, draws) = (16usize, 256u64);
    let SmoothAnswer::Regions(reg) = run_smooth_job(
        &run_dir,
        false,
        s,
        &SmoothJob::Regions {
            resolution: r,
            draws,
        },
        Some(1),
    )
    .unwrap() else {
        panic!("regions expected")
    };
    let data = run::load_run(&run_dir).unwrap();
    let mut net = certlab::train::prepare(&data.config, Device::Cpu)
        .unwrap()
        .net;
    net.load_weights(&run_dir.join(run::MODEL_FILE)).unwrap();
    tch::manual_seed(99);
    let ours_draws = 400i64;
    let se = (0.25 / draws as f64 + 0.25 / ours_draws as f64).sqrt();
    let (mut clear, mut mixed) = (0, 0);
    for row in 0..r {
        for col in 0..r {
            let c = [(col as f32 + 0.5) / r as f32, (row as f32 + 0.5) / r as f32];
            let x = Tensor::from_slice(&c)
                .reshape([1, 2])
                .repeat([ours_draws, 1]);
            let noisy = &x + Tensor::randn([ours_draws, 2], (Kind::Float, Device::Cpu)) * SIGMA;
            let ones = tch::no_grad(|| net.forward(&noisy).argmax(1, false))
                .sum(Kind::Int64)
                .int64_value(&[]);
            let ours = ones as f64 / ours_draws as f64;
            let got = reg.share1[row * r + col] as f64;
            assert!(
                (got - ours).abs() < 5.0 * se,
                "cell ({row}, {col}): {got} vs {ours}"
            );
            if (ours - 0.5).abs() > 5.0 * se {
                clear += 1;
                assert_eq!(reg.majority[row * r + col], i64::from(ours > 0.5));
            }
            if ours > 0.02 && ours < 0.98 {
                mixed += 1;
            }
        }
    }
    // The check means something: most cells decided, some cells where the noise mixes classes.
    assert!(clear > r * r / 2, "{clear} clear cells");
    assert!(mixed > 0, "no cell near the boundary");

    // Test point 0: the radius `certlab smooth` reports under the same seed.
    let SmoothAnswer::Cloud(cloud) = run_smooth_job(
        &run_dir,
        false,
        s,
        &SmoothJob::Cloud {
            index: 0,
            samples: 300,
        },
        Some(7),
    )
    .unwrap() else {
        panic!("cloud expected")
    };
    let v = cli_smooth(&run_dir, &s, 7);
    let p = &v["points"][0];
    assert_eq!(cloud.radius, p["radius"].as_f64().unwrap(), "{v}");
    assert_eq!(cloud.prediction, p["prediction"].as_i64().unwrap());
    assert_eq!(cloud.label, p["label"].as_i64().unwrap());
    assert!(cloud.radius > 0.0, "point 0 is certified: {v}");
    // The cloud: 300 draws around the point with the noise's spread.
    assert_eq!(cloud.samples.len(), 300);
    for k in 0..2 {
        let xs: Vec<f64> = cloud.samples.iter().map(|q| q[k] as f64).collect();
        let mean = xs.iter().sum::<f64>() / 300.0;
        let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 299.0).sqrt();
        assert!((mean - cloud.center[k] as f64).abs() < 4.0 * SIGMA / 300f64.sqrt());
        assert!((sd / SIGMA - 1.0).abs() < 0.2, "sd {sd}");
    }
}

#[test]
fn the_inspectors_2d_view_draws_smoothed_regions_and_the_cli_radius() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = train(tmp.path());
    let s = settings(&run_dir);
    let runs = tmp.path().to_path_buf();
    let (mut h, _cmd_rx, _ev_tx) = window::fake_window(
        runs,
        ExperimentConfig::default_experiment(),
        [1400.0, 900.0],
    );
    h.state_mut().tab = Tab::Inspector;
    h.run_steps(2);
    let ctx = h.ctx.clone();
    h.state_mut().tabs.inspector.select(&ctx, &run_dir, 0);
    let step_until = |h: &mut Harness<'static, App>, done: &dyn Fn(&App) -> bool| {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(120) {
            h.run_steps(1);
            if done(h.state()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    };
    // The inspector's own requests draw from torch's global generator too: let them finish,
    // so that the view's seeded stream is the command's.
    assert!(step_until(&mut h, &|a| {
        let i = &a.tabs.inspector;
        i.subject.is_some() && !i.busy()
    }));
    h.get_by_label("smoothed regions").click();
    h.get_by_label("noise cloud and certified radius").click();
    let done = step_until(&mut h, &|a| {
        let o = &a.tabs.inspector.smooth;
        !o.busy() && o.regions.is_some() && o.cloud.is_some()
    });
    assert!(done, "{:?}", h.state().tabs.inspector.smooth.error);
    h.run_steps(2);
    let o = &h.state().tabs.inspector.smooth;
    assert_eq!(o.regions.as_ref().unwrap().majority.len(), 64 * 64);
    let drawn = o.drawing(0).expect("the cloud of point 0 is drawn");
    assert_eq!(drawn.samples.len(), 300);
    let v = cli_smooth(&run_dir, &s, VIEW_SEED);
    assert_eq!(
        drawn.radius,
        v["points"][0]["radius"].as_f64().unwrap(),
        "{v}"
    );
    let line = o.certificate_line(0).unwrap();
    assert!(
        line.contains(&format!("l2 radius {:.4}", drawn.radius)),
        "{line}"
    );
    h.get_by_label(&line);
}
