//! What a registry says was pushed, and which watched inputs it names. Pure: no I/O.
//!
//! Four bodies are read here, each into a list of [`Pushed`] images:
//! - a distribution notification envelope (`{"events": [...]}`, media type
//!   `application/vnd.docker.distribution.events.v1+json` or `…v2+json`; distribution
//!   docs, "Notifications"): a `push` event of a manifest, named by
//!   `request.host` (else `target.url`'s host) + `target.repository` + `target.tag`;
//! - Docker Hub's repository webhook (`repository.repo_name`, `push_data.tag`;
//!   Docker docs, "Webhooks");
//! - Harbor's webhook (`type` `PUSH_ARTIFACT`, `event_data.resources[].resource_url`);
//! - freshen's own `/v1/check` body (`{"images": [...]}` or `{"builds": [...]}`).
//!
//! [`watched`] then keeps the images a build watches, under Docker's
//! normalisation (`debian` is `docker.io/library/debian:latest`), so that
//! pulls, layers, and images no build uses make no trigger at all.

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::input::Input;
use crate::project::Project;
use crate::reference::ImageRef;

/// Largest body read from a client, in bytes (1 MiB): a registry's envelope holds
/// a few events of a few hundred bytes each.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// An image a registry says was pushed: by tag, or (a manifest pushed without one) by digest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pushed {
    /// The normalised reference: `registry/repository:tag` or `registry/repository@digest`.
    pub image: ImageRef,
    /// The manifest digest the event says the tag now names (`target.digest`), when it says one:
    /// the check it triggers is confirmed against it.
    pub digest: Option<String>,
}

/// What a push webhook's body says: the images pushed, and how many of its
/// events named none (pulls, deletes, layers, untagged pushes).
pub type PushEvents = (Vec<Pushed>, usize);

/// A body that cannot be read: what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at {path} (line {line}, column {column}, byte {offset} of the body)")]
pub struct BodyError {
    /// What is wrong, from the JSON parser or the field's rule.
    pub message: String,
    /// The field, as a path from the top (`events[3].target.tag`; `.` for the top).
    pub path: String,
    /// Line of the body, from 1.
    pub line: usize,
    /// Column in that line, from 1.
    pub column: usize,
    /// Byte offset in the body, from 0.
    pub offset: usize,
}

/// Parses `body` as `T`, naming the field and the byte offset of an error.
pub(crate) fn parse<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<T, BodyError> {
    let error = |path: String, e: &serde_json::Error| {
        let (line, column) = (e.line(), e.column());
        BodyError { message: strip_position(&e.to_string()), path, line, column, offset: offset_of(body, line, column) }
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| error(e.path().to_string(), e.inner()))?;
    de.end().map_err(|e| error(".".into(), &e))?;
    Ok(value)
}

/// serde_json's message without its trailing " at line L column C", which [`BodyError`] says itself.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// The byte offset of (`line`, `column`), both from 1, in `body`.
fn offset_of(body: &[u8], line: usize, column: usize) -> usize {
    let start: usize = body.split(|b| *b == b'\n').take(line.saturating_sub(1)).map(|l| l.len() + 1).sum();
    (start + column.saturating_sub(1)).min(body.len())
}

#[derive(Deserialize)]
struct Envelope {
    events: Vec<Event>,
}

#[derive(Deserialize)]
struct Event {
    #[serde(default)]
    action: String,
    #[serde(default)]
    target: Target,
    #[serde(default)]
    request: Request,
}

#[derive(Deserialize, Default)]
struct Target {
    #[serde(default, rename = "mediaType")]
    media_type: String,
    #[serde(default)]
    repository: String,
    #[serde(default)]
    digest: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    url: String,
}

#[derive(Deserialize, Default)]
struct Request {
    #[serde(default)]
    host: String,
}

/// Media types of manifests and indexes: a push of one of these (and not of a
/// layer, a config blob or a signature) can change what a tag names.
const MANIFEST_TYPES: [&str; 5] = [
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
];

/// The hosts by which Docker Hub's registry is reached; references name it `docker.io`.
fn registry_name(host: &str) -> &str {
    match host {
        "registry-1.docker.io" | "index.docker.io" | "registry.hub.docker.com" => "docker.io",
        h => h,
    }
}

/// The host (and port) of `url`, without scheme, user or path.
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority.rsplit_once('@').map_or(authority, |(_, h)| h)
}

