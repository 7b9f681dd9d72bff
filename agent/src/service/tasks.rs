//! Tasks: the running side of containers — start, signal, stop, wait,
//! exec, attach, pause, and what runs inside.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};

use super::containers::find;
use super::Core;
use super::{blocking, Error};
use crate::container::spec::{parse_signal, ExecSpec};
use crate::metadata::ExitInfo;
use crate::runtime::procs::{self, ProcInfo};
use crate::runtime::{cgroups, AttachInput, AttachOutput, ExecId, Proc};

/// `stop` waits this long for the stop signal to work when the caller does not say.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest stop timeout taken.
const MAX_STOP_TIMEOUT: Duration = Duration::from_secs(3600);

/// What an exec runs.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    /// None: one is made.
    pub exec_id: Option<ExecId>,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub workdir: String,
    /// A `--user` to resolve against the image; empty: the container's.
    pub user: String,
    pub tty: bool,
    pub stdin: bool,
}

/// What a command run to its end printed, and how it ended.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Killed when its time was up (`exit_code` 137).
    pub timed_out: bool,
}

/// The most bytes of output (both streams) a command run to its end keeps: the CRI's
/// ExecSync answer must fit the kubelet's 16 MiB message.
const EXEC_OUTPUT_MAX: usize = 15 << 20;

/// A container's resource use, from its cgroup.
#[derive(Debug, Clone)]
pub struct Stats {
    pub stats: cgroups::Stats,
    pub read_at: SystemTime,
}

#[derive(Clone)]
pub struct TaskService {
    core: Arc<Core>,
}

