//! freshen's own BuildKit session, for builds with `secrets`.
//!
//! BuildKit reads the value of `RUN --mount=type=secret,id=<id>` from a
//! secrets provider on the build's session: `POST /session` on the engine, an
//! HTTP upgrade to h2c after which freshen is the gRPC server and BuildKit the
//! client (moby `api/server/router/session`; BuildKit `session/manager.go`).
//!
//! Why freshen serves it itself rather than through bollard: bollard 0.21.1
//! opens a session for every BuildKit build but serves only registry
//! credentials on it, and its session driver and providers are crate-private
//! (its unreleased main branch adds secrets to `build_image`). So for a build
//! with secrets freshen opens the session first and serves credentials,
//! secrets and health on it, with the service types of bollard-buildkit-proto
//! and tonic. BuildKit's session manager registers a session before it
//! serves the next `POST /session` (it holds its lock from the 101 answer to
//! the registration), so bollard's own session for the same ID, opened after,
//! is refused ("session … already exists"; bollard ignores its session's end)
//! and BuildKit asks this one.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::task::{Context, Poll};

use bollard::auth::DockerCredentials;
use bollard_buildkit_proto::moby::buildkit::secrets::v1::secrets_server::{Secrets, SecretsServer};
use bollard_buildkit_proto::moby::buildkit::secrets::v1::{GetSecretRequest, GetSecretResponse};
use bollard_buildkit_proto::moby::filesync::v1::auth_server::{Auth, AuthServer};
use bollard_buildkit_proto::moby::filesync::v1::{
    CredentialsRequest, CredentialsResponse, FetchTokenRequest, FetchTokenResponse, GetTokenAuthorityRequest, GetTokenAuthorityResponse,
    VerifyTokenAuthorityRequest, VerifyTokenAuthorityResponse,
};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::{Request, Response, Status};

use super::EngineError;
use crate::config::SecretValue;

/// The gRPC methods this session serves, announced in `X-Docker-Expose-Session-Grpc-Method`
/// (BuildKit asks a session only for what it announced; health is always asked).
const METHODS: [&str; 2] = ["/moby.filesync.v1.Auth/Credentials", "/moby.buildkit.secrets.v1.Secrets/GetSecret"];

/// An open session; dropping it closes the connection, which ends the session on the engine.
pub struct Session {
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Registry credentials by host, as BuildKit's auth provider asks for them (`CredentialsRequest.host`).
struct Credentials(HashMap<String, DockerCredentials>);

#[tonic::async_trait]
impl Auth for Credentials {
    async fn credentials(&self, request: Request<CredentialsRequest>) -> Result<Response<CredentialsResponse>, Status> {
        let found = self.0.get(&request.get_ref().host);
        // An identity token goes as the secret with no username (docker/cli's session auth provider).
        let answer = match found {
            Some(DockerCredentials { identitytoken: Some(t), .. }) => CredentialsResponse { username: String::new(), secret: t.clone() },
            Some(DockerCredentials { username: Some(u), password: Some(p), .. }) => {
                CredentialsResponse { username: u.clone(), secret: p.clone() }
            }
            _ => CredentialsResponse::default(),
        };
        Ok(Response::new(answer))
    }

    async fn fetch_token(&self, _: Request<FetchTokenRequest>) -> Result<Response<FetchTokenResponse>, Status> {
        Err(Status::unimplemented("not announced: BuildKit fetches tokens itself with Credentials"))
    }

    async fn get_token_authority(&self, _: Request<GetTokenAuthorityRequest>) -> Result<Response<GetTokenAuthorityResponse>, Status> {
        Err(Status::unimplemented("not announced"))
    }

