//! Networks: made, listed, removed; the CNI lists behind them and the
//! attachments of containers are `network::Networks`'.

use std::sync::Arc;

use super::containers::find;
use super::{blocking, validate_labels, Core, Error};
use crate::container::config::NetworkMode;
use crate::network::{EndpointSpec, Network, NewNetwork};

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

    /// Join container `container` (of namespace `ns`) to `network`: now if
    /// it runs, and in its record for every later run.
    pub async fn connect(&self, ns: &str, network: &str, container: &str, aliases: Vec<String>, ip: String) -> Result<(), Error> {
        crate::network::check_aliases(&aliases)?;
        let rec = find(&self.core, ns, container).await?;
        if rec.config.network != NetworkMode::Networks {
            return Err(Error::FailedPrecondition(format!(
                "container {} has --net none, host or container: and joins no network",
                rec.name
            )));
        }
        let net = self.core.networks.get(network)?;
        let mut list = crate::runtime::network_endpoints(&rec);
        if list.iter().any(|e| self.core.networks.get(&e.network).is_ok_and(|n| n.name == net.name)) {
            return Err(Error::Network(crate::network::NetworkError::AlreadyExists(format!(
                "container {} is already on network {:?}",
                rec.name, net.name
            ))));
        }
        let spec = EndpointSpec { network: net.name.clone(), aliases, ip };
        let (networks, endpoint) = (self.core.networks.clone(), spec.clone());
        blocking(move || Ok(networks.check(&[endpoint], &[])?)).await?;
        if self.core.networks.attachment(ns, &rec.id).is_some() {
            let names = [rec.name.clone(), rec.id[..12].to_owned()];
            self.core.networks.attach_one(ns, &rec.id, &names, &spec).await?;
        }
        list.push(spec);
        let (core, ns2, id) = (self.core.clone(), ns.to_owned(), rec.id.clone());
        blocking(move || Ok(core.containers.set_networks(&ns2, &id, list)?)).await?;
        self.core.events.publish(ns, "/networks/connect", &rec.id, &[("network", net.name)]);
        Ok(())
    }

    /// Take container `container` off `network`: now if it runs, and from its record.
    pub async fn disconnect(&self, ns: &str, network: &str, container: &str) -> Result<(), Error> {
        let rec = find(&self.core, ns, container).await?;
        let net = self.core.networks.get(network)?;
        let mut list = crate::runtime::network_endpoints(&rec);
        let before = list.len();
        list.retain(|e| self.core.networks.get(&e.network).map_or(e.network != net.name, |n| n.name != net.name));
        if rec.config.network != NetworkMode::Networks || list.len() == before {
            return Err(Error::NotFound(format!("container {} is not on network {:?}", rec.name, net.name)));
        }
        if list.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "network {:?} is the last network of container {}: a container on no network runs with --net none",
                net.name, rec.name
            )));
        }
        self.core.networks.detach_one(ns, &rec.id, &net.name).await?;
        let (core, ns2, id) = (self.core.clone(), ns.to_owned(), rec.id.clone());
        blocking(move || Ok(core.containers.set_networks(&ns2, &id, list)?)).await?;
        self.core.events.publish(ns, "/networks/disconnect", &rec.id, &[("network", net.name)]);
        Ok(())
    }
}
