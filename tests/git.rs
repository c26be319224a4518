//! Git sources through the freshen binary, with a real engine, registry and git
//! server: a bare repository served over `file://` and by `git daemon` (`git://`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").current_dir(dir).args(args).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare repository `app.git` and a clone to commit from.
struct Repo {
    bare: PathBuf,
    work: PathBuf,
}

impl Repo {
    fn new(dir: &Path, base: &str) -> Repo {
        let (bare, work) = (dir.join("repos/app.git"), dir.join("work"));
        std::fs::create_dir_all(dir.join("repos")).unwrap();
        git(dir, &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()]);
        git(dir, &["clone", "-q", bare.to_str().unwrap(), work.to_str().unwrap()]);
        let r = Repo { bare, work };
        r.commit(&[("svc/Dockerfile", &format!("FROM {base}\nCOPY file /file\n")), ("svc/file", "one"), ("docs/README", "r1")]);
        r
    }

    /// Writes `files`, commits, pushes; returns the commit.
    fn commit(&self, files: &[(&str, &str)]) -> String {
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
struct GitDaemon {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl GitDaemon {
    fn start(base: &Path, log: PathBuf) -> GitDaemon {
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

    /// `upload-pack` requests served so far: one a connection.
    fn requests(&self) -> usize {
        std::fs::read_to_string(&self.log).unwrap_or_default().matches("Request upload-pack").count()
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn state(env: &Env) -> Value {
    serde_json::from_slice(&std::fs::read(env.state_path()).unwrap()).unwrap()
}

/// The full cycle a user sees, for a repository at `url`: a commit builds with its revision
/// label; an unchanged ref rebuilds nothing; a commit outside `paths` is recorded, not built;
/// one inside is built; a force-push back is a change like any other.
fn new_commits_rebuild(env: &Env, repo: &Repo, url: &str, listings: &dyn Fn() -> Option<usize>) {
    let source = json!({"git": url, "ref": "main", "path": "svc", "paths": ["svc/"]});
    env.config(json!({}), json!({"app": {"source": source, "tags": [env.image("app:latest")]}}));
    let once = || report(&env.freshen(&["--once", "--format", "json"]));
    let first = git(&repo.work, &["rev-parse", "HEAD"]);
    let r = once();
    assert_eq!(build_of(&r, "app")["status"], "rebuilt", "{r}");
    assert_eq!(label(&env.image("app:latest"), "org.opencontainers.image.revision").as_deref(), Some(first.as_str()));
    assert_eq!(label(&env.image("app:latest"), "org.opencontainers.image.source").as_deref(), Some(url));
    assert_eq!(cat(&env.image("app:latest"), "/file"), "one");

    let before = listings();
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(build_of(&report(&out), "app")["status"], "fresh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("event=\"git_listed\"") && stderr.contains("fetched=false"), "one listing, no fetch: {stderr}");
    if let (Some(b), Some(a)) = (before, listings()) {
        assert_eq!(a - b, 1, "one connection to the git server a cycle");
    }

    let outside = repo.commit(&[("docs/README", "r2")]);
    let r = once();
    assert_eq!(build_of(&r, "app")["status"], "fresh", "a commit outside paths: {r}");
    let key = format!("git:{url}#refs/heads/main");
    assert_eq!(state(env)["inputs"][&key]["digest"], outside.as_str(), "the new commit is recorded");

    let inside = repo.commit(&[("svc/file", "two")]);
    let r = once();
    assert_eq!(build_of(&r, "app")["status"], "rebuilt", "{r}");
    assert_eq!(build_of(&r, "app")["reason"]["git"], url, "{r}");
    assert_eq!(label(&env.image("app:latest"), "org.opencontainers.image.revision").as_deref(), Some(inside.as_str()));
    assert_eq!(cat(&env.image("app:latest"), "/file"), "two");

    git(&repo.work, &["reset", "-q", "--hard", &first]);
    git(&repo.work, &["push", "-q", "-f", "origin", "HEAD:main"]);
    let r = once();
    assert_eq!(build_of(&r, "app")["status"], "rebuilt", "a force-push: {r}");
    assert_eq!(cat(&env.image("app:latest"), "/file"), "one");
}

#[test]
fn a_repository_over_file_urls_rebuilds_on_new_commits_that_touch_its_paths() {
    if !engine_available() {
        return;
    }
    let env = Env::new("gitfile");
    env.push_base("base:1", "v1");
    let repo = Repo::new(env.dir.path(), &env.image("base:1"));
    new_commits_rebuild(&env, &repo, &format!("file://{}", repo.bare.display()), &|| None);
    remove_labelled(&format!("freshen.test={}", env.prefix));
}

#[test]
fn a_repository_served_by_git_daemon_costs_one_connection_a_cycle_and_an_unreachable_one_fails_alone() {
    if !engine_available() {
        return;
    }
    let env = Env::new("gitdaemon");
    env.push_base("base:1", "v1");
    let repo = Repo::new(env.dir.path(), &env.image("base:1"));
    let daemon = GitDaemon::start(&env.dir.path().join("repos"), env.dir.path().join("git-daemon.log"));
    let url = format!("git://127.0.0.1:{}/app.git", daemon.port);
    new_commits_rebuild(&env, &repo, &url, &|| Some(daemon.requests()));

    // The server goes away: that build's check fails, alone; a local build goes on.
    drop(daemon);
    env.write("local/Dockerfile", &format!("FROM {}\nRUN true\n", env.image("base:1")));
    let source = json!({"git": url, "ref": "main", "path": "svc"});
    env.config(
        json!({}),
        json!({
            "app": {"source": source, "tags": [env.image("app:latest")]},
            "local": {"dockerfile": "local", "tags": [env.image("local:latest")]}
        }),
    );
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "a failed check exits 1");
    let r = report(&out);
    assert_eq!(build_of(&r, "app")["status"], "check_failed", "{r}");
    assert_eq!(r["decisions"]["app"]["kind"], "git_failed", "{r}");
    assert_eq!(build_of(&r, "local")["status"], "rebuilt", "{r}");
    remove_labelled(&format!("freshen.test={}", env.prefix));
}

#[test]
fn plan_stays_offline_and_says_a_source_not_yet_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(dir.path(), "scratch");
    let url = format!("file://{}", repo.bare.display());
    let config = dir.path().join("config.json");
    let source = json!({"git": url, "ref": "main", "path": "svc"});
    std::fs::write(&config, json!({"builds": {"app": {"source": source, "tags": ["registry.example.com/app:1"]}}}).to_string()).unwrap();
    let out = freshen_cmd(&config, &["plan", "--format", "json"]).output().unwrap();
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let app = &plan["builds"][0];
    assert_eq!(app["source"], format!("{url} refs/heads/main"), "{plan}");
    assert!(app["error"].as_str().unwrap().contains("is not fetched yet"), "{plan}");
    assert!(!dir.path().join("git").exists(), "plan fetched nothing");
}
