//! Faults survived, against the real engine and registry: registry outages,
//! an engine that is down at start or cut mid-build, kill -9 at random
//! moments, repeated stop signals, and a full disk under the state file.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::proxy::{Fault, Proxy};
use common::sockproxy::SocketProxy;
use common::*;
use serde_json::{json, Value};

fn state(env: &Env) -> Value {
    serde_json::from_slice(&std::fs::read(env.state_path()).unwrap()).expect("the state file parses")
}

#[test]
fn registry_down_then_back_the_daemon_goes_on_and_rebuilds_what_changed_meanwhile() {
    if !engine_available() {
        return;
    }
    let env = Env::new("regdown");
    let proxy = Proxy::start(&env.registry.addr);
    env.push_base("base:1", "v1");
    let via = format!("{}/{}/base:1", proxy.addr, env.prefix);
    env.write("app/Dockerfile", &format!("FROM {via}\nRUN cat /etc/base-version > /v\n"));
    let config = env.config(
        json!({"interval": 1, "registry_timeout": "1s", "log_format": "json"}),
        json!({"app": {"dockerfile": "app", "tags": [env.image("app:latest")]}}),
    );
    assert_eq!(env.freshen(&["--once"]).status.code(), Some(0));
    let built = image_id(&env.image("app:latest")).unwrap();
    // The images' records; the build context is checked (no registry) and so seen again.
    let images = |state: Value| -> Value {
        state["inputs"].as_object().unwrap().iter().filter(|(k, _)| k.starts_with("image:")).map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    let images_before = images(state(&env));

    proxy.fail_always(Some(Fault::Drop));
    let log = env.dir.path().join("daemon.log");
    let mut child = spawn_daemon(&config, &log);
    wait_until(Duration::from_secs(60), || count_events(&log, "cycle_finished", &[]) >= 3);
    assert!(count_events(&log, "check_failed", &[]) >= 3, "{}", std::fs::read_to_string(&log).unwrap());
    assert!(child.try_wait().unwrap().is_none(), "the daemon never exits on a registry fault");
    assert_eq!(image_id(&env.image("app:latest")).unwrap(), built, "nothing rebuilt while the registry is down");
    assert_eq!(image_records(&state(&env)), images_before, "state unchanged by failed checks");

    env.push_base("base:1", "v2");
    proxy.fail_always(None);
    assert!(
        wait_event(&log, "build_finished", &[("status", "rebuilt")], Duration::from_secs(60)),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    signal(&child, "-TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(cat(&env.image("app:latest"), "/v"), "v2");
}

#[test]
fn engine_down_at_start_the_daemon_retries_until_it_answers() {
    if !engine_available() {
        return;
    }
    let env = Env::new("enginedown");
    env.push_base("base:1", "v1");
    env.write("app/Dockerfile", &format!("FROM {}\nRUN true\n", env.image("base:1")));
    let config = env
        .config(json!({"interval": "1h", "log_format": "json"}), json!({"app": {"dockerfile": "app", "tags": [env.image("app:latest")]}}));
    let sock = env.dir.path().join("engine.sock");
    let log = env.dir.path().join("daemon.log");
    let mut child = freshen_cmd(&config, &[])
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_event(&log, "engine_unreachable", &[], Duration::from_secs(20)));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none());
    let _proxy = SocketProxy::start(&sock, std::path::Path::new("/var/run/docker.sock"));
    assert!(wait_event(&log, "cycle_finished", &[], Duration::from_secs(60)), "{}", std::fs::read_to_string(&log).unwrap());
    assert!(image_id(&env.image("app:latest")).is_some());
    signal(&child, "-TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn engine_cut_mid_build_fails_that_build_skips_its_descendants_and_leaves_no_half_tagged_image() {
    if !engine_available() {
        return;
    }
    let env = Env::new("enginecut");
    env.push_base("base:1", "v1");
    env.write("a-sibling/Dockerfile", &format!("FROM {}\nRUN echo sibling > /s\n", env.image("base:1")));
    env.write("slow/Dockerfile", &format!("FROM {}\nRUN sleep 4 && echo slow > /slow\n", env.image("base:1")));
    env.write("slow-child/Dockerfile", &format!("FROM {}\nRUN true\n", env.image("slow:latest")));
    let config = env.config(
        json!({"parallelism": 1, "log_format": "json"}),
        json!({
            "a-sibling": {"dockerfile": "a-sibling", "tags": [env.image("sibling:latest")]},
            "slow": {"dockerfile": "slow", "tags": [env.image("slow:latest"), env.image("slow:v1")]},
            "slow-child": {"dockerfile": "slow-child", "tags": [env.image("slow-child:latest")]}
        }),
    );
    let sock = env.dir.path().join("engine.sock");
    let proxy = SocketProxy::start(&sock, std::path::Path::new("/var/run/docker.sock"));
    let log = env.dir.path().join("once.log");
    let child = freshen_cmd(&config, &["--once", "--format", "json"])
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_event(&log, "build_started", &[("build", "slow")], Duration::from_secs(60)));
    std::thread::sleep(Duration::from_millis(1500));
    proxy.cut_all();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", std::fs::read_to_string(&log).unwrap());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcomes"]["a-sibling"]["outcome"], "built");
    assert_eq!(report["outcomes"]["slow"]["outcome"], "failed");
    assert_eq!(report["outcomes"]["slow-child"], json!({"outcome": "skipped", "parent": "slow"}));
    assert!(image_id(&env.image("slow:latest")).is_none() && image_id(&env.image("slow:v1")).is_none(), "no tag moved");
    let st = state(&env);
    assert!(st["builds"].get("slow").is_none());
    assert!(st["builds"].get("a-sibling").is_some(), "state intact");

    // The next cycle retries, and moves both tags together.
    assert_eq!(env.freshen(&["--once"]).status.code(), Some(0));
    let id = image_id(&env.image("slow:latest")).unwrap();
    assert_eq!(image_id(&env.image("slow:v1")), Some(id));
    assert!(image_id(&env.image("slow-child:latest")).is_some());
}

