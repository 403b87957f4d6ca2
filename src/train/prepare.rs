//! Everything before the first step: data on the device, the network, the optimiser, and the
//! refusal of a run whose bound passes cannot fit in memory.
use super::TrainError;
use crate::config::{ExperimentConfig, Init, Method, OptimizerKind};
use crate::data::{self, Dataset};
use crate::device::device_name;
use crate::failure::{set_phase, During};
use crate::model::Network;
use tch::{nn, nn::OptimizerConfig, Device, TchError, Tensor};

/// Everything prepared before the first step: data on the device, the network.
pub struct Prepared {
    pub device: Device,
    pub data: Dataset,
    pub net: Network,
}

pub fn prepare(cfg: &ExperimentConfig, device: Device) -> Result<Prepared, TrainError> {
    check_memory(cfg, device)?;
    tch::manual_seed(cfg.seed as i64);
    set_phase("loading the data");
    let mut data = data::load(&cfg.dataset, cfg.seed)?;
    let stats = cfg.model.normalize.then(|| data.channel_stats());
    set_phase("building the network");
    let net = Network::from_config(
        &cfg.model,
        &data.input_shape,
        data.num_classes,
        stats,
        device,
    )?;
    if cfg.train.init == Init::Ibp {
        set_phase("the IBP initialisation (Shi et al. 2021)");
        super::init::ibp_init(&net)?;
    }
    set_phase(format!("moving the data to {}", device_name(device)));
    let to_device = |t: &Tensor, what: &str| {
        t.f_to_device(device).during(|| {
            let (n, d) = (t.size()[0], device_name(device));
            format!("moving the {what} ({n} examples) to {d}")
        })
    };
    data.train_x = to_device(&data.train_x, "training inputs")?;
    data.train_y = to_device(&data.train_y, "training labels")?;
    data.test_x = to_device(&data.test_x, "test inputs")?;
    data.test_y = to_device(&data.test_y, "test labels")?;
    data.val_x = to_device(&data.val_x, "validation inputs")?;
    data.val_y = to_device(&data.val_y, "validation labels")?;
    Ok(Prepared { device, data, net })
}

/// Refuses a Fast-Lin training with exact intermediate bounds whose estimated memory (see
/// `memory`) exceeds the device's available memory (the process would be killed mid-run
/// otherwise), and says what to change. Every config is also checked by `worker::spawn`,
/// before its run folder exists; this keeps the check for callers that skip it.
fn check_memory(cfg: &ExperimentConfig, device: Device) -> Result<(), TrainError> {
    let exact_fastlin = cfg.train.method == Method::Fastlin && cfg.train.proj_dim == 0;
    if !exact_fastlin {
        return Ok(());
    }
    match super::memory::check_on(cfg, device) {
        Ok(_) => Ok(()),
        Err(e) => Err(TrainError::TooBig(e.message)),
    }
}

/// Builds the optimiser for a network.
pub fn optimizer(net: &Network, cfg: &ExperimentConfig) -> Result<nn::Optimizer, TchError> {
    let o = &cfg.optimizer;
    match o.kind {
        OptimizerKind::Adam => nn::Adam {
            wd: o.weight_decay,
            ..Default::default()
        }
        .build(&net.vs, o.lr),
        OptimizerKind::Sgd => nn::Sgd {
            momentum: o.momentum,
            wd: o.weight_decay,
            ..Default::default()
        }
        .build(&net.vs, o.lr),
    }
}

#[cfg(test)]
mod tests {
    use super::super::memory::check;
    use super::*;

    #[test]
    fn exact_fastlin_that_cannot_fit_in_memory_is_refused_with_a_batch_that_fits() {
        let mut c = ExperimentConfig::default_experiment();
        c.dataset.kind = crate::config::DatasetKind::FashionMnist;
        c.dataset.train_size = 4096;
        c.dataset.test_size = 128;
        c.model.arch = crate::config::Arch::SmallConv;
        c.train.method = Method::Fastlin;
        c.train.proj_dim = 0;
        c.train.batch_size = 4096;
        let available = 8u64 << 30;
        let Err(e) = check(&c, available) else {
            panic!("a batch of 4096 with exact Fast-Lin bounds on the Small convnet was accepted")
        };
        let msg = e.message;
        assert_eq!(e.field, "train.batch_size");
        assert!(msg.contains("train.proj_dim"), "{msg}");
        let fits: usize = msg
            .split("lower train.batch_size to ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no batch size suggested: {msg}"));
        // The suggestion fits by the same estimate, and random projections are not refused.
        c.train.batch_size = fits;
        assert!(
            check(&c, available).is_ok(),
            "the suggested batch {fits} is refused too"
        );
        c.train.batch_size = 4096;
        c.train.proj_dim = 50;
        assert!(check(&c, available).is_ok());
    }
}
