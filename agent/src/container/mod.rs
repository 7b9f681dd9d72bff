//! Containers: records, runtime specs, users, and the diff of a writable layer.
//!
//! A container is a record (image, config, generated OCI spec, labels) plus
//! one active snapshot on top of its image's top layer. Its running side, the
//! task, lives in [`crate::runtime`].

/// A container's configuration: the record's schema, kept with the other records.
pub use crate::metadata::container_config as config;
pub mod commit_config;
pub mod diff;
pub mod files;
pub mod init;
pub mod seccomp;
pub mod spec;
pub mod user;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::content::{random_hex, ContentStore};
use crate::digest::{Digest, HashingWriter};
use crate::image::{oci::Platform, ImageError, Images};
use crate::metadata::{now_nanos, ContainerRecord, DescriptorRecord, Metadata, MetadataError};
use crate::snapshot::{SnapshotError, Snapshots};
use crate::volume::{VolumeError, Volumes};
use config::{ContainerConfig, MountKind};
use spec::SpecError;
use user::UserError;

/// Label on a container's writable snapshot: the container's id.
pub const LABEL_CONTAINER: &str = "berth.io/container";

/// Largest image file read to resolve a user (`/etc/passwd`, `/etc/group`).
const MAX_IMAGE_FILE: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("container {0:?} not found")]
    NotFound(String),
    #[error("container id prefix {0:?} is ambiguous: use more characters or the name")]
    Ambiguous(String),
    #[error("the container name {0:?} is already in use")]
    NameTaken(String),
    #[error("invalid container name {0:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 128 characters")]
    InvalidName(String),
    #[error("invalid {what}: {why}")]
    Invalid { what: &'static str, why: String },
    #[error("image {image:?} is not unpacked for snapshotter {snapshotter}")]
    NotUnpacked { image: String, snapshotter: String },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Diff(#[from] diff::DiffError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Files(#[from] files::FilesError),
}

/// What to create.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub image: String,
    pub name: String,
    pub config: ContainerConfig,
    pub labels: BTreeMap<String, String>,
    pub runtime: String,
}

pub struct Containers {
    meta: Arc<Metadata>,
    content: Arc<ContentStore>,
    images: Arc<Images>,
    snapshots: Arc<Snapshots>,
    /// `<root>/containers`: per-container files that outlive tasks (the log).
    dir: PathBuf,
    default_runtime: String,
    /// berth-init on this machine (`<root>/bin/berth-init`), for `--init`.
    init: PathBuf,
    volumes: Arc<Volumes>,
}

/// What a commit names and records: the new image's name, the history's
/// comment and author, and the `--change` instructions.
#[derive(Debug, Clone, Copy)]
pub struct CommitMeta<'a> {
    pub name: &'a str,
    pub message: &'a str,
    pub author: &'a str,
    pub changes: &'a [crate::build::dockerfile::Instruction],
}

/// What a container's creation has worked out before its volumes are made.
struct Prepared {
    id: String,
    image_cfg: spec::ImageRuntimeConfig,
    user: user::ResolvedUser,
    /// The image's top layer (its chain id), empty for an empty image.
    parent: String,
}

/// An anonymous volume (a mount of kind volume with no name) for each of
/// the image's VOLUME paths that no mount of the request covers.
fn add_image_volumes(config: &mut ContainerConfig, volumes: &[String]) -> Result<(), ContainerError> {
    for v in volumes {
        let Ok(dest) = spec::clean_destination(v) else { continue };
        let mut covered = false;
        for m in &config.mounts {
            if spec::clean_destination(&m.destination)? == dest {
                covered = true;
            }
        }
        if !covered {
            config.mounts.push(config::MountSpec {
                kind: MountKind::Volume,
                source: String::new(),
                destination: dest,
                readonly: false,
                options: Vec::new(),
                no_copy: false,
            });
        }
    }
    Ok(())
}

/// Docker's rule for names.
pub fn validate_name(name: &str) -> Result<(), ContainerError> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ContainerError::InvalidName(name.chars().take(140).collect()))
    }
}

