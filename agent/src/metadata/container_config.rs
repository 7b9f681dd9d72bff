//! What a user asks for when creating a container: the overrides on top of the
//! image's config. Persisted as-is in the container record (JSON).

use serde::{Deserialize, Serialize};

/// Network mode of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// A network namespace of its own holding only `lo`.
    #[default]
    None,
    /// The host's network namespace.
    Host,
    /// The network namespace of another container (its id).
    Container(String),
    /// A namespace of its own attached to `ContainerConfig::networks` (the
    /// default network when that is empty): what `run` does without `--net`.
    Networks,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Bind,
    Tmpfs,
    /// A named volume (`source` its name; empty in a request: a new
    /// anonymous volume), bound from its directory under the root.
    Volume,
}

/// A mount added to the container (`-v SRC:DST[:ro]`, `-v NAME:DST`, `--tmpfs DST`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    pub kind: MountKind,
    /// Host path for a bind mount; ignored for tmpfs.
    #[serde(default)]
    pub source: String,
    /// Absolute path inside the container.
    pub destination: String,
    #[serde(default)]
    pub readonly: bool,
    /// Extra mount options (`size=64m`, `mode=1777`, ...).
    #[serde(default)]
    pub options: Vec<String>,
    /// A volume: do not fill a new, empty volume with what the image holds
    /// at the destination (docker's `volume-nocopy`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_copy: bool,
}

/// When the agent starts a container again (`--restart`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartKind {
    /// Never.
    #[default]
    No,
    /// After every exit, and when the machine starts.
    Always,
    /// After every exit, and when the machine starts unless the user stopped it.
    UnlessStopped,
    /// After an exit with a non-zero code, at most `max_retries` times (0: no bound).
    OnFailure,
}

/// `--restart NAME[:MAX_RETRIES]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RestartPolicy {
    pub kind: RestartKind,
    pub max_retries: u32,
}

impl RestartPolicy {
    /// From the API's name ("", "no", "always", "unless-stopped", "on-failure").
    pub fn parse(name: &str, max_retries: u32) -> Result<Self, String> {
        let kind = match name {
            "" | "no" => RestartKind::No,
            "always" => RestartKind::Always,
            "unless-stopped" => RestartKind::UnlessStopped,
            "on-failure" => RestartKind::OnFailure,
            other => return Err(format!("unknown restart policy {other:?}: use no, always, unless-stopped or on-failure")),
        };
        if max_retries > 0 && kind != RestartKind::OnFailure {
            return Err(format!("a maximum retry count goes with on-failure only, not {name}"));
        }
        Ok(RestartPolicy { kind, max_retries })
    }

    pub fn name(&self) -> &'static str {
        match self.kind {
            RestartKind::No => "no",
            RestartKind::Always => "always",
            RestartKind::UnlessStopped => "unless-stopped",
            RestartKind::OnFailure => "on-failure",
        }
    }

    /// Whether an exit with `exit_code`, after `restarts` restarts, brings the
    /// container back. A container the user stopped never comes back by itself.
    pub fn restarts_after(&self, exit_code: i32, restarts: u32, stopped_by_user: bool) -> bool {
        if stopped_by_user {
            return false;
        }
        match self.kind {
            RestartKind::No => false,
            RestartKind::Always | RestartKind::UnlessStopped => true,
            RestartKind::OnFailure => exit_code != 0 && (self.max_retries == 0 || restarts < self.max_retries),
        }
    }

    /// Whether the container runs again when the agent starts: `first_boot`
    /// (the machine started: no task survived), or not (the agent alone
    /// restarted: exits it missed follow `restarts_after`).
    pub fn starts_at_boot(&self, first_boot: bool, stopped_by_user: bool) -> bool {
        match self.kind {
            RestartKind::Always => first_boot,
            RestartKind::UnlessStopped => first_boot && !stopped_by_user,
            RestartKind::No | RestartKind::OnFailure => false,
        }
    }
}

