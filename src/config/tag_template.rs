//! A build's tags, with tag templates: `registry/app:{git.short_commit}` names
//! the image after the commit a git source built it from.
//!
//! The placeholders and their rules follow docker/metadata-action (`type=sha`,
//! `type=ref,event=branch`, `type=semver`): a branch name is sanitised into a
//! tag, a pre-release gives only `{semver.version}`, a `0.x` version gives no
//! `{semver.major}` alone, and a tag that cannot be formed is left out with a
//! warning, never pushed as a broken reference. Pure: no I/O.

use std::fmt;

use serde_json::Value;

use super::{violation, GitSource, Violation};
use crate::reference::ImageRef;

/// Longest tag Docker takes (distribution/reference: `[\w][\w.-]{0,127}`).
const MAX_TAG_CHARS: usize = 128;

/// One placeholder of a tag template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    /// `{git.commit}`: the commit's 40 hex digits.
    Commit,
    /// `{git.short_commit}`: its first 7.
    ShortCommit,
    /// `{git.branch}`: the source's branch, sanitised.
    Branch,
    /// `{semver.version}`: the commit's semver tag without a `v` and build metadata.
    Version,
    /// `{semver.major}`.
    Major,
    /// `{semver.minor}`.
    Minor,
    /// `{semver.patch}`.
    Patch,
}

const VARS: [(&str, Var); 7] = [
    ("git.commit", Var::Commit),
    ("git.short_commit", Var::ShortCommit),
    ("git.branch", Var::Branch),
    ("semver.version", Var::Version),
    ("semver.major", Var::Major),
    ("semver.minor", Var::Minor),
    ("semver.patch", Var::Patch),
];

/// One piece of a template's tag: text kept as written, or a placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// A tag whose text comes from the commit a build is made from, such as
/// `registry.example.com/app:{git.short_commit}`: rendered for each build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagTemplate {
    /// The template as the config wrote it: what warnings name.
    pub text: String,
    /// `registry/repository`, normalised: placeholders go only in the tag, so a build's repository never moves.
    repository: String,
    /// The tag, piece by piece.
    parts: Vec<Part>,
}

/// What a template is rendered from: the commit a check saw, and the tags on it.
#[derive(Debug, Clone, Copy)]
pub struct GitFacts<'a> {
    /// The commit (40 hex digits).
    pub commit: &'a str,
    /// The source's full ref name (`refs/heads/main`): `{git.branch}` is its branch.
    pub git_ref: &'a str,
    /// The remote's tags on the commit (`v1.2.3`), from the check's listing.
    pub tags: &'a [String],
}

