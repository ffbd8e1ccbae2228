use burn::tensor::backend::Backend;
use hooks_core::{HookCollection, Site};

#[derive(HookCollection, Clone, Default)]
struct Hooks<B: Backend> {
    resid: Site<B, 3>,
    count: u32,
}

fn main() {}
