//! The daemon's HTTP server, through the binary: a real registry's
//! notifications rebuild in seconds with no polling; Docker Hub's and Harbor's
//! payloads and `/v1/check` trigger checks of exactly what they name; an event
//! storm makes one follow-up cycle.

mod common;

use std::time::{Duration, Instant};

use common::http::{get, post, Daemon, TOKEN};
use common::*;
use serde_json::{json, Value};

const ENVELOPE: &str = "application/vnd.docker.distribution.events.v1+json";

/// The options of a daemon that listens on `addr` with [`TOKEN`] and polls once an hour.
fn listening(env: &Env, addr: &str) -> Value {
    env.write("token", &format!("{TOKEN}\n"));
    json!({"interval": "1h", "log_format": "json", "listen": addr, "token_file": "token", "registry_timeout": "2s"})
}

/// Heads of manifests freshen sent.
fn heads(env: &Env) -> Vec<String> {
    env.registry.requests_from("freshen/").into_iter().filter(|r| r.starts_with("HEAD ") && r.contains("/manifests/")).collect()
}

#[test]
fn a_registry_notification_rebuilds_in_seconds_and_nothing_polls() {
    if !engine_available() {
        return;
    }
    let addr = format!("127.0.0.1:{}", free_port());
    let notifications = format!(
        "notifications:\n  endpoints:\n    - name: freshen\n      url: http://{addr}/v1/hooks/registry\n      headers:\n        Authorization: [\"Bearer {TOKEN}\"]\n      timeout: 2s\n      threshold: 3\n      backoff: 1s\n"
    );
    let env = Env::new_with("hookreg", &notifications);
    env.write("app/Dockerfile", &format!("FROM {}\nRUN cat /etc/base-version > /v\n", env.image("base:1")));
    let config = env.config(listening(&env, &addr), json!({"app": {"dockerfile": "app", "tags": [env.image("app:latest")]}}));
    // The base does not exist yet: the first cycle's check fails, and the push is what builds the app.
    let d = Daemon::start(&config, &addr, None);
    for (version, n) in [("v1", 1), ("v2", 2)] {
        env.registry.clear_log();
        let pushed = Instant::now();
        env.push_base("base:1", version);
        let push_took = pushed.elapsed();
        let built = wait_until(Duration::from_secs(30), || count_events(&d.log, "build_finished", &[("status", "rebuilt")]) == n);
        assert!(built, "the push of {version} rebuilt app:\n{}", d.log_text());
        eprintln!("{version}: pushed in {push_took:?}, rebuilt {:?} after the push began", pushed.elapsed());
        assert_eq!(cat(&env.image("app:latest"), "/v"), version, "{}", d.log_text());
        let at_build = heads(&env).len();
        std::thread::sleep(Duration::from_secs(2));
        let heads = heads(&env);
        let base = format!("HEAD /v2/{}/base/manifests/1 ", env.prefix);
        // One HEAD, or a few more when the event came before the registry moved the tag (server/confirm.rs).
        assert!((1..=6).contains(&heads.len()) && heads.iter().all(|h| h.starts_with(&base)), "HEADs of the base only: {heads:?}");
        assert_eq!(heads.len(), at_build, "no HEAD after the rebuild: nothing polls");
        // v1 is first checked before its tag exists (the engine's image ID stands in), then
        // served by the registry: the same image, so one rebuild, not two.
        let rebuilt = count_events(&d.log, "build_finished", &[("status", "rebuilt")]);
        assert_eq!(rebuilt, n, "one rebuild per push:\n{}", d.log_text());
    }
    let hooks: Vec<Value> = log_events(&d.log).into_iter().filter(|e| e["event"] == "hook_received").collect();
    assert!(hooks.iter().any(|h| h["source"] == "registry" && h["checks"] == 1), "{hooks:?}");
    assert!(hooks.iter().any(|h| h["checks"] == 0 && h["ignored"].as_u64() > Some(0)), "pulls and layers are ignored: {hooks:?}");
}

