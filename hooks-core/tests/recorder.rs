//! `Recorder`: one recording per key, first-recorded order, and the same
//! recording whether named by site and layer or by its key.

use burn::tensor::Tensor;
use burn_ndarray::NdArray;
use hooks_core::{ErasedTensor, Recorder};

type B = NdArray;

fn t(v: f32) -> Tensor<B, 1> {
    Tensor::from_floats([v], &Default::default())
}

fn value(rec: &Recorder<B>, key: &str) -> f32 {
    rec.get_key(key)
        .and_then(|e| e.tensor::<1>())
        .map(|t| t.into_scalar())
        .unwrap_or_else(|| panic!("nothing recorded under {key}"))
}

#[test]
fn recording_a_key_again_replaces_it() {
    let rec = Recorder::<B>::new();
    rec.record("resid.post_emb", None, t(1.0));
    rec.record("attn.q", Some(0), t(2.0));
    rec.record("attn.q", Some(0), t(3.0));
    assert_eq!(rec.len(), 2);
    assert_eq!(rec.keys(), vec!["resid.post_emb", "layers.0.attn.q"]);
    assert_eq!(value(&rec, "layers.0.attn.q"), 3.0);
}

#[test]
fn after_clear_the_order_is_the_new_passes() {
    let rec = Recorder::<B>::new();
    for (site, layer) in [("a", Some(0)), ("b", Some(0)), ("c", None)] {
        rec.record(site, layer, t(1.0));
    }
    rec.clear();
    assert!(rec.is_empty());
    assert_eq!(rec.get_key("layers.0.a").map(|e| e.rank()), None);
    // A new pass in another order, over fewer sites.
    rec.record("c", None, t(5.0));
    rec.record("a", Some(0), t(6.0));
    rec.record("c", None, t(7.0));
    assert_eq!(rec.keys(), vec!["c", "layers.0.a"]);
    assert_eq!((value(&rec, "c"), value(&rec, "layers.0.a")), (7.0, 6.0));
    assert!(rec.get::<1>("b", Some(0)).is_none());
}

#[test]
fn a_key_and_its_site_and_layer_name_the_same_recording() {
    let rec = Recorder::<B>::new();
    rec.record("x", Some(3), t(1.0));
    assert_eq!(value(&rec, "layers.3.x"), 1.0);
    assert_eq!(rec.get::<1>("layers.3.x", None).unwrap().into_scalar(), 1.0);
    rec.insert("layers.3.x".into(), ErasedTensor::new(t(2.0)));
    rec.record("layers.3.x", None, t(4.0));
    assert_eq!(rec.len(), 1);
    assert_eq!(rec.get::<1>("x", Some(3)).unwrap().into_scalar(), 4.0);
    // Only the form record_key writes is read as a layer.
    rec.record("layers.03.x", None, t(8.0));
    assert_eq!(rec.keys(), vec!["layers.3.x", "layers.03.x"]);
    assert_eq!(rec.get::<1>("x", Some(3)).unwrap().into_scalar(), 4.0);
}

#[test]
fn a_recording_of_another_rank_is_not_returned_at_this_rank() {
    let rec = Recorder::<B>::new();
    rec.record("x", None, t(1.0));
    assert!(rec.get::<2>("x", None).is_none());
    assert!(rec.get::<1>("x", None).is_some());
}

#[test]
fn clones_share_one_store() {
    let rec = Recorder::<B>::new();
    let other = rec.clone();
    other.record("x", Some(1), t(9.0));
    assert_eq!(value(&rec, "layers.1.x"), 9.0);
    rec.clear();
    assert!(other.is_empty());
}
