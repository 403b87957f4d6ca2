//! `certlab lipschitz`: per-layer and whole-network Lipschitz values of a trained run.
use super::trained::load_trained;
use crate::config::Estimator;
use crate::lipschitz;
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

// The flags of `certlab lipschitz`.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct LipschitzArgs {
    /// The run folder (written by `certlab run` or the GUI).
    pub run_dir: PathBuf,
    /// Comma-separated: power, gram, exact, toeplitz, product, lipsdp, empirical
    /// (default: all of them, lipsdp for MLPs only).
    #[arg(long, value_delimiter = ',')]
    pub methods: Option<Vec<String>>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Test points the empirical lower bound starts from.
    #[arg(long, default_value_t = 64)]
    pub n: usize,
    /// Gram iterations.
    #[arg(long, default_value_t = 8)]
    pub gram_iters: u32,
    /// Toeplitz bound: frequency grid points per axis (the guaranteed correction needs
    /// more than about 4.5 (k - 1) for a k x k kernel).
    #[arg(long, default_value_t = lipschitz::TOEPLITZ_GRID)]
    pub toeplitz_grid: i64,
    /// Use model_best.safetensors instead of model.safetensors.
    #[arg(long)]
    pub best: bool,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl LipschitzArgs {
    /// Prints (or writes as JSON) the per-layer and whole-network values of each estimator.
    pub fn run(&self) -> Result<()> {
        let LipschitzArgs {
            run_dir,
            methods,
            json,
            n,
            gram_iters,
            toeplitz_grid,
            best,
            device,
        } = self;
        if *gram_iters > 30 {
            bail!("--gram-iters {gram_iters}: expected 0..=30");
        }
        if !(2..=4096).contains(toeplitz_grid) {
            bail!("--toeplitz-grid {toeplitz_grid}: expected 2..=4096");
        }
        let trained = load_trained(run_dir, device, *best)?;
        let net = &trained.net;
        let estimators = match methods {
            Some(names) => {
                let list =
                    Estimator::parse_list(names).map_err(|e| anyhow::anyhow!("--methods: {e}"))?;
                if list.is_empty() {
                    bail!(
                        "--methods is empty: expected a comma-separated list of {}",
                        Estimator::ALL.map(Estimator::name).join(", ")
                    );
                }
                list
            }
            None => Estimator::ALL
                .into_iter()
                .filter(|e| *e != Estimator::Lipsdp || lipschitz::mlp_weights(net).is_ok())
                .collect(),
        };
        let n = *n;
        let (x, _) = trained.first_test_points(n.max(1));
        let settings = lipschitz::Settings {
            gram_iters: *gram_iters,
            toeplitz_grid: *toeplitz_grid,
            empirical_points: n.max(1) as i64,
            ..lipschitz::Settings::default()
        };
        let report = lipschitz::estimate(net, &estimators, Some(&x), &settings)?;
        if *json {
            println!("{}", report.to_json());
            return Ok(());
        }
        println!(
            "run {} ({}): {}",
            run_dir.display(),
            trained.model_file,
            net.describe()
        );
        let per_layer: Vec<Estimator> = estimators
            .iter()
            .copied()
            .filter(|e| e.per_layer())
            .collect();
        if !per_layer.is_empty() {
            print!("{:<6} {:<10}", "layer", "kind");
            for e in &per_layer {
                print!(" {:>14}", e.name());
            }
            println!();
            for l in &report.layers {
                print!("{:<6} {:<10}", l.index, l.kind);
                for e in &per_layer {
                    match l.values.get(e.name()) {
                        Some(v) => print!(" {v:>14.6}"),
                        None => print!(" {:>14}", "-"),
                    }
                }
                println!();
            }
        }
        println!("{:<12} {:>14} {:>10}", "network", "value", "seconds");
        for e in &estimators {
            let v = report.network.get(e.name()).copied().unwrap_or(f64::NAN);
            let t = report.seconds.get(e.name()).copied().unwrap_or(f64::NAN);
            println!("{:<12} {v:>14.6} {t:>10.3}", e.name());
        }
        for note in &report.notes {
            println!("note: {note}");
        }
        Ok(())
    }
}
