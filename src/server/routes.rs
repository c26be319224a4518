//! The endpoints: what each takes and answers. Triggers answer 202 at once and
//! never wait for a cycle; the loop's trigger channel coalesces them.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{authorise, content_type, read_body, Peer, Refusal, Shared};
use crate::event::{self, BodyError, CheckRequest};
use crate::input::Input;
use crate::metrics::Source;
use crate::trigger::Trigger;

/// Media types of distribution notification envelopes (v1 from distribution 2.x, v2 from 3.x).
const ENVELOPE_TYPES: [&str; 3] =
    ["application/vnd.docker.distribution.events.v1+json", "application/vnd.docker.distribution.events.v2+json", "application/json"];

/// Every route, with JSON answers for unknown paths and wrong methods.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route(REGISTRY_HOOK.path, hook_route(&REGISTRY_HOOK))
        .route(DOCKERHUB_HOOK.path, hook_route(&DOCKERHUB_HOOK))
        .route(HARBOR_HOOK.path, hook_route(&HARBOR_HOOK))
        .route(super::git_hook::PATH, post(super::git_hook::handle))
        .route("/v1/check", post(check))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(shared)
}

async fn not_found(uri: Uri) -> Refusal {
    Refusal::new(
        StatusCode::NOT_FOUND,
        format!(
            "no endpoint {}; endpoints: /healthz, /readyz, /metrics, /v1/status, /v1/hooks/registry, /v1/hooks/dockerhub, /v1/hooks/harbor, /v1/hooks/git, /v1/check",
            uri.path()
        ),
    )
}

async fn method_not_allowed(uri: Uri) -> Refusal {
    let allowed = if uri.path().starts_with("/v1/hooks/") || uri.path() == "/v1/check" { "POST" } else { "GET" };
    Refusal::new(StatusCode::METHOD_NOT_ALLOWED, format!("{} takes {allowed}", uri.path()))
}

/// `GET /healthz`: 200 while the process runs.
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when the engine answers and a cycle finished within two
/// intervals; 503 with the reason otherwise.
async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let (finished_at, interval) = {
        let s = shared.status.borrow();
        (s.finished_at, s.interval)
    };
    let reason = match shared.engine_answers().await {
        Err(e) => Some(format!("the engine does not answer: {e}")),
        Ok(()) => match finished_at {
            None => Some("no cycle has finished yet".to_string()),
            Some(at) if at.elapsed() > interval * 2 => Some(format!(
                "the last cycle finished {} ago, more than two intervals ({})",
                humantime::format_duration(std::time::Duration::from_secs(at.elapsed().as_secs())),
                humantime::format_duration(interval * 2)
            )),
            Some(_) => None,
        },
    };
    match reason {
        None => Json(json!({"ready": true})).into_response(),
        Some(r) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"ready": false, "reason": r}))).into_response(),
    }
}

/// `GET /metrics`: Prometheus metrics as OpenMetrics text.
async fn metrics(State(shared): State<Arc<Shared>>, Extension(peer): Extension<Peer>, headers: HeaderMap) -> Result<Response, Refusal> {
    authorise(&shared, &headers, peer, "/metrics")?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], shared.metrics.encode()).into_response())
}

/// `GET /v1/status`: the last cycle's report (the JSON of `--once --format json`),
/// with the loop's `phase`, `cycles` finished and `next_check_at`.
async fn status(State(shared): State<Arc<Shared>>, Extension(peer): Extension<Peer>, headers: HeaderMap) -> Result<Json<Value>, Refusal> {
    authorise(&shared, &headers, peer, "/v1/status")?;
    let s = shared.status.borrow().clone();
    let mut v = match &s.last {
        Some(r) => crate::output::report_json(r),
        None => json!({}),
    };
    v["phase"] = s.phase.to_string().into();
    v["cycles"] = s.cycles.into();
    v["next_check_at"] = s.next_check_at.into();
    Ok(Json(v))
}

/// A 400 for a body that cannot be read, saying what and where.
pub(super) fn bad_body(e: &BodyError) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, format!("invalid body: {e}"))
}

/// Sends a check of `inputs` from `source` unless there are none; answers 202
/// with the images it will check and how many events named nothing watched.
fn accept(shared: &Shared, source: Source, inputs: BTreeSet<Input>, ignored: usize) -> Response {
    let images: Vec<String> = inputs.iter().map(ToString::to_string).collect();
    if inputs.is_empty() {
        // Pulls and layer pushes come with every pull and push: not worth an info line each.
        tracing::debug!(event = "hook_received", %source, checks = 0, ignored, "nothing watched named; no check");
    } else {
        tracing::info!(event = "hook_received", %source, checks = images.len(), ignored, "trigger received");
        shared.triggers.send_from(source, Trigger::Check(inputs));
    }
    (StatusCode::ACCEPTED, Json(json!({"images": images, "ignored": ignored}))).into_response()
}

