//! Global `ARG`s: the automatic platform ARGs, and splitting an `ARG` instruction.

use super::Vars;

/// The automatic platform ARGs that BuildKit defines in the global scope
/// (Dockerfile reference, "Automatic platform ARGs in the global scope"):
/// `TARGET*` from the build's target platform, `BUILD*` from the platform of
/// the engine doing the build. Platforms are `os/arch[/variant]`.
pub fn platform_args(target: &str, build: &str) -> Vars {
    let mut vars = Vars::new();
    for (prefix, platform) in [("TARGET", target), ("BUILD", build)] {
        let mut parts = platform.split('/');
        vars.insert(format!("{prefix}PLATFORM"), platform.to_string());
        vars.insert(format!("{prefix}OS"), parts.next().unwrap_or("linux").to_string());
        vars.insert(format!("{prefix}ARCH"), parts.next().unwrap_or("amd64").to_string());
        vars.insert(format!("{prefix}VARIANT"), parts.next().unwrap_or("").to_string());
    }
    vars
}

/// The platform of this host in Go's `os/arch` names (the names Docker uses).
pub fn host_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    format!("linux/{arch}")
}

/// Splits an ARG instruction's arguments (`A=1 B "C=x y"`) into names and raw
/// (unexpanded) defaults; quotes are kept for the expander to remove.
pub fn split_arg(args: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut push = |word: &mut String| {
        if !word.is_empty() {
            let mut w = std::mem::take(word);
            if w.len() >= 2 && (w.starts_with('"') && w.ends_with('"') || w.starts_with('\'') && w.ends_with('\'')) {
                w = w[1..w.len() - 1].to_string();
            }
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

    #[test]
    fn splits_args() {
        assert_eq!(
            split_arg("A=1 B \"C=x y\""),
            vec![("A".into(), Some("1".into())), ("B".into(), None), ("C".into(), Some("x y".into()))]
        );
        let v = platform_args("linux/arm/v7", "linux/amd64");
        assert_eq!(v["TARGETARCH"], "arm");
        assert_eq!(v["TARGETVARIANT"], "v7");
        assert_eq!(v["BUILDARCH"], "amd64");
    }
}
