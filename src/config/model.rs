//! `[model]`: the architecture and its widths.
use serde::{Deserialize, Serialize};

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
    /// 1-Lipschitz by construction: SDP-based Lipschitz layers (SLL, Araujo et al. 2023), one
    /// block per `hidden` entry (width `hidden[0]`), then a norm-bounded last layer.
    Sll,
    /// 1-Lipschitz convex potential layers (CPL, Meunier et al. 2022), same layout as `sll`.
    Cpl,
    /// 1-Lipschitz almost-orthogonal layers (AOL rescaling, Prach & Lampert 2022), `hidden`
    /// widths like the MLP.
    Aol,
    /// MLP whose every linear layer is divided by a guaranteed bound on its spectral norm.
    Spectral,
    /// 1-Lipschitz convnet: the image's channels zero-padded to `hidden[0]`, one 3x3 conv SLL
    /// block per `hidden` entry (inner channels that entry), a spectral-normalised last layer.
    SllConv,
    /// MLP whose affine layers are diagonal-circulant (Araujo et al. 2019): `hidden` widths,
    /// `2 n + out` parameters per layer (`n = max(in, out)`), multiplication by FFT.
    Circulant,
}

impl Arch {
    pub const ALL: [Arch; 9] = [
        Arch::Mlp,
        Arch::SmallConv,
        Arch::LargeConv,
        Arch::Sll,
        Arch::Cpl,
        Arch::Aol,
        Arch::Spectral,
        Arch::SllConv,
        Arch::Circulant,
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
            Arch::Circulant => "circulant",
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

impl ModelConfig {
    pub(super) fn validate(&self, bad: &mut impl FnMut(&str, String)) {
        if self.arch.is_one_lipschitz() && self.hidden.is_empty() {
            bad(
                "model.hidden",
                format!("`{}` needs at least one hidden layer", self.arch.name()),
            );
        }
        if self.arch == Arch::SllConv && self.hidden.iter().any(|&w| !(1..=256).contains(&w)) {
            bad(
                "model.hidden",
                format!(
                    "{:?}: `sll-conv` widths are channels at full resolution, each must be in 1..=256",
                    self.hidden
                ),
            );
        }
        if self.arch.uses_hidden() {
            if self.hidden.iter().any(|&w| !(1..=65536).contains(&w)) {
                bad(
                    "model.hidden",
                    format!("{:?}: every width must be in 1..=65536", self.hidden),
                );
            }
            if self.hidden.len() > 16 {
                bad("model.hidden", "at most 16 hidden layers".into());
            }
        }
    }
}