impl Containers {
    #[allow(clippy::too_many_arguments)] // the wiring of the agent's stores, once
    pub fn new(
        meta: Arc<Metadata>,
        content: Arc<ContentStore>,
        images: Arc<Images>,
        snapshots: Arc<Snapshots>,
        root: &Path,
        default_runtime: String,
        init: PathBuf,
        volumes: Arc<Volumes>,
    ) -> Self {
        Containers { meta, content, images, snapshots, dir: root.join("containers"), default_runtime, init, volumes }
    }

    /// `<root>/containers/<ns>/<id>`.
    pub fn dir(&self, ns: &str, id: &str) -> PathBuf {
        self.dir.join(ns).join(id)
    }

    /// The container's CRI log file: where its config puts it (a kubelet's path), else in
    /// its directory.
    pub fn log_path(&self, ns: &str, rec: &ContainerRecord) -> PathBuf {
        match &rec.config.log_path {
            Some(p) => PathBuf::from(p),
            None => self.dir(ns, &rec.id).join("container.log"),
        }
    }

    /// Find a container by name, full id or unique id prefix.
    pub fn find(&self, ns: &str, what: &str) -> Result<ContainerRecord, ContainerError> {
        if what.len() == 64 {
            match self.meta.container(ns, what) {
                Ok(c) => return Ok(c),
                Err(MetadataError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(id) = self.meta.container_id_by_name(ns, what)? {
            return Ok(self.meta.container(ns, &id)?);
        }
        let hexlike = !what.is_empty() && what.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        if hexlike {
            match &self.meta.container_ids_with_prefix(ns, what, 2)?[..] {
                [id] => return Ok(self.meta.container(ns, id)?),
                [_, _] => return Err(ContainerError::Ambiguous(what.to_owned())),
                _ => {}
            }
        }
        Err(ContainerError::NotFound(what.chars().take(140).collect()))
    }

    /// The runtime spec of a container.
    pub fn spec(&self, ns: &str, id: &str) -> Result<oci_spec::runtime::Spec, ContainerError> {
        Ok(self.meta.container_spec(ns, id)?)
    }

    /// Its spec's JSON, as stored.
    pub fn spec_json(&self, ns: &str, id: &str) -> Result<Vec<u8>, ContainerError> {
        Ok(self.meta.container_spec_json(ns, id)?)
    }

    pub fn list(&self, ns: &str) -> Result<Vec<std::sync::Arc<ContainerRecord>>, ContainerError> {
        let mut all = self.meta.containers(ns)?;
        all.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.name.cmp(&b.name)));
        Ok(all)
    }

    /// Create a container: check everything, prepare its writable snapshot, store the record.
    pub fn create(&self, ns: &str, req: CreateRequest) -> Result<ContainerRecord, ContainerError> {
        self.check(ns, &req)?;
        let image = self.images.find_one(ns, &req.image)?;
        let resolved = self.images.resolve(&image, &Platform::default_platform())?;
        self.create_resolved(ns, req, &resolved, true)
    }

    /// Create a container on an image already resolved (a build step's
    /// state, which has no name): as [`Containers::create`] otherwise, but
    /// the image's VOLUMEs get no volumes (a build step writes through them).
    pub fn create_from(&self, ns: &str, req: CreateRequest, resolved: &crate::image::Resolved) -> Result<ContainerRecord, ContainerError> {
        self.check(ns, &req)?;
        self.create_resolved(ns, req, resolved, false)
    }

    /// What can be checked of a request before its image is looked at.
    fn check(&self, ns: &str, req: &CreateRequest) -> Result<(), ContainerError> {
        if !req.name.is_empty() {
            validate_name(&req.name)?;
            if self.meta.container_id_by_name(ns, &req.name)?.is_some() {
                return Err(ContainerError::NameTaken(req.name.clone()));
            }
        }
        spec::validate(&req.config)?;
        for m in &req.config.mounts {
            if m.kind == MountKind::Bind {
                if let Err(e) = fs::metadata(&m.source) {
                    return Err(ContainerError::Invalid { what: "bind mount", why: format!("source {}: {e}", m.source) });
                }
            }
        }
        Ok(())
    }

    fn create_resolved(
        &self,
        ns: &str,
        mut req: CreateRequest,
        resolved: &crate::image::Resolved,
        image_volumes: bool,
    ) -> Result<ContainerRecord, ContainerError> {
        let image = &resolved.record;
        if req.config.publish_all {
            for (port, protocol) in exposed_ports(&resolved.config_json) {
                if !req.config.ports.iter().any(|p| p.container_port == port && p.protocol == protocol) {
                    req.config.ports.push(crate::network::PortSpec {
                        host_ip: String::new(),
                        host_port: 0,
                        container_port: port,
                        protocol,
                    });
                }
            }
        }
        if !self.images.is_unpacked(ns, resolved) {
            return Err(ContainerError::NotUnpacked {
                image: image.name.clone(),
                snapshotter: self.snapshots.snapshotter_name().to_owned(),
            });
        }
        let image_cfg = spec::image_runtime_config(&resolved.config_json)?;
        let id = random_hex(32);
        let parent = resolved.chain_ids.last().map(|c| c.to_string()).unwrap_or_default();
        let user_spec = req.config.user.clone().unwrap_or_else(|| image_cfg.user.clone());
        let mut user = if user::needs_lookup(&user_spec) {
            let passwd = self.read_image_file(ns, &parent, "etc/passwd")?;
            let group = self.read_image_file(ns, &parent, "etc/group")?;
            user::resolve_user(&user_spec, passwd.as_deref(), group.as_deref())?
        } else {
            user::resolve_user(&user_spec, None, None)?
        };
        if req.config.groups_strict {
            user.additional_gids.clear();
        }
        // --group-add: numbers as they are, names from the image's /etc/group.
        if !req.config.group_add.is_empty() {
            let groups = self.read_image_file(ns, &parent, "etc/group")?.unwrap_or_default();
            for g in &req.config.group_add {
                let gid = g.parse::<u32>().ok().or_else(|| {
                    groups.lines().find_map(|l| {
                        let mut f = l.split(':');
                        (f.next()? == g).then(|| f.nth(1)?.parse::<u32>().ok()).flatten()
                    })
                });
                let Some(gid) = gid else {
                    return Err(ContainerError::Invalid {
                        what: "--group-add",
                        why: format!("group {g:?} is not in the image's /etc/group"),
                    });
                };
                if !user.additional_gids.contains(&gid) {
                    user.additional_gids.push(gid);
                }
            }
        }
        if image_volumes {
            add_image_volumes(&mut req.config, &image_cfg.volumes)?;
        }
        // From here to the record's insertion nobody else changes who uses
        // a volume: one being removed now is not also mounted.
        let uses_volumes = req.config.mounts.iter().any(|m| m.kind == MountKind::Volume);
        let _users = uses_volumes.then(|| self.volumes.lock());
        let mut made = Vec::new();
        let prepared = Prepared { id, image_cfg, user, parent };
        let result = self.create_with_volumes(ns, req, resolved, prepared, &mut made);
        if result.is_err() {
            for name in made {
                if let Err(e) = self.volumes.remove_locked(ns, &name) {
                    tracing::warn!(volume = %name, error = %e, "removing a volume made for a container not created");
                }
            }
        }
        result
    }

    /// The volumes a new container mounts, made (`made`: those new) and
    /// filled from the image when new; then its spec, record and snapshot.
    fn create_with_volumes(
        &self,
        ns: &str,
        mut req: CreateRequest,
        resolved: &crate::image::Resolved,
        prepared: Prepared,
        made: &mut Vec<String>,
    ) -> Result<ContainerRecord, ContainerError> {
        let Prepared { id, image_cfg, user, parent } = prepared;
        let parent = parent.as_str();
        let image = &resolved.record;
        let name = if req.name.is_empty() { generated_name(&image.name, &id) } else { req.name.clone() };
        let runtime = if req.runtime.is_empty() { self.default_runtime.clone() } else { req.runtime.clone() };
        // The spec binds each volume's directory.
        let mut spec_config = req.config.clone();
        for (m, sm) in req.config.mounts.iter_mut().zip(spec_config.mounts.iter_mut()) {
            if m.kind != MountKind::Volume {
                continue;
            }
            let anonymous = m.source.is_empty();
            if anonymous {
                m.source = self.volumes.create(ns, "", BTreeMap::new(), true)?.name;
                made.push(m.source.clone());
            } else if self.volumes.ensure(ns, &m.source, false)?.1 {
                made.push(m.source.clone());
            }
            if !m.no_copy && !parent.is_empty() && self.volumes.is_empty(ns, &m.source)? {
                let mnt = self.volumes.scratch();
                fs::create_dir(&mnt).map_err(|source| ContainerError::Io { path: mnt.clone(), source })?;
                let filled = self.snapshots.with_mounted(ns, parent, &mnt, |root| self.volumes.fill(ns, &m.source, root, &m.destination));
                let _ = fs::remove_dir(&mnt);
                filled??;
            }
            sm.source = self.volumes.path(ns, &m.source).to_string_lossy().into_owned();
            sm.kind = MountKind::Bind;
        }
        let cgroups_path = match &req.config.cgroup_parent {
            Some(parent) => {
                let p = std::path::Path::new(parent);
                let normal = p.components().skip(1).all(|c| matches!(c, std::path::Component::Normal(_)));
                if !parent.starts_with('/') || !normal || parent.len() > 1024 {
                    let why = format!("{parent:?}: an absolute path without . or .. is required");
                    return Err(ContainerError::Invalid { what: "cgroup parent", why });
                }
                format!("{}/{id}", parent.trim_end_matches('/'))
            }
            None => format!("/berth/{ns}/{id}"),
        };
        let spec = spec::build(&spec::SpecInput {
            id: &id,
            image: &image_cfg,
            config: &spec_config,
            user: &user,
            cgroups_path: &cgroups_path,
            init: Some(&self.init),
        })?;
        // --stop-signal, else the image's StopSignal, else SIGTERM.
        let stop_signal = match req.config.stop_signal.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => spec::parse_signal(s)?,
            None if image_cfg.stop_signal.is_empty() => 15,
            None => spec::parse_signal(&image_cfg.stop_signal).unwrap_or(15),
        };

        let key = format!("container-{id}");
        let labels = BTreeMap::from([(LABEL_CONTAINER.to_owned(), id.clone())]);
        let now = now_nanos();
        let target = &image.target;
        let mut rec = ContainerRecord {
            id: id.clone(),
            name,
            image: image.name.clone(),
            image_target: target.clone(),
            manifest: DescriptorRecord {
                media_type: resolved.manifest_desc.media_type.clone(),
                digest: resolved.manifest_desc.digest.clone(),
                size: resolved.manifest_desc.size,
            },
            config_digest: resolved.manifest.config.digest.clone(),
            snapshot_key: key.clone(),
            runtime,
            config: req.config,
            cgroups_path: String::new(),
            args: Vec::new(),
            stop_signal,
            labels: req.labels,
            created: now,
            updated: now,
            last_exit: None,
            restart_count: 0,
            stopped_by_user: false,
        };
        rec.take_from_spec(&spec);
        // The check that runs: the flags over the image's.
        rec.config.healthcheck = config::HealthCheck::merged(image_cfg.healthcheck.as_ref(), rec.config.healthcheck.as_ref());
        if rec.config.init {
            // Shown as the container's command: what berth-init runs.
            rec.args.drain(..2.min(rec.args.len()));
        }
        // The record and its writable snapshot appear together or not at all.
        match self.snapshots.prepare_for_container(ns, &key, parent, labels, (&rec, &spec)) {
            Ok(()) => Ok(rec),
            Err(SnapshotError::Metadata(MetadataError::AlreadyExists { kind: "container name", name })) => {
                Err(ContainerError::NameTaken(name))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A file of the image as the container would see it before any change,
    /// read by the snapshotter with overlay rules (whiteouts, opaque
    /// directories, symlinks followed only inside the image). Absent, hidden
    /// or not a regular file: None.
    fn read_image_file(&self, ns: &str, top: &str, rel: &str) -> Result<Option<String>, ContainerError> {
        if top.is_empty() {
            return Ok(None);
        }
        let data = self.snapshots.read_file(ns, top, rel, MAX_IMAGE_FILE)?;
        Ok(data.map(|d| String::from_utf8_lossy(&d).into_owned()))
    }

    /// Resolve a `--user` for a process of this container, against its image's files.
    pub fn resolve_user(&self, ns: &str, rec: &ContainerRecord, spec: &str) -> Result<user::ResolvedUser, ContainerError> {
        if !user::needs_lookup(spec) {
            return Ok(user::resolve_user(spec, None, None)?);
        }
        let parent = self.meta.snapshot(ns, &rec.snapshot_key)?.parent;
        let passwd = self.read_image_file(ns, &parent, "etc/passwd")?;
        let group = self.read_image_file(ns, &parent, "etc/group")?;
        Ok(user::resolve_user(spec, passwd.as_deref(), group.as_deref())?)
    }

    /// The process of an exec in this container, built as its init's is
    /// (see [`spec::exec_process`]); `user` is a `--user` to resolve, or empty.
    pub fn exec_process(
        &self,
        ns: &str,
        rec: &ContainerRecord,
        exec: &spec::ExecSpec,
        user: &str,
    ) -> Result<oci_spec::runtime::Process, ContainerError> {
        let stored = self.spec(ns, &rec.id)?;
        let init = stored
            .process()
            .as_ref()
            .ok_or_else(|| ContainerError::Invalid { what: "stored runtime spec", why: "it has no process".into() })?;
        let hostname = stored.hostname().as_deref().unwrap_or_default();
        let image = match self.content.read_all(&rec.config_digest, crate::image::oci::MAX_DOCUMENT) {
            Ok(config_json) => spec::image_runtime_config(&config_json)?,
            // The image's config was deleted by force: the init's environment
            // stands in for the image's (HOME then stays the init's).
            Err(crate::content::ContentError::NotFound(_)) => {
                spec::ImageRuntimeConfig { env: init.env().clone().unwrap_or_default(), ..Default::default() }
            }
            Err(e) => return Err(ImageError::from(e).into()),
        };
        let user = if user.is_empty() { None } else { Some(self.resolve_user(ns, rec, user)?) };
        Ok(spec::exec_process(init, hostname, &image, &rec.config, exec, user.as_ref())?)
    }

    pub fn update_labels(&self, ns: &str, id: &str, labels: BTreeMap<String, String>) -> Result<ContainerRecord, ContainerError> {
        let rec = self.find(ns, id)?;
        Ok(self.meta.update_container(ns, &rec.id, |c| c.labels = labels)?)
    }

    /// Replace the networks the container joins (`network connect`/`disconnect`).
    pub fn set_networks(&self, ns: &str, id: &str, networks: Vec<crate::network::EndpointSpec>) -> Result<ContainerRecord, ContainerError> {
        Ok(self.meta.update_container(ns, id, |c| c.config.networks = networks)?)
    }

    /// Record how the container's task ended.
    pub fn record_exit(&self, ns: &str, id: &str, exit: crate::metadata::ExitInfo) -> Result<ContainerRecord, ContainerError> {
        Ok(self.meta.update_container(ns, id, |c| c.last_exit = Some(exit))?)
    }

    /// Remove the record, the writable snapshot and the log. The caller has
    /// made sure no task runs.
    pub fn delete(&self, ns: &str, rec: &ContainerRecord) -> Result<(), ContainerError> {
        match self.snapshots.remove_with_container(ns, &rec.id, &rec.snapshot_key) {
            Ok(_) => {}
            Err(SnapshotError::Metadata(e)) => return Err(e.into()),
            // The records are gone; storage left behind is found again at start-up.
            Err(e) => tracing::warn!(container = %rec.id, error = %e, "removing the writable layer's files failed"),
        }
        let dir = self.dir(ns, &rec.id);
        if let Err(e) = fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %dir.display(), error = %e, "removing the container's files failed");
            }
        }
        Ok(())
    }

