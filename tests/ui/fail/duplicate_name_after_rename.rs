use burn::tensor::backend::Backend;
use hooks_core::{HookCollection, Site};

#[derive(HookCollection, Clone, Default)]
struct Hooks<B: Backend> {
    post_act: Site<B, 3>,
    #[hooks(rename = "post_act")]
    post_gelu: Site<B, 3>,
}

fn main() {}
