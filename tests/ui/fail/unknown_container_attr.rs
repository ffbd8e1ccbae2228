use burn::tensor::backend::Backend;
use hooks_core::{HookCollection, Site};

#[derive(HookCollection, Clone, Default)]
#[hooks(rename_all = "snake_case")]
struct Hooks<B: Backend> {
    pre_act: Site<B, 3>,
}

fn main() {}
