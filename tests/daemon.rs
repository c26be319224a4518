//! The daemon: cycles on its interval and stops gracefully on SIGTERM.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn sigterm_during_a_build_lets_it_finish_saves_state_and_exits_0() {
    if !engine_available() {
        return;
    }
    let env = Env::new("sigterm");
    env.push_base("base:1", "v1");
    env.write("slow/Dockerfile", &format!("FROM {}\nRUN sleep 3 && echo done > /slow\n", env.image("base:1")));
    env.write("after/Dockerfile", &format!("FROM {}\nRUN true\n", env.image("slow:latest")));
    let config = env.config(
        json!({"interval": "1h", "shutdown_grace": "30s", "log_format": "json"}),
        json!({
            "slow": {"dockerfile": "slow", "tags": [env.image("slow:latest")]},
            "after": {"dockerfile": "after", "tags": [env.image("after:latest")]}
        }),
    );
    let log = env.dir.path().join("daemon.log");
    let mut child = spawn_daemon(&config, &log);
    assert!(wait_event(&log, "build_started", &[], Duration::from_secs(30)), "daemon started a build");
    std::thread::sleep(Duration::from_millis(500));
    let kill = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "graceful stop exits 0:\n{text}");
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(env.state_path()).unwrap()).expect("state file parses");
    assert_eq!(state["builds"]["slow"]["origin"], "built", "the running build finished and was recorded");
    assert_eq!(cat(&env.image("slow:latest"), "/slow"), "done");
    assert!(state["builds"].get("after").is_none(), "no new build started after the signal");
    assert!(image_id(&env.image("after:latest")).is_none());
}

#[test]
fn the_daemon_runs_a_cycle_each_interval() {
    if !engine_available() {
        return;
    }
    let env = Env::new("interval");
    env.push_base("base:1", "v1");
    env.write("img/Dockerfile", &format!("FROM {}\nRUN cat /etc/base-version > /v\n", env.image("base:1")));
    let config =
        env.config(json!({"interval": 1, "log_format": "json"}), json!({"img": {"dockerfile": "img", "tags": [env.image("img:latest")]}}));
    let log = env.dir.path().join("daemon.log");
    let mut child = spawn_daemon(&config, &log);
    assert!(wait_event(&log, "build_finished", &[("status", "rebuilt")], Duration::from_secs(30)));
    env.push_base("base:1", "v2");
    let rebuilt =
        wait_until(Duration::from_secs(30), || image_id(&env.image("img:latest")).is_some() && cat(&env.image("img:latest"), "/v") == "v2");
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(rebuilt, "a later cycle picked up the new base:\n{}", std::fs::read_to_string(&log).unwrap());
    assert_eq!(status.code(), Some(0));
}

/// Builds of `build` the daemon log reports as rebuilt.
fn builds_logged(log: &std::path::Path, build: &str) -> usize {
    count_events(log, "build_finished", &[("build", build), ("status", "rebuilt")])
}

#[test]
fn a_base_pushed_twice_inside_the_settle_window_leads_to_one_rebuild() {
    if !engine_available() {
        return;
    }
    let env = Env::new("settle");
    env.push_base("base:1", "v1");
    env.write("img/Dockerfile", &format!("FROM {}\nRUN cat /etc/base-version > /v\n", env.image("base:1")));
    env.write("child/Dockerfile", &format!("FROM {}\nRUN cat /v > /child-v\n", env.image("img:latest")));
    let config = env.config(
        json!({"interval": 1, "settle": "6s", "log_format": "json"}),
        json!({"img": {"dockerfile": "img", "tags": [env.image("img:latest")]}, "child": {"dockerfile": "child", "tags": [env.image("child:latest")]}}),
    );
    assert_eq!(env.freshen(&["--once"]).status.code(), Some(0));
    // Both new bases are built beforehand, so the two pushes follow each other within a second or two.
    env.build_base("base:v2", "v2");
    env.build_base("base:v3", "v3");
    let log = env.dir.path().join("daemon.log");
    let mut child = spawn_daemon(&config, &log);
    assert!(wait_event(&log, "cycle_finished", &[], Duration::from_secs(30)));
    for v in ["v2", "v3"] {
        docker(&["tag", &env.image(&format!("base:{v}")), &env.image("base:1")]);
        docker(&["push", "-q", &env.image("base:1")]);
        assert!(wait_event(&log, "build_settling", &[], Duration::from_secs(10)));
    }
    wait_until(Duration::from_secs(40), || builds_logged(&log, "child") > 0);
    std::thread::sleep(Duration::from_secs(3));
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(builds_logged(&log, "img"), 1, "one rebuild of img:\n{text}");
    assert_eq!(builds_logged(&log, "child"), 1, "one rebuild of its descendant:\n{text}");
    assert_eq!(cat(&env.image("child:latest"), "/child-v"), "v3", "built on the last push");
}

#[test]
fn a_change_still_settling_is_rechecked_when_the_window_ends_not_an_interval_later() {
    if !engine_available() {
        return;
    }
    let env = Env::new("recheck");
    env.push_base("base:1", "v1");
    env.write("img/Dockerfile", &format!("FROM {}\nRUN cat /etc/base-version > /v\n", env.image("base:1")));
    let config = env.config(
        json!({"interval": "1h", "settle": "2s", "log_format": "json"}),
        json!({"img": {"dockerfile": "img", "tags": [env.image("img:latest")]}}),
    );
    assert_eq!(env.freshen(&["--once"]).status.code(), Some(0));
    env.push_base("base:1", "v2");
    let log = env.dir.path().join("daemon.log");
    let mut child = spawn_daemon(&config, &log);
    let rebuilt = wait_event(&log, "build_finished", &[("status", "rebuilt")], Duration::from_secs(30));
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(rebuilt, "rebuilt after the 2 s window, with a 1 h interval:\n{}", std::fs::read_to_string(&log).unwrap());
    assert_eq!(cat(&env.image("img:latest"), "/v"), "v2");
}