/// The images that a distribution notification envelope says were pushed, and
/// how many of its events named none (pulls, deletes, layers, events without a
/// host or with a reference Docker would refuse).
///
/// # Errors
/// [`BodyError`] when the body is not JSON or not an envelope (`events` missing
/// or not a list of objects).
pub fn registry_events(body: &[u8]) -> Result<PushEvents, BodyError> {
    let envelope: Envelope = parse(body)?;
    let mut ignored = 0;
    let mut pushed = Vec::new();
    for e in envelope.events {
        let t = &e.target;
        let is_manifest = MANIFEST_TYPES.contains(&t.media_type.as_str()) || !t.tag.is_empty();
        let host = if e.request.host.is_empty() { url_host(&t.url) } else { e.request.host.as_str() };
        let name = format!("{}/{}", registry_name(host), t.repository);
        let text = match (t.tag.as_str(), t.digest.as_str()) {
            ("", "") => None,
            ("", digest) => Some(format!("{name}@{digest}")),
            (tag, _) => Some(format!("{name}:{tag}")),
        };
        let image = text.filter(|_| e.action == "push" && is_manifest && !host.is_empty() && !t.repository.is_empty());
        let digest = Some(t.digest.clone()).filter(|d| !d.is_empty() && !t.tag.is_empty());
        match image.and_then(|t| ImageRef::parse(&t).ok()) {
            Some(image) => pushed.push(Pushed { image, digest }),
            None => ignored += 1,
        }
    }
    Ok((pushed, ignored))
}

#[derive(Deserialize)]
struct DockerHub {
    repository: HubRepository,
    push_data: HubPushData,
}

#[derive(Deserialize)]
struct HubRepository {
    repo_name: String,
}

#[derive(Deserialize)]
struct HubPushData {
    tag: String,
}

/// The image that a Docker Hub repository webhook says was pushed,
/// `docker.io/<repository.repo_name>:<push_data.tag>`, as the one [`Pushed`]
/// image of the list the other payloads give (none ignored: the payload names one push).
///
/// # Errors
/// [`BodyError`] when the body is not JSON, a field is missing, or the two do
/// not make a reference Docker would accept.
pub fn dockerhub_event(body: &[u8]) -> Result<PushEvents, BodyError> {
    let hub: DockerHub = parse(body)?;
    let text = format!("docker.io/{}:{}", hub.repository.repo_name, hub.push_data.tag);
    let image = ImageRef::parse(&text).map_err(|e| BodyError {
        message: e.to_string(),
        path: "repository.repo_name".into(),
        line: 1,
        column: 1,
        offset: 0,
    })?;
    Ok((vec![Pushed { image, digest: None }], 0))
}

#[derive(Deserialize)]
struct Harbor {
    #[serde(rename = "type")]
    kind: String,
    event_data: HarborData,
}

#[derive(Deserialize)]
struct HarborData {
    #[serde(default)]
    resources: Vec<HarborResource>,
}

#[derive(Deserialize)]
struct HarborResource {
    #[serde(default)]
    digest: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    resource_url: String,
}

/// The images that a Harbor webhook (the "Default" payload format) says were
/// pushed, and how many of its resources named none: a `PUSH_ARTIFACT` event's
/// `event_data.resources[]`, each named by its `resource_url`
/// (`harbor.example.com/project/repository:tag`) with its `digest` to confirm
/// against. Other event types, and resources pushed without a tag, are ignored
/// (Harbor docs, "Configure Webhook Notifications").
///
/// # Errors
/// [`BodyError`] when the body is not JSON, or `type` or `event_data` is missing.
pub fn harbor_event(body: &[u8]) -> Result<PushEvents, BodyError> {
    let harbor: Harbor = parse(body)?;
    let mut ignored = 0;
    let mut pushed = Vec::new();
    for r in harbor.event_data.resources {
        let image = Some(&r.resource_url)
            .filter(|_| harbor.kind == "PUSH_ARTIFACT" && !r.tag.is_empty())
            .and_then(|url| ImageRef::parse(url).ok())
            .filter(|image| image.tag().is_some() && image.digest().is_none());
        match image {
            Some(image) => pushed.push(Pushed { image, digest: Some(r.digest).filter(|d| !d.is_empty()) }),
            None => ignored += 1,
        }
    }
    Ok((pushed, ignored))
}

/// What `POST /v1/check` asks for: images, builds, or (neither) everything.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// Image references to check now.
    #[serde(default)]
    pub images: Vec<String>,
    /// Builds whose watched images to check now.
    #[serde(default)]
    pub builds: Vec<String>,
}

impl CheckRequest {
    /// Parses a `/v1/check` body; an empty body asks for everything.
    ///
    /// # Errors
    /// [`BodyError`] when the body is not JSON, or has a key other than `images` and `builds`.
    pub fn parse(body: &[u8]) -> Result<CheckRequest, BodyError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(CheckRequest::default());
        }
        parse(body)
    }

    /// True when it names nothing: check everything.
    pub fn is_everything(&self) -> bool {
        self.images.is_empty() && self.builds.is_empty()
    }

    /// The inputs it names in `project`.
    ///
    /// # Errors
    /// A message naming each image reference Docker would refuse and each build
    /// the config does not have (with the builds it does have).
    pub fn inputs(&self, project: &Project) -> Result<BTreeSet<Input>, String> {
        let mut out = BTreeSet::new();
        let mut bad = Vec::new();
        for (i, text) in self.images.iter().enumerate() {
            match ImageRef::parse(text) {
                Ok(image) => out.insert(Input::Image(image)),
                Err(e) => {
                    bad.push(format!("images[{i}]: {e}"));
                    continue;
                }
            };
        }
        for (i, name) in self.builds.iter().enumerate() {
            match project.builds.get(name) {
                Some(a) => out.extend(a.inputs.iter().cloned()),
                None => {
                    let names: Vec<&str> = project.builds.keys().map(String::as_str).collect();
                    bad.push(format!("builds[{i}]: no build named {name:?}; builds: {}", names.join(", ")));
                }
            }
        }
        if bad.is_empty() {
            Ok(out)
        } else {
            Err(bad.join("; "))
        }
    }
}

