use burn::tensor::backend::Backend;
use hooks_core::{HookCollection, HookTree, Site, path};

#[derive(HookCollection, Clone, Default)]
struct Mlp<B: Backend> {
    pre_act: Site<B, 3>,
    post_act: Site<B, 3>,
}

#[derive(HookCollection, Clone, Default)]
struct Model<B: Backend> {
    mlp: Mlp<B>,
}

fn post_act_is_empty<B: Backend>(hooks: &Model<B>) -> bool {
    let post_act = path!(Model<B>: mlp.post_atc);
    hooks.at(&post_act).is_empty()
}

fn main() {}
