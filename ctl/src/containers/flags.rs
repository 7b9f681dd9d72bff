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

/// A host path given on the command line, made absolute against this
/// directory (`./data`, `../x`, `.`), as docker does for `-v`.
fn host_path(src: &str) -> Result<String> {
    if src.starts_with('/') {
        return Ok(src.to_owned());
    }
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let joined = cwd.join(src);
    // The agent checks that it exists; a path that resolves is sent resolved.
    Ok(joined.canonicalize().unwrap_or(joined).to_string_lossy().into_owned())
}

fn mount(typ: &str, source: String, destination: &str) -> v1::ContainerMount {
    v1::ContainerMount { r#type: typ.into(), source, destination: destination.into(), ..Default::default() }
}

/// `-v`: `NAME:DST[:OPTS]`, `/HOST:DST[:OPTS]`, `./REL:DST[:OPTS]`, or `DST`.
fn parse_volume(v: &str) -> Result<v1::ContainerMount> {
    let parts: Vec<&str> = v.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [d] if d.starts_with('/') => ("", *d, ""),
        [s, d] => (*s, *d, ""),
        [s, d, o] => (*s, *d, *o),
        _ => bail!("invalid volume {v:?}: use NAME:DST, /HOST/PATH:DST, ./PATH:DST (each with :ro), or DST"),
    };
    if src.is_empty() && parts.len() > 1 {
        bail!("invalid volume {v:?}: the source is empty");
    }
    let mut m = if src.is_empty() {
        mount("volume", String::new(), dst)
    } else if src.starts_with('/') || src == "." || src == ".." || src.starts_with("./") || src.starts_with("../") {
        mount("bind", host_path(src)?, dst)
    } else if src.contains('/') {
        bail!("invalid volume {v:?}: a host path is absolute (/data) or relative with ./ (./data); a volume name has no '/'");
    } else {
        mount("volume", src.to_owned(), dst)
    };
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" | "readonly" => m.readonly = true,
            "rw" => m.readonly = false,
            "nocopy" if m.r#type == "volume" => m.no_copy = true,
            // SELinux relabelling: nothing to relabel without SELinux.
            "z" | "Z" => {}
            other => m.options.push(other.to_owned()),
        }
    }
    Ok(m)
}

/// `--mount type=...,source=...,target=...`, docker's syntax.
fn parse_mount(spec: &str) -> Result<v1::ContainerMount> {
    let mut typ = "volume".to_owned();
    let (mut source, mut target) = (String::new(), String::new());
    let (mut readonly, mut no_copy) = (false, false);
    let mut options = Vec::new();
    let flag = |k: &str, v: Option<&str>| -> Result<bool> {
        match v {
            None | Some("1" | "true") => Ok(true),
            Some("0" | "false") => Ok(false),
            Some(other) => bail!("invalid --mount {spec:?}: {k}={other} is not true or false"),
        }
    };
    for field in spec.split(',').filter(|f| !f.is_empty()) {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (field.trim(), None),
        };
        let value = || v.map(str::to_owned).ok_or_else(|| anyhow::anyhow!("invalid --mount {spec:?}: {k} needs a value"));
        match k {
            "type" => typ = value()?,
            "source" | "src" => source = value()?,
            "target" | "destination" | "dst" => target = value()?,
            "readonly" | "ro" => readonly = flag(k, v)?,
            "volume-nocopy" => no_copy = flag(k, v)?,
            "bind-propagation" => options.push(value()?),
            "tmpfs-size" => options.push(format!("size={}", parse_bytes(&value()?)?)),
            "tmpfs-mode" => {
                let mode = value()?;
                if u32::from_str_radix(&mode, 8).is_err() {
                    bail!("invalid --mount {spec:?}: tmpfs-mode {mode:?} is not an octal mode");
                }
                options.push(format!("mode={mode}"));
            }
            // Docker Desktop's file sharing hint: nothing to do on Linux.
            "consistency" => {}
            _ => bail!(
                "invalid --mount {spec:?}: unknown field {k:?} (use type, source, target, readonly, volume-nocopy, \
                 bind-propagation, tmpfs-size, tmpfs-mode)"
            ),
        }
    }
    if target.is_empty() {
        bail!("invalid --mount {spec:?}: a target is required");
    }
    match typ.as_str() {
        "bind" if source.is_empty() => bail!("invalid --mount {spec:?}: a bind mount needs a source"),
        "bind" => source = host_path(&source)?,
        "tmpfs" if !source.is_empty() => bail!("invalid --mount {spec:?}: a tmpfs mount takes no source"),
        "volume" | "tmpfs" => {}
        other => bail!("invalid --mount {spec:?}: unknown type {other:?} (use volume, bind or tmpfs)"),
    }
    Ok(v1::ContainerMount { r#type: typ, source, destination: target, readonly, options, no_copy })
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
        no_copy: false,
    }
}

/// `--device HOST[:CONTAINER][:PERMS]`.
fn parse_device(d: &str) -> Result<v1::DeviceMapping> {
    let perms = |p: &str| !p.is_empty() && p.chars().all(|c| matches!(c, 'r' | 'w' | 'm'));
    let parts: Vec<&str> = d.split(':').collect();
    let (host, container, permissions) = match parts.as_slice() {
        [h] => (*h, "", ""),
        [h, p] if perms(p) => (*h, "", *p),
        [h, c] => (*h, *c, ""),
        [h, c, p] if perms(p) => (*h, *c, *p),
        _ => bail!("invalid --device {d:?}: use HOST[:CONTAINER][:rwm]"),
    };
    Ok(v1::DeviceMapping { host_path: host.into(), container_path: container.into(), permissions: permissions.into() })
}

