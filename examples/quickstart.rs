//! The main job: the induction circuit of Olsson et al. (2022), found,
//! ablated and attributed through hooks in the small model bundled in
//! `checkpoints/induction-2l/` (2 layers of two heads, of which head 1.1 is
//! switched off, trained on runs of random tokens repeated: README,
//! "Reproducing the bundled model").
//!
//! ```text
//! cargo run --example quickstart
//! ```
//! On rows of random tokens holding a random run repeated once (at a random
//! place, with a random period), it
//! 1. records `attn.qk_probs` at every layer and scores each head for
//!    attention to the previous token and, from a token in the repeat, to the
//!    token after its earlier occurrence (induction), and measures the loss on
//!    the repeat with each head ablated (a hook zeroing its slice of
//!    `attn.v_out`): layer 0 has a previous-token head, layer 1 an induction
//!    head;
//! 2. ablates the induction head: the loss on the repeat rises to chance while
//!    the first copy's (chance already) stays;
//! 3. attributes one prediction in the repeat to heads and positions by
//!    activation × gradient;
//! 4. draws both heads' attention patterns to `quickstart-attention.png`.

use std::error::Error;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn_hooks::experiments::{
    ActivationCache, CacheSpec, ablate, act_times_grad, duplicate_token_scores, induction_scores,
};
use burn_hooks::model::backend::{Cpu, CpuAutodiff};
use burn_hooks::model::sample::SplitMix64;
use burn_hooks::model::{Gpt2, TokenBatch, TransformerHooks};
use burn_hooks::path;
use burn_hooks::train::RepeatedBatch;
use indicatif::ProgressBar;
use plotters::prelude::*;

const ROWS: usize = 64;
const MIN_PERIOD: usize = 6;

fn checkpoint() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints/induction-2l")
}

