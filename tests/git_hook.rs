//! Git push webhooks (`POST /v1/hooks/git`) through the binary: a signed push
//! from GitHub, Gitea or GitLab rebuilds in seconds with the daemon polling
//! once an hour; a bad signature is a 401 and costs no git request.

mod common;

use std::time::{Duration, Instant};

use common::git::{env_with_repo, GitDaemon};
use common::http::{request, Answer, Daemon, TOKEN};
use common::*;
use serde_json::json;

const SECRET: &str = "git-hook-secret-0123456789";

/// `sha256=<hex HMAC-SHA256(secret, body)>`, as GitHub signs.
fn signature(secret: &str, body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    format!("sha256={}", hex::encode(aws_lc_rs::hmac::sign(&key, body).as_ref()))
}

fn hook(addr: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    request(addr, "POST", "/v1/hooks/git", &all, Some(body))
}

#[test]
fn a_signed_push_rebuilds_in_seconds_and_a_bad_signature_is_401_and_costs_no_git_request() {
    if !engine_available() {
        return;
    }
    let (env, repo) = env_with_repo("githook");
    let (server, url) = GitDaemon::serving(&env);
    let addr = format!("127.0.0.1:{}", free_port());
    env.write("token", &format!("{TOKEN}\n"));
    env.write("git-hook.secret", &format!("{SECRET}\n"));
    let options =
        json!({"interval": "1h", "log_format": "json", "listen": addr, "token_file": "token", "git_hook_secret_file": "git-hook.secret"});
    let config =
        env.config(options, json!({"app": {"source": {"git": url, "ref": "main", "path": "svc"}, "tags": [env.image("app:latest")]}}));
    let d = Daemon::start(&config, &addr, None);
    let rebuilt = || count_events(&d.log, "build_finished", &[("build", "app"), ("status", "rebuilt")]);
    assert_eq!(rebuilt(), 1, "{}", d.log_text());

    // GitHub's push event names the repository by its clone URL (here the git:// one).
    let github = |commit: &str, r: &str| {
        json!({"ref": r, "after": commit, "repository": {"clone_url": url, "html_url": "http://127.0.0.1/app"}}).to_string().into_bytes()
    };
    let commit = repo.commit(&[("svc/file", "two")]);
    let body = github(&commit, "refs/heads/main");
    let (listings, cycles) = (server.requests(), d.cycles());
    let forged = signature("not-the-secret-0123456789", &body);
    for (headers, why) in [
        (vec![("X-GitHub-Event", "push"), ("X-Hub-Signature-256", forged.as_str())], "signed with another secret"),
        (vec![("X-GitHub-Event", "push")], "unsigned"),
        (vec![("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "wrong-token-0123456789")], "a wrong GitLab token"),
        (vec![("X-Gitea-Event", "push"), ("X-Gitea-Signature", "zz")], "not hex"),
    ] {
        let a = hook(&addr, &headers, &body);
        assert_eq!(a.status, 401, "{why}: {a:?}");
    }
    // A body changed after signing is refused too.
    let tampered = github(&commit, "refs/heads/other");
    assert_eq!(hook(&addr, &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &signature(SECRET, &body))], &tampered).status, 401);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!((server.requests(), d.cycles()), (listings, cycles), "refused hooks cost no git request and no cycle");
    assert_eq!(count_events(&d.log, "unauthorized", &[("path", "/v1/hooks/git")]), 5, "{}", d.log_text());
    assert!(!d.log_text().contains(SECRET), "the secret is never logged");

    // Signed: the check runs now, and the commit is built.
    let sent = Instant::now();
    let a = hook(&addr, &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &signature(SECRET, &body))], &body);
    assert_eq!(a.status, 202, "{a:?}");
    assert_eq!(a.json(), json!({"inputs": [format!("{url} refs/heads/main")], "ignored": 0}));
    assert!(wait_until(Duration::from_secs(60), || rebuilt() == 2), "{}", d.log_text());
    let seconds = sent.elapsed().as_secs_f64();
    assert_eq!(label(&env.image("app:latest"), "org.opencontainers.image.revision").as_deref(), Some(commit.as_str()));
    eprintln!("git hook → rebuilt in {seconds:.2}s");

    // Gitea (its own signature header), GitLab (the token, URLs under project): each push is built.
    let commit = repo.commit(&[("svc/file", "three")]);
    let body = github(&commit, "refs/heads/main");
    let hex = signature(SECRET, &body).trim_start_matches("sha256=").to_string();
    assert_eq!(hook(&addr, &[("X-Gitea-Event", "push"), ("X-Gitea-Signature", &hex)], &body).status, 202);
    assert!(wait_until(Duration::from_secs(60), || rebuilt() == 3), "{}", d.log_text());
    let commit = repo.commit(&[("svc/file", "four")]);
    let body = json!({"object_kind": "push", "ref": "refs/heads/main", "after": commit, "project": {"git_http_url": url}}).to_string();
    assert_eq!(hook(&addr, &[("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", SECRET)], body.as_bytes()).status, 202);
    assert!(wait_until(Duration::from_secs(60), || rebuilt() == 4), "{}", d.log_text());
    assert_eq!(cat(&env.image("app:latest"), "/file"), "four");

    // A push to a branch no build watches, a ping, and an unknown repository: accepted, nothing checked.
    let (listings, cycles) = (server.requests(), d.cycles());
    let other = github(&commit, "refs/heads/other");
    let a = hook(&addr, &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &signature(SECRET, &other))], &other);
    assert_eq!(a.json(), json!({"inputs": [], "ignored": 1}), "{a:?}");
    let ping = br#"{"zen": "Design for failure."}"#;
    assert_eq!(hook(&addr, &[("X-GitHub-Event", "ping"), ("X-Hub-Signature-256", &signature(SECRET, ping))], ping).status, 202);
    let elsewhere = json!({"ref": "refs/heads/main", "repository": {"clone_url": "https://git.example.com/team/app.git"}}).to_string();
    let a =
        hook(&addr, &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &signature(SECRET, elsewhere.as_bytes()))], elsewhere.as_bytes());
    assert_eq!(a.json()["ignored"], 1);
    // A payload without a ref: a 400 that says where.
    let bad = br#"{"repository": {"clone_url": "x"}}"#;
    let a = hook(&addr, &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &signature(SECRET, bad))], bad);
    assert_eq!(a.status, 400, "{a:?}");
    assert!(a.json()["error"].as_str().unwrap().contains("missing field `ref`"), "{a:?}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!((server.requests(), d.cycles()), (listings, cycles), "nothing watched was named");
    drop(d);
    remove_labelled(&format!("freshen.test={}", env.prefix));
}

