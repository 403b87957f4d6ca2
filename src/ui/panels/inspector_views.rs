//! What the Inspector tab draws: the 2-D view or the image picker, the images (clean, PGD
//! adversarial, magnified perturbation), the margin bounds per class, each layer's interval
//! bars against the empirical range with the looseness of every method, the margin against
//! eps with the radii, and one neuron's ReLU with each method's relaxation lines.
use super::inspector::{InspectorPanel, STRIP};
use super::smooth_overlay::eps_ball_drawn;
use crate::config::{BoundMethod, Norm};
use crate::inspector::{relu_lines, Interval, LayerInspection, Subject};
use crate::metrics::PointStatus;
use crate::ui::series::PALETTE;
use crate::ui::toy;
use egui::{Color32, ColorImage, RichText, TextureHandle, TextureOptions, Ui};
use egui_plot::{
    Corner, HLine, Legend, Line, LineStyle, MarkerShape, Plot, PlotImage, PlotPoint, PlotPoints,
    PlotTransform, Points, Polygon, VLine,
};
use std::collections::HashMap;

/// Neurons drawn per layer (the widest first).
const MAX_BARS: usize = 64;

/// Textures the tab keeps between frames.
#[derive(Default)]
pub struct Textures {
    regions: Option<TextureHandle>,
    thumbs: HashMap<usize, TextureHandle>,
    /// The selected point's clean, adversarial and perturbation images, by (index, eps bits).
    big: Option<((usize, u64), [TextureHandle; 3])>,
}

pub fn method_color(m: BoundMethod) -> Color32 {
    match m {
        BoundMethod::Ibp => PALETTE[1],
        BoundMethod::CrownIbp => PALETTE[3],
        BoundMethod::Fastlin => PALETTE[4],
        BoundMethod::Crown => PALETTE[0],
        BoundMethod::AlphaCrown => PALETTE[6],
    }
}

/// The colour of what is real (the empirical range, PGD, the ReLU): the theme's strong text.
fn real_color(ui: &Ui) -> Color32 {
    ui.visuals().strong_text_color()
}
const UNSTABLE_COLOR: Color32 = Color32::from_rgb(220, 50, 47);

fn status_color(s: Option<PointStatus>) -> Color32 {
    s.map_or(Color32::from_gray(170), toy::status_color)
}

// ---------------------------------------------------------------------------------------------
// The point

/// The 2-D view: regions, test points coloured by status at the slider's eps, their eps balls
/// (or largest certified balls; only the selected point's under a noise cloud), the selected
/// point ringed. Returns the clicked point.
pub fn toy_view_ui(
    ui: &mut Ui,
    panel: &mut InspectorPanel,
    subject: &Subject,
    height: f32,
) -> (Option<usize>, PlotTransform) {
    let Some(map) = subject.map.as_ref() else {
        let r = Plot::new("inspector-2d-empty")
            .height(height)
            .show(ui, |_| {});
        return (None, r.transform);
    };
    let base = panel
        .textures
        .regions
        .get_or_insert_with(|| {
            ui.ctx().load_texture(
                "inspector-regions",
                toy::regions_image(map),
                TextureOptions::LINEAR,
            )
        })
        .id();
    let (tex, regions_name) = match panel.smooth.regions_texture(ui.ctx(), map) {
        Some(t) => (t, "smoothed decision regions"),
        None => (base, "decision regions"),
    };
    let cloud = panel.smooth.drawing(panel.index);
    let statuses = panel.statuses.clone();
    let (eps, l2, largest) = (panel.eps, panel.norm == Norm::L2, panel.largest_balls);
    let selected = panel.index;
    let r = Plot::new("inspector-2d")
        .height(height)
        .data_aspect(1.0)
        .include_x(0.0)
        .include_x(1.0)
        .include_y(0.0)
        .include_y(1.0)
        .allow_drag(false)
        .allow_boxed_zoom(false)
        .x_axis_label("x1")
        .y_axis_label("x2")
        .legend(Legend::default().position(Corner::RightBottom))
        .show(ui, |p| {
            p.image(PlotImage::new(
                regions_name,
                tex,
                PlotPoint::new(0.5, 0.5),
                [1.0, 1.0],
            ));
            for (i, c) in map.points.iter().enumerate() {
                if !eps_ball_drawn(cloud.is_some(), i, selected) {
                    continue;
                }
                let st = statuses.as_ref().and_then(|s| s.of(i));
                let radius = match (&statuses, largest) {
                    (Some(s), true) => s.radius.as_ref().and_then(|r| r.get(i)).copied(),
                    _ => Some(eps),
                };
                let Some(radius) = radius.filter(|r| *r > 0.0) else {
                    continue;
                };
                let col = status_color(st);
                let name = st.map_or("not computed yet", toy::status_label);
                p.polygon(
                    Polygon::new(name, PlotPoints::new(toy::ball(*c, radius, l2)))
                        .fill_color(col.gamma_multiply(0.3))
                        .stroke(egui::Stroke::new(1.0, col))
                        .allow_hover(false),
                );
            }
            let pts: Vec<[f64; 2]> = map
                .points
                .iter()
                .map(|c| [c[0] as f64, c[1] as f64])
                .collect();
            p.points(
                Points::new("test points", pts)
                    .color(Color32::from_gray(40))
                    .shape(MarkerShape::Circle)
                    .filled(true)
                    .radius(2.0),
            );
            if let Some(c) = map.points.get(selected) {
                p.points(
                    Points::new("selected", vec![[c[0] as f64, c[1] as f64]])
                        .color(Color32::BLACK)
                        .shape(MarkerShape::Circle)
                        .filled(false)
                        .radius(7.0),
                );
            }
            if let Some(c) = &cloud {
                c.draw(p);
            }
        });
    let clicked = r
        .response
        .clicked()
        .then(|| r.response.interact_pointer_pos())
        .flatten()
        .and_then(|pos| nearest_point(&map.points, &r.transform, pos, 12.0));
    (clicked, r.transform)
}

