// The derive reads the backend off a field that is plainly a site, so a bad
// first field is still one error at its type.
use burn::tensor::backend::Backend;
use hooks_core::{HookCollection, Site};

#[derive(HookCollection, Clone, Default)]
struct Hooks<B: Backend> {
    count: u32,
    resid: Site<B, 3>,
}

fn main() {}
