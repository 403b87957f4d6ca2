//! The memory a run will need, estimated from its config alone (nothing is allocated), and the
//! refusal of a run that cannot fit, naming the key that drives the estimate and a value that
//! fits. Rough by design: float32 tensors counted by shape, libtorch's own footprint fixed.
use crate::config::{
    Arch, BoundMethod, DatasetKind, Estimator, ExperimentConfig, FieldError, LipBound, Method,
    OptimizerKind,
};
use crate::model::{architecture, LayerSpec};

/// What the process holds before any tensor: libtorch's code and allocator (measured ~0.5 GB).
const BASE_BYTES: u64 = 512 << 20;
/// Examples per chunk of the evaluation's bound passes.
const EVAL_CHUNK: u64 = 256;
/// Floats one chunk of an evaluation bound pass may hold (as `bounds::memory::chunked`).
const BOUND_BUDGET_FLOATS: u64 = 1 << 26;

/// The bytes a run needs, by part (name, bytes); `total_bytes` is their sum.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryEstimate {
    pub total_bytes: u64,
    pub parts: Vec<(&'static str, u64)>,
}

impl MemoryEstimate {
    /// E.g. "about 1.2 GB".
    pub fn describe(&self) -> String {
        format!("about {}", human(self.total_bytes))
    }

    /// The largest part that the config can change (not libtorch's fixed footprint).
    fn largest(&self) -> (&'static str, u64) {
        let parts = self.parts.iter().filter(|(n, _)| *n != "libtorch");
        parts
            .copied()
            .max_by_key(|p| p.1)
            .unwrap_or(("libtorch", 0))
    }
}

/// Bytes as "1.2 GB" (decimal units).
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.0} MB", b / 1e6)
    } else {
        format!("{:.0} kB", b / 1e3)
    }
}

/// The shapes the network sees: input, split sizes (train, validation, test) and classes.
struct Sizes {
    input: Vec<i64>,
    classes: i64,
    /// Examples in the training file (what reading it holds, before any subset).
    full_train: u64,
    train: u64,
    val: u64,
    test: u64,
}

fn sizes(cfg: &ExperimentConfig) -> Sizes {
    let d = &cfg.dataset;
    let (input, classes, full_train, full_test) = match d.kind {
        k if k.is_toy() => (vec![2], 2, d.toy_points, d.toy_points),
        DatasetKind::Cifar10 => (vec![3, 32, 32], 10, 50_000, 10_000),
        _ => (vec![1, 28, 28], 10, 60_000, 10_000),
    };
    let pick = |n: usize, full: usize| if n == 0 { full } else { n.min(full) };
    let (train, test) = if d.kind.is_toy() {
        (full_train, full_test)
    } else {
        (pick(d.train_size, full_train), pick(d.test_size, full_test))
    };
    let val = d.val_len(train);
    // Image sets hold the validation split out of the training split; toy sets draw it.
    let train = if d.kind.is_toy() {
        train
    } else {
        train.saturating_sub(val)
    };
    Sizes {
        input,
        classes,
        full_train: full_train as u64,
        train: train as u64,
        val: val as u64,
        test: test as u64,
    }
}

fn numel(s: &[i64]) -> u64 {
    s.iter().product::<i64>().max(1) as u64
}