/// The index of the point nearest to the screen position `pos`, within `max_px` pixels.
pub fn nearest_point(
    points: &[[f32; 2]],
    transform: &PlotTransform,
    pos: egui::Pos2,
    max_px: f32,
) -> Option<usize> {
    points
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let s = transform.position_from_point(&PlotPoint::new(c[0] as f64, c[1] as f64));
            (i, s.distance(pos))
        })
        .filter(|(_, d)| *d <= max_px)
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

/// An input as an image: `[C, H, W]` with 1 or 3 channels, or a flat square. `None` otherwise.
fn to_image(values: &[f32], shape: &[i64], map: impl Fn(f32) -> f32) -> Option<ColorImage> {
    let (c, h, w) = match shape {
        [c, h, w] if *c == 1 || *c == 3 => (*c as usize, *h as usize, *w as usize),
        [d] => {
            let side = (*d as f64).sqrt() as usize;
            if side * side != *d as usize {
                return None;
            }
            (1, side, side)
        }
        _ => return None,
    };
    if values.len() != c * h * w {
        return None;
    }
    let byte = |v: f32| (map(v).clamp(0.0, 1.0) * 255.0) as u8;
    let pixels = (0..h * w)
        .map(|p| {
            if c == 1 {
                let g = byte(values[p]);
                Color32::from_rgb(g, g, g)
            } else {
                let at = |ch: usize| byte(values[ch * h * w + p]);
                Color32::from_rgb(at(0), at(1), at(2))
            }
        })
        .collect();
    Some(ColorImage::new([w, h], pixels))
}

/// The image picker: a page of thumbnails framed by status (misclassified, attacked,
/// certified), with paging. Returns the clicked test index.
pub fn picker_ui(ui: &mut Ui, panel: &mut InspectorPanel, subject: &Subject) -> Option<usize> {
    let mut picked = None;
    ui.horizontal_wrapped(|ui| {
        if ui.button("< prev").on_hover_text("previous page").clicked() {
            panel.page = panel.page.saturating_sub(STRIP);
        }
        let end = (panel.page + STRIP).min(subject.test_len);
        for i in panel.page..end {
            let Some(values) = panel.images.get(&i) else {
                ui.label(format!("#{i}…"));
                continue;
            };
            let tex = panel.textures.thumbs.entry(i).or_insert_with(|| {
                let img = to_image(values, &subject.input_shape, |v| v)
                    .unwrap_or_else(|| ColorImage::new([1, 1], vec![Color32::GRAY]));
                ui.ctx()
                    .load_texture(format!("thumb-{i}"), img, TextureOptions::NEAREST)
            });
            let st = panel.statuses.as_ref().and_then(|s| s.of(i));
            let image = egui::Image::new((tex.id(), egui::vec2(40.0, 40.0)));
            let button = egui::Button::image_and_text(image, format!("#{i}"))
                .stroke(egui::Stroke::new(3.0, status_color(st)))
                .selected(i == panel.index);
            let hover = st.map_or("status not computed yet", toy::status_label);
            if ui.add(button).on_hover_text(hover).clicked() {
                picked = Some(i);
            }
        }
        if ui.button("next >").on_hover_text("next page").clicked() && end < subject.test_len {
            panel.page = end;
        }
    });
    ui.horizontal_wrapped(|ui| {
        for s in [
            PointStatus::Certified,
            PointStatus::PgdRobust,
            PointStatus::CleanOnly,
            PointStatus::Misclassified,
        ] {
            ui.label(
                RichText::new(format!("■ {}", toy::status_label(s)))
                    .color(toy::status_color(s))
                    .small(),
            );
        }
    });
    picked
}

