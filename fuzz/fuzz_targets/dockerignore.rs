//! Any bytes as a .dockerignore plus a path to match: a result, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (patterns, path) = text.split_once('\0').unwrap_or((&text, "a/b/c.txt"));
    if let Ok(ignore) = freshen::engine::context::DockerIgnore::parse(patterns) {
        let _ = ignore.excluded(path);
        let _ = ignore.prune(path);
    }
});
