//! Containers and their tasks: `run`, `create`, `start`, `stop`, `ps`, `logs`, `exec`, ...

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use berth_api::v1;
use clap::{Args, Subcommand};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::output::{self, ago};
use crate::{Conn, Format};

#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Create a container and run its command
    Run(RunArgs),
    /// Create a container without starting it
    Create(RunArgs),
    /// Start created or stopped containers
    Start(StartArgs),
    /// Stop running containers (the stop signal, then SIGKILL)
    Stop(StopArgs),
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
    /// Show containers as JSON: config, state, runtime spec
    Inspect(IdsArgs),
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
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    /// Run in the background and print the container id
    #[arg(short, long)]
    pub detach: bool,
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
    /// Bind-mount a host path: SRC:DST[:ro]
    #[arg(short, long = "volume")]
    pub volume: Vec<String>,
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
    /// Network: none (own namespace with only lo) or host
    #[arg(long = "net", alias = "network", default_value = "none")]
    pub net: String,
    /// Host name inside the container [default: first 12 characters of the id]
    #[arg(long, short = 'H')]
    pub hostname: Option<String>,
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
    /// Image name or id
    pub image: String,
    /// Command and arguments [default: the image's]
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Attach to the output (and exit with the container's code)
    #[arg(short, long)]
    pub attach: bool,
    /// Attach standard input too
    #[arg(short, long)]
    pub interactive: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait before SIGKILL
    #[arg(short, long, default_value_t = 10)]
    pub time: u32,
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
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill running containers first
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
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
    /// Set an environment variable (KEY=VALUE)
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Working directory
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// User: UID[:GID] or NAME[:GROUP]
    #[arg(short, long)]
    pub user: Option<String>,
    pub container: String,
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
    /// Filter: name==N, label.KEY==V, status==running, image==NAME (repeatable)
    #[arg(short, long = "filter")]
    pub filter: Vec<String>,
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
    pub container: String,
    /// Name of the new image
    pub reference: String,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Do not send standard input
    #[arg(long)]
    pub no_stdin: bool,
    pub container: String,
}

pub async fn run_command(conn: &Conn, cmd: ContainerCommand) -> Result<i32> {
    match cmd {
        ContainerCommand::Run(a) => run(conn, a).await,
        ContainerCommand::Create(a) => create(conn, a).await,
        ContainerCommand::Start(a) => start(conn, a).await,
        ContainerCommand::Stop(a) => stop(conn, a).await,
        ContainerCommand::Kill(a) => kill(conn, a).await,
        ContainerCommand::Rm(a) => rm(conn, a).await,
        ContainerCommand::Wait(a) => wait(conn, a).await,
        ContainerCommand::Logs(a) => logs(conn, a).await,
        ContainerCommand::Exec(a) => exec(conn, a).await,
        ContainerCommand::Pause(a) => pause(conn, a, true).await,
        ContainerCommand::Unpause(a) => pause(conn, a, false).await,
        ContainerCommand::Ls(a) => ps(conn, a).await,
        ContainerCommand::Inspect(a) => inspect(conn, a).await,
        ContainerCommand::Stats(a) => stats(conn, a).await,
        ContainerCommand::Commit(a) => commit(conn, a).await,
        ContainerCommand::Diff(a) => diff(conn, a).await,
        ContainerCommand::Top(a) => top(conn, a).await,
        ContainerCommand::Attach(a) => attach_cmd(conn, a).await,
    }
}

// ---- parsing flags ----

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

fn create_request(a: &RunArgs) -> Result<v1::CreateContainerRequest> {
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
        network: a.net.clone(),
        tty: a.tty,
        stdin: a.interactive,
        read_only: a.read_only,
        privileged: a.privileged,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        // A detached --rm container is removed by the agent; an attached one by us.
        auto_remove: a.rm && a.detach,
    };
    Ok(v1::CreateContainerRequest {
        image: a.image.clone(),
        name: a.name.clone().unwrap_or_default(),
        config: Some(config),
        labels: berth_common::labels::parse_all(a.label.iter().map(String::as_str))?,
        runtime: a.runtime.clone().unwrap_or_default(),
    })
}

// ---- commands ----

