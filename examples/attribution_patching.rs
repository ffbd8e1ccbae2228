//! Attribution patching (AtP, with AtP*'s QK fix) against real activation
//! patching on the bundled induction model, at every site × layer × head.
//!
//! ```text
//! cargo run --release --example attribution_patching
//! ```
//! The task is `examples/patching.rs`'s: clean rows are a random prefix, a
//! run `x`, then `x` again; corrupted rows have the first copy replaced by
//! random tokens; the metric is the mean log-probability of the correct
//! token on the repeat. Activation patching runs the corrupted batch once
//! per site, layer and head with that slice taken from the clean run
//! (`patching_table_per_head`); AtP estimates every one of those changes
//! (and each position's share) from one clean and one corrupted forward
//! pass and one backward pass. Output with the bundled checkpoint (the
//! numbers change if it is retrained; times on 2 cores):
//!
//! ```text
//! clean -0.450  corrupted -5.284  (48 patched cells: site × layer × head)
//! correlation with activation patching: pearson 0.525, spearman 0.320
//! time: activation patching 1.546 s (50 forward passes), AtP 0.192 s; speed ratio 8.1x
//! AtP's 3072 per-position estimates would take 3072 patched runs: ≈ 95.0 s at the measured 30.9 ms a run, ≈ 496x AtP's time
//!
//! by kind of site:
//!   attention (attn.*)           14 cells  pearson  0.637  spearman  0.064
//!   MLP (mlp.*)                   4 cells  pearson -0.520  spearman  0.000
//!   residual stream and logits   30 cells  pearson  0.514  spearman  0.441
//!   all but the residual stream  18 cells  pearson  0.413  spearman -0.081
//!   q, k, qk_logits with the QK fix      6 cells  pearson -0.647  spearman -0.429
//!   q, k, qk_logits, plain AtP           6 cells  pearson -1.000  spearman -0.371
//!   every cell, plain AtP        48 cells  pearson  0.509  spearman  0.299
//!   metric = correct logit − mean logit (linear in the logits): every cell pearson  0.555  spearman  0.727; all but the residual stream  18 cells  pearson  0.939  spearman  0.722
//!   noising (clean run, corrupted slice, gradient on the clean run): pearson  0.411  spearman  0.641; all but the residual stream  18 cells  pearson  0.602  spearman  0.750
//!
//! largest disagreements:
//! cell                                             real      AtP
//! resid.torso.ln_attn.post_mean_subtraction L1    4.836    0.006
//! resid.torso.post_mlp L0                         4.834    0.006
//! resid.post_emb                                  4.834    0.041
//! resid.torso.post_attn L0                        4.834    0.110
//! resid.torso.post_ln_attn L1                     4.836    1.108
//! resid.torso.ln_attn.post_scale L1               4.836    1.108
//! attn.v_out L1 H0                                4.836    1.349
//! resid.torso.delta_attn L1                       4.836    1.349
//! resid.torso.post_attn L1                        4.834    1.349
//! resid.ln_f.post_scale                           4.834    7.790
//! ```
//!
//! The target of issue 13 (Pearson ≥ 0.8, ≥ 20× faster) is not met on this
//! model and task. What disagrees, from the table:
//!
//! - every whole residual stream (and norm output) restores the full gap
//!   (≈ 4.8) when patched, while its estimate is 0.006–1.35 (7.8 at
//!   `resid.ln_f.post_scale`): the gradient is taken on the corrupted run,
//!   where the first copy holds random tokens and the layer-1 induction
//!   head finds nothing to copy, so it is nearly blind to what restoring
//!   that copy would do: the saturation AtP* describes, reached through
//!   downstream keys, which its QK fix (applied to `attn.q`, `attn.k`,
//!   `attn.qk_logits` themselves) does not cover;
//! - the other direction (noising: the clean run with one corrupted slice,
//!   the gradient on the clean run, as the issue states AtP) does no
//!   better: Pearson 0.41 over every cell, 0.60 outside the residual stream;
//! - the step from the attention probabilities to the log-probability is
//!   not linear (a patched model becomes confidently right or wrong); with a
//!   metric linear in the logits, the cells outside the residual stream
//!   correlate at Pearson 0.94.
//!
//! The speed ratio counts one run per cell of the compared table; AtP's
//! table has a row per position too, whose patching would take hundreds of
//! times AtP's time. Times move with the machine's load (8–15× on 2 shared
//! cores).

use std::error::Error;
use std::time::Instant;

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use burn_hooks::experiments::{
    AtpOptions, AtpTable, HeadPatchRow, attribution_patching, patching_table_per_head,
};
use burn_hooks::model::backend::{Cpu, CpuAutodiff};
use burn_hooks::model::sample::SplitMix64;
use burn_hooks::model::{Gpt2, TokenBatch};
use burn_hooks::train::RepeatedBatch;

