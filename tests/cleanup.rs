//! Cleanup through the binary, on the real engine: after a build's tags move,
//! its previous images are removed, but for the newest `keep_previous`, any
//! that a container or a tag still uses, and any image freshen did not build
//! for that build.

mod common;

use common::*;
use serde_json::json;

/// Every image the engine has that freshen built for build `app` of this world, full IDs, sorted.
fn app_images(env: &Env) -> Vec<String> {
    let (tag, world) = (format!("label=io.freshen.tag={}", env.image("app:latest")), format!("label=freshen.test={}", env.prefix));
    let out = docker(&["images", "-aq", "--no-trunc", "--filter", "label=io.freshen.build=app", "--filter", &tag, "--filter", &world]);
    let mut ids: Vec<String> = out.split_whitespace().map(str::to_string).collect();
    ids.sort();
    ids.dedup();
    ids
}

/// A world named `name` with build `app` on `base:1` and `keep_previous`; the base is pushed by [`rebuild`].
fn app_on_base(name: &str, keep_previous: u32) -> Env {
    let env = Env::new(name);
    env.write("app/Dockerfile", &format!("FROM {}\nRUN cat /etc/base-version > /app-version\n", env.image("base:1")));
    env.config(json!({"keep_previous": keep_previous}), json!({"app": {"dockerfile": "app", "tags": [env.image("app:latest")]}}));
    env
}

/// Pushes base v`n` and runs one cycle; returns app's new image ID.
fn rebuild(env: &Env, n: usize) -> String {
    env.push_base("base:1", &format!("v{n}"));
    let out = env.freshen(&["--once", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(build_of(&report(&out), "app")["status"], "rebuilt");
    image_id(&env.image("app:latest")).unwrap()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn previous_images_beyond_keep_previous_are_removed_unless_in_use() {
    if !engine_available() {
        return;
    }
    let env = app_on_base("cleanup", 1);
    let first = rebuild(&env, 1);
    // Another config's build named app (another first tag), untagged: not this build's to remove.
    env.write(
        "other/Dockerfile",
        &format!("FROM {}\nLABEL io.freshen.build=app io.freshen.tag=elsewhere/app:latest\n", env.image("base:1")),
    );
    let other =
        docker(&["build", "-q", "--label", &format!("freshen.test={}", env.prefix), env.dir.path().join("other").to_str().unwrap()]);
    let container = format!("{}-running", env.prefix);
    docker(&["run", "-d", "--name", &container, &first, "sleep", "300"]);
    let second = rebuild(&env, 2);
    let third = rebuild(&env, 3);
    let fourth = rebuild(&env, 4);
    assert_eq!(
        app_images(&env),
        sorted(vec![first.clone(), third.clone(), fourth.clone()]),
        "current, one previous, and the one a container runs"
    );
    assert!(image_id(&second).is_none(), "the second image is removed");
    assert_eq!(docker(&["inspect", "-f", "{{.State.Running}}", &container]), "true", "the container is untouched");
    assert!(image_id(&env.image("base:1")).is_some(), "the base stays");

    docker(&["rm", "-f", &container]);
    let fifth = rebuild(&env, 5);
    assert_eq!(app_images(&env), sorted(vec![fourth, fifth]), "exactly the current image and keep_previous (1) old one");
    assert!(image_id(&first).is_none() && image_id(&third).is_none());
    assert!(image_id(&other).is_some(), "another build's image stays");
}

#[test]
fn keep_previous_0_keeps_only_the_current_image_and_a_tagged_previous_one_stays() {
    if !engine_available() {
        return;
    }
    let env = app_on_base("cleanupzero", 0);
    let first = rebuild(&env, 1);
    // A user's rollback tag on the first image keeps it.
    let rollback = env.image("app:rollback");
    docker(&["tag", &first, &rollback]);
    let second = rebuild(&env, 2);
    let third = rebuild(&env, 3);
    assert_eq!(app_images(&env), sorted(vec![first.clone(), third]), "the tagged image stays; the second is removed");
    assert!(image_id(&second).is_none());
    assert_eq!(image_id(&rollback).as_deref(), Some(first.as_str()));
}
