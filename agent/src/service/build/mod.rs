//! The Build use case: a Dockerfile and a client's context in, an image out.
//!
//! A build receives the context's metadata, asks for the files its mirror
//! lacks ([`crate::build::context`]), then runs the stages the target needs,
//! independent ones at the same time. Every step has a cache key
//! ([`crate::build::cache`]); a step whose key has an entry is not run. A
//! step that runs produces the stage's next [`State`], stored as an unnamed
//! image, and its cache entry points at it:
//!
//! - metadata instructions (ENV, CMD, LABEL, ...) change the config;
//! - COPY (and ADD of local files) writes a layer tar of the files it copies
//!   and applies it to an active snapshot mounted in the agent, so that
//!   links of the image are followed inside it as a container would;
//! - RUN runs a container on an active snapshot of the stage, through the
//!   same container records, shims and runtime as `berthctl run`.
//!
//! Either way the active snapshot's changes become the layer (one pass: the
//! diff is written as tar, hashed for its diff id, compressed and hashed for
//! its digest), and the snapshot itself is committed under the layer's chain
//! id: nothing is unpacked again. A step that changes no file adds a history
//! entry and no layer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::images::ImageService;
use super::{blocking, validate_labels, Core, Error, Update};
use crate::build::context::{ContextError, Contexts, Entry, Mirror};
use crate::build::copy::{self, Ownership};
use crate::build::dockerfile::{self, words, Command, Dockerfile, Instruction, Kind};
use crate::build::state::State;
use crate::build::{cache, LABEL_BUILD};
use crate::container::config::NetworkMode;
use crate::content::random_hex;
use crate::digest::Digest;
use crate::image::oci::{self, Descriptor, Platform};
use crate::image::Progress;
use crate::metadata::{BuildCacheRecord, ImageRecord, SnapshotKind};
use crate::registry::{Credentials, PullOptions};

mod layer;
mod run;

use layer::conclude;

/// Most bytes of one Dockerfile.
pub const MAX_DOCKERFILE: usize = 1 << 20;
/// Output lines of a failed RUN step quoted in its error.
const LAST_LINES: usize = 5;

/// What a client asks to build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub dockerfile: Vec<u8>,
    pub dockerfile_name: String,
    pub dockerignore: Vec<u8>,
    pub tags: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    pub target: String,
    pub no_cache: bool,
    pub pull: bool,
    pub labels: BTreeMap<String, String>,
    pub network: String,
    pub secret_ids: Vec<String>,
    pub context_key: String,
    pub plain_http: bool,
    pub creds: Option<Credentials>,
}

/// What the client sends after the options.
#[derive(Debug)]
pub enum BuildInput {
    /// Context entries: (path, st_mode, size, mtime in ns, link target).
    Entries {
        entries: Vec<(String, u32, u64, i64, String)>,
        last: bool,
    },
    File {
        path: String,
        data: Vec<u8>,
        eof: bool,
    },
    Secret {
        id: String,
        data: Option<Vec<u8>>,
    },
}

/// A step's state, as the client is told.
#[derive(Debug, Clone)]
pub struct StepEvent {
    pub stage: String,
    pub index: u32,
    pub total: u32,
    pub instruction: String,
    pub status: &'static str,
    pub millis: i64,
}

/// What a build reports as it goes.
#[derive(Debug)]
pub enum BuildEvent {
    Need(Vec<String>),
    Step(StepEvent),
    Output { stage: String, index: u32, data: Vec<u8> },
    Pull(Progress),
    Secret(String),
}

/// What a build made.
#[derive(Debug, Clone)]
pub struct BuildResult {
    pub digest: Digest,
    pub image_id: Digest,
    pub names: Vec<String>,
    pub millis: i64,
    pub steps_cached: u32,
    pub steps_run: u32,
    pub context_bytes: u64,
}

/// What a prune removed.
#[derive(Debug, Clone, Default)]
pub struct Pruned {
    pub entries: u64,
    pub blobs: u64,
    pub snapshots: u64,
    pub contexts: u64,
    /// Cache mounts' directories removed (with `all` only).
    pub cache_mounts: u64,
}

#[derive(Clone)]
pub struct BuildService {
    core: Arc<Core>,
    images: ImageService,
    contexts: Arc<Contexts>,
    /// Cache mounts in use by a RUN step with `sharing=locked` (or private), by directory.
    cache_locks: run::CacheLocks,
    /// Cache mounts any running step uses.
    cache_in_use: run::CacheInUse,
}

/// One running build: what every stage and step shares.
struct Run {
    core: Arc<Core>,
    images: ImageService,
    ns: String,
    id: String,
    opts: BuildOptions,
    file: Dockerfile,
    mirror: Mirror,
    events: mpsc::Sender<BuildEvent>,
    /// What the client sends after the context (answers to secret requests).
    input: tokio::sync::Mutex<mpsc::Receiver<BuildInput>>,
    cache_locks: run::CacheLocks,
    cache_in_use: run::CacheInUse,
    /// Meta args (before the first FROM), as given or defaulted.
    meta: BTreeMap<String, String>,
    total: std::sync::atomic::AtomicU32,
    counter: std::sync::atomic::AtomicU32,
    cached: std::sync::atomic::AtomicU32,
    ran: std::sync::atomic::AtomicU32,
    /// Cache entries used (marked at the end).
    used: std::sync::Mutex<Vec<String>>,
    /// SOURCE_DATE_EPOCH, when given: times are clamped to it.
    epoch: Option<i64>,
    /// Images pinned against collection while the build runs: every state it uses.
    pins: Pins,
    /// Set when a stage failed: the others stop their running step.
    stop: tokio::sync::watch::Sender<bool>,
}

/// Pin ids of a build's states, unpinned when the build is dropped.
type Pins = Arc<std::sync::Mutex<Vec<u64>>>;

impl Drop for Run {
    fn drop(&mut self) {
        for id in self.pins.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            self.core.images.unpin(id);
        }
    }
}

/// Pin `desc` for the build (`pins`).
fn pin(core: &Core, pins: &Pins, ns: &str, desc: &Descriptor) {
    let id = core.images.pin(ns, desc);
    pins.lock().unwrap_or_else(|e| e.into_inner()).push(id);
}

/// Whole seconds in RFC 3339 (`2023-11-14T22:13:20Z`), as SOURCE_DATE_EPOCH gives them.
fn rfc3339(secs: i64) -> String {
    berth_common::time::format_rfc3339_nano(secs, 0).replace(".000000000Z", "Z")
}

impl BuildService {
    pub(crate) fn new(core: Arc<Core>, images: ImageService) -> Self {
        let contexts = Arc::new(Contexts::new(core.config.root.join("build").join("contexts")));
        BuildService { core, images, contexts, cache_locks: Default::default(), cache_in_use: Default::default() }
    }

