//! `berthctl network ...` and `berthctl port`.

use anyhow::{bail, Result};
use berth_api::v1;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::output;
use crate::{Conn, Format};

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Make a network (a CNI configuration list in the agent's conf dir)
    Create(CreateArgs),
    /// List networks: the agent's, and CNI lists dropped in its conf dir
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show networks as JSON, with the containers attached
    Inspect(InspectArgs),
    /// Remove networks (refused while containers are attached)
    #[command(alias = "remove")]
    Rm(NamesArgs),
    /// Remove every network the agent made that no container uses
    Prune,
    /// Join a container to a network (a running one gets an interface now)
    Connect(ConnectArgs),
    /// Take a container off a network
    Disconnect(DisconnectArgs),
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Another name the container has on the network (repeatable)
    #[arg(long = "alias")]
    pub alias: Vec<String>,
    /// Fixed IPv4 address on the network
    #[arg(long)]
    pub ip: Option<String>,
    pub network: String,
    pub container: String,
}

#[derive(Debug, Args)]
pub struct DisconnectArgs {
    pub network: String,
    pub container: String,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Driver: bridge or macvlan
    #[arg(short, long, default_value = "bridge")]
    pub driver: String,
    /// Subnet in CIDR form [default: a free /24]
    #[arg(long)]
    pub subnet: Option<String>,
    /// Gateway address [default: the subnet's first]
    #[arg(long)]
    pub gateway: Option<String>,
    /// No route out, and no reach to other networks
    #[arg(long)]
    pub internal: bool,
    /// Driver option KEY=VALUE: com.docker.network.bridge.name, mtu, parent (macvlan)
    #[arg(short = 'o', long = "opt")]
    pub opt: Vec<String>,
    /// Label KEY=VALUE (repeatable)
    #[arg(long = "label")]
    pub label: Vec<String>,
    /// Name of the network
    pub name: String,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only show names
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Print each through a Go template, as docker's -f: '{{.Name}}'
    #[arg(short = 'f', value_name = "TEMPLATE")]
    pub template: Option<String>,
    /// Network names
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct NamesArgs {
    /// Network names or ids
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PortArgs {
    /// Container name or id
    pub container: String,
    /// Only this container port: PORT[/PROTO]
    pub port: Option<String>,
}

pub async fn run(conn: &Conn, cmd: NetworkCommand) -> Result<i32> {
    match cmd {
        NetworkCommand::Create(a) => create(conn, a).await,
        NetworkCommand::Ls(a) => ls(conn, a).await,
        NetworkCommand::Inspect(a) => inspect(conn, a).await,
        NetworkCommand::Rm(a) => rm(conn, a).await,
        NetworkCommand::Prune => prune(conn).await,
        NetworkCommand::Connect(a) => {
            let req = v1::ConnectNetworkRequest {
                network: a.network,
                container: a.container,
                aliases: a.alias,
                ipv4_address: a.ip.unwrap_or_default(),
            };
            conn.networks().connect(req).await?;
            Ok(0)
        }
        NetworkCommand::Disconnect(a) => {
            conn.networks().disconnect(v1::DisconnectNetworkRequest { network: a.network, container: a.container }).await?;
            Ok(0)
        }
    }
}

pub fn network_json(n: &v1::Network) -> serde_json::Value {
    json!({
        "Name": n.name,
        "Id": n.id,
        "Driver": n.driver,
        "Subnet": n.subnet,
        "Gateway": n.gateway,
        "Internal": n.internal,
        "Options": n.options,
        "Labels": n.labels,
        "Created": n.created_at.as_ref().map(output::rfc3339),
        "Managed": n.managed,
        "Plugins": n.plugins,
        "ConfigFile": n.path,
        "Bridge": n.bridge,
        "Containers": n.containers,
        "DNS": n.dns,
    })
}

async fn create(conn: &Conn, a: CreateArgs) -> Result<i32> {
    let mut options = std::collections::BTreeMap::new();
    for o in &a.opt {
        let Some((k, v)) = o.split_once('=') else { bail!("invalid -o {o:?}: use KEY=VALUE") };
        options.insert(k.to_owned(), v.to_owned());
    }
    let labels = berth_common::labels::parse_all(a.label.iter().map(String::as_str))?;
    let req = v1::CreateNetworkRequest {
        name: a.name,
        driver: a.driver,
        subnet: a.subnet.unwrap_or_default(),
        gateway: a.gateway.unwrap_or_default(),
        internal: a.internal,
        options,
        labels: labels.into_iter().collect(),
    };
    let n = conn.networks().create(req).await?.into_inner().network.unwrap_or_default();
    if conn.format == Format::Json {
        output::json(&network_json(&n));
    } else {
        println!("{}", n.id);
    }
    Ok(0)
}

async fn ls(conn: &Conn, a: LsArgs) -> Result<i32> {
    let mut nets = conn.networks().list(v1::ListNetworksRequest {}).await?.into_inner().networks;
    nets.sort_by(|a, b| a.name.cmp(&b.name));
    if a.quiet {
        for n in &nets {
            println!("{}", n.name);
        }
        return Ok(0);
    }
    let rows: Vec<serde_json::Value> = nets
        .iter()
        .map(|n| {
            let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            json!({"ID": n.id.chars().take(12).collect::<String>(), "Name": n.name, "Driver": n.driver, "Scope": "local",
                   "IPv6": "false", "Internal": n.internal.to_string(), "Labels": labels.join(","),
                   "CreatedAt": n.created_at.as_ref().map(|t| output::created_at(t.seconds)).unwrap_or_default(),
                   "Subnet": if n.subnet.is_empty() { "-".to_owned() } else { n.subnet.clone() },
                   "Containers": n.containers.len().to_string()})
        })
        .collect();
    output::rows(
        &conn.format,
        "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Subnet}}\t{{.Internal}}\t{{.Containers}}",
        &[("ID", "NETWORK ID")],
        &rows,
    )?;
    Ok(0)
}

async fn inspect(conn: &Conn, a: InspectArgs) -> Result<i32> {
    let format = conn.format_with(a.template.as_deref())?;
    let mut found = Vec::new();
    let mut code = 0;
    for name in a.names {
        match conn.networks().get(v1::GetNetworkRequest { name }).await {
            Ok(r) => found.push(network_json(&r.into_inner().network.unwrap_or_default())),
            Err(e) => {
                eprintln!("berthctl: {}", berth_common::text::printable(e.message()));
                code = 1;
            }
        }
    }
    output::inspected(&format, &found)?;
    Ok(code)
}

async fn rm(conn: &Conn, a: NamesArgs) -> Result<i32> {
    let mut code = 0;
    for name in a.names {
        match conn.networks().remove(v1::RemoveNetworkRequest { name: name.clone() }).await {
            Ok(r) => println!("{}", r.into_inner().name),
            Err(e) => {
                eprintln!("berthctl: {}: {}", berth_common::text::printable(&name), berth_common::text::printable(e.message()));
                code = 1;
            }
        }
    }
    Ok(code)
}

async fn prune(conn: &Conn) -> Result<i32> {
    let removed = conn.networks().prune(v1::PruneNetworksRequest {}).await?.into_inner().removed;
    if conn.format == Format::Json {
        output::json(&json!({"Removed": removed}));
    } else {
        for n in &removed {
            println!("{n}");
        }
    }
    Ok(0)
}

/// `berthctl port CONTAINER [PORT[/PROTO]]`: the host addresses of its published ports.
pub async fn port(conn: &Conn, a: PortArgs) -> Result<i32> {
    let c = conn.containers().get(v1::GetContainerRequest { id: a.container.clone() }).await?.into_inner().container.unwrap_or_default();
    let want = match &a.port {
        Some(p) => {
            let (port, proto) = p.split_once('/').unwrap_or((p.as_str(), "tcp"));
            let port: u32 = port.parse().map_err(|_| anyhow::anyhow!("invalid port {p:?}: use PORT[/tcp|udp]"))?;
            Some((port, proto.to_ascii_lowercase()))
        }
        None => None,
    };
    let ports: Vec<&v1::PortMapping> =
        c.ports.iter().filter(|p| want.as_ref().is_none_or(|(port, proto)| p.container_port == *port && &p.protocol == proto)).collect();
    if conn.format == Format::Json {
        output::json(&json!(ports
            .iter()
            .map(|p| json!({"ContainerPort": p.container_port, "Protocol": p.protocol, "HostIp": host_ip(p), "HostPort": p.host_port}))
            .collect::<Vec<_>>()));
        return Ok(0);
    }
    if ports.is_empty() {
        if let Some(p) = &a.port {
            bail!("container {} publishes no port {p}", a.container);
        }
    }
    for p in ports {
        if want.is_some() {
            println!("{}:{}", host_ip(p), p.host_port);
        } else {
            println!("{}/{} -> {}:{}", p.container_port, p.protocol, host_ip(p), p.host_port);
        }
    }
    Ok(0)
}

fn host_ip(p: &v1::PortMapping) -> &str {
    if p.host_ip.is_empty() {
        "0.0.0.0"
    } else {
        &p.host_ip
    }
}
