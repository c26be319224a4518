//! [`Engine`] over bollard: the Docker Engine API through `DOCKER_HOST` or the local socket.

use std::collections::HashMap;

use async_trait::async_trait;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::models::{BuildInfoAux, ImageId};
use bollard::query_parameters::{
    BuildImageOptions, BuilderVersion, CreateImageOptions, PushImageOptions, RemoveImageOptions, TagImageOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use tokio_util::io::ReaderStream;

use super::output::Output;
use super::{container, context, BuildRequest, Builder, Engine, EngineError, ImageInfo, LabelledImage, TestRequest, TestResult};
use crate::config::EngineHost;
use crate::credentials::{self, Credential, Registries};
use crate::reference::ImageRef;

/// A BuildKit session ID no other build of this engine uses: the process ID,
/// the time and a counter.
fn session_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("freshen-{}-{nanos}-{n}", std::process::id())
}

/// bollard's request timeout, in seconds, as its `connect_with_defaults` sets it (`DEFAULT_TIMEOUT`).
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// Whether the engine is reached over TLS, as the docker CLI decides: `DOCKER_TLS_VERIFY` set and not empty.
pub(super) fn tls_verify() -> bool {
    std::env::var("DOCKER_TLS_VERIFY").is_ok_and(|v| !v.is_empty())
}

/// The Docker engine, reached through bollard.
#[derive(Debug, Clone)]
pub struct DockerEngine {
    docker: Docker,
    /// Whether the engine runs BuildKit builds ([`Engine::has_buildkit`]), asked once at connect.
    buildkit: bool,
    /// The engine's `os/arch` ([`Engine::platform`]), asked once at connect.
    platform: String,
    /// Per-registry credentials from the config, tried before the Docker CLI's.
    registries: Registries,
    /// Where the engine answers (`unix://…`, `tcp://…`) and whether over TLS: freshen's own BuildKit session connects there.
    address: (String, bool),
}

/// An engine error in freshen's terms: unreachable, or the engine's own words.
pub(super) fn map_err(e: BollardError) -> EngineError {
    match e {
        BollardError::DockerResponseServerError { status_code, message } => {
            EngineError::Api(format!("engine answered {status_code}: {message}"))
        }
        BollardError::IOError { .. } | BollardError::HyperResponseError { .. } | BollardError::RequestTimeoutError => {
            EngineError::Unreachable(crate::error::chain(&e))
        }
        other => EngineError::Api(crate::error::chain(&other)),
    }
}

impl DockerEngine {
    /// Connects as the docker CLI does: `DOCKER_HOST` (`unix://` or `tcp://`),
    /// else `/var/run/docker.sock`; with `DOCKER_TLS_VERIFY` set, TLS with
    /// `ca.pem`, `cert.pem` and `key.pem` from `DOCKER_CERT_PATH` (default
    /// `~/.docker`), as in the docker CLI's "Protect the Docker daemon socket".
    /// Then negotiates the API version with the engine, and reads its platform
    /// and whether it runs BuildKit from one `GET /version`.
    ///
    /// # Errors
    /// [`EngineError::Unreachable`] when the engine does not answer.
    pub async fn connect(registries: Registries) -> Result<Self, EngineError> {
        let tls = tls_verify();
        let certs = std::env::var("DOCKER_CERT_PATH").unwrap_or_else(|_| "~/.docker".into());
        let unreachable = |e: bollard::errors::Error| match tls {
            true => EngineError::Unreachable(format!(
                "{} (DOCKER_TLS_VERIFY is set: ca.pem, cert.pem and key.pem are read from {certs})",
                crate::error::chain(&e)
            )),
            false => EngineError::Unreachable(crate::error::chain(&e)),
        };
        let docker = if tls {
            // reqwest and bollard both use rustls; with more than one crypto provider compiled
            // in, rustls cannot pick one by itself and panics, so freshen names it. An error
            // here means one is installed already, which is all that is needed.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            Docker::connect_with_ssl_defaults()
        } else {
            Docker::connect_with_defaults()
        };
        let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
        Self::negotiate(docker.map_err(unreachable)?, registries, (host, tls), unreachable).await
    }

