//! Datasets: IDX (MNIST, Fashion-MNIST; gzip or raw), CIFAR-10 binary batches, and 2-D toy
//! sets generated from a seed. Inputs are `f32` in [0, 1], labels `i64`.
use crate::config::{DatasetConfig, DatasetKind};
use std::io::Read;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("dataset file {path} not found{hint}")]
    Missing { path: PathBuf, hint: String },
    #[error("cannot read dataset file {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error(
        "dataset file {path} is truncated: expected {expected} bytes of {what}, found {found}"
    )]
    Truncated {
        path: PathBuf,
        what: &'static str,
        expected: usize,
        found: usize,
    },
    #[error(
        "dataset file {path} has magic number {found:#010x}, expected {expected:#010x} ({what})"
    )]
    BadMagic {
        path: PathBuf,
        found: u32,
        expected: u32,
        what: &'static str,
    },
    #[error("dataset count mismatch: {images} holds {n_images} images but {labels} holds {n_labels} labels")]
    CountMismatch {
        images: PathBuf,
        n_images: usize,
        labels: PathBuf,
        n_labels: usize,
    },
    #[error("dataset file {path}: label {label} at index {index} is out of range 0..{classes}")]
    BadLabel {
        path: PathBuf,
        label: u8,
        index: usize,
        classes: usize,
    },
    #[error("dataset file {path} has a bad header: {message}")]
    BadHeader { path: PathBuf, message: String },
    #[error("dataset folder {path} is not usable: {message}")]
    Folder { path: PathBuf, message: String },
    #[error("{0}")]
    Split(String),
}

/// A dataset in memory (CPU tensors). `*_x` is `[N, ..input_shape]`, `*_y` is `[N]` i64.
#[derive(Debug)]
pub struct Dataset {
    pub name: String,
    pub train_x: Tensor,
    pub train_y: Tensor,
    pub test_x: Tensor,
    pub test_y: Tensor,
    /// The validation split (`dataset.val_size`; empty when 0).
    pub val_x: Tensor,
    pub val_y: Tensor,
    pub input_shape: Vec<i64>,
    pub num_classes: i64,
    pub class_names: Vec<String>,
}

impl Dataset {
    pub fn train_len(&self) -> i64 {
        self.train_y.size()[0]
    }
    pub fn test_len(&self) -> i64 {
        self.test_y.size()[0]
    }
    pub fn val_len(&self) -> i64 {
        self.val_y.size()[0]
    }
    /// Per-channel mean and standard deviation of the training inputs.
    pub fn channel_stats(&self) -> (Vec<f64>, Vec<f64>) {
        let x = &self.train_x;
        let (mean, std) = if self.input_shape.len() == 3 {
            let flat = x.transpose(0, 1).reshape([self.input_shape[0], -1]);
            (
                flat.mean_dim(1, false, Kind::Float),
                flat.std_dim(1, false, false),
            )
        } else {
            (
                x.mean_dim(0, false, Kind::Float),
                x.std_dim(0, false, false),
            )
        };
        let to_vec = |t: Tensor| -> Vec<f64> {
            let t = t.to_kind(Kind::Double).clamp_min(1e-6);
            Vec::<f64>::try_from(t).unwrap_or_default()
        };
        (to_vec(mean), to_vec(std))
    }
}

const FASHION_NAMES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];
const CIFAR_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Loads the dataset a config names; `seed` drives the toy generators.
pub fn load(cfg: &DatasetConfig, seed: u64) -> Result<Dataset, DataError> {
    let mut ds = match cfg.kind {
        DatasetKind::Moons | DatasetKind::Circles | DatasetKind::Spirals | DatasetKind::Xor => {
            let n_val = cfg.val_len(0);
            toy_with_validation(cfg.kind, cfg.toy_points, n_val, cfg.toy_noise, seed)
        }
        DatasetKind::FashionMnist | DatasetKind::Mnist => {
            let names: Vec<String> = if cfg.kind == DatasetKind::FashionMnist {
                FASHION_NAMES.iter().map(|s| s.to_string()).collect()
            } else {
                (0..10).map(|d| d.to_string()).collect()
            };
            let folder = cfg.folder();
            let (train_x, train_y) = load_idx_pair(&folder, "train")?;
            let (test_x, test_y) = load_idx_pair(&folder, "t10k")?;
            let shape = train_x.size()[1..].to_vec();
            Dataset {
                name: cfg.kind.name().into(),
                val_x: train_x.narrow(0, 0, 0),
                val_y: train_y.narrow(0, 0, 0),
                train_x,
                train_y,
                test_x,
                test_y,
                input_shape: shape,
                num_classes: 10,
                class_names: names,
            }
        }
        DatasetKind::Cifar10 => load_cifar10(&cfg.folder())?,
    };
    if !cfg.kind.is_toy() {
        let n_val = cfg.val_len(ds.train_len() as usize);
        hold_out_validation(&mut ds, n_val)?;
    }
    ds.train_x = subset(&ds.train_x, cfg.train_size);
    ds.train_y = subset(&ds.train_y, cfg.train_size);
    ds.test_x = subset(&ds.test_x, cfg.test_size);
    ds.test_y = subset(&ds.test_y, cfg.test_size);
    Ok(ds)
}

