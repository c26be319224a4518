//! The Docker engine, behind the small [`Engine`] trait. The bollard
//! implementation ([`DockerEngine`]), its BuildKit progress renderer and
//! freshen's own BuildKit session (for secrets) are the only places bollard
//! and its BuildKit types are imported.

pub mod context;
mod docker;
mod lines;
mod progress;
mod session;

use std::collections::HashMap;
use std::path::PathBuf;

use async_trait::async_trait;

use crate::config::{BuilderChoice, Redactor};
pub use crate::error::EngineError;
use crate::reference::ImageRef;
pub use docker::DockerEngine;

/// What freshen needs to know of a local image (Engine API: `GET /images/{name}/json`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageInfo {
    /// Image ID (`sha256:…`): what a build on this image is recorded as built from.
    pub id: String,
    /// `RepoDigests` (`name@sha256:…`): match a pulled image to the registry digest the check saw.
    pub repo_digests: Vec<String>,
    /// Labels: freshen's own re-seed state when the state file is lost.
    pub labels: HashMap<String, String>,
}

impl ImageInfo {
    /// The registry digest recorded for `image`'s repository, if the image came from there.
    pub fn repo_digest_for(&self, image: &ImageRef) -> Option<String> {
        let name = image.name();
        self.repo_digests.iter().find_map(|rd| {
            let (n, d) = rd.split_once('@')?;
            let n = ImageRef::parse(n).ok()?;
            (n.name() == name).then(|| d.to_string())
        })
    }
}

/// The builder that runs a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builder {
    /// BuildKit: `POST /build?version=2` with a session that serves registry
    /// credentials (moby's builder-next; BuildKit ignores `X-Registry-Config`).
    BuildKit,
    /// The classic builder: `POST /build`, credentials in `X-Registry-Config`.
    Classic,
}

impl Builder {
    /// The builder for `choice` on an engine that runs BuildKit builds
    /// (`engine_has_buildkit`) or not: `auto` takes BuildKit where there is one,
    /// as the docker CLI does since 23.0. An explicit choice is kept, so an
    /// engine without BuildKit fails that build with the engine's own words.
    pub fn choose(choice: BuilderChoice, engine_has_buildkit: bool) -> Builder {
        match choice {
            BuilderChoice::BuildKit => Builder::BuildKit,
            BuilderChoice::Classic => Builder::Classic,
            BuilderChoice::Auto if engine_has_buildkit => Builder::BuildKit,
            BuilderChoice::Auto => Builder::Classic,
        }
    }
}

impl std::fmt::Display for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Builder::BuildKit => "buildkit",
            Builder::Classic => "classic",
        })
    }
}

/// One build to run (Engine API: `POST /build`).
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The build's name, so that build output lines can be told apart in the log.
    pub name: String,
    /// The build context folder (absolute), archived and sent.
    pub context: PathBuf,
    /// The Dockerfile (absolute), inside or outside the context: added to the archive when outside.
    pub dockerfile: PathBuf,
    /// Every tag to move to the new image, together, after the build succeeds.
    pub tags: Vec<ImageRef>,
    /// Build args for the engine (`buildargs`).
    pub build_args: HashMap<String, String>,
    /// The stage to build (`target`).
    pub target: Option<String>,
    /// The platform to build for (`platform`); the engine's when absent.
    pub platform: Option<String>,
    /// The user's labels and freshen's (`built-from`, OCI base annotations), which re-seed state.
    pub labels: HashMap<String, String>,
    /// Bypass the engine's cache (`nocache`).
    pub no_cache: bool,
    /// Replaces secret build arg values by `***` in the build output lines the engine logs.
    pub redactor: Redactor,
    /// Longest the whole build may take (`build_timeout`).
    pub timeout: std::time::Duration,
    /// Longest the engine's stream may stay silent (`build_idle_timeout`).
    pub idle_timeout: std::time::Duration,
    /// Which builder runs it ([`Builder::choose`]).
    pub builder: Builder,
    /// The registry images the build uses (its bases): their registries'
    /// credentials go with the build, as `X-Registry-Config` or on the BuildKit session.
    pub images: Vec<ImageRef>,
    /// BuildKit secrets by ID, for `RUN --mount=type=secret`: served on the build's session, never sent otherwise.
    pub secrets: std::collections::BTreeMap<String, crate::config::SecretValue>,
    /// The saved build log (`logs/<build>/<time>.log`) the output lines are appended to, redacted; none when `keep_logs` is 0.
    pub log: Option<PathBuf>,
}

/// The engine operations freshen uses.
#[async_trait]
pub trait Engine: Send + Sync {
    /// The engine's platform, `os/arch` (Engine API: `GET /version`).
    ///
    /// # Errors
    /// [`EngineError::Unreachable`] when the engine does not answer.
    async fn platform(&self) -> Result<String, EngineError>;

    /// Whether the engine runs BuildKit builds, as the docker CLI decides: a
    /// Linux engine that speaks Engine API 1.39 or later.
    fn has_buildkit(&self) -> bool;

    /// Inspects `reference` (a tag or ID); `Ok(None)` when the engine has no such image.
    ///
    /// # Errors
    /// [`EngineError`] on any other failure.
    async fn inspect(&self, reference: &str) -> Result<Option<ImageInfo>, EngineError>;

    /// Pulls `image` (Engine API: `POST /images/create`), for `platform` when given.
    ///
    /// # Errors
    /// [`EngineError`] when the pull fails.
    async fn pull(&self, image: &ImageRef, platform: Option<&str>) -> Result<(), EngineError>;

    /// Builds `request` and applies every tag; returns the new image ID.
    ///
    /// # Errors
    /// [`EngineError::Build`] with the last lines of output when the build fails,
    /// [`EngineError::Context`] when the context cannot be archived.
    async fn build(&self, request: &BuildRequest) -> Result<String, EngineError>;
}
