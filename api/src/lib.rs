//! The Berth gRPC API: messages and services generated from `proto/berth/v1` (and the
//! Kubernetes CRI's, from `proto/cri`),
//! plus a helper to connect to the agent's Unix socket.

pub mod v1 {
    #![allow(clippy::all, missing_docs, rust_2018_idioms)]
    tonic::include_proto!("berth.v1");
    pub use crate::listing::ListContainersResponse;
}

pub mod listing;

/// The Kubernetes CRI (`runtime.v1`, from `proto/cri`): what a kubelet calls.
pub mod cri {
    #![allow(clippy::all, missing_docs, rust_2018_idioms)]
    tonic::include_proto!("runtime.v1");
}

/// Serialized `FileDescriptorSet` of the API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/berth_descriptor.bin"));

/// Metadata header that selects the namespace of a call.
pub const NAMESPACE_HEADER: &str = "berth-namespace";

/// Namespace used when a call does not name one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// HTTP/2 flow-control window of one stream, for clients and the server.
pub const STREAM_WINDOW: u32 = 8 << 20;
/// HTTP/2 flow-control window of one connection.
pub const CONNECTION_WINDOW: u32 = 16 << 20;

/// Default address of the agent.
pub const DEFAULT_ADDRESS: &str = "/run/berth/berthd.sock";

use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

/// Connect to an agent listening on a Unix socket at `path`.
///
/// The connection is made eagerly so that a missing agent gives an error here
/// rather than on the first call. Connecting is bounded by `timeout`.
pub async fn connect(path: impl Into<PathBuf>, timeout: Duration) -> Result<Channel, tonic::transport::Error> {
    let path: PathBuf = path.into();
    // The URI is required by the endpoint but never used: the connector below
    // always dials the Unix socket.
    Endpoint::from_static("http://berthd.local")
        .connect_timeout(timeout)
        // Large HTTP/2 windows: uploads of image archives move hundreds of MB,
        // and the 64 KiB default costs a round trip per window.
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { tokio::net::UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
}

/// Adds the namespace header to every request made through a client.
#[derive(Clone)]
pub struct NamespaceInterceptor {
    value: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

impl NamespaceInterceptor {
    /// Build an interceptor for `namespace`. Fails if it is not valid header text.
    pub fn new(namespace: &str) -> Result<Self, tonic::metadata::errors::InvalidMetadataValue> {
        Ok(Self { value: namespace.parse()? })
    }
}

impl tonic::service::Interceptor for NamespaceInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert(NAMESPACE_HEADER, self.value.clone());
        Ok(req)
    }
}
