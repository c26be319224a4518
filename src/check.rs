//! A cycle's checks: the current digest of every distinct watched image, each
//! checked once, at most `check_concurrency` at a time per registry.
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

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures_util::stream::{self, StreamExt};
use tokio::sync::Semaphore;

use crate::engine::Engine;
use crate::error::CheckError;
use crate::input::{Check, DigestSource, Input, Observation};
use crate::project::Project;
use crate::reference::ImageRef;
use crate::registry::{self, RateLimit, Registry};
use crate::state::{RegistryRecord, State};

/// What the checks need.
pub struct Checker<'a> {
    /// Tells which inputs to check, and which tags another build produces.
    pub project: &'a Project,
    /// Answers for other builds' tags and for images no registry serves.
    pub engine: &'a dyn Engine,
    /// Answers for everything else.
    pub registry: &'a dyn Registry,
    /// Bounds the checks in flight to each registry, so none is flooded.
    pub concurrency: usize,
    /// Under this many requests left, a registry's checks are spaced out.
    pub rate_limit_reserve: u64,
    /// The inputs a trigger named, when the cycle checks only those. Others keep
    /// their last observation, except another build's tag (read from the engine,
    /// which costs no registry request) and an input never seen before.
    pub only: Option<&'a BTreeSet<Input>>,
}

/// A cycle's checks: one per distinct watched input, and the rate limits the registries reported.
#[derive(Debug, Default)]
pub struct Checks {
    /// Each watched input's check.
    pub inputs: BTreeMap<Input, Check>,
    /// Registry host → rate-limit headers seen this cycle.
    pub rate_limits: BTreeMap<String, RegistryRecord>,
}

impl Checks {
    /// Records what was seen in `state` (not saved): each observation and rate limit.
    pub fn record(&self, state: &mut State) {
        for (input, check) in &self.inputs {
            if let Ok(o) = &check.seen {
                state.inputs.insert(input.clone(), o.clone());
            }
        }
        state.registries.extend(self.rate_limits.clone());
    }
}