    /// Remove what builds left behind when the agent stopped mid-build:
    /// their containers and active snapshots (both carry [`LABEL_BUILD`]).
    pub async fn recover(&self) {
        let core = &self.core;
        match core.meta.all_containers() {
            Ok(all) => {
                for (ns, rec) in all.into_iter().filter(|(_, r)| r.labels.contains_key(LABEL_BUILD)) {
                    tracing::info!(namespace = %ns, container = %rec.id, "removing the container of an interrupted build");
                    if let Err(e) = core.tasks.delete(&ns, &rec, true).await {
                        tracing::debug!(container = %rec.id, error = %e, "deleting a build container's task");
                    }
                    if let Err(e) = core.containers.delete(&ns, &rec) {
                        tracing::warn!(container = %rec.id, error = %e, "removing a build container");
                    }
                    core.tasks.forget_container(&ns, &rec.id);
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing containers"),
        }
        // Mounts first (what the snapshots and scratch files lie under), then the rest.
        let build = core.config.root.join("build");
        if let Ok(dirs) = std::fs::read_dir(build.join("mnt")) {
            let mut dirs: Vec<_> = dirs.flatten().map(|d| d.path()).collect();
            // Nested mounts (an rw bind's overlay) first.
            dirs.sort_by_key(|d| std::cmp::Reverse(d.as_os_str().len()));
            for d in &dirs {
                for sub in ["merged", ""] {
                    let p = if sub.is_empty() { d.clone() } else { d.join(sub) };
                    let _ = rustix::mount::unmount(&p, rustix::mount::UnmountFlags::DETACH);
                }
            }
            // Never into something still mounted (a snapshot's files).
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            let still: Vec<&str> = mounts.lines().filter_map(|l| l.split(' ').nth(4)).collect();
            for d in &dirs {
                let prefix = d.to_string_lossy();
                if still.iter().any(|m| m.starts_with(prefix.as_ref())) {
                    tracing::warn!(path = %d.display(), "a build mount could not be removed");
                    continue;
                }
                let _ = std::fs::remove_dir_all(d);
            }
        }
        if let Ok(all) = core.meta.all_snapshots() {
            for (ns, s) in all.into_iter().filter(|(_, s)| s.kind != SnapshotKind::Committed && s.labels.contains_key(LABEL_BUILD)) {
                if let Err(e) = core.snapshots.remove(&ns, &s.key) {
                    tracing::warn!(key = %s.key, error = %e, "removing a build snapshot");
                }
            }
        }
        // Secret values of steps that never ended, and fresh contexts of builds that never did.
        let _ = std::fs::remove_dir_all(build.join("secrets"));
        if let Ok(dirs) = std::fs::read_dir(build.join("contexts")) {
            for d in dirs.flatten().filter(|d| d.file_name().to_string_lossy().starts_with("tmp-")) {
                let _ = std::fs::remove_dir_all(d.path());
            }
        }
    }

    /// Run a build. `input` carries what the client sends after the options;
    /// `events` what it is told. Dropping `events`' receiver cancels the build.
    pub async fn build(
        &self,
        ns: &str,
        opts: BuildOptions,
        mut input: mpsc::Receiver<BuildInput>,
        events: mpsc::Sender<BuildEvent>,
    ) -> Result<BuildResult, Error> {
        let t0 = Instant::now();
        if opts.dockerfile.len() > MAX_DOCKERFILE {
            return Err(Error::InvalidArgument(format!("the Dockerfile is larger than {MAX_DOCKERFILE} bytes")));
        }
        validate_labels(&opts.labels)?;
        let mut names = Vec::new();
        for t in &opts.tags {
            let r = crate::image::reference::Reference::parse(t).map_err(crate::image::ImageError::from)?;
            names.push(r.to_string());
        }
        let fname = if opts.dockerfile_name.is_empty() { "Dockerfile".to_owned() } else { opts.dockerfile_name.clone() };
        let text = String::from_utf8(opts.dockerfile.clone()).map_err(|_| Error::InvalidArgument(format!("{fname} is not UTF-8 text")))?;
        let file = dockerfile::parse(&text).map_err(|e| Error::InvalidArgument(e.with_file(fname.clone()).to_string()))?;
        let ignore = berth_common::ignore::Patterns::parse(&String::from_utf8_lossy(&opts.dockerignore))
            .map_err(|e| Error::InvalidArgument(format!(".dockerignore: {e}")))?;

        // The context: metadata, then the files the mirror lacks.
        let contexts = self.contexts.clone();
        // Each namespace has its own mirrors.
        let key = if opts.context_key.is_empty() { String::new() } else { format!("{ns}\0{}", opts.context_key) };
        let mut mirror = blocking(move || {
            contexts.open(&key).map_err(|e| match e {
                ContextError::Busy => Error::DeadlineExceeded(e.to_string()),
                e => Error::Internal(e.to_string()),
            })
        })
        .await?;
        let mut ignored_dirs = Vec::new();
        loop {
            match recv(&mut input).await? {
                Some(BuildInput::Entries { entries, last }) => {
                    for (path, mode, size, mtime, link) in entries {
                        let entry = Entry::from_mode(mode, size, mtime, link)
                            .ok_or_else(|| Error::InvalidArgument(format!("context entry {path:?} is not a file, directory or symlink")))?;
                        if !ignore.matches(&path) {
                            mirror.describe(path, entry).map_err(|e| Error::InvalidArgument(e.to_string()))?;
                        } else if entry.kind == crate::build::context::Kind::Dir {
                            // Kept if an exception (`!dir/file`) keeps something below it.
                            ignored_dirs.push((path, entry));
                        }
                    }
                    if last {
                        break;
                    }
                }
                Some(_) => return Err(Error::InvalidArgument("the context's entries come before anything else".into())),
                None => return Err(Error::Cancelled("the client went away".into())),
            }
        }
        for (path, entry) in ignored_dirs {
            let below = format!("{path}/");
            if mirror.described().range(below.clone()..).next().is_some_and(|(p, _)| p.starts_with(&below)) {
                mirror.describe(path, entry).map_err(|e| Error::InvalidArgument(e.to_string()))?;
            }
        }
        let need = mirror.plan().map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let mut waiting = need.len();
        // In parts, so that no message outgrows what a client decodes.
        for part in need.chunks(NEED_PER_MESSAGE) {
            send(&events, BuildEvent::Need(part.to_vec())).await?;
        }
        if need.is_empty() {
            send(&events, BuildEvent::Need(Vec::new())).await?;
        }
        while waiting > 0 {
            match recv(&mut input).await? {
                Some(BuildInput::File { path, data, eof }) => {
                    tokio::task::block_in_place(|| mirror.receive(&path, &data, eof)).map_err(|e| Error::InvalidArgument(e.to_string()))?;
                    if eof {
                        waiting -= 1;
                    }
                }
                Some(_) => return Err(Error::InvalidArgument("files asked for come before anything else".into())),
                None => return Err(Error::Cancelled("the client went away".into())),
            }
        }
        tokio::task::block_in_place(|| mirror.finish()).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let context_bytes = mirror.received;

        // Variables before the first FROM.
        let mut meta = BTreeMap::new();
        for a in &file.meta_args {
            let value = match opts.build_args.get(&a.name) {
                Some(v) => Some(v.clone()),
                None => match &a.default {
                    Some(d) => Some(expand(d, file.escape, &|k| meta.get(k).cloned())?),
                    None => None,
                },
            };
            if let Some(v) = value {
                meta.insert(a.name.clone(), v);
            }
        }
        let epoch = opts
            .build_args
            .get("SOURCE_DATE_EPOCH")
            .map(|v| v.parse::<i64>().map_err(|_| Error::InvalidArgument(format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"))))
            .transpose()?;
        let target = match opts.target.as_str() {
            "" => file.stages.len() - 1,
            t => file
                .stages
                .iter()
                .position(|s| s.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(t)))
                .ok_or_else(|| Error::InvalidArgument(format!("target stage {t:?} is not in {fname}")))?,
        };
        let needed = needed_stages(&file, target, &meta)?;
        let total: u32 = needed.iter().map(|&i| file.stages[i].instructions.len() as u32 + 1).sum();
        let run = Arc::new(Run {
            core: self.core.clone(),
            images: self.images.clone(),
            ns: ns.to_owned(),
            id: random_hex(8),
            opts,
            file,
            mirror,
            events,
            input: tokio::sync::Mutex::new(input),
            cache_locks: self.cache_locks.clone(),
            cache_in_use: self.cache_in_use.clone(),
            meta,
            total: total.into(),
            counter: Default::default(),
            cached: Default::default(),
            ran: Default::default(),
            used: Default::default(),
            epoch,
            pins: Default::default(),
            stop: tokio::sync::watch::Sender::new(false),
        });
        let result = run.clone().stages(needed, target).await;
        let used = std::mem::take(&mut *run.used.lock().unwrap_or_else(|e| e.into_inner()));
        let (meta_db, ns2) = (self.core.meta.clone(), ns.to_owned());
        let _ = blocking(move || Ok(meta_db.put_build_cache(&ns2, &[], &used)?)).await;
        let state = result?;
        if run.events.is_closed() {
            return Err(Error::Cancelled("the client went away".into()));
        }

        // The image: the final state, with the labels asked for, named.
        let mut state = state;
        if !run.opts.labels.is_empty() {
            let mut labels = state.get("Labels").and_then(Value::as_object).cloned().unwrap_or_default();
            for (k, v) in &run.opts.labels {
                labels.insert(k.clone(), Value::String(v.clone()));
            }
            state.set("Labels", Value::Object(labels));
        }
        let (core, ns2, names2) = (self.core.clone(), ns.to_owned(), names.clone());
        let (digest, image_id) = blocking(move || {
            let images = &core.images;
            let lease = images.lease();
            let (desc, config) = store_state(&lease, &state)?;
            let _hold = images.hold_gc();
            for n in &names2 {
                images.put(&ns2, n, &desc, &BTreeMap::new())?;
            }
            // Untagged, the image is kept under its own digest (docker's
            // dangling `<none>` image), found by its id like any other.
            if names2.is_empty() {
                images.put(&ns2, desc.digest.as_str(), &desc, &BTreeMap::new())?;
            }
            Ok((desc.digest, config))
        })
        .await?;
        for n in &names {
            self.core.events.publish(ns, "/images/create", n, &[("digest", digest.to_string())]);
        }
        Ok(BuildResult {
            digest,
            image_id,
            names,
            millis: t0.elapsed().as_millis() as i64,
            steps_cached: run.cached.load(std::sync::atomic::Ordering::Relaxed),
            steps_run: run.ran.load(std::sync::atomic::Ordering::Relaxed),
            context_bytes,
        })
    }

    /// Remove build cache entries (all, or those unused for `keep`), the
    /// context mirrors no build uses, and then what no image needs.
    pub async fn prune(&self, all: bool, keep: std::time::Duration) -> Result<Pruned, Error> {
        let (core, contexts, in_use) = (self.core.clone(), self.contexts.clone(), self.cache_in_use.clone());
        blocking(move || {
            // With `all`, the cache mounts' directories go too (those no running step mounts).
            let mut mounts = 0u64;
            if all {
                let used = in_use.lock().unwrap_or_else(|e| e.into_inner());
                if let Ok(dirs) = std::fs::read_dir(core.config.root.join("build").join("cache")) {
                    for d in dirs.flatten().filter(|d| !used.contains_key(&d.path())) {
                        if std::fs::remove_dir_all(d.path()).is_ok() {
                            mounts += 1;
                        }
                    }
                }
            }
            let cutoff = crate::metadata::now_nanos() - keep.as_nanos() as i64;
            let doomed: Vec<(String, String)> = core
                .meta
                .all_build_cache()?
                .into_iter()
                .filter(|(_, _, r)| all || r.last_used < cutoff)
                .map(|(ns, k, _)| (ns, k))
                .collect();
            let entries = core.meta.remove_build_cache(&doomed)? as u64;
            let contexts = contexts.prune().map_err(|e| Error::Internal(e.to_string()))? as u64;
            let stats = core.images.gc()?;
            Ok(Pruned { entries, blobs: stats.blobs_removed, snapshots: stats.snapshots_removed, contexts, cache_mounts: mounts })
        })
        .await
    }
}

/// Paths per `Need` message.
const NEED_PER_MESSAGE: usize = 8192;
/// Longest the agent waits for the client's next message while it expects one.
const CLIENT_IDLE: std::time::Duration = std::time::Duration::from_secs(120);

/// The client's next message, within [`CLIENT_IDLE`].
async fn recv(input: &mut mpsc::Receiver<BuildInput>) -> Result<Option<BuildInput>, Error> {
    tokio::time::timeout(CLIENT_IDLE, input.recv()).await.map_err(|_| {
        Error::DeadlineExceeded(format!("the client sent nothing for {} s while the build waited for it", CLIENT_IDLE.as_secs()))
    })
}

async fn send(events: &mpsc::Sender<BuildEvent>, e: BuildEvent) -> Result<(), Error> {
    events.send(e).await.map_err(|_| Error::Cancelled("the client went away".into()))
}

fn expand(raw: &str, escape: char, env: &dyn Fn(&str) -> Option<String>) -> Result<String, Error> {
    words::expand_word(raw, escape, env).map_err(|e| Error::InvalidArgument(e.to_string()))
}

/// The stages `target` needs (itself included), in Dockerfile order.
fn needed_stages(file: &Dockerfile, target: usize, meta: &BTreeMap<String, String>) -> Result<Vec<usize>, Error> {
    let mut needed = HashSet::new();
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if !needed.insert(i) {
            continue;
        }
        for dep in stage_deps(file, i, meta)? {
            todo.push(dep);
        }
    }
    let mut v: Vec<usize> = needed.into_iter().collect();
    v.sort_unstable();
    Ok(v)
}

/// A stage named by `name` (its name or its index) among those before `before`.
fn stage_ref(file: &Dockerfile, name: &str, before: usize) -> Option<usize> {
    if let Ok(i) = name.parse::<usize>() {
        return (i < before).then_some(i);
    }
    file.stages[..before].iter().rposition(|s| s.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name)))
}

/// Stages stage `i` reads: its base, the sources of `COPY --from`, and those of `RUN --mount=from=`.
fn stage_deps(file: &Dockerfile, i: usize, meta: &BTreeMap<String, String>) -> Result<Vec<usize>, Error> {
    let s = &file.stages[i];
    let mut deps = Vec::new();
    let base = expand(&s.base, file.escape, &|k| meta.get(k).cloned())?;
    if let Some(d) = stage_ref(file, &base, i) {
        deps.push(d);
    }
    // Words that name a stage may use the meta args (a stage's own ARGs are
    // not known before it runs: BuildKit reads them the same way).
    let named = |raw: &str| expand(raw, file.escape, &|k| meta.get(k).cloned()).ok().and_then(|n| stage_ref(file, &n, i));
    for ins in &s.instructions {
        match &ins.kind {
            Kind::Copy(c) | Kind::Add(c) => deps.extend(c.from.as_deref().and_then(named)),
            Kind::Run(r) => {
                for raw in &r.mounts {
                    let m = expand(raw, file.escape, &|k| meta.get(k).cloned()).ok().and_then(|m| dockerfile::parse_mount(&m).ok());
                    deps.extend(m.and_then(|m| m.from).as_deref().and_then(named));
                }
            }
            _ => {}
        }
    }
    deps.sort_unstable();
    deps.dedup();
    Ok(deps)
}

/// Store a state as an unnamed image (under `lease`): (manifest descriptor, config digest).
fn store_state(lease: &crate::image::Lease<'_>, state: &State) -> Result<(Descriptor, Digest), Error> {
    let (config, manifest) = state.documents();
    let publish = lease.publish();
    let config_digest = publish.put(&config)?;
    let manifest = manifest(&config_digest);
    let digest = publish.put(&manifest)?;
    drop(publish);
    Ok((
        Descriptor {
            media_type: oci::MEDIA_OCI_MANIFEST.to_owned(),
            digest,
            size: manifest.len() as u64,
            annotations: Default::default(),
            platform: None,
        },
        config_digest,
    ))
}

/// The scope of one stage's variables.
#[derive(Clone, Default)]
struct Vars {
    /// The stage's index in the Dockerfile.
    stage: usize,
    /// ARGs declared in the stage, with their values.
    args: BTreeMap<String, String>,
}

/// The proxy variables every build may set without declaring them.
const PREDEFINED_ARGS: [&str; 8] =
    ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy", "NO_PROXY", "no_proxy"];

impl Run {
    fn ts(&self) -> String {
        match self.epoch {
            Some(e) => rfc3339(e),
            None => {
                let now = crate::metadata::now_nanos();
                berth_common::time::format_rfc3339_nano(now.div_euclid(1_000_000_000), now.rem_euclid(1_000_000_000) as u32)
            }
        }
    }

