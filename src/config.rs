//! `ExperimentConfig`: everything that defines a run, loaded from and saved to TOML.
//!
//! Unknown keys and wrong types are rejected by serde (`deny_unknown_fields`) with the key
//! named; out-of-range values are found by [`ExperimentConfig::validate`], which returns every
//! problem with the dotted key it belongs to, so the GUI can mark the field.
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("invalid config {origin}:\n{}", list_problems(.problems))]
    Invalid {
        origin: String,
        problems: Vec<FieldError>,
    },
}

fn list_problems(problems: &[FieldError]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One invalid value: the dotted key (`train.eps`) and why it is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.field, self.message)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    #[default]
    Moons,
    Circles,
    Spirals,
    Xor,
    /// Fashion-MNIST IDX files (default folder: the Debian package's).
    FashionMnist,
    /// MNIST IDX files in `path`.
    Mnist,
    /// CIFAR-10 binary batches in `path`.
    Cifar10,
}

impl DatasetKind {
    pub const ALL: [DatasetKind; 7] = [
        DatasetKind::Moons,
        DatasetKind::Circles,
        DatasetKind::Spirals,
        DatasetKind::Xor,
        DatasetKind::FashionMnist,
        DatasetKind::Mnist,
        DatasetKind::Cifar10,
    ];
    pub fn is_toy(self) -> bool {
        matches!(
            self,
            DatasetKind::Moons | DatasetKind::Circles | DatasetKind::Spirals | DatasetKind::Xor
        )
    }
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Moons => "moons",
            DatasetKind::Circles => "circles",
            DatasetKind::Spirals => "spirals",
            DatasetKind::Xor => "xor",
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Mnist => "mnist",
            DatasetKind::Cifar10 => "cifar10",
        }
    }
}

pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatasetConfig {
    pub kind: DatasetKind,
    /// Folder with the files (IDX or CIFAR); empty means the default for the kind.
    pub path: String,
    /// Number of training examples used (0 = all).
    pub train_size: usize,
    /// Number of test examples used (0 = all).
    pub test_size: usize,
    /// Toy sets: points generated per split.
    pub toy_points: usize,
    /// Toy sets: standard deviation of the Gaussian noise, in the unit box.
    pub toy_noise: f64,
}

impl Default for DatasetConfig {
    fn default() -> Self {
        Self {
            kind: DatasetKind::Moons,
            path: String::new(),
            train_size: 0,
            test_size: 0,
            toy_points: 1000,
            toy_noise: 0.05,
        }
    }
}

