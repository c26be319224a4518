//! Git push webhooks' bodies: which repository and ref a push moved, and which
//! watched git sources that names. Pure: no I/O. The signature check is in
//! the server (`server/git_hook.rs`), before any of this runs.
//!
//! Payloads: GitHub's and Gitea's push event (`ref`, `repository.clone_url`,
//! `ssh_url`, `git_url`, `html_url`), GitLab's push and tag push hooks (`ref`,
//! `project.git_http_url`, `git_ssh_url`, `web_url`, and `repository.url`).

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::event::BodyError;
use crate::input::Input;
use crate::project::Project;

/// What a push event says: the ref it moved and every URL it gives the repository by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitPush {
    /// The full ref name (`refs/heads/main`, `refs/tags/v1.2.3`).
    pub git_ref: String,
    /// The repository's URLs (https, ssh, git, web page): a source matches by any of them.
    pub urls: Vec<String>,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "ref")]
    git_ref: String,
    #[serde(default)]
    repository: Option<Repository>,
    #[serde(default)]
    project: Option<Repository>,
}

/// The URL fields of GitHub's and Gitea's `repository`, and GitLab's `project` and `repository`.
#[derive(Deserialize, Default)]
struct Repository {
    clone_url: Option<String>,
    ssh_url: Option<String>,
    git_url: Option<String>,
    html_url: Option<String>,
    url: Option<String>,
    git_http_url: Option<String>,
    git_ssh_url: Option<String>,
    web_url: Option<String>,
    homepage: Option<String>,
}

/// Reads a push event's body.
///
/// # Errors
/// [`BodyError`] (with the field, line, column and byte offset) when the body is not
/// JSON, has no `ref`, or names no repository URL.
pub fn git_push(body: &[u8]) -> Result<GitPush, BodyError> {
    let p: Payload = crate::event::parse(body)?;
    let urls: Vec<String> = [p.repository, p.project]
        .into_iter()
        .flatten()
        .flat_map(|r| [r.clone_url, r.ssh_url, r.git_url, r.html_url, r.url, r.git_http_url, r.git_ssh_url, r.web_url, r.homepage])
        .flatten()
        .collect();
    if urls.is_empty() {
        let message =
            "no repository URL: a push event names its repository in repository.clone_url (GitHub, Gitea) or project.git_http_url (GitLab)";
        return Err(BodyError { message: message.to_string(), path: ".".into(), line: 1, column: 1, offset: 0 });
    }
    Ok(GitPush { git_ref: p.git_ref, urls })
}

/// The repository a URL names, whatever the protocol: its host (lowercase, without user
/// or port) and path (without a trailing `/` or `.git`, lowercase), joined by `/`. So
/// `https://git.example.com/Team/App.git`, `ssh://git@git.example.com:2222/team/app`
/// and the scp-like `git@git.example.com:team/app.git` all give `git.example.com/team/app`.
/// `None` for text that is not a URL.
pub fn repository_key(url: &str) -> Option<String> {
    let (host, path) = match url.split_once("://") {
        Some((_, rest)) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            (authority, path)
        }
        // scp-like: [user@]host:path
        None => url.split_once(':')?,
    };
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host.split(':').next().unwrap_or(host),
    };
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    Some(format!("{}/{}", host.to_ascii_lowercase(), path.to_ascii_lowercase()))
}

/// The git sources of `project` that `push` moved, and 1 when it moved none (else 0).
/// A branch push names the sources on that repository and branch; a tag push names
/// the sources on that repository whose builds have `{semver.…}` tag templates (a
/// release tag gives them tags); anything else names none.
pub fn watched(project: &Project, push: &GitPush) -> (BTreeSet<Input>, usize) {
    let keys: BTreeSet<String> = push.urls.iter().filter_map(|u| repository_key(u)).collect();
    let tag = push.git_ref.starts_with("refs/tags/");
    let inputs: BTreeSet<Input> = project
        .builds
        .values()
        .filter_map(|a| Some((a, a.build.source.as_ref()?)))
        .filter(|(_, s)| repository_key(&s.url).is_some_and(|k| keys.contains(&k)))
        .filter(
            |(a, s)| if tag { a.build.commit_tags.iter().any(crate::config::TagTemplate::uses_semver) } else { s.git_ref == push.git_ref },
        )
        .map(|(_, s)| s.input())
        .collect();
    let ignored = usize::from(inputs.is_empty());
    (inputs, ignored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_repository_by_any_of_its_urls() {
        let key = |u: &str| repository_key(u).unwrap();
        let want = "git.example.com/team/app";
        for u in [
            "https://git.example.com/Team/App.git",
            "ssh://git@git.example.com:2222/team/app",
            "git@git.example.com:team/app.git",
            "git://git.example.com/team/app.git/",
            "https://user:token@git.example.com:443/team/app",
        ] {
            assert_eq!(key(u), want, "{u}");
        }
        assert_eq!(key("http://[::1]:8080/app.git"), "::1/app");
        assert_eq!(key("file:///srv/git/app.git"), "/srv/git/app");
        assert_ne!(key("https://git.example.com/team/app2"), want);
        assert_eq!(repository_key("not a url"), None);
    }

    #[test]
    fn github_gitea_and_gitlab_payloads() {
        let github = br#"{"ref": "refs/heads/main", "after": "abc", "repository": {"clone_url": "https://github.com/o/app.git", "ssh_url": "git@github.com:o/app.git"}}"#;
        let p = git_push(github).unwrap();
        assert_eq!((p.git_ref.as_str(), p.urls.len()), ("refs/heads/main", 2));
        let gitlab = br#"{"object_kind": "push", "ref": "refs/heads/main", "project": {"git_http_url": "https://gitlab.example.com/g/app.git", "git_ssh_url": "git@gitlab.example.com:g/app.git"}, "repository": {"url": "git@gitlab.example.com:g/app.git"}}"#;
        assert_eq!(git_push(gitlab).unwrap().urls.len(), 3);
        let e = git_push(br#"{"zen": "ping"}"#).unwrap_err();
        assert!(e.message.contains("missing field `ref`"), "{e}");
        let e = git_push(br#"{"ref": "refs/heads/main"}"#).unwrap_err();
        assert!(e.message.contains("no repository URL"), "{e}");
        let e = git_push(b"{\"ref\": \n 7}").unwrap_err();
        assert_eq!((e.path.as_str(), e.line), ("ref", 2), "{e}");
    }
}
