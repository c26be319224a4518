//! Command line: clap definitions and the subcommands. The core never sees clap.
//!
//! Exit codes: 0 all good (nothing to do included), 1 a check or build failed
//! (or the engine is unreachable with `--once`), 2 a config or usage error.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, LogFormat};
use crate::explain;
use crate::output;
use crate::project;
use crate::trigger::{Status, Trigger, Triggers};
use crate::watcher::{self, Loop, Mode, Reloader, Setup, StartError, Started};

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: a check, build or engine connection failed.
pub const EXIT_FAILED: i32 = 1;
/// Exit code: the config or the command line is wrong.
pub const EXIT_CONFIG: i32 = 2;

/// freshen: rebuild Docker images when their base images change.
#[derive(Debug, Parser)]
#[command(name = "freshen", version, about, long_about = None)]
pub struct Args {
    /// Config file.
    #[arg(short, long, env = "FRESHEN_CONFIG", default_value = "config.json", global = true)]
    pub config: PathBuf,
    /// Run one cycle and exit (for cron and CI).
    #[arg(long)]
    pub once: bool,
    /// Check registries and print what would be rebuilt and why; build nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Output format of `--once`/`--dry-run` summaries and of `plan`.
    #[arg(long, value_enum, default_value_t = Format::Text, global = true)]
    pub format: Format,
    /// Subcommand; without one, freshen runs the daemon (or one cycle with --once).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable text.
    Text,
    /// JSON on stdout.
    Json,
    /// Graphviz dot (graph only).
    Dot,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show how the config resolves, offline: no registry, no engine.
    Plan,
    /// Check the config and exit: 0 valid, 2 invalid.
    Validate,
    /// Print the dependency graph (dot or json).
    Graph,
    /// Say why BUILD would or would not be rebuilt now: its watched images,
    /// the digests it was built from and the current ones. Builds nothing, writes nothing.
    Explain {
        /// The build's name.
        build: String,
    },
}

/// Runs the parsed command line; returns the process exit code.
pub fn run(args: Args) -> i32 {
    if args.command.is_none() {
        // SIGHUP's default action ends the process. Until the runtime's handler replaces this
        // (after the config is read and the engine answers), a SIGHUP is ignored instead: the
        // config being loaded then is the newest anyway.
        // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
        unsafe {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
        }
    }
    let config = match config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("freshen: {e}");
            return EXIT_CONFIG;
        }
    };
    // Offline: `plan`, `graph` and `validate` send nothing; the daemon fetches when it starts.
    let texts = project::read_dockerfiles(&config);
    let project = match project::analyse(&config, &texts, None) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("freshen: {}: {e}", config.path.display());
            return EXIT_CONFIG;
        }
    };
    match args.command {
        Some(Command::Validate) => {
            println!("{}: valid, {} builds", config.path.display(), config.builds.len());
            EXIT_OK
        }
        Some(Command::Plan) => output::print_plan(
            &project,
            config.path.parent().unwrap_or(std::path::Path::new("/")),
            &config.options.engines,
            args.format == Format::Json,
        ),
        Some(Command::Graph) => {
            output::print_graph(&project, args.format == Format::Json);
            EXIT_OK
        }
        Some(Command::Explain { build }) => {
            if !config.builds.contains_key(&build) {
                eprintln!(
                    "freshen: no build named {build:?} in {}; builds: {}",
                    config.path.display(),
                    config.builds.keys().cloned().collect::<Vec<_>>().join(", ")
                );
                return EXIT_CONFIG;
            }
            init_logging(&config);
            let runtime = runtime();
            match runtime.block_on(explain::explain(config, &build, args.format == Format::Json)) {
                Ok(failed) => i32::from(failed) * EXIT_FAILED,
                Err(e) => start_failed(e),
            }
        }
        None => {
            init_logging(&config);
            let runtime = runtime();
            runtime.block_on(run_watcher(config, &args.config, Mode { once: args.once, dry_run: args.dry_run }, args.format))
        }
    }
}