/// Moves the last `n` examples of the training split (file order) to the validation split.
fn hold_out_validation(ds: &mut Dataset, n: usize) -> Result<(), DataError> {
    let len = ds.train_len();
    if n as i64 >= len {
        return Err(DataError::Split(format!(
            "dataset.val_size = {n} leaves no training examples (the training split has {len})"
        )));
    }
    let keep = len - n as i64;
    // Copies, so that a training subset (below) can release the file's whole storage.
    ds.val_x = ds.train_x.narrow(0, keep, n as i64).copy();
    ds.val_y = ds.train_y.narrow(0, keep, n as i64).copy();
    ds.train_x = ds.train_x.narrow(0, 0, keep);
    ds.train_y = ds.train_y.narrow(0, 0, keep);
    Ok(())
}

/// The first `n` rows (file order), or all when `n` is 0 or larger than the set. A subset is
/// a copy: a view would keep the whole file's storage alive.
fn subset(t: &Tensor, n: usize) -> Tensor {
    let len = t.size()[0];
    if n == 0 || n as i64 >= len {
        t.shallow_clone()
    } else {
        t.narrow(0, 0, n as i64).copy()
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    let mut bytes = Vec::new();
    let mut file = std::fs::File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            DataError::Missing {
                path: path.to_path_buf(),
                hint: String::new(),
            }
        } else {
            DataError::Io {
                path: path.to_path_buf(),
                message: e.to_string(),
            }
        }
    })?;
    file.read_to_end(&mut bytes).map_err(|e| DataError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::Io {
                path: path.to_path_buf(),
                message: format!("gzip stream is damaged or truncated ({e})"),
            })?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

/// `folder/{prefix}-images-idx3-ubyte[.gz]` (also the `prefix-images.idx3-ubyte` spelling).
fn find_idx(folder: &Path, prefix: &str, what: &str, dims: u8) -> Result<PathBuf, DataError> {
    let stems = [
        format!("{prefix}-{what}-idx{dims}-ubyte"),
        format!("{prefix}-{what}.idx{dims}-ubyte"),
    ];
    for stem in &stems {
        for ext in ["", ".gz"] {
            let p = folder.join(format!("{stem}{ext}"));
            if p.exists() {
                return Ok(p);
            }
        }
    }
    Err(DataError::Missing {
        path: folder.join(format!("{}[.gz]", stems[0])),
        hint: if folder == Path::new(crate::config::FASHION_MNIST_DIR) {
            " (install the Debian package `dataset-fashion-mnist`, or set dataset.path)".into()
        } else {
            " (set dataset.path to the folder holding the IDX files)".into()
        },
    })
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Parses an IDX file of unsigned bytes with `dims` dimensions; returns (shape, data).
pub fn parse_idx(
    path: &Path,
    bytes: &[u8],
    dims: usize,
) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let what = if dims == 1 {
        "IDX labels"
    } else {
        "IDX images"
    };
    let header = 4 + 4 * dims;
    let expected_magic = 0x0000_0800 | dims as u32;
    if bytes.len() >= 4 && be_u32(&bytes[0..4]) != expected_magic {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            found: be_u32(&bytes[0..4]),
            expected: expected_magic,
            what,
        });
    }
    if bytes.len() < header {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            what: "header",
            expected: header,
            found: bytes.len(),
        });
    }
    let shape: Vec<usize> = (0..dims)
        .map(|d| be_u32(&bytes[4 + 4 * d..8 + 4 * d]) as usize)
        .collect();
    // A damaged header can hold dimensions whose product wraps around: check it, each partial
    // product in i64 as libtorch computes a tensor's size.
    let n = shape
        .iter()
        .try_fold(1i64, |a, &d| a.checked_mul(d as i64))
        .map(|n| n as usize)
        .ok_or_else(|| DataError::BadHeader {
            path: path.to_path_buf(),
            message: format!(
                "dimensions {} hold more values than a file can",
                shape
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(" x ")
            ),
        })?;
    let body = &bytes[header..];
    if body.len() < n {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            what: if dims == 1 { "labels" } else { "pixels" },
            expected: n,
            found: body.len(),
        });
    }
    Ok((shape, body[..n].to_vec()))
}

