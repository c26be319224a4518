//! The versioned state file: what the last check saw of each watched input, and
//! what each build was last built from. Only the cycle writes it
//! ([`crate::cycle`]), after the checks and after each build.
//!
//! Writes are atomic (temp file in the same folder, fsync, rename, fsync of the
//! folder), so a crash leaves either the old or the new file, never a mix. The
//! file is created mode 0600. A file that does not parse is moved aside with a
//! warning; the caller then re-seeds from image labels.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::input::{Input, Observation};
use crate::reference::ImageRef;

/// Current state format version. Version 1 files (keyed by image text) are migrated on load.
pub const STATE_VERSION: u32 = 2;

/// The last rate-limit headers a registry sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryRecord {
    /// `RateLimit-Limit`: with `remaining`, how much of the window is left.
    pub limit: u64,
    /// `RateLimit-Remaining`: under `rate_limit_reserve`, checks of the registry are spaced out.
    pub remaining: u64,
    /// Window (`w=`), seconds: when the quota resets, checks go back to every cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_secs: Option<u64>,
    /// When the headers were seen, seconds since the Unix epoch: the window counts from it.
    pub seen_at: u64,
}

/// How a build's record came about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// freshen built the image.
    #[default]
    Built,
    /// An existing image was adopted as it is, with the digests current when it was found.
    Baseline,
    /// Re-seeded from the labels freshen put on the image when it built it.
    Labels,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::Built => "built",
            Origin::Baseline => "baseline",
            Origin::Labels => "labels",
        })
    }
}

/// What one build was last built from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRecord {
    /// Each watched input → the digest the build was last built from: a different
    /// current digest is a change.
    pub built_from: BTreeMap<Input, String>,
    /// The image ID produced, when freshen built it, so the record can be matched to the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// When it was built or adopted, seconds since the Unix epoch.
    pub recorded_at: u64,
    /// Whether freshen built it or adopted it, which `explain` shows.
    pub origin: Origin,
    /// Each tag pushed after this build → the manifest digest the registry stored (`push`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pushed: BTreeMap<String, String>,
    /// Set when the image was built and tagged but a push failed: the next cycle
    /// pushes it again without building it (a push-only job).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub push_pending: bool,
    /// The tags rendered from the build's tag templates for the commit it was built
    /// from (`registry/app:0123abc`): given to the image beside the build's tags, and pushed with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commit_tags: Vec<String>,
    /// The engine that built the image (`options.engines`' name, or `default`): its
    /// tags are read from there, a push-only job runs there, and a child built on
    /// another engine pulls it from the registry first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
}

/// The whole state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Format version, [`STATE_VERSION`], so that older files are migrated and newer ones refused.
    pub version: u32,
    /// Each watched input → what its last check saw: the baseline of the next check.
    #[serde(default)]
    pub inputs: BTreeMap<Input, Observation>,
    /// Build name → what it was built from.
    #[serde(default)]
    pub builds: BTreeMap<String, BuildRecord>,
    /// Registry host → its last rate-limit headers, which survive restarts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub registries: BTreeMap<String, RegistryRecord>,
}

impl Default for State {
    fn default() -> Self {
        State { version: STATE_VERSION, inputs: BTreeMap::new(), builds: BTreeMap::new(), registries: BTreeMap::new() }
    }
}

/// Version 1 of the state file: images and `built_from` keyed by normalised image text.
#[derive(Deserialize)]
struct StateV1 {
    #[serde(default)]
    images: BTreeMap<String, Observation>,
    #[serde(default)]
    builds: BTreeMap<String, BuildRecordV1>,
    #[serde(default)]
    registries: BTreeMap<String, RegistryRecord>,
}

#[derive(Deserialize)]
struct BuildRecordV1 {
    built_from: BTreeMap<String, String>,
    #[serde(default)]
    image_id: Option<String>,
    recorded_at: u64,
    origin: Origin,
}

/// Migrates a version 1 file: every image key becomes an [`Input::Image`] key.
///
/// # Errors
/// A message when a key is not a valid image reference.
fn migrate_v1(v1: StateV1) -> Result<State, String> {
    let image = |k: &str| ImageRef::parse(k).map(Input::Image).map_err(|e| format!("image {k:?}: {e}"));
    let inputs = v1.images.into_iter().map(|(k, o)| Ok((image(&k)?, o))).collect::<Result<_, String>>()?;
    let mut builds = BTreeMap::new();
    for (name, b) in v1.builds {
        let built_from = b.built_from.into_iter().map(|(k, d)| Ok((image(&k)?, d))).collect::<Result<_, String>>()?;
        builds.insert(
            name,
            BuildRecord { built_from, image_id: b.image_id, recorded_at: b.recorded_at, origin: b.origin, ..Default::default() },
        );
    }
    Ok(State { version: STATE_VERSION, inputs, builds, registries: v1.registries })
}

