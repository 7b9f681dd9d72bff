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
    /// docker's container=NAME, event=ACTION (start, die, create, destroy, ...)
    /// and type=image|volume|network are taken too (all of them must hold).
    #[arg(short, long = "filter")]
    pub filter: Vec<String>,
    /// Also the recent events since this time (RFC 3339, Unix seconds, or a
    /// duration ago such as 10m), of the last 1024 the agent keeps
    #[arg(long)]
    pub since: Option<String>,
    /// Stop at this time (the same forms); a past time ends after the recent events
    #[arg(long)]
    pub until: Option<String>,
}

pub async fn events(conn: &Conn, a: EventsArgs) -> Result<i32> {
    // The API's own filters (KEY==VALUE, KEY~=TEXT) each stand alone (any
    // may pass); docker's (event=, container=, type=) all hold together, as docker reads them.
    let mut filters = Vec::new();
    let mut docker = Vec::new();
    for f in &a.filter {
        match f.split_once('=') {
            _ if f.contains("==") || f.contains("~=") => filters.push(f.clone()),
            Some(("event", action)) => docker.push(format!("topic~={}", docker_topic(action))),
            Some(("container", name)) => {
                let c = conn.containers().get(v1::GetContainerRequest { id: name.to_owned() }).await?.into_inner();
                docker.push(format!("id=={}", c.container.unwrap_or_default().id));
            }
            Some(("type", kind @ ("image" | "volume" | "network"))) => docker.push(format!("topic~=/{kind}s/")),
            _ => anyhow::bail!("invalid event filter {f:?}: use event=ACTION, container=NAME, type=image|volume|network, or KEY==VALUE"),
        }
    }
    if !docker.is_empty() {
        filters.push(docker.join(","));
    }
    let time = |s: &Option<String>| s.as_deref().map(crate::containers::time_flag).transpose();
    let req = v1::SubscribeRequest { filters, since: time(&a.since)?, until: time(&a.until)? };
    let mut stream = conn.events().subscribe(req).await?.into_inner();
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

/// The topic of docker's event action: `die` is a task's exit, `destroy` a
/// container's deletion; other words name the topic's last part.
fn docker_topic(action: &str) -> String {
    match action {
        "die" => "/tasks/exit".into(),
        "destroy" => "/containers/delete".into(),
        "start" | "pause" | "resume" | "oom" | "restart" | "health_status" => format!("/tasks/{}", action.trim_end_matches("_status")),
        "create" | "update" | "rename" => format!("/containers/{action}"),
        other => format!("/{other}"),
    }
}
