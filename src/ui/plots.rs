//! The live plots: curves of one or several runs over epochs, the gap histogram.
//!
//! One run: a colour per metric. Several runs: a colour per run, a line style per metric
//! (clean solid, PGD dashed, certified dotted), so overlays stay readable.
use super::series::{Metric, RunSeries, PALETTE};
use crate::config::{BoundMethod, Estimator};
use crate::metrics::key;
use egui::{Color32, Ui};
use egui_plot::{
    Bar, BarChart, Corner, GridMark, HoverPosition, Legend, Line, LineStyle, Plot, PlotPoints,
};
use std::ops::RangeInclusive;

/// How the y axis of a plot is scaled and labelled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum YAxis {
    /// Fractions in [0, 1], shown as such.
    Fraction,
    Linear,
    /// log10 of the values; ticks labelled as powers of ten.
    Log,
}

/// A plot of curves chosen by `keep` from every run in `runs`.
pub struct CurvePlot<'k> {
    pub id: &'static str,
    pub y_label: &'static str,
    pub y_axis: YAxis,
    pub height: f32,
    pub keep: &'k dyn Fn(&Metric) -> bool,
}

/// Line styles that tell metrics apart when colours tell runs apart.
const STYLES: [LineStyle; 5] = [
    LineStyle::Solid,
    LineStyle::Dashed { length: 10.0 },
    LineStyle::Dotted { spacing: 5.0 },
    LineStyle::Dashed { length: 4.0 },
    LineStyle::Dotted { spacing: 10.0 },
];

impl CurvePlot<'_> {
    /// Draws the plot; returns its response (its rect is what "Save PNG" crops to).
    pub fn ui(&self, ui: &mut Ui, runs: &[&RunSeries]) -> egui::Response {
        let log = self.y_axis == YAxis::Log;
        let keep = self.keep;
        let several = runs.len() > 1;
        // Several runs: a colour per run and a line style per metric, keyed above the plot
        // (a legend inside the plot would cover the curves).
        let mut metrics: Vec<&Metric> = runs
            .iter()
            .flat_map(|r| r.curves_where(keep).map(|(m, _)| m))
            .collect();
        metrics.sort();
        metrics.dedup();
        let style_of = |m: &Metric| {
            let i = metrics.iter().position(|x| *x == m).unwrap_or(0);
            STYLES[i % STYLES.len()]
        };
        let mut height = self.height;
        if several {
            let before = ui.cursor().top();
            overlay_key_ui(ui, runs, &metrics, &style_of);
            height = (height - (ui.cursor().top() - before)).max(80.0);
        }
        let mut plot = Plot::new(self.id)
            .height(height)
            .x_axis_label("epoch")
            .y_axis_label(self.y_label)
            .include_x(0.0)
            .label_formatter(move |h| hover_text(h, log));
        if !several {
            plot = plot.legend(
                Legend::default()
                    .position(Corner::RightBottom)
                    .follow_insertion_order(true),
            );
        }
        plot = match self.y_axis {
            YAxis::Fraction => plot.include_y(0.0).include_y(1.0),
            YAxis::Linear => plot.include_y(0.0),
            YAxis::Log => plot
                .y_axis_formatter(log_tick)
                .y_grid_spacer(egui_plot::log_grid_spacer(10)),
        };
        plot.show(ui, |p| {
            for run in runs {
                for (metric, curve) in run.curves_where(keep) {
                    let pts = curve.drawn(log);
                    if pts.is_empty() {
                        continue;
                    }
                    let (name, color, style) = if several {
                        (
                            format!("{} · {}", run.name, metric.label()),
                            run.color,
                            style_of(metric),
                        )
                    } else {
                        (metric.label(), metric_color(metric), LineStyle::Solid)
                    };
                    let line = Line::new(name, PlotPoints::Borrowed(pts))
                        .color(color)
                        .style(style)
                        .width(if several { 1.5 } else { 2.0 });
                    p.line(line);
                    if pts.len() == 1 {
                        // A single evaluation is a point, not a line: show it.
                        p.points(
                            egui_plot::Points::new("", PlotPoints::Borrowed(pts))
                                .color(color)
                                .radius(3.0)
                                .allow_hover(false),
                        );
                    }
                }
            }
        })
        .response
    }
}

