//! Runs a plan's builds: in topological order, at most `parallelism` at once,
//! each starting as soon as its parents in this cycle have succeeded and a slot
//! is free. A failed build's descendants are skipped; independent builds go on.
//! On cancellation no new build starts, and running ones get `grace` to finish.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::BuildError;
pub use crate::placement::{Placement, Slot};

/// How one build of the plan ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Built and tagged.
    Built {
        /// Wall time in seconds, reported and logged.
        seconds: f64,
    },
    /// The build failed.
    Failed {
        /// Why, with the last lines of build output for a failed build.
        error: BuildError,
        /// Wall time in seconds.
        seconds: f64,
    },
    /// Not started because a parent failed or was skipped.
    Skipped {
        /// The parent that did not succeed, named in the report.
        parent: String,
    },
    /// Not started, or stopped, because of shutdown.
    Cancelled,
}

impl Outcome {
    /// The build's status as reports and logs name it: `rebuilt`, `failed`,
    /// `test_failed` (built, but its test gate failed: no tag moved),
    /// `push_failed` (built, but a tag's push failed), `skipped` or `cancelled`.
    pub fn status(&self) -> &'static str {
        match self {
            Outcome::Built { .. } => "rebuilt",
            Outcome::Failed { error: BuildError::Push { .. }, .. } => "push_failed",
            Outcome::Failed { error: BuildError::Test { .. }, .. } => "test_failed",
            Outcome::Failed { .. } => "failed",
            Outcome::Skipped { .. } => "skipped",
            Outcome::Cancelled => "cancelled",
        }
    }

    /// The wall time of a build that ran, in seconds.
    pub fn seconds(&self) -> Option<f64> {
        match self {
            Outcome::Built { seconds } | Outcome::Failed { seconds, .. } => Some(*seconds),
            _ => None,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Built { seconds } => write!(f, "rebuilt in {seconds:.2} s"),
            Outcome::Failed { error, seconds } => write!(f, "failed after {seconds:.2} s: {error}"),
            Outcome::Skipped { parent } => write!(f, "skipped: parent {parent} did not succeed"),
            Outcome::Cancelled => f.write_str("cancelled by the stop signal"),
        }
    }
}

/// A build that failed: why, and what it produced before failing, if anything.
#[derive(Debug)]
pub struct Failure<T> {
    /// Why the build failed.
    pub error: BuildError,
    /// What the build produced before the failure, for `done` to record: an image
    /// that was built and tagged but whose push failed is recorded, so that the next
    /// cycle pushes it without building it again.
    pub value: Option<T>,
}

impl<T> From<BuildError> for Failure<T> {
    fn from(error: BuildError) -> Self {
        Failure { error, value: None }
    }
}

/// A build's result, wall time and the engine (slot index) it ran on, as its task returns them.
type Finished<T> = (String, Result<T, Failure<T>>, f64, usize);

/// Where a plan's builds may run, and how many at once.
#[derive(Debug, Clone, Copy)]
pub struct Pool<'a> {
    /// The engines, each with its capacity.
    pub slots: &'a [Slot],
    /// Each build's [`Placement`]; a build without one may run on any engine.
    pub placements: &'a HashMap<String, Placement>,
    /// Builds at once over all engines (`parallelism`).
    pub parallelism: usize,
}

/// What [`execute`] did.
#[derive(Debug, Default)]
pub struct Executed {
    /// The outcome of every build of the order.
    pub outcomes: BTreeMap<String, Outcome>,
    /// The engine each build that started ran on (the last one, for a retried build).
    pub engines: BTreeMap<String, String>,
    /// Each build retried on another engine → the engine it lost.
    pub retried: BTreeMap<String, String>,
}

