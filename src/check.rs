//! A cycle's checks: the current digest of every distinct watched image, each
//! checked once, at most `check_concurrency` at a time.
//!
//! Where a digest comes from, in order:
//! - another build's tag: that image's ID in the engine;
//! - the registry ([`crate::registry::check`]: one HEAD, plus one index GET
//!   only when a multi-platform image's digest changed);
//! - for a base the registry does not serve: the engine's local image ID,
//!   unless the registry served it before (then it is an outage, not a change).
//!
//! A registry whose `RateLimit-Remaining` fell under `rate_limit_reserve` is
//! checked less often until its window resets: between checks, the last digest stands.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures_util::stream::{self, StreamExt};
use serde::Serialize;

use crate::engine::Engine;
use crate::plan::{Current, Observed};
use crate::project::Project;
use crate::reference::ImageRef;
use crate::registry::{self, Registry};
use crate::state::{self, DigestSource, ImageRecord, RegistryRecord, State};

/// One watched image's check, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// Normalised reference.
    pub image: String,
    /// Digest recorded before this cycle.
    pub old: Option<String>,
    /// Digest now, if the check worked.
    pub new: Option<String>,
    /// Where `new` came from.
    pub source: Option<DigestSource>,
    /// Why the check failed.
    pub error: Option<String>,
    /// The check was deferred to spare the registry's rate-limit reserve; `new` is the last digest.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deferred: bool,
}

/// What the checks need.
pub struct Checker<'a> {
    /// The project.
    pub project: &'a Project,
    /// The engine.
    pub engine: &'a dyn Engine,
    /// The registry client.
    pub registry: &'a dyn Registry,
    /// State: read for prior digests; updated with digests and rate limits seen.
    pub state: &'a Arc<Mutex<State>>,
    /// Checks at once.
    pub concurrency: usize,
    /// Rate-limit reserve.
    pub rate_limit_reserve: u64,
}

struct One {
    record: ImageRecord,
    rate_limit: Option<registry::RateLimit>,
    deferred: bool,
}

impl Checker<'_> {
    /// Checks every distinct watched image once; records what was seen in state (not saved).
    pub async fn check_all(&self) -> (HashMap<String, Observed>, Vec<CheckReport>) {
        let mut images: Vec<ImageRef> =
            self.project.builds.values().filter(|a| a.resolution.is_ok()).flat_map(|a| a.watched.iter().cloned()).collect();
        images.sort();
        images.dedup();
        let (prior, limits) = {
            let st = self.state.lock().expect("state lock");
            (st.images.clone(), st.registries.clone())
        };
        let now = state::now_secs();
        let results: Vec<(ImageRef, Result<One, String>)> = stream::iter(images)
            .map(|image| {
                let p = prior.get(image.as_str()).cloned();
                let deferred = p.clone().filter(|p| p.source == DigestSource::Registry && self.defer(limits.get(image.registry()), p, now));
                async move {
                    let r = match deferred {
                        Some(record) => Ok(One { record, rate_limit: None, deferred: true }),
                        None => self.check_one(&image, p.as_ref(), now).await,
                    };
                    (image, r)
                }
            })
            .buffer_unordered(self.concurrency.max(1))
            .collect()
            .await;
        let mut current = HashMap::new();
        let mut checks = Vec::new();
        let mut st = self.state.lock().expect("state lock");
        for (image, r) in results {
            let old = prior.get(image.as_str()).map(|p| p.digest.clone());
            match r {
                Ok(one) => {
                    let c = &one.record;
                    current.insert(
                        image.to_string(),
                        Observed::Digest(Current { digest: c.digest.clone(), platforms: c.platforms.clone(), since: c.since }),
                    );
                    let report = CheckReport {
                        image: image.to_string(),
                        old,
                        new: Some(c.digest.clone()),
                        source: Some(c.source),
                        error: None,
                        deferred: one.deferred,
                    };
                    checks.push(report);
                    if let Some(r) = one.rate_limit {
                        let rec = RegistryRecord { limit: r.limit, remaining: r.remaining, window_secs: r.window_secs, seen_at: now };
                        st.registries.insert(image.registry().to_string(), rec);
                    }
                    st.images.insert(image.to_string(), one.record);
                }
                Err(e) => {
                    tracing::warn!(event = "check_failed", image = %image, error = %e, "check failed");
                    current.insert(image.to_string(), Observed::Failed(e.clone()));
                    checks.push(CheckReport { image: image.to_string(), old, new: None, source: None, error: Some(e), deferred: false });
                }
            }
        }
        checks.sort_by(|a, b| a.image.cmp(&b.image));
        (current, checks)
    }

    /// True when `image`'s registry is under its rate-limit reserve and the image was
    /// checked too recently: the remaining quota is spread over the rest of the window.
    fn defer(&self, limit: Option<&RegistryRecord>, prior: &ImageRecord, now: u64) -> bool {
        let Some(l) = limit else { return false };
        let window = l.window_secs.unwrap_or(3600);
        if l.remaining >= self.rate_limit_reserve || now >= l.seen_at + window {
            return false;
        }
        let spacing = window.saturating_sub(now - l.seen_at) / (l.remaining + 1);
        now < prior.seen_at + spacing
    }

    async fn check_one(&self, image: &ImageRef, prior: Option<&ImageRecord>, now: u64) -> Result<One, String> {
        let record = |digest: String, source, platforms| {
            let since = prior.filter(|p| p.digest == digest).map_or(now, |p| if p.since == 0 { p.seen_at } else { p.since });
            ImageRecord { digest, source, seen_at: now, since, platforms }
        };
        let plain = |r: ImageRecord| One { record: r, rate_limit: None, deferred: false };
        if self.project.producer_of(image).is_some() {
            return match self.engine.inspect(image.as_str()).await {
                Ok(Some(info)) => Ok(plain(record(info.id, DigestSource::Build, BTreeMap::new()))),
                Ok(None) => Err("not built yet".into()),
                Err(e) => Err(e.to_string()),
            };
        }
        let known = prior.filter(|p| p.source == DigestSource::Registry).map(|p| (p.digest.as_str(), &p.platforms));
        let registry_error = match registry::check(self.registry, image, known).await {
            Ok(c) => {
                return Ok(One { record: record(c.digest, DigestSource::Registry, c.platforms), rate_limit: c.rate_limit, deferred: false })
            }
            Err(e) => e,
        };
        // A registry that served this image before and fails now is an outage, not a
        // change: falling back to the local image ID would look like a new digest.
        if prior.is_some_and(|p| p.source == DigestSource::Registry) {
            return Err(registry_error.to_string());
        }
        match self.engine.inspect(image.as_str()).await {
            Ok(Some(info)) => {
                tracing::debug!(event = "check_local", image = %image, error = %registry_error, "registry check failed; using the local image ID");
                Ok(plain(record(info.id, DigestSource::Local, BTreeMap::new())))
            }
            Ok(None) => Err(format!("{registry_error}, and the engine has no local image {image}")),
            Err(e) => Err(format!("{registry_error}; engine: {e}")),
        }
    }
}