/// The key of an overlay: each run's colour, each metric's line style.
fn overlay_key_ui(
    ui: &mut Ui,
    runs: &[&RunSeries],
    metrics: &[&Metric],
    style_of: &dyn Fn(&Metric) -> LineStyle,
) {
    ui.horizontal_wrapped(|ui| {
        ui.spacing_mut().item_spacing.x = 6.0;
        for r in runs {
            line_sample(ui, LineStyle::Solid, r.color);
            ui.label(egui::RichText::new(&r.name).color(r.color));
        }
        ui.separator();
        let ink = ui.visuals().text_color();
        for m in metrics {
            line_sample(ui, style_of(m), ink);
            ui.label(m.label());
        }
    });
}

/// A short horizontal line in `style`, as in the plot.
fn line_sample(ui: &mut Ui, style: LineStyle, color: Color32) {
    let (rect, _) = ui.allocate_exact_size(egui::vec2(26.0, 10.0), egui::Sense::hover());
    let a = rect.left_center();
    let b = rect.right_center();
    let stroke = egui::Stroke::new(1.5, color);
    let painter = ui.painter();
    match style {
        LineStyle::Solid => {
            painter.line_segment([a, b], stroke);
        }
        LineStyle::Dashed { length } => {
            painter.extend(egui::Shape::dashed_line(
                &[a, b],
                stroke,
                length,
                length * 0.6,
            ));
        }
        LineStyle::Dotted { spacing } => {
            painter.extend(egui::Shape::dotted_line(&[a, b], color, spacing, 1.0));
        }
    }
}

/// The histogram of `p_t - m_t` (the relaxation gap per margin row) of each run's last
/// evaluation; bins are decades.
pub fn gap_histogram_ui(ui: &mut Ui, runs: &[&RunSeries], height: f32) -> egui::Response {
    let with_hist: Vec<(&RunSeries, &(Vec<f64>, Vec<u64>))> = runs
        .iter()
        .filter_map(|r| r.last_hist.as_ref().map(|h| (*r, h)))
        .collect();
    let edges: Vec<f64> = with_hist
        .first()
        .map(|(_, (e, _))| e.clone())
        .unwrap_or_default();
    let n = with_hist.len().max(1) as f64;
    let width = 0.8 / n;
    let labels = edges.clone();
    let bins = edges.len().saturating_sub(1);
    Plot::new("gap-histogram")
        .height(height)
        .legend(Legend::default().position(Corner::RightTop))
        .custom_x_axes(vec![egui_plot::AxisHints::new_x()
            .label("p_t − m_t (feasible margin − certified bound), bins from the lower edge")
            .formatter(move |m: GridMark, _r: &RangeInclusive<f64>| bin_label(&labels, m.value))
            // Bins are narrow: allow labels closer than the default 60 points.
            .label_spacing(24.0..=36.0)])
        .y_axis_label("rows (fraction)")
        .include_y(0.0)
        .x_grid_spacer(move |_input| {
            (0..bins)
                .map(|i| GridMark {
                    value: i as f64,
                    step_size: 1.0,
                })
                .collect()
        })
        .allow_zoom(false)
        .allow_drag(false)
        .show(ui, |p| {
            for (k, (run, (_, counts))) in with_hist.iter().enumerate() {
                let total: u64 = counts.iter().sum::<u64>().max(1);
                let color = if with_hist.len() > 1 {
                    run.color
                } else {
                    PALETTE[0]
                };
                let bars: Vec<Bar> = counts
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        Bar::new(
                            i as f64 + (k as f64 - (n - 1.0) / 2.0) * width,
                            *c as f64 / total as f64,
                        )
                        .width(width * 0.95)
                        .name(format!("{}: {c} rows", bin_label(&edges, i as f64)))
                    })
                    .collect();
                p.bar_chart(BarChart::new(run.name.clone(), bars).color(color));
            }
        })
        .response
}

