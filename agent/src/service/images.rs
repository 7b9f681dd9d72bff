//! Images: list, inspect, name, label, remove, import, export, pull, push.
//! The garbage-collection policy of every image use case is here: what
//! may have left unused content behind is followed by one collection.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};

use super::Core;
use super::{blocking, queued, validate_labels, with_progress, Error, Filter, Update};
use crate::digest::Digest;
use crate::image::import::ImportOptions;
use crate::image::oci::Platform;
use crate::image::{Images, Resolved};
use crate::metadata::ImageRecord;
use crate::registry::{Credentials, PullOptions, PushOptions};

/// An image name with what its content tells (for this machine's platform),
/// when it resolves.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub record: ImageRecord,
    pub config_digest: Option<Digest>,
    /// Bytes of the manifest, config and layers as stored.
    pub size: u64,
    /// The config's `created`, as written there.
    pub config_created: String,
    /// Bytes of the unpacked layers on disk.
    pub unpacked_size: u64,
}

/// An image resolved for one platform: its documents and layers.
pub struct ImageDetail {
    pub info: ImageInfo,
    pub resolved: Resolved,
    pub unpacked: bool,
}

/// What an import named.
#[derive(Debug, Clone)]
pub struct Imported {
    pub images: Vec<ImageInfo>,
    pub bytes_read: u64,
}

/// What a removal removed.
#[derive(Debug, Clone, Default)]
pub struct Removed {
    pub names: Vec<String>,
    pub blobs_removed: u64,
    pub snapshots_removed: u64,
}

const FILTER_KEYS: &str = "name, digest or label.KEY";

/// An error as a log line shows it: what came from outside (names in an
/// archive, a registry's words) with its control characters escaped.
fn shown(e: &impl std::fmt::Display) -> String {
    berth_common::text::printable(&e.to_string()).into_owned()
}

#[derive(Clone)]
pub struct ImageService {
    core: Arc<Core>,
    /// Imports and pulls running at once (`max_transfers`); the rest wait.
    transfers: Arc<Semaphore>,
}

/// `rec` with its resolved details for `platform`.
fn info_for(images: &Images, ns: &str, rec: &ImageRecord, platform: &Platform) -> (ImageInfo, Option<Resolved>) {
    let mut info = ImageInfo { record: rec.clone(), config_digest: None, size: 0, config_created: String::new(), unpacked_size: 0 };
    let resolved = images.resolve(rec, platform).ok();
    if let Some(r) = &resolved {
        info.config_digest = Some(r.manifest.config.digest.clone());
        info.size = r.size();
        info.config_created = r.config.created.clone().unwrap_or_default();
        info.unpacked_size = images.unpacked_size(ns, r).unwrap_or(0);
    }
    (info, resolved)
}

/// An image as the CRI sees one: every name whose image has one config (its id).
#[derive(Debug, Clone)]
pub struct ImageGroup {
    /// The config's digest: the image id.
    pub id: Digest,
    /// The names that are tags (`docker.io/library/busybox:latest`).
    pub tags: Vec<String>,
    /// `repository@manifest-digest` of every name.
    pub digests: Vec<String>,
    pub size: u64,
    /// Bytes of its unpacked layers on disk.
    pub unpacked_size: u64,
    /// The config's `User` (`1000`, `app`, `1000:1000`, or empty).
    pub user: String,
    /// Every name of the id, as recorded.
    pub names: Vec<String>,
}

/// Where images are kept on disk, and how much of it the images of a namespace use.
#[derive(Debug, Clone)]
pub struct ImageFs {
    /// The snapshots' directory.
    pub mountpoint: std::path::PathBuf,
    /// Content and unpacked layers of the namespace's images.
    pub used_bytes: u64,
}

/// The images of `records` grouped by their id (this platform's config), in id order.
fn groups_of(images: &Images, ns: &str, records: &[ImageRecord]) -> Vec<ImageGroup> {
    let mut groups: BTreeMap<String, ImageGroup> = BTreeMap::new();
    for rec in records {
        let (info, resolved) = info_for(images, ns, rec, &Platform::default_platform());
        let (Some(id), Some(resolved)) = (info.config_digest, resolved) else { continue };
        let g = groups.entry(id.to_string()).or_insert_with(|| {
            let config: serde_json::Value = serde_json::from_slice(&resolved.config_json).unwrap_or_default();
            let user = config.pointer("/config/User").and_then(|u| u.as_str()).unwrap_or_default().to_owned();
            ImageGroup {
                id: id.clone(),
                tags: Vec::new(),
                digests: Vec::new(),
                size: info.size,
                unpacked_size: info.unpacked_size,
                user,
                names: Vec::new(),
            }
        });
        g.names.push(rec.name.clone());
        let Ok(r) = crate::image::reference::Reference::parse(&rec.name) else { continue };
        if r.digest.is_none() {
            g.tags.push(rec.name.clone());
        }
        let digest = format!("{}@{}", r.repository(), rec.target.digest);
        if !g.digests.contains(&digest) {
            g.digests.push(digest);
        }
    }
    groups.into_values().collect()
}

