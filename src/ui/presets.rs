//! The presets that ship with certlab, offered in the Experiment menu and the open dialog.
use std::path::PathBuf;

/// The bundled `presets/` folder: next to the working directory, or the source tree the
/// binary was built from.
pub fn bundled_presets_dir() -> Option<PathBuf> {
    [
        PathBuf::from("presets"),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("presets"),
    ]
    .into_iter()
    .find(|p| p.is_dir())
}

/// The bundled presets, sorted by file name.
pub(crate) fn bundled_presets() -> Vec<PathBuf> {
    let Some(dir) = bundled_presets_dir() else {
        return vec![];
    };
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
