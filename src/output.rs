//! What the CLI prints: cycle reports, `plan`, `graph` and `explain`, as text or JSON.

use std::path::Path;

use serde_json::{json, Map, Value};

use crate::config::Redactor;
use crate::cycle::CycleReport;
use crate::executor::Outcome;
use crate::input::{Check, Input};
use crate::plan::{Decision, Waiting};
use crate::project::{self, Project};

/// A build's status in a cycle summary: its outcome's when it ran
/// (`rebuilt`, `pushed` for a push-only job, `failed`, `test_failed`,
/// `push_failed`, `skipped`, `cancelled`), else from its decision
/// (`would_rebuild`, `would_push`, `fresh`, `settling`, `check_failed`, `error`).
pub fn build_status(report: &CycleReport, name: &str) -> &'static str {
    match (report.outcomes.get(name), &report.decisions[name]) {
        (Some(Outcome::Built { .. }), Decision::PushPending) => "pushed",
        (Some(o), _) => o.status(),
        (None, d) if d.rebuilds() => "would_rebuild",
        (None, Decision::PushPending) => "would_push",
        (None, Decision::Settling { .. }) => "settling",
        (None, Decision::CheckFailed { .. }) => "check_failed",
        (None, Decision::Error(_)) => "error",
        (None, _) => "fresh",
    }
}

/// A decision as JSON: `{"status": …}` with the decision's fields; text redacted.
pub fn decision_json(d: &Decision, r: &Redactor) -> Value {
    let mut v = Map::new();
    v.insert("status".into(), d.status().into());
    match d {
        Decision::Changed { input, old, new } => {
            input_fields(input, r, &mut v);
            v.insert("old".into(), old.as_str().into());
            v.insert("new".into(), new.as_str().into());
        }
        Decision::ParentRebuilt { parent } => {
            v.insert("parent".into(), parent.as_str().into());
        }
        Decision::Settling { on, ready_at } => {
            match on {
                Waiting::Input(i) => input_fields(i, r, &mut v),
                Waiting::Build(b) => {
                    v.insert("build".into(), b.as_str().into());
                }
            }
            v.insert("ready_at".into(), (*ready_at).into());
        }
        Decision::CheckFailed { input, error } => {
            input_fields(input, r, &mut v);
            v.insert("kind".into(), error.kind().into());
            v.insert("reason".into(), r.redact(&format!("{input}: {error}")).into());
        }
        Decision::Error(e) => {
            v.insert("reason".into(), r.show(e).into());
        }
        Decision::Fresh | Decision::Missing | Decision::RebuildOnStart | Decision::PushPending => {}
    }
    Value::Object(v)
}

/// An outcome as JSON: `{"outcome": "built"|"failed"|"skipped"|"cancelled", …}`; errors redacted.
fn outcome_json(o: &Outcome, r: &Redactor) -> Value {
    match o {
        Outcome::Built { seconds } => json!({"outcome": "built", "seconds": seconds}),
        Outcome::Failed { error, seconds } => {
            json!({"outcome": "failed", "kind": error.kind(), "error": r.show(error), "seconds": seconds})
        }
        Outcome::Skipped { parent } => json!({"outcome": "skipped", "parent": parent}),
        Outcome::Cancelled => json!({"outcome": "cancelled"}),
    }
}

/// Names `input` in a JSON object: `input` (as people read it), and `image`
/// (its reference) for an image or `context` (the build's name) for a build context.
pub(crate) fn input_fields(input: &Input, r: &Redactor, v: &mut Map<String, Value>) {
    v.insert("input".into(), r.show(input).into());
    match input {
        Input::Image(_) => v.insert("image".into(), r.show(input).into()),
        Input::Context(b) => v.insert("context".into(), b.as_str().into()),
        Input::Git { url, git_ref } => {
            v.insert("git".into(), url.as_str().into());
            v.insert("ref".into(), git_ref.as_str().into())
        }
    };
}