    /// Remove writable snapshots and files whose container record is gone (a
    /// crash between the steps of create or delete). Returns how many.
    pub fn recover(&self) -> Result<usize, ContainerError> {
        let mut removed = 0;
        let live: std::collections::HashSet<(String, String)> = self.meta.all_containers()?.into_iter().map(|(ns, c)| (ns, c.id)).collect();
        for (ns, s) in self.meta.all_snapshots()? {
            if let Some(id) = s.labels.get(LABEL_CONTAINER) {
                if !live.contains(&(ns.clone(), id.clone())) {
                    match self.snapshots.remove(&ns, &s.key) {
                        Ok(()) => removed += 1,
                        Err(e) => tracing::warn!(snapshot = %s.key, error = %e, "removing an orphaned container snapshot"),
                    }
                }
            }
        }
        if let Ok(nss) = fs::read_dir(&self.dir) {
            for ns in nss.flatten() {
                let nsname = ns.file_name().to_string_lossy().into_owned();
                for c in fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                    let id = c.file_name().to_string_lossy().into_owned();
                    if !live.contains(&(nsname.clone(), id)) {
                        let _ = fs::remove_dir_all(c.path());
                        removed += 1;
                    }
                }
            }
        }
        Ok(removed)
    }
}

/// A container's changes read out by [`Containers::read_changes`].
pub struct ReadChanges {
    scratch: crate::content::Scratch,
    diff_id: Digest,
}

