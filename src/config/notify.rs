//! `options.notify`: where freshen announces what it built, pushed or could
//! not check: webhooks (signed as GitHub signs its webhooks) and commands.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use super::{read_secret, violation, Violation};
use crate::credentials::Secret;

/// What a notification announces; its `Display` is the name the config and the payload use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Event {
    /// A build succeeded: built, tested when it has a test, tags moved.
    BuildSucceeded,
    /// A build failed (not its test, not its push).
    BuildFailed,
    /// A build's test gate failed: no tag moved.
    TestFailed,
    /// A build's tags were pushed (after a build, or by a push-only job).
    Pushed,
    /// A build's push failed; the next cycle pushes again.
    PushFailed,
    /// A watched input started failing its check, or recovered (sent once each way).
    CheckFailed,
}

impl Event {
    /// Every event, in the order the README lists them.
    pub const ALL: [Event; 6] =
        [Event::BuildSucceeded, Event::BuildFailed, Event::TestFailed, Event::Pushed, Event::PushFailed, Event::CheckFailed];

    fn parse(name: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.to_string() == name)
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Event::BuildSucceeded => "build_succeeded",
            Event::BuildFailed => "build_failed",
            Event::TestFailed => "test_failed",
            Event::Pushed => "pushed",
            Event::PushFailed => "push_failed",
            Event::CheckFailed => "check_failed",
        })
    }
}

/// Where a notification goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Receiver {
    /// `POST` of the JSON payload to `url`.
    Webhook {
        /// `http://` or `https://`.
        url: String,
        /// The HMAC-SHA256 key of the `X-Freshen-Signature-256` header, read from `secret_file`; no header without one.
        secret: Option<Secret>,
    },
    /// A command run with the JSON payload on its stdin.
    Command {
        /// The program and its arguments.
        argv: Vec<String>,
    },
}

impl std::fmt::Display for Receiver {
    /// The receiver for logs: a webhook's scheme, host and port only (a
    /// webhook's path or query often holds a token), a command's program.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Receiver::Webhook { url, .. } => {
                let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
                let host = rest.split(['/', '?', '#']).next().unwrap_or("");
                let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
                write!(f, "webhook {scheme}://{host}")
            }
            Receiver::Command { argv } => write!(f, "command {}", argv.first().map_or("", String::as_str)),
        }
    }
}

/// One entry of `options.notify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// Where the notifications go.
    pub receiver: Receiver,
    /// The events sent there (`events`; default every event).
    pub events: BTreeSet<Event>,
}

/// Reads `options.notify`, which the schema has checked (each entry a
/// `webhook` or a `command`, event names from the list). A `secret_file` that
/// cannot be read is a violation at `/options/notify/<i>/secret_file`.
pub(super) fn resolve(raw: &Value, base_dir: &Path, v: &mut Vec<Violation>) -> Vec<Notify> {
    let Some(list) = raw.get("notify").and_then(Value::as_array) else { return Vec::new() };
    let mut out = Vec::new();
    for (i, n) in list.iter().enumerate() {
        let receiver = if let Some(url) = n.get("webhook").and_then(Value::as_str) {
            let secret = match n.get("secret_file").and_then(Value::as_str) {
                None => None,
                Some(file) => match read_secret(&base_dir.join(file), "a secret_file") {
                    Ok(text) => Some(Secret::new(text)),
                    Err(e) => {
                        violation(
                            v,
                            format!("/options/notify/{i}/secret_file"),
                            format!("{e}; the file holds the webhook's signing secret"),
                        );
                        continue;
                    }
                },
            };
            Receiver::Webhook { url: url.to_string(), secret }
        } else if let Some(argv) = n.get("command").and_then(Value::as_array) {
            Receiver::Command { argv: argv.iter().filter_map(Value::as_str).map(str::to_string).collect() }
        } else {
            continue;
        };
        let events = match n.get("events").and_then(Value::as_array) {
            Some(names) => names.iter().filter_map(Value::as_str).filter_map(Event::parse).collect(),
            None => Event::ALL.into_iter().collect(),
        };
        out.push(Notify { receiver, events });
    }
    out
}
