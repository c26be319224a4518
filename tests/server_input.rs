//! The HTTP server against bad input, and what it reports: every bad request
//! gets a clear 4xx in JSON, costs no registry request and never stops the
//! daemon; `/metrics` parses and matches what the cycles did; `/readyz`
//! follows the engine; the server's options are checked at load.

mod common;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use common::http::{self, post, request, Daemon, TOKEN};
use common::sockproxy::SocketProxy;
use common::*;
use serde_json::{json, Value};

#[test]
fn bad_requests_get_a_clear_4xx_cost_no_registry_request_and_the_daemon_goes_on() {
    if !engine_available() {
        return;
    }
    let env = Env::new("badhttp");
    let addr = format!("127.0.0.1:{}", free_port());
    env.write("token", TOKEN);
    let config = one_build(&env, json!({"interval": "1h", "log_format": "json", "listen": addr, "token_file": "token"}), json!({}));
    let mut d = Daemon::start(&config, &addr, None);
    let log = d.log.clone();
    env.registry.clear_log();
    let hook = "/v1/hooks/registry";
    let envelope = "application/vnd.docker.distribution.events.v1+json";

    let a = request(&addr, "POST", hook, &[("Content-Type", envelope)], Some(b"{}"));
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(a.header("www-authenticate"), Some("Bearer realm=\"freshen\""));
    assert!(a.json()["error"].as_str().unwrap().starts_with("no Authorization header"), "{}", a.body);
    let a = post(&addr, hook, "wrong-token-W1DGET", envelope, b"{}");
    assert_eq!((a.status, a.json()["error"].as_str().unwrap().starts_with("the token is wrong")), (401, true), "{}", a.body);
    let a = request(&addr, "GET", "/metrics", &[("Authorization", "Basic dXNlcjpwdw==")], None);
    assert_eq!(a.status, 401, "{}", a.body);

    let a = post(&addr, hook, TOKEN, "text/plain", b"{}");
    assert_eq!(a.status, 415, "{}", a.body);
    assert!(a.json()["error"].as_str().unwrap().contains("send application/vnd.docker.distribution.events.v1+json"), "{}", a.body);

    let a = post(&addr, hook, TOKEN, envelope, b"{\"events\": [\n  {\"action\": \"push\", \"target\": {\"tag\": 7}}]}");
    assert_eq!(a.status, 400, "{}", a.body);
    let e = a.json()["error"].as_str().unwrap().to_string();
    assert!(e.contains("at events[0].target.tag (line 2, column 40, byte 52 of the body)"), "{e}");
    let a = post(&addr, "/v1/check", TOKEN, "application/json", b"{\"images\": [\"UPPER/case\"]}");
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.json()["error"].as_str().unwrap().contains("images[0]: invalid image reference"), "{}", a.body);

    let big = vec![b' '; 1024 * 1024 + 1];
    let a = post(&addr, hook, TOKEN, envelope, &big);
    assert_eq!(a.status, 413, "{}", a.body);
    let mut chunked = format!("POST {hook} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: {envelope}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").into_bytes();
    for _ in 0..17 {
        chunked.extend_from_slice(format!("{:x}\r\n", 65536).as_bytes());
        chunked.extend_from_slice(&[b' '; 65536]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let a = http::raw(&addr, &chunked);
    assert_eq!(a.status, 413, "a chunked body without a length is cut at 1 MiB too: {}", a.body);

    let a = request(&addr, "GET", hook, &[("Authorization", &format!("Bearer {TOKEN}"))], None);
    assert_eq!((a.status, a.json()["error"].clone()), (405, json!("/v1/hooks/registry takes POST")));
    let a = request(&addr, "GET", "/nope", &[], None);
    assert_eq!(a.status, 404);
    assert!(a.json()["error"].as_str().unwrap().contains("endpoints: /healthz"), "{}", a.body);

    // Slow clients: a body that stops coming, and headers that never end.
    let slow = |sent: String| {
        let addr = addr.clone();
        std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.write_all(sent.as_bytes()).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let started = Instant::now();
            let a = http::read_answer(&mut s);
            (a, started.elapsed())
        })
    };
    let slow_body = slow(format!("POST /v1/check HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"images\""));
    let slow_head = slow("POST /v1/check HTTP/1.1\r\nHost: x\r\n".to_string());
    let (a, took) = slow_body.join().unwrap();
    assert_eq!(a.status, 408, "{}", a.body);
    assert!(a.json()["error"].as_str().unwrap().contains("did not arrive within 10s"), "{}", a.body);
    assert!(took < Duration::from_secs(20), "{took:?}");
    let (a, took) = slow_head.join().unwrap();
    assert!(took < Duration::from_secs(20), "headers that never end are cut after the header timeout: {took:?} {a:?}");

    assert_eq!(request(&addr, "GET", "/healthz", &[], None).status, 200);
    assert!(d.child.try_wait().unwrap().is_none(), "the daemon runs on");
    assert_eq!(count_events(&log, "cycle_finished", &[]), 1, "no bad request made a cycle");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("W1DGET") && !text.contains(TOKEN), "no token in the log");
    assert_eq!(count_events(&log, "unauthorized", &[]), 3, "each refusal is logged: {text}");
    let sent: Vec<String> = env.registry.requests();
    assert!(sent.is_empty(), "no registry request: {sent:?}");
}

/// The value of the sample `name` whose labels include `labels`.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape.samples.iter().find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))).map(|s| match s.value {
        prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
        _ => f64::NAN,
    })
}

