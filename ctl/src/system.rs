//! `berthctl version`, `berthctl info` and `berthctl system df`.

use anyhow::Result;
use berth_api::v1;
use serde_json::json;

use crate::output::{self, size};
use crate::{Conn, Format};

/// `version`: the client's, then the agent's; the client's alone (and exit
/// 1) when the agent cannot be reached, as docker does.
pub async fn version(conn: Result<&Conn, &anyhow::Error>, format: &Format) -> Result<i32> {
    let client =
        json!({"Version": env!("CARGO_PKG_VERSION"), "ApiVersion": "v1", "Os": std::env::consts::OS, "Arch": std::env::consts::ARCH});
    let server = match conn {
        Ok(conn) => {
            let v = conn.version().version(v1::VersionRequest {}).await?.into_inner().version.unwrap_or_default();
            Some(json!({"Version": v.version, "ApiVersion": v.api_version, "Revision": v.revision}))
        }
        Err(_) => None,
    };
    let v = json!({"Client": client, "Server": server});
    match format {
        Format::Table => {
            println!("Client:\n  Version:  {}\n  API:      v1", client["Version"].as_str().unwrap_or_default());
            if let Some(s) = &server {
                println!(
                    "\nServer:\n  Version:  {}\n  API:      {}",
                    s["Version"].as_str().unwrap_or_default(),
                    s["ApiVersion"].as_str().unwrap_or_default()
                );
            }
        }
        Format::Json => println!("{}", serde_json::to_string(&v)?),
        Format::Template(_) => output::inspected(format, &[v])?,
    }
    match conn {
        Ok(_) => Ok(0),
        Err(e) => {
            eprintln!("berthctl: {}", berth_common::text::printable(&crate::describe(e)));
            Ok(1)
        }
    }
}

pub async fn info(conn: &Conn) -> Result<i32> {
    let i = conn.version().info(v1::InfoRequest {}).await?.into_inner();
    let v = i.version.clone().unwrap_or_default();
    if conn.format != Format::Table {
        let info = json!({
            "ServerVersion": v.version, "DockerRootDir": i.root, "StateDir": i.state, "Address": i.address,
            "Driver": i.snapshotter, "DriverReason": i.snapshotter_reason,
            "Namespaces": i.namespaces, "Images": i.images, "Snapshots": i.snapshots,
            "Blobs": i.blobs, "ContentSize": i.content_size, "KernelVersion": i.kernel, "Pid": i.pid,
            "Containers": i.containers, "ContainersRunning": i.containers_running,
            "ContainersStopped": i.containers.saturating_sub(i.containers_running),
            "DefaultRuntime": i.default_runtime, "Runtimes": i.runtimes,
            "OperatingSystem": std::env::consts::OS, "Architecture": std::env::consts::ARCH,
        });
        if conn.format == Format::Json {
            output::json(&info);
        } else {
            output::inspected(&conn.format, &[info])?;
        }
    } else {
        println!("Server Version:  {}", v.version);
        println!("Root Dir:        {}", i.root);
        println!("State Dir:       {}", i.state);
        println!("Address:         {}", i.address);
        println!("Snapshotter:     {} ({})", i.snapshotter, i.snapshotter_reason);
        println!("Namespaces:      {}", i.namespaces.join(", "));
        println!("Images:          {}", i.images);
        println!("Snapshots:       {}", i.snapshots);
        println!("Blobs:           {} ({})", i.blobs, size(i.content_size));
        println!("Containers:      {} ({} running)", i.containers, i.containers_running);
        println!("Runtime:         {} (known: {})", i.default_runtime, i.runtimes.join(", "));
        println!("Kernel Version:  {}", i.kernel);
        println!("Agent PID:       {}", i.pid);
    }
    Ok(0)
}

/// `berthctl system ...`.
#[derive(Debug, clap::Subcommand)]
pub enum SystemCommand {
    /// Show the disk space images, containers and volumes take
    Df(DfArgs),
    /// Show how the agent is configured and what it holds (as `info`)
    Info,
    /// Remove stopped containers, networks no container uses, untagged images
    /// and build cache (-a: every image no container uses; --volumes: anonymous volumes)
    Prune(PruneArgs),
}

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Every image no container uses, not only untagged ones
    #[arg(short, long)]
    pub all: bool,
    /// Anonymous volumes no container uses too
    #[arg(long)]
    pub volumes: bool,
    /// Do not ask (berthctl never asks; accepted for docker's scripts)
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, clap::Args)]
pub struct DfArgs {
    /// One line per image, container and volume
    #[arg(short, long)]
    pub verbose: bool,
}

pub async fn run(conn: &Conn, cmd: SystemCommand) -> Result<i32> {
    match cmd {
        SystemCommand::Df(a) => df(conn, a).await,
        SystemCommand::Info => info(conn).await,
        SystemCommand::Prune(a) => prune(conn, a).await,
    }
}

