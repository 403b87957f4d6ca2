//! The sweep file and its expansion into points: settings (one value per axis) times seeds.
//!
//! A point's config is the base preset's TOML with the `[set]` overrides, the axis values and
//! the seed written in by dotted key, then parsed and validated exactly as a preset is: an
//! unknown key, a value of the wrong type or out of range is an error naming the key and the
//! point, found before anything starts.
use super::{Point, SweepError};
use crate::config::ExperimentConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How the axes combine into settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every combination of the axes' values.
    #[default]
    Grid,
    /// The i-th value of every axis together (all axes the same length).
    Zip,
    /// `samples` settings, each axis drawn from its `range` (uniform, or log-uniform).
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    #[default]
    Linear,
    Log,
}

/// One setting the sweep varies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Axis {
    /// A dotted config key (`train.r2_weight`).
    pub key: String,
    /// The values (grid and zip).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<toml::Value>,
    /// `[low, high]` (random).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<[f64; 2]>,
    #[serde(default)]
    pub scale: Scale,
}

/// The `[slurm]` table: defaults for `--backend slurm` (flags win).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    /// `--time`, as Slurm writes it (`01:00:00`).
    pub time: Option<String>,
    pub account: Option<String>,
    /// CPUs per array task (default 2).
    pub cpus_per_task: Option<u32>,
}

/// A sweep file (`sweeps/*.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    pub name: String,
    /// The preset every point starts from, relative to the sweep file.
    pub base: PathBuf,
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    #[serde(default)]
    pub mode: Mode,
    /// Random mode: how many settings to draw.
    #[serde(default)]
    pub samples: usize,
    /// Random mode: the seed of the draw, so a sweep file always expands the same way.
    #[serde(default)]
    pub sample_seed: u64,
    #[serde(default, rename = "axis")]
    pub axes: Vec<Axis>,
    /// Fixed overrides for every point, by dotted key.
    #[serde(default)]
    pub set: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub slurm: SlurmOptions,
}

fn default_seeds() -> Vec<u64> {
    vec![0]
}

/// Keys the sweep sets itself.
const SEED_KEY: &str = "seed";
const NAME_KEY: &str = "name";

