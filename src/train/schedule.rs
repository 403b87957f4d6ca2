//! The schedules of a run: the eps ramp, CROWN-IBP's beta and kappa (as in the CROWN-IBP
//! reference code, Zhang et al. 2020), the regularizer warm-up, and the learning rate.
use crate::config::{ExperimentConfig, LrSchedule, Ramp};

/// Schedules of one training step, from the CROWN-IBP reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Current training eps.
    pub eps: f64,
    /// Weight of the CROWN-IBP bound in the CROWN-IBP/IBP mix.
    pub beta: f64,
    /// Weight of the clean loss.
    pub kappa: f64,
    /// Multiplier of the r1/r2 weights (0 -> 1 over the regularizer warm-up).
    pub reg_factor: f64,
}

/// Fraction of the eps ramp done at a fractional epoch position `t` (epochs since start).
pub fn ramp_fraction(cfg: &ExperimentConfig, t: f64) -> f64 {
    let tc = &cfg.train;
    let start = tc.warmup_epochs as f64;
    if t < start {
        return 0.0;
    }
    if tc.ramp_epochs == 0 {
        return 1.0;
    }
    let f = ((t - start) / tc.ramp_epochs as f64).clamp(0.0, 1.0);
    match tc.ramp {
        Ramp::Linear => f,
        Ramp::Smoothed => {
            // t^4 on the first quarter, then linear, continuous with matching slope.
            let mid: f64 = 0.25;
            // Value at mid is a * mid^4, slope 4 a mid^3 equals the line's slope (1 - a mid^4)/(1 - mid).
            let a = 1.0 / (4.0 * mid.powi(3) * (1.0 - mid) + mid.powi(4));
            if f < mid {
                a * f.powi(4)
            } else {
                let v_mid = a * mid.powi(4);
                v_mid + (1.0 - v_mid) * (f - mid) / (1.0 - mid)
            }
        }
    }
}

pub fn schedule(cfg: &ExperimentConfig, t: f64) -> Schedule {
    let tc = &cfg.train;
    let eps_max = tc.eps;
    let eps = eps_max * ramp_fraction(cfg, t);
    let (beta, kappa) = if eps_max > 0.0 {
        (
            (eps_max - eps * (1.0 - tc.final_beta)) / eps_max,
            (eps_max - eps * (1.0 - tc.final_kappa)) / eps_max,
        )
    } else {
        (1.0, 1.0)
    };
    let reg_factor = if tc.reg_warmup_epochs == 0 {
        1.0
    } else {
        (t / tc.reg_warmup_epochs as f64).clamp(0.0, 1.0)
    };
    Schedule {
        eps,
        beta,
        kappa,
        reg_factor,
    }
}

pub fn learning_rate(cfg: &ExperimentConfig, epoch: u32) -> f64 {
    let o = &cfg.optimizer;
    match o.schedule {
        LrSchedule::Constant => o.lr,
        LrSchedule::Step => o.lr * o.gamma.powi((epoch / o.step_epochs.max(1)) as i32),
        LrSchedule::Cosine => {
            let f = epoch as f64 / cfg.train.epochs.max(1) as f64;
            o.lr * 0.5 * (1.0 + (std::f64::consts::PI * f).cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Method;

    fn cfg_with(warmup: u32, ramp: u32, kind: Ramp) -> ExperimentConfig {
        let mut c = ExperimentConfig::default_experiment();
        c.train.method = Method::CrownIbp;
        c.train.eps = 0.2;
        c.train.warmup_epochs = warmup;
        c.train.ramp_epochs = ramp;
        c.train.ramp = kind;
        c.train.final_beta = 0.0;
        c.train.final_kappa = 0.5;
        c
    }

    #[test]
    fn linear_ramp_and_crown_ibp_schedules() {
        let c = cfg_with(2, 4, Ramp::Linear);
        assert_eq!(schedule(&c, 1.0).eps, 0.0);
        let mid = schedule(&c, 4.0);
        assert!((mid.eps - 0.1).abs() < 1e-12);
        // beta = (eps_max - eps (1 - 0)) / eps_max = 0.5; kappa = (0.2 - 0.1*0.5)/0.2 = 0.75.
        assert!((mid.beta - 0.5).abs() < 1e-12);
        assert!((mid.kappa - 0.75).abs() < 1e-12);
        let end = schedule(&c, 9.0);
        assert!((end.eps - 0.2).abs() < 1e-12 && end.beta.abs() < 1e-12);
        assert!((end.kappa - 0.5).abs() < 1e-12);
    }

    #[test]
    fn smoothed_ramp_is_monotone_continuous_and_ends_at_one() {
        let c = cfg_with(0, 10, Ramp::Smoothed);
        let mut prev = 0.0;
        for i in 0..=1000 {
            let f = ramp_fraction(&c, i as f64 * 0.01);
            assert!(f >= prev - 1e-12, "not monotone at {i}");
            assert!(f - prev < 0.01, "jump at {i}: {prev} -> {f}");
            prev = f;
        }
        assert!((prev - 1.0).abs() < 1e-12);
        // Slower than linear at the start (the t^4 part).
        assert!(ramp_fraction(&c, 1.0) < 0.1);
    }

    #[test]
    fn step_and_cosine_lr() {
        let mut c = ExperimentConfig::default_experiment();
        c.optimizer.lr = 0.1;
        c.optimizer.schedule = LrSchedule::Step;
        c.optimizer.step_epochs = 2;
        c.optimizer.gamma = 0.5;
        assert!((learning_rate(&c, 3) - 0.05).abs() < 1e-12);
        assert!((learning_rate(&c, 4) - 0.025).abs() < 1e-12);
        c.optimizer.schedule = LrSchedule::Cosine;
        c.train.epochs = 10;
        assert!((learning_rate(&c, 5) - 0.05).abs() < 1e-12);
    }
}
