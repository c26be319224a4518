//! freshen keeps Docker images fresh: it finds each Dockerfile's base image,
//! asks the registry with one HEAD request whether that base has a new digest,
//! and rebuilds every affected image and the images built on top of them, in
//! dependency order.
//!
//! # Layout
//! - [`cli`]: clap definitions and subcommands (run, `--once`, plan, graph, explain, validate).
//! - [`output`]: what the CLI prints: reports, plan, graph.
//! - [`explain`]: `freshen explain BUILD`.
//! - [`config`]: raw JSON → schema check → resolved [`config::Config`].
//! - [`credentials`]: registry credentials and per-registry settings; secrets never print.
//! - [`reference`]: image references: parse, normalise, compare (pure).
//! - [`dockerfile`]: base-image resolution: stages, ARG expansion (pure).
//! - [`project`]: a config resolved against its Dockerfiles; `plan` output (pure but for one reader).
//! - [`graph`]: build graph: edges, cycles, descendants, topological order (pure).
//! - [`plan`]: (project, digests, state) → what to rebuild and why (pure).
//! - [`registry`]: digest checks against registries: HEAD, auth, retries.
//! - [`engine`]: trait [`engine::Engine`] and the bollard implementation; build contexts.
//! - [`executor`]: runs a plan: ordering, parallelism, failure propagation.
//! - [`state`]: versioned state file, atomic writes.
//! - [`check`]: a cycle's checks: each watched image once; pinned, built, registry, local.
//! - [`rebuild`]: one build: pull, build with labels, record.
//! - [`cycle`]: one cycle: check → plan → execute → record.
//! - [`watcher`]: the loop; one cycle at a time; shutdown.
//!
//! Dependencies point one way: the pure core (`reference`, `dockerfile`,
//! `graph`, `plan`) imports no tokio, bollard or HTTP.

#![warn(missing_docs)]

mod check;
pub mod cli;
pub mod config;
mod credentials;
pub mod cycle;
pub mod dockerfile;
pub mod engine;
pub mod error;
pub mod executor;
mod explain;
#[doc(hidden)]
pub mod fuzzing;
pub mod graph;
pub mod input;
mod listen;
mod output;
pub mod plan;
pub mod project;
mod rebuild;
pub mod reference;
pub mod registry;
pub mod state;
pub mod trigger;
pub mod watcher;
