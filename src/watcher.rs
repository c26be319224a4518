//! The loop: connect, then wait for a trigger → cycle → publish the report, one
//! cycle at a time, until a shutdown (daemon) or after one cycle (`--once`).
//! Triggers come in through [`crate::trigger::Triggers`]; reports go out on a
//! `watch` channel of [`Status`] to the listeners (`listen.rs`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::Config;
use crate::context::ContextDigests;
use crate::cycle::{self, CycleInput, CycleReport};
use crate::engine::{EngineError, Pool};
use crate::metrics::Metrics;
use crate::project::Project;
use crate::registry::{HttpRegistry, Observer, Registry};
use crate::state::{self, Loaded, State};
use crate::trigger::{Phase, Status, Triggers};

/// How to run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mode {
    /// One cycle, then return.
    pub once: bool,
    /// Check and plan; build nothing.
    pub dry_run: bool,
}

/// Loads state, or starts empty (builds are then re-seeded from image labels).
///
/// A corrupt file is moved aside with a warning (with `move_corrupt`; else left in place). An unreadable one is logged and
/// treated as missing, so that the daemon keeps running.
pub fn load_state(path: &std::path::Path, move_corrupt: bool) -> State {
    match state::load(path, move_corrupt) {
        Ok(Loaded::Found(s)) => s,
        Ok(Loaded::Missing) => {
            tracing::info!(event = "state_missing", path = %path.display(), "no state file; re-seeding from image labels");
            State::default()
        }
        Ok(Loaded::Corrupt { moved_to: Some(moved_to), reason }) => {
            tracing::warn!(event = "state_corrupt", path = %path.display(), moved_to = %moved_to.display(), %reason, "state file is corrupt; moved aside, re-seeding from image labels");
            State::default()
        }
        Ok(Loaded::Corrupt { moved_to: None, reason }) => {
            tracing::warn!(event = "state_corrupt", path = %path.display(), %reason, "state file is corrupt; left as it is, reading as if empty");
            State::default()
        }
        Err(e) => {
            tracing::error!(event = "state_unreadable", error = %e, "re-seeding from image labels");
            State::default()
        }
    }
}

/// Why [`start`] could not start.
#[derive(Debug)]
pub enum StartError {
    /// The engine did not answer (or the stop signal came first).
    Engine(EngineError),
    /// The config does not resolve with the engine's platform.
    Config(String),
}

/// The connected engines, their default platform, and the config resolved with that platform.
pub struct Started {
    /// The engines, shared by every cycle.
    pub pool: Arc<Pool>,
    /// The platform of builds without `platform` ([`Pool::default_platform`]).
    pub platform: String,
    /// The config resolved with `platform` (for the automatic platform ARGs).
    pub setup: Setup,
}

/// Connects to the engines (see [`Pool::connect`]), resolves `config` with their
/// default platform, and checks it against them ([`crate::placement::check`]).
///
/// # Errors
/// [`StartError::Engine`] when no engine can be reached, [`StartError::Config`]
/// when the config does not resolve, or a build's platform has no engine, or a
/// parent that builds on other engines need lacks `push`.
pub async fn start(
    config: Config,
    once: bool,
    cancel: &CancellationToken,
    observer: Option<Arc<dyn Observer>>,
) -> Result<Started, StartError> {
    let pool = Arc::new(Pool::connect(&config.options, &config.registries, once, cancel).await.map_err(StartError::Engine)?);
    let platform = pool.default_platform();
    let setup = Setup::from_config(config, Some(&platform), observer).map_err(StartError::Config)?;
    check_pool(&setup, &pool, &platform).map_err(StartError::Config)?;
    Ok(Started { pool, platform, setup })
}

/// Checks `setup`'s builds against the engines of `pool` ([`crate::placement::check`]).
///
/// # Errors
/// The problems, one per line, after the config's path.
pub fn check_pool(setup: &Setup, pool: &Pool, platform: &str) -> Result<(), String> {
    crate::placement::check(&setup.project, &pool.platforms(), platform).map_err(|e| format!("{}: {e}", setup.config.path.display()))
}

/// A config with its resolved project and registry client: what a reload replaces.
pub struct Setup {
    /// The options the loop and each cycle run with.
    pub config: Config,
    /// What to check and build, resolved from the config.
    pub project: Project,
    /// Checks digests with the config's `registries` credentials and CAs; a trait object, so tests can pass a fake.
    pub registry: Arc<dyn Registry>,
}