/// A health check, as docker's `Healthcheck`. In a request, what is unset
/// (an empty test, a zero) comes from the image's; in a record it is the
/// check that runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthCheck {
    /// `["CMD", ARG...]` or `["CMD-SHELL", COMMAND]`; `["NONE"]`: no check.
    pub test: Vec<String>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub start_period_ms: u64,
    pub retries: u32,
}

impl HealthCheck {
    pub const DEFAULT_INTERVAL_MS: u64 = 30_000;
    pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
    pub const DEFAULT_RETRIES: u32 = 3;

    /// The check that runs: `over`'s values where set, else `base`'s, else
    /// docker's defaults. None: no check (no test, or `NONE`).
    pub fn merged(base: Option<&HealthCheck>, over: Option<&HealthCheck>) -> Option<HealthCheck> {
        let pick = |f: fn(&HealthCheck) -> u64| over.map(f).filter(|v| *v > 0).or(base.map(f).filter(|v| *v > 0));
        let test = over.map(|o| o.test.clone()).filter(|t| !t.is_empty()).or(base.map(|b| b.test.clone()))?;
        if test.is_empty() || test[0] == "NONE" {
            return None;
        }
        Some(HealthCheck {
            test,
            interval_ms: pick(|h| h.interval_ms).unwrap_or(Self::DEFAULT_INTERVAL_MS),
            timeout_ms: pick(|h| h.timeout_ms).unwrap_or(Self::DEFAULT_TIMEOUT_MS),
            start_period_ms: pick(|h| h.start_period_ms).unwrap_or(0),
            retries: over
                .map(|o| o.retries)
                .filter(|r| *r > 0)
                .or(base.map(|b| b.retries).filter(|r| *r > 0))
                .unwrap_or(Self::DEFAULT_RETRIES),
        })
    }

    /// The command it runs in the container.
    pub fn command(&self) -> Option<Vec<String>> {
        match self.test.first().map(String::as_str) {
            Some("CMD") if self.test.len() > 1 => Some(self.test[1..].to_vec()),
            Some("CMD-SHELL") if self.test.len() == 2 => Some(vec!["/bin/sh".into(), "-c".into(), self.test[1].clone()]),
            _ => None,
        }
    }
}

/// Resource limits; `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Memory limit in bytes (`--memory`).
    pub memory_bytes: Option<i64>,
    /// CPU limit in thousandths of a CPU (`--cpus 1.5` = 1500).
    pub cpu_millis: Option<u64>,
    /// Maximum number of processes (`--pids-limit`).
    pub pids_limit: Option<i64>,
    /// Memory plus swap in bytes (None: twice the memory, docker's default; equal to the
    /// memory: no swap).
    #[serde(default)]
    pub memory_swap_bytes: Option<i64>,
    /// Relative CPU weight (`--cpu-shares`; cgroup v1 shares, 2 to 262144).
    #[serde(default)]
    pub cpu_shares: Option<u64>,
    /// CPUs and memory nodes it may use (`--cpuset-cpus 0-1`, `--cpuset-mems 0`).
    #[serde(default)]
    pub cpuset_cpus: Option<String>,
    #[serde(default)]
    pub cpuset_mems: Option<String>,
}

