//! Tasks: the running side of containers. Each task has a bundle directory
//! (`<state>/tasks/<ns>/<id>`: the OCI spec, the shim's config, socket and
//! records) and one `berth-shim` process that drives the OCI runtime.
//!
//! The agent keeps a [`Task`] per live bundle and one `subscribe` connection
//! to its shim. When the init exits, the exit is recorded in the container
//! record first (so `wait` answers at once) and the task is then deleted in
//! the background: the runtime's `delete`, the rootfs mount and the shim go.
//! An exited container therefore costs no process.
//!
//! The state of each task's init (created, running, paused; its pid and
//! start time) is kept here from the shims' answers and events, so that
//! listing containers asks no shim. A background check asks each shim for
//! its state now and then and marks one that does not answer `unknown`.

pub mod cgroups;
mod network;
mod process;
pub use network::endpoints as network_endpoints;
pub mod procs;
mod shim_client;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_shim::protocol::{
    self, files, ErrorKind, Event as ShimEvent, ProcessStatus, Request, RootfsMount, ShimConfig, TaskState as ShimTaskState,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, watch};

use crate::config::RuntimeConfig;
use crate::container::{ContainerError, Containers};
use crate::events::Events;
use crate::keyed::{NsId, NsMap};
use crate::metadata::{ContainerRecord, ExitInfo};
use crate::snapshot::Snapshots;
pub use process::{ExecId, Proc};
pub use shim_client::{AttachInput, AttachOutput, ShimConnection};

/// How long a new shim may take to say it is ready.
const SHIM_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on ordinary shim calls (the runtime's own calls are bounded by the shim).
const CALL_TIMEOUT: Duration = Duration::from_secs(90);
/// How long `stop` waits after SIGKILL.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on waiting for a task's deletion: above the teardown's own bounds
/// (the shim's delete call, its exit, the runtime's forced delete).
const GONE_TIMEOUT: Duration = Duration::from_secs(150);
/// In a bundle: a commit froze this container (see [`Tasks::pause_for_commit`]).
const COMMIT_PAUSED: &str = "commit.paused";
/// How long a shim may take to give its state before it is marked "unknown".
const STATE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("container {0} has no running task")]
    NoTask(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Runtime(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("the shim of container {id} is not answering: {why}")]
    ShimGone { id: String, why: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error("{0}")]
    Internal(String),
}

impl TaskError {
    fn from_shim(e: protocol::ShimError) -> Self {
        match e.kind {
            ErrorKind::NotFound => TaskError::NotFound(e.message),
            ErrorKind::AlreadyExists => TaskError::AlreadyExists(e.message),
            ErrorKind::FailedPrecondition => TaskError::FailedPrecondition(e.message),
            ErrorKind::InvalidArgument => TaskError::InvalidArgument(e.message),
            ErrorKind::Runtime => TaskError::Runtime(e.message),
            ErrorKind::Timeout => TaskError::Timeout(e.message),
            ErrorKind::Internal => TaskError::Internal(e.message),
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TaskError + '_ {
    move |source| TaskError::Io { path: path.to_owned(), source }
}

/// Where a container's task is in its life, as users see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TaskState {
    /// Never started (no task, or a task not started yet).
    #[default]
    Created,
    Running,
    Paused,
    Exited,
    /// Exited, and its restart policy starts it again soon.
    Restarting,
    /// The shim does not answer.
    Unknown,
}

impl TaskState {
    /// The name the API and `ps` filters use.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Created => "created",
            TaskState::Running => "running",
            TaskState::Paused => "paused",
            TaskState::Exited => "exited",
            TaskState::Restarting => "restarting",
            TaskState::Unknown => "unknown",
        }
    }
}

impl From<ProcessStatus> for TaskState {
    fn from(s: ProcessStatus) -> Self {
        match s {
            ProcessStatus::Created => TaskState::Created,
            ProcessStatus::Running => TaskState::Running,
            ProcessStatus::Paused => TaskState::Paused,
            ProcessStatus::Exited => TaskState::Exited,
        }
    }
}

/// A container's state as users see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub state: TaskState,
    pub pid: u32,
    pub exit_code: i32,
    pub started_at: i64,
    pub finished_at: i64,
    pub oom_killed: bool,
}

/// A container in a namespace: (namespace, id).
type Key = (String, String);

/// What the agent knows of a live task's init until it exits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct InitState {
    /// Created, Running or Paused.
    state: TaskState,
    pid: u32,
    started_at: i64,
    /// Checks in a row the shim did not answer in time.
    misses: u32,
    /// Bumped by every change: a check's answer is taken only if nothing
    /// changed while it was asked (an event or a start's answer is newer).
    version: u64,
}

impl InitState {
    fn from_shim(s: &protocol::ProcessState) -> Self {
        InitState { state: s.status.into(), pid: s.pid, started_at: s.started_at, ..Default::default() }
    }

    /// Two checks in a row without an answer: the shim shows as unknown.
    fn unresponsive(&self) -> bool {
        self.misses >= 2
    }
}

/// Longest wait for a container's creation lock outside a start (a copy, a removal).
const CREATION_WAIT: Duration = Duration::from_secs(60);

/// One live task (its bundle exists and its shim may run).
pub struct Task {
    pub ns: String,
    pub id: String,
    /// The container's cgroup (`linux.cgroupsPath` of its spec).
    cgroup: String,
    pub bundle: PathBuf,
    /// Serializes start and delete.
    lifecycle: tokio::sync::Mutex<()>,
    /// The init's state until it exits.
    init: Mutex<InitState>,
    /// The init's exit, once known.
    exit: watch::Sender<Option<ExitInfo>>,
    /// Set when the task is gone (shim exited, bundle removed).
    gone: watch::Sender<bool>,
    /// The runtime's state directory of this task (for cleanup without a shim).
    runtime: RuntimeTarget,
}

#[derive(Debug, Clone)]
struct RuntimeTarget {
    path: String,
    root: String,
}

/// See [`Tasks::files`].
pub enum FilesAccess {
    /// The root directory of the container's live init.
    Live(std::os::fd::OwnedFd),
    /// No task: the snapshot is the caller's to mount while this is held.
    Stopped(tokio::sync::OwnedMutexGuard<()>),
}