/// The output shape of each layer, from the specs alone (index 0: the input).
fn layer_shapes(specs: &[LayerSpec], input: &[i64]) -> Vec<Vec<i64>> {
    let mut shapes = vec![input.to_vec()];
    for spec in specs {
        let s = shapes.last().cloned().unwrap_or_default();
        let out = match spec {
            LayerSpec::Linear { out_features, .. }
            | LayerSpec::Circulant { out_features, .. }
            | LayerSpec::Aol { out_features, .. }
            | LayerSpec::Spectral { out_features, .. } => vec![*out_features],
            LayerSpec::Conv2d {
                out_channels,
                kernel,
                stride,
                padding,
                ..
            } => {
                let side = |n: i64| (n + 2 * padding - kernel) / stride + 1;
                let (h, w) = (
                    s.get(1).copied().unwrap_or(1),
                    s.get(2).copied().unwrap_or(1),
                );
                vec![*out_channels, side(h), side(w)]
            }
            LayerSpec::Flatten => vec![numel(&s) as i64],
            LayerSpec::PadChannels { to, .. } => {
                let mut o = s.clone();
                o[0] = *to;
                o
            }
            LayerSpec::Relu
            | LayerSpec::Normalize { .. }
            | LayerSpec::Sll { .. }
            | LayerSpec::Cpl { .. }
            | LayerSpec::SllConv { .. } => s,
        };
        shapes.push(out);
    }
    shapes
}

/// Trainable parameters of one layer, as `Layer::new` creates them.
fn spec_parameters(spec: &LayerSpec) -> u64 {
    let p = match spec {
        LayerSpec::Linear {
            in_features: i,
            out_features: o,
        }
        | LayerSpec::Aol {
            in_features: i,
            out_features: o,
        }
        | LayerSpec::Spectral {
            in_features: i,
            out_features: o,
        } => o * i + o,
        // Araujo et al. 2019: a diagonal and a circulant vector of n = max(in, out), a bias.
        LayerSpec::Circulant {
            in_features: i,
            out_features: o,
        } => 2 * i.max(o) + o,
        LayerSpec::Conv2d {
            in_channels: i,
            out_channels: o,
            kernel: k,
            ..
        } => o * i * k * k + o,
        LayerSpec::Sll { features, inner } => inner * features + 2 * inner,
        LayerSpec::Cpl { features, inner } => inner * features + inner,
        LayerSpec::SllConv {
            channels,
            inner,
            kernel,
        } => inner * channels * kernel * kernel + 2 * inner,
        _ => 0,
    };
    p.max(0) as u64
}

/// The network as the estimate sees it: its specs and the shapes they produce.
struct Shapes {
    specs: Vec<LayerSpec>,
    shapes: Vec<Vec<i64>>,
}

impl Shapes {
    fn of(cfg: &ExperimentConfig, s: &Sizes) -> Result<Shapes, String> {
        let stats = cfg.model.normalize.then(|| {
            let c = if s.input.len() == 3 { s.input[0] } else { 1 };
            (vec![0.0; c as usize], vec![1.0; c as usize])
        });
        let specs =
            architecture(&cfg.model, &s.input, s.classes, stats).map_err(|e| e.to_string())?;
        let shapes = layer_shapes(&specs, &s.input);
        Ok(Shapes { specs, shapes })
    }
    fn parameters(&self) -> u64 {
        self.specs.iter().map(spec_parameters).sum()
    }
    /// Sum of the layers' output sizes for one example.
    fn outputs(&self) -> u64 {
        self.shapes[1..].iter().map(|s| numel(s)).sum()
    }
    fn widest(&self) -> u64 {
        self.shapes.iter().map(|s| numel(s)).max().unwrap_or(1)
    }
    /// Floats per example of a bound pass with exact intermediate bounds, as
    /// `bounds::memory::floats_per_example` counts them: the largest ReLU's back-substitution.
    fn exact_floats(&self) -> u64 {
        let relus = (1..self.specs.len()).filter(|&i| matches!(self.specs[i], LayerSpec::Relu));
        let before = |i: usize| self.shapes[..i].iter().map(|s| numel(s)).max().unwrap_or(1);
        let per = relus.map(|i| 2 * numel(&self.shapes[i]) * before(i)).max();
        per.unwrap_or(1).max(self.widest())
    }
}

/// The data on the device: inputs as float32, labels as int64. Without a training subset the
/// training tensor is a view of the whole file, validation part included.
fn data_bytes(cfg: &ExperimentConfig, s: &Sizes) -> u64 {
    let train = if cfg.dataset.train_size == 0 && !cfg.dataset.kind.is_toy() {
        s.train + s.val
    } else {
        s.train
    };
    (train + s.val + s.test) * (4 * numel(&s.input) + 8)
}

