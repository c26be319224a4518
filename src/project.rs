//! A config resolved against its Dockerfiles: each build's base and watched
//! images, and the dependency graph. [`analyse`] is pure and takes the
//! Dockerfile texts; [`read_dockerfiles`] is the thin I/O edge that reads them.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::config::{Build, Config, Redactor};
use crate::dockerfile::{self, DockerfileError, Resolution, ResolveInput};
pub use crate::error::ResolveError;
use crate::graph::{BuildGraph, CycleError, Node};
use crate::input::Input;
use crate::reference::ImageRef;

/// Largest Dockerfile read, in bytes (16 MiB); a larger one is an error for its build.
pub const MAX_DOCKERFILE_BYTES: u64 = 16 * 1024 * 1024;

/// One build after resolution.
#[derive(Debug, Clone)]
pub struct Analysed {
    /// The build from the config.
    pub build: Build,
    /// The resolved base, or why the Dockerfile does not resolve (file, line and what is wrong).
    pub resolution: Result<Resolution, ResolveError>,
    /// What the build depends on, and so what is checked and what triggers it:
    /// the images of `Resolution::watched(build.watch_stages)` (no `# freshen:ignore`d
    /// and no digest-pinned image), plus `additional_images`, minus `exclude_images`;
    /// normalised, sorted, without duplicates; then its build context, unless
    /// `watch_context` is off. Graph edges come from the images.
    pub inputs: Vec<Input>,
    /// Digest-pinned images the build uses: never checked (they cannot change),
    /// listed so that `plan` can say why they are not watched.
    pub pinned: Vec<ImageRef>,
    /// Images a `# freshen:ignore` comment leaves unwatched, listed for `plan`.
    pub ignored: Vec<ImageRef>,
}

impl Analysed {
    /// The images among [`Analysed::inputs`].
    pub fn images(&self) -> impl Iterator<Item = &ImageRef> {
        self.inputs.iter().filter_map(Input::image)
    }
}

/// A config with every build resolved and the graph built.
#[derive(Debug, Clone)]
pub struct Project {
    /// Builds by name.
    pub builds: BTreeMap<String, Analysed>,
    /// Dependency graph over all builds (builds with errors are nodes without edges to parents).
    pub graph: BuildGraph,
    /// The Dockerfile texts it was resolved from: a git source's new commit is compared with them.
    pub texts: Texts,
    /// The engine's `os/arch` it was resolved for (`None`: this host's), kept to resolve again.
    engine_platform: Option<String>,
}

impl Project {
    /// The build that produces `image` as one of its tags, if any.
    pub fn producer_of(&self, image: &ImageRef) -> Option<&str> {
        self.graph.producer_of(image)
    }

    /// This project resolved again with each git-sourced build's Dockerfile read from its
    /// cache ([`read_dockerfiles`]), after a check moved the cache to a new commit: a commit
    /// that changes the base has the new base watched in the same cycle. `None` when no
    /// Dockerfile text changed.
    ///
    /// # Errors
    /// [`CycleError`] when the new Dockerfiles make the builds depend on each other in a cycle.
    pub fn with_sources_read(&self, git: &crate::git::GitCache) -> Option<Result<Project, CycleError>> {
        let mut texts = self.texts.clone();
        for a in self.builds.values() {
            if let Some(source) = &a.build.source {
                texts.insert(a.build.name.clone(), read_from_git(git, source, &a.build.dockerfile.to_string_lossy()));
            }
        }
        if texts == self.texts {
            return None;
        }
        Some(analyse_builds(self.builds.values().map(|a| &a.build), &texts, self.engine_platform.as_deref()))
    }

    /// The [`Redactor`] of every build's secret build arg values: what a cycle's
    /// logs and report pass their text through.
    pub fn redactor(&self) -> Redactor {
        Redactor::new(self.builds.values().flat_map(|a| a.build.secrets.iter().cloned()))
    }
}

