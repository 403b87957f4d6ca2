//! certlab: a workbench for robustness experiments on neural networks.
//!
//! Engine modules (`config`, `data`, `model`, `bounds`, `attack`, `lipschitz`, `eval`, `train`, `run`,
//! `worker`, `inspector`) never touch egui; `ui` never touches a tensor. `failure` turns libtorch's
//! errors and panics into one sentence naming what was being done.
pub mod alloc;
pub mod attack;
pub mod bounds;
pub mod cli;
pub mod config;
pub mod data;
pub mod device;
pub mod eval;
pub mod failure;
pub mod inspector;
pub mod linalg;
pub mod lipschitz;
pub mod metrics;
pub mod model;
pub mod protocol;
pub mod run;
pub mod smooth_view;
pub mod sweep;
pub mod train;
pub mod ui;
pub mod worker;
