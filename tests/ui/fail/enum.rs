use burn::tensor::backend::Backend;
use hooks_core::{HookCollection, Site};

#[derive(HookCollection, Clone)]
enum Hooks<B: Backend> {
    Resid(Site<B, 3>),
    Logits(Site<B, 3>),
}

fn main() {}
