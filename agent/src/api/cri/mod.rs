//! The Kubernetes CRI (`runtime.v1`), served on the agent's CRI socket: what a kubelet
//! calls. Like every API surface, each handler reads the request, calls the application
//! services, and converts; the CRI's records live in the namespace [`NAMESPACE`], which
//! `berthctl --namespace k8s.io` shows.
//!
//! Served: Version, Status, RuntimeConfig, UpdateRuntimeConfig, the pod sandboxes
//! (RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus, ListPodSandbox) and
//! their containers (CreateContainer, StartContainer, StopContainer, RemoveContainer,
//! ListContainers, ContainerStatus, UpdateContainerResources, ReopenContainerLog, ExecSync,
//! GetContainerEvents, the container and pod stats), all through the pods service; Exec,
//! Attach and PortForward through the streams service and the streaming server
//! ([`stream`]); the whole ImageService. Checkpoints and metrics answer UNIMPLEMENTED.

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
