//! Flag values turned into requests: sizes, volumes, tmpfs mounts,
//! environment variables, times, and `run`/`create`'s whole request.

use anyhow::{bail, Context, Result};
use berth_api::v1;

use super::args::RunArgs;
use crate::output;

/// "512m", "1g", "100000" (bytes), "1.5g".
pub fn parse_bytes(s: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let v: f64 = num.parse().with_context(|| format!("invalid size {s:?}: use a number with an optional k, m, g or t suffix"))?;
    if v.is_nan() || v <= 0.0 || v * mult as f64 > i64::MAX as f64 {
        bail!("invalid size {s:?}");
    }
    Ok((v * mult as f64) as i64)
}

fn parse_volume(v: &str) -> Result<v1::ContainerMount> {
    let parts: Vec<&str> = v.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [s, d] => (*s, *d, ""),
        [s, d, o] => (*s, *d, *o),
        _ => bail!("invalid volume {v:?}: use SRC:DST[:ro]"),
    };
    if !src.starts_with('/') {
        bail!("invalid volume {v:?}: the source must be an absolute host path (named volumes are not supported)");
    }
    let mut readonly = false;
    let mut options = Vec::new();
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => readonly = true,
            "rw" => readonly = false,
            other => options.push(other.to_owned()),
        }
    }
    Ok(v1::ContainerMount { r#type: "bind".into(), source: src.into(), destination: dst.into(), readonly, options })
}

fn parse_tmpfs(v: &str) -> v1::ContainerMount {
    let (dst, opts) = v.split_once(':').unwrap_or((v, ""));
    let options: Vec<String> = opts.split(',').filter(|o| !o.is_empty()).map(str::to_owned).collect();
    let readonly = options.iter().any(|o| o == "ro");
    v1::ContainerMount {
        r#type: "tmpfs".into(),
        source: String::new(),
        destination: dst.into(),
        readonly,
        options: options.into_iter().filter(|o| o != "ro" && o != "rw").collect(),
    }
}

/// `-e KEY=VALUE`, `-e KEY` (this shell's value, skipped when unset), and env files.
fn environment(env: &[String], files: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading env file {f}"))?;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            push_env(&mut out, line)?;
        }
    }
    for e in env {
        push_env(&mut out, e)?;
    }
    Ok(out)
}

fn push_env(out: &mut Vec<String>, e: &str) -> Result<()> {
    match e.split_once('=') {
        Some(("", _)) => bail!("invalid environment variable {e:?}"),
        Some(_) => out.push(e.to_owned()),
        None => {
            if let Ok(v) = std::env::var(e) {
                out.push(format!("{e}={v}"));
            }
        }
    }
    Ok(())
}

