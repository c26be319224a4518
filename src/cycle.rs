//! One check cycle: check every watched image once, plan, rebuild, record.
//!
//! Composes the I/O edges ([`Engine`], [`Registry`]) with the pure core
//! ([`crate::plan`]). Per-build errors never stop the cycle; they end up in the
//! [`CycleReport`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::engine::{BuildRequest, Engine, ImageInfo};
use crate::executor::{self, Outcome};
use crate::plan::{self, Decision, Existing, Observed};
use crate::project::Project;
use crate::reference::ImageRef;
use crate::registry::Registry;
use crate::state::{self, BuildRecord, DigestSource, ImageRecord, State};

/// OCI annotation for the base image's reference (OCI image spec, "Pre-Defined Annotation Keys").
pub const LABEL_BASE_NAME: &str = "org.opencontainers.image.base.name";
/// OCI annotation for the base image's digest (OCI image spec, "Pre-Defined Annotation Keys").
pub const LABEL_BASE_DIGEST: &str = "org.opencontainers.image.base.digest";
/// freshen's label: JSON map of every watched image to the digest the image was built from.
pub const LABEL_BUILT_FROM: &str = "io.freshen.built-from";

/// Everything a cycle needs.
pub struct CycleInput {
    /// The resolved project.
    pub project: Arc<Project>,
    /// The engine.
    pub engine: Arc<dyn Engine>,
    /// The registry client.
    pub registry: Arc<dyn Registry>,
    /// State, shared with running builds, which record into it.
    pub state: Arc<Mutex<State>>,
    /// Where state is saved.
    pub state_path: std::path::PathBuf,
    /// Builds at once.
    pub parallelism: usize,
    /// Registry checks at once.
    pub check_concurrency: usize,
    /// Grace for running builds after cancellation.
    pub shutdown_grace: Duration,
    /// Rebuild everything (first cycle with `rebuild_on_start`).
    pub rebuild_all: bool,
    /// Check and plan only.
    pub dry_run: bool,
    /// Stop signal.
    pub cancel: CancellationToken,
}

/// One watched image's check.
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
}

/// What a cycle did.
#[derive(Debug, Clone, Serialize)]
pub struct CycleReport {
    /// Every watched image checked.
    pub checks: Vec<CheckReport>,
    /// Every build's decision.
    pub decisions: BTreeMap<String, Decision>,
    /// Outcomes of the builds that were rebuilt (empty in a dry run).
    pub outcomes: BTreeMap<String, Outcome>,
    /// State that could not be saved.
    pub state_error: Option<String>,
    /// Wall time, seconds.
    pub seconds: f64,
}

impl CycleReport {
    /// True when any check or build failed (exit code 1 for `--once`).
    pub fn failed(&self) -> bool {
        self.state_error.is_some()
            || self.decisions.values().any(|d| matches!(d, Decision::CheckFailed { .. } | Decision::Error { .. }))
            || self.outcomes.values().any(|o| matches!(o, Outcome::Failed { .. } | Outcome::Skipped { .. } | Outcome::Cancelled))
    }

    /// Counts: (rebuilt, failed, skipped).
    pub fn counts(&self) -> (usize, usize, usize) {
        let c = |f: fn(&Outcome) -> bool| self.outcomes.values().filter(|o| f(o)).count();
        (
            c(|o| matches!(o, Outcome::Built { .. })),
            c(|o| matches!(o, Outcome::Failed { .. })),
            c(|o| matches!(o, Outcome::Skipped { .. } | Outcome::Cancelled)),
        )
    }
}

