//! Matrix products with few rows on Flex, split over output columns.
//!
//! With one sequence (`[128, K] × [K, N]`, a linear layer at batch 1)
//! `gemm`'s own threading, which Flex asks for, shares the blocks of the
//! product between the threads and runs at 0.7–0.9 of twice its
//! single-threaded rate (on a 2-core Intel Xeon, `[128, 4864] × [4864,
//! 896]`, Qwen2.5-0.5B's `down_proj`: 236–268 GFLOP/s, against 146–172 on
//! one thread; BENCHMARKS.md "Few-row products"). Here each thread
//! multiplies all the rows by its own contiguous block of columns in one
//! single-threaded `gemm` call: the threads share nothing but the inputs,
//! and each packs only its part of the weight (301–355 GFLOP/s for that
//! product). From 512 rows up `gemm`'s threading is as fast or faster, so
//! those products stay with Flex.
//!
//! A bias is written into the output first and `gemm` adds the product to
//! it, so `x·W + b` is one pass over the output instead of two.

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensorOps;
use burn::tensor::{DType, Shape, Tensor, TensorData};
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

use super::{as_flex_f32, from_flex, values};

/// Products with this many rows or more stay with Flex (`gemm`'s own
/// threading is as fast there).
const SPLIT_BELOW_ROWS: usize = 512;

/// Below this many multiply-adds (`M·K·N`) Flex runs a product on one
/// thread, and so do we: splitting it would cost more than it saves.
/// Flex's own threshold.
const MIN_PARALLEL_WORK: usize = 192 * 192 * 192;

/// Column blocks are a multiple of this many columns (one AVX-512 register
/// of `f32`), so that no block ends in a partial microkernel tile but the
/// last.
const COLUMN_ALIGN: usize = 16;

