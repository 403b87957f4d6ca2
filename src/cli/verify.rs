//! `certlab verify`: complete verification of the first test points of a trained run, a
//! verdict per point (verified / falsified / unknown / timeout) and the stage that decided it.
use super::trained::load_trained;
use crate::bounds::{self, AlphaSettings, Ball};
use crate::config::Norm;
use crate::eval::verify::{verify, VerifySettings};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;

// The flags of `certlab verify`.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct VerifyArgs {
    /// The run folder (written by `certlab run` or the GUI).
    pub run_dir: PathBuf,
    /// Perturbation radius.
    #[arg(long)]
    pub eps: f64,
    /// linf or l2.
    #[arg(long, default_value = "linf")]
    pub norm: String,
    /// Time budget per point, seconds.
    #[arg(long = "timeout-s", default_value_t = 10.0)]
    pub timeout_s: f64,
    /// Number of test points, in file order.
    #[arg(long, default_value_t = 100)]
    pub n: usize,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// alpha-CROWN iterations and step size (the run's `eval.alpha_iters` / `alpha_lr` when
    /// not given).
    #[arg(long)]
    pub alpha_iters: Option<u32>,
    #[arg(long)]
    pub alpha_lr: Option<f64>,
    /// alpha-CROWN iterations on every branch-and-bound subdomain (0: CROWN).
    #[arg(long, default_value_t = 0)]
    pub bab_alpha_iters: u32,
    /// Use model_best.safetensors instead of model.safetensors.
    #[arg(long)]
    pub best: bool,
    /// auto, cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Torch threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl VerifyArgs {
    pub fn run(&self) -> Result<i32> {
        super::set_threads(self.threads)?;
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            bail!("--eps {}: expected a finite value >= 0", self.eps);
        }
        if !(self.timeout_s.is_finite() && self.timeout_s > 0.0) {
            bail!(
                "--timeout-s {}: expected a positive number of seconds",
                self.timeout_s
            );
        }
        if self.n == 0 {
            bail!("--n 0: expected at least one point");
        }
        let norm = Norm::parse(&self.norm)
            .with_context(|| format!("--norm `{}`: expected linf or l2", self.norm))?;
        if self.alpha_iters == Some(0) {
            bail!("--alpha-iters 0: expected at least 1");
        }
        if let Some(lr) = self.alpha_lr {
            if !(lr.is_finite() && lr > 0.0) {
                bail!("--alpha-lr {lr}: expected a positive step size");
            }
        }
        let trained = load_trained(&self.run_dir, &self.device, self.best)?;
        let net = &trained.net;
        bounds::check_supported(net).map_err(anyhow::Error::msg)?;
        let (x, y) = trained.first_test_points(self.n);
        let ball = Ball {
            eps: self.eps,
            norm,
        };
        let e = &trained.config.eval;
        let mut settings = VerifySettings::with_timeout(self.timeout_s);
        settings.alpha = AlphaSettings {
            iters: self.alpha_iters.unwrap_or(e.alpha_iters),
            lr: self.alpha_lr.unwrap_or(e.alpha_lr),
        };
        if self.bab_alpha_iters > 0 {
            settings.bab.alpha = Some(AlphaSettings {
                iters: self.bab_alpha_iters,
                lr: settings.alpha.lr,
            });
        }
        let quiet = self.json;
        let report = verify(net, &x, &y, ball, &settings, &mut |done, total| {
            if !quiet && (done % 10 == 0 || done == total) {
                eprintln!("verified {done} / {total} points");
            }
        });
        if self.json {
            println!("{}", serde_json::to_string(&report)?);
            return Ok(0);
        }
        for p in &report.points {
            println!(
                "{:>5}  label {:>2}  {:<9}  {:<11}  {:.3} s",
                p.index,
                p.label,
                format!("{:?}", p.verdict).to_lowercase(),
                p.decided_by.map_or("-", |d| d.name()),
                p.seconds
            );
        }
        let stats = report.stats();
        println!(
            "{}: eps {} ({}), timeout {} s per point: verified {:.1}% of {}, falsified {}, unknown {} (timeouts {}); verified by {:?}, falsified by {:?}",
            self.run_dir.display(),
            self.eps,
            norm.name(),
            self.timeout_s,
            100.0 * report.verified_acc,
            report.points.len(),
            report.falsified,
            report.unknown,
            stats.timeout,
            stats.verified_by,
            stats.falsified_by
        );
        Ok(0)
    }
}
