//! The gRPC layer: each method reads its request into domain types, calls
//! one service method (`crate::service`), and converts the answer. Nothing
//! else lives here: no lock, no store, no event, no policy.

pub mod build;
pub mod containers;
pub mod content;
pub mod convert;
pub mod cri;
pub mod error;
pub mod events;
pub mod images;
pub mod networks;
pub mod registry;
pub mod snapshots;
pub mod tasks;
pub mod version;
pub mod volumes;

use std::pin::Pin;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use crate::image::Progress;
use crate::service::{self, Update};

/// A server stream of `M`.
pub type MessageStream<M> = Pin<Box<dyn Stream<Item = Result<M, Status>> + Send>>;

/// The namespace of a call, from the `berth-namespace` header (default `default`).
pub fn namespace<T>(req: &tonic::Request<T>) -> Result<String, Status> {
    let ns = match req.metadata().get(berth_api::NAMESPACE_HEADER) {
        None => return Ok(berth_api::DEFAULT_NAMESPACE.to_owned()),
        Some(v) => v.to_str().map_err(|_| Status::invalid_argument("namespace header is not valid text"))?,
    };
    service::validate_namespace(ns)?;
    Ok(ns.to_owned())
}

/// A channel of service results as a server stream, each item converted.
pub fn stream<T: Send + 'static, M: Send + 'static>(
    rx: mpsc::Receiver<Result<T, service::Error>>,
    convert: impl Fn(T) -> M + Send + 'static,
) -> MessageStream<M> {
    Box::pin(ReceiverStream::new(rx).map(move |r| r.map(&convert).map_err(Status::from)))
}

/// A long operation's updates as a server stream: progress messages, then the result's.
pub fn updates<T: Send + 'static, M: Send + 'static>(
    rx: mpsc::Receiver<Update<T>>,
    progress: fn(Progress) -> M,
    done: impl Fn(T) -> M + Send + 'static,
) -> MessageStream<M> {
    Box::pin(ReceiverStream::new(rx).map(move |u| match u {
        Update::Progress(p) => Ok(progress(p)),
        Update::Done(r) => r.map(&done).map_err(Status::from),
    }))
}

/// An optional string field: empty is absent.
pub fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// An upload that sends nothing for this long is abandoned.
pub const UPLOAD_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// The largest message a service with uploads takes (an import or copy chunk).
pub const MAX_MESSAGE: usize = 8 << 20;

/// The chunks of an upload after its options (`chunk` reads one from a message; None: the
/// message is not a chunk), as a reader for a blocking thread. Every wait is bounded; a
/// stalled or broken upload reads as an error.
pub fn upload_reader<M: Send + 'static>(
    mut upload: tonic::Streaming<M>,
    chunk: fn(M) -> Option<Vec<u8>>,
) -> crate::digest::ChunkReader<impl Iterator<Item = std::io::Result<Vec<u8>>>> {
    use std::io;
    let (tx, mut rx) = mpsc::channel(8);
    tokio::spawn(async move {
        loop {
            let item = match tokio::time::timeout(UPLOAD_IDLE_TIMEOUT, upload.message()).await {
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "upload stalled")),
                // A chunk over the limit is the client's to fix, not a cut connection.
                Ok(Err(status)) if matches!(status.code(), tonic::Code::OutOfRange | tonic::Code::ResourceExhausted) => {
                    Err(io::Error::new(
                        io::ErrorKind::FileTooLarge,
                        format!("an upload message is at most {} MiB; send the archive in smaller chunks", MAX_MESSAGE >> 20),
                    ))
                }
                Ok(Err(status)) => {
                    Err(io::Error::new(io::ErrorKind::ConnectionAborted, format!("upload interrupted: {}", status.message())))
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(m))) => chunk(m).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        crate::image::import::UploadMisuse(
                            "the options came again: only the first message carries them, the others the archive's bytes",
                        ),
                    )
                }),
            };
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                break;
            }
        }
    });
    crate::digest::ChunkReader::new(std::iter::from_fn(move || rx.blocking_recv()))
}

/// The caller's deadline, from its `grpc-timeout` header, if it set one.
pub fn deadline<T>(req: &tonic::Request<T>) -> Option<std::time::Duration> {
    grpc_timeout(req.metadata().get("grpc-timeout")?.to_str().ok()?)
}

/// A `grpc-timeout` header's duration (`<digits><H|M|S|m|u|n>`).
pub fn grpc_timeout(v: &str) -> Option<std::time::Duration> {
    use std::time::Duration;
    let (n, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}
