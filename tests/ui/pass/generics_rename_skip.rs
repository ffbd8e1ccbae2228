// Generic trees, renamed and skipped fields, nested collections, a where
// clause and extra generic parameters all derive.
use std::marker::PhantomData;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn_hooks::{FwdStage, HookCollection, HookTree, Site, Zero, path};
use burn_ndarray::NdArray;

#[derive(HookCollection, Clone, Default)]
struct Attn<B: Backend, const H: usize> {
    q: Site<B, H>,
    #[hooks(rename = "probs")]
    qk_probs: Site<B, 4>,
    #[hooks(skip)]
    label: String,
}

#[derive(HookCollection, Clone, Default)]
struct Model<B, T = ()>
where
    B: Backend,
    T: Clone + Default + Send + Sync + 'static,
{
    attn: Attn<B, 4>,
    r#type: Site<B, 2>,
    #[hooks(skip)]
    _extra: PhantomData<fn() -> T>,
    #[hooks(skip)]
    config: T,
}

fn run<B: Backend>() {
    let mut m = Model::<B>::default();
    m.append_all(FwdStage::Fwd, Zero);
    let paths: Vec<String> = m.sites().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["attn.q", "attn.probs", "type"]);
    let _ = (&m.attn.label, &m.config);
}

fn main() {
    run::<NdArray>();
    run::<Autodiff<NdArray>>();
    let p = path!(Model<NdArray, u8>: attn.qk_probs);
    assert_eq!(p.name(), "attn.probs");
}
