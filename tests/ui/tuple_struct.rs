use burn_hooks::{HookCollection, Site};
use burn_ndarray::NdArray;

#[derive(HookCollection, Clone, Default)]
struct Hooks(Site<NdArray, 3>, Site<NdArray, 3>);

fn main() {}
