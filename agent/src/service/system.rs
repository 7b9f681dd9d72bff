//! The agent itself: its version and what it holds.

use std::sync::Arc;

use super::Core;
use super::{blocking, Error};

/// The agent's version.
#[derive(Debug, Clone)]
pub struct Version {
    pub version: &'static str,
    pub revision: &'static str,
    pub api_version: &'static str,
}

/// What `berthctl info` shows.
#[derive(Debug, Clone)]
pub struct Info {
    pub version: Version,
    pub root: String,
    pub state: String,
    pub address: String,
    pub snapshotter: &'static str,
    pub snapshotter_reason: String,
    pub namespaces: Vec<String>,
    pub images: usize,
    pub snapshots: usize,
    pub blobs: usize,
    pub content_size: u64,
    pub kernel: String,
    pub pid: u32,
    pub containers: usize,
    pub containers_running: usize,
    pub default_runtime: String,
    pub runtimes: Vec<String>,
    pub uptime: std::time::Duration,
}

#[derive(Clone)]
pub struct SystemService {
    core: Arc<Core>,
}

pub fn version() -> Version {
    Version { version: env!("CARGO_PKG_VERSION"), revision: option_env!("BERTH_REVISION").unwrap_or(""), api_version: "v1" }
}

impl SystemService {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        SystemService { core }
    }

    pub fn version(&self) -> Version {
        version()
    }

    /// The agent's configuration and what namespace `ns` holds.
    pub async fn info(&self, ns: &str) -> Result<Info, Error> {
        let (core, ns) = (self.core.clone(), ns.to_owned());
        blocking(move || {
            let blobs = core.content.list()?;
            let containers = core.meta.containers(&ns)?;
            let runtime = core.tasks.config();
            Ok(Info {
                version: version(),
                root: core.config.root.display().to_string(),
                state: core.config.state.display().to_string(),
                address: core.config.address.display().to_string(),
                snapshotter: core.snapshots.snapshotter_name(),
                snapshotter_reason: core.snapshotter_reason.clone(),
                namespaces: core.meta.namespaces()?,
                images: core.meta.images(&ns)?.len(),
                snapshots: core.meta.snapshots(&ns)?.len(),
                blobs: blobs.len(),
                content_size: blobs.iter().map(|b| b.size).sum(),
                kernel: rustix::system::uname().release().to_string_lossy().into_owned(),
                pid: std::process::id(),
                containers: containers.len(),
                containers_running: containers.iter().filter(|c| core.tasks.is_running(&ns, &c.id)).count(),
                default_runtime: runtime.default_runtime.clone(),
                runtimes: runtime.runtimes.keys().cloned().collect(),
                uptime: core.started.elapsed(),
            })
        })
        .await
    }
}
