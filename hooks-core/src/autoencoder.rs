//! Routing a site's value through a sparse autoencoder (the reference's
//! `AutoencoderHooks`).

use std::borrow::Cow;
use std::sync::Arc;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::hook::{Hook, HookFn, IntoHook};
use crate::node::{HookNode, Schema, SchemaChild, Segment, Visitor, VisitorMut};
use crate::render::Renderer;
use crate::{Ctx, Site};

/// The decoder [`AutoencoderHooks::with_input_decoder`]'s encoder returns
/// for one input.
pub type InputDecoder<B, const D: usize> = Box<dyn Fn(Tensor<B, D>) -> Tensor<B, D>>;

type Coder<B, const D: usize> = Arc<dyn Fn(Tensor<B, D>) -> Tensor<B, D> + Send + Sync>;

type Encoder<B, const D: usize> =
    Arc<dyn Fn(Tensor<B, D>) -> (Tensor<B, D>, InputDecoder<B, D>) + Send + Sync>;

/// The two halves: a fixed decoder, or one per input.
enum Coders<B: Backend, const D: usize> {
    Fixed(Coder<B, D>, Coder<B, D>),
    PerInput(Encoder<B, D>),
}

impl<B: Backend, const D: usize> Clone for Coders<B, D> {
    fn clone(&self) -> Self {
        match self {
            Coders::Fixed(e, d) => Coders::Fixed(e.clone(), d.clone()),
            Coders::PerInput(e) => Coders::PerInput(e.clone()),
        }
    }
}

/// A hook that replaces `x` by an autoencoder's view of it, with three
/// sites of its own:
///
/// - `latents = encode(x)`, hooked at `latents`;
/// - `reconstruction = decode(latents)`, hooked at `reconstruction`;
/// - `error = x - reconstruction`, hooked at `error`.
///
/// Without `add_error` the hook returns the reconstruction. With it, it
/// returns `reconstruction + error`, where the error is computed from a second,
/// unhooked copy of the latents: the output equals `x` (up to float rounding)
/// while the hooked latents stay in the autodiff graph, readable, ablatable
/// and differentiable; ablating a latent then changes the output by exactly the
/// change in the reconstruction.
///
/// Append it to a site stage (the reference uses `fwd2`): it is a hook.
/// Configure its own sites before appending; once appended it is shared.
pub struct AutoencoderHooks<B: Backend, const D: usize> {
    /// Hooks on the latents.
    pub latents: Site<B, D>,
    /// Hooks on the reconstruction.
    pub reconstruction: Site<B, D>,
    /// Hooks on the error `x - reconstruction`.
    pub error: Site<B, D>,
    coders: Coders<B, D>,
    add_error: bool,
}

impl<B: Backend, const D: usize> Clone for AutoencoderHooks<B, D> {
    /// Copies the sites' hook lists; the encoder, decoder and hook functions
    /// are shared.
    fn clone(&self) -> Self {
        AutoencoderHooks {
            latents: self.latents.clone(),
            reconstruction: self.reconstruction.clone(),
            error: self.error.clone(),
            coders: self.coders.clone(),
            add_error: self.add_error,
        }
    }
}

impl<B: Backend, const D: usize> AutoencoderHooks<B, D> {
    /// An autoencoder splice from its two halves.
    pub fn new(
        encode: impl Fn(Tensor<B, D>) -> Tensor<B, D> + Send + Sync + 'static,
        decode: impl Fn(Tensor<B, D>) -> Tensor<B, D> + Send + Sync + 'static,
        add_error: bool,
    ) -> Self {
        Self::with_coders(Coders::Fixed(Arc::new(encode), Arc::new(decode)), add_error)
    }

    /// An autoencoder splice whose decoder depends on the input as well as
    /// the latents: `encode(x)` returns the latents and the decoder for this
    /// `x`, applied to the hooked latents and (with `add_error`) to the
    /// unhooked ones. E.g. an autoencoder that layer-normalises its input and
    /// scales the reconstruction back by the input's mean and deviation
    /// (OpenAI's TopK autoencoders).
    pub fn with_input_decoder(
        encode: impl Fn(Tensor<B, D>) -> (Tensor<B, D>, InputDecoder<B, D>) + Send + Sync + 'static,
        add_error: bool,
    ) -> Self {
        Self::with_coders(Coders::PerInput(Arc::new(encode)), add_error)
    }