impl DatasetConfig {
    /// The folder to read files from: `path`, or the default for the kind.
    pub fn folder(&self) -> PathBuf {
        if self.path.is_empty() && self.kind == DatasetKind::FashionMnist {
            PathBuf::from(FASHION_MNIST_DIR)
        } else {
            PathBuf::from(&self.path)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// Fully connected ReLU network with `hidden` widths.
    #[default]
    Mlp,
    /// Wong et al. 2018 Small: conv16 4x4 s2 p1, conv32 4x4 s2 p1, fc100, fc classes.
    SmallConv,
    /// Wong et al. 2018 Large: conv32 3x3, conv32 4x4 s2, conv64 3x3, conv64 4x4 s2, fc512, fc512.
    LargeConv,
    /// 1-Lipschitz by construction (seed 002): SDP-based Lipschitz layers (SLL), one block per
    /// `hidden` entry (width `hidden[0]`), then a norm-bounded last layer.
    Sll,
    /// 1-Lipschitz convex potential layers (CPL), same layout as `sll`.
    Cpl,
    /// 1-Lipschitz almost-orthogonal layers (AOL rescaling), `hidden` widths like the MLP.
    Aol,
    /// MLP whose every linear layer is divided by a guaranteed bound on its spectral norm.
    Spectral,
    /// 1-Lipschitz convnet: the image's channels zero-padded to `hidden[0]`, one 3x3 conv SLL
    /// block per `hidden` entry (inner channels that entry), a spectral-normalised last layer.
    SllConv,
}

impl Arch {
    pub const ALL: [Arch; 8] = [
        Arch::Mlp,
        Arch::SmallConv,
        Arch::LargeConv,
        Arch::Sll,
        Arch::Cpl,
        Arch::Aol,
        Arch::Spectral,
        Arch::SllConv,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Arch::Mlp => "mlp",
            Arch::SmallConv => "small-conv",
            Arch::LargeConv => "large-conv",
            Arch::Sll => "sll",
            Arch::Cpl => "cpl",
            Arch::Aol => "aol",
            Arch::Spectral => "spectral",
            Arch::SllConv => "sll-conv",
        }
    }
    /// Whether the architecture is 1-Lipschitz by construction (l_2 certificates from margins).
    pub fn is_one_lipschitz(self) -> bool {
        matches!(
            self,
            Arch::Sll | Arch::Cpl | Arch::Aol | Arch::Spectral | Arch::SllConv
        )
    }
    /// Whether it takes image inputs only.
    pub fn is_conv(self) -> bool {
        matches!(self, Arch::SmallConv | Arch::LargeConv | Arch::SllConv)
    }
    /// Whether `model.hidden` shapes it (the Wong et al. convnets have a fixed layout).
    pub fn uses_hidden(self) -> bool {
        !matches!(self, Arch::SmallConv | Arch::LargeConv)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub arch: Arch,
    /// Hidden widths of the MLP (ignored by the convnets).
    pub hidden: Vec<i64>,
    /// Put a `Normalize` layer (dataset mean/std) first, so inputs stay in [0, 1].
    pub normalize: bool,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            arch: Arch::Mlp,
            hidden: vec![64, 64],
            normalize: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Cross-entropy on clean inputs.
    #[default]
    Standard,
    /// PGD adversarial training (Madry et al.).
    Pgd,
    /// Interval bound propagation (Gowal et al.).
    Ibp,
    /// CROWN-IBP (Zhang et al. 2020).
    CrownIbp,
    /// Convex outer polytope / Fast-Lin with exact intermediate bounds (Wong & Kolter), or
    /// with Cauchy random projections of dimension `train.proj_dim` when that is > 0.
    Fastlin,
    /// Cross-entropy plus `lip_weight` times a differentiable Lipschitz bound (seed 000); with
    /// `lip_target` > 0 the bound is also enforced after every step.
    Lipschitz,
}

impl Method {
    pub const ALL: [Method; 6] = [
        Method::Standard,
        Method::Pgd,
        Method::Ibp,
        Method::CrownIbp,
        Method::Fastlin,
        Method::Lipschitz,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Method::Standard => "standard",
            Method::Pgd => "pgd",
            Method::Ibp => "ibp",
            Method::CrownIbp => "crown-ibp",
            Method::Fastlin => "fastlin",
            Method::Lipschitz => "lipschitz",
        }
    }
    /// Whether the method's loss uses the perturbation radius.
    pub fn uses_eps(self) -> bool {
        !matches!(self, Method::Standard | Method::Lipschitz)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Norm {
    #[default]
    Linf,
    L2,
}

impl Norm {
    pub fn name(self) -> &'static str {
        match self {
            Norm::Linf => "linf",
            Norm::L2 => "l2",
        }
    }
    pub fn parse(s: &str) -> Option<Norm> {
        match s {
            "linf" | "l_inf" | "inf" => Some(Norm::Linf),
            "l2" | "l_2" | "2" => Some(Norm::L2),
            _ => None,
        }
    }
}

/// The differentiable Lipschitz bound of `method = "lipschitz"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LipBound {
    /// Product of per-layer Gram-iteration bounds (seed 002).
    #[default]
    Gram,
    /// LipSDP-Neuron with a feasible multiplier improved by first-order steps (seed 000).
    Lipsdp,
    /// Seed 000's ADMM: SGD on the loss plus the augmented-Lagrangian coupling to projected
    /// weights, and once per epoch the SDP step (clarabel) that projects them onto the LipSDP
    /// set (`lip_target` > 0: bound fixed to it, the evaluated and saved network is the
    /// projected one; else `lip_weight L^2` penalised). Small MLPs on 2-D data only.
    Admm,
}

impl LipBound {
    pub const ALL: [LipBound; 3] = [LipBound::Gram, LipBound::Lipsdp, LipBound::Admm];
    pub fn name(self) -> &'static str {
        match self {
            LipBound::Gram => "gram",
            LipBound::Lipsdp => "lipsdp",
            LipBound::Admm => "admm",
        }
    }
}

