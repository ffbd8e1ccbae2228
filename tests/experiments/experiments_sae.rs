//! Sparse autoencoders spliced through `AutoencoderHooks`: with the error
//! term the model is unchanged (outputs and parameter gradients) while the
//! latents are readable, differentiable and ablatable; without it the site
//! becomes the reconstruction. TopK sparsity, and the safetensors format.

use crate::common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use burn_hooks::experiments::{
    Ablate, Activation, SaeSite, SparseAutoencoder, read_safetensors, splice_sae,
    write_safetensors, write_safetensors_with_metadata,
};
use burn_hooks::train::next_token_loss;
use common::{Calls, HostTensor, TempDir, Tensors, assert_close, host, load, max_abs_diff, record};
use hooks_core::{Ctx, Hook, Hooks};
use hooks_model::backend::NdArray;
use hooks_model::{Gpt2, ModelError, TokenBatch, TransformerHooks};

type B = NdArray;
type AD = Autodiff<NdArray>;
const ALL: std::ops::Range<usize> = 0..usize::MAX;

/// D, F = 4D, and the latent counts used for each width.
const D: usize = 32;
const F: usize = 128;
const L_D: usize = 96;
const L_F: usize = 256;

fn batch() -> TokenBatch {
    TokenBatch::new(vec![
        vec![3, 14, 15, 92, 65, 35],
        vec![89, 79, 32, 38, 46, 26],
    ])
    .unwrap()
}

/// Three autoencoders with the error term, at the reference's three places.
fn splice_three<Bk: Backend>(hooks: &mut TransformerHooks<Bk>) {
    let device = Default::default();
    let relu = Activation::Relu;
    let post_act = SparseAutoencoder::<Bk>::init(F, L_F, relu, &device);
    let delta_mlp = SparseAutoencoder::<Bk>::init(D, L_D, relu, &device);
    let delta_attn = SparseAutoencoder::<Bk>::init(D, L_D, Activation::TopK(8), &device);
    splice_sae(
        hooks,
        SaeSite::MlpPostAct,
        0,
        post_act.autoencoder_hooks(true),
    )
    .unwrap();
    splice_sae(
        hooks,
        SaeSite::DeltaMlp,
        1,
        delta_mlp.autoencoder_hooks(true),
    )
    .unwrap();
    splice_sae(
        hooks,
        SaeSite::DeltaAttn,
        0,
        delta_attn.autoencoder_hooks(true),
    )
    .unwrap();
}

#[test]
fn with_the_error_term_the_logits_do_not_change() {
    let model = load::<B>("tiny");
    let plain = host(
        model
            .forward(&batch(), &TransformerHooks::default())
            .unwrap(),
    );
    let mut hooks = TransformerHooks::<B>::default();
    splice_three(&mut hooks);
    let spliced = host(model.forward(&batch(), &hooks).unwrap());
    assert_close("spliced logits", &spliced, &plain, 1e-4, 0.0);
    // The splice did run: its reconstruction alone would change them.
    let mut recon_only = TransformerHooks::<B>::default();
    let sae = SparseAutoencoder::<B>::init(D, L_D, Activation::Relu, &Default::default());
    splice_sae(
        &mut recon_only,
        SaeSite::DeltaMlp,
        1,
        sae.autoencoder_hooks(false),
    )
    .unwrap();
    let changed = host(model.forward(&batch(), &recon_only).unwrap());
    assert!(max_abs_diff(&changed, &plain) > 1e-3);
}

#[test]
fn with_the_error_term_parameter_gradients_do_not_change() {
    let model = load::<AD>("tiny");
    let grads_of = |hooks: &TransformerHooks<AD>| {
        let logits = model.forward(&batch(), hooks).unwrap();
        let grads = next_token_loss(logits, &batch(), 0).backward();
        let wte = host(model.wte.grad(&grads).expect("wte grad"));
        let c_fc = host(
            model.blocks[0]
                .mlp
                .c_fc
                .weight
                .grad(&grads)
                .expect("c_fc grad"),
        );
        (wte, c_fc)
    };
    let (wte, c_fc) = grads_of(&TransformerHooks::default());
    let mut hooks = TransformerHooks::<AD>::default();
    splice_three(&mut hooks);
    let (wte_s, c_fc_s) = grads_of(&hooks);
    assert!(wte.iter().any(|&g| g != 0.0));
    assert_close("wte grad", &wte_s, &wte, 1e-6, 1e-4);
    assert_close("c_fc grad", &c_fc_s, &c_fc, 1e-6, 1e-4);
}