/// What reading an image file holds for a moment beyond its tensors: the decoded bytes twice
/// (the file's and the tensor's, before the float conversion) and, with a training subset,
/// the whole file as floats until the subset is copied out.
fn loading_bytes(cfg: &ExperimentConfig, s: &Sizes) -> u64 {
    if cfg.dataset.kind.is_toy() {
        return 0;
    }
    let full = s.full_train * numel(&s.input);
    let subset_copy = if cfg.dataset.train_size == 0 {
        0
    } else {
        4 * full
    };
    2 * full + subset_copy
}

/// Weights, gradients and the optimizer's state (Adam: two moments; SGD with momentum: one).
fn parameter_bytes(cfg: &ExperimentConfig, net: &Shapes) -> u64 {
    let copies = match cfg.optimizer.kind {
        OptimizerKind::Adam => 4,
        OptimizerKind::Sgd if cfg.optimizer.momentum > 0.0 => 3,
        OptimizerKind::Sgd => 2,
    };
    copies * 4 * net.parameters()
}

/// The training batch (at most the training split).
fn batch(cfg: &ExperimentConfig, s: &Sizes) -> u64 {
    (cfg.train.batch_size as u64).min(s.train).max(1)
}

/// Forward values kept for the backward pass: about three tensors per layer output.
fn activation_bytes(cfg: &ExperimentConfig, s: &Sizes, net: &Shapes) -> u64 {
    3 * 4 * net.outputs() * batch(cfg, s)
}

/// The bound tensors of the training method, kept for its backward pass.
fn training_bound_bytes(cfg: &ExperimentConfig, s: &Sizes, net: &Shapes) -> u64 {
    let b = batch(cfg, s);
    let ibp = 2 * activation_bytes(cfg, s, net);
    // One more forward and backward per attack step, and a few input-sized copies.
    let pgd = activation_bytes(cfg, s, net) + 4 * 4 * numel(&s.input) * b;
    // The regularizers of Shi et al. run their own IBP pass under IBP / CROWN-IBP.
    let shi = if cfg.train.shi_reg_weight > 0.0 {
        ibp
    } else {
        0
    };
    match cfg.train.method {
        Method::Standard | Method::Lipschitz | Method::Gaussian => 0,
        Method::Pgd | Method::Rat => pgd,
        Method::Ibp => ibp + shi,
        // Coefficient matrices [batch, classes, neurons] per layer, lower and upper.
        Method::CrownIbp => ibp + shi + 2 * 4 * s.classes as u64 * net.outputs() * b,
        // The PGD point, then one IBP pass (the small box's or the ball's) kept for backward,
        // and the forward pass at the PGD point (SABR: the clean one).
        Method::Sabr | Method::MtlIbp | Method::CcIbp | Method::ExpIbp => {
            pgd + ibp + activation_bytes(cfg, s, net)
        }
        // As `bounds::training_bytes`: five tensors of the floats per example.
        Method::Fastlin if cfg.train.proj_dim == 0 => 5 * 4 * net.exact_floats() * b,
        Method::Fastlin => 5 * 4 * 16 * net.widest() * b,
    }
}

/// One chunk of the evaluation's largest bound method on `eval.robust_subset` points.
fn evaluation_bytes(cfg: &ExperimentConfig, s: &Sizes, net: &Shapes) -> u64 {
    let chunk = (cfg.eval.robust_subset as u64).clamp(1, EVAL_CHUNK);
    let per_example = |m: &BoundMethod| match m {
        BoundMethod::Ibp => 2 * net.outputs(),
        BoundMethod::CrownIbp => 2 * (s.classes as u64 + 1) * net.outputs(),
        BoundMethod::Fastlin | BoundMethod::Crown | BoundMethod::AlphaCrown => {
            2 * net.exact_floats()
        }
    };
    let per = cfg.eval.bounds.iter().map(per_example).max().unwrap_or(0);
    // Bound passes split a chunk further so that a slice holds at most the budget.
    4 * (per * chunk).min(BOUND_BUDGET_FLOATS.max(per))
}

