//! `berthctl version`, `berthctl info` and `berthctl system df`.

use anyhow::Result;
use berth_api::v1;
use serde_json::json;

use crate::output::{self, size};
use crate::{Conn, Format};

pub async fn version(conn: &Conn) -> Result<i32> {
    let server = conn.version().version(v1::VersionRequest {}).await?.into_inner().version.unwrap_or_default();
    let client = env!("CARGO_PKG_VERSION");
    if conn.format == Format::Json {
        output::json(
            &json!({"client": {"version": client}, "server": {"version": server.version, "revision": server.revision, "api": server.api_version}}),
        );
    } else {
        println!("Client:\n  Version:  {client}\n\nServer:\n  Version:  {}\n  API:      {}", server.version, server.api_version);
    }
    Ok(0)
}

pub async fn info(conn: &Conn) -> Result<i32> {
    let i = conn.version().info(v1::InfoRequest {}).await?.into_inner();
    let v = i.version.clone().unwrap_or_default();
    if conn.format == Format::Json {
        output::json(&json!({
            "version": v.version, "root": i.root, "state": i.state, "address": i.address,
            "snapshotter": i.snapshotter, "snapshotter_reason": i.snapshotter_reason,
            "namespaces": i.namespaces, "images": i.images, "snapshots": i.snapshots,
            "blobs": i.blobs, "content_size": i.content_size, "kernel": i.kernel, "pid": i.pid,
            "containers": i.containers, "containers_running": i.containers_running,
            "default_runtime": i.default_runtime, "runtimes": i.runtimes,
        }));
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
    }
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
        let usage = conn.snapshots().usage(v1::UsageRequest { key: c.snapshot_key.clone() }).await.map(|r| r.into_inner().size);
        layer_sizes.push(usage.unwrap_or(0));
    }
    let running = |c: &v1::Container| c.status.as_ref().is_some_and(|s| s.state == "running" || s.state == "paused");
    let used_images: std::collections::HashSet<&str> = containers.iter().map(|c| c.image.as_str()).collect();
    let images_size = info.content_size;
    let unused_images: i64 = images.iter().filter(|i| !used_images.contains(i.name.as_str())).map(|i| i.size).sum();
    let containers_size: i64 = layer_sizes.iter().sum();
    let stopped_size: i64 = containers.iter().zip(&layer_sizes).filter(|(c, _)| !running(c)).map(|(_, s)| *s).sum();
    let volumes_size: i64 = volumes.iter().map(|v| v.size as i64).sum();
    let unused_volumes: i64 = volumes.iter().filter(|v| v.containers.is_empty()).map(|v| v.size as i64).sum();
    if conn.format == Format::Json {
        output::json(&json!([
            {"Type": "Images", "TotalCount": images.len(), "Active": used_images.len(), "Size": images_size, "Reclaimable": unused_images.min(images_size)},
            {"Type": "Containers", "TotalCount": containers.len(), "Active": containers.iter().filter(|c| running(c)).count(), "Size": containers_size, "Reclaimable": stopped_size},
            {"Type": "Local Volumes", "TotalCount": volumes.len(), "Active": volumes.iter().filter(|v| !v.containers.is_empty()).count(), "Size": volumes_size, "Reclaimable": unused_volumes},
        ]));
        return Ok(0);
    }
    let rows = vec![
        vec![
            "Images".into(),
            images.len().to_string(),
            images.iter().filter(|i| used_images.contains(i.name.as_str())).count().to_string(),
            size(images_size),
            share(unused_images, images_size),
        ],
        vec![
            "Containers".into(),
            containers.len().to_string(),
            containers.iter().filter(|c| running(c)).count().to_string(),
            size(containers_size),
            share(stopped_size, containers_size),
        ],
        vec![
            "Local Volumes".into(),
            volumes.len().to_string(),
            volumes.iter().filter(|v| !v.containers.is_empty()).count().to_string(),
            size(volumes_size),
            share(unused_volumes, volumes_size),
        ],
    ];
    output::table(&["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], &rows);
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