#[test]
fn latents_are_readable_and_differentiable() {
    let model = load::<AD>("tiny");
    let device = Default::default();
    let sae = SparseAutoencoder::<AD>::init(D, L_D, Activation::Relu, &device);
    let mut ae = sae.autoencoder_hooks(true);
    let latents = record(&mut ae.latents);
    let latent_grads: Calls<B, 3> = Arc::default();
    let lg = latent_grads.clone();
    ae.latents
        .append_bwd(move |g: Tensor<B, 3>, ctx: &Ctx<'_>| {
            lg.lock().unwrap().push((ctx.layer(), g.clone()));
            g
        });

    let mut hooks = TransformerHooks::<AD>::default();
    let inputs = record(&mut hooks.resid.torso.delta_mlp);
    let out_grads: Calls<B, 3> = Arc::default();
    let og = out_grads.clone();
    hooks
        .resid
        .torso
        .delta_mlp
        .append_bwd(move |g: Tensor<B, 3>, ctx: &Ctx<'_>| {
            og.lock().unwrap().push((ctx.layer(), g.clone()));
            g
        });
    splice_sae(&mut hooks, SaeSite::DeltaMlp, 1, ae).unwrap();
    let logits = model.forward(&batch(), &hooks).unwrap();
    next_token_loss(logits, &batch(), 0).backward();

    // Readable: recorded once, at layer 1, [B, S, L], equal to encode(x).
    let lat = common::at_layer(&latents, Some(1));
    assert_eq!(latents.lock().unwrap().len(), 1);
    assert_eq!(lat.shape, [2, 6, L_D]);
    let x = common::tensor_at(&inputs, Some(1));
    assert_eq!(lat.data, host(sae.encode(x)));
    assert!(
        lat.data.iter().filter(|&&v| v > 0.0).count() > 10,
        "some latents fire"
    );

    // Differentiable: the latents' gradient is the site's output gradient
    // through the decoder, g @ W_decᵀ.
    assert_eq!(latent_grads.lock().unwrap().len(), 1);
    let lg = common::at_layer(&latent_grads, Some(1));
    assert_eq!(lg.shape, [2, 6, L_D]);
    assert!(lg.data.iter().any(|&g| g.abs() > 1e-6));
    let g_out = common::tensor_at(&out_grads, Some(1));
    let dec: Tensor<B, 2> = sae.decoder.val().inner();
    let expected = host(g_out.matmul(dec.transpose().unsqueeze::<3>()));
    assert_close("latent gradient", &lg.data, &expected, 1e-7, 1e-4);
}

