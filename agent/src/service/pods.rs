//! Pods: the CRI's sandboxes. A pod is a container of the agent's own pause image (the
//! berth-init binary in `--pause` mode: it holds the pod's namespaces open, reaps, and
//! exits on SIGTERM), with the pod's hostname, DNS settings, published ports and network (a
//! namespace of its own on the default CNI network, or the host's), that the pod's
//! containers join. The pause image is made by the agent from the binary it carries, and
//! imported like any archive: no registry is asked.
//!
//! What a pod is in the CRI's terms lives on its container: its metadata and the CRI's
//! labels as labels, its annotations (which can be large) and log directory in a small
//! record beside it (`<root>/cri/pods/<id>.json`, written whole then renamed).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use super::containers::{ContainerService, ContainerView, NewContainer};
use super::images::ImageService;
use super::tasks::TaskService;
use super::{Core, Error, Update};
use crate::image::import::ImportOptions;
use crate::metadata::container_config::{ContainerConfig, NetworkMode};
use crate::network::PortSpec;
use crate::runtime::{Proc, TaskState};

/// The namespace of everything the CRI makes, as containerd's CRI plugin uses.
pub const NAMESPACE: &str = "k8s.io";

/// Label of a pod's container: `sandbox`.
pub const LABEL_KIND: &str = "io.berth.cri.kind";
/// Labels of a pod's container: its CRI metadata.
pub const LABEL_NAME: &str = "io.berth.cri.pod.name";
pub const LABEL_NAMESPACE: &str = "io.berth.cri.pod.namespace";
pub const LABEL_UID: &str = "io.berth.cri.pod.uid";
pub const LABEL_ATTEMPT: &str = "io.berth.cri.pod.attempt";
/// Label of a container that belongs to a pod: the pod's id.
pub const LABEL_SANDBOX: &str = "io.berth.cri.sandbox-id";
/// Labels of a pod's container: its CRI name and attempt.
pub const LABEL_CONTAINER_NAME: &str = "io.berth.cri.container.name";
pub const LABEL_CONTAINER_ATTEMPT: &str = "io.berth.cri.container.attempt";
const INTERNAL_LABELS: [&str; 8] =
    [LABEL_KIND, LABEL_NAME, LABEL_NAMESPACE, LABEL_UID, LABEL_ATTEMPT, LABEL_SANDBOX, LABEL_CONTAINER_NAME, LABEL_CONTAINER_ATTEMPT];

/// How long a pod's pause process gets to end on SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The pause image's name (one per agent version).
pub fn pause_image() -> String {
    format!("berth.local/pause:{}", env!("CARGO_PKG_VERSION"))
}

/// What a pod is made from.
#[derive(Debug, Clone, Default)]
pub struct PodSpec {
    pub meta: PodMeta,
    pub hostname: String,
    pub log_directory: String,
    pub dns_servers: Vec<String>,
    pub dns_searches: Vec<String>,
    pub dns_options: Vec<String>,
    pub ports: Vec<PortSpec>,
    /// The host's network instead of a namespace of its own.
    pub host_network: bool,
    /// The host's process and IPC namespaces.
    pub host_pid: bool,
    pub host_ipc: bool,
    /// The cgroup the pod's containers go under (the kubelet's pod cgroup).
    pub cgroup_parent: String,
    /// Namespaced kernel parameters of the pod (its network and IPC namespaces).
    pub sysctls: BTreeMap<String, String>,
    /// The pause process's seccomp profile.
    pub seccomp: Seccomp,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub runtime_handler: String,
}

/// A pod's identity in the orchestrator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodMeta {
    pub name: String,
    pub uid: String,
    pub namespace: String,
    pub attempt: u32,
}

/// A pod as the CRI shows it.
#[derive(Debug, Clone)]
pub struct PodView {
    pub id: String,
    pub meta: PodMeta,
    pub ready: bool,
    /// Nanoseconds since the Unix epoch.
    pub created: i64,
    /// Its addresses on its network, the first one first (none on the host's network).
    pub ips: Vec<String>,
    pub host_network: bool,
    pub host_pid: bool,
    pub host_ipc: bool,
    pub cgroup_parent: Option<String>,
    /// The pod's hostname, which its containers take too (empty: the container's id).
    pub hostname: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub log_directory: String,
    pub runtime_handler: String,
}

/// What a pod's record beside its container holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct PodRecord {
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    log_directory: String,
    #[serde(default)]
    runtime_handler: String,
}

/// A container of a pod, as CreateContainer asks for it.
#[derive(Debug, Clone, Default)]
pub struct PodContainerSpec {
    pub name: String,
    pub attempt: u32,
    /// As the kubelet names it (a name, `repo@digest` or an id).
    pub image: String,
    /// Replaces the image's entrypoint (and then its command) when not empty.
    pub command: Vec<String>,
    /// Replaces the image's command when not empty.
    pub args: Vec<String>,
    pub workdir: String,
    /// `KEY=VALUE`.
    pub env: Vec<String>,
    pub mounts: Vec<crate::metadata::container_config::MountSpec>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Relative to the pod's log directory.
    pub log_path: String,
    /// `UID[:GID]` or a name.
    pub user: Option<String>,
    pub privileged: bool,
    pub read_only: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub no_new_privileges: bool,
    /// Memory and CPU limits.
    pub resources: crate::metadata::container_config::Resources,
    pub tty: bool,
    pub stdin: bool,
    /// The first attach that ends its input closes the container's stdin.
    pub stdin_once: bool,
    /// Whose process namespace it runs in.
    pub pid: PidMode,
    /// More groups of its processes (numbers).
    pub groups: Vec<i64>,
    /// Not the groups the image's /etc/group gives its user (SupplementalGroupsPolicy Strict).
    pub groups_strict: bool,
    pub devices: Vec<crate::metadata::container_config::DeviceMapping>,
    pub seccomp: Seccomp,
    /// An AppArmor profile of the host's to run under (empty: the runtime's choice).
    pub apparmor: String,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
}

