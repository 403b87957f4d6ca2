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
