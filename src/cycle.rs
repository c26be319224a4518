//! One cycle: check every watched input once, plan, rebuild, record.
//!
//! Composes the I/O edges ([`Engine`], [`Registry`]) with the pure core
//! ([`crate::plan`]). The cycle is the one owner of state while it runs: the
//! checks and the builds return what they saw and made, and the cycle records
//! it and saves the file at two points: after the checks (and adoptions), and
//! after each build finishes, so a kill loses at most the running builds.
//! Per-build errors never stop the cycle; they end up in the [`CycleReport`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::buildlog::BuildLogs;
use crate::check::Checker;
use crate::config::Redactor;
use crate::engine::{Builder, Pool, PoolEngine, DEFAULT_ENGINE};
use crate::executor::{self, Outcome, Slot};
use crate::input::{Check, Input};
use crate::placement;
use crate::plan::{self, Compared, Decision, Existing, PlanInput};
use crate::project::Project;
use crate::rebuild::{labels_record, Rebuild};
use crate::registry::Registry;
use crate::state::{self, State, StateError};

/// Everything a cycle needs.
pub struct CycleInput {
    /// The resolved project: what to check and build.
    pub project: Arc<Project>,
    /// The engines that inspect, pull and build; each cycle asks which of them answer.
    pub pool: Arc<Pool>,
    /// Checks registry digests.
    pub registry: Arc<dyn Registry>,
    /// Where state is saved.
    pub state_path: std::path::PathBuf,
    /// Builds at once, over all engines.
    pub parallelism: usize,
    /// Registry checks in flight at once per registry, and engine inspects of output tags at once.
    pub check_concurrency: usize,
    /// How long running builds may go on after the stop signal.
    pub shutdown_grace: Duration,
    /// Longest one build may take.
    pub build_timeout: Duration,
    /// Longest a build may go without output from the engine.
    pub build_idle_timeout: Duration,
    /// Longest one tag's push may take.
    pub push_timeout: Duration,
    /// Build logs kept per build (`keep_logs`), in `logs/` beside the state file.
    pub keep_logs: usize,
    /// Previous images of each build kept after its tags move (`keep_previous`).
    pub keep_previous: u32,
    /// Rebuild everything (first cycle with `rebuild_on_start`).
    pub rebuild_all: bool,
    /// Check and plan only.
    pub dry_run: bool,
    /// Save state: false for `explain`, which only looks.
    pub persist: bool,
    /// How long a new digest must stay before builds start.
    pub settle: Duration,
    /// Under this many requests left, a registry's checks are spaced out.
    pub rate_limit_reserve: u64,
    /// The platform (`os/arch`) of builds without `platform`: the pool's default ([`Pool::default_platform`]).
    pub engine_platform: String,
    /// The inputs to check, for a cycle that a trigger named them in; `None` checks
    /// every input. Inputs left out keep their last observation.
    pub only: Option<BTreeSet<Input>>,
    /// Stop signal: no new build starts once it fires.
    pub cancel: CancellationToken,
    /// Digests the build contexts; the loop keeps one, so an unchanged context's files are not read again.
    pub contexts: Arc<crate::context::ContextDigests>,
}