fn main() -> Result<(), Box<dyn Error>> {
    let device = Default::default();
    let model = Gpt2::<Cpu>::load(checkpoint(), &device)?;
    let c = &model.config;
    println!(
        "model: {} layers, width {}, {} heads, vocabulary {}",
        c.n_layer, c.n_embd, c.n_head, c.vocab_size
    );
    let task = RepeatedBatch::random(
        &mut SplitMix64(99),
        ROWS,
        c.n_positions,
        MIN_PERIOD,
        c.vocab_size,
    )?;
    let batch = &task.batch;

    // 1. Induction scores from attention probabilities, and what ablating
    //    each head (zeroing its slice of attn.v_out [B,S,H,d]) does to the loss.
    let probs_path = path!(TransformerHooks<Cpu>: attn.qk_probs);
    let v_out = path!(TransformerHooks<Cpu>: attn.v_out);
    let mut hooks = TransformerHooks::<Cpu>::default();
    let cache = ActivationCache::install(&mut hooks, &CacheSpec::new().site(&probs_path))?;
    let (first, repeat) = task.copy_losses(model.forward(batch, &hooks)?);
    let ablated_losses = |layer: usize, head: usize| -> Result<(f32, f32), Box<dyn Error>> {
        let mut ablated = TransformerHooks::<Cpu>::default();
        let all = 0..usize::MAX;
        ablate(
            &mut ablated,
            &v_out,
            Some(layer),
            [all.clone(), all.clone(), head..head + 1, all],
            0.0,
        );
        Ok(task.copy_losses(model.forward(batch, &ablated)?))
    };
    println!("\nper head: prev = attention from each position to the one before it;");
    println!("  from a token in the repeat: dup = to its earlier occurrence, ind = to the");
    println!("  token after it (induction); loss = loss on the repeat with the head ablated");
    println!("  (model: {repeat:.3})");
    // (layer, head, score) of the best previous-token head in layer 0 and of
    // the best induction head in the layers above.
    let mut prev_head = (0, 0, f32::MIN);
    let mut ind_head = (0, 0, f32::MIN);
    for layer in 0..c.n_layer {
        let probs = cache
            .at(&probs_path, Some(layer))
            .expect("recorded every layer");
        let prev = previous_token_scores(&probs);
        let dup = duplicate_token_scores(&probs, &task);
        let ind = induction_scores(&probs, &task);
        for head in 0..c.n_head {
            let (_, repeat_ablated) = ablated_losses(layer, head)?;
            println!(
                "  layer {layer} head {head}:  prev {:5.3}  dup {:5.3}  ind {:5.3}  loss {repeat_ablated:5.2}",
                prev[head], dup[head], ind[head]
            );
            if layer == 0 && prev[head] > prev_head.2 {
                prev_head = (layer, head, prev[head]);
            }
            if layer > 0 && ind[head] > ind_head.2 {
                ind_head = (layer, head, ind[head]);
            }
        }
    }
    println!(
        "previous-token head: {}.{} (prev {:.2}); induction head: {}.{} (ind {:.2})",
        prev_head.0, prev_head.1, prev_head.2, ind_head.0, ind_head.1, ind_head.2
    );

    // 2. Ablate the induction head: the repeat's loss rises to chance, the
    //    first copy's stays.
    let (layer, head, _) = ind_head;
    let (first_ab, repeat_ab) = ablated_losses(layer, head)?;
    println!("\nmean next-token loss      first copy        repeat");
    println!("  model                   {first:10.3}   {repeat:11.3}");
    println!("  head {layer}.{head} ablated        {first_ab:10.3}   {repeat_ab:11.3}");
    println!(
        "  (chance: ln {} = {:.3})",
        c.vocab_size,
        (c.vocab_size as f32).ln()
    );

    // 3. Act × grad: which heads and positions make one prediction.
    let spinner = ProgressBar::new_spinner().with_message("attributing one prediction");
    spinner.enable_steady_tick(std::time::Duration::from_millis(100));
    let grad_model = Gpt2::<CpuAutodiff>::load(checkpoint(), &device)?;
    let row = TokenBatch::single(batch.rows()[0].clone())?;
    // The prediction of the last token of row 0's repeat.
    let period = task.periods[0];
    let q = task.second_copy(0).end - 2;
    let target = batch.rows()[0][q + 1] as usize;
    let spec = CacheSpec::new().glob("attn.v_out").glob("resid.post_emb");
    let attributions = act_times_grad(
        &grad_model,
        &row,
        TransformerHooks::default(),
        &spec,
        |logits| logit(logits, q, target),
    )?;
    spinner.finish_and_clear();
    println!(
        "\nact × grad of the logit of token {target} at position {q} (row 0, period {period}):"
    );
    for a in &attributions {
        let shape = a.activation.shape.clone();
        if a.key.ends_with("attn.v_out") {
            // [1,S,H,d]: sum over positions and head width, per head
            let (s, h, d) = (shape[1], shape[2], shape[3]);
            let per_head: Vec<f32> = (0..h)
                .map(|hh| {
                    (0..s)
                        .flat_map(|p| (0..d).map(move |dd| (p * h + hh) * d + dd))
                        .map(|i| a.act_x_grad[i])
                        .sum()
                })
                .collect();
            let cells: Vec<String> = per_head.iter().map(|v| format!("{v:+.3}")).collect();
            println!("  {:<22} per head: {}", a.key, cells.join("  "));
        } else {
            // [1,S,D]: per position
            let (s, d) = (shape[1], shape[2]);
            let mut per_pos: Vec<(usize, f32)> = (0..s)
                .map(|p| (p, a.act_x_grad[p * d..(p + 1) * d].iter().sum()))
                .collect();
            per_pos.sort_by(|x, y| y.1.abs().total_cmp(&x.1.abs()));
            let cells: Vec<String> = per_pos
                .iter()
                .take(3)
                .map(|(p, v)| format!("pos {p}: {v:+.3}"))
                .collect();
            println!("  {:<22} top positions: {}", a.key, cells.join(", "));
        }
    }
    println!(
        "  (position {} holds the token after the first occurrence of token {}: the one an induction head copies)",
        q + 1 - period,
        batch.rows()[0][q]
    );

    // 4. Both heads' patterns on the first row.
    let out = "quickstart-attention.png";
    let panels: Vec<(Tensor<Cpu, 4>, usize, String)> = [
        (prev_head, "previous-token head"),
        (ind_head, "induction head"),
    ]
    .into_iter()
    .map(|((layer, head, _), name)| {
        let probs = cache.at(&probs_path, Some(layer)).expect("recorded");
        (probs, head, format!("{name} {layer}.{head}"))
    })
    .collect();
    heatmaps(&panels, out, task.periods[0])?;
    println!("\nwrote {out} (row 0, period {})", task.periods[0]);
    Ok(())
}

