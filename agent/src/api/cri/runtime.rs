//! The CRI's RuntimeService: the runtime's version, readiness and configuration, pods and
//! their containers (through the pods service), ExecSync, stats, events; the streaming
//! calls' URLs (through the streams service). Checkpoints and metrics answer UNIMPLEMENTED.

use std::sync::Arc;

use berth_api::cri::{self, runtime_service_server::RuntimeServiceServer};
use tonic::{Request, Response, Status};

use super::convert::{
    container_message, container_resources, container_spec, container_state, container_stats, container_status, pod_id, pod_metadata,
    pod_spec, pod_state, pod_stats, pod_status, required_id,
};
use super::{unimplemented, NAMESPACE};
use crate::service::pods::{PodContainerFilter, PodEventKind, PodFilter};
use crate::service::streams::StreamIo;
use crate::service::Services;
use tokio_stream::StreamExt as _;

pub struct RuntimeApi {
    services: Arc<Services>,
}

pub fn service(services: Arc<Services>) -> RuntimeServiceServer<RuntimeApi> {
    RuntimeServiceServer::new(RuntimeApi { services }).max_decoding_message_size(super::MAX_MESSAGE)
}

/// The CRI version this agent speaks (`runtime.v1`).
const CRI_VERSION: &str = "v1";

/// A container's id as the CRI passes it.
fn container_id(id: &str) -> Result<&str, Status> {
    required_id("container", id)
}

