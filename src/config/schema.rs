//! Checks raw config JSON against `schema/config.schema.json` (JSON Schema 2020-12),
//! which is compiled into the binary, and turns each violation into a message
//! with its JSON pointer and what to do.

use std::sync::OnceLock;

use jsonschema::error::ValidationErrorKind;
use jsonschema::Validator;
use serde_json::Value;

/// The config schema, as shipped in `schema/config.schema.json`.
pub const SCHEMA_TEXT: &str = include_str!("../../schema/config.schema.json");

/// One schema violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer of the offending value (RFC 6901), `""` for the whole document.
    pub pointer: String,
    /// What is wrong and what to do.
    pub message: String,
}

fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| serde_json::from_str(SCHEMA_TEXT).expect("schema/config.schema.json is valid JSON"))
}

/// The compiled validator. Not kept: it is used once per load, and the daemon
/// should not carry it in memory between reloads.
fn validator() -> Validator {
    jsonschema::draft202012::new(schema()).expect("schema/config.schema.json is a valid 2020-12 schema")
}

/// Validates `instance`, returning every violation at once (empty when valid).
pub fn check(instance: &Value) -> Vec<Violation> {
    let validator = validator();
    let mut out: Vec<Violation> = validator
        .iter_errors(instance)
        .map(|e| {
            let pointer = e.instance_path().to_string();
            let message = match e.kind() {
                ValidationErrorKind::AdditionalProperties { unexpected } => {
                    let known = known_keys(&pointer);
                    unexpected.iter().map(|k| unknown_key(k, &known)).collect::<Vec<_>>().join("; ")
                }
                ValidationErrorKind::OneOfNotValid { .. } | ValidationErrorKind::OneOfMultipleValid { .. } if is_build(&pointer) => {
                    "give exactly one of \"tags\" (a list of references) or \"tag\" (one reference)".to_string()
                }
                ValidationErrorKind::OneOfNotValid { .. } if pointer.ends_with("log_level") || pointer.ends_with("log-level") => {
                    "log level must be one of trace, debug, info, warn, error, or one of Python's numbers 10 to 50".to_string()
                }
                ValidationErrorKind::MinProperties { .. } if pointer == "/builds" => {
                    "no builds: add at least one build, e.g. \"web\": {\"dockerfile\": \"web/Dockerfile\", \"tags\": [\"registry.example.com/web:latest\"]}".to_string()
                }
                ValidationErrorKind::OneOfNotValid { .. } if pointer.ends_with("interval") => {
                    "interval must be whole seconds (>= 1) or a duration such as \"90s\" or \"1h 30m\"".to_string()
                }
                _ => e.to_string(),
            };
            Violation { pointer, message }
        })
        .collect();
    out.sort_by(|a, b| a.pointer.cmp(&b.pointer));
    out.dedup();
    out
}

fn is_build(pointer: &str) -> bool {
    pointer.starts_with("/builds/") && pointer.matches('/').count() == 2
}

/// Keys the schema allows in the object at `pointer`.
fn known_keys(pointer: &str) -> Vec<String> {
    let s = schema();
    let props = if pointer.is_empty() {
        &s["properties"]
    } else if pointer == "/options" {
        &s["properties"]["options"]["properties"]
    } else if is_build(pointer) {
        &s["$defs"]["build"]["properties"]
    } else if pointer.starts_with("/registries/") && pointer.matches('/').count() == 2 {
        &s["properties"]["registries"]["additionalProperties"]["properties"]
    } else {
        &Value::Null
    };
    props.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

/// "unknown key X; did you mean Y?" with the closest key by Jaro-Winkler similarity.
fn unknown_key(key: &str, known: &[String]) -> String {
    if key == "password" && known.iter().any(|k| k == "password_file") {
        return "unknown key \"password\"; did you mean \"password_file\"? Inline passwords are not accepted: put the password in a file readable only by freshen and give its path".into();
    }
    let best = known.iter().map(|k| (strsim::jaro_winkler(&key.to_lowercase(), k), k)).max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((score, k)) if score > 0.7 => format!("unknown key \"{key}\"; did you mean \"{k}\"?"),
        _ => format!("unknown key \"{key}\"; valid keys are: {}", known.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_closest_key_and_pointer() {
        let v = check(&json!({"builds": {"a": {"dockerfile": "x", "tags": ["a"], "buildargs": {}}}}));
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].pointer, "/builds/a");
        assert!(v[0].message.contains("did you mean \"build_args\""), "{}", v[0].message);
    }

    #[test]
    fn reports_all_violations() {
        let v = check(&json!({"options": {"parallelism": 0}, "builds": {}}));
        assert_eq!(v.len(), 2, "{v:?}");
    }

    #[test]
    fn docker_rebuilder_config_is_valid() {
        let v = check(&json!({"options": {"log-level": 20, "log-format": "%(message)s", "interval": 300},
            "builds": {"descriptive-name-here, anything goes": {"dockerfile": "/d", "tag": "t"}}}));
        assert!(v.is_empty(), "{v:?}");
    }
}