/// The selected image large, its PGD adversarial example and the perturbation magnified.
pub fn images_ui(ui: &mut Ui, panel: &mut InspectorPanel, subject: &Subject) {
    let Some(point) = panel.point.as_ref() else {
        ui.label("computing the selected point…");
        return;
    };
    let b = &point.bounds;
    let key = (point.index, b.eps.to_bits());
    if panel.textures.big.as_ref().is_none_or(|(k, _)| *k != key) {
        let adv: Vec<f32> = b.x_adv.iter().map(|v| *v as f32).collect();
        let delta: Vec<f32> = adv.iter().zip(&point.input).map(|(a, x)| a - x).collect();
        let scale = delta.iter().fold(1e-12f32, |m, d| m.max(d.abs()));
        let shape = &subject.input_shape;
        let imgs = [
            to_image(&point.input, shape, |v| v),
            to_image(&adv, shape, |v| v),
            to_image(&delta, shape, |d| 0.5 + 0.5 * d / scale),
        ];
        if let [Some(a), Some(b2), Some(c)] = imgs {
            let ctx = ui.ctx();
            let load = |n: &str, img| ctx.load_texture(n, img, TextureOptions::NEAREST);
            panel.textures.big = Some((key, [load("clean", a), load("adv", b2), load("delta", c)]));
        }
    }
    let name = |c: i64| {
        subject
            .class_names
            .get(c as usize)
            .cloned()
            .unwrap_or_else(|| c.to_string())
    };
    let Some((_, [clean, adv, delta])) = panel.textures.big.as_ref() else {
        ui.label("this input has no image form");
        return;
    };
    let size = egui::vec2(150.0, 150.0);
    ui.horizontal(|ui| {
        for (tex, caption) in [
            (clean, format!("test #{}: {}", point.index, name(b.label))),
            (
                adv,
                format!(
                    "PGD at eps {:.4}: margin {:.3}{}",
                    b.eps,
                    b.pgd_margin,
                    if b.pgd_margin < 0.0 { " (broken)" } else { "" }
                ),
            ),
            (delta, "perturbation, magnified".to_string()),
        ] {
            ui.vertical(|ui| {
                ui.add(egui::Image::new((tex.id(), size)));
                ui.label(RichText::new(caption).small());
            });
        }
    });
    ui.label(format!("predicted: {}", name(b.predicted)));
}

/// Each class's margin lower bound `z_label - z_t` per method at the slider's eps.
pub fn margins_table_ui(ui: &mut Ui, panel: &InspectorPanel, subject: &Subject) {
    let Some(point) = panel.point.as_ref() else {
        return;
    };
    let b = &point.bounds;
    ui.label(
        RichText::new(format!(
            "Margin lower bounds z_label − z_t at eps {:.4} (certified when all > 0)",
            b.eps
        ))
        .strong(),
    );
    egui::Grid::new("inspector-margins")
        .striped(true)
        .show(ui, |ui| {
            ui.label("class");
            for (m, _) in &b.margins {
                ui.label(RichText::new(m.name()).color(method_color(*m)));
            }
            ui.end_row();
            let k = b.margins.first().map_or(0, |(_, v)| v.len());
            for t in 0..k {
                let name = subject.class_names.get(t).cloned().unwrap_or(t.to_string());
                ui.label(name);
                for (_, v) in &b.margins {
                    if t as i64 == b.label {
                        ui.label("—");
                    } else {
                        let text = RichText::new(format!("{:.4}", v[t]));
                        ui.label(if v[t] > 0.0 {
                            text
                        } else {
                            text.color(UNSTABLE_COLOR)
                        });
                    }
                }
                ui.end_row();
            }
        });
}

