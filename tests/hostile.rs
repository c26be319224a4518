//! Hostile and careless input, through the binary: a registry front that sends
//! absurd headers, and configs with values that once crashed, spun or misled.
//! Each row is what a user relies on: no crash, no hang, a clear error.

mod common;

use common::proxy::Fault;
use common::*;
use serde_json::json;

/// `validate` on a config with `options` and one build `extra` (merged into the build); returns (exit code, stderr).
fn validate(options: serde_json::Value, name: &str, extra: serde_json::Value) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("app")).unwrap();
    std::fs::write(dir.path().join("app/Dockerfile"), "FROM alpine\n").unwrap();
    let mut build = json!({"dockerfile": "app", "tags": ["registry.example.com/app:1"]});
    build.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let config = json!({"options": options, "builds": {name: build}});
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let out = freshen_cmd(&dir.path().join("config.json"), &["validate"]).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn durations_out_of_range_are_config_errors_not_crashes_or_spins() {
    for (key, value, says) in [
        ("interval", "1ns", "interval must be from 1s to 30days"),
        ("interval", "0s", "interval must be from 1s"),
        ("registry_timeout", "0s", "registry_timeout must be from 1s to 1h"),
        ("shutdown_grace", "300000000000y", "shutdown_grace must be from 0s to 1day"),
        ("settle", "100years", "settle must be from 0s to 30days"),
    ] {
        let (code, err) = validate(json!({key: value}), "app", json!({}));
        assert_eq!(code, Some(2), "{key}={value}: {err}");
        assert!(err.contains(&format!("/options/{key}")) && err.contains(says), "{key}={value}: {err}");
    }
    let (code, err) = validate(json!({"shutdown_grace": 18446744073709551615u64}), "app", json!({}));
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn a_digest_reference_is_not_a_tag() {
    let tag = format!("registry.example.com/app@sha256:{}", "a".repeat(64));
    let (code, err) = validate(json!({}), "app", json!({"tags": [tag]}));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/builds/app/tags") && err.contains("is a digest reference, not a tag"), "{err}");
}

#[test]
fn a_build_name_with_control_characters_is_refused_and_never_printed_raw() {
    let (code, err) = validate(json!({}), "web\u{1b}[31m\nINFO forged", json!({}));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("contains a control character"), "{err}");
    assert!(!err.contains('\u{1b}'), "no raw escape reaches the terminal: {err:?}");
    assert!(err.contains("\\u{1b}"), "the name is shown escaped: {err}");
}

#[test]
fn a_huge_retry_after_is_capped_at_a_day_without_a_crash() {
    if !engine_available() {
        return;
    }
    let (env, proxy) = built_behind_proxy("hugeretry", &["one"]);
    proxy.clear();
    proxy.fail_always(Some(Fault::Status(429, Some(u64::MAX))));
    set_option(&env, "log_format", json!("json"));
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "a failed check, not an abort: {}", String::from_utf8_lossy(&out.stderr));
    let check = &report(&out)["checks"][0];
    assert_eq!(check["kind"], "rate_limited");
    assert!(check["error"].as_str().unwrap().contains("no requests for 86400 s"), "{check}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("retry_after_capped"));
}

#[test]
fn a_rate_limit_window_of_centuries_is_capped_at_a_day() {
    if !engine_available() {
        return;
    }
    let (env, proxy) = built_behind_proxy("hugewindow", &["one"]);
    proxy.set_response_headers(&["RateLimit-Limit: 100;w=9223372036854775807", "RateLimit-Remaining: 0;w=9223372036854775807"]);
    assert_eq!(env.freshen(&["--once"]).status.code(), Some(0));
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(env.state_path()).unwrap()).unwrap();
    let registry = proxy.addr.clone();
    assert_eq!(state["registries"][&registry]["window_secs"], 86400, "the window is capped: {}", state["registries"]);
}

