// The derive reads the backend off a field that is plainly a site, so a bad
// first field is still one error at its type.
use burn::tensor::backend::Backend;
use hooks_core::{FwdStage, HookCollection, HookTree, Site, Zero};

#[derive(HookCollection, Clone, Default)]
struct Hooks<B: Backend> {
    count: u32,
    resid: Site<B, 3>,
}

// Using the type adds no error of its own: the derive still emits the impl.
fn use_it<B: Backend>() -> usize {
    let mut hooks = Hooks::<B>::default();
    hooks.append_all(FwdStage::Fwd, Zero);
    hooks.sites().len()
}

fn main() {}
