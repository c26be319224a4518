//! Every key of `schema/config.schema.json` and every Dockerfile feature the
//! README documents, each tried through the freshen binary as a user would.
//!
//! [`ROWS`] names, for each key, the test that runs freshen with it and
//! asserts its effect (`plan`/`graph`/`explain` output, `--once --format json`,
//! the registry's access log, the engine's images). Most rows are here, in
//! this file and in `tests/options_engine.rs`; keys whose effect an older test
//! already shows point to that test. [`every_schema_key_has_a_row`] reads the
//! schema and fails, naming the key, when a key has no row, so a key added
//! without a test fails CI.

mod common;

use std::path::{Path, PathBuf};

use common::freshen_cmd;
use serde_json::{json, Value};

/// One row: a schema key (`options/…`, `builds/…`, `registries/…`, `git/…`) or a
/// Dockerfile feature (`dockerfile/…`), the test showing its effect
/// (`file.rs::function` under `tests/`), and text that test's file must hold
/// (the key as the config spells it, or the Dockerfile syntax).
struct Row {
    key: &'static str,
    test: &'static str,
    needle: &'static str,
}

const fn row(key: &'static str, test: &'static str, needle: &'static str) -> Row {
    Row { key, test, needle }
}

const ROWS: &[Row] = &[
    row("options/interval", "daemon.rs::the_daemon_runs_a_cycle_each_interval", "\"interval\""),
    row("options/parallelism", "options_engine.rs::parallelism_runs_independent_builds_at_once", "\"parallelism\""),
    row(
        "options/engines",
        "pool.rs::nine_builds_spread_over_three_engines_and_children_get_their_parents_from_the_registry",
        "\"engines\"",
    ),
    row(
        "options/check_concurrency",
        "registry.rs::checks_run_check_concurrency_at_a_time_and_give_up_after_registry_timeout",
        "\"check_concurrency\"",
    ),
    row(
        "options/registry_timeout",
        "registry.rs::checks_run_check_concurrency_at_a_time_and_give_up_after_registry_timeout",
        "\"registry_timeout\"",
    ),
    row("options/shutdown_grace", "options_engine.rs::shutdown_grace_bounds_the_wait_for_running_builds", "\"shutdown_grace\""),
    row("options/build_timeout", "hostile.rs::a_build_over_build_timeout_fails_even_while_it_prints", "\"build_timeout\""),
    row(
        "options/build_idle_timeout",
        "hostile.rs::a_build_whose_engine_stream_goes_silent_fails_at_the_idle_deadline_and_is_cancelled",
        "\"build_idle_timeout\"",
    ),
    row("options/state_file", "options_engine.rs::state_file_is_where_state_is_written", "\"state_file\""),
    row("options/log_level", "options_engine.rs::log_level_and_its_docker_rebuilder_spelling_set_what_is_logged", "\"log_level\""),
    row("options/log-level", "options_engine.rs::log_level_and_its_docker_rebuilder_spelling_set_what_is_logged", "\"log-level\""),
    row("options/log_format", "options_engine.rs::log_format_json_logs_one_object_per_line", "\"log_format\""),
    row("options/log-format", "options_engine.rs::log_format_json_logs_one_object_per_line", "\"log-format\""),
    row(
        "options/rebuild_on_start",
        "core.rs::existing_images_freshen_never_built_are_a_baseline_unless_rebuild_on_start",
        "\"rebuild_on_start\"",
    ),
    row(
        "options/watch_stages",
        "options_engine.rs::watch_stages_all_checks_and_rebuilds_on_a_builder_stage_base_unless_ignored",
        "\"watch_stages\"",
    ),
    row("options/settle", "daemon.rs::a_base_pushed_twice_inside_the_settle_window_leads_to_one_rebuild", "\"settle\""),
    row("options/secret_build_args", "bad_input.rs::secret_build_args_never_appear_in_logs_errors_state_or_plan", "\"secret_build_args\""),
    row(
        "options/rate_limit_reserve",
        "registry.rs::under_the_rate_limit_reserve_a_registry_is_checked_less_often",
        "\"rate_limit_reserve\"",
    ),
    row(
        "registries/username",
        "registry.rs::a_registry_with_htpasswd_auth_is_checked_with_configured_credentials_that_never_leak",
        "\"username\"",
    ),
    row(
        "registries/password_file",
        "registry.rs::a_registry_with_htpasswd_auth_is_checked_with_configured_credentials_that_never_leak",
        "\"password_file\"",
    ),
    row("options/builder", "buildkit.rs::under_classic_a_cache_mount_fails_that_build_alone_and_says_to_use_buildkit", "\"builder\""),
    row("options/keep_logs", "buildlogs.rs::each_build_saves_its_log_0600_named_in_the_report_and_keep_logs_are_kept", "\"keep_logs\""),
    row("options/push", "push.rs::push_sends_every_tag_to_one_digest_and_records_it_in_the_report_and_state", "\"push\""),
    row("builds/push", "push.rs::a_build_s_push_overrides_the_option", "\"push\""),
    row("options/push_timeout", "push.rs::a_refused_push_is_push_failed_skips_the_children_and_the_next_cycle_pushes", "\"push_timeout\""),
    row("options/keep_previous", "cleanup.rs::previous_images_beyond_keep_previous_are_removed_unless_in_use", "\"keep_previous\""),
    row("options/notify", "notify.rs::webhook_and_command_get_each_event_signed_retried_after_a_500_and_without_secrets", "\"notify\""),
    row("builds/test", "gate.rs::a_passing_test_moves_the_tags_and_pushes_and_a_failing_one_moves_nothing", "\"test\""),
    row("options/listen", "server.rs::a_registry_notification_rebuilds_in_seconds_and_nothing_polls", "\"listen\""),
    row(
        "options/token_file",
        "server_input.rs::bad_requests_get_a_clear_4xx_cost_no_registry_request_and_the_daemon_goes_on",
        "\"token_file\"",
    ),
    row(
        "options/allow_unauthenticated_loopback",
        "server_input.rs::metrics_parse_and_match_what_the_cycles_did_and_readyz_follows_the_engine",
        "\"allow_unauthenticated_loopback\"",
    ),
    row(
        "options/git_hook_secret_file",
        "git_hook.rs::a_signed_push_rebuilds_in_seconds_and_a_bad_signature_is_401_and_costs_no_git_request",
        "\"git_hook_secret_file\"",
    ),
    row(
        "git/username",
        "git.rs::a_repository_over_http_with_basic_auth_uses_the_git_section_s_credentials_that_never_leak",
        "\"username\"",
    ),
    row(
        "git/password_file",
        "git.rs::a_repository_over_http_with_basic_auth_uses_the_git_section_s_credentials_that_never_leak",
        "\"password_file\"",
    ),
    row("registries/insecure", "options_engine.rs::insecure_reaches_a_plain_http_registry_that_is_not_on_loopback", "\"insecure\""),
    row(
        "registries/ca_file",
        "options_engine.rs::ca_file_trusts_a_registry_certificate_from_that_ca_and_http2_is_used_where_offered",
        "\"ca_file\"",
    ),
    row("builds/dockerfile", "options.rs::dockerfile_is_a_file_or_a_folder_holding_one", "\"dockerfile\""),
    row("builds/context", "bad_input.rs::contexts_archive_symlinks_as_links_and_apply_dockerignore", "\"context\""),
    row("builds/build_dir", "options_engine.rs::tag_and_build_dir_are_the_docker_rebuilder_spellings", "\"build_dir\""),
    row("builds/tags", "core.rs::missing_images_are_built_and_a_no_change_cycle_sends_only_manifest_heads", "\"tags\""),
    row("builds/tag", "options_engine.rs::tag_and_build_dir_are_the_docker_rebuilder_spellings", "\"tag\""),
    row("builds/build_args", "options.rs::build_args_override_global_arg_defaults", "\"build_args\""),
    row("builds/target", "options.rs::target_takes_the_base_of_that_stage", "\"target\""),
    row("builds/platform", "options.rs::platform_sets_the_automatic_platform_args", "\"platform\""),
    row("builds/labels", "options_engine.rs::labels_are_added_to_the_built_image", "\"labels\""),
    row("builds/no_cache", "options_engine.rs::no_cache_rebuilds_every_step", "\"no_cache\""),
    row("builds/source", "git.rs::a_repository_over_file_urls_rebuilds_on_new_commits_that_touch_its_paths", "\"source\""),
    row(
        "builds/watch_context",
        "context.rs::an_edit_made_while_freshen_is_stopped_is_rebuilt_at_start_unless_watch_context_is_off",
        "\"watch_context\"",
    ),
    row("builds/additional_images", "options.rs::additional_images_are_watched_and_make_graph_edges", "\"additional_images\""),
    row("builds/exclude_images", "options.rs::exclude_images_are_never_watched", "\"exclude_images\""),
    row("builds/watch_stages", "options.rs::watch_stages_all_watches_every_stage_and_a_build_may_override_it", "\"watch_stages\""),
    row("builds/builder", "hostile.rs::a_context_keeps_non_utf8_names_byte_for_byte_archives_a_fifo_and_skips_a_socket", "\"builder\""),
    row("builds/secrets", "buildkit_secrets.rs::secrets_are_readable_in_the_build_and_appear_nowhere_else", "\"secrets\""),
    row("builds/secret_build_args", "options.rs::a_build_s_secret_build_args_are_redacted_in_plan", "\"secret_build_args\""),
    row("dockerfile/freshen:ignore", "options.rs::freshen_ignore_leaves_that_from_unwatched", "# freshen:ignore"),
    row("dockerfile/copy-from-image", "options.rs::copy_and_run_mount_from_images_and_stage_indexes_under_all", "COPY --from="),
    row("dockerfile/run-mount-from-image", "options.rs::copy_and_run_mount_from_images_and_stage_indexes_under_all", "RUN --mount="),
    row("dockerfile/from-index", "options.rs::copy_and_run_mount_from_images_and_stage_indexes_under_all", "--from=0"),
    row("dockerfile/digest-pinned", "options.rs::digest_pinned_images_are_listed_apart_and_never_watched", "@sha256:"),
    row("dockerfile/variables", "options.rs::variables_expand_as_buildkit_expands_them", "${TARGETPLATFORM#"),
];

