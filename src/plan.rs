//! Planning: (project, current digests, state, what the engine has) → which
//! builds to rebuild this cycle, in what order, and why. Pure: no I/O.
//!
//! A build is stale when its first tag is missing in the engine, or when the
//! current digest of any watched image differs from the one it was last built
//! from. The affected set is the stale builds plus all their descendants.
//! Builds with no record whose image exists are adopted as a baseline (from
//! their labels when freshen built them), not rebuilt.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::project::Project;
use crate::state::{BuildRecord, State};

/// The current digest of one watched image, or why it is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// The digest (`sha256:…`) seen this cycle.
    Digest(String),
    /// The check failed; the text says why.
    Failed(String),
}

/// What the engine has under a build's first tag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Existing {
    /// Whether the first tag exists.
    pub exists: bool,
    /// The `built_from` map re-seeded from the image's freshen labels, when present.
    pub labels: Option<BTreeMap<String, String>>,
}

/// Why a build is rebuilt, or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Decision {
    /// Nothing changed.
    Fresh,
    /// Rebuild: the first tag is missing in the engine.
    Missing,
    /// Rebuild: a watched image has a new digest.
    Changed {
        /// The watched image.
        image: String,
        /// Digest the build was built from.
        old: String,
        /// Digest now.
        new: String,
    },
    /// Rebuild: `rebuild_on_start` is set and this is the first cycle.
    RebuildOnStart,
    /// Rebuild: a parent build is rebuilt this cycle.
    ParentRebuilt {
        /// The parent.
        parent: String,
    },
    /// Not rebuilt: a watched image could not be checked.
    CheckFailed {
        /// Why.
        reason: String,
    },
    /// Not rebuilt: the Dockerfile could not be resolved.
    Error {
        /// Why.
        reason: String,
    },
}

impl Decision {
    /// True when this decision rebuilds the build.
    pub fn rebuilds(&self) -> bool {
        matches!(self, Decision::Missing | Decision::Changed { .. } | Decision::RebuildOnStart | Decision::ParentRebuilt { .. })
    }
}

/// A cycle's plan.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Every build's decision.
    pub decisions: BTreeMap<String, Decision>,
    /// Builds to rebuild, in topological order.
    pub order: Vec<String>,
    /// Records to store for builds adopted as a baseline or re-seeded from labels.
    pub adopted: BTreeMap<String, BuildRecord>,
}

/// Plans one cycle.
///
/// `current` holds a digest (or failure) for every watched image of every
/// build; `existing` what the engine has under each build's first tag;
/// `rebuild_all` is true on the first cycle with `rebuild_on_start`; `now` is
/// the time stamp for adopted records, seconds since the Unix epoch.
pub fn plan(
    project: &Project,
    current: &HashMap<String, Observed>,
    existing: &HashMap<String, Existing>,
    state: &State,
    rebuild_all: bool,
    now: u64,
) -> Plan {
    let mut out = Plan::default();
    for (name, a) in &project.builds {
        if let Err(e) = &a.resolution {
            out.decisions.insert(name.clone(), Decision::Error { reason: e.clone() });
            continue;
        }
        let ex = existing.get(name).cloned().unwrap_or_default();
        let digests: BTreeMap<String, &Observed> =
            a.watched.iter().map(|w| (w.to_string(), current.get(w.as_str()).unwrap_or(&MISSING))).collect();
        let record = state.builds.get(name).cloned().or_else(|| {
            if !ex.exists {
                return None;
            }
            let (built_from, origin) = match &ex.labels {
                Some(l) => (l.clone(), "labels"),
                None => (known(&digests), "baseline"),
            };
            let r = BuildRecord { built_from, image_id: None, recorded_at: now, origin: origin.into() };
            out.adopted.insert(name.clone(), r.clone());
            Some(r)
        });
        let decision = decide(&digests, record.as_ref(), ex.exists, rebuild_all);
        out.decisions.insert(name.clone(), decision);
    }
    let stale: Vec<&str> = out.decisions.iter().filter(|(_, d)| d.rebuilds()).map(|(n, _)| n.as_str()).collect();
    let affected: BTreeSet<String> = project.graph.with_descendants(stale);
    for name in project.graph.order() {
        if !affected.contains(&name) || matches!(out.decisions[&name], Decision::Error { .. }) {
            continue;
        }
        if !out.decisions[&name].rebuilds() {
            let parent = project.graph.parents(&name).into_iter().find(|p| affected.contains(*p)).unwrap_or_default().to_string();
            out.decisions.insert(name.clone(), Decision::ParentRebuilt { parent });
        }
        out.order.push(name);
    }
    out
}

static MISSING: Observed = Observed::Failed(String::new());

fn known(digests: &BTreeMap<String, &Observed>) -> BTreeMap<String, String> {
    digests
        .iter()
        .filter_map(|(k, o)| match o {
            Observed::Digest(d) => Some((k.clone(), d.clone())),
            Observed::Failed(_) => None,
        })
        .collect()
}

fn decide(digests: &BTreeMap<String, &Observed>, record: Option<&BuildRecord>, exists: bool, rebuild_all: bool) -> Decision {
    if !exists {
        return Decision::Missing;
    }
    if rebuild_all {
        return Decision::RebuildOnStart;
    }
    let mut failed = None;
    for (image, observed) in digests {
        match observed {
            Observed::Digest(new) => match record.and_then(|r| r.built_from.get(image)) {
                Some(old) if old != new => return Decision::Changed { image: image.clone(), old: old.clone(), new: new.clone() },
                _ => {}
            },
            Observed::Failed(reason) => {
                let reason = if reason.is_empty() { "not checked".to_string() } else { reason.clone() };
                failed.get_or_insert_with(|| Decision::CheckFailed { reason: format!("{image}: {reason}") });
            }
        }
    }
    failed.unwrap_or(Decision::Fresh)
}
