//! `certlab inspect`: the bound microscope on one test point of a trained run: every layer's
//! pre-activation intervals per bound method against the empirical range, the margin bounds,
//! and the certified radius of each method next to the PGD radius.
use super::trained::load_trained;
use crate::bounds::Ball;
use crate::config::{BoundMethod, Norm};
use crate::eval::{InspectOptions, Interval, Microscope, PointBounds, Radii};
use crate::run;
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

// The flags of `certlab inspect`.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct InspectArgs {
    /// The run folder (written by `certlab run` or the GUI).
    pub run_dir: PathBuf,
    /// The test point, by its index in the test split.
    #[arg(long)]
    pub index: i64,
    /// Perturbation radius.
    #[arg(long)]
    pub eps: f64,
    /// linf or l2 (default: the run's eval.norm).
    #[arg(long)]
    pub norm: Option<String>,
    /// Comma-separated bound methods: ibp, crown-ibp, fastlin, crown (default: all four).
    #[arg(long, value_delimiter = ',')]
    pub methods: Option<Vec<String>>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Inspect model_best.safetensors instead of model.safetensors.
    #[arg(long)]
    pub best: bool,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Parses `--methods` (bound methods only; an unknown name lists the allowed ones).
fn parse_bound_methods(names: &[String]) -> Result<Vec<BoundMethod>> {
    let mut out = Vec::new();
    for raw in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let Some(m) = BoundMethod::parse(raw) else {
            bail!(
                "--methods: unknown method `{raw}`: expected a comma-separated list of {}",
                BoundMethod::ALL.map(|m| m.name()).join(", ")
            );
        };
        if !out.contains(&m) {
            out.push(m);
        }
    }
    if out.is_empty() {
        bail!("--methods: empty: expected at least one of ibp, crown-ibp, fastlin, crown");
    }
    Ok(out)
}

impl InspectArgs {
    pub fn run(&self) -> Result<i32> {
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            bail!("--eps {}: expected a finite value >= 0", self.eps);
        }
        let methods = match &self.methods {
            None => BoundMethod::ONE_PASS.to_vec(),
            Some(names) => parse_bound_methods(names)?,
        };
        let model_file = if self.best {
            run::BEST_MODEL_FILE
        } else {
            run::MODEL_FILE
        };
        if self.run_dir.join(run::CONFIG_FILE).exists() && !self.run_dir.join(model_file).exists() {
            bail!(
                "RUN_DIR {}: no {model_file} (the run has not saved a model yet)",
                self.run_dir.display()
            );
        }
        let trained = load_trained(&self.run_dir, &self.device, self.best)?;
        let norm = match &self.norm {
            None => trained.config.eval.norm,
            Some(s) => {
                Norm::parse(s).with_context(|| format!("--norm `{s}`: expected linf or l2"))?
            }
        };
        let n = trained.data.test_len();
        if !(0..n).contains(&self.index) {
            bail!(
                "--index {}: out of range: the test split has {n} points (0..={})",
                self.index,
                n - 1
            );
        }
        let scope = Microscope::new(&trained.net).map_err(anyhow::Error::msg)?;
        let x = trained.data.test_x.get(self.index);
        let label = trained.data.test_y.int64_value(&[self.index]);
        let opts = InspectOptions {
            methods,
            ..Default::default()
        };
        let never = AtomicBool::new(false);
        let ball = Ball {
            eps: self.eps,
            norm,
        };
        let Some(pb) = scope.bounds_at(&x, label, ball, &opts, &never) else {
            bail!("the inspection was cancelled");
        };
        let Some(radii) = scope.radii(&x, label, norm, self.eps, &opts, &never) else {
            bail!("the inspection was cancelled");
        };
        if self.json {
            println!("{}", inspection_json(self.index, &pb, &radii));
        } else {
            print!("{}", inspection_table(self.index, &pb, &radii));
        }
        Ok(0)
    }
}

fn interval_json(iv: &Interval) -> Value {
    json!({"lower": iv.lower, "upper": iv.upper})
}

