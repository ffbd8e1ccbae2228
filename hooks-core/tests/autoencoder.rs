//! `AutoencoderHooks`: routing a site's value through a (here linear)
//! autoencoder, with hookable latents, reconstruction and error.
//!
//! encode = x * 2, decode = l * 0.25, so the reconstruction is x / 2 and the
//! error x - x / 2 = x / 2.

use std::sync::{Arc, Mutex};

use burn::backend::Autodiff;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn_ndarray::NdArray;
use hooks_core::{AutoencoderHooks, Ctx, HookTree, Site, Zero};

type Ad = Autodiff<NdArray>;

const X: [f32; 4] = [1.0, 2.0, -4.0, 8.0];

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

fn x<B: Backend>() -> Tensor<B, 1> {
    Tensor::from_floats(X, &Default::default())
}

fn linear_sae<B: Backend>(add_error: bool) -> AutoencoderHooks<B, 1> {
    AutoencoderHooks::new(|x| x * 2.0, |l| l * 0.25, add_error)
}

fn scaled(k: f32) -> Vec<f32> {
    X.iter().map(|v| v * k).collect()
}

/// A forward hook that keeps a copy of what it sees.
fn spy<B: Backend>(site: &mut Site<B, 1>) -> Arc<Mutex<Vec<Vec<f32>>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    site.fwd.append(move |t: Tensor<B, 1>, _: &Ctx| {
        s.lock().unwrap().push(values(t.clone()));
        t
    });
    seen
}

#[test]
fn without_add_error_the_output_is_the_reconstruction() {
    let sae = linear_sae::<NdArray>(false);
    assert!(!sae.adds_error());
    assert_eq!(values(sae.call(x(), &Ctx::root())), scaled(0.5));
}

#[test]
fn with_add_error_the_output_is_the_input() {
    let sae = linear_sae::<NdArray>(true);
    assert_eq!(values(sae.call(x(), &Ctx::root())), X);
}

#[test]
fn the_sites_see_latents_reconstruction_and_error() {
    for add_error in [false, true] {
        let mut sae = linear_sae::<NdArray>(add_error);
        let latents = spy(&mut sae.latents);
        let reconstruction = spy(&mut sae.reconstruction);
        let error = spy(&mut sae.error);

        sae.call(x(), &Ctx::at_layer(0));

        assert_eq!(
            *latents.lock().unwrap(),
            [scaled(2.0)],
            "add_error={add_error}"
        );
        assert_eq!(*reconstruction.lock().unwrap(), [scaled(0.5)]);
        assert_eq!(*error.lock().unwrap(), [scaled(0.5)]);
    }
}

#[test]
fn ablating_the_latents_with_add_error_removes_exactly_the_reconstruction() {
    let mut sae = linear_sae::<NdArray>(true);
    let before = values(sae.call(x(), &Ctx::root()));

    sae.latents
        .fwd
        .append(|l: Tensor<NdArray, 1>, _: &Ctx| l.zeros_like());
    let error = spy(&mut sae.error);
    let after = values(sae.call(x(), &Ctx::root()));

    let change: Vec<f32> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let minus_reconstruction = scaled(-0.5);
    assert_eq!(change, minus_reconstruction);
    // The error comes from the unhooked copy of the latents: unchanged.
    assert_eq!(*error.lock().unwrap(), [scaled(0.5)]);
}

#[test]
fn ablation_through_the_tree_api() {
    // The splice is a hook tree of its own: latents, reconstruction, error.
    let mut sae = linear_sae::<NdArray>(false);
    let sites: Vec<String> = sae.sites().into_iter().map(|s| s.path).collect();
    assert_eq!(sites, ["latents", "reconstruction", "error"]);
    sae.append_to_path("latents.fwd", Zero).unwrap();
    assert_eq!(values(sae.call(x(), &Ctx::root())), [0.0; 4]);
}

