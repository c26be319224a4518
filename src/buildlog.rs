//! Saved build logs (seed 001: "save console output to file"): every build
//! that runs writes `logs/<build>/<RFC 3339 time>.log` beside the state file,
//! mode 0600, and the oldest beyond `options.keep_logs` are removed.
//!
//! Each log holds a header (build, builder, time), the engine's output as
//! whole lines (classic stream text, or BuildKit progress as `--progress=plain`
//! lines), and the result, all redacted before they are written. A log that
//! cannot be written is logged (`build_log_failed`) and never fails the build.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Bytes of a build name kept as they are in its log folder's name: letters,
/// digits, `-`, `_` and `.`; every other byte is percent-encoded (RFC 3986),
/// so a name with `/`, spaces or `..` cannot leave `logs/`.
const KEPT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// Where builds' logs go and how many each build keeps.
#[derive(Debug, Clone)]
pub struct BuildLogs {
    /// `logs/` beside the state file.
    dir: PathBuf,
    /// Logs kept per build (`options.keep_logs`); 0 writes none.
    keep: usize,
}

impl BuildLogs {
    /// Logs under `logs/` in the state file's folder, `keep` per build.
    pub fn beside(state_file: &Path, keep: usize) -> Self {
        BuildLogs { dir: state_file.parent().unwrap_or(Path::new("/")).join("logs"), keep }
    }

    /// The folder of `build`'s logs: its name percent-encoded, with `.` and `..` encoded too.
    pub fn folder(&self, build: &str) -> PathBuf {
        let name = match build {
            "." => "%2E".to_string(),
            ".." => "%2E%2E".to_string(),
            _ => utf8_percent_encode(build, KEPT).to_string(),
        };
        self.dir.join(name)
    }

    /// Starts a new log for `build`: creates its folder (0700) and the file
    /// (0600, never an existing one), writes `header`, and removes the oldest
    /// logs beyond `keep`. Returns the path, or `None` when `keep` is 0.
    ///
    /// # Errors
    /// The I/O error of creating the folder or the file, or of writing the header.
    pub fn start(&self, build: &str, header: &str) -> std::io::Result<Option<PathBuf>> {
        if self.keep == 0 {
            return Ok(None);
        }
        let folder = self.folder(build);
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&folder)?;
        // RFC 3339 in UTC with milliseconds: fixed width, so names sort as times do. Two
        // starts in one millisecond: the second waits for the next one, keeping that order.
        let mut tries = 0;
        let (path, mut file) = loop {
            let stamp = humantime::format_rfc3339_millis(std::time::SystemTime::now());
            let path = folder.join(format!("{stamp}.log"));
            match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
                Ok(f) => break (path, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => return Err(e),
            }
        };
        file.write_all(header.as_bytes())?;
        self.prune(&folder);
        Ok(Some(path))
    }

    /// Removes the oldest `*.log` files in `folder` beyond `keep`; errors are logged.
    fn prune(&self, folder: &Path) {
        let Ok(entries) = std::fs::read_dir(folder) else { return };
        let mut logs: Vec<PathBuf> =
            entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "log") && p.is_file()).collect();
        logs.sort();
        let over = logs.len().saturating_sub(self.keep);
        for old in &logs[..over] {
            if let Err(e) = std::fs::remove_file(old) {
                tracing::warn!(event = "build_log_failed", path = %old.display(), error = %e, "could not remove an old build log");
            }
        }
    }
}

/// Appends `text` to the log at `path`; a failure is logged (`build_log_failed`), never returned.
pub fn append(path: &Path, text: &str) {
    let result = std::fs::OpenOptions::new().append(true).open(path).and_then(|mut f| f.write_all(text.as_bytes()));
    if let Err(e) = result {
        tracing::warn!(event = "build_log_failed", path = %path.display(), error = %e, "could not write the build log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_name_never_leaves_the_logs_folder() {
        let logs = BuildLogs::beside(Path::new("/s/state.json"), 3);
        assert_eq!(logs.folder("app"), Path::new("/s/logs/app"));
        assert_eq!(logs.folder("../etc"), Path::new("/s/logs/..%2Fetc"));
        assert_eq!(logs.folder(".."), Path::new("/s/logs/%2E%2E"));
        assert_eq!(logs.folder("my app/v1"), Path::new("/s/logs/my%20app%2Fv1"));
    }

    #[test]
    fn only_the_newest_logs_are_kept_each_0600() {
        let dir = tempfile::tempdir().unwrap();
        let logs = BuildLogs::beside(&dir.path().join("state.json"), 2);
        let paths: Vec<PathBuf> = (0..4).map(|i| logs.start("a", &format!("log {i}\n")).unwrap().unwrap()).collect();
        let mut left: Vec<PathBuf> = std::fs::read_dir(logs.folder("a")).unwrap().map(|e| e.unwrap().path()).collect();
        left.sort();
        assert_eq!(left, paths[2..], "the two newest");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&paths[3]).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(BuildLogs::beside(&dir.path().join("state.json"), 0).start("b", "").unwrap().is_none());
    }
}
