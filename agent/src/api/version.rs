//! Version service.

use std::sync::Arc;

use berth_api::v1::{self, version_server::VersionServer};
use tonic::{Request, Response, Status};

use super::namespace;
use crate::service::system::Version;
use crate::service::Services;

pub struct VersionApi {
    services: Arc<Services>,
}

pub fn service(services: Arc<Services>) -> VersionServer<VersionApi> {
    VersionServer::new(VersionApi { services })
}

fn version_message(v: &Version) -> v1::VersionInfo {
    v1::VersionInfo { version: v.version.to_owned(), revision: v.revision.to_owned(), api_version: v.api_version.to_owned() }
}

#[tonic::async_trait]
impl v1::version_server::Version for VersionApi {
    async fn version(&self, _req: Request<v1::VersionRequest>) -> Result<Response<v1::VersionResponse>, Status> {
        Ok(Response::new(v1::VersionResponse { version: Some(version_message(&self.services.system.version())) }))
    }

    async fn info(&self, req: Request<v1::InfoRequest>) -> Result<Response<v1::InfoResponse>, Status> {
        let ns = namespace(&req)?;
        let i = self.services.system.info(&ns).await?;
        Ok(Response::new(v1::InfoResponse {
            version: Some(version_message(&i.version)),
            root: i.root,
            state: i.state,
            address: i.address,
            snapshotter: i.snapshotter.to_owned(),
            snapshotter_reason: i.snapshotter_reason,
            namespaces: i.namespaces,
            images: i.images as i64,
            snapshots: i.snapshots as i64,
            blobs: i.blobs as i64,
            content_size: i.content_size as i64,
            kernel: i.kernel,
            pid: i.pid as i64,
            containers: i.containers as i64,
            containers_running: i.containers_running as i64,
            default_runtime: i.default_runtime,
            runtimes: i.runtimes,
        }))
    }
}