impl Checker<'_> {
    /// Checks every distinct watched input once, `concurrency` at a time per registry, against
    /// `state` (the digests and rate limits seen before). Never fails as a whole: each
    /// input's failure is its own [`CheckError`].
    pub async fn check_all(&self, state: &State, now: u64) -> Checks {
        let mut inputs: Vec<&Input> = self.project.builds.values().filter(|a| a.resolution.is_ok()).flat_map(|a| &a.inputs).collect();
        inputs.sort();
        inputs.dedup();
        // One bound per registry: checks of different registries never wait on each other.
        let (limit, count) = (self.concurrency.max(1), inputs.len());
        let registries: HashMap<&str, Semaphore> =
            inputs.iter().filter_map(|i| i.image()).map(|image| (image.registry(), Semaphore::new(limit))).collect();
        let results: Vec<(Input, Check, Option<RateLimit>)> = stream::iter(inputs)
            .map(|input| {
                let prior = state.inputs.get(input);
                let registry = input.image().and_then(|image| registries.get(image.registry()));
                async move {
                    let _permit = match registry {
                        Some(r) => Some(r.acquire().await.expect("the semaphore is never closed")),
                        None => None,
                    };
                    let Input::Image(image) = input;
                    let out_of_scope = self.only.is_some_and(|only| !only.contains(input)) && self.project.producer_of(image).is_none();
                    let deferred = prior.filter(|p| {
                        out_of_scope || p.source == DigestSource::Registry && self.defer(state.registries.get(image.registry()), p, now)
                    });
                    let (seen, rate_limit, replaces) = match deferred {
                        Some(p) => (Ok(p.clone()), None, None),
                        // Out of a trigger's scope and never seen: not checked now (a hook costs only its own images).
                        None if out_of_scope => (Err(CheckError::NotChecked), None, None),
                        None => match self.check_image(image, prior, now).await {
                            Ok(s) => (Ok(s.observation), s.rate_limit, s.replaces),
                            Err(e) => (Err(e), None, None),
                        },
                    };
                    let check =
                        Check { old: prior.map(|p| p.digest.clone()), seen, deferred: deferred.is_some() || out_of_scope, replaces };
                    (input.clone(), check, rate_limit)
                }
            })
            // Every check is polled at once; the semaphores above are the bound.
            .buffer_unordered(count.max(1))
            .collect()
            .await;
        let mut out = Checks::default();
        for (input, check, rate_limit) in results {
            if let (Some(r), Some(image)) = (rate_limit, input.image()) {
                let rec = RegistryRecord { limit: r.limit, remaining: r.remaining, window_secs: r.window_secs, seen_at: now };
                out.rate_limits.insert(image.registry().to_string(), rec);
            }
            out.inputs.insert(input, check);
        }
        out
    }

    /// True when `image`'s registry is under its rate-limit reserve and the image was
    /// checked too recently: the remaining quota is spread over the rest of the window.
    fn defer(&self, limit: Option<&RegistryRecord>, prior: &Observation, now: u64) -> bool {
        let Some(l) = limit else { return false };
        let window = l.window_secs.unwrap_or(3600);
        // Saturating: the window is capped at 24 h when parsed, but state files come from outside too.
        let window = window.min(crate::registry::MAX_REGISTRY_WAIT_SECS);
        if l.remaining >= self.rate_limit_reserve || now >= l.seen_at.saturating_add(window) {
            return false;
        }
        let spacing = window.saturating_sub(now - l.seen_at) / (l.remaining + 1);
        now < prior.seen_at.saturating_add(spacing)
    }

    async fn check_image(&self, image: &ImageRef, prior: Option<&Observation>, now: u64) -> Result<Seen, CheckError> {
        let observation = |digest: String, source, platforms| {
            let since = prior.filter(|p| p.digest == digest).map_or(now, |p| if p.since == 0 { p.seen_at } else { p.since });
            Observation { digest, source, seen_at: now, since, platforms }
        };
        if let Some(build) = self.project.producer_of(image) {
            return match self.engine.inspect(image.as_str()).await {
                Ok(Some(info)) => Ok(Seen::new(observation(info.id, DigestSource::Build, BTreeMap::new()))),
                Ok(None) => Err(CheckError::NotBuilt { build: build.to_string() }),
                Err(e) => Err(CheckError::Engine(e)),
            };
        }
        let known = prior.filter(|p| p.source == DigestSource::Registry).map(|p| (p.digest.as_str(), &p.platforms));
        let registry_error = match registry::check(self.registry, image, known).await {
            Ok(c) => {
                let replaces = match prior {
                    Some(p) if p.source == DigestSource::Local && c.platforms.is_empty() && p.digest != c.digest => {
                        self.same_image(image, &c.digest, &p.digest).await.then(|| p.digest.clone())
                    }
                    _ => None,
                };
                let observation = observation(c.digest, DigestSource::Registry, c.platforms);
                return Ok(Seen { observation, rate_limit: c.rate_limit, replaces });
            }
            Err(e) => e,
        };
        // A registry that served this image before and fails now is an outage, not a
        // change: falling back to the local image ID would look like a new digest.
        if prior.is_some_and(|p| p.source == DigestSource::Registry) {
            return Err(CheckError::Registry(registry_error));
        }
        match self.engine.inspect(image.as_str()).await {
            Ok(Some(info)) => {
                tracing::debug!(event = "check_local", image = %image, error = %registry_error, "registry check failed; using the local image ID");
                Ok(Seen::new(observation(info.id, DigestSource::Local, BTreeMap::new())))
            }
            Ok(None) => Err(CheckError::NoLocalImage { image: image.clone(), registry: registry_error }),
            Err(_) => Err(CheckError::Registry(registry_error)),
        }
    }

    /// True when the manifest `digest` that the registry now serves for `image` is the
    /// image whose ID (`local_id`) an earlier check took from the engine: its config
    /// descriptor's digest is that ID. So a base built on this host, checked before its
    /// first push and then pushed, is not a change (OCI image spec: an image's ID is the
    /// digest of its config). One manifest GET, made once, when the image first appears
    /// in its registry; any error answers false, and the builds on it are rebuilt.
    async fn same_image(&self, image: &ImageRef, digest: &str, local_id: &str) -> bool {
        match self.registry.config_digest(image, digest).await {
            Ok(config) if config == local_id => {
                tracing::debug!(event = "check_local_pushed", image = %image, digest = %digest, image_id = %local_id, "the registry now serves the local image");
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::debug!(event = "check_local_unconfirmed", image = %image, error = %e, "could not read the manifest's config digest");
                false
            }
        }
    }
}

/// One image's check.
struct Seen {
    /// What was seen.
    observation: Observation,
    /// The registry's rate-limit headers, when it sent them.
    rate_limit: Option<RateLimit>,
    /// The local image ID the last observation held, when the registry now serves that image.
    replaces: Option<String>,
}

impl Seen {
    fn new(observation: Observation) -> Self {
        Seen { observation, rate_limit: None, replaces: None }
    }
}
