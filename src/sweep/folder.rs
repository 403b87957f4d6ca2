//! The sweep folder: `DIR/<name>/` with `sweep.toml` (the sweep file, its base copied beside it
//! as `base.toml`, so the folder reproduces itself), `points.jsonl` (one line per point: id,
//! overrides, seed, run folder), `configs/<id>.toml` (each point's full config, what a backend
//! runs), one run folder per point (`p0003-s1/`), and `attempts/` where the folder of a crashed
//! or cancelled point is moved before it is rerun (nothing written is deleted).
use super::{Point, SweepError, SweepSpec};
use crate::run;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const SWEEP_FILE: &str = "sweep.toml";
pub const BASE_FILE: &str = "base.toml";
pub const POINTS_FILE: &str = "points.jsonl";
const CONFIGS_DIR: &str = "configs";
const ATTEMPTS_DIR: &str = "attempts";
const LOCK_FILE: &str = ".lock";

/// What a point's run folder says about it.
#[derive(Debug, Clone, PartialEq)]
pub enum PointState {
    /// No run folder yet.
    Pending,
    /// `summary.json` says completed.
    Done,
    /// `summary.json` says failed, with the reason.
    Failed(String),
    /// Stopped (Ctrl-C, Stop) before it finished.
    Cancelled,
    /// A run folder without `summary.json`: running now, or killed.
    Incomplete,
}

impl PointState {
    pub fn label(&self) -> &'static str {
        match self {
            PointState::Pending => "pending",
            PointState::Done => "done",
            PointState::Failed(_) => "failed",
            PointState::Cancelled => "cancelled",
            PointState::Incomplete => "running or crashed",
        }
    }
    /// Whether a resume runs the point again (failed points only when asked to).
    pub fn needs_run(&self, retry_failed: bool) -> bool {
        match self {
            PointState::Done => false,
            PointState::Failed(_) => retry_failed,
            _ => true,
        }
    }
}

#[derive(Serialize)]
struct PointLine<'a> {
    id: &'a str,
    setting: usize,
    overrides: BTreeMap<String, toml::Value>,
    seed: u64,
    run: &'a str,
}

/// A sweep folder with its points.
#[derive(Debug, Clone)]
pub struct SweepFolder {
    pub dir: PathBuf,
    pub spec: SweepSpec,
    pub points: Vec<Point>,
}

impl SweepFolder {
    /// Expands the sweep file at `spec_path` and creates `out/<name>/`, or opens it when it holds
    /// this same sweep already (a resume). A folder holding a different sweep is refused, with
    /// the first point that differs.
    pub fn create_or_open(spec_path: &Path, out: &Path) -> Result<Self, SweepError> {
        let spec = SweepSpec::load(spec_path)?;
        let spec_dir = spec_path.parent().unwrap_or(Path::new("."));
        let base_path = spec_dir.join(&spec.base);
        let base_text =
            std::fs::read_to_string(&base_path).map_err(|e| SweepError::io(&base_path, e))?;
        Self::create_or_open_with(spec, &base_text, &base_path.display().to_string(), out)
    }

    /// [`SweepFolder::create_or_open`] with the sweep and its base preset given (the window
    /// builds both from the experiment in the designer).
    pub fn create_or_open_with(
        spec: SweepSpec,
        base_text: &str,
        base_origin: &str,
        out: &Path,
    ) -> Result<Self, SweepError> {
        let points = spec.expand_from(base_text, base_origin)?;
        let dir = out.join(&spec.name);
        let folder = SweepFolder { dir, spec, points };
        if folder.dir.join(SWEEP_FILE).exists() {
            folder.check_same_points()?;
        } else {
            folder.write_new(base_text)?;
        }
        Ok(folder)
    }

