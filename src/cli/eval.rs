//! `certlab eval`: clean, PGD and certified accuracy of a trained run.
use super::trained::load_trained;
use crate::attack::AttackLoss;
use crate::bounds;
use crate::config::BoundMethod;
use crate::config::Norm;
use crate::eval::noisy::{noisy_robust_eval, InputNoise};
use crate::eval::{robust_eval_with_progress, RobustReport, RobustSpec};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

// The flags of `certlab eval`.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct EvalArgs {
    /// The run folder (written by `certlab run` or the GUI).
    pub run_dir: PathBuf,
    /// Perturbation radius.
    #[arg(long)]
    pub eps: f64,
    /// linf or l2 (default: the run's eval.norm).
    #[arg(long)]
    pub norm: Option<String>,
    /// Comma-separated: clean, pgd, ibp, crown-ibp, fastlin, crown
    /// (default: clean, pgd and the run's eval.bounds).
    #[arg(long, value_delimiter = ',')]
    pub methods: Option<Vec<String>>,
    /// PGD steps per restart (step size 2.5 eps / steps).
    #[arg(long, default_value_t = 20)]
    pub pgd_steps: u32,
    /// PGD restarts (the first from the clean point, the others from random points).
    #[arg(long, default_value_t = 1)]
    pub restarts: u32,
    /// PGD objective: ce (cross-entropy) or margin (Carlini-Wagner).
    #[arg(long, default_value = "ce")]
    pub pgd_loss: String,
    /// Number of test points, in file order (default: the run's eval.robust_subset; 0 = all).
    #[arg(long)]
    pub n: Option<usize>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Evaluate model_best.safetensors instead of model.safetensors.
    #[arg(long)]
    pub best: bool,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Points per batch.
    #[arg(long, default_value_t = 256)]
    pub batch: i64,
    /// Torch threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// What `certlab eval` evaluates; the command line's `--methods`.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodSet {
    pub clean: bool,
    pub pgd: bool,
    pub bounds: Vec<BoundMethod>,
}

/// Every name `--methods` accepts.
pub fn method_names() -> Vec<&'static str> {
    let mut names = vec!["clean", "pgd"];
    names.extend(BoundMethod::ALL.iter().map(|m| m.name()));
    names
}

/// Parses `--methods` names (`clean`, `pgd` and the bound methods); an unknown name is an
/// error that lists the allowed ones.
pub fn parse_methods(names: &[String]) -> Result<MethodSet, String> {
    let mut set = MethodSet {
        clean: false,
        pgd: false,
        bounds: vec![],
    };
    for raw in names {
        let name = raw.trim();
        match name {
            "" => {}
            "clean" => set.clean = true,
            "pgd" => set.pgd = true,
            _ => match BoundMethod::parse(name) {
                Some(m) if !set.bounds.contains(&m) => set.bounds.push(m),
                Some(_) => {}
                None => {
                    return Err(format!(
                        "--methods: unknown method `{name}`: expected a comma-separated list of {}",
                        method_names().join(", ")
                    ))
                }
            },
        }
    }
    if !set.clean && !set.pgd && set.bounds.is_empty() {
        return Err(format!(
            "--methods is empty: expected a comma-separated list of {}",
            method_names().join(", ")
        ));
    }
    Ok(set)
}

impl EvalArgs {
    /// `certlab eval`: loads a run folder, rebuilds its network and evaluates it on the first N
    /// test points. Prints a table, or one JSON object with `--json`. Returns the exit code
    /// (3 when a bound certifies a point that PGD breaks).
    pub fn run(&self) -> Result<i32> {
        super::set_threads(self.threads)?;
        let opts = self;
        if !(opts.eps.is_finite() && opts.eps >= 0.0) {
            bail!("--eps {}: expected a finite value >= 0", opts.eps);
        }
        if !(1..=100).contains(&opts.restarts) {
            bail!("--restarts {}: expected 1..=100", opts.restarts);
        }
        if opts.pgd_steps > 10_000 {
            bail!("--pgd-steps {}: expected 1..=10000", opts.pgd_steps);
        }
        if opts.batch < 1 {
            bail!("--batch {}: expected >= 1", opts.batch);
        }
        let pgd_loss = AttackLoss::parse(&opts.pgd_loss).with_context(|| {
            format!(
                "--pgd-loss `{}`: expected one of {}",
                opts.pgd_loss,
                AttackLoss::ALL.map(|l| l.name()).join(", ")
            )
        })?;
        let run = crate::run::load_run(&opts.run_dir)?;
        let cfg = run.config;
        let norm = match &opts.norm {
            Some(s) => {
                Norm::parse(s).with_context(|| format!("--norm `{s}`: expected linf or l2"))?
            }
            None => cfg.eval.norm,
        };
        let methods = match &opts.methods {
            Some(names) => parse_methods(names).map_err(anyhow::Error::msg)?,
            None => {
                let mut names = vec!["clean".to_string(), "pgd".to_string()];
                names.extend(cfg.eval.bounds.iter().map(|b| b.name().to_string()));
                parse_methods(&names).map_err(anyhow::Error::msg)?
            }
        };
        if methods.pgd && opts.pgd_steps == 0 {
            bail!("--pgd-steps 0: PGD needs at least one step (or leave `pgd` out of --methods)");
        }
        let trained = load_trained(&opts.run_dir, &opts.device, opts.best)?;
        let (net, device, model_file) = (&trained.net, trained.device, trained.model_file);
        if !methods.bounds.is_empty() {
            bounds::check_supported(net).map_err(anyhow::Error::msg)?;
        }
        let (x, y) = trained.first_test_points(opts.n.unwrap_or(cfg.eval.robust_subset));
        let spec = RobustSpec {
            eps: opts.eps,
            norm,
            bounds: methods.bounds.clone(),
            pgd_steps: if methods.pgd { opts.pgd_steps } else { 0 },
            pgd_restarts: opts.restarts,
            pgd_loss,
            alpha: crate::bounds::AlphaSettings {
                iters: cfg.eval.alpha_iters,
                lr: cfg.eval.alpha_lr,
            },
        };
        let tty = std::io::stderr().is_terminal();
        // A randomized model (`rat`): majority vote over eval.noise_draws, EOT-PGD.
        let report = if let Some((noise, sigma)) = cfg.train.randomized() {
            let noise = InputNoise { noise, sigma };
            let draws = (cfg.eval.noise_draws, cfg.eval.eot_draws);
            noisy_robust_eval(net, &x, &y, &spec, noise, draws)
        } else {
            robust_eval_with_progress(net, &x, &y, &spec, opts.batch, &mut |done, all| {
                if tty {
                    eprint!("\revaluating {done}/{all} points");
                    let _ = std::io::stderr().flush();
                }
            })
        };
        if tty {
            eprint!("\r{}\r", " ".repeat(40));
        }
        for v in &report.violations {
            eprintln!("error: {v}");
        }
        if opts.json {
            println!("{}", report_json(opts, &spec, &report, model_file));
        } else {
            println!(
                "run {} ({model_file}): {}",
                opts.run_dir.display(),
                net.describe()
            );
            print_table(opts, &spec, &report, device);
        }
        Ok(if report.violations.is_empty() { 0 } else { 3 })
    }
}