/// What a cycle did: what listeners (the CLI's report, the log summary) read.
#[derive(Debug)]
pub struct CycleReport {
    /// Every watched input's check.
    pub checks: BTreeMap<Input, Check>,
    /// Every build's decision.
    pub decisions: BTreeMap<String, Decision>,
    /// Every build's watched inputs as the plan compared them, for `explain`.
    pub compared: BTreeMap<String, BTreeMap<Input, Compared>>,
    /// Outcomes of the builds that were rebuilt (empty in a dry run).
    pub outcomes: BTreeMap<String, Outcome>,
    /// The last state save that failed this cycle, if any: the previous file is intact.
    pub state_error: Option<StateError>,
    /// Wall time, seconds.
    pub seconds: f64,
    /// When a settle window ends, seconds since the Unix epoch: the next check is due then.
    pub recheck_at: Option<u64>,
    /// Whatever prints this report passes its text through this, so secret build args never show.
    pub redactor: Redactor,
    /// The builder each build runs with (its `builder` on its engine), reported beside its decision.
    pub builders: BTreeMap<String, Builder>,
    /// The engine each build ran on this cycle; in a dry run, the one it would use ([`placement::predict`]).
    pub engines: BTreeMap<String, String>,
    /// Each build that lost its engine during this cycle and went to another → the engine it lost.
    pub retried: BTreeMap<String, String>,
    /// The engines of the pool that did not answer at the start of this cycle, left out of it.
    pub engines_down: Vec<String>,
    /// The saved log of each build that ran (`logs/<build>/<time>.log`), named in the report.
    pub logs: BTreeMap<String, std::path::PathBuf>,
    /// Each build pushed this cycle → tag → the manifest digest the registry stored.
    pub pushed: BTreeMap<String, BTreeMap<String, String>>,
    /// The image ID of each build built this cycle (its tags moved, or, after a
    /// failed push, stayed), for notifications.
    pub images: BTreeMap<String, String>,
    /// Each build's tags, with those its tag templates gave the commit it was last built from: for notifications and the JSON report.
    pub tags: BTreeMap<String, Vec<String>>,
    /// `RateLimit-Remaining` that each registry sent this cycle, for metrics.
    pub rate_limits: BTreeMap<String, u64>,
    /// The project resolved again this cycle from a git source's new Dockerfile: the loop runs with it from now on.
    pub resolved: Option<Arc<Project>>,
}

impl CycleReport {
    /// True when any check or build failed (exit code 1 for `--once`). A parent's
    /// tag that this cycle builds first is not a failed check.
    pub fn failed(&self) -> bool {
        self.state_error.is_some()
            || self.checks.values().any(|c| c.seen.as_ref().is_err_and(|e| e.is_failure()))
            || self.decisions.values().any(Decision::failed)
            || self.outcomes.values().any(|o| matches!(o, Outcome::Failed { .. } | Outcome::Skipped { .. } | Outcome::Cancelled))
    }