/// A Lipschitz estimator reported per evaluation (`eval.lipschitz`) and by `certlab lipschitz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Estimator {
    /// Power iteration per layer: a lower bound on each spectral norm.
    Power,
    /// Gram iteration per layer (Delattre et al. 2023): a guaranteed upper bound.
    Gram,
    /// Exact spectral norm per layer (SVD; FFT blocks for circular convs).
    Exact,
    /// Product of the per-layer Gram bounds.
    Product,
    /// LipSDP-Neuron (Fazlyab et al. 2019; Pauli et al. 2021) for MLPs.
    Lipsdp,
    /// The largest local Jacobian norm found near data points: a lower bound.
    Empirical,
}

impl Estimator {
    pub const ALL: [Estimator; 6] = [
        Estimator::Power,
        Estimator::Gram,
        Estimator::Exact,
        Estimator::Product,
        Estimator::Lipsdp,
        Estimator::Empirical,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Estimator::Power => "power",
            Estimator::Gram => "gram",
            Estimator::Exact => "exact",
            Estimator::Product => "product",
            Estimator::Lipsdp => "lipsdp",
            Estimator::Empirical => "empirical",
        }
    }
    pub fn parse(s: &str) -> Option<Estimator> {
        Self::ALL.into_iter().find(|e| e.name() == s)
    }
    /// Parses a list of names (blank entries skipped, repeats dropped); an unknown name is an
    /// error naming it and the allowed ones.
    pub fn parse_list(names: &[String]) -> Result<Vec<Estimator>, String> {
        parse_names(
            names,
            Self::parse,
            &Self::ALL.map(Self::name),
            "Lipschitz estimator",
        )
    }
    /// Whether the estimator has a per-layer value.
    pub fn per_layer(self) -> bool {
        matches!(self, Estimator::Power | Estimator::Gram | Estimator::Exact)
    }
}

