//! The engine's containers and image housekeeping, for the steps after a
//! build: the test gate's container, and the removal of a build's previous images.

use std::collections::HashMap;

use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, KillContainerOptions, ListContainersOptions, ListImagesOptions, LogsOptions, RemoveContainerOptions,
    RemoveImageOptions, StartContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;

use super::docker::map_err;
use super::output::Output;
use super::{EngineError, LabelledImage, TestRequest, TestResult};

/// Removes a container when dropped, so that a test gate's container goes
/// even when its build is cancelled mid-test (the task dropped at the end of
/// `shutdown_grace`). A `kill -9` of freshen leaves it, labelled: the next
/// start removes it ([`super::Engine::remove_containers_labelled`]).
struct RemoveOnDrop {
    docker: Docker,
    id: String,
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let (docker, id) = (self.docker.clone(), std::mem::take(&mut self.id));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let options = RemoveContainerOptions { force: true, v: true, ..Default::default() };
                if let Err(e) = docker.remove_container(&id, Some(options)).await {
                    tracing::warn!(event = "test_container_not_removed", container = %id, error = %map_err(e), "could not remove a test gate's container; the next start removes it");
                }
            });
        }
    }
}

/// Runs `request`'s test gate on `docker`: create, start, follow the output
/// until the container stops (or the timeout kills it), read the exit code, remove.
pub(super) async fn run_test(docker: &Docker, request: &TestRequest) -> Result<TestResult, EngineError> {
    let gate = &request.gate;
    let body = ContainerCreateBody {
        image: Some(request.image.clone()),
        cmd: Some(gate.command.clone()),
        env: Some(gate.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(request.labels.clone()),
        host_config: Some(HostConfig { network_mode: Some(gate.network.clone()), ..Default::default() }),
        ..Default::default()
    };
    let created = docker.create_container(None::<CreateContainerOptions>, body).await.map_err(map_err)?;
    let container = RemoveOnDrop { docker: docker.clone(), id: created.id };
    let id = container.id.clone();
    docker.start_container(&id, None::<StartContainerOptions>).await.map_err(map_err)?;
    tracing::info!(event = "test_started", build = %request.name, container = %id, "test gate running");
    let mut out = Output::new(&request.name, &request.redactor, request.log.as_deref(), None);
    let follow = async {
        let options = LogsOptions { follow: true, stdout: true, stderr: true, ..Default::default() };
        let mut logs = docker.logs(&id, Some(options));
        while let Some(chunk) = logs.next().await {
            match chunk {
                Ok(o) => out.classic(&String::from_utf8_lossy(&o.into_bytes())),
                Err(e) => return Err(map_err(e)),
            }
        }
        let mut wait = docker.wait_container(&id, Some(WaitContainerOptions::default()));
        match wait.next().await {
            Some(Ok(r)) => Ok(r.status_code),
            Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(map_err(e)),
            None => Err(EngineError::Api("the engine did not report the test container's exit code".into())),
        }
    };
    let ended = tokio::time::timeout(gate.timeout, follow).await;
    let result = match ended {
        Ok(code) => TestResult::Exited { code: code?, tail: out.tail() },
        Err(_) => {
            let _ = docker.kill_container(&id, Some(KillContainerOptions { signal: "KILL".into() })).await;
            TestResult::TimedOut { tail: out.tail() }
        }
    };
    drop(container);
    Ok(result)
}

/// Local images carrying every label of `labels`, with their creation time and tags.
pub(super) async fn images_labelled(docker: &Docker, labels: &[(&str, &str)]) -> Result<Vec<LabelledImage>, EngineError> {
    let filter = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    // `all`: an untagged image with a child image (one built FROM it) is listed too.
    let options = ListImagesOptions { all: true, filters: Some(HashMap::from([("label".to_string(), filter)])), ..Default::default() };
    let images = docker.list_images(Some(options)).await.map_err(map_err)?;
    Ok(images
        .into_iter()
        .map(|i| LabelledImage { id: i.id, created: i.created, tags: i.repo_tags.into_iter().filter(|t| t != "<none>:<none>").collect() })
        .collect())
}

/// Removes image `id` unless the engine says it is in use (409).
pub(super) async fn remove_image(docker: &Docker, id: &str) -> Result<bool, EngineError> {
    match docker.remove_image(id, None::<RemoveImageOptions>, None).await {
        Ok(_) => Ok(true),
        Err(BollardError::DockerResponseServerError { status_code: 409, message }) => {
            tracing::debug!(event = "image_in_use", image = %id, reason = %message, "kept: in use");
            Ok(false)
        }
        Err(e) => Err(map_err(e)),
    }
}

/// Removes every container with label `name=value`, forced; returns how many.
pub(super) async fn remove_containers_labelled(docker: &Docker, name: &str, value: &str) -> Result<usize, EngineError> {
    let filters = HashMap::from([("label".to_string(), vec![format!("{name}={value}")])]);
    let list = docker.list_containers(Some(ListContainersOptions { all: true, filters: Some(filters), ..Default::default() })).await;
    let mut removed = 0;
    for c in list.map_err(map_err)? {
        let Some(id) = c.id else { continue };
        let options = RemoveContainerOptions { force: true, v: true, ..Default::default() };
        match docker.remove_container(&id, Some(options)).await {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(event = "test_container_not_removed", container = %id, error = %map_err(e), "could not remove a test gate's container")
            }
        }
    }
    Ok(removed)
}
