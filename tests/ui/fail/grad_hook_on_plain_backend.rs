// Gradient hooks need an autodiff backend: on a plain backend there is no
// `append_bwd` at all, so the mistake is a compile error, not a no-op.
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use hooks_core::{Ctx, Site};

fn double_the_gradient<B: Backend>(site: &mut Site<B, 1>) {
    site.append_bwd(|g: Tensor<B, 1>, _: &Ctx| g * 2.0);
}

fn main() {}
