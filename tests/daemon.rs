//! The daemon: cycles on its interval and stops gracefully on SIGTERM.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn wait_for(path: &std::path::Path, needle: &str, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if std::fs::read_to_string(path).unwrap_or_default().contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

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
        json!({"interval": "1h", "shutdown_grace": "30s"}),
        json!({
            "slow": {"dockerfile": "slow", "tags": [env.image("slow:latest")]},
            "after": {"dockerfile": "after", "tags": [env.image("after:latest")]}
        }),
    );
    let log = env.dir.path().join("daemon.log");
    let mut child = freshen_cmd(&config, &[]).stderr(std::fs::File::create(&log).unwrap()).stdout(Stdio::null()).spawn().unwrap();
    assert!(wait_for(&log, "building", Duration::from_secs(30)), "daemon started a build");
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
    let config = env.config(json!({"interval": 1}), json!({"img": {"dockerfile": "img", "tags": [env.image("img:latest")]}}));
    let log = env.dir.path().join("daemon.log");
    let mut child = freshen_cmd(&config, &[]).stderr(std::fs::File::create(&log).unwrap()).stdout(Stdio::null()).spawn().unwrap();
    assert!(wait_for(&log, "built", Duration::from_secs(30)));
    env.push_base("base:1", "v2");
    let start = Instant::now();
    let mut rebuilt = false;
    while start.elapsed() < Duration::from_secs(30) {
        if image_id(&env.image("img:latest")).is_some() && cat(&env.image("img:latest"), "/v") == "v2" {
            rebuilt = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(rebuilt, "a later cycle picked up the new base:\n{}", std::fs::read_to_string(&log).unwrap());
    assert_eq!(status.code(), Some(0));
}
