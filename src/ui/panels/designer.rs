//! The experiment designer: every field of an `ExperimentConfig`, each labelled, each invalid
//! value marked where it is with the reason `ExperimentConfig::validate` gives.
mod certified;

use super::{Action, ERROR_COLOR};
use crate::config::{
    Arch, BoundMethod, DatasetKind, DeviceChoice, Estimator, ExperimentConfig, FieldError,
    LipBound, LrSchedule, Method, Noise, Norm, OptimizerKind, R2Lower, Ramp, RegStage,
    SmoothingConfig, TrainConfig,
};
use crate::worker;
use egui::{RichText, Ui};
use std::cell::RefCell;

/// The designer's state: the experiment and the text of the list fields as typed.
#[derive(Debug, Clone)]
pub struct Designer {
    pub cfg: ExperimentConfig,
    /// `model.hidden` as typed, e.g. "100, 100".
    pub hidden_text: String,
    /// `eval.eps` as typed, e.g. "0.03, 0.1".
    pub eval_eps_text: String,
    /// The memory line of the last checked experiment, recomputed only when it changes.
    memory: RefCell<Option<(ExperimentConfig, MemoryLine)>>,
}

/// "Memory: about 1.2 GB (20 GB available)", or the refusal at the key that drives it.
type MemoryLine = Result<String, FieldError>;

impl Designer {
    pub fn new(cfg: ExperimentConfig) -> Self {
        let mut d = Designer {
            cfg,
            hidden_text: String::new(),
            eval_eps_text: String::new(),
            memory: RefCell::new(None),
        };
        d.sync_text();
        d
    }

    /// Replaces the experiment (a preset was opened) and the typed lists with it.
    pub fn set(&mut self, cfg: ExperimentConfig) {
        self.cfg = cfg;
        self.sync_text();
    }

    fn sync_text(&mut self) {
        self.hidden_text = join(self.cfg.model.hidden.iter());
        self.eval_eps_text = join(self.cfg.eval.eps.iter());
    }

    /// The experiment as it would run, with the typed lists parsed in, and every problem.
    pub fn checked(&self) -> (ExperimentConfig, Vec<FieldError>) {
        let mut cfg = self.cfg.clone();
        let mut problems = Vec::new();
        match parse_list::<i64>(&self.hidden_text) {
            Ok(v) => cfg.model.hidden = v,
            Err(bad) => problems.push(FieldError {
                field: "model.hidden".into(),
                message: format!("`{bad}` is not a whole number; write widths like `100, 100`"),
            }),
        }
        match parse_list::<f64>(&self.eval_eps_text) {
            Ok(v) => cfg.eval.eps = v,
            Err(bad) => problems.push(FieldError {
                field: "eval.eps".into(),
                message: format!("`{bad}` is not a number; write radii like `0.03, 0.1`"),
            }),
        }
        problems.extend(cfg.validate());
        if problems.is_empty() {
            if let Err(e) = self.memory_of(&cfg) {
                problems.push(e);
            }
        }
        (cfg, problems)
    }

    /// The memory line of `cfg`, from the cache when the experiment has not changed.
    fn memory_of(&self, cfg: &ExperimentConfig) -> MemoryLine {
        let mut cache = self.memory.borrow_mut();
        match &*cache {
            Some((c, line)) if c == cfg => line.clone(),
            _ => {
                let line = worker::memory_check(cfg);
                *cache = Some((cfg.clone(), line.clone()));
                line
            }
        }
    }

    /// The memory line of the last valid experiment checked, in the error colour if refused.
    fn memory_ui(&self, ui: &mut Ui) {
        match self.memory.borrow().as_ref().map(|(_, line)| line) {
            Some(Ok(line)) => {
                ui.label(line);
            }
            Some(Err(e)) => {
                ui.label(RichText::new(&e.message).color(ERROR_COLOR));
            }
            None => {}
        }
    }

