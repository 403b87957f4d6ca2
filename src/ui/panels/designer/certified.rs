//! The designer's fields of the certified-training methods of round 2: SABR's box fraction,
//! the expressive losses' alpha, PGD settings of the methods that attack, and the IBP
//! initialisation and warm-up regularizers of Shi et al. (2021). Each appears only for the
//! methods that use it.
use super::{combo, row};
use crate::config::{BoundMethod, EvalConfig, FieldError, Init, Method, TrainConfig, VerifyConfig};
use egui::Ui;

/// `pgd_steps` and `pgd_step_ratio`, for the methods that run PGD.
pub(super) fn pgd_fields_ui(ui: &mut Ui, t: &mut TrainConfig, problems: &[FieldError]) {
    row(ui, "PGD steps", problems, "train.pgd_steps", |ui| {
        ui.add(egui::DragValue::new(&mut t.pgd_steps))
    });
    row(ui, "Step / eps", problems, "train.pgd_step_ratio", |ui| {
        ui.add(egui::DragValue::new(&mut t.pgd_step_ratio).speed(0.01))
    });
}

/// SABR (its box fraction and the kappa ramp) and the expressive losses (alpha), with PGD.
pub(super) fn adversarial_ibp_fields_ui(ui: &mut Ui, t: &mut TrainConfig, problems: &[FieldError]) {
    pgd_fields_ui(ui, t, problems);
    if t.method == Method::Sabr {
        row(
            ui,
            "Small box / eps (lambda)",
            problems,
            "train.sabr_lambda",
            |ui| {
                ui.add(
                    egui::DragValue::new(&mut t.sabr_lambda)
                        .speed(0.01)
                        .range(0.0..=1.0),
                )
            },
        );
        row(ui, "Final kappa", problems, "train.final_kappa", |ui| {
            ui.add(egui::DragValue::new(&mut t.final_kappa).speed(0.01))
        });
    } else {
        row(
            ui,
            "IBP weight (alpha)",
            problems,
            "train.mtl_alpha",
            |ui| {
                ui.add(
                    egui::DragValue::new(&mut t.mtl_alpha)
                        .speed(0.01)
                        .range(0.0..=1.0),
                )
            },
        );
    }
}

/// The initialisation and the regularizers of Shi et al. (2021), for IBP-based methods.
pub(super) fn shi_fields_ui(ui: &mut Ui, t: &mut TrainConfig, problems: &[FieldError]) {
    if !t.method.ibp_based() {
        return;
    }
    let inits = [
        (Init::Default, "default (uniform)"),
        (Init::Ibp, "IBP (Shi et al. 2021)"),
    ];
    row(ui, "Initialisation", problems, "train.init", |ui| {
        combo(ui, "init", &mut t.init, &inits)
    });
    row(
        ui,
        "Warm-up regularizer weight (Shi)",
        problems,
        "train.shi_reg_weight",
        |ui| ui.add(egui::DragValue::new(&mut t.shi_reg_weight).speed(0.01)),
    );
}

/// alpha-CROWN's optimiser (shown when it is among the certifying bounds) and complete
/// verification (`[eval.verify]`: verified accuracy in every evaluation).
pub(super) fn verify_fields_ui(ui: &mut Ui, e: &mut EvalConfig, problems: &[FieldError]) {
    if e.bounds.contains(&BoundMethod::AlphaCrown) {
        row(
            ui,
            "alpha-CROWN iterations",
            problems,
            "eval.alpha_iters",
            |ui| ui.add(egui::DragValue::new(&mut e.alpha_iters)),
        );
        row(ui, "alpha-CROWN step", problems, "eval.alpha_lr", |ui| {
            ui.add(egui::DragValue::new(&mut e.alpha_lr).speed(0.01))
        });
    }
    let mut on = e.verify.is_some();
    row(ui, "Complete verification", problems, "eval.verify", |ui| {
        ui.checkbox(&mut on, "verify points (verified accuracy)")
    });
    if on != e.verify.is_some() {
        e.verify = on.then(VerifyConfig::default);
    }
    if let Some(v) = e.verify.as_mut() {
        row(
            ui,
            "Verify: seconds per point",
            problems,
            "eval.verify.timeout_s",
            |ui| ui.add(egui::DragValue::new(&mut v.timeout_s).speed(0.1)),
        );
        row(ui, "Verify: points", problems, "eval.verify.points", |ui| {
            ui.add(egui::DragValue::new(&mut v.points).speed(10))
        });
    }
}
