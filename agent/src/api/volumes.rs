//! Volumes service.

use std::sync::Arc;

use berth_api::v1::{self, volumes_server::VolumesServer};
use tonic::{Request, Response, Status};

use super::{convert, namespace};
use crate::service::volumes::VolumeView;
use crate::service::Services;

pub struct VolumesApi {
    services: Arc<Services>,
}

pub fn service(services: Arc<Services>) -> VolumesServer<VolumesApi> {
    VolumesServer::new(VolumesApi { services })
}

fn volume_message(v: VolumeView) -> v1::Volume {
    v1::Volume {
        created_at: convert::timestamp(v.record.created),
        name: v.record.name,
        driver: "local".into(),
        mountpoint: v.mountpoint,
        labels: v.record.labels.into_iter().collect(),
        anonymous: v.record.anonymous,
        containers: v.containers,
        size: v.size.unwrap_or(0),
    }
}

#[tonic::async_trait]
impl v1::volumes_server::Volumes for VolumesApi {
    async fn create(&self, req: Request<v1::CreateVolumeRequest>) -> Result<Response<v1::CreateVolumeResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let v = self.services.volumes.create(&ns, &r.name, r.labels.into_iter().collect(), &r.driver).await?;
        Ok(Response::new(v1::CreateVolumeResponse { volume: Some(volume_message(v)) }))
    }

    async fn get(&self, req: Request<v1::GetVolumeRequest>) -> Result<Response<v1::GetVolumeResponse>, Status> {
        let ns = namespace(&req)?;
        let v = self.services.volumes.get(&ns, &req.get_ref().name).await?;
        Ok(Response::new(v1::GetVolumeResponse { volume: Some(volume_message(v)) }))
    }

    async fn list(&self, req: Request<v1::ListVolumesRequest>) -> Result<Response<v1::ListVolumesResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let all = self.services.volumes.list(&ns, &r.filters, r.sizes).await?;
        Ok(Response::new(v1::ListVolumesResponse { volumes: all.into_iter().map(volume_message).collect() }))
    }

    async fn remove(&self, req: Request<v1::RemoveVolumeRequest>) -> Result<Response<v1::RemoveVolumeResponse>, Status> {
        let ns = namespace(&req)?;
        let name = self.services.volumes.remove(&ns, &req.get_ref().name).await?;
        Ok(Response::new(v1::RemoveVolumeResponse { name }))
    }

    async fn prune(&self, req: Request<v1::PruneVolumesRequest>) -> Result<Response<v1::PruneVolumesResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let p = self.services.volumes.prune(&ns, r.all, &r.filters).await?;
        Ok(Response::new(v1::PruneVolumesResponse { removed: p.removed, reclaimed_bytes: p.reclaimed_bytes }))
    }
}
