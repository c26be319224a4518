//! Prometheus metrics (`GET /metrics`), from the `prometheus-client` crate, named
//! by Prometheus conventions (base units, `_total` for counters; Prometheus docs,
//! "Metric and label naming"). Served as OpenMetrics text, which Prometheus scrapes.
//!
//! Every label's values are bounded: check results, HTTP methods and status
//! codes, build statuses and trigger sources are short fixed lists; registries
//! and builds are the ones the config names. An image reference or a tag never
//! becomes a label.
//!
//! The loop records each cycle's report ([`Metrics::record`]) right after the
//! cycle, so that no cycle is missed; the registry client counts each request
//! it sends ([`crate::registry::Observer`]); the triggers count themselves ([`Metrics::trigger`]).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::cycle::CycleReport;
use crate::executor::Outcome;

/// What asked for a cycle, as `freshen_triggers_total{source}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The interval's timer, or the end of a settle window.
    Interval,
    /// SIGHUP: a config reload.
    Signal,
    /// A registry's notification (`POST /v1/hooks/registry`) that named a watched image.
    Registry,
    /// A Docker Hub webhook (`POST /v1/hooks/dockerhub`) that named a watched image.
    DockerHub,
    /// A Harbor webhook (`POST /v1/hooks/harbor`) that named a watched image.
    Harbor,
    /// `POST /v1/check`.
    Api,
    /// The file watch: a build context, a Dockerfile or the config changed on disk.
    FileWatch,
    /// A git push webhook (`POST /v1/hooks/git`) that named a watched repository and ref.
    Git,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Interval => "interval",
            Source::Signal => "signal",
            Source::Registry => "registry",
            Source::DockerHub => "dockerhub",
            Source::Harbor => "harbor",
            Source::Api => "api",
            Source::FileWatch => "file",
            Source::Git => "git",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    registry: String,
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegistryLabel {
    registry: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabel {
    build: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The daemon's metrics: shared by the loop, the registry client, the triggers
/// and the HTTP server; cheap to update from any task.
pub struct Metrics {
    /// What `/metrics` encodes.
    registry: Registry,
    checks: Family<ResultLabel, Counter>,
    requests: Family<RequestLabels, Counter>,
    builds: Family<StatusLabel, Counter>,
    build_seconds: Histogram,
    cycle_seconds: Histogram,
    last_cycle: FloatGauge,
    rate_limit_remaining: Family<RegistryLabel, Gauge>,
    triggers: Family<SourceLabel, Counter>,
    last_success: Family<BuildLabel, FloatGauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero, and `freshen_info{version}` at 1.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            checks: Family::default(),
            requests: Family::default(),
            builds: Family::default(),
            // 0.1 s to about 3.6 h: a cached build to a long one.
            build_seconds: Histogram::new(exponential_buckets(0.1, 2.0, 18)),
            // 10 ms to about 5.8 h.
            cycle_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 22)),
            last_cycle: FloatGauge::default(),
            rate_limit_remaining: Family::default(),
            triggers: Family::default(),
            last_success: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "freshen_checks",
            "Input checks made, by result: unchanged, changed, new (first seen) or failed",
            m.checks.clone(),
        );
        registry.register(
            "freshen_registry_requests",
            "HTTP requests sent to registries, by registry, method and status code (\"error\": no answer)",
            m.requests.clone(),
        );
        registry.register(
            "freshen_builds",
            "Builds that ran, by status (rebuilt, pushed, failed, test_failed, push_failed, skipped, cancelled)",
            m.builds.clone(),
        );
        registry.register_with_unit("freshen_build_duration", "Wall time of each build that ran", Unit::Seconds, m.build_seconds.clone());
        registry.register_with_unit("freshen_cycle_duration", "Wall time of each cycle", Unit::Seconds, m.cycle_seconds.clone());
        registry.register_with_unit(
            "freshen_last_cycle_timestamp",
            "When the last cycle finished, seconds since the Unix epoch",
            Unit::Seconds,
            m.last_cycle.clone(),
        );
        registry.register(
            "freshen_rate_limit_remaining",
            "RateLimit-Remaining that each registry last sent",
            m.rate_limit_remaining.clone(),
        );
        registry.register(
            "freshen_triggers",
            "Triggers that asked for a cycle, by source (interval, signal, registry, dockerhub, harbor, api, file)",
            m.triggers.clone(),
        );
        registry.register_with_unit(
            "freshen_build_last_success_timestamp",
            "When each build last succeeded, seconds since the Unix epoch",
            Unit::Seconds,
            m.last_success.clone(),
        );
        registry.register("freshen", "freshen's version", Info::new(VersionLabel { version: env!("CARGO_PKG_VERSION") }));
        Metrics { registry, ..m }
    }

    /// The metrics as OpenMetrics text (media type [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts a trigger from `source`.
    pub fn trigger(&self, source: Source) {
        self.triggers.get_or_create(&SourceLabel { source: source.to_string() }).inc();
    }

    /// Records what a cycle did: its checks, builds, durations and the rate limits seen.
    pub fn record(&self, report: &CycleReport) {
        for check in report.checks.values() {
            if check.deferred {
                continue;
            }
            let result = match &check.seen {
                Err(e) if e.is_failure() => "failed",
                Err(_) => continue,
                Ok(_) if check.old.is_none() => "new",
                Ok(o) if check.old.as_deref() == Some(o.digest.as_str()) => "unchanged",
                Ok(_) => "changed",
            };
            self.checks.get_or_create(&ResultLabel { result }).inc();
        }
        let now = crate::state::now_secs() as f64;
        for (name, outcome) in &report.outcomes {
            let status = crate::output::build_status(report, name);
            self.builds.get_or_create(&StatusLabel { status }).inc();
            if let Some(s) = outcome.seconds() {
                self.build_seconds.observe(s);
            }
            if matches!(outcome, Outcome::Built { .. }) {
                self.last_success.get_or_create(&BuildLabel { build: name.clone() }).set(now);
            }
        }
        for (registry, remaining) in &report.rate_limits {
            self.rate_limit_remaining
                .get_or_create(&RegistryLabel { registry: registry.clone() })
                .set(i64::try_from(*remaining).unwrap_or(i64::MAX));
        }
        self.cycle_seconds.observe(report.seconds);
        self.last_cycle.set(now);
    }
}

impl crate::registry::Observer for Metrics {
    fn request(&self, registry: &str, method: &str, status: Option<u16>) {
        let code = status.map_or_else(|| "error".to_string(), |s| s.to_string());
        self.requests.get_or_create(&RequestLabels { registry: registry.to_string(), method: method.to_string(), code }).inc();
    }
}

/// The media type of [`Metrics::encode`]'s text (OpenMetrics 1.0).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
