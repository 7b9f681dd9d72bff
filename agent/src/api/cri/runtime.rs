//! The CRI's RuntimeService: the runtime's version and readiness and its configuration so
//! far; pods, containers and streams answer UNIMPLEMENTED until they are served.

use std::sync::Arc;

use berth_api::cri::{self, runtime_service_server::RuntimeServiceServer};
use tonic::{Request, Response, Status};

use super::unimplemented;
use crate::service::Services;

pub struct RuntimeApi {
    services: Arc<Services>,
}

pub fn service(services: Arc<Services>) -> RuntimeServiceServer<RuntimeApi> {
    RuntimeServiceServer::new(RuntimeApi { services }).max_decoding_message_size(super::MAX_MESSAGE)
}

/// The CRI version this agent speaks (`runtime.v1`).
const CRI_VERSION: &str = "v1";

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
            runtime_handlers: Vec::new(),
            features: None,
        }))
    }

    async fn runtime_config(&self, _req: Request<cri::RuntimeConfigRequest>) -> Result<Response<cri::RuntimeConfigResponse>, Status> {
        // Containers' cgroups are made by path under /berth (cgroupfs), not by systemd.
        let linux = cri::LinuxRuntimeConfiguration { cgroup_driver: cri::CgroupDriver::Cgroupfs as i32 };
        Ok(Response::new(cri::RuntimeConfigResponse { linux: Some(linux) }))
    }

    async fn update_runtime_config(
        &self,
        _req: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<cri::UpdateRuntimeConfigResponse>, Status> {
        // The pod CIDR the kubelet passes: pods' addresses come from the CNI configuration.
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    not_yet! {
        run_pod_sandbox(RunPodSandboxRequest) -> RunPodSandboxResponse;
        stop_pod_sandbox(StopPodSandboxRequest) -> StopPodSandboxResponse;
        remove_pod_sandbox(RemovePodSandboxRequest) -> RemovePodSandboxResponse;
        pod_sandbox_status(PodSandboxStatusRequest) -> PodSandboxStatusResponse;
        list_pod_sandbox(ListPodSandboxRequest) -> ListPodSandboxResponse;
        create_container(CreateContainerRequest) -> CreateContainerResponse;
        start_container(StartContainerRequest) -> StartContainerResponse;
        stop_container(StopContainerRequest) -> StopContainerResponse;
        remove_container(RemoveContainerRequest) -> RemoveContainerResponse;
        list_containers(ListContainersRequest) -> ListContainersResponse;
        container_status(ContainerStatusRequest) -> ContainerStatusResponse;
        update_container_resources(UpdateContainerResourcesRequest) -> UpdateContainerResourcesResponse;
        reopen_container_log(ReopenContainerLogRequest) -> ReopenContainerLogResponse;
        exec_sync(ExecSyncRequest) -> ExecSyncResponse;
        exec(ExecRequest) -> ExecResponse;
        attach(AttachRequest) -> AttachResponse;
        port_forward(PortForwardRequest) -> PortForwardResponse;
        container_stats(ContainerStatsRequest) -> ContainerStatsResponse;
        list_container_stats(ListContainerStatsRequest) -> ListContainerStatsResponse;
        pod_sandbox_stats(PodSandboxStatsRequest) -> PodSandboxStatsResponse;
        list_pod_sandbox_stats(ListPodSandboxStatsRequest) -> ListPodSandboxStatsResponse;
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse;
        list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse;
        list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> ListPodSandboxMetricsResponse;
    }

    type GetContainerEventsStream = super::super::MessageStream<cri::ContainerEventResponse>;

    async fn get_container_events(&self, _req: Request<cri::GetEventsRequest>) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        unimplemented("get_container_events")
    }
}