/// Randomized smoothing: one batch of noisy copies of a point through the network (inputs,
/// noise and the layer outputs), without gradients.
fn smoothing_bytes(cfg: &ExperimentConfig, s: &Sizes, net: &Shapes) -> u64 {
    let sm = &cfg.eval.smoothing;
    if sm.is_off() {
        return 0;
    }
    4 * sm.batch * (2 * numel(&s.input) + net.outputs())
}

/// LipSDP and ADMM: a few dense float64 matrices of the hidden neurons' total, squared.
fn lipschitz_bytes(cfg: &ExperimentConfig) -> u64 {
    let sdp_in_training = cfg.train.method == Method::Lipschitz
        && matches!(cfg.train.lip_bound, LipBound::Lipsdp | LipBound::Admm);
    let sdp = sdp_in_training || cfg.eval.lipschitz.contains(&Estimator::Lipsdp);
    if !sdp || cfg.model.arch != Arch::Mlp {
        return 0;
    }
    let n: u64 = cfg.model.hidden.iter().map(|&h| h.max(0) as u64).sum();
    4 * 8 * n * n
}

/// The estimate of a run's peak memory, from its config alone.
pub fn estimate(cfg: &ExperimentConfig) -> Result<MemoryEstimate, String> {
    let s = sizes(cfg);
    let net = Shapes::of(cfg, &s)?;
    let parts = vec![
        ("libtorch", BASE_BYTES),
        ("data", data_bytes(cfg, &s)),
        ("loading", loading_bytes(cfg, &s)),
        ("parameters", parameter_bytes(cfg, &net)),
        ("activations", activation_bytes(cfg, &s, &net)),
        ("training bounds", training_bound_bytes(cfg, &s, &net)),
        ("evaluation", evaluation_bytes(cfg, &s, &net)),
        ("lipschitz", lipschitz_bytes(cfg)),
        ("smoothing", smoothing_bytes(cfg, &s, &net)),
    ];
    let total_bytes = parts.iter().map(|p| p.1).sum();
    Ok(MemoryEstimate { total_bytes, parts })
}

/// The config key that drives a part.
fn key_of(part: &str) -> &'static str {
    match part {
        "data" | "loading" => "dataset.train_size",
        "activations" | "training bounds" => "train.batch_size",
        "evaluation" => "eval.robust_subset",
        "smoothing" => "eval.smoothing.batch",
        _ => "model.hidden",
    }
}

/// Whether `cfg` fits in `available` bytes, keeping a tenth free (available memory moves).
fn fits(cfg: &ExperimentConfig, available: u64) -> bool {
    estimate(cfg).is_ok_and(|e| e.total_bytes <= available / 10 * 9)
}

