//! `.dockerignore` rules (Docker docs, "Build context" → ".dockerignore files";
//! moby/patternmatcher): one pattern a line, `#` comments, `!` re-includes, the
//! last matching pattern wins, a pattern that matches a folder excludes all it
//! holds, a leading `/` is dropped, `*` and `?` never cross `/`, and `**`
//! matches any number of folders. Matching uses `globset`; this module only adds
//! the Docker-specific layer (order, exceptions, parent folders).

use std::path::{Component, Path};

use globset::{GlobBuilder, GlobMatcher};

/// A compiled `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    patterns: Vec<(GlobMatcher, bool)>,
    has_exceptions: bool,
}

impl DockerIgnore {
    /// Compiles `.dockerignore` text. Invalid patterns are reported with their line.
    ///
    /// # Errors
    /// A message naming the 1-based line and the pattern that does not compile.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut patterns = Vec::new();
        let mut has_exceptions = false;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exception, pat) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let pat = clean(pat);
            if pat.is_empty() || pat == "." {
                continue;
            }
            has_exceptions |= exception;
            let glob = GlobBuilder::new(&pat)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| format!(".dockerignore line {}: pattern {line:?}: {e}", i + 1))?;
            patterns.push((glob.compile_matcher(), exception));
        }
        Ok(DockerIgnore { patterns, has_exceptions })
    }

    /// True when `rel` (a `/`-separated path inside the context) is excluded:
    /// the last pattern matching it or one of its parent folders decides.
    pub fn excluded(&self, rel: &str) -> bool {
        let mut excluded = false;
        for (m, exception) in &self.patterns {
            let hit = m.is_match(rel) || parents(rel).any(|p| m.is_match(p));
            if hit {
                excluded = !exception;
            }
        }
        excluded
    }

    /// True when a folder may be skipped whole: it is excluded and no `!` pattern could re-include a file inside it.
    pub fn prune(&self, rel_dir: &str) -> bool {
        !self.has_exceptions && self.excluded(rel_dir)
    }
}

/// `a/b/c` → `a`, `a/b`.
fn parents(rel: &str) -> impl Iterator<Item = &str> {
    rel.match_indices('/').map(move |(i, _)| &rel[..i])
}

/// Lexical clean as Go's `filepath.Clean`, then drop a leading `/`.
fn clean(pat: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(pat).components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str().unwrap_or_default()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_rules() {
        let i = DockerIgnore::parse("# c\n*.md\n!README.md\n/build\nsecret/**\n**/*.tmp\n").unwrap();
        assert!(i.excluded("a.md"));
        assert!(!i.excluded("README.md"));
        assert!(!i.excluded("docs/a.md"), "* does not cross /");
        assert!(i.excluded("build/x/y"), "a folder match excludes what it holds");
        assert!(i.excluded("secret/k"));
        assert!(i.excluded("x/y/z.tmp") && i.excluded("z.tmp"));
        assert!(!i.excluded("src/main.rs"));
    }

    #[test]
    fn bad_pattern_names_line() {
        let e = DockerIgnore::parse("ok\n[z-a\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
    }
}
