//! A build's `source`: a git repository whose commits the build is made from,
//! instead of a local build context.

use serde_json::Value;

use std::collections::BTreeMap;
use std::path::Path;

use super::{escape_pointer, read_secret, violation, Build, Violation};
use crate::credentials::Secret;
use crate::input::Input;

/// A git source (`source`): where the build context comes from, and which of its changes count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    /// The repository's URL (`https://`, `ssh://`, `git://` or `file://`): listed each check.
    pub url: String,
    /// The full name of the ref whose new commits rebuild the build (`ref`: a branch
    /// `main` is `refs/heads/main`), as the remote's listing and state name it.
    pub git_ref: String,
    /// The build context's folder inside the repository (`""` for its root); `dockerfile` is relative to it.
    pub path: String,
    /// Folders or files inside the repository whose change rebuilds; empty: any new commit does.
    pub paths: Vec<String>,
    /// The credentials of the URL's host from the config's `git` section (`https://`,
    /// `http://`): sent when the server asks for them. `None`: the user's git credential helpers.
    pub credential: Option<GitCredential>,
}

/// A git server's credentials (`git.<host>`): a username and the password or access
/// token read from its `password_file`. Never printed: the password shows as `***`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitCredential {
    /// The account's name (`x-access-token`, `oauth2` or a user, as the forge wants).
    pub username: String,
    /// The password or access token.
    pub password: crate::credentials::Secret,
}

/// The host (with its port when given, without a user) that a `https://` or `http://`
/// URL names, as the config's `git` section is keyed; `None` for other schemes.
pub fn http_host(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    Some(authority.rsplit_once('@').map_or(authority, |(_, host)| host))
}

impl GitSource {
    /// The key under which `paths` picks a digest: the paths joined by newlines (`""` without paths).
    pub fn paths_key(&self) -> String {
        self.paths.join("\n")
    }

    /// The input a check of this source sees: the repository's ref.
    pub fn input(&self) -> Input {
        Input::Git { url: self.url.clone(), git_ref: self.git_ref.clone() }
    }

    /// `rel` inside the build context, as a `/`-separated path inside the repository.
    pub fn in_repository(&self, rel: &str) -> String {
        let path = self.path.trim_matches('/');
        if path.is_empty() {
            rel.to_string()
        } else {
            format!("{path}/{rel}")
        }
    }
}

/// Resolves `raw["source"]` of the build at JSON pointer `at`, when it has one.
pub(super) fn resolve(raw: &Value, at: &str, v: &mut Vec<Violation>) -> Option<GitSource> {
    let s = raw.get("source")?;
    let url = s["git"].as_str().unwrap_or_default().to_string();
    let known = ["https://", "http://", "ssh://", "git://", "file://"];
    if !known.iter().any(|k| url.starts_with(k)) {
        violation(
            v,
            format!("{at}/source/git"),
            format!("{url:?} is not a git URL freshen reads; give an https://, ssh://, git:// or file:// URL"),
        );
    }
    if raw.get("context").is_some() || raw.get("build_dir").is_some() {
        violation(
            v,
            format!("{at}/source"),
            "a build with a git source takes its context from the repository; give source.path, not context".to_string(),
        );
    }
    let list = |k: &str| s[k].as_array().map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect()).unwrap_or_default();
    Some(GitSource {
        url,
        git_ref: crate::git::full_ref(s["ref"].as_str().unwrap_or("main")),
        path: s["path"].as_str().unwrap_or_default().trim_matches('/').to_string(),
        paths: list("paths"),
        credential: None,
    })
}

/// Gives each git source the credentials of its host from the config's `git` section
/// (`raw`), each `password_file` read now. A `password_file` that cannot be read, and
/// credentials that would go over plain http to a host that is not loopback, are violations.
pub(super) fn attach_credentials(raw: &Value, base_dir: &Path, builds: &mut BTreeMap<String, Build>, v: &mut Vec<Violation>) {
    let git = resolve_git(raw, base_dir, v);
    for (name, b) in builds.iter_mut() {
        let Some(source) = b.source.as_mut() else { continue };
        let host = http_host(&source.url).unwrap_or_default();
        source.credential = git.get(host).cloned();
        if source.credential.is_some() && source.url.starts_with("http://") && !crate::reference::is_loopback_host(host) {
            violation(
                v,
                format!("/builds/{}/source/git", escape_pointer(name)),
                format!("{}: credentials go over https only (or http to a loopback address); give the https:// URL", source.url),
            );
        }
    }
}

/// The config's `git` section: host → credentials, each `password_file` read now.
fn resolve_git(raw: &Value, base_dir: &Path, v: &mut Vec<Violation>) -> BTreeMap<String, GitCredential> {
    let mut out = BTreeMap::new();
    for (host, r) in raw.as_object().into_iter().flatten() {
        let (Some(username), Some(file)) = (r["username"].as_str(), r["password_file"].as_str()) else { continue };
        match read_secret(&base_dir.join(file), "a password_file") {
            Ok(p) => {
                out.insert(host.clone(), GitCredential { username: username.to_string(), password: Secret::new(p) });
            }
            Err(e) => violation(
                v,
                format!("/git/{}/password_file", escape_pointer(host)),
                format!("cannot read password_file: {e}; give a regular file holding only the password or access token"),
            ),
        }
    }
    out
}
