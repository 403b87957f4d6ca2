//! Parsers that never panic: random and damaged bytes fed to every reader of a file a person or
//! a crash can spoil (the TOML config, the IDX and CIFAR-10 readers, the safetensors loader and
//! the metrics.jsonl reader). Each input must give `Ok` or an error that names the file; an
//! accepted input must also be usable (shapes that agree, a network that still runs).
//!
//! The damage starts from real valid inputs (presets, files written by the readers' own
//! writers) and applies a few edits: bit flips, truncation, inserted, deleted, overwritten and
//! duplicated spans, huge length fields, and edits that know the format (a TOML or JSON value
//! replaced by NaN, inf, a huge integer, a wrong type; a safetensors header entry with another
//! dtype, shape or offsets). Pure random bytes are mixed in.
//!
//! Seeds are fixed, so a run is reproducible; `CERTLAB_FUZZ_SEED=<u64>` explores other inputs
//! and `PROPTEST_CASES=<n>` sets the number of cases of every property. Each property prints
//! how many cases it ran.
use certlab::config::{Arch, DatasetConfig, DatasetKind, ExperimentConfig, ModelConfig};
use certlab::metrics::{EpsEval, EvalRecord, GapStats};
use certlab::model::Network;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use std::fmt::Debug;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

// ---------------------------------------------------------------------------------------------
// The runner.

/// Runs `test` on `cases` inputs drawn from `strategy` (seeded from `name`), prints the count
/// of cases and of accepted inputs (`test` returns `Ok(true)`), and fails with the smallest
/// failing input proptest finds.
fn check<S>(name: &str, cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<bool, String>)
where
    S: Strategy,
    S::Value: Debug,
{
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 4000,
        ..Config::default()
    };
    let seed: u64 = std::env::var("CERTLAB_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    for (i, b) in name.bytes().enumerate() {
        seed_bytes[8 + i % 24] ^= b;
    }
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let (ran, accepted) = (AtomicU32::new(0), AtomicU32::new(0));
    let t0 = Instant::now();
    let result = runner.run(&strategy, |input| {
        ran.fetch_add(1, Ordering::Relaxed);
        let ok = test(input).map_err(TestCaseError::fail)?;
        accepted.fetch_add(ok as u32, Ordering::Relaxed);
        Ok(())
    });
    eprintln!(
        "parsers_never_panic: {name}: {} cases, {} accepted, in {:.1} s (seed {seed})",
        ran.load(Ordering::Relaxed),
        accepted.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64()
    );
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

/// An error must say something and name the file (or origin) it is about.
fn names(msg: &str, what: &str) -> Result<bool, String> {
    if msg.trim().is_empty() || !msg.contains(what) {
        return Err(format!("error does not name {what}: {msg:?}"));
    }
    Ok(false)
}

// ---------------------------------------------------------------------------------------------
// Byte-level damage.

/// One edit of a byte string; positions are taken modulo the length.
#[derive(Debug, Clone)]
enum Edit {
    FlipBit(usize, u8),
    Truncate(usize),
    Overwrite(usize, Vec<u8>),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    /// Copies `len` bytes from the first position over the second (a splice of the file itself).
    Splice(usize, usize, usize),
    /// Writes a 4-byte (big-endian) or 8-byte (little-endian) length field.
    BigField(usize, u64, bool),
}

/// Lengths and counts that break readers: zero, one, powers of two whose products wrap, maxima.
fn big_value() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(3073),
        Just(1 << 16),
        Just(1 << 24),
        Just(1 << 31),
        Just(u32::MAX as u64),
        Just(1 << 32),
        Just(i64::MAX as u64),
        Just(1 << 63),
        Just(u64::MAX),
        any::<u64>(),
    ]
}

/// Positions: most edits land in the first 64 bytes, where the headers are.
fn position() -> impl Strategy<Value = usize> {
    prop_oneof![3 => 0usize..64, 1 => any::<usize>()]
}