// ---------------------------------------------------------------------------------------------
// The layers

fn widths(iv: &Interval) -> impl Iterator<Item = f64> + '_ {
    iv.lower.iter().zip(&iv.upper).map(|(l, u)| u - l)
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        0.0
    } else {
        s / n as f64
    }
}

fn unstable(iv: &Interval, j: usize) -> bool {
    iv.lower[j] < 0.0 && iv.upper[j] > 0.0
}

/// The looseness of a method on a layer: its mean interval width over the empirical one.
pub fn looseness(layer: &LayerInspection, iv: &Interval) -> f64 {
    let emp = mean(widths(&layer.empirical));
    if emp > 0.0 {
        mean(widths(iv)) / emp
    } else {
        f64::NAN
    }
}

/// Neuron indices of a layer by decreasing width of their widest interval.
pub fn by_width(layer: &LayerInspection) -> Vec<usize> {
    let n = layer.empirical.lower.len();
    let w = |j: usize| {
        layer
            .methods
            .iter()
            .map(|(_, iv)| iv.upper[j] - iv.lower[j])
            .fold(0.0, f64::max)
    };
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| w(b).total_cmp(&w(a)));
    order
}

/// The looseness table (every layer) and the interval bars of the selected layer.
pub fn layers_ui(ui: &mut Ui, panel: &mut InspectorPanel) {
    let Some(point) = panel.point.as_ref() else {
        ui.label("computing the bounds…");
        return;
    };
    let layers = &point.bounds.layers;
    if let Some(k) = looseness_table_ui(ui, layers, panel.layer) {
        panel.layer = k;
        panel.neuron = None;
    }
    if let Some(j) = bars_ui(ui, layers, panel.layer, panel.neuron) {
        panel.neuron = Some(j);
    }
}

/// Per layer and method: looseness (mean width over the empirical mean width) and unstable
/// neurons. Returns the layer clicked.
fn looseness_table_ui(ui: &mut Ui, layers: &[LayerInspection], selected: usize) -> Option<usize> {
    ui.label(
        RichText::new("Looseness per layer: mean width / empirical mean width (unstable neurons)")
            .strong(),
    );
    let mut pick = None;
    egui::Grid::new("inspector-looseness")
        .striped(true)
        .show(ui, |ui| {
            ui.label("layer");
            ui.label("neurons");
            ui.label("empirical");
            for (m, _) in layers.first().map_or(&[][..], |l| &l.methods[..]) {
                ui.label(RichText::new(m.name()).color(method_color(*m)));
            }
            ui.end_row();
            for (k, l) in layers.iter().enumerate() {
                let title = format!(
                    "{} {}{}",
                    l.layer,
                    l.kind,
                    if l.relu_after { "" } else { " (logits)" }
                );
                if ui.selectable_label(selected == k, title).clicked() {
                    pick = Some(k);
                }
                let n = l.empirical.lower.len();
                ui.label(n.to_string());
                let count = |iv: &Interval| (0..n).filter(|&j| unstable(iv, j)).count();
                ui.label(format!("1.00 ({})", count(&l.empirical)));
                for (_, iv) in &l.methods {
                    let u = if l.relu_after {
                        format!(" ({})", count(iv))
                    } else {
                        String::new()
                    };
                    ui.label(format!("{:.2}{u}", looseness(l, iv)));
                }
                ui.end_row();
            }
        });
    pick
}

