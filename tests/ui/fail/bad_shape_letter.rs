use burn::tensor::backend::Backend;
use hooks_core::{HookCollection, HookTree, Site};

#[derive(HookCollection, Clone, Default)]
struct Hooks<B: Backend> {
    #[hooks(shape = "B,S,X")]
    resid: Site<B, 3>,
    #[hooks(shape = "B,,D")]
    empty: Site<B, 3>,
}

// The impl is still emitted: using the type adds no error.
fn use_it<B: Backend>() -> usize {
    Hooks::<B>::default().sites().len()
}

fn main() {}
