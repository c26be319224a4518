//! A fake Docker engine on a unix socket, for what a real engine will not do on
//! demand: split one line of build output across two messages, or go silent in
//! the middle of a build. It speaks just enough of the Engine API (HTTP/1.1,
//! JSON) for one `freshen --once` cycle: version, image inspect (the images it
//! is given, else "no such image"), pull, build (scripted) and tag. Every request line is kept, and the
//! fake notes when the client closes a build's connection (how freshen cancels a
//! build on the engine).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the fake answers to `POST /build`.
#[derive(Clone)]
pub enum BuildScript {
    /// These JSON messages, each its own chunk, then the end of the stream.
    Messages(Vec<String>),
    /// These JSON messages, then silence until the client closes the connection.
    Stall(Vec<String>),
}

/// The fake engine; stops listening on drop.
pub struct FakeEngine {
    dir: tempfile::TempDir,
    requests: Arc<Mutex<Vec<String>>>,
    build_closed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl FakeEngine {
    /// Listens on a fresh socket; answers builds with `build` and image
    /// inspects with `images` (reference → the Engine API's inspect JSON).
    pub fn start(build: BuildScript, images: Vec<(String, String)>) -> FakeEngine {
        let images = Arc::new(images);
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("engine.sock")).unwrap();
        let (requests, build_closed, stop) = (Arc::default(), Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (r, c, s) = (Arc::clone(&requests), Arc::clone(&build_closed), Arc::clone(&stop));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let (r, c, s, build, images) = (Arc::clone(&r), Arc::clone(&c), Arc::clone(&s), build.clone(), Arc::clone(&images));
                std::thread::spawn(move || serve(client, &build, &images, &r, &c, &s));
            }
        });
        FakeEngine { dir, requests, build_closed, stop }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("engine.sock")
    }

    /// The `DOCKER_HOST` value that points at the fake.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The request lines seen so far ("POST /v1.41/build?...").
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// Whether the client closed a stalled build's connection.
    pub fn build_cancelled(&self) -> bool {
        self.build_closed.load(Ordering::SeqCst)
    }
}

impl Drop for FakeEngine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(self.socket());
    }
}

/// One connection: requests in turn, as HTTP/1.1 keep-alive allows.
fn serve(
    stream: UnixStream,
    build: &BuildScript,
    images: &[(String, String)],
    requests: &Mutex<Vec<String>>,
    closed: &AtomicBool,
    stop: &AtomicBool,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let (mut length, mut chunked) = (0usize, false);
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end().to_ascii_lowercase();
            if h.is_empty() {
                break;
            }
            if let Some(v) = h.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            chunked |= h.starts_with("transfer-encoding:") && h.contains("chunked");
        }
        if !read_body(&mut reader, length, chunked) {
            return;
        }
        let line = line.trim_end().to_string();
        requests.lock().unwrap().push(line.clone());
        let path = line.split(' ').nth(1).unwrap_or("").split('?').next().unwrap_or("").to_string();
        let answered = if path.ends_with("/version") {
            let v = r#"{"ApiVersion":"1.41","MinAPIVersion":"1.12","Version":"20.10.0","Os":"linux","Arch":"amd64"}"#;
            respond(&mut out, "200 OK", v)
        } else if path.ends_with("/_ping") {
            respond(&mut out, "200 OK", "OK")
        } else if path.ends_with("/images/create") {
            respond(&mut out, "200 OK", r#"{"status":"Downloaded newer image"}"#)
        } else if path.ends_with("/tag") {
            respond(&mut out, "201 Created", "")
        } else if path.ends_with("/build") {
            stream_build(&mut out, &mut reader, build, closed, stop);
            return;
        } else if let Some((_, inspect)) = images.iter().find(|(r, _)| path.ends_with(&format!("/images/{r}/json"))) {
            respond(&mut out, "200 OK", inspect)
        } else {
            respond(&mut out, "404 Not Found", r#"{"message":"No such image"}"#)
        };
        if !answered {
            return;
        }
    }
}

/// Reads (and drops) a request body; false when the connection ended.
fn read_body(reader: &mut BufReader<UnixStream>, length: usize, chunked: bool) -> bool {
    if !chunked {
        return reader.by_ref().take(length as u64).read_to_end(&mut Vec::new()).is_ok();
    }
    loop {
        let mut size = String::new();
        if reader.read_line(&mut size).unwrap_or(0) == 0 {
            return false;
        }
        let Ok(n) = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16) else { return false };
        let mut chunk = vec![0; n + 2];
        if reader.read_exact(&mut chunk).is_err() {
            return false;
        }
        if n == 0 {
            return true;
        }
    }
}

fn respond(out: &mut UnixStream, status: &str, body: &str) -> bool {
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len());
    out.write_all(head.as_bytes()).and_then(|()| out.write_all(body.as_bytes())).is_ok()
}

fn stream_build(out: &mut UnixStream, reader: &mut BufReader<UnixStream>, build: &BuildScript, closed: &AtomicBool, stop: &AtomicBool) {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    let (messages, stall) = match build {
        BuildScript::Messages(m) => (m, false),
        BuildScript::Stall(m) => (m, true),
    };
    let mut ok = out.write_all(head.as_bytes()).is_ok();
    for m in messages {
        let m = format!("{m}\r\n");
        ok = ok && out.write_all(format!("{:x}\r\n{m}\r\n", m.len()).as_bytes()).is_ok();
        std::thread::sleep(Duration::from_millis(50));
    }
    if !stall {
        let _ = out.write_all(b"0\r\n\r\n");
        return;
    }
    reader.get_ref().set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    while !stop.load(Ordering::SeqCst) {
        match reader.read(&mut [0u8; 64]) {
            Ok(0) => break,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            _ => break,
        }
    }
    closed.store(!stop.load(Ordering::SeqCst), Ordering::SeqCst);
}
