//! Registry checks against the real registry binary, some through the
//! test-only proxy that counts requests and injects faults.

mod common;

use std::process::Command;

use common::proxy::Fault;
use common::token::TokenServer;
use common::*;
use serde_json::{json, Value};

const MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
const MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

#[test]
fn a_no_change_cycle_over_n_distinct_bases_sends_exactly_n_heads() {
    if !engine_available() {
        return;
    }
    let env = Env::new("nheads");
    for b in ["a", "b", "c"] {
        env.push_base(&format!("{b}:1"), b);
    }
    let mut builds = serde_json::Map::new();
    for (name, base) in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b"), ("c1", "c")] {
        env.write(&format!("{name}/Dockerfile"), &format!("FROM {}\nRUN echo {name} > /n\n", env.image(&format!("{base}:1"))));
        builds.insert(name.into(), json!({"dockerfile": name, "tags": [env.image(&format!("{name}:latest"))]}));
    }
    env.config(json!({"parallelism": 2, "check_concurrency": 2}), Value::Object(builds));
    assert_eq!(env.freshen(&["--once"]).status.code(), Some(0));
    env.registry.clear_log();
    assert_eq!(env.freshen(&["--once"]).status.code(), Some(0));
    let mut requests = env.registry.requests();
    requests.sort();
    let want: Vec<String> = ["a", "b", "c"].iter().map(|b| format!("HEAD /v2/{}/{b}/manifests/1 HTTP/1.1", env.prefix)).collect();
    assert_eq!(requests, want, "5 builds on 3 bases: 3 HEADs, nothing else");
}

