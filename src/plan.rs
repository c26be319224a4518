//! Planning: (project, current digests, state, what the engine has) → which
//! builds to rebuild this cycle, in what order, and why. Pure: no I/O.
//!
//! A build is stale when its first tag is missing in the engine, or when the
//! current digest of any watched input differs from the one it was last built
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
use std::fmt;

use crate::error::{CheckError, ResolveError};
use crate::input::{Check, Input};
use crate::project::Project;
use crate::state::{BuildRecord, Origin, State};

/// The digests of one watched input of one build, as the plan compared them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compared {
    /// The digest the build was last built from, when it has a record.
    pub built_from: Option<String>,
    /// The current digests, or why there are none.
    pub current: Result<Current, CheckError>,
}

/// The current digests of one input, for one build's platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    /// The top-level digest (the index's for a multi-platform image): what a pulled
    /// image's `RepoDigests` show.
    pub digest: String,
    /// The digest compared and recorded for the build: the platform's child manifest
    /// for an index ([`crate::input::Observation::for_platform`]), else `digest`.
    pub for_build: String,
    /// When this digest was first seen, seconds since the Unix epoch: the settle window counts from it.
    pub since: u64,
    /// The local image ID this digest's image was seen under before its first push
    /// ([`crate::input::Check::replaces`]): a build recorded on it is fresh.
    pub replaces: Option<String>,
    /// For a git ref: the remote's tags on the commit, which `{semver.…}` tag templates read.
    pub git_tags: Vec<String>,
}

/// What the engine has under a build's first tag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Existing {
    /// Whether the first tag exists: a missing one is rebuilt.
    pub exists: bool,
    /// The `built_from` map re-seeded from the image's freshen labels, when present:
    /// a lost state file then costs no rebuild.
    pub labels: Option<BTreeMap<Input, String>>,
}

/// What a settling build waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// A watched input whose new digest is inside its settle window.
    Input(Input),
    /// A parent build that is itself settling.
    Build(String),
}

impl fmt::Display for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Waiting::Input(i) => write!(f, "{i}"),
            Waiting::Build(b) => write!(f, "build {b}"),
        }
    }
}

/// Why a build is rebuilt, or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing changed.
    Fresh,
    /// Rebuild: the first tag is missing in the engine.
    Missing,
    /// Rebuild: a watched input has a new digest.
    Changed {
        /// The input that changed.
        input: Input,
        /// The digest the build was built from.
        old: String,
        /// The digest now.
        new: String,
    },
    /// Rebuild: `rebuild_on_start` is set and this is the first cycle.
    RebuildOnStart,
    /// Rebuild: a parent build is rebuilt this cycle.
    ParentRebuilt {
        /// The parent, named in the report.
        parent: String,
    },
    /// Push only: the image was built and tagged, but its push failed; it is
    /// pushed again without building it, and its descendants are rebuilt on it.
    PushPending,
    /// Not yet: a changed input (or an ancestor build) is inside its settle window.
    Settling {
        /// What the build waits for.
        on: Waiting,
        /// When the window ends, seconds since the Unix epoch: the next check is due then.
        ready_at: u64,
    },
    /// Not rebuilt: a watched input could not be checked.
    CheckFailed {
        /// The input.
        input: Input,
        /// Why its check failed.
        error: CheckError,
    },
    /// Not rebuilt: the Dockerfile could not be resolved.
    Error(ResolveError),
}

impl fmt::Display for Decision {
    /// The decision in words, as `plan`, `explain`, the text report and the logs show it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Fresh => f.write_str("nothing changed"),
            Decision::Missing => f.write_str("image missing"),
            Decision::Changed { input, old, new } => write!(f, "{input} changed {old} → {new}"),
            Decision::RebuildOnStart => f.write_str("rebuild_on_start"),
            Decision::ParentRebuilt { parent } => write!(f, "parent {parent} rebuilt"),
            Decision::PushPending => f.write_str("built, but its push did not finish: push only"),
            Decision::Settling { on, ready_at } => write!(f, "{on} settling until {}", rfc3339(*ready_at)),
            Decision::CheckFailed { input, error } => write!(f, "check failed: {input}: {error}"),
            Decision::Error(e) => write!(f, "{e}"),
        }
    }
}

/// `secs` (seconds since the Unix epoch) as an RFC 3339 time, for people to read.
pub fn rfc3339(secs: u64) -> String {
    // humantime formats years up to 9999; a later time (from a bad state file) is shown as that limit.
    let secs = secs.min(253_402_300_799);
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string()
}

