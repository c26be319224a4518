//! BuildKit through the binary, on the real engine: the default builder
//! (`auto`) builds `RUN --mount=type=cache` Dockerfiles and reuses the cache
//! after a base change; `classic` fails such a build alone and says to use
//! BuildKit; a parent and its child build in one cycle from the local image store.

mod common;

use common::*;
use serde_json::json;

/// A RUN step with a cache mount of this test's own (the `id`: the engine keeps cache mounts across builds).
fn cache_mount(env: &Env) -> String {
    format!("RUN --mount=type=cache,id={},target=/cache sh -c 'echo cache holds $(ls /cache | wc -l) files; touch /cache/run-$(ls /cache | wc -l)'", env.prefix)
}

#[test]
fn a_cache_mount_dockerfile_builds_with_auto_and_reuses_its_cache_after_the_base_changes() {
    if !engine_available() {
        return;
    }
    let env = Env::new("bkcache");
    env.push_base("base:1", "v1");
    env.write("app/Dockerfile", &format!("FROM {}\n{}\n", env.image("base:1"), cache_mount(&env)));
    env.config(json!({}), json!({"app": {"dockerfile": "app", "tags": [env.image("app:latest")]}}));
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let r = report(&out);
    assert_eq!(build_of(&r, "app")["builder"], "buildkit", "{}", r["builds"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("cache holds 0 files"), "the RUN output reaches the debug log: {log}");
    assert!(log.contains("build_step") && log.contains("RUN --mount=type=cache"), "each step starts with a line at info");

    env.push_base("base:1", "v2");
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(report(&out)["outcomes"]["app"]["outcome"], "built");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("cache holds 1 files"), "the second build found the first one's file in the cache mount: {log}");
    assert!(image_id(&env.image("app:latest")).is_some());
}

#[test]
fn under_classic_a_cache_mount_fails_that_build_alone_and_says_to_use_buildkit() {
    if !engine_available() {
        return;
    }
    let env = Env::new("bkclassic");
    env.push_base("base:1", "v1");
    env.write("mount/Dockerfile", &format!("FROM {}\n{}\n", env.image("base:1"), cache_mount(&env)));
    env.write("plain/Dockerfile", &format!("FROM {}\nRUN echo plain\n", env.image("base:1")));
    env.config(
        json!({"builder": "classic"}),
        json!({"mount": {"dockerfile": "mount", "tags": [env.image("mount:latest")]}, "plain": {"dockerfile": "plain", "tags": [env.image("plain:latest")]}}),
    );
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let r = report(&out);
    let mount = &r["outcomes"]["mount"];
    assert_eq!(mount["outcome"], "failed");
    let error = mount["error"].as_str().unwrap();
    assert!(error.contains("requires BuildKit") && error.contains("set \"builder\": \"buildkit\""), "{error}");
    assert_eq!(r["outcomes"]["plain"]["outcome"], "built", "the other build goes on");
    assert_eq!(build_of(&r, "plain")["builder"], "classic");
    let plan = String::from_utf8(env.freshen(&["plan"]).stdout).unwrap();
    assert!(plan.contains("builder classic"), "{plan}");
}

#[test]
fn a_parent_and_its_child_build_in_one_cycle_under_buildkit() {
    if !engine_available() {
        return;
    }
    let env = Env::new("bkchain");
    env.push_base("base:1", "v1");
    env.write("parent/Dockerfile", &format!("FROM {}\nRUN echo parent > /parent\n", env.image("base:1")));
    // The child's base is the parent's tag, which is never pushed: it comes from the local image store.
    env.write("child/Dockerfile", &format!("FROM {}\nRUN cat /parent\n", env.image("parent:latest")));
    env.config(
        json!({"builder": "buildkit"}),
        json!({"parent": {"dockerfile": "parent", "tags": [env.image("parent:latest")]}, "child": {"dockerfile": "child", "tags": [env.image("child:latest")]}}),
    );
    let out = env.freshen(&["--once", "--format", "json"]);
    let r = report(&out);
    assert_eq!(out.status.code(), Some(0), "{}", r["outcomes"]);
    assert_eq!((r["outcomes"]["parent"]["outcome"].as_str(), r["outcomes"]["child"]["outcome"].as_str()), (Some("built"), Some("built")));
    assert!(String::from_utf8_lossy(&out.stderr).contains("#"), "BuildKit progress lines");
    let explain = String::from_utf8(env.freshen(&["explain", "child"]).stdout).unwrap();
    assert!(explain.contains("builder: buildkit (asked for: buildkit)"), "{explain}");
}