/// A container's status from its live task, if any, and else from its record
/// (`restarting`: whether a restart of it is pending).
fn status_of(rec: &ContainerRecord, task: Option<&Task>, restarting: impl FnOnce() -> bool) -> Status {
    let from_exit = |e: &ExitInfo| Status {
        state: TaskState::Exited,
        pid: 0,
        exit_code: e.exit_code,
        started_at: e.started_at,
        finished_at: e.finished_at,
        oom_killed: e.oom_killed,
    };
    match task {
        None => match &rec.last_exit {
            Some(e) if restarting() => Status { state: TaskState::Restarting, ..from_exit(e) },
            Some(e) => from_exit(e),
            None => Status { state: TaskState::Created, ..Default::default() },
        },
        Some(t) => {
            if let Some(e) = t.exit.borrow().as_ref() {
                return from_exit(e);
            }
            let init = *t.init.lock().unwrap_or_else(|e| e.into_inner());
            if init.unresponsive() {
                return Status { state: TaskState::Unknown, ..Default::default() };
            }
            Status { state: init.state, pid: init.pid, started_at: init.started_at, ..Default::default() }
        }
    }
}

pub struct Tasks {
    state: PathBuf,
    cfg: RuntimeConfig,
    containers: Arc<Containers>,
    snapshots: Arc<Snapshots>,
    networks: Arc<crate::network::Networks>,
    events: Events,
    live: Mutex<NsMap<Arc<Task>>>,
    /// One lock per container while its task is being made, so that two
    /// Starts cannot make two shims.
    making: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
    /// Tasks deleted after their init exited, as (namespace, container id).
    ended: mpsc::UnboundedSender<Key>,
    ended_rx: Mutex<Option<mpsc::UnboundedReceiver<Key>>>,
    /// Containers whose restart policy starts them again after a delay, with
    /// the generation of that pending restart (a newer one, or a user's
    /// stop, start or removal, makes it stale).
    restarting: Mutex<NsMap<u64>>,
    /// The mount options the default runtime knows (`RUNTIME features`), asked once.
    mount_options: tokio::sync::OnceCell<Vec<String>>,
}

impl Tasks {
    pub fn new(
        state: &Path,
        cfg: RuntimeConfig,
        containers: Arc<Containers>,
        snapshots: Arc<Snapshots>,
        networks: Arc<crate::network::Networks>,
        events: Events,
    ) -> Arc<Self> {
        let (ended, ended_rx) = mpsc::unbounded_channel();
        Arc::new(Tasks {
            state: state.to_owned(),
            cfg,
            containers,
            snapshots,
            networks,
            events,
            live: Mutex::new(NsMap::default()),
            making: Mutex::new(HashMap::new()),
            ended,
            ended_rx: Mutex::new(Some(ended_rx)),
            restarting: Mutex::new(NsMap::default()),
            mount_options: tokio::sync::OnceCell::new(),
        })
    }

    /// Whether the default runtime takes mount option `option` (from its `features`
    /// command: runc 1.1 and later, crun 1.9; an older one, or one that does not answer
    /// within 5 s, is taken to know none).
    pub async fn runtime_knows_mount_option(&self, option: &str) -> bool {
        let known = self
            .mount_options
            .get_or_init(|| async {
                let Some(path) = self.runtime_entry(&self.cfg.default_runtime).ok().and_then(|e| find_binary(&e.path)) else {
                    return Vec::new();
                };
                let run = tokio::process::Command::new(path).arg("features").kill_on_drop(true).stdin(std::process::Stdio::null()).output();
                let Ok(Ok(out)) = tokio::time::timeout(Duration::from_secs(5), run).await else { return Vec::new() };
                serde_json::from_slice::<serde_json::Value>(&out.stdout)
                    .ok()
                    .and_then(|v| v.get("mountOptions").cloned())
                    .and_then(|v| serde_json::from_value(v).ok())
                    .unwrap_or_default()
            })
            .await;
        known.iter().any(|o| o == option)
    }