impl Decision {
    /// True when this decision rebuilds the build.
    pub fn rebuilds(&self) -> bool {
        matches!(self, Decision::Missing | Decision::Changed { .. } | Decision::RebuildOnStart | Decision::ParentRebuilt { .. })
    }

    /// True when the build runs this cycle: a rebuild, or a push-only job.
    pub fn runs(&self) -> bool {
        self.rebuilds() || matches!(self, Decision::PushPending)
    }

    /// The decision's name, as the JSON report's `status` gives it: `fresh`,
    /// `missing`, `changed`, `rebuild_on_start`, `parent_rebuilt`, `push_pending`, `settling`, `check_failed` or `error`.
    pub fn status(&self) -> &'static str {
        match self {
            Decision::Fresh => "fresh",
            Decision::Missing => "missing",
            Decision::Changed { .. } => "changed",
            Decision::RebuildOnStart => "rebuild_on_start",
            Decision::ParentRebuilt { .. } => "parent_rebuilt",
            Decision::PushPending => "push_pending",
            Decision::Settling { .. } => "settling",
            Decision::CheckFailed { .. } => "check_failed",
            Decision::Error(_) => "error",
        }
    }

    /// True when the decision reports a failure: a real check failure or a Dockerfile error.
    pub fn failed(&self) -> bool {
        match self {
            Decision::CheckFailed { error, .. } => error.is_failure(),
            Decision::Error(_) => true,
            _ => false,
        }
    }
}

/// A cycle's plan.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Every build's decision.
    pub decisions: BTreeMap<String, Decision>,
    /// Every build's watched inputs as compared: what `explain` shows, and the
    /// digests a rebuild records.
    pub compared: BTreeMap<String, BTreeMap<Input, Compared>>,
    /// Builds to rebuild, in topological order.
    pub order: Vec<String>,
    /// Records to store for builds adopted as a baseline, re-seeded from
    /// labels, or fresh with newly watched inputs.
    pub adopted: BTreeMap<String, BuildRecord>,
    /// Earliest end of a settle window, when something is settling: the next check is due then.
    pub recheck_at: Option<u64>,
}

/// Everything [`plan`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// The resolved project.
    pub project: &'a Project,
    /// This cycle's check of every watched input.
    pub checks: &'a BTreeMap<Input, Check>,
    /// What the engine has under each build's first tag.
    pub existing: &'a HashMap<String, Existing>,
    /// State before this cycle: each build's record.
    pub state: &'a State,
    /// First cycle with `rebuild_on_start`.
    pub rebuild_all: bool,
    /// Now, seconds since the Unix epoch: settle windows end against it.
    pub now: u64,
    /// Settle window, seconds.
    pub settle_secs: u64,
    /// The engine's platform, for builds without `platform`: picks the digest of a multi-platform image.
    pub engine_platform: &'a str,
}

/// The digest a build with `{semver.…}` tag templates compares for a git ref: the
/// commit's (or its paths') digest, then `+` and the version of the highest semver tag
/// on the commit (`tags`), so that a release tag pushed onto a commit already built
/// rebuilds it (from the builder's cache) and gives the image its version tags.
fn with_version(digest: &str, tags: Option<&Vec<String>>) -> String {
    match tags.and_then(|t| crate::config::tag_template::semver_of(t)) {
        Some(v) => format!("{digest}+{v}"),
        None => digest.to_string(),
    }
}

