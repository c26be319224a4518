//! What the CLI prints: cycle reports, `plan`, `graph` and `explain`, as text or JSON.

use std::path::Path;

use serde::Serialize;

use crate::cycle::CycleReport;
use crate::executor::Outcome;
use crate::plan::Decision;
use crate::project::{self, Project};

/// One build's line in a cycle summary.
#[derive(Debug, Serialize)]
pub struct BuildSummary<'a> {
    /// Build name.
    pub name: &'a str,
    /// `rebuilt`, `failed`, `skipped`, `cancelled`, `would_rebuild`, `fresh`,
    /// `settling`, `check_failed` or `error`.
    pub status: &'static str,
    /// Why: the planner's decision.
    pub reason: &'a Decision,
    /// Build wall time in seconds, for builds that ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// The error, for failed builds (with the last lines of build output).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

/// Each build's status in `report`.
pub fn build_summaries(report: &CycleReport) -> Vec<BuildSummary<'_>> {
    report
        .decisions
        .iter()
        .map(|(name, d)| {
            let (status, seconds, error) = match (report.outcomes.get(name), d) {
                (Some(o @ Outcome::Built { seconds }), _) => (o.status(), Some(*seconds), None),
                (Some(o @ Outcome::Failed { error, seconds }), _) => (o.status(), Some(*seconds), Some(error.as_str())),
                (Some(o), _) => (o.status(), None, None),
                (None, d) if d.rebuilds() => ("would_rebuild", None, None),
                (None, Decision::Settling { .. }) => ("settling", None, None),
                (None, Decision::CheckFailed { .. }) => ("check_failed", None, None),
                (None, Decision::Error { .. }) => ("error", None, None),
                (None, _) => ("fresh", None, None),
            };
            BuildSummary { name, status, reason: d, seconds, error }
        })
        .collect()
}

/// Prints a cycle report: JSON (`checks`, `builds`, `decisions`, `outcomes`) or one line a build.
pub fn print_report(r: &CycleReport, json: bool) {
    let builds = build_summaries(r);
    if json {
        let mut v = serde_json::to_value(r).expect("report serialises");
        v["builds"] = serde_json::to_value(&builds).expect("summaries serialise");
        println!("{}", serde_json::to_string_pretty(&v).expect("report serialises"));
        return;
    }
    for c in &r.checks {
        match (&c.error, &c.old, &c.new) {
            (Some(e), _, _) => println!("check {}: failed: {e}", c.image),
            (None, Some(o), Some(n)) if o != n => println!("check {}: {} → {}", c.image, o, n),
            (None, _, Some(n)) => println!("check {}: {}", c.image, n),
            _ => {}
        }
    }
    for b in &builds {
        let mut line = format!("{}: {}", b.name, b.status.replace('_', " "));
        if let Some(s) = b.seconds {
            line.push_str(&format!(" in {s:.1}s"));
        }
        match b.reason {
            Decision::Fresh => {}
            d => line.push_str(&format!(" ({d})")),
        }
        if let Some(e) = b.error {
            line.push_str(&format!("\n{e}"));
        }
        println!("{line}");
    }
}

/// Prints `freshen plan`; returns 1 when a build has an error, else 0.
pub fn print_plan(project: &Project, config_dir: &Path, json: bool) -> i32 {
    let report = project::plan_report(project, config_dir);
    if json {
        println!("{}", serde_json::to_string_pretty(&report).expect("plan serialises"));
    } else {
        for b in &report.builds {
            match &b.error {
                Some(e) => println!("{}: ERROR {e}", b.name),
                None => println!(
                    "{}: base {}{}{}",
                    b.name,
                    b.base.as_deref().unwrap_or("scratch"),
                    if b.pinned { " (pinned)" } else { "" },
                    if b.parents.is_empty() { String::new() } else { format!(" [after {}]", b.parents.join(", ")) }
                ),
            }
            for (what, list) in [("watches", &b.watched), ("pinned, never checked", &b.pinned_images), ("ignored", &b.ignored_images)] {
                if !list.is_empty() {
                    println!("  {what}: {}", list.join(", "));
                }
            }
        }
        println!("order: {}", report.order.join(" → "));
    }
    i32::from(report.builds.iter().any(|b| b.error.is_some()))
}

/// Prints the dependency graph: Graphviz dot, with the external images each
/// build watches as boxes; or JSON `{"nodes": [...], "edges": [[parent, child], ...],
/// "watched": {build: [external images]}}`.
pub fn print_graph(project: &Project, json: bool) {
    let external = |name: &str| -> Vec<String> {
        project.builds[name].watched.iter().filter(|w| project.producer_of(w).is_none()).map(ToString::to_string).collect()
    };
    let order = project.graph.order();
    if json {
        let edges: Vec<(String, String)> =
            order.iter().flat_map(|n| project.graph.children(n).into_iter().map(move |c| (n.clone(), c.to_string()))).collect();
        let watched: std::collections::BTreeMap<&str, Vec<String>> = order.iter().map(|n| (n.as_str(), external(n))).collect();
        println!("{}", serde_json::json!({"nodes": order, "edges": edges, "watched": watched}));
        return;
    }
    let mut dot = project.graph.to_dot();
    dot.truncate(dot.trim_end().len() - 1); // reopen the closing brace
    for n in &order {
        for image in external(n) {
            dot.push_str(&format!("  {image:?} [shape=box, style=dashed];\n  {image:?} -> {n:?} [style=dashed];\n"));
        }
    }
    dot.push_str("}\n");
    print!("{dot}");
}
