//! The rules that span sections: which architectures the data, the bounds, the estimators and
//! the training method allow. Each section checks its own keys beside its type; these are
//! called by `ExperimentConfig::validate` and report under the key the user should change.
use super::{Arch, Estimator, ExperimentConfig, LipBound, Method};

/// The largest LMI (inputs + hidden neurons + outputs) of the ADMM projection: clarabel's PSD
/// cone is dense in the packed triangle, so its cost grows with the sixth power of this.
pub const ADMM_MAX_DIM: i64 = 64;

/// The toy datasets are 2-D points: a convnet cannot read them.
pub(super) fn toy_data_needs_dense_model(
    cfg: &ExperimentConfig,
    bad: &mut impl FnMut(&str, String),
) {
    if cfg.dataset.kind.is_toy() && cfg.model.arch.is_conv() {
        bad(
            "model.arch",
            format!(
                "`{}` needs image inputs; toy dataset `{}` is 2-D: use `mlp`",
                cfg.model.arch.name(),
                cfg.dataset.kind.name()
            ),
        );
    }
}

/// ADMM (Pauli et al. 2021) projects every weight of a plain MLP onto the LipSDP set once per
/// epoch, so the network and its inputs must be small.
pub(super) fn admm_fits(cfg: &ExperimentConfig, bad: &mut impl FnMut(&str, String)) {
    if !cfg.train.uses_admm() {
        return;
    }
    let m = &cfg.model;
    let dim = 2 + m.hidden.iter().sum::<i64>() + 3;
    if m.arch != Arch::Mlp || m.normalize || m.hidden.is_empty() {
        bad(
            "train.lip_bound",
            "`admm` trains a plain MLP: model.arch = \"mlp\" with hidden layers and model.normalize = false".into(),
        );
    } else if !cfg.dataset.kind.is_toy() || dim > ADMM_MAX_DIM {
        bad(
            "train.lip_bound",
            format!(
                "`admm` solves an SDP over every weight once per epoch: only small MLPs on the 2-D datasets (inputs + hidden + classes <= {}); use `lipsdp` or `gram`",
                ADMM_MAX_DIM
            ),
        );
    }
}

/// The 1-Lipschitz layers have no IBP/CROWN relaxation: neither evaluation bounds nor the
/// training methods built on them apply.
pub(super) fn one_lipschitz_without_bounds(
    cfg: &ExperimentConfig,
    bad: &mut impl FnMut(&str, String),
) {
    let arch = cfg.model.arch;
    if !arch.is_one_lipschitz() {
        return;
    }
    if !cfg.eval.bounds.is_empty() {
        bad(
            "eval.bounds",
            format!(
                "IBP/CROWN bounds do not support the 1-Lipschitz layers of `{}`: leave eval.bounds empty (such networks get the l_2 Lipschitz certificate, cert_acc key `lipschitz`)",
                arch.name()
            ),
        );
    }
    let method = cfg.train.method;
    if method.uses_bounds() {
        bad(
            "train.method",
            format!(
                "`{}` needs IBP/CROWN bounds, which do not support the 1-Lipschitz layers of `{}`: use `standard`, `pgd` or `lipschitz`",
                method.name(),
                arch.name()
            ),
        );
    }
}

/// LipSDP-Neuron is for MLPs (dense layers and ReLUs; AOL/spectral layers are dense), as an
/// estimator and as a training bound.
pub(super) fn lipsdp_only_for_mlps(cfg: &ExperimentConfig, bad: &mut impl FnMut(&str, String)) {
    let arch = cfg.model.arch;
    if matches!(
        arch,
        Arch::Mlp | Arch::Aol | Arch::Spectral | Arch::Circulant
    ) {
        return;
    }
    if cfg.eval.lipschitz.contains(&Estimator::Lipsdp) {
        bad(
            "eval.lipschitz",
            format!(
                "`lipsdp` is for MLPs (mlp, aol, spectral, circulant), not `{}`",
                arch.name()
            ),
        );
    }
    if cfg.train.method == Method::Lipschitz && cfg.train.lip_bound == LipBound::Lipsdp {
        bad(
            "train.lip_bound",
            format!(
                "`lipsdp` is for MLPs (mlp, aol, spectral), not `{}`: use `gram`",
                arch.name()
            ),
        );
    }
}
