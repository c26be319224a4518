//! Command line: clap definitions and the subcommands. The core never sees clap.
//!
//! Exit codes: 0 all good (nothing to do included), 1 a check or build failed
//! (or the engine is unreachable with `--once`), 2 a config or usage error.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, LogFormat};
use crate::cycle::CycleReport;
use crate::engine::Engine;
use crate::project::{self, Project};
use crate::registry::HttpRegistry;
use crate::watcher::{self, Mode};

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
}

/// Runs the parsed command line; returns the process exit code.
pub fn run(args: Args) -> i32 {
    let config = match config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("freshen: {e}");
            return EXIT_CONFIG;
        }
    };
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
        Some(Command::Plan) => print_plan(&project, config.path.parent().unwrap_or(std::path::Path::new("/")), args.format),
        Some(Command::Graph) => print_graph(&project, args.format),
        None => {
            init_logging(&config);
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime starts");
            runtime.block_on(run_watcher(&config, &texts, Mode { once: args.once, dry_run: args.dry_run }, args.format))
        }
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("freshen={},warn", config.options.log_level)));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    match config.options.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    for w in &config.options.warnings {
        tracing::warn!("{w}");
    }
}

/// First SIGINT/SIGTERM cancels gracefully; a second one exits at once (state
/// is saved after every build, so it is consistent).
fn spawn_signal_handler(cancel: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        for n in 0.. {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if n == 0 {
                tracing::info!("stop signal: no new builds; running builds get the shutdown grace period");
                cancel.cancel();
            } else {
                tracing::warn!("second stop signal: exiting now");
                std::process::exit(130);
            }
        }
    });
}

async fn run_watcher(config: &Config, texts: &HashMap<String, Result<String, String>>, mode: Mode, format: Format) -> i32 {
    let cancel = CancellationToken::new();
    spawn_signal_handler(cancel.clone());
    let engine = match watcher::connect_engine(&config.registries, mode.once || mode.dry_run, &cancel).await {
        Ok(e) => Arc::new(e),
        Err(e) if cancel.is_cancelled() => {
            tracing::info!(error = %e, "stopped before the engine answered");
            return EXIT_OK;
        }
        Err(e) => {
            eprintln!("freshen: {e}");
            return EXIT_FAILED;
        }
    };
    // Resolve again with the engine's platform for the automatic platform ARGs.
    let platform = engine.platform().await.ok();
    let project = match project::analyse(config, texts, platform.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("freshen: {}: {e}", config.path.display());
            return EXIT_CONFIG;
        }
    };
    tracing::info!(builds = config.builds.len(), interval = ?config.options.interval, platform = ?platform, "freshen started");
    let once = mode.once || mode.dry_run;
    let registry = match HttpRegistry::new(config.options.registry_timeout, config.registries.clone()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("freshen: {}: {e}", config.path.display());
            return EXIT_CONFIG;
        }
    };
    let report = watcher::run(config, project, engine, registry, Mode { once, ..mode }, cancel.clone()).await;
    match report {
        Some(r) if once => {
            print_report(&r, format, mode.dry_run);
            if r.failed() && !cancel.is_cancelled() {
                EXIT_FAILED
            } else {
                EXIT_OK
            }
        }
        _ => {
            tracing::info!("stopped");
            EXIT_OK
        }
    }
}

fn print_report(r: &CycleReport, format: Format, dry_run: bool) {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(r).expect("report serialises"));
        return;
    }
    for (name, d) in &r.decisions {
        let line = match (d, r.outcomes.get(name)) {
            (_, Some(o)) => format!("{o:?}"),
            (d, None) if dry_run && d.rebuilds() => format!("would rebuild: {d:?}"),
            (d, None) => format!("{d:?}"),
        };
        println!("{name}: {line}");
    }
}

fn print_plan(project: &Project, config_dir: &std::path::Path, format: Format) -> i32 {
    let report = project::plan_report(project, config_dir);
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&report).expect("plan serialises"));
    } else {
        for b in &report.builds {
            match &b.error {
                Some(e) => println!("{}: ERROR {e}", b.name),
                None => println!(
                    "{}: base {}{}{}",
                    b.name,
                    b.base.as_deref().unwrap_or("scratch"),
                    if b.pinned { " (pinned)" } else { "" },
                    if b.parents.is_empty() { String::new() } else { format!(" [after {}]", b.parents.join(", ")) }
                ),
            }
        }
        println!("order: {}", report.order.join(" → "));
    }
    if report.builds.iter().any(|b| b.error.is_some()) {
        EXIT_FAILED
    } else {
        EXIT_OK
    }
}

fn print_graph(project: &Project, format: Format) -> i32 {
    match format {
        Format::Json => {
            let edges: Vec<(String, String)> = project
                .graph
                .order()
                .into_iter()
                .flat_map(|n| project.graph.children(&n).into_iter().map(move |c| (n.clone(), c.to_string())).collect::<Vec<_>>())
                .collect();
            println!("{}", serde_json::json!({"nodes": project.graph.order(), "edges": edges}));
        }
        _ => print!("{}", project.graph.to_dot()),
    }
    EXIT_OK
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
