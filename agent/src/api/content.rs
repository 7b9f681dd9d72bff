//! Content service: the blob store.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use berth_api::v1::{self, content_server::ContentServer};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{blocking, convert, namespace};
use crate::digest::Digest;
use crate::server::Agent;

pub struct ContentService {
    agent: Arc<Agent>,
}

pub fn service(agent: Arc<Agent>) -> ContentServer<ContentService> {
    ContentServer::new(ContentService { agent })
}

fn digest(s: &str) -> Result<Digest, Status> {
    Digest::parse(s).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// A blob's info with its labels and the images of `ns` that use it.
fn content_info(agent: &Agent, ns: &str, d: &Digest) -> Result<v1::ContentInfo, Status> {
    let info = agent.content.info(d)?;
    Ok(v1::ContentInfo {
        digest: info.digest.to_string(),
        size: info.size as i64,
        created_at: convert::system_time(info.created),
        referenced_by: agent.images.referenced_by(ns, d)?,
        labels: agent.meta.content_labels(d)?.into_iter().collect(),
    })
}

const READ_CHUNK: usize = 1 << 20;
/// How long a chunk waits for a client that stopped reading.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

#[tonic::async_trait]
impl v1::content_server::Content for ContentService {
    async fn info(&self, req: Request<v1::ContentInfoRequest>) -> Result<Response<v1::ContentInfoResponse>, Status> {
        let ns = namespace(&req)?;
        let d = digest(&req.get_ref().digest)?;
        let agent = self.agent.clone();
        blocking(move || Ok(Response::new(v1::ContentInfoResponse { info: Some(content_info(&agent, &ns, &d)?) }))).await
    }

    async fn list(&self, _req: Request<v1::ListContentRequest>) -> Result<Response<v1::ListContentResponse>, Status> {
        let agent = self.agent.clone();
        blocking(move || {
            let blobs = agent
                .content
                .list()?
                .into_iter()
                .map(|b| v1::ContentInfo {
                    digest: b.digest.to_string(),
                    size: b.size as i64,
                    created_at: convert::system_time(b.created),
                    referenced_by: Vec::new(),
                    labels: agent.meta.content_labels(&b.digest).unwrap_or_default().into_iter().collect(),
                })
                .collect();
            Ok(Response::new(v1::ListContentResponse { blobs }))
        })
        .await
    }

    type ReadStream = ReceiverStream<Result<v1::ReadContentResponse, Status>>;

    async fn read(&self, req: Request<v1::ReadContentRequest>) -> Result<Response<Self::ReadStream>, Status> {
        let r = req.into_inner();
        let d = digest(&r.digest)?;
        if r.offset < 0 || r.size < 0 {
            return Err(Status::invalid_argument("offset and size must not be negative"));
        }
        let agent = self.agent.clone();
        let mut file = blocking(move || {
            let f = agent.content.open_blob(&d)?;
            let size = f.metadata().map_err(|e| Status::internal(e.to_string()))?.len();
            if r.offset as u64 > size {
                return Err(Status::out_of_range(format!("offset {} is past the end of {d} ({size} bytes)", r.offset)));
            }
            Ok(f)
        })
        .await?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let handle = tokio::runtime::Handle::current();
        // A client that stops reading releases this thread after SEND_TIMEOUT.
        let send =
            move |msg| handle.block_on(tokio::time::timeout(SEND_TIMEOUT, tx.send(msg))).map_err(|_| ()).and_then(|r| r.map_err(|_| ()));
        tokio::task::spawn_blocking(move || {
            let mut offset = r.offset as u64;
            if let Err(e) = file.seek(SeekFrom::Start(offset)) {
                let _ = send(Err(Status::internal(e.to_string())));
                return;
            }
            let mut remaining = if r.size == 0 { u64::MAX } else { r.size as u64 };
            let mut buf = vec![0u8; READ_CHUNK];
            while remaining > 0 {
                let want = remaining.min(READ_CHUNK as u64) as usize;
                match file.read(&mut buf[..want]) {
                    Ok(0) => break,
                    Ok(n) => {
                        let msg = v1::ReadContentResponse { offset: offset as i64, data: buf[..n].to_vec() };
                        if send(Ok(msg)).is_err() {
                            return;
                        }
                        offset += n as u64;
                        remaining -= n as u64;
                    }
                    Err(e) => {
                        let _ = send(Err(Status::internal(e.to_string())));
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delete(&self, req: Request<v1::DeleteContentRequest>) -> Result<Response<v1::DeleteContentResponse>, Status> {
        let r = req.into_inner();
        let d = digest(&r.digest)?;
        let agent = self.agent.clone();
        blocking(move || {
            let _guard = agent.images.gc_lock.write().unwrap_or_else(|e| e.into_inner());
            agent.content.info(&d)?;
            if !r.force && agent.images.referenced_anywhere(&d)? {
                return Err(Status::failed_precondition(format!("blob {d} is used by an image; remove the image first or force")));
            }
            agent.content.delete(&d)?;
            agent.meta.set_content_labels(&d, &Default::default())?;
            Ok(Response::new(v1::DeleteContentResponse {}))
        })
        .await
    }

    async fn update_labels(
        &self,
        req: Request<v1::UpdateContentLabelsRequest>,
    ) -> Result<Response<v1::UpdateContentLabelsResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let d = digest(&r.digest)?;
        if let Some(k) = r.labels.keys().find(|k| k.starts_with("berth.io/") || k.is_empty()) {
            return Err(Status::invalid_argument(format!("label key {k:?} is empty or reserved (berth.io/)")));
        }
        let agent = self.agent.clone();
        blocking(move || {
            let _guard = agent.images.gc_lock.read().unwrap_or_else(|e| e.into_inner());
            agent.content.info(&d)?;
            agent.meta.set_content_labels(&d, &r.labels.into_iter().collect())?;
            Ok(Response::new(v1::UpdateContentLabelsResponse { info: Some(content_info(&agent, &ns, &d)?) }))
        })
        .await
    }
}
