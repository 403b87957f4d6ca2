//! Helpers of the 1-Lipschitz layers: the AOL rescaling (Prach & Lampert 2022), the SLL
//! multipliers (Araujo et al. 2023, dense and convolutional), and the Gram-iteration count of
//! CPL (Meunier et al. 2022) and spectral-normalised layers (Delattre et al. 2023).
use tch::{Kind, Tensor};

/// Gram iterations of the guaranteed spectral-norm bounds inside CPL and spectral-normalised
/// layers. Any count gives an upper bound; 6 is within ~1e-3 of the true norm in practice.
pub const ONE_LIP_GRAM_ITERS: u32 = 6;

/// The column scaling of AOL: `d_j = (sum_i |W^T W|_ij)^(-1/2)` for weight `[out, in]`.
pub fn aol_scale(weight: &Tensor) -> Tensor {
    let wtw = weight.tr().matmul(weight).abs();
    (wtw.sum_dim_intlist([1i64].as_slice(), false, None::<Kind>) + 1e-12).rsqrt()
}

/// The conv SLL multipliers: `t_i = q_i / sum_j M_ij q_j` with
/// `M_ij = sum_offsets |(K_i * K_j)(offset)|` for a kernel `[inner, channels, k, k]`.
pub fn sll_conv_t(weight: &Tensor, q_log: &Tensor) -> Tensor {
    let k = weight.size()[2];
    let kk = weight
        .conv2d(weight, None::<Tensor>, [1, 1], [k - 1, k - 1], [1, 1], 1)
        .abs()
        .sum_dim_intlist([2i64, 3].as_slice(), false, None::<Kind>);
    let q = q_log.exp();
    &q / (kk.matmul(&q) + 1e-12)
}

/// The SLL multipliers `t_i = q_i / sum_j |W W^T|_ij q_j`.
pub fn sll_t(weight: &Tensor, q_log: &Tensor) -> Tensor {
    let q = q_log.exp();
    let wwt = weight.matmul(&weight.tr()).abs();
    &q / (wwt.matmul(&q) + 1e-12)
}

#[cfg(test)]
mod tests {
    use crate::config::{Arch, ModelConfig};
    use crate::model::{Layer, Network};
    use tch::{Device, Kind, Tensor};

    /// The largest singular value, by SVD.
    fn spectral_norm(m: &Tensor) -> f64 {
        m.detach()
            .to_kind(Kind::Double)
            .svd(true, false)
            .1
            .max()
            .double_value(&[])
    }

    /// The Jacobian `[outputs, inputs]` (double) of `f` at one point `x` (`[1, ..]`), a row
    /// per output by autograd.
    fn jacobian(f: &dyn Fn(&Tensor) -> Tensor, x: &Tensor) -> Tensor {
        let xa = x.detach().set_requires_grad(true);
        let y = f(&xa).reshape([1, -1]);
        let rows: Vec<Tensor> = (0..y.size()[1])
            .map(|i| {
                Tensor::run_backward(&[y.select(1, i).sum(y.kind())], &[&xa], true, false)
                    .pop()
                    .unwrap()
                    .reshape([-1])
            })
            .collect();
        Tensor::stack(&rows, 0).to_kind(Kind::Double)
    }