async fn create(conn: &Conn, a: RunArgs) -> Result<i32> {
    let c = conn.containers().create(create_request(&a)?).await?.into_inner().container.unwrap_or_default();
    println!("{}", c.id);
    Ok(0)
}

pub async fn run(conn: &Conn, a: RunArgs) -> Result<i32> {
    let c = conn.containers().create(create_request(&a)?).await?.into_inner().container.unwrap_or_default();
    if a.detach {
        if let Err(e) = conn.tasks().start(v1::StartTaskRequest { container_id: c.id.clone(), exec_id: String::new() }).await {
            let _ = conn.containers().delete(v1::DeleteContainerRequest { id: c.id.clone(), force: true }).await;
            return Err(e.into());
        }
        println!("{}", c.id);
        return Ok(0);
    }
    let result = run_attached(conn, &c.id, "", a.interactive, a.tty).await;
    if a.rm {
        match conn.containers().delete(v1::DeleteContainerRequest { id: c.id.clone(), force: true }).await {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(e) if result.is_ok() => return Err(e.into()),
            Err(_) => {}
        }
    }
    result
}

/// Create the task, attach, start, relay stdio until the process exits; return its exit code.
async fn run_attached(conn: &Conn, id: &str, exec_id: &str, stdin: bool, tty: bool) -> Result<i32> {
    if exec_id.is_empty() {
        conn.tasks().create(v1::CreateTaskRequest { container_id: id.to_owned() }).await?;
    }
    let (tx, rx) = mpsc::channel::<v1::AttachRequest>(16);
    let size = terminal_size();
    tx.send(v1::AttachRequest {
        container_id: id.to_owned(),
        exec_id: exec_id.to_owned(),
        width: size.map_or(0, |s| s.0),
        height: size.map_or(0, |s| s.1),
        ..Default::default()
    })
    .await
    .ok();
    let mut output = conn.tasks().attach(ReceiverStream::new(rx)).await?.into_inner();
    conn.tasks().start(v1::StartTaskRequest { container_id: id.to_owned(), exec_id: exec_id.to_owned() }).await?;
    relay(conn, id, exec_id, tx, &mut output, stdin, tty).await
}

/// Attach stdio to a running process: terminal mode, input, resizes, signals.
async fn relay(
    conn: &Conn,
    id: &str,
    exec_id: &str,
    tx: mpsc::Sender<v1::AttachRequest>,
    output: &mut tonic::Streaming<v1::AttachResponse>,
    stdin: bool,
    tty: bool,
) -> Result<i32> {
    let _raw = if tty && stdin && std::io::stdin().is_terminal() { RawMode::enter() } else { None };
    if stdin {
        let tx = tx.clone();
        // Standard input is read on a thread of its own: a blocking read cannot be cancelled.
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 8192];
            let mut input = std::io::stdin().lock();
            loop {
                match input.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.blocking_send(v1::AttachRequest { close_stdin: true, ..Default::default() });
                        return;
                    }
                    Ok(n) => {
                        if tx.blocking_send(v1::AttachRequest { stdin: buf[..n].to_vec(), ..Default::default() }).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    use tokio::signal::unix::{signal, SignalKind};
    let mut winch = signal(SignalKind::window_change()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut term = signal(SignalKind::terminate()).ok();
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    loop {
        tokio::select! {
            msg = output.next() => match msg {
                Some(Ok(m)) => {
                    if m.exited {
                        return Ok(m.exit_code);
                    }
                    let w: &mut dyn Write = if m.stream == "stderr" { &mut err } else { &mut out };
                    w.write_all(&m.data)?;
                    w.flush()?;
                }
                Some(Err(e)) => return Err(e.into()),
                None => break,
            },
            Some(_) = recv(&mut winch) => {
                if let Some((w, h)) = terminal_size() {
                    let _ = tx.send(v1::AttachRequest { width: w, height: h, ..Default::default() }).await;
                }
            }
            // Without a terminal, ^C and SIGTERM go to the container (docker's sig-proxy).
            Some(_) = recv(&mut int) => forward(conn, id, exec_id, "INT").await,
            Some(_) = recv(&mut term) => forward(conn, id, exec_id, "TERM").await,
        }
    }
    // The stream ended without an exit message: ask for the exit.
    let w = conn.tasks().wait(v1::WaitTaskRequest { container_id: id.to_owned(), exec_id: exec_id.to_owned(), timeout_ms: 0 }).await?;
    Ok(w.into_inner().exit_code)
}

async fn recv(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

async fn forward(conn: &Conn, id: &str, exec_id: &str, sig: &str) {
    let _ = conn
        .tasks()
        .kill(v1::KillTaskRequest { container_id: id.to_owned(), exec_id: exec_id.to_owned(), signal: sig.into(), all: false })
        .await;
}

fn terminal_size() -> Option<(u32, u32)> {
    let ws = rustix::termios::tcgetwinsize(std::io::stdout()).ok()?;
    (ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col as u32, ws.ws_row as u32))
}

/// The local terminal in raw mode while attached; restored on drop.
struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    fn enter() -> Option<Self> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(std::io::stdin(), rustix::termios::OptionalActions::Now, &self.saved);
    }
}