/// The interval bars of one layer, widest first, against the empirical range; returns the
/// neuron clicked.
fn bars_ui(
    ui: &mut Ui,
    layers: &[LayerInspection],
    selected: usize,
    neuron: Option<usize>,
) -> Option<usize> {
    let fg = real_color(ui);
    let layer = layers.get(selected)?;
    let order = by_width(layer);
    let shown = order.len().min(MAX_BARS);
    ui.label(RichText::new(format!(
        "Layer {} ({}): pre-activation intervals, the {shown} widest of {} neurons; black: empirical range; red crosses: unstable. Click a bar for its ReLU.",
        layer.layer,
        layer.kind,
        order.len()
    )).small());
    let mm = layer.methods.len() as f64;
    let r = Plot::new("inspector-bars")
        .height(220.0)
        .allow_drag(false)
        .allow_boxed_zoom(false)
        .x_axis_label("neuron (by width)")
        .y_axis_label("pre-activation")
        .legend(Legend::default().position(Corner::RightTop))
        .show(ui, |p| {
            p.hline(
                HLine::new("0", 0.0)
                    .color(Color32::from_gray(150))
                    .width(0.5),
            );
            for (k, &j) in order.iter().take(shown).enumerate() {
                for (mi, (m, iv)) in layer.methods.iter().enumerate() {
                    let x = k as f64 + (mi as f64 - (mm - 1.0) / 2.0) * 0.16;
                    let w = if layer.relu_after && unstable(iv, j) {
                        3.0
                    } else {
                        1.5
                    };
                    p.line(
                        Line::new(
                            m.name(),
                            PlotPoints::new(vec![[x, iv.lower[j]], [x, iv.upper[j]]]),
                        )
                        .color(method_color(*m))
                        .width(w),
                    );
                }
                let e = &layer.empirical;
                p.line(
                    Line::new(
                        "empirical",
                        PlotPoints::new(vec![[k as f64, e.lower[j]], [k as f64, e.upper[j]]]),
                    )
                    .color(fg)
                    .width(4.0),
                );
            }
            if layer.relu_after {
                let marks: Vec<[f64; 2]> = order
                    .iter()
                    .take(shown)
                    .enumerate()
                    .filter(|(_, &j)| layer.methods.iter().any(|(_, iv)| unstable(iv, j)))
                    .map(|(k, _)| [k as f64, 0.0])
                    .collect();
                p.points(
                    Points::new("unstable", marks)
                        .shape(MarkerShape::Cross)
                        .color(UNSTABLE_COLOR)
                        .radius(4.0),
                );
            }
            if let Some(sel) = neuron.and_then(|j| order.iter().position(|&o| o == j)) {
                p.vline(
                    VLine::new("selected neuron", sel as f64)
                        .color(Color32::from_gray(90))
                        .style(LineStyle::dashed_loose()),
                );
            }
        });
    let pos = r
        .response
        .clicked()
        .then(|| r.response.interact_pointer_pos())??;
    let k = r.transform.value_from_position(pos).x.round();
    (k >= 0.0 && (k as usize) < shown).then(|| order[k as usize])
}

/// The worst margin lower bound of each method against eps, PGD's margin, the radii.
pub fn margin_curve_ui(ui: &mut Ui, panel: &InspectorPanel) {
    let fg = real_color(ui);
    let Some((_, _, radii)) = panel
        .radii
        .as_ref()
        .filter(|(i, n, _)| *i == panel.index && *n == panel.norm)
    else {
        ui.label("computing the radii…");
        return;
    };
    ui.label(
        RichText::new("Worst margin lower bound against eps; certified radius where it crosses 0")
            .strong(),
    );
    let mut text = Vec::new();
    for (m, r) in &radii.methods {
        text.push(RichText::new(format!("{} r = {:.4}", m.name(), r)).color(method_color(*m)));
    }
    let pgd = radii.pgd;
    text.push(
        RichText::new(match pgd {
            Some(r) => format!("PGD r = {r:.4}"),
            None => "PGD: never broken".into(),
        })
        .color(fg),
    );
    ui.horizontal_wrapped(|ui| {
        for t in text {
            ui.label(t);
        }
        if let (Some(p), Some(best)) = (pgd, radii.methods.iter().map(|(_, r)| *r).reduce(f64::max))
        {
            ui.label(format!("· certification gap {:.4}", p - best));
        }
    });
    let c = &radii.curve;
    let eps = panel.eps;
    Plot::new("inspector-margin-eps")
        .height(220.0)
        .x_axis_label("eps")
        .y_axis_label("worst margin")
        .legend(Legend::default().position(Corner::RightTop))
        .show(ui, |p| {
            p.hline(
                HLine::new("0", 0.0)
                    .color(Color32::from_gray(150))
                    .width(0.5),
            );
            for (m, v) in &c.methods {
                let pts: Vec<[f64; 2]> = c.eps.iter().zip(v).map(|(e, y)| [*e, *y]).collect();
                p.line(
                    Line::new(m.name(), PlotPoints::new(pts))
                        .color(method_color(*m))
                        .width(2.0),
                );
            }
            let pts: Vec<[f64; 2]> = c.eps.iter().zip(&c.pgd).map(|(e, y)| [*e, *y]).collect();
            p.line(
                Line::new("PGD margin", PlotPoints::new(pts))
                    .color(fg)
                    .width(2.0)
                    .style(LineStyle::dashed_dense()),
            );
            for (m, r) in &radii.methods {
                p.vline(
                    VLine::new(m.name(), *r)
                        .color(method_color(*m))
                        .style(LineStyle::dashed_loose()),
                );
            }
            if let Some(r) = pgd {
                p.vline(VLine::new("PGD radius", r).color(fg).width(1.5));
            }
            p.vline(
                VLine::new("slider eps", eps)
                    .color(Color32::from_gray(160))
                    .style(LineStyle::dotted_dense()),
            );
        });
}

