//! Planning: (project, current digests, state, what the engine has) → which
//! builds to rebuild this cycle, in what order, and why. Pure: no I/O.
//!
//! A build is stale when its first tag is missing in the engine, or when the
//! current digest of any watched image differs from the one it was last built
//! from. The affected set is the stale builds plus all their descendants.
//! Builds with no record whose image exists are adopted as a baseline (from
//! their labels when freshen built them), not rebuilt.
//!
//! For a multi-platform image, the digest compared is the child manifest's for
//! the build's platform (or the engine's), so a re-push of other platforms is
//! not a change. With a settle window, a build waits until every changed image
//! it watches has kept its new digest for the window, and so do its descendants:
//! parents that change inside one window lead to one rebuild of their common
//! descendants.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::project::Project;
use crate::state::{BuildRecord, State};

/// What is known now of one watched image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    /// Top-level digest (`sha256:…`): the index digest for multi-platform images.
    pub digest: String,
    /// Platform (`os/arch[/variant]`) → child manifest digest, for an index; else empty.
    pub platforms: BTreeMap<String, String>,
    /// When this digest was first seen, seconds since the Unix epoch.
    pub since: u64,
}

impl Current {
    /// The digest to compare for a build on `platform`: the child's for an
    /// index that has one for the platform, else the top-level digest.
    pub fn for_platform(&self, platform: &str) -> &str {
        crate::registry::select_platform(&self.platforms, platform).unwrap_or(&self.digest)
    }
}

/// The current digest of one watched image, or why it is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// Known this cycle.
    Digest(Current),
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
    /// Not yet: a changed image (or an ancestor's) is inside its settle window.
    Settling {
        /// The image still settling, or the ancestor build waiting on one.
        image: String,
        /// When the window ends, seconds since the Unix epoch.
        ready_at: u64,
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

impl std::fmt::Display for Decision {
    /// The decision in words, as `plan`, `explain`, the text report and the logs show it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decision::Fresh => f.write_str("nothing changed"),
            Decision::Missing => f.write_str("image missing"),
            Decision::Changed { image, old, new } => write!(f, "{image} changed {old} → {new}"),
            Decision::RebuildOnStart => f.write_str("rebuild_on_start"),
            Decision::ParentRebuilt { parent } => write!(f, "parent {parent} rebuilt"),
            Decision::Settling { image, ready_at } => write!(f, "{image} settling until {}", rfc3339(*ready_at)),
            Decision::CheckFailed { reason } => write!(f, "check failed: {reason}"),
            Decision::Error { reason } => f.write_str(reason),
        }
    }
}

/// `secs` (seconds since the Unix epoch) as an RFC 3339 time, for people to read.
pub fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string()
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
    /// Records to store for builds adopted as a baseline, re-seeded from
    /// labels, or fresh with newly watched images.
    pub adopted: BTreeMap<String, BuildRecord>,
    /// Earliest end of a settle window, when something is settling: the next check is due then.
    pub recheck_at: Option<u64>,
}

/// Everything [`plan`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// The resolved project.
    pub project: &'a Project,
    /// A digest (or failure) for every watched image of every build, by normalised reference.
    pub current: &'a HashMap<String, Observed>,
    /// What the engine has under each build's first tag.
    pub existing: &'a HashMap<String, Existing>,
    /// State before this cycle.
    pub state: &'a State,
    /// First cycle with `rebuild_on_start`.
    pub rebuild_all: bool,
    /// Now, seconds since the Unix epoch.
    pub now: u64,
    /// Settle window, seconds.
    pub settle_secs: u64,
    /// The engine's platform, for builds without `platform`.
    pub engine_platform: &'a str,
}

