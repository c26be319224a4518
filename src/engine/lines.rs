//! Build output as whole lines, each at most [`MAX_LINE_BYTES`]. The engine
//! sends output in messages that can split a line anywhere, a secret included,
//! so lines are assembled across messages before anything (redaction, the log,
//! the error's tail) looks at them. A line over the cap is cut as it arrives,
//! so one 100 MB line costs 64 KiB, not 100 MB and minutes of processing.

/// Longest line kept, in bytes (64 KiB); the rest is dropped and counted.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Assembles lines from the engine's messages.
#[derive(Debug, Default)]
pub struct Lines {
    /// The line being assembled, at most [`MAX_LINE_BYTES`].
    partial: String,
    /// Bytes of the current line dropped over the cap.
    dropped: usize,
}

impl Lines {
    /// Adds one message's text; returns the lines it completed, without their `\n`.
    pub fn push(&mut self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find('\n') {
            self.append(&rest[..i]);
            out.push(self.take());
            rest = &rest[i + 1..];
        }
        self.append(rest);
        out
    }

    /// The last line, when the output did not end with `\n`.
    pub fn finish(&mut self) -> Option<String> {
        (!self.partial.is_empty() || self.dropped > 0).then(|| self.take())
    }

    fn append(&mut self, s: &str) {
        let room = MAX_LINE_BYTES.saturating_sub(self.partial.len());
        if s.len() <= room {
            self.partial.push_str(s);
            return;
        }
        let mut cut = room;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        self.partial.push_str(&s[..cut]);
        self.dropped += s.len() - cut;
    }

    fn take(&mut self) -> String {
        let mut line = std::mem::take(&mut self.partial);
        if self.dropped > 0 {
            line.push_str(&format!(" [line cut: {} more bytes]", self.dropped));
            self.dropped = 0;
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_assembled_across_messages_and_capped() {
        let mut l = Lines::default();
        assert_eq!(l.push("Step 1/2 : RUN echo hun"), Vec::<String>::new());
        assert_eq!(l.push("ter2\nnext"), ["Step 1/2 : RUN echo hunter2"], "a secret split over two messages arrives whole");
        assert_eq!(l.finish().as_deref(), Some("next"));
        let huge = "a".repeat(3 * MAX_LINE_BYTES);
        let out = l.push(&format!("{huge}\nafter\n"));
        assert_eq!(out.len(), 2);
        assert!(out[0].len() < MAX_LINE_BYTES + 64 && out[0].ends_with(&format!("[line cut: {} more bytes]", 2 * MAX_LINE_BYTES)));
        assert_eq!(out[1], "after");
        assert_eq!(l.finish(), None);
    }
}
