//! The daemon's HTTP server (`options.listen`): registry webhooks and `/v1/check`
//! in, as triggers on the loop's channel; `/metrics`, `/v1/status`, `/healthz`
//! and `/readyz` out, read from the loop's status channel. It runs in the
//! daemon's own runtime; `--once` never starts it.
//!
//! axum routes the requests (`routes.rs`), and hyper's HTTP/1 connection
//! serves them, because axum's own `serve` has no header read timeout. This
//! module adds only what neither does: the accept loop with its connection
//! limit, the bearer token check, and reading a body with a size limit and a
//! timeout.
//!
//! No request can crash the daemon or cost a registry request by itself: a
//! body is at most [`MAX_BODY_BYTES`], read within [`BODY_TIMEOUT`]; headers
//! come within [`HEADER_TIMEOUT`]; at most [`MAX_CONNECTIONS`] are open; a hook
//! that names no watched image sends no trigger.

mod confirm;
mod git_hook;
mod routes;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::credentials::Secret;
use crate::engine::Pool;
pub use crate::event::MAX_BODY_BYTES;
use crate::metrics::Metrics;
use crate::trigger::{Status, Triggers};

/// Longest a client may take to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a client may take to send a request's body (1 MiB at 100 KiB/s).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections open at once; further clients wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 256;
/// How long `/readyz` reuses the engine's last answer, so that probes cannot flood the engine.
const PING_REUSE: Duration = Duration::from_secs(1);
/// Longest `/readyz` waits for the engine's answer.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The secrets requests are checked against, from the config's server options.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    /// The bearer token (`token_file`); `None` serves without one (loopback only).
    pub token: Option<Secret>,
    /// The git push webhooks' secret (`git_hook_secret_file`); `None` turns `/v1/hooks/git` off.
    pub git_hook_secret: Option<Secret>,
}

impl Keys {
    /// The keys of the server options `server`.
    pub fn of(server: &crate::config::Server) -> Keys {
        Keys { token: server.token.clone(), git_hook_secret: server.git_hook_secret.clone() }
    }
}

/// What the handlers share: the loop's channels, the metrics, the token and the engine.
pub struct Shared {
    /// Where hooks and `/v1/check` send their triggers.
    pub triggers: Triggers,
    /// The loop's status: the project that hooks match against, the last report, the next check.
    pub status: watch::Receiver<Status>,
    /// What `/metrics` encodes.
    pub metrics: Arc<Metrics>,
    /// The bearer token and the git webhook secret, replaced on reload.
    pub keys: watch::Receiver<Keys>,
    /// Asked by `/readyz` whether one of its engines answers.
    pub pool: Arc<Pool>,
    /// The engine's last answer to `/readyz` and when it came.
    pinged: Mutex<Option<(tokio::time::Instant, Result<(), String>)>>,
    /// The digest each watched image's last push event named, until a check sees it.
    expected: confirm::Expectations,
}

impl Shared {
    /// Handler state from the loop's channels, the metrics, the token and the engine.
    pub fn new(
        triggers: Triggers,
        status: watch::Receiver<Status>,
        metrics: Arc<Metrics>,
        keys: watch::Receiver<Keys>,
        pool: Arc<Pool>,
    ) -> Shared {
        Shared { triggers, status, metrics, keys, pool, pinged: Mutex::new(None), expected: Mutex::default() }
    }

    /// Whether an engine of the pool answers, asked at most once per [`PING_REUSE`].
    async fn engine_answers(&self) -> Result<(), String> {
        if let Some((at, answer)) = &*self.pinged.lock().expect("ping lock") {
            if at.elapsed() < PING_REUSE {
                return answer.clone();
            }
        }
        let answer = match tokio::time::timeout(PING_TIMEOUT, self.pool.answers()).await {
            Ok(r) => r,
            Err(_) => Err(format!("the engine did not answer /_ping within {}", humantime::format_duration(PING_TIMEOUT))),
        };
        *self.pinged.lock().expect("ping lock") = Some((tokio::time::Instant::now(), answer.clone()));
        answer
    }
}

/// A client's error: its status and a JSON body `{"error": …}`.
#[derive(Debug)]
pub struct Refusal {
    /// The HTTP status: 4xx.
    pub status: StatusCode,
    /// What is wrong and what to do, for the client; never a secret.
    pub message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal { status, message: message.into() }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(serde_json::json!({"error": self.message}))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer realm=\"freshen\""));
        }
        r
    }
}

