//! A cycle's checks: the current digest of every distinct watched input, each
//! checked once, at most `check_concurrency` at a time per registry. A build
//! context's digest is its files' content digest ([`ContextDigests`]). The git
//! sources are checked first ([`Checker::check_sources`]), one connection per
//! repository, so that a new commit's Dockerfile is resolved before the rest.
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

use crate::context::ContextDigests;
use crate::engine::{Engine, EngineError, PoolEngine};
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
    /// The engines that answer this cycle: the one that built another build's tag
    /// answers for it; the first answers for images no registry serves.
    pub engines: &'a [PoolEngine],
    /// Each build → the engine that built its image (its record's `engine`).
    pub built_on: &'a HashMap<String, String>,
    /// Answers for everything else.
    pub registry: &'a dyn Registry,
    /// Bounds the checks in flight to each registry, so none is flooded.
    pub concurrency: usize,
    /// Under this many requests left, a registry's checks are spaced out.
    pub rate_limit_reserve: u64,
    /// The inputs a trigger named, when the cycle checks only those. Others keep
    /// their last observation, except another build's tag (read from the engine,
    /// which costs no registry request). Naming a build's context puts its inputs never seen before in scope.
    pub only: Option<&'a BTreeSet<Input>>,
    /// Digests build contexts, keeping each file's hash between cycles so an unchanged context reads no file.
    pub contexts: std::sync::Arc<ContextDigests>,
    /// The git sources' caches: where a new commit is fetched to.
    pub git: crate::git::GitCache,
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
    /// Checks every git source in scope, those of builds whose Dockerfile does not
    /// resolve yet too (it is read from the source): one connection per repository
    /// ([`crate::git::GitCache::sync`]), whatever number of refs its builds watch. A
    /// source out of a trigger's scope keeps its last observation.
    pub async fn check_sources(&self, state: &State, now: u64) -> BTreeMap<Input, Check> {
        let mut refs: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let mut out = BTreeMap::new();
        for s in self.project.builds.values().filter_map(|a| a.build.source.as_ref()) {
            let input = s.input();
            if self.only.is_some_and(|only| !only.contains(&input)) {
                // Out of a trigger's scope: the last observation stands, or none (no I/O).
                let (check, _) = self.check_one(&input, state.inputs.get(&input), false, state, now).await;
                out.insert(input, check);
            } else {
                refs.entry(&s.url).or_default().insert(&s.git_ref);
            }
        }
        let checked: Vec<BTreeMap<Input, Check>> = stream::iter(refs)
            .map(|(url, refs)| self.check_repository(url, refs, state, now))
            .buffer_unordered(self.concurrency.max(1))
            .collect()
            .await;
        out.extend(checked.into_iter().flatten());
        out
    }

    /// Checks every distinct watched input that [`Checker::check_sources`] did not (`sources`
    /// holds its checks) once, `concurrency` at a time per registry, against `state` (the
    /// digests and rate limits seen before). Never fails as a whole: each input's failure is its own [`CheckError`].
    pub async fn check_rest(&self, state: &State, now: u64, sources: BTreeMap<Input, Check>) -> Checks {
        let mut inputs: Vec<&Input> = self
            .project
            .builds
            .values()
            .filter(|a| a.resolution.is_ok())
            .flat_map(|a| &a.inputs)
            .filter(|i| !matches!(i, Input::Git { .. }))
            .collect();
        inputs.sort();
        inputs.dedup();
        // A build whose context or git source a trigger named has its inputs never seen before
        // in scope too: a Dockerfile edit or commit that changed the base has the new base checked at once.
        let scope: Option<BTreeSet<&Input>> = self.only.map(|only| {
            let named = |a: &crate::project::Analysed| {
                only.contains(&Input::Context(a.build.name.clone())) || a.build.source.as_ref().is_some_and(|s| only.contains(&s.input()))
            };
            let new = self.project.builds.values().filter(|a| named(a)).flat_map(|a| &a.inputs);
            only.iter().chain(new.filter(|i| !state.inputs.contains_key(*i))).collect()
        });
        // One bound per registry: checks of different registries never wait on each other.
        let (limit, count) = (self.concurrency.max(1), inputs.len());
        let registries: HashMap<&str, Semaphore> =
            inputs.iter().filter_map(|i| i.image()).map(|image| (image.registry(), Semaphore::new(limit))).collect();
        let results: Vec<(Input, Check, Option<RateLimit>)> = stream::iter(inputs)
            .map(|input| {
                let prior = state.inputs.get(input);
                let registry = input.image().and_then(|image| registries.get(image.registry()));
                let in_scope = scope.as_ref().is_none_or(|s| s.contains(input));
                async move {
                    let _permit = match registry {
                        Some(r) => Some(r.acquire().await.expect("the semaphore is never closed")),
                        None => None,
                    };
                    let (check, rate_limit) = self.check_one(input, prior, in_scope, state, now).await;
                    (input.clone(), check, rate_limit)
                }
            })
            // Every check is polled at once; the semaphores above are the bound.
            .buffer_unordered(count.max(1))
            .collect()
            .await;
        let mut out = Checks { inputs: sources, ..Checks::default() };
        for (input, check, rate_limit) in results {
            if let (Some(r), Some(image)) = (rate_limit, input.image()) {
                let rec = RegistryRecord { limit: r.limit, remaining: r.remaining, window_secs: r.window_secs, seen_at: now };
                out.rate_limits.insert(image.registry().to_string(), rec);
            }
            out.inputs.insert(input, check);
        }
        out
    }

    /// One input's check. Out of a trigger's scope (`in_scope` false), the last
    /// observation stands, except for another build's tag (read from the engine,
    /// which costs no registry request).
    async fn check_one(
        &self,
        input: &Input,
        prior: Option<&Observation>,
        in_scope: bool,
        state: &State,
        now: u64,
    ) -> (Check, Option<RateLimit>) {
        let out_of_scope = !in_scope && input.image().is_none_or(|image| self.project.producer_of(image).is_none());
        let deferred = prior.filter(|p| {
            out_of_scope
                || input
                    .image()
                    .is_some_and(|image| p.source == DigestSource::Registry && self.defer(state.registries.get(image.registry()), p, now))
        });
        let (seen, rate_limit, replaces) = match (deferred, input) {
            (Some(p), _) => (Ok(p.clone()), None, None),
            // Out of a trigger's scope and never seen: not checked now (a hook costs only its own images).
            (None, _) if out_of_scope => (Err(CheckError::NotChecked), None, None),
            (None, Input::Image(image)) => match self.check_image(image, prior, now).await {
                Ok(s) => (Ok(s.observation), s.rate_limit, s.replaces),
                Err(e) => (Err(e), None, None),
            },
            (None, Input::Context(build)) => (self.check_context(build, prior, now).await, None, None),
            // Checked before the rest, by check_sources: never in this list.
            (None, Input::Git { .. }) => (Err(CheckError::NotChecked), None, None),
        };
        let check = Check { old: prior.map(|p| p.digest.clone()), seen, deferred: deferred.is_some() || out_of_scope, replaces };
        (check, rate_limit)
    }

    /// The commit each of `refs` (full names) of the repository at `url` points at: one
    /// connection that lists them and fetches (depth 1) only the new commits; then the
    /// digest of each `paths` list a build on that ref watches. A failure of the
    /// connection fails every ref; a missing ref fails alone.
    async fn check_repository(&self, url: &str, refs: BTreeSet<&str>, state: &State, now: u64) -> BTreeMap<Input, Check> {
        let refs: Vec<String> = refs.into_iter().map(str::to_string).collect();
        // Ref → paths key → paths, for the builds on this repository that have paths.
        let mut lists: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
        for s in self.project.builds.values().filter_map(|a| a.build.source.as_ref()).filter(|s| s.url == url && !s.paths.is_empty()) {
            lists.entry(s.git_ref.clone()).or_default().insert(s.paths_key(), s.paths.clone());
        }
        let (cache, url_owned, wanted) = (self.git.clone(), url.to_string(), refs.clone());
        let credential =
            self.project.builds.values().filter_map(|a| a.build.source.as_ref()).find(|s| s.url == url).and_then(|s| s.credential.clone());
        let synced = tokio::task::spawn_blocking(move || {
            let synced = cache.sync(&url_owned, &wanted, credential.as_ref())?;
            let with_paths = synced
                .into_iter()
                .map(|(r, s)| {
                    let s = s.and_then(|s| {
                        let lists = lists.get(&r).into_iter().flatten().map(|(k, l)| (k.as_str(), l.as_slice()));
                        let paths = cache.paths_digests(&url_owned, &s.commit, lists)?;
                        Ok((s, paths))
                    });
                    (r, s)
                })
                .collect::<BTreeMap<_, _>>();
            Ok::<_, crate::git::GitError>(with_paths)
        })
        .await
        .unwrap_or_else(|e| Err(crate::git::GitError(e.to_string())));
        refs.into_iter()
            .map(|git_ref| {
                let input = Input::Git { url: url.to_string(), git_ref: git_ref.clone() };
                let prior = state.inputs.get(&input);
                let seen = match &synced {
                    Err(e) => Err(CheckError::Git(e.clone())),
                    Ok(by_ref) => match by_ref.get(&git_ref) {
                        Some(Ok((synced, paths))) => {
                            tracing::debug!(event = "git_listed", url = %url, git_ref = %git_ref, commit = %synced.commit, fetched = synced.fetched, "git ref checked");
                            let mut o = observed(prior, synced.commit.clone(), DigestSource::Git, BTreeMap::new(), now);
                            o.paths = paths.clone();
                            o.tags = synced.tags.clone();
                            Ok(o)
                        }
                        Some(Err(e)) => Err(CheckError::Git(e.clone())),
                        None => Err(CheckError::NotChecked),
                    },
                };
                (input, Check { old: prior.map(|p| p.digest.clone()), seen, deferred: false, replaces: None })
            })
            .collect()
    }

    /// The content digest of `build`'s context, read on a blocking thread.
    async fn check_context(&self, build: &str, prior: Option<&Observation>, now: u64) -> Result<Observation, CheckError> {
        let b = &self.project.builds[build].build;
        let (digests, root, dockerfile) = (self.contexts.clone(), b.context.clone(), b.dockerfile.clone());
        let digest = tokio::task::spawn_blocking(move || digests.digest(&root, &dockerfile))
            .await
            .map_err(|e| CheckError::Context(crate::context::ContextError { path: b.context.clone(), message: e.to_string() }))?
            .map_err(CheckError::Context)?;
        Ok(observed(prior, digest, DigestSource::Context, BTreeMap::new(), now))
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
        let observation = |digest, source, platforms| observed(prior, digest, source, platforms, now);
        if let Some(build) = self.project.producer_of(image) {
            let engine = self.engine(Some(build)).map_err(CheckError::Engine)?;
            return match engine.inspect(image.as_str()).await {
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
        let Ok(engine) = self.engine(None) else { return Err(CheckError::Registry(registry_error)) };
        match engine.inspect(image.as_str()).await {
            Ok(Some(info)) => {
                tracing::debug!(event = "check_local", image = %image, error = %registry_error, "registry check failed; using the local image ID");
                Ok(Seen::new(observation(info.id, DigestSource::Local, BTreeMap::new())))
            }
            Ok(None) => Err(CheckError::NoLocalImage { image: image.clone(), registry: registry_error }),
            Err(_) => Err(CheckError::Registry(registry_error)),
        }
    }

    /// The engine to ask about an image: the one that built build `built_by`'s
    /// image (another engine may hold an older one under the same tag), else the first that answers.
    ///
    /// # Errors
    /// [`EngineError::Unreachable`] when that engine, or every engine, does not answer this cycle.
    fn engine(&self, built_by: Option<&str>) -> Result<&dyn Engine, EngineError> {
        let found = match built_by.and_then(|b| self.built_on.get(b)) {
            Some(n) => {
                self.engines.iter().find(|e| &e.name == n).ok_or_else(|| format!("engine {n}, which built it, does not answer this cycle"))
            }
            None => self.engines.first().ok_or_else(|| "no engine of the pool answers this cycle".to_string()),
        };
        found.map(|e| e.engine.as_ref()).map_err(EngineError::Unreachable)
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

/// An observation of `digest` made `now`; `since` carries over from `prior` while the digest stays.
fn observed(
    prior: Option<&Observation>,
    digest: String,
    source: DigestSource,
    platforms: BTreeMap<String, String>,
    now: u64,
) -> Observation {
    let since = prior.filter(|p| p.digest == digest).map_or(now, |p| if p.since == 0 { p.seen_at } else { p.since });
    Observation { digest, source, seen_at: now, since, platforms, paths: BTreeMap::new(), tags: Vec::new() }
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
