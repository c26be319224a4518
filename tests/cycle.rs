//! The cycle (check → plan → build → record) over the in-memory fakes of
//! `tests/common/fakes.rs`: one row per situation a build can be in. These run
//! in milliseconds with no engine; the tests against the real engine and
//! registry (`tests/core.rs`, `tests/registry.rs`, …) stay the proof at the edges.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::fakes::{FakeEngine, FakeRegistry};
use freshen::config::{Build, Config, LogFormat, Options};
use freshen::cycle::{self, CycleInput, CycleReport};
use freshen::dockerfile::WatchStages;
use freshen::engine::Pool;
use freshen::executor::Outcome;
use freshen::input::Input;
use freshen::plan::Decision;
use freshen::project::{self, Project};
use freshen::reference::ImageRef;
use freshen::state::{self, BuildRecord, Origin, State};
use freshen::trigger::{Phase, Status, Trigger, Triggers};
use freshen::watcher::{self, Loop, Mode, Setup};
use tokio_util::sync::CancellationToken;

const BASE: &str = "registry.example.com/base:1";
const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

fn norm(r: &str) -> String {
    ImageRef::parse(r).unwrap().to_string()
}

/// `lib` on [`BASE`], and `app` on `lib`'s tag.
fn lib_app() -> Vec<(&'static str, &'static str, String)> {
    vec![
        ("lib", "registry.example.com/lib:1", format!("FROM {BASE}\n")),
        ("app", "registry.example.com/app:1", "FROM registry.example.com/lib:1\n".into()),
    ]
}

/// The fakes, state and a project of `builds` (name, tag, Dockerfile text).
struct World {
    engine: Arc<FakeEngine>,
    registry: Arc<FakeRegistry>,
    state: Mutex<State>,
    project: Arc<Project>,
    config: Config,
    dir: tempfile::TempDir,
}

impl World {
    fn new(builds: &[(&str, &str, String)]) -> World {
        let dir = tempfile::tempdir().unwrap();
        let registry = Arc::new(FakeRegistry::default());
        let engine = Arc::new(FakeEngine { remote: registry.remote.clone(), ..Default::default() });
        let mut config_builds = BTreeMap::new();
        let mut texts = HashMap::new();
        for (name, tag, text) in builds {
            let build = Build {
                name: name.to_string(),
                dockerfile: dir.path().join(name).join("Dockerfile"),
                context: dir.path().join(name),
                tags: vec![ImageRef::parse(tag).unwrap()],
                commit_tags: Vec::new(),
                build_args: HashMap::new(),
                target: None,
                platform: None,
                labels: HashMap::new(),
                no_cache: false,
                additional_images: Vec::new(),
                exclude_images: Vec::new(),
                watch_stages: WatchStages::Final,
                builder: freshen::config::BuilderChoice::Auto,
                secrets: Vec::new(),
                build_secrets: Default::default(),
                push: false,
                test: None,
                watch_context: false,
                source: None,
            };
            // On disk too: the loop reads the Dockerfiles again before each cycle.
            std::fs::create_dir_all(build.context.clone()).unwrap();
            std::fs::write(&build.dockerfile, text).unwrap();
            config_builds.insert(name.to_string(), build);
            texts.insert(name.to_string(), Ok(text.clone()));
        }
        let options = Options {
            interval: Duration::from_secs(300),
            parallelism: 2,
            engines: Vec::new(),
            check_concurrency: 4,
            registry_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(5),
            build_timeout: Duration::from_secs(60),
            build_idle_timeout: Duration::from_secs(60),
            state_file: dir.path().join("state.json"),
            log_level: "info".into(),
            log_format: LogFormat::Text,
            rebuild_on_start: false,
            settle: Duration::ZERO,
            rate_limit_reserve: 10,
            watch_stages: WatchStages::Final,
            builder: freshen::config::BuilderChoice::Auto,
            keep_logs: 10,
            keep_previous: 1,
            notify: Vec::new(),
            push: false,
            push_timeout: Duration::from_secs(60),
            server: None,
            warnings: Vec::new(),
        };
        let config = Config { path: dir.path().join("config.json"), options, builds: config_builds, registries: Default::default() };
        let project = Arc::new(project::analyse(&config, &texts, Some("linux/amd64")).unwrap());
        World { engine, registry, state: Mutex::new(State::default()), project, config, dir }
    }