    /// A pending restart of the container (shown as `restarting`): its
    /// generation, which replaces any earlier one's.
    pub fn begin_restart(&self, ns: &str, id: &str) -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static GENERATION: AtomicU64 = AtomicU64::new(0);
        let generation = GENERATION.fetch_add(1, Ordering::Relaxed) + 1;
        self.restarting.lock().unwrap_or_else(|e| e.into_inner()).insert((ns.to_owned(), id.to_owned()), generation);
        generation
    }

    /// Whether pending restart `generation` is still the container's.
    pub fn restart_is_current(&self, ns: &str, id: &str, generation: u64) -> bool {
        self.restarting.lock().unwrap_or_else(|e| e.into_inner()).get(&(ns.to_owned(), id.to_owned())) == Some(&generation)
    }

    /// The end of pending restart `generation` (None: whichever is pending,
    /// as when the user stops, starts or removes the container).
    pub fn end_restart(&self, ns: &str, id: &str, generation: Option<u64>) {
        let mut map = self.restarting.lock().unwrap_or_else(|e| e.into_inner());
        let key = (ns.to_owned(), id.to_owned());
        if generation.is_none() || map.get(&key) == generation.as_ref() {
            map.remove(&key);
        }
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.cfg
    }

    /// The tasks deleted after their init exited, as (namespace, container
    /// id), from now on. The first caller gets them; later ones get None.
    pub fn take_ended(&self) -> Option<mpsc::UnboundedReceiver<Key>> {
        self.ended_rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn bundle(&self, ns: &str, id: &str) -> PathBuf {
        self.state.join("tasks").join(ns).join(id)
    }

    fn live_task(&self, ns: &str, id: &str) -> Option<Arc<Task>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).get(&NsId(ns, id)).cloned()
    }

    /// Resolve a runtime name (or path) to its binary and options.
    pub fn runtime_entry(&self, name: &str) -> Result<crate::config::RuntimeEntry, TaskError> {
        if let Some(e) = self.cfg.runtimes.get(name) {
            return Ok(e.clone());
        }
        if name.starts_with('/') {
            return Ok(crate::config::RuntimeEntry { path: name.to_owned(), hide_cgroup2: false });
        }
        Err(TaskError::InvalidArgument(format!(
            "unknown runtime {name:?}: use {} or an absolute path",
            self.cfg.runtimes.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
        )))
    }

    /// Check that a runtime can be used before a container is created with it.
    pub fn check_runtime(&self, name: &str) -> Result<(), TaskError> {
        let entry = self.runtime_entry(name)?;
        if find_binary(&entry.path).is_none() {
            return Err(TaskError::InvalidArgument(format!("runtime {name:?}: binary {:?} not found", entry.path)));
        }
        Ok(())
    }

    fn runtime_target(&self, name: &str) -> Result<(RuntimeTarget, bool), TaskError> {
        let entry = self.runtime_entry(name)?;
        let path = find_binary(&entry.path)
            .ok_or_else(|| TaskError::InvalidArgument(format!("runtime {name:?}: binary {:?} not found", entry.path)))?;
        let dir_name: String =
            name.rsplit('/').next().unwrap_or(name).chars().filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c)).collect();
        let root = self.state.join("runtime").join(if dir_name.is_empty() { "runtime".to_owned() } else { dir_name });
        Ok((RuntimeTarget { path: path.to_string_lossy().into_owned(), root: root.to_string_lossy().into_owned() }, entry.hide_cgroup2))
    }

    // ---- creating and starting ----

    fn making_lock(&self, ns: &str, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.making.lock().unwrap_or_else(|e| e.into_inner());
        m.entry((ns.to_owned(), id.to_owned())).or_default().clone()
    }

    /// The container is gone: drop its creation lock.
    pub fn forget_container(&self, ns: &str, id: &str) {
        self.making.lock().unwrap_or_else(|e| e.into_inner()).remove(&(ns.to_owned(), id.to_owned()));
    }

    /// Make the task: bundle, shim, rootfs, stdio; the runtime is not called yet.
    pub async fn create(self: &Arc<Self>, ns: &str, rec: &ContainerRecord) -> Result<Arc<Task>, TaskError> {
        let lock = self.making_lock(ns, &rec.id);
        let _making = lock.lock().await;
        self.create_locked(ns, rec).await
    }

    /// The live task of a container, or a new one (the init not started).
    async fn live_or_create(self: &Arc<Self>, ns: &str, rec: &ContainerRecord) -> Result<Arc<Task>, TaskError> {
        let lock = self.making_lock(ns, &rec.id);
        let _making = lock.lock().await;
        match self.live_task(ns, &rec.id) {
            Some(t) if t.exit.borrow().is_none() => Ok(t),
            _ => self.create_locked(ns, rec).await,
        }
    }

    async fn create_locked(self: &Arc<Self>, ns: &str, rec: &ContainerRecord) -> Result<Arc<Task>, TaskError> {
        if let Some(t) = self.live_task(ns, &rec.id) {
            if t.exit.borrow().is_some() {
                // The last run's cleanup is under way: let it finish.
                if !wait_gone(&t).await {
                    return Err(TaskError::Timeout(format!("the last task of container {} is still being deleted", rec.name)));
                }
            } else {
                return Err(TaskError::AlreadyExists(format!("container {} already has a task", rec.name)));
            }
        }
        let (runtime, hide_cgroup2) = self.runtime_target(&rec.runtime)?;
        let bundle = self.bundle(ns, &rec.id);
        if bundle.exists() {
            // Left by a crash and not recovered: nothing answers there.
            if ShimConnection::connect(&bundle).await.is_ok() {
                return Err(TaskError::AlreadyExists(format!("container {} already has a task", rec.name)));
            }
            remove_bundle(&bundle).map_err(io_err(&bundle))?;
        }
        let mounts = {
            let snapshots = self.snapshots.clone();
            let (ns, key) = (ns.to_owned(), rec.snapshot_key.clone());
            tokio::task::spawn_blocking(move || snapshots.mounts(&ns, &key))
                .await
                .map_err(|e| TaskError::Internal(e.to_string()))?
                .map_err(|e| TaskError::Container(e.into()))?
        };
        let spec = self.network_spec(ns, rec).await?;
        let log_path = self.containers.log_path(ns, rec);
        let cfg = ShimConfig {
            id: rec.id.clone(),
            namespace: ns.to_owned(),
            runtime: runtime.path.clone(),
            runtime_root: runtime.root.clone(),
            hide_cgroup2,
            // A mount propagating back to the host needs the host's mount namespace.
            host_mounts: spec.pointer("/linux/rootfsPropagation").and_then(serde_json::Value::as_str) == Some("rshared"),
            rootfs: mounts.into_iter().map(|m| RootfsMount { kind: m.kind, source: m.source, options: m.options }).collect(),
            log_path: log_path.to_string_lossy().into_owned(),
            // A log kept where its reader rotates it is not rotated here.
            log_max_size: if rec.config.log_path.is_some() { 0 } else { self.cfg.log_max_size },
            log_max_files: self.cfg.log_max_files,
            tty: rec.config.tty,
            stdin: rec.config.stdin,
            runtime_timeout_secs: 30,
        };
        let prepare = {
            let bundle = bundle.clone();
            let spec = serde_json::to_vec(&spec).unwrap_or_default();
            let shim_cfg = serde_json::to_vec_pretty(&cfg).unwrap_or_default();
            let log_dir = log_path.parent().map(Path::to_owned);
            let runtime_root = PathBuf::from(&runtime.root);
            move || -> Result<(), TaskError> {
                fs::create_dir_all(&bundle).map_err(io_err(&bundle))?;
                set_mode(&bundle, 0o700)?;
                fs::create_dir_all(&runtime_root).map_err(io_err(&runtime_root))?;
                if let Some(d) = log_dir {
                    fs::create_dir_all(&d).map_err(io_err(&d))?;
                }
                // The spec holds the container's environment: root only.
                write_private(&bundle.join(files::SPEC), &spec)?;
                write_private(&bundle.join(files::CONFIG), &shim_cfg)?;
                Ok(())
            }
        };
        let prepared = tokio::task::spawn_blocking(prepare).await.map_err(|e| TaskError::Internal(e.to_string())).and_then(|r| r);
        if let Err(e) = prepared {
            self.release_network(ns, &rec.id);
            return Err(e);
        }
        if let Err(e) = self.spawn_shim(&bundle).await {
            let _ = remove_bundle(&bundle);
            self.release_network(ns, &rec.id);
            return Err(e);
        }
        let task = match self.adopt(ns, rec, bundle, runtime).await {
            Ok(t) => t,
            Err(e) => {
                self.release_network(ns, &rec.id);
                return Err(e);
            }
        };
        self.events.publish(ns, "/tasks/create", &rec.id, &[]);
        Ok(task)
    }

    async fn spawn_shim(&self, bundle: &Path) -> Result<(), TaskError> {
        let log = bundle.join(files::SHIM_LOG);
        let stderr = {
            use std::os::unix::fs::OpenOptionsExt;
            fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&log).map_err(io_err(&log))?
        };
        let mut child = tokio::process::Command::new(&self.cfg.shim_binary)
            .arg(bundle)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| TaskError::Internal(format!("starting {}: {e}", self.cfg.shim_binary.display())))?;
        let Some(stdout) = child.stdout.take() else { return Err(TaskError::Internal("no shim stdout".into())) };
        let mut line = String::new();
        let ready = tokio::time::timeout(SHIM_READY_TIMEOUT, BufReader::new(stdout).read_line(&mut line)).await;
        if matches!(ready, Ok(Ok(_))) && line.trim() == files::READY {
            // The shim lives on by itself; tokio reaps it when it exits.
            drop(child);
            return Ok(());
        }
        let _ = child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
        let why = fs::read_to_string(&log).unwrap_or_default();
        let why = why.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("it exited without a word").trim().to_owned();
        Err(match ready {
            Err(_) => TaskError::Timeout(format!("the shim was not ready within {SHIM_READY_TIMEOUT:?}: {why}")),
            _ => TaskError::Internal(format!("the shim failed to start: {why}")),
        })
    }

    /// Start tracking the task of `bundle`, its init in state `init`.
    fn track(&self, ns: &str, rec: &ContainerRecord, bundle: PathBuf, runtime: RuntimeTarget, init: InitState) -> Arc<Task> {
        let id = &rec.id;
        let task = Arc::new(Task {
            ns: ns.to_owned(),
            id: id.to_owned(),
            cgroup: rec.cgroups_path.clone(),
            bundle,
            lifecycle: tokio::sync::Mutex::new(()),
            init: Mutex::new(init),
            exit: watch::channel(None).0,
            gone: watch::channel(false).0,
            runtime,
        });
        self.live.lock().unwrap_or_else(|e| e.into_inner()).insert((ns.to_owned(), id.to_owned()), task.clone());
        task
    }

    /// Track a task whose shim answers: subscribe to its events.
    async fn adopt(
        self: &Arc<Self>,
        ns: &str,
        rec: &ContainerRecord,
        bundle: PathBuf,
        runtime: RuntimeTarget,
    ) -> Result<Arc<Task>, TaskError> {
        let gone = |why| TaskError::ShimGone { id: rec.id.clone(), why };
        let mut sub = ShimConnection::connect(&bundle).await.map_err(gone)?;
        sub.request(&Request::Subscribe, CALL_TIMEOUT).await?;
        // The state after subscribing: a change from here on comes as an
        // event, and an exit that came before is not missed. A shim that is
        // there but slow to say (it answers one call at a time) is followed
        // all the same, shown as unknown until the background check hears it.
        let mut c = ShimConnection::connect(&bundle).await.map_err(gone)?;
        let (init, exited) = match c.request(&Request::State, CALL_TIMEOUT).await.map(|r| r.state) {
            Ok(Some(s)) => {
                let s = s.init;
                let exited = (s.status == ProcessStatus::Exited).then_some(ExitInfo {
                    exit_code: s.exit_code,
                    started_at: s.started_at,
                    finished_at: s.exited_at,
                    oom_killed: false,
                });
                (InitState::from_shim(&s), exited)
            }
            Err(e @ TaskError::ShimGone { .. }) => return Err(e),
            Ok(None) | Err(_) => (InitState { misses: 2, ..Default::default() }, None),
        };
        let task = self.track(ns, rec, bundle, runtime, init);
        let this = self.clone();
        let t = task.clone();
        tokio::spawn(async move {
            match exited {
                Some(exit) => this.init_exited(&t, exit).await,
                None => this.follow(t, sub).await,
            }
        });
        Ok(task)
    }

    /// Relay a shim's events until it goes; handle the init's exit.
    async fn follow(self: Arc<Self>, task: Arc<Task>, mut sub: ShimConnection) {
        loop {
            match sub.next_line::<ShimEvent>().await {
                Ok(Some(ev)) => match ev {
                    ShimEvent::Started { exec_id, pid, started_at } => {
                        if exec_id.is_empty() {
                            let started_at = if started_at > 0 { started_at } else { crate::metadata::now_nanos() };
                            task.set_init(InitState { state: TaskState::Running, pid, started_at, ..Default::default() });
                        }
                        let topic = if exec_id.is_empty() { "/tasks/start" } else { "/tasks/exec-started" };
                        self.events.publish(&task.ns, topic, &task.id, &[("pid", pid.to_string()), ("exec_id", exec_id)]);
                    }
                    ShimEvent::Exited { exec_id, pid, exit_code, started_at, exited_at } => {
                        let exit = ExitInfo { exit_code, started_at, finished_at: exited_at, oom_killed: false };
                        if exec_id.is_empty() {
                            // Known as exited before anyone hears of it: a Start
                            // prompted by the event makes a new task.
                            task.exit.send_replace(Some(exit.clone()));
                        }
                        self.events.publish(
                            &task.ns,
                            "/tasks/exit",
                            &task.id,
                            &[("pid", pid.to_string()), ("exit_code", exit_code.to_string()), ("exec_id", exec_id.clone())],
                        );
                        if exec_id.is_empty() {
                            self.init_exited(&task, exit).await;
                            return;
                        }
                    }
                    ShimEvent::Oom => self.events.publish(&task.ns, "/tasks/oom", &task.id, &[]),
                    ShimEvent::Paused => {
                        task.set_state(TaskState::Paused);
                        self.events.publish(&task.ns, "/tasks/paused", &task.id, &[]);
                    }
                    ShimEvent::Resumed => {
                        task.set_state(TaskState::Running);
                        self.events.publish(&task.ns, "/tasks/resumed", &task.id, &[]);
                    }
                },
                Ok(None) | Err(_) => {
                    // The shim is gone without a delete: it crashed or was killed.
                    if *task.gone.borrow() {
                        return;
                    }
                    let exit = read_exit_record(&task.bundle).unwrap_or_else(|| {
                        tracing::warn!(container = %task.id, "the shim died before the container's exit was recorded");
                        ExitInfo { exit_code: 255, started_at: 0, finished_at: crate::metadata::now_nanos(), oom_killed: false }
                    });
                    self.init_exited(&task, exit).await;
                    return;
                }
            }
        }
    }

    /// The init exited: report it at once (waiters, the container record),
    /// and delete the task in the background — the runtime's `delete` is kept
    /// off the path of whoever waits for the exit.
    async fn init_exited(self: &Arc<Self>, task: &Arc<Task>, mut exit: ExitInfo) {
        exit.oom_killed = cgroups::oom_killed(&task.cgroup);
        if exit.oom_killed {
            self.events.publish(&task.ns, "/tasks/oom", &task.id, &[]);
        }
        // The shim's own record (init.exit) stays in the bundle until the task is
        // deleted, so an agent crash from here on loses nothing.
        task.exit.send_replace(Some(exit.clone()));
        let record = async {
            let containers = self.containers.clone();
            let (ns, id) = (task.ns.clone(), task.id.clone());
            match tokio::task::spawn_blocking(move || containers.record_exit(&ns, &id, exit)).await {
                Ok(Ok(_)) | Ok(Err(ContainerError::Metadata(crate::metadata::MetadataError::NotFound { .. }))) => {}
                Ok(Err(e)) => tracing::warn!(container = %task.id, error = %e, "recording the exit"),
                Err(e) => tracing::warn!(container = %task.id, error = %e, "recording the exit"),
            }
        };
        let delete = async {
            let _guard = task.lifecycle.lock().await;
            if *task.gone.borrow() {
                return false;
            }
            if let Err(e) = self.teardown(task, false).await {
                tracing::warn!(container = %task.id, error = %e, "deleting the exited task");
            }
            true
        };
        let ((), deleted) = tokio::join!(record, delete);
        if !deleted {
            return;
        }
        self.forget(task);
        // Whoever removes `--rm` containers hears of it.
        let _ = self.ended.send((task.ns.clone(), task.id.clone()));
    }

    /// Delete the task through its shim and remove the bundle. When the shim
    /// cannot do it (it is gone, hangs, or the runtime's delete fails), the
    /// shim is killed and the runtime's `delete --force` runs from here: the
    /// task always ends, and the error is returned for the log.
    async fn teardown(&self, task: &Task, force: bool) -> Result<(), TaskError> {
        let req = Request::Delete { exec_id: String::new(), force };
        let by_shim = match ShimConnection::connect(&task.bundle).await {
            Ok(mut c) => match c.request(&req, CALL_TIMEOUT).await {
                Ok(_) => {
                    // The shim exits after answering; its socket closes with it.
                    let _ = tokio::time::timeout(Duration::from_secs(10), c.closed()).await;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Err(why) => Err(TaskError::ShimGone { id: task.id.clone(), why }),
        };
        if by_shim.is_err() {
            kill_shim(&task.bundle);
            runtime_delete(&task.runtime, &task.id).await;
        }
        let bundle = task.bundle.clone();
        let _ = tokio::task::spawn_blocking(move || remove_bundle(&bundle)).await;
        self.release_network(&task.ns, &task.id);
        task.gone.send_replace(true);
        self.events.publish(&task.ns, "/tasks/delete", &task.id, &[]);
        by_shim
    }

    /// Stop tracking a deleted task.
    fn forget(&self, task: &Task) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if live.get(&NsId(&task.ns, &task.id)).is_some_and(|t| std::ptr::eq(Arc::as_ptr(t), task)) {
            live.remove(&NsId(&task.ns, &task.id));
        }
    }

    async fn shim_state(&self, task: &Task) -> Result<ShimTaskState, TaskError> {
        let resp = self.call_within(task, &Request::State, STATE_TIMEOUT).await?;
        resp.state.ok_or_else(|| TaskError::Internal("the shim sent no state".into()))
    }

    async fn call(&self, task: &Task, req: &Request) -> Result<protocol::Response, TaskError> {
        self.call_within(task, req, CALL_TIMEOUT).await
    }

    async fn call_within(&self, task: &Task, req: &Request, timeout: Duration) -> Result<protocol::Response, TaskError> {
        let mut c = ShimConnection::connect(&task.bundle).await.map_err(|why| TaskError::ShimGone { id: task.id.clone(), why })?;
        c.request(req, timeout).await.map_err(|e| match e {
            TaskError::ShimGone { why, .. } => TaskError::ShimGone { id: task.id.clone(), why },
            e => e,
        })
    }

    fn require(&self, ns: &str, rec: &ContainerRecord) -> Result<Arc<Task>, TaskError> {
        match self.live_task(ns, &rec.id) {
            Some(t) if t.exit.borrow().is_none() => Ok(t),
            _ => Err(TaskError::NoTask(rec.name.clone())),
        }
    }

    /// Start the init (creating the task when there is none) or an exec.
    pub async fn start(self: &Arc<Self>, ns: &str, rec: &ContainerRecord, proc: &Proc) -> Result<u32, TaskError> {
        let init = *proc == Proc::Init;
        let task = if init { self.live_or_create(ns, rec).await? } else { self.require(ns, rec)? };
        let _guard = if init { Some(task.lifecycle.lock().await) } else { None };
        let resp = self.call(&task, &Request::Start { exec_id: proc.wire() }).await?;
        // Known as running when the call returns (the event may come later).
        if let (true, Some(p)) = (init, &resp.process) {
            task.set_init(InitState::from_shim(p));
        }
        Ok(resp.process.map(|p| p.pid).unwrap_or(0))
    }

    pub async fn kill(&self, ns: &str, rec: &ContainerRecord, proc: &Proc, signal: i32, all: bool) -> Result<(), TaskError> {
        let task = self.require(ns, rec)?;
        match self.call(&task, &Request::Kill { exec_id: proc.wire(), signal, all }).await {
            // It exited meanwhile, and its shim left with it.
            Err(_) if *proc == Proc::Init && task.ended() => {
                Err(TaskError::FailedPrecondition(format!("container {} is not running", rec.name)))
            }
            r => r.map(drop),
        }
    }

    /// Wait for the init's exit (or an exec's), up to `timeout`.
    pub async fn wait(&self, ns: &str, rec: &ContainerRecord, proc: &Proc, timeout: Option<Duration>) -> Result<ExitInfo, TaskError> {
        let fut = async {
            if let Proc::Exec(exec_id) = proc {
                let task = self.require(ns, rec)?;
                // Bounded by the caller's timeout (below) or its deadline, not by the call bound.
                let p = self
                    .call_within(&task, &Request::Wait { exec_id: exec_id.to_string() }, Duration::from_secs(365 * 86_400))
                    .await?
                    .process;
                let p = p.ok_or_else(|| TaskError::Internal("the shim sent no exit".into()))?;
                return Ok(ExitInfo { exit_code: p.exit_code, started_at: p.started_at, finished_at: p.exited_at, oom_killed: false });
            }
            match self.live_task(ns, &rec.id) {
                Some(t) => {
                    let mut rx = t.exit.subscribe();
                    let exit = rx.wait_for(Option::is_some).await.map_err(|_| TaskError::Internal("task dropped".into()))?.clone();
                    exit.ok_or_else(|| TaskError::Internal("no exit".into()))
                }
                None => {
                    if let Some(e) = &rec.last_exit {
                        return Ok(e.clone());
                    }
                    // The task may have exited and gone since `rec` was read: read it again.
                    let containers = self.containers.clone();
                    let (ns2, id) = (ns.to_owned(), rec.id.clone());
                    let fresh = tokio::task::spawn_blocking(move || containers.find(&ns2, &id))
                        .await
                        .map_err(|e| TaskError::Internal(e.to_string()))??;
                    fresh.last_exit.ok_or_else(|| TaskError::FailedPrecondition(format!("container {} has not been started", rec.name)))
                }
            }
        };
        match timeout {
            Some(t) => {
                tokio::time::timeout(t, fut).await.map_err(|_| TaskError::Timeout(format!("the process did not exit within {t:?}")))?
            }
            None => fut.await,
        }
    }

    /// The stop signal, then SIGKILL after `timeout`; returns the exit.
    pub async fn stop(&self, ns: &str, rec: &ContainerRecord, timeout: Duration) -> Result<ExitInfo, TaskError> {
        let Some(task) = self.live_task(ns, &rec.id) else {
            return rec.last_exit.clone().ok_or_else(|| TaskError::NoTask(rec.name.clone()));
        };
        if task.exit.borrow().is_none() {
            if self.shim_state(&task).await.is_ok_and(|s| s.init.status == ProcessStatus::Created) {
                return Err(TaskError::FailedPrecondition(format!("container {} has not been started", rec.name)));
            }
            // A task that exits between two calls is deleted, and its shim leaves, in the
            // background: a shim gone by then is not an error, the exit is what was asked.
            match self.call(&task, &Request::Kill { exec_id: String::new(), signal: rec.stop_signal, all: false }).await {
                Ok(_) | Err(TaskError::FailedPrecondition(_)) => {}
                Err(_) if task.ended() => {}
                Err(e) => return Err(e),
            }
            if let Ok(exit) = self.wait(ns, rec, &Proc::Init, Some(timeout)).await {
                return Ok(exit);
            }
            match self.call(&task, &Request::Kill { exec_id: String::new(), signal: 9, all: true }).await {
                Ok(_) | Err(TaskError::FailedPrecondition(_)) => {}
                Err(_) if task.ended() => {}
                Err(e) => return Err(e),
            }
        }
        self.wait(ns, rec, &Proc::Init, Some(KILL_TIMEOUT)).await
    }

    /// Delete the task: refused while it runs unless `force`, which kills it.
    /// An exited task is already being deleted in the background: this waits
    /// (bounded) for that to finish, and returns its exit.
    pub async fn delete(&self, ns: &str, rec: &ContainerRecord, force: bool) -> Result<Option<ExitInfo>, TaskError> {
        let Some(task) = self.live_task(ns, &rec.id) else { return Ok(rec.last_exit.clone()) };
        if task.exit.borrow().is_none() {
            let _guard = task.lifecycle.lock().await;
            // Read under the lock: a Start cannot slip in between.
            let status = self.shim_state(&task).await.map(|s| s.init.status);
            let exited = || async {
                let mut rx = task.exit.subscribe();
                let _ = tokio::time::timeout(KILL_TIMEOUT, rx.wait_for(Option::is_some)).await;
            };
            match status {
                _ if task.ended() => {}
                Ok(s @ (ProcessStatus::Running | ProcessStatus::Paused)) if !force => {
                    let (state, first) =
                        if s == ProcessStatus::Paused { ("paused", "unpause and stop it") } else { ("running", "stop it") };
                    return Err(TaskError::FailedPrecondition(format!(
                        "container {} is {state}: {first} first, or force the removal",
                        rec.name
                    )));
                }
                // Exited: the exit is about to be handled (and the task deleted in the background).
                Ok(ProcessStatus::Exited) => exited().await,
                // Never started, or running and forced: delete it here.
                Ok(_) => {
                    self.teardown(&task, true).await?;
                    self.forget(&task);
                }
                // The shim does not answer. Only a forced delete goes on: it kills
                // the shim and the container through the runtime.
                Err(e) => {
                    if !force {
                        return Err(e);
                    }
                    let _ = self.teardown(&task, true).await;
                    self.forget(&task);
                    exited().await;
                }
            }
        }
        // An exited task is deleted in the background: its bundle, mount and
        // shim are gone, too, when this returns (bounded).
        if !wait_gone(&task).await {
            return Err(TaskError::Timeout(format!("the task of container {} is still being deleted", rec.name)));
        }
        let exit = task.exit.borrow().clone();
        Ok(exit.or_else(|| rec.last_exit.clone()))
    }

    pub async fn exec(
        &self,
        ns: &str,
        rec: &ContainerRecord,
        exec_id: &ExecId,
        process: serde_json::Value,
        tty: bool,
        stdin: bool,
    ) -> Result<(), TaskError> {
        let task = self.require(ns, rec)?;
        self.call(&task, &Request::Exec { exec_id: exec_id.to_string(), process, tty, stdin }).await?;
        self.events.publish(ns, "/tasks/exec-added", &rec.id, &[("exec_id", exec_id.to_string())]);
        Ok(())
    }

    pub async fn delete_exec(&self, ns: &str, rec: &ContainerRecord, exec_id: &ExecId, force: bool) -> Result<ExitInfo, TaskError> {
        let task = self.require(ns, rec)?;
        let p = self.call(&task, &Request::Delete { exec_id: exec_id.to_string(), force }).await?.process;
        let p = p.ok_or_else(|| TaskError::Internal("the shim sent no state".into()))?;
        Ok(ExitInfo { exit_code: p.exit_code, started_at: p.started_at, finished_at: p.exited_at, oom_killed: false })
    }

    pub async fn pause(&self, ns: &str, rec: &ContainerRecord, pause: bool) -> Result<(), TaskError> {
        let task = self.require(ns, rec)?;
        self.call(&task, if pause { &Request::Pause } else { &Request::Resume }).await?;
        task.set_state(if pause { TaskState::Paused } else { TaskState::Running });
        Ok(())
    }

    /// Freeze the container for a commit, remembering it in the bundle: an
    /// agent that dies before [`Tasks::resume_after_commit`] thaws it when it
    /// finds the task again. Returns whether the container was frozen.
    pub async fn pause_for_commit(&self, ns: &str, rec: &ContainerRecord) -> bool {
        let Ok(task) = self.require(ns, rec) else { return false };
        let marker = task.bundle.join(COMMIT_PAUSED);
        if write_private(&marker, b"").is_err() {
            return false;
        }
        match self.call(&task, &Request::Pause).await {
            Ok(_) => true,
            Err(_) => {
                let _ = fs::remove_file(&marker);
                false
            }
        }
    }

    /// Thaw a container frozen by [`Tasks::pause_for_commit`].
    pub async fn resume_after_commit(&self, ns: &str, rec: &ContainerRecord) -> Result<(), TaskError> {
        let task = self.require(ns, rec)?;
        self.call(&task, &Request::Resume).await?;
        let _ = fs::remove_file(task.bundle.join(COMMIT_PAUSED));
        Ok(())
    }

    /// A task found again that a commit had frozen when the agent went away: thaw it.
    async fn resume_if_commit_paused(&self, task: &Task) {
        let marker = task.bundle.join(COMMIT_PAUSED);
        if !marker.exists() {
            return;
        }
        match self.call(task, &Request::Resume).await {
            // Thawed, or not frozen (the agent died before the pause took).
            Ok(_) | Err(TaskError::FailedPrecondition(_)) => {
                let _ = fs::remove_file(&marker);
                tracing::info!(container = %task.id, "thawed a container a commit had frozen");
            }
            Err(e) => tracing::warn!(container = %task.id, error = %e, "thawing a container a commit had frozen"),
        }
    }

    pub async fn pids(&self, ns: &str, rec: &ContainerRecord) -> Result<Vec<u32>, TaskError> {
        let task = self.require(ns, rec)?;
        Ok(self.call(&task, &Request::Pids).await?.pids.unwrap_or_default())
    }

    pub async fn resize(&self, ns: &str, rec: &ContainerRecord, proc: &Proc, width: u16, height: u16) -> Result<(), TaskError> {
        let task = self.require(ns, rec)?;
        self.call(&task, &Request::Resize { exec_id: proc.wire(), width, height }).await?;
        Ok(())
    }

    /// Change a running container's cgroup limits (`resources`: an OCI `linux.resources`).
    pub async fn update_resources(&self, ns: &str, rec: &ContainerRecord, resources: serde_json::Value) -> Result<(), TaskError> {
        let task = self.require(ns, rec)?;
        self.call(&task, &Request::Update { resources }).await?;
        Ok(())
    }

    /// Have the shim open the init's log file again (after its reader rotated it).
    pub async fn reopen_log(&self, ns: &str, rec: &ContainerRecord) -> Result<(), TaskError> {
        let task = self.require(ns, rec)?;
        self.call(&task, &Request::ReopenLog).await?;
        Ok(())
    }

    /// An attach connection to a process: frames both ways.
    pub async fn attach(&self, ns: &str, rec: &ContainerRecord, proc: &Proc) -> Result<ShimConnection, TaskError> {
        let task = self.require(ns, rec)?;
        let mut c = ShimConnection::connect(&task.bundle).await.map_err(|why| TaskError::ShimGone { id: task.id.clone(), why })?;
        c.request(&Request::Attach { exec_id: proc.wire() }, CALL_TIMEOUT).await?;
        Ok(c)
    }

    /// What `ps` shows for a container: from what the agent knows, asking no shim.
    pub fn status(&self, ns: &str, rec: &ContainerRecord) -> Status {
        let task = self.live_task(ns, &rec.id);
        let restarting = || self.restarting.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&NsId(ns, &rec.id));
        status_of(rec, task.as_deref(), restarting)
    }

    /// The statuses of `recs`, in their order: [`Tasks::status`] of each, the maps
    /// locked once for all (a list of hundreds).
    pub fn statuses(&self, ns: &str, recs: &[Arc<ContainerRecord>]) -> Vec<Status> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let restarting = self.restarting.lock().unwrap_or_else(|e| e.into_inner());
        recs.iter()
            .map(|rec| {
                let task = live.get(&NsId(ns, &rec.id)).map(Arc::as_ref);
                status_of(rec, task, || restarting.contains_key(&NsId(ns, &rec.id)))
            })
            .collect()
    }

    /// Every `interval`, ask each live task's shim for its state (all at
    /// once, each bounded): one that does not answer twice in a row shows as
    /// `unknown` until it answers again, and a change an event did not bring
    /// is taken.
    pub async fn check_shims(self: Arc<Self>, interval: Duration) {
        loop {
            tokio::time::sleep(interval).await;
            let tasks: Vec<Arc<Task>> = self.live.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
            let mut set = tokio::task::JoinSet::new();
            for task in tasks.into_iter().filter(|t| t.exit.borrow().is_none()) {
                let this = self.clone();
                set.spawn(async move {
                    let asked = task.init.lock().unwrap_or_else(|e| e.into_inner()).version;
                    let answer = this.shim_state(&task).await;
                    let mut init = task.init.lock().unwrap_or_else(|e| e.into_inner());
                    match answer {
                        // An exit is the follower's to handle.
                        Ok(s) if s.init.status == ProcessStatus::Exited => {}
                        // Taken unless something newer came meanwhile.
                        Ok(s) if init.version == asked => {
                            let fresh = InitState::from_shim(&s.init);
                            *init = InitState { version: init.version + 1, ..fresh };
                        }
                        Ok(_) => init.misses = 0,
                        // A shim that is there and does not answer in time. (One
                        // that is gone closed its events too: its follower handles it.)
                        Err(e @ TaskError::Timeout(_)) if task.exit.borrow().is_none() && !*task.gone.borrow() => {
                            init.misses += 1;
                            if init.misses == 2 {
                                tracing::warn!(container = %task.id, error = %e, "the shim does not answer");
                            }
                        }
                        Err(_) => {}
                    }
                });
            }
            while set.join_next().await.is_some() {}
        }
    }

    /// Whether the container's init is live (created, running or paused; not exited).
    pub fn is_running(&self, ns: &str, id: &str) -> bool {
        self.live_task(ns, id).is_some_and(|t| t.exit.borrow().is_none())
    }

    /// The container's creation lock, held: no task can be made while it is (a copy of a
    /// stopped container's files holds it; so does a removal, waiting for such a copy).
    /// Waited for at most [`CREATION_WAIT`].
    pub async fn creation_guard(&self, ns: &str, id: &str) -> Result<tokio::sync::OwnedMutexGuard<()>, TaskError> {
        let lock = self.making_lock(ns, id);
        tokio::time::timeout(CREATION_WAIT, lock.lock_owned())
            .await
            .map_err(|_| TaskError::FailedPrecondition(format!("container {id} is being started, or its files copied: try again")))
    }

    /// How a container's files are reached (`cp`). A live task's init
    /// gives its root directory, the container's own mounts included; the
    /// descriptor is checked to be of a process in the container's cgroup, so
    /// a pid reused since cannot lend its root. A container without a task
    /// (one whose task is ending is waited for) leaves its snapshot to the
    /// caller to mount: no task can be made while the guard is held.
    pub async fn files(&self, ns: &str, rec: &ContainerRecord) -> Result<FilesAccess, TaskError> {
        let guard = self.creation_guard(ns, &rec.id).await?;
        if let Some(task) = self.live_task(ns, &rec.id) {
            if task.exit.borrow().is_none() {
                let pid = task.init.lock().unwrap_or_else(|e| e.into_inner()).pid;
                if pid == 0 {
                    return Err(TaskError::FailedPrecondition(format!("container {} is starting: try again", rec.name)));
                }
                let cgroup = task.cgroup.clone();
                let root = tokio::task::spawn_blocking(move || procs::root_of(pid, &cgroup))
                    .await
                    .map_err(|e| TaskError::Internal(format!("opening the container's root: {e}")))?;
                return match root {
                    Some(fd) => Ok(FilesAccess::Live(fd)),
                    None => {
                        Err(TaskError::FailedPrecondition(format!("container {} stopped while its files were opened: try again", rec.name)))
                    }
                };
            }
            if !wait_gone(&task).await {
                return Err(TaskError::Timeout(format!("the last task of container {} is still being deleted", rec.name)));
            }
        }
        Ok(FilesAccess::Stopped(guard))
    }

    /// Whether the container has a task that is not yet deleted.
    pub fn has_task(&self, ns: &str, id: &str) -> bool {
        self.live_task(ns, id).is_some()
    }

    /// After a restart: find the shims again. A task whose shim answers is
    /// followed as before; one whose shim is gone is recorded as exited (with
    /// the code the shim wrote, if it did) and cleaned up.
    pub async fn recover(self: &Arc<Self>, known: &[(String, ContainerRecord)]) -> usize {
        let mut found = 0;
        let known: HashMap<(String, String), &ContainerRecord> = known.iter().map(|(ns, c)| ((ns.clone(), c.id.clone()), c)).collect();
        let tasks_dir = self.state.join("tasks");
        let Ok(nss) = fs::read_dir(&tasks_dir) else { return 0 };
        for ns_entry in nss.flatten() {
            let ns = ns_entry.file_name().to_string_lossy().into_owned();
            for entry in fs::read_dir(ns_entry.path()).into_iter().flatten().flatten() {
                let id = entry.file_name().to_string_lossy().into_owned();
                let bundle = entry.path();
                let Some(rec) = known.get(&(ns.clone(), id.clone())) else {
                    tracing::warn!(bundle = %bundle.display(), "a task without a container: removing it");
                    self.discard(&bundle, &id).await;
                    continue;
                };
                let Ok((runtime, _)) = self.runtime_target(&rec.runtime) else {
                    self.discard(&bundle, &id).await;
                    continue;
                };
                found += 1;
                match self.adopt(&ns, rec, bundle.clone(), runtime.clone()).await {
                    Ok(task) => {
                        tracing::info!(container = %id, "task found again");
                        self.resume_if_commit_paused(&task).await;
                    }
                    Err(_) => {
                        // No shim: record the exit it wrote (or an unknown one) and clean up.
                        let task = self.track(&ns, rec, bundle, runtime, InitState::default());
                        // The shim's record; else one already in the container record (a
                        // crash while the bundle was being removed); else unknown (255).
                        let exit = read_exit_record(&task.bundle).or_else(|| rec.last_exit.clone()).unwrap_or(ExitInfo {
                            exit_code: 255,
                            started_at: 0,
                            finished_at: crate::metadata::now_nanos(),
                            oom_killed: false,
                        });
                        tracing::info!(container = %id, exit_code = exit.exit_code, "task's shim is gone; recording its exit");
                        self.init_exited(&task, exit).await;
                    }
                }
            }
        }
        found
    }

    /// Kill and remove a task nobody owns.
    async fn discard(&self, bundle: &Path, id: &str) {
        match ShimConnection::connect(bundle).await {
            Ok(mut c) => {
                let _ = c.request(&Request::Delete { exec_id: String::new(), force: true }, CALL_TIMEOUT).await;
            }
            Err(_) => {
                // No shim: the runtime's state may remain; the shim's config names the runtime.
                let cfg = fs::read(bundle.join(files::CONFIG)).ok().and_then(|d| serde_json::from_slice::<ShimConfig>(&d).ok());
                if let Some(cfg) = cfg {
                    runtime_delete(&RuntimeTarget { path: cfg.runtime, root: cfg.runtime_root }, &cfg.id).await;
                }
            }
        }
        let _ = remove_bundle(bundle);
        tracing::info!(container = %id, "removed an orphaned task");
    }
}

