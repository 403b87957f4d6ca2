//! What several integration tests share: training a small run through the binary.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test.
pub fn certlab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_certlab"))
}

/// Writes `preset` to `dir/p.toml`, trains it with `certlab run --out dir/run` and returns the
/// run folder and the command's output (asserted successful).
pub fn train_run(dir: &Path, preset: &str) -> (PathBuf, Output) {
    let file = dir.join("p.toml");
    std::fs::write(&file, preset).unwrap();
    let out = dir.join("run");
    let o = certlab()
        .arg("run")
        .arg(&file)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (out, o)
}

/// [`train_run`]'s run folder.
pub fn train(dir: &Path, preset: &str) -> PathBuf {
    train_run(dir, preset).0
}
