//! The exact pre-activation bounds of a convolution's neurons in "patches" form (Xu et al.
//! 2020, as auto_LiRPA bounds convolutions): the backward pass of one neuron of a conv layer
//! only ever touches the input window that neuron sees, so each row of the linear function is
//! kept as that window (`[C, K, K]`) and where it sits, not as a dense map of the whole layer.
//!
//! A row `r` of example `b` is `sum p[b, r] . h[:, y0 .. y0 + K, x0 .. x0 + K]` over the output
//! `h` of the layer the pass has reached, with `(y0, x0) = (gy S - P, gx S - P)` and `(gy, gx)`
//! the row's neuron's position on the grid of the conv it started from. Walking back:
//! - through a conv (weight `[Co, Ci, k, k]`, stride `s`, padding `p`) each window is
//!   transposed-convolved with the weight (a matrix product and `col2im`): `K <- (K - 1) s + k`, `S <- S s`, `P <- P s + p`;
//!   the bias adds `sum p[c] b[c]`;
//! - through a ReLU, each window is multiplied by the window of the relaxation's slopes at
//!   the same place (and the upper line's intercept is collected), read by `im2col`;
//! - at the input, the window of the input box closes the pass.
//!
//! Positions of a window that fall outside the map (a conv's zero padding) are not neurons:
//! they are zeroed before they could count (a ReLU's slope windows are zero there; elsewhere
//! a mask of the map's ones). The numbers are those of the dense pass, to rounding (test
//! `patches_equal_the_dense_pass`); on the Small convnet the rows are about 12 times smaller.
use super::input::input_box;
use super::relax::Relaxer;
use crate::config::Norm;
use crate::model::Layer;
use tch::{Kind, Tensor};

/// Rows of linear functions of one layer's output, each nonzero on one window only. The rows
/// come in groups, one group per selected position of the starting grid with the same `R`
/// rows at every position (a conv's channels, and their negations): the windows of a map are
/// then read once per position and shared by its rows.
struct Patches {
    /// `[Bp, L, R, C, K, K]` (`Bp` is 1 while the rows are the same for every example).
    p: Tensor,
    /// `[L]`: the selected positions on the starting grid, `gy * gw + gx`.
    loc: Tensor,
    /// The starting grid `(gh, gw)`: the output size of the conv the rows started from.
    grid: (i64, i64),
    kernel: i64,
    stride: i64,
    pad: i64,
    /// Whether every window position outside the current map is already zero.
    clean: bool,
}

impl Patches {
    /// The window of `map` (`[B, C, H, W]`) at every selected position: `[B, L, 1, C, K, K]`,
    /// zero where the window leaves the map.
    fn windows(&self, map: &Tensor) -> Tensor {
        let size = map.size();
        let (b, c, h, w) = (size[0], size[1], size[2], size[3]);
        let (gh, gw) = self.grid;
        let (k, s, p) = (self.kernel, self.stride, self.pad);
        // Pad P on top and left (the rows' origin) and as much as the last window needs on
        // the bottom and right.
        let bottom = ((gh - 1) * s + k - h - p).max(0);
        let right = ((gw - 1) * s + k - w - p).max(0);
        let padded = map.constant_pad_nd([p, right, p, bottom]);
        // `[B, C K K, L']` over the padded map's window grid, which starts at the rows'
        // origin and has at least `gh x gw` windows.
        let cols = padded.im2col([k, k], [1, 1], [0, 0], [s, s]);
        let pw = (w + p + right - k) / s + 1;
        let loc = if pw == gw {
            self.loc.shallow_clone()
        } else {
            self.loc.divide_scalar_mode(gw, "floor") * pw + self.loc.remainder(gw)
        };
        let l = loc.size()[0];
        cols.index_select(2, &loc)
            .transpose(1, 2)
            .reshape([b, l, 1, c, k, k])
    }

    /// Zeroes the window positions outside a map of `(h, w)` (once; a no-op when clean).
    fn clip(&mut self, h: i64, w: i64) {
        if self.clean {
            return;
        }
        let ones = Tensor::ones([1, 1, h, w], (self.p.kind(), self.p.device()));
        self.p = &self.p * self.windows(&ones);
        self.clean = true;
    }

    /// Sums each window (`[B, L, R, C, K, K] -> [B, L, R]`).
    fn total(t: &Tensor) -> Tensor {
        t.flatten(3, -1)
            .sum_dim_intlist([3i64].as_slice(), false, None::<Kind>)
    }
}

