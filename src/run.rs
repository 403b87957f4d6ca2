//! Run folders: `config.toml`, `metrics.jsonl` (appended and flushed per evaluation),
//! `model.safetensors` (last) and `model_best.safetensors`, `log.txt`, and `summary.json`
//! (written when the run ends: outcome and timing).
use crate::config::{ConfigError, ExperimentConfig};
use crate::metrics::EvalRecord;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub const CONFIG_FILE: &str = "config.toml";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const MODEL_FILE: &str = "model.safetensors";
pub const BEST_MODEL_FILE: &str = "model_best.safetensors";
pub const LOG_FILE: &str = "log.txt";
pub const SUMMARY_FILE: &str = "summary.json";

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{path} is not a run folder: {reason}")]
    NotARun { path: PathBuf, reason: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{path}: line {line} is not a metrics record: {message}")]
    BadMetrics {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// The reason is in the message and not a `source`, so `{:#}` says it once.
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
}

/// How a finished run ended, as written to `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// `completed`, `cancelled` or `failed`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub elapsed_s: f64,
    pub device: String,
}

/// Writes one run folder.
pub struct RunWriter {
    dir: PathBuf,
    metrics: File,
    log: File,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

impl RunWriter {
    /// Creates `dir` (which must not already hold a run: nothing written before is overwritten)
    /// and writes `config.toml`.
    pub fn create(dir: &Path, cfg: &ExperimentConfig) -> io::Result<Self> {
        if dir.join(METRICS_FILE).exists() || dir.join(MODEL_FILE).exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} already holds a run; choose another --out folder (nothing was overwritten)",
                    dir.display()
                ),
            ));
        }
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let cfg_path = dir.join(CONFIG_FILE);
        cfg.save(&cfg_path).map_err(io_err(&cfg_path))?;
        let open = |name: &str| {
            let p = dir.join(name);
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .map_err(io_err(&p))
        };
        Ok(RunWriter {
            dir: dir.to_path_buf(),
            metrics: open(METRICS_FILE)?,
            log: open(LOG_FILE)?,
        })
    }

    /// Creates a fresh folder `base/<name>-<UTC timestamp>` (with a suffix if taken).
    pub fn create_in(base: &Path, cfg: &ExperimentConfig) -> io::Result<Self> {
        let stamp = utc_stamp(SystemTime::now());
        let mut dir = base.join(format!("{}-{stamp}", cfg.name));
        let mut n = 2;
        while dir.exists() {
            dir = base.join(format!("{}-{stamp}-{n}", cfg.name));
            n += 1;
        }
        Self::create(&dir, cfg)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn model_path(&self) -> PathBuf {
        self.dir.join(MODEL_FILE)
    }

    pub fn best_model_path(&self) -> PathBuf {
        self.dir.join(BEST_MODEL_FILE)
    }

    /// Appends one record as a line and flushes it to disk.
    pub fn append_metrics(&mut self, rec: &EvalRecord) -> io::Result<()> {
        writeln!(self.metrics, "{}", rec.to_json_line())?;
        self.metrics.flush()?;
        self.metrics.sync_data()
    }

    /// Appends a line to `log.txt`, prefixed with the UTC time. Logging never fails a run.
    pub fn log(&mut self, message: &str) {
        let _ = writeln!(self.log, "{} {message}", utc_stamp(SystemTime::now()));
        let _ = self.log.flush();
    }

    pub fn write_summary(&mut self, summary: &Summary) -> io::Result<()> {
        let p = self.dir.join(SUMMARY_FILE);
        let text = serde_json::to_string_pretty(summary).unwrap_or_default();
        std::fs::write(&p, text).map_err(io_err(&p))
    }
}

/// `YYYYMMDD-HHMMSS` in UTC.
pub fn utc_stamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A run folder read back.
#[derive(Debug, Clone)]
pub struct RunData {
    pub dir: PathBuf,
    pub config: ExperimentConfig,
    pub metrics: Vec<EvalRecord>,
    pub summary: Option<Summary>,
    /// A last line that was cut short by a crash (ignored, reported).
    pub truncated_tail: bool,
}

impl RunData {
    pub fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.dir.display().to_string())
    }
    pub fn last(&self) -> Option<&EvalRecord> {
        self.metrics.last()
    }
    pub fn status(&self) -> &str {
        match &self.summary {
            Some(s) => &s.outcome,
            None => "running or crashed",
        }
    }
}