/// Parses user-typed names of a closed list; an unknown one is an error listing `allowed`.
pub fn parse_names<T: PartialEq>(
    names: &[String],
    parse: impl Fn(&str) -> Option<T>,
    allowed: &[&str],
    what: &str,
) -> Result<Vec<T>, String> {
    let mut out = Vec::new();
    for n in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let v = parse(n).ok_or_else(|| {
            format!(
                "unknown {what} `{n}`: expected one of {}",
                allowed.join(", ")
            )
        })?;
        if !out.contains(&v) {
            out.push(v);
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Ramp {
    #[default]
    Linear,
    /// t^4 for the first 25% of the ramp, then linear (CROWN-IBP's "smoothed").
    Smoothed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub method: Method,
    pub epochs: u32,
    pub batch_size: usize,
    /// Training perturbation radius (reached at the end of the ramp).
    pub eps: f64,
    pub norm: Norm,
    /// Epochs trained at eps = 0 before the ramp starts.
    pub warmup_epochs: u32,
    /// Epochs over which eps grows from 0 to `eps` (per batch).
    pub ramp_epochs: u32,
    pub ramp: Ramp,
    /// CROWN-IBP: final weight of the CROWN-IBP bound in the mix (1 at the start of the ramp).
    pub final_beta: f64,
    /// CROWN-IBP / IBP: final weight of the clean loss (1 at the start of the ramp).
    pub final_kappa: f64,
    /// Weight of the tightness regularizer r1 (seed 001); 0 turns it off.
    pub r1_weight: f64,
    /// Weight of the tightness regularizer r2 (seed 001); 0 turns it off.
    pub r2_weight: f64,
    /// Epochs over which the regularizer weights grow from 0.
    pub reg_warmup_epochs: u32,
    /// PGD training: steps and step size (relative to eps).
    pub pgd_steps: u32,
    pub pgd_step_ratio: f64,
    /// Fast-Lin: dimension of the Cauchy random projections for intermediate bounds (0 = exact).
    pub proj_dim: usize,
    /// Lipschitz method: weight of the bound in the loss.
    pub lip_weight: f64,
    /// Lipschitz method: keep the bound <= this after every step (0 = not enforced).
    pub lip_target: f64,
    /// Lipschitz method: which differentiable bound.
    pub lip_bound: LipBound,
    /// `lip_bound = "admm"`: the augmented-Lagrangian penalty (ADMM's rho).
    pub admm_penalty: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            method: Method::Standard,
            epochs: 10,
            batch_size: 64,
            eps: 0.0,
            norm: Norm::Linf,
            warmup_epochs: 0,
            ramp_epochs: 0,
            ramp: Ramp::Linear,
            final_beta: 0.0,
            final_kappa: 0.5,
            r1_weight: 0.0,
            r2_weight: 0.0,
            reg_warmup_epochs: 0,
            pgd_steps: 7,
            pgd_step_ratio: 0.25,
            proj_dim: 0,
            lip_weight: 0.0,
            lip_target: 0.0,
            lip_bound: LipBound::Gram,
            admm_penalty: 1.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    #[default]
    Adam,
    Sgd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    #[default]
    Constant,
    /// Multiply by `gamma` every `step_epochs` epochs.
    Step,
    /// Cosine decay to 0 over the run.
    Cosine,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub schedule: LrSchedule,
    pub step_epochs: u32,
    pub gamma: f64,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            kind: OptimizerKind::Adam,
            lr: 1e-3,
            momentum: 0.9,
            weight_decay: 0.0,
            schedule: LrSchedule::Constant,
            step_epochs: 10,
            gamma: 0.5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceChoice {
    #[default]
    Auto,
    Cpu,
    Cuda,
}

impl DeviceChoice {
    pub fn parse(s: &str) -> Option<DeviceChoice> {
        match s {
            "auto" => Some(DeviceChoice::Auto),
            "cpu" => Some(DeviceChoice::Cpu),
            "cuda" | "gpu" => Some(DeviceChoice::Cuda),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Evaluation radii; robust and certified accuracy are reported at each.
    pub eps: Vec<f64>,
    pub norm: Norm,
    /// Bound methods for certified accuracy: ibp, crown-ibp, fastlin, crown.
    pub bounds: Vec<BoundMethod>,
    /// PGD evaluation (0 steps turns it off).
    pub pgd_steps: u32,
    pub pgd_restarts: u32,
    /// Size of the fixed test subset used for the robust evaluation (0 = whole test set).
    pub robust_subset: usize,
    /// Evaluate every this many epochs (the last epoch is always evaluated).
    pub every_epochs: u32,
    /// Lipschitz estimators reported per evaluation: power, gram, exact, product, lipsdp, empirical.
    pub lipschitz: Vec<Estimator>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            eps: vec![],
            norm: Norm::Linf,
            bounds: vec![],
            pgd_steps: 0,
            pgd_restarts: 1,
            robust_subset: 500,
            every_epochs: 1,
            lipschitz: vec![],
        }
    }
}

/// A bound on the margins over the perturbation set (`eval.bounds`, `certlab bounds --method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BoundMethod {
    /// Interval bound propagation through every layer (Gowal et al. 2018).
    Ibp,
    /// IBP intermediate bounds, CROWN relaxation for the output (Zhang et al. 2020).
    CrownIbp,
    /// Fast-Lin relaxation (lower line slope `u / (u - l)`) with exact intermediate bounds; the
    /// convex outer polytope of Wong & Kolter (2018) gives the same bound.
    Fastlin,
    /// CROWN relaxation (adaptive lower line) with exact intermediate bounds.
    Crown,
}

impl BoundMethod {
    pub const ALL: [BoundMethod; 4] = [
        BoundMethod::Ibp,
        BoundMethod::CrownIbp,
        BoundMethod::Fastlin,
        BoundMethod::Crown,
    ];
    pub fn name(self) -> &'static str {
        match self {
            BoundMethod::Ibp => "ibp",
            BoundMethod::CrownIbp => "crown-ibp",
            BoundMethod::Fastlin => "fastlin",
            BoundMethod::Crown => "crown",
        }
    }
    pub fn parse(s: &str) -> Option<BoundMethod> {
        Self::ALL.into_iter().find(|m| m.name() == s)
    }
}

/// The largest LMI (inputs + hidden neurons + outputs) of the ADMM projection: clarabel's PSD
/// cone is dense in the packed triangle, so its cost grows with the sixth power of this.
pub const ADMM_MAX_DIM: i64 = 64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExperimentConfig {
    /// Short name; becomes the prefix of the run folder.
    pub name: String,
    pub seed: u64,
    pub device: DeviceChoice,
    pub dataset: DatasetConfig,
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub optimizer: OptimizerConfig,
    pub eval: EvalConfig,
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        Self::default_experiment()
    }
}

