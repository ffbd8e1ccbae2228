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
//! (filled in from a run)
//! ```

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

/// Mean log-probability of the correct next token over the repeat's
/// predictable positions, differentiable.
fn repeat_logprob<B: Backend>(task: &RepeatedBatch, logits: Tensor<B, 3>) -> Tensor<B, 1> {
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
    let targets = Tensor::<B, 3, Int>::from_data(TensorData::new(targets, [b, s, 1]), &device);
    let weights = Tensor::<B, 3>::from_data(TensorData::new(weights, [b, s, 1]), &device);
    (log_softmax(logits, 2).gather(2, targets) * weights)
        .sum()
        .reshape([1])
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
    let (r_lin, rho_lin) = correlations(&pairs(&real, corrupted_m, &linear));
    println!("without the QK fix (plain AtP): pearson {r_lin:.3}, spearman {rho_lin:.3}");
    println!(
        "time: activation patching {:.3} s ({} forward passes), AtP {:.3} s ({} estimates); \
         speed ratio {:.1}x",
        patching_time,
        real.len() + 2,
        atp_time,
        atp.rows.len(),
        patching_time / atp_time
    );

    println!("\nlargest disagreements (real − estimate):");
    let mut by_error = cells.clone();
    by_error.sort_by(|a, b| (b.1 - b.2).abs().total_cmp(&(a.1 - a.2).abs()));
    println!("{:<40} {:>9} {:>9}", "cell", "real", "AtP");
    for (name, real, est) in by_error.iter().take(if std::env::var("ATP_ALL").is_ok() {
        1000
    } else {
        8
    }) {
        println!("{name:<40} {real:>9.3} {est:>9.3}");
    }
    Ok(())
}