/// Loads `{prefix}-images` and `{prefix}-labels` from an IDX folder:
/// images `[N, 1, H, W]` f32 in [0, 1], labels `[N]` i64.
pub fn load_idx_pair(folder: &Path, prefix: &str) -> Result<(Tensor, Tensor), DataError> {
    let img_path = find_idx(folder, prefix, "images", 3)?;
    let lbl_path = find_idx(folder, prefix, "labels", 1)?;
    let (ishape, pixels) = parse_idx(&img_path, &read_file(&img_path)?, 3)?;
    let (lshape, labels) = parse_idx(&lbl_path, &read_file(&lbl_path)?, 1)?;
    if ishape[0] != lshape[0] {
        return Err(DataError::CountMismatch {
            images: img_path,
            n_images: ishape[0],
            labels: lbl_path,
            n_labels: lshape[0],
        });
    }
    if let Some((index, &label)) = labels.iter().enumerate().find(|(_, &l)| l >= 10) {
        return Err(DataError::BadLabel {
            path: lbl_path,
            label,
            index,
            classes: 10,
        });
    }
    let (n, h, w) = (ishape[0] as i64, ishape[1] as i64, ishape[2] as i64);
    // The peak of loading is the bytes plus one float copy: the bytes go as soon as they are
    // converted, and the scaling is in place (a second float copy of 60,000 images is 188 MB).
    let bytes = Tensor::from_slice(&pixels).reshape([n, 1, h, w]);
    drop(pixels);
    let as_data_error = |e: tch::TchError| DataError::Io {
        path: img_path.clone(),
        message: format!("converting the images to floats: {e}"),
    };
    let mut x = bytes.f_to_kind(Kind::Float).map_err(as_data_error)?;
    drop(bytes);
    let x = x.f_div_scalar_(255.0).map_err(as_data_error)?;
    let y = Tensor::from_slice(&labels).to_kind(Kind::Int64);
    Ok((x, y))
}

fn load_cifar10(folder: &Path) -> Result<Dataset, DataError> {
    let nested = folder.join("cifar-10-batches-bin");
    let folder = if nested.is_dir() {
        nested
    } else {
        folder.to_path_buf()
    };
    if !folder.is_dir() {
        return Err(DataError::Folder {
            path: folder,
            message:
                "not a folder (expected CIFAR-10 binary batches data_batch_1.bin .. test_batch.bin)"
                    .into(),
        });
    }
    let load_batches = |names: &[String]| -> Result<(Tensor, Tensor), DataError> {
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for name in names {
            let path = folder.join(name);
            let bytes = read_file(&path)?;
            const REC: usize = 3073;
            if bytes.is_empty() || bytes.len() % REC != 0 {
                return Err(DataError::Truncated {
                    path,
                    what: "CIFAR-10 records (3073 bytes each)",
                    expected: bytes.len().div_ceil(REC).max(1) * REC,
                    found: bytes.len(),
                });
            }
            let n = bytes.len() / REC;
            let mut labels = Vec::with_capacity(n);
            let mut pixels = Vec::with_capacity(n * 3072);
            for (i, rec) in bytes.chunks_exact(REC).enumerate() {
                if rec[0] >= 10 {
                    return Err(DataError::BadLabel {
                        path: path.clone(),
                        label: rec[0],
                        index: i,
                        classes: 10,
                    });
                }
                labels.push(rec[0]);
                pixels.extend_from_slice(&rec[1..]);
            }
            xs.push(
                Tensor::from_slice(&pixels)
                    .reshape([n as i64, 3, 32, 32])
                    .to_kind(Kind::Float)
                    / 255.0,
            );
            ys.push(Tensor::from_slice(&labels).to_kind(Kind::Int64));
        }
        Ok((Tensor::cat(&xs, 0), Tensor::cat(&ys, 0)))
    };
    let train: Vec<String> = (1..=5).map(|i| format!("data_batch_{i}.bin")).collect();
    let (train_x, train_y) = load_batches(&train)?;
    let (test_x, test_y) = load_batches(&["test_batch.bin".to_string()])?;
    Ok(Dataset {
        name: "cifar10".into(),
        val_x: train_x.narrow(0, 0, 0),
        val_y: train_y.narrow(0, 0, 0),
        train_x,
        train_y,
        test_x,
        test_y,
        input_shape: vec![3, 32, 32],
        num_classes: 10,
        class_names: CIFAR_NAMES.iter().map(|s| s.to_string()).collect(),
    })
}

