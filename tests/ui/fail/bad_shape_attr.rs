use burn::tensor::backend::Backend;
use hooks_core::{HookCollection, HookTree, Site};

#[derive(HookCollection, Clone, Default)]
struct Hooks<B: Backend> {
    #[hooks(per_layer = true)]
    a: Site<B, 3>,
    #[hooks(shape = 3)]
    b: Site<B, 3>,
    #[hooks(per_layer, per_layer)]
    c: Site<B, 3>,
    #[hooks(skip, shape = "B")]
    note: String,
    #[hooks(layers)]
    d: Site<B, 3>,
}

fn use_it<B: Backend>() -> usize {
    Hooks::<B>::default().sites().len()
}

fn main() {}
