//! Images service.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use berth_api::v1::{self, images_server::ImagesServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{blocking, convert, namespace, parse_filters};
use crate::digest::ChunkReader;
use crate::image::import::{ImportOptions, Progress};
use crate::image::oci::Platform;
use crate::image::Images;
use crate::metadata::ImageRecord;
use crate::server::Agent;

/// An upload that sends nothing for this long is abandoned.
const UPLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

pub struct ImagesService {
    agent: Arc<Agent>,
}

pub fn service(agent: Arc<Agent>) -> ImagesServer<ImagesService> {
    ImagesServer::new(ImagesService { agent }).max_decoding_message_size(8 << 20)
}

fn platform(s: &str) -> Result<Platform, Status> {
    Platform::parse(s).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// An image message with its resolved details (id, size), when resolvable.
fn image_message(images: &Images, ns: &str, rec: &ImageRecord) -> v1::Image {
    let mut msg = convert::image(rec);
    if let Ok(r) = images.resolve(rec, &Platform::default_platform()) {
        msg.config_digest = r.manifest.config.digest.to_string();
        msg.size = r.size() as i64;
        msg.config_created = r.config.created.clone().unwrap_or_default();
        msg.unpacked_size = images.unpacked_size(ns, &r).unwrap_or(0) as i64;
    }
    msg
}

fn import_options(o: Option<v1::ImportOptions>) -> Result<ImportOptions, Status> {
    let o = o.ok_or_else(|| Status::invalid_argument("the first import message must carry the options"))?;
    Ok(ImportOptions {
        name: (!o.name.is_empty()).then_some(o.name),
        platform: platform(&o.platform)?,
        no_unpack: o.no_unpack,
        labels: o.labels.into_iter().collect(),
        base_name: (!o.base_name.is_empty()).then_some(o.base_name),
    })
}

fn progress_message(p: Progress) -> v1::ImportResponse {
    let (kind, id, status, size) = match p {
        Progress::Blob { digest, size, status } => ("blob", digest.to_string(), status, size),
        Progress::Layer { digest, size, status } => ("layer", digest.to_string(), status, size),
        Progress::Image { name, status } => ("image", name, status, 0),
        Progress::Bytes { digest, total, .. } => ("blob", digest.to_string(), "transferring", total),
    };
    v1::ImportResponse {
        event: Some(v1::import_response::Event::Progress(v1::ImportProgress {
            kind: kind.into(),
            id,
            status: status.into(),
            size: size as i64,
        })),
    }
}

type ImportStream = ReceiverStream<Result<v1::ImportResponse, Status>>;
type ExportStream = ReceiverStream<Result<v1::ExportImagesResponse, Status>>;

/// Bytes per export message.
const EXPORT_CHUNK: usize = 1 << 20;
/// Export messages queued for the client: a slow reader holds the writer back.
const EXPORT_QUEUE: usize = 4;
/// A client that takes no export message for this long is abandoned.
const EXPORT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// The export writer's sink: `EXPORT_CHUNK`-byte messages into a bounded
/// channel, sent from a blocking thread. Fails when the client has gone or
/// stopped reading.
struct ChunkSender {
    buf: Vec<u8>,
    tx: mpsc::Sender<Result<v1::ExportImagesResponse, Status>>,
    handle: tokio::runtime::Handle,
    /// Why the client no longer takes messages, once it does not.
    abandoned: Option<&'static str>,
}

impl ChunkSender {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(EXPORT_CHUNK));
        let why = match self.handle.block_on(tokio::time::timeout(EXPORT_IDLE_TIMEOUT, self.tx.send(Ok(v1::ExportImagesResponse { data }))))
        {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(_)) => "the client went away",
            Err(_) => "the client stopped reading",
        };
        self.abandoned = Some(why);
        Err(io::Error::new(io::ErrorKind::BrokenPipe, why))
    }
}