/// The Dockerfile texts a project was resolved from: build name → text, or why it could not be read.
pub type Texts = HashMap<String, Result<String, String>>;

/// Reads each build's Dockerfile. A read error becomes that build's error text.
/// A git-sourced build's is read from its cache at the commit last synced, without a
/// network: when the cache has none yet, that build's error says so, and a cycle's
/// check of the source fetches it ([`Project::with_sources_read`]).
pub fn read_dockerfiles(config: &Config) -> Texts {
    let git = crate::git::GitCache::beside(&config.options.state_file);
    config
        .builds
        .values()
        .map(|b| {
            if let Some(source) = &b.source {
                return (b.name.clone(), read_from_git(&git, source, &b.dockerfile.to_string_lossy()));
            }
            let text = crate::files::read_regular(&b.dockerfile, MAX_DOCKERFILE_BYTES, "a Dockerfile")
                .map_err(|e| {
                    let hint = if e.io_kind() == Some(std::io::ErrorKind::PermissionDenied) {
                        "; make it readable by the user freshen runs as"
                    } else {
                        ""
                    };
                    format!("cannot read Dockerfile {e}{hint}")
                })
                .and_then(|bytes| {
                    String::from_utf8(bytes).map_err(|_| format!("{}: Dockerfile is not UTF-8 text", b.dockerfile.display()))
                });
            (b.name.clone(), text)
        })
        .collect()
}

/// The Dockerfile at `path` in the commit the cache holds for `source`.
fn read_from_git(git: &crate::git::GitCache, source: &crate::config::GitSource, path: &str) -> Result<String, String> {
    let Some(commit) = git.cached(&source.url, &source.git_ref) else {
        return Err(format!("{} is not fetched yet; freshen fetches it when it runs (freshen --once)", source.input()));
    };
    let bytes = git.read(&source.url, &commit, path).map_err(|e| format!("cannot read Dockerfile: {e}"))?;
    String::from_utf8(bytes).map_err(|_| format!("{path} in {} at {commit}: Dockerfile is not UTF-8 text", source.url))
}

/// Resolves every build of `config` against `texts` (build name → Dockerfile text or read error).
///
/// # Errors
/// [`CycleError`] when builds depend on each other in a cycle: a config error.
///
/// `engine_platform` is the engine's `os/arch` for the automatic platform ARGs;
/// `None` (offline, as in `plan`) uses this host's.
pub fn analyse(config: &Config, texts: &Texts, engine_platform: Option<&str>) -> Result<Project, CycleError> {
    analyse_builds(config.builds.values(), texts, engine_platform)
}

/// [`analyse`] of `builds`.
fn analyse_builds<'a>(
    builds_in: impl IntoIterator<Item = &'a Build>,
    texts: &Texts,
    engine_platform: Option<&str>,
) -> Result<Project, CycleError> {
    let mut builds = BTreeMap::new();
    for b in builds_in {
        let resolution = match texts.get(&b.name) {
            Some(Ok(text)) => {
                let input = ResolveInput {
                    build_args: Some(&b.build_args),
                    target: b.target.as_deref(),
                    platform: b.platform.as_deref(),
                    engine_platform,
                };
                dockerfile::resolve(text, &input).map_err(|source| ResolveError::Dockerfile { path: b.dockerfile.clone(), source })
            }
            Some(Err(e)) => Err(ResolveError::Read(e.clone())),
            None => Err(ResolveError::Read(format!("{}: Dockerfile was not read", b.dockerfile.display()))),
        };
        builds.insert(b.name.clone(), watch(b, resolution));
    }
    let nodes: Vec<Node> = builds
        .values()
        .map(|a| Node { name: a.build.name.clone(), tags: a.build.tags.clone(), uses: a.images().cloned().collect() })
        .collect();
    let graph = BuildGraph::new(&nodes)?;
    Ok(Project { builds, graph, texts: texts.clone(), engine_platform: engine_platform.map(str::to_string) })
}

