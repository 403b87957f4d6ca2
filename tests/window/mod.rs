//! The window of the UI tests with a fake trainer: what they share.
#![allow(dead_code)]
use certlab::config::ExperimentConfig;
use certlab::protocol::{Command, Event};
use certlab::ui::{App, Spawner};
use certlab::worker::WorkerHandle;
use crossbeam_channel::{Receiver, Sender};
use egui_kittest::Harness;
use std::path::PathBuf;

/// A headless window of `size` on `runs_dir` whose Start gets a fake trainer: the commands
/// the window sends arrive at the returned receiver, the events sent into the returned sender
/// reach the window.
pub fn fake_window(
    runs_dir: PathBuf,
    cfg: ExperimentConfig,
    size: [f32; 2],
) -> (Harness<'static, App>, Receiver<Command>, Sender<Event>) {
    let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
    let (ev_tx, ev_rx) = crossbeam_channel::unbounded();
    let spawner: Spawner = Box::new(move |_cfg, _target, _wake| {
        Ok(WorkerHandle::from_channels(cmd_tx.clone(), ev_rx.clone()))
    });
    let h = Harness::builder()
        .with_size(egui::vec2(size[0], size[1]))
        .build_eframe(move |_cc| App::new(cfg, runs_dir, spawner));
    (h, cmd_rx, ev_tx)
}