/// A small deterministic generator (SplitMix64) so toy sets depend only on the seed.
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// Raw toy points (before scaling to the unit box) and labels.
fn toy_points(
    kind: DatasetKind,
    n: usize,
    noise: f64,
    rng: &mut SplitMix,
) -> (Vec<[f64; 2]>, Vec<i64>) {
    use std::f64::consts::PI;
    let mut pts = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let label = (i % 2) as i64;
        let p = match kind {
            DatasetKind::Moons => {
                let t = PI * rng.uniform();
                if label == 0 {
                    [t.cos(), t.sin()]
                } else {
                    [1.0 - t.cos(), 0.5 - t.sin()]
                }
            }
            DatasetKind::Circles => {
                let t = 2.0 * PI * rng.uniform();
                let r = if label == 0 { 1.0 } else { 0.5 };
                [r * t.cos(), r * t.sin()]
            }
            DatasetKind::Spirals => {
                let t = 0.25 + 2.75 * PI * rng.uniform().sqrt();
                let s = if label == 0 { 1.0 } else { -1.0 };
                [s * t * t.cos() / 9.0, s * t * t.sin() / 9.0]
            }
            _ => {
                // xor: quadrants, kept a little away from the axes.
                let mut v = [0.0; 2];
                for c in &mut v {
                    let mag = 0.1 + 0.9 * rng.uniform();
                    *c = if rng.uniform() < 0.5 { -mag } else { mag };
                }
                let l = ((v[0] > 0.0) != (v[1] > 0.0)) as i64;
                labels.push(l);
                pts.push(v);
                continue;
            }
        };
        labels.push(label);
        pts.push(p);
    }
    // Noise is stated in unit-box units; the raw sets span about 2-3 units.
    let scale = 2.5;
    for p in &mut pts {
        p[0] += noise * scale * rng.normal();
        p[1] += noise * scale * rng.normal();
    }
    (pts, labels)
}

/// A 2-D toy set with `n` train and `n` test points (see [`toy_tensors`]).
pub fn toy(kind: DatasetKind, n: usize, noise: f64, seed: u64) -> Dataset {
    toy_with_validation(kind, n, 0, noise, seed)
}

/// [`toy`] plus `n_val` validation points: the generator's draws after the training and test
/// points, which stay as they are without them.
pub fn toy_with_validation(
    kind: DatasetKind,
    n: usize,
    n_val: usize,
    noise: f64,
    seed: u64,
) -> Dataset {
    let mut rng = SplitMix::new(seed);
    let (train_x, train_y) = toy_tensors(kind, n, noise, &mut rng);
    let (test_x, test_y) = toy_tensors(kind, n, noise, &mut rng);
    let (val_x, val_y) = toy_tensors(kind, n_val, noise, &mut rng);
    Dataset {
        name: kind.name().into(),
        train_x,
        train_y,
        test_x,
        test_y,
        val_x,
        val_y,
        input_shape: vec![2],
        num_classes: 2,
        class_names: vec!["class 0".into(), "class 1".into()],
    }
}

