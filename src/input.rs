//! What a build depends on (its [`Input`]s) and what a check saw of one (an
//! [`Observation`]). Pure: no I/O.
//!
//! One shape runs from the check to the decision: the check makes an
//! [`Observation`], state keeps it, and the plan compares the digest that
//! [`Observation::for_platform`] chooses, the one place a platform's digest is chosen.
//!
//! An input is an image, a build's local build context, or a git ref. A new
//! kind is a new variant here, a new check in `check.rs`, and a new state key
//! form ([`Input::key`]); the plan, the graph and state take it as they are.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::CheckError;
use crate::reference::ImageRef;

/// One thing a build depends on, whose change rebuilds it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Input {
    /// An image the build uses (a base, or an `additional_images` entry), by normalised reference.
    Image(ImageRef),
    /// The build context of the build this names (its files that `.dockerignore`
    /// keeps, and its Dockerfile), by content digest: an edit rebuilds the build.
    Context(String),
    /// A branch (or ref) of a git repository, by the commit it points at: a new commit rebuilds
    /// the builds made from it (those with `paths`, only when one of them changed).
    Git {
        /// The repository's URL.
        url: String,
        /// The full ref name (`refs/heads/main`).
        git_ref: String,
    },
}

impl Input {
    /// The image, for an image input.
    pub fn image(&self) -> Option<&ImageRef> {
        match self {
            Input::Image(i) => Some(i),
            Input::Context(_) | Input::Git { .. } => None,
        }
    }

    /// The key under which state records this input: `image:<normalised reference>`,
    /// `context:<build>` or `git:<url>#<full ref>`. The prefix names the kind, so every kind fits the same map.
    pub fn key(&self) -> String {
        match self {
            Input::Image(i) => format!("image:{i}"),
            Input::Context(b) => format!("context:{b}"),
            Input::Git { url, git_ref } => format!("git:{url}#{git_ref}"),
        }
    }

    /// Parses a [`Input::key`].
    ///
    /// # Errors
    /// A message naming the key, when its kind is unknown or its image reference is invalid.
    pub fn from_key(key: &str) -> Result<Input, String> {
        match key.split_once(':') {
            Some(("image", r)) => ImageRef::parse(r).map(Input::Image).map_err(|e| format!("state key {key:?}: {e}")),
            Some(("context", b)) if !b.is_empty() => Ok(Input::Context(b.to_string())),
            Some(("git", g)) => match g.rsplit_once('#') {
                Some((url, r)) if !url.is_empty() && r.starts_with("refs/") => Ok(Input::Git { url: url.into(), git_ref: r.into() }),
                _ => Err(format!("state key {key:?}: expected `git:<url>#refs/<ref>`")),
            },
            _ => Err(format!(
                "state key {key:?}: unknown kind of input; expected `image:<reference>`, `context:<build>` or `git:<url>#refs/<ref>`"
            )),
        }
    }
}

impl fmt::Display for Input {
    /// The input as people read it: an image's normalised reference, `build context of <build>`,
    /// or a git ref's `<url> <full ref>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::Image(i) => f.write_str(i.as_str()),
            Input::Context(b) => write!(f, "build context of {b}"),
            Input::Git { url, git_ref } => write!(f, "{url} {git_ref}"),
        }
    }
}

impl Serialize for Input {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.key())
    }
}

impl<'de> Deserialize<'de> for Input {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let key = String::deserialize(d)?;
        Input::from_key(&key).map_err(serde::de::Error::custom)
    }
}

/// Where an observed digest came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DigestSource {
    /// `Docker-Content-Digest` of the registry's manifest (OCI distribution spec).
    Registry,
    /// The engine's local image ID, for a base the registry does not serve.
    Local,
    /// The image ID of another build's output.
    Build,
    /// The digest pinned in the reference itself. No longer recorded (pinned
    /// images are not watched); kept so that older state files still load.
    Pinned,
    /// The content digest of a build context's files ([`crate::context::ContextDigests`]).
    Context,
    /// The commit a git ref points at, from the repository's ref listing.
    Git,
}

impl fmt::Display for DigestSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DigestSource::Registry => "registry",
            DigestSource::Local => "engine's local image",
            DigestSource::Build => "engine's image of another build",
            DigestSource::Pinned => "pinned reference",
            DigestSource::Context => "build context's files",
            DigestSource::Git => "git repository",
        })
    }
}

