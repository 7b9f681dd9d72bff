//! Metadata in an embedded ACID database (redb): images and snapshots, each
//! keyed by namespace. Records are JSON values; keys are `<namespace>\0<name>`.
//!
//! The database is the source of truth: a blob no image reaches and a
//! snapshot directory no record names are garbage.

pub mod container_config;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::digest::Digest;

const IMAGES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("images");
/// Containers by `<namespace>\0<id>`.
const CONTAINERS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("containers");
/// Containers' runtime specs by `<namespace>\0<id>`: read when a task is
/// made or a container inspected, never by a list.
const CONTAINER_SPECS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("container_specs");
/// Container ids by `<namespace>\0<name>`: a name is found, and checked
/// free, without reading every record.
const CONTAINER_NAMES: TableDefinition<'_, &str, &str> = TableDefinition::new("container_names");
const COUNTERS: TableDefinition<'_, &str, u64> = TableDefinition::new("counters");
/// Labels of blobs, by digest (blobs are shared by every namespace).
const CONTENT_LABELS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("content_labels");
/// Build steps' results by `<namespace>\0<cache key>` (see `build::cache`).
const BUILD_CACHE: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("build_cache");
/// Named volumes by `<namespace>\0<name>` (their files are `volume::Volumes`').
const VOLUMES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("volumes");

/// The record layout this version writes, kept under [`SCHEMA_KEY`] in
/// `counters`. 1: the first releases (no marker). 2: the marker; container
/// records are read typed (the runtime spec as `oci_spec::runtime::Spec`).
/// 3: a container's spec in `container_specs`, apart from its record (which
/// keeps the spec's cgroups path and command), and the `container_names` index.
/// 4: volumes (`volumes`), and container mounts of kind `volume` (which a
/// reader of 3 could not decode).
pub const SCHEMA: u64 = 4;
const SCHEMA_KEY: &str = "schema";

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: &'static str, name: String },
    #[error("snapshot {name:?} has {children} child snapshot(s); remove them first")]
    HasChildren { name: String, children: usize },
    #[error("metadata database: {0}")]
    Database(String),
    #[error("corrupt metadata record {key:?}: {source}")]
    Corrupt { key: String, source: serde_json::Error },
    #[error("the metadata database has schema {found}, written by a newer berthd; this one reads schemas up to {supported}")]
    TooNew { found: u64, supported: u64 },
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for MetadataError {
            fn from(e: $t) -> Self { MetadataError::Database(e.to_string()) }
        }
    )*};
}
db_err!(redb::DatabaseError, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

/// Nanoseconds since the Unix epoch.
pub fn now_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// An OCI content descriptor as stored in metadata.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DescriptorRecord {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    pub name: String,
    pub target: DescriptorRecord,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub created: i64,
    pub updated: i64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    Committed,
    Active,
    View,
}

impl SnapshotKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotKind::Committed => "committed",
            SnapshotKind::Active => "active",
            SnapshotKind::View => "view",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub key: String,
    /// Key of the parent snapshot (committed), empty for none.
    #[serde(default)]
    pub parent: String,
    pub kind: SnapshotKind,
    /// Directory id in the snapshotter's storage.
    pub id: u64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub created: i64,
    pub updated: i64,
}

/// How a container's last task ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitInfo {
    pub exit_code: i32,
    pub started_at: i64,
    pub finished_at: i64,
    #[serde(default)]
    pub oom_killed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// 64 hex characters.
    pub id: String,
    /// Unique in its namespace.
    pub name: String,
    /// The image name the container was created from.
    pub image: String,
    /// The image's target (manifest or index): its content is kept while the container exists.
    pub image_target: DescriptorRecord,
    /// The manifest and config selected for this machine's platform.
    pub manifest: DescriptorRecord,
    pub config_digest: Digest,
    /// The container's writable snapshot, a child of the image's top layer.
    pub snapshot_key: String,
    /// OCI runtime name or path.
    pub runtime: String,
    pub config: container_config::ContainerConfig,
    /// `linux.cgroupsPath` of its runtime spec (the spec itself is stored
    /// apart: [`Metadata::container_spec`]).
    #[serde(default)]
    pub cgroups_path: String,
    /// The command its init runs (`process.args` of its spec).
    #[serde(default)]
    pub args: Vec<String>,
    /// Signal `stop` sends first (from the image's StopSignal), as a number.
    pub stop_signal: i32,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub created: i64,
    pub updated: i64,
    /// Set when a task of the container has exited.
    #[serde(default)]
    pub last_exit: Option<ExitInfo>,
    /// Times the restart policy started it again since the user last started it.
    #[serde(default)]
    pub restart_count: u32,
    /// The user stopped it (Stop): no policy starts it again until the user does.
    #[serde(default)]
    pub stopped_by_user: bool,
}

/// A build step's result: the state of the stage after it, stored as an
/// unnamed image (a manifest, its config and layers). It keeps that content,
/// and the snapshots of its layers, from garbage collection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildCacheRecord {
    pub manifest: DescriptorRecord,
    pub created: i64,
    pub last_used: i64,
}

/// A named volume: a directory under the root that outlives containers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub created: i64,
    /// Made for a container (an image's VOLUME, `-v /path`), not named by a
    /// user: removed with the container by `rm -v`, and by `volume prune`.
    #[serde(default)]
    pub anonymous: bool,
}

impl ContainerRecord {
    /// The fields the record keeps of its spec.
    pub fn take_from_spec(&mut self, spec: &oci_spec::runtime::Spec) {
        let path = spec.linux().as_ref().and_then(|l| l.cgroups_path().as_ref());
        self.cgroups_path = path.map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        self.args = spec.process().as_ref().and_then(|p| p.args().clone()).unwrap_or_default();
    }
}

