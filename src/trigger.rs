//! The one way into the loop: [`Triggers`], a coalescing channel of [`Trigger`]s
//! (the interval's tick, a config reload, "check these inputs now", shutdown),
//! and the one way out: a [`Status`] published on a `tokio::sync::watch` channel
//! after every cycle, which listeners (`listen.rs`) read.
//!
//! Triggers that arrive while a cycle runs are merged into one [`Pending`] set,
//! so that any number of them leads to one follow-up cycle. The set is bounded
//! by the number of distinct inputs named, not by the number of triggers.
//!
//! A new trigger (an HTTP endpoint, a file watch) holds a clone of [`Triggers`]
//! and calls [`Triggers::send`].

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cycle::CycleReport;
use crate::input::Input;
use crate::metrics::{Metrics, Source};
use crate::project::Project;

/// Something that asks the loop to act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Check everything now, as the interval's timer does.
    Tick,
    /// Load the config again (SIGHUP); an invalid one is refused and the old one kept.
    Reload,
    /// Check these inputs now, and rebuild what they affect; other inputs keep
    /// their last observation until the next tick.
    Check(BTreeSet<Input>),
    /// Stop: no new build starts, running ones get `shutdown_grace`.
    Shutdown,
}

/// The triggers received since the loop last looked, merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pending {
    /// A full check is asked for.
    pub tick: bool,
    /// A reload is asked for.
    pub reload: bool,
    /// Inputs to check now, when no full check is asked for.
    pub inputs: BTreeSet<Input>,
    /// Shutdown is asked for: it wins over everything else.
    pub shutdown: bool,
}

impl Pending {
    /// True when nothing was asked for.
    pub fn is_empty(&self) -> bool {
        *self == Pending::default()
    }

    /// Merges `t` in.
    pub fn add(&mut self, t: Trigger) {
        match t {
            Trigger::Tick => self.tick = true,
            Trigger::Reload => self.reload = true,
            Trigger::Check(inputs) => self.inputs.extend(inputs),
            Trigger::Shutdown => self.shutdown = true,
        }
    }

    /// What the next cycle checks: `None` for everything (a tick or a reload), else the inputs named.
    pub fn scope(self) -> Option<BTreeSet<Input>> {
        if self.tick || self.reload {
            None
        } else {
            Some(self.inputs)
        }
    }
}

/// The sending side of the loop's trigger channel; cheap to clone, one per trigger source.
#[derive(Clone)]
pub struct Triggers {
    /// What was asked for since the loop last looked.
    pending: Arc<Mutex<Pending>>,
    /// Wakes the loop when it waits.
    wake: Arc<Notify>,
    /// Fired by [`Trigger::Shutdown`], so that a running cycle stops starting builds at once.
    cancel: CancellationToken,
    /// Counts each trigger by source (`freshen_triggers_total`).
    metrics: Option<Arc<Metrics>>,
}

impl Triggers {
    /// A channel whose [`Trigger::Shutdown`] fires `cancel`.
    pub fn new(cancel: CancellationToken) -> Triggers {
        Triggers { pending: Arc::default(), wake: Arc::new(Notify::new()), cancel, metrics: None }
    }

    /// The same channel, counting triggers in `metrics`.
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> Triggers {
        Triggers { metrics: Some(metrics), ..self }
    }

    /// Sends `t` from `source`, and counts it.
    pub fn send_from(&self, source: Source, t: Trigger) {
        self.count(source);
        self.send(t);
    }

    fn count(&self, source: Source) {
        if let Some(m) = &self.metrics {
            m.trigger(source);
        }
    }

    /// Sends `t`: merged with whatever is pending, and the loop woken.
    pub fn send(&self, t: Trigger) {
        if t == Trigger::Shutdown {
            self.cancel.cancel();
        }
        self.pending.lock().expect("trigger lock").add(t);
        self.wake.notify_one();
    }

    /// The stop signal that [`Trigger::Shutdown`] fires.
    pub fn cancel(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Takes everything pending, leaving nothing.
    pub fn take(&self) -> Pending {
        std::mem::take(&mut *self.pending.lock().expect("trigger lock"))
    }

    /// Waits until something is pending or `deadline` passes; returns what is
    /// pending then, with `tick` set when the deadline passed.
    pub async fn wait(&self, deadline: tokio::time::Instant) -> Pending {
        loop {
            let mut p = self.take();
            if self.cancel.is_cancelled() {
                p.shutdown = true;
            }
            if !p.is_empty() {
                return p;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    self.count(Source::Interval);
                    let mut p = self.take();
                    p.tick = true;
                    return p;
                }
                _ = self.wake.notified() => {}
                _ = self.cancel.cancelled() => {}
            }
        }
    }
}

/// What the loop is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connected, before the first cycle.
    Starting,
    /// A cycle runs.
    Cycle,
    /// Waiting for the next trigger.
    Idle,
    /// Loading the config again.
    Reloading,
    /// Stopping for good.
    Stopping,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Starting => "starting",
            Phase::Cycle => "cycle",
            Phase::Idle => "idle",
            Phase::Reloading => "reloading",
            Phase::Stopping => "stopping",
        })
    }
}

/// What the loop publishes: its phase, the last cycle's report, and what it runs with.
#[derive(Debug, Clone)]
pub struct Status {
    /// What the loop is doing now.
    pub phase: Phase,
    /// Cycles finished so far; a listener that saw a lower number has a new report to read.
    pub cycles: u64,
    /// The last cycle's report.
    pub last: Option<Arc<CycleReport>>,
    /// When the last cycle finished: `/readyz` wants one within two intervals.
    pub finished_at: Option<tokio::time::Instant>,
    /// The project the loop runs with (replaced on reload): webhooks match pushed images against its inputs.
    pub project: Option<Arc<Project>>,
    /// The interval the loop runs with (`options.interval`).
    pub interval: std::time::Duration,
    /// When the next full check is due without a trigger, seconds since the Unix epoch (`/v1/status`).
    pub next_check_at: Option<u64>,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            phase: Phase::Starting,
            cycles: 0,
            last: None,
            finished_at: None,
            project: None,
            interval: std::time::Duration::from_secs(300),
            next_check_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::ImageRef;

    fn image(r: &str) -> Input {
        Input::Image(ImageRef::parse(r).unwrap())
    }

    #[tokio::test]
    async fn triggers_coalesce_and_shutdown_wins() {
        let t = Triggers::new(CancellationToken::new());
        for r in ["a:1", "b:1", "a:1"] {
            t.send(Trigger::Check([image(r)].into()));
        }
        let far = tokio::time::Instant::now() + std::time::Duration::from_secs(3600);
        let p = t.wait(far).await;
        assert_eq!(p.clone().scope(), Some([image("a:1"), image("b:1")].into()), "three triggers, one follow-up with both inputs");
        assert!(t.take().is_empty(), "nothing left over");
        t.send(Trigger::Reload);
        t.send(Trigger::Check([image("c:1")].into()));
        assert_eq!(t.wait(far).await.scope(), None, "a reload checks everything");
        t.send(Trigger::Shutdown);
        assert!(t.cancel().is_cancelled());
        assert!(t.wait(far).await.shutdown);
    }

    #[tokio::test]
    async fn the_deadline_is_a_tick() {
        let t = Triggers::new(CancellationToken::new());
        let p = t.wait(tokio::time::Instant::now() + std::time::Duration::from_millis(10)).await;
        assert!(p.tick && p.scope().is_none());
    }
}
