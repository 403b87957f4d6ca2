//! `certlab bench --bounds`: samples/s of certified-training steps and of bounds alone, the
//! numbers `scripts/bench_autolirpa.py` times for auto_LiRPA on the same models and batches.
use super::bench::fashion_mlp_config;
use crate::bounds::{self, Ball, BoundMethod, Intermediate, Relaxation, Relaxed};
use crate::config::{Arch, Method, Norm};
use crate::train;
use anyhow::{Context, Result};
use std::time::Instant;
use tch::{Kind, Tensor};

/// What one row of the table times.
#[derive(Clone, Copy)]
enum Row {
    /// A training step on the margin lower bound (`None`: IBP): cross-entropy on `-m`,
    /// backward, Adam step.
    Bound(Option<Relaxed>),
    /// A training step of a method's own loss (`train::method_loss` at full eps).
    Loss(Method),
    /// The margin lower bound alone, without gradients (evaluation).
    Only(BoundMethod),
}

impl Row {
    /// Whether the row walks exact intermediate bounds (slow on the convnet: fewer steps).
    fn exact(self) -> bool {
        match self {
            Row::Bound(r) => matches!(r, Some(r) if r.inter == Intermediate::Exact),
            Row::Loss(_) => false,
            Row::Only(m) => m != BoundMethod::Ibp && m != BoundMethod::CrownIbp,
        }
    }
}

fn rows() -> Vec<(&'static str, Row)> {
    let projected = Relaxed {
        relax: Relaxation::Fastlin,
        inter: Intermediate::Projection { dim: 50 },
    };
    vec![
        ("ibp", Row::Bound(None)),
        ("crown-ibp", Row::Bound(BoundMethod::CrownIbp.relaxed())),
        ("fastlin", Row::Bound(BoundMethod::Fastlin.relaxed())),
        ("crown", Row::Bound(BoundMethod::Crown.relaxed())),
        ("fastlin-proj50", Row::Bound(Some(projected))),
        // Mueller et al. 2023 and De Palma et al. 2024, with their presets' knobs (PGD 8
        // steps of 0.25 eps inside).
        ("sabr", Row::Loss(Method::Sabr)),
        ("mtl-ibp", Row::Loss(Method::MtlIbp)),
        ("cc-ibp", Row::Loss(Method::CcIbp)),
        ("exp-ibp", Row::Loss(Method::ExpIbp)),
        // Bounds alone (evaluation, no training step): CROWN, and alpha-CROWN with the default
        // 20 iterations (auto_LiRPA's `CROWN-Optimized` with `iteration: 20`).
        ("crown-bound", Row::Only(BoundMethod::Crown)),
        ("alpha-crown-bound", Row::Only(BoundMethod::AlphaCrown)),
    ]
}

/// `certlab bench --bounds`: samples/s of certified-training steps (margin lower bound of the
/// method, cross-entropy on `-m`, backward, Adam step; or the method's own loss) on
/// Fashion-MNIST, batch 256 (or `batch`), l_inf eps 0.1, for the MLP 2x100 and the Small
/// convnet. The `*-bound` rows time the bound alone (evaluation: no backward, no step).
pub fn bench_bounds_cmd(
    device: &str,
    steps: u32,
    arch: &str,
    only: Option<&str>,
    batch: i64,
) -> Result<()> {
    anyhow::ensure!(batch > 0, "--batch {batch}: expected at least 1");
    let archs: Vec<Arch> = match arch {
        "all" => vec![Arch::Mlp, Arch::SmallConv],
        "mlp" => vec![Arch::Mlp],
        "small-conv" => vec![Arch::SmallConv],
        other => anyhow::bail!("--arch `{other}`: expected mlp, small-conv or all"),
    };
    let choice = crate::config::DeviceChoice::parse(device)
        .with_context(|| format!("--device `{device}` is not one of: auto, cpu, cuda"))?;
    let dev = crate::device::pick_device(choice)?;
    let all = rows();
    let rows = match only {
        None => all,
        Some(list) => {
            let wanted: Vec<&str> = list.split(',').map(str::trim).collect();
            if let Some(bad) = wanted.iter().find(|w| !all.iter().any(|(n, _)| n == *w)) {
                let names: Vec<&str> = all.iter().map(|(n, _)| *n).collect();
                anyhow::bail!(
                    "--methods: unknown method `{bad}`; expected some of {}",
                    names.join(", ")
                );
            }
            all.into_iter()
                .filter(|(n, _)| wanted.contains(n))
                .collect()
        }
    };
    println!(
        "certified-training steps, Fashion-MNIST, batch {batch}, l_inf eps 0.1, {} ({} threads)",
        crate::device::device_name(dev),
        tch::get_num_threads()
    );
    for arch in archs {
        for &(name, row) in &rows {
            let count = if arch == Arch::SmallConv && row.exact() {
                (steps / 10).max(2)
            } else {
                steps.max(1)
            } as i64;
            let (count, secs) = time_row(arch, row, dev, batch, count)?;
            println!(
                "certlab {:<10} {:<17} {:>9.0} samples/s ({count} steps in {secs:.2} s)",
                arch.name(),
                name,
                (count * batch) as f64 / secs
            );
        }
    }
    Ok(())
}