/// Insert a container, its spec and its name in `tx`: its id and its name
/// must both be free in `ns`.
fn insert_container_in(
    tx: &redb::WriteTransaction,
    ns: &str,
    rec: &ContainerRecord,
    spec: &oci_spec::runtime::Spec,
) -> Result<(), MetadataError> {
    let k = key(ns, &rec.id);
    let mut t = tx.open_table(CONTAINERS)?;
    if t.get(k.as_str())?.is_some() {
        return Err(MetadataError::AlreadyExists { kind: "container", name: rec.id.clone() });
    }
    let mut names = tx.open_table(CONTAINER_NAMES)?;
    let nk = key(ns, &rec.name);
    if names.get(nk.as_str())?.is_some() {
        return Err(MetadataError::AlreadyExists { kind: "container name", name: rec.name.clone() });
    }
    t.insert(k.as_str(), encode(rec).as_slice())?;
    names.insert(nk.as_str(), rec.id.as_str())?;
    tx.open_table(CONTAINER_SPECS)?.insert(k.as_str(), encode(spec).as_slice())?;
    Ok(())
}

fn key(ns: &str, name: &str) -> String {
    format!("{ns}\0{name}")
}

fn split_key(k: &str) -> (&str, &str) {
    k.split_once('\0').unwrap_or(("", k))
}

