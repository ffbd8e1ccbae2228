//! A Burn model of your own, with a hook tree of your own that mirrors it:
//! the model keeps its blocks in a `Vec`, and so does the derived tree
//! (`blocks: Vec<BlockHooks<B>>`), one set of sites per block.
//!
//! ```text
//! cargo run --example own_model
//! ```
//! Records every site, ablates one block's output through a typed path
//! (`path!(NetHooks<B>: blocks[1].out)`) and through a string path, shows
//! the error an index past the end gets, and halves the gradient flowing
//! through one block with a gradient hook. It prints (random weights, seeded):
//!
//! ```text
//! recorded:
//!   blocks.0.pre_act [2, 8]
//!   blocks.0.out     [2, 8]
//!   ...
//!   logits           [2, 4]
//!
//! sum of logits: clean 1.5291, `blocks.1.out` ablated -0.7029 (typed path) = -0.7029 (string path)
//! blocks[5]: `blocks` has 3 entries (0..=2), not 5 (in "blocks.5.out")
//! blocks.5:  `blocks` has 3 entries (0..=2), not 5 (in "blocks.5.out.fwd")
//!
//! gradient hook on blocks.0.out: Σ|grad| arriving there 7.7051; Σ|grad| at the input 10.5541 without the hook, 9.0753 with it
//! ```

use std::error::Error;
use std::sync::{Arc, Mutex};

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, ElementConversion, Tensor};
use burn_hooks::model::backend::{Cpu, CpuAutodiff};
use burn_hooks::prelude::*;
use burn_hooks::{GradTensor, HookError};

/// The sites of one block: the pre-activation and the block's output
/// (what it adds to the residual stream).
#[derive(HookCollection, Clone, Default)]
pub struct BlockHooks<B: Backend> {
    pub pre_act: Site<B, 2>,
    pub out: Site<B, 2>,
}

/// The whole tree: one `BlockHooks` per block, and the logits.
#[derive(HookCollection, Clone, Default)]
pub struct NetHooks<B: Backend> {
    pub blocks: Vec<BlockHooks<B>>,
    pub logits: Site<B, 2>,
}

#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    fc: Linear<B>,
}

/// A residual MLP: x += relu(fc(x)) per block, then a linear head.
#[derive(Module, Debug)]
pub struct Net<B: Backend> {
    blocks: Vec<Block<B>>,
    head: Linear<B>,
}

impl<B: Backend> Net<B> {
    pub fn new(depth: usize, width: usize, classes: usize, device: &B::Device) -> Self {
        Net {
            blocks: (0..depth)
                .map(|_| Block {
                    fc: LinearConfig::new(width, width).init(device),
                })
                .collect(),
            head: LinearConfig::new(width, classes).init(device),
        }
    }

    /// A hook tree with one entry per block.
    pub fn hooks(&self) -> NetHooks<B> {
        NetHooks {
            blocks: vec![BlockHooks::default(); self.blocks.len()],
            logits: Site::default(),
        }
    }

    /// The forward pass, calling each site of `hooks` where its value is made.
    pub fn forward(&self, x: Tensor<B, 2>, hooks: &NetHooks<B>) -> Tensor<B, 2> {
        let ctx = Ctx::root();
        let mut h = x;
        for (block, sites) in self.blocks.iter().zip(&hooks.blocks) {
            let pre_act = sites.pre_act.call(block.fc.forward(h.clone()), &ctx);
            h = h + sites.out.call(relu(pre_act), &ctx);
        }
        hooks.logits.call(self.head.forward(h), &ctx)
    }
}

fn total(t: Tensor<impl Backend, 2>) -> f32 {
    t.sum().into_scalar().elem()
}

fn main() -> Result<(), Box<dyn Error>> {
    let device = Default::default();
    Cpu::seed(&device, 7);
    let net = Net::<Cpu>::new(3, 8, 4, &device);
    let x = Tensor::<Cpu, 2>::random([2, 8], Distribution::Normal(0.0, 1.0), &device);

    // 1. Record every site: keys are the sites' paths, list entries by index.
    let recorder = Recorder::<Cpu>::new();
    let mut hooks = net.hooks();
    hooks.append_all(FwdStage::Fwd, Record::into(&recorder));
    let clean = net.forward(x.clone(), &hooks);
    println!("recorded:");
    for key in recorder.keys() {
        let t = recorder.get_key(&key).expect("just recorded");
        println!("  {key:<16} {:?}", t.shape());
    }

    // 2. Ablate the second block's output, through a typed path (rustc
    //    checks the names; the index is checked here, where it is used)...
    let out_1 = path!(NetHooks<Cpu>: blocks[1].out);
    let mut ablated = net.hooks();
    ablated.try_at_mut(&out_1)?.fwd.append(Zero);
    let by_typed_path = net.forward(x.clone(), &ablated);
    // ...and through a string path, as a config file or CLI would give it.
    let mut from_string = net.hooks();
    from_string.append_to_path("blocks.1.out.fwd", Zero)?;
    let by_string_path = net.forward(x.clone(), &from_string);
    println!(
        "\nsum of logits: clean {:.4}, `{}` ablated {:.4} (typed path) = {:.4} (string path)",
        total(clean),
        out_1.name(),
        total(by_typed_path),
        total(by_string_path)
    );

    // An index past the end is an error that says how many entries there are.
    let past: Result<_, HookError> = net
        .hooks()
        .try_at(&path!(NetHooks<Cpu>: blocks[5].out))
        .map(|_| ());
    println!("blocks[5]: {}", past.unwrap_err());
    let past = net.hooks().append_to_path("blocks.5.out.fwd", Zero).err();
    println!("blocks.5:  {}", past.expect("there is no block 5"));

    // 3. A gradient hook: halve the gradient flowing back through block 0's
    //    output, and see what reached it.
    let net = Net::<CpuAutodiff>::new(3, 8, 4, &device);
    let x = Tensor::<CpuAutodiff, 2>::random([2, 8], Distribution::Normal(0.0, 1.0), &device)
        .require_grad();
    let seen = Arc::new(Mutex::new(0.0f32));
    let mut hooks = net.hooks();
    {
        let seen = seen.clone();
        hooks.blocks[0]
            .out
            .append_bwd(move |g: GradTensor<CpuAutodiff, 2>, _: &Ctx| {
                *seen.lock().unwrap() = g.clone().abs().sum().into_scalar();
                g * 0.5
            });
    }
    let input_grad = |hooks: &NetHooks<CpuAutodiff>| {
        let grads = net.forward(x.clone(), hooks).sum().backward();
        let g = x.grad(&grads).expect("x requires grad");
        g.abs().sum().into_scalar()
    };
    let plain = input_grad(&net.hooks());
    let halved = input_grad(&hooks);
    println!(
        "\ngradient hook on blocks.0.out: Σ|grad| arriving there {:.4}; \
         Σ|grad| at the input {plain:.4} without the hook, {halved:.4} with it",
        *seen.lock().unwrap()
    );
    Ok(())
}
