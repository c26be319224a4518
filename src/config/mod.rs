//! Configuration: raw JSON → schema check → resolved [`Config`].
//!
//! [`load`] reads the file; [`parse_str`] does the work and is what tests call.
//! Nothing here talks to Docker or a registry. Every error is a [`ConfigError`],
//! which names the file and a JSON pointer or line, and which the CLI turns into
//! exit code 2.

mod engines;
mod notify;
mod options;
pub mod schema;
mod secrets;
mod server;
mod source;
pub mod tag_template;
mod test_gate;

pub use engines::{serves, EngineHost, EngineSpec, EngineTls};
pub use notify::{Event, Notify, Receiver};
use options::{builder, resolve_options, watch_stages};
pub use options::{BuilderChoice, LogFormat, Options};
pub use secrets::{SecretValue, MAX_SECRET_BYTES};
pub use server::{Server, MIN_TOKEN_CHARS};
pub use tag_template::{GitFacts, TagTemplate};
pub use test_gate::TestGate;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub use source::{GitCredential, GitSource};

use serde_json::Value;

use crate::credentials::{Credential, Registries, RegistryOptions, Secret};
use crate::dockerfile::WatchStages;
use crate::files::ReadError;
use crate::reference::ImageRef;
pub use schema::Violation;

/// Largest config file accepted, in bytes (64 MiB: 50,000 builds take about 6 MiB);
/// larger files are refused before parsing.
pub const MAX_CONFIG_BYTES: u64 = 64 * 1024 * 1024;

/// A config that cannot be used. Always fatal: exit code 2, nothing contacted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read config: {source}; pass the right file with -c/--config or FRESHEN_CONFIG")]
    Read {
        /// The config path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not a regular file (a FIFO, a device), or larger than [`MAX_CONFIG_BYTES`].
    #[error("{0}")]
    File(ReadError),
    /// Not JSON, or not UTF-8.
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        /// The config path.
        path: PathBuf,
        /// 1-based line (0 when unknown).
        line: usize,
        /// 1-based column (0 when unknown).
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// One or more violations of the schema or of the rules the schema cannot express.
    #[error("{path}: invalid config:\n{}", format_violations(.violations))]
    Invalid {
        /// The config path.
        path: PathBuf,
        /// Every violation found, sorted by pointer.
        violations: Vec<Violation>,
    },
}

fn format_violations(v: &[Violation]) -> String {
    let line = |v: &Violation| format!("  at {}: {}", if v.pointer.is_empty() { "/" } else { &v.pointer }, v.message);
    v.iter().map(|v| escape_control(&line(v))).collect::<Vec<_>>().join("\n")
}

/// `text` with control characters (an escape sequence, a newline) written as
/// `\u{1b}`, so that text from a config or a registry cannot forge a terminal line.
pub fn escape_control(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars().map(|c| if c.is_control() { c.escape_unicode().to_string() } else { c.to_string() }).collect()
}

/// `text` for a terminal or a text log: control characters other than a
/// newline escaped as [`escape_control`] does, and every line after the first
/// indented by two spaces, so that no part of a multi-line error (a build's
/// output tail, a registry's answer) can pass for a line of freshen's own.
pub fn terminal_text(text: &str) -> String {
    text.split('\n').map(escape_control).collect::<Vec<_>>().join("\n  ")
}

