//! Shell-word expansion of Dockerfile words, as BuildKit's `shell.Lex.ProcessWord` does it.
//!
//! Written here because no maintained crate implements the Dockerfile flavour:
//! dockerfile-parser 0.9 leaves `${V:-x}` unexpanded without an error, and
//! parse-dockerfile does not expand variables at all. Rules follow the Dockerfile
//! reference, "Environment replacement": `$V`, `${V}`, `${V:-w}`, `${V-w}`,
//! `${V:+w}`, `${V+w}`, `${V:?msg}`, `${V?msg}`; `w` is itself expanded (nested
//! forms); single quotes are literal, double quotes group but still expand, and
//! the escape character (`\` or the `# escape=` directive's) makes the next
//! character literal. Quotes are removed from the result, as BuildKit does.

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
    /// `${V:?msg}` or `${V?msg}` with `V` unset (or empty, for `:?`).
    #[error("variable {name} is not set: {message}")]
    Required {
        /// The variable name.
        name: String,
        /// The message after `?`, or a default one.
        message: String,
    },
    /// Unbalanced `${`, a quote left open, a bad modifier, or `${…}` nested deeper than [`MAX_NESTING`].
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
/// [`ExpandError::Required`] for `${V:?msg}` with `V` unset or empty, and
/// [`ExpandError::Syntax`] for an unterminated `${`, quote, an unknown modifier,
/// or `${…}` forms nested deeper than [`MAX_NESTING`].
pub fn expand_word(word: &str, vars: &Vars, escape: char) -> Result<String, ExpandError> {
    let chars: Vec<char> = word.chars().collect();
    let mut lexer = Lexer { chars: &chars, pos: 0, vars, escape, word, depth: 0 };
    lexer.process(None)
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

    /// Processes until end of input, or until `stop` (used for `}` inside `${…}`).
    fn process(&mut self, stop: Option<char>) -> Result<String, ExpandError> {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                return Ok(out);
            }
            self.pos += 1;
            match c {
                '\'' => out.push_str(&self.single_quoted()?),
                '"' => out.push_str(&self.double_quoted()?),
                '$' => out.push_str(&self.dollar()?),
                c if c == self.escape => match self.peek() {
                    Some(next) => {
                        self.pos += 1;
                        out.push(next);
                    }
                    None => out.push(c),
                },
                c => out.push(c),
            }
        }
        match stop {
            Some(_) => Err(self.syntax("missing '}'")),
            None => Ok(out),
        }
    }

    fn single_quoted(&mut self) -> Result<String, ExpandError> {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            self.pos += 1;
            if c == '\'' {
                return Ok(out);
            }
            out.push(c);
        }
        Err(self.syntax("unterminated single quote"))
    }

    fn double_quoted(&mut self) -> Result<String, ExpandError> {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            self.pos += 1;
            match c {
                '"' => return Ok(out),
                '$' => out.push_str(&self.dollar()?),
                c if c == self.escape => match self.peek() {
                    Some(next @ ('"' | '$')) => {
                        self.pos += 1;
                        out.push(next);
                    }
                    Some(next) if next == self.escape => {
                        self.pos += 1;
                        out.push(next);
                    }
                    _ => out.push(c),
                },
                c => out.push(c),
            }
        }
        Err(self.syntax("unterminated double quote"))
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                name.push(c);
                self.pos += 1;
            } else {
                break;
            }
        }
        name
    }

    /// After a `$`: `$NAME`, `${NAME}`, `${NAME<op>word}`, or a literal `$`.
    fn dollar(&mut self) -> Result<String, ExpandError> {
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(self.vars.get(&name).cloned().unwrap_or_default());
        }
        self.pos += 1;
        if self.depth >= MAX_NESTING {
            return Err(self.syntax(&format!("variables nested more than {MAX_NESTING} deep")));
        }
        let name = self.name();
        if name.is_empty() {
            return Err(self.syntax("missing variable name after '${'"));
        }
        let value = self.vars.get(&name);
        let Some(c) = self.peek() else {
            return Err(self.syntax("missing '}'"));
        };
        self.pos += 1;
        if c == '}' {
            return Ok(value.cloned().unwrap_or_default());
        }
        let colon = c == ':';
        let op = if colon {
            let op = self.peek().ok_or_else(|| self.syntax("missing '}'"))?;
            self.pos += 1;
            op
        } else {
            c
        };
        self.depth += 1;
        let word = self.process(Some('}'));
        self.depth -= 1;
        let word = word?;
        // Past the '}'. With ':', an empty value counts as unset (POSIX parameter expansion).
        self.pos += 1;
        let set = match value {
            Some(v) => !(colon && v.is_empty()),
            None => false,
        };
        match op {
            '-' => Ok(if set { value.cloned().unwrap_or_default() } else { word }),
            '+' => Ok(if set { word } else { String::new() }),
            '?' if set => Ok(value.cloned().unwrap_or_default()),
            '?' => Err(ExpandError::Required {
                name: name.clone(),
                message: if word.is_empty() { "is not allowed to be unset".into() } else { word },
            }),
            other => Err(self.syntax(&format!("unsupported modifier '{other}' in ${{{name}…}}"))),
        }
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
    fn modifiers() {
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
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(x("'$A'").unwrap(), "$A");
        assert_eq!(x("\"$A\"").unwrap(), "alpine");
        assert_eq!(x("\\$A").unwrap(), "$A");
        assert_eq!(expand_word("`$A", &vars(), '`').unwrap(), "$A");
    }

    #[test]
    fn nesting_is_bounded() {
        let nested = |n: usize| format!("{}x{}", "${UNSET:-".repeat(n), "}".repeat(n));
        assert_eq!(x(&nested(MAX_NESTING)), Ok("x".into()));
        let deep = x(&nested(100_000)).unwrap_err();
        assert!(deep.to_string().contains("nested more than 100 deep"), "{deep}");
    }

    #[test]
    fn syntax_errors() {
        assert!(x("${A").is_err());
        assert!(x("${A:-x").is_err());
        assert!(x("'open").is_err());
        assert!(x("${A%x}").is_err());
    }
}
