//! The shape of the code (issue "one room per idea"), checked on every test run: imports point
//! one way down the module layers of DESIGN.md, the UI never touches a tensor or the engine,
//! the engine never touches egui, and no file or function outgrows its room.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layers of `src/`, most basic first. A module may import only modules of a lower layer.
const LAYERS: &[&[&str]] = &[
    &["alloc", "config", "metrics", "linalg", "failure"],
    &["protocol", "device", "data", "run"],
    &["model"],
    &["bounds", "attack", "lipschitz"],
    &["eval"],
    &["train"],
    &["worker", "sweep", "inspector", "smooth_view"],
    &["ui"],
    &["cli"],
];

/// What the UI may import: plain data, run folders, the worker that runs the trainer and the
/// inspector thread that runs the bound microscope, the smoothing jobs of the 2-D view.
const UI_MAY_USE: &[&str] = &[
    "protocol",
    "metrics",
    "config",
    "run",
    "worker",
    "inspector",
    "sweep",
    "smooth_view",
];

const MAX_FILE_LINES: usize = 800;
const MAX_FN_LINES: usize = 120;

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every source file of a module (`src/x.rs` or `src/x/**`), keyed by its top module, with its
/// non-test part: the lines before `#[cfg(test)] mod tests`.
fn sources() -> BTreeMap<String, Vec<(PathBuf, Vec<String>)>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut out: BTreeMap<String, Vec<(PathBuf, Vec<String>)>> = BTreeMap::new();
    for path in files {
        let rel = path.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        // `lib.rs` and `main.rs` only declare; a `tests.rs` is a test module of its folder.
        let test_module = path.file_name().is_some_and(|f| f == "tests.rs");
        if module == "lib" || module == "main" || test_module {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<String> = text.lines().map(String::from).collect();
        let cut = lines
            .iter()
            .position(|l| l == "#[cfg(test)]")
            .unwrap_or(lines.len());
        if cut < lines.len() {
            assert!(
                lines.get(cut + 1).is_some_and(|l| l.contains("mod tests")),
                "{}:{}: a top-level #[cfg(test)] item before the tests module (the tests go last)",
                rel.display(),
                cut + 1
            );
        }
        out.entry(module)
            .or_default()
            .push((rel.to_path_buf(), lines[..cut].to_vec()));
    }
    out
}

/// The top-level crate modules a piece of code names (`crate::x::...`).
fn crate_imports(lines: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for line in lines {
        let code = line.split("//").next().unwrap_or("");
        assert!(!code.contains("crate::{"), "grouped crate import: {line}");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push(name);
        }
    }
    out
}

#[test]
fn imports_point_down_the_layers_and_every_module_has_a_layer() {
    let mut wrong = Vec::new();
    for (module, files) in sources() {
        let Some(r) = rank(&module) else {
            panic!(
                "module `{module}` has no layer in tests/architecture.rs: add it where it belongs"
            );
        };
        for (path, lines) in &files {
            for dep in crate_imports(lines) {
                if dep == module {
                    continue;
                }
                match rank(&dep) {
                    Some(d) if d < r => {}
                    _ => wrong.push(format!("{} ({module}) imports {dep}", path.display())),
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_ui_touches_no_tensor_and_the_engine_no_egui() {
    let mut wrong = Vec::new();
    for (module, files) in sources() {
        for (path, lines) in &files {
            for (i, line) in lines.iter().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                let at = format!("{}:{}", path.display(), i + 1);
                if module == "ui" && (code.contains("tch::") || code.contains("use tch")) {
                    wrong.push(format!("{at}: the UI uses tch"));
                }
                let gui = code.contains("egui") || code.contains("eframe");
                if module != "ui" && module != "cli" && gui {
                    wrong.push(format!("{at}: the engine uses egui/eframe"));
                }
            }
            if module == "ui" {
                for dep in crate_imports(lines) {
                    if dep != "ui" && !UI_MAY_USE.contains(&dep.as_str()) {
                        wrong.push(format!("{}: the UI imports {dep}", path.display()));
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// `(name, first line, length)` of every function whose body ends at its own indentation.
fn functions(lines: &[String]) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let after_vis = trimmed
            .strip_prefix("pub(crate) ")
            .or_else(|| trimmed.strip_prefix("pub(super) "))
            .or_else(|| trimmed.strip_prefix("pub "))
            .unwrap_or(trimmed);
        let Some(sig) = after_vis.strip_prefix("fn ") else {
            continue;
        };
        let name: String = sig
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let close = format!("{}}}", " ".repeat(indent));
        let end = lines[i..]
            .iter()
            .position(|l| *l == close || (l.ends_with(';') && !l.contains('{') && l == line));
        if let Some(end) = end {
            out.push((name, i + 1, end + 1));
        }
    }
    out
}

#[test]
fn no_file_or_function_outgrows_its_room() {
    let mut wrong = Vec::new();
    for files in sources().values() {
        for (path, lines) in files {
            if lines.len() > MAX_FILE_LINES {
                wrong.push(format!(
                    "{}: {} lines of non-test code (at most {MAX_FILE_LINES})",
                    path.display(),
                    lines.len()
                ));
            }
            for (name, line, len) in functions(lines) {
                if len > MAX_FN_LINES {
                    wrong.push(format!(
                        "{}:{line}: fn {name} is {len} lines (at most {MAX_FN_LINES})",
                        path.display()
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_checks_themselves_see_what_they_look_for() {
    // An injected cycle and an injected long function must be caught by the helpers above.
    let lines: Vec<String> = [
        "use crate::train::Control;",
        "let x = crate::ui::App::new();",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(crate_imports(&lines), ["train", "ui"]);
    assert!(rank("ui") > rank("train") && rank("eval") < rank("train"));
    let mut body = vec!["pub fn long() {".to_string()];
    body.extend((0..130).map(|i| format!("    let _ = {i};")));
    body.push("}".into());
    body.push("    fn short(&self) -> u32 {".into());
    body.push("        1".into());
    body.push("    }".into());
    let f = functions(&body);
    assert_eq!(f[0], ("long".to_string(), 1, 132));
    assert_eq!(f[1], ("short".to_string(), 133, 3));
}