/// Makes a FIFO at `path`.
fn mkfifo(path: &std::path::Path) {
    let status = std::process::Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

/// Runs `cmd` and kills it after `limit`: a hang is a test failure, not a hung suite.
fn output_within(cmd: &mut std::process::Command, limit: std::time::Duration) -> std::process::Output {
    let child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output().unwrap()));
    match rx.recv_timeout(limit) {
        Ok(out) => out,
        Err(_) => {
            let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            panic!("still running after {limit:?}: freshen blocked");
        }
    }
}

#[test]
fn a_fifo_or_a_device_as_the_config_is_a_clear_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("config.json");
    mkfifo(&fifo);
    let out = output_within(&mut freshen_cmd(&fifo, &["validate"]), std::time::Duration::from_secs(10));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("is a FIFO, not a regular file"), "{err}");

    let zero = dir.path().join("zero.json");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let out = output_within(&mut freshen_cmd(&zero, &["validate"]), std::time::Duration::from_secs(10));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("is a character device"), "no 7 GB read of /dev/zero: {err}");
}

#[test]
fn a_fifo_password_file_or_dockerfile_is_an_error_for_its_own_key_or_build() {
    let dir = tempfile::tempdir().unwrap();
    mkfifo(&dir.path().join("password"));
    for b in ["good", "bad"] {
        std::fs::create_dir_all(dir.path().join(b)).unwrap();
    }
    std::fs::write(dir.path().join("good/Dockerfile"), "FROM alpine\n").unwrap();
    mkfifo(&dir.path().join("bad/Dockerfile"));
    let builds = json!({
        "good": {"dockerfile": "good/Dockerfile", "tags": ["registry.example.com/good:1"]},
        "bad": {"dockerfile": "bad/Dockerfile", "context": "bad", "tags": ["registry.example.com/bad:1"]}
    });
    let config = dir.path().join("config.json");
    std::fs::write(&config, json!({"builds": builds.clone()}).to_string()).unwrap();
    let out = output_within(&mut freshen_cmd(&config, &["plan", "--format", "json"]), std::time::Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1), "one build has an error");
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let by_name = |n: &str| plan["builds"].as_array().unwrap().iter().find(|b| b["name"] == n).unwrap().clone();
    assert!(by_name("bad")["error"].as_str().unwrap().contains("is a FIFO"), "{}", by_name("bad"));
    assert_eq!(by_name("good")["base"], "docker.io/library/alpine:latest", "the other build resolves");

    let registries = json!({"registry.example.com": {"username": "ci", "password_file": "password"}});
    std::fs::write(&config, json!({"builds": builds, "registries": registries}).to_string()).unwrap();
    let out = output_within(&mut freshen_cmd(&config, &["validate"]), std::time::Duration::from_secs(10));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("/registries/registry.example.com/password_file") && err.contains("is a FIFO"), "{err}");
}

#[test]
fn a_fifo_config_on_sighup_is_refused_and_the_daemon_still_stops_on_sigterm() {
    if !engine_available() {
        return;
    }
    let env = Env::new("fifohup");
    let config = one_build(&env, json!({"interval": "1h", "log_format": "json"}), json!({}));
    let log = env.dir.path().join("daemon.log");
    let mut child = spawn_daemon(&config, &log);
    assert!(wait_event(&log, "cycle_finished", &[], std::time::Duration::from_secs(60)));
    std::fs::remove_file(&config).unwrap();
    mkfifo(&config);
    signal(&child, "-HUP");
    assert!(wait_event(&log, "config_refused", &[], std::time::Duration::from_secs(10)), "the reload is refused, not blocked on the FIFO");
    signal(&child, "-TERM");
    let stopped = wait_until(std::time::Duration::from_secs(10), || child.try_wait().unwrap().is_some());
    if !stopped {
        let _ = child.kill();
    }
    assert!(stopped, "SIGTERM is still answered");
    let refused = log_events(&log).into_iter().find(|e| e["event"] == "config_refused").unwrap();
    assert!(refused["error"].as_str().unwrap().contains("is a FIFO"), "{refused}");
}

