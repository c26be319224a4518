//! `POST /v1/hooks/git`: a git forge's push webhook schedules a check of the
//! watched git sources it names.
//!
//! Forges cannot send freshen's bearer token, so this endpoint is verified by
//! the webhook's secret (`options.git_hook_secret_file`) instead:
//! - GitHub and Gitea sign the raw body: `X-Hub-Signature-256: sha256=<hex
//!   HMAC-SHA256(secret, body)>` (GitHub docs, "Validating webhook
//!   deliveries"); Gitea also sends `X-Gitea-Signature: <hex>`.
//! - GitLab sends the secret itself: `X-Gitlab-Token` (GitLab docs, "Webhooks:
//!   secret token").
//!
//! The order costs an unsigned client nothing: the token header (GitLab) is
//! compared before the body is read; a signature is verified on the body
//! before it is parsed; only then is anything matched or triggered. A bad
//! signature is a 401 and sends no trigger, so it costs no git request.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{content_type, read_body, Peer, Refusal, Shared};
use crate::metrics::Source;
use crate::trigger::Trigger;

/// Where the endpoint is served.
pub const PATH: &str = "/v1/hooks/git";

/// Event header values that are pushes: GitHub's and Gitea's `push`, GitLab's `Push Hook` and `Tag Push Hook`.
const PUSH_EVENTS: [&str; 3] = ["push", "Push Hook", "Tag Push Hook"];

/// How a request proved it knows the secret.
enum Proof {
    /// GitLab's `X-Gitlab-Token`, already compared.
    Token,
    /// The HMAC-SHA256 the body must have (GitHub's `X-Hub-Signature-256`, Gitea's `X-Gitea-Signature`).
    Signature(Vec<u8>),
}

/// A 401 for a request without the secret, logged (`unauthorized`) without what it sent.
fn unauthorized(peer: Peer, reason: &str) -> Refusal {
    tracing::warn!(event = "unauthorized", peer = %peer.0, path = PATH, reason, "git webhook refused");
    Refusal::new(
        StatusCode::UNAUTHORIZED,
        format!("{reason}: sign the webhook with the secret in options.git_hook_secret_file (GitHub, Gitea: X-Hub-Signature-256; GitLab: X-Gitlab-Token)"),
    )
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).map(|v| v.to_str().unwrap_or(""))
}

/// What the request offers as proof, the GitLab token checked against `secret` at once.
fn proof(headers: &HeaderMap, secret: &[u8], peer: Peer) -> Result<Proof, Refusal> {
    if let Some(token) = header(headers, "x-gitlab-token") {
        if super::same_secret(token.as_bytes(), secret) {
            return Ok(Proof::Token);
        }
        return Err(unauthorized(peer, "the X-Gitlab-Token is wrong"));
    }
    let signature = header(headers, "x-hub-signature-256")
        .map(|s| s.strip_prefix("sha256=").ok_or("X-Hub-Signature-256 does not start with sha256="))
        .or_else(|| header(headers, "x-gitea-signature").map(Ok));
    match signature {
        None => Err(unauthorized(peer, "no X-Hub-Signature-256, X-Gitea-Signature or X-Gitlab-Token header")),
        Some(Err(reason)) => Err(unauthorized(peer, reason)),
        Some(Ok(hex_text)) => match hex::decode(hex_text.trim()) {
            Ok(bytes) => Ok(Proof::Signature(bytes)),
            Err(_) => Err(unauthorized(peer, "the signature is not hex")),
        },
    }
}

/// True when `signature` is the HMAC-SHA256 of `body` with `secret`, compared in constant time.
fn signed(secret: &[u8], body: &[u8], signature: &[u8]) -> bool {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    aws_lc_rs::hmac::verify(&key, body, signature).is_ok()
}

/// The handler: the proof, the type and limits, the signature, then the payload.
///
/// # Errors
/// A [`Refusal`]: 403 when no `git_hook_secret_file` is set; 401 without a valid proof;
/// 415 for a body that is not JSON; 413 or 408 for one too large or too slow; 400 for a
/// payload that names no ref or repository (saying where); 503 before the loop has a project.
pub async fn handle(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let secret = shared.keys.borrow().git_hook_secret.clone();
    let Some(secret) = secret else {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "git webhooks are off: set options.git_hook_secret_file to a file holding their secret",
        ));
    };
    let secret = secret.expose().as_bytes().to_vec();
    let proof = proof(&headers, &secret, peer)?;
    content_type(&headers, &["application/json"], false)?;
    let body = read_body(&headers, body).await?;
    if let Proof::Signature(signature) = &proof {
        if !signed(&secret, &body, signature) {
            return Err(unauthorized(peer, "the signature does not match the body"));
        }
    }
    let event = ["x-github-event", "x-gitea-event", "x-gogs-event", "x-gitlab-event"].iter().find_map(|h| header(&headers, h));
    if event.is_some_and(|e| !PUSH_EVENTS.contains(&e)) {
        // A ping, an issue, a pull request: nothing to check.
        tracing::debug!(event = "hook_received", source = %Source::Git, kind = event.unwrap_or_default(), checks = 0, "not a push; no check");
        return Ok((StatusCode::ACCEPTED, Json(json!({"inputs": [], "ignored": 1}))).into_response());
    }
    let push = crate::git_event::git_push(&body).map_err(|e| super::routes::bad_body(&e))?;
    let (inputs, ignored) = crate::git_event::watched(&*super::routes::project(&shared)?, &push);
    let names: Vec<String> = inputs.iter().map(ToString::to_string).collect();
    if inputs.is_empty() {
        tracing::debug!(event = "hook_received", source = %Source::Git, git_ref = %push.git_ref, checks = 0, "no watched repository and ref named; no check");
    } else {
        tracing::info!(event = "hook_received", source = %Source::Git, git_ref = %push.git_ref, checks = names.len(), "trigger received");
        shared.triggers.send_from(Source::Git, Trigger::Check(inputs));
    }
    Ok((StatusCode::ACCEPTED, Json(json!({"inputs": names, "ignored": ignored}))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        let secret = b"It's a Secret to Everybody";
        // GitHub's documented example ("Validating webhook deliveries": "Testing the webhook payload validation").
        let want = hex::decode("757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17").unwrap();
        assert!(signed(secret, b"Hello, World!", &want));
        assert!(!signed(secret, b"Hello, World?", &want));
        assert!(!signed(b"another secret", b"Hello, World!", &want));
    }
}