/// What `commit` made.
#[derive(Debug, Clone)]
pub struct Committed {
    pub name: String,
    pub manifest: Digest,
    pub config: Digest,
}

/// The files every container has bind-mounted over its image's, whose mount
/// points the runtime makes in the writable layer when the image lacks them.
pub const NETWORK_FILES: [&str; 3] = ["/etc/hosts", "/etc/resolv.conf", "/etc/hostname"];

impl Containers {
    /// docker diff: what changed in the container's writable layer. The
    /// empty directories the runtime made as mount points (`/proc`, `/dev`,
    /// ...) are not changes the user made and are left out, as docker does.
    pub fn changes(&self, ns: &str, rec: &ContainerRecord) -> Result<Vec<diff::Change>, ContainerError> {
        let changes = self.snapshots.changes(ns, &rec.snapshot_key)?;
        // The spec's mounts, and the files networking binds over the image's (see runtime/network.rs).
        let spec = self.spec(ns, &rec.id)?;
        let mut destinations: Vec<&str> = spec.mounts().iter().flatten().filter_map(|m| m.destination().to_str()).collect();
        destinations.extend(NETWORK_FILES);
        // A mount point, or a directory on the way to one.
        let on_mount_path = |p: &str| destinations.iter().any(|d| *d == p || d.strip_prefix(p).is_some_and(|rest| rest.starts_with('/')));
        // An added directory that holds nothing but such paths. Changes are sorted by path, so
        // those below a directory are one run.
        let mount_point = |c: &diff::Change| {
            // The empty file the runtime made to bind one of the network files over.
            if c.kind == diff::ChangeKind::Added && !c.is_dir && NETWORK_FILES.contains(&c.path.as_str()) {
                return true;
            }
            // A directory changed only by those files being made in it.
            let made_for_mounts = c.kind == diff::ChangeKind::Added || (c.kind == diff::ChangeKind::Modified && c.path == "/etc");
            if !made_for_mounts || !c.is_dir || !on_mount_path(&c.path) {
                return false;
            }
            let prefix = format!("{}/", c.path);
            let start = changes.partition_point(|o| o.path.as_str() < prefix.as_str());
            changes[start..]
                .iter()
                .take_while(|o| o.path.starts_with(&prefix))
                .filter(|o| !o.path[prefix.len()..].contains('/'))
                .all(|o| on_mount_path(&o.path))
        };
        let hidden: Vec<bool> = changes.iter().map(mount_point).collect();
        Ok(changes.into_iter().zip(hidden).filter(|(_, hidden)| !hidden).map(|(c, _)| c).collect())
    }

