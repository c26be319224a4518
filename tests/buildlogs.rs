//! Saved build logs through the binary, on the real engine: each build that
//! runs leaves `logs/<build>/<RFC 3339 time>.log` beside the state file, mode
//! 0600, named in the JSON report and in a failure's message; only
//! `keep_logs` of them stay.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use common::*;
use serde_json::json;

/// The `.log` files in `logs/<build>/` beside the test's state file, oldest first.
fn logs_of(env: &Env, build: &str) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(env.dir.path().join("logs").join(build)) else { return Vec::new() };
    let mut v: Vec<PathBuf> = dir.map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

#[test]
fn each_build_saves_its_log_0600_named_in_the_report_and_keep_logs_are_kept() {
    if !engine_available() {
        return;
    }
    let env = Env::new("logs");
    env.push_base("base:1", "v1");
    env.write("app/Dockerfile", &format!("FROM {}\nRUN echo hello from the run step\n", env.image("base:1")));
    env.write("old/Dockerfile", &format!("FROM {}\nRUN echo hello from the classic builder\n", env.image("base:1")));
    env.config(
        json!({"keep_logs": 2, "rebuild_on_start": true}),
        json!({
            "app": {"dockerfile": "app", "tags": [env.image("app:latest")], "no_cache": true},
            "old": {"dockerfile": "old", "tags": [env.image("old:latest")], "builder": "classic", "no_cache": true}
        }),
    );
    let mut reported = Vec::new();
    for _ in 0..3 {
        let out = env.freshen(&["--once", "--format", "json"]);
        assert_eq!(out.status.code(), Some(0));
        let r = report(&out);
        let path = PathBuf::from(build_of(&r, "app")["log"].as_str().unwrap_or_else(|| panic!("no log in {}", r["builds"])));
        assert!(path.starts_with(env.dir.path().join("logs/app")), "{}", path.display());
        reported.push(path);
    }
    let text = std::fs::read_to_string(&reported[2]).unwrap();
    assert!(text.starts_with("# freshen ") && text.contains("build app with the buildkit builder"), "{text}");
    assert!(text.contains("[2/2] RUN echo hello from the run step"), "BuildKit's steps, by name: {text}");
    assert!(text.lines().any(|l| l.ends_with("hello from the run step") && !l.contains("RUN")), "the RUN output: {text}");
    // BuildKit numbers its vertices in the order it reports them, which varies from run to run.
    let done = |l: &str| l.strip_prefix('#').and_then(|l| l.split_once(" DONE ")).is_some_and(|(n, _)| n.parse::<u32>().is_ok());
    assert!(text.lines().any(done), "a step's status: {text}");
    assert!(text.trim_end().lines().last().unwrap().starts_with("# built image sha256:"), "{text}");
    assert_eq!(std::fs::metadata(&reported[2]).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(logs_of(&env, "app"), reported[1..], "keep_logs: 2 keeps the two newest");

    let classic = std::fs::read_to_string(logs_of(&env, "old").last().unwrap()).unwrap();
    assert!(classic.lines().any(|l| l.starts_with("Step 2/") && l.ends_with(" : RUN echo hello from the classic builder")), "{classic}");
    assert!(classic.lines().any(|l| l == "hello from the classic builder"), "{classic}");
}

#[test]
fn a_failed_build_names_its_log_which_holds_the_whole_output() {
    if !engine_available() {
        return;
    }
    let env = Env::new("logfail");
    env.push_base("base:1", "v1");
    // More lines than the failure message quotes (30), so the log holds what the message cannot.
    let script = "for i in $(seq 1 60); do echo line-$i; done; echo it broke; exit 3";
    env.write("bad/Dockerfile", &format!("FROM {}\nRUN {script}\n", env.image("base:1")));
    env.config(json!({}), json!({"bad": {"dockerfile": "bad", "tags": [env.image("bad:latest")]}}));
    let out = env.freshen(&["--once"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let path = text.lines().find_map(|l| l.trim().strip_prefix("full build log: ")).unwrap_or_else(|| panic!("{text}"));
    assert!(text.contains("it broke") && !text.contains("line-5\n"), "the message quotes the last lines only: {text}");
    let log = std::fs::read_to_string(path).unwrap();
    assert!(log.lines().any(|l| l.ends_with(" line-1")) && log.contains("it broke"), "{log}");
    assert!(log.contains("# failed (build_failed): "), "{log}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("log={path}")), "build_finished names the log: {stderr}");
}
