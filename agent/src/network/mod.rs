//! Container networks through CNI: the networks are configuration lists in
//! a conf dir (those the agent writes carry a `berth` key with its own
//! fields, as nerdctl does with its own), and a container on networks gets a
//! named network namespace under `<state>/netns/` that the agent attaches to
//! each of them with the plugins' `ADD` before its task starts, and detaches
//! with `DEL` when the task is deleted.
//!
//! What an attachment did (its namespace, each network's result, the ports)
//! is kept in `<state>/netns/<ns>/<id>.json`, written before the first
//! plugin runs: after a crash the agent finds every attachment it began and
//! releases those no running container owns ([`Networks::reconcile`]).

pub mod cni;
pub mod dns;
pub mod files;
pub mod firewall;
pub mod netns;
pub mod subnet;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::keyed::{NsId, NsMap};
use cni::{Addresses, Call, Cni, CniError, ConfList, PortMapping, RuntimeArgs};
use dns::Names;
use subnet::Subnet;

/// The network `run` uses without `--net`.
pub const DEFAULT_NETWORK: &str = "bridge";

/// The records of namespaces attached ahead of time to the default
/// network, under `<state>/netns/.pool/`: a `run` on it takes one instead of
/// waiting for the plugins, and gives it back when its task ends (see
/// [`Networks::attach`]).
const POOL_NS: &str = ".pool";

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("network {0:?} not found")]
    NotFound(String),
    #[error("network {0:?} already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    InUse(String),
    #[error("{0}")]
    Exhausted(String),
    #[error(transparent)]
    Cni(#[from] CniError),
    #[error("network state {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NetworkError + '_ {
    move |source| NetworkError::Io { path: path.to_owned(), source }
}

/// Where networks are configured and how the default one looks.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// CNI configuration lists (`/etc/berth/cni/net.d`).
    pub conf_dir: PathBuf,
    /// Where plugins are looked for, in order.
    pub plugin_dirs: Vec<PathBuf>,
    /// The default network's bridge interface (`berth0`).
    pub default_bridge: String,
    /// The default network's subnet.
    pub default_subnet: String,
    /// Where host-local keeps the addresses it hands out on the agent's
    /// networks (written into each list the agent makes): volatile, as
    /// the namespaces are, so a reboot leaves no stale allocation.
    pub ipam_dir: PathBuf,
    /// How many namespaces are kept attached to the default network ahead
    /// of time (0: none; each holds an address).
    pub pool_size: usize,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            conf_dir: PathBuf::from("/etc/berth/cni/net.d"),
            plugin_dirs: vec![PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")],
            default_bridge: "berth0".into(),
            default_subnet: "10.77.0.0/16".into(),
            ipam_dir: PathBuf::from("/run/berth/ipam"),
            pool_size: 4,
        }
    }
}

/// The agent's own fields of a network it made (the `berth` key of the list).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub id: String,
    pub driver: String,
    #[serde(default)]
    pub subnet: String,
    #[serde(default)]
    pub gateway: String,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub bridge: String,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Nanoseconds since the epoch.
    #[serde(default)]
    pub created: i64,
}

/// A network as the API shows it.
#[derive(Debug, Clone)]
pub struct Network {
    pub name: String,
    /// The agent's id; for a list the user dropped in, the sha256 of its name.
    pub id: String,
    /// `bridge`, `macvlan`, or for a foreign list its first plugin's type.
    pub driver: String,
    pub subnet: String,
    pub gateway: String,
    pub internal: bool,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub created: i64,
    /// Whether the agent wrote it (else the user dropped it in the conf dir).
    pub managed: bool,
    pub plugins: Vec<String>,
    pub path: PathBuf,
    /// The bridge interface, for bridge networks.
    pub bridge: String,
    /// Whether names resolve on it (networks the agent made, other than the default).
    pub dns: bool,
}

impl Network {
    fn of(list: &ConfList) -> Network {
        let meta: Option<Meta> = list.doc.get("berth").and_then(|v| serde_json::from_value(v.clone()).ok());
        let plugins: Vec<String> =
            list.plugins.iter().map(|p| p.get("type").and_then(Value::as_str).unwrap_or_default().to_owned()).collect();
        match meta {
            Some(m) => {
                let bridged = m.driver == "bridge";
                Network {
                    name: list.name.clone(),
                    id: m.id,
                    driver: m.driver,
                    subnet: m.subnet,
                    gateway: m.gateway,
                    internal: m.internal,
                    options: m.options,
                    labels: m.labels,
                    created: m.created,
                    managed: true,
                    // A bridge's gateway is the host's address there, where the agent can answer.
                    dns: list.name != DEFAULT_NETWORK && bridged,
                    bridge: m.bridge,
                    plugins,
                    path: list.path.clone(),
                }
            }
            None => {
                let (subnet, gateway) = foreign_range(list);
                let bridge = list.plugins.first().and_then(|p| p.get("bridge")).and_then(Value::as_str).unwrap_or_default().to_owned();
                Network {
                    bridge,
                    name: list.name.clone(),
                    id: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(list.name.as_bytes())),
                    driver: plugins.first().cloned().unwrap_or_default(),
                    subnet,
                    gateway,
                    internal: false,
                    options: BTreeMap::new(),
                    labels: BTreeMap::new(),
                    created: 0,
                    managed: false,
                    dns: false,
                    plugins,
                    path: list.path.clone(),
                }
            }
        }
    }
}

/// The first subnet and gateway of a list's host-local ranges, if it has them.
fn foreign_range(list: &ConfList) -> (String, String) {
    for p in &list.plugins {
        let Some(ipam) = p.get("ipam") else { continue };
        if let Some(r) = ipam.pointer("/ranges/0/0") {
            let s = r.get("subnet").and_then(Value::as_str).unwrap_or_default();
            let g = r.get("gateway").and_then(Value::as_str).unwrap_or_default();
            return (s.to_owned(), g.to_owned());
        }
        if let Some(s) = ipam.get("subnet").and_then(Value::as_str) {
            return (s.to_owned(), ipam.get("gateway").and_then(Value::as_str).unwrap_or_default().to_owned());
        }
    }
    (String::new(), String::new())
}

/// What `network create` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewNetwork {
    pub name: String,
    /// `bridge` (default) or `macvlan`.
    pub driver: String,
    pub subnet: String,
    pub gateway: String,
    pub internal: bool,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// One network a container joins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSpec {
    pub network: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// A fixed IPv4 address (`--ip`).
    #[serde(default)]
    pub ip: String,
}