fn edit() -> impl Strategy<Value = Edit> {
    let bytes = prop::collection::vec(any::<u8>(), 1..16);
    prop_oneof![
        4 => (position(), 0u8..8).prop_map(|(p, b)| Edit::FlipBit(p, b)),
        2 => any::<usize>().prop_map(Edit::Truncate),
        2 => (position(), bytes.clone()).prop_map(|(p, b)| Edit::Overwrite(p, b)),
        1 => (position(), bytes).prop_map(|(p, b)| Edit::Insert(p, b)),
        1 => (position(), 1usize..64).prop_map(|(p, n)| Edit::Delete(p, n)),
        1 => (any::<usize>(), 1usize..256, any::<usize>())
            .prop_map(|(a, n, b)| Edit::Splice(a, n, b)),
        3 => (prop_oneof![0usize..24, any::<usize>()], big_value(), any::<bool>())
            .prop_map(|(p, v, be)| Edit::BigField(p, v, be)),
    ]
}

fn apply(base: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut v = base.to_vec();
    for e in edits {
        let at = |p: usize, v: &Vec<u8>| if v.is_empty() { 0 } else { p % (v.len() + 1) };
        match e {
            Edit::FlipBit(p, b) => {
                if !v.is_empty() {
                    let i = p % v.len();
                    v[i] ^= 1 << b;
                }
            }
            Edit::Truncate(p) => {
                let n = at(*p, &v);
                v.truncate(n);
            }
            Edit::Overwrite(p, bytes) | Edit::Insert(p, bytes) => {
                let i = at(*p, &v);
                if matches!(e, Edit::Insert(..)) {
                    v.splice(i..i, bytes.iter().copied());
                } else {
                    let end = (i + bytes.len()).min(v.len());
                    v.splice(i..end, bytes.iter().copied());
                }
            }
            Edit::Delete(p, n) => {
                let i = at(*p, &v);
                let end = (i + n).min(v.len());
                v.drain(i..end);
            }
            Edit::Splice(a, n, b) => {
                let i = at(*a, &v);
                let chunk: Vec<u8> = v[i..(i + n).min(v.len())].to_vec();
                let j = at(*b, &v);
                let end = (j + chunk.len()).min(v.len());
                v.splice(j..end, chunk);
            }
            Edit::BigField(p, value, big_endian) => {
                let bytes: Vec<u8> = if *big_endian {
                    (*value as u32).to_be_bytes().to_vec()
                } else {
                    value.to_le_bytes().to_vec()
                };
                // Aligned to the field width, as the headers are.
                let i = at(*p, &v) / bytes.len() * bytes.len();
                let end = (i + bytes.len()).min(v.len());
                v.splice(i..end, bytes);
            }
        }
    }
    v
}

