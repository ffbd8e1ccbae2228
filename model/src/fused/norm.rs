//! The steps of a written-out norm as one pass each on Flex.
//!
//! GPT-2's layer norm is written out whenever one of its three sites has
//! hooks (centre, scale, divide, affine: nine tensor operations), and the
//! Llama family's RMS norm always is (six). On a small model each Flex
//! operation costs more in shape bookkeeping and allocation than in
//! arithmetic (about 4 k instructions at `[1, 16, 64]`), so the steps
//! between two sites are one row-parallel kernel each here: four per layer
//! norm, three per RMS norm. Each writes a fresh buffer: its input is what a
//! hook just saw, which a recording holds.
//!
//! Sums over a row run over 16 lanes (vectorised), so they add in another
//! order than Burn's reductions: the results agree to a few ulp. Like the
//! other fused kernels, only non-autodiff Flex `f32` tensors take this path;
//! anything else (other backends, autodiff, other dtypes, a hook that
//! returned an unexpected shape) comes back for the composed operations.

use std::mem::MaybeUninit;

use burn::tensor::backend::Backend;
use burn::tensor::{Shape, Tensor, TensorData};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::{as_flex_f32, from_flex, rows_per_task, values};

/// A fresh `[rows·out_row]` buffer filled row-block by row-block in
/// parallel: `fill(first_row, src_rows, dst_rows)` writes every element of
/// `dst_rows` (the rows from `first_row` on).
fn per_rows(
    src: &[f32],
    row: usize,
    out_row: usize,
    fill: impl Fn(usize, &[f32], &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    let rows = src.len() / row;
    let per_task = rows_per_task(row);
    let mut out = Vec::with_capacity(rows * out_row);
    out.spare_capacity_mut()[..rows * out_row]
        .par_chunks_mut(per_task * out_row)
        .zip(src.par_chunks(per_task * row))
        .enumerate()
        .for_each(|(task, (dst, src))| fill(task * per_task, src, dst));
    // SAFETY: `fill` wrote every element of every chunk, which together
    // cover the first `rows · out_row` elements.
    unsafe { out.set_len(rows * out_row) };
    out
}

/// A kernel's output as a tensor of `shape`.
fn tensor<B: Backend, const D: usize>(out: Vec<f32>, shape: Shape) -> Tensor<B, D> {
    from_flex(FlexTensor::from_data(TensorData::new(out, shape)))
}

/// The last axis's length, or `None` for a tensor with no elements.
fn row_len<B: Backend, const D: usize>(x: &Tensor<B, D>) -> Option<usize> {
    let row = x.dims()[D - 1];
    (row > 0 && x.shape().num_elements() > 0).then_some(row)
}

/// `x - mean(x)` over the last axis (the layer norm's
/// `post_mean_subtraction`), or `x` back.
pub(crate) fn center_rows<B: Backend, const D: usize>(
    x: Tensor<B, D>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    let Some(row) = row_len(&x) else {
        return Err(x);
    };
    let flex = as_flex_f32(x)?;
    let shape = flex.layout().shape().clone();
    let out = per_rows(&values(&flex), row, row, |_, src, dst| {
        kernels::center(src, dst, row)
    });
    Ok(tensor(out, shape))
}

/// `sqrt(mean(x²) + eps)` over the last axis, kept as an axis of 1 (the
/// norms' `scale`), or `x` back.
pub(crate) fn rms_rows<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    eps: f64,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    let Some(row) = row_len(&x) else {
        return Err(x);
    };
    let flex = as_flex_f32(x)?;
    let mut shape = flex.layout().shape().clone();
    shape[D - 1] = 1;
    let eps = eps as f32;
    let out = per_rows(&values(&flex), row, 1, |_, src, dst| {
        kernels::rms(src, dst, row, eps)
    });
    Ok(tensor(out, shape))
}

/// `x / scale` with `scale` one value per row (`[.., 1]`, the norms'
/// `post_scale`), or both back when they are not Flex tensors of matching
/// shapes.
#[allow(clippy::type_complexity)]
pub(crate) fn div_rows<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    scale: Tensor<B, D>,
) -> Result<Tensor<B, D>, (Tensor<B, D>, Tensor<B, D>)> {
    let (xd, sd) = (x.dims(), scale.dims());
    let Some(row) = row_len(&x) else {
        return Err((x, scale));
    };
    if xd[..D - 1] != sd[..D - 1] || sd[D - 1] != 1 {
        return Err((x, scale));
    }
    let flex = match as_flex_f32(x) {
        Ok(flex) => flex,
        Err(x) => return Err((x, scale)),
    };
    let scale = match as_flex_f32::<B, D>(scale) {
        Ok(scale) => scale,
        Err(scale) => return Err((from_flex(flex), scale)),
    };
    let shape = flex.layout().shape().clone();
    let scales = values(&scale);
    let out = per_rows(&values(&flex), row, row, |first, src, dst| {
        kernels::div(src, &scales[first..], dst, row)
    });
    Ok(tensor(out, shape))
}

