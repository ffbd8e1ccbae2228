//! Tells the C allocator to keep freed memory for reuse.
//!
//! A forward pass allocates and frees buffers of megabytes (activations,
//! attention patterns, logits), and more when hooks record every site. With
//! its default settings glibc serves large blocks with `mmap` and hands
//! freed ones back to the kernel, so each pass faults fresh zeroed pages in
//! again: at GPT-2-small shape that was up to a third of the time spent
//! recording every site (BENCHMARKS.md, "Hook overhead"). Keeping freed
//! memory in the heap lets the next pass reuse it.
//!
//! This changes process-wide allocator settings, so the library never calls
//! it on its own: binaries opt in at start-up (the `hooks` tool, the
//! examples and benchmarks do). Other allocators, and libc's other than
//! glibc, are left alone.

/// Largest block glibc will still serve from the heap instead of `mmap`:
/// 32 MiB, the most glibc accepts on 64-bit targets.
pub const MMAP_THRESHOLD: i32 = 32 << 20;
/// Free memory at the top of the heap is never returned: `-1` disables
/// trimming (mallopt(3)). A finite threshold below a pass's footprint
/// (recording every site of GPT-2 small at 8 × 128 holds about 1.2 GB)
/// hands the memory back after every pass and faults it in again on the
/// next. The price: the heap stays at its peak size until the process ends.
pub const TRIM_THRESHOLD: i32 = -1;
/// Blocks glibc may serve with `mmap`: none. Blocks above
/// [`MMAP_THRESHOLD`] (the logits of GPT-2 small at 8 × 128 are 206 MB,
/// the embedding's gradient 154 MB) would otherwise still be mapped fresh,
/// and faulted in page by page, on every pass: a quarter of a
/// forward + backward at 1 × 128 (BENCHMARKS.md, "Fast on every CPU").
/// From the heap they are reused like smaller blocks.
pub const MMAP_MAX: i32 = 0;
/// Extra memory requested each time the heap grows: 64 MiB.
pub const TOP_PAD: i32 = 64 << 20;
/// Allocator arenas: one. glibc otherwise gives each thread that allocates
/// (Flex's rayon workers) an arena of its own, made of 64 MiB heaps that are
/// mapped and unmapped as buffers come and go; at GPT-2-small 8 × 128
/// recording every site cost 1.23–1.37× the bare forward with them, and
/// 1.13–1.15× with one arena (BENCHMARKS.md).
pub const ARENA_MAX: i32 = 1;

/// Asks glibc to keep freed memory for reuse: blocks of every size come
/// from the heap ([`MMAP_THRESHOLD`], [`MMAP_MAX`]), freed memory stays mapped
/// ([`TRIM_THRESHOLD`]), the heap grows by [`TOP_PAD`] at a time, and all
/// threads share [`ARENA_MAX`] arena.
///
/// Returns whether every setting was accepted; `false` on targets without
/// glibc, where nothing is changed. The same settings can be given without
/// code through the environment: `MALLOC_MMAP_THRESHOLD_=33554432
/// MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=17179869184
/// MALLOC_TOP_PAD_=67108864 MALLOC_ARENA_MAX=1`.
pub fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let settings = [
            (libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (libc::M_MMAP_MAX, MMAP_MAX),
            (libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (libc::M_TOP_PAD, TOP_PAD),
            (libc::M_ARENA_MAX, ARENA_MAX),
        ];
        settings.iter().all(|&(param, value)| {
            // SAFETY: mallopt only changes allocator tunables; it is safe to
            // call at any time and reports a rejected value by returning 0.
            unsafe { libc::mallopt(param, value) == 1 }
        })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_accepts_every_setting() {
        assert!(super::retain_freed_memory());
        // Allocating and freeing blocks above the old and the largest mmap
        // threshold works (from the heap now).
        for size in [8usize << 20, 96 << 20] {
            let block = vec![1u8; size];
            assert_eq!(block.iter().map(|&b| b as usize).sum::<usize>(), size);
        }
    }
}
