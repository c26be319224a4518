//! A test-only token server for the registry's bearer-token authentication
//! (Docker "Token Authentication Specification" and "Token Authentication
//! Implementation": `GET <realm>?service=…&scope=repository:<name>:<actions>`
//! answers `{"token": "<JWT>"}`).
//!
//! Tokens are ES256 JWTs (jsonwebtoken) whose `x5c` header carries a
//! self-signed certificate (rcgen); the registry trusts that certificate
//! through `auth.token.rootcertbundle`, as distribution's
//! `registry/auth/token` verifies an `x5c` chain. Only requests with the
//! configured basic credentials get a token; others get 401.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde_json::json;

use super::TcpServer;

const SERVICE: &str = "freshen-test-registry";
const ISSUER: &str = "freshen-test-issuer";

/// One request the token server answered.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// The `scope` query parameters.
    pub scopes: Vec<String>,
    /// The `service` query parameter.
    pub service: Option<String>,
    /// True when the basic credentials matched and a token was issued.
    pub granted: bool,
}

#[derive(Default)]
struct Shared {
    requests: Vec<TokenRequest>,
    issued: Vec<String>,
}

/// The token server; stops on drop.
pub struct TokenServer {
    /// `http://127.0.0.1:PORT/token`.
    pub realm: String,
    cert: PathBuf,
    shared: Arc<Mutex<Shared>>,
    _server: TcpServer,
}

struct Signer {
    key: jsonwebtoken::EncodingKey,
    x5c: String,
    user: String,
    password: String,
}

impl TokenServer {
    /// Starts a token server granting tokens to `user`/`password`; writes its certificate under `dir`.
    pub fn start(dir: &Path, user: &str, password: &str) -> TokenServer {
        let certified = rcgen::generate_simple_self_signed(vec!["freshen-test-token".to_string()]).unwrap();
        let cert = dir.join("token-cert.pem");
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        let signer = Arc::new(Signer {
            key: jsonwebtoken::EncodingKey::from_ec_der(&certified.signing_key.serialize_der()),
            x5c: base64::engine::general_purpose::STANDARD.encode(certified.cert.der()),
            user: user.into(),
            password: password.into(),
        });
        let shared = Arc::new(Mutex::new(Shared::default()));
        let s = shared.clone();
        let server = TcpServer::start(move |conn| {
            let _ = serve(conn, &signer, &s);
        });
        TokenServer { realm: format!("http://{}/token", server.addr), cert, shared, _server: server }
    }

    /// The registry config's `auth:` section that sends clients here.
    pub fn registry_auth_yaml(&self) -> String {
        format!(
            "auth: {{token: {{realm: \"{}\", service: {SERVICE}, issuer: {ISSUER}, rootcertbundle: {}}}}}\n",
            self.realm,
            self.cert.display()
        )
    }

    /// Requests answered so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.shared.lock().unwrap().requests.clone()
    }

    /// Every token issued so far.
    pub fn issued(&self) -> Vec<String> {
        self.shared.lock().unwrap().issued.clone()
    }
}

fn serve(client: TcpStream, signer: &Signer, shared: &Mutex<Shared>) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let Some((request_line, authorization)) = super::read_request(&mut reader) else { return Ok(()) };
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let url = reqwest::Url::parse(&format!("http://token{target}")).unwrap();
    let scopes: Vec<String> = url.query_pairs().filter(|(k, _)| k == "scope").map(|(_, v)| v.into_owned()).collect();
    let service = url.query_pairs().find(|(k, _)| k == "service").map(|(_, v)| v.into_owned());
    let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", signer.user, signer.password)));
    let granted = authorization == expected;
    let mut client = client;
    let response = if granted {
        let token = sign(signer, &scopes);
        let mut s = shared.lock().unwrap();
        s.issued.push(token.clone());
        s.requests.push(TokenRequest { scopes, service, granted });
        let body = json!({"token": token, "access_token": token, "expires_in": 300}).to_string();
        format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
    } else {
        shared.lock().unwrap().requests.push(TokenRequest { scopes, service, granted });
        "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
    };
    client.write_all(response.as_bytes())
}

/// A JWT granting every requested action (the claim set of distribution's `token.ClaimSet`).
fn sign(signer: &Signer, scopes: &[String]) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let mut parts = s.splitn(3, ':');
            let (kind, rest) = (parts.next()?, parts.collect::<Vec<_>>());
            let (name, actions) = (rest.first()?, rest.get(1)?);
            Some(json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let claims = json!({
        "iss": ISSUER, "sub": signer.user, "aud": SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", rand_suffix()),
        "access": access,
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.x5c = Some(vec![signer.x5c.clone()]);
    jsonwebtoken::encode(&header, &claims, &signer.key).unwrap()
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}