/// One input's check as JSON: `input`, `image` or `context`, `old`, `new`,
/// `source`, and `error` with its `kind` when it failed.
fn check_json(input: &Input, c: &Check, r: &Redactor) -> Value {
    let mut v = json!({"old": c.old, "new": null, "source": null, "error": null});
    input_fields(input, r, v.as_object_mut().expect("an object"));
    match &c.seen {
        Ok(o) => {
            v["new"] = o.digest.as_str().into();
            v["source"] = json!(o.source);
        }
        Err(e) => {
            v["error"] = r.show(e).into();
            v["kind"] = e.kind().into();
        }
    }
    if c.deferred {
        v["deferred"] = true.into();
    }
    v
}

/// The JSON report of `--once --format json`: `checks`, `decisions`, `outcomes`,
/// `builds` (one summary a build, with the `engine` it ran on or would use), `state_error`,
/// `seconds`, `recheck_at`, and `engines_down` (the engines left out of the cycle).
pub fn report_json(report: &CycleReport) -> Value {
    let r = &report.redactor;
    let builds: Vec<Value> = report
        .decisions
        .iter()
        .map(|(name, d)| {
            let mut b = json!({"name": name, "status": build_status(report, name), "reason": decision_json(d, r)});
            if let Some(builder) = report.builders.get(name) {
                b["builder"] = builder.to_string().into();
            }
            if let Some(engine) = report.engines.get(name) {
                b["engine"] = engine.clone().into();
            }
            if let Some(lost) = report.retried.get(name) {
                b["engine_lost"] = lost.clone().into();
            }
            let outcome = report.outcomes.get(name);
            if let Some(s) = outcome.and_then(Outcome::seconds) {
                b["seconds"] = s.into();
            }
            if let Some(Outcome::Failed { error, .. }) = outcome {
                b["error"] = r.show(error).into();
            }
            if let Some(log) = report.logs.get(name) {
                b["log"] = log.display().to_string().into();
            }
            if matches!(outcome, Some(Outcome::Built { .. })) {
                if let Some(tags) = report.tags.get(name) {
                    b["tags"] = json!(tags);
                }
            }
            if let Some(pushed) = report.pushed.get(name) {
                b["pushed"] = json!(pushed);
                if let Some(d) = report.digest(name) {
                    b["digest"] = d.into();
                }
            }
            b
        })
        .collect();
    let mut v = json!({
        "checks": report.checks.iter().map(|(i, c)| check_json(i, c, r)).collect::<Vec<_>>(),
        "decisions": report.decisions.iter().map(|(n, d)| (n.clone(), decision_json(d, r))).collect::<Map<_, _>>(),
        "outcomes": report.outcomes.iter().map(|(n, o)| (n.clone(), outcome_json(o, r))).collect::<Map<_, _>>(),
        "builds": builds,
        "state_error": report.state_error.as_ref().map(|e| r.show(e)),
        "seconds": report.seconds,
    });
    if let Some(at) = report.recheck_at {
        v["recheck_at"] = at.into();
    }
    if !report.engines_down.is_empty() {
        v["engines_down"] = json!(report.engines_down);
    }
    v
}

