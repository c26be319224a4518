//! Git sources through the freshen binary, with a real engine, registry and git
//! server: a bare repository served over `file://` and by `git daemon` (`git://`).

mod common;

use std::time::Duration;

use common::git::{env_with_repo, git, GitDaemon, GitHttp, Repo};
use common::*;
use serde_json::{json, Value};

/// Sets the config's top-level `git` section (credentials), beside what [`Env::config`] wrote.
fn with_git(config: &std::path::Path, git: Value) {
    let mut c: Value = serde_json::from_slice(&std::fs::read(config).unwrap()).unwrap();
    c["git"] = git;
    std::fs::write(config, c.to_string()).unwrap();
}

fn state(env: &Env) -> Value {
    serde_json::from_slice(&std::fs::read(env.state_path()).unwrap()).unwrap()
}

/// The full cycle a user sees, for a repository at `url`: a commit builds with its revision
/// label and its commit tag; an unchanged ref rebuilds nothing; a commit outside `paths` is
/// recorded, not built; one inside is built; a force-push back is a change like any other.
fn new_commits_rebuild(env: &Env, repo: &Repo, url: &str, listings: &dyn Fn() -> Option<usize>, git_section: Value) {
    let source = json!({"git": url, "ref": "main", "path": "svc", "paths": ["svc/"]});
    let tags = [env.image("app:latest"), env.image("app:{git.short_commit}")];
    let config = env.config(json!({}), json!({"app": {"source": source, "tags": tags}}));
    if !git_section.is_null() {
        with_git(&config, git_section);
    }
    let once = || report(&env.freshen(&["--once", "--format", "json"]));
    let first = git(&repo.work, &["rev-parse", "HEAD"]);
    let before = listings();
    let r = once();
    assert_eq!(build_of(&r, "app")["status"], "rebuilt", "{r}");
    if let (Some(b), Some(a)) = (before, listings()) {
        assert_eq!(a - b, 1, "the first run too lists and fetches on one connection");
    }
    let commit_tag = env.image(&format!("app:{}", &first[..7]));
    assert_eq!(build_of(&r, "app")["tags"], json!([env.image("app:latest"), commit_tag]), "{r}");
    assert_eq!(image_id(&commit_tag), image_id(&env.image("app:latest")), "the commit tag names the new image");
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
    assert_eq!(image_id(&env.image(&format!("app:{}", &inside[..7]))), image_id(&env.image("app:latest")));
    assert!(image_id(&commit_tag).is_some(), "the first commit's image keeps its commit tag");
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
    let (env, repo) = env_with_repo("gitfile");
    new_commits_rebuild(&env, &repo, &format!("file://{}", repo.bare.display()), &|| None, Value::Null);
    remove_labelled(&format!("freshen.test={}", env.prefix));
}

