//! Build output: classic stream text, BuildKit progress or a test gate's
//! container output, made into whole lines, logged, saved to the build log and
//! kept as the tail an error quotes.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::Path;

use super::lines::Lines;
use super::progress::{Line, Progress};
use super::{Builder, EngineError};
use crate::config::Redactor;

/// Lines of build output kept for the error report.
const TAIL_LINES: usize = 30;

/// One build's output: classic stream text or BuildKit progress, made into
/// whole lines, logged (steps at info, the rest at debug, secrets redacted)
/// and kept as the tail an error quotes.
pub(super) struct Output {
    /// The build's name, in log lines.
    name: String,
    /// Replaces secrets by `***` before a line is logged or saved.
    redactor: Redactor,
    /// The builder, for a failure's advice; `None` for a test gate's output.
    builder: Option<Builder>,
    lines: Lines,
    progress: Progress,
    tail: VecDeque<String>,
    /// The saved build log, when the build has one and it could be opened.
    log: Option<std::io::BufWriter<std::fs::File>>,
}

impl Output {
    /// Output of build (or test gate) `name`, redacted by `redactor`, appended to the saved log at `log` when given.
    pub(super) fn new(name: &str, redactor: &Redactor, log: Option<&Path>, builder: Option<Builder>) -> Self {
        let log = log.and_then(|path| {
            std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .inspect_err(
                    |e| tracing::warn!(event = "build_log_failed", path = %path.display(), error = %e, "could not open the build log"),
                )
                .ok()
        });
        Output {
            name: name.to_string(),
            redactor: redactor.clone(),
            builder,
            lines: Lines::default(),
            progress: Progress::default(),
            tail: VecDeque::with_capacity(TAIL_LINES),
            log: log.map(std::io::BufWriter::new),
        }
    }

    /// Adds classic builder stream text (or a container's output).
    pub(super) fn classic(&mut self, text: &str) {
        for line in self.lines.push(text) {
            let step = line.starts_with("Step ");
            self.keep(if step { Line::Step(line) } else { Line::Output(line) });
        }
    }

    /// Adds one BuildKit status message.
    pub(super) fn buildkit(&mut self, status: &bollard::moby::buildkit::v1::StatusResponse) {
        for line in self.progress.push(status) {
            self.keep(line);
        }
    }

    /// Ends the output: the last partial line is kept, and the saved log flushed.
    pub(super) fn finish(&mut self) {
        let last = self.lines.finish().map(Line::Output).into_iter().chain(self.progress.finish());
        for line in last.collect::<Vec<_>>() {
            self.keep(line);
        }
        if let Some(Err(e)) = self.log.as_mut().map(std::io::Write::flush) {
            tracing::warn!(event = "build_log_failed", build = %self.name, error = %e, "could not write the build log");
        }
    }

    fn keep(&mut self, line: Line) {
        let (step, text) = match line {
            Line::Step(t) => (true, t),
            Line::Output(t) => (false, t),
        };
        if text.trim().is_empty() {
            return;
        }
        let (name, shown) = (&self.name, self.redactor.redact(&text));
        if step {
            tracing::info!(event = "build_step", build = %name, "{shown}");
        } else {
            tracing::debug!(event = "build_output", build = %name, "{shown}");
        }
        if let Some(log) = &mut self.log {
            if let Err(e) = writeln!(log, "{shown}") {
                tracing::warn!(event = "build_log_failed", build = %name, error = %e, "could not write the build log; the build goes on without it");
                self.log = None;
            }
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(text);
    }

    /// The kept lines, oldest first.
    pub(super) fn tail_lines(&self) -> impl DoubleEndedIterator<Item = &String> {
        self.tail.iter()
    }

    /// Ends the output and returns its last lines, joined.
    pub(super) fn tail(&mut self) -> String {
        self.finish();
        self.tail.make_contiguous().join("\n")
    }

    /// The build's failure, with the tail; under the classic builder, a
    /// Dockerfile that needs BuildKit says how to get it.
    pub(super) fn failed(&mut self, mut message: String) -> EngineError {
        if self.builder == Some(Builder::Classic) && message.contains("requires BuildKit") {
            message.push_str("; this build uses the classic builder: set \"builder\": \"buildkit\" (or \"auto\") for it");
        }
        EngineError::Build { message, tail: self.tail() }
    }
}