/// Prints a cycle report: JSON ([`report_json`]) or one line a check and a build; text redacted.
pub fn print_report(report: &CycleReport, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(&report_json(report)).expect("report serialises"));
        return;
    }
    let r = &report.redactor;
    for (input, c) in &report.checks {
        match (&c.seen, &c.old) {
            (Err(e), _) => println!("check {}: failed: {}", r.text(input), r.text(e)),
            (Ok(o), Some(old)) if *old != o.digest => println!("check {}: {old} → {}", r.text(input), o.digest),
            (Ok(o), _) if c.deferred => {
                println!(
                    "check {}: {} (deferred: few requests left in the registry's rate limit; the last digest stands)",
                    r.text(input),
                    o.digest
                )
            }
            (Ok(o), _) => println!("check {}: {}", r.text(input), o.digest),
        }
    }
    for (name, d) in &report.decisions {
        let status = build_status(report, name);
        let mut line = format!("{name}: {}", status.replace('_', " "));
        if let (Some(builder), true) = (report.builders.get(name), report.outcomes.contains_key(name)) {
            line.push_str(&format!(" with {builder}"));
            if let Some(engine) = report.engines.get(name).filter(|e| *e != crate::placement::DEFAULT_ENGINE) {
                line.push_str(&format!(" on {engine}"));
            }
            if let Some(lost) = report.retried.get(name) {
                line.push_str(&format!(" (retried: engine {lost} was lost)"));
            }
        }
        let outcome = report.outcomes.get(name);
        if let Some(s) = outcome.and_then(Outcome::seconds) {
            line.push_str(&format!(" in {s:.1}s"));
        }
        if let Some(pushed) = report.pushed.get(name) {
            match report.digest(name) {
                Some(d) if status == "pushed" => line.push_str(&format!(", {d}")),
                Some(d) => line.push_str(&format!(", pushed {d}")),
                None => {
                    line.push_str(&format!(", pushed {}", pushed.iter().map(|(t, d)| format!("{t}@{d}")).collect::<Vec<_>>().join(", ")))
                }
            }
        }
        if !matches!(d, Decision::Fresh) {
            line.push_str(&format!(" ({})", r.text(d)));
        }
        if let Some(Outcome::Failed { error, .. }) = outcome {
            line.push_str(&format!("\n  {}", r.text(error)));
            if let Some(log) = report.logs.get(name) {
                line.push_str(&format!("\n  full build log: {}", crate::config::terminal_text(&log.display().to_string())));
            }
        }
        println!("{line}");
    }
}

/// Prints `freshen plan`; returns 1 when a build has an error, else 0.
pub fn print_plan(project: &Project, config_dir: &Path, engines: &[crate::config::EngineSpec], json: bool) -> i32 {
    let report = project::plan_report(project, config_dir, engines);
    if json {
        println!("{}", serde_json::to_string_pretty(&report).expect("plan serialises"));
    } else {
        for b in &report.builds {
            match &b.error {
                Some(e) => println!("{}: ERROR {}", b.name, crate::config::terminal_text(e)),
                None => println!(
                    "{}: base {}{}{}, builder {}",
                    b.name,
                    b.base.as_deref().unwrap_or("scratch"),
                    if b.pinned { " (pinned)" } else { "" },
                    if b.parents.is_empty() { String::new() } else { format!(" [after {}]", b.parents.join(", ")) },
                    b.builder
                ),
            }
            for (what, list) in [("watches", &b.watched), ("pinned, never checked", &b.pinned_images), ("ignored", &b.ignored_images)] {
                if !list.is_empty() {
                    println!("  {what}: {}", list.join(", "));
                }
            }
            println!("  tags: {}", crate::config::terminal_text(&b.tags.join(", ")));
            if !engines.is_empty() && b.error.is_none() {
                match &b.engine {
                    Some(e) => println!("  engine: {e} (may run on {})", b.engines.join(", ")),
                    None => println!("  engine: none builds for its platform"),
                }
            }
            match &b.source {
                Some(source) => println!("  source: {}, its new commits rebuild", crate::config::terminal_text(source)),
                None if b.error.is_none() => {
                    let watched = if b.watch_context { "its files watched" } else { "not watched (watch_context: false)" };
                    println!("  build context: {}, {watched}", crate::config::terminal_text(&b.context));
                }
                None => {}
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
        project.builds[name].images().filter(|w| project.producer_of(w).is_none()).map(ToString::to_string).collect()
    };
    let order = project.graph.order();
    if json {
        let edges: Vec<(String, String)> =
            order.iter().flat_map(|n| project.graph.children(n).into_iter().map(move |c| (n.clone(), c.to_string()))).collect();
        let watched: std::collections::BTreeMap<&str, Vec<String>> = order.iter().map(|n| (n.as_str(), external(n))).collect();
        println!("{}", serde_json::json!({"nodes": order, "edges": edges, "watched": watched}));
        return;
    }
    let dot = project.graph.to_dot(external);
    print!("{dot}");
}