/// Digest and size of the manifest at `tag`, by HEAD.
fn manifest(env: &Env, repo: &str, tag: &str) -> (String, u64) {
    let out = Command::new("curl")
        .args([
            "-sfI",
            "-H",
            &format!("Accept: {MANIFEST_V2}"),
            &format!("http://{}/v2/{}/{repo}/manifests/{tag}", env.registry.addr, env.prefix),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    let header = |h: &str| text.lines().find_map(|l| l.strip_prefix(h)).map(|v| v.trim().to_string()).unwrap();
    (header("docker-content-digest:"), header("content-length:").parse().unwrap())
}

/// Pushes a manifest list at `repo:tag` whose children are the manifests at `amd64_tag` and `arm64_tag`.
fn push_index(env: &Env, repo: &str, tag: &str, amd64_tag: &str, arm64_tag: &str) {
    let (a, asz) = manifest(env, repo, amd64_tag);
    let (r, rsz) = manifest(env, repo, arm64_tag);
    let index = json!({"schemaVersion": 2, "mediaType": MANIFEST_LIST, "manifests": [
        {"mediaType": MANIFEST_V2, "digest": a, "size": asz, "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": MANIFEST_V2, "digest": r, "size": rsz, "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}}
    ]});
    let url = format!("http://{}/v2/{}/{repo}/manifests/{tag}", env.registry.addr, env.prefix);
    let status = Command::new("curl")
        .args(["-sf", "-X", "PUT", "-H", &format!("Content-Type: {MANIFEST_LIST}"), "--data-binary", &index.to_string(), &url])
        .status()
        .unwrap();
    assert!(status.success(), "PUT index");
}

#[test]
fn a_multi_platform_base_changed_only_for_another_platform_is_not_a_change() {
    if !engine_available() {
        return;
    }
    let env = Env::new("multiarch");
    env.push_base("base:amd64-1", "amd64-v1");
    env.push_base("base:arm64-1", "arm64-v1");
    push_index(&env, "base", "1", "amd64-1", "arm64-1");
    env.write("app/Dockerfile", &format!("FROM {}\nRUN cat /etc/base-version > /built-on\n", env.image("base:1")));
    env.config(json!({}), json!({"app": {"dockerfile": "app", "tags": [env.image("app:latest")]}}));
    assert_eq!(env.freshen(&["--once"]).status.code(), Some(0));
    assert_eq!(cat(&env.image("app:latest"), "/built-on"), "amd64-v1", "the engine's platform was pulled");
    let first = image_id(&env.image("app:latest")).unwrap();

    // Only the other platform changes: the index digest moves, the amd64 child does not.
    env.push_base("base:arm64-2", "arm64-v2");
    push_index(&env, "base", "1", "amd64-1", "arm64-2");
    env.registry.clear_log();
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(report(&out)["decisions"]["app"]["status"], "fresh");
    assert_eq!(image_id(&env.image("app:latest")).unwrap(), first, "no rebuild");
    let requests = env.registry.requests();
    assert_eq!(requests.iter().filter(|r| r.starts_with("HEAD")).count(), 1);
    assert_eq!(
        requests.iter().filter(|r| r.starts_with("GET") && r.contains("/manifests/sha256:")).count(),
        1,
        "one index GET: {requests:?}"
    );
    let state: Value = serde_json::from_slice(&std::fs::read(env.state_path()).unwrap()).unwrap();
    let (index_digest, _) = {
        let out = Command::new("curl")
            .args([
                "-sfI",
                "-H",
                &format!("Accept: {MANIFEST_LIST}"),
                &format!("http://{}/v2/{}/base/manifests/1", env.registry.addr, env.prefix),
            ])
            .output()
            .unwrap();
        let t = String::from_utf8_lossy(&out.stdout).to_lowercase();
        (t.lines().find_map(|l| l.strip_prefix("docker-content-digest:")).unwrap().trim().to_string(), 0)
    };
    assert_eq!(
        state["inputs"][format!("image:{}", env.image("base:1"))]["digest"],
        index_digest.as_str(),
        "the new index digest is recorded"
    );

    env.registry.clear_log();
    assert_eq!(env.freshen(&["--once"]).status.code(), Some(0));
    assert_eq!(env.registry.requests().len(), 1, "the next cycle costs one HEAD again: {:?}", env.registry.requests());

    // Now this platform changes: rebuilt.
    env.push_base("base:amd64-2", "amd64-v2");
    push_index(&env, "base", "1", "amd64-2", "arm64-2");
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(report(&out)["decisions"]["app"]["status"], "changed");
    assert_eq!(cat(&env.image("app:latest"), "/built-on"), "amd64-v2");
}

#[test]
fn a_base_built_here_then_pushed_is_the_same_image_and_not_rebuilt_again() {
    if !engine_available() {
        return;
    }
    let env = Env::new("localpush");
    env.build_base("base:1", "v1");
    env.write("app/Dockerfile", &format!("FROM {}\nRUN cat /etc/base-version > /v\n", env.image("base:1")));
    env.config(json!({}), json!({"app": {"dockerfile": "app", "tags": [env.image("app:latest")]}}));
    // Not in its registry yet: the engine's image ID stands in, and the app is built on it.
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(report(&out)["decisions"]["app"]["status"], "missing");
    let built = image_id(&env.image("app:latest")).unwrap();

    // The same image pushed: its manifest's config digest is that ID, so nothing changed.
    docker(&["push", "-q", &env.image("base:1")]);
    env.registry.clear_log();
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(report(&out)["decisions"]["app"]["status"], "fresh", "{}", report(&out));
    assert_eq!(image_id(&env.image("app:latest")).unwrap(), built, "no rebuild");
    let requests = env.registry.requests_from("freshen/");
    let gets = requests.iter().filter(|r| r.starts_with("GET") && r.contains("/base/manifests/sha256:")).count();
    assert_eq!((requests.len(), gets), (2, 1), "one HEAD and one manifest GET, once: {requests:?}");
    let state: Value = serde_json::from_slice(&std::fs::read(env.state_path()).unwrap()).unwrap();
    let digest = registry_digest(&env.image("base:1")).unwrap();
    assert_eq!(state["builds"]["app"]["built_from"][format!("image:{}", env.image("base:1"))], digest.as_str(), "{state}");

    env.registry.clear_log();
    assert_eq!(env.freshen(&["--once"]).status.code(), Some(0));
    assert_eq!(env.registry.requests_from("freshen/").len(), 1, "then one HEAD a cycle: {:?}", env.registry.requests());

    // Another image pushed under the tag is a change.
    env.push_base("base:1", "v2");
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(report(&out)["decisions"]["app"]["status"], "changed");
    assert_eq!(cat(&env.image("app:latest"), "/v"), "v2");
}

#[test]
fn transient_failures_are_retried_within_the_cycle() {
    if !engine_available() {
        return;
    }
    let (env, proxy) = built_behind_proxy("retry", &["base"]);
    let built = image_id(&env.image("base-app:latest")).unwrap();

    proxy.clear();
    proxy.fail_next(Fault::Status(500, None));
    proxy.fail_next(Fault::Drop);
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "500 then a dropped connection, then success");
    assert_eq!(proxy.count("HEAD"), 3);
    assert_eq!(report(&out)["decisions"]["base-app"]["status"], "fresh");

    // A registry that stays down: the check fails, nothing is rebuilt, state keeps the last digest.
    let before: Value = image_records(&serde_json::from_slice(&std::fs::read(env.state_path()).unwrap()).unwrap());
    proxy.fail_always(Some(Fault::Status(503, None)));
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(report(&out)["decisions"]["base-app"]["status"], "check_failed");
    assert_eq!(image_id(&env.image("base-app:latest")).unwrap(), built);
    let after: Value = image_records(&serde_json::from_slice(&std::fs::read(env.state_path()).unwrap()).unwrap());
    assert_eq!(before, after, "state unchanged by a failed check");

    // 4xx is not retried.
    proxy.clear();
    proxy.fail_always(Some(Fault::Status(404, None)));
    assert_eq!(env.freshen(&["--once"]).status.code(), Some(1));
    assert_eq!(proxy.count("HEAD"), 1);
}

#[test]
fn checks_run_check_concurrency_at_a_time_and_give_up_after_registry_timeout() {
    if !engine_available() {
        return;
    }
    let (env, proxy) = built_behind_proxy("concurrency", &["one", "two", "three", "four", "five", "six"]);

    // Slow answers, so that every request the checker lets out is in flight at once.
    proxy.set_latency(std::time::Duration::from_millis(500));
    for concurrency in [1, 3] {
        set_option(&env, "check_concurrency", json!(concurrency));
        proxy.clear();
        assert_eq!(env.freshen(&["--once", "--dry-run"]).status.code(), Some(0));
        assert_eq!(proxy.count("HEAD"), 6);
        assert_eq!(proxy.max_in_flight(), concurrency, "at most check_concurrency at once, and that many");
    }

    // Answers slower than registry_timeout: each attempt gives up, is retried, and the check fails.
    proxy.set_latency(std::time::Duration::from_secs(3));
    set_option(&env, "registry_timeout", json!("1s"));
    set_option(&env, "check_concurrency", json!(8));
    proxy.clear();
    let out = env.freshen(&["--once", "--format", "json", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1));
    let r = report(&out);
    let errors: Vec<&str> = r["checks"].as_array().unwrap().iter().filter_map(|c| c["error"].as_str()).collect();
    assert_eq!(errors.len(), 6);
    assert!(errors.iter().all(|e| e.contains("did not answer within 1s")), "{errors:?}");
    let mut images = r["checks"].as_array().unwrap().iter().filter(|c| c["image"].is_string());
    assert!(images.clone().count() == 6 && images.all(|c| c["kind"] == "timed_out"), "a timeout is told apart from an outage");
    assert_eq!(proxy.count("HEAD"), 18, "a timeout is transient: 3 attempts per base");
}

#[test]
fn check_concurrency_bounds_each_registry_on_its_own() {
    if !engine_available() {
        return;
    }
    // Two registries to freshen (two hosts), one behind the other: `a` sees every request.
    let env = Env::new("perregistry");
    let a = common::proxy::Proxy::start(&env.registry.addr);
    let b = common::proxy::Proxy::start(&a.addr);
    let mut builds = serde_json::Map::new();
    for (proxy, base) in [(&a, "one"), (&a, "two"), (&a, "three"), (&b, "four"), (&b, "five"), (&b, "six")] {
        env.push_base(&format!("{base}:1"), base);
        env.write(&format!("{base}/Dockerfile"), &format!("FROM {}/{}/{base}:1\n", proxy.addr, env.prefix));
        builds.insert(base.to_string(), json!({"dockerfile": base, "tags": [env.image(&format!("{base}-app:latest"))]}));
    }
    env.config(json!({"check_concurrency": 1}), Value::Object(builds));
    a.set_latency(std::time::Duration::from_millis(500));
    let out = env.freshen(&["--once", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!((a.count("HEAD"), b.count("HEAD")), (6, 3));
    assert_eq!(b.max_in_flight(), 1, "one at a time to each registry");
    assert_eq!(a.max_in_flight(), 2, "and the two registries at once");
}

#[test]
fn a_429_stops_requests_to_that_registry_for_the_cycle() {
    if !engine_available() {
        return;
    }
    let (env, proxy) = built_behind_proxy("ratelimit", &["one", "two", "three"]);

    proxy.clear();
    proxy.fail_always(Some(Fault::Status(429, Some(30))));
    set_option(&env, "check_concurrency", json!(1));
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(proxy.requests().len(), 1, "after the 429 no further request goes to that registry: {:?}", proxy.requests());
    let r = report(&out);
    let errors: Vec<&str> = r["checks"].as_array().unwrap().iter().filter_map(|c| c["error"].as_str()).collect();
    assert_eq!(errors.len(), 3);
    assert!(errors.iter().all(|e| e.contains("rate limiting")), "{errors:?}");
}

#[test]
fn a_registry_with_htpasswd_auth_is_checked_with_configured_credentials_that_never_leak() {
    if !engine_available() {
        return;
    }
    let (tmp, env) = htpasswd_env("auth", "ci", "s3cret-pw-xyz");
    let docker_config = tmp.path().join("docker");
    login_and_push(&env, &docker_config, "ci", "s3cret-pw-xyz", "base:1", "v1");

    app_with_credentials(&env, "ci", "s3cret-pw-xyz");
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "checked and pulled with the configured credentials");
    assert!(image_id(&env.image("app:latest")).is_some());
    let out2 = env.freshen(&["--once", "--format", "json", "--dry-run"]);
    assert_eq!(report(&out2)["decisions"]["app"]["status"], "fresh");
    let produced = [out.stdout, out.stderr, out2.stdout, out2.stderr, std::fs::read(env.state_path()).unwrap()].concat();
    let text = String::from_utf8_lossy(&produced);
    assert!(!text.contains("s3cret-pw-xyz"), "the password leaked");
    use base64::Engine as _;
    assert!(!text.contains(&base64::engine::general_purpose::STANDARD.encode("ci:s3cret-pw-xyz")), "the Authorization header leaked");
}

/// Writes config.json with one build `app` on `base:1` and credentials for the
/// test registry in its `registries` section (the password in a file); returns the config.
fn app_with_credentials(env: &Env, user: &str, password: &str) -> Value {
    env.write("password", &format!("{password}\n"));
    env.write("app/Dockerfile", &format!("FROM {}\nRUN true\n", env.image("base:1")));
    let mut cfg = json!({"options": {"state_file": "state.json"}, "builds": {"app": {"dockerfile": "app", "tags": [env.image("app:latest")], "labels": {"freshen.test": env.prefix}}}});
    cfg["registries"] = json!({env.registry.addr.clone(): {"username": user, "password_file": "password"}});
    env.write("config.json", &cfg.to_string());
    cfg
}

#[test]
fn a_bearer_token_registry_is_checked_with_a_token_got_with_configured_credentials() {
    if !engine_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tokens = TokenServer::start(tmp.path(), "ci", "t0ken-pw-xyz");
    let env = Env::new_with("bearer", &tokens.registry_auth_yaml());
    let docker_config = tmp.path().join("docker");
    login_and_push(&env, &docker_config, "ci", "t0ken-pw-xyz", "base:1", "v1");

    let mut cfg = app_with_credentials(&env, "ci", "t0ken-pw-xyz");
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "checked with a token, and the engine pulled with the same credentials");
    assert_eq!(cat(&env.image("app:latest"), "/etc/base-version"), "v1");

    // A check alone: one token request for pull on the base's repository, then the HEAD with the token.
    let before = tokens.requests().len();
    env.registry.clear_log();
    let out2 = env.freshen(&["--once", "--format", "json", "--dry-run"]);
    assert_eq!(report(&out2)["decisions"]["app"]["status"], "fresh");
    let asked: Vec<_> = tokens.requests().split_off(before);
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(asked[0].granted);
    assert_eq!(asked[0].scopes, vec![format!("repository:{}/base:pull", env.prefix)]);
    assert_eq!(asked[0].service.as_deref(), Some("freshen-test-registry"));
    let heads: Vec<String> = env.registry.requests().into_iter().filter(|r| r.starts_with("HEAD")).collect();
    assert_eq!(heads.len(), 2, "one refused without a token, one answered with it: {heads:?}");

    // A change behind the token is seen and rebuilt.
    login_and_push(&env, &docker_config, "ci", "t0ken-pw-xyz", "base:1", "v2");
    let out3 = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(report(&out3)["decisions"]["app"]["status"], "changed");
    assert_eq!(cat(&env.image("app:latest"), "/etc/base-version"), "v2");

    // Without credentials the token server refuses: the check fails, nothing is built.
    cfg.as_object_mut().unwrap().remove("registries");
    env.write("config.json", &cfg.to_string());
    let built = image_id(&env.image("app:latest"));
    let out4 = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out4.status.code(), Some(1));
    let r4 = report(&out4);
    assert_eq!(r4["decisions"]["app"]["status"], "check_failed");
    let error = r4["checks"][0]["error"].as_str().unwrap();
    assert!(error.contains("token endpoint answered 401"), "{error}");
    assert_eq!(image_id(&env.image("app:latest")), built);

    let produced = [out, out2, out3, out4].into_iter().flat_map(|o| [o.stdout, o.stderr]).collect::<Vec<_>>().concat();
    let text = String::from_utf8_lossy(&[produced, std::fs::read(env.state_path()).unwrap()].concat()).to_string();
    assert!(!text.contains("t0ken-pw-xyz"), "the password leaked");
    use base64::Engine as _;
    assert!(!text.contains(&base64::engine::general_purpose::STANDARD.encode("ci:t0ken-pw-xyz")), "the basic Authorization leaked");
    let issued = tokens.issued();
    assert!(!issued.is_empty());
    assert!(issued.iter().all(|t| !text.contains(t.as_str())), "a bearer token leaked");
}

#[test]
fn under_the_rate_limit_reserve_a_registry_is_checked_less_often() {
    if !engine_available() {
        return;
    }
    let (env, proxy) = built_behind_proxy("reserve", &["base"]);
    proxy.set_response_headers(&["RateLimit-Limit: 100;w=3600", "RateLimit-Remaining: 5;w=3600"]);
    assert_eq!(env.freshen(&["--once"]).status.code(), Some(0));
    let state: Value = serde_json::from_slice(&std::fs::read(env.state_path()).unwrap()).unwrap();
    let kept = &state["registries"][proxy.addr.as_str()];
    assert_eq!((kept["limit"].as_u64(), kept["remaining"].as_u64(), kept["window_secs"].as_u64()), (Some(100), Some(5), Some(3600)));

    // 5 left, under the default reserve of 10: the 3600 s window is shared out,
    // one check per 600 s, so a check right after is deferred and sends nothing.
    env.push_base("base:1", "v2");
    proxy.clear();
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(proxy.requests().len(), 0, "{:?}", proxy.requests());
    let r = report(&out);
    assert_eq!(r["checks"][0]["deferred"], true);
    assert_eq!(r["decisions"]["base-app"]["status"], "fresh", "the last digest stands while deferred");
    let text = String::from_utf8(env.freshen(&["--once", "--dry-run"]).stdout).unwrap();
    assert!(text.contains("(deferred: few requests left in the registry's rate limit"), "the text report says so: {text}");

    // With no reserve the registry is checked at once, and the change is found.
    set_option(&env, "rate_limit_reserve", json!(0));
    let out = env.freshen(&["--once", "--format", "json", "--dry-run"]);
    assert_eq!(proxy.count("HEAD"), 1);
    assert_eq!(report(&out)["decisions"]["base-app"]["status"], "changed");
}
