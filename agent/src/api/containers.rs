//! Containers service.

use std::collections::HashMap;
use std::sync::Arc;

use berth_api::v1::{self, containers_server::ContainersServer};
use tonic::{Request, Response, Status};

use super::{convert, namespace, stream, MessageStream};
use crate::container::config::{
    ContainerConfig, DeviceMapping, HealthCheck, MountKind, MountSpec, NetworkMode, Resources, RestartPolicy, Ulimit,
};
use crate::container::diff::ChangeKind;
use crate::runtime::Status as TaskStatus;
use crate::service::containers::{CommitRequest, ContainerView, LogsQuery, NewContainer};
use crate::service::Services;
use berth_shim::log::Stream;

pub struct ContainersApi {
    services: Arc<Services>,
    encoded: Encoded,
}

pub fn service(services: Arc<Services>) -> ContainersServer<ContainersApi> {
    ContainersServer::new(ContainersApi { services, encoded: Encoded::default() }).max_decoding_message_size(super::MAX_MESSAGE)
}

/// Each listed container's message, encoded once for as long as what it is
/// made of stays the same: the record (records are replaced, never changed
/// in place, so the same `Arc` is the same record), the task's status and
/// the network attachment. A kubelet or a `watch ps` lists the same
/// containers over and over; each list then copies their bytes instead of
/// building and encoding every field again.
#[derive(Default)]
struct Encoded {
    /// By namespace, then by container id.
    by_ns: std::sync::Mutex<HashMap<String, HashMap<String, EncodedEntry, crate::keyed::Hasher64>>>,
}

/// Most entries kept in one namespace.
const MAX_ENCODED: usize = 10_000;

struct EncodedEntry {
    record: Arc<crate::metadata::ContainerRecord>,
    status: TaskStatus,
    network: Option<Arc<crate::network::Attachment>>,
    bytes: prost::bytes::Bytes,
}

