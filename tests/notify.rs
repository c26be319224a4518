//! Notifications through the binary, on the real engine and registry, to a
//! loopback webhook receiver and a command: the payload, its GitHub-style
//! signature, a delivery retried after a 500, the command's stdin, no secret
//! in any payload, and `check_failed` sent once when a check starts failing
//! and once when it recovers, while a receiver that is down is only logged.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::proxy::{Fault, Proxy};
use common::*;
use serde_json::{json, Value};

/// One request the receiver got: its headers (lower-case names) and body.
type Delivery = (BTreeMap<String, String>, Vec<u8>);

/// A webhook receiver on loopback that answers 500 to its first request and 200 after.
fn receiver() -> (TcpServer, Arc<Mutex<Vec<Delivery>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let server = TcpServer::start(move |conn| {
        let mut r = BufReader::new(conn.try_clone().unwrap());
        let mut headers = BTreeMap::new();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            if h.trim().is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            headers.insert(k.to_ascii_lowercase(), v.trim().to_string());
        }
        let mut body = vec![0; headers["content-length"].parse().unwrap()];
        r.read_exact(&mut body).unwrap();
        let first = {
            let mut g = g.lock().unwrap();
            g.push((headers, body));
            g.len() == 1
        };
        let status = if first { "500 Internal Server Error" } else { "200 OK" };
        let _ = write!(&conn, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    });
    (server, got)
}

fn hmac(secret: &[u8], body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    format!("sha256={}", hex::encode(aws_lc_rs::hmac::sign(&key, body).as_ref()))
}

#[test]
fn webhook_and_command_get_each_event_signed_retried_after_a_500_and_without_secrets() {
    if !engine_available() {
        return;
    }
    let env = Env::new("notify");
    env.push_base("base:1", "v1");
    env.write("app/Dockerfile", &format!("FROM {}\nRUN cat /etc/base-version > /v\n", env.image("base:1")));
    env.write("bad/Dockerfile", &format!("FROM {}\nARG TOKEN\nRUN echo \"token=$TOKEN\" && exit 1\n", env.image("base:1")));
    let builds = json!({
        "app": {"dockerfile": "app", "tags": [env.image("app:1")]},
        "bad": {"dockerfile": "bad", "tags": [env.image("bad:1")], "build_args": {"TOKEN": "s3cr3t-value"}, "secret_build_args": ["TOKEN"]},
    });
    env.config(json!({"push": true}), builds.clone());
    assert_eq!(env.freshen(&["--once"]).status.code(), Some(1), "bad fails");

    // A new base, and now the receivers.
    env.push_base("base:1", "v2");
    let (server, got) = receiver();
    env.write("hook.secret", "whsecret\n");
    let out_dir = env.dir.path().join("cmd");
    std::fs::create_dir(&out_dir).unwrap();
    let notify = json!([
        {"webhook": format!("http://{}/hook?token=t0k", server.addr), "secret_file": "hook.secret", "events": ["build_succeeded", "build_failed", "pushed"]},
        {"command": ["/bin/sh", "-c", "cat > \"$0/$FRESHEN_EVENT.json\"", out_dir.to_str().unwrap()]},
    ]);
    env.config(json!({"push": true, "notify": notify}), builds);
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let r = report(&out);
    let log = String::from_utf8_lossy(&out.stderr).to_string();

    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 4, "three events, one of them sent again after the 500: {log}");
    let mut bodies: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (headers, body) in &got {
        assert_eq!(headers["x-freshen-signature-256"], hmac(b"whsecret", body), "signed with the secret file's text");
        let payload: Value = serde_json::from_slice(body).unwrap();
        let event = payload["event"].as_str().unwrap().to_string();
        assert_eq!(headers["x-freshen-event"], event);
        if let Some(before) = bodies.insert(event, body.clone()) {
            assert_eq!(&before, body, "the retried delivery is the same payload");
        }
    }
    assert_eq!(bodies.keys().collect::<Vec<_>>(), ["build_failed", "build_succeeded", "pushed"]);
    assert_eq!(log.matches("event=\"notify_retry\"").count(), 1, "{log}");
    assert!(!log.contains("t0k"), "a webhook's query is never logged");

    let tag = env.image("app:1");
    let ok: Value = serde_json::from_slice(&bodies["build_succeeded"]).unwrap();
    assert_eq!(ok["build"], "app");
    assert_eq!(ok["tags"], json!([tag]));
    assert_eq!(ok["image_id"], image_id(&tag).unwrap().as_str());
    assert_eq!(ok["digest"], registry_digest(&tag).unwrap().as_str());
    let reason = ok["reason"].as_str().unwrap();
    assert!(reason.contains(&env.image("base:1")) && reason.contains(" changed sha256:") && reason.contains(" → sha256:"), "{reason}");
    assert!(ok["seconds"].as_f64().unwrap() > 0.0 && ok["error"].is_null());
    assert_eq!(ok["log"], build_of(&r, "app")["log"]);
    let pushed: Value = serde_json::from_slice(&bodies["pushed"]).unwrap();
    assert_eq!(pushed["digest"], ok["digest"]);
    let failed: Value = serde_json::from_slice(&bodies["build_failed"]).unwrap();
    assert_eq!(failed["build"], "bad");
    assert!(failed["error"].as_str().unwrap().contains("token=***"), "{failed}");

    for event in ["build_succeeded", "build_failed", "pushed"] {
        let stdin = std::fs::read(out_dir.join(format!("{event}.json"))).unwrap();
        assert_eq!(stdin, bodies[event], "the command got the webhook's JSON for {event}");
    }
    for (_, body) in &got {
        let text = String::from_utf8_lossy(body);
        assert!(!text.contains("s3cr3t-value") && !text.contains("whsecret"), "no secret in a payload: {text}");
    }
}