#[test]
fn without_the_error_term_the_site_becomes_the_reconstruction() {
    let model = load::<B>("tiny");
    let sae = SparseAutoencoder::<B>::init(D, L_D, Activation::Relu, &Default::default());

    let mut spliced = TransformerHooks::<B>::default();
    let mut ae = sae.autoencoder_hooks(false);
    let errors = record(&mut ae.error);
    splice_sae(&mut spliced, SaeSite::DeltaMlp, 1, ae).unwrap();
    let inputs = record(&mut spliced.resid.torso.delta_mlp);
    let out = host(model.forward(&batch(), &spliced).unwrap());

    // The same thing by hand: a fwd2 hook replacing the value with decode(encode(x)).
    let mut by_hand = TransformerHooks::<B>::default();
    let s = sae.clone();
    by_hand.resid.torso.delta_mlp.fwd2.append(
        Hooks::at_layers(1).with(move |x: Tensor<B, 3>, _: &Ctx<'_>| s.decode(s.encode(x))),
    );
    let expected = host(model.forward(&batch(), &by_hand).unwrap());
    assert_eq!(out, expected);
    let plain = host(
        model
            .forward(&batch(), &TransformerHooks::default())
            .unwrap(),
    );
    assert!(
        max_abs_diff(&out, &plain) > 1e-3,
        "the reconstruction is lossy"
    );

    // The error site sees x - reconstruction.
    let x = common::tensor_at(&inputs, Some(1));
    let err = common::at_layer(&errors, Some(1));
    let expected_err = host(x.clone() - sae.decode(sae.encode(x)));
    assert_eq!(err.data, expected_err);
}

#[test]
fn ablating_a_latent_subtracts_its_decoder_row() {
    let model = load::<B>("tiny");
    let sae = SparseAutoencoder::<B>::init(D, L_D, Activation::Relu, &Default::default());

    // The most active latent at layer 1.
    let mut probe = TransformerHooks::<B>::default();
    let mut ae = sae.autoencoder_hooks(true);
    let seen = record(&mut ae.latents);
    splice_sae(&mut probe, SaeSite::DeltaMlp, 1, ae).unwrap();
    model.forward(&batch(), &probe).unwrap();
    let seen = common::at_layer(&seen, Some(1));
    let totals: Vec<f32> = (0..L_D)
        .map(|j| seen.data.iter().skip(j).step_by(L_D).sum())
        .collect();
    let j = (0..L_D)
        .max_by(|&a, &b| totals[a].total_cmp(&totals[b]))
        .unwrap();
    assert!(totals[j] > 0.0);

    let mut hooks = TransformerHooks::<B>::default();
    let inputs = record(&mut hooks.resid.torso.delta_mlp);
    let mut ae = sae.autoencoder_hooks(true);
    let latents = record(&mut ae.latents);
    ae.latents.fwd.append(Arc::new(Ablate {
        ranges: [ALL, ALL, j..j + 1],
        value: 0.0,
    }) as Hook<Tensor<B, 3>>);
    let after_ablation = record(&mut ae.latents);
    splice_sae(&mut hooks, SaeSite::DeltaMlp, 1, ae).unwrap();
    // Appended after the splice: the site's final value.
    let outputs: Calls<B, 3> = Arc::default();
    let o = outputs.clone();
    hooks
        .resid
        .torso
        .delta_mlp
        .fwd2
        .append(move |x: Tensor<B, 3>, ctx: &Ctx<'_>| {
            o.lock().unwrap().push((ctx.layer(), x.clone()));
            x
        });
    model.forward(&batch(), &hooks).unwrap();

    let l = common::at_layer(&latents, Some(1));
    let ablated = common::at_layer(&after_ablation, Some(1));
    for (i, (&a, &b)) in ablated.data.iter().zip(&l.data).enumerate() {
        assert_eq!(
            a,
            if i % L_D == j { 0.0 } else { b },
            "latent flat index {i}"
        );
    }
    let x = common::at_layer(&inputs, Some(1));
    let out = common::at_layer(&outputs, Some(1));
    let dec = HostTensor::of(sae.decoder.val());
    let mut moved = 0;
    for b in 0..2 {
        for s in 0..6 {
            let lj = l.at(&[b, s, j]);
            if lj > 0.0 {
                moved += 1;
            }
            for d in 0..D {
                let delta = out.at(&[b, s, d]) - x.at(&[b, s, d]);
                let expected = -lj * dec.at(&[j, d]);
                assert!(
                    (delta - expected).abs() <= 1e-5,
                    "[{b},{s},{d}]: {delta} vs {expected}"
                );
            }
        }
    }
    assert!(moved > 0, "latent {j} is active somewhere");
    // At layer 0 the site is not spliced: output = input.
    assert_eq!(
        common::at_layer(&outputs, Some(0)).data,
        common::at_layer(&inputs, Some(0)).data
    );
}

#[test]
fn topk_keeps_the_k_largest_latents() {
    const K: usize = 5;
    let device = Default::default();
    let relu = SparseAutoencoder::<B>::init(D, L_D, Activation::Relu, &device);
    let topk = SparseAutoencoder {
        activation: Activation::TopK(K),
        ..relu.clone()
    };
    let x = Tensor::<B, 3>::random([3, 7, D], Distribution::Normal(0.0, 1.0), &device);
    let dense = HostTensor::of(relu.encode(x.clone()));
    let sparse = HostTensor::of(topk.encode(x));
    assert_eq!(sparse.shape, [3, 7, L_D]);
    for (row, (d, s)) in dense
        .data
        .chunks(L_D)
        .zip(sparse.data.chunks(L_D))
        .enumerate()
    {
        let mut order: Vec<usize> = (0..L_D).collect();
        order.sort_by(|&a, &b| d[b].total_cmp(&d[a]));
        let kept: Vec<usize> = (0..L_D).filter(|&i| s[i] != 0.0).collect();
        assert!(
            kept.len() <= K,
            "position {row}: {} latents kept",
            kept.len()
        );
        let mut expected: Vec<usize> = order[..K].iter().copied().filter(|&i| d[i] > 0.0).collect();
        expected.sort();
        assert_eq!(kept, expected, "position {row}");
        for &i in &kept {
            assert_eq!(s[i], d[i]);
        }
    }
    // k = 1: exactly the arg-max, when anything fires.
    let top1 = SparseAutoencoder {
        activation: Activation::TopK(1),
        ..relu
    };
    let y = Tensor::<B, 2>::random([4, D], Distribution::Normal(0.0, 1.0), &device);
    let s = host(top1.encode(y));
    for row in s.chunks(L_D) {
        assert_eq!(row.iter().filter(|&&v| v != 0.0).count(), 1);
    }
}

