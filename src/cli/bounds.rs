//! `certlab bounds`: logit and margin bounds of the first test points of a trained run, as JSON.
use super::trained::load_trained;
use crate::bounds::{self, Ball};
use crate::config::{BoundMethod, Norm};
use crate::device::synchronize;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

// The flags of `certlab bounds`.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct BoundsArgs {
    /// The run folder (written by `certlab run` or the GUI).
    pub run_dir: PathBuf,
    /// Perturbation radius.
    #[arg(long)]
    pub eps: f64,
    /// linf or l2.
    #[arg(long, default_value = "linf")]
    pub norm: String,
    /// ibp, crown-ibp, fastlin or crown (fastlin and crown use exact intermediate bounds).
    #[arg(long, default_value = "crown")]
    pub method: String,
    /// Number of test points, in file order.
    #[arg(long, default_value_t = 10)]
    pub n: usize,
    /// Write the JSON to this file instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Use model_best.safetensors instead of model.safetensors.
    #[arg(long)]
    pub best: bool,
    /// auto, cpu or cuda.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

impl BoundsArgs {
    /// `certlab bounds`: per-class logit bounds and margin lower bounds of the first N test points,
    /// as JSON on stdout or in `--out` (written to a temporary file, then renamed).
    pub fn run(&self) -> Result<i32> {
        let opts = self;
        if !(opts.eps.is_finite() && opts.eps >= 0.0) {
            bail!("--eps {}: expected a finite value >= 0", opts.eps);
        }
        let norm = Norm::parse(&opts.norm)
            .with_context(|| format!("--norm `{}`: expected linf or l2", opts.norm))?;
        let method = BoundMethod::parse(&opts.method).with_context(|| {
            format!(
                "--method `{}`: expected one of {}",
                opts.method,
                BoundMethod::ALL.map(|m| m.name()).join(", ")
            )
        })?;
        if opts.n == 0 {
            bail!("--n 0: expected at least one point");
        }
        if let Some(out) = &opts.out {
            if out.is_dir() {
                bail!("--out {}: is a folder, expected a file name", out.display());
            }
        }
        let trained = load_trained(&opts.run_dir, &opts.device, opts.best)?;
        let net = &trained.net;
        bounds::check_supported(net).map_err(anyhow::Error::msg)?;
        let (x, y) = trained.first_test_points(opts.n);
        let ball = Ball {
            eps: opts.eps,
            norm,
        };
        let started = Instant::now();
        let (lower, upper, cert) = tch::no_grad(|| {
            let (lo, hi) = bounds::logit_bounds(net, &x, ball, method);
            (lo, hi, bounds::certify(net, &x, &y, ball, method))
        });
        let margin = cert.margin_lower;
        synchronize(trained.device);
        let secs = started.elapsed().as_secs_f64();
        let rows = |t: &Tensor| -> Vec<Vec<f64>> {
            Vec::<Vec<f64>>::try_from(t.to_kind(Kind::Double).to_device(Device::Cpu))
                .unwrap_or_default()
        };
        let (lower, upper, margin_rows) = (rows(&lower), rows(&upper), rows(&margin));
        let labels = Vec::<i64>::try_from(y.to_device(Device::Cpu)).unwrap_or_default();
        let certified =
            Vec::<bool>::try_from(cert.certified.to_device(Device::Cpu)).unwrap_or_default();
        let points: Vec<serde_json::Value> = (0..labels.len())
            .map(|i| {
                serde_json::json!({
                    "index": i,
                    "label": labels[i],
                    "logits_lower": lower[i],
                    "logits_upper": upper[i],
                    "margin_lower": margin_rows[i],
                    "certified": certified[i],
                })
            })
            .collect();
        let n_cert = certified.iter().filter(|&&c| c).count();
        let obj = serde_json::json!({
            "method": method.name(),
            "eps": opts.eps,
            "norm": norm.name(),
            "n": labels.len(),
            "certified": n_cert,
            "seconds": secs,
            "model": trained.model_file,
            "points": points,
        });
        match &opts.out {
            None => println!("{obj}"),
            Some(out) => {
                let tmp = out.with_extension("json.tmp");
                std::fs::write(&tmp, format!("{obj}\n"))
                    .and_then(|_| std::fs::rename(&tmp, out))
                    .with_context(|| format!("cannot write {}", out.display()))?;
                println!(
                    "{}: {} of {} points certified by {} at eps {} ({}), {:.3} s; wrote {}",
                    opts.run_dir.display(),
                    n_cert,
                    labels.len(),
                    method.name(),
                    opts.eps,
                    norm.name(),
                    secs,
                    out.display()
                );
            }
        }
        Ok(0)
    }
}
