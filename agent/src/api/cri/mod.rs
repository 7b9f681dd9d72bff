//! The Kubernetes CRI (`runtime.v1`), served on the agent's CRI socket: what a kubelet
//! calls. Like every API surface, each handler reads the request, calls the application
//! services, and converts; the CRI's records live in the namespace [`NAMESPACE`], which
//! `berthctl --namespace k8s.io` shows.
//!
//! Served so far: Version, Status, RuntimeConfig, UpdateRuntimeConfig, the pod sandboxes
//! (RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus, ListPodSandbox) and
//! their containers (CreateContainer, StartContainer, StopContainer, RemoveContainer,
//! ListContainers, ContainerStatus, ExecSync, and the container and pod stats), all through
//! the pods service, and the whole ImageService. What is not yet served (the streaming Exec,
//! Attach and PortForward, events, UpdateContainerResources, ReopenContainerLog,
//! checkpoints, metrics) answers UNIMPLEMENTED.

mod convert;
pub mod images;
pub mod runtime;
pub mod stream;

pub use crate::service::pods::NAMESPACE;

/// The largest message the CRI services take.
const MAX_MESSAGE: usize = 16 << 20;

/// The CRI's RPCs not served yet.
fn unimplemented<T>(what: &str) -> Result<T, tonic::Status> {
    Err(tonic::Status::unimplemented(format!("{what} is not implemented by berthd yet")))
}