    #[test]
    fn one_lipschitz_layers_have_jacobian_norm_at_most_one() {
        for kind in [Kind::Double, Kind::Float] {
            let o = (kind, Device::Cpu);
            for seed in 0..4 {
                tch::manual_seed(100 + seed);
                let (d, h) = (8, 12);
                // Large, badly scaled weights: the constraints must do all the work.
                let w = Tensor::randn([h, d], o) * 3.0;
                let w_rect = Tensor::randn([5, d], o) * 3.0;
                let b = Tensor::randn([h], o);
                let layers = [
                    Layer::Sll {
                        weight: w.shallow_clone(),
                        bias: b.shallow_clone(),
                        q_log: Tensor::randn([h], o),
                    },
                    Layer::Cpl {
                        weight: w.shallow_clone(),
                        bias: b.shallow_clone(),
                    },
                    Layer::Aol {
                        weight: w_rect.shallow_clone(),
                        bias: Tensor::randn([5], o),
                    },
                    Layer::Spectral {
                        weight: w_rect.shallow_clone(),
                        bias: Tensor::randn([5], o),
                    },
                ];
                for layer in &layers {
                    let mut worst: f64 = 0.0;
                    for _ in 0..20 {
                        let x = Tensor::randn([1, d], o) * 2.0;
                        let j = jacobian(&|t| layer.forward(t), &x);
                        worst = worst.max(spectral_norm(&j));
                    }
                    assert!(
                        worst <= 1.0 + 1e-5,
                        "{} ({kind:?}, seed {seed}): Jacobian norm {worst}",
                        layer.kind_name()
                    );
                    assert!(
                        worst > 0.3,
                        "{}: suspiciously small {worst}",
                        layer.kind_name()
                    );
                }
                // The same residual without the SLL/CPL scaling is far from 1-Lipschitz: the
                // check above can fail.
                let naive = Layer::Sll {
                    weight: w.shallow_clone(),
                    bias: b.shallow_clone(),
                    q_log: Tensor::zeros([h], o),
                };
                let x = Tensor::randn([1, d], o);
                let raw = spectral_norm(&jacobian(
                    &|xa| xa - xa.linear(&w, Some(&b)).relu().matmul(&w) * 2.0,
                    &x,
                ));
                let scaled = spectral_norm(&jacobian(&|t| naive.forward(t), &x));
                assert!(raw > 2.0 && scaled <= 1.0 + 1e-5, "raw {raw}, sll {scaled}");
            }
        }
    }

    #[test]
    fn conv_sll_layer_has_jacobian_norm_at_most_one() {
        for kind in [Kind::Double, Kind::Float] {
            let o = (kind, Device::Cpu);
            for (seed, (c, inner, k, n)) in [(2, 4, 3, 5), (3, 3, 3, 4), (1, 5, 5, 6)]
                .into_iter()
                .enumerate()
            {
                tch::manual_seed(200 + seed as i64);
                let layer = Layer::SllConv {
                    weight: Tensor::randn([inner, c, k, k], o) * 2.0,
                    bias: Tensor::randn([inner], o),
                    q_log: Tensor::randn([inner], o),
                };
                let mut worst: f64 = 0.0;
                for _ in 0..10 {
                    let x = Tensor::randn([1, c, n, n], o);
                    let j = jacobian(&|t| layer.forward(t), &x);
                    assert_eq!(j.size(), [c * n * n, c * n * n], "same shape out");
                    worst = worst.max(spectral_norm(&j));
                }
                assert!(worst <= 1.0 + 1e-5, "conv SLL {c}->{inner} k{k}: {worst}");
                assert!(worst > 0.3, "suspiciously small {worst}");
            }
        }
    }

    #[test]
    fn sll_conv_network_has_jacobian_norm_at_most_one() {
        // The whole `sll-conv` architecture (channel padding, two conv SLL blocks, spectral head)
        // with weights and multipliers pushed far from their initialisation.
        let cfg = ModelConfig {
            arch: Arch::SllConv,
            hidden: vec![3, 5],
            normalize: false,
        };
        for seed in 0..3 {
            tch::manual_seed(300 + seed);
            let net = Network::from_config(&cfg, &[2, 5, 5], 4, None, Device::Cpu).unwrap();
            assert!(matches!(net.layers[0], Layer::PadChannels { channels: 3 }));
            tch::no_grad(|| {
                for p in net.parameters() {
                    let mut p = p;
                    let noise = Tensor::randn(p.size().as_slice(), (p.kind(), p.device())) * 2.0;
                    p.copy_(&noise);
                }
            });
            let mut worst: f64 = 0.0;
            for _ in 0..8 {
                let x = Tensor::rand([1, 2, 5, 5], (Kind::Float, Device::Cpu));
                let j = jacobian(&|t| net.forward(t), &x);
                assert_eq!(j.size(), [4, 50]);
                worst = worst.max(spectral_norm(&j));
            }
            assert!(
                worst <= 1.0 + 1e-4,
                "sll-conv seed {seed}: Jacobian norm {worst}"
            );
            assert!(worst > 0.05, "suspiciously small {worst}");
        }
    }
}