/// A valid input damaged by 1 to 6 edits, or (one time in five) random bytes.
fn damaged(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(edit(), 1..6).prop_map(move |e| apply(&base, &e)),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

/// A stand-in for a raw token (NaN, inf, a number no type holds) in edited TOML and JSON: the
/// value is serialised as this string and the quoted string then replaced by the token.
const RAW: &str = "@@RAW@@";

fn put_raw(text: &str, token: &str) -> String {
    text.replacen(&format!("\"{RAW}\""), token, 1)
}

// ---------------------------------------------------------------------------------------------
// The TOML config.

fn presets() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("presets");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

/// Odd TOML values: non-finite and extreme numbers, wrong types, empty containers.
fn toml_value() -> impl Strategy<Value = (toml::Value, Option<&'static str>)> {
    use toml::Value as V;
    let raw = prop_oneof![
        Just("nan"),
        Just("+nan"),
        Just("-nan"),
        Just("inf"),
        Just("-inf"),
        Just("1e999"),
        Just("-0.0"),
        Just("5e-324"),
        Just("9223372036854775808"),
        Just("-9223372036854775809"),
        Just("0x7fffffffffffffff"),
        Just("1979-05-27T07:32:00Z"),
        Just("[nan, inf]"),
        Just("{}"),
    ];
    prop_oneof![
        3 => raw.prop_map(|t| (V::String(RAW.into()), Some(t))),
        1 => prop_oneof![
            Just(i64::MIN),
            Just(i64::MAX),
            Just(-1i64),
            Just(0),
            Just(u32::MAX as i64 + 1),
            Just(1 << 40),
            any::<i64>(),
        ]
        .prop_map(|i| (V::Integer(i), None)),
        1 => prop_oneof![Just(f64::MAX), Just(-f64::MAX), Just(1e-300), any::<f64>()]
            .prop_map(|f| (V::Float(f), None)),
        1 => prop_oneof![Just(String::new()), Just("x".repeat(300)), ".{0,12}"]
            .prop_map(|s| (V::String(s), None)),
        1 => any::<bool>().prop_map(|b| (V::Boolean(b), None)),
        1 => Just((V::Array(vec![]), None)),
        1 => Just((V::Table(Default::default()), None)),
    ]
}

/// The number of leaves of a TOML document (array elements included).
fn toml_leaves(v: &toml::Value) -> usize {
    match v {
        toml::Value::Table(t) => t.iter().map(|(_, c)| toml_leaves(c)).sum(),
        toml::Value::Array(a) if !a.is_empty() => a.iter().map(toml_leaves).sum(),
        _ => 1,
    }
}

/// Replaces leaf number `k` (in the order of [`toml_leaves`]); true once done.
fn toml_set(v: &mut toml::Value, k: &mut usize, new: &toml::Value) -> bool {
    match v {
        toml::Value::Table(t) => t.iter_mut().any(|(_, c)| toml_set(c, k, new)),
        toml::Value::Array(a) if !a.is_empty() => a.iter_mut().any(|c| toml_set(c, k, new)),
        _ if *k == 0 => {
            *v = new.clone();
            true
        }
        _ => {
            *k -= 1;
            false
        }
    }
}

/// A preset with one leaf value replaced, as text.
fn edit_preset(text: &str, leaf: Index, value: toml::Value, raw: Option<&str>) -> String {
    let mut doc: toml::Value = toml::from_str(text).unwrap();
    let mut k = leaf.index(toml_leaves(&doc));
    toml_set(&mut doc, &mut k, &value);
    let out = toml::to_string(&doc).unwrap();
    raw.map_or(out.clone(), |t| put_raw(&out, t))
}

/// An accepted config must survive a save and a load unchanged (a NaN would not).
fn toml_outcome(text: &str) -> Result<bool, String> {
    match ExperimentConfig::from_toml_str(text, "fuzz.toml") {
        Err(e) => names(&e.to_string(), "fuzz.toml"),
        Ok(cfg) => {
            let back = ExperimentConfig::from_toml_str(&cfg.to_toml_string(), "saved.toml")
                .map_err(|e| format!("an accepted config does not reload: {e}"))?;
            if back != cfg {
                return Err(format!("an accepted config reloads differently: {cfg:?}"));
            }
            Ok(true)
        }
    }
}

#[test]
fn toml_config_text_never_panics() {
    let bases = presets();
    let n = bases.len();
    let strategy = (0..n).prop_flat_map(move |i| damaged(bases[i].clone().into_bytes()));
    check("toml text bytes", 20000, strategy, |bytes| {
        toml_outcome(&String::from_utf8_lossy(&bytes))
    });
}

#[test]
fn toml_config_values_never_panic() {
    let bases = presets();
    let n = bases.len();
    let edits = prop::collection::vec((any::<Index>(), toml_value()), 1..4);
    check(
        "toml values",
        20000,
        (0..n, edits),
        |(i, edits): (usize, Vec<(Index, (toml::Value, Option<&str>))>)| {
            let mut text = bases[i].clone();
            for (leaf, (value, raw)) in edits {
                // A raw token may leave text that is no longer TOML; later edits need TOML.
                match toml::from_str::<toml::Value>(&text) {
                    Ok(_) => text = edit_preset(&text, leaf, value, raw),
                    Err(_) => break,
                }
            }
            toml_outcome(&text)
        },
    );
}

#[test]
fn toml_config_file_never_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("preset.toml");
    let bases = presets();
    let n = bases.len();
    let strategy = (0..n).prop_flat_map(move |i| damaged(bases[i].clone().into_bytes()));
    check("toml file", 5000, strategy, |bytes| {
        std::fs::write(&path, &bytes).unwrap();
        match ExperimentConfig::load(&path) {
            Ok(_) => Ok(true),
            Err(e) => names(&e.to_string(), "preset.toml"),
        }
    });
}

// ---------------------------------------------------------------------------------------------
// IDX and CIFAR-10.