/// Runs one cycle.
pub async fn run(input: &CycleInput) -> CycleReport {
    let started = Instant::now();
    let project = &input.project;
    let (current, checks) = check_all(input).await;
    let existing = inspect_outputs(input).await;
    let plan = {
        let st = input.state.lock().expect("state lock");
        plan::plan(project, &current, &existing, &st, input.rebuild_all, state::now_secs())
    };
    let mut state_error = {
        let mut st = input.state.lock().expect("state lock");
        for c in &checks {
            if let (Some(digest), Some(source)) = (&c.new, c.source) {
                st.images.insert(c.image.clone(), ImageRecord { digest: digest.clone(), source, seen_at: state::now_secs() });
            }
        }
        st.builds.extend(plan.adopted.clone());
        state::save(&input.state_path, &st).err().map(|e| e.to_string())
    };
    for (name, d) in &plan.decisions {
        match d {
            Decision::Fresh => tracing::debug!(build = %name, "fresh"),
            d if d.rebuilds() => tracing::info!(build = %name, reason = ?d, "will rebuild"),
            d => tracing::warn!(build = %name, reason = ?d, "not checked"),
        }
    }
    let mut outcomes = BTreeMap::new();
    if !input.dry_run && !plan.order.is_empty() {
        let parents: HashMap<String, Vec<String>> = plan
            .order
            .iter()
            .map(|n| {
                (n.clone(), project.graph.parents(n).into_iter().filter(|p| plan.order.iter().any(|o| o == p)).map(String::from).collect())
            })
            .collect();
        let shared = Arc::new(BuildShared {
            input_state: input.state.clone(),
            state_path: input.state_path.clone(),
            engine: input.engine.clone(),
            project: input.project.clone(),
            current: current.clone(),
            save_error: Mutex::new(None),
        });
        outcomes = executor::execute(&plan.order, &parents, input.parallelism, &input.cancel, input.shutdown_grace, |name| {
            let shared = shared.clone();
            async move { build_one(&shared, &name).await }
        })
        .await;
        let save_error = shared.save_error.lock().expect("lock").take();
        if save_error.is_some() {
            state_error = save_error;
        }
    }
    CycleReport { checks, decisions: plan.decisions, outcomes, state_error, seconds: started.elapsed().as_secs_f64() }
}

/// A digest and where it came from, or why the check failed.
type CheckResult = Result<(String, DigestSource), String>;

/// The current digest of every watched image, each checked once.
async fn check_all(input: &CycleInput) -> (HashMap<String, Observed>, Vec<CheckReport>) {
    let project = &input.project;
    let mut images: Vec<ImageRef> =
        project.builds.values().filter(|a| a.resolution.is_ok()).flat_map(|a| a.watched.iter().cloned()).collect();
    images.sort();
    images.dedup();
    let prior: BTreeMap<String, ImageRecord> = input.state.lock().expect("state lock").images.clone();
    let results: Vec<(ImageRef, CheckResult)> = stream::iter(images)
        .map(|image| {
            let prior = prior.get(image.as_str()).cloned();
            async move {
                let r = check_one(input, &image, prior.as_ref()).await;
                (image, r)
            }
        })
        .buffer_unordered(input.check_concurrency.max(1))
        .collect()
        .await;
    let mut current = HashMap::new();
    let mut checks = Vec::new();
    for (image, r) in results {
        let old = prior.get(image.as_str()).map(|p| p.digest.clone());
        match r {
            Ok((digest, source)) => {
                current.insert(image.to_string(), Observed::Digest(digest.clone()));
                checks.push(CheckReport { image: image.to_string(), old, new: Some(digest), source: Some(source), error: None });
            }
            Err(e) => {
                tracing::warn!(image = %image, error = %e, "check failed");
                current.insert(image.to_string(), Observed::Failed(e.clone()));
                checks.push(CheckReport { image: image.to_string(), old, new: None, source: None, error: Some(e) });
            }
        }
    }
    checks.sort_by(|a, b| a.image.cmp(&b.image));
    (current, checks)
}

/// One image's digest: pinned, another build's output, the registry, or (for
/// a base the registry does not serve) the engine's local image ID.
async fn check_one(input: &CycleInput, image: &ImageRef, prior: Option<&ImageRecord>) -> Result<(String, DigestSource), String> {
    if let Some(d) = image.digest() {
        return Ok((d.to_string(), DigestSource::Pinned));
    }
    if input.project.producer_of(image).is_some() {
        return match input.engine.inspect(image.as_str()).await {
            Ok(Some(info)) => Ok((info.id, DigestSource::Build)),
            Ok(None) => Err("not built yet".into()),
            Err(e) => Err(e.to_string()),
        };
    }
    let registry_error = match input.registry.head_digest(image).await {
        Ok(d) => return Ok((d, DigestSource::Registry)),
        Err(e) => e,
    };
    // A registry that served this image before and fails now is an outage, not a change:
    // falling back to the local image ID would look like a new digest.
    if prior.is_some_and(|p| p.source == DigestSource::Registry) {
        return Err(registry_error.to_string());
    }
    match input.engine.inspect(image.as_str()).await {
        Ok(Some(info)) => {
            tracing::debug!(image = %image, error = %registry_error, "registry check failed; using the local image ID");
            Ok((info.id, DigestSource::Local))
        }
        Ok(None) => Err(format!("{registry_error}, and the engine has no local image {image}")),
        Err(e) => Err(format!("{registry_error}; engine: {e}")),
    }
}