impl TaskService {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        TaskService { core }
    }

    /// Create the task (its shim and the runtime's container) without starting it.
    pub async fn create(&self, ns: &str, id: &str) -> Result<String, Error> {
        let rec = find(&self.core, ns, id).await?;
        self.core.tasks.create(ns, &rec).await?;
        Ok(rec.id)
    }

    /// Start the init (creating the task when needed) or an exec; returns its
    /// pid. The user's start of the init undoes their stop (restart policies
    /// apply again) and counts restarts from zero.
    pub async fn start(&self, ns: &str, id: &str, proc: &Proc) -> Result<u32, Error> {
        let mut rec = find(&self.core, ns, id).await?;
        if *proc == Proc::Init {
            // The user's start replaces a restart the policy had pending.
            self.core.tasks.end_restart(ns, &rec.id, None);
            if rec.stopped_by_user || rec.restart_count > 0 {
                rec = self.set_user_state(ns, &rec.id, false).await?;
            }
        }
        Ok(self.core.tasks.start(ns, &rec, proc).await?)
    }

    /// Record the user's stop (or start): `stopped_by_user`, and a restart count from zero on a start.
    async fn set_user_state(&self, ns: &str, id: &str, stopped: bool) -> Result<crate::metadata::ContainerRecord, Error> {
        let (core, ns, id) = (self.core.clone(), ns.to_owned(), id.to_owned());
        blocking(move || {
            Ok(core.meta.update_container(&ns, &id, |r| {
                r.stopped_by_user = stopped;
                if !stopped {
                    r.restart_count = 0;
                }
            })?)
        })
        .await
    }

    /// Signal the init (or an exec); `signal` by name or number, SIGTERM when
    /// empty. SIGKILL or the container's stop signal to the init is a stop by
    /// the user, as docker counts it: no restart policy brings it back.
    pub async fn kill(&self, ns: &str, id: &str, proc: &Proc, signal: &str, all: bool) -> Result<(), Error> {
        let signal = if signal.is_empty() { 15 } else { parse_signal(signal).map_err(|e| Error::InvalidArgument(e.to_string()))? };
        let mut rec = find(&self.core, ns, id).await?;
        if *proc == Proc::Init && (signal == 9 || signal == rec.stop_signal) && self.core.tasks.is_running(ns, &rec.id) {
            if !rec.stopped_by_user {
                rec = self.set_user_state(ns, &rec.id, true).await?;
            }
            self.core.tasks.end_restart(ns, &rec.id, None);
        }
        Ok(self.core.tasks.kill(ns, &rec, proc, signal, all).await?)
    }

    /// The stop signal, then SIGKILL after `timeout` (else the container's
    /// `--stop-timeout`, else 10 s).
    pub async fn stop(&self, ns: &str, id: &str, timeout: Option<Duration>) -> Result<ExitInfo, Error> {
        let mut rec = find(&self.core, ns, id).await?;
        // Recorded first: the exit that follows brings no restart, and a
        // restart the policy had pending does not happen.
        if !rec.stopped_by_user {
            rec = self.set_user_state(ns, &rec.id, true).await?;
        }
        self.core.tasks.end_restart(ns, &rec.id, None);
        let own = rec.config.stop_timeout.map(|s| Duration::from_secs(s.into()));
        let timeout = timeout.or(own).map_or(DEFAULT_STOP_TIMEOUT, |t| t.min(MAX_STOP_TIMEOUT));
        Ok(self.core.tasks.stop(ns, &rec, timeout).await?)
    }

    /// Wait for the init (or an exec) to exit, up to `timeout`.
    pub async fn wait(&self, ns: &str, id: &str, proc: &Proc, timeout: Option<Duration>) -> Result<ExitInfo, Error> {
        let rec = find(&self.core, ns, id).await?;
        Ok(self.core.tasks.wait(ns, &rec, proc, timeout).await?)
    }

    /// Delete the task (or an exec's record); None when it never ran.
    pub async fn delete(&self, ns: &str, id: &str, proc: &Proc, force: bool) -> Result<Option<ExitInfo>, Error> {
        let rec = find(&self.core, ns, id).await?;
        match proc {
            Proc::Init => Ok(self.core.tasks.delete(ns, &rec, force).await?),
            Proc::Exec(exec_id) => Ok(Some(self.core.tasks.delete_exec(ns, &rec, exec_id, force).await?)),
        }
    }

    /// Add an exec to a running container (started by `start` with its id);
    /// returns its id. Its process is built as the init's is.
    pub async fn exec(&self, ns: &str, id: &str, req: ExecRequest) -> Result<ExecId, Error> {
        if req.args.is_empty() {
            return Err(Error::InvalidArgument("exec needs a command".into()));
        }
        let exec_id = req.exec_id.unwrap_or_else(ExecId::generate);
        let rec = find(&self.core, ns, id).await?;
        if !self.core.tasks.is_running(ns, &rec.id) {
            return Err(Error::FailedPrecondition(format!("container {} is not running", rec.name)));
        }
        let spec = ExecSpec { args: req.args, env: req.env, workdir: req.workdir, tty: req.tty };
        let (core, ns2, rec2, user) = (self.core.clone(), ns.to_owned(), rec.clone(), req.user);
        let process = blocking(move || Ok(core.containers.exec_process(&ns2, &rec2, &spec, &user)?)).await?;
        let process = serde_json::to_value(&process).map_err(|e| Error::Internal(format!("encoding the exec's process: {e}")))?;
        self.core.tasks.exec(ns, &rec, &exec_id, process, req.tty, req.stdin).await?;
        Ok(exec_id)
    }

    /// Run `args` in the running container to its end and collect what it prints (at most
    /// 15 MiB in all). With a `timeout` the process is killed when it runs out (and gone when
    /// this returns), and what it printed by then is returned, marked `timed_out` (exit
    /// code 137). It runs to its end, and its exec is
    /// removed, even when the caller goes.
    pub async fn exec_output(&self, ns: &str, id: &str, args: Vec<String>, timeout: Option<Duration>) -> Result<ExecOutput, Error> {
        let (svc, ns, id) = (self.clone(), ns.to_owned(), id.to_owned());
        let job = tokio::spawn(async move {
            let exec_id = svc.exec(&ns, &id, ExecRequest { args, ..Default::default() }).await?;
            let proc = Proc::Exec(exec_id);
            let result = svc.run_to_end(&ns, &id, &proc, timeout).await;
            // The exec's record goes whatever happened (killed first if it still runs).
            if let Err(e) = svc.delete(&ns, &id, &proc, true).await {
                tracing::debug!(container = %id, error = %e, "removing a finished exec");
            }
            result
        });
        job.await.map_err(|e| Error::Internal(format!("the exec failed: {e}")))?
    }

    async fn run_to_end(&self, ns: &str, id: &str, proc: &Proc, timeout: Option<Duration>) -> Result<ExecOutput, Error> {
        let mut frames = self.attach(ns, id, proc, tokio_stream::empty()).await?;
        self.start(ns, id, proc).await?;
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut out = ExecOutput::default();
        let keep = |out: &mut ExecOutput, stderr: bool, data: Vec<u8>| {
            let room = EXEC_OUTPUT_MAX.saturating_sub(out.stdout.len() + out.stderr.len());
            let buf = if stderr { &mut out.stderr } else { &mut out.stdout };
            buf.extend_from_slice(&data[..data.len().min(room)]);
        };
        loop {
            let next = match deadline {
                Some(d) => match tokio::time::timeout_at(d, frames.recv()).await {
                    Ok(next) => next,
                    Err(_) => {
                        out.exit_code = 137;
                        out.timed_out = true;
                        let _ = self.kill(ns, id, proc, "KILL", false).await;
                        // Gone when this returns (bounded): a caller that looks next finds
                        // no trace of it.
                        let _ = tokio::time::timeout(Duration::from_secs(2), async {
                            while let Some(Ok(f)) = frames.recv().await {
                                if matches!(f, AttachOutput::Exit(_)) {
                                    break;
                                }
                            }
                        })
                        .await;
                        return Ok(out);
                    }
                },
                None => frames.recv().await,
            };
            match next {
                Some(Ok(AttachOutput::Stdout(d))) => keep(&mut out, false, d),
                Some(Ok(AttachOutput::Stderr(d))) => keep(&mut out, true, d),
                Some(Ok(AttachOutput::Exit(code))) => {
                    out.exit_code = code;
                    return Ok(out);
                }
                Some(Err(e)) => return Err(e),
                None => {
                    // The relay ended without the exit: ask for it.
                    let exit = self.wait(ns, id, proc, Some(Duration::from_secs(5))).await?;
                    out.exit_code = exit.exit_code;
                    return Ok(out);
                }
            }
        }
    }

    /// Freeze (`pause`) or thaw every process of the container.
    pub async fn pause(&self, ns: &str, id: &str, pause: bool) -> Result<(), Error> {
        let rec = find(&self.core, ns, id).await?;
        Ok(self.core.tasks.pause(ns, &rec, pause).await?)
    }

    /// The container's processes, as `top` shows them.
    pub async fn processes(&self, ns: &str, id: &str) -> Result<Vec<ProcInfo>, Error> {
        let rec = find(&self.core, ns, id).await?;
        let pids = self.core.tasks.pids(ns, &rec).await?;
        blocking(move || Ok(pids.into_iter().filter_map(procs::info).collect())).await
    }

    pub async fn stats(&self, ns: &str, id: &str) -> Result<Stats, Error> {
        let rec = find(&self.core, ns, id).await?;
        if !self.core.tasks.is_running(ns, &rec.id) {
            return Err(Error::FailedPrecondition(format!("container {} is not running", rec.name)));
        }
        let (path, name) = (rec.cgroups_path, rec.name);
        // On a blocking thread: cgroup v2's memory.stat can make its reader wait while the
        // kernel flushes its counters.
        blocking(move || {
            // A task created but not started has no cgroup yet; one that just exited, none any more.
            let stats = cgroups::stats(&path)
                .ok_or_else(|| Error::FailedPrecondition(format!("container {name} is not running (it has no cgroup)")))?;
            Ok(Stats { stats, read_at: SystemTime::now() })
        })
        .await
    }

    /// Open the container's log file again, where it was: after its reader (the kubelet)
    /// renamed it away, output goes to a new file at the same path.
    pub async fn reopen_log(&self, ns: &str, id: &str) -> Result<(), Error> {
        let rec = find(&self.core, ns, id).await?;
        if !self.core.tasks.is_running(ns, &rec.id) {
            return Err(Error::FailedPrecondition(format!("container {} is not running", rec.name)));
        }
        Ok(self.core.tasks.reopen_log(ns, &rec).await?)
    }

    /// Set the terminal size of the init (or an exec).
    pub async fn resize(&self, ns: &str, id: &str, proc: &Proc, width: u32, height: u32) -> Result<(), Error> {
        let rec = find(&self.core, ns, id).await?;
        let (w, h) = (width.min(u16::MAX as u32) as u16, height.min(u16::MAX as u32) as u16);
        Ok(self.core.tasks.resize(ns, &rec, proc, w, h).await?)
    }

    /// Attach to the init (or an exec): `input` goes to the process, and its
    /// output comes back until it exits. A client that stops sending leaves
    /// the process's stdin open (only [`AttachInput::CloseStdin`] closes it);
    /// a client that goes away stops the relay, not the process.
    pub async fn attach(
        &self,
        ns: &str,
        id: &str,
        proc: &Proc,
        mut input: impl Stream<Item = Vec<AttachInput>> + Send + Unpin + 'static,
    ) -> Result<mpsc::Receiver<Result<AttachOutput, Error>>, Error> {
        let rec = find(&self.core, ns, id).await?;
        let conn = self.core.tasks.attach(ns, &rec, proc).await?;
        let (mut frames, mut writer) = conn.split();
        tokio::spawn(async move {
            while let Some(batch) = input.next().await {
                for i in &batch {
                    if writer.send(i).await.is_err() {
                        return;
                    }
                }
            }
        });
        let (tx, rx) = mpsc::channel(64);
        let name = rec.name.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    f = frames.next_output() => f,
                    // The client left: stop relaying (the shim drops the connection).
                    () = tx.closed() => return,
                };
                let (msg, last) = match next {
                    Ok(Some(out)) => {
                        let last = matches!(out, AttachOutput::Exit(_));
                        (Ok(out), last)
                    }
                    Ok(None) => return,
                    Err(e) => {
                        let why = format!("the attach connection broke: {e}");
                        (Err(Error::Task(crate::runtime::TaskError::ShimGone { id: name.clone(), why })), true)
                    }
                };
                if tx.send(msg).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(rx)
    }
}
