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
use crate::engine::{Builder, Engine};
use crate::executor::{self, Outcome};
use crate::input::{Check, Input};
use crate::plan::{self, Compared, Decision, Existing, PlanInput};
use crate::project::Project;
use crate::rebuild::{labels_record, Rebuild};
use crate::registry::Registry;
use crate::state::{self, State, StateError};

/// Everything a cycle needs.
pub struct CycleInput {
    /// The resolved project: what to check and build.
    pub project: Arc<Project>,
    /// Inspects, pulls and builds.
    pub engine: Arc<dyn Engine>,
    /// Checks registry digests.
    pub registry: Arc<dyn Registry>,
    /// Where state is saved.
    pub state_path: std::path::PathBuf,
    /// Builds at once.
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
    /// The engine's platform (`os/arch`), for builds without `platform`.
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
    /// The builder each build runs with (its `builder` on this engine), reported beside its decision.
    pub builders: BTreeMap<String, Builder>,
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
    let git = crate::git::GitCache::beside(&input.state_path);
    let checker = |project| Checker {
        project,
        engine: input.engine.as_ref(),
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
    // The registry checks and the engine's answers for the output tags do not depend on each other.
    let rest = checker(project);
    let (checks, existing) = tokio::join!(rest.check_rest(state, state::now_secs(), sources), inspect_outputs(input));
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
    let mut outcomes = BTreeMap::new();
    let mut logs = BTreeMap::new();
    let mut pushed = BTreeMap::new();
    let mut images = BTreeMap::new();
    if !input.dry_run && !plan.order.is_empty() {
        let in_order = |p: &&str| plan.order.iter().any(|o| o == p);
        let parents: HashMap<String, Vec<String>> = plan
            .order
            .iter()
            .map(|n| (n.clone(), project.graph.parents(n).into_iter().filter(in_order).map(String::from).collect()))
            .collect();
        let builder = Arc::new(Rebuild {
            engine: input.engine.clone(),
            registry: input.registry.clone(),
            push_timeout: input.push_timeout,
            project: project.clone(),
            timeout: input.build_timeout,
            idle_timeout: input.build_idle_timeout,
            logs: BuildLogs::beside(&input.state_path, input.keep_logs),
            written: Default::default(),
            state_path: input.state_path.clone(),
            keep_previous: input.keep_previous,
        });
        let compared = Arc::new(plan.compared.clone());
        // Push-only jobs start from the stored record of the image they push.
        let pending: Arc<BTreeMap<String, state::BuildRecord>> = Arc::new(
            plan.order
                .iter()
                .filter(|n| matches!(plan.decisions[*n], Decision::PushPending))
                .filter_map(|n| Some((n.clone(), state.builds.get(n)?.clone())))
                .collect(),
        );
        let run = |name: String| {
            let (builder, compared, pending) = (builder.clone(), compared.clone(), pending.clone());
            async move {
                match pending.get(&name) {
                    Some(record) => builder.push(&name, record.clone()).await,
                    None => builder.build(&name, &compared[&name]).await,
                }
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
                        built.push((name.to_string(), id.clone()));
                    }
                }
                state.builds.insert(name.to_string(), record);
                if let Err(e) = save(input, state) {
                    state_error = Some(e);
                }
            }
        };
        outcomes = executor::execute(&plan.order, &parents, input.parallelism, &input.cancel, input.shutdown_grace, run, done).await;
        // Previous images are removed once every build of the cycle has ended: a classic
        // build that probes its cache while an image is removed can fail (moby 20.10).
        for (name, id) in &built {
            builder.clean(name, id).await;
        }
        logs = builder.take_logs();
    }
    CycleReport {
        checks: checks.inputs,
        decisions: plan.decisions,
        compared: plan.compared,
        outcomes,
        state_error,
        seconds: started.elapsed().as_secs_f64(),
        recheck_at: plan.recheck_at,
        redactor,
        builders: project.builds.iter().map(|(n, a)| (n.clone(), Builder::choose(a.build.builder, input.engine.has_buildkit()))).collect(),
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

/// What the engine has under each build's first tag, with labels re-seeded;
/// inspected `check_concurrency` at a time.
async fn inspect_outputs(input: &CycleInput) -> HashMap<String, Existing> {
    let tags: Vec<(String, String)> =
        input.project.builds.iter().filter_map(|(name, a)| Some((name.clone(), a.build.tags.first()?.to_string()))).collect();
    stream::iter(tags)
        .map(|(name, tag)| async move {
            let info = match input.engine.inspect(&tag).await {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!(event = "inspect_failed", build = %name, error = %e, "cannot inspect output image");
                    None
                }
            };
            (name, Existing { exists: info.is_some(), labels: info.as_ref().and_then(labels_record) })
        })
        .buffer_unordered(input.check_concurrency.max(1))
        .collect()
        .await
}