/// Whether the neurons of layer `i - 1`'s output can be bounded in patches form: that layer
/// is a convolution and only convolutions, ReLUs and normalisation lie before it.
pub(super) fn applies(layers: &[Layer], i: usize) -> bool {
    i >= 1
        && matches!(layers[i - 1], Layer::Conv2d { .. })
        && layers[..i - 1].iter().all(|l| {
            matches!(
                l,
                Layer::Conv2d { .. } | Layer::Relu | Layer::Normalize { .. }
            )
        })
}

/// Whether alpha-CROWN's slopes can go through a pass in patches form: each layer's slopes
/// are shared by the rows (`[B or 1, 1, ..]`).
pub(super) fn shared_slopes(slopes: &[Option<Tensor>]) -> bool {
    slopes.iter().flatten().all(|a| a.size()[1] == 1)
}

/// Floats per example of the patches of ReLU `i`'s input neurons and their negations (two
/// rows per neuron), at the widest point of the backward pass: `2 n C_j K_j^2` for the
/// windows over each earlier map `j`.
pub(super) fn floats(layers: &[Layer], shapes: &[Vec<i64>], i: usize) -> i64 {
    let rows = 2 * shapes[i].iter().product::<i64>();
    let (mut kernel, mut widest) = (1, 1);
    for j in (0..i).rev() {
        if let Layer::Conv2d { weight, stride, .. } = &layers[j] {
            kernel = (kernel - 1) * stride + weight.size()[2];
        }
        widest = widest.max(shapes[j][0] * kernel * kernel);
    }
    rows * widest
}

