//! Tasks service.

use std::sync::Arc;
use std::time::Duration;

use berth_api::v1::{self, tasks_server::TasksServer};
use berth_shim::protocol::frame;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::{blocking, convert, namespace};
use crate::container::spec::parse_signal;
use crate::metadata::{ContainerRecord, ExitInfo};
use crate::runtime::{cgroups, procs};
use crate::server::Agent;

/// `stop` waits this long for the stop signal to work when the caller does not say.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

pub struct TasksService {
    agent: Arc<Agent>,
}

pub fn service(agent: Arc<Agent>) -> TasksServer<TasksService> {
    TasksServer::new(TasksService { agent })
}

fn wait_response(e: &ExitInfo) -> v1::WaitTaskResponse {
    v1::WaitTaskResponse { exit_code: e.exit_code, exited_at: convert::timestamp(e.finished_at) }
}

fn valid_exec_id(id: &str) -> Result<(), Status> {
    let ok = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!("invalid exec id {:?}: use 1-64 of [a-zA-Z0-9_.-]", id.chars().take(80).collect::<String>())))
    }
}

impl TasksService {
    async fn find(&self, ns: &str, id: &str) -> Result<ContainerRecord, Status> {
        super::find_container(&self.agent, ns, id).await
    }
}

#[tonic::async_trait]
impl v1::tasks_server::Tasks for TasksService {
    async fn create(&self, req: Request<v1::CreateTaskRequest>) -> Result<Response<v1::CreateTaskResponse>, Status> {
        let ns = namespace(&req)?;
        let rec = self.find(&ns, &req.get_ref().container_id).await?;
        self.agent.tasks.create(&ns, &rec).await?;
        Ok(Response::new(v1::CreateTaskResponse { container_id: rec.id }))
    }