/// The async runtime. freshen's work is waiting on the engine and registries,
/// and the one CPU-heavy step (archiving a build context) runs on the blocking
/// pool, so one thread drives everything; this keeps the idle daemon small.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime starts")
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("freshen={},warn", config.options.log_level)));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    match config.options.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.fmt_fields(escaped_fields()).init(),
    }
    for w in &config.options.warnings {
        tracing::warn!(event = "config_warning", "{w}");
    }
}

/// Text-log fields with every control character escaped
/// ([`crate::config::escape_control`]). tracing-subscriber escapes ESC but not a
/// newline or a carriage return, so a registry's answer or a line of build
/// output could otherwise forge a log line of its own.
fn escaped_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let text = crate::config::escape_control(&format!("{value:?}"));
        if field.name() == "message" {
            write!(w, "{text}")
        } else {
            write!(w, "{field}={text}")
        }
    })
    .delimited(" ")
}

/// Signals as triggers: the first SIGINT/SIGTERM is [`Trigger::Shutdown`]; a
/// second one exits at once (state is saved after every build, so it is
/// consistent). SIGHUP is [`Trigger::Reload`].
fn spawn_signal_handler(triggers: Triggers) {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
            (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
        else {
            tracing::error!(event = "signals_unavailable", "cannot install signal handlers");
            return;
        };
        let mut n = 0;
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
                _ = hup.recv() => {
                    tracing::info!(event = "reload_requested", "SIGHUP: reloading the config after the running cycle");
                    triggers.send_from(crate::metrics::Source::Signal, Trigger::Reload);
                    continue;
                }
            }
            n += 1;
            if n == 1 {
                tracing::info!(event = "stop_requested", "stop signal: no new builds; running builds get the shutdown grace period");
                triggers.send(Trigger::Shutdown);
            } else {
                tracing::warn!(event = "exit_now", "second stop signal: exiting now");
                std::process::exit(130);
            }
        }
    });
}

/// Says why freshen could not start; returns the exit code: 1 for the engine, 2 for the config.
fn start_failed(e: StartError) -> i32 {
    match e {
        StartError::Engine(e) => {
            eprintln!("freshen: {e}");
            EXIT_FAILED
        }
        StartError::Config(e) => {
            eprintln!("freshen: {e}");
            EXIT_CONFIG
        }
    }
}

/// Removes test gate containers that a killed freshen on this state file left
/// (label [`crate::rebuild::LABEL_TEST`]); the state lock is held, so none is in use.
async fn remove_stale_test_containers(engine: &dyn crate::engine::Engine, state_file: &std::path::Path) {
    let value = state_file.display().to_string();
    match engine.remove_containers_labelled(crate::rebuild::LABEL_TEST, &value).await {
        Ok(0) => {}
        Ok(count) => tracing::info!(event = "test_containers_removed", count, "removed test gate containers a killed freshen left"),
        Err(e) => {
            tracing::warn!(event = "test_containers_not_removed", error = %e, "could not look for test gate containers a killed freshen left")
        }
    }
}

/// Applies a reloaded config's server options: a new token or git webhook secret takes effect at
/// once; a new `listen` (or none) only at the next start, which the log says.
fn reload_server(
    running: Option<&crate::config::Server>,
    new: Option<&crate::config::Server>,
    keys: &tokio::sync::watch::Sender<crate::server::Keys>,
) {
    let listen = |s: Option<&crate::config::Server>| s.map_or_else(|| "off".to_string(), |s| s.listen.to_string());
    if running.map(|s| s.listen) != new.map(|s| s.listen) {
        tracing::warn!(event = "listen_unchanged", running = %listen(running), new = %listen(new), "options.listen changes take effect at the next start");
    }
    if let (Some(_), Some(new)) = (running, new) {
        keys.send_replace(crate::server::Keys::of(new));
    }
}

