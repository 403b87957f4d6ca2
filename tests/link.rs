//! The binary finds libtorch without LD_LIBRARY_PATH and keeps libtorch_cuda.so when torch has it.
use std::path::Path;
use std::process::Command;

#[test]
fn binary_has_rpath_and_needs_torch_cuda_when_present() {
    let bin = env!("CARGO_BIN_EXE_certlab");
    let lib = option_env!("CERTLAB_TORCH_LIB").expect("build.rs found the torch lib folder");
    let o = Command::new("readelf")
        .args(["-d", bin])
        .output()
        .expect("readelf (binutils) is installed");
    assert!(o.status.success());
    let dynamic = String::from_utf8_lossy(&o.stdout);
    let needed: Vec<&str> = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    assert!(needed.contains(&"libtorch_cpu.so"), "{needed:?}");
    if Path::new(lib).join("libtorch_cuda.so").exists() {
        assert!(
            needed.contains(&"libtorch_cuda.so"),
            "{lib}/libtorch_cuda.so exists but is not NEEDED by the binary: {needed:?}"
        );
    }
    assert!(
        dynamic
            .lines()
            .any(|l| (l.contains("(RUNPATH)") || l.contains("(RPATH)")) && l.contains(lib)),
        "no rpath to {lib}:\n{dynamic}"
    );
    // And it starts with no LD_LIBRARY_PATH at all.
    let o = Command::new(bin)
        .arg("info")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
