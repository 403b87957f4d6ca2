//! `[dataset]`: which data, where its files are, how much of it.
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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
    /// Validation examples for per-epoch evaluation and model selection, held out of the
    /// training split (toy sets: drawn from the generator). Absent: 5,000 for image sets (a
    /// fifth of a training split under 25,000), 20% of `toy_points` for toy sets. 0: no
    /// validation split: epochs are evaluated on the test split (the behaviour before it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_size: Option<usize>,
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
            val_size: None,
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

    /// How many validation examples a training split of `train_len` gives (toy sets: how many
    /// points to draw besides the training points).
    pub fn val_len(&self, train_len: usize) -> usize {
        match (self.val_size, self.kind.is_toy()) {
            (Some(n), _) => n,
            (None, true) => self.toy_points / 5,
            (None, false) if train_len >= 25_000 => 5_000,
            (None, false) => train_len / 5,
        }
    }

    pub(super) fn validate(&self, bad: &mut impl FnMut(&str, String)) {
        if let (Some(v), true) = (self.val_size, self.kind.is_toy()) {
            if v > 1_000_000 {
                bad(
                    "dataset.val_size",
                    format!("{v} is out of range: expected 0..=1000000"),
                );
            }
        }
        if self.kind.is_toy() {
            if !(10..=1_000_000).contains(&self.toy_points) {
                bad(
                    "dataset.toy_points",
                    format!("{} is out of range: expected 10..=1000000", self.toy_points),
                );
            }
            if !(0.0..=1.0).contains(&self.toy_noise) {
                bad(
                    "dataset.toy_noise",
                    format!(
                        "{} is out of range: expected 0 <= noise <= 1",
                        self.toy_noise
                    ),
                );
            }
        } else if matches!(self.kind, DatasetKind::Mnist | DatasetKind::Cifar10)
            && self.path.is_empty()
        {
            bad(
                "dataset.path",
                format!(
                    "dataset `{}` needs the folder of its files",
                    self.kind.name()
                ),
            );
        }
    }
}
