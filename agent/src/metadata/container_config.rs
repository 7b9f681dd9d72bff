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
}
