//! The rows of the option table (`tests/options.rs`) whose effect needs the
//! real engine and a real registry: what is built, tagged, logged, checked
//! and requested.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

#[test]
fn parallelism_runs_independent_builds_at_once() {
    if !engine_available() {
        return;
    }
    let env = Env::new("parallelism");
    env.push_base("base:1", "v1");
    let mut builds = serde_json::Map::new();
    for b in ["one", "two"] {
        env.write(&format!("{b}/Dockerfile"), &format!("FROM {}\nRUN sleep 2\n", env.image("base:1")));
        builds.insert(b.into(), json!({"dockerfile": b, "tags": [env.image(&format!("{b}:latest"))], "no_cache": true}));
    }
    let builds = Value::Object(builds);
    // Overlap is read from the report: a cycle shorter than its builds added up ran them at once.
    let cycle = |options: Value| {
        env.config(options, builds.clone());
        let out = env.freshen(&["--once", "--format", "json"]);
        assert_eq!(out.status.code(), Some(0));
        let r = report(&out);
        let sum: f64 = ["one", "two"].iter().map(|b| r["outcomes"][b]["seconds"].as_f64().unwrap()).sum();
        (r["seconds"].as_f64().unwrap(), sum)
    };
    let (wall, sum) = cycle(json!({"parallelism": 2}));
    assert!(wall < sum, "with parallelism 2 the builds overlap: cycle {wall:.2}s, builds {sum:.2}s");
    let (wall, sum) = cycle(json!({"parallelism": 1, "rebuild_on_start": true}));
    assert!(wall >= sum, "with parallelism 1 they run one after the other: cycle {wall:.2}s, builds {sum:.2}s");
}

#[test]
fn shutdown_grace_bounds_the_wait_for_running_builds() {
    if !engine_available() {
        return;
    }
    let env = Env::new("grace");
    env.push_base("base:1", "v1");
    env.write("slow/Dockerfile", &format!("FROM {}\nRUN sleep 30\n", env.image("base:1")));
    let config = env.config(
        json!({"interval": "1h", "shutdown_grace": "1s", "log_format": "json"}),
        json!({"slow": {"dockerfile": "slow", "tags": [env.image("slow:latest")]}}),
    );
    let log = env.dir.path().join("daemon.log");
    let mut child = spawn_daemon(&config, &log);
    assert!(wait_event(&log, "build_started", &[], Duration::from_secs(30)), "the build started");
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, "-TERM");
    // The build needs 30 s more; a 1 s grace ends the wait long before.
    let exited = wait_until(Duration::from_secs(15), || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(exited, "the daemon exited after the grace period:\n{text}");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(count_events(&log, "grace_over", &[]), 1, "{text}");
    assert_eq!(count_events(&log, "build_finished", &[("build", "slow"), ("status", "cancelled")]), 1, "{text}");
    assert!(image_id(&env.image("slow:latest")).is_none(), "nothing tagged");
    let base = env.image("base:1");
    let running = || !docker(&["ps", "-q", "--filter", &format!("ancestor={base}")]).is_empty();
    assert!(wait_until(Duration::from_secs(10), || !running()), "the build was cancelled on the engine");
}

#[test]
fn state_file_is_where_state_is_written() {
    if !engine_available() {
        return;
    }
    let env = Env::new("statefile");
    std::fs::create_dir(env.dir.path().join("kept")).unwrap();
    one_build(&env, json!({"state_file": "kept/freshen.json"}), json!({}));
    assert_eq!(env.freshen(&["--once"]).status.code(), Some(0));
    let state: Value = serde_json::from_slice(&std::fs::read(env.dir.path().join("kept/freshen.json")).unwrap()).unwrap();
    assert_eq!(state["builds"]["app"]["origin"], "built");
    assert!(!env.state_path().exists() && !env.dir.path().join("freshen-state.json").exists(), "no state anywhere else");
}

/// Rewrites config.json of [`one_build`] with `options`.
fn app_config(env: &Env, options: Value) {
    env.config(options, json!({"app": {"dockerfile": "app", "tags": [env.image("app:latest")]}}));
}

