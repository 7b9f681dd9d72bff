//! RUN steps of a build: a container on the stage's state, through the
//! same records, shims and runtime as `berthctl run`, its output relayed,
//! with the step's mounts (`RUN --mount`): cache directories the agent
//! keeps between builds, tmpfs, secrets the client gives for this step
//! only, and binds of the context or of another stage. Whatever a mount
//! leaves in the filesystem (the empty mount points the runtime made) is
//! removed before the changes become the layer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::Digest as _;

use super::{blocking, conclude, store_state, BuildEvent, BuildInput, From, Next, Run, State, LAST_LINES};
use crate::build::dockerfile::{Mount, MountType, Sharing};
use crate::build::LABEL_BUILD;
use crate::container::config::{ContainerConfig, MountKind, MountSpec, NetworkMode};
use crate::container::CreateRequest;
use crate::content::random_hex;
use crate::image::oci::Platform;
use crate::metadata::ImageRecord;
use crate::runtime::{AttachOutput, Proc};
use crate::service::Error;

/// Locks of cache directories used with `sharing=locked` or `private`.
pub(super) type CacheLocks = Arc<std::sync::Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>>;
/// Cache directories mounted by running steps, with how many mount each
/// (`builder prune -a` removes only the others).
pub(super) type CacheInUse = Arc<std::sync::Mutex<HashMap<PathBuf, usize>>>;

/// How long a build waits for the client's answer to a secret request.
const SECRET_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest secret, in bytes.
const MAX_SECRET: usize = 512 << 10;

/// A RUN step's command and what it runs with.
pub(super) struct RunStep {
    pub argv: Vec<String>,
    pub args: Vec<String>,
    pub network: NetworkMode,
    /// With `NetworkMode::Networks`: the network (none: the default one).
    pub networks: Vec<crate::network::EndpointSpec>,
    pub mounts: Vec<RunMount>,
}

/// One `RUN --mount`, planned.
pub(super) enum RunMount {
    /// `exclusive`: `sharing=locked` or `private` (one step at a time).
    Cache {
        target: String,
        id: String,
        readonly: bool,
        mode: u32,
        uid: u32,
        gid: u32,
        exclusive: bool,
    },
    Tmpfs {
        target: String,
        size: Option<u64>,
    },
    Secret {
        id: String,
        target: Option<String>,
        env: Option<String>,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Bind {
        target: String,
        from: From,
        source: String,
        readonly: bool,
        key: String,
    },
}

impl RunMount {
    /// What of the mount the step's cache key covers (never a secret's value).
    pub(super) fn key(&self) -> String {
        match self {
            RunMount::Cache { target, id, readonly, mode, uid, gid, .. } => format!("cache {target} {id} {readonly} {mode:o} {uid} {gid}"),
            RunMount::Tmpfs { target, size } => format!("tmpfs {target} {size:?}"),
            RunMount::Secret { id, target, env, .. } => format!("secret {id} {target:?} {env:?}"),
            RunMount::Bind { target, source, readonly, key, .. } => format!("bind {target} {source} {readonly} {key}"),
        }
    }