fn idx_bytes(dims: &[u32], body: &[u8]) -> Vec<u8> {
    let mut v = (0x800u32 | dims.len() as u32).to_be_bytes().to_vec();
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(body);
    v
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A valid pair of 4 images of 3x2 pixels and their labels.
fn idx_pair() -> (Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = (0..24u32).map(|i| (i * 37 % 256) as u8).collect();
    (
        idx_bytes(&[4, 3, 2], &pixels),
        idx_bytes(&[4], &[0, 9, 3, 1]),
    )
}

#[test]
fn parse_idx_never_panics() {
    let (img, lbl) = idx_pair();
    let strategy = prop_oneof![
        damaged(img).prop_map(|b| (b, 3usize)),
        damaged(lbl).prop_map(|b| (b, 1usize)),
    ];
    let path = Path::new("/fuzz/file-idx-ubyte");
    check(
        "parse_idx",
        100000,
        strategy,
        |(bytes, dims)| match certlab::data::parse_idx(path, &bytes, dims) {
            Err(e) => names(&e.to_string(), "/fuzz/file-idx-ubyte"),
            Ok((shape, data)) => {
                let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
                if shape.len() != dims || n != Some(data.len()) {
                    return Err(format!("shape {shape:?} for {} bytes", data.len()));
                }
                Ok(true)
            }
        },
    );
}

/// Which of the two IDX files is damaged, and whether they are stored gzipped.
#[derive(Debug, Clone)]
struct IdxCase {
    images: Option<Vec<u8>>,
    labels: Option<Vec<u8>>,
    gz: bool,
}

#[test]
fn idx_pair_never_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (img, lbl) = idx_pair();
    let (img_base, lbl_base) = (img.clone(), lbl.clone());
    // Damage the raw bytes, or (gz) the compressed stream.
    let strategy = (any::<bool>(), 0u8..3).prop_flat_map(move |(gz, which)| {
        let (i, l) = if gz {
            (gzip(&img), gzip(&lbl))
        } else {
            (img.clone(), lbl.clone())
        };
        let case = move |images, labels| IdxCase { images, labels, gz };
        match which {
            0 => damaged(i).prop_map(move |b| case(Some(b), None)).boxed(),
            1 => damaged(l).prop_map(move |b| case(None, Some(b))).boxed(),
            _ => (damaged(i), damaged(l))
                .prop_map(move |(a, b)| case(Some(a), Some(b)))
                .boxed(),
        }
    });
    check("idx pair", 10000, strategy, |case| {
        for f in std::fs::read_dir(dir).unwrap() {
            std::fs::remove_file(f.unwrap().path()).unwrap();
        }
        let ext = if case.gz { ".gz" } else { "" };
        let or_valid = |f: &Option<Vec<u8>>, base: &[u8]| {
            f.clone()
                .unwrap_or_else(|| if case.gz { gzip(base) } else { base.to_vec() })
        };
        let images = or_valid(&case.images, &img_base);
        let labels = or_valid(&case.labels, &lbl_base);
        std::fs::write(dir.join(format!("train-images-idx3-ubyte{ext}")), images).unwrap();
        std::fs::write(dir.join(format!("train-labels-idx1-ubyte{ext}")), labels).unwrap();
        match certlab::data::load_idx_pair(dir, "train") {
            Err(e) => names(&e.to_string(), &dir.display().to_string()),
            Ok((x, y)) => {
                let (xs, ys) = (x.size(), y.size());
                if xs.len() != 4 || xs[1] != 1 || ys != [xs[0]] {
                    return Err(format!("images {xs:?}, labels {ys:?}"));
                }
                Ok(true)
            }
        }
    });
}