fn condition(kind: &str, ok: bool, reason: &str, message: String) -> cri::RuntimeCondition {
    cri::RuntimeCondition { r#type: kind.to_owned(), status: ok, reason: if ok { String::new() } else { reason.to_owned() }, message }
}

/// Declares the RPCs not served yet: each answers UNIMPLEMENTED, naming itself. (Written in
/// the form `async_trait` gives the others: it does not see into a macro's output.)
macro_rules! not_yet {
    ($($name:ident($req:ident) -> $res:ident;)*) => {
        $(
            fn $name<'life0, 'async_trait>(
                &'life0 self,
                _req: Request<cri::$req>,
            ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<cri::$res>, Status>> + Send + 'async_trait>>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async move { unimplemented(stringify!($name)) })
            }
        )*
    };
}

#[tonic::async_trait]
impl cri::runtime_service_server::RuntimeService for RuntimeApi {
    async fn version(&self, _req: Request<cri::VersionRequest>) -> Result<Response<cri::VersionResponse>, Status> {
        let v = self.services.system.version();
        Ok(Response::new(cri::VersionResponse {
            // The kubelet's API version of the Version call itself.
            version: "0.1.0".into(),
            runtime_name: "berth".into(),
            runtime_version: v.version.into(),
            runtime_api_version: CRI_VERSION.into(),
        }))
    }

    async fn status(&self, _req: Request<cri::StatusRequest>) -> Result<Response<cri::StatusResponse>, Status> {
        let networks = self.services.networks.list().await?;
        let network_ready = !networks.is_empty();
        let conditions = vec![
            condition("RuntimeReady", true, "", String::new()),
            condition(
                "NetworkReady",
                network_ready,
                "NetworkPluginNotReady",
                if network_ready { String::new() } else { "no CNI network configuration is loaded".into() },
            ),
        ];
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus { conditions }),
            info: Default::default(),
            // The default handler (the only one): recursive read-only mounts where the
            // runtime makes them; no user namespaces yet.
            runtime_handlers: vec![cri::RuntimeHandler {
                name: String::new(),
                features: Some(cri::RuntimeHandlerFeatures {
                    recursive_read_only_mounts: self.services.pods.recursive_read_only().await,
                    user_namespaces: false,
                }),
            }],
            // SupplementalGroupsPolicy (Strict leaves the image's groups out) and
            // ContainerStatus.user.
            features: Some(cri::RuntimeFeatures { supplemental_groups_policy: true }),
        }))
    }

    async fn run_pod_sandbox(&self, req: Request<cri::RunPodSandboxRequest>) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        let r = req.into_inner();
        let config = r.config.ok_or_else(|| Status::invalid_argument("a pod needs its config (RunPodSandboxRequest.config)"))?;
        let spec = pod_spec(config, r.runtime_handler)?;
        let id = self.services.pods.run(NAMESPACE, spec).await?;
        Ok(Response::new(cri::RunPodSandboxResponse { pod_sandbox_id: id }))
    }

    async fn stop_pod_sandbox(&self, req: Request<cri::StopPodSandboxRequest>) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        self.services.pods.stop(NAMESPACE, pod_id(&req.get_ref().pod_sandbox_id)?).await?;
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<cri::RemovePodSandboxRequest>,
    ) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        self.services.pods.remove(NAMESPACE, pod_id(&req.get_ref().pod_sandbox_id)?).await?;
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        let id = pod_id(&req.get_ref().pod_sandbox_id)?.to_owned();
        let pod = self.services.pods.get(NAMESPACE, &id).await?.ok_or_else(|| Status::not_found(format!("pod sandbox {id} not found")))?;
        let filter = PodContainerFilter { pod_id: pod.id.clone(), ..Default::default() };
        let containers = self.services.pods.containers(NAMESPACE, &filter).await?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Ok(Response::new(cri::PodSandboxStatusResponse {
            status: Some(pod_status(pod)),
            info: Default::default(),
            containers_statuses: containers.into_iter().map(container_status).collect(),
            timestamp: i64::try_from(now.as_nanos()).unwrap_or(i64::MAX),
        }))
    }

    async fn list_pod_sandbox(&self, req: Request<cri::ListPodSandboxRequest>) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        let f = req.into_inner().filter.unwrap_or_default();
        let filter =
            PodFilter { id: f.id, ready: f.state.map(|s| s.state == cri::PodSandboxState::SandboxReady as i32), labels: f.label_selector };
        let pods = self.services.pods.list(NAMESPACE, &filter).await?;
        let items = pods
            .into_iter()
            .map(|p| cri::PodSandbox {
                state: pod_state(&p),
                metadata: Some(pod_metadata(&p.meta)),
                id: p.id,
                created_at: p.created,
                labels: p.labels,
                annotations: p.annotations,
                runtime_handler: p.runtime_handler,
            })
            .collect();
        Ok(Response::new(cri::ListPodSandboxResponse { items }))
    }

    async fn create_container(&self, req: Request<cri::CreateContainerRequest>) -> Result<Response<cri::CreateContainerResponse>, Status> {
        let r = req.into_inner();
        let pod = pod_id(&r.pod_sandbox_id)?.to_owned();
        let config = r.config.ok_or_else(|| Status::invalid_argument("a container needs its config (CreateContainerRequest.config)"))?;
        let id = self.services.pods.create_container(NAMESPACE, &pod, container_spec(config)?).await?;
        Ok(Response::new(cri::CreateContainerResponse { container_id: id }))
    }

    async fn start_container(&self, req: Request<cri::StartContainerRequest>) -> Result<Response<cri::StartContainerResponse>, Status> {
        self.services.pods.start_container(NAMESPACE, container_id(&req.get_ref().container_id)?).await?;
        Ok(Response::new(cri::StartContainerResponse {}))
    }

    async fn stop_container(&self, req: Request<cri::StopContainerRequest>) -> Result<Response<cri::StopContainerResponse>, Status> {
        let r = req.get_ref();
        let timeout = std::time::Duration::from_secs(u64::try_from(r.timeout).unwrap_or(0));
        self.services.pods.stop_container(NAMESPACE, container_id(&r.container_id)?, timeout).await?;
        Ok(Response::new(cri::StopContainerResponse {}))
    }

    async fn remove_container(&self, req: Request<cri::RemoveContainerRequest>) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        self.services.pods.remove_container(NAMESPACE, container_id(&req.get_ref().container_id)?).await?;
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }

    async fn list_containers(&self, req: Request<cri::ListContainersRequest>) -> Result<Response<cri::ListContainersResponse>, Status> {
        let f = req.into_inner().filter.unwrap_or_default();
        let filter = PodContainerFilter {
            id: f.id,
            pod_id: f.pod_sandbox_id,
            state: f.state.map(|s| container_state(s.state)),
            labels: f.label_selector,
        };
        let containers = self.services.pods.containers(NAMESPACE, &filter).await?;
        Ok(Response::new(cri::ListContainersResponse { containers: containers.into_iter().map(container_message).collect() }))
    }

    async fn container_status(&self, req: Request<cri::ContainerStatusRequest>) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        let id = container_id(&req.get_ref().container_id)?.to_owned();
        let c =
            self.services.pods.container(NAMESPACE, &id).await?.ok_or_else(|| Status::not_found(format!("container {id} not found")))?;
        let (uid, gid, groups) = self.services.pods.container_user(NAMESPACE, &c.id).await?;
        let mut status = container_status(c);
        status.user = Some(cri::ContainerUser {
            linux: Some(cri::LinuxContainerUser {
                uid: uid.into(),
                gid: gid.into(),
                supplemental_groups: groups.into_iter().map(i64::from).collect(),
            }),
        });
        Ok(Response::new(cri::ContainerStatusResponse { status: Some(status), info: Default::default() }))
    }

    async fn exec_sync(&self, req: Request<cri::ExecSyncRequest>) -> Result<Response<cri::ExecSyncResponse>, Status> {
        let r = req.into_inner();
        let id = container_id(&r.container_id)?.to_owned();
        if r.cmd.is_empty() {
            return Err(Status::invalid_argument("ExecSync needs a command"));
        }
        let timeout = (r.timeout > 0).then(|| std::time::Duration::from_secs(r.timeout.unsigned_abs()));
        let out = self.services.pods.exec_sync(NAMESPACE, &id, r.cmd.clone(), timeout).await?;
        if out.timed_out {
            // As containerd: the kubelet reads DeadlineExceeded as a probe's timeout. What the
            // command printed goes in the message (its end, bounded).
            let tail = |b: &[u8]| String::from_utf8_lossy(&b[b.len().saturating_sub(1024)..]).into_owned();
            return Err(Status::deadline_exceeded(format!(
                "command {:?} timed out after {}s and was killed; stdout: {:?}; stderr: {:?}",
                r.cmd,
                r.timeout,
                tail(&out.stdout),
                tail(&out.stderr)
            )));
        }
        Ok(Response::new(cri::ExecSyncResponse { stdout: out.stdout, stderr: out.stderr, exit_code: out.exit_code }))
    }

    async fn container_stats(&self, req: Request<cri::ContainerStatsRequest>) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        let id = container_id(&req.get_ref().container_id)?.to_owned();
        let (c, stats) = self.services.pods.container_stats(NAMESPACE, &id).await?;
        Ok(Response::new(cri::ContainerStatsResponse { stats: Some(container_stats(&c, stats.as_ref())) }))
    }

    async fn list_container_stats(
        &self,
        req: Request<cri::ListContainerStatsRequest>,
    ) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        let f = req.into_inner().filter.unwrap_or_default();
        let filter = PodContainerFilter { id: f.id, pod_id: f.pod_sandbox_id, state: None, labels: f.label_selector };
        let all = self.services.pods.containers_stats(NAMESPACE, &filter).await?;
        Ok(Response::new(cri::ListContainerStatsResponse { stats: all.iter().map(|(c, s)| container_stats(c, Some(s))).collect() }))
    }

    async fn pod_sandbox_stats(&self, req: Request<cri::PodSandboxStatsRequest>) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
        let id = pod_id(&req.get_ref().pod_sandbox_id)?.to_owned();
        let stats = self.services.pods.pod_stats(NAMESPACE, &id).await?;
        Ok(Response::new(cri::PodSandboxStatsResponse { stats: Some(pod_stats(&stats)) }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
        let f = req.into_inner().filter.unwrap_or_default();
        let filter = PodFilter { id: f.id, ready: None, labels: f.label_selector };
        let all = self.services.pods.pods_stats(NAMESPACE, &filter).await?;
        Ok(Response::new(cri::ListPodSandboxStatsResponse { stats: all.iter().map(pod_stats).collect() }))
    }

    async fn runtime_config(&self, _req: Request<cri::RuntimeConfigRequest>) -> Result<Response<cri::RuntimeConfigResponse>, Status> {
        // Containers' cgroups are made by path under /berth (cgroupfs), not by systemd.
        let linux = cri::LinuxRuntimeConfiguration { cgroup_driver: cri::CgroupDriver::Cgroupfs as i32 };
        Ok(Response::new(cri::RuntimeConfigResponse { linux: Some(linux) }))
    }

    async fn exec(&self, req: Request<cri::ExecRequest>) -> Result<Response<cri::ExecResponse>, Status> {
        let r = req.into_inner();
        let id = container_id(&r.container_id)?;
        let io = StreamIo { tty: r.tty, stdin: r.stdin, stdout: r.stdout, stderr: r.stderr };
        let url = self.services.streams.exec(NAMESPACE, id, r.cmd, io).await?;
        Ok(Response::new(cri::ExecResponse { url }))
    }

    async fn attach(&self, req: Request<cri::AttachRequest>) -> Result<Response<cri::AttachResponse>, Status> {
        let r = req.into_inner();
        let id = container_id(&r.container_id)?;
        let io = StreamIo { tty: r.tty, stdin: r.stdin, stdout: r.stdout, stderr: r.stderr };
        let url = self.services.streams.attach(NAMESPACE, id, io).await?;
        Ok(Response::new(cri::AttachResponse { url }))
    }

    async fn port_forward(&self, req: Request<cri::PortForwardRequest>) -> Result<Response<cri::PortForwardResponse>, Status> {
        let r = req.into_inner();
        let pod = pod_id(&r.pod_sandbox_id)?;
        let url = self.services.streams.port_forward(NAMESPACE, pod, &r.port).await?;
        Ok(Response::new(cri::PortForwardResponse { url }))
    }

    async fn update_container_resources(
        &self,
        req: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        let r = req.into_inner();
        let id = container_id(&r.container_id)?;
        let resources = container_resources(&r.linux.unwrap_or_default());
        self.services.pods.update_resources(NAMESPACE, id, resources).await?;
        Ok(Response::new(cri::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        req: Request<cri::ReopenContainerLogRequest>,
    ) -> Result<Response<cri::ReopenContainerLogResponse>, Status> {
        let r = req.into_inner();
        self.services.pods.reopen_log(NAMESPACE, container_id(&r.container_id)?).await?;
        Ok(Response::new(cri::ReopenContainerLogResponse {}))
    }

    async fn update_runtime_config(
        &self,
        _req: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<cri::UpdateRuntimeConfigResponse>, Status> {
        // The pod CIDR the kubelet passes: pods' addresses come from the CNI configuration.
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    not_yet! {
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse;
        list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse;
        list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> ListPodSandboxMetricsResponse;
    }

    type GetContainerEventsStream = super::super::MessageStream<cri::ContainerEventResponse>;

    async fn get_container_events(&self, _req: Request<cri::GetEventsRequest>) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        let events = self.services.pods.events(NAMESPACE);
        let stream = tokio_stream::wrappers::ReceiverStream::new(events).map(|e| {
            let kind = match e.kind {
                PodEventKind::Created => cri::ContainerEventType::ContainerCreatedEvent,
                PodEventKind::Started => cri::ContainerEventType::ContainerStartedEvent,
                PodEventKind::Stopped => cri::ContainerEventType::ContainerStoppedEvent,
                PodEventKind::Deleted => cri::ContainerEventType::ContainerDeletedEvent,
            };
            Ok(cri::ContainerEventResponse {
                container_id: e.id,
                container_event_type: kind as i32,
                created_at: e.at,
                pod_sandbox_status: e.pod.map(pod_status),
                containers_statuses: e.containers.into_iter().map(container_status).collect(),
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
