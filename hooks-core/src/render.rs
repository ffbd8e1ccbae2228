//! Indented tree renderings, the shape of the reference's `__repr__`:
//! four spaces a level, each collection and stage named by its full path.

/// Accumulates indented lines.
#[derive(Default)]
pub struct Renderer {
    out: String,
    indent: usize,
}

impl Renderer {
    /// An empty rendering.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes one line at the current indentation.
    pub fn line(&mut self, text: &str) {
        for _ in 0..self.indent {
            self.out.push(' ');
        }
        self.out.push_str(text);
        self.out.push('\n');
    }

    /// Runs `f` one level deeper.
    pub fn indented(&mut self, f: impl FnOnce(&mut Self)) {
        self.indent += 4;
        f(self);
        self.indent -= 4;
    }

    /// Moves one level deeper (pair with [`outdent`](Self::outdent)).
    pub fn indent(&mut self) {
        self.indent += 4;
    }

    /// Moves one level up.
    pub fn outdent(&mut self) {
        self.indent = self.indent.saturating_sub(4);
    }

    /// The text so far.
    pub fn as_str(&self) -> &str {
        &self.out
    }

    /// The finished text.
    pub fn finish(self) -> String {
        self.out
    }
}
