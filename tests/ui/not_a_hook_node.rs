use burn::tensor::backend::Backend;
use burn_hooks::{HookCollection, Site};

#[derive(HookCollection, Clone, Default)]
struct Hooks<B: Backend> {
    resid: Site<B, 3>,
    count: u32,
}

fn main() {}
