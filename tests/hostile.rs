//! Hostile and careless input, through the binary: a registry front that sends
//! absurd headers, and configs with values that once crashed, spun or misled.
//! Each row is what a user relies on: no crash, no hang, a clear error.

mod common;

use common::proxy::Fault;
use common::*;
use serde_json::json;

/// `validate` on a config with `options` and one build `extra` (merged into the build); returns (exit code, stderr).
fn validate(options: serde_json::Value, name: &str, extra: serde_json::Value) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("app")).unwrap();
    std::fs::write(dir.path().join("app/Dockerfile"), "FROM alpine\n").unwrap();
    let mut build = json!({"dockerfile": "app", "tags": ["registry.example.com/app:1"]});
    build.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let config = json!({"options": options, "builds": {name: build}});
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let out = freshen_cmd(&dir.path().join("config.json"), &["validate"]).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn durations_out_of_range_are_config_errors_not_crashes_or_spins() {
    for (key, value, says) in [
        ("interval", "1ns", "interval must be from 1s to 30days"),
        ("interval", "0s", "interval must be from 1s"),
        ("registry_timeout", "0s", "registry_timeout must be from 1s to 1h"),
        ("shutdown_grace", "300000000000y", "shutdown_grace must be from 0s to 1day"),
        ("settle", "100years", "settle must be from 0s to 30days"),
    ] {
        let (code, err) = validate(json!({key: value}), "app", json!({}));
        assert_eq!(code, Some(2), "{key}={value}: {err}");
        assert!(err.contains(&format!("/options/{key}")) && err.contains(says), "{key}={value}: {err}");
    }
    let (code, err) = validate(json!({"shutdown_grace": 18446744073709551615u64}), "app", json!({}));
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn a_digest_reference_is_not_a_tag() {
    let tag = format!("registry.example.com/app@sha256:{}", "a".repeat(64));
    let (code, err) = validate(json!({}), "app", json!({"tags": [tag]}));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/builds/app/tags") && err.contains("is a digest reference, not a tag"), "{err}");
}

#[test]
fn a_build_name_with_control_characters_is_refused_and_never_printed_raw() {
    let (code, err) = validate(json!({}), "web\u{1b}[31m\nINFO forged", json!({}));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("contains a control character"), "{err}");
    assert!(!err.contains('\u{1b}'), "no raw escape reaches the terminal: {err:?}");
    assert!(err.contains("\\u{1b}"), "the name is shown escaped: {err}");
}

#[test]
fn a_huge_retry_after_is_capped_at_a_day_without_a_crash() {
    if !engine_available() {
        return;
    }
    let (env, proxy) = built_behind_proxy("hugeretry", &["one"]);
    proxy.clear();
    proxy.fail_always(Some(Fault::Status(429, Some(u64::MAX))));
    set_option(&env, "log_format", json!("json"));
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "a failed check, not an abort: {}", String::from_utf8_lossy(&out.stderr));
    let check = &report(&out)["checks"][0];
    assert_eq!(check["kind"], "rate_limited");
    assert!(check["error"].as_str().unwrap().contains("no requests for 86400 s"), "{check}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("retry_after_capped"));
}

#[test]
fn a_rate_limit_window_of_centuries_is_capped_at_a_day() {
    if !engine_available() {
        return;
    }
    let (env, proxy) = built_behind_proxy("hugewindow", &["one"]);
    proxy.set_response_headers(&["RateLimit-Limit: 100;w=9223372036854775807", "RateLimit-Remaining: 0;w=9223372036854775807"]);
    assert_eq!(env.freshen(&["--once"]).status.code(), Some(0));
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(env.state_path()).unwrap()).unwrap();
    let registry = proxy.addr.clone();
    assert_eq!(state["registries"][&registry]["window_secs"], 86400, "the window is capped: {}", state["registries"]);
}
