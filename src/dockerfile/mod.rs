//! Base-image resolution: which image a Dockerfile's build starts from.
//!
//! Pure: takes the Dockerfile text and the build's inputs, returns a
//! [`Resolution`] or a [`DockerfileError`] that names the line. Parsing is done
//! by `parse-dockerfile` (heredocs, `# escape=`, line continuations, IPv6
//! registries); variable expansion by [`expand`]. Rules, from the Dockerfile
//! reference ("FROM", "Understand how ARG and FROM interact", "Multi-stage builds"):
//! - the base is the image of the final stage (or of `target`), following stage
//!   names back case-insensitively until an external image or `scratch`;
//! - only global ARGs (before the first FROM) are in scope for FROM; their
//!   defaults are overridden by build args;
//! - `--platform=` does not change which image is the base.

pub mod expand;

use std::collections::HashMap;

use parse_dockerfile::Instruction;

use crate::reference::ImageRef;
pub use expand::{expand_word, ExpandError, Vars};

/// What a Dockerfile resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The final (or target) stage's FROM image text after ARG expansion.
    pub from: String,
    /// The external base image, normalised; `None` when the chain ends at `scratch`.
    pub base: Option<ImageRef>,
    /// Line (1-based) of the FROM that names the base, for messages.
    pub base_line: usize,
    /// Number of stages in the file.
    pub stage_count: usize,
}

impl Resolution {
    /// True when the base is digest-pinned and therefore never polled.
    pub fn pinned(&self) -> bool {
        self.base.as_ref().is_some_and(ImageRef::is_pinned)
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
    /// A FROM's variables could not be expanded.
    #[error("line {line}: {source}")]
    Expand {
        /// 1-based line of the FROM.
        line: usize,
        /// The expansion error.
        source: ExpandError,
    },
    /// A FROM expands to something that is not an image reference.
    #[error("line {line}: FROM {text:?} is not a valid image reference or stage name: {reason}")]
    Reference {
        /// 1-based line of the FROM.
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
    /// Target platform (`linux/amd64`) for the automatic platform ARGs.
    pub platform: Option<&'a str>,
}

struct StageBase {
    name: Option<String>,
    text: String,
    line: usize,
    /// Index of an earlier stage, when FROM names one.
    parent_stage: Option<usize>,
}

/// Resolves the base image of `text` (a whole Dockerfile).
///
/// # Errors
/// See [`DockerfileError`]: syntax errors, no FROM, a failed `${V:?}`,
/// an invalid reference, or an unknown `target`.
pub fn resolve(text: &str, input: &ResolveInput<'_>) -> Result<Resolution, DockerfileError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let parsed = parse_dockerfile::parse(text).map_err(|e| {
        let message = e.to_string();
        if message.contains("expected at least one FROM") {
            DockerfileError::NoFrom
        } else {
            DockerfileError::Syntax {
                line: e.line(),
                message,
            }
        }
    })?;
    let escape = parsed
        .parser_directives
        .escape
        .as_ref()
        .map_or('\\', |d| d.value.value);

    let mut vars = platform_args(input.platform);
    for arg in parsed.global_args() {
        for (name, default) in split_arg(&arg.arguments.value) {
            let line = line_of(arg.arguments.span.start);
            let value = match input.build_args.and_then(|b| b.get(&name)) {
                Some(v) => Some(v.clone()),
                None => match default {
                    Some(d) => Some(
                        expand_word(&d, &vars, escape)
                            .map_err(|source| DockerfileError::Expand { line, source })?,
                    ),
                    None => None,
                },
            };
            match value {
                Some(v) => vars.insert(name, v),
                None => vars.remove(&name),
            };
        }
    }

    let mut stages: Vec<StageBase> = Vec::new();
    for ins in &parsed.instructions {
        let Instruction::From(from) = ins else {
            continue;
        };
        let line = line_of(from.image.span.start);
        let expanded = expand_word(&from.image.value, &vars, escape)
            .map_err(|source| DockerfileError::Expand { line, source })?;
        let parent_stage = stages.iter().position(|s| {
            s.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(&expanded))
        });
        let name = from.as_.as_ref().map(|(_, n)| n.value.to_string());
        stages.push(StageBase {
            name,
            text: expanded,
            line,
            parent_stage,
        });
    }
    if stages.is_empty() {
        return Err(DockerfileError::NoFrom);
    }
    let mut index = match input.target {
        Some(t) => stages
            .iter()
            .position(|s| s.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(t)))
            .ok_or_else(|| DockerfileError::UnknownTarget(t.to_string()))?,
        None => stages.len() - 1,
    };
    let from = stages[index].text.clone();
    while let Some(p) = stages[index].parent_stage {
        index = p;
    }
    let root = &stages[index];
    let base = if root.text.eq_ignore_ascii_case("scratch") {
        None
    } else {
        Some(
            ImageRef::parse(&root.text).map_err(|e| DockerfileError::Reference {
                line: root.line,
                text: root.text.clone(),
                reason: e.reason,
            })?,
        )
    };
    Ok(Resolution {
        from,
        base,
        base_line: root.line,
        stage_count: stages.len(),
    })
}

