//! Builder service: Build (a bidirectional stream) and Prune.

use std::sync::Arc;
use std::time::Duration;

use berth_api::v1::{self, builder_server::BuilderServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::registry::{creds, progress_message};
use super::{namespace, MessageStream};
use crate::service::build::{BuildEvent, BuildInput, BuildOptions, BuildResult};
use crate::service::Services;

/// How long the agent waits for the client's next message while it expects one.
const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

pub struct BuilderApi {
    services: Arc<Services>,
}

pub fn service(services: Arc<Services>) -> BuilderServer<BuilderApi> {
    BuilderServer::new(BuilderApi { services })
}

fn options(s: v1::BuildStart) -> BuildOptions {
    BuildOptions {
        dockerfile: s.dockerfile,
        dockerfile_name: s.dockerfile_name,
        dockerignore: s.dockerignore,
        tags: s.tags,
        build_args: s.build_args.into_iter().collect(),
        target: s.target,
        no_cache: s.no_cache,
        pull: s.pull,
        labels: s.labels.into_iter().collect(),
        network: s.network,
        secret_ids: s.secret_ids,
        context_key: s.context_key,
        plain_http: s.plain_http,
        creds: creds(s.creds),
    }
}

fn input(m: v1::BuildRequest) -> Result<BuildInput, Status> {
    use v1::build_request::Msg;
    match m.msg {
        Some(Msg::Entries(e)) => Ok(BuildInput::Entries {
            entries: e.entries.into_iter().map(|e| (e.path, e.mode, e.size.max(0) as u64, e.mtime_nanos, e.link_target)).collect(),
            last: e.last,
        }),
        Some(Msg::File(f)) => Ok(BuildInput::File { path: f.path, data: f.data, eof: f.eof }),
        Some(Msg::Secret(s)) => Ok(BuildInput::Secret { id: s.id, data: (!s.missing).then_some(s.data) }),
        Some(Msg::Start(_)) => Err(Status::invalid_argument("the build options come once, first")),
        None => Err(Status::invalid_argument("an empty build message")),
    }
}

fn event(e: BuildEvent) -> v1::BuildResponse {
    use v1::build_response::Msg;
    let msg = match e {
        BuildEvent::Need(paths) => Msg::Need(v1::NeedFiles { paths }),
        BuildEvent::Step(s) => Msg::Step(v1::BuildStep {
            stage: s.stage,
            index: s.index,
            total: s.total,
            instruction: s.instruction,
            status: s.status.into(),
            millis: s.millis,
        }),
        BuildEvent::Output { stage, index, data } => Msg::Output(v1::StepOutput { stage, index, data }),
        BuildEvent::Pull(p) => Msg::Pull(progress_message(p)),
        BuildEvent::Secret(id) => Msg::Secret(v1::NeedSecret { id }),
    };
    v1::BuildResponse { msg: Some(msg) }
}

fn result(r: BuildResult) -> v1::BuildResponse {
    v1::BuildResponse {
        msg: Some(v1::build_response::Msg::Result(v1::BuildResult {
            digest: r.digest.to_string(),
            image_id: r.image_id.to_string(),
            names: r.names,
            millis: r.millis,
            steps_cached: r.steps_cached,
            steps_run: r.steps_run,
            context_bytes_sent: r.context_bytes as i64,
        })),
    }
}

#[tonic::async_trait]
impl v1::builder_server::Builder for BuilderApi {
    type BuildStream = MessageStream<v1::BuildResponse>;

    async fn build(&self, req: Request<Streaming<v1::BuildRequest>>) -> Result<Response<Self::BuildStream>, Status> {
        let ns = namespace(&req)?;
        let deadline = super::deadline(&req);
        let mut upload = req.into_inner();
        let first = tokio::time::timeout(CLIENT_IDLE_TIMEOUT, upload.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no build options received"))??
            .ok_or_else(|| Status::invalid_argument("empty build stream"))?;
        let Some(v1::build_request::Msg::Start(start)) = first.msg else {
            return Err(Status::invalid_argument("the first build message must carry the options"));
        };
        let opts = options(start);
        // The client's messages, read as the build asks for them.
        let (in_tx, in_rx) = mpsc::channel(16);
        let (err_tx, mut err_rx) = mpsc::channel::<Status>(1);
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    m = upload.message() => m,
                    () = in_tx.closed() => return,
                };
                let msg = match next {
                    Ok(Some(m)) => input(m),
                    Ok(None) => return,
                    Err(s) => Err(s),
                };
                match msg {
                    Ok(m) => {
                        if in_tx.send(m).await.is_err() {
                            return;
                        }
                    }
                    Err(s) => {
                        let _ = err_tx.send(s).await;
                        return;
                    }
                }
            }
        });
        let (ev_tx, mut ev_rx) = mpsc::channel::<BuildEvent>(64);
        let (out_tx, out_rx) = mpsc::channel::<Result<v1::BuildResponse, Status>>(64);
        let build = self.services.build.clone();
        tokio::spawn(async move {
            let work = build.build(&ns, opts, in_rx, ev_tx);
            tokio::pin!(work);
            let mut gone = false;
            let mut input_error = None;
            let expires = tokio::time::sleep(deadline.unwrap_or(Duration::MAX / 4));
            tokio::pin!(expires);
            let outcome = loop {
                tokio::select! {
                    r = &mut work => break r.map(result).map_err(Status::from),
                    Some(e) = ev_rx.recv() => {
                        if out_tx.send(Ok(event(e))).await.is_err() {
                            gone = true;
                            ev_rx.close();
                        }
                    }
                    // The client went away (Ctrl-C): the build sees its events
                    // closed, stops its running step and cleans up.
                    () = out_tx.closed(), if !gone => {
                        gone = true;
                        ev_rx.close();
                    }
                    // The client's stream broke or sent nonsense: the build stops
                    // (and cleans up) before the error is the answer.
                    // The client's deadline passed: the build stops as if it had gone.
                    () = &mut expires, if deadline.is_some() && input_error.is_none() => {
                        input_error = Some(Status::deadline_exceeded("the build did not finish within the call's deadline"));
                        gone = true;
                        ev_rx.close();
                    }
                    Some(s) = err_rx.recv() => {
                        input_error = Some(s);
                        gone = true;
                        ev_rx.close();
                    }
                }
            };
            let outcome = match input_error {
                Some(s) => Err(s),
                None => outcome,
            };
            while let Ok(e) = ev_rx.try_recv() {
                let _ = out_tx.send(Ok(event(e))).await;
            }
            let _ = out_tx.send(outcome).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }

    async fn prune(&self, req: Request<v1::PruneBuildCacheRequest>) -> Result<Response<v1::PruneBuildCacheResponse>, Status> {
        let r = req.into_inner();
        let keep = Duration::from_secs(r.keep_duration_seconds.max(0) as u64);
        let p = self.services.build.prune(r.all, keep).await?;
        Ok(Response::new(v1::PruneBuildCacheResponse {
            entries_removed: p.entries as i64,
            blobs_removed: p.blobs as i64,
            snapshots_removed: p.snapshots as i64,
            contexts_removed: p.contexts as i64,
            cache_mounts_removed: p.cache_mounts as i64,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::grpc_timeout;

    #[test]
    fn grpc_timeouts_read_as_the_protocol_writes_them() {
        assert_eq!(grpc_timeout("30S"), Some(Duration::from_secs(30)));
        assert_eq!(grpc_timeout("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(grpc_timeout("10"), None);
        assert_eq!(grpc_timeout(""), None);
        assert_eq!(grpc_timeout("xS"), None);
    }
}
