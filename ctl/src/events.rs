//! `berthctl events`.

use anyhow::Result;
use berth_api::v1;
use clap::Args;
use serde_json::json;
use tokio_stream::StreamExt;

use crate::{output, Conn, Format};

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only events matching KEY==VALUE or KEY~=SUBSTRING conditions, comma-separated
    /// (all must hold); repeat the flag for alternatives. Keys: topic, namespace,
    /// id, or an attribute such as exit_code.
    #[arg(short, long = "filter")]
    pub filter: Vec<String>,
}

pub async fn events(conn: &Conn, a: EventsArgs) -> Result<i32> {
    let mut stream = conn.events().subscribe(v1::SubscribeRequest { filters: a.filter }).await?.into_inner();
    while let Some(e) = stream.next().await {
        let e = e?;
        let t = e.timestamp.unwrap_or_default();
        let time = output::rfc3339(&t);
        if conn.format != Format::Table {
            // docker's fields (Type, Action, Actor, time, timeNano), then Berth's.
            let (kind, action) = e.topic.trim_start_matches('/').split_once('/').unwrap_or(("", e.topic.as_str()));
            let kind = kind.trim_end_matches('s');
            let v = json!({
                "Type": kind, "Action": action, "Actor": {"ID": e.id, "Attributes": e.attributes},
                "time": t.seconds, "timeNano": t.seconds as i128 * 1_000_000_000 + t.nanos as i128,
                "Time": time, "Namespace": e.namespace, "Topic": e.topic, "ID": e.id, "Attributes": e.attributes,
            });
            output::rows(&conn.format, "", &[], &[v])?;
        } else {
            let mut attrs: Vec<String> = e.attributes.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| format!("{k}={v}")).collect();
            attrs.sort();
            let attrs = if attrs.is_empty() { String::new() } else { format!(" ({})", attrs.join(", ")) };
            println!("{time} {} {} {}{attrs}", e.namespace, e.topic, e.id);
        }
    }
    Ok(0)
}
