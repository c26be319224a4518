//! Listeners on the loop's [`Status`] channel: what happens after a cycle,
//! outside the loop. Each is a task that waits for the status to change.
//!
//! - [`systemd`]: `sd_notify` READY, RELOADING and STOPPING (a no-op outside systemd);
//! - [`summary`]: one `event=cycle_finished` log line per cycle, then hands freed
//!   memory back to the OS.
//!
//! A new consumer of cycle reports (metrics, notifications, an HTTP status page)
//! is one more listener: `status.subscribe()` and a task.

use sd_notify::NotifyState;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cycle::CycleReport;
use crate::trigger::{Phase, Status};

/// Starts the daemon's listeners on `status`. They end when the sender is dropped,
/// after reading the last status; await the handles to be sure they did.
pub fn spawn(status: &watch::Sender<Status>) -> Vec<JoinHandle<()>> {
    vec![tokio::spawn(systemd(status.subscribe())), tokio::spawn(summary(status.subscribe()))]
}

/// Tells systemd (`Type=notify`) the loop's phase: READY once the first cycle
/// starts and after each reload, RELOADING during a reload, STOPPING at the end.
pub async fn systemd(mut rx: watch::Receiver<Status>) {
    let mut last = Phase::Starting;
    while rx.changed().await.is_ok() {
        let phase = rx.borrow_and_update().phase;
        let state = match (last, phase) {
            (Phase::Starting, Phase::Cycle | Phase::Idle) | (Phase::Reloading, Phase::Cycle | Phase::Idle) => Some(NotifyState::Ready),
            (_, Phase::Reloading) => Some(NotifyState::Reloading),
            (_, Phase::Stopping) => Some(NotifyState::Stopping),
            _ => None,
        };
        if let Some(s) = state {
            // A no-op outside systemd, and nothing to do about a failure inside it.
            let _ = sd_notify::notify(&[s]);
        }
        last = phase;
    }
}

/// The report of a cycle that ended since the listener last saw cycle `seen`
/// (which it moves on), and how many cycles ended before that one unread: the
/// watch channel keeps only the newest status.
pub fn new_report(rx: &mut watch::Receiver<Status>, seen: &mut u64) -> (Option<std::sync::Arc<CycleReport>>, u64) {
    let s = rx.borrow_and_update();
    if s.cycles <= *seen {
        return (None, 0);
    }
    let missed = if *seen > 0 { s.cycles - *seen - 1 } else { 0 };
    *seen = s.cycles;
    (s.last.clone(), missed)
}

/// Logs each finished cycle once (`event=cycle_finished`), then releases free memory.
pub async fn summary(mut rx: watch::Receiver<Status>) {
    let mut seen = 0;
    loop {
        if let (Some(r), _) = new_report(&mut rx, &mut seen) {
            log_summary(&r);
            release_free_memory();
        }
        if rx.changed().await.is_err() {
            break;
        }
    }
}

/// Hands memory freed by the cycle back to the OS, so the idle daemon stays
/// small: glibc keeps freed heap pages otherwise (malloc_trim(3)).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory held by the allocator; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// One info line per cycle: checks, changes, and build outcomes with durations.
fn log_summary(r: &CycleReport) {
    let changed: Vec<String> = r
        .checks
        .iter()
        .filter_map(|(input, c)| {
            let (old, new) = (c.old.as_deref()?, &c.seen.as_ref().ok()?.digest);
            (old != new).then(|| format!("{} {} → {}", r.redactor.show(input), short(old), short(new)))
        })
        .collect();
    let failed_checks = r.checks.values().filter(|c| c.seen.as_ref().is_err_and(|e| e.is_failure())).count();
    let (built, failed, skipped) = r.counts();
    tracing::info!(
        event = "cycle_finished",
        checked = r.checks.len(),
        check_failed = failed_checks,
        changed = %changed.join(", "),
        rebuilt = built,
        failed,
        skipped,
        seconds = format!("{:.2}", r.seconds),
        "cycle done"
    );
    if let Some(e) = &r.state_error {
        tracing::error!(event = "state_not_saved", error = %e, "state was not saved this cycle; the last good state file is kept");
    }
}

/// `sha256:0123456789ab` (the first 12 hex digits), for logs.
fn short(d: &str) -> &str {
    d.get(..19).unwrap_or(d)
}