impl Task {
    /// Its init exited, or the task is deleted: a shim that no longer answers has left
    /// with it (as it does once the exit is handled).
    fn ended(&self) -> bool {
        self.exit.borrow().is_some() || *self.gone.borrow()
    }

    /// The init's state, from an event or an answer of its shim.
    fn set_init(&self, new: InitState) {
        let mut init = self.init.lock().unwrap_or_else(|e| e.into_inner());
        *init = InitState { version: init.version + 1, misses: 0, ..new };
    }

    /// Running or paused, as a pause or a resume left it.
    fn set_state(&self, state: TaskState) {
        let mut init = self.init.lock().unwrap_or_else(|e| e.into_inner());
        *init = InitState { state, version: init.version + 1, misses: 0, ..*init };
    }
}

/// Wait (bounded) until the task is deleted; false if it is not by then.
async fn wait_gone(task: &Task) -> bool {
    let mut rx = task.gone.subscribe();
    let gone = tokio::time::timeout(GONE_TIMEOUT, rx.wait_for(|g| *g)).await;
    matches!(gone, Ok(Ok(_)))
}

/// `<runtime> delete --force`, bounded, for a task whose shim cannot do it.
async fn runtime_delete(rt: &RuntimeTarget, id: &str) {
    let (rt, id) = (rt.clone(), id.to_owned());
    let _ = tokio::task::spawn_blocking(move || {
        crate::process::run_with_timeout(
            std::process::Command::new(&rt.path).args(["--root", &rt.root, "delete", "--force", &id]),
            Duration::from_secs(30),
        )
    })
    .await;
}

