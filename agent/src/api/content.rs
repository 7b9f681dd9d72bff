//! Content service: the blob store.

use std::sync::Arc;

use berth_api::v1::{self, content_server::ContentServer};
use tonic::{Request, Response, Status};

use super::{convert, namespace, stream, MessageStream};
use crate::digest::Digest;
use crate::service::content::BlobInfo;
use crate::service::Services;

pub struct ContentApi {
    services: Arc<Services>,
}

pub fn service(services: Arc<Services>) -> ContentServer<ContentApi> {
    ContentServer::new(ContentApi { services })
}

fn digest(s: &str) -> Result<Digest, Status> {
    Digest::parse(s).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn info_message(b: BlobInfo) -> v1::ContentInfo {
    v1::ContentInfo {
        digest: b.digest.to_string(),
        size: b.size as i64,
        created_at: convert::system_time(b.created),
        referenced_by: b.referenced_by,
        labels: b.labels.into_iter().collect(),
    }
}

#[tonic::async_trait]
impl v1::content_server::Content for ContentApi {
    async fn info(&self, req: Request<v1::ContentInfoRequest>) -> Result<Response<v1::ContentInfoResponse>, Status> {
        let ns = namespace(&req)?;
        let info = self.services.content.info(&ns, digest(&req.get_ref().digest)?).await?;
        Ok(Response::new(v1::ContentInfoResponse { info: Some(info_message(info)) }))
    }

    async fn list(&self, _req: Request<v1::ListContentRequest>) -> Result<Response<v1::ListContentResponse>, Status> {
        let blobs = self.services.content.list().await?;
        Ok(Response::new(v1::ListContentResponse { blobs: blobs.into_iter().map(info_message).collect() }))
    }

    type ReadStream = MessageStream<v1::ReadContentResponse>;

    async fn read(&self, req: Request<v1::ReadContentRequest>) -> Result<Response<Self::ReadStream>, Status> {
        let r = req.into_inner();
        let d = digest(&r.digest)?;
        let (Ok(offset), Ok(size)) = (u64::try_from(r.offset), u64::try_from(r.size)) else {
            return Err(Status::invalid_argument("offset and size must not be negative"));
        };
        let rx = self.services.content.read(d, offset, size).await?;
        Ok(Response::new(stream(rx, |c| v1::ReadContentResponse { offset: c.offset as i64, data: c.data })))
    }

    async fn delete(&self, req: Request<v1::DeleteContentRequest>) -> Result<Response<v1::DeleteContentResponse>, Status> {
        let r = req.into_inner();
        self.services.content.delete(digest(&r.digest)?, r.force).await?;
        Ok(Response::new(v1::DeleteContentResponse {}))
    }

    async fn update_labels(
        &self,
        req: Request<v1::UpdateContentLabelsRequest>,
    ) -> Result<Response<v1::UpdateContentLabelsResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let info = self.services.content.update_labels(&ns, digest(&r.digest)?, r.labels.into_iter().collect()).await?;
        Ok(Response::new(v1::UpdateContentLabelsResponse { info: Some(info_message(info)) }))
    }
}
