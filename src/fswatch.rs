//! The file watch: a trigger that watches, with the `notify` crate (inotify on
//! Linux), every watched build context (recursively), each Dockerfile's folder,
//! and the config's folder. Folders, not files, are watched, since editors
//! replace a file by renaming a new one over it.
//!
//! - An event under a build's context, or on its Dockerfile, sends
//!   [`Trigger::Check`] of that build's [`Input::Context`]: the check compares the
//!   context's content digest, so a `touch` or an edit of an ignored file costs a
//!   stat of the context's files and rebuilds nothing.
//! - An event in the config's folder that changed the config's bytes sends
//!   [`Trigger::Reload`], as SIGHUP does (an invalid config is refused by the loop).
//!
//! Events are gathered for [`DEBOUNCE`] after the first, so an editor's burst of
//! writes and renames is one trigger. Access events (freshen's own reads of the
//! context) are ignored. The watch set follows the project the loop publishes
//! on its status channel, so a reload that adds a build watches its context.
//! The digests are the safety net: a lost event (an inotify queue overflow, a
//! folder past the watch limit) is caught by the next full check.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::input::Input;
use crate::metrics::Source;
use crate::project::Project;
use crate::trigger::{Status, Trigger, Triggers};

/// How long events are gathered after the first before one trigger is sent.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Events queued between the watcher's thread and this task; past it, a rescan of every context is sent instead.
const QUEUE: usize = 4096;

/// What one batch of events asks for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Changes {
    /// The builds whose context or Dockerfile an event touched.
    contexts: BTreeSet<String>,
    /// An event in the config's folder: its bytes are compared with the last ones seen.
    config: bool,
}

/// Which builds and whether the config an event's `paths` touch. A `rescan`
/// (events were lost) touches every watched context. Pure.
fn changes(project: &Project, config: &Path, paths: &[PathBuf], rescan: bool, out: &mut Changes) {
    let config_dir = config.parent();
    for a in project.builds.values().filter(|a| a.build.watch_context) {
        let b = &a.build;
        if rescan || paths.iter().any(|p| p.starts_with(&b.context) || *p == b.dockerfile) {
            out.contexts.insert(b.name.clone());
        }
    }
    out.config |= rescan || paths.iter().any(|p| p.parent() == config_dir);
}

/// The folders to watch for `project` and the config at `config`, each with
/// whether it is watched recursively: each watched context (recursive), each
/// such Dockerfile's folder outside its context, and the config's folder.
fn folders(project: &Project, config: &Path) -> Vec<(PathBuf, RecursiveMode)> {
    let mut out: Vec<(PathBuf, RecursiveMode)> = Vec::new();
    for a in project.builds.values().filter(|a| a.build.watch_context) {
        let b = &a.build;
        out.push((b.context.clone(), RecursiveMode::Recursive));
        if let Some(dir) = b.dockerfile.parent().filter(|_| !b.dockerfile.starts_with(&b.context)) {
            out.push((dir.to_path_buf(), RecursiveMode::NonRecursive));
        }
    }
    if let Some(dir) = config.parent() {
        out.push((dir.to_path_buf(), RecursiveMode::NonRecursive));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0).then((a.1 == RecursiveMode::NonRecursive).cmp(&(b.1 == RecursiveMode::NonRecursive))));
    out.dedup_by(|b, a| b.0 == a.0);
    out
}

/// A notify watcher on `folders`, sending its events to `tx`. A folder that
/// cannot be watched is logged (`watch_failed`) and left to the full checks.
fn start(folders: &[(PathBuf, RecursiveMode)], tx: mpsc::Sender<notify::Result<notify::Event>>) -> Option<notify::RecommendedWatcher> {
    let handler = move |event: notify::Result<notify::Event>| {
        if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(event) {
            // A lost event must not hide a change: the task rescans when the queue drains.
            let _ = tx.try_send(Ok(notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan)));
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(event = "watch_failed", error = %e, "cannot watch files; build contexts and the config are checked each interval only");
            return None;
        }
    };
    for (dir, mode) in folders {
        if let Err(e) = watcher.watch(dir, *mode) {
            tracing::warn!(event = "watch_failed", path = %dir.display(), error = %e, "cannot watch this folder; its changes are found at the next full check");
        }
    }
    Some(watcher)
}

/// SHA-256 of the config's bytes, or `None` when it is not a regular file freshen
/// can read (a FIFO put in its place is never opened: the reload says what is wrong).
async fn config_digest(config: &Path) -> Option<Vec<u8>> {
    let path = config.to_path_buf();
    let read = move || crate::files::read_regular(&path, crate::config::MAX_CONFIG_BYTES, "a config").ok();
    let bytes = tokio::task::spawn_blocking(read).await.ok().flatten()?;
    Some(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes).as_ref().to_vec())
}

/// Runs the file watch for the config at `config` until the loop's status
/// channel closes: follows the project on `status`, and sends what changed on `triggers`.
pub async fn run(config: PathBuf, mut status: watch::Receiver<Status>, triggers: Triggers) {
    let (tx, mut rx) = mpsc::channel(QUEUE);
    let mut project: Option<Arc<Project>> = None;
    let mut watcher = None;
    let mut last_config = config_digest(&config).await;
    loop {
        let current = status.borrow_and_update().project.clone();
        if let Some(p) = current.filter(|p| project.as_ref().is_none_or(|old| !Arc::ptr_eq(old, p))) {
            let set = folders(&p, &config);
            tracing::debug!(event = "watching", folders = set.len(), "watching build contexts and the config's folder");
            drop(watcher.take()); // one inotify instance at a time
            watcher = start(&set, tx.clone());
            project = Some(p);
        }
        let first = tokio::select! {
            changed = status.changed() => match changed {
                Ok(()) => continue,
                Err(_) => return,
            },
            event = rx.recv() => event,
        };
        let Some(first) = first else { return };
        let Some(p) = &project else { continue };
        let mut found = Changes::default();
        let mut take = |event: notify::Result<notify::Event>| match event {
            Ok(e) if matches!(e.kind, EventKind::Access(_)) => {}
            Ok(e) => changes(p, &config, &e.paths, e.need_rescan(), &mut found),
            Err(e) => {
                tracing::debug!(event = "watch_error", error = %e, "file watch error; rescanning");
                changes(p, &config, &[], true, &mut found);
            }
        };
        take(first);
        let until = tokio::time::Instant::now() + DEBOUNCE;
        while let Ok(Some(event)) = tokio::time::timeout_at(until, rx.recv()).await {
            take(event);
        }
        if found.config {
            let digest = config_digest(&config).await;
            if digest != last_config {
                last_config = digest;
                tracing::info!(event = "config_changed", path = %config.display(), "the config changed on disk; reloading");
                triggers.send_from(Source::FileWatch, Trigger::Reload);
            }
        }
        if !found.contexts.is_empty() {
            tracing::debug!(event = "context_event", builds = %found.contexts.iter().cloned().collect::<Vec<_>>().join(", "), "files changed in build contexts; checking them");
            triggers.send_from(Source::FileWatch, Trigger::Check(found.contexts.into_iter().map(Input::Context).collect()));
        }
    }
}
