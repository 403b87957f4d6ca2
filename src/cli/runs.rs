//! `certlab runs`: list run folders with their final metrics.
use crate::metrics;
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
    /// Prints one line per run folder under `dir`: method, status, the last epoch, and the
    /// accuracies of the evaluation that stands for the run (`split`: see
    /// [`metrics::split_label`]).
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
            "{:<name_w$} {:<10} {:<status_w$} {:>6} {:>9} {:>9} {:>12} {:>8} {:<11} {:>9} {:>9}  cert",
            "run", "method", "status", "epoch", "loss", "train_eps", "eval_eps", "wall_s", "split", "clean", "pgd"
        );
        for r in runs {
            match r {
                Ok(r) => {
                    // Epochs and loss from the last epoch; accuracies from the evaluation
                    // that stands for the run (the final test one when there is one).
                    let epoch = metrics::last_epoch(&r.metrics);
                    let last = metrics::reported(&r.metrics);
                    // Then `eval.cross_norm`'s PGD accuracies, the trained-for norm first.
                    let trained = r.config.train.norm.name();
                    let cert = last
                        .map(|m| {
                            m.cert_acc
                                .iter()
                                .map(|(k, v)| format!("{k}={v:.4}"))
                                .chain(
                                    metrics::cross_norm_cells(m, trained)
                                        .into_iter()
                                        .map(|(n, e, a)| format!("pgd_{n}@{e}={a:.4}")),
                                )
                                .collect::<Vec<_>>()
                                .join(" ")
                        })
                        .unwrap_or_default();
                    // Runs compare only at the same eval eps and norm: both are shown.
                    let train_eps = if r.config.train.method.uses_eps() {
                        r.config.train.eps.to_string()
                    } else {
                        "-".into()
                    };
                    let eval_eps = r
                        .config
                        .eval
                        .eps
                        .first()
                        .map_or("-".into(), |e| format!("{e} {}", r.config.eval.norm.name()));
                    println!(
                        "{:<name_w$} {:<10} {:<status_w$} {:>6} {:>9} {:>9} {:>12} {:>8} {:<11} {:>9} {:>9}  {}",
                        r.name(),
                        r.config.train.method.name(),
                        r.status(),
                        epoch.map_or("-".into(), |m| m.epoch.to_string()),
                        epoch.map_or("-".into(), |m| format!("{:.4}", m.train_loss)),
                        train_eps,
                        eval_eps,
                        r.summary.as_ref().map_or("-".into(), |s| format!("{:.1}", s.elapsed_s)),
                        last.map_or("-", metrics::split_label),
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
