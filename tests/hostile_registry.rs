//! A hostile registry, through the binary: fake registries and token realms on
//! sockets the test owns that name a realm on a foreign or plain-HTTP host, or
//! send a token or an index without end. The engine is the fake one (a dry run
//! only asks its version), so these run without a Docker engine.

mod common;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::fake_engine::{BuildScript, FakeEngine};
use common::*;
use serde_json::json;

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A server whose every request is answered by `answer(request line, authorization, conn)`;
/// `answer` returns false to close the connection.
fn serve(answer: impl Fn(&str, &str, &mut TcpStream) -> bool + Send + Sync + 'static) -> TcpServer {
    TcpServer::start(move |conn| {
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut out = conn;
        while let Some((line, auth)) = read_request(&mut reader) {
            if !answer(&line, &auth, &mut out) {
                return;
            }
        }
    })
}

fn respond(out: &mut TcpStream, status: &str, headers: &str, body: &str) -> bool {
    write!(out, "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\n\r\n{body}", body.len()).is_ok()
}

/// Writes a chunked body of `a`s that never ends until the client goes; counts the bytes sent.
fn endless(out: &mut TcpStream, content_type: &str, sent: &AtomicUsize) -> bool {
    let _ = write!(out, "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n");
    let chunk = format!("{:x}\r\n{}\r\n", 65536, "a".repeat(65536));
    while sent.load(Ordering::SeqCst) < 1 << 30 && out.write_all(chunk.as_bytes()).is_ok() {
        sent.fetch_add(65536, Ordering::SeqCst);
    }
    false
}

/// A registry that asks for a bearer token from `realm` and takes any token.
fn registry_with_realm(realm: String) -> TcpServer {
    serve(move |line, auth, out| {
        if auth.starts_with("Bearer ") {
            let headers = format!("Docker-Content-Digest: {DIGEST}\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n");
            return respond(out, "200 OK", &headers, if line.starts_with("HEAD") { "" } else { "{}" });
        }
        let challenge = format!("WWW-Authenticate: Bearer realm=\"{realm}\",service=\"fake\"\r\n");
        respond(out, "401 Unauthorized", &challenge, "")
    })
}

/// `freshen --once --dry-run --format json` of one build on `registry`'s `app/base:1`, with
/// credentials for `registry`; returns the report's check of that base and the log.
fn dry_run(registry: &str) -> (serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let engine = FakeEngine::start(BuildScript::Messages(vec![]), vec![]);
    std::fs::create_dir_all(dir.path().join("app")).unwrap();
    std::fs::write(dir.path().join("app/Dockerfile"), format!("FROM {registry}/app/base:1\n")).unwrap();
    std::fs::write(dir.path().join("password"), "hunter2").unwrap();
    let config = json!({
        "options": {"log_format": "json", "registry_timeout": "5s"},
        "registries": {registry: {"username": "alice", "password_file": "password"}},
        "builds": {"app": {"dockerfile": "app", "tags": ["127.0.0.1:1/app:latest"]}},
    });
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let out = freshen_cmd(&dir.path().join("config.json"), &["--once", "--dry-run", "--format", "json"])
        .env("DOCKER_HOST", engine.docker_host())
        .output()
        .unwrap();
    let r = report(&out);
    (r["checks"][0].clone(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// An address of this host that is not loopback (the one its default route leaves from);
/// no packet is sent to find it.
fn non_loopback_ip() -> std::net::IpAddr {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    s.connect("192.0.2.254:9").or_else(|_| s.connect("10.255.255.254:9")).expect("a route off loopback");
    s.local_addr().unwrap().ip()
}

#[test]
fn credentials_never_go_over_plain_http_to_a_realm_that_is_not_loopback() {
    let ip = non_loopback_ip();
    assert!(!ip.is_loopback());
    let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
    let realm = format!("http://{}/token", listener.local_addr().unwrap());
    let contacted = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&contacted);
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || loop {
        if listener.accept().is_ok() {
            c.fetch_add(1, Ordering::SeqCst);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    });
    let registry = registry_with_realm(realm.clone());
    let (check, _) = dry_run(&registry.addr);
    let error = check["error"].as_str().unwrap_or_default();
    assert_eq!(check["kind"], "protocol", "{check}");
    assert!(error.contains("no credentials sent") && error.contains(&realm) && error.contains("insecure"), "{error}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(contacted.load(Ordering::SeqCst), 0, "nothing was sent to the realm");
}

#[test]
fn a_loopback_realm_on_another_host_name_gets_the_credentials_with_one_warning() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let realm_server = serve(move |_, auth, out| {
        s.lock().unwrap().push(auth.to_string());
        respond(out, "200 OK", "Content-Type: application/json\r\n", r#"{"token":"t0k3n"}"#)
    });
    let realm = format!("http://localhost:{}/token", realm_server.addr.split(':').nth(1).unwrap());
    let registry = registry_with_realm(realm);
    let (check, log) = dry_run(&registry.addr);
    assert_eq!(check["new"], DIGEST, "{check}");
    let basic = format!("Basic {}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "alice:hunter2"));
    assert_eq!(*seen.lock().unwrap(), [basic], "the realm got the credentials, once");
    assert_eq!(log.matches("\"token_realm_foreign\"").count(), 1, "{log}");
    assert!(log.contains("\"realm_host\":\"localhost\""), "{log}");
}

#[test]
fn a_token_response_without_end_is_cut_at_4_mib() {
    let sent = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&sent);
    let realm_server = serve(move |_, _, out| endless(out, "application/json", &s));
    let registry = registry_with_realm(format!("http://{}/token", realm_server.addr));
    let (check, _) = dry_run(&registry.addr);
    assert_eq!(check["kind"], "protocol", "{check}");
    assert!(check["error"].as_str().unwrap().contains("larger than the 4194304-byte limit"), "{check}");
    assert!(sent.load(Ordering::SeqCst) < 64 << 20, "freshen stopped reading: {} bytes sent", sent.load(Ordering::SeqCst));
}

#[test]
fn an_index_without_end_is_cut_at_4_mib() {
    let sent = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&sent);
    let index = "application/vnd.oci.image.index.v1+json";
    let registry = serve(move |line, _, out| {
        if line.starts_with("HEAD") {
            return respond(out, "200 OK", &format!("Docker-Content-Digest: {DIGEST}\r\nContent-Type: {index}\r\n"), "");
        }
        endless(out, index, &s)
    });
    let (check, _) = dry_run(&registry.addr);
    assert!(check["error"].as_str().unwrap_or_default().contains("larger than the 4194304-byte limit"), "{check}");
    assert!(sent.load(Ordering::SeqCst) < 64 << 20, "freshen stopped reading: {} bytes sent", sent.load(Ordering::SeqCst));
}