/// A port to publish (`-p`); host port 0 is picked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    #[serde(default)]
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// One network a container is attached to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub network: String,
    pub network_id: String,
    pub ifname: String,
    /// The container id the plugins know it by.
    pub cni_id: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The names it answers to on the network (its container's name and
    /// short id, and the aliases), when the network resolves names.
    #[serde(default)]
    pub names: Vec<String>,
    pub args: RuntimeArgs,
    /// The list as it was when attached (a detach uses it even if the network changed or went).
    pub conflist: Map<String, Value>,
    /// The last plugin's `ADD` result, once it came.
    #[serde(default)]
    pub result: Option<Value>,
    #[serde(default)]
    pub addresses: Addresses,
}

/// A container's network namespace and its networks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    pub netns: PathBuf,
    pub endpoints: Vec<Endpoint>,
    /// Published ports, host ports picked.
    pub ports: Vec<PortSpec>,
    /// Whether every `ADD` came back.
    pub complete: bool,
    /// Whether its namespace may serve another container once this one's
    /// task is gone (it came from the pool, and the container could not
    /// change its network: no NET_ADMIN).
    #[serde(default)]
    pub recyclable: bool,
    /// Which attachment of the container this is (a release issued for an
    /// earlier one leaves a later one alone).
    #[serde(default)]
    pub generation: u64,
}

impl Endpoint {
    /// The list it was attached with.
    fn list(&self) -> Result<ConfList, CniError> {
        ConfList::parse(Path::new(&self.network), &serde_json::to_vec(&self.conflist).expect("JSON values encode"))
    }
}

type Key = (String, String);

/// The networks of one agent.
pub struct Networks {
    cfg: NetworkConfig,
    cni: Cni,
    /// `<state>/netns`: namespaces and attachment records.
    dir: PathBuf,
    /// Attachments by container.
    /// Shared: a list of containers copies no attachment.
    attached: Mutex<NsMap<Arc<Attachment>>>,
    /// One attach or detach at a time per container.
    locks: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
    /// One change of the conf dir at a time.
    conf_lock: Mutex<()>,
    /// The name servers of the networks that resolve names, by network name.
    dns: Mutex<HashMap<String, DnsServer>>,
    /// Wakes the pool's filler.
    refill: tokio::sync::Notify,
    /// One update of the name servers at a time.
    dns_update: tokio::sync::Mutex<()>,
    /// Held from picking a container's host ports to recording them.
    ports_lock: Mutex<()>,
    /// Attachments being released in the background (their tasks are gone).
    releasing: Mutex<std::collections::HashSet<Key>>,
}

/// One network's name server.
struct DnsServer {
    zone: Arc<dns::Zone>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

impl Networks {
    /// Networks configured by `cfg`, their runtime state under `state`.
    pub fn new(cfg: NetworkConfig, state: &Path) -> Result<Arc<Networks>, NetworkError> {
        let dir = state.join("netns");
        netns::prepare_dir(&dir).map_err(io(&dir))?;
        // Without its conf dir the agent still serves: containers on networks then fail with the reason.
        if let Err(e) = std::fs::create_dir_all(&cfg.conf_dir) {
            tracing::warn!(conf_dir = %cfg.conf_dir.display(), error = %e, "the networks' conf dir cannot be made");
        }
        let cni = Cni { plugin_dirs: cfg.plugin_dirs.clone() };
        let mut attached = NsMap::default();
        for (key, a) in read_attachments(&dir) {
            attached.insert(key, Arc::new(a));
        }
        let this = Arc::new(Networks {
            cfg,
            cni,
            dir,
            attached: Mutex::new(attached),
            locks: Mutex::default(),
            conf_lock: Mutex::new(()),
            dns: Mutex::default(),
            refill: tokio::sync::Notify::new(),
            dns_update: tokio::sync::Mutex::new(()),
            ports_lock: Mutex::new(()),
            releasing: Mutex::default(),
        });
        if let Err(e) = this.ensure_default() {
            tracing::warn!(error = %e, "the default network cannot be written: containers need --net none or host");
        }
        this.upgrade_lists();
        Ok(this)
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.cfg
    }

    /// The default network's list, written when missing.
    fn ensure_default(&self) -> Result<(), NetworkError> {
        let _g = self.conf_lock.lock().unwrap_or_else(|e| e.into_inner());
        if ConfList::load_dir(&self.cfg.conf_dir).contains_key(DEFAULT_NETWORK) {
            return Ok(());
        }
        let subnet = Subnet::parse(&self.cfg.default_subnet).map_err(NetworkError::Invalid)?;
        let meta = Meta {
            id: crate::content::random_hex(32),
            driver: "bridge".into(),
            subnet: subnet.to_string(),
            gateway: subnet.host(1).to_string(),
            internal: false,
            bridge: self.cfg.default_bridge.clone(),
            options: BTreeMap::new(),
            labels: BTreeMap::new(),
            created: crate::metadata::now_nanos(),
        };
        self.write_list(DEFAULT_NETWORK, &meta)
    }

    /// Lists an older agent wrote, with a masquerade and a firewall per container, written
    /// again in this agent's form (the rules per network are the agent's now). Containers
    /// attached meanwhile keep the list they were attached with, for their detach.
    fn upgrade_lists(&self) {
        let _g = self.conf_lock.lock().unwrap_or_else(|e| e.into_inner());
        for list in ConfList::load_dir(&self.cfg.conf_dir).values() {
            let Some(meta) = list.doc.get("berth").and_then(|v| serde_json::from_value::<Meta>(v.clone()).ok()) else { continue };
            let old = list.plugins.iter().any(|p| {
                p.get("type").and_then(Value::as_str) == Some("firewall") || p.get("ipMasq").and_then(Value::as_bool) == Some(true)
            });
            if old && meta.driver == "bridge" {
                if let Err(e) = self.write_list(&list.name, &meta) {
                    tracing::warn!(network = %list.name, error = %e, "a network's list cannot be written in the current form");
                }
            }
        }
    }

    /// Every network of the conf dir.
    pub fn list(&self) -> Vec<Network> {
        ConfList::load_dir(&self.cfg.conf_dir).values().map(Network::of).collect()
    }