#[test]
fn kill_9_at_random_moments_never_corrupts_state_and_a_restart_rebuilds_only_what_is_stale() {
    if !engine_available() {
        return;
    }
    let env = Env::new("kill9");
    env.push_base("base:1", "v1");
    let mut builds = serde_json::Map::new();
    for i in 0..6 {
        let base = if i < 3 { env.image("base:1") } else { env.image(&format!("b{}:latest", i - 3)) };
        env.write(&format!("b{i}/Dockerfile"), &format!("FROM {base}\nRUN sleep 0.3 && echo {i} > /b\n"));
        builds.insert(
            format!("b{i}"),
            json!({"dockerfile": format!("b{i}"), "tags": [env.image(&format!("b{i}:latest"))], "no_cache": true}),
        );
    }
    let config = env.config(json!({"parallelism": 2, "interval": 1}), Value::Object(builds));
    let mut rng = 0x2545F4914F6CDD1Du64;
    let mut kills = 0;
    for round in 0..50 {
        if round % 10 == 0 {
            // Now and then a new base, so there is always something to rebuild.
            env.push_base("base:1", &format!("v{round}"));
        }
        let mut child = freshen_cmd(&config, &[]).stderr(Stdio::null()).stdout(Stdio::null()).spawn().unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(50 + rng % 2000));
        signal(&child, "-KILL");
        child.wait().unwrap();
        kills += 1;
        if env.state_path().exists() {
            let _ = state(&env); // panics if the file does not parse
        }
        assert!(
            !std::fs::read_dir(env.dir.path()).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains("corrupt")),
            "state never corrupt"
        );
    }
    assert_eq!(kills, 50);
    // What finished and was recorded is not built again, unless something it watches changed since.
    let st = state(&env);
    let done: Vec<String> = st["builds"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, r)| r["origin"] == "built" && image_id(&env.image(&format!("{name}:latest"))).as_deref() == r["image_id"].as_str())
        .map(|(n, _)| n.clone())
        .collect();
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    for name in &done {
        let status = &report["decisions"][name]["status"];
        assert!(status == "fresh" || status == "changed" || status == "parent_rebuilt", "{name} finished before the kills: {status}");
        if status == "changed" {
            let d = &report["decisions"][name];
            assert_eq!(
                st["builds"][name]["built_from"][format!("image:{}", d["image"].as_str().unwrap())],
                d["old"],
                "rebuilt only for a real change"
            );
        }
    }
    let again = env.freshen(&["--once", "--format", "json"]);
    let report: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(report["outcomes"], json!({}), "after the restart everything is fresh");
}

