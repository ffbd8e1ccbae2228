//! Glob patterns over site paths, and the nearest name for a typo.

/// The candidate closest to `word` by edit distance, if it is close enough to
/// be a plausible typo (at most a third of the word's length, and at least 1).
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let len = word.chars().count();
    let limit = (len / 3).max(1);
    candidates
        .iter()
        // Lengths further apart than the limit cannot be within it: skip
        // them without the quadratic table (a long hostile word stays cheap).
        .filter(|c| len.abs_diff(c.chars().count()) <= limit)
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, counting an adjacent swap as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rolling rows: the swap rule looks two rows back.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                cur[j] = cur[j].min(before[j - 2] + 1);
            }
        }
        std::mem::swap(&mut before, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Whether site path `path` is selected by `pattern`.
///
/// `*` matches within one segment, `**` across segments; a pattern without
/// wildcards also selects everything below the collection it names
/// (`attn` selects `attn.q`, `attn.k`, ...). Matching takes time
/// proportional to the pattern's length times the path's, whatever the
/// pattern (no backtracking).
pub fn glob_matches(pattern: &str, path: &str) -> bool {
    if !pattern.contains('*') {
        return path == pattern
            || (path.starts_with(pattern) && path.as_bytes().get(pattern.len()) == Some(&b'.'));
    }
    glob(pattern.as_bytes(), path.as_bytes())
}

enum Token {
    /// `**`: any run of bytes.
    Any,
    /// `*`: any run of bytes without a `.`.
    InSegment,
    Byte(u8),
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    let mut tokens = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        match p[i..] {
            [b'*', b'*', ..] => {
                tokens.push(Token::Any);
                i += 2;
            }
            [b'*', ..] => {
                tokens.push(Token::InSegment);
                i += 1;
            }
            [c, ..] => {
                tokens.push(Token::Byte(c));
                i += 1;
            }
            [] => unreachable!("i < p.len()"),
        }
    }
    // matched[j]: the tokens so far match s[..j].
    let mut matched = vec![false; s.len() + 1];
    matched[0] = true;
    let mut next = vec![false; s.len() + 1];
    for token in &tokens {
        match token {
            Token::Any => {
                next[0] = matched[0];
                for j in 1..=s.len() {
                    next[j] = matched[j] || next[j - 1];
                }
            }
            Token::InSegment => {
                next[0] = matched[0];
                for j in 1..=s.len() {
                    next[j] = matched[j] || (next[j - 1] && s[j - 1] != b'.');
                }
            }
            Token::Byte(c) => {
                next[0] = false;
                for j in 1..=s.len() {
                    next[j] = matched[j - 1] && s[j - 1] == *c;
                }
            }
        }
        std::mem::swap(&mut matched, &mut next);
        if !matched.iter().any(|&m| m) {
            return false;
        }
    }
    matched[s.len()]
}
