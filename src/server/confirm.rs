//! Confirms that the check a registry's push event asked for saw the digest the
//! event named, and checks again when it did not.
//!
//! A registry can send a tag's push event before the tag names the new manifest:
//! distribution 2.x notifies from the manifest's `Put` and writes the tag after it
//! (`registry/handlers/manifests.go`, `PutManifest`), while the event goes out on
//! its own goroutine. A HEAD sent at once can then still see the old digest. B7
//! caught this: a push that rebuilt nothing. So each event's digest is kept, and
//! when the triggered cycle's check saw another digest (or failed), the image is
//! checked again after [`RETRY_DELAYS`], at most that many times.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use crate::input::Input;
use crate::trigger::Trigger;

/// The waits before each check again: 3.1 s in all, each one HEAD of the image.
pub const RETRY_DELAYS: [Duration; 5] = [
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(400),
    Duration::from_millis(800),
    Duration::from_millis(1600),
];

/// A digest a push event named, and how many checks again it has had.
#[derive(Debug, Clone)]
pub struct Expected {
    /// The manifest digest the event said the tag names (`target.digest`).
    digest: String,
    /// Checks again so far.
    retries: usize,
}

/// What each watched input's last push event said; at most one entry per watched input.
pub type Expectations = std::sync::Mutex<BTreeMap<Input, Expected>>;

/// Records that `input`'s tag now names `digest`, for [`confirm`] to check against.
pub fn expect(shared: &Shared, input: Input, digest: String) {
    shared.expected.lock().expect("expectations lock").insert(input, Expected { digest, retries: 0 });
}

/// After each cycle, compares every expected digest with what the cycle's check saw;
/// sends one trigger again, after the longest of their waits, for those that differ.
/// Ends when the loop's status channel closes.
pub async fn confirm(shared: Arc<Shared>) {
    let mut rx = shared.status.clone();
    let mut seen = rx.borrow_and_update().cycles;
    while rx.changed().await.is_ok() {
        let (cycles, report) = {
            let s = rx.borrow_and_update();
            (s.cycles, s.last.clone())
        };
        let Some(report) = report.filter(|_| cycles > seen) else { continue };
        seen = cycles;
        let mut again = BTreeSet::new();
        let mut wait = Duration::ZERO;
        shared.expected.lock().expect("expectations lock").retain(|input, e| {
            let Some(check) = report.checks.get(input).filter(|c| !c.deferred) else { return true };
            let saw = check.seen.as_ref().ok().map(|o| o.digest.as_str());
            if saw == Some(e.digest.as_str()) {
                return false;
            }
            let Some(delay) = RETRY_DELAYS.get(e.retries) else {
                tracing::warn!(event = "hook_digest_not_seen", input = %input, expected = %e.digest, seen = saw.unwrap_or("nothing"), "the registry never served the digest its push event named");
                return false;
            };
            tracing::debug!(event = "hook_recheck", input = %input, expected = %e.digest, seen = saw.unwrap_or("nothing"), "the tag does not name the pushed digest yet; checking again");
            e.retries += 1;
            wait = wait.max(*delay);
            again.insert(input.clone());
            true
        });
        if !again.is_empty() {
            let triggers = shared.triggers.clone();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                triggers.send(Trigger::Check(again));
            });
        }
    }
}
