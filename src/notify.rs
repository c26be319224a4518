//! Notifications: after each cycle, what it built, tested, pushed or could not
//! check goes to the `notify` receivers (webhooks and commands), from a
//! bounded queue, each delivery retried with backoff. Delivery never blocks or
//! fails a build: it runs on tasks of its own, and a receiver that is down is logged.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::config::{Event, Notify, Receiver};
use crate::cycle::CycleReport;
use crate::error::BuildError;
use crate::executor::Outcome;
use crate::input::Input;
use crate::plan::Decision;
use crate::trigger::Status;

/// Deliveries waiting or in flight at most; past it a notification is dropped and logged.
const QUEUE: usize = 1000;
/// Deliveries in flight at once.
const IN_FLIGHT: usize = 8;
/// Longest one webhook request or one command may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts of one delivery after the first: 1 s, 2 s, 4 s, 8 s apart (and up to as much again, jittered).
const RETRIES: usize = 4;

/// The notifications of one cycle's `report`, as (event, JSON payload). A
/// build's payload has `event`, `build`, `tags`, `digest`, `image_id`,
/// `reason` (the plan's decision: which input changed, old → new), `seconds`,
/// `error` and `log`; a check's has `event`, `input`, `builds` (those watching
/// it), `error` and `recovered`. Text is redacted.
///
/// `failing` holds the inputs whose checks failed before: `check_failed` is
/// sent when an input joins it and again (with `recovered: true`) when it
/// leaves, never for every cycle it keeps failing. Inputs not checked this
/// cycle keep their place.
pub fn notifications(report: &CycleReport, failing: &mut BTreeSet<Input>) -> Vec<(Event, Value)> {
    let r = &report.redactor;
    let mut out = Vec::new();
    for (name, outcome) in &report.outcomes {
        let decision = &report.decisions[name];
        let pushed = report.pushed.contains_key(name);
        let digest = report.digest(name);
        let payload = |event: Event, error: Option<&BuildError>| {
            json!({
                "event": event.to_string(),
                "build": name,
                "tags": report.tags.get(name),
                "digest": digest,
                "image_id": report.images.get(name),
                "reason": r.show(decision),
                "seconds": outcome.seconds(),
                "error": error.map(|e| r.show(e)),
                "log": report.logs.get(name).map(|p| p.display().to_string()),
            })
        };
        let push_only = matches!(decision, Decision::PushPending);
        match outcome {
            Outcome::Built { .. } => {
                if !push_only {
                    out.push((Event::BuildSucceeded, payload(Event::BuildSucceeded, None)));
                }
                if pushed {
                    out.push((Event::Pushed, payload(Event::Pushed, None)));
                }
            }
            Outcome::Failed { error: e @ BuildError::Push { .. }, .. } => {
                if !push_only {
                    out.push((Event::BuildSucceeded, payload(Event::BuildSucceeded, None)));
                }
                out.push((Event::PushFailed, payload(Event::PushFailed, Some(e))));
            }
            Outcome::Failed { error: e @ BuildError::Test { .. }, .. } => {
                out.push((Event::TestFailed, payload(Event::TestFailed, Some(e))))
            }
            Outcome::Failed { error, .. } => out.push((Event::BuildFailed, payload(Event::BuildFailed, Some(error)))),
            Outcome::Skipped { .. } | Outcome::Cancelled => {}
        }
    }
    for (input, check) in report.checks.iter().filter(|(_, c)| !c.deferred) {
        let now_failing = check.seen.as_ref().is_err_and(|e| e.is_failure());
        let changed = if now_failing { failing.insert(input.clone()) } else { failing.remove(input) };
        if !changed {
            continue;
        }
        let builds: Vec<&String> = report.compared.iter().filter(|(_, c)| c.contains_key(input)).map(|(b, _)| b).collect();
        let error = check.seen.as_ref().err().map(|e| r.show(e));
        out.push((
            Event::CheckFailed,
            json!({"event": Event::CheckFailed.to_string(), "input": r.show(input), "builds": builds, "error": error, "recovered": !now_failing}),
        ));
    }
    out
}