    /// Connects to the engine at `host` (an entry of `options.engines`): a unix
    /// socket, plain HTTP, or TLS with the entry's CA, client certificate and key.
    /// Then negotiates as [`DockerEngine::connect`] does.
    ///
    /// # Errors
    /// [`EngineError::Unreachable`] when the engine does not answer, its socket does
    /// not exist, or the TLS files cannot be read, with the cause.
    pub async fn connect_to(host: &EngineHost, registries: Registries) -> Result<Self, EngineError> {
        let unreachable = |e: BollardError| EngineError::Unreachable(format!("{host}: {}", crate::error::chain(&e)));
        let docker = match host {
            EngineHost::Unix(path) => {
                Docker::connect_with_unix(&path.to_string_lossy(), REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
            }
            EngineHost::Tcp { address, tls: Some(tls) } => {
                // As in connect: rustls needs its crypto provider named.
                let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
                Docker::connect_with_ssl(
                    address,
                    &tls.key_file,
                    &tls.cert_file,
                    &tls.ca_file,
                    REQUEST_TIMEOUT_SECS,
                    bollard::API_DEFAULT_VERSION,
                )
            }
            EngineHost::Tcp { address, tls: None } => {
                Docker::connect_with_http(address, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
            }
        };
        let address = match host {
            EngineHost::Unix(path) => (format!("unix://{}", path.display()), false),
            EngineHost::Tcp { address, tls } => (format!("tcp://{address}"), tls.is_some()),
        };
        Self::negotiate(docker.map_err(unreachable)?, registries, address, unreachable).await
    }

    /// Negotiates the API version with the engine, and reads its platform and
    /// whether it runs BuildKit from one `GET /version`.
    async fn negotiate(
        docker: Docker,
        registries: Registries,
        address: (String, bool),
        unreachable: impl Fn(BollardError) -> EngineError,
    ) -> Result<Self, EngineError> {
        let docker = docker.negotiate_version().await.map_err(&unreachable)?;
        let version = docker.version().await.map_err(&unreachable)?;
        let api = version
            .api_version
            .as_deref()
            .and_then(|v| v.split_once('.'))
            .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)));
        let buildkit = version.os.as_deref() == Some("linux") && api.is_some_and(|v| v >= (1, 39));
        let platform = format!("{}/{}", version.os.unwrap_or_else(|| "linux".into()), version.arch.unwrap_or_else(|| "amd64".into()));
        Ok(DockerEngine { docker, buildkit, platform, registries, address })
    }
}

impl DockerEngine {
    /// Credentials for `registry` in the form the Engine API's `X-Registry-Auth` takes.
    fn credentials_for(&self, registry: &str) -> Option<DockerCredentials> {
        let c = credentials::lookup(&self.registries, registry)?;
        let serveraddress = Some(credentials::server_address(registry));
        Some(match c {
            Credential::IdentityToken(t) => {
                DockerCredentials { identitytoken: Some(t.expose().to_string()), serveraddress, ..Default::default() }
            }
            Credential::Basic { username, password } => DockerCredentials {
                username: Some(username),
                password: Some(password.expose().to_string()),
                serveraddress,
                ..Default::default()
            },
        })
    }
}

impl DockerEngine {
    async fn tag(&self, id: &str, tag: &ImageRef) -> Result<(), EngineError> {
        let options = TagImageOptions { repo: Some(tag.name()), tag: tag.tag().map(str::to_string) };
        self.docker.tag_image(id, Some(options)).await.map_err(map_err)
    }
}

#[async_trait]
impl Engine for DockerEngine {
    fn has_buildkit(&self) -> bool {
        self.buildkit
    }

    async fn platform(&self) -> Result<String, EngineError> {
        Ok(self.platform.clone())
    }

    async fn ping(&self) -> Result<(), EngineError> {
        self.docker.ping().await.map(drop).map_err(map_err)
    }

