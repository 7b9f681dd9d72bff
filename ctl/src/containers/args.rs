//! The clap arguments of the container commands: what `--help` shows.

use clap::{Args, Subcommand, ValueEnum};

/// When `run` and `create` pull their image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PullPolicy {
    /// When the image is not in the store
    Missing,
    /// Every time, for the newest image of the name
    Always,
    /// Never: an image not in the store is an error
    Never,
}

#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Create a container and run its command
    Run(RunArgs),
    /// Create a container without starting it
    #[command(mut_arg("detach", |a| a.hide(true)))]
    Create(RunArgs),
    /// Start created or stopped containers
    Start(StartArgs),
    /// Stop running containers (the stop signal, then SIGKILL)
    Stop(StopArgs),
    /// Stop containers, then start them again
    Restart(StopArgs),
    /// Change containers' settings for their next runs (--restart)
    Update(UpdateArgs),
    /// Give a container another name
    Rename(RenameArgs),
    /// Remove every container that is not running (created, exited)
    Prune(PruneArgs),
    /// Send a signal to the main process of containers
    Kill(KillArgs),
    /// Remove containers and their writable layers
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Wait for containers to exit and print their exit codes
    Wait(IdsArgs),
    /// Show a container's output
    Logs(LogsArgs),
    /// Run a command in a running container
    Exec(ExecArgs),
    /// Freeze all processes of containers
    Pause(IdsArgs),
    /// Thaw paused containers
    Unpause(IdsArgs),
    /// List containers
    #[command(alias = "list", alias = "ps")]
    Ls(PsArgs),
    /// Show containers as JSON (docker's shape, and the runtime spec), or through -f TEMPLATE
    Inspect(InspectArgs),
    /// Show CPU, memory and process counts of running containers
    Stats(StatsArgs),
    /// Store a container's changes as a new image
    Commit(CommitArgs),
    /// List files changed in a container (A added, C changed, D deleted)
    Diff(IdArg),
    /// List the processes of a container
    Top(IdArg),
    /// Attach to the main process of a running container
    Attach(AttachArgs),
    /// Copy files between a container (running or not) and this machine
    Cp(super::CpArgs),
}

