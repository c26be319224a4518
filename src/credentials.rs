//! Registry credentials and per-registry settings.
//!
//! Credentials come from the config's `registries` section (`username` plus
//! `password_file`; never an inline password) and otherwise from the Docker
//! CLI's `~/.docker/config.json` / `$DOCKER_CONFIG` (`auths`, `credsStore`,
//! `credHelpers`), read by the `docker_credential` crate. Secrets are wrapped in
//! [`Secret`], whose `Debug` and `Display` never show the value, so they cannot
//! reach logs, errors or state by accident.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// A secret: a password or token (`String`, the default), or the bytes of a
/// build's BuildKit secret ([`crate::config::SecretValue`]). Its `Debug` and
/// `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T = String>(T);

impl<T> Secret<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        Secret(value)
    }
}

impl<T: std::ops::Deref> Secret<T> {
    /// The value (`&str`, `&[u8]`), for the one place that sends it.
    pub fn expose(&self) -> &T::Target {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// What a registry login gives: a username and password, or an identity token
/// (docker CLI `config.json`: `identitytoken`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// `username` and `password_file` in the config, or `docker login` with a password.
    Basic {
        /// Sent in HTTP basic auth and to the engine.
        username: String,
        /// Sent with it; never printed.
        password: Secret,
    },
    /// An identity (refresh) token from `docker login` with a token flow; never printed.
    IdentityToken(Secret),
}

/// The user name under which an identity token goes in HTTP basic auth to a
/// token endpoint (docker/cli `configfile`: `tokenUsername = "<token>"`).
const TOKEN_USERNAME: &str = "<token>";

impl Credential {
    /// The (user name, secret) pair for HTTP basic auth: the identity token goes
    /// with docker's `<token>` user name.
    pub fn basic_auth(&self) -> (&str, &str) {
        match self {
            Credential::Basic { username, password } => (username, password.expose()),
            Credential::IdentityToken(t) => (TOKEN_USERNAME, t.expose()),
        }
    }
}

/// Settings for one registry from the config's `registries` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryOptions {
    /// Credential read from `username` and `password_file` at load time.
    pub credential: Option<Credential>,
    /// Reach the registry over plain HTTP.
    pub insecure: bool,
    /// Extra CA certificate (PEM) to trust for this registry.
    pub ca_file: Option<PathBuf>,
}

/// Per-registry settings by registry host (`registry.example.com:5000`, `docker.io`).
pub type Registries = BTreeMap<String, RegistryOptions>;

/// The key Docker Hub's credentials are stored under (docker CLI `registry.IndexServer`).
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Credential for `registry`: the config's first, then the Docker CLI's.
pub fn lookup(registries: &Registries, registry: &str) -> Option<Credential> {
    if let Some(c) = registries.get(registry).and_then(|r| r.credential.clone()) {
        return Some(c);
    }
    let server = if registry == "docker.io" { DOCKER_HUB_KEY } else { registry };
    match docker_credential::get_credential(server).ok()? {
        docker_credential::DockerCredential::UsernamePassword(u, p) => Some(Credential::Basic { username: u, password: Secret::new(p) }),
        docker_credential::DockerCredential::IdentityToken(t) => Some(Credential::IdentityToken(Secret::new(t))),
    }
}

/// The server address to give the engine with a credential for `registry`.
pub fn server_address(registry: &str) -> String {
    if registry == "docker.io" {
        DOCKER_HUB_KEY.to_string()
    } else {
        registry.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let c = Credential::Basic { username: "u".into(), password: Secret::new("hunter2".into()) };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(Secret::new(String::from("x")).to_string(), "***");
    }

    #[test]
    fn config_credentials_come_first() {
        let mut r = Registries::new();
        r.insert(
            "reg.test:5000".into(),
            RegistryOptions {
                credential: Some(Credential::Basic { username: "a".into(), password: Secret::new("b".into()) }),
                ..Default::default()
            },
        );
        assert_eq!(lookup(&r, "reg.test:5000").unwrap().basic_auth(), ("a", "b"));
        assert_eq!(Credential::IdentityToken(Secret::new("t".into())).basic_auth(), ("<token>", "t"));
    }
}