/// `x · w (+ bias)` for `x` `[B, S, I]` and `w` `[I, O]` (either a strided
/// view) and `bias` `[O]`, as a contiguous `[B, S, O]`, when the backend is
/// Flex, every tensor `f32`, `B·S` below [`SPLIT_BELOW_ROWS`] and the work
/// worth splitting over more than one thread; every input back otherwise.
#[allow(clippy::type_complexity)]
pub(crate) fn linear<B: Backend>(
    x: Tensor<B, 3>,
    w: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Result<Tensor<B, 3>, (Tensor<B, 3>, Tensor<B, 2>, Option<Tensor<B, 1>>)> {
    let [batch, rows, inner] = x.dims();
    let cols = w.dims()[1];
    let flex_f32 = std::any::TypeId::of::<B>() == std::any::TypeId::of::<Flex>()
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && bias.as_ref().is_none_or(|b| b.dtype() == DType::F32);
    let threads = rayon::current_num_threads();
    if !flex_f32 || !splits(batch * rows, inner, cols, threads) {
        return Err((x, w, bias));
    }
    let (x, w, bias) = (checked(x), checked(w), bias.map(checked));
    Ok(from_flex(split_columns(&x, &w, bias.as_ref(), threads)))
}

/// `lhs · rhs` for 2-D Flex tensors, split over columns where
/// [`linear`] would split it, else Flex's own product: the forward of
/// `crate::autodiff_matmul` on `Autodiff<Flex>`.
pub(crate) fn flex_matmul_2d(lhs: FlexTensor, rhs: FlexTensor) -> FlexTensor {
    let ([m, k], [_, n]) = (dims::<2>(&lhs), dims::<2>(&rhs));
    let threads = rayon::current_num_threads();
    if lhs.dtype() == DType::F32 && rhs.dtype() == DType::F32 && splits(m, k, n, threads) {
        split_columns(&lhs, &rhs, None, threads)
    } else {
        Flex::float_matmul(lhs, rhs)
    }
}

/// `t` as the Flex `f32` tensor the caller checked it is.
fn checked<B: Backend, const D: usize>(t: Tensor<B, D>) -> FlexTensor {
    as_flex_f32(t).unwrap_or_else(|_| unreachable!("checked by the caller: Flex, f32"))
}

/// Whether an `[m, k] × [k, n]` product is split over `threads` column
/// blocks.
fn splits(m: usize, k: usize, n: usize, threads: usize) -> bool {
    threads > 1
        && m > 0
        && m < SPLIT_BELOW_ROWS
        && n >= threads * COLUMN_ALIGN
        && m.saturating_mul(k).saturating_mul(n) >= MIN_PARALLEL_WORK
}

/// The product of `x` `[B, S, I]` or `[S, I]` and `w` `[I, O]`, one block
/// of columns per thread (see the module's documentation), shaped as `x`.
fn split_columns(
    x: &FlexTensor,
    w: &FlexTensor,
    bias: Option<&FlexTensor>,
    threads: usize,
) -> FlexTensor {
    let [_, cols] = dims::<2>(w);
    let [w_row, w_col] = strides::<2>(w);
    let ([batch, rows, inner], [x_batch, x_row, x_col], shape) = match x.layout().shape().num_dims()
    {
        2 => {
            let ([rows, inner], [x_row, x_col]) = (dims::<2>(x), strides::<2>(x));
            ([1, rows, inner], [0, x_row, x_col], vec![rows, cols])
        }
        _ => {
            let [batch, rows, inner] = dims::<3>(x);
            (
                [batch, rows, inner],
                strides::<3>(x),
                vec![batch, rows, cols],
            )
        }
    };
    let bias_values = bias.map(values);

    let len = batch * rows * cols;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let out_addr = out.as_mut_ptr() as usize;
    // Addresses, so that the tasks can share them; the first element of
    // each view (its layout's offset into its buffer).
    let first_element = |t: &FlexTensor| {
        let start = t.layout().start_offset();
        t.storage::<f32>()[start..].as_ptr() as usize
    };
    let (x_addr, w_addr) = (first_element(x), first_element(w));
    let block = cols.div_ceil(threads).div_ceil(COLUMN_ALIGN) * COLUMN_ALIGN;
    (0..cols.div_ceil(block)).into_par_iter().for_each(|task| {
        let first = task * block;
        let width = block.min(cols - first);
        for b in 0..batch {
            // SAFETY: `out` has room for `len` elements; this task writes
            // only columns `first..first + width` of every row, which no
            // other task writes. Those elements are initialised below
            // (the bias) or by `gemm` (`read_dst` false: it writes every
            // element of its block without reading it). `x` and `w` are
            // read at offsets their layouts give, inside their buffers.
            unsafe {
                let dst = (out_addr as *mut f32).add(b * rows * cols + first);
                if let Some(bias) = &bias_values {
                    for r in 0..rows {
                        std::ptr::copy_nonoverlapping(
                            bias.as_ptr().add(first),
                            dst.add(r * cols),
                            width,
                        );
                    }
                }
                let lhs = (x_addr as *const f32).offset(b as isize * x_batch);
                let rhs = (w_addr as *const f32).offset(first as isize * w_col);
                gemm::gemm(
                    rows,
                    width,
                    inner,
                    dst,
                    1,
                    cols as isize,
                    bias_values.is_some(),
                    lhs,
                    x_col,
                    x_row,
                    rhs,
                    w_col,
                    w_row,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        }
    });
    // SAFETY: the tasks' column blocks cover every column of every row of
    // every batch, all written above.
    unsafe { out.set_len(len) };
    FlexTensor::from_data(TensorData::new(out, Shape::from(shape)))
}

fn dims<const D: usize>(t: &FlexTensor) -> [usize; D] {
    let shape = t.layout().shape();
    std::array::from_fn(|i| shape[i])
}

fn strides<const D: usize>(t: &FlexTensor) -> [isize; D] {
    let strides = t.layout().strides();
    std::array::from_fn(|i| strides[i])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tolerance};

    /// `x·w + b` in float64 on the host, for `x` `[B,S,I]`, `w` `[I,O]`.
    fn reference(
        x: &Tensor<Flex, 3>,
        w: &Tensor<Flex, 2>,
        b: Option<&Tensor<Flex, 1>>,
    ) -> Vec<f64> {
        let [batch, rows, inner] = x.dims();
        let cols = w.dims()[1];
        let xs: Vec<f32> = x.to_data().to_vec().unwrap();
        let ws: Vec<f32> = w.to_data().to_vec().unwrap();
        let bs: Vec<f32> = b.map_or(vec![0.0; cols], |b| b.to_data().to_vec().unwrap());
        let mut out = vec![0.0f64; batch * rows * cols];
        for r in 0..batch * rows {
            for c in 0..cols {
                let mut acc = bs[c] as f64;
                for i in 0..inner {
                    acc += xs[r * inner + i] as f64 * ws[i * cols + c] as f64;
                }
                out[r * cols + c] = acc;
            }
        }
        out
    }

    fn assert_close(got: Tensor<Flex, 3>, want: &[f64], inner: usize) {
        let got: Vec<f32> = got.into_data().to_vec().unwrap();
        assert_eq!(got.len(), want.len());
        // Each output sums `inner` products of N(0,1)·N(0,0.3) terms in f32.
        let tol = 1e-5 * (inner as f64).sqrt() * 4.0;
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (*g as f64 - w).abs() <= tol * (1.0 + w.abs()),
                "element {i}: {g} vs {w}"
            );
        }
    }

    /// Split products, contiguous and strided, with and without a bias,
    /// against float64, and against Flex's own matmul.
    #[test]
    fn split_products_match_float64_and_flex() {
        let device = Default::default();
        // One row is what a KV-cache step multiplies (`gemm`'s
        // matrix-vector path).
        let shapes = [
            (1, 128, 96, 200),
            (2, 64, 200, 130),
            (3, 7, 300, 1000),
            (1, 1, 300, 1000),
        ];
        for (batch, rows, inner, cols) in shapes {
            let x = Tensor::<Flex, 3>::random(
                [batch, rows, inner],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let w =
                Tensor::<Flex, 2>::random([inner, cols], Distribution::Normal(0.0, 0.3), &device);
            let b = Tensor::<Flex, 1>::random([cols], Distribution::Normal(0.0, 1.0), &device);
            let want = reference(&x, &w, Some(&b));
            let flex = x.clone().matmul(w.clone().unsqueeze::<3>()) + b.clone().unsqueeze::<3>();
            let out = split_columns(
                &as_flex_f32(x.clone()).unwrap(),
                &as_flex_f32(w.clone()).unwrap(),
                Some(&as_flex_f32(b.clone()).unwrap()),
                2,
            );
            let out: Tensor<Flex, 3> = from_flex(out);
            out.to_data().assert_approx_eq::<f32>(
                &flex.into_data(),
                Tolerance::absolute(1e-4).set_relative(1e-4),
            );
            assert_close(out, &want, inner);

            // The same values as a strided `x` (a transposed copy viewed
            // back) and a transposed `w` (`[O, I]` seen as `[I, O]`).
            let x_t = Tensor::<Flex, 3>::from_data(x.clone().swap_dims(1, 2).into_data(), &device)
                .swap_dims(1, 2);
            let w_t = Tensor::<Flex, 2>::from_data(w.clone().transpose().into_data(), &device)
                .transpose();
            if rows > 1 {
                assert!(!as_flex_f32(x_t.clone()).unwrap().layout().is_contiguous());
            }
            for threads in [2, 3, 8] {
                let out = split_columns(
                    &as_flex_f32(x_t.clone()).unwrap(),
                    &as_flex_f32(w_t.clone()).unwrap(),
                    None,
                    threads,
                );
                assert_close(from_flex(out), &reference(&x, &w, None), inner);
            }
        }
    }

    /// The 2-D entry (the autodiff forward) splits as `linear` does and
    /// keeps the 2-D shape; a large product goes to Flex.
    #[test]
    fn two_dimensional_products_split_or_go_to_flex() {
        let device = Default::default();
        for rows in [128, 600] {
            let x = Tensor::<Flex, 2>::random([rows, 256], Distribution::Normal(0.0, 1.0), &device);
            let w = Tensor::<Flex, 2>::random([256, 300], Distribution::Normal(0.0, 0.3), &device);
            let want = x.clone().matmul(w.clone());
            let got: Tensor<Flex, 2> = from_flex(flex_matmul_2d(
                as_flex_f32(x).unwrap(),
                as_flex_f32(w).unwrap(),
            ));
            assert_eq!(got.dims(), [rows, 300]);
            got.into_data().assert_approx_eq::<f32>(
                &want.into_data(),
                Tolerance::absolute(1e-4).set_relative(1e-4),
            );
        }
    }

    #[test]
    fn only_small_parallel_products_split() {
        assert!(splits(128, 896, 4864, 2));
        assert!(!splits(512, 896, 4864, 2), "gemm's threading from 512 rows");
        assert!(!splits(128, 896, 4864, 1), "one thread");
        assert!(!splits(16, 64, 256, 2), "too little work");
        assert!(!splits(128, 4096, 16, 2), "too few columns to split");
        assert!(!splits(0, 896, 4864, 2));
    }

    /// Another backend, or a product that does not split, comes back
    /// unchanged for the caller's own path.
    #[test]
    fn other_products_come_back() {
        let device = Default::default();
        let x = Tensor::<burn_ndarray::NdArray, 3>::zeros([1, 128, 896], &device);
        let w = Tensor::<burn_ndarray::NdArray, 2>::zeros([896, 896], &device);
        assert!(linear(x, w, None).is_err());
        let x = Tensor::<Flex, 3>::zeros([1, 4, 8], &Default::default());
        let w = Tensor::<Flex, 2>::zeros([8, 8], &Default::default());
        assert!(linear(x, w, None).is_err());
    }
}
