//! TopK selection on the host: the k-th largest pre-activation of each
//! token (the threshold the mask compares against) and which latents fired.
//!
//! Burn's `topk` sorts whole rows (and its autodiff backend has none); a
//! linear scan keeping the best `k` values is several times faster on CPU,
//! and the pre-activations have to come to the host anyway for dead-latent
//! tracking. Rows are split over the available cores.

use std::thread;

/// What one scan of a batch's pre-activations `[N, L]` finds.
#[derive(Clone, Debug, PartialEq)]
pub struct TopKScan {
    /// Per token, the k-th largest pre-activation: latents at or above it
    /// (and above 0) are kept.
    pub thresholds: Vec<f32>,
    /// Per latent, whether it was kept for at least one token.
    pub fired: Vec<bool>,
    /// Kept (token, latent) pairs: Σ over tokens of L0.
    pub active: u64,
}

/// The k-th largest value of `row` (`k ≥ 1`, `k ≤ row.len()`).
pub fn kth_largest(row: &[f32], k: usize, scratch: &mut Vec<f32>) -> f32 {
    debug_assert!(k >= 1 && k <= row.len());
    if k <= 64 {
        // The best k so far, in descending order; most values fail the
        // first comparison.
        scratch.clear();
        for &v in row {
            if scratch.len() == k {
                if v.partial_cmp(&scratch[k - 1]) != Some(std::cmp::Ordering::Greater) {
                    continue;
                }
                scratch.pop();
            }
            let at = scratch.partition_point(|&x| x >= v);
            scratch.insert(at, v);
        }
        scratch[k - 1]
    } else {
        scratch.clear();
        scratch.extend_from_slice(row);
        let (_, kth, _) = scratch.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
        *kth
    }
}

/// Per row of `values` (`n` rows of `cols`), the k-th largest value.
pub fn kth_largest_rows(values: &[f32], cols: usize, k: usize) -> Vec<f32> {
    let n = values.len() / cols;
    for_row_chunks(n, |first, rows| {
        let mut scratch = Vec::with_capacity(k.max(1) + 1);
        (first..first + rows)
            .map(|r| kth_largest(&values[r * cols..(r + 1) * cols], k, &mut scratch))
            .collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .collect()
}

/// Thresholds, fired latents and the active count of a TopK batch.
pub fn scan_topk(pre: &[f32], l: usize, k: usize) -> TopKScan {
    let n = pre.len() / l;
    let parts = for_row_chunks(n, |first, rows| {
        let mut scratch = Vec::with_capacity(k + 1);
        let mut fired = vec![false; l];
        let mut active = 0u64;
        let mut thresholds = Vec::with_capacity(rows);
        for r in first..first + rows {
            let row = &pre[r * l..(r + 1) * l];
            let t = kth_largest(row, k, &mut scratch);
            for (f, &v) in fired.iter_mut().zip(row) {
                if v >= t && v > 0.0 {
                    *f = true;
                    active += 1;
                }
            }
            thresholds.push(t);
        }
        (thresholds, fired, active)
    });
    let mut scan = TopKScan {
        thresholds: Vec::with_capacity(n),
        fired: vec![false; l],
        active: 0,
    };
    for (t, f, a) in parts {
        scan.thresholds.extend(t);
        scan.fired.iter_mut().zip(f).for_each(|(x, y)| *x |= y);
        scan.active += a;
    }
    scan
}

/// Runs `work(first_row, rows)` on contiguous chunks of `n` rows, one per
/// core (a single chunk for small batches), and returns the results in row
/// order.
fn for_row_chunks<T: Send>(n: usize, work: impl Fn(usize, usize) -> T + Sync) -> Vec<T> {
    let cores = thread::available_parallelism().map_or(1, |c| c.get());
    let chunks = cores.min(n / 256).max(1);
    if chunks == 1 {
        return vec![work(0, n)];
    }
    let per = n.div_ceil(chunks);
    thread::scope(|s| {
        let handles: Vec<_> = (0..chunks)
            .map(|c| {
                let first = c * per;
                let rows = per.min(n - first.min(n));
                let work = &work;
                s.spawn(move || work(first, rows))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a selection thread panicked"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_kth(row: &[f32], k: usize) -> f32 {
        let mut v = row.to_vec();
        v.sort_by(|a, b| b.total_cmp(a));
        v[k - 1]
    }

    #[test]
    fn kth_matches_sorting() {
        let mut rng = hooks_model::sample::SplitMix64(5);
        let mut scratch = Vec::new();
        for &(len, k) in &[(1, 1), (10, 3), (100, 64), (100, 65), (300, 100), (50, 50)] {
            let row: Vec<f32> = (0..len).map(|_| rng.next_f64() as f32 - 0.5).collect();
            assert_eq!(
                kth_largest(&row, k, &mut scratch),
                naive_kth(&row, k),
                "{len} {k}"
            );
        }
        // Ties: the k-th value is the tied value.
        assert_eq!(
            kth_largest(&[1.0, 3.0, 3.0, 3.0, 2.0], 2, &mut scratch),
            3.0
        );
    }

    #[test]
    fn scan_counts_kept_latents() {
        // 2 tokens, 4 latents, k = 2.
        let pre = [0.5, -1.0, 2.0, 0.1, -3.0, -2.0, 0.7, -0.5];
        let scan = scan_topk(&pre, 4, 2);
        assert_eq!(scan.thresholds, [0.5, -0.5]);
        // Token 0 keeps latents 0 and 2; token 1 keeps only 2 (its second
        // largest, −0.5, is not positive).
        assert_eq!(scan.fired, [true, false, true, false]);
        assert_eq!(scan.active, 3);
        // Many rows: the chunked scan agrees with a row-by-row one.
        let mut rng = hooks_model::sample::SplitMix64(9);
        let (n, l, k) = (1000, 37, 5);
        let pre: Vec<f32> = (0..n * l).map(|_| rng.next_f64() as f32 - 0.7).collect();
        let scan = scan_topk(&pre, l, k);
        let mut fired = vec![false; l];
        let mut active = 0;
        for (r, row) in pre.chunks(l).enumerate() {
            let t = naive_kth(row, k);
            assert_eq!(scan.thresholds[r], t);
            for (j, &v) in row.iter().enumerate() {
                if v >= t && v > 0.0 {
                    fired[j] = true;
                    active += 1;
                }
            }
        }
        assert_eq!((scan.fired, scan.active), (fired, active));
        assert_eq!(kth_largest_rows(&pre, l, k), scan.thresholds);
    }
}
