//! Where training activations come from: the [`ActivationSource`] trait,
//! an in-memory source, and the shuffling buffer that turns any source
//! (tokens in corpus order) into batches of tokens drawn at random.

use hooks_model::sample::SplitMix64;

use super::error::SaeTrainError;

/// A stream of activations, one vector of [`width`](Self::width) values
/// per token, in whatever order the source has them (corpus order for a
/// model run or a store: the shuffling buffer mixes them).
pub trait ActivationSource {
    /// Values per token.
    fn width(&self) -> usize;

    /// Appends the next tokens' values (row-major, whole tokens) to `out`
    /// and returns how many tokens were appended; 0 means the source is
    /// exhausted.
    fn fill(&mut self, out: &mut Vec<f32>) -> Result<usize, SaeTrainError>;

    /// What the source is, for messages (`layer 0 mlp.post_act of …`).
    fn describe(&self) -> String {
        format!("activations of width {}", self.width())
    }
}

impl<S: ActivationSource + ?Sized> ActivationSource for &mut S {
    fn width(&self) -> usize {
        (**self).width()
    }
    fn fill(&mut self, out: &mut Vec<f32>) -> Result<usize, SaeTrainError> {
        (**self).fill(out)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

impl<S: ActivationSource + ?Sized> ActivationSource for Box<S> {
    fn width(&self) -> usize {
        (**self).width()
    }
    fn fill(&mut self, out: &mut Vec<f32>) -> Result<usize, SaeTrainError> {
        (**self).fill(out)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// Activations already in memory (row-major `[N, width]`), handed out in
/// chunks, from the start again after the end (`cycle`, the default) or
/// once.
#[derive(Clone, Debug)]
pub struct MemorySource {
    data: Vec<f32>,
    width: usize,
    at: usize,
    cycle: bool,
    chunk_tokens: usize,
    passes: usize,
}

impl MemorySource {
    /// `data` holds whole tokens of `width` values.
    pub fn new(data: Vec<f32>, width: usize) -> Result<Self, SaeTrainError> {
        if width == 0 || !data.len().is_multiple_of(width) || data.is_empty() {
            return Err(SaeTrainError::Source(format!(
                "{} values are not a whole, non-zero number of tokens of width {width}",
                data.len()
            )));
        }
        Ok(MemorySource {
            data,
            width,
            at: 0,
            cycle: true,
            chunk_tokens: 4096,
            passes: 0,
        })
    }

    /// Whether to start again after the last token (default true).
    pub fn cycle(mut self, cycle: bool) -> Self {
        self.cycle = cycle;
        self
    }

    /// Tokens in memory.
    pub fn tokens(&self) -> usize {
        self.data.len() / self.width
    }

    /// Completed passes over the data.
    pub fn passes(&self) -> usize {
        self.passes
    }
}

impl ActivationSource for MemorySource {
    fn width(&self) -> usize {
        self.width
    }

    fn fill(&mut self, out: &mut Vec<f32>) -> Result<usize, SaeTrainError> {
        let n = self.tokens();
        if self.at == n {
            if !self.cycle {
                return Ok(0);
            }
            self.at = 0;
        }
        let take = self.chunk_tokens.min(n - self.at);
        out.extend_from_slice(&self.data[self.at * self.width..(self.at + take) * self.width]);
        self.at += take;
        if self.at == n {
            self.passes += 1;
        }
        Ok(take)
    }

    fn describe(&self) -> String {
        format!(
            "{} in-memory activations of width {}",
            self.tokens(),
            self.width
        )
    }
}

/// A buffer of up to `capacity` tokens filled from a source: each batch
/// draws tokens uniformly at random without replacement from what the
/// buffer holds, and the buffer is topped up from the source whenever it
/// falls below half its capacity (or below the batch). Tokens from one
/// forward pass or one shard are thus spread over many batches.
pub struct ShuffleBuffer<S> {
    source: S,
    width: usize,
    data: Vec<f32>,
    capacity: usize,
    rng: SplitMix64,
    exhausted: bool,
    tokens_in: u64,
}

impl<S: ActivationSource> ShuffleBuffer<S> {
    /// A buffer of `capacity` tokens over `source`, shuffled with `seed`.
    pub fn new(source: S, capacity: usize, seed: u64) -> Self {
        let width = source.width();
        ShuffleBuffer {
            source,
            width,
            data: Vec::new(),
            capacity: capacity.max(1),
            rng: SplitMix64(seed ^ 0xB0F_F3E5),
            exhausted: false,
            tokens_in: 0,
        }
    }

    /// Values per token.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Tokens held now.
    pub fn len(&self) -> usize {
        self.data.len() / self.width.max(1)
    }

    /// Whether the buffer holds no token.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Tokens read from the source so far.
    pub fn tokens_read(&self) -> u64 {
        self.tokens_in
    }

    /// Whether the source has run out.
    pub fn exhausted(&self) -> bool {
        self.exhausted
    }

    /// The source.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// Reads from the source until the buffer holds `capacity` tokens or the
    /// source is exhausted.
    pub fn top_up(&mut self) -> Result<(), SaeTrainError> {
        while !self.exhausted && self.len() < self.capacity {
            let before = self.data.len();
            let got = self.source.fill(&mut self.data)?;
            if self.data.len() - before != got * self.width {
                let extra = self.data.len() - before;
                self.data.truncate(before);
                return Err(SaeTrainError::Source(format!(
                    "{} said it gave {got} tokens but gave {extra} values (width {})",
                    self.source.describe(),
                    self.width
                )));
            }
            if got == 0 {
                self.exhausted = true;
            }
            self.tokens_in += got as u64;
        }
        Ok(())
    }

    /// Replaces `out` with up to `n` tokens drawn at random (fewer only
    /// when the source is exhausted) and returns how many.
    pub fn next_batch(&mut self, n: usize, out: &mut Vec<f32>) -> Result<usize, SaeTrainError> {
        if self.len() < n.max(self.capacity / 2) {
            self.top_up()?;
        }
        let d = self.width;
        let take = n.min(self.len());
        out.clear();
        out.reserve(take * d);
        for _ in 0..take {
            let len = self.len();
            let i = (self.rng.next_u64() % len as u64) as usize;
            out.extend_from_slice(&self.data[i * d..(i + 1) * d]);
            if i != len - 1 {
                self.data.copy_within((len - 1) * d..len * d, i * d);
            }
            self.data.truncate((len - 1) * d);
        }
        Ok(take)
    }

    /// Replaces `out` with `n` tokens drawn at random with replacement from
    /// the (topped-up) buffer, leaving them in it: the sample initialisation
    /// reads. Returns how many (0 if the source gave nothing).
    pub fn peek_sample(&mut self, n: usize, out: &mut Vec<f32>) -> Result<usize, SaeTrainError> {
        self.top_up()?;
        let d = self.width;
        let len = self.len();
        out.clear();
        if len == 0 {
            return Ok(0);
        }
        let take = n.min(len);
        for _ in 0..take {
            let i = (self.rng.next_u64() % len as u64) as usize;
            out.extend_from_slice(&self.data[i * d..(i + 1) * d]);
        }
        Ok(take)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Token t has the values [t, t + 0.5].
    fn numbered(n: usize) -> MemorySource {
        let data = (0..n).flat_map(|t| [t as f32, t as f32 + 0.5]).collect();
        MemorySource::new(data, 2).unwrap()
    }

    #[test]
    fn memory_source_cycles_or_ends() {
        let mut once = numbered(5000).cycle(false);
        let mut out = Vec::new();
        assert_eq!(once.fill(&mut out).unwrap(), 4096);
        assert_eq!(once.fill(&mut out).unwrap(), 904);
        assert_eq!(once.fill(&mut out).unwrap(), 0);
        assert_eq!(out.len(), 10_000);
        assert_eq!(once.passes(), 1);
        let mut cyc = numbered(10);
        let mut out = Vec::new();
        assert_eq!(cyc.fill(&mut out).unwrap(), 10);
        assert_eq!(cyc.fill(&mut out).unwrap(), 10);
        assert_eq!(&out[18..22], &[9.0, 9.5, 0.0, 0.5]);
        assert!(MemorySource::new(vec![1.0; 5], 2).is_err());
    }

    #[test]
    fn batches_draw_every_token_once_per_pass() {
        // 1000 tokens once, buffer of 300, batches of 64: every token comes
        // out exactly once, whole, and not in corpus order.
        let mut buf = ShuffleBuffer::new(numbered(1000).cycle(false), 300, 7);
        let mut seen = Vec::new();
        let mut out = Vec::new();
        loop {
            let got = buf.next_batch(64, &mut out).unwrap();
            if got == 0 {
                break;
            }
            assert_eq!(out.len(), got * 2);
            for tok in out.chunks(2) {
                assert_eq!(tok[1], tok[0] + 0.5, "tokens stay whole");
                seen.push(tok[0] as usize);
            }
        }
        assert!(buf.exhausted());
        assert_eq!(buf.tokens_read(), 1000);
        let in_order = seen.windows(2).filter(|w| w[1] == w[0] + 1).count();
        assert!(in_order < 50, "shuffled: {in_order} consecutive pairs");
        seen.sort();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn the_first_batch_mixes_beyond_its_own_size() {
        // With a buffer of 4096 and batches of 64, the first batch's tokens
        // come from all over the first 4096 tokens, not the first 64.
        let mut buf = ShuffleBuffer::new(numbered(100_000), 4096, 1);
        let mut out = Vec::new();
        buf.next_batch(64, &mut out).unwrap();
        let max = out.chunks(2).map(|t| t[0] as usize).max().unwrap();
        assert!(max > 2000, "{max}");
        let mut sample = Vec::new();
        assert_eq!(buf.peek_sample(100, &mut sample).unwrap(), 100);
        assert_eq!(buf.len(), 4096 - 64 + 4096); // topped up by one chunk: never below capacity
    }
}
