//! The Sweep tab's two plots: each group's clean vs certified accuracy with error bars over
//! seeds and the Pareto front through the groups no other group beats on both; and one metric
//! against a swept setting with its 95% band, one line per value of the other setting.
use crate::sweep::{Group, MetricStats, SweepReport, CLEAN};
use egui::{Color32, Ui};
use egui_plot::{Corner, Legend, Line, LineStyle, MarkerShape, Plot, PlotPoints, Points, Polygon};

use super::series::PALETTE;

const FRONT: Color32 = Color32::from_rgb(235, 87, 87);
const GROUP: Color32 = Color32::from_rgb(90, 160, 240);

fn setting_text(g: &Group) -> String {
    if g.settings.is_empty() {
        return "(base)".into();
    }
    crate::sweep::settings_label(&g.settings, true)
}

/// The 95% half-interval, or 0 for a single seed.
fn half(s: &MetricStats) -> f64 {
    s.ci95.unwrap_or(0.0)
}

/// Draws the scatter; returns its response and the group clicked (nearest marker).
pub fn pareto_plot_ui(
    ui: &mut Ui,
    report: &SweepReport,
    height: f32,
    selected: Option<usize>,
) -> (egui::Response, Option<usize>) {
    let metric = report.pareto_metric.clone();
    let groups: Vec<(&Group, f64, f64, f64, f64)> = report
        .groups
        .iter()
        .filter_map(|g| {
            let c = g.metrics.get(CLEAN)?;
            let r = g.metrics.get(&metric)?;
            Some((g, c.mean, r.mean, half(c), half(r)))
        })
        .collect();
    let names: Vec<String> = groups.iter().map(|(g, ..)| setting_text(g)).collect();
    let plot = Plot::new("sweep-pareto")
        .height(height)
        .x_axis_label("clean accuracy")
        .y_axis_label(metric.replace("cert_acc.", "certified: "))
        .legend(Legend::default().position(Corner::LeftBottom))
        .label_formatter({
            let groups: Vec<(String, f64, f64)> = groups
                .iter()
                .zip(&names)
                .map(|((_, x, y, ..), n)| (n.clone(), *x, *y))
                .collect();
            move |h: &egui_plot::HoverPosition<'_>| {
                let egui_plot::HoverPosition::NearDataPoint { position: p, .. } = h else {
                    return None;
                };
                let nearest = groups.iter().min_by(|a, b| {
                    let d = |g: &(String, f64, f64)| (g.1 - p.x).powi(2) + (g.2 - p.y).powi(2);
                    d(a).total_cmp(&d(b))
                })?;
                let (n, x, y) = nearest;
                Some(format!(
                    "{n}\nclean {:.1}%, certified {:.1}%",
                    x * 100.0,
                    y * 100.0
                ))
            }
        });
    let response = plot.show(ui, |p| {
        for (g, x, y, hx, hy) in &groups {
            let color = if g.pareto { FRONT } else { GROUP };
            if *hy > 0.0 {
                p.line(
                    Line::new("", PlotPoints::new(vec![[*x, y - hy], [*x, y + hy]]))
                        .color(color)
                        .width(1.0)
                        .allow_hover(false),
                );
            }
            if *hx > 0.0 {
                p.line(
                    Line::new("", PlotPoints::new(vec![[x - hx, *y], [x + hx, *y]]))
                        .color(color)
                        .width(1.0)
                        .allow_hover(false),
                );
            }
        }
        let mut front: Vec<[f64; 2]> = groups
            .iter()
            .filter(|(g, ..)| g.pareto)
            .map(|(_, x, y, ..)| [*x, *y])
            .collect();
        front.sort_by(|a, b| a[0].total_cmp(&b[0]));
        p.line(
            Line::new("Pareto front", PlotPoints::new(front.clone()))
                .color(FRONT)
                .width(2.0)
                .style(LineStyle::Dashed { length: 8.0 }),
        );
        let others: Vec<[f64; 2]> = groups
            .iter()
            .filter(|(g, ..)| !g.pareto)
            .map(|(_, x, y, ..)| [*x, *y])
            .collect();
        p.points(
            Points::new("group (mean over seeds)", PlotPoints::new(others))
                .color(GROUP)
                .radius(5.0)
                .shape(MarkerShape::Circle),
        );
        p.points(
            Points::new("on the front", PlotPoints::new(front))
                .color(FRONT)
                .radius(6.0)
                .shape(MarkerShape::Diamond),
        );
        if let Some((_, x, y, ..)) = groups
            .iter()
            .find(|(g, ..)| Some(g.setting_index) == selected)
        {
            p.points(
                Points::new("selected", PlotPoints::new(vec![[*x, *y]]))
                    .color(Color32::YELLOW)
                    .radius(9.0)
                    .filled(false),
            );
        }
        p.pointer_coordinate()
    });
    let clicked = if response.response.clicked() {
        response
            .inner
            .and_then(|at| nearest_group(&response.transform, at, &groups))
    } else {
        None
    };
    (response.response, clicked)
}

