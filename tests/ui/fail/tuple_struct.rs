use burn::tensor::backend::Backend;
use hooks_core::{HookCollection, Site};

#[derive(HookCollection, Clone, Default)]
struct Hooks<B: Backend>(Site<B, 3>, Site<B, 3>);

fn main() {}
