//! One build of a cycle: pull the changed external images it watches, build
//! with freshen's labels, run its test gate, move its tags, push them, and
//! return the record of what it was built from. It never touches state: the
//! cycle records and saves what the build returns. Pushing and the removal of
//! previous images are in [`crate::publish`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::buildlog::{self, BuildLogs};
use crate::engine::{BuildRequest, Builder, Engine, ImageInfo, TestRequest, TestResult};
use crate::error::BuildError;
use crate::executor::Failure;
use crate::input::Input;
use crate::plan::{Compared, Current};
use crate::project::Project;
use crate::reference::ImageRef;
use crate::registry::Registry;
use crate::state::{self, BuildRecord, Origin};

/// OCI annotation for the base image's reference (OCI image spec, "Pre-Defined Annotation Keys").
pub const LABEL_BASE_NAME: &str = "org.opencontainers.image.base.name";
/// OCI annotation for the base image's digest (OCI image spec, "Pre-Defined Annotation Keys").
pub const LABEL_BASE_DIGEST: &str = "org.opencontainers.image.base.digest";
/// freshen's label: JSON map of every watched image to the digest the image was built from.
pub const LABEL_BUILT_FROM: &str = "io.freshen.built-from";
/// freshen's label: the content digest of the build context the image was built from
/// ([`crate::context::ContextDigests`]), so that a lost state file does not hide a context edit.
pub const LABEL_CONTEXT: &str = "io.freshen.context-digest";
/// OCI annotation for the source commit a git-sourced image was built from (OCI image spec, "Pre-Defined Annotation Keys").
pub const LABEL_REVISION: &str = "org.opencontainers.image.revision";
/// OCI annotation for the URL of the repository a git-sourced image was built from (OCI image spec, "Pre-Defined Annotation Keys").
pub const LABEL_SOURCE: &str = "org.opencontainers.image.source";
/// freshen's label: the build's name. With [`LABEL_TAG`] it marks the images cleanup may remove.
pub const LABEL_BUILD: &str = "io.freshen.build";
/// freshen's label: the build's first tag, so two configs' builds of one name never clean up each other's images.
pub const LABEL_TAG: &str = "io.freshen.tag";
/// freshen's label on a test gate's container: the state file's path, so that
/// the next start of the freshen that owns the state removes what a killed one left.
pub const LABEL_TEST: &str = "io.freshen.test";

/// What every build of a cycle shares.
#[derive(Clone)]
pub struct Rebuild {
    /// Pulls, inspects and builds.
    pub engine: Arc<dyn Engine>,
    /// Each build's config and resolution.
    pub project: Arc<Project>,
    /// Confirms each push with a HEAD of the tag.
    pub registry: Arc<dyn Registry>,
    /// `push_timeout`: longest one tag's push may take.
    pub push_timeout: std::time::Duration,
    /// `build_timeout`, passed to the engine with each build.
    pub timeout: std::time::Duration,
    /// `build_idle_timeout`, passed to the engine with each build.
    pub idle_timeout: std::time::Duration,
    /// Where each build's log is saved, and how many are kept.
    pub logs: BuildLogs,
    /// The log each build of the cycle wrote, for the report; shared by the engines' copies.
    pub written: Arc<Mutex<BTreeMap<String, PathBuf>>>,
    /// The engine's name: recorded with each image it builds.
    pub engine_name: String,
    /// Each build → the engine that holds its newest image, updated as builds end; shared by the engines' copies.
    pub placed: Arc<Mutex<BTreeMap<String, String>>>,
    /// Whether the pool has more than one engine: then a child built on another engine
    /// than its parent's pulls the parent's image from the registry first.
    pub across: bool,
    /// The state file's path: the value of [`LABEL_TEST`] on test gate containers.
    pub state_path: PathBuf,
    /// `keep_previous`: previous images of each build kept by [`Rebuild::clean`].
    pub keep_previous: u32,
}

/// Re-seeds a `built_from` map from an image's labels, when freshen built it.
pub fn labels_record(info: &ImageInfo) -> Option<BTreeMap<Input, String>> {
    if let Some(map) = info.labels.get(LABEL_BUILT_FROM).and_then(|json| serde_json::from_str::<BTreeMap<String, String>>(json).ok()) {
        let mut record: BTreeMap<Input, String> =
            map.into_iter().filter_map(|(k, d)| Some((Input::Image(ImageRef::parse(&k).ok()?), d))).collect();
        if let (Some(build), Some(d)) = (info.labels.get(LABEL_BUILD), info.labels.get(LABEL_CONTEXT)) {
            record.insert(Input::Context(build.clone()), d.clone());
        }
        return Some(record);
    }
    let name = ImageRef::parse(info.labels.get(LABEL_BASE_NAME)?).ok()?;
    Some([(Input::Image(name), info.labels.get(LABEL_BASE_DIGEST)?.clone())].into())
}