/// Runs `freshen --once` without `RUST_LOG`, so the config alone sets the logging; returns stderr.
fn logged(env: &Env) -> String {
    let out = freshen_cmd(&env.dir.path().join("config.json"), &["--once"]).env_remove("RUST_LOG").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn log_level_and_its_docker_rebuilder_spelling_set_what_is_logged() {
    if !engine_available() {
        return;
    }
    let env = Env::new("loglevel");
    one_build(&env, json!({"log_level": "debug"}), json!({}));
    let debug = logged(&env);
    assert!(debug.contains(" DEBUG ") && debug.contains(" INFO "), "{debug}");
    app_config(&env, json!({"log_level": "warn"}));
    let warn = logged(&env);
    assert!(!warn.contains(" INFO ") && !warn.contains(" DEBUG "), "{warn}");
    // docker-rebuilder's spelling, with Python's numbers: 10 is debug.
    app_config(&env, json!({"log-level": 10}));
    assert!(logged(&env).contains(" DEBUG "));
    app_config(&env, json!({"log-level": "WARNING"}));
    assert!(!logged(&env).contains(" INFO "));
}

#[test]
fn log_format_json_logs_one_object_per_line() {
    if !engine_available() {
        return;
    }
    let env = Env::new("logformat");
    one_build(&env, json!({"log_format": "json"}), json!({}));
    let text = logged(&env);
    let lines: Vec<Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}\n{text}"))).collect();
    assert!(lines.len() >= 2, "{text}");
    assert!(lines.iter().all(|l| l["level"].is_string() && l["fields"].is_object()), "{text}");
    // docker-rebuilder's Python format string is ignored, with a warning that says so.
    app_config(&env, json!({"log-format": "%(asctime)s %(message)s"}));
    let text = logged(&env);
    assert!(text.contains("options.log-format (a Python logging format) is ignored"), "{text}");
}

#[test]
fn watch_stages_all_checks_and_rebuilds_on_a_builder_stage_base_unless_ignored() {
    if !engine_available() {
        return;
    }
    let env = Env::new("stages");
    env.push_base("builder:1", "b1");
    env.push_base("runtime:1", "r1");
    let dockerfile = |ignore: &str| {
        format!(
            "{ignore}FROM {} AS build\nRUN cat /etc/base-version > /built-with\nFROM {}\nCOPY --from=build /built-with /built-with\n",
            env.image("builder:1"),
            env.image("runtime:1")
        )
    };
    env.write("app/Dockerfile", &dockerfile(""));
    // The Dockerfile is edited below (a `# freshen:ignore` comment): with its context
    // watched, that edit alone would rebuild, and this test is about the images.
    let app = json!({"dockerfile": "app", "tags": [env.image("app:latest")], "watch_context": false});
    env.config(json!({"watch_stages": "all"}), json!({"app": app}));
    assert_eq!(env.freshen(&["--once"]).status.code(), Some(0));
    assert_eq!(cat(&env.image("app:latest"), "/built-with"), "b1");

    let head = |repo: &str| format!("HEAD /v2/{}/{repo}/manifests/1 HTTP/1.1", env.prefix);
    env.registry.clear_log();
    assert_eq!(env.freshen(&["--once"]).status.code(), Some(0));
    let mut requests = env.registry.requests();
    requests.sort();
    assert_eq!(requests, [head("builder"), head("runtime")], "one HEAD for each watched image");

    env.push_base("builder:1", "b2");
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let r = report(&out);
    assert_eq!(
        (r["decisions"]["app"]["status"].as_str(), r["decisions"]["app"]["image"].as_str()),
        (Some("changed"), Some(env.image("builder:1").as_str()))
    );
    assert_eq!(cat(&env.image("app:latest"), "/built-with"), "b2", "rebuilt on the builder stage's new base");

    // `# freshen:ignore` on that FROM: it is never asked about, and its change triggers nothing.
    env.write("app/Dockerfile", &dockerfile("# freshen:ignore\n"));
    let built = image_id(&env.image("app:latest")).unwrap();
    env.push_base("builder:1", "b3");
    env.registry.clear_log();
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(env.registry.requests(), [head("runtime")], "no request for the ignored image");
    assert_eq!(report(&out)["decisions"]["app"]["status"], "fresh");
    assert_eq!(image_id(&env.image("app:latest")).unwrap(), built, "nothing rebuilt");
}

/// `127.0.0.1:PORT` written as the IPv4-mapped IPv6 address `[::ffff:7f00:1]:PORT`:
/// the same registry, but not a loopback name, so freshen uses HTTPS unless told otherwise.
fn mapped(addr: &str) -> String {
    format!("[::ffff:7f00:1]:{}", addr.rsplit(':').next().unwrap())
}

/// A dry run of one build `app` on `base` with `registries`; returns the one check of the report.
fn check_through(env: &Env, base: &str, registries: Value) -> (i32, Value) {
    env.write("app/Dockerfile", &format!("FROM {base}\nRUN true\n"));
    let cfg = json!({"options": {"state_file": "state.json"}, "registries": registries,
        "builds": {"app": {"dockerfile": "app", "tags": [env.image("app:latest")], "labels": {"freshen.test": env.prefix}}}});
    env.write("config.json", &cfg.to_string());
    let out = env.freshen(&["--dry-run", "--format", "json"]);
    (out.status.code().unwrap_or(-1), report(&out)["checks"][0].clone())
}

