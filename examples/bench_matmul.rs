//! The matrix products of a GPT-2-small forward pass on the default CPU
//! backend, each timed alone: the Rust side of `bench/matmul_peak.py`,
//! which sets them beside the best BLAS on the machine to say how close the
//! forward comes to the machine's matrix-multiply peak (BENCHMARKS.md).
//!
//! ```text
//! cargo build --release --example bench_matmul
//! target/release/examples/bench_matmul --rows M [--seconds S] [--products K×N,…] [--path model|flex]
//! ```
//!
//! For `M` rows (batch × tokens) it multiplies `[M, K] × [K, N]` for the
//! forward's four linear layers and its unembedding (or the `K×N` products
//! given, e.g. `896x1152,896x9728` for another model's shapes), and prints one JSON
//! line per product: `{"m":…,"k":…,"n":…,"path":…,"best_ms":…,"gflops":…}`, the best
//! of as many repetitions as fit in `S` seconds (default 1; at least 3).
//! `--path model` (the default) multiplies as the models' linear layers do
//! (`ops::matmul_rows`: below 512 rows split over the output columns, one
//! thread each); `--path flex` as Flex alone does (`Tensor::matmul`, `gemm`'s
//! own threading). glibc is told to keep freed memory first, as
//! `bench_forward` does.

use std::error::Error;
use std::time::Instant;

use burn::tensor::{Distribution, Tensor};
use burn_hooks::model::alloc;
use burn_hooks::model::backend::Cpu;
use burn_hooks::model::ops;

/// `(K, N)` of GPT-2 small's products: `c_attn`, attention `c_proj`,
/// `c_fc`, MLP `c_proj`, the unembedding.
const PRODUCTS: [(usize, usize); 5] = [
    (768, 2304),
    (768, 768),
    (768, 3072),
    (3072, 768),
    (768, 50257),
];

fn main() -> Result<(), Box<dyn Error>> {
    let mut rows = 128usize;
    let mut seconds = 1.0f64;
    let mut products = PRODUCTS.to_vec();
    let mut path = String::from("model");
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--rows" => rows = value()?.parse()?,
            "--seconds" => seconds = value()?.parse()?,
            "--products" => products = parse_products(&value()?)?,
            "--path" => path = value()?,
            "-h" | "--help" => {
                println!(
                    "bench_matmul --rows M [--seconds S] [--products KxN,...] [--path model|flex]"
                );
                return Ok(());
            }
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    if rows == 0 || seconds.is_nan() || seconds <= 0.0 {
        return Err("--rows and --seconds must be positive".into());
    }
    if path != "model" && path != "flex" {
        return Err(format!("--path is `model` or `flex`, not `{path}`").into());
    }
    // As the forward benchmarks and the `hooks` tool do: without it every
    // product's output is a fresh mapping, faulted in page by page (a
    // third of a [1024, 768] × [768, 3072] product on a 2-core VM).
    alloc::retain_freed_memory();
    let device = Default::default();
    for (k, n) in products {
        let a = Tensor::<Cpu, 2>::random([rows, k], Distribution::Normal(0.0, 1.0), &device);
        let b = Tensor::<Cpu, 2>::random([k, n], Distribution::Normal(0.0, 0.05), &device);
        let mut best = f64::INFINITY;
        let started = Instant::now();
        let mut reps = 0;
        while reps < 3 || started.elapsed().as_secs_f64() < seconds {
            let t = Instant::now();
            let c = if path == "model" {
                ops::matmul_rows(a.clone().unsqueeze::<3>(), b.clone()).squeeze_dim::<2>(0)
            } else {
                a.clone().matmul(b.clone())
            };
            // Reading one value waits for the product.
            let _ = c.slice([0..1, 0..1]).into_scalar();
            best = best.min(t.elapsed().as_secs_f64());
            reps += 1;
        }
        let flops = 2.0 * (rows * k * n) as f64;
        println!(
            "{{\"m\":{rows},\"k\":{k},\"n\":{n},\"path\":\"{path}\",\"reps\":{reps},\"best_ms\":{:.3},\"gflops\":{:.1}}}",
            best * 1e3,
            flops / best / 1e9
        );
    }
    Ok(())
}

/// `K×N` (or `KxN`) pairs separated by commas.
fn parse_products(list: &str) -> Result<Vec<(usize, usize)>, Box<dyn Error>> {
    list.split(',')
        .map(|pair| {
            let (k, n) = pair
                .split_once(['x', '×'])
                .ok_or_else(|| format!("--products: `{pair}` is not K×N"))?;
            let (k, n): (usize, usize) = (k.trim().parse()?, n.trim().parse()?);
            if k == 0 || n == 0 {
                return Err(format!("--products: `{pair}` has a zero size").into());
            }
            Ok((k, n))
        })
        .collect()
}
