//! What a libtorch failure becomes: one sentence that says what was being done and why it
//! failed ("training step 3 of epoch 2: out of memory (17.2 GB)"). libtorch's own text, several
//! lines with native stack frames, goes to the run's `log.txt` at most, never to the window,
//! the console or `summary.json`.
//!
//! libtorch errors reach Rust two ways: as a `TchError` from tch's `f_` ops, which the engine
//! turns into a [`TorchFailure`] naming the step ([`During::during`], or the current phase), and
//! as a panic from tch's plain ops (they call the `f_` op and unwrap). For the second, the
//! engine names what it is doing with [`set_phase`] (a thread-local: a panic anywhere inside a
//! training step is then named by it), and [`catch`] runs the work with the default panic
//! message silenced on that thread and reduces the payload to the same sentence.
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::sync::Once;
use tch::TchError;

thread_local! {
    /// What this thread is doing, for the sentence of a failure ("building the network").
    static PHASE: RefCell<String> = const { RefCell::new(String::new()) };
    /// Whether a panic of this thread is captured by [`catch`] (the default hook stays quiet).
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    /// The full text of the last captured panic (message, location, backtrace).
    static PANIC_DETAILS: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Says what this thread is doing now; the sentence of any libtorch failure until the next
/// call starts with it. A noun phrase: "training step 3 of epoch 2", "evaluating epoch 2".
pub fn set_phase(phase: impl Into<String>) {
    let phase = phase.into();
    PHASE.with(|p| *p.borrow_mut() = phase);
}

/// What this thread is doing ("running the trainer" when nobody said).
pub fn phase() -> String {
    PHASE.with(|p| {
        let p = p.borrow();
        if p.is_empty() {
            "running the trainer".into()
        } else {
            p.clone()
        }
    })
}

/// A libtorch failure: what was being done, why it failed in one line, and libtorch's full text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{during}: {reason}")]
pub struct TorchFailure {
    pub during: String,
    pub reason: String,
    /// libtorch's whole message with its native frames: for `log.txt` only.
    pub details: String,
}

impl TorchFailure {
    pub fn new(during: impl Into<String>, error: &TchError) -> Self {
        let details = error.to_string();
        TorchFailure {
            during: during.into(),
            reason: reason(&details),
            details,
        }
    }

    /// A failure of the current [`phase`].
    pub fn in_phase(error: &TchError) -> Self {
        Self::new(phase(), error)
    }
}

/// Names the step of a fallible libtorch call: `t.f_to_device(d).during(|| "moving ...")?`.
pub trait During<T> {
    fn during(self, what: impl FnOnce() -> String) -> Result<T, TorchFailure>;
}

impl<T> During<T> for Result<T, TchError> {
    fn during(self, what: impl FnOnce() -> String) -> Result<T, TorchFailure> {
        self.map_err(|e| TorchFailure::new(what(), &e))
    }
}

/// libtorch's message reduced to one line: its first meaningful line, without tch's
/// "Internal torch error" prefix or libtorch's "[enforce fail at ...]" location, and an
/// allocation failure said plainly with its size in GB.
pub fn reason(text: &str) -> String {
    let text = text.trim_start_matches("Internal torch error: ");
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("unknown libtorch error");
    let line = match line.strip_prefix("[enforce fail at ") {
        Some(rest) => rest.split_once("] ").map_or(rest, |(_, msg)| msg),
        None => line,
    };
    let line = line.strip_prefix("data. ").unwrap_or(line);
    if let Some(bytes) = number_after(line, "you tried to allocate ") {
        return format!("out of memory ({})", gb(bytes));
    }
    if line.contains("CUDA out of memory") {
        return match line
            .split_once("Tried to allocate ")
            .and_then(|(_, rest)| size_in_bytes(rest))
        {
            Some(bytes) => format!("out of GPU memory ({})", gb(bytes)),
            None => "out of GPU memory".into(),
        };
    }
    if line.to_lowercase().contains("out of memory") {
        return format!("out of memory ({})", shorten(line, 200));
    }
    if line.contains("Storage size calculation overflowed") {
        return "cannot allocate memory: the tensor's size overflows".into();
    }
    shorten(line, 300)
}

/// `bytes` as "17.2 GB" (decimal gigabytes, as memory is sold).
pub fn gb(bytes: f64) -> String {
    format!("{:.1} GB", bytes / 1e9)
}

/// The integer right after `marker` in `line`.
fn number_after(line: &str, marker: &str) -> Option<f64> {
    let rest = line.split_once(marker)?.1;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// libtorch's `format_size` read back: "17.18 GiB", "512.00 MiB", "20.00 KiB", "100 bytes".
fn size_in_bytes(text: &str) -> Option<f64> {
    let mut words = text.split_whitespace();
    let value: f64 = words.next()?.parse().ok()?;
    let unit = words.next()?.trim_end_matches(['.', ',', ';']);
    let scale = match unit {
        "bytes" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(value * scale)
}

/// At most `max` characters of `line`, with "..." where it was cut.
fn shorten(line: &str, max: usize) -> String {
    match line.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.to_string(),
    }
}

/// A panic caught by [`catch`]: the one sentence, and the full text for `log.txt`.
#[derive(Debug, Clone, PartialEq)]
pub struct CaughtPanic {
    pub sentence: String,
    pub details: String,
}

/// Runs `f`, turning a panic into a [`CaughtPanic`]. While `f` runs, the default panic message
/// (with libtorch's native frames in it) is not printed for this thread: the details are kept
/// for the caller to write where it wants. Other threads' panics print as before.
pub fn catch<R>(f: impl FnOnce() -> R) -> Result<R, CaughtPanic> {
    install_hook();
    let outer = CAPTURING.with(|c| c.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CAPTURING.with(|c| c.set(outer));
    result.map_err(|payload| {
        let details = PANIC_DETAILS
            .with(|d| d.borrow_mut().take())
            .unwrap_or_else(|| payload_text(payload.as_ref()));
        CaughtPanic {
            sentence: panic_sentence(payload.as_ref()),
            details,
        }
    })
}

/// The hook that keeps captured panics quiet, installed once for the process; panics of
/// threads outside [`catch`] go to the hook that was there before.
fn install_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CAPTURING.with(|c| c.get()) {
                return previous(info);
            }
            let location = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            // tch's unwrap shows the error's Debug form: libtorch's lines joined by "\n".
            let message = payload_text(info.payload()).replace("\\n", "\n");
            let text = format!(
                "panicked{location}: {message}\nbacktrace:\n{}",
                std::backtrace::Backtrace::force_capture()
            );
            PANIC_DETAILS.with(|d| *d.borrow_mut() = Some(text));
        }));
    });
}