#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    /// Run in the background and print the container id
    #[arg(short, long)]
    pub detach: bool,
    /// Keys that detach from the container, leaving it running (with -it):
    /// a character or ctrl-X each, comma-separated [default: ctrl-p,ctrl-q]
    #[arg(long, value_name = "KEYS")]
    pub detach_keys: Option<String>,
    /// Keep standard input open and send it to the container
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the container a terminal
    #[arg(short, long)]
    pub tty: bool,
    /// Name of the container [default: generated]
    #[arg(long)]
    pub name: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to pass this shell's value)
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines)
    #[arg(long)]
    pub env_file: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// User: UID[:GID] or NAME[:GROUP] from the image's /etc/passwd
    #[arg(short, long)]
    pub user: Option<String>,
    /// Replace the image's entrypoint ("" clears it)
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Mount a volume or a host path: NAME:DST[:ro|nocopy] (a volume, made when
    /// missing and then filled with the image's files at DST), /HOST:DST[:ro],
    /// ./RELATIVE:DST (from this directory), or DST alone (a new anonymous volume)
    #[arg(short, long = "volume")]
    pub volume: Vec<String>,
    /// Mount, in docker's syntax: type=volume|bind|tmpfs,source=NAME|PATH,target=DST
    /// [,readonly][,volume-nocopy][,bind-propagation=P][,tmpfs-size=BYTES][,tmpfs-mode=MODE]
    #[arg(long)]
    pub mount: Vec<String>,
    /// Mount a tmpfs: DST[:OPTIONS]
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Memory limit (e.g. 512m, 1g)
    #[arg(short, long)]
    pub memory: Option<String>,
    /// CPU limit in CPUs (e.g. 1.5)
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Maximum number of processes
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// Network to join (repeatable): a network's name, or none (only lo),
    /// host, or container:NAME (share another container's) [default: bridge]
    #[arg(long = "net", alias = "network", value_name = "NETWORK")]
    pub net: Vec<String>,
    /// Another name the container has on its (first) network (repeatable)
    #[arg(long = "network-alias", alias = "net-alias", value_name = "ALIAS")]
    pub network_alias: Vec<String>,
    /// Fixed IPv4 address on the (first) network
    #[arg(long)]
    pub ip: Option<String>,
    /// Publish a port: [IP:]HOST:CONTAINER[/tcp|udp], or CONTAINER[/PROTO]
    /// for a free host port (see `berthctl port`) (repeatable)
    #[arg(short = 'p', long = "publish", value_name = "PORTS")]
    pub publish: Vec<String>,
    /// Publish every port the image exposes, each on a free host port
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Nameserver for /etc/resolv.conf (repeatable)
    #[arg(long)]
    pub dns: Vec<String>,
    /// Search domain for /etc/resolv.conf (repeatable)
    #[arg(long)]
    pub dns_search: Vec<String>,
    /// Resolver option for /etc/resolv.conf (repeatable)
    #[arg(long = "dns-option", alias = "dns-opt")]
    pub dns_option: Vec<String>,
    /// Add a line to /etc/hosts: NAME:IP (repeatable)
    #[arg(long = "add-host", value_name = "NAME:IP")]
    pub add_host: Vec<String>,
    /// Host name inside the container [default: first 12 characters of the id]
    #[arg(long, short = 'h', short_alias = 'H')]
    pub hostname: Option<String>,
    /// Print help
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Label to set (KEY=VALUE, repeatable)
    #[arg(short, long = "label")]
    pub label: Vec<String>,
    /// Mount the root filesystem read-only
    #[arg(long)]
    pub read_only: bool,
    /// Give the container all capabilities and devices
    #[arg(long)]
    pub privileged: bool,
    /// Add a capability (e.g. NET_ADMIN, or ALL)
    #[arg(long)]
    pub cap_add: Vec<String>,
    /// Drop a capability (e.g. CHOWN, or ALL)
    #[arg(long)]
    pub cap_drop: Vec<String>,
    /// OCI runtime: runc, crun, or a path [default: the agent's]
    #[arg(long)]
    pub runtime: Option<String>,
    /// Size of /dev/shm (e.g. 256m) [default: 64m]
    #[arg(long, value_name = "SIZE")]
    pub shm_size: Option<String>,
    /// A resource limit: NAME=SOFT[:HARD] (nofile, nproc, core, memlock, stack, ...; repeatable)
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    pub ulimit: Vec<String>,
    /// A namespaced kernel parameter: KEY=VALUE (net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*; repeatable)
    #[arg(long, value_name = "KEY=VALUE")]
    pub sysctl: Vec<String>,
    /// Another group for the container's processes: a name from the image's /etc/group, or a number (repeatable)
    #[arg(long, value_name = "GROUP")]
    pub group_add: Vec<String>,
    /// host: the host's process namespace; container:NAME: that running
    /// container's [default: its own]
    #[arg(long, value_name = "host|container:NAME")]
    pub pid: Option<String>,
    /// host: the host's IPC namespace; container:NAME: that running
    /// container's [default: its own]
    #[arg(long, value_name = "host|container:NAME")]
    pub ipc: Option<String>,
    /// Security option (repeatable): seccomp=unconfined|PROFILE.json,
    /// no-new-privileges[=true|false], apparmor=PROFILE (where AppArmor runs)
    #[arg(long = "security-opt", value_name = "OPT")]
    pub security_opt: Vec<String>,
    /// Give a host device: HOST[:CONTAINER][:rwm] (repeatable)
    #[arg(long)]
    pub device: Vec<String>,
    /// Cgroup namespace: host or private [default: host]
    #[arg(long, value_name = "MODE")]
    pub cgroupns: Option<String>,
    /// Command that checks the container's health (run by /bin/sh -c in it)
    #[arg(long, value_name = "COMMAND")]
    pub health_cmd: Option<String>,
    /// Time between two checks (e.g. 30s, 1m) [default: the image's, else 30s]
    #[arg(long, value_name = "DURATION")]
    pub health_interval: Option<String>,
    /// A check running longer fails [default: the image's, else 30s]
    #[arg(long, value_name = "DURATION")]
    pub health_timeout: Option<String>,
    /// Failures in a row that make it unhealthy [default: the image's, else 3]
    #[arg(long, value_name = "N")]
    pub health_retries: Option<u32>,
    /// Time after the start when failures do not count [default: the image's, else 0s]
    #[arg(long, value_name = "DURATION")]
    pub health_start_period: Option<String>,
    /// Run no health check, not even the image's
    #[arg(long)]
    pub no_healthcheck: bool,
    /// Start the container again when it exits: no, always, unless-stopped,
    /// on-failure[:MAX_RETRIES] (a container you stop stays stopped)
    #[arg(long, value_name = "POLICY", default_value = "no")]
    pub restart: String,
    /// Run an init as PID 1 that reaps zombies and passes signals on to the
    /// command (so a shell loop stops at once)
    #[arg(long)]
    pub init: bool,
    /// Signal `stop` sends first (e.g. SIGQUIT) [default: the image's, else SIGTERM]
    #[arg(long, value_name = "SIGNAL")]
    pub stop_signal: Option<String>,
    /// Seconds `stop` waits before SIGKILL [default: 10]
    #[arg(long, value_name = "SECONDS")]
    pub stop_timeout: Option<u32>,
    /// Pull the image: missing (when it is not in the store), always, never
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing, value_name = "WHEN")]
    pub pull: PullPolicy,
    /// Print nothing of a pull's progress
    #[arg(short, long)]
    pub quiet: bool,
    /// Image name or id
    pub image: String,
    /// Command and arguments [default: the image's]
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Keys that detach from the container, leaving it running (with -it):
    /// a character or ctrl-X each, comma-separated [default: ctrl-p,ctrl-q]
    #[arg(long, value_name = "KEYS")]
    pub detach_keys: Option<String>,
    /// Attach to the output (and exit with the container's code)
    #[arg(short, long)]
    pub attach: bool,
    /// Attach standard input too
    #[arg(short, long)]
    pub interactive: bool,
    /// Container names, ids or unique id prefixes
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait before SIGKILL [default: the container's --stop-timeout, else 10]
    #[arg(short, long)]
    pub time: Option<u32>,
    /// Container names, ids or unique id prefixes
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The restart policy: no, always, unless-stopped, on-failure[:MAX_RETRIES]
    #[arg(long, value_name = "POLICY")]
    pub restart: Option<String>,
    /// Container names, ids or unique id prefixes
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal name or number
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    /// Signal every process of the container, not only the main one
    #[arg(long)]
    pub all: bool,
    /// Container names, ids or unique id prefixes
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill running containers first
    #[arg(short, long)]
    pub force: bool,
    /// Remove their anonymous volumes too (named volumes stay)
    #[arg(short, long)]
    pub volumes: bool,
    /// Container names, ids or unique id prefixes
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RenameArgs {
    /// Container name, id or unique id prefix
    pub container: String,
    /// Its new name
    pub new_name: String,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Only those matching: label=KEY[=VALUE] (repeatable)
    #[arg(long = "filter")]
    pub filter: Vec<String>,
    /// Do not ask (berthctl never asks; accepted for docker's scripts)
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Print each through a Go template, as docker's -f: '{{.State.Status}}'
    #[arg(short = 'f', value_name = "TEMPLATE")]
    pub template: Option<String>,
    /// Only this kind of object: container, image, volume or network
    #[arg(long = "type", value_name = "KIND")]
    pub kind: Option<String>,
    /// Names or ids: containers first, then images, volumes and networks (as docker)
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct IdsArgs {
    /// Container names, ids or unique id prefixes
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct IdArg {
    /// Container name, id or unique id prefix
    pub container: String,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep following new output until the container stops
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines ("all" for everything)
    #[arg(long, default_value = "all")]
    pub tail: String,
    /// Prefix each line with its time
    #[arg(short, long)]
    pub timestamps: bool,
    /// Only output since this time (RFC 3339, Unix seconds, or a duration like 10m)
    #[arg(long)]
    pub since: Option<String>,
    /// Only output before this time (same forms as --since)
    #[arg(long)]
    pub until: Option<String>,
    /// Container name, id or unique id prefix
    pub container: String,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep standard input open and send it to the process
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the process a terminal
    #[arg(short, long)]
    pub tty: bool,
    /// Run in the background
    #[arg(short, long)]
    pub detach: bool,
    /// Keys that detach from the container, leaving it running (with -it):
    /// a character or ctrl-X each, comma-separated [default: ctrl-p,ctrl-q]
    #[arg(long, value_name = "KEYS")]
    pub detach_keys: Option<String>,
    /// Set an environment variable (KEY=VALUE)
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Working directory
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// User: UID[:GID] or NAME[:GROUP]
    #[arg(short, long)]
    pub user: Option<String>,
    /// Container name, id or unique id prefix
    pub container: String,
    /// The command to run in the container, and its arguments
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default: running ones)
    #[arg(short, long)]
    pub all: bool,
    /// Only print ids
    #[arg(short, long)]
    pub quiet: bool,
    /// Show full ids and commands
    #[arg(long)]
    pub no_trunc: bool,
    /// Filter: name=TEXT, id=PREFIX, status=running|exited|created|paused,
    /// label=KEY[=VALUE], ancestor=IMAGE (repeatable)
    #[arg(short, long = "filter")]
    pub filter: Vec<String>,
    /// Show the last N created containers, whatever their state
    #[arg(short = 'n', long = "last", value_name = "N")]
    pub last: Option<i64>,
    /// Show the latest created container, whatever its state
    #[arg(short = 'l', long)]
    pub latest: bool,
    /// Show the size of each container's writable layer
    #[arg(short, long)]
    pub size: bool,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print one sample and exit
    #[arg(long)]
    pub no_stream: bool,
    /// Containers [default: all running]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CommitArgs {
    /// Commit message
    #[arg(short, long)]
    pub message: Option<String>,
    /// Author
    #[arg(short, long)]
    pub author: Option<String>,
    /// Do not pause the container while committing
    #[arg(long)]
    pub no_pause: bool,
    /// A Dockerfile instruction for the new image's config (repeatable):
    /// CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, USER, VOLUME, WORKDIR, STOPSIGNAL
    #[arg(short, long = "change", value_name = "INSTRUCTION")]
    pub change: Vec<String>,
    /// Container name, id or unique id prefix
    pub container: String,
    /// Name of the new image
    pub reference: String,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Keys that detach from the container, leaving it running (with -it):
    /// a character or ctrl-X each, comma-separated [default: ctrl-p,ctrl-q]
    #[arg(long, value_name = "KEYS")]
    pub detach_keys: Option<String>,
    /// Do not send standard input
    #[arg(long)]
    pub no_stdin: bool,
    /// Container name, id or unique id prefix
    pub container: String,
}
