//! berthctl: the command-line client of berthd.

mod build;
mod containers;
mod content;
mod events;
mod images;
mod networks;
mod output;
mod registry;
mod snapshots;
mod system;
mod template;
mod volumes;

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use berth_api::{v1, NamespaceInterceptor};
use clap::{Parser, Subcommand};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// berthctl: drive berthd, the Berth container node agent.
///
/// Images are pulled from registries or imported from archives (docker save
/// or OCI layout), listed, inspected, tagged, pushed, exported and removed.
/// Their layers are unpacked into read-only snapshots that every image
/// sharing them uses. Containers run from images:
/// each gets its own writable layer on top of the shared ones, which `rm`
/// discards and `commit` keeps as a new image.
#[derive(Debug, Parser)]
#[command(name = "berthctl", version, about, long_about, after_help = EXAMPLES)]
pub struct Cli {
    /// Address of berthd (Unix socket path). Hidden from every command's help (as docker hides
    /// its global flags there); the top-level help lists it under "Global options".
    #[arg(long, global = true, hide = true, env = "BERTH_ADDRESS", default_value = berth_api::DEFAULT_ADDRESS)]
    address: String,
    /// Namespace to work in (hidden as --address is)
    #[arg(long, global = true, hide = true, env = "BERTH_NAMESPACE", default_value = berth_api::DEFAULT_NAMESPACE)]
    namespace: String,
    /// Output format: table, json, or a Go template ('{{.Names}}',
    /// 'table {{.ID}}\t{{.Status}}', '{{json .}}') as docker takes
    #[arg(long, global = true, default_value = "table", value_parser = parse_format)]
    format: Format,
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "Global options (every command takes them):
      --address <ADDRESS>      Address of berthd (Unix socket path)
                               [env: BERTH_ADDRESS=] [default: /run/berth/berthd.sock]
      --namespace <NAMESPACE>  Namespace to work in [env: BERTH_NAMESPACE=] [default: default]

Examples:
  berthctl load -i busybox.tar          import an image archive
  berthctl save -o busybox.tar busybox  export images to an archive
  berthctl run --rm busybox echo hello  run a command in a new container
  berthctl run -d --name web busybox sleep 300
                                        run one in the background
  berthctl ps                           list running containers (-a: all)
  berthctl logs -f web                  follow a container's output
  berthctl exec -it web sh              a shell in a running container
  berthctl stop web && berthctl rm web  stop it, remove it and its changes
  berthctl commit web my/image:v2       keep a container's changes as an image
  berthctl pull localhost:5000/app:v1  pull an image from a registry
  berthctl push localhost:5000/app:v2  push an image to a registry
  berthctl build -t app:v1 .            build an image from ./Dockerfile
  berthctl images                       list images
  berthctl image inspect busybox        show digest, config and layers
  berthctl tag busybox my/busybox:v1    give an image another name
  berthctl rmi my/busybox:v1            remove a name (unused data is collected)
  berthctl snapshot ls                  list unpacked layers";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    /// A Go template (checked when parsed).
    Template(String),
}

pub(crate) fn parse_format(s: &str) -> Result<Format, String> {
    match s {
        "table" => Ok(Format::Table),
        "json" => Ok(Format::Json),
        t => {
            template::Template::parse(t).map_err(|e| format!("invalid template: {e}"))?;
            Ok(Format::Template(t.to_owned()))
        }
    }
}

