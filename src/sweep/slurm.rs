//! The Slurm backend: one job array, one task per point, each task running
//! `certlab sweep run-point DIR ID` on its node. Run folders are written straight into the
//! sweep folder, which must be on a file system the nodes share. `certlab sweep status`
//! combines what `squeue` and `sacct` say about the tasks with what the folders say.
use super::{SweepError, SweepFolder};
use crate::config::DeviceChoice;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const SLURM_DIR: &str = "slurm";
pub const SBATCH_FILE: &str = "array.sbatch";
/// One line per submission: the job id and the points it was given.
pub const JOBS_FILE: &str = "jobs.txt";

/// The Slurm settings of one submission (flags, else the sweep file's `[slurm]` table).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlurmArgs {
    pub partition: Option<String>,
    pub time: Option<String>,
    pub account: Option<String>,
    pub cpus_per_task: u32,
    /// The certlab binary the tasks run (an absolute path on the shared file system).
    pub exe: PathBuf,
}

/// Writes `slurm/array.sbatch` for the points at `indices` (indices into the folder's points).
pub fn write_sbatch(
    folder: &SweepFolder,
    args: &SlurmArgs,
    indices: &[usize],
) -> Result<PathBuf, SweepError> {
    let dir = abs(&folder.dir)?;
    let slurm = dir.join(SLURM_DIR);
    let logs = slurm.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| SweepError::io(&logs, e))?;
    let text = sbatch_text(folder, &dir, args, indices);
    let path = slurm.join(SBATCH_FILE);
    std::fs::write(&path, text).map_err(|e| SweepError::io(&path, e))?;
    Ok(path)
}

fn abs(p: &Path) -> Result<PathBuf, SweepError> {
    std::fs::canonicalize(p).map_err(|e| SweepError::io(p, e))
}