/// Plans one cycle.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let mut out = Plan::default();
    for (name, a) in &input.project.builds {
        if let Err(e) = &a.resolution {
            // A git source whose Dockerfile could not be read because its check failed: the check's failure says why.
            let source = a.build.source.as_ref().map(crate::config::GitSource::input);
            let failed = source.and_then(|i| Some((input.checks.get(&i)?.seen.as_ref().err().filter(|e| e.is_failure())?.clone(), i)));
            let d = match failed {
                Some((error, input)) => Decision::CheckFailed { input, error },
                None => Decision::Error(e.clone()),
            };
            out.decisions.insert(name.clone(), d);
            continue;
        }
        let platform = a.build.platform.as_deref().unwrap_or(input.engine_platform);
        let paths_key = a.build.source.as_ref().map(crate::config::GitSource::paths_key);
        let semver = a.build.commit_tags.iter().any(crate::config::TagTemplate::uses_semver);
        let current: BTreeMap<Input, Result<Current, CheckError>> = a
            .inputs
            .iter()
            .map(|i| {
                let check = input.checks.get(i);
                let c = match check.map(|c| &c.seen) {
                    Some(Ok(o)) => Ok(Current {
                        digest: o.digest.clone(),
                        for_build: with_version(o.for_build(platform, paths_key.as_deref()), semver.then_some(&o.tags)),
                        since: o.since,
                        replaces: check.and_then(|c| c.replaces.clone()),
                        git_tags: o.tags.clone(),
                    }),
                    Some(Err(e)) => Err(e.clone()),
                    None => Err(CheckError::NotChecked),
                };
                (i.clone(), c)
            })
            .collect();
        let known: BTreeMap<Input, String> =
            current.iter().filter_map(|(k, v)| Some((k.clone(), v.as_ref().ok()?.for_build.clone()))).collect();
        let ex = input.existing.get(name).cloned().unwrap_or_default();
        let record = input.state.builds.get(name).cloned().or_else(|| {
            let (built_from, origin) = match &ex.labels {
                _ if !ex.exists => return None,
                Some(l) => (l.clone(), Origin::Labels),
                None => (known.clone(), Origin::Baseline),
            };
            let r = BuildRecord { built_from, image_id: None, recorded_at: input.now, origin, ..Default::default() };
            out.adopted.insert(name.clone(), r.clone());
            Some(r)
        });
        let decision = match decide(&current, record.as_ref(), ex.exists, input) {
            Decision::Fresh if a.build.push && record.as_ref().is_some_and(|r| r.push_pending) => Decision::PushPending,
            d => d,
        };
        if let (Decision::Fresh, Some(r)) = (&decision, &record) {
            // A new input, or one whose local image ID was pushed: record the digest now current.
            let replaced = |k: &Input| current.get(k).and_then(|c| c.as_ref().ok()?.replaces.as_ref());
            let outdated = |k: &Input| r.built_from.get(k).is_none_or(|old| replaced(k) == Some(old));
            if known.keys().any(outdated) {
                let mut updated = out.adopted.get(name).cloned().unwrap_or_else(|| r.clone());
                for (k, d) in known.iter().filter(|(k, _)| outdated(k)) {
                    updated.built_from.insert(k.clone(), d.clone());
                }
                out.adopted.insert(name.clone(), updated);
            }
        }
        let compared = current
            .into_iter()
            .map(|(i, current)| {
                let built_from = record.as_ref().and_then(|r| r.built_from.get(&i)).cloned();
                (i, Compared { built_from, current })
            })
            .collect();
        out.compared.insert(name.clone(), compared);
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
    let stale = with(Decision::runs);
    out.recheck_at =
        out.decisions.values().filter_map(|d| if let Decision::Settling { ready_at, .. } = d { Some(*ready_at) } else { None }).min();
    let held = project.graph.with_descendants(settling.iter().map(String::as_str));
    let affected: BTreeSet<String> = project.graph.with_descendants(stale.iter().map(String::as_str));
    for name in project.graph.order() {
        if !affected.contains(&name) || matches!(out.decisions[&name], Decision::Error(_)) {
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
                out.decisions.insert(name.clone(), Decision::Settling { on: Waiting::Build(via), ready_at });
            }
            continue;
        }
        if !out.decisions[&name].runs() {
            let parent = project.graph.parents(&name).into_iter().find(|p| affected.contains(*p)).unwrap_or_default().to_string();
            out.decisions.insert(name.clone(), Decision::ParentRebuilt { parent });
        }
        out.order.push(name);
    }
}

fn decide(
    current: &BTreeMap<Input, Result<Current, CheckError>>,
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
    for (i, c) in current {
        match c {
            Ok(c) => match record.and_then(|r| r.built_from.get(i)) {
                Some(old) if *old != c.for_build && c.replaces.as_ref() != Some(old) => {
                    let ready_at = c.since.saturating_add(input.settle_secs);
                    if ready_at > input.now {
                        let later = matches!(settling, Some(Decision::Settling { ready_at: r, .. }) if r >= ready_at);
                        if !later {
                            settling = Some(Decision::Settling { on: Waiting::Input(i.clone()), ready_at });
                        }
                    } else {
                        changed.get_or_insert_with(|| Decision::Changed { input: i.clone(), old: old.clone(), new: c.for_build.clone() });
                    }
                }
                _ => {}
            },
            Err(error) => {
                failed.get_or_insert_with(|| Decision::CheckFailed { input: i.clone(), error: error.clone() });
            }
        }
    }
    settling.or(changed).or(failed).unwrap_or(Decision::Fresh)
}