impl Format {
    /// The template to print with, when one was given.
    pub fn template(&self) -> Option<template::Template> {
        match self {
            // Checked when the flag was read.
            Format::Template(t) => template::Template::parse(t).ok(),
            _ => None,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a container from an image and run it
    Run(containers::RunArgs),
    /// Create a container without starting it
    #[command(mut_arg("detach", |a| a.hide(true)))]
    Create(containers::RunArgs),
    /// Start created or stopped containers
    Start(containers::StartArgs),
    /// Stop running containers (the stop signal, then SIGKILL after a timeout)
    Stop(containers::StopArgs),
    /// Stop containers, then start them again
    Restart(containers::StopArgs),
    /// Change containers' settings for their next runs (--restart)
    Update(containers::UpdateArgs),
    /// Give a container another name (alias of `container rename`)
    Rename(containers::RenameArgs),
    /// Send a signal to containers
    Kill(containers::KillArgs),
    /// Remove containers and discard their writable layers
    Rm(containers::RmArgs),
    /// Wait for containers to exit; print their exit codes
    Wait(containers::IdsArgs),
    /// Show a container's output (stdout and stderr)
    Logs(containers::LogsArgs),
    /// Run a command in a running container
    Exec(containers::ExecArgs),
    /// Attach to a running container's main process
    Attach(containers::AttachArgs),
    /// Freeze all processes of containers
    Pause(containers::IdsArgs),
    /// Thaw paused containers
    Unpause(containers::IdsArgs),
    /// List containers (alias of `container ls`)
    Ps(containers::PsArgs),
    /// Show containers, images, volumes or networks as JSON (docker's shape), or through -f TEMPLATE
    Inspect(containers::InspectArgs),
    /// Show CPU, memory and process usage of containers
    Stats(containers::StatsArgs),
    /// Store a container's changes as a new image
    Commit(containers::CommitArgs),
    /// List the files changed in a container (A/C/D)
    Diff(containers::IdArg),
    /// List the processes running in a container
    Top(containers::IdArg),
    /// Copy files between a container (running or not) and this machine (alias of `container cp`)
    Cp(containers::CpArgs),
    /// Manage containers
    #[command(subcommand)]
    Container(containers::ContainerCommand),
    /// Build an image from a Dockerfile (alias of `image build`)
    Build(build::BuildArgs),
    /// Manage the build cache
    #[command(subcommand)]
    Builder(build::BuilderCommand),
    /// Pull an image from a registry
    Pull(registry::PullArgs),
    /// Push an image to a registry
    Push(registry::PushArgs),
    /// Check and store credentials for a registry (docker's config.json)
    Login(registry::LoginArgs),
    /// Remove stored credentials for a registry
    Logout(registry::LogoutArgs),
    /// Stream events: images, containers and tasks as they change
    Events(events::EventsArgs),
    /// Manage images
    #[command(subcommand)]
    Image(images::ImageCommand),
    /// List images (alias of `image ls`)
    Images(images::ListArgs),
    /// Import an image archive (alias of `image import`)
    Load(images::LoadArgs),
    /// Export images to an archive (alias of `image export`)
    #[command(after_help = images::EXPORT_EXAMPLES)]
    Save(images::ExportArgs),
    /// Give an image another name (alias of `image tag`)
    Tag(images::TagArgs),
    /// Remove images (alias of `image rm`)
    Rmi(images::RmArgs),
    /// Show the history of an image (alias of `image history`)
    History(images::HistoryArgs),
    /// Manage snapshots (unpacked layers and writable filesystems)
    #[command(subcommand, alias = "snapshots")]
    Snapshot(snapshots::SnapshotCommand),
    /// Inspect the content store (blobs by digest)
    #[command(subcommand)]
    Content(content::ContentCommand),
    /// Manage networks (CNI configuration lists)
    #[command(subcommand)]
    Network(networks::NetworkCommand),
    /// List a container's published ports
    Port(networks::PortArgs),
    /// Manage volumes (directories that outlive containers)
    #[command(subcommand)]
    Volume(volumes::VolumeCommand),
    /// Show the client's and the agent's versions
    Version,
    /// Show how the agent is configured and what it holds
    Info,
    /// The agent's disk use (`system df`), `system prune` and `system info`
    #[command(subcommand)]
    System(system::SystemCommand),
    /// Print a shell completion script: bash, zsh or fish
    #[command(after_help = "Examples:
  source <(berthctl completion bash)
  berthctl completion bash > /etc/bash_completion.d/berthctl
  berthctl completion zsh > \"${fpath[1]}/_berthctl\"
  berthctl completion fish > ~/.config/fish/completions/berthctl.fish")]
    Completion(CompletionArgs),
    /// Write man pages (berthctl.1 and one per command) to a directory
    Man(ManArgs),
}

#[derive(Debug, clap::Args)]
struct CompletionArgs {
    /// The shell: bash, zsh or fish
    shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
struct ManArgs {
    /// Directory to write the pages into [default: ./man]
    #[arg(default_value = "man")]
    dir: std::path::PathBuf,
}

/// The bash completion of container and image names, after clap's own
/// (subcommands and flags): a word that is no flag gets the names.
const BASH_NAMES: &str = r#"
_berthctl_names() {
    local cur="${COMP_WORDS[COMP_CWORD]}"
    _berthctl "$@"
    if [[ "$cur" != -* ]] && [[ ${COMP_CWORD} -ge 2 ]]; then
        local names
        names="$(berthctl ps -a --format '{{.Names}}' 2>/dev/null; berthctl images --format '{{.Repository}}:{{.Tag}}' 2>/dev/null)"
        COMPREPLY+=( $(compgen -W "${names}" -- "${cur}") )
    fi
}
complete -F _berthctl_names -o nosort -o bashdefault -o default berthctl
"#;

fn completion(a: CompletionArgs) -> Result<i32> {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "berthctl", &mut out);
    let mut text = String::from_utf8_lossy(&out).into_owned();
    if a.shell == clap_complete::Shell::Bash {
        text.push_str(BASH_NAMES);
    }
    use std::io::Write;
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(0)
}

fn man(a: ManArgs) -> Result<i32> {
    use clap::CommandFactory;
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let cmd = Cli::command();
    clap_mangen::generate_to(cmd, &a.dir).with_context(|| format!("writing man pages to {}", a.dir.display()))?;
    println!("{}", a.dir.display());
    Ok(0)
}

/// A connection to the agent with the namespace header on every call.
pub struct Conn {
    channel: Channel,
    ns: NamespaceInterceptor,
    pub format: Format,
}

type Svc = InterceptedService<Channel, NamespaceInterceptor>;

impl Conn {
    pub fn images(&self) -> v1::images_client::ImagesClient<Svc> {
        v1::images_client::ImagesClient::with_interceptor(self.channel.clone(), self.ns.clone()).max_decoding_message_size(64 << 20)
    }
    pub fn snapshots(&self) -> v1::snapshots_client::SnapshotsClient<Svc> {
        v1::snapshots_client::SnapshotsClient::with_interceptor(self.channel.clone(), self.ns.clone())
    }
    pub fn content(&self) -> v1::content_client::ContentClient<Svc> {
        v1::content_client::ContentClient::with_interceptor(self.channel.clone(), self.ns.clone())
    }
    pub fn containers(&self) -> v1::containers_client::ContainersClient<Svc> {
        v1::containers_client::ContainersClient::with_interceptor(self.channel.clone(), self.ns.clone()).max_decoding_message_size(64 << 20)
    }
    pub fn tasks(&self) -> v1::tasks_client::TasksClient<Svc> {
        v1::tasks_client::TasksClient::with_interceptor(self.channel.clone(), self.ns.clone())
    }
    pub fn events(&self) -> v1::events_client::EventsClient<Svc> {
        v1::events_client::EventsClient::with_interceptor(self.channel.clone(), self.ns.clone())
    }
    pub fn registry(&self) -> v1::registry_client::RegistryClient<Svc> {
        v1::registry_client::RegistryClient::with_interceptor(self.channel.clone(), self.ns.clone())
    }
    pub fn builder(&self) -> v1::builder_client::BuilderClient<Svc> {
        v1::builder_client::BuilderClient::with_interceptor(self.channel.clone(), self.ns.clone()).max_decoding_message_size(64 << 20)
    }
    pub fn networks(&self) -> v1::networks_client::NetworksClient<Svc> {
        v1::networks_client::NetworksClient::with_interceptor(self.channel.clone(), self.ns.clone())
    }
    /// The format of a command with its own `-f TEMPLATE` (inspect's): that
    /// template when given, else `--format`.
    pub fn format_with(&self, template: Option<&str>) -> Result<Format> {
        match template {
            Some(t) => parse_format(t).map_err(|e| anyhow::anyhow!(e)),
            None => Ok(self.format.clone()),
        }
    }
    pub fn volumes(&self) -> v1::volumes_client::VolumesClient<Svc> {
        v1::volumes_client::VolumesClient::with_interceptor(self.channel.clone(), self.ns.clone())
    }
    pub fn version(&self) -> v1::version_client::VersionClient<Svc> {
        v1::version_client::VersionClient::with_interceptor(self.channel.clone(), self.ns.clone())
    }
}

async fn connect(cli: &Cli) -> Result<Conn> {
    let channel = match berth_api::connect(&cli.address, Duration::from_secs(5)).await {
        Ok(c) => c,
        Err(e) => {
            if let Some(why) = refused_by_permissions(Path::new(&cli.address)) {
                bail!("{why}");
            }
            return Err(anyhow::Error::new(e)
                .context(format!("cannot connect to berthd at {} (is berthd running? set --address or BERTH_ADDRESS)", cli.address)));
        }
    };
    let ns = NamespaceInterceptor::new(&cli.namespace).map_err(|_| anyhow::anyhow!("invalid namespace {:?}", cli.namespace))?;
    Ok(Conn { channel, ns, format: cli.format.clone() })
}

/// Why this user may not use the socket at `path`, when that is why a
/// connection failed: its permissions, and the group that could.
fn refused_by_permissions(path: &Path) -> Option<String> {
    use rustix::fs::{access, stat, Access};
    let parent_ok = path.parent().is_none_or(|d| d.as_os_str().is_empty() || access(d, Access::EXEC_OK).is_ok());
    if !parent_ok {
        return Some(format!("permission denied on {}: its directory is closed to this user (run as root)", path.display()));
    }
    let st = stat(path).ok()?;
    if access(path, Access::READ_OK | Access::WRITE_OK).is_ok() {
        return None;
    }
    let group = berth_common::groups::name_of(st.st_gid).unwrap_or_else(|| st.st_gid.to_string());
    Some(if st.st_gid == 0 {
        format!("permission denied on {}: run as root (berthd --group GROUP lets a group's members in)", path.display())
    } else {
        format!("permission denied on {}: run as root or join group {group}", path.display())
    })
}

async fn run(cli: Cli) -> Result<i32> {
    // Logging out needs no agent; version says the client's without one.
    if let Command::Logout(a) = cli.command {
        return registry::logout(a).await;
    }
    if let Command::Completion(a) = cli.command {
        return completion(a);
    }
    if let Command::Man(a) = cli.command {
        return man(a);
    }
    if let Command::Version = cli.command {
        let conn = connect(&cli).await;
        return system::version(conn.as_ref(), &cli.format).await;
    }
    let conn = connect(&cli).await?;
    use containers::ContainerCommand as C;
    match cli.command {
        Command::Run(a) => containers::run_command(&conn, C::Run(a)).await,
        Command::Create(a) => containers::run_command(&conn, C::Create(a)).await,
        Command::Start(a) => containers::run_command(&conn, C::Start(a)).await,
        Command::Stop(a) => containers::run_command(&conn, C::Stop(a)).await,
        Command::Restart(a) => containers::run_command(&conn, C::Restart(a)).await,
        Command::Update(a) => containers::run_command(&conn, C::Update(a)).await,
        Command::Rename(a) => containers::run_command(&conn, C::Rename(a)).await,
        Command::Kill(a) => containers::run_command(&conn, C::Kill(a)).await,
        Command::Rm(a) => containers::run_command(&conn, C::Rm(a)).await,
        Command::Wait(a) => containers::run_command(&conn, C::Wait(a)).await,
        Command::Logs(a) => containers::run_command(&conn, C::Logs(a)).await,
        Command::Exec(a) => containers::run_command(&conn, C::Exec(a)).await,
        Command::Attach(a) => containers::run_command(&conn, C::Attach(a)).await,
        Command::Pause(a) => containers::run_command(&conn, C::Pause(a)).await,
        Command::Unpause(a) => containers::run_command(&conn, C::Unpause(a)).await,
        Command::Ps(a) => containers::run_command(&conn, C::Ls(a)).await,
        Command::Inspect(a) => containers::run_command(&conn, C::Inspect(a)).await,
        Command::Stats(a) => containers::run_command(&conn, C::Stats(a)).await,
        Command::Commit(a) => containers::run_command(&conn, C::Commit(a)).await,
        Command::Diff(a) => containers::run_command(&conn, C::Diff(a)).await,
        Command::Cp(a) => containers::run_command(&conn, C::Cp(a)).await,
        Command::Top(a) => containers::run_command(&conn, C::Top(a)).await,
        Command::Container(c) => containers::run_command(&conn, c).await,
        Command::Events(a) => events::events(&conn, a).await,
        Command::Build(a) => build::build(&conn, a).await,
        Command::Builder(c) => build::builder(&conn, c).await,
        Command::Pull(a) => registry::pull(&conn, a).await,
        Command::Push(a) => registry::push(&conn, a).await,
        Command::Login(a) => registry::login(&conn, a).await,
        Command::Logout(_) => unreachable!("handled before connecting"),
        Command::Image(c) => images::run(&conn, c).await,
        Command::Images(a) => images::list(&conn, a).await,
        Command::Load(a) => images::load(&conn, a).await,
        Command::Save(a) => images::export(&conn, a).await,
        Command::Tag(a) => images::tag(&conn, a).await,
        Command::Rmi(a) => images::rm(&conn, a).await,
        Command::History(a) => images::history(&conn, a).await,
        Command::Snapshot(c) => snapshots::run(&conn, c).await,
        Command::Content(c) => content::run(&conn, c).await,
        Command::Network(c) => networks::run(&conn, c).await,
        Command::Port(a) => networks::port(&conn, a).await,
        Command::Volume(c) => volumes::run(&conn, c).await,
        Command::Version => unreachable!("handled before connecting"),
        Command::Info => system::info(&conn).await,
        Command::System(c) => system::run(&conn, c).await,
        Command::Completion(_) | Command::Man(_) => unreachable!("handled before connecting"),
    }
}

/// Turn an error into the one line a user reads.
pub(crate) fn describe(e: &anyhow::Error) -> String {
    if let Some(s) = e.downcast_ref::<tonic::Status>() {
        return match s.code() {
            // The connection to the agent failed (tonic's own status, with its cause);
            // otherwise the agent said what is unavailable (a registry, a shim).
            tonic::Code::Unavailable if std::error::Error::source(s).is_some() => format!("berthd is unavailable: {}", s.message()),
            _ => s.message().to_owned(),
        };
    }
    // The context, then the root cause (the layers between are wrappers such as "transport error").
    let mut msg = e.to_string();
    if let Some(cause) = e.chain().skip(1).last() {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg = format!("{msg}: {c}");
        }
    }
    msg
}

/// How a `run`/`exec` that failed ends, as docker's: 127 and the runtime's
/// own words (`exec: "x": executable file not found in $PATH`) for a
/// command that is not there, 126 for one that cannot be executed, else 125.
fn command_failure(msg: &str) -> (i32, String) {
    let exec_part = msg.rfind("exec: ").map(|i| msg[i..].trim().to_owned());
    match exec_part {
        Some(m) if m.contains("executable file not found") || m.contains("no such file or directory") => (127, m),
        Some(m) if m.contains("permission denied") || m.contains("exec format error") || m.contains("is a directory") => (126, m),
        _ => (125, msg.to_owned()),
    }
}

/// The exit status of a process a closed pipe ended (128 + SIGPIPE), as a shell reports it.
const BROKEN_PIPE_EXIT: i32 = 141;

/// berthctl's `main`: returns the process exit code.
pub fn main() -> i32 {
    // A reader that went away (`berthctl ps | head -1`) ends us quietly, as
    // it ends other tools, not with a panic's backtrace.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info.payload().downcast_ref::<String>().map(String::as_str).or_else(|| info.payload().downcast_ref::<&str>().copied());
        if text.is_some_and(|t| t.contains("Broken pipe")) {
            std::process::exit(BROKEN_PIPE_EXIT);
        }
        default_hook(info);
    }));
    let cli = Cli::parse();
    // run, create and exec end as docker's do: 125 for an error of berthctl
    // or the agent, 126 and 127 for a command that cannot run.
    let docker_codes = matches!(cli.command, Command::Run(_) | Command::Create(_) | Command::Exec(_));
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berthctl: {e}");
            return 1;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) if e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)) => {
            BROKEN_PIPE_EXIT
        }
        Err(e) => {
            let (code, msg) = if docker_codes { command_failure(&describe(&e)) } else { (1, describe(&e)) };
            // Errors may name what came from outside (a path, an entry): no raw control characters.
            eprintln!("berthctl: {}", berth_common::text::printable(&msg));
            code
        }
    }
}