    fn stage_name(&self, i: usize) -> String {
        self.file.stages[i].name.clone().unwrap_or_else(|| format!("stage-{i}"))
    }

    /// Run the needed stages, each once its dependencies are done, at the same time where they can.
    async fn stages(self: Arc<Self>, needed: Vec<usize>, target: usize) -> Result<State, Error> {
        let mut done: HashMap<usize, State> = HashMap::new();
        let mut running = tokio::task::JoinSet::new();
        let mut started = HashSet::new();
        loop {
            for &i in &needed {
                if started.contains(&i) {
                    continue;
                }
                let deps = stage_deps(&self.file, i, &self.meta)?;
                if deps.iter().all(|d| done.contains_key(d)) {
                    started.insert(i);
                    let inputs: HashMap<usize, State> = deps.iter().map(|d| (*d, done[d].clone())).collect();
                    let run = self.clone();
                    running.spawn(async move { (i, run.stage(i, inputs).await) });
                }
            }
            match running.join_next().await {
                Some(Ok((i, Ok(state)))) => {
                    done.insert(i, state);
                }
                Some(Ok((_, Err(e)))) => {
                    // The others stop their running step and clean up before the build ends.
                    self.stop.send_replace(true);
                    while running.join_next().await.is_some() {}
                    return Err(e);
                }
                Some(Err(e)) => {
                    self.stop.send_replace(true);
                    while running.join_next().await.is_some() {}
                    return Err(Error::Internal(format!("a build stage failed: {e}")));
                }
                None => break,
            }
        }
        done.remove(&target).ok_or_else(|| Error::Internal("the target stage did not run".into()))
    }

