//! Shell-word expansion of Dockerfile words, as BuildKit's `shell.Lex.ProcessWord` does it.
//!
//! Written here because no maintained crate implements the Dockerfile flavour:
//! dockerfile-parser 0.9 leaves `${V:-x}` unexpanded without an error, and
//! parse-dockerfile does not expand variables at all. The rules are those of
//! BuildKit's lexer (`frontend/dockerfile/shell/lex.go`; Dockerfile reference,
//! "Environment replacement"):
//! - `$V`, `${V}`, `${V:-w}`, `${V-w}`, `${V:+w}`, `${V+w}`, `${V:?msg}`, `${V?msg}`;
//!   `w` is itself expanded (nested forms);
//! - the pattern modifiers, stable since Dockerfile 1.7: `${V#p}`, `${V##p}`,
//!   `${V%p}`, `${V%%p}`, `${V/p/r}` and `${V//p/r}`, where `p` is a shell
//!   pattern with `*` and `?` (no bracket expressions, as in BuildKit);
//! - positional (`$1`, `$999`, `$001`) and special parameters (`$@`, `$*`,
//!   `$#`, `$?`, `$-`, `$$`, `$!`, `$0`) are never set in a Dockerfile and
//!   expand to the empty string, in their `${…}` forms too;
//! - single quotes are literal, double quotes group but still expand, and the
//!   escape character (`\` or the `# escape=` directive's) makes the next
//!   character literal; an escape at the end of the word is dropped. Quotes are
//!   removed from the result.

use std::collections::HashMap;

/// How deep `${…}` forms may nest. BuildKit sets no limit (Go stacks grow);
/// freshen's expander recurses, so a Dockerfile nesting thousands deep would
/// overflow its stack: it gets an error instead. Real Dockerfiles nest two or three deep.
pub const MAX_NESTING: usize = 100;

/// Variables in scope: name → value. A name that is absent is unset; a name
/// mapped to `""` is set but empty (the `:-` and `-` forms tell them apart).
pub type Vars = HashMap<String, String>;

/// Why a word could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// `${V?msg}` with `V` unset, or `${V:?msg}` with `V` unset or empty.
    #[error("variable {name} is {}: {message}", if *.empty { "empty" } else { "not set" })]
    Required {
        /// The variable name.
        name: String,
        /// Set but empty (`:?`), rather than unset.
        empty: bool,
        /// The message after `?`, or BuildKit's default one.
        message: String,
    },
    /// Unbalanced `${`, a quote left open, a bad modifier or pattern, or
    /// `${…}` nested deeper than [`MAX_NESTING`].
    #[error("bad variable substitution in {word:?}: {reason}")]
    Syntax {
        /// The word being expanded (its first 80 characters and `…` when longer).
        word: String,
        /// What is wrong.
        reason: String,
    },
}

/// Expands `word` with `vars`, using `escape` as the escape character.
///
/// # Errors
/// [`ExpandError::Required`] for `${V?msg}` with `V` unset (and `${V:?msg}`
/// with `V` empty), and [`ExpandError::Syntax`] where BuildKit also fails: an
/// unterminated `${` or quote, `${}`, `${:…}`, an unknown modifier (`${V:=w}`),
/// `:` before a pattern modifier, an invalid escape in a pattern, or `${…}`
/// forms nested deeper than [`MAX_NESTING`].
pub fn expand_word(word: &str, vars: &Vars, escape: char) -> Result<String, ExpandError> {
    let chars: Vec<char> = word.chars().collect();
    let mut lexer = Lexer { chars: &chars, pos: 0, vars, escape, word, depth: 0 };
    lexer.process(None, false)
}

struct Lexer<'a> {
    chars: &'a [char],
    pos: usize,
    vars: &'a Vars,
    escape: char,
    word: &'a str,
    /// `${…}` forms open around the current position.
    depth: usize,
}

