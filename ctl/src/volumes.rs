//! `berthctl volume ...`.

use anyhow::Result;
use berth_api::v1;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::output;
use crate::{Conn, Format};

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Make a volume (a directory under the agent's root that outlives containers)
    #[command(after_help = "Containers mount it with `-v NAME:/path` or `--mount type=volume,source=NAME,target=/path`;\n\
                            `run -v NAME:/path` also makes a missing volume, filled with the image's files at /path.")]
    Create(CreateArgs),
    /// List volumes
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show volumes as JSON, with their size and the containers that mount them
    Inspect(InspectArgs),
    /// Remove volumes (refused while a container, running or not, mounts one)
    #[command(alias = "remove")]
    Rm(NamesArgs),
    /// Remove the anonymous volumes no container mounts (-a: named ones too)
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Driver: only local
    #[arg(short, long, default_value = "local")]
    pub driver: String,
    /// Label KEY=VALUE (repeatable)
    #[arg(long = "label")]
    pub label: Vec<String>,
    /// Name of the volume [default: a generated one]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only show names
    #[arg(short, long)]
    pub quiet: bool,
    /// Filter: name=SUBSTRING, label=KEY[=VALUE], dangling=true|false (repeatable)
    #[arg(short, long = "filter")]
    pub filter: Vec<String>,
    /// Show each volume's size (reads every volume's files)
    #[arg(short, long)]
    pub size: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Print each through a Go template, as docker's -f: '{{.Name}}'
    #[arg(short = 'f', value_name = "TEMPLATE")]
    pub template: Option<String>,
    /// Volume names
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct NamesArgs {
    /// Volume names
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Named volumes too, not only anonymous ones
    #[arg(short, long)]
    pub all: bool,
    /// Filter: label=KEY[=VALUE] (repeatable)
    #[arg(long = "filter")]
    pub filter: Vec<String>,
    /// Do not ask (berthctl never asks; accepted for docker's scripts)
    #[arg(short, long)]
    pub force: bool,
}

pub async fn run(conn: &Conn, cmd: VolumeCommand) -> Result<i32> {
    match cmd {
        VolumeCommand::Create(a) => create(conn, a).await,
        VolumeCommand::Ls(a) => ls(conn, a).await,
        VolumeCommand::Inspect(a) => inspect(conn, a).await,
        VolumeCommand::Rm(a) => rm(conn, a).await,
        VolumeCommand::Prune(a) => prune(conn, a).await,
    }
}

/// docker's `--filter KEY=VALUE` made the API's form (`name` a substring, as docker).
fn filters(given: &[String]) -> Vec<String> {
    given.iter().map(|f| output::api_filter(f, &[], &["name"], &[])).collect()
}

pub fn volume_json(v: &v1::Volume, size: bool) -> serde_json::Value {
    let mut j = json!({
        "Name": v.name,
        "Driver": v.driver,
        "Mountpoint": v.mountpoint,
        "Labels": v.labels,
        "CreatedAt": v.created_at.as_ref().map(output::rfc3339),
        "Anonymous": v.anonymous,
        "Scope": "local",
        "Containers": v.containers,
    });
    if size {
        j["UsageData"] = json!({"Size": v.size, "RefCount": v.containers.len()});
    }
    j
}

async fn create(conn: &Conn, a: CreateArgs) -> Result<i32> {
    let labels = berth_common::labels::parse_all(a.label.iter().map(String::as_str))?;
    let req = v1::CreateVolumeRequest { name: a.name.unwrap_or_default(), labels: labels.into_iter().collect(), driver: a.driver };
    let v = conn.volumes().create(req).await?.into_inner().volume.unwrap_or_default();
    if conn.format == Format::Json {
        output::json(&volume_json(&v, false));
    } else {
        println!("{}", v.name);
    }
    Ok(0)
}

async fn ls(conn: &Conn, a: LsArgs) -> Result<i32> {
    let req = v1::ListVolumesRequest { filters: filters(&a.filter), sizes: a.size };
    let vols = conn.volumes().list(req).await?.into_inner().volumes;
    if a.quiet {
        for v in &vols {
            println!("{}", v.name);
        }
        return Ok(0);
    }
    let rows: Vec<serde_json::Value> = vols
        .iter()
        .map(|v| {
            let labels: Vec<String> = v.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            json!({"Driver": v.driver, "Name": v.name, "Mountpoint": v.mountpoint, "Labels": labels.join(","), "Scope": "local",
                   "Links": v.containers.len().to_string(), "Size": if a.size { output::size(v.size as i64) } else { "N/A".into() },
                   "Containers": v.containers.len().to_string()})
        })
        .collect();
    let table =
        if a.size { "table {{.Driver}}\t{{.Name}}\t{{.Containers}}\t{{.Size}}" } else { "table {{.Driver}}\t{{.Name}}\t{{.Containers}}" };
    output::rows(&conn.format, table, &[("Name", "VOLUME NAME")], &rows)?;
    Ok(0)
}

async fn inspect(conn: &Conn, a: InspectArgs) -> Result<i32> {
    let format = conn.format_with(a.template.as_deref())?;
    let mut found = Vec::new();
    let mut code = 0;
    for name in a.names {
        match conn.volumes().get(v1::GetVolumeRequest { name }).await {
            Ok(r) => found.push(volume_json(&r.into_inner().volume.unwrap_or_default(), true)),
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
        match conn.volumes().remove(v1::RemoveVolumeRequest { name: name.clone() }).await {
            Ok(r) => println!("{}", r.into_inner().name),
            Err(e) => {
                eprintln!("berthctl: {}: {}", berth_common::text::printable(&name), berth_common::text::printable(e.message()));
                code = 1;
            }
        }
    }
    Ok(code)
}

async fn prune(conn: &Conn, a: PruneArgs) -> Result<i32> {
    let r = conn.volumes().prune(v1::PruneVolumesRequest { all: a.all, filters: filters(&a.filter) }).await?.into_inner();
    if conn.format == Format::Json {
        output::json(&json!({"VolumesDeleted": r.removed, "SpaceReclaimed": r.reclaimed_bytes}));
    } else {
        if !r.removed.is_empty() {
            println!("Deleted Volumes:");
        }
        for n in &r.removed {
            println!("{n}");
        }
        println!("Total reclaimed space: {}", output::size(r.reclaimed_bytes as i64));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_filters_become_the_apis() {
        let f = |s: &[&str]| filters(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert_eq!(f(&["name=data"]), ["name~=data"]);
        assert_eq!(f(&["label=a=b", "label=c"]), ["label.a==b", "label.c"]);
        assert_eq!(f(&["dangling=true"]), ["dangling==true"]);
        assert_eq!(f(&["name==exact"]), ["name==exact"]);
    }
}
