//! `certlab bench --ui`: CPU time of one UI frame with 5 overlaid runs of 500 epochs each,
//! drawn headless (layout and tessellation, no window, no GPU).
use super::series::{RunSeries, PALETTE};
use super::{App, Tab};
use crate::config::{BoundMethod, Estimator, ExperimentConfig};
use crate::metrics::{EvalRecord, GapStats};
use std::time::Instant;

/// A run of `epochs` evaluations with every metric the plots draw.
pub fn synthetic_run(k: usize, epochs: u32) -> RunSeries {
    let mut s = RunSeries::new(
        format!("run-{k}"),
        None,
        ExperimentConfig::default_experiment(),
        PALETTE[(k + 1) % PALETTE.len()],
    );
    for e in 1..=epochs {
        let t = e as f64 / epochs as f64;
        let mut r = EvalRecord {
            epoch: e,
            step: e as u64 * 100,
            train_loss: 1.0 / (1.0 + 5.0 * t) + 0.01 * k as f64,
            train_acc: 0.6 + 0.3 * t,
            clean_acc: 0.6 + 0.3 * t - 0.01 * k as f64,
            pgd_acc: Some(0.4 + 0.3 * t),
            eval_eps: Some(0.1),
            ..EvalRecord::default()
        };
        let bounds = [BoundMethod::Ibp, BoundMethod::CrownIbp, BoundMethod::Crown];
        for (i, m) in bounds.iter().enumerate() {
            r.cert_acc
                .insert(m.name().into(), 0.2 + 0.3 * t - 0.02 * i as f64);
        }
        let estimators = [Estimator::Gram, Estimator::Power, Estimator::Product];
        for (i, m) in estimators.iter().enumerate() {
            r.lipschitz.insert(
                m.name().into(),
                10f64.powf(3.0 - 2.0 * t) * (1.0 + i as f64),
            );
        }
        r.gap = Some(GapStats {
            method: BoundMethod::Crown.name().into(),
            unstable_per_layer: vec![30.0 * (1.0 - t) + 1.0, 20.0 * (1.0 - t) + 1.0],
            r1_mean: 10f64.powf(1.0 - 3.0 * t),
            r2_mean: 10f64.powf(0.5 - 3.0 * t),
            frac_exact: t,
            hist_edges: crate::metrics::gap_hist_edges(),
            hist_counts: (0..11).map(|b| (b * 7 + e as u64) % 50).collect(),
            cert_pgd_gap: Some(0.2),
        });
        s.push(r);
    }
    s
}

/// Mean, median and 95th percentile of the frame times, in milliseconds, per tab.
pub fn bench_ui_cmd(frames: u32) {
    let mut app = App::new(
        ExperimentConfig::default_experiment(),
        std::env::temp_dir().join("certlab-bench-ui-no-runs"),
        Box::new(|_, _, _| Err("the benchmark starts no runs".into())),
    );
    for k in 0..5 {
        app.library.runs.push(synthetic_run(k, 500));
    }
    let ctx = egui::Context::default();
    println!(
        "UI frame CPU time, 5 overlaid runs x 500 epochs, 1400x900 points, {frames} frames per tab"
    );
    println!(
        "{:<18} {:>9} {:>9} {:>9}",
        "tab", "mean ms", "median", "p95"
    );
    for tab in [Tab::Overview, Tab::Tightness, Tab::Lipschitz, Tab::Runs] {
        app.tab = tab;
        let mut times = Vec::with_capacity(frames as usize);
        for i in 0..frames + 5 {
            let input = egui::RawInput {
                screen_rect: Some(egui::Rect::from_min_size(
                    egui::Pos2::ZERO,
                    egui::vec2(1400.0, 900.0),
                )),
                time: Some(i as f64 / 60.0),
                // The pointer over the first plot: hover labels are part of the cost.
                events: vec![egui::Event::PointerMoved(egui::pos2(800.0, 300.0))],
                ..Default::default()
            };
            let t0 = Instant::now();
            let out = ctx.run_ui(input, |ui| {
                app.show(ui);
            });
            let _meshes = ctx.tessellate(out.shapes, out.pixels_per_point);
            if i >= 5 {
                times.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        times.sort_by(f64::total_cmp);
        let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
        let median = times.get(times.len() / 2).copied().unwrap_or(0.0);
        let p95 = times.get(times.len() * 95 / 100).copied().unwrap_or(0.0);
        println!("{:<18} {mean:>9.2} {median:>9.2} {p95:>9.2}", tab.title());
    }
}