#[test]
fn a_fifo_dockerignore_fails_its_build_alone() {
    if !engine_available() {
        return;
    }
    let env = Env::new("fifoignore");
    env.push_base("base:1", "v1");
    for b in ["good", "bad"] {
        env.write(&format!("{b}/Dockerfile"), &format!("FROM {}\n", env.image("base:1")));
    }
    mkfifo(&env.dir.path().join("bad/.dockerignore"));
    env.config(
        json!({}),
        json!({"good": {"dockerfile": "good", "tags": [env.image("good:latest")]}, "bad": {"dockerfile": "bad", "tags": [env.image("bad:latest")]}}),
    );
    let out = output_within(
        &mut freshen_cmd(&env.dir.path().join("config.json"), &["--once", "--format", "json"]),
        std::time::Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(1));
    let r = report(&out);
    assert_eq!(r["outcomes"]["good"]["outcome"], "built", "the other build goes on");
    assert_eq!(r["outcomes"]["bad"]["kind"], "context_unreadable", "{}", r["outcomes"]["bad"]);
    assert!(r["outcomes"]["bad"]["error"].as_str().unwrap().contains(".dockerignore: is a FIFO"), "{}", r["outcomes"]["bad"]);
}

#[test]
fn an_invalid_digest_is_a_check_error_never_stored_nor_put_in_a_url() {
    if !engine_available() {
        return;
    }
    let (env, proxy) = built_behind_proxy("baddigest", &["one"]);
    let read_state = || -> serde_json::Value { serde_json::from_slice(&std::fs::read(env.state_path()).unwrap()).unwrap() };
    let before = image_records(&read_state());
    let long = format!("sha256:{}", "a".repeat(300_000));
    for digest in ["sha256:xyz", "md5:d41d8cd98f00b204e9800998ecf8427e", long.as_str(), "../../../../token?steal=1#"] {
        // Sent first, so that it is the header freshen reads; with an index media type, a valid
        // digest would be followed by a GET of /v2/<name>/manifests/<digest>.
        proxy.set_response_headers(&[&format!("Docker-Content-Digest: {digest}"), "Content-Type: application/vnd.oci.image.index.v1+json"]);
        proxy.clear();
        let out = env.freshen(&["--once", "--format", "json"]);
        assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
        let check = &report(&out)["checks"][0];
        assert_eq!(check["kind"], "protocol", "{check}");
        assert!(check["error"].as_str().unwrap().len() < 400, "never shown in full");
        assert_eq!(proxy.count("GET"), 0, "the digest never goes into a URL: {:?}", proxy.requests());
        assert_eq!(image_records(&read_state()), before, "never stored");
    }
}

#[test]
fn a_changed_base_that_cannot_be_pulled_fails_the_build_instead_of_building_on_the_stale_one() {
    if !engine_available() {
        return;
    }
    let (env, proxy) = built_behind_proxy("nopull", &["one"]);
    let before = image_id(&env.image("one-app:latest")).unwrap();
    let read_state = || -> serde_json::Value { serde_json::from_slice(&std::fs::read(env.state_path()).unwrap()).unwrap() };
    let recorded = read_state()["builds"]["one-app"]["built_from"].clone();
    env.push_base("one:1", "v2");
    proxy.fail_gets(Some(Fault::Status(500, None)));
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let r = report(&out);
    assert_eq!(r["decisions"]["one-app"]["status"], "changed");
    assert_eq!(r["outcomes"]["one-app"]["kind"], "pull_failed", "not `rebuilt` on the stale base: {}", r["outcomes"]);
    assert_eq!(image_id(&env.image("one-app:latest")).unwrap(), before, "no tag moved");
    assert_eq!(read_state()["builds"]["one-app"]["built_from"], recorded, "nothing recorded as built from the new digest");
    proxy.fail_gets(None);
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(report(&out)["outcomes"]["one-app"]["outcome"], "built", "tried again next cycle, once the pull works");
}