    async fn start(&self, req: Request<v1::StartTaskRequest>) -> Result<Response<v1::StartTaskResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let rec = self.find(&ns, &r.container_id).await?;
        let pid = self.agent.tasks.start(&ns, &rec, &r.exec_id).await?;
        Ok(Response::new(v1::StartTaskResponse { pid }))
    }

    async fn kill(&self, req: Request<v1::KillTaskRequest>) -> Result<Response<v1::KillTaskResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let signal = if r.signal.is_empty() { 15 } else { parse_signal(&r.signal).map_err(|e| Status::invalid_argument(e.to_string()))? };
        let rec = self.find(&ns, &r.container_id).await?;
        self.agent.tasks.kill(&ns, &rec, &r.exec_id, signal, r.all).await?;
        Ok(Response::new(v1::KillTaskResponse {}))
    }

    async fn stop(&self, req: Request<v1::StopTaskRequest>) -> Result<Response<v1::WaitTaskResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let timeout = if r.timeout_set { Duration::from_secs(r.timeout_secs.min(3600) as u64) } else { DEFAULT_STOP_TIMEOUT };
        let rec = self.find(&ns, &r.container_id).await?;
        let exit = self.agent.tasks.stop(&ns, &rec, timeout).await?;
        Ok(Response::new(wait_response(&exit)))
    }

    async fn wait(&self, req: Request<v1::WaitTaskRequest>) -> Result<Response<v1::WaitTaskResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let rec = self.find(&ns, &r.container_id).await?;
        let timeout = (r.timeout_ms > 0).then(|| Duration::from_millis(r.timeout_ms));
        let exit = self.agent.tasks.wait(&ns, &rec, &r.exec_id, timeout).await?;
        Ok(Response::new(wait_response(&exit)))
    }

    async fn delete(&self, req: Request<v1::DeleteTaskRequest>) -> Result<Response<v1::DeleteTaskResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let rec = self.find(&ns, &r.container_id).await?;
        let exit = if r.exec_id.is_empty() {
            self.agent.tasks.delete(&ns, &rec, r.force).await?
        } else {
            Some(self.agent.tasks.delete_exec(&ns, &rec, &r.exec_id, r.force).await?)
        };
        let exit = exit.unwrap_or(ExitInfo { exit_code: 0, started_at: 0, finished_at: 0, oom_killed: false });
        Ok(Response::new(v1::DeleteTaskResponse { exit_code: exit.exit_code, exited_at: convert::timestamp(exit.finished_at) }))
    }

    async fn exec(&self, req: Request<v1::ExecRequest>) -> Result<Response<v1::ExecResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        if r.args.is_empty() {
            return Err(Status::invalid_argument("exec needs a command"));
        }
        let exec_id = if r.exec_id.is_empty() { crate::content::random_hex(8) } else { r.exec_id.clone() };
        valid_exec_id(&exec_id)?;
        let rec = self.find(&ns, &r.container_id).await?;
        if !self.agent.tasks.is_running(&ns, &rec.id) {
            return Err(Status::failed_precondition(format!("container {} is not running", rec.name)));
        }
        let mut process = rec.spec.get("process").cloned().unwrap_or_default();
        process["args"] = serde_json::json!(r.args);
        process["terminal"] = r.tty.into();
        if !r.workdir.is_empty() {
            if !r.workdir.starts_with('/') {
                return Err(Status::invalid_argument(format!("the working directory {:?} is not absolute", r.workdir)));
            }
            process["cwd"] = r.workdir.clone().into();
        }
        let mut env: Vec<String> = process
            .get("env")
            .and_then(|e| e.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        for kv in &r.env {
            let Some((k, _)) = kv.split_once('=') else {
                return Err(Status::invalid_argument(format!("invalid environment entry {kv:?}: use KEY=VALUE")));
            };
            env.retain(|e| e.split_once('=').map(|(ek, _)| ek) != Some(k));
            env.push(kv.clone());
        }
        if r.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
        }
        process["env"] = serde_json::json!(env);
        if !r.user.is_empty() {
            let agent = self.agent.clone();
            let (ns2, rec2, spec) = (ns.clone(), rec.clone(), r.user.clone());
            let u = blocking(move || Ok(agent.containers.resolve_user(&ns2, &rec2, &spec)?)).await?;
            process["user"] = serde_json::json!({ "uid": u.uid, "gid": u.gid, "additionalGids": u.additional_gids });
        }
        self.agent.tasks.exec(&ns, &rec, &exec_id, process, r.tty, r.stdin).await?;
        Ok(Response::new(v1::ExecResponse { exec_id }))
    }

    async fn pause(&self, req: Request<v1::PauseTaskRequest>) -> Result<Response<v1::PauseTaskResponse>, Status> {
        let ns = namespace(&req)?;
        let rec = self.find(&ns, &req.get_ref().container_id).await?;
        self.agent.tasks.pause(&ns, &rec, true).await?;
        Ok(Response::new(v1::PauseTaskResponse {}))
    }

    async fn resume(&self, req: Request<v1::ResumeTaskRequest>) -> Result<Response<v1::ResumeTaskResponse>, Status> {
        let ns = namespace(&req)?;
        let rec = self.find(&ns, &req.get_ref().container_id).await?;
        self.agent.tasks.pause(&ns, &rec, false).await?;
        Ok(Response::new(v1::ResumeTaskResponse {}))
    }

    async fn list_pids(&self, req: Request<v1::ListPidsRequest>) -> Result<Response<v1::ListPidsResponse>, Status> {
        let ns = namespace(&req)?;
        let rec = self.find(&ns, &req.get_ref().container_id).await?;
        let pids = self.agent.tasks.pids(&ns, &rec).await?;
        let processes = blocking(move || {
            Ok(pids
                .into_iter()
                .filter_map(procs::info)
                .map(|p| v1::ProcessInfo {
                    pid: p.pid,
                    ppid: p.ppid,
                    uid: p.uid,
                    command: p.command,
                    state: p.state,
                    elapsed_secs: p.elapsed_secs,
                    cpu_ms: p.cpu_ms,
                    rss_bytes: p.rss_bytes,
                })
                .collect())
        })
        .await?;
        Ok(Response::new(v1::ListPidsResponse { processes }))
    }

    async fn stats(&self, req: Request<v1::StatsRequest>) -> Result<Response<v1::StatsResponse>, Status> {
        let ns = namespace(&req)?;
        let rec = self.find(&ns, &req.get_ref().container_id).await?;
        if !self.agent.tasks.is_running(&ns, &rec.id) {
            return Err(Status::failed_precondition(format!("container {} is not running", rec.name)));
        }
        let path = format!("/berth/{ns}/{}", rec.id);
        let s = blocking(move || cgroups::stats(&path).ok_or_else(|| Status::not_found("the container's cgroup is gone"))).await?;
        Ok(Response::new(v1::StatsResponse {
            cpu_usage_ns: s.cpu_usage_ns,
            memory_usage_bytes: s.memory_usage_bytes,
            memory_limit_bytes: s.memory_limit_bytes,
            pids_current: s.pids_current,
            pids_limit: s.pids_limit,
            read_at: convert::system_time(std::time::SystemTime::now()),
        }))
    }

    type AttachStream = ReceiverStream<Result<v1::AttachResponse, Status>>;

    async fn attach(&self, req: Request<Streaming<v1::AttachRequest>>) -> Result<Response<Self::AttachStream>, Status> {
        let ns = namespace(&req)?;
        let mut input = req.into_inner();
        let first = input.next().await.ok_or_else(|| Status::invalid_argument("attach needs a first message naming the process"))??;
        let rec = self.find(&ns, &first.container_id).await?;
        let conn = self.agent.tasks.attach(&ns, &rec, &first.exec_id).await?;
        let (mut frames, mut writer) = conn.split();
        // Input: stdin, end of input and sizes go to the shim as frames.
        tokio::spawn(async move {
            let mut msg = Some(first);
            loop {
                if let Some(m) = msg.take() {
                    let r = async {
                        if m.width > 0 && m.height > 0 {
                            let mut p = (m.width.min(u16::MAX as u32) as u16).to_be_bytes().to_vec();
                            p.extend((m.height.min(u16::MAX as u32) as u16).to_be_bytes());
                            writer.write_frame(frame::RESIZE, &p).await?;
                        }
                        if !m.stdin.is_empty() {
                            writer.write_frame(frame::STDIN, &m.stdin).await?;
                        }
                        if m.close_stdin {
                            writer.write_frame(frame::CLOSE_STDIN, &[]).await?;
                        }
                        std::io::Result::Ok(())
                    };
                    if r.await.is_err() {
                        return;
                    }
                }
                match input.next().await {
                    Some(Ok(m)) => msg = Some(m),
                    // The client stopped sending, or detached: the process's stdin
                    // stays open (only `close_stdin` closes it); output goes on.
                    _ => return,
                }
            }
        });
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    f = frames.read_frame() => f,
                    // The client left: stop relaying (the shim drops the connection).
                    () = tx.closed() => return,
                };
                let msg = match next {
                    Ok(Some((frame::STDOUT, data))) => v1::AttachResponse { stream: "stdout".into(), data, ..Default::default() },
                    Ok(Some((frame::STDERR, data))) => v1::AttachResponse { stream: "stderr".into(), data, ..Default::default() },
                    Ok(Some((frame::EXIT, data))) if data.len() == 4 => {
                        let code = i32::from_be_bytes([data[0], data[1], data[2], data[3]]);
                        let _ = tx.send(Ok(v1::AttachResponse { exited: true, exit_code: code, ..Default::default() })).await;
                        return;
                    }
                    Ok(Some(_)) => continue,
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(Status::unavailable(format!("the shim connection broke: {e}")))).await;
                        return;
                    }
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn resize(&self, req: Request<v1::ResizeRequest>) -> Result<Response<v1::ResizeResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let rec = self.find(&ns, &r.container_id).await?;
        let (w, h) = (r.width.min(u16::MAX as u32) as u16, r.height.min(u16::MAX as u32) as u16);
        self.agent.tasks.resize(&ns, &rec, &r.exec_id, w, h).await?;
        Ok(Response::new(v1::ResizeResponse {}))
    }
}