impl Lexer<'_> {
    fn syntax(&self, reason: &str) -> ExpandError {
        // A word can be megabytes long; the error quotes its start.
        let word = match self.word.char_indices().nth(80) {
            Some((cut, _)) => format!("{}…", &self.word[..cut]),
            None => self.word.to_string(),
        };
        ExpandError::Syntax { word, reason: reason.to_string() }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.pos += usize::from(c.is_some());
        c
    }

    /// Processes until the end of input, or until `stop` (consumed). With
    /// `raw_escapes` (pattern modifiers) escape characters stay in the result,
    /// for the pattern to read.
    fn process(&mut self, stop: Option<char>, raw_escapes: bool) -> Result<String, ExpandError> {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.pos += 1;
                return Ok(out);
            }
            match c {
                '\'' => out.push_str(&self.single_quoted()?),
                '"' => out.push_str(&self.double_quoted(raw_escapes)?),
                '$' => out.push_str(&self.dollar()?),
                c => {
                    self.pos += 1;
                    if c != self.escape {
                        out.push(c);
                        continue;
                    }
                    if raw_escapes {
                        out.push(c);
                    }
                    // An escape at the end of the word is dropped (BuildKit: `hello\` is `hello`).
                    let Some(next) = self.next() else { break };
                    out.push(next);
                }
            }
        }
        match stop {
            Some(s) => Err(self.syntax(&format!("missing '{s}'"))),
            None => Ok(out),
        }
    }

    fn single_quoted(&mut self) -> Result<String, ExpandError> {
        self.pos += 1;
        let mut out = String::new();
        while let Some(c) = self.next() {
            if c == '\'' {
                return Ok(out);
            }
            out.push(c);
        }
        Err(self.syntax("unterminated single quote"))
    }

    /// Inside double quotes the escape character escapes only `"`, `$` and itself.
    fn double_quoted(&mut self, raw_escapes: bool) -> Result<String, ExpandError> {
        self.pos += 1;
        let mut out = String::new();
        while let Some(c) = self.peek() {
            match c {
                '"' => {
                    self.pos += 1;
                    return Ok(out);
                }
                '$' => out.push_str(&self.dollar()?),
                c => {
                    self.pos += 1;
                    if c == self.escape {
                        if raw_escapes {
                            out.push(c);
                        }
                        match self.peek() {
                            None => continue,
                            Some(next) if next == '"' || next == '$' || next == self.escape => {
                                self.pos += 1;
                                out.push(next);
                                continue;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(c);
                }
            }
        }
        Err(self.syntax("unterminated double quote"))
    }

    /// A name as BuildKit's `processName` reads it: all the digits of a
    /// positional parameter, one special parameter character, or letters,
    /// digits and `_` (Unicode letters and digits count, as in Go's `unicode` package).
    fn name(&mut self) -> String {
        let mut name = String::new();
        match self.peek() {
            Some(c) if c.is_numeric() => {
                while let Some(d) = self.peek().filter(|d| d.is_numeric()) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            Some(c @ ('@' | '*' | '#' | '?' | '-' | '$' | '!')) => {
                self.pos += 1;
                return c.to_string();
            }
            _ => {}
        }
        while let Some(c) = self.peek().filter(|c| c.is_alphanumeric() || *c == '_') {
            name.push(c);
            self.pos += 1;
        }
        name
    }

    /// At a `$`: `$NAME`, `${NAME}`, `${NAME<modifier>…}`, or a literal `$`.
    fn dollar(&mut self) -> Result<String, ExpandError> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(self.vars.get(&name).cloned().unwrap_or_default());
        }
        self.pos += 1;
        match self.peek() {
            None => return Err(self.syntax("missing '}'")),
            Some('{' | '}' | ':') => return Err(self.syntax("bad substitution")),
            Some(_) => {}
        }
        if self.depth >= MAX_NESTING {
            return Err(self.syntax(&format!("variables nested more than {MAX_NESTING} deep")));
        }
        let name = self.name();
        let value = self.vars.get(&name).cloned();
        let modifier = self.next().ok_or_else(|| self.syntax("missing '}'"))?;
        self.depth += 1;
        let result = match modifier {
            '}' => Ok(value.unwrap_or_default()),
            ':' => match self.next() {
                Some(op @ ('-' | '+' | '?')) => self.default_forms(&name, value, op, true),
                Some(op) => Err(self.syntax(&format!("unsupported modifier ':{op}' in ${{{name}…}}"))),
                None => Err(self.syntax("missing '}'")),
            },
            op @ ('-' | '+' | '?') => self.default_forms(&name, value, op, false),
            op @ ('#' | '%') => self.trim(value.unwrap_or_default(), op),
            '/' => self.replace(value.unwrap_or_default()),
            other => Err(self.syntax(&format!("unsupported modifier '{other}' in ${{{name}…}}"))),
        };
        self.depth -= 1;
        result
    }

    /// `${V-w}`, `${V+w}`, `${V?w}`; with `colon`, an empty value counts as unset.
    fn default_forms(&mut self, name: &str, value: Option<String>, op: char, colon: bool) -> Result<String, ExpandError> {
        let word = self.process(Some('}'), false)?;
        let set = value.as_ref().is_some_and(|v| !(colon && v.is_empty()));
        match op {
            '-' => Ok(if set { value.unwrap_or_default() } else { word }),
            '+' => Ok(if set { word } else { String::new() }),
            _ if set => Ok(value.unwrap_or_default()),
            _ => {
                let empty = value.is_some();
                let default = if empty { "is not allowed to be empty" } else { "is not allowed to be unset" };
                let message = if word.is_empty() { default.to_string() } else { word };
                Err(ExpandError::Required { name: name.to_string(), empty, message })
            }
        }
    }

    /// `${V#p}` and `${V##p}` remove the shortest and longest prefix matching
    /// `p`; `${V%p}` and `${V%%p}` the shortest and longest suffix.
    fn trim(&mut self, value: String, op: char) -> Result<String, ExpandError> {
        let word = self.process(Some('}'), true)?;
        let (greedy, pattern) = match word.strip_prefix(op) {
            Some(rest) => (true, rest),
            None => (false, word.as_str()),
        };
        let glob = Glob::parse(pattern).map_err(|e| self.syntax(&e))?;
        let chars: Vec<char> = value.chars().collect();
        let n = chars.len();
        let mut lengths: Vec<usize> = (0..=n).collect();
        if greedy {
            lengths.reverse();
        }
        let kept = lengths.into_iter().find_map(|len| match op {
            '#' => glob.matches(&chars[..len]).then(|| &chars[len..]),
            _ => glob.matches(&chars[n - len..]).then(|| &chars[..n - len]),
        });
        Ok(kept.map_or(value, |k| k.iter().collect()))
    }

    /// `${V/p/r}` replaces the first (leftmost, longest) match of `p` with `r`;
    /// `${V//p/r}` every match, as Go's `Regexp.ReplaceAllString` does.
    fn replace(&mut self, value: String) -> Result<String, ExpandError> {
        let all = self.peek() == Some('/');
        self.pos += usize::from(all);
        let pattern = self.process(Some('/'), true)?;
        let replacement = self.process(Some('}'), true)?;
        let glob = Glob::parse(&pattern).map_err(|e| self.syntax(&e))?;
        let chars: Vec<char> = value.chars().collect();
        if !all {
            return Ok(match glob.find(&chars, 0) {
                Some((a, b)) => chars[..a].iter().collect::<String>() + &replacement + &chars[b..].iter().collect::<String>(),
                None => value,
            });
        }
        let mut out = String::new();
        let (mut search, mut last_end) = (0, 0);
        while search <= chars.len() {
            let Some((a, b)) = glob.find(&chars, search) else { break };
            out.extend(&chars[last_end..a]);
            // No second replacement for an empty match right after a match.
            if b > last_end || a == 0 {
                out.push_str(&expand_replacement(&replacement, &chars[a..b]));
            }
            last_end = b;
            search = if search + 1 > b { search + 1 } else { b };
        }
        out.extend(&chars[last_end.min(chars.len())..]);
        Ok(out)
    }
}

/// A replacement as Go's `Regexp.Expand` reads it for a pattern without groups:
/// `$$` is `$`, `$0` and `${0}` the whole match, any other `$name` or `${name}`
/// nothing, and a `$` not followed by a name is kept.
fn expand_replacement(template: &str, matched: &[char]) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some((before, after)) = rest.split_once('$') {
        out.push_str(before);
        if let Some(after) = after.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        let (braced, body) = match after.strip_prefix('{') {
            Some(b) => (true, b),
            None => (false, after),
        };
        let len = body.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(body.len());
        let name = &body[..len];
        let closed = !braced || body[len..].starts_with('}');
        if name.is_empty() || !closed {
            out.push('$');
            rest = after;
            continue;
        }
        if name.bytes().all(|b| b.is_ascii_digit()) && name.trim_start_matches('0').is_empty() {
            out.extend(matched);
        }
        rest = &body[len + usize::from(braced)..];
    }
    out.push_str(rest);
    out
}

