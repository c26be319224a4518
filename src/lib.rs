//! freshen keeps Docker images fresh: it finds each Dockerfile's base image,
//! asks the registry with one HEAD request whether that base has a new digest,
//! and rebuilds every affected image and the images built on top of them, in
//! dependency order.
//!
//! # Layout
//! In the order data flows: triggers → loop → inputs → checks → plan → builds →
//! records → report → listeners.
//!
//! The pure core (no tokio, bollard or HTTP):
//! - [`reference`](mod@reference): image references: parse, normalise, compare.
//! - [`dockerfile`]: base-image resolution: stages, ARG expansion.
//! - [`project`]: a config resolved against its Dockerfiles: each build's inputs; `plan` output (pure but for one reader).
//! - [`input`]: what a build depends on ([`input::Input`]: an image, a build's context, a git ref) and
//!   what a check saw of it ([`input::Observation`]). A new kind of input is a variant here.
//! - [`graph`]: the build graph: edges, cycles, descendants, topological order.
//! - [`plan`]: (project, checks, state) → a [`plan::Decision`] per build, and the order.
//! - [`placement`]: which engines of the pool may run each build (its platform, a push-only job's
//!   engine), the config's rules against the pool, the one rule that picks a ready build's engine, and the engine each build would use.
//! - [`error`]: typed errors of the registry, the engine, checks and builds.
//! - [`event`]: registry notifications, Docker Hub webhooks and `/v1/check` bodies → the watched inputs they name;
//!   [`git_event`]: git forges' push events → the watched git sources they name.
//!
//! Loading: `files`: the one bounded, regular-files-only reader of every file a
//! user or a repository names. [`config`]: the config file (and `password_file`s) → schema check →
//! resolved [`config::Config`]; the [`config::Redactor`] of secret build args.
//!
//! The edges, behind small traits:
//! - [`registry`]: digest checks: HEAD, auth, retries ([`registry::Registry`]).
//! - [`engine`]: inspect, pull, build with BuildKit or the classic builder, tag, push, run a test gate's
//!   container, list and remove images ([`engine::Engine`], bollard); the build context's archive; build output as lines;
//!   the BuildKit session that serves a build's secrets; the pool of engines ([`engine::Pool`]:
//!   `options.engines` or `DOCKER_HOST`, asked each cycle which answer).
//!   A new builder (BuildKit) goes here.
//! - [`context`](mod@context): a build context's kept files (`.dockerignore`), walked once for the
//!   engine's archive and for the content digest a check compares ([`context::ContextDigests`]).
//! - [`git`]: git sources (gix): one connection per repository a cycle (the ref listing, and a depth-1 fetch
//!   only of new commits) into a bare cache beside the state file; Dockerfile reads, path digests, checkouts.
//! - `credentials`: registry credentials; secrets never print.
//! - [`state`]: the versioned state file (format 2, migrated from 1), atomic writes.
//!
//! Composition:
//! - `check`: a cycle's checks: each watched input once → [`input::Check`]s; the git sources first, so
//!   that a new commit's Dockerfile is resolved again before the rest are checked.
//! - `rebuild`: one build: pull, build with labels, test gate, move the tags → its [`state::BuildRecord`];
//!   `publish`: push its tags (and push-only jobs for a push that failed), remove its previous images;
//!   `buildlog`: its saved log, `logs/<build>/<time>.log` beside the state file.
//!   A new post-build step goes in one of these two.
//! - [`executor`]: runs a plan's builds: ordering, parallelism, each engine's capacity, the engine
//!   each ready build goes to, failure propagation, one retry of a build whose engine is lost.
//! - [`cycle`]: one cycle: check → plan → execute; the one owner of state while it runs.
//! - [`trigger`]: the loop's way in ([`trigger::Triggers`]: tick, reload, check these
//!   inputs, shutdown) and way out ([`trigger::Status`] on a watch channel).
//!   A new trigger sends on it, as [`server`] and `fswatch` (the daemon's file watch: build
//!   contexts, Dockerfiles and the config, with `notify`) do.
//! - [`server`]: the HTTP server (axum on hyper): webhooks (registries' and git forges', signed) and `/v1/check` in as triggers;
//!   `/metrics`, `/v1/status`, `/healthz`, `/readyz` out.
//! - [`metrics`]: Prometheus metrics (prometheus-client), recorded by the loop, the registry client and the triggers.
//! - [`watcher`]: the loop: start, one cycle at a time, reload, shutdown.
//! - `listen`: listeners on the status channel: sd_notify, the cycle summary;
//!   `notify`: notifications to webhooks and commands, from a bounded queue with retries.
//! - [`cli`], `output`, `explain`: the command line and what it prints.
//!
//! Dependencies point one way: the pure core imports nothing from the edges or
//! the composition, and nothing imports [`cli`].

#![warn(missing_docs)]

mod buildlog;
mod check;
pub mod cli;
pub mod config;
pub mod context;
mod credentials;
pub mod cycle;
mod deadline;
pub mod dockerfile;
pub mod engine;
pub mod error;
pub mod event;
pub mod executor;
mod explain;
mod files;
mod fswatch;
#[doc(hidden)]
pub mod fuzzing;
pub mod git;
pub mod git_event;
pub mod graph;
pub mod input;
mod listen;
pub mod metrics;
mod notify;
mod output;
pub mod placement;
pub mod plan;
pub mod project;
mod publish;
mod rebuild;
pub mod reference;
pub mod registry;
pub mod server;
pub mod state;
pub mod trigger;
pub mod watcher;
