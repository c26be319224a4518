//! BuildKit progress as readable lines. A BuildKit build's output reaches the
//! Engine API client only as `moby.buildkit.trace` messages, each a
//! `StatusResponse` protobuf (BuildKit control API) of step ("vertex") states
//! and log chunks. [`Progress`] turns them into the lines of
//! `docker build --progress=plain`: `#3 [2/3] RUN make`, `#3 CACHED`,
//! `#3 DONE 1.2s`, `#3 ERROR: …`, and each line a step prints as `#3 <line>`.
//! Written here because no Rust crate renders BuildKit progress (docker's own
//! renderer, `progressui`, is Go); the protobuf types are bollard's.

use std::collections::{HashMap, HashSet};

use bollard::moby::buildkit::v1::StatusResponse;

use super::lines::Lines;

/// One line of build output, told apart by whether it starts a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A step began (`#3 [2/3] RUN make`): logged at info, so long builds are never silent.
    Step(String),
    /// Anything else: a step's output, or its end.
    Output(String),
}

/// Renders one BuildKit build's progress messages.
#[derive(Debug, Default)]
pub struct Progress {
    /// Step numbers by vertex digest, in the order steps were first seen.
    numbers: HashMap<String, usize>,
    /// Vertices whose start, and whose end, were already written.
    started: HashSet<String>,
    ended: HashSet<String>,
    /// Each step's log, assembled into whole lines across chunks.
    logs: HashMap<String, Lines>,
}

impl Progress {
    /// The lines `status` adds, in order: step starts and ends, then log lines.
    pub fn push(&mut self, status: &StatusResponse) -> Vec<Line> {
        let mut out = Vec::new();
        for v in &status.vertexes {
            let n = self.number(&v.digest);
            if v.started.is_some() && self.started.insert(v.digest.clone()) {
                out.push(Line::Step(format!("#{n} {}", v.name)));
            }
            let end = if !v.error.is_empty() {
                Some(format!("#{n} ERROR: {}", v.error))
            } else if v.cached {
                Some(format!("#{n} CACHED"))
            } else if let (Some(s), Some(c)) = (&v.started, &v.completed) {
                let secs = (c.seconds - s.seconds) as f64 + f64::from(c.nanos - s.nanos) / 1e9;
                Some(format!("#{n} DONE {:.1}s", secs.max(0.0)))
            } else {
                None
            };
            if let Some(end) = end {
                if self.ended.insert(v.digest.clone()) {
                    out.extend(self.flush(&v.digest, n));
                    out.push(Line::Output(end));
                }
            }
        }
        for log in &status.logs {
            let n = self.number(&log.vertex);
            let lines = self.logs.entry(log.vertex.clone()).or_default().push(&String::from_utf8_lossy(&log.msg));
            out.extend(lines.into_iter().map(|l| Line::Output(format!("#{n} {l}"))));
        }
        out
    }

    /// The last line of every step whose log did not end with a newline.
    pub fn finish(&mut self) -> Vec<Line> {
        let mut pending: Vec<(usize, String)> = self.logs.keys().map(|d| (self.numbers[d], d.clone())).collect();
        pending.sort();
        pending.into_iter().flat_map(|(n, d)| self.flush(&d, n)).collect()
    }

    fn number(&mut self, digest: &str) -> usize {
        let next = self.numbers.len() + 1;
        *self.numbers.entry(digest.to_string()).or_insert(next)
    }

    fn flush(&mut self, digest: &str, n: usize) -> Vec<Line> {
        let last = self.logs.get_mut(digest).and_then(Lines::finish);
        last.map(|l| Line::Output(format!("#{n} {l}"))).into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::moby::buildkit::v1::{Vertex, VertexLog};

    /// A vertex; times are (seconds, nanos). bollard does not re-export the protobuf
    /// `Timestamp` type, so its fields are set in place.
    fn vertex(digest: &str, name: &str, started: (i64, i32), completed: Option<(i64, i32)>, cached: bool) -> Vertex {
        let mut v = Vertex { digest: digest.into(), name: name.into(), cached, ..Default::default() };
        for (slot, at) in [(&mut v.started, Some(started)), (&mut v.completed, completed)] {
            if let Some((seconds, nanos)) = at {
                let t = slot.get_or_insert_with(Default::default);
                (t.seconds, t.nanos) = (seconds, nanos);
            }
        }
        v
    }

    #[test]
    fn steps_logs_and_ends_read_as_plain_progress() {
        let mut p = Progress::default();
        let run = vertex("sha256:b", "[2/2] RUN make", (10, 0), None, false);
        let from = vertex("sha256:a", "[1/2] FROM base", (9, 0), None, true);
        let out = p.push(&StatusResponse { vertexes: vec![from, run.clone()], ..Default::default() });
        assert_eq!(
            out,
            [Line::Step("#1 [1/2] FROM base".into()), Line::Output("#1 CACHED".into()), Line::Step("#2 [2/2] RUN make".into())]
        );
        let log = |msg: &str| VertexLog { vertex: "sha256:b".into(), msg: msg.as_bytes().to_vec(), ..Default::default() };
        let out = p.push(&StatusResponse { logs: vec![log("compiling s3cr"), log("et\nlinking")], ..Default::default() });
        assert_eq!(out, [Line::Output("#2 compiling s3cret".into())], "a line split across chunks arrives whole");
        let done = vertex("sha256:b", "[2/2] RUN make", (10, 0), Some((11, 500_000_000)), false);
        let out = p.push(&StatusResponse { vertexes: vec![done.clone(), done], ..Default::default() });
        assert_eq!(out, [Line::Output("#2 linking".into()), Line::Output("#2 DONE 1.5s".into())], "the end is written once");
        assert!(p.finish().is_empty());
    }
}