/// The client's address, put on each request by the accept loop, for logs.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Checks `Authorization: Bearer <token>` against the configured token, in
/// constant time (SHA-256 of both, compared with `subtle`), so that neither the
/// token's bytes nor its length leak through timing.
///
/// # Errors
/// A 401 [`Refusal`] when the header is missing, not `Bearer`, or the token differs.
/// The log line says which, never the token sent.
pub fn authorise(shared: &Shared, headers: &HeaderMap, peer: Peer, path: &str) -> Result<(), Refusal> {
    let expected = shared.keys.borrow().token.clone();
    let Some(expected) = expected else { return Ok(()) };
    let sent = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let token = sent.and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    let reason = match token {
        None if sent.is_none() => "no Authorization header",
        None => "the Authorization header is not Bearer",
        Some(t) => {
            if same_secret(t.trim().as_bytes(), expected.expose().as_bytes()) {
                return Ok(());
            }
            "the token is wrong"
        }
    };
    tracing::warn!(event = "unauthorized", peer = %peer.0, path, reason, "request refused");
    Err(Refusal::new(StatusCode::UNAUTHORIZED, format!("{reason}: send Authorization: Bearer <the token in options.token_file>")))
}

/// True when `sent` equals `expected`, compared in constant time over their SHA-256
/// digests (with `subtle`), so that neither a secret's bytes nor its length leak through timing.
pub fn same_secret(sent: &[u8], expected: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    let digest = |b: &[u8]| aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b);
    bool::from(digest(sent).as_ref().ct_eq(digest(expected).as_ref()))
}

/// Checks that the request's `Content-Type` is one of `allowed` (parameters such
/// as `charset` aside); `allow_none` accepts a request without one (an empty body).
///
/// # Errors
/// A 415 [`Refusal`] naming the types accepted.
pub fn content_type(headers: &HeaderMap, allowed: &[&str], allow_none: bool) -> Result<(), Refusal> {
    let sent = headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("(not text)"));
    match sent {
        None if allow_none => Ok(()),
        Some(t) if allowed.iter().any(|a| t.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case(a))) => Ok(()),
        _ => Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type {} is not accepted here; send {}", sent.unwrap_or("(none)"), allowed.join(" or ")),
        )),
    }
}

/// Reads a request body: at most [`MAX_BODY_BYTES`] within [`BODY_TIMEOUT`].
///
/// # Errors
/// 413 when the body (or its `Content-Length`) is larger; 408 when it does not
/// arrive in time; 400 when the connection fails while reading it.
pub async fn read_body(headers: &HeaderMap, body: axum::body::Body) -> Result<bytes::Bytes, Refusal> {
    let too_large = || Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than {MAX_BODY_BYTES} bytes"));
    let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if length.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let limited = http_body_util::Limited::new(body, MAX_BODY_BYTES);
    match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Err(_) => Err(Refusal::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("the body did not arrive within {}", humantime::format_duration(BODY_TIMEOUT)),
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(Refusal::new(StatusCode::BAD_REQUEST, format!("reading the body: {e}"))),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// Binds `addr`.
///
/// # Errors
/// The OS error (address in use, no permission), with the address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr} (options.listen): {e}"))
}

/// Serves `listener` until `cancel` fires: each connection in its own task, at
/// most [`MAX_CONNECTIONS`] at once, HTTP/1 with [`HEADER_TIMEOUT`].
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, cancel: CancellationToken) {
    let confirming = tokio::spawn(confirm::confirm(shared.clone()));
    let router = routes::router(shared);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let addr = listener.local_addr().map_or_else(|_| "?".into(), |a| a.to_string());
    tracing::info!(event = "listening", %addr, "HTTP server listening");
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, most often: wait rather than spin.
                    tracing::warn!(event = "accept_failed", error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = cancel.cancelled() => {
                confirming.abort();
                return;
            }
        };
        let router = router.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(Peer(peer));
                let mut router = router.clone();
                async move { tower_service::Service::call(&mut router, req.map(axum::body::Body::new)).await }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(event = "connection_failed", peer = %peer, error = %e, "HTTP connection ended with an error");
                    }
                }
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(slot);
        });
    }
}
