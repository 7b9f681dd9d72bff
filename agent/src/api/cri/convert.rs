//! The CRI's messages into the pods service's terms, and back.

use berth_api::cri;
use tonic::Status;

use crate::metadata::container_config::{DeviceMapping, MountKind, MountSpec};
use crate::network::PortSpec;
use crate::runtime::TaskState;
use crate::service::pods::{PidMode, PodContainerSpec, PodContainerView, PodMeta, PodSpec, PodStats, PodView, Seccomp};
use crate::service::tasks::Stats;

/// What RunPodSandbox asks for, in the pods service's terms.
pub fn pod_spec(config: cri::PodSandboxConfig, runtime_handler: String) -> Result<PodSpec, Status> {
    let m = config.metadata.ok_or_else(|| Status::invalid_argument("a pod needs its metadata (PodSandboxConfig.metadata)"))?;
    let ns_options = config.linux.as_ref().and_then(|l| l.security_context.as_ref()).and_then(|c| c.namespace_options.as_ref());
    let node = |mode: Option<i32>| mode == Some(cri::NamespaceMode::Node as i32);
    let host_network = node(ns_options.map(|o| o.network));
    let host_pid = node(ns_options.map(|o| o.pid));
    let host_ipc = node(ns_options.map(|o| o.ipc));
    let linux = config.linux.clone().unwrap_or_default();
    let sc = linux.security_context.clone().unwrap_or_default();
    #[allow(deprecated)]
    let seccomp = seccomp(sc.seccomp.as_ref(), &sc.seccomp_profile_path)?;
    let dns = config.dns_config.unwrap_or_default();
    let mut ports = Vec::new();
    for p in &config.port_mappings {
        // Only host ports are published; a container port alone needs nothing on the host.
        if p.host_port <= 0 {
            continue;
        }
        let protocol = match cri::Protocol::try_from(p.protocol) {
            Ok(cri::Protocol::Tcp) => "tcp",
            Ok(cri::Protocol::Udp) => "udp",
            _ => return Err(Status::invalid_argument(format!("port {}: only TCP and UDP are published", p.container_port))),
        };
        let port = |n: i32, what: &str| u16::try_from(n).map_err(|_| Status::invalid_argument(format!("{what} {n} is not a port")));
        ports.push(PortSpec {
            host_ip: p.host_ip.clone(),
            host_port: port(p.host_port, "host port")?,
            container_port: port(p.container_port, "container port")?,
            protocol: protocol.into(),
        });
    }
    Ok(PodSpec {
        meta: PodMeta { name: m.name, uid: m.uid, namespace: m.namespace, attempt: m.attempt },
        hostname: config.hostname,
        log_directory: config.log_directory,
        dns_servers: dns.servers,
        dns_searches: dns.searches,
        dns_options: dns.options,
        ports,
        host_network,
        host_pid,
        host_ipc,
        cgroup_parent: linux.cgroup_parent,
        sysctls: linux.sysctls.into_iter().collect(),
        seccomp,
        labels: config.labels,
        annotations: config.annotations,
        runtime_handler,
    })
}

pub fn pod_metadata(m: &PodMeta) -> cri::PodSandboxMetadata {
    cri::PodSandboxMetadata { name: m.name.clone(), uid: m.uid.clone(), namespace: m.namespace.clone(), attempt: m.attempt }
}

/// A pod as PodSandboxStatus shows it.
pub fn pod_status(pod: PodView) -> cri::PodSandboxStatus {
    let mut ips = pod.ips.iter().map(|ip| cri::PodIp { ip: ip.clone() });
    let network = cri::PodSandboxNetworkStatus { ip: ips.next().map(|p| p.ip).unwrap_or_default(), additional_ips: ips.collect() };
    let mode = |host: bool, own: cri::NamespaceMode| if host { cri::NamespaceMode::Node } else { own } as i32;
    let options = cri::NamespaceOption {
        network: mode(pod.host_network, cri::NamespaceMode::Pod),
        pid: mode(pod.host_pid, cri::NamespaceMode::Container),
        ipc: mode(pod.host_ipc, cri::NamespaceMode::Pod),
        ..Default::default()
    };
    cri::PodSandboxStatus {
        id: pod.id.clone(),
        metadata: Some(pod_metadata(&pod.meta)),
        state: pod_state(&pod),
        created_at: pod.created,
        network: Some(network),
        linux: Some(cri::LinuxPodSandboxStatus { namespaces: Some(cri::Namespace { options: Some(options) }) }),
        labels: pod.labels,
        annotations: pod.annotations,
        runtime_handler: pod.runtime_handler,
    }
}

pub fn pod_state(p: &PodView) -> i32 {
    if p.ready {
        cri::PodSandboxState::SandboxReady as i32
    } else {
        cri::PodSandboxState::SandboxNotready as i32
    }
}