#[test]
fn a_second_stop_signal_exits_at_once_with_state_consistent() {
    if !engine_available() {
        return;
    }
    let env = Env::new("twosignals");
    env.push_base("base:1", "v1");
    env.write("slow/Dockerfile", &format!("FROM {}\nRUN sleep 20\n", env.image("base:1")));
    let config = env.config(
        json!({"shutdown_grace": "60s", "log_format": "json"}),
        json!({"slow": {"dockerfile": "slow", "tags": [env.image("slow:latest")]}}),
    );
    let log = env.dir.path().join("daemon.log");
    let mut child = spawn_daemon(&config, &log);
    assert!(wait_event(&log, "build_started", &[("build", "slow")], Duration::from_secs(30)));
    signal(&child, "-INT");
    assert!(wait_event(&log, "stop_requested", &[], Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "the first signal waits for the running build");
    let t = Instant::now();
    signal(&child, "-TERM");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(t.elapsed() < Duration::from_secs(5), "the second signal stops at once");
    let _ = state(&env);
}

/// A small tmpfs mounted on a folder of the test's, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A fault under the state file: the error it causes, how to cause it, how to mend it.
type StateFault<'a> = (&'static str, &'a dyn Fn(), &'a dyn Fn());

fn remount(mnt: &std::path::Path, mode: &str) {
    let status = Command::new("mount").args(["-o", &format!("remount,{mode}")]).arg(mnt).status().unwrap();
    assert!(status.success(), "remount {mode}");
}

#[test]
fn a_full_disk_or_read_only_state_folder_keeps_the_last_good_state_and_the_daemon_running() {
    if !engine_available() {
        return;
    }
    let env = Env::new("diskfull");
    let mnt = env.dir.path().join("state-fs");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"]).arg(&mnt).status().is_ok_and(|s| s.success());
    if !mounted {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "CI=true but tmpfs cannot be mounted (needs root)");
        eprintln!("SKIPPED: cannot mount a tmpfs here");
        return;
    }
    let _guard = Tmpfs(mnt.clone());
    env.push_base("base:1", "v1");
    env.write("app/Dockerfile", &format!("FROM {}\nRUN cat /etc/base-version > /v\n", env.image("base:1")));
    let config = env.config(
        json!({"interval": 1, "state_file": mnt.join("state.json").to_str().unwrap(), "log_format": "json"}),
        json!({"app": {"dockerfile": "app", "tags": [env.image("app:latest")]}}),
    );
    let log = env.dir.path().join("daemon.log");
    let mut child = spawn_daemon(&config, &log);
    assert!(wait_event(&log, "build_finished", &[("status", "rebuilt")], Duration::from_secs(30)));
    std::thread::sleep(Duration::from_millis(500));
    let state_file = mnt.join("state.json");

    // A full disk, then a folder that cannot be written at all (the file system remounted read-only).
    let fill = mnt.join("fill");
    let faults: [StateFault; 2] = [
        (
            "No space left on device",
            &|| {
                let _ =
                    Command::new("dd").args(["if=/dev/zero", &format!("of={}", fill.display()), "bs=4k"]).stderr(Stdio::null()).status();
            },
            &|| std::fs::remove_file(&fill).unwrap(),
        ),
        ("Read-only file system", &|| remount(&mnt, "ro"), &|| remount(&mnt, "rw")),
    ];
    for (version, (error, break_it, mend_it)) in ["v2", "v3"].into_iter().zip(faults) {
        let good = std::fs::read(&state_file).unwrap();
        break_it();
        env.push_base("base:1", version);
        let before = count_events(&log, "state_not_saved", &[]);
        let said_twice = || count_events(&log, "state_not_saved", &[]) >= before + 2;
        wait_until(Duration::from_secs(30), said_twice);
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(said_twice(), "said every cycle:\n{text}");
        assert!(text.contains(error), "a clear error ({error}):\n{text}");
        assert!(child.try_wait().unwrap().is_none(), "still running");
        assert_eq!(std::fs::read(&state_file).unwrap(), good, "the last good state file is kept");
        mend_it();
        wait_until(Duration::from_secs(30), || std::fs::read(&state_file).unwrap() != good);
        assert_ne!(std::fs::read(&state_file).unwrap(), good, "saved again once it can be ({error})");
    }
    signal(&child, "-TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
