//! Version service.

use std::sync::Arc;

use berth_api::v1::{self, version_server::VersionServer};
use tonic::{Request, Response, Status};

use super::{blocking, namespace};
use crate::server::Agent;

pub struct VersionService {
    agent: Arc<Agent>,
}

pub fn service(agent: Arc<Agent>) -> VersionServer<VersionService> {
    VersionServer::new(VersionService { agent })
}

pub fn version_info() -> v1::VersionInfo {
    v1::VersionInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        revision: option_env!("BERTH_REVISION").unwrap_or("").to_owned(),
        api_version: "v1".to_owned(),
    }
}

#[tonic::async_trait]
impl v1::version_server::Version for VersionService {
    async fn version(&self, _req: Request<v1::VersionRequest>) -> Result<Response<v1::VersionResponse>, Status> {
        Ok(Response::new(v1::VersionResponse { version: Some(version_info()) }))
    }

    async fn info(&self, req: Request<v1::InfoRequest>) -> Result<Response<v1::InfoResponse>, Status> {
        let ns = namespace(&req)?;
        let agent = self.agent.clone();
        blocking(move || {
            let blobs = agent.content.list()?;
            let kernel = rustix::system::uname().release().to_string_lossy().into_owned();
            let containers = agent.meta.containers(&ns)?;
            Ok(Response::new(v1::InfoResponse {
                version: Some(version_info()),
                root: agent.config.root.display().to_string(),
                state: agent.config.state.display().to_string(),
                address: agent.config.address.display().to_string(),
                snapshotter: agent.snapshots.snapshotter().name().to_owned(),
                snapshotter_reason: agent.snapshotter_reason.clone(),
                namespaces: agent.meta.namespaces()?,
                images: agent.meta.images(&ns)?.len() as i64,
                snapshots: agent.meta.snapshots(&ns)?.len() as i64,
                blobs: blobs.len() as i64,
                content_size: blobs.iter().map(|b| b.size as i64).sum(),
                kernel,
                pid: std::process::id() as i64,
                containers: containers.len() as i64,
                containers_running: containers.iter().filter(|c| agent.tasks.is_running(&ns, &c.id)).count() as i64,
                default_runtime: agent.tasks.config().default_runtime.clone(),
                runtimes: agent.tasks.config().runtimes.keys().cloned().collect(),
            }))
        })
        .await
    }
}
