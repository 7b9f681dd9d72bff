//! Generating a container's OCI runtime spec (`config.json`) from the image's
//! config and the user's overrides, with the defaults docker and containerd use.
//!
//! Out of scope here, on purpose:
//! - seccomp: no `linux.seccomp` is generated (docker's default profile is a
//!   large allow-list; it belongs in its own module when we add it);
//! - AppArmor/SELinux labels;
//! - `/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname` (networking owns them);
//! - `linux.devices`: runc creates the default `/dev` nodes itself.
//!
//! Note on oci-spec's builders: their struct-level `#[builder(default)]` takes
//! unset fields from the type's `Default` impl, which for `Spec`, `Process`,
//! `Linux` and `LinuxCapabilities` is a youki sample config (hostname "youki",
//! default namespaces, ambient capabilities, ...). Every such field is therefore
//! set explicitly below, to a value or to `None`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilities, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDevice, LinuxDeviceBuilder,
    LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimit, PosixRlimitBuilder,
    PosixRlimitType, Process, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use oci_spec::OciSpecError;
use serde::Deserialize;

use crate::container::config::{ContainerConfig, MountKind, MountSpec, NetworkMode};
use crate::container::user::ResolvedUser;

/// The OCI runtime spec version we write.
pub const OCI_VERSION: &str = "1.0.2";

/// `PATH` when the image does not set one (docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's default capability set.
const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability: its name without the `CAP_` prefix, and its number.
const ALL_CAPABILITIES: [(&str, Capability, u32); 41] = [
    ("AUDIT_CONTROL", Capability::AuditControl, 30),
    ("AUDIT_READ", Capability::AuditRead, 37),
    ("AUDIT_WRITE", Capability::AuditWrite, 29),
    ("BLOCK_SUSPEND", Capability::BlockSuspend, 36),
    ("BPF", Capability::Bpf, 39),
    ("CHECKPOINT_RESTORE", Capability::CheckpointRestore, 40),
    ("CHOWN", Capability::Chown, 0),
    ("DAC_OVERRIDE", Capability::DacOverride, 1),
    ("DAC_READ_SEARCH", Capability::DacReadSearch, 2),
    ("FOWNER", Capability::Fowner, 3),
    ("FSETID", Capability::Fsetid, 4),
    ("IPC_LOCK", Capability::IpcLock, 14),
    ("IPC_OWNER", Capability::IpcOwner, 15),
    ("KILL", Capability::Kill, 5),
    ("LEASE", Capability::Lease, 28),
    ("LINUX_IMMUTABLE", Capability::LinuxImmutable, 9),
    ("MAC_ADMIN", Capability::MacAdmin, 33),
    ("MAC_OVERRIDE", Capability::MacOverride, 32),
    ("MKNOD", Capability::Mknod, 27),
    ("NET_ADMIN", Capability::NetAdmin, 12),
    ("NET_BIND_SERVICE", Capability::NetBindService, 10),
    ("NET_BROADCAST", Capability::NetBroadcast, 11),
    ("NET_RAW", Capability::NetRaw, 13),
    ("PERFMON", Capability::Perfmon, 38),
    ("SETGID", Capability::Setgid, 6),
    ("SETFCAP", Capability::Setfcap, 31),
    ("SETPCAP", Capability::Setpcap, 8),
    ("SETUID", Capability::Setuid, 7),
    ("SYS_ADMIN", Capability::SysAdmin, 21),
    ("SYS_BOOT", Capability::SysBoot, 22),
    ("SYS_CHROOT", Capability::SysChroot, 18),
    ("SYS_MODULE", Capability::SysModule, 16),
    ("SYS_NICE", Capability::SysNice, 23),
    ("SYS_PACCT", Capability::SysPacct, 20),
    ("SYS_PTRACE", Capability::SysPtrace, 19),
    ("SYS_RAWIO", Capability::SysRawio, 17),
    ("SYS_RESOURCE", Capability::SysResource, 24),
    ("SYS_TIME", Capability::SysTime, 25),
    ("SYS_TTY_CONFIG", Capability::SysTtyConfig, 26),
    ("SYSLOG", Capability::Syslog, 34),
    ("WAKE_ALARM", Capability::WakeAlarm, 35),
];

/// Docker's masked paths (bind-mounted over with /dev/null or an empty tmpfs).
const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
const READONLY_PATHS: [&str; 5] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Docker's smallest memory limit (`--memory`): 6 MiB.
pub const MIN_MEMORY_BYTES: i64 = 6 * 1024 * 1024;

/// The CFS period for `--cpus` (100ms, docker's).
pub const CPU_PERIOD_US: u64 = 100_000;

/// `RLIMIT_NOFILE` we would like: docker/containerd give 1024 soft, 1048576 hard.
const NOFILE_SOFT: u64 = 1024;
const NOFILE_HARD: u64 = 1_048_576;

/// The runtime-relevant part of an image config's "config" object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageRuntimeConfig {
    pub env: Vec<String>,
    pub cmd: Vec<String>,
    pub entrypoint: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub stop_signal: String,
    pub labels: BTreeMap<String, String>,
    /// The image's `Healthcheck`, durations in milliseconds.
    pub healthcheck: Option<crate::container::config::HealthCheck>,
    /// The image's `Volumes`: paths that get a volume of their own.
    pub volumes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("invalid image config: {0}")]
    ImageConfig(#[source] serde_json::Error),
    #[error("no command: the image has no Entrypoint or Cmd and none was given")]
    NoCommand,
    #[error("invalid working directory {0:?}: it must be an absolute path")]
    RelativeWorkdir(String),
    #[error("invalid environment variable {0:?}: expected KEY=VALUE with a non-empty KEY")]
    InvalidEnv(String),
    #[error("invalid hostname {0:?}: expected 1 to 64 letters, digits, '-', '_' or '.'")]
    InvalidHostname(String),
    #[error("invalid volume name {0:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]+, at most 128 characters")]
    InvalidVolumeName(String),
    #[error("invalid mount destination {destination:?}: {reason}")]
    InvalidMountDestination { destination: String, reason: &'static str },
    #[error("invalid bind mount source {0:?}: it must be an absolute path")]
    InvalidMountSource(String),
    #[error("duplicate mount destination {0:?}")]
    DuplicateMount(String),
    #[error("unknown capabilit{}: {}", if .0.len() == 1 { "y" } else { "ies" }, .0.join(", "))]
    UnknownCapabilities(Vec<String>),
    #[error("capabilit{} not available to the agent (not in its bounding set): {}", if .0.len() == 1 { "y" } else { "ies" }, .0.join(", "))]
    UnavailableCapabilities(Vec<String>),
    #[error("invalid resource limit: {0}")]
    InvalidResources(String),
    #[error("invalid signal {0:?}")]
    InvalidSignal(String),
    #[error("seccomp profile: {0}")]
    Seccomp(String),
    #[error("--security-opt apparmor={0}: AppArmor is not enabled on this machine")]
    NoAppArmor(String),
    #[error("invalid --device {path:?}: {why}")]
    InvalidDevice { path: String, why: String },
    #[error("--init needs berth-init, which this agent does not have")]
    NoInit,
    #[error("building the runtime spec: {0}")]
    Build(#[from] OciSpecError),
}

/// What [`build`] works from.
pub struct SpecInput<'a> {
    /// The container id (its first 12 characters are the default hostname).
    pub id: &'a str,
    pub image: &'a ImageRuntimeConfig,
    pub config: &'a ContainerConfig,
    /// The resolved `--user` (or the image's `User`).
    pub user: &'a ResolvedUser,
    /// `linux.cgroupsPath`; empty leaves it to the runtime.
    pub cgroups_path: &'a str,
    /// berth-init on the host, for a container run with `--init`.
    pub init: Option<&'a Path>,
}

#[derive(Deserialize)]
struct ImageConfigDoc {
    #[serde(default)]
    config: Option<RawRuntimeConfig>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawRuntimeConfig {
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    stop_signal: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    healthcheck: Option<RawHealthcheck>,
    #[serde(default)]
    volumes: Option<BTreeMap<String, serde_json::Value>>,
}

/// An image config's `Healthcheck` (durations in nanoseconds).
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawHealthcheck {
    #[serde(default)]
    test: Option<Vec<String>>,
    #[serde(default)]
    interval: Option<i64>,
    #[serde(default)]
    timeout: Option<i64>,
    #[serde(default)]
    start_period: Option<i64>,
    #[serde(default)]
    retries: Option<i64>,
}

/// Reads the runtime part of an OCI image config blob. A missing (or null)
/// "config" object, and missing or null fields, give the defaults.
pub fn image_runtime_config(config_json: &[u8]) -> Result<ImageRuntimeConfig, SpecError> {
    let doc: ImageConfigDoc = serde_json::from_slice(config_json).map_err(SpecError::ImageConfig)?;
    let raw = doc.config.unwrap_or_default();
    Ok(ImageRuntimeConfig {
        env: raw.env.unwrap_or_default(),
        cmd: raw.cmd.unwrap_or_default(),
        entrypoint: raw.entrypoint.unwrap_or_default(),
        working_dir: raw.working_dir.unwrap_or_default(),
        user: raw.user.unwrap_or_default(),
        stop_signal: raw.stop_signal.unwrap_or_default(),
        labels: raw.labels.unwrap_or_default(),
        healthcheck: raw.healthcheck.map(|h| {
            let ms = |ns: Option<i64>| ns.map_or(0, |n| (n.max(0) / 1_000_000) as u64);
            crate::container::config::HealthCheck {
                test: h.test.unwrap_or_default(),
                interval_ms: ms(h.interval),
                timeout_ms: ms(h.timeout),
                start_period_ms: ms(h.start_period),
                retries: h.retries.map_or(0, |r| r.clamp(0, u32::MAX as i64) as u32),
            }
        }),
        volumes: raw.volumes.map(|v| v.into_keys().collect()).unwrap_or_default(),
    })
}

/// Validates the overrides; also called at create time, before anything is written.
/// Everything `build` would reject in `config` alone is caught here, except a
/// missing command and a relative image `WorkingDir` (those need the image).
pub fn validate(config: &ContainerConfig) -> Result<(), SpecError> {
    for entry in &config.env {
        match entry.split_once('=') {
            Some((key, _)) if !key.is_empty() && !entry.contains('\0') => {}
            _ => return Err(SpecError::InvalidEnv(entry.clone())),
        }
    }
    if let Some(workdir) = config.workdir.as_deref().filter(|w| !w.is_empty()) {
        if !workdir.starts_with('/') {
            return Err(SpecError::RelativeWorkdir(workdir.to_string()));
        }
    }
    if let Some(hostname) = &config.hostname {
        validate_hostname(hostname)?;
    }
    let mut destinations = HashSet::new();
    for m in &config.mounts {
        let destination = clean_destination(&m.destination)?;
        if m.kind == MountKind::Bind && !m.source.starts_with('/') {
            return Err(SpecError::InvalidMountSource(m.source.clone()));
        }
        if m.kind == MountKind::Volume && !m.source.is_empty() && !valid_volume_name(&m.source) {
            return Err(SpecError::InvalidVolumeName(m.source.clone()));
        }
        if !destinations.insert(destination.clone()) {
            return Err(SpecError::DuplicateMount(destination));
        }
    }
    validate_resources(config)?;
    if !matches!(config.seccomp.as_str(), "" | "unconfined") {
        super::seccomp::for_container(&config.seccomp, &HashSet::new()).map_err(SpecError::Seccomp)?;
    }
    if !matches!(config.apparmor.as_str(), "" | "unconfined") && !apparmor_enabled() {
        return Err(SpecError::NoAppArmor(config.apparmor.clone()));
    }
    for d in &config.devices {
        device(d)?;
    }
    // Unknown capability names (even for a privileged container), and
    // capabilities added by name that the agent itself does not hold.
    capability_set(config, agent_holds)?;
    Ok(())
}

/// Docker's rule for volume names (two characters at least).
pub fn valid_volume_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn validate_hostname(hostname: &str) -> Result<(), SpecError> {
    let ok = !hostname.is_empty()
        && hostname.len() <= 64
        && hostname.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(SpecError::InvalidHostname(hostname.to_string()))
    }
}

fn validate_resources(config: &ContainerConfig) -> Result<(), SpecError> {
    let r = &config.resources;
    if let Some(memory) = r.memory_bytes {
        if memory < MIN_MEMORY_BYTES {
            return Err(SpecError::InvalidResources(format!("memory limit {memory} bytes is below the minimum of 6MiB")));
        }
        if memory.checked_mul(2).is_none() {
            return Err(SpecError::InvalidResources(format!("memory limit {memory} bytes is too large")));
        }
    }
    if let Some(millis) = r.cpu_millis {
        // Docker's range starts at 0.01 CPU: a CFS quota below 1ms is rejected by the kernel.
        if millis < 10 {
            return Err(SpecError::InvalidResources(format!("cpu limit {millis} thousandths of a CPU is below the minimum of 0.01")));
        }
        if cpu_quota(millis).is_none() {
            return Err(SpecError::InvalidResources(format!("cpu limit {millis} thousandths of a CPU is too large")));
        }
    }
    Ok(())
}

/// The CFS quota for `millis` thousandths of a CPU over [`CPU_PERIOD_US`].
fn cpu_quota(millis: u64) -> Option<i64> {
    millis.checked_mul(CPU_PERIOD_US / 1000).and_then(|q| i64::try_from(q).ok())
}

/// The process args the container will run (entrypoint + cmd after overrides),
/// for display. Docker's rules:
/// - an `entrypoint` override replaces the image's Entrypoint and drops the
///   image's Cmd (an empty list, or `[""]` as `--entrypoint ""` sends, clears it);
/// - a `command` override replaces Cmd (an empty one counts as not given);
/// - args = entrypoint ++ cmd.
pub fn process_args(image: &ImageRuntimeConfig, config: &ContainerConfig) -> Vec<String> {
    let command = config.command.as_deref().filter(|c| !c.is_empty());
    let (entrypoint, cmd): (&[String], &[String]) = match config.entrypoint.as_deref() {
        Some(ep) => {
            let ep = if ep.len() == 1 && ep[0].is_empty() { &[][..] } else { ep };
            (ep, command.unwrap_or(&[]))
        }
        None => (&image.entrypoint, command.unwrap_or(&image.cmd)),
    };
    entrypoint.iter().chain(cmd).cloned().collect()
}

/// Builds the runtime spec. See the module documentation for what is left out.
pub fn build(input: &SpecInput<'_>) -> Result<Spec, SpecError> {
    let config = input.config;
    validate(config)?;

    let mut args = process_args(input.image, config);
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    let mut all_mounts = mounts(config)?;
    if config.init {
        let host = input.init.ok_or(SpecError::NoInit)?;
        args.splice(0..0, [super::init::PATH_IN_CONTAINER.to_owned(), "--".to_owned()]);
        all_mounts.push(
            MountBuilder::default()
                .destination(super::init::PATH_IN_CONTAINER)
                .typ("bind")
                .source(host)
                .options(vec!["rbind".to_owned(), "ro".to_owned(), "nosuid".to_owned(), "nodev".to_owned()])
                .build()?,
        );
    }
    let hostname = match &config.hostname {
        Some(h) => h.clone(),
        None => input.id.chars().take(12).collect(),
    };
    let cwd = working_dir(input.image, config)?;
    let env = process_env(input, &hostname);

    let process = build_process(input, args, env, cwd)?;
    let linux = build_linux(input)?;
    let root = RootBuilder::default().path("rootfs").readonly(config.read_only).build()?;

    let mut spec = SpecBuilder::default()
        .version(OCI_VERSION)
        .root(root)
        .hostname(hostname)
        .mounts(all_mounts)
        .process(process)
        .linux(linux)
        .build()?;
    // Not taken from Spec::default() (see the module documentation).
    spec.set_annotations(None);
    spec.set_domainname(None);
    spec.set_hooks(None);
    Ok(spec)
}

fn working_dir(image: &ImageRuntimeConfig, config: &ContainerConfig) -> Result<PathBuf, SpecError> {
    let dir =
        config.workdir.as_deref().filter(|w| !w.is_empty()).or(Some(image.working_dir.as_str()).filter(|w| !w.is_empty())).unwrap_or("/");
    if !dir.starts_with('/') {
        return Err(SpecError::RelativeWorkdir(dir.to_string()));
    }
    // Lexically cleaned, as docker does ("/a/./b/../c" is "/a/c").
    let mut clean = PathBuf::from("/");
    for component in Path::new(dir).components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::ParentDir => {
                clean.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(clean)
}

fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(key, _)| key)
}

