//! [`Registry`] over HTTP with reqwest: manifest HEAD and index GET, the
//! anonymous or credentialed bearer-token flow and basic auth, retries of
//! transient failures with jittered exponential backoff, and 429 back-off.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use base64::Engine as _;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Client, Method, Response, StatusCode};

use super::auth::{self, Challenge};
use super::{parse_index, parse_rate_limit, Head, Registry, RegistryError, MANIFEST_ACCEPT, MAX_BODY_BYTES, MAX_REGISTRY_WAIT_SECS};
use crate::credentials::{self, Registries};
use crate::reference::ImageRef;

/// Attempts per request for transient failures (connection errors, timeouts, 5xx).
const ATTEMPTS: usize = 3;
/// First backoff; doubled each retry, with a random jitter of up to the delay itself added.
const BACKOFF: Duration = Duration::from_millis(200);
/// Back-off after a 429 without a usable `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Registry client over HTTP(S).
#[derive(Debug)]
pub struct HttpRegistry {
    /// The client for registries without their own CA.
    client: Client,
    /// Clients for registries with a `ca_file`.
    clients: HashMap<String, Client>,
    /// Per-registry settings and credentials from the config.
    registries: Registries,
    /// Bearer tokens by `host/repository`, reused until the registry refuses one.
    tokens: Mutex<HashMap<String, String>>,
    /// Registries that answered 429, and until when no request goes to them.
    blocked: Mutex<HashMap<String, Instant>>,
    /// Each request's timeout, named in the error when it passes.
    timeout: Duration,
    /// (registry, realm host) pairs already warned about, so a foreign token
    /// realm is logged once a process, not once a token.
    foreign_realms: Mutex<std::collections::HashSet<(String, String)>>,
    /// Told of every request sent, for metrics.
    observer: Option<std::sync::Arc<dyn super::Observer>>,
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
}

fn builder(timeout: Duration) -> reqwest::ClientBuilder {
    Client::builder().timeout(timeout).user_agent(concat!("freshen/", env!("CARGO_PKG_VERSION")))
}

/// Builds `b`; where the system has no CA certificates (minimal container
/// images), falls back to the Mozilla roots bundled by `webpki-root-certs`.
fn build_client(b: impl Fn() -> reqwest::ClientBuilder) -> Result<Client, String> {
    match b().build() {
        Ok(c) => Ok(c),
        Err(e) => {
            tracing::debug!(event = "bundled_roots", error = %e, "system CA certificates unavailable; using the bundled Mozilla roots");
            let roots = webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().filter_map(|c| reqwest::Certificate::from_der(c).ok());
            b().tls_certs_only(roots).build().map_err(|e| format!("cannot set up the HTTP client: {e}"))
        }
    }
}

