use burn::tensor::backend::Backend;
use hooks_core::{HookCollection, HookTree, Site};

#[derive(HookCollection, Clone, Default)]
struct Inner<B: Backend> {
    out: Site<B, 3>,
}

#[derive(HookCollection, Clone, Default)]
struct Hooks<B: Backend> {
    #[hooks(shape = "B,S,D")]
    q: Site<B, 4>,
    #[hooks(shape = "B,S,D")]
    heads: Vec<[Site<B, 2>; 4]>,
    #[hooks(shape = "B,S,D")]
    inner: Inner<B>,
}

fn use_it<B: Backend>() -> usize {
    Hooks::<B>::default().sites().len()
}

fn main() {}