#[test]
fn save_and_load_round_trip() {
    let device = Default::default();
    let dir = TempDir::new("sae");
    let x = Tensor::<B, 3>::random([2, 4, D], Distribution::Normal(0.0, 1.0), &device);
    for activation in [Activation::Relu, Activation::TopK(7)] {
        let sae = SparseAutoencoder::<B>::init(D, L_D, activation, &device);
        let file = dir.join("sae.safetensors");
        sae.save(&file).unwrap();
        let loaded = SparseAutoencoder::<B>::load(&file, &device).unwrap();
        assert_eq!(loaded.activation, activation);
        assert_eq!((loaded.d(), loaded.n_latents()), (D, L_D));
        assert_eq!(host(loaded.encode(x.clone())), host(sae.encode(x.clone())));
        assert_eq!(
            host(loaded.decode(loaded.encode(x.clone()))),
            host(sae.decode(sae.encode(x.clone())))
        );

        // The layout on disk: PyTorch `Linear` weights.
        let read = read_safetensors(&file).unwrap();
        let shapes: Vec<(&str, &[usize])> = read
            .iter()
            .map(|(k, s, _)| (k.as_str(), s.as_slice()))
            .collect();
        assert_eq!(
            shapes,
            [
                ("decoder.weight", &[D, L_D][..]),
                ("encoder.weight", &[L_D, D][..]),
                ("latent_bias", &[L_D][..]),
                ("pre_bias", &[D][..]),
            ]
        );
        let meta = Tensors::read(&file).metadata();
        let expected = match activation {
            Activation::Relu => "relu",
            Activation::TopK(_) => "topk:7",
        };
        assert_eq!(meta["activation"], expected);
    }
}

/// The four tensors of a D → L autoencoder, in the file layout.
fn entries(d: usize, l: usize) -> Vec<(String, TensorData)> {
    let t = |shape: Vec<usize>| TensorData::new(vec![0.5f32; shape.iter().product()], shape);
    vec![
        ("pre_bias".to_string(), t(vec![d])),
        ("encoder.weight".to_string(), t(vec![l, d])),
        ("latent_bias".to_string(), t(vec![l])),
        ("decoder.weight".to_string(), t(vec![d, l])),
    ]
}