/// An id the CRI passes (`what`: pod sandbox, container).
pub fn required_id<'a>(what: &str, id: &'a str) -> Result<&'a str, Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument(format!("a {what} id is required")));
    }
    Ok(id)
}

/// A pod's id as the CRI passes it.
pub fn pod_id(id: &str) -> Result<&str, Status> {
    required_id("pod sandbox", id)
}

/// What CreateContainer asks for, in the pods service's terms. (The deprecated profile
/// fields are read too: kubelets before 1.27 fill only those.)
#[allow(deprecated)]
pub fn container_spec(c: cri::ContainerConfig) -> Result<PodContainerSpec, Status> {
    let meta = c.metadata.ok_or_else(|| Status::invalid_argument("a container needs its metadata (ContainerConfig.metadata)"))?;
    let image = c.image.map(|i| i.image).filter(|i| !i.is_empty()).ok_or_else(|| Status::invalid_argument("a container needs an image"))?;
    let mut mounts = Vec::new();
    for m in c.mounts {
        if m.host_path.is_empty() || !m.container_path.starts_with('/') {
            return Err(Status::invalid_argument(format!(
                "mount {:?}: a host path and an absolute container path are required",
                m.container_path
            )));
        }
        let propagation = match cri::MountPropagation::try_from(m.propagation) {
            Ok(cri::MountPropagation::PropagationHostToContainer) => "rslave",
            Ok(cri::MountPropagation::PropagationBidirectional) => "rshared",
            _ => "rprivate",
        };
        let mut options = vec![propagation.to_owned()];
        // A read-only bind covers the mounts below its source only when asked
        // (`recursive_read_only`, the kernel's mount_setattr through the runtime's `rro`);
        // those could not stay read-only if mounts propagated into them.
        if m.recursive_read_only {
            if !m.readonly {
                return Err(Status::invalid_argument(format!("mount {:?}: recursive_read_only needs readonly", m.container_path)));
            }
            if propagation != "rprivate" {
                return Err(Status::invalid_argument(format!(
                    "mount {:?}: a recursive read-only mount cannot take mount propagation ({propagation})",
                    m.container_path
                )));
            }
            options.push("rro".into());
        }
        mounts.push(MountSpec {
            kind: MountKind::Bind,
            source: m.host_path,
            destination: m.container_path,
            readonly: m.readonly,
            options,
            no_copy: false,
        });
    }
    let linux = c.linux.unwrap_or_default();
    let sc = linux.security_context.unwrap_or_default();
    let user = match (sc.run_as_user.map(|u| u.value), sc.run_as_group.map(|g| g.value), sc.run_as_username.as_str()) {
        (Some(u), Some(g), _) => Some(format!("{u}:{g}")),
        (Some(u), None, _) => Some(u.to_string()),
        (None, Some(_), "") => {
            return Err(Status::invalid_argument("run_as_group needs run_as_user or run_as_username"));
        }
        (None, Some(g), name) => Some(format!("{name}:{g}")),
        (None, None, "") => None,
        (None, None, name) => Some(name.to_owned()),
    };
    let caps = sc.capabilities.unwrap_or_default();
    let pid = match sc.namespace_options.as_ref().map(|o| (cri::NamespaceMode::try_from(o.pid), o.target_id.clone())) {
        Some((Ok(cri::NamespaceMode::Pod), _)) => PidMode::Pod,
        Some((Ok(cri::NamespaceMode::Node), _)) => PidMode::Node,
        Some((Ok(cri::NamespaceMode::Target), t)) if !t.is_empty() => PidMode::Target(t),
        Some((Ok(cri::NamespaceMode::Target), _)) => {
            return Err(Status::invalid_argument("a TARGET process namespace needs its target_id"));
        }
        _ => PidMode::Container,
    };
    let seccomp = seccomp(sc.seccomp.as_ref(), &sc.seccomp_profile_path)?;
    let apparmor = match &sc.apparmor {
        Some(p) if p.profile_type == cri::security_profile::ProfileType::Localhost as i32 => {
            p.localhost_ref.strip_prefix("localhost/").unwrap_or(&p.localhost_ref).to_owned()
        }
        Some(_) => String::new(),
        None => sc.apparmor_profile.strip_prefix("localhost/").unwrap_or("").to_owned(),
    };
    let devices = linux_devices(c.devices)?;
    let resources = container_resources(&linux.resources.unwrap_or_default());
    Ok(PodContainerSpec {
        name: meta.name,
        attempt: meta.attempt,
        image,
        command: c.command,
        args: c.args,
        workdir: c.working_dir,
        env: c.envs.into_iter().map(|kv| format!("{}={}", kv.key, kv.value)).collect(),
        mounts,
        labels: c.labels,
        annotations: c.annotations,
        log_path: c.log_path,
        user,
        privileged: sc.privileged,
        read_only: sc.readonly_rootfs,
        cap_add: caps.add_capabilities,
        cap_drop: caps.drop_capabilities,
        no_new_privileges: sc.no_new_privs,
        resources,
        tty: c.tty,
        stdin: c.stdin,
        stdin_once: c.stdin_once,
        pid,
        groups: sc.supplemental_groups,
        groups_strict: sc.supplemental_groups_policy == cri::SupplementalGroupsPolicy::Strict as i32,
        devices,
        seccomp,
        apparmor,
        masked_paths: sc.masked_paths,
        readonly_paths: sc.readonly_paths,
    })
}

