//! A trained run loaded back from its folder, for the commands that inspect one.
use crate::config::{DeviceChoice, ExperimentConfig};
use crate::data::Dataset;
use crate::device::pick_device;
use crate::model::Network;
use crate::run;
use crate::train::prepare;
use anyhow::Context;
use std::path::Path;
use tch::{Device, Tensor};

/// A trained network loaded back from its run folder, with its test split.
pub struct TrainedRun {
    pub config: ExperimentConfig,
    pub net: Network,
    pub data: Dataset,
    pub device: Device,
    /// `model.safetensors` or `model_best.safetensors`.
    pub model_file: &'static str,
}

impl TrainedRun {
    /// The first `n` test points in file order (`0`: all of them).
    pub fn first_test_points(&self, n: usize) -> (Tensor, Tensor) {
        let total = self.data.test_len();
        let n = if n == 0 { total } else { (n as i64).min(total) };
        (
            self.data.test_x.narrow(0, 0, n),
            self.data.test_y.narrow(0, 0, n),
        )
    }
}

/// Loads a run folder's config, rebuilds its network on `device` (auto, cpu, cuda) and loads
/// its weights (`best`: `model_best.safetensors`).
pub fn load_trained(run_dir: &Path, device: &str, best: bool) -> anyhow::Result<TrainedRun> {
    let run = run::load_run(run_dir)?;
    let choice = DeviceChoice::parse(device)
        .with_context(|| format!("--device `{device}`: expected auto, cpu or cuda"))?;
    let device = pick_device(choice)?;
    let prep = prepare(&run.config, device)?;
    let mut net = prep.net;
    let model_file = if best {
        run::BEST_MODEL_FILE
    } else {
        run::MODEL_FILE
    };
    net.load_weights(&run_dir.join(model_file))?;
    Ok(TrainedRun {
        config: run.config,
        net,
        data: prep.data,
        device,
        model_file,
    })
}