#[test]
fn metrics_parse_and_match_what_the_cycles_did_and_readyz_follows_the_engine() {
    if !engine_available() {
        return;
    }
    let env = Env::new("metrics");
    let addr = format!("127.0.0.1:{}", free_port());
    let options = json!({"interval": "1h", "log_format": "json", "listen": addr, "allow_unauthenticated_loopback": true});
    let config = one_build(&env, options, json!({}));
    let sock = env.dir.path().join("engine.sock");
    let front = SocketProxy::start(&sock, Path::new("/var/run/docker.sock"));
    let d = Daemon::start(&config, &addr, Some(&format!("unix://{}", sock.display())));
    let log = d.log.clone();
    let a = request(&addr, "POST", "/v1/check", &[("Content-Type", "application/json")], Some(b"{}"));
    assert_eq!(a.status, 202, "no token needed on loopback with allow_unauthenticated_loopback: {}", a.body);
    assert!(wait_until(Duration::from_secs(30), || count_events(&log, "cycle_finished", &[]) == 2));

    let a = request(&addr, "GET", "/metrics", &[], None);
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.header("content-type").unwrap().starts_with("application/openmetrics-text"), "{:?}", a.headers);
    let scrape = prometheus_parse::Scrape::parse(a.body.lines().map(|l| Ok(l.to_string()))).unwrap();
    let registry = env.registry.addr.as_str();
    let heads = env.registry.requests_from("freshen/").iter().filter(|r| r.starts_with("HEAD ")).count();
    assert_eq!(heads, 2, "one HEAD a cycle");
    let m =
        |name: &str, labels: &[(&str, &str)]| sample(&scrape, name, labels).unwrap_or_else(|| panic!("{name} {labels:?} in\n{}", a.body));
    assert_eq!(m("freshen_registry_requests_total", &[("registry", registry), ("method", "HEAD"), ("code", "200")]), heads as f64);
    // Two inputs: the base, and the build's context.
    assert_eq!(m("freshen_checks_total", &[("result", "new")]), 2.0);
    assert_eq!(m("freshen_checks_total", &[("result", "unchanged")]), 2.0);
    assert_eq!(m("freshen_builds_total", &[("status", "rebuilt")]), 1.0);
    assert_eq!(m("freshen_build_duration_seconds_count", &[]), 1.0);
    assert_eq!(m("freshen_cycle_duration_seconds_count", &[]), 2.0);
    assert_eq!(m("freshen_triggers_total", &[("source", "api")]), 1.0);
    assert_eq!(m("freshen_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((now - m("freshen_last_cycle_timestamp_seconds", &[])).abs() < 60.0);
    assert!((now - m("freshen_build_last_success_timestamp_seconds", &[("build", "app")])).abs() < 120.0);
    assert!(!a.body.contains(&env.prefix), "no image reference or tag is a label");

    let ready = || request(&addr, "GET", "/readyz", &[], None);
    assert_eq!(ready().status, 200, "{}", ready().body);
    front.refuse(true);
    std::thread::sleep(Duration::from_millis(1100));
    let a = ready();
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(a.json()["reason"].as_str().unwrap().starts_with("the engine does not answer"), "{}", a.body);
    assert_eq!(request(&addr, "GET", "/healthz", &[], None).status, 200, "alive all the same");
    front.refuse(false);
    assert!(wait_until(Duration::from_secs(5), || ready().status == 200), "ready again once the engine answers");
}

#[test]
fn the_server_options_are_checked_at_load_and_once_never_listens() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), "FROM busybox\n").unwrap();
    std::fs::write(dir.path().join("short"), "abc\n").unwrap();
    let validate = |options: Value| {
        let config = dir.path().join("config.json");
        std::fs::write(&config, json!({"options": options, "builds": {"a": {"dockerfile": ".", "tags": ["x/a"]}}}).to_string()).unwrap();
        let out = freshen_cmd(&config, &["validate"]).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (code, err) = validate(json!({"listen": "0.0.0.0:9780"}));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/options/listen: listen without token_file"), "{err}");
    let (code, err) = validate(json!({"listen": "0.0.0.0:9780", "allow_unauthenticated_loopback": true}));
    assert_eq!(code, Some(2));
    assert!(err.contains("0.0.0.0:9780 is not a loopback address"), "{err}");
    let (code, err) = validate(json!({"listen": "127.0.0.1:9780", "token_file": "short"}));
    assert_eq!(code, Some(2));
    assert!(err.contains("/options/token_file: the token in short must be one line of at least 16 characters"), "{err}");
    let (code, err) = validate(json!({"listen": "localhost:9780", "allow_unauthenticated_loopback": true}));
    assert_eq!(code, Some(2));
    assert!(err.contains("\"localhost:9780\" is not an address"), "{err}");
    assert_eq!(validate(json!({"listen": "[::1]:9780", "allow_unauthenticated_loopback": true})).0, Some(0));

    if !engine_available() {
        return;
    }
    let env = Env::new("oncelisten");
    let addr = format!("127.0.0.1:{}", free_port());
    let config = one_build(&env, json!({"listen": addr, "allow_unauthenticated_loopback": true, "log_format": "json"}), json!({}));
    let out = freshen_cmd(&config, &["--once"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let log = env.dir.path().join("once.log");
    std::fs::write(&log, &out.stderr).unwrap();
    assert_eq!(count_events(&log, "listening", &[]), 0, "--once never listens");
}
