//! Git sources: the one module that speaks git, with `gix` (pure Rust).
//!
//! Each repository has a bare cache under `git/<hash of its URL>` beside the
//! state file. A sync of one repository is one connection: the ref listing
//! (git protocol v2 `ls-refs`, or v1's advertisement) and, only when the ref
//! points at a commit the cache lacks, a fetch of that ref at depth 1 on the
//! same connection. An unchanged ref costs the listing and nothing more.
//! The fetched commit is kept at `refs/freshen/<ref>`, so the Dockerfile can be
//! read from it and the build context checked out of it without a network.
//!
//! Blocking: callers run it on tokio's blocking pool.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use gix::bstr::ByteSlice;

use crate::config::GitCredential;

/// A git operation that failed, in words: the URL and gix's error chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GitError(pub String);

fn err(what: &str, url: &str) -> impl Fn(gix::Error) -> GitError {
    let prefix = format!("{what} {url}");
    move |e| {
        // The whole chain: the top message alone ("Transport handshake failed") does not say why.
        let mut text = format!("{prefix}: {e}");
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            let line = c.to_string();
            if !text.ends_with(&line) {
                text.push_str(": ");
                text.push_str(&line);
            }
            cause = c.source();
        }
        GitError(text)
    }
}

/// What a sync found: the commit the ref points at, and the semver-looking tags on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    /// The commit (40 hex digits) the ref points at now.
    pub commit: String,
    /// Names of the remote's tags (without `refs/tags/`) that point at `commit`, peeled.
    pub tags: Vec<String>,
    /// Whether this sync fetched (the commit was new to the cache).
    pub fetched: bool,
}

/// The bare caches of every git source, under one folder.
#[derive(Debug, Clone)]
pub struct GitCache {
    /// `git/` beside the state file.
    root: PathBuf,
}

/// The full name of branch or ref `r`: `main` → `refs/heads/main`; a name that starts with `refs/` stays.
pub fn full_ref(r: &str) -> String {
    if r.starts_with("refs/") {
        r.to_string()
    } else {
        format!("refs/heads/{r}")
    }
}

/// Where the cache keeps the commit last synced for the remote ref `git_ref`: `refs/freshen/heads/main`.
fn local_ref(git_ref: &str) -> String {
    format!("refs/freshen/{}", full_ref(git_ref).trim_start_matches("refs/"))
}

/// The commit `repo`'s ref `name` points at, if it has one.
fn ref_target(repo: &gix::Repository, name: &str) -> Option<gix::ObjectId> {
    Some(repo.find_reference(name).ok()?.into_fully_peeled_id().ok()?.detach())
}

impl GitCache {
    /// The caches beside the state file at `state_file`.
    pub fn beside(state_file: &Path) -> GitCache {
        GitCache { root: state_file.parent().unwrap_or(Path::new(".")).join("git") }
    }

