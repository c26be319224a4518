//! Shared helpers for the integration tests: a real registry (Debian's
//! `docker-registry`) on 127.0.0.1 at a free port, busybox base images built
//! `FROM scratch`, a unique image prefix per test, and cleanup on drop.
//!
//! Every image a test makes carries the label `freshen.test=<prefix>`, and
//! [`Env`]'s `Drop` removes all images with that label, so old images left
//! untagged by rebuilds are removed too.

#![allow(dead_code)]

pub mod engines;
pub mod fake_engine;
pub mod fakes;
pub mod git;
pub mod http;
pub mod proxy;
pub mod sockproxy;
pub mod tlsproxy;
pub mod token;

use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// True when a Docker engine answers. With `CI=true`, a missing engine panics:
/// nothing skips silently in CI.
pub fn engine_available() -> bool {
    let ok = Command::new("docker").arg("info").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok && std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true but no Docker engine answers; run scripts/engine.sh start");
    }
    if !ok {
        eprintln!("SKIPPED: no Docker engine answers (run scripts/engine.sh start)");
    }
    ok
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A TCP server on 127.0.0.1 at a free port that hands each connection to
/// `handle` on a thread of its own; stops accepting on drop.
pub struct TcpServer {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl TcpServer {
    /// Starts serving.
    pub fn start(handle: impl Fn(std::net::TcpStream) + Send + Sync + 'static) -> TcpServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (st, handle) = (stop.clone(), std::sync::Arc::new(handle));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let handle = handle.clone();
                std::thread::spawn(move || handle(conn));
            }
        });
        TcpServer { addr, stop }
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(&self.addr);
    }
}

/// A registry process and its access log.
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    child: Child,
    log: PathBuf,
}

impl Registry {
    /// Starts `docker-registry serve` with storage and access log under `dir`.
    pub fn start(dir: &Path) -> Registry {
        Registry::start_with(dir, "")
    }

    /// As [`Registry::start`], with `extra` YAML appended to the registry's config (an `auth:` section, say).
    pub fn start_with(dir: &Path, extra: &str) -> Registry {
        Registry::start_full(dir, extra, "")
    }

    /// As [`Registry::start_with`], with `http_extra` added to its `http:` map (`tls: {…}`, say).
    pub fn start_full(dir: &Path, extra: &str, http_extra: &str) -> Registry {
        let addr = format!("127.0.0.1:{}", free_port());
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: warn, accesslog: {{disabled: false}}}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp: {{addr: {addr}{http_extra}}}\n",
                dir.join("registry-data").display()
            ) + extra,
        )
        .unwrap();
        let log = dir.join("registry.log");
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("docker-registry runs (apt-get install docker-registry)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(&addr).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Registry { addr, child, log }
    }

    /// Clears the access log.
    pub fn clear_log(&self) {
        std::fs::OpenOptions::new().write(true).truncate(true).open(&self.log).unwrap();
    }

    /// The requests (`METHOD /path HTTP/1.1`) since the last clear whose User-Agent starts with `agent` (`freshen/`).
    pub fn requests_from(&self, agent: &str) -> Vec<String> {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let marker = format!("\"{agent}");
        log.lines().filter(|l| l.contains(&marker)).filter_map(|l| l.split('"').nth(1).map(str::to_string)).collect()
    }

    /// Access log lines (`"METHOD /path HTTP/1.1" status …`) since the last clear.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split('"').nth(1).map(str::to_string))
            .filter(|r| r.starts_with(|c: char| c.is_ascii_uppercase()))
            .collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One test's world: a temp folder, a registry, a unique prefix, cleanup on drop.
pub struct Env {
    /// Temp folder holding the config, Dockerfiles and state.
    pub dir: tempfile::TempDir,
    /// The registry.
    pub registry: Registry,
    /// Unique prefix for this test's image names and its cleanup label.
    pub prefix: String,
}

impl Env {
    /// A new world for the test `name`.
    pub fn new(name: &str) -> Env {
        Env::new_with(name, "")
    }

    /// A new world whose registry config gets `extra` YAML.
    pub fn new_with(name: &str, extra: &str) -> Env {
        Env::new_full(name, extra, |_| String::new())
    }

    /// A new world whose registry config gets `extra` YAML, and `http_extra(dir)`
    /// in its `http:` map (made from the world's folder, for files such as a TLS key).
    pub fn new_full(name: &str, extra: &str, http_extra: impl FnOnce(&Path) -> String) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let http = http_extra(dir.path());
        let registry = Registry::start_full(dir.path(), extra, &http);
        let prefix = format!("freshen-test-{}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst), name);
        Env { dir, registry, prefix }
    }