    /// Draws the designer panel, locked while a run trains; returns what needs the app (a
    /// folder dialog).
    pub fn ui(&mut self, ui: &mut Ui, problems: &[FieldError], locked: bool) -> Vec<Action> {
        let mut actions = Vec::new();
        egui::ScrollArea::vertical().show(ui, |ui| {
            ui.add_space(4.0);
            if locked {
                ui.label(RichText::new("The experiment is locked while it runs.").italics());
            }
            self.memory_ui(ui);
            self.fields_ui(ui, problems, locked, &mut actions);
        });
        actions
    }

    fn fields_ui(
        &mut self,
        ui: &mut Ui,
        problems: &[FieldError],
        locked: bool,
        actions: &mut Vec<Action>,
    ) {
        ui.add_enabled_ui(!locked, |ui| {
            self.general_ui(ui, problems);
            section(ui, "Dataset", true, |ui| {
                self.dataset_ui(ui, problems, actions)
            });
            section(ui, "Model", true, |ui| self.model_ui(ui, problems));
            section(ui, "Training", true, |ui| self.training_ui(ui, problems));
            section(ui, "Optimizer", false, |ui| self.optimizer_ui(ui, problems));
            section(ui, "Evaluation", true, |ui| self.eval_ui(ui, problems));
        });
    }

    fn general_ui(&mut self, ui: &mut Ui, problems: &[FieldError]) {
        let c = &mut self.cfg;
        egui::Grid::new("general").num_columns(2).show(ui, |ui| {
            row(ui, "Name", problems, "name", |ui| {
                ui.text_edit_singleline(&mut c.name)
            });
            row(ui, "Seed", problems, "seed", |ui| {
                ui.add(egui::DragValue::new(&mut c.seed))
            });
            row(ui, "Device", problems, "device", |ui| {
                combo(
                    ui,
                    "device",
                    &mut c.device,
                    &[
                        (DeviceChoice::Auto, "auto (CUDA if present)"),
                        (DeviceChoice::Cpu, "cpu"),
                        (DeviceChoice::Cuda, "cuda"),
                    ],
                )
            });
        });
    }

    fn dataset_ui(&mut self, ui: &mut Ui, problems: &[FieldError], actions: &mut Vec<Action>) {
        let d = &mut self.cfg.dataset;
        egui::Grid::new("dataset").num_columns(2).show(ui, |ui| {
            let kinds: Vec<(DatasetKind, &str)> =
                DatasetKind::ALL.iter().map(|k| (*k, k.name())).collect();
            row(ui, "Data set", problems, "dataset.kind", |ui| {
                combo(ui, "dataset-kind", &mut d.kind, &kinds)
            });
            if d.kind.is_toy() {
                row(
                    ui,
                    "Points per split",
                    problems,
                    "dataset.toy_points",
                    |ui| ui.add(egui::DragValue::new(&mut d.toy_points).speed(10)),
                );
                row(ui, "Noise", problems, "dataset.toy_noise", |ui| {
                    ui.add(
                        egui::DragValue::new(&mut d.toy_noise)
                            .speed(0.005)
                            .max_decimals(3),
                    )
                });
            } else {
                row(ui, "Folder", problems, "dataset.path", |ui| {
                    ui.horizontal(|ui| {
                        let hint = if d.kind == DatasetKind::FashionMnist {
                            crate::config::FASHION_MNIST_DIR
                        } else {
                            "folder with the files"
                        };
                        let r = ui.add(
                            egui::TextEdit::singleline(&mut d.path)
                                .hint_text(hint)
                                .desired_width(130.0),
                        );
                        if ui.button("…").on_hover_text("Pick the folder").clicked() {
                            actions.push(Action::PickDatasetFolder);
                        }
                        r
                    })
                    .inner
                });
                row(
                    ui,
                    "Train examples (0 = all)",
                    problems,
                    "dataset.train_size",
                    |ui| ui.add(egui::DragValue::new(&mut d.train_size).speed(100)),
                );
                row(
                    ui,
                    "Test examples (0 = all)",
                    problems,
                    "dataset.test_size",
                    |ui| ui.add(egui::DragValue::new(&mut d.test_size).speed(100)),
                );
            }
            row(
                ui,
                "Validation examples",
                problems,
                "dataset.val_size",
                |ui| validation_ui(ui, d),
            );
        });
    }

