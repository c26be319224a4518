//! Digest checks against registries, behind the small [`Registry`] trait.
//!
//! The check is one `HEAD /v2/<name>/manifests/<reference>` (OCI distribution
//! spec, "Checking if content exists in the registry"), reading
//! `Docker-Content-Digest` and `Content-Type`. A HEAD does not count as a pull
//! against Docker Hub's rate limit; a manifest GET does. So [`check`] sends a
//! GET only when the top-level digest changed and the manifest is an index or
//! manifest list, to learn the child manifest digest of each platform: a
//! multi-platform image whose other platforms were re-pushed is not a change.

mod auth;
mod http;

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::reference::ImageRef;
pub use http::HttpRegistry;

/// Media types accepted, so that the registry answers with the digest of the
/// index or manifest list when there is one (OCI image spec, "Media types";
/// Docker "Image Manifest V2, Schema 2").
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Media types of multi-platform manifests.
pub const INDEX_MEDIA_TYPES: [&str; 2] =
    ["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"];

pub use crate::error::RegistryError;

/// Rate-limit headers (`RateLimit-Limit: 100;w=21600`, `RateLimit-Remaining: 76;w=21600`,
/// as Docker Hub sends them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Requests allowed per window: with `remaining`, how close the registry is to refusing.
    pub limit: u64,
    /// Requests left in the window: under `rate_limit_reserve`, checks are spaced out.
    pub remaining: u64,
    /// Window length in seconds (`w=`), when given: when the quota comes back.
    pub window_secs: Option<u64>,
}

/// What a manifest HEAD says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// `Docker-Content-Digest`: the digest compared with the last one.
    pub digest: String,
    /// `Content-Type`: an index's is followed by one GET for its platforms' digests.
    pub media_type: String,
    /// Rate-limit headers, when present: kept in state to spare the quota.
    pub rate_limit: Option<RateLimit>,
}

/// The registry operations freshen uses.
#[async_trait]
pub trait Registry: Send + Sync {
    /// `HEAD /v2/<name>/manifests/<tag or digest>`.
    ///
    /// # Errors
    /// [`RegistryError`]: unreachable, not found, refused, rate limited, or an unusable answer.
    async fn head(&self, image: &ImageRef) -> Result<Head, RegistryError>;

    /// `GET /v2/<name>/manifests/<digest>` of an index or manifest list; returns
    /// each child manifest's platform (`os/arch[/variant]`) → digest.
    ///
    /// # Errors
    /// As [`Registry::head`], and [`RegistryError::Protocol`] when the body is not an index.
    async fn index(&self, image: &ImageRef, digest: &str) -> Result<BTreeMap<String, String>, RegistryError>;

    /// `GET /v2/<name>/manifests/<digest>` of an image manifest; returns its config
    /// descriptor's digest, which is the image ID an engine shows for it (OCI image
    /// spec, "Image Manifest": `config`; "Image ID": the digest of the config).
    ///
    /// # Errors
    /// As [`Registry::head`], and [`RegistryError::Protocol`] when the body is not an image manifest.
    async fn config_digest(&self, image: &ImageRef, digest: &str) -> Result<String, RegistryError>;
}

/// Told of every HTTP request the registry client sends, for metrics
/// (`freshen_registry_requests_total`).
pub trait Observer: Send + Sync + std::fmt::Debug {
    /// One request to `registry` (the host as references name it) with `method`
    /// (`HEAD`, `GET`); `status` is the HTTP status code, `None` when no answer came
    /// (a connection error or a timeout).
    fn request(&self, registry: &str, method: &str, status: Option<u16>);
}

/// A successful check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The top-level digest (the index's for multi-platform images): next cycle's baseline.
    pub digest: String,
    /// Platform → child manifest digest, for an index (else empty): what a build on that platform compares.
    pub platforms: BTreeMap<String, String>,
    /// Rate-limit headers of the HEAD, kept in state.
    pub rate_limit: Option<RateLimit>,
}

/// Checks `image`: one HEAD; then, only if the digest differs from `known`
/// (last digest and platform map) and the manifest is an index, one GET of the index.
///
/// # Errors
/// Whatever [`Registry::head`] or [`Registry::index`] return.
pub async fn check(
    registry: &dyn Registry,
    image: &ImageRef,
    known: Option<(&str, &BTreeMap<String, String>)>,
) -> Result<Checked, RegistryError> {
    let head = registry.head(image).await?;
    if let Err(message) = validate_digest(&head.digest) {
        return Err(RegistryError::Protocol { registry: image.registry().to_string(), image: image.to_string(), message });
    }
    let is_index = INDEX_MEDIA_TYPES.iter().any(|m| head.media_type.starts_with(m));
    let platforms = match known {
        _ if !is_index => BTreeMap::new(),
        Some((digest, platforms)) if digest == head.digest && !platforms.is_empty() => platforms.clone(),
        _ => registry.index(image, &head.digest).await?,
    };
    Ok(Checked { digest: head.digest, platforms, rate_limit: head.rate_limit })
}