    fn serve(&self, image: &str, digest: &str) {
        self.registry.remote.lock().unwrap().insert(norm(image), digest.into());
    }

    /// A record saying `build` was built from `image` at `digest`, and its image in the engine.
    fn built(&self, build: &str, tag: &str, from: &[(&str, &str)]) {
        let built_from: BTreeMap<Input, String> = from.iter().map(|(i, d)| (input(i), d.to_string())).collect();
        self.state
            .lock()
            .unwrap()
            .builds
            .insert(build.into(), BuildRecord { built_from, image_id: None, recorded_at: 1, origin: Origin::Built, ..Default::default() });
        self.engine.put(tag, &[]);
    }

    /// `lib` built from [`BASE`] at `digest`, and `app` built from `lib`'s image.
    fn lib_and_app_built_from(&self, digest: &str) {
        self.built("lib", "registry.example.com/lib:1", &[(BASE, digest)]);
        let lib_id = self.engine.images.lock().unwrap()[&norm("registry.example.com/lib:1")].id.clone();
        self.built("app", "registry.example.com/app:1", &[("registry.example.com/lib:1", &lib_id)]);
    }

    async fn cycle(&self, rebuild_all: bool, dry_run: bool, settle: Duration) -> CycleReport {
        self.run(rebuild_all, dry_run, settle, None, false).await
    }

    /// One cycle over the world's state: everything, or only the inputs named in `only`; saved with `persist`.
    async fn run(&self, rebuild_all: bool, dry_run: bool, settle: Duration, only: Option<BTreeSet<Input>>, persist: bool) -> CycleReport {
        let input = CycleInput {
            project: self.project.clone(),
            pool: Arc::new(Pool::single(self.engine.clone(), "linux/amd64".into(), 2)),
            registry: self.registry.clone(),
            state_path: self.state_path(),
            parallelism: 2,
            check_concurrency: 4,
            shutdown_grace: Duration::from_secs(5),
            build_timeout: Duration::from_secs(60),
            build_idle_timeout: Duration::from_secs(60),
            keep_logs: 0,
            keep_previous: 1,
            push_timeout: Duration::from_secs(60),
            rebuild_all,
            dry_run,
            persist,
            settle,
            rate_limit_reserve: 10,
            engine_platform: "linux/amd64".into(),
            only,
            cancel: CancellationToken::new(),
            contexts: Default::default(),
        };
        let mut state = std::mem::take(&mut *self.state.lock().unwrap());
        let report = cycle::run(&input, &mut state).await;
        *self.state.lock().unwrap() = state;
        report
    }

    fn state_path(&self) -> std::path::PathBuf {
        self.dir.path().join("state.json")
    }

    async fn once(&self) -> CycleReport {
        self.cycle(false, false, Duration::ZERO).await
    }

    fn builds(&self) -> Vec<String> {
        self.engine.builds.lock().unwrap().clone()
    }
}

fn status(r: &CycleReport, build: &str) -> String {
    r.decisions[build].status().to_string()
}

fn input(r: &str) -> Input {
    Input::Image(ImageRef::parse(r).unwrap())
}

#[tokio::test]
async fn an_unchanged_base_is_fresh_costs_one_head_and_builds_nothing() {
    let w = World::new(&lib_app());
    w.serve(BASE, D1);
    w.lib_and_app_built_from(D1);
    let r = w.once().await;
    assert_eq!((status(&r, "lib"), status(&r, "app")), ("fresh".into(), "fresh".into()));
    assert!(w.builds().is_empty());
    assert_eq!(*w.registry.heads.lock().unwrap(), [norm(BASE)], "one HEAD, for the one external base");
}