/// The group whose marker is nearest to `at` on screen, if within 20 pixels.
fn nearest_group(
    t: &egui_plot::PlotTransform,
    at: egui_plot::PlotPoint,
    groups: &[(&Group, f64, f64, f64, f64)],
) -> Option<usize> {
    let pointer = t.position_from_point(&at);
    groups
        .iter()
        .map(|(g, x, y, ..)| {
            let pos = t.position_from_point(&egui_plot::PlotPoint::new(*x, *y));
            (g.setting_index, pos.distance(pointer))
        })
        .filter(|(_, d)| *d < 20.0)
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

/// A number for the x axis: the value of a swept setting.
fn axis_value(v: &toml::Value) -> Option<f64> {
    v.as_float().or_else(|| v.as_integer().map(|i| i as f64))
}

/// Draws `metric` against axis `axis` with its 95% band; several lines when another axis varies.
pub fn response_plot_ui(
    ui: &mut Ui,
    report: &SweepReport,
    metric: &str,
    axis: usize,
    height: f32,
) -> egui::Response {
    let Some(key) = report.axes.get(axis) else {
        return ui.label("This sweep has no axis: the groups differ only by seed.");
    };
    // Lines keyed by the other settings' values.
    let mut lines: std::collections::BTreeMap<String, Vec<(f64, MetricStats)>> = Default::default();
    for g in &report.groups {
        let (Some(x), Some(s)) = (
            g.settings.get(key).and_then(axis_value),
            g.metrics.get(metric),
        ) else {
            continue;
        };
        let mut others = g.settings.clone();
        others.remove(key);
        let rest = crate::sweep::settings_label(&others, true);
        lines.entry(rest).or_default().push((x, *s));
    }
    // A log x axis when the values span two decades or more (a weight grid 0.001 .. 1).
    let xs: Vec<f64> = lines.values().flatten().map(|(x, _)| *x).collect();
    let positive: Vec<f64> = xs.iter().copied().filter(|x| *x > 0.0).collect();
    let log = !positive.is_empty()
        && positive.iter().copied().fold(f64::MIN, f64::max)
            / positive.iter().copied().fold(f64::MAX, f64::min)
            >= 100.0;
    let min_pos = positive.iter().copied().fold(f64::MAX, f64::min);
    // Zero has no logarithm: it sits one decade left of the smallest positive value.
    let fx = move |x: f64| {
        if log {
            if x > 0.0 {
                x.log10()
            } else {
                min_pos.log10() - 1.0
            }
        } else {
            x
        }
    };
    let x_label = if log {
        format!("log10 {key} (0 drawn a decade left)")
    } else {
        key.clone()
    };
    Plot::new("sweep-response")
        .height(height)
        .x_axis_label(x_label)
        .y_axis_label(metric.to_string())
        .legend(Legend::default().position(Corner::RightBottom))
        .show(ui, |p| {
            for (i, (name, mut pts)) in lines.into_iter().enumerate() {
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                let color = PALETTE[i % PALETTE.len()];
                // The band as one trapezoid per segment: egui fills convex polygons only.
                for w in pts.windows(2) {
                    let (a, b) = (&w[0], &w[1]);
                    let quad = vec![
                        [fx(a.0), a.1.mean - half(&a.1)],
                        [fx(b.0), b.1.mean - half(&b.1)],
                        [fx(b.0), b.1.mean + half(&b.1)],
                        [fx(a.0), a.1.mean + half(&a.1)],
                    ];
                    p.polygon(
                        Polygon::new("", PlotPoints::new(quad))
                            .fill_color(color.gamma_multiply(0.2))
                            .stroke(egui::Stroke::NONE)
                            .allow_hover(false),
                    );
                }
                for (x, s) in &pts {
                    let h = half(s);
                    if h > 0.0 {
                        p.line(
                            Line::new(
                                "",
                                PlotPoints::new(vec![[fx(*x), s.mean - h], [fx(*x), s.mean + h]]),
                            )
                            .color(color.gamma_multiply(0.6))
                            .allow_hover(false),
                        );
                    }
                }
                let label = if name.is_empty() {
                    metric.to_string()
                } else {
                    name
                };
                let mean: Vec<[f64; 2]> = pts.iter().map(|(x, s)| [fx(*x), s.mean]).collect();
                p.line(
                    Line::new(label.clone(), PlotPoints::new(mean.clone()))
                        .color(color)
                        .width(2.0),
                );
                p.points(
                    Points::new(label, PlotPoints::new(mean))
                        .color(color)
                        .radius(3.5),
                );
            }
        })
        .response
}