/// The JSON of issue 16: `{"index","label","eps","norm","layers":[{"layer","kind","methods":
/// {"<m>":{"lower","upper"}},"empirical":{"lower","upper"}}],"margins":{"<m>":[..]},
/// "radius":{"<m>": r, "pgd": r}}` (`pgd` null when PGD never succeeded).
pub fn inspection_json(index: i64, pb: &PointBounds, radii: &Radii) -> Value {
    let layers: Vec<Value> = pb
        .layers
        .iter()
        .map(|l| {
            let methods: Map<String, Value> = l
                .methods
                .iter()
                .map(|(m, iv)| (m.name().to_string(), interval_json(iv)))
                .collect();
            json!({
                "layer": l.layer,
                "kind": l.kind,
                "methods": methods,
                "empirical": interval_json(&l.empirical),
            })
        })
        .collect();
    let margins: Map<String, Value> = pb
        .margins
        .iter()
        .map(|(m, v)| (m.name().to_string(), json!(v)))
        .collect();
    let mut radius: Map<String, Value> = radii
        .methods
        .iter()
        .map(|(m, r)| (m.name().to_string(), json!(r)))
        .collect();
    radius.insert("pgd".into(), json!(radii.pgd));
    json!({
        "index": index,
        "label": pb.label,
        "eps": pb.eps,
        "norm": pb.norm.name(),
        "layers": layers,
        "margins": margins,
        "radius": radius,
    })
}

fn mean_width(iv: &Interval) -> f64 {
    let n = iv.lower.len().max(1) as f64;
    iv.lower
        .iter()
        .zip(&iv.upper)
        .map(|(l, u)| u - l)
        .sum::<f64>()
        / n
}

fn unstable(iv: &Interval) -> usize {
    iv.lower
        .iter()
        .zip(&iv.upper)
        .filter(|(l, u)| **l < 0.0 && **u > 0.0)
        .count()
}

/// Unstable neurons (`l < 0 < u`) of a layer that feeds a ReLU; "-" for the logits.
fn unstable_text(relu_after: bool, iv: &Interval) -> String {
    if relu_after {
        unstable(iv).to_string()
    } else {
        "-".into()
    }
}

/// The human-readable form: per layer, each method's mean interval width, its looseness (mean
/// width over the empirical mean width) and its unstable neurons; then margins and radii.
fn inspection_table(index: i64, pb: &PointBounds, radii: &Radii) -> String {
    let mut s = format!(
        "test point {index}: label {}, predicted {}, eps {} ({})\n\n",
        pb.label,
        pb.predicted,
        pb.eps,
        pb.norm.name()
    );
    s += &format!(
        "{:<6} {:<7} {:>7}  {:<10} {:>12} {:>10} {:>9}\n",
        "layer", "kind", "neurons", "method", "mean width", "looseness", "unstable"
    );
    for l in &pb.layers {
        let emp = mean_width(&l.empirical);
        let n = l.empirical.lower.len();
        s += &format!(
            "{:<6} {:<7} {:>7}  {:<10} {:>12.5} {:>10} {:>9}\n",
            l.layer,
            l.kind,
            n,
            "empirical",
            emp,
            "1.00",
            unstable_text(l.relu_after, &l.empirical)
        );
        for (m, iv) in &l.methods {
            let w = mean_width(iv);
            let loose = if emp > 0.0 {
                format!("{:.2}", w / emp)
            } else {
                "-".into()
            };
            s += &format!(
                "{:<6} {:<7} {:>7}  {:<10} {:>12.5} {:>10} {:>9}\n",
                "",
                "",
                "",
                m.name(),
                w,
                loose,
                unstable_text(l.relu_after, iv)
            );
        }
    }
    s += "\nmargin lower bounds (z_label - z_t), worst over t, and radii:\n";
    s += &format!(
        "{:<10} {:>14} {:>16}\n",
        "method", "worst margin", "certified radius"
    );
    let label = pb.label as usize;
    for ((m, margins), (_, r)) in pb.margins.iter().zip(&radii.methods) {
        let worst = margins
            .iter()
            .enumerate()
            .filter(|(t, _)| *t != label)
            .map(|(_, v)| *v)
            .fold(f64::INFINITY, f64::min);
        s += &format!("{:<10} {:>14.5} {:>16.6}\n", m.name(), worst, r);
    }
    let pgd = radii
        .pgd
        .map_or("none up to the whole box".to_string(), |r| {
            format!("{r:.6}")
        });
    s += &format!("{:<10} {:>14.5} {:>16}\n", "pgd", pb.pgd_margin, pgd);
    s
}