    /// docker commit, in two halves: the writable layer becomes a new gzip
    /// layer on top of the container's image, stored (and unpacked) as a new
    /// image. This is the first half, the only one that needs the container
    /// still (frozen): its changes as an uncompressed layer in scratch space.
    pub fn read_changes(&self, ns: &str, rec: &ContainerRecord) -> Result<ReadChanges, ContainerError> {
        let scratch = self.content.scratch().map_err(ImageError::from)?;
        let diff_id = {
            let mut tar = HashingWriter { inner: std::io::BufWriter::with_capacity(1 << 20, &scratch.file), hasher: Default::default() };
            self.snapshots.write_changes(ns, &rec.snapshot_key, None, &NETWORK_FILES, &mut tar)?;
            let io = |source| ContainerError::Io { path: PathBuf::from(&rec.snapshot_key), source };
            std::io::Write::flush(&mut tar.inner).map_err(io)?;
            tar.hasher.finish()
        };
        Ok(ReadChanges { scratch, diff_id })
    }

    /// The rest of a commit, with the container running again: the layer is
    /// compressed into the store, and the new image written, named and unpacked.
    pub fn commit_changes(
        &self,
        ns: &str,
        rec: &ContainerRecord,
        layer: ReadChanges,
        what: &CommitMeta<'_>,
    ) -> Result<Committed, ContainerError> {
        let CommitMeta { name, message, author, changes } = *what;
        let name = crate::image::reference::Reference::parse(name).map_err(ImageError::from)?.to_string();
        let lease = self.images.lease();
        let ReadChanges { mut scratch, diff_id } = layer;
        let io = |source| ContainerError::Io { path: PathBuf::from(&rec.snapshot_key), source };
        // scratch (tar) -> gzip -> (blob hash) -> content store.
        std::io::Seek::rewind(&mut scratch.file).map_err(io)?;
        let blob = self.content.writer(None, None).map_err(ImageError::from)?;
        let mut gz = flate2::write::GzEncoder::new(blob, flate2::Compression::fast());
        std::io::copy(&mut std::io::BufReader::with_capacity(1 << 20, &scratch.file), &mut gz).map_err(io)?;
        let blob = gz.finish().map_err(io)?;
        drop(scratch);
        let (layer_digest, layer_size) = lease.publish().commit(blob).map_err(ImageError::from)?;

        let old_manifest: serde_json::Value =
            serde_json::from_slice(&self.content.read_all(&rec.manifest.digest, 4 << 20).map_err(ImageError::from)?)
                .map_err(|e| ContainerError::Invalid { what: "image manifest", why: e.to_string() })?;
        let mut config: serde_json::Value =
            serde_json::from_slice(&self.content.read_all(&rec.config_digest, 8 << 20).map_err(ImageError::from)?)
                .map_err(|e| ContainerError::Invalid { what: "image config", why: e.to_string() })?;
        let now = crate::metadata::now_nanos();
        let created = rfc3339(now);
        let bad = |why: &str| ContainerError::Invalid { what: "image config", why: why.to_owned() };
        config["created"] = created.clone().into();
        if !author.is_empty() {
            config["author"] = author.into();
        }
        // What the container ran, then the --change instructions.
        commit_config::keep_container_config(&mut config, &rec.config);
        commit_config::apply_changes(&mut config, changes).map_err(|why| ContainerError::Invalid { what: "--change", why })?;
        config
            .get_mut("rootfs")
            .and_then(|r| r.get_mut("diff_ids"))
            .and_then(|d| d.as_array_mut())
            .ok_or_else(|| bad("no rootfs.diff_ids"))?
            .push(diff_id.to_string().into());
        let mut entry = serde_json::json!({ "created": created, "created_by": format!("berthctl commit {}", rec.name) });
        if !message.is_empty() {
            entry["comment"] = message.into();
        }
        if !author.is_empty() {
            entry["author"] = author.into();
        }
        match config.get_mut("history").and_then(|h| h.as_array_mut()) {
            Some(h) => h.push(entry),
            None => config["history"] = serde_json::json!([entry]),
        }
        let config_bytes = serde_json::to_vec(&config).map_err(|e| bad(&e.to_string()))?;
        let config_digest = lease.publish().put(&config_bytes).map_err(ImageError::from)?;

        let docker = old_manifest.get("mediaType").and_then(|m| m.as_str()) == Some(crate::image::oci::MEDIA_DOCKER_MANIFEST);
        let mut manifest = old_manifest.clone();
        let layer_type = if docker { "application/vnd.docker.image.rootfs.diff.tar.gzip" } else { crate::image::oci::MEDIA_OCI_LAYER_GZIP };
        manifest["config"]["digest"] = config_digest.to_string().into();
        manifest["config"]["size"] = config_bytes.len().into();
        manifest
            .get_mut("layers")
            .and_then(|l| l.as_array_mut())
            .ok_or_else(|| ContainerError::Invalid { what: "image manifest", why: "no layers".into() })?
            .push(serde_json::json!({ "mediaType": layer_type, "digest": layer_digest.to_string(), "size": layer_size }));
        let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| bad(&e.to_string()))?;
        let manifest_digest = lease.publish().put(&manifest_bytes).map_err(ImageError::from)?;
        let media_type = manifest.get("mediaType").and_then(|m| m.as_str()).unwrap_or(crate::image::oci::MEDIA_OCI_MANIFEST).to_owned();
        let target = crate::image::oci::Descriptor {
            media_type,
            digest: manifest_digest.clone(),
            size: manifest_bytes.len() as u64,
            annotations: Default::default(),
            platform: None,
        };
        // Named and unpacked with collection held off (its blobs are leased).
        let hold = self.images.hold_gc();
        let (image, _) = self.images.put(ns, &name, &target, &BTreeMap::new())?;
        let resolved = self.images.resolve(&image, &Platform::default_platform())?;
        self.images.unpack(ns, &resolved, &|_| {})?;
        drop(hold);
        drop(lease);
        Ok(Committed { name, manifest: manifest_digest, config: config_digest })
    }
}

