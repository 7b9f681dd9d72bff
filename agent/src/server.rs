//! Start-up, the listening socket, and serving until shutdown.

use std::fs;
use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long in-flight calls may run on after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

use berth_api::v1;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::api;
use crate::config::Config;
use crate::container::Containers;
use crate::content::ContentStore;
use crate::events::Events;
use crate::image::Images;
use crate::metadata::Metadata;
use crate::runtime::Tasks;
use crate::snapshot::{native::Native, overlay, overlay::Overlay, Snapshots, Snapshotter};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("preparing {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("another berthd is already using root {0} (lock held)")]
    Locked(PathBuf),
    #[error("{0}")]
    Socket(String),
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
    #[error("serving: {0}")]
    Transport(#[from] tonic::transport::Error),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ServerError + '_ {
    move |source| ServerError::Io { path: path.to_owned(), source }
}

/// Everything the services share.
pub struct Agent {
    pub config: Config,
    pub meta: Arc<Metadata>,
    pub content: Arc<ContentStore>,
    pub snapshots: Arc<Snapshots>,
    pub images: Arc<Images>,
    pub containers: Arc<Containers>,
    pub tasks: Arc<Tasks>,
    pub events: Events,
    pub registries: Arc<crate::registry::Registries>,
    pub snapshotter_reason: String,
    pub started: Instant,
}

fn mkdir(path: &Path, mode: u32) -> Result<(), ServerError> {
    fs::create_dir_all(path).map_err(io_err(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

/// Hold an exclusive lock on `<root>/berthd.lock` for the life of the agent.
fn lock_root(root: &Path) -> Result<fs::File, ServerError> {
    let path = root.join("berthd.lock");
    let f = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io_err(&path))?;
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(f),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(ServerError::Locked(root.to_owned())),
        Err(e) => Err(ServerError::Io { path, source: e.into() }),
    }
}

fn choose_snapshotter(cfg: &Config) -> Result<(Box<dyn Snapshotter>, String), ServerError> {
    let base = cfg.root.join("snapshots");
    mkdir(&base, 0o700)?;
    let support = overlay::check_support(&base);
    let (name, reason) = match (cfg.snapshotter.as_deref(), support) {
        (Some("native"), _) => ("native", "configured".to_owned()),
        (Some(_), Ok(())) => ("overlayfs", "configured".to_owned()),
        (Some(_), Err(why)) => return Err(ServerError::NoOverlay(why)),
        (None, Ok(())) => ("overlayfs", "detected: overlayfs works here".to_owned()),
        (None, Err(why)) => ("native", format!("detected: overlayfs unusable ({why})")),
    };
    tracing::info!(snapshotter = name, reason = %reason, "snapshotter chosen");
    let sn: Box<dyn Snapshotter> =
        if name == "native" { Box::new(Native::new(base.join("native"))?) } else { Box::new(Overlay::new(base.join("overlayfs"))?) };
    Ok((sn, reason))
}

/// Bind the socket, refusing a symlink, a non-socket file, or a socket another agent answers on.
fn bind_socket(path: &Path) -> Result<UnixListener, ServerError> {
    if let Some(parent) = path.parent() {
        if !parent.exists() {
            mkdir(parent, 0o711)?;
        }
    }
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(ServerError::Socket(format!("{} is a symlink; refusing to use it as the socket", path.display())))
        }
        Ok(m) if !m.file_type().is_socket() => {
            return Err(ServerError::Socket(format!("{} exists and is not a socket; refusing to replace it", path.display())))
        }
        Ok(_) => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServerError::Socket(format!("another agent is listening on {}", path.display())));
            }
            fs::remove_file(path).map_err(io_err(path))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ServerError::Io { path: path.to_owned(), source: e }),
    }
    let listener = UnixListener::bind(path).map_err(io_err(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o660)).map_err(io_err(path))?;
    Ok(listener)
}

