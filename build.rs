//! Links the binary against the libtorch that ships inside the PyPI `torch` wheel in `.venv`.
//!
//! Two traps this avoids (see DESIGN.md): the binary must find `libtorch_cpu.so` without
//! `LD_LIBRARY_PATH` (we emit an rpath), and the linker must keep `libtorch_cuda.so` even though
//! no symbol of it is referenced directly (otherwise `--as-needed` drops it and CUDA is never
//! seen at run time).
use std::path::{Path, PathBuf};
use std::process::Command;

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("PYTHON_SYS_EXECUTABLE") {
        return PathBuf::from(p);
    }
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let venv = manifest.join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// The torch lib folder and torch's version, asked of the venv's python.
fn torch_lib_dir() -> Option<(PathBuf, String)> {
    let out = Command::new(python())
        .args([
            "-c",
            "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib')); print(torch.__version__)",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines = text.lines();
    let dir = PathBuf::from(lines.next()?.trim());
    let version = lines.next().unwrap_or("unknown").trim().to_string();
    dir.exists().then_some((dir, version))
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // BLAS/LAPACK for clarabel's PSD cone (LipSDP): the system OpenBLAS (libopenblas-dev),
    // linked last (after libtorch) so that libtorch's own BLAS symbols keep precedence and
    // OpenBLAS only supplies what libtorch does not export (dsyevr_, dsyrk_, ...).
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-lopenblas,--as-needed");
    println!("cargo:rerun-if-env-changed=PYTHON_SYS_EXECUTABLE");
    let Some((lib, version)) = torch_lib_dir() else {
        println!("cargo:warning=certlab: torch lib folder not found; run `make build` (it installs torch into .venv)");
        return;
    };
    let lib_str = lib.display();
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_str}");
    println!("cargo:rustc-env=CERTLAB_TORCH_LIB={lib_str}");
    println!("cargo:rustc-env=CERTLAB_TORCH_VERSION={version}");
    if Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-L{lib_str},-ltorch_cuda,--as-needed");
    }
}
