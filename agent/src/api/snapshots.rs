//! Snapshots service.

use std::sync::Arc;

use berth_api::v1::{self, snapshots_server::SnapshotsServer};
use tonic::{Request, Response, Status};

use super::{convert, namespace};
use crate::service::Services;

pub struct SnapshotsApi {
    services: Arc<Services>,
}

pub fn service(services: Arc<Services>) -> SnapshotsServer<SnapshotsApi> {
    SnapshotsServer::new(SnapshotsApi { services })
}

fn mounts(m: &[crate::snapshot::Mount]) -> Vec<v1::Mount> {
    m.iter().map(convert::mount).collect()
}

#[tonic::async_trait]
impl v1::snapshots_server::Snapshots for SnapshotsApi {
    async fn prepare(&self, req: Request<v1::PrepareSnapshotRequest>) -> Result<Response<v1::PrepareSnapshotResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let m = self.services.snapshots.prepare(&ns, &r.key, &r.parent, r.labels.into_iter().collect()).await?;
        Ok(Response::new(v1::PrepareSnapshotResponse { mounts: mounts(&m) }))
    }

    async fn view(&self, req: Request<v1::ViewSnapshotRequest>) -> Result<Response<v1::ViewSnapshotResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let m = self.services.snapshots.view(&ns, &r.key, &r.parent, r.labels.into_iter().collect()).await?;
        Ok(Response::new(v1::ViewSnapshotResponse { mounts: mounts(&m) }))
    }

    async fn commit(&self, req: Request<v1::CommitSnapshotRequest>) -> Result<Response<v1::CommitSnapshotResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.services.snapshots.commit(&ns, &r.name, &r.key, r.labels.into_iter().collect()).await?;
        Ok(Response::new(v1::CommitSnapshotResponse {}))
    }

    async fn remove(&self, req: Request<v1::RemoveSnapshotRequest>) -> Result<Response<v1::RemoveSnapshotResponse>, Status> {
        let ns = namespace(&req)?;
        self.services.snapshots.remove(&ns, &req.get_ref().key).await?;
        Ok(Response::new(v1::RemoveSnapshotResponse {}))
    }

    async fn mounts(&self, req: Request<v1::MountsRequest>) -> Result<Response<v1::MountsResponse>, Status> {
        let ns = namespace(&req)?;
        let m = self.services.snapshots.mounts(&ns, &req.get_ref().key).await?;
        Ok(Response::new(v1::MountsResponse { mounts: mounts(&m) }))
    }

    async fn stat(&self, req: Request<v1::StatSnapshotRequest>) -> Result<Response<v1::StatSnapshotResponse>, Status> {
        let ns = namespace(&req)?;
        let rec = self.services.snapshots.stat(&ns, &req.get_ref().key).await?;
        Ok(Response::new(v1::StatSnapshotResponse { info: Some(convert::snapshot(&rec, self.services.snapshots.snapshotter())) }))
    }

    async fn list(&self, req: Request<v1::ListSnapshotsRequest>) -> Result<Response<v1::ListSnapshotsResponse>, Status> {
        let ns = namespace(&req)?;
        let recs = self.services.snapshots.list(&ns, &req.get_ref().filters).await?;
        let name = self.services.snapshots.snapshotter();
        Ok(Response::new(v1::ListSnapshotsResponse { snapshots: recs.iter().map(|r| convert::snapshot(r, name)).collect() }))
    }

    async fn usage(&self, req: Request<v1::UsageRequest>) -> Result<Response<v1::UsageResponse>, Status> {
        let ns = namespace(&req)?;
        let u = self.services.snapshots.usage(&ns, &req.get_ref().key).await?;
        Ok(Response::new(v1::UsageResponse { size: u.size as i64, inodes: u.inodes as i64 }))
    }
}