/// A seccomp profile as the CRI names it: the profile message, else the path field older
/// kubelets fill (`runtime/default`, `unconfined`, `localhost/PATH`).
fn seccomp(profile: Option<&cri::SecurityProfile>, path: &str) -> Result<Seccomp, Status> {
    use cri::security_profile::ProfileType;
    Ok(match (profile, path) {
        (Some(p), _) => match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Seccomp::RuntimeDefault,
            Ok(ProfileType::Unconfined) => Seccomp::Unconfined,
            Ok(ProfileType::Localhost) => Seccomp::Localhost(p.localhost_ref.clone()),
            Err(_) => return Err(Status::invalid_argument(format!("unknown seccomp profile type {}", p.profile_type))),
        },
        (None, "runtime/default" | "docker/default") => Seccomp::RuntimeDefault,
        (None, "unconfined") => Seccomp::Unconfined,
        (None, p) if p.starts_with("localhost/") => Seccomp::Localhost(p["localhost/".len()..].to_owned()),
        (None, "") => Seccomp::Unset,
        (None, other) => return Err(Status::invalid_argument(format!("seccomp profile {other:?}"))),
    })
}

/// The limits of LinuxContainerResources, in the agent's terms (unset fields: no limit).
pub fn container_resources(r: &cri::LinuxContainerResources) -> crate::metadata::container_config::Resources {
    crate::metadata::container_config::Resources {
        memory_bytes: (r.memory_limit_in_bytes > 0).then_some(r.memory_limit_in_bytes),
        // The kubelet's swap limit, else none at all (its default, NoSwap).
        memory_swap_bytes: (r.memory_limit_in_bytes > 0).then(|| {
            if r.memory_swap_limit_in_bytes > 0 {
                r.memory_swap_limit_in_bytes.max(r.memory_limit_in_bytes)
            } else {
                r.memory_limit_in_bytes
            }
        }),
        cpu_millis: (r.cpu_quota > 0 && r.cpu_period > 0)
            .then(|| u64::try_from(r.cpu_quota.saturating_mul(1000) / r.cpu_period).unwrap_or(0)),
        cpu_shares: u64::try_from(r.cpu_shares).ok().filter(|s| *s > 0),
        cpuset_cpus: (!r.cpuset_cpus.is_empty()).then(|| r.cpuset_cpus.clone()),
        cpuset_mems: (!r.cpuset_mems.is_empty()).then(|| r.cpuset_mems.clone()),
        pids_limit: None,
    }
}

/// The CRI's devices: a host device node, where it appears, and its permissions (`rwm`).
fn linux_devices(devices: Vec<cri::Device>) -> Result<Vec<DeviceMapping>, Status> {
    devices
        .into_iter()
        .map(|d| {
            if !d.host_path.starts_with('/') || !(d.container_path.is_empty() || d.container_path.starts_with('/')) {
                return Err(Status::invalid_argument(format!("device {:?}: absolute host and container paths are required", d.host_path)));
            }
            if !d.permissions.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
                return Err(Status::invalid_argument(format!("device {:?}: permissions {:?} (some of rwm)", d.host_path, d.permissions)));
            }
            Ok(DeviceMapping { host_path: d.host_path, container_path: d.container_path, permissions: d.permissions })
        })
        .collect()
}

/// The CRI's state of a task's.
pub fn state_number(s: TaskState) -> i32 {
    (match s {
        TaskState::Created => cri::ContainerState::ContainerCreated,
        TaskState::Running | TaskState::Paused => cri::ContainerState::ContainerRunning,
        TaskState::Exited | TaskState::Restarting => cri::ContainerState::ContainerExited,
        TaskState::Unknown => cri::ContainerState::ContainerUnknown,
    }) as i32
}

