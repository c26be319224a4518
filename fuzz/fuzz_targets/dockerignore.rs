//! Any bytes as a .dockerignore plus a path to match: a result, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| freshen::fuzzing::dockerignore(data));
