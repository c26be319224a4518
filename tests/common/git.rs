//! Git servers for the tests: a bare repository with a clone to commit from,
//! served over `file://`, by `git daemon` (`git://`), or by `git http-backend`
//! behind a small loopback HTTP server with basic auth (`http://`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_until, Env};

/// Runs `git args` in `dir`; panics with its stderr when it fails; returns its stdout, trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").current_dir(dir).args(args).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A test's [`Env`] with `base:1` pushed (`v1`), and a [`Repo`] whose `svc/Dockerfile` builds on it.
pub fn env_with_repo(name: &str) -> (Env, Repo) {
    let env = Env::new(name);
    env.push_base("base:1", "v1");
    let repo = Repo::new(env.dir.path(), &env.image("base:1"));
    (env, repo)
}

/// A bare repository `app.git` and a clone to commit from.
pub struct Repo {
    pub bare: PathBuf,
    pub work: PathBuf,
}

impl Repo {
    pub fn new(dir: &Path, base: &str) -> Repo {
        let (bare, work) = (dir.join("repos/app.git"), dir.join("work"));
        std::fs::create_dir_all(dir.join("repos")).unwrap();
        git(dir, &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()]);
        git(dir, &["clone", "-q", bare.to_str().unwrap(), work.to_str().unwrap()]);
        let r = Repo { bare, work };
        r.commit(&[("svc/Dockerfile", &format!("FROM {base}\nCOPY file /file\n")), ("svc/file", "one"), ("docs/README", "r1")]);
        r
    }

    /// Writes `files`, commits, pushes; returns the commit.
    pub fn commit(&self, files: &[(&str, &str)]) -> String {
        for (p, text) in files {
            let path = self.work.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        git(&self.work, &["add", "."]);
        git(&self.work, &["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "change"]);
        git(&self.work, &["push", "-q", "-f", "origin", "HEAD:main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

/// `git daemon` serving `base` on a free loopback port; killed by PID on drop. Its log counts requests.
pub struct GitDaemon {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl GitDaemon {
    pub fn start(base: &Path, log: PathBuf) -> GitDaemon {
        let port = free_port();
        // git-daemon itself, not `git daemon`, which runs it as a child that a kill of `git` would leave behind.
        let exec_path = git(base, &["--exec-path"]);
        let child = Command::new(Path::new(&exec_path).join("git-daemon"))
            .args(["--reuseaddr", "--export-all", "--verbose", "--listen=127.0.0.1", &format!("--port={port}")])
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stderr(std::fs::File::create(&log).unwrap())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        assert!(wait_until(Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()));
        GitDaemon { child, port, log }
    }

    /// `git daemon` serving `env`'s `repos/` folder (where [`Repo::new`] puts `app.git`),
    /// logging to `git-daemon.log` there; and the `git://` URL of `app.git`.
    pub fn serving(env: &Env) -> (GitDaemon, String) {
        let daemon = GitDaemon::start(&env.dir.path().join("repos"), env.dir.path().join("git-daemon.log"));
        let url = format!("git://127.0.0.1:{}/app.git", daemon.port);
        (daemon, url)
    }

    /// `upload-pack` requests served so far: one a connection.
    pub fn requests(&self) -> usize {
        std::fs::read_to_string(&self.log).unwrap_or_default().matches("Request upload-pack").count()
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `git http-backend` (CGI) behind a small loopback HTTP/1.1 server that asks for
/// basic auth (`user`, `password`), serving the repositories under `root` at
/// `http://ADDR/<name>.git`. Each request is logged (`METHOD /path?query STATUS`).
pub struct GitHttp {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _server: super::TcpServer,
}

impl GitHttp {
    pub fn start(root: &Path, user: &str, password: &str) -> GitHttp {
        use base64::Engine as _;
        let exec_path = git(root, &["--exec-path"]);
        let backend = Path::new(&exec_path).join("git-http-backend");
        let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")));
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (root, l) = (root.to_path_buf(), log.clone());
        let server = super::TcpServer::start(move |conn| {
            let _ = serve(conn, &backend, &root, &expected, &l);
        });
        GitHttp { addr: server.addr.clone(), log, _server: server }
    }

    /// The requests served so far.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Ref advertisements served with a 200 (`GET …/info/refs`): one a connection.
    pub fn listings(&self) -> usize {
        self.requests().iter().filter(|r| r.starts_with("GET ") && r.contains("/info/refs") && r.ends_with(" 200")).count()
    }
}

/// Serves one request of `conn` (then closes it): 401 without the expected
/// `Authorization`, else runs `git http-backend` as CGI.
fn serve(
    conn: std::net::TcpStream,
    backend: &Path,
    root: &Path,
    expected: &str,
    log: &std::sync::Mutex<Vec<String>>,
) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut r = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let mut headers = std::collections::HashMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut body = Vec::new();
    if let Some(n) = headers.get("content-length").and_then(|n| n.parse::<usize>().ok()) {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else if headers.get("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    let mut out = conn;
    if headers.get("authorization").map(String::as_str) != Some(expected) {
        log.lock().unwrap().push(format!("{method} {target} 401"));
        return out.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut cmd = Command::new(backend);
    cmd.env_clear()
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REMOTE_USER", "test")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", body.len().to_string());
    for (header, var) in [("content-type", "CONTENT_TYPE"), ("git-protocol", "GIT_PROTOCOL"), ("content-encoding", "HTTP_CONTENT_ENCODING")]
    {
        if let Some(v) = headers.get(header) {
            cmd.env(var, v);
        }
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    child.stdin.take().unwrap().write_all(&body)?;
    let output = child.wait_with_output()?;
    let split = output.stdout.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
    let split = split.or_else(|| output.stdout.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let (head, payload) = match split {
        Some((i, n)) => (String::from_utf8_lossy(&output.stdout[..i]).to_string(), &output.stdout[i + n..]),
        None => (String::new(), &output.stdout[..]),
    };
    let mut status = "200 OK".to_string();
    let mut response_headers = String::new();
    for h in head.lines().map(str::trim).filter(|h| !h.is_empty()) {
        match h.strip_prefix("Status:") {
            Some(s) => status = s.trim().to_string(),
            None => response_headers.push_str(&format!("{h}\r\n")),
        }
    }
    log.lock().unwrap().push(format!("{method} {target} {}", status.split_whitespace().next().unwrap_or("")));
    let head = format!("HTTP/1.1 {status}\r\n{response_headers}Content-Length: {}\r\nConnection: close\r\n\r\n", payload.len());
    out.write_all(head.as_bytes())?;
    out.write_all(payload)
}