    async fn step_event(&self, stage: &str, index: u32, instruction: &str, status: &'static str, millis: i64) {
        let _ = self
            .events
            .send(BuildEvent::Step(StepEvent {
                stage: stage.to_owned(),
                index,
                total: self.total.load(std::sync::atomic::Ordering::Relaxed),
                instruction: instruction.to_owned(),
                status,
                millis,
            }))
            .await;
    }

    /// One stage: its base, then its instructions.
    async fn stage(self: Arc<Self>, i: usize, inputs: HashMap<usize, State>) -> Result<State, Error> {
        let stage = &self.file.stages[i];
        let sname = self.stage_name(i);
        let t0 = Instant::now();
        let index = self.counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let from_text = format!("FROM {}", stage.base);
        self.step_event(&sname, index, &from_text, "started", 0).await;
        let mut state = match self.base_state(i, &inputs).await {
            Ok(s) => s,
            Err(e) => {
                self.step_event(&sname, index, &from_text, "failed", t0.elapsed().as_millis() as i64).await;
                return Err(self.located(stage.line, "FROM", e));
            }
        };
        if let Some(e) = self.epoch {
            // SOURCE_DATE_EPOCH changes every time a step writes: it is part of every key.
            state.key = cache::key(&[("parent", &state.key), ("epoch", &e.to_string())]);
        }
        self.step_event(&sname, index, &from_text, "done", t0.elapsed().as_millis() as i64).await;
        let mut vars = Vars { stage: i, ..Vars::default() };
        // Triggers of the base image run first.
        let triggers: Vec<String> = state
            .get("OnBuild")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        if !triggers.is_empty() {
            state.set("OnBuild", Value::Null);
        }
        let mut cmd_set = false;
        self.total.fetch_add(triggers.len() as u32, std::sync::atomic::Ordering::Relaxed);
        for t in &triggers {
            let index = self.counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            // Triggers are read with the default escape, whatever the child file's.
            let ins = dockerfile::parse_instruction(t, '\\').map_err(|e| {
                let base = expand(&stage.base, self.file.escape, &|k| self.meta.get(k).cloned()).unwrap_or_else(|_| stage.base.clone());
                Error::InvalidArgument(format!("ONBUILD trigger {t:?} of {base}: {e}"))
            })?;
            state = self.step(&sname, index, &ins, state, &mut vars, &inputs, &mut cmd_set).await?;
        }
        for ins in &stage.instructions {
            let index = self.counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            state = self.step(&sname, index, ins, state, &mut vars, &inputs, &mut cmd_set).await?;
        }
        Ok(state)
    }

