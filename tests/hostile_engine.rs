//! A hostile engine, through the binary: a fake Docker engine on a unix socket
//! (`DOCKER_HOST`) that splits a secret across two messages, stalls a build's
//! stream, or prints terminal escape codes. The registry and its base image are
//! real; only the engine is played.

mod common;

use common::fake_engine::{BuildScript, FakeEngine};
use common::*;
use serde_json::json;

const SECRET: &str = "s3cretVALUE";

/// One `freshen --once` (extra args `args`) of a one-build config whose
/// builds go to `engine`; the build has the secret build arg `TOKEN`.
fn once_on(build: BuildScript, name: &str, options: serde_json::Value, args: &[&str]) -> (FakeEngine, std::process::Output) {
    let env = Env::new(name);
    let config = one_build(&env, options, json!({"build_args": {"TOKEN": SECRET}, "secret_build_args": ["TOKEN"]}));
    // The fake has the base as pulled: the real engine's inspect of it, repository digest and all.
    let base = env.image("base:1");
    let inspect: serde_json::Value = serde_json::from_str(&docker(&["image", "inspect", &base])).unwrap();
    let engine = FakeEngine::start(build, vec![(base, inspect[0].to_string())]);
    let mut args = args.to_vec();
    args.insert(0, "--once");
    let out = freshen_cmd(&config, &args).env("DOCKER_HOST", engine.docker_host()).output().unwrap();
    assert!(
        engine.requests().iter().any(|r| r.starts_with("POST ") && r.contains("/build")),
        "the build went to the fake: {:?}",
        engine.requests()
    );
    (engine, out)
}

#[test]
fn a_secret_split_across_two_engine_messages_is_still_redacted() {
    if !engine_available() {
        return;
    }
    let script = BuildScript::Messages(vec![
        json!({"stream": "Step 2/2 : RUN login --token s3cr"}).to_string(),
        json!({"stream": "etVALUE done\n"}).to_string(),
        json!({"errorDetail": {"message": "boom"}, "error": "boom"}).to_string(),
    ]);
    let (_engine, out) = once_on(script, "splitsecret", json!({}), &["--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let r = report(&out);
    let error = r["outcomes"]["app"]["error"].as_str().unwrap();
    assert!(error.contains("--token *** done"), "the line is whole and redacted: {error}");
    let (stdout, log) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(log.contains("--token *** done"), "the log has the line, redacted: {log}");
    for (what, text) in [("report", &stdout), ("log", &log)] {
        assert!(!text.contains("s3cr") && !text.contains("etVALUE"), "no part of the secret in the {what}: {text}");
    }
}

#[test]
fn a_stalled_build_stream_fails_at_the_idle_deadline_and_the_build_connection_is_closed() {
    if !engine_available() {
        return;
    }
    let script = BuildScript::Stall(vec![json!({"stream": "Step 1/2 : FROM base\n"}).to_string()]);
    let started = std::time::Instant::now();
    let (engine, out) = once_on(script, "stall", json!({"build_idle_timeout": "2s"}), &["--format", "json"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "the idle deadline ended the cycle");
    assert_eq!(out.status.code(), Some(1));
    let app = &report(&out)["outcomes"]["app"];
    assert_eq!(app["kind"], "timed_out", "{app}");
    assert!(app["error"].as_str().unwrap().contains("stalled") && app["error"].as_str().unwrap().contains("Step 1/2"), "{app}");
    assert!(
        wait_until(std::time::Duration::from_secs(5), || engine.build_cancelled()),
        "freshen closed the build's connection, which cancels it on an engine"
    );
}

#[test]
fn escape_codes_in_build_output_are_escaped_in_the_text_report_and_the_text_log() {
    if !engine_available() {
        return;
    }
    let script = BuildScript::Messages(vec![
        json!({"stream": "\u{1b}[31mALERT\u{1b}[0m\rover\n"}).to_string(),
        json!({"errorDetail": {"message": "boom\u{7}"}, "error": "boom\u{7}"}).to_string(),
    ]);
    let (_engine, out) = once_on(script, "escapes", json!({"log_format": "text"}), &[]);
    assert_eq!(out.status.code(), Some(1));
    let (stdout, log) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    for (what, text) in [("report", &stdout), ("log", &log)] {
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "no raw control character in the {what}: {text:?}");
        assert!(text.contains("\\u{1b}[31mALERT\\u{1b}[0m\\u{d}over"), "the {what} shows the codes escaped: {text}");
    }
    for line in stdout.lines() {
        assert!(
            line.starts_with("check ") || line.starts_with("app: ") || line.starts_with("  "),
            "a report line of freshen's own or indented: {line:?}"
        );
    }
}
