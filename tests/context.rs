//! Build contexts and the config as inputs, through the freshen binary with a
//! real engine and registry: an edit of a context file or a Dockerfile
//! rebuilds; a `touch`, or an edit `.dockerignore` excludes, does not; an edit
//! made while freshen was stopped is found at start; the daemon reloads the
//! config when it changes on disk and refuses an invalid one.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// `app` copies `app.txt` from its context, whose `.dockerignore` excludes `*.log`, onto `base:1` (pushed, `v1`).
fn app(env: &Env, options: Value) -> std::path::PathBuf {
    env.push_base("base:1", "v1");
    env.write("app/Dockerfile", &format!("FROM {}\nCOPY app.txt /app.txt\n", env.image("base:1")));
    env.write("app/app.txt", "one");
    env.write("app/.dockerignore", "*.log\n");
    env.config(options, json!({"app": {"dockerfile": "app", "tags": [env.image("app:latest")]}}))
}

fn rebuilt(log: &std::path::Path) -> usize {
    count_events(log, "build_finished", &[("status", "rebuilt")])
}

/// Waits for the daemon's `n`th finished cycle.
fn cycles(log: &std::path::Path, n: usize) -> bool {
    wait_until(Duration::from_secs(30), || count_events(log, "cycle_finished", &[]) >= n)
}

#[test]
fn a_context_edit_rebuilds_in_seconds_and_a_touch_or_an_ignored_file_does_not() {
    if !engine_available() {
        return;
    }
    let env = Env::new("ctxedit");
    let config = app(&env, json!({"interval": "1h", "log_format": "json"}));
    let log = env.dir.path().join("daemon.log");
    let mut child = spawn_daemon(&config, &log);
    assert!(wait_until(Duration::from_secs(60), || rebuilt(&log) == 1), "first build:\n{}", std::fs::read_to_string(&log).unwrap());
    assert_eq!(cat(&env.image("app:latest"), "/app.txt"), "one");
    let first = image_id(&env.image("app:latest")).unwrap();
    env.registry.clear_log();

    // A touch and an ignored file each make a cycle that checks the context, and rebuild nothing.
    let txt = env.dir.path().join("app/app.txt");
    std::fs::File::options().write(true).open(&txt).unwrap().set_modified(std::time::SystemTime::now()).unwrap();
    assert!(cycles(&log, 2), "the touch made a cycle:\n{}", std::fs::read_to_string(&log).unwrap());
    env.write("app/debug.log", "noise");
    assert!(cycles(&log, 3), "the ignored file made a cycle");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rebuilt(&log), 1, "neither rebuilt:\n{}", std::fs::read_to_string(&log).unwrap());

    // An edit rebuilds, with no registry request: the base was not named.
    let edited = std::time::Instant::now();
    env.write("app/app.txt", "two");
    assert!(
        wait_until(Duration::from_secs(30), || rebuilt(&log) == 2),
        "the edit rebuilt app:\n{}",
        std::fs::read_to_string(&log).unwrap()
    );
    eprintln!("context edit → rebuilt in {:?}", edited.elapsed());
    assert_eq!(cat(&env.image("app:latest"), "/app.txt"), "two");
    assert_ne!(image_id(&env.image("app:latest")).unwrap(), first);
    assert_eq!(env.registry.requests_from("freshen/"), Vec::<String>::new(), "a context edit costs no registry request");
    let planned: Vec<Value> = log_events(&log).into_iter().filter(|e| e["event"] == "build_planned").collect();
    let reason = planned.last().unwrap()["reason"].as_str().unwrap().to_string();
    assert!(reason.starts_with("build context of app changed sha256:"), "{reason}");

    // A Dockerfile edit that changes the base: resolved again, the new base checked and built on.
    env.push_base("other:1", "o1");
    env.write("app/Dockerfile", &format!("FROM {}\nCOPY app.txt /app.txt\n", env.image("other:1")));
    assert!(
        wait_until(Duration::from_secs(30), || rebuilt(&log) == 3),
        "the Dockerfile edit rebuilt app:\n{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert_eq!(cat(&env.image("app:latest"), "/etc/base-version"), "o1");
    assert_eq!(label(&env.image("app:latest"), "org.opencontainers.image.base.name").as_deref(), Some(env.image("other:1").as_str()));
    let heads = env.registry.requests_from("freshen/");
    assert!(heads.iter().all(|h| h.contains("/other/manifests/1")) && !heads.is_empty(), "only the new base was checked: {heads:?}");
    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());

    // The new base is watched from then on: its next push rebuilds app.
    env.push_base("other:1", "o2");
    let out = env.freshen(&["--once", "--format", "json"]);
    let r = report(&out);
    assert_eq!(build_of(&r, "app")["status"], "rebuilt", "{r}");
    assert_eq!(build_of(&r, "app")["reason"]["image"], env.image("other:1"), "{r}");
    assert_eq!(cat(&env.image("app:latest"), "/etc/base-version"), "o2");
    remove_labelled(&format!("freshen.test={}", env.prefix));
}