#[test]
fn a_base_pushed_between_the_check_and_the_build_is_recorded_as_the_base_used() {
    if !engine_available() {
        return;
    }
    let env = Env::new("bkrace");
    env.push_base("base:1", "v1");
    let base = env.image("base:1");
    // Builds run one at a time, by name: `bbb` starts only once `aaa` has slept.
    env.write("aaa/Dockerfile", &format!("FROM {base}\nRUN sleep 4\n"));
    env.write("bbb/Dockerfile", &format!("FROM {base}\nRUN cp /etc/base-version /used\n"));
    let config = env.config(
        json!({"log_format": "json"}),
        json!({"aaa": {"dockerfile": "aaa", "tags": [env.image("aaa:latest")]}, "bbb": {"dockerfile": "bbb", "tags": [env.image("bbb:latest")]}}),
    );
    let log = env.dir.path().join("once.log");
    let child = freshen_cmd(&config, &["--once", "--format", "json"])
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_event(&log, "build_started", &[("build", "aaa")], std::time::Duration::from_secs(60)));
    assert_eq!(count_events(&log, "build_started", &[("build", "bbb")]), 0, "bbb waits for aaa");
    env.push_base("base:1", "v2");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", std::fs::read_to_string(&log).unwrap());
    let r = report(&out);
    let v1 = r["checks"][0]["new"].as_str().unwrap().to_string();
    let v2 = docker(&["image", "inspect", "-f", "{{index .RepoDigests 0}}", &base]).trim().rsplit_once('@').unwrap().1.to_string();
    assert_ne!(v1, v2);
    assert_eq!(cat(&env.image("bbb:latest"), "/used").trim(), "v2", "bbb was built on the base pushed during the cycle");
    assert_eq!(
        label(&env.image("bbb:latest"), "org.opencontainers.image.base.digest").as_deref(),
        Some(v2.as_str()),
        "and its label says so, not the digest the check saw"
    );
    assert_eq!(label(&env.image("aaa:latest"), "org.opencontainers.image.base.digest").as_deref(), Some(v1.as_str()));

    // The next cycle: aaa was built on v1 and is rebuilt; bbb's record is v2 already.
    let r = report(&env.freshen(&["--once", "--format", "json"]));
    assert_eq!(r["outcomes"]["aaa"]["outcome"], "built", "{}", r["decisions"]);
    assert_eq!(r["decisions"]["bbb"]["status"], "fresh", "{}", r["decisions"]);
}

/// A build whose first stage is `env`'s private `tools:1`, pushed and then removed
/// from the engine: freshen watches only the final stage (scratch), so it pulls
/// nothing, and BuildKit must pull the stage's image itself, with the
/// credentials the session serves. Returns everything freshen wrote.
fn private_stage_build(env: &Env, docker_config: &std::path::Path, password: &str) -> String {
    login_and_push(env, docker_config, "ci", password, "tools:1", "v1");
    env.write("password", &format!("{password}\n"));
    env.write("app/Dockerfile", &format!("FROM {} AS tools\nFROM scratch\nCOPY --from=tools /etc/base-version /v\n", env.image("tools:1")));
    let mut cfg = json!({"options": {"state_file": "state.json"}, "builds": {"app": {"dockerfile": "app", "tags": [env.image("app:latest")], "labels": {"freshen.test": env.prefix}}}});
    cfg["registries"] = json!({env.registry.addr.clone(): {"username": "ci", "password_file": "password"}});
    env.write("config.json", &cfg.to_string());
    env.registry.clear_log();
    let out = env.freshen(&["--once", "--format", "json"]);
    let r = report(&out);
    assert_eq!(build_of(&r, "app")["builder"], "buildkit");
    assert_eq!(r["outcomes"]["app"]["outcome"], "built", "{}", r["outcomes"]);
    // freshen watches only scratch here, so these requests are BuildKit's own, each authorised.
    let pulled = env.registry.requests().iter().any(|l| l.starts_with("GET ") && l.contains("/tools/manifests/sha256:"));
    assert!(pulled, "BuildKit pulled the stage's image from the registry: {:?}", env.registry.requests());
    let produced = [out.stdout, out.stderr, std::fs::read(env.state_path()).unwrap()].concat();
    String::from_utf8_lossy(&produced).into_owned()
}

#[test]
fn buildkit_pulls_a_private_stage_image_behind_htpasswd_with_the_session_s_credentials() {
    if !engine_available() {
        return;
    }
    let (tmp, env) = htpasswd_env("bkbasic", "ci", "s3cret-pw-bk");
    let text = private_stage_build(&env, &tmp.path().join("docker"), "s3cret-pw-bk");
    assert!(!text.contains("s3cret-pw-bk"), "the password leaked");
}

#[test]
fn buildkit_pulls_a_private_stage_image_behind_bearer_tokens_with_the_session_s_credentials() {
    if !engine_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tokens = common::token::TokenServer::start(tmp.path(), "ci", "t0ken-pw-bk");
    let env = Env::new_with("bkbearer", &tokens.registry_auth_yaml());
    let text = private_stage_build(&env, &tmp.path().join("docker"), "t0ken-pw-bk");
    assert!(!text.contains("t0ken-pw-bk"), "the password leaked");
    assert!(tokens.requests().iter().any(|t| t.granted && t.scopes.iter().any(|s| s.contains("/tools:pull"))), "{:?}", tokens.requests());
}