    fn target(&self) -> Option<&str> {
        match self {
            RunMount::Cache { target, .. } | RunMount::Tmpfs { target, .. } | RunMount::Bind { target, .. } => Some(target),
            RunMount::Secret { target, .. } => target.as_deref(),
        }
    }
}

/// An absolute, clean path in the container.
fn clean_target(t: &str, workdir: &str) -> String {
    format!("/{}", crate::build::copy::clean_dest(t, workdir))
}

/// What a step's mounts hold on the host while it runs; undone when dropped.
#[derive(Default)]
struct Prepared {
    specs: Vec<MountSpec>,
    env: Vec<String>,
    /// Files and directories made for this step only (secrets, bind sources).
    scratch: Vec<PathBuf>,
    /// Views of other stages mounted for binds: (mount dir, namespace, view key).
    views: Vec<(PathBuf, String, String)>,
    locks: Vec<tokio::sync::OwnedMutexGuard<()>>,
    core: Option<Arc<crate::service::Core>>,
    /// Cache directories this step counts as in use.
    in_use: Vec<PathBuf>,
    in_use_map: Option<CacheInUse>,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        // Mounts first (the last made first), then the files under them.
        if let Some(core) = &self.core {
            for (dir, ns, key) in self.views.iter().rev() {
                let _ = rustix::mount::unmount(dir, rustix::mount::UnmountFlags::DETACH);
                let _ = std::fs::remove_dir(dir);
                if !key.is_empty() {
                    if let Err(e) = core.snapshots.remove(ns, key) {
                        tracing::warn!(key = %key, error = %e, "removing a build view");
                    }
                }
            }
        }
        for p in &self.scratch {
            let _ = std::fs::remove_dir_all(p).or_else(|_| std::fs::remove_file(p));
        }
        if let Some(map) = &self.in_use_map {
            let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
            for d in &self.in_use {
                if let Some(n) = m.get_mut(d) {
                    *n -= 1;
                    if *n == 0 {
                        m.remove(d);
                    }
                }
            }
        }
    }
}

impl Run {
    /// A RUN step: a container on the stage, its output streamed; the
    /// stage's next state, with the container's changes as its layer.
    pub(super) async fn run(&self, sname: &str, index: u32, state: State, step: RunStep, next: Next) -> Result<State, Error> {
        let (core, ns, id) = (self.core.clone(), self.ns.clone(), self.id.clone());
        let st = state.clone();
        let workdir = state.get("WorkingDir").and_then(serde_json::Value::as_str).unwrap_or("/").to_owned();
        let prepared = self.prepare_mounts(&step.mounts, &workdir).await?;
        let mut env = step.args;
        env.extend(prepared.env.iter().cloned());
        let config = ContainerConfig {
            entrypoint: Some(step.argv),
            command: Some(Vec::new()),
            env,
            network: step.network,
            networks: step.networks,
            mounts: prepared.specs.clone(),
            ..Default::default()
        };
        let rec = blocking(move || {
            let lease = core.images.lease();
            let (desc, _) = store_state(&lease, &st)?;
            let record = ImageRecord {
                name: "build".into(),
                target: crate::image::record_of(&desc),
                labels: Default::default(),
                created: 0,
                updated: 0,
            };
            let resolved = core.images.resolve(&record, &Platform::default_platform())?;
            let req = CreateRequest {
                image: "build".into(),
                name: String::new(),
                config,
                labels: BTreeMap::from([(LABEL_BUILD.to_owned(), id)]),
                runtime: String::new(),
            };
            Ok(core.containers.create_from(&ns, req, &resolved)?)
        })
        .await?;
        let outcome = self.run_task(sname, index, &rec).await;
        let (core, ns) = (self.core.clone(), self.ns.clone());
        if let Err(e) = core.tasks.delete(&ns, &rec, true).await {
            tracing::debug!(container = %rec.id, error = %e, "deleting a build step's task");
        }
        let text = next.text.clone();
        drop(prepared);
        let result = match outcome {
            Ok((0, _)) => {
                let (c, n, r, pins) = (core.clone(), ns.clone(), rec.clone(), self.pins.clone());
                let mut stubs: Vec<String> = step.mounts.iter().filter_map(RunMount::target).map(|t| clean_target(t, &workdir)).collect();
                blocking(move || {
                    let spec = c.containers.spec(&n, &r.id)?;
                    stubs.extend(spec.mounts().iter().flatten().map(|m| m.destination().to_string_lossy().into_owned()));
                    remove_stubs(&c, &n, &r.snapshot_key, &stubs)?;
                    // The files its container had bound over /etc are not the step's.
                    conclude(&c, &n, &r.snapshot_key, state, next, &pins, &crate::container::NETWORK_FILES)
                })
                .await
            }
            Ok((code, last)) => {
                let tail = if last.is_empty() { String::new() } else { format!("; last output: {}", last.join(" | ")) };
                Err(Error::Aborted(format!("{text}: exit code {code}{tail}")))
            }
            Err(e) => Err(e),
        };
        // The container goes; its snapshot too, unless it became the layer.
        let (c, n, r) = (core.clone(), ns.clone(), rec.clone());
        if let Err(e) = blocking(move || Ok(c.containers.delete(&n, &r)?)).await {
            tracing::warn!(container = %rec.id, error = %e, "removing a build step's container");
        }
        core.tasks.forget_container(&ns, &rec.id);
        result
    }

