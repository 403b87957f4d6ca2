//! The 2-D view of a toy data set: the model's decision regions, the test points, and each
//! point's eps ball coloured by what could be shown about it.
use super::series::PALETTE;
use crate::metrics::{DecisionMap, PointStatus};
use egui::{Color32, ColorImage, TextureHandle, TextureOptions, Ui};
use egui_plot::{
    Corner, Legend, MarkerShape, Plot, PlotImage, PlotPoint, PlotPoints, PlotResponse, Points,
    Polygon,
};

/// Colours of the two (or more) classes' regions and points.
pub fn class_color(c: usize) -> Color32 {
    [PALETTE[0], PALETTE[6], PALETTE[2], PALETTE[4], PALETTE[5]][c % 5]
}

pub fn status_color(s: PointStatus) -> Color32 {
    match s {
        PointStatus::Certified => Color32::from_rgb(46, 160, 67),
        PointStatus::PgdRobust => Color32::from_rgb(230, 170, 20),
        PointStatus::CleanOnly => Color32::from_rgb(220, 50, 47),
        PointStatus::Misclassified => Color32::from_gray(120),
    }
}

pub fn status_label(s: PointStatus) -> &'static str {
    match s {
        PointStatus::Certified => "certified",
        PointStatus::PgdRobust => "PGD-robust, not certified",
        PointStatus::CleanOnly => "not robust (attack succeeds)",
        PointStatus::Misclassified => "misclassified",
    }
}

/// The decision regions as an image: row 0 at the top (x2 = 1), light tints of the class
/// colours, blended by the probability of class 1 for two classes.
pub fn regions_image(map: &DecisionMap) -> ColorImage {
    let r = map.resolution;
    let two = map.labels.iter().all(|l| *l < 2);
    let tint = |c: Color32| {
        let w = 0.35;
        let mix = |a: u8| (255.0 * (1.0 - w) + a as f32 * w) as u8;
        [mix(c.r()), mix(c.g()), mix(c.b())]
    };
    let (c0, c1) = (tint(class_color(0)), tint(class_color(1)));
    let mut pixels = Vec::with_capacity(r * r);
    for row in 0..r {
        let grid_row = r - 1 - row;
        for col in 0..r {
            let v = map.prob.get(grid_row * r + col).copied().unwrap_or(0.0);
            let rgb = if two {
                // Sharpen towards the boundary so the regions read as regions.
                let p = ((v - 0.5) * 4.0 + 0.5).clamp(0.0, 1.0);
                let lerp = |a: u8, b: u8| (a as f32 * (1.0 - p) + b as f32 * p) as u8;
                [lerp(c0[0], c1[0]), lerp(c0[1], c1[1]), lerp(c0[2], c1[2])]
            } else {
                tint(class_color(v.round().max(0.0) as usize))
            };
            pixels.push(Color32::from_rgb(rgb[0], rgb[1], rgb[2]));
        }
    }
    ColorImage::new([r, r], pixels)
}

/// The outline of the eps ball around `c`: a square (l_inf) or a 24-gon (l_2).
pub fn ball(c: [f32; 2], eps: f64, l2: bool) -> Vec<[f64; 2]> {
    let (x, y) = (c[0] as f64, c[1] as f64);
    if l2 {
        (0..24)
            .map(|k| {
                let a = k as f64 / 24.0 * std::f64::consts::TAU;
                [x + eps * a.cos(), y + eps * a.sin()]
            })
            .collect()
    } else {
        vec![
            [x - eps, y - eps],
            [x + eps, y - eps],
            [x + eps, y + eps],
            [x - eps, y + eps],
        ]
    }
}

/// Draws the view. `texture` caches the regions image of `map.epoch`. The plot's response
/// and transform (`None` before the first image) tell where each point is on screen.
pub fn decision_ui(
    ui: &mut Ui,
    map: &DecisionMap,
    texture: &mut Option<(u32, TextureHandle)>,
    height: f32,
) -> Option<PlotResponse<()>> {
    if texture.as_ref().is_none_or(|(e, _)| *e != map.epoch) {
        let tex = ui.ctx().load_texture(
            "decision-regions",
            regions_image(map),
            TextureOptions::LINEAR,
        );
        *texture = Some((map.epoch, tex));
    }
    let Some((_, tex)) = texture.as_ref() else {
        ui.label("no decision map yet");
        return None;
    };
    let tex_id = tex.id();
    let response = Plot::new("decision-map")
        .height(height)
        .data_aspect(1.0)
        .include_x(0.0)
        .include_x(1.0)
        .include_y(0.0)
        .include_y(1.0)
        .x_axis_label("x1")
        .y_axis_label("x2")
        .legend(Legend::default().position(Corner::RightBottom))
        .show(ui, |p| {
            p.image(PlotImage::new(
                "decision regions",
                tex_id,
                PlotPoint::new(0.5, 0.5),
                [1.0, 1.0],
            ));
            for (i, c) in map.points.iter().enumerate() {
                let Some(status) = map.status.get(i).copied() else {
                    continue;
                };
                if map.eps > 0.0 {
                    let col = status_color(status);
                    p.polygon(
                        Polygon::new(
                            status_label(status),
                            PlotPoints::new(ball(*c, map.eps, map.norm_l2)),
                        )
                        .fill_color(col.gamma_multiply(0.35))
                        .stroke(egui::Stroke::new(1.0, col))
                        .allow_hover(false),
                    );
                }
            }
            let classes = map.labels.iter().copied().max().unwrap_or(0).max(0) as usize + 1;
            for class in 0..classes {
                let pts: Vec<[f64; 2]> = map
                    .points
                    .iter()
                    .zip(&map.labels)
                    .filter(|(_, l)| **l as usize == class)
                    .map(|(c, _)| [c[0] as f64, c[1] as f64])
                    .collect();
                p.points(
                    Points::new(format!("class {class}"), pts)
                        .color(class_color(class))
                        .shape(MarkerShape::Circle)
                        .filled(true)
                        .radius(2.5),
                );
            }
        });
    Some(response)
}

/// Counts of each status, in display order.
pub fn status_counts(map: &DecisionMap) -> [(PointStatus, usize); 4] {
    let count = |s| map.status.iter().filter(|x| **x == s).count();
    [
        (PointStatus::Certified, count(PointStatus::Certified)),
        (PointStatus::PgdRobust, count(PointStatus::PgdRobust)),
        (PointStatus::CleanOnly, count(PointStatus::CleanOnly)),
        (
            PointStatus::Misclassified,
            count(PointStatus::Misclassified),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_image_puts_row_zero_of_the_grid_at_the_bottom() {
        // 2x2 grid: class 1 certain in the bottom row (x2 small), class 0 on top.
        let map = DecisionMap {
            resolution: 2,
            prob: vec![1.0, 1.0, 0.0, 0.0],
            labels: vec![0, 1],
            ..DecisionMap::default()
        };
        let img = regions_image(&map);
        let top = img.pixels[0];
        let bottom = img.pixels[2];
        let c1 = class_color(1);
        // The bottom row is tinted towards class 1's colour (more red than blue for PALETTE[6]).
        assert!(
            bottom.r() > bottom.b() && top.b() > top.r(),
            "{top:?} {bottom:?} {c1:?}"
        );
        let sq = ball([0.5, 0.5], 0.1, false);
        assert_eq!(sq.len(), 4);
        assert!(ball([0.5, 0.5], 0.1, true)
            .iter()
            .all(|p| ((p[0] - 0.5).hypot(p[1] - 0.5) - 0.1).abs() < 1e-6));
    }
}
