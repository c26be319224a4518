//! `options`: the global options of a config, with their defaults and bounds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::{violation, Violation};
use crate::dockerfile::WatchStages;

/// The builder a config asks for (`options.builder`, a build's `builder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BuilderChoice {
    /// BuildKit where the engine runs it, else classic: what the docker CLI does since 23.0.
    #[default]
    Auto,
    /// BuildKit (`POST /build?version=2` with a session), for `RUN --mount` and private bases alike.
    BuildKit,
    /// The Engine API's classic builder (`POST /build?version=1`), deprecated by Docker.
    Classic,
}

impl std::fmt::Display for BuilderChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BuilderChoice::Auto => "auto",
            BuilderChoice::BuildKit => "buildkit",
            BuilderChoice::Classic => "classic",
        })
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Checks in flight at once per registry when `check_concurrency` is not set.
///
/// B1 (BENCHMARKS.md): at 8, 50 bases took 7 rounds of HEADs (one round trip
/// each); 64 checks 50 in one. 64 is under the streams an HTTP/2 server takes on
/// one connection by default (nginx 128, Go's net/http 250, so Docker Hub's and
/// distribution's over TLS), where the checks then share one connection; over
/// HTTP/1.1 each is its own connection, which a registry's server takes as readily.
pub const DEFAULT_CHECK_CONCURRENCY: usize = 64;

/// Global options, with defaults filled in.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a change may wait before freshen polls for it (`options.interval`, default 5 minutes).
    pub interval: Duration,
    /// Builds at once (default 1): bounds the load on the engine, or on all the engines of a pool.
    pub parallelism: usize,
    /// The engines builds are spread over (`engines`); empty means the one engine of `DOCKER_HOST`.
    pub engines: Vec<super::engines::EngineSpec>,
    /// Registry checks in flight at once per registry (default 64), and engine inspects of
    /// output tags at once: fast cycles without flooding a registry.
    pub check_concurrency: usize,
    /// How long one registry request may take (default 20 s), so a dead registry cannot stall a cycle.
    pub registry_timeout: Duration,
    /// How long running builds may finish after a stop signal (default 30 s).
    pub shutdown_grace: Duration,
    /// Longest one build may take (default 2 h), so a stalled engine cannot stop every later cycle.
    pub build_timeout: Duration,
    /// Longest a build may go without output from the engine (default 30 min): a stream that stopped.
    pub build_idle_timeout: Duration,
    /// Where the digests seen and the builds' records survive restarts (absolute).
    pub state_file: PathBuf,
    /// How much to log: a tracing filter directive (`info`, `debug`, …).
    pub log_level: String,
    /// Text for people, JSON for log collectors and the tests.
    pub log_format: LogFormat,
    /// Rebuild everything in the first cycle, for users who want a known-fresh start.
    pub rebuild_on_start: bool,
    /// How long a new digest must stay before builds start (default 0), so a burst of pushes makes one rebuild.
    pub settle: Duration,
    /// Requests left under which a registry is checked less often (default 10), so its quota is never used up.
    pub rate_limit_reserve: u64,
    /// Which stages' images are watched, for builds that do not say.
    pub watch_stages: WatchStages,
    /// Which builder runs builds that do not say (default auto: BuildKit where the engine has it).
    pub builder: BuilderChoice,
    /// Push every tag after a successful build (default false), for builds that do not say.
    pub push: bool,
    /// Longest one tag's push may take (default 10 min): the engine retries a failing upload for minutes.
    pub push_timeout: Duration,
    /// Where notifications of builds, pushes and checks go (`notify`): webhooks and commands.
    pub notify: Vec<super::notify::Notify>,
    /// Previous images of each build kept after its tags move (default 1), for a rollback;
    /// older ones that no tag or container uses are removed.
    pub keep_previous: u32,
    /// Saved build logs kept per build (default 10), so `logs/` never grows without end; 0 saves none.
    pub keep_logs: usize,
    /// The daemon's HTTP server (`listen`, `token_file`): webhooks in, metrics and status out; `None` when off.
    pub server: Option<super::Server>,
    /// Warnings found while loading (deprecated or ignored keys), logged once logging is set up.
    pub warnings: Vec<String>,
}

fn duration(raw: &Value, key: &str, default: Duration, v: &mut Vec<Violation>) -> Duration {
    duration_at(raw, "/options", key, default, v)
}

/// The bounds of each duration option: (least, most). Below the least, a value makes
/// no sense (an `interval` of 1 ns runs cycles back to back); above the most, it
/// would overflow a clock or mean "never" (`shutdown_grace: "300000000000y"`).
fn duration_bounds(key: &str) -> (Duration, Duration) {
    const DAY: u64 = 24 * 3600;
    match key {
        "interval" => (Duration::from_secs(1), Duration::from_secs(30 * DAY)),
        "registry_timeout" => (Duration::from_secs(1), Duration::from_secs(3600)),
        "shutdown_grace" => (Duration::ZERO, Duration::from_secs(DAY)),
        "build_timeout" | "build_idle_timeout" | "push_timeout" | "timeout" => (Duration::from_secs(1), Duration::from_secs(7 * DAY)),
        _ => (Duration::ZERO, Duration::from_secs(30 * DAY)),
    }
}

