//! Lipschitz training end to end, through the public API: the enforced bound, the regulariser
//! (Gram and LipSDP), the l_2 certificate checked against PGD point by point (dense
//! 1-Lipschitz nets, MLPs, a convnet), and the config's refusal of bounds on 1-Lipschitz nets.
use certlab::attack::{self, AttackLoss, PgdConfig};
use certlab::config::{
    Arch, BoundMethod, DatasetConfig, DatasetKind, DeviceChoice, Estimator, ExperimentConfig,
    LipBound, Method, Norm,
};
use certlab::lipschitz::{
    body_lipsdp, certificate_parts, estimate, l2_radius, layer_gram_bound, Settings, CERT_SAFETY,
};
use certlab::metrics::EvalRecord;
use certlab::model::Network;
use certlab::protocol::Event;
use certlab::run::RunWriter;
use certlab::train::{prepare, train, Control, Prepared};
use tch::{Device, Kind};

fn rel(a: f64, b: f64) -> f64 {
    (a - b) / b.abs()
}

fn moons_cfg(arch: Arch, method: Method) -> ExperimentConfig {
    let mut cfg = ExperimentConfig::default_experiment();
    cfg.model.arch = arch;
    cfg.model.hidden = vec![32, 32];
    cfg.dataset.toy_points = 400;
    cfg.train.method = method;
    cfg.train.epochs = 4;
    cfg.train.batch_size = 32;
    cfg.optimizer.lr = 0.02;
    cfg.eval.eps = vec![0.05];
    cfg.eval.norm = Norm::L2;
    cfg.eval.bounds = vec![];
    cfg.eval.pgd_steps = 10;
    cfg.eval.robust_subset = 0;
    cfg.device = DeviceChoice::Cpu;
    cfg
}

fn train_run(cfg: &ExperimentConfig) -> (Prepared, Vec<Event>) {
    assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    let tmp = tempfile::tempdir().unwrap();
    let mut run = RunWriter::create(&tmp.path().join("run"), cfg).unwrap();
    let mut prep = prepare(cfg, Device::Cpu).unwrap();
    let (_tx, rx) = crossbeam_channel::bounded(1);
    let control = Control {
        commands: rx,
        cancel: Default::default(),
    };
    let mut events: Vec<Event> = Vec::new();
    train(cfg, &mut prep, &mut run, &control, &mut |e| events.push(e)).unwrap();
    (prep, events)
}

