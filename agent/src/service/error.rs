//! The services' error: what the caller did wrong, said by the service, or a
//! domain error from the core, kept whole so that each API surface can map
//! it (the gRPC table is `api/error.rs`).

use crate::container::ContainerError;
use crate::content::ContentError;
use crate::image::ImageError;
use crate::metadata::MetadataError;
use crate::registry::RegistryError;
use crate::runtime::TaskError;
use crate::snapshot::SnapshotError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    OutOfRange(String),
    #[error("{0}")]
    Internal(String),
    /// The work stopped on its own failure (a build's RUN step that exited non-zero).
    #[error("{0}")]
    Aborted(String),
    /// The caller went away.
    #[error("{0}")]
    Cancelled(String),
    /// A wait the work needed ran out: the client's next message, a context
    /// another build holds.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// A part the call needs is not running (the streaming server).
    #[error("{0}")]
    Unavailable(String),
    /// Too much of something is waiting already.
    #[error("{0}")]
    ResourceExhausted(String),
    /// An error with where it happened put before it (a build's
    /// `Dockerfile:3: COPY`); its code is its source's.
    #[error("{context}: {inner}")]
    Context { context: String, inner: Box<Error> },
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    #[error(transparent)]
    Volume(#[from] crate::volume::VolumeError),
}
