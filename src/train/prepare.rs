//! Everything before the first step: data on the device, the network, the optimiser, and the
//! refusal of a run whose bound passes cannot fit in memory.
use super::TrainError;
use crate::bounds::{training_bytes, BoundMethod, Relaxed};
use crate::config::{ExperimentConfig, Method, OptimizerKind};
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
    check_memory(cfg, &net)?;
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

/// Refuses a Fast-Lin training with exact intermediate bounds whose backward pass would not
/// fit in the machine's available memory (the process would be killed mid-run otherwise), and
/// says what to change.
fn check_memory(cfg: &ExperimentConfig, net: &Network) -> Result<(), TrainError> {
    if cfg.train.method != Method::Fastlin || cfg.train.proj_dim > 0 {
        return Ok(());
    }
    let Some(available) = available_memory() else {
        return Ok(());
    };
    let Some(relaxed): Option<Relaxed> = BoundMethod::Fastlin.relaxed() else {
        return Ok(());
    };
    let batch = cfg.train.batch_size as i64;
    let need = training_bytes(net, batch, relaxed);
    if need <= available {
        return Ok(());
    }
    // A tenth below the estimate's limit: available memory moves.
    let fits = (batch as u64 * available / need * 9 / 10).max(1);
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    Err(TrainError::TooBig(format!(
        "Fast-Lin with exact intermediate bounds on this {} needs about {:.1} GiB per step at \
         train.batch_size = {batch}, and {:.1} GiB is available: lower train.batch_size to {fits} \
         or less, or set train.proj_dim (random projections, e.g. 50)",
        cfg.model.arch.name(),
        gib(need),
        gib(available)
    )))
}

/// `MemAvailable` of /proc/meminfo, in bytes (None where there is no such file).
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
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
    use super::*;

    #[test]
    fn exact_fastlin_that_cannot_fit_in_memory_is_refused_with_a_batch_that_fits() {
        let mut c = ExperimentConfig::default_experiment();
        c.dataset.kind = crate::config::DatasetKind::FashionMnist;
        c.dataset.train_size = 512;
        c.dataset.test_size = 128;
        c.model.arch = crate::config::Arch::SmallConv;
        c.train.method = Method::Fastlin;
        c.train.proj_dim = 0;
        c.train.batch_size = 1 << 22;
        let Err(TrainError::TooBig(msg)) = prepare(&c, Device::Cpu) else {
            panic!("a batch of 2^22 with exact Fast-Lin bounds on the Small convnet was accepted")
        };
        assert!(msg.contains("train.proj_dim"), "{msg}");
        let fits: i64 = msg
            .split("lower train.batch_size to ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no batch size suggested: {msg}"));
        // The suggestion fits by the same estimate, and random projections are not refused.
        c.train.batch_size = fits as usize;
        assert!(
            prepare(&c, Device::Cpu).is_ok(),
            "the suggested batch {fits} is refused too"
        );
        c.train.batch_size = 1 << 22;
        c.train.proj_dim = 50;
        assert!(prepare(&c, Device::Cpu).is_ok());
    }
}