/// docker's `system prune`: each kind's prune, in the order that frees the
/// most (containers first, so their images and networks are unused after).
async fn prune(conn: &Conn, a: PruneArgs) -> Result<i32> {
    let (_, containers) = crate::containers::prune(conn, crate::containers::PruneArgs { filter: vec![], force: true }).await?;
    let networks = conn.networks().prune(v1::PruneNetworksRequest {}).await?.into_inner().removed;
    if conn.format != Format::Json {
        if !networks.is_empty() {
            println!("Deleted Networks:");
        }
        for n in &networks {
            println!("{n}");
        }
    }
    if a.volumes {
        let r = conn.volumes().prune(v1::PruneVolumesRequest { all: false, filters: vec![] }).await?.into_inner();
        if conn.format != Format::Json {
            if !r.removed.is_empty() {
                println!("Deleted Volumes:");
            }
            for n in &r.removed {
                println!("{n}");
            }
        }
    }
    let images = crate::images::PruneArgs { all: a.all, filter: vec![], force: true };
    let (_, image_bytes) = crate::images::prune(conn, images).await?;
    let keep = if a.all { 0 } else { 48 * 3600 };
    let cache = conn.builder().prune(v1::PruneBuildCacheRequest { all: a.all, keep_duration_seconds: keep }).await?.into_inner();
    if conn.format != Format::Json {
        println!("Deleted build cache entries: {}", cache.entries_removed);
        println!("Total reclaimed space: {}", size(containers + image_bytes));
    }
    Ok(0)
}

/// A percentage of `total`, as docker's df prints it.
fn share(part: i64, total: i64) -> String {
    let part = part.clamp(0, total.max(0));
    let pct = if total > 0 { part * 100 / total } else { 0 };
    format!("{} ({pct}%)", size(part))
}

async fn df(conn: &Conn, a: DfArgs) -> Result<i32> {
    let info = conn.version().info(v1::InfoRequest {}).await?.into_inner();
    let images = conn.images().list(v1::ListImagesRequest { filters: vec![] }).await?.into_inner().images;
    let containers = conn.containers().list(v1::ListContainersRequest::default()).await?.into_inner().containers;
    let volumes = conn.volumes().list(v1::ListVolumesRequest { filters: vec![], sizes: true }).await?.into_inner().volumes;
    // The writable layer of each container.
    let mut layer_sizes = Vec::with_capacity(containers.len());
    for c in &containers {
        layer_sizes.push(crate::containers::layer_size(conn, c).await);
    }
    let running = |c: &v1::Container| c.status.as_ref().is_some_and(|s| s.state == "running" || s.state == "paused");
    let used_images: std::collections::HashSet<&str> = containers.iter().map(|c| c.image.as_str()).collect();
    let images_size = info.content_size;
    let unused_images: i64 = images.iter().filter(|i| !used_images.contains(i.name.as_str())).map(|i| i.size).sum();
    let containers_size: i64 = layer_sizes.iter().sum();
    let stopped_size: i64 = containers.iter().zip(&layer_sizes).filter(|(c, _)| !running(c)).map(|(_, s)| *s).sum();
    let volumes_size: i64 = volumes.iter().map(|v| v.size as i64).sum();
    let unused_volumes: i64 = volumes.iter().filter(|v| v.containers.is_empty()).map(|v| v.size as i64).sum();
    let active_images = images.iter().filter(|i| used_images.contains(i.name.as_str())).count();
    let running_count = containers.iter().filter(|c| running(c)).count();
    let used_volumes = volumes.iter().filter(|v| !v.containers.is_empty()).count();
    let row = |kind: &str, total: usize, active: usize, sz: i64, reclaim: i64| {
        json!({"Type": kind, "TotalCount": total.to_string(), "Active": active.to_string(), "Size": size(sz),
               "Reclaimable": share(reclaim, sz), "SizeBytes": sz, "ReclaimableBytes": reclaim.clamp(0, sz.max(0))})
    };
    let rows = vec![
        row("Images", images.len(), active_images, images_size, unused_images),
        row("Containers", containers.len(), running_count, containers_size, stopped_size),
        row("Local Volumes", volumes.len(), used_volumes, volumes_size, unused_volumes),
    ];
    output::rows(
        &conn.format,
        "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}",
        &[("TotalCount", "TOTAL")],
        &rows,
    )?;
    if conn.format != Format::Table {
        return Ok(0);
    }
    if a.verbose {
        println!("\nImages space usage:\n");
        let rows: Vec<Vec<String>> = images
            .iter()
            .map(|i| {
                let users = containers.iter().filter(|c| c.image == i.name).count();
                vec![i.name.clone(), output::short_id(&i.config_digest), size(i.size), users.to_string()]
            })
            .collect();
        output::table(&["IMAGE", "IMAGE ID", "SIZE", "CONTAINERS"], &rows);
        println!("\nContainers space usage:\n");
        let rows: Vec<Vec<String>> = containers
            .iter()
            .zip(&layer_sizes)
            .map(|(c, s)| {
                let state = c.status.as_ref().map(|s| s.state.clone()).unwrap_or_default();
                vec![c.id.chars().take(12).collect(), c.image.clone(), size(*s), state, c.name.clone()]
            })
            .collect();
        output::table(&["CONTAINER ID", "IMAGE", "SIZE", "STATUS", "NAMES"], &rows);
        println!("\nLocal Volumes space usage:\n");
        let rows: Vec<Vec<String>> =
            volumes.iter().map(|v| vec![v.name.clone(), v.containers.len().to_string(), size(v.size as i64)]).collect();
        output::table(&["VOLUME NAME", "LINKS", "SIZE"], &rows);
    }
    Ok(0)
}