    /// The state stage `i` starts from: a stage it names, scratch, or an image.
    async fn base_state(&self, i: usize, inputs: &HashMap<usize, State>) -> Result<State, Error> {
        let stage = &self.file.stages[i];
        let base = expand(&stage.base, self.file.escape, &|k| self.meta.get(k).cloned())?;
        if let Some(p) = &stage.platform {
            // The build's platform variables, as BuildKit predefines them.
            let host = Platform::default_platform();
            let host = format!("{}/{}", host.os, host.architecture);
            let vars = |k: &str| match k {
                "BUILDPLATFORM" | "TARGETPLATFORM" => Some(host.clone()),
                k => self.meta.get(k).cloned(),
            };
            let p = expand(p, self.file.escape, &vars)?;
            if p != host {
                return Err(Error::InvalidArgument(format!("--platform={p}: this agent builds for {host} only")));
            }
        }
        match stage_ref(&self.file, &base, i) {
            Some(d) => inputs.get(&d).cloned().ok_or_else(|| Error::Internal(format!("stage {d} did not run"))),
            None if base.eq_ignore_ascii_case("scratch") => Ok(State::scratch()),
            None => self.base_image(&base).await,
        }
    }

    /// `e` with the Dockerfile's name, the line and the instruction before it
    /// (a RUN that failed says its line alone); its code stays its own.
    fn located(&self, line: usize, keyword: &str, e: Error) -> Error {
        let fname = if self.opts.dockerfile_name.is_empty() { "Dockerfile" } else { &self.opts.dockerfile_name };
        match e {
            Error::InvalidArgument(m) => Error::InvalidArgument(format!("{fname}:{line}: {keyword}: {m}")),
            Error::Aborted(m) => Error::Aborted(format!("{fname}:{line}: {m}")),
            // The client went away, or another stage failed: nothing about this line.
            e @ Error::Cancelled(_) => e,
            e => Error::Context { context: format!("{fname}:{line}: {keyword}"), inner: Box::new(e) },
        }
    }

    /// The state of a base image: from the store, or pulled when missing (or with --pull).
    async fn base_image(&self, name: &str) -> Result<State, Error> {
        let (core, ns, n) = (self.core.clone(), self.ns.clone(), name.to_owned());
        let found = if self.opts.pull {
            None
        } else {
            blocking(move || match core.images.find_one(&ns, &n) {
                Ok(r) => Ok(Some(r)),
                Err(crate::image::ImageError::NotFound(_)) => Ok(None),
                Err(e) => Err(e.into()),
            })
            .await?
        };
        let record = match found {
            Some(r) => r,
            None => {
                let opts = PullOptions {
                    reference: name.to_owned(),
                    platform: Platform::default_platform(),
                    all_platforms: false,
                    plain_http: self.opts.plain_http,
                    creds: self.opts.creds.clone(),
                };
                // Its errors name the image (a registry's say only the URL it asked).
                let pulling = |e: Error| Error::Context { context: format!("pulling {name}"), inner: Box::new(e) };
                let mut rx = self.images.pull(&self.ns, opts).map_err(pulling)?;
                loop {
                    match rx.recv().await {
                        Some(Update::Progress(p)) => {
                            let _ = self.events.try_send(BuildEvent::Pull(p));
                        }
                        Some(Update::Done(r)) => break r.map_err(pulling)?.record,
                        None => return Err(Error::Internal("the pull stopped without a result".into())),
                    }
                }
            }
        };
        let core = self.core.clone();
        let ns = self.ns.clone();
        let pins = self.pins.clone();
        blocking(move || {
            // Pinned for the build: a concurrent rmi of the base leaves its layers.
            let hold = core.images.hold_gc();
            pin(&core, &pins, &ns, &crate::image::target_descriptor(&record));
            let resolved = core.images.resolve(&record, &Platform::default_platform())?;
            if !core.images.is_unpacked(&ns, &resolved) {
                core.images.unpack(&ns, &resolved, &|_| {})?;
            }
            drop(hold);
            let key = cache::key(&[("base", resolved.manifest_desc.digest.as_str())]);
            State::of_image(&resolved.manifest, &resolved.config_json, &resolved.config.rootfs.diff_ids, key)
                .map_err(Error::InvalidArgument)
        })
        .await
    }

    /// Variables an instruction's words see: the stage's ARGs, then its ENV (which wins).
    fn lookup(&self, state: &State, vars: &Vars) -> impl Fn(&str) -> Option<String> {
        let mut all = vars.args.clone();
        for (k, v) in state.env() {
            all.insert(k, v);
        }
        move |k: &str| all.get(k).cloned()
    }

    /// Run (or find in the cache) one instruction: shown started, then done,
    /// cached or failed (whatever failed it, its words or its work).
    #[allow(clippy::too_many_arguments)]
    async fn step(
        &self,
        sname: &str,
        index: u32,
        ins: &Instruction,
        state: State,
        vars: &mut Vars,
        inputs: &HashMap<usize, State>,
        cmd_set: &mut bool,
    ) -> Result<State, Error> {
        if self.events.is_closed() {
            return Err(Error::Cancelled("the client went away".into()));
        }
        if *self.stop.borrow() {
            return Err(Error::Cancelled("another stage failed".into()));
        }
        let t0 = Instant::now();
        self.step_event(sname, index, &ins.text, "started", 0).await;
        let result = self.step_started(sname, index, ins, state, vars, inputs, cmd_set).await;
        if result.is_err() {
            self.step_event(sname, index, &ins.text, "failed", t0.elapsed().as_millis() as i64).await;
        }
        result
    }

