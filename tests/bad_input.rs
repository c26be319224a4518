//! Bad input: a corpus of broken Dockerfiles (each an error for its build
//! alone), a 10 MB config, build contexts with symlinks and `.dockerignore`,
//! and secrets that must never show.

mod common;

use std::path::Path;

use common::*;
use serde_json::{json, Value};

/// Broken Dockerfiles by build name; each one's error must name what is wrong.
fn broken(env: &Env) -> Vec<(&'static str, &'static str)> {
    env.write("empty/Dockerfile", "");
    std::fs::write(env.dir.path().join("binary.Dockerfile"), [0xff, 0xfe, 0x00, 0x01, 0x80, 0x81]).unwrap();
    env.write("heredoc/Dockerfile", "FROM alpine\nRUN <<EOF\necho never closed\n");
    env.write("badref/Dockerfile", "FROM ${NOPE:-Upper/Case}:1\n");
    std::fs::create_dir_all(env.dir.path().join("folder/Dockerfile")).unwrap();
    vec![
        ("empty", "no FROM instruction"),
        ("binary", "not UTF-8"),
        ("heredoc", "line"),
        ("badref", "line 1"),
        ("folder", "cannot read Dockerfile"),
    ]
}

#[test]
fn each_broken_dockerfile_is_an_error_for_its_build_alone() {
    if !engine_available() {
        return;
    }
    let env = Env::new("baddockerfiles");
    let cases = broken(&env);
    env.push_base("base:1", "v1");
    // Five megabytes of comments around one real instruction, so the build itself stays quick.
    let mut big = format!("FROM {}\n", env.image("base:1"));
    while big.len() < 5 * 1024 * 1024 {
        big.push_str("# a comment line that makes this Dockerfile five megabytes long, as generated files can be\n");
    }
    big.push_str("RUN true\n");
    env.write("big/Dockerfile", &big);
    env.write("good/Dockerfile", &format!("FROM {}\nRUN true\n", env.image("base:1")));
    let mut builds = serde_json::Map::new();
    for (name, _) in &cases {
        let df = if *name == "binary" { "binary.Dockerfile".to_string() } else { format!("{name}/Dockerfile") };
        builds.insert(name.to_string(), json!({"dockerfile": df, "context": ".", "tags": [env.image(&format!("{name}:latest"))]}));
    }
    builds.insert("big".into(), json!({"dockerfile": "big", "tags": [env.image("big:latest")]}));
    builds.insert("good".into(), json!({"dockerfile": "good", "tags": [env.image("good:latest")]}));
    // The broken builds' context is the test's folder, so the state file lives outside it.
    let state_dir = tempfile::tempdir().unwrap();
    env.config(json!({"state_file": state_dir.path().join("state.json")}), Value::Object(builds));

    let out = env.freshen(&["plan", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let by_name = |n: &str| plan["builds"].as_array().unwrap().iter().find(|b| b["name"] == n).unwrap().clone();
    for (name, needle) in &cases {
        let err = by_name(name)["error"].as_str().unwrap_or_default().to_string();
        assert!(err.contains(needle), "{name}: {err:?} should contain {needle:?}");
    }
    assert_eq!(by_name("big")["base"], env.image("base:1").as_str(), "a 5 MB Dockerfile resolves");
    assert_eq!(plan["order"], json!(["big", "good"]));

    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "errors make --once exit 1");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcomes"]["good"]["outcome"], "built", "every other build goes on");
    for (name, _) in &cases {
        assert_eq!(report["decisions"][name]["status"], "error");
    }
}

#[test]
fn a_10_mb_config_of_junk_is_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, "x".repeat(10 * 1024 * 1024)).unwrap();
    let out = freshen_cmd(&path, &["--once"]).env("DOCKER_HOST", "unix:///nonexistent.sock").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("config.json:1:1: invalid JSON"));
}