/// What the engine has under each build's first tag, with labels re-seeded.
async fn inspect_outputs(input: &CycleInput) -> HashMap<String, Existing> {
    let mut out = HashMap::new();
    for (name, a) in &input.project.builds {
        let Some(tag) = a.build.tags.first() else {
            continue;
        };
        let info = match input.engine.inspect(tag.as_str()).await {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(build = %name, error = %e, "cannot inspect output image");
                None
            }
        };
        out.insert(name.clone(), Existing { exists: info.is_some(), labels: info.as_ref().and_then(labels_record) });
    }
    out
}

/// Re-seeds a `built_from` map from an image's labels, when freshen built it.
pub fn labels_record(info: &ImageInfo) -> Option<BTreeMap<String, String>> {
    if let Some(json) = info.labels.get(LABEL_BUILT_FROM) {
        if let Ok(map) = serde_json::from_str(json) {
            return Some(map);
        }
    }
    let name = ImageRef::parse(info.labels.get(LABEL_BASE_NAME)?).ok()?;
    Some([(name.to_string(), info.labels.get(LABEL_BASE_DIGEST)?.clone())].into())
}

struct BuildShared {
    input_state: Arc<Mutex<State>>,
    state_path: std::path::PathBuf,
    engine: Arc<dyn Engine>,
    project: Arc<Project>,
    current: HashMap<String, Observed>,
    save_error: Mutex<Option<String>>,
}

/// Pulls what changed, builds with freshen's labels, records and saves state.
async fn build_one(s: &BuildShared, name: &str) -> Result<(), String> {
    let a = &s.project.builds[name];
    let b = &a.build;
    let mut built_from = BTreeMap::new();
    for image in &a.watched {
        built_from.insert(image.to_string(), used_digest(s, image, b.platform.as_deref()).await.map_err(|e| format!("{image}: {e}"))?);
    }
    let mut labels = b.labels.clone();
    if let Some(base) = a.resolution.as_ref().ok().and_then(|r| r.base.as_ref()) {
        labels.insert(LABEL_BASE_NAME.into(), base.to_string());
        if let Some(d) = built_from.get(base.as_str()) {
            labels.insert(LABEL_BASE_DIGEST.into(), d.clone());
        }
    }
    labels.insert(LABEL_BUILT_FROM.into(), serde_json::to_string(&built_from).expect("map serialises"));
    let request = BuildRequest {
        name: name.to_string(),
        context: b.context.clone(),
        dockerfile: b.dockerfile.clone(),
        tags: b.tags.clone(),
        build_args: b.build_args.clone(),
        target: b.target.clone(),
        platform: b.platform.clone(),
        labels,
        no_cache: b.no_cache,
    };
    tracing::info!(build = %name, "building");
    let id = s.engine.build(&request).await.map_err(|e| e.to_string())?;
    tracing::info!(build = %name, image = %id, "built");
    let mut st = s.input_state.lock().expect("state lock");
    st.builds
        .insert(name.to_string(), BuildRecord { built_from, image_id: Some(id), recorded_at: state::now_secs(), origin: "built".into() });
    if let Err(e) = state::save(&s.state_path, &st) {
        tracing::error!(error = %e, "state not saved");
        *s.save_error.lock().expect("lock") = Some(e.to_string());
    }
    Ok(())
}

/// The digest a build actually uses for `image`: pulls a registry image whose
/// current digest the engine lacks, then reads it back from `RepoDigests`.
async fn used_digest(s: &BuildShared, image: &ImageRef, platform: Option<&str>) -> Result<String, String> {
    if let Some(d) = image.digest() {
        return Ok(d.to_string());
    }
    let local = s.engine.inspect(image.as_str()).await.map_err(|e| e.to_string())?;
    if s.project.producer_of(image).is_some() {
        return local.map(|i| i.id).ok_or_else(|| "parent image is missing".into());
    }
    let current = match s.current.get(image.as_str()) {
        Some(Observed::Digest(d)) => Some(d.clone()),
        _ => None,
    };
    let has_current = |info: &Option<ImageInfo>| match (info, &current) {
        (Some(i), Some(c)) => i.id == *c || i.repo_digest_for(image).as_deref() == Some(c.as_str()),
        _ => false,
    };
    if has_current(&local) {
        return Ok(current.expect("checked above"));
    }
    if let Err(e) = s.engine.pull(image, platform).await {
        if local.is_none() {
            return Err(format!("pull failed: {e}"));
        }
        tracing::warn!(image = %image, error = %e, "pull failed; building on the local image");
    }
    let info = s.engine.inspect(image.as_str()).await.map_err(|e| e.to_string())?.ok_or("image missing after pull")?;
    Ok(info.repo_digest_for(image).unwrap_or(info.id))
}
