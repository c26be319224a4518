//! The one way freshen reads a file whose path comes from a user or a repository
//! (the config, a `password_file`, a `ca_file`, a Dockerfile, a `.dockerignore`,
//! the state file): [`read_regular`].
//!
//! A FIFO would block the reading thread (the daemon's only runtime thread) until
//! something writes to it, and a device such as `/dev/zero` never ends, while its
//! `metadata().len()` is 0. So the path must be a regular file, checked before
//! opening; it is opened with `O_NONBLOCK` and checked again on the open file (a
//! FIFO swapped in between does not block), and at most `limit` bytes are read.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Missing, unreadable, or any other I/O error.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Not a regular file: a FIFO, a device, a socket or a folder.
    #[error("{}: is a {kind}, not a regular file; point it at a file", .path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// Larger than the limit for this kind of file.
    #[error("{}: larger than the {limit}-byte limit for {what}; is this the right file?", .path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit, in bytes.
        limit: u64,
        /// What the file was read as (`config`, `password_file`, …).
        what: &'static str,
    },
}

impl ReadError {
    /// The I/O error kind, for callers that treat a missing file apart.
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            ReadError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

fn kind_of(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_fifo() {
        "FIFO"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_socket() {
        "socket"
    } else if t.is_dir() {
        "folder"
    } else {
        "special file"
    }
}

/// Reads the regular file at `path` (symlinks followed), at most `limit` bytes;
/// `what` names it in the error.
///
/// # Errors
/// [`ReadError::Io`] when it cannot be opened or read, [`ReadError::NotRegular`]
/// for a FIFO, a device, a socket or a folder, [`ReadError::TooLarge`] over `limit` bytes.
pub fn read_regular(path: &Path, limit: u64, what: &'static str) -> Result<Vec<u8>, ReadError> {
    let io = |source| ReadError::Io { path: path.to_path_buf(), source };
    let not_regular = |t: std::fs::FileType| ReadError::NotRegular { path: path.to_path_buf(), kind: kind_of(t) };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(not_regular(meta.file_type()));
    }
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(not_regular(meta.file_type()));
    }
    let mut bytes = Vec::with_capacity(meta.len().min(limit) as usize);
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge { path: path.to_path_buf(), limit, what });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifos_devices_and_large_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(read_regular(&fifo, 10, "test"), Err(ReadError::NotRegular { kind: "FIFO", .. })));
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(matches!(read_regular(&zero, 10, "test"), Err(ReadError::NotRegular { kind: "character device", .. })));
        let big = dir.path().join("big");
        std::fs::write(&big, [0u8; 11]).unwrap();
        assert!(matches!(read_regular(&big, 10, "test"), Err(ReadError::TooLarge { .. })));
        assert_eq!(read_regular(&big, 11, "test").unwrap().len(), 11);
        assert_eq!(read_regular(&dir.path().join("none"), 1, "test").unwrap_err().io_kind(), Some(std::io::ErrorKind::NotFound));
    }
}