/// Runs `order` (topologically sorted build names) with `parents` (each
/// build's parents within `order`), calling `run` with each build and the index
/// of the engine (in `pool.slots`) it goes to.
///
/// A build starts once its parents have succeeded and one of its engines has a
/// free slot ([`crate::placement::choose`], the engine's free slots its room), and at most `pool.parallelism` run at once. A build
/// that fails because its engine stopped answering ([`BuildError::engine_lost`])
/// marks that engine lost for the rest of the run and goes once more to another
/// engine allowed for it; a build left with no engine fails with [`BuildError::NoEngine`].
///
/// `run` returns what a successful build produced (`T`, its record) or its
/// [`Failure`]. `done` is called once per build, as soon as its outcome is
/// known, on the caller's task, with what `run` produced (a failed build's
/// [`Failure::value`] too): there the caller records and logs it.
pub async fn execute<T, F, Fut, D>(
    order: &[String],
    parents: &HashMap<String, Vec<String>>,
    pool: Pool<'_>,
    cancel: &CancellationToken,
    grace: Duration,
    run: F,
    mut done: D,
) -> Executed
where
    T: Send + 'static,
    F: Fn(String, usize) -> Fut,
    Fut: Future<Output = Result<T, Failure<T>>> + Send + 'static,
    D: FnMut(&str, &Outcome, Option<T>),
{
    let mut executed = Executed::default();
    let mut running: JoinSet<Finished<T>> = JoinSet::new();
    let mut started: HashSet<String> = HashSet::new();
    let mut ran_on: HashMap<String, usize> = HashMap::new();
    let mut free: Vec<usize> = pool.slots.iter().map(|s| s.capacity.max(1)).collect();
    let mut lost: HashSet<usize> = HashSet::new();
    let every = Placement { allowed: (0..pool.slots.len()).collect(), prefer: Vec::new() };
    let parallelism = pool.parallelism.max(1);
    let mut stop_deadline = None;
    let mut finish = |outcomes: &mut BTreeMap<String, Outcome>, name: String, outcome: Outcome, value: Option<T>| {
        done(&name, &outcome, value);
        outcomes.insert(name, outcome);
    };
    loop {
        if !cancel.is_cancelled() {
            for name in order {
                if running.len() >= parallelism {
                    break;
                }
                if started.contains(name) || executed.outcomes.contains_key(name) {
                    continue;
                }
                let ps = parents.get(name).map(Vec::as_slice).unwrap_or_default();
                if let Some(bad) = ps.iter().find(|p| matches!(executed.outcomes.get(*p), Some(o) if !matches!(o, Outcome::Built { .. }))) {
                    let skipped = Outcome::Skipped { parent: bad.clone() };
                    finish(&mut executed.outcomes, name.clone(), skipped, None);
                    continue;
                }
                if !ps.iter().all(|p| matches!(executed.outcomes.get(p), Some(Outcome::Built { .. }))) {
                    continue;
                }
                let placement = pool.placements.get(name).unwrap_or(&every);
                let usable = |e: &usize| !lost.contains(e);
                if !placement.allowed.iter().any(usable) {
                    let why = no_engine(placement, pool.slots, &lost);
                    let failed = Outcome::Failed { error: BuildError::NoEngine(why), seconds: 0.0 };
                    finish(&mut executed.outcomes, name.clone(), failed, None);
                    continue;
                }
                let parent_engines: Vec<usize> = ps.iter().filter_map(|p| ran_on.get(p).copied()).collect();
                let room = |e: usize| (usable(&e) && free[e] > 0).then_some(free[e] as i64);
                let Some(engine) = crate::placement::choose(placement, &parent_engines, room) else { continue };
                free[engine] -= 1;
                started.insert(name.clone());
                ran_on.insert(name.clone(), engine);
                executed.engines.insert(name.clone(), pool.slots[engine].name.clone());
                let fut = run(name.clone(), engine);
                let name = name.clone();
                running.spawn(async move {
                    let t = Instant::now();
                    let r = fut.await;
                    (name, r, t.elapsed().as_secs_f64(), engine)
                });
            }
        }
        if running.is_empty() {
            break;
        }
        // Cancelled: no new build starts, and running ones get `grace` from now, not from when one ends.
        let joined = if cancel.is_cancelled() {
            let deadline = *stop_deadline.get_or_insert_with(|| crate::deadline::after(grace).into());
            match tokio::time::timeout_at(deadline, running.join_next()).await {
                Ok(j) => j,
                Err(_) => {
                    tracing::warn!(event = "grace_over", running = running.len(), "shutdown grace period over; abandoning running builds");
                    running.abort_all();
                    break;
                }
            }
        } else {
            tokio::select! {
                j = running.join_next() => j,
                _ = cancel.cancelled() => continue,
            }
        };
        match joined {
            Some(Ok((name, r, seconds, engine))) => {
                free[engine] += 1;
                if let Err(Failure { error, .. }) = &r {
                    let engine_name = &pool.slots[engine].name;
                    if error.engine_lost() && !cancel.is_cancelled() {
                        if lost.insert(engine) {
                            tracing::error!(event = "engine_lost", engine = %engine_name, error = %error, "an engine stopped answering during a build; no more builds go to it this cycle");
                        }
                        if !executed.retried.contains_key(&name) {
                            tracing::warn!(event = "build_retried", build = %name, engine = %engine_name, error = %error, "the build's engine was lost; it goes once more to another engine");
                            executed.retried.insert(name.clone(), engine_name.clone());
                            started.remove(&name);
                            continue;
                        }
                    }
                }
                let (outcome, value) = match r {
                    Ok(v) => (Outcome::Built { seconds }, Some(v)),
                    Err(Failure { error, value }) => (Outcome::Failed { error, seconds }, value),
                };
                finish(&mut executed.outcomes, name, outcome, value);
            }
            Some(Err(e)) => tracing::error!(event = "build_task_failed", error = %e, "build task ended abnormally"),
            None => break,
        }
    }
    for name in order {
        if !executed.outcomes.contains_key(name) {
            finish(&mut executed.outcomes, name.clone(), Outcome::Cancelled, None);
        }
    }
    executed
}

