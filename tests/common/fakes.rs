//! In-memory fakes of freshen's two edges, [`Engine`] and [`Registry`], for
//! fast tests of the cycle and the plan: no engine, no registry, no files.
//! They share one [`Remote`]: what the registry serves, and so what a pull fetches.
//! The real-engine tests stay the proof at the edges.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use freshen::engine::{BuildRequest, Engine, EngineError, ImageInfo, LabelledImage, TestRequest, TestResult};
use freshen::reference::ImageRef;
use freshen::registry::{Head, Registry, RegistryError};

/// What the fake registry serves: image (normalised reference) → manifest digest.
pub type Remote = Arc<Mutex<HashMap<String, String>>>;

/// A registry that answers HEADs from [`Remote`] and counts them; images listed in `failing` answer 503.
#[derive(Default)]
pub struct FakeRegistry {
    /// The images served and their digests.
    pub remote: Remote,
    /// Images whose checks fail, as an unreachable registry's do.
    pub failing: Mutex<Vec<String>>,
    /// HEAD requests seen, by image.
    pub heads: Mutex<Vec<String>>,
}

#[async_trait]
impl Registry for FakeRegistry {
    async fn head(&self, image: &ImageRef) -> Result<Head, RegistryError> {
        self.heads.lock().unwrap().push(image.to_string());
        if self.failing.lock().unwrap().contains(&image.to_string()) {
            return Err(RegistryError::Status { registry: image.registry().into(), image: image.to_string(), status: 503 });
        }
        match self.remote.lock().unwrap().get(image.as_str()) {
            Some(d) => {
                Ok(Head { digest: d.clone(), media_type: "application/vnd.docker.distribution.manifest.v2+json".into(), rate_limit: None })
            }
            None => Err(RegistryError::NotFound { image: image.to_string() }),
        }
    }

    async fn index(&self, image: &ImageRef, _digest: &str) -> Result<BTreeMap<String, String>, RegistryError> {
        Err(RegistryError::Protocol { registry: image.registry().into(), image: image.to_string(), message: "no index here".into() })
    }

    async fn config_digest(&self, image: &ImageRef, _digest: &str) -> Result<String, RegistryError> {
        Err(RegistryError::Protocol { registry: image.registry().into(), image: image.to_string(), message: "no manifests here".into() })
    }
}

/// An engine holding images in memory. A build succeeds unless its name is in
/// `failing`; it makes a new image ID carrying the request's labels and moves every tag to it.
#[derive(Default)]
pub struct FakeEngine {
    /// What a pull fetches.
    pub remote: Remote,
    /// Reference (tag) → image.
    pub images: Mutex<HashMap<String, ImageInfo>>,
    /// Builds asked for, by name, in order.
    pub builds: Mutex<Vec<String>>,
    /// Builds that fail.
    pub failing: Mutex<Vec<String>>,
    /// Pulls asked for, by image.
    pub pulls: Mutex<Vec<String>>,
}

impl FakeEngine {
    /// Puts an image under `tag` with `labels`; returns its ID.
    pub fn put(&self, tag: &str, labels: &[(&str, &str)]) -> String {
        let mut images = self.images.lock().unwrap();
        let id = format!("sha256:{:064x}", images.len() + 1000);
        let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        images.insert(ImageRef::parse(tag).unwrap().to_string(), ImageInfo { id: id.clone(), repo_digests: Vec::new(), labels });
        id
    }
}

#[async_trait]
impl Engine for FakeEngine {
    async fn platform(&self) -> Result<String, EngineError> {
        Ok("linux/amd64".into())
    }

    async fn ping(&self) -> Result<(), EngineError> {
        Ok(())
    }

    fn has_buildkit(&self) -> bool {
        true
    }

    async fn inspect(&self, reference: &str) -> Result<Option<ImageInfo>, EngineError> {
        let images = self.images.lock().unwrap();
        Ok(images.get(reference).cloned().or_else(|| images.values().find(|i| i.id == reference).cloned()))
    }

    async fn pull(&self, image: &ImageRef, _platform: Option<&str>) -> Result<(), EngineError> {
        self.pulls.lock().unwrap().push(image.to_string());
        let digest = self.remote.lock().unwrap().get(image.as_str()).cloned();
        let digest = digest.ok_or_else(|| EngineError::Api(format!("pull {image}: not found")))?;
        let info = ImageInfo {
            id: format!("sha256:pulled-{}", &digest[7..]),
            repo_digests: vec![format!("{}@{digest}", image.name())],
            labels: HashMap::new(),
        };
        self.images.lock().unwrap().insert(image.to_string(), info);
        Ok(())
    }

    async fn push(&self, tag: &ImageRef, _timeout: std::time::Duration) -> Result<String, EngineError> {
        let images = self.images.lock().unwrap();
        let id = images.get(tag.as_str()).map(|i| i.id.clone()).ok_or_else(|| EngineError::Api(format!("no such image: {tag}")))?;
        Ok(format!("sha256:pushed-{}", &id[7..]))
    }

    async fn build(&self, request: &BuildRequest) -> Result<String, EngineError> {
        self.builds.lock().unwrap().push(request.name.clone());
        if self.failing.lock().unwrap().contains(&request.name) {
            return Err(EngineError::Build { message: "RUN false: exit code 1".into(), tail: "Step 2/2 : RUN false".into() });
        }
        let mut images = self.images.lock().unwrap();
        let id = format!("sha256:{:064x}", images.len() + 2000);
        images.insert(id.clone(), ImageInfo { id: id.clone(), repo_digests: Vec::new(), labels: request.labels.clone() });
        Ok(id)
    }

    async fn move_tags(&self, id: &str, tags: &[ImageRef]) -> Result<(), EngineError> {
        let mut images = self.images.lock().unwrap();
        let info = images.get(id).cloned().ok_or_else(|| EngineError::Api(format!("no such image: {id}")))?;
        for tag in tags {
            images.insert(tag.to_string(), info.clone());
        }
        Ok(())
    }

    async fn run_test(&self, _request: &TestRequest) -> Result<TestResult, EngineError> {
        Ok(TestResult::Exited { code: 0, tail: String::new() })
    }

    async fn images_labelled(&self, _labels: &[(&str, &str)]) -> Result<Vec<LabelledImage>, EngineError> {
        Ok(Vec::new())
    }

    async fn remove_image(&self, _id: &str) -> Result<bool, EngineError> {
        Ok(false)
    }

    async fn remove_containers_labelled(&self, _name: &str, _value: &str) -> Result<usize, EngineError> {
        Ok(0)
    }
}
