//! `berthctl content ...`

use anyhow::Result;
use berth_api::v1;
use clap::{Args, Subcommand};
use serde_json::json;
use tokio_stream::StreamExt;

use crate::output::{self, ago};
use crate::{Conn, Format};

#[derive(Debug, Subcommand)]
pub enum ContentCommand {
    /// List blobs
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Write a blob to standard output
    Get(GetArgs),
    /// Replace a blob's labels (KEY=VALUE...; none clears them)
    Label(LabelArgs),
    /// Remove blobs (refused while an image uses them, unless --force)
    #[command(alias = "remove")]
    Rm(RmArgs),
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only show digests
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Digest of the blob (sha256:...)
    pub digest: String,
}

#[derive(Debug, Args)]
pub struct LabelArgs {
    /// Digest of the blob (sha256:...)
    pub digest: String,
    /// Labels, KEY=VALUE
    pub labels: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    #[arg(required = true)]
    pub digests: Vec<String>,
    /// Remove even if an image uses the blob (the image becomes unusable)
    #[arg(short, long)]
    pub force: bool,
}

pub async fn run(conn: &Conn, cmd: ContentCommand) -> Result<i32> {
    match cmd {
        ContentCommand::Ls(a) => {
            let blobs = conn.content().list(v1::ListContentRequest {}).await?.into_inner().blobs;
            if a.quiet {
                blobs.iter().for_each(|b| println!("{}", b.digest));
            } else if conn.format == Format::Json {
                output::json(&json!(blobs
                    .iter()
                    .map(|b| json!({"Digest": b.digest, "Size": b.size, "Labels": b.labels}))
                    .collect::<Vec<_>>()));
            } else {
                let rows: Vec<Vec<String>> = blobs
                    .iter()
                    .map(|b| {
                        let mut labels: Vec<String> = b.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        labels.sort();
                        vec![
                            b.digest.clone(),
                            output::size(b.size),
                            ago(b.created_at.as_ref().map(|t| t.seconds).unwrap_or(0)),
                            labels.join(","),
                        ]
                    })
                    .collect();
                output::table(&["DIGEST", "SIZE", "AGE", "LABELS"], &rows);
            }
            Ok(0)
        }
        ContentCommand::Get(a) => {
            use std::io::Write;
            let mut stream = conn.content().read(v1::ReadContentRequest { digest: a.digest, offset: 0, size: 0 }).await?.into_inner();
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = stream.next().await {
                out.write_all(&chunk?.data)?;
            }
            out.flush()?;
            Ok(0)
        }
        ContentCommand::Label(a) => {
            let labels = berth_common::labels::parse_all(a.labels.iter().map(String::as_str))?;
            conn.content().update_labels(v1::UpdateContentLabelsRequest { digest: a.digest, labels }).await?;
            Ok(0)
        }
        ContentCommand::Rm(a) => {
            let mut failed = false;
            for d in a.digests {
                if let Err(s) = conn.content().delete(v1::DeleteContentRequest { digest: d, force: a.force }).await {
                    eprintln!("berthctl: {}", s.message());
                    failed = true;
                }
            }
            Ok(if failed { 1 } else { 0 })
        }
    }
}