#[tokio::test]
async fn a_changed_base_rebuilds_the_build_and_its_child_and_records_the_new_digest() {
    let w = World::new(&lib_app());
    w.serve(BASE, D2);
    w.lib_and_app_built_from(D1);
    let r = w.once().await;
    assert_eq!(r.decisions["lib"], Decision::Changed { input: input(BASE), old: D1.into(), new: D2.into() });
    assert_eq!(r.decisions["app"], Decision::ParentRebuilt { parent: "lib".into() });
    assert_eq!(w.builds(), ["lib", "app"], "parent first");
    let st = w.state.lock().unwrap();
    assert_eq!(st.builds["lib"].built_from[&input(BASE)], D2);
    assert_eq!(st.builds["lib"].origin, Origin::Built);
    let new_lib = w.engine.images.lock().unwrap()[&norm("registry.example.com/lib:1")].id.clone();
    assert_eq!(st.builds["app"].built_from[&input("registry.example.com/lib:1")], new_lib, "the child records the parent's new image");
}

#[tokio::test]
async fn a_missing_image_is_built() {
    let w = World::new(&lib_app()[..1]);
    w.serve(BASE, D1);
    let r = w.once().await;
    assert_eq!(r.decisions["lib"], Decision::Missing);
    assert!(matches!(r.outcomes["lib"], Outcome::Built { .. }));
    assert_eq!(w.engine.pulls.lock().unwrap().as_slice(), [norm(BASE)], "the base is pulled before the build");
}

#[tokio::test]
async fn a_failing_check_rebuilds_nothing_and_says_why() {
    let w = World::new(&lib_app()[..1]);
    w.serve(BASE, D2);
    w.registry.failing.lock().unwrap().push(norm(BASE));
    w.built("lib", "registry.example.com/lib:1", &[(BASE, D1)]);
    let r = w.once().await;
    assert_eq!(status(&r, "lib"), "check_failed");
    assert!(r.failed());
    assert!(w.builds().is_empty());
    let error = r.checks[&input(BASE)].seen.as_ref().unwrap_err();
    assert_eq!(error.kind(), "registry_error", "an outage is told apart from a refusal or a missing image");
    assert!(error.to_string().contains("503"), "{error}");
}

#[tokio::test]
async fn a_change_inside_the_settle_window_waits_and_holds_the_children() {
    let w = World::new(&lib_app());
    w.serve(BASE, D2);
    w.built("lib", "registry.example.com/lib:1", &[(BASE, D1)]);
    w.built("app", "registry.example.com/app:1", &[]);
    let r = w.cycle(false, false, Duration::from_secs(3600)).await;
    assert_eq!(status(&r, "lib"), "settling");
    assert!(r.recheck_at.is_some(), "the next check is due when the window ends");
    assert!(w.builds().is_empty());
}

#[tokio::test]
async fn a_failed_parent_skips_its_child() {
    let w = World::new(&lib_app());
    w.serve(BASE, D2);
    w.built("lib", "registry.example.com/lib:1", &[(BASE, D1)]);
    w.built("app", "registry.example.com/app:1", &[]);
    w.engine.failing.lock().unwrap().push("lib".into());
    let r = w.once().await;
    assert!(
        matches!(&r.outcomes["lib"], Outcome::Failed { error, .. } if error.to_string().contains("exit code 1") && error.kind() == "build_failed")
    );
    assert_eq!(r.outcomes["app"], Outcome::Skipped { parent: "lib".into() });
    assert_eq!(w.builds(), ["lib"]);
    assert_eq!(w.state.lock().unwrap().builds["lib"].built_from[&input(BASE)], D1, "a failed build leaves its record");
}

