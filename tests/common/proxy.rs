//! A small test-only HTTP front between freshen and the registry. It counts
//! requests by method and path, and can add latency, answer with a status
//! (500, or 429 with `Retry-After`), or drop the connection.
//!
//! Every response is sent with `Connection: close`, so each request arrives on
//! its own connection and is seen here.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::TcpServer;

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and no body; `Retry-After` when given.
    Status(u16, Option<u64>),
    /// Close the connection without answering.
    Drop,
}

#[derive(Default)]
struct Shared {
    requests: Vec<(String, String)>,
    /// Faults for the next requests, one each.
    next: VecDeque<Fault>,
    /// A fault for every request while set.
    always: Option<Fault>,
    /// A fault for GET requests only: a registry that answers checks (HEAD) but not pulls.
    gets: Option<Fault>,
    latency: Duration,
    /// Header lines (`Name: value`) added to every forwarded response.
    extra_headers: Vec<String>,
    /// Requests being handled now, and the most there have been at once since the last clear.
    in_flight: usize,
    max_in_flight: usize,
}

/// The proxy; stops on drop.
pub struct Proxy {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    shared: Arc<Mutex<Shared>>,
    _server: TcpServer,
}

impl Proxy {
    /// Starts a proxy in front of `upstream` (`host:port`).
    pub fn start(upstream: &str) -> Proxy {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (s, up) = (shared.clone(), upstream.to_string());
        let server = TcpServer::start(move |conn| {
            let _ = serve(conn, &up, &s);
        });
        Proxy { addr: server.addr.clone(), shared, _server: server }
    }

    /// Queues `fault` for the next request.
    pub fn fail_next(&self, fault: Fault) {
        self.shared.lock().unwrap().next.push_back(fault);
    }

    /// Applies `fault` to every request until cleared with `None`.
    pub fn fail_always(&self, fault: Option<Fault>) {
        self.shared.lock().unwrap().always = fault;
    }

    /// Answers every GET with `fault` (`None`: no longer); HEADs go through.
    pub fn fail_gets(&self, fault: Option<Fault>) {
        self.shared.lock().unwrap().gets = fault;
    }

    /// Adds `latency` before each request is handled.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().unwrap().latency = latency;
    }

    /// Adds `headers` (`Name: value` each) to every response forwarded from upstream.
    pub fn set_response_headers(&self, headers: &[&str]) {
        self.shared.lock().unwrap().extra_headers = headers.iter().map(|h| h.to_string()).collect();
    }

    /// Requests seen so far, as `(method, path)`.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.shared.lock().unwrap().requests.clone()
    }

    /// Forgets the requests seen, and the most in flight at once.
    pub fn clear(&self) {
        let mut s = self.shared.lock().unwrap();
        s.requests.clear();
        s.max_in_flight = s.in_flight;
    }

    /// The most requests handled at once since the last clear.
    pub fn max_in_flight(&self) -> usize {
        self.shared.lock().unwrap().max_in_flight
    }

    /// How many requests had `method`.
    pub fn count(&self, method: &str) -> usize {
        self.requests().iter().filter(|(m, _)| m == method).count()
    }
}

fn serve(client: TcpStream, upstream: &str, shared: &Mutex<Shared>) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut content_length = 0usize;
    let mut chunked = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
            continue;
        }
        if !lower.starts_with("connection:") {
            head.push(line);
        }
    }
    let body = if chunked {
        // The engine uploads blobs with PATCH in chunked encoding (RFC 9112 §7.1); the body
        // is forwarded whole, with a Content-Length.
        let body = read_chunked(&mut reader)?;
        head.push(format!("Content-Length: {}\r\n", body.len()));
        body
    } else {
        let mut body = vec![0; content_length];
        reader.read_exact(&mut body)?;
        body
    };
    let mut parts = head.first().map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>()).unwrap_or_default();
    parts.resize(2, String::new());
    let (fault, latency, extra) = {
        let mut s = shared.lock().unwrap();
        s.requests.push((parts[0].clone(), parts[1].clone()));
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        let get_fault = if parts[0] == "GET" { s.gets.clone() } else { None };
        let f = s.next.pop_front().or_else(|| s.always.clone()).or(get_fault);
        (f, s.latency, s.extra_headers.clone())
    };
    let reply = answer(upstream, fault, latency, &head, &body, &extra);
    // Counted out before the client sees the answer: once it has, it may send its next
    // request, which must not look as if it overlapped this one.
    shared.lock().unwrap().in_flight -= 1;
    let mut client = client;
    match reply? {
        None => client.shutdown(std::net::Shutdown::Both),
        Some(bytes) => client.write_all(&bytes),
    }
}

/// A chunked request body (RFC 9112 §7.1), its chunks joined; trailers are skipped.
fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let size = line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size, 16).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        if size == 0 {
            loop {
                let mut trailer = String::new();
                if reader.read_line(&mut trailer)? == 0 || trailer == "\r\n" {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0; 2];
        reader.read_exact(&mut crlf)?;
    }
}

/// The fault, or the upstream's response to the request: the bytes to send back, or
/// `None` to drop the connection.
fn answer(
    upstream: &str,
    fault: Option<Fault>,
    latency: Duration,
    head: &[String],
    body: &[u8],
    extra: &[String],
) -> std::io::Result<Option<Vec<u8>>> {
    std::thread::sleep(latency);
    match fault {
        Some(Fault::Drop) => return Ok(None),
        Some(Fault::Status(code, retry_after)) => {
            let retry = retry_after.map(|r| format!("Retry-After: {r}\r\n")).unwrap_or_default();
            return Ok(Some(format!("HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\n{retry}Connection: close\r\n\r\n").into_bytes()));
        }
        None => {}
    }
    let mut up = TcpStream::connect(upstream)?;
    for line in head {
        up.write_all(line.as_bytes())?;
    }
    up.write_all(b"Connection: close\r\n\r\n")?;
    up.write_all(body)?;
    let mut response = Vec::new();
    up.read_to_end(&mut response)?;
    if let Some(end) = response.windows(2).position(|w| w == b"\r\n") {
        let added: String = extra.iter().map(|h| format!("{h}\r\n")).collect();
        response.splice(end + 2..end + 2, added.into_bytes());
    }
    Ok(Some(response))
}