impl HttpRegistry {
    /// A client whose every request times out after `timeout`, with per-registry `registries` settings.
    ///
    /// # Errors
    /// A message naming the registry when its `ca_file` cannot be read or is not PEM.
    pub fn new(timeout: Duration, registries: Registries) -> Result<Self, String> {
        let mut clients = HashMap::new();
        for (host, opts) in &registries {
            if let Some(ca) = &opts.ca_file {
                let pem = crate::files::read_regular(ca, 1024 * 1024, "a ca_file").map_err(|e| format!("registry {host}: ca_file {e}"))?;
                let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| format!("registry {host}: ca_file {}: {e}", ca.display()))?;
                clients.insert(host.clone(), build_client(|| builder(timeout).tls_certs_merge([cert.clone()]))?);
            }
        }
        let client = build_client(|| builder(timeout))?;
        Ok(HttpRegistry {
            client,
            clients,
            registries,
            tokens: Mutex::new(HashMap::new()),
            blocked: Mutex::new(HashMap::new()),
            timeout,
            foreign_realms: Mutex::default(),
            observer: None,
        })
    }

    /// The same client, telling `observer` of every request it sends.
    pub fn with_observer(self, observer: std::sync::Arc<dyn super::Observer>) -> Self {
        HttpRegistry { observer: Some(observer), ..self }
    }

    /// Tells the observer of one request to `image`'s registry and its answer.
    fn observe(&self, image: &ImageRef, method: &Method, answer: &Result<Response, reqwest::Error>) {
        if let Some(o) = &self.observer {
            o.request(image.registry(), method.as_str(), answer.as_ref().ok().map(|r| r.status().as_u16()));
        }
    }

    fn client(&self, image: &ImageRef) -> &Client {
        self.clients.get(image.registry()).unwrap_or(&self.client)
    }

    /// Base URL: plain HTTP for loopback registries (as dockerd does) and `insecure` ones.
    fn base_url(&self, image: &ImageRef) -> String {
        let insecure = self.registries.get(image.registry()).is_some_and(|r| r.insecure);
        let scheme = if insecure || image.is_loopback_registry() { "http" } else { "https" };
        format!("{scheme}://{}", image.api_host())
    }

    fn unreachable(&self, image: &ImageRef, e: &reqwest::Error) -> RegistryError {
        if e.is_timeout() {
            return RegistryError::TimedOut { registry: image.registry().to_string(), after: self.timeout };
        }
        // URLs carry no credentials here, so the chain is safe to show.
        RegistryError::Unreachable { registry: image.registry().to_string(), message: crate::error::chain(e) }
    }

    fn cache_key(image: &ImageRef) -> String {
        format!("{}/{}", image.registry(), image.repository())
    }

    fn check_blocked(&self, image: &ImageRef) -> Result<(), RegistryError> {
        let blocked = self.blocked.lock().expect("blocked lock");
        match blocked.get(image.registry()) {
            Some(until) if *until > Instant::now() => Err(RegistryError::RateLimited {
                registry: image.registry().to_string(),
                retry_after_secs: until.saturating_duration_since(Instant::now()).as_secs().max(1),
            }),
            _ => Ok(()),
        }
    }

    async fn send(&self, method: Method, image: &ImageRef, path: &str, authorization: Option<&str>) -> Result<Response, RegistryError> {
        let url = format!("{}/v2/{}/manifests/{path}", self.base_url(image), image.repository());
        let mut req = self.client(image).request(method.clone(), &url).header(ACCEPT, MANIFEST_ACCEPT);
        if let Some(a) = authorization {
            req = req.header(AUTHORIZATION, a);
        }
        let answer = req.send().await;
        self.observe(image, &method, &answer);
        answer.map_err(|e| self.unreachable(image, &e))
    }

    /// Answers a 401 challenge; returns the `Authorization` value to retry with.
    async fn authorise(&self, image: &ImageRef, challenge: &str) -> Result<String, RegistryError> {
        let creds = credentials::lookup(&self.registries, image.registry());
        let refused = |message: String| RegistryError::Auth { registry: image.registry().into(), image: image.to_string(), message };
        let protocol = |message: String| RegistryError::Protocol { registry: image.registry().into(), image: image.to_string(), message };
        match auth::parse_challenge(challenge) {
            Some(Challenge::Basic) => {
                let c = creds.ok_or_else(|| refused("basic auth required and no credentials are configured".into()))?;
                let (user, secret) = c.basic_auth();
                let raw = format!("{user}:{secret}");
                Ok(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw)))
            }
            Some(Challenge::Bearer { realm, service, .. }) => {
                if creds.is_some() {
                    self.may_send_credentials(image, &realm).map_err(protocol)?;
                }
                let scope = format!("repository:{}:pull", image.repository());
                let mut req = self.client(image).get(&realm).query(&[("scope", scope.as_str())]);
                if let Some(s) = &service {
                    req = req.query(&[("service", s.as_str())]);
                }
                if let Some(c) = &creds {
                    let (user, secret) = c.basic_auth();
                    req = req.basic_auth(user, Some(secret));
                }
                let answer = req.send().await;
                self.observe(image, &Method::GET, &answer);
                let resp = answer.map_err(|e| self.unreachable(image, &e))?;
                if !resp.status().is_success() {
                    return Err(refused(format!("token endpoint answered {}", resp.status())));
                }
                let bytes = read_body(resp, &realm).await.map_err(protocol)?;
                let body: TokenResponse = serde_json::from_slice(&bytes).map_err(|e| protocol(format!("bad token response: {e}")))?;
                let token = body.token.or(body.access_token).ok_or_else(|| protocol("token response has no token".into()))?;
                let value = format!("Bearer {token}");
                self.tokens.lock().expect("token cache lock").insert(Self::cache_key(image), value.clone());
                Ok(value)
            }
            None => Err(refused(format!("unsupported authentication scheme in {:?}", challenge.split(' ').next().unwrap_or_default()))),
        }
    }

    /// Whether credentials for `image`'s registry may go to the token `realm`
    /// a 401 challenge named. Never over plain HTTP, unless the realm is on a
    /// loopback address or is a registry configured `insecure` (the hosts
    /// dockerd itself speaks plain HTTP to): a registry, or anyone between it
    /// and freshen, could otherwise name a realm that harvests them. A realm on
    /// another host than the registry is allowed (Docker Hub's is
    /// `auth.docker.io`) and logged once a process (`token_realm_foreign`).
    ///
    /// # Errors
    /// A message saying why the credentials are kept back and what to do.
    fn may_send_credentials(&self, image: &ImageRef, realm: &str) -> Result<(), String> {
        let url = reqwest::Url::parse(realm).map_err(|e| format!("the token realm {realm:?} is not a URL ({e}); no credentials sent"))?;
        let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
        let authority = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        let registry_host = image.api_host_name();
        let insecure = |name: &str| self.registries.get(name).is_some_and(|r| r.insecure);
        let plain_allowed = crate::reference::is_loopback_host(url.host_str().unwrap_or_default())
            || insecure(&authority)
            || (host == registry_host && insecure(image.registry()));
        match url.scheme() {
            "https" => {}
            "http" if plain_allowed => {}
            "http" => {
                return Err(format!(
                    "the token realm {realm} is plain HTTP on a host that is neither loopback nor configured insecure; \
                     no credentials sent (serve the realm over https, or set registries.\"{authority}\".insecure if that is meant)"
                ))
            }
            other => {
                return Err(format!(
                    "the token realm {realm} has the scheme \"{other}\"; only https (or http to an insecure registry) is used"
                ))
            }
        }
        if host != registry_host && self.foreign_realms.lock().expect("realm lock").insert((image.registry().to_string(), host.clone())) {
            tracing::warn!(event = "token_realm_foreign", registry = %image.registry(), realm_host = %host, "the registry sends its credentials to a token realm on another host");
        }
        Ok(())
    }

    /// One request with auth; maps statuses to errors; records 429s.
    async fn request_once(&self, method: Method, image: &ImageRef, path: &str) -> Result<Response, RegistryError> {
        self.check_blocked(image)?;
        let cached = self.tokens.lock().expect("token cache lock").get(&Self::cache_key(image)).cloned();
        let mut resp = self.send(method.clone(), image, path, cached.as_deref()).await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            let challenge = resp.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            let authorization = self.authorise(image, &challenge).await?;
            resp = self.send(method, image, path, Some(&authorization)).await?;
        }
        let registry = image.registry().to_string();
        match resp.status() {
            s if s.is_success() => Ok(resp),
            StatusCode::TOO_MANY_REQUESTS => {
                let asked = resp.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
                if let Some(secs) = asked.filter(|s| *s > MAX_REGISTRY_WAIT_SECS) {
                    tracing::warn!(event = "retry_after_capped", registry = %registry, retry_after_secs = secs, "Retry-After is longer than 24 h; waiting 24 h");
                }
                let wait = asked.map_or(DEFAULT_RETRY_AFTER, |s| Duration::from_secs(s.min(MAX_REGISTRY_WAIT_SECS)));
                tracing::warn!(event = "rate_limited", registry = %registry, retry_after = %humantime::format_duration(wait), "429 Too Many Requests: no more requests to this registry until Retry-After");
                self.blocked.lock().expect("blocked lock").insert(registry.clone(), crate::deadline::after(wait));
                Err(RegistryError::RateLimited { registry, retry_after_secs: wait.as_secs() })
            }
            StatusCode::NOT_FOUND => Err(RegistryError::NotFound { image: image.to_string() }),
            s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                Err(RegistryError::Auth { registry, image: image.to_string(), message: format!("answered {s}") })
            }
            s => Err(RegistryError::Status { registry, image: image.to_string(), status: s.as_u16() }),
        }
    }

    /// [`Self::request_once`] retried on transient failures, with jittered exponential backoff (backon).
    async fn request(&self, method: Method, image: &ImageRef, path: &str) -> Result<Response, RegistryError> {
        let backoff = ExponentialBuilder::default().with_min_delay(BACKOFF).with_max_times(ATTEMPTS - 1).with_jitter();
        (|| self.request_once(method.clone(), image, path))
            .retry(backoff)
            .when(RegistryError::is_transient)
            .notify(|e, wait| {
                let retry_in = humantime::format_duration(Duration::from_millis(wait.as_millis() as u64));
                tracing::debug!(event = "registry_retry", image = %image, error = %e, %retry_in, "registry request failed; retrying");
            })
            .await
    }

    /// `GET /v2/<name>/manifests/<digest>`, its body (`what`) read within [`MAX_BODY_BYTES`] and parsed by `parse`.
    async fn get_manifest<T>(
        &self,
        image: &ImageRef,
        digest: &str,
        what: &str,
        parse: fn(&[u8]) -> Result<T, String>,
    ) -> Result<T, RegistryError> {
        let resp = self.request(Method::GET, image, digest).await?;
        let protocol =
            |message: String| RegistryError::Protocol { registry: image.registry().to_string(), image: image.to_string(), message };
        let body = read_body(resp, what).await.map_err(protocol)?;
        parse(&body).map_err(protocol)
    }
}