    /// A network by name, id or unique id prefix.
    pub fn get(&self, name: &str) -> Result<Network, NetworkError> {
        let all = self.list();
        if let Some(n) = all.iter().find(|n| n.name == name || n.id == name) {
            return Ok(n.clone());
        }
        let by_prefix: Vec<&Network> = all.iter().filter(|n| name.len() >= 3 && n.id.starts_with(name)).collect();
        match by_prefix.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(NetworkError::NotFound(name.to_owned())),
            _ => Err(NetworkError::Invalid(format!("network id prefix {name:?} is ambiguous"))),
        }
    }

    /// Make a network: its list written in the conf dir.
    pub fn create(&self, req: NewNetwork) -> Result<Network, NetworkError> {
        check_name(&req.name)?;
        let _g = self.conf_lock.lock().unwrap_or_else(|e| e.into_inner());
        let existing = self.list();
        if existing.iter().any(|n| n.name == req.name) {
            return Err(NetworkError::AlreadyExists(req.name));
        }
        let driver = if req.driver.is_empty() { "bridge".to_owned() } else { req.driver.clone() };
        if driver != "bridge" && driver != "macvlan" {
            return Err(NetworkError::Invalid(format!("network driver {driver:?} is not supported (bridge or macvlan)")));
        }
        let mut options = req.options.clone();
        let mut bridge = options.remove("com.docker.network.bridge.name").unwrap_or_default();
        let mtu = options.remove("mtu").or_else(|| options.remove("com.docker.network.driver.mtu"));
        let parent = options.remove("parent").or_else(|| options.remove("macvlan_parent"));
        if let Some(k) = options.keys().next() {
            return Err(NetworkError::Invalid(format!(
                "network option {k:?} is not known (known: com.docker.network.bridge.name, mtu, parent)"
            )));
        }
        if let Some(m) = &mtu {
            if !m.parse::<u32>().is_ok_and(|v| (576..=65535).contains(&v)) {
                return Err(NetworkError::Invalid(format!("mtu {m:?} is not a number from 576 to 65535")));
            }
        }
        let taken: Vec<Subnet> = existing.iter().filter_map(|n| Subnet::parse(&n.subnet).ok()).collect();
        let host = subnet::host_routes();
        let subnet = if req.subnet.is_empty() {
            subnet::pick(&taken, &host)
                .ok_or_else(|| NetworkError::Exhausted("no free private subnet left to pick: give --subnet".into()))?
        } else {
            let s = Subnet::parse(&req.subnet).map_err(NetworkError::Invalid)?;
            if s.prefix > 30 {
                return Err(NetworkError::Invalid(format!("subnet {s} is too small (a /30 at most)")));
            }
            if let Some(n) = existing.iter().find(|n| Subnet::parse(&n.subnet).is_ok_and(|t| t.overlaps(&s))) {
                return Err(NetworkError::Conflict(format!("subnet {s} overlaps network {:?} ({})", n.name, n.subnet)));
            }
            if let Some((iface, r)) = host.iter().find(|(_, r)| r.overlaps(&s) && r.prefix > 0) {
                return Err(NetworkError::Conflict(format!("subnet {s} overlaps the host's route {r} on {iface}")));
            }
            s
        };
        let gateway = if req.gateway.is_empty() {
            subnet.host(1)
        } else {
            let g: Ipv4Addr =
                req.gateway.parse().map_err(|_| NetworkError::Invalid(format!("gateway {:?} is not an IPv4 address", req.gateway)))?;
            if !subnet.contains(g) || g == subnet.network() || g == subnet.broadcast() {
                return Err(NetworkError::Invalid(format!("gateway {g} is not a host address of subnet {subnet}")));
            }
            g
        };
        let id = crate::content::random_hex(32);
        if driver == "bridge" && bridge.is_empty() {
            bridge = format!("berth-{}", &id[..8]);
        }
        if driver == "bridge" {
            let ok = !bridge.is_empty()
                && bridge.len() <= 15
                && !bridge.starts_with(['-', '.'])
                && bridge.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if !ok {
                return Err(NetworkError::Invalid(format!(
                    "bridge name {bridge:?} is not an interface name: [a-zA-Z0-9_.-], 15 characters at most"
                )));
            }
            if let Some(n) = existing.iter().find(|n| n.bridge == bridge) {
                return Err(NetworkError::Conflict(format!("bridge {bridge} is network {:?}'s", n.name)));
            }
            let sys = Path::new("/sys/class/net").join(&bridge);
            if sys.exists() && !sys.join("bridge").exists() {
                return Err(NetworkError::Conflict(format!("{bridge} is an interface of the host, not a bridge")));
            }
        }
        let mut opts = BTreeMap::new();
        if let Some(m) = mtu {
            opts.insert("mtu".to_owned(), m);
        }
        if let Some(p) = parent {
            opts.insert("parent".to_owned(), p);
        }
        let meta = Meta {
            id,
            driver,
            subnet: subnet.to_string(),
            gateway: gateway.to_string(),
            internal: req.internal,
            bridge,
            options: opts,
            labels: req.labels,
            created: crate::metadata::now_nanos(),
        };
        self.write_list(&req.name, &meta)?;
        let net = self.get(&req.name)?;
        self.sync_firewall();
        Ok(net)
    }