/// The inputs among `pushed` that a build of `project` watches: an image a
/// build itself produces is left out (the graph rebuilds its children), as is
/// every image no build uses.
pub fn watched<'a>(project: &Project, pushed: impl IntoIterator<Item = &'a ImageRef>) -> BTreeSet<Input> {
    let all: BTreeSet<&Input> = project.builds.values().flat_map(|a| a.inputs.iter()).collect();
    pushed
        .into_iter()
        .map(|i| Input::Image(i.clone()))
        .filter(|i| all.contains(i) && i.image().is_some_and(|im| project.producer_of(im).is_none()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(events: &str) -> Vec<u8> {
        format!(r#"{{"events": [{events}]}}"#).into_bytes()
    }

    #[test]
    fn push_events_of_manifests_name_images() {
        let body = envelope(
            r#"{"action": "push", "target": {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "repository": "base", "tag": "1", "digest": "sha256:aa"}, "request": {"host": "127.0.0.1:5000"}},
               {"action": "pull", "target": {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "repository": "base", "tag": "1"}, "request": {"host": "127.0.0.1:5000"}},
               {"action": "push", "target": {"mediaType": "application/octet-stream", "repository": "base", "digest": "sha256:bb"}, "request": {"host": "127.0.0.1:5000"}},
               {"action": "push", "target": {"mediaType": "application/vnd.oci.image.index.v1+json", "repository": "library/debian", "tag": "bookworm", "url": "https://registry-1.docker.io/v2/library/debian/manifests/bookworm"}}"#,
        );
        let (pushed, ignored) = registry_events(&body).unwrap();
        let names: Vec<&str> = pushed.iter().map(|p| p.image.as_str()).collect();
        assert_eq!(names, ["127.0.0.1:5000/base:1", "docker.io/library/debian:bookworm"]);
        assert_eq!(pushed[0].digest.as_deref(), Some("sha256:aa"), "the digest the tag now names");
        assert_eq!(ignored, 2, "a pull and a layer push name nothing");
    }

    #[test]
    fn errors_say_where() {
        let e = registry_events(b"{\"events\": [\n {\"action\": 7}]}").unwrap_err();
        assert_eq!((e.path.as_str(), e.line, e.column), ("events[0].action", 2, 13), "{e}");
        assert_eq!(e.offset, 25, "{e}: the 7");
        let e = registry_events(b"{\"events\": [").unwrap_err();
        assert_eq!(e.offset, 11, "{e}: the body ends after its 12th byte");
        assert!(CheckRequest::parse(b"{\"image\": []}").unwrap_err().message.contains("unknown field"));
        assert!(CheckRequest::parse(b" \n").unwrap().is_everything());
    }

    #[test]
    fn docker_hub_payloads_normalise() {
        let body = br#"{"push_data": {"tag": "bookworm-slim"}, "repository": {"repo_name": "debian"}}"#;
        assert_eq!(dockerhub_event(body).unwrap().0[0].image.as_str(), "docker.io/library/debian:bookworm-slim");
        let e = dockerhub_event(br#"{"push_data": {"tag": "x"}, "repository": {"repo_name": "UPPER"}}"#).unwrap_err();
        assert!(e.message.contains("lowercase"), "{e}");
    }

    #[test]
    fn harbor_pushes_name_their_resource_url() {
        let resource = |tag: &str, url: &str| format!(r#"{{"digest": "sha256:aa", "tag": "{tag}", "resource_url": "{url}"}}"#);
        let body = |kind: &str, resources: &[String]| {
            format!(
                r#"{{"type": "{kind}", "occur_at": 1, "operator": "ci", "event_data": {{"resources": [{}], "repository": {{"repo_full_name": "library/base"}}}}}}"#,
                resources.join(",")
            )
        };
        let tagged = resource("1", "harbor.example.com/library/base:1");
        let untagged = resource("", "harbor.example.com/library/base@sha256:aa");
        let (pushed, ignored) = harbor_event(body("PUSH_ARTIFACT", &[tagged.clone(), untagged]).as_bytes()).unwrap();
        assert_eq!(
            pushed.iter().map(|p| (p.image.as_str(), p.digest.as_deref())).collect::<Vec<_>>(),
            [("harbor.example.com/library/base:1", Some("sha256:aa"))]
        );
        assert_eq!(ignored, 1, "a push without a tag moves no tag");
        let (pushed, ignored) = harbor_event(body("PULL_ARTIFACT", &[tagged]).as_bytes()).unwrap();
        assert_eq!((pushed.len(), ignored), (0, 1));
        let e = harbor_event(br#"{"type": "PUSH_ARTIFACT"}"#).unwrap_err();
        assert!(e.message.contains("event_data"), "{e}");
    }
}