impl Rebuild {
    /// The same builds on `engine` instead: what the executor runs a build with
    /// once it has chosen the engine. The logs and placements stay shared.
    pub fn on(&self, engine: Arc<dyn Engine>, engine_name: &str) -> Rebuild {
        Rebuild { engine, engine_name: engine_name.to_string(), ..self.clone() }
    }

    /// Notes that build `name`'s newest image is on `engine`.
    pub fn place(&self, name: &str, engine: &str) {
        self.placed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(name.to_string(), engine.to_string());
    }

    /// The saved log of build `name` this cycle, when it has one.
    pub fn log_of(&self, name: &str) -> Option<PathBuf> {
        self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(name).cloned()
    }

    /// Every build's saved log this cycle, for the report; `written` is left empty.
    pub fn take_logs(&self) -> BTreeMap<String, PathBuf> {
        std::mem::take(&mut *self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Pulls what changed, builds `name` with freshen's labels, and returns the
    /// record of what it was built from. `compared` is the plan's view of the
    /// build's inputs, whose current digests are the ones recorded.
    ///
    /// # Errors
    /// A [`Failure`] with a [`BuildError`]: a watched image could not be inspected
    /// or pulled, a parent's image is missing, the engine's build failed (with its
    /// output's last lines), the test gate failed (no tag moved), or a push failed:
    /// then the failure carries the record, marked `push_pending`.
    ///
    /// The build's log is saved first ([`BuildLogs::start`]): the engine's
    /// output goes into it, then the test's, then the result; its path is kept in `written`.
    pub async fn build(&self, name: &str, compared: &BTreeMap<Input, Compared>) -> Result<BuildRecord, Failure<BuildRecord>> {
        let b = &self.project.builds[name].build;
        let builder = Builder::choose(b.builder, self.engine.has_buildkit());
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        let (version, engine) = (env!("CARGO_PKG_VERSION"), &self.engine_name);
        let header = format!("# freshen {version}: build {name} with the {builder} builder on engine {engine}, started {now}\n");
        let log = self.logs.start(name, &header).unwrap_or_else(|e| {
            let folder = self.logs.folder(name);
            tracing::warn!(event = "build_log_failed", build = %name, path = %folder.display(), error = %e, "could not start the build log; building without one");
            None
        });
        if let Some(path) = &log {
            self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(name.to_string(), path.clone());
        }
        let result = self.build_logged(name, compared, builder, log.clone()).await;
        if let Some(path) = &log {
            let end = match &result {
                Ok(r) => format!("# built image {}\n", r.image_id.as_deref().unwrap_or("")),
                Err(e) => format!("# failed ({}): {}\n", e.error.kind(), b.redactor().show(&e.error)),
            };
            buildlog::append(path, &end);
        }
        let record = result?;
        if b.push {
            return self.push(name, record).await;
        }
        Ok(record)
    }

    async fn build_logged(
        &self,
        name: &str,
        compared: &BTreeMap<Input, Compared>,
        builder: Builder,
        log: Option<PathBuf>,
    ) -> Result<BuildRecord, Failure<BuildRecord>> {
        let a = &self.project.builds[name];
        let b = &a.build;
        let mut built_from = BTreeMap::new();
        for (input, c) in compared {
            let d = match input {
                Input::Image(image) => self.used_digest(image, c.current.as_ref().ok(), b.platform.as_deref()).await?,
                // A context whose check failed is not recorded: the next check records it without a rebuild.
                Input::Context(_) | Input::Git { .. } => match &c.current {
                    Ok(current) => current.for_build.clone(),
                    Err(_) => continue,
                },
            };
            built_from.insert(input.clone(), d);
        }
        let mut labels = b.labels.clone();
        if let Some(base) = a.resolution.as_ref().ok().and_then(|r| r.base.as_ref()) {
            labels.insert(LABEL_BASE_NAME.into(), base.to_string());
            if let Some(d) = base.digest().or_else(|| built_from.get(&Input::Image(base.clone())).map(String::as_str)) {
                labels.insert(LABEL_BASE_DIGEST.into(), d.to_string());
            }
        }
        let images: BTreeMap<String, &String> = built_from.iter().filter_map(|(i, d)| Some((i.image()?.to_string(), d))).collect();
        labels.insert(LABEL_BUILT_FROM.into(), serde_json::to_string(&images).expect("map serialises"));
        if let Some(d) = built_from.get(&Input::Context(name.to_string())) {
            labels.insert(LABEL_CONTEXT.into(), d.clone());
        }
        labels.insert(LABEL_BUILD.into(), name.to_string());
        if let Some(first) = b.tags.first() {
            labels.insert(LABEL_TAG.into(), first.to_string());
        }
        // A git source: its commit checked out into a folder that lives until the build ends.
        let checkout = match &b.source {
            Some(source) => Some(self.checkout(source, compared, &mut labels).await?),
            None => None,
        };
        let (context, dockerfile) = match &checkout {
            Some(dir) => (dir.path().join(&b.context), dir.path().join(&b.dockerfile)),
            None => (b.context.clone(), b.dockerfile.clone()),
        };
        let commit_tags = self.commit_tags(name, compared, log.as_deref());
        let tags: Vec<ImageRef> = b.tags.iter().chain(&commit_tags).cloned().collect();
        let request = BuildRequest {
            name: name.to_string(),
            context,
            dockerfile,
            tags: tags.clone(),
            build_args: b.build_args.clone(),
            target: b.target.clone(),
            platform: b.platform.clone(),
            labels,
            no_cache: b.no_cache,
            redactor: b.redactor(),
            timeout: self.timeout,
            idle_timeout: self.idle_timeout,
            builder,
            secrets: b.build_secrets.clone(),
            images: built_from.keys().filter_map(Input::image).chain(&a.pinned).cloned().collect(),
            log: log.clone(),
        };
        tracing::info!(event = "build_started", build = %name, engine = %self.engine_name, "building");
        let id = self.engine.build(&request).await.map_err(BuildError::Engine)?;
        tracing::debug!(event = "image_built", build = %name, image = %id, "built");
        if let Some(gate) = &b.test {
            self.test(name, &id, gate, log).await?;
        }
        self.engine.move_tags(&id, &tags).await.map_err(BuildError::Engine)?;
        tracing::debug!(event = "image_tagged", build = %name, image = %id, "tags moved");
        Ok(BuildRecord {
            built_from,
            image_id: Some(id),
            recorded_at: state::now_secs(),
            origin: Origin::Built,
            commit_tags: commit_tags.iter().map(ToString::to_string).collect(),
            engine: Some(self.engine_name.clone()),
            ..Default::default()
        })
    }

    /// Build `name`'s tag templates rendered for the commit its check saw
    /// ([`crate::config::TagTemplate::render`]). A template that cannot be formed (no
    /// semver tag on the commit, a pre-release for `{semver.major}`) is left out, with a
    /// warning (`tag_left_out`) in the log and in the build's log, as docker/metadata-action does.
    fn commit_tags(&self, name: &str, compared: &BTreeMap<Input, Compared>, log: Option<&std::path::Path>) -> Vec<ImageRef> {
        let b = &self.project.builds[name].build;
        let Some(source) = &b.source else { return Vec::new() };
        let Some(Ok(current)) = compared.get(&source.input()).map(|c| &c.current) else { return Vec::new() };
        let facts = crate::config::GitFacts { commit: &current.digest, git_ref: &source.git_ref, tags: &current.git_tags };
        let mut out = Vec::new();
        for template in &b.commit_tags {
            match template.render(&facts) {
                Ok(tag) => out.push(tag),
                Err(reason) => {
                    tracing::warn!(event = "tag_left_out", build = %name, template = %template, %reason, "a tag template cannot be formed for this commit; left out");
                    if let Some(path) = log {
                        buildlog::append(path, &format!("# tag {template} left out: {reason}\n"));
                    }
                }
            }
        }
        out
    }

    /// Checks out the commit the check saw for `source` into a new folder beside the
    /// git caches, and labels the image with it (OCI annotations
    /// `org.opencontainers.image.revision` and `org.opencontainers.image.source`).
    ///
    /// # Errors
    /// [`BuildError::Checkout`] when the check found no commit, or the checkout failed.
    async fn checkout(
        &self,
        source: &crate::config::GitSource,
        compared: &BTreeMap<Input, Compared>,
        labels: &mut std::collections::HashMap<String, String>,
    ) -> Result<tempfile::TempDir, BuildError> {
        let input = source.input();
        let commit = match compared.get(&input).map(|c| &c.current) {
            Some(Ok(c)) => c.digest.clone(),
            Some(Err(e)) => return Err(BuildError::Checkout(format!("{input}: {e}"))),
            None => return Err(BuildError::Checkout(format!("{input} was not checked"))),
        };
        let cache = crate::git::GitCache::beside(&self.state_path);
        let (url, at) = (source.url.clone(), commit.clone());
        let dir = tokio::task::spawn_blocking(move || {
            let dir = cache.checkout_dir().map_err(|e| e.0)?;
            cache.checkout(&url, &at, dir.path()).map_err(|e| e.0)?;
            Ok::<_, String>(dir)
        })
        .await
        .map_err(|e| BuildError::Checkout(e.to_string()))?
        .map_err(BuildError::Checkout)?;
        labels.insert(LABEL_REVISION.into(), commit);
        labels.insert(LABEL_SOURCE.into(), source.url.clone());
        Ok(dir)
    }

    /// Runs the build's test gate on image `id`, its output appended to `log`.
    ///
    /// # Errors
    /// [`BuildError::Test`] when the test exits with anything but 0 or runs past
    /// its timeout; [`BuildError::Engine`] when its container cannot be run.
    async fn test(&self, name: &str, id: &str, gate: &crate::config::TestGate, log: Option<PathBuf>) -> Result<(), BuildError> {
        let b = &self.project.builds[name].build;
        if let Some(path) = &log {
            buildlog::append(path, &format!("# test: {}\n", b.redactor().redact(&gate.command.join(" "))));
        }
        let labels = [(LABEL_TEST, self.state_path.display().to_string()), (LABEL_BUILD, name.to_string())];
        let request = TestRequest {
            name: name.to_string(),
            image: id.to_string(),
            gate: gate.clone(),
            labels: labels.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            redactor: b.redactor(),
            log,
        };
        let (message, tail) = match self.engine.run_test(&request).await.map_err(BuildError::Engine)? {
            TestResult::Exited { code: 0, .. } => {
                tracing::info!(event = "test_passed", build = %name, "test gate passed");
                return Ok(());
            }
            TestResult::Exited { code, tail } => (format!("{} exited with {code}", gate.command.join(" ")), tail),
            TestResult::TimedOut { tail } => {
                (format!("{} ran past its timeout of {}", gate.command.join(" "), humantime::format_duration(gate.timeout)), tail)
            }
        };
        let message = if tail.is_empty() { message } else { format!("{message}\n--- last test output ---\n{tail}") };
        Err(BuildError::Test { message })
    }

    /// The digest a build actually uses for `image`: pulls a registry image
    /// whose current digest the engine lacks, then reads it back from
    /// `RepoDigests`; for a multi-platform image, the plan's digest for the build's platform.
    async fn used_digest(&self, image: &ImageRef, current: Option<&Current>, pull_platform: Option<&str>) -> Result<String, BuildError> {
        let inspect = |e| BuildError::Inspect { image: image.clone(), source: e };
        let local = self.engine.inspect(image.as_str()).await.map_err(inspect)?;
        if let Some(parent) = self.project.producer_of(image) {
            let placed = self.placed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(parent).cloned();
            if !self.across || placed.as_deref() == Some(self.engine_name.as_str()) {
                return local.map(|i| i.id).ok_or_else(|| BuildError::ParentMissing { image: image.clone() });
            }
            // Built on another engine: this engine's copy of the tag, if any, is older. The
            // parent has push (placement::check), so the registry has its newest image.
            tracing::info!(event = "parent_pulled", image = %image, engine = %self.engine_name, from = %placed.as_deref().unwrap_or("an unknown engine"), "the parent was built on another engine; pulling it from the registry");
            self.engine.pull(image, pull_platform).await.map_err(|e| BuildError::Pull { image: image.clone(), source: e })?;
            let info = self.engine.inspect(image.as_str()).await.map_err(inspect)?;
            return info.map(|i| i.id).ok_or_else(|| BuildError::ParentMissing { image: image.clone() });
        }
        let matches =
            |info: &ImageInfo, c: &Current| info.id == c.digest || info.repo_digest_for(image).as_deref() == Some(c.digest.as_str());
        if let (Some(info), Some(c)) = (&local, current) {
            if matches(info, c) {
                return Ok(c.for_build.clone());
            }
        }
        if let Err(e) = self.engine.pull(image, pull_platform).await {
            // With a current digest the local image is stale: building on it would record a
            // rebuild from a base it does not have. Only when the check failed too (and a missing
            // or parent-rebuilt build must be built anyway) does the local image stand in.
            if local.is_none() || current.is_some() {
                return Err(BuildError::Pull { image: image.clone(), source: e });
            }
            tracing::warn!(event = "pull_failed", image = %image, error = %e, "pull failed and the check too; building on the local image");
        }
        let info = self.engine.inspect(image.as_str()).await.map_err(inspect)?;
        let info = info.ok_or_else(|| BuildError::Pull {
            image: image.clone(),
            source: crate::error::EngineError::Api("the image is missing after the pull".into()),
        })?;
        match current {
            Some(c) if matches(&info, c) => Ok(c.for_build.clone()),
            // Pushed again since the check: record what was used; the next cycle sees the newer digest.
            _ => Ok(info.repo_digest_for(image).unwrap_or(info.id)),
        }
    }
}