/// The listener: for each cycle on `rx`, sends [`notifications`] to the
/// receivers in `receivers` (the config's `notify`, replaced on reload) that
/// take the event. When the status sender is dropped (the loop ended), waits up
/// to `drain` for deliveries in flight, then abandons them with a log line.
pub async fn listen(mut rx: watch::Receiver<Status>, receivers: watch::Receiver<Arc<[Notify]>>, drain: Duration) {
    let client = reqwest::Client::builder().timeout(ATTEMPT_TIMEOUT).user_agent(concat!("freshen/", env!("CARGO_PKG_VERSION"))).build();
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(event = "notify_failed", error = %e, "no HTTP client for notifications; none will be sent");
            reqwest::Client::new()
        }
    };
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut deliveries = JoinSet::new();
    let (mut seen, mut failing) = (0, BTreeSet::new());
    loop {
        let (report, missed) = crate::listen::new_report(&mut rx, &mut seen);
        if missed > 0 {
            tracing::warn!(
                event = "notify_missed",
                cycles = missed,
                "cycles ended faster than notifications were read; their notifications are not sent"
            );
        }
        if let Some(report) = report {
            let targets = receivers.borrow().clone();
            for (event, payload) in notifications(&report, &mut failing) {
                let body: Arc<[u8]> = serde_json::to_vec(&payload).expect("payload serialises").into();
                for n in targets.iter().filter(|n| n.events.contains(&event)) {
                    while deliveries.try_join_next().is_some() {}
                    if deliveries.len() >= QUEUE {
                        tracing::warn!(event = "notify_dropped", receiver = %n.receiver, notification = %event, "too many notifications waiting; this one is dropped");
                        continue;
                    }
                    let (receiver, body, client, slots) = (n.receiver.clone(), body.clone(), client.clone(), slots.clone());
                    deliveries.spawn(async move {
                        let Ok(_slot) = slots.acquire_owned().await else { return };
                        deliver(&client, &receiver, event, &body).await;
                    });
                }
            }
        }
        if rx.changed().await.is_err() {
            break;
        }
    }
    let drained = tokio::time::timeout(drain, async { while deliveries.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(event = "notify_abandoned", count = deliveries.len(), "notifications still being delivered at exit are abandoned");
    }
}

/// Delivers one notification, retrying with backoff; logs `notified` or `notify_failed`.
async fn deliver(client: &reqwest::Client, receiver: &Receiver, event: Event, body: &[u8]) {
    let backoff = ExponentialBuilder::default().with_min_delay(Duration::from_secs(1)).with_max_times(RETRIES).with_jitter();
    let attempt = || async { send(client, receiver, event, body).await };
    let result = attempt
        .retry(backoff)
        .notify(|e, wait| {
            tracing::warn!(event = "notify_retry", receiver = %receiver, notification = %event, error = %e, retry_in = %humantime::format_duration(wait), "notification not delivered; trying again");
        })
        .await;
    match result {
        Ok(()) => tracing::info!(event = "notified", receiver = %receiver, notification = %event, "notification delivered"),
        Err(e) => {
            tracing::warn!(event = "notify_failed", receiver = %receiver, notification = %event, error = %e, "notification not delivered; giving up")
        }
    }
}

/// One attempt: a webhook `POST` answered 2xx, or a command that exits 0.
async fn send(client: &reqwest::Client, receiver: &Receiver, event: Event, body: &[u8]) -> Result<(), String> {
    match receiver {
        Receiver::Webhook { url, secret } => {
            let mut request = client
                .post(url.as_str())
                .header("Content-Type", "application/json")
                .header("X-Freshen-Event", event.to_string())
                .body(body.to_vec());
            if let Some(secret) = secret {
                request = request.header("X-Freshen-Signature-256", signature(secret.expose().as_bytes(), body));
            }
            let response = request.send().await.map_err(|e| crate::error::chain(&e))?;
            let status = response.status();
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("the webhook answered {status}"))
            }
        }
        Receiver::Command { argv } => run_command(argv, event, body).await,
    }
}

/// The webhook signature header's value: `sha256=<hex HMAC-SHA256(secret, body)>`,
/// as GitHub signs its webhooks ("Validating webhook deliveries": `X-Hub-Signature-256`).
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    format!("sha256={}", hex::encode(aws_lc_rs::hmac::sign(&key, body).as_ref()))
}

/// Runs `argv` with `body` on stdin and `FRESHEN_EVENT` set; success is exit 0 within [`ATTEMPT_TIMEOUT`].
async fn run_command(argv: &[String], event: Event, body: &[u8]) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("FRESHEN_EVENT", event.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{program}: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let run = async {
        // A command that does not read its stdin is not an error.
        let _ = stdin.write_all(body).await;
        drop(stdin);
        child.wait().await
    };
    match tokio::time::timeout(ATTEMPT_TIMEOUT, run).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("{program} ended with {status}")),
        Ok(Err(e)) => Err(format!("{program}: {e}")),
        Err(_) => Err(format!("{program} ran past {}", humantime::format_duration(ATTEMPT_TIMEOUT))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_github_s_form() {
        // GitHub's documented example: secret "It's a Secret to Everybody", payload "Hello, World!".
        assert_eq!(
            signature(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }
}
