//! Any bytes as a config file: a config or a ConfigError, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| freshen::fuzzing::config(data));