impl io::Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(EXPORT_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == EXPORT_CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// How long the result of an import waits for a client that stopped reading.
const RESULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Run an import on a blocking thread, streaming progress and the result.
/// Progress is dropped when the client reads slower than it comes (it is
/// advisory); the result is always sent, within a bound.
fn spawn_import(agent: Arc<Agent>, ns: String, reader: impl Read + Send + 'static, opts: ImportOptions) -> ImportStream {
    let (tx, rx) = mpsc::channel(64);
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let ptx = tx.clone();
        let progress = move |p: Progress| {
            let _ = ptx.try_send(Ok(progress_message(p)));
        };
        let result = agent.images.import(&ns, reader, &opts, &progress);
        let msg = match result {
            Ok(outcome) => {
                for r in &outcome.images {
                    agent.events.publish(&ns, "/images/create", &r.name, &[("digest", r.target.digest.to_string())]);
                }
                let images = outcome.images.iter().map(|r| image_message(&agent.images, &ns, r)).collect();
                Ok(v1::ImportResponse {
                    event: Some(v1::import_response::Event::Result(v1::ImportResult { images, bytes_read: outcome.bytes_read as i64 })),
                })
            }
            Err(e) => {
                tracing::warn!(namespace = %ns, error = %e, "import failed");
                Err(Status::from(e))
            }
        };
        let _ = handle.block_on(tokio::time::timeout(RESULT_SEND_TIMEOUT, tx.send(msg)));
    });
    ReceiverStream::new(rx)
}

#[tonic::async_trait]
impl v1::images_server::Images for ImagesService {
    async fn list(&self, req: Request<v1::ListImagesRequest>) -> Result<Response<v1::ListImagesResponse>, Status> {
        let ns = namespace(&req)?;
        let filters = parse_filters(&req.get_ref().filters)?;
        let agent = self.agent.clone();
        blocking(move || {
            let mut out = Vec::new();
            for rec in agent.meta.images(&ns)? {
                let msg = image_message(&agent.images, &ns, &rec);
                let keep = filters.iter().all(|(k, v, contains)| match (k.as_str(), v) {
                    ("name", Some(v)) if *contains => msg.name.contains(v.as_str()),
                    ("name", Some(v)) => msg.name == *v,
                    ("digest", Some(v)) => msg.target.as_ref().is_some_and(|t| t.digest == *v) || msg.config_digest == *v,
                    (k, v) => match k.strip_prefix("label.") {
                        Some(label) => match v {
                            None => msg.labels.contains_key(label),
                            Some(v) if *contains => msg.labels.get(label).is_some_and(|x| x.contains(v.as_str())),
                            Some(v) => msg.labels.get(label) == Some(v),
                        },
                        None => false,
                    },
                });
                if keep {
                    out.push(msg);
                }
            }
            Ok(Response::new(v1::ListImagesResponse { images: out }))
        })
        .await
    }

    async fn get(&self, req: Request<v1::GetImageRequest>) -> Result<Response<v1::GetImageResponse>, Status> {
        let ns = namespace(&req)?;
        let name = req.into_inner().name;
        let agent = self.agent.clone();
        blocking(move || {
            let rec = agent.images.find_one(&ns, &name)?;
            Ok(Response::new(v1::GetImageResponse { image: Some(image_message(&agent.images, &ns, &rec)) }))
        })
        .await
    }