/// Two builds: `app` on a base in the test registry, `hub` on a Docker Hub image
/// (unreachable here, so its checks fail fast); a daemon listening.
fn app_and_hub(name: &str) -> (Env, Daemon) {
    let env = Env::new(name);
    env.push_base("base:1", "v1");
    env.write("app/Dockerfile", &format!("FROM {}\nRUN true\n", env.image("base:1")));
    env.write("hub/Dockerfile", "FROM debian:bookworm-slim\nRUN true\n");
    let addr = format!("127.0.0.1:{}", free_port());
    let config = env.config(
        listening(&env, &addr),
        json!({
            "app": {"dockerfile": "app", "tags": [env.image("app:latest")]},
            "hub": {"dockerfile": "hub", "tags": [env.image("hub:latest")]}
        }),
    );
    let d = Daemon::start(&config, &addr, None);
    (env, d)
}

/// The images of the last report's checks (`/v1/status`) that were made, not deferred.
fn checked(d: &Daemon) -> Vec<String> {
    let s = get(&d.addr, "/v1/status", TOKEN).json();
    let checks = s["checks"].as_array().cloned().unwrap_or_default();
    checks.iter().filter(|c| c["deferred"] != true).filter_map(|c| Some(c["image"].as_str()?.to_string())).collect()
}