    /// The digest every tag of build `name` was pushed to this cycle, when they all went to one.
    pub fn digest(&self, name: &str) -> Option<&str> {
        let mut digests = self.pushed.get(name)?.values();
        let first = digests.next()?;
        digests.all(|d| d == first).then_some(first.as_str())
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

/// Runs one cycle over `state`, which it updates and (with `persist`) saves.
pub async fn run(input: &CycleInput, state: &mut State) -> CycleReport {
    let started = Instant::now();
    let up = input.pool.up().await;
    let engines_down: Vec<String> = input.pool.names().into_iter().filter(|n| !up.iter().any(|e| &e.name == n)).collect();
    let built_on: HashMap<String, String> = state.builds.iter().filter_map(|(n, r)| Some((n.clone(), r.engine.clone()?))).collect();
    let git = crate::git::GitCache::beside(&input.state_path);
    let checker = |project| Checker {
        project,
        engines: &up,
        built_on: &built_on,
        registry: input.registry.as_ref(),
        concurrency: input.check_concurrency,
        rate_limit_reserve: input.rate_limit_reserve,
        only: input.only.as_ref(),
        contexts: input.contexts.clone(),
        git: git.clone(),
    };
    // The git sources first: a new commit's Dockerfile may name another base, which
    // is then resolved and checked in this same cycle, not the next.
    let sources = checker(&input.project).check_sources(state, state::now_secs()).await;
    let resolved = resolve_again(&input.project, &sources, &git);
    let project = resolved.as_ref().unwrap_or(&input.project);
    let redactor = project.redactor();
    // The registry checks and the engines' answers for the output tags do not depend on each other.
    let rest = checker(project);
    let (checks, existing) = tokio::join!(rest.check_rest(state, state::now_secs(), sources), inspect_outputs(input, &up, &built_on));
    let rate_limits = checks.rate_limits.iter().map(|(r, rec)| (r.clone(), rec.remaining)).collect();
    log_checks(&checks.inputs, &redactor);
    let plan = plan::plan(&PlanInput {
        project,
        checks: &checks.inputs,
        existing: &existing,
        state,
        rebuild_all: input.rebuild_all,
        now: state::now_secs(),
        settle_secs: input.settle.as_secs(),
        engine_platform: &input.engine_platform,
    });
    checks.record(state);
    state.builds.extend(plan.adopted.clone());
    let mut state_error = save(input, state).err();
    for (name, d) in &plan.decisions {
        let reason = redactor.show(d);
        match d {
            Decision::Fresh => tracing::debug!(event = "build_fresh", build = %name, "fresh"),
            Decision::Settling { .. } => {
                tracing::info!(event = "build_settling", build = %name, %reason, "waiting for the settle window")
            }
            d if d.rebuilds() => tracing::info!(event = "build_planned", build = %name, %reason, "will rebuild"),
            Decision::PushPending => tracing::info!(event = "push_planned", build = %name, %reason, "will push without building"),
            _ => tracing::warn!(event = "build_not_checked", build = %name, %reason, "not checked"),
        }
    }
    let in_order = |p: &&str| plan.order.iter().any(|o| o == p);
    let parents: HashMap<String, Vec<String>> =
        plan.order.iter().map(|n| (n.clone(), project.graph.parents(n).into_iter().filter(in_order).map(String::from).collect())).collect();
    let slots: Vec<Slot> = up.iter().map(|e| Slot { name: e.name.clone(), capacity: e.capacity }).collect();
    // Push-only jobs run where their image is.
    let push_only: BTreeMap<String, String> = plan
        .order
        .iter()
        .filter(|n| matches!(plan.decisions[*n], Decision::PushPending))
        .map(|n| (n.clone(), built_on.get(n).map_or(DEFAULT_ENGINE, String::as_str).to_string()))
        .collect();
    let holds = holders(input, project, &plan, &up, &built_on).await;
    let platforms: Vec<(String, Vec<String>)> = up.iter().map(|e| (e.name.clone(), e.platforms.clone())).collect();
    let placements = placement::placements(project, &plan.order, &platforms, &input.engine_platform, &push_only, &holds);
    let mut engines = placement::predict(&plan.order, &parents, &slots, &placements);
    let mut retried = BTreeMap::new();
    let mut outcomes = BTreeMap::new();
    let mut logs = BTreeMap::new();
    let mut pushed = BTreeMap::new();
    let mut images = BTreeMap::new();
    let fallback = up.first().map(|e| (e.engine.clone(), e.name.clone())).or_else(|| input.pool.any_engine());
    if let (false, false, Some((engine, engine_name))) = (input.dry_run, plan.order.is_empty(), fallback) {
        let builder = Rebuild {
            engine,
            engine_name,
            registry: input.registry.clone(),
            push_timeout: input.push_timeout,
            project: project.clone(),
            timeout: input.build_timeout,
            idle_timeout: input.build_idle_timeout,
            logs: BuildLogs::beside(&input.state_path, input.keep_logs),
            written: Default::default(),
            placed: Arc::new(std::sync::Mutex::new(built_on.iter().map(|(k, v)| (k.clone(), v.clone())).collect())),
            across: input.pool.names().len() > 1,
            state_path: input.state_path.clone(),
            keep_previous: input.keep_previous,
        };
        let compared = Arc::new(plan.compared.clone());
        // Push-only jobs start from the stored record of the image they push.
        let pending: Arc<BTreeMap<String, state::BuildRecord>> =
            Arc::new(push_only.keys().filter_map(|n| Some((n.clone(), state.builds.get(n)?.clone()))).collect());
        let run = |name: String, e: usize| {
            let (builder, compared, pending) = (builder.on(up[e].engine.clone(), &up[e].name), compared.clone(), pending.clone());
            async move {
                let r = match pending.get(&name) {
                    Some(record) => builder.push(&name, record.clone()).await,
                    None => builder.build(&name, &compared[&name]).await,
                };
                if matches!(&r, Ok(_) | Err(executor::Failure { value: Some(_), .. })) {
                    builder.place(&name, &builder.engine_name);
                }
                r
            }
        };
        let mut built = Vec::new();
        let done = |name: &str, outcome: &Outcome, record: Option<state::BuildRecord>| {
            log_finished(name, outcome, builder.log_of(name).as_deref(), &redactor);
            if let Some(record) = record {
                if !record.pushed.is_empty() {
                    pushed.insert(name.to_string(), record.pushed.clone());
                }
                if let Some(id) = &record.image_id {
                    images.insert(name.to_string(), id.clone());
                    if !pending.contains_key(name) {
                        built.push((name.to_string(), id.clone(), record.engine.clone()));
                    }
                }
                state.builds.insert(name.to_string(), record);
                if let Err(e) = save(input, state) {
                    state_error = Some(e);
                }
            }
        };
        let pool = executor::Pool { slots: &slots, placements: &placements, parallelism: input.parallelism };
        let executed = executor::execute(&plan.order, &parents, pool, &input.cancel, input.shutdown_grace, run, done).await;
        (outcomes, engines, retried) = (executed.outcomes, executed.engines, executed.retried);
        // Previous images are removed once every build of the cycle has ended: a classic
        // build that probes its cache while an image is removed can fail (moby 20.10).
        for (name, id, on) in &built {
            if let Some(e) = up.iter().find(|e| Some(&e.name) == on.as_ref()) {
                builder.on(e.engine.clone(), &e.name).clean(name, id).await;
            }
        }
        logs = builder.take_logs();
    }
    let buildkit = |name: &String| {
        let on = engines.get(name).and_then(|n| up.iter().find(|e| &e.name == n)).or(up.first());
        on.is_none_or(|e| e.engine.has_buildkit())
    };
    CycleReport {
        checks: checks.inputs,
        decisions: plan.decisions,
        compared: plan.compared,
        outcomes,
        state_error,
        seconds: started.elapsed().as_secs_f64(),
        recheck_at: plan.recheck_at,
        redactor,
        builders: project.builds.iter().map(|(n, a)| (n.clone(), Builder::choose(a.build.builder, buildkit(n)))).collect(),
        engines,
        retried,
        engines_down,
        logs,
        pushed,
        images,
        tags: project
            .builds
            .iter()
            .map(|(n, a)| {
                let commit_tags = state.builds.get(n).map(|r| r.commit_tags.clone()).unwrap_or_default();
                (n.clone(), a.build.tags.iter().map(ToString::to_string).chain(commit_tags).collect())
            })
            .collect(),
        rate_limits,
        resolved,
    }
}

/// For each build of the plan that a pool of more than one engine may run, the
/// engines that hold its base images at the digests the check saw (so it needs
/// no pull there), and the engine that built it last (its cache is there).
/// One engine inspect per base and engine, `check_concurrency` at a time.
async fn holders(
    input: &CycleInput,
    project: &Project,
    plan: &plan::Plan,
    up: &[PoolEngine],
    built_on: &HashMap<String, String>,
) -> HashMap<String, Vec<usize>> {
    let mut out: HashMap<String, Vec<usize>> = HashMap::new();
    if up.len() < 2 {
        return out;
    }
    let mut asks = Vec::new();
    for name in &plan.order {
        if let Some(e) = built_on.get(name).and_then(|n| up.iter().position(|u| &u.name == n)) {
            out.entry(name.clone()).or_default().push(e);
        }
        for (input, c) in plan.compared.get(name).into_iter().flatten() {
            let (Input::Image(image), Ok(current)) = (input, &c.current) else { continue };
            if project.producer_of(image).is_some() {
                continue;
            }
            for e in 0..up.len() {
                asks.push((name.clone(), e, image.clone(), current.digest.clone()));
            }
        }
    }
    let found: Vec<(String, usize)> = stream::iter(asks)
        .map(|(name, e, image, digest)| async move {
            let info = up[e].engine.inspect(image.as_str()).await.ok().flatten()?;
            (info.id == digest || info.repo_digest_for(&image).as_deref() == Some(digest.as_str())).then_some((name, e))
        })
        .buffer_unordered(input.check_concurrency.max(1))
        .filter_map(std::future::ready)
        .collect()
        .await;
    for (name, e) in found {
        out.entry(name).or_default().push(e);
    }
    out
}

/// The project resolved again when a git source's check moved its cache to a commit
/// whose Dockerfile differs ([`Project::with_sources_read`]); `None` when none did, or
/// when the new Dockerfiles are refused (logged: `dockerfiles_refused`). The Dockerfiles
/// are read again only when a check saw a commit other than the last one, or a
/// git-sourced build does not resolve yet (its source was not fetched): otherwise the
/// loop's refresh has read them at the commit the cache holds.
fn resolve_again(project: &Project, sources: &BTreeMap<Input, Check>, git: &crate::git::GitCache) -> Option<Arc<Project>> {
    let moved = sources.values().any(|c| c.seen.as_ref().is_ok_and(|o| c.old.as_deref() != Some(o.digest.as_str())));
    let unresolved = project.builds.values().any(|a| a.build.source.is_some() && a.resolution.is_err());
    if !moved && !unresolved {
        return None;
    }
    match project.with_sources_read(git)? {
        Ok(p) => {
            tracing::info!(event = "dockerfiles_changed", source = "git", "a git source's Dockerfile changed; builds resolved again");
            Some(Arc::new(p))
        }
        Err(e) => {
            tracing::error!(event = "dockerfiles_refused", error = %e, "a git source's Dockerfile change was refused; the last resolution runs");
            None
        }
    }
}

/// Saves `state` when the cycle persists; logs a failure, which the report also carries.
fn save(input: &CycleInput, state: &State) -> Result<(), StateError> {
    if !input.persist {
        return Ok(());
    }
    state::save(&input.state_path, state).inspect_err(|e| tracing::error!(event = "state_not_saved", error = %e, "state not saved"))
}

/// Logs each check that failed: `event=check_failed` for real failures, and
/// `event=check_not_built` (debug) for a parent's tag that this cycle builds first.
fn log_checks(checks: &BTreeMap<Input, Check>, redactor: &Redactor) {
    for (input, c) in checks {
        let Err(e) = &c.seen else { continue };
        let error = redactor.show(e);
        if e.is_failure() {
            tracing::warn!(event = "check_failed", input = %input, kind = e.kind(), %error, "check failed");
        } else {
            tracing::debug!(event = "check_not_built", input = %input, %error, "another build produces this image");
        }
    }
}

/// Logs `event=build_finished` for `name`, with its status, and its seconds,
/// error and saved log where it ran.
fn log_finished(name: &str, outcome: &Outcome, log: Option<&std::path::Path>, redactor: &Redactor) {
    let status = outcome.status();
    let log = log.map_or_else(String::new, |p| p.display().to_string());
    match outcome {
        Outcome::Built { seconds } => {
            tracing::info!(event = "build_finished", build = %name, status, seconds = %format!("{seconds:.2}"), %log, "{outcome}")
        }
        Outcome::Failed { error, seconds } => {
            let (kind, error) = (error.kind(), redactor.show(error));
            tracing::warn!(event = "build_finished", build = %name, status, kind, seconds = %format!("{seconds:.2}"), %error, %log, "build failed")
        }
        _ => tracing::warn!(event = "build_finished", build = %name, status, "{outcome}"),
    }
}

/// What the engines have under each build's first tag, with labels re-seeded;
/// inspected `check_concurrency` at a time. A build is asked of the engine that
/// built it; when that engine does not answer this cycle, its image is taken to
/// exist (it is not rebuilt for that), with no labels. A build with no engine
/// on record is asked of each engine that answers, in order, until one has it.
async fn inspect_outputs(input: &CycleInput, up: &[PoolEngine], built_on: &HashMap<String, String>) -> HashMap<String, Existing> {
    let tags: Vec<(String, String)> =
        input.project.builds.iter().filter_map(|(name, a)| Some((name.clone(), a.build.tags.first()?.to_string()))).collect();
    stream::iter(tags)
        .map(|(name, tag)| async move {
            let asked: Vec<&PoolEngine> = match built_on.get(&name) {
                Some(on) => match up.iter().find(|e| &e.name == on) {
                    Some(e) => vec![e],
                    None => return (name, Existing { exists: true, labels: None }),
                },
                None => up.iter().collect(),
            };
            let mut info = None;
            for e in asked {
                match e.engine.inspect(&tag).await {
                    Ok(Some(i)) => {
                        info = Some(i);
                        break;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(event = "inspect_failed", build = %name, error = %e, "cannot inspect output image"),
                }
            }
            (name, Existing { exists: info.is_some(), labels: info.as_ref().and_then(labels_record) })
        })
        .buffer_unordered(input.check_concurrency.max(1))
        .collect()
        .await
}
