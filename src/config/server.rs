//! `options.listen`, `options.token_file`, `options.allow_unauthenticated_loopback`
//! and `options.git_hook_secret_file`: the daemon's HTTP server, and who may use it.

use std::net::SocketAddr;
use std::path::Path;

use serde_json::Value;

use super::{read_secret, violation, Violation};
use crate::credentials::Secret;

/// The shortest token accepted: a short one can be guessed over the network.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The daemon's HTTP server, as the config asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Where the server listens (`listen`).
    pub listen: SocketAddr,
    /// The bearer token every endpoint but `/healthz` and `/readyz` requires;
    /// `None` only for a loopback address with `allow_unauthenticated_loopback`.
    pub token: Option<Secret>,
    /// The secret git forges sign their push webhooks with (`git_hook_secret_file`):
    /// `POST /v1/hooks/git` takes only requests signed with it; `None` turns that endpoint off.
    pub git_hook_secret: Option<Secret>,
}

/// Reads the server options. `listen` that is not `ip:port`, a `token_file`
/// that cannot be read or is shorter than [`MIN_TOKEN_CHARS`], and `listen`
/// without `token_file` (unless loopback with `allow_unauthenticated_loopback`)
/// are violations at `/options/<key>`; `None` then, and when `listen` is absent.
pub(super) fn resolve(raw: &Value, base_dir: &Path, v: &mut Vec<Violation>) -> Option<Server> {
    if raw.get("listen").is_none() && raw.get("git_hook_secret_file").is_some() {
        let why = "git_hook_secret_file needs listen: git forges post their push webhooks to the daemon's HTTP server";
        violation(v, "/options/git_hook_secret_file".into(), format!("{why}; set options.listen, e.g. \"0.0.0.0:9780\""));
    }
    let text = raw.get("listen").and_then(Value::as_str)?;
    let listen: SocketAddr = match text.parse() {
        Ok(a) => a,
        Err(e) => {
            let hint = "write ip:port, e.g. \"127.0.0.1:9780\", \"0.0.0.0:9780\" or \"[::1]:9780\"";
            violation(v, "/options/listen".into(), format!("{text:?} is not an address ({e}); {hint}"));
            return None;
        }
    };
    let token = match raw.get("token_file").and_then(Value::as_str) {
        Some(file) => match read_secret(&base_dir.join(file), "a token_file") {
            Ok(t) => {
                if t.chars().count() < MIN_TOKEN_CHARS || t.chars().any(char::is_control) {
                    let what = format!("the token in {file} must be one line of at least {MIN_TOKEN_CHARS} characters");
                    violation(v, "/options/token_file".into(), format!("{what}; make one with `openssl rand -hex 32 > {file}`"));
                    return None;
                }
                Some(Secret::new(t))
            }
            Err(e) => {
                violation(v, "/options/token_file".into(), format!("{e}; the file holds the bearer token of the HTTP server"));
                return None;
            }
        },
        None => None,
    };
    let open = raw.get("allow_unauthenticated_loopback").and_then(Value::as_bool).unwrap_or(false);
    if token.is_none() && !(open && listen.ip().is_loopback()) {
        let why = if open {
            format!("{listen} is not a loopback address, so allow_unauthenticated_loopback does not apply")
        } else {
            "every endpoint but /healthz and /readyz needs a token".to_string()
        };
        violation(
            v,
            "/options/listen".into(),
            format!("listen without token_file: {why}; set options.token_file to a file holding the token"),
        );
        return None;
    }
    let git_hook_secret = match raw.get("git_hook_secret_file").and_then(Value::as_str) {
        Some(file) => match read_secret(&base_dir.join(file), "a git_hook_secret_file") {
            Ok(t) if t.chars().count() >= MIN_TOKEN_CHARS => Some(Secret::new(t)),
            Ok(_) => {
                let what = format!("the secret in {file} must be at least {MIN_TOKEN_CHARS} characters");
                violation(v, "/options/git_hook_secret_file".into(), format!("{what}; make one with `openssl rand -hex 32 > {file}`"));
                return None;
            }
            Err(e) => {
                violation(
                    v,
                    "/options/git_hook_secret_file".into(),
                    format!("{e}; the file holds the secret of the git forges' push webhooks"),
                );
                return None;
            }
        },
        None => None,
    };
    Some(Server { listen, token, git_hook_secret })
}