#[test]
fn a_second_freshen_on_the_same_state_file_exits_naming_the_first() {
    if !engine_available() {
        return;
    }
    let env = Env::new("twodaemons");
    let config = one_build(&env, json!({"interval": "1h", "log_format": "json"}), json!({}));
    let log = env.dir.path().join("first.log");
    let mut first = spawn_daemon(&config, &log);
    assert!(wait_event(&log, "cycle_finished", &[], std::time::Duration::from_secs(60)));
    let out = output_within(&mut freshen_cmd(&config, &["--once"]), std::time::Duration::from_secs(30));
    let _ = std::process::Command::new("kill").args(["-TERM", &first.id().to_string()]).status();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is in use by another freshen") && err.contains(&format!("(PID {})", first.id())), "{err}");
    assert!(first.wait().unwrap().success());
    assert_eq!(count_events(&log, "build_finished", &[]), 1, "one build in all, by the first freshen");
}

#[test]
fn two_configs_in_one_folder_get_their_own_state_files() {
    if !engine_available() {
        return;
    }
    let env = Env::new("twoconfigs");
    env.push_base("base:1", "v1");
    for name in ["a", "b"] {
        env.write(&format!("{name}/Dockerfile"), &format!("FROM {}\n", env.image("base:1")));
        let builds =
            json!({name: {"dockerfile": name, "tags": [env.image(&format!("{name}:latest"))], "labels": {"freshen.test": env.prefix}}});
        let config = env.write(&format!("{name}.json"), &json!({"builds": builds}).to_string());
        let out = freshen_cmd(&config, &["--once"]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    }
    for name in ["a", "b"] {
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(env.dir.path().join(format!("{name}.state.json"))).unwrap()).unwrap();
        assert_eq!(state["builds"].as_object().unwrap().keys().collect::<Vec<_>>(), [name], "{name}.state.json holds {name} alone");
    }
    assert!(!env.dir.path().join("freshen-state.json").exists());
}

/// Builds `slow` (Dockerfile steps `run`) and `quick` with `options`; returns the report, and
/// whether any container from the base still runs a few seconds later.
fn timed_builds(name: &str, options: serde_json::Value, run: &str) -> (serde_json::Value, bool) {
    let env = Env::new(name);
    env.push_base("base:1", "v1");
    env.write("slow/Dockerfile", &format!("FROM {}\nRUN {run}\n", env.image("base:1")));
    env.write("quick/Dockerfile", &format!("FROM {}\nRUN true\n", env.image("base:1")));
    let config = env.config(
        options,
        json!({"slow": {"dockerfile": "slow", "tags": [env.image("slow:latest")]}, "quick": {"dockerfile": "quick", "tags": [env.image("quick:latest")]}}),
    );
    let started = std::time::Instant::now();
    let out = output_within(&mut freshen_cmd(&config, &["--once", "--format", "json"]), std::time::Duration::from_secs(60));
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "the deadline ended the build, not the build itself");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let base = env.image("base:1");
    let running = || !docker(&["ps", "-q", "--filter", &format!("ancestor={base}")]).is_empty();
    let stopped = wait_until(std::time::Duration::from_secs(15), || !running());
    (report(&out), !stopped)
}

#[test]
fn a_build_whose_engine_stream_goes_silent_fails_at_the_idle_deadline_and_is_cancelled() {
    if !engine_available() {
        return;
    }
    let (r, still_running) = timed_builds("idle", json!({"build_idle_timeout": "3s", "parallelism": 2}), "sleep 40");
    assert_eq!(r["outcomes"]["slow"]["kind"], "timed_out", "{}", r["outcomes"]);
    assert!(r["outcomes"]["slow"]["error"].as_str().unwrap().contains("stalled"), "{}", r["outcomes"]["slow"]);
    assert_eq!(r["outcomes"]["quick"]["outcome"], "built", "the other build goes on");
    assert!(!still_running, "the build was cancelled on the engine");
}