/// One element of a shell pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// `*`: any run of characters.
    Star,
    /// `?`: any one character.
    One,
    /// A literal character.
    Literal(char),
}

/// A shell pattern with `*` and `?`, read as BuildKit's `convertShellPatternToRegex`
/// reads it: `\*`, `\?` and `\\` are literal, `\}` and `\/` are `}` and `/`,
/// any other `\` is an error. Matched here directly: for patterns of `*`, `?`
/// and literals, the shortest or longest match is what Go's regexp finds.
struct Glob(Vec<Token>);

impl Glob {
    fn parse(pattern: &str) -> Result<Glob, String> {
        let mut tokens = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                '*' => Token::Star,
                '?' => Token::One,
                '\\' => match chars.peek() {
                    Some('}' | '/') => continue,
                    Some(&n @ ('*' | '?' | '\\')) => {
                        chars.next();
                        Token::Literal(n)
                    }
                    Some(n) => return Err(format!("invalid escape '\\{n}' in pattern {pattern:?}")),
                    None => return Err(format!("pattern {pattern:?} ends with an escape")),
                },
                c => Token::Literal(c),
            });
        }
        Ok(Glob(tokens))
    }

    /// True when the whole of `s` matches (two pointers, backtracking to the last `*`).
    fn matches(&self, s: &[char]) -> bool {
        let p = &self.0;
        let (mut i, mut j) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while i < s.len() {
            match p.get(j) {
                Some(Token::Star) => {
                    star = Some((j, i));
                    j += 1;
                }
                Some(Token::One) => (i, j) = (i + 1, j + 1),
                Some(Token::Literal(c)) if *c == s[i] => (i, j) = (i + 1, j + 1),
                _ => match star {
                    Some((sj, si)) => {
                        star = Some((sj, si + 1));
                        (i, j) = (si + 1, sj + 1);
                    }
                    None => return false,
                },
            }
        }
        p[j..].iter().all(|t| *t == Token::Star)
    }

    /// The leftmost match starting at or after `from`, longest at that start, as `(start, end)`.
    fn find(&self, s: &[char], from: usize) -> Option<(usize, usize)> {
        (from..=s.len()).find_map(|a| (a..=s.len()).rev().find(|&b| self.matches(&s[a..b])).map(|b| (a, b)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        [("A", "alpine"), ("E", ""), ("T", "3.20")].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn x(w: &str) -> Result<String, ExpandError> {
        expand_word(w, &vars(), '\\')
    }

    #[test]
    fn plain_and_braced() {
        assert_eq!(x("$A:$T").unwrap(), "alpine:3.20");
        assert_eq!(x("${A}:${T}").unwrap(), "alpine:3.20");
        assert_eq!(x("${U}x").unwrap(), "x");
    }

    #[test]
    fn default_forms() {
        assert_eq!(x("${U:-debian}").unwrap(), "debian");
        assert_eq!(x("${E:-debian}").unwrap(), "debian");
        assert_eq!(x("${E-debian}").unwrap(), "");
        assert_eq!(x("${U-debian}").unwrap(), "debian");
        assert_eq!(x("${A:+x}").unwrap(), "x");
        assert_eq!(x("${E:+x}").unwrap(), "");
        assert_eq!(x("${E+x}").unwrap(), "x");
        assert_eq!(x("${U:-${A}:${T}}").unwrap(), "alpine:3.20");
        assert!(matches!(x("${U:?need it}"), Err(ExpandError::Required { .. })));
        assert_eq!(x("${A:?need it}").unwrap(), "alpine");
        assert_eq!(x("${E:?}").unwrap_err().to_string(), "variable E is empty: is not allowed to be empty");
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(x("'$A'").unwrap(), "$A");
        assert_eq!(x("\"$A\"").unwrap(), "alpine");
        assert_eq!(x("\\$A").unwrap(), "$A");
        assert_eq!(expand_word("`$A", &vars(), '`').unwrap(), "$A");
    }

    #[test]
    fn syntax_errors() {
        assert!(x("${A").is_err());
        assert!(x("${A:-x").is_err());
        assert!(x("'open").is_err());
        // `${A%x}` is a pattern modifier now (Dockerfile 1.7); `:=` is still unsupported, as in BuildKit.
        assert!(x("${A:=x}").is_err());
    }

    #[test]
    fn globs_match_like_shell_patterns() {
        let g = Glob::parse("*x*y").unwrap();
        assert!(g.matches(&"xxy".chars().collect::<Vec<_>>()));
        assert!(!g.matches(&"xxyx".chars().collect::<Vec<_>>()));
        assert!(Glob::parse("a\\x").is_err());
        assert_eq!(Glob::parse("\\}").unwrap().0, vec![Token::Literal('}')]);
    }

    #[test]
    fn replacement_templates_follow_go() {
        let m: Vec<char> = "ab".chars().collect();
        assert_eq!(expand_replacement("[$0|${0}|$$|$x|${1}|$]", &m), "[ab|ab|$|||$]");
    }

    #[test]
    fn nesting_is_bounded() {
        let nested = |n: usize| format!("{}x{}", "${UNSET:-".repeat(n), "}".repeat(n));
        assert_eq!(x(&nested(MAX_NESTING)), Ok("x".into()));
        let deep = x(&nested(100_000)).unwrap_err();
        assert!(deep.to_string().contains("nested more than 100 deep"), "{deep}");
    }
}
