//! What must derive: generic trees, renamed and skipped fields, nested
//! collections, a where clause and extra generic parameters.

use std::marker::PhantomData;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn_ndarray::NdArray;
use hooks_core::{FwdStage, HookCollection, HookTree, Site, Zero, path};

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

fn site_paths<B: Backend>() -> Vec<String> {
    let mut m = Model::<B>::default();
    m.append_all(FwdStage::Fwd, Zero);
    assert!(m.attn.label.is_empty());
    let () = m.config;
    m.sites().into_iter().map(|s| s.path).collect()
}

#[test]
fn generic_renamed_and_skipped_fields_derive_on_plain_and_autodiff_backends() {
    assert_eq!(site_paths::<NdArray>(), ["attn.q", "attn.probs", "type"]);
    assert_eq!(
        site_paths::<Autodiff<NdArray>>(),
        ["attn.q", "attn.probs", "type"]
    );
}

#[test]
fn typed_path_uses_the_renamed_name() {
    let p = path!(Model<NdArray, u8>: attn.qk_probs);
    assert_eq!(p.name(), "attn.probs");
}
