//! `freshen explain BUILD`: why a build would or would not be rebuilt now.
//!
//! Runs one check cycle in dry-run mode without saving state, then shows the
//! build's watched images, the digests it was built from, the current ones and
//! the decision. Builds nothing and writes nothing.

use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::cycle::{self, CycleInput};
use crate::plan::Decision;
use crate::watcher::{load_state, start, StartError, Started};

#[derive(Serialize)]
struct Watched {
    image: String,
    built_from: Option<String>,
    current: Option<String>,
    source: Option<crate::state::DigestSource>,
    error: Option<String>,
}

#[derive(Serialize)]
struct Explanation<'a> {
    build: &'a str,
    dockerfile: String,
    base: Option<String>,
    watched: Vec<Watched>,
    pinned_images: Vec<String>,
    ignored_images: Vec<String>,
    record_origin: Option<String>,
    decision: Decision,
    rebuild: bool,
}

/// Explains `build` of `config`; prints text or JSON. Returns true when the
/// build's check failed or its Dockerfile does not resolve.
///
/// # Errors
/// [`StartError`] when the engine cannot be reached or the config does not resolve.
pub async fn explain(config: Config, build: &str, json: bool) -> Result<bool, StartError> {
    let cancel = CancellationToken::new();
    let Started { engine, platform, setup } = start(config, true, &cancel).await?;
    let opts = &setup.config.options;
    let state = Arc::new(Mutex::new(load_state(&opts.state_file)));
    let project = Arc::new(setup.project);
    let input = CycleInput {
        project: project.clone(),
        engine,
        registry: Arc::new(setup.registry),
        state: state.clone(),
        state_path: opts.state_file.clone(),
        parallelism: 1,
        check_concurrency: opts.check_concurrency,
        shutdown_grace: opts.shutdown_grace,
        rebuild_all: false,
        dry_run: true,
        persist: false,
        settle: opts.settle,
        rate_limit_reserve: opts.rate_limit_reserve,
        engine_platform: platform,
        cancel,
    };
    let report = cycle::run(&input).await;
    let a = &project.builds[build];
    let st = state.lock().expect("state lock");
    let record = st.builds.get(build);
    let watched: Vec<Watched> = a
        .watched
        .iter()
        .map(|w| {
            let c = report.checks.iter().find(|c| c.image == w.as_str());
            let current = st.images.get(w.as_str()).map(|i| {
                let platform = a.build.platform.as_deref().unwrap_or(&input.engine_platform);
                crate::registry::select_platform(&i.platforms, platform).unwrap_or(&i.digest).to_string()
            });
            Watched {
                image: w.to_string(),
                built_from: record.and_then(|r| r.built_from.get(w.as_str()).cloned()),
                current: c.and_then(|c| c.new.as_ref()).and(current),
                source: c.and_then(|c| c.source),
                error: c.and_then(|c| c.error.clone()),
            }
        })
        .collect();
    let decision = report.decisions.get(build).cloned().unwrap_or(Decision::Fresh);
    let e = Explanation {
        build,
        dockerfile: a.build.dockerfile.display().to_string(),
        base: a.resolution.as_ref().ok().and_then(|r| r.base.as_ref()).map(ToString::to_string),
        watched,
        pinned_images: a.pinned.iter().map(ToString::to_string).collect(),
        ignored_images: a.ignored.iter().map(ToString::to_string).collect(),
        record_origin: record.map(|r| r.origin.clone()),
        rebuild: decision.rebuilds(),
        decision,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&e).expect("explanation serialises"));
    } else {
        println!("build {} ({})", e.build, e.dockerfile);
        println!("  base: {}", e.base.as_deref().unwrap_or("scratch"));
        for w in &e.watched {
            println!("  watches {}", w.image);
            println!("    built from: {}", w.built_from.as_deref().unwrap_or("(no record)"));
            match &w.error {
                Some(err) => println!("    current:    check failed: {err}"),
                None => match (&w.current, w.source) {
                    (Some(current), Some(source)) => println!("    current:    {current} (from the {source})"),
                    _ => println!("    current:    -"),
                },
            }
        }
        for p in &e.pinned_images {
            println!("  pinned {p} (never checked: a digest-pinned image cannot change)");
        }
        for i in &e.ignored_images {
            println!("  ignored {i} (# freshen:ignore)");
        }
        let verdict = if e.rebuild { "would be rebuilt" } else { "would not be rebuilt" };
        println!("  {verdict}: {}", e.decision);
    }
    Ok(matches!(e.decision, Decision::CheckFailed { .. } | Decision::Error { .. }))
}
