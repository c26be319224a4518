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

pub use crate::check::CheckReport;
use crate::check::Checker;
use crate::engine::Engine;
use crate::executor::{self, Outcome};
use crate::plan::{self, Decision, Existing, PlanInput};
use crate::project::Project;
use crate::rebuild::{labels_record, Builder};
use crate::registry::Registry;
use crate::state::{self, State};

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
    /// Save state (false for `explain`, which only looks).
    pub persist: bool,
    /// Settle window.
    pub settle: Duration,
    /// Rate-limit reserve per registry.
    pub rate_limit_reserve: u64,
    /// The engine's platform (`os/arch`).
    pub engine_platform: String,
    /// Stop signal.
    pub cancel: CancellationToken,
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
    /// When a settle window ends, seconds since the Unix epoch: the next check is due then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recheck_at: Option<u64>,
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
    let checker = Checker {
        project,
        engine: input.engine.as_ref(),
        registry: input.registry.as_ref(),
        state: &input.state,
        concurrency: input.check_concurrency,
        rate_limit_reserve: input.rate_limit_reserve,
    };
    let (current, checks) = checker.check_all().await;
    let existing = inspect_outputs(input).await;
    let mut state_error = None;
    let plan = {
        let mut st = input.state.lock().expect("state lock");
        let plan = plan::plan(&PlanInput {
            project,
            current: &current,
            existing: &existing,
            state: &st,
            rebuild_all: input.rebuild_all,
            now: state::now_secs(),
            settle_secs: input.settle.as_secs(),
            engine_platform: &input.engine_platform,
        });
        st.builds.extend(plan.adopted.clone());
        if input.persist {
            if let Err(e) = state::save(&input.state_path, &st) {
                state_error = Some(e.to_string());
            }
        }
        plan
    };
    for (name, d) in &plan.decisions {
        match d {
            Decision::Fresh => tracing::debug!(event = "build_fresh", build = %name, "fresh"),
            Decision::Settling { .. } => {
                tracing::info!(event = "build_settling", build = %name, reason = %d, "waiting for the settle window")
            }
            d if d.rebuilds() => tracing::info!(event = "build_planned", build = %name, reason = %d, "will rebuild"),
            d => tracing::warn!(event = "build_not_checked", build = %name, reason = %d, "not checked"),
        }
    }
    let mut outcomes = BTreeMap::new();
    if !input.dry_run && !plan.order.is_empty() {
        let in_order = |p: &&str| plan.order.iter().any(|o| o == p);
        let parents: HashMap<String, Vec<String>> = plan
            .order
            .iter()
            .map(|n| (n.clone(), project.graph.parents(n).into_iter().filter(in_order).map(String::from).collect()))
            .collect();
        let builder = Arc::new(Builder {
            state: input.state.clone(),
            state_path: input.state_path.clone(),
            engine: input.engine.clone(),
            project: input.project.clone(),
            current,
            engine_platform: input.engine_platform.clone(),
            save_error: Mutex::new(None),
        });
        outcomes = executor::execute(&plan.order, &parents, input.parallelism, &input.cancel, input.shutdown_grace, |name| {
            let builder = builder.clone();
            async move { builder.build(&name).await }
        })
        .await;
        let save_error = builder.save_error.lock().expect("lock").take();
        if save_error.is_some() {
            state_error = save_error;
        }
    }
    CycleReport {
        checks,
        decisions: plan.decisions,
        outcomes,
        state_error,
        seconds: started.elapsed().as_secs_f64(),
        recheck_at: plan.recheck_at,
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
