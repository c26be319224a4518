//! Image references: parse, normalise and compare, the way the Docker CLI does.
//!
//! Parsing and normalisation are delegated to `oci_spec::distribution::Reference`,
//! which implements the grammar of distribution/reference (`reference.go`) and
//! Docker's normalisation (`normalize.go`): `alpine` becomes
//! `docker.io/library/alpine:latest`, `index.docker.io/x` becomes `docker.io/x`,
//! and `localhost:5000/a/b` keeps its registry. This module adds what freshen
//! needs on top: a stable string form used as a map key, pinning, and the
//! address and scheme used to reach the registry. Pure: no I/O.

use std::fmt;
use std::net::IpAddr;

use oci_spec::distribution::Reference;

/// A normalised image reference such as `docker.io/library/alpine:3.20`.
///
/// Two `ImageRef`s are equal when their normalised strings are equal, so
/// `alpine`, `library/alpine:latest` and `docker.io/library/alpine` compare equal.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    /// The normalised text, `registry/repository[:tag][@digest]`; the key in maps and state.
    normalised: String,
    /// Registry host, with port when given (`docker.io`, `localhost:5000`, `[::1]:5000`).
    registry: String,
    /// Repository path inside the registry (`library/alpine`).
    repository: String,
    /// Tag, when the reference has one (`latest` is filled in when neither tag nor digest is given).
    tag: Option<String>,
    /// Digest (`sha256:…`), when the reference is pinned.
    digest: Option<String>,
}

/// A reference that Docker would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {text:?}: {reason} (see https://docs.docker.com/reference/cli/docker/image/tag/ for the format: [registry/]repository[:tag][@digest], lowercase)")]
pub struct ReferenceError {
    /// The text that failed to parse.
    pub text: String,
    /// What the parser said.
    pub reason: String,
}

impl ImageRef {
    /// Parses and normalises `text` as Docker does.
    ///
    /// # Errors
    /// [`ReferenceError`] when `text` is empty, has uppercase letters in the
    /// repository, has an invalid tag or digest, or is otherwise not a reference
    /// under the distribution/reference grammar.
    pub fn parse(text: &str) -> Result<Self, ReferenceError> {
        let err = |reason: String| ReferenceError { text: text.to_string(), reason };
        if text.trim() != text || text.is_empty() {
            return Err(err("empty or surrounded by whitespace".into()));
        }
        let (ipv6_registry, parse_text) = split_ipv6_registry(text).map_err(|r| err(r.into()))?;
        let r = Reference::try_from(parse_text.as_str()).map_err(|e| err(e.to_string()))?;
        if r.repository().chars().any(|c| c.is_ascii_uppercase()) {
            return Err(err("repository name must be lowercase".into()));
        }
        let registry = ipv6_registry.unwrap_or_else(|| r.registry().to_string());
        let normalised = match &ipv6_registry_display(&registry, &r) {
            Some(n) => n.clone(),
            None => r.whole(),
        };
        Ok(ImageRef {
            normalised,
            registry,
            repository: r.repository().to_string(),
            tag: r.tag().map(str::to_string),
            digest: r.digest().map(str::to_string),
        })
    }

    /// The normalised text, e.g. `docker.io/library/alpine:latest`.
    pub fn as_str(&self) -> &str {
        &self.normalised
    }

    /// Registry host as written in references (`docker.io`, `localhost:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Repository path (`library/alpine`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if the reference is digest-pinned.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// True when the reference carries a digest: its content cannot change,
    /// so it is never polled (Docker docs, "Pin base image versions").
    pub fn is_pinned(&self) -> bool {
        self.digest.is_some()
    }

    /// The manifest reference for `/v2/<name>/manifests/<reference>`: the digest
    /// when pinned, else the tag (OCI distribution spec, "Pulling manifests").
    pub fn manifest_reference(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }

