//! The certified-training methods of round 2 through the real training loop: SABR
//! (Mueller et al. 2023), MTL-IBP / CC-IBP / Exp-IBP (De Palma et al. 2024), and the IBP
//! initialisation and warm-up regularizers of Shi et al. (2021) on IBP and CROWN-IBP.
use certlab::config::{BoundMethod, DatasetKind, DeviceChoice, ExperimentConfig, Init, Method};
use certlab::metrics::EvalRecord;
use certlab::model::Network;
use certlab::run::RunWriter;
use certlab::train::{memory, prepare, train, Control};
use tch::Device;

fn moons(method: Method) -> ExperimentConfig {
    let mut cfg = ExperimentConfig::default_experiment();
    cfg.dataset.kind = DatasetKind::Moons;
    cfg.dataset.toy_points = 300;
    cfg.model.hidden = vec![32, 32];
    cfg.train.method = method;
    cfg.train.eps = 0.05;
    cfg.train.epochs = 7;
    cfg.train.ramp_epochs = 2;
    cfg.train.batch_size = 32;
    cfg.train.pgd_steps = 5;
    cfg.train.final_kappa = 0.0;
    cfg.train.init = Init::Ibp;
    cfg.train.shi_reg_weight = 0.5;
    cfg.eval.eps = vec![0.05];
    cfg.eval.bounds = vec![BoundMethod::Ibp];
    cfg.eval.pgd_steps = 5;
    cfg.eval.robust_subset = 100;
    cfg.device = DeviceChoice::Cpu;
    cfg
}

fn run(cfg: &ExperimentConfig) -> Vec<EvalRecord> {
    assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    let tmp = tempfile::tempdir().unwrap();
    let mut run = RunWriter::create(&tmp.path().join("run"), cfg).unwrap();
    let mut prep = prepare(cfg, Device::Cpu).unwrap();
    let (_tx, rx) = crossbeam_channel::bounded(1);
    let control = Control {
        commands: rx,
        cancel: Default::default(),
    };
    train(cfg, &mut prep, &mut run, &control, &mut |_| {}).unwrap();
    let text = std::fs::read_to_string(tmp.path().join("run/metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Each method trains: at full eps (epochs 3 to 7) its loss goes down; every epoch writes
/// `loss_parts` that add up to the loss, with the method's terms; the Shi regularizers appear
/// while eps ramps up and are gone once it is at its final value.
#[test]
fn each_new_method_trains_and_writes_its_loss_parts() {
    let methods = [
        (Method::Sabr, vec!["clean_ce", "robust_ce"]),
        (Method::MtlIbp, vec!["adv_ce", "robust_ce"]),
        (Method::CcIbp, vec!["robust_ce"]),
        (Method::ExpIbp, vec!["robust_ce"]),
        (Method::Ibp, vec!["clean_ce", "robust_ce"]),
        (Method::CrownIbp, vec!["clean_ce", "robust_ce"]),
    ];
    for (method, terms) in methods {
        let records = run(&moons(method));
        let train: Vec<&EvalRecord> = records.iter().filter(|r| r.model.is_none()).collect();
        assert_eq!(train.len(), 7, "{method:?}");
        for r in &train {
            let mut want: Vec<&str> = terms.clone();
            if r.epoch <= 2 {
                want.extend(["shi_relu", "shi_tightness"]);
            }
            want.sort();
            let got: Vec<&str> = r.loss_parts.keys().map(|k| k.as_str()).collect();
            assert_eq!(got, want, "{method:?} epoch {}", r.epoch);
            let sum: f64 = r.loss_parts.values().sum();
            assert!(
                (sum - r.train_loss).abs() <= 1e-5 * r.train_loss.abs().max(1.0),
                "{method:?} epoch {}: parts {sum}, loss {}",
                r.epoch,
                r.train_loss
            );
            assert!(r.loss_parts.values().all(|v| v.is_finite() && *v >= 0.0));
        }
        let (first, last) = (train[2].train_loss, train[6].train_loss);
        assert!(
            last < first,
            "{method:?}: loss {first} at epoch 3, {last} at epoch 7"
        );
    }
}

/// The memory estimate counts the PGD point, one IBP pass and the forward pass at the PGD
/// point for SABR and the expressive losses: with `A` the activations of a batch (three floats
/// per layer output and example) and `P = 16 * input floats * batch` PGD's copies,
/// `A + P` (PGD) `+ 2 A` (IBP) `+ A`.
#[test]
fn memory_estimate_of_the_new_methods() {
    let mut cfg = moons(Method::Sabr);
    cfg.train.batch_size = 50;
    let net = Network::from_config(&cfg.model, &[2], 2, None, Device::Cpu).unwrap();
    let outputs: i64 = net
        .layer_shapes()
        .iter()
        .skip(1)
        .map(|s| s.iter().product::<i64>())
        .sum();
    let a = 3 * 4 * outputs as u64 * 50;
    let p = 4 * 4 * 2 * 50;
    let part = |cfg: &ExperimentConfig| {
        let est = memory::estimate(cfg).unwrap();
        est.parts
            .iter()
            .find(|p| p.0 == "training bounds")
            .unwrap()
            .1
    };
    for m in [Method::Sabr, Method::MtlIbp, Method::CcIbp, Method::ExpIbp] {
        cfg.train.method = m;
        assert_eq!(part(&cfg), a + p + 2 * a + a, "{m:?}");
    }
    // IBP with the Shi regularizers: their own IBP pass on top of the loss's.
    cfg.train.method = Method::Ibp;
    assert_eq!(part(&cfg), 4 * a);
    cfg.train.shi_reg_weight = 0.0;
    assert_eq!(part(&cfg), 2 * a);
}