pub fn create_request(a: &RunArgs) -> Result<v1::CreateContainerRequest> {
    let mut mounts = a.volume.iter().map(|v| parse_volume(v)).collect::<Result<Vec<_>>>()?;
    mounts.extend(a.tmpfs.iter().map(|t| parse_tmpfs(t)));
    let memory = a.memory.as_deref().map(parse_bytes).transpose()?.unwrap_or(0);
    let cpu_millis = match a.cpus {
        Some(c) if c.is_nan() || c <= 0.0 || c > 100_000.0 => bail!("invalid --cpus {c}: use a positive number of CPUs"),
        Some(c) => (c * 1000.0).round() as i64,
        None => 0,
    };
    if a.pids_limit.is_some_and(|p| p <= 0) {
        bail!("--pids-limit must be positive");
    }
    let (network, networks) = network_flags(a)?;
    let entrypoint = a.entrypoint.as_ref().map(|e| if e.is_empty() { Vec::new() } else { vec![e.clone()] });
    let config = v1::ContainerConfig {
        command_set: !a.command.is_empty(),
        command: a.command.clone(),
        entrypoint_set: entrypoint.is_some(),
        entrypoint: entrypoint.unwrap_or_default(),
        env: environment(&a.env, &a.env_file)?,
        workdir: a.workdir.clone().unwrap_or_default(),
        user: a.user.clone().unwrap_or_default(),
        hostname: a.hostname.clone().unwrap_or_default(),
        mounts,
        resources: Some(v1::Resources { memory_bytes: memory, cpu_millis, pids_limit: a.pids_limit.unwrap_or(0) }),
        network,
        networks,
        ports: a.publish.iter().map(|p| parse_publish(p)).collect::<Result<Vec<_>>>()?,
        publish_all: a.publish_all,
        dns: a.dns.clone(),
        dns_search: a.dns_search.clone(),
        dns_options: a.dns_option.clone(),
        extra_hosts: a.add_host.iter().map(|h| parse_add_host(h)).collect::<Result<Vec<_>>>()?,
        tty: a.tty,
        stdin: a.interactive,
        read_only: a.read_only,
        privileged: a.privileged,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        // A detached --rm container is removed by the agent; an attached one by us.
        auto_remove: a.rm && a.detach,
        init: a.init,
        stop_signal: a.stop_signal.clone().unwrap_or_default(),
        stop_timeout: a.stop_timeout,
        restart_policy: Some(restart_flag(&a.restart)?),
        healthcheck: health_flags(a)?,
        shm_size: a.shm_size.as_deref().map(parse_bytes).transpose()?.map_or(0, |b| b as u64),
        ulimits: a.ulimit.iter().map(|u| parse_ulimit(u)).collect::<Result<Vec<_>>>()?,
        sysctls: a
            .sysctl
            .iter()
            .map(|s| s.split_once('=').filter(|(k, _)| !k.is_empty()).map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect::<Option<_>>()
            .ok_or_else(|| anyhow::anyhow!("--sysctl takes KEY=VALUE"))?,
        group_add: a.group_add.clone(),
        pid: a.pid.clone().unwrap_or_default(),
        ipc: a.ipc.clone().unwrap_or_default(),
    };
    if a.rm && restart_policy_is_set(&a.restart) {
        bail!("--rm and --restart {} cannot go together: a removed container cannot start again", a.restart);
    }
    Ok(v1::CreateContainerRequest {
        image: a.image.clone(),
        name: a.name.clone().unwrap_or_default(),
        config: Some(config),
        labels: berth_common::labels::parse_all(a.label.iter().map(String::as_str))?,
        runtime: a.runtime.clone().unwrap_or_default(),
    })
}

/// `--net` values: a mode (none, host, container:NAME: alone) or networks
/// by name, the first one taking `--network-alias` and `--ip`.
fn network_flags(a: &RunArgs) -> Result<(String, Vec<v1::NetworkEndpoint>)> {
    let is_mode = |n: &str| matches!(n, "none" | "host") || n.starts_with("container:");
    if let Some(mode) = a.net.iter().find(|n| is_mode(n)) {
        if a.net.len() > 1 {
            bail!("--net {mode} cannot be combined with other networks");
        }
        if !a.network_alias.is_empty() || a.ip.is_some() || !a.publish.is_empty() || a.publish_all {
            bail!("--net {mode} takes no --network-alias, --ip or published ports");
        }
        return Ok((mode.clone(), Vec::new()));
    }
    let mut names = a.net.clone();
    if names.is_empty() && (!a.network_alias.is_empty() || a.ip.is_some()) {
        names.push("bridge".into());
    }
    let endpoints = names
        .into_iter()
        .enumerate()
        .map(|(i, network)| v1::NetworkEndpoint {
            network,
            aliases: if i == 0 { a.network_alias.clone() } else { Vec::new() },
            ipv4_address: if i == 0 { a.ip.clone().unwrap_or_default() } else { String::new() },
        })
        .collect();
    Ok((String::new(), endpoints))
}

/// `-p`: `[IP:][HOST:]CONTAINER[/PROTO]`.
pub fn parse_publish(s: &str) -> Result<v1::PortMapping> {
    let bad = |why: &str| anyhow::anyhow!("invalid -p {s:?}: {why} (use [IP:]HOST:CONTAINER[/tcp|udp], or CONTAINER)");
    let (spec, protocol) = match s.rsplit_once('/') {
        Some((spec, p)) => (spec, p.to_ascii_lowercase()),
        None => (s, "tcp".to_owned()),
    };
    if protocol != "tcp" && protocol != "udp" {
        return Err(bad("the protocol is tcp or udp"));
    }
    let parts: Vec<&str> = spec.split(':').collect();
    let (ip, host, container) = match parts.as_slice() {
        [c] => ("", "", *c),
        [h, c] => ("", *h, *c),
        [ip, h, c] => (*ip, *h, *c),
        _ => return Err(bad("too many ':'")),
    };
    if !ip.is_empty() && ip.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(bad("the host address is not an IPv4 address"));
    }
    let port = |p: &str, what: &str| -> Result<u32> {
        p.parse::<u16>().ok().filter(|v| *v > 0).map(u32::from).ok_or_else(|| bad(&format!("the {what} port is not 1 to 65535")))
    };
    Ok(v1::PortMapping {
        host_ip: ip.to_owned(),
        host_port: if host.is_empty() { 0 } else { port(host, "host")? },
        container_port: port(container, "container")?,
        protocol,
    })
}