impl Setup {
    /// Loads the config at `path` and resolves it with the engine's `platform`
    /// (see [`Setup::from_config`]).
    ///
    /// # Errors
    /// The config error, a dependency cycle, or a bad `ca_file`, as one message.
    pub fn load(path: &std::path::Path, platform: Option<&str>, observer: Option<Arc<dyn Observer>>) -> Result<Setup, String> {
        Setup::from_config(crate::config::load(path).map_err(|e| e.to_string())?, platform, observer)
    }

    /// Resolves `config` against its Dockerfiles with the engine's `platform`; the
    /// registry client tells `observer` (metrics) of every request it sends.
    ///
    /// # Errors
    /// A dependency cycle, or a bad `ca_file`, as one message.
    pub fn from_config(config: Config, platform: Option<&str>, observer: Option<Arc<dyn Observer>>) -> Result<Setup, String> {
        let texts = crate::project::read_dockerfiles(&config);
        let project = crate::project::analyse(&config, &texts, platform).map_err(|e| format!("{}: {e}", config.path.display()))?;
        let registry = HttpRegistry::new(config.options.registry_timeout, config.registries.clone())
            .map_err(|e| format!("{}: {e}", config.path.display()))?;
        let registry = match observer {
            Some(o) => registry.with_observer(o),
            None => registry,
        };
        Ok(Setup { config, project, registry: Arc::new(registry) })
    }
}

/// Loads a new [`Setup`] on [`crate::trigger::Trigger::Reload`]; an error refuses the reload.
pub type Reloader = Box<dyn Fn() -> Result<Setup, String> + Send + Sync>;

/// What the loop runs with, besides its setup.
pub struct Loop {
    /// The engines.
    pub pool: Arc<Pool>,
    /// The platform of builds without `platform` (`os/arch`).
    pub engine_platform: String,
    /// Once or daemon, dry run or not.
    pub mode: Mode,
    /// The loop's trigger channel; its stop signal also stops a running cycle.
    pub triggers: Triggers,
    /// Loads the config again on [`crate::trigger::Trigger::Reload`]; without one, reloads are ignored.
    pub reloader: Option<Reloader>,
    /// Where each cycle's report and the loop's phase are published.
    pub status: watch::Sender<Status>,
    /// Records each cycle's report, right after the cycle, so that none is missed.
    pub metrics: Option<Arc<Metrics>>,
}

