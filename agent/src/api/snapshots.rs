//! Snapshots service.

use std::sync::Arc;

use berth_api::v1::{self, snapshots_server::SnapshotsServer};
use tonic::{Request, Response, Status};

use super::{blocking, convert, namespace, parse_filters};
use crate::server::Agent;

pub struct SnapshotsService {
    agent: Arc<Agent>,
}

pub fn service(agent: Arc<Agent>) -> SnapshotsServer<SnapshotsService> {
    SnapshotsServer::new(SnapshotsService { agent })
}

/// Labels under `berth.io/` and keys of the form `sha256:...` belong to the
/// agent (unpacked layers); clients may not create them.
fn not_reserved(key: &str, labels: &std::collections::HashMap<String, String>) -> Result<(), Status> {
    if key.starts_with("sha256:") {
        return Err(Status::invalid_argument(format!("snapshot keys starting with sha256: are reserved for unpacked layers: {key:?}")));
    }
    if let Some(l) = labels.keys().find(|l| l.starts_with("berth.io/")) {
        return Err(Status::invalid_argument(format!("labels under berth.io/ are reserved for the agent: {l:?}")));
    }
    Ok(())
}

fn required(field: &str, v: &str) -> Result<(), Status> {
    if v.is_empty() {
        Err(Status::invalid_argument(format!("{field} is required")))
    } else {
        Ok(())
    }
}

#[tonic::async_trait]
impl v1::snapshots_server::Snapshots for SnapshotsService {
    async fn prepare(&self, req: Request<v1::PrepareSnapshotRequest>) -> Result<Response<v1::PrepareSnapshotResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        required("key", &r.key)?;
        not_reserved(&r.key, &r.labels)?;
        let agent = self.agent.clone();
        blocking(move || {
            let _gc = agent.images.gc_lock.read().unwrap_or_else(|e| e.into_inner());
            let mounts = agent.snapshots.prepare(&ns, &r.key, &r.parent, r.labels.into_iter().collect())?;
            Ok(Response::new(v1::PrepareSnapshotResponse { mounts: mounts.iter().map(convert::mount).collect() }))
        })
        .await
    }

    async fn view(&self, req: Request<v1::ViewSnapshotRequest>) -> Result<Response<v1::ViewSnapshotResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        required("key", &r.key)?;
        required("parent", &r.parent)?;
        not_reserved(&r.key, &r.labels)?;
        let agent = self.agent.clone();
        blocking(move || {
            let _gc = agent.images.gc_lock.read().unwrap_or_else(|e| e.into_inner());
            let mounts = agent.snapshots.view(&ns, &r.key, &r.parent, r.labels.into_iter().collect())?;
            Ok(Response::new(v1::ViewSnapshotResponse { mounts: mounts.iter().map(convert::mount).collect() }))
        })
        .await
    }

    async fn commit(&self, req: Request<v1::CommitSnapshotRequest>) -> Result<Response<v1::CommitSnapshotResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        required("name", &r.name)?;
        required("key", &r.key)?;
        not_reserved(&r.name, &r.labels)?;
        let agent = self.agent.clone();
        blocking(move || {
            agent.snapshots.commit(&ns, &r.name, &r.key, r.labels.into_iter().collect())?;
            Ok(Response::new(v1::CommitSnapshotResponse {}))
        })
        .await
    }

    async fn remove(&self, req: Request<v1::RemoveSnapshotRequest>) -> Result<Response<v1::RemoveSnapshotResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        required("key", &r.key)?;
        let agent = self.agent.clone();
        blocking(move || {
            agent.snapshots.remove(&ns, &r.key)?;
            Ok(Response::new(v1::RemoveSnapshotResponse {}))
        })
        .await
    }

    async fn mounts(&self, req: Request<v1::MountsRequest>) -> Result<Response<v1::MountsResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let agent = self.agent.clone();
        blocking(move || {
            let mounts = agent.snapshots.mounts(&ns, &r.key)?;
            Ok(Response::new(v1::MountsResponse { mounts: mounts.iter().map(convert::mount).collect() }))
        })
        .await
    }

    async fn stat(&self, req: Request<v1::StatSnapshotRequest>) -> Result<Response<v1::StatSnapshotResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let agent = self.agent.clone();
        blocking(move || {
            let rec = agent.snapshots.stat(&ns, &r.key)?;
            let name = agent.snapshots.snapshotter().name();
            Ok(Response::new(v1::StatSnapshotResponse { info: Some(convert::snapshot(&rec, name)) }))
        })
        .await
    }

    async fn list(&self, req: Request<v1::ListSnapshotsRequest>) -> Result<Response<v1::ListSnapshotsResponse>, Status> {
        let ns = namespace(&req)?;
        let filters = parse_filters(&req.get_ref().filters)?;
        let agent = self.agent.clone();
        blocking(move || {
            let name = agent.snapshots.snapshotter().name();
            let mut out = Vec::new();
            for rec in agent.snapshots.list(&ns)? {
                let keep = filters.iter().all(|(k, v, _)| match (k.as_str(), v) {
                    ("kind", Some(v)) => rec.kind.as_str() == v,
                    ("parent", Some(v)) => rec.parent == *v,
                    ("key", Some(v)) => rec.key == *v,
                    (k, v) => match k.strip_prefix("label.") {
                        Some(l) => match v {
                            None => rec.labels.contains_key(l),
                            Some(v) => rec.labels.get(l) == Some(v),
                        },
                        None => false,
                    },
                });
                if keep {
                    out.push(convert::snapshot(&rec, name));
                }
            }
            Ok(Response::new(v1::ListSnapshotsResponse { snapshots: out }))
        })
        .await
    }

    async fn usage(&self, req: Request<v1::UsageRequest>) -> Result<Response<v1::UsageResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let agent = self.agent.clone();
        blocking(move || {
            let u = agent.snapshots.usage(&ns, &r.key)?;
            Ok(Response::new(v1::UsageResponse { size: u.size as i64, inodes: u.inodes as i64 }))
        })
        .await
    }
}