/// One build, with paths made absolute and references parsed.
#[derive(Debug, Clone)]
pub struct Build {
    /// The key under `builds`: how logs, reports and state name the build.
    pub name: String,
    /// The Dockerfile (absolute): where the base images are read from.
    pub dockerfile: PathBuf,
    /// The build context folder (absolute), sent to the engine.
    pub context: PathBuf,
    /// Tags that stay the same across commits, normalised (plain ones, and
    /// `{git.branch}` templates rendered at load); the first is the one checked for existence and passed as `t`.
    pub tags: Vec<ImageRef>,
    /// Tag templates that change with the commit (`{git.short_commit}`, `{semver.version}`):
    /// rendered at each build from the commit the check saw, and given to the image beside `tags`.
    pub commit_tags: Vec<TagTemplate>,
    /// Build args: passed to the engine, and used to expand `ARG`s in `FROM`.
    pub build_args: HashMap<String, String>,
    /// The stage to build; its `FROM` chain decides the base.
    pub target: Option<String>,
    /// The platform to build for (`os/arch[/variant]`): picks a multi-platform base's digest.
    pub platform: Option<String>,
    /// The user's labels, set on the image beside freshen's own.
    pub labels: HashMap<String, String>,
    /// Build without the engine's cache, for builds that fetch at build time.
    pub no_cache: bool,
    /// Images the Dockerfile does not name but the build depends on (`COPY --from` a variable, a script's pull).
    pub additional_images: Vec<ImageRef>,
    /// Images whose changes must not rebuild this build.
    pub exclude_images: Vec<ImageRef>,
    /// Which stages' images are watched: the final stage's base, or every stage the target needs.
    pub watch_stages: WatchStages,
    /// The builder asked for: BuildKit for `RUN --mount` Dockerfiles, classic for engines without it.
    pub builder: BuilderChoice,
    /// Values of the build args named in `secret_build_args` (the build's and
    /// the options'), and of `build_secrets`, to be replaced by `***` wherever freshen prints text.
    pub secrets: Vec<String>,
    /// Push every tag after a successful build (`push`, the build's or the options'), so hosts that pull get the rebuilt image.
    pub push: bool,
    /// BuildKit secrets (`secrets`): id → value, served on the build's session
    /// for `RUN --mount=type=secret,id=<id>`, so they never enter the image.
    pub build_secrets: BTreeMap<String, SecretValue>,
    /// The test gate (`test`): run on the new image before any tag moves or any push.
    pub test: Option<TestGate>,
    /// Watch the build context's files and the Dockerfile (`watch_context`, default
    /// true): an edit rebuilds the build. Off for contexts too large to digest, or that change on every run.
    pub watch_context: bool,
    /// The git source (`source`), when the build is made from a repository's commits: then
    /// `dockerfile` and `context` are paths inside the repository, and its new commits rebuild.
    pub source: Option<GitSource>,
}

impl Build {
    /// The [`Redactor`] of this build's secret build arg values.
    pub fn redactor(&self) -> Redactor {
        Redactor::new(self.secrets.iter().cloned())
    }
}

/// Replaces secret build arg values by `***` in text about to be written out
/// (a log line, a report, stdout). Errors and build output are kept raw inside
/// freshen and pass through a redactor once, where they are written.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// The non-empty secret values, longest first, so a secret that contains another is replaced whole.
    secrets: std::sync::Arc<[String]>,
}

impl Redactor {
    /// A redactor of `secrets`; empty values are left out (they would match everywhere).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Redactor {
        let mut v: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        v.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        v.dedup();
        Redactor { secrets: v.into() }
    }

    /// `text` with every secret replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        self.secrets.iter().fold(text.to_string(), |t, s| t.replace(s.as_str(), "***"))
    }

    /// `value`'s `Display` text, redacted.
    pub fn show(&self, value: &impl std::fmt::Display) -> String {
        self.redact(&value.to_string())
    }

    /// `value`'s `Display` text, redacted and made safe for a terminal
    /// ([`terminal_text`]); JSON output uses [`Redactor::show`], as JSON
    /// escapes control characters itself.
    pub fn text(&self, value: &impl std::fmt::Display) -> String {
        terminal_text(&self.show(value))
    }
}

/// A whole resolved config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Absolute path of the config file.
    pub path: PathBuf,
    /// Global options.
    pub options: Options,
    /// Builds by name, sorted.
    pub builds: BTreeMap<String, Build>,
    /// Per-registry settings and credentials.
    pub registries: Registries,
}

