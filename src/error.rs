//! The errors of a cycle, typed so that the planner, the report and the logs can
//! tell an outage from a refusal, a missing image, a rate limit, a timeout or a
//! failed build. Pure data: no I/O. Text is made from them only where output is
//! written, and secret build arg values are redacted there, once
//! ([`crate::config::Redactor`]).
//!
//! The edges return [`RegistryError`] ([`crate::registry::Registry`]) and
//! [`EngineError`] ([`crate::engine::Engine`]); a cycle wraps them in
//! [`CheckError`] (a watched input could not be checked) or [`BuildError`]
//! (a build did not produce its image).

use std::path::PathBuf;
use std::time::Duration;

use crate::reference::ImageRef;

/// `e` with its causes (`client error (Connect): tcp connect error: Connection refused`):
/// reqwest's, bollard's and hyper's own text leaves out the cause, which is what says what to fix.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    text
}

/// A registry request that failed (OCI distribution spec: `HEAD`/`GET /v2/<name>/manifests/<reference>`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Connection refused, DNS failure or TLS failure: nothing answered.
    #[error("registry {registry} unreachable: {message}")]
    Unreachable {
        /// The registry host, so that the user knows which one to look at.
        registry: String,
        /// The transport's own words, with their causes.
        message: String,
    },
    /// No answer within `registry_timeout`.
    #[error("registry {registry} did not answer within {}; raise `registry_timeout` if it is slow", humantime::format_duration(*.after))]
    TimedOut {
        /// The registry host.
        registry: String,
        /// The timeout that passed.
        after: Duration,
    },
    /// The registry does not know the repository or tag (404).
    #[error("{image} not found in its registry")]
    NotFound {
        /// The image asked for.
        image: String,
    },
    /// Authentication failed or is needed (401/403).
    #[error("registry {registry} refused access to {image}: {message}; give credentials with `docker login {registry}` or the config's registries section")]
    Auth {
        /// The registry host, named in the hint.
        registry: String,
        /// The image asked for.
        image: String,
        /// What the registry said.
        message: String,
    },
    /// 429 Too Many Requests, now or earlier within its `Retry-After`.
    #[error("registry {registry} is rate limiting: no requests for {retry_after_secs} s (Retry-After)")]
    RateLimited {
        /// The registry host.
        registry: String,
        /// Seconds left before requests resume, so the user knows when checks come back.
        retry_after_secs: u64,
    },
    /// Any other answer the check cannot use.
    #[error("registry {registry} answered {status} for {image}")]
    Status {
        /// The registry host.
        registry: String,
        /// The image asked for.
        image: String,
        /// The HTTP status: 5xx is retried, the rest is not.
        status: u16,
    },
    /// The answer lacked `Docker-Content-Digest`, or an index did not parse.
    #[error("registry {registry}: {message} for {image}")]
    Protocol {
        /// The registry host.
        registry: String,
        /// The image asked for.
        image: String,
        /// What is wrong with the answer.
        message: String,
    },
}

impl RegistryError {
    /// True for failures worth retrying within the cycle: connection errors, timeouts and 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. } | RegistryError::TimedOut { .. } => true,
            RegistryError::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// The kind of failure, as reports name it: `unreachable`, `timed_out`,
    /// `not_found`, `unauthorized`, `rate_limited`, `registry_error` or `protocol`.
    pub fn kind(&self) -> &'static str {
        match self {
            RegistryError::Unreachable { .. } => "unreachable",
            RegistryError::TimedOut { .. } => "timed_out",
            RegistryError::NotFound { .. } => "not_found",
            RegistryError::Auth { .. } => "unauthorized",
            RegistryError::RateLimited { .. } => "rate_limited",
            RegistryError::Status { .. } => "registry_error",
            RegistryError::Protocol { .. } => "protocol",
        }
    }
}