#[test]
fn a_build_over_build_timeout_fails_even_while_it_prints() {
    if !engine_available() {
        return;
    }
    let run = "for i in $(seq 40); do echo tick $i; sleep 1; done";
    let (r, still_running) = timed_builds("buildtimeout", json!({"build_timeout": "4s"}), run);
    let slow = &r["outcomes"]["slow"];
    assert_eq!(slow["kind"], "timed_out", "{slow}");
    assert!(slow["error"].as_str().unwrap().contains("timed out") && slow["error"].as_str().unwrap().contains("tick"), "{slow}");
    assert!(!still_running, "the build was cancelled on the engine");
}

#[test]
fn one_huge_build_output_line_is_cut_at_64_kib() {
    if !engine_available() {
        return;
    }
    let env = Env::new("hugeline");
    env.push_base("base:1", "v1");
    let run = format!("FROM {}\nRUN head -c 10000000 /dev/zero | tr '\\\\0' a; echo; false\n", env.image("base:1"));
    env.write("classic/Dockerfile", &run);
    env.write("buildkit/Dockerfile", &run);
    let build = |b: &str| json!({"dockerfile": b, "tags": [env.image(&format!("{b}:latest"))], "builder": b});
    let config = env.config(json!({}), json!({"classic": build("classic"), "buildkit": build("buildkit")}));
    let out = output_within(&mut freshen_cmd(&config, &["--once", "--format", "json"]), std::time::Duration::from_secs(120));
    assert_eq!(out.status.code(), Some(1));
    let r = report(&out);
    // The classic builder streams the whole line; BuildKit sends it in log chunks of its own.
    for (builder, cut) in [("classic", "[line cut: 9934464 more bytes]"), ("buildkit", "[line cut: ")] {
        let error = r["outcomes"][builder]["error"].as_str().unwrap();
        assert!(error.contains(cut), "{builder}: {}", &error[error.len().saturating_sub(300)..]);
        assert!(error.len() < 200_000, "the 10 MB line is not in the report: {} bytes", error.len());
    }
    // BuildKit sends at most 2 MiB of a step's log (its step log limit), each line cut at 64 KiB here.
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.len() < 3_000_000, "nor in the debug log: {} bytes", log.len());
}

#[test]
fn engine_errors_show_their_cause() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("app")).unwrap();
    std::fs::write(dir.path().join("app/Dockerfile"), "FROM alpine\n").unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, json!({"builds": {"app": {"dockerfile": "app", "tags": ["x/app"]}}}).to_string()).unwrap();
    let port = free_port();
    let out = freshen_cmd(&config, &["--once"]).env("DOCKER_HOST", format!("tcp://127.0.0.1:{port}")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("Connection refused"), "the cause, not just `client error (Connect)`: {err}");
}

