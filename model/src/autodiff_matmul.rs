//! A 2-D matrix product on `Autodiff<Flex>` whose backward multiplies in
//! the orientation the CPU kernels are fast at.
//!
//! Burn's matmul backward computes the input gradient `dx = g · Wᵀ` against a
//! transposed view of the weight. With few rows (one sequence: `g` is
//! `[128, O]`) `gemm` runs that at a third to a half of its speed on
//! contiguous operands (`[128, 768] × [768, 3072]ᵀ`-shaped: 53 against 137
//! GFLOP/s on a 2-core AMD EPYC, BENCHMARKS.md "Fast on every CPU"). The
//! same numbers come out of `dxᵀ = W · gᵀ` (a row-major `W` times a
//! transposed `g`), which `gemm` runs near its peak; transposing the
//! `[I, 128]` result back is a small copy. The weight gradient `xᵀ · g` is
//! already fast and stays as Burn computes it. The forward product is
//! `crate::fused`'s, split over columns when it has few rows.
//!
//! Every other backend (and a non-f32 dtype) takes `Tensor::matmul`.

use std::any::TypeId;

use burn::backend::Autodiff;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, binary};
use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, FloatTensorOps};
use burn::tensor::{DType, Tensor, TensorPrimitive};
use burn_flex::{Flex, FlexTensor};

use crate::backend::cast;

type Tracked = FloatTensor<Autodiff<Flex>>;

/// Fewer gradient rows than this (and than the weight's rows) take the
/// transposed orientation; at 1024 rows both run at the same speed.
const TRANSPOSED_BELOW_ROWS: usize = 512;

/// `lhs · rhs` for `[M, K] × [K, N]`, with the faster backward on
/// `Autodiff<Flex>` (see the module's documentation).
pub fn matmul_2d<B: Backend>(lhs: Tensor<B, 2>, rhs: Tensor<B, 2>) -> Tensor<B, 2> {
    if TypeId::of::<B>() != TypeId::of::<Autodiff<Flex>>()
        || lhs.dtype() != DType::F32
        || rhs.dtype() != DType::F32
    {
        return lhs.matmul(rhs);
    }
    let lhs: Tracked = cast(lhs.into_primitive().tensor());
    let rhs: Tracked = cast(rhs.into_primitive().tensor());
    Tensor::from_primitive(TensorPrimitive::Float(cast(tracked_matmul(lhs, rhs))))
}

#[derive(Debug)]
struct Matmul2d;

impl Backward<Flex, 2> for Matmul2d {
    type State = (Option<NodeId>, Option<NodeId>);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let (lhs, rhs) = ops.state;
        let lhs: Option<FlexTensor> = lhs.map(|id| checkpointer.retrieve_node_output(id));
        let rhs: Option<FlexTensor> = rhs.map(|id| checkpointer.retrieve_node_output(id));
        binary::<Flex, _, _>(
            ops.parents,
            ops.node,
            grads,
            |grad| lhs_gradient(grad, rhs.expect("kept when lhs is tracked")),
            |grad| {
                Flex::float_matmul(
                    Flex::float_transpose(lhs.expect("kept when rhs is tracked")),
                    grad,
                )
            },
        );
    }
}

/// `g · Wᵀ`, computed as `(W · gᵀ)ᵀ` when `g` has few rows.
fn lhs_gradient(grad: FlexTensor, rhs: FlexTensor) -> FlexTensor {
    let rows = grad.layout().shape()[0];
    let weight_rows = rhs.layout().shape()[0];
    if rows < TRANSPOSED_BELOW_ROWS && rows < weight_rows {
        let transposed = Flex::float_matmul(rhs, Flex::float_transpose(grad));
        Flex::float_transpose(transposed).to_contiguous()
    } else {
        Flex::float_matmul(grad, Flex::float_transpose(rhs))
    }
}

fn tracked_matmul(lhs: Tracked, rhs: Tracked) -> Tracked {
    let lhs_tracked = lhs.is_tracked();
    let rhs_tracked = rhs.is_tracked();
    match Matmul2d
        .prepare::<NoCheckpointing>([lhs.node.clone(), rhs.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let lhs_state = rhs_tracked.then(|| prep.checkpoint(&lhs));
            let rhs_state = lhs_tracked.then(|| prep.checkpoint(&rhs));
            prep.finish(
                (lhs_state, rhs_state),
                crate::fused::flex_matmul_2d(lhs.primitive, rhs.primitive),
            )
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(crate::fused::flex_matmul_2d(lhs.primitive, rhs.primitive))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tolerance};

    type Ad = Autodiff<Flex>;
    type AdNd = Autodiff<burn_ndarray::NdArray>;

    /// Gradients of `sum(sin(x · w))` through `matmul_2d` on Autodiff<Flex>
    /// and through Burn's own matmul on Autodiff<NdArray>, for row counts
    /// on both sides of the orientation switch.
    #[test]
    fn gradients_match_burns_matmul() {
        for (m, k, n) in [(3, 5, 7), (16, 64, 48), (40, 8, 96), (600, 32, 700)] {
            let device = Default::default();
            let x = Tensor::<Flex, 2>::random([m, k], Distribution::Normal(0.0, 1.0), &device);
            let w = Tensor::<Flex, 2>::random([k, n], Distribution::Normal(0.0, 0.3), &device);
            let (xd, wd) = (x.into_data(), w.into_data());

            let xa = Tensor::<Ad, 2>::from_data(xd.clone(), &device).require_grad();
            let wa = Tensor::<Ad, 2>::from_data(wd.clone(), &device).require_grad();
            let ya = matmul_2d(xa.clone(), wa.clone());
            let ga = ya.clone().sin().sum().backward();

            let xb = Tensor::<AdNd, 2>::from_data(xd, &Default::default()).require_grad();
            let wb = Tensor::<AdNd, 2>::from_data(wd, &Default::default()).require_grad();
            let yb = xb.clone().matmul(wb.clone());
            let gb = yb.clone().sin().sum().backward();

            let tol = Tolerance::<f32>::absolute(1e-4 * (k as f32).sqrt()).set_relative(1e-4);
            ya.into_data().assert_approx_eq(&yb.into_data(), tol);
            xa.grad(&ga)
                .unwrap()
                .into_data()
                .assert_approx_eq(&xb.grad(&gb).unwrap().into_data(), tol);
            wa.grad(&ga)
                .unwrap()
                .into_data()
                .assert_approx_eq(&wb.grad(&gb).unwrap().into_data(), tol);
        }
    }

    #[test]
    fn only_one_side_tracked() {
        let device = Default::default();
        let x = Tensor::<Ad, 2>::random([4, 6], Distribution::Normal(0.0, 1.0), &device);
        let w =
            Tensor::<Ad, 2>::random([6, 8], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let grads = matmul_2d(x.clone(), w.clone()).sum().backward();
        let expected = x
            .clone()
            .inner()
            .transpose()
            .matmul(Tensor::ones([4, 8], &device));
        w.grad(&grads)
            .unwrap()
            .into_data()
            .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-5));
        assert!(x.grad(&grads).is_none());
    }

    #[test]
    fn other_backends_use_tensor_matmul() {
        let device = Default::default();
        let a = Tensor::<Flex, 2>::from_floats([[1.0, 2.0], [3.0, 4.0]], &device);
        let b = Tensor::<Flex, 2>::from_floats([[1.0, 0.0], [1.0, 1.0]], &device);
        matmul_2d(a, b).into_data().assert_eq(
            &Tensor::<Flex, 2>::from_floats([[3.0, 2.0], [7.0, 4.0]], &device).into_data(),
            true,
        );
    }
}