impl fmt::Display for TagTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl TagTemplate {
    /// Parses `text` as a template when it has a placeholder; `Ok(None)` when it has none.
    ///
    /// # Errors
    /// A message when a placeholder is outside the tag, unknown, or a brace is unmatched,
    /// or the part before the tag is not a repository.
    pub fn parse(text: &str) -> Result<Option<TagTemplate>, String> {
        if !text.contains(['{', '}']) {
            return Ok(None);
        }
        let known = VARS.iter().map(|(n, _)| format!("{{{n}}}")).collect::<Vec<_>>().join(", ");
        let slash = text.rfind('/').map_or(0, |i| i + 1);
        let Some(colon) = text[slash..].find(':').map(|i| slash + i) else {
            return Err(format!(
                "{text}: a placeholder goes in the tag, after the last ':', e.g. registry.example.com/app:{{git.short_commit}}"
            ));
        };
        let (name, tag) = (&text[..colon], &text[colon + 1..]);
        if name.contains(['{', '}']) {
            return Err(format!("{text}: a placeholder goes in the tag only; the repository {name} must stay the same for every commit"));
        }
        let repository = ImageRef::parse(name).map_err(|e| e.to_string())?.name();
        let mut parts = Vec::new();
        let mut rest = tag;
        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err(format!("{text}: '}}' without '{{'"));
            }
            let close = rest[open..].find('}').map(|i| open + i).ok_or_else(|| format!("{text}: '{{' without '}}'"))?;
            let name = &rest[open + 1..close];
            let var = VARS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| *v)
                .ok_or_else(|| format!("{text}: unknown placeholder {{{name}}}; the known ones are {known}"))?;
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            parts.push(Part::Var(var));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Some(TagTemplate { text: text.to_string(), repository, parts }))
    }

    fn vars(&self) -> impl Iterator<Item = Var> + '_ {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(*v),
            Part::Text(_) => None,
        })
    }

    /// True when the tag changes with the commit: any placeholder but `{git.branch}`.
    pub fn needs_commit(&self) -> bool {
        self.vars().any(|v| v != Var::Branch)
    }

    /// True when the tag comes from the commit's semver tag (`{semver.…}`): a semver tag
    /// pushed onto a commit already built then gives the image its tags.
    pub fn uses_semver(&self) -> bool {
        self.vars().any(|v| matches!(v, Var::Version | Var::Major | Var::Minor | Var::Patch))
    }

    /// The reference for `facts`.
    ///
    /// # Errors
    /// Why the tag cannot be formed: the ref is not a branch (`{git.branch}`), the
    /// commit carries no semver tag, a pre-release or a `0.x` version for a
    /// placeholder metadata-action leaves out for them, or the rendered text is not a tag.
    pub fn render(&self, facts: &GitFacts<'_>) -> Result<ImageRef, String> {
        let version = || semver_of(facts.tags).ok_or_else(|| "the commit carries no semver tag (such as v1.2.3)".to_string());
        let vars: Vec<Var> = self.vars().collect();
        let mut tag = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => tag.push_str(t),
                Part::Var(Var::Commit) => tag.push_str(facts.commit),
                Part::Var(Var::ShortCommit) => tag.push_str(&facts.commit[..facts.commit.len().min(7)]),
                Part::Var(Var::Branch) => tag.push_str(
                    &branch_tag(facts.git_ref).ok_or_else(|| format!("{{git.branch}} needs a branch, and the ref is {}", facts.git_ref))?,
                ),
                Part::Var(Var::Version) => tag.push_str(&version()?.to_string()),
                Part::Var(v) => {
                    let version = version()?;
                    if !version.pre.is_empty() {
                        return Err(format!("{version} is a pre-release, which gives only {{semver.version}}"));
                    }
                    if *v == Var::Major && version.major == 0 && !vars.contains(&Var::Minor) {
                        return Err(format!("{version} has major version zero, which gives no {{semver.major}} alone"));
                    }
                    let n = match v {
                        Var::Major => version.major,
                        Var::Minor => version.minor,
                        _ => version.patch,
                    };
                    tag.push_str(&n.to_string());
                }
            }
        }
        if tag.len() > MAX_TAG_CHARS {
            return Err(format!("the tag {tag} is longer than {MAX_TAG_CHARS} characters"));
        }
        ImageRef::parse(&format!("{}:{tag}", self.repository)).map_err(|e| e.reason)
    }
}

/// `{git.branch}` for the full ref `git_ref`: the branch name with every run of
/// characters a tag cannot hold (`/` among them) made `-`, lowercased, without
/// leading `.` or `-`, and cut to 128 characters (docker/metadata-action's
/// sanitising); `None` when the ref is not a branch (`refs/heads/…`) or nothing is left.
pub fn branch_tag(git_ref: &str) -> Option<String> {
    let branch = git_ref.strip_prefix("refs/heads/")?;
    let mut out = String::new();
    for c in branch.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out: String = out.trim_start_matches(['.', '-']).chars().take(MAX_TAG_CHARS).collect();
    (!out.is_empty()).then_some(out)
}

/// The highest semver version among `tags` (`v1.2.3` or `1.2.3`), build metadata dropped
/// (as node-semver's `version`, which metadata-action shows).
pub fn semver_of(tags: &[String]) -> Option<semver::Version> {
    tags.iter()
        .filter_map(|t| semver::Version::parse(t.strip_prefix('v').unwrap_or(t)).ok())
        .map(|mut v| {
            v.build = semver::BuildMetadata::EMPTY;
            v
        })
        .max()
}

