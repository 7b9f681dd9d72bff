//! Containers: create, inspect, list, label, remove, logs, diff, commit.
//! Removal is one use case whether a user asks for it or a `--rm`
//! container's task ended: the same checks, the same event.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth_shim::log::{LogReader, ReadOptions, Stream};
use tokio::sync::mpsc;

use super::Core;
use super::{blocking, validate_labels, Error, Filter};
use crate::container::config::ContainerConfig;
use crate::container::diff::Change;
use crate::container::{Committed, ContainerError, CreateRequest};
use crate::metadata::{ContainerRecord, MetadataError};
use crate::runtime::{Status, TaskState};

/// How often `logs --follow` looks for new lines.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(50);

const FILTER_KEYS: &str = "name, id, image, status or label.KEY";

/// A container and the state of its task.
#[derive(Debug, Clone)]
pub struct ContainerView {
    pub record: Arc<ContainerRecord>,
    pub status: Status,
    /// Its networks and published ports, while its task exists.
    pub network: Option<Arc<crate::network::Attachment>>,
    /// Its runtime spec, as JSON: read for one container (`get`), not for a list.
    pub spec: Option<Vec<u8>>,
    /// Its health check's state, when it has one and has run.
    pub health: Option<super::health::HealthState>,
    /// Its log file (the CRI format): read for one container (`get`).
    pub log_path: Option<std::path::PathBuf>,
}

/// What to create.
#[derive(Debug, Clone, Default)]
pub struct NewContainer {
    pub image: String,
    /// Empty: a name is made from the image's.
    pub name: String,
    pub config: ContainerConfig,
    pub labels: BTreeMap<String, String>,
    /// Empty: the agent's default runtime.
    pub runtime: String,
}

/// Which log records to read.
#[derive(Debug, Clone, Default)]
pub struct LogsQuery {
    pub tail: Option<usize>,
    /// (seconds, nanoseconds) since the Unix epoch.
    pub since: Option<(i64, u32)>,
    pub until: Option<(i64, u32)>,
    /// Neither: both.
    pub stdout: bool,
    pub stderr: bool,
    /// Keep reading until the container's task ends.
    pub follow: bool,
}

/// One piece of a container's output.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub stream: Stream,
    /// Nanoseconds since the Unix epoch.
    pub time: i64,
    /// The bytes, with the line's end when the line is whole.
    pub data: Vec<u8>,
}

/// What a commit asks for.
#[derive(Debug, Clone, Default)]
pub struct CommitRequest {
    pub reference: String,
    pub message: String,
    pub author: String,
    /// Do not freeze a running container while its layer is read.
    pub no_pause: bool,
    /// Dockerfile instructions for the new image's config (`--change`).
    pub changes: Vec<String>,
}

#[derive(Clone)]
pub struct ContainerService {
    pub(super) core: Arc<Core>,
}