    /// Write the list of an agent-made network (atomically).
    fn write_list(&self, name: &str, meta: &Meta) -> Result<(), NetworkError> {
        let ipam = json!({
            "type": "host-local",
            "ranges": [[{"subnet": meta.subnet, "gateway": meta.gateway}]],
            "routes": if meta.internal { json!([]) } else { json!([{"dst": "0.0.0.0/0"}]) },
            "dataDir": self.cfg.ipam_dir,
        });
        let mut first = match meta.driver.as_str() {
            "macvlan" => {
                let master = meta.options.get("parent").cloned().unwrap_or_else(subnet::default_route_interface);
                json!({"type": "macvlan", "master": master, "mode": "bridge", "ipam": ipam})
            }
            _ => json!({
                "type": "bridge",
                "bridge": meta.bridge,
                "isGateway": true,
                // Masquerade and forwarding are the agent's rules per network (firewall.rs).
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": ipam,
            }),
        };
        first["capabilities"] = json!({"ips": true});
        if let Some(m) = meta.options.get("mtu").and_then(|m| m.parse::<u32>().ok()) {
            first["mtu"] = json!(m);
        }
        let mut plugins = vec![first];
        if meta.driver == "bridge" {
            plugins.push(json!({"type": "portmap", "capabilities": {"portMappings": true}}));
        }
        let doc = json!({"cniVersion": "1.0.0", "name": name, "berth": meta, "plugins": plugins});
        let path = self.cfg.conf_dir.join(format!("berth-{name}.conflist"));
        let tmp = self.cfg.conf_dir.join(format!(".berth-{name}.conflist.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(&doc).expect("encodes")).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// Remove a network the agent made; refused while a container is attached to it.
    pub fn remove(&self, name: &str) -> Result<Network, NetworkError> {
        let net = self.get(name)?;
        if net.name == DEFAULT_NETWORK {
            return Err(NetworkError::InUse(format!("network {DEFAULT_NETWORK:?} is the default network and cannot be removed")));
        }
        if !net.managed {
            return Err(NetworkError::InUse(format!(
                "network {:?} is a CNI list the agent did not make: remove its file, {}",
                net.name,
                net.path.display()
            )));
        }
        let users = self.users(&net.name);
        if !users.is_empty() {
            return Err(NetworkError::InUse(format!("network {:?} has containers attached: {}", net.name, users.join(", "))));
        }
        // Those being released: their plugins run once more with the list, so it waits for them (bounded).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline && self.attached_to(&net.name) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _g = self.conf_lock.lock().unwrap_or_else(|e| e.into_inner());
        std::fs::remove_file(&net.path).map_err(io(&net.path))?;
        drop(_g);
        self.sync_firewall();
        // The bridge the plugin made stays otherwise (with its address, a route the next subnet would avoid).
        if net.managed
            && net.driver == "bridge"
            && !net.bridge.is_empty()
            && Path::new("/sys/class/net").join(&net.bridge).join("bridge").exists()
        {
            if let Err(e) = firewall::run("ip", &["link", "delete", &net.bridge]) {
                tracing::warn!(bridge = %net.bridge, error = %e, "removing a network's bridge");
            }
        }
        Ok(net)
    }

    /// Mark a container's attachment as being released (its task is gone):
    /// it no longer keeps its networks from being removed.
    pub fn releasing(&self, ns: &str, id: &str) {
        self.releasing.lock().unwrap_or_else(|e| e.into_inner()).insert((ns.to_owned(), id.to_owned()));
    }

    /// Containers (`ns/id`) attached to network `name` (not those being released).
    pub fn users(&self, name: &str) -> Vec<String> {
        let releasing = self.releasing.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let attached = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<String> = attached
            .iter()
            .filter(|(k, _)| !releasing.contains(*k))
            .filter(|((ns, _), a)| ns != POOL_NS && a.endpoints.iter().any(|e| e.network == name))
            .map(|((ns, id), _)| format!("{ns}/{}", &id[..id.len().min(12)]))
            .collect();
        out.sort();
        out
    }

    /// Whether any attachment (outside the pool) is on network `name`.
    fn attached_to(&self, name: &str) -> bool {
        let attached = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        attached.iter().any(|((ns, _), a)| ns != POOL_NS && a.endpoints.iter().any(|e| e.network == name))
    }

    /// The namespace path a container on networks runs in.
    pub fn netns_path(&self, ns: &str, id: &str) -> PathBuf {
        self.dir.join(ns).join(id)
    }

    fn record_path(&self, ns: &str, id: &str) -> PathBuf {
        self.dir.join(ns).join(format!("{id}.json"))
    }

    /// A container's attachment, if it has one.
    pub fn attachment(&self, ns: &str, id: &str) -> Option<Arc<Attachment>> {
        self.attached.lock().unwrap_or_else(|e| e.into_inner()).get(&NsId(ns, id)).cloned()
    }

    /// The attachments of containers `ids`, in their order, the map locked once.
    pub fn attachments<'a>(&self, ns: &str, ids: impl Iterator<Item = &'a str>) -> Vec<Option<Arc<Attachment>>> {
        let attached = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        ids.map(|id| attached.get(&NsId(ns, id)).cloned()).collect()
    }

    /// A copy of a container's attachment, to change and save.
    fn attachment_owned(&self, ns: &str, id: &str) -> Option<Attachment> {
        self.attachment(ns, id).map(Arc::unwrap_or_clone)
    }

    fn lock_of(&self, ns: &str, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().unwrap_or_else(|e| e.into_inner()).entry((ns.to_owned(), id.to_owned())).or_default().clone()
    }

    /// Check what an attachment would need, without doing it: the networks
    /// exist and their plugins are installed, the ports are well formed.
    pub fn check(&self, endpoints: &[EndpointSpec], ports: &[PortSpec]) -> Result<(), NetworkError> {
        let lists = ConfList::load_dir(&self.cfg.conf_dir);
        for e in endpoints {
            let net = self.get(&e.network)?;
            let list = lists.get(&net.name).ok_or_else(|| NetworkError::NotFound(e.network.clone()))?;
            self.cni.check(list)?;
            if !e.ip.is_empty() {
                let ip: Ipv4Addr = e.ip.parse().map_err(|_| NetworkError::Invalid(format!("--ip {:?} is not an IPv4 address", e.ip)))?;
                if let Ok(s) = Subnet::parse(&net.subnet) {
                    if !s.contains(ip) {
                        return Err(NetworkError::Invalid(format!("--ip {ip} is not in network {:?}'s subnet {s}", net.name)));
                    }
                }
            }
        }
        for p in ports {
            if p.container_port == 0 {
                return Err(NetworkError::Invalid("a published container port cannot be 0".into()));
            }
            if p.protocol != "tcp" && p.protocol != "udp" {
                return Err(NetworkError::Invalid(format!("protocol {:?} is not tcp or udp", p.protocol)));
            }
            if !p.host_ip.is_empty() && p.host_ip.parse::<Ipv4Addr>().is_err() {
                return Err(NetworkError::Invalid(format!("host address {:?} is not an IPv4 address", p.host_ip)));
            }
        }
        if !ports.is_empty() && endpoints.is_empty() {
            return Err(NetworkError::Invalid("ports are published on a network: not with --net none or host".into()));
        }
        if let Some(first) = endpoints.first().filter(|_| !ports.is_empty()) {
            let net = self.get(&first.network)?;
            if !net.plugins.iter().any(|p| p == "portmap") {
                return Err(NetworkError::Invalid(format!(
                    "network {:?} publishes no port (its CNI list has no portmap plugin)",
                    net.name
                )));
            }
        }
        Ok(())
    }

    /// Attach container `id` to `endpoints`, publishing `ports` on the first
    /// one: its namespace made, every network's `ADD` run. On failure
    /// nothing is left: what was added is deleted again.
    /// `names` are what the container answers to on networks that resolve
    /// names (its name and short id), with each endpoint's aliases.
    pub async fn attach(
        &self,
        ns: &str,
        id: &str,
        names: &[String],
        endpoints: &[EndpointSpec],
        ports: &[PortSpec],
        recyclable: bool,
    ) -> Result<Attachment, NetworkError> {
        let lock = self.lock_of(ns, id);
        let _g = lock.lock().await;
        if self.attachment(ns, id).is_some() || self.record_path(ns, id).exists() {
            // Left by a task that ended while the agent was down.
            self.detach_locked(ns, id).await;
        }
        // The default network alone, nothing published, no fixed address: one from the pool.
        let plain =
            |e: &EndpointSpec| e.ip.is_empty() && e.aliases.is_empty() && self.get(&e.network).is_ok_and(|n| n.name == DEFAULT_NETWORK);
        if ns != POOL_NS && ports.is_empty() && endpoints.len() == 1 && plain(&endpoints[0]) {
            if let Some((pid, mut att)) = self.take_pooled().await {
                att.recyclable = recyclable;
                att.generation = next_generation();
                // The container's record first, then the pool's goes: at every
                // moment a record names the namespace (see `reconcile`).
                if let Err(e) = self.save(ns, id, &att) {
                    self.release_pooled(&pid, &att).await;
                    return Err(e);
                }
                let _ = std::fs::remove_file(self.record_path(POOL_NS, &pid));
                self.refill.notify_one();
                return Ok(att);
            }
            self.refill.notify_one();
        }
        let lists = ConfList::load_dir(&self.cfg.conf_dir);
        // Ports are picked and recorded under one lock: two attaches cannot take the same one.
        let ports_held = self.ports_lock.lock().unwrap_or_else(|e| e.into_inner());
        let ports = self.assign_ports(ns, id, ports)?;
        let mut eps = Vec::new();
        for (i, e) in endpoints.iter().enumerate() {
            let net = self.get(&e.network)?;
            let list = lists.get(&net.name).ok_or_else(|| NetworkError::NotFound(e.network.clone()))?;
            self.cni.check(list)?;
            let port_mappings = if i == 0 {
                ports
                    .iter()
                    .map(|p| PortMapping {
                        host_port: p.host_port,
                        container_port: p.container_port,
                        protocol: p.protocol.clone(),
                        host_ip: p.host_ip.clone(),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            eps.push(Endpoint {
                network: net.name.clone(),
                network_id: net.id.clone(),
                ifname: format!("eth{i}"),
                cni_id: id.to_owned(),
                aliases: e.aliases.clone(),
                names: if net.dns { names.iter().chain(&e.aliases).map(|n| n.to_ascii_lowercase()).collect() } else { Vec::new() },
                args: RuntimeArgs { port_mappings, ips: if e.ip.is_empty() { vec![] } else { vec![e.ip.clone()] } },
                conflist: list.doc.clone(),
                result: None,
                addresses: Addresses::default(),
            });
        }
        let path = self.netns_path(ns, id);
        let mut att =
            Attachment { netns: path.clone(), endpoints: eps, ports, complete: false, recyclable: false, generation: next_generation() };
        self.save(ns, id, &att)?;
        drop(ports_held);
        let made = {
            let p = path.clone();
            tokio::task::spawn_blocking(move || {
                if let Some(d) = p.parent() {
                    std::fs::create_dir_all(d)?;
                }
                netns::create(&p)
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
        };
        if let Err(e) = made {
            self.detach_locked(ns, id).await;
            return Err(NetworkError::Io { path, source: e });
        }
        for i in 0..att.endpoints.len() {
            let ep = &att.endpoints[i];
            let list = ep.list()?;
            let call = Call { container_id: &ep.cni_id, netns: &path, ifname: &ep.ifname, args: &ep.args };
            match self.cni.add(&list, &call).await {
                Ok(result) => {
                    let ep = &mut att.endpoints[i];
                    ep.addresses = cni::addresses(&result, &ep.ifname);
                    ep.result = Some(result);
                    if let Err(e) = self.save(ns, id, &att) {
                        self.detach_locked(ns, id).await;
                        return Err(e);
                    }
                }
                Err(e) => {
                    self.detach_locked(ns, id).await;
                    return Err(e.into());
                }
            }
        }
        att.complete = true;
        if let Err(e) = self.save(ns, id, &att) {
            self.detach_locked(ns, id).await;
            return Err(e);
        }
        self.update_dns().await;
        Ok(att)
    }

    /// Add one network to a running container's attachment (interface
    /// `ethN`, N one past the highest); returns its endpoint.
    pub async fn attach_one(&self, ns: &str, id: &str, names: &[String], spec: &EndpointSpec) -> Result<Endpoint, NetworkError> {
        let lock = self.lock_of(ns, id);
        let _g = lock.lock().await;
        let mut att = self
            .attachment_owned(ns, id)
            .ok_or_else(|| NetworkError::InUse(format!("container {} is not running on networks", short(id))))?;
        let net = self.get(&spec.network)?;
        if att.endpoints.iter().any(|e| e.network == net.name) {
            return Err(NetworkError::AlreadyExists(format!("container {} is already on network {:?}", short(id), net.name)));
        }
        let lists = ConfList::load_dir(&self.cfg.conf_dir);
        let list = lists.get(&net.name).ok_or_else(|| NetworkError::NotFound(spec.network.clone()))?;
        self.cni.check(list)?;
        let next = att.endpoints.iter().filter_map(|e| e.ifname.strip_prefix("eth")?.parse::<u32>().ok()).max().map_or(0, |n| n + 1);
        let mut ep = Endpoint {
            network: net.name.clone(),
            network_id: net.id.clone(),
            ifname: format!("eth{next}"),
            cni_id: id.to_owned(),
            aliases: spec.aliases.clone(),
            names: if net.dns { names.iter().chain(&spec.aliases).map(|n| n.to_ascii_lowercase()).collect() } else { Vec::new() },
            args: RuntimeArgs { port_mappings: Vec::new(), ips: if spec.ip.is_empty() { vec![] } else { vec![spec.ip.clone()] } },
            conflist: list.doc.clone(),
            result: None,
            addresses: Addresses::default(),
        };
        // Recorded before the plugins run, so a crash in between is undone at the next start.
        att.endpoints.push(ep.clone());
        att.recyclable = false;
        self.save(ns, id, &att)?;
        let call = Call { container_id: &ep.cni_id, netns: &att.netns, ifname: &ep.ifname, args: &ep.args };
        match self.cni.add(list, &call).await {
            Ok(result) => {
                ep.addresses = cni::addresses(&result, &ep.ifname);
                ep.result = Some(result);
                *att.endpoints.last_mut().expect("pushed above") = ep.clone();
                self.save(ns, id, &att)?;
                self.update_dns().await;
                Ok(ep)
            }
            Err(e) => {
                let _ = self.cni.del(list, &call, None).await;
                att.endpoints.pop();
                self.save(ns, id, &att)?;
                Err(e.into())
            }
        }
    }

    /// Take one network off a running container's attachment.
    pub async fn detach_one(&self, ns: &str, id: &str, network: &str) -> Result<(), NetworkError> {
        let lock = self.lock_of(ns, id);
        let _g = lock.lock().await;
        let Some(mut att) = self.attachment_owned(ns, id) else { return Ok(()) };
        let Some(i) = att.endpoints.iter().position(|e| e.network == network) else { return Ok(()) };
        let ep = att.endpoints.remove(i);
        att.recyclable = false;
        let list = ep.list()?;
        let call = Call { container_id: &ep.cni_id, netns: &att.netns, ifname: &ep.ifname, args: &ep.args };
        if let Err(e) = self.cni.del(&list, &call, ep.result.as_ref()).await {
            tracing::warn!(container = %id, network = %ep.network, error = %e, "detaching from a network");
        }
        self.save(ns, id, &att)?;
        self.update_dns().await;
        Ok(())
    }

    /// Host ports for `ports`: 0 picked, the others checked free.
    fn assign_ports(&self, ns: &str, id: &str, ports: &[PortSpec]) -> Result<Vec<PortSpec>, NetworkError> {
        let published: Vec<(String, PortSpec)> = {
            let attached = self.attached.lock().unwrap_or_else(|e| e.into_inner());
            attached
                .iter()
                .filter(|((n, i), _)| !(n == ns && i == id))
                .flat_map(|((_, i), a)| a.ports.iter().map(move |p| (i.clone(), p.clone())))
                .collect()
        };
        let mut out: Vec<PortSpec> = Vec::new();
        for p in ports {
            let mut p = p.clone();
            let ip: Ipv4Addr =
                if p.host_ip.is_empty() { Ipv4Addr::UNSPECIFIED } else { p.host_ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED) };
            let clash = |q: &PortSpec| {
                q.protocol == p.protocol
                    && q.host_port == p.host_port
                    && (q.host_ip.is_empty() || p.host_ip.is_empty() || q.host_ip == p.host_ip)
            };
            if p.host_port == 0 {
                // The kernel's pick, unless another container publishes it (portmap holds no socket).
                let mut tries = 0;
                loop {
                    let picked = free_port(ip, &p.protocol).map_err(|e| port_error(ip, 0, &p.protocol, e))?;
                    let q = PortSpec { host_port: picked, ..p.clone() };
                    if !published.iter().any(|(_, o)| o.protocol == q.protocol && o.host_port == picked)
                        && !out.iter().any(|o| o.protocol == q.protocol && o.host_port == picked)
                    {
                        p.host_port = picked;
                        break;
                    }
                    tries += 1;
                    if tries > 64 {
                        return Err(NetworkError::InUse("no free host port found".into()));
                    }
                }
            } else {
                if let Some((other, _)) = published.iter().find(|(_, q)| clash(q)) {
                    return Err(NetworkError::Conflict(format!(
                        "host port {}/{} is already published by container {}",
                        p.host_port,
                        p.protocol,
                        &other[..other.len().min(12)]
                    )));
                }
                if out.iter().any(clash) {
                    return Err(NetworkError::Invalid(format!("host port {}/{} is published twice", p.host_port, p.protocol)));
                }
                if let Err(e) = port_free(ip, p.host_port, &p.protocol) {
                    return Err(port_error(ip, p.host_port, &p.protocol, e));
                }
            }
            out.push(p);
        }
        Ok(out)
    }

    /// The pool's ids.
    fn pooled(&self) -> Vec<String> {
        let attached = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        attached.iter().filter(|((ns, _), a)| ns == POOL_NS && a.complete).map(|((_, id), _)| id.clone()).collect()
    }

    /// Claim one entry of the pool, atomically: out of the map, so nothing
    /// else can take or release it. Its record stays until the caller
    /// hands the namespace to a container or has released it, so that an
    /// agent that dies in between still knows of it.
    fn claim_pooled(&self) -> Option<(String, Attachment)> {
        let mut attached = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        let key = attached.iter().find(|((ns, _), a)| ns == POOL_NS && a.complete).map(|(k, _)| k.clone())?;
        let att = attached.remove(&key)?;
        Some((key.1, Arc::unwrap_or_clone(att)))
    }

    /// Release a claimed entry of the pool, then drop its record.
    async fn release_pooled(&self, pid: &str, att: &Attachment) {
        self.release(att).await;
        let _ = std::fs::remove_file(self.record_path(POOL_NS, pid));
    }

    /// Claim an attachment of the pool (its id and it; its record stays
    /// for the caller to drop); one whose namespace is gone is released.
    async fn take_pooled(&self) -> Option<(String, Attachment)> {
        while let Some((pid, att)) = self.claim_pooled() {
            if netns::exists(&att.netns) {
                return Some((pid, att));
            }
            self.release_pooled(&pid, &att).await;
        }
        None
    }

    /// Run the plugins' `DEL` for every network of a claimed attachment and
    /// remove its namespace (its record is the caller's business).
    async fn release(&self, att: &Attachment) {
        for ep in att.endpoints.iter().rev() {
            let Ok(list) = ep.list() else { continue };
            let call = Call { container_id: &ep.cni_id, netns: &att.netns, ifname: &ep.ifname, args: &ep.args };
            if let Err(e) = self.cni.del(&list, &call, ep.result.as_ref()).await {
                tracing::warn!(id = %ep.cni_id, network = %ep.network, error = %e, "detaching from a network");
            }
        }
        let p = att.netns.clone();
        if let Err(e) =
            tokio::task::spawn_blocking(move || netns::remove(&p)).await.unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
        {
            tracing::warn!(path = %att.netns.display(), error = %e, "removing a network namespace");
        }
    }

    /// Detach every namespace of the pool (at a graceful stop).
    pub async fn release_pool(&self) {
        while let Some((pid, att)) = self.claim_pooled() {
            self.release_pooled(&pid, &att).await;
        }
    }

    /// Whether a container's attachment may go back to the pool: it came
    /// from it, is still as it came (the default network alone, no names,
    /// no port), and nothing marked it otherwise.
    fn recyclable(&self, att: &Attachment) -> bool {
        att.recyclable
            && att.complete
            && att.ports.is_empty()
            && att.netns.parent() == Some(self.dir.join(POOL_NS).as_path())
            && matches!(att.endpoints.as_slice(), [e] if e.network == DEFAULT_NETWORK && e.names.is_empty())
    }

    /// Keep a container's namespace out of the pool: another container
    /// joined it (`--net container:`), or its networks changed.
    pub fn keep_out_of_pool(&self, ns: &str, id: &str) {
        if let Some(mut att) = self.attachment_owned(ns, id).filter(|a| a.recyclable) {
            att.recyclable = false;
            if let Err(e) = self.save(ns, id, &att) {
                tracing::warn!(container = %id, error = %e, "keeping a namespace out of the pool");
            }
        }
    }

    /// Keep the pool full, in the background, from the first time a
    /// container joins the default network (or at start, if it was kept).
    pub fn start_pool(self: &Arc<Self>) {
        let default = [EndpointSpec { network: DEFAULT_NETWORK.into(), ..Default::default() }];
        if self.check(&default, &[]).is_err() {
            return;
        }
        let n = self.clone();
        tokio::spawn(async move {
            // An agent whose containers never use the default network keeps no pool: it fills at the first use.
            if n.pooled().is_empty() {
                n.refill.notified().await;
            }
            loop {
                while n.pooled().len() < n.cfg.pool_size {
                    let pid = crate::content::random_hex(8);
                    if let Err(e) = n.attach(POOL_NS, &pid, &[], &default, &[], false).await {
                        tracing::warn!(error = %e, "attaching a namespace to the default network ahead of time");
                        break;
                    }
                }
                // A namespace given back while one was being made: one too many.
                while n.pooled().len() > n.cfg.pool_size {
                    let Some((pid, extra)) = n.claim_pooled() else { break };
                    n.release_pooled(&pid, &extra).await;
                }
                let notified = n.refill.notified();
                // Also now and then, should a fill have failed.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(60), notified).await;
            }
        });
    }

    fn save(&self, ns: &str, id: &str, att: &Attachment) -> Result<(), NetworkError> {
        let path = self.record_path(ns, id);
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(io(d))?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(att).expect("encodes")).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        self.attached.lock().unwrap_or_else(|e| e.into_inner()).insert((ns.to_owned(), id.to_owned()), Arc::new(att.clone()));
        Ok(())
    }

    /// Detach a container from its networks and remove its namespace.
    /// Failures are logged: what can be released is.
    pub async fn detach(&self, ns: &str, id: &str) {
        self.detach_generation(ns, id, None).await;
    }

    /// [`Networks::detach`] of attachment `generation` only (when given): a
    /// release issued when a task ended leaves alone the attachment of the
    /// container's next task, made meanwhile.
    pub async fn detach_generation(&self, ns: &str, id: &str, generation: Option<u64>) {
        let lock = self.lock_of(ns, id);
        {
            let _g = lock.lock().await;
            let current = self.attachment(ns, id).map(|a| a.generation);
            if generation.is_none() || current.is_none() || current == generation {
                self.detach_locked(ns, id).await;
            } else {
                // The container's next attachment: not being released.
                self.releasing.lock().unwrap_or_else(|e| e.into_inner()).remove(&(ns.to_owned(), id.to_owned()));
            }
        }
        drop(lock);
        // The lock goes with its last user.
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        let key = (ns.to_owned(), id.to_owned());
        if locks.get(&key).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(&key);
        }
    }

    async fn detach_locked(&self, ns: &str, id: &str) {
        let record = self.record_path(ns, id);
        let att = self
            .attachment_owned(ns, id)
            .or_else(|| std::fs::read(&record).ok().and_then(|d| serde_json::from_slice::<Attachment>(&d).ok()));
        let path = match &att {
            Some(a) => a.netns.clone(),
            // A pool entry nobody knows any more may be a container's namespace now: left alone.
            None if ns == POOL_NS => return,
            None => self.netns_path(ns, id),
        };
        if let Some(a) = att.as_ref().filter(|a| ns != POOL_NS && self.recyclable(a)) {
            if self.pooled().len() < self.cfg.pool_size && netns::exists(&a.netns) {
                // Back to the pool, as it was: its container is gone and changed nothing of it.
                let pid = a.netns.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let back = Attachment { recyclable: false, ..a.clone() };
                if self.save(POOL_NS, &pid, &back).is_ok() {
                    self.forget(ns, id);
                    self.refill.notify_one();
                    return;
                }
            }
        }
        match &att {
            Some(att) => self.release(att).await,
            None => {
                if let Err(e) = netns::remove(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "removing a network namespace");
                }
            }
        }
        self.forget(ns, id);
        self.update_dns().await;
    }

    /// Drop a container's attachment record, in memory and on disk.
    fn forget(&self, ns: &str, id: &str) {
        let _ = std::fs::remove_file(self.record_path(ns, id));
        let key = (ns.to_owned(), id.to_owned());
        self.attached.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
        self.releasing.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
    }

    /// Bring every name server in line with the attachments: each network
    /// that resolves names and has a container gets a server on its
    /// gateway, holding the names of its containers; the others none.
    pub async fn update_dns(&self) {
        let _one = self.dns_update.lock().await;
        let mut zones: HashMap<String, Names> = HashMap::new();
        for a in self.attached.lock().unwrap_or_else(|e| e.into_inner()).values() {
            for e in a.endpoints.iter().filter(|e| !e.names.is_empty()) {
                let ips = e.addresses.ipv4();
                let zone = zones.entry(e.network.clone()).or_default();
                for n in &e.names {
                    zone.entry(n.clone()).or_default().extend(&ips);
                }
            }
        }
        let mut to_start = Vec::new();
        {
            let mut servers = self.dns.lock().unwrap_or_else(|e| e.into_inner());
            servers.retain(|net, _| zones.contains_key(net));
            for (net, names) in zones {
                match servers.get(&net) {
                    // A server that could not bind before is tried again.
                    Some(s) if s.task.is_some() => *s.zone.names.lock().unwrap_or_else(|e| e.into_inner()) = names,
                    _ => to_start.push((net, names)),
                }
            }
        }
        for (net, names) in to_start {
            let Ok(n) = self.get(&net) else { continue };
            let Ok(gateway) = n.gateway.parse::<Ipv4Addr>() else { continue };
            let upstream = if n.internal { Vec::new() } else { dns::host_upstream() };
            let subnet = Subnet::parse(&n.subnet).ok();
            let zone = Arc::new(dns::Zone { names: Mutex::new(names), upstream, clients: subnet });
            let task = match dns::serve(gateway, zone.clone()).await {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(network = %net, address = %gateway, error = %e, "cannot serve container names on the network's gateway");
                    None
                }
            };
            self.dns.lock().unwrap_or_else(|e| e.into_inner()).insert(net, DnsServer { zone, task });
        }
    }

    /// After a restart: detach every container `keep` does not name (its
    /// task is gone); returns how many were released.
    pub async fn reconcile(&self, keep: &dyn Fn(&str, &str) -> bool) -> usize {
        // The pool's whole entries stay (as many as it holds); the others whose task is gone go.
        let mut pooled = 0;
        let records = read_attachments(&self.dir);
        // A pool entry a container took as the agent stopped: the container's record
        // names its namespace too. Only the pool's record goes (the namespace is the container's).
        let taken: HashSet<PathBuf> = records.iter().filter(|((ns, _), _)| ns != POOL_NS).map(|(_, a)| a.netns.clone()).collect();
        let records: Vec<(Key, Attachment)> = records
            .into_iter()
            .filter(|((ns, id), a)| {
                let stale_copy = ns == POOL_NS && taken.contains(&a.netns);
                if stale_copy {
                    self.attached.lock().unwrap_or_else(|e| e.into_inner()).remove(&(ns.clone(), id.clone()));
                    let _ = std::fs::remove_file(self.record_path(POOL_NS, id));
                }
                !stale_copy
            })
            .collect();
        let stale: Vec<Key> = records
            .into_iter()
            .filter(|((ns, id), a)| {
                if ns == POOL_NS {
                    let whole = a.complete && netns::exists(&a.netns) && pooled < self.cfg.pool_size;
                    pooled += usize::from(whole);
                    !whole
                } else {
                    !keep(ns, id)
                }
            })
            .map(|(k, _)| k)
            .collect();
        // Namespaces no record names (records are written first, so only a crash while one is removed leaves these).
        if let Ok(nss) = std::fs::read_dir(&self.dir) {
            for ns in nss.flatten().filter(|e| e.path().is_dir()) {
                let nsname = ns.file_name().to_string_lossy().into_owned();
                for f in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                    let name = f.file_name().to_string_lossy().into_owned();
                    // A namespace a record names (a pool entry's may serve a container under another name).
                    let known = self.attached.lock().unwrap_or_else(|e| e.into_inner()).values().any(|a| a.netns == f.path());
                    if name.contains('.') || known {
                        continue;
                    }
                    // No record names it: nothing to run the plugins with; the namespace goes
                    // (unless a task still runs in it).
                    if nsname == POOL_NS || !keep(&nsname, &name) {
                        let p = f.path();
                        if let Err(e) = netns::remove(&p) {
                            tracing::warn!(path = %p.display(), error = %e, "removing a network namespace no record names");
                        }
                    }
                }
            }
        }
        for (ns, id) in &stale {
            self.detach(ns, id).await;
        }
        stale.len()
    }

    /// Keep the firewall's isolation rules in line with the networks.
    pub fn sync_firewall(&self) {
        let nets = self.list();
        if let Err(e) = firewall::sync(&self.cfg.conf_dir, &nets) {
            tracing::warn!(error = %e, "setting the isolation rules of the networks");
        }
    }
}

/// Attachment records under `dir` (`<ns>/<id>.json`).
fn read_attachments(dir: &Path) -> Vec<(Key, Attachment)> {
    let mut out = Vec::new();
    let Ok(nss) = std::fs::read_dir(dir) else { return out };
    for ns in nss.flatten().filter(|e| e.path().is_dir()) {
        let nsname = ns.file_name().to_string_lossy().into_owned();
        for f in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json") else { continue };
            match std::fs::read(f.path()).ok().and_then(|d| serde_json::from_slice::<Attachment>(&d).ok()) {
                Some(a) => out.push(((nsname.clone(), id.to_owned()), a)),
                None => tracing::warn!(path = %f.path().display(), "an unreadable network attachment record"),
            }
        }
    }
    out
}