/// The overrides a container is created with. `None`/empty means "from the image".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerConfig {
    /// Replaces the image's `Cmd`.
    pub command: Option<Vec<String>>,
    /// Replaces the image's `Entrypoint` (an empty list clears it; the image's `Cmd` is then dropped too, as in docker).
    pub entrypoint: Option<Vec<String>>,
    /// `KEY=VALUE` entries added to (and overriding) the image's `Env`.
    pub env: Vec<String>,
    /// Replaces the image's `WorkingDir`.
    pub workdir: Option<String>,
    /// `UID[:GID]` or `NAME[:GROUP]`; replaces the image's `User`.
    pub user: Option<String>,
    /// Host name inside the container (default: the first 12 characters of the ID).
    pub hostname: Option<String>,
    pub mounts: Vec<MountSpec>,
    pub resources: Resources,
    pub network: NetworkMode,
    /// Allocate a pseudo-terminal for the init process.
    pub tty: bool,
    /// Keep the init process's stdin open (attachable).
    pub stdin: bool,
    /// With `stdin`: the first attached client that ends its input closes the process's
    /// stdin (the CRI's `stdin_once`, docker's attached `run -i`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stdin_once: bool,
    /// Mount the root filesystem read-only.
    pub read_only: bool,
    /// All capabilities, no masked paths, all devices.
    pub privileged: bool,
    /// Capabilities to add (`NET_ADMIN` or `CAP_NET_ADMIN`, or `ALL`).
    pub cap_add: Vec<String>,
    /// Capabilities to drop (`ALL` drops every default one).
    pub cap_drop: Vec<String>,
    /// Delete the container when its main process exits.
    pub auto_remove: bool,
    /// The networks joined (`--net NAME`, with aliases and a fixed address), in order.
    pub networks: Vec<crate::network::EndpointSpec>,
    /// Published ports (`-p`, and `-P` resolved against the image's exposed ports).
    pub ports: Vec<crate::network::PortSpec>,
    /// `-P`: every port the image exposes is added to `ports` at create.
    pub publish_all: bool,
    /// `--dns`, `--dns-search`, `--dns-option`.
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    /// `--add-host NAME:IP`.
    pub extra_hosts: Vec<String>,
    /// `--init`: berth-init runs as PID 1 and runs the command as its child.
    pub init: bool,
    /// `--stop-signal`: the signal `stop` sends first (else the image's StopSignal, else SIGTERM).
    pub stop_signal: Option<String>,
    /// `--stop-timeout`: seconds `stop` waits before SIGKILL when the caller names none.
    pub stop_timeout: Option<u32>,
    /// `--restart`.
    pub restart: RestartPolicy,
    /// `--health-*` (in a request; the check that runs, in a record).
    pub healthcheck: Option<HealthCheck>,
    /// `--shm-size`: bytes of /dev/shm (None: 64 MiB).
    pub shm_size: Option<u64>,
    /// A directory on the host bound at /dev/shm instead of a tmpfs of the container's
    /// own: its pod's, shared by the pod's containers as their IPC namespace is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_source: Option<String>,
    /// `--ulimit NAME=SOFT[:HARD]`.
    pub ulimits: Vec<Ulimit>,
    /// `--sysctl KEY=VALUE`: namespaced kernel parameters only.
    pub sysctls: std::collections::BTreeMap<String, String>,
    /// `--group-add`: more groups of its processes (names from the image's /etc/group, or numbers).
    pub group_add: Vec<String>,
    /// Only the user's own group and `group_add`: not the groups the image's /etc/group
    /// lists the user in (the CRI's `SupplementalGroupsPolicy` Strict).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub groups_strict: bool,
    /// `--pid host`: the host's process namespace.
    pub pid_host: bool,
    /// `--ipc host`: the host's IPC namespace.
    pub ipc_host: bool,
    /// `--pid container:NAME`: the process namespace of that container (its id), joined
    /// when the task starts (the pod's, for a pod that shares one).
    pub pid_container: Option<String>,
    /// `--ipc container:NAME`: that container's IPC namespace (a pod's containers share
    /// their pod's).
    pub ipc_container: Option<String>,
    /// `--security-opt seccomp=...`: empty, the default profile; "unconfined",
    /// none; else a profile's JSON (see `container::seccomp`).
    pub seccomp: String,
    /// `--security-opt no-new-privileges[=BOOL]`; unset: on, except for a
    /// privileged container.
    pub no_new_privileges: Option<bool>,
    /// `--security-opt apparmor=PROFILE` (accepted where AppArmor is enabled).
    pub apparmor: String,
    /// `--device HOST[:CONTAINER][:rwm]`: host devices made in the container.
    pub devices: Vec<DeviceMapping>,
    /// `--cgroupns private`: a cgroup namespace of its own (default: the host's).
    pub cgroupns_private: bool,
    /// The paths made unreadable and read-only in the container, instead of docker's lists
    /// (the kubelet names its own; an empty list, none).
    pub masked_paths: Option<Vec<String>>,
    pub readonly_paths: Option<Vec<String>>,
    /// `--cgroup-parent`: the cgroup (an absolute path in each hierarchy) the container's
    /// own goes under, instead of `/berth/NAMESPACE` (a kubelet's pod cgroup).
    pub cgroup_parent: Option<String>,
    /// Where the init's CRI log is written instead of the container's directory, rotated
    /// by whoever reads it there (the kubelet, which renames it and asks for a reopen).
    pub log_path: Option<String>,
}