impl Relaxer<'_> {
    /// Whether the neurons of layer `i - 1`'s output can be bounded in patches form
    /// ([`applies`]).
    pub(super) fn patches_apply(&self, i: usize) -> bool {
        #[cfg(test)]
        if super::tests::DENSE_ONLY.with(|d| d.get()) {
            return false;
        }
        applies(self.layers, i)
    }

    /// Lower and upper bounds of layer `i - 1`'s output (a conv's: see
    /// [`Relaxer::patches_apply`]) at the grid positions `loc` (`[L]`), every channel: `[B,
    /// L, Co]` each, by the backward pass of the identity rows and their negations in patches
    /// form. With parallel lines (Fast-Lin) one pass serves both bounds through the
    /// intercepts' spread.
    ///
    /// `slopes` (alpha-CROWN): per ReLU layer, lower-line slopes of its unstable neurons shared
    /// by every row, `[B or 1, 1, ..]` (see [`shared_slopes`]).
    pub(super) fn patch_bounds(
        &self,
        i: usize,
        loc: &Tensor,
        parallel: bool,
        slopes: Option<&[Option<Tensor>]>,
    ) -> (Tensor, Tensor) {
        let Layer::Conv2d {
            weight,
            bias,
            stride,
            padding,
        } = &self.layers[i - 1]
        else {
            unreachable!("patch_bounds starts at a convolution (patches_apply)")
        };
        let out = &self.shapes[i];
        let ws = weight.size();
        let co = ws[0];
        let (p, offset) = if parallel {
            (weight.shallow_clone(), bias.shallow_clone())
        } else {
            (
                Tensor::cat(&[weight, &weight.neg()], 0),
                Tensor::cat(&[bias, &bias.neg()], 0),
            )
        };
        let l = loc.size()[0];
        let r = p.size()[0];
        let start = Patches {
            p: p.reshape([1, 1, r, ws[1], ws[2], ws[3]])
                .expand([1, l, r, ws[1], ws[2], ws[3]], false),
            loc: loc.shallow_clone(),
            grid: (out[1], out[2]),
            kernel: ws[2],
            stride: *stride,
            pad: *padding,
            clean: false,
        };
        let offset = offset.reshape([1, 1, r]);
        let (patches, offset, spread) = self.patch_backward(i - 1, start, offset, parallel, slopes);
        let (min, max) = self.patch_input_range(patches);
        if parallel {
            (min + &offset, max + offset + spread)
        } else {
            let lower = min + offset;
            (lower.narrow(2, 0, co), lower.narrow(2, co, co).neg())
        }
    }

    /// Walks the rows, which are linear functions of the output of layer `upto - 1`, back to
    /// the input. Returns the input windows, the offset (`[B or Bp, L or 1, R]`) and, with `spread`,
    /// `sum |p| . intercept` over the ReLUs.
    fn patch_backward(
        &self,
        upto: usize,
        mut a: Patches,
        mut offset: Tensor,
        spread: bool,
        slopes: Option<&[Option<Tensor>]>,
    ) -> (Patches, Tensor, Tensor) {
        let opts = (self.x.kind(), self.x.device());
        let mut widened = Tensor::zeros([1, 1, 1], opts);
        for i in (0..upto).rev() {
            let map = &self.shapes[i];
            match &self.layers[i] {
                Layer::Conv2d {
                    weight,
                    bias,
                    stride,
                    padding,
                } => {
                    let out = &self.shapes[i + 1];
                    a.clip(out[1], out[2]);
                    let size = a.p.size();
                    let per_channel =
                        a.p.sum_dim_intlist([4i64, 5].as_slice(), false, None::<Kind>);
                    offset = offset + per_channel.matmul(bias);
                    // The transposed convolution of every window at once: one matrix product
                    // `W^T p` for the columns (`[N, Ci k k, K K]`), then `col2im` adds each
                    // column into the wider window. On many small windows this is about twice
                    // as fast as `conv_transpose2d`, which loops over them.
                    let ws = weight.size();
                    let (n, kernel) = (size[0] * size[1] * size[2], size[4]);
                    let cols = weight
                        .reshape([ws[0], ws[1] * ws[2] * ws[3]])
                        .transpose(0, 1)
                        .matmul(&a.p.reshape([n, ws[0], kernel * kernel]));
                    let k = (kernel - 1) * stride + ws[2];
                    let t = cols.col2im([k, k], [ws[2], ws[3]], [1, 1], [0, 0], [*stride; 2]);
                    a.p = t.reshape([size[0], size[1], size[2], map[0], k, k]);
                    a.kernel = k;
                    a.pad = a.pad * stride + padding;
                    a.stride *= stride;
                    a.clean = false;
                }
                Layer::Relu => {
                    let Some(lines) = &self.lines[i] else {
                        unreachable!("every ReLU has its lines before a backward pass")
                    };
                    let c = map[0];
                    let lower_slope = lines.lower_slope_with(slopes.and_then(|s| s[i].as_ref()));
                    // One gather for the three maps.
                    let maps =
                        Tensor::cat(&[&lower_slope, &lines.upper_slope, &lines.upper_icpt], 2)
                            .squeeze_dim(1);
                    let win = a.windows(&maps);
                    let (lower, upper, icpt) = (
                        win.narrow(3, 0, c),
                        win.narrow(3, c, c),
                        win.narrow(3, 2 * c, c),
                    );
                    let pos = a.p.clamp_min(0.0);
                    let neg = a.p.clamp_max(0.0);
                    offset = offset + Patches::total(&(&neg * &icpt));
                    if spread {
                        widened = widened + Patches::total(&(a.p.abs() * &icpt));
                    }
                    a.p = pos * lower + neg * upper;
                    a.clean = true;
                }
                Layer::Normalize { mean, std } => {
                    a.clip(map[1], map[2]);
                    let scaled = &a.p / std;
                    offset = offset - Patches::total(&(&scaled * mean));
                    a.p = scaled;
                }
                _ => unreachable!("patches_apply admits convolutions, ReLUs and normalisation"),
            }
        }
        (a, offset, widened)
    }

    /// `(min, max)` of the rows over the input set, `[B, L, R]` each, as
    /// [`super::input::input_range`] computes them for dense rows: exact over the clipped box
    /// for l_inf; for l_2 the tighter of the ball's and the box's.
    fn patch_input_range(&self, mut a: Patches) -> (Tensor, Tensor) {
        let shape = &self.shapes[0];
        a.clip(shape[1], shape[2]);
        let (lo, hi) = input_box(&self.x, self.ball);
        let mid = Patches::total(&(&a.p * a.windows(&((&lo + &hi) / 2.0))));
        let radius = Patches::total(&(a.p.abs() * a.windows(&((&hi - &lo) / 2.0))));
        let (box_min, box_max) = (&mid - &radius, mid + radius);
        match self.ball.norm {
            Norm::Linf => (box_min, box_max),
            Norm::L2 => {
                let at_x = Patches::total(&(&a.p * a.windows(&self.x)));
                let norm = Patches::total(&a.p.square()).clamp_min(1e-30).sqrt();
                let reach = norm * self.ball.eps;
                let ball_min = &at_x - &reach;
                (ball_min.maximum(&box_min), (at_x + reach).minimum(&box_max))
            }
        }
    }
}