/// An engine call that failed (Docker Engine API).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The engine could not be reached.
    #[error("cannot reach the Docker engine: {0}; is dockerd running and DOCKER_HOST right?")]
    Unreachable(String),
    /// The engine answered with an error.
    #[error("{0}")]
    Api(String),
    /// A build failed.
    #[error("build failed: {message}\n--- last build output ---\n{tail}")]
    Build {
        /// The error the engine reported.
        message: String,
        /// The last lines of build output, which usually say what to fix. Not redacted.
        tail: String,
    },
    /// A build went over `build_timeout`, or over `build_idle_timeout` without
    /// output; freshen dropped its connection, which cancels the build on the engine.
    #[error("build {}: no end within {} ({}){}", if *.idle { "stalled" } else { "timed out" }, humantime::format_duration(*.after), if *.idle { "build_idle_timeout: no output for that long" } else { "build_timeout" }, if .tail.is_empty() { String::new() } else { format!("\n--- last build output ---\n{}", .tail) })]
    TimedOut {
        /// The deadline that passed.
        after: Duration,
        /// True for the idle deadline (no output), false for the whole build's.
        idle: bool,
        /// The last lines of build output, which show where it stopped.
        tail: String,
    },
    /// The build context could not be archived.
    #[error("build context {path}: {message}")]
    Context {
        /// The file or folder at fault, so the user knows what to fix.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl EngineError {
    /// The kind of failure, as reports name it: `engine_unreachable`, `engine_error`,
    /// `build_failed`, `context_unreadable` or `timed_out`.
    pub fn kind(&self) -> &'static str {
        match self {
            EngineError::Unreachable(_) => "engine_unreachable",
            EngineError::Api(_) => "engine_error",
            EngineError::Build { .. } => "build_failed",
            EngineError::Context { .. } => "context_unreadable",
            EngineError::TimedOut { .. } => "timed_out",
        }
    }
}

/// A build context that cannot be read, for its digest or its archive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct ContextError {
    /// The file or folder that could not be read, so the user knows where to look.
    pub path: PathBuf,
    /// What is wrong, with what to do where freshen knows it.
    pub message: String,
}

impl From<ContextError> for EngineError {
    /// A context that cannot be read for the archive is the build's `context_unreadable`.
    fn from(e: ContextError) -> Self {
        EngineError::Context { path: e.path, message: e.message }
    }
}

