//! Tasks service.

use std::sync::Arc;
use std::time::Duration;

use berth_api::v1::{self, tasks_server::TasksServer};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::{convert, namespace, stream, MessageStream};
use crate::metadata::ExitInfo;
use crate::runtime::{AttachInput, AttachOutput, ExecId, Proc};
use crate::service::tasks::ExecRequest;
use crate::service::Services;

pub struct TasksApi {
    services: Arc<Services>,
}

pub fn service(services: Arc<Services>) -> TasksServer<TasksApi> {
    TasksServer::new(TasksApi { services })
}

fn wait_response(e: &ExitInfo) -> v1::WaitTaskResponse {
    v1::WaitTaskResponse { exit_code: e.exit_code, exited_at: convert::timestamp(e.finished_at) }
}

/// What one attach message asks for, in order: a size, input, end of input.
fn attach_inputs(m: v1::AttachRequest) -> Vec<AttachInput> {
    let mut out = Vec::new();
    if m.width > 0 && m.height > 0 {
        let clamp = |v: u32| v.min(u16::MAX as u32) as u16;
        out.push(AttachInput::Resize { width: clamp(m.width), height: clamp(m.height) });
    }
    if !m.stdin.is_empty() {
        out.push(AttachInput::Stdin(m.stdin));
    }
    if m.close_stdin {
        out.push(AttachInput::CloseStdin);
    }
    out
}

fn attach_message(o: AttachOutput) -> v1::AttachResponse {
    match o {
        AttachOutput::Stdout(data) => v1::AttachResponse { stream: "stdout".into(), data, ..Default::default() },
        AttachOutput::Stderr(data) => v1::AttachResponse { stream: "stderr".into(), data, ..Default::default() },
        AttachOutput::Exit(code) => v1::AttachResponse { exited: true, exit_code: code, ..Default::default() },
    }
}

#[tonic::async_trait]
impl v1::tasks_server::Tasks for TasksApi {
    async fn create(&self, req: Request<v1::CreateTaskRequest>) -> Result<Response<v1::CreateTaskResponse>, Status> {
        let ns = namespace(&req)?;
        let container_id = self.services.tasks.create(&ns, &req.get_ref().container_id).await?;
        Ok(Response::new(v1::CreateTaskResponse { container_id }))
    }

    async fn start(&self, req: Request<v1::StartTaskRequest>) -> Result<Response<v1::StartTaskResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let pid = self.services.tasks.start(&ns, &r.container_id, &Proc::parse(&r.exec_id)?).await?;
        Ok(Response::new(v1::StartTaskResponse { pid }))
    }

    async fn kill(&self, req: Request<v1::KillTaskRequest>) -> Result<Response<v1::KillTaskResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.services.tasks.kill(&ns, &r.container_id, &Proc::parse(&r.exec_id)?, &r.signal, r.all).await?;
        Ok(Response::new(v1::KillTaskResponse {}))
    }

    async fn stop(&self, req: Request<v1::StopTaskRequest>) -> Result<Response<v1::WaitTaskResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let timeout = r.timeout_set.then(|| Duration::from_secs(r.timeout_secs as u64));
        let exit = self.services.tasks.stop(&ns, &r.container_id, timeout).await?;
        Ok(Response::new(wait_response(&exit)))
    }

    async fn wait(&self, req: Request<v1::WaitTaskRequest>) -> Result<Response<v1::WaitTaskResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let timeout = (r.timeout_ms > 0).then(|| Duration::from_millis(r.timeout_ms));
        let exit = self.services.tasks.wait(&ns, &r.container_id, &Proc::parse(&r.exec_id)?, timeout).await?;
        Ok(Response::new(wait_response(&exit)))
    }

    async fn delete(&self, req: Request<v1::DeleteTaskRequest>) -> Result<Response<v1::DeleteTaskResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let exit = self.services.tasks.delete(&ns, &r.container_id, &Proc::parse(&r.exec_id)?, r.force).await?;
        let (exit_code, exited_at) = exit.map_or((0, 0), |e| (e.exit_code, e.finished_at));
        Ok(Response::new(v1::DeleteTaskResponse { exit_code, exited_at: convert::timestamp(exited_at) }))
    }

    async fn exec(&self, req: Request<v1::ExecRequest>) -> Result<Response<v1::ExecResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let exec_id = if r.exec_id.is_empty() { None } else { Some(ExecId::parse(&r.exec_id)?) };
        let exec = ExecRequest { exec_id, args: r.args, env: r.env, workdir: r.workdir, user: r.user, tty: r.tty, stdin: r.stdin };
        let exec_id = self.services.tasks.exec(&ns, &r.container_id, exec).await?;
        Ok(Response::new(v1::ExecResponse { exec_id: exec_id.to_string() }))
    }

    async fn pause(&self, req: Request<v1::PauseTaskRequest>) -> Result<Response<v1::PauseTaskResponse>, Status> {
        let ns = namespace(&req)?;
        self.services.tasks.pause(&ns, &req.get_ref().container_id, true).await?;
        Ok(Response::new(v1::PauseTaskResponse {}))
    }

    async fn resume(&self, req: Request<v1::ResumeTaskRequest>) -> Result<Response<v1::ResumeTaskResponse>, Status> {
        let ns = namespace(&req)?;
        self.services.tasks.pause(&ns, &req.get_ref().container_id, false).await?;
        Ok(Response::new(v1::ResumeTaskResponse {}))
    }

    async fn list_pids(&self, req: Request<v1::ListPidsRequest>) -> Result<Response<v1::ListPidsResponse>, Status> {
        let ns = namespace(&req)?;
        let procs = self.services.tasks.processes(&ns, &req.get_ref().container_id).await?;
        let processes = procs
            .into_iter()
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
            .collect();
        Ok(Response::new(v1::ListPidsResponse { processes }))
    }

    async fn stats(&self, req: Request<v1::StatsRequest>) -> Result<Response<v1::StatsResponse>, Status> {
        let ns = namespace(&req)?;
        let s = self.services.tasks.stats(&ns, &req.get_ref().container_id).await?;
        Ok(Response::new(v1::StatsResponse {
            cpu_usage_ns: s.stats.cpu_usage_ns,
            memory_usage_bytes: s.stats.memory_usage_bytes,
            memory_limit_bytes: s.stats.memory_limit_bytes,
            pids_current: s.stats.pids_current,
            pids_limit: s.stats.pids_limit,
            read_at: convert::system_time(s.read_at),
        }))
    }

    type AttachStream = MessageStream<v1::AttachResponse>;

    async fn attach(&self, req: Request<Streaming<v1::AttachRequest>>) -> Result<Response<Self::AttachStream>, Status> {
        let ns = namespace(&req)?;
        let mut input = req.into_inner();
        let first = input.next().await.ok_or_else(|| Status::invalid_argument("attach needs a first message naming the process"))??;
        let (container_id, proc) = (first.container_id.clone(), Proc::parse(&first.exec_id)?);
        // The first message's input, then the rest's until the client stops or fails.
        let rest = input.map_while(Result::ok).map(attach_inputs);
        let inputs = tokio_stream::once(attach_inputs(first)).chain(rest);
        let rx = self.services.tasks.attach(&ns, &container_id, &proc, Box::pin(inputs)).await?;
        Ok(Response::new(stream(rx, attach_message)))
    }

    async fn resize(&self, req: Request<v1::ResizeRequest>) -> Result<Response<v1::ResizeResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.services.tasks.resize(&ns, &r.container_id, &Proc::parse(&r.exec_id)?, r.width, r.height).await?;
        Ok(Response::new(v1::ResizeResponse {}))
    }
}
