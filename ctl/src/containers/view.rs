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

/// A container as docker's `inspect` shows it: `Config` with what the
/// container runs (the image's config merged with the flags, read from its
/// runtime spec), `HostConfig` with how it was created, `State`, `Mounts`,
/// `NetworkSettings`; Berth's own fields after docker's.
pub fn container_json(c: &v1::Container) -> serde_json::Value {
    let s = c.status.clone().unwrap_or_default();
    let cfg = c.config.clone().unwrap_or_default();
    let t = |t: &Option<prost_types::Timestamp>| t.as_ref().map(output::rfc3339).unwrap_or_else(|| "0001-01-01T00:00:00Z".into());
    let spec: serde_json::Value = serde_json::from_slice(&c.spec).unwrap_or(serde_json::Value::Null);
    let process = &spec["process"];
    // What runs: the spec's (merged) values, else the record's.
    let env = process["env"].as_array().cloned().unwrap_or_else(|| cfg.env.iter().map(|e| json!(e)).collect());
    let args: Vec<String> = c.args.clone();
    let hostname = spec["hostname"].as_str().map(str::to_owned).unwrap_or_else(|| cfg.hostname.clone());
    let workdir = process["cwd"].as_str().map(str::to_owned).unwrap_or_else(|| cfg.workdir.clone());
    let user = if cfg.user.is_empty() {
        match (process["user"]["uid"].as_u64(), process["user"]["gid"].as_u64()) {
            (Some(0), _) | (None, _) => String::new(),
            (Some(u), Some(g)) => format!("{u}:{g}"),
            (Some(u), None) => u.to_string(),
        }
    } else {
        cfg.user.clone()
    };
    let state = s.state.as_str();
    let mut state_json = json!({
        "Status": state,
        "Running": matches!(state, "running" | "paused"),
        "Paused": state == "paused",
        "Restarting": state == "restarting",
        "OOMKilled": s.oom_killed,
        "Dead": false,
        "Pid": s.pid,
        "ExitCode": s.exit_code,
        "Error": "",
        "StartedAt": t(&s.started_at),
        "FinishedAt": t(&s.finished_at),
    });
    if let Some(h) = &c.health {
        let log: Vec<_> = h
            .log
            .iter()
            .map(|p| json!({"Start": p.start.as_ref().map(output::rfc3339), "End": p.end.as_ref().map(output::rfc3339), "ExitCode": p.exit_code, "Output": p.output}))
            .collect();
        state_json["Health"] = json!({"Status": h.status, "FailingStreak": h.failing_streak, "Log": log});
    }
    let network_mode = match cfg.network.as_str() {
        "" => cfg.networks.first().map_or_else(|| "bridge".to_owned(), |e| e.network.clone()),
        other => other.to_owned(),
    };
    let mut port_bindings = serde_json::Map::new();
    for p in &cfg.ports {
        let key = format!("{}/{}", p.container_port, if p.protocol.is_empty() { "tcp" } else { &p.protocol });
        let host = json!({"HostIp": p.host_ip, "HostPort": if p.host_port == 0 { String::new() } else { p.host_port.to_string() }});
        if let serde_json::Value::Array(list) = port_bindings.entry(key).or_insert_with(|| json!([])) {
            list.push(host);
        }
    }
    let binds: Vec<String> = cfg
        .mounts
        .iter()
        .filter(|m| m.r#type != "tmpfs")
        .map(|m| format!("{}:{}{}", m.source, m.destination, if m.readonly { ":ro" } else { "" }))
        .collect();
    let tmpfs: serde_json::Map<String, serde_json::Value> =
        cfg.mounts.iter().filter(|m| m.r#type == "tmpfs").map(|m| (m.destination.clone(), json!(m.options.join(",")))).collect();
    let mut security_opt = Vec::new();
    if cfg.seccomp_profile == "unconfined" {
        security_opt.push("seccomp=unconfined".to_owned());
    } else if !cfg.seccomp_profile.is_empty() {
        security_opt.push("seccomp=<profile>".to_owned());
    }
    if let Some(nnp) = cfg.no_new_privileges {
        security_opt.push(format!("no-new-privileges={nnp}"));
    }
    if !cfg.apparmor_profile.is_empty() {
        security_opt.push(format!("apparmor={}", cfg.apparmor_profile));
    }
    let r = cfg.resources.unwrap_or_default();
    let host_config = json!({
        "Binds": binds,
        "NetworkMode": network_mode,
        "PortBindings": port_bindings,
        "PublishAllPorts": cfg.publish_all,
        "RestartPolicy": {"Name": cfg.restart_policy.as_ref().map_or("no", |r| if r.name.is_empty() { "no" } else { r.name.as_str() }),
                          "MaximumRetryCount": cfg.restart_policy.as_ref().map_or(0, |r| r.max_retries)},
        "AutoRemove": cfg.auto_remove,
        "CapAdd": cfg.cap_add, "CapDrop": cfg.cap_drop,
        "Dns": cfg.dns, "DnsOptions": cfg.dns_options, "DnsSearch": cfg.dns_search, "ExtraHosts": cfg.extra_hosts,
        "GroupAdd": cfg.group_add,
        "IpcMode": if cfg.ipc.is_empty() { "private" } else { &cfg.ipc },
        "PidMode": cfg.pid,
        "CgroupnsMode": if cfg.cgroupns.is_empty() { "host" } else { &cfg.cgroupns },
        "Privileged": cfg.privileged,
        "ReadonlyRootfs": cfg.read_only,
        "SecurityOpt": security_opt,
        "Tmpfs": tmpfs,
        "ShmSize": if cfg.shm_size == 0 { 64 << 20 } else { cfg.shm_size },
        "Sysctls": cfg.sysctls,
        "Runtime": c.runtime,
        "Init": cfg.init,
        "Memory": r.memory_bytes,
        "NanoCpus": r.cpu_millis * 1_000_000,
        "PidsLimit": r.pids_limit,
        "Ulimits": cfg.ulimits.iter().map(|u| json!({"Name": u.name, "Soft": u.soft, "Hard": u.hard})).collect::<Vec<_>>(),
        "Devices": cfg.devices.iter().map(|d| json!({"PathOnHost": d.host_path,
            "PathInContainer": if d.container_path.is_empty() { &d.host_path } else { &d.container_path },
            "CgroupPermissions": if d.permissions.is_empty() { "rwm" } else { &d.permissions }})).collect::<Vec<_>>(),
    });
    let mounts: Vec<_> = cfg
        .mounts
        .iter()
        .map(|m| {
            let mut j = json!({"Type": m.r#type, "Source": m.source, "Destination": m.destination, "Mode": if m.readonly { "ro" } else { "" }, "RW": !m.readonly, "Propagation": ""});
            if m.r#type == "volume" {
                j["Name"] = json!(m.source);
                j["Driver"] = json!("local");
            }
            j
        })
        .collect();
    let config = json!({
        "Hostname": hostname,
        "User": user,
        "Env": env,
        "Cmd": args,
        "Entrypoint": serde_json::Value::Null,
        "Image": c.image,
        "WorkingDir": workdir,
        "Labels": c.labels,
        "Tty": cfg.tty,
        "OpenStdin": cfg.stdin,
        "StopSignal": cfg.stop_signal,
        "StopTimeout": cfg.stop_timeout,
        "Healthcheck": cfg.healthcheck.as_ref().map(|h| json!({"Test": h.test, "Interval": h.interval_ms * 1_000_000,
            "Timeout": h.timeout_ms * 1_000_000, "StartPeriod": h.start_period_ms * 1_000_000, "Retries": h.retries})),
    });
    let mut v = json!({
        "Id": c.id,
        "Created": t(&c.created_at),
        "Path": args.first().cloned().unwrap_or_default(),
        "Args": args.iter().skip(1).collect::<Vec<_>>(),
        "State": state_json,
        "Image": c.image_id,
        "LogPath": c.log_path,
        "Name": format!("/{}", c.name),
        "RestartCount": c.restart_count,
        "Driver": "",
        "HostConfig": host_config,
        "Mounts": mounts,
        "Config": config,
        "NetworkSettings": network_settings(c),
    });
    // Berth's own, after docker's.
    let more = json!({
        "ImageName": c.image,
        "ImageDigest": c.image_digest,
        "SnapshotKey": c.snapshot_key,
        "StoppedByUser": c.stopped_by_user,
    });
    if let (Some(obj), serde_json::Value::Object(more)) = (v.as_object_mut(), more) {
        obj.extend(more);
    }
    // The spec comes with one container (inspect), not with a list.
    if !spec.is_null() {
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

/// `ps`'s table, and the names of its columns whose field says otherwise.
pub const PS_TABLE: &str = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";
pub const PS_COLUMNS: &[(&str, &str)] = &[("ID", "CONTAINER ID"), ("RunningFor", "CREATED"), ("LocalVolumes", "LOCAL VOLUMES")];

/// A `ps` row as docker's templates see it (`{{.ID}}`, `{{.Names}}`, ...):
/// the command cut at 20 characters and quoted, the image without
/// `:latest`, unless `no_trunc`.
pub fn ps_row(c: &v1::Container, no_trunc: bool) -> serde_json::Value {
    let cmd = shell_join(&c.args);
    let cmd = if no_trunc || cmd.chars().count() <= 20 { cmd } else { format!("{}…", cmd.chars().take(19).collect::<String>()) };
    let (repo, tag) = output::repo_tag(&c.image);
    let image = if tag.is_empty() || tag == "latest" { repo } else { format!("{repo}:{tag}") };
    let status = c.status.clone().unwrap_or_default();
    let cfg = c.config.clone().unwrap_or_default();
    let labels: Vec<String> = c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let volumes: Vec<&str> = cfg.mounts.iter().filter(|m| m.r#type == "volume").map(|m| m.source.as_str()).collect();
    let mounts: Vec<&str> =
        cfg.mounts.iter().map(|m| if m.r#type == "volume" { m.source.as_str() } else { m.destination.as_str() }).collect();
    let networks: Vec<String> = if c.endpoints.is_empty() {
        match cfg.network.as_str() {
            "" => cfg.networks.iter().map(|e| e.network.clone()).collect(),
            other => vec![other.to_owned()],
        }
    } else {
        c.endpoints.iter().map(|e| e.network.clone()).collect()
    };
    json!({
        "ID": short_id(&c.id, no_trunc),
        "Image": image,
        // Quoted as Go's %q quotes it (inner quotes escaped).
        "Command": serde_json::to_string(&cmd).unwrap_or_default(),
        "CreatedAt": output::created_at(secs(&c.created_at)),
        "RunningFor": ago(secs(&c.created_at)),
        "Status": with_health(status_text(&status), c),
        "State": status.state,
        "Ports": ports_text(c),
        "Names": c.name,
        "Labels": labels.join(","),
        "Mounts": mounts.join(","),
        "LocalVolumes": volumes.len().to_string(),
        "Networks": networks.join(","),
        "Size": "",
    })
}

/// `stats`'s table, and its columns whose field says otherwise.
pub const STATS_TABLE: &str = "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.PIDs}}";
pub const STATS_COLUMNS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("CPUPerc", "CPU %"),
    ("MemUsage", "MEM USAGE / LIMIT"),
    ("MemPerc", "MEM %"),
    ("NetIO", "NET I/O"),
    ("BlockIO", "BLOCK I/O"),
];

/// A `stats` row as docker's templates see it. CPU % is the CPU time used
/// since `cpu_before_ns`, one `interval` ago, over that interval; the
/// numbers themselves follow in fields of Berth's own.
pub fn stats_row(id: &str, name: &str, s: &v1::StatsResponse, cpu_before_ns: u64, interval: Duration) -> serde_json::Value {
    let cpu = (s.cpu_usage_ns.saturating_sub(cpu_before_ns)) as f64 / interval.as_nanos() as f64 * 100.0;
    let limit = if s.memory_limit_bytes > 0 { output::size(s.memory_limit_bytes as i64) } else { "unlimited".into() };
    let mem_pct = if s.memory_limit_bytes > 0 { s.memory_usage_bytes as f64 / s.memory_limit_bytes as f64 * 100.0 } else { 0.0 };
    let pids = if s.pids_limit > 0 { format!("{} / {}", s.pids_current, s.pids_limit) } else { s.pids_current.to_string() };
    json!({
        "ID": short_id(id, false),
        "Container": short_id(id, false),
        "Name": name,
        "CPUPerc": format!("{cpu:.2}%"),
        "MemUsage": format!("{} / {limit}", output::size(s.memory_usage_bytes as i64)),
        "MemPerc": format!("{mem_pct:.2}%"),
        "NetIO": "--",
        "BlockIO": "--",
        "PIDs": pids,
        "CpuUsageNs": s.cpu_usage_ns,
        "MemoryUsageBytes": s.memory_usage_bytes,
        "MemoryLimitBytes": s.memory_limit_bytes,
        "PidsCurrent": s.pids_current,
        "PidsLimit": s.pids_limit,
    })
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
    json!({"PID": p.pid, "PPID": p.ppid, "UID": p.uid, "State": p.state, "CpuMs": p.cpu_ms, "RssBytes": p.rss_bytes, "ElapsedSecs": p.elapsed_secs, "Command": p.command})
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
        assert_eq!(row["ID"], "0123456789ab");
        assert_eq!(row["Image"], "busybox");
        assert_eq!(row["Command"], "\"sh -c while true; d…\"");
        assert_eq!(
            (&row["RunningFor"], &row["Status"], &row["Ports"], &row["Names"], &row["State"]),
            (&json!("N/A"), &json!("Created"), &json!(""), &json!("web"), &json!("created"))
        );
        let ports = vec![
            v1::PortMapping { host_ip: String::new(), host_port: 18080, container_port: 80, protocol: "tcp".into() },
            v1::PortMapping { host_ip: "127.0.0.1".into(), host_port: 5353, container_port: 53, protocol: "udp".into() },
        ];
        let with_ports = v1::Container { ports, ..c.clone() };
        assert_eq!(ps_row(&with_ports, false)["Ports"], "0.0.0.0:18080->80/tcp, 127.0.0.1:5353->53/udp");
        let j = container_json(&with_ports);
        assert_eq!(j["NetworkSettings"]["Ports"]["53/udp"][0]["HostPort"], "5353");
        let row = ps_row(&v1::Container { image: "localhost:5000/a:v1".into(), ..c.clone() }, true);
        assert_eq!(row["ID"], c.id.as_str());
        assert_eq!(row["Image"], "localhost:5000/a:v1");
        assert_eq!(row["Command"], "\"sh -c while true; do sleep 1; done\"");
        // Quotes in the command are escaped, as docker's %q does.
        let quoted = ps_row(&v1::Container { args: vec!["echo".into(), "\"hi\"".into()], ..c.clone() }, true);
        assert_eq!(quoted["Command"], "\"echo \\\"hi\\\"\"");
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
        let cells: Vec<&str> = ["ID", "Name", "CPUPerc", "MemUsage", "PIDs"].iter().map(|k| row[*k].as_str().unwrap()).collect();
        assert_eq!(cells, ["abc", "web", "50.00%", "4.261MB / unlimited", "3 / 10"]);
        let p = v1::ProcessInfo { uid: 0, pid: 42, ppid: 1, cpu_ms: 3_723_000, command: "sleep 300".into(), ..Default::default() };
        assert_eq!(top_row(&p), ["0", "42", "1", "01:02:03", "sleep 300"]);
    }
}