/// Open the stores, recover from any crash, and build the shared state.
pub fn open(config: Config) -> Result<Agent, ServerError> {
    let (sn, snapshotter_reason) = choose_snapshotter(&config)?;
    let meta = Arc::new(Metadata::open(&config.root.join("metadata.redb"), sn.name())?);
    let content = Arc::new(ContentStore::open(&config.root)?);
    let snapshots = Arc::new(Snapshots::new(meta.clone(), sn));
    let removed = snapshots.recover()?;
    let images = Arc::new(Images::new(meta.clone(), content.clone(), snapshots.clone(), config.limits.clone()));
    let containers = Arc::new(Containers::new(
        meta.clone(),
        content.clone(),
        images.clone(),
        snapshots.clone(),
        &config.root,
        config.runtime.default_runtime.clone(),
    ));
    let orphans = containers.recover()?;
    if orphans > 0 {
        tracing::info!(removed = orphans, "removed writable layers and files of containers that no longer exist");
    }
    let events = Events::new();
    let tasks = Tasks::new(&config.state, config.runtime.clone(), containers.clone(), snapshots.clone(), events.clone());
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
    let registries = Arc::new(crate::registry::Registries::new(
        images.clone(),
        content.clone(),
        config.registries.clone(),
        config.limits.unpack_parallelism,
        config.registry_stall_timeout,
    ));
    Ok(Agent {
        config,
        meta,
        content,
        snapshots,
        images,
        containers,
        tasks,
        events,
        registries,
        snapshotter_reason,
        started: Instant::now(),
    })
}

/// Serve the agent until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServerError> {
    mkdir(&config.root, 0o711)?;
    mkdir(&config.state, 0o711)?;
    let _lock = lock_root(&config.root)?;
    let address = config.address.clone();
    let agent = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || open(config)).await.map_err(|e| ServerError::Socket(format!("start-up task failed: {e}")))??
    };
    let agent = Arc::new(agent);
    // Find the shims of containers that kept running while the agent was away.
    let known = {
        let meta = agent.meta.clone();
        tokio::task::spawn_blocking(move || meta.all_containers())
            .await
            .map_err(|e| ServerError::Socket(format!("start-up task failed: {e}")))??
    };
    if crate::runtime::find_binary(&agent.config.runtime.shim_binary.to_string_lossy()).is_none() {
        tracing::warn!(
            shim = %agent.config.runtime.shim_binary.display(),
            "berth-shim not found next to berthd nor in PATH: containers cannot start (build it with `cargo build --release`)"
        );
    }
    let found = agent.tasks.recover(&known).await;
    if found > 0 {
        tracing::info!(tasks = found, "tasks found again");
    }
    let listener = bind_socket(&address)?;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<v1::images_server::ImagesServer<api::images::ImagesService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(berth_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServerError::Socket(format!("reflection: {e}")))?;

    tracing::info!(address = %address.display(), root = %config.root.display(), pid = std::process::id(), "berthd serving");
    // Graceful shutdown, bounded: in-flight calls get a few seconds to finish.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = tonic::transport::Server::builder()
        .initial_stream_window_size(berth_api::STREAM_WINDOW)
        .initial_connection_window_size(berth_api::CONNECTION_WINDOW)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(api::version::service(agent.clone()))
        .add_service(api::images::service(agent.clone()))
        .add_service(api::content::service(agent.clone()))
        .add_service(api::snapshots::service(agent.clone()))
        .add_service(api::containers::service(agent.clone()))
        .add_service(api::tasks::service(agent.clone()))
        .add_service(api::events::service(agent.clone()))
        .add_service(api::registry::service(agent.clone()))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
            let _ = stop_rx.changed().await;
        });
    tokio::pin!(server);
    let result = tokio::select! {
        r = &mut server => r,
        () = shutdown => {
            let _ = stop_tx.send(true);
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(grace = ?SHUTDOWN_GRACE, "calls still running at shutdown were cut off");
                    Ok(())
                }
            }
        }
    };
    let _ = fs::remove_file(&address);
    tracing::info!("berthd stopped");
    result.map_err(Into::into)
}