    fn model_ui(&mut self, ui: &mut Ui, problems: &[FieldError]) {
        let hidden_text = &mut self.hidden_text;
        let m = &mut self.cfg.model;
        egui::Grid::new("model").num_columns(2).show(ui, |ui| {
            let archs: Vec<(Arch, &str)> = Arch::ALL.iter().map(|a| (*a, a.name())).collect();
            row(ui, "Architecture", problems, "model.arch", |ui| {
                combo(ui, "arch", &mut m.arch, &archs)
            });
            if m.arch.uses_hidden() {
                // sll-conv: hidden[0] is the channel width, each entry a block's inner channels.
                let label = if m.arch == Arch::SllConv {
                    "Channels per block"
                } else {
                    "Hidden widths"
                };
                row(ui, label, problems, "model.hidden", |ui| {
                    ui.add(egui::TextEdit::singleline(hidden_text).desired_width(130.0))
                });
            }
            row(ui, "Normalize inputs", problems, "model.normalize", |ui| {
                ui.checkbox(&mut m.normalize, "")
            });
        });
    }

    fn training_ui(&mut self, ui: &mut Ui, problems: &[FieldError]) {
        let t = &mut self.cfg.train;
        egui::Grid::new("training").num_columns(2).show(ui, |ui| {
            let methods: Vec<(Method, &str)> =
                Method::ALL.iter().map(|m| (*m, method_label(*m))).collect();
            row(ui, "Method", problems, "train.method", |ui| {
                combo(ui, "method", &mut t.method, &methods)
            });
            row(ui, "Epochs", problems, "train.epochs", |ui| {
                ui.add(egui::DragValue::new(&mut t.epochs).speed(1))
            });
            row(ui, "Batch size", problems, "train.batch_size", |ui| {
                ui.add(egui::DragValue::new(&mut t.batch_size).speed(4))
            });
            if t.method.uses_eps() {
                row(ui, "Training eps", problems, "train.eps", |ui| {
                    eps_value(ui, &mut t.eps)
                });
                row(ui, "Norm", problems, "train.norm", |ui| {
                    norm_combo(ui, "train-norm", &mut t.norm)
                });
                row(
                    ui,
                    "Warm-up epochs (eps 0)",
                    problems,
                    "train.warmup_epochs",
                    |ui| ui.add(egui::DragValue::new(&mut t.warmup_epochs)),
                );
                row(ui, "Ramp epochs", problems, "train.ramp_epochs", |ui| {
                    ui.add(egui::DragValue::new(&mut t.ramp_epochs))
                });
                row(ui, "Ramp shape", problems, "train.ramp", |ui| {
                    combo(
                        ui,
                        "ramp",
                        &mut t.ramp,
                        &[
                            (Ramp::Linear, "linear"),
                            (Ramp::Smoothed, "smoothed (t⁴ then linear)"),
                        ],
                    )
                });
            }
            method_fields_ui(ui, t, problems);
        });
    }

    fn optimizer_ui(&mut self, ui: &mut Ui, problems: &[FieldError]) {
        let o = &mut self.cfg.optimizer;
        egui::Grid::new("optimizer").num_columns(2).show(ui, |ui| {
            row(ui, "Optimizer", problems, "optimizer.kind", |ui| {
                combo(
                    ui,
                    "opt-kind",
                    &mut o.kind,
                    &[(OptimizerKind::Adam, "adam"), (OptimizerKind::Sgd, "sgd")],
                )
            });
            row(ui, "Learning rate", problems, "optimizer.lr", |ui| {
                ui.add(egui::DragValue::new(&mut o.lr).speed(1e-4).max_decimals(6))
            });
            if o.kind == OptimizerKind::Sgd {
                row(ui, "Momentum", problems, "optimizer.momentum", |ui| {
                    ui.add(egui::DragValue::new(&mut o.momentum).speed(0.01))
                });
            }
            row(
                ui,
                "Weight decay",
                problems,
                "optimizer.weight_decay",
                |ui| {
                    ui.add(
                        egui::DragValue::new(&mut o.weight_decay)
                            .speed(1e-5)
                            .max_decimals(6),
                    )
                },
            );
            row(ui, "LR schedule", problems, "optimizer.schedule", |ui| {
                combo(
                    ui,
                    "lr-schedule",
                    &mut o.schedule,
                    &[
                        (LrSchedule::Constant, "constant"),
                        (LrSchedule::Step, "step"),
                        (LrSchedule::Cosine, "cosine"),
                    ],
                )
            });
            if o.schedule == LrSchedule::Step {
                row(
                    ui,
                    "Step every (epochs)",
                    problems,
                    "optimizer.step_epochs",
                    |ui| ui.add(egui::DragValue::new(&mut o.step_epochs)),
                );
                row(ui, "Gamma", problems, "optimizer.gamma", |ui| {
                    ui.add(egui::DragValue::new(&mut o.gamma).speed(0.01))
                });
            }
        });
    }