    /// [`Run::step`], once shown started.
    #[allow(clippy::too_many_arguments)]
    async fn step_started(
        &self,
        sname: &str,
        index: u32,
        ins: &Instruction,
        mut state: State,
        vars: &mut Vars,
        inputs: &HashMap<usize, State>,
        cmd_set: &mut bool,
    ) -> Result<State, Error> {
        let t0 = Instant::now();
        let esc = self.file.escape;
        let at = |e: Error| -> Error { self.located(ins.line, ins.keyword, e) };
        let env = self.lookup(&state, vars);
        let created = self.ts();
        // Metadata instructions: the config changes, and the key covers the result.
        let mut meta_change = true;
        match &ins.kind {
            Kind::Arg(defs) => {
                for d in defs {
                    let given = self.opts.build_args.get(&d.name).cloned();
                    let value = match (given, &d.default) {
                        (Some(v), _) => Some(v),
                        (None, Some(def)) => Some(expand(def, esc, &env).map_err(at)?),
                        (None, None) => self.meta.get(&d.name).cloned(),
                    };
                    if let Some(v) = value {
                        vars.args.insert(d.name.clone(), v);
                    }
                }
                // An ARG changes no config: no history entry, as BuildKit.
                self.step_event(sname, index, &ins.text, "done", t0.elapsed().as_millis() as i64).await;
                return Ok(state);
            }
            Kind::Env(pairs) => {
                let mut values = Vec::new();
                for (k, v) in pairs {
                    values.push((k.clone(), expand(v, esc, &env).map_err(at)?));
                }
                for (k, v) in values {
                    state.set_env(&k, &v);
                }
            }
            Kind::Label(pairs) => {
                let mut labels = state.get("Labels").and_then(Value::as_object).cloned().unwrap_or_default();
                for (k, v) in pairs {
                    labels.insert(expand(k, esc, &env).map_err(at)?, Value::String(expand(v, esc, &env).map_err(at)?));
                }
                state.set("Labels", Value::Object(labels));
            }
            Kind::Expose(ports) => {
                let mut exposed = state.get("ExposedPorts").and_then(Value::as_object).cloned().unwrap_or_default();
                for p in ports {
                    for w in words::expand_words(p, esc, &env).map_err(|e| at(Error::InvalidArgument(e.to_string())))? {
                        let port = if w.contains('/') { w.to_ascii_lowercase() } else { format!("{w}/tcp") };
                        exposed.insert(port, json!({}));
                    }
                }
                state.set("ExposedPorts", Value::Object(exposed));
            }
            Kind::Volume(list) => {
                let mut vols = state.get("Volumes").and_then(Value::as_object).cloned().unwrap_or_default();
                for v in list {
                    let path = expand(v, esc, &env).map_err(at)?;
                    if path.is_empty() {
                        return Err(at(Error::InvalidArgument("a volume path is empty".into())));
                    }
                    vols.insert(path, json!({}));
                }
                state.set("Volumes", Value::Object(vols));
            }
            Kind::User(u) => state.set("User", Value::String(expand(u, esc, &env).map_err(at)?)),
            Kind::StopSignal(s) => state.set("StopSignal", Value::String(expand(s, esc, &env).map_err(at)?)),
            Kind::Maintainer(m) => state.config["author"] = Value::String(m.clone()),
            Kind::Shell(v) => state.set("Shell", json!(v)),
            Kind::Cmd(c) => {
                state.set("Cmd", json!(self.argv(&state, c)));
                *cmd_set = true;
            }
            Kind::Entrypoint(c) => {
                state.set("Entrypoint", json!(self.argv(&state, c)));
                // As docker: an inherited CMD does not outlive a new ENTRYPOINT.
                if !*cmd_set {
                    state.set("Cmd", Value::Null);
                }
            }
            Kind::Onbuild(inner) => {
                let mut list = state.get("OnBuild").and_then(Value::as_array).cloned().unwrap_or_default();
                list.push(Value::String(ins.onbuild_trigger().unwrap_or_else(|| inner.text.clone())));
                state.set("OnBuild", Value::Array(list));
            }
            Kind::Healthcheck(h) => state.set("Healthcheck", healthcheck(h.as_ref(), &state).map_err(at)?),
            Kind::Workdir(w) => {
                let w = expand(w, esc, &env).map_err(at)?;
                let cur = state.get("WorkingDir").and_then(Value::as_str).unwrap_or("/").to_owned();
                let dir = format!("/{}", copy::clean_dest(&w, &cur));
                state.set("WorkingDir", Value::String(dir));
                meta_change = false;
            }
            Kind::Run(_) | Kind::Copy(_) | Kind::Add(_) => meta_change = false,
        }
        if meta_change {
            let key =
                cache::key(&[("parent", &state_parent_key(&state)), ("step", &ins.text), ("config", &state.config["config"].to_string())]);
            return self.finish_meta(sname, index, state, Next { created, text: ins.text.clone(), key, epoch: self.epoch }, t0).await;
        }
        // WORKDIR, COPY, ADD, RUN: the filesystem may change.
        let (key, work) = match &ins.kind {
            Kind::Workdir(_) => {
                let dir = state.get("WorkingDir").and_then(Value::as_str).unwrap_or("/").to_owned();
                let key = cache::key(&[
                    ("parent", &state.key),
                    ("workdir", &dir),
                    ("text", &ins.text),
                    ("config", &state.config["config"].to_string()),
                ]);
                (key, Work::Mkdir(dir))
            }
            Kind::Copy(c) | Kind::Add(c) => {
                let mut sources = Vec::new();
                for s in &c.sources {
                    sources.push(expand(s, esc, &env).map_err(at)?);
                }
                let is_url = |s: &String| s.starts_with("http://") || s.starts_with("https://");
                let urls = sources.iter().filter(|s| is_url(s)).count();
                if urls > 0 && (ins.keyword != "ADD" || urls != sources.len()) {
                    return Err(at(Error::InvalidArgument("URLs are sources of ADD only, and not beside local files".into())));
                }
                if c.checksum.is_some() && urls == 0 {
                    return Err(at(Error::InvalidArgument("--checksum is for ADD of a URL".into())));
                }
                // Where the files come from: another stage, an image, heredocs, URLs, or the context.
                let from = match &c.from {
                    None if urls > 0 => {
                        let dir = ScratchDir::new(&self.core.config.root.join("build").join("mnt").join(format!(
                            "fetch-{}-{}",
                            self.id,
                            random_hex(6)
                        )))
                        .map_err(at)?;
                        let (path, list, checksum) = (dir.0.clone(), sources.clone(), c.checksum.clone());
                        let max = self.core.images.limits.max_layer_bytes;
                        let fetched = blocking(move || {
                            list.iter()
                                .map(|u| crate::build::fetch::fetch(u, &path, max, checksum.as_deref()).map_err(Error::InvalidArgument))
                                .collect::<Result<Vec<_>, Error>>()
                        })
                        .await
                        .map_err(at)?;
                        sources = fetched.iter().map(|f| f.name.clone()).collect();
                        From::Fetched(dir, fetched)
                    }
                    None if !c.heredocs.is_empty() => {
                        let mut docs = Vec::new();
                        for h in &c.heredocs {
                            let body = if h.expand {
                                expand(&format!("\"{}\"", h.body().replace('"', "\\\"")), esc, &env).map_err(at)?
                            } else {
                                h.body()
                            };
                            docs.push((h.name.clone(), body));
                        }
                        sources.extend(docs.iter().map(|(n, _)| n.clone()));
                        From::Heredocs(docs)
                    }
                    None => From::Context,
                    Some(f) => {
                        // The stage's variables, then the meta args (as the stage graph reads it).
                        let f = expand(f, esc, &|k| env(k).or_else(|| self.meta.get(k).cloned())).map_err(at)?;
                        match stage_ref(&self.file, &f, vars.stage) {
                            Some(d) => {
                                From::State(inputs.get(&d).cloned().ok_or_else(|| Error::Internal(format!("stage {d} did not run")))?)
                            }
                            None => From::State(self.base_image(&f).await.map_err(at)?),
                        }
                    }
                };
                let dest_raw = expand(&c.dest, esc, &env).map_err(at)?;
                let cur = state.get("WorkingDir").and_then(Value::as_str).unwrap_or("/").to_owned();
                let dest = copy::clean_dest(&dest_raw, &cur);
                let chown = c.chown.as_deref().map(|o| expand(o, esc, &env)).transpose().map_err(at)?;
                let own = self.ownership(&state, chown, c.chmod.as_deref()).await.map_err(at)?;
                let mut excludes = Vec::new();
                for x in &c.excludes {
                    excludes.push(expand(x, esc, &env).map_err(at)?);
                }
                let rules = copy::Rules {
                    parents: c.parents,
                    excludes: berth_common::ignore::Patterns::parse(&excludes.join("\n"))
                        .map_err(|e| at(Error::InvalidArgument(format!("--exclude: {e}"))))?,
                };
                // What is copied decides the key: the context's files by content,
                // another stage by its key (its content follows from it), heredocs by their text.
                let what = match &from {
                    From::Context => self.context_key(&sources, &dest, &rules).map_err(at)?,
                    From::State(s) => format!("stage {}", s.key),
                    From::Heredocs(docs) => docs.iter().map(|(n, b)| format!("{n}\0{b}\0")).collect(),
                    From::Fetched(_, files) => files.iter().map(|f| format!("{}\0{}\0", f.name, f.digest)).collect(),
                };
                let key = cache::key(&[
                    ("parent", &state.key),
                    ("step", ins.keyword),
                    // The history keeps the instruction as written (`--link` and all).
                    ("text", &ins.text),
                    ("sources", &sources.join("\0")),
                    ("dest", &format!("{dest_raw}\0{dest}")),
                    ("own", &format!("{}:{}:{:?}", own.uid, own.gid, own.chmod)),
                    ("rules", &format!("{}\0{}", c.parents, excludes.join("\0"))),
                    ("files", &what),
                ]);
                let dest_slash = dest_raw.ends_with('/') || dest_raw.ends_with("/.");
                let extract = ins.keyword == "ADD" && matches!(from, From::Context);
                (key, Work::Copy { from, sources, dest, dest_slash, own, extract, rules })
            }
            Kind::Run(r) => {
                let argv = match (&r.command, r.script_heredoc(), r.shell_script()) {
                    (Command::Exec(v), _, _) => v.clone(),
                    // `RUN <<EOF`: the heredoc is the script (run by its #! line, or the shell).
                    (Command::Shell(_), Some(h), _) => {
                        let body = h.body();
                        // A #! line names the interpreter, given the script with -c (sh, bash, python all read it so).
                        let interp: Vec<String> = body
                            .strip_prefix("#!")
                            .and_then(|b| b.lines().next())
                            .map(|l| l.split_whitespace().map(str::to_owned).collect())
                            .unwrap_or_default();
                        if interp.is_empty() {
                            self.argv(&state, &Command::Shell(body))
                        } else {
                            interp.into_iter().chain(["-c".to_owned(), body]).collect()
                        }
                    }
                    (Command::Shell(_), None, Some(script)) => self.argv(&state, &Command::Shell(script)),
                    (Command::Shell(s), None, None) => self.argv(&state, &Command::Shell(s.clone())),
                };
                let mut mounts = Vec::new();
                for raw in &r.mounts {
                    let raw = expand(raw, esc, &env).map_err(at)?;
                    let m = dockerfile::parse_mount(&raw).map_err(|e| at(Error::InvalidArgument(format!("--mount={raw}: {e}"))))?;
                    mounts.push(self.plan_mount(m, vars.stage, inputs).await.map_err(at)?);
                }
                let network = r.network.clone().unwrap_or_else(|| self.opts.network.clone());
                // As docker's: "default" is the default network; a name, that network.
                let (network, networks) = match network.as_str() {
                    "" | "default" => (NetworkMode::Networks, Vec::new()),
                    "none" => (NetworkMode::None, Vec::new()),
                    "host" => (NetworkMode::Host, Vec::new()),
                    n => {
                        let net = self.core.networks.get(n).map_err(|e| at(e.into()))?;
                        (NetworkMode::Networks, vec![crate::network::EndpointSpec { network: net.name, ..Default::default() }])
                    }
                };
                let args: Vec<String> = vars
                    .args
                    .iter()
                    .chain(self.opts.build_args.iter().filter(|(k, _)| PREDEFINED_ARGS.contains(&k.as_str())))
                    .filter(|(k, _)| !state.env().iter().any(|(e, _)| e == *k))
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let key = cache::key(&[
                    ("parent", &state.key),
                    ("step", "RUN"),
                    ("text", &ins.text),
                    ("argv", &argv.join("\0")),
                    ("args", &args.join("\0")),
                    ("network", &format!("{network:?}{}", networks.iter().map(|e| format!(" {}", e.network)).collect::<String>())),
                    ("mounts", &mounts.iter().map(run::RunMount::key).collect::<Vec<_>>().join("\0")),
                    ("config", &state.config["config"].to_string()),
                ]);
                (key, Work::Run { argv, args, network, networks, mounts })
            }
            _ => unreachable!("metadata instructions returned above"),
        };
        if !self.opts.no_cache {
            if let Some(s) = self.cached(&key).await? {
                self.cached.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.step_event(sname, index, &ins.text, "cached", t0.elapsed().as_millis() as i64).await;
                return Ok(s);
            }
        }
        self.ran.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // The history never keeps a URL's credentials (ADD https://user:pass@...).
        let next = Next { created, text: without_userinfo(&ins.text), key, epoch: self.epoch };
        let result = match work {
            Work::Mkdir(dir) => self.in_snapshot(state, Change::Mkdir(dir), next).await,
            Work::Copy { from, sources, dest, dest_slash, own, extract, rules } => {
                self.in_snapshot(state, Change::Copy { from, sources, dest, dest_slash, own, extract, rules }, next).await
            }
            Work::Run { argv, args, network, networks, mounts } => {
                let step = run::RunStep { argv, args, network, networks, mounts };
                self.run(sname, index, state, step, next).await
            }
        };
        let state = result.map_err(at)?;
        self.step_event(sname, index, &ins.text, "done", t0.elapsed().as_millis() as i64).await;
        Ok(state)
    }

