//! Dockerfile word expansion against tables of words with the results BuildKit
//! gives (`tests/fixtures/expand/`): the words of BuildKit's own lexer table
//! that have no whitespace, and the pattern modifiers. `plan` shows the same
//! expansion through the product (`tests/options.rs`, the Dockerfile rows).

use std::path::Path;

use freshen::dockerfile::{expand_word, Vars};
use serde_json::Value;

fn table(name: &str) -> Value {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/expand")).join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn vars(v: &Value) -> Vars {
    v.as_object().into_iter().flatten().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect()
}

/// Runs every case of `doc`; returns how many ran and the ones that differ.
fn run(doc: &Value) -> (usize, Vec<String>) {
    let (mut count, mut failures) = (0, Vec::new());
    for group in doc["groups"].as_array().unwrap() {
        let vars = vars(group.get("vars").unwrap_or(&doc["vars"]));
        for case in group["cases"].as_array().unwrap() {
            count += 1;
            let (word, want) = (case[0].as_str().unwrap(), case[1].as_str());
            let got = expand_word(word, &vars, '\\');
            let ok = match (&got, want) {
                (Ok(g), Some(w)) => g == w,
                (Err(_), None) => true,
                _ => false,
            };
            if !ok {
                failures.push(format!("{}: {word:?}: want {want:?}, got {got:?}", group["about"].as_str().unwrap()));
            }
        }
    }
    (count, failures)
}

#[test]
fn every_buildkit_word_without_whitespace_expands_as_buildkit_expands_it() {
    let (count, failures) = run(&table("buildkit-words.json"));
    assert!(count >= 200, "only {count} words");
    assert!(failures.is_empty(), "{} of {count} words differ:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn pattern_modifiers_expand_as_buildkit_expands_them() {
    let (count, failures) = run(&table("pattern-modifiers.json"));
    assert!(count >= 40, "only {count} words");
    assert!(failures.is_empty(), "{} of {count} words differ:\n{}", failures.len(), failures.join("\n"));
}