/// RFC 3339 in UTC with nanoseconds, as image configs write `created`.
fn rfc3339(nanos: i64) -> String {
    berth_common::time::format_rfc3339_nano(nanos.div_euclid(1_000_000_000), nanos.rem_euclid(1_000_000_000) as u32)
}

/// `<image short name>-<6 hex of the id>`, e.g. `busybox-3fa9c1`.
fn generated_name(image: &str, id: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    let base: String = last.split([':', '@']).next().unwrap_or("c").chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    let base = if base.is_empty() || !base.as_bytes()[0].is_ascii_alphanumeric() { "c".to_owned() } else { base };
    format!("{}-{}", base.chars().take(60).collect::<String>(), &id[..6])
}

/// The image config's `ExposedPorts` (`"80/tcp"`, `"53/udp"`, `"8080"`), as (port, protocol).
pub fn exposed_ports(config_json: &[u8]) -> Vec<(u16, String)> {
    let doc: serde_json::Value = serde_json::from_slice(config_json).unwrap_or_default();
    let Some(ports) = doc.pointer("/config/ExposedPorts").and_then(serde_json::Value::as_object) else { return Vec::new() };
    ports
        .keys()
        .filter_map(|k| {
            let (port, proto) = k.split_once('/').unwrap_or((k.as_str(), "tcp"));
            let proto = proto.to_ascii_lowercase();
            (proto == "tcp" || proto == "udp").then_some(())?;
            Some((port.parse().ok().filter(|p| *p > 0)?, proto))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_docker_rules() {
        for ok in ["web", "a", "web-1", "my_app.v2", "0abc"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-web", ".x", "a b", "a/b", "ä", &"x".repeat(129)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_names_come_from_the_image() {
        let id = "3fa9c1".to_owned() + &"0".repeat(58);
        assert_eq!(generated_name("docker.io/library/busybox:latest", &id), "busybox-3fa9c1");
        assert_eq!(generated_name("localhost:5000/team/app@sha256:abc", &id), "app-3fa9c1");
        assert!(validate_name(&generated_name("x/_weird:tag", &id)).is_ok());
    }
}