fn info(images: &Images, ns: &str, rec: &ImageRecord) -> ImageInfo {
    info_for(images, ns, rec, &Platform::default_platform()).0
}

impl ImageService {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        let transfers = Arc::new(Semaphore::new(core.config.limits.max_transfers.max(1)));
        ImageService { core, transfers }
    }

    /// Collect unused content when `needed`, or when an earlier collection
    /// spared blobs that a transfer held and no transfer runs any more.
    fn collect_after(images: &Images, needed: bool, after: &str) {
        if images.take_pending_gc() || needed {
            if let Err(e) = images.gc() {
                tracing::warn!(error = %e, after, "garbage collection failed");
            }
        }
    }

    fn created(&self, ns: &str, rec: &ImageRecord) {
        self.core.events.publish(ns, "/images/create", &rec.name, &[("digest", rec.target.digest.to_string())]);
    }

    pub async fn list(&self, ns: &str, filters: &[String]) -> Result<Vec<ImageInfo>, Error> {
        let filters = Filter::parse_all(filters, |k| matches!(k, "name" | "digest") || k.starts_with("label."), FILTER_KEYS)?;
        let (core, ns) = (self.core.clone(), ns.to_owned());
        blocking(move || {
            let mut out = Vec::new();
            for rec in core.meta.images(&ns)? {
                let info = info(&core.images, &ns, &rec);
                let keep = filters.iter().all(|f| match f.key.as_str() {
                    "name" => f.matches(Some(&info.record.name)),
                    "digest" => {
                        let config = info.config_digest.as_ref().map(Digest::as_str);
                        f.matches(Some(info.record.target.digest.as_str())) || config.is_some_and(|c| f.matches(Some(c)))
                    }
                    _ => f.matches_label(&info.record.labels).unwrap_or(false),
                });
                if keep {
                    out.push(info);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Every image of `ns` as the CRI sees them (grouped by id).
    pub async fn groups(&self, ns: &str) -> Result<Vec<ImageGroup>, Error> {
        let (core, ns) = (self.core.clone(), ns.to_owned());
        blocking(move || Ok(groups_of(&core.images, &ns, &core.meta.images(&ns)?))).await
    }

    /// Remove the image `name` stands for, with every name of its id: the CRI's RemoveImage.
    /// One that is not there is removed already.
    pub async fn remove_image(&self, ns: &str, name: &str) -> Result<(), Error> {
        let Some(group) = self.group(ns, name).await? else { return Ok(()) };
        match self.remove(ns, group.id.as_str(), true).await {
            Err(Error::Image(crate::image::ImageError::NotFound(_))) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// The disk images take in `ns`.
    pub async fn image_fs(&self, ns: &str) -> Result<ImageFs, Error> {
        let used_bytes = self.groups(ns).await?.iter().map(|g| g.size + g.unpacked_size).sum();
        Ok(ImageFs { mountpoint: self.core.config.root.join("snapshots"), used_bytes })
    }

    /// The image `name` (a name, `repo@digest`, an id or a unique id prefix) as the CRI sees
    /// it, with every name of its id; None when there is none.
    pub async fn group(&self, ns: &str, name: &str) -> Result<Option<ImageGroup>, Error> {
        let (core, ns, name) = (self.core.clone(), ns.to_owned(), name.to_owned());
        blocking(move || {
            let found = match core.images.find(&ns, &name) {
                Ok(found) => found,
                Err(crate::image::ImageError::NotFound(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            // Every name of the image's id: one pass over the namespace's images.
            let all = groups_of(&core.images, &ns, &core.meta.images(&ns)?);
            Ok(all.into_iter().find(|g| found.iter().any(|r| g.names.contains(&r.name))))
        })
        .await
    }

    pub async fn get(&self, ns: &str, name: &str) -> Result<ImageInfo, Error> {
        let (core, ns, name) = (self.core.clone(), ns.to_owned(), name.to_owned());
        blocking(move || Ok(info(&core.images, &ns, &core.images.find_one(&ns, &name)?))).await
    }

    /// The image as seen for `platform`: its manifest, config and layers.
    pub async fn inspect(&self, ns: &str, name: &str, platform: Platform) -> Result<ImageDetail, Error> {
        let (core, ns, name) = (self.core.clone(), ns.to_owned(), name.to_owned());
        blocking(move || {
            let rec = core.images.find_one(&ns, &name)?;
            let resolved = core.images.resolve(&rec, &platform)?;
            let (info, _) = info_for(&core.images, &ns, &rec, &platform);
            let unpacked = core.images.is_unpacked(&ns, &resolved);
            Ok(ImageDetail { info, resolved, unpacked })
        })
        .await
    }

    pub async fn tag(&self, ns: &str, source: &str, target: &str, force: bool) -> Result<ImageInfo, Error> {
        let (svc, ns, source, target) = (self.clone(), ns.to_owned(), source.to_owned(), target.to_owned());
        blocking(move || {
            let images = &svc.core.images;
            let (rec, moved) = images.tag(&ns, &source, &target, force)?;
            // A name moved by force: the image it named before may be used by nothing now.
            Self::collect_after(images, moved, "tag");
            svc.created(&ns, &rec);
            Ok(info(images, &ns, &rec))
        })
        .await
    }

    pub async fn update_labels(&self, ns: &str, name: &str, labels: BTreeMap<String, String>) -> Result<ImageInfo, Error> {
        validate_labels(&labels)?;
        let (core, ns, name) = (self.core.clone(), ns.to_owned(), name.to_owned());
        blocking(move || {
            let rec = core.images.update_labels(&ns, &name, labels)?;
            core.events.publish(&ns, "/images/update", &rec.name, &[]);
            Ok(info(&core.images, &ns, &rec))
        })
        .await
    }

    /// Remove names (an id or digest several names share only with `force`),
    /// then collect what no image uses any more. The last name of an image a
    /// container was made from goes only with `force` (docker's rule: the
    /// container keeps its layers either way).
    pub async fn remove(&self, ns: &str, name: &str, force: bool) -> Result<Removed, Error> {
        let (core, ns, name) = (self.core.clone(), ns.to_owned(), name.to_owned());
        blocking(move || {
            if !force {
                let going = core.images.find(&ns, &name)?;
                let all = core.meta.images(&ns)?;
                for rec in &going {
                    let target = &rec.target.digest;
                    let kept = all.iter().any(|o| &o.target.digest == target && !going.iter().any(|g| g.name == o.name));
                    if kept {
                        continue;
                    }
                    let users: Vec<String> =
                        core.meta.containers(&ns)?.iter().filter(|c| &c.image_target.digest == target).map(|c| c.name.clone()).collect();
                    if !users.is_empty() {
                        return Err(Error::FailedPrecondition(format!(
                            "image {} is used by container(s) {}: remove them first, or force",
                            rec.name,
                            users.join(", ")
                        )));
                    }
                }
            }
            let names = core.images.delete(&ns, &name, force)?;
            for name in &names {
                core.events.publish(&ns, "/images/delete", name, &[]);
            }
            let gc = core.images.gc()?;
            Ok(Removed { names, blobs_removed: gc.blobs_removed, snapshots_removed: gc.snapshots_removed })
        })
        .await
    }

    /// Import an archive read from `reader` (an upload, a file).
    pub fn import(
        &self,
        ns: &str,
        reader: impl Read + Send + 'static,
        opts: ImportOptions,
    ) -> Result<mpsc::Receiver<Update<Imported>>, Error> {
        validate_labels(&opts.labels)?;
        let (svc, ns) = (self.clone(), ns.to_owned());
        let what = opts.name.clone().unwrap_or_else(|| "the archive".into());
        Ok(queued(Some(self.transfers.clone()), &what, move |progress, _gone| {
            let images = &svc.core.images;
            let result = images.import(&ns, reader, &opts, progress);
            // What a failed import stored, the image a moved name left, the archive's stray files.
            Self::collect_after(images, result.as_ref().map_or(true, |o| o.replaced || o.stray), "import");
            let outcome = result.inspect_err(|e| tracing::warn!(namespace = %ns, error = %shown(e), "import failed"))?;
            for rec in &outcome.images {
                svc.created(&ns, rec);
            }
            let imported = outcome.images.iter().map(|r| info(images, &ns, r)).collect();
            Ok(Imported { images: imported, bytes_read: outcome.bytes_read })
        }))
    }

    /// Import an archive from a file on the agent's machine: an absolute
    /// path to a regular file (never blocking on a FIFO).
    pub async fn import_path(&self, ns: &str, path: &str, opts: ImportOptions) -> Result<mpsc::Receiver<Update<Imported>>, Error> {
        if !path.starts_with('/') {
            return Err(Error::InvalidArgument("the archive path must be absolute".into()));
        }
        validate_labels(&opts.labels)?;
        let path = path.to_owned();
        let file = blocking(move || {
            use std::os::unix::fs::OpenOptionsExt;
            let f = std::fs::OpenOptions::new().read(true).custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32).open(&path).map_err(
                |e| match e.kind() {
                    io::ErrorKind::NotFound => Error::NotFound(format!("{path}: no such file")),
                    _ => Error::InvalidArgument(format!("{path}: {e}")),
                },
            )?;
            match f.metadata() {
                Ok(m) if m.is_file() => Ok(f),
                Ok(_) => Err(Error::InvalidArgument(format!("{path} is not a regular file"))),
                Err(e) => Err(Error::InvalidArgument(format!("{path}: {e}"))),
            }
        })
        .await?;
        self.import(ns, file, opts)
    }

    /// Export images as one OCI archive, in chunks. Every name is resolved
    /// (and its blobs leased) before the first byte: an unknown name fails
    /// the call, not the stream.
    pub async fn export(&self, ns: &str, names: Vec<String>, platform: Platform) -> Result<mpsc::Receiver<Result<Vec<u8>, Error>>, Error> {
        let (tx, rx) = mpsc::channel(super::CHUNK_QUEUE);
        let (ready_tx, ready_rx) = oneshot::channel();
        let handle = tokio::runtime::Handle::current();
        let (core, ns) = (self.core.clone(), ns.to_owned());
        tokio::task::spawn_blocking(move || {
            let images = &core.images;
            let mut plan = match images.export_plan(&ns, &names, &platform) {
                Ok(plan) => plan,
                Err(e) => {
                    let _ = ready_tx.send(Err(Error::from(e)));
                    return;
                }
            };
            if ready_tx.send(Ok(())).is_err() {
                return;
            }
            let mut sink = super::ChunkSender::new(tx, handle.clone());
            let result = images.write_export(&plan, &mut sink);
            let (names, blobs) = (std::mem::take(&mut plan.names), plan.blobs.len());
            drop(plan);
            // A collection spared blobs this export held: collect them now,
            // unless another transfer still holds some.
            Self::collect_after(images, false, "export");
            let plan = (names, blobs);
            match (result, sink.abandoned) {
                (Ok(bytes), _) => tracing::info!(namespace = %ns, images = ?plan.0, blobs = plan.1, bytes, "exported images"),
                (Err(_), Some(why)) => tracing::info!(namespace = %ns, images = ?plan.0, reason = why, "export abandoned"),
                (Err(e), None) => {
                    tracing::warn!(namespace = %ns, images = ?plan.0, error = %shown(&e), "export failed");
                    let _ = handle.block_on(tokio::time::timeout(super::CHUNK_IDLE_TIMEOUT, sink.tx.send(Err(e.into()))));
                }
            }
        });
        ready_rx.await.map_err(|_| Error::Internal("the export stopped before it started".into()))??;
        Ok(rx)
    }

    /// Pull an image from its registry: fetch what is missing, verify, unpack, name.
    pub fn pull(&self, ns: &str, opts: PullOptions) -> Result<mpsc::Receiver<Update<ImageInfo>>, Error> {
        if opts.reference.is_empty() {
            return Err(Error::InvalidArgument("an image reference is required".into()));
        }
        let (svc, ns) = (self.clone(), ns.to_owned());
        let what = opts.reference.clone();
        Ok(queued(Some(self.transfers.clone()), &what, move |progress, gone| {
            // A pull whose client has gone stops (and lets go of its blobs' claims).
            let result = svc.core.registries.pull(&ns, &opts, progress, gone);
            // Blobs a failed pull stored are unnamed: collect them once no transfer needs them.
            Self::collect_after(&svc.core.images, result.is_err(), "pull");
            let rec = result.inspect_err(|e| tracing::warn!(reference = %opts.reference, error = %shown(e), "pull failed"))?;
            svc.created(&ns, &rec);
            // The pulled platform's details, as Get and Import give them.
            Ok(info_for(&svc.core.images, &ns, &rec, &opts.platform).0)
        }))
    }

    /// Push an image to its registry; returns the digest pushed.
    pub fn push(&self, ns: &str, opts: PushOptions) -> Result<mpsc::Receiver<Update<Digest>>, Error> {
        if opts.reference.is_empty() {
            return Err(Error::InvalidArgument("an image reference is required".into()));
        }
        let (core, ns) = (self.core.clone(), ns.to_owned());
        Ok(with_progress(move |progress| {
            let digest = core
                .registries
                .push(&ns, &opts, progress)
                .inspect_err(|e| tracing::warn!(reference = %opts.reference, error = %shown(e), "push failed"))?;
            Ok(digest)
        }))
    }

    /// Check credentials against a registry.
    pub async fn check_login(&self, registry: &str, plain_http: bool, creds: Option<Credentials>) -> Result<(), Error> {
        if registry.is_empty() {
            return Err(Error::InvalidArgument("a registry host is required".into()));
        }
        let creds = creds.ok_or_else(|| Error::InvalidArgument("a username is required".into()))?;
        let (core, registry) = (self.core.clone(), registry.to_owned());
        blocking(move || Ok(core.registries.check_login(&registry, plain_http, &creds)?)).await
    }
}
