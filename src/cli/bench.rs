//! `certlab bench`: training throughput of the real engine (samples/s), certified-training
//! steps per bound method, Lipschitz estimators, and UI frames.
use crate::config::{Arch, DatasetConfig, DatasetKind, ExperimentConfig, ModelConfig};
use crate::train;
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;
use tch::{Kind, Tensor};

// The flags of `certlab bench`.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct BenchArgs {
    /// The experiment to time (default: Fashion-MNIST MLP 2x100, batch 256).
    pub preset: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Timed epochs (after one warm-up pass of 20 batches).
    #[arg(long, default_value_t = 1)]
    pub epochs: u32,
    /// Time certified-training steps instead (IBP, CROWN-IBP, Fast-Lin, CROWN; MLP 2x100
    /// and Small convnet on Fashion-MNIST, batch 256, l_inf eps 0.1).
    #[arg(long)]
    pub bounds: bool,
    /// With --bounds: timed steps per method (the slow exact methods on the convnet take
    /// a tenth of them).
    #[arg(long, default_value_t = 30)]
    pub steps: u32,
    /// With --bounds: mlp, small-conv or all.
    #[arg(long, default_value = "all")]
    pub arch: String,
    /// With --bounds: the methods to time, comma-separated (default: all of ibp,
    /// crown-ibp, fastlin, crown, fastlin-proj50, the training methods sabr, mtl-ibp, cc-ibp,
    /// exp-ibp, and the bounds alone without a training step: crown-bound,
    /// alpha-crown-bound with 20 iterations).
    #[arg(long)]
    pub methods: Option<String>,
    /// With --bounds: examples per step.
    #[arg(long, default_value_t = 256)]
    pub batch: i64,
    /// Time UI frames instead: 5 overlaid runs of 500 epochs, every tab (no window, no GPU).
    #[arg(long)]
    pub ui: bool,
    /// With --ui: frames per tab.
    #[arg(long, default_value_t = 200)]
    pub frames: u32,
    /// With --ui: time the Inspector tab on this run folder instead, while it recomputes
    /// (the eps slider dragged for 30 frames in every 180).
    #[arg(long)]
    pub inspect: Option<PathBuf>,
    /// With --inspect: the test point.
    #[arg(long, default_value_t = 0)]
    pub index: usize,
    /// Time the Lipschitz estimators instead (power and Gram at fixed iterations, exact) on
    /// a 3x3 conv 64->64 on a 32x32 input and on a 1024x1024 dense matrix.
    #[arg(long)]
    pub lipschitz: bool,
}

impl BenchArgs {
    /// Runs the benchmark the flags pick: `--lipschitz`, `--ui`, `--bounds`, else training.
    pub fn run(&self) -> Result<()> {
        let d = &self.device;
        if self.lipschitz {
            bench_lipschitz_cmd(d)
        } else if let (true, Some(dir)) = (self.ui, &self.inspect) {
            crate::ui::bench_inspector::bench_inspector_cmd(dir, self.index, self.frames)
                .map_err(anyhow::Error::msg)
        } else if self.ui {
            crate::ui::bench::bench_ui_cmd(self.frames);
            Ok(())
        } else if self.bounds {
            let methods = self.methods.as_deref();
            super::bench_bounds::bench_bounds_cmd(d, self.steps, &self.arch, methods, self.batch)
        } else {
            bench_cmd(self.preset.clone(), d, self.epochs)
        }
    }
}

/// Fashion-MNIST, MLP 2x100, batch 256, standard training: the figure in the foundation issue.
pub fn fashion_mlp_config() -> ExperimentConfig {
    let mut cfg = ExperimentConfig::default_experiment();
    cfg.name = "bench-fmnist-mlp".into();
    cfg.dataset = DatasetConfig {
        kind: DatasetKind::FashionMnist,
        ..DatasetConfig::default()
    };
    cfg.model = ModelConfig {
        arch: Arch::Mlp,
        hidden: vec![100, 100],
        normalize: false,
    };
    cfg.train.batch_size = 256;
    cfg.optimizer.lr = 1e-3;
    cfg
}

/// Times `epochs` epochs of the configured method with the training loop's own step
/// (`train::method_loss`, backward, optimiser step, loss read back as the loop does).
pub fn bench_cmd(preset: Option<PathBuf>, device: &str, epochs: u32) -> Result<()> {
    let cfg = match preset {
        Some(p) => ExperimentConfig::load(&p)?,
        None => fashion_mlp_config(),
    };
    let choice = crate::config::DeviceChoice::parse(device)
        .with_context(|| format!("--device `{device}` is not one of: auto, cpu, cuda"))?;
    let dev = crate::device::pick_device(choice)?;
    let mut prep = train::prepare(&cfg, dev)?;
    let mut opt = train::optimizer(&prep.net, &cfg)?;
    let n = prep.data.train_len();
    let batch = cfg.train.batch_size as i64;
    let sched = train::schedule(
        &cfg,
        cfg.train.warmup_epochs as f64 + cfg.train.ramp_epochs as f64,
    );
    let mut run_batches = |count: i64| {
        let perm = Tensor::randperm(n, (Kind::Int64, dev));
        let mut samples = 0i64;
        for b in 0..count {
            let len = batch.min(n - b * batch);
            if len <= 0 {
                break;
            }
            let idx = perm.narrow(0, b * batch, len);
            let x = prep.data.train_x.index_select(0, &idx);
            let y = prep.data.train_y.index_select(0, &idx);
            let loss = train::method_loss(&prep.net, &x, &y, &cfg, &sched).total;
            opt.zero_grad();
            loss.backward();
            let _ = loss.double_value(&[]);
            opt.step();
            samples += len;
        }
        samples
    };
    run_batches(20);
    let steps = (n + batch - 1) / batch;
    let t0 = Instant::now();
    let mut samples = 0;
    for _ in 0..epochs.max(1) {
        samples += run_batches(steps);
    }
    let secs = t0.elapsed().as_secs_f64();
    let _ = &mut prep;
    println!(
        "{}: {} {} batch {} on {} ({} threads): {} samples in {:.3} s = {:.0} samples/s",
        cfg.name,
        cfg.train.method.name(),
        prep.net.describe(),
        batch,
        crate::device::device_name(dev),
        tch::get_num_threads(),
        samples,
        secs,
        samples as f64 / secs
    );
    Ok(())
}

