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
}

/// A mount added to the container (`-v SRC:DST[:ro]`, `--tmpfs DST`).
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

/// Resource limits; `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Memory limit in bytes (`--memory`).
    pub memory_bytes: Option<i64>,
    /// CPU limit in thousandths of a CPU (`--cpus 1.5` = 1500).
    pub cpu_millis: Option<u64>,
    /// Maximum number of processes (`--pids-limit`).
    pub pids_limit: Option<i64>,
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
}
