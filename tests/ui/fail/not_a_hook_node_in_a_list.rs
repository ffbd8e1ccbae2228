// A list, option or box of something that is not a hook node is one error,
// at the field's type.
use burn::tensor::backend::Backend;
use hooks_core::{FwdStage, HookCollection, HookTree, Site, Zero};

#[derive(HookCollection, Clone, Default)]
struct Hooks<B: Backend> {
    resid: Site<B, 3>,
    counts: Vec<u32>,
}

// Using the type adds no error of its own: the derive still emits the impl.
fn use_it<B: Backend>() -> usize {
    let mut hooks = Hooks::<B>::default();
    hooks.append_all(FwdStage::Fwd, Zero);
    hooks.sites().len()
}

fn main() {}
