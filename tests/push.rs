//! `push` through the binary, on the real engine and registry: every tag of a
//! rebuilt image is pushed and ends up at one digest, which the report and the
//! state record; a registry that refuses the push gives `push_failed`, skips
//! the build's children, and the next cycle pushes.

mod common;

use common::proxy::{Fault, Proxy};
use common::*;
use serde_json::{json, Value};

#[test]
fn push_sends_every_tag_to_one_digest_and_records_it_in_the_report_and_state() {
    if !engine_available() {
        return;
    }
    let env = Env::new("push");
    env.push_base("base:1", "v1");
    env.write("app/Dockerfile", &format!("FROM {}\nRUN echo app > /app\n", env.image("base:1")));
    let tags = [env.image("app:1"), env.image("app:latest"), env.image("mirror/app:1")];
    env.config(json!({"push": true}), json!({"app": {"dockerfile": "app", "tags": tags}}));
    env.registry.clear_log();
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let r = report(&out);
    let app = build_of(&r, "app");
    let digest = app["digest"].as_str().unwrap_or_else(|| panic!("no digest in {app}")).to_string();
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{digest}");
    for tag in &tags {
        assert_eq!(app["pushed"][tag], digest.as_str(), "{app}");
        assert_eq!(registry_digest(tag).as_deref(), Some(digest.as_str()), "the registry serves {tag} at the one digest");
    }
    let puts = env.registry.requests().iter().filter(|l| l.starts_with("PUT ") && l.contains("/manifests/")).count();
    assert_eq!(puts, 3, "one manifest PUT a tag: {:?}", env.registry.requests());
    let state: Value = serde_json::from_slice(&std::fs::read(env.state_path()).unwrap()).unwrap();
    assert_eq!(state["builds"]["app"]["pushed"][&tags[0]], digest.as_str(), "{}", state["builds"]["app"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(text.matches("event=\"pushed\"").count(), 3, "one pushed event a tag: {text}");
}

#[test]
fn a_refused_push_is_push_failed_skips_the_children_and_the_next_cycle_pushes() {
    if !engine_available() {
        return;
    }
    let env = Env::new("pushfail");
    let proxy = Proxy::start(&env.registry.addr);
    env.push_base("base:1", "v1");
    // The tags are on the proxy's address: the engine pushes through it; the base is checked directly.
    let app = format!("{}/{}/app:1", proxy.addr, env.prefix);
    let child = format!("{}/{}/child:1", proxy.addr, env.prefix);
    env.write("app/Dockerfile", &format!("FROM {}\nRUN echo app > /app\n", env.image("base:1")));
    env.write("child/Dockerfile", &format!("FROM {app}\nRUN echo child > /child\n"));
    // The engine retries a failing upload for minutes; push_timeout bounds it.
    env.config(
        json!({"push": true, "push_timeout": "15s"}),
        json!({"app": {"dockerfile": "app", "tags": [app]}, "child": {"dockerfile": "child", "tags": [child]}}),
    );
    proxy.fail_always(Some(Fault::Status(500, None)));
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let r = report(&out);
    assert_eq!(build_of(&r, "app")["status"], "push_failed", "{}", r["builds"]);
    assert_eq!(r["outcomes"]["app"]["kind"], "push_failed");
    let error = r["outcomes"]["app"]["error"].as_str().unwrap();
    assert!(error.contains(&format!("push of {app} failed: no end within 15s (push_timeout)")), "{error}");
    assert_eq!(build_of(&r, "child")["status"], "skipped", "a child would build on an image the registry lacks");
    assert!(proxy.count("PUT") + proxy.count("POST") + proxy.count("HEAD") > 0, "the engine tried the registry");
    let state: Value = serde_json::from_slice(&std::fs::read(env.state_path()).unwrap()).unwrap();
    assert_eq!(state["builds"]["app"]["push_pending"], true, "state knows app was built but not pushed: {}", state["builds"]["app"]);
    let built = image_id(&app).expect("the tag moved locally");
    assert_eq!(state["builds"]["app"]["image_id"], built.as_str());
    let plan = report(&env.freshen(&["--once", "--dry-run", "--format", "json"]));
    assert_eq!(build_of(&plan, "app")["status"], "would_push", "{}", plan["builds"]);

    // The engine may still be retrying the cancelled uploads of the same layers, which a new push waits for.
    proxy.fail_always(None);
    set_option(&env, "push_timeout", json!("3m"));
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let r = report(&out);
    assert_eq!(build_of(&r, "app")["status"], "pushed", "a push only: {}", r["builds"]);
    assert_eq!(r["decisions"]["app"]["status"], "push_pending");
    assert!(build_of(&r, "app")["log"].is_null(), "nothing was built, so no build log");
    assert_eq!(image_id(&app).as_deref(), Some(built.as_str()), "the same image, not a rebuild");
    let digest = build_of(&r, "app")["digest"].as_str().unwrap().to_string();
    assert_eq!(registry_digest(&env.image("app:1")).as_deref(), Some(digest.as_str()), "pushed once the registry is back");
    assert_eq!(build_of(&r, "child")["status"], "rebuilt", "the child builds on the pushed parent");
    assert!(build_of(&r, "child")["digest"].is_string());
    let state: Value = serde_json::from_slice(&std::fs::read(env.state_path()).unwrap()).unwrap();
    assert!(state["builds"]["app"]["push_pending"].is_null(), "{}", state["builds"]["app"]);
    assert_eq!(state["builds"]["app"]["pushed"][&app], digest.as_str());
    // Nothing pending: the third cycle does nothing.
    let r = report(&env.freshen(&["--once", "--format", "json"]));
    assert_eq!(build_of(&r, "app")["status"], "fresh");
    assert_eq!(build_of(&r, "child")["status"], "fresh");
}

#[test]
fn a_build_s_push_overrides_the_option() {
    if !engine_available() {
        return;
    }
    let env = Env::new("pushoverride");
    env.push_base("base:1", "v1");
    env.write("app/Dockerfile", &format!("FROM {}\nRUN echo app > /app\n", env.image("base:1")));
    let (local, public) = (env.image("local:1"), env.image("public:1"));
    env.config(
        json!({"push": true}),
        json!({"local": {"dockerfile": "app", "tags": [local], "push": false}, "public": {"dockerfile": "app", "tags": [public]}}),
    );
    let r = report(&env.freshen(&["--once", "--format", "json"]));
    assert!(build_of(&r, "local")["pushed"].is_null(), "{}", r["builds"]);
    assert_eq!(registry_digest(&local), None, "\"push\": false on the build keeps it local");
    assert_eq!(registry_digest(&public).as_deref(), build_of(&r, "public")["digest"].as_str());
}

#[test]
fn a_push_refused_with_401_is_push_failed_with_the_registry_s_words() {
    if !engine_available() {
        return;
    }
    let env = Env::new("push401");
    let proxy = Proxy::start(&env.registry.addr);
    env.push_base("base:1", "v1");
    let app = format!("{}/{}/app:1", proxy.addr, env.prefix);
    env.write("app/Dockerfile", &format!("FROM {}\nRUN echo app > /app\n", env.image("base:1")));
    env.config(json!({"push": true, "push_timeout": "1m"}), json!({"app": {"dockerfile": "app", "tags": [app]}}));
    proxy.fail_always(Some(Fault::Status(401, None)));
    let started = std::time::Instant::now();
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let r = report(&out);
    assert_eq!(build_of(&r, "app")["status"], "push_failed", "{}", r["builds"]);
    let error = r["outcomes"]["app"]["error"].as_str().unwrap();
    assert!(error.contains(&format!("push of {app} failed")) && error.to_lowercase().contains("unauthorized"), "{error}");
    assert!(started.elapsed() < std::time::Duration::from_secs(55), "a 401 is not retried until push_timeout");
}
