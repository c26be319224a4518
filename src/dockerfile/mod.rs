//! Base-image resolution: which images a Dockerfile's build starts from and uses.
//!
//! Pure: takes the Dockerfile text and the build's inputs, returns a
//! [`Resolution`] or a [`DockerfileError`] that names the line. Parsing is done
//! by `parse-dockerfile` (heredocs, `# escape=`, line continuations, CRLF,
//! instructions in any case); variable expansion by [`expand`]. Rules, from the
//! Dockerfile reference ("FROM", "Understand how ARG and FROM interact",
//! "Multi-stage builds", "COPY --from", "RUN --mount"):
//! - the base is the image of the final stage (or of `target`), following stage
//!   names back case-insensitively until an external image or `scratch`;
//! - only global ARGs (before the first FROM) and the automatic platform ARGs
//!   are in scope for FROM; global defaults are overridden by build args;
//! - `--platform=` does not change which image is the base;
//! - `COPY --from=` and `RUN --mount=…,from=` name a stage (by name, or by
//!   index of an earlier stage) or else an image;
//! - only the stages the target depends on are built, so only their images are used.
//!
//! freshen's own rule: a `# freshen:ignore` comment on the line before a FROM
//! leaves that FROM's image unwatched (as Renovate's opt-out comments do).

mod args;
pub mod expand;

use std::collections::{BTreeSet, HashMap};

use parse_dockerfile::{Flag, Instruction};
use serde::Serialize;

use crate::reference::ImageRef;
pub use args::host_platform;
pub use expand::{expand_word, ExpandError, Vars};

/// How an image is used by the Dockerfile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UseKind {
    /// A stage's `FROM`.
    From,
    /// `COPY --from=<image>`.
    CopyFrom,
    /// `RUN --mount=…,from=<image>`.
    MountFrom,
}

/// One external image the build uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsedImage {
    /// The image, normalised.
    pub image: ImageRef,
    /// 1-based line of the instruction.
    pub line: usize,
    /// How it is used.
    pub kind: UseKind,
    /// A `# freshen:ignore` comment opts it out of watching.
    pub ignored: bool,
}

/// Which images a build watches (`watch_stages`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WatchStages {
    /// Only the base image of the final (or target) stage.
    #[default]
    Final,
    /// Every external image the built stages use: FROMs, `COPY --from`, `RUN --mount from`.
    All,
}

/// What a Dockerfile resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The final (or target) stage's FROM image text after ARG expansion.
    pub from: String,
    /// The external base image, normalised; `None` when the chain ends at `scratch`.
    pub base: Option<ImageRef>,
    /// Line (1-based) of the FROM that names the base.
    pub base_line: usize,
    /// The base's FROM carries `# freshen:ignore`.
    pub base_ignored: bool,
    /// Number of stages in the file.
    pub stage_count: usize,
    /// Every external image used by the stages the target depends on, in file order.
    pub images: Vec<UsedImage>,
}

impl Resolution {
    /// True when the base is digest-pinned and therefore never polled.
    pub fn pinned(&self) -> bool {
        self.base.as_ref().is_some_and(ImageRef::is_pinned)
    }

    /// The images `mode` selects (the base under [`WatchStages::Final`], every
    /// used image under [`WatchStages::All`]) that `keep(image, ignored)` keeps; sorted, unique.
    fn collect(&self, mode: WatchStages, keep: impl Fn(&ImageRef, bool) -> bool) -> Vec<ImageRef> {
        let selected: Vec<(&ImageRef, bool)> = match mode {
            WatchStages::Final => self.base.iter().map(|b| (b, self.base_ignored)).collect(),
            WatchStages::All => self.images.iter().map(|u| (&u.image, u.ignored)).collect(),
        };
        let mut out: Vec<ImageRef> = selected.into_iter().filter(|(i, ignored)| keep(i, *ignored)).map(|(i, _)| i.clone()).collect();
        out.sort();
        out.dedup();
        out
    }

    /// The images watched under `mode`: selected, not marked `# freshen:ignore`,
    /// and not digest-pinned (a pinned image cannot change, so it is never
    /// checked); sorted, unique.
    pub fn watched(&self, mode: WatchStages) -> Vec<ImageRef> {
        self.collect(mode, |image, ignored| !ignored && !image.is_pinned())
    }

    /// The digest-pinned images `mode` selects (never checked), without ignored ones; sorted, unique.
    pub fn pinned_images(&self, mode: WatchStages) -> Vec<ImageRef> {
        self.collect(mode, |image, ignored| !ignored && image.is_pinned())
    }

    /// The images `mode` selects that a `# freshen:ignore` comment leaves unwatched; sorted, unique.
    pub fn ignored_images(&self, mode: WatchStages) -> Vec<ImageRef> {
        self.collect(mode, |_, ignored| ignored)
    }
}