/// `certlab bench --lipschitz`: time and relative error (against the exact value) of power
/// iteration and Gram iteration at fixed iteration counts, of the Toeplitz bound on 32..128
/// frequency grids (conv only), and of the exact computation, on a
/// 3x3 conv 64->64 (circular, on a 32x32 input: FFT blocks) and on a 1024x1024 dense matrix,
/// in float32 and float64. Times are the best of 3 runs after one warm-up.
pub fn bench_lipschitz_cmd(device: &str) -> Result<()> {
    use crate::lipschitz;
    let choice = crate::config::DeviceChoice::parse(device)
        .with_context(|| format!("--device `{device}` is not one of: auto, cpu, cuda"))?;
    let dev = crate::device::pick_device(choice)?;
    let sync = || {
        if let tch::Device::Cuda(i) = dev {
            tch::Cuda::synchronize(i as i64);
        }
    };
    let time = |f: &mut dyn FnMut() -> f64| -> (f64, f64) {
        let mut value = f();
        sync();
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let t0 = Instant::now();
            value = f();
            sync();
            best = best.min(t0.elapsed().as_secs_f64());
        }
        (value, best)
    };
    println!(
        "Lipschitz estimators on {} ({} threads); rel. error = (estimate - exact) / exact",
        crate::device::device_name(dev),
        tch::get_num_threads()
    );
    println!(
        "{:<28} {:<8} {:<20} {:>16} {:>12} {:>10}",
        "operator", "dtype", "method", "value", "rel. error", "seconds"
    );
    tch::manual_seed(0);
    let kernel64 = Tensor::randn([64, 64, 3, 3], (Kind::Double, dev)) / (64.0 * 9.0f64).sqrt();
    let dense64 = Tensor::randn([1024, 1024], (Kind::Double, dev)) / 32.0;
    // References in double precision.
    let conv_ref = lipschitz::exact_conv_circular(&kernel64, 32, 32);
    let dense_ref = lipschitz::exact_dense(&dense64);
    for kind in [Kind::Float, Kind::Double] {
        let dtype = if kind == Kind::Float {
            "float32"
        } else {
            "float64"
        };
        let kernel = kernel64.to_kind(kind);
        let dense = dense64.to_kind(kind);
        let row = |name: &str, exact: f64, method: &str, (v, secs): (f64, f64)| {
            println!(
                "{name:<28} {dtype:<8} {method:<20} {v:>16.8} {:>12.3e} {secs:>10.4}",
                (v - exact) / exact
            );
        };
        // Conv, circular on 32x32.
        let conv = "conv 3x3 64->64, 32x32";
        row(
            conv,
            conv_ref,
            "exact FFT+SVD",
            time(&mut || lipschitz::exact_conv_circular(&kernel, 32, 32)),
        );
        for iters in [10u32, 50, 100] {
            let op = |x: &Tensor| lipschitz::circular_conv(&kernel, x);
            let timed = time(&mut || {
                lipschitz::power_operator(&op, &[1, 64, 32, 32], (kind, dev), iters, 0.0).sigma
            });
            row(conv, conv_ref, &format!("power x{iters}"), timed);
        }
        for iters in [2u32, 4, 6, 8] {
            let timed = time(&mut || {
                tch::no_grad(|| lipschitz::gram_conv(&kernel, 32, 32, iters).double_value(&[]))
            });
            row(conv, conv_ref, &format!("gram x{iters}"), timed);
        }
        // The Toeplitz bound (Araujo et al. 2021): the supremum over all frequencies, valid for
        // every input size, so it is above the 32x32 circular norm by construction.
        for m in [32i64, 64, 128] {
            for (how, gram) in [("svd", None), ("gram x6", Some(6u32))] {
                let timed = time(&mut || {
                    lipschitz::toeplitz_conv(&kernel, m, gram).unwrap_or(f64::INFINITY)
                });
                row(conv, conv_ref, &format!("toeplitz {m} {how}"), timed);
            }
        }
        let mat = "dense 1024x1024";
        row(
            mat,
            dense_ref,
            "exact SVD",
            time(&mut || lipschitz::exact_dense(&dense)),
        );
        for iters in [10u32, 50, 100] {
            let timed = time(&mut || lipschitz::power_dense(&dense, iters, 0.0).sigma);
            row(mat, dense_ref, &format!("power x{iters}"), timed);
        }
        for iters in [2u32, 4, 6, 8] {
            let timed = time(&mut || {
                tch::no_grad(|| lipschitz::gram_bound(&dense, iters).double_value(&[]))
            });
            row(mat, dense_ref, &format!("gram x{iters}"), timed);
        }
    }
    Ok(())
}