fn payload_text(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// The sentence of a panic of the current [`phase`]: a libtorch error carried by tch's
/// `unwrap` (`called Result::unwrap() on an Err value: Torch("...")`) becomes its reason;
/// any other panic is a crash, named by its first line.
pub fn panic_sentence(payload: &(dyn Any + Send)) -> String {
    let text = payload_text(payload);
    match torch_message(&text) {
        Some(message) => format!("{}: {}", phase(), reason(&message)),
        None => format!(
            "{}: the trainer crashed: {}",
            phase(),
            shorten(text.lines().next().unwrap_or(""), 300)
        ),
    }
}

/// The libtorch message inside tch's unwrap panic: the `Debug` text of a `TchError`, e.g.
/// `Torch("mat1 and mat2 shapes cannot be multiplied\nException raised from ...")`, unescaped.
fn torch_message(panic: &str) -> Option<String> {
    let (_, err) = panic.split_once("on an `Err` value: ")?;
    let (variant, rest) = err.split_once("(\"")?;
    if variant.is_empty() || !variant.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    // The Debug string up to its first escaped newline is the first line.
    let first = rest.split("\\n").next().unwrap_or(rest);
    let first = first.trim_end_matches("\")");
    Some(first.replace("\\\"", "\"").replace("\\'", "'"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn cpu_allocation_failure_is_out_of_memory_in_gb() {
        // 2^40 floats: 4.4 TB, more than any machine; malloc refuses at once.
        let err = Tensor::f_empty([1i64 << 40], (Kind::Float, Device::Cpu)).unwrap_err();
        let full = err.to_string();
        let f = TorchFailure::new("allocating a test tensor", &err);
        assert_eq!(f.reason, "out of memory (4398.0 GB)", "from: {full}");
        assert_eq!(
            f.to_string(),
            "allocating a test tensor: out of memory (4398.0 GB)"
        );
        assert_eq!(f.details, full);
    }

    #[test]
    fn libtorch_messages_keep_their_first_line_only() {
        let a = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
        let b = Tensor::zeros([5, 7], (Kind::Float, Device::Cpu));
        let err = a.f_matmul(&b).unwrap_err();
        let r = reason(&err.to_string());
        assert_eq!(
            r, "mat1 and mat2 shapes cannot be multiplied (2x3 and 5x7)",
            "from: {err}"
        );
    }

    #[test]
    fn cuda_and_enforce_messages_are_read_back() {
        let cuda = "CUDA out of memory. Tried to allocate 16.00 GiB. GPU 0 has a total capacity \
                    of 139.81 GiB of which 2.00 GiB is free. Of the allocated memory ...\n\
                    Exception raised from malloc at CUDACachingAllocator.cpp:1000";
        assert_eq!(reason(cuda), "out of GPU memory (17.2 GB)");
        let enforce = "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not \
                       enough memory: you tried to allocate 17179869184 bytes.";
        assert_eq!(reason(enforce), "out of memory (17.2 GB)");
        assert_eq!(reason("\n\n  first\nsecond"), "first");
    }

    #[test]
    fn a_tch_unwrap_panic_becomes_the_phase_and_the_first_line() {
        set_phase("training step 3 of epoch 2");
        let caught = catch(|| {
            let a = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
            a.matmul(&Tensor::zeros([5, 7], (Kind::Float, Device::Cpu)))
        })
        .unwrap_err();
        assert_eq!(
            caught.sentence,
            "training step 3 of epoch 2: mat1 and mat2 shapes cannot be multiplied (2x3 and 5x7)"
        );
        assert!(caught.details.contains("Torch("), "{}", caught.details);
        let caught = catch(|| panic!("index out of range\nmore")).unwrap_err();
        assert_eq!(
            caught.sentence,
            "training step 3 of epoch 2: the trainer crashed: index out of range"
        );
        assert_eq!(catch(|| 7), Ok(7));
    }
}
