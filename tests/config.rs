//! Config loading and `plan`: offline, no engine and no registry involved.

mod common;

use std::path::Path;

use common::freshen_cmd;

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

#[test]
fn every_invalid_config_exits_2_with_a_message_that_says_where_and_writes_nothing() {
    let dir = fixtures().join("config/invalid");
    let mut tried = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let expect = std::fs::read_to_string(path.with_extension("expect")).unwrap();
        // --once with an engine address that cannot answer: the config is refused before any contact.
        let out = freshen_cmd(&path, &["--once"]).env("DOCKER_HOST", "unix:///nonexistent/docker.sock").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", path.display());
        assert!(stderr.contains(expect.trim()), "{}: expected {:?} in\n{stderr}", path.display(), expect.trim());
        assert!(!stderr.contains("engine"), "{}: the engine was contacted", path.display());
        tried += 1;
    }
    assert!(tried >= 15, "only {tried} invalid configs");
    assert!(!dir.join("freshen-state.json").exists(), "nothing written");
}

#[test]
fn the_example_config_is_valid() {
    let out = freshen_cmd(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.json")), &["validate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let out = freshen_cmd(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.json")), &["plan"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("order: base → web → api"), "{text}");
}

#[test]
fn a_docker_rebuilder_config_runs_unchanged() {
    let out = freshen_cmd(&fixtures().join("config/rebuilder/config.json"), &["plan", "--format", "json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = plan["builds"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["descriptive-name-here, anything goes", "second"]);
    assert_eq!(plan["builds"][0]["base"], "docker.io/library/debian:bookworm-slim");
}

#[test]
fn plan_json_shows_how_the_config_resolves() {
    let dir = fixtures().join("plan");
    let out = freshen_cmd(&dir.join("config.json"), &["plan", "--format", "json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "a build with an error makes plan exit 1");
    let text = String::from_utf8_lossy(&out.stdout).replace(&format!("{}/", dir.display()), "");
    let got: serde_json::Value = serde_json::from_str(&text).unwrap();
    let want: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    assert_eq!(got, want);
}

#[test]
fn graph_prints_dot_with_every_edge() {
    let out = freshen_cmd(&fixtures().join("plan/config.json"), &["graph"]).output().unwrap();
    let dot = String::from_utf8_lossy(&out.stdout);
    assert!(dot.starts_with("digraph"), "{dot}");
    assert!(dot.contains("\"lib\" -> \"app\""), "{dot}");
}
