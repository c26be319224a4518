//! The Docker engine, behind the small [`Engine`] trait. The bollard
//! implementation ([`DockerEngine`]; its containers and image housekeeping in
//! `container`), its BuildKit progress renderer and freshen's own BuildKit
//! session (for secrets) are the only places bollard and its BuildKit types are imported.

mod container;
pub mod context;
mod docker;
mod lines;
mod output;
mod pool;
mod progress;
mod session;

use std::collections::HashMap;
use std::path::PathBuf;

use async_trait::async_trait;

use crate::config::{BuilderChoice, Redactor};
pub use crate::error::EngineError;
use crate::reference::ImageRef;
pub use docker::DockerEngine;
pub use pool::{Pool, PoolEngine, ANSWER_TIMEOUT, DEFAULT_ENGINE};

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
    /// The build's tags: the classic builder gets their registries' credentials too.
    /// The build leaves its image untagged; [`Engine::move_tags`] moves them.
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

/// A test gate to run on a newly built image: a container created from the
/// image, started, waited for, and always removed (Engine API: `POST
/// /containers/create`, `…/start`, `GET …/logs`, `POST …/wait`, `DELETE /containers/{id}`).
#[derive(Debug, Clone)]
pub struct TestRequest {
    /// The build's name, so that the test's output lines can be told apart in the log.
    pub name: String,
    /// The image ID to test: the tags have not moved to it yet.
    pub image: String,
    /// The command, timeout, environment and network.
    pub gate: crate::config::TestGate,
    /// The container's labels: freshen's, so that a container left by a killed freshen is found and removed at start.
    pub labels: HashMap<String, String>,
    /// Replaces secrets by `***` in the output lines logged and saved.
    pub redactor: Redactor,
    /// The saved build log the test's output is appended to.
    pub log: Option<PathBuf>,
}

/// How a test gate's container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestResult {
    /// It exited with this code; 0 passes.
    Exited {
        /// The exit code.
        code: i64,
        /// The last lines of its output.
        tail: String,
    },
    /// It ran past the gate's timeout and was killed.
    TimedOut {
        /// The last lines of its output.
        tail: String,
    },
}

/// A local image found by its labels (Engine API: `GET /images/json?filters={"label":[…]}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledImage {
    /// The image ID (`sha256:…`).
    pub id: String,
    /// When the image was created, seconds since the Unix epoch: cleanup keeps the newest.
    pub created: i64,
    /// Its tags (`RepoTags`), without `<none>:<none>`: a tagged image is never removed.
    pub tags: Vec<String>,
}

/// The engine operations freshen uses.
#[async_trait]
pub trait Engine: Send + Sync {
    /// The engine's platform, `os/arch` (Engine API: `GET /version`).
    ///
    /// # Errors
    /// [`EngineError::Unreachable`] when the engine does not answer.
    async fn platform(&self) -> Result<String, EngineError>;

    /// Asks whether the engine answers now (Engine API: `GET /_ping`), for `/readyz`.
    ///
    /// # Errors
    /// [`EngineError::Unreachable`] when it does not; [`EngineError::Api`] when it answers with an error.
    async fn ping(&self) -> Result<(), EngineError>;

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

    /// Pushes `tag` (Engine API: `POST /images/{name}/push?tag=…`) with the
    /// registry's credentials in `X-Registry-Auth`; returns the manifest digest
    /// the registry stored, read from the engine's `<tag>: digest: sha256:… size: N`
    /// status line (bollard's `PushImageInfo` has no `aux`).
    ///
    /// # Errors
    /// [`EngineError::Api`] with the engine's or the registry's message when the push fails
    /// or the engine reports no digest, or when it has not ended within `timeout` (the engine
    /// retries a failing upload for minutes; dropping the request cancels the push);
    /// [`EngineError::Unreachable`] when the engine does not answer.
    async fn push(&self, tag: &ImageRef, timeout: std::time::Duration) -> Result<String, EngineError>;

    /// Points every tag at image `id`, or none: if one tag fails, the tags
    /// already moved are put back (Engine API: `POST /images/{id}/tag`).
    ///
    /// # Errors
    /// [`EngineError::Api`] naming the tag that failed; no tag has moved then.
    async fn move_tags(&self, id: &str, tags: &[ImageRef]) -> Result<(), EngineError>;

    /// Runs a test gate ([`TestRequest`]) and removes its container, whatever happens.
    ///
    /// # Errors
    /// [`EngineError`] when the container cannot be created or started (a
    /// command that does not exist in the image is this, with the engine's words).
    async fn run_test(&self, request: &TestRequest) -> Result<TestResult, EngineError>;

    /// Local images that carry every label of `labels` (name, value), any order.
    ///
    /// # Errors
    /// [`EngineError`] when the engine does not answer.
    async fn images_labelled(&self, labels: &[(&str, &str)]) -> Result<Vec<LabelledImage>, EngineError>;

    /// Removes image `id` when nothing uses it (Engine API: `DELETE /images/{id}`
    /// without `force`, so a container using it or a child image keeps it).
    /// Returns `false` when the engine refused because it is in use (409).
    ///
    /// # Errors
    /// [`EngineError`] on any other failure.
    async fn remove_image(&self, id: &str) -> Result<bool, EngineError>;

    /// Removes every container, running or not, with label `name=value`
    /// (`force`); returns how many. Test gate containers left by a killed freshen go this way.
    ///
    /// # Errors
    /// [`EngineError`] when the engine does not answer.
    async fn remove_containers_labelled(&self, name: &str, value: &str) -> Result<usize, EngineError>;

    /// Builds `request`, untagged; returns the new image ID. The caller moves
    /// the tags ([`Engine::move_tags`]) once the test gate, if any, has passed.
    ///
    /// # Errors
    /// [`EngineError::Build`] with the last lines of output when the build fails,
    /// [`EngineError::Context`] when the context cannot be archived.
    async fn build(&self, request: &BuildRequest) -> Result<String, EngineError>;
}