/// What `b` watches, given its resolution: the one place the watch rules of
/// `watch_stages`, `# freshen:ignore`, pinning, `additional_images` and `exclude_images` meet.
fn watch(b: &Build, resolution: Result<Resolution, ResolveError>) -> Analysed {
    let mode = b.watch_stages;
    let (mut watched, mut pinned, ignored) = match &resolution {
        Ok(r) => (r.watched(mode), r.pinned_images(mode), r.ignored_images(mode)),
        Err(_) => Default::default(),
    };
    for image in &b.additional_images {
        if image.is_pinned() { &mut pinned } else { &mut watched }.push(image.clone());
    }
    for list in [&mut watched, &mut pinned] {
        list.retain(|w| !b.exclude_images.contains(w));
        list.sort();
        list.dedup();
    }
    let mut inputs: Vec<Input> = watched.into_iter().map(Input::Image).collect();
    if b.watch_context {
        inputs.push(Input::Context(b.name.clone()));
    }
    if let Some(s) = &b.source {
        inputs.push(s.input());
    }
    Analysed { build: b.clone(), resolution, inputs, pinned, ignored }
}

/// One build in `freshen plan --format json`.
#[derive(Debug, Serialize)]
pub struct PlanEntry {
    /// Build name.
    pub name: String,
    /// Dockerfile path, relative to the config's folder when under it.
    pub dockerfile: String,
    /// Final stage's FROM text after ARG expansion; when an image name expands
    /// to something that is not a reference, that expanded text, so the user sees what their ARGs produced.
    pub from: Option<String>,
    /// Normalised base, null for scratch or on error.
    pub base: Option<String>,
    /// Base is digest-pinned.
    pub pinned: bool,
    /// Builds this one is built on.
    pub parents: Vec<String>,
    /// Watched images, normalised and sorted: what is checked each cycle.
    pub watched: Vec<String>,
    /// The build context folder, relative to the config's folder when under it.
    pub context: String,
    /// Whether the context's files and the Dockerfile are watched (`watch_context`): an edit rebuilds.
    pub watch_context: bool,
    /// The git source (`<url> <ref>`), when the build is made from one: then `dockerfile` and `context` are inside it.
    pub source: Option<String>,
    /// The image's tags: the build's tags, `{git.branch}` rendered, then its
    /// tag templates as written, which each build renders for its commit.
    pub tags: Vec<String>,
    /// Digest-pinned images the build uses: never checked, since they cannot change.
    pub pinned_images: Vec<String>,
    /// Images left unwatched by a `# freshen:ignore` comment.
    pub ignored_images: Vec<String>,
    /// The builder asked for (`auto`, `buildkit` or `classic`): `plan` does not
    /// ask the engine, so `auto` stays `auto` here; `explain` and the cycle report name the one used.
    pub builder: String,
    /// The engines of `options.engines` that build for its platform (`default` without
    /// `engines`): `plan` does not ask the engines, so one without `platforms` is taken to build for this host's platform.
    pub engines: Vec<String>,
    /// The engine it would use when the builds run one after another in `order`
    /// ([`crate::placement::predict`]); the cycle's choice also weighs which engines answer and hold its base.
    pub engine: Option<String>,
    /// The per-build error, if any.
    pub error: Option<String>,
}

/// The whole `freshen plan --format json` document.
#[derive(Debug, Serialize)]
pub struct PlanReport {
    /// Every build, by name.
    pub builds: Vec<PlanEntry>,
    /// Topological order of the builds without errors.
    pub order: Vec<String>,
}

