//! Base resolution against a table of fixture Dockerfiles (`tests/fixtures/dockerfiles/`),
//! each with its expected result written from Docker's documented behaviour.
//!
//! A fixture `NAME.Dockerfile` has `NAME.json`: `{"input": {build_args, target,
//! platform, engine_platform, watch_stages}, "expect": {base, from, pinned,
//! watched, error}}`; keys left out of `expect` are not checked, `error` is a
//! substring of the message.

use std::collections::HashMap;
use std::path::Path;

use freshen::dockerfile::{resolve, ResolveInput, WatchStages};
use serde_json::Value;

#[test]
fn every_fixture_resolves_as_docker_documents() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dockerfiles"));
    let mut failures = Vec::new();
    let mut count = 0;
    let mut names: Vec<_> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect();
    names.sort();
    for spec_path in names {
        count += 1;
        let name = spec_path.file_stem().unwrap().to_string_lossy().to_string();
        let spec: Value = serde_json::from_str(&std::fs::read_to_string(&spec_path).unwrap()).unwrap();
        let text = std::fs::read_to_string(spec_path.with_extension("Dockerfile")).unwrap();
        let input = &spec["input"];
        let build_args: HashMap<String, String> =
            serde_json::from_value(input.get("build_args").cloned().unwrap_or(Value::Object(Default::default()))).unwrap();
        let ri = ResolveInput {
            build_args: Some(&build_args),
            target: input["target"].as_str(),
            platform: input["platform"].as_str(),
            engine_platform: Some(input["engine_platform"].as_str().unwrap_or("linux/amd64")),
        };
        let mode = if input["watch_stages"] == "all" { WatchStages::All } else { WatchStages::Final };
        let expect = &spec["expect"];
        let got = match resolve(&text, &ri) {
            Ok(r) => serde_json::json!({
                "base": r.base.as_ref().map(|b| b.to_string()),
                "from": r.from,
                "pinned": r.pinned(),
                "watched": r.watched(mode).iter().map(|w| w.to_string()).collect::<Vec<_>>(),
            }),
            Err(e) => serde_json::json!({"error": e.to_string()}),
        };
        for (key, want) in expect.as_object().unwrap() {
            let ok = match (key.as_str(), &got[key]) {
                ("error", Value::String(msg)) => msg.contains(want.as_str().unwrap()),
                (_, g) => g == want,
            };
            if !ok {
                failures.push(format!("{name}: {key}: want {want}, got {}", got));
            }
        }
        if expect.get("error").is_none() && got.get("error").is_some() {
            failures.push(format!("{name}: unexpected error {}", got["error"]));
        }
    }
    assert!(count >= 40, "only {count} fixtures");
    assert!(failures.is_empty(), "{} of {count} fixtures differ:\n{}", failures.len(), failures.join("\n"));
}
