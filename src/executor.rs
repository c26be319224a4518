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

/// A build's result and wall time, as its task returns them.
type Finished<T> = (String, Result<T, Failure<T>>, f64);

/// Runs `order` (topologically sorted build names) with `parents` (each
/// build's parents within `order`), calling `run` for each build.
///
/// `run` returns what a successful build produced (`T`, its record) or its
/// [`Failure`]. `done` is called once per build, as soon as its outcome is
/// known, on the caller's task, with what `run` produced (a failed build's
/// [`Failure::value`] too): there the caller records and logs it. Returns the outcome of every build in `order`.
pub async fn execute<T, F, Fut, D>(
    order: &[String],
    parents: &HashMap<String, Vec<String>>,
    parallelism: usize,
    cancel: &CancellationToken,
    grace: Duration,
    run: F,
    mut done: D,
) -> BTreeMap<String, Outcome>
where
    T: Send + 'static,
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<T, Failure<T>>> + Send + 'static,
    D: FnMut(&str, &Outcome, Option<T>),
{
    let mut outcomes: BTreeMap<String, Outcome> = BTreeMap::new();
    let mut running: JoinSet<Finished<T>> = JoinSet::new();
    let mut started: HashSet<String> = HashSet::new();
    let parallelism = parallelism.max(1);
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
                if started.contains(name) || outcomes.contains_key(name) {
                    continue;
                }
                let ps = parents.get(name).map(Vec::as_slice).unwrap_or_default();
                if let Some(bad) = ps.iter().find(|p| matches!(outcomes.get(*p), Some(o) if !matches!(o, Outcome::Built { .. }))) {
                    let skipped = Outcome::Skipped { parent: bad.clone() };
                    finish(&mut outcomes, name.clone(), skipped, None);
                    continue;
                }
                if ps.iter().all(|p| matches!(outcomes.get(p), Some(Outcome::Built { .. }))) {
                    started.insert(name.clone());
                    let fut = run(name.clone());
                    let name = name.clone();
                    running.spawn(async move {
                        let t = Instant::now();
                        let r = fut.await;
                        (name, r, t.elapsed().as_secs_f64())
                    });
                }
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
            Some(Ok((name, r, seconds))) => {
                let (outcome, value) = match r {
                    Ok(v) => (Outcome::Built { seconds }, Some(v)),
                    Err(Failure { error, value }) => (Outcome::Failed { error, seconds }, value),
                };
                finish(&mut outcomes, name, outcome, value);
            }
            Some(Err(e)) => tracing::error!(event = "build_task_failed", error = %e, "build task ended abnormally"),
            None => break,
        }
    }
    for name in order {
        if !outcomes.contains_key(name) {
            finish(&mut outcomes, name.clone(), Outcome::Cancelled, None);
        }
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[tokio::test]
    async fn failure_skips_descendants_not_siblings() {
        let order = s(&["a", "b", "c", "d"]);
        let parents: HashMap<String, Vec<String>> = [("b".to_string(), s(&["a"])), ("c".to_string(), s(&["b"]))].into();
        let ran = Arc::new(Mutex::new(Vec::new()));
        let r = ran.clone();
        let mut seen = Vec::new();
        let run = move |n: String| {
            let r = r.clone();
            async move {
                r.lock().unwrap().push(n.clone());
                if n == "b" {
                    Err(BuildError::Engine(crate::error::EngineError::Api("boom".into())).into())
                } else {
                    Ok(n)
                }
            }
        };
        let out = execute(&order, &parents, 2, &CancellationToken::new(), Duration::from_secs(1), run, |n, o, v| {
            seen.push((n.to_string(), o.status(), v))
        })
        .await;
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
        let run = execute(
            &order,
            &parents,
            1,
            &cancel,
            Duration::from_millis(100),
            |_| std::future::pending::<Result<(), Failure<()>>>(),
            |_, _, _| {},
        );
        let out = tokio::time::timeout(Duration::from_secs(5), run).await.expect("returns once the grace period is over");
        assert_eq!(out["stuck"], Outcome::Cancelled);
        assert_eq!(out["next"], Outcome::Cancelled);
    }

    #[tokio::test]
    async fn respects_parallelism() {
        let order = s(&["a", "b", "c", "d", "e"]);
        let live = Arc::new(Mutex::new((0usize, 0usize)));
        let l = live.clone();
        let run = move |_| {
            let l = l.clone();
            async move {
                {
                    let mut g = l.lock().unwrap();
                    g.0 += 1;
                    g.1 = g.1.max(g.0);
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
                l.lock().unwrap().0 -= 1;
                Ok(())
            }
        };
        execute(&order, &HashMap::new(), 2, &CancellationToken::new(), Duration::from_secs(1), run, |_, _, _| {}).await;
        assert_eq!(live.lock().unwrap().1, 2);
    }
}
