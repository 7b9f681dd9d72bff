//! berthd configuration: flags, then an optional TOML file, then defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;

use crate::image::Limits;

pub const DEFAULT_ROOT: &str = "/var/lib/berth";
pub const DEFAULT_STATE: &str = "/run/berth";
/// The CRI streaming server's address: loopback, any free port.
pub const DEFAULT_STREAM_ADDRESS: &str = "127.0.0.1:0";

/// berthd: the Berth container node agent.
///
/// Manages this machine's images (pull, push, import, export, build),
/// containers (run through an OCI runtime, one shim each, with their
/// writable layers, networks and volumes) and the store under them, and
/// serves it all over gRPC on a Unix socket. `berthctl` is its
/// command-line client; clients in other languages use the same API.
#[derive(Debug, Parser)]
#[command(name = "berthd", version, about, long_about)]
pub struct Args {
    /// Directory for persistent data: content, snapshots, metadata [default: /var/lib/berth]
    #[arg(long, env = "BERTH_ROOT")]
    pub root: Option<PathBuf>,
    /// Directory for runtime state: locks, sockets [default: /run/berth]
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Unix socket to listen on [default: <state>/berthd.sock]
    #[arg(short, long, env = "BERTH_ADDRESS")]
    pub address: Option<PathBuf>,
    /// Snapshotter: overlayfs or native [default: overlayfs when the kernel and
    /// the root's filesystem support it, native otherwise]
    #[arg(long, value_parser = ["overlayfs", "native"])]
    pub snapshotter: Option<String>,
    /// TOML configuration file; flags override it
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Log level or filter (error, warn, info, debug, trace, or a RUST_LOG-style
    /// filter) [default: RUST_LOG, else info]
    #[arg(long)]
    pub log_level: Option<String>,
    /// Log format [default: text]
    #[arg(long, value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// OCI runtime containers use unless they name one: runc, crun, a name
    /// from the config's [runtimes] table, or a path [default: runc]
    #[arg(long)]
    pub runtime: Option<String>,
    /// Group whose members may use the socket, as docker's "docker" group:
    /// the socket is then root:GROUP, mode 0660 [default: root only]
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Unix socket of the Kubernetes CRI (runtime.v1), for a kubelet's
    /// --container-runtime-endpoint [default: <state>/cri.sock]
    #[arg(long, value_name = "PATH")]
    pub cri_address: Option<PathBuf>,
    /// Serve no CRI socket
    #[arg(long, conflicts_with = "cri_address")]
    pub no_cri: bool,
    /// HOST:PORT of the CRI's streaming server (the URLs of exec, attach and
    /// port-forward; port 0 picks a free one) [default: 127.0.0.1:0]
    #[arg(long, value_name = "HOST:PORT")]
    pub stream_address: Option<String>,
}

/// An OCI runtime the agent can use, from the `[runtimes.NAME]` table.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RuntimeEntry {
    /// The binary: a path, or a name looked up in PATH.
    pub path: String,
    /// Run it where the cgroup2 mount of a hybrid cgroup layout
    /// (/sys/fs/cgroup/unified) is hidden; crun 1.8 refuses that layout.
    #[serde(default)]
    pub hide_cgroup2: bool,
}

/// The TOML configuration file. Unknown keys are an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub root: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub address: Option<PathBuf>,
    /// Group whose members may use the socket (root:GROUP, 0660).
    pub group: Option<String>,
    /// The CRI socket [default: <state>/cri.sock].
    pub cri_address: Option<PathBuf>,
    /// Whether to serve the CRI (default true).
    pub cri: Option<bool>,
    /// The CRI's streaming server [default: 127.0.0.1:0].
    pub stream_address: Option<String>,
    pub snapshotter: Option<String>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    /// Most bytes one layer may decompress to.
    pub max_layer_size: Option<u64>,
    /// Most bytes one import archive may decompress to.
    pub max_import_size: Option<u64>,
    /// Layers unpacked in parallel.
    pub unpack_parallelism: Option<usize>,
    /// Imports and pulls running at once (default 4); more wait, and say so.
    pub max_transfers: Option<usize>,
    /// Most entries (files, directories, links: inodes) one layer may hold (default 500,000).
    pub max_layer_entries: Option<u64>,
    /// The OCI runtime containers use unless they name one.
    pub default_runtime: Option<String>,
    /// OCI runtimes by name, added to the built-in runc and crun.
    #[serde(default)]
    pub runtimes: BTreeMap<String, RuntimeEntry>,
    /// The berth-shim binary [default: next to berthd, else in PATH].
    pub shim_binary: Option<PathBuf>,
    /// A container log file is rotated at this size (bytes) ...
    pub log_max_size: Option<u64>,
    /// ... and this many files are kept in all.
    pub log_max_files: Option<u32>,
    /// Seconds between two checks that every shim answers (default 10); a
    /// shim that does not shows its container's state as "unknown".
    pub shim_check_interval: Option<u64>,
    /// Per-registry settings, by host as written in image names:
    /// `[registries."registry.example:5000"]` with `insecure`, `mirrors`, `ca`, `token_hosts`.
    #[serde(default)]
    pub registries: crate::registry::RegistriesConfig,
    /// A registry transfer that moves no byte for this many seconds fails (default 30).
    pub registry_stall_timeout: Option<u64>,
    /// Compression of the layers builds make: "zstd" (default: fast) or
    /// "gzip" (for clients older than docker 23 or containerd 1.5).
    pub build_layer_compression: Option<String>,
    /// Container networks: `[network]` with `conf_dir`, `plugin_dirs`,
    /// `default_bridge`, `default_subnet`.
    #[serde(default)]
    pub network: NetworkFile,
}

