//! One build of a cycle: pull the changed external images it watches, build
//! with freshen's labels, record what it was built from, and save state.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::engine::{BuildRequest, Engine, ImageInfo};
use crate::plan::{Current, Observed};
use crate::project::Project;
use crate::reference::ImageRef;
use crate::state::{self, BuildRecord, State};

/// OCI annotation for the base image's reference (OCI image spec, "Pre-Defined Annotation Keys").
pub const LABEL_BASE_NAME: &str = "org.opencontainers.image.base.name";
/// OCI annotation for the base image's digest (OCI image spec, "Pre-Defined Annotation Keys").
pub const LABEL_BASE_DIGEST: &str = "org.opencontainers.image.base.digest";
/// freshen's label: JSON map of every watched image to the digest the image was built from.
pub const LABEL_BUILT_FROM: &str = "io.freshen.built-from";

/// What every build of a cycle shares.
pub struct Builder {
    /// State, updated and saved after each build.
    pub state: Arc<Mutex<State>>,
    /// Where state is saved.
    pub state_path: PathBuf,
    /// The engine.
    pub engine: Arc<dyn Engine>,
    /// The project.
    pub project: Arc<Project>,
    /// This cycle's digests.
    pub current: HashMap<String, Observed>,
    /// The engine's platform, for builds without `platform`.
    pub engine_platform: String,
    /// The last state save error, if any.
    pub save_error: Mutex<Option<String>>,
}

/// Re-seeds a `built_from` map from an image's labels, when freshen built it.
pub fn labels_record(info: &ImageInfo) -> Option<BTreeMap<String, String>> {
    if let Some(map) = info.labels.get(LABEL_BUILT_FROM).and_then(|json| serde_json::from_str(json).ok()) {
        return Some(map);
    }
    let name = ImageRef::parse(info.labels.get(LABEL_BASE_NAME)?).ok()?;
    Some([(name.to_string(), info.labels.get(LABEL_BASE_DIGEST)?.clone())].into())
}

impl Builder {
    /// Pulls what changed, builds `name` with freshen's labels, records and saves state.
    ///
    /// # Errors
    /// The error text, with the build output's last lines when the build failed.
    pub async fn build(&self, name: &str) -> Result<(), String> {
        let a = &self.project.builds[name];
        let b = &a.build;
        let platform = b.platform.clone().unwrap_or_else(|| self.engine_platform.clone());
        let mut built_from = BTreeMap::new();
        for image in &a.watched {
            let d = self.used_digest(image, &platform, b.platform.as_deref()).await.map_err(|e| format!("{image}: {e}"))?;
            built_from.insert(image.to_string(), d);
        }
        let mut labels = b.labels.clone();
        if let Some(base) = a.resolution.as_ref().ok().and_then(|r| r.base.as_ref()) {
            labels.insert(LABEL_BASE_NAME.into(), base.to_string());
            if let Some(d) = base.digest().or_else(|| built_from.get(base.as_str()).map(String::as_str)) {
                labels.insert(LABEL_BASE_DIGEST.into(), d.to_string());
            }
        }
        labels.insert(LABEL_BUILT_FROM.into(), serde_json::to_string(&built_from).expect("map serialises"));
        let request = BuildRequest {
            name: name.to_string(),
            context: b.context.clone(),
            dockerfile: b.dockerfile.clone(),
            tags: b.tags.clone(),
            build_args: b.build_args.clone(),
            target: b.target.clone(),
            platform: b.platform.clone(),
            labels,
            no_cache: b.no_cache,
            secrets: b.secrets.clone(),
        };
        tracing::info!(event = "build_started", build = %name, "building");
        let id = self.engine.build(&request).await.map_err(|e| b.redact(&e.to_string()))?;
        tracing::debug!(event = "image_built", build = %name, image = %id, "built and tagged");
        let mut st = self.state.lock().expect("state lock");
        let record = BuildRecord { built_from, image_id: Some(id), recorded_at: state::now_secs(), origin: "built".into() };
        st.builds.insert(name.to_string(), record);
        if let Err(e) = state::save(&self.state_path, &st) {
            tracing::error!(event = "state_not_saved", error = %e, "state not saved");
            *self.save_error.lock().expect("lock") = Some(e.to_string());
        }
        Ok(())
    }

    /// The digest a build actually uses for `image`: pulls a registry image
    /// whose current digest the engine lacks, then reads it back from
    /// `RepoDigests`; for a multi-platform image, the child digest for `platform`.
    async fn used_digest(&self, image: &ImageRef, platform: &str, pull_platform: Option<&str>) -> Result<String, String> {
        let local = self.engine.inspect(image.as_str()).await.map_err(|e| e.to_string())?;
        if self.project.producer_of(image).is_some() {
            return local.map(|i| i.id).ok_or_else(|| "parent image is missing".into());
        }
        let current: Option<&Current> = match self.current.get(image.as_str()) {
            Some(Observed::Digest(c)) => Some(c),
            _ => None,
        };
        let matches =
            |info: &ImageInfo, c: &Current| info.id == c.digest || info.repo_digest_for(image).as_deref() == Some(c.digest.as_str());
        if let (Some(info), Some(c)) = (&local, current) {
            if matches(info, c) {
                return Ok(c.for_platform(platform).to_string());
            }
        }
        if let Err(e) = self.engine.pull(image, pull_platform).await {
            if local.is_none() {
                return Err(format!("pull failed: {e}"));
            }
            tracing::warn!(event = "pull_failed", image = %image, error = %e, "pull failed; building on the local image");
        }
        let info = self.engine.inspect(image.as_str()).await.map_err(|e| e.to_string())?.ok_or("image missing after pull")?;
        match current {
            Some(c) if matches(&info, c) => Ok(c.for_platform(platform).to_string()),
            // Pushed again since the check: record what was used; the next cycle sees the newer digest.
            _ => Ok(info.repo_digest_for(image).unwrap_or(info.id)),
        }
    }
}