    fn eval_ui(&mut self, ui: &mut Ui, problems: &[FieldError]) {
        let eps_text = &mut self.eval_eps_text;
        let e = &mut self.cfg.eval;
        egui::Grid::new("evaluation").num_columns(2).show(ui, |ui| {
            row(ui, "Eval eps", problems, "eval.eps", |ui| {
                ui.add(egui::TextEdit::singleline(eps_text).desired_width(130.0))
            });
            row(ui, "Eval norm", problems, "eval.norm", |ui| {
                norm_combo(ui, "eval-norm", &mut e.norm)
            });
            row(ui, "Certify with", problems, "eval.bounds", |ui| {
                checkbox_list(ui, &mut e.bounds, &BoundMethod::ALL, BoundMethod::name)
            });
            certified::verify_fields_ui(ui, e, problems);
            row(
                ui,
                "PGD steps (0 = off)",
                problems,
                "eval.pgd_steps",
                |ui| ui.add(egui::DragValue::new(&mut e.pgd_steps)),
            );
            row(ui, "PGD restarts", problems, "eval.pgd_restarts", |ui| {
                ui.add(egui::DragValue::new(&mut e.pgd_restarts))
            });
            row(
                ui,
                "Robust subset (0 = all)",
                problems,
                "eval.robust_subset",
                |ui| ui.add(egui::DragValue::new(&mut e.robust_subset).speed(10)),
            );
            row(
                ui,
                "Evaluate every (epochs)",
                problems,
                "eval.every_epochs",
                |ui| ui.add(egui::DragValue::new(&mut e.every_epochs)),
            );
            row(
                ui,
                "Lipschitz estimates",
                problems,
                "eval.lipschitz",
                |ui| checkbox_list(ui, &mut e.lipschitz, &Estimator::ALL, Estimator::name),
            );
            row(
                ui,
                "Attack with the other norm",
                problems,
                "eval.cross_norm",
                |ui| ui.checkbox(&mut e.cross_norm, "PGD under both ℓ∞ and ℓ2"),
            );
            if e.cross_norm {
                row(ui, "Other-norm radii", problems, "eval.cross_eps", |ui| {
                    value_list_ui(ui, &mut e.cross_eps, "r", 0.5)
                });
            }
            smoothing_fields_ui(ui, &mut e.smoothing, problems);
        });
    }
}

/// A short list of values, each in its own labelled field (`prefix` and its number), with "+"
/// (the last value doubled, or `first`) and "−" (the last one removed).
fn value_list_ui(ui: &mut Ui, list: &mut Vec<f64>, prefix: &str, first: f64) -> egui::Response {
    ui.horizontal(|ui| {
        for (i, v) in list.iter_mut().enumerate() {
            let l = ui.label(format!("{prefix}{}", i + 1));
            ui.add(egui::DragValue::new(v).speed(0.01).max_decimals(3))
                .labelled_by(l.id);
        }
        let add = ui
            .button("+")
            .on_hover_text(format!("add a value to {prefix}"));
        if add.clicked() {
            list.push(list.last().map_or(first, |v| v * 2.0));
        }
        if !list.is_empty() && ui.button("−").on_hover_text("remove the last").clicked() {
            list.pop();
        }
    })
    .response
}