async fn start(conn: &Conn, a: StartArgs) -> Result<i32> {
    if a.attach || a.interactive {
        if a.containers.len() != 1 {
            bail!("start --attach takes one container");
        }
        let c = get(conn, &a.containers[0]).await?;
        let tty = c.config.as_ref().is_some_and(|c| c.tty);
        return run_attached(conn, &c.id, "", a.interactive, tty).await;
    }
    let mut code = 0;
    for id in &a.containers {
        match conn.tasks().start(v1::StartTaskRequest { container_id: id.clone(), exec_id: String::new() }).await {
            Ok(_) => println!("{id}"),
            Err(e) => {
                eprintln!("berthctl: {id}: {}", e.message());
                code = 1;
            }
        }
    }
    Ok(code)
}

/// Run `f` for each container, print its name on success, report failures; exit 1 if any failed.
async fn each<F, Fut>(ids: &[String], f: F) -> Result<i32>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<Option<String>, tonic::Status>>,
{
    let mut code = 0;
    for id in ids {
        match f(id.clone()).await {
            Ok(Some(line)) => println!("{line}"),
            Ok(None) => {}
            Err(e) => {
                eprintln!("berthctl: {id}: {}", e.message());
                code = 1;
            }
        }
    }
    Ok(code)
}

async fn stop(conn: &Conn, a: StopArgs) -> Result<i32> {
    each(&a.containers, |id| async move {
        conn.tasks().stop(v1::StopTaskRequest { container_id: id.clone(), timeout_secs: a.time, timeout_set: true }).await?;
        Ok(Some(id))
    })
    .await
}

async fn kill(conn: &Conn, a: KillArgs) -> Result<i32> {
    each(&a.containers, |id| {
        let signal = a.signal.clone();
        async move {
            conn.tasks().kill(v1::KillTaskRequest { container_id: id.clone(), exec_id: String::new(), signal, all: a.all }).await?;
            Ok(Some(id))
        }
    })
    .await
}

async fn rm(conn: &Conn, a: RmArgs) -> Result<i32> {
    each(&a.containers, |id| async move {
        conn.containers().delete(v1::DeleteContainerRequest { id: id.clone(), force: a.force }).await?;
        Ok(Some(id))
    })
    .await
}

async fn wait(conn: &Conn, a: IdsArgs) -> Result<i32> {
    each(&a.containers, |id| async move {
        let w = conn.tasks().wait(v1::WaitTaskRequest { container_id: id, exec_id: String::new(), timeout_ms: 0 }).await?.into_inner();
        Ok(Some(w.exit_code.to_string()))
    })
    .await
}

async fn pause(conn: &Conn, a: IdsArgs, pause: bool) -> Result<i32> {
    each(&a.containers, |id| async move {
        if pause {
            conn.tasks().pause(v1::PauseTaskRequest { container_id: id.clone() }).await?;
        } else {
            conn.tasks().resume(v1::ResumeTaskRequest { container_id: id.clone() }).await?;
        }
        Ok(Some(id))
    })
    .await
}