impl Encoded {
    /// The messages of `views` (in their order), from the cache where they
    /// are current. A container with a health state is encoded each time.
    fn messages(&self, ns: &str, views: &[ContainerView]) -> Vec<prost::bytes::Bytes> {
        let encode = |v: &ContainerView| prost::bytes::Bytes::from(prost::Message::encode_to_vec(&container_message(v)));
        let same = |e: &EncodedEntry, v: &ContainerView| {
            Arc::ptr_eq(&e.record, &v.record)
                && e.status == v.status
                && match (&e.network, &v.network) {
                    (None, None) => true,
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    _ => false,
                }
        };
        let mut out: Vec<Option<prost::bytes::Bytes>> = {
            let by_ns = self.by_ns.lock().unwrap_or_else(|e| e.into_inner());
            let map = by_ns.get(ns);
            views
                .iter()
                .map(|v| {
                    let e = map?.get(&v.record.id)?;
                    (v.health.is_none() && same(e, v)).then(|| e.bytes.clone())
                })
                .collect()
        };
        // Encoded outside the lock: other lists go on meanwhile.
        let mut fresh = Vec::new();
        for (slot, v) in out.iter_mut().zip(views) {
            if slot.is_none() {
                let bytes = encode(v);
                if v.health.is_none() {
                    fresh.push((v, bytes.clone()));
                }
                *slot = Some(bytes);
            }
        }
        let mut by_ns = self.by_ns.lock().unwrap_or_else(|e| e.into_inner());
        // Entries of containers removed or changed since go, whatever lists come (filtered
        // ones too): the store holds every current record, so a record only this cache
        // holds is one the store let go of.
        by_ns.retain(|_, map| {
            map.retain(|_, e| Arc::strong_count(&e.record) > 1);
            !map.is_empty()
        });
        let map = by_ns.entry(ns.to_owned()).or_default();
        if map.len() + fresh.len() > MAX_ENCODED {
            map.clear();
        }
        for (v, bytes) in fresh {
            let entry = EncodedEntry { record: v.record.clone(), status: v.status.clone(), network: v.network.clone(), bytes };
            map.insert(v.record.id.clone(), entry);
        }
        out.into_iter().flatten().collect()
    }
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
                "volume" => MountKind::Volume,
                other => return Err(Status::invalid_argument(format!("unknown mount type {other:?}: use bind, volume or tmpfs"))),
            };
            Ok(MountSpec {
                kind,
                source: m.source,
                destination: m.destination,
                readonly: m.readonly,
                options: m.options,
                no_copy: m.no_copy,
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    let r = c.resources.unwrap_or_default();
    for (what, v) in [("memory", r.memory_bytes), ("cpu", r.cpu_millis), ("pids limit", r.pids_limit)] {
        if v < 0 {
            return Err(Status::invalid_argument(format!("{what} must not be negative")));
        }
    }
    let network = match c.network.as_str() {
        "" | "bridge" | "default" => NetworkMode::Networks,
        "none" => NetworkMode::None,
        "host" => NetworkMode::Host,
        other => match other.strip_prefix("container:") {
            Some(target) if !target.is_empty() => NetworkMode::Container(target.to_owned()),
            _ => {
                return Err(Status::invalid_argument(format!(
                    "unknown network mode {other:?}: use none, host, container:NAME, or networks by name"
                )))
            }
        },
    };
    if network != NetworkMode::Networks && !c.networks.is_empty() {
        return Err(Status::invalid_argument(format!("--net {} cannot be combined with networks", c.network)));
    }
    let networks = c
        .networks
        .into_iter()
        .map(|e| {
            if e.network.is_empty() {
                return Err(Status::invalid_argument("a network endpoint names no network"));
            }
            Ok(crate::network::EndpointSpec { network: e.network, aliases: e.aliases, ip: e.ipv4_address })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    let ports = c
        .ports
        .into_iter()
        .map(|p| {
            let port =
                |v: u32, what: &str| u16::try_from(v).map_err(|_| Status::invalid_argument(format!("{what} port {v} is not 0 to 65535")));
            let protocol = if p.protocol.is_empty() { "tcp".to_owned() } else { p.protocol.to_ascii_lowercase() };
            Ok(crate::network::PortSpec {
                host_ip: p.host_ip,
                host_port: port(p.host_port, "host")?,
                container_port: port(p.container_port, "container")?,
                protocol,
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
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
            ..Default::default()
        },
        network,
        tty: c.tty,
        stdin: c.stdin,
        stdin_once: false,
        read_only: c.read_only,
        privileged: c.privileged,
        cap_add: c.cap_add,
        cap_drop: c.cap_drop,
        auto_remove: c.auto_remove,
        networks,
        ports,
        publish_all: c.publish_all,
        dns: c.dns,
        dns_search: c.dns_search,
        dns_options: c.dns_options,
        extra_hosts: c.extra_hosts,
        init: c.init,
        stop_signal: some(c.stop_signal),
        stop_timeout: c.stop_timeout,
        restart: restart_policy(c.restart_policy)?,
        healthcheck: c.healthcheck.map(health_check).transpose()?,
        shm_size: (c.shm_size > 0).then_some(c.shm_size),
        // Set by the agent only (a pod's), never through this API.
        shm_source: None,
        ulimits: c.ulimits.into_iter().map(|u| Ulimit { name: u.name, soft: u.soft, hard: u.hard }).collect(),
        sysctls: c.sysctls.into_iter().collect(),
        group_add: c.group_add,
        groups_strict: false,
        pid_host: namespace_mode("pid", &c.pid)?,
        ipc_host: namespace_mode("ipc", &c.ipc)?,
        pid_container: c.pid.strip_prefix("container:").map(str::to_owned),
        ipc_container: c.ipc.strip_prefix("container:").map(str::to_owned),
        seccomp: c.seccomp_profile,
        no_new_privileges: c.no_new_privileges,
        apparmor: c.apparmor_profile,
        devices: c
            .devices
            .into_iter()
            .map(|d| DeviceMapping { host_path: d.host_path, container_path: d.container_path, permissions: d.permissions })
            .collect(),
        cgroupns_private: match c.cgroupns.as_str() {
            "" | "host" => false,
            "private" => true,
            other => return Err(Status::invalid_argument(format!("--cgroupns {other:?}: use host or private"))),
        },
        // Only the CRI places a log elsewhere (where the kubelet rotates it).
        log_path: None,
        cgroup_parent: None,
        masked_paths: None,
        readonly_paths: None,
    })
}

/// `--pid` / `--ipc`: "" (its own) or "host".
/// Whether `--pid`/`--ipc` asks for the host's namespace (`container:NAME` is read apart).
fn namespace_mode(what: &str, v: &str) -> Result<bool, Status> {
    match v {
        "" | "private" => Ok(false),
        "host" => Ok(true),
        c if c.strip_prefix("container:").is_some_and(|n| !n.is_empty()) => Ok(false),
        other => {
            Err(Status::invalid_argument(format!("--{what} {other:?}: use host, container:NAME, or nothing for a namespace of its own")))
        }
    }
}

fn health_check(h: v1::HealthCheck) -> Result<HealthCheck, Status> {
    let ok = match h.test.first().map(String::as_str) {
        None => true,
        Some("NONE") => h.test.len() == 1,
        Some("CMD") => h.test.len() > 1,
        Some("CMD-SHELL") => h.test.len() == 2,
        Some(_) => false,
    };
    if !ok {
        return Err(Status::invalid_argument(format!(
            "health check test {:?}: use [\"CMD\", ARG...], [\"CMD-SHELL\", COMMAND] or [\"NONE\"]",
            h.test
        )));
    }
    const DAY_MS: u64 = 86_400_000;
    for (what, v) in [("interval", h.interval_ms), ("timeout", h.timeout_ms), ("start period", h.start_period_ms)] {
        if v > DAY_MS {
            return Err(Status::invalid_argument(format!("health check {what} of {v} ms: at most a day")));
        }
    }
    Ok(HealthCheck {
        test: h.test,
        interval_ms: h.interval_ms,
        timeout_ms: h.timeout_ms,
        start_period_ms: h.start_period_ms,
        retries: h.retries,
    })
}

pub(crate) fn restart_policy(p: Option<v1::RestartPolicy>) -> Result<RestartPolicy, Status> {
    let p = p.unwrap_or_default();
    RestartPolicy::parse(&p.name, p.max_retries).map_err(Status::invalid_argument)
}

fn port_message(p: &crate::network::PortSpec) -> v1::PortMapping {
    v1::PortMapping {
        host_ip: p.host_ip.clone(),
        host_port: p.host_port.into(),
        container_port: p.container_port.into(),
        protocol: p.protocol.clone(),
    }
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
                    MountKind::Volume => "volume",
                }
                .into(),
                source: m.source.clone(),
                destination: m.destination.clone(),
                readonly: m.readonly,
                options: m.options.clone(),
                no_copy: m.no_copy,
            })
            .collect(),
        resources: Some(v1::Resources {
            memory_bytes: c.resources.memory_bytes.unwrap_or(0),
            cpu_millis: c.resources.cpu_millis.unwrap_or(0) as i64,
            pids_limit: c.resources.pids_limit.unwrap_or(0),
        }),
        network: match &c.network {
            NetworkMode::None => "none".into(),
            NetworkMode::Host => "host".into(),
            NetworkMode::Container(id) => format!("container:{id}"),
            NetworkMode::Networks => String::new(),
        },
        tty: c.tty,
        stdin: c.stdin,
        read_only: c.read_only,
        privileged: c.privileged,
        cap_add: c.cap_add.clone(),
        cap_drop: c.cap_drop.clone(),
        auto_remove: c.auto_remove,
        networks: c
            .networks
            .iter()
            .map(|e| v1::NetworkEndpoint { network: e.network.clone(), aliases: e.aliases.clone(), ipv4_address: e.ip.clone() })
            .collect(),
        ports: c.ports.iter().map(port_message).collect(),
        publish_all: c.publish_all,
        init: c.init,
        stop_signal: c.stop_signal.clone().unwrap_or_default(),
        stop_timeout: c.stop_timeout,
        restart_policy: Some(v1::RestartPolicy { name: c.restart.name().into(), max_retries: c.restart.max_retries }),
        shm_size: c.shm_size.unwrap_or(0),
        ulimits: c.ulimits.iter().map(|u| v1::Ulimit { name: u.name.clone(), soft: u.soft, hard: u.hard }).collect(),
        sysctls: c.sysctls.clone(),
        group_add: c.group_add.clone(),
        pid: match (&c.pid_container, c.pid_host) {
            (Some(id), _) => format!("container:{id}"),
            (None, true) => "host".into(),
            (None, false) => String::new(),
        },
        ipc: match (&c.ipc_container, c.ipc_host) {
            (Some(id), _) => format!("container:{id}"),
            (None, true) => "host".into(),
            (None, false) => String::new(),
        },
        seccomp_profile: c.seccomp.clone(),
        no_new_privileges: c.no_new_privileges,
        apparmor_profile: c.apparmor.clone(),
        devices: c
            .devices
            .iter()
            .map(|d| v1::DeviceMapping {
                host_path: d.host_path.clone(),
                container_path: d.container_path.clone(),
                permissions: d.permissions.clone(),
            })
            .collect(),
        cgroupns: if c.cgroupns_private { "private".into() } else { String::new() },
        healthcheck: c.healthcheck.as_ref().map(|h| v1::HealthCheck {
            test: h.test.clone(),
            interval_ms: h.interval_ms,
            timeout_ms: h.timeout_ms,
            start_period_ms: h.start_period_ms,
            retries: h.retries,
        }),
        dns: c.dns.clone(),
        dns_search: c.dns_search.clone(),
        dns_options: c.dns_options.clone(),
        extra_hosts: c.extra_hosts.clone(),
    }
}