/// A run folder's `summary.json`, if it has a readable one (a run still going, or killed, has
/// none).
pub fn read_summary(dir: &Path) -> Option<Summary> {
    std::fs::read_to_string(dir.join(SUMMARY_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
}

/// Reads a run folder. A last metrics line without its newline (cut by a crash) is skipped.
pub fn load_run(dir: &Path) -> Result<RunData, RunError> {
    let cfg_path = dir.join(CONFIG_FILE);
    if !cfg_path.exists() {
        return Err(RunError::NotARun {
            path: dir.to_path_buf(),
            reason: format!("no {CONFIG_FILE}"),
        });
    }
    let config = ExperimentConfig::load(&cfg_path)?;
    let mpath = dir.join(METRICS_FILE);
    let mut metrics = Vec::new();
    let mut truncated_tail = false;
    if mpath.exists() {
        let text = std::fs::read_to_string(&mpath).map_err(|error| RunError::Io {
            path: mpath.clone(),
            error,
        })?;
        let complete = text.ends_with('\n');
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<EvalRecord>(line) {
                Ok(r) => metrics.push(r),
                Err(_) if i + 1 == lines.len() && !complete => truncated_tail = true,
                Err(e) => {
                    return Err(RunError::BadMetrics {
                        path: mpath,
                        line: i + 1,
                        message: e.to_string(),
                    })
                }
            }
        }
    }
    let summary = read_summary(dir);
    Ok(RunData {
        dir: dir.to_path_buf(),
        config,
        metrics,
        summary,
        truncated_tail,
    })
}

/// Run folders directly under `dir` (or `dir` itself if it is one), sorted by name.
/// Folders that fail to load come back as errors, so a listing can say why.
pub fn list_runs(dir: &Path) -> io::Result<Vec<Result<RunData, RunError>>> {
    if dir.join(CONFIG_FILE).exists() {
        return Ok(vec![load_run(dir)]);
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.join(CONFIG_FILE).exists())
        .collect();
    dirs.sort();
    Ok(dirs.iter().map(|d| load_run(d)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamp_known_dates() {
        let t = |s: u64| UNIX_EPOCH + std::time::Duration::from_secs(s);
        assert_eq!(utc_stamp(t(0)), "19700101-000000");
        assert_eq!(utc_stamp(t(951_782_400)), "20000229-000000");
        assert_eq!(utc_stamp(t(1_795_000_000)), "20261118-110640");
    }

    #[test]
    fn writer_refuses_to_overwrite_and_reader_skips_cut_tail() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = ExperimentConfig::default_experiment();
        let dir = tmp.path().join("r");
        let mut w = RunWriter::create(&dir, &cfg).unwrap();
        for epoch in 1..=2 {
            w.append_metrics(&EvalRecord {
                epoch,
                clean_acc: 0.5,
                ..EvalRecord::default()
            })
            .unwrap();
        }
        drop(w);
        let err = RunWriter::create(&dir, &cfg).err().unwrap().to_string();
        assert!(err.contains("already holds a run"), "{err}");
        assert_eq!(
            load_run(&dir).unwrap().metrics.len(),
            2,
            "nothing was overwritten"
        );
        // A crash mid-line: the complete lines survive.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join(METRICS_FILE))
            .unwrap();
        write!(f, "{{\"epoch\":3,\"clean").unwrap();
        let run = load_run(&dir).unwrap();
        assert_eq!(run.metrics.len(), 2);
        assert!(run.truncated_tail);
        assert_eq!(run.config, cfg);
        let listed = list_runs(tmp.path()).unwrap();
        assert_eq!(listed.len(), 1);
    }

    #[test]
    fn corrupt_middle_line_is_an_error_with_line_number() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = ExperimentConfig::default_experiment();
        let w = RunWriter::create(tmp.path(), &cfg).unwrap();
        drop(w);
        std::fs::write(
            tmp.path().join(METRICS_FILE),
            "{\"epoch\":1}\nnot json\n{\"epoch\":2}\n",
        )
        .unwrap();
        let err = load_run(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains("line 2") && err.contains(METRICS_FILE),
            "{err}"
        );
    }
}
