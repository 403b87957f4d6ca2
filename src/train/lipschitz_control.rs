//! How `method = "lipschitz"` keeps the network's Lipschitz bound in check, beside the loss
//! term that `losses.rs` adds: nothing more (a penalty), a rescaling after every optimiser
//! step (the enforced bound), or the ADMM of Pauli et al. (2021) with its once-per-epoch SDP
//! projection. Also what each evaluation reports of it.
use super::reporter::Reporter;
use super::TrainError;
use crate::config::{ExperimentConfig, LipBound, Method};
use crate::lipschitz::{self, Admm, AdmmStep};
use crate::metrics::{key, EvalRecord};
use crate::model::Network;
use crate::protocol::Level;
use tch::Tensor;

/// Gram iterations of the guaranteed bound that the enforced training keeps below
/// `lip_target` and that is logged every epoch.
pub const ENFORCE_GRAM_ITERS: u32 = 6;

pub enum LipschitzControl {
    /// Not a Lipschitz training.
    Off,
    /// `lip_weight` times the bound in the loss (or plain cross-entropy); the bound is logged.
    Penalty { shapes: Vec<Vec<i64>> },
    /// The product of Gram bounds rescaled to at most `target` after every step.
    Enforce {
        shapes: Vec<Vec<i64>>,
        target: f64,
        /// The largest bound after any step of the current epoch.
        epoch_max: f64,
    },
    /// ADMM (penalty version, or enforced with `target`): the coupling term in the loss, one
    /// SDP projection and dual update per epoch. The enforced version evaluates and saves the
    /// projected network (within the bound), then trains on from its own weights.
    Admm {
        shapes: Vec<Vec<i64>>,
        admm: Box<Admm>,
        target: Option<f64>,
        last_step: Option<AdmmStep>,
        /// The network's own weights while the projected ones are swapped in for evaluation.
        saved: Option<Vec<Tensor>>,
    },
}

impl LipschitzControl {
    /// Sets up the control; an enforced bound holds from the first step on.
    pub fn start(
        cfg: &ExperimentConfig,
        net: &Network,
        rep: &mut Reporter,
    ) -> Result<Self, TrainError> {
        let tc = &cfg.train;
        if tc.method != Method::Lipschitz {
            return Ok(LipschitzControl::Off);
        }
        let shapes = net.layer_shapes();
        let target = (tc.lip_target > 0.0).then_some(tc.lip_target);
        if tc.lip_bound == LipBound::Admm {
            let mut admm = Admm::new(net, tc.admm_penalty).map_err(TrainError::Lipschitz)?;
            if let Some(t) = target {
                let b = admm.start_inside(net, t).map_err(TrainError::Lipschitz)?;
                rep.log(
                    Level::Info,
                    format!(
                        "ADMM: initial weights projected, LipSDP bound {b:.6} <= lip_target {t}"
                    ),
                );
            }
            return Ok(LipschitzControl::Admm {
                shapes,
                admm: Box::new(admm),
                target,
                last_step: None,
                saved: None,
            });
        }
        let Some(target) = target else {
            return Ok(LipschitzControl::Penalty { shapes });
        };
        let b = lipschitz::enforce_bound(net, &shapes, target, ENFORCE_GRAM_ITERS)
            .map_err(TrainError::Lipschitz)?;
        rep.log(
            Level::Info,
            format!(
                "Lipschitz bound enforced: {b:.6} <= lip_target {target} (product of Gram bounds, {ENFORCE_GRAM_ITERS} iterations)"
            ),
        );
        Ok(LipschitzControl::Enforce {
            shapes,
            target,
            epoch_max: f64::NEG_INFINITY,
        })
    }

    /// The loss of a step: ADMM adds its augmented-Lagrangian coupling.
    pub fn step_loss(&self, net: &Network, loss: Tensor) -> Tensor {
        match self {
            LipschitzControl::Admm { admm, .. } => loss + admm.coupling(net),
            _ => loss,
        }
    }

    pub fn start_epoch(&mut self) {
        if let LipschitzControl::Enforce { epoch_max, .. } = self {
            *epoch_max = f64::NEG_INFINITY;
        }
    }