impl ExperimentConfig {
    /// The built-in default: two moons, a small MLP, trains in seconds on CPU.
    pub fn default_experiment() -> Self {
        Self {
            name: "moons-mlp".into(),
            seed: 0,
            device: DeviceChoice::Auto,
            dataset: DatasetConfig::default(),
            model: ModelConfig::default(),
            train: TrainConfig {
                epochs: 30,
                ..TrainConfig::default()
            },
            optimizer: OptimizerConfig {
                lr: 1e-2,
                ..OptimizerConfig::default()
            },
            eval: EvalConfig {
                eps: vec![0.03],
                bounds: vec![BoundMethod::Ibp, BoundMethod::Crown],
                pgd_steps: 10,
                robust_subset: 400,
                ..EvalConfig::default()
            },
        }
    }

    /// Parses TOML; `origin` names the source (a file path) in messages.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let cfg: ExperimentConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let problems = cfg.validate();
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid {
                origin: origin.to_string(),
                problems,
            })
        }
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    pub fn to_toml_string(&self) -> String {
        // Serialising plain data with no maps keyed by non-strings cannot fail.
        toml::to_string_pretty(self).unwrap_or_default()
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.to_toml_string())
    }

    /// Every out-of-range value, with its dotted key and the allowed range.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let mut bad = |field: &str, message: String| {
            errs.push(FieldError {
                field: field.to_string(),
                message,
            })
        };
        if self.name.trim().is_empty() {
            bad("name", "must not be empty".into());
        } else if self
            .name
            .chars()
            .any(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
        {
            bad(
                "name",
                format!(
                    "`{}` may only use letters, digits, `-`, `_` and `.` (it names the run folder)",
                    self.name
                ),
            );
        }
        let d = &self.dataset;
        if d.kind.is_toy() {
            if !(10..=1_000_000).contains(&d.toy_points) {
                bad(
                    "dataset.toy_points",
                    format!("{} is out of range: expected 10..=1000000", d.toy_points),
                );
            }
            if !(0.0..=1.0).contains(&d.toy_noise) {
                bad(
                    "dataset.toy_noise",
                    format!("{} is out of range: expected 0 <= noise <= 1", d.toy_noise),
                );
            }
            if self.model.arch.is_conv() {
                bad(
                    "model.arch",
                    format!(
                        "`{}` needs image inputs; toy dataset `{}` is 2-D: use `mlp`",
                        self.model.arch.name(),
                        d.kind.name()
                    ),
                );
            }
        } else if matches!(d.kind, DatasetKind::Mnist | DatasetKind::Cifar10) && d.path.is_empty() {
            bad(
                "dataset.path",
                format!("dataset `{}` needs the folder of its files", d.kind.name()),
            );
        }
        if self.model.arch.is_one_lipschitz() && self.model.hidden.is_empty() {
            bad(
                "model.hidden",
                format!(
                    "`{}` needs at least one hidden layer",
                    self.model.arch.name()
                ),
            );
        }
        if self.model.arch == Arch::SllConv
            && self.model.hidden.iter().any(|&w| !(1..=256).contains(&w))
        {
            bad(
                "model.hidden",
                format!(
                    "{:?}: `sll-conv` widths are channels at full resolution, each must be in 1..=256",
                    self.model.hidden
                ),
            );
        }
        if self.model.arch.uses_hidden() {
            if self.model.hidden.iter().any(|&w| !(1..=65536).contains(&w)) {
                bad(
                    "model.hidden",
                    format!("{:?}: every width must be in 1..=65536", self.model.hidden),
                );
            }
            if self.model.hidden.len() > 16 {
                bad("model.hidden", "at most 16 hidden layers".into());
            }
        }
        let t = &self.train;
        if !(1..=100_000).contains(&t.epochs) {
            bad(
                "train.epochs",
                format!("{} is out of range: expected 1..=100000", t.epochs),
            );
        }
        if !(1..=65536).contains(&t.batch_size) {
            bad(
                "train.batch_size",
                format!("{} is out of range: expected 1..=65536", t.batch_size),
            );
        }
        check_eps(&mut bad, "train.eps", t.eps);
        if t.method.uses_eps() && t.eps == 0.0 {
            bad(
                "train.eps",
                format!(
                    "method `{}` trains against a perturbation: eps must be > 0",
                    t.method.name()
                ),
            );
        }
        for (field, v) in [
            ("train.final_beta", t.final_beta),
            ("train.final_kappa", t.final_kappa),
        ] {
            if !(0.0..=1.0).contains(&v) {
                bad(
                    field,
                    format!("{v} is out of range: expected 0 <= value <= 1"),
                );
            }
        }
        for (field, v) in [
            ("train.r1_weight", t.r1_weight),
            ("train.r2_weight", t.r2_weight),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                bad(
                    field,
                    format!("{v} is out of range: expected a finite value >= 0"),
                );
            }
        }
        if (t.r1_weight > 0.0 || t.r2_weight > 0.0)
            && !matches!(t.method, Method::CrownIbp | Method::Fastlin)
        {
            bad(
                "train.method",
                format!(
                    "the tightness regularizers r1/r2 need a linear relaxation: use `crown-ibp` or `fastlin`, not `{}`",
                    t.method.name()
                ),
            );
        }
        if t.proj_dim > 100_000 {
            bad(
                "train.proj_dim",
                format!(
                    "{} is out of range: expected 0 (exact) ..= 100000",
                    t.proj_dim
                ),
            );
        }
        if t.proj_dim > 0 && t.method != Method::Fastlin {
            bad(
                "train.proj_dim",
                format!(
                    "random projections are for `fastlin` training, not `{}`: set 0",
                    t.method.name()
                ),
            );
        }
        if !(t.lip_weight.is_finite() && t.lip_weight >= 0.0) {
            bad(
                "train.lip_weight",
                format!(
                    "{} is out of range: expected a finite value >= 0",
                    t.lip_weight
                ),
            );
        }
        if !(t.lip_target.is_finite() && t.lip_target >= 0.0) {
            bad(
                "train.lip_target",
                format!(
                    "{} is out of range: expected 0 (off) or a bound > 0",
                    t.lip_target
                ),
            );
        }
        if t.method == Method::Lipschitz && t.lip_weight == 0.0 && t.lip_target == 0.0 {
            bad(
                "train.lip_weight",
                "method `lipschitz` needs lip_weight > 0 or lip_target > 0".into(),
            );
        }
        if t.method == Method::Lipschitz && t.lip_bound == LipBound::Admm {
            if !(t.admm_penalty.is_finite() && t.admm_penalty > 0.0) {
                bad(
                    "train.admm_penalty",
                    format!("{} is out of range: expected a value > 0", t.admm_penalty),
                );
            }
            let m = &self.model;
            let dim = 2 + m.hidden.iter().sum::<i64>() + 3;
            if m.arch != Arch::Mlp || m.normalize || m.hidden.is_empty() {
                bad(
                    "train.lip_bound",
                    "`admm` trains a plain MLP: model.arch = \"mlp\" with hidden layers and model.normalize = false".into(),
                );
            } else if !self.dataset.kind.is_toy() || dim > ADMM_MAX_DIM {
                bad(
                    "train.lip_bound",
                    format!(
                        "`admm` solves an SDP over every weight once per epoch: only small MLPs on the 2-D datasets (inputs + hidden + classes <= {}); use `lipsdp` or `gram`",
                        ADMM_MAX_DIM
                    ),
                );
            }
        }
        if t.method == Method::Pgd && !(1..=1000).contains(&t.pgd_steps) {
            bad(
                "train.pgd_steps",
                format!("{} is out of range: expected 1..=1000", t.pgd_steps),
            );
        }
        if !(t.pgd_step_ratio > 0.0 && t.pgd_step_ratio <= 2.0) {
            bad(
                "train.pgd_step_ratio",
                format!(
                    "{} is out of range: expected 0 < ratio <= 2",
                    t.pgd_step_ratio
                ),
            );
        }
        let o = &self.optimizer;
        if !(o.lr > 0.0 && o.lr <= 10.0) {
            bad(
                "optimizer.lr",
                format!("{} is out of range: expected 0 < lr <= 10", o.lr),
            );
        }
        if !(0.0..1.0).contains(&o.momentum) {
            bad(
                "optimizer.momentum",
                format!("{} is out of range: expected 0 <= momentum < 1", o.momentum),
            );
        }
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
            bad(
                "optimizer.weight_decay",
                format!("{} is out of range: expected >= 0", o.weight_decay),
            );
        }
        if o.schedule == LrSchedule::Step {
            if o.step_epochs == 0 {
                bad("optimizer.step_epochs", "must be >= 1".into());
            }
            if !(o.gamma > 0.0 && o.gamma <= 1.0) {
                bad(
                    "optimizer.gamma",
                    format!("{} is out of range: expected 0 < gamma <= 1", o.gamma),
                );
            }
        }
        let e = &self.eval;
        for (i, &eps) in e.eps.iter().enumerate() {
            check_eps(&mut bad, &format!("eval.eps[{i}]"), eps);
        }
        if (!e.bounds.is_empty() || e.pgd_steps > 0) && e.eps.is_empty() {
            bad(
                "eval.eps",
                "robust evaluation (bounds or PGD) needs at least one eval eps".into(),
            );
        }
        if e.pgd_steps > 10_000 {
            bad(
                "eval.pgd_steps",
                format!("{} is out of range: expected 0..=10000", e.pgd_steps),
            );
        }
        if !(1..=100).contains(&e.pgd_restarts) {
            bad(
                "eval.pgd_restarts",
                format!("{} is out of range: expected 1..=100", e.pgd_restarts),
            );
        }
        if e.every_epochs == 0 {
            bad("eval.every_epochs", "must be >= 1".into());
        }
        let arch = self.model.arch;
        if arch.is_one_lipschitz() {
            if !e.bounds.is_empty() {
                bad(
                    "eval.bounds",
                    format!(
                        "IBP/CROWN bounds do not support the 1-Lipschitz layers of `{}`: leave eval.bounds empty (such networks get the l_2 Lipschitz certificate, cert_acc key `lipschitz`)",
                        arch.name()
                    ),
                );
            }
            if matches!(t.method, Method::Ibp | Method::CrownIbp | Method::Fastlin) {
                bad(
                    "train.method",
                    format!(
                        "`{}` needs IBP/CROWN bounds, which do not support the 1-Lipschitz layers of `{}`: use `standard`, `pgd` or `lipschitz`",
                        t.method.name(),
                        arch.name()
                    ),
                );
            }
        }
        // LipSDP-Neuron is for MLPs (dense layers and ReLUs; AOL/spectral layers are dense).
        let mlp_like = matches!(arch, Arch::Mlp | Arch::Aol | Arch::Spectral);
        if !mlp_like && e.lipschitz.contains(&Estimator::Lipsdp) {
            bad(
                "eval.lipschitz",
                format!(
                    "`lipsdp` is for MLPs (mlp, aol, spectral), not `{}`",
                    arch.name()
                ),
            );
        }
        if !mlp_like && t.method == Method::Lipschitz && t.lip_bound == LipBound::Lipsdp {
            bad(
                "train.lip_bound",
                format!(
                    "`lipsdp` is for MLPs (mlp, aol, spectral), not `{}`: use `gram`",
                    arch.name()
                ),
            );
        }
        errs
    }
}

