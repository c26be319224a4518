//! The main job end to end, on the real engine and a real registry.

mod common;

use common::*;
use serde_json::json;

/// lib on base, app on lib: the config most tests use.
fn lib_app(env: &Env) {
    env.write("lib/Dockerfile", &format!("ARG BASE={}\nFROM ${{BASE}} AS b\nFROM b\nRUN echo lib > /lib-layer\n", env.image("base:1")));
    env.write("app/Dockerfile", &format!("FROM {}\nRUN cat /etc/base-version > /app-built-on\n", env.image("lib:latest")));
    env.config(
        json!({"parallelism": 2}),
        json!({
            "lib": {"dockerfile": "lib", "tags": [env.image("lib:latest")]},
            "app": {"dockerfile": "app/Dockerfile", "tags": [env.image("app:latest"), env.image("app:v1")]}
        }),
    );
}

#[test]
fn missing_images_are_built_and_a_no_change_cycle_sends_only_manifest_heads() {
    if !engine_available() {
        return;
    }
    let env = Env::new("nochange");
    env.push_base("base:1", "v1");
    lib_app(&env);

    let out = env.freshen(&["--once"]);
    assert_eq!(out.status.code(), Some(0));
    let app = image_id(&env.image("app:latest")).expect("app was built");
    assert_eq!(image_id(&env.image("app:v1")).as_deref(), Some(app.as_str()), "every tag applied");
    assert_eq!(cat(&env.image("app:latest"), "/app-built-on"), "v1");
    assert_eq!(label(&env.image("lib:latest"), "org.opencontainers.image.base.name").unwrap(), env.image("base:1"));
    assert!(label(&env.image("lib:latest"), "org.opencontainers.image.base.digest").unwrap().starts_with("sha256:"));

    env.registry.clear_log();
    let lib = image_id(&env.image("lib:latest")).unwrap();
    let out = env.freshen(&["--once"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(image_id(&env.image("lib:latest")).unwrap(), lib, "nothing rebuilt");
    assert_eq!(image_id(&env.image("app:latest")).unwrap(), app, "nothing rebuilt");
    let requests = env.registry.requests();
    let base_path = format!("/v2/{}/base/manifests/1", env.prefix);
    assert_eq!(requests, vec![format!("HEAD {base_path} HTTP/1.1")], "exactly one HEAD on the one external base's manifest");
}

#[test]
fn new_base_rebuilds_direct_and_transitive_children_in_order_and_leaves_unrelated_alone() {
    if !engine_available() {
        return;
    }
    let env = Env::new("chain");
    env.push_base("base:1", "v1");
    env.push_base("other:1", "o1");
    env.write("lib/Dockerfile", &format!("FROM {}\nRUN echo lib > /lib\n", env.image("base:1")));
    env.write("app/Dockerfile", &format!("FROM {}\nRUN cat /etc/base-version > /app-built-on\n", env.image("lib:latest")));
    env.write("tool/Dockerfile", &format!("FROM {}\nRUN cat /app-built-on > /tool-built-on\n", env.image("app:latest")));
    env.write("unrelated/Dockerfile", &format!("FROM {}\nRUN true\n", env.image("other:1")));
    env.config(
        json!({"parallelism": 4}),
        json!({
            "lib": {"dockerfile": "lib", "tags": [env.image("lib:latest")]},
            "app": {"dockerfile": "app", "tags": [env.image("app:latest")]},
            "tool": {"dockerfile": "tool", "tags": [env.image("tool:latest")]},
            "unrelated": {"dockerfile": "unrelated", "tags": [env.image("unrelated:latest")]}
        }),
    );
    assert_eq!(env.freshen(&["--once"]).status.code(), Some(0));
    let before: Vec<String> =
        ["lib", "app", "tool", "unrelated"].iter().map(|b| image_id(&env.image(&format!("{b}:latest"))).unwrap()).collect();

    env.push_base("base:1", "v2");
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for b in ["lib", "app", "tool"] {
        assert_eq!(report["outcomes"][b]["outcome"], "built", "{b} rebuilt: {report}");
    }
    assert!(report["outcomes"].get("unrelated").is_none(), "unrelated not rebuilt");
    assert_eq!(report["decisions"]["lib"]["status"], "changed");
    assert_eq!(report["decisions"]["app"]["status"], "parent_rebuilt");

    let after: Vec<String> =
        ["lib", "app", "tool", "unrelated"].iter().map(|b| image_id(&env.image(&format!("{b}:latest"))).unwrap()).collect();
    assert_ne!(before[0], after[0]);
    assert_ne!(before[1], after[1]);
    assert_ne!(before[2], after[2]);
    assert_eq!(before[3], after[3], "unrelated image untouched");
    assert_eq!(cat(&env.image("tool:latest"), "/tool-built-on"), "v2", "transitive child sees the new base");
    // Order: each child was built on its parent's new image, which exists only after the parent's rebuild.
    let built_from =
        |b: &str| -> serde_json::Value { serde_json::from_str(&label(&env.image(b), "io.freshen.built-from").unwrap()).unwrap() };
    assert_eq!(built_from("app:latest")[env.image("lib:latest")], after[0]);
    assert_eq!(built_from("tool:latest")[env.image("app:latest")], after[1]);
}

#[test]
fn a_failed_build_skips_its_descendants_but_not_its_siblings() {
    if !engine_available() {
        return;
    }
    let env = Env::new("failure");
    env.push_base("base:1", "v1");
    env.write("bad/Dockerfile", &format!("FROM {}\nRUN echo about to fail && false\n", env.image("base:1")));
    env.write("child/Dockerfile", &format!("FROM {}\n", env.image("bad:latest")));
    env.write("sibling/Dockerfile", &format!("FROM {}\nRUN true\n", env.image("base:1")));
    env.write("broken/Dockerfile", "FROM Not A Reference\n");
    env.config(
        json!({}),
        json!({
            "bad": {"dockerfile": "bad", "tags": [env.image("bad:latest")]},
            "child": {"dockerfile": "child", "tags": [env.image("child:latest")]},
            "sibling": {"dockerfile": "sibling", "tags": [env.image("sibling:latest")]},
            "broken": {"dockerfile": "broken", "tags": [env.image("broken:latest")]}
        }),
    );
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "a failed build makes --once exit 1");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcomes"]["bad"]["outcome"], "failed");
    assert!(report["outcomes"]["bad"]["error"].as_str().unwrap().contains("about to fail"), "error carries the build output tail");
    assert_eq!(report["outcomes"]["child"], json!({"outcome": "skipped", "parent": "bad"}));
    assert_eq!(report["outcomes"]["sibling"]["outcome"], "built");
    assert_eq!(report["decisions"]["broken"]["status"], "error");
    assert!(report["decisions"]["broken"]["reason"].as_str().unwrap().contains("line 1"));
    assert!(image_id(&env.image("sibling:latest")).is_some());
    assert!(image_id(&env.image("child:latest")).is_none());
}

#[test]
fn a_deleted_state_file_is_reseeded_from_labels_so_nothing_is_rebuilt_and_no_change_is_missed() {
    if !engine_available() {
        return;
    }
    let env = Env::new("reseed");
    env.push_base("base:1", "v1");
    lib_app(&env);
    assert_eq!(env.freshen(&["--once"]).status.code(), Some(0));
    let lib = image_id(&env.image("lib:latest")).unwrap();
    let app = image_id(&env.image("app:latest")).unwrap();

    std::fs::remove_file(env.state_path()).unwrap();
    assert_eq!(env.freshen(&["--once"]).status.code(), Some(0));
    assert_eq!(image_id(&env.image("lib:latest")).unwrap(), lib, "not rebuilt after losing state");
    assert_eq!(image_id(&env.image("app:latest")).unwrap(), app);
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(env.state_path()).unwrap()).unwrap();
    assert_eq!(state["builds"]["lib"]["origin"], "labels");

    // Lose state again while the base changes: the labels still carry the old digest.
    std::fs::remove_file(env.state_path()).unwrap();
    env.push_base("base:1", "v2");
    assert_eq!(env.freshen(&["--once"]).status.code(), Some(0));
    assert_ne!(image_id(&env.image("lib:latest")).unwrap(), lib, "the change was not missed");
    assert_eq!(cat(&env.image("app:latest"), "/app-built-on"), "v2");
}