/// The `[network]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkFile {
    /// CNI configuration lists [default: /etc/berth/cni/net.d].
    pub conf_dir: Option<PathBuf>,
    /// Where CNI plugins are looked for [default: /usr/lib/cni, /opt/cni/bin].
    pub plugin_dirs: Option<Vec<PathBuf>>,
    /// The default network's bridge interface [default: berth0].
    pub default_bridge: Option<String>,
    /// The default network's subnet [default: 10.77.0.0/16].
    pub default_subnet: Option<String>,
    /// Where the agent's networks keep their address allocations [default: /run/berth/ipam].
    pub ipam_dir: Option<PathBuf>,
    /// Namespaces kept attached to the default network ahead of time [default: 4; 0: none].
    pub pool_size: Option<usize>,
}

/// How containers run.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub default_runtime: String,
    pub runtimes: BTreeMap<String, RuntimeEntry>,
    pub shim_binary: PathBuf,
    pub log_max_size: u64,
    pub log_max_files: u32,
    /// How often every shim is asked whether it answers.
    pub shim_check_interval: std::time::Duration,
}

impl RuntimeConfig {
    fn new() -> Self {
        // crun 1.8 refuses a hybrid layout (v1 controllers plus a cgroup2
        // mount holding a controller); it runs where that mount is hidden.
        let hybrid = is_cgroup2_mount(Path::new("/sys/fs/cgroup/unified"));
        let runtimes = BTreeMap::from([
            ("runc".to_owned(), RuntimeEntry { path: "runc".into(), hide_cgroup2: false }),
            ("crun".to_owned(), RuntimeEntry { path: "crun".into(), hide_cgroup2: hybrid }),
        ]);
        RuntimeConfig {
            default_runtime: "runc".into(),
            runtimes,
            shim_binary: default_shim(),
            log_max_size: 10 << 20,
            log_max_files: 3,
            shim_check_interval: std::time::Duration::from_secs(10),
        }
    }
}

fn is_cgroup2_mount(p: &Path) -> bool {
    // CGROUP2_SUPER_MAGIC
    rustix::fs::statfs(p).map(|s| s.f_type as u64 == 0x6367_7270).unwrap_or(false)
}

/// `berth-shim` next to the running binary, else the name (looked up in PATH).
fn default_shim() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("berth-shim")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("berth-shim"))
}

#[derive(Debug, Clone)]
pub struct Config {
    pub root: PathBuf,
    pub state: PathBuf,
    pub address: PathBuf,
    /// The socket's group (its members may call the agent); None: root only.
    pub socket_group: Option<String>,
    /// The Kubernetes CRI's socket (root only); None: no CRI.
    pub cri_address: Option<PathBuf>,
    /// HOST:PORT of the CRI's streaming server (port 0: any free one).
    pub stream_address: String,
    /// None: detect.
    pub snapshotter: Option<String>,
    pub log_level: Option<String>,
    pub log_format: String,
    pub limits: Limits,
    pub runtime: RuntimeConfig,
    pub registries: crate::registry::RegistriesConfig,
    pub registry_stall_timeout: std::time::Duration,
    /// How build layers are compressed.
    pub build_layer_compression: LayerCompression,
    pub network: crate::network::NetworkConfig,
}