/// The correct next token at every position `[B,S,1]` and each position's
/// weight: 1/n at the repeat's n predictable positions, 0 elsewhere.
fn repeat_targets<B: Backend>(
    task: &RepeatedBatch,
    logits: &Tensor<B, 3>,
) -> (Tensor<B, 3, Int>, Tensor<B, 3>) {
    let [b, s, _] = logits.dims();
    let device = logits.device();
    let (mut targets, mut weights) = (vec![0i64; b * s], vec![0f32; b * s]);
    let n: usize = (0..b).map(|r| task.repeat_predictions(r).len()).sum();
    for (r, row) in task.batch.rows().iter().enumerate() {
        for p in task.repeat_predictions(r) {
            targets[r * s + p] = i64::from(row[p + 1]);
            weights[r * s + p] = 1.0 / n as f32;
        }
    }
    (
        Tensor::from_data(TensorData::new(targets, [b, s, 1]), &device),
        Tensor::from_data(TensorData::new(weights, [b, s, 1]), &device),
    )
}

/// Mean log-probability of the correct next token over the repeat's
/// predictable positions, differentiable.
fn repeat_logprob<B: Backend>(task: &RepeatedBatch, logits: Tensor<B, 3>) -> Tensor<B, 1> {
    let (targets, weights) = repeat_targets(task, &logits);
    (log_softmax(logits, 2).gather(2, targets) * weights)
        .sum()
        .reshape([1])
}

/// The same positions, scored by the correct token's logit minus the mean
/// logit: linear in the logits (no log-softmax saturation).
fn repeat_logit<B: Backend>(task: &RepeatedBatch, logits: Tensor<B, 3>) -> Tensor<B, 1> {
    let (targets, weights) = repeat_targets(task, &logits);
    let centred = logits.clone() - logits.mean_dim(2);
    (centred.gather(2, targets) * weights).sum().reshape([1])
}

/// Pearson's correlation.
fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    sxy / (sxx * syy).sqrt()
}

/// Ranks, ties sharing their mean rank.
fn ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        for &k in &order[i..=j] {
            r[k] = (i + j) as f64 / 2.0;
        }
        i = j + 1;
    }
    r
}

fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

/// (real effect, AtP estimate) for every patched cell.
fn pairs(real: &[HeadPatchRow], corrupted: f32, atp: &AtpTable) -> Vec<(String, f64, f64)> {
    real.iter()
        .map(|r| {
            let est = atp
                .estimate(&r.site, r.layer, r.head, None)
                .expect("AtP covers every patched cell");
            let name = format!(
                "{}{}{}",
                r.site,
                r.layer.map_or(String::new(), |l| format!(" L{l}")),
                r.head.map_or(String::new(), |h| format!(" H{h}"))
            );
            (name, f64::from(r.metric - corrupted), f64::from(est))
        })
        .collect()
}

fn correlations(cells: &[(String, f64, f64)]) -> (f64, f64) {
    let real: Vec<f64> = cells.iter().map(|c| c.1).collect();
    let est: Vec<f64> = cells.iter().map(|c| c.2).collect();
    (pearson(&real, &est), spearman(&real, &est))
}

