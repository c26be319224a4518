//! After a build: push its tags (and push again, without building, what a
//! failed push left), and remove its previous images.

use crate::buildlog;
use crate::error::BuildError;
use crate::executor::Failure;
use crate::rebuild::{Rebuild, LABEL_BUILD, LABEL_TAG};
use crate::reference::ImageRef;
use crate::state::BuildRecord;

impl Rebuild {
    /// Pushes every tag of build `name`, in order, and confirms each with a HEAD
    /// of the tag: the registry must answer with the digest the push reported
    /// (OCI distribution spec: HEAD /v2/<name>/manifests/<tag>). Returns
    /// `record` with `pushed` (tag → digest) filled in and `push_pending` cleared.
    /// A push-only job (the plan's `push_pending`) calls this with the stored record.
    ///
    /// # Errors
    /// A [`Failure`] with [`BuildError::Push`] for the first tag whose push fails or
    /// whose HEAD does not confirm it; the tags after it are not pushed. The failure
    /// carries `record` marked `push_pending`, so that the next cycle pushes again.
    pub async fn push(&self, name: &str, mut record: BuildRecord) -> Result<BuildRecord, Failure<BuildRecord>> {
        // The build's tags, then those its tag templates gave this commit (kept in the record for a push-only job).
        let commit_tags = record.commit_tags.iter().filter_map(|t| ImageRef::parse(t).ok());
        let tags: Vec<ImageRef> = self.project.builds[name].build.tags.iter().cloned().chain(commit_tags).collect();
        let log = self.log_of(name);
        record.pushed.clear();
        for tag in &tags {
            match self.push_tag(tag).await {
                Ok(digest) => {
                    tracing::info!(event = "pushed", build = %name, tag = %tag, digest = %digest, "pushed");
                    if let Some(path) = &log {
                        buildlog::append(path, &format!("# pushed {tag} {digest}\n"));
                    }
                    record.pushed.insert(tag.to_string(), digest);
                }
                Err(error) => {
                    let shown = self.project.builds[name].build.redactor().show(&error);
                    tracing::warn!(event = "push_failed", build = %name, tag = %tag, error = %shown, "push failed; the next cycle pushes again without building");
                    if let Some(path) = &log {
                        buildlog::append(path, &format!("# {shown}\n"));
                    }
                    record.push_pending = true;
                    return Err(Failure { error, value: Some(record) });
                }
            }
        }
        record.push_pending = false;
        Ok(record)
    }

    /// Pushes one tag and confirms it; returns the digest the registry stored.
    async fn push_tag(&self, tag: &ImageRef) -> Result<String, BuildError> {
        let failed = |message: String| BuildError::Push { tag: tag.clone(), message };
        let digest = self.engine.push(tag, self.push_timeout).await.map_err(|e| failed(e.to_string()))?;
        match self.registry.head(tag).await {
            Ok(head) if head.digest == digest => Ok(digest),
            Ok(head) => Err(failed(format!("the push reported {digest}, but the registry answers {} for the tag", head.digest))),
            Err(e) => Err(failed(format!("pushed {digest}, but the registry's HEAD of the tag failed: {e}"))),
        }
    }

    /// Removes build `name`'s previous images once its tags have moved to
    /// `current`: of the images carrying freshen's labels for this build (its
    /// name and first tag), all but `current` and the newest `keep_previous`
    /// are removed, unless a tag or a container still uses them (the engine
    /// refuses those, and they stay). Each removal is logged (`image_removed`);
    /// failures are logged, never returned: cleanup never fails a build.
    pub async fn clean(&self, name: &str, current: &str) {
        let Some(first) = self.project.builds[name].build.tags.first() else { return };
        let first = first.to_string();
        let images = match self.engine.images_labelled(&[(LABEL_BUILD, name), (LABEL_TAG, &first)]).await {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(event = "cleanup_failed", build = %name, error = %e, "could not list the build's previous images");
                return;
            }
        };
        let mut previous: Vec<_> = images.into_iter().filter(|i| i.id != current).collect();
        previous.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.id.cmp(&a.id)));
        for image in previous.into_iter().skip(self.keep_previous as usize) {
            if !image.tags.is_empty() {
                tracing::debug!(event = "image_kept", build = %name, image = %image.id, tags = %image.tags.join(", "), "kept: still tagged");
                continue;
            }
            match self.engine.remove_image(&image.id).await {
                Ok(true) => tracing::info!(event = "image_removed", build = %name, image = %image.id, "removed a previous image"),
                Ok(false) => tracing::debug!(event = "image_kept", build = %name, image = %image.id, "kept: in use"),
                Err(e) => {
                    tracing::warn!(event = "cleanup_failed", build = %name, image = %image.id, error = %e, "could not remove a previous image")
                }
            }
        }
    }
}
