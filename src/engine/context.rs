//! The build context: a tar of the context folder, with `.dockerignore` applied
//! on the client side as the Docker CLI does (the engine's classic builder
//! expects the client to have done it).
//!
//! `.dockerignore` rules (Docker docs, "Build context" → ".dockerignore files";
//! moby/patternmatcher): one pattern a line, `#` comments, `!` re-includes, the
//! last matching pattern wins, a pattern that matches a folder excludes all it
//! holds, a leading `/` is dropped, `*` and `?` never cross `/`, and `**`
//! matches any number of folders. Matching uses `globset`; this module only adds
//! the Docker-specific layer (order, exceptions, parent folders). The Dockerfile
//! and `.dockerignore` are always sent, as the CLI does.
//!
//! Symlinks are archived as links and never followed. The archive is written to
//! a temporary file and streamed from there, so memory use does not grow with
//! the context's size.

use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};

use super::EngineError;

/// Name under which a Dockerfile from outside the context is added to the archive.
pub const INJECTED_DOCKERFILE: &str = ".freshen.Dockerfile";

/// A compiled `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    patterns: Vec<(GlobMatcher, bool)>,
    has_exceptions: bool,
}

impl DockerIgnore {
    /// Compiles `.dockerignore` text. Invalid patterns are reported with their line.
    ///
    /// # Errors
    /// A message naming the 1-based line and the pattern that does not compile.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut patterns = Vec::new();
        let mut has_exceptions = false;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exception, pat) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let pat = clean(pat);
            if pat.is_empty() || pat == "." {
                continue;
            }
            has_exceptions |= exception;
            let glob = GlobBuilder::new(&pat)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| format!(".dockerignore line {}: pattern {line:?}: {e}", i + 1))?;
            patterns.push((glob.compile_matcher(), exception));
        }
        Ok(DockerIgnore { patterns, has_exceptions })
    }

    /// True when `rel` (a `/`-separated path inside the context) is excluded:
    /// the last pattern matching it or one of its parent folders decides.
    pub fn excluded(&self, rel: &str) -> bool {
        let mut excluded = false;
        for (m, exception) in &self.patterns {
            let hit = m.is_match(rel) || parents(rel).any(|p| m.is_match(p));
            if hit {
                excluded = !exception;
            }
        }
        excluded
    }

    /// True when a folder may be skipped whole: it is excluded and no `!` pattern could re-include a file inside it.
    pub fn prune(&self, rel_dir: &str) -> bool {
        !self.has_exceptions && self.excluded(rel_dir)
    }
}

/// `a/b/c` → `a`, `a/b`.
fn parents(rel: &str) -> impl Iterator<Item = &str> {
    rel.match_indices('/').map(move |(i, _)| &rel[..i])
}

/// Lexical clean as Go's `filepath.Clean`, then drop a leading `/`.
fn clean(pat: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(pat).components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str().unwrap_or_default()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.join("/")
}

/// Largest `.dockerignore` read, in bytes (16 MiB).
const MAX_DOCKERIGNORE_BYTES: u64 = 16 * 1024 * 1024;

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
    let ignore_path = context.join(".dockerignore");
    let ignore_text = match crate::files::read_regular(&ignore_path, MAX_DOCKERIGNORE_BYTES, "a .dockerignore") {
        Ok(b) => String::from_utf8(b).map_err(|_| cerr(&ignore_path, "not UTF-8 text".into()))?,
        Err(e) if e.io_kind() == Some(std::io::ErrorKind::NotFound) => String::new(),
        Err(e) => return Err(cerr(&ignore_path, e.to_string())),
    };
    let ignore = DockerIgnore::parse(&ignore_text).map_err(|m| cerr(&ignore_path, m))?;
    let inside = dockerfile.strip_prefix(context).ok().map(|p| p.to_string_lossy().replace('\\', "/"));
    let file = tempfile::tempfile().map_err(|e| cerr(context, format!("cannot create a temporary file: {e}")))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    tar.follow_symlinks(false);
    let mut walker = walkdir::WalkDir::new(context).follow_links(false).sort_by_file_name().min_depth(1).into_iter();
    while let Some(entry) = walker.next() {
        let entry = entry.map_err(|e| cerr(e.path().unwrap_or(context), with_hint(e.to_string(), e.io_error().map(|io| io.kind()))))?;
        let rel = entry.path().strip_prefix(context).expect("walkdir stays under its root").to_string_lossy().replace('\\', "/");
        let always = (engine_reads_dockerignore && rel == ".dockerignore") || inside.as_deref() == Some(rel.as_str());
        if entry.file_type().is_dir() && ignore.prune(&rel) {
            walker.skip_current_dir();
            continue;
        }
        if !always && ignore.excluded(&rel) {
            continue;
        }
        if engine_reads_dockerignore && inside.is_none() && rel == ".dockerignore" {
            continue; // written below with the injected Dockerfile listed
        }
        // The name goes in byte for byte (`a\xff` and `a\xfe` stay two files), as `docker build` sends it.
        let name = entry.path().strip_prefix(context).expect("walkdir stays under its root");
        let t = entry.file_type();
        let archived = if t.is_socket() {
            continue; // A socket cannot be archived; `docker build` leaves it out too.
        } else if t.is_fifo() || t.is_char_device() || t.is_block_device() {
            append_special(&mut tar, entry.path(), name)
        } else {
            tar.append_path_with_name(entry.path(), name)
        };
        archived.map_err(|e| cerr(entry.path(), with_hint(format!("cannot archive: {e}"), Some(e.kind()))))?;
    }
    let name = match inside {
        Some(n) => n,
        None => {
            let text = crate::files::read_regular(dockerfile, crate::project::MAX_DOCKERFILE_BYTES, "a Dockerfile")
                .map_err(|e| cerr(dockerfile, e.to_string()))?;
            append_bytes(&mut tar, INJECTED_DOCKERFILE, &text).map_err(|e| cerr(dockerfile, e.to_string()))?;
            if engine_reads_dockerignore {
                let ignore = format!("{ignore_text}\n{INJECTED_DOCKERFILE}\n.dockerignore\n");
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

/// Adds what to do to a permission error: the file is in the context, so it is sent unless ignored.
fn with_hint(message: String, kind: Option<std::io::ErrorKind>) -> String {
    match kind {
        Some(std::io::ErrorKind::PermissionDenied) => {
            format!("{message}; make it readable by the user freshen runs as, or exclude it in the context's .dockerignore")
        }
        _ => message,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_rules() {
        let i = DockerIgnore::parse("# c\n*.md\n!README.md\n/build\nsecret/**\n**/*.tmp\n").unwrap();
        assert!(i.excluded("a.md"));
        assert!(!i.excluded("README.md"));
        assert!(!i.excluded("docs/a.md"), "* does not cross /");
        assert!(i.excluded("build/x/y"), "a folder match excludes what it holds");
        assert!(i.excluded("secret/k"));
        assert!(i.excluded("x/y/z.tmp") && i.excluded("z.tmp"));
        assert!(!i.excluded("src/main.rs"));
    }

    #[test]
    fn bad_pattern_names_line() {
        let e = DockerIgnore::parse("ok\n[z-a\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
    }
}