/// Steps done and seconds taken for at least `count` steps of `row` (and at least
/// [`MIN_SECONDS`]) after one untimed step. Every row starts from the same
/// fresh network (seeded), as the peer script does: the exact bounds get cheaper as training
/// stabilises neurons, so timing one method on a network the previous ones trained would
/// flatter it.
fn time_row(arch: Arch, row: Row, dev: tch::Device, batch: i64, count: i64) -> Result<(i64, f64)> {
    let ball = Ball {
        eps: 0.1,
        norm: Norm::Linf,
    };
    let mut cfg = fashion_mlp_config();
    cfg.model.arch = arch;
    if let Row::Loss(method) = row {
        cfg.train.method = method;
        cfg.train.eps = ball.eps;
        cfg.train.pgd_steps = 8;
        cfg.train.pgd_step_ratio = 0.25;
    }
    let sched = train::Schedule {
        eps: ball.eps,
        beta: 1.0,
        kappa: 0.0,
        reg_factor: 1.0,
    };
    let prep = train::prepare(&cfg, dev)?;
    let mut opt = train::optimizer(&prep.net, &cfg)?;
    let n = prep.data.train_len();
    anyhow::ensure!(
        batch < n,
        "--batch {batch}: the training set has only {n} examples"
    );
    let perm = Tensor::randperm(n, (Kind::Int64, dev));
    let mut step = |b: i64| {
        let idx = perm.narrow(0, (b * batch) % (n - batch), batch);
        let x = prep.data.train_x.index_select(0, &idx);
        let y = prep.data.train_y.index_select(0, &idx);
        let loss = match row {
            Row::Only(method) => {
                let m = tch::no_grad(|| bounds::margin_lower(&prep.net, &x, &y, ball, method));
                let _ = m.sum(Kind::Float).double_value(&[]);
                return;
            }
            Row::Bound(relaxed) => {
                let m = match relaxed {
                    None => bounds::margin_lower(&prep.net, &x, &y, ball, BoundMethod::Ibp),
                    Some(r) => bounds::margin_lower_relaxed(&prep.net, &x, &y, ball, r),
                };
                (-m).cross_entropy_loss::<Tensor>(&y, None, tch::Reduction::Mean, -100, 0.0)
            }
            Row::Loss(_) => train::method_loss(&prep.net, &x, &y, &cfg, &sched).total,
        };
        opt.zero_grad();
        loss.backward();
        let _ = loss.double_value(&[]);
        opt.step();
    };
    step(0);
    // At least `count` steps and at least a second: the fast rows take a few milliseconds
    // a step, and 30 of them are too short a time to measure on a shared machine.
    let t0 = Instant::now();
    let mut done = 0;
    while done < count || t0.elapsed().as_secs_f64() < MIN_SECONDS {
        done += 1;
        step(done);
    }
    Ok((done, t0.elapsed().as_secs_f64()))
}

/// The shortest time a row is measured over (the peer script uses the same).
const MIN_SECONDS: f64 = 1.0;