fn main() -> Result<(), Box<dyn Error>> {
    let checkpoint =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints/induction-2l");
    let model = Gpt2::<Cpu>::load(&checkpoint, &Default::default())?;
    let grad_model = Gpt2::<CpuAutodiff>::load(&checkpoint, &Default::default())?;
    let c = model.config.clone();
    let mut rng = SplitMix64(5);
    let task = RepeatedBatch::random(&mut rng, 16, c.n_positions, 6, c.vocab_size)?;
    let rows = task
        .batch
        .rows()
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let mut row = row.clone();
            for t in &mut row[task.first_copy(i)] {
                *t = (rng.next_u64() % c.vocab_size as u64) as u32;
            }
            row
        })
        .collect();
    let corrupted = TokenBatch::new(rows)?;

    // Real activation patching: every site, layer and head.
    let started = Instant::now();
    let (real, clean_m, corrupted_m) =
        patching_table_per_head(&model, &task.batch, &corrupted, &[], |l| {
            repeat_logprob(&task, l).into_scalar().elem::<f32>()
        })?;
    let patching_time = started.elapsed().as_secs_f64();

    // AtP: two forwards and one backward, every site.
    let metric = |l: Tensor<CpuAutodiff, 3>| repeat_logprob(&task, l);
    let _warm = attribution_patching(
        &grad_model,
        &task.batch,
        &corrupted,
        &[],
        metric,
        AtpOptions::default(),
    )?;
    let started = Instant::now();
    let atp = attribution_patching(
        &grad_model,
        &task.batch,
        &corrupted,
        &[],
        metric,
        AtpOptions::default(),
    )?;
    let atp_time = started.elapsed().as_secs_f64();
    let linear = attribution_patching(
        &grad_model,
        &task.batch,
        &corrupted,
        &[],
        metric,
        AtpOptions::linear(),
    )?;

    println!(
        "clean {clean_m:.3}  corrupted {corrupted_m:.3}  ({} patched cells: site × layer × head)",
        real.len()
    );
    let cells = pairs(&real, corrupted_m, &atp);
    let (r, rho) = correlations(&cells);
    println!("correlation with activation patching: pearson {r:.3}, spearman {rho:.3}");
    let per_run = patching_time / (real.len() + 2) as f64;
    println!(
        "time: activation patching {patching_time:.3} s ({} forward passes), AtP {atp_time:.3} s; \
         speed ratio {:.1}x",
        real.len() + 2,
        patching_time / atp_time
    );
    println!(
        "AtP's {} per-position estimates would take {} patched runs: ≈ {:.1} s at the measured \
         {:.1} ms a run, ≈ {:.0}x AtP's time",
        atp.rows.len(),
        atp.rows.len(),
        per_run * atp.rows.len() as f64,
        per_run * 1e3,
        per_run * atp.rows.len() as f64 / atp_time
    );

    // Where the estimate holds and where it does not.
    let lin_cells = pairs(&real, corrupted_m, &linear);
    let group = |cells: &[(String, f64, f64)], prefixes: &[&str], qk_only: bool| {
        let picked: Vec<_> = cells
            .iter()
            .filter(|c| prefixes.iter().any(|p| c.0.starts_with(p)))
            .filter(|c| {
                !qk_only
                    || atp
                        .qk_fixed
                        .iter()
                        .any(|s| c.0.starts_with(&format!("{s} ")))
            })
            .cloned()
            .collect();
        let (r, rho) = correlations(&picked);
        format!(
            "{:>3} cells  pearson {r:6.3}  spearman {rho:6.3}",
            picked.len()
        )
    };
    println!("\nby kind of site:");
    println!(
        "  attention (attn.*)          {}",
        group(&cells, &["attn."], false)
    );
    println!(
        "  MLP (mlp.*)                 {}",
        group(&cells, &["mlp."], false)
    );
    println!(
        "  residual stream and logits  {}",
        group(&cells, &["resid.", "logits"], false)
    );
    println!(
        "  all but the residual stream {}",
        group(&cells, &["attn.", "mlp."], false)
    );
    println!(
        "  q, k, qk_logits with the QK fix    {}",
        group(&cells, &["attn."], true)
    );
    println!(
        "  q, k, qk_logits, plain AtP         {}",
        group(&lin_cells, &["attn."], true)
    );
    let (r_lin, rho_lin) = correlations(&lin_cells);
    println!(
        "  every cell, plain AtP       {:>3} cells  pearson {r_lin:6.3}  spearman {rho_lin:6.3}",
        lin_cells.len()
    );

    // The same comparison with a metric linear in the logits.
    let (real_logit, _, corrupted_logit) =
        patching_table_per_head(&model, &task.batch, &corrupted, &[], |l| {
            repeat_logit(&task, l).into_scalar().elem::<f32>()
        })?;
    let atp_logit = attribution_patching(
        &grad_model,
        &task.batch,
        &corrupted,
        &[],
        |l: Tensor<CpuAutodiff, 3>| repeat_logit(&task, l),
        AtpOptions::default(),
    )?;
    let logit_cells = pairs(&real_logit, corrupted_logit, &atp_logit);
    let (r_l, rho_l) = correlations(&logit_cells);
    println!(
        "  metric = correct logit − mean logit (linear in the logits): every cell pearson {r_l:6.3}  spearman {rho_l:6.3}; all but the residual stream {}",
        group(&logit_cells, &["attn.", "mlp."], false)
    );

    // Noising: the clean run with one corrupted slice patched in, the
    // gradient taken on the clean run (the swapped roles of both calls).
    let (real_noise, _, clean_base) =
        patching_table_per_head(&model, &corrupted, &task.batch, &[], |l| {
            repeat_logprob(&task, l).into_scalar().elem::<f32>()
        })?;
    let atp_noise = attribution_patching(
        &grad_model,
        &corrupted,
        &task.batch,
        &[],
        metric,
        AtpOptions::default(),
    )?;
    let noise_cells = pairs(&real_noise, clean_base, &atp_noise);
    let (r_n, rho_n) = correlations(&noise_cells);
    println!(
        "  noising (clean run, corrupted slice, gradient on the clean run): pearson {r_n:6.3}  spearman {rho_n:6.3}; all but the residual stream {}",
        group(&noise_cells, &["attn.", "mlp."], false)
    );
    if std::env::var("ATP_ALL").is_ok() {
        for (name, real, est) in &noise_cells {
            println!("noise {name:<44} {real:>8.3} {est:>8.3}");
        }
    }

    println!("\nlargest disagreements:");
    let mut by_error = cells.clone();
    by_error.sort_by(|a, b| (b.1 - b.2).abs().total_cmp(&(a.1 - a.2).abs()));
    println!("{:<44} {:>8} {:>8}", "cell", "real", "AtP");
    let shown = if std::env::var("ATP_ALL").is_ok() {
        by_error.len()
    } else {
        10
    };
    for (name, real, est) in by_error.iter().take(shown) {
        println!("{name:<44} {real:>8.3} {est:>8.3}");
    }
    Ok(())
}