/// Largest body read from a registry (a token response, an index), in bytes (4 MiB).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Checks `digest` against the OCI digest grammar, with a registered algorithm
/// (OCI image spec, "Digests": `sha256` is 64 lowercase hex characters, `sha512` 128),
/// parsed by `oci-spec`. A digest that fails is never stored, logged in full or put in a URL.
///
/// # Errors
/// A message saying what is wrong, with at most the first 80 characters of `digest`.
pub fn validate_digest(digest: &str) -> Result<(), String> {
    use oci_spec::image::{Digest, DigestAlgorithm};
    let shown: String = digest.chars().take(80).collect::<String>().escape_default().to_string();
    let more = if digest.chars().count() > 80 { "…" } else { "" };
    match digest.parse::<Digest>() {
        Ok(d) if matches!(d.algorithm(), DigestAlgorithm::Sha256 | DigestAlgorithm::Sha384 | DigestAlgorithm::Sha512) => Ok(()),
        Ok(d) => Err(format!("digest \"{shown}{more}\" uses algorithm {}, not sha256, sha384 or sha512", d.algorithm())),
        Err(e) => Err(format!("digest \"{shown}{more}\" is not a valid digest ({e})")),
    }
}

/// The longest wait a registry can impose through `Retry-After` or a rate-limit
/// window (`w=`), in seconds (24 h): a larger value, even `u64::MAX`, is capped to
/// it with a warning, so no header can stop checks for good or overflow a clock.
pub const MAX_REGISTRY_WAIT_SECS: u64 = 24 * 3600;

/// Parses `RateLimit-Limit` and `RateLimit-Remaining` values (`100;w=21600`); the
/// window is capped at [`MAX_REGISTRY_WAIT_SECS`].
pub fn parse_rate_limit(limit: Option<&str>, remaining: Option<&str>) -> Option<RateLimit> {
    let number = |s: &str| s.split(';').next()?.trim().parse::<u64>().ok();
    let window =
        |s: &str| s.split(';').find_map(|p| p.trim().strip_prefix("w=")?.parse::<u64>().ok()).map(|w| w.min(MAX_REGISTRY_WAIT_SECS));
    let (l, r) = (limit?, remaining?);
    Some(RateLimit { limit: number(l)?, remaining: number(r)?, window_secs: window(r).or_else(|| window(l)) })
}

/// The config descriptor's digest of an OCI image manifest or Docker image manifest v2.
///
/// # Errors
/// A message when `body` is not an image manifest or its config digest is not valid.
pub fn parse_config_digest(body: &[u8]) -> Result<String, String> {
    let manifest = oci_spec::image::ImageManifest::from_reader(body).map_err(|e| format!("image manifest does not parse: {e}"))?;
    let digest = manifest.config().digest().to_string();
    validate_digest(&digest).map_err(|e| format!("manifest config: {e}"))?;
    Ok(digest)
}

/// Platform → digest for the children of an OCI image index or Docker manifest
/// list; children without a platform, or `unknown/unknown` ones (attestations), are left out.
///
/// # Errors
/// A message when `body` is not an index.
pub fn parse_index(body: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let index = oci_spec::image::ImageIndex::from_reader(body).map_err(|e| format!("manifest index does not parse: {e}"))?;
    let mut out = BTreeMap::new();
    for m in index.manifests() {
        let Some(p) = m.platform() else { continue };
        let (os, arch) = (p.os().to_string(), p.architecture().to_string());
        if os == "unknown" || arch == "unknown" {
            continue;
        }
        let key = match p.variant() {
            Some(v) if !v.is_empty() => format!("{os}/{arch}/{v}"),
            _ => format!("{os}/{arch}"),
        };
        let digest = m.digest().to_string();
        validate_digest(&digest).map_err(|e| format!("index child for {key}: {e}"))?;
        out.entry(key).or_insert(digest);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_headers() {
        assert_eq!(
            parse_rate_limit(Some("100;w=21600"), Some("76;w=21600")),
            Some(RateLimit { limit: 100, remaining: 76, window_secs: Some(21600) })
        );
        assert_eq!(parse_rate_limit(Some("100"), None), None);
        assert!(validate_digest(&format!("sha256:{}", "a".repeat(64))).is_ok());
        for bad in
            ["sha256:xyz", "md5:d41d8cd98f00b204e9800998ecf8427e", "../../../../token?steal=1#", &format!("sha256:{}", "a".repeat(300_000))]
        {
            let e = validate_digest(bad).unwrap_err();
            assert!(e.len() < 300, "never shown in full: {e}");
        }
        let huge = parse_rate_limit(Some("100"), Some("0;w=9223372036854775807")).unwrap();
        assert_eq!(huge.window_secs, Some(MAX_REGISTRY_WAIT_SECS), "a window is capped at 24 h");
    }

    #[test]
    fn index_platforms() {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[
          {"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","size":1,"platform":{"architecture":"amd64","os":"linux"}},
          {"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","size":1,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}},
          {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc","size":1,"platform":{"architecture":"unknown","os":"unknown"}}]}"#;
        let p = parse_index(body).unwrap();
        assert_eq!(p.len(), 2);
        assert!(p["linux/amd64"].starts_with("sha256:a"));
        assert!(p["linux/arm64/v8"].starts_with("sha256:b"));
    }
}