/// The duration at `raw[key]` (humantime text, or whole seconds), within
/// [`duration_bounds`] of `key`; `default` when absent. A bad one is a
/// violation at `<at>/<key>` and gives `default`.
pub(super) fn duration_at(raw: &Value, at: &str, key: &str, default: Duration, v: &mut Vec<Violation>) -> Duration {
    let d = match raw.get(key) {
        None => return default,
        Some(Value::Number(n)) => Duration::from_secs(n.as_u64().unwrap_or(u64::MAX)),
        Some(Value::String(s)) => match humantime::parse_duration(s) {
            Ok(d) => d,
            Err(e) => {
                violation(v, format!("{at}/{key}"), format!("{s:?} is not a duration ({e}); write e.g. \"90s\", \"5m\" or \"1h 30m\""));
                return default;
            }
        },
        Some(_) => return default,
    };
    let (least, most) = duration_bounds(key);
    if d < least || d > most {
        let (least, most) = (humantime::format_duration(least), humantime::format_duration(most));
        violation(v, format!("{at}/{key}"), format!("{key} must be from {least} to {most}, not {}", humantime::format_duration(d)));
        return default;
    }
    d
}

/// The state file beside the config `path` when `state_file` is not given:
/// `<config stem>.state.json`, so two configs in one folder never share one; an
/// existing `freshen-state.json` (the default before) is kept while the new one does not exist.
fn default_state_file(path: &Path) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let stem = path.file_stem().map_or_else(|| "freshen".into(), |s| s.to_string_lossy().into_owned());
    let new = dir.join(format!("{stem}.state.json"));
    let old = dir.join("freshen-state.json");
    if !new.exists() && old.is_file() {
        return old;
    }
    new
}

pub(super) fn resolve_options(raw: &Value, path: &Path, v: &mut Vec<Violation>) -> Options {
    let base_dir = path.parent().unwrap_or(Path::new("/"));
    let mut warnings = Vec::new();
    let level = raw.get("log_level").or_else(|| raw.get("log-level"));
    let log_level = match level {
        Some(Value::Number(n)) => match n.as_u64().unwrap_or(20) {
            0..=9 => "trace",
            10..=19 => "debug",
            20..=29 => "info",
            30..=39 => "warn",
            _ => "error",
        }
        .to_string(),
        Some(Value::String(s)) => match s.to_lowercase().as_str() {
            "warning" => "warn".to_string(),
            "critical" => "error".to_string(),
            other => other.to_string(),
        },
        _ => "info".to_string(),
    };
    if raw.get("log-format").is_some() {
        warnings.push("options.log-format (a Python logging format) is ignored; use options.log_format: \"text\" or \"json\"".into());
    }
    let log_format = match raw.get("log_format").and_then(Value::as_str) {
        Some("json") => LogFormat::Json,
        _ => LogFormat::Text,
    };
    let state_file = match raw.get("state_file").and_then(Value::as_str) {
        Some(p) => base_dir.join(p),
        None => match std::env::var_os("STATE_DIRECTORY") {
            // systemd's StateDirectory= may list several folders separated by ':'; the first is ours.
            Some(dir) => PathBuf::from(dir.to_string_lossy().split(':').next().unwrap_or("")).join("state.json"),
            None => default_state_file(path),
        },
    };
    Options {
        interval: duration(raw, "interval", Duration::from_secs(300), v),
        parallelism: raw.get("parallelism").and_then(Value::as_u64).unwrap_or(1) as usize,
        engines: super::engines::resolve(raw, base_dir, v),
        check_concurrency: raw.get("check_concurrency").and_then(Value::as_u64).unwrap_or(DEFAULT_CHECK_CONCURRENCY as u64) as usize,
        registry_timeout: duration(raw, "registry_timeout", Duration::from_secs(20), v),
        shutdown_grace: duration(raw, "shutdown_grace", Duration::from_secs(30), v),
        build_timeout: duration(raw, "build_timeout", Duration::from_secs(2 * 3600), v),
        build_idle_timeout: duration(raw, "build_idle_timeout", Duration::from_secs(30 * 60), v),
        state_file,
        log_level,
        log_format,
        rebuild_on_start: raw.get("rebuild_on_start").and_then(Value::as_bool).unwrap_or(false),
        watch_stages: watch_stages(raw).unwrap_or_default(),
        builder: builder(raw).unwrap_or_default(),
        settle: duration(raw, "settle", Duration::ZERO, v),
        rate_limit_reserve: raw.get("rate_limit_reserve").and_then(Value::as_u64).unwrap_or(10),
        push: raw.get("push").and_then(Value::as_bool).unwrap_or(false),
        push_timeout: duration(raw, "push_timeout", Duration::from_secs(600), v),
        notify: super::notify::resolve(raw, base_dir, v),
        keep_previous: raw.get("keep_previous").and_then(Value::as_u64).map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX)),
        keep_logs: raw.get("keep_logs").and_then(Value::as_u64).map_or(10, |n| usize::try_from(n).unwrap_or(usize::MAX)),
        server: super::server::resolve(raw, base_dir, v),
        warnings,
    }
}

pub(super) fn builder(raw: &Value) -> Option<BuilderChoice> {
    match raw.get("builder").and_then(Value::as_str)? {
        "buildkit" => Some(BuilderChoice::BuildKit),
        "classic" => Some(BuilderChoice::Classic),
        _ => Some(BuilderChoice::Auto),
    }
}

pub(super) fn watch_stages(raw: &Value) -> Option<WatchStages> {
    match raw.get("watch_stages").and_then(Value::as_str)? {
        "all" => Some(WatchStages::All),
        _ => Some(WatchStages::Final),
    }
}