/// The image's Env, overridden by key (in place) and extended by the user's,
/// plus PATH, HOSTNAME, HOME and (with a tty) TERM when not already set.
fn process_env(input: &SpecInput<'_>, hostname: &str) -> Vec<String> {
    merge_env(&[&input.image.env, &input.config.env], hostname, &home_of(input.user), input.config.tty)
}

/// The user's home: from `/etc/passwd`, else `/root` for root and `/` for others.
fn home_of(user: &ResolvedUser) -> String {
    match &user.home {
        Some(home) => home.clone(),
        None if user.uid == 0 => "/root".to_string(),
        None => "/".to_string(),
    }
}

/// Environment lists merged in order, each key once (a later entry replaces
/// an earlier one in place), then the defaults for keys none of them set.
fn merge_env(lists: &[&[String]], hostname: &str, home: &str, tty: bool) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    for entry in lists.iter().flat_map(|l| l.iter()) {
        match env.iter().position(|e| env_key(e) == env_key(entry)) {
            Some(i) => env[i] = entry.clone(),
            None => env.push(entry.clone()),
        }
    }
    let mut defaults = vec![("PATH", DEFAULT_PATH.to_string()), ("HOSTNAME", hostname.to_string()), ("HOME", home.to_string())];
    if tty {
        defaults.push(("TERM", "xterm".to_string()));
    }
    for (key, value) in defaults {
        if !env.iter().any(|e| env_key(e) == key) {
            env.push(format!("{key}={value}"));
        }
    }
    env
}

/// What an exec asks for beyond the container's own process.
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    pub args: Vec<String>,
    /// `KEY=VALUE` entries over the container's environment.
    pub env: Vec<String>,
    /// Absolute; empty: the container's working directory.
    pub workdir: String,
    pub tty: bool,
}

/// The process of an exec: the container's init process (capabilities,
/// rlimits, user) with the exec's command, working directory, terminal and
/// environment. The environment is built as the init's is (image Env, the
/// container's, then the exec's), with HOME that of the exec's user when
/// one is given, and TERM only when the exec has a terminal.
pub fn exec_process(
    init: &Process,
    hostname: &str,
    image: &ImageRuntimeConfig,
    config: &ContainerConfig,
    exec: &ExecSpec,
    user: Option<&ResolvedUser>,
) -> Result<Process, SpecError> {
    if exec.args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    for entry in &exec.env {
        if entry.split_once('=').is_none_or(|(k, _)| k.is_empty()) || entry.contains('\0') {
            return Err(SpecError::InvalidEnv(entry.clone()));
        }
    }
    if !exec.workdir.is_empty() && !exec.workdir.starts_with('/') {
        return Err(SpecError::RelativeWorkdir(exec.workdir.clone()));
    }
    let init_home = || {
        let env = init.env().as_deref().unwrap_or_default();
        env.iter().find_map(|e| e.strip_prefix("HOME=")).map(str::to_owned).unwrap_or_else(|| "/".to_owned())
    };
    let home = user.map(home_of).unwrap_or_else(init_home);
    let mut process = init.clone();
    process.set_args(Some(exec.args.clone()));
    process.set_terminal(Some(exec.tty));
    process.set_env(Some(merge_env(&[&image.env, &config.env, &exec.env], hostname, &home, exec.tty)));
    if !exec.workdir.is_empty() {
        process.set_cwd(PathBuf::from(&exec.workdir));
    }
    if let Some(u) = user {
        let mut b = UserBuilder::default().uid(u.uid).gid(u.gid);
        if !u.additional_gids.is_empty() {
            b = b.additional_gids(u.additional_gids.clone());
        }
        process.set_user(b.build()?);
    }
    Ok(process)
}

fn build_process(input: &SpecInput<'_>, args: Vec<String>, env: Vec<String>, cwd: PathBuf) -> Result<Process, SpecError> {
    let config = input.config;
    let mut user = UserBuilder::default().uid(input.user.uid).gid(input.user.gid);
    if !input.user.additional_gids.is_empty() {
        user = user.additional_gids(input.user.additional_gids.clone());
    }
    let mut process = ProcessBuilder::default()
        .terminal(config.tty)
        .user(user.build()?)
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(capabilities(config)?)
        .rlimits(rlimits(config)?)
        .no_new_privileges(config.no_new_privileges.unwrap_or(!config.privileged))
        .build()?;
    if !matches!(config.apparmor.as_str(), "" | "unconfined") {
        process.set_apparmor_profile(Some(config.apparmor.clone()));
    }
    // A negative oomScoreAdj needs CAP_SYS_RESOURCE, which this agent may not have.
    process.set_oom_score_adj(None);
    Ok(process)
}

/// The container's resource limits: `--ulimit`s, and the default
/// `RLIMIT_NOFILE` unless one sets it. A hard limit above the agent's own is
/// refused: raising it needs CAP_SYS_RESOURCE (which this agent may lack),
/// and the runtime would fail the start with a less clear message.
fn rlimits(config: &ContainerConfig) -> Result<Vec<PosixRlimit>, SpecError> {
    use rustix::process::Resource as R;
    let mut out = Vec::new();
    for u in &config.ulimits {
        let (typ, resource) = match u.name.as_str() {
            "core" => (PosixRlimitType::RlimitCore, R::Core),
            "cpu" => (PosixRlimitType::RlimitCpu, R::Cpu),
            "data" => (PosixRlimitType::RlimitData, R::Data),
            "fsize" => (PosixRlimitType::RlimitFsize, R::Fsize),
            "locks" => (PosixRlimitType::RlimitLocks, R::Locks),
            "memlock" => (PosixRlimitType::RlimitMemlock, R::Memlock),
            "msgqueue" => (PosixRlimitType::RlimitMsgqueue, R::Msgqueue),
            "nice" => (PosixRlimitType::RlimitNice, R::Nice),
            "nofile" => (PosixRlimitType::RlimitNofile, R::Nofile),
            "nproc" => (PosixRlimitType::RlimitNproc, R::Nproc),
            "rss" => (PosixRlimitType::RlimitRss, R::Rss),
            "rtprio" => (PosixRlimitType::RlimitRtprio, R::Rtprio),
            "rttime" => (PosixRlimitType::RlimitRttime, R::Rttime),
            "sigpending" => (PosixRlimitType::RlimitSigpending, R::Sigpending),
            "stack" => (PosixRlimitType::RlimitStack, R::Stack),
            "as" => (PosixRlimitType::RlimitAs, R::As),
            other => return Err(SpecError::InvalidResources(format!("unknown ulimit {other:?}"))),
        };
        if u.soft > u.hard {
            return Err(SpecError::InvalidResources(format!("ulimit {}: the soft limit {} is above the hard {}", u.name, u.soft, u.hard)));
        }
        let agent_hard = rustix::process::getrlimit(resource).maximum.unwrap_or(u64::MAX);
        if u.hard > agent_hard {
            return Err(SpecError::InvalidResources(format!(
                "ulimit {}: a hard limit of {} is above this agent's ({agent_hard}); raising one needs CAP_SYS_RESOURCE",
                u.name, u.hard
            )));
        }
        if out.iter().any(|r: &PosixRlimit| r.typ() == typ) {
            return Err(SpecError::InvalidResources(format!("ulimit {} is given twice", u.name)));
        }
        out.push(PosixRlimitBuilder::default().typ(typ).soft(u.soft).hard(u.hard).build()?);
    }
    if !out.iter().any(|r| r.typ() == PosixRlimitType::RlimitNofile) {
        out.push(nofile_rlimit()?);
    }
    Ok(out)
}