/// One neuron's ReLU over `[l, u]` with each method's lines, the empirical range, and the
/// pre-activation at each relaxation's optimum (what r2 measures).
pub fn neuron_ui(ui: &mut Ui, panel: &mut InspectorPanel, _subject: &Subject) {
    let fg = real_color(ui);
    let Some(point) = panel.point.as_ref() else {
        return;
    };
    let Some(layer) = point.bounds.layers.get(panel.layer) else {
        return;
    };
    if !layer.relu_after {
        ui.label("The logits feed no ReLU: pick a hidden layer in the table to see a neuron's relaxation.");
        return;
    }
    // Default: the widest neuron that some method leaves unstable.
    let order = by_width(layer);
    let j = panel.neuron.or_else(|| {
        order
            .iter()
            .copied()
            .find(|&j| layer.methods.iter().any(|(_, iv)| unstable(iv, j)))
            .or(order.first().copied())
    });
    let Some(j) = j else {
        return;
    };
    ui.label(
        RichText::new(format!(
            "Layer {} neuron {j}: ReLU over each method's [l, u] and the lines it chose",
            layer.layer
        ))
        .strong(),
    );
    let lo = layer
        .methods
        .iter()
        .map(|(_, iv)| iv.lower[j])
        .fold(layer.empirical.lower[j], f64::min);
    let hi = layer
        .methods
        .iter()
        .map(|(_, iv)| iv.upper[j])
        .fold(layer.empirical.upper[j], f64::max);
    let pad = 0.05 * (hi - lo).max(1e-6);
    let text: Vec<String> = layer
        .methods
        .iter()
        .map(|(m, iv)| format!("{} [{:.3}, {:.3}]", m.name(), iv.lower[j], iv.upper[j]))
        .collect();
    ui.label(
        RichText::new(format!(
            "{} · empirical [{:.3}, {:.3}]",
            text.join(" · "),
            layer.empirical.lower[j],
            layer.empirical.upper[j]
        ))
        .small(),
    );
    Plot::new("inspector-neuron")
        .height(220.0)
        .x_axis_label("pre-activation z")
        .y_axis_label("relu(z)")
        .legend(Legend::default().position(Corner::LeftTop))
        .show(ui, |p| {
            let relu = vec![[lo - pad, 0.0], [0.0, 0.0], [hi + pad, (hi + pad).max(0.0)]];
            p.line(
                Line::new("ReLU", PlotPoints::new(relu))
                    .color(fg)
                    .width(2.5),
            );
            for (m, iv) in &layer.methods {
                let (l, u) = (iv.lower[j], iv.upper[j]);
                let (ls, li, us, ui_) = relu_lines(*m, l, u);
                let seg = |s: f64, c: f64| PlotPoints::new(vec![[l, s * l + c], [u, s * u + c]]);
                p.line(
                    Line::new(m.name(), seg(us, ui_))
                        .color(method_color(*m))
                        .width(1.5),
                );
                p.line(
                    Line::new(m.name(), seg(ls, li))
                        .color(method_color(*m))
                        .width(1.5)
                        .style(LineStyle::dashed_loose()),
                );
            }
            let e = &layer.empirical;
            let y = -0.04 * (hi + pad).max(1e-6);
            p.line(
                Line::new(
                    "empirical range",
                    PlotPoints::new(vec![[e.lower[j], y], [e.upper[j], y]]),
                )
                .color(fg)
                .width(5.0),
            );
            for (m, o) in &layer.optimum {
                if let Some(z) = o.get(j) {
                    p.points(
                        Points::new(format!("{} optimum", m.name()), vec![[*z, z.max(0.0)]])
                            .shape(MarkerShape::Diamond)
                            .filled(true)
                            .radius(5.0)
                            .color(method_color(*m)),
                    );
                }
            }
        });
    ui.label(RichText::new("Solid: upper line (chord); dashed: lower line; Diamonds: the real pre-activation at the input where the method's bound on the worst margin is attained: on a line's touching point the relaxation is exact there (r2 = 0).").small());
}