/// Damage to the CIFAR-10 batches: (file index 0..6, bytes) for each damaged file.
#[test]
fn cifar10_never_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let names_ = ["1", "2", "3", "4", "5"].map(|i| format!("data_batch_{i}.bin"));
    let files: Vec<String> = names_
        .into_iter()
        .chain(["test_batch.bin".to_string()])
        .collect();
    let rec = |label: u8| {
        let mut r = vec![label];
        r.extend((0..3072).map(|i| (i % 251) as u8));
        r
    };
    let valid = [rec(1), rec(7)].concat();
    let cifar_edit = prop_oneof![
        4 => damaged(valid.clone()),
        // Whole-record damage: a record cut, doubled, or given a label past 9.
        1 => (0usize..2 * 3073).prop_map({
            let v = valid.clone();
            move |n| v[..n].to_vec()
        }),
        1 => (10u8..=255).prop_map({
            let v = valid.clone();
            move |l| [v.clone(), vec![l], v[1..3073].to_vec()].concat()
        }),
    ];
    let strategy = prop::collection::vec((0usize..6, cifar_edit), 1..3);
    let cfg = DatasetConfig {
        kind: DatasetKind::Cifar10,
        path: dir.display().to_string(),
        ..DatasetConfig::default()
    };
    check("cifar10", 2000, strategy, |edits| {
        for f in &files {
            std::fs::write(dir.join(f), &valid).unwrap();
        }
        for (i, bytes) in &edits {
            std::fs::write(dir.join(&files[*i]), bytes).unwrap();
        }
        match certlab::data::load(&cfg, 0) {
            Err(e) => names(&e.to_string(), &dir.display().to_string()),
            Ok(ds) => {
                let (n, xs) = (ds.train_len(), ds.train_x.size());
                if xs[1..] != [3, 32, 32] || xs[0] != n || ds.test_x.size()[0] != ds.test_len() {
                    return Err(format!("train {xs:?} with {n} labels"));
                }
                Ok(true)
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// safetensors.

fn small_network() -> Network {
    let cfg = ModelConfig {
        arch: Arch::Mlp,
        hidden: vec![3],
        normalize: true,
    };
    let stats = Some((vec![0.5, 0.5], vec![0.2, 0.3]));
    Network::from_config(&cfg, &[2], 2, stats, Device::Cpu).unwrap()
}

/// Edits of a safetensors header entry: another dtype, shape or offsets, the entry renamed or
/// removed, and the header length prefix kept or recomputed.
#[derive(Debug, Clone)]
enum HeaderEdit {
    Dtype(Index, &'static str),
    Shape(Index, Vec<u64>),
    Offsets(Index, u64, u64),
    Rename(Index),
    Remove(Index),
}

fn header_edit() -> impl Strategy<Value = HeaderEdit> {
    let dtype = prop::sample::select(vec![
        "F64", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "U64", "X", "",
    ]);
    let dim = prop_oneof![0u64..8, big_value()];
    prop_oneof![
        (any::<Index>(), dtype).prop_map(|(i, d)| HeaderEdit::Dtype(i, d)),
        (any::<Index>(), prop::collection::vec(dim, 0..4))
            .prop_map(|(i, s)| HeaderEdit::Shape(i, s)),
        (
            any::<Index>(),
            prop_oneof![0u64..200, big_value()],
            prop_oneof![0u64..200, big_value()]
        )
            .prop_map(|(i, a, b)| HeaderEdit::Offsets(i, a, b)),
        any::<Index>().prop_map(HeaderEdit::Rename),
        any::<Index>().prop_map(HeaderEdit::Remove),
    ]
}

/// The file with its JSON header edited; `keep_len` keeps the old length prefix.
fn edit_header(file: &[u8], edits: &[HeaderEdit], keep_len: bool) -> Vec<u8> {
    let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&file[8..8 + n]).unwrap();
    for e in edits {
        let keys: Vec<String> = header.keys().cloned().collect();
        if keys.is_empty() {
            break;
        }
        let pick = |i: &Index| keys[i.index(keys.len())].clone();
        match e {
            HeaderEdit::Dtype(i, d) => header[&pick(i)]["dtype"] = (*d).into(),
            HeaderEdit::Shape(i, s) => header[&pick(i)]["shape"] = s.clone().into(),
            HeaderEdit::Offsets(i, a, b) => {
                header[&pick(i)]["data_offsets"] = vec![*a, *b].into();
            }
            HeaderEdit::Rename(i) => {
                let k = pick(i);
                let v = header.remove(&k).unwrap();
                header.insert(format!("{k}x"), v);
            }
            HeaderEdit::Remove(i) => {
                header.remove(&pick(i));
            }
        }
    }
    let text = serde_json::to_vec(&header).unwrap();
    let len = if keep_len {
        n as u64
    } else {
        text.len() as u64
    };
    [&len.to_le_bytes()[..], &text, &file[8 + n..]].concat()
}

#[test]
fn safetensors_never_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("model.safetensors");
    tch::manual_seed(0);
    small_network().save(&path).unwrap();
    let valid = std::fs::read(&path).unwrap();
    let (v2, v3) = (valid.clone(), valid.clone());
    let data_at = 8 + u64::from_le_bytes(valid[..8].try_into().unwrap()) as usize;
    let strategy = prop_oneof![
        2 => damaged(valid),
        2 => (prop::collection::vec(header_edit(), 1..4), any::<bool>())
            .prop_map(move |(e, keep)| edit_header(&v2, &e, keep)),
        // Damage to the data only: the file stays readable, the weights become odd floats.
        1 => prop::collection::vec((any::<Index>(), any::<u8>()), 1..8).prop_map(move |flips| {
            let mut v = v3.clone();
            for (i, x) in flips {
                v[data_at + i.index(v3.len() - data_at)] ^= x;
            }
            v
        }),
    ];
    let x = Tensor::from_slice(&[0.1f32, 0.9, 0.4, 0.3]).reshape([2, 2]);
    check("safetensors", 8000, strategy, |bytes| {
        std::fs::write(&path, &bytes).unwrap();
        let mut net = small_network();
        let shapes = |net: &Network| {
            let mut v: Vec<_> = net.vs.variables().into_iter().collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v.into_iter()
                .map(|(name, t)| (name, t.size(), t.kind()))
                .collect::<Vec<_>>()
        };
        let before = shapes(&net);
        match net.load_weights(&path) {
            Err(e) => names(&e.to_string(), "model.safetensors"),
            Ok(()) => {
                // Loaded weights keep the network's dtype and shapes, and it still runs.
                let now = shapes(&net);
                if now != before || now.iter().any(|v| v.2 != Kind::Float) {
                    return Err(format!("loaded variables changed: {now:?}"));
                }
                let out = net.forward(&x);
                if out.size() != [2, 2] {
                    return Err(format!("output {:?}", out.size()));
                }
                Ok(true)
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Run folders: metrics.jsonl (and summary.json, config.toml).

fn record(epoch: u32) -> EvalRecord {
    EvalRecord {
        epoch,
        step: 10 * epoch as u64,
        time_s: 1.5,
        train_loss: 0.3,
        clean_acc: 0.9,
        eval_eps: Some(0.1),
        pgd_acc: Some(0.7),
        cert_acc: [("ibp".to_string(), 0.5)].into(),
        more_eps: vec![EpsEval {
            eps: 0.2,
            pgd_acc: None,
            cert_acc: [("crown".to_string(), 0.25)].into(),
        }],
        lipschitz: [("power".to_string(), 4.0)].into(),
        gap: Some(GapStats {
            method: "crown".into(),
            unstable_per_layer: vec![1.0, 2.0],
            hist_counts: vec![1, 2, 3],
            ..GapStats::default()
        }),
        ..EvalRecord::default()
    }
}

/// Odd JSON values: raw tokens serde_json must refuse, extreme numbers, wrong types.
fn json_value() -> impl Strategy<Value = (serde_json::Value, Option<&'static str>)> {
    use serde_json::Value as V;
    let raw = prop::sample::select(vec![
        "NaN",
        "Infinity",
        "-Infinity",
        "1e999",
        "-1e999",
        "18446744073709551616",
        "-0",
        "1.0e-400",
        "4294967296",
        "01",
    ]);
    prop_oneof![
        2 => raw.prop_map(|t| (V::String(RAW.into()), Some(t))),
        1 => prop_oneof![Just(u64::MAX), Just(u32::MAX as u64 + 1), any::<u64>()]
            .prop_map(|n| (V::from(n), None)),
        1 => prop_oneof![Just(-1i64), Just(i64::MIN)].prop_map(|n| (V::from(n), None)),
        1 => prop_oneof![Just(f64::MAX), Just(-1.5), Just(1e300)].prop_map(|f| (V::from(f), None)),
        1 => Just((V::Null, None)),
        1 => Just((V::String("x".into()), None)),
        1 => Just((V::Array(vec![]), None)),
        1 => Just((V::Object(Default::default()), None)),
    ]
}

/// The number of values of a JSON document (leaves, objects and arrays).
fn json_nodes(v: &serde_json::Value) -> usize {
    use serde_json::Value as V;
    1 + match v {
        V::Object(m) => m.values().map(json_nodes).sum(),
        V::Array(a) => a.iter().map(json_nodes).sum(),
        _ => 0,
    }
}

/// Replaces value number `k` (children first, then the value itself); true once done.
fn json_set(v: &mut serde_json::Value, k: &mut usize, new: &serde_json::Value) -> bool {
    use serde_json::Value as V;
    let done = match v {
        V::Object(m) => m.values_mut().any(|c| json_set(c, k, new)),
        V::Array(a) => a.iter_mut().any(|c| json_set(c, k, new)),
        _ => false,
    };
    if done {
        return true;
    }
    if *k == 0 {
        *v = new.clone();
        return true;
    }
    *k -= 1;
    false
}

/// One line of a metrics file with one value (or a whole object or array) replaced.
fn edit_json_line(
    text: &str,
    line: Index,
    node: Index,
    value: serde_json::Value,
    raw: Option<&str>,
) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let i = line.index(lines.len());
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&lines[i]) else {
        return text.to_string();
    };
    let mut k = node.index(json_nodes(&v));
    json_set(&mut v, &mut k, &value);
    let out = v.to_string();
    lines[i] = raw.map_or(out.clone(), |t| put_raw(&out, t));
    lines.join("\n") + "\n"
}

/// Which file of a run folder is damaged, and how.
#[derive(Debug, Clone)]
enum RunDamage {
    Metrics(Vec<u8>),
    MetricsValues(Vec<(Index, Index, (serde_json::Value, Option<&'static str>))>),
    Summary(Vec<u8>),
    Config(Vec<u8>),
}

#[test]
fn metrics_jsonl_never_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let cfg = ExperimentConfig::default_experiment();
    {
        let mut w = certlab::run::RunWriter::create(&dir, &cfg).unwrap();
        for epoch in 1..=3 {
            w.append_metrics(&record(epoch)).unwrap();
        }
        w.write_summary(&certlab::run::Summary {
            outcome: "completed".into(),
            error: None,
            elapsed_s: 2.0,
            device: "cpu".into(),
        })
        .unwrap();
    }
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let (metrics, summary, config) = (
        read("metrics.jsonl"),
        read("summary.json"),
        read("config.toml"),
    );
    let strategy = prop_oneof![
        4 => damaged(metrics.clone()).prop_map(RunDamage::Metrics),
        4 => prop::collection::vec((any::<Index>(), any::<Index>(), json_value()), 1..4)
            .prop_map(RunDamage::MetricsValues),
        1 => damaged(summary.clone()).prop_map(RunDamage::Summary),
        1 => damaged(config.clone()).prop_map(RunDamage::Config),
    ];
    let metrics_text = String::from_utf8(metrics.clone()).unwrap();
    check("metrics.jsonl", 5000, strategy, |damage| {
        let write = |f: &str, b: &[u8]| std::fs::write(dir.join(f), b).unwrap();
        write("metrics.jsonl", &metrics);
        write("summary.json", &summary);
        write("config.toml", &config);
        match damage {
            RunDamage::Metrics(b) => write("metrics.jsonl", &b),
            RunDamage::MetricsValues(edits) => {
                let mut text = metrics_text.clone();
                for (line, leaf, (value, raw)) in edits {
                    text = edit_json_line(&text, line, leaf, value, raw);
                }
                write("metrics.jsonl", text.as_bytes());
            }
            RunDamage::Summary(b) => write("summary.json", &b),
            RunDamage::Config(b) => write("config.toml", &b),
        }
        let accepted = match certlab::run::load_run(&dir) {
            Err(e) => names(&e.to_string(), &dir.display().to_string()),
            Ok(run) => {
                let _ = (run.status(), run.name(), run.last());
                Ok(true)
            }
        }?;
        // The listing of the parent folder reads the same run.
        let listed = certlab::run::list_runs(tmp.path()).map_err(|e| e.to_string())?;
        if listed.len() != 1 {
            return Err(format!("{} runs listed", listed.len()));
        }
        Ok(accepted)
    });
}
