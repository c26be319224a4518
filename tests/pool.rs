//! The engine pool (`options.engines`), through the binary, with real engines:
//! two more dockerd's beside the first ([`common::engines`]), one registry
//! between them.

mod common;

use std::time::Duration;

use common::engines::ExtraEngine;
use common::{build_of, docker, engine_available, report, Env};
use serde_json::{json, Value};

/// Held by each test for its whole run: starting an extra dockerd removes the first
/// engine's `docker0` (made again at once), which a RUN step of the other test could meet.
static ENGINES: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The world of one pool test, `name`, with the pool tests' lock held; `None`
/// (the test skips) when no engine answers outside CI.
fn pool_env(name: &str) -> Option<(std::sync::MutexGuard<'static, ()>, Env)> {
    if !engine_available() {
        return None;
    }
    let lock = ENGINES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    Some((lock, Env::new(name)))
}

/// Each build's (name, parent): a 9-build DAG on `base`.
const DAG: &[(&str, &str)] =
    &[("a1", "base"), ("a2", "base"), ("a3", "base"), ("d1", "base"), ("b1", "a1"), ("b2", "a1"), ("b3", "a2"), ("b4", "a3"), ("c1", "b1")];

/// Writes the DAG's Dockerfiles: each image appends its name to `/etc/lineage`
/// after `sleep` seconds, so an image shows the chain of parents it was built on.
fn write_dag(env: &Env, sleep: u32) -> Value {
    let mut builds = json!({});
    for (name, parent) in DAG {
        let from = if *parent == "base" { env.image("base:1") } else { env.image(&format!("{parent}:latest")) };
        env.write(&format!("{name}/Dockerfile"), &format!("FROM {from}\nRUN sleep {sleep} && echo {name} >> /etc/lineage\n"));
        builds[*name] = json!({"dockerfile": format!("{name}/Dockerfile"), "tags": [env.image(&format!("{name}:latest"))]});
    }
    builds
}

/// The lineage an image of `name` must show: its parents' names, then its own.
fn lineage(name: &str) -> String {
    let mut chain = vec![name];
    let mut at = name;
    while let Some((_, parent)) = DAG.iter().find(|(n, _)| *n == at) {
        if *parent == "base" {
            break;
        }
        chain.push(parent);
        at = parent;
    }
    chain.reverse();
    chain.join("\n")
}

/// Pulls each build's image from the registry into the first engine and checks
/// its lineage and its base's version. The pulled tags stay (the Env's drop removes them):
/// a build of the first engine's would be missing its output otherwise.
fn check_registry_images(env: &Env, base_version: &str) {
    for (name, _) in DAG {
        let image = env.image(&format!("{name}:latest"));
        docker(&["pull", "-q", &image]);
        let out = docker(&["run", "--rm", "--network", "none", &image, "cat", "/etc/lineage", "/etc/base-version"]);
        assert_eq!(out.trim(), format!("{}\n{base_version}", lineage(name)), "{name} in the registry");
    }
}

fn engines_used(r: &Value) -> std::collections::BTreeSet<String> {
    r["builds"].as_array().unwrap().iter().filter_map(|b| b["engine"].as_str().map(str::to_string)).collect()
}

