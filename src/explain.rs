//! `freshen explain BUILD`: why a build would or would not be rebuilt now.
//!
//! Runs one check cycle in dry-run mode without saving state, then shows the
//! build's watched images, the digests it was built from, the current ones and
//! the decision. Builds nothing and writes nothing.

use std::sync::Arc;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::cycle::{self, CycleInput};
use crate::output::decision_json;
use crate::plan::Decision;
use crate::watcher::{load_state, start, StartError, Started};

/// Explains `build` of `config`; prints text or JSON. Returns true when the
/// build's check failed or its Dockerfile does not resolve.
///
/// # Errors
/// [`StartError`] when the engine cannot be reached or the config does not resolve.
pub async fn explain(config: Config, build: &str, json: bool) -> Result<bool, StartError> {
    let cancel = CancellationToken::new();
    let Started { pool, platform, setup } = start(config, true, &cancel, None).await?;
    let opts = &setup.config.options;
    let mut state = load_state(&opts.state_file, false);
    let project = Arc::new(setup.project);
    let input = CycleInput {
        project: project.clone(),
        pool,
        registry: setup.registry,
        state_path: opts.state_file.clone(),
        parallelism: 1,
        check_concurrency: opts.check_concurrency,
        shutdown_grace: opts.shutdown_grace,
        build_timeout: opts.build_timeout,
        build_idle_timeout: opts.build_idle_timeout,
        keep_logs: opts.keep_logs,
        keep_previous: opts.keep_previous,
        push_timeout: opts.push_timeout,
        rebuild_all: false,
        dry_run: true,
        persist: false,
        settle: opts.settle,
        rate_limit_reserve: opts.rate_limit_reserve,
        engine_platform: platform,
        only: None,
        cancel,
        contexts: Arc::default(),
    };
    let report = cycle::run(&input, &mut state).await;
    let r = &report.redactor;
    let a = &project.builds[build];
    let record = state.builds.get(build);
    let decision = report.decisions.get(build).cloned().unwrap_or(Decision::Fresh);
    let compared = report.compared.get(build).cloned().unwrap_or_default();
    let base = a.resolution.as_ref().ok().and_then(|res| res.base.as_ref()).map(|b| r.show(b));
    let pinned: Vec<String> = a.pinned.iter().map(|i| r.show(i)).collect();
    let ignored: Vec<String> = a.ignored.iter().map(|i| r.show(i)).collect();
    let builder = report.builders.get(build).map(ToString::to_string);
    // Where each watched input's current digest came from, as the check saw it.
    let source_of = |i| report.checks.get(i).and_then(|c| c.seen.as_ref().ok()).map(|o| o.source);
    if json {
        let watched: Vec<_> = compared
            .iter()
            .map(|(i, c)| {
                let mut v = json!({
                    "built_from": c.built_from,
                    "current": c.current.as_ref().ok().map(|c| &c.for_build),
                    "source": source_of(i),
                    "error": c.current.as_ref().err().map(|e| r.show(e)),
                });
                crate::output::input_fields(i, r, v.as_object_mut().expect("an object"));
                v
            })
            .collect();
        let e = json!({
            "build": build,
            "dockerfile": a.build.dockerfile.display().to_string(),
            "base": base,
            "builder": builder,
            "engine": report.engines.get(build),
            "built_on": record.and_then(|rec| rec.engine.clone()),
            "watched": watched,
            "pinned_images": pinned,
            "ignored_images": ignored,
            "record_origin": record.map(|rec| rec.origin.to_string()),
            "decision": decision_json(&decision, r),
            "rebuild": decision.rebuilds(),
            "push": matches!(decision, Decision::PushPending),
        });
        println!("{}", serde_json::to_string_pretty(&e).expect("explanation serialises"));
    } else {
        println!("build {build} ({})", a.build.dockerfile.display());
        println!("  base: {}", base.as_deref().unwrap_or("scratch"));
        println!("  builder: {} (asked for: {})", builder.as_deref().unwrap_or("unknown"), a.build.builder);
        match (report.engines.get(build), record.and_then(|rec| rec.engine.as_deref())) {
            (Some(e), _) => println!("  engine: {e} (the one it would be built on now)"),
            (None, Some(e)) => println!("  engine: built on {e} last"),
            (None, None) => {}
        }
        for (i, c) in &compared {
            println!("  watches {}", r.text(i));
            println!("    built from: {}", c.built_from.as_deref().unwrap_or("(no record)"));
            match (&c.current, source_of(i)) {
                (Err(e), _) => println!("    current:    check failed: {}", r.text(e)),
                (Ok(current), Some(source)) => println!("    current:    {} (from the {source})", current.for_build),
                (Ok(current), None) => println!("    current:    {}", current.for_build),
            }
        }
        for p in &pinned {
            println!("  pinned {p} (never checked: a digest-pinned image cannot change)");
        }
        for i in &ignored {
            println!("  ignored {i} (# freshen:ignore)");
        }
        let verdict = match &decision {
            d if d.rebuilds() => "would be rebuilt",
            Decision::PushPending => "would be pushed, not rebuilt",
            _ => "would not be rebuilt",
        };
        println!("  {verdict}: {}", r.text(&decision));
    }
    Ok(decision.failed())
}
