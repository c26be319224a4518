//! Extra Docker engines beside the first, for the engine pool's tests: each
//! `dockerd` has its own data-root, exec-root, pidfile and unix socket, with
//! `--bridge=none --iptables=false`, is started by the test and stopped (or
//! killed) by PID, and its folders go on drop.
//!
//! A second dockerd on this host removes the first engine's `docker0` bridge
//! (seen with Docker 20.10, even with `--bridge=none`), after which the first
//! engine's RUN steps fail with "could not find bridge docker0": the bridge is
//! made again after each start and on drop ([`ensure_docker0`]).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// One extra engine.
pub struct ExtraEngine {
    /// Short, for the unix socket paths under it (at most 108 bytes).
    pub dir: tempfile::TempDir,
    /// `unix://…/sock`.
    pub host: String,
    pid: u32,
    child: std::process::Child,
}

impl ExtraEngine {
    /// Starts a dockerd and waits until it answers (at most 60 s).
    pub fn start() -> ExtraEngine {
        ExtraEngine::start_with(tempfile::Builder::new().prefix("fe").tempdir_in("/tmp").unwrap(), &[])
    }

    /// Starts a dockerd in `dir` with `extra` arguments (another `-H`, TLS), and
    /// waits until it answers on its unix socket (at most 60 s).
    pub fn start_with(dir: tempfile::TempDir, extra: &[&str]) -> ExtraEngine {
        let d = dir.path();
        let log = std::fs::File::create(d.join("log")).unwrap();
        let child = Command::new("dockerd")
            .args(["--data-root", &p(&d.join("data")), "--exec-root", &p(&d.join("exec")), "--pidfile", &p(&d.join("pid"))])
            .args(["-H", &format!("unix://{}", p(&d.join("sock"))), "--bridge=none", "--iptables=false", "--ip-masq=false"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd (scripts/engine.sh start installs it)");
        let engine = ExtraEngine { host: format!("unix://{}", p(&d.join("sock"))), pid: child.id(), child, dir };
        let up = super::wait_until(Duration::from_secs(60), || engine.cli(&["info"]).status.success());
        ensure_docker0();
        assert!(
            up,
            "an extra dockerd did not answer within 60 s: {}",
            std::fs::read_to_string(engine.dir.path().join("log")).unwrap_or_default()
        );
        engine
    }

    /// Runs the docker CLI against this engine.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker").env("DOCKER_HOST", &self.host).args(args).output().unwrap()
    }

    /// Kills this engine's dockerd at once (SIGKILL), as a host that dies would; its
    /// containerd and the containers' shims go too, since nothing would end them.
    pub fn kill(&self) {
        let _ = Command::new("kill").args(["-KILL", &self.pid.to_string()]).status();
        for pid in self.helpers() {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    }

    /// The processes started for this engine's exec-root: its containerd and the shims.
    fn helpers(&self) -> Vec<u32> {
        let exec = p(&self.dir.path().join("exec"));
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&exec) && pid != self.pid {
                out.push(pid);
            }
        }
        out
    }
}

impl Drop for ExtraEngine {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.pid.to_string()).status();
        let child = &mut self.child;
        super::wait_until(Duration::from_secs(20), || child.try_wait().is_ok_and(|s| s.is_some()));
        self.kill();
        let _ = self.child.wait();
        // Mounts a killed engine left (overlay layers, its exec-root's netns) go before its folders.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let root = p(self.dir.path());
        let mut points: Vec<&str> = mounts.lines().filter_map(|l| l.split(' ').nth(1)).filter(|m| m.starts_with(&root)).collect();
        points.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in points {
            let _ = Command::new("umount").args(["-l", m]).stderr(Stdio::null()).status();
        }
        ensure_docker0();
    }
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// Makes the first engine's `docker0` bridge again when another dockerd removed
/// it: 172.17.0.1/16, up, as dockerd makes it.
pub fn ensure_docker0() {
    let exists = Command::new("ip").args(["link", "show", "docker0"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    if exists.is_ok_and(|s| s.success()) {
        return;
    }
    for args in [
        &["link", "add", "docker0", "type", "bridge"][..],
        &["addr", "add", "172.17.0.1/16", "dev", "docker0"],
        &["link", "set", "docker0", "up"],
    ] {
        let _ = Command::new("ip").args(args).status();
    }
}