/// What a check saw of one input: made by the check, kept in state, compared by the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// The top-level digest (`sha256:…`), the index's for a multi-platform image:
    /// what the next check compares, and what the engine's `RepoDigests` show after a pull.
    pub digest: String,
    /// Tells a registry outage from a change: a registry-served image is never
    /// replaced by the engine's local ID.
    pub source: DigestSource,
    /// When it was last seen, seconds since the Unix epoch: spaces out checks under a rate limit.
    pub seen_at: u64,
    /// When this digest was first seen, seconds since the Unix epoch: the settle window counts from it.
    #[serde(default)]
    pub since: u64,
    /// Platform (`os/arch[/variant]`) → child manifest digest, for an index: a
    /// re-push of other platforms is then not a change for a build.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub platforms: BTreeMap<String, String>,
    /// For a git ref: a build's `paths` (joined by newlines) → the digest of what they hold in
    /// the commit ([`crate::git::GitCache::paths_digests`]): a commit that leaves them alone is not a change for that build.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub paths: BTreeMap<String, String>,
    /// For a git ref: the remote's tags on the commit (`v1.2.3`), from the same listing:
    /// `{semver.…}` tag templates are rendered from them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl Observation {
    /// The digest a build on `platform` (`os/arch[/variant]`) is built from: the child
    /// manifest's for an index that has one for the platform, else the top-level digest.
    /// The one place a platform's digest is chosen.
    pub fn for_platform(&self, platform: &str) -> &str {
        select_platform(&self.platforms, platform).unwrap_or(&self.digest)
    }

    /// The digest a build compares: for a git ref and a build with `paths` (their
    /// [`crate::config::GitSource::paths_key`]), the digest of what those paths hold;
    /// else the platform's ([`Observation::for_platform`]).
    pub fn for_build(&self, platform: &str, paths_key: Option<&str>) -> &str {
        match paths_key.and_then(|k| self.paths.get(k)) {
            Some(d) => d,
            None => self.for_platform(platform),
        }
    }
}

/// One input's check in a cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The digest state held before this cycle, shown beside the new one.
    pub old: Option<String>,
    /// What the check saw, or why it could not.
    pub seen: Result<Observation, CheckError>,
    /// The check was not made this cycle (to spare the registry's rate-limit
    /// reserve, or because the cycle checked only the inputs a trigger named);
    /// `seen` is the last observation.
    pub deferred: bool,
    /// The local image ID this input was last seen under, when the registry now
    /// serves that same image under `seen`'s digest (a base built here, then pushed):
    /// builds recorded on that ID are not rebuilt, and their records move to the digest.
    pub replaces: Option<String>,
}

/// The child digest for `platform` (`os/arch[/variant]`): an exact match, else the
/// first child with the same `os/arch` (as the engine picks when no variant is asked for).
pub fn select_platform<'a>(platforms: &'a BTreeMap<String, String>, platform: &str) -> Option<&'a str> {
    if let Some(d) = platforms.get(platform) {
        return Some(d);
    }
    let os_arch = |p: &str| p.split('/').take(2).collect::<Vec<_>>().join("/");
    let wanted = os_arch(platform);
    platforms.iter().find(|(k, _)| os_arch(k) == wanted).map(|(_, d)| d.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let i = Input::Image(ImageRef::parse("debian:bookworm").unwrap());
        assert_eq!(i.key(), "image:docker.io/library/debian:bookworm");
        assert_eq!(Input::from_key(&i.key()).unwrap(), i);
        assert_eq!(i.to_string(), "docker.io/library/debian:bookworm");
        assert!(Input::from_key("svn:https://x").unwrap_err().contains("unknown kind"));
        assert!(Input::from_key("git:https://x").unwrap_err().contains("git:<url>#refs/<ref>"));
        let g = Input::Git { url: "https://h/a.git".into(), git_ref: "refs/heads/main".into() };
        assert_eq!(Input::from_key(&g.key()).unwrap(), g);
        assert!(Input::from_key("image:UPPER").is_err());
        let c = Input::Context("api".into());
        assert_eq!((c.key().as_str(), c.to_string().as_str()), ("context:api", "build context of api"));
        assert_eq!(Input::from_key("context:api").unwrap(), c);
    }

    #[test]
    fn platform_digest() {
        let platforms: BTreeMap<String, String> =
            [("linux/amd64".to_string(), "sha256:a".to_string()), ("linux/arm64/v8".to_string(), "sha256:b".to_string())].into();
        let o = Observation {
            digest: "sha256:top".into(),
            source: DigestSource::Registry,
            seen_at: 0,
            since: 0,
            platforms,
            paths: BTreeMap::new(),
            tags: Vec::new(),
        };
        assert_eq!(o.for_platform("linux/amd64"), "sha256:a");
        assert_eq!(o.for_platform("linux/arm64"), "sha256:b");
        assert_eq!(o.for_platform("linux/s390x"), "sha256:top");
    }
}