/// `state` (format 2) as freshen 0.1 before typed inputs wrote it: format 1, keyed by image text.
fn as_version_1(state: &serde_json::Value) -> serde_json::Value {
    let strip = |m: &serde_json::Value| -> serde_json::Value {
        // Format 1 knew images only: build contexts are left out, as that freshen never recorded them.
        m.as_object().unwrap().iter().filter_map(|(k, v)| Some((k.strip_prefix("image:")?.to_string(), v.clone()))).collect()
    };
    let mut builds = state["builds"].clone();
    for b in builds.as_object_mut().unwrap().values_mut() {
        b["built_from"] = strip(&b["built_from"]);
    }
    json!({"version": 1, "images": strip(&state["inputs"]), "builds": builds})
}

#[test]
fn a_version_1_state_file_is_migrated_and_nothing_is_rebuilt() {
    if !engine_available() {
        return;
    }
    let env = Env::new("statev1");
    env.push_base("base:1", "v1");
    lib_app(&env);
    assert_eq!(env.freshen(&["--once"]).status.code(), Some(0));
    let (lib, app) = (image_id(&env.image("lib:latest")).unwrap(), image_id(&env.image("app:latest")).unwrap());
    let read = || -> serde_json::Value { serde_json::from_slice(&std::fs::read(env.state_path()).unwrap()).unwrap() };
    std::fs::write(env.state_path(), as_version_1(&read()).to_string()).unwrap();

    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcomes"], json!({}), "nothing rebuilt: {report}");
    assert_eq!((&report["decisions"]["lib"]["status"], &report["decisions"]["app"]["status"]), (&json!("fresh"), &json!("fresh")));
    assert_eq!((image_id(&env.image("lib:latest")).unwrap(), image_id(&env.image("app:latest")).unwrap()), (lib, app));
    let state = read();
    assert_eq!(state["version"], 2, "saved back in format 2");
    assert_eq!(state["builds"]["lib"]["origin"], "built", "the records came from the v1 file, not from the labels");
    assert!(state["inputs"].get(format!("image:{}", env.image("base:1"))).is_some());
}