/// Why a watched input has no current digest this cycle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// The registry check failed (and the registry served the image before, or the
    /// engine could not be asked for a local one).
    #[error("{0}")]
    Registry(#[source] RegistryError),
    /// The registry does not serve the image, and the engine has no local copy either.
    #[error("{registry}, and the engine has no local image {image}")]
    NoLocalImage {
        /// The image.
        image: ImageRef,
        /// Why the registry check failed first.
        #[source]
        registry: RegistryError,
    },
    /// Another build produces this tag and has not built it yet. Not a failure:
    /// that build runs first and its child is built after it.
    #[error("not built yet: build {build} produces it")]
    NotBuilt {
        /// The build that produces the tag.
        build: String,
    },
    /// The engine could not be asked about the image.
    #[error("engine: {0}")]
    Engine(#[source] EngineError),
    /// The build context could not be read for its digest.
    #[error("build context: {0}")]
    Context(#[source] ContextError),
    /// The git repository could not be listed or fetched.
    #[error("git: {0}")]
    Git(#[source] crate::git::GitError),
    /// No check ran for the input (it was not in this cycle's set).
    #[error("not checked")]
    NotChecked,
}

impl CheckError {
    /// The kind of failure, as reports name it: a [`RegistryError::kind`] or an
    /// [`EngineError::kind`], `not_built`, `context_unreadable` or `not_checked`.
    pub fn kind(&self) -> &'static str {
        match self {
            CheckError::Registry(e) | CheckError::NoLocalImage { registry: e, .. } => e.kind(),
            CheckError::NotBuilt { .. } => "not_built",
            CheckError::Engine(e) => e.kind(),
            CheckError::Context(_) => "context_unreadable",
            CheckError::Git(_) => "git_failed",
            CheckError::NotChecked => "not_checked",
        }
    }

    /// True for a real failure: not a parent's tag that this cycle builds first,
    /// nor an input a triggered cycle left for later.
    pub fn is_failure(&self) -> bool {
        !matches!(self, CheckError::NotBuilt { .. } | CheckError::NotChecked)
    }
}

/// Why a build did not produce its image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The engine could not be asked about a watched image before the build.
    #[error("{image}: {source}")]
    Inspect {
        /// The watched image.
        image: ImageRef,
        /// The engine's error.
        #[source]
        source: EngineError,
    },
    /// A watched registry image could not be pulled, and the engine has no copy to build on.
    #[error("{image}: pull failed: {source}")]
    Pull {
        /// The image.
        image: ImageRef,
        /// The engine's error.
        #[source]
        source: EngineError,
    },
    /// The git source's commit could not be checked out for the build.
    #[error("git source: {0}")]
    Checkout(String),
    /// A parent build's image is gone from the engine.
    #[error("{image}: parent image is missing")]
    ParentMissing {
        /// The parent's tag.
        image: ImageRef,
    },
    /// The image was built and tagged, but pushing a tag failed: the tags
    /// stay on the new image locally, and the build is recorded as built but
    /// not pushed, so the next cycle pushes it again without building it.
    #[error("push of {tag} failed: {message}")]
    Push {
        /// The tag whose push failed.
        tag: ImageRef,
        /// The engine's or the registry's words.
        message: String,
    },
    /// The image was built, but its test gate (the build's `test`) did not
    /// pass: no tag moved and nothing was pushed.
    #[error("test failed: {message}")]
    Test {
        /// What went wrong: the exit code or the timeout, and the test's last output lines.
        message: String,
    },
    /// The build itself failed: the Dockerfile, the context or the engine.
    #[error("{0}")]
    Engine(#[source] EngineError),
    /// No engine of the pool that builds for the build's platform answers this
    /// cycle, or each one that did was lost during it.
    #[error("no engine can run it: {0}")]
    NoEngine(String),
}

impl BuildError {
    /// True when the engine stopped answering during the build (an
    /// [`EngineError::Unreachable`] from the build, a pull or an inspect): the
    /// build may go to another engine of the pool.
    pub fn engine_lost(&self) -> bool {
        matches!(
            self,
            BuildError::Engine(EngineError::Unreachable(_))
                | BuildError::Inspect { source: EngineError::Unreachable(_), .. }
                | BuildError::Pull { source: EngineError::Unreachable(_), .. }
        )
    }

    /// The kind of failure, as reports name it: `pull_failed`, `parent_missing`,
    /// `push_failed`, `test_failed`, or an [`EngineError::kind`].
    pub fn kind(&self) -> &'static str {
        match self {
            BuildError::Inspect { source, .. } => source.kind(),
            BuildError::Pull { .. } => "pull_failed",
            BuildError::ParentMissing { .. } => "parent_missing",
            BuildError::Checkout(_) => "checkout_failed",
            BuildError::Push { .. } => "push_failed",
            BuildError::Test { .. } => "test_failed",
            BuildError::NoEngine(_) => "no_engine",
            BuildError::Engine(e) => e.kind(),
        }
    }
}

/// Why a build's Dockerfile could not be resolved: an error for that build alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The Dockerfile could not be read (missing, unreadable, too large, not UTF-8).
    #[error("{0}")]
    Read(String),
    /// The Dockerfile does not resolve (syntax, a variable, a reference, the target).
    #[error("{}: {source}", .path.display())]
    Dockerfile {
        /// The Dockerfile.
        path: std::path::PathBuf,
        /// What the resolver found.
        source: crate::dockerfile::DockerfileError,
    },
}