/// Parses a state file of any known version.
fn parse(bytes: &[u8]) -> Result<State, String> {
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let v = serde_json::from_slice::<Version>(bytes).map_err(|e| e.to_string())?.version;
    match v {
        1 => migrate_v1(serde_json::from_slice(bytes).map_err(|e| e.to_string())?),
        STATE_VERSION => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        v => Err(format!("state version {v} is not one this freshen reads (1 to {STATE_VERSION})")),
    }
}

/// A state file that could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Writing failed; the previous file, if any, is intact.
    #[error("cannot write state file {path}: {source}; the last good state is kept, check the folder exists and is writable")]
    Write {
        /// The state path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Reading failed for a reason other than absence.
    #[error("cannot read state file {path}: {source}")]
    Read {
        /// The state path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The path is not a regular file, or is over [`MAX_STATE_BYTES`]: not a file freshen wrote,
    /// so it is neither read nor moved aside.
    #[error("{0}; the state file must be a regular file that freshen wrote")]
    Unusable(crate::files::ReadError),
}

/// An exclusive hold on a state file, for as long as it lives: two freshen
/// processes on one state file would each build every image and then disagree
/// with the engine. Held with an OS file lock (`flock`, through `std::fs::File::try_lock`)
/// on `<state file>.lock`, which holds the holder's PID; the kernel drops it when the process ends, even by `kill -9`.
#[derive(Debug)]
pub struct StateLock {
    /// The locked file; closing it releases the lock.
    _file: std::fs::File,
}

/// Why [`lock`] could not take the state file.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("state file {} is in use by another freshen{}; stop that one, or give this config its own `state_file`", .path.display(), .pid.map(|p| format!(" (PID {p})")).unwrap_or_default())]
    Held {
        /// The state file.
        path: PathBuf,
        /// The holder's PID, when its lock file says.
        pid: Option<u32>,
    },
    /// The lock file could not be created or locked.
    #[error("cannot lock state file {}: {source}; check the folder exists and is writable", .path.display())]
    Io {
        /// The state file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Takes the state file at `path` for this process (see [`StateLock`]).
///
/// # Errors
/// [`LockError::Held`] with the holder's PID when another process has it,
/// [`LockError::Io`] when the lock file cannot be created.
pub fn lock(path: &Path) -> Result<StateLock, LockError> {
    let io = |source| LockError::Io { path: path.to_path_buf(), source };
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    // Created with a write handle that is closed at once; the lock is held on a read-only
    // one, so that the folder's file system can still be remounted read-only meanwhile.
    std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(&lock_path).map_err(io)?;
    let file = std::fs::File::open(&lock_path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(&lock_path).ok().and_then(|t| t.trim().parse().ok());
            return Err(LockError::Held { path: path.to_path_buf(), pid });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    std::fs::write(&lock_path, format!("{}\n", std::process::id())).map_err(io)?;
    Ok(StateLock { _file: file })
}

/// The result of [`load`].
#[derive(Debug)]
pub enum Loaded {
    /// A valid state file.
    Found(State),
    /// No file: the caller re-seeds from labels.
    Missing,
    /// The file did not parse; it was moved to `moved_to`, unless the caller only looks (`explain`).
    Corrupt {
        /// Where the bad file now is, when it was moved.
        moved_to: Option<PathBuf>,
        /// The parse error.
        reason: String,
    },
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Largest state file read, in bytes (1 GiB: 50,000 builds take a few tens of MiB).
pub const MAX_STATE_BYTES: u64 = 1024 * 1024 * 1024;

/// Reads the state at `path`. With `move_corrupt`, a file that does not parse is
/// moved aside (to `<name>.corrupt-<seconds>[-n]`, never over an earlier one); `explain`,
/// which writes nothing, leaves it where it is.
///
/// # Errors
/// [`StateError::Read`] when the file exists but cannot be read, or cannot be moved aside;
/// [`StateError::Unusable`] for a FIFO, a device or an oversized file.
pub fn load(path: &Path, move_corrupt: bool) -> Result<Loaded, StateError> {
    let read_err = |source| StateError::Read { path: path.to_path_buf(), source };
    let bytes = match crate::files::read_regular(path, MAX_STATE_BYTES, "a state file") {
        Ok(b) => b,
        Err(e) if e.io_kind() == Some(std::io::ErrorKind::NotFound) => return Ok(Loaded::Missing),
        // Not moved aside: a FIFO, a device or an oversized file is not one freshen wrote.
        Err(crate::files::ReadError::Io { source, .. }) => return Err(read_err(source)),
        Err(e) => return Err(StateError::Unusable(e)),
    };
    match parse(&bytes) {
        Ok(s) => Ok(Loaded::Found(s)),
        Err(reason) if move_corrupt => Ok(Loaded::Corrupt { moved_to: Some(move_aside(path).map_err(read_err)?), reason }),
        Err(reason) => Ok(Loaded::Corrupt { moved_to: None, reason }),
    }
}

fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
    let secs = now_secs();
    let to = (0..)
        .map(|n| path.with_extension(if n == 0 { format!("corrupt-{secs}") } else { format!("corrupt-{secs}-{n}") }))
        .find(|p| !p.exists())
        .expect("an unused name");
    std::fs::rename(path, &to)?;
    Ok(to)
}

/// The prefix of `path`'s temporary files: `.<state file name>.tmp.`, so that
/// the temporary files of two state files in one folder are told apart.
fn temp_prefix(path: &Path) -> String {
    format!(".{}.tmp.", path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default())
}

/// Removes temporary files a killed freshen left beside `path`. Call it while holding
/// the [`StateLock`]: then no other process writes them. Returns how many were removed.
pub fn remove_stale_temp_files(path: &Path) -> usize {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let prefix = temp_prefix(path);
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix) && e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// Writes `state` to `path` atomically, mode 0600.
///
/// # Errors
/// [`StateError::Write`] when the folder is missing or unwritable, the disk is full, or
/// the state file is a symlink to nowhere. The previous file is then left as it was.
pub fn save(path: &Path, state: &State) -> Result<(), StateError> {
    let err = |source| StateError::Write { path: path.to_path_buf(), source };
    // A symlinked state file is written through: the rename goes to the link's target,
    // never over the link itself.
    let target;
    let path = if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        target = std::fs::canonicalize(path).map_err(err)?;
        target.as_path()
    } else {
        path
    };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(&temp_prefix(path)).tempfile_in(dir).map_err(err)?;
    // tempfile creates files 0600 on Unix, which is what the state file must be.
    let json = serde_json::to_vec_pretty(state).expect("state serialises");
    tmp.write_all(&json).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trip_mode_and_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        assert!(matches!(load(&p, true).unwrap(), Loaded::Missing));
        let mut s = State::default();
        s.builds.insert("a".into(), BuildRecord { origin: Origin::Built, ..Default::default() });
        save(&p, &s).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(matches!(load(&p, true).unwrap(), Loaded::Found(x) if x == s));
        std::fs::write(&p, "{not json").unwrap();
        assert!(matches!(load(&p, false).unwrap(), Loaded::Corrupt { moved_to: None, .. }) && p.exists(), "only looking moves nothing");
        let Loaded::Corrupt { moved_to: Some(first), .. } = load(&p, true).unwrap() else { panic!("expected corrupt") };
        assert!(first.exists() && !p.exists());
        std::fs::write(&p, "{again").unwrap();
        let Loaded::Corrupt { moved_to: Some(second), .. } = load(&p, true).unwrap() else { panic!("expected corrupt") };
        assert!(
            second != first && first.exists() && second.exists(),
            "a second corrupt file in the same second does not replace the first"
        );
        std::fs::write(dir.path().join(".state.json.tmp.abc"), "half").unwrap();
        assert_eq!(remove_stale_temp_files(&p), 1);
    }

    #[test]
    fn a_second_lock_is_refused_with_the_holder_pid() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        let held = lock(&p).unwrap();
        let e = lock(&p).unwrap_err();
        assert!(matches!(e, LockError::Held { pid: Some(pid), .. } if pid == std::process::id()), "{e}");
        drop(held);
        lock(&p).expect("free again once the holder is gone");
    }

    #[test]
    fn a_symlinked_state_file_is_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.json");
        let link = dir.path().join("state.json");
        std::fs::write(&real, "{}").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        save(&link, &State::default()).unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link is kept");
        assert!(matches!(load(&real, false).unwrap(), Loaded::Found(_)), "its target holds the state");
        std::fs::remove_file(&real).unwrap();
        assert!(save(&link, &State::default()).is_err(), "a dangling link is an error, not replaced");
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    }

    #[test]
    fn unwritable_folder_is_an_error() {
        let e = save(Path::new("/nonexistent-freshen-dir/state.json"), &State::default()).unwrap_err();
        assert!(e.to_string().contains("/nonexistent-freshen-dir/state.json"));
    }
}
