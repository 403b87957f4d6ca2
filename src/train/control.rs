//! What the training loop listens to: Pause / Resume / Stop from the UI and a cancel flag.
use crate::protocol::{Command, Event};
use crossbeam_channel::Receiver;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the training loop listens to: commands from the UI and a cancel flag (Ctrl-C).
pub struct Control {
    pub commands: Receiver<Command>,
    pub cancel: Arc<AtomicBool>,
}

impl Control {
    /// Handles pending commands; blocks while paused. Returns true when the run must stop.
    pub fn should_stop(&self, emit: &mut dyn FnMut(Event)) -> bool {
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return true;
            }
            match self.commands.try_recv() {
                Ok(Command::Stop) => return true,
                Ok(Command::Pause) => {
                    emit(Event::Paused(true));
                    loop {
                        if self.cancel.load(Ordering::Relaxed) {
                            return true;
                        }
                        match self.commands.recv_timeout(Duration::from_millis(100)) {
                            Ok(Command::Resume) => {
                                emit(Event::Paused(false));
                                break;
                            }
                            Ok(Command::Stop) => return true,
                            Ok(Command::Pause) => {}
                            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                            // The controller is gone: nobody can resume us.
                            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return true,
                        }
                    }
                }
                Ok(Command::Resume) => {}
                Err(_) => return false,
            }
        }
    }
}
