//! Bounded property tests of the string path and glob parsers against random
//! strings (Unicode, control characters, dots, globs, digits, stage names):
//! every call returns `Ok` or a typed error whose message has no control
//! character, never panics, and globbing stays fast on hostile patterns.
//! Seeds are fixed and iteration counts bounded.

use crate::common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use burn_ndarray::NdArray;
use common::TinyHooks;
use hooks_core::path::{closest, escape_control, explain_unmatched, glob_matches, resolve};
use hooks_core::{HookNode, HookTree, Zero};

/// xorshift64*: the same seed gives the same strings on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Pieces random paths are made of: real names, stages, globs, separators,
/// digits, control and bidirectional characters, other Unicode.
const PIECES: &[&str] = &[
    "attn",
    "q",
    "probs",
    "mlp",
    "pre_act",
    "post_act",
    "resid",
    "torso",
    "post_mlp",
    "post_attn",
    "post_emb",
    "logits",
    "fwd",
    "bwd",
    "fwd2",
    ".",
    ".",
    ".",
    "*",
    "**",
    "***",
    "0",
    "12",
    "layers",
    "\u{1b}[31m",
    "\n",
    "\t",
    "\0",
    "\u{7f}",
    "\u{9b}",
    "\u{202e}",
    "\u{2066}",
    "é",
    "日本",
    "🦀",
    "\u{301}",
    " ",
    "-",
    "_",
    "?",
    "[",
    "]",
    "\\",
    "`",
    "\"",
];

fn random_path(rng: &mut XorShift) -> String {
    let n = rng.below(8);
    (0..n).map(|_| PIECES[rng.below(PIECES.len())]).collect()
}

/// The glob matcher as it was before (recursive, exponential in the number
/// of stars): the reference the new one must agree with.
fn reference_glob(p: &[u8], s: &[u8]) -> bool {
    match p {
        [] => s.is_empty(),
        [b'*', b'*', rest @ ..] => (0..=s.len()).any(|i| reference_glob(rest, &s[i..])),
        [b'*', rest @ ..] => (0..=s.len())
            .take_while(|&i| i == 0 || s[i - 1] != b'.')
            .any(|i| reference_glob(rest, &s[i..])),
        [c, rest @ ..] => s.first() == Some(c) && reference_glob(rest, &s[1..]),
    }
}

fn no_control(what: &str, msg: &str) {
    assert!(
        !msg.chars()
            .any(|c| c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c)),
        "{what:?}: unescaped control character in {msg:?}"
    );
}

#[test]
fn random_paths_resolve_or_fail_with_a_typed_error() {
    let schema = TinyHooks::<NdArray>::schema();
    let tree = TinyHooks::<NdArray>::default();
    let sites: Vec<String> = tree.sites().into_iter().map(|s| s.path).collect();
    for seed in [1u64, 2, 3, 4] {
        let mut rng = XorShift(seed);
        for iteration in 0..500 {
            let path = random_path(&mut rng);
            let run = catch_unwind(AssertUnwindSafe(|| {
                if let Err(e) = resolve(&schema, &path) {
                    no_control(&path, &e.to_string());
                }
                let mut hooks = TinyHooks::<NdArray>::default();
                if let Err(e) = hooks.append_to_path(&path, Zero) {
                    no_control(&path, &e.to_string());
                }
                match tree.sites_matching(&[path.as_str()]) {
                    Ok(found) => assert!(!found.is_empty(), "{path:?} matched nothing"),
                    Err(e) => no_control(&path, &e.to_string()),
                }
                if !sites.iter().any(|s| glob_matches(&path, s)) {
                    no_control(&path, &explain_unmatched(&schema, &path).to_string());
                }
                let _ = closest(&path, &["attn", "mlp", "fwd"]);
                no_control(&path, &escape_control(&path));
            }));
            assert!(
                run.is_ok(),
                "panicked on {path:?} (seed {seed}, iteration {iteration})"
            );
        }
    }
}

#[test]
fn the_glob_matcher_agrees_with_the_recursive_one() {
    let sites = [
        "attn.q",
        "attn.probs",
        "resid.torso.post_mlp",
        "logits",
        "",
        "a.b.c.d",
    ];
    let mut rng = XorShift(7);
    let alphabet = [
        "*", "**", ".", "a", "t", "q", "attn", "resid", "torso", "post_mlp", "s",
    ];
    for _ in 0..3000 {
        let n = rng.below(7);
        let pattern: String = (0..n)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        for site in sites {
            if !pattern.contains('*') {
                continue;
            }
            assert_eq!(
                glob_matches(&pattern, site),
                reference_glob(pattern.as_bytes(), site.as_bytes()),
                "{pattern:?} against {site:?}"
            );
        }
    }
}

#[test]
fn hostile_patterns_match_in_bounded_time() {
    let started = Instant::now();
    let long_path = "a.".repeat(500) + "b";
    for pattern in [
        "*".repeat(64) + "x",
        "*.".repeat(200) + "x",
        "**a".repeat(100) + "x",
        "a*".repeat(300),
    ] {
        assert!(!glob_matches(&pattern, &long_path) || pattern.starts_with("a*"));
    }
    // A long segment gets no suggestion, quickly.
    let word = "x".repeat(100_000);
    assert_eq!(closest(&word, &["attn", "mlp"]), None);
    let schema = TinyHooks::<NdArray>::schema();
    assert!(resolve(&schema, &word).is_err());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}
