//! BuildKit secrets through the binary, on the real engine: a build's
//! `secrets` (from a file and from an environment variable) are readable by
//! `RUN --mount=type=secret` and appear nowhere else: not in the image
//! (history, layers, labels, config), the logs, the saved build log, the
//! state, the JSON report or the errors. A missing one is a config error.

mod common;

use std::process::Command;

use common::*;
use serde_json::json;

const FILE_SECRET: &str = "npm-FILE-secret-5f1e2d";
const ENV_SECRET: &str = "gh-ENV-secret-9c8b7a";
const PASSWORD: &str = "pw-bksecret-77";

/// The config of one build `app` with both secrets, on `env`'s private `tools:1`
/// (left unwatched, so BuildKit pulls it with the credentials freshen's session serves).
fn secret_config(env: &Env, token_env: &str) -> std::path::PathBuf {
    env.write("password", &format!("{PASSWORD}\n"));
    env.write("secrets/npmrc", &format!("{FILE_SECRET}\n"));
    let dockerfile = format!(
        "# freshen:ignore\nFROM {tools}\n\
         RUN --mount=type=secret,id=npmrc --mount=type=secret,id=token sh -c 'echo read $(cat /run/secrets/npmrc /run/secrets/token | sha256sum)'\n\
         RUN --mount=type=secret,id=token sh -c 'echo a careless step prints $(cat /run/secrets/token)'\n\
         RUN sh -c 'ls /run/secrets 2>/dev/null | wc -l > /secrets-left'\n",
        tools = env.image("tools:1")
    );
    env.write("app/Dockerfile", &dockerfile);
    let build = json!({
        "dockerfile": "app", "tags": [env.image("app:latest")], "labels": {"freshen.test": env.prefix},
        "secrets": {"npmrc": {"file": "secrets/npmrc"}, "token": {"env": token_env}}
    });
    let mut cfg = json!({"options": {"state_file": "state.json", "log_format": "json"}, "builds": {"app": build}});
    cfg["registries"] = json!({env.registry.addr.clone(): {"username": "ci", "password_file": "password"}});
    env.write("config.json", &cfg.to_string())
}

/// The hex SHA-256 of `text`, by sha256sum(1).
fn sha256(text: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum").stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

/// Every file under `dir`, concatenated.
fn files_under(dir: &std::path::Path) -> Vec<u8> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .flat_map(|e| std::fs::read(e.path()).unwrap())
        .collect()
}

#[test]
fn secrets_are_readable_in_the_build_and_appear_nowhere_else() {
    if !engine_available() {
        return;
    }
    let (tmp, env) = htpasswd_env("bksecret", "ci", PASSWORD);
    login_and_push(&env, &tmp.path().join("docker"), "ci", PASSWORD, "tools:1", "v1");
    let config = secret_config(&env, "FRESHEN_TEST_TOKEN");
    env.registry.clear_log();
    let out = freshen_cmd(&config, &["--once", "--format", "json"]).env("FRESHEN_TEST_TOKEN", ENV_SECRET).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let r = report(&out);
    assert_eq!(build_of(&r, "app")["builder"], "buildkit");
    assert_eq!(r["outcomes"]["app"]["outcome"], "built", "{}", r["outcomes"]);
    // The Dockerfile holds no secret (it would be in the image's history): the step prints a digest of what it read.
    let digest = sha256(&format!("{FILE_SECRET}\n{ENV_SECRET}"));
    assert!(stderr.contains(&format!("read {digest}")), "the RUN step read both secrets ({digest}): {stderr}");
    assert!(stderr.contains("a careless step prints ***"), "a secret a step prints is redacted: {stderr}");
    let pulled = env.registry.requests().iter().any(|l| l.starts_with("GET ") && l.contains("/tools/manifests/sha256:"));
    assert!(pulled, "BuildKit pulled the private stage with the credentials of freshen's session: {:?}", env.registry.requests());

    let image = env.image("app:latest");
    assert_eq!(cat(&image, "/secrets-left").trim(), "0", "no secret file stays in the image");
    let history = docker(&["history", "--no-trunc", &image]);
    let inspect = docker(&["image", "inspect", &image]);
    let saved = Command::new("docker").args(["save", &image]).output().unwrap().stdout;
    assert!(saved.len() > 100_000, "docker save gave the layers ({} bytes)", saved.len());
    let everything = [
        out.stdout.clone(),
        out.stderr.clone(),
        std::fs::read(env.state_path()).unwrap(),
        files_under(&env.dir.path().join("logs")),
        history.into_bytes(),
        inspect.into_bytes(),
        saved,
    ]
    .concat();
    for secret in [FILE_SECRET, ENV_SECRET, PASSWORD] {
        let found = everything.windows(secret.len()).any(|w| w == secret.as_bytes());
        assert!(!found, "{secret} appears in the output, the state, the saved log or the image");
    }
}

#[test]
fn a_missing_secret_file_or_variable_is_a_config_error_naming_it() {
    let env = Env::new("bksecretcfg");
    let config = secret_config(&env, "FRESHEN_TEST_UNSET_TOKEN");
    std::fs::remove_file(env.dir.path().join("secrets/npmrc")).unwrap();
    let out = freshen_cmd(&config, &["validate"]).env_remove("FRESHEN_TEST_UNSET_TOKEN").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("/builds/app/secrets/npmrc/file") && err.contains("secrets/npmrc"), "{err}");
    assert!(err.contains("/builds/app/secrets/token/env") && err.contains("FRESHEN_TEST_UNSET_TOKEN is not set"), "{err}");

    // With both there, a classic build cannot take them.
    env.write("secrets/npmrc", "x\n");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    cfg["builds"]["app"]["builder"] = "classic".into();
    std::fs::write(&config, cfg.to_string()).unwrap();
    let out = freshen_cmd(&config, &["validate"]).env("FRESHEN_TEST_UNSET_TOKEN", "y").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("/builds/app/secrets") && err.contains("\"builder\": \"buildkit\""), "{err}");
}