/// The project the loop runs with, or a 503 before the loop has one.
pub(super) fn project(shared: &Shared) -> Result<Arc<crate::project::Project>, Refusal> {
    shared.status.borrow().project.clone().ok_or_else(|| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "starting; try again in a moment"))
}

/// The body of a `POST` to `path`, checked in the one order that costs an
/// unauthorised client nothing: the token, then the `Content-Type` (one of
/// `types`, or none with `allow_none`), then the body within its limits.
async fn posted(
    shared: &Shared,
    peer: Peer,
    headers: &HeaderMap,
    body: Body,
    path: &str,
    types: &[&str],
    allow_none: bool,
) -> Result<bytes::Bytes, Refusal> {
    authorise(shared, headers, peer, path)?;
    content_type(headers, types, allow_none)?;
    read_body(headers, body).await
}

/// A push webhook: where it is served, the media types it takes, how its body
/// names the images pushed, and the trigger source it counts as.
struct Hook {
    /// The path it is served at.
    path: &'static str,
    /// The `Content-Type`s accepted (a 415 otherwise).
    types: &'static [&'static str],
    /// Reads the body into the images pushed and how many of its events named none.
    parse: fn(&[u8]) -> Result<event::PushEvents, BodyError>,
    /// What `freshen_triggers_total{source}` and the log call it.
    source: Source,
}

/// `POST /v1/hooks/registry`: a distribution notification envelope.
const REGISTRY_HOOK: Hook =
    Hook { path: "/v1/hooks/registry", types: &ENVELOPE_TYPES, parse: event::registry_events, source: Source::Registry };

/// `POST /v1/hooks/dockerhub`: Docker Hub's repository webhook.
const DOCKERHUB_HOOK: Hook =
    Hook { path: "/v1/hooks/dockerhub", types: &["application/json"], parse: event::dockerhub_event, source: Source::DockerHub };

/// `POST /v1/hooks/harbor`: a Harbor webhook in its "Default" payload format.
const HARBOR_HOOK: Hook =
    Hook { path: "/v1/hooks/harbor", types: &["application/json"], parse: event::harbor_event, source: Source::Harbor };

/// The `POST` handler of `hook`: the token, type and limits ([`posted`]), then its payload, then [`accept_pushed`].
fn hook_route(hook: &'static Hook) -> axum::routing::MethodRouter<Arc<Shared>> {
    post(move |State(shared): State<Arc<Shared>>, Extension(peer): Extension<Peer>, headers: HeaderMap, body: Body| async move {
        let body = posted(&shared, peer, &headers, body, hook.path, hook.types, false).await?;
        let (pushed, ignored) = (hook.parse)(&body).map_err(|e| bad_body(&e))?;
        accept_pushed(&shared, hook.source, pushed, ignored)
    })
}

/// Checks the watched images among `pushed`, each confirmed against the digest
/// its event named ([`super::confirm`]); the rest add to `ignored`.
fn accept_pushed(shared: &Shared, source: Source, pushed: Vec<event::Pushed>, mut ignored: usize) -> Result<Response, Refusal> {
    let watched = event::watched(&*project(shared)?, pushed.iter().map(|p| &p.image));
    for p in pushed {
        let input = Input::Image(p.image);
        match (watched.contains(&input), p.digest) {
            (false, _) => ignored += 1,
            (true, Some(digest)) => super::confirm::expect(shared, input, digest),
            (true, None) => {}
        }
    }
    Ok(accept(shared, source, watched, ignored))
}

/// `POST /v1/check`: `{"images": [...]}`, `{"builds": [...]}`, or nothing: everything.
async fn check(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Refusal> {
    let body = posted(&shared, peer, &headers, body, "/v1/check", &["application/json"], true).await?;
    let request = CheckRequest::parse(&body).map_err(|e| bad_body(&e))?;
    if request.is_everything() {
        tracing::info!(event = "hook_received", source = %Source::Api, checks = "all", "trigger received");
        shared.triggers.send_from(Source::Api, Trigger::Tick);
        return Ok((StatusCode::ACCEPTED, Json(json!({"images": "all"}))).into_response());
    }
    let project = project(&shared)?;
    let named = request.inputs(&project).map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e))?;
    let watched = event::watched(&project, named.iter().filter_map(Input::image));
    let ignored = named.len() - watched.len();
    Ok(accept(&shared, Source::Api, watched, ignored))
}
