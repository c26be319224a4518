//! [`Engine`] over bollard: the Docker Engine API through `DOCKER_HOST` or the local socket.

use std::collections::{HashMap, VecDeque};

use async_trait::async_trait;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::query_parameters::{BuildImageOptions, CreateImageOptions, RemoveImageOptions, TagImageOptions};
use bollard::Docker;
use futures_util::StreamExt;
use tokio_util::io::ReaderStream;

use super::lines::Lines;
use super::{context, BuildRequest, Engine, EngineError, ImageInfo};
use crate::credentials::{self, Credential, Registries};
use crate::reference::ImageRef;

/// Lines of build output kept for the error report.
const TAIL_LINES: usize = 30;

/// The Docker engine, reached through bollard.
#[derive(Debug, Clone)]
pub struct DockerEngine {
    docker: Docker,
    /// Per-registry credentials from the config, tried before the Docker CLI's.
    registries: Registries,
}

fn map_err(e: BollardError) -> EngineError {
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
    /// Then negotiates the API version with the engine.
    ///
    /// # Errors
    /// [`EngineError::Unreachable`] when the engine does not answer.
    pub async fn connect(registries: Registries) -> Result<Self, EngineError> {
        let tls = std::env::var("DOCKER_TLS_VERIFY").is_ok_and(|v| !v.is_empty());
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
        let docker = docker.map_err(unreachable)?.negotiate_version().await.map_err(unreachable)?;
        Ok(DockerEngine { docker, registries })
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
    /// Points every tag at `id`, or none: if one tag fails, the tags already
    /// moved are put back on their `previous` images (or removed where there was none).
    async fn move_tags(&self, id: &str, tags: &[ImageRef], previous: &[Option<String>]) -> Result<(), EngineError> {
        for (k, tag) in tags.iter().enumerate() {
            if let Err(e) = self.tag(id, tag).await {
                for (moved, prev) in tags[..k].iter().zip(previous) {
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

    async fn tag(&self, id: &str, tag: &ImageRef) -> Result<(), EngineError> {
        let options = TagImageOptions { repo: Some(tag.name()), tag: tag.tag().map(str::to_string) };
        self.docker.tag_image(id, Some(options)).await.map_err(map_err)
    }
}

#[async_trait]
impl Engine for DockerEngine {
    async fn platform(&self) -> Result<String, EngineError> {
        let v = self.docker.version().await.map_err(map_err)?;
        Ok(format!("{}/{}", v.os.unwrap_or_else(|| "linux".into()), v.arch.unwrap_or_else(|| "amd64".into())))
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

    async fn build(&self, request: &BuildRequest) -> Result<String, EngineError> {
        let (ctx, dir, df) = (request.context.clone(), request.context.clone(), request.dockerfile.clone());
        let (file, dockerfile_name) = tokio::task::spawn_blocking(move || context::archive(&ctx, &df))
            .await
            .map_err(|e| EngineError::Context { path: dir, message: e.to_string() })??;
        let body = bollard::body_try_stream(ReaderStream::new(tokio::fs::File::from_std(file)));
        // The build is left untagged; all tags are moved afterwards, together (see `move_tags`).
        let mut previous = Vec::with_capacity(request.tags.len());
        for tag in &request.tags {
            previous.push(self.inspect(tag.as_str()).await?.map(|i| i.id));
        }
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
            ..Default::default()
        };
        let creds: HashMap<String, DockerCredentials> =
            request.tags.iter().filter_map(|t| self.credentials_for(t.registry()).map(|c| (t.registry().to_string(), c))).collect();
        let mut stream = self.docker.build_image(options, Some(creds), Some(body));
        let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
        let mut lines = Lines::default();
        let keep = |tail: &mut VecDeque<String>, line: String| {
            if line.trim().is_empty() {
                return;
            }
            tracing::debug!(event = "build_output", build = %request.name, "{}", request.redactor.redact(&line));
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        };
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
                    return Err(EngineError::TimedOut { after, idle, tail: Vec::from(tail).join("\n") });
                }
            };
            let info = match item {
                Ok(i) => i,
                Err(BollardError::DockerStreamError { error }) => {
                    return Err(EngineError::Build { message: error, tail: Vec::from(tail).join("\n") });
                }
                Err(e) => return Err(map_err(e)),
            };
            for line in lines.push(info.stream.as_deref().unwrap_or_default()) {
                keep(&mut tail, line);
            }
            if let Some(detail) = info.error_detail {
                return Err(EngineError::Build { message: detail.message.unwrap_or_default(), tail: Vec::from(tail).join("\n") });
            }
            if let Some(id) = info.aux.and_then(|a| a.id) {
                image_id = Some(id);
            }
        }
        if let Some(line) = lines.finish() {
            keep(&mut tail, line);
        }
        // Engines that send no `aux` ID still print the classic builder's "Successfully built <id>".
        let short = tail.iter().rev().find_map(|l| l.strip_prefix("Successfully built ")).map(|s| s.trim().to_string());
        let id = match (image_id, short) {
            (Some(id), _) => id,
            (None, Some(short)) => self.inspect(&short).await?.map(|i| i.id).unwrap_or(short),
            (None, None) => {
                return Err(EngineError::Build { message: "the engine reported no image ID".into(), tail: Vec::from(tail).join("\n") })
            }
        };
        self.move_tags(&id, &request.tags, &previous).await?;
        Ok(id)
    }
}