#[test]
fn existing_images_freshen_never_built_are_a_baseline_unless_rebuild_on_start() {
    if !engine_available() {
        return;
    }
    let env = Env::new("baseline");
    env.push_base("base:1", "v1");
    let df = env.write("img/Dockerfile", &format!("FROM {}\nRUN true\n", env.image("base:1")));
    docker(&[
        "build",
        "-q",
        "--label",
        &format!("freshen.test={}", env.prefix),
        "-t",
        &env.image("img:latest"),
        df.parent().unwrap().to_str().unwrap(),
    ]);
    let id = image_id(&env.image("img:latest")).unwrap();
    env.config(json!({}), json!({"img": {"dockerfile": "img", "tags": [env.image("img:latest")]}}));
    assert_eq!(env.freshen(&["--once"]).status.code(), Some(0));
    assert_eq!(image_id(&env.image("img:latest")).unwrap(), id, "baseline adopted, not rebuilt");

    std::fs::remove_file(env.state_path()).unwrap();
    env.config(
        json!({"rebuild_on_start": true}),
        json!({"img": {"dockerfile": "img", "tags": [env.image("img:latest")], "no_cache": true}}),
    );
    assert_eq!(env.freshen(&["--once"]).status.code(), Some(0));
    assert_ne!(image_id(&env.image("img:latest")).unwrap(), id, "rebuild_on_start rebuilds");
}

#[test]
fn dry_run_reports_what_would_be_rebuilt_and_builds_nothing() {
    if !engine_available() {
        return;
    }
    let env = Env::new("dryrun");
    env.push_base("base:1", "v1");
    lib_app(&env);
    let out = env.freshen(&["--dry-run"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("lib: would rebuild") && text.contains("app: would rebuild"), "{text}");
    assert!(image_id(&env.image("lib:latest")).is_none(), "nothing built");
}