#[test]
fn contexts_archive_symlinks_as_links_and_apply_dockerignore() {
    if !engine_available() {
        return;
    }
    let env = Env::new("context");
    env.push_base("base:1", "v1");
    let ctx = env.dir.path().join("app");
    env.write(
        "app/Dockerfile",
        &format!("FROM {}\nCOPY . /ctx/\nRUN readlink /ctx/escape > /link-target; ls -a /ctx > /listing\n", env.image("base:1")),
    );
    env.write("app/keep.txt", "kept");
    env.write("app/secret.key", "never sent");
    env.write("app/logs/x.log", "ignored folder");
    env.write("app/.dockerignore", "*.key\nlogs\n");
    std::os::unix::fs::symlink("/etc/hostname", ctx.join("escape")).unwrap();
    // The Dockerfile lives outside the context: it is sent, and hidden from COPY.
    env.write("outside.Dockerfile", &format!("FROM {}\nCOPY . /ctx/\nRUN ls -a /ctx > /listing\n", env.image("base:1")));
    env.config(
        json!({}),
        json!({
            "app": {"dockerfile": "app", "tags": [env.image("app:latest")]},
            // Classic: the engine reads the archived .dockerignore that hides the injected
            // Dockerfile; BuildKit does not, and a COPY . sees it there (README, "builder").
            "out": {"dockerfile": "outside.Dockerfile", "context": "app", "tags": [env.image("out:latest")], "builder": "classic"}
        }),
    );
    assert_eq!(env.freshen(&["--once"]).status.code(), Some(0));
    assert_eq!(cat(&env.image("app:latest"), "/link-target"), "/etc/hostname", "the symlink was archived as a link");
    let listing = cat(&env.image("app:latest"), "/listing");
    assert!(listing.contains("keep.txt"), "{listing}");
    assert!(!listing.contains("secret.key") && !listing.contains("logs"), ".dockerignore applied: {listing}");
    let listing = cat(&env.image("out:latest"), "/listing");
    assert!(!listing.contains(".freshen.Dockerfile"), "{listing}");
    assert!(Path::new(&ctx).join("escape").exists());
}

/// The gid of the `docker` group, which may use the engine's socket.
fn docker_gid() -> String {
    let group = std::fs::read_to_string("/etc/group").unwrap();
    group.lines().find_map(|l| l.strip_prefix("docker:x:")).and_then(|r| r.split(':').next()).expect("a docker group").to_string()
}