/// The largest value in 1..=`high` for which `set` gives a config that fits.
fn largest_fitting(
    cfg: &ExperimentConfig,
    available: u64,
    high: usize,
    set: impl Fn(&mut ExperimentConfig, usize),
) -> Option<usize> {
    let try_ = |v: usize| {
        let mut c = cfg.clone();
        set(&mut c, v);
        fits(&c, available)
    };
    if !try_(1) {
        return None;
    }
    let (mut lo, mut hi) = (1, high.max(1));
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if try_(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Some(lo)
}

/// A value of `key` that fits, as text (`None` where none does).
fn suggestion(cfg: &ExperimentConfig, key: &str, available: u64) -> Option<String> {
    let s = sizes(cfg);
    match key {
        "train.batch_size" => largest_fitting(cfg, available, batch(cfg, &s) as usize, |c, v| {
            c.train.batch_size = v
        })
        .map(|v| v.to_string()),
        "dataset.train_size" if !cfg.dataset.kind.is_toy() => {
            largest_fitting(cfg, available, (s.train + s.val) as usize, |c, v| {
                c.dataset.train_size = v
            })
            .map(|v| v.to_string())
        }
        "eval.robust_subset" => largest_fitting(cfg, available, cfg.eval.robust_subset, |c, v| {
            c.eval.robust_subset = v
        })
        .map(|v| v.to_string()),
        "model.hidden" => {
            let mut c = cfg.clone();
            while !fits(&c, available) {
                let widest = c.model.hidden.iter_mut().max_by_key(|h| **h)?;
                if *widest <= 1 {
                    return None;
                }
                *widest /= 2;
            }
            Some(format!("{:?}", c.model.hidden))
        }
        _ => None,
    }
}

/// Refuses a config whose estimate exceeds `available` bytes, naming the key that drives it
/// and a value that fits; returns the estimate otherwise.
pub fn check(cfg: &ExperimentConfig, available: u64) -> Result<MemoryEstimate, FieldError> {
    let est = estimate(cfg).map_err(|message| FieldError {
        field: "model".into(),
        message,
    })?;
    if fits(cfg, available) {
        return Ok(est);
    }
    let (part, bytes) = est.largest();
    let key = key_of(part);
    let exact_fastlin = cfg.train.method == Method::Fastlin && cfg.train.proj_dim == 0;
    let message = if part == "training bounds" && exact_fastlin {
        let fit = suggestion(cfg, key, available).unwrap_or_else(|| "1".into());
        format!(
            "Fast-Lin with exact intermediate bounds on this {} needs about {} per step at \
             train.batch_size = {}, and {} is available: lower train.batch_size to {fit} or \
             less, or set train.proj_dim (random projections, e.g. 50)",
            cfg.model.arch.name(),
            human(bytes),
            cfg.train.batch_size,
            human(available)
        )
    } else {
        let fix = [key, "model.hidden"]
            .into_iter()
            .find_map(|k| suggestion(cfg, k, available).map(|v| format!("set {k} = {v} or less")));
        format!(
            "this run needs {} ({part}: {}, driven by {key}) and {} is available: {}",
            est.describe(),
            human(bytes),
            human(available),
            fix.unwrap_or_else(|| format!("lower {key}"))
        )
    };
    Err(FieldError {
        field: key.into(),
        message,
    })
}

/// `MemAvailable` of /proc/meminfo, in bytes (None where there is no such file).
pub fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The check against this machine's available memory (accepted where it is unknown).
pub fn check_here(cfg: &ExperimentConfig) -> Result<Option<(MemoryEstimate, u64)>, FieldError> {
    match available_memory() {
        Some(a) => check(cfg, a).map(|e| Some((e, a))),
        None => Ok(None),
    }
}

/// The check against the memory of the device the run will use: `MemAvailable` on the CPU, the
/// free memory `nvidia-smi` reports on a CUDA device (accepted where it cannot be read).
pub fn check_on(
    cfg: &ExperimentConfig,
    device: tch::Device,
) -> Result<Option<(MemoryEstimate, u64)>, FieldError> {
    match device {
        tch::Device::Cuda(i) => match available_gpu_memory(i) {
            Some(a) => check(cfg, a).map(|e| Some((e, a))).map_err(|mut e| {
                e.message = format!("on cuda:{i}: {}", e.message);
                e
            }),
            None => Ok(None),
        },
        _ => check_here(cfg),
    }
}

/// Free memory of CUDA device `ordinal` (as libtorch numbers it: the `CUDA_VISIBLE_DEVICES`
/// entry it maps to), from `nvidia-smi`, in bytes.
pub fn available_gpu_memory(ordinal: usize) -> Option<u64> {
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let id = gpu_query_id(visible.as_deref(), ordinal)?;
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=memory.free",
            "--format=csv,noheader,nounits",
            "-i",
            &id,
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    parse_free_mib(&String::from_utf8_lossy(&out.stdout))
}

/// The `nvidia-smi -i` argument of libtorch's device `ordinal`: its entry of
/// `CUDA_VISIBLE_DEVICES` (an index or a UUID) when that is set.
fn gpu_query_id(visible: Option<&str>, ordinal: usize) -> Option<String> {
    match visible.map(str::trim) {
        None | Some("") => Some(ordinal.to_string()),
        Some(list) => list.split(',').nth(ordinal).map(|s| s.trim().to_string()),
    }
}

/// `memory.free` in MiB, as `--format=csv,noheader,nounits` prints it, in bytes.
fn parse_free_mib(text: &str) -> Option<u64> {
    let mib: u64 = text.lines().next()?.trim().parse().ok()?;
    Some(mib * 1024 * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_free_memory_is_read_for_the_device_libtorch_means() {
        assert_eq!(parse_free_mib("80614\n"), Some(80614 * 1024 * 1024));
        assert_eq!(parse_free_mib("[N/A]\n"), None);
        assert_eq!(parse_free_mib(""), None);
        assert_eq!(gpu_query_id(None, 1).as_deref(), Some("1"));
        // libtorch's cuda:1 is the second visible device, whatever its physical index.
        assert_eq!(gpu_query_id(Some("3,5"), 1).as_deref(), Some("5"));
        assert_eq!(
            gpu_query_id(Some("GPU-8f2a, GPU-11c0"), 0).as_deref(),
            Some("GPU-8f2a")
        );
        assert_eq!(gpu_query_id(Some("3"), 1), None);
    }
    use crate::config::ExperimentConfig;
    use crate::model::Network;

    #[test]
    fn the_estimate_counts_what_a_small_mlp_holds() {
        let mut c = ExperimentConfig::default_experiment();
        c.dataset.kind = DatasetKind::Moons;
        c.dataset.toy_points = 1000;
        c.model.hidden = vec![30, 20];
        c.train.method = Method::Ibp;
        c.train.batch_size = 50;
        c.optimizer.kind = OptimizerKind::Adam;
        c.eval.bounds = vec![BoundMethod::Ibp];
        c.eval.robust_subset = 100;
        c.eval.lipschitz = vec![];
        let est = estimate(&c).unwrap();
        let part = |n: &str| est.parts.iter().find(|p| p.0 == n).unwrap().1;
        let net = Network::from_config(&c.model, &[2], 2, None, tch::Device::Cpu).unwrap();
        let params = net.num_parameters() as u64;
        assert_eq!(params, 2 * 30 + 30 + 30 * 20 + 20 + 20 * 2 + 2);
        assert_eq!(part("parameters"), 4 * 4 * params);
        // Outputs per example: 30 + 30 + 20 + 20 + 2; 1000 training, 200 validation, 1000 test.
        assert_eq!(part("activations"), 3 * 4 * 102 * 50);
        assert_eq!(part("training bounds"), 2 * part("activations"));
        assert_eq!(part("data"), 2200 * (4 * 2 + 8));
        assert_eq!(part("evaluation"), 4 * 2 * 102 * 100);
        assert_eq!(part("lipschitz"), 0);
        assert_eq!(est.total_bytes, est.parts.iter().map(|p| p.1).sum::<u64>());
        assert!(est.describe().starts_with("about "), "{}", est.describe());
        assert_eq!(human(1_234_000_000), "1.2 GB");
    }

    #[test]
    fn a_batch_too_big_is_refused_with_the_largest_batch_that_fits() {
        let mut c = ExperimentConfig::default_experiment();
        c.dataset.kind = DatasetKind::FashionMnist;
        c.model.hidden = vec![4096, 4096];
        c.train.method = Method::CrownIbp;
        c.train.batch_size = 8192;
        let e = check(&c, 4 << 30).unwrap_err();
        assert_eq!(e.field, "train.batch_size", "{}", e.message);
        let fit: usize = e
            .message
            .split("train.batch_size = ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        c.train.batch_size = fit;
        assert!(check(&c, 4 << 30).is_ok());
        c.train.batch_size = fit + 1;
        assert!(check(&c, 4 << 30).is_err());
    }
}
