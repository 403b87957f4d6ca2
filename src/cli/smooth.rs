//! `certlab smooth`: randomized-smoothing certificates (Cohen et al. 2019) of a trained run's
//! first test points, with the certified accuracy at a list of radii.
use super::trained::load_trained;
use crate::config::{Noise, SmoothingConfig};
use crate::eval::smoothing::{self, Certificate, SmoothParams};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

// The flags of `certlab smooth`.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct SmoothArgs {
    /// The run folder (written by `certlab run` or the GUI).
    pub run_dir: PathBuf,
    /// Noise level(s), the per-coordinate standard deviation; comma-separated for several
    /// (best certificate over them, alpha split between them).
    #[arg(long, value_delimiter = ',', required = true)]
    pub sigma: Vec<f64>,
    /// gaussian (l_2 radii), laplace or uniform (l_1 radii).
    #[arg(long, default_value = "gaussian")]
    pub noise: String,
    /// Samples that pick the class.
    #[arg(long, default_value_t = 100)]
    pub n0: u64,
    /// Samples that count it.
    #[arg(long, default_value_t = 10_000)]
    pub n: u64,
    /// Probability that a certificate is wrong.
    #[arg(long, default_value_t = 0.001)]
    pub alpha: f64,
    /// Number of test points, in file order.
    #[arg(long, default_value_t = 100)]
    pub points: usize,
    /// Noisy copies per forward pass.
    #[arg(long, default_value_t = 1000)]
    pub batch: u64,
    /// Radii of `cert_acc_at` (in the noise's norm), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0,0.25,0.5,0.75,1,1.5,2")]
    pub radii: Vec<f64>,
    /// Seed of the noise.
    #[arg(long, default_value_t = 0)]
    pub seed: i64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Use model_best.safetensors instead of model.safetensors.
    #[arg(long)]
    pub best: bool,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Torch threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl SmoothArgs {
    /// The settings, checked as `[eval.smoothing]` is (errors name the flag).
    fn params(&self) -> Result<SmoothParams> {
        let noise = Noise::parse(&self.noise).with_context(|| {
            format!(
                "--noise `{}`: expected one of {}",
                self.noise,
                Noise::ALL.map(Noise::name).join(", ")
            )
        })?;
        let cfg = SmoothingConfig {
            sigma: self.sigma.clone(),
            noise,
            n0: self.n0,
            n: self.n,
            alpha: self.alpha,
            batch: self.batch,
            points: self.points,
        };
        let mut problems = Vec::new();
        cfg.validate(&mut |field: &str, message: String| {
            let flag = field.trim_start_matches("eval.smoothing.");
            let flag = flag.split('[').next().unwrap_or(flag).replace('_', "-");
            problems.push(format!("--{flag}: {message}"));
        });
        if let Some(r) = self.radii.iter().find(|r| !(r.is_finite() && **r >= 0.0)) {
            problems.push(format!(
                "--radii: {r} is out of range: expected finite values >= 0"
            ));
        }
        if !problems.is_empty() {
            bail!("{}", problems.join("\n"));
        }
        Ok(SmoothParams::from_config(&cfg))
    }

    /// Certifies the first `--points` test points and prints the certificates (table or JSON).
    pub fn run(&self) -> Result<()> {
        super::set_threads(self.threads)?;
        let params = self.params()?;
        let trained = load_trained(&self.run_dir, &self.device, self.best)?;
        let (x, y) = trained.first_test_points(self.points);
        let labels = Vec::<i64>::try_from(&y).context("reading the test labels")?;
        tch::manual_seed(self.seed);
        let tty = std::io::stderr().is_terminal();
        let total = labels.len();
        let (certs, secs) = smoothing::certify_timed(&trained.net, &x, &params, &mut |i| {
            if tty {
                eprint!("\rcertifying {i}/{total} points");
                let _ = std::io::stderr().flush();
            }
            false
        })
        .context("certification stopped")?;
        if tty {
            eprint!("\r{}\r", " ".repeat(40));
        }
        eprintln!(
            "{:.4} s per certified point ({} noise draws each, device {})",
            secs,
            (params.n0 + params.n) * params.probes.len() as u64,
            crate::device::device_name(trained.device)
        );
        if self.json {
            println!("{}", self.to_json(&params, &certs, &labels));
        } else {
            self.print_table(&params, &certs, &labels);
        }
        Ok(())
    }

    /// `{"sigma","noise","n0","n","alpha","points":[{"index","label","prediction","radius"}],
    /// "cert_acc_at":{"<radius>": acc}}` (`sigma` a number for one level, else a list;
    /// prediction -1 = abstain).
    fn to_json(
        &self,
        params: &SmoothParams,
        certs: &[Certificate],
        labels: &[i64],
    ) -> serde_json::Value {
        let points: Vec<serde_json::Value> = certs
            .iter()
            .zip(labels)
            .enumerate()
            .map(|(i, (c, y))| {
                serde_json::json!({
                    "index": i, "label": y, "prediction": c.prediction, "radius": c.radius,
                })
            })
            .collect();
        let at: serde_json::Map<String, serde_json::Value> = self
            .radii
            .iter()
            .map(|&r| {
                let acc = smoothing::certified_accuracy(certs, labels, r);
                (format!("{r}"), serde_json::json!(acc))
            })
            .collect();
        let sigma = match self.sigma.as_slice() {
            [one] => serde_json::json!(one),
            many => serde_json::json!(many),
        };
        serde_json::json!({
            "sigma": sigma,
            "noise": params.probes[0].noise.name(),
            "n0": params.n0,
            "n": params.n,
            "alpha": params.alpha,
            "points": points,
            "cert_acc_at": at,
        })
    }

    fn print_table(&self, params: &SmoothParams, certs: &[Certificate], labels: &[i64]) {
        let abstain = certs
            .iter()
            .filter(|c| c.prediction == smoothing::ABSTAIN)
            .count();
        println!(
            "run {}: {} noise, sigma {:?}, n0 {}, n {}, alpha {}; {} points, {} abstain",
            self.run_dir.display(),
            params.probes[0].noise.name(),
            self.sigma,
            params.n0,
            params.n,
            params.alpha,
            certs.len(),
            abstain
        );
        println!(
            "{:>10} {:>14}",
            format!("{} radius", params.radius_norm().name()),
            "certified acc"
        );
        for &r in &self.radii {
            let acc = smoothing::certified_accuracy(certs, labels, r);
            println!("{r:>10} {acc:>14.4}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> SmoothArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            a: SmoothArgs,
        }
        let mut v = vec!["certlab", "run-folder", "--sigma", "0.25"];
        v.extend_from_slice(extra);
        Wrap::parse_from(v).a
    }

    #[test]
    fn bad_flags_are_named() {
        assert!(args(&[]).params().is_ok());
        for (extra, flag) in [
            (&["--noise", "cauchy"][..], "--noise"),
            (&["--alpha", "0.9"][..], "--alpha"),
            (&["--n", "0"][..], "--n"),
            (&["--sigma=-1"][..], "--sigma"),
            (&["--radii", "0.5,nan"][..], "--radii"),
        ] {
            let err = args(extra).params().unwrap_err().to_string();
            assert!(err.contains(flag), "{extra:?}: {err}");
        }
    }
}
