//! The agent's wiring: open the stores, recover from a crash, and build the
//! application services (`service/`) that every API surface calls.
//!
//! Nothing here is a use case: the stores and managers go into a
//! [`Core`], which only the service layer reads.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::container::Containers;
use crate::content::ContentStore;
use crate::events::Events;
use crate::image::Images;
use crate::metadata::Metadata;
use crate::registry::Registries;
use crate::runtime::Tasks;
use crate::service::{Core, Services};
use crate::snapshot::{native::Native, overlay, overlay::Overlay, Snapshots, Snapshotter};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("preparing {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("overlayfs snapshotter requested but not usable here: {0}")]
    NoOverlay(String),
    #[error(transparent)]
    Metadata(#[from] crate::metadata::MetadataError),
    #[error(transparent)]
    Content(#[from] crate::content::ContentError),
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error(transparent)]
    Container(#[from] crate::container::ContainerError),
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    #[error(transparent)]
    Volume(#[from] crate::volume::VolumeError),
}

/// Create `path` (and its parents) and set its mode.
pub(crate) fn mkdir(path: &Path, mode: u32) -> Result<(), AgentError> {
    let io = |source| AgentError::Io { path: path.to_owned(), source };
    fs::create_dir_all(path).map_err(io)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io)
}

/// A running agent: its core and the services built on it.
pub struct Agent {
    core: Arc<Core>,
    services: Arc<Services>,
}

fn choose_snapshotter(cfg: &Config) -> Result<(Box<dyn Snapshotter>, String), AgentError> {
    let base = cfg.root.join("snapshots");
    mkdir(&base, 0o700)?;
    let support = overlay::check_support(&base);
    let (name, reason) = match (cfg.snapshotter.as_deref(), support) {
        (Some("native"), _) => ("native", "configured".to_owned()),
        (Some(_), Ok(())) => ("overlayfs", "configured".to_owned()),
        (Some(_), Err(why)) => return Err(AgentError::NoOverlay(why)),
        (None, Ok(())) => ("overlayfs", "detected: overlayfs works here".to_owned()),
        (None, Err(why)) => ("native", format!("detected: overlayfs unusable ({why})")),
    };
    tracing::info!(snapshotter = name, reason = %reason, "snapshotter chosen");
    let sn: Box<dyn Snapshotter> =
        if name == "native" { Box::new(Native::new(base.join("native"))?) } else { Box::new(Overlay::new(base.join("overlayfs"))?) };
    Ok((sn, reason))
}

impl Agent {
    /// Open the stores, recover from any crash, and build the services.
    /// Blocking: call it off the async threads.
    pub fn open(config: Config) -> Result<Agent, AgentError> {
        let (sn, snapshotter_reason) = choose_snapshotter(&config)?;
        // What only root reads: the containers' logs and the tasks' bundles
        // and runtime state (modes set again at every start).
        mkdir(&config.root.join("containers"), 0o700)?;
        mkdir(&config.state.join("tasks"), 0o700)?;
        mkdir(&config.state.join("runtime"), 0o700)?;
        let meta = Arc::new(Metadata::open(&config.root.join("metadata.redb"), sn.name())?);
        let content = Arc::new(ContentStore::open(&config.root)?);
        let snapshots = Arc::new(Snapshots::new(meta.clone(), sn));
        let removed = snapshots.recover()?;
        let images = Arc::new(Images::new(meta.clone(), content.clone(), snapshots.clone(), config.limits.clone()));
        let volumes = Arc::new(crate::volume::Volumes::open(meta.clone(), &config.root)?);
        let containers = Arc::new(Containers::new(
            meta.clone(),
            content.clone(),
            images.clone(),
            snapshots.clone(),
            &config.root,
            config.runtime.default_runtime.clone(),
            crate::container::init::install(&config.root).map_err(|source| AgentError::Io { path: config.root.join("bin"), source })?,
            volumes.clone(),
        ));
        let orphans = containers.recover()?;
        if orphans > 0 {
            tracing::info!(removed = orphans, "removed writable layers and files of containers that no longer exist");
        }
        let events = Events::new();
        let networks = crate::network::Networks::new(config.network.clone(), &config.state)?;
        let tasks =
            Tasks::new(&config.state, config.runtime.clone(), containers.clone(), snapshots.clone(), networks.clone(), events.clone());
        // A collection that fails (an unreadable blob) must not keep the agent from starting.
        match images.gc() {
            Ok(gc) => tracing::info!(
                stale_snapshot_dirs = removed,
                blobs_removed = gc.blobs_removed,
                snapshots_removed = gc.snapshots_removed,
                "stores opened"
            ),
            Err(e) => tracing::warn!(error = %e, stale_snapshot_dirs = removed, "stores opened; garbage collection failed"),
        }
        let registries = Arc::new(Registries::new(
            images.clone(),
            content.clone(),
            config.registries.clone(),
            config.limits.unpack_parallelism,
            config.registry_stall_timeout,
        ));
        let core = Arc::new(Core {
            config,
            meta,
            content,
            snapshots,
            images,
            containers,
            tasks,
            networks,
            volumes,
            events,
            registries,
            snapshotter_reason,
            started: Instant::now(),
            health: Default::default(),
        });
        let services = Arc::new(Services::new(core.clone()));
        Ok(Agent { core, services })
    }

    /// What a graceful stop releases: the pool of namespaces attached
    /// ahead of time (bounded; containers keep theirs).
    pub async fn stop(&self) {
        if tokio::time::timeout(std::time::Duration::from_secs(10), self.core.networks.release_pool()).await.is_err() {
            tracing::warn!("releasing the pooled network namespaces took too long");
        }
    }

    /// The services every API surface calls.
    pub fn services(&self) -> Arc<Services> {
        self.services.clone()
    }

    pub fn config(&self) -> &Config {
        &self.core.config
    }

    /// Find the shims of containers that kept running while the agent was
    /// away, start the background work of the services (removing `--rm`
    /// containers after their exit), and remove what interrupted builds
    /// left. Returns how many tasks were found.
    pub async fn start(&self) -> Result<usize, AgentError> {
        let meta = self.core.meta.clone();
        let known = tokio::task::spawn_blocking(move || meta.all_containers())
            .await
            .map_err(|e| AgentError::Io { path: self.core.config.root.clone(), source: std::io::Error::other(e.to_string()) })??;
        if crate::runtime::find_binary(&self.core.config.runtime.shim_binary.to_string_lossy()).is_none() {
            tracing::warn!(
                shim = %self.core.config.runtime.shim_binary.display(),
                "berth-shim not found next to berthd nor in PATH: containers cannot start (build it with `cargo build --release`)"
            );
        }
        self.services.start_background();
        let found = self.core.tasks.recover(&known).await;
        // The machine started (the state directory holds no mark of an
        // earlier agent of this boot: a tmpfs is empty, and a state directory
        // on disk keeps the boot id of the agent before): restart policies
        // start their containers.
        let booted = self.core.config.state.join("booted");
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        // (An empty mark is an older agent's, which wrote no id: the same boot.)
        let first_boot = std::fs::read_to_string(&booted).map_or(true, |seen| !seen.trim().is_empty() && seen.trim() != boot_id.trim());
        // The networks' host rules (isolation, forwarding, masquerade) before any container
        // starts again (a restart policy, the pool of namespaces).
        let networks = self.core.networks.clone();
        if tokio::task::spawn_blocking(move || networks.sync_firewall()).await.is_err() {
            tracing::warn!("the networks' host rules were not set");
        }
        self.services.containers.start_policies_at_boot(first_boot);
        self.services.containers.start_health_checks();
        let mark = || {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            // Root's only, as everything the agent keeps.
            let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&booted)?;
            f.write_all(boot_id.trim().as_bytes())
        };
        if let Err(e) = mark() {
            tracing::warn!(path = %booted.display(), error = %e, "marking the state directory");
        }
        tokio::spawn(self.core.tasks.clone().check_shims(self.core.config.runtime.shim_check_interval));
        tokio::spawn(crate::memory::trim_now_and_then());
        // Attachments whose task is gone (it ended, or its container was
        // removed, while the agent was down) are released.
        let tasks = self.core.tasks.clone();
        let released = self.core.networks.reconcile(&|ns, id| tasks.has_task(ns, id)).await;
        if released > 0 {
            tracing::info!(released, "released the networks of tasks that ended while the agent was down");
        }
        // Say now what containers on the default network will lack.
        let default = [crate::network::EndpointSpec { network: crate::network::DEFAULT_NETWORK.into(), ..Default::default() }];
        if let Err(e) = self.core.networks.check(&default, &[]) {
            tracing::warn!(error = %e, "containers on the default network cannot start");
        }
        if crate::runtime::find_binary("iptables").is_none() {
            tracing::warn!(
                "iptables not found: networks are not isolated from one another, containers do not reach beyond the host and ports cannot be published (apt-get install iptables)"
            );
        }
        self.core.networks.start_pool();
        // The name servers of the networks whose containers run on.
        self.core.networks.update_dns().await;
        // Once the tasks are found (a build's RUN step among them, its shim
        // adopted so it can be killed) and before anything is served.
        self.services.build.recover().await;
        Ok(found)
    }
}
