use burn::tensor::backend::Backend;
use hooks_core::{HookCollection, Site};

#[derive(HookCollection, Clone, Default)]
struct Hooks<B: Backend> {
    #[hooks(name = "pre")]
    pre_act: Site<B, 3>,
}

fn main() {}
