//! The test gate (a build's `test`) through the binary, on the real engine and
//! registry: a passing test lets the tags move and the push go; a failing one,
//! or one past its timeout, moves no tag, pushes nothing, skips the children
//! and is `test_failed`; its container is always removed, after a `kill -9` of
//! freshen too.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// The test gate's containers of the world's state file, running or not.
fn gate_containers(env: &Env) -> String {
    let state = env.state_path().display().to_string();
    docker(&["ps", "-aq", "--filter", &format!("label=io.freshen.test={state}")])
}

/// `app`, built on `base:1` with a self test that prints its environment and
/// network, and fails with 3 unless the base is v1; and `child` on `app`. Both push.
fn gated(env: &Env, test: Value) {
    env.push_base("base:1", "v1");
    env.write(
        "app/selftest",
        "echo \"selftest on $(cat /etc/base-version) greeting=$GREETING net=$(ls /sys/class/net | tr '\\n' ' ')\"\ngrep -qx v1 /etc/base-version || { echo 'selftest: wrong base' >&2; exit 3; }\n",
    );
    env.write("app/Dockerfile", &format!("FROM {}\nCOPY selftest /selftest\n", env.image("base:1")));
    env.write("child/Dockerfile", &format!("FROM {}\nRUN echo child > /child\n", env.image("app:1")));
    env.config(
        json!({"push": true}),
        json!({
            "app": {"dockerfile": "app", "tags": [env.image("app:1")], "test": test},
            "child": {"dockerfile": "child", "tags": [env.image("child:1")]},
        }),
    );
}

#[test]
fn a_passing_test_moves_the_tags_and_pushes_and_a_failing_one_moves_nothing() {
    if !engine_available() {
        return;
    }
    let env = Env::new("gate");
    gated(&env, json!({"command": ["/bin/sh", "/selftest"], "env": {"GREETING": "hello"}, "timeout": "1m"}));
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let r = report(&out);
    let app = build_of(&r, "app");
    assert_eq!(app["status"], "rebuilt", "{app}");
    let log = std::fs::read_to_string(app["log"].as_str().unwrap()).unwrap();
    // The default network is none: the container sees only the loopback interface.
    assert!(log.contains("selftest on v1 greeting=hello net=lo \n") || log.contains("selftest on v1 greeting=hello net=lo\n"), "{log}");
    let (tag, child) = (env.image("app:1"), env.image("child:1"));
    let good = image_id(&tag).unwrap();
    let pushed = registry_digest(&tag).expect("pushed after the test passed");
    assert_eq!(app["digest"], pushed.as_str());
    assert_eq!(build_of(&r, "child")["status"], "rebuilt");
    let child_pushed = registry_digest(&child).expect("the child is pushed too");
    assert!(gate_containers(&env).is_empty(), "the test's container is removed");

    // The base moves to v2: the self test exits 3.
    env.push_base("base:1", "v2");
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let r = report(&out);
    let app = build_of(&r, "app");
    assert_eq!(app["status"], "test_failed", "{app}");
    assert_eq!(r["outcomes"]["app"]["kind"], "test_failed");
    let error = app["error"].as_str().unwrap();
    assert!(error.contains("/bin/sh /selftest exited with 3") && error.contains("selftest: wrong base"), "{error}");
    let log = std::fs::read_to_string(app["log"].as_str().unwrap()).unwrap();
    assert!(log.contains("selftest on v2") && log.contains("# failed (test_failed)"), "the test's output is in the build log: {log}");
    assert_eq!(image_id(&tag).as_deref(), Some(good.as_str()), "no tag moved");
    assert_eq!(registry_digest(&tag).as_deref(), Some(pushed.as_str()), "nothing pushed");
    assert_eq!(build_of(&r, "child")["status"], "skipped");
    assert_eq!(registry_digest(&child).as_deref(), Some(child_pushed.as_str()), "the child is not rebuilt on a failed parent");
    assert!(gate_containers(&env).is_empty(), "the failed test's container is removed");
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(text.matches("event=\"pushed\"").count(), 0, "{text}");
}

#[test]
fn a_test_past_its_timeout_fails_and_its_container_is_removed() {
    if !engine_available() {
        return;
    }
    let env = Env::new("gatetimeout");
    gated(&env, json!({"command": ["sleep", "60"], "timeout": "2s"}));
    let started = std::time::Instant::now();
    let out = env.freshen(&["--once", "--format", "json"]);
    let r = report(&out);
    let app = build_of(&r, "app");
    assert_eq!(app["status"], "test_failed", "{app}");
    assert!(app["error"].as_str().unwrap().contains("sleep 60 ran past its timeout of 2s"), "{app}");
    assert!(started.elapsed() < Duration::from_secs(50), "the test was stopped, not waited for");
    assert_eq!(image_id(&env.image("app:1")), None, "no tag");
    assert_eq!(registry_digest(&env.image("app:1")), None, "nothing pushed");
    assert!(wait_until(Duration::from_secs(10), || gate_containers(&env).is_empty()), "container removed");
}

#[test]
fn a_test_container_left_by_a_killed_freshen_is_removed_at_the_next_start() {
    if !engine_available() {
        return;
    }
    let env = Env::new("gatekill");
    gated(&env, json!({"command": ["sleep", "300"]}));
    set_option(&env, "log_format", json!("json"));
    let log = env.dir.path().join("daemon.log");
    let mut daemon = spawn_daemon(&env.dir.path().join("config.json"), &log);
    assert!(wait_event(&log, "test_started", &[("build", "app")], Duration::from_secs(60)), "the test started");
    signal(&daemon, "-KILL");
    daemon.wait().unwrap();
    assert!(!gate_containers(&env).is_empty(), "kill -9 leaves the container");
    set_option(&env, "log_format", json!("text"));
    let out = env.freshen(&["--once", "--dry-run"]);
    assert!(!gate_containers(&env).is_empty(), "a dry run touches nothing: {}", String::from_utf8_lossy(&out.stderr));
    let out = freshen_cmd(&env.dir.path().join("config.json"), &["validate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    // A run with a test that passes at once: the start removes the leftover first.
    let cfg_path = env.dir.path().join("config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["builds"]["app"]["test"] = json!({"command": ["true"]});
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let out = env.freshen(&["--once"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("event=\"test_containers_removed\" count=1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(gate_containers(&env).is_empty());
}
