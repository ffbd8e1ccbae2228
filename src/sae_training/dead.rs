//! Dead-latent tracking: tokens since each latent last fired, counted per
//! batch (a latent that fires anywhere in a batch is reset to 0, the others
//! age by the batch's token count), as OpenAI's `stats_last_nonzero`.

/// Tokens since each latent last fired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLatents {
    since_fired: Vec<u64>,
}

impl DeadLatents {
    /// `n_latents` latents, none seen yet (all at 0 tokens).
    pub fn new(n_latents: usize) -> Self {
        DeadLatents {
            since_fired: vec![0; n_latents],
        }
    }

    /// Records a batch of `tokens` tokens in which latent `j` fired iff
    /// `fired[j]`.
    pub fn observe(&mut self, fired: &[bool], tokens: u64) {
        assert_eq!(fired.len(), self.since_fired.len(), "one flag per latent");
        for (s, &f) in self.since_fired.iter_mut().zip(fired) {
            *s = if f { 0 } else { s.saturating_add(tokens) };
        }
    }

    /// Tokens since each latent last fired (since the start for latents
    /// that never did).
    pub fn tokens_since_fired(&self) -> &[u64] {
        &self.since_fired
    }

    /// The latents that have not fired for at least `after` tokens, in
    /// increasing order.
    pub fn dead(&self, after: u64) -> Vec<usize> {
        self.since_fired
            .iter()
            .enumerate()
            .filter(|&(_, &s)| s >= after)
            .map(|(j, _)| j)
            .collect()
    }

    /// How many latents have not fired for at least `after` tokens.
    pub fn count(&self, after: u64) -> usize {
        self.since_fired.iter().filter(|&&s| s >= after).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_resets() {
        let mut d = DeadLatents::new(3);
        assert_eq!(d.count(1), 0);
        d.observe(&[true, false, false], 100);
        d.observe(&[false, true, false], 100);
        assert_eq!(d.tokens_since_fired(), [100, 0, 200]);
        assert_eq!(d.dead(150), [2]);
        assert_eq!(d.dead(100), [0, 2]);
        assert_eq!(d.count(201), 0);
        d.observe(&[false, false, true], 50);
        assert_eq!(d.tokens_since_fired(), [150, 50, 0]);
        assert_eq!(d.dead(150), [0]);
    }
}