#[test]
fn insecure_reaches_a_plain_http_registry_that_is_not_on_loopback() {
    if !engine_available() {
        return;
    }
    let env = Env::new("insecure");
    env.push_base("base:1", "v1");
    let host = mapped(&env.registry.addr);
    let base = format!("{host}/{}/base:1", env.prefix);
    let (_, check) = check_through(&env, &base, json!({}));
    assert!(check["error"].as_str().unwrap().contains("https://"), "HTTPS to a plain HTTP registry fails: {check}");
    let (code, check) = check_through(&env, &base, json!({host.clone(): {"insecure": true}}));
    assert_eq!(code, 0, "{check}");
    assert!(check["new"].as_str().unwrap().starts_with("sha256:"), "{check}");
    assert!(env.registry.requests().iter().any(|r| r.starts_with(&format!("HEAD /v2/{}/base/manifests/1", env.prefix))));
}

#[test]
fn ca_file_trusts_a_registry_certificate_from_that_ca_and_http2_is_used_where_offered() {
    if !engine_available() {
        return;
    }
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let env = Env::new_full("cafile", "", |dir| {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        std::fs::write(dir.join("ca.pem"), ca_params.self_signed(&ca_key).unwrap().pem()).unwrap();
        let ca = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let names = vec!["::ffff:7f00:1".to_string(), "127.0.0.1".to_string()];
        let cert = CertificateParams::new(names).unwrap().signed_by(&key, &ca).unwrap();
        std::fs::write(dir.join("registry.crt"), cert.pem()).unwrap();
        std::fs::write(dir.join("registry.key"), key.serialize_pem()).unwrap();
        format!(", tls: {{certificate: {}, key: {}}}", dir.join("registry.crt").display(), dir.join("registry.key").display())
    });
    // dockerd reaches 127.0.0.0/8 registries without verifying their certificate.
    env.push_base("base:1", "v1");
    let host = mapped(&env.registry.addr);
    let base = format!("{host}/{}/base:1", env.prefix);
    let (_, check) = check_through(&env, &base, json!({}));
    assert!(check["error"].as_str().unwrap().contains("certificate"), "an unknown CA is refused: {check}");
    env.registry.clear_log();
    let (code, check) = check_through(&env, &base, json!({host: {"ca_file": "ca.pem"}}));
    assert_eq!(code, 0, "{check}");
    assert!(check["new"].as_str().unwrap().starts_with("sha256:"), "{check}");
    // distribution offers HTTP/2 over TLS (ALPN), and freshen takes it: its checks share one connection.
    let requests = env.registry.requests_from("freshen/");
    assert!(!requests.is_empty() && requests.iter().all(|r| r.ends_with(" HTTP/2.0")), "HTTP/2: {requests:?}");
}

#[test]
fn tag_and_build_dir_are_the_docker_rebuilder_spellings() {
    if !engine_available() {
        return;
    }
    let env = Env::new("rebuilder");
    env.push_base("base:1", "v1");
    env.write("docker/Dockerfile", &format!("FROM {}\nCOPY hello.txt /hello.txt\n", env.image("base:1")));
    env.write("src/hello.txt", "from build_dir");
    env.config(json!({}), json!({"app": {"dockerfile": "docker/Dockerfile", "build_dir": "src", "tag": env.image("app:2")}}));
    assert_eq!(env.freshen(&["--once"]).status.code(), Some(0));
    assert_eq!(cat(&env.image("app:2"), "/hello.txt"), "from build_dir");
}

#[test]
fn labels_are_added_to_the_built_image() {
    if !engine_available() {
        return;
    }
    let env = Env::new("labels");
    one_build(&env, json!({}), json!({"labels": {"org.example.team": "payments"}}));
    assert_eq!(env.freshen(&["--once"]).status.code(), Some(0));
    assert_eq!(label(&env.image("app:latest"), "org.example.team").as_deref(), Some("payments"));
    assert!(label(&env.image("app:latest"), "io.freshen.built-from").is_some(), "freshen's own labels as well");
}

#[test]
fn no_cache_rebuilds_every_step() {
    if !engine_available() {
        return;
    }
    let env = Env::new("nocache");
    env.push_base("base:1", "v1");
    env.write("app/Dockerfile", &format!("FROM {}\nRUN date +%s%N > /stamp\n", env.image("base:1")));
    let run = |no_cache: bool| {
        let build = json!({"app": {"dockerfile": "app", "tags": [env.image("app:latest")], "no_cache": no_cache}});
        env.config(json!({"rebuild_on_start": true}), build);
        let out = env.freshen(&["--once", "--format", "json"]);
        assert_eq!(report(&out)["outcomes"]["app"]["outcome"], "built");
        cat(&env.image("app:latest"), "/stamp")
    };
    let first = run(false);
    assert_eq!(run(false), first, "without no_cache the RUN step comes from the cache");
    assert_ne!(run(true), first, "with no_cache it runs again");
}
