//! Fused element-wise kernels for the default CPU backend.
//!
//! Written as tensor operations, GPT-2's GELU is six passes over the MLP's
//! `[B,S,4D]` activations (cube, scale, add, scale, sigmoid, product) and
//! Llama's `silu(gate)·up` three, each single-threaded, and Flex computes
//! every sigmoid with a scalar `expf` call: on an AVX2 machine that was 16 %
//! of a tiny forward. Attention's softmax is five passes (maximum,
//! subtraction, exponential, sum, division; 1.5 % of a Qwen2-0.5B-shaped
//! forward). Here each is one pass, on every core, with an `exp`
//! the compiler vectorises (compiled for AVX-512, AVX2 + FMA and baseline
//! x86-64, picked at run time by what the CPU has). The steps of the
//! written-out norms are in [`norm`].
//!
//! Only a non-autodiff [`Flex`](burn_flex::Flex) tensor of `f32` takes this path (checked by
//! type, so generic model code keeps one signature); every other backend,
//! dtype and the autodiff backends use the composed operations, whose
//! gradients Burn already knows. The fused results agree with the composed
//! ones to a few ulp (tested in this module against float64).

use std::borrow::Cow;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use crate::backend::{cast, try_cast};

/// Elements per parallel task: large enough that splitting costs nothing,
/// small enough that both halves of a `[1, 16, 256]` activation still split.
const CHUNK: usize = 1 << 14;

/// `x` as a Flex `f32` tensor, or `x` back unchanged when it is not one.
fn as_flex_f32<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<FlexTensor, Tensor<B, D>> {
    let TensorPrimitive::Float(primitive) = x.into_primitive() else {
        unreachable!("a float tensor holds a float primitive unless quantized");
    };
    match try_cast::<_, FlexTensor>(primitive) {
        Ok(flex) if flex.dtype() == DType::F32 => Ok(flex),
        Ok(flex) => Err(from_flex(flex)),
        Err(primitive) => Err(Tensor::from_primitive(TensorPrimitive::Float(primitive))),
    }
}

/// The inverse of [`as_flex_f32`], for a `B` known to be Flex.
fn from_flex<B: Backend, const D: usize>(flex: FlexTensor) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(cast(flex)))
}

/// A Flex tensor's values, contiguous: a view of its buffer when it is
/// laid out so, else a copy.
fn values(x: &FlexTensor) -> Cow<'_, [f32]> {
    let n = x.layout().num_elements();
    if x.layout().is_contiguous() {
        Cow::Borrowed(&x.storage::<f32>()[x.layout().start_offset()..][..n])
    } else {
        Cow::Owned(x.to_contiguous().storage::<f32>()[..n].to_vec())
    }
}

/// Rows of `row` elements per parallel task: about [`CHUNK`] elements,
/// at least one row.
fn rows_per_task(row: usize) -> usize {
    (CHUNK / row).max(1)
}

/// `kernel(i, chunk)` run over the `i`-th `chunk`-long piece of `x`'s
/// values, in parallel, on the buffer this returns: `x`'s own when nothing
/// else holds it, else a fresh one (a hook that recorded `x` holds it). A
/// fresh buffer is filled piece by piece, each piece copied from `x` just
/// before the kernel runs on it, so that the copy is read back from cache
/// rather than being a pass of its own over the whole tensor.
fn overwrite(x: FlexTensor, chunk: usize, kernel: impl Fn(usize, &mut [f32]) + Sync) -> FlexTensor {
    // A strided view becomes a fresh buffer of its own here.
    let x = if x.layout().is_contiguous() {
        x
    } else {
        x.to_contiguous()
    };
    let n = x.layout().num_elements();
    if x.is_unique() && x.layout().start_offset() == 0 {
        let mut x = x;
        x.storage_mut::<f32>()[..n]
            .par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, piece)| kernel(i, piece));
        return x;
    }
    let src = &x.storage::<f32>()[x.layout().start_offset()..][..n];
    let mut out: Vec<f32> = Vec::with_capacity(n);
    out.spare_capacity_mut()[..n]
        .par_chunks_mut(chunk)
        .zip(src.par_chunks(chunk))
        .enumerate()
        .for_each(|(i, (dst, src))| {
            for (d, &s) in dst.iter_mut().zip(src) {
                d.write(s);
            }
            // SAFETY: every element of `dst` was written just above.
            let dst = unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast(), dst.len()) };
            kernel(i, dst);
        });
    // SAFETY: the chunks cover the first `n` elements, all written.
    unsafe { out.set_len(n) };
    FlexTensor::from_data(TensorData::new(out, x.layout().shape().clone()))
}

