//! Which engines of the pool may run each build, and which one it would use:
//! the rules of `options.engines` against a project, with no I/O.
//!
//! - A build runs on an engine that builds for its platform (its `platform`, or
//!   the pool's default, [`crate::engine::Pool::default_platform`]).
//! - A build whose platform no engine serves is a config error at start.
//! - A child may run on another engine than its parent, and then pulls the parent's
//!   image from the registry: so a parent that more than one engine could be
//!   asked to build on top of must have `push`.
//! - Engine choice never changes what is built or how it is tagged: only where.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::config::serves;
use crate::project::Project;

/// An engine builds go to, as placement and the executor see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The engine's name, for reports and logs.
    pub name: String,
    /// Builds it runs at once.
    pub capacity: usize,
}

/// The engines one build may run on (indices into the slots).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// The engines that may run it: those that build for its platform and answer
    /// this cycle, or, for a push-only job, the one engine that holds its image.
    pub allowed: Vec<usize>,
    /// Among them, the ones it is best on (they hold its base image already):
    /// tried after the engines that built its parents this cycle.
    pub prefer: Vec<usize>,
}

/// The name of the one engine of `DOCKER_HOST`, when `options.engines` is not set.
pub const DEFAULT_ENGINE: &str = "default";

/// An engine as placement sees it: its name and its platforms (`None`: not
/// known yet, because it has not answered and the config does not say).
pub type EnginePlatforms = (String, Option<Vec<String>>);

/// The platform build `name` builds for: its `platform`, else `default`.
pub fn platform_of<'a>(project: &'a Project, name: &str, default: &'a str) -> &'a str {
    project.builds.get(name).and_then(|a| a.build.platform.as_deref()).unwrap_or(default)
}

/// Checks `project` against the pool's `engines` (with `default` the platform of
/// builds without `platform`).
///
/// # Errors
/// One message, a line per problem:
/// - a build whose platform no engine builds for (engines whose platforms are not
///   known yet are named, with what to add);
/// - a build without `push` that another build is built on, when more than one
///   engine may build that child: its image would reach the child's engine only through the registry.
pub fn check(project: &Project, engines: &[EnginePlatforms], default: &str) -> Result<(), String> {
    let mut problems = Vec::new();
    let may_serve = |platform: &str| -> Vec<&str> {
        engines
            .iter()
            .filter(|(_, ps)| ps.as_ref().is_none_or(|ps| ps.iter().any(|p| serves(p, platform))))
            .map(|(n, _)| n.as_str())
            .collect()
    };
    let unknown: Vec<&str> = engines.iter().filter(|(_, ps)| ps.is_none()).map(|(n, _)| n.as_str()).collect();
    for name in project.builds.keys() {
        let platform = platform_of(project, name, default);
        let known = engines.iter().any(|(_, ps)| ps.as_ref().is_some_and(|ps| ps.iter().any(|p| serves(p, platform))));
        if !known {
            let offered: Vec<String> = engines.iter().filter_map(|(n, ps)| Some(format!("{n} ({})", ps.as_ref()?.join(", ")))).collect();
            let mut line = format!(
                "build {name}: no engine builds for {platform}; the engines build for: {}; add an engine with \"platforms\": [\"{platform}\"] to options.engines, or change the build's platform",
                offered.join(", ")
            );
            if !unknown.is_empty() {
                line.push_str(&format!(
                    " (not known yet: {}, which did not answer and have no \"platforms\" in the config; give them \"platforms\")",
                    unknown.join(", ")
                ));
            }
            problems.push(line);
        }
    }
    if engines.len() > 1 {
        for child in project.builds.keys() {
            let on_child: HashSet<&str> = may_serve(platform_of(project, child, default)).into_iter().collect();
            for parent in project.graph.parents(child) {
                let Some(p) = project.builds.get(parent) else { continue };
                let on_parent: HashSet<&str> = may_serve(platform_of(project, parent, default)).into_iter().collect();
                let one_engine = on_child.len() == 1 && on_child == on_parent;
                if !p.build.push && !one_engine {
                    problems.push(format!(
                        "build {child} is built on build {parent}'s image, and more than one engine may build {child}: {parent}'s image reaches another engine only through the registry; set \"push\": true on {parent} (or in options)"
                    ));
                }
            }
        }
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(problems.join("\n")),
    }
}

/// Each build of `order`'s [`Placement`] over the engines that answer (`up`,
/// names and platforms; their indices are the slots'):
/// - a push-only job (in `push_only`, with the engine that holds its image) may run only there;
/// - any other build on the engines that build for its platform, preferring those in `holds`
///   (the engines that hold its base image at the digest the check saw).
pub fn placements(
    project: &Project,
    order: &[String],
    up: &[(String, Vec<String>)],
    default: &str,
    push_only: &BTreeMap<String, String>,
    holds: &HashMap<String, Vec<usize>>,
) -> HashMap<String, Placement> {
    order
        .iter()
        .map(|name| {
            let allowed: Vec<usize> = match push_only.get(name) {
                Some(engine) => up.iter().position(|(n, _)| n == engine).into_iter().collect(),
                None => {
                    let platform = platform_of(project, name, default);
                    (0..up.len()).filter(|&e| up[e].1.iter().any(|p| serves(p, platform))).collect()
                }
            };
            let prefer = holds.get(name).cloned().unwrap_or_default().into_iter().filter(|e| allowed.contains(e)).collect();
            (name.clone(), Placement { allowed, prefer })
        })
        .collect()
}

/// The engine a ready build with `placement` goes to, among its allowed engines
/// that have `room` (`None`: no room for it now; more is better): first one that
/// built a parent of it (`parent_engines`: its image is there, no pull), then one
/// it prefers (it holds its base), then the one with the most room (spreading the
/// load), then the first listed. `None` when no allowed engine has room. The one
/// rule the executor dispatches by and [`predict`] follows; engine choice never
/// changes what is built, only where.
pub fn choose(placement: &Placement, parent_engines: &[usize], room: impl Fn(usize) -> Option<i64>) -> Option<usize> {
    placement
        .allowed
        .iter()
        .filter_map(|&e| Some((e, room(e)?)))
        .max_by_key(|&(e, room)| (parent_engines.contains(&e), placement.prefer.contains(&e), room, std::cmp::Reverse(e)))
        .map(|(e, _)| e)
}

/// The engine each build of `order` would use, as `plan` and `explain` say:
/// [`choose`] as if the builds started one after another in `order`, an engine's
/// room being how far it is from full (the builds put on it so far, for its
/// capacity). A build with no engine is left out.
pub fn predict(
    order: &[String],
    parents: &HashMap<String, Vec<String>>,
    slots: &[Slot],
    placements: &HashMap<String, Placement>,
) -> BTreeMap<String, String> {
    let mut load = vec![0i64; slots.len()];
    let mut on: HashMap<&str, usize> = HashMap::new();
    let mut out = BTreeMap::new();
    for name in order {
        let Some(p) = placements.get(name) else { continue };
        let parent_engines: Vec<usize> = parents.get(name).into_iter().flatten().filter_map(|q| on.get(q.as_str()).copied()).collect();
        let room = |e: usize| Some(-(load[e] * 1000 / slots[e].capacity.max(1) as i64));
        if let Some(e) = choose(p, &parent_engines, room) {
            load[e] += 1;
            on.insert(name, e);
            out.insert(name.clone(), slots[e].name.clone());
        }
    }
    out
}