#[tokio::test]
async fn without_state_an_image_is_adopted_from_its_labels_or_as_a_baseline() {
    let w = World::new(&[
        ("labelled", "registry.example.com/labelled:1", format!("FROM {BASE}\n")),
        ("plain", "registry.example.com/plain:1", format!("FROM {BASE}\n")),
    ]);
    w.serve(BASE, D2);
    let built_from = serde_json::json!({norm(BASE): D1}).to_string();
    w.engine.put("registry.example.com/labelled:1", &[("io.freshen.built-from", &built_from)]);
    w.engine.put("registry.example.com/plain:1", &[]);
    let r = w.once().await;
    assert_eq!(status(&r, "labelled"), "changed", "the labels carry the old digest: the change is not missed");
    assert_eq!(status(&r, "plain"), "fresh", "an image freshen never built is a baseline");
    let st = w.state.lock().unwrap();
    assert_eq!(st.builds["plain"].origin, Origin::Baseline);
    assert_eq!(st.builds["plain"].built_from[&input(BASE)], D2);
    assert_eq!(w.builds(), ["labelled"]);
}

#[tokio::test]
async fn rebuild_all_rebuilds_everything_and_a_dry_run_builds_nothing() {
    let w = World::new(&lib_app());
    w.serve(BASE, D1);
    w.built("lib", "registry.example.com/lib:1", &[(BASE, D1)]);
    w.built("app", "registry.example.com/app:1", &[]);
    let r = w.cycle(true, true, Duration::ZERO).await;
    assert_eq!((r.decisions["lib"].clone(), r.decisions["app"].clone()), (Decision::RebuildOnStart, Decision::RebuildOnStart));
    assert!(r.outcomes.is_empty() && w.builds().is_empty(), "a dry run builds nothing");
    let r = w.cycle(true, false, Duration::ZERO).await;
    assert_eq!(r.outcomes.len(), 2);
    assert_eq!(w.builds(), ["lib", "app"]);
}

#[tokio::test]
async fn persist_false_writes_no_state_file_and_persist_true_saves_version_2() {
    let w = World::new(&lib_app());
    w.serve(BASE, D2);
    w.lib_and_app_built_from(D1);
    w.cycle(false, false, Duration::ZERO).await;
    assert!(!w.state_path().exists(), "persist: false writes nothing, builds included");
    w.serve(BASE, D1);
    w.run(false, false, Duration::ZERO, None, true).await;
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(w.state_path()).unwrap()).unwrap();
    assert_eq!(saved["version"], 2);
    assert_eq!(saved["builds"]["lib"]["built_from"][format!("image:{}", norm(BASE))], D1, "state is keyed by typed inputs");
}

#[tokio::test]
async fn a_version_1_state_file_loads_and_adopts_with_nothing_rebuilt() {
    let w = World::new(&lib_app());
    w.serve(BASE, D1);
    let lib_id = w.engine.put("registry.example.com/lib:1", &[]);
    w.engine.put("registry.example.com/app:1", &[]);
    let fixture = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/state-v1.json")).unwrap();
    assert!(fixture.contains(&lib_id), "the fixture names the image ID the fake engine gives lib");
    std::fs::write(w.state_path(), fixture).unwrap();
    let state::Loaded::Found(loaded) = state::load(&w.state_path(), true).unwrap() else { panic!("the v1 file loads") };
    assert_eq!(loaded.version, 2);
    assert_eq!(loaded.builds["lib"].built_from[&input(BASE)], D1);
    *w.state.lock().unwrap() = loaded;
    let r = w.run(false, false, Duration::ZERO, None, true).await;
    assert_eq!((status(&r, "lib"), status(&r, "app")), ("fresh".into(), "fresh".into()), "{:?}", r.decisions);
    assert!(w.builds().is_empty(), "nothing rebuilt");
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(w.state_path()).unwrap()).unwrap();
    assert_eq!(saved["version"], 2, "saved back in the new format");
    assert_eq!(saved["inputs"][format!("image:{}", norm(BASE))]["digest"], D1);
}