/// Mean attention from each position p ≥ 1 to p − 1, per head, of `probs`
/// `[B,S,K,H]`: what a previous-token head does.
fn previous_token_scores<B: Backend>(probs: &Tensor<B, 4>) -> Vec<f32> {
    let [b, s, k, h] = probs.dims();
    let values: Vec<f32> = probs.clone().into_data().to_vec().expect("f32");
    (0..h)
        .map(|head| {
            let sum: f32 = (0..b)
                .flat_map(|row| (1..s).map(move |p| (row, p)))
                .map(|(row, p)| values[((row * s + p) * k + p - 1) * h + head])
                .sum();
            sum / (b * (s - 1)) as f32
        })
        .collect()
}

/// logits[0, q, target] as a one-element tensor (not the log-probability,
/// which saturates once the model is sure).
fn logit<B: Backend>(logits: Tensor<B, 3>, q: usize, target: usize) -> Tensor<B, 1> {
    logits
        .slice([0..1, q..q + 1, target..target + 1])
        .reshape([1])
}

/// Draws `probs[0, :, :, head]` of each panel as a grid, side by side,
/// labelled when a system font exists.
fn heatmaps<B: Backend>(
    panels: &[(Tensor<B, 4>, usize, String)],
    out: &str,
    period: usize,
) -> Result<(), Box<dyn Error>> {
    let labelled = register_font();
    let root = BitMapBackend::new(out, (640 * panels.len() as u32, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = if labelled {
        root.titled(
            &format!("attention on row 0 (query down, key across; period {period})"),
            ("sans-serif", 20),
        )?
    } else {
        root
    };
    for ((probs, head, title), area) in panels.iter().zip(root.split_evenly((1, panels.len()))) {
        let [_, s, k, h] = probs.dims();
        let values: Vec<f32> = probs
            .clone()
            .slice([0..1, 0..s, 0..k, 0..h])
            .into_data()
            .to_vec()
            .map_err(|e| format!("{e:?}"))?;
        let mut builder = ChartBuilder::on(&area);
        builder.margin(20);
        if labelled {
            builder
                .caption(title, ("sans-serif", 18))
                .x_label_area_size(30)
                .y_label_area_size(30);
        }
        let mut chart = builder.build_cartesian_2d(0..k as i32, s as i32..0)?;
        if labelled {
            chart
                .configure_mesh()
                .disable_mesh()
                .x_desc("key")
                .y_desc("query")
                .draw()?;
        }
        chart.draw_series(
            (0..s)
                .flat_map(|q| (0..k).map(move |kk| (q, kk)))
                .map(|(q, kk)| {
                    let p = values[(q * k + kk) * h + head];
                    Rectangle::new(
                        [(kk as i32, q as i32), (kk as i32 + 1, q as i32 + 1)],
                        ViridisRGB::get_color(p).filled(),
                    )
                }),
        )?;
    }
    root.present()?;
    Ok(())
}

/// Uses DejaVu Sans for labels when the system has it; the heatmap is drawn
/// either way.
fn register_font() -> bool {
    let candidates = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
    ];
    for path in candidates {
        if let Ok(bytes) = std::fs::read(path) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}