/// `--security-opt`s into the request: a seccomp profile's file is read here
/// and sent whole, as docker's client does.
fn security_opts(opts: &[String], c: &mut v1::ContainerConfig) -> Result<()> {
    for o in opts {
        // docker also takes KEY:VALUE.
        let (k, v) = o.split_once('=').or_else(|| o.split_once(':')).map_or((o.as_str(), None), |(k, v)| (k, Some(v)));
        match (k, v) {
            ("seccomp", Some("unconfined")) => c.seccomp_profile = "unconfined".into(),
            ("seccomp", Some(path)) if !path.is_empty() => {
                c.seccomp_profile =
                    std::fs::read_to_string(path).with_context(|| format!("--security-opt seccomp: reading the profile {path}"))?;
                if c.seccomp_profile.trim().is_empty() {
                    bail!("--security-opt seccomp: the profile {path} is empty");
                }
            }
            ("no-new-privileges", None | Some("true" | "1")) => c.no_new_privileges = Some(true),
            ("no-new-privileges", Some("false" | "0")) => c.no_new_privileges = Some(false),
            ("apparmor", Some(p)) if !p.is_empty() => c.apparmor_profile = p.into(),
            ("label", Some("disable")) => {}
            ("label", _) => bail!("--security-opt {o:?}: SELinux labels are not supported (only label=disable)"),
            _ => bail!(
                "invalid --security-opt {o:?}: use seccomp=unconfined|PROFILE.json, no-new-privileges[=true|false] or apparmor=PROFILE"
            ),
        }
    }
    Ok(())
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
        // `export KEY=VALUE` in an env file is a shell's line, not a variable.
        Some((k, _)) if k.chars().any(char::is_whitespace) => {
            bail!("invalid environment variable {e:?}: a name has no spaces (an env file holds KEY=VALUE lines, no `export`)")
        }
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
    for m in &a.mount {
        mounts.push(parse_mount(m)?);
    }
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
    let mut config = v1::ContainerConfig {
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
        devices: a.device.iter().map(|d| parse_device(d)).collect::<Result<Vec<_>>>()?,
        cgroupns: a.cgroupns.clone().unwrap_or_default(),
        ..Default::default()
    };
    security_opts(&a.security_opt, &mut config)?;
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
    fn devices_and_security_options_parse() {
        let d = parse_device("/dev/fuse").unwrap();
        assert_eq!((d.host_path.as_str(), d.container_path.as_str(), d.permissions.as_str()), ("/dev/fuse", "", ""));
        let d = parse_device("/dev/null:/dev/x:rw").unwrap();
        assert_eq!((d.container_path.as_str(), d.permissions.as_str()), ("/dev/x", "rw"));
        assert_eq!(parse_device("/dev/null:r").unwrap().permissions, "r");
        assert!(parse_device("/a:/b:rwx:y").is_err());
        let mut c = v1::ContainerConfig::default();
        let opts = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        security_opts(&opts(&["seccomp=unconfined", "no-new-privileges", "apparmor=docker-default"]), &mut c).unwrap();
        assert_eq!(
            (c.seccomp_profile.as_str(), c.no_new_privileges, c.apparmor_profile.as_str()),
            ("unconfined", Some(true), "docker-default")
        );
        security_opts(&opts(&["no-new-privileges:false"]), &mut c).unwrap();
        assert_eq!(c.no_new_privileges, Some(false));
        assert!(security_opts(&opts(&["seccomp=/nonexistent.json"]), &mut c).is_err());
        assert!(security_opts(&opts(&["label=type:x"]), &mut c).is_err());
        assert!(security_opts(&opts(&["bogus"]), &mut c).is_err());
    }

    #[test]
    fn volumes_and_tmpfs_parse() {
        let named = parse_volume("data:/mnt:nocopy").unwrap();
        assert_eq!((named.r#type.as_str(), named.source.as_str(), named.no_copy), ("volume", "data", true));
        let anonymous = parse_volume("/cache").unwrap();
        assert_eq!((anonymous.r#type.as_str(), anonymous.source.as_str(), anonymous.destination.as_str()), ("volume", "", "/cache"));
        let rel = parse_volume("./x:/mnt").unwrap();
        assert_eq!(rel.r#type, "bind");
        assert!(rel.source.starts_with('/') && rel.source.ends_with("/x"), "{}", rel.source);
        assert!(parse_volume("a/b:/mnt").is_err());
        assert!(parse_volume(":/mnt").is_err());
        let m = parse_mount("type=volume,src=data,dst=/d,readonly,volume-nocopy").unwrap();
        assert_eq!(
            (m.r#type.as_str(), m.source.as_str(), m.destination.as_str(), m.readonly, m.no_copy),
            ("volume", "data", "/d", true, true)
        );
        let m = parse_mount("type=tmpfs,target=/t,tmpfs-size=1m,tmpfs-mode=700").unwrap();
        assert_eq!(m.options, ["size=1048576", "mode=700"]);
        let m = parse_mount("type=bind,source=/etc,target=/e,ro=false,bind-propagation=rslave").unwrap();
        assert_eq!((m.readonly, m.options.clone()), (false, vec!["rslave".to_owned()]));
        assert!(parse_mount("type=bind,target=/e").is_err());
        assert!(parse_mount("source=x").is_err());
        assert!(parse_mount("type=nfs,target=/x").is_err());
        assert!(parse_mount("type=volume,target=/x,bogus=1").is_err());
        let v = parse_volume("/data:/mnt:ro").unwrap();
        assert_eq!((v.source.as_str(), v.destination.as_str(), v.readonly), ("/data", "/mnt", true));
        assert!(!parse_volume("/data:/mnt").unwrap().readonly);
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
