//! The real training loop, end to end, checked evaluation by evaluation: what the run reports
//! must be consistent (cert <= PGD <= clean), and the final model point by point.
use certlab::config::{BoundMethod, DatasetKind, DeviceChoice, ExperimentConfig, Method};
use certlab::eval::{robust_masks, specs_from_config, RobustMasks};
use certlab::metrics::{EpsEval, EvalRecord};
use certlab::protocol::{Event, Level};
use certlab::run::RunWriter;
use certlab::train::{prepare, train, Control};
use tch::{Device, Tensor};

/// IBP training's loss is `kappa CE(clean) + (1 - kappa) CE(robust)`: two parts that add up
/// to the epoch's loss.
fn check_loss_parts(r: &EvalRecord) {
    let parts: Vec<&str> = r.loss_parts.keys().map(|k| k.as_str()).collect();
    assert_eq!(parts, ["clean_ce", "robust_ce"], "epoch {}", r.epoch);
    let sum: f64 = r.loss_parts.values().sum();
    assert!(
        (sum - r.train_loss).abs() <= 1e-5 * r.train_loss.abs().max(1.0),
        "epoch {}: loss parts add up to {sum}, train_loss {}",
        r.epoch,
        r.train_loss
    );
}

const TESTED_BOUNDS: [BoundMethod; 5] = BoundMethod::ALL;

fn bools(t: &Tensor) -> Vec<bool> {
    Vec::<bool>::try_from(t.to_device(Device::Cpu)).unwrap()
}

fn assert_nested(m: &RobustMasks, what: &str) {
    let clean = bools(&m.clean);
    let pgd = m.pgd.as_ref().map(bools).unwrap_or_else(|| clean.clone());
    for i in 0..clean.len() {
        assert!(
            !pgd[i] || clean[i],
            "{what}: point {i} is PGD-robust but misclassified"
        );
        for (method, c) in &m.cert {
            let c = bools(c);
            assert!(
                !c[i] || pgd[i],
                "{what}: point {i} is certified by {} but PGD breaks it",
                method.name()
            );
        }
    }
    assert!(m.violations.is_empty(), "{what}: {}", m.violations[0]);
}

/// Trains a tiny IBP model on two moons for a few epochs through the real training loop
/// and checks every evaluation: cert <= PGD <= clean, no soundness violation logged, and
/// PGD at eps 0 equal to clean accuracy. Then re-checks the final model point by point.
#[test]
fn cert_le_pgd_le_clean_on_every_evaluation_of_a_training_run() {
    let mut cfg = ExperimentConfig::default_experiment();
    cfg.dataset.kind = DatasetKind::Moons;
    cfg.dataset.toy_points = 300;
    cfg.model.hidden = vec![32, 32];
    cfg.train.method = Method::Ibp;
    cfg.train.eps = 0.05;
    cfg.train.epochs = 4;
    cfg.train.ramp_epochs = 2;
    cfg.train.batch_size = 32;
    cfg.eval.eps = vec![0.0, 0.02, 0.05, 0.1];
    cfg.eval.bounds = TESTED_BOUNDS.to_vec();
    cfg.eval.pgd_steps = 20;
    cfg.eval.pgd_restarts = 2;
    cfg.eval.robust_subset = 0; // the whole test split, so clean_acc is on the same points
    cfg.device = DeviceChoice::Cpu;
    let tmp = tempfile::tempdir().unwrap();
    let mut run = RunWriter::create(&tmp.path().join("run"), &cfg).unwrap();
    let mut prep = prepare(&cfg, Device::Cpu).unwrap();
    let (_tx, rx) = crossbeam_channel::bounded(1);
    let control = Control {
        commands: rx,
        cancel: Default::default(),
    };
    let mut events = Vec::new();
    train(&cfg, &mut prep, &mut run, &control, &mut |e| events.push(e)).unwrap();
    let records: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Metrics(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    // Four epochs on the validation split, then the last and best models on the test split:
    // every one of them must be consistent.
    assert_eq!(records.len(), 6);
    assert_eq!(records.iter().filter(|r| r.is_final()).count(), 2);
    let mut saw_certified = false;
    for r in &records {
        if r.is_final() {
            assert!(r.loss_parts.is_empty(), "a final evaluation trains nothing");
        } else {
            check_loss_parts(r);
        }
        let mut evals = vec![EpsEval {
            eps: r.eval_eps.unwrap(),
            pgd_acc: r.pgd_acc,
            cert_acc: r.cert_acc.clone(),
        }];
        evals.extend(r.more_eps.iter().cloned());
        assert_eq!(evals.len(), 4);
        for e in evals {
            let pgd = e.pgd_acc.unwrap();
            assert!(
                pgd <= r.clean_acc,
                "epoch {} eps {}: pgd {pgd} > clean {}",
                r.epoch,
                e.eps,
                r.clean_acc
            );
            if e.eps == 0.0 {
                assert_eq!(
                    pgd, r.clean_acc,
                    "epoch {}: PGD at eps 0 must equal clean",
                    r.epoch
                );
            }
            for (m, c) in &e.cert_acc {
                assert!(
                    *c <= pgd,
                    "epoch {} eps {}: cert[{m}] {c} > pgd {pgd}",
                    r.epoch,
                    e.eps
                );
                saw_certified |= e.eps > 0.0 && *c > 0.0;
            }
        }
    }
    assert!(
        saw_certified,
        "the IBP-trained model should certify some points"
    );
    let errors: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Log {
                level: Level::Error,
                message,
            } => Some(message.clone()),
            _ => None,
        })
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    for spec in specs_from_config(&cfg) {
        let m = robust_masks(&prep.net, &prep.data.test_x, &prep.data.test_y, &spec);
        assert_nested(&m, &format!("final model, eps {}", spec.eps));
    }
}