    fn with_coders(coders: Coders<B, D>, add_error: bool) -> Self {
        AutoencoderHooks {
            latents: Site::default(),
            reconstruction: Site::default(),
            error: Site::default(),
            coders,
            add_error,
        }
    }

    /// Whether the error term is added back (output = input).
    pub fn adds_error(&self) -> bool {
        self.add_error
    }

    /// Runs the splice on `x`. Its own sites are called under their paths in
    /// this splice's tree (`latents`, `reconstruction`, `error`: what
    /// [`sites`](crate::HookTree::sites) lists), with the caller's layer and
    /// bindings.
    pub fn call(&self, x: Tensor<B, D>, ctx: &Ctx<'_>) -> Tensor<B, D> {
        let per_input: InputDecoder<B, D>;
        let (latents, decode): (_, &dyn Fn(Tensor<B, D>) -> Tensor<B, D>) = match &self.coders {
            Coders::Fixed(encode, decode) => (encode(x.clone()), decode.as_ref()),
            Coders::PerInput(encode) => {
                let latents;
                (latents, per_input) = encode(x.clone());
                (latents, per_input.as_ref())
            }
        };
        // Burn tensors are immutable handles: "cloning" the latents gives two
        // uses of one graph node, which autodiff sums exactly as PyTorch sums
        // the gradients of the reference's two `.clone()`s.
        let latents_for_error = self.add_error.then(|| latents.clone());
        let hooked = self.latents.call(latents, &ctx.with_site("latents"));
        let reconstruction = self
            .reconstruction
            .call(decode(hooked), &ctx.with_site("reconstruction"));
        let error_ctx = ctx.with_site("error");
        match latents_for_error {
            Some(latents) => {
                let error = self.error.call(x - decode(latents), &error_ctx);
                reconstruction + error
            }
            None => {
                // Called for its hooks (e.g. recording); the value is dropped.
                let _ = self.error.call(x - reconstruction.clone(), &error_ctx);
                reconstruction
            }
        }
    }
}

impl<B: Backend, const D: usize> HookFn<Tensor<B, D>> for AutoencoderHooks<B, D> {
    fn call(&self, x: Tensor<B, D>, ctx: &Ctx<'_>) -> Tensor<B, D> {
        AutoencoderHooks::call(self, x, ctx)
    }

    fn name(&self) -> Cow<'_, str> {
        Cow::Borrowed(if self.add_error {
            "AutoencoderHooks(add_error)"
        } else {
            "AutoencoderHooks"
        })
    }

    fn render(&self, out: &mut Renderer) {
        for line in crate::tree::render_node(self, &self.name()).lines() {
            out.line(line);
        }
    }
}

impl<B: Backend, const D: usize> IntoHook<Tensor<B, D>> for AutoencoderHooks<B, D> {
    fn into_hook(self) -> Hook<Tensor<B, D>> {
        Arc::new(self)
    }
}

impl<B: Backend, const D: usize> HookNode for AutoencoderHooks<B, D> {
    type Backend = B;

    fn schema() -> Schema {
        let site = <Site<B, D> as HookNode>::schema;
        Schema::Collection {
            type_name: "AutoencoderHooks",
            children: ["latents", "reconstruction", "error"]
                .into_iter()
                .map(|name| SchemaChild::plain(name, name, site))
                .collect(),
        }
    }

    fn walk<V: Visitor<B>>(&self, v: &mut V) {
        for (name, site) in [
            ("latents", &self.latents),
            ("reconstruction", &self.reconstruction),
            ("error", &self.error),
        ] {
            if v.enter(Segment::Name(name)) {
                site.walk(v);
                v.exit(Segment::Name(name));
            }
        }
    }

    fn walk_mut<V: VisitorMut<B>>(&mut self, v: &mut V) {
        for (name, site) in [
            ("latents", &mut self.latents),
            ("reconstruction", &mut self.reconstruction),
            ("error", &mut self.error),
        ] {
            if v.enter(Segment::Name(name)) {
                site.walk_mut(v);
                v.exit(Segment::Name(name));
            }
        }
    }
}
