// Two fields that are not hook nodes: one error each, at each field's type.
use burn::tensor::backend::Backend;
use hooks_core::{HookCollection, HookTree, Site};

#[derive(HookCollection, Clone, Default)]
struct Hooks<B: Backend> {
    resid: Site<B, 3>,
    count: u32,
    names: Option<String>,
}

// Using the type adds no error of its own: the derive still emits the impl.
fn use_it<B: Backend>(hooks: &Hooks<B>) -> usize {
    hooks.sites().len()
}

fn main() {}