#[test]
fn nine_builds_spread_over_three_engines_and_children_get_their_parents_from_the_registry() {
    let Some((_one_at_a_time, env)) = pool_env("pool") else { return };
    let (e2, e3) = (ExtraEngine::start(), ExtraEngine::start());
    env.push_base("base:1", "v1");
    let builds = write_dag(&env, 1);
    let gone = env.dir.path().join("gone.sock");
    let engines = json!([
        {"name": "first", "host": "unix:///var/run/docker.sock"},
        {"name": "second", "host": e2.host},
        {"name": "third", "host": e3.host},
        {"name": "gone", "host": format!("unix://{}", gone.display()), "platforms": ["linux/amd64"]},
    ]);
    let options = json!({"engines": engines, "parallelism": 3, "push": true, "builder": "classic", "log_format": "json"});
    env.config(options.clone(), builds.clone());

    // plan names the engine each build would use, without asking the engines.
    let plan: Value = serde_json::from_slice(&env.freshen(&["plan", "--format", "json"]).stdout).unwrap();
    let b1 = plan["builds"].as_array().unwrap().iter().find(|b| b["name"] == "b1").unwrap();
    assert_eq!(b1["engines"], json!(["first", "second", "third", "gone"]), "{plan}");
    assert!(b1["engine"].is_string(), "{plan}");

    let out = env.freshen(&["--once", "--format", "json"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let r = report(&out);
    for (name, _) in DAG {
        assert_eq!(build_of(&r, name)["status"], "rebuilt", "{name}: {r}");
        assert!(build_of(&r, name)["digest"].is_string(), "{name} pushed: {r}");
    }
    assert_eq!(engines_used(&r), ["first", "second", "third"].map(String::from).into(), "all three engines used: {r}");
    assert_eq!(r["engines_down"], json!(["gone"]), "the engine that does not answer is left out: {r}");
    let down: Vec<&str> = stderr.lines().filter(|l| l.contains("\"engine_down\"")).collect();
    assert_eq!(down.len(), 1, "one line for the engine left out: {stderr}");
    check_registry_images(&env, "v1");

    // A new base: every image is built again, each child on the parent the registry has now,
    // though the other engines still hold the parents' first images under the same tags.
    env.push_base("base:1", "v2");
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let r = report(&out);
    for (name, _) in DAG {
        assert_eq!(build_of(&r, name)["status"], "rebuilt", "{name}: {r}");
        assert!(build_of(&r, name)["digest"].is_string(), "{name} pushed: {r}");
    }
    check_registry_images(&env, "v2");
    // The state file records where each image was built; the next run is fresh, asking each image of its engine.
    let built = r;
    let out = env.freshen(&["--once", "--format", "json"]);
    let r = report(&out);
    assert!(r["builds"].as_array().unwrap().iter().all(|b| b["status"] == "fresh"), "{r}");
    // explain names the engine that built it; with a new base, the engine it would be built on now.
    let explain = |build: &str| -> Value { serde_json::from_slice(&env.freshen(&["explain", build, "--format", "json"]).stdout).unwrap() };
    assert_eq!(explain("c1")["built_on"], build_of(&built, "c1")["engine"], "{built}");
    env.push_base("base:1", "v3");
    let e = explain("a2");
    assert!(["first", "second", "third"].contains(&e["engine"].as_str().unwrap_or_default()), "{e}");

    // Config errors, exit 2, each saying what to do.
    let mut no_push = options.clone();
    no_push["push"] = false.into();
    env.config(no_push, builds.clone());
    let out = env.freshen(&["--once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("build b1 is built on build a1's image") && err.contains("set \"push\": true on a1"), "{err}");
    let mut s390x = builds.clone();
    s390x["d1"]["platform"] = "linux/s390x".into();
    env.config(options, s390x);
    let out = env.freshen(&["--once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("build d1: no engine builds for linux/s390x"), "{err}");
}

#[test]
fn a_build_whose_engine_is_lost_goes_once_to_another_and_the_others_complete() {
    let Some((_one_at_a_time, env)) = pool_env("pool-lost") else { return };
    let e2 = ExtraEngine::start();
    env.push_base("base:1", "v1");
    let mut builds = json!({});
    for name in ["x1", "x2", "x3", "x4"] {
        env.write(&format!("{name}/Dockerfile"), &format!("FROM {}\nRUN sleep 4 && echo {name} > /etc/name\n", env.image("base:1")));
        builds[name] = json!({"dockerfile": format!("{name}/Dockerfile"), "tags": [env.image(&format!("{name}:latest"))]});
    }
    let engines = json!([
        {"name": "first", "host": "unix:///var/run/docker.sock", "capacity": 2},
        {"name": "second", "host": e2.host, "capacity": 2},
    ]);
    let cfg = env.config(json!({"engines": engines, "parallelism": 4, "push": true, "builder": "classic", "log_format": "json"}), builds);
    let log = env.dir.path().join("freshen.log");
    let child = common::freshen_cmd(&cfg, &["--once", "--format", "json"])
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        common::wait_event(&log, "build_started", &[("engine", "second")], Duration::from_secs(60)),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    std::thread::sleep(Duration::from_millis(1500));
    e2.kill();
    let out = child.wait_with_output().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(out.status.code(), Some(0), "{text}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let retried: Vec<&Value> = r["builds"].as_array().unwrap().iter().filter(|b| b["engine_lost"] == "second").collect();
    assert!(!retried.is_empty(), "a build lost with its engine: {r}");
    for b in r["builds"].as_array().unwrap() {
        assert_eq!(b["status"], "rebuilt", "{r}");
    }
    for b in &retried {
        assert_eq!(b["engine"], "first", "retried on the engine left: {r}");
    }
    assert_eq!(common::count_events(&log, "engine_lost", &[("engine", "second")]), 1, "{text}");
    for name in ["x1", "x2", "x3", "x4"] {
        let image = env.image(&format!("{name}:latest"));
        assert_eq!(docker(&["run", "--rm", "--network", "none", &image, "cat", "/etc/name"]).trim(), name);
    }
}

/// Makes a CA, a server certificate for 127.0.0.1 and a client certificate in
/// `dir` with openssl, as Docker's "Protect the Docker daemon socket" does; and a second CA that signed nothing.
fn make_certificates(dir: &std::path::Path) {
    let run = |args: &str| {
        let out = std::process::Command::new("openssl").args(args.split(' ')).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "openssl {args}: {}", String::from_utf8_lossy(&out.stderr));
    };
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n").unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for ca in ["ca", "other-ca"] {
        run(&format!("req -x509 -newkey rsa:2048 -nodes -keyout {ca}-key.pem -out {ca}.pem -days 1 -subj /CN=freshen-test-{ca}"));
    }
    run("req -newkey rsa:2048 -nodes -keyout server-key.pem -out server.csr -subj /CN=127.0.0.1");
    run("x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out server-cert.pem -days 1 -extfile server.ext");
    run("req -newkey rsa:2048 -nodes -keyout key.pem -out client.csr -subj /CN=freshen");
    run("x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out cert.pem -days 1 -extfile client.ext");
}

#[test]
fn an_engine_over_tls_with_client_certificates_builds_and_one_with_an_unknown_ca_is_refused() {
    let Some((_one_at_a_time, env)) = pool_env("pool-tls") else { return };
    let tls = env.dir.path().join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    make_certificates(&tls);
    let port = common::free_port();
    let t = |f: &str| tls.join(f).display().to_string();
    let dir = tempfile::Builder::new().prefix("fe").tempdir_in("/tmp").unwrap();
    let tcp = format!("tcp://127.0.0.1:{port}");
    let args =
        ["-H", &tcp, "--tlsverify", "--tlscacert", &t("ca.pem"), "--tlscert", &t("server-cert.pem"), "--tlskey", &t("server-key.pem")];
    let remote = ExtraEngine::start_with(dir, &args);
    env.push_base("base:1", "v1");
    env.write("app/Dockerfile", &format!("FROM {}\nRUN echo app > /etc/name\n", env.image("base:1")));
    let builds = json!({"app": {"dockerfile": "app/Dockerfile", "tags": [env.image("app:latest")]}});
    let engine = |ca: &str| json!([{"name": "remote", "host": tcp, "tls": {"ca_file": t(ca), "cert_file": t("cert.pem"), "key_file": t("key.pem")}}]);
    env.config(json!({"engines": engine("ca.pem"), "builder": "classic"}), builds.clone());
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let r = report(&out);
    assert_eq!(build_of(&r, "app")["status"], "rebuilt", "{r}");
    assert_eq!(build_of(&r, "app")["engine"], "remote", "{r}");
    assert!(remote.cli(&["image", "inspect", &env.image("app:latest")]).status.success(), "the image is on the engine reached over TLS");

    // An engine whose certificate no configured CA signed does not answer: with it alone, --once exits 1 saying why.
    env.config(json!({"engines": engine("other-ca.pem"), "builder": "classic"}), builds);
    let out = env.freshen(&["--once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("tcp://127.0.0.1:{port} (TLS)")) && err.to_lowercase().contains("certificate"), "{err}");
}
