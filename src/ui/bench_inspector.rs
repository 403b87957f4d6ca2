//! `certlab bench --ui --inspect RUN_DIR`: CPU time of the UI frames drawn while the
//! inspector thread recomputes, the eps slider dragged (each move cancels the request in
//! flight and sends a new one). The claim it checks: the window keeps its frame
//! rate while the bound microscope works.
use super::{App, Tab};
use crate::config::ExperimentConfig;
use std::path::Path;
use std::time::{Duration, Instant};

/// Frames per cycle: the slider is dragged for the first `DRAG` (one eps per frame), then left.
const CYCLE: u32 = 180;
const DRAG: u32 = 30;

/// The frame interval of a 60 Hz display: the loop sleeps the rest of it, as eframe would.
const FRAME: Duration = Duration::from_micros(16_667);

fn frame(app: &mut App, ctx: &egui::Context, i: u32) -> f64 {
    let input = egui::RawInput {
        screen_rect: Some(egui::Rect::from_min_size(
            egui::Pos2::ZERO,
            egui::vec2(1400.0, 900.0),
        )),
        time: Some(i as f64 / 60.0),
        events: vec![egui::Event::PointerMoved(egui::pos2(1000.0, 400.0))],
        ..Default::default()
    };
    let t0 = Instant::now();
    let out = ctx.run_ui(input, |ui| {
        app.show(ui);
    });
    let _meshes = ctx.tessellate(out.shapes, out.pixels_per_point);
    let secs = t0.elapsed().as_secs_f64();
    std::thread::sleep(FRAME.saturating_sub(t0.elapsed()));
    secs * 1e3
}

/// Loads test point `index` of `run_dir` in the Inspector, then draws `frames` frames in
/// cycles of a half-second drag of the eps slider (a new eps every frame) and two and a half
/// seconds of rest; prints the times of the frames drawn while a request was being computed,
/// and how long the answers took once the slider stopped.
pub fn bench_inspector_cmd(run_dir: &Path, index: usize, frames: u32) -> Result<(), String> {
    let mut app = App::new(
        ExperimentConfig::default_experiment(),
        std::env::temp_dir().join("certlab-bench-ui-no-runs"),
        Box::new(|_, _, _| Err("the benchmark starts no runs".into())),
    );
    let ctx = egui::Context::default();
    app.tab = Tab::Inspector;
    app.tabs.inspector.select(&ctx, run_dir, index);
    let t0 = Instant::now();
    let mut i = 0;
    while app.tabs.inspector.busy() || app.tabs.inspector.point.is_none() {
        frame(&mut app, &ctx, i);
        i += 1;
        if let Some(e) = &app.tabs.inspector.error {
            return Err(format!("{}: {e}", run_dir.display()));
        }
        if t0.elapsed() > Duration::from_secs(600) {
            return Err("the first answer took more than 10 minutes".into());
        }
    }
    let first = t0.elapsed().as_secs_f64();
    let base = app.tabs.inspector.eps.max(1e-3);
    let mut busy_ms = Vec::new();
    let mut idle_ms = Vec::new();
    let mut answers = Vec::new();
    let mut last_secs = app.tabs.inspector.last_secs;
    for k in 0..frames {
        // A drag of DRAG frames (eps moves every frame), then a rest until the cycle ends.
        if k % CYCLE < DRAG {
            let eps = base * (0.5 + (k % CYCLE) as f64 / DRAG as f64);
            app.tabs.inspector.set_eps(&ctx, eps);
        }
        let busy = app.tabs.inspector.busy();
        let ms = frame(&mut app, &ctx, i + k);
        if busy {
            busy_ms.push(ms);
        } else {
            idle_ms.push(ms);
        }
        if app.tabs.inspector.last_secs != last_secs {
            last_secs = app.tabs.inspector.last_secs;
            answers.extend(last_secs);
        }
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len().max(1);
        let mean = v.iter().sum::<f64>() / n as f64;
        let at = |q: usize| v.get(v.len() * q / 100).copied().unwrap_or(0.0);
        (
            v.len(),
            mean,
            at(50),
            at(95),
            v.last().copied().unwrap_or(0.0),
        )
    };
    println!(
        "Inspector frame CPU time, {} test point {index}, 1400x900 points, {frames} frames at 60 Hz: eps dragged for {DRAG} frames (a new request each), then left for {} frames",
        run_dir.display(),
        CYCLE - DRAG
    );
    println!("first answer (load + bounds + radii): {first:.2} s");
    println!(
        "{:<30} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "frames", "count", "mean ms", "median", "p95", "max"
    );
    for (name, v) in [("while recomputing", &mut busy_ms), ("idle", &mut idle_ms)] {
        let (n, mean, med, p95, max) = stats(v);
        println!("{name:<30} {n:>7} {mean:>9.2} {med:>9.2} {p95:>9.2} {max:>9.2}");
    }
    let (n, mean, med, _, max) = stats(&mut answers);
    println!(
        "point answers completed: {n} (mean {mean:.3} s, median {med:.3} s, max {max:.3} s); the others were cancelled by the next move"
    );
    Ok(())
}
