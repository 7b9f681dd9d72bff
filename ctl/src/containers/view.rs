//! How containers are shown: the `ps`, `stats` and `top` tables, docker's
//! STATUS column, and the JSON of `inspect`.

use std::time::Duration;

use berth_api::v1;
use serde_json::json;

use crate::output::{self, ago};

fn secs(t: &Option<prost_types::Timestamp>) -> i64 {
    t.as_ref().map_or(0, |t| t.seconds)
}

/// docker's STATUS column: "Up 5 minutes", "Exited (0) 3 seconds ago",
/// "Restarting (1) 2 seconds ago", "Created".
fn status_text(s: &v1::TaskStatus) -> String {
    let since = |t: i64| output::duration(output::now_secs() - t);
    match s.state.as_str() {
        "running" => format!("Up {}", since(secs(&s.started_at))),
        "paused" => format!("Up {} (Paused)", since(secs(&s.started_at))),
        "exited" => format!("Exited ({}) {}", s.exit_code, ago(secs(&s.finished_at))),
        "restarting" => format!("Restarting ({}) {}", s.exit_code, ago(secs(&s.finished_at))),
        "created" => "Created".into(),
        other => other.to_owned(),
    }
}

/// docker's "Up 3 minutes (healthy)": the health of a running container with a check.
fn with_health(status: String, c: &v1::Container) -> String {
    match (&c.health, c.status.as_ref().map(|s| s.state.as_str())) {
        (Some(h), Some("running")) => format!("{status} ({})", if h.status == "starting" { "health: starting" } else { &h.status }),
        _ => status,
    }
}

