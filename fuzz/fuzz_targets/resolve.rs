//! Any bytes as a Dockerfile, and as an image reference: a result or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| freshen::fuzzing::resolve(data));