/// The kernel parameters a container may set: those of its own namespaces.
fn check_sysctls(config: &ContainerConfig) -> Result<(), SpecError> {
    const IPC: [&str; 8] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    for key in config.sysctls.keys() {
        let ipc = IPC.contains(&key.as_str()) || key.starts_with("fs.mqueue.");
        let why = if key.starts_with("net.") {
            (config.network == NetworkMode::Host).then_some("the container uses the host's network")
        } else if ipc {
            if config.ipc_host {
                Some("the container uses the host's IPC namespace")
            } else {
                config.ipc_container.is_some().then_some("the container shares another container's IPC namespace")
            }
        } else {
            Some("it is not namespaced: it would change the host")
        };
        if let Some(why) = why {
            return Err(SpecError::InvalidResources(format!("sysctl {key:?} cannot be set: {why}")));
        }
    }
    Ok(())
}

/// `RLIMIT_NOFILE` for the container: 1024 soft and 1048576 hard, as docker and
/// containerd give, but never above the agent's own hard limit. Raising a hard
/// limit needs CAP_SYS_RESOURCE, which the agent may lack (it does on the
/// machines we test on); the runtime's setrlimit would then fail and the
/// container would not start. Whatever the agent may use, the container may.
fn nofile_rlimit() -> Result<PosixRlimit, SpecError> {
    let caller_hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum.unwrap_or(u64::MAX);
    let (soft, hard) = nofile_limits(caller_hard);
    Ok(PosixRlimitBuilder::default().typ(PosixRlimitType::RlimitNofile).soft(soft).hard(hard).build()?)
}

fn nofile_limits(caller_hard: u64) -> (u64, u64) {
    let hard = NOFILE_HARD.min(caller_hard);
    (NOFILE_SOFT.min(hard), hard)
}

/// A capability name as given to `--cap-add`/`--cap-drop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CapName {
    All,
    Cap(Capability),
}

/// Parses names with or without the `CAP_` prefix, in any case, and `ALL`.
/// Every unknown name is reported at once.
fn parse_capabilities(names: &[String]) -> Result<Vec<CapName>, SpecError> {
    let mut parsed = Vec::new();
    let mut unknown = Vec::new();
    for name in names {
        let upper = name.trim().to_ascii_uppercase();
        if upper == "ALL" {
            parsed.push(CapName::All);
            continue;
        }
        let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
        match ALL_CAPABILITIES.iter().find(|(n, _, _)| *n == bare) {
            Some((_, cap, _)) => parsed.push(CapName::Cap(*cap)),
            None => unknown.push(name.clone()),
        }
    }
    if unknown.is_empty() {
        Ok(parsed)
    } else {
        Err(SpecError::UnknownCapabilities(unknown))
    }
}

/// Whether the agent's own bounding set holds capability number `bit`. A
/// runtime cannot give a container a capability its caller does not have in
/// its bounding set (runc fails with "unable to apply caps: operation not
/// permitted"); the machines we test on, for one, lack CAP_SYS_RESOURCE.
fn agent_holds(bit: u32) -> bool {
    let set = rustix::thread::CapabilitySet::from_bits_retain(1u64 << bit);
    rustix::thread::capability_is_in_bounding_set(set).unwrap_or(false)
}

/// The capability set, with docker's rules (moby's `TweakCapabilities`):
/// privileged gets all; `--cap-add ALL` gives all but the dropped ones;
/// `--cap-drop ALL` keeps only the added ones; otherwise the defaults minus the
/// dropped ones plus the added ones (adding wins over dropping).
///
/// "All" and the defaults mean those the agent holds (`held`, by capability
/// number), as podman does for privileged containers; a capability added by
/// name that the agent does not hold is an error, reported now rather than by
/// the runtime at start.
fn capability_set(config: &ContainerConfig, held: impl Fn(u32) -> bool) -> Result<Capabilities, SpecError> {
    let is_held = |cap: &Capability| ALL_CAPABILITIES.iter().any(|(_, c, bit)| c == cap && held(*bit));
    let all = || ALL_CAPABILITIES.iter().filter(|(_, _, bit)| held(*bit)).map(|(_, c, _)| *c);
    let adds = parse_capabilities(&config.cap_add)?;
    let drops = parse_capabilities(&config.cap_drop)?;
    if config.privileged {
        return Ok(all().collect());
    }
    let only = |list: &[CapName]| list.iter().filter_map(|c| if let CapName::Cap(c) = c { Some(*c) } else { None }).collect::<Vec<_>>();
    let (add_caps, drop_caps) = (only(&adds), only(&drops));
    let unavailable: Vec<String> = add_caps.iter().filter(|c| !is_held(c)).map(|c| format!("CAP_{c}")).collect();
    if !unavailable.is_empty() {
        return Err(SpecError::UnavailableCapabilities(unavailable));
    }
    let caps = if adds.contains(&CapName::All) {
        all().filter(|c| !drop_caps.contains(c)).collect()
    } else if drops.contains(&CapName::All) {
        add_caps.into_iter().collect()
    } else {
        DEFAULT_CAPABILITIES.into_iter().filter(|c| is_held(c) && !drop_caps.contains(c)).chain(add_caps).collect()
    };
    Ok(caps)
}

/// Bounding, effective and permitted; not inheritable, not ambient (as docker).
fn capabilities(config: &ContainerConfig) -> Result<LinuxCapabilities, SpecError> {
    let caps = capability_set(config, agent_holds)?;
    let mut built = LinuxCapabilitiesBuilder::default().bounding(caps.clone()).effective(caps.clone()).permitted(caps).build()?;
    built.set_inheritable(None);
    built.set_ambient(None);
    Ok(built)
}

/// `destination` made clean: absolute, no "..", no "." or empty components, not "/".
pub fn clean_destination(destination: &str) -> Result<String, SpecError> {
    let invalid = |reason| SpecError::InvalidMountDestination { destination: destination.to_string(), reason };
    if !destination.starts_with('/') {
        return Err(invalid("it must be an absolute path"));
    }
    let mut parts = Vec::new();
    for part in destination.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(invalid("it must not contain \"..\"")),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(invalid("it must not be \"/\""));
    }
    Ok(format!("/{}", parts.join("/")))
}

fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

/// Docker's default mounts. A privileged container gets /sys and the cgroup
/// filesystem read-write, as in docker.
fn default_mounts(config: &ContainerConfig) -> Result<Vec<Mount>, SpecError> {
    let privileged = config.privileged;
    let shm_size = config.shm_size.map_or_else(|| "size=65536k".to_owned(), |b| format!("size={b}"));
    let shm = match &config.shm_source {
        Some(source) => mount("/dev/shm", "bind", source, &["rbind", "rprivate", "nosuid", "noexec", "nodev"])?,
        None => mount("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", &shm_size])?,
    };
    let ro = |options: &[&'static str]| -> Vec<&'static str> {
        let mut o = options.to_vec();
        if !privileged {
            o.push("ro");
        }
        o
    };
    Ok(vec![
        mount("/proc", "proc", "proc", &[])?,
        mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"])?,
        mount("/dev/pts", "devpts", "devpts", &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"])?,
        shm,
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?,
        mount("/sys", "sysfs", "sysfs", &ro(&["nosuid", "noexec", "nodev"]))?,
        mount("/sys/fs/cgroup", "cgroup", "cgroup", &ro(&["nosuid", "noexec", "nodev", "relatime"]))?,
    ])
}

/// User options, one per element; "a,b" elements are split.
fn split_options(options: &[String]) -> Vec<&str> {
    options.iter().flat_map(|o| o.split(',')).map(str::trim).filter(|o| !o.is_empty()).collect()
}

const PROPAGATIONS: [&str; 6] = ["private", "rprivate", "shared", "rshared", "slave", "rslave"];

fn user_mount(m: &MountSpec, destination: &str) -> Result<Mount, SpecError> {
    let user_options = split_options(&m.options);
    let mut readonly = m.readonly;
    let mut options: Vec<&str> = Vec::new();
    let (typ, source) = match m.kind {
        // A volume's source is its directory by now (see `Containers::create`).
        MountKind::Bind | MountKind::Volume => {
            // ["rbind", propagation, user options..., "ro" | "rw"]
            let propagation = user_options.iter().rev().find(|o| PROPAGATIONS.contains(o)).copied().unwrap_or("rprivate");
            options.extend(["rbind", propagation]);
            for o in &user_options {
                match *o {
                    "ro" => readonly = true,
                    "rw" | "bind" | "rbind" => {}
                    o if PROPAGATIONS.contains(&o) => {}
                    o => options.push(o),
                }
            }
            ("bind", m.source.as_str())
        }
        MountKind::Tmpfs => {
            // Docker's tmpfs defaults (noexec, nosuid, nodev) unless the user says
            // otherwise, and mode=1777 unless a mode is given.
            for (flag, opposite) in [("nosuid", "suid"), ("nodev", "dev"), ("noexec", "exec")] {
                if !user_options.contains(&opposite) && !user_options.contains(&flag) {
                    options.push(flag);
                }
            }
            if !user_options.iter().any(|o| o.starts_with("mode=")) {
                options.push("mode=1777");
            }
            for o in &user_options {
                match *o {
                    "ro" => readonly = true,
                    "rw" => {}
                    o => options.push(o),
                }
            }
            ("tmpfs", "tmpfs")
        }
    };
    match m.kind {
        MountKind::Bind | MountKind::Volume => options.push(if readonly { "ro" } else { "rw" }),
        MountKind::Tmpfs if readonly => options.push("ro"),
        MountKind::Tmpfs => {}
    }
    mount(destination, typ, source, &options)
}

/// The default mounts, without those the user's replace (a user mount on /dev
/// replaces everything under /dev too, as in docker), then the user's mounts,
/// parents before children.
fn mounts(config: &ContainerConfig) -> Result<Vec<Mount>, SpecError> {
    let mut user = Vec::with_capacity(config.mounts.len());
    for m in &config.mounts {
        user.push((clean_destination(&m.destination)?, m));
    }
    // Stable: same-depth mounts keep the user's order.
    user.sort_by_key(|(destination, _)| destination.matches('/').count());
    let replaces_dev = user.iter().any(|(d, _)| d == "/dev");
    let mut all: Vec<Mount> = default_mounts(config)?
        .into_iter()
        .filter(|m| {
            let d = m.destination().to_string_lossy();
            let replaced = user.iter().any(|(u, _)| *u == d) || (replaces_dev && d.starts_with("/dev/"));
            !replaced
        })
        .collect();
    for (destination, m) in &user {
        all.push(user_mount(m, destination)?);
    }
    Ok(all)
}

fn namespace(typ: LinuxNamespaceType) -> Result<LinuxNamespace, SpecError> {
    Ok(LinuxNamespaceBuilder::default().typ(typ).build()?)
}

fn device_rule(
    allow: bool,
    typ: Option<LinuxDeviceType>,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> Result<LinuxDeviceCgroup, SpecError> {
    let mut rule = LinuxDeviceCgroupBuilder::default().allow(allow).access(access);
    if let Some(typ) = typ {
        rule = rule.typ(typ);
    }
    if let Some(major) = major {
        rule = rule.major(major);
    }
    if let Some(minor) = minor {
        rule = rule.minor(minor);
    }
    Ok(rule.build()?)
}

/// Whether the kernel runs AppArmor.
fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.trim() == "Y")
}