/// A time flag: RFC 3339, a date, Unix seconds, or a duration before now.
fn time_flag(s: &str) -> Result<prost_types::Timestamp> {
    let (secs, nanos) = berth_common::time::parse_since(s, output::now_secs())
        .with_context(|| format!("invalid time {s:?}: use RFC 3339 (2024-01-02T15:04:05Z), Unix seconds, or a duration such as 10m"))?;
    Ok(prost_types::Timestamp { seconds: secs, nanos: nanos as i32 })
}

async fn logs(conn: &Conn, a: LogsArgs) -> Result<i32> {
    let (tail, tail_set) = match a.tail.as_str() {
        "all" | "-1" => (0, false),
        n => (n.parse::<u64>().with_context(|| format!("invalid --tail {n:?}: use a number or all"))?, true),
    };
    let req = v1::LogsRequest {
        id: a.container.clone(),
        follow: a.follow,
        tail,
        tail_set,
        since: a.since.as_deref().map(time_flag).transpose()?,
        until: a.until.as_deref().map(time_flag).transpose()?,
        stdout: false,
        stderr: false,
    };
    let mut stream = conn.containers().logs(req).await?.into_inner();
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    while let Some(m) = stream.next().await {
        let m = m?;
        let w: &mut dyn Write = if m.stream == "stderr" { &mut err } else { &mut out };
        if a.timestamps {
            let t = m.time.unwrap_or_default();
            write!(w, "{} ", output::rfc3339(&t))?;
        }
        w.write_all(&m.data)?;
        if a.follow {
            w.flush()?;
        }
    }
    Ok(0)
}

async fn exec(conn: &Conn, a: ExecArgs) -> Result<i32> {
    let c = get(conn, &a.container).await?;
    let req = v1::ExecRequest {
        container_id: c.id.clone(),
        exec_id: String::new(),
        args: a.command.clone(),
        env: a.env.clone(),
        workdir: a.workdir.clone().unwrap_or_default(),
        user: a.user.clone().unwrap_or_default(),
        tty: a.tty,
        stdin: a.interactive,
    };
    let exec_id = conn.tasks().exec(req).await?.into_inner().exec_id;
    if a.detach {
        conn.tasks().start(v1::StartTaskRequest { container_id: c.id.clone(), exec_id }).await?;
        return Ok(0);
    }
    let code = run_attached(conn, &c.id, &exec_id, a.interactive, a.tty).await;
    let _ = conn.tasks().delete(v1::DeleteTaskRequest { container_id: c.id.clone(), exec_id, force: true }).await;
    code
}

async fn attach_cmd(conn: &Conn, a: AttachArgs) -> Result<i32> {
    let c = get(conn, &a.container).await?;
    let cfg = c.config.unwrap_or_default();
    let stdin = cfg.stdin && !a.no_stdin;
    let (tx, rx) = mpsc::channel::<v1::AttachRequest>(16);
    let size = terminal_size();
    let first = v1::AttachRequest {
        container_id: c.id.clone(),
        width: size.map_or(0, |s| s.0),
        height: size.map_or(0, |s| s.1),
        ..Default::default()
    };
    tx.send(first).await.ok();
    let mut output = conn.tasks().attach(ReceiverStream::new(rx)).await?.into_inner();
    relay(conn, &c.id, "", tx, &mut output, stdin, cfg.tty).await
}

async fn get(conn: &Conn, id: &str) -> Result<v1::Container> {
    Ok(conn.containers().get(v1::GetContainerRequest { id: id.to_owned() }).await?.into_inner().container.unwrap_or_default())
}

fn secs(t: &Option<prost_types::Timestamp>) -> i64 {
    t.as_ref().map_or(0, |t| t.seconds)
}

/// docker's STATUS column: "Up 5 minutes", "Exited (0) 3 seconds ago", "Created".
fn status_text(s: &v1::TaskStatus) -> String {
    let since = |t: i64| output::duration(output::now_secs() - t);
    match s.state.as_str() {
        "running" => format!("Up {}", since(secs(&s.started_at))),
        "paused" => format!("Up {} (Paused)", since(secs(&s.started_at))),
        "exited" => format!("Exited ({}) {}", s.exit_code, ago(secs(&s.finished_at))),
        "created" => "Created".into(),
        other => other.to_owned(),
    }
}