/// The Dockerfile features the README documents, each needing a row.
const DOCKERFILE_FEATURES: &[&str] =
    &["freshen:ignore", "copy-from-image", "run-mount-from-image", "from-index", "digest-pinned", "variables"];

fn schema_keys() -> Vec<String> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/config.schema.json")).unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    let sections = [
        ("options", &schema["properties"]["options"]["properties"]),
        ("registries", &schema["properties"]["registries"]["additionalProperties"]["properties"]),
        ("git", &schema["properties"]["git"]["additionalProperties"]["properties"]),
        ("builds", &schema["$defs"]["build"]["properties"]),
    ];
    let mut keys = Vec::new();
    for (section, props) in sections {
        let props = props.as_object().unwrap_or_else(|| panic!("the schema has no properties for {section}"));
        keys.extend(props.keys().map(|k| format!("{section}/{k}")));
    }
    keys
}

#[test]
fn every_schema_key_has_a_row() {
    let keys = schema_keys();
    assert!(keys.len() >= 30, "only {} keys read from the schema", keys.len());
    let mut missing: Vec<String> = keys.iter().filter(|k| !ROWS.iter().any(|r| r.key == k.as_str())).cloned().collect();
    missing.extend(DOCKERFILE_FEATURES.iter().map(|f| format!("dockerfile/{f}")).filter(|k| !ROWS.iter().any(|r| r.key == k)));
    assert!(missing.is_empty(), "no row in tests/options.rs for: {}", missing.join(", "));
    for r in ROWS {
        let known = keys.iter().any(|k| k == r.key) || r.key.strip_prefix("dockerfile/").is_some_and(|f| DOCKERFILE_FEATURES.contains(&f));
        assert!(known, "row {} names no schema key or documented Dockerfile feature", r.key);
        let (file, function) = r.test.split_once("::").unwrap();
        let source = std::fs::read_to_string(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests")).join(file))
            .unwrap_or_else(|e| panic!("row {}: tests/{file}: {e}", r.key));
        let at = source.find(&format!("fn {function}(")).unwrap_or_else(|| panic!("row {}: no fn {function} in tests/{file}", r.key));
        assert!(source[..at].trim_end().ends_with("#[test]"), "row {}: {function} in tests/{file} is not a #[test]", r.key);
        assert!(source.contains(r.needle), "row {}: tests/{file} never writes {}", r.key, r.needle);
    }
}

/// A folder with a config and Dockerfiles, for the rows that need no engine.
struct Offline {
    dir: tempfile::TempDir,
}

impl Offline {
    fn new() -> Offline {
        Offline { dir: tempfile::tempdir().unwrap() }
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Writes config.json from `config` and runs `freshen <args>` on it; returns (exit code, stdout).
    fn run(&self, config: Value, args: &[&str]) -> (i32, String) {
        let path = self.write("config.json", &config.to_string());
        let out = freshen_cmd(&path, args).output().unwrap();
        eprintln!("freshen {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// `freshen plan --format json`: the build named `name`, and the exit code.
    fn plan(&self, config: Value, name: &str) -> (i32, Value) {
        let (code, out) = self.run(config, &["plan", "--format", "json"]);
        let plan: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("plan JSON: {e}: {out}"));
        let build = plan["builds"].as_array().unwrap().iter().find(|b| b["name"] == name).cloned();
        (code, build.unwrap_or_else(|| panic!("no build {name} in {plan}")))
    }
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array().unwrap_or_else(|| panic!("not a list: {v}")).iter().map(|s| s.as_str().unwrap()).collect()
}

#[test]
fn dockerfile_is_a_file_or_a_folder_holding_one() {
    let w = Offline::new();
    w.write("a/Dockerfile", "FROM alpine:3.20\n");
    w.write("b/Containerfile.prod", "FROM debian:12\n");
    let config =
        json!({"builds": {"a": {"dockerfile": "a", "tags": ["x/a"]}, "b": {"dockerfile": "b/Containerfile.prod", "tags": ["x/b"]}}});
    let (code, a) = w.plan(config.clone(), "a");
    assert_eq!(code, 0);
    assert_eq!((a["dockerfile"].as_str(), a["base"].as_str()), (Some("a/Dockerfile"), Some("docker.io/library/alpine:3.20")));
    let (_, b) = w.plan(config, "b");
    assert_eq!((b["dockerfile"].as_str(), b["base"].as_str()), (Some("b/Containerfile.prod"), Some("docker.io/library/debian:12")));
}

#[test]
fn build_args_override_global_arg_defaults() {
    let w = Offline::new();
    w.write("a/Dockerfile", "ARG VERSION=3.19\nFROM alpine:${VERSION}\n");
    let (_, default) = w.plan(json!({"builds": {"a": {"dockerfile": "a", "tags": ["x/a"]}}}), "a");
    assert_eq!(strings(&default["watched"]), ["docker.io/library/alpine:3.19"]);
    let (_, given) = w.plan(json!({"builds": {"a": {"dockerfile": "a", "tags": ["x/a"], "build_args": {"VERSION": "3.20"}}}}), "a");
    assert_eq!(strings(&given["watched"]), ["docker.io/library/alpine:3.20"]);
}

#[test]
fn target_takes_the_base_of_that_stage() {
    let w = Offline::new();
    w.write("a/Dockerfile", "FROM golang:1.22 AS build\nFROM alpine:3.20 AS debug\nFROM gcr.io/distroless/static-debian12\n");
    let (_, last) = w.plan(json!({"builds": {"a": {"dockerfile": "a", "tags": ["x/a"]}}}), "a");
    assert_eq!(last["base"], "gcr.io/distroless/static-debian12:latest");
    let (_, debug) = w.plan(json!({"builds": {"a": {"dockerfile": "a", "tags": ["x/a"], "target": "debug"}}}), "a");
    assert_eq!((debug["base"].as_str(), debug["from"].as_str()), (Some("docker.io/library/alpine:3.20"), Some("alpine:3.20")));
    let (code, _) = w.plan(json!({"builds": {"a": {"dockerfile": "a", "tags": ["x/a"], "target": "nope"}}}), "a");
    assert_eq!(code, 1, "an unknown target is an error for that build");
}

#[test]
fn platform_sets_the_automatic_platform_args() {
    let w = Offline::new();
    w.write("a/Dockerfile", "FROM example.com/base-${TARGETARCH}${TARGETVARIANT:+-$TARGETVARIANT}:1\n");
    let (_, arm) = w.plan(json!({"builds": {"a": {"dockerfile": "a", "tags": ["x/a"], "platform": "linux/arm/v7"}}}), "a");
    assert_eq!(arm["base"], "example.com/base-arm-v7:1");
    let (_, arm64) = w.plan(json!({"builds": {"a": {"dockerfile": "a", "tags": ["x/a"], "platform": "linux/arm64"}}}), "a");
    assert_eq!(arm64["base"], "example.com/base-arm64:1");
}

#[test]
fn additional_images_are_watched_and_make_graph_edges() {
    let w = Offline::new();
    w.write("tools/Dockerfile", "FROM alpine:3.20\n");
    w.write("app/Dockerfile", "FROM scratch\n");
    let config = json!({"builds": {
        "tools": {"dockerfile": "tools", "tags": ["localhost:5000/tools:1"]},
        "app": {"dockerfile": "app", "tags": ["localhost:5000/app"], "additional_images": ["localhost:5000/tools:1", "busybox"]}
    }});
    let (_, app) = w.plan(config.clone(), "app");
    assert_eq!(strings(&app["watched"]), ["docker.io/library/busybox:latest", "localhost:5000/tools:1"]);
    assert_eq!(strings(&app["parents"]), ["tools"]);
    let (_, graph) = w.run(config, &["graph", "--format", "json"]);
    let graph: Value = serde_json::from_str(&graph).unwrap();
    assert_eq!(graph["edges"], json!([["tools", "app"]]));
}

#[test]
fn exclude_images_are_never_watched() {
    let w = Offline::new();
    w.write("a/Dockerfile", "FROM golang:1.22 AS build\nFROM alpine:3.20\nCOPY --from=build /a /a\n");
    let build = json!({"dockerfile": "a", "tags": ["x/a"], "watch_stages": "all", "exclude_images": ["golang:1.22"]});
    let (_, a) = w.plan(json!({"builds": {"a": build}}), "a");
    assert_eq!(strings(&a["watched"]), ["docker.io/library/alpine:3.20"]);
    let build = json!({"dockerfile": "a", "tags": ["x/a"], "exclude_images": ["alpine:3.20"]});
    let (_, a) = w.plan(json!({"builds": {"a": build}}), "a");
    assert_eq!(strings(&a["watched"]), Vec::<&str>::new(), "the base itself can be excluded");
}

#[test]
fn watch_stages_all_watches_every_stage_and_a_build_may_override_it() {
    let w = Offline::new();
    w.write("go/Dockerfile", "FROM golang:1.22 AS build\nFROM gcr.io/distroless/static-debian12\nCOPY --from=build /app /app\n");
    let builds = |override_: Value| {
        let mut b = json!({"dockerfile": "go", "tags": ["x/go"]});
        if !override_.is_null() {
            b["watch_stages"] = override_;
        }
        json!({"go": b})
    };
    let both = ["docker.io/library/golang:1.22", "gcr.io/distroless/static-debian12:latest"];
    let (_, g) = w.plan(json!({"builds": builds(Value::Null)}), "go");
    assert_eq!(strings(&g["watched"]), ["gcr.io/distroless/static-debian12:latest"], "final is the default");
    let (_, g) = w.plan(json!({"options": {"watch_stages": "all"}, "builds": builds(Value::Null)}), "go");
    assert_eq!(strings(&g["watched"]), both);
    let (_, g) = w.plan(json!({"builds": builds(json!("all"))}), "go");
    assert_eq!(strings(&g["watched"]), both);
    let (_, g) = w.plan(json!({"options": {"watch_stages": "all"}, "builds": builds(json!("final"))}), "go");
    assert_eq!(strings(&g["watched"]), ["gcr.io/distroless/static-debian12:latest"], "the build's own setting wins");
}

#[test]
fn a_build_s_secret_build_args_are_redacted_in_plan() {
    let w = Offline::new();
    w.write("a/Dockerfile", "ARG TOKEN\nFROM registry.example.com/${TOKEN}/base:1\n");
    let build = json!({"dockerfile": "a", "tags": ["x/a"], "build_args": {"TOKEN": "tok3n5ecret"}, "secret_build_args": ["TOKEN"]});
    let (code, out) = w.run(json!({"builds": {"a": build}}), &["plan", "--format", "json"]);
    assert_eq!(code, 0);
    assert!(!out.contains("tok3n5ecret"), "{out}");
    assert!(out.contains("registry.example.com/***/base:1"), "{out}");
}

#[test]
fn freshen_ignore_leaves_that_from_unwatched() {
    let w = Offline::new();
    w.write("a/Dockerfile", "FROM golang:1.22 AS build\n# freshen:ignore\nFROM alpine:3.20\nCOPY --from=build /a /a\n");
    let (_, a) = w.plan(json!({"builds": {"a": {"dockerfile": "a", "tags": ["x/a"]}}}), "a");
    assert_eq!(strings(&a["watched"]), Vec::<&str>::new(), "the ignored base is not watched");
    assert_eq!(strings(&a["ignored_images"]), ["docker.io/library/alpine:3.20"]);
    let (_, a) = w.plan(json!({"builds": {"a": {"dockerfile": "a", "tags": ["x/a"], "watch_stages": "all"}}}), "a");
    assert_eq!(strings(&a["watched"]), ["docker.io/library/golang:1.22"], "only that FROM is left out");
}

#[test]
fn copy_and_run_mount_from_images_and_stage_indexes_under_all() {
    let w = Offline::new();
    w.write(
        "a/Dockerfile",
        "FROM golang:1.22\nRUN go build -o /app\n\
         FROM alpine:3.20\nCOPY --from=0 /app /app\nCOPY --from=docker/buildx-bin:0.14 /buildx /buildx\n\
         RUN --mount=type=bind,from=busybox:1.36,source=/bin,target=/b true\n",
    );
    let (_, a) = w.plan(json!({"options": {"watch_stages": "all"}, "builds": {"a": {"dockerfile": "a", "tags": ["x/a"]}}}), "a");
    assert_eq!(
        strings(&a["watched"]),
        [
            "docker.io/docker/buildx-bin:0.14",
            "docker.io/library/alpine:3.20",
            "docker.io/library/busybox:1.36",
            "docker.io/library/golang:1.22"
        ],
        "--from=0 is stage 0 (golang), not an image named 0"
    );
}

#[test]
fn digest_pinned_images_are_listed_apart_and_never_watched() {
    let w = Offline::new();
    let digest = format!("sha256:{}", "a".repeat(64));
    w.write("a/Dockerfile", &format!("FROM golang:1.22@{digest} AS build\nFROM alpine:3.20\nCOPY --from=build /a /a\n"));
    w.write("b/Dockerfile", &format!("FROM alpine:3.20@{digest}\n"));
    let builds = json!({"a": {"dockerfile": "a", "tags": ["x/a"]}, "b": {"dockerfile": "b", "tags": ["x/b"]}});
    let (_, a) = w.plan(json!({"options": {"watch_stages": "all"}, "builds": builds.clone()}), "a");
    assert_eq!(strings(&a["watched"]), ["docker.io/library/alpine:3.20"]);
    assert_eq!(strings(&a["pinned_images"]), [format!("docker.io/library/golang:1.22@{digest}").as_str()]);
    let (_, b) = w.plan(json!({"builds": builds}), "b");
    assert_eq!((b["pinned"].as_bool(), strings(&b["watched"]).len()), (Some(true), 0));
    assert_eq!(strings(&b["pinned_images"]), [format!("docker.io/library/alpine:3.20@{digest}").as_str()]);
}

#[test]
fn variables_expand_as_buildkit_expands_them() {
    let w = Offline::new();
    // moby/moby's own Dockerfile uses this pattern modifier.
    w.write("a/Dockerfile", "ARG DELVE_SUPPORTED=${TARGETPLATFORM#linux/amd64}\nFROM example.com/delve${DELVE_SUPPORTED:+-none}:1\n");
    w.write("b/Dockerfile", "ARG V=3.20.1\nFROM alpine:${V%.*}$1\n");
    w.write("c/Dockerfile", "ARG NAME=Not/Valid\nFROM ${NAME}:1\n");
    let build = |df: &str, platform: &str| json!({"dockerfile": df, "tags": [format!("x/{df}-{}", platform.replace('/', "-"))], "platform": platform});
    let config = json!({"builds": {"a": build("a", "linux/amd64"), "arm": build("a", "linux/arm64"), "b": build("b", "linux/amd64"), "c": build("c", "linux/amd64")}});
    let (code, a) = w.plan(config.clone(), "a");
    assert_eq!(code, 1, "build c has an error");
    assert_eq!(a["base"], "example.com/delve:1");
    assert_eq!(w.plan(config.clone(), "arm").1["base"], "example.com/delve-none:1");
    assert_eq!(w.plan(config.clone(), "b").1["base"], "docker.io/library/alpine:3.20", "$1 is a positional parameter: empty");
    let (_, c) = w.plan(config, "c");
    assert_eq!(c["from"], "Not/Valid:1", "the expanded word is shown next to the error");
    assert!(c["error"].as_str().unwrap().contains("line 2"), "{c}");
}
