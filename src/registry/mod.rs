//! Digest checks against registries, behind the small [`Registry`] trait.
//!
//! The check is one `HEAD /v2/<name>/manifests/<reference>` (OCI distribution
//! spec, "Checking if content exists in the registry"), reading
//! `Docker-Content-Digest`. A HEAD does not count as a pull against Docker
//! Hub's rate limit; a manifest GET does, so none is sent.

mod auth;
mod http;

use async_trait::async_trait;

use crate::reference::ImageRef;
pub use http::HttpRegistry;

/// Media types accepted, so that the registry answers with the digest of the
/// index or manifest list when there is one (OCI image spec, "Media types";
/// Docker "Image Manifest V2, Schema 2").
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// A digest check that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Connection refused, DNS failure, TLS failure or timeout.
    #[error("registry {registry} unreachable: {message}")]
    Unreachable {
        /// Registry host.
        registry: String,
        /// What happened.
        message: String,
    },
    /// The registry does not know the repository or tag (404).
    #[error("{image} not found in its registry")]
    NotFound {
        /// The image.
        image: String,
    },
    /// Authentication failed or is needed (401/403).
    #[error("registry {registry} refused access to {image}: {message}; log in with `docker login {registry}`")]
    Auth {
        /// Registry host.
        registry: String,
        /// The image.
        image: String,
        /// What the registry said.
        message: String,
    },
    /// Any other answer the check cannot use.
    #[error("registry {registry} answered {status} for {image}")]
    Status {
        /// Registry host.
        registry: String,
        /// The image.
        image: String,
        /// HTTP status.
        status: u16,
    },
    /// The answer had no `Docker-Content-Digest` header.
    #[error("registry {registry} sent no Docker-Content-Digest for {image}")]
    NoDigest {
        /// Registry host.
        registry: String,
        /// The image.
        image: String,
    },
}

impl RegistryError {
    /// True for failures worth retrying within the cycle: connection errors and 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. } => true,
            RegistryError::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// A source of current manifest digests.
#[async_trait]
pub trait Registry: Send + Sync {
    /// The current digest of `image` (`sha256:…`), the index digest for multi-platform images.
    ///
    /// # Errors
    /// [`RegistryError`]: unreachable, not found, refused, or an unusable answer.
    async fn head_digest(&self, image: &ImageRef) -> Result<String, RegistryError>;
}