/// The seccomp of a container: the default profile, or the one it was given,
/// for its capabilities; none for "unconfined" or (with no profile given) a
/// privileged container.
fn seccomp(config: &ContainerConfig) -> Result<Option<oci_spec::runtime::LinuxSeccomp>, SpecError> {
    let profile = match config.seccomp.as_str() {
        "unconfined" => return Ok(None),
        // A privileged container has no filter, even one it names (as docker and the CRI).
        _ if config.privileged => return Ok(None),
        "" => super::seccomp::DEFAULT_PROFILE,
        given => given,
    };
    let caps: HashSet<String> = capability_set(config, agent_holds)?
        .iter()
        .filter_map(|c| serde_json::to_value(c).ok().and_then(|v| v.as_str().map(str::to_owned)))
        .collect();
    super::seccomp::for_container(profile, &caps).map(Some).map_err(SpecError::Seccomp)
}

/// A `--device`: the device node made in the container (the host's type,
/// numbers and mode) and the cgroup rule that lets it be used.
fn device(d: &super::config::DeviceMapping) -> Result<(LinuxDevice, LinuxDeviceCgroup), SpecError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let invalid = |why: String| SpecError::InvalidDevice { path: d.host_path.clone(), why };
    if !d.host_path.starts_with('/') {
        return Err(invalid("the host path must be absolute".into()));
    }
    let target = if d.container_path.is_empty() { d.host_path.as_str() } else { d.container_path.as_str() };
    let target = clean_destination(target).map_err(|e| invalid(e.to_string()))?;
    let access = if d.permissions.is_empty() { "rwm" } else { d.permissions.as_str() };
    if !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(invalid(format!("permissions {access:?}: use some of r, w and m")));
    }
    let meta = std::fs::metadata(&d.host_path).map_err(|e| invalid(e.to_string()))?;
    let ft = meta.file_type();
    let typ = if ft.is_char_device() {
        LinuxDeviceType::C
    } else if ft.is_block_device() {
        LinuxDeviceType::B
    } else {
        return Err(invalid("not a character or block device".into()));
    };
    let (major, minor) = (rustix::fs::major(meta.rdev()) as i64, rustix::fs::minor(meta.rdev()) as i64);
    let dev = LinuxDeviceBuilder::default()
        .path(&target)
        .typ(typ)
        .major(major)
        .minor(minor)
        .file_mode(meta.mode() & 0o7777)
        .uid(0u32)
        .gid(0u32)
        .build()?;
    Ok((dev, device_rule(true, Some(typ), Some(major), Some(minor), access)?))
}

/// The host's devices under `dev`, for a privileged container: every
/// character and block device but those the runtime makes itself (the
/// console, ptys) and those of pseudo-filesystems mounted there (shm,
/// mqueue), as docker and runc list them.
fn host_devices(dev: &Path) -> Vec<LinuxDevice> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    fn walk(dir: &Path, depth: usize, out: &mut Vec<LinuxDevice>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            let ft = meta.file_type();
            if ft.is_dir() {
                let skipped = matches!(e.file_name().to_str(), Some("pts" | "shm" | "fd" | "mqueue" | ".lxc" | ".lxd-mounts" | ".udev"));
                if !skipped && depth < 4 {
                    walk(&path, depth + 1, out);
                }
                continue;
            }
            let typ = if ft.is_char_device() {
                LinuxDeviceType::C
            } else if ft.is_block_device() {
                LinuxDeviceType::B
            } else {
                continue;
            };
            if path.file_name().is_some_and(|n| n == "console") && depth == 0 {
                continue;
            }
            let rdev = meta.rdev();
            let device = LinuxDeviceBuilder::default()
                .path(&path)
                .typ(typ)
                .major(rustix::fs::major(rdev) as i64)
                .minor(rustix::fs::minor(rdev) as i64)
                .file_mode(meta.mode() & 0o7777)
                .uid(meta.uid())
                .gid(meta.gid())
                .build();
            if let Ok(d) = device {
                out.push(d);
            }
        }
    }
    let mut out = Vec::new();
    walk(dev, 0, &mut out);
    out.sort_by(|a, b| a.path().cmp(b.path()));
    out
}

/// The device cgroup: deny everything, then allow docker's defaults (mknod of
/// any device, the standard character devices, ptys). Privileged: allow all.
fn device_rules(privileged: bool) -> Result<Vec<LinuxDeviceCgroup>, SpecError> {
    if privileged {
        return Ok(vec![device_rule(true, None, None, None, "rwm")?]);
    }
    let c = Some(LinuxDeviceType::C);
    let mut rules = vec![
        device_rule(false, None, None, None, "rwm")?,
        // "c *:* m" and "b *:* m": mknod (CAP_MKNOD is a default capability), no access.
        device_rule(true, c, None, None, "m")?,
        device_rule(true, Some(LinuxDeviceType::B), None, None, "m")?,
    ];
    // null, zero, full, urandom, random, tty, console, ptmx, then pts (136:*).
    for (major, minor) in
        [(1, Some(3)), (1, Some(5)), (1, Some(7)), (1, Some(9)), (1, Some(8)), (5, Some(0)), (5, Some(1)), (5, Some(2)), (136, None)]
    {
        rules.push(device_rule(true, c, Some(major), minor, "rwm")?);
    }
    Ok(rules)
}

fn resources(config: &ContainerConfig) -> Result<LinuxResources, SpecError> {
    let mut rules = device_rules(config.privileged)?;
    if !config.privileged {
        for d in &config.devices {
            rules.push(device(d)?.1);
        }
    }
    let mut resources = limits(&config.resources)?;
    resources.set_devices(Some(rules));
    Ok(resources)
}

/// The cgroup limits of `r` (memory, CPU, processes), checked: what a running container's
/// limits are changed to (`runc update`), and the spec's besides its device rules.
pub fn limits(r: &crate::metadata::container_config::Resources) -> Result<LinuxResources, SpecError> {
    let mut resources = LinuxResourcesBuilder::default();
    if let Some(memory) = r.memory_bytes {
        // Docker's default for --memory without --memory-swap: as much swap as memory
        // (memory+swap = 2 * memory). validate() has checked that this does not overflow.
        let swap = match r.memory_swap_bytes {
            Some(s) if s < memory && s != -1 => {
                return Err(SpecError::InvalidResources(format!("memory plus swap {s} is below the memory limit {memory}")));
            }
            Some(s) => s,
            None => memory.saturating_mul(2),
        };
        resources = resources.memory(LinuxMemoryBuilder::default().limit(memory).swap(swap).build()?);
    }
    let mut cpu = LinuxCpuBuilder::default();
    let mut any_cpu = false;
    if let Some(millis) = r.cpu_millis {
        let quota = cpu_quota(millis).ok_or_else(|| SpecError::InvalidResources(format!("cpu limit {millis} is too large")))?;
        cpu = cpu.period(CPU_PERIOD_US).quota(quota);
        any_cpu = true;
    }
    if let Some(shares) = r.cpu_shares.filter(|s| *s > 0) {
        if !(2..=262_144).contains(&shares) {
            return Err(SpecError::InvalidResources(format!("cpu shares {shares}: 2 to 262144")));
        }
        cpu = cpu.shares(shares);
        any_cpu = true;
    }
    for (what, list) in [("cpus", &r.cpuset_cpus), ("mems", &r.cpuset_mems)] {
        let Some(list) = list.as_deref().filter(|l| !l.is_empty()) else { continue };
        // A list of numbers and ranges: 0-3,5.
        let ok = list.split(',').all(|part| {
            let mut ends = part.splitn(2, '-');
            ends.all(|n| !n.is_empty() && n.len() <= 5 && n.bytes().all(|b| b.is_ascii_digit()))
        });
        if !ok {
            return Err(SpecError::InvalidResources(format!("cpuset {what} {list:?}: a list such as 0-3,5")));
        }
        cpu = if what == "cpus" { cpu.cpus(list) } else { cpu.mems(list) };
        any_cpu = true;
    }
    if any_cpu {
        resources = resources.cpu(cpu.build()?);
    }
    // Docker: 0 or a negative value means unlimited.
    if let Some(pids) = r.pids_limit.filter(|p| *p > 0) {
        resources = resources.pids(LinuxPidsBuilder::default().limit(pids).build()?);
    }
    Ok(resources.build()?)
}

fn build_linux(input: &SpecInput<'_>) -> Result<oci_spec::runtime::Linux, SpecError> {
    let config = input.config;
    // No cgroup namespace: runc on a hybrid cgroup v1 host is simplest without one.
    check_sysctls(config)?;
    let mut types = vec![LinuxNamespaceType::Pid, LinuxNamespaceType::Ipc, LinuxNamespaceType::Uts, LinuxNamespaceType::Mount];
    types.retain(|t| !(*t == LinuxNamespaceType::Pid && config.pid_host || *t == LinuxNamespaceType::Ipc && config.ipc_host));
    if config.network != NetworkMode::Host {
        types.push(LinuxNamespaceType::Network);
    }
    if config.cgroupns_private {
        types.push(LinuxNamespaceType::Cgroup);
    }
    let namespaces = types.into_iter().map(namespace).collect::<Result<Vec<_>, _>>()?;
    let to_strings = |paths: &[&str]| paths.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources(config)?)
        .masked_paths(config.masked_paths.clone().unwrap_or_else(|| to_strings(&MASKED_PATHS)))
        .readonly_paths(config.readonly_paths.clone().unwrap_or_else(|| to_strings(&READONLY_PATHS)))
        .build()?;
    if config.privileged {
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    }
    linux.set_cgroups_path(Some(input.cgroups_path).filter(|p| !p.is_empty()).map(PathBuf::from));
    // Not taken from Linux::default() (see the module documentation); a
    // privileged container gets the host's devices, as docker gives them.
    let mut devices = if config.privileged { host_devices(Path::new("/dev")) } else { Vec::new() };
    for d in &config.devices {
        let (dev, _) = device(d)?;
        devices.retain(|x| x.path() != dev.path());
        devices.push(dev);
    }
    linux.set_devices(Some(devices).filter(|d| !d.is_empty()));
    linux.set_seccomp(seccomp(config)?);
    linux.set_sysctl(Some(config.sysctls.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).filter(|s: &HashMap<_, _>| !s.is_empty()));
    linux.set_uid_mappings(None);
    linux.set_gid_mappings(None);
    // A mount that propagates back to the host (rshared) needs a shared root under it;
    // otherwise the runtime's default (rslave) lets the host's mounts in.
    let shared = config.mounts.iter().any(|m| m.options.iter().any(|o| matches!(o.as_str(), "rshared" | "shared")));
    linux.set_rootfs_propagation(shared.then(|| "rshared".to_owned()));
    Ok(linux)
}

