//! Containers service.

use std::sync::Arc;
use std::time::Duration;

use berth_api::v1::{self, containers_server::ContainersServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{blocking, convert, namespace, parse_filters, validate_labels};
use crate::container::config::{ContainerConfig, MountKind, MountSpec, NetworkMode, Resources};
use crate::container::CreateRequest;
use crate::metadata::ContainerRecord;
use crate::runtime::Status as TaskStatus;
use crate::server::Agent;

/// How often `logs --follow` looks for new lines.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(50);

pub struct ContainersService {
    agent: Arc<Agent>,
}

pub fn service(agent: Arc<Agent>) -> ContainersServer<ContainersService> {
    ContainersServer::new(ContainersService { agent })
}

fn config_from(c: Option<v1::ContainerConfig>) -> Result<ContainerConfig, Status> {
    let c = c.unwrap_or_default();
    let mounts = c
        .mounts
        .into_iter()
        .map(|m| {
            let kind = match m.r#type.as_str() {
                "bind" => MountKind::Bind,
                "tmpfs" => MountKind::Tmpfs,
                other => return Err(Status::invalid_argument(format!("unknown mount type {other:?}: use bind or tmpfs"))),
            };
            Ok(MountSpec { kind, source: m.source, destination: m.destination, readonly: m.readonly, options: m.options })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    let r = c.resources.unwrap_or_default();
    for (what, v) in [("memory", r.memory_bytes), ("cpu", r.cpu_millis), ("pids limit", r.pids_limit)] {
        if v < 0 {
            return Err(Status::invalid_argument(format!("{what} must not be negative")));
        }
    }
    let network = match c.network.as_str() {
        "" | "none" => NetworkMode::None,
        "host" => NetworkMode::Host,
        other => return Err(Status::invalid_argument(format!("unknown network mode {other:?}: use none or host"))),
    };
    let some = |s: String| (!s.is_empty()).then_some(s);
    Ok(ContainerConfig {
        command: c.command_set.then_some(c.command),
        entrypoint: c.entrypoint_set.then_some(c.entrypoint),
        env: c.env,
        workdir: some(c.workdir),
        user: some(c.user),
        hostname: some(c.hostname),
        mounts,
        resources: Resources {
            memory_bytes: (r.memory_bytes > 0).then_some(r.memory_bytes),
            cpu_millis: (r.cpu_millis > 0).then_some(r.cpu_millis as u64),
            pids_limit: (r.pids_limit > 0).then_some(r.pids_limit),
        },
        network,
        tty: c.tty,
        stdin: c.stdin,
        read_only: c.read_only,
        privileged: c.privileged,
        cap_add: c.cap_add,
        cap_drop: c.cap_drop,
        auto_remove: c.auto_remove,
    })
}

fn config_message(c: &ContainerConfig) -> v1::ContainerConfig {
    v1::ContainerConfig {
        command: c.command.clone().unwrap_or_default(),
        command_set: c.command.is_some(),
        entrypoint: c.entrypoint.clone().unwrap_or_default(),
        entrypoint_set: c.entrypoint.is_some(),
        env: c.env.clone(),
        workdir: c.workdir.clone().unwrap_or_default(),
        user: c.user.clone().unwrap_or_default(),
        hostname: c.hostname.clone().unwrap_or_default(),
        mounts: c
            .mounts
            .iter()
            .map(|m| v1::ContainerMount {
                r#type: match m.kind {
                    MountKind::Bind => "bind",
                    MountKind::Tmpfs => "tmpfs",
                }
                .into(),
                source: m.source.clone(),
                destination: m.destination.clone(),
                readonly: m.readonly,
                options: m.options.clone(),
            })
            .collect(),
        resources: Some(v1::Resources {
            memory_bytes: c.resources.memory_bytes.unwrap_or(0),
            cpu_millis: c.resources.cpu_millis.unwrap_or(0) as i64,
            pids_limit: c.resources.pids_limit.unwrap_or(0),
        }),
        network: match c.network {
            NetworkMode::None => "none",
            NetworkMode::Host => "host",
        }
        .into(),
        tty: c.tty,
        stdin: c.stdin,
        read_only: c.read_only,
        privileged: c.privileged,
        cap_add: c.cap_add.clone(),
        cap_drop: c.cap_drop.clone(),
        auto_remove: c.auto_remove,
    }
}

pub fn status_message(s: &TaskStatus) -> v1::TaskStatus {
    let ts = |n: i64| if n > 0 { convert::timestamp(n) } else { None };
    v1::TaskStatus {
        state: s.state.into(),
        pid: s.pid,
        exit_code: s.exit_code,
        started_at: ts(s.started_at),
        finished_at: ts(s.finished_at),
        oom_killed: s.oom_killed,
    }
}

pub fn container_message(rec: &ContainerRecord, status: &TaskStatus) -> v1::Container {
    let args = rec
        .spec
        .pointer("/process/args")
        .and_then(|a| a.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    v1::Container {
        id: rec.id.clone(),
        name: rec.name.clone(),
        image: rec.image.clone(),
        image_digest: rec.manifest.digest.to_string(),
        runtime: rec.runtime.clone(),
        labels: rec.labels.clone().into_iter().collect(),
        created_at: convert::timestamp(rec.created),
        config: Some(config_message(&rec.config)),
        args,
        snapshot_key: rec.snapshot_key.clone(),
        spec: serde_json::to_vec(&rec.spec).unwrap_or_default(),
        status: Some(status_message(status)),
    }
}

impl ContainersService {
    async fn find(&self, ns: &str, id: &str) -> Result<ContainerRecord, Status> {
        super::find_container(&self.agent, ns, id).await
    }
}

#[tonic::async_trait]
impl v1::containers_server::Containers for ContainersService {
    async fn create(&self, req: Request<v1::CreateContainerRequest>) -> Result<Response<v1::CreateContainerResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        if r.image.is_empty() {
            return Err(Status::invalid_argument("an image is required"));
        }
        validate_labels(&r.labels)?;
        let config = config_from(r.config)?;
        let runtime = if r.runtime.is_empty() { self.agent.tasks.config().default_runtime.clone() } else { r.runtime };
        self.agent.tasks.check_runtime(&runtime)?;
        let agent = self.agent.clone();
        let create = CreateRequest { image: r.image, name: r.name, config, labels: r.labels.into_iter().collect(), runtime };
        let ns2 = ns.clone();
        let rec = blocking(move || Ok(agent.containers.create(&ns2, create)?)).await?;
        self.agent.events.publish(&ns, "/containers/create", &rec.id, &[("name", rec.name.clone()), ("image", rec.image.clone())]);
        let status = TaskStatus { state: "created", ..Default::default() };
        Ok(Response::new(v1::CreateContainerResponse { container: Some(container_message(&rec, &status)) }))
    }

    async fn get(&self, req: Request<v1::GetContainerRequest>) -> Result<Response<v1::GetContainerResponse>, Status> {
        let ns = namespace(&req)?;
        let rec = self.find(&ns, &req.get_ref().id).await?;
        let status = self.agent.tasks.status(&ns, &rec).await;
        Ok(Response::new(v1::GetContainerResponse { container: Some(container_message(&rec, &status)) }))
    }

    async fn list(&self, req: Request<v1::ListContainersRequest>) -> Result<Response<v1::ListContainersResponse>, Status> {
        let ns = namespace(&req)?;
        let filters = parse_filters(&req.get_ref().filters)?;
        for (k, _, _) in &filters {
            if !matches!(k.as_str(), "name" | "id" | "image" | "status") && !k.starts_with("label.") {
                return Err(Status::invalid_argument(format!("unknown filter key {k:?}: use name, id, image, status or label.KEY")));
            }
        }
        let agent = self.agent.clone();
        let ns2 = ns.clone();
        let recs = blocking(move || Ok(agent.containers.list(&ns2)?)).await?;
        // Ask every shim at once: one slow shim does not hold up the list.
        let mut set = tokio::task::JoinSet::new();
        for (i, rec) in recs.iter().enumerate() {
            let (tasks, ns, rec) = (self.agent.tasks.clone(), ns.clone(), rec.clone());
            set.spawn(async move { (i, tasks.status(&ns, &rec).await) });
        }
        let mut statuses = vec![TaskStatus { state: "unknown", ..Default::default() }; recs.len()];
        while let Some(Ok((i, st))) = set.join_next().await {
            statuses[i] = st;
        }
        let mut out = Vec::new();
        for (rec, status) in recs.into_iter().zip(statuses) {
            let ok = filters.iter().all(|(k, v, sub)| {
                let field = match k.as_str() {
                    "name" => Some(rec.name.clone()),
                    "id" => Some(rec.id.clone()),
                    "image" => Some(rec.image.clone()),
                    "status" => Some(status.state.to_owned()),
                    label => rec.labels.get(label.trim_start_matches("label.")).cloned(),
                };
                match (field, v) {
                    (None, _) => false,
                    (Some(_), None) => true,
                    (Some(f), Some(v)) if *sub => f.contains(v.as_str()),
                    // An id matches by prefix, as everywhere else.
                    (Some(f), Some(v)) if k == "id" => f.starts_with(v.as_str()),
                    (Some(f), Some(v)) => f == *v,
                }
            });
            if ok {
                out.push(container_message(&rec, &status));
            }
        }
        Ok(Response::new(v1::ListContainersResponse { containers: out }))
    }

    async fn update_labels(
        &self,
        req: Request<v1::UpdateContainerLabelsRequest>,
    ) -> Result<Response<v1::UpdateContainerLabelsResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        validate_labels(&r.labels)?;
        let rec = self.find(&ns, &r.id).await?;
        let agent = self.agent.clone();
        let (ns2, id) = (ns.clone(), rec.id.clone());
        let rec = blocking(move || Ok(agent.containers.update_labels(&ns2, &id, r.labels.into_iter().collect())?)).await?;
        self.agent.events.publish(&ns, "/containers/update", &rec.id, &[]);
        let status = self.agent.tasks.status(&ns, &rec).await;
        Ok(Response::new(v1::UpdateContainerLabelsResponse { container: Some(container_message(&rec, &status)) }))
    }

    async fn delete(&self, req: Request<v1::DeleteContainerRequest>) -> Result<Response<v1::DeleteContainerResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let rec = self.find(&ns, &r.id).await?;
        self.agent.tasks.delete(&ns, &rec, r.force).await?;
        let agent = self.agent.clone();
        let (ns2, rec2) = (ns.clone(), rec.clone());
        blocking(move || Ok(agent.containers.delete(&ns2, &rec2)?)).await?;
        self.agent.tasks.forget_container(&ns, &rec.id);
        self.agent.events.publish(&ns, "/containers/delete", &rec.id, &[("name", rec.name.clone())]);
        Ok(Response::new(v1::DeleteContainerResponse { id: rec.id }))
    }

    type LogsStream = ReceiverStream<Result<v1::LogsResponse, Status>>;

    async fn logs(&self, req: Request<v1::LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        use berth_shim::log::{LogReader, ReadOptions, Stream};
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let rec = self.find(&ns, &r.id).await?;
        let path = self.agent.containers.log_path(&ns, &rec.id);
        let max_files = self.agent.tasks.config().log_max_files;
        let both = !r.stdout && !r.stderr;
        let at = |t: Option<prost_types::Timestamp>| t.map(|t| (t.seconds, t.nanos.max(0) as u32));
        let opts = ReadOptions {
            tail: r.tail_set.then_some(r.tail as usize),
            since: at(r.since),
            until: at(r.until),
            streams: (both || r.stdout, both || r.stderr),
        };
        let (tx, rx) = mpsc::channel(64);
        let tasks = self.agent.tasks.clone();
        let follow = r.follow;
        tokio::task::spawn_blocking(move || {
            let mut reader = match LogReader::open(&path, max_files, &opts) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(e) => {
                    let _ = tx.blocking_send(Err(Status::internal(format!("reading the log: {e}"))));
                    return;
                }
            };
            let mut last_pass = false;
            loop {
                match reader.next_record() {
                    Ok(Some(rec)) => {
                        let mut data = rec.content;
                        if !rec.partial {
                            data.push(b'\n');
                        }
                        let msg = v1::LogsResponse {
                            stream: match rec.stream {
                                Stream::Stdout => "stdout",
                                Stream::Stderr => "stderr",
                            }
                            .into(),
                            time: convert::timestamp(rec.secs * 1_000_000_000 + rec.nanos as i64),
                            data,
                        };
                        if tx.blocking_send(Ok(msg)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        // The shim logs everything before it reports the exit,
                        // so one more pass after the task stopped gets it all.
                        if !follow || last_pass || tx.is_closed() {
                            return;
                        }
                        if !tasks.is_running(&ns, &rec.id) {
                            last_pass = true;
                            continue;
                        }
                        std::thread::sleep(FOLLOW_INTERVAL);
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Status::internal(format!("reading the log: {e}"))));
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn diff(&self, req: Request<v1::DiffRequest>) -> Result<Response<v1::DiffResponse>, Status> {
        use crate::container::diff::ChangeKind;
        let ns = namespace(&req)?;
        let rec = self.find(&ns, &req.get_ref().id).await?;
        let agent = self.agent.clone();
        let changes = blocking(move || Ok(agent.containers.changes(&ns, &rec)?)).await?;
        let changes = changes
            .into_iter()
            .map(|c| v1::Change {
                kind: match c.kind {
                    ChangeKind::Added => "A",
                    ChangeKind::Modified => "C",
                    ChangeKind::Deleted => "D",
                }
                .into(),
                path: c.path,
            })
            .collect();
        Ok(Response::new(v1::DiffResponse { changes }))
    }

    async fn commit(&self, req: Request<v1::CommitRequest>) -> Result<Response<v1::CommitResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        if r.reference.is_empty() {
            return Err(Status::invalid_argument("a name for the new image is required"));
        }
        let rec = self.find(&ns, &r.id).await?;
        // Freeze a running container so its layer is read in one consistent
        // state. Pause, commit and resume run in a task of their own: a client
        // that goes away mid-commit does not leave the container frozen.
        let agent = self.agent.clone();
        let (ns2, rec2) = (ns.clone(), rec.clone());
        let job = tokio::spawn(async move {
            let paused = !r.no_pause && agent.tasks.is_running(&ns2, &rec2.id) && agent.tasks.pause(&ns2, &rec2, true).await.is_ok();
            let (a, n, c) = (agent.clone(), ns2.clone(), rec2.clone());
            let result = blocking(move || Ok(a.containers.commit(&n, &c, &r.reference, &r.message, &r.author)?)).await;
            if paused {
                if let Err(e) = agent.tasks.pause(&ns2, &rec2, false).await {
                    tracing::warn!(container = %rec2.id, error = %e, "resuming after commit");
                }
            }
            result
        });
        let c = job.await.map_err(|e| Status::internal(format!("commit task failed: {e}")))??;
        self.agent.events.publish(&ns, "/images/create", &c.name, &[("container", rec.id.clone())]);
        Ok(Response::new(v1::CommitResponse { name: c.name, digest: c.manifest.to_string(), config_digest: c.config.to_string() }))
    }
}