    /// After every optimiser step: the enforced bound rescales the weights.
    pub fn after_step(&mut self, net: &Network) -> Result<(), TrainError> {
        if let LipschitzControl::Enforce {
            shapes,
            target,
            epoch_max,
        } = self
        {
            let b = lipschitz::enforce_bound(net, shapes, *target, ENFORCE_GRAM_ITERS)
                .map_err(TrainError::Lipschitz)?;
            *epoch_max = epoch_max.max(b);
        }
        Ok(())
    }

    /// At the end of an epoch: ADMM's SDP step and dual update; the enforced version swaps in
    /// the projected weights when the epoch is evaluated.
    pub fn after_epoch(
        &mut self,
        net: &Network,
        epoch: u32,
        evaluate: bool,
        lip_weight: f64,
        rep: &mut Reporter,
    ) -> Result<(), TrainError> {
        let LipschitzControl::Admm {
            admm,
            target,
            last_step,
            saved,
            ..
        } = self
        else {
            return Ok(());
        };
        let st = admm
            .step(net, *target, lip_weight)
            .map_err(TrainError::Lipschitz)?;
        rep.log(
            Level::Info,
            format!(
                "epoch {epoch}: ADMM projection, LipSDP bound of the projected weights {:.6}{}, residual ||W - Wbar|| / ||W|| {:.4}",
                st.projected_bound,
                target.map(|l| format!(" (target {l})")).unwrap_or_default(),
                st.residual
            ),
        );
        *last_step = Some(st);
        if target.is_some() && evaluate {
            *saved = Some(admm.swap_in(net));
        }
        Ok(())
    }

    /// The run is stopping: the enforced ADMM keeps only networks within the bound.
    pub fn on_stop(&self, net: &Network) {
        if let LipschitzControl::Admm {
            admm,
            target: Some(_),
            ..
        } = self
        {
            admm.swap_in(net);
        }
    }

    /// Adds the training bound (and ADMM's values) to an evaluation and logs the bound.
    pub fn report(&self, net: &Network, epoch: u32, rec: &mut EvalRecord, rep: &mut Reporter) {
        let shapes = match self {
            LipschitzControl::Off => return,
            LipschitzControl::Penalty { shapes }
            | LipschitzControl::Enforce { shapes, .. }
            | LipschitzControl::Admm { shapes, .. } => shapes,
        };
        if let LipschitzControl::Admm {
            target,
            last_step: Some(st),
            ..
        } = self
        {
            rec.lipschitz
                .insert(key::ADMM_PROJECTED_LIPSDP.into(), st.projected_bound);
            rec.lipschitz.insert(key::ADMM_RESIDUAL.into(), st.residual);
            if target.is_some() {
                // The certified LipSDP value of the network evaluated and saved (float32).
                if let Ok(r) = lipschitz::mlp_weights(net).and_then(|ws| {
                    lipschitz::lipsdp(&ws, &lipschitz::Settings::default())
                        .map_err(|e| e.to_string())
                }) {
                    rec.lipschitz.insert(key::ADMM_LIPSDP.into(), r.value);
                }
            }
        }
        let bound = lipschitz::guaranteed_bound(net, shapes, ENFORCE_GRAM_ITERS);
        rec.lipschitz.insert(key::TRAIN_BOUND.into(), bound);
        let mut detail = String::new();
        if let LipschitzControl::Enforce {
            target, epoch_max, ..
        } = self
        {
            if epoch_max.is_finite() {
                rec.lipschitz
                    .insert(key::TRAIN_BOUND_MAX.into(), *epoch_max);
            }
            detail = format!(" (max after any step this epoch {epoch_max:.6}, target {target})");
        }
        rep.log(
            Level::Info,
            format!("epoch {epoch}: Lipschitz bound {bound:.6}{detail}"),
        );
    }

    /// After the evaluation: the enforced ADMM trains on from its own weights (unless the
    /// run is over, when the projected network stays as the result).
    pub fn end_epoch(&mut self, net: &Network, last: bool) {
        if let LipschitzControl::Admm { saved, .. } = self {
            if let Some(w) = saved.take().filter(|_| !last) {
                Admm::restore(net, &w);
            }
        }
    }
}
