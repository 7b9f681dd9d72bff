//! The CRI's ImageService, on the images of the `k8s.io` namespace: images by name, by
//! `name@sha256:` reference and by id, grouped by id as the kubelet counts them.

use std::sync::Arc;

use berth_api::cri::{self, image_service_server::ImageServiceServer};
use tonic::{Request, Response, Status};

use super::NAMESPACE;
use crate::image::oci::Platform;
use crate::registry::{Credentials, PullOptions};
use crate::service::images::ImageGroup;
use crate::service::{Services, Update};

pub struct ImagesApi {
    services: Arc<Services>,
}

pub fn service(services: Arc<Services>) -> ImageServiceServer<ImagesApi> {
    ImageServiceServer::new(ImagesApi { services }).max_decoding_message_size(super::MAX_MESSAGE)
}

/// The image an ImageSpec names.
fn image_name(spec: Option<&cri::ImageSpec>) -> Result<&str, Status> {
    match spec.map(|s| s.image.as_str()) {
        Some(name) if !name.is_empty() => Ok(name),
        _ => Err(Status::invalid_argument("an image is required (ImageSpec.image)")),
    }
}

/// The CRI's Image: the user as a uid when it is numeric (`1000`, `1000:1000`), else as a name.
fn image_message(g: ImageGroup) -> cri::Image {
    let pinned = g.tags.contains(&crate::service::pods::pause_image());
    let user = g.user.split(':').next().unwrap_or_default();
    let (uid, username) = match user.parse::<i64>() {
        Ok(uid) => (Some(cri::Int64Value { value: uid }), String::new()),
        Err(_) => (None, user.to_owned()),
    };
    let id = g.id.to_string();
    cri::Image {
        spec: Some(cri::ImageSpec { image: id.clone(), ..Default::default() }),
        id,
        repo_tags: g.tags,
        repo_digests: g.digests,
        size: g.size,
        uid,
        username,
        // The pods' own image: the kubelet's image collection leaves it.
        pinned,
    }
}

/// Credentials from the kubelet's AuthConfig: a user and password, or docker's `auth`
/// (base64 of `user:password`).
fn credentials(auth: Option<cri::AuthConfig>) -> Result<Option<Credentials>, Status> {
    let Some(a) = auth else { return Ok(None) };
    if !a.username.is_empty() {
        return Ok(Some(Credentials { username: a.username, password: a.password }));
    }
    if !a.auth.is_empty() {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.auth.trim())
            .map_err(|_| Status::invalid_argument("AuthConfig.auth is not base64"))?;
        let text = String::from_utf8(raw).map_err(|_| Status::invalid_argument("AuthConfig.auth is not text"))?;
        let (username, password) =
            text.split_once(':').ok_or_else(|| Status::invalid_argument("AuthConfig.auth is not base64 of user:password"))?;
        return Ok(Some(Credentials { username: username.to_owned(), password: password.to_owned() }));
    }
    if !a.identity_token.is_empty() || !a.registry_token.is_empty() {
        return Err(Status::invalid_argument(
            "token credentials (identity_token, registry_token) are not supported: pass a user and password",
        ));
    }
    Ok(None)
}

#[tonic::async_trait]
impl cri::image_service_server::ImageService for ImagesApi {
    async fn list_images(&self, req: Request<cri::ListImagesRequest>) -> Result<Response<cri::ListImagesResponse>, Status> {
        let wanted = req.into_inner().filter.and_then(|f| f.image).map(|s| s.image).filter(|i| !i.is_empty());
        let images = match wanted {
            Some(name) => self.services.images.group(NAMESPACE, &name).await?.into_iter().collect(),
            None => self.services.images.groups(NAMESPACE).await?,
        };
        Ok(Response::new(cri::ListImagesResponse { images: images.into_iter().map(image_message).collect() }))
    }

    async fn image_status(&self, req: Request<cri::ImageStatusRequest>) -> Result<Response<cri::ImageStatusResponse>, Status> {
        let r = req.into_inner();
        let name = image_name(r.image.as_ref())?;
        // A missing image is no error: the answer holds no image.
        let image = self.services.images.group(NAMESPACE, name).await?.map(image_message);
        Ok(Response::new(cri::ImageStatusResponse { image, info: Default::default() }))
    }

    async fn pull_image(&self, req: Request<cri::PullImageRequest>) -> Result<Response<cri::PullImageResponse>, Status> {
        let limit = super::super::deadline(&req);
        let r = req.into_inner();
        let reference = image_name(r.image.as_ref())?.to_owned();
        let opts = PullOptions {
            reference: reference.clone(),
            platform: Platform::default_platform(),
            all_platforms: false,
            plain_http: false,
            creds: credentials(r.auth)?,
        };
        // Dropping the receiver (the deadline passed, the caller went away) stops the pull.
        let mut rx = self.services.images.pull(NAMESPACE, opts)?;
        let pulled = async {
            loop {
                match rx.recv().await {
                    Some(Update::Progress(_)) => {}
                    Some(Update::Done(r)) => break r.map_err(Status::from),
                    None => break Err(Status::internal("the pull stopped without a result")),
                }
            }
        };
        let info = match limit {
            Some(limit) => tokio::time::timeout(limit, pulled)
                .await
                .map_err(|_| Status::deadline_exceeded(format!("pulling {reference} took longer than the caller's deadline")))??,
            None => pulled.await?,
        };
        let image_ref = info.config_digest.map(|d| d.to_string()).unwrap_or_else(|| info.record.target.digest.to_string());
        Ok(Response::new(cri::PullImageResponse { image_ref }))
    }

    async fn remove_image(&self, req: Request<cri::RemoveImageRequest>) -> Result<Response<cri::RemoveImageResponse>, Status> {
        let r = req.into_inner();
        let name = image_name(r.image.as_ref())?;
        self.services.images.remove_image(NAMESPACE, name).await?;
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(&self, _req: Request<cri::ImageFsInfoRequest>) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        let fs = self.services.images.image_fs(NAMESPACE).await?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let usage = cri::FilesystemUsage {
            timestamp: i64::try_from(now.as_nanos()).unwrap_or(i64::MAX),
            fs_id: Some(cri::FilesystemIdentifier { mountpoint: fs.mountpoint.display().to_string() }),
            used_bytes: Some(cri::UInt64Value { value: fs.used_bytes }),
            inodes_used: None,
        };
        Ok(Response::new(cri::ImageFsInfoResponse { image_filesystems: vec![usage], container_filesystems: Vec::new() }))
    }
}