pub fn status_message(s: &TaskStatus) -> v1::TaskStatus {
    let ts = |n: i64| if n > 0 { convert::timestamp(n) } else { None };
    v1::TaskStatus {
        state: s.state.as_str().into(),
        pid: s.pid,
        exit_code: s.exit_code,
        started_at: ts(s.started_at),
        finished_at: ts(s.finished_at),
        oom_killed: s.oom_killed,
    }
}

fn container_message(v: &ContainerView) -> v1::Container {
    let (rec, status) = (&v.record, &v.status);
    v1::Container {
        id: rec.id.clone(),
        name: rec.name.clone(),
        image: rec.image.clone(),
        image_digest: rec.manifest.digest.to_string(),
        runtime: rec.runtime.clone(),
        labels: rec.labels.clone().into_iter().collect(),
        created_at: convert::timestamp(rec.created),
        config: Some(config_message(&rec.config)),
        args: rec.args.clone(),
        snapshot_key: rec.snapshot_key.clone(),
        // Get's, moved in by the caller.
        spec: Vec::new(),
        status: Some(status_message(status)),
        endpoints: v
            .network
            .iter()
            .flat_map(|a| a.endpoints.iter())
            .map(|e| v1::EndpointStatus {
                network: e.network.clone(),
                network_id: e.network_id.clone(),
                interface: e.ifname.clone(),
                addresses: e.addresses.ips.clone(),
                gateway: e.addresses.gateway.clone(),
                mac_address: e.addresses.mac.clone(),
                aliases: e.aliases.clone(),
            })
            .collect(),
        ports: v.network.iter().flat_map(|a| a.ports.iter()).map(port_message).collect(),
        restart_count: rec.restart_count,
        stopped_by_user: rec.stopped_by_user,
        log_path: v.log_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        image_id: rec.config_digest.to_string(),
        health: v.health.as_ref().map(|h| v1::Health {
            status: h.status.as_str().into(),
            failing_streak: h.failing_streak,
            log: h
                .log
                .iter()
                .map(|p| v1::HealthProbe {
                    start: convert::timestamp(p.start),
                    end: convert::timestamp(p.end),
                    exit_code: p.exit_code,
                    output: p.output.clone(),
                })
                .collect(),
        }),
    }
}