/// The array indices in Slurm's compact form: `0-11`, or `1,4-6,9`.
fn array_spec(indices: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < indices.len() {
        let start = indices[i];
        let mut end = start;
        while i + 1 < indices.len() && indices[i + 1] == end + 1 {
            i += 1;
            end = indices[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn sbatch_text(folder: &SweepFolder, dir: &Path, args: &SlurmArgs, indices: &[usize]) -> String {
    let mut s = String::from("#!/bin/bash\n");
    let mut opt = |k: &str, v: &str| s.push_str(&format!("#SBATCH --{k}={v}\n"));
    opt("job-name", &format!("certlab-{}", folder.spec.name));
    opt("array", &array_spec(indices));
    opt("cpus-per-task", &args.cpus_per_task.max(1).to_string());
    opt(
        "output",
        &format!("{}/{SLURM_DIR}/logs/%A_%a.out", dir.display()),
    );
    if let Some(p) = &args.partition {
        opt("partition", p);
    }
    if let Some(t) = &args.time {
        opt("time", t);
    }
    if let Some(a) = &args.account {
        opt("account", a);
    }
    let cuda = folder
        .points
        .first()
        .is_some_and(|p| p.config.device == DeviceChoice::Cuda);
    if cuda {
        opt("gres", "gpu:1");
    }
    s.push_str("\n# One array task per point; the task index picks the point's id.\nset -euo pipefail\nIDS=(");
    for p in &folder.points {
        s.push_str(&format!(" {}", p.id));
    }
    s.push_str(" )\n");
    s.push_str(&format!(
        "exec {} sweep run-point {} \"${{IDS[$SLURM_ARRAY_TASK_ID]}}\" --threads \"${{SLURM_CPUS_PER_TASK:-1}}\"\n",
        quote(&args.exe.display().to_string()),
        quote(&dir.display().to_string())
    ));
    s
}

/// Submits the points that need a run and are not queued or running already; returns the job
/// id (None when nothing needed submitting).
pub fn submit(
    folder: &SweepFolder,
    args: &SlurmArgs,
    retry_failed: bool,
) -> Result<Option<String>, SweepError> {
    let live = slurm_status(folder)?;
    let indices: Vec<usize> = folder
        .points
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            let queued = live.get(&p.id).is_some_and(|s| {
                matches!(
                    s.as_str(),
                    "PENDING" | "RUNNING" | "CONFIGURING" | "COMPLETING"
                )
            });
            !queued && folder.state(p).needs_run(retry_failed)
        })
        .map(|(i, _)| i)
        .collect();
    if indices.is_empty() {
        return Ok(None);
    }
    let path = write_sbatch(folder, args, &indices)?;
    let out = Command::new("sbatch")
        .arg("--parsable")
        .arg(&path)
        .output()
        .map_err(|e| SweepError::Slurm(format!("cannot run sbatch: {e} (is Slurm installed?)")))?;
    if !out.status.success() {
        return Err(SweepError::Slurm(format!(
            "sbatch refused {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    // `--parsable` prints `jobid` or `jobid;cluster`.
    let job = stdout.trim().split(';').next().unwrap_or("").to_string();
    if job.is_empty() || !job.chars().all(|c| c.is_ascii_digit()) {
        return Err(SweepError::Slurm(format!(
            "sbatch printed no job id: {stdout:?}"
        )));
    }
    let jobs = folder.dir.join(SLURM_DIR).join(JOBS_FILE);
    let mut text = std::fs::read_to_string(&jobs).unwrap_or_default();
    text.push_str(&format!("{job} {}\n", array_spec(&indices)));
    std::fs::write(&jobs, text).map_err(|e| SweepError::io(&jobs, e))?;
    Ok(Some(job))
}

/// The job ids this sweep submitted, oldest first.
fn job_ids(folder: &SweepFolder) -> Vec<String> {
    std::fs::read_to_string(folder.dir.join(SLURM_DIR).join(JOBS_FILE))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

/// Slurm's latest word on each point's task (`PENDING`, `RUNNING`, `COMPLETED`, `FAILED`, ...),
/// keyed by point id: `sacct`'s record, overridden by `squeue` for tasks still queued. Points
/// of an array still pending as a range (`123_[4-9]`) are expanded.
pub fn slurm_status(folder: &SweepFolder) -> Result<BTreeMap<String, String>, SweepError> {
    let mut by_index: BTreeMap<usize, String> = BTreeMap::new();
    for job in job_ids(folder) {
        if let Some(out) = query(
            "sacct",
            &["-n", "-P", "-X", "-o", "JobID,State", "-j", &job],
        ) {
            parse_task_lines(&out, &job, &mut by_index);
        }
        if let Some(out) = query("squeue", &["-h", "-t", "all", "-o", "%i|%T", "-j", &job]) {
            parse_task_lines(&out, &job, &mut by_index);
        }
    }
    Ok(by_index
        .into_iter()
        .filter_map(|(i, s)| folder.points.get(i).map(|p| (p.id.clone(), s)))
        .collect())
}

fn query(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Parses `JOB_TASK|STATE` lines (`12_3|RUNNING`, `12_[4-6,8]|PENDING`) into task states.
fn parse_task_lines(text: &str, job: &str, out: &mut BTreeMap<usize, String>) {
    for line in text.lines() {
        let Some((id, state)) = line.split_once('|') else {
            continue;
        };
        // sacct says `CANCELLED by 0`; keep the first word.
        let state = state.split_whitespace().next().unwrap_or("").to_string();
        let Some(task) = id.strip_prefix(&format!("{job}_")) else {
            continue;
        };
        let task = task.trim_start_matches('[').trim_end_matches(']');
        let task = task.split('%').next().unwrap_or("");
        for part in task.split(',') {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                for i in a..=b.min(a + 100_000) {
                    out.insert(i, state.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_specs_are_compact_ranges() {
        assert_eq!(array_spec(&[0, 1, 2, 3]), "0-3");
        assert_eq!(array_spec(&[1, 4, 5, 6, 9]), "1,4-6,9");
        assert_eq!(array_spec(&[7]), "7");
    }

    #[test]
    fn task_lines_of_squeue_and_sacct_parse_into_states() {
        let mut m = BTreeMap::new();
        parse_task_lines(
            "41_0|COMPLETED\n41_1|CANCELLED by 0\n41_[3-5,8%2]|PENDING\n41_2|RUNNING\n40_9|FAILED\n",
            "41",
            &mut m,
        );
        assert_eq!(m[&0], "COMPLETED");
        assert_eq!(m[&1], "CANCELLED");
        assert_eq!(m[&2], "RUNNING");
        assert_eq!(m[&4], "PENDING");
        assert_eq!(m[&8], "PENDING");
        assert!(!m.contains_key(&9), "another job's task is not this job's");
        assert!(!m.contains_key(&6));
    }

    #[test]
    fn the_sbatch_file_has_one_task_per_point_and_the_options() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("b.toml"),
            "name = \"b\"\ndevice = \"cuda\"\n[dataset]\nkind = \"moons\"\n",
        )
        .unwrap();
        let spec = tmp.path().join("s.toml");
        std::fs::write(
            &spec,
            "name = \"s\"\nbase = \"b.toml\"\nseeds = [0, 1]\n[[axis]]\nkey = \"optimizer.lr\"\nvalues = [0.1, 0.2]\n",
        )
        .unwrap();
        let f = SweepFolder::create_or_open(&spec, tmp.path()).unwrap();
        let args = SlurmArgs {
            partition: Some("gpu".into()),
            time: Some("01:00:00".into()),
            account: Some("lab".into()),
            cpus_per_task: 4,
            exe: PathBuf::from("/opt/certlab"),
        };
        let path = write_sbatch(&f, &args, &[0, 1, 2, 3]).unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        for want in [
            "#SBATCH --array=0-3\n",
            "#SBATCH --cpus-per-task=4\n",
            "#SBATCH --partition=gpu\n",
            "#SBATCH --time=01:00:00\n",
            "#SBATCH --account=lab\n",
            "#SBATCH --gres=gpu:1\n",
            "IDS=( p0000-s0 p0000-s1 p0001-s0 p0001-s1 )",
            "exec '/opt/certlab' sweep run-point",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        // The array index selects the id: bash picks IDS[2] = p0001-s0 for task 2.
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "{}\necho ${{IDS[2]}}",
                text.lines().find(|l| l.starts_with("IDS=")).unwrap()
            ))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "p0001-s0");
    }
}
