//! `certlab runs`: list run folders with their final metrics.
use crate::run;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

// The flags of `certlab runs`.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct RunsArgs {
    #[arg(default_value = "runs")]
    pub dir: PathBuf,
}

impl RunsArgs {
    /// Prints one line per run folder under `dir`: method, status, the last metrics.
    pub fn run(&self) -> Result<()> {
        let dir = &self.dir;
        let runs = run::list_runs(dir)?;
        if runs.is_empty() {
            println!("no run folders in {}", dir.display());
            return Ok(());
        }
        // The run and status columns grow to their longest entry ("running or crashed").
        let width = |min: usize, f: &dyn Fn(&run::RunData) -> String| {
            runs.iter()
                .flatten()
                .map(|r| f(r).chars().count())
                .fold(min, usize::max)
        };
        let name_w = width(40, &|r| r.name());
        let status_w = width(10, &|r| r.status().to_string());
        println!(
            "{:<name_w$} {:<10} {:<status_w$} {:>6} {:>9} {:>9} {:>9}  cert",
            "run", "method", "status", "epoch", "loss", "clean", "pgd"
        );
        for r in runs {
            match r {
                Ok(r) => {
                    let last = r.last();
                    let cert = last
                        .map(|m| {
                            m.cert_acc
                                .iter()
                                .map(|(k, v)| format!("{k}={v:.4}"))
                                .collect::<Vec<_>>()
                                .join(" ")
                        })
                        .unwrap_or_default();
                    println!(
                        "{:<name_w$} {:<10} {:<status_w$} {:>6} {:>9} {:>9} {:>9}  {}",
                        r.name(),
                        r.config.train.method.name(),
                        r.status(),
                        last.map_or("-".into(), |m| m.epoch.to_string()),
                        last.map_or("-".into(), |m| format!("{:.4}", m.train_loss)),
                        fmt_acc(last.map(|m| m.clean_acc)),
                        fmt_acc(last.and_then(|m| m.pgd_acc)),
                        cert
                    );
                }
                Err(e) => println!("(unreadable) {e}"),
            }
        }
        Ok(())
    }
}

fn fmt_acc(v: Option<f64>) -> String {
    v.map_or("-".into(), |a| format!("{:.4}", a))
}