    /// Plan one `--mount` of a RUN step (of stage `stage`).
    pub(super) async fn plan_mount(&self, m: Mount, stage: usize, inputs: &HashMap<usize, State>) -> Result<RunMount, Error> {
        let need = |what: &str| Error::InvalidArgument(format!("a {what} mount needs a target"));
        Ok(match m.kind {
            MountType::Cache => {
                let target = m.target.ok_or_else(|| need("cache"))?;
                let id = m.id.clone().unwrap_or_else(|| target.clone());
                RunMount::Cache {
                    target,
                    id,
                    readonly: m.readonly,
                    mode: m.mode.unwrap_or(0o755),
                    uid: m.uid.unwrap_or(0),
                    gid: m.gid.unwrap_or(0),
                    exclusive: !matches!(m.sharing, Sharing::Shared),
                }
            }
            MountType::Tmpfs => RunMount::Tmpfs { target: m.target.ok_or_else(|| need("tmpfs"))?, size: m.size },
            MountType::Secret => RunMount::Secret {
                id: m.id.clone().ok_or_else(|| Error::InvalidArgument("a secret mount needs an id".into()))?,
                target: m.target,
                env: m.env,
                required: m.required,
                mode: m.mode.unwrap_or(0o400),
                uid: m.uid.unwrap_or(0),
                gid: m.gid.unwrap_or(0),
            },
            MountType::Bind => {
                let target = m.target.ok_or_else(|| need("bind"))?;
                let source = m.source.unwrap_or_default();
                let (from, key) = match &m.from {
                    None => {
                        let key = self.context_key(std::slice::from_ref(&source), "", &Default::default())?;
                        (From::Context, key)
                    }
                    Some(f) => {
                        let s = match super::stage_ref(&self.file, f, stage) {
                            Some(d) => inputs.get(&d).cloned().ok_or_else(|| Error::Internal(format!("stage {d} did not run")))?,
                            None => self.base_image(f).await?,
                        };
                        let key = format!("stage {}", s.key);
                        (From::State(s), key)
                    }
                };
                RunMount::Bind { target, from, source, readonly: m.readonly, key }
            }
            MountType::Ssh => return Err(Error::InvalidArgument("RUN --mount=type=ssh is not supported".into())),
        })
    }

