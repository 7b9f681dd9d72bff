//! Images service.

use std::sync::Arc;

use berth_api::v1::{self, images_server::ImagesServer};
use tonic::{Request, Response, Status, Streaming};

use super::{convert, namespace, non_empty, stream, updates, upload_reader, MessageStream, MAX_MESSAGE, UPLOAD_IDLE_TIMEOUT};
use crate::image::import::ImportOptions;
use crate::image::oci::Platform;
use crate::image::Progress;
use crate::service::images::{ImageInfo, Imported};
use crate::service::Services;

pub struct ImagesApi {
    services: Arc<Services>,
}

pub fn service(services: Arc<Services>) -> ImagesServer<ImagesApi> {
    ImagesServer::new(ImagesApi { services }).max_decoding_message_size(MAX_MESSAGE)
}

pub(crate) fn platform(s: &str) -> Result<Platform, Status> {
    Platform::parse(s).map_err(|e| Status::invalid_argument(e.to_string()))
}

pub(crate) fn image_message(i: &ImageInfo) -> v1::Image {
    let mut msg = convert::image(&i.record);
    msg.config_digest = i.config_digest.as_ref().map(|d| d.to_string()).unwrap_or_default();
    msg.size = i.size as i64;
    msg.config_created = i.config_created.clone();
    msg.unpacked_size = i.unpacked_size as i64;
    msg
}

fn import_options(o: v1::ImportOptions) -> Result<ImportOptions, Status> {
    Ok(ImportOptions {
        name: non_empty(o.name),
        platform: platform(&o.platform)?,
        no_unpack: o.no_unpack,
        labels: o.labels.into_iter().collect(),
        base_name: non_empty(o.base_name),
    })
}

fn progress_message(p: Progress) -> v1::ImportResponse {
    let (kind, id, status, size) = match p {
        Progress::Blob { digest, size, status } => ("blob", digest.to_string(), status, size),
        Progress::Layer { digest, size, status } => ("layer", digest.to_string(), status, size),
        Progress::Image { name, status } => ("image", name, status, 0),
        Progress::Bytes { digest, total, .. } => ("blob", digest.to_string(), "transferring", total),
    };
    let p = v1::ImportProgress { kind: kind.into(), id, status: status.into(), size: size as i64 };
    v1::ImportResponse { event: Some(v1::import_response::Event::Progress(p)) }
}

fn import_result(r: Imported) -> v1::ImportResponse {
    let result = v1::ImportResult { images: r.images.iter().map(image_message).collect(), bytes_read: r.bytes_read as i64 };
    v1::ImportResponse { event: Some(v1::import_response::Event::Result(result)) }
}

/// An import message after the first: a chunk of the archive.
fn import_chunk(m: v1::ImportRequest) -> Option<Vec<u8>> {
    match m.payload {
        Some(v1::import_request::Payload::Chunk(c)) => Some(c),
        _ => None,
    }
}

#[tonic::async_trait]
impl v1::images_server::Images for ImagesApi {
    async fn list(&self, req: Request<v1::ListImagesRequest>) -> Result<Response<v1::ListImagesResponse>, Status> {
        let ns = namespace(&req)?;
        let images = self.services.images.list(&ns, &req.get_ref().filters).await?;
        Ok(Response::new(v1::ListImagesResponse { images: images.iter().map(image_message).collect() }))
    }

    async fn get(&self, req: Request<v1::GetImageRequest>) -> Result<Response<v1::GetImageResponse>, Status> {
        let ns = namespace(&req)?;
        let image = self.services.images.get(&ns, &req.get_ref().name).await?;
        Ok(Response::new(v1::GetImageResponse { image: Some(image_message(&image)) }))
    }

    async fn inspect(&self, req: Request<v1::InspectImageRequest>) -> Result<Response<v1::InspectImageResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let d = self.services.images.inspect(&ns, &r.name, platform(&r.platform)?).await?;
        let res = &d.resolved;
        Ok(Response::new(v1::InspectImageResponse {
            image: Some(image_message(&d.info)),
            manifest: Some(convert::descriptor(&res.manifest_desc)),
            config: Some(convert::descriptor(&res.manifest.config)),
            layers: res.manifest.layers.iter().map(convert::descriptor).collect(),
            diff_ids: res.config.rootfs.diff_ids.iter().map(|d| d.to_string()).collect(),
            chain_ids: res.chain_ids.iter().map(|d| d.to_string()).collect(),
            config_json: res.config_json.clone(),
            manifest_json: res.manifest_json.clone(),
            platforms: res.platforms.iter().map(convert::platform).collect(),
            unpacked: d.unpacked,
        }))
    }

    async fn tag(&self, req: Request<v1::TagImageRequest>) -> Result<Response<v1::TagImageResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let image = self.services.images.tag(&ns, &r.source, &r.target, r.force).await?;
        Ok(Response::new(v1::TagImageResponse { image: Some(image_message(&image)) }))
    }

    async fn update_labels(&self, req: Request<v1::UpdateImageLabelsRequest>) -> Result<Response<v1::UpdateImageLabelsResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let image = self.services.images.update_labels(&ns, &r.name, r.labels.into_iter().collect()).await?;
        Ok(Response::new(v1::UpdateImageLabelsResponse { image: Some(image_message(&image)) }))
    }

    async fn delete(&self, req: Request<v1::DeleteImageRequest>) -> Result<Response<v1::DeleteImageResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let removed = self.services.images.remove(&ns, &r.name, r.force).await?;
        Ok(Response::new(v1::DeleteImageResponse {
            deleted: removed.names,
            blobs_removed: removed.blobs_removed as i64,
            snapshots_removed: removed.snapshots_removed as i64,
        }))
    }

    type ImportStream = MessageStream<v1::ImportResponse>;

    async fn import(&self, req: Request<Streaming<v1::ImportRequest>>) -> Result<Response<Self::ImportStream>, Status> {
        let ns = namespace(&req)?;
        let mut upload = req.into_inner();
        let first = tokio::time::timeout(UPLOAD_IDLE_TIMEOUT, upload.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no import options received"))??
            .ok_or_else(|| Status::invalid_argument("empty import stream"))?;
        let Some(v1::import_request::Payload::Options(o)) = first.payload else {
            return Err(Status::invalid_argument("the first import message must carry the options"));
        };
        let opts = import_options(o)?;
        let rx = self.services.images.import(&ns, upload_reader(upload, import_chunk), opts)?;
        Ok(Response::new(updates(rx, progress_message, import_result)))
    }

    type ImportPathStream = MessageStream<v1::ImportResponse>;

    async fn import_path(&self, req: Request<v1::ImportPathRequest>) -> Result<Response<Self::ImportPathStream>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let opts = import_options(r.options.unwrap_or_default())?;
        let rx = self.services.images.import_path(&ns, &r.path, opts).await?;
        Ok(Response::new(updates(rx, progress_message, import_result)))
    }

    type ExportStream = MessageStream<v1::ExportImagesResponse>;

    async fn export(&self, req: Request<v1::ExportImagesRequest>) -> Result<Response<Self::ExportStream>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let rx = self.services.images.export(&ns, r.names, platform(&r.platform)?).await?;
        Ok(Response::new(stream(rx, |data| v1::ExportImagesResponse { data })))
    }
}
