//! The loop: connect, then tick → check → plan → execute, one cycle at a time,
//! until the cancellation token fires (daemon) or after one cycle (`--once`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::Config;
use crate::credentials::Registries;
use crate::cycle::{self, CycleInput, CycleReport};
use crate::engine::{DockerEngine, Engine, EngineError};
use crate::project::Project;
use crate::registry::{HttpRegistry, Registry};
use crate::state::{self, Loaded, State};

/// How to run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mode {
    /// One cycle, then return.
    pub once: bool,
    /// Check and plan; build nothing.
    pub dry_run: bool,
}

/// Longest wait between engine connection attempts in daemon mode.
const MAX_ENGINE_BACKOFF: Duration = Duration::from_secs(60);

/// Loads state, or starts empty (builds are then re-seeded from image labels).
///
/// A corrupt file is moved aside with a warning. An unreadable one is logged and
/// treated as missing, so that the daemon keeps running.
pub fn load_state(path: &std::path::Path) -> State {
    match state::load(path) {
        Ok(Loaded::Found(s)) => s,
        Ok(Loaded::Missing) => {
            tracing::info!(event = "state_missing", path = %path.display(), "no state file; re-seeding from image labels");
            State::default()
        }
        Ok(Loaded::Corrupt { moved_to, reason }) => {
            tracing::warn!(event = "state_corrupt", path = %path.display(), moved_to = %moved_to.display(), %reason, "state file is corrupt; moved aside, re-seeding from image labels");
            State::default()
        }
        Err(e) => {
            tracing::error!(event = "state_unreadable", error = %e, "re-seeding from image labels");
            State::default()
        }
    }
}

