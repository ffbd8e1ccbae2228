//! `render()`: the tree in the shape of the reference's `__repr__`: four
//! spaces a level, every node under its full dotted path, bound values after
//! a stage's name, and under each stage its hooks (groups with their own
//! hooks below them).
//!
//! The reference prints, for the same tree,
//!
//! ```text
//! Small
//!     mlp
//!         mlp.pre_act
//!             mlp.pre_act.fwd {'layer': 3}
//!             ...
//!             mlp.post_act.fwd {'layer': 3}
//!                 AtLayers([3, 5])
//!                     <function ablate at 0x...>
//! ```
//!
//! Differences: bindings print as `{layer: 3}` (no Python quotes), and a
//! hook prints its name (`named(..)`, a type name, or the closure's path).

use burn::backend::Autodiff;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn_ndarray::NdArray;
use hooks_core::{
    AutoencoderHooks, Ctx, FwdStage, HookCollection, HookTree, Hooks, Scale, Site, named,
};

#[derive(HookCollection, Clone, Default)]
struct Mlp<B: Backend> {
    pre_act: Site<B, 3>,
    #[hooks(rename = "post_gelu")]
    post_act: Site<B, 3>,
}

#[derive(HookCollection, Clone, Default)]
struct Small<B: Backend> {
    mlp: Mlp<B>,
    logits: Site<B, 3>,
}

fn ablate(x: Tensor<NdArray, 3>, _: &Ctx) -> Tensor<NdArray, 3> {
    x * 0.0
}

#[test]
fn an_empty_tree() {
    let hooks = Small::<NdArray>::default();
    assert_eq!(
        hooks.render(),
        "\
Small
    mlp
        mlp.pre_act
            mlp.pre_act.fwd
            mlp.pre_act.bwd
            mlp.pre_act.fwd2
        mlp.post_gelu
            mlp.post_gelu.fwd
            mlp.post_gelu.bwd
            mlp.post_gelu.fwd2
    logits
        logits.fwd
        logits.bwd
        logits.fwd2
"
    );
}

#[test]
fn bindings_groups_and_named_hooks() {
    let mut hooks = Small::<NdArray>::default();
    hooks.bind("layer", 3).unwrap();
    hooks
        .mlp
        .post_act
        .fwd
        .append(Hooks::at_layers([3, 5]).with(named("ablate", ablate)));
    hooks.logits.fwd2.append(|x: Tensor<NdArray, 3>, _: &Ctx| x);
    hooks.append_to_path("logits.fwd2", Scale(0.5)).unwrap();

    assert_eq!(
        hooks.render(),
        "\
Small
    mlp
        mlp.pre_act
            mlp.pre_act.fwd {layer: 3}
            mlp.pre_act.bwd {layer: 3}
            mlp.pre_act.fwd2 {layer: 3}
        mlp.post_gelu
            mlp.post_gelu.fwd {layer: 3}
                AtLayers([3, 5])
                    ablate
            mlp.post_gelu.bwd {layer: 3}
            mlp.post_gelu.fwd2 {layer: 3}
    logits
        logits.fwd {layer: 3}
        logits.bwd {layer: 3}
        logits.fwd2 {layer: 3}
            bindings_groups_and_named_hooks::{{closure}}
            Scale(0.5)
"
    );
}

#[test]
fn several_bindings_print_in_binding_order() {
    let mut site = Site::<NdArray, 3>::default();
    site.fwd
        .bind("layer", 1)
        .unwrap()
        .bind("name", "q")
        .unwrap();
    site.fwd
        .bind("scale", 0.5)
        .unwrap()
        .bind("heads", vec![0i64, 3])
        .unwrap();
    site.fwd
        .append(named("noop", |x: Tensor<NdArray, 3>, _: &Ctx| x));
    assert_eq!(
        format!("{site:?}"),
        "\
Site
    fwd {layer: 1, name: \"q\", scale: 0.5, heads: [0, 3]}
        noop
    bwd
    fwd2"
    );
}

#[test]
fn a_stage_and_a_group_render_alone() {
    let mut group = Hooks::at_layers(2).named("OnlyLayer2");
    group.append(named("double", |x: f32, _: &Ctx| x * 2.0));
    let mut stage: Hooks<f32> = Hooks::new();
    stage.append(group);
    assert_eq!(
        format!("{stage:?}"),
        "Hooks\n    OnlyLayer2\n        double"
    );
    // The reference's names: `AtLayers(3)` prints its list, like `AtLayers([3])`.
    assert_eq!(format!("{:?}", Hooks::<f32>::at_layers(3)), "AtLayers([3])");
    let cond = Hooks::<f32>::conditional(|x: &f32, _: &Ctx| *x > 0.0);
    assert_eq!(format!("{cond:?}"), "ConditionalHooks");
    let wrap = Hooks::<f32>::wrapping(|h| h);
    assert_eq!(format!("{wrap:?}"), "WrapperHooks");
}

#[test]
fn gradient_hooks_and_autoencoders_render_under_their_stage() {
    type Ad = Autodiff<NdArray>;
    let mut sae = AutoencoderHooks::<Ad, 3>::new(|x| x, |x| x, true);
    sae.latents
        .append_bwd(named("clip", |g: Tensor<NdArray, 3>, _: &Ctx| {
            g.clamp(-1.0, 1.0)
        }));
    let mut hooks = Small::<Ad>::default();
    hooks.logits.fwd_stage_mut(FwdStage::Fwd2).append(sae);
    assert_eq!(
        format!("{:?}", hooks.logits),
        "\
Site
    fwd
    bwd
    fwd2
        AutoencoderHooks(add_error)
            latents
                latents.fwd
                latents.bwd
                    clip
                latents.fwd2
            reconstruction
                reconstruction.fwd
                reconstruction.bwd
                reconstruction.fwd2
            error
                error.fwd
                error.bwd
                error.fwd2"
    );
}