/// Why a Dockerfile could not be resolved. Always a per-build error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerfileError {
    /// The file does not parse (BuildKit would reject it too).
    #[error("line {line}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// What the parser said.
        message: String,
    },
    /// The file has no FROM instruction.
    #[error("no FROM instruction: a Dockerfile must start its first stage with FROM (Dockerfile reference, \"FROM\")")]
    NoFrom,
    /// A variable could not be expanded.
    #[error("line {line}: {source}")]
    Expand {
        /// 1-based line.
        line: usize,
        /// The expansion error.
        source: ExpandError,
    },
    /// An image name expands to something that is not an image reference.
    #[error("line {line}: {text:?} is not a valid image reference or stage name: {reason}")]
    Reference {
        /// 1-based line.
        line: usize,
        /// The expanded text.
        text: String,
        /// Why it is invalid.
        reason: String,
    },
    /// `target` names no stage.
    #[error("target stage {0:?} is not defined in the Dockerfile; use one of the names given with FROM … AS <name>")]
    UnknownTarget(String),
}

/// Inputs besides the text that change the answer.
#[derive(Debug, Clone, Default)]
pub struct ResolveInput<'a> {
    /// Build args (`--build-arg`), overriding global ARG defaults.
    pub build_args: Option<&'a HashMap<String, String>>,
    /// `--target` stage name.
    pub target: Option<&'a str>,
    /// The build's target platform (`linux/amd64`); `None` means the engine's.
    pub platform: Option<&'a str>,
    /// The engine's platform, for `BUILD*` ARGs and a missing `platform`; `None` means this host's.
    pub engine_platform: Option<&'a str>,
}

/// What a stage refers to.
#[derive(Debug, Clone)]
enum Source {
    Stage(usize),
    Image(UsedImage),
    Scratch,
}

struct Stage {
    name: Option<String>,
    text: String,
    line: usize,
    from: Source,
    /// Other stages and images used by COPY --from / RUN --mount from.
    uses: Vec<Source>,
}

/// Resolves the base image and the used images of `text` (a whole Dockerfile).
///
/// # Errors
/// See [`DockerfileError`]: syntax errors, no FROM, a failed `${V:?}`, an
/// invalid reference (with its line), or an unknown `target`.
pub fn resolve(text: &str, input: &ResolveInput<'_>) -> Result<Resolution, DockerfileError> {
    // parse-dockerfile drops one leading BOM, as BuildKit does, and its spans are byte
    // offsets into the text after it; a second BOM is text (BuildKit: an unknown instruction).
    let parsed = parse_dockerfile::parse(text).map_err(|e| {
        let message = e.to_string();
        if message.contains("expected at least one FROM") {
            DockerfileError::NoFrom
        } else {
            DockerfileError::Syntax { line: e.line(), message }
        }
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.lines().collect();
    // Counted in bytes: a span need not fall on a char boundary of `text` to be counted safely.
    let line_of = |offset: usize| text.as_bytes()[..offset.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1;
    let escape = parsed.parser_directives.escape.as_ref().map_or('\\', |d| d.value.value);
    let host = host_platform();
    let build_platform = input.engine_platform.unwrap_or(&host);
    let mut vars = args::platform_args(input.platform.unwrap_or(build_platform), build_platform);
    for arg in parsed.global_args() {
        let line = line_of(arg.arguments.span.start);
        for (name, default) in args::split_arg(&arg.arguments.value) {
            let value = match (input.build_args.and_then(|b| b.get(&name)), default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(d)) => Some(expand_word(&d, &vars, escape).map_err(|source| DockerfileError::Expand { line, source })?),
                (None, None) => None,
            };
            match value {
                Some(v) => vars.insert(name, v),
                None => vars.remove(&name),
            };
        }
    }
    let expand = |word: &str, line: usize| expand_word(word, &vars, escape).map_err(|source| DockerfileError::Expand { line, source });

    let mut stages: Vec<Stage> = Vec::new();
    for ins in &parsed.instructions {
        match ins {
            Instruction::From(from) => {
                let line = line_of(from.from.span.start);
                let expanded = expand(&from.image.value, line)?;
                let ignored = line >= 2 && is_ignore_comment(lines.get(line - 2).copied().unwrap_or_default());
                let source = match stage_by_name(&stages, &expanded) {
                    Some(i) => Source::Stage(i),
                    None if expanded.eq_ignore_ascii_case("scratch") => Source::Scratch,
                    None => Source::Image(used(&expanded, line, UseKind::From, ignored)?),
                };
                let name = from.as_.as_ref().map(|(_, n)| n.value.to_string());
                stages.push(Stage { name, text: expanded, line, from: source, uses: Vec::new() });
            }
            Instruction::Copy(copy) => {
                let line = line_of(copy.copy.span.start);
                if let Some(v) = flag(&copy.options, "from") {
                    let s = reference_source(&stages, &expand(v, line)?, line, UseKind::CopyFrom)?;
                    stages.last_mut().expect("instructions follow a FROM").uses.push(s);
                }
            }
            Instruction::Run(run) => {
                let line = line_of(run.run.span.start);
                for mount in run.options.iter().filter(|f| f.name.value == "mount").filter_map(|f| f.value.as_ref()) {
                    if let Some(v) = mount.value.split(',').find_map(|kv| kv.trim().strip_prefix("from=")) {
                        let s = reference_source(&stages, &expand(v, line)?, line, UseKind::MountFrom)?;
                        stages.last_mut().expect("instructions follow a FROM").uses.push(s);
                    }
                }
            }
            _ => {}
        }
    }
    if stages.is_empty() {
        return Err(DockerfileError::NoFrom);
    }
    let target = match input.target {
        Some(t) => stage_by_name(&stages, t).ok_or_else(|| DockerfileError::UnknownTarget(t.to_string()))?,
        None => stages.len() - 1,
    };
    let from = stages[target].text.clone();
    let mut root = target;
    while let Source::Stage(p) = stages[root].from {
        root = p;
    }
    let (base, base_ignored) = match &stages[root].from {
        Source::Image(u) => (Some(u.image.clone()), u.ignored),
        _ => (None, false),
    };
    Ok(Resolution {
        from,
        base,
        base_line: stages[root].line,
        base_ignored,
        stage_count: stages.len(),
        images: used_images(&stages, target),
    })
}

/// Every external image used by `target` and the stages it depends on, in file order.
fn used_images(stages: &[Stage], target: usize) -> Vec<UsedImage> {
    let mut needed = BTreeSet::new();
    let mut stack = vec![target];
    while let Some(i) = stack.pop() {
        if needed.insert(i) {
            for s in std::iter::once(&stages[i].from).chain(&stages[i].uses) {
                if let Source::Stage(j) = s {
                    stack.push(*j);
                }
            }
        }
    }
    let mut out = Vec::new();
    for i in needed {
        for s in std::iter::once(&stages[i].from).chain(&stages[i].uses) {
            if let Source::Image(u) = s {
                out.push(u.clone());
            }
        }
    }
    out.sort_by_key(|u| u.line);
    out
}

fn stage_by_name(stages: &[Stage], name: &str) -> Option<usize> {
    stages.iter().position(|s| s.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name)))
}