#[tonic::async_trait]
impl v1::containers_server::Containers for ContainersApi {
    async fn create(&self, req: Request<v1::CreateContainerRequest>) -> Result<Response<v1::CreateContainerResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let new = NewContainer {
            image: r.image,
            name: r.name,
            config: config_from(r.config)?,
            labels: r.labels.into_iter().collect(),
            runtime: r.runtime,
        };
        let c = self.services.containers.create(&ns, new).await?;
        Ok(Response::new(v1::CreateContainerResponse { container: Some(container_message(&c)) }))
    }

    async fn get(&self, req: Request<v1::GetContainerRequest>) -> Result<Response<v1::GetContainerResponse>, Status> {
        let ns = namespace(&req)?;
        let mut c = self.services.containers.get(&ns, &req.get_ref().id).await?;
        let spec = c.spec.take();
        Ok(Response::new(v1::GetContainerResponse {
            container: Some(v1::Container { spec: spec.unwrap_or_default(), ..container_message(&c) }),
        }))
    }

    async fn list(&self, req: Request<v1::ListContainersRequest>) -> Result<Response<v1::ListContainersResponse>, Status> {
        let ns = namespace(&req)?;
        let all = self.services.containers.list(&ns, &req.get_ref().filters).await?;
        Ok(Response::new(v1::ListContainersResponse { containers: Vec::new(), encoded: self.encoded.messages(&ns, &all) }))
    }

    async fn update(&self, req: Request<v1::UpdateContainerRequest>) -> Result<Response<v1::UpdateContainerResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let restart = r.restart_policy.map(|p| restart_policy(Some(p))).transpose()?;
        let name = Some(r.name).filter(|n| !n.is_empty());
        let c = self.services.containers.update(&ns, &r.id, restart, name, r.auto_remove).await?;
        Ok(Response::new(v1::UpdateContainerResponse { container: Some(container_message(&c)) }))
    }

    async fn update_labels(
        &self,
        req: Request<v1::UpdateContainerLabelsRequest>,
    ) -> Result<Response<v1::UpdateContainerLabelsResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let c = self.services.containers.update_labels(&ns, &r.id, r.labels.into_iter().collect()).await?;
        Ok(Response::new(v1::UpdateContainerLabelsResponse { container: Some(container_message(&c)) }))
    }

    async fn delete(&self, req: Request<v1::DeleteContainerRequest>) -> Result<Response<v1::DeleteContainerResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let id = self.services.containers.remove(&ns, &r.id, r.force, r.remove_volumes).await?;
        Ok(Response::new(v1::DeleteContainerResponse { id }))
    }

    type LogsStream = MessageStream<v1::LogsResponse>;

    async fn logs(&self, req: Request<v1::LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let at = |t: Option<prost_types::Timestamp>| t.map(|t| (t.seconds, t.nanos.max(0) as u32));
        let q = LogsQuery {
            tail: r.tail_set.then_some(r.tail as usize),
            since: at(r.since),
            until: at(r.until),
            stdout: r.stdout,
            stderr: r.stderr,
            follow: r.follow,
        };
        let rx = self.services.containers.logs(&ns, &r.id, q).await?;
        Ok(Response::new(stream(rx, |l| v1::LogsResponse {
            stream: match l.stream {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            }
            .into(),
            time: convert::timestamp(l.time),
            data: l.data,
        })))
    }

    async fn diff(&self, req: Request<v1::DiffRequest>) -> Result<Response<v1::DiffResponse>, Status> {
        let ns = namespace(&req)?;
        let changes = self.services.containers.diff(&ns, &req.get_ref().id).await?;
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
        let c = CommitRequest { reference: r.reference, message: r.message, author: r.author, no_pause: r.no_pause, changes: r.changes };
        let done = self.services.containers.commit(&ns, &r.id, c).await?;
        Ok(Response::new(v1::CommitResponse { name: done.name, digest: done.manifest.to_string(), config_digest: done.config.to_string() }))
    }

    async fn stat_path(&self, req: Request<v1::StatPathRequest>) -> Result<Response<v1::StatPathResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let stat = self.services.containers.stat_path(&ns, &r.id, &r.path, r.follow_link).await?;
        Ok(Response::new(v1::StatPathResponse {
            stat: Some(v1::PathStat {
                name: stat.name,
                size: i64::try_from(stat.size).unwrap_or(i64::MAX),
                mode: stat.mode,
                modified: Some(prost_types::Timestamp { seconds: stat.mtime, nanos: 0 }),
                link_target: stat.link_target,
            }),
        }))
    }

    type CopyFromStream = MessageStream<v1::CopyFromResponse>;

    async fn copy_from(&self, req: Request<v1::CopyFromRequest>) -> Result<Response<Self::CopyFromStream>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let rx = self.services.containers.copy_from(&ns, &r.id, &r.path, r.follow_link, &r.archive_name).await?;
        Ok(Response::new(stream(rx, |data| v1::CopyFromResponse { data })))
    }

    async fn copy_to(&self, req: Request<tonic::Streaming<v1::CopyToRequest>>) -> Result<Response<v1::CopyToResponse>, Status> {
        let ns = namespace(&req)?;
        let mut upload = req.into_inner();
        let first = tokio::time::timeout(super::UPLOAD_IDLE_TIMEOUT, upload.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no copy options received"))??
            .ok_or_else(|| Status::invalid_argument("empty copy stream"))?;
        let Some(v1::copy_to_request::Payload::Options(o)) = first.payload else {
            return Err(Status::invalid_argument("the first copy message must carry the options"));
        };
        let chunk = |m: v1::CopyToRequest| match m.payload {
            Some(v1::copy_to_request::Payload::Chunk(c)) => Some(c),
            _ => None,
        };
        let reader = super::upload_reader(upload, chunk);
        let done = self.services.containers.copy_to(&ns, &o.id, &o.path, o.keep_owners, reader).await?;
        Ok(Response::new(v1::CopyToResponse {
            entries: i64::try_from(done.entries).unwrap_or(i64::MAX),
            bytes: i64::try_from(done.bytes).unwrap_or(i64::MAX),
        }))
    }
}
