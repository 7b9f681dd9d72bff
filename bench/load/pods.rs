//! Pod starts through a CRI socket, as a kubelet makes them: RunPodSandbox, then
//! CreateContainer and StartContainer of one container. The same calls against any CRI
//! runtime (berthd's CRI socket, containerd's), so the figures compare.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_api::cri::{self, runtime_service_client::RuntimeServiceClient};
use tonic::transport::Channel;

use super::Error;

/// One pod's calls, bounded.
const POD_TIMEOUT: Duration = Duration::from_secs(60);

/// What to measure.
pub struct PodRuns {
    /// Pods started one at a time (each removed before the next).
    pub single: usize,
    /// Pods started all at once.
    pub burst: usize,
    /// The container's image (the runtime must have it).
    pub image: String,
    /// A label that names this run's pods, so they can be found and removed.
    pub tag: String,
}

fn pod_config(tag: &str, i: usize) -> cri::PodSandboxConfig {
    let name = format!("bench-{tag}-{i}");
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata { name: name.clone(), uid: format!("uid-{name}"), namespace: "bench".into(), attempt: 0 }),
        hostname: name,
        labels: [("bench".to_owned(), tag.to_owned())].into(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: String::new(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption { network: cri::NamespaceMode::Pod as i32, ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Start pod `i` to running: its three calls. The pod's id, and each call's milliseconds.
async fn start_pod(rt: &mut RuntimeServiceClient<Channel>, runs: &PodRuns, i: usize) -> Result<(String, [f64; 3]), Error> {
    let config = pod_config(&runs.tag, i);
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
    let t0 = Instant::now();
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() })
        .await?
        .into_inner()
        .pod_sandbox_id;
    let run = ms(t0);
    let t1 = Instant::now();
    let container = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: "app".into(), attempt: 0 }),
        image: Some(cri::ImageSpec { image: runs.image.clone(), ..Default::default() }),
        command: vec!["sleep".into(), "3600".into()],
        ..Default::default()
    };
    let req = cri::CreateContainerRequest { pod_sandbox_id: pod.clone(), config: Some(container), sandbox_config: Some(config) };
    let id = rt.create_container(req).await?.into_inner().container_id;
    let create = ms(t1);
    let t2 = Instant::now();
    rt.start_container(cri::StartContainerRequest { container_id: id }).await?;
    Ok((pod, [run, create, ms(t2)]))
}

async fn remove_pod(rt: &mut RuntimeServiceClient<Channel>, pod: &str) -> Result<(), Error> {
    // Containers killed at once: sleep, as pid 1, ignores SIGTERM.
    let filter = cri::ContainerFilter { pod_sandbox_id: pod.to_owned(), ..Default::default() };
    let containers = rt.list_containers(cri::ListContainersRequest { filter: Some(filter) }).await?.into_inner().containers;
    for c in containers {
        rt.stop_container(cri::StopContainerRequest { container_id: c.id, timeout: 0 }).await?;
    }
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod.to_owned() }).await?;
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod.to_owned() }).await?;
    Ok(())
}

async fn connect(socket: &Path) -> Result<RuntimeServiceClient<Channel>, Error> {
    let channel = berth_api::connect(socket, Duration::from_secs(10)).await?;
    Ok(RuntimeServiceClient::new(channel).max_decoding_message_size(16 << 20))
}

/// Run the measurements against the CRI socket `socket`; prints one line per figure:
/// `single MS...` (each pod's start, in order) and `burst N SECONDS`.
pub async fn pods(socket: &Path, runs: &PodRuns) -> Result<bool, Error> {
    let mut rt = connect(socket).await?;
    // One pod first, not counted: the pause image, the first network set-up.
    let (warm, _) = tokio::time::timeout(POD_TIMEOUT, start_pod(&mut rt, runs, usize::MAX)).await??;
    remove_pod(&mut rt, &warm).await?;
    let mut single = Vec::new();
    let mut calls: [Vec<f64>; 3] = Default::default();
    for i in 0..runs.single {
        let t0 = Instant::now();
        let (pod, each) = tokio::time::timeout(POD_TIMEOUT, start_pod(&mut rt, runs, i)).await??;
        single.push(t0.elapsed().as_secs_f64() * 1000.0);
        for (list, ms) in calls.iter_mut().zip(each) {
            list.push(ms);
        }
        remove_pod(&mut rt, &pod).await?;
    }
    let join = |l: &[f64]| l.iter().map(|ms| format!("{ms:.1}")).collect::<Vec<_>>().join(" ");
    println!("single {}", join(&single));
    for (name, list) in ["run_pod_sandbox", "create_container", "start_container"].iter().zip(&calls) {
        println!("{name} {}", join(list));
    }
    if runs.burst > 0 {
        let t0 = Instant::now();
        let mut jobs = Vec::new();
        for i in 0..runs.burst {
            let mut rt = rt.clone();
            let runs = PodRuns { single: 0, burst: 0, image: runs.image.clone(), tag: runs.tag.clone() };
            jobs.push(tokio::spawn(async move {
                tokio::time::timeout(POD_TIMEOUT, start_pod(&mut rt, &runs, 1000 + i)).await.map_err(Error::from).and_then(|r| r)
            }));
        }
        let mut pods = Vec::new();
        let mut failed = 0;
        for j in jobs {
            match j.await.map_err(|e| Error::from(e.to_string()))? {
                Ok((p, _)) => pods.push(p),
                Err(e) => {
                    eprintln!("a pod of the burst failed: {e}");
                    failed += 1;
                }
            }
        }
        println!("burst {} {:.3}", runs.burst, t0.elapsed().as_secs_f64());
        for p in &pods {
            remove_pod(&mut rt, p).await?;
        }
        if failed > 0 {
            return Ok(false);
        }
    }
    Ok(true)
}
