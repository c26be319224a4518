//! The Docker engine, behind the small [`Engine`] trait. The bollard
//! implementation ([`DockerEngine`]) is the only place bollard is imported.

pub mod context;
mod docker;

use std::collections::HashMap;
use std::path::PathBuf;

use async_trait::async_trait;

use crate::config::Redactor;
pub use crate::error::EngineError;
use crate::reference::ImageRef;
pub use docker::DockerEngine;

/// What freshen needs to know of a local image (Engine API: `GET /images/{name}/json`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageInfo {
    /// Image ID, `sha256:…`.
    pub id: String,
    /// `RepoDigests`: `name@sha256:…` for each registry digest the image was pulled or pushed as.
    pub repo_digests: Vec<String>,
    /// Image labels.
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

/// One build to run (Engine API: `POST /build`).
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// Build name, for logs.
    pub name: String,
    /// Absolute path of the build context folder.
    pub context: PathBuf,
    /// Absolute path of the Dockerfile (inside or outside the context).
    pub dockerfile: PathBuf,
    /// Tags; the first is passed as `t`, the rest applied with `tag_image`.
    pub tags: Vec<ImageRef>,
    /// Build args.
    pub build_args: HashMap<String, String>,
    /// Target stage.
    pub target: Option<String>,
    /// Target platform.
    pub platform: Option<String>,
    /// Labels, freshen's own included.
    pub labels: HashMap<String, String>,
    /// Build without cache.
    pub no_cache: bool,
    /// Replaces secret build arg values by `***` in the build output lines the engine logs.
    pub redactor: Redactor,
}

/// The engine operations freshen uses.
#[async_trait]
pub trait Engine: Send + Sync {
    /// The engine's platform, `os/arch` (Engine API: `GET /version`).
    ///
    /// # Errors
    /// [`EngineError::Unreachable`] when the engine does not answer.
    async fn platform(&self) -> Result<String, EngineError>;

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