/// Reads and resolves the config at `path`.
///
/// # Errors
/// [`ConfigError::Read`] when the file cannot be read, otherwise as [`parse_str`].
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let read_err = |source| ConfigError::Read { path: path.to_path_buf(), source };
    let path = std::path::absolute(path).map_err(read_err)?;
    let bytes = match crate::files::read_regular(&path, MAX_CONFIG_BYTES, "a config") {
        Ok(b) => b,
        Err(ReadError::Io { path, source }) => return Err(ConfigError::Read { path, source }),
        Err(e) => return Err(ConfigError::File(e)),
    };
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        ConfigError::Syntax { path: path.clone(), line, column: 0, message: "config is not UTF-8; save it as UTF-8".into() }
    })?;
    parse_str(&text, &path)
}

/// Resolves config `text` as if read from `path` (relative paths resolve against its folder).
///
/// Checks, in order: JSON syntax; the schema (all violations at once); then the
/// rules the schema cannot express: durations, Dockerfile and context paths,
/// references, and that no two builds produce the same tag.
///
/// # Errors
/// [`ConfigError::Syntax`] for invalid JSON (with line and column), and
/// [`ConfigError::Invalid`] with every violation and its JSON pointer.
pub fn parse_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let raw: Value = serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: format!("invalid JSON: {e}"),
    })?;
    let invalid = |violations| ConfigError::Invalid { path: path.to_path_buf(), violations };
    let violations = schema::check(&raw);
    if !violations.is_empty() {
        return Err(invalid(violations));
    }
    let base_dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
    let mut v = Vec::new();
    let options = resolve_options(&raw["options"], path, &mut v);
    let mut builds = BTreeMap::new();
    for (name, b) in raw["builds"].as_object().into_iter().flatten() {
        if let Some(mut build) = resolve_build(name, b, &base_dir, &mut v) {
            build.watch_stages = watch_stages(b).unwrap_or(options.watch_stages);
            build.builder = builder(b).unwrap_or(options.builder);
            build.push = b.get("push").and_then(Value::as_bool).unwrap_or(options.push);
            let names = [&raw["options"]["secret_build_args"], &b["secret_build_args"]];
            build.secrets = names
                .iter()
                .flat_map(|n| n.as_array().into_iter().flatten())
                .filter_map(|n| build.build_args.get(n.as_str().unwrap_or_default()).cloned())
                .collect();
            let at = format!("/builds/{}", escape_pointer(name));
            build.build_secrets = secrets::resolve(&b["secrets"], &at, &base_dir, &mut v);
            build.secrets.extend(build.build_secrets.values().flat_map(SecretValue::redacted_forms));
            if !build.build_secrets.is_empty() && build.builder == BuilderChoice::Classic {
                violation(
                    &mut v,
                    format!("{at}/secrets"),
                    "secrets are served by a BuildKit session, and this build uses the classic builder; set \"builder\": \"buildkit\" (or \"auto\") for it, or use secret_build_args".into(),
                );
            }
            builds.insert(name.clone(), build);
        }
    }
    check_duplicate_tags(&builds, &mut v);
    check_state_file(&options.state_file, path, &builds, raw["options"].get("state_file").is_some(), &mut v);
    let registries = resolve_registries(&raw["registries"], &base_dir, &mut v);
    source::attach_credentials(&raw["git"], &base_dir, &mut builds, &mut v);
    if !v.is_empty() {
        v.sort_by(|a: &Violation, b| a.pointer.cmp(&b.pointer));
        return Err(invalid(v));
    }
    Ok(Config { path: path.to_path_buf(), options, builds, registries })
}

pub(super) fn violation(v: &mut Vec<Violation>, pointer: String, message: String) {
    v.push(Violation { pointer, message });
}

fn string_map(raw: &Value) -> HashMap<String, String> {
    raw.as_object().map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect()).unwrap_or_default()
}

fn references(raw: &Value, pointer: &str, v: &mut Vec<Violation>) -> Vec<ImageRef> {
    let mut out = Vec::new();
    for (i, item) in raw.as_array().into_iter().flatten().enumerate() {
        match ImageRef::parse(item.as_str().unwrap_or_default()) {
            Ok(r) => out.push(r),
            Err(e) => violation(v, format!("{pointer}/{i}"), e.to_string()),
        }
    }
    out
}