/// The offline view of `project` printed by `freshen plan`; Dockerfile paths
/// are shown relative to `config_dir` when they lie under it.
pub fn plan_report(project: &Project, config_dir: &std::path::Path, engines: &[crate::config::EngineSpec]) -> PlanReport {
    let (allowed, predicted) = offline_placement(project, engines);
    let builds = project
        .builds
        .values()
        .map(|a| {
            let r = a.resolution.as_ref().ok();
            let redactor = a.build.redactor();
            let list = |images: &mut dyn Iterator<Item = &ImageRef>| images.map(|i| redactor.redact(i.as_str())).collect();
            let invalid = match &a.resolution {
                Err(ResolveError::Dockerfile { source: DockerfileError::Reference { text, .. }, .. }) => Some(text.as_str()),
                _ => None,
            };
            PlanEntry {
                name: a.build.name.clone(),
                dockerfile: relative(&a.build.dockerfile, config_dir),
                from: r.map(|r| r.from.as_str()).or(invalid).map(|f| redactor.redact(f)),
                base: r.and_then(|r| r.base.as_ref()).map(|b| redactor.redact(b.as_str())),
                pinned: r.is_some_and(Resolution::pinned),
                parents: project.graph.parents(&a.build.name).into_iter().map(String::from).collect(),
                watched: list(&mut a.images()),
                context: relative(&a.build.context, config_dir),
                watch_context: a.build.watch_context,
                source: a.build.source.as_ref().map(|s| s.input().to_string()),
                tags: a.build.tags.iter().map(ToString::to_string).chain(a.build.commit_tags.iter().map(|t| t.text.clone())).collect(),
                pinned_images: list(&mut a.pinned.iter()),
                ignored_images: list(&mut a.ignored.iter()),
                builder: a.build.builder.to_string(),
                engines: allowed.get(&a.build.name).cloned().unwrap_or_default(),
                engine: predicted.get(&a.build.name).cloned(),
                error: a.resolution.as_ref().err().map(|e| redactor.redact(&e.to_string())),
            }
        })
        .collect();
    let order = project.graph.order().into_iter().filter(|n| project.builds[n].resolution.is_ok()).collect();
    PlanReport { builds, order }
}

/// For `plan`, without asking the engines: each build's engines that build for its
/// platform, and the one it would use. An engine without `platforms` is taken to
/// build for this host's platform; without `engines`, every build has the one `default` engine.
fn offline_placement(
    project: &Project,
    engines: &[crate::config::EngineSpec],
) -> (BTreeMap<String, Vec<String>>, BTreeMap<String, String>) {
    use crate::placement::{placements, predict, Slot};
    let host = project.engine_platform.clone().unwrap_or_else(crate::dockerfile::host_platform);
    let mut up: Vec<(String, Vec<String>)> =
        engines.iter().map(|e| (e.name.clone(), if e.platforms.is_empty() { vec![host.clone()] } else { e.platforms.clone() })).collect();
    if up.is_empty() {
        up.push((crate::placement::DEFAULT_ENGINE.to_string(), vec![host.clone()]));
    }
    let default = up[0].1[0].clone();
    let slots: Vec<Slot> = up
        .iter()
        .map(|(n, _)| Slot { name: n.clone(), capacity: engines.iter().find(|e| &e.name == n).map_or(1, |e| e.capacity) })
        .collect();
    let order: Vec<String> = project.graph.order().into_iter().filter(|n| project.builds[n].resolution.is_ok()).collect();
    let parents = order.iter().map(|n| (n.clone(), project.graph.parents(n).into_iter().map(String::from).collect())).collect();
    let placed = placements(project, &order, &up, &default, &BTreeMap::new(), &std::collections::HashMap::new());
    let allowed = placed.iter().map(|(n, p)| (n.clone(), p.allowed.iter().map(|&e| up[e].0.clone()).collect())).collect();
    (allowed, predict(&order, &parents, &slots, &placed))
}

/// `path` relative to `dir` when it lies under it (`.` for `dir` itself), else as it is.
fn relative(path: &std::path::Path, dir: &std::path::Path) -> String {
    match path.strip_prefix(dir) {
        Ok(p) if p.as_os_str().is_empty() => ".".to_string(),
        Ok(p) => p.display().to_string(),
        Err(_) => path.display().to_string(),
    }
}