/// `[eval.smoothing]`: the noise levels (none: off) and, when on, the noise and the Monte
/// Carlo budget of CERTIFY.
fn smoothing_fields_ui(ui: &mut Ui, s: &mut SmoothingConfig, problems: &[FieldError]) {
    row(
        ui,
        "Smoothing sigma (none = off)",
        problems,
        "eval.smoothing.sigma",
        |ui| value_list_ui(ui, &mut s.sigma, "σ", 0.25),
    );
    if s.is_off() {
        return;
    }
    let noises: Vec<(Noise, &str)> = Noise::ALL.iter().map(|n| (*n, n.name())).collect();
    row(
        ui,
        "Smoothing noise",
        problems,
        "eval.smoothing.noise",
        |ui| combo(ui, "smoothing-noise", &mut s.noise, &noises),
    );
    row(
        ui,
        "Selection samples n0",
        problems,
        "eval.smoothing.n0",
        |ui| ui.add(egui::DragValue::new(&mut s.n0).speed(10)),
    );
    row(
        ui,
        "Counting samples n",
        problems,
        "eval.smoothing.n",
        |ui| ui.add(egui::DragValue::new(&mut s.n).speed(100)),
    );
    row(ui, "Alpha", problems, "eval.smoothing.alpha", |ui| {
        ui.add(
            egui::DragValue::new(&mut s.alpha)
                .speed(0.0001)
                .max_decimals(5),
        )
    });
    row(ui, "Noise batch", problems, "eval.smoothing.batch", |ui| {
        ui.add(egui::DragValue::new(&mut s.batch).speed(10))
    });
    row(
        ui,
        "Certified points",
        problems,
        "eval.smoothing.points",
        |ui| ui.add(egui::DragValue::new(&mut s.points).speed(1)),
    );
}

/// The training fields of `t.method` alone (PGD steps, CROWN-IBP schedule, regularizer
/// weights, Lipschitz control), in the training grid.
fn method_fields_ui(ui: &mut Ui, t: &mut TrainConfig, problems: &[FieldError]) {
    match t.method {
        Method::Pgd => {
            certified::pgd_fields_ui(ui, t, problems);
            noise_fields_ui(ui, t, problems, "Noise sigma (0 = none)");
        }
        Method::Rat => {
            certified::pgd_fields_ui(ui, t, problems);
            noise_fields_ui(ui, t, problems, "Noise sigma");
        }
        Method::Sabr | Method::MtlIbp | Method::CcIbp | Method::ExpIbp => {
            certified::adversarial_ibp_fields_ui(ui, t, problems);
        }
        Method::Ibp | Method::CrownIbp | Method::Fastlin => {
            if t.method == Method::CrownIbp {
                row(ui, "Final beta", problems, "train.final_beta", |ui| {
                    ui.add(egui::DragValue::new(&mut t.final_beta).speed(0.01))
                });
            }
            if t.method != Method::Fastlin {
                row(ui, "Final kappa", problems, "train.final_kappa", |ui| {
                    ui.add(egui::DragValue::new(&mut t.final_kappa).speed(0.01))
                });
            }
            if t.method == Method::Fastlin {
                row(
                    ui,
                    "Projection dim (0 = exact)",
                    problems,
                    "train.proj_dim",
                    |ui| ui.add(egui::DragValue::new(&mut t.proj_dim)),
                );
            }
            row(
                ui,
                "r1 weight (tightness)",
                problems,
                "train.r1_weight",
                |ui| ui.add(egui::DragValue::new(&mut t.r1_weight).speed(0.01)),
            );
            row(
                ui,
                "r2 weight (tightness)",
                problems,
                "train.r2_weight",
                |ui| ui.add(egui::DragValue::new(&mut t.r2_weight).speed(0.01)),
            );
            row(
                ui,
                "Regularizer warm-up epochs",
                problems,
                "train.reg_warmup_epochs",
                |ui| ui.add(egui::DragValue::new(&mut t.reg_warmup_epochs)),
            );
            row(
                ui,
                "r2 at slope-0/1 lines",
                problems,
                "train.r2_lower",
                |ui| {
                    combo(
                        ui,
                        "r2-lower",
                        &mut t.r2_lower,
                        &[
                            (R2Lower::HalfLine, "half-line (exact where tight)"),
                            (R2Lower::Abs, "|z| (as the paper writes it)"),
                        ],
                    )
                },
            );
            if t.method == Method::CrownIbp {
                row(ui, "r1/r2 active", problems, "train.reg_stage", |ui| {
                    combo(
                        ui,
                        "reg-stage",
                        &mut t.reg_stage,
                        &[
                            (RegStage::First, "first stage (x beta, as published)"),
                            (RegStage::Throughout, "throughout"),
                        ],
                    )
                });
            }
        }
        Method::Lipschitz => {
            row(ui, "Lipschitz weight", problems, "train.lip_weight", |ui| {
                ui.add(egui::DragValue::new(&mut t.lip_weight).speed(0.001))
            });
            row(
                ui,
                "Lipschitz target (0 = off)",
                problems,
                "train.lip_target",
                |ui| ui.add(egui::DragValue::new(&mut t.lip_target).speed(0.1)),
            );
            let bounds: Vec<(LipBound, &str)> =
                LipBound::ALL.iter().map(|b| (*b, b.name())).collect();
            row(ui, "Bound", problems, "train.lip_bound", |ui| {
                combo(ui, "lip-bound", &mut t.lip_bound, &bounds)
            });
            if t.lip_bound == LipBound::Admm {
                row(ui, "ADMM penalty", problems, "train.admm_penalty", |ui| {
                    ui.add(egui::DragValue::new(&mut t.admm_penalty).speed(0.01))
                });
            }
        }
        Method::Gaussian => noise_fields_ui(ui, t, problems, "Noise sigma"),
        Method::Standard => {}
    }
    certified::shi_fields_ui(ui, t, problems);
}