#[test]
fn unreadable_files_are_a_clear_error_for_their_build_alone() {
    if !engine_available() {
        return;
    }
    // Root reads everything, so freshen runs here as `nobody` in the docker group,
    // as a service account would, from a copy of the binary it can reach.
    let env = Env::new("unreadable");
    env.push_base("base:1", "v1");
    let from = format!("FROM {}\nCOPY . /ctx/\nRUN true\n", env.image("base:1"));
    for name in ["good", "file", "folder", "dockerfile"] {
        env.write(&format!("{name}/Dockerfile"), &from);
        env.write(&format!("{name}/data/readme.txt"), "readable");
    }
    let key = env.write("file/data/private.key", "no one may read this");
    let folder = env.dir.path().join("folder/data");
    let dockerfile = env.dir.path().join("dockerfile/Dockerfile");
    let builds = ["good", "file", "folder", "dockerfile"]
        .map(|n| (n.to_string(), json!({"dockerfile": n, "tags": [env.image(&format!("{n}:latest"))]})));
    env.config(json!({}), Value::Object(builds.into_iter().collect()));
    let binary = env.dir.path().join("freshen");
    std::fs::copy(env!("CARGO_BIN_EXE_freshen"), &binary).unwrap();
    let status = std::process::Command::new("chown").args(["-R", "65534:65534"]).arg(env.dir.path()).status().unwrap();
    assert!(status.success());
    use std::os::unix::fs::PermissionsExt;
    for p in [&key, &folder, &dockerfile] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    let run = |args: &[&str]| {
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", &format!("--groups={}", docker_gid()), "--"])
            .arg(&binary)
            .arg("-c")
            .arg(env.dir.path().join("config.json"))
            .args(args)
            .env("HOME", env.dir.path())
            .output()
            .unwrap();
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        out
    };

    let out = run(&["plan", "--format", "json"]);
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let error =
        plan["builds"].as_array().unwrap().iter().find(|b| b["name"] == "dockerfile").unwrap()["error"].as_str().unwrap().to_string();
    assert!(error.contains(&dockerfile.display().to_string()) && error.contains("Permission denied"), "{error}");

    let out = run(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcomes"]["good"]["outcome"], "built", "every other build goes on");
    assert_eq!(report["decisions"]["dockerfile"]["status"], "error");
    for (name, path) in [("file", &key), ("folder", &folder)] {
        assert_eq!(report["outcomes"][name]["outcome"], "failed", "{name}");
        let error = report["outcomes"][name]["error"].as_str().unwrap();
        assert!(error.contains(&path.display().to_string()), "{name}: {error}");
        assert!(error.contains("Permission denied") && error.contains(".dockerignore"), "{name}: {error}");
    }
    // Root can read what nobody could; put things back so the folder can be removed.
    for p in [&key, &folder, &dockerfile] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// Every `repository:tag` in the engine that carries `prefix` (untagged images,
/// listed as `repository:<none>` when they keep a repository digest, are not tags).
fn tags_with(prefix: &str) -> std::collections::BTreeSet<String> {
    let listing = docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    listing.lines().filter(|t| t.contains(prefix) && !t.ends_with(":<none>")).map(str::to_string).collect()
}

#[test]
fn only_the_configured_tags_are_ever_made_or_moved() {
    if !engine_available() {
        return;
    }
    let env = Env::new("onlyconfigured");
    env.push_base("base:1", "v1");
    // The same repository under a tag no build names, and a repository no build names.
    env.build_base("app:handmade", "hand");
    env.build_base("unrelated:1", "other");
    let untouched = [env.image("app:handmade"), env.image("unrelated:1")].map(|r| (image_id(&r).unwrap(), r));
    env.write("lib/Dockerfile", &format!("FROM {}\nRUN true\n", env.image("base:1")));
    env.write("app/Dockerfile", &format!("FROM {}\nRUN true\n", env.image("lib:latest")));
    env.config(
        json!({}),
        json!({
            "lib": {"dockerfile": "lib", "tags": [env.image("lib:latest"), env.image("lib:v1")]},
            "app": {"dockerfile": "app", "tags": [env.image("app:latest")]}
        }),
    );
    let before = tags_with(&env.prefix);
    let configured: std::collections::BTreeSet<String> = ["lib:latest", "lib:v1", "app:latest"].map(|t| env.image(t)).into();
    assert_eq!(env.freshen(&["--once"]).status.code(), Some(0));
    assert_eq!(tags_with(&env.prefix).difference(&before).cloned().collect::<std::collections::BTreeSet<_>>(), configured);

    env.push_base("base:1", "v2");
    let out = env.freshen(&["--once", "--format", "json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((&report["outcomes"]["lib"]["outcome"], &report["outcomes"]["app"]["outcome"]), (&json!("built"), &json!("built")));
    assert_eq!(tags_with(&env.prefix).difference(&before).cloned().collect::<std::collections::BTreeSet<_>>(), configured);
    for (id, reference) in untouched {
        assert_eq!(image_id(&reference), Some(id), "{reference} was not freshen's to move");
    }
}

#[test]
fn secret_build_args_never_appear_in_logs_errors_state_or_plan() {
    if !engine_available() {
        return;
    }
    let env = Env::new("secrets");
    env.push_base("base:1", "v1");
    let secret = "tok-8f3a9c1e77-SECRET";
    env.write("ok/Dockerfile", &format!("ARG TOKEN\nFROM {}\nARG TOKEN\nRUN echo using $TOKEN\n", env.image("base:1")));
    env.write("bad/Dockerfile", &format!("FROM {}\nARG TOKEN\nRUN echo failing with $TOKEN && false\n", env.image("base:1")));
    let mut cfg = json!({"options": {"state_file": "state.json", "secret_build_args": ["TOKEN"], "log_format": "json"}, "builds": {
        "ok": {"dockerfile": "ok", "tags": [env.image("ok:latest")], "build_args": {"TOKEN": secret}},
        "bad": {"dockerfile": "bad", "tags": [env.image("bad:latest")], "build_args": {"TOKEN": secret}}
    }});
    for b in ["ok", "bad"] {
        cfg["builds"][b]["labels"] = json!({"freshen.test": env.prefix});
    }
    env.write("config.json", &cfg.to_string());
    let once = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(once.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&once.stdout).unwrap();
    assert!(report["outcomes"]["bad"]["error"].as_str().unwrap().contains("failing with ***"), "{}", report["outcomes"]["bad"]);
    let plan = env.freshen(&["plan", "--format", "json"]);
    let saved: Vec<u8> = walkdir::WalkDir::new(env.dir.path().join("logs"))
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .flat_map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    assert!(String::from_utf8_lossy(&saved).contains("failing with ***"), "the saved build logs are redacted");
    let everything = [once.stdout, once.stderr, plan.stdout, plan.stderr, std::fs::read(env.state_path()).unwrap(), saved].concat();
    assert!(!String::from_utf8_lossy(&everything).contains(secret), "the secret leaked");
    assert!(String::from_utf8_lossy(&everything).contains("using ***"), "build output is logged, redacted");
}