    async fn inspect(&self, reference: &str) -> Result<Option<ImageInfo>, EngineError> {
        match self.docker.inspect_image(reference).await {
            Ok(i) => Ok(Some(ImageInfo {
                id: i.id.unwrap_or_default(),
                repo_digests: i.repo_digests.unwrap_or_default(),
                labels: i.config.and_then(|c| c.labels).unwrap_or_default(),
            })),
            Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn pull(&self, image: &ImageRef, platform: Option<&str>) -> Result<(), EngineError> {
        let options = CreateImageOptions {
            from_image: Some(image.name()),
            tag: Some(image.manifest_reference().to_string()),
            platform: platform.unwrap_or_default().to_string(),
            ..Default::default()
        };
        let mut stream = self.docker.create_image(Some(options), None, self.credentials_for(image.registry()));
        while let Some(item) = stream.next().await {
            let info = item.map_err(map_err)?;
            if let Some(detail) = info.error_detail {
                return Err(EngineError::Api(format!("pull {image}: {}", detail.message.unwrap_or_default())));
            }
        }
        Ok(())
    }

    async fn push(&self, tag: &ImageRef, timeout: std::time::Duration) -> Result<String, EngineError> {
        let options = PushImageOptions { tag: tag.tag().map(str::to_string), ..Default::default() };
        let mut stream = self.docker.push_image(&tag.name(), Some(options), self.credentials_for(tag.registry()));
        let mut digest = None;
        let mut last = String::new();
        let deadline = tokio::time::Instant::from(crate::deadline::after(timeout));
        loop {
            let item = match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(_) => {
                    let after = humantime::format_duration(timeout);
                    return Err(EngineError::Api(format!("no end within {after} (push_timeout); the engine's last status: {last}")));
                }
            };
            let info = match item {
                Ok(i) => i,
                Err(BollardError::DockerStreamError { error }) => return Err(EngineError::Api(error)),
                Err(e) => return Err(map_err(e)),
            };
            if let Some(detail) = info.error_detail {
                return Err(EngineError::Api(detail.message.unwrap_or_default()));
            }
            // moby distribution/push_v2.go: "%s: digest: %s size: %d".
            let status = info.status.unwrap_or_default();
            if !status.is_empty() {
                last.clone_from(&status);
            }
            if let Some((_, rest)) = status.split_once(": digest: ") {
                digest = rest.split_whitespace().next().map(str::to_string);
            }
        }
        digest.ok_or_else(|| EngineError::Api(format!("the engine reported no digest for the push of {tag}")))
    }

    async fn build(&self, request: &BuildRequest) -> Result<String, EngineError> {
        let (ctx, dir, df) = (request.context.clone(), request.context.clone(), request.dockerfile.clone());
        let classic = request.builder == Builder::Classic;
        let (file, dockerfile_name) = tokio::task::spawn_blocking(move || context::archive(&ctx, &df, classic))
            .await
            .map_err(|e| EngineError::Context { path: dir, message: e.to_string() })??;
        let body = bollard::body_try_stream(ReaderStream::new(tokio::fs::File::from_std(file)));
        // The build is left untagged; the caller moves all tags afterwards, together (see `move_tags`).
        let buildkit = request.builder == Builder::BuildKit;
        let options = BuildImageOptions {
            dockerfile: dockerfile_name,
            t: None,
            rm: true,
            forcerm: true,
            nocache: request.no_cache,
            buildargs: Some(request.build_args.clone()),
            labels: Some(request.labels.clone()),
            target: request.target.clone().unwrap_or_default(),
            platform: request.platform.clone().unwrap_or_default(),
            version: if buildkit { BuilderVersion::BuilderBuildKit } else { BuilderVersion::BuilderV1 },
            // BuildKit asks the session for registry credentials; bollard serves them there.
            session: buildkit.then(session_id),
            ..Default::default()
        };
        // Classic: `X-Registry-Config` for every registry a tag or a base is on. BuildKit: the
        // same map, served by the session's auth provider under the host BuildKit asks for.
        let registries = request.tags.iter().chain(&request.images);
        let creds: HashMap<String, DockerCredentials> = registries
            .filter_map(|i| {
                let key = if buildkit { i.api_host().to_string() } else { i.registry().to_string() };
                self.credentials_for(i.registry()).map(|c| (key, c))
            })
            .collect();
        // Secrets need freshen's own session, opened before bollard's (see `session`); it lives
        // until this function returns, that is until the build's stream has ended or is dropped.
        let _session = match (&options.session, request.secrets.is_empty()) {
            (Some(id), false) => {
                Some(super::session::open(id, (&self.address.0, self.address.1), creds.clone(), request.secrets.clone()).await?)
            }
            _ => None,
        };
        let mut stream = self.docker.build_image(options, Some(creds), Some(body));
        let mut out = Output::new(&request.name, &request.redactor, request.log.as_deref(), Some(request.builder));
        let mut image_id = None;
        // Deadlines: the whole build, and silence between two messages. Returning drops the
        // stream, which closes the connection: the engine then cancels the build.
        let at = |d| tokio::time::Instant::from(crate::deadline::after(d));
        let deadline = at(request.timeout);
        loop {
            let item = match tokio::time::timeout_at(deadline.min(at(request.idle_timeout)), stream.next()).await {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(_) => {
                    let idle = tokio::time::Instant::now() < deadline;
                    let after = if idle { request.idle_timeout } else { request.timeout };
                    tracing::warn!(event = "build_timed_out", build = %request.name, idle, after = %humantime::format_duration(after), "build deadline passed; cancelling it on the engine");
                    return Err(EngineError::TimedOut { after, idle, tail: out.tail() });
                }
            };
            let info = match item {
                Ok(i) => i,
                Err(BollardError::DockerStreamError { error }) => return Err(out.failed(error)),
                Err(e) => return Err(map_err(e)),
            };
            out.classic(info.stream.as_deref().unwrap_or_default());
            if let Some(detail) = info.error_detail {
                return Err(out.failed(detail.message.unwrap_or_default()));
            }
            match info.aux {
                Some(BuildInfoAux::BuildKit(status)) => out.buildkit(&status),
                Some(BuildInfoAux::Default(ImageId { id: Some(id) })) => image_id = Some(id),
                _ => {}
            }
        }
        out.finish();
        // Engines that send no `aux` ID still print the classic builder's "Successfully built <id>".
        let short = out.tail_lines().rev().rev().find_map(|l| l.strip_prefix("Successfully built ")).map(|s| s.trim().to_string());
        let id = match (image_id, short) {
            (Some(id), _) => id,
            (None, Some(short)) => self.inspect(&short).await?.map(|i| i.id).unwrap_or(short),
            (None, None) => return Err(out.failed("the engine reported no image ID".into())),
        };
        Ok(id)
    }

    // If one tag fails, the tags already moved go back to the images they pointed to
    // before, or are removed where there was none.
    async fn move_tags(&self, id: &str, tags: &[ImageRef]) -> Result<(), EngineError> {
        let mut previous = Vec::with_capacity(tags.len());
        for tag in tags {
            previous.push(self.inspect(tag.as_str()).await?.map(|i| i.id));
        }
        for (k, tag) in tags.iter().enumerate() {
            if let Err(e) = self.tag(id, tag).await {
                for (moved, prev) in tags[..k].iter().zip(&previous) {
                    let undo = match prev {
                        Some(p) => self.tag(p, moved).await,
                        None => self
                            .docker
                            .remove_image(moved.as_str(), Some(RemoveImageOptions { noprune: true, ..Default::default() }), None)
                            .await
                            .map(drop)
                            .map_err(map_err),
                    };
                    if let Err(u) = undo {
                        tracing::error!(event = "tag_restore_failed", tag = %moved, error = %u, "could not put a tag back after a failed tagging; the next cycle rebuilds and retags");
                    }
                }
                return Err(EngineError::Api(format!("tagging {tag} failed, no tag was moved: {e}")));
            }
        }
        Ok(())
    }

    async fn run_test(&self, request: &TestRequest) -> Result<TestResult, EngineError> {
        container::run_test(&self.docker, request).await
    }

    async fn images_labelled(&self, labels: &[(&str, &str)]) -> Result<Vec<LabelledImage>, EngineError> {
        container::images_labelled(&self.docker, labels).await
    }

    async fn remove_image(&self, id: &str) -> Result<bool, EngineError> {
        container::remove_image(&self.docker, id).await
    }

    async fn remove_containers_labelled(&self, name: &str, value: &str) -> Result<usize, EngineError> {
        container::remove_containers_labelled(&self.docker, name, value).await
    }
}