/// `n` points of a toy set, scaled into [0.05, 0.95]^2 with one affine map (fitted on the
/// noiseless shape, so every split shares it) and clipped to [0, 1], and their labels.
fn toy_tensors(kind: DatasetKind, n: usize, noise: f64, rng: &mut SplitMix) -> (Tensor, Tensor) {
    let (clean, _) = toy_points(kind, 2000, 0.0, &mut SplitMix::new(12345));
    let lo = [0, 1].map(|d| clean.iter().map(|p| p[d]).fold(f64::INFINITY, f64::min));
    let hi = [0, 1].map(|d| clean.iter().map(|p| p[d]).fold(f64::NEG_INFINITY, f64::max));
    let span = (hi[0] - lo[0]).max(hi[1] - lo[1]);
    let centre = [(lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0];
    let (pts, labels) = toy_points(kind, n, noise, rng);
    let flat: Vec<f32> = pts
        .iter()
        .flat_map(|p| {
            [0, 1].map(|d| (0.5 + 0.9 * (p[d] - centre[d]) / span).clamp(0.0, 1.0) as f32)
        })
        .collect();
    (
        Tensor::from_slice(&flat).reshape([n as i64, 2]),
        Tensor::from_slice(&labels),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn idx_bytes(magic: u32, dims: &[u32], body: &[u8]) -> Vec<u8> {
        let mut v = magic.to_be_bytes().to_vec();
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(body);
        v
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) {
        std::fs::write(dir.join(name), bytes).unwrap();
    }

    fn write_gz(dir: &Path, name: &str, bytes: &[u8]) {
        let f = std::fs::File::create(dir.join(name)).unwrap();
        let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap();
    }

    fn good_pair(dir: &Path, prefix: &str, n: u32, gz: bool) {
        let pixels: Vec<u8> = (0..n * 4).map(|i| (i * 37 % 256) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let img = idx_bytes(0x803, &[n, 2, 2], &pixels);
        let lbl = idx_bytes(0x801, &[n], &labels);
        if gz {
            write_gz(dir, &format!("{prefix}-images-idx3-ubyte.gz"), &img);
            write_gz(dir, &format!("{prefix}-labels-idx1-ubyte.gz"), &lbl);
        } else {
            write(dir, &format!("{prefix}-images-idx3-ubyte"), &img);
            write(dir, &format!("{prefix}-labels-idx1-ubyte"), &lbl);
        }
    }

    #[test]
    fn idx_raw_and_gzip_load_the_same() {
        for gz in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            good_pair(dir.path(), "train", 5, gz);
            let (x, y) = load_idx_pair(dir.path(), "train").unwrap();
            assert_eq!(x.size(), vec![5, 1, 2, 2]);
            let px = x.double_value(&[1, 0, 0, 1]);
            assert!((px - ((5 * 37 % 256) as f64 / 255.0)).abs() < 1e-6);
            assert_eq!(y.int64_value(&[3]), 3);
        }
    }

    #[test]
    fn missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_idx_pair(dir.path(), "train").unwrap_err().to_string();
        assert!(
            err.contains("train-images-idx3-ubyte") && err.contains("not found"),
            "{err}"
        );
    }

    #[test]
    fn truncated_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        good_pair(dir.path(), "train", 5, false);
        let img = idx_bytes(0x803, &[5, 2, 2], &[0u8; 7]);
        write(dir.path(), "train-images-idx3-ubyte", &img);
        let err = load_idx_pair(dir.path(), "train").unwrap_err().to_string();
        assert!(
            err.contains("train-images-idx3-ubyte") && err.contains("truncated"),
            "{err}"
        );
        assert!(err.contains("expected 20"), "{err}");
        // A header cut short is also truncated.
        write(dir.path(), "train-images-idx3-ubyte", &[0, 0, 8]);
        let err = load_idx_pair(dir.path(), "train").unwrap_err().to_string();
        assert!(err.contains("truncated") && err.contains("header"), "{err}");
    }

    #[test]
    fn truncated_gzip_is_named() {
        let dir = tempfile::tempdir().unwrap();
        good_pair(dir.path(), "train", 50, true);
        let p = dir.path().join("train-images-idx3-ubyte.gz");
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        let err = load_idx_pair(dir.path(), "train").unwrap_err().to_string();
        assert!(err.contains("train-images-idx3-ubyte.gz"), "{err}");
        assert!(
            err.contains("truncated") || err.contains("damaged"),
            "{err}"
        );
    }

    /// Found by tests/parsers_never_panic.rs: 4 x 2^31 x 2^31 wraps to 0 pixels, which the
    /// reader used to accept and then panic in `reshape`.
    #[test]
    fn regression_dimensions_whose_product_wraps() {
        let dir = tempfile::tempdir().unwrap();
        good_pair(dir.path(), "train", 4, false);
        let img = idx_bytes(0x803, &[4, 1 << 31, 1 << 31], &[]);
        write(dir.path(), "train-images-idx3-ubyte", &img);
        let err = load_idx_pair(dir.path(), "train").unwrap_err().to_string();
        assert!(
            err.contains("train-images-idx3-ubyte") && err.contains("bad header"),
            "{err}"
        );
        assert!(err.contains("4 x 2147483648 x 2147483648"), "{err}");
        // No pixels, but 2^32-1 x 2^32-1 overflows libtorch's i64 sizes on the way.
        let img = idx_bytes(0x803, &[u32::MAX, u32::MAX, 0], &[]);
        let err = parse_idx(Path::new("x"), &img, 3).unwrap_err().to_string();
        assert!(err.contains("bad header"), "{err}");
    }

    #[test]
    fn wrong_magic_is_named() {
        let dir = tempfile::tempdir().unwrap();
        good_pair(dir.path(), "t10k", 3, false);
        // A labels file where images are expected.
        let lbl = idx_bytes(0x801, &[3], &[0, 1, 2]);
        write(dir.path(), "t10k-images-idx3-ubyte", &lbl);
        let err = load_idx_pair(dir.path(), "t10k").unwrap_err().to_string();
        assert!(
            err.contains("t10k-images-idx3-ubyte") && err.contains("magic"),
            "{err}"
        );
        assert!(err.contains("0x00000803"), "{err}");
    }

    #[test]
    fn count_mismatch_names_both_files() {
        let dir = tempfile::tempdir().unwrap();
        good_pair(dir.path(), "train", 4, false);
        write(
            dir.path(),
            "train-labels-idx1-ubyte",
            &idx_bytes(0x801, &[3], &[0, 1, 2]),
        );
        let err = load_idx_pair(dir.path(), "train").unwrap_err().to_string();
        assert!(
            err.contains("4 images") && err.contains("3 labels"),
            "{err}"
        );
        assert!(
            err.contains("train-labels-idx1-ubyte") && err.contains("train-images"),
            "{err}"
        );
    }

    #[test]
    fn bad_label_is_named() {
        let dir = tempfile::tempdir().unwrap();
        good_pair(dir.path(), "train", 3, false);
        write(
            dir.path(),
            "train-labels-idx1-ubyte",
            &idx_bytes(0x801, &[3], &[0, 12, 2]),
        );
        let err = load_idx_pair(dir.path(), "train").unwrap_err().to_string();
        assert!(err.contains("label 12") && err.contains("index 1"), "{err}");
    }

    #[test]
    fn cifar_batches_load_and_truncation_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let rec = |label: u8| {
            let mut r = vec![label];
            r.extend((0..3072).map(|i| (i % 251) as u8));
            r
        };
        for i in 1..=5 {
            write(
                dir.path(),
                &format!("data_batch_{i}.bin"),
                &[rec(1), rec(2)].concat(),
            );
        }
        write(dir.path(), "test_batch.bin", &rec(9));
        let cfg = DatasetConfig {
            kind: DatasetKind::Cifar10,
            path: dir.path().display().to_string(),
            val_size: Some(0),
            ..DatasetConfig::default()
        };
        let ds = load(&cfg, 0).unwrap();
        assert_eq!(ds.train_x.size(), vec![10, 3, 32, 32]);
        assert_eq!(ds.test_y.int64_value(&[0]), 9);
        assert!((ds.train_x.double_value(&[0, 0, 0, 5]) - 5.0 / 255.0).abs() < 1e-6);
        write(dir.path(), "test_batch.bin", &rec(9)[..100]);
        let err = load(&cfg, 0).unwrap_err().to_string();
        assert!(
            err.contains("test_batch.bin") && err.contains("truncated"),
            "{err}"
        );
        std::fs::remove_file(dir.path().join("data_batch_3.bin")).unwrap();
        let err = load(&cfg, 0).unwrap_err().to_string();
        assert!(
            err.contains("data_batch_3.bin") && err.contains("not found"),
            "{err}"
        );
    }

    #[test]
    fn toys_are_in_the_box_balanced_and_seeded() {
        for kind in [
            DatasetKind::Moons,
            DatasetKind::Circles,
            DatasetKind::Spirals,
            DatasetKind::Xor,
        ] {
            let a = toy(kind, 200, 0.05, 7);
            let b = toy(kind, 200, 0.05, 7);
            let c = toy(kind, 200, 0.05, 8);
            assert_eq!(a.train_x.size(), vec![200, 2]);
            assert!(a.train_x.min().double_value(&[]) >= 0.0);
            assert!(a.train_x.max().double_value(&[]) <= 1.0);
            assert_eq!(a.train_x, b.train_x, "{kind:?}: same seed, same data");
            assert_ne!(a.train_x, c.train_x, "{kind:?}: other seed, other data");
            let ones = a.train_y.sum(Kind::Int64).int64_value(&[]);
            assert!(
                (60..=140).contains(&ones),
                "{kind:?}: {ones} of 200 in class 1"
            );
            // The box is used, not a corner of it.
            let span = (a.train_x.max() - a.train_x.min()).double_value(&[]);
            assert!(span > 0.5, "{kind:?} span {span}");
        }
    }

    #[test]
    fn toy_validation_points_are_fresh_and_leave_train_and_test_as_they_were() {
        let cfg = DatasetConfig {
            kind: DatasetKind::Moons,
            toy_points: 300,
            ..DatasetConfig::default()
        };
        let with = load(&cfg, 3).unwrap();
        let without = toy(DatasetKind::Moons, 300, cfg.toy_noise, 3);
        assert_eq!(
            with.val_x.size(),
            vec![60, 2],
            "20% of the points by default"
        );
        assert_eq!(with.train_x, without.train_x);
        assert_eq!(with.test_x, without.test_x);
        // Not a copy of training or test points.
        let first = with.val_x.get(0).unsqueeze(0);
        for split in [&with.train_x, &with.test_x] {
            let d = (split - &first)
                .abs()
                .sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
            assert!(d.min().double_value(&[]) > 0.0);
        }
        let none = load(
            &DatasetConfig {
                val_size: Some(0),
                ..cfg.clone()
            },
            3,
        )
        .unwrap();
        assert_eq!(none.val_len(), 0);
        // An image set's validation split cannot take the whole training split.
        let dir = tempfile::tempdir().unwrap();
        good_pair(dir.path(), "train", 10, false);
        good_pair(dir.path(), "t10k", 4, false);
        let idx = DatasetConfig {
            kind: DatasetKind::Mnist,
            path: dir.path().display().to_string(),
            val_size: Some(10),
            ..DatasetConfig::default()
        };
        let err = load(&idx, 0).unwrap_err().to_string();
        assert!(
            err.contains("dataset.val_size") && err.contains("10"),
            "{err}"
        );
        let ok = load(
            &DatasetConfig {
                val_size: Some(3),
                ..idx
            },
            0,
        )
        .unwrap();
        assert_eq!((ok.train_len(), ok.val_len()), (7, 3));
    }

    #[test]
    fn real_fashion_mnist_loads() {
        let dir = Path::new(crate::config::FASHION_MNIST_DIR);
        assert!(
            dir.join("train-images-idx3-ubyte.gz").exists(),
            "Fashion-MNIST missing: `make test` installs the Debian package dataset-fashion-mnist"
        );
        let cfg = DatasetConfig {
            kind: DatasetKind::FashionMnist,
            ..DatasetConfig::default()
        };
        let ds = load(&cfg, 0).unwrap();
        // The default validation split: the last 5,000 training examples.
        assert_eq!(ds.train_x.size(), vec![55000, 1, 28, 28]);
        assert_eq!(ds.val_x.size(), vec![5000, 1, 28, 28]);
        assert_eq!(ds.test_x.size(), vec![10000, 1, 28, 28]);
        // Balanced classes: 6000 of each in the training file.
        let all = Tensor::cat(&[&ds.train_y, &ds.val_y], 0);
        let counts = all.bincount(None::<Tensor>, 10);
        assert_eq!(Vec::<i64>::try_from(counts).unwrap(), vec![6000; 10]);
        let val_counts = Vec::<i64>::try_from(ds.val_y.bincount(None::<Tensor>, 10)).unwrap();
        assert!(
            val_counts.iter().all(|&c| (300..=700).contains(&c)),
            "{val_counts:?}"
        );
        let mean = ds.train_x.mean(Kind::Float).double_value(&[]);
        assert!((0.27..0.30).contains(&mean), "mean pixel {mean}");
    }
}