    async fn verify_token_authority(
        &self,
        _: Request<VerifyTokenAuthorityRequest>,
    ) -> Result<Response<VerifyTokenAuthorityResponse>, Status> {
        Err(Status::unimplemented("not announced"))
    }
}

/// The build's secrets by ID.
struct SecretStore(BTreeMap<String, SecretValue>);

#[tonic::async_trait]
impl Secrets for SecretStore {
    async fn get_secret(&self, request: Request<GetSecretRequest>) -> Result<Response<GetSecretResponse>, Status> {
        let id = &request.get_ref().id;
        match self.0.get(id) {
            Some(v) => Ok(Response::new(GetSecretResponse { data: v.expose().to_vec() })),
            // BuildKit reports this in the build's error, with the ID: the Dockerfile asks for a secret the config lacks.
            None => Err(Status::not_found(format!("secret {id} is not in this build's \"secrets\" in the freshen config"))),
        }
    }
}

/// The upgraded connection, as tonic's server takes one.
struct Conn(TokioIo<hyper::upgrade::Upgraded>);

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Opens session `id` on the engine at `host` (`unix://` or plain `tcp://`, as
/// `DOCKER_HOST` writes it; `tls` when it is reached over TLS) and serves
/// `credentials` (by registry host) and `secrets` (by ID) on it until the
/// [`Session`] is dropped.
///
/// # Errors
/// [`EngineError::Unreachable`] when the engine cannot be reached;
/// [`EngineError::Api`] when it refuses the upgrade, or `host` is an
/// engine freshen cannot open a session to (TLS, ssh).
pub async fn open(
    id: &str,
    (host, tls): (&str, bool),
    credentials: HashMap<String, DockerCredentials>,
    secrets: BTreeMap<String, SecretValue>,
) -> Result<Session, EngineError> {
    let unreachable = |e: std::io::Error| EngineError::Unreachable(format!("{host}: {e}"));
    let upgraded = match (host.split_once("://"), tls) {
        (Some(("unix", path)), _) => upgrade(tokio::net::UnixStream::connect(path).await.map_err(unreachable)?, id).await?,
        (Some(("tcp", addr)), false) => upgrade(tokio::net::TcpStream::connect(addr).await.map_err(unreachable)?, id).await?,
        _ => {
            return Err(EngineError::Api(format!(
                "a build with secrets needs a BuildKit session, which freshen opens to an engine at unix:// or plain tcp:// only; the engine is {host}{}",
                if tls { " over TLS" } else { "" }
            )))
        }
    };
    let (_, health) = tonic_health::server::health_reporter();
    let server = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(AuthServer::new(Credentials(credentials)))
        .add_service(SecretsServer::new(SecretStore(secrets)))
        .serve_with_incoming(futures_util::stream::iter([Ok::<_, std::io::Error>(Conn(TokioIo::new(upgraded)))]));
    let server = tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::debug!(event = "session_ended", error = %e, "BuildKit session connection ended");
        }
    });
    Ok(Session { server })
}

/// `POST /session` with an h2c upgrade over `stream`; returns the upgraded connection once the engine answered 101.
async fn upgrade<S>(stream: S, id: &str) -> Result<hyper::upgrade::Upgraded, EngineError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let api = |e: hyper::Error| EngineError::Api(format!("opening a BuildKit session: {e}"));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(api)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(event = "session_ended", error = %e, "BuildKit session connection ended");
        }
    });
    let mut request = hyper::Request::post("/session")
        .header("Host", "docker")
        .header("Connection", "Upgrade")
        .header("Upgrade", "h2c")
        .header("X-Docker-Expose-Session-Uuid", id)
        .header("X-Docker-Expose-Session-Name", "freshen");
    for m in METHODS {
        request = request.header("X-Docker-Expose-Session-Grpc-Method", m);
    }
    let request = request.body(http_body_util::Empty::<bytes::Bytes>::new()).expect("static request");
    let response = sender.send_request(request).await.map_err(api)?;
    if response.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
        return Err(EngineError::Api(format!("the engine answered {} to POST /session, not 101", response.status())));
    }
    hyper::upgrade::on(response).await.map_err(api)
}