/// SIGKILL the shim of `bundle`, if its pid file names a live berth-shim of this bundle.
fn kill_shim(bundle: &Path) {
    let Some(pid) = fs::read_to_string(bundle.join(files::SHIM_PID)).ok().and_then(|s| s.trim().parse::<i32>().ok()) else { return };
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let ours = cmdline.split(|&b| b == 0).nth(1).is_some_and(|arg| arg == bundle.as_os_str().as_encoded_bytes());
    if let (true, Some(pid)) = (ours, rustix::process::Pid::from_raw(pid)) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

fn read_exit_record(bundle: &Path) -> Option<ExitInfo> {
    let data = fs::read(bundle.join(files::INIT_EXIT)).ok()?;
    let r: protocol::ExitRecord = serde_json::from_slice(&data).ok()?;
    Some(ExitInfo { exit_code: r.exit_code, started_at: r.started_at, finished_at: r.exited_at, oom_killed: false })
}

/// Write a file only root reads (0600).
fn write_private(path: &Path, data: &[u8]) -> Result<(), TaskError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(io_err(path))?;
    f.write_all(data).map_err(io_err(path))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), TaskError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

/// A binary given as a path, or found in PATH.
/// Remove a task's bundle. Its root is unmounted first: a shim in the host's mount
/// namespace that died left it mounted there, and the removal must not go through it
/// into the container's files.
fn remove_bundle(bundle: &Path) -> std::io::Result<()> {
    match rustix::mount::unmount(bundle.join(files::ROOTFS), rustix::mount::UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    fs::remove_dir_all(bundle)
}

pub fn find_binary(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// A container's labels and what its task reports, for filters.
pub fn labels_match(labels: &BTreeMap<String, String>, key: &str, value: Option<&str>) -> bool {
    match value {
        Some(v) => labels.get(key).map(String::as_str) == Some(v),
        None => labels.contains_key(key),
    }
}