/// `kernel` applied to every element of a Flex `f32` tensor, in place when
/// nothing else holds it, in parallel chunks; any other tensor back.
fn map_f32<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    kernel: fn(&mut [f32]),
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    let x = as_flex_f32(x)?;
    Ok(from_flex(overwrite(x, CHUNK, |_, piece| kernel(piece))))
}

/// GPT-2's tanh GELU `x · sigmoid(2√(2/π)(x + 0.044715x³))` on a Flex
/// tensor, or `x` back for any other tensor.
pub(crate) fn gelu_tanh<B: Backend, const D: usize>(
    x: Tensor<B, D>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    map_f32(x, kernels::gelu_tanh)
}

/// `e^x` on a Flex tensor (the written-out softmax, when its denominator
/// is hooked), or `x` back for any other tensor.
pub(crate) fn exp<B: Backend, const D: usize>(
    x: Tensor<B, D>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    map_f32(x, kernels::exp_all)
}

/// The softmax over the last axis of a Flex tensor (attention's keys), as
/// Burn's `softmax`: `e^(x - max) / Σ e^(x - max)` per row, one pass per
/// row on every core instead of five single-threaded ones; any other
/// tensor back.
pub(crate) fn softmax_last<B: Backend, const D: usize>(
    x: Tensor<B, D>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    let row = x.dims()[D - 1];
    if row == 0 {
        return Err(x);
    }
    let out = overwrite(as_flex_f32(x)?, rows_per_task(row) * row, |_, rows| {
        kernels::softmax_rows(rows, row)
    });
    Ok(from_flex(out))
}

/// Llama's `silu(gate) · up` (`gate · sigmoid(gate) · up`) on Flex tensors
/// of one shape, or both back for any others.
#[allow(clippy::type_complexity)]
pub(crate) fn silu_mul<B: Backend, const D: usize>(
    gate: Tensor<B, D>,
    up: Tensor<B, D>,
) -> Result<Tensor<B, D>, (Tensor<B, D>, Tensor<B, D>)> {
    if gate.dims() != up.dims() {
        return Err((gate, up));
    }
    let gate = match as_flex_f32(gate) {
        Ok(gate) => gate,
        Err(gate) => return Err((gate, up)),
    };
    let up = match as_flex_f32::<B, D>(up) {
        Ok(up) => up,
        Err(up) => return Err((from_flex(gate), up)),
    };
    let up_values = values(&up);
    let out = overwrite(gate, CHUNK, |i, g| {
        kernels::silu_mul(g, &up_values[i * CHUNK..][..g.len()])
    });
    Ok(from_flex(out))
}