/// The training noise: its level and distribution (`gaussian`; augmentation under `pgd`).
fn noise_fields_ui(ui: &mut Ui, t: &mut TrainConfig, problems: &[FieldError], label: &str) {
    row(ui, label, problems, "train.noise_sigma", |ui| {
        ui.add(egui::DragValue::new(&mut t.noise_sigma).speed(0.01))
    });
    if t.noise_sigma > 0.0 {
        let noises: Vec<(Noise, &str)> = Noise::ALL.iter().map(|n| (*n, n.name())).collect();
        row(ui, "Noise", problems, "train.noise", |ui| {
            combo(ui, "train-noise", &mut t.noise, &noises)
        });
    }
}

pub fn method_label(m: Method) -> &'static str {
    match m {
        Method::Standard => "standard",
        Method::Pgd => "PGD adversarial",
        Method::Ibp => "IBP",
        Method::CrownIbp => "CROWN-IBP",
        Method::Fastlin => "convex outer polytope / Fast-Lin",
        Method::Lipschitz => "Lipschitz-regularised",
        Method::Sabr => "SABR (small boxes)",
        Method::MtlIbp => "MTL-IBP",
        Method::CcIbp => "CC-IBP",
        Method::ExpIbp => "Exp-IBP",
        Method::Gaussian => "Gaussian noise (smoothing)",
        Method::Rat => "randomized adversarial (RAT)",
    }
}

fn join<T: ToString>(items: impl Iterator<Item = T>) -> String {
    items.map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
}

/// Parses `a, b, c` (commas or spaces); returns the first piece that does not parse.
fn parse_list<T: std::str::FromStr>(text: &str) -> Result<Vec<T>, String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<T>().map_err(|_| s.to_string()))
        .collect()
}

fn section(ui: &mut Ui, title: &str, open: bool, body: impl FnOnce(&mut Ui)) {
    egui::CollapsingHeader::new(RichText::new(title).strong())
        .default_open(open)
        .show(ui, body);
}