#[test]
fn explain_leaves_a_corrupt_state_file_where_it_is_and_a_run_clears_stale_temp_files() {
    if !engine_available() {
        return;
    }
    let env = Env::new("explaincorrupt");
    let config = one_build(&env, json!({}), json!({}));
    std::fs::write(env.state_path(), "{not json").unwrap();
    let out = freshen_cmd(&config, &["explain", "app"]).output().unwrap();
    assert!(out.status.code().is_some(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(env.state_path()).unwrap(), "{not json", "explain writes nothing");
    let names = || -> Vec<String> {
        std::fs::read_dir(env.dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
    };
    assert!(!names().iter().any(|n| n.contains("corrupt")), "{:?}", names());

    std::fs::write(env.dir.path().join(".state.json.tmp.Ab12"), "half a state file").unwrap();
    std::fs::write(env.dir.path().join(".other.json.tmp.Cd34"), "another state file's").unwrap();
    assert_eq!(env.freshen(&["--once"]).status.code(), Some(0));
    let names = names();
    assert!(!names.contains(&".state.json.tmp.Ab12".to_string()), "the stale temporary file is gone: {names:?}");
    assert!(names.contains(&".other.json.tmp.Cd34".to_string()), "another state file's is left alone");
    assert!(names.iter().any(|n| n.starts_with("state.corrupt-")), "the run moved the corrupt file aside: {names:?}");
}

#[test]
fn a_sighup_right_after_start_does_not_kill_the_daemon() {
    if !engine_available() {
        return;
    }
    let env = Env::new("earlyhup");
    let config = one_build(&env, json!({"interval": "1h", "log_format": "json"}), json!({}));
    let log = env.dir.path().join("daemon.log");
    let mut child = spawn_daemon(&config, &log);
    std::thread::sleep(std::time::Duration::from_millis(10));
    signal(&child, "-HUP");
    let started = wait_event(&log, "cycle_finished", &[], std::time::Duration::from_secs(60));
    let alive = child.try_wait().unwrap().is_none();
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(alive && started, "the daemon survived the early SIGHUP and ran (exit {status:?})");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_state_file_that_is_the_config_a_dockerfile_or_inside_a_context_is_refused() {
    for (state_file, says) in [
        ("config.json", "is the config file itself"),
        ("app/Dockerfile", "is build app's Dockerfile"),
        ("app/state.json", "is inside build app's context"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("app")).unwrap();
        std::fs::write(dir.path().join("app/Dockerfile"), "FROM alpine\n").unwrap();
        let config = dir.path().join("config.json");
        let text = json!({"options": {"state_file": state_file}, "builds": {"app": {"dockerfile": "app", "tags": ["x/app"]}}}).to_string();
        std::fs::write(&config, &text).unwrap();
        let out = freshen_cmd(&config, &["validate"]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{state_file}: {err}");
        assert!(err.contains("/options/state_file") && err.contains(says), "{state_file}: {err}");
        let out = freshen_cmd(&config, &["--once"]).env("DOCKER_HOST", "unix:///nonexistent.sock").output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(std::fs::read_to_string(&config).unwrap(), text, "the config is never touched");
    }
}

#[test]
fn a_context_keeps_non_utf8_names_byte_for_byte_archives_a_fifo_and_skips_a_socket() {
    use std::os::unix::ffi::OsStrExt;
    if !engine_available() {
        return;
    }
    let env = Env::new("oddnames");
    env.push_base("base:1", "v1");
    let ctx = env.dir.path().join("app");
    std::fs::create_dir_all(&ctx).unwrap();
    let name = |b: u8| std::ffi::OsStr::from_bytes(&[b'a', b]).to_owned();
    std::fs::write(ctx.join(name(0xff)), "ff").unwrap();
    std::fs::write(ctx.join(name(0xfe)), "fe").unwrap();
    mkfifo(&ctx.join("pipe"));
    let _socket = std::os::unix::net::UnixListener::bind(ctx.join("sock")).unwrap();
    let names = [r#"test "$(cat /ctx/a$(printf '\377'))" = ff"#, r#"test "$(cat /ctx/a$(printf '\376'))" = fe"#, "test ! -e /ctx/sock"];
    let runs = |checks: &[&str]| -> String { checks.iter().map(|c| format!("RUN {c}\n")).collect() };
    let dockerfile = |checks: &[&str]| format!("FROM {}\nCOPY . /ctx/\n{}", env.image("base:1"), runs(checks));
    // The FIFO arrives as a FIFO under the classic builder; BuildKit's own copy of an
    // uploaded context leaves FIFOs out, so under it only the names are checked.
    env.write("classic.Dockerfile", &dockerfile(&[names[0], names[1], "test -p /ctx/pipe", names[2]]));
    env.write("buildkit.Dockerfile", &dockerfile(&names));
    let build = |builder: &str| json!({"dockerfile": format!("{builder}.Dockerfile"), "context": "app", "tags": [env.image(&format!("{builder}:latest"))], "builder": builder});
    let config = env.config(json!({"parallelism": 2}), json!({"classic": build("classic"), "buildkit": build("buildkit")}));
    let out = output_within(&mut freshen_cmd(&config, &["--once", "--format", "json"]), std::time::Duration::from_secs(60));
    let r = report(&out);
    for builder in ["classic", "buildkit"] {
        assert_eq!(r["outcomes"][builder]["outcome"], "built", "each RUN check held under {builder}: {}", r["outcomes"][builder]);
    }
}
