//! A build context: the folder whose files a build may `COPY`, minus what its
//! `.dockerignore` excludes. One walk decides which entries are kept; the
//! engine's archive ([`crate::engine::context::archive`]) sends them, and the
//! context's content digest ([`ContextDigests`]) watches them, so the two never disagree.
//!
//! The Dockerfile is always kept, as the docker CLI sends it even when
//! `.dockerignore` lists it. Symlinks are kept as links and never followed.

mod digest;
mod ignore;

use std::path::{Path, PathBuf};

pub use crate::error::ContextError;
pub use digest::ContextDigests;
pub use ignore::DockerIgnore;

/// Largest `.dockerignore` read, in bytes (16 MiB).
const MAX_DOCKERIGNORE_BYTES: u64 = 16 * 1024 * 1024;

impl ContextError {
    fn new(path: &Path, message: impl Into<String>) -> Self {
        ContextError { path: path.to_path_buf(), message: message.into() }
    }
}

/// A build context opened for a walk: its folder, its compiled `.dockerignore`,
/// and where the Dockerfile lies in it.
#[derive(Debug)]
pub struct Context {
    /// The context folder (absolute).
    pub root: PathBuf,
    /// The `.dockerignore` text (empty when there is none): the classic builder's archive sends it again, amended.
    pub ignore_text: String,
    /// The compiled `.dockerignore`.
    pub ignore: DockerIgnore,
    /// The Dockerfile's `/`-separated path inside the context, when it lies there: it is kept whatever `.dockerignore` says.
    pub dockerfile_inside: Option<String>,
}

/// One kept entry of a walk.
pub struct Entry<'a> {
    /// The walked entry: its full path and file type.
    pub entry: &'a walkdir::DirEntry,
    /// Its `/`-separated path inside the context, as `.dockerignore` patterns see it.
    pub rel: &'a str,
}

impl Context {
    /// Opens the context folder `root` for a build of `dockerfile`: reads and compiles its `.dockerignore`.
    ///
    /// # Errors
    /// [`ContextError`] naming `.dockerignore` when it cannot be read, is not UTF-8,
    /// or has a pattern that does not compile (with its line).
    pub fn open(root: &Path, dockerfile: &Path) -> Result<Context, ContextError> {
        let ignore_path = root.join(".dockerignore");
        let ignore_text = match crate::files::read_regular(&ignore_path, MAX_DOCKERIGNORE_BYTES, "a .dockerignore") {
            Ok(b) => String::from_utf8(b).map_err(|_| ContextError::new(&ignore_path, "not UTF-8 text"))?,
            Err(e) if e.io_kind() == Some(std::io::ErrorKind::NotFound) => String::new(),
            Err(e) => return Err(ContextError::new(&ignore_path, e.to_string())),
        };
        let ignore = DockerIgnore::parse(&ignore_text).map_err(|m| ContextError::new(&ignore_path, m))?;
        let dockerfile_inside = dockerfile.strip_prefix(root).ok().map(|p| p.to_string_lossy().replace('\\', "/"));
        Ok(Context { root: root.to_path_buf(), ignore_text, ignore, dockerfile_inside })
    }

    /// Walks the context in file-name order and calls `f` with every kept entry
    /// (folders included): those `.dockerignore` does not exclude, plus the
    /// Dockerfile, plus `.dockerignore` itself when `keep_dockerignore` is set
    /// (the classic builder reads it from the archive). Excluded folders that no
    /// `!` pattern reopens are not entered.
    ///
    /// # Errors
    /// [`ContextError`] naming the entry that cannot be read (with what to do when
    /// it is a permission error), or the first error `f` returns.
    pub fn walk(&self, keep_dockerignore: bool, mut f: impl FnMut(Entry<'_>) -> Result<(), ContextError>) -> Result<(), ContextError> {
        let mut walker = walkdir::WalkDir::new(&self.root).follow_links(false).sort_by_file_name().min_depth(1).into_iter();
        while let Some(entry) = walker.next() {
            let entry = entry.map_err(|e| {
                ContextError::new(e.path().unwrap_or(&self.root), with_hint(e.to_string(), e.io_error().map(std::io::Error::kind)))
            })?;
            let rel = entry.path().strip_prefix(&self.root).expect("walkdir stays under its root").to_string_lossy().replace('\\', "/");
            let always = (keep_dockerignore && rel == ".dockerignore") || self.dockerfile_inside.as_deref() == Some(rel.as_str());
            if entry.file_type().is_dir() && self.ignore.prune(&rel) {
                walker.skip_current_dir();
                continue;
            }
            if !always && self.ignore.excluded(&rel) {
                continue;
            }
            f(Entry { entry: &entry, rel: &rel })?;
        }
        Ok(())
    }
}

/// Adds what to do to a permission error: the file is in the context, so it is sent unless ignored.
pub fn with_hint(message: String, kind: Option<std::io::ErrorKind>) -> String {
    match kind {
        Some(std::io::ErrorKind::PermissionDenied) => {
            format!("{message}; make it readable by the user freshen runs as, or exclude it in the context's .dockerignore")
        }
        _ => message,
    }
}