/// What happened to a pod's container (or to a pod: its id, its sandbox's events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodEventKind {
    Created,
    Started,
    Stopped,
    Deleted,
}

/// A change of a pod's container or of a pod, with the pod's state after it.
#[derive(Debug, Clone)]
pub struct PodEvent {
    pub id: String,
    pub kind: PodEventKind,
    /// Nanoseconds since the Unix epoch.
    pub at: i64,
    /// The pod, unless it is gone.
    pub pod: Option<PodView>,
    /// The pod's containers.
    pub containers: Vec<PodContainerView>,
}

/// The process namespace of a pod's container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PidMode {
    /// One of its own.
    #[default]
    Container,
    /// The pod's (shared by its containers).
    Pod,
    /// The host's.
    Node,
    /// That of another container (its id).
    Target(String),
}

/// The seccomp profile of a pod's container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Seccomp {
    /// None asked for: unconfined, as the CRI's other runtimes do.
    #[default]
    Unset,
    /// The agent's default profile.
    RuntimeDefault,
    Unconfined,
    /// A profile file on the host (an absolute path).
    Localhost(String),
}

impl Seccomp {
    /// The container config's form: empty for the agent's default, `unconfined`, or a
    /// profile's JSON (read from the host).
    async fn config(&self) -> Result<String, Error> {
        Ok(match self {
            Seccomp::Unset | Seccomp::Unconfined => "unconfined".to_owned(),
            Seccomp::RuntimeDefault => String::new(),
            Seccomp::Localhost(path) => {
                if !path.starts_with('/') {
                    return Err(Error::InvalidArgument(format!("seccomp profile {path:?}: an absolute path on the host is required")));
                }
                tokio::fs::read_to_string(path).await.map_err(|e| Error::InvalidArgument(format!("seccomp profile {path}: {e}")))?
            }
        })
    }
}

/// A pod's container as the CRI shows it.
#[derive(Debug, Clone)]
pub struct PodContainerView {
    pub id: String,
    pub pod_id: String,
    pub name: String,
    pub attempt: u32,
    /// As the kubelet named it.
    pub image: String,
    /// The image's id (its config's digest).
    pub image_id: String,
    pub state: TaskState,
    /// Nanoseconds since the Unix epoch; 0 when not yet.
    pub created: i64,
    pub started: i64,
    pub finished: i64,
    pub exit_code: i32,
    pub oom_killed: bool,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Where the kubelet reads its log (the pod's log directory joined with its log path).
    pub log_path: String,
    pub mounts: Vec<crate::metadata::container_config::MountSpec>,
    /// An attach's end of input is the container's (`stdin_once`).
    pub stdin_once: bool,
}

/// A pod's resource use.
#[derive(Debug, Clone)]
pub struct PodStats {
    pub pod: PodView,
    /// The pod's own cgroup with its containers' added.
    pub total: super::tasks::Stats,
    pub containers: Vec<(PodContainerView, super::tasks::Stats)>,
}

/// Which of the pods' containers a list shows.
#[derive(Debug, Clone, Default)]
pub struct PodContainerFilter {
    /// A container id or a prefix of one.
    pub id: String,
    pub pod_id: String,
    pub state: Option<TaskState>,
    pub labels: BTreeMap<String, String>,
}

/// What a pod container's record beside it holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ContainerRecordExtra {
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    log_path: String,
    #[serde(default)]
    image: String,
}

/// Which pods a list shows.
#[derive(Debug, Clone, Default)]
pub struct PodFilter {
    /// A pod id or a prefix of one.
    pub id: String,
    pub ready: Option<bool>,
    /// Labels every shown pod has (the CRI's labels).
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone)]
pub struct PodService {
    core: Arc<Core>,
    containers: ContainerService,
    tasks: TaskService,
    images: ImageService,
}

impl PodService {
    pub(crate) fn new(core: Arc<Core>, containers: ContainerService, tasks: TaskService, images: ImageService) -> Self {
        PodService { core, containers, tasks, images }
    }

    /// Whether containers can have recursive read-only mounts (the runtime's `rro`).
    pub async fn recursive_read_only(&self) -> bool {
        self.core.tasks.runtime_knows_mount_option("rro").await
    }

    /// The pod's /dev/shm on the host: a tmpfs that each of its containers binds at
    /// /dev/shm, so POSIX shared memory (`shm_open`) is shared as the pod's IPC
    /// namespace is (a container's own /dev/shm would hide it from the others).
    fn shm_dir(&self, id: &str) -> PathBuf {
        self.core.config.state.join("pods").join(id).join("shm")
    }

    /// Where the records beside pods (`pods`) and their containers (`containers`) are.
    fn records(&self, kind: &str) -> PathBuf {
        self.core.config.root.join("cri").join(kind)
    }

    /// Make and start a pod; its id. It runs to its end even when the caller goes (its
    /// deadline passes): a pod half made is undone, not left.
    pub async fn run(&self, ns: &str, spec: PodSpec) -> Result<String, Error> {
        let (svc, ns) = (self.clone(), ns.to_owned());
        tokio::spawn(async move { svc.run_whole(&ns, spec).await })
            .await
            .map_err(|e| Error::Internal(format!("the pod's start failed: {e}")))?
    }