impl SweepSpec {
    pub fn load(path: &Path) -> Result<Self, SweepError> {
        let text = std::fs::read_to_string(path).map_err(|e| SweepError::Io {
            path: path.to_path_buf(),
            error: e.to_string(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self, SweepError> {
        let spec: SweepSpec = toml::from_str(text).map_err(|e| SweepError::Spec {
            origin: origin.into(),
            message: e.to_string().trim_end().to_string(),
        })?;
        spec.check_shape(origin)?;
        Ok(spec)
    }

    /// The rules a sweep file must follow before its points are built.
    fn check_shape(&self, origin: &str) -> Result<(), SweepError> {
        let bad = |message: String| {
            Err(SweepError::Spec {
                origin: origin.into(),
                message,
            })
        };
        let name_ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
        if self.name.is_empty() || !self.name.chars().all(name_ok) || self.name.starts_with('.') {
            return bad(format!(
                "`name` = {:?}: use letters, digits, '-', '_' or '.' (it names the sweep folder)",
                self.name
            ));
        }
        if self.seeds.is_empty() {
            return bad("`seeds` is empty: give at least one seed".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for s in &self.seeds {
            if !seen.insert(s) {
                return bad(format!("`seeds` lists {s} twice"));
            }
        }
        for (i, a) in self.axes.iter().enumerate() {
            let at = format!("axis {} (`{}`)", i + 1, a.key);
            if a.key == SEED_KEY || a.key == NAME_KEY {
                return bad(format!(
                    "{at}: the sweep sets `{}` itself; use `seeds`",
                    a.key
                ));
            }
            if self.axes[..i].iter().any(|b| b.key == a.key) {
                return bad(format!("{at}: the key is swept twice"));
            }
            if self.set.contains_key(&a.key) {
                return bad(format!("{at}: the key is also in [set]"));
            }
            match self.mode {
                Mode::Grid | Mode::Zip if a.values.is_empty() => {
                    return bad(format!("{at}: `values` is empty ({:?} mode)", self.mode))
                }
                Mode::Random => {
                    let Some([lo, hi]) = a.range else {
                        return bad(format!("{at}: random mode needs `range = [low, high]`"));
                    };
                    if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
                        return bad(format!("{at}: `range` = [{lo}, {hi}] is not low <= high"));
                    }
                    if a.scale == Scale::Log && lo <= 0.0 {
                        return bad(format!("{at}: a log range needs low > 0 (got {lo})"));
                    }
                }
                _ => {}
            }
        }
        if self.mode == Mode::Zip {
            if let Some(first) = self.axes.first() {
                if let Some(a) = self
                    .axes
                    .iter()
                    .find(|a| a.values.len() != first.values.len())
                {
                    return bad(format!(
                        "zip mode needs axes of one length: `{}` has {} values, `{}` has {}",
                        first.key,
                        first.values.len(),
                        a.key,
                        a.values.len()
                    ));
                }
            }
        }
        if self.mode == Mode::Random && self.samples == 0 {
            return bad("random mode needs `samples` > 0".into());
        }
        if self.set.contains_key(SEED_KEY) || self.set.contains_key(NAME_KEY) {
            return bad("[set] may not set `seed` or `name`: the sweep sets them".into());
        }
        Ok(())
    }

    /// The settings: one map from axis key to value per setting, in order.
    pub fn settings(&self) -> Vec<BTreeMap<String, toml::Value>> {
        match self.mode {
            Mode::Grid => {
                let mut out = vec![BTreeMap::new()];
                for a in &self.axes {
                    out = out
                        .into_iter()
                        .flat_map(|s| {
                            a.values.iter().map(move |v| {
                                let mut s = s.clone();
                                s.insert(a.key.clone(), v.clone());
                                s
                            })
                        })
                        .collect();
                }
                out
            }
            Mode::Zip => {
                let n = self.axes.first().map_or(1, |a| a.values.len());
                (0..n)
                    .map(|i| {
                        self.axes
                            .iter()
                            .map(|a| (a.key.clone(), a.values[i].clone()))
                            .collect()
                    })
                    .collect()
            }
            Mode::Random => {
                let mut rng = SplitMix64(self.sample_seed);
                (0..self.samples)
                    .map(|_| {
                        self.axes
                            .iter()
                            .map(|a| {
                                let [lo, hi] = a.range.unwrap_or([0.0, 1.0]);
                                let u = rng.next_f64();
                                let x = match a.scale {
                                    Scale::Linear => lo + u * (hi - lo),
                                    Scale::Log => (lo.ln() + u * (hi.ln() - lo.ln())).exp(),
                                };
                                (a.key.clone(), toml::Value::Float(x))
                            })
                            .collect()
                    })
                    .collect()
            }
        }
    }

    /// Every point (settings x seeds), each with its validated config. `spec_dir` is the folder
    /// of the sweep file (the base preset is relative to it).
    pub fn expand(&self, spec_dir: &Path) -> Result<Vec<Point>, SweepError> {
        let base_path = spec_dir.join(&self.base);
        let base_text = std::fs::read_to_string(&base_path).map_err(|e| SweepError::Io {
            path: base_path.clone(),
            error: e.to_string(),
        })?;
        self.expand_from(&base_text, &base_path.display().to_string())
    }

    /// [`SweepSpec::expand`] with the base preset's text given.
    pub fn expand_from(
        &self,
        base_text: &str,
        base_origin: &str,
    ) -> Result<Vec<Point>, SweepError> {
        // The base must be a valid preset on its own; its full form (every key, defaults
        // filled in) says which dotted keys exist.
        let base = ExperimentConfig::from_toml_str(base_text, base_origin)
            .map_err(|e| SweepError::Base(e.to_string()))?;
        // Keys a preset may leave out (absent means "the default") are settable too: the
        // probe fills them in so that they appear in the full form.
        let mut probe = base.clone();
        probe.dataset.val_size.get_or_insert(0);
        if probe.eval.smoothing.is_off() {
            probe.eval.smoothing.sigma = vec![0.25];
        }
        let full: toml::Table =
            toml::from_str(&probe.to_toml_string()).map_err(|e| SweepError::Base(e.to_string()))?;
        let base_table: toml::Table =
            toml::from_str(base_text).map_err(|e| SweepError::Base(e.to_string()))?;
        let mut points = Vec::new();
        for (setting_index, setting) in self.settings().into_iter().enumerate() {
            for &seed in &self.seeds {
                let id = format!("p{setting_index:04}-s{seed}");
                let mut table = base_table.clone();
                let overrides = self.set.iter().chain(setting.iter());
                for (key, value) in overrides {
                    // A draw from a range lands between integers; an integer setting rounds it.
                    let value = match value {
                        toml::Value::Float(x)
                            if self.mode == Mode::Random && is_integer(&full, key) =>
                        {
                            toml::Value::Integer(x.round() as i64)
                        }
                        v => v.clone(),
                    };
                    set_key(&mut table, &full, key, value).map_err(|message| {
                        SweepError::Point {
                            point: id.clone(),
                            key: key.clone(),
                            message,
                        }
                    })?;
                }
                table.insert(SEED_KEY.into(), toml::Value::Integer(seed as i64));
                table.insert(
                    NAME_KEY.into(),
                    toml::Value::String(format!("{}-{id}", self.name)),
                );
                let config = point_config(&table, &id, &setting)?;
                points.push(Point {
                    id,
                    setting_index,
                    setting: setting.clone(),
                    seed,
                    config,
                });
            }
        }
        Ok(points)
    }
}

/// Parses and validates one point's table; the first problem names its key and the point.
fn point_config(
    table: &toml::Table,
    id: &str,
    setting: &BTreeMap<String, toml::Value>,
) -> Result<ExperimentConfig, SweepError> {
    let text = toml::to_string(table).map_err(|e| SweepError::Point {
        point: id.into(),
        key: "(whole config)".into(),
        message: e.to_string(),
    })?;
    let cfg: ExperimentConfig = toml::from_str(&text).map_err(|e| SweepError::Point {
        point: id.into(),
        key: setting.keys().cloned().collect::<Vec<_>>().join(", "),
        message: e.message().to_string(),
    })?;
    let problems = cfg.validate();
    if let Some(p) = problems.first() {
        return Err(SweepError::Point {
            point: id.into(),
            key: p.field.clone(),
            message: p.message.clone(),
        });
    }
    Ok(cfg)
}

/// Whether the dotted `key` holds an integer in `full` (a config as a TOML table).
pub fn is_integer(full: &toml::Table, key: &str) -> bool {
    let mut here = full;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        match here.get(*part) {
            Some(toml::Value::Table(t)) if i + 1 < parts.len() => here = t,
            Some(v) if i + 1 == parts.len() => return v.is_integer(),
            _ => return false,
        }
    }
    false
}

/// Writes `value` at the dotted `key` of `table`. The key must exist in `full` (the base
/// config with every default), so a typo is caught here rather than at serde's generic
/// "unknown field"; an integer value is accepted where the config holds a float.
fn set_key(
    table: &mut toml::Table,
    full: &toml::Table,
    key: &str,
    value: toml::Value,
) -> Result<(), String> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut here = table;
    let mut known = full;
    for (i, part) in parts.iter().enumerate() {
        let Some(known_value) = known.get(*part) else {
            let prefix = parts[..i].join(".");
            let mut keys: Vec<String> = known
                .iter()
                .filter(|(_, v)| !v.is_table())
                .map(|(k, _)| {
                    if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    }
                })
                .collect();
            keys.sort();
            return Err(format!(
                "unknown config key; keys here: {}",
                keys.join(", ")
            ));
        };
        if i + 1 == parts.len() {
            if known_value.is_table() {
                return Err("names a section, not a setting".into());
            }
            let value = match (known_value, value) {
                (toml::Value::Float(_), toml::Value::Integer(n)) => toml::Value::Float(n as f64),
                (toml::Value::Integer(_), toml::Value::Float(x)) if x.fract() == 0.0 => {
                    toml::Value::Integer(x as i64)
                }
                (toml::Value::Integer(_), toml::Value::Float(x)) => {
                    return Err(format!("expects an integer, got {x}"))
                }
                (_, v) => v,
            };
            here.insert(part.to_string(), value);
            return Ok(());
        }
        let Some(next_known) = known_value.as_table() else {
            return Err(format!(
                "`{}` is a setting, not a section",
                parts[..=i].join(".")
            ));
        };
        let entry = here
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(next) = entry.as_table_mut() else {
            return Err(format!(
                "`{}` is not a section in the base",
                parts[..=i].join(".")
            ));
        };
        here = next;
        known = next_known;
    }
    Ok(())
}

/// A small deterministic generator (Steele et al. 2014's SplitMix64) for random-mode draws:
/// a sweep file expands to the same points on every machine and every resume.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
name = "base"
[dataset]
kind = "moons"
[train]
method = "crown-ibp"
epochs = 3
eps = 0.05
[eval]
eps = [0.05]
bounds = ["ibp"]
"#;

    fn spec(text: &str) -> SweepSpec {
        SweepSpec::parse(text, "test.toml").unwrap()
    }

    #[test]
    fn grid_is_the_cartesian_product_times_seeds() {
        let s = spec(
            r#"name = "g"
base = "b.toml"
seeds = [0, 1, 2]
[[axis]]
key = "train.r2_weight"
values = [0.0, 0.01, 0.1, 0.5]
[[axis]]
key = "optimizer.lr"
values = [0.001, 0.01]
[set]
"train.epochs" = 2
"#,
        );
        let pts = s.expand_from(BASE, "b.toml").unwrap();
        assert_eq!(pts.len(), 4 * 2 * 3);
        // Every (r2, lr) pair appears with every seed, exactly once.
        let mut seen = std::collections::BTreeSet::new();
        for p in &pts {
            assert_eq!(p.config.train.epochs, 2, "[set] applies to every point");
            assert_eq!(p.config.seed, p.seed);
            assert_eq!(p.config.name, format!("g-{}", p.id));
            let key = (
                p.config.train.r2_weight.to_bits(),
                p.config.optimizer.lr.to_bits(),
                p.seed,
            );
            assert!(seen.insert(key), "duplicate point {}", p.id);
        }
        assert_eq!(pts[0].id, "p0000-s0");
        assert_eq!(pts[23].id, "p0007-s2");
        // Points of one setting share it.
        assert_eq!(pts[3].setting, pts[5].setting);
    }

    #[test]
    fn zip_pairs_values_and_rejects_unequal_axes() {
        let text = r#"name = "z"
base = "b.toml"
mode = "zip"
[[axis]]
key = "train.r1_weight"
values = [0.0, 0.1, 0.5]
[[axis]]
key = "train.r2_weight"
values = [0.0, 0.2, 0.4]
"#;
        let pts = spec(text).expand_from(BASE, "b.toml").unwrap();
        assert_eq!(pts.len(), 3);
        assert_eq!(pts[1].config.train.r1_weight, 0.1);
        assert_eq!(pts[1].config.train.r2_weight, 0.2);
        assert_eq!(pts[2].config.train.r1_weight, 0.5);
        assert_eq!(pts[2].config.train.r2_weight, 0.4);
        let bad = text.replace("values = [0.0, 0.2, 0.4]", "values = [0.0, 0.2]");
        let e = SweepSpec::parse(&bad, "t").unwrap_err().to_string();
        assert!(e.contains("one length"), "{e}");
    }

    #[test]
    fn random_draws_inside_the_range_log_uniformly_and_reproducibly() {
        let text = r#"name = "r"
base = "b.toml"
mode = "random"
samples = 400
[[axis]]
key = "optimizer.lr"
range = [0.0001, 0.1]
scale = "log"
"#;
        let pts = spec(text).expand_from(BASE, "b.toml").unwrap();
        assert_eq!(pts.len(), 400);
        let lrs: Vec<f64> = pts.iter().map(|p| p.config.optimizer.lr).collect();
        assert!(lrs.iter().all(|&x| (1e-4..=0.1).contains(&x)));
        // Log-uniform: about half the draws below the geometric midpoint sqrt(1e-5).
        let below = lrs.iter().filter(|&&x| x < (1e-4f64 * 0.1).sqrt()).count();
        assert!(
            (150..250).contains(&below),
            "{below} of 400 below the log midpoint"
        );
        let again = spec(text).expand_from(BASE, "b.toml").unwrap();
        assert_eq!(again[17].config.optimizer.lr, lrs[17]);
        // An integer setting drawn from a range is rounded, and stays inside it.
        let ints = spec(
            "name = \"i\"\nbase = \"b\"\nmode = \"random\"\nsamples = 50\n[[axis]]\nkey = \"train.epochs\"\nrange = [2.0, 9.0]\n",
        )
        .expand_from(BASE, "b")
        .unwrap();
        assert!(ints
            .iter()
            .all(|p| (2..=9).contains(&p.config.train.epochs)));
        assert!(ints
            .iter()
            .any(|p| p.config.train.epochs != ints[0].config.train.epochs));
    }

    #[test]
    fn an_unknown_key_or_bad_value_names_the_key_and_the_point() {
        let s = spec(
            "name = \"u\"\nbase = \"b\"\n[[axis]]\nkey = \"train.r2_wieght\"\nvalues = [0.1]\n",
        );
        let e = s.expand_from(BASE, "b").unwrap_err().to_string();
        assert!(
            e.contains("train.r2_wieght") && e.contains("p0000-s0"),
            "{e}"
        );
        assert!(e.contains("r2_weight"), "lists the keys that exist: {e}");
        let s = spec(
            "name = \"u\"\nbase = \"b\"\nseeds = [4]\n[[axis]]\nkey = \"train.eps\"\nvalues = [0.1, -1.0]\n",
        );
        let e = s.expand_from(BASE, "b").unwrap_err().to_string();
        assert!(e.contains("train.eps") && e.contains("p0001-s4"), "{e}");
        let s =
            spec("name = \"u\"\nbase = \"b\"\n[[axis]]\nkey = \"train.epochs\"\nvalues = [1.5]\n");
        let e = s.expand_from(BASE, "b").unwrap_err().to_string();
        assert!(e.contains("train.epochs") && e.contains("integer"), "{e}");
        let s = spec("name = \"u\"\nbase = \"b\"\n[[axis]]\nkey = \"train\"\nvalues = [1]\n");
        let e = s.expand_from(BASE, "b").unwrap_err().to_string();
        assert!(e.contains("section"), "{e}");
    }

    #[test]
    fn keys_a_preset_may_leave_out_can_be_swept() {
        // `dataset.val_size` and `eval.smoothing` are absent from a preset's full form when
        // they hold their default; a sweep still sets them (and a typo there is still caught).
        let s = spec(
            "name = \"v\"\nbase = \"b\"\n[[axis]]\nkey = \"dataset.val_size\"\nvalues = [0, 300]\n[set]\n\"eval.smoothing.sigma\" = [0.5]\n\"eval.smoothing.n\" = 500\n",
        );
        let pts = s.expand_from(BASE, "b").unwrap();
        assert_eq!(pts[0].config.dataset.val_size, Some(0));
        assert_eq!(pts[1].config.dataset.val_size, Some(300));
        assert_eq!(pts[1].config.eval.smoothing.sigma, vec![0.5]);
        assert_eq!(pts[1].config.eval.smoothing.n, 500);
        let s = spec(
            "name = \"v\"\nbase = \"b\"\n[[axis]]\nkey = \"dataset.val_sise\"\nvalues = [1]\n",
        );
        let e = s.expand_from(BASE, "b").unwrap_err().to_string();
        assert!(e.contains("val_size"), "lists the optional key: {e}");
    }

    #[test]
    fn malformed_sweep_files_are_refused_with_the_reason() {
        for (text, want) in [
            ("name = \"a b\"\nbase = \"b\"", "name"),
            ("name = \"a\"\nbase = \"b\"\nseeds = []", "seeds"),
            ("name = \"a\"\nbase = \"b\"\nseeds = [1, 1]", "twice"),
            ("name = \"a\"\nbase = \"b\"\nmode = \"random\"\nsamples = 3\n[[axis]]\nkey = \"optimizer.lr\"\nrange = [0.0, 1.0]\nscale = \"log\"", "low > 0"),
            ("name = \"a\"\nbase = \"b\"\nmode = \"random\"\n[[axis]]\nkey = \"optimizer.lr\"\nvalues = [1.0]", "range"),
            ("name = \"a\"\nbase = \"b\"\n[[axis]]\nkey = \"seed\"\nvalues = [1]", "seeds"),
            ("name = \"a\"\nbase = \"b\"\nmode = \"spiral\"", "spiral"),
            ("name = \"a\"\nbase = \"b\"\nbogus = 1", "bogus"),
        ] {
            let e = SweepSpec::parse(text, "t").unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