/// A base other than [`BASE`], for builds that must not share one.
const OTHER: &str = "registry.example.com/other:1";

/// `lib` on [`BASE`] and `tool` on [`OTHER`], both built from `D1`, which both registries serve.
fn lib_and_tool() -> World {
    let w = World::new(&[
        ("lib", "registry.example.com/lib:1", format!("FROM {BASE}\n")),
        ("tool", "registry.example.com/tool:1", format!("FROM {OTHER}\n")),
    ]);
    w.serve(BASE, D1);
    w.serve(OTHER, D1);
    w.built("lib", "registry.example.com/lib:1", &[(BASE, D1)]);
    w.built("tool", "registry.example.com/tool:1", &[(OTHER, D1)]);
    w
}

#[tokio::test]
async fn a_cycle_scoped_to_named_inputs_checks_only_those() {
    let w = lib_and_tool();
    w.once().await;
    w.registry.heads.lock().unwrap().clear();
    w.serve(BASE, D2);
    w.serve(OTHER, D2);
    let r = w.run(false, false, Duration::ZERO, Some([input(BASE)].into()), false).await;
    assert_eq!(*w.registry.heads.lock().unwrap(), [norm(BASE)], "one HEAD, for the named input only");
    assert_eq!((status(&r, "lib"), status(&r, "tool")), ("changed".into(), "fresh".into()));
    assert!(r.checks[&input(OTHER)].deferred, "the other input keeps its last observation");
    assert_eq!(w.builds(), ["lib"]);
}

#[tokio::test]
async fn a_dry_run_of_a_missing_build_whose_check_fails_is_a_failure() {
    let w = World::new(&lib_app());
    w.registry.failing.lock().unwrap().push(norm(BASE));
    let r = w.cycle(false, true, Duration::ZERO).await;
    assert_eq!((status(&r, "lib"), status(&r, "app")), ("missing".into(), "missing".into()));
    let lib_tag = r.checks[&input("registry.example.com/lib:1")].seen.as_ref().unwrap_err();
    assert_eq!(lib_tag.kind(), "not_built", "a parent's tag built first in this cycle is not a failure");
    assert!(r.failed(), "the base's check failed: --dry-run exits 1");
}

#[tokio::test]
async fn triggers_during_a_cycle_make_one_follow_up_that_checks_only_the_inputs_named() {
    let w = lib_and_tool();
    state::save(&w.state_path(), &w.state.lock().unwrap()).unwrap();
    let triggers = Triggers::new(CancellationToken::new());
    // Sent before the loop starts, so they are pending while its first cycle runs.
    for _ in 0..3 {
        triggers.send(Trigger::Check([input(BASE)].into()));
    }
    let (status, mut rx) = tokio::sync::watch::channel(Status::default());
    let setup = Setup { config: w.config.clone(), project: (*w.project).clone(), registry: w.registry.clone() };
    let l = Loop {
        pool: Arc::new(Pool::single(w.engine.clone(), "linux/amd64".into(), 2)),
        engine_platform: "linux/amd64".into(),
        mode: Mode::default(),
        triggers: triggers.clone(),
        reloader: None,
        status,
        metrics: None,
    };
    let drive = async {
        rx.wait_for(|s| s.cycles == 2 && s.phase == Phase::Idle).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(rx.borrow().cycles, 2, "no third cycle: the interval is 5 minutes away");
        triggers.send(Trigger::Shutdown);
    };
    let (last, ()) = tokio::join!(watcher::run(setup, l), drive);
    let heads = w.registry.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 3, "{heads:?}");
    assert_eq!(heads[2], norm(BASE), "the follow-up cycle sent one HEAD, for the input named");
    assert!(last.unwrap().checks[&input(OTHER)].deferred);
}