#[test]
fn a_repository_served_by_git_daemon_costs_one_connection_a_cycle_and_an_unreachable_one_fails_alone() {
    if !engine_available() {
        return;
    }
    let (env, repo) = env_with_repo("gitdaemon");
    let (daemon, url) = GitDaemon::serving(&env);
    new_commits_rebuild(&env, &repo, &url, &|| Some(daemon.requests()), Value::Null);

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

#[test]
fn tag_templates_name_the_image_after_the_branch_and_the_semver_tag_and_are_pushed() {
    if !engine_available() {
        return;
    }
    let (env, repo) = env_with_repo("gittags");
    git(&repo.work, &["-c", "user.name=t", "-c", "user.email=t@example.com", "tag", "-a", "v1.2.3", "-m", "release"]);
    git(&repo.work, &["push", "-q", "origin", "HEAD:refs/heads/Feature/Login", "v1.2.3"]);
    let url = format!("file://{}", repo.bare.display());
    let source = json!({"git": url, "ref": "Feature/Login", "path": "svc"});
    let templates = ["app:{git.branch}-latest", "app:{semver.version}", "app:{semver.major}.{semver.minor}", "app:{semver.major}"];
    let config = env.config(json!({"push": true}), json!({"app": {"source": source, "tags": templates.map(|t| env.image(t))}}));

    // plan names the branch's tag, and shows the templates each build renders.
    let plan = String::from_utf8_lossy(&freshen_cmd(&config, &["plan"]).output().unwrap().stdout).to_string();
    let expected = format!("  tags: {}, {}", env.image("app:feature-login-latest"), env.image("app:{semver.version}"));
    assert!(plan.contains(&expected), "{plan}");

    env.registry.clear_log();
    let out = env.freshen(&["--once", "--format", "json"]);
    let r = report(&out);
    let app = build_of(&r, "app");
    assert_eq!(app["status"], "rebuilt", "{r}");
    let released = ["app:feature-login-latest", "app:1.2.3", "app:1.2", "app:1"].map(|t| env.image(t));
    assert_eq!(app["tags"], json!(released), "{r}");
    let digest = app["digest"].as_str().unwrap().to_string();
    for tag in &released {
        assert_eq!(registry_digest(tag).as_deref(), Some(digest.as_str()), "{tag} pushed");
    }

    // A pre-release gives only its version; the other templates are left out, with a warning.
    repo.commit(&[("svc/file", "two")]);
    git(&repo.work, &["-c", "user.name=t", "-c", "user.email=t@example.com", "tag", "-a", "v2.0.0-rc.1", "-m", "rc"]);
    git(&repo.work, &["push", "-q", "-f", "origin", "HEAD:refs/heads/Feature/Login", "v2.0.0-rc.1"]);
    env.registry.clear_log();
    let out = env.freshen(&["--once", "--format", "json"]);
    let r = report(&out);
    let app = build_of(&r, "app");
    assert_eq!(app["status"], "rebuilt", "{r}");
    assert_eq!(app["tags"], json!([env.image("app:feature-login-latest"), env.image("app:2.0.0-rc.1")]), "{r}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("event=\"tag_left_out\"").count(), 2, "{stderr}");
    assert!(stderr.contains("is a pre-release, which gives only {semver.version}"), "{stderr}");
    let puts: Vec<String> = env.registry.requests().into_iter().filter(|l| l.starts_with("PUT ") && l.contains("/manifests/")).collect();
    assert_eq!(puts.len(), 2, "{puts:?}");
    assert_eq!(cat(&env.image("app:1"), "/file"), "one", "the release's tags stay on the release");
    assert_eq!(cat(&env.image("app:2.0.0-rc.1"), "/file"), "two");

    // The release tag pushed onto the commit already built: no new commit, and the image gets its tags.
    git(&repo.work, &["-c", "user.name=t", "-c", "user.email=t@example.com", "tag", "-a", "v2.0.0", "-m", "release"]);
    git(&repo.work, &["push", "-q", "origin", "v2.0.0"]);
    let r = report(&env.freshen(&["--once", "--format", "json"]));
    let app = build_of(&r, "app");
    assert_eq!(app["status"], "rebuilt", "{r}");
    assert_eq!(app["tags"], json!(["app:feature-login-latest", "app:2.0.0", "app:2.0", "app:2"].map(|t| env.image(t))), "{r}");
    assert_eq!(registry_digest(&env.image("app:2")).as_deref(), app["digest"].as_str());
    assert_eq!(cat(&env.image("app:2"), "/file"), "two");
    let r = report(&env.freshen(&["--once", "--format", "json"]));
    assert_eq!(build_of(&r, "app")["status"], "fresh", "{r}");
    remove_labelled(&format!("freshen.test={}", env.prefix));
}

#[test]
fn a_tag_template_without_a_git_source_or_with_an_unknown_placeholder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
    let config = dir.path().join("config.json");
    let source = json!({"git": "file:///nowhere.git", "ref": "main"});
    let builds = json!({
        "local": {"dockerfile": "Dockerfile", "tags": ["registry.example.com/a:{git.short_commit}"]},
        "typo": {"source": source, "tags": ["registry.example.com/b:latest", "registry.example.com/b:{git.sha}"]},
        "only": {"source": source, "tags": ["registry.example.com/c:{git.commit}"]}
    });
    std::fs::write(&config, json!({"builds": builds}).to_string()).unwrap();
    let out = freshen_cmd(&config, &["validate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("at /builds/local/tags/0: registry.example.com/a:{git.short_commit}: tag templates need a git source"),
        "{stderr}"
    );
    assert!(stderr.contains("at /builds/typo/tags/1: registry.example.com/b:{git.sha}: unknown placeholder {git.sha}"), "{stderr}");
    assert!(stderr.contains("at /builds/only/tags: give at least one tag that stays the same across commits"), "{stderr}");
}

#[test]
fn a_commit_that_changes_the_base_is_built_once_on_the_new_base_and_two_branches_cost_one_connection() {
    if !engine_available() {
        return;
    }
    let (env, repo) = env_with_repo("gitbase");
    env.push_base("other:1", "o1");
    git(&repo.work, &["push", "-q", "origin", "HEAD:refs/heads/stable"]);
    let (daemon, url) = GitDaemon::serving(&env);
    let on = |r: &str| json!({"git": url, "ref": r, "path": "svc"});
    env.config(
        json!({}),
        json!({
            "app": {"source": on("main"), "tags": [env.image("app:latest")]},
            "stable": {"source": on("stable"), "tags": [env.image("stable:latest")]}
        }),
    );
    let once = || env.freshen(&["--once", "--format", "json"]);
    let before = daemon.requests();
    let r = report(&once());
    assert_eq!(build_of(&r, "app")["status"], "rebuilt", "{r}");
    assert_eq!(build_of(&r, "stable")["status"], "rebuilt", "{r}");
    assert_eq!(daemon.requests() - before, 1, "two branches of one repository: one connection");

    // A commit that moves main to another base: resolved, checked and built in that cycle, once.
    repo.commit(&[("svc/Dockerfile", &format!("FROM {}\nCOPY file /file\n", env.image("other:1")))]);
    let out = once();
    let r = report(&out);
    assert_eq!(build_of(&r, "app")["status"], "rebuilt", "{r}");
    assert_eq!(build_of(&r, "stable")["status"], "fresh", "{r}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("event=\"dockerfiles_changed\""));
    assert_eq!(label(&env.image("app:latest"), "org.opencontainers.image.base.name").as_deref(), Some(env.image("other:1").as_str()));
    let built_from = &state(&env)["builds"]["app"]["built_from"];
    assert!(built_from.get(format!("image:{}", env.image("other:1"))).is_some(), "the new base is recorded: {built_from}");
    assert!(built_from.get(format!("image:{}", env.image("base:1"))).is_none(), "the old one is not: {built_from}");
    let before = daemon.requests();
    let r = report(&once());
    assert_eq!(build_of(&r, "app")["status"], "fresh", "not built again in the next cycle: {r}");
    assert_eq!(daemon.requests() - before, 1);
    drop(daemon);
    remove_labelled(&format!("freshen.test={}", env.prefix));
}

