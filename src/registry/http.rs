//! [`Registry`] over HTTP with reqwest: HEAD on the manifest, the anonymous or
//! credentialed bearer-token flow, basic auth, and retries of transient failures.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use rand::RngExt;
use reqwest::header::{ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Client, Response, StatusCode};

use super::auth::{self, Challenge};
use super::{Registry, RegistryError, MANIFEST_ACCEPT};
use crate::reference::ImageRef;

/// Attempts per check for transient failures (connection errors, timeouts, 5xx).
const ATTEMPTS: u32 = 3;
/// First backoff; doubled each retry, with up to 50 % random jitter added.
const BACKOFF: Duration = Duration::from_millis(200);

/// Registry client over HTTP(S).
#[derive(Debug)]
pub struct HttpRegistry {
    client: Client,
    /// Bearer tokens by `host/repository`, reused until the registry refuses one.
    tokens: Mutex<HashMap<String, String>>,
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
}

impl HttpRegistry {
    /// A client whose every request times out after `timeout`.
    ///
    /// # Panics
    /// When the TLS backend cannot be initialised (a broken build, not a runtime condition).
    pub fn new(timeout: Duration) -> Self {
        let client = Client::builder()
            .timeout(timeout)
            .user_agent(concat!("freshen/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("HTTP client builds");
        HttpRegistry { client, tokens: Mutex::new(HashMap::new()) }
    }

    /// Base URL of `image`'s registry: plain HTTP for loopback registries, as dockerd does.
    fn base_url(image: &ImageRef) -> String {
        let scheme = if image.is_loopback_registry() { "http" } else { "https" };
        format!("{scheme}://{}", image.api_host())
    }

    fn unreachable(image: &ImageRef, e: &reqwest::Error) -> RegistryError {
        // reqwest's Display does not include the source chain; the cause is what tells users what to fix.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            message = format!("{message}: {s}");
            source = s.source();
        }
        RegistryError::Unreachable { registry: image.registry().to_string(), message }
    }

    async fn head(&self, image: &ImageRef, authorization: Option<&str>) -> Result<Response, RegistryError> {
        let url = format!("{}/v2/{}/manifests/{}", Self::base_url(image), image.repository(), image.manifest_reference());
        let mut req = self.client.head(&url).header(ACCEPT, MANIFEST_ACCEPT);
        if let Some(a) = authorization {
            req = req.header(AUTHORIZATION, a);
        }
        req.send().await.map_err(|e| Self::unreachable(image, &e))
    }

    /// Answers a 401 challenge; returns the `Authorization` value to retry with.
    async fn authorise(&self, image: &ImageRef, challenge: &str) -> Result<String, RegistryError> {
        let creds = auth::credentials(image.registry());
        let refused = |message: String| RegistryError::Auth { registry: image.registry().into(), image: image.to_string(), message };
        match auth::parse_challenge(challenge) {
            Some(Challenge::Basic) => {
                let (u, p) = creds.ok_or_else(|| refused("basic auth required and no credentials are configured".into()))?;
                use base64_engine::encode;
                Ok(format!("Basic {}", encode(&format!("{u}:{p}"))))
            }
            Some(Challenge::Bearer { realm, service, .. }) => {
                let scope = format!("repository:{}:pull", image.repository());
                let mut req = self.client.get(&realm).query(&[("scope", scope.as_str())]);
                if let Some(s) = &service {
                    req = req.query(&[("service", s.as_str())]);
                }
                if let Some((u, p)) = &creds {
                    req = req.basic_auth(u, Some(p));
                }
                let resp = req.send().await.map_err(|e| Self::unreachable(image, &e))?;
                if !resp.status().is_success() {
                    return Err(refused(format!("token endpoint answered {}", resp.status())));
                }
                let body: TokenResponse = resp.json().await.map_err(|e| refused(format!("bad token response: {e}")))?;
                let token = body.token.or(body.access_token).ok_or_else(|| refused("token response has no token".into()))?;
                let value = format!("Bearer {token}");
                self.tokens.lock().expect("token cache lock").insert(Self::cache_key(image), value.clone());
                Ok(value)
            }
            None => Err(refused(format!("unsupported authentication challenge {challenge:?}"))),
        }
    }

    fn cache_key(image: &ImageRef) -> String {
        format!("{}/{}", image.registry(), image.repository())
    }

    async fn check_once(&self, image: &ImageRef) -> Result<String, RegistryError> {
        let cached = self.tokens.lock().expect("token cache lock").get(&Self::cache_key(image)).cloned();
        let mut resp = self.head(image, cached.as_deref()).await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            let challenge = resp.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            let authorization = self.authorise(image, &challenge).await?;
            resp = self.head(image, Some(&authorization)).await?;
        }
        let status = resp.status();
        let registry = image.registry().to_string();
        match status {
            s if s.is_success() => resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .ok_or(RegistryError::NoDigest { registry, image: image.to_string() }),
            StatusCode::NOT_FOUND => Err(RegistryError::NotFound { image: image.to_string() }),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(RegistryError::Auth { registry, image: image.to_string(), message: format!("answered {status}") })
            }
            s => Err(RegistryError::Status { registry, image: image.to_string(), status: s.as_u16() }),
        }
    }
}

#[async_trait]
impl Registry for HttpRegistry {
    async fn head_digest(&self, image: &ImageRef) -> Result<String, RegistryError> {
        let mut delay = BACKOFF;
        let mut attempt = 1;
        loop {
            match self.check_once(image).await {
                Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                    let jitter = rand::rng().random_range(0..=delay.as_millis() as u64 / 2);
                    tracing::debug!(image = %image, attempt, error = %e, "registry check failed; retrying");
                    tokio::time::sleep(delay + Duration::from_millis(jitter)).await;
                    delay *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// Base64 for the `Basic` header (RFC 7617), from the `base64` crate.
mod base64_engine {
    use base64::Engine as _;

    pub fn encode(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }
}