    async fn run_whole(&self, ns: &str, spec: PodSpec) -> Result<String, Error> {
        let m = &spec.meta;
        if m.name.is_empty() || m.namespace.is_empty() || m.uid.is_empty() {
            return Err(Error::InvalidArgument("a pod needs a name, a namespace and a uid (PodSandboxMetadata)".into()));
        }
        check_labels(&spec.labels)?;
        // The pause process as the pod's security context asks (unconfined when it does not,
        // as the CRI's other runtimes run it).
        let seccomp = spec.seccomp.config().await?;
        self.ensure_pause_image(ns).await?;
        let mut labels = spec.labels.clone();
        labels.insert(LABEL_KIND.into(), "sandbox".into());
        labels.insert(LABEL_NAME.into(), m.name.clone());
        labels.insert(LABEL_NAMESPACE.into(), m.namespace.clone());
        labels.insert(LABEL_UID.into(), m.uid.clone());
        labels.insert(LABEL_ATTEMPT.into(), m.attempt.to_string());
        let config = ContainerConfig {
            command: Some(vec!["--pause".into()]),
            hostname: (!spec.hostname.is_empty()).then(|| spec.hostname.clone()),
            network: if spec.host_network { NetworkMode::Host } else { NetworkMode::Networks },
            ports: if spec.host_network { Vec::new() } else { spec.ports.clone() },
            dns: spec.dns_servers.clone(),
            dns_search: spec.dns_searches.clone(),
            dns_options: spec.dns_options.clone(),
            pid_host: spec.host_pid,
            ipc_host: spec.host_ipc,
            // The pod's sysctls are its namespaces': set once, in the pause container.
            sysctls: spec.sysctls.clone(),
            cgroup_parent: (!spec.cgroup_parent.is_empty()).then(|| spec.cgroup_parent.clone()),
            seccomp,
            ..Default::default()
        };
        let name = cri_name(&["POD", &m.name, &m.namespace, &m.uid], m.attempt);
        let new = NewContainer { image: pause_image(), name, config, labels, runtime: String::new() };
        let view = self.containers.create(ns, new).await?;
        let id = view.record.id.clone();
        let record = PodRecord {
            annotations: spec.annotations.clone(),
            log_directory: spec.log_directory.clone(),
            runtime_handler: spec.runtime_handler.clone(),
        };
        let shm = self.shm_dir(&id);
        let started = match self.write_record("pods", &id, &record) {
            // The pod's /dev/shm, unless it shares the host's IPC (and so its /dev/shm).
            Ok(()) if !spec.host_ipc => {
                mount_shm(&shm).map_err(|e| Error::Internal(format!("the pod's /dev/shm at {}: {e}", shm.display())))
            }
            other => other,
        };
        let started = match started {
            Ok(()) => self.tasks.start(ns, &id, &Proc::Init).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = started {
            let _ = self.containers.remove(ns, &id, true, true).await;
            self.remove_record("pods", &id);
            unmount_shm(&shm);
            return Err(e);
        }
        Ok(id)
    }

    /// The pod `id` (a unique prefix will do), or None.
    pub async fn get(&self, ns: &str, id: &str) -> Result<Option<PodView>, Error> {
        Ok(self.find(ns, id).await?.and_then(|v| self.view(&v)))
    }

    /// A container by id, or None.
    async fn find(&self, ns: &str, id: &str) -> Result<Option<ContainerView>, Error> {
        match self.containers.get(ns, id).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if is_gone(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The pods, as `filter` asks.
    pub async fn list(&self, ns: &str, filter: &PodFilter) -> Result<Vec<PodView>, Error> {
        let all = self.containers.list(ns, &[format!("label.{LABEL_KIND}==sandbox")]).await?;
        Ok(all
            .iter()
            .filter_map(|v| self.view(v))
            .filter(|p| filter.id.is_empty() || p.id.starts_with(&filter.id))
            .filter(|p| filter.ready.is_none_or(|r| r == p.ready))
            .filter(|p| filter.labels.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
            .collect())
    }

    /// Stop the pod's containers, then its pause process; its network goes with its task.
    /// A pod that is not there, or stopped already, is stopped.
    pub async fn stop(&self, ns: &str, id: &str) -> Result<(), Error> {
        let Some(pod) = self.get(ns, id).await? else {
            self.unmount_shm_of(id);
            return Ok(());
        };
        for c in self.members(ns, &pod.id).await? {
            self.stop_quietly(ns, &c.record.id, STOP_TIMEOUT).await?;
        }
        self.stop_quietly(ns, &pod.id, STOP_TIMEOUT).await?;
        // Its containers are stopped, and none starts again in a stopped pod (as containerd).
        unmount_shm(&self.shm_dir(&pod.id));
        Ok(())
    }

    /// The /dev/shm of a pod that is gone (removed otherwise, or by a call cut short), when
    /// `id` is a whole id.
    fn unmount_shm_of(&self, id: &str) {
        if crate::digest::is_hex64(id) {
            unmount_shm(&self.shm_dir(id));
        }
    }

    /// Remove the pod's containers and the pod. A pod that is not there is removed.
    /// It runs to its end even when the caller goes (its deadline passes).
    pub async fn remove(&self, ns: &str, id: &str) -> Result<(), Error> {
        let (svc, ns, id) = (self.clone(), ns.to_owned(), id.to_owned());
        tokio::spawn(async move { svc.remove_whole(&ns, &id).await })
            .await
            .map_err(|e| Error::Internal(format!("the pod's removal failed: {e}")))?
    }

    async fn remove_whole(&self, ns: &str, id: &str) -> Result<(), Error> {
        let Some(pod) = self.get(ns, id).await? else {
            self.unmount_shm_of(id);
            return Ok(());
        };
        for c in self.members(ns, &pod.id).await? {
            self.remove_container(ns, &c.record.id).await?;
        }
        self.remove_quietly(ns, &pod.id).await?;
        self.remove_record("pods", &pod.id);
        unmount_shm(&self.shm_dir(&pod.id));
        Ok(())
    }

    /// The containers that belong to pod `id`.
    async fn members(&self, ns: &str, id: &str) -> Result<Vec<ContainerView>, Error> {
        self.containers.list(ns, &[format!("label.{LABEL_SANDBOX}=={id}")]).await
    }

    async fn stop_quietly(&self, ns: &str, id: &str, timeout: Duration) -> Result<(), Error> {
        match self.tasks.stop(ns, id, Some(timeout)).await {
            // Not running (never started, or stopped), or gone meanwhile: stopped.
            Err(e) if !is_gone(&e) && !is_not_running(&e) => Err(e),
            _ => Ok(()),
        }
    }

    async fn remove_quietly(&self, ns: &str, id: &str) -> Result<(), Error> {
        match self.containers.remove(ns, id, true, true).await {
            Err(e) if !is_gone(&e) => Err(e),
            _ => Ok(()),
        }
    }

    /// The pod of a container view, when it is one.
    fn view(&self, v: &ContainerView) -> Option<PodView> {
        let labels = &v.record.labels;
        if labels.get(LABEL_KIND).map(String::as_str) != Some("sandbox") {
            return None;
        }
        let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
        let meta = PodMeta {
            name: get(LABEL_NAME),
            uid: get(LABEL_UID),
            namespace: get(LABEL_NAMESPACE),
            attempt: get(LABEL_ATTEMPT).parse().unwrap_or(0),
        };
        let record: PodRecord = self.read_record("pods", &v.record.id);
        let ips = v
            .network
            .as_ref()
            .map(|a| a.endpoints.iter().flat_map(|e| e.addresses.ipv4()).map(|ip| ip.to_string()).collect())
            .unwrap_or_default();
        Some(PodView {
            id: v.record.id.clone(),
            meta,
            ready: v.status.state == TaskState::Running,
            created: v.record.created,
            ips,
            host_network: v.record.config.network == NetworkMode::Host,
            host_pid: v.record.config.pid_host,
            host_ipc: v.record.config.ipc_host,
            cgroup_parent: v.record.config.cgroup_parent.clone(),
            hostname: v.record.config.hostname.clone().unwrap_or_default(),
            labels: caller_labels(labels),
            annotations: record.annotations,
            log_directory: record.log_directory,
            runtime_handler: record.runtime_handler,
        })
    }

    fn write_record(&self, kind: &str, id: &str, record: &impl Serialize) -> Result<(), Error> {
        let dir = self.records(kind);
        let err = |e: std::io::Error| Error::Internal(format!("writing a record in {}: {e}", dir.display()));
        std::fs::create_dir_all(&dir).map_err(err)?;
        let tmp = dir.join(format!(".{id}.tmp"));
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&serde_json::to_vec(record).map_err(|e| Error::Internal(e.to_string()))?).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, dir.join(format!("{id}.json"))).map_err(err)
    }

    fn read_record<T: for<'de> Deserialize<'de> + Default>(&self, kind: &str, id: &str) -> T {
        std::fs::read(self.records(kind).join(format!("{id}.json"))).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    fn remove_record(&self, kind: &str, id: &str) {
        let _ = std::fs::remove_file(self.records(kind).join(format!("{id}.json")));
    }

    // ---- the pods' containers ----

    /// Make a container in pod `pod_id` (not started); its id. It joins the pod's network
    /// (the pod's namespace, or the host's), and its log is linked where the kubelet reads it.
    /// It runs to its end even when the caller goes: a container half made is undone.
    pub async fn create_container(&self, ns: &str, pod_id: &str, spec: PodContainerSpec) -> Result<String, Error> {
        let (svc, ns, pod_id) = (self.clone(), ns.to_owned(), pod_id.to_owned());
        tokio::spawn(async move { svc.create_whole(&ns, &pod_id, spec).await })
            .await
            .map_err(|e| Error::Internal(format!("the container's creation failed: {e}")))?
    }

    async fn create_whole(&self, ns: &str, pod_id: &str, spec: PodContainerSpec) -> Result<String, Error> {
        if spec.name.is_empty() {
            return Err(Error::InvalidArgument("a container needs a name (ContainerMetadata.name)".into()));
        }
        check_labels(&spec.labels)?;
        let pod = self.get(ns, pod_id).await?.ok_or_else(|| Error::NotFound(format!("pod sandbox {pod_id} not found")))?;
        if !pod.ready {
            return Err(Error::FailedPrecondition(format!("pod sandbox {} is not ready", pod.id)));
        }
        let image = self
            .images
            .group(ns, &spec.image)
            .await?
            .ok_or_else(|| Error::NotFound(format!("image {} not found: pull it first", spec.image)))?;
        if spec.mounts.iter().any(|m| m.options.iter().any(|o| o == "rro")) && !self.recursive_read_only().await {
            return Err(Error::InvalidArgument("the runtime cannot make recursive read-only mounts".into()));
        }
        let seccomp = spec.seccomp.config().await?;
        let log_path = cri_log_path(&pod.log_directory, &spec.log_path)?.map(|l| l.display().to_string()).unwrap_or_default();
        let mut labels = spec.labels.clone();
        labels.insert(LABEL_KIND.into(), "container".into());
        labels.insert(LABEL_SANDBOX.into(), pod.id.clone());
        labels.insert(LABEL_CONTAINER_NAME.into(), spec.name.clone());
        labels.insert(LABEL_CONTAINER_ATTEMPT.into(), spec.attempt.to_string());
        let config = ContainerConfig {
            entrypoint: (!spec.command.is_empty()).then(|| spec.command.clone()),
            command: (!spec.args.is_empty()).then(|| spec.args.clone()),
            env: spec.env.clone(),
            workdir: (!spec.workdir.is_empty()).then(|| spec.workdir.clone()),
            user: spec.user.clone(),
            // The pod's hostname (its UTS name is not shared: each container sets the same).
            hostname: (!pod.host_network && !pod.hostname.is_empty()).then(|| pod.hostname.clone()),
            network: if pod.host_network { NetworkMode::Host } else { NetworkMode::Container(pod.id.clone()) },
            read_only: spec.read_only,
            privileged: spec.privileged,
            cap_add: spec.cap_add.clone(),
            cap_drop: spec.cap_drop.clone(),
            no_new_privileges: spec.no_new_privileges.then_some(true),
            resources: spec.resources.clone(),
            tty: spec.tty,
            stdin: spec.stdin,
            stdin_once: spec.stdin && spec.stdin_once,
            // IPC is the pod's (or the host's); the process namespace as the container asks.
            ipc_host: pod.host_ipc,
            ipc_container: (!pod.host_ipc).then(|| pod.id.clone()),
            pid_host: spec.pid == PidMode::Node,
            pid_container: match &spec.pid {
                PidMode::Pod if !pod.host_pid => Some(pod.id.clone()),
                PidMode::Target(t) => Some(t.clone()),
                _ => None,
            },
            cgroup_parent: pod.cgroup_parent.clone(),
            group_add: spec.groups.iter().map(|g| g.to_string()).collect(),
            groups_strict: spec.groups_strict,
            devices: spec.devices.clone(),
            seccomp,
            apparmor: spec.apparmor.clone(),
            // The kubelet's lists replace docker's; an empty one keeps docker's (as
            // containerd does: a client that names none gets no weaker container). A
            // privileged container has neither.
            masked_paths: (!spec.masked_paths.is_empty()).then(|| spec.masked_paths.clone()),
            readonly_paths: (!spec.readonly_paths.is_empty()).then(|| spec.readonly_paths.clone()),
            mounts: spec.mounts.clone(),
            // The pod's /dev/shm (the host's for a pod in the host's IPC namespace); a pod
            // made before pods had one leaves each container its own.
            shm_source: {
                let shm = if pod.host_ipc { PathBuf::from("/dev/shm") } else { self.shm_dir(&pod.id) };
                (pod.host_ipc || is_tmpfs(&shm)).then(|| shm.display().to_string())
            },
            // The shim writes the log where the kubelet reads and rotates it.
            log_path: (!log_path.is_empty()).then(|| log_path.clone()),
            ..Default::default()
        };
        let m = &pod.meta;
        let name = cri_name(&[&spec.name, &m.name, &m.namespace, &m.uid], spec.attempt);
        let new = NewContainer { image: image.id.to_string(), name, config, labels, runtime: String::new() };
        let view = self.containers.create(ns, new).await?;
        let id = view.record.id.clone();
        let extra = ContainerRecordExtra { annotations: spec.annotations.clone(), log_path: log_path.clone(), image: spec.image.clone() };
        if let Err(e) = self.write_record("containers", &id, &extra) {
            let _ = self.containers.remove(ns, &id, true, true).await;
            self.remove_record("containers", &id);
            return Err(e);
        }
        Ok(id)
    }

    pub async fn start_container(&self, ns: &str, id: &str) -> Result<(), Error> {
        let c = self.container(ns, id).await?.ok_or_else(|| Error::NotFound(format!("container {id} not found")))?;
        self.tasks.start(ns, &c.id, &Proc::Init).await.map(|_| ())
    }

    /// A pod's container and its resource use (None when it is not running).
    pub async fn container_stats(&self, ns: &str, id: &str) -> Result<(PodContainerView, Option<super::tasks::Stats>), Error> {
        let c = self.container(ns, id).await?.ok_or_else(|| Error::NotFound(format!("container {id} not found")))?;
        let stats = self.stats_of(ns, &c.id).await?;
        Ok((c, stats))
    }

    /// The resource use of the pods' running containers, as `filter` asks.
    pub async fn containers_stats(
        &self,
        ns: &str,
        filter: &PodContainerFilter,
    ) -> Result<Vec<(PodContainerView, super::tasks::Stats)>, Error> {
        let mut out = Vec::new();
        for c in self.containers(ns, filter).await? {
            if let Some(stats) = self.stats_of(ns, &c.id).await? {
                out.push((c, stats));
            }
        }
        Ok(out)
    }

    /// A pod's resource use: its own (the pause process's cgroup with its containers'
    /// added), its containers', and how many processes run in it.
    pub async fn pod_stats(&self, ns: &str, id: &str) -> Result<PodStats, Error> {
        let pod = self.get(ns, id).await?.ok_or_else(|| Error::NotFound(format!("pod sandbox {id} not found")))?;
        let containers = self.containers_stats(ns, &PodContainerFilter { pod_id: pod.id.clone(), ..Default::default() }).await?;
        let own = self.stats_of(ns, &pod.id).await?;
        let mut total = own.clone().map(|s| s.stats).unwrap_or_default();
        for (_, s) in &containers {
            total.cpu_usage_ns += s.stats.cpu_usage_ns;
            total.memory_usage_bytes += s.stats.memory_usage_bytes;
            total.pids_current += s.stats.pids_current;
        }
        let read_at = own.map(|s| s.read_at).unwrap_or_else(std::time::SystemTime::now);
        Ok(PodStats { pod, total: super::tasks::Stats { stats: total, read_at }, containers })
    }

    /// The pods, with their resource use, as `filter` asks (ready ones only).
    pub async fn pods_stats(&self, ns: &str, filter: &PodFilter) -> Result<Vec<PodStats>, Error> {
        let mut out = Vec::new();
        for pod in self.list(ns, filter).await?.into_iter().filter(|p| p.ready) {
            match self.pod_stats(ns, &pod.id).await {
                Ok(s) => out.push(s),
                // Gone meanwhile.
                Err(e) if is_gone(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// A running container's resource use; None when it does not run (any more).
    async fn stats_of(&self, ns: &str, id: &str) -> Result<Option<super::tasks::Stats>, Error> {
        match self.tasks.stats(ns, id).await {
            Ok(s) => Ok(Some(s)),
            Err(e) if is_gone(&e) || is_not_running(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Run `cmd` in a pod's running container to its end (killed when `timeout` runs out):
    /// what it printed and its exit code.
    pub async fn exec_sync(
        &self,
        ns: &str,
        id: &str,
        cmd: Vec<String>,
        timeout: Option<Duration>,
    ) -> Result<super::tasks::ExecOutput, Error> {
        let c = self.container(ns, id).await?.ok_or_else(|| Error::NotFound(format!("container {id} not found")))?;
        if c.state != TaskState::Running {
            return Err(Error::FailedPrecondition(format!("container {id} is not running")));
        }
        self.tasks.exec_output(ns, &c.id, cmd, timeout).await
    }

    /// A connection to `port` on a running pod's loopback, made from inside its network
    /// namespace (the host's for a pod on the host's network): what port-forwarding carries.
    pub async fn connect_port(&self, ns: &str, pod: &str, port: u16) -> Result<tokio::net::TcpStream, Error> {
        let v = self.find(ns, pod).await?.ok_or_else(|| Error::NotFound(format!("pod sandbox {pod} not found")))?;
        let netns = if v.record.config.network == NetworkMode::Host {
            None
        } else {
            let att = self.core.networks.attachment(ns, &v.record.id);
            Some(
                att.map(|a| a.netns.clone())
                    .ok_or_else(|| Error::FailedPrecondition(format!("pod sandbox {pod} has no network namespace")))?,
            )
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        // setns(2) changes the calling thread only: a thread of its own, which ends after.
        std::thread::Builder::new()
            .name("berth-portfwd".into())
            .spawn(move || {
                let _ = tx.send(connect_loopback(netns.as_deref(), port));
            })
            .map_err(|e| Error::Internal(format!("starting a thread: {e}")))?;
        let stream = rx
            .await
            .map_err(|_| Error::Internal("the connecting thread ended".into()))?
            .map_err(|e| Error::FailedPrecondition(format!("connecting to port {port} of pod sandbox {pod}: {e}")))?;
        stream.set_nonblocking(true).map_err(|e| Error::Internal(e.to_string()))?;
        tokio::net::TcpStream::from_std(stream).map_err(|e| Error::Internal(e.to_string()))
    }

    /// The changes of the pods and their containers from now on, until the receiver is
    /// dropped (for a receiver that falls behind and would miss some, the stream ends).
    pub fn events(&self, ns: &str) -> mpsc::Receiver<PodEvent> {
        let (tx, rx) = mpsc::channel(256);
        let mut sub = self.core.events.subscribe();
        let (svc, ns) = (self.clone(), ns.to_owned());
        tokio::spawn(async move {
            // The pod of each container seen: a deleted one's is known no more.
            let mut pod_of: std::collections::HashMap<String, String> = std::collections::HashMap::new();
            loop {
                let e = tokio::select! {
                    e = sub.recv() => match e {
                        Ok(e) => e,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            // Events lost: the stream ends, so the subscriber knows to list
                            // again (the kubelet then relists and subscribes anew).
                            tracing::warn!(lost = n, "a CRI events subscriber fell behind: its stream ends");
                            return;
                        }
                        Err(_) => return,
                    },
                    () = tx.closed() => return,
                };
                let kind = match e.topic {
                    _ if e.namespace != ns => continue,
                    "/containers/create" => PodEventKind::Created,
                    "/tasks/start" => PodEventKind::Started,
                    "/tasks/exit" if e.attributes.get("exec_id").is_none_or(|x| x.is_empty()) => PodEventKind::Stopped,
                    "/containers/delete" => PodEventKind::Deleted,
                    _ => continue,
                };
                let pod_id = match svc.find(&ns, &e.id).await {
                    Ok(Some(v)) => match v.record.labels.get(LABEL_KIND).map(String::as_str) {
                        Some("sandbox") => Some(v.record.id.clone()),
                        Some("container") => v.record.labels.get(LABEL_SANDBOX).cloned(),
                        _ => continue,
                    },
                    _ => pod_of.get(&e.id).cloned(),
                };
                let Some(pod_id) = pod_id else { continue };
                if kind == PodEventKind::Deleted {
                    pod_of.remove(&e.id);
                } else {
                    pod_of.insert(e.id.clone(), pod_id.clone());
                }
                let pod = svc.get(&ns, &pod_id).await.ok().flatten();
                let filter = PodContainerFilter { pod_id: pod_id.clone(), ..Default::default() };
                let containers = svc.containers(&ns, &filter).await.unwrap_or_default();
                let event = PodEvent { id: e.id.clone(), kind, at: e.timestamp, pod, containers };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        });
        rx
    }

    /// Change a pod's container's memory and CPU limits (the kubelet's in-place resize).
    pub async fn update_resources(&self, ns: &str, id: &str, resources: crate::metadata::container_config::Resources) -> Result<(), Error> {
        let c = self.container(ns, id).await?.ok_or_else(|| Error::NotFound(format!("container {id} not found")))?;
        self.containers.update_resources(ns, &c.id, resources).await
    }

    /// Open a running container's log again at its path (the kubelet rotated it).
    pub async fn reopen_log(&self, ns: &str, id: &str) -> Result<(), Error> {
        let c = self.container(ns, id).await?.ok_or_else(|| Error::NotFound(format!("container {id} not found")))?;
        self.tasks.reopen_log(ns, &c.id).await
    }

    /// Stop a pod's container (its stop signal, then SIGKILL after `timeout`). One that is
    /// not there, or not running, is stopped.
    pub async fn stop_container(&self, ns: &str, id: &str, timeout: Duration) -> Result<(), Error> {
        let Some(c) = self.container(ns, id).await? else { return Ok(()) };
        self.stop_quietly(ns, &c.id, timeout).await
    }

    /// Remove a pod's container (killed first); one that is not there is removed.
    pub async fn remove_container(&self, ns: &str, id: &str) -> Result<(), Error> {
        let Some(c) = self.container(ns, id).await? else { return Ok(()) };
        // Its log stays: the kubelet removes it with what it keeps of the container.
        self.remove_quietly(ns, &c.id).await?;
        self.remove_record("containers", &c.id);
        Ok(())
    }

    /// A pod's container by id (a unique prefix will do), or None.
    pub async fn container(&self, ns: &str, id: &str) -> Result<Option<PodContainerView>, Error> {
        Ok(self.find(ns, id).await?.and_then(|v| self.container_view(&v)))
    }

    /// Who a pod's container's first process is: uid, gid and its groups as the kubelet
    /// reads them (the primary one among the others, sorted), from its runtime spec (read
    /// apart: lists do not carry it).
    pub async fn container_user(&self, ns: &str, id: &str) -> Result<(u32, u32, Vec<u32>), Error> {
        let (core, ns, id) = (self.core.clone(), ns.to_owned(), id.to_owned());
        super::blocking(move || {
            let spec = core.containers.spec(&ns, &id)?;
            let user = spec.process().as_ref().map(|p| p.user().clone()).unwrap_or_default();
            let mut groups: Vec<u32> = user.additional_gids().clone().unwrap_or_default();
            groups.push(user.gid());
            groups.sort_unstable();
            groups.dedup();
            Ok((user.uid(), user.gid(), groups))
        })
        .await
    }

    /// The pods' containers, as `filter` asks.
    pub async fn containers(&self, ns: &str, filter: &PodContainerFilter) -> Result<Vec<PodContainerView>, Error> {
        let mut filters = vec![format!("label.{LABEL_KIND}==container")];
        if !filter.pod_id.is_empty() {
            filters.push(format!("label.{LABEL_SANDBOX}=={}", filter.pod_id));
        }
        let all = self.containers.list(ns, &filters).await?;
        Ok(all
            .iter()
            .filter_map(|v| self.container_view(v))
            .filter(|c| filter.id.is_empty() || c.id.starts_with(&filter.id))
            .filter(|c| filter.state.is_none_or(|s| s == c.state))
            .filter(|c| filter.labels.iter().all(|(k, v)| c.labels.get(k) == Some(v)))
            .collect())
    }

    fn container_view(&self, v: &ContainerView) -> Option<PodContainerView> {
        let labels = &v.record.labels;
        if labels.get(LABEL_KIND).map(String::as_str) != Some("container") {
            return None;
        }
        let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
        let extra: ContainerRecordExtra = self.read_record("containers", &v.record.id);
        let state = match v.status.state {
            TaskState::Created => TaskState::Created,
            TaskState::Running | TaskState::Paused => TaskState::Running,
            TaskState::Exited | TaskState::Restarting => TaskState::Exited,
            TaskState::Unknown => TaskState::Unknown,
        };
        Some(PodContainerView {
            id: v.record.id.clone(),
            pod_id: get(LABEL_SANDBOX),
            name: get(LABEL_CONTAINER_NAME),
            attempt: get(LABEL_CONTAINER_ATTEMPT).parse().unwrap_or(0),
            image: extra.image,
            image_id: v.record.config_digest.to_string(),
            state,
            created: v.record.created,
            started: v.status.started_at,
            finished: v.status.finished_at,
            exit_code: v.status.exit_code,
            oom_killed: v.status.oom_killed,
            labels: caller_labels(labels),
            annotations: extra.annotations,
            log_path: extra.log_path,
            mounts: v.record.config.mounts.clone(),
            stdin_once: v.record.config.stdin_once,
        })
    }

    /// At the agent's start: the records (and log links) and /dev/shm of pods and containers
    /// that are gone (removed with `berthctl rm`, or by a crash between two steps).
    pub(crate) async fn sweep(&self, ns: &str) {
        let listed_at = std::time::SystemTime::now();
        let live: std::collections::HashSet<String> = match self.containers.list(ns, &[]).await {
            Ok(all) => all.into_iter().map(|v| v.record.id.clone()).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "listing containers to sweep the CRI's records");
                return;
            }
        };
        for kind in ["pods", "containers"] {
            let Ok(entries) = std::fs::read_dir(self.records(kind)) else { continue };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(id) = name.strip_suffix(".json") else {
                    // A record never renamed into place.
                    let _ = std::fs::remove_file(e.path());
                    continue;
                };
                if live.contains(id) {
                    continue;
                }
                self.remove_record(kind, id);
            }
        }
        // The /dev/shm of pods that are gone (not of one made since the list above).
        let Ok(entries) = std::fs::read_dir(self.core.config.state.join("pods")) else { return };
        for e in entries.flatten() {
            let newer = e.metadata().and_then(|m| m.modified()).is_ok_and(|t| t >= listed_at);
            if !newer && !live.contains(e.file_name().to_string_lossy().as_ref()) {
                unmount_shm(&e.path().join("shm"));
            }
        }
    }

    /// Import the pause image into `ns` unless it is there.
    async fn ensure_pause_image(&self, ns: &str) -> Result<(), Error> {
        let name = pause_image();
        if self.images.get(ns, &name).await.is_ok() {
            return Ok(());
        }
        let archive = pause_archive().map_err(|e| Error::Internal(format!("making the pause image: {e}")))?;
        let opts = ImportOptions { name: Some(name), ..Default::default() };
        let mut rx = self.images.import(ns, std::io::Cursor::new(archive), opts)?;
        loop {
            match rx.recv().await {
                Some(Update::Progress(_)) => {}
                Some(Update::Done(r)) => return r.map(|_| ()),
                None => return Err(Error::Internal("the pause image's import stopped without a result".into())),
            }
        }
    }
}

/// The container is not there (any more).
/// Connect to `port` on the loopback of the network namespace at `netns` (None: this one),
/// IPv4 first, then IPv6; each try bounded.
fn connect_loopback(netns: Option<&std::path::Path>, port: u16) -> std::io::Result<std::net::TcpStream> {
    if let Some(path) = netns {
        let f = std::fs::File::open(path)?;
        rustix::thread::move_into_link_name_space(std::os::fd::AsFd::as_fd(&f), Some(rustix::thread::LinkNameSpaceType::Network))?;
    }
    let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    std::net::TcpStream::connect_timeout(&v4, Duration::from_secs(10))
        .or_else(|e| std::net::TcpStream::connect_timeout(&v6, Duration::from_secs(10)).map_err(|_| e))
}

/// Make a pod's /dev/shm at `dir`: a tmpfs of 64 MiB (docker's and containerd's size), in
/// directories only root enters (the tmpfs itself is open to the pod's users, 1777).
fn mount_shm(dir: &std::path::Path) -> std::io::Result<()> {
    use rustix::mount::{mount, MountFlags};
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    for d in [dir.parent(), dir.parent().and_then(|p| p.parent())].into_iter().flatten() {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))?;
    }
    let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    mount("shm", dir, "tmpfs", flags, Some(c"mode=1777,size=65536k")).map_err(std::io::Error::from)
}

/// Whether `dir` is a tmpfs (a pod's /dev/shm still mounted; after a reboot, with the
/// state on disk, a plain directory is left).
fn is_tmpfs(dir: &std::path::Path) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    rustix::fs::statfs(dir).is_ok_and(|s| s.f_type == TMPFS_MAGIC)
}

/// Undo [`mount_shm`] (what is there of it) and remove the pod's directory. Detached: a
/// container still holding it keeps its own mount of it.
fn unmount_shm(dir: &std::path::Path) {
    use rustix::mount::{unmount, UnmountFlags};
    // Not mounted (never, or already undone): nothing to say.
    let _ = unmount(dir, UnmountFlags::DETACH);
    if let Some(pod_dir) = dir.parent() {
        if let Err(e) = std::fs::remove_dir_all(pod_dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %pod_dir.display(), error = %e, "removing a pod's directory");
            }
        }
    }
}

fn is_gone(e: &Error) -> bool {
    use crate::runtime::TaskError;
    matches!(e, Error::NotFound(_) | Error::Container(crate::container::ContainerError::NotFound(_)) | Error::Task(TaskError::NotFound(_)))
}

/// The container has no running task.
fn is_not_running(e: &Error) -> bool {
    use crate::runtime::TaskError;
    matches!(e, Error::FailedPrecondition(_) | Error::Task(TaskError::NoTask(_) | TaskError::FailedPrecondition(_)))
}

/// The container name of a CRI object: `k8s_PART_..._ATTEMPT`, each part cleaned to what
/// names allow (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`) and shortened so that the name stays within
/// 128 characters with its attempt always whole (a pod's next attempt is another name).
/// A part cut short ends with a hash of the whole part: two long names that differ only
/// past the cut stay two names.
fn cri_name(parts: &[&str], attempt: u32) -> String {
    let tail = format!("_{attempt}");
    let per_part = (128 - "k8s".len() - tail.len()) / parts.len().max(1) - 1;
    let mut name = String::from("k8s");
    for part in parts {
        name.push('_');
        let clean: String = part.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '-' }).collect();
        if clean.len() <= per_part {
            name.push_str(&clean);
        } else {
            let hash = hex::encode(&Sha256::digest(part.as_bytes())[..4]);
            name.push_str(&clean[..per_part - hash.len() - 1]);
            name.push('-');
            name.push_str(&hash);
        }
    }
    name + &tail
}

/// The agent's own labels are not the caller's to set.
fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), Error> {
    match labels.keys().find(|k| INTERNAL_LABELS.contains(&k.as_str())) {
        Some(k) => Err(Error::InvalidArgument(format!("label {k} is the agent's own"))),
        None => Ok(()),
    }
}

