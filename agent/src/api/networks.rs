//! Networks service.

use std::sync::Arc;

use berth_api::v1::{self, networks_server::NetworksServer};
use tonic::{Request, Response, Status};

use super::{convert, namespace};
use crate::network::NewNetwork;
use crate::service::networks::NetworkView;
use crate::service::Services;

pub struct NetworksApi {
    services: Arc<Services>,
}

pub fn service(services: Arc<Services>) -> NetworksServer<NetworksApi> {
    NetworksServer::new(NetworksApi { services })
}

fn network_message(v: &NetworkView) -> v1::Network {
    let n = &v.network;
    v1::Network {
        name: n.name.clone(),
        id: n.id.clone(),
        driver: n.driver.clone(),
        subnet: n.subnet.clone(),
        gateway: n.gateway.clone(),
        internal: n.internal,
        options: n.options.clone().into_iter().collect(),
        labels: n.labels.clone().into_iter().collect(),
        created_at: if n.created > 0 { convert::timestamp(n.created) } else { None },
        managed: n.managed,
        plugins: n.plugins.clone(),
        path: n.path.display().to_string(),
        bridge: n.bridge.clone(),
        containers: v.containers.clone(),
        dns: n.dns,
    }
}

#[tonic::async_trait]
impl v1::networks_server::Networks for NetworksApi {
    async fn create(&self, req: Request<v1::CreateNetworkRequest>) -> Result<Response<v1::CreateNetworkResponse>, Status> {
        let r = req.into_inner();
        let new = NewNetwork {
            name: r.name,
            driver: r.driver,
            subnet: r.subnet,
            gateway: r.gateway,
            internal: r.internal,
            options: r.options.into_iter().collect(),
            labels: r.labels.into_iter().collect(),
        };
        let v = self.services.networks.create(new).await?;
        Ok(Response::new(v1::CreateNetworkResponse { network: Some(network_message(&v)) }))
    }

    async fn get(&self, req: Request<v1::GetNetworkRequest>) -> Result<Response<v1::GetNetworkResponse>, Status> {
        let v = self.services.networks.get(&req.get_ref().name).await?;
        Ok(Response::new(v1::GetNetworkResponse { network: Some(network_message(&v)) }))
    }

    async fn list(&self, _req: Request<v1::ListNetworksRequest>) -> Result<Response<v1::ListNetworksResponse>, Status> {
        let all = self.services.networks.list().await?;
        Ok(Response::new(v1::ListNetworksResponse { networks: all.iter().map(network_message).collect() }))
    }

    async fn remove(&self, req: Request<v1::RemoveNetworkRequest>) -> Result<Response<v1::RemoveNetworkResponse>, Status> {
        let name = self.services.networks.remove(&req.get_ref().name).await?;
        Ok(Response::new(v1::RemoveNetworkResponse { name }))
    }

    async fn prune(&self, _req: Request<v1::PruneNetworksRequest>) -> Result<Response<v1::PruneNetworksResponse>, Status> {
        let removed = self.services.networks.prune().await?;
        Ok(Response::new(v1::PruneNetworksResponse { removed }))
    }

    async fn connect(&self, req: Request<v1::ConnectNetworkRequest>) -> Result<Response<v1::ConnectNetworkResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.services.networks.connect(&ns, &r.network, &r.container, r.aliases, r.ipv4_address).await?;
        Ok(Response::new(v1::ConnectNetworkResponse {}))
    }

    async fn disconnect(&self, req: Request<v1::DisconnectNetworkRequest>) -> Result<Response<v1::DisconnectNetworkResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.services.networks.disconnect(&ns, &r.network, &r.container).await?;
        Ok(Response::new(v1::DisconnectNetworkResponse {}))
    }
}
