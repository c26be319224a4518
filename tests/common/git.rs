//! Git servers for the tests: a bare repository with a clone to commit from,
//! served over `file://`, by `git daemon` (`git://`), or by `git http-backend`
//! behind a small loopback HTTP server with basic auth (`http://`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_until};

/// Runs `git args` in `dir`; panics with its stderr when it fails; returns its stdout, trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").current_dir(dir).args(args).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
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
