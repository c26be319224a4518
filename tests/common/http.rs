//! A test-only HTTP/1.1 client over a plain `TcpStream`: the tests need to send
//! bytes no well-behaved client would (a slow body, a lying Content-Length),
//! and to see the answer exactly as sent.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The bearer token the server tests configure (`token_file`).
pub const TOKEN: &str = "0123456789abcdef-test-token";

/// A listening freshen daemon, killed (by its PID) when the test ends, however it ends.
pub struct Daemon {
    /// The process.
    pub child: std::process::Child,
    /// Its log (debug; JSON with `log_format: "json"`).
    pub log: PathBuf,
    /// Where it listens.
    pub addr: String,
}

impl Daemon {
    /// Runs freshen on `config` (which listens on `addr`), with `DOCKER_HOST` set to
    /// `docker_host` when given, logging to `daemon.log` beside the config.
    pub fn spawn(config: &Path, addr: &str, docker_host: Option<&str>) -> Daemon {
        let log = config.parent().unwrap().join("daemon.log");
        let mut cmd = super::freshen_cmd(config, &[]);
        if let Some(h) = docker_host {
            cmd.env("DOCKER_HOST", h);
        }
        let child = cmd.stderr(std::fs::File::create(&log).unwrap()).stdout(std::process::Stdio::null()).spawn().unwrap();
        Daemon { child, log, addr: addr.to_string() }
    }

    /// [`Daemon::spawn`], then waits until its first cycle ended and it listens.
    pub fn start(config: &Path, addr: &str, docker_host: Option<&str>) -> Daemon {
        let d = Daemon::spawn(config, addr, docker_host);
        assert!(super::wait_event(&d.log, "cycle_finished", &[], Duration::from_secs(60)), "first cycle:\n{}", d.log_text());
        assert!(super::wait_event(&d.log, "listening", &[], Duration::from_secs(5)), "listening:\n{}", d.log_text());
        d
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Cycles finished so far (`cycle_finished` events).
    pub fn cycles(&self) -> usize {
        super::count_events(&self.log, "cycle_finished", &[])
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An answer: status code, headers (lowercase names) and body.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// `name: value` lines, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body, as text.
    pub body: String,
}

impl Answer {
    /// The body as JSON; panics when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("JSON body ({e}): {}", self.body))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Sends `raw` (a whole request) to `addr` and reads the answer until the server closes.
pub fn raw(addr: &str, raw: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    // A server may answer (413) and close before the whole body is sent: the answer is what counts.
    let _ = s.write_all(raw);
    read_answer(&mut s)
}

/// Reads an answer from `s` until the server closes the connection.
pub fn read_answer(s: &mut TcpStream) -> Answer {
    let mut bytes = Vec::new();
    let _ = s.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
    let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_string() };
    Answer { status, headers, body }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// `method path` to `addr` with `headers`, and `body` when given (with its Content-Length).
pub fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Answer {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(body.unwrap_or_default());
    raw(addr, &bytes)
}

/// `GET path` with the bearer `token`.
pub fn get(addr: &str, path: &str, token: &str) -> Answer {
    request(addr, "GET", path, &[("Authorization", &format!("Bearer {token}"))], None)
}

/// `POST path` of `body` as `content_type`, with the bearer `token`.
pub fn post(addr: &str, path: &str, token: &str, content_type: &str, body: &[u8]) -> Answer {
    request(addr, "POST", path, &[("Authorization", &format!("Bearer {token}")), ("Content-Type", content_type)], Some(body))
}
