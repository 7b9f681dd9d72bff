//! Snapshots, as clients use them directly (containerd's snapshot API).
//! Keys starting with `sha256:` (unpacked layers) and labels under
//! `berth.io/` belong to the agent.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Core;
use super::{blocking, validate_labels, Error, Filter};
use crate::metadata::SnapshotRecord;
use crate::snapshot::{Mount, Usage};

const FILTER_KEYS: &str = "kind, parent, key or label.KEY";

#[derive(Clone)]
pub struct SnapshotService {
    core: Arc<Core>,
}

fn required(field: &str, v: &str) -> Result<(), Error> {
    if v.is_empty() {
        Err(Error::InvalidArgument(format!("{field} is required")))
    } else {
        Ok(())
    }
}

/// A key a client may create, with labels a client may set.
fn client_owned(key: &str, labels: &BTreeMap<String, String>) -> Result<(), Error> {
    required("key", key)?;
    if key.starts_with("sha256:") {
        return Err(Error::InvalidArgument(format!("snapshot keys starting with sha256: are reserved for unpacked layers: {key:?}")));
    }
    validate_labels(labels)
}

impl SnapshotService {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        SnapshotService { core }
    }

    /// The snapshotter's name (`overlayfs`, `native`).
    pub fn snapshotter(&self) -> &'static str {
        self.core.snapshots.snapshotter_name()
    }

    /// A writable snapshot on `parent` (or empty); returns its mounts.
    pub async fn prepare(&self, ns: &str, key: &str, parent: &str, labels: BTreeMap<String, String>) -> Result<Vec<Mount>, Error> {
        client_owned(key, &labels)?;
        let (core, ns, key, parent) = (self.core.clone(), ns.to_owned(), key.to_owned(), parent.to_owned());
        blocking(move || {
            // The parent (an image's layer) cannot be collected while the child is made.
            let _gc = core.images.hold_gc();
            Ok(core.snapshots.prepare(&ns, &key, &parent, labels)?)
        })
        .await
    }

    /// A read-only view of the committed `parent`; returns its mounts.
    pub async fn view(&self, ns: &str, key: &str, parent: &str, labels: BTreeMap<String, String>) -> Result<Vec<Mount>, Error> {
        client_owned(key, &labels)?;
        required("parent", parent)?;
        let (core, ns, key, parent) = (self.core.clone(), ns.to_owned(), key.to_owned(), parent.to_owned());
        blocking(move || {
            let _gc = core.images.hold_gc();
            Ok(core.snapshots.view(&ns, &key, &parent, labels)?)
        })
        .await
    }

    /// Commit the active `key` as `name`.
    pub async fn commit(&self, ns: &str, name: &str, key: &str, labels: BTreeMap<String, String>) -> Result<(), Error> {
        required("name", name)?;
        required("key", key)?;
        client_owned(name, &labels)?;
        let (core, ns, name, key) = (self.core.clone(), ns.to_owned(), name.to_owned(), key.to_owned());
        blocking(move || Ok(core.snapshots.commit(&ns, &name, &key, labels)?)).await
    }

    /// Remove a snapshot without children. An image's unpacked layer goes
    /// with its images (Images.Delete and collection), a container's writable
    /// layer with its container: both are refused here.
    pub async fn remove(&self, ns: &str, key: &str) -> Result<(), Error> {
        required("key", key)?;
        let (core, ns, key) = (self.core.clone(), ns.to_owned(), key.to_owned());
        blocking(move || {
            // Unknown: NotFound, whatever the key looks like.
            let rec = core.snapshots.stat(&ns, &key)?;
            if key.starts_with("sha256:") {
                return Err(Error::FailedPrecondition(format!(
                    "snapshot {key:?} is an unpacked image layer: it goes when no image uses it (remove the images)"
                )));
            }
            if let Some(id) = rec.labels.get(crate::container::LABEL_CONTAINER) {
                if let Ok(c) = core.meta.container(&ns, id) {
                    return Err(Error::FailedPrecondition(format!(
                        "snapshot {key:?} is the writable layer of container {}: remove the container",
                        c.name
                    )));
                }
            }
            Ok(core.snapshots.remove(&ns, &key)?)
        })
        .await
    }

    pub async fn mounts(&self, ns: &str, key: &str) -> Result<Vec<Mount>, Error> {
        let (core, ns, key) = (self.core.clone(), ns.to_owned(), key.to_owned());
        blocking(move || Ok(core.snapshots.mounts(&ns, &key)?)).await
    }

    pub async fn stat(&self, ns: &str, key: &str) -> Result<SnapshotRecord, Error> {
        let (core, ns, key) = (self.core.clone(), ns.to_owned(), key.to_owned());
        blocking(move || Ok(core.snapshots.stat(&ns, &key)?)).await
    }

    pub async fn list(&self, ns: &str, filters: &[String]) -> Result<Vec<SnapshotRecord>, Error> {
        let filters = Filter::parse_all(filters, |k| matches!(k, "kind" | "parent" | "key") || k.starts_with("label."), FILTER_KEYS)?;
        let (core, ns) = (self.core.clone(), ns.to_owned());
        blocking(move || {
            let all = core.snapshots.list(&ns)?;
            Ok(all
                .into_iter()
                .filter(|rec| {
                    filters.iter().all(|f| match f.key.as_str() {
                        "kind" => f.matches(Some(rec.kind.as_str())),
                        "parent" => f.matches(Some(&rec.parent)),
                        "key" => f.matches(Some(&rec.key)),
                        _ => f.matches_label(&rec.labels).unwrap_or(false),
                    })
                })
                .collect())
        })
        .await
    }

    pub async fn usage(&self, ns: &str, key: &str) -> Result<Usage, Error> {
        let (core, ns, key) = (self.core.clone(), ns.to_owned(), key.to_owned());
        blocking(move || Ok(core.snapshots.usage(&ns, &key)?)).await
    }
}
