//! A run that cannot fit in memory is refused before anything starts; `--dry-run` shows the
//! estimate and creates nothing.
use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn certlab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_certlab"))
}

fn preset(dir: &Path, hidden: &str) -> std::path::PathBuf {
    let p = dir.join("wide.toml");
    let text = format!(
        "name = \"wide\"\n[dataset]\nkind = \"fashion-mnist\"\n[model]\narch = \"mlp\"\n\
         hidden = {hidden}\n[train]\nepochs = 1\nbatch_size = 128\n[eval]\neps = [0.1]\n"
    );
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_65536_wide_mlp_is_refused_at_once_naming_model_hidden_and_a_width_that_fits() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = preset(tmp.path(), "[65536, 65536]");
    let out = tmp.path().join("run");
    let started = Instant::now();
    let o = certlab()
        .args(["run", "--device", "cpu", "--out"])
        .arg(&out)
        .arg(&cfg)
        .output()
        .unwrap();
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&o.stderr);
    eprintln!("refused in {took:?}: {err}");
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("model.hidden"), "{err}");
    let suggested = err
        .split("set model.hidden = [")
        .nth(1)
        .and_then(|r| r.split(']').next())
        .unwrap_or_else(|| panic!("no width suggested: {err}"));
    assert!(
        suggested
            .split(',')
            .all(|w| w.trim().parse::<i64>().is_ok_and(|w| w < 65536)),
        "{err}"
    );
    assert!(!out.exists(), "a run folder was created");
}

#[test]
fn dry_run_prints_the_estimate_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = preset(tmp.path(), "[100, 100]");
    let o = certlab()
        .current_dir(tmp.path())
        .args(["run", "--dry-run"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for part in ["libtorch", "parameters", "activations", "total"] {
        assert!(text.contains(part), "{text}");
    }
    assert!(
        !tmp.path().join("runs").exists(),
        "a runs folder was created"
    );
    let cfg = preset(tmp.path(), "[65536, 65536]");
    let o = certlab()
        .args(["run", "--dry-run"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("total"));
}
