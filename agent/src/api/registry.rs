//! Registry service: pull, push, login check.

use std::sync::Arc;
use std::time::Duration;

use berth_api::v1::{self, registry_server::RegistryServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{convert, namespace};
use crate::image::import::Progress;
use crate::image::oci::Platform;
use crate::registry::{Credentials, PullOptions, PushOptions, RegistryError};
use crate::server::Agent;

/// How long the result waits for a client that stopped reading progress.
const RESULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);

pub struct RegistryService {
    agent: Arc<Agent>,
}

pub fn service(agent: Arc<Agent>) -> RegistryServer<RegistryService> {
    RegistryServer::new(RegistryService { agent })
}

fn creds(c: Option<v1::RegistryCredentials>) -> Option<Credentials> {
    c.filter(|c| !c.username.is_empty()).map(|c| Credentials { username: c.username, password: c.password })
}

fn progress_message(p: Progress) -> v1::TransferProgress {
    let (kind, id, status, size, offset) = match p {
        Progress::Blob { digest, size, status } => ("blob", digest.to_string(), status, size, 0),
        Progress::Bytes { digest, done, total } => ("blob", digest.to_string(), "transferring", total, done),
        Progress::Layer { digest, size, status } => ("layer", digest.to_string(), status, size, 0),
        Progress::Image { name, status } => ("image", name, status, 0, 0),
    };
    v1::TransferProgress { kind: kind.into(), id, status: status.into(), size: size as i64, offset: offset as i64 }
}

pub fn registry_code(e: &RegistryError) -> tonic::Code {
    use tonic::Code;
    match e {
        RegistryError::InvalidArgument(_) => Code::InvalidArgument,
        RegistryError::NotFound(_) => Code::NotFound,
        RegistryError::Unauthorized(_) => Code::PermissionDenied,
        RegistryError::Transport(_) => Code::Unavailable,
        RegistryError::Protocol(_) | RegistryError::TooLarge(_) | RegistryError::DigestMismatch { .. } => Code::DataLoss,
        RegistryError::Image(i) => super::error::image_code(i),
    }
}

impl From<RegistryError> for Status {
    fn from(e: RegistryError) -> Status {
        Status::new(registry_code(&e), e.to_string())
    }
}

/// Run `work` on a blocking thread; progress goes out as it comes (dropped
/// when the client reads slower), the result always, within a bound.
fn stream<T: Send + 'static>(
    work: impl FnOnce(&(dyn Fn(Progress) + Sync)) -> Result<T, Status> + Send + 'static,
    progress_msg: fn(v1::TransferProgress) -> T,
) -> ReceiverStream<Result<T, Status>> {
    let (tx, rx) = mpsc::channel(64);
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let ptx = tx.clone();
        let progress = move |p: Progress| {
            let _ = ptx.try_send(Ok(progress_msg(progress_message(p))));
        };
        let result = work(&progress);
        let _ = handle.block_on(tokio::time::timeout(RESULT_SEND_TIMEOUT, tx.send(result)));
    });
    ReceiverStream::new(rx)
}

#[tonic::async_trait]
impl v1::registry_server::Registry for RegistryService {
    type PullStream = ReceiverStream<Result<v1::PullResponse, Status>>;

    async fn pull(&self, req: Request<v1::PullRequest>) -> Result<Response<Self::PullStream>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        if r.reference.is_empty() {
            return Err(Status::invalid_argument("an image reference is required"));
        }
        let platform = if r.platform.is_empty() {
            Platform::default_platform()
        } else {
            Platform::parse(&r.platform).map_err(|e| Status::invalid_argument(e.to_string()))?
        };
        let opts = PullOptions {
            reference: r.reference,
            platform,
            all_platforms: r.all_platforms,
            plain_http: r.plain_http,
            creds: creds(r.credentials),
        };
        let agent = self.agent.clone();
        let out = stream(
            move |progress| {
                let rec = agent.registries.pull(&ns, &opts, progress).map_err(|e| {
                    tracing::warn!(reference = %opts.reference, error = %e, "pull failed");
                    Status::from(e)
                });
                // Blobs a failed pull stored are unnamed: collect them once no transfer needs them.
                if agent.images.take_pending_gc() || rec.is_err() {
                    if let Err(e) = agent.images.gc() {
                        tracing::warn!(error = %e, "collecting after a pull");
                    }
                }
                let rec = rec?;
                agent.events.publish(&ns, "/images/create", &rec.name, &[("digest", rec.target.digest.to_string())]);
                Ok(v1::PullResponse { event: Some(v1::pull_response::Event::Image(convert::image(&rec))) })
            },
            |p| v1::PullResponse { event: Some(v1::pull_response::Event::Progress(p)) },
        );
        Ok(Response::new(out))
    }

    type PushStream = ReceiverStream<Result<v1::PushResponse, Status>>;

    async fn push(&self, req: Request<v1::PushRequest>) -> Result<Response<Self::PushStream>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        if r.reference.is_empty() {
            return Err(Status::invalid_argument("an image reference is required"));
        }
        let opts = PushOptions { reference: r.reference, plain_http: r.plain_http, creds: creds(r.credentials) };
        let agent = self.agent.clone();
        let out = stream(
            move |progress| {
                let digest = agent.registries.push(&ns, &opts, progress).map_err(|e| {
                    tracing::warn!(reference = %opts.reference, error = %e, "push failed");
                    Status::from(e)
                })?;
                Ok(v1::PushResponse { event: Some(v1::push_response::Event::Digest(digest.to_string())) })
            },
            |p| v1::PushResponse { event: Some(v1::push_response::Event::Progress(p)) },
        );
        Ok(Response::new(out))
    }

    async fn check_login(&self, req: Request<v1::CheckLoginRequest>) -> Result<Response<v1::CheckLoginResponse>, Status> {
        let r = req.into_inner();
        if r.registry.is_empty() {
            return Err(Status::invalid_argument("a registry host is required"));
        }
        let c = creds(r.credentials).ok_or_else(|| Status::invalid_argument("a username is required"))?;
        let agent = self.agent.clone();
        super::blocking(move || Ok(agent.registries.check_login(&r.registry, r.plain_http, &c)?)).await?;
        Ok(Response::new(v1::CheckLoginResponse {}))
    }
}
