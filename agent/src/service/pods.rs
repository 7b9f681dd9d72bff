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

use super::containers::{ContainerService, ContainerView, NewContainer};
use super::images::ImageService;
use super::tasks::TaskService;
use super::{Core, Error, Update};
use crate::image::import::ImportOptions;
use crate::metadata::container_config::{ContainerConfig, NetworkMode};
use crate::network::PortSpec;
use crate::runtime::{Proc, TaskState};

/// Label of a pod's container: `sandbox`.
pub const LABEL_KIND: &str = "io.berth.cri.kind";
/// Labels of a pod's container: its CRI metadata.
pub const LABEL_NAME: &str = "io.berth.cri.pod.name";
pub const LABEL_NAMESPACE: &str = "io.berth.cri.pod.namespace";
pub const LABEL_UID: &str = "io.berth.cri.pod.uid";
pub const LABEL_ATTEMPT: &str = "io.berth.cri.pod.attempt";
/// Label of a container that belongs to a pod: the pod's id.
pub const LABEL_SANDBOX: &str = "io.berth.cri.sandbox-id";
const INTERNAL_LABELS: [&str; 6] = [LABEL_KIND, LABEL_NAME, LABEL_NAMESPACE, LABEL_UID, LABEL_ATTEMPT, LABEL_SANDBOX];

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

    fn records(&self) -> PathBuf {
        self.core.config.root.join("cri").join("pods")
    }

    /// Make and start a pod; its id.
    pub async fn run(&self, ns: &str, spec: PodSpec) -> Result<String, Error> {
        let m = &spec.meta;
        if m.name.is_empty() || m.namespace.is_empty() || m.uid.is_empty() {
            return Err(Error::InvalidArgument("a pod needs a name, a namespace and a uid (PodSandboxMetadata)".into()));
        }
        if let Some(k) = spec.labels.keys().find(|k| INTERNAL_LABELS.contains(&k.as_str())) {
            return Err(Error::InvalidArgument(format!("label {k} is the agent's own")));
        }
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
            ..Default::default()
        };
        let new = NewContainer { image: pause_image(), name: pod_name(m), config, labels, runtime: String::new() };
        let view = self.containers.create(ns, new).await?;
        let id = view.record.id.clone();
        let record = PodRecord {
            annotations: spec.annotations.clone(),
            log_directory: spec.log_directory.clone(),
            runtime_handler: spec.runtime_handler.clone(),
        };
        let started = match self.write_record(&id, &record) {
            Ok(()) => self.tasks.start(ns, &id, &Proc::Init).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = started {
            let _ = self.containers.remove(ns, &id, true, true).await;
            self.remove_record(&id);
            return Err(e);
        }
        Ok(id)
    }

    /// The pod `id` (a unique prefix will do), or None.
    pub async fn get(&self, ns: &str, id: &str) -> Result<Option<PodView>, Error> {
        let view = match self.containers.get(ns, id).await {
            Ok(v) => v,
            Err(Error::Container(crate::container::ContainerError::NotFound(_))) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(self.view(&view))
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
        let Some(pod) = self.get(ns, id).await? else { return Ok(()) };
        for c in self.members(ns, &pod.id).await? {
            self.stop_quietly(ns, &c.record.id).await?;
        }
        self.stop_quietly(ns, &pod.id).await
    }

    /// Remove the pod's containers and the pod. A pod that is not there is removed.
    pub async fn remove(&self, ns: &str, id: &str) -> Result<(), Error> {
        let Some(pod) = self.get(ns, id).await? else { return Ok(()) };
        for c in self.members(ns, &pod.id).await? {
            self.remove_quietly(ns, &c.record.id).await?;
        }
        self.remove_quietly(ns, &pod.id).await?;
        self.remove_record(&pod.id);
        Ok(())
    }

    /// The containers that belong to pod `id`.
    async fn members(&self, ns: &str, id: &str) -> Result<Vec<ContainerView>, Error> {
        self.containers.list(ns, &[format!("label.{LABEL_SANDBOX}=={id}")]).await
    }

    async fn stop_quietly(&self, ns: &str, id: &str) -> Result<(), Error> {
        match self.tasks.stop(ns, id, Some(STOP_TIMEOUT)).await {
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
        let record = self.read_record(&v.record.id);
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
            labels: labels.iter().filter(|(k, _)| !INTERNAL_LABELS.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect(),
            annotations: record.annotations,
            log_directory: record.log_directory,
            runtime_handler: record.runtime_handler,
        })
    }

    fn write_record(&self, id: &str, record: &PodRecord) -> Result<(), Error> {
        let dir = self.records();
        let err = |e: std::io::Error| Error::Internal(format!("writing the pod's record in {}: {e}", dir.display()));
        std::fs::create_dir_all(&dir).map_err(err)?;
        let tmp = dir.join(format!(".{id}.tmp"));
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&serde_json::to_vec(record).map_err(|e| Error::Internal(e.to_string()))?).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, dir.join(format!("{id}.json"))).map_err(err)
    }

    fn read_record(&self, id: &str) -> PodRecord {
        std::fs::read(self.records().join(format!("{id}.json"))).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    fn remove_record(&self, id: &str) {
        let _ = std::fs::remove_file(self.records().join(format!("{id}.json")));
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
fn is_gone(e: &Error) -> bool {
    use crate::runtime::TaskError;
    matches!(e, Error::NotFound(_) | Error::Container(crate::container::ContainerError::NotFound(_)) | Error::Task(TaskError::NotFound(_)))
}

/// The container has no running task.
fn is_not_running(e: &Error) -> bool {
    use crate::runtime::TaskError;
    matches!(e, Error::FailedPrecondition(_) | Error::Task(TaskError::NoTask(_) | TaskError::FailedPrecondition(_)))
}

/// The container name of a pod: its metadata, as names allow (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`).
fn pod_name(m: &PodMeta) -> String {
    let clean =
        |s: &str| s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '-' }).collect::<String>();
    let name = format!("k8s_POD_{}_{}_{}_{}", clean(&m.name), clean(&m.namespace), clean(&m.uid), m.attempt);
    name.chars().take(128).collect()
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