/// `--add-host NAME:IP` (docker's `NAME=IP` too).
fn parse_add_host(s: &str) -> Result<String> {
    let (name, ip) = s.split_once([':', '=']).ok_or_else(|| anyhow::anyhow!("invalid --add-host {s:?}: use NAME:IP"))?;
    if name.is_empty() || ip.parse::<std::net::IpAddr>().is_err() {
        bail!("invalid --add-host {s:?}: use NAME:IP with an IP address");
    }
    Ok(format!("{name}:{ip}"))
}

/// A time flag: RFC 3339, a date, Unix seconds, or a duration before now.
pub fn time_flag(s: &str) -> Result<prost_types::Timestamp> {
    let (secs, nanos) = berth_common::time::parse_since(s, output::now_secs())
        .with_context(|| format!("invalid time {s:?}: use RFC 3339 (2024-01-02T15:04:05Z), Unix seconds, or a duration such as 10m"))?;
    Ok(prost_types::Timestamp { seconds: secs, nanos: nanos as i32 })
}

/// `--ulimit NAME=SOFT[:HARD]` (one number: both; `-1`: unlimited).
fn parse_ulimit(s: &str) -> Result<v1::Ulimit> {
    let bad = || anyhow::anyhow!("--ulimit {s}: use NAME=SOFT[:HARD], e.g. nofile=1024:4096");
    let (name, limits) = s.split_once('=').ok_or_else(bad)?;
    let num = |v: &str| -> Result<u64> {
        if v == "-1" || v == "unlimited" {
            return Ok(u64::MAX);
        }
        v.parse::<u64>().map_err(|_| bad())
    };
    let (soft, hard) = match limits.split_once(':') {
        Some((soft, hard)) => (num(soft)?, num(hard)?),
        None => (num(limits)?, num(limits)?),
    };
    if name.is_empty() {
        return Err(bad());
    }
    Ok(v1::Ulimit { name: name.to_owned(), soft, hard })
}