impl ContainerService {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        ContainerService { core }
    }

    /// A container by name, full id or unique id prefix.
    pub async fn find(&self, ns: &str, id: &str) -> Result<ContainerRecord, Error> {
        find(&self.core, ns, id).await
    }

    pub async fn create(&self, ns: &str, new: NewContainer) -> Result<ContainerView, Error> {
        if new.image.is_empty() {
            return Err(Error::InvalidArgument("an image is required".into()));
        }
        validate_labels(&new.labels)?;
        let runtime = if new.runtime.is_empty() { self.core.tasks.config().default_runtime.clone() } else { new.runtime };
        self.core.tasks.check_runtime(&runtime)?;
        let mut config = new.config;
        check_restart(&config)?;
        self.check_network(ns, &mut config).await?;
        let req = CreateRequest { image: new.image, name: new.name, config, labels: new.labels, runtime };
        let (core, ns2) = (self.core.clone(), ns.to_owned());
        let rec = blocking(move || Ok(core.containers.create(&ns2, req)?)).await?;
        self.core.events.publish(ns, "/containers/create", &rec.id, &[("name", rec.name.clone()), ("image", rec.image.clone())]);
        let status = Status { state: TaskState::Created, ..Default::default() };
        Ok(ContainerView { record: Arc::new(rec), status, network: None, spec: None, health: None, log_path: None })
    }

    /// The network a new container asks for: `container:NAME` made an id,
    /// networks and plugins there, addresses and names well formed.
    async fn check_network(&self, ns: &str, config: &mut ContainerConfig) -> Result<(), Error> {
        use crate::container::config::NetworkMode;
        // The process and IPC namespaces another container lends: named by id from now on.
        for target in [&mut config.pid_container, &mut config.ipc_container].into_iter().flatten() {
            *target = find(&self.core, ns, target).await?.id;
        }
        match &config.network {
            NetworkMode::Container(target) => {
                let t = find(&self.core, ns, target).await?;
                // Its /etc/hosts and /etc/hostname are shared: so is its name, as docker does.
                if config.hostname.is_none() {
                    let (core, ns2, id) = (self.core.clone(), ns.to_owned(), t.id.clone());
                    config.hostname = blocking(move || Ok(core.containers.spec(&ns2, &id)?)).await?.hostname().clone();
                }
                config.network = NetworkMode::Container(t.id);
                if !config.ports.is_empty() {
                    return Err(Error::InvalidArgument("ports are published by the container whose network is shared".into()));
                }
            }
            NetworkMode::Networks => {
                let endpoints = if config.networks.is_empty() {
                    vec![crate::network::EndpointSpec { network: crate::network::DEFAULT_NETWORK.into(), ..Default::default() }]
                } else {
                    config.networks.clone()
                };
                for e in &endpoints {
                    crate::network::check_aliases(&e.aliases)?;
                }
                let (networks, ports) = (self.core.networks.clone(), config.ports.clone());
                blocking(move || Ok(networks.check(&endpoints, &ports)?)).await?;
                // Networks by name as the user wrote them, ids resolved.
                for e in config.networks.iter_mut() {
                    e.network = self.core.networks.get(&e.network)?.name;
                }
            }
            NetworkMode::None | NetworkMode::Host => {
                if !config.ports.is_empty() {
                    return Err(Error::InvalidArgument("ports are published on a network: not with --net none or host".into()));
                }
            }
        }
        for h in &config.extra_hosts {
            let ok = h.split_once(':').is_some_and(|(n, ip)| !n.is_empty() && ip.parse::<std::net::IpAddr>().is_ok());
            if !ok {
                return Err(Error::InvalidArgument(format!("extra host {h:?} is not NAME:IP")));
            }
        }
        for d in &config.dns {
            if d.parse::<std::net::IpAddr>().is_err() {
                return Err(Error::InvalidArgument(format!("--dns {d:?} is not an IP address")));
            }
        }
        Ok(())
    }

    pub async fn get(&self, ns: &str, id: &str) -> Result<ContainerView, Error> {
        let rec = self.find(ns, id).await?;
        let status = self.core.tasks.status(ns, &rec);
        let network = self.core.networks.attachment(ns, &rec.id);
        let (core, ns2, cid) = (self.core.clone(), ns.to_owned(), rec.id.clone());
        let spec = blocking(move || Ok(core.containers.spec_json(&ns2, &cid)?)).await?;
        let health = self.core.health.get(ns, &rec.id);
        let log_path = Some(self.core.containers.log_path(ns, &rec));
        Ok(ContainerView { record: Arc::new(rec), status, network, spec: Some(spec), health, log_path })
    }

    pub async fn list(&self, ns: &str, filters: &[String]) -> Result<Vec<ContainerView>, Error> {
        let filters =
            Filter::parse_all(filters, |k| matches!(k, "name" | "id" | "image" | "status") || k.starts_with("label."), FILTER_KEYS)?;
        // From memory: nothing to wait for.
        let recs = self.core.containers.list(ns)?;
        let statuses = self.core.tasks.statuses(ns, &recs);
        let keep = |rec: &ContainerRecord, status: &Status| {
            filters.iter().all(|f| match f.key.as_str() {
                "name" => f.matches(Some(&rec.name)),
                // An id matches by prefix, as everywhere else.
                "id" if !f.contains => f.value.as_ref().is_none_or(|v| rec.id.starts_with(v.as_str())),
                "id" => f.matches(Some(&rec.id)),
                "image" => f.matches(Some(&rec.image)),
                "status" => f.matches(Some(status.state.as_str())),
                _ => f.matches_label(&rec.labels).unwrap_or(false),
            })
        };
        let kept: Vec<(Arc<ContainerRecord>, Status)> = recs.into_iter().zip(statuses).filter(|(r, s)| keep(r, s)).collect();
        let networks = self.core.networks.attachments(ns, kept.iter().map(|(r, _)| r.id.as_str()));
        let healths = self.core.health.get_many(ns, kept.iter().map(|(r, _)| r.id.as_str()));
        Ok(kept
            .into_iter()
            .zip(networks.into_iter().zip(healths))
            .map(|((record, status), (network, health))| ContainerView { record, status, network, spec: None, health, log_path: None })
            .collect())
    }

    /// Change a container's memory and CPU limits to `resources`: at once if it runs (the
    /// runtime's update), and in its record and spec for its next runs. A change the
    /// runtime refuses changes nothing.
    pub async fn update_resources(&self, ns: &str, id: &str, resources: crate::metadata::container_config::Resources) -> Result<(), Error> {
        let rec = self.find(ns, id).await?;
        let limits = crate::container::spec::limits(&resources).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let json = serde_json::to_value(&limits).map_err(|e| Error::Internal(format!("encoding the limits: {e}")))?;
        if self.core.tasks.is_running(ns, &rec.id) {
            self.core.tasks.update_resources(ns, &rec, json).await?;
        }
        let (core, ns2, id) = (self.core.clone(), ns.to_owned(), rec.id.clone());
        blocking(move || {
            core.meta.update_container_and_spec(&ns2, &id, |r, spec| {
                r.config.resources = resources;
                if let Some(linux) = spec.linux_mut() {
                    // The device rules stay; the limits are the new ones.
                    let devices = linux.resources().as_ref().and_then(|r| r.devices().clone());
                    let mut l = limits;
                    l.set_devices(devices);
                    linux.set_resources(Some(l));
                }
            })?;
            Ok(())
        })
        .await?;
        self.core.events.publish(ns, "/containers/update", &rec.id, &[("resources", "changed".to_owned())]);
        Ok(())
    }

    /// Change what applies to the container's next runs: its restart policy.
    pub async fn update(
        &self,
        ns: &str,
        id: &str,
        restart: Option<crate::container::config::RestartPolicy>,
        name: Option<String>,
        auto_remove: Option<bool>,
    ) -> Result<ContainerView, Error> {
        let rec = self.find(ns, id).await?;
        let mut config = rec.config.clone();
        if let Some(r) = restart {
            config.restart = r;
        }
        if let Some(a) = auto_remove {
            config.auto_remove = a;
        }
        check_restart(&config)?;
        if let Some(n) = &name {
            crate::container::validate_name(n)?;
        }
        let old_name = rec.name.clone();
        let (core, ns2, id, new_name) = (self.core.clone(), ns.to_owned(), rec.id.clone(), name.clone());
        let rec = blocking(move || {
            let updated = core.meta.update_container(&ns2, &id, |r| {
                r.config.restart = config.restart;
                r.config.auto_remove = config.auto_remove;
                if let Some(n) = new_name {
                    r.name = n;
                }
            });
            match updated {
                Err(MetadataError::AlreadyExists { name, .. }) => Err(ContainerError::NameTaken(name).into()),
                other => Ok(other?),
            }
        })
        .await?;
        if name.is_some() {
            self.core.events.publish(ns, "/containers/rename", &rec.id, &[("name", rec.name.clone()), ("oldName", old_name)]);
        }
        self.core.events.publish(ns, "/containers/update", &rec.id, &[("restart", rec.config.restart.name().to_owned())]);
        let status = self.core.tasks.status(ns, &rec);
        // Handed over after its exit: nothing will report the exit again.
        if auto_remove == Some(true) && status.state == TaskState::Exited {
            remove(&self.core, ns, &rec, false).await?;
            super::volumes::VolumeService::remove_anonymous(&self.core, ns, &rec).await;
        }
        let network = self.core.networks.attachment(ns, &rec.id);
        let health = self.core.health.get(ns, &rec.id);
        Ok(ContainerView { record: Arc::new(rec), status, network, spec: None, health, log_path: None })
    }

    pub async fn update_labels(&self, ns: &str, id: &str, labels: BTreeMap<String, String>) -> Result<ContainerView, Error> {
        validate_labels(&labels)?;
        let rec = self.find(ns, id).await?;
        let (core, ns2, id) = (self.core.clone(), ns.to_owned(), rec.id.clone());
        let rec = blocking(move || Ok(core.containers.update_labels(&ns2, &id, labels)?)).await?;
        self.core.events.publish(ns, "/containers/update", &rec.id, &[]);
        let status = self.core.tasks.status(ns, &rec);
        let network = self.core.networks.attachment(ns, &rec.id);
        let health = self.core.health.get(ns, &rec.id);
        Ok(ContainerView { record: Arc::new(rec), status, network, spec: None, health, log_path: None })
    }

    /// Remove a container: its task (refused while it runs unless `force`),
    /// its record, writable layer and log. Returns the id.
    pub async fn remove(&self, ns: &str, id: &str, force: bool, remove_volumes: bool) -> Result<String, Error> {
        let rec = self.find(ns, id).await?;
        // A restart the policy had pending does not happen.
        self.core.tasks.end_restart(ns, &rec.id, None);
        remove(&self.core, ns, &rec, force).await?;
        if remove_volumes {
            super::volumes::VolumeService::remove_anonymous(&self.core, ns, &rec).await;
        }
        Ok(rec.id)
    }

    /// Once a container's task has ended (the runtime reports each ended
    /// task here): remove a `--rm` container, or start it again as its
    /// restart policy says.
    pub(crate) fn start_exit_policies(&self) {
        let Some(mut ended) = self.core.tasks.take_ended() else { return };
        let core = self.core.clone();
        tokio::spawn(async move {
            let mut backoff = super::restart::Backoff::default();
            let mut seen = 0u32;
            while let Some((ns, id)) = ended.recv().await {
                seen = seen.wrapping_add(1);
                if seen.is_multiple_of(64) {
                    super::restart::prune(&core, &mut backoff);
                }
                let Ok(rec) = find(&core, &ns, &id).await else { continue };
                if !rec.config.auto_remove {
                    super::restart::after_exit(&core, &ns, &rec, &mut backoff);
                    continue;
                }
                match remove(&core, &ns, &rec, false).await {
                    // A --rm container's anonymous volumes go with it, as in docker.
                    Ok(()) => super::volumes::VolumeService::remove_anonymous(&core, &ns, &rec).await,
                    Err(Error::Container(ContainerError::Metadata(MetadataError::NotFound { .. }))) => {}
                    Err(e) => tracing::warn!(container = %id, error = %e, "removing the container after its exit"),
                }
            }
        });
    }

    /// Run the health checks of running containers (see [`super::health`]).
    pub(crate) fn start_health_checks(&self) {
        super::health::start(self.core.clone());
    }

    /// When the agent starts: the containers whose restart policy starts
    /// them with the machine (`first_boot`), see [`super::restart::at_start`].
    pub(crate) fn start_policies_at_boot(&self, first_boot: bool) {
        super::restart::at_start(&self.core, first_boot);
    }

    /// The container's output, from its log; with `follow`, until its task ends.
    pub async fn logs(&self, ns: &str, id: &str, q: LogsQuery) -> Result<mpsc::Receiver<Result<LogLine, Error>>, Error> {
        let rec = self.find(ns, id).await?;
        let path = self.core.containers.log_path(ns, &rec);
        let max_files = self.core.tasks.config().log_max_files;
        let both = !q.stdout && !q.stderr;
        let opts = ReadOptions { tail: q.tail, since: q.since, until: q.until, streams: (both || q.stdout, both || q.stderr) };
        let (tx, rx) = mpsc::channel(64);
        let (tasks, ns) = (self.core.tasks.clone(), ns.to_owned());
        tokio::task::spawn_blocking(move || {
            let mut reader = match LogReader::open(&path, max_files, &opts) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(e) => {
                    let _ = tx.blocking_send(Err(Error::Internal(format!("reading the log: {e}"))));
                    return;
                }
            };
            let mut last_pass = false;
            loop {
                match reader.next_record() {
                    Ok(Some(r)) => {
                        let mut data = r.content;
                        if !r.partial {
                            data.push(b'\n');
                        }
                        let line = LogLine { stream: r.stream, time: r.secs * 1_000_000_000 + r.nanos as i64, data };
                        if tx.blocking_send(Ok(line)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        // The shim logs everything before it reports the exit,
                        // so one more pass after the task stopped gets it all.
                        if !q.follow || last_pass || tx.is_closed() {
                            return;
                        }
                        if !tasks.is_running(&ns, &rec.id) {
                            last_pass = true;
                            continue;
                        }
                        std::thread::sleep(FOLLOW_INTERVAL);
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Error::Internal(format!("reading the log: {e}"))));
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    /// docker diff: what changed in the container's writable layer.
    pub async fn diff(&self, ns: &str, id: &str) -> Result<Vec<Change>, Error> {
        let rec = self.find(ns, id).await?;
        let (core, ns) = (self.core.clone(), ns.to_owned());
        blocking(move || Ok(core.containers.changes(&ns, &rec)?)).await
    }

    /// docker commit: the container's writable layer becomes a new image.
    /// A running container is frozen while its layer is read, and only then
    /// (unless `no_pause`): compressing, naming and unpacking run with it
    /// thawed. The freeze is in a task of its own, so a client that goes away
    /// mid-commit does not leave the container frozen, and it is recorded in
    /// the task's bundle, so an agent that dies does not either (it thaws the
    /// container when it finds the task again).
    pub async fn commit(&self, ns: &str, id: &str, req: CommitRequest) -> Result<Committed, Error> {
        if req.reference.is_empty() {
            return Err(Error::InvalidArgument("a name for the new image is required".into()));
        }
        crate::image::reference::Reference::parse(&req.reference).map_err(crate::image::ImageError::from)?;
        // The changes are read before anything is frozen or written.
        let changes = crate::container::commit_config::parse_changes(&req.changes).map_err(Error::InvalidArgument)?;
        let rec = self.find(ns, id).await?;
        let (core, ns2, rec2) = (self.core.clone(), ns.to_owned(), rec.clone());
        let job = tokio::spawn(async move {
            let tasks = &core.tasks;
            let paused = !req.no_pause && tasks.is_running(&ns2, &rec2.id) && tasks.pause_for_commit(&ns2, &rec2).await;
            let (c, n, r) = (core.clone(), ns2.clone(), rec2.clone());
            let read = blocking(move || Ok(c.containers.read_changes(&n, &r)?)).await;
            if paused {
                if let Err(e) = tasks.resume_after_commit(&ns2, &rec2).await {
                    tracing::warn!(container = %rec2.id, error = %e, "resuming after commit");
                }
            }
            let layer = read?;
            let (c, n, r) = (core.clone(), ns2.clone(), rec2.clone());
            blocking(move || {
                let meta =
                    crate::container::CommitMeta { name: &req.reference, message: &req.message, author: &req.author, changes: &changes };
                Ok(c.containers.commit_changes(&n, &r, layer, &meta)?)
            })
            .await
        });
        let committed = job.await.map_err(|e| Error::Internal(format!("commit task failed: {e}")))??;
        self.core.events.publish(ns, "/images/create", &committed.name, &[("container", rec.id.clone())]);
        Ok(committed)
    }
}

/// A container by name, full id or unique id prefix.
pub(crate) async fn find(core: &Arc<Core>, ns: &str, id: &str) -> Result<ContainerRecord, Error> {
    if id.is_empty() {
        return Err(Error::InvalidArgument("a container name or id is required".into()));
    }
    // Container records are in memory: nothing to wait for.
    Ok(core.containers.find(ns, id)?)
}

/// The one removal: task, then record and storage, then the event.
async fn remove(core: &Arc<Core>, ns: &str, rec: &ContainerRecord, force: bool) -> Result<(), Error> {
    core.tasks.delete(ns, rec, force).await?;
    // A copy of the stopped container's files (cp) ends before its snapshot and volumes go.
    let _no_copy = core.tasks.creation_guard(ns, &rec.id).await?;
    let (c, ns2, rec2) = (core.clone(), ns.to_owned(), rec.clone());
    blocking(move || Ok(c.containers.delete(&ns2, &rec2)?)).await?;
    core.tasks.forget_container(ns, &rec.id);
    core.events.publish(ns, "/containers/delete", &rec.id, &[("name", rec.name.clone())]);
    Ok(())
}

/// A container removed at its exit cannot also be started again by a policy.
fn check_restart(config: &ContainerConfig) -> Result<(), Error> {
    if config.auto_remove && config.restart.kind != crate::container::config::RestartKind::No {
        return Err(Error::InvalidArgument(format!(
            "a container removed at its exit (--rm) takes no restart policy ({})",
            config.restart.name()
        )));
    }
    Ok(())
}