    /// Opens an existing sweep folder (for status, report, resume).
    pub fn open(dir: &Path) -> Result<Self, SweepError> {
        let path = dir.join(SWEEP_FILE);
        if !path.exists() {
            return Err(SweepError::Folder(format!(
                "{} is not a sweep folder: no {SWEEP_FILE}",
                dir.display()
            )));
        }
        let spec = SweepSpec::load(&path)?;
        let points = spec.expand(dir)?;
        Ok(SweepFolder {
            dir: dir.to_path_buf(),
            spec,
            points,
        })
    }

    fn write_new(&self, base_text: &str) -> Result<(), SweepError> {
        let configs = self.dir.join(CONFIGS_DIR);
        std::fs::create_dir_all(&configs).map_err(|e| SweepError::io(&configs, e))?;
        let write = |path: PathBuf, text: String| {
            std::fs::write(&path, text).map_err(|e| SweepError::io(&path, e))
        };
        write(self.dir.join(BASE_FILE), base_text.to_string())?;
        let mut copy = self.spec.clone();
        copy.base = PathBuf::from(BASE_FILE);
        let spec_text =
            toml::to_string_pretty(&copy).map_err(|e| SweepError::Folder(e.to_string()))?;
        let mut lines = String::new();
        for p in &self.points {
            write(self.config_path(p), p.config.to_toml_string())?;
            let mut overrides = self.spec.set.clone();
            overrides.extend(p.setting.clone());
            let line = PointLine {
                id: &p.id,
                setting: p.setting_index,
                overrides,
                seed: p.seed,
                run: &p.id,
            };
            lines.push_str(&serde_json::to_string(&line).unwrap_or_default());
            lines.push('\n');
        }
        write(self.dir.join(POINTS_FILE), lines)?;
        // Written last: a folder with sweep.toml is complete.
        write(self.dir.join(SWEEP_FILE), spec_text)
    }

    fn check_same_points(&self) -> Result<(), SweepError> {
        for p in &self.points {
            let path = self.config_path(p);
            let same = std::fs::read_to_string(&path).is_ok_and(|t| t == p.config.to_toml_string());
            if !same {
                return Err(SweepError::Folder(format!(
                    "{} holds a different sweep (point {} is not the same); pass another --out \
                     or rename the sweep",
                    self.dir.display(),
                    p.id
                )));
            }
        }
        Ok(())
    }

    pub fn config_path(&self, p: &Point) -> PathBuf {
        self.dir.join(CONFIGS_DIR).join(format!("{}.toml", p.id))
    }

    pub fn run_dir(&self, p: &Point) -> PathBuf {
        self.dir.join(&p.id)
    }

    pub fn point(&self, id: &str) -> Option<&Point> {
        self.points.iter().find(|p| p.id == id)
    }

    /// The point's state, read from its run folder.
    pub fn state(&self, p: &Point) -> PointState {
        let dir = self.run_dir(p);
        if !dir.exists() {
            return PointState::Pending;
        }
        match run::read_summary(&dir) {
            None => PointState::Incomplete,
            Some(s) => match s.outcome.as_str() {
                "completed" => PointState::Done,
                "cancelled" => PointState::Cancelled,
                _ => PointState::Failed(s.error.unwrap_or_else(|| s.outcome.clone())),
            },
        }
    }

    /// Before a point runs again: moves what an earlier attempt left to
    /// `attempts/<id>.<n>`, so the new run gets an empty folder and nothing is lost.
    pub fn clear_for_rerun(&self, p: &Point) -> Result<(), SweepError> {
        let dir = self.run_dir(p);
        if !dir.exists() {
            return Ok(());
        }
        let attempts = self.dir.join(ATTEMPTS_DIR);
        std::fs::create_dir_all(&attempts).map_err(|e| SweepError::io(&attempts, e))?;
        let mut n = 1;
        let mut to = attempts.join(format!("{}.{n}", p.id));
        while to.exists() {
            n += 1;
            to = attempts.join(format!("{}.{n}", p.id));
        }
        std::fs::rename(&dir, &to).map_err(|e| SweepError::io(&dir, e))
    }