async fn run_watcher(config: Config, path: &std::path::Path, mode: Mode, format: Format) -> i32 {
    let cancel = CancellationToken::new();
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
    let triggers = Triggers::new(cancel.clone()).with_metrics(metrics.clone());
    spawn_signal_handler(triggers.clone());
    let once = mode.once || mode.dry_run;
    // Held until the loop ends: a second freshen on this state file would build everything twice.
    let lock = match crate::state::lock(&config.options.state_file) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("freshen: {e}");
            return EXIT_FAILED;
        }
    };
    let stale = crate::state::remove_stale_temp_files(&config.options.state_file);
    if stale > 0 {
        tracing::info!(event = "stale_temp_files_removed", count = stale, "removed temporary state files a killed freshen left");
    }
    let Started { pool, platform, setup } = match watcher::start(config, once, &cancel, Some(metrics.clone())).await {
        Ok(s) => s,
        Err(StartError::Engine(e)) if cancel.is_cancelled() => {
            tracing::info!(event = "stopped", error = %e, "stopped before the engine answered");
            return EXIT_OK;
        }
        Err(e) => return start_failed(e),
    };
    let interval = humantime::format_duration(setup.config.options.interval);
    tracing::info!(event = "started", builds = setup.config.builds.len(), %interval, platform = %platform, "freshen started");
    if !mode.dry_run {
        for engine in pool.connected() {
            remove_stale_test_containers(engine.as_ref(), &setup.config.options.state_file).await;
        }
    }
    let config_path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let path = path.to_path_buf();
    let (reload_platform, reload_pool) = (platform.clone(), pool.clone());
    let server = setup.config.options.server.clone().filter(|_| !once);
    let (keys, keys_rx) = tokio::sync::watch::channel(server.as_ref().map(crate::server::Keys::of).unwrap_or_default());
    let listener = match &server {
        Some(s) => match crate::server::bind(s.listen).await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("freshen: {e}");
                return EXIT_FAILED;
            }
        },
        None => None,
    };
    let observer = metrics.clone();
    // A reload that names another state file moves the lock there first, or is refused.
    let held = std::sync::Mutex::new((setup.config.options.state_file.clone(), lock));
    let (notify, receivers) =
        tokio::sync::watch::channel::<std::sync::Arc<[crate::config::Notify]>>(setup.config.options.notify.clone().into());
    let reloader: Reloader = Box::new(move || {
        let new = Setup::load(&path, Some(&reload_platform), Some(observer.clone()))?;
        watcher::check_pool(&new, &reload_pool, &reload_platform)?;
        let mut held = held.lock().expect("state lock holder");
        if new.config.options.state_file != held.0 {
            let lock = crate::state::lock(&new.config.options.state_file).map_err(|e| e.to_string())?;
            *held = (new.config.options.state_file.clone(), lock);
        }
        notify.send_replace(new.config.options.notify.clone().into());
        reload_server(server.as_ref(), new.config.options.server.as_ref(), &keys);
        Ok(new)
    });
    let (status, _) = tokio::sync::watch::channel(Status::default());
    let mut listeners = crate::listen::spawn(&status);
    if !mode.dry_run {
        // Deliveries in flight when the loop ends get shutdown_grace to finish.
        let drain = setup.config.options.shutdown_grace;
        listeners.push(tokio::spawn(crate::notify::listen(status.subscribe(), receivers, drain)));
    }
    if !once {
        listeners.push(tokio::spawn(crate::fswatch::run(config_path, status.subscribe(), triggers.clone())));
    }
    let server_stop = CancellationToken::new();
    if let Some(listener) = listener {
        let shared = crate::server::Shared::new(triggers.clone(), status.subscribe(), metrics.clone(), keys_rx, pool.clone());
        listeners.push(tokio::spawn(crate::server::serve(listener, std::sync::Arc::new(shared), server_stop.clone())));
    }
    let l = Loop {
        pool,
        engine_platform: platform,
        mode: Mode { once, ..mode },
        triggers,
        reloader: Some(reloader),
        status,
        metrics: Some(metrics),
    };
    let report = watcher::run(setup, l).await;
    server_stop.cancel();
    // The loop dropped the status sender: the listeners read the last report and end.
    for h in listeners {
        let _ = h.await;
    }
    match report {
        Some(r) if once => {
            output::print_report(&r, format == Format::Json);
            if r.failed() && !cancel.is_cancelled() {
                EXIT_FAILED
            } else {
                EXIT_OK
            }
        }
        _ => {
            tracing::info!(event = "stopped", "stopped");
            EXIT_OK
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Args::command().debug_assert();
    }
}