    /// The end of a metadata step (its config already changed): from the
    /// cache, or a history entry and a cache entry of its own.
    async fn finish_meta(&self, sname: &str, index: u32, state: State, next: Next, t0: Instant) -> Result<State, Error> {
        if !self.opts.no_cache {
            if let Some(s) = self.cached(&next.key).await? {
                self.cached.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.step_event(sname, index, &next.text, "cached", t0.elapsed().as_millis() as i64).await;
                return Ok(s);
            }
        }
        self.ran.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut state = state;
        state.add_history(&next.created, &next.text, None);
        state.key = next.key.clone();
        let state = self.remember(state, next.key).await?;
        self.step_event(sname, index, &next.text, "done", t0.elapsed().as_millis() as i64).await;
        Ok(state)
    }

    /// What of the context `sources` select, for a cache key: each entry's
    /// path, type, mode, link target and content digest.
    fn context_key(&self, sources: &[String], dest: &str, rules: &copy::Rules) -> Result<String, Error> {
        let entries = self.mirror.entries();
        let probe = copy::select_with(entries, sources, dest, true, true, rules).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let mut files = String::new();
        for it in &probe {
            let e = entries.get(&it.source);
            files.push_str(&format!(
                "{}\0{:?}\0{:o}\0{}\0{}\n",
                it.source,
                e.map(|e| e.kind),
                e.map_or(0, |e| e.mode),
                e.map_or("", |e| e.link.as_str()),
                e.and_then(|e| e.digest.as_ref()).map_or("", |d| d.as_str())
            ));
        }
        Ok(files)
    }

    /// The exec form of a command: shell form runs in the stage's SHELL.
    fn argv(&self, state: &State, c: &Command) -> Vec<String> {
        c.argv(&crate::build::dockerfile::string_list(state.get("Shell")))
    }