/// Connects to the engine. With `once`, the first failure is returned; otherwise
/// it retries with exponential backoff (1 s doubling to 60 s) until `cancel` fires.
///
/// # Errors
/// [`EngineError::Unreachable`] in `once` mode, or when cancelled before connecting.
pub async fn connect_engine(registries: &Registries, once: bool, cancel: &CancellationToken) -> Result<DockerEngine, EngineError> {
    let mut delay = Duration::from_secs(1);
    loop {
        match DockerEngine::connect(registries.clone()).await {
            Ok(e) => return Ok(e),
            Err(e) if once => return Err(e),
            Err(e) => {
                tracing::error!(event = "engine_unreachable", error = %e, retry_in = %humantime::format_duration(delay), "Docker engine not answering; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = cancel.cancelled() => return Err(e),
                }
                delay = (delay * 2).min(MAX_ENGINE_BACKOFF);
            }
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

/// A connected engine, its platform, and the config resolved with that platform.
pub struct Started {
    /// The engine.
    pub engine: Arc<dyn Engine>,
    /// The engine's `os/arch`, or this host's when the engine does not say.
    pub platform: String,
    /// The config resolved with `platform` (for the automatic platform ARGs).
    pub setup: Setup,
}

/// Connects to the engine (see [`connect_engine`]), asks its platform once,
/// and resolves `config` with it.
///
/// # Errors
/// [`StartError::Engine`] when the engine cannot be reached, [`StartError::Config`]
/// when the config does not resolve.
pub async fn start(config: Config, once: bool, cancel: &CancellationToken) -> Result<Started, StartError> {
    let engine: Arc<dyn Engine> = Arc::new(connect_engine(&config.registries, once, cancel).await.map_err(StartError::Engine)?);
    let platform = engine.platform().await.unwrap_or_else(|_| crate::dockerfile::host_platform());
    let setup = Setup::from_config(config, Some(&platform)).map_err(StartError::Config)?;
    Ok(Started { engine, platform, setup })
}

/// A config with its resolved project and registry client: what a reload replaces.
pub struct Setup {
    /// The config.
    pub config: Config,
    /// The project resolved from it.
    pub project: Project,
    /// The registry client built from its `registries` section.
    pub registry: HttpRegistry,
}

impl Setup {
    /// Loads the config at `path` and resolves it with the engine's `platform`.
    ///
    /// # Errors
    /// The config error, a dependency cycle, or a bad `ca_file`, as one message.
    pub fn load(path: &std::path::Path, platform: Option<&str>) -> Result<Setup, String> {
        Setup::from_config(crate::config::load(path).map_err(|e| e.to_string())?, platform)
    }

    /// Resolves `config` against its Dockerfiles with the engine's `platform`.
    ///
    /// # Errors
    /// A dependency cycle, or a bad `ca_file`, as one message.
    pub fn from_config(config: Config, platform: Option<&str>) -> Result<Setup, String> {
        let texts = crate::project::read_dockerfiles(&config);
        let project = crate::project::analyse(&config, &texts, platform).map_err(|e| format!("{}: {e}", config.path.display()))?;
        let registry = HttpRegistry::new(config.options.registry_timeout, config.registries.clone())
            .map_err(|e| format!("{}: {e}", config.path.display()))?;
        Ok(Setup { config, project, registry })
    }
}

/// Loads a new [`Setup`] on SIGHUP; an error refuses the reload.
pub type Reloader = Box<dyn Fn() -> Result<Setup, String> + Send + Sync>;

/// Runs cycles with `setup` and `engine` (whose platform is `engine_platform`) until `cancel` fires or, with
/// `mode.once`, after one cycle; returns the last cycle's report.
///
/// Between cycles, a notification on `reload` calls the [`Reloader`]: a valid
/// new config replaces the old one; an invalid one is refused with an error
/// log, and the old one keeps running.
pub async fn run(
    setup: Setup,
    engine: Arc<dyn Engine>,
    engine_platform: String,
    mode: Mode,
    cancel: CancellationToken,
    reload: Option<(Arc<Notify>, Reloader)>,
) -> Option<CycleReport> {
    let mut current = Current::new(setup);
    let state = Arc::new(Mutex::new(load_state(&current.config.options.state_file)));
    let mut first = true;
    loop {
        let opts = &current.config.options;
        let input = CycleInput {
            project: current.project.clone(),
            engine: engine.clone(),
            registry: current.registry.clone(),
            state: state.clone(),
            state_path: opts.state_file.clone(),
            parallelism: opts.parallelism,
            check_concurrency: opts.check_concurrency,
            shutdown_grace: opts.shutdown_grace,
            rebuild_all: first && opts.rebuild_on_start,
            dry_run: mode.dry_run,
            persist: true,
            settle: opts.settle,
            rate_limit_reserve: opts.rate_limit_reserve,
            engine_platform: engine_platform.clone(),
            cancel: cancel.clone(),
        };
        if first {
            // systemd Type=notify: ready once the first cycle's checks start. A no-op outside systemd.
            let _ = sd_notify::notify(&[NotifyState::Ready]);
        }
        let report = cycle::run(&input).instrument(tracing::info_span!("cycle")).await;
        log_summary(&report);
        release_free_memory();
        first = false;
        if mode.once || cancel.is_cancelled() {
            return Some(report);
        }
        // A change still settling is rechecked when its window ends, not a whole interval later.
        let interval = current.config.options.interval;
        let wait = match report.recheck_at {
            Some(at) => Duration::from_secs(at.saturating_sub(state::now_secs())).min(interval),
            None => interval,
        };
        let reloaded = tokio::select! {
            _ = tokio::time::sleep(wait) => false,
            _ = cancel.cancelled() => {
                let _ = sd_notify::notify(&[NotifyState::Stopping]);
                return Some(report);
            }
            _ = async { reload.as_ref().expect("guarded").0.notified().await }, if reload.is_some() => true,
        };
        if reloaded {
            let (_, loader) = reload.as_ref().expect("guarded");
            let _ = sd_notify::notify(&[NotifyState::Reloading]);
            match loader() {
                Ok(new) => {
                    let state_file = new.config.options.state_file.clone();
                    if state_file != current.config.options.state_file {
                        *state.lock().expect("state lock") = load_state(&state_file);
                    }
                    tracing::info!(event = "config_reloaded", builds = new.config.builds.len(), "config reloaded");
                    current = Current::new(new);
                }
                Err(e) => tracing::error!(event = "config_refused", error = %e, "new config refused; the old one keeps running"),
            }
            let _ = sd_notify::notify(&[NotifyState::Ready]);
        }
    }
}

/// The running setup, shared with cycles.
struct Current {
    config: Config,
    project: Arc<Project>,
    registry: Arc<dyn Registry>,
}

impl Current {
    fn new(s: Setup) -> Self {
        Current { config: s.config, project: Arc::new(s.project), registry: Arc::new(s.registry) }
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
        .filter(|c| c.old.is_some() && c.new.is_some() && c.old != c.new)
        .map(|c| format!("{} {} → {}", c.image, short(c.old.as_deref()), short(c.new.as_deref())))
        .collect();
    let failed_checks = r.checks.iter().filter(|c| c.error.is_some()).count();
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
pub fn short(d: Option<&str>) -> String {
    match d {
        Some(d) => d.chars().take(19).collect(),
        None => "-".into(),
    }
}