/// How the layers builds make are compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LayerCompression {
    /// zstd level 1: fast on every input (gzip spends 0.5 s on 24 MB that does not compress).
    #[default]
    Zstd,
    Gzip,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Defaults under `root` and `state`, as the tests use them.
    pub fn with_dirs(root: &Path, state: &Path) -> Self {
        Self {
            root: root.to_owned(),
            state: state.to_owned(),
            address: state.join("berthd.sock"),
            socket_group: None,
            cri_address: Some(state.join("cri.sock")),
            stream_address: DEFAULT_STREAM_ADDRESS.into(),
            snapshotter: None,
            log_level: None,
            log_format: "text".into(),
            limits: Limits::default(),
            runtime: RuntimeConfig::new(),
            registries: Default::default(),
            registry_stall_timeout: crate::registry::client::STALL_TIMEOUT,
            build_layer_compression: LayerCompression::default(),
            network: crate::network::NetworkConfig::default(),
        }
    }

    pub fn from_args(args: Args) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
                toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Parse { path: path.clone(), message: e.to_string() })?
            }
            None => FileConfig::default(),
        };
        let root = args.root.or(file.root).unwrap_or_else(|| DEFAULT_ROOT.into());
        let state = args.state.or(file.state).unwrap_or_else(|| DEFAULT_STATE.into());
        let mut c = Config::with_dirs(&root, &state);
        if let Some(a) = args.address.or(file.address) {
            c.address = a;
        }
        c.socket_group = args.group.or(file.group).filter(|g| !g.is_empty());
        if let Some(a) = args.cri_address.or(file.cri_address) {
            c.cri_address = Some(a);
        }
        if args.no_cri || file.cri == Some(false) {
            c.cri_address = None;
        }
        if let Some(a) = args.stream_address.or(file.stream_address) {
            if a.parse::<std::net::SocketAddr>().is_err() {
                return Err(ConfigError::Invalid(format!("stream address {a:?} is not HOST:PORT (an IP address and a port)")));
            }
            c.stream_address = a;
        }
        c.snapshotter = args.snapshotter.or(file.snapshotter);
        if let Some(s) = &c.snapshotter {
            if s != "overlayfs" && s != "native" {
                return Err(ConfigError::Invalid(format!("unknown snapshotter {s:?}: use overlayfs or native")));
            }
        }
        c.log_level = args.log_level.or(file.log_level);
        c.log_format = args.log_format.or(file.log_format).unwrap_or_else(|| "text".into());
        if c.log_format != "text" && c.log_format != "json" {
            return Err(ConfigError::Invalid(format!("unknown log format {:?}: use text or json", c.log_format)));
        }
        if let Some(m) = file.max_layer_size {
            c.limits.max_layer_bytes = m;
        }
        if let Some(m) = file.max_import_size {
            c.limits.max_import_bytes = m;
        }
        if let Some(p) = file.unpack_parallelism {
            c.limits.unpack_parallelism = p.clamp(1, 16);
        }
        if let Some(t) = file.max_transfers {
            c.limits.max_transfers = t.clamp(1, 64);
        }
        if let Some(n) = file.max_layer_entries {
            c.limits.max_layer_entries = n.max(1);
        }
        c.runtime.runtimes.extend(file.runtimes);
        c.registries = file.registries;
        if let Some(t) = file.registry_stall_timeout {
            c.registry_stall_timeout = std::time::Duration::from_secs(t.clamp(1, 3600));
        }
        c.build_layer_compression = match file.build_layer_compression.as_deref() {
            None | Some("zstd") => LayerCompression::Zstd,
            Some("gzip") => LayerCompression::Gzip,
            Some(o) => return Err(ConfigError::Invalid(format!("build_layer_compression {o:?}: use zstd or gzip"))),
        };
        let n = file.network;
        if let Some(d) = n.conf_dir {
            c.network.conf_dir = d;
        }
        if let Some(d) = n.plugin_dirs {
            c.network.plugin_dirs = d;
        }
        if let Some(p) = n.pool_size {
            c.network.pool_size = p.min(64);
        }
        if let Some(d) = n.ipam_dir {
            c.network.ipam_dir = d;
        }
        if let Some(b) = n.default_bridge {
            c.network.default_bridge = b;
        }
        if let Some(s) = n.default_subnet {
            crate::network::subnet::Subnet::parse(&s).map_err(|e| ConfigError::Invalid(format!("network.default_subnet: {e}")))?;
            c.network.default_subnet = s;
        }
        if let Some(r) = args.runtime.or(file.default_runtime) {
            c.runtime.default_runtime = r;
        }
        if let Some(p) = file.shim_binary {
            c.runtime.shim_binary = p;
        }
        if let Some(m) = file.log_max_size {
            c.runtime.log_max_size = m;
        }
        if let Some(m) = file.log_max_files {
            c.runtime.log_max_files = m.clamp(1, 100);
        }
        if let Some(s) = file.shim_check_interval {
            c.runtime.shim_check_interval = std::time::Duration::from_secs(s.clamp(1, 3600));
        }
        for p in [&c.root, &c.state, &c.address] {
            if !p.is_absolute() {
                return Err(ConfigError::Invalid(format!("{} must be an absolute path", p.display())));
            }
        }
        Ok(c)
    }
}
