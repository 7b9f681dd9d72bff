//! `berthctl snapshot ...`

use std::collections::BTreeMap;

use anyhow::Result;
use berth_api::v1;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::output::{self, short_id};
use crate::{Conn, Format};

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// List snapshots with their parent, kind and size
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show snapshots as a tree of parents and children
    Tree,
    /// Show the disk usage of snapshots (their own layer, not their parents)
    Usage(UsageArgs),
    /// Remove snapshots (refused while a snapshot has children)
    #[command(alias = "remove")]
    Rm(RmArgs),
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Filter: kind==committed|active|view, parent==KEY, label.KEY==VALUE
    #[arg(short, long = "filter")]
    pub filters: Vec<String>,
    /// Only show keys
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Snapshots to measure [default: all]
    pub keys: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    #[arg(required = true)]
    pub keys: Vec<String>,
}

pub async fn run(conn: &Conn, cmd: SnapshotCommand) -> Result<i32> {
    match cmd {
        SnapshotCommand::Ls(a) => ls(conn, a).await,
        SnapshotCommand::Tree => tree(conn).await,
        SnapshotCommand::Usage(a) => usage(conn, a).await,
        SnapshotCommand::Rm(a) => rm(conn, a).await,
    }
}

fn kind(k: i32) -> &'static str {
    match v1::SnapshotKind::try_from(k) {
        Ok(v1::SnapshotKind::Committed) => "committed",
        Ok(v1::SnapshotKind::Active) => "active",
        Ok(v1::SnapshotKind::View) => "view",
        _ => "unknown",
    }
}

async fn list_all(conn: &Conn, filters: Vec<String>) -> Result<Vec<v1::Snapshot>> {
    let mut s = conn.snapshots().list(v1::ListSnapshotsRequest { filters }).await?.into_inner().snapshots;
    s.sort_by(|a, b| {
        a.created_at
            .as_ref()
            .map(|t| (t.seconds, t.nanos))
            .cmp(&b.created_at.as_ref().map(|t| (t.seconds, t.nanos)))
            .then(a.key.cmp(&b.key))
    });
    Ok(s)
}

async fn ls(conn: &Conn, a: LsArgs) -> Result<i32> {
    let snaps = list_all(conn, a.filters).await?;
    if a.quiet {
        for s in &snaps {
            println!("{}", s.key);
        }
        return Ok(0);
    }
    let mut sizes = Vec::new();
    for s in &snaps {
        let u = conn.snapshots().usage(v1::UsageRequest { key: s.key.clone() }).await.map(|r| r.into_inner().size).unwrap_or(-1);
        sizes.push(u);
    }
    if conn.format == Format::Json {
        let v: Vec<_> = snaps
            .iter()
            .zip(&sizes)
            .map(|(s, size)| json!({"Key": s.key, "Parent": s.parent, "Kind": kind(s.kind), "Size": size, "Labels": s.labels, "Snapshotter": s.snapshotter}))
            .collect();
        output::json(&json!(v));
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = snaps
        .iter()
        .zip(&sizes)
        .map(|(s, size)| {
            vec![s.key.clone(), s.parent.clone(), kind(s.kind).to_owned(), if *size < 0 { "-".into() } else { output::size(*size) }]
        })
        .collect();
    output::table(&["KEY", "PARENT", "KIND", "SIZE"], &rows);
    Ok(0)
}

async fn tree(conn: &Conn) -> Result<i32> {
    let snaps = list_all(conn, Vec::new()).await?;
    let mut children: BTreeMap<String, Vec<&v1::Snapshot>> = BTreeMap::new();
    for s in &snaps {
        children.entry(s.parent.clone()).or_default().push(s);
    }
    fn walk(children: &BTreeMap<String, Vec<&v1::Snapshot>>, parent: &str, depth: usize) {
        for s in children.get(parent).map(Vec::as_slice).unwrap_or(&[]) {
            let k = if s.key.starts_with("sha256:") { format!("{} ({})", short_id(&s.key), s.key) } else { s.key.clone() };
            println!("{}{} [{}]", "  ".repeat(depth), k, kind(s.kind));
            walk(children, &s.key, depth + 1);
        }
    }
    walk(&children, "", 0);
    Ok(0)
}

async fn usage(conn: &Conn, a: UsageArgs) -> Result<i32> {
    let keys = if a.keys.is_empty() { list_all(conn, Vec::new()).await?.into_iter().map(|s| s.key).collect() } else { a.keys };
    let mut rows = Vec::new();
    let mut total = 0;
    for k in keys {
        let u = conn.snapshots().usage(v1::UsageRequest { key: k.clone() }).await?.into_inner();
        total += u.size;
        rows.push((k, u.size, u.inodes));
    }
    if conn.format == Format::Json {
        output::json(&json!(rows.iter().map(|(k, s, i)| json!({"Key": k, "Size": s, "Inodes": i})).collect::<Vec<_>>()));
        return Ok(0);
    }
    let mut table: Vec<Vec<String>> = rows.iter().map(|(k, s, i)| vec![k.clone(), output::size(*s), i.to_string()]).collect();
    table.push(vec!["TOTAL".into(), output::size(total), String::new()]);
    output::table(&["KEY", "SIZE", "INODES"], &table);
    Ok(0)
}

async fn rm(conn: &Conn, a: RmArgs) -> Result<i32> {
    let mut failed = false;
    for k in a.keys {
        if let Err(s) = conn.snapshots().remove(v1::RemoveSnapshotRequest { key: k.clone() }).await {
            eprintln!("berthctl: {}", s.message());
            failed = true;
        }
    }
    Ok(if failed { 1 } else { 0 })
}