/// The label of histogram bin `x` (edges 0, 1e-6, ..., 1e4: bin i is [edge i, edge i+1), the
/// last one also holds everything above); empty between bins.
fn bin_label(edges: &[f64], x: f64) -> String {
    let i = x.round();
    let bins = edges.len().saturating_sub(1);
    if (x - i).abs() > 1e-6 || i < 0.0 || i as usize >= bins {
        return String::new();
    }
    let i = i as usize;
    if i == 0 {
        format!("< {:.0e}", edges[1])
    } else if i + 1 == bins {
        format!("≥ {:.0e}", edges[i])
    } else {
        format!("{:.0e}", edges[i])
    }
}

/// Tick label of a log10 axis.
fn log_tick(m: GridMark, _range: &RangeInclusive<f64>) -> String {
    let v = m.value;
    if (v - v.round()).abs() < 1e-9 {
        // Decades: plain numbers from 0.01 to 1000 (so "1", not "1e0"), else powers of ten.
        let e = v.round() as i32;
        if (-2..=3).contains(&e) {
            let digits = (-e).max(0) as usize;
            format!("{:.digits$}", 10f64.powi(e))
        } else {
            format!("1e{e}")
        }
    } else {
        // Between decades: three significant digits.
        let x = 10f64.powf(v);
        let digits = (2 - x.abs().log10().floor() as i32).max(0) as usize;
        format!("{x:.digits$}")
    }
}

fn hover_text(h: &HoverPosition<'_>, log: bool) -> Option<String> {
    match h {
        HoverPosition::NearDataPoint {
            plot_name,
            position,
            ..
        } => {
            let y = if log {
                10f64.powf(position.y)
            } else {
                position.y
            };
            Some(format!(
                "{plot_name}\nepoch {:.0}: {}",
                position.x,
                short_number(y)
            ))
        }
        HoverPosition::Elsewhere { .. } => None,
    }
}

