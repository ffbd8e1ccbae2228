use burn::tensor::backend::Backend;
use hooks_core::{HookCollection, Site, path};

#[derive(HookCollection, Clone, Default)]
struct Mlp<B: Backend> {
    pre_act: Site<B, 3>,
    post_act: Site<B, 3>,
}

#[derive(HookCollection, Clone, Default)]
struct Model<B: Backend> {
    mlp: Mlp<B>,
}

fn post_act_path<B: Backend>() {
    let _ = path!(Model<B>: mlp.post_atc);
}

fn main() {}