#[test]
fn check_failed_is_sent_once_when_a_check_fails_and_once_when_it_recovers_and_a_down_receiver_is_only_logged() {
    if !engine_available() {
        return;
    }
    let env = Env::new("notifycheck");
    let proxy = Proxy::start(&env.registry.addr);
    env.push_base("base:1", "v1");
    let via = format!("{}/{}/base:1", proxy.addr, env.prefix);
    env.write("app/Dockerfile", &format!("FROM {via}\nRUN true\n"));
    let out_dir = env.dir.path().join("checks");
    std::fs::create_dir(&out_dir).unwrap();
    let closed = free_port();
    let notify = json!([
        {"command": ["/bin/sh", "-c", "cat > \"$0/$(date +%s%N).json\"", out_dir.to_str().unwrap()], "events": ["check_failed"]},
        {"webhook": format!("http://127.0.0.1:{closed}/down"), "events": ["check_failed"]},
    ]);
    env.config(
        json!({"interval": "1s", "registry_timeout": "1s", "log_format": "json", "shutdown_grace": "2s", "notify": notify}),
        json!({"app": {"dockerfile": "app", "tags": [env.image("app:1")]}}),
    );
    let log = env.dir.path().join("daemon.log");
    let mut daemon = spawn_daemon(&env.dir.path().join("config.json"), &log);
    let cycles = || count_events(&log, "cycle_finished", &[]);
    assert!(wait_until(Duration::from_secs(60), || cycles() >= 1), "first cycle");
    let files = || {
        let mut v: Vec<Value> = std::fs::read_dir(&out_dir)
            .unwrap()
            .map(|e| (e.as_ref().unwrap().file_name(), std::fs::read(e.unwrap().path()).unwrap()))
            .collect::<BTreeMap<_, _>>()
            .into_values()
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect();
        v.sort_by_key(|p| p["recovered"].as_bool());
        v
    };
    proxy.fail_always(Some(Fault::Status(500, None)));
    let failing_from = cycles();
    assert!(wait_until(Duration::from_secs(60), || cycles() >= failing_from + 4), "four cycles with the check failing");
    let sent = files();
    assert_eq!(sent.len(), 1, "one check_failed for four failing cycles: {sent:?}");
    assert_eq!(sent[0]["event"], "check_failed");
    assert_eq!(sent[0]["input"], via.as_str());
    assert_eq!(sent[0]["builds"], json!(["app"]));
    assert_eq!(sent[0]["recovered"], false);
    assert!(sent[0]["error"].as_str().unwrap().contains("500"), "{}", sent[0]);

    proxy.fail_always(None);
    let healthy_from = cycles();
    assert!(wait_until(Duration::from_secs(60), || cycles() >= healthy_from + 3), "three healthy cycles");
    let sent = files();
    assert_eq!(sent.len(), 2, "and one when it recovers: {sent:?}");
    assert_eq!(sent[1]["recovered"], true);
    assert!(sent[1]["error"].is_null());

    // The webhook on a closed port: tried again, logged, and the daemon went on regardless.
    assert!(count_events(&log, "notify_retry", &[]) >= 1);
    assert!(count_events(&log, "notified", &[("notification", "check_failed")]) >= 2, "the command's deliveries");
    signal(&daemon, "-TERM");
    let stopped = wait_until(Duration::from_secs(15), || daemon.try_wait().unwrap().is_some());
    if !stopped {
        let _ = daemon.kill();
    }
    assert!(stopped, "exits within shutdown_grace and a few seconds while a receiver is down");
    assert_eq!(daemon.wait().unwrap().code(), Some(0));
}