/// `x · weight (+ bias)` with `[D]` parameters broadcast over the rows (the
/// norms' affine step), or `x` back when any is not a Flex `f32` tensor of
/// the row's length.
pub(crate) fn affine_rows<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    bias: Option<Tensor<B, 1>>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    let Some(row) = row_len(&x) else {
        return Err(x);
    };
    let param = |t: Tensor<B, 1>| (t.dims()[0] == row).then(|| as_flex_f32(t).ok()).flatten();
    let Some(weight) = param(weight) else {
        return Err(x);
    };
    let bias = match bias.map(param) {
        None => None,
        Some(Some(b)) => Some(b),
        Some(None) => return Err(x),
    };
    let flex = as_flex_f32(x)?;
    let shape = flex.layout().shape().clone();
    let (w, b) = (values(&weight), bias.as_ref().map(values));
    let out = per_rows(&values(&flex), row, row, |_, src, dst| match &b {
        Some(b) => kernels::affine(src, &w, b, dst, row),
        None => kernels::scale_by(src, &w, dst, row),
    });
    Ok(tensor(out, shape))
}

/// The loops, compiled once per instruction set.
mod kernels {
    use std::mem::MaybeUninit;

    const LANES: usize = 16;

    /// A row's sum of `f(x)`, over 16 lanes.
    #[inline(always)]
    fn lane_sum(r: &[f32], f: impl Fn(f32) -> f32) -> f32 {
        let (chunks, tail) = r.as_chunks::<LANES>();
        let mut lanes = [0.0f32; LANES];
        for c in chunks {
            for (s, &x) in lanes.iter_mut().zip(c) {
                *s += f(x);
            }
        }
        lanes.iter().sum::<f32>() + tail.iter().map(|&x| f(x)).sum::<f32>()
    }

    #[inline(always)]
    fn center_loop(src: &[f32], dst: &mut [MaybeUninit<f32>], row: usize) {
        for (s, d) in src.chunks_exact(row).zip(dst.chunks_exact_mut(row)) {
            let mean = lane_sum(s, |x| x) / row as f32;
            for (d, &x) in d.iter_mut().zip(s) {
                d.write(x - mean);
            }
        }
    }

    #[inline(always)]
    fn rms_loop(src: &[f32], dst: &mut [MaybeUninit<f32>], row: usize, eps: f32) {
        for (s, d) in src.chunks_exact(row).zip(dst) {
            d.write((lane_sum(s, |x| x * x) / row as f32 + eps).sqrt());
        }
    }

    #[inline(always)]
    fn div_loop(src: &[f32], scales: &[f32], dst: &mut [MaybeUninit<f32>], row: usize) {
        let rows = src.chunks_exact(row).zip(dst.chunks_exact_mut(row));
        for ((s, d), &scale) in rows.zip(scales) {
            for (d, &x) in d.iter_mut().zip(s) {
                d.write(x / scale);
            }
        }
    }

    #[inline(always)]
    fn affine_loop(src: &[f32], w: &[f32], b: &[f32], dst: &mut [MaybeUninit<f32>], row: usize) {
        for (s, d) in src.chunks_exact(row).zip(dst.chunks_exact_mut(row)) {
            for (((d, &x), &w), &b) in d.iter_mut().zip(s).zip(w).zip(b) {
                d.write(x * w + b);
            }
        }
    }

    #[inline(always)]
    fn scale_by_loop(src: &[f32], w: &[f32], dst: &mut [MaybeUninit<f32>], row: usize) {
        for (s, d) in src.chunks_exact(row).zip(dst.chunks_exact_mut(row)) {
            for ((d, &x), &w) in d.iter_mut().zip(s).zip(w) {
                d.write(x * w);
            }
        }
    }

    dispatch!(center(src: &[f32], dst: &mut [MaybeUninit<f32>], row: usize) => center_loop);
    dispatch!(rms(src: &[f32], dst: &mut [MaybeUninit<f32>], row: usize, eps: f32) => rms_loop);
    dispatch!(div(src: &[f32], scales: &[f32], dst: &mut [MaybeUninit<f32>], row: usize) => div_loop);
    dispatch!(affine(src: &[f32], w: &[f32], b: &[f32], dst: &mut [MaybeUninit<f32>], row: usize) => affine_loop);
    dispatch!(scale_by(src: &[f32], w: &[f32], dst: &mut [MaybeUninit<f32>], row: usize) => scale_by_loop);
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_flex::Flex;

    type Nd = burn_ndarray::NdArray;

    /// `[2, 3, row]` values with a large common offset per row (what makes
    /// a centring's rounding visible) and a spread of magnitudes.
    fn input(row: usize) -> Vec<f32> {
        (0..6 * row)
            .map(|i| ((i as f32 * 0.613).sin() * 3.0) + (i / row) as f32 * 25.0 - 40.0)
            .collect()
    }

    fn flex(xs: &[f32], shape: [usize; 3]) -> Tensor<Flex, 3> {
        Tensor::from_data(TensorData::new(xs.to_vec(), shape), &Default::default())
    }

    fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    /// Within `ulps` float32 steps of `scale`, elementwise.
    fn close(what: &str, got: &[f32], want: &[f64], scale: f64, ulps: f64) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let bound = ulps * f32::EPSILON as f64 * scale.max(w.abs());
            assert!((g as f64 - w).abs() <= bound, "{what}[{i}]: {g} vs {w}");
        }
    }

    #[test]
    fn each_step_matches_float64() {
        for row in [1, 7, 16, 64, 100] {
            let xs = input(row);
            let x = flex(&xs, [2, 3, row]);
            let rows: Vec<&[f32]> = xs.chunks(row).collect();
            let mean = |r: &[f32]| r.iter().map(|&x| x as f64).sum::<f64>() / row as f64;

            let centered = host(center_rows(x.clone()).unwrap());
            let want: Vec<f64> = rows
                .iter()
                .flat_map(|r| r.iter().map(move |&x| x as f64 - mean(r)))
                .collect();
            // The mean's rounding is of the row's magnitude (up to ~90).
            close("centred", &centered, &want, 100.0, 4.0);

            let eps = 1e-5;
            let scale = host(rms_rows(x.clone(), eps).unwrap());
            let want: Vec<f64> = rows
                .iter()
                .map(|r| {
                    (r.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / row as f64 + eps).sqrt()
                })
                .collect();
            close("rms", &scale, &want, 0.0, 4.0);

            let s = rms_rows(x.clone(), eps).unwrap();
            let divided = host(div_rows(x.clone(), s).unwrap());
            let want: Vec<f64> = xs
                .iter()
                .enumerate()
                .map(|(i, &v)| v as f64 / scale[i / row] as f64)
                .collect();
            close("divided", &divided, &want, 0.0, 1.0);

            let w: Vec<f32> = (0..row).map(|i| 0.5 + i as f32 * 0.01).collect();
            let b: Vec<f32> = (0..row).map(|i| i as f32 * -0.1).collect();
            let wt = Tensor::<Flex, 1>::from_floats(w.as_slice(), &Default::default());
            let bt = Tensor::<Flex, 1>::from_floats(b.as_slice(), &Default::default());
            let affine = host(affine_rows(x.clone(), wt.clone(), Some(bt)).unwrap());
            let scaled = host(affine_rows(x, wt, None).unwrap());
            for (i, &v) in xs.iter().enumerate() {
                // The same two roundings as `x * w + b` in float32.
                assert_eq!(affine[i], v * w[i % row] + b[i % row]);
                assert_eq!(scaled[i], v * w[i % row]);
            }
        }
    }

    #[test]
    fn a_written_out_layer_norm_agrees_with_the_composed_one() {
        let row = 64;
        let xs = input(row);
        let composed = {
            let x = Tensor::<Nd, 3>::from_data(
                TensorData::new(xs.clone(), [2, 3, row]),
                &Default::default(),
            );
            let c = x.clone() - x.mean_dim(2);
            let s = (c.clone().square().mean_dim(2) + 1e-5).sqrt();
            host(c / s)
        };
        let x = flex(&xs, [2, 3, row]);
        let c = center_rows(x).unwrap();
        let s = rms_rows(c.clone(), 1e-5).unwrap();
        let fused = host(div_rows(c, s).unwrap());
        for (f, c) in fused.iter().zip(&composed) {
            assert!((f - c).abs() <= 1e-5, "{f} vs {c}");
        }
    }

    #[test]
    fn strided_inputs_are_read_as_laid_out() {
        let xs = input(8);
        let x = flex(&xs, [2, 3, 8]).swap_dims(0, 1);
        let want = host(center_rows(x.clone().swap_dims(0, 1)).unwrap());
        let got = host(center_rows(x).unwrap().swap_dims(0, 1));
        assert_eq!(got, want);
    }

    #[test]
    fn anything_else_is_handed_back() {
        let x = flex(&input(4), [2, 3, 4]);
        // A scale of the wrong shape (a hook may return one).
        let wrong = Tensor::<Flex, 3>::ones([2, 3, 2], &Default::default());
        assert!(div_rows(x.clone(), wrong).is_err());
        // Parameters of another length.
        let w = Tensor::<Flex, 1>::ones([3], &Default::default());
        assert!(affine_rows(x.clone(), w, None).is_err());
        // Other backends and autodiff.
        let nd = Tensor::<Nd, 3>::ones([1, 2, 4], &Default::default());
        assert!(center_rows(nd.clone()).is_err());
        assert!(rms_rows(nd, 1e-5).is_err());
        type Ad = burn::backend::Autodiff<Flex>;
        let ad = Tensor::<Ad, 3>::ones([1, 2, 4], &Default::default());
        assert!(center_rows(ad).is_err());
        // No elements.
        let empty = Tensor::<Flex, 3>::zeros([0, 2, 4], &Default::default());
        assert!(center_rows(empty).is_err());
    }
}