/// A number in at most five significant digits.
pub fn short_number(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1e5 || v.abs() < 1e-3 {
        format!("{v:.3e}")
    } else {
        let s = format!("{v:.5}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn metric_color(m: &Metric) -> Color32 {
    match m {
        Metric::Clean => PALETTE[0],
        Metric::SubsetClean => Color32::from_rgb(120, 170, 250),
        Metric::Pgd => PALETTE[1],
        Metric::Verified => Color32::from_rgb(200, 60, 160),
        Metric::Train => PALETTE[9],
        Metric::TrainLoss => PALETTE[4],
        Metric::BatchLoss => Color32::from_gray(150),
        Metric::LossPart(name) => PALETTE[(5 + loss_part_index(name)) % PALETTE.len()],
        Metric::TrainEps => PALETTE[5],
        Metric::R1 => PALETTE[6],
        Metric::R2 => PALETTE[5],
        Metric::FracExact => PALETTE[2],
        Metric::CertPgdGap => PALETTE[1],
        Metric::Cert(name) => PALETTE[2 + name_index(name) % 8],
        // The Lipschitz tab shows up to eleven keys at once: a colour each, in this order.
        Metric::Lipschitz(name) => PALETTE[lipschitz_index(name) % PALETTE.len()],
        Metric::Unstable(i) => PALETTE[*i % PALETTE.len()],
    }
}

/// The position of a `loss_parts` key, for a stable colour each.
fn loss_part_index(name: &str) -> usize {
    [
        key::LOSS_CLEAN_CE,
        key::LOSS_ROBUST_CE,
        key::LOSS_R1,
        key::LOSS_R2,
        key::LOSS_LIPSCHITZ,
        key::LOSS_ADV_CE,
        key::LOSS_SHI_TIGHTNESS,
        key::LOSS_SHI_RELU,
    ]
    .iter()
    .position(|n| *n == name)
    .unwrap_or(8)
}

/// The position of a `lipschitz` key: the first six estimators, then the training and ADMM
/// keys, then estimators added since (so that earlier keys keep their colours); an unknown key
/// comes after them all.
fn lipschitz_index(name: &str) -> usize {
    let (first, later) = Estimator::ALL.split_at(6);
    first
        .iter()
        .map(|e| e.name())
        .chain(key::LIPSCHITZ_EXTRA)
        .chain(later.iter().map(|e| e.name()))
        .position(|n| n == name)
        .unwrap_or(Estimator::ALL.len() + key::LIPSCHITZ_EXTRA.len())
}

/// A stable small number per bound or estimator name, for colours: the bound methods, the
/// Lipschitz certificate, then the estimators; an unknown name comes after them all.
fn name_index(name: &str) -> usize {
    // The first four bounds keep the colours they had before alpha-CROWN; later bounds go
    // after the estimators.
    let (first, later) = BoundMethod::ALL.split_at(4);
    first
        .iter()
        .map(|b| b.name())
        .chain([key::LIPSCHITZ_CERT])
        .chain(Estimator::ALL.iter().map(|e| e.name()))
        .chain(later.iter().map(|b| b.name()))
        .position(|n| n == name)
        .unwrap_or(BoundMethod::ALL.len() + 1 + Estimator::ALL.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_numbers() {
        let edges = crate::metrics::gap_hist_edges();
        assert_eq!(bin_label(&edges, 0.0), "< 1e-6");
        assert_eq!(bin_label(&edges, 1.0), "1e-6");
        assert_eq!(bin_label(&edges, (edges.len() - 2) as f64), "≥ 1e3");
        assert_eq!(bin_label(&edges, (edges.len() - 1) as f64), "");
        assert_eq!(bin_label(&edges, 0.5), "");
        assert_eq!(short_number(0.25), "0.25");
        assert_eq!(short_number(123456.0), "1.235e5");
        assert_eq!(
            log_tick(
                GridMark {
                    value: -3.0,
                    step_size: 1.0
                },
                &(0.0..=1.0)
            ),
            "1e-3"
        );
        let tick = |v: f64| {
            log_tick(
                GridMark {
                    value: v,
                    step_size: 0.1,
                },
                &(0.0..=1.0),
            )
        };
        assert_eq!(tick(0.0), "1");
        assert_eq!(tick(-2.0), "0.01");
        assert_eq!(tick(3.0), "1000");
        assert_eq!(tick(4.0), "1e4");
        assert_eq!(tick(0.8), "6.31");
        assert_eq!(tick(1.5), "31.6");
        assert_eq!(tick(-1.5), "0.0316");
    }

    #[test]
    fn every_bound_and_lipschitz_key_keeps_its_colour() {
        // The order the colours were first given in; a new name goes after these.
        let lip = [
            "power",
            "gram",
            "exact",
            "product",
            "lipsdp",
            "empirical",
            "train_bound",
            "train_bound_max",
            "admm_lipsdp",
            "admm_projected_lipsdp",
            "admm_residual",
            "toeplitz",
        ];
        for (i, k) in lip.iter().enumerate() {
            assert_eq!(lipschitz_index(k), i, "{k}");
        }
        assert_eq!(lipschitz_index("new"), lip.len());
        for (i, k) in ["ibp", "crown-ibp", "fastlin", "crown", "lipschitz"]
            .iter()
            .enumerate()
        {
            assert_eq!(name_index(k), i, "{k}");
        }
        assert_eq!(name_index("toeplitz"), 11);
        assert_eq!(name_index("alpha-crown"), 12);
        assert_eq!(name_index("new"), 13);
    }
}