/// One labelled field in a two-column grid; the problems for `key` go on a row beneath it.
fn row(
    ui: &mut Ui,
    label: &str,
    problems: &[FieldError],
    key: &str,
    widget: impl FnOnce(&mut Ui) -> egui::Response,
) {
    // `eval.eps[1]` belongs to the `eval.eps` field.
    let mine: Vec<&FieldError> = problems
        .iter()
        .filter(|p| {
            p.field == key
                || p.field
                    .strip_prefix(key)
                    .is_some_and(|r| r.starts_with('['))
        })
        .collect();
    let text = if mine.is_empty() {
        RichText::new(label)
    } else {
        RichText::new(format!("⚠ {label}")).color(ERROR_COLOR)
    };
    let l = ui.label(text);
    let r = widget(ui).labelled_by(l.id);
    if let Some(p) = mine.first() {
        r.on_hover_text(&p.message);
    }
    ui.end_row();
    for p in mine {
        ui.label("");
        ui.label(RichText::new(&p.message).color(ERROR_COLOR).small());
        ui.end_row();
    }
}

fn combo<T: PartialEq + Copy>(
    ui: &mut Ui,
    id: &str,
    value: &mut T,
    options: &[(T, &str)],
) -> egui::Response {
    let current = options
        .iter()
        .find(|(v, _)| v == value)
        .map_or("?", |(_, l)| *l);
    egui::ComboBox::from_id_salt(id)
        .selected_text(current)
        .show_ui(ui, |ui| {
            for (v, l) in options {
                ui.selectable_value(value, *v, *l);
            }
        })
        .response
}

fn norm_combo(ui: &mut Ui, id: &str, n: &mut Norm) -> egui::Response {
    combo(ui, id, n, &[(Norm::Linf, "ℓ∞"), (Norm::L2, "ℓ2")])
}

fn eps_value(ui: &mut Ui, v: &mut f64) -> egui::Response {
    ui.add(egui::DragValue::new(v).speed(0.001).max_decimals(4))
}

/// `dataset.val_size`: the default (ticked), or a number; 0 is labelled for what it means.
fn validation_ui(ui: &mut Ui, d: &mut crate::config::DatasetConfig) -> egui::Response {
    ui.vertical(|ui| {
        let mut default = d.val_size.is_none();
        let label = if d.kind.is_toy() {
            "default (20% of the points)"
        } else {
            "default (5,000)"
        };
        if ui.checkbox(&mut default, label).changed() {
            d.val_size = (!default).then(|| d.val_len(60_000));
        }
        if let Some(n) = &mut d.val_size {
            ui.horizontal(|ui| {
                let label = ui.label("examples");
                ui.add(egui::DragValue::new(n).speed(100))
                    .labelled_by(label.id);
            });
            if *n == 0 {
                ui.label("0: no validation split; epochs and model selection use the test split");
            }
        }
    })
    .response
}

/// Checkboxes for the members of a closed list, two per line.
fn checkbox_list<T: Copy + PartialEq>(
    ui: &mut Ui,
    list: &mut Vec<T>,
    all: &[T],
    name: impl Fn(T) -> &'static str,
) -> egui::Response {
    ui.vertical(|ui| {
        for pair in all.chunks(2) {
            ui.horizontal(|ui| {
                for &m in pair {
                    toggle_in(ui, list, m, name(m));
                }
            });
        }
    })
    .response
}

/// A checkbox that puts `item` into `list` or takes it out.
fn toggle_in<T: Copy + PartialEq>(ui: &mut Ui, list: &mut Vec<T>, item: T, label: &str) {
    let mut on = list.contains(&item);
    if ui.checkbox(&mut on, label).changed() {
        if on {
            list.push(item);
        } else {
            list.retain(|x| *x != item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_lists_parse_or_name_the_bad_piece() {
        let mut d = Designer::new(ExperimentConfig::default_experiment());
        assert_eq!(d.hidden_text, "64, 64");
        d.hidden_text = "100 200,300".into();
        d.eval_eps_text = "0.1, 0.2".into();
        let (cfg, problems) = d.checked();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(cfg.model.hidden, vec![100, 200, 300]);
        assert_eq!(cfg.eval.eps, vec![0.1, 0.2]);
        d.eval_eps_text = "0.1, x".into();
        let (_, problems) = d.checked();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "eval.eps");
        assert!(problems[0].message.contains("`x`"));
        d.eval_eps_text = "-0.1".into();
        let (_, problems) = d.checked();
        assert!(
            problems.iter().any(|p| p.field == "eval.eps[0]"),
            "{problems:?}"
        );
    }
}