#[test]
fn in_the_daemon_a_base_push_and_a_commit_in_one_cycle_give_one_rebuild() {
    if !engine_available() {
        return;
    }
    let (env, repo) = env_with_repo("gitboth");
    let url = format!("file://{}", repo.bare.display());
    let config = env.config(
        json!({"interval": "1h", "log_format": "json"}),
        json!({"app": {"source": {"git": url, "ref": "main", "path": "svc"}, "tags": [env.image("app:latest")]}}),
    );
    let log = env.dir.path().join("daemon.log");
    let mut child = spawn_daemon(&config, &log);
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let rebuilt = || count_events(&log, "build_finished", &[("build", "app"), ("status", "rebuilt")]);
    assert!(wait_until(Duration::from_secs(60), || rebuilt() == 1), "{}", text());
    assert!(wait_event(&log, "cycle_finished", &[], Duration::from_secs(30)), "{}", text());

    env.push_base("base:1", "v2");
    let commit = repo.commit(&[("svc/file", "two")]);
    signal(&child, "-HUP");
    assert!(wait_until(Duration::from_secs(60), || count_events(&log, "cycle_finished", &[]) >= 2), "{}", text());
    assert_eq!(rebuilt(), 2, "one rebuild for both changes:\n{}", text());
    assert_eq!(label(&env.image("app:latest"), "org.opencontainers.image.revision").as_deref(), Some(commit.as_str()));
    assert_eq!(cat(&env.image("app:latest"), "/file"), "two");
    assert_eq!(cat(&env.image("app:latest"), "/etc/base-version"), "v2", "built on the new base");
    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success(), "{}", text());
    remove_labelled(&format!("freshen.test={}", env.prefix));
}

#[test]
fn a_repository_over_http_with_basic_auth_uses_the_git_section_s_credentials_that_never_leak() {
    if !engine_available() {
        return;
    }
    const PASSWORD: &str = "http-token-0123456789";
    let (env, repo) = env_with_repo("githttp");
    let server = GitHttp::start(&env.dir.path().join("repos"), "ci", PASSWORD);
    let url = format!("http://{}/app.git", server.addr);
    env.write("git.token", &format!("{PASSWORD}\n"));
    let source = json!({"git": url, "ref": "main", "path": "svc", "paths": ["svc/"]});
    env.config(json!({}), json!({"app": {"source": source, "tags": [env.image("app:latest")]}}));
    // Without credentials: that build's check fails, saying the server wants them; nothing prompts.
    let out = env.freshen(&["--once", "--format", "json"]);
    let r = report(&out);
    assert_eq!(build_of(&r, "app")["status"], "check_failed", "{r}");
    assert_eq!(r["decisions"]["app"]["kind"], "git_failed", "{r}");
    let reason = r["decisions"]["app"]["reason"].as_str().unwrap();
    assert!(reason.contains("the server asks for credentials") && reason.contains("\"password_file\""), "{reason}");

    // With them: the whole flow (commit tag, unchanged ref, paths, force-push), one listing a cycle.
    let git_section = json!({server.addr.clone(): {"username": "ci", "password_file": "git.token"}});
    new_commits_rebuild(&env, &repo, &url, &|| Some(server.listings()), git_section);
    let out = env.freshen(&["--once", "--format", "json"]);
    let state_text = std::fs::read_to_string(env.state_path()).unwrap();
    assert!(!state_text.contains(PASSWORD) && !String::from_utf8_lossy(&out.stderr).contains(PASSWORD), "the password never leaks");
    // Credentials over plain http to an address that is not loopback: refused in the config.
    let remote =
        env.config(json!({}), json!({"app": {"source": {"git": "http://git.example.com/app.git"}, "tags": [env.image("app:latest")]}}));
    with_git(&remote, json!({"git.example.com": {"username": "ci", "password_file": "git.token"}}));
    let out = env.freshen(&["validate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("at /builds/app/source/git: http://git.example.com/app.git: credentials go over https only"));
    remove_labelled(&format!("freshen.test={}", env.prefix));
}
