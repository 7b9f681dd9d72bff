//! Containers and their tasks: `run`, `create`, `start`, `stop`, `ps`, `logs`, `exec`, ...
//!
//! This file holds the commands: each calls the agent and prints the result.
//! `args` holds their clap arguments, `flags` turns flag values into
//! requests, `attach` relays a terminal to a task, `view` shapes tables and
//! JSON.

mod args;
mod attach;
mod cp;
mod flags;
mod view;

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use berth_api::v1;
use serde_json::json;
use tokio_stream::StreamExt;

pub use args::*;
use attach::run_attached;
pub use cp::CpArgs;
use flags::create_request;
pub(crate) use flags::time_flag;

use crate::output;
use crate::{Conn, Format};

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
        ContainerCommand::Restart(a) => restart(conn, a).await,
        ContainerCommand::Update(a) => update(conn, a).await,
        ContainerCommand::Rename(a) => {
            let req = v1::UpdateContainerRequest { id: a.container, name: a.new_name, ..Default::default() };
            conn.containers().update(req).await?;
            Ok(0)
        }
        ContainerCommand::Prune(a) => prune(conn, a).await.map(|_| 0),
        ContainerCommand::Cp(a) => cp::cp(conn, a).await,
    }
}

/// Remove every container that does not run; the removed ids and the bytes
/// their writable layers took.
pub async fn prune(conn: &Conn, a: PruneArgs) -> Result<(Vec<String>, i64)> {
    let filters: Vec<String> = a.filter.iter().map(|f| output::api_filter(f, &[], &["name"], &[])).collect();
    let list = conn.containers().list(v1::ListContainersRequest { filters }).await?.into_inner().containers;
    let mut removed = Vec::new();
    let mut reclaimed = 0;
    for c in list {
        if matches!(c.status.as_ref().map(|s| s.state.as_str()), Some("running" | "paused" | "restarting")) {
            continue;
        }
        let size = layer_size(conn, &c).await;
        match conn.containers().delete(v1::DeleteContainerRequest { id: c.id.clone(), ..Default::default() }).await {
            Ok(_) => {
                reclaimed += size;
                removed.push(c.id);
            }
            // Started meanwhile, or gone: not ours to remove.
            Err(e) if matches!(e.code(), tonic::Code::FailedPrecondition | tonic::Code::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if conn.format == Format::Json {
        output::json(&json!({"ContainersDeleted": removed, "SpaceReclaimed": reclaimed}));
    } else {
        if !removed.is_empty() {
            println!("Deleted Containers:");
        }
        for id in &removed {
            println!("{id}");
        }
        println!("Total reclaimed space: {}", output::size(reclaimed));
    }
    Ok((removed, reclaimed))
}

async fn create(conn: &Conn, a: RunArgs) -> Result<i32> {
    let req = create_request(&a)?;
    ensure_image(conn, &a).await?;
    let c = conn.containers().create(req).await?.into_inner().container.unwrap_or_default();
    print_id(conn, &c);
    Ok(0)
}

/// A new container's id (with its name, as JSON with --format json).
fn print_id(conn: &Conn, c: &v1::Container) {
    if conn.format == Format::Json {
        println!("{}", json!({"Id": c.id, "Name": c.name}));
    } else {
        println!("{}", c.id);
    }
}

/// Pull the image of `run` or `create` as `--pull` says (docker's default:
/// when it is not in the store).
async fn ensure_image(conn: &Conn, a: &RunArgs) -> Result<()> {
    if a.pull == PullPolicy::Always {
        crate::registry::pull_for_run(conn, &a.image, a.quiet).await?;
        return Ok(());
    }
    match conn.images().get(v1::GetImageRequest { name: a.image.clone() }).await {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::NotFound && a.pull == PullPolicy::Never => {
            bail!("image {:?} is not in the store, and --pull never does not pull it (berthctl pull {})", a.image, a.image)
        }
        Err(s) if s.code() == tonic::Code::NotFound => {
            if !a.quiet {
                eprintln!("Unable to find image {:?} here: pulling it", a.image);
            }
            crate::registry::pull_for_run(conn, &a.image, a.quiet).await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// `-it` needs a terminal to read from, as docker says.
fn check_terminal(interactive: bool, tty: bool, detach: bool) -> Result<()> {
    if interactive && tty && !detach && !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        bail!("the input device is not a TTY: drop -t, or run from a terminal");
    }
    Ok(())
}

pub async fn run(conn: &Conn, a: RunArgs) -> Result<i32> {
    check_terminal(a.interactive, a.tty, a.detach)?;
    let req = create_request(&a)?;
    ensure_image(conn, &a).await?;
    let c = conn.containers().create(req).await?.into_inner().container.unwrap_or_default();
    if a.detach {
        if let Err(e) = conn.tasks().start(v1::StartTaskRequest { container_id: c.id.clone(), exec_id: String::new() }).await {
            let _ = conn.containers().delete(v1::DeleteContainerRequest { id: c.id.clone(), force: true, remove_volumes: true }).await;
            return Err(e.into());
        }
        print_id(conn, &c);
        return Ok(0);
    }
    let keys = attach::parse_detach_keys(a.detach_keys.as_deref().unwrap_or(attach::DEFAULT_DETACH_KEYS))?;
    let result = match run_attached(conn, &c.id, "", a.interactive, a.tty, &keys).await {
        Ok(Some(code)) => Ok(code),
        Ok(None) => {
            // Detached: the container goes on; its --rm is the agent's now.
            if a.rm {
                let req = v1::UpdateContainerRequest { id: c.id.clone(), auto_remove: Some(true), ..Default::default() };
                conn.containers().update(req).await?;
            }
            return Ok(0);
        }
        Err(e) => Err(e),
    };
    if a.rm {
        // Its anonymous volumes go with it, as docker's --rm does.
        match conn.containers().delete(v1::DeleteContainerRequest { id: c.id.clone(), force: true, remove_volumes: true }).await {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(e) if result.is_ok() => return Err(e.into()),
            Err(_) => {}
        }
    }
    result
}

async fn start(conn: &Conn, a: StartArgs) -> Result<i32> {
    if a.attach || a.interactive {
        if a.containers.len() != 1 {
            bail!("start --attach takes one container");
        }
        let c = get(conn, &a.containers[0]).await?;
        let tty = c.config.as_ref().is_some_and(|c| c.tty);
        let keys = attach::parse_detach_keys(a.detach_keys.as_deref().unwrap_or(attach::DEFAULT_DETACH_KEYS))?;
        return Ok(run_attached(conn, &c.id, "", a.interactive, tty, &keys).await?.unwrap_or(0));
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
async fn each<F, Fut>(format: &Format, ids: &[String], f: F) -> Result<i32>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<Option<String>, tonic::Status>>,
{
    // All at once (a stop of ten containers takes one timeout, not ten);
    // results printed in the order given.
    let results = join_all(ids.iter().map(|id| f(id.clone())).collect()).await;
    let mut code = 0;
    for (id, r) in ids.iter().zip(results) {
        match r {
            // --format json: what each gave, beside the name it was asked by.
            Ok(Some(line)) if *format == Format::Json => println!("{}", json!({"Name": id, "Result": line})),
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

/// Run futures together on this task; their outputs in their order.
async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    use std::task::Poll;
    let mut futs: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futs.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *slot = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// Stop, then start: the user's start undoes the stop for restart policies.
async fn restart(conn: &Conn, a: StopArgs) -> Result<i32> {
    each(&conn.format, &a.containers, |id| async move {
        let req = v1::StopTaskRequest { container_id: id.clone(), timeout_secs: a.time.unwrap_or(0), timeout_set: a.time.is_some() };
        match conn.tasks().stop(req).await {
            Ok(_) => {}
            // Never started, or already exited: just start it.
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {}
            Err(s) => return Err(s),
        }
        conn.tasks().start(v1::StartTaskRequest { container_id: id.clone(), exec_id: String::new() }).await?;
        Ok(Some(id))
    })
    .await
}

async fn update(conn: &Conn, a: UpdateArgs) -> Result<i32> {
    let Some(restart) = &a.restart else { bail!("nothing to update: give --restart POLICY") };
    let policy = flags::restart_flag(restart)?;
    each(&conn.format, &a.containers, |id| {
        let policy = policy.clone();
        async move {
            conn.containers()
                .update(v1::UpdateContainerRequest { id: id.clone(), restart_policy: Some(policy), ..Default::default() })
                .await?;
            Ok(Some(id))
        }
    })
    .await
}

async fn stop(conn: &Conn, a: StopArgs) -> Result<i32> {
    each(&conn.format, &a.containers, |id| async move {
        let req = v1::StopTaskRequest { container_id: id.clone(), timeout_secs: a.time.unwrap_or(0), timeout_set: a.time.is_some() };
        conn.tasks().stop(req).await?;
        Ok(Some(id))
    })
    .await
}

async fn kill(conn: &Conn, a: KillArgs) -> Result<i32> {
    each(&conn.format, &a.containers, |id| {
        let signal = a.signal.clone();
        async move {
            conn.tasks().kill(v1::KillTaskRequest { container_id: id.clone(), exec_id: String::new(), signal, all: a.all }).await?;
            Ok(Some(id))
        }
    })
    .await
}

async fn rm(conn: &Conn, a: RmArgs) -> Result<i32> {
    each(&conn.format, &a.containers, |id| async move {
        conn.containers().delete(v1::DeleteContainerRequest { id: id.clone(), force: a.force, remove_volumes: a.volumes }).await?;
        Ok(Some(id))
    })
    .await
}

async fn wait(conn: &Conn, a: IdsArgs) -> Result<i32> {
    each(&conn.format, &a.containers, |id| async move {
        let w = conn.tasks().wait(v1::WaitTaskRequest { container_id: id, exec_id: String::new(), timeout_ms: 0 }).await?.into_inner();
        Ok(Some(w.exit_code.to_string()))
    })
    .await
}

async fn pause(conn: &Conn, a: IdsArgs, pause: bool) -> Result<i32> {
    each(&conn.format, &a.containers, |id| async move {
        if pause {
            conn.tasks().pause(v1::PauseTaskRequest { container_id: id.clone() }).await?;
        } else {
            conn.tasks().resume(v1::ResumeTaskRequest { container_id: id.clone() }).await?;
        }
        Ok(Some(id))
    })
    .await
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
    let mut stream = conn.containers().logs(req.clone()).await?.into_inner();
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    // The time of the last record shown: a follow that lost the agent (a
    // restart) asks again from just after it.
    let mut last: Option<prost_types::Timestamp> = None;
    loop {
        let m = match stream.next().await {
            Some(Ok(m)) => m,
            Some(Err(e)) if a.follow && attach::is_disconnect(&e) => {
                stream = relogs(conn, &req, last.as_ref()).await?;
                continue;
            }
            Some(Err(e)) => return Err(e.into()),
            None => break,
        };
        last = m.time;
        if conn.format == Format::Json {
            // One object per record: its stream, time and text.
            let t = m.time.unwrap_or_default();
            let line = json!({"Stream": m.stream, "Time": output::rfc3339(&t), "Log": String::from_utf8_lossy(&m.data)});
            writeln!(out, "{line}")?;
            continue;
        }
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

/// Follow the logs again once the agent is back (within the attach bound),
/// from just after the last record shown.
async fn relogs(conn: &Conn, req: &v1::LogsRequest, last: Option<&prost_types::Timestamp>) -> Result<tonic::Streaming<v1::LogsResponse>> {
    let mut req = req.clone();
    if let Some(t) = last {
        let next = if t.nanos >= 999_999_999 { (t.seconds + 1, 0) } else { (t.seconds, t.nanos + 1) };
        req.since = Some(prost_types::Timestamp { seconds: next.0, nanos: next.1 });
        req.tail = 0;
        req.tail_set = false;
    }
    Ok(attach::while_away(|| async { conn.containers().logs(req.clone()).await }).await?.into_inner())
}

/// Bytes a container's writable layer takes (0 when it cannot be measured).
pub(crate) async fn layer_size(conn: &Conn, c: &v1::Container) -> i64 {
    conn.snapshots().usage(v1::UsageRequest { key: c.snapshot_key.clone() }).await.map_or(0, |u| u.into_inner().size)
}

async fn exec(conn: &Conn, a: ExecArgs) -> Result<i32> {
    check_terminal(a.interactive, a.tty, false)?;
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
    let keys = attach::parse_detach_keys(a.detach_keys.as_deref().unwrap_or(attach::DEFAULT_DETACH_KEYS))?;
    let code = match run_attached(conn, &c.id, &exec_id, a.interactive, a.tty, &keys).await {
        // Detached: the exec goes on.
        Ok(None) => return Ok(0),
        other => other.map(|c| c.unwrap_or(0)),
    };
    let _ = conn.tasks().delete(v1::DeleteTaskRequest { container_id: c.id.clone(), exec_id, force: true }).await;
    code
}

async fn attach_cmd(conn: &Conn, a: AttachArgs) -> Result<i32> {
    let c = get(conn, &a.container).await?;
    let cfg = c.config.unwrap_or_default();
    let stdin = cfg.stdin && !a.no_stdin;
    let keys = attach::parse_detach_keys(a.detach_keys.as_deref().unwrap_or(attach::DEFAULT_DETACH_KEYS))?;
    Ok(attach::attach_running(conn, &c.id, stdin, cfg.tty, &keys).await?.unwrap_or(0))
}

async fn get(conn: &Conn, id: &str) -> Result<v1::Container> {
    Ok(conn.containers().get(v1::GetContainerRequest { id: id.to_owned() }).await?.into_inner().container.unwrap_or_default())
}

async fn ps(conn: &Conn, a: PsArgs) -> Result<i32> {
    let filters: Vec<String> =
        a.filter.iter().map(|f| output::api_filter(f, &[("ancestor", "image")], &["name"], &["ancestor", "image"])).collect();
    let list = conn.containers().list(v1::ListContainersRequest { filters: filters.clone() }).await?.into_inner().containers;
    // The last N created (newest first, as listed), whatever their state, as docker's -n and -l.
    let last = if a.latest { Some(1) } else { a.last.filter(|n| *n >= 0).map(|n| n as usize) };
    // Without -a (or -n, or a status filter of the user's), only running and paused ones.
    let live_only = !a.all && last.is_none() && !filters.iter().any(|f| f.starts_with("status"));
    let mut list: Vec<v1::Container> = list
        .into_iter()
        .filter(|c| !live_only || matches!(c.status.as_ref().map(|s| s.state.as_str()), Some("running" | "paused")))
        .collect();
    if let Some(n) = last {
        list.truncate(n);
    }
    if a.quiet {
        for c in &list {
            println!("{}", view::short_id(&c.id, a.no_trunc));
        }
        return Ok(0);
    }
    let mut rows: Vec<serde_json::Value> = list.iter().map(|c| view::ps_row(c, a.no_trunc)).collect();
    if a.size {
        for (row, c) in rows.iter_mut().zip(&list) {
            row["Size"] = output::size(layer_size(conn, c).await).into();
        }
    }
    let table = if a.size { format!("{}\t{{{{.Size}}}}", view::PS_TABLE) } else { view::PS_TABLE.to_owned() };
    output::rows(&conn.format, &table, view::PS_COLUMNS, &rows)?;
    Ok(0)
}

async fn inspect(conn: &Conn, a: InspectArgs) -> Result<i32> {
    let format = conn.format_with(a.template.as_deref())?;
    if let Some(k) = a.kind.as_deref() {
        if !matches!(k, "container" | "image" | "volume" | "network") {
            anyhow::bail!("--type {k:?}: use container, image, volume or network");
        }
    }
    let mut found = Vec::new();
    let mut code = 0;
    for name in &a.names {
        match inspect_any(conn, name, a.kind.as_deref()).await {
            Ok(v) => found.push(v),
            Err(e) => {
                eprintln!("berthctl: {}", berth_common::text::printable(&e));
                code = 1;
            }
        }
    }
    output::inspected(&format, &found)?;
    Ok(code)
}

/// One object by name, as docker's `inspect` looks: a container, else an
/// image, a volume, a network (or only the kind asked for).
async fn inspect_any(conn: &Conn, name: &str, kind: Option<&str>) -> std::result::Result<serde_json::Value, String> {
    let wants = |k: &str| kind.is_none_or(|x| x == k);
    let other = |e: tonic::Status| Err(format!("{name}: {}", e.message()));
    if wants("container") {
        match conn.containers().get(v1::GetContainerRequest { id: name.to_owned() }).await {
            Ok(r) => return Ok(view::container_json(&r.into_inner().container.unwrap_or_default())),
            Err(e) if e.code() == tonic::Code::NotFound => {}
            Err(e) => return other(e),
        }
    }
    if wants("image") {
        match crate::images::inspect_value(conn, name, "").await {
            Ok(v) => return Ok(v),
            Err(e) if matches!(e.code(), tonic::Code::NotFound | tonic::Code::InvalidArgument) && kind.is_none() => {}
            Err(e) if e.code() == tonic::Code::NotFound => {}
            Err(e) => return other(e),
        }
    }
    if wants("volume") {
        match conn.volumes().get(v1::GetVolumeRequest { name: name.to_owned() }).await {
            Ok(r) => return Ok(crate::volumes::volume_json(&r.into_inner().volume.unwrap_or_default(), true)),
            Err(e) if matches!(e.code(), tonic::Code::NotFound | tonic::Code::InvalidArgument) => {}
            Err(e) => return other(e),
        }
    }
    if wants("network") {
        match conn.networks().get(v1::GetNetworkRequest { name: name.to_owned() }).await {
            Ok(r) => return Ok(crate::networks::network_json(&r.into_inner().network.unwrap_or_default())),
            Err(e) if matches!(e.code(), tonic::Code::NotFound | tonic::Code::InvalidArgument) => {}
            Err(e) => return other(e),
        }
    }
    Err(format!("no such object: {name}"))
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
    // A container that does not run shows zeros, as docker's does.
    let sample = |ids: Vec<(String, String)>| async move {
        let mut out = Vec::new();
        for (id, name) in ids {
            let s = conn.tasks().stats(v1::StatsRequest { container_id: id.clone() }).await.map(|s| s.into_inner()).unwrap_or_default();
            out.push((id, name, s));
        }
        out
    };
    let interval = Duration::from_millis(if a.no_stream { 500 } else { 1000 });
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut prev = sample(ids.clone()).await;
    loop {
        tokio::time::sleep(interval).await;
        let cur = sample(ids.clone()).await;
        let rows: Vec<serde_json::Value> = cur
            .iter()
            .map(|(id, name, s)| {
                let before = prev.iter().find(|(p, _, _)| p == id).map_or(s.cpu_usage_ns, |(_, _, p)| p.cpu_usage_ns);
                view::stats_row(id, name, s, before, interval)
            })
            .collect();
        // Clear the screen between samples, as docker does: on a terminal only.
        if !a.no_stream && tty && conn.format == Format::Table {
            print!("\x1b[2J\x1b[H");
        }
        output::rows(&conn.format, view::STATS_TABLE, view::STATS_COLUMNS, &rows)?;
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
            changes: a.change,
        })
        .await?
        .into_inner();
    if conn.format == Format::Json {
        output::json(&json!({"Name": r.name, "Digest": r.digest, "Id": r.config_digest}));
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
            println!("{} {}", c.kind, berth_common::text::printable(&c.path));
        }
    }
    Ok(0)
}

async fn top(conn: &Conn, a: IdArg) -> Result<i32> {
    let procs = conn.tasks().list_pids(v1::ListPidsRequest { container_id: a.container }).await?.into_inner().processes;
    if conn.format == Format::Json {
        output::json(&serde_json::Value::Array(procs.iter().map(view::top_json).collect()));
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = procs.iter().map(view::top_row).collect();
    output::table(&view::TOP_HEADER, &rows);
    Ok(0)
}
