//! A build's `test`: the test gate, a command run in a container from the
//! newly built image before any tag moves or any push (seed 001: "build, run
//! the unit tests on the built image, tag it, push it").

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::options::duration_at;
use super::{string_map, Violation};

/// A build's test gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestGate {
    /// The command and its arguments, as `docker run <image> <command>` takes
    /// them: the image's `ENTRYPOINT`, if it has one, stays.
    pub command: Vec<String>,
    /// Longest the test may run (default 10 min); over it the container is killed and the test fails.
    pub timeout: Duration,
    /// Environment variables set in the test's container, beside the image's own.
    pub env: BTreeMap<String, String>,
    /// The network the container joins (default `none`, so a test cannot reach
    /// anything): `none`, `bridge`, `host` or the name of a network.
    pub network: String,
}

/// Default for [`TestGate::timeout`].
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The `test` object of the build at JSON pointer `at`, which the schema has
/// checked (a non-empty `command`); `None` when there is none. A bad
/// `timeout` is a violation at `<at>/test/timeout`.
pub(super) fn resolve(raw: &Value, at: &str, v: &mut Vec<Violation>) -> Option<TestGate> {
    let test = raw.get("test")?;
    let command: Vec<String> = test["command"].as_array()?.iter().filter_map(Value::as_str).map(str::to_string).collect();
    Some(TestGate {
        command,
        timeout: duration_at(test, &format!("{at}/test"), "timeout", DEFAULT_TIMEOUT, v),
        env: string_map(&test["env"]).into_iter().collect(),
        network: test.get("network").and_then(Value::as_str).unwrap_or("none").to_string(),
    })
}
