use burn::tensor::backend::Backend;
use hooks_core::{HookCollection, HookTree, Site};

#[derive(HookCollection, Clone)]
enum Hooks<B: Backend> {
    Resid(Site<B, 3>),
    Logits(Site<B, 3>),
}

// Using the type adds no error of its own: the derive still emits an impl.
fn count_sites<B: Backend>(hooks: &Hooks<B>) -> usize {
    hooks.sites().len()
}

fn main() {}