    async fn inspect(&self, req: Request<v1::InspectImageRequest>) -> Result<Response<v1::InspectImageResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let p = platform(&r.platform)?;
        let agent = self.agent.clone();
        blocking(move || {
            let rec = agent.images.find_one(&ns, &r.name)?;
            let res = agent.images.resolve(&rec, &p)?;
            // The image as seen for the platform asked for.
            let mut image = image_message(&agent.images, &ns, &rec);
            image.config_digest = res.manifest.config.digest.to_string();
            image.size = res.size() as i64;
            image.config_created = res.config.created.clone().unwrap_or_default();
            image.unpacked_size = agent.images.unpacked_size(&ns, &res).unwrap_or(0) as i64;
            Ok(Response::new(v1::InspectImageResponse {
                image: Some(image),
                manifest: Some(convert::descriptor(&res.manifest_desc)),
                config: Some(convert::descriptor(&res.manifest.config)),
                layers: res.manifest.layers.iter().map(convert::descriptor).collect(),
                diff_ids: res.config.rootfs.diff_ids.iter().map(|d| d.to_string()).collect(),
                chain_ids: res.chain_ids.iter().map(|d| d.to_string()).collect(),
                config_json: res.config_json.clone(),
                manifest_json: res.manifest_json.clone(),
                platforms: res.platforms.iter().map(convert::platform).collect(),
                unpacked: agent.images.is_unpacked(&ns, &res),
            }))
        })
        .await
    }

    async fn tag(&self, req: Request<v1::TagImageRequest>) -> Result<Response<v1::TagImageResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let agent = self.agent.clone();
        blocking(move || {
            let rec = agent.images.tag(&ns, &r.source, &r.target, r.force)?;
            agent.events.publish(&ns, "/images/create", &rec.name, &[("digest", rec.target.digest.to_string())]);
            Ok(Response::new(v1::TagImageResponse { image: Some(image_message(&agent.images, &ns, &rec)) }))
        })
        .await
    }

    async fn update_labels(&self, req: Request<v1::UpdateImageLabelsRequest>) -> Result<Response<v1::UpdateImageLabelsResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let agent = self.agent.clone();
        blocking(move || {
            let labels: BTreeMap<String, String> = r.labels.into_iter().collect();
            let rec = agent.images.update_labels(&ns, &r.name, labels)?;
            agent.events.publish(&ns, "/images/update", &rec.name, &[]);
            Ok(Response::new(v1::UpdateImageLabelsResponse { image: Some(image_message(&agent.images, &ns, &rec)) }))
        })
        .await
    }

    async fn delete(&self, req: Request<v1::DeleteImageRequest>) -> Result<Response<v1::DeleteImageResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let agent = self.agent.clone();
        blocking(move || {
            let deleted = agent.images.delete(&ns, &r.name, r.force)?;
            for name in &deleted {
                agent.events.publish(&ns, "/images/delete", name, &[]);
            }
            // Collection is cheap at this scale, so it always runs; `sync` is kept for API stability.
            let gc = agent.images.gc()?;
            Ok(Response::new(v1::DeleteImageResponse {
                deleted,
                blobs_removed: gc.blobs_removed as i64,
                snapshots_removed: gc.snapshots_removed as i64,
            }))
        })
        .await
    }

    type ImportStream = ImportStream;

    async fn import(&self, req: Request<Streaming<v1::ImportRequest>>) -> Result<Response<Self::ImportStream>, Status> {
        let ns = namespace(&req)?;
        let mut stream = req.into_inner();
        let first = tokio::time::timeout(UPLOAD_IDLE_TIMEOUT, stream.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no import options received"))??
            .ok_or_else(|| Status::invalid_argument("empty import stream"))?;
        let opts = match first.payload {
            Some(v1::import_request::Payload::Options(o)) => import_options(Some(o))?,
            _ => return Err(Status::invalid_argument("the first import message must carry the options")),
        };
        let (tx, rx) = mpsc::channel(8);
        // Forward the upload to the blocking reader, bounding every wait.
        tokio::spawn(async move {
            loop {
                let item = match tokio::time::timeout(UPLOAD_IDLE_TIMEOUT, stream.message()).await {
                    Err(_) => Some(Err(io::Error::new(io::ErrorKind::TimedOut, "upload stalled"))),
                    Ok(Err(status)) => {
                        Some(Err(io::Error::new(io::ErrorKind::ConnectionAborted, format!("upload interrupted: {}", status.message()))))
                    }
                    Ok(Ok(None)) => None,
                    Ok(Ok(Some(m))) => match m.payload {
                        Some(v1::import_request::Payload::Chunk(c)) => Some(Ok(c)),
                        _ => Some(Err(io::Error::new(io::ErrorKind::InvalidInput, "options sent twice"))),
                    },
                };
                let Some(item) = item else { break };
                let stop = item.is_err();
                if tx.send(item).await.is_err() || stop {
                    break;
                }
            }
        });
        // The upload, read on the import's blocking thread as chunks arrive.
        let mut rx = rx;
        let reader = ChunkReader::new(std::iter::from_fn(move || rx.blocking_recv()));
        Ok(Response::new(spawn_import(self.agent.clone(), ns, reader, opts)))
    }

    type ImportPathStream = ImportStream;

    async fn import_path(&self, req: Request<v1::ImportPathRequest>) -> Result<Response<Self::ImportPathStream>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let opts = import_options(Some(r.options.unwrap_or_default()))?;
        if !r.path.starts_with('/') {
            return Err(Status::invalid_argument("the archive path must be absolute"));
        }
        // Opened off the async threads, without blocking on a FIFO, and only a regular file.
        let path = r.path.clone();
        let file = blocking(move || {
            use std::os::unix::fs::OpenOptionsExt;
            let f = std::fs::OpenOptions::new().read(true).custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32).open(&path).map_err(
                |e| match e.kind() {
                    io::ErrorKind::NotFound => Status::not_found(format!("{path}: no such file")),
                    _ => Status::invalid_argument(format!("{path}: {e}")),
                },
            )?;
            match f.metadata() {
                Ok(m) if m.is_file() => Ok(f),
                Ok(_) => Err(Status::invalid_argument(format!("{path} is not a regular file"))),
                Err(e) => Err(Status::invalid_argument(format!("{path}: {e}"))),
            }
        })
        .await?;
        Ok(Response::new(spawn_import(self.agent.clone(), ns, file, opts)))
    }

    type ExportStream = ExportStream;

    async fn export(&self, req: Request<v1::ExportImagesRequest>) -> Result<Response<Self::ExportStream>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        if r.names.is_empty() {
            return Err(Status::invalid_argument("name at least one image to export"));
        }
        let p = platform(&r.platform)?;
        let (tx, rx) = mpsc::channel(EXPORT_QUEUE);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<(), Status>>();
        let handle = tokio::runtime::Handle::current();
        let agent = self.agent.clone();
        // One blocking thread plans (every name resolved, its blobs leased),
        // reports, then writes: an unknown name fails the call before any byte.
        tokio::task::spawn_blocking(move || {
            let images = &agent.images;
            let plan = match images.export_plan(&ns, &r.names, &p) {
                Ok(plan) => plan,
                Err(e) => {
                    let _ = ready_tx.send(Err(Status::from(e)));
                    return;
                }
            };
            if ready_tx.send(Ok(())).is_err() {
                return;
            }
            let mut sink = ChunkSender { buf: Vec::with_capacity(EXPORT_CHUNK), tx, handle: handle.clone(), abandoned: None };
            let result = images.write_export(&plan, &mut sink);
            match (result, sink.abandoned) {
                (Ok(bytes), _) => {
                    tracing::info!(namespace = %ns, images = ?plan.names, blobs = plan.blobs.len(), bytes, "exported images");
                }
                (Err(_), Some(why)) => tracing::info!(namespace = %ns, images = ?plan.names, reason = why, "export abandoned"),
                (Err(e), None) => {
                    tracing::warn!(namespace = %ns, images = ?plan.names, error = %e, "export failed");
                    let _ = handle.block_on(tokio::time::timeout(EXPORT_IDLE_TIMEOUT, sink.tx.send(Err(Status::from(e)))));
                }
            }
        });
        ready_rx.await.map_err(|_| Status::internal("the export stopped before it started"))??;
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
