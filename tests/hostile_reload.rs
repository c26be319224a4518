//! SIGHUP as a careless operator sends it, through the binary: a burst of
//! them, and a reload that moves the state file.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

fn stop(mut child: std::process::Child) -> Option<i32> {
    signal(&child, "-TERM");
    child.wait().unwrap().code()
}

#[test]
fn a_burst_of_sighups_during_a_cycle_is_one_reload() {
    if !engine_available() {
        return;
    }
    let env = Env::new("hupburst");
    env.push_base("base:1", "v1");
    env.write("app/Dockerfile", &format!("FROM {}\nRUN sleep 3\n", env.image("base:1")));
    let config = env
        .config(json!({"interval": "1h", "log_format": "json"}), json!({"app": {"dockerfile": "app", "tags": [env.image("app:latest")]}}));
    let log = env.dir.path().join("daemon.log");
    let child = spawn_daemon(&config, &log);
    assert!(wait_event(&log, "build_started", &[], Duration::from_secs(60)), "the first cycle builds");
    for _ in 0..5 {
        signal(&child, "-HUP");
        std::thread::sleep(Duration::from_millis(100));
    }
    let two_cycles = wait_until(Duration::from_secs(60), || count_events(&log, "cycle_finished", &[]) >= 2);
    std::thread::sleep(Duration::from_secs(1));
    let (reloads, cycles) = (count_events(&log, "config_reloaded", &[]), count_events(&log, "cycle_finished", &[]));
    assert_eq!(stop(child), Some(0));
    assert!(two_cycles, "the reload ran a cycle");
    assert_eq!((reloads, cycles), (1, 2), "five SIGHUPs in one build's time: one reload, one cycle after it");
}

#[test]
fn a_reload_that_moves_the_state_file_moves_the_lock_or_is_refused() {
    if !engine_available() {
        return;
    }
    let env = Env::new("hupstate");
    let config = one_build(&env, json!({"interval": "1h", "log_format": "json", "state_file": "a.json"}), json!({}));
    let log = env.dir.path().join("daemon.log");
    let child = spawn_daemon(&config, &log);
    assert!(wait_event(&log, "cycle_finished", &[], Duration::from_secs(60)));
    set_option(&env, "state_file", json!("b.json"));
    signal(&child, "-HUP");
    assert!(wait_event(&log, "config_reloaded", &[], Duration::from_secs(30)));
    let once = |state: &str| {
        let other = env.write(&format!("other-{state}.json"), &std::fs::read_to_string(&config).unwrap().replace("b.json", state));
        freshen_cmd(&other, &["--once", "--dry-run"]).output().unwrap()
    };
    let b = once("b.json");
    assert_eq!(b.status.code(), Some(1), "b.json is the daemon's now");
    assert!(String::from_utf8_lossy(&b.stderr).contains(&format!("PID {}", child.id())), "{}", String::from_utf8_lossy(&b.stderr));
    assert_eq!(once("a.json").status.code(), Some(0), "a.json was let go: {}", String::from_utf8_lossy(&once("a.json").stderr));

    // A state file another freshen holds: the reload is refused and the old config keeps running.
    // (The file watch reloads on the edit too, and the SIGHUP again: each reload is counted.)
    std::thread::sleep(Duration::from_millis(500));
    let reloaded = count_events(&log, "config_reloaded", &[]);
    let holder = std::fs::File::create(env.dir.path().join("c.json.lock")).unwrap();
    holder.try_lock().unwrap();
    set_option(&env, "state_file", json!("c.json"));
    signal(&child, "-HUP");
    assert!(wait_event(&log, "config_refused", &[], Duration::from_secs(30)), "the reload onto a held state file is refused");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count_events(&log, "config_reloaded", &[]), reloaded, "no reload took the held file");
    drop(holder);
    assert_eq!(stop(child), Some(0));
}