#[test]
fn docker_hub_and_harbor_payloads_and_the_check_endpoint_check_exactly_what_they_name() {
    if !engine_available() {
        return;
    }
    let (env, d) = app_and_hub("hookhub");
    let debian = "docker.io/library/debian:bookworm-slim";
    let base = env.image("base:1");

    let hub = |repo: &str, tag: &str| json!({"push_data": {"tag": tag}, "repository": {"repo_name": repo}}).to_string();
    let a = post(&d.addr, "/v1/hooks/dockerhub", TOKEN, "application/json", hub("library/alpine", "3.20").as_bytes());
    assert_eq!((a.status, a.json()["images"].clone(), a.json()["ignored"].clone()), (202, json!([]), json!(1)), "{}", a.body);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(d.cycles(), 1, "an unwatched image makes no cycle");

    let a = post(&d.addr, "/v1/hooks/dockerhub", TOKEN, "application/json", hub("debian", "bookworm-slim").as_bytes());
    assert_eq!((a.status, a.json()["images"].clone()), (202, json!([debian])), "{}", a.body);
    assert!(wait_until(Duration::from_secs(20), || d.cycles() == 2), "{}", d.log_text());
    assert_eq!(checked(&d), [debian], "only the image named was checked");

    env.registry.clear_log();
    let a = post(&d.addr, "/v1/check", TOKEN, "application/json", br#"{"builds": ["app"]}"#);
    assert_eq!((a.status, a.json()["images"].clone()), (202, json!([base])), "{}", a.body);
    assert!(wait_until(Duration::from_secs(20), || d.cycles() == 3), "{}", d.log_text());
    assert_eq!(checked(&d), std::slice::from_ref(&base));
    assert_eq!(heads(&env).len(), 1, "one HEAD: {:?}", heads(&env));

    let a = post(&d.addr, "/v1/check", TOKEN, "application/json", format!(r#"{{"images": ["{base}"]}}"#).as_bytes());
    assert_eq!(a.status, 202, "{}", a.body);
    assert!(wait_until(Duration::from_secs(20), || d.cycles() == 4), "{}", d.log_text());
    assert_eq!(heads(&env).len(), 2);

    let a = common::http::request(&d.addr, "POST", "/v1/check", &[("Authorization", &format!("Bearer {TOKEN}"))], Some(b""));
    assert_eq!((a.status, a.json()["images"].clone()), (202, json!("all")), "{}", a.body);
    assert!(wait_until(Duration::from_secs(20), || d.cycles() == 5), "{}", d.log_text());
    let mut all = checked(&d);
    all.sort();
    assert_eq!(all, [base.clone(), debian.to_string()], "an empty body checks everything");

    // Harbor's payload: the resource_url names the image; a pull event names none.
    let harbor = |kind: &str, url: &str| {
        json!({"type": kind, "occur_at": 1, "operator": "ci", "event_data": {"resources": [{"digest": "", "tag": "1", "resource_url": url}]}})
            .to_string()
    };
    let a = post(&d.addr, "/v1/hooks/harbor", TOKEN, "application/json", harbor("PULL_ARTIFACT", &base).as_bytes());
    assert_eq!((a.status, a.json()["images"].clone(), a.json()["ignored"].clone()), (202, json!([]), json!(1)), "{}", a.body);
    env.registry.clear_log();
    let a = post(&d.addr, "/v1/hooks/harbor", TOKEN, "application/json", harbor("PUSH_ARTIFACT", &base).as_bytes());
    assert_eq!((a.status, a.json()["images"].clone()), (202, json!([base])), "{}", a.body);
    assert!(wait_until(Duration::from_secs(20), || d.cycles() == 6), "{}", d.log_text());
    assert_eq!(checked(&d), std::slice::from_ref(&base));
    assert_eq!(heads(&env).len(), 1, "one HEAD: {:?}", heads(&env));

    let a = post(&d.addr, "/v1/check", TOKEN, "application/json", br#"{"builds": ["nope"]}"#);
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.json()["error"].as_str().unwrap().contains("builds[0]: no build named \"nope\"; builds: app, hub"), "{}", a.body);

    let status = get(&d.addr, "/v1/status", TOKEN).json();
    assert_eq!(status["cycles"], 6);
    assert_eq!(status["phase"], "idle");
    let next = status["next_check_at"].as_u64().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(next > now + 3000 && next <= now + 3600, "the next full check is an interval after the last: {next} vs {now}");
    assert!(status["builds"].as_array().unwrap().iter().any(|b| b["name"] == "app"), "the report's builds: {status}");
}

#[test]
fn an_event_storm_during_a_build_makes_one_follow_up_cycle_with_one_head_per_image() {
    if !engine_available() {
        return;
    }
    let env = Env::new("storm");
    let mut builds = serde_json::Map::new();
    for b in ["b1", "b2", "b3"] {
        env.push_base(&format!("{b}:1"), b);
        env.write(&format!("{b}-app/Dockerfile"), &format!("FROM {}\nRUN true\n", env.image(&format!("{b}:1"))));
        builds.insert(format!("{b}-app"), json!({"dockerfile": format!("{b}-app"), "tags": [env.image(&format!("{b}-app:latest"))]}));
    }
    env.write("slow/Dockerfile", &format!("FROM {}\nRUN sleep 4\n", env.image("b1:1")));
    builds.insert("slow".into(), json!({"dockerfile": "slow", "tags": [env.image("slow:latest")]}));
    let addr = format!("127.0.0.1:{}", free_port());
    let config = env.config(listening(&env, &addr), Value::Object(builds));
    let d = Daemon::spawn(&config, &addr, None);
    let log = d.log.clone();
    assert!(wait_event(&log, "build_started", &[("build", "slow")], Duration::from_secs(60)), "{}", std::fs::read_to_string(&log).unwrap());
    env.registry.clear_log();
    let event = |b: &str| json!({"action": "push", "target": {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "repository": format!("{}/{b}", env.prefix), "tag": "1"}, "request": {"host": env.registry.addr}});
    for i in 0..20 {
        let events: Vec<Value> = (0..10).map(|j| event(["b1", "b2", "b3"][(i * 10 + j) % 3])).collect();
        let a = post(&addr, "/v1/hooks/registry", TOKEN, ENVELOPE, json!({ "events": events }).to_string().as_bytes());
        assert_eq!(a.status, 202, "{}", a.body);
    }
    assert_eq!(count_events(&log, "cycle_finished", &[]), 0, "the 200 events came while the first cycle built");
    assert!(
        wait_until(Duration::from_secs(60), || count_events(&log, "cycle_finished", &[]) == 2),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(count_events(&log, "cycle_finished", &[]), 2, "exactly one follow-up cycle");
    let mut sent = heads(&env);
    sent.sort();
    let expected: Vec<String> = ["b1", "b2", "b3"].iter().map(|b| format!("HEAD /v2/{}/{b}/manifests/1 HTTP/1.1", env.prefix)).collect();
    assert_eq!(sent, expected, "one HEAD per image");

    // An event whose digest the tag never names (a registry that notifies before it moves the tag,
    // forever): checked again 5 times over about 3 s, then given up with a warning.
    env.registry.clear_log();
    let mut e = event("b1");
    e["target"]["digest"] = format!("sha256:{}", "0".repeat(64)).into();
    let a = post(&addr, "/v1/hooks/registry", TOKEN, ENVELOPE, json!({ "events": [e] }).to_string().as_bytes());
    assert_eq!(a.status, 202, "{}", a.body);
    assert!(wait_event(&log, "hook_digest_not_seen", &[], Duration::from_secs(30)), "{}", std::fs::read_to_string(&log).unwrap());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(heads(&env).len(), 6, "the check and 5 more: {:?}", heads(&env));
}