/// A build's tags from `raw["tags"]` (or `raw["tag"]`) at JSON pointer `at`: the
/// tags that stay put across commits (plain ones, and templates of `{git.branch}`
/// alone, rendered now), and the templates rendered at each build.
pub(super) fn resolve(raw: &Value, at: &str, source: Option<&GitSource>, v: &mut Vec<Violation>) -> (Vec<ImageRef>, Vec<TagTemplate>) {
    let (items, at) = match raw.get("tag") {
        Some(t) => (vec![t.clone()], format!("{at}/tag")),
        None => (raw["tags"].as_array().cloned().unwrap_or_default(), format!("{at}/tags")),
    };
    let pointer = |i: usize| if raw.get("tag").is_some() { at.clone() } else { format!("{at}/{i}") };
    let (mut tags, mut templates) = (Vec::new(), Vec::new());
    for (i, item) in items.iter().enumerate() {
        let text = item.as_str().unwrap_or_default();
        let template = match TagTemplate::parse(text) {
            Ok(t) => t,
            Err(e) => {
                violation(v, pointer(i), e);
                continue;
            }
        };
        let Some(template) = template else {
            match ImageRef::parse(text) {
                Ok(r) if r.is_pinned() => violation(v, pointer(i), format!("{r} is a digest reference, not a tag: a build's tags name where its image goes, e.g. registry.example.com/web:latest")),
                Ok(r) => tags.push(r),
                Err(e) => violation(v, pointer(i), e.to_string()),
            }
            continue;
        };
        let Some(source) = source else {
            violation(v, pointer(i), format!("{text}: tag templates need a git source; give the build a \"source\", or a plain tag"));
            continue;
        };
        if template.needs_commit() {
            templates.push(template);
            continue;
        }
        match template.render(&GitFacts { commit: "", git_ref: &source.git_ref, tags: &[] }) {
            Ok(r) => tags.push(r),
            Err(e) => violation(v, pointer(i), format!("{text}: {e}")),
        }
    }
    if tags.is_empty() && !templates.is_empty() {
        violation(
            v,
            at,
            "give at least one tag that stays the same across commits, such as registry.example.com/app:{git.branch}-latest: \
             freshen inspects it for the current image, and other builds name it in FROM"
                .to_string(),
        );
    }
    (tags, templates)
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    fn render(template: &str, git_ref: &str, tags: &[&str]) -> Result<String, String> {
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        let t = TagTemplate::parse(template).unwrap().unwrap();
        t.render(&GitFacts { commit: COMMIT, git_ref, tags: &tags }).map(|r| r.to_string())
    }

    #[test]
    fn commit_and_branch() {
        assert_eq!(render("r.example/app:{git.short_commit}", "refs/heads/main", &[]).unwrap(), "r.example/app:0123456");
        assert_eq!(render("r.example/app:sha-{git.commit}", "refs/heads/main", &[]).unwrap(), format!("r.example/app:sha-{COMMIT}"));
        assert_eq!(
            render("r.example/app:{git.branch}-latest", "refs/heads/Feature/Login", &[]).unwrap(),
            "r.example/app:feature-login-latest"
        );
        assert!(render("r.example/app:{git.branch}", "refs/tags/v1", &[]).unwrap_err().contains("needs a branch"));
    }

    #[test]
    fn branch_sanitising() {
        assert_eq!(branch_tag("refs/heads/a//b@c").as_deref(), Some("a-b-c"));
        assert_eq!(branch_tag("refs/heads/-x").as_deref(), Some("x"));
        assert_eq!(branch_tag(&format!("refs/heads/{}", "a".repeat(200))).map(|b| b.len()), Some(128));
        assert_eq!(branch_tag("refs/heads/@@"), None);
    }

    #[test]
    fn semver_rules() {
        let tags = ["v1.2.3", "not-a-version"];
        assert_eq!(render("r.example/app:{semver.version}", "refs/heads/main", &tags).unwrap(), "r.example/app:1.2.3");
        assert_eq!(render("r.example/app:{semver.major}.{semver.minor}", "refs/heads/main", &tags).unwrap(), "r.example/app:1.2");
        assert_eq!(render("r.example/app:{semver.major}", "refs/heads/main", &tags).unwrap(), "r.example/app:1");
        // The highest of several; build metadata dropped.
        assert_eq!(render("r.example/app:{semver.version}", "refs/heads/main", &["v1.2.3", "1.10.0+b7"]).unwrap(), "r.example/app:1.10.0");
        // A pre-release gives only the version.
        let pre = ["v2.0.0-rc.1"];
        assert_eq!(render("r.example/app:{semver.version}", "refs/heads/main", &pre).unwrap(), "r.example/app:2.0.0-rc.1");
        assert!(render("r.example/app:{semver.major}", "refs/heads/main", &pre).unwrap_err().contains("pre-release"));
        // Major version zero: no {semver.major} alone, {semver.major}.{semver.minor} still.
        assert!(render("r.example/app:{semver.major}", "refs/heads/main", &["v0.3.1"]).unwrap_err().contains("zero"));
        assert_eq!(render("r.example/app:{semver.major}.{semver.minor}", "refs/heads/main", &["v0.3.1"]).unwrap(), "r.example/app:0.3");
        assert!(render("r.example/app:{semver.version}", "refs/heads/main", &[]).unwrap_err().contains("no semver tag"));
    }

    #[test]
    fn bad_templates() {
        assert!(TagTemplate::parse("r/{git.branch}:x").unwrap_err().contains("repository"));
        assert!(TagTemplate::parse("r.example/app:{git.sha}").unwrap_err().contains("unknown placeholder {git.sha}"));
        assert!(TagTemplate::parse("r.example/app:{git.commit").unwrap_err().contains("without"));
        assert!(TagTemplate::parse("r/app").unwrap().is_none());
        // The rendered text must be a tag.
        assert!(render("r.example/app:{git.short_commit}+x", "refs/heads/main", &[]).is_err());
    }
}