#[test]
fn loading_a_bad_file_names_the_problem() {
    let device = Default::default();
    let dir = TempDir::new("sae-bad");
    let load = |name: &str, entries: Vec<(String, TensorData)>, meta: Option<(&str, &str)>| {
        let file = dir.join(name);
        let meta = meta.map(|(k, v)| HashMap::from([(k.to_string(), v.to_string())]));
        write_safetensors_with_metadata(&entries, meta, &file).unwrap();
        SparseAutoencoder::<B>::load(&file, &device).map(|_| ())
    };

    // A well-formed file with no metadata loads as ReLU.
    let file = dir.join("good.safetensors");
    write_safetensors(&entries(4, 6), &file).unwrap();
    let sae = SparseAutoencoder::<B>::load(&file, &device).unwrap();
    assert_eq!(
        (sae.activation, sae.d(), sae.n_latents()),
        (Activation::Relu, 4, 6)
    );

    let mut missing = entries(4, 6);
    missing.retain(|(k, _)| k != "latent_bias");
    let err = load("missing.safetensors", missing, None).unwrap_err();
    let msg = err.to_string();
    match err {
        ModelError::MissingKey {
            key, also_tried, ..
        } => assert_eq!((key.as_str(), also_tried.len()), ("latent_bias", 0)),
        other => panic!("expected MissingKey, got {other}"),
    }
    // An SAE file has no `transformer.` prefix to mention.
    assert!(msg.ends_with("missing weight `latent_bias`"), "{msg}");

    let mut wrong = entries(4, 6);
    wrong[3].1 = TensorData::new(vec![0.0f32; 24], [6, 4]);
    match load("wrong.safetensors", wrong, None).unwrap_err() {
        ModelError::WrongShape {
            key,
            expected,
            found,
            ..
        } => {
            assert_eq!(key, "decoder.weight");
            assert_eq!(expected, [4, 6]);
            assert_eq!(found, [6, 4]);
        }
        other => panic!("expected WrongShape, got {other}"),
    }

    let mut wrong_bias = entries(4, 6);
    wrong_bias[0].1 = TensorData::new(vec![0.0f32; 5], [5]);
    let err = load("bias.safetensors", wrong_bias, None).unwrap_err();
    assert!(
        matches!(&err, ModelError::WrongShape { key, expected, found, .. }
            if key == "pre_bias" && expected == &[4] && found == &[5]),
        "{err}"
    );

    let err = load(
        "act.safetensors",
        entries(4, 6),
        Some(("activation", "gelu")),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown activation `gelu` (expected `relu` or `topk:<k>`)"),
        "{err}"
    );
    let err = SparseAutoencoder::<B>::load(dir.join("absent.safetensors"), &device)
        .err()
        .unwrap();
    assert!(matches!(err, ModelError::Io { .. }), "{err}");

    // A truncated file is described in words, not by the parser's variant name.
    let bytes = std::fs::read(&file).unwrap();
    let cut = dir.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = SparseAutoencoder::<B>::load(&cut, &device).err().unwrap();
    let msg = err.to_string();
    assert!(matches!(err, ModelError::BadSafetensors { .. }), "{msg}");
    assert!(
        !msg.contains("Buffer") && !msg.contains("Incomplete"),
        "{msg}"
    );

    // NaN in a weight is refused, naming the weight and where.
    let mut nan = entries(4, 6);
    let mut enc = vec![0.5f32; 24];
    enc[7] = f32::NAN;
    nan[1].1 = TensorData::new(enc, [6, 4]);
    let err = load("nan.safetensors", nan, None).unwrap_err();
    assert!(
        matches!(&err, ModelError::NonFiniteWeight { key, index: 7, .. } if key == "encoder.weight"),
        "{err}"
    );
}

#[test]
fn latent_statistics_across_passes_stay_bounded() {
    // A hook on the latents that accumulates how often each latent fires,
    // over several forward passes of the spliced model.
    let model: Gpt2<B> = load("tiny");
    let sae = SparseAutoencoder::<B>::init(F, L_F, Activation::TopK(4), &Default::default());
    let mut ae = sae.autoencoder_hooks(true);
    let counts = Arc::new(Mutex::new(vec![0usize; L_F]));
    let c = counts.clone();
    ae.latents.fwd.append(move |l: Tensor<B, 3>, _: &Ctx<'_>| {
        let v = host(l.clone());
        let mut counts = c.lock().unwrap();
        for (i, x) in v.iter().enumerate() {
            if *x != 0.0 {
                counts[i % L_F] += 1;
            }
        }
        l
    });
    let mut hooks = TransformerHooks::<B>::default();
    splice_sae(&mut hooks, SaeSite::MlpPostAct, 1, ae).unwrap();
    for _ in 0..3 {
        model.forward(&batch(), &hooks).unwrap();
    }
    // Each pass: 2 rows x 6 positions, at most 4 latents each.
    let total: usize = counts.lock().unwrap().iter().sum();
    assert!(total <= 3 * 12 * 4, "{total}");
    assert!(
        total >= 3 * 12,
        "at least one latent per position fires: {total}"
    );
}

#[test]
fn topk_encodes_and_differentiates_on_autodiff() {
    // Burn's autodiff backend has no `topk`; the encoder must not need it.
    const K: usize = 3;
    let device = Default::default();
    let sae = SparseAutoencoder::<AD>::init(D, L_D, Activation::TopK(K), &device);
    let x = Tensor::<AD, 2>::random([4, D], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let latents = sae.encode(x.clone());
    let values = host(latents.clone());
    for row in values.chunks(L_D) {
        assert_eq!(row.iter().filter(|&&v| v != 0.0).count(), K);
    }
    let grads = latents.sum().backward();
    // d Σ latents / d x = Σ over the kept latents of their encoder columns.
    let gx = HostTensor::of(x.grad(&grads).expect("x reaches the latents"));
    let enc = HostTensor::of(sae.encoder.val());
    for (r, row) in values.chunks(L_D).enumerate() {
        for d in 0..D {
            let expected: f32 = (0..L_D)
                .filter(|&j| row[j] != 0.0)
                .map(|j| enc.at(&[d, j]))
                .sum();
            assert!((gx.at(&[r, d]) - expected).abs() < 1e-5, "[{r},{d}]");
        }
    }
}