    /// Takes the folder's lock for as long as the returned file lives: two processes running
    /// one sweep would run its points twice.
    pub fn lock(&self) -> Result<std::fs::File, SweepError> {
        use std::os::fd::AsRawFd;
        let path = self.dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| SweepError::io(&path, e))?;
        // SAFETY: flock on a descriptor this function owns; the lock ends with the file.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(SweepError::Folder(format!(
                "another certlab process is running the sweep in {}",
                self.dir.display()
            )));
        }
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::SUMMARY_FILE;

    fn sweep_in(tmp: &Path) -> PathBuf {
        std::fs::write(
            tmp.join("base.toml"),
            "name = \"b\"\n[dataset]\nkind = \"moons\"\n[train]\nepochs = 1\n",
        )
        .unwrap();
        let spec = tmp.join("s.toml");
        std::fs::write(
            &spec,
            "name = \"s\"\nbase = \"base.toml\"\nseeds = [0, 1]\n[[axis]]\nkey = \"optimizer.lr\"\nvalues = [0.01, 0.1]\n",
        )
        .unwrap();
        spec
    }

    #[test]
    fn a_new_folder_reopens_as_the_same_sweep_and_refuses_a_changed_one() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = sweep_in(tmp.path());
        let out = tmp.path().join("out");
        let f = SweepFolder::create_or_open(&spec, &out).unwrap();
        assert_eq!(f.points.len(), 4);
        let lines = std::fs::read_to_string(f.dir.join(POINTS_FILE)).unwrap();
        assert_eq!(lines.lines().count(), 4);
        let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
        assert_eq!(first["id"], "p0000-s0");
        assert_eq!(first["overrides"]["optimizer.lr"], 0.01);
        assert_eq!(first["run"], "p0000-s0");
        // Opened from its own folder (base.toml beside it), it expands to the same points.
        let again = SweepFolder::open(&f.dir).unwrap();
        assert_eq!(again.points, f.points);
        SweepFolder::create_or_open(&spec, &out).unwrap();
        // The same name with other values is refused, naming the point.
        let text = std::fs::read_to_string(&spec)
            .unwrap()
            .replace("0.1]", "0.2]");
        std::fs::write(&spec, text).unwrap();
        let e = SweepFolder::create_or_open(&spec, &out)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("different sweep") && e.contains("p0001-s0"),
            "{e}"
        );
    }

    #[test]
    fn states_come_from_the_run_folders_and_reruns_keep_old_attempts() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = sweep_in(tmp.path());
        let f = SweepFolder::create_or_open(&spec, &tmp.path().join("out")).unwrap();
        let p = &f.points[1];
        assert_eq!(f.state(p), PointState::Pending);
        std::fs::create_dir_all(f.run_dir(p)).unwrap();
        assert_eq!(f.state(p), PointState::Incomplete);
        let summary = |outcome: &str| {
            format!("{{\"outcome\":\"{outcome}\",\"elapsed_s\":1.0,\"device\":\"cpu\"}}")
        };
        std::fs::write(f.run_dir(p).join(SUMMARY_FILE), summary("cancelled")).unwrap();
        assert_eq!(f.state(p), PointState::Cancelled);
        assert!(f.state(p).needs_run(false));
        f.clear_for_rerun(p).unwrap();
        assert_eq!(f.state(p), PointState::Pending);
        assert!(f.dir.join("attempts/p0000-s1.1/summary.json").exists());
        std::fs::create_dir_all(f.run_dir(p)).unwrap();
        std::fs::write(f.run_dir(p).join(SUMMARY_FILE), summary("completed")).unwrap();
        assert_eq!(f.state(p), PointState::Done);
        assert!(!f.state(p).needs_run(true));
        let _held = f.lock().unwrap();
        assert!(f
            .lock()
            .unwrap_err()
            .to_string()
            .contains("another certlab"));
    }
}
