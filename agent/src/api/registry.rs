//! Registry service: pull, push, login check.

use std::sync::Arc;

use berth_api::v1::{self, registry_server::RegistryServer};
use tonic::{Request, Response, Status};

use super::images::{image_message, platform};
use super::{namespace, updates, MessageStream};
use crate::image::Progress;
use crate::registry::{Credentials, PullOptions, PushOptions};
use crate::service::Services;

pub struct RegistryApi {
    services: Arc<Services>,
}

pub fn service(services: Arc<Services>) -> RegistryServer<RegistryApi> {
    RegistryServer::new(RegistryApi { services })
}

pub(super) fn creds(c: Option<v1::RegistryCredentials>) -> Option<Credentials> {
    c.filter(|c| !c.username.is_empty()).map(|c| Credentials { username: c.username, password: c.password })
}

pub(super) fn progress_message(p: Progress) -> v1::TransferProgress {
    let (kind, id, status, size, offset) = match p {
        Progress::Blob { digest, size, status } => ("blob", digest.to_string(), status, size, 0),
        Progress::Bytes { digest, done, total } => ("blob", digest.to_string(), "transferring", total, done),
        Progress::Layer { digest, size, status } => ("layer", digest.to_string(), status, size, 0),
        Progress::Image { name, status } => ("image", name, status, 0, 0),
    };
    v1::TransferProgress { kind: kind.into(), id, status: status.into(), size: size as i64, offset: offset as i64 }
}

#[tonic::async_trait]
impl v1::registry_server::Registry for RegistryApi {
    type PullStream = MessageStream<v1::PullResponse>;

    async fn pull(&self, req: Request<v1::PullRequest>) -> Result<Response<Self::PullStream>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let opts = PullOptions {
            reference: r.reference,
            platform: platform(&r.platform)?,
            all_platforms: r.all_platforms,
            plain_http: r.plain_http,
            creds: creds(r.credentials),
        };
        let rx = self.services.images.pull(&ns, opts)?;
        Ok(Response::new(updates(
            rx,
            |p| v1::PullResponse { event: Some(v1::pull_response::Event::Progress(progress_message(p))) },
            |info| v1::PullResponse { event: Some(v1::pull_response::Event::Image(image_message(&info))) },
        )))
    }

    type PushStream = MessageStream<v1::PushResponse>;

    async fn push(&self, req: Request<v1::PushRequest>) -> Result<Response<Self::PushStream>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let opts = PushOptions { reference: r.reference, plain_http: r.plain_http, creds: creds(r.credentials) };
        let rx = self.services.images.push(&ns, opts)?;
        Ok(Response::new(updates(
            rx,
            |p| v1::PushResponse { event: Some(v1::push_response::Event::Progress(progress_message(p))) },
            |digest| v1::PushResponse { event: Some(v1::push_response::Event::Digest(digest.to_string())) },
        )))
    }

    async fn check_login(&self, req: Request<v1::CheckLoginRequest>) -> Result<Response<v1::CheckLoginResponse>, Status> {
        let r = req.into_inner();
        self.services.images.check_login(&r.registry, r.plain_http, creds(r.credentials)).await?;
        Ok(Response::new(v1::CheckLoginResponse {}))
    }
}