pub fn container_json(c: &v1::Container) -> serde_json::Value {
    let s = c.status.clone().unwrap_or_default();
    let cfg = c.config.clone().unwrap_or_default();
    let t = |t: &Option<prost_types::Timestamp>| t.as_ref().map(output::rfc3339);
    let mut v = json!({
        "Id": c.id,
        "Name": c.name,
        "Image": c.image,
        "ImageDigest": c.image_digest,
        "Created": t(&c.created_at),
        "Args": c.args,
        "Runtime": c.runtime,
        "SnapshotKey": c.snapshot_key,
        "Labels": c.labels,
        "RestartCount": c.restart_count,
        "StoppedByUser": c.stopped_by_user,
        "State": {
            "Status": s.state,
            "Pid": s.pid,
            "ExitCode": s.exit_code,
            "StartedAt": t(&s.started_at),
            "FinishedAt": t(&s.finished_at),
            "OOMKilled": s.oom_killed,
        },
        "Config": {
            "Env": cfg.env, "WorkingDir": cfg.workdir, "User": cfg.user, "Hostname": cfg.hostname,
            "Tty": cfg.tty, "OpenStdin": cfg.stdin, "ReadOnly": cfg.read_only, "Privileged": cfg.privileged,
            "Network": if cfg.network.is_empty() { "networks" } else { &cfg.network },
            "Networks": cfg.networks.iter().map(|e| json!({"Network": e.network, "Aliases": e.aliases, "IPv4Address": e.ipv4_address})).collect::<Vec<_>>(),
            "PublishedPorts": cfg.ports.iter().map(|p| json!({"HostIp": p.host_ip, "HostPort": p.host_port, "ContainerPort": p.container_port, "Protocol": p.protocol})).collect::<Vec<_>>(),
            "PublishAll": cfg.publish_all, "Dns": cfg.dns, "DnsSearch": cfg.dns_search, "DnsOptions": cfg.dns_options, "ExtraHosts": cfg.extra_hosts,
            "CapAdd": cfg.cap_add, "CapDrop": cfg.cap_drop, "AutoRemove": cfg.auto_remove,
            "Mounts": cfg.mounts.iter().map(|m| json!({"Type": m.r#type, "Source": m.source, "Destination": m.destination, "ReadOnly": m.readonly, "Options": m.options})).collect::<Vec<_>>(),
            "Resources": cfg.resources.map(|r| json!({"Memory": r.memory_bytes, "CpuMillis": r.cpu_millis, "PidsLimit": r.pids_limit})),
        },
        "NetworkSettings": network_settings(c),
    });
    // (Apart: one json! of it all is past the macro's recursion limit.)
    let more = json!({
        "Init": cfg.init, "StopSignal": cfg.stop_signal, "StopTimeout": cfg.stop_timeout,
        "RestartPolicy": cfg.restart_policy.as_ref().map(|r| json!({"Name": r.name, "MaximumRetryCount": r.max_retries})),
        "Healthcheck": cfg.healthcheck.as_ref().map(|h| json!({"Test": h.test, "IntervalMs": h.interval_ms, "TimeoutMs": h.timeout_ms,
            "StartPeriodMs": h.start_period_ms, "Retries": h.retries})),
    });
    if let (Some(config), serde_json::Value::Object(more)) = (v.get_mut("Config").and_then(|c| c.as_object_mut()), more) {
        config.extend(more);
    }
    if let (Some(state), Some(h)) = (v.get_mut("State").and_then(|s| s.as_object_mut()), &c.health) {
        let log: Vec<_> = h
            .log
            .iter()
            .map(|p| json!({"Start": p.start.as_ref().map(output::rfc3339), "End": p.end.as_ref().map(output::rfc3339), "ExitCode": p.exit_code, "Output": p.output}))
            .collect();
        state.insert("Health".into(), json!({"Status": h.status, "FailingStreak": h.failing_streak, "Log": log}));
    }
    // The spec comes with one container (inspect), not with a list (ps).
    if let Ok(spec) = serde_json::from_slice::<serde_json::Value>(&c.spec) {
        v["Spec"] = spec;
    }
    v
}

/// docker's `NetworkSettings`: the container's address on each network, and
/// its published ports by container port.
fn network_settings(c: &v1::Container) -> serde_json::Value {
    let mut networks = serde_json::Map::new();
    for e in &c.endpoints {
        let (ip, prefix) = e.addresses.first().and_then(|a| a.split_once('/')).unwrap_or(("", ""));
        networks.insert(
            e.network.clone(),
            json!({
                "NetworkID": e.network_id, "IPAddress": ip, "IPPrefixLen": prefix.parse::<u32>().unwrap_or(0),
                "Gateway": e.gateway, "MacAddress": e.mac_address, "Aliases": e.aliases, "Interface": e.interface,
            }),
        );
    }
    let mut ports = serde_json::Map::new();
    for p in &c.ports {
        let host = json!({"HostIp": if p.host_ip.is_empty() { "0.0.0.0" } else { &p.host_ip }, "HostPort": p.host_port.to_string()});
        match ports.entry(format!("{}/{}", p.container_port, p.protocol)).or_insert_with(|| json!([])) {
            serde_json::Value::Array(list) => list.push(host),
            _ => unreachable!("made a list above"),
        }
    }
    let first = c.endpoints.first();
    json!({
        "IPAddress": first.and_then(|e| e.addresses.first()).map(|a| a.split('/').next().unwrap_or_default()).unwrap_or_default(),
        "Gateway": first.map(|e| e.gateway.as_str()).unwrap_or_default(),
        "Networks": networks,
        "Ports": ports,
    })
}

/// docker's PORTS column: `0.0.0.0:8080->80/tcp, 127.0.0.1:5353->53/udp`.
pub fn ports_text(c: &v1::Container) -> String {
    c.ports
        .iter()
        .map(|p| {
            format!("{}:{}->{}/{}", if p.host_ip.is_empty() { "0.0.0.0" } else { &p.host_ip }, p.host_port, p.container_port, p.protocol)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn shell_join(args: &[String]) -> String {
    args.join(" ")
}

/// A container id: its first 12 characters, or all of it with `--no-trunc`.
pub fn short_id(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        id.to_owned()
    } else {
        id[..12.min(id.len())].to_owned()
    }
}

pub const PS_HEADER: [&str; 7] = ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"];

/// A `ps` row: the command cut at 20 characters and the image without
/// `:latest`, unless `no_trunc`.
pub fn ps_row(c: &v1::Container, no_trunc: bool) -> Vec<String> {
    let cmd = shell_join(&c.args);
    let cmd = if no_trunc || cmd.chars().count() <= 20 { cmd } else { format!("{}…", cmd.chars().take(19).collect::<String>()) };
    let (repo, tag) = output::repo_tag(&c.image);
    let image = if tag.is_empty() || tag == "latest" { repo } else { format!("{repo}:{tag}") };
    vec![
        short_id(&c.id, no_trunc),
        image,
        format!("\"{cmd}\""),
        ago(secs(&c.created_at)),
        with_health(status_text(&c.status.clone().unwrap_or_default()), c),
        ports_text(c),
        c.name.clone(),
    ]
}

pub const STATS_HEADER: [&str; 5] = ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "PIDS"];

/// A `stats` row. CPU % is the CPU time used since `cpu_before_ns`, one
/// `interval` ago, over that interval.
pub fn stats_row(id: &str, name: &str, s: &v1::StatsResponse, cpu_before_ns: u64, interval: Duration) -> Vec<String> {
    let cpu = (s.cpu_usage_ns.saturating_sub(cpu_before_ns)) as f64 / interval.as_nanos() as f64 * 100.0;
    let limit = if s.memory_limit_bytes > 0 { output::size(s.memory_limit_bytes as i64) } else { "unlimited".into() };
    let pids = if s.pids_limit > 0 { format!("{} / {}", s.pids_current, s.pids_limit) } else { s.pids_current.to_string() };
    vec![
        short_id(id, false),
        name.to_owned(),
        format!("{cpu:.2}%"),
        format!("{} / {limit}", output::size(s.memory_usage_bytes as i64)),
        pids,
    ]
}

pub fn stats_json(id: &str, name: &str, s: &v1::StatsResponse) -> serde_json::Value {
    json!({"id": id, "name": name, "cpu_usage_ns": s.cpu_usage_ns, "memory_usage_bytes": s.memory_usage_bytes, "memory_limit_bytes": s.memory_limit_bytes, "pids": s.pids_current, "pids_limit": s.pids_limit})
}

pub const TOP_HEADER: [&str; 5] = ["UID", "PID", "PPID", "TIME", "CMD"];

/// A `top` row, with the CPU time as HH:MM:SS.
pub fn top_row(p: &v1::ProcessInfo) -> Vec<String> {
    let t = p.cpu_ms / 1000;
    vec![
        p.uid.to_string(),
        p.pid.to_string(),
        p.ppid.to_string(),
        format!("{:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60),
        p.command.clone(),
    ]
}

pub fn top_json(p: &v1::ProcessInfo) -> serde_json::Value {
    json!({"pid": p.pid, "ppid": p.ppid, "uid": p.uid, "state": p.state, "cpu_ms": p.cpu_ms, "rss_bytes": p.rss_bytes, "elapsed_secs": p.elapsed_secs, "command": p.command})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_rows_look_like_docker() {
        let c = v1::Container {
            id: "0123456789abcdef0123".into(),
            name: "web".into(),
            image: "docker.io/library/busybox:latest".into(),
            args: vec!["sh".into(), "-c".into(), "while true; do sleep 1; done".into()],
            status: Some(v1::TaskStatus { state: "created".into(), ..Default::default() }),
            ..Default::default()
        };
        let row = ps_row(&c, false);
        assert_eq!(row[0], "0123456789ab");
        assert_eq!(row[1], "busybox");
        assert_eq!(row[2], "\"sh -c while true; d…\"");
        assert_eq!((row[3].as_str(), row[4].as_str(), row[5].as_str(), row[6].as_str()), ("N/A", "Created", "", "web"));
        let ports = vec![
            v1::PortMapping { host_ip: String::new(), host_port: 18080, container_port: 80, protocol: "tcp".into() },
            v1::PortMapping { host_ip: "127.0.0.1".into(), host_port: 5353, container_port: 53, protocol: "udp".into() },
        ];
        let with_ports = v1::Container { ports, ..c.clone() };
        assert_eq!(ps_row(&with_ports, false)[5], "0.0.0.0:18080->80/tcp, 127.0.0.1:5353->53/udp");
        let j = container_json(&with_ports);
        assert_eq!(j["NetworkSettings"]["Ports"]["53/udp"][0]["HostPort"], "5353");
        let row = ps_row(&v1::Container { image: "localhost:5000/a:v1".into(), ..c.clone() }, true);
        assert_eq!(row[0], c.id);
        assert_eq!(row[1], "localhost:5000/a:v1");
        assert_eq!(row[2], "\"sh -c while true; do sleep 1; done\"");
        assert_eq!(row.len(), PS_HEADER.len());
    }

    #[test]
    fn stats_and_top_rows() {
        let s = v1::StatsResponse {
            cpu_usage_ns: 1_500_000_000,
            memory_usage_bytes: 4_261_000,
            memory_limit_bytes: 0,
            pids_current: 3,
            pids_limit: 10,
            ..Default::default()
        };
        let row = stats_row("abc", "web", &s, 1_000_000_000, Duration::from_secs(1));
        assert_eq!(row, ["abc", "web", "50.00%", "4.261MB / unlimited", "3 / 10"]);
        let p = v1::ProcessInfo { uid: 0, pid: 42, ppid: 1, cpu_ms: 3_723_000, command: "sleep 300".into(), ..Default::default() };
        assert_eq!(top_row(&p), ["0", "42", "1", "01:02:03", "sleep 300"]);
    }
}