/// Why no engine can run a build with `placement`: none that builds for it answers, or those that did were lost.
fn no_engine(placement: &Placement, slots: &[Slot], lost: &HashSet<usize>) -> String {
    let lost: Vec<&str> = placement.allowed.iter().filter(|e| lost.contains(e)).map(|&e| slots[e].name.as_str()).collect();
    match lost.is_empty() {
        true => "no engine that builds for its platform answers this cycle".into(),
        false => format!("the engines that build for its platform were lost during this cycle: {}", lost.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::EngineError;
    use std::sync::{Arc, Mutex};

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    /// One engine named `default` with `capacity` slots, and no placements.
    fn one(capacity: usize) -> (Vec<Slot>, HashMap<String, Placement>) {
        (vec![Slot { name: "default".into(), capacity }], HashMap::new())
    }

    #[tokio::test]
    async fn failure_skips_descendants_not_siblings() {
        let order = s(&["a", "b", "c", "d"]);
        let parents: HashMap<String, Vec<String>> = [("b".to_string(), s(&["a"])), ("c".to_string(), s(&["b"]))].into();
        let ran = Arc::new(Mutex::new(Vec::new()));
        let r = ran.clone();
        let mut seen = Vec::new();
        let run = move |n: String, _| {
            let r = r.clone();
            async move {
                r.lock().unwrap().push(n.clone());
                if n == "b" {
                    Err(BuildError::Engine(EngineError::Api("boom".into())).into())
                } else {
                    Ok(n)
                }
            }
        };
        let (slots, placements) = one(2);
        let pool = Pool { slots: &slots, placements: &placements, parallelism: 2 };
        let out = execute(&order, &parents, pool, &CancellationToken::new(), Duration::from_secs(1), run, |n, o, v| {
            seen.push((n.to_string(), o.status(), v))
        })
        .await
        .outcomes;
        assert!(seen.contains(&("a".into(), "rebuilt", Some("a".into()))), "done gets what a build produced");
        assert!(seen.contains(&("c".into(), "skipped", None)));
        assert_eq!(seen.len(), 4, "done is called once per build");
        assert!(matches!(out["a"], Outcome::Built { .. }));
        assert!(matches!(out["b"], Outcome::Failed { .. }));
        assert_eq!(out["c"], Outcome::Skipped { parent: "b".into() });
        assert!(matches!(out["d"], Outcome::Built { .. }));
        let ran = ran.lock().unwrap();
        assert!(ran.iter().position(|x| x == "a") < ran.iter().position(|x| x == "b"));
        assert!(!ran.contains(&"c".to_string()));
    }

    #[tokio::test]
    async fn a_stop_gives_running_builds_the_grace_period_from_the_stop() {
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            c.cancel();
        });
        let (order, parents) = (s(&["stuck", "next"]), HashMap::new());
        let (slots, placements) = one(1);
        let run = execute(
            &order,
            &parents,
            Pool { slots: &slots, placements: &placements, parallelism: 1 },
            &cancel,
            Duration::from_millis(100),
            |_, _| std::future::pending::<Result<(), Failure<()>>>(),
            |_, _, _| {},
        );
        let out = tokio::time::timeout(Duration::from_secs(5), run).await.expect("returns once the grace period is over").outcomes;
        assert_eq!(out["stuck"], Outcome::Cancelled);
        assert_eq!(out["next"], Outcome::Cancelled);
    }

    /// Runs five 30 ms builds on `slots` with `parallelism`; returns the most at once, overall and per engine.
    async fn most_at_once(slots: &[Slot], parallelism: usize) -> (usize, Vec<usize>) {
        let order = s(&["a", "b", "c", "d", "e"]);
        let live = Arc::new(Mutex::new((0usize, 0usize, vec![0usize; slots.len()], vec![0usize; slots.len()])));
        let l = live.clone();
        let run = move |_, e: usize| {
            let l = l.clone();
            async move {
                {
                    let mut g = l.lock().unwrap();
                    g.0 += 1;
                    g.1 = g.1.max(g.0);
                    g.2[e] += 1;
                    g.3[e] = g.3[e].max(g.2[e]);
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
                let mut g = l.lock().unwrap();
                g.0 -= 1;
                g.2[e] -= 1;
                Ok(())
            }
        };
        let pool = Pool { slots, placements: &HashMap::new(), parallelism };
        execute(&order, &HashMap::new(), pool, &CancellationToken::new(), Duration::from_secs(1), run, |_, _, _| {}).await;
        let g = live.lock().unwrap();
        (g.1, g.3.clone())
    }

    #[tokio::test]
    async fn respects_parallelism_and_each_engines_capacity() {
        assert_eq!(most_at_once(&one(2).0, 2).await.0, 2);
        let slots = vec![Slot { name: "a".into(), capacity: 1 }, Slot { name: "b".into(), capacity: 3 }];
        assert_eq!(most_at_once(&slots, 8).await, (4, vec![1, 3]), "each engine's capacity");
        assert_eq!(most_at_once(&slots, 2).await.0, 2, "parallelism bounds the total");
    }

    #[tokio::test]
    async fn a_child_goes_to_its_parents_engine_and_a_lost_engine_costs_one_retry_elsewhere() {
        let order = s(&["p", "c", "x"]);
        let parents: HashMap<String, Vec<String>> = [("c".to_string(), s(&["p"]))].into();
        let slots = vec![Slot { name: "a".into(), capacity: 2 }, Slot { name: "b".into(), capacity: 2 }];
        // p prefers b (it holds its base); x may only run on a, which is lost under it.
        let placements: HashMap<String, Placement> = [
            ("p".to_string(), Placement { allowed: vec![0, 1], prefer: vec![1] }),
            ("x".to_string(), Placement { allowed: vec![0, 1], prefer: vec![0] }),
        ]
        .into();
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let at = attempts.clone();
        let run = move |n: String, e: usize| {
            let at = at.clone();
            async move {
                at.lock().unwrap().push((n.clone(), e));
                if n == "x" && e == 0 {
                    return Err(BuildError::Engine(EngineError::Unreachable("connection reset".into())).into());
                }
                Ok(())
            }
        };
        let pool = Pool { slots: &slots, placements: &placements, parallelism: 4 };
        let done = execute(&order, &parents, pool, &CancellationToken::new(), Duration::from_secs(1), run, |_, _, _| {}).await;
        assert!(done.outcomes.values().all(|o| matches!(o, Outcome::Built { .. })), "{:?}", done.outcomes);
        assert_eq!(done.engines["p"], "b", "the engine that holds its base");
        assert_eq!(done.engines["c"], "b", "its parent's engine");
        assert_eq!(done.engines["x"], "b", "retried on the other engine");
        assert_eq!(done.retried["x"], "a");
        assert_eq!(attempts.lock().unwrap().iter().filter(|(n, _)| n == "x").count(), 2, "one retry");
    }

    #[tokio::test]
    async fn a_build_with_no_engine_left_fails_and_its_children_are_skipped() {
        let order = s(&["p", "c"]);
        let parents: HashMap<String, Vec<String>> = [("c".to_string(), s(&["p"]))].into();
        let slots = vec![Slot { name: "a".into(), capacity: 1 }];
        let placements: HashMap<String, Placement> = [("p".to_string(), Placement::default())].into();
        let pool = Pool { slots: &slots, placements: &placements, parallelism: 1 };
        let run = |_, _| async { Ok::<(), Failure<()>>(()) };
        let out = execute(&order, &parents, pool, &CancellationToken::new(), Duration::from_secs(1), run, |_, _, _| {}).await.outcomes;
        assert!(matches!(&out["p"], Outcome::Failed { error: BuildError::NoEngine(_), .. }), "{:?}", out["p"]);
        assert_eq!(out["c"], Outcome::Skipped { parent: "p".into() });
    }
}
