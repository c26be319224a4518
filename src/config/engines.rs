//! `options.engines`: the pool of Docker engines builds are spread over, each
//! with its host, its TLS files, how many builds it takes at once and the
//! platforms it builds for.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{violation, Violation};

/// Where an engine answers: the Engine API's endpoints, as `DOCKER_HOST` writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineHost {
    /// `unix:///var/run/docker.sock`: a local socket, or one forwarded from another host (`ssh -L`).
    Unix(PathBuf),
    /// `tcp://host:port`: plain HTTP without `tls` (for loopback and private networks only),
    /// HTTPS with client certificates with it, as dockerd's `--tlsverify` wants.
    Tcp {
        /// `host:port`.
        address: String,
        /// The files of a mutually authenticated TLS connection.
        tls: Option<EngineTls>,
    },
}

impl std::fmt::Display for EngineHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineHost::Unix(p) => write!(f, "unix://{}", p.display()),
            EngineHost::Tcp { address, tls: Some(_) } => write!(f, "tcp://{address} (TLS)"),
            EngineHost::Tcp { address, tls: None } => write!(f, "tcp://{address}"),
        }
    }
}

/// The PEM files of a TLS connection to an engine (Docker docs, "Protect the Docker daemon socket").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineTls {
    /// The CA that signed the engine's certificate: the engine is trusted only through it.
    pub ca_file: PathBuf,
    /// freshen's client certificate, which the engine's `--tlsverify` asks for.
    pub cert_file: PathBuf,
    /// The client certificate's private key.
    pub key_file: PathBuf,
}

/// One engine of `options.engines`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineSpec {
    /// Its name in logs, reports, `plan` and the state file's records of where each image was built.
    pub name: String,
    /// Where it answers.
    pub host: EngineHost,
    /// Builds it runs at once (default 1); `options.parallelism` still bounds the total.
    pub capacity: usize,
    /// The platforms (`os/arch[/variant]`) it builds for; empty means the one its
    /// `GET /version` reports, learned when it first answers.
    pub platforms: Vec<String>,
}

/// Reads `options.engines` (already schema-checked). A host that is neither
/// `unix://` nor `tcp://`, a repeated name, `tls` on a unix socket and TLS files
/// that do not exist are violations at `/options/engines/<i>/…`.
pub(super) fn resolve(raw: &Value, base_dir: &Path, v: &mut Vec<Violation>) -> Vec<EngineSpec> {
    let mut out: Vec<EngineSpec> = Vec::new();
    for (i, e) in raw.get("engines").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let at = format!("/options/engines/{i}");
        let name = e["name"].as_str().unwrap_or_default().to_string();
        if out.iter().any(|o| o.name == name) {
            violation(v, format!("{at}/name"), format!("engine name {name:?} is used twice; give each engine its own name"));
        }
        let host = e["host"].as_str().unwrap_or_default();
        let tls = tls(&e["tls"], &at, base_dir, v);
        let host = if let Some(path) = host.strip_prefix("unix://") {
            if tls.is_some() {
                violation(v, format!("{at}/tls"), "tls is for tcp:// hosts; a unix socket is protected by its file mode".into());
            }
            EngineHost::Unix(PathBuf::from(path))
        } else if let Some(address) = host.strip_prefix("tcp://") {
            EngineHost::Tcp { address: address.trim_end_matches('/').to_string(), tls }
        } else {
            let hint = if host.starts_with("ssh://") {
                "ssh:// is not supported: forward the engine's socket (`ssh -nNT -L /run/freshen/b.sock:/var/run/docker.sock user@host`) and use unix://, or use tcp:// with tls"
            } else {
                "write unix:///path/to/docker.sock or tcp://host:port"
            };
            violation(v, format!("{at}/host"), format!("{host:?} is not an engine address; {hint}"));
            continue;
        };
        let capacity = e.get("capacity").and_then(Value::as_u64).unwrap_or(1) as usize;
        let platforms = e["platforms"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect();
        out.push(EngineSpec { name, host, capacity, platforms });
    }
    out
}

fn tls(raw: &Value, at: &str, base_dir: &Path, v: &mut Vec<Violation>) -> Option<EngineTls> {
    if raw.is_null() {
        return None;
    }
    let mut file = |key: &str| {
        let path = base_dir.join(raw[key].as_str().unwrap_or_default());
        if !path.is_file() {
            let why =
                format!("{} is not a file; the engine's TLS needs a PEM {key} (see \"Protect the Docker daemon socket\")", path.display());
            violation(v, format!("{at}/tls/{key}"), why);
        }
        path
    };
    Some(EngineTls { ca_file: file("ca_file"), cert_file: file("cert_file"), key_file: file("key_file") })
}

/// Whether an engine that builds for `served` builds for `wanted`: the same OS
/// and architecture, and the same variant when both name one (`linux/arm64` is
/// `linux/arm64/v8`, as containerd's platform matcher takes it).
pub fn serves(served: &str, wanted: &str) -> bool {
    let parts = |p: &str| -> (String, String, Option<String>) {
        let mut it = p.split('/').map(str::to_ascii_lowercase);
        let (os, arch, variant) = (it.next().unwrap_or_default(), it.next().unwrap_or_default(), it.next());
        // containerd normalises these aliases (platforms.Normalize).
        let arch = match arch.as_str() {
            "x86_64" | "x86-64" => "amd64".to_string(),
            "aarch64" => "arm64".to_string(),
            _ => arch,
        };
        (os, arch, variant)
    };
    let (a, b) = (parts(served), parts(wanted));
    a.0 == b.0 && a.1 == b.1 && (a.2.is_none() || b.2.is_none() || a.2 == b.2)
}

#[cfg(test)]
mod tests {
    use super::serves;

    #[test]
    fn platforms_match_by_os_arch_and_variant_when_both_say() {
        assert!(serves("linux/amd64", "linux/amd64"));
        assert!(serves("linux/arm64", "linux/arm64/v8"));
        assert!(serves("linux/aarch64", "linux/arm64"));
        assert!(!serves("linux/arm/v6", "linux/arm/v7"));
        assert!(!serves("linux/amd64", "linux/arm64"));
        assert!(!serves("windows/amd64", "linux/amd64"));
    }
}