/// Defines `$name`, which runs `$body` compiled for the best of
/// AVX-512, AVX2 + FMA and baseline x86-64 that the CPU has.
macro_rules! dispatch {
    ($name:ident($($arg:ident: $ty:ty),*) => $body:ident) => {
        pub(super) fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) { $body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) { $body($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: the CPU has the features v4 is compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features v3 is compiled for.
                    return unsafe { v3($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

mod matmul;
mod norm;
pub(crate) use matmul::{flex_matmul_2d, linear};
pub(crate) use norm::{affine_rows, center_rows, div_rows, rms_rows};

/// The loops, compiled once per instruction set.
mod kernels {
    /// Below this, `e^x` is under half the smallest subnormal float
    /// (`ln 2^-150`): its correctly rounded value is 0.
    const EXP_UNDERFLOW: f32 = -103.972_08;

    /// `e^x` to about 2 ulp (Cephes' `expf`: `x = n·ln 2 + r`, a degree-7
    /// polynomial in `r`), without branches so that loops over it
    /// vectorise. `2^n` is applied as two factors so that results overflow
    /// to infinity above 88.7 and underflow to zero below -103, as `expf`'s
    /// do; NaN stays NaN.
    ///
    /// Below [`EXP_UNDERFLOW`] (a causal mask's `-inf` minus a row's
    /// maximum: half of every attention row) the result is selected as 0
    /// and the arithmetic runs on 0 instead: computing it would make a
    /// float below the normal range, which Intel cores handle in microcode,
    /// at a hundred cycles or more per element (the Qwen2.5-0.5B-shaped
    /// forward's softmax on an Intel Xeon: BENCHMARKS.md).
    #[inline(always)]
    pub(super) fn exp(x: f32) -> f32 {
        let underflow = x < EXP_UNDERFLOW;
        let e = exp_from_normal_range(if underflow { 0.0 } else { x });
        if underflow { 0.0 } else { e }
    }

    /// [`exp`] for `x` not below [`EXP_UNDERFLOW`] (or NaN).
    #[inline(always)]
    fn exp_from_normal_range(x: f32) -> f32 {
        const LOG2E: f32 = std::f32::consts::LOG2_E;
        const LN2_HI: f32 = 0.693_359_4;
        const LN2_LO: f32 = -2.121_944_4e-4;
        let x = x.clamp(-104.0, 89.0);
        let n = (x * LOG2E + 0.5).floor();
        let r = x - n * LN2_HI - n * LN2_LO;
        let p = 1.987_569_2e-4_f32;
        let p = p * r + 1.398_199_9e-3;
        let p = p * r + 8.333_452e-3;
        let p = p * r + 4.166_579_6e-2;
        let p = p * r + 1.666_666_5e-1;
        let p = p * r + 0.5;
        let p = p * (r * r) + r + 1.0;
        // `n` as an integer without `as i32` (whose saturation does not
        // vectorise): adding 1.5·2^23 puts it in the low mantissa bits.
        // A NaN gives some integer, and the NaN `p` keeps the result NaN.
        let n = (n + 12_582_912.0).to_bits() as i32 - 0x4B40_0000;
        // 2^n = 2^(n/2) · 2^(n - n/2), each a normal float for n in
        // [-150, 128].
        let half = n >> 1;
        let pow2 = |e: i32| f32::from_bits(((e + 127) << 23) as u32);
        p * pow2(half) * pow2(n - half)
    }

    #[inline(always)]
    pub(super) fn gelu_tanh_scalar(x: f32) -> f32 {
        use crate::gpt2::layers::{GELU_CUBIC, GELU_SCALE};
        let z = GELU_SCALE as f32 * (x + GELU_CUBIC as f32 * x * x * x);
        x / (1.0 + exp(-z))
    }

    #[inline(always)]
    fn gelu_tanh_loop(xs: &mut [f32]) {
        for x in xs {
            *x = gelu_tanh_scalar(*x);
        }
    }

    #[inline(always)]
    fn exp_loop(xs: &mut [f32]) {
        for x in xs {
            *x = exp(*x);
        }
    }

    #[inline(always)]
    fn silu_mul_loop(gate: &mut [f32], up: &[f32]) {
        for (g, &u) in gate.iter_mut().zip(up) {
            *g = *g / (1.0 + exp(-*g)) * u;
        }
    }

    /// Each `row`-long row of `xs` replaced by its softmax. The maximum as
    /// Burn's `max_dim` takes it (a NaN in the row makes the row NaN
    /// through the exponentials), then a division, not a multiplication by
    /// the reciprocal, as the composed form does.
    ///
    /// The maximum and the sum run over 16 lanes (a strict left-to-right
    /// float sum would not vectorise), so the sum is added in another order
    /// than Burn's: the results agree to a few ulp.
    #[inline(always)]
    fn softmax_rows_loop(xs: &mut [f32], row: usize) {
        const LANES: usize = 16;
        // `>` keeps the old value when either side is NaN: NaN is skipped
        // here, as `max_dim` skips it, and comes back through `exp`.
        let larger = |a: f32, b: f32| if b > a { b } else { a };
        for r in xs.chunks_exact_mut(row) {
            let (chunks, tail) = r.as_chunks::<LANES>();
            let mut lanes = [f32::NEG_INFINITY; LANES];
            for c in chunks {
                for (m, &x) in lanes.iter_mut().zip(c) {
                    *m = larger(*m, x);
                }
            }
            let max = tail
                .iter()
                .chain(&lanes)
                .copied()
                .fold(f32::NEG_INFINITY, larger);
            let (chunks, tail) = r.as_chunks_mut::<LANES>();
            let mut lanes = [0.0f32; LANES];
            for c in chunks {
                for (s, x) in lanes.iter_mut().zip(c) {
                    *x = exp(*x - max);
                    *s += *x;
                }
            }
            let mut sum = lanes.iter().sum::<f32>();
            for x in tail {
                *x = exp(*x - max);
                sum += *x;
            }
            for x in r.iter_mut() {
                *x /= sum;
            }
        }
    }

    dispatch!(gelu_tanh(xs: &mut [f32]) => gelu_tanh_loop);
    dispatch!(exp_all(xs: &mut [f32]) => exp_loop);
    dispatch!(silu_mul(gate: &mut [f32], up: &[f32]) => silu_mul_loop);
    dispatch!(softmax_rows(xs: &mut [f32], row: usize) => softmax_rows_loop);
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Tolerance, ops::FloatElem};
    use burn_flex::Flex;

    type Nd = burn_ndarray::NdArray;

    type Fused = fn(Tensor<Flex, 1>) -> Result<Tensor<Flex, 1>, Tensor<Flex, 1>>;

    /// `op` on a Flex tensor holding `xs`, read back.
    fn on_flex(op: Fused, xs: &[f32]) -> Vec<f32> {
        op(Tensor::from_floats(xs, &Default::default()))
            .expect("a Flex f32 tensor")
            .into_data()
            .to_vec::<f32>()
            .unwrap()
    }

    /// `0.5x(1 + tanh(√(2/π)(x + 0.044715x³)))` as `x·sigmoid(2·…)`, which
    /// keeps its precision in the negative tail (`tanh` rounds to -1 there).
    fn gelu_f64(x: f64) -> f64 {
        x / (1.0 + (-2.0 * (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).exp())
    }

    /// Every value from -100 to 100 in steps of 1/64, plus the extremes.
    fn inputs() -> Vec<f32> {
        let mut xs: Vec<f32> = (-6400..=6400).map(|i| i as f32 / 64.0).collect();
        xs.extend([
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            1e-30,
            -1e-30,
            3e38,
            -3e38,
            0.0,
            -0.0,
        ]);
        xs
    }

    #[test]
    fn exp_is_within_three_ulp_of_float64() {
        for i in -8700..=8870 {
            let x = i as f32 / 100.0;
            let ours = kernels::exp(x) as f64;
            let exact = (x as f64).exp();
            let ulp = (exact as f32).to_bits().abs_diff((ours as f32).to_bits());
            assert!(
                ulp <= 3,
                "exp({x}) = {ours}, float64 says {exact} ({ulp} ulp)"
            );
        }
        assert!(kernels::exp(f32::NAN).is_nan());
        assert_eq!(kernels::exp(-1e4), 0.0);
        assert_eq!(kernels::exp(f32::NEG_INFINITY), 0.0);
        // Subnormal results down to the smallest, then 0 where float64's
        // value rounds to it.
        for i in 8740..=10500 {
            let x = -(i as f32) / 100.0;
            let (ours, exact) = (kernels::exp(x), (x as f64).exp());
            let ulp = (exact as f32).to_bits().abs_diff(ours.to_bits());
            assert!(ulp <= 3, "exp({x}) = {ours:e}, float64 says {exact:e}");
        }
        assert_eq!(kernels::exp(89.0), f32::INFINITY);
        assert_eq!(kernels::exp(f32::INFINITY), f32::INFINITY);
    }

    #[test]
    fn fused_gelu_matches_float64_as_closely_as_the_composed_one() {
        let xs = inputs();
        let fused = on_flex(gelu_tanh, &xs);
        let composed = crate::gpt2::layers::gelu_tanh(Tensor::<Nd, 1>::from_floats(
            xs.as_slice(),
            &Default::default(),
        ))
        .into_data()
        .to_vec::<f32>()
        .unwrap();
        for ((&x, &f), &c) in xs.iter().zip(&fused).zip(&composed) {
            let exact = gelu_f64(x as f64);
            // Both within a few float32 rounding steps of the exact value.
            // In the negative tail the result is `x · e^z` with `|z|` up to
            // ~|x|³/10, so its relative error grows with `|z|` (one
            // rounding of `z` is already `ε·|z|`); near zero, absolutely.
            let z = 2.0
                * (2.0 / std::f64::consts::PI).sqrt()
                * (x as f64 + 0.044715 * (x as f64).powi(3));
            let bound = (4.0 * f32::EPSILON as f64 * (2.0 + z.abs()) * exact.abs()).max(1e-30);
            assert!(
                (f as f64 - exact).abs() <= bound,
                "fused gelu({x}) = {f}, exact {exact}"
            );
            assert!(
                (c as f64 - exact).abs() <= 4.0 * bound,
                "composed gelu({x}) = {c}, exact {exact}"
            );
        }
        assert_eq!(kernels::gelu_tanh_scalar(-3e38), 0.0);
    }

    #[test]
    fn fused_gelu_keeps_nan_and_infinities_as_the_composed_one() {
        let xs = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
        let fused = gelu_tanh(Tensor::<Flex, 1>::from_floats(xs, &Default::default()))
            .unwrap()
            .into_data();
        let v = fused.to_vec::<f32>().unwrap();
        assert!(v[0].is_nan());
        assert_eq!(v[1], f32::INFINITY);
        // -inf · sigmoid(-inf): 0 · -inf is NaN, as in the composed form.
        assert!(v[2].is_nan() || v[2] == 0.0);
    }

    #[test]
    fn fused_exp_on_a_tensor_matches_float64() {
        let xs: Vec<f32> = (-1000..=1000).map(|i| i as f32 / 10.0).collect();
        let ys = on_flex(exp, &xs);
        for (&x, &y) in xs.iter().zip(&ys) {
            let exact = (x as f64).exp();
            if exact > f32::MAX as f64 {
                assert_eq!(y, f32::INFINITY);
            } else {
                let bound = (3.0 * f32::EPSILON as f64 * exact).max(f32::from_bits(1) as f64);
                assert!(
                    (y as f64 - exact).abs() <= bound,
                    "exp({x}) = {y}, exact {exact}"
                );
            }
        }
    }

    #[test]
    fn fused_silu_mul_matches_float64() {
        let xs = inputs();
        let ups: Vec<f32> = xs.iter().map(|x| (x * 0.37).sin() * 3.0).collect();
        let gate = Tensor::<Flex, 1>::from_floats(xs.as_slice(), &Default::default());
        let up = Tensor::<Flex, 1>::from_floats(ups.as_slice(), &Default::default());
        let fused = silu_mul(gate, up).expect("Flex f32 tensors").into_data();
        for ((&g, &u), &f) in xs.iter().zip(&ups).zip(&fused.to_vec::<f32>().unwrap()) {
            let (g, u) = (g as f64, u as f64);
            let exact = g / (1.0 + (-g).exp()) * u;
            if exact.abs() > f32::MAX as f64 {
                assert!(f.is_infinite(), "silu({g})·{u} overflows float32, got {f}");
                continue;
            }
            let bound = (5.0 * f32::EPSILON as f64 * (2.0 + g.abs()) * exact.abs()).max(1e-30);
            assert!(
                (f as f64 - exact).abs() <= bound,
                "silu({g})·{u} = {f}, exact {exact}"
            );
        }
    }

    #[test]
    fn a_tensor_split_across_cores_equals_its_pieces_done_alone() {
        let xs: Vec<f32> = (0..5 * CHUNK + 77)
            .map(|i| (i as f32 * 0.37).sin() * 8.0)
            .collect();
        let whole = on_flex(gelu_tanh, &xs);
        let pieces: Vec<f32> = xs
            .chunks(1000)
            .flat_map(|piece| on_flex(gelu_tanh, piece))
            .collect();
        assert_eq!(whole, pieces);
    }

    #[test]
    fn a_held_input_over_many_chunks_gives_what_an_unheld_one_does() {
        let n = 3 * CHUNK + 101;
        let gs: Vec<f32> = (0..n).map(|i| (i as f32 * 0.29).sin() * 6.0).collect();
        let us: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
        let device = Default::default();
        let tensor = |v: &[f32]| Tensor::<Flex, 1>::from_floats(v, &device);
        let alone = silu_mul(tensor(&gs), tensor(&us)).unwrap().into_data();
        let gate = tensor(&gs);
        let held = gate.clone();
        let shared = silu_mul(gate, tensor(&us)).unwrap().into_data();
        assert_eq!(alone, shared);
        assert_eq!(held.into_data().to_vec::<f32>().unwrap(), gs);
        // The same for the element-wise maps and the softmax's rows.
        let x = tensor(&gs);
        let held = x.clone();
        assert_eq!(
            gelu_tanh(x).unwrap().into_data(),
            gelu_tanh(tensor(&gs)).unwrap().into_data()
        );
        assert_eq!(held.into_data().to_vec::<f32>().unwrap(), gs);
        let xs = gs[..n / 7 * 7].to_vec();
        let matrix =
            || Tensor::<Flex, 2>::from_data(TensorData::new(xs.clone(), [n / 7, 7]), &device);
        let rows = matrix();
        let held = rows.clone();
        assert_eq!(
            softmax_last(rows).unwrap().into_data(),
            softmax_last(matrix()).unwrap().into_data()
        );
        assert_eq!(held.into_data().to_vec::<f32>().unwrap(), xs);
    }

    #[test]
    fn a_held_or_strided_input_is_left_untouched() {
        let x = Tensor::<Flex, 2>::from_floats(
            [[1.0, -2.0, 3.0], [0.5, 0.25, -4.0]],
            &Default::default(),
        );
        let held = x.clone();
        let y = gelu_tanh(x.clone()).unwrap();
        held.clone()
            .into_data()
            .assert_eq(&x.clone().into_data(), true);
        let t = gelu_tanh(x.clone().transpose()).unwrap();
        t.into_data().assert_approx_eq::<FloatElem<Flex>>(
            &y.transpose().into_data(),
            Tolerance::absolute(1e-6),
        );
    }

    /// Rows of several lengths (shorter and longer than the 16 lanes, not
    /// multiples of them), with masked (`-inf`) keys and large logits.
    fn softmax_input(rows: usize, row: usize) -> Vec<f32> {
        (0..rows * row)
            .map(|i| {
                let (r, c) = (i / row, i % row);
                if c > r % row + 3 {
                    f32::NEG_INFINITY
                } else {
                    ((i as f32 * 0.7113).sin() * 9.0) + (r % 3) as f32 * 40.0
                }
            })
            .collect()
    }

    #[test]
    fn fused_softmax_matches_float64_and_the_composed_one() {
        for row in [1, 7, 16, 37, 128] {
            let rows = 40;
            let xs = softmax_input(rows, row);
            let x = Tensor::<Flex, 2>::from_data(
                TensorData::new(xs.clone(), [rows, row]),
                &Default::default(),
            );
            let fused = softmax_last(x.clone()).expect("a Flex f32 tensor");
            let composed = burn::tensor::activation::softmax(x, 1);
            let fused = fused.into_data().to_vec::<f32>().unwrap();
            let composed = composed.into_data().to_vec::<f32>().unwrap();
            for (r, (f_row, c_row)) in fused.chunks(row).zip(composed.chunks(row)).enumerate() {
                let x_row = &xs[r * row..][..row];
                let max = x_row
                    .iter()
                    .fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
                let sum: f64 = x_row.iter().map(|&x| (x as f64 - max).exp()).sum();
                for ((&x, &f), &c) in x_row.iter().zip(f_row).zip(c_row) {
                    let exact = (x as f64 - max).exp() / sum;
                    // exp within 3 ulp, the sum of ≤ 128 terms and one
                    // division: a few ulp of each probability, or of 1/row
                    // absolutely for the small ones.
                    let bound = 8.0 * f32::EPSILON as f64 * exact.max(1.0 / row as f64);
                    assert!(
                        (f as f64 - exact).abs() <= bound,
                        "row {row}: fused {f}, exact {exact}"
                    );
                    assert!(
                        (c as f64 - exact).abs() <= bound,
                        "row {row}: composed {c}, exact {exact}"
                    );
                }
                let total: f64 = f_row.iter().map(|&p| p as f64).sum();
                assert!((total - 1.0).abs() < 1e-6, "row {row} sums to {total}");
            }
        }
    }

    #[test]
    fn fused_softmax_leaves_a_held_input_and_keeps_nan_rows() {
        let x = Tensor::<Flex, 2>::from_floats(
            [[1.0, f32::NAN, 2.0], [0.0, 1.0, 2.0]],
            &Default::default(),
        );
        let bits = |t: Tensor<Flex, 2>| -> Vec<u32> {
            let v = t.into_data().to_vec::<f32>().unwrap();
            v.iter().map(|x| x.to_bits()).collect()
        };
        let held = bits(x.clone());
        let y = softmax_last(x.clone())
            .unwrap()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(bits(x), held, "the held input is untouched");
        assert!(y[..3].iter().all(|p| p.is_nan()), "{y:?}");
        let e = [1.0f64, 1f64.exp(), 2f64.exp()];
        for (p, e) in y[3..].iter().zip(e) {
            assert!((*p as f64 - e / (1.0 + 1f64.exp() + 2f64.exp())).abs() < 1e-7);
        }
        // A strided view (the transposed keys) is read as it is laid out.
        let t = Tensor::<Flex, 2>::from_floats(
            [[1.0, 4.0], [2.0, 8.0], [3.0, 0.0]],
            &Default::default(),
        );
        let via_view = softmax_last(t.clone().transpose()).unwrap();
        let composed = burn::tensor::activation::softmax(t.transpose(), 1);
        via_view
            .into_data()
            .assert_approx_eq::<FloatElem<Flex>>(&composed.into_data(), Tolerance::absolute(1e-7));
    }

    #[test]
    fn other_backends_and_dtypes_are_handed_back() {
        assert!(
            gelu_tanh(Tensor::<Nd, 1>::from_floats(
                [1.0, 2.0],
                &Default::default()
            ))
            .is_err()
        );
        let half = Tensor::<Flex, 1>::from_floats([1.0, 2.0], &Default::default()).cast(DType::F16);
        let back = gelu_tanh(half).expect_err("f16 is not fused");
        assert_eq!(back.dtype(), DType::F16);
        type Ad = burn::backend::Autodiff<Flex>;
        assert!(gelu_tanh(Tensor::<Ad, 1>::from_floats([1.0], &Default::default())).is_err());
    }
}