/// The `--json` object of `certlab eval`.
fn report_json(
    opts: &EvalArgs,
    spec: &RobustSpec,
    report: &RobustReport,
    model_file: &str,
) -> serde_json::Value {
    let cert: serde_json::Map<String, serde_json::Value> = report
        .eval
        .cert_acc
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::json!(v)))
        .collect();
    serde_json::json!({
        "eps": opts.eps,
        "norm": spec.norm.name(),
        "n": report.n,
        "clean_acc": report.clean_acc,
        "pgd_acc": report.eval.pgd_acc,
        "cert_acc": cert,
        "pgd_steps": spec.pgd_steps,
        "pgd_restarts": spec.pgd_restarts,
        "pgd_loss": spec.pgd_loss.name(),
        "model": model_file,
        "violations": report.violations.iter().map(|v| serde_json::json!({
            "index": v.index,
            "method": v.method.name(),
            "bound_margin": v.bound_margin,
            "attack_margin": v.attack_margin,
        })).collect::<Vec<_>>(),
    })
}

/// The table of `certlab eval`: one row per method with its accuracy and speed.
fn print_table(opts: &EvalArgs, spec: &RobustSpec, report: &RobustReport, device: tch::Device) {
    println!(
        "eps {} ({}), first {} test points, device {}",
        opts.eps,
        spec.norm.name(),
        report.n,
        crate::device::device_name(device)
    );
    println!(
        "{:<12} {:>9} {:>8} {:>10} {:>12}",
        "method", "accuracy", "points", "time (s)", "points/s"
    );
    let row = |name: &str, acc: f64, secs: Option<f64>| {
        let count = (acc * report.n as f64).round() as i64;
        let (t, rate) = match secs {
            Some(s) => (
                format!("{s:.3}"),
                format!("{:.0}", report.n as f64 / s.max(1e-9)),
            ),
            None => ("-".into(), "-".into()),
        };
        println!("{name:<12} {acc:>9.4} {count:>8} {t:>10} {rate:>12}");
    };
    row("clean", report.clean_acc, None);
    if let Some(p) = report.eval.pgd_acc {
        let name = format!("pgd-{}x{}", spec.pgd_steps, spec.pgd_restarts);
        row(&name, p, Some(report.pgd_secs));
    }
    for (i, m) in spec.bounds.iter().enumerate() {
        if let Some(&acc) = report.eval.cert_acc.get(m.name()) {
            row(m.name(), acc, report.cert_secs.get(i).copied());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_methods_accepts_known_names_and_lists_them_on_error() {
        let names = |s: &str| s.split(',').map(String::from).collect::<Vec<_>>();
        let m = parse_methods(&names("clean,pgd,ibp,crown-ibp,fastlin,crown,alpha-crown")).unwrap();
        assert!(m.clean && m.pgd);
        assert_eq!(m.bounds, BoundMethod::ALL.to_vec());
        let m = parse_methods(&names("crown, ibp,ibp")).unwrap();
        assert!(!m.clean && !m.pgd);
        assert_eq!(m.bounds, vec![BoundMethod::Crown, BoundMethod::Ibp]);
        let err = parse_methods(&names("clean,lipschitz")).unwrap_err();
        assert!(err.contains("`lipschitz`"), "{err}");
        for n in [
            "clean",
            "pgd",
            "ibp",
            "crown-ibp",
            "fastlin",
            "crown",
            "alpha-crown",
        ] {
            assert!(err.contains(n), "{err}");
        }
        assert!(parse_methods(&names("")).is_err());
    }
}