/// The caller's labels of a container: its own, without the agent's.
fn caller_labels(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels.iter().filter(|(k, _)| !INTERNAL_LABELS.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Where a kubelet reads a container's log: an absolute log directory and a relative path
/// below it (normal components only), or nothing when either is missing.
fn cri_log_path(directory: &str, path: &str) -> Result<Option<PathBuf>, Error> {
    if directory.is_empty() || path.is_empty() {
        return Ok(None);
    }
    let rel = std::path::Path::new(path);
    let normal = rel.components().all(|c| matches!(c, std::path::Component::Normal(_)));
    if !std::path::Path::new(directory).is_absolute() || !normal {
        return Err(Error::InvalidArgument(format!(
            "log path {path:?} in {directory:?}: an absolute log directory and a relative path below it are required"
        )));
    }
    Ok(Some(std::path::Path::new(directory).join(rel)))
}

/// The pause image as an OCI layout archive: one layer holding `/pause` (the berth-init
/// binary the agent carries), run as `/pause --pause`.
fn pause_archive() -> std::io::Result<Vec<u8>> {
    let sha = |b: &[u8]| format!("sha256:{}", hex::encode(Sha256::digest(b)));
    let mut layer = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(crate::container::init::BINARY.len() as u64);
    h.set_entry_type(tar::EntryType::Regular);
    layer.append_data(&mut h, "pause", crate::container::init::BINARY)?;
    let layer = layer.into_inner()?;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Entrypoint": ["/pause"], "Cmd": ["--pause"]},
        "rootfs": {"type": "layers", "diff_ids": [sha(&layer)]},
    }))?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(&layer), "size": layer.len()}],
    }))?;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(&manifest), "size": manifest.len()}],
    }))?;
    let mut out = tar::Builder::new(Vec::new());
    let mut add = |path: String, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        h.set_entry_type(tar::EntryType::Regular);
        out.append_data(&mut h, path, data)
    };
    add("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json".into(), &index)?;
    for blob in [&layer, &config, &manifest] {
        add(format!("blobs/sha256/{}", &sha(blob)["sha256:".len()..]), blob)?;
    }
    out.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_their_attempt_and_stay_valid() {
        let long = "a".repeat(200);
        let first = cri_name(&["POD", &long, "default", "uid-1"], 0);
        let second = cri_name(&["POD", &long, "default", "uid-1"], 1);
        assert!(first.len() <= 128 && second.len() <= 128, "{first}");
        assert_ne!(first, second);
        assert!(first.ends_with("_0") && second.ends_with("_1"));
        assert_eq!(cri_name(&["web", "my pod/x", "ns", "u"], 3), "k8s_web_my-pod-x_ns_u_3");
        // Long parts that differ only past the cut give two names.
        let (a, b) = (format!("{}-one", "sidecar".repeat(10)), format!("{}-two", "sidecar".repeat(10)));
        let (na, nb) = (cri_name(&[&a, "pod", "ns", "u"], 0), cri_name(&[&b, "pod", "ns", "u"], 0));
        assert_ne!(na, nb);
        assert!(na.len() <= 128 && nb.len() <= 128, "{na}");
    }

    #[test]
    fn log_paths_stay_below_their_directory() {
        assert_eq!(cri_log_path("/var/log/pods/x", "web/0.log").unwrap(), Some(PathBuf::from("/var/log/pods/x/web/0.log")));
        assert_eq!(cri_log_path("", "web/0.log").unwrap(), None);
        for (dir, path) in [("/var/log/pods/x", "../../etc/shadow"), ("/var/log/pods/x", "/etc/shadow"), ("relative", "0.log")] {
            assert!(cri_log_path(dir, path).is_err(), "{dir} {path}");
        }
    }
}