/// The per-epoch records a run sent (without the final test evaluations).
fn records(events: &[Event]) -> Vec<EvalRecord> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Metrics(r) if !r.is_final() => Some(r.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn enforced_training_keeps_the_bound_below_the_target() {
    let mut cfg = moons_cfg(Arch::Mlp, Method::Lipschitz);
    cfg.train.lip_target = 1.5;
    cfg.train.lip_weight = 0.0;
    cfg.optimizer.lr = 0.05; // large steps push the weights up between projections
    cfg.eval.lipschitz = vec![Estimator::Exact, Estimator::Gram, Estimator::Empirical];
    let (prep, events) = train_run(&cfg);
    let recs = records(&events);
    assert_eq!(recs.len(), 4);
    for r in &recs {
        let max = r.lipschitz["train_bound_max"];
        let now = r.lipschitz["train_bound"];
        assert!(
            max <= 1.5 && now <= 1.5,
            "epoch {}: {:?}",
            r.epoch,
            r.lipschitz
        );
        // Independent: the per-layer SVD product and the empirical lower bound.
        assert!(
            r.lipschitz["exact"] <= now * (1.0 + 1e-9),
            "{:?}",
            r.lipschitz
        );
        assert!(r.lipschitz["empirical"] <= r.lipschitz["exact"] * (1.0 + 1e-9));
        assert!(r.cert_acc.contains_key("lipschitz"));
    }
    // The projection is active: without it the same run ends far above the target.
    assert!(recs.last().unwrap().lipschitz["train_bound"] > 1.4);
    let final_exact: f64 = estimate(&prep.net, &[Estimator::Product], None, &Settings::default())
        .unwrap()
        .network["product"];
    assert!(final_exact <= 1.5, "{final_exact}");
    let mut free = cfg.clone();
    free.train.method = Method::Standard;
    free.train.lip_target = 0.0;
    let (free_prep, _) = train_run(&free);
    let free_bound = estimate(
        &free_prep.net,
        &[Estimator::Product],
        None,
        &Settings::default(),
    )
    .unwrap()
    .network["product"];
    assert!(
        free_bound > 1.5,
        "unconstrained training stays at {free_bound}"
    );
    let logged = events.iter().any(|e| {
        matches!(e, Event::Log { message, .. } if message.contains("Lipschitz bound") && message.contains("target 1.5"))
    });
    assert!(logged);
}

#[test]
fn the_regularizer_lowers_the_bound() {
    let mut cfg = moons_cfg(Arch::Mlp, Method::Lipschitz);
    cfg.train.lip_weight = 0.5;
    let (reg, _) = train_run(&cfg);
    cfg.train.method = Method::Standard;
    cfg.train.lip_weight = 0.0;
    let (plain, _) = train_run(&cfg);
    let b = |n: &Network| {
        estimate(n, &[Estimator::Product], None, &Settings::default())
            .unwrap()
            .network["product"]
    };
    assert!(
        b(&reg.net) < b(&plain.net),
        "{} vs {}",
        b(&reg.net),
        b(&plain.net)
    );
    cfg.train.method = Method::Lipschitz;
    cfg.train.lip_weight = 0.5;
    cfg.train.lip_bound = LipBound::Lipsdp;
    cfg.train.epochs = 2;
    let (sdp, events) = train_run(&cfg);
    let recs = records(&events);
    assert!(recs.iter().all(|r| r.train_loss.is_finite()));
    assert!(b(&sdp.net) < b(&plain.net));
}

/// No PGD-l_2 point breaks a point the Lipschitz certificate certifies; and the attack is
/// strong enough that an inflated certificate would be caught.
#[test]
fn l2_lipschitz_certificates_are_sound_against_pgd() {
    for (arch, method, bound) in [
        (Arch::Sll, Method::Standard, LipBound::Gram),
        (Arch::Cpl, Method::Standard, LipBound::Gram),
        (Arch::Aol, Method::Standard, LipBound::Gram),
        (Arch::Spectral, Method::Standard, LipBound::Gram),
        (Arch::Mlp, Method::Lipschitz, LipBound::Gram),
        (Arch::Mlp, Method::Lipschitz, LipBound::Lipsdp),
    ] {
        let mut cfg = moons_cfg(arch, method);
        if method == Method::Lipschitz {
            cfg.train.lip_weight = 0.1;
            cfg.train.lip_bound = bound;
        }
        cfg.train.epochs = 6;
        let (prep, events) = train_run(&cfg);
        let recs = records(&events);
        assert!(recs.iter().all(|r| r.cert_acc.contains_key("lipschitz")));
        let net = &prep.net;
        let (x, y) = (&prep.data.test_x, &prep.data.test_y);
        let parts = certificate_parts(net, 6).unwrap();
        if arch == Arch::Mlp {
            // The body bound is LipSDP's when that is tighter than the Gram product.
            let shapes = net.layer_shapes();
            let n = net.layers.len();
            let gram_body: f64 = tch::no_grad(|| {
                (0..n - 1)
                    .filter_map(|i| layer_gram_bound(&net.layers[i], &shapes[i], 6))
                    .map(|b| b.to_kind(Kind::Double).double_value(&[]))
                    .product()
            });
            let sdp_body = body_lipsdp(net).unwrap();
            assert!(sdp_body <= gram_body, "{sdp_body} > {gram_body}");
            let expect = sdp_body * (1.0 + CERT_SAFETY);
            assert!(rel(parts.body_bound, expect).abs() < 1e-12);
        }
        let radius = l2_radius(net, &parts, x, y);
        let mut certified_any = false;
        let mut caught_inflated = false;
        for eps in [0.02, 0.05, 0.1, 0.2] {
            let cert = radius.gt(eps);
            let pgd = PgdConfig::evaluation(eps, Norm::L2, 50, 3, AttackLoss::Margin);
            let res = attack::pgd(net, x, y, &pgd);
            let broken = tch::no_grad(|| attack::correct(net, &res.x_adv, y)).logical_not();
            let bad = cert.logical_and(&broken).sum(Kind::Int64).int64_value(&[]);
            assert_eq!(
                bad,
                0,
                "{} eps {eps}: {bad} certified points broken by PGD",
                arch.name()
            );
            certified_any |= cert.sum(Kind::Int64).int64_value(&[]) > 0;
            // Ten times the radius is not a certificate: PGD breaks some such points.
            let inflated = (&radius * 10.0).gt(eps);
            caught_inflated |= inflated
                .logical_and(&broken)
                .sum(Kind::Int64)
                .int64_value(&[])
                > 0;
        }
        assert!(certified_any, "{}: nothing certified", arch.name());
        assert!(
            caught_inflated,
            "{}: PGD too weak to test the certificate",
            arch.name()
        );
    }
}

/// The conv path end to end: Gram bounds of conv layers (FFT blocks on the grown grid) in
/// the training loss and the enforced bound, conv estimators per epoch, and the l_2
/// certificate of a convnet checked against PGD point by point.
#[test]
fn lipschitz_training_and_certificate_on_a_small_convnet() {
    let mut cfg = ExperimentConfig::default_experiment();
    cfg.dataset = DatasetConfig {
        kind: DatasetKind::FashionMnist,
        train_size: 512,
        test_size: 200,
        ..Default::default()
    };
    cfg.model.arch = Arch::SmallConv;
    cfg.train.method = Method::Lipschitz;
    cfg.train.lip_weight = 0.01;
    cfg.train.lip_target = 3.0;
    cfg.train.epochs = 2;
    cfg.train.batch_size = 64;
    cfg.optimizer.lr = 0.003;
    cfg.eval.eps = vec![0.3];
    cfg.eval.norm = Norm::L2;
    cfg.eval.bounds = vec![];
    cfg.eval.pgd_steps = 20;
    cfg.eval.robust_subset = 0;
    cfg.eval.lipschitz = vec![Estimator::Power, Estimator::Exact, Estimator::Empirical];
    cfg.device = DeviceChoice::Cpu;
    let (prep, events) = train_run(&cfg);
    let recs = records(&events);
    assert_eq!(recs.len(), 2);
    for r in &recs {
        let l = &r.lipschitz;
        assert!(
            l["train_bound_max"] <= 3.0 && l["train_bound"] <= 3.0,
            "{l:?}"
        );
        assert!(l["exact"] <= l["train_bound"] * (1.0 + 1e-9), "{l:?}");
        assert!(l["power"] <= l["exact"] * (1.0 + 1e-9), "{l:?}");
        assert!(l["empirical"] <= l["exact"] * (1.0 + 1e-9), "{l:?}");
        assert!(r.cert_acc["lipschitz"] <= r.pgd_acc.unwrap(), "{r:?}");
    }
    let net = &prep.net;
    let (x, y) = (&prep.data.test_x, &prep.data.test_y);
    let parts = certificate_parts(net, 10).unwrap();
    let radius = l2_radius(net, &parts, x, y);
    let mut certified = 0;
    for eps in [0.1, 0.3] {
        let cert = radius.gt(eps);
        certified += cert.sum(Kind::Int64).int64_value(&[]);
        let res = attack::pgd(
            net,
            x,
            y,
            &PgdConfig::evaluation(eps, Norm::L2, 30, 2, AttackLoss::Margin),
        );
        let broken = tch::no_grad(|| attack::correct(net, &res.x_adv, y)).logical_not();
        let bad = cert.logical_and(&broken).sum(Kind::Int64).int64_value(&[]);
        assert_eq!(bad, 0, "eps {eps}: {bad} certified points broken");
    }
    assert!(certified > 0, "nothing certified");
}

#[test]
fn config_refuses_bounds_on_one_lipschitz_nets() {
    let mut cfg = moons_cfg(Arch::Sll, Method::Ibp);
    cfg.train.eps = 0.1;
    cfg.eval.bounds = vec![BoundMethod::Ibp];
    cfg.eval.lipschitz = vec![Estimator::Lipsdp];
    let fields: Vec<String> = cfg.validate().into_iter().map(|p| p.field).collect();
    for f in ["eval.bounds", "train.method", "eval.lipschitz"] {
        assert!(fields.iter().any(|x| x == f), "{f} not in {fields:?}");
    }
}