    /// `127.0.0.1:PORT/<prefix>/<repo>`.
    pub fn image(&self, repo_tag: &str) -> String {
        format!("{}/{}/{repo_tag}", self.registry.addr, self.prefix)
    }

    /// Builds a base `FROM scratch` with static busybox and `/etc/base-version`
    /// holding `version`, tags it as [`Env::image`]`(repo_tag)` and pushes it.
    pub fn push_base(&self, repo_tag: &str, version: &str) {
        self.build_base(repo_tag, version);
        docker(&["push", "-q", &self.image(repo_tag)]);
    }

    /// Builds the base of [`Env::push_base`] without pushing it.
    pub fn build_base(&self, repo_tag: &str, version: &str) {
        let ctx = self.dir.path().join(format!("base-{}", repo_tag.replace([':', '/'], "_")));
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::copy("/bin/busybox", ctx.join("busybox")).expect("static busybox (apt-get install busybox-static)");
        // The LABEL first makes every cached step of this test's bases its own: with a shared
        // `COPY busybox` layer, another test's cleanup could remove the cached image between the
        // classic builder's cache hit and its use ("No such image", "failed to get digest").
        std::fs::write(
            ctx.join("Dockerfile"),
            format!(
                "FROM scratch\nLABEL freshen.test.base={}\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox --install -s /bin && echo {version} > /etc/base-version\"]\n",
                self.prefix
            ),
        )
        .unwrap();
        let image = self.image(repo_tag);
        let label = format!("freshen.test={}", self.prefix);
        let args = ["build", "-q", "--label", &label, "-t", &image, ctx.to_str().unwrap()];
        // The classic builder's cache probe for a step on `FROM scratch` lists every parentless
        // image in the store and then reads each; one removed in between by another test's
        // cleanup fails the build with `unable to find image "sha256:…"` (moby 20.10,
        // daemon/images/cache.go getLocalCachedImage). That race is the engine's, not this
        // test's subject, so such a build is tried again.
        for _ in 0..3 {
            let out = Command::new("docker").args(args).output().unwrap();
            if out.status.success() {
                return;
            }
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("unable to find image"), "docker {args:?} failed: {err}");
            eprintln!("docker build lost a cache-probe race, trying again: {err}");
        }
        docker(&args);
    }

    /// Writes `text` to `rel` under the temp folder, creating folders.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::File::create(&p).unwrap().write_all(text.as_bytes()).unwrap();
        p
    }

    /// Writes `config.json` with `builds` (a JSON object) and `options`;
    /// every build gets the cleanup label `freshen.test`, added to its own `labels`. Returns the path.
    pub fn config(&self, options: serde_json::Value, mut builds: serde_json::Value) -> PathBuf {
        for (_, b) in builds.as_object_mut().unwrap() {
            if !b["labels"].is_object() {
                b["labels"] = serde_json::json!({});
            }
            b["labels"]["freshen.test"] = self.prefix.clone().into();
        }
        let mut options = options;
        if options.get("state_file").is_none() {
            options["state_file"] = "state.json".into();
        }
        let cfg = serde_json::json!({"options": options, "builds": builds});
        self.write("config.json", &serde_json::to_string_pretty(&cfg).unwrap())
    }

    /// Path of the state file the default config uses.
    pub fn state_path(&self) -> PathBuf {
        self.dir.path().join("state.json")
    }

    /// Runs `freshen -c config.json <args>`.
    pub fn freshen(&self, args: &[&str]) -> Output {
        let out = freshen_cmd(&self.dir.path().join("config.json"), args).output().unwrap();
        eprintln!("freshen {args:?} → {:?}\n{}", out.status.code(), String::from_utf8_lossy(&out.stderr));
        out
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        remove_labelled(&format!("freshen.test={}", self.prefix));
    }
}