/// Plans one cycle.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let mut out = Plan::default();
    for (name, a) in &input.project.builds {
        if let Some(reason) = a.error_text() {
            out.decisions.insert(name.clone(), Decision::Error { reason });
            continue;
        }
        let platform = a.build.platform.as_deref().unwrap_or(input.engine_platform);
        let digests: BTreeMap<String, Result<(String, u64), String>> = a
            .watched
            .iter()
            .map(|w| {
                let v = match input.current.get(w.as_str()) {
                    Some(Observed::Digest(c)) => Ok((c.for_platform(platform).to_string(), c.since)),
                    Some(Observed::Failed(e)) => Err(e.clone()),
                    None => Err("not checked".to_string()),
                };
                (w.to_string(), v)
            })
            .collect();
        let known: BTreeMap<String, String> = digests.iter().filter_map(|(k, v)| Some((k.clone(), v.as_ref().ok()?.0.clone()))).collect();
        let ex = input.existing.get(name).cloned().unwrap_or_default();
        let record = input.state.builds.get(name).cloned().or_else(|| {
            let (built_from, origin) = match &ex.labels {
                _ if !ex.exists => return None,
                Some(l) => (l.clone(), "labels"),
                None => (known.clone(), "baseline"),
            };
            let r = BuildRecord { built_from, image_id: None, recorded_at: input.now, origin: origin.into() };
            out.adopted.insert(name.clone(), r.clone());
            Some(r)
        });
        let decision = decide(&digests, record.as_ref(), ex.exists, input);
        if let (Decision::Fresh, Some(r)) = (&decision, &record) {
            if known.keys().any(|k| !r.built_from.contains_key(k)) {
                let mut r = out.adopted.get(name).cloned().unwrap_or_else(|| r.clone());
                for (k, d) in &known {
                    r.built_from.entry(k.clone()).or_insert_with(|| d.clone());
                }
                out.adopted.insert(name.clone(), r);
            }
        }
        out.decisions.insert(name.clone(), decision);
    }
    schedule(input.project, &mut out);
    out
}

/// Fills in `order`: the stale builds and their descendants, minus whatever
/// descends from a settling build.
fn schedule(project: &Project, out: &mut Plan) {
    let with = |f: fn(&Decision) -> bool| -> Vec<String> { out.decisions.iter().filter(|(_, d)| f(d)).map(|(n, _)| n.clone()).collect() };
    let settling = with(|d| matches!(d, Decision::Settling { .. }));
    let stale = with(Decision::rebuilds);
    out.recheck_at =
        out.decisions.values().filter_map(|d| if let Decision::Settling { ready_at, .. } = d { Some(*ready_at) } else { None }).min();
    let held = project.graph.with_descendants(settling.iter().map(String::as_str));
    let affected: BTreeSet<String> = project.graph.with_descendants(stale.iter().map(String::as_str));
    for name in project.graph.order() {
        if !affected.contains(&name) || matches!(out.decisions[&name], Decision::Error { .. }) {
            continue;
        }
        if held.contains(&name) {
            if !matches!(out.decisions[&name], Decision::Settling { .. }) {
                let via =
                    settling.iter().find(|s| project.graph.with_descendants([s.as_str()]).contains(&name)).cloned().unwrap_or_default();
                let ready_at = match out.decisions.get(&via) {
                    Some(Decision::Settling { ready_at, .. }) => *ready_at,
                    _ => 0,
                };
                out.decisions.insert(name.clone(), Decision::Settling { image: format!("build {via}"), ready_at });
            }
            continue;
        }
        if !out.decisions[&name].rebuilds() {
            let parent = project.graph.parents(&name).into_iter().find(|p| affected.contains(*p)).unwrap_or_default().to_string();
            out.decisions.insert(name.clone(), Decision::ParentRebuilt { parent });
        }
        out.order.push(name);
    }
}

fn decide(
    digests: &BTreeMap<String, Result<(String, u64), String>>,
    record: Option<&BuildRecord>,
    exists: bool,
    input: &PlanInput<'_>,
) -> Decision {
    if !exists {
        return Decision::Missing;
    }
    if input.rebuild_all {
        return Decision::RebuildOnStart;
    }
    let (mut changed, mut settling, mut failed) = (None, None, None);
    for (image, observed) in digests {
        match observed {
            Ok((new, since)) => match record.and_then(|r| r.built_from.get(image)) {
                Some(old) if old != new => {
                    let ready_at = since + input.settle_secs;
                    if ready_at > input.now {
                        let later = matches!(settling, Some(Decision::Settling { ready_at: r, .. }) if r >= ready_at);
                        if !later {
                            settling = Some(Decision::Settling { image: image.clone(), ready_at });
                        }
                    } else {
                        changed.get_or_insert_with(|| Decision::Changed { image: image.clone(), old: old.clone(), new: new.clone() });
                    }
                }
                _ => {}
            },
            Err(reason) => {
                failed.get_or_insert_with(|| Decision::CheckFailed { reason: format!("{image}: {reason}") });
            }
        }
    }
    settling.or(changed).or(failed).unwrap_or(Decision::Fresh)
}