/// The patches pass against the dense one (`super::tests::DENSE_ONLY` forces the dense pass).
#[cfg(test)]
mod tests {
    use super::super::tests::{conv, lin, net64, opts, DENSE_ONLY};
    use super::super::*;
    use super::*;
    use crate::model::{LayerSpec, Network};
    use tch::Device;

    /// Convnets whose convolutions cover the cases the patches' geometry must get right: stride 1
    /// and 2, padding 0 to 2, kernels 2 to 5, windows that leave the map on the bottom and right
    /// only (7 -> 3 with stride 2), three convolutions deep, with and without normalisation.
    fn patch_nets(seed: i64) -> Vec<(Network, Vec<i64>)> {
        let norm = LayerSpec::Normalize {
            mean: vec![0.3, 0.5],
            std: vec![0.6, 0.8],
        };
        let a = vec![
            norm,
            conv(2, 3, 4, 2, 1),
            LayerSpec::Relu,
            conv(3, 4, 3, 1, 1),
            LayerSpec::Relu,
            conv(4, 3, 2, 2, 0),
            LayerSpec::Relu,
            LayerSpec::Flatten,
            lin(12, 4),
        ];
        let b = vec![
            conv(1, 3, 5, 1, 2),
            LayerSpec::Relu,
            conv(3, 4, 3, 2, 0),
            LayerSpec::Relu,
            LayerSpec::Flatten,
            lin(36, 3),
        ];
        vec![
            (net64(a, &[2, 9, 9], 4, seed), vec![2, 9, 9]),
            (net64(b, &[1, 8, 7], 3, seed), vec![1, 8, 7]),
        ]
    }