/// Removes every image carrying `label` (`key=value`). Images with dependent
/// child images cannot be removed before their children, so this repeats until
/// none is left or no progress is made; removing a tagged image also removes
/// its untagged intermediate parents.
pub fn remove_labelled(label: &str) {
    let mut left = usize::MAX;
    loop {
        let ids = Command::new("docker")
            .args(["images", "-aq", "--filter", &format!("label={label}")])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        let mut ids: Vec<&str> = ids.split_whitespace().collect();
        ids.sort();
        ids.dedup();
        if ids.is_empty() || ids.len() >= left {
            return;
        }
        left = ids.len();
        // A build still running in the engine (its client was killed) holds its image through a container.
        for id in &ids {
            let out = Command::new("docker").args(["ps", "-aq", "--filter", &format!("ancestor={id}")]).output();
            let containers = out.map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default();
            if !containers.trim().is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f"])
                    .args(containers.split_whitespace())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let _ = Command::new("docker").arg("rmi").arg("-f").args(&ids).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

/// The freshen binary under test with `-c config` and `args`; logs at debug.
pub fn freshen_cmd(config: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_freshen"));
    c.arg("-c").arg(config).args(args).env("RUST_LOG", "freshen=debug");
    c
}

/// Sends `sig` (`-TERM`, `-HUP`, …) to `child` with kill(1); panics when it cannot.
pub fn signal(child: &Child, sig: &str) {
    assert!(Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success());
}

/// The freshen daemon with `-c config`, its log (debug) written to `log`, stdout discarded.
pub fn spawn_daemon(config: &Path, log: &Path) -> std::process::Child {
    freshen_cmd(config, &[]).stderr(std::fs::File::create(log).unwrap()).stdout(std::process::Stdio::null()).spawn().unwrap()
}

/// Runs the docker CLI; panics with its output on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(out.status.success(), "docker {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The image ID of `reference`, or `None` when the engine has no such image.
pub fn image_id(reference: &str) -> Option<String> {
    let out = Command::new("docker").args(["image", "inspect", "-f", "{{.Id}}", reference]).output().unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A label of `reference`.
pub fn label(reference: &str, key: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["image", "inspect", "-f", &format!("{{{{index .Config.Labels \"{key}\"}}}}"), reference])
        .output()
        .unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()).filter(|s| !s.is_empty())
}

/// Reads a file from `reference` by running it once (container removed).
pub fn cat(reference: &str, path: &str) -> String {
    docker(&["run", "--rm", reference, "cat", path])
}

/// Polls `done` every 50 ms for up to `limit`; true as soon as it holds, false when time ran out.
pub fn wait_until(limit: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

/// The `fields` of every JSON log line in the file at `path`: the log of a
/// freshen run with `options.log_format: "json"`. Lines that are not JSON are skipped.
pub fn log_events(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|l| l["fields"].clone())
        .collect()
}

/// How many log events named `event` whose fields also hold each of `fields` (`[("build", "web")]`) the log at `path` has.
pub fn count_events(path: &Path, event: &str, fields: &[(&str, &str)]) -> usize {
    log_events(path).iter().filter(|f| f["event"] == event && fields.iter().all(|(k, v)| f[*k] == *v)).count()
}

/// Waits up to `limit` for a log event as [`count_events`] counts them; true when one came.
pub fn wait_event(path: &Path, event: &str, fields: &[(&str, &str)], limit: std::time::Duration) -> bool {
    wait_until(limit, || count_events(path, event, fields) > 0)
}

/// Waits up to `limit` for `needle` to appear in the file at `path` (a log); true when it did.
pub fn wait_for(path: &Path, needle: &str, limit: std::time::Duration) -> bool {
    wait_until(limit, || std::fs::read_to_string(path).unwrap_or_default().contains(needle))
}

/// The JSON report of `--once --format json` in `out`.
pub fn report(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("JSON report: {}", String::from_utf8_lossy(&out.stdout)))
}

/// The `builds` entry of the JSON report `r` for `name`.
pub fn build_of<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["builds"].as_array().unwrap().iter().find(|b| b["name"] == name).unwrap_or_else(|| panic!("no build {name} in {}", r["builds"]))
}