/// Escapes a key for use in a JSON pointer (RFC 6901: `~` → `~0`, `/` → `~1`).
fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn resolve_build(name: &str, raw: &Value, base_dir: &Path, v: &mut Vec<Violation>) -> Option<Build> {
    let at = format!("/builds/{}", escape_pointer(name));
    let before = v.len();
    let source = source::resolve(raw, &at, v);
    let (dockerfile, context) = match &source {
        // Paths inside the repository: read from its cache, checked out for the build.
        Some(s) => {
            let dockerfile = s.in_repository(raw["dockerfile"].as_str().unwrap_or("Dockerfile"));
            (PathBuf::from(dockerfile), PathBuf::from(if s.path.is_empty() { "." } else { s.path.as_str() }))
        }
        None => {
            let (d, c) = local_paths(raw, base_dir, &at, v);
            (std::path::absolute(&d).unwrap_or(d), std::path::absolute(&c).unwrap_or(c))
        }
    };
    let (tags, commit_tags) = tag_template::resolve(raw, &at, source.as_ref(), v);
    if name.chars().any(char::is_control) {
        violation(v, at.clone(), format!("build name \"{name}\" contains a control character; use letters, digits, '-', '_' and '.'"));
    }
    let additional_images = references(&raw["additional_images"], &format!("{at}/additional_images"), v);
    let exclude_images = references(&raw["exclude_images"], &format!("{at}/exclude_images"), v);
    let test = test_gate::resolve(raw, &at, v);
    if v.len() > before {
        return None;
    }
    Some(Build {
        name: name.to_string(),
        dockerfile,
        context,
        tags,
        commit_tags,
        build_args: string_map(&raw["build_args"]),
        target: raw.get("target").and_then(Value::as_str).map(str::to_string),
        platform: raw.get("platform").and_then(Value::as_str).map(str::to_string),
        labels: string_map(&raw["labels"]),
        no_cache: raw.get("no_cache").and_then(Value::as_bool).unwrap_or(false),
        additional_images,
        exclude_images,
        watch_stages: WatchStages::Final,
        builder: BuilderChoice::Auto,
        secrets: Vec::new(),
        build_secrets: BTreeMap::new(),
        push: false,
        test,
        // A git source's commits are its input: nothing on disk to watch.
        watch_context: source.is_none() && raw.get("watch_context").and_then(Value::as_bool).unwrap_or(true),
        source,
    })
}

/// A local build's Dockerfile and context folder, each checked to exist (else a violation at `at`).
fn local_paths(raw: &Value, base_dir: &Path, at: &str, v: &mut Vec<Violation>) -> (PathBuf, PathBuf) {
    let mut dockerfile = base_dir.join(raw["dockerfile"].as_str().unwrap_or_default());
    if dockerfile.join("Dockerfile").is_file() {
        dockerfile = dockerfile.join("Dockerfile");
    }
    // A folder without a Dockerfile in it is left as it is: reading it fails for that build alone.
    if !dockerfile.exists() {
        violation(v, format!("{at}/dockerfile"), format!("{} does not exist or is not a file; give the path of a Dockerfile, or of a folder holding one named Dockerfile, relative to the config's folder", dockerfile.display()));
    }
    let given = raw.get("context").or_else(|| raw.get("build_dir")).and_then(Value::as_str);
    let context = match given {
        Some(c) => base_dir.join(c),
        None => dockerfile.parent().unwrap_or(base_dir).to_path_buf(),
    };
    // Without an explicit context, a missing Dockerfile has already been reported.
    if given.is_some() && !context.is_dir() {
        let key = if raw.get("context").is_some() { "context" } else { "build_dir" };
        violation(
            v,
            format!("{at}/{key}"),
            format!("build context {} is not a folder; give the folder whose files the Dockerfile COPYs", context.display()),
        );
    }
    (dockerfile, context)
}

/// Largest `password_file` read, in bytes (64 KiB): a password or a token, never more.
pub(super) const MAX_PASSWORD_FILE_BYTES: u64 = 64 * 1024;

