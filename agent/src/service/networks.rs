//! Networks: made, listed, removed; the CNI lists behind them and the
//! attachments of containers are `network::Networks`'.

use std::sync::Arc;

use super::{blocking, validate_labels, Core, Error};
use crate::network::{Network, NewNetwork};

/// A network with the containers attached to it now.
#[derive(Debug, Clone)]
pub struct NetworkView {
    pub network: Network,
    pub containers: Vec<String>,
}

#[derive(Clone)]
pub struct NetworkService {
    core: Arc<Core>,
}

impl NetworkService {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        NetworkService { core }
    }

    fn view(&self, network: Network) -> NetworkView {
        let containers = self.core.networks.users(&network.name);
        NetworkView { network, containers }
    }

    pub async fn create(&self, req: NewNetwork) -> Result<NetworkView, Error> {
        validate_labels(&req.labels)?;
        let networks = self.core.networks.clone();
        let net = blocking(move || Ok(networks.create(req)?)).await?;
        self.core.events.publish("", "/networks/create", &net.id, &[("name", net.name.clone())]);
        Ok(self.view(net))
    }

    pub async fn get(&self, name: &str) -> Result<NetworkView, Error> {
        let net = self.core.networks.get(name)?;
        Ok(self.view(net))
    }

    pub async fn list(&self) -> Result<Vec<NetworkView>, Error> {
        let networks = self.core.networks.clone();
        let all = blocking(move || Ok(networks.list())).await?;
        Ok(all.into_iter().map(|n| self.view(n)).collect())
    }

    pub async fn remove(&self, name: &str) -> Result<String, Error> {
        let (networks, name) = (self.core.networks.clone(), name.to_owned());
        let net = blocking(move || Ok(networks.remove(&name)?)).await?;
        self.core.events.publish("", "/networks/delete", &net.id, &[("name", net.name.clone())]);
        Ok(net.name)
    }

    /// Remove every network the agent made that no container uses; their names.
    pub async fn prune(&self) -> Result<Vec<String>, Error> {
        let mut removed = Vec::new();
        for v in self.list().await? {
            let n = &v.network;
            if !n.managed || n.name == crate::network::DEFAULT_NETWORK || !v.containers.is_empty() {
                continue;
            }
            match self.remove(&n.name).await {
                Ok(name) => removed.push(name),
                // Taken meanwhile: kept.
                Err(Error::Network(crate::network::NetworkError::InUse(_))) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }
}
