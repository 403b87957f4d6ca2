//! The stacked bar of complete verification (`eval.verify`): for each run's last evaluation
//! with verification, the fraction of its points that each stage of the cascade decided —
//! verified by IBP, CROWN, alpha-CROWN or branch and bound, undecided, falsified by branch and
//! bound, PGD or the clean input — so the gap between a bound and the truth is visible.
use super::series::RunSeries;
use crate::metrics::{VerifyStage, VerifyStats};
use egui::{Color32, Ui};
use egui_plot::{Bar, BarChart, Corner, Legend, Plot};

/// One segment of the bar: its label, colour, and count in a record.
struct Segment {
    label: String,
    color: Color32,
    count: fn(&VerifyStats, &str) -> u64,
    stage: &'static str,
}

fn segments() -> Vec<Segment> {
    let verified = |s: &VerifyStats, st: &str| s.verified_by.get(st).copied().unwrap_or(0);
    let falsified = |s: &VerifyStats, st: &str| s.falsified_by.get(st).copied().unwrap_or(0);
    let greens = [
        (VerifyStage::Ibp, Color32::from_rgb(20, 110, 50)),
        (VerifyStage::Crown, Color32::from_rgb(40, 150, 70)),
        (VerifyStage::AlphaCrown, Color32::from_rgb(90, 190, 110)),
        (VerifyStage::Bab, Color32::from_rgb(160, 220, 160)),
    ];
    let reds = [
        (VerifyStage::Bab, Color32::from_rgb(240, 170, 140)),
        (VerifyStage::Pgd, Color32::from_rgb(220, 90, 60)),
        (VerifyStage::Clean, Color32::from_rgb(150, 40, 30)),
    ];
    let mut out: Vec<Segment> = greens
        .iter()
        .map(|(st, c)| Segment {
            label: format!("verified by {}", st.name()),
            color: *c,
            count: verified,
            stage: st.name(),
        })
        .collect();
    out.push(Segment {
        label: "unknown or timeout".into(),
        color: Color32::from_gray(150),
        count: |s, _| s.unknown + s.timeout,
        stage: "",
    });
    out.extend(reds.iter().map(|(st, c)| Segment {
        label: format!("falsified by {}", st.name()),
        color: *c,
        count: falsified,
        stage: st.name(),
    }));
    out
}

/// The bar, one row per run with verification; nothing when no run has any.
pub fn verify_stages_ui(ui: &mut Ui, runs: &[&RunSeries], height: f32) {
    let with: Vec<(&RunSeries, &VerifyStats)> = runs
        .iter()
        .filter_map(|r| {
            r.records
                .iter()
                .rev()
                .find_map(|rec| rec.verify.as_ref())
                .map(|v| (*r, v))
        })
        .collect();
    if with.is_empty() {
        return;
    }
    let names: Vec<String> = with.iter().map(|(r, _)| r.name.clone()).collect();
    Plot::new("verify-stages")
        .height(height)
        .legend(Legend::default().position(Corner::RightBottom))
        .x_axis_label("fraction of the verified points, by the stage that decided them")
        .y_axis_formatter(move |m, _| {
            let i = m.value.round();
            if (m.value - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .include_x(0.0)
        .include_x(1.0)
        .allow_zoom(false)
        .allow_drag(false)
        .show(ui, |p| {
            let mut charts: Vec<BarChart> = Vec::new();
            for seg in segments() {
                let bars: Vec<Bar> = with
                    .iter()
                    .enumerate()
                    .map(|(i, (_, v))| {
                        let c = (seg.count)(v, seg.stage);
                        let frac = c as f64 / v.points.max(1) as f64;
                        Bar::new(i as f64, frac)
                            .width(0.6)
                            .name(format!("{}: {c} of {} points", seg.label, v.points))
                    })
                    .collect();
                let others: Vec<&BarChart> = charts.iter().collect();
                let chart = BarChart::new(seg.label.clone(), bars)
                    .color(seg.color)
                    .horizontal()
                    .stack_on(&others);
                charts.push(chart);
            }
            for c in charts {
                p.bar_chart(c);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_segments_count_every_point_once() {
        // Every stage that can decide a point, both ways, plus the undecided.
        let mut s = VerifyStats {
            points: 0,
            timeout_s: 1.0,
            unknown: 2,
            timeout: 3,
            ..VerifyStats::default()
        };
        for (i, st) in VerifyStage::ALL.iter().enumerate() {
            let n = i as u64 + 1;
            if matches!(st, VerifyStage::Clean | VerifyStage::Pgd | VerifyStage::Bab) {
                s.falsified_by.insert(st.name().into(), 10 * n);
            }
            if !matches!(st, VerifyStage::Clean | VerifyStage::Pgd) {
                s.verified_by.insert(st.name().into(), n);
            }
        }
        s.points = s.verified_by.values().sum::<u64>()
            + s.falsified_by.values().sum::<u64>()
            + s.unknown
            + s.timeout;
        let total: u64 = segments().iter().map(|g| (g.count)(&s, g.stage)).sum();
        assert_eq!(total, s.points);
    }

    #[test]
    fn the_overview_draws_verified_accuracy_and_the_stage_bar() {
        use crate::metrics::EvalRecord;
        use crate::ui::panels::overview::OverviewPanel;
        use crate::ui::series::Metric;
        let mut run = crate::ui::bench::synthetic_run(0, 3);
        let mut stats = VerifyStats {
            points: 10,
            timeout_s: 1.0,
            timeout: 1,
            ..VerifyStats::default()
        };
        stats.verified_by.insert("crown".into(), 5);
        stats.verified_by.insert("bab".into(), 1);
        stats.falsified_by.insert("pgd".into(), 3);
        let rec = EvalRecord {
            epoch: 4,
            clean_acc: 0.9,
            pgd_acc: Some(0.7),
            verified_acc: Some(0.6),
            verify: Some(stats),
            ..EvalRecord::default()
        };
        run.push(rec);
        let verified = &run.curves[&Metric::Verified].points;
        assert_eq!((verified.len(), verified[0].y), (1, 0.6));
        let mut panel = OverviewPanel::default();
        let mut h = egui_kittest::Harness::new_ui(|ui| {
            panel.ui(ui, &[&run]);
        });
        h.run_steps(2);
    }
}