/// The regular file at `path` as UTF-8 text, at most `limit` bytes.
pub(super) fn read_text(path: &Path, limit: u64, what: &'static str) -> Result<String, String> {
    let bytes = crate::files::read_regular(path, limit, what).map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8 text", path.display()))
}

/// A one-line secret file (a `password_file`, a webhook's `secret_file`, a
/// `token_file`): at most [`MAX_PASSWORD_FILE_BYTES`] of UTF-8 text, returned
/// without its trailing newline, which editors and `echo` add.
pub(super) fn read_secret(path: &Path, what: &'static str) -> Result<String, String> {
    read_text(path, MAX_PASSWORD_FILE_BYTES, what).map(|t| t.trim_end_matches(['\r', '\n']).to_string())
}

fn resolve_registries(raw: &Value, base_dir: &Path, v: &mut Vec<Violation>) -> Registries {
    let mut out = Registries::new();
    for (host, r) in raw.as_object().into_iter().flatten() {
        let at = format!("/registries/{}", escape_pointer(host));
        let credential = match (r.get("username").and_then(Value::as_str), r.get("password_file").and_then(Value::as_str)) {
            (Some(username), Some(file)) => match read_secret(&base_dir.join(file), "a password_file") {
                Ok(p) => Some(Credential::Basic { username: username.to_string(), password: Secret::new(p) }),
                Err(e) => {
                    violation(
                        v,
                        format!("{at}/password_file"),
                        format!("cannot read password_file: {e}; give a regular file holding only the password"),
                    );
                    None
                }
            },
            _ => None,
        };
        let ca_file = r.get("ca_file").and_then(Value::as_str).map(|f| base_dir.join(f));
        if let Some(ca) = ca_file.as_ref().filter(|c| !c.is_file()) {
            violation(v, format!("{at}/ca_file"), format!("{} is not a file; give a PEM CA certificate", ca.display()));
        }
        out.insert(
            host.clone(),
            RegistryOptions { credential, insecure: r.get("insecure").and_then(Value::as_bool).unwrap_or(false), ca_file },
        );
    }
    out
}

/// A state file that is the config or a Dockerfile would overwrite the user's file;
/// a `state_file` given inside a build context would change that context on every
/// save. (The default, beside the config, may lie in a context whose folder is the
/// config's: that stays allowed, as it always was.)
fn check_state_file(state: &Path, config: &Path, builds: &BTreeMap<String, Build>, given: bool, v: &mut Vec<Violation>) {
    let norm = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
    // The state file itself may not exist yet: compare through its folder.
    let state = match (state.parent(), state.file_name()) {
        (Some(dir), Some(name)) => norm(dir).join(name),
        _ => norm(state),
    };
    let pointer = if given { "/options/state_file" } else { "/options" };
    let say = |what: String| {
        format!("the state file {} {what}; give `state_file` a path of its own, outside every build context", state.display())
    };
    if state == norm(config) {
        v.push(Violation { pointer: pointer.into(), message: say("is the config file itself".into()) });
    }
    for b in builds.values() {
        if state == norm(&b.dockerfile) {
            v.push(Violation { pointer: pointer.into(), message: say(format!("is build {}'s Dockerfile", b.name)) });
        } else if given && state.starts_with(norm(&b.context)) {
            v.push(Violation {
                pointer: pointer.into(),
                message: say(format!("is inside build {}'s context {}", b.name, b.context.display())),
            });
        }
    }
}

fn check_duplicate_tags(builds: &BTreeMap<String, Build>, v: &mut Vec<Violation>) {
    let mut seen: HashMap<&ImageRef, &str> = HashMap::new();
    for (name, b) in builds {
        for tag in &b.tags {
            if let Some(other) = seen.insert(tag, name) {
                violation(
                    v,
                    format!("/builds/{}", escape_pointer(name)),
                    format!("tag {tag} is also produced by build \"{other}\"; each tag must come from one build"),
                );
            }
        }
    }
}
