//! Entry points shared by the cargo-fuzz targets (`fuzz/fuzz_targets/`) and
//! their regression test (`tests/fuzz_regressions.rs`, which replays every
//! saved finding under `tests/fixtures/fuzz/<target>/`). Each takes any bytes
//! and must return, whatever they are: a result or an error, never a panic,
//! an endless loop, or unbounded memory.

use std::path::Path;

use crate::context::DockerIgnore;
use crate::dockerfile::{self, ResolveInput, WatchStages};
use crate::reference::ImageRef;

/// The config loader over `data` as a config file's text (non-UTF-8 bytes are refused
/// by [`crate::config::load`] before parsing, so they are not passed on).
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::parse_str(text, Path::new("/nonexistent/fuzz/config.json"));
    }
}

/// The `.dockerignore` matcher: `data` is the file, optionally followed by a NUL and a
/// path to match (default `a/b/c.txt`).
pub fn dockerignore(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (patterns, path) = text.split_once('\0').unwrap_or((&text, "a/b/c.txt"));
    if let Ok(ignore) = DockerIgnore::parse(patterns) {
        let _ = ignore.excluded(path);
        let _ = ignore.prune(path);
    }
}

/// The Dockerfile resolver (every stage watched) and the reference normaliser, both over `data`.
pub fn resolve(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let input = ResolveInput { engine_platform: Some("linux/amd64"), ..Default::default() };
    if let Ok(r) = dockerfile::resolve(&text, &input) {
        let _ = r.watched(WatchStages::All);
    }
    let _ = ImageRef::parse(&text);
}
