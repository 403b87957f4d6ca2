//! Screenshots of the window or of one plot, asked of the renderer and saved when they arrive
//! (a frame later).
use super::export::write_png;
use super::panels::Notice;
use crate::protocol::Level;
use crossbeam_channel::{Receiver, Sender};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A screenshot asked for, on its way back from the renderer.
struct PendingShot {
    path: PathBuf,
    /// The part of the window to keep (a plot); the whole window when `None`.
    rect: Option<egui::Rect>,
}

pub(super) struct Screenshots {
    pending: Option<PendingShot>,
    tx: Sender<Arc<egui::ColorImage>>,
    rx: Receiver<Arc<egui::ColorImage>>,
}

impl Screenshots {
    pub fn new() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(1);
        Screenshots {
            pending: None,
            tx,
            rx,
        }
    }

    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Asks the renderer for the next frame's pixels; [`Self::receive`] saves them.
    pub fn request(&mut self, ctx: &egui::Context, path: PathBuf, rect: Option<egui::Rect>) {
        let tx = self.tx.clone();
        ctx.request_screenshot(move |img| {
            let _ = tx.try_send(img);
        });
        self.pending = Some(PendingShot { path, rect });
        ctx.request_repaint();
    }

    /// Saves a screenshot that arrived; returns the notice that says where it went (or why it
    /// could not be written), or `None` while none has arrived.
    pub fn receive(&mut self, ctx: &egui::Context) -> Option<Notice> {
        let pending = self.pending.as_ref()?;
        let Ok(img) = self.rx.try_recv() else {
            ctx.request_repaint_after(Duration::from_millis(50));
            return None;
        };
        let ppp = ctx.pixels_per_point();
        let img = match pending.rect {
            Some(r) => img.region(&r, Some(ppp)),
            None => (*img).clone(),
        };
        let path = pending.path.clone();
        self.pending = None;
        Some(match write_png(&path, &img) {
            Ok(()) => Notice {
                level: Level::Info,
                text: format!("image written to {}", path.display()),
            },
            Err(e) => Notice {
                level: Level::Error,
                text: format!("cannot write {}: {e}", path.display()),
            },
        })
    }
}