    #[test]
    fn patches_equal_the_dense_pass() {
        // Every row choice, both relaxations and both norms: the bounds of each conv neuron in
        // patches form equal the dense pass's, and so do the margins and their gradients.
        for seed in [0] {
            for (net, input) in patch_nets(seed) {
                let layers = walked(&net);
                let mut shape = vec![4];
                shape.extend_from_slice(&input);
                tch::manual_seed(7 + seed);
                let x = Tensor::rand(shape.as_slice(), opts());
                let y = Tensor::randint(net.num_classes, [4], (Kind::Int64, Device::Cpu));
                for (norm, eps) in [(Norm::Linf, 0.08), (Norm::L2, 0.5)] {
                    let ball = Ball { eps, norm };
                    for relax in [Relaxation::Crown, Relaxation::Fastlin] {
                        let relaxed = Relaxed {
                            relax,
                            inter: Intermediate::Exact,
                        };
                        let r = Relaxer::new(&layers, &x, ball, relaxed);
                        let mut checked = 0;
                        for i in 1..layers.len() {
                            if !(matches!(layers[i], Layer::Relu) && r.patches_apply(i)) {
                                continue;
                            }
                            let shape = &r.shapes[i];
                            let (co, plane) = (shape[0], shape[1] * shape[2]);
                            let n = co * plane;
                            let every = Tensor::arange(n, (Kind::Int64, Device::Cpu));
                            let dense = r.dense_rows_bounds(i, &every, None);
                            // All positions, then a random half of them (in random order).
                            let all = Tensor::arange(plane, (Kind::Int64, Device::Cpu));
                            let some = Tensor::rand([plane], opts()).argsort(0, false).narrow(
                                0,
                                0,
                                plane / 2 + 1,
                            );
                            for (what, loc) in [("all positions", all), ("some positions", some)] {
                                let (pl, pu) =
                                    r.patch_bounds(i, &loc, relax == Relaxation::Fastlin, None);
                                let pick = |t: &Tensor| {
                                    t.reshape([4, co, plane])
                                        .index_select(2, &loc)
                                        .transpose(1, 2)
                                };
                                for (side, dt, pt) in
                                    [("lower", pick(&dense.0), pl), ("upper", pick(&dense.1), pu)]
                                {
                                    let diff = (dt - pt).abs().max().double_value(&[]);
                                    assert!(
                                        diff < 1e-10,
                                        "seed {seed} {norm:?} {relax:?} layer {i} {what} {side}: patches differ by {diff:e}"
                                    );
                                }
                            }
                            checked += 1;
                        }
                        assert!(checked >= 1, "no conv layer took the patches path");
                        // End to end, with gradients with respect to the weights.
                        let run = |dense: bool| {
                            DENSE_ONLY.with(|d| d.set(dense));
                            for v in net.vs.trainable_variables() {
                                let mut g = v.grad();
                                if g.defined() {
                                    let _ = g.zero_();
                                }
                            }
                            let m = margin_lower_relaxed(&net, &x, &y, ball, relaxed);
                            m.sum(Kind::Double).backward();
                            DENSE_ONLY.with(|d| d.set(false));
                            let grads: Vec<Tensor> = net
                                .vs
                                .trainable_variables()
                                .iter()
                                .map(|v| v.grad().copy())
                                .collect();
                            (m, grads)
                        };
                        let (m_dense, g_dense) = run(true);
                        let (m_patch, g_patch) = run(false);
                        let diff = (&m_dense - &m_patch).abs().max().double_value(&[]);
                        assert!(
                            diff < 1e-10,
                            "{norm:?} {relax:?}: margins differ by {diff:e}"
                        );
                        for (gd, gp) in g_dense.iter().zip(&g_patch) {
                            let diff = (gd - gp).abs().max().double_value(&[]);
                            assert!(
                                diff < 1e-9,
                                "{norm:?} {relax:?}: gradients differ by {diff:e}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn shared_slopes_in_patches_form_equal_the_dense_pass() {
        // alpha-CROWN's bounds of a convolution's neurons with slopes shared by the rows take the
        // patches path: for random slopes, the bounds and their gradients with respect to the
        // slopes equal the dense pass's.
        for (net, input) in patch_nets(3) {
            let layers = walked(&net);
            let mut shape = vec![3];
            shape.extend_from_slice(&input);
            tch::manual_seed(11);
            let x = Tensor::rand(shape.as_slice(), opts());
            let ball = Ball {
                eps: 0.08,
                norm: Norm::Linf,
            };
            let r = Relaxer::new(&layers, &x, ball, BoundMethod::Crown.relaxed().unwrap());
            for j in (1..layers.len())
                .filter(|&j| matches!(layers[j], Layer::Relu) && r.patches_apply(j))
            {
                let slopes: Vec<Option<Tensor>> = (0..layers.len())
                    .map(|i| {
                        (i < j && r.lines[i].is_some()).then(|| {
                            let mut s = vec![3, 1];
                            s.extend_from_slice(&r.shapes[i]);
                            Tensor::rand(s.as_slice(), opts()).set_requires_grad(true)
                        })
                    })
                    .collect();
                let vars: Vec<Tensor> =
                    slopes.iter().flatten().map(|t| t.shallow_clone()).collect();
                if vars.is_empty() {
                    // The first ReLU: nothing before it to take slopes.
                    continue;
                }
                let lines = r.lines[j].as_ref().unwrap();
                let (l, u) = (lines.l.squeeze_dim(1), lines.u.squeeze_dim(1));
                let every = l.lt(f64::INFINITY);
                let (pl, pu) = r.patch_bounds_at(
                    j,
                    &l.flatten(1, -1),
                    &u.flatten(1, -1),
                    &every,
                    Some(&slopes),
                );
                let n: i64 = r.shapes[j].iter().product();
                let eye = Tensor::eye(n, opts());
                let mut full = vec![1, 2 * n];
                full.extend_from_slice(&r.shapes[j]);
                let lambda = Tensor::cat(&[&eye, &eye.neg()], 0).reshape(full.as_slice());
                let pass = crate::bounds::relax::Pass {
                    slopes: Some(&slopes),
                    ..Default::default()
                };
                let (lam, off) = r.backward_pass(j, lambda, pass);
                let both = crate::bounds::input::input_minimum(&lam, &r.x, ball, false).0 + off;
                let (dl, du) = (both.narrow(1, 0, n), both.narrow(1, n, n).neg());
                for (side, d, p) in [("lower", &dl, &pl), ("upper", &du, &pu)] {
                    let diff = (d - p).abs().max().double_value(&[]);
                    assert!(diff < 1e-10, "layer {j} {side}: patches differ by {diff:e}");
                }
                let weights = Tensor::rand([3, n], opts());
                let grads = |lo: &Tensor, hi: &Tensor| {
                    let loss = ((lo - hi) * &weights).sum(Kind::Double);
                    Tensor::run_backward(&[loss], &vars, true, false)
                };
                for (gd, gp) in grads(&dl, &du).iter().zip(grads(&pl, &pu).iter()) {
                    let diff = (gd - gp).abs().max().double_value(&[]);
                    assert!(diff < 1e-9, "layer {j}: slope gradients differ by {diff:e}");
                }
            }
        }
    }
}
