//! The build context: a tar of the context folder, with `.dockerignore` applied
//! on the client side as the Docker CLI does (the engine's classic builder
//! expects the client to have done it).
//!
//! Which entries are sent is decided by [`crate::context::Context::walk`]: the
//! same walk the context's content digest watches.
//!
//! Symlinks are archived as links and never followed. The archive is written to
//! a temporary file and streamed from there, so memory use does not grow with
//! the context's size.

use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::EngineError;
use crate::context::{with_hint, Context, ContextError, Entry};

/// Name under which a Dockerfile from outside the context is added to the archive.
pub const INJECTED_DOCKERFILE: &str = ".freshen.Dockerfile";

/// Writes the build context of `context` to a temporary file as a tar archive.
///
/// Returns the file (rewound) and the Dockerfile's name inside the archive.
/// When `dockerfile` lies outside `context`, it is added as [`INJECTED_DOCKERFILE`].
///
/// `engine_reads_dockerignore` is true for the classic builder, which reads the
/// archived `.dockerignore` and drops the files it lists, the Dockerfile and
/// `.dockerignore` included (moby: `removeDockerfile`): the injected Dockerfile
/// is listed there, so the build never sees it. BuildKit does not read the
/// `.dockerignore` of an uploaded context (moby's builder-next unpacks the tar
/// as it is), so for it `.dockerignore` is sent only when it does not exclude
/// itself, and an injected Dockerfile stays visible to `COPY .`: without a
/// session that serves the Dockerfile on its own, as the docker CLI's does, the
/// archive is the only way in.
///
/// # Errors
/// [`EngineError::Context`] naming the file when a file cannot be read, or the
/// `.dockerignore` line when a pattern is invalid.
pub fn archive(context: &Path, dockerfile: &Path, engine_reads_dockerignore: bool) -> Result<(std::fs::File, String), EngineError> {
    let cerr = |path: &Path, message: String| EngineError::Context { path: path.to_path_buf(), message };
    let ctx = Context::open(context, dockerfile).map_err(EngineError::from)?;
    let ignore_path = context.join(".dockerignore");
    let file = tempfile::tempfile().map_err(|e| cerr(context, format!("cannot create a temporary file: {e}")))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    tar.follow_symlinks(false);
    let inside = ctx.dockerfile_inside.clone();
    ctx.walk(engine_reads_dockerignore, |Entry { entry, rel }| {
        if engine_reads_dockerignore && inside.is_none() && rel == ".dockerignore" {
            return Ok(()); // written below with the injected Dockerfile listed
        }
        // The name goes in byte for byte (`a\xff` and `a\xfe` stay two files), as `docker build` sends it.
        let name = entry.path().strip_prefix(context).expect("walkdir stays under its root");
        let t = entry.file_type();
        let archived = if t.is_socket() {
            return Ok(()); // A socket cannot be archived; `docker build` leaves it out too.
        } else if t.is_fifo() || t.is_char_device() || t.is_block_device() {
            append_special(&mut tar, entry.path(), name)
        } else {
            tar.append_path_with_name(entry.path(), name)
        };
        archived.map_err(|e| ContextError {
            path: entry.path().to_path_buf(),
            message: with_hint(format!("cannot archive: {e}"), Some(e.kind())),
        })
    })
    .map_err(EngineError::from)?;
    let name = match inside {
        Some(n) => n,
        None => {
            let text = crate::files::read_regular(dockerfile, crate::project::MAX_DOCKERFILE_BYTES, "a Dockerfile")
                .map_err(|e| cerr(dockerfile, e.to_string()))?;
            append_bytes(&mut tar, INJECTED_DOCKERFILE, &text).map_err(|e| cerr(dockerfile, e.to_string()))?;
            if engine_reads_dockerignore {
                let ignore = format!("{}\n{INJECTED_DOCKERFILE}\n.dockerignore\n", ctx.ignore_text);
                append_bytes(&mut tar, ".dockerignore", ignore.as_bytes()).map_err(|e| cerr(&ignore_path, e.to_string()))?;
            }
            INJECTED_DOCKERFILE.to_string()
        }
    };
    let mut writer = tar.into_inner().map_err(|e| cerr(context, e.to_string()))?;
    writer.flush().map_err(|e| cerr(context, e.to_string()))?;
    let mut file = writer.into_inner().map_err(|e| cerr(context, e.to_string()))?;
    use std::io::Seek;
    file.rewind().map_err(|e| cerr(context, e.to_string()))?;
    Ok((file, name))
}

/// Archives a FIFO or a device node at `path` as a tar entry of its type, under `name`,
/// without opening it (opening a FIFO would block; reading a device would never end).
/// Written here because `tar::Builder` names such entries by their full source path.
fn append_special<W: Write>(tar: &mut tar::Builder<W>, path: &Path, name: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path)?;
    let t = meta.file_type();
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
    header.set_size(0);
    header.set_entry_type(if t.is_fifo() {
        tar::EntryType::Fifo
    } else if t.is_char_device() {
        tar::EntryType::Char
    } else {
        tar::EntryType::Block
    });
    if !t.is_fifo() {
        header.set_device_major(libc::major(meta.rdev()))?;
        header.set_device_minor(libc::minor(meta.rdev()))?;
    }
    tar.append_data(&mut header, name, std::io::empty())
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, name: &str, data: &[u8]) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, PathBuf::from(name), data)
}