#[test]
fn with_add_error_the_input_gradient_is_the_identity() {
    let sae = linear_sae::<Ad>(true);
    let input = x::<Ad>().require_grad();
    let grads = sae.call(input.clone(), &Ctx::root()).sum().backward();
    assert_eq!(values(input.grad(&grads).unwrap()), [1.0; 4]);
}

#[test]
fn the_latents_are_differentiable() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut sae = linear_sae::<Ad>(true);
    {
        let seen = seen.clone();
        sae.latents
            .append_bwd(move |g: Tensor<NdArray, 1>, ctx: &Ctx| {
                seen.lock().unwrap().push((ctx.layer(), values(g.clone())));
                g
            });
    }
    let input = x::<Ad>().require_grad();
    let grads = sae.call(input.clone(), &Ctx::at_layer(7)).sum().backward();

    // d output / d latents = decode' = 0.25, through the hooked copy only.
    assert_eq!(*seen.lock().unwrap(), [(Some(7), vec![0.25; 4])]);
    assert_eq!(values(input.grad(&grads).unwrap()), [1.0; 4]);
}

#[test]
fn zeroing_the_latent_gradient_removes_only_the_hooked_paths_share() {
    let mut sae = linear_sae::<Ad>(true);
    sae.latents
        .append_bwd(|g: Tensor<NdArray, 1>, _: &Ctx| g.zeros_like());
    let input = x::<Ad>().require_grad();
    let grads = sae.call(input.clone(), &Ctx::root()).sum().backward();
    // Output = decode(hooked) + x - decode(copy): the hooked path carried
    // +0.5 (2 * 0.25) of the identity and the copy -0.5, which stays.
    assert_eq!(values(input.grad(&grads).unwrap()), [0.5; 4]);
}

#[test]
fn appended_to_a_sites_fwd2() {
    let mut site = Site::<NdArray, 1>::default();
    site.fwd.append(|t: Tensor<NdArray, 1>, _: &Ctx| t + 1.0);
    site.fwd2.append(linear_sae::<NdArray>(false));
    // (x + 1) / 2
    let expected: Vec<f32> = X.iter().map(|v| (v + 1.0) / 2.0).collect();
    assert_eq!(values(site.call(x(), &Ctx::root())), expected);
}

#[test]
fn gradient_hooks_of_the_site_see_the_unspliced_value() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut site = Site::<Ad, 1>::default();
    {
        let seen = seen.clone();
        site.append_bwd(move |g: Tensor<NdArray, 1>, _: &Ctx| {
            seen.lock().unwrap().push(values(g.clone()));
            g
        });
    }
    site.fwd2.append(linear_sae::<Ad>(false));

    let input = x::<Ad>().require_grad();
    let grads = site.call(input.clone(), &Ctx::root()).sum().backward();
    // Output = x / 2: the site's gradient stage sees 0.5 — the gradient with
    // respect to the value before the autoencoder replaced it.
    assert_eq!(*seen.lock().unwrap(), [vec![0.5; 4]]);
    assert_eq!(values(input.grad(&grads).unwrap()), [0.5; 4]);
}

#[test]
fn the_splices_sites_see_the_callers_context() {
    let mut sae = linear_sae::<NdArray>(true);
    let layers = Arc::new(Mutex::new(Vec::new()));
    {
        let layers = layers.clone();
        sae.error
            .fwd
            .append(move |t: Tensor<NdArray, 1>, ctx: &Ctx| {
                layers
                    .lock()
                    .unwrap()
                    .push((ctx.layer(), ctx.get("k").cloned()));
                t
            });
    }
    let mut site = Site::<NdArray, 1>::default();
    site.fwd2.bind("k", 1).unwrap();
    site.fwd2.append(sae);
    site.call(x(), &Ctx::at_layer(3));
    assert_eq!(
        *layers.lock().unwrap(),
        [(Some(3), Some(hooks_core::Value::Int(1)))]
    );
}