fn container_json(c: &v1::Container) -> serde_json::Value {
    let s = c.status.clone().unwrap_or_default();
    let cfg = c.config.clone().unwrap_or_default();
    let spec: serde_json::Value = serde_json::from_slice(&c.spec).unwrap_or_default();
    let t = |t: &Option<prost_types::Timestamp>| t.as_ref().map(output::rfc3339);
    json!({
        "Id": c.id,
        "Name": c.name,
        "Image": c.image,
        "ImageDigest": c.image_digest,
        "Created": t(&c.created_at),
        "Args": c.args,
        "Runtime": c.runtime,
        "SnapshotKey": c.snapshot_key,
        "Labels": c.labels,
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
            "Network": cfg.network, "CapAdd": cfg.cap_add, "CapDrop": cfg.cap_drop, "AutoRemove": cfg.auto_remove,
            "Mounts": cfg.mounts.iter().map(|m| json!({"Type": m.r#type, "Source": m.source, "Destination": m.destination, "ReadOnly": m.readonly, "Options": m.options})).collect::<Vec<_>>(),
            "Resources": cfg.resources.map(|r| json!({"Memory": r.memory_bytes, "CpuMillis": r.cpu_millis, "PidsLimit": r.pids_limit})),
        },
        "Spec": spec,
    })
}

fn shell_join(args: &[String]) -> String {
    args.join(" ")
}

async fn ps(conn: &Conn, a: PsArgs) -> Result<i32> {
    let list = conn.containers().list(v1::ListContainersRequest { filters: a.filter.clone() }).await?.into_inner().containers;
    // Without -a (or a status filter of the user's), only running and paused ones.
    let live_only = !a.all && !a.filter.iter().any(|f| f.starts_with("status"));
    let list: Vec<v1::Container> = list
        .into_iter()
        .filter(|c| !live_only || matches!(c.status.as_ref().map(|s| s.state.as_str()), Some("running" | "paused")))
        .collect();
    if a.quiet {
        for c in &list {
            println!("{}", if a.no_trunc { c.id.clone() } else { c.id[..12.min(c.id.len())].to_owned() });
        }
        return Ok(0);
    }
    if conn.format == Format::Json {
        output::json(&serde_json::Value::Array(list.iter().map(container_json).collect()));
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            let cmd = shell_join(&c.args);
            let cmd =
                if a.no_trunc || cmd.chars().count() <= 20 { cmd } else { format!("{}…", cmd.chars().take(19).collect::<String>()) };
            let (repo, tag) = output::repo_tag(&c.image);
            let image = if tag.is_empty() || tag == "latest" { repo } else { format!("{repo}:{tag}") };
            vec![
                if a.no_trunc { c.id.clone() } else { c.id[..12.min(c.id.len())].to_owned() },
                image,
                format!("\"{cmd}\""),
                ago(secs(&c.created_at)),
                status_text(&c.status.clone().unwrap_or_default()),
                c.name.clone(),
            ]
        })
        .collect();
    output::table(&["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES"], &rows);
    Ok(0)
}

async fn inspect(conn: &Conn, a: IdsArgs) -> Result<i32> {
    let mut out = Vec::new();
    let mut code = 0;
    for id in &a.containers {
        match conn.containers().get(v1::GetContainerRequest { id: id.clone() }).await {
            Ok(r) => out.push(container_json(&r.into_inner().container.unwrap_or_default())),
            Err(e) => {
                eprintln!("berthctl: {id}: {}", e.message());
                code = 1;
            }
        }
    }
    output::json(&serde_json::Value::Array(out));
    Ok(code)
}

async fn stats(conn: &Conn, a: StatsArgs) -> Result<i32> {
    let ids: Vec<(String, String)> = if a.containers.is_empty() {
        let list =
            conn.containers().list(v1::ListContainersRequest { filters: vec!["status==running".into()] }).await?.into_inner().containers;
        list.into_iter().map(|c| (c.id, c.name)).collect()
    } else {
        let mut v = Vec::new();
        for id in &a.containers {
            let c = get(conn, id).await?;
            v.push((c.id, c.name));
        }
        v
    };
    let sample = |ids: Vec<(String, String)>| async move {
        let mut out = Vec::new();
        for (id, name) in ids {
            if let Ok(s) = conn.tasks().stats(v1::StatsRequest { container_id: id.clone() }).await {
                out.push((id, name, s.into_inner()));
            }
        }
        out
    };
    let interval = Duration::from_millis(if a.no_stream { 500 } else { 1000 });
    let mut prev = sample(ids.clone()).await;
    loop {
        tokio::time::sleep(interval).await;
        let cur = sample(ids.clone()).await;
        let rows: Vec<Vec<String>> = cur
            .iter()
            .map(|(id, name, s)| {
                let before = prev.iter().find(|(p, _, _)| p == id).map_or(s.cpu_usage_ns, |(_, _, p)| p.cpu_usage_ns);
                let cpu = (s.cpu_usage_ns.saturating_sub(before)) as f64 / interval.as_nanos() as f64 * 100.0;
                let limit = if s.memory_limit_bytes > 0 { output::size(s.memory_limit_bytes as i64) } else { "unlimited".into() };
                let pids = if s.pids_limit > 0 { format!("{} / {}", s.pids_current, s.pids_limit) } else { s.pids_current.to_string() };
                vec![
                    id[..12.min(id.len())].to_owned(),
                    name.clone(),
                    format!("{cpu:.2}%"),
                    format!("{} / {limit}", output::size(s.memory_usage_bytes as i64)),
                    pids,
                ]
            })
            .collect();
        if conn.format == Format::Json {
            let v: Vec<_> = cur
                .iter()
                .map(|(id, name, s)| json!({"id": id, "name": name, "cpu_usage_ns": s.cpu_usage_ns, "memory_usage_bytes": s.memory_usage_bytes, "memory_limit_bytes": s.memory_limit_bytes, "pids": s.pids_current, "pids_limit": s.pids_limit}))
                .collect();
            output::json(&serde_json::Value::Array(v));
        } else {
            if !a.no_stream {
                // Clear the screen between samples, as docker does.
                print!("\x1b[2J\x1b[H");
            }
            output::table(&["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "PIDS"], &rows);
        }
        if a.no_stream {
            return Ok(0);
        }
        prev = cur;
    }
}

async fn commit(conn: &Conn, a: CommitArgs) -> Result<i32> {
    let r = conn
        .containers()
        .commit(v1::CommitRequest {
            id: a.container,
            reference: a.reference,
            message: a.message.unwrap_or_default(),
            author: a.author.unwrap_or_default(),
            no_pause: a.no_pause,
        })
        .await?
        .into_inner();
    if conn.format == Format::Json {
        output::json(&json!({"name": r.name, "digest": r.digest, "id": r.config_digest}));
    } else {
        println!("{}", r.config_digest);
    }
    Ok(0)
}

async fn diff(conn: &Conn, a: IdArg) -> Result<i32> {
    let changes = conn.containers().diff(v1::DiffRequest { id: a.container }).await?.into_inner().changes;
    if conn.format == Format::Json {
        output::json(&serde_json::Value::Array(changes.iter().map(|c| json!({"Kind": c.kind, "Path": c.path})).collect()));
    } else {
        for c in changes {
            println!("{} {}", c.kind, c.path);
        }
    }
    Ok(0)
}

async fn top(conn: &Conn, a: IdArg) -> Result<i32> {
    let procs = conn.tasks().list_pids(v1::ListPidsRequest { container_id: a.container }).await?.into_inner().processes;
    if conn.format == Format::Json {
        let v: Vec<_> = procs
            .iter()
            .map(|p| json!({"pid": p.pid, "ppid": p.ppid, "uid": p.uid, "state": p.state, "cpu_ms": p.cpu_ms, "rss_bytes": p.rss_bytes, "elapsed_secs": p.elapsed_secs, "command": p.command}))
            .collect();
        output::json(&serde_json::Value::Array(v));
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = procs
        .iter()
        .map(|p| {
            let t = p.cpu_ms / 1000;
            vec![
                p.uid.to_string(),
                p.pid.to_string(),
                p.ppid.to_string(),
                format!("{:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60),
                p.command.clone(),
            ]
        })
        .collect();
    output::table(&["UID", "PID", "PPID", "TIME", "CMD"], &rows);
    Ok(0)
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
}