/// `--health-*` and `--no-healthcheck`; None: the image's check as it is.
fn health_flags(a: &RunArgs) -> Result<Option<v1::HealthCheck>> {
    let ms = |flag: &str, v: &Option<String>| -> Result<u64> {
        match v {
            None => Ok(0),
            Some(s) => berth_common::time::parse_duration_millis(s)
                .filter(|m| *m > 0)
                .ok_or_else(|| anyhow::anyhow!("--{flag} {s}: use a duration such as 30s, 1m30s or 500ms")),
        }
    };
    let any = a.health_cmd.is_some()
        || a.health_interval.is_some()
        || a.health_timeout.is_some()
        || a.health_retries.is_some()
        || a.health_start_period.is_some();
    if a.no_healthcheck {
        if any {
            bail!("--no-healthcheck cannot go with --health-* flags");
        }
        return Ok(Some(v1::HealthCheck { test: vec!["NONE".into()], ..Default::default() }));
    }
    if !any {
        return Ok(None);
    }
    Ok(Some(v1::HealthCheck {
        test: a.health_cmd.iter().flat_map(|c| ["CMD-SHELL".to_owned(), c.clone()]).collect(),
        interval_ms: ms("health-interval", &a.health_interval)?,
        timeout_ms: ms("health-timeout", &a.health_timeout)?,
        start_period_ms: ms("health-start-period", &a.health_start_period)?,
        retries: a.health_retries.unwrap_or(0),
    }))
}

/// `--restart NAME[:MAX_RETRIES]`.
pub fn restart_flag(s: &str) -> Result<v1::RestartPolicy> {
    let (name, max) = match s.split_once(':') {
        Some((n, m)) => (n, m.parse::<u32>().map_err(|_| anyhow::anyhow!("--restart {s}: the retry count must be a number"))?),
        None => (s, 0),
    };
    if !matches!(name, "no" | "always" | "unless-stopped" | "on-failure") {
        bail!("--restart {s}: use no, always, unless-stopped or on-failure[:MAX_RETRIES]");
    }
    if max > 0 && name != "on-failure" {
        bail!("--restart {s}: only on-failure takes a retry count");
    }
    Ok(v1::RestartPolicy { name: name.to_owned(), max_retries: max })
}

fn restart_policy_is_set(s: &str) -> bool {
    !s.is_empty() && s != "no"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_docker() {
        assert_eq!(parse_bytes("512m").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("100000").unwrap(), 100_000);
        assert_eq!(parse_bytes("64kb").unwrap(), 64 << 10);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("-1m").is_err());
        assert!(parse_bytes("0").is_err());
    }

    #[test]
    fn volumes_and_tmpfs_parse() {
        let v = parse_volume("/data:/mnt:ro").unwrap();
        assert_eq!((v.source.as_str(), v.destination.as_str(), v.readonly), ("/data", "/mnt", true));
        assert!(!parse_volume("/data:/mnt").unwrap().readonly);
        assert!(parse_volume("data:/mnt").is_err());
        assert!(parse_volume("/a").is_err());
        let t = parse_tmpfs("/run:size=64m,ro");
        assert_eq!((t.destination.as_str(), t.readonly, t.options.clone()), ("/run", true, vec!["size=64m".to_owned()]));
    }

    #[test]
    fn environment_takes_pairs_files_and_names() {
        let dir = tempfile_dir();
        let f = dir.join("env");
        std::fs::write(&f, "# comment\nA=1\n\nB=two words\n").unwrap();
        std::env::set_var("BERTHCTL_TEST_VAR", "x");
        let env =
            environment(&["C=3".into(), "BERTHCTL_TEST_VAR".into(), "BERTHCTL_UNSET_VAR".into()], &[f.display().to_string()]).unwrap();
        assert_eq!(env, vec!["A=1", "B=two words", "C=3", "BERTHCTL_TEST_VAR=x"]);
        assert!(environment(&["=x".into()], &[]).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("berthctl-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn restart_flags_read_as_docker_writes_them() {
        assert_eq!(restart_flag("on-failure:3").unwrap(), v1::RestartPolicy { name: "on-failure".into(), max_retries: 3 });
        assert_eq!(restart_flag("always").unwrap().max_retries, 0);
        for bad in ["sometimes", "always:2", "on-failure:x", ""] {
            assert!(restart_flag(bad).is_err(), "{bad}");
        }
    }
}
