//! Any bytes as a config file: a config or a ConfigError, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = freshen::config::parse_str(text, std::path::Path::new("/nonexistent/fuzz/config.json"));
    }
});