/// The body of `resp`, at most [`MAX_BODY_BYTES`]; `what` names it in the error.
async fn read_body(mut resp: Response, what: &str) -> Result<Vec<u8>, String> {
    let too_large = || format!("{what}: the body is larger than the {MAX_BODY_BYTES}-byte limit");
    if resp.content_length().is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{what}: reading the body: {e}"))? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[async_trait]
impl Registry for HttpRegistry {
    async fn head(&self, image: &ImageRef) -> Result<Head, RegistryError> {
        let resp = self.request(Method::HEAD, image, image.manifest_reference()).await?;
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let rate_limit = parse_rate_limit(header("ratelimit-limit").as_deref(), header("ratelimit-remaining").as_deref());
        if let Some(r) = &rate_limit {
            let window = r.window_secs.map_or_else(|| "unknown".to_string(), |w| format!("{w}s"));
            tracing::debug!(event = "rate_limit", registry = %image.registry(), limit = r.limit, remaining = r.remaining, %window, "rate limit");
        }
        let digest = header("docker-content-digest").ok_or_else(|| RegistryError::Protocol {
            registry: image.registry().to_string(),
            image: image.to_string(),
            message: "no Docker-Content-Digest header".into(),
        })?;
        let media_type = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        Ok(Head { digest, media_type, rate_limit })
    }

    async fn index(&self, image: &ImageRef, digest: &str) -> Result<BTreeMap<String, String>, RegistryError> {
        self.get_manifest(image, digest, "the index", parse_index).await
    }

    async fn config_digest(&self, image: &ImageRef, digest: &str) -> Result<String, RegistryError> {
        self.get_manifest(image, digest, "the manifest", super::parse_config_digest).await
    }
}
