//! The log at the bottom of the window: the worker's messages, coloured by level.
use super::level_color;
use crate::protocol::Level;
use egui::{RichText, Ui};
use std::path::Path;

/// Log lines kept in memory (the run folder's log.txt has them all).
const LOG_LINES: usize = 2000;

/// One line of the log panel.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub level: Level,
    pub message: String,
}

/// The last [`LOG_LINES`] lines.
#[derive(Debug, Default)]
pub struct LogPanel {
    pub lines: Vec<LogLine>,
}

impl LogPanel {
    pub fn push(&mut self, level: Level, message: String) {
        self.lines.push(LogLine { level, message });
        if self.lines.len() > LOG_LINES {
            self.lines.drain(..self.lines.len() - LOG_LINES);
        }
    }

    /// Draws the log; `run_dir` is the live run's folder, named in the header.
    pub fn ui(&self, ui: &mut Ui, run_dir: Option<&Path>) {
        ui.horizontal(|ui| {
            ui.label(RichText::new("Log").strong());
            if let Some(d) = run_dir {
                ui.label(RichText::new(format!("run folder: {}", d.display())).small());
            }
        });
        egui::ScrollArea::vertical()
            .stick_to_bottom(true)
            .auto_shrink([false, false])
            .show(ui, |ui| {
                for line in &self.lines {
                    let color = level_color(ui, line.level);
                    ui.label(RichText::new(&line.message).monospace().color(color));
                }
            });
    }
}
