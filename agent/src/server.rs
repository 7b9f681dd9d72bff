//! Start-up, the listening socket, and serving until shutdown.

use std::fs;
use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long in-flight calls may run on after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

use berth_api::v1;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::StreamExt as _;

use crate::agent::{Agent, AgentError};
use crate::api;
use crate::authority::AnyAuthority;
use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("preparing {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("another berthd is already using root {0} (lock held)")]
    Locked(PathBuf),
    #[error("{0}")]
    Socket(String),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("serving: {0}")]
    Transport(#[from] tonic::transport::Error),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ServerError + '_ {
    move |source| ServerError::Io { path: path.to_owned(), source }
}

fn mkdir(path: &Path, mode: u32) -> Result<(), ServerError> {
    Ok(crate::agent::mkdir(path, mode)?)
}

/// Hold an exclusive lock on `<root>/berthd.lock` for the life of the agent.
fn lock_root(root: &Path) -> Result<fs::File, ServerError> {
    let path = root.join("berthd.lock");
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(&path).map_err(io_err(&path))?;
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(f),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(ServerError::Locked(root.to_owned())),
        Err(e) => Err(ServerError::Io { path, source: e.into() }),
    }
}

/// Bind the socket, refusing a symlink, a non-socket file, or a socket another agent answers on.
/// The id of group `name`, from /etc/group.
fn group_id(name: &str) -> Result<u32, ServerError> {
    berth_common::groups::gid_of(name)
        .ok_or_else(|| ServerError::Socket(format!("group {name:?} is not in /etc/group (make it with groupadd {name})")))
}

/// Listen on `path` (mode 0660; group `gid` when given, else root's).
fn bind_socket(path: &Path, gid: Option<u32>) -> Result<UnixListener, ServerError> {
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
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(io_err(path))?;
    }
    Ok(listener)
}

/// Serve the agent until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServerError> {
    // Nobody but root reads what the agent keeps (container specs hold their
    // environment, blobs hold images): the root and the state directory are
    // 0700, set again at every start. Only the socket's directory lets
    // others through (0711), so the state directory does when it holds it.
    // A group that does not exist stops the start before anything is made.
    let socket_gid = config.socket_group.as_deref().map(group_id).transpose()?;
    mkdir(&config.root, 0o700)?;
    let holds_socket = config.address.parent() == Some(config.state.as_path());
    mkdir(&config.state, if holds_socket { 0o711 } else { 0o700 })?;
    let _lock = lock_root(&config.root)?;
    let address = config.address.clone();
    let agent = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || Agent::open(config))
            .await
            .map_err(|e| ServerError::Socket(format!("start-up task failed: {e}")))??
    };
    let found = agent.start().await?;
    if found > 0 {
        tracing::info!(tasks = found, "tasks found again");
    }
    let services = agent.services();
    let listener = bind_socket(&address, socket_gid)?;
    // The kubelet's socket: root's only.
    let cri_listener = config.cri_address.as_deref().map(|p| bind_socket(p, None)).transpose()?;
    // The CRI's streaming URLs (exec, attach, port-forward), with the CRI.
    let stream_listener = match &config.cri_address {
        Some(_) => Some(
            api::cri::stream::bind(&services, &config.stream_address)
                .await
                .map_err(|e| ServerError::Socket(format!("binding the CRI streaming server on {}: {e}", config.stream_address)))?,
        ),
        None => None,
    };

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<v1::images_server::ImagesServer<api::images::ImagesApi>>().await;
    // Reflection in both versions: grpcurl before 1.8.8 and many tools ask v1alpha only.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(berth_api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder().build_v1().map_err(|e| ServerError::Socket(format!("reflection: {e}")))?;
    let reflection_v1alpha = reflection_builder().build_v1alpha().map_err(|e| ServerError::Socket(format!("reflection: {e}")))?;

    tracing::info!(
        address = %address.display(),
        cri = %config.cri_address.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "off".into()),
        root = %config.root.display(),
        pid = std::process::id(),
        "berthd serving"
    );
    // Graceful shutdown, bounded: in-flight calls get a few seconds to finish.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    // On a Unix socket, clients fill HTTP/2's `:authority` as they like (grpcio
    // sends the socket path, percent-encoded), and h2 would reset any stream whose
    // field is not a URI authority before a service sees it: each connection is
    // read through `AnyAuthority`, which makes such a field `localhost`. The
    // frame and table sizes it assumes are the defaults this builder keeps.
    let incoming = UnixListenerStream::new(listener).map(|conn| conn.map(AnyAuthority::new));
    let server = tonic::transport::Server::builder()
        .initial_stream_window_size(berth_api::STREAM_WINDOW)
        .initial_connection_window_size(berth_api::CONNECTION_WINDOW)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(api::version::service(services.clone()))
        .add_service(api::images::service(services.clone()))
        .add_service(api::content::service(services.clone()))
        .add_service(api::snapshots::service(services.clone()))
        .add_service(api::containers::service(services.clone()))
        .add_service(api::tasks::service(services.clone()))
        .add_service(api::events::service(services.clone()))
        .add_service(api::registry::service(services.clone()))
        .add_service(api::build::service(services.clone()))
        .add_service(api::networks::service(services.clone()))
        .add_service(api::volumes::service(services.clone()))
        .serve_with_incoming_shutdown(incoming, {
            let mut stop_rx = stop_rx.clone();
            async move {
                let _ = stop_rx.changed().await;
            }
        });
    if let Some(listener) = stream_listener {
        tokio::spawn(api::cri::stream::serve(listener, services.clone(), stop_rx.clone()));
    }
    // The Kubernetes CRI on its own socket, stopped with the rest.
    let cri_server = async {
        let Some(listener) = cri_listener else { return std::future::pending().await };
        let incoming = UnixListenerStream::new(listener).map(|conn| conn.map(AnyAuthority::new));
        tonic::transport::Server::builder()
            .initial_stream_window_size(berth_api::STREAM_WINDOW)
            .initial_connection_window_size(berth_api::CONNECTION_WINDOW)
            .add_service(api::cri::runtime::service(services.clone()))
            .add_service(api::cri::images::service(services.clone()))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop_rx.changed().await;
            })
            .await
    };
    let server = async {
        tokio::pin!(server);
        tokio::pin!(cri_server);
        tokio::select! {
            r = &mut server => r,
            r = &mut cri_server => {
                if let Err(e) = &r {
                    tracing::error!(error = %e, "the CRI server stopped");
                }
                server.await
            }
        }
    };
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
    if let Some(cri) = &config.cri_address {
        let _ = fs::remove_file(cri);
    }
    // The namespaces kept ahead of time hold addresses for nobody once the agent is gone.
    agent.stop().await;
    tracing::info!("berthd stopped");
    result.map_err(Into::into)
}