    fn dir(&self, url: &str) -> PathBuf {
        let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, url.as_bytes());
        self.root.join(hex::encode(&hash.as_ref()[..12]))
    }

    fn open(&self, url: &str) -> Result<gix::Repository, GitError> {
        let dir = self.dir(url);
        if dir.join("HEAD").is_file() {
            return gix::open(&dir).map_err(|e| GitError(format!("git cache {}: {e}", dir.display())));
        }
        std::fs::create_dir_all(&dir).map_err(|e| GitError(format!("git cache {}: {e}", dir.display())))?;
        gix::init_bare(&dir).map_err(|e| GitError(format!("git cache {}: {e}", dir.display())))
    }

    /// Lists `url`'s refs once and, for each of `git_refs` (full names) that points at a
    /// commit the cache lacks, fetches it (depth 1, every new one in one fetch on the same
    /// connection): one connection to the server however many refs a repository's builds watch.
    ///
    /// # Errors
    /// The outer [`GitError`] when the server cannot be reached or refuses, or the fetch
    /// fails: every ref failed. An inner one for a ref the repository does not have.
    ///
    /// `credential` answers the server's request for credentials (HTTP basic auth). Without
    /// one, none is given: a daemon never prompts, and never asks the user's credential
    /// helpers (which may prompt); a server that wants credentials then fails the sync.
    pub fn sync(
        &self,
        url: &str,
        git_refs: &[String],
        credential: Option<&GitCredential>,
    ) -> Result<BTreeMap<String, Result<Synced, GitError>>, GitError> {
        let repo = self.open(url)?;
        let specs: Vec<String> = git_refs.iter().map(|r| format!("+{}:{}", full_ref(r), local_ref(r))).collect();
        let remote = repo
            .remote_at(url)
            .map_err(err("git remote", url))?
            .with_fetch_tags(gix::remote::fetch::Tags::None)
            .with_refspecs(specs.iter().map(String::as_str), gix::remote::Direction::Fetch)
            .map_err(err("git refspec for", url))?;
        let (credential, none_given) = (credential.cloned(), credential.is_none());
        let connection = remote.connect(gix::remote::Direction::Fetch).map_err(err("git connect to", url))?.with_credentials(
            move |action| match action {
                gix::credentials::helper::Action::Get(context) => Ok(credential.as_ref().map(|c| gix::credentials::protocol::Outcome {
                    identity: gix::sec::identity::Account {
                        username: c.username.clone(),
                        password: c.password.expose().to_string(),
                        oauth_refresh_token: None,
                    },
                    next: context.into(),
                })),
                // Nothing is stored: the credentials come from the config each time.
                gix::credentials::helper::Action::Store(_) | gix::credentials::helper::Action::Erase(_) => Ok(None),
            },
        );
        // Every ref is listed (no prefix filter), so that the tags on the commit are seen without fetching them.
        let options = gix::remote::ref_map::Options { prefix_from_spec_as_filter_on_remote: false, ..Default::default() };
        let prepare = connection.prepare_fetch(gix::progress::Discard, options).map_err(err("git ls-refs of", url)).map_err(|e| {
            // gix's words for a server that wants credentials nobody gave are about a credential helper: say what to do.
            if e.0.contains("No credentials were returned") && none_given {
                GitError(format!(
                    "git ls-refs of {url}: the server asks for credentials, and the config's git section has none for its host: \
                     add \"git\": {{\"<host[:port]>\": {{\"username\": …, \"password_file\": …}}}}"
                ))
            } else {
                e
            }
        })?;
        // (name, the commit it points at: a tag object peeled).
        let listed: Vec<(String, gix::ObjectId)> = prepare
            .ref_map()
            .remote_refs
            .iter()
            .filter_map(|r| {
                let (name, target, peeled) = r.unpack();
                Some((name.to_str().ok()?.to_string(), peeled.or(target)?.to_owned()))
            })
            .collect();
        let mut out = BTreeMap::new();
        let mut new = false;
        for git_ref in git_refs {
            let wanted = full_ref(git_ref);
            let synced = match listed.iter().find(|(name, _)| *name == wanted) {
                None => Err(GitError(format!("{url} has no ref {wanted}; give a branch the repository has"))),
                Some((_, commit)) => {
                    let fetched = !repo.has_object(commit);
                    new |= fetched;
                    let tags = listed
                        .iter()
                        .filter(|(_, object)| object == commit)
                        .filter_map(|(name, _)| name.strip_prefix("refs/tags/").map(str::to_string))
                        .collect();
                    Ok(Synced { commit: commit.to_string(), tags, fetched })
                }
            };
            out.insert(git_ref.clone(), synced);
        }
        if new {
            let depth = std::num::NonZeroU32::new(1).expect("1 is not 0");
            prepare
                .with_shallow(gix::remote::fetch::Shallow::DepthAtRemote(depth))
                .receive(gix::progress::Discard, &AtomicBool::new(false))
                .map_err(err("git fetch of", url))?;
        } else {
            drop(prepare); // the listing was all that was needed: no fetch
        }
        // A ref that moved to a commit the cache already held (a force-push back) is not
        // updated by a fetch: point the local ref there too. Written only when it moved.
        for (git_ref, synced) in &out {
            if let Ok(s) = synced {
                let commit = gix::ObjectId::from_hex(s.commit.as_bytes()).map_err(|e| GitError(format!("commit {}: {e}", s.commit)))?;
                let local = local_ref(git_ref);
                if ref_target(&repo, &local) != Some(commit) {
                    set_ref(&repo, &local, commit)?;
                }
            }
        }
        Ok(out)
    }

    /// The commit the cache holds for `url`'s `git_ref` (its last sync), if any.
    pub fn cached(&self, url: &str, git_ref: &str) -> Option<String> {
        let repo = gix::open(self.dir(url)).ok()?;
        Some(ref_target(&repo, &local_ref(git_ref))?.to_string())
    }

    /// The file at `path` (`/`-separated, inside the repository) in `commit` of `url`'s cache.
    ///
    /// # Errors
    /// [`GitError`] when the commit is not in the cache, or the file is not in it.
    pub fn read(&self, url: &str, commit: &str, path: &str) -> Result<Vec<u8>, GitError> {
        let repo = self.open(url)?;
        let tree = tree_of(&repo, commit)?;
        let entry = tree
            .lookup_entry_by_path(path)
            .map_err(|e| GitError(format!("{path} in {commit}: {e}")))?
            .ok_or_else(|| GitError(format!("{url} at {commit} has no {path}")))?;
        let object = entry.object().map_err(|e| GitError(format!("{path} in {commit}: {e}")))?;
        Ok(object.detach().data)
    }

    /// For each list of `paths` (folders or files inside the repository), by its key: a digest
    /// of what they hold in `commit`, SHA-256 over each path and the ID of its tree or blob
    /// (`-` when absent). Two commits that leave every path of a list alone give it the same one.
    /// The cache is opened once for all the lists.
    ///
    /// # Errors
    /// [`GitError`] when the commit is not in the cache.
    pub fn paths_digests<'a>(
        &self,
        url: &str,
        commit: &str,
        lists: impl IntoIterator<Item = (&'a str, &'a [String])>,
    ) -> Result<BTreeMap<String, String>, GitError> {
        let repo = self.open(url)?;
        let tree = tree_of(&repo, commit)?;
        let digest = |paths: &[String]| {
            let mut sha = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
            for p in paths {
                let p = p.trim_matches('/');
                let id = tree.lookup_entry_by_path(p).ok().flatten().map_or_else(|| "-".to_string(), |e| e.object_id().to_string());
                sha.update(p.as_bytes());
                sha.update(b"\0");
                sha.update(id.as_bytes());
                sha.update(b"\n");
            }
            format!("sha256:{}", hex::encode(sha.finish().as_ref()))
        };
        Ok(lists.into_iter().map(|(key, paths)| (key.to_string(), digest(paths))).collect())
    }

    /// A new empty folder for a checkout, under `git/checkouts/`: removed when dropped.
    ///
    /// # Errors
    /// [`GitError`] when the folder cannot be made.
    pub fn checkout_dir(&self) -> Result<tempfile::TempDir, GitError> {
        let parent = self.root.join("checkouts");
        std::fs::create_dir_all(&parent).map_err(|e| GitError(format!("{}: {e}", parent.display())))?;
        tempfile::tempdir_in(&parent).map_err(|e| GitError(format!("{}: {e}", parent.display())))
    }

    /// Checks out `commit` of `url` into the empty folder `dest`.
    ///
    /// # Errors
    /// [`GitError`] when the commit is not in the cache or a file cannot be written.
    pub fn checkout(&self, url: &str, commit: &str, dest: &Path) -> Result<(), GitError> {
        let repo = self.open(url)?;
        let tree = tree_of(&repo, commit)?;
        let e = |e: gix::Error| GitError(format!("checkout of {commit} into {}: {e}", dest.display()));
        let mut index = repo.index_from_tree(&tree.id).map_err(e)?;
        let mut options = repo.checkout_options(gix::worktree::stack::state::attributes::Source::IdMapping).map_err(e)?;
        options.destination_is_initially_empty = true;
        let objects = repo.objects.clone().into_arc().map_err(|x| GitError(format!("checkout of {commit}: {x}")))?;
        let outcome = gix::worktree::state::checkout(
            &mut index,
            dest,
            objects,
            &gix::progress::Discard,
            &gix::progress::Discard,
            &AtomicBool::new(false),
            options,
        )
        .map_err(|x| GitError(format!("checkout of {commit} into {}: {x}", dest.display())))?;
        if let Some(first) = outcome.errors.first() {
            return Err(GitError(format!("checkout of {commit}: {}: {}", first.path, first.error)));
        }
        Ok(())
    }
}

fn tree_of<'r>(repo: &'r gix::Repository, commit: &str) -> Result<gix::Tree<'r>, GitError> {
    let id = gix::ObjectId::from_hex(commit.as_bytes()).map_err(|e| GitError(format!("commit {commit}: {e}")))?;
    let commit_obj = repo.find_commit(id).map_err(|e| GitError(format!("commit {commit} is not in the cache: {e}")))?;
    commit_obj.tree().map_err(|e| GitError(format!("tree of {commit}: {e}")))
}

fn set_ref(repo: &gix::Repository, name: &str, id: gix::ObjectId) -> Result<(), GitError> {
    use gix::refs::transaction::PreviousValue;
    repo.reference(name, id, PreviousValue::Any, "freshen: sync").map(|_| ()).map_err(|e| GitError(format!("ref {name}: {e}")))
}