/// More names of a container on a network: host names, as its resolver answers them.
pub fn check_aliases(aliases: &[String]) -> Result<(), NetworkError> {
    for a in aliases {
        if a.is_empty() || a.len() > 253 || !a.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
            return Err(NetworkError::Invalid(format!("network alias {:?} is not a host name", berth_common::text::printable(a))));
        }
    }
    Ok(())
}

/// A network name: as docker takes them.
fn check_name(name: &str) -> Result<(), NetworkError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err(NetworkError::Invalid(format!(
            "network name {:?} is not valid: [a-zA-Z0-9][a-zA-Z0-9_.-]*, 64 characters at most",
            berth_common::text::printable(name)
        )));
    }
    if matches!(name, "none" | "host" | "default") {
        return Err(NetworkError::Invalid(format!("{name:?} is a network mode, not a network name")));
    }
    Ok(())
}

/// A new attachment's generation: unique within the agent's life and across restarts.
fn next_generation() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

pub(crate) fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Why a host port cannot be had: an address the host does not have is the
/// caller's mistake; a port taken is the machine's state.
fn port_error(ip: Ipv4Addr, port: u16, protocol: &str, e: std::io::Error) -> NetworkError {
    if e.kind() == std::io::ErrorKind::AddrNotAvailable {
        return NetworkError::Invalid(format!("host address {ip} is not an address of this machine"));
    }
    NetworkError::InUse(format!("host port {ip}:{port}/{protocol} is in use: {e}"))
}

/// A free host port (picked by the kernel).
fn free_port(ip: Ipv4Addr, protocol: &str) -> std::io::Result<u16> {
    if protocol == "udp" {
        Ok(std::net::UdpSocket::bind((ip, 0))?.local_addr()?.port())
    } else {
        Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
    }
}

/// Whether a host port can be bound now.
fn port_free(ip: Ipv4Addr, port: u16, protocol: &str) -> std::io::Result<()> {
    if protocol == "udp" {
        std::net::UdpSocket::bind((ip, port)).map(drop)
    } else {
        std::net::TcpListener::bind((ip, port)).map(drop)
    }
}