    /// Make what the mounts need on the host, for the time of the step.
    async fn prepare_mounts(&self, mounts: &[RunMount], workdir: &str) -> Result<Prepared, Error> {
        let mut p = Prepared::default();
        p.core = Some(self.core.clone());
        p.in_use_map = Some(self.cache_in_use.clone());
        let build_dir = self.core.config.root.join("build");
        let mut to_lock = Vec::new();
        for m in mounts {
            match m {
                RunMount::Cache { target, id, readonly, mode, uid, gid, exclusive } => {
                    let name = hex::encode(sha2::Sha256::digest(format!("{}\0{id}", self.ns).as_bytes()));
                    let dir = build_dir.join("cache").join(name);
                    // Counted in use before it is made, so a prune cannot remove it under the step.
                    {
                        let mut m = self.cache_in_use.lock().unwrap_or_else(|e| e.into_inner());
                        *m.entry(dir.clone()).or_default() += 1;
                        p.in_use.push(dir.clone());
                    }
                    if !dir.exists() {
                        std::fs::create_dir_all(&dir).map_err(|e| Error::Internal(format!("{}: {e}", dir.display())))?;
                        let set = std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(*mode))
                            .and_then(|()| std::os::unix::fs::chown(&dir, Some(*uid), Some(*gid)));
                        set.map_err(|e| Error::Internal(format!("{}: {e}", dir.display())))?;
                    }
                    if *exclusive {
                        to_lock.push(dir.clone());
                    }
                    p.specs.push(bind(&dir, &clean_target(target, workdir), *readonly));
                }
                RunMount::Tmpfs { target, size } => p.specs.push(MountSpec {
                    kind: MountKind::Tmpfs,
                    source: String::new(),
                    destination: clean_target(target, workdir),
                    readonly: false,
                    options: size.map(|s| vec![format!("size={s}")]).unwrap_or_default(),
                    no_copy: false,
                }),
                RunMount::Secret { id, target, env, required, mode, uid, gid } => {
                    let Some(value) = self.secret(id).await? else {
                        if *required {
                            return Err(Error::InvalidArgument(format!("secret {id:?} is required and the client did not give it")));
                        }
                        continue;
                    };
                    if let Some(var) = env {
                        p.env.push(format!("{var}={}", String::from_utf8_lossy(&value)));
                    }
                    if target.is_some() || env.is_none() {
                        let dir = build_dir.join("secrets");
                        std::fs::create_dir_all(&dir).map_err(|e| Error::Internal(format!("{}: {e}", dir.display())))?;
                        let file = dir.join(random_hex(12));
                        p.scratch.push(file.clone());
                        write_secret(&file, &value, *mode, *uid, *gid).map_err(|e| Error::Internal(format!("secret {id:?}: {e}")))?;
                        let dest = target.clone().unwrap_or_else(|| format!("/run/secrets/{id}"));
                        p.specs.push(bind(&file, &clean_target(&dest, workdir), true));
                    }
                }
                RunMount::Bind { target, from, source, readonly, .. } => {
                    let host = self.bind_source(&mut p, from, source, *readonly).await?;
                    p.specs.push(bind(&host, &clean_target(target, workdir), *readonly));
                }
            }
        }
        // Locked in one order (so two steps never wait on each other), each
        // once, and given up when the build stops.
        to_lock.sort();
        to_lock.dedup();
        let mut stop = self.stop.subscribe();
        for dir in to_lock {
            let lock = self.cache_locks.lock().unwrap_or_else(|e| e.into_inner()).entry(dir).or_default().clone();
            tokio::select! {
                guard = lock.lock_owned() => p.locks.push(guard),
                () = self.events.closed() => return Err(Error::Cancelled("the client went away".into())),
                () = async { let _ = stop.wait_for(|s| *s).await; } => return Err(Error::Cancelled("another stage failed".into())),
            }
        }
        Ok(p)
    }

    /// The host path a bind mount shows: the context's files (copied into a
    /// directory of the agent's for this step) or another stage's files
    /// (a view, mounted read-only; with `rw`, under an overlay whose upper
    /// layer is thrown away after the step, so the stage's layers never change).
    async fn bind_source(&self, p: &mut Prepared, from: &From, source: &str, readonly: bool) -> Result<PathBuf, Error> {
        let core = self.core.clone();
        let dir = core.config.root.join("build").join("mnt").join(format!("bind-{}-{}", self.id, random_hex(6)));
        std::fs::create_dir_all(&dir).map_err(|e| Error::Internal(format!("{}: {e}", dir.display())))?;
        let clean = crate::build::copy::clean_source(source).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        match from {
            From::Context | From::Heredocs(_) | From::Fetched(..) => {
                p.scratch.push(dir.clone());
                let mirror = &self.mirror;
                let kind = mirror.entries().get(&clean).map(|e| e.kind);
                if kind == Some(crate::build::context::Kind::Symlink) {
                    // Bound as it is, a link would lead the runtime wherever it points, on the host.
                    return Err(Error::InvalidArgument(format!("bind source {clean:?} is a link: name what it leads to")));
                }
                tokio::task::block_in_place(|| super::layer::copy_out(&core, mirror, &clean, &dir))?;
                // A directory's contents are the bind's; a file (a regular file the agent wrote) is bound itself.
                Ok(if kind == Some(crate::build::context::Kind::File) { dir.join(clean.rsplit('/').next().unwrap_or(&clean)) } else { dir })
            }
            From::State(s) => {
                let Some(top) = s.top_chain() else { return Err(Error::InvalidArgument("a bind from a stage with no files".into())) };
                let view = format!("build-{}-{}-bind", self.id, random_hex(6));
                let labels = BTreeMap::from([(LABEL_BUILD.to_owned(), "view".to_owned())]);
                core.snapshots.view(&self.ns, &view, top.as_str(), labels)?;
                p.views.push((dir.clone(), self.ns.clone(), view.clone()));
                // Read-only: a bind view is remounted so, an overlay view has no upper layer.
                core.snapshots.mount_at(&self.ns, &view, &dir)?;
                // The source resolved inside the view, never out of it.
                let real = crate::build::source::resolve(&dir, &clean)
                    .map_err(|e| Error::InvalidArgument(e.to_string()))?
                    .ok_or_else(|| Error::InvalidArgument(format!("bind source {clean:?} is not in that stage")))?;
                let path = dir.canonicalize().map_err(|e| Error::Internal(e.to_string()))?.join(&real);
                if readonly || !path.is_dir() {
                    return Ok(path);
                }
                // rw: writes land in a throw-away upper layer.
                let scratch = core.config.root.join("build").join("mnt").join(format!("bind-{}-{}-rw", self.id, random_hex(6)));
                for d in ["upper", "work", "merged"] {
                    std::fs::create_dir_all(scratch.join(d)).map_err(|e| Error::Internal(format!("{}: {e}", scratch.display())))?;
                }
                let opts = format!(
                    "lowerdir={},upperdir={},workdir={}",
                    path.display(),
                    scratch.join("upper").display(),
                    scratch.join("work").display()
                );
                let data = std::ffi::CString::new(opts).map_err(|_| Error::Internal("NUL in mount options".into()))?;
                let merged = scratch.join("merged");
                p.views.push((merged.clone(), String::new(), String::new()));
                p.scratch.push(scratch.clone());
                rustix::mount::mount("overlay", &merged, "overlay", rustix::mount::MountFlags::empty(), Some(data.as_c_str()))
                    .map_err(|e| Error::Internal(format!("{}: {e}", merged.display())))?;
                Ok(merged)
            }
        }
    }

    /// Ask the client for secret `id`; None when it has none.
    async fn secret(&self, id: &str) -> Result<Option<Vec<u8>>, Error> {
        if !self.opts.secret_ids.iter().any(|s| s == id) {
            return Ok(None);
        }
        let mut input = self.input.lock().await;
        super::send(&self.events, BuildEvent::Secret(id.to_owned())).await?;
        match tokio::time::timeout(SECRET_TIMEOUT, input.recv()).await {
            Err(_) => Err(Error::DeadlineExceeded(format!("the client did not answer for secret {id:?} in time"))),
            Ok(None) => Err(Error::Cancelled("the client went away".into())),
            Ok(Some(BuildInput::Secret { id: got, data })) if got == id => match data {
                Some(d) if d.len() > MAX_SECRET => Err(Error::InvalidArgument(format!("secret {id:?} is larger than {MAX_SECRET} bytes"))),
                d => Ok(d),
            },
            Ok(Some(_)) => Err(Error::InvalidArgument(format!("expected the answer for secret {id:?}"))),
        }
    }

    /// Start the task, relay its output, wait for its exit: (code, last lines).
    async fn run_task(&self, sname: &str, index: u32, rec: &crate::metadata::ContainerRecord) -> Result<(i32, Vec<String>), Error> {
        let tasks = &self.core.tasks;
        tasks.create(&self.ns, rec).await?;
        let conn = tasks.attach(&self.ns, rec, &Proc::Init).await?;
        let (mut frames, _writer) = conn.split();
        tasks.start(&self.ns, rec, &Proc::Init).await?;
        let mut stop = self.stop.subscribe();
        let mut last: std::collections::VecDeque<String> = Default::default();
        let mut partial = Vec::new();
        loop {
            let next = tokio::select! {
                f = frames.next_output() => f,
                () = self.events.closed() => {
                    let _ = tasks.kill(&self.ns, rec, &Proc::Init, 9, true).await;
                    return Err(Error::Cancelled("the client went away".into()));
                }
                () = async { let _ = stop.wait_for(|s| *s).await; } => {
                    let _ = tasks.kill(&self.ns, rec, &Proc::Init, 9, true).await;
                    return Err(Error::Cancelled("another stage failed".into()));
                }
            };
            match next {
                Ok(Some(AttachOutput::Stdout(d) | AttachOutput::Stderr(d))) => {
                    partial.extend_from_slice(&d);
                    while let Some(nl) = partial.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = partial.drain(..=nl).collect();
                        last.push_back(berth_common::text::printable(&String::from_utf8_lossy(&line[..line.len() - 1])).into_owned());
                        if last.len() > LAST_LINES {
                            last.pop_front();
                        }
                    }
                    let _ = self.events.send(BuildEvent::Output { stage: sname.to_owned(), index, data: d }).await;
                }
                Ok(Some(AttachOutput::Exit(code))) => {
                    if !partial.is_empty() {
                        last.push_back(berth_common::text::printable(&String::from_utf8_lossy(&partial)).into_owned());
                        if last.len() > LAST_LINES {
                            last.pop_front();
                        }
                    }
                    return Ok((code, last.into_iter().collect()));
                }
                Ok(None) => {
                    let exit = tasks.wait(&self.ns, rec, &Proc::Init, Some(std::time::Duration::from_secs(10))).await?;
                    return Ok((exit.exit_code, last.into_iter().collect()));
                }
                Err(e) => return Err(Error::Internal(format!("the RUN step's output broke: {e}"))),
            }
        }
    }
}