fn check_eps(bad: &mut impl FnMut(&str, String), field: &str, eps: f64) {
    if !eps.is_finite() || eps < 0.0 {
        bad(
            field,
            format!("{eps} is out of range: eps must be finite and >= 0"),
        );
    } else if eps > 10.0 {
        bad(
            field,
            format!("{eps} is out of range: inputs live in [0, 1], expected eps <= 10"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_round_trips_through_toml() {
        let cfg = ExperimentConfig::default_experiment();
        let text = cfg.to_toml_string();
        let back = ExperimentConfig::from_toml_str(&text, "test").expect("valid");
        assert_eq!(cfg, back);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = ExperimentConfig::from_toml_str("[train]\nepochz = 3\n", "x.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("epochz"), "{msg}");
        assert!(msg.contains("epochs"), "allowed keys listed: {msg}");
        assert!(msg.contains("x.toml"), "{msg}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err =
            ExperimentConfig::from_toml_str("[train]\nepochs = \"ten\"\n", "x.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("epochs"), "{msg}");
        assert!(msg.contains("integer") || msg.contains("u32"), "{msg}");
    }

    #[test]
    fn unknown_enum_value_lists_allowed() {
        let err = ExperimentConfig::from_toml_str("[train]\nmethod = \"magic\"\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("magic") && err.contains("crown-ibp"), "{err}");
    }

    #[test]
    fn out_of_range_values_name_field_and_range() {
        let text = "[train]\neps = -0.1\nbatch_size = 0\n[optimizer]\nlr = 0.0\n[eval]\nbounds = [\"ibp\"]\n";
        let Err(ConfigError::Invalid { problems, .. }) =
            ExperimentConfig::from_toml_str(text, "x.toml")
        else {
            panic!("expected Invalid");
        };
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        for f in ["train.eps", "train.batch_size", "optimizer.lr", "eval.eps"] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
        let eps = problems.iter().find(|p| p.field == "train.eps").unwrap();
        assert!(eps.message.contains(">= 0"), "{}", eps.message);
    }

    #[test]
    fn unknown_bound_or_estimator_names_the_value_and_lists_allowed() {
        for (text, bad, allowed) in [
            ("[eval]\nbounds = [\"foo\"]\n", "foo", "crown-ibp"),
            ("[eval]\nlipschitz = [\"bar\"]\n", "bar", "empirical"),
        ] {
            let err = ExperimentConfig::from_toml_str(text, "x.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(bad) && err.contains(allowed), "{err}");
        }
        let names = |s: &str| s.split(',').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            Estimator::parse_list(&names("gram, exact,gram,")).unwrap(),
            vec![Estimator::Gram, Estimator::Exact]
        );
        let err = Estimator::parse_list(&names("gram,svd")).unwrap_err();
        assert!(err.contains("`svd`") && err.contains("lipsdp"), "{err}");
    }

    #[test]
    fn method_needing_eps_rejects_zero() {
        let mut cfg = ExperimentConfig::default_experiment();
        cfg.train.method = Method::Ibp;
        cfg.train.eps = 0.0;
        assert!(cfg.validate().iter().any(|p| p.field == "train.eps"));
        cfg.train.eps = 0.1;
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    }
}