#[test]
fn without_a_secret_the_git_hook_is_off_and_the_secret_needs_listen() {
    let env = Env::new("githookoff");
    let addr = format!("127.0.0.1:{}", free_port());
    env.write("app/Dockerfile", "FROM scratch\n");
    env.write("git-hook.secret", "short\n");
    let builds = json!({"app": {"dockerfile": "app", "tags": [env.image("app:latest")]}});
    let config = env.config(json!({"git_hook_secret_file": "git-hook.secret"}), builds.clone());
    let out = freshen_cmd(&config, &["validate"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("at /options/git_hook_secret_file: git_hook_secret_file needs listen"), "{stderr}");
    let config = env
        .config(json!({"listen": addr, "allow_unauthenticated_loopback": true, "git_hook_secret_file": "git-hook.secret"}), builds.clone());
    let out = freshen_cmd(&config, &["validate"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be at least 16 characters"), "{}", String::from_utf8_lossy(&out.stderr));
    if !engine_available() {
        return;
    }
    let config =
        env.config(json!({"interval": "1h", "log_format": "json", "listen": addr, "allow_unauthenticated_loopback": true}), builds);
    let _d = Daemon::start(&config, &addr, None);
    let a = hook(&addr, &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", "sha256=00")], b"{}");
    assert_eq!(a.status, 403, "{a:?}");
    assert!(a.json()["error"].as_str().unwrap().contains("set options.git_hook_secret_file"), "{a:?}");
}
