//! freshen in a container, as users run it: `docker run` with the Docker
//! socket, the config and the build contexts mounted, running a real `--once`
//! cycle that builds on the host's engine.
//!
//! Offline, the runtime base comes from `scripts/runtime-base.sh` (debootstrap,
//! then docker import) and the image from the Dockerfile's `prebuilt` target with
//! the binary under test; the `build` and `runtime` targets need crates.io and
//! Docker Hub images and are not built here.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use common::*;
use serde_json::json;

fn chmod_tree(path: &std::path::Path) {
    for e in walkdir::WalkDir::new(path) {
        let e = e.unwrap();
        let mode = if e.file_type().is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

#[test]
fn docker_run_with_the_socket_and_config_mounted_rebuilds_on_the_host_engine() {
    if !engine_available() {
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(format!("{root}/scripts/runtime-base.sh")).output().unwrap();
    assert!(out.status.success(), "runtime base: {}", String::from_utf8_lossy(&out.stderr));
    let runtime_base = String::from_utf8_lossy(&out.stdout).trim().to_string();

    let env = Env::new("container");
    // A build context of the Dockerfile and the binary under test, for the `prebuilt` target.
    let ctx = env.dir.path().join("image-ctx");
    std::fs::create_dir_all(ctx.join("bin")).unwrap();
    std::fs::copy(format!("{root}/Dockerfile"), ctx.join("Dockerfile")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_freshen"), ctx.join("bin/freshen")).unwrap();
    let image = format!("{}/freshen:test", env.prefix);
    docker(&[
        "build",
        "-q",
        "--target",
        "prebuilt",
        "--build-arg",
        &format!("RUNTIME_IMAGE={runtime_base}"),
        "--build-arg",
        "BINARY=bin/freshen",
        "--label",
        &format!("freshen.test={}", env.prefix),
        "-t",
        &image,
        ctx.to_str().unwrap(),
    ]);
    let version = docker(&["run", "--rm", &image, "--version"]);
    assert!(version.starts_with("freshen "), "{version}");

    env.push_base("base:1", "v1");
    env.write("app/Dockerfile", &format!("FROM {}\nRUN cat /etc/base-version > /v\n", env.image("base:1")));
    let mut builds = json!({"app": {"dockerfile": "app", "tags": [env.image("app:latest")]}});
    builds["app"]["labels"] = json!({"freshen.test": env.prefix});
    let config = env.write("config.json", &json!({"builds": builds}).to_string());
    let state = env.dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    chmod_tree(env.dir.path());
    std::os::unix::fs::chown(&state, Some(10001), Some(10001)).unwrap();
    let socket_gid = std::fs::metadata("/var/run/docker.sock").unwrap().gid().to_string();
    let dir = env.dir.path().to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args =
            vec!["run", "--rm", "--network", "host", "--group-add", &socket_gid, "-v", "/var/run/docker.sock:/var/run/docker.sock"];
        let contexts = format!("{dir}:{dir}:ro");
        let state_mount = format!("{}:/var/lib/freshen", state.display());
        args.extend(["-v", &contexts, "-v", &state_mount, &image, "-c", config.to_str().unwrap(), "--once", "--format", "json"]);
        args.extend(extra);
        Command::new("docker").args(&args).output().unwrap()
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(cat(&env.image("app:latest"), "/v"), "v1", "built on the host's engine");
    assert!(state.join("state.json").exists(), "state in the volume");

    env.push_base("base:1", "v2");
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcomes"]["app"]["outcome"], "built");
    assert_eq!(cat(&env.image("app:latest"), "/v"), "v2", "rebuilt from inside the container");
}