/// A task state from the CRI's number.
pub fn container_state(n: i32) -> TaskState {
    match cri::ContainerState::try_from(n) {
        Ok(cri::ContainerState::ContainerCreated) => TaskState::Created,
        Ok(cri::ContainerState::ContainerRunning) => TaskState::Running,
        Ok(cri::ContainerState::ContainerExited) => TaskState::Exited,
        _ => TaskState::Unknown,
    }
}

fn container_metadata(c: &PodContainerView) -> cri::ContainerMetadata {
    cri::ContainerMetadata { name: c.name.clone(), attempt: c.attempt }
}

pub fn container_message(c: PodContainerView) -> cri::Container {
    cri::Container {
        metadata: Some(container_metadata(&c)),
        image: Some(cri::ImageSpec { image: c.image_id.clone(), user_specified_image: c.image.clone(), ..Default::default() }),
        image_ref: c.image_id.clone(),
        state: state_number(c.state),
        created_at: c.created,
        pod_sandbox_id: c.pod_id,
        id: c.id,
        labels: c.labels,
        annotations: c.annotations,
        image_id: c.image_id,
    }
}

pub fn container_status(c: PodContainerView) -> cri::ContainerStatus {
    let reason = match c.state {
        TaskState::Exited if c.oom_killed => "OOMKilled",
        TaskState::Exited if c.exit_code == 0 => "Completed",
        TaskState::Exited => "Error",
        _ => "",
    };
    cri::ContainerStatus {
        metadata: Some(container_metadata(&c)),
        state: state_number(c.state),
        created_at: c.created,
        started_at: c.started,
        finished_at: c.finished,
        exit_code: c.exit_code,
        image: Some(cri::ImageSpec { image: c.image.clone(), ..Default::default() }),
        image_ref: c.image_id.clone(),
        reason: reason.into(),
        message: String::new(),
        mounts: c
            .mounts
            .iter()
            .map(|m| {
                let has = |o: &str| m.options.iter().any(|x| x == o);
                let propagation = if has("rshared") {
                    cri::MountPropagation::PropagationBidirectional
                } else if has("rslave") {
                    cri::MountPropagation::PropagationHostToContainer
                } else {
                    cri::MountPropagation::PropagationPrivate
                };
                cri::Mount {
                    container_path: m.destination.clone(),
                    host_path: m.source.clone(),
                    readonly: m.readonly,
                    recursive_read_only: has("rro"),
                    propagation: propagation as i32,
                    ..Default::default()
                }
            })
            .collect(),
        log_path: c.log_path,
        id: c.id,
        labels: c.labels,
        annotations: c.annotations,
        image_id: c.image_id,
        resources: None,
        user: None,
    }
}

fn nanos(t: std::time::SystemTime) -> i64 {
    i64::try_from(t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos()).unwrap_or(i64::MAX)
}

fn value(v: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value: v })
}

fn cpu(s: &Stats) -> cri::CpuUsage {
    cri::CpuUsage { timestamp: nanos(s.read_at), usage_core_nano_seconds: value(s.stats.cpu_usage_ns), usage_nano_cores: None }
}

fn memory(s: &Stats) -> cri::MemoryUsage {
    let (usage, limit) = (s.stats.memory_usage_bytes, s.stats.memory_limit_bytes);
    cri::MemoryUsage {
        timestamp: nanos(s.read_at),
        working_set_bytes: value(usage),
        available_bytes: (limit > 0).then(|| cri::UInt64Value { value: limit.saturating_sub(usage) }),
        usage_bytes: value(usage),
        rss_bytes: None,
        page_faults: None,
        major_page_faults: None,
    }
}

pub fn container_stats(c: &PodContainerView, s: Option<&Stats>) -> cri::ContainerStats {
    cri::ContainerStats {
        attributes: Some(cri::ContainerAttributes {
            id: c.id.clone(),
            metadata: Some(container_metadata(c)),
            labels: c.labels.clone(),
            annotations: c.annotations.clone(),
        }),
        cpu: s.map(cpu),
        memory: s.map(memory),
        writable_layer: None,
        swap: None,
    }
}

pub fn pod_stats(p: &PodStats) -> cri::PodSandboxStats {
    let pod = &p.pod;
    cri::PodSandboxStats {
        attributes: Some(cri::PodSandboxAttributes {
            id: pod.id.clone(),
            metadata: Some(pod_metadata(&pod.meta)),
            labels: pod.labels.clone(),
            annotations: pod.annotations.clone(),
        }),
        linux: Some(cri::LinuxPodSandboxStats {
            cpu: Some(cpu(&p.total)),
            memory: Some(memory(&p.total)),
            network: None,
            process: Some(cri::ProcessUsage { timestamp: nanos(p.total.read_at), process_count: value(p.total.stats.pids_current) }),
            containers: p.containers.iter().map(|(c, s)| container_stats(c, Some(s))).collect(),
        }),
        windows: None,
    }
}
