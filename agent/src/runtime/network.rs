//! The network side of a task: before its shim runs the container, the
//! namespace it joins is made and attached (or found, for `container:`),
//! its `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname` are written, and
//! the spec the runtime reads names both; when the task is deleted, the
//! attachment is released in the background.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};

use super::{TaskError, Tasks};
use crate::container::config::NetworkMode;
use crate::metadata::ContainerRecord;
use crate::network::{files, short, EndpointSpec, NetworkError, DEFAULT_NETWORK};

impl From<NetworkError> for TaskError {
    fn from(e: NetworkError) -> Self {
        match e {
            NetworkError::NotFound(_) => TaskError::NotFound(e.to_string()),
            NetworkError::AlreadyExists(_) | NetworkError::Conflict(_) => TaskError::AlreadyExists(e.to_string()),
            NetworkError::Invalid(_) => TaskError::InvalidArgument(e.to_string()),
            NetworkError::InUse(_) => TaskError::FailedPrecondition(e.to_string()),
            NetworkError::Cni(crate::network::cni::CniError::Timeout { .. }) => TaskError::Timeout(e.to_string()),
            NetworkError::Io { path, source } => TaskError::Io { path, source },
            e => TaskError::Runtime(e.to_string()),
        }
    }
}

/// The endpoints of a container on networks: its own, or the default network's.
pub fn endpoints(rec: &ContainerRecord) -> Vec<EndpointSpec> {
    if rec.config.networks.is_empty() {
        vec![EndpointSpec { network: DEFAULT_NETWORK.into(), ..Default::default() }]
    } else {
        rec.config.networks.clone()
    }
}

impl Tasks {
    /// Prepare the network of a task about to be made; the spec (as JSON)
    /// the runtime is to read. Attached networks are released again if a
    /// later step fails ([`Tasks::release_network`]).
    pub(super) async fn network_spec(self: &Arc<Self>, ns: &str, rec: &ContainerRecord) -> Result<Value, TaskError> {
        let stored = {
            let (containers, ns, id) = (self.containers.clone(), ns.to_owned(), rec.id.clone());
            tokio::task::spawn_blocking(move || containers.spec(&ns, &id))
                .await
                .map_err(|e| TaskError::Internal(e.to_string()))?
                .map_err(TaskError::Container)?
        };
        let mut spec = serde_json::to_value(&stored).map_err(|e| TaskError::Internal(format!("encoding the spec: {e}")))?;
        let hostname = stored.hostname().clone().unwrap_or_default();
        let own_dir = self.containers.dir(ns, &rec.id);
        let mut resolver: Option<String> = None;
        let (netns, files_dir, ips, own_netns): (Option<PathBuf>, PathBuf, Vec<Ipv4Addr>, bool) = match &rec.config.network {
            NetworkMode::Host => (None, own_dir, Vec::new(), false),
            NetworkMode::None => (None, own_dir, Vec::new(), true),
            NetworkMode::Networks => {
                let names = [rec.name.clone(), short(&rec.id).to_owned()];
                // A container that can change its network (NET_ADMIN) does not give its namespace back to the pool.
                let caps =
                    |list: &[String]| list.iter().any(|c| matches!(c.to_ascii_uppercase().trim_start_matches("CAP_"), "NET_ADMIN" | "ALL"));
                let recyclable = !rec.config.privileged && !caps(&rec.config.cap_add);
                let att = self.networks.attach(ns, &rec.id, &names, &endpoints(rec), &rec.config.ports, recyclable).await?;
                let ips = att.endpoints.iter().flat_map(|e| e.addresses.ipv4()).collect();
                // On a network that resolves names, the agent's server on its gateway is the container's resolver.
                resolver =
                    att.endpoints.first().filter(|e| !e.names.is_empty()).map(|e| e.addresses.gateway.clone()).filter(|g| !g.is_empty());
                (Some(att.netns), own_dir, ips, true)
            }
            NetworkMode::Container(target) => {
                let path = self.netns_of(ns, target).await?;
                // Shared now: the namespace is not the pool's to take back when its owner ends.
                self.networks.keep_out_of_pool(ns, target);
                // The files of the container whose network it shares, as docker does.
                (Some(path), self.containers.dir(ns, target), Vec::new(), true)
            }
        };
        let joined = !matches!(rec.config.network, NetworkMode::Container(_));
        if joined {
            let (mut servers, search) = files::host_resolvers(own_netns);
            if let Some(r) = resolver {
                servers = vec![r];
            }
            let extra_hosts =
                rec.config.extra_hosts.iter().filter_map(|h| h.split_once(':').map(|(n, i)| (n.to_owned(), i.to_owned()))).collect();
            let input = files::Input {
                hostname,
                ips,
                extra_hosts,
                dns: rec.config.dns.clone(),
                dns_search: rec.config.dns_search.clone(),
                dns_options: rec.config.dns_options.clone(),
                default_nameservers: servers,
                default_search: search,
            };
            let dir = files_dir.clone();
            let written =
                tokio::task::spawn_blocking(move || files::write(&dir, &input)).await.map_err(|e| TaskError::Internal(e.to_string()))?;
            if let Err(e) = written {
                self.release_network(ns, &rec.id);
                return Err(TaskError::Io { path: files_dir, source: e });
            }
        }
        patch(&mut spec, netns.as_deref(), &files_dir);
        // The process and IPC namespaces another container lends (a pod's).
        for (target, kind, oci) in [(&rec.config.pid_container, "pid", "pid"), (&rec.config.ipc_container, "ipc", "ipc")] {
            if let Some(target) = target {
                let path = match self.namespace_of(ns, target, kind).await {
                    Ok(p) => p,
                    Err(e) => {
                        self.release_network(ns, &rec.id);
                        return Err(e);
                    }
                };
                set_namespace_path(&mut spec, oci, &path);
            }
        }
        Ok(spec)
    }

