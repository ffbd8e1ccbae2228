use burn_hooks::{HookCollection, Site};
use burn_ndarray::NdArray;

#[derive(HookCollection, Clone)]
enum Hooks {
    Resid(Site<NdArray, 3>),
    Logits(Site<NdArray, 3>),
}

fn main() {}