/// A host device given to a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceMapping {
    pub host_path: String,
    /// Empty: the host path.
    #[serde(default)]
    pub container_path: String,
    /// Some of "rwm"; empty: "rwm".
    #[serde(default)]
    pub permissions: String,
}

/// A resource limit (`--ulimit nofile=1024:4096`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    /// `nofile`, `nproc`, `core`, ... (setrlimit's names without RLIMIT_).
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_decide_as_docker_does() {
        let p = |n: &str, m: u32| RestartPolicy::parse(n, m).unwrap();
        assert!(!p("no", 0).restarts_after(1, 0, false));
        assert!(p("always", 0).restarts_after(0, 7, false));
        assert!(p("unless-stopped", 0).restarts_after(0, 0, false));
        assert!(!p("always", 0).restarts_after(0, 0, true), "a stop by the user is never undone");
        assert!(!p("on-failure", 0).restarts_after(0, 0, false));
        assert!(p("on-failure", 0).restarts_after(3, 100, false));
        assert!(p("on-failure", 2).restarts_after(3, 1, false));
        assert!(!p("on-failure", 2).restarts_after(3, 2, false));
        assert!(p("always", 0).starts_at_boot(true, true));
        assert!(!p("unless-stopped", 0).starts_at_boot(true, true));
        assert!(p("unless-stopped", 0).starts_at_boot(true, false));
        assert!(!p("always", 0).starts_at_boot(false, false));
        assert!(!p("on-failure", 0).starts_at_boot(true, false));
        assert!(RestartPolicy::parse("sometimes", 0).is_err());
        assert!(RestartPolicy::parse("always", 3).is_err());
    }

    #[test]
    fn health_checks_merge_flags_over_the_image_over_defaults() {
        let image = HealthCheck { test: vec!["CMD".into(), "true".into()], interval_ms: 5000, retries: 2, ..Default::default() };
        let flags = HealthCheck { timeout_ms: 1000, ..Default::default() };
        let m = HealthCheck::merged(Some(&image), Some(&flags)).unwrap();
        assert_eq!((m.interval_ms, m.timeout_ms, m.retries, m.start_period_ms), (5000, 1000, 2, 0));
        assert_eq!(m.command().unwrap(), ["true"]);
        let none = HealthCheck { test: vec!["NONE".into()], ..Default::default() };
        assert_eq!(HealthCheck::merged(Some(&image), Some(&none)), None);
        assert_eq!(HealthCheck::merged(None, None), None);
        let shell = HealthCheck { test: vec!["CMD-SHELL".into(), "exit 1".into()], ..Default::default() };
        let m = HealthCheck::merged(None, Some(&shell)).unwrap();
        assert_eq!((m.interval_ms, m.retries), (30_000, 3));
        assert_eq!(m.command().unwrap(), ["/bin/sh", "-c", "exit 1"]);
    }
}