/// The automatic platform ARGs that BuildKit defines in the global scope
/// (Dockerfile reference, "Automatic platform ARGs in the global scope").
fn platform_args(platform: Option<&str>) -> Vars {
    let platform = platform.unwrap_or("linux/amd64");
    let mut parts = platform.split('/');
    let os = parts.next().unwrap_or("linux").to_string();
    let arch = parts.next().unwrap_or("amd64").to_string();
    let variant = parts.next().unwrap_or("").to_string();
    let mut vars = Vars::new();
    for prefix in ["TARGET", "BUILD"] {
        vars.insert(format!("{prefix}PLATFORM"), platform.to_string());
        vars.insert(format!("{prefix}OS"), os.clone());
        vars.insert(format!("{prefix}ARCH"), arch.clone());
        vars.insert(format!("{prefix}VARIANT"), variant.clone());
    }
    vars
}

/// Splits an ARG instruction's arguments (`A=1 B "C=x y"`) into names and raw defaults.
fn split_arg(args: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut push = |word: &mut String| {
        if !word.is_empty() {
            let w = std::mem::take(word);
            match w.split_once('=') {
                Some((k, v)) => out.push((k.to_string(), Some(v.to_string()))),
                None => out.push((w, None)),
            }
        }
    };
    for c in args.chars() {
        match (quote, c) {
            (None, '"' | '\'') => {
                quote = Some(c);
                current.push(c);
            }
            (Some(q), c) if c == q => {
                quote = None;
                current.push(c);
            }
            (None, c) if c.is_whitespace() => push(&mut current),
            (_, c) => current.push(c),
        }
    }
    push(&mut current);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(text: &str) -> Option<String> {
        resolve(text, &ResolveInput::default())
            .unwrap()
            .base
            .map(|b| b.to_string())
    }

    #[test]
    fn final_stage_and_aliases() {
        assert_eq!(
            base("FROM alpine:3 AS base\nFROM base AS deps\nRUN x\nFROM DEPS\n").as_deref(),
            Some("docker.io/library/alpine:3")
        );
        assert_eq!(
            base("FROM golang AS b\nFROM scratch\nCOPY --from=b /x /x\n"),
            None
        );
    }

    #[test]
    fn global_args_and_build_args() {
        let text = "ARG REG=localhost:5000\nARG T=1\nFROM $REG/lib:${T:-0}\n";
        assert_eq!(base(text).as_deref(), Some("localhost:5000/lib:1"));
        let args: HashMap<String, String> = [("T".to_string(), "2".to_string())].into();
        let r = resolve(
            text,
            &ResolveInput {
                build_args: Some(&args),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(r.from, "localhost:5000/lib:2");
    }

    #[test]
    fn platform_flag_ignored_and_pinned() {
        let d = "a".repeat(64);
        let r = resolve(
            &format!("FROM --platform=$BUILDPLATFORM busybox:1@sha256:{d}\n"),
            &ResolveInput::default(),
        )
        .unwrap();
        assert!(r.pinned());
        assert_eq!(r.base.unwrap().tag(), Some("1"));
    }

    #[test]
    fn errors_name_the_line() {
        let e = resolve("RUN x\n", &ResolveInput::default()).unwrap_err();
        assert!(
            matches!(&e, DockerfileError::Syntax { line: 1, message } if message.contains("FROM")),
            "{e:?}"
        );
        assert_eq!(
            resolve("", &ResolveInput::default()),
            Err(DockerfileError::NoFrom)
        );
        let e = resolve("# c\nFROM Bad:1\n", &ResolveInput::default()).unwrap_err();
        assert!(
            matches!(e, DockerfileError::Reference { line: 2, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn target_selects_stage() {
        let text = "FROM a:1 AS one\nFROM b:2 AS two\n";
        let r = resolve(
            text,
            &ResolveInput {
                target: Some("one"),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(r.base.unwrap().to_string(), "docker.io/library/a:1");
        assert!(resolve(
            text,
            &ResolveInput {
                target: Some("nope"),
                ..Default::default()
            }
        )
        .is_err());
    }
}
