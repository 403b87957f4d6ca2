//! What the window writes into `<runs>/exports/`: the table of runs as CSV, plots as PNG.
use super::panels::cross_norm::{cross_record, heat_map};
use super::panels::designer::method_label;
use super::plots::short_number;
use super::series::{cert_methods, RunSeries};
use crate::metrics;
use crate::run;
use std::path::{Path, PathBuf};

/// The status of a run that has not ended (beside the outcome names of `summary.json`).
const RUNNING: &str = "running";

/// One run's final numbers as table cells.
pub struct SummaryRow {
    /// data, model, method, train eps, eval eps, epochs, status, wall, split, clean, PGD
    pub cells: Vec<String>,
    pub cert: Vec<(String, f64)>,
}

/// Seconds as `42 s`, `3m05s` or `1h02m`.
pub(crate) fn wall_label(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// A fraction as a percentage with one decimal.
pub(crate) fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

/// The run browser's row of `run`.
pub fn summary_row(run: &RunSeries) -> SummaryRow {
    let c = &run.config;
    let epochs = run.last().map_or(0, |r| r.epoch);
    let last = run.reported();
    let model = if !c.model.arch.uses_hidden() {
        c.model.arch.name().to_string()
    } else {
        format!(
            "{} {}",
            c.model.arch.name(),
            c.model
                .hidden
                .iter()
                .map(|h| h.to_string())
                .collect::<Vec<_>>()
                .join("x")
        )
    };
    let eps = if c.train.method.uses_eps() {
        format!("{} {}", short_number(c.train.eps), c.train.norm.name())
    } else {
        "–".into()
    };
    SummaryRow {
        cells: vec![
            c.dataset.kind.name().to_string(),
            model,
            method_label(c.train.method).to_string(),
            eps,
            run.eval_at().unwrap_or_else(|| "–".into()),
            format!("{epochs}/{}", c.train.epochs),
            run.outcome.clone().unwrap_or_else(|| RUNNING.into()),
            run.wall_secs().map_or("–".into(), wall_label),
            last.map_or("–", metrics::split_label).to_string(),
            last.map_or("–".into(), |r| pct(r.clean_acc)),
            last.and_then(|r| r.pgd_acc).map_or("–".into(), pct),
        ],
        cert: last
            .map(|r| r.cert_acc.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default(),
    }
}

/// The table of runs as CSV: one row per run with its final numbers (fractions, not percent).
pub fn runs_csv(runs: &[&RunSeries]) -> String {
    let cert_keys = cert_methods(runs.iter().copied());
    let lip_keys: Vec<String> = {
        let mut k: Vec<String> = runs
            .iter()
            .filter_map(|r| r.reported())
            .flat_map(|r| r.lipschitz.keys().cloned())
            .collect();
        k.sort();
        k.dedup();
        k
    };
    let mut out = String::from(
        "run,folder,dataset,arch,hidden,method,train_eps,norm,epochs_done,epochs,status,split,clean_acc,pgd_acc,eval_eps,eval_norm,wall_s",
    );
    for k in &cert_keys {
        out.push_str(&format!(",cert_{k}"));
    }
    for k in &lip_keys {
        out.push_str(&format!(",lipschitz_{k}"));
    }
    // `eval.cross_norm`: PGD accuracy per attack norm and radius (`cross_linf_0.05`).
    let cross_keys = heat_map(runs).columns;
    for (norm, eps) in &cross_keys {
        out.push_str(&format!(",cross_{norm}_{eps}"));
    }
    out.push_str(",r1_mean,r2_mean,frac_exact\n");
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    for r in runs {
        let c = &r.config;
        let epochs_done = r.last().map_or(0, |x| x.epoch);
        let last = r.reported();
        let fields = [
            csv_field(&r.name),
            csv_field(
                &r.dir
                    .as_ref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
            ),
            c.dataset.kind.name().into(),
            c.model.arch.name().into(),
            csv_field(
                &c.model
                    .hidden
                    .iter()
                    .map(|h| h.to_string())
                    .collect::<Vec<_>>()
                    .join("x"),
            ),
            c.train.method.name().into(),
            c.train.eps.to_string(),
            c.train.norm.name().into(),
            epochs_done.to_string(),
            c.train.epochs.to_string(),
            r.outcome.clone().unwrap_or_else(|| RUNNING.into()),
            last.map_or("", metrics::split_label).into(),
            opt(last.map(|x| x.clean_acc)),
            opt(last.and_then(|x| x.pgd_acc)),
            opt(last.and_then(|x| x.eval_eps)),
            c.eval.norm.name().into(),
            opt(r.wall_secs()),
        ];
        out.push_str(&fields.join(","));
        for k in &cert_keys {
            out.push(',');
            out.push_str(&opt(last.and_then(|x| x.cert_acc.get(k).copied())));
        }
        for k in &lip_keys {
            out.push(',');
            out.push_str(&opt(last.and_then(|x| x.lipschitz.get(k).copied())));
        }
        let cross = cross_record(r).map(|x| metrics::cross_norm_cells(x, ""));
        for (norm, eps) in &cross_keys {
            out.push(',');
            out.push_str(&opt(cross.as_ref().and_then(|c| {
                c.iter()
                    .find(|(n, e, _)| n == norm && e == eps)
                    .map(|c| c.2)
            })));
        }
        let gap = last.and_then(|x| x.gap.as_ref());
        out.push_str(&format!(
            ",{},{},{}\n",
            opt(gap.map(|g| g.r1_mean)),
            opt(gap.map(|g| g.r2_mean)),
            opt(gap.map(|g| g.frac_exact))
        ));
    }
    out
}

/// A CSV field, quoted when it holds a comma, a quote or a newline.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A new file `<runs_dir>/exports/<stem>-<time>.<ext>` (numbered if that one exists).
pub(crate) fn export_path(runs_dir: &Path, stem: &str, ext: &str) -> PathBuf {
    let stamp = run::utc_stamp(std::time::SystemTime::now());
    let base = runs_dir.join("exports");
    let mut p = base.join(format!("{stem}-{stamp}.{ext}"));
    let mut k = 2;
    while p.exists() {
        p = base.join(format!("{stem}-{stamp}-{k}.{ext}"));
        k += 1;
    }
    p
}

/// Writes `img` as an RGBA PNG, creating its folder.
pub(crate) fn write_png(path: &Path, img: &egui::ColorImage) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let [w, h] = img.size;
    let mut enc = png::Encoder::new(file, w as u32, h as u32);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(std::io::Error::other)?;
    let bytes: Vec<u8> = img.pixels.iter().flat_map(|c| c.to_array()).collect();
    writer
        .write_image_data(&bytes)
        .map_err(std::io::Error::other)?;
    writer.finish().map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BoundMethod, ExperimentConfig};
    use crate::metrics::EvalRecord;
    use crate::protocol::OUTCOME_COMPLETED;
    use crate::ui::series::PALETTE;

    #[test]
    fn csv_has_one_row_per_run_with_the_last_numbers() {
        let mut a = RunSeries::new(
            "a,1".into(),
            None,
            ExperimentConfig::default_experiment(),
            PALETTE[0],
        );
        let mut rec = EvalRecord {
            epoch: 1,
            clean_acc: 0.5,
            ..EvalRecord::default()
        };
        a.push(rec.clone());
        rec.epoch = 2;
        rec.clean_acc = 0.75;
        rec.pgd_acc = Some(0.5);
        rec.cert_acc.insert(BoundMethod::Ibp.name().into(), 0.25);
        a.push(rec);
        a.outcome = Some(OUTCOME_COMPLETED.into());
        let b = RunSeries::new(
            "b".into(),
            None,
            ExperimentConfig::default_experiment(),
            PALETTE[1],
        );
        let csv = runs_csv(&[&a, &b]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3, "{csv}");
        let head: Vec<&str> = lines[0].split(',').collect();
        let col = |name: &str| head.iter().position(|h| *h == name).unwrap();
        assert!(lines[1].starts_with("\"a,1\","), "{}", lines[1]);
        // Split after the quoted name.
        let row: Vec<&str> = lines[1]["\"a,1\"".len()..].split(',').collect();
        assert_eq!(row[col("clean_acc")], "0.75");
        assert_eq!(row[col("cert_ibp")], "0.25");
        assert_eq!(row[col("epochs_done")], "2");
        assert_eq!(row[col("status")], "completed");
        let row_b: Vec<&str> = lines[2].split(',').collect();
        assert_eq!(row_b[col("status")], "running");
        assert_eq!(row_b[col("cert_ibp")], "");
    }
}
