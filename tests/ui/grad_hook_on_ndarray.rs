// Gradient hooks need an autodiff backend: on a plain backend there is no
// `append_bwd` at all, so the mistake is a compile error, not a no-op.
use burn::tensor::Tensor;
use burn_hooks::{Ctx, Site};
use burn_ndarray::NdArray;

fn main() {
    let mut site = Site::<NdArray, 1>::default();
    site.append_bwd(|g: Tensor<NdArray, 1>, _: &Ctx| g * 2.0);
}
