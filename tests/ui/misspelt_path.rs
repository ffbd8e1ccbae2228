use burn::tensor::backend::Backend;
use burn_hooks::{HookCollection, Site, path};
use burn_ndarray::NdArray;

#[derive(HookCollection, Clone, Default)]
struct Mlp<B: Backend> {
    pre_act: Site<B, 3>,
    post_act: Site<B, 3>,
}

#[derive(HookCollection, Clone, Default)]
struct Model<B: Backend> {
    mlp: Mlp<B>,
}

fn main() {
    let _ = path!(Model<NdArray>: mlp.post_atc);
}