/// Sets `options.<key>` in the test's config.json.
pub fn set_option(env: &Env, key: &str, value: Value) {
    let config = env.dir.path().join("config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    cfg["options"][key] = value;
    std::fs::write(&config, cfg.to_string()).unwrap();
}

/// One build `<base>-app` on each of `bases`, each reached through `proxy`; the bases are pushed straight to the registry.
pub fn proxied(env: &Env, proxy: &proxy::Proxy, bases: &[&str]) {
    let mut builds = serde_json::Map::new();
    for b in bases {
        env.push_base(&format!("{b}:1"), b);
        let via = format!("{}/{}/{b}:1", proxy.addr, env.prefix);
        env.write(&format!("{b}-app/Dockerfile"), &format!("FROM {via}\nRUN true\n"));
        builds.insert(format!("{b}-app"), json!({"dockerfile": format!("{b}-app"), "tags": [env.image(&format!("{b}-app:latest"))]}));
    }
    env.config(json!({"registry_timeout": "2s"}), Value::Object(builds));
}

/// A new test world named `name` with [`proxied`] builds on `bases`, all built once.
pub fn built_behind_proxy(name: &str, bases: &[&str]) -> (Env, proxy::Proxy) {
    let env = Env::new(name);
    let proxy = proxy::Proxy::start(&env.registry.addr);
    proxied(&env, &proxy, bases);
    assert_eq!(env.freshen(&["--once"]).status.code(), Some(0));
    (env, proxy)
}

/// `env` with a base pushed and one build `app` on it, with `options` and `extra` keys added to the build; returns the config's path.
pub fn one_build(env: &Env, options: Value, extra: Value) -> PathBuf {
    env.push_base("base:1", "v1");
    env.write("app/Dockerfile", &format!("FROM {}\nRUN true\n", env.image("base:1")));
    let mut build = json!({"dockerfile": "app", "tags": [env.image("app:latest")]});
    for (k, v) in extra.as_object().into_iter().flatten() {
        build[k] = v.clone();
    }
    env.config(options, json!({"app": build}))
}

/// Logs the docker CLI in to the test registry with a config of its own (the
/// user's is untouched), then builds and pushes a base with it.
pub fn login_and_push(env: &Env, docker_config: &std::path::Path, user: &str, password: &str, repo_tag: &str, version: &str) {
    let login = Command::new("docker")
        .env("DOCKER_CONFIG", docker_config)
        .args(["login", "-u", user, "--password-stdin", &env.registry.addr])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(password.as_bytes())?;
            c.wait()
        })
        .unwrap();
    assert!(login.success());
    env.build_base(repo_tag, version);
    let push = Command::new("docker").env("DOCKER_CONFIG", docker_config).args(["push", "-q", &env.image(repo_tag)]).status().unwrap();
    assert!(push.success());
    docker(&["rmi", &env.image(repo_tag)]);
}

/// Reads one HTTP/1.1 request head from `r`: its request line and its
/// `Authorization` header (empty when absent); None when the client is gone.
pub fn read_request(r: &mut std::io::BufReader<std::net::TcpStream>) -> Option<(String, String)> {
    use std::io::BufRead;
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut authorization = String::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        if h.trim().is_empty() {
            return Some((line.trim().to_string(), authorization));
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                authorization = v.trim().to_string();
            }
        }
    }
}

/// An [`Env`] whose registry asks for basic auth: `user` with `password`, in an
/// htpasswd file under the returned folder (keep it for the test's length).
pub fn htpasswd_env(name: &str, user: &str, password: &str) -> (tempfile::TempDir, Env) {
    let tmp = tempfile::tempdir().unwrap();
    let htpasswd = tmp.path().join("htpasswd");
    std::fs::write(&htpasswd, format!("{user}:{}\n", bcrypt::hash(password, 5).unwrap())).unwrap();
    let env = Env::new_with(name, &format!("auth: {{htpasswd: {{realm: freshen-test, path: {}}}}}\n", htpasswd.display()));
    (tmp, env)
}

/// The registry's `Docker-Content-Digest` for `HEAD /v2/<name>/manifests/<tag>` of `image`
/// (`host:port/name:tag`), or `None` when it answers otherwise.
pub fn registry_digest(image: &str) -> Option<String> {
    let (host, rest) = image.split_once('/').unwrap();
    let (name, tag) = rest.rsplit_once(':').unwrap();
    let mut conn = std::net::TcpStream::connect(host).unwrap();
    let accept = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json";
    write!(conn, "HEAD /v2/{name}/manifests/{tag} HTTP/1.1\r\nHost: {host}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n").unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(conn)).map_while(Result::ok);
    let status = lines.next()?;
    if !status.contains(" 200 ") {
        return None;
    }
    lines.take_while(|l| !l.is_empty()).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("docker-content-digest").then(|| v.trim().to_string())
    })
}

/// The image records (`image:` keys) of a state file's `inputs`: what a registry
/// check writes. Build contexts (`context:` keys) are checked every cycle without
/// a registry, so their `seen_at` moves even while every registry check fails.
pub fn image_records(state: &Value) -> Value {
    state["inputs"].as_object().unwrap().iter().filter(|(k, _)| k.starts_with("image:")).map(|(k, v)| (k.clone(), v.clone())).collect()
}