    /// `--chown` and `--chmod`: numbers, or names looked up in the stage's /etc/passwd and /etc/group.
    async fn ownership(&self, state: &State, chown: Option<String>, chmod: Option<&str>) -> Result<Ownership, Error> {
        let chmod = match chmod {
            None => None,
            Some(m) => Some(
                u32::from_str_radix(m, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| Error::InvalidArgument(format!("--chmod={m:?}: use octal permission bits")))?,
            ),
        };
        let Some(spec) = chown else { return Ok(Ownership { uid: 0, gid: 0, chmod }) };
        let top = state.top_chain().map(|c| c.to_string());
        let (core, ns) = (self.core.clone(), self.ns.clone());
        blocking(move || {
            let read = |path: &str| -> Result<Option<String>, Error> {
                match &top {
                    None => Ok(None),
                    Some(t) => Ok(core.snapshots.read_file(&ns, t, path, 4 << 20)?.map(|d| String::from_utf8_lossy(&d).into_owned())),
                }
            };
            let (passwd, group) =
                if crate::container::user::needs_lookup(&spec) { (read("etc/passwd")?, read("etc/group")?) } else { (None, None) };
            let u = crate::container::user::resolve_user(&spec, passwd.as_deref(), group.as_deref())
                .map_err(|e| Error::InvalidArgument(format!("--chown={spec}: {e}")))?;
            // A user alone gives its own group, as docker's --chown does.
            Ok(Ownership { uid: u.uid, gid: u.gid, chmod })
        })
        .await
    }

    /// A cached state for `key`, when its entry and its content are all there.
    async fn cached(&self, key: &str) -> Result<Option<State>, Error> {
        let (core, ns, key2, pins) = (self.core.clone(), self.ns.clone(), key.to_owned(), self.pins.clone());
        let found = blocking(move || {
            // Found and pinned with collection held off: a prune meanwhile leaves it.
            let _hold = core.images.hold_gc();
            let Some(rec) = core.meta.build_cache(&ns, &key2)? else { return Ok(None) };
            let m = &rec.manifest;
            let desc = crate::image::descriptor_of(m);
            pin(&core, &pins, &ns, &desc);
            let record = ImageRecord {
                name: format!("build cache {key2}"),
                target: rec.manifest.clone(),
                labels: Default::default(),
                created: rec.created,
                updated: rec.created,
            };
            let Ok(resolved) = core.images.resolve(&record, &Platform::default_platform()) else { return Ok(None) };
            if !core.images.is_unpacked(&ns, &resolved) {
                return Ok(None);
            }
            let state = State::of_image(&resolved.manifest, &resolved.config_json, &resolved.config.rootfs.diff_ids, key2)
                .map_err(Error::Internal)?;
            Ok(Some(state))
        })
        .await?;
        if found.is_some() {
            self.used.lock().unwrap_or_else(|e| e.into_inner()).push(key.to_owned());
        }
        Ok(found)
    }

    /// Store a step's state and its cache entry.
    async fn remember(&self, state: State, key: String) -> Result<State, Error> {
        let (core, ns, pins) = (self.core.clone(), self.ns.clone(), self.pins.clone());
        blocking(move || {
            let lease = core.images.lease();
            let (desc, _) = store_state(&lease, &state)?;
            pin(&core, &pins, &ns, &desc);
            let now = crate::metadata::now_nanos();
            let rec = BuildCacheRecord { manifest: crate::image::record_of(&desc), created: now, last_used: now };
            core.meta.put_build_cache(&ns, &[(key, rec)], &[])?;
            Ok(state)
        })
        .await
    }
}

/// `text` with the `user:password@` of every URL in it removed.
fn without_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        out.push_str(&rest[..i + 3]);
        rest = &rest[i + 3..];
        let end = rest.find(|c: char| c == '/' || c.is_whitespace()).unwrap_or(rest.len());
        if let Some(at) = rest[..end].rfind('@') {
            rest = &rest[at + 1..];
        }
    }
    out.push_str(rest);
    out
}

/// The parent's key of a state: the state's own key (metadata steps chain on it).
fn state_parent_key(state: &State) -> String {
    state.key.clone()
}

/// What a filesystem step records once it has run.
struct Next {
    created: String,
    text: String,
    key: String,
    /// SOURCE_DATE_EPOCH: the latest file time a layer holds.
    epoch: Option<i64>,
}

/// Where a COPY's files come from.
enum From {
    Context,
    /// Another stage's (or an image's) filesystem.
    State(State),
    /// Heredoc bodies: (name, text).
    Heredocs(Vec<(String, String)>),
    /// Files ADD fetched (into the directory, removed with it).
    Fetched(ScratchDir, Vec<crate::build::fetch::Fetched>),
}

/// A directory of a step's own, removed when dropped.
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn new(path: &std::path::Path) -> Result<ScratchDir, Error> {
        std::fs::create_dir_all(path).map_err(|e| Error::Internal(format!("{}: {e}", path.display())))?;
        Ok(ScratchDir(path.to_owned()))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a filesystem step does.
enum Work {
    Mkdir(String),
    Copy {
        from: From,
        sources: Vec<String>,
        dest: String,
        dest_slash: bool,
        own: Ownership,
        extract: bool,
        rules: copy::Rules,
    },
    Run {
        argv: Vec<String>,
        args: Vec<String>,
        network: NetworkMode,
        networks: Vec<crate::network::EndpointSpec>,
        mounts: Vec<run::RunMount>,
    },
}

/// A change applied to a mounted snapshot.
enum Change {
    Mkdir(String),
    /// `extract`: ADD of local archives (they are unpacked into `dest`).
    Copy {
        from: From,
        sources: Vec<String>,
        dest: String,
        dest_slash: bool,
        own: Ownership,
        extract: bool,
        rules: copy::Rules,
    },
}

/// A HEALTHCHECK as the config keeps it.
fn healthcheck(h: Option<&dockerfile::Healthcheck>, state: &State) -> Result<Value, Error> {
    let Some(h) = h else { return Ok(json!({ "Test": ["NONE"] })) };
    let test: Vec<String> = match &h.command {
        Command::Exec(v) => std::iter::once("CMD".to_owned()).chain(v.iter().cloned()).collect(),
        Command::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
    };
    let _ = state;
    let mut v = json!({ "Test": test });
    for (field, raw) in
        [("Interval", &h.interval), ("Timeout", &h.timeout), ("StartPeriod", &h.start_period), ("StartInterval", &h.start_interval)]
    {
        if let Some(raw) = raw {
            let d = dockerfile::parse_duration(raw)
                .map_err(|e| Error::InvalidArgument(format!("--{}={raw:?}: {e}", field.to_ascii_lowercase())))?;
            v[field] = json!(d.as_nanos() as i64);
        }
    }
    if let Some(r) = &h.retries {
        v["Retries"] = json!(r.parse::<u32>().map_err(|_| Error::InvalidArgument(format!("--retries={r:?}: not a number")))?);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_the_history_lose_their_credentials() {
        assert_eq!(without_userinfo("ADD https://me:secret@host/x.tar /"), "ADD https://host/x.tar /");
        assert_eq!(without_userinfo("ADD http://host:80/a@b /"), "ADD http://host:80/a@b /");
        assert_eq!(without_userinfo("RUN echo a@b"), "RUN echo a@b");
    }
}
