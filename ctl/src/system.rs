//! `berthctl version` and `berthctl info`.

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