/// Linux signal names without "SIG" (x86-64/arm64 numbering; IOT, CLD and POLL are aliases).
const SIGNALS: [(&str, i32); 34] = [
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("IOT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("POLL", 29),
    ("PWR", 30),
    ("SYS", 31),
];

/// SIGRTMIN as user space sees it (glibc reserves 32 and 33), and SIGRTMAX.
const SIGRTMIN: i32 = 34;
const SIGRTMAX: i32 = 64;

/// Parses a signal name or number: "TERM", "SIGTERM", "sigterm", "15",
/// "SIGRTMIN+3", "RTMAX-1". Unknown names, 0 and numbers above 64 are errors.
pub fn parse_signal(s: &str) -> Result<i32, SpecError> {
    let invalid = || SpecError::InvalidSignal(s.to_string());
    let trimmed = s.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return match trimmed.parse::<i32>() {
            Ok(n) if (1..=SIGRTMAX).contains(&n) => Ok(n),
            _ => Err(invalid()),
        };
    }
    let upper = trimmed.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some((_, n)) = SIGNALS.iter().find(|(n, _)| *n == name) {
        return Ok(*n);
    }
    // "RTMIN", "RTMIN+N", "RTMAX", "RTMAX-N" (N: up to 3 digits).
    let offset = |base: i32, rest: &str, sign: char| -> Option<i32> {
        if rest.is_empty() {
            return Some(base);
        }
        let digits = rest.strip_prefix(sign)?;
        if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: i32 = digits.parse().ok()?;
        Some(if sign == '+' { base + n } else { base - n })
    };
    let n = if let Some(rest) = name.strip_prefix("RTMIN") {
        offset(SIGRTMIN, rest, '+')
    } else if let Some(rest) = name.strip_prefix("RTMAX") {
        offset(SIGRTMAX, rest, '-')
    } else {
        None
    };
    n.filter(|n| (SIGRTMIN..=SIGRTMAX).contains(n)).ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::config::Resources;

    fn image() -> ImageRuntimeConfig {
        ImageRuntimeConfig {
            env: vec!["PATH=/opt/bin:/bin".into(), "LANG=C.UTF-8".into(), "FOO=image".into()],
            cmd: vec!["sh".into(), "-c".into(), "echo hi".into()],
            entrypoint: vec![],
            working_dir: "/app".into(),
            user: String::new(),
            stop_signal: String::new(),
            labels: BTreeMap::new(),
            healthcheck: None,
            volumes: Vec::new(),
        }
    }

    fn root() -> ResolvedUser {
        ResolvedUser { uid: 0, gid: 0, additional_gids: vec![], home: None, name: None }
    }

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn build_with(image: &ImageRuntimeConfig, config: &ContainerConfig, user: &ResolvedUser) -> Result<Spec, SpecError> {
        build(&SpecInput {
            id: ID,
            image,
            config,
            user,
            cgroups_path: "/berth/default/c1",
            init: Some(Path::new("/var/lib/berth/bin/berth-init")),
        })
    }

    fn spec_for(config: &ContainerConfig) -> Spec {
        build_with(&image(), config, &root()).unwrap()
    }

    fn process(spec: &Spec) -> &Process {
        spec.process().as_ref().unwrap()
    }

    fn env_of(spec: &Spec) -> Vec<String> {
        process(spec).env().clone().unwrap()
    }

    fn env_value(spec: &Spec, key: &str) -> Option<String> {
        let env = env_of(spec);
        let values: Vec<_> = env.iter().filter(|e| env_key(e) == key).collect();
        assert!(values.len() <= 1, "{key} set more than once: {env:?}");
        values.first().map(|e| e.split_once('=').unwrap().1.to_string())
    }

    fn args_for(image: &ImageRuntimeConfig, config: &ContainerConfig) -> Vec<String> {
        let spec = build_with(image, config, &root()).unwrap();
        let args = process(&spec).args().clone().unwrap();
        assert_eq!(args, process_args(image, config));
        args
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn caps(spec: &Spec) -> &LinuxCapabilities {
        process(spec).capabilities().as_ref().unwrap()
    }

    fn bounding(spec: &Spec) -> Capabilities {
        let c = caps(spec);
        let bounding = c.bounding().clone().unwrap();
        assert_eq!(c.effective().as_ref(), Some(&bounding));
        assert_eq!(c.permitted().as_ref(), Some(&bounding));
        assert_eq!(c.inheritable(), &None);
        assert_eq!(c.ambient(), &None);
        bounding
    }

    fn mount_at<'s>(spec: &'s Spec, destination: &str) -> Vec<&'s Mount> {
        spec.mounts().as_ref().unwrap().iter().filter(|m| m.destination() == Path::new(destination)).collect()
    }

    fn options(m: &Mount) -> Vec<String> {
        m.options().clone().unwrap_or_default()
    }

    fn linux(spec: &Spec) -> &oci_spec::runtime::Linux {
        spec.linux().as_ref().unwrap()
    }

    fn namespaces(spec: &Spec) -> Vec<LinuxNamespaceType> {
        linux(spec).namespaces().as_ref().unwrap().iter().map(|n| n.typ()).collect()
    }

    #[test]
    fn image_config_fields() {
        let json = br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin","A=b"],"Cmd":["sh"],
            "Entrypoint":["/init"],"WorkingDir":"/srv","User":"app:app","StopSignal":"SIGQUIT",
            "Labels":{"b":"2","a":"1"},"ExposedPorts":{"80/tcp":{}}},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let c = image_runtime_config(json).unwrap();
        assert_eq!(c.env, strings(&["PATH=/bin", "A=b"]));
        assert_eq!(c.cmd, strings(&["sh"]));
        assert_eq!(c.entrypoint, strings(&["/init"]));
        assert_eq!(c.working_dir, "/srv");
        assert_eq!(c.user, "app:app");
        assert_eq!(c.stop_signal, "SIGQUIT");
        assert_eq!(c.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>(), vec![("a", "1"), ("b", "2")]);
    }

    #[test]
    fn image_config_missing_or_null() {
        assert_eq!(image_runtime_config(br#"{"architecture":"amd64"}"#).unwrap(), ImageRuntimeConfig::default());
        assert_eq!(image_runtime_config(br#"{"config":null}"#).unwrap(), ImageRuntimeConfig::default());
        let c = image_runtime_config(br#"{"config":{"Env":null,"Cmd":null,"Entrypoint":null,"Labels":null,"WorkingDir":null}}"#).unwrap();
        assert_eq!(c, ImageRuntimeConfig::default());
        assert!(matches!(image_runtime_config(b"not json"), Err(SpecError::ImageConfig(_))));
        assert!(matches!(image_runtime_config(br#"{"config":{"Cmd":"sh"}}"#), Err(SpecError::ImageConfig(_))));
    }

    #[test]
    fn defaults() {
        let spec = spec_for(&ContainerConfig::default());
        assert_eq!(spec.version(), "1.0.2");
        let rootfs = spec.root().as_ref().unwrap();
        assert_eq!(rootfs.path(), Path::new("rootfs"));
        assert_eq!(rootfs.readonly(), Some(false));
        assert_eq!(spec.hostname().as_deref(), Some("0123456789ab"));
        assert_eq!(spec.annotations(), &None);
        let p = process(&spec);
        assert_eq!(p.terminal(), Some(false));
        assert_eq!(p.cwd(), Path::new("/app"));
        assert_eq!(p.no_new_privileges(), Some(true));
        assert_eq!(p.oom_score_adj(), None);
        assert_eq!((p.user().uid(), p.user().gid(), p.user().additional_gids()), (0, 0, &None));
        let l = linux(&spec);
        assert_eq!(l.cgroups_path().as_deref(), Some(Path::new("/berth/default/c1")));
        assert_eq!(l.devices(), &None);
        // The default seccomp profile, with the default capabilities' rules.
        let seccomp = l.seccomp().as_ref().expect("a seccomp profile by default");
        assert_eq!(seccomp.default_errno_ret(), Some(1));
        let rules = seccomp.syscalls().as_ref().unwrap();
        assert!(rules.iter().any(|r| r.names().contains(&"chroot".to_owned())), "CAP_SYS_CHROOT's rule");
        assert!(!rules.iter().any(|r| r.names().contains(&"mount".to_owned())), "CAP_SYS_ADMIN's rule");
        assert_eq!(l.masked_paths().as_ref().unwrap(), &strings(&MASKED_PATHS));
        assert_eq!(l.readonly_paths().as_ref().unwrap(), &strings(&READONLY_PATHS));
        let r = l.resources().as_ref().unwrap();
        assert_eq!((r.memory(), r.cpu(), r.pids()), (&None, &None, &None));
        // An empty cgroups path is left to the runtime.
        let spec = build(&SpecInput {
            id: "short",
            image: &image(),
            config: &ContainerConfig::default(),
            user: &root(),
            cgroups_path: "",
            init: None,
        })
        .unwrap();
        assert_eq!(linux(&spec).cgroups_path(), &None);
        assert_eq!(spec.hostname().as_deref(), Some("short"));
    }

    #[test]
    fn hostname_override_and_validation() {
        let config = ContainerConfig { hostname: Some("web-1.example".into()), ..Default::default() };
        let spec = spec_for(&config);
        assert_eq!(spec.hostname().as_deref(), Some("web-1.example"));
        assert_eq!(env_value(&spec, "HOSTNAME").as_deref(), Some("web-1.example"));
        for bad in ["", "a b", "x/y", &"h".repeat(65)] {
            let config = ContainerConfig { hostname: Some(bad.to_string()), ..Default::default() };
            assert!(matches!(validate(&config), Err(SpecError::InvalidHostname(_))), "{bad:?}");
        }
    }

    #[test]
    fn env_merge() {
        let config = ContainerConfig { env: strings(&["FOO=override", "NEW=1", "LANG=en_US.UTF-8"]), ..Default::default() };
        let spec = spec_for(&config);
        let env = env_of(&spec);
        // The image's PATH is kept; overrides replace in place; new keys are appended.
        assert_eq!(&env[..4], &strings(&["PATH=/opt/bin:/bin", "LANG=en_US.UTF-8", "FOO=override", "NEW=1"]));
        assert_eq!(env_value(&spec, "HOSTNAME").as_deref(), Some("0123456789ab"));
        assert_eq!(env_value(&spec, "HOME").as_deref(), Some("/root"));
        assert_eq!(env_value(&spec, "TERM"), None);
        assert_eq!(env.len(), 6, "{env:?}");
    }

    #[test]
    fn env_defaults() {
        let mut img = image();
        img.env.clear();
        let app = ResolvedUser { uid: 1000, gid: 1000, additional_gids: vec![], home: Some("/home/app".into()), name: Some("app".into()) };
        let config = ContainerConfig { tty: true, ..Default::default() };
        let spec = build_with(&img, &config, &app).unwrap();
        assert_eq!(env_value(&spec, "PATH").as_deref(), Some(DEFAULT_PATH));
        assert_eq!(env_value(&spec, "HOME").as_deref(), Some("/home/app"));
        assert_eq!(env_value(&spec, "TERM").as_deref(), Some("xterm"));
        assert_eq!(process(&spec).terminal(), Some(true));
        // A user without a home: "/" unless root.
        let nobody = ResolvedUser { uid: 65534, gid: 65534, additional_gids: vec![], home: None, name: None };
        let spec = build_with(&img, &ContainerConfig::default(), &nobody).unwrap();
        assert_eq!(env_value(&spec, "HOME").as_deref(), Some("/"));
        // Values already set win over the defaults.
        let config =
            ContainerConfig { tty: true, env: strings(&["HOME=/data", "TERM=dumb", "HOSTNAME=mine", "PATH=/x"]), ..Default::default() };
        let spec = build_with(&img, &config, &nobody).unwrap();
        assert_eq!(env_of(&spec), strings(&["HOME=/data", "TERM=dumb", "HOSTNAME=mine", "PATH=/x"]));
    }

    #[test]
    fn env_validation() {
        for bad in ["NOEQUALS", "=value", "A=b\0c"] {
            let config = ContainerConfig { env: vec![bad.to_string()], ..Default::default() };
            assert!(matches!(validate(&config), Err(SpecError::InvalidEnv(_))), "{bad:?}");
        }
        let config = ContainerConfig { env: strings(&["EMPTY=", "A=b=c"]), ..Default::default() };
        validate(&config).unwrap();
    }

    #[test]
    fn user_ids() {
        let user = ResolvedUser { uid: 1000, gid: 100, additional_gids: vec![10, 29], home: None, name: Some("app".into()) };
        let spec = build_with(&image(), &ContainerConfig::default(), &user).unwrap();
        let u = process(&spec).user();
        assert_eq!((u.uid(), u.gid(), u.additional_gids().clone()), (1000, 100, Some(vec![10, 29])));
    }

    #[test]
    fn entrypoint_and_cmd() {
        let mut img = image();
        img.entrypoint = strings(&["/entry", "--flag"]);
        // Neither override: image entrypoint + image cmd.
        assert_eq!(args_for(&img, &ContainerConfig::default()), strings(&["/entry", "--flag", "sh", "-c", "echo hi"]));
        // Command only: replaces cmd, keeps the entrypoint.
        let config = ContainerConfig { command: Some(strings(&["ls", "/"])), ..Default::default() };
        assert_eq!(args_for(&img, &config), strings(&["/entry", "--flag", "ls", "/"]));
        // Entrypoint only: the image's cmd is dropped.
        let config = ContainerConfig { entrypoint: Some(strings(&["/bin/echo"])), ..Default::default() };
        assert_eq!(args_for(&img, &config), strings(&["/bin/echo"]));
        // Both.
        let config =
            ContainerConfig { entrypoint: Some(strings(&["/bin/echo"])), command: Some(strings(&["a", "b"])), ..Default::default() };
        assert_eq!(args_for(&img, &config), strings(&["/bin/echo", "a", "b"]));
        // Cleared entrypoint with a command: just the command.
        for cleared in [vec![], strings(&[""])] {
            let config = ContainerConfig { entrypoint: Some(cleared), command: Some(strings(&["id"])), ..Default::default() };
            assert_eq!(args_for(&img, &config), strings(&["id"]));
        }
        // An empty command counts as not given.
        let config = ContainerConfig { command: Some(vec![]), ..Default::default() };
        assert_eq!(args_for(&img, &config), strings(&["/entry", "--flag", "sh", "-c", "echo hi"]));
    }

    #[test]
    fn no_command_is_an_error() {
        let empty = ImageRuntimeConfig::default();
        let err = build_with(&empty, &ContainerConfig::default(), &root()).unwrap_err();
        assert!(matches!(err, SpecError::NoCommand), "{err:?}");
        assert_eq!(err.to_string(), "no command: the image has no Entrypoint or Cmd and none was given");
        // Clearing the entrypoint drops the image's cmd too.
        let config = ContainerConfig { entrypoint: Some(vec![]), ..Default::default() };
        assert!(matches!(build_with(&image(), &config, &root()), Err(SpecError::NoCommand)));
        // A command is enough.
        let config = ContainerConfig { command: Some(strings(&["true"])), ..Default::default() };
        assert_eq!(args_for(&empty, &config), strings(&["true"]));
    }

    #[test]
    fn workdir() {
        let config = ContainerConfig { workdir: Some("/srv/./data/../www/".into()), ..Default::default() };
        assert_eq!(process(&spec_for(&config)).cwd(), Path::new("/srv/www"));
        let mut img = image();
        img.working_dir.clear();
        assert_eq!(process(&build_with(&img, &ContainerConfig::default(), &root()).unwrap()).cwd(), Path::new("/"));
        // An empty override means "from the image".
        let config = ContainerConfig { workdir: Some(String::new()), ..Default::default() };
        assert_eq!(process(&spec_for(&config)).cwd(), Path::new("/app"));

        let config = ContainerConfig { workdir: Some("relative/dir".into()), ..Default::default() };
        assert!(matches!(validate(&config), Err(SpecError::RelativeWorkdir(ref d)) if d == "relative/dir"));
        assert!(matches!(build_with(&image(), &config, &root()), Err(SpecError::RelativeWorkdir(_))));
        img.working_dir = "app".into();
        assert!(matches!(build_with(&img, &ContainerConfig::default(), &root()), Err(SpecError::RelativeWorkdir(_))));
    }

    #[test]
    fn read_only_root() {
        let config = ContainerConfig { read_only: true, ..Default::default() };
        assert_eq!(spec_for(&config).root().as_ref().unwrap().readonly(), Some(true));
    }

    #[test]
    fn default_capabilities() {
        let spec = spec_for(&ContainerConfig::default());
        let set = bounding(&spec);
        assert_eq!(set, DEFAULT_CAPABILITIES.into_iter().collect::<Capabilities>());
        assert_eq!(set.len(), 14);
        assert!(set.contains(&Capability::NetBindService));
        assert!(!set.contains(&Capability::SysAdmin));
        assert!(!set.contains(&Capability::NetAdmin));
    }

    #[test]
    fn capabilities_add_and_drop() {
        let config = ContainerConfig {
            cap_add: strings(&["net_admin", "CAP_SYS_PTRACE"]),
            cap_drop: strings(&["cap_chown", "MKNOD"]),
            ..Default::default()
        };
        let set = bounding(&spec_for(&config));
        assert!(set.contains(&Capability::NetAdmin) && set.contains(&Capability::SysPtrace));
        assert!(!set.contains(&Capability::Chown) && !set.contains(&Capability::Mknod));
        assert_eq!(set.len(), 14);
        // Adding wins over dropping.
        let config = ContainerConfig { cap_add: strings(&["KILL"]), cap_drop: strings(&["KILL"]), ..Default::default() };
        assert!(bounding(&spec_for(&config)).contains(&Capability::Kill));
    }

    #[test]
    fn capabilities_all() {
        let config = ContainerConfig { cap_drop: strings(&["ALL"]), cap_add: strings(&["NET_BIND_SERVICE"]), ..Default::default() };
        assert_eq!(bounding(&spec_for(&config)), [Capability::NetBindService].into_iter().collect::<Capabilities>());
        let config = ContainerConfig { cap_drop: strings(&["all"]), ..Default::default() };
        assert!(bounding(&spec_for(&config)).is_empty());
        let config = ContainerConfig { cap_add: strings(&["ALL"]), cap_drop: strings(&["SYS_ADMIN"]), ..Default::default() };
        let set = bounding(&spec_for(&config));
        assert_eq!(set.len(), agent_caps().len() - 1);
        assert!(!set.contains(&Capability::SysAdmin));
        assert!(set.contains(&Capability::SysModule));
    }

    /// The capabilities this test process holds in its bounding set.
    fn agent_caps() -> Capabilities {
        ALL_CAPABILITIES.iter().filter(|(_, _, bit)| agent_holds(*bit)).map(|(_, c, _)| *c).collect()
    }

    #[test]
    fn capabilities_limited_to_the_agents() {
        // An agent without CAP_SYS_RESOURCE (24) and CAP_NET_RAW (13).
        let held = |bit: u32| bit != 24 && bit != 13;
        let privileged = ContainerConfig { privileged: true, ..Default::default() };
        let set = capability_set(&privileged, held).unwrap();
        assert_eq!(set.len(), ALL_CAPABILITIES.len() - 2);
        assert!(!set.contains(&Capability::SysResource) && !set.contains(&Capability::NetRaw));
        assert!(set.contains(&Capability::SysAdmin));
        let all = ContainerConfig { cap_add: strings(&["ALL"]), ..Default::default() };
        assert_eq!(capability_set(&all, held).unwrap(), set);
        // Defaults the agent lacks are left out.
        let set = capability_set(&ContainerConfig::default(), held).unwrap();
        assert_eq!(set.len(), 13);
        assert!(!set.contains(&Capability::NetRaw));
        // Asking for one by name is an error.
        let config = ContainerConfig { cap_add: strings(&["sys_resource", "NET_ADMIN"]), ..Default::default() };
        let err = capability_set(&config, held).unwrap_err();
        assert_eq!(err.to_string(), "capability not available to the agent (not in its bounding set): CAP_SYS_RESOURCE");
        // With everything held, all 41 are there.
        assert_eq!(capability_set(&privileged, |_| true).unwrap().len(), 41);
    }

    #[test]
    fn unknown_capabilities() {
        let config = ContainerConfig { cap_add: strings(&["NET_ADMIN", "CAP_FLY"]), ..Default::default() };
        let err = validate(&config).unwrap_err();
        assert!(matches!(err, SpecError::UnknownCapabilities(ref names) if names == &strings(&["CAP_FLY"])), "{err:?}");
        assert_eq!(err.to_string(), "unknown capability: CAP_FLY");
        let config = ContainerConfig { cap_drop: strings(&["bogus", "CAP_ALL"]), privileged: true, ..Default::default() };
        let err = build_with(&image(), &config, &root()).unwrap_err();
        assert_eq!(err.to_string(), "unknown capabilities: bogus, CAP_ALL");
    }

    #[test]
    fn capability_table_matches_oci_spec() {
        // Each name in our table is the one oci-spec serializes, so no capability is misnamed or missing.
        let mut seen = HashSet::new();
        for (name, cap, bit) in ALL_CAPABILITIES {
            assert_eq!(serde_json::to_value(cap).unwrap(), serde_json::json!(format!("CAP_{name}")));
            assert_eq!(rustix::thread::CapabilitySet::from_name(name).map(|c| c.bits()), Some(1u64 << bit), "{name}");
            assert!(seen.insert(cap));
        }
    }

    #[test]
    fn privileged() {
        let config = ContainerConfig { privileged: true, cap_drop: strings(&["ALL"]), ..Default::default() };
        let spec = spec_for(&config);
        assert_eq!(bounding(&spec), agent_caps());
        assert!(bounding(&spec).contains(&Capability::SysAdmin));
        let l = linux(&spec);
        assert_eq!(l.masked_paths(), &None);
        assert_eq!(l.readonly_paths(), &None);
        assert_eq!(l.seccomp(), &None, "a privileged container is unconfined");
        assert_eq!(process(&spec).no_new_privileges(), Some(false));
        let devices = l.resources().as_ref().unwrap().devices().clone().unwrap();
        assert_eq!(devices.len(), 1);
        assert!(devices[0].allow());
        assert_eq!((devices[0].typ(), devices[0].major(), devices[0].access().as_deref()), (None, None, Some("rwm")));
        // /sys and the cgroup filesystem are writable, as in docker.
        assert!(!options(mount_at(&spec, "/sys")[0]).contains(&"ro".to_string()));
        assert!(!options(mount_at(&spec, "/sys/fs/cgroup")[0]).contains(&"ro".to_string()));
    }

    #[test]
    fn network_namespaces() {
        let spec = spec_for(&ContainerConfig::default());
        assert_eq!(
            namespaces(&spec),
            vec![
                LinuxNamespaceType::Pid,
                LinuxNamespaceType::Ipc,
                LinuxNamespaceType::Uts,
                LinuxNamespaceType::Mount,
                LinuxNamespaceType::Network
            ]
        );
        assert!(linux(&spec).namespaces().as_ref().unwrap().iter().all(|n| n.path().is_none()));
        let config = ContainerConfig { network: NetworkMode::Host, ..Default::default() };
        let spec = spec_for(&config);
        let ns = namespaces(&spec);
        assert!(!ns.contains(&LinuxNamespaceType::Network));
        assert!(!ns.contains(&LinuxNamespaceType::Cgroup));
        assert_eq!(ns.len(), 4);
        // /sys stays read-only with the host's network.
        assert!(options(mount_at(&spec, "/sys")[0]).contains(&"ro".to_string()));
    }

    #[test]
    fn default_mounts_in_order() {
        let spec = spec_for(&ContainerConfig::default());
        let mounts = spec.mounts().as_ref().unwrap();
        let summary: Vec<(String, String)> =
            mounts.iter().map(|m| (m.destination().to_string_lossy().into_owned(), m.typ().clone().unwrap())).collect();
        let expected = [
            ("/proc", "proc"),
            ("/dev", "tmpfs"),
            ("/dev/pts", "devpts"),
            ("/dev/shm", "tmpfs"),
            ("/dev/mqueue", "mqueue"),
            ("/sys", "sysfs"),
            ("/sys/fs/cgroup", "cgroup"),
        ];
        assert_eq!(summary, expected.iter().map(|(d, t)| (d.to_string(), t.to_string())).collect::<Vec<_>>());
        assert_eq!(options(&mounts[1]), strings(&["nosuid", "strictatime", "mode=755", "size=65536k"]));
        assert_eq!(options(&mounts[2]), strings(&["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]));
        assert_eq!(options(&mounts[3]), strings(&["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]));
        assert_eq!(options(&mounts[5]), strings(&["nosuid", "noexec", "nodev", "ro"]));
        assert_eq!(options(&mounts[6]), strings(&["nosuid", "noexec", "nodev", "relatime", "ro"]));
    }

    fn bind(source: &str, destination: &str, readonly: bool) -> MountSpec {
        MountSpec {
            kind: MountKind::Bind,
            source: source.into(),
            destination: destination.into(),
            readonly,
            options: vec![],
            no_copy: false,
        }
    }

    fn tmpfs(destination: &str, options: &[&str]) -> MountSpec {
        MountSpec {
            kind: MountKind::Tmpfs,
            source: String::new(),
            destination: destination.into(),
            readonly: false,
            options: strings(options),
            no_copy: false,
        }
    }

    #[test]
    fn user_mounts() {
        let config = ContainerConfig {
            mounts: vec![
                bind("/host/data", "/data/sub", false),
                bind("/host/conf", "/etc/app", true),
                bind("/host/root", "/data", false),
                tmpfs("/run", &["size=64m"]),
            ],
            ..Default::default()
        };
        let spec = spec_for(&config);
        let mounts = spec.mounts().as_ref().unwrap();
        assert_eq!(mounts.len(), 7 + 4);
        let destinations: Vec<_> = mounts[7..].iter().map(|m| m.destination().to_string_lossy().into_owned()).collect();
        // Parents before children; same depth in the user's order.
        assert_eq!(destinations, strings(&["/data", "/run", "/data/sub", "/etc/app"]));

        let rw = mount_at(&spec, "/data/sub")[0];
        assert_eq!((rw.typ().as_deref(), rw.source().as_deref()), (Some("bind"), Some(Path::new("/host/data"))));
        assert_eq!(options(rw), strings(&["rbind", "rprivate", "rw"]));
        let ro = mount_at(&spec, "/etc/app")[0];
        assert_eq!(options(ro), strings(&["rbind", "rprivate", "ro"]));
        let t = mount_at(&spec, "/run")[0];
        assert_eq!((t.typ().as_deref(), t.source().as_deref()), (Some("tmpfs"), Some(Path::new("tmpfs"))));
        assert_eq!(options(t), strings(&["nosuid", "nodev", "noexec", "mode=1777", "size=64m"]));
    }

    #[test]
    fn user_mount_options() {
        let mut ro_tmpfs = tmpfs("/cache", &["exec,mode=0700", "uid=1000"]);
        ro_tmpfs.readonly = true;
        let mut shared = bind("/host", "/mnt", false);
        shared.options = strings(&["rshared", "nosuid", "ro"]);
        let spec = spec_for(&ContainerConfig { mounts: vec![ro_tmpfs, shared], ..Default::default() });
        assert_eq!(options(mount_at(&spec, "/cache")[0]), strings(&["nosuid", "nodev", "exec", "mode=0700", "uid=1000", "ro"]));
        assert_eq!(options(mount_at(&spec, "/mnt")[0]), strings(&["rbind", "rshared", "nosuid", "ro"]));
    }

    #[test]
    fn user_mount_replaces_default() {
        let config = ContainerConfig { mounts: vec![tmpfs("/dev/shm/", &["size=1g"])], ..Default::default() };
        let spec = spec_for(&config);
        let shm = mount_at(&spec, "/dev/shm");
        assert_eq!(shm.len(), 1);
        assert_eq!(options(shm[0]), strings(&["nosuid", "nodev", "noexec", "mode=1777", "size=1g"]));
        assert_eq!(spec.mounts().as_ref().unwrap().len(), 7);
        // A /dev of the user's replaces the default /dev/* mounts too.
        let config = ContainerConfig { mounts: vec![bind("/host/dev", "/dev", false)], ..Default::default() };
        let spec = spec_for(&config);
        let destinations: Vec<_> = spec.mounts().as_ref().unwrap().iter().map(|m| m.destination().to_string_lossy().into_owned()).collect();
        assert_eq!(destinations, strings(&["/proc", "/sys", "/sys/fs/cgroup", "/dev"]));
    }

    #[test]
    fn a_pods_shm_is_bound_in_place_of_a_tmpfs_unless_the_user_mounts_one() {
        let config = ContainerConfig { shm_source: Some("/run/berth/pods/p/shm".into()), ..Default::default() };
        let spec = spec_for(&config);
        let shm = mount_at(&spec, "/dev/shm");
        assert_eq!(shm.len(), 1);
        assert_eq!(shm[0].typ().as_deref(), Some("bind"));
        assert_eq!(shm[0].source().as_deref(), Some(std::path::Path::new("/run/berth/pods/p/shm")));
        assert_eq!(options(shm[0]), strings(&["rbind", "rprivate", "nosuid", "noexec", "nodev"]));
        let config = ContainerConfig { mounts: vec![tmpfs("/dev/shm", &[])], ..config };
        let spec = spec_for(&config);
        let shm = mount_at(&spec, "/dev/shm");
        assert_eq!((shm.len(), shm[0].typ().as_deref()), (1, Some("tmpfs")));
    }

    #[test]
    fn invalid_mounts() {
        let cases = [
            (bind("/host", "relative", false), "absolute"),
            (bind("/host", "/data/../etc", false), "\"..\""),
            (tmpfs("/", &[]), "\"/\""),
            (bind("host", "/data", false), "source"),
            (bind("", "/data", false), "source"),
        ];
        for (m, needle) in cases {
            let config = ContainerConfig { mounts: vec![m.clone()], ..Default::default() };
            let err = validate(&config).unwrap_err();
            assert!(err.to_string().contains(needle), "{m:?}: {err}");
            assert!(build_with(&image(), &config, &root()).is_err());
        }
        let config = ContainerConfig { mounts: vec![tmpfs("/a", &[]), bind("/h", "/a/", true)], ..Default::default() };
        assert!(matches!(validate(&config), Err(SpecError::DuplicateMount(ref d)) if d == "/a"));
        // A tmpfs needs no source.
        validate(&ContainerConfig { mounts: vec![tmpfs("/tmp", &[])], ..Default::default() }).unwrap();
    }

    #[test]
    fn resources() {
        let config = ContainerConfig {
            resources: Resources { memory_bytes: Some(256 << 20), cpu_millis: Some(1500), pids_limit: Some(100), ..Default::default() },
            ..Default::default()
        };
        let spec = spec_for(&config);
        let r = linux(&spec).resources().as_ref().unwrap();
        let memory = r.memory().as_ref().unwrap();
        assert_eq!((memory.limit(), memory.swap()), (Some(256 << 20), Some(512 << 20)));
        let cpu = r.cpu().as_ref().unwrap();
        assert_eq!((cpu.period(), cpu.quota()), (Some(100_000), Some(150_000)));
        assert_eq!(r.pids().as_ref().unwrap().limit(), 100);
        // 0 or negative pids limit: unlimited.
        let config = ContainerConfig { resources: Resources { pids_limit: Some(-1), ..Default::default() }, ..Default::default() };
        assert_eq!(linux(&spec_for(&config)).resources().as_ref().unwrap().pids(), &None);
    }

    #[test]
    fn invalid_resources() {
        for resources in [
            Resources { memory_bytes: Some(1024), ..Default::default() },
            Resources { memory_bytes: Some(i64::MAX), ..Default::default() },
            Resources { cpu_millis: Some(0), ..Default::default() },
            Resources { cpu_millis: Some(u64::MAX), ..Default::default() },
        ] {
            let config = ContainerConfig { resources: resources.clone(), ..Default::default() };
            assert!(matches!(validate(&config), Err(SpecError::InvalidResources(_))), "{resources:?}");
        }
        let config = ContainerConfig { resources: Resources { cpu_millis: Some(10), ..Default::default() }, ..Default::default() };
        let spec = spec_for(&config);
        assert_eq!(linux(&spec).resources().as_ref().unwrap().cpu().as_ref().unwrap().quota(), Some(1000));
        for resources in [
            Resources { cpu_shares: Some(1), ..Default::default() },
            Resources { cpuset_cpus: Some("0-".into()), ..Default::default() },
            Resources { cpuset_mems: Some("a".into()), ..Default::default() },
        ] {
            let config = ContainerConfig { resources: resources.clone(), ..Default::default() };
            assert!(matches!(build_with(&image(), &config, &root()), Err(SpecError::InvalidResources(_))), "{resources:?}");
        }
    }

    #[test]
    fn cpu_shares_and_sets_join_the_quota() {
        let resources = Resources {
            cpu_millis: Some(500),
            cpu_shares: Some(512),
            cpuset_cpus: Some("0-1,3".into()),
            cpuset_mems: Some("0".into()),
            ..Default::default()
        };
        let spec = spec_for(&ContainerConfig { resources, ..Default::default() });
        let cpu = linux(&spec).resources().as_ref().unwrap().cpu().clone().unwrap();
        assert_eq!(
            (cpu.quota(), cpu.shares(), cpu.cpus().as_deref(), cpu.mems().as_deref()),
            (Some(50_000), Some(512), Some("0-1,3"), Some("0"))
        );
    }

    #[test]
    fn a_swap_limit_equal_to_the_memory_means_no_swap() {
        let resources = Resources { memory_bytes: Some(64 << 20), memory_swap_bytes: Some(64 << 20), ..Default::default() };
        let spec = spec_for(&ContainerConfig { resources, ..Default::default() });
        let memory = linux(&spec).resources().as_ref().unwrap().memory().unwrap();
        assert_eq!((memory.limit(), memory.swap()), (Some(64 << 20), Some(64 << 20)));
        let resources = Resources { memory_bytes: Some(64 << 20), memory_swap_bytes: Some(1 << 20), ..Default::default() };
        assert!(build_with(&image(), &ContainerConfig { resources, ..Default::default() }, &root()).is_err());
    }

    #[test]
    fn the_kubelet_s_masked_and_read_only_paths_replace_docker_s() {
        let config = ContainerConfig { masked_paths: Some(vec!["/proc/kcore".into()]), readonly_paths: Some(vec![]), ..Default::default() };
        let spec = spec_for(&config);
        let l = linux(&spec);
        assert_eq!(l.masked_paths().as_deref(), Some(&["/proc/kcore".to_owned()][..]));
        assert_eq!(l.readonly_paths().as_deref(), Some(&[][..]));
    }

    #[test]
    fn devices_default_deny() {
        let spec = spec_for(&ContainerConfig::default());
        let devices = linux(&spec).resources().as_ref().unwrap().devices().clone().unwrap();
        let rules: Vec<String> = devices
            .iter()
            .map(|d| {
                let t = d.typ().map_or_else(|| "a".to_string(), |t| t.as_str().to_string());
                let major = d.major().map_or("*".to_string(), |m| m.to_string());
                let minor = d.minor().map_or("*".to_string(), |m| m.to_string());
                format!("{} {t} {major}:{minor} {}", d.allow(), d.access().clone().unwrap())
            })
            .collect();
        assert_eq!(rules[0], "false a *:* rwm");
        for rule in [
            "true c *:* m",
            "true b *:* m",
            "true c 1:3 rwm",
            "true c 1:5 rwm",
            "true c 1:7 rwm",
            "true c 1:8 rwm",
            "true c 1:9 rwm",
            "true c 5:0 rwm",
            "true c 5:1 rwm",
            "true c 5:2 rwm",
            "true c 136:* rwm",
        ] {
            assert!(rules.contains(&rule.to_string()), "{rule} missing from {rules:?}");
        }
        assert_eq!(rules.len(), 12);
    }

    #[test]
    fn nofile_limit_never_exceeds_the_callers() {
        assert_eq!(nofile_limits(u64::MAX), (1024, 1_048_576));
        assert_eq!(nofile_limits(20_000), (1024, 20_000));
        assert_eq!(nofile_limits(512), (512, 512));
        let spec = spec_for(&ContainerConfig::default());
        let rlimits = process(&spec).rlimits().clone().unwrap();
        assert_eq!(rlimits.len(), 1);
        assert_eq!(rlimits[0].typ(), PosixRlimitType::RlimitNofile);
        let caller = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum.unwrap_or(u64::MAX);
        assert!(rlimits[0].hard() <= caller && rlimits[0].soft() <= rlimits[0].hard());
        assert_eq!(rlimits[0].hard(), caller.min(1_048_576));
    }

    #[test]
    fn signals() {
        for (s, n) in [
            ("TERM", 15),
            ("SIGTERM", 15),
            ("sigterm", 15),
            ("15", 15),
            ("KILL", 9),
            ("SIGQUIT", 3),
            ("usr1", 10),
            ("SIGWINCH", 28),
            ("SIGRTMIN", 34),
            ("SIGRTMIN+3", 37),
            ("RTMAX", 64),
            ("SIGRTMAX-2", 62),
            ("64", 64),
            ("1", 1),
        ] {
            assert_eq!(parse_signal(s).unwrap(), n, "{s}");
        }
        assert_eq!(parse_signal(" TERM ").unwrap(), 15);
        for bad in
            ["", "0", "65", "-9", "SIGFOO", "SIG", "RTMIN+31", "RTMAX-31", "RTMIN+", "RTMIN3", "RTMAX+1", "RTMIN-1", "99999999999", "TERM2"]
        {
            assert!(matches!(parse_signal(bad), Err(SpecError::InvalidSignal(_))), "{bad:?}");
        }
        assert_eq!(parse_signal("SIGFOO").unwrap_err().to_string(), "invalid signal \"SIGFOO\"");
    }

    #[test]
    fn serialization_round_trip() {
        let config = ContainerConfig {
            tty: true,
            cap_add: strings(&["NET_ADMIN"]),
            mounts: vec![bind("/host", "/data", true)],
            resources: Resources { memory_bytes: Some(64 << 20), cpu_millis: Some(500), pids_limit: Some(10), ..Default::default() },
            ..Default::default()
        };
        let user = ResolvedUser { uid: 1000, gid: 1000, additional_gids: vec![27], home: None, name: Some("app".into()) };
        let spec = build_with(&image(), &config, &user).unwrap();
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.contains("\"ociVersion\":\"1.0.2\""), "{json}");
        assert!(json.contains("\"CAP_NET_ADMIN\""));
        assert!(json.contains("\"additionalGids\":[27]"));
        assert!(json.contains("\"cgroupsPath\":\"/berth/default/c1\""));
        assert!(json.contains("\"RLIMIT_NOFILE\""));
        // Nothing leaks from oci-spec's sample defaults.
        for absent in ["youki", "annotations", "inheritable", "ambient", "oomScoreAdj"] {
            assert!(!json.contains(absent), "{absent} in {json}");
        }
        let back: Spec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["process"]["args"], serde_json::json!(["sh", "-c", "echo hi"]));
        assert_eq!(value["root"], serde_json::json!({"path": "rootfs", "readonly": false}));
    }

    fn exec_env(config: &ContainerConfig, exec: &ExecSpec, user: Option<&ResolvedUser>) -> Vec<String> {
        let init = spec_for(config);
        let p = exec_process(process(&init), init.hostname().as_deref().unwrap(), &image(), config, exec, user).unwrap();
        p.env().clone().unwrap()
    }

    fn value(env: &[String], key: &str) -> Option<String> {
        env.iter().find(|e| env_key(e) == key).map(|e| e.split_once('=').unwrap().1.to_owned())
    }

    #[test]
    fn an_exec_as_another_user_gets_that_users_home() {
        let alice = ResolvedUser { uid: 1000, gid: 1000, additional_gids: vec![5], home: Some("/home/alice".into()), name: None };
        let exec = ExecSpec { args: strings(&["id"]), ..Default::default() };
        let env = exec_env(&ContainerConfig::default(), &exec, Some(&alice));
        assert_eq!(value(&env, "HOME").as_deref(), Some("/home/alice"));
        // Without a user, the init's HOME stays.
        let env = exec_env(&ContainerConfig::default(), &exec, None);
        assert_eq!(value(&env, "HOME").as_deref(), Some("/root"));
    }

    #[test]
    fn an_exec_env_is_merged_like_the_inits() {
        let config = ContainerConfig { env: strings(&["FOO=run", "BAR=1"]), tty: true, ..Default::default() };
        let exec = ExecSpec { args: strings(&["sh"]), env: strings(&["BAR=2", "NEW=x"]), ..Default::default() };
        let env = exec_env(&config, &exec, None);
        assert_eq!(value(&env, "FOO").as_deref(), Some("run"));
        assert_eq!(value(&env, "BAR").as_deref(), Some("2"));
        assert_eq!(value(&env, "NEW").as_deref(), Some("x"));
        assert_eq!(value(&env, "PATH").as_deref(), Some("/opt/bin:/bin"));
        assert_eq!(value(&env, "HOSTNAME").as_deref(), Some(&ID[..12]));
        // TERM follows the exec's terminal, not the container's.
        assert_eq!(value(&env, "TERM"), None);
        let tty = ExecSpec { tty: true, ..exec };
        assert_eq!(value(&exec_env(&config, &tty, None), "TERM").as_deref(), Some("xterm"));
        assert_eq!(env.iter().filter(|e| env_key(e) == "BAR").count(), 1);
    }

    #[test]
    fn an_exec_keeps_the_inits_privileges_and_takes_its_own_command() {
        let init = spec_for(&ContainerConfig::default());
        let alice = ResolvedUser { uid: 1000, gid: 1000, additional_gids: vec![5], home: None, name: None };
        let exec = ExecSpec { args: strings(&["ls", "/"]), workdir: "/tmp".into(), tty: true, ..Default::default() };
        let p = exec_process(process(&init), "h", &image(), &ContainerConfig::default(), &exec, Some(&alice)).unwrap();
        assert_eq!(p.args().clone().unwrap(), strings(&["ls", "/"]));
        assert_eq!(p.cwd(), Path::new("/tmp"));
        assert_eq!(p.terminal(), Some(true));
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 1000));
        assert_eq!(p.user().additional_gids().clone().unwrap(), vec![5]);
        assert_eq!(p.capabilities(), process(&init).capabilities());
        let bad = |e: ExecSpec| exec_process(process(&init), "h", &image(), &ContainerConfig::default(), &e, None).is_err();
        assert!(bad(ExecSpec::default()));
        assert!(bad(ExecSpec { args: strings(&["x"]), workdir: "rel".into(), ..Default::default() }));
        assert!(bad(ExecSpec { args: strings(&["x"]), env: strings(&["=v"]), ..Default::default() }));
        assert!(bad(ExecSpec { args: strings(&["x"]), env: strings(&["NOEQ"]), ..Default::default() }));
    }

    #[test]
    fn a_stored_spec_reads_back_unchanged() {
        // Container records store the spec as JSON and read it back typed:
        // nothing may be lost or filled in on the way (oci-spec's defaults).
        let config = ContainerConfig {
            env: strings(&["A=1"]),
            tty: true,
            read_only: true,
            cap_add: strings(&["NET_ADMIN"]),
            resources: Resources { memory_bytes: Some(64 << 20), cpu_millis: Some(500), pids_limit: Some(50), ..Default::default() },
            ..Default::default()
        };
        let spec = spec_for(&config);
        // (Capabilities are sets: compare typed, not as bytes.)
        let json = serde_json::to_vec(&spec).unwrap();
        let back: Spec = serde_json::from_slice(&json).unwrap();
        assert!(back == spec, "the spec changed on the way back");
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert!(value.pointer("/annotations").is_none() && value.pointer("/hooks").is_none());
        assert!(serde_json::to_value(&back).unwrap().pointer("/annotations").is_none());
    }

    #[test]
    fn init_runs_the_command_as_its_child_from_a_read_only_bind() {
        let config = ContainerConfig { command: Some(vec!["sh".into(), "-c".into(), "x".into()]), init: true, ..Default::default() };
        let spec = spec_for(&config);
        assert_eq!(process(&spec).args().clone().unwrap(), ["/sbin/berth-init", "--", "sh", "-c", "x"]);
        let m = mount_at(&spec, "/sbin/berth-init");
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].source().as_deref(), Some(Path::new("/var/lib/berth/bin/berth-init")));
        assert!(options(m[0]).contains(&"ro".to_owned()), "{:?}", options(m[0]));
        // Without it, nothing of it.
        let plain = spec_for(&ContainerConfig { init: false, ..config.clone() });
        assert!(mount_at(&plain, "/sbin/berth-init").is_empty());
        // An agent without the binary refuses rather than run something else.
        let none = build(&SpecInput { id: ID, image: &image(), config: &config, user: &root(), cgroups_path: "", init: None });
        assert!(matches!(none, Err(SpecError::NoInit)));
    }

    #[test]
    fn a_privileged_container_gets_the_host_s_devices_and_no_other_does() {
        let privileged = spec_for(&ContainerConfig { privileged: true, ..Default::default() });
        let devices = privileged.linux().as_ref().unwrap().devices().clone().unwrap_or_default();
        let null = devices.iter().find(|d| d.path() == Path::new("/dev/null")).expect("/dev/null");
        assert_eq!((null.typ(), null.major(), null.minor()), (LinuxDeviceType::C, 1, 3));
        assert!(devices.iter().all(|d| !d.path().starts_with("/dev/pts") && d.path() != Path::new("/dev/console")));
        assert!(spec_for(&ContainerConfig::default()).linux().as_ref().unwrap().devices().is_none());
    }
}
