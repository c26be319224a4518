//! The versioned state file: the digests last seen for each watched image, and
//! what each build was last built from.
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

/// Current state format version. Older versions are migrated on load.
pub const STATE_VERSION: u32 = 1;

/// Where a recorded digest came from.
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
}

impl std::fmt::Display for DigestSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DigestSource::Registry => "registry",
            DigestSource::Local => "engine's local image",
            DigestSource::Build => "engine's image of another build",
            DigestSource::Pinned => "pinned reference",
        })
    }
}

/// The last digest seen for one watched image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `sha256:…`.
    pub digest: String,
    /// Where it came from.
    pub source: DigestSource,
    /// When it was last seen, seconds since the Unix epoch.
    pub seen_at: u64,
    /// When this digest was first seen (for the settle window), seconds since the Unix epoch.
    #[serde(default)]
    pub since: u64,
    /// Platform → child manifest digest, when the digest is an index's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub platforms: BTreeMap<String, String>,
}

/// The last rate-limit headers a registry sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryRecord {
    /// `RateLimit-Limit`.
    pub limit: u64,
    /// `RateLimit-Remaining`.
    pub remaining: u64,
    /// Window (`w=`), seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_secs: Option<u64>,
    /// When the headers were seen, seconds since the Unix epoch.
    pub seen_at: u64,
}

/// What one build was last built from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRecord {
    /// Watched image (normalised reference) → digest used for the last build.
    pub built_from: BTreeMap<String, String>,
    /// Image ID produced, when freshen built it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// When it was built or adopted, seconds since the Unix epoch.
    pub recorded_at: u64,
    /// How the record came about: `built`, `baseline` (existing image adopted
    /// as-is) or `labels` (re-seeded from the image's labels).
    pub origin: String,
}

/// The whole state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Format version, [`STATE_VERSION`].
    pub version: u32,
    /// Watched image → last digest seen.
    #[serde(default)]
    pub images: BTreeMap<String, ImageRecord>,
    /// Build name → what it was built from.
    #[serde(default)]
    pub builds: BTreeMap<String, BuildRecord>,
    /// Registry host → last rate-limit headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub registries: BTreeMap<String, RegistryRecord>,
}

impl Default for State {
    fn default() -> Self {
        State { version: STATE_VERSION, images: BTreeMap::new(), builds: BTreeMap::new(), registries: BTreeMap::new() }
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
}

/// The result of [`load`].
#[derive(Debug)]
pub enum Loaded {
    /// A valid state file.
    Found(State),
    /// No file: the caller re-seeds from labels.
    Missing,
    /// The file did not parse and was moved to `moved_to`.
    Corrupt {
        /// Where the bad file now is.
        moved_to: PathBuf,
        /// The parse error.
        reason: String,
    },
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Reads the state at `path`.
///
/// # Errors
/// [`StateError::Read`] when the file exists but cannot be read, or cannot be moved aside.
pub fn load(path: &Path) -> Result<Loaded, StateError> {
    let read_err = |source| StateError::Read { path: path.to_path_buf(), source };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(e) => return Err(read_err(e)),
    };
    match serde_json::from_slice::<State>(&bytes) {
        Ok(s) if s.version <= STATE_VERSION => Ok(Loaded::Found(s)),
        Ok(s) => Ok(Loaded::Corrupt {
            moved_to: move_aside(path).map_err(read_err)?,
            reason: format!("state version {} is newer than this freshen ({STATE_VERSION})", s.version),
        }),
        Err(e) => Ok(Loaded::Corrupt { moved_to: move_aside(path).map_err(read_err)?, reason: e.to_string() }),
    }
}

fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
    let to = path.with_extension(format!("corrupt-{}", now_secs()));
    std::fs::rename(path, &to)?;
    Ok(to)
}

/// Writes `state` to `path` atomically, mode 0600.
///
/// # Errors
/// [`StateError::Write`] when the folder is missing or unwritable, or the disk is full.
/// The previous file is then left as it was.
pub fn save(path: &Path, state: &State) -> Result<(), StateError> {
    let err = |source| StateError::Write { path: path.to_path_buf(), source };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".freshen-state.").tempfile_in(dir).map_err(err)?;
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
        assert!(matches!(load(&p).unwrap(), Loaded::Missing));
        let mut s = State::default();
        s.builds.insert("a".into(), BuildRecord { origin: "built".into(), ..Default::default() });
        save(&p, &s).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(matches!(load(&p).unwrap(), Loaded::Found(x) if x == s));
        std::fs::write(&p, "{not json").unwrap();
        let Loaded::Corrupt { moved_to, .. } = load(&p).unwrap() else { panic!("expected corrupt") };
        assert!(moved_to.exists() && !p.exists());
    }

    #[test]
    fn unwritable_folder_is_an_error() {
        let e = save(Path::new("/nonexistent-freshen-dir/state.json"), &State::default()).unwrap_err();
        assert!(e.to_string().contains("/nonexistent-freshen-dir/state.json"));
    }
}