/// Runs cycles with `setup`, one at a time, until a shutdown or, with
/// `mode.once`, after one cycle; returns the last cycle's report.
///
/// The loop owns state: it loads the file once and hands it to each cycle.
/// Between cycles it waits for the interval (or the end of a settle window) or
/// a trigger. Triggers that arrived during a cycle make one follow-up cycle:
/// a full one after a tick or a reload, else one that checks only the inputs named.
/// A reload with an invalid config is refused with an error log, and the old one keeps running.
pub async fn run(setup: Setup, l: Loop) -> Option<Arc<CycleReport>> {
    let mut current = Current::new(setup);
    let mut state = load_state(&current.config.options.state_file, true);
    let contexts = Arc::new(ContextDigests::default());
    let cancel = l.triggers.cancel().clone();
    let (mut first, mut scope) = (true, None);
    let mut next_tick = tokio::time::Instant::now();
    current.publish(&l.status);
    loop {
        current.refresh(&l.engine_platform, &l.status);
        let opts = &current.config.options;
        let full = scope.is_none();
        let input = CycleInput {
            project: current.project.clone(),
            pool: l.pool.clone(),
            registry: current.registry.clone(),
            state_path: opts.state_file.clone(),
            parallelism: opts.parallelism,
            check_concurrency: opts.check_concurrency,
            shutdown_grace: opts.shutdown_grace,
            build_timeout: opts.build_timeout,
            build_idle_timeout: opts.build_idle_timeout,
            keep_logs: opts.keep_logs,
            keep_previous: opts.keep_previous,
            push_timeout: opts.push_timeout,
            rebuild_all: first && opts.rebuild_on_start,
            dry_run: l.mode.dry_run,
            persist: true,
            settle: opts.settle,
            rate_limit_reserve: opts.rate_limit_reserve,
            engine_platform: l.engine_platform.clone(),
            only: scope.take(),
            cancel: cancel.clone(),
            contexts: contexts.clone(),
        };
        l.status.send_modify(|s| s.phase = Phase::Cycle);
        let report = Arc::new(cycle::run(&input, &mut state).instrument(tracing::info_span!("cycle")).await);
        if let Some(m) = &l.metrics {
            m.record(&report);
        }
        l.status.send_modify(|s| {
            s.phase = Phase::Idle;
            s.cycles += 1;
            s.last = Some(report.clone());
            s.finished_at = Some(tokio::time::Instant::now());
        });
        if let Some(project) = &report.resolved {
            current.project = project.clone();
            current.publish(&l.status);
        }
        // The runtime has one thread: yielding lets the listeners read this report before the next cycle starts.
        tokio::task::yield_now().await;
        first = false;
        if l.mode.once || cancel.is_cancelled() {
            l.status.send_modify(|s| s.phase = Phase::Stopping);
            return Some(report);
        }
        // A full check is due an interval after the last one; a change still
        // settling is rechecked when its window ends, not a whole interval later.
        let interval = current.config.options.interval;
        if full {
            next_tick = crate::deadline::after(interval).into();
        }
        let settle_end = report
            .recheck_at
            .map(|at| tokio::time::Instant::from(crate::deadline::after(Duration::from_secs(at.saturating_sub(state::now_secs())))));
        let deadline = settle_end.map_or(next_tick, |s| s.min(next_tick));
        let due = state::now_secs() + deadline.saturating_duration_since(tokio::time::Instant::now()).as_secs();
        l.status.send_modify(|s| s.next_check_at = Some(due));
        let pending = l.triggers.wait(deadline).await;
        if pending.shutdown {
            l.status.send_modify(|s| s.phase = Phase::Stopping);
            return Some(report);
        }
        if pending.reload {
            if let Some(loader) = &l.reloader {
                l.status.send_modify(|s| s.phase = Phase::Reloading);
                match loader() {
                    Ok(new) => {
                        if new.config.options.engines != current.config.options.engines {
                            tracing::warn!(event = "engines_unchanged", "options.engines changes take effect at the next start");
                        }
                        let state_file = new.config.options.state_file.clone();
                        if state_file != current.config.options.state_file {
                            state = load_state(&state_file, true);
                        }
                        tracing::info!(event = "config_reloaded", builds = new.config.builds.len(), "config reloaded");
                        current = Current::new(new);
                        current.publish(&l.status);
                    }
                    Err(e) => tracing::error!(event = "config_refused", error = %e, "new config refused; the old one keeps running"),
                }
            }
        }
        // A settle window that ended is a full check too.
        let settled = settle_end.is_some_and(|s| s <= tokio::time::Instant::now());
        scope = if settled { None } else { pending.scope() };
    }
}

/// The running setup, shared with cycles.
struct Current {
    config: Config,
    project: Arc<Project>,
    registry: Arc<dyn Registry>,
    /// The Dockerfile texts last refused (they made a dependency cycle): not resolved, nor logged, again.
    refused: Option<crate::project::Texts>,
}

impl Current {
    fn new(s: Setup) -> Self {
        Current { config: s.config, project: Arc::new(s.project), registry: s.registry, refused: None }
    }

    /// Reads the Dockerfiles again and, when one changed, resolves the project
    /// again and publishes it: an edit that changes a base watches the new one
    /// from this cycle on. A change that makes the builds a cycle is refused
    /// with an error log (`dockerfiles_refused`), and the last project runs.
    fn refresh(&mut self, platform: &str, status: &watch::Sender<Status>) {
        let texts = crate::project::read_dockerfiles(&self.config);
        if texts == self.project.texts || self.refused.as_ref() == Some(&texts) {
            return;
        }
        match crate::project::analyse(&self.config, &texts, Some(platform)) {
            Ok(project) => {
                tracing::info!(event = "dockerfiles_changed", "a Dockerfile changed; builds resolved again");
                self.project = Arc::new(project);
                self.publish(status);
            }
            Err(e) => {
                tracing::error!(event = "dockerfiles_refused", error = %e, "a Dockerfile change was refused; the last resolution runs");
                self.refused = Some(texts);
            }
        }
    }

    /// Publishes the project and interval the loop now runs with.
    fn publish(&self, status: &watch::Sender<Status>) {
        status.send_modify(|s| {
            s.project = Some(self.project.clone());
            s.interval = self.config.options.interval;
        });
    }
}
