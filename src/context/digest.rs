//! A build context's content digest: what a check of a build's context sees.
//!
//! SHA-256 over every kept entry of the walk, in file-name order: its path in
//! the context, its kind, its execute bit, and a regular file's content (a
//! symlink's target). Times and owners are left out, so `touch` is no change;
//! a Dockerfile outside the context is added by content. A file's content is
//! hashed again only when its stat stamp (device, inode, size, mtime, ctime)
//! moved since the last digest of that context, so a check of an unchanged
//! context reads no file.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aws_lc_rs::digest::{Context as Sha, SHA256};

use super::{with_hint, Context, ContextError, Entry};

/// What moves when a file's content may have changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp { dev: m.dev(), ino: m.ino(), len: m.len(), mtime: (m.mtime(), m.mtime_nsec()), ctime: (m.ctime(), m.ctime_nsec()) }
    }
}

/// File content hashes by (context, Dockerfile), each file's kept with the stamp it was hashed at.
type Cache = HashMap<(PathBuf, PathBuf), HashMap<PathBuf, (Stamp, [u8; 32])>>;

/// Content digests of build contexts, with the cache that spares re-reading
/// unchanged files. One per loop; shared by its cycles' checks.
#[derive(Debug, Default)]
pub struct ContextDigests {
    /// Each context's file hashes from its last digest: what lets a check of an unchanged context read no file.
    cache: Mutex<Cache>,
}

impl ContextDigests {
    /// The content digest (`sha256:<hex>`) of the build context `root` as a build of
    /// `dockerfile` sees it: the entries `.dockerignore` keeps, plus the Dockerfile.
    /// Blocking: reads the folder, and every file whose stamp moved.
    ///
    /// # Errors
    /// [`ContextError`] naming the file or folder that cannot be read, or the bad `.dockerignore` line.
    pub fn digest(&self, root: &Path, dockerfile: &Path) -> Result<String, ContextError> {
        let ctx = Context::open(root, dockerfile)?;
        let key = (root.to_path_buf(), dockerfile.to_path_buf());
        let old = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&key).unwrap_or_default();
        let mut new = HashMap::with_capacity(old.len());
        let mut sha = Sha::new(&SHA256);
        ctx.walk(false, |Entry { entry, rel }| {
            let meta = entry.metadata().map_err(|e| ContextError::new(entry.path(), e.to_string()))?;
            let t = entry.file_type();
            sha.update(rel.as_bytes());
            sha.update(&[0]);
            let exec = if meta.mode() & 0o111 != 0 { b"x" } else { b"-" };
            if t.is_file() {
                let stamp = Stamp::of(&meta);
                let hash = match old.get(entry.path()) {
                    Some((s, h)) if *s == stamp => *h,
                    _ => hash_file(entry.path())?,
                };
                new.insert(entry.path().to_path_buf(), (stamp, hash));
                sha.update(b"f");
                sha.update(exec);
                sha.update(&hash);
            } else if t.is_symlink() {
                let target = std::fs::read_link(entry.path()).map_err(|e| ContextError::new(entry.path(), e.to_string()))?;
                sha.update(b"l");
                sha.update(target.as_os_str().as_encoded_bytes());
            } else if t.is_dir() {
                sha.update(b"d");
                sha.update(exec);
            } else {
                sha.update(b"s"); // a FIFO, socket or device: never opened
            }
            sha.update(&[0]);
            Ok(())
        })?;
        if ctx.dockerfile_inside.is_none() {
            sha.update(b"\0dockerfile\0");
            sha.update(&hash_file(dockerfile)?);
        }
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, new);
        Ok(format!("sha256:{}", hex::encode(sha.finish().as_ref())))
    }
}

/// SHA-256 of the regular file at `path`, read in 64 KiB blocks.
fn hash_file(path: &Path) -> Result<[u8; 32], ContextError> {
    let err = |e: std::io::Error| ContextError::new(path, with_hint(format!("cannot read: {e}"), Some(e.kind())));
    let mut file = std::fs::File::open(path).map_err(err)?;
    let mut sha = Sha::new(&SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(sha.finish().as_ref());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_not_times_and_only_what_dockerignore_keeps() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(root.join("app.txt"), "one").unwrap();
        std::fs::write(root.join(".dockerignore"), "*.log\n").unwrap();
        let d = ContextDigests::default();
        let df = root.join("Dockerfile");
        let first = d.digest(root, &df).unwrap();
        assert!(first.starts_with("sha256:") && first.len() == 71, "{first}");
        std::fs::write(root.join("debug.log"), "ignored").unwrap();
        assert_eq!(d.digest(root, &df).unwrap(), first, "an ignored file is not the context");
        let f = std::fs::File::options().write(true).open(root.join("app.txt")).unwrap();
        f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(d.digest(root, &df).unwrap(), first, "a new mtime alone is no change");
        std::fs::write(root.join("app.txt"), "two").unwrap();
        let second = d.digest(root, &df).unwrap();
        assert_ne!(second, first, "an edit is a change");
        assert_eq!(ContextDigests::default().digest(root, &df).unwrap(), second, "a cold cache gives the same digest");
    }
}