fn decode<T: DeserializeOwned>(k: &str, v: &[u8]) -> Result<T, MetadataError> {
    serde_json::from_slice(v).map_err(|source| MetadataError::Corrupt { key: k.replace('\0', "/"), source })
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// The schema number a database carries, if any.
fn stored_schema(db: &Database) -> Result<Option<u64>, MetadataError> {
    let tx = db.begin_read()?;
    match tx.open_table(COUNTERS) {
        Ok(t) => Ok(t.get(SCHEMA_KEY)?.map(|v| v.value())),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Bring a database written by an earlier version to [`SCHEMA`], in one
/// transaction; refuse one written by a newer version. A record the
/// migration cannot read stops the agent (nothing is dropped).
fn migrate(db: &Database) -> Result<(), MetadataError> {
    let tx = db.begin_write()?;
    {
        let mut counters = tx.open_table(COUNTERS)?;
        let marked = counters.get(SCHEMA_KEY)?.map(|v| v.value());
        // No marker: a new database, or one of schema 1.
        let found = marked.unwrap_or(1);
        if found > SCHEMA {
            return Err(MetadataError::TooNew { found, supported: SCHEMA });
        }
        if found == SCHEMA {
            return Ok(());
        }
        let mut rewritten = 0;
        if found < 3 {
            // 1 and 2 → 3: every container record is read typed (so that one
            // that cannot be read is found now, not when a user touches the
            // container), its spec moved to its own table, its name indexed.
            let mut containers = tx.open_table(CONTAINERS)?;
            let mut specs = tx.open_table(CONTAINER_SPECS)?;
            let mut names = tx.open_table(CONTAINER_NAMES)?;
            let mut moved = Vec::new();
            for item in containers.iter()? {
                let (k, v) = item?;
                let mut rec: ContainerRecord = decode(k.value(), v.value())?;
                let WithSpec { spec } = decode(k.value(), v.value())?;
                rec.take_from_spec(&spec);
                moved.push((k.value().to_owned(), rec, spec));
            }
            for (k, rec, spec) in &moved {
                containers.insert(k.as_str(), encode(rec).as_slice())?;
                specs.insert(k.as_str(), encode(spec).as_slice())?;
                let (ns, _) = split_key(k);
                names.insert(key(ns, &rec.name).as_str(), rec.id.as_str())?;
            }
            rewritten = moved.len();
        }
        // 3 → 4: the volumes table is new (made above); nothing to rewrite.
        counters.insert(SCHEMA_KEY, SCHEMA)?;
        if marked.is_some() || rewritten > 0 {
            tracing::info!(from = found, to = SCHEMA, containers = rewritten, "metadata migrated");
        }
    }
    tx.commit()?;
    Ok(())
}

/// A container record of schema 1 or 2, its spec inside.
#[derive(Deserialize)]
struct WithSpec {
    spec: oci_spec::runtime::Spec,
}

/// A snapshot's parent, if it has one, must be a committed snapshot (checked
/// inside the caller's write transaction).
fn check_parent(t: &redb::Table<'_, &'static str, &'static [u8]>, ns: &str, parent: &str) -> Result<(), MetadataError> {
    if parent.is_empty() {
        return Ok(());
    }
    let pk = key(ns, parent);
    let rec: SnapshotRecord = match t.get(pk.as_str())? {
        Some(v) => decode(&pk, v.value())?,
        None => return Err(MetadataError::NotFound { kind: "parent snapshot", name: parent.to_owned() }),
    };
    if rec.kind != SnapshotKind::Committed {
        return Err(MetadataError::NotFound { kind: "committed parent snapshot", name: parent.to_owned() });
    }
    Ok(())
}

/// Snapshot ids are taken from the database in blocks of this many, so that
/// creating a snapshot costs one commit, not two. Ids only need to be unique:
/// the rest of a block is skipped after a restart.
const ID_BLOCK: u64 = 64;

/// Container records by namespace and id.
type ContainerMap = HashMap<String, BTreeMap<String, Arc<ContainerRecord>>>;

pub struct Metadata {
    db: Database,
    /// Every container record, read from the database at open and kept in
    /// step with it: lists and finds read no record and decode nothing.
    containers: RwLock<ContainerMap>,
    /// Held by a container write from its transaction to the update of
    /// `containers`, so that two writes reach the map in commit order.
    container_writes: Mutex<()>,
    /// The next free snapshot id and the end of the block held in memory.
    ids: std::sync::Mutex<(u64, u64)>,
    /// Snapshot records are kept per snapshotter: `snapshots.<name>`.
    snapshots: TableDefinition<'static, &'static str, &'static [u8]>,
}

/// Bytes of pages the metadata database keeps in memory.
const METADATA_CACHE: usize = 512 << 10;

impl Metadata {
    /// Open (creating) the database; snapshot records are those of `snapshotter`.
    pub fn open(path: &Path, snapshotter: &str) -> Result<Self, MetadataError> {
        // Records the agent reads often are kept decoded in memory (containers, images);
        // the database's own page cache (1 GiB at most by default, kept once filled) only
        // saves a read of the kernel's page cache for the rest (a spec for `inspect`, a
        // snapshot's record): 2 MiB of it, filled by the gets of 200 specs, were 2 MB of
        // the agent's idle RSS after bench/load.sh.
        let db = redb::Builder::new().set_cache_size(METADATA_CACHE).create(path)?;
        // Its records hold containers' environments: readable by root only.
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(|e| MetadataError::Database(format!("{}: {e}", path.display())))?;
        // Read before anything is written: a newer berthd's store is left as it is.
        if let Some(found) = stored_schema(&db)? {
            if found > SCHEMA {
                return Err(MetadataError::TooNew { found, supported: SCHEMA });
            }
        }
        let name: &'static str = Box::leak(format!("snapshots.{snapshotter}").into_boxed_str());
        let snapshots = TableDefinition::new(name);
        let tx = db.begin_write()?;
        tx.open_table(IMAGES)?;
        tx.open_table(snapshots)?;
        tx.open_table(COUNTERS)?;
        tx.open_table(CONTENT_LABELS)?;
        tx.open_table(CONTAINERS)?;
        tx.open_table(CONTAINER_SPECS)?;
        tx.open_table(CONTAINER_NAMES)?;
        tx.open_table(BUILD_CACHE)?;
        tx.open_table(VOLUMES)?;
        tx.commit()?;
        migrate(&db)?;
        let mut containers = ContainerMap::new();
        {
            let tx = db.begin_read()?;
            for item in tx.open_table(CONTAINERS)?.iter()? {
                let (k, v) = item?;
                let rec: ContainerRecord = decode(k.value(), v.value())?;
                let (ns, id) = split_key(k.value());
                containers.entry(ns.to_owned()).or_default().insert(id.to_owned(), Arc::new(rec));
            }
        }
        Ok(Self {
            db,
            snapshots,
            ids: std::sync::Mutex::new((0, 0)),
            containers: RwLock::new(containers),
            container_writes: Mutex::new(()),
        })
    }

    fn get<T: DeserializeOwned>(
        &self,
        table: TableDefinition<'_, &str, &[u8]>,
        kind: &'static str,
        ns: &str,
        name: &str,
    ) -> Result<T, MetadataError> {
        self.read(table, kind, ns, name, decode)
    }

    /// `read` of the stored bytes of `name` (with its key), or NotFound.
    fn read<T>(
        &self,
        table: TableDefinition<'_, &str, &[u8]>,
        kind: &'static str,
        ns: &str,
        name: &str,
        read: impl FnOnce(&str, &[u8]) -> Result<T, MetadataError>,
    ) -> Result<T, MetadataError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(table)?;
        let k = key(ns, name);
        match t.get(k.as_str())? {
            Some(v) => read(&k, v.value()),
            None => Err(MetadataError::NotFound { kind, name: name.to_owned() }),
        }
    }

    /// Every record of a table; `ns` None means every namespace.
    fn scan<T: DeserializeOwned>(
        &self,
        table: TableDefinition<'_, &str, &[u8]>,
        ns: Option<&str>,
    ) -> Result<Vec<(String, T)>, MetadataError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(table)?;
        let mut out = Vec::new();
        let iter = match ns {
            Some(ns) => {
                let lo = format!("{ns}\0");
                let hi = format!("{ns}\u{1}");
                t.range(lo.as_str()..hi.as_str())?
            }
            None => t.iter()?,
        };
        for item in iter {
            let (k, v) = item?;
            let (rns, _) = split_key(k.value());
            out.push((rns.to_owned(), decode(k.value(), v.value())?));
        }
        Ok(out)
    }

    // ---- images ----

    pub fn image(&self, ns: &str, name: &str) -> Result<ImageRecord, MetadataError> {
        self.get(IMAGES, "image", ns, name)
    }

    pub fn images(&self, ns: &str) -> Result<Vec<ImageRecord>, MetadataError> {
        Ok(self.scan(IMAGES, Some(ns))?.into_iter().map(|(_, r)| r).collect())
    }

    /// Every image of every namespace, with its namespace.
    pub fn all_images(&self) -> Result<Vec<(String, ImageRecord)>, MetadataError> {
        self.scan(IMAGES, None)
    }

    /// Create an image, or replace it when `replace` is set. Returns the previous record.
    pub fn put_image(&self, ns: &str, rec: &ImageRecord, replace: bool) -> Result<Option<ImageRecord>, MetadataError> {
        let tx = self.db.begin_write()?;
        let prev;
        {
            let mut t = tx.open_table(IMAGES)?;
            let k = key(ns, &rec.name);
            prev = match t.get(k.as_str())? {
                Some(v) => Some(decode::<ImageRecord>(&k, v.value())?),
                None => None,
            };
            if prev.is_some() && !replace {
                return Err(MetadataError::AlreadyExists { kind: "image", name: rec.name.clone() });
            }
            let mut rec = rec.clone();
            if let Some(p) = &prev {
                rec.created = p.created;
            }
            t.insert(k.as_str(), encode(&rec).as_slice())?;
        }
        tx.commit()?;
        Ok(prev)
    }

    pub fn delete_image(&self, ns: &str, name: &str) -> Result<ImageRecord, MetadataError> {
        let tx = self.db.begin_write()?;
        let rec;
        {
            let mut t = tx.open_table(IMAGES)?;
            let k = key(ns, name);
            let removed = t.remove(k.as_str())?;
            rec = match removed {
                Some(v) => decode::<ImageRecord>(&k, v.value())?,
                None => return Err(MetadataError::NotFound { kind: "image", name: name.to_owned() }),
            };
        }
        tx.commit()?;
        Ok(rec)
    }

    // ---- snapshots ----

    pub fn snapshot(&self, ns: &str, k: &str) -> Result<SnapshotRecord, MetadataError> {
        self.get(self.snapshots, "snapshot", ns, k)
    }

    pub fn snapshots(&self, ns: &str) -> Result<Vec<SnapshotRecord>, MetadataError> {
        Ok(self.scan(self.snapshots, Some(ns))?.into_iter().map(|(_, r)| r).collect())
    }

    pub fn all_snapshots(&self) -> Result<Vec<(String, SnapshotRecord)>, MetadataError> {
        self.scan(self.snapshots, None)
    }

    /// Reserve a fresh snapshot directory id (never reused).
    pub fn next_snapshot_id(&self) -> Result<u64, MetadataError> {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if ids.0 >= ids.1 {
            let tx = self.db.begin_write()?;
            let last;
            {
                let mut t = tx.open_table(COUNTERS)?;
                last = t.get("snapshot_id")?.map(|v| v.value()).unwrap_or(0);
                t.insert("snapshot_id", last + ID_BLOCK)?;
            }
            tx.commit()?;
            *ids = (last + 1, last + ID_BLOCK + 1);
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }

    /// Insert a new snapshot record; fails if the key exists or the parent is
    /// not a committed snapshot.
    pub fn insert_snapshot(&self, ns: &str, rec: &SnapshotRecord) -> Result<(), MetadataError> {
        self.insert_snapshot_for(ns, rec, None)
    }

    /// Insert a snapshot and, in the same transaction, the container it is the
    /// writable layer of, with its spec (a new id and a free name in `ns`).
    pub fn insert_snapshot_for(
        &self,
        ns: &str,
        rec: &SnapshotRecord,
        container: Option<(&ContainerRecord, &oci_spec::runtime::Spec)>,
    ) -> Result<(), MetadataError> {
        let _w = container.map(|_| self.container_writes.lock().unwrap_or_else(|e| e.into_inner()));
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(self.snapshots)?;
            let k = key(ns, &rec.key);
            if t.get(k.as_str())?.is_some() {
                return Err(MetadataError::AlreadyExists { kind: "snapshot", name: rec.key.clone() });
            }
            check_parent(&t, ns, &rec.parent)?;
            t.insert(k.as_str(), encode(rec).as_slice())?;
        }
        if let Some((c, spec)) = container {
            insert_container_in(&tx, ns, c, spec)?;
        }
        tx.commit()?;
        if let Some((c, _)) = container {
            self.cache_container(ns, c.clone());
        }
        Ok(())
    }

    /// Atomically replace the active snapshot `active_key` by the committed `rec`.
    pub fn commit_snapshot(&self, ns: &str, active_key: &str, rec: &SnapshotRecord) -> Result<(), MetadataError> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(self.snapshots)?;
            let nk = key(ns, &rec.key);
            if t.get(nk.as_str())?.is_some() {
                return Err(MetadataError::AlreadyExists { kind: "snapshot", name: rec.key.clone() });
            }
            check_parent(&t, ns, &rec.parent)?;
            let ak = key(ns, active_key);
            if t.remove(ak.as_str())?.is_none() {
                return Err(MetadataError::NotFound { kind: "snapshot", name: active_key.to_owned() });
            }
            t.insert(nk.as_str(), encode(rec).as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn update_snapshot(&self, ns: &str, rec: &SnapshotRecord) -> Result<(), MetadataError> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(self.snapshots)?;
            let k = key(ns, &rec.key);
            if t.get(k.as_str())?.is_none() {
                return Err(MetadataError::NotFound { kind: "snapshot", name: rec.key.clone() });
            }
            t.insert(k.as_str(), encode(rec).as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Remove a snapshot record, refusing (HasChildren) while another
    /// snapshot names it as parent. The check and the removal are one transaction.
    pub fn delete_snapshot(&self, ns: &str, k: &str) -> Result<SnapshotRecord, MetadataError> {
        let tx = self.db.begin_write()?;
        let rec;
        {
            let mut t = tx.open_table(self.snapshots)?;
            let kk = key(ns, k);
            rec = match t.get(kk.as_str())? {
                Some(v) => decode::<SnapshotRecord>(&kk, v.value())?,
                None => return Err(MetadataError::NotFound { kind: "snapshot", name: k.to_owned() }),
            };
            let lo = format!("{ns}\0");
            let hi = format!("{ns}\u{1}");
            let mut children = 0;
            for item in t.range(lo.as_str()..hi.as_str())? {
                let (ck, v) = item?;
                if decode::<SnapshotRecord>(ck.value(), v.value())?.parent == k {
                    children += 1;
                }
            }
            if children > 0 {
                return Err(MetadataError::HasChildren { name: k.to_owned(), children });
            }
            t.remove(kk.as_str())?;
        }
        tx.commit()?;
        Ok(rec)
    }

    // ---- content labels ----

    pub fn content_labels(&self, digest: &Digest) -> Result<BTreeMap<String, String>, MetadataError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(CONTENT_LABELS)?;
        match t.get(digest.as_str())? {
            Some(v) => decode(digest.as_str(), v.value()),
            None => Ok(BTreeMap::new()),
        }
    }

    /// Replace a blob's labels; empty labels remove the record.
    pub fn set_content_labels(&self, digest: &Digest, labels: &BTreeMap<String, String>) -> Result<(), MetadataError> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(CONTENT_LABELS)?;
            if labels.is_empty() {
                t.remove(digest.as_str())?;
            } else {
                t.insert(digest.as_str(), encode(labels).as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Set one label on each of many blobs (keeping their other labels), in one transaction.
    pub fn add_content_labels(&self, entries: &[(Digest, String, String)]) -> Result<(), MetadataError> {
        if entries.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(CONTENT_LABELS)?;
            for (digest, k, v) in entries {
                let mut labels: BTreeMap<String, String> = match t.get(digest.as_str())? {
                    Some(v) => decode(digest.as_str(), v.value())?,
                    None => BTreeMap::new(),
                };
                labels.insert(k.clone(), v.clone());
                t.insert(digest.as_str(), encode(&labels).as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Drop the labels of many blobs in one transaction.
    pub fn remove_content_labels(&self, digests: &[Digest]) -> Result<(), MetadataError> {
        if digests.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(CONTENT_LABELS)?;
            for d in digests {
                t.remove(d.as_str())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Create or replace several images in one transaction (all or none).
    /// Returns, per record, whether a previous image of that name was replaced.
    pub fn put_images(&self, ns: &str, recs: &[ImageRecord]) -> Result<Vec<bool>, MetadataError> {
        let tx = self.db.begin_write()?;
        let mut replaced = Vec::new();
        {
            let mut t = tx.open_table(IMAGES)?;
            for rec in recs {
                let k = key(ns, &rec.name);
                let prev = match t.get(k.as_str())? {
                    Some(v) => Some(decode::<ImageRecord>(&k, v.value())?),
                    None => None,
                };
                let mut rec = rec.clone();
                if let Some(p) = &prev {
                    rec.created = p.created;
                }
                replaced.push(prev.is_some());
                t.insert(k.as_str(), encode(&rec).as_slice())?;
            }
        }
        tx.commit()?;
        Ok(replaced)
    }

    // ---- containers ----

    fn cache_container(&self, ns: &str, rec: ContainerRecord) {
        let mut map = self.containers.write().unwrap_or_else(|e| e.into_inner());
        map.entry(ns.to_owned()).or_default().insert(rec.id.clone(), Arc::new(rec));
    }

    fn uncache_container(&self, ns: &str, id: &str) {
        let mut map = self.containers.write().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = map.get_mut(ns) {
            m.remove(id);
            if m.is_empty() {
                map.remove(ns);
            }
        }
    }

    pub fn container(&self, ns: &str, id: &str) -> Result<ContainerRecord, MetadataError> {
        let map = self.containers.read().unwrap_or_else(|e| e.into_inner());
        match map.get(ns).and_then(|m| m.get(id)) {
            Some(rec) => Ok(ContainerRecord::clone(rec)),
            None => Err(MetadataError::NotFound { kind: "container", name: id.to_owned() }),
        }
    }

    /// The containers of `ns`, shared (no record is copied).
    pub fn containers(&self, ns: &str) -> Result<Vec<Arc<ContainerRecord>>, MetadataError> {
        let map = self.containers.read().unwrap_or_else(|e| e.into_inner());
        Ok(map.get(ns).map(|m| m.values().cloned().collect()).unwrap_or_default())
    }

    /// The runtime spec of a container.
    pub fn container_spec(&self, ns: &str, id: &str) -> Result<oci_spec::runtime::Spec, MetadataError> {
        self.get(CONTAINER_SPECS, "container spec", ns, id)
    }

    /// A container's spec as stored: its JSON, not decoded (what `Get` sends).
    pub fn container_spec_json(&self, ns: &str, id: &str) -> Result<Vec<u8>, MetadataError> {
        self.read(CONTAINER_SPECS, "container spec", ns, id, |_, json| Ok(json.to_vec()))
    }

    /// The id of the container named `name` in `ns`.
    pub fn container_id_by_name(&self, ns: &str, name: &str) -> Result<Option<String>, MetadataError> {
        let map = self.containers.read().unwrap_or_else(|e| e.into_inner());
        Ok(map.get(ns).and_then(|m| m.values().find(|c| c.name == name)).map(|c| c.id.clone()))
    }

    /// Up to `limit` ids of containers in `ns` that start with `prefix`.
    pub fn container_ids_with_prefix(&self, ns: &str, prefix: &str, limit: usize) -> Result<Vec<String>, MetadataError> {
        let map = self.containers.read().unwrap_or_else(|e| e.into_inner());
        let Some(m) = map.get(ns) else { return Ok(Vec::new()) };
        Ok(m.range(prefix.to_owned()..).map(|(id, _)| id).take_while(|id| id.starts_with(prefix)).take(limit).cloned().collect())
    }

    pub fn all_containers(&self) -> Result<Vec<(String, ContainerRecord)>, MetadataError> {
        let map = self.containers.read().unwrap_or_else(|e| e.into_inner());
        Ok(map.iter().flat_map(|(ns, m)| m.values().map(|c| (ns.clone(), ContainerRecord::clone(c)))).collect())
    }

    /// Insert a new container and its spec; its id and its name must both be free in `ns`.
    pub fn insert_container(&self, ns: &str, rec: &ContainerRecord, spec: &oci_spec::runtime::Spec) -> Result<(), MetadataError> {
        let _w = self.container_writes.lock().unwrap_or_else(|e| e.into_inner());
        let tx = self.db.begin_write()?;
        insert_container_in(&tx, ns, rec, spec)?;
        tx.commit()?;
        self.cache_container(ns, rec.clone());
        Ok(())
    }

    /// Delete a container record and, in the same transaction, its writable
    /// snapshot's record (when there is one). Returns both.
    pub fn delete_container_and_snapshot(
        &self,
        ns: &str,
        id: &str,
        snapshot_key: &str,
    ) -> Result<(ContainerRecord, Option<SnapshotRecord>), MetadataError> {
        let _w = self.container_writes.lock().unwrap_or_else(|e| e.into_inner());
        let tx = self.db.begin_write()?;
        let (rec, snap);
        {
            let mut t = tx.open_table(CONTAINERS)?;
            let k = key(ns, id);
            let removed = t.remove(k.as_str())?;
            rec = match removed {
                Some(v) => decode::<ContainerRecord>(&k, v.value())?,
                None => return Err(MetadataError::NotFound { kind: "container", name: id.to_owned() }),
            };
            tx.open_table(CONTAINER_SPECS)?.remove(k.as_str())?;
            let mut names = tx.open_table(CONTAINER_NAMES)?;
            let nk = key(ns, &rec.name);
            if names.get(nk.as_str())?.is_some_and(|v| v.value() == id) {
                names.remove(nk.as_str())?;
            }
        }
        {
            let mut t = tx.open_table(self.snapshots)?;
            let k = key(ns, snapshot_key);
            let removed = t.remove(k.as_str())?;
            snap = match removed {
                Some(v) => Some(decode::<SnapshotRecord>(&k, v.value())?),
                None => None,
            };
        }
        tx.commit()?;
        self.uncache_container(ns, id);
        Ok((rec, snap))
    }

    /// Change a container record in one transaction; `f` sees the current record.
    pub fn update_container(&self, ns: &str, id: &str, f: impl FnOnce(&mut ContainerRecord)) -> Result<ContainerRecord, MetadataError> {
        let _w = self.container_writes.lock().unwrap_or_else(|e| e.into_inner());
        let tx = self.db.begin_write()?;
        let rec;
        {
            let mut t = tx.open_table(CONTAINERS)?;
            let k = key(ns, id);
            let mut cur: ContainerRecord = match t.get(k.as_str())? {
                Some(v) => decode(&k, v.value())?,
                None => return Err(MetadataError::NotFound { kind: "container", name: id.to_owned() }),
            };
            let name = cur.name.clone();
            f(&mut cur);
            cur.updated = now_nanos();
            if cur.name != name {
                // A new name: free in `ns`, and the index follows.
                let mut names = tx.open_table(CONTAINER_NAMES)?;
                let nk = key(ns, &cur.name);
                if names.get(nk.as_str())?.is_some() {
                    return Err(MetadataError::AlreadyExists { kind: "container name", name: cur.name.clone() });
                }
                let old = key(ns, &name);
                if names.get(old.as_str())?.is_some_and(|v| v.value() == id) {
                    names.remove(old.as_str())?;
                }
                names.insert(nk.as_str(), cur.id.as_str())?;
            }
            t.insert(k.as_str(), encode(&cur).as_slice())?;
            rec = cur;
        }
        tx.commit()?;
        self.cache_container(ns, rec.clone());
        Ok(rec)
    }

    /// Change a container's record and its runtime spec together, in one transaction.
    pub fn update_container_and_spec(
        &self,
        ns: &str,
        id: &str,
        f: impl FnOnce(&mut ContainerRecord, &mut oci_spec::runtime::Spec),
    ) -> Result<ContainerRecord, MetadataError> {
        let _w = self.container_writes.lock().unwrap_or_else(|e| e.into_inner());
        let tx = self.db.begin_write()?;
        let k = key(ns, id);
        let rec;
        {
            let mut t = tx.open_table(CONTAINERS)?;
            let mut specs = tx.open_table(CONTAINER_SPECS)?;
            let mut cur: ContainerRecord = match t.get(k.as_str())? {
                Some(v) => decode(&k, v.value())?,
                None => return Err(MetadataError::NotFound { kind: "container", name: id.to_owned() }),
            };
            let mut spec: oci_spec::runtime::Spec = match specs.get(k.as_str())? {
                Some(v) => decode(&k, v.value())?,
                None => return Err(MetadataError::NotFound { kind: "container spec", name: id.to_owned() }),
            };
            let name = cur.name.clone();
            f(&mut cur, &mut spec);
            cur.name = name;
            cur.updated = now_nanos();
            t.insert(k.as_str(), encode(&cur).as_slice())?;
            specs.insert(k.as_str(), encode(&spec).as_slice())?;
            rec = cur;
        }
        tx.commit()?;
        self.cache_container(ns, rec.clone());
        Ok(rec)
    }

    // ---- build cache ----

    pub fn build_cache(&self, ns: &str, cache_key: &str) -> Result<Option<BuildCacheRecord>, MetadataError> {
        match self.get(BUILD_CACHE, "build cache entry", ns, cache_key) {
            Ok(r) => Ok(Some(r)),
            Err(MetadataError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every entry of every namespace: (namespace, cache key, record).
    pub fn all_build_cache(&self) -> Result<Vec<(String, String, BuildCacheRecord)>, MetadataError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(BUILD_CACHE)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            let (ns, ck) = split_key(k.value());
            out.push((ns.to_owned(), ck.to_owned(), decode(k.value(), v.value())?));
        }
        Ok(out)
    }

    /// Store entries and mark others used now, in one transaction.
    pub fn put_build_cache(&self, ns: &str, new: &[(String, BuildCacheRecord)], used: &[String]) -> Result<(), MetadataError> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(BUILD_CACHE)?;
            for (ck, rec) in new {
                t.insert(key(ns, ck).as_str(), encode(rec).as_slice())?;
            }
            let now = now_nanos();
            for ck in used {
                let k = key(ns, ck);
                let found = match t.get(k.as_str())? {
                    Some(v) => Some(decode::<BuildCacheRecord>(&k, v.value())?),
                    None => None,
                };
                if let Some(mut rec) = found {
                    rec.last_used = now;
                    t.insert(k.as_str(), encode(&rec).as_slice())?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Remove entries: (namespace, cache key) pairs. Returns how many were there.
    pub fn remove_build_cache(&self, entries: &[(String, String)]) -> Result<usize, MetadataError> {
        let tx = self.db.begin_write()?;
        let mut removed = 0;
        {
            let mut t = tx.open_table(BUILD_CACHE)?;
            for (ns, ck) in entries {
                if t.remove(key(ns, ck).as_str())?.is_some() {
                    removed += 1;
                }
            }
        }
        tx.commit()?;
        Ok(removed)
    }

    // ---- volumes ----

    pub fn volume(&self, ns: &str, name: &str) -> Result<VolumeRecord, MetadataError> {
        self.get(VOLUMES, "volume", ns, name)
    }

    pub fn volumes(&self, ns: &str) -> Result<Vec<VolumeRecord>, MetadataError> {
        Ok(self.scan(VOLUMES, Some(ns))?.into_iter().map(|(_, r)| r).collect())
    }

    /// Every volume of every namespace, with its namespace.
    pub fn all_volumes(&self) -> Result<Vec<(String, VolumeRecord)>, MetadataError> {
        self.scan(VOLUMES, None)
    }

    /// Store a new volume; its name must be free in `ns`.
    pub fn insert_volume(&self, ns: &str, rec: &VolumeRecord) -> Result<(), MetadataError> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(VOLUMES)?;
            let k = key(ns, &rec.name);
            if t.get(k.as_str())?.is_some() {
                return Err(MetadataError::AlreadyExists { kind: "volume", name: rec.name.clone() });
            }
            t.insert(k.as_str(), encode(rec).as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn delete_volume(&self, ns: &str, name: &str) -> Result<VolumeRecord, MetadataError> {
        let tx = self.db.begin_write()?;
        let rec;
        {
            let mut t = tx.open_table(VOLUMES)?;
            let k = key(ns, name);
            rec = match t.remove(k.as_str())? {
                Some(v) => decode::<VolumeRecord>(&k, v.value())?,
                None => return Err(MetadataError::NotFound { kind: "volume", name: name.to_owned() }),
            };
        }
        tx.commit()?;
        Ok(rec)
    }

    /// Namespaces that hold at least one record.
    pub fn namespaces(&self) -> Result<Vec<String>, MetadataError> {
        let mut set = BTreeSet::new();
        for (ns, _) in self.scan::<serde_json::Value>(IMAGES, None)? {
            set.insert(ns);
        }
        for (ns, _) in self.scan::<serde_json::Value>(self.snapshots, None)? {
            set.insert(ns);
        }
        for (ns, _) in self.scan::<serde_json::Value>(CONTAINERS, None)? {
            set.insert(ns);
        }
        for (ns, _) in self.scan::<serde_json::Value>(VOLUMES, None)? {
            set.insert(ns);
        }
        Ok(set.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(key: &str, parent: &str, kind: SnapshotKind, id: u64) -> SnapshotRecord {
        SnapshotRecord { key: key.into(), parent: parent.into(), kind, id, labels: Default::default(), created: 0, updated: 0 }
    }

    #[test]
    fn records_are_kept_per_namespace_and_survive_reopening() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("meta.redb");
        {
            let m = Metadata::open(&path, "overlayfs").unwrap();
            let rec = ImageRecord {
                name: "docker.io/library/a:latest".into(),
                target: DescriptorRecord { media_type: "m".into(), digest: Digest::of(b"x"), size: 1 },
                labels: Default::default(),
                created: 1,
                updated: 1,
            };
            m.put_image("default", &rec, false).unwrap();
            assert!(matches!(m.put_image("default", &rec, false), Err(MetadataError::AlreadyExists { .. })));
            m.put_image("other", &rec, false).unwrap();
            m.insert_snapshot("default", &snap("base", "", SnapshotKind::Committed, 1)).unwrap();
        }
        let m = Metadata::open(&path, "overlayfs").unwrap();
        assert_eq!(m.images("default").unwrap().len(), 1);
        assert_eq!(m.all_images().unwrap().len(), 2);
        assert_eq!(m.namespaces().unwrap(), vec!["default".to_string(), "other".to_string()]);
        assert!(m.images("defaul").unwrap().is_empty());
        assert!(m.snapshots("other").unwrap().is_empty());
    }

    #[test]
    fn a_snapshot_needs_a_committed_parent() {
        let tmp = tempfile::tempdir().unwrap();
        let m = Metadata::open(&tmp.path().join("m.redb"), "native").unwrap();
        assert!(matches!(m.insert_snapshot("ns", &snap("a", "missing", SnapshotKind::Active, 1)), Err(MetadataError::NotFound { .. })));
        m.insert_snapshot("ns", &snap("act", "", SnapshotKind::Active, 1)).unwrap();
        assert!(m.insert_snapshot("ns", &snap("b", "act", SnapshotKind::Active, 2)).is_err());
        m.commit_snapshot("ns", "act", &snap("done", "", SnapshotKind::Committed, 1)).unwrap();
        m.insert_snapshot("ns", &snap("b", "done", SnapshotKind::Active, 2)).unwrap();
        assert_eq!(m.next_snapshot_id().unwrap(), 1);
        assert_eq!(m.next_snapshot_id().unwrap(), 2);
        // Ids come in blocks: a reopened database never hands out one again.
        let path = tmp.path().join("m.redb");
        drop(m);
        let m = Metadata::open(&path, "native").unwrap();
        let next = m.next_snapshot_id().unwrap();
        assert!(next > 2, "{next}");
        let ids: Vec<u64> = (0..200).map(|_| m.next_snapshot_id().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    }

    /// A container record as the first releases wrote it: the spec a plain
    /// JSON object inside the record.
    fn v1_container(id: &str) -> Vec<u8> {
        let d = Digest::of(b"x");
        let desc = serde_json::json!({ "media_type": "application/vnd.oci.image.manifest.v1+json", "digest": d, "size": 1 });
        serde_json::to_vec(&serde_json::json!({
            "id": id, "name": "web", "image": "busybox:latest", "image_target": desc, "manifest": desc,
            "config_digest": d, "snapshot_key": format!("container-{id}"), "runtime": "runc",
            "config": { "command": ["sh"], "env": [], "mounts": [], "resources": {}, "network": "none" },
            "spec": { "ociVersion": "1.0.2", "root": { "path": "rootfs" }, "hostname": "h",
                      "process": { "user": { "uid": 0, "gid": 0 }, "args": ["sh"], "cwd": "/" },
                      "linux": { "cgroupsPath": "/berth/default/c1" } },
            "stop_signal": 15, "created": 1, "updated": 1
        }))
        .unwrap()
    }

    #[test]
    fn a_schema_1_database_is_migrated_and_its_containers_read_typed() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("m.redb");
        {
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(CONTAINERS).unwrap().insert(key("default", "c1").as_str(), v1_container("c1").as_slice()).unwrap();
            tx.commit().unwrap();
        }
        let m = Metadata::open(&path, "overlayfs").unwrap();
        let c = m.container("default", "c1").unwrap();
        assert_eq!((c.cgroups_path.as_str(), &c.args[..]), ("/berth/default/c1", &["sh".to_owned()][..]));
        let spec = m.container_spec("default", "c1").unwrap();
        assert_eq!(spec.hostname().as_deref(), Some("h"));
        assert_eq!(m.container_id_by_name("default", "web").unwrap().as_deref(), Some("c1"));
        assert_eq!(m.container_ids_with_prefix("default", "c", 2).unwrap(), vec!["c1".to_string()]);
        assert!(m.container_ids_with_prefix("default", "d", 2).unwrap().is_empty());
        // The spec is no longer in the record.
        let tx = m.db.begin_read().unwrap();
        let raw: serde_json::Value =
            serde_json::from_slice(tx.open_table(CONTAINERS).unwrap().get(key("default", "c1").as_str()).unwrap().unwrap().value())
                .unwrap();
        assert!(raw.get("spec").is_none(), "{raw}");
        drop(tx);
        let tx = m.db.begin_read().unwrap();
        assert_eq!(tx.open_table(COUNTERS).unwrap().get(SCHEMA_KEY).unwrap().map(|v| v.value()), Some(SCHEMA));
    }

    #[test]
    fn container_records_in_memory_follow_every_write_and_names_stay_unique() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("m.redb");
        let m = Metadata::open(&path, "overlayfs").unwrap();
        let raw = v1_container("c1");
        let mut rec: ContainerRecord = serde_json::from_slice(&raw).unwrap();
        let WithSpec { spec } = serde_json::from_slice(&raw).unwrap();
        rec.take_from_spec(&spec);
        m.insert_container("default", &rec, &spec).unwrap();
        let mut other = ContainerRecord { id: "c2".into(), ..rec.clone() };
        assert!(matches!(m.insert_container("default", &other, &spec), Err(MetadataError::AlreadyExists { kind: "container name", .. })));
        assert_eq!(m.containers("default").unwrap().len(), 1);
        // A new name frees the old one.
        m.update_container("default", "c1", |c| c.name = "web2".into()).unwrap();
        assert_eq!(m.container_id_by_name("default", "web2").unwrap().as_deref(), Some("c1"));
        assert_eq!(m.container_id_by_name("default", "web").unwrap(), None);
        m.insert_container("default", &other, &spec).unwrap();
        other.name = "web2".into();
        assert!(m.update_container("default", "c2", |c| c.name = "web2".into()).is_err(), "a taken name");
        assert_eq!(m.container("default", "c2").unwrap().name, "web", "a refused change leaves the record");
        m.delete_container_and_snapshot("default", "c1", "container-c1").unwrap();
        assert!(matches!(m.container("default", "c1"), Err(MetadataError::NotFound { .. })));
        assert_eq!(m.container_ids_with_prefix("default", "c", 2).unwrap(), vec!["c2".to_string()]);
        // What the database holds is what was in memory.
        drop(m);
        let m = Metadata::open(&path, "overlayfs").unwrap();
        let names: Vec<(String, String)> = m.all_containers().unwrap().into_iter().map(|(_, c)| (c.id, c.name)).collect();
        assert_eq!(names, vec![("c2".to_string(), "web".to_string())]);
        assert_eq!(m.container_id_by_name("default", "web2").unwrap(), None);
        assert!(m.container_spec("default", "c1").is_err(), "the spec goes with its container");
    }

    #[test]
    fn a_database_from_a_newer_berthd_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("m.redb");
        drop(Metadata::open(&path, "overlayfs").unwrap());
        {
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(COUNTERS).unwrap().insert(SCHEMA_KEY, SCHEMA + 1).unwrap();
            tx.commit().unwrap();
        }
        // (Opened for another snapshotter: not even its table is made.)
        assert!(matches!(Metadata::open(&path, "native"), Err(MetadataError::TooNew { .. })));
        let db = Database::create(&path).unwrap();
        let tx = db.begin_read().unwrap();
        assert_eq!(tx.open_table(COUNTERS).unwrap().get(SCHEMA_KEY).unwrap().map(|v| v.value()), Some(SCHEMA + 1));
        let tables: Vec<String> = tx.list_tables().unwrap().map(|t| redb::TableHandle::name(&t).to_owned()).collect();
        assert!(!tables.iter().any(|t| t == "snapshots.native"), "{tables:?}");
    }

    #[test]
    fn an_unreadable_container_record_stops_the_migration() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("m.redb");
        {
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(CONTAINERS).unwrap().insert(key("default", "c1").as_str(), b"{\"id\":1}".as_slice()).unwrap();
            tx.commit().unwrap();
        }
        assert!(matches!(Metadata::open(&path, "overlayfs"), Err(MetadataError::Corrupt { .. })));
    }
}