    /// The network namespace of container `target` (an id): its attachment's,
    /// or its running init's.
    async fn netns_of(&self, ns: &str, target: &str) -> Result<PathBuf, TaskError> {
        if let Some(att) = self.networks.attachment(ns, target) {
            return Ok(att.netns.clone());
        }
        self.namespace_of(ns, target, "net").await
    }

    /// The path of namespace `kind` (`net`, `ipc`, `pid`) of container `target`'s running init.
    async fn namespace_of(&self, ns: &str, target: &str, kind: &str) -> Result<PathBuf, TaskError> {
        let task = self.live_task(ns, target).filter(|t| t.exit.borrow().is_none());
        let what = match kind {
            "net" => "network",
            "ipc" => "IPC namespace",
            _ => "process namespace",
        };
        let not_running =
            || TaskError::FailedPrecondition(format!("cannot join the {what} of container {}: it is not running", short(target)));
        let task = task.ok_or_else(not_running)?;
        let state = self.shim_state(&task).await?;
        if state.init.pid == 0 || state.init.status != super::ProcessStatus::Running {
            return Err(not_running());
        }
        Ok(PathBuf::from(format!("/proc/{}/ns/{kind}", state.init.pid)))
    }

    /// Release a container's networks in the background (its task is gone).
    pub(super) fn release_network(&self, ns: &str, id: &str) {
        if self.networks.attachment(ns, id).is_none() {
            return;
        }
        let generation = self.networks.attachment(ns, id).map(|a| a.generation);
        self.networks.releasing(ns, id);
        let (networks, ns, id) = (self.networks.clone(), ns.to_owned(), id.to_owned());
        tokio::spawn(async move { networks.detach_generation(&ns, &id, generation).await });
    }
}

/// Make the spec's namespace of type `kind` the one at `path`.
fn set_namespace_path(spec: &mut Value, kind: &str, path: &Path) {
    if let Some(list) = spec.pointer_mut("/linux/namespaces").and_then(Value::as_array_mut) {
        match list.iter_mut().find(|n| n.get("type").and_then(Value::as_str) == Some(kind)) {
            Some(n) => n["path"] = json!(path),
            None => list.push(json!({"type": kind, "path": path})),
        }
    }
}

/// Name the namespace (when the container joins one made for it) and bind
/// the three files, unless the user mounts something there.
fn patch(spec: &mut Value, netns: Option<&Path>, files_dir: &Path) {
    if let Some(path) = netns {
        set_namespace_path(spec, "network", path);
    }
    let Some(mounts) = spec.get_mut("mounts").and_then(Value::as_array_mut) else { return };
    for name in files::FILES {
        let dest = format!("/etc/{name}");
        if mounts.iter().any(|m| m.get("destination").and_then(Value::as_str) == Some(dest.as_str())) {
            continue;
        }
        mounts.push(json!({
            "destination": dest,
            "type": "bind",
            "source": files_dir.join(name),
            "options": ["rbind", "rprivate"],
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_names_the_namespace_and_binds_the_files_the_user_does_not() {
        let mut spec = json!({
            "mounts": [{"destination": "/etc/resolv.conf", "type": "bind", "source": "/mine", "options": ["rbind"]}],
            "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}]},
        });
        patch(&mut spec, Some(Path::new("/run/berth/netns/default/c1")), Path::new("/var/lib/berth/containers/default/c1"));
        assert_eq!(spec["linux"]["namespaces"][1], json!({"type": "network", "path": "/run/berth/netns/default/c1"}));
        let dests: Vec<&str> = spec["mounts"].as_array().unwrap().iter().map(|m| m["destination"].as_str().unwrap()).collect();
        assert_eq!(dests, ["/etc/resolv.conf", "/etc/hosts", "/etc/hostname"]);
        assert_eq!(spec["mounts"][0]["source"], "/mine");
        assert_eq!(spec["mounts"][1]["source"], "/var/lib/berth/containers/default/c1/hosts");
    }
}
