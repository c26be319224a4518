//! A build's `secrets`: BuildKit secrets for `RUN --mount=type=secret,id=<id>`,
//! each from a file or an environment variable, read when the config loads.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use super::{violation, Violation};
use crate::credentials::Secret;

/// Largest secret value, in bytes: BuildKit's own limit (moby/buildkit
/// `session/secrets/secretsprovider`: `MaxSecretSize = 500 * 1024`).
pub const MAX_SECRET_BYTES: u64 = 500 * 1024;

/// A BuildKit secret's value: a [`Secret`], whose `Debug` and `Display` print
/// `***`, so it cannot reach a log, an error or the state by accident.
pub type SecretValue = Secret<Arc<[u8]>>;

impl SecretValue {
    /// The forms of the value that build output could show, for the redactor:
    /// the text itself and the text without trailing whitespace (a file's last
    /// newline), when the value is UTF-8.
    pub fn redacted_forms(&self) -> Vec<String> {
        let Ok(text) = std::str::from_utf8(self.expose()) else { return Vec::new() };
        let mut forms = vec![text.to_string()];
        if text.trim_end() != text {
            forms.push(text.trim_end().to_string());
        }
        forms
    }
}

/// Reads the `secrets` object of the build at JSON pointer `at`: `{"file": …}`
/// relative to `base_dir` (a regular file of at most [`MAX_SECRET_BYTES`]), or
/// `{"env": …}`, a variable of freshen's environment. Each one missing or
/// unreadable is a violation at `<at>/secrets/<id>/file` or `…/env`.
pub(super) fn resolve(raw: &Value, at: &str, base_dir: &Path, v: &mut Vec<Violation>) -> BTreeMap<String, SecretValue> {
    let mut out = BTreeMap::new();
    for (id, source) in raw.as_object().into_iter().flatten() {
        let pointer = format!("{at}/secrets/{}", super::escape_pointer(id));
        if let Some(file) = source.get("file").and_then(Value::as_str) {
            let path = base_dir.join(file);
            match crate::files::read_regular(&path, MAX_SECRET_BYTES, "a BuildKit secret") {
                Ok(bytes) => {
                    out.insert(id.clone(), SecretValue::new(bytes.into()));
                }
                Err(e) => violation(
                    v,
                    format!("{pointer}/file"),
                    format!("secret {id:?} cannot be read: {e}; give a readable file, relative to the config's folder"),
                ),
            }
        } else if let Some(name) = source.get("env").and_then(Value::as_str) {
            match std::env::var_os(name) {
                Some(value) => {
                    out.insert(id.clone(), SecretValue::new(value.into_encoded_bytes().into()));
                }
                None => violation(
                    v,
                    format!("{pointer}/env"),
                    format!("secret {id:?}: environment variable {name} is not set where freshen runs; set it (a systemd unit's Environment=, docker run -e) or use {{\"file\": …}}"),
                ),
            }
        }
    }
    out
}