    /// `registry/repository` without tag or digest, as it appears before `@` in RepoDigests.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The host to send API requests to: Docker Hub's API lives at
    /// `registry-1.docker.io`, every other registry at its own name.
    pub fn api_host(&self) -> &str {
        if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    /// True when the registry is on a loopback address (`localhost`, 127.0.0.0/8,
    /// `::1`), which Docker reaches over plain HTTP by default (dockerd docs,
    /// "Insecure registries": 127.0.0.0/8 is insecure out of the box).
    pub fn is_loopback_registry(&self) -> bool {
        is_loopback_host(&self.registry)
    }

    /// The API host ([`ImageRef::api_host`]) without its port or IPv6 brackets:
    /// `registry-1.docker.io`, `127.0.0.1`, `::1`.
    pub fn api_host_name(&self) -> &str {
        host_without_port(self.api_host())
    }
}

/// True when `host` (a host name or address, with or without `:port` and IPv6
/// brackets) is `localhost` or a loopback address (127.0.0.0/8, `::1`).
pub fn is_loopback_host(host: &str) -> bool {
    let host = host_without_port(host);
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Placeholder registry used to parse references whose registry is an IPv6 literal.
const IPV6_PLACEHOLDER: &str = "ipv6.placeholder.invalid";

/// Splits an IPv6 registry (`[::1]:5000/app:1`) off `text`.
///
/// `oci-spec` 0.10 does not implement the IPv6 host form that
/// distribution/reference accepts since v2.8 (`ipv6address = \[[a-fA-F0-9:]+\]`),
/// so the bracketed host is validated here and the rest is parsed by oci-spec
/// behind a placeholder host.
fn split_ipv6_registry(text: &str) -> Result<(Option<String>, String), &'static str> {
    if !text.starts_with('[') {
        return Ok((None, text.to_string()));
    }
    let (domain, rest) = text.split_once('/').ok_or("an IPv6 registry must be followed by /repository")?;
    let (host, port) = domain[1..].split_once(']').ok_or("unterminated '[' in IPv6 registry")?;
    let host_ok = !host.is_empty() && host.chars().all(|c| c.is_ascii_hexdigit() || c == ':');
    let port_ok = port.is_empty() || port.strip_prefix(':').is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    if !host_ok || !port_ok {
        return Err("invalid IPv6 registry address");
    }
    Ok((Some(domain.to_string()), format!("{IPV6_PLACEHOLDER}/{rest}")))
}

/// The normalised text with the real IPv6 registry in place of the placeholder.
fn ipv6_registry_display(registry: &str, r: &Reference) -> Option<String> {
    (r.registry() == IPV6_PLACEHOLDER).then(|| r.whole().replacen(IPV6_PLACEHOLDER, registry, 1))
}

/// Strips `:port` and IPv6 brackets: `[::1]:5000` → `::1`, `localhost:5000` → `localhost`.
fn host_without_port(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.split(':').next().unwrap_or(registry)
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.normalised)
    }
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageRef({})", self.normalised)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        ImageRef::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(n("alpine"), "docker.io/library/alpine:latest");
        assert_eq!(n("index.docker.io/x/y"), "docker.io/x/y:latest");
        assert_eq!(n("localhost:5000/a/b"), "localhost:5000/a/b:latest");
        assert_eq!(n("user/app:1"), "docker.io/user/app:1");
        assert_eq!(ImageRef::parse("alpine").unwrap(), ImageRef::parse("docker.io/library/alpine:latest").unwrap());
    }

    #[test]
    fn digest_pins_and_keeps_tag() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("debian:12@{d}")).unwrap();
        assert!(r.is_pinned());
        assert_eq!(r.tag(), Some("12"));
        assert_eq!(r.manifest_reference(), d);
        assert!(!ImageRef::parse("debian:12").unwrap().is_pinned());
    }

    #[test]
    fn rejects_bad_references() {
        assert!(ImageRef::parse("").is_err());
        assert!(ImageRef::parse("Alpine").is_err());
        assert!(ImageRef::parse("a b").is_err());
        assert!(ImageRef::parse("alpine@sha256:short").is_err());
    }

    #[test]
    fn loopback_registries() {
        assert!(ImageRef::parse("localhost:5000/a").unwrap().is_loopback_registry());
        assert!(ImageRef::parse("127.0.0.1:5000/a").unwrap().is_loopback_registry());
        assert!(ImageRef::parse("127.1.2.3:5000/a").unwrap().is_loopback_registry());
        assert!(!ImageRef::parse("registry.example.com/a").unwrap().is_loopback_registry());
        assert_eq!(ImageRef::parse("alpine").unwrap().api_host(), "registry-1.docker.io");
        for (host, loopback) in [
            ("localhost:5000", true),
            ("127.0.0.1", true),
            ("[::1]:5000", true),
            ("[::1]", true),
            ("192.0.2.2:80", false),
            ("registry.example.com", false),
        ] {
            assert_eq!(is_loopback_host(host), loopback, "{host}");
        }
        assert_eq!(ImageRef::parse("[::1]:5000/app:1").unwrap().api_host_name(), "::1");
    }
}