#[test]
fn an_edit_made_while_freshen_is_stopped_is_rebuilt_at_start_unless_watch_context_is_off() {
    if !engine_available() {
        return;
    }
    let env = Env::new("ctxstop");
    app(&env, json!({}));
    let once = || report(&env.freshen(&["--once", "--format", "json"]));
    assert_eq!(build_of(&once(), "app")["status"], "rebuilt");
    let r = once();
    assert_eq!(build_of(&r, "app")["status"], "fresh", "{r}");
    let check = r["checks"].as_array().unwrap().iter().find(|c| c["context"] == "app").cloned().unwrap_or_default();
    assert_eq!(check["input"], "build context of app", "{r}");
    assert_eq!(check["source"], "context", "{r}");
    let state: Value = serde_json::from_str(&std::fs::read_to_string(env.state_path()).unwrap()).unwrap();
    let recorded = state["builds"]["app"]["built_from"]["context:app"].as_str().unwrap().to_string();
    assert_eq!(check["new"], recorded.as_str(), "state records the context digest it was built from");
    assert_eq!(label(&env.image("app:latest"), "io.freshen.context-digest").as_deref(), Some(recorded.as_str()), "and so does the image");

    // A touch while stopped is no change; an edit is, at the next start.
    let txt = env.dir.path().join("app/app.txt");
    std::fs::File::options().write(true).open(&txt).unwrap().set_modified(std::time::SystemTime::now()).unwrap();
    assert_eq!(build_of(&once(), "app")["status"], "fresh");
    env.write("app/app.txt", "edited while stopped");
    // The base changes in the same cycle: one rebuild takes both.
    env.push_base("base:1", "v2");
    let r = once();
    assert_eq!(build_of(&r, "app")["status"], "rebuilt", "{r}");
    assert_eq!(r["builds"].as_array().unwrap().iter().filter(|b| b["status"] == "rebuilt").count(), 1);
    assert_eq!(cat(&env.image("app:latest"), "/app.txt"), "edited while stopped");
    assert_eq!(cat(&env.image("app:latest"), "/etc/base-version"), "v2");
    assert_eq!(build_of(&once(), "app")["status"], "fresh", "and recorded: the next run is fresh");

    // Dockerfile edits are context edits too.
    env.write("app/Dockerfile", &format!("FROM {}\nCOPY app.txt /app.txt\nENV EDITED=1\n", env.image("base:1")));
    let r = once();
    assert_eq!(build_of(&r, "app")["reason"]["context"], "app", "{r}");

    // watch_context: false: edits rebuild nothing, and plan says so.
    let config = env.dir.path().join("config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    cfg["builds"]["app"]["watch_context"] = false.into();
    std::fs::write(&config, cfg.to_string()).unwrap();
    env.write("app/app.txt", "not watched");
    let r = once();
    assert_eq!(build_of(&r, "app")["status"], "fresh", "{r}");
    assert!(r["checks"].as_array().unwrap().iter().all(|c| c["context"].is_null()), "{r}");
    let plan = String::from_utf8(env.freshen(&["plan"]).stdout).unwrap();
    assert!(plan.contains("build context: app, not watched (watch_context: false)"), "{plan}");
    remove_labelled(&format!("freshen.test={}", env.prefix));
}

#[test]
fn the_config_edited_on_disk_is_reloaded_and_an_invalid_edit_is_refused() {
    if !engine_available() {
        return;
    }
    let env = Env::new("cfgwatch");
    let config = app(&env, json!({"interval": "1h", "log_format": "json"}));
    let log = env.dir.path().join("daemon.log");
    let mut child = spawn_daemon(&config, &log);
    assert!(wait_until(Duration::from_secs(60), || rebuilt(&log) == 1), "first build");
    let text = || std::fs::read_to_string(&log).unwrap();

    // A touch of the config is no change.
    std::fs::File::options().write(true).open(&config).unwrap().set_modified(std::time::SystemTime::now()).unwrap();
    // A second build added on disk: reloaded, and built, with no SIGHUP.
    env.write("two/Dockerfile", &format!("FROM {}\nRUN true\n", env.image("base:1")));
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    cfg["builds"]["two"] = json!({"dockerfile": "two", "tags": [env.image("two:latest")], "labels": {"freshen.test": env.prefix}});
    std::fs::write(&config, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    assert!(wait_event(&log, "config_reloaded", &[], Duration::from_secs(20)), "reloaded:\n{}", text());
    assert!(wait_event(&log, "build_finished", &[("build", "two"), ("status", "rebuilt")], Duration::from_secs(60)), "{}", text());
    assert_eq!(count_events(&log, "config_changed", &[]), 1, "the touch was no change:\n{}", text());

    // An invalid edit is refused; the old config runs on, watching its contexts.
    std::fs::write(&config, "{\"builds\": 1").unwrap();
    assert!(wait_event(&log, "config_refused", &[], Duration::from_secs(20)), "refused:\n{}", text());
    let refused = log_events(&log).into_iter().find(|e| e["event"] == "config_refused").unwrap();
    assert!(refused["error"].as_str().unwrap().contains("config.json"), "the reason names the file: {refused}");
    env.write("two/x.txt", "a new file in two's context");
    assert!(
        wait_event(&log, "build_finished", &[("build", "two"), ("status", "rebuilt")], Duration::from_secs(5)) && {
            wait_until(Duration::from_secs(30), || count_events(&log, "build_finished", &[("build", "two"), ("status", "rebuilt")]) == 2)
        },
        "the old config still runs:\n{}",
        text()
    );
    assert!(child.try_wait().unwrap().is_none(), "still running");
    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
    remove_labelled(&format!("freshen.test={}", env.prefix));
}

#[test]
fn a_dockerfile_edit_that_makes_a_dependency_cycle_is_refused_once_and_the_last_resolution_runs() {
    if !engine_available() {
        return;
    }
    let env = Env::new("ctxcycle");
    env.push_base("base:1", "v1");
    env.write("a/Dockerfile", &format!("FROM {}\nRUN true\n", env.image("base:1")));
    env.write("b/Dockerfile", &format!("FROM {}\nRUN true\n", env.image("a:latest")));
    let builds =
        json!({"a": {"dockerfile": "a", "tags": [env.image("a:latest")]}, "b": {"dockerfile": "b", "tags": [env.image("b:latest")]}});
    let config = env.config(json!({"interval": "1s", "log_format": "json"}), builds);
    let log = env.dir.path().join("daemon.log");
    let mut child = spawn_daemon(&config, &log);
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(wait_event(&log, "build_finished", &[("build", "b"), ("status", "rebuilt")], Duration::from_secs(60)), "{}", text());
    // a now builds on b, which builds on a: a cycle, refused while the last resolution goes on.
    env.write("a/Dockerfile", &format!("FROM {}\nRUN true\n", env.image("b:latest")));
    assert!(wait_event(&log, "dockerfiles_refused", &[], Duration::from_secs(30)), "{}", text());
    let seen = count_events(&log, "cycle_finished", &[]);
    assert!(cycles(&log, seen + 3), "{}", text());
    assert_eq!(count_events(&log, "dockerfiles_refused", &[]), 1, "refused once, not every cycle:\n{}", text());
    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success(), "{}", text());
    remove_labelled(&format!("freshen.test={}", env.prefix));
}