/// `--from=` value: a stage name, the index of an earlier stage, or an image.
fn reference_source(stages: &[Stage], value: &str, line: usize, kind: UseKind) -> Result<Source, DockerfileError> {
    if let Some(i) = stage_by_name(stages, value) {
        return Ok(Source::Stage(i));
    }
    // BuildKit reads an index with Go's strconv.Atoi: a 64-bit int, so a larger number is an image name.
    if let Ok(i) = value.parse::<i64>() {
        // The current stage is the last one pushed; only earlier stages may be named by index.
        return match usize::try_from(i) {
            Ok(i) if i < stages.len().saturating_sub(1) => Ok(Source::Stage(i)),
            _ => Err(DockerfileError::Reference {
                line,
                text: value.into(),
                reason: format!("stage index {i} does not name an earlier stage"),
            }),
        };
    }
    Ok(Source::Image(used(value, line, kind, false)?))
}

fn used(text: &str, line: usize, kind: UseKind, ignored: bool) -> Result<UsedImage, DockerfileError> {
    let image = ImageRef::parse(text).map_err(|e| DockerfileError::Reference { line, text: text.into(), reason: e.reason })?;
    Ok(UsedImage { image, line, kind, ignored })
}

fn flag<'a>(flags: &'a [Flag<'_>], name: &str) -> Option<&'a str> {
    flags.iter().find(|f| f.name.value == name).and_then(|f| f.value.as_ref()).map(|v| v.value.as_ref())
}

/// `# freshen:ignore` (any spacing, any case), alone on its line.
fn is_ignore_comment(line: &str) -> bool {
    line.trim().strip_prefix('#').is_some_and(|rest| rest.trim().eq_ignore_ascii_case("freshen:ignore"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(text: &str) -> Option<String> {
        resolve(text, &ResolveInput::default()).unwrap().base.map(|b| b.to_string())
    }

    #[test]
    fn final_stage_and_aliases() {
        assert_eq!(base("FROM alpine:3 AS base\nFROM base AS deps\nRUN x\nFROM DEPS\n").as_deref(), Some("docker.io/library/alpine:3"));
        assert_eq!(base("FROM golang AS b\nFROM scratch\nCOPY --from=b /x /x\n"), None);
    }

    #[test]
    fn one_bom_is_dropped_and_a_second_is_text() {
        assert_eq!(base("\u{feff}FROM alpine:3\n").as_deref(), Some("docker.io/library/alpine:3"));
        assert!(resolve("\u{feff}\u{feff}FROM alpine:3\nFROM golang AS \u{8f}x\n", &ResolveInput::default()).is_err());
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(resolve("", &ResolveInput::default()), Err(DockerfileError::NoFrom));
        let e = resolve("# c\nFROM Bad:1\n", &ResolveInput::default()).unwrap_err();
        assert!(matches!(e, DockerfileError::Reference { line: 2, .. }), "{e:?}");
    }
}