fn bind(source: &std::path::Path, destination: &str, readonly: bool) -> MountSpec {
    MountSpec {
        kind: MountKind::Bind,
        source: source.display().to_string(),
        destination: destination.to_owned(),
        readonly,
        options: vec!["rbind".into()],
        no_copy: false,
    }
}

fn write_secret(path: &std::path::Path, value: &[u8], mode: u32, uid: u32, gid: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(value)?;
    std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    Ok(())
}

/// Remove the empty mount points (and their empty parents) that the runtime
/// made in the container's snapshot for `targets`: only paths the step added.
fn remove_stubs(core: &crate::service::Core, ns: &str, key: &str, targets: &[String]) -> Result<(), Error> {
    let changes = core.snapshots.changes(ns, key).map_err(|e| Error::Internal(e.to_string()))?;
    let added: HashSet<String> =
        changes.into_iter().filter(|c| c.kind == crate::archive::diff::ChangeKind::Added).map(|c| c.path).collect();
    let mut doomed: Vec<String> = Vec::new();
    for t in targets {
        let mut p = t.trim_end_matches('/').to_owned();
        while !p.is_empty() && added.contains(&p) {
            if !doomed.contains(&p) {
                doomed.push(p.clone());
            }
            p = p.rsplit_once('/').map(|(a, _)| a.to_owned()).unwrap_or_default();
        }
    }
    if doomed.is_empty() {
        return Ok(());
    }
    // Deepest first; a directory that holds anything, or a file with data, stays.
    doomed.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
    let mnt = core.config.root.join("build").join("mnt").join(format!("{key}-stubs"));
    std::fs::create_dir_all(&mnt).map_err(|e| Error::Internal(format!("{}: {e}", mnt.display())))?;
    let r = core.snapshots.with_mounted(ns, key, &mnt, |root| {
        for p in &doomed {
            let path = root.join(p.trim_start_matches('/'));
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {
                    let _ = std::fs::remove_dir(&path);
                }
                Ok(m) if m.is_file() && m.len() == 0 => {
                    let _ = std::fs::remove_file(&path);
                }
                _ => {}
            }
        }
    });
    let _ = std::fs::remove_dir(&mnt);
    Ok(r?)
}
