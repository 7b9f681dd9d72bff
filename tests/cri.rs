//! The Kubernetes CRI socket, driven as a kubelet drives it (through the generated
//! `runtime.v1` clients): the runtime's version, status and configuration, and the image
//! service against a real registry that asks for credentials.

mod common;

use berth_api::cri::{self, image_service_client::ImageServiceClient, runtime_service_client::RuntimeServiceClient};
use common::*;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec { image: image.to_owned(), ..Default::default() })
}

#[test]
fn the_cri_answers_a_kubelet_s_runtime_and_image_calls() {
    let reg = Registry::start(Some(("kube", "pa55")));
    let d = Daemon::start();
    // An image whose config names a numeric user, in the registry.
    let built = build_edited(&ImageSpec::new(vec![busybox_layer()]), |c| c["config"]["User"] = "1000:1000".into(), |_| {});
    let path = d.file("app.tar", &oci_archive_built(&[("docker.io/library/app:v1", &built)]));
    d.ok(&["load", "-i", path.to_str().unwrap()]);
    let name = format!("{}/team/app:v1", reg.addr);
    d.ok(&["tag", "app:v1", &name]);
    d.ok(&["push", "--creds", "kube:pa55", &name]);
    let id = built.config.0.clone();

    rt().block_on(async {
        let channel = berth_api::connect(d.state.join("cri.sock"), std::time::Duration::from_secs(5)).await.unwrap();
        let mut runtime = RuntimeServiceClient::new(channel.clone());
        let mut images = ImageServiceClient::new(channel);

        let v = runtime.version(cri::VersionRequest { version: "v1".into() }).await.unwrap().into_inner();
        assert_eq!((v.runtime_name.as_str(), v.runtime_api_version.as_str()), ("berth", "v1"));
        let status = runtime.status(cri::StatusRequest { verbose: false }).await.unwrap().into_inner();
        let conditions = status.status.unwrap().conditions;
        assert!(conditions.iter().any(|c| c.r#type == "RuntimeReady" && c.status), "{conditions:?}");
        assert!(conditions.iter().any(|c| c.r#type == "NetworkReady"), "{conditions:?}");
        let config = runtime.runtime_config(cri::RuntimeConfigRequest {}).await.unwrap().into_inner();
        assert_eq!(config.linux.unwrap().cgroup_driver, cri::CgroupDriver::Cgroupfs as i32);
        // What is not served yet says so.
        let e = runtime.checkpoint_container(cri::CheckpointContainerRequest::default()).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented, "{e}");

        // A missing image: no error, no image; its removal is done already.
        let missing = images.image_status(cri::ImageStatusRequest { image: spec(&name), verbose: false }).await.unwrap();
        assert!(missing.into_inner().image.is_none());
        images.remove_image(cri::RemoveImageRequest { image: spec(&name) }).await.unwrap();
        let e = images.image_status(cri::ImageStatusRequest { image: spec(""), verbose: false }).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);

        // A pull without the registry's credentials fails; with the kubelet's, it pulls.
        let pull = |auth: Option<cri::AuthConfig>| cri::PullImageRequest { image: spec(&name), auth, sandbox_config: None };
        assert!(images.pull_image(pull(None)).await.is_err());
        let auth = cri::AuthConfig { username: "kube".into(), password: "pa55".into(), ..Default::default() };
        let pulled = images.pull_image(pull(Some(auth))).await.unwrap().into_inner();
        assert_eq!(pulled.image_ref, id);

        // Found by name, by repository@digest, by id; with the config's user as a uid.
        let status = images.image_status(cri::ImageStatusRequest { image: spec(&name), verbose: false }).await.unwrap().into_inner();
        let image = status.image.expect("the pulled image");
        assert_eq!(image.id, id);
        assert_eq!(image.repo_tags, std::slice::from_ref(&name));
        assert_eq!(image.uid.map(|u| u.value), Some(1000));
        let by_digest = image.repo_digests.first().expect("a repo digest").clone();
        assert!(by_digest.starts_with(&format!("{}/team/app@sha256:", reg.addr)), "{by_digest}");
        for other in [by_digest.as_str(), id.as_str()] {
            let found = images.image_status(cri::ImageStatusRequest { image: spec(other), verbose: false }).await.unwrap();
            assert_eq!(found.into_inner().image.map(|i| i.id), Some(id.clone()), "{other}");
        }
        let listed = images.list_images(cri::ListImagesRequest { filter: None }).await.unwrap().into_inner().images;
        assert_eq!(listed.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), [id.as_str()]);
        let fs = images.image_fs_info(cri::ImageFsInfoRequest {}).await.unwrap().into_inner();
        let usage = &fs.image_filesystems[0];
        assert!(usage.used_bytes.as_ref().is_some_and(|u| u.value > 0), "{usage:?}");
        assert!(usage.fs_id.as_ref().is_some_and(|f| f.mountpoint.ends_with("snapshots")), "{usage:?}");

        // The CRI's images are berthctl's too, in the k8s.io namespace (and only there).
        assert!(d.ok(&["--namespace", "k8s.io", "images", "--format", "{{.Repository}}"]).contains("team/app"));

        // Removed with every name of its id; pulled again with docker's `auth` form.
        images.remove_image(cri::RemoveImageRequest { image: spec(&id) }).await.unwrap();
        assert!(images.list_images(cri::ListImagesRequest { filter: None }).await.unwrap().into_inner().images.is_empty());
        use base64::Engine;
        let auth = cri::AuthConfig { auth: base64::engine::general_purpose::STANDARD.encode("kube:pa55"), ..Default::default() };
        images.pull_image(pull(Some(auth))).await.unwrap();
    });
}

#[test]
fn the_cri_socket_can_be_turned_off() {
    let d = Daemon::start_with(&["--no-cri"]);
    assert!(d.state.join("berthd.sock").exists());
    assert!(!d.state.join("cri.sock").exists());
}

fn pod_config(name: &str, host_network: bool) -> cri::PodSandboxConfig {
    let meta = cri::PodSandboxMetadata { name: name.into(), uid: format!("uid-{name}"), namespace: "default".into(), attempt: 0 };
    let namespaces = cri::NamespaceOption {
        network: if host_network { cri::NamespaceMode::Node } else { cri::NamespaceMode::Pod } as i32,
        ..Default::default()
    };
    cri::PodSandboxConfig {
        metadata: Some(meta),
        hostname: format!("{name}-host"),
        dns_config: Some(cri::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["default.svc.cluster.local".into()],
            options: vec![],
        }),
        labels: [("app".to_owned(), name.to_owned())].into(),
        // Annotations can be large (kubectl's last-applied-configuration).
        annotations: [("big".to_owned(), "x".repeat(20_000))].into(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext { namespace_options: Some(namespaces), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn pods_run_with_an_address_and_stop_and_go_as_a_kubelet_expects() {
    require_tool("runc", "runc");
    let d = Daemon::start();
    rt().block_on(async {
        let channel = berth_api::connect(d.state.join("cri.sock"), std::time::Duration::from_secs(5)).await.unwrap();
        let mut rt = RuntimeServiceClient::new(channel);
        let run = |c: cri::PodSandboxConfig| cri::RunPodSandboxRequest { config: Some(c), runtime_handler: String::new() };
        let id = rt.run_pod_sandbox(run(pod_config("web", false))).await.unwrap().into_inner().pod_sandbox_id;
        let status = |id: &str| cri::PodSandboxStatusRequest { pod_sandbox_id: id.to_owned(), verbose: false };
        let s = rt.pod_sandbox_status(status(&id)).await.unwrap().into_inner().status.unwrap();
        assert_eq!(s.state, cri::PodSandboxState::SandboxReady as i32);
        assert_eq!(s.metadata.as_ref().map(|m| m.name.as_str()), Some("web"));
        let ip: std::net::Ipv4Addr = s.network.as_ref().unwrap().ip.parse().expect("the pod's address");
        assert!(!ip.is_loopback());
        assert_eq!(s.labels, [("app".to_owned(), "web".to_owned())].into());
        assert_eq!(s.annotations["big"].len(), 20_000);
        assert!(s.created_at > 0);
        // The pod's own hostname and DNS settings.
        let etc = |f: &str| d.ok(&["--namespace", "k8s.io", "cp", &format!("{id}:/etc/{f}"), "-"]);
        assert!(etc("hostname").contains("web-host"));
        let resolv = etc("resolv.conf");
        assert!(resolv.contains("10.96.0.10") && resolv.contains("default.svc.cluster.local"), "{resolv}");

        // The same pod twice is refused; another one runs beside it, on the host's network.
        let e = rt.run_pod_sandbox(run(pod_config("web", false))).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e}");
        let host = rt.run_pod_sandbox(run(pod_config("hostnet", true))).await.unwrap().into_inner().pod_sandbox_id;
        // A pod's next attempt is another pod, however long its name.
        let long = "l".repeat(150);
        let mut next = pod_config(&long, true);
        next.hostname = "next".into();
        let first = rt.run_pod_sandbox(run(next.clone())).await.unwrap().into_inner().pod_sandbox_id;
        next.metadata.as_mut().unwrap().attempt = 1;
        let second = rt.run_pod_sandbox(run(next)).await.unwrap().into_inner().pod_sandbox_id;
        assert_ne!(first, second);
        for pod in [&first, &second] {
            rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod.to_string() }).await.unwrap();
        }
        let hs = rt.pod_sandbox_status(status(&host)).await.unwrap().into_inner().status.unwrap();
        assert_eq!(hs.network.unwrap().ip, "");

        // Lists, filtered as the kubelet filters them.
        let list = |f: cri::PodSandboxFilter| cri::ListPodSandboxRequest { filter: Some(f) };
        let ids = |r: cri::ListPodSandboxResponse| r.items.into_iter().map(|p| p.id).collect::<Vec<_>>();
        let all = ids(rt.list_pod_sandbox(list(Default::default())).await.unwrap().into_inner());
        assert_eq!(all.len(), 2, "{all:?}");
        let by_label = cri::PodSandboxFilter { label_selector: [("app".to_owned(), "web".to_owned())].into(), ..Default::default() };
        assert_eq!(ids(rt.list_pod_sandbox(list(by_label)).await.unwrap().into_inner()), std::slice::from_ref(&id));
        let by_prefix = cri::PodSandboxFilter { id: id[..12].to_owned(), ..Default::default() };
        assert_eq!(ids(rt.list_pod_sandbox(list(by_prefix)).await.unwrap().into_inner()), std::slice::from_ref(&id));

        // Stopped (twice: the kubelet does), then not ready; removed (twice), then gone.
        let stop = |id: &str| cri::StopPodSandboxRequest { pod_sandbox_id: id.to_owned() };
        let remove = |id: &str| cri::RemovePodSandboxRequest { pod_sandbox_id: id.to_owned() };
        rt.stop_pod_sandbox(stop(&id)).await.unwrap();
        rt.stop_pod_sandbox(stop(&id)).await.unwrap();
        let s = rt.pod_sandbox_status(status(&id)).await.unwrap().into_inner().status.unwrap();
        assert_eq!(s.state, cri::PodSandboxState::SandboxNotready as i32);
        let not_ready = cri::PodSandboxFilter {
            state: Some(cri::PodSandboxStateValue { state: cri::PodSandboxState::SandboxNotready as i32 }),
            ..Default::default()
        };
        assert_eq!(ids(rt.list_pod_sandbox(list(not_ready)).await.unwrap().into_inner()), std::slice::from_ref(&id));
        for pod in [&id, &host] {
            rt.remove_pod_sandbox(remove(pod)).await.unwrap();
            rt.remove_pod_sandbox(remove(pod)).await.unwrap();
        }
        let e = rt.pod_sandbox_status(status(&id)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        rt.stop_pod_sandbox(stop("0123456789ab")).await.unwrap();
        assert!(ids(rt.list_pod_sandbox(list(Default::default())).await.unwrap().into_inner()).is_empty());
    });
    // Nothing of the pods is left: no container, no record.
    assert_eq!(d.ok(&["--namespace", "k8s.io", "ps", "-aq"]), "");
    let records: Vec<_> = std::fs::read_dir(d.root.join("cri/pods")).map(|r| r.flatten().collect()).unwrap_or_default();
    assert!(records.is_empty(), "{records:?}");
}

#[test]
fn a_pod_s_containers_share_its_network_log_where_the_kubelet_reads_and_go_with_it() {
    require_tool("runc", "runc");
    let d = Daemon::start();
    let path = d.file("busybox.tar", &oci_archive(&[("docker.io/library/busybox:latest", &ImageSpec::new(vec![busybox_layer()]))]));
    d.ok(&["--namespace", "k8s.io", "load", "-i", path.to_str().unwrap()]);
    let logs = d.dir.path().join("pod-logs");
    let shared = d.dir.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("page.html"), "<p>from the host</p>\n").unwrap();
    rt().block_on(async {
        let channel = berth_api::connect(d.state.join("cri.sock"), std::time::Duration::from_secs(5)).await.unwrap();
        let mut rt = RuntimeServiceClient::new(channel);
        let mut config = pod_config("shop", false);
        config.log_directory = logs.display().to_string();
        let pod = rt
            .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() })
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id;
        let status = rt.pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: pod.clone(), verbose: false }).await.unwrap();
        let ip = status.into_inner().status.unwrap().network.unwrap().ip;

        let container = |name: &str, script: &str| cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata { name: name.into(), attempt: 0 }),
            image: spec("busybox"),
            command: vec!["sh".into(), "-c".into()],
            args: vec![script.into()],
            envs: vec![cri::KeyValue { key: "GREETING".into(), value: "hello from the pod".into() }],
            mounts: vec![cri::Mount {
                container_path: "/www".into(),
                host_path: shared.display().to_string(),
                readonly: true,
                ..Default::default()
            }],
            labels: [("tier".to_owned(), name.to_owned())].into(),
            log_path: format!("{name}/0.log"),
            ..Default::default()
        };
        let create = |c: cri::ContainerConfig| cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(c),
            sandbox_config: Some(config.clone()),
        };
        let server = rt
            .create_container(create(container("web", "echo $GREETING; exec busybox httpd -f -p 8080 -h /www")))
            .await
            .unwrap()
            .into_inner()
            .container_id;
        let job = rt.create_container(create(container("job", "exit 3"))).await.unwrap().into_inner().container_id;
        // A log path that leaves the pod's log directory is refused, and nothing is made.
        let mut escape = container("escape", "true");
        escape.log_path = "../../escape.log".into();
        let e = rt.create_container(create(escape)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        assert!(!d.ok(&["--namespace", "k8s.io", "ps", "-a", "--format", "{{.Names}}"]).contains("escape"));
        let cstatus = |id: &str| cri::ContainerStatusRequest { container_id: id.to_owned(), verbose: false };
        let s = rt.container_status(cstatus(&server)).await.unwrap().into_inner().status.unwrap();
        assert_eq!(s.state, cri::ContainerState::ContainerCreated as i32);
        for id in [&server, &job] {
            rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.unwrap();
        }

        // The server listens in the pod's network: the host reaches it at the pod's address.
        let url = format!("{ip}:8080");
        let mut page = String::new();
        for _ in 0..100 {
            if let Ok(mut conn) = std::net::TcpStream::connect_timeout(&url.parse().unwrap(), std::time::Duration::from_secs(1)) {
                use std::io::{Read, Write};
                conn.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
                conn.write_all(b"GET /page.html HTTP/1.0\r\n\r\n").unwrap();
                let _ = conn.read_to_string(&mut page);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(page.contains("from the host"), "{page}");
        let s = rt.container_status(cstatus(&server)).await.unwrap().into_inner().status.unwrap();
        assert_eq!(s.state, cri::ContainerState::ContainerRunning as i32);
        assert!(s.started_at >= s.created_at && s.started_at > 0, "{s:?}");
        assert_eq!(s.log_path, logs.join("web/0.log").display().to_string());
        // The log, where the kubelet reads it, in the CRI's format.
        let log = std::fs::read_to_string(logs.join("web/0.log")).unwrap();
        assert!(log.lines().any(|l| l.contains(" stdout F hello from the pod")), "{log}");

        // Stats: the container's, the pod's (its containers' within), as the kubelet reads them.
        let cs = rt.container_stats(cri::ContainerStatsRequest { container_id: server.clone() }).await.unwrap().into_inner().stats.unwrap();
        assert!(cs.cpu.and_then(|c| c.usage_core_nano_seconds).is_some_and(|u| u.value > 0));
        assert!(cs.memory.and_then(|m| m.working_set_bytes).is_some_and(|w| w.value > 0));
        let listed = rt.list_container_stats(cri::ListContainerStatsRequest { filter: None }).await.unwrap().into_inner().stats;
        assert!(listed.iter().any(|s| s.attributes.as_ref().is_some_and(|a| a.id == server)));
        let ps =
            rt.pod_sandbox_stats(cri::PodSandboxStatsRequest { pod_sandbox_id: pod.clone() }).await.unwrap().into_inner().stats.unwrap();
        let linux = ps.linux.unwrap();
        assert!(linux.containers.iter().any(|c| c.attributes.as_ref().is_some_and(|a| a.id == server)));
        assert!(linux.process.and_then(|p| p.process_count).is_some_and(|n| n.value >= 2), "the pause process and the server");
        let pods = rt.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter: None }).await.unwrap().into_inner().stats;
        assert_eq!(pods.len(), 1);

        // ExecSync: what a command printed and its code; killed when its timeout runs out.
        let exec = |cmd: &[&str], timeout: i64| cri::ExecSyncRequest {
            container_id: server.clone(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
        };
        let r = rt.exec_sync(exec(&["busybox", "hostname"], 10)).await.unwrap().into_inner();
        assert_eq!(r.stdout, b"shop-host\n", "the pod's hostname");
        let r = rt.exec_sync(exec(&["sh", "-c", "echo out; echo err >&2; exit 4"], 10)).await.unwrap().into_inner();
        assert_eq!((r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code), (&b"out\n"[..], &b"err\n"[..], 4));
        let t0 = std::time::Instant::now();
        // As containerd answers (and the kubelet reads as a probe's timeout): DeadlineExceeded,
        // with what it printed in the message; the command is gone when the call returns.
        let e = rt.exec_sync(exec(&["sh", "-c", "echo before; sleep 60"], 1)).await.unwrap_err();
        assert!(t0.elapsed() < std::time::Duration::from_secs(20), "the timeout did not end it");
        assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e:?}");
        assert!(e.message().contains("before"), "{e:?}");
        let r = rt.exec_sync(exec(&["ps", "-o", "args"], 10)).await.unwrap().into_inner();
        assert!(!String::from_utf8_lossy(&r.stdout).contains("sleep 60"), "{:?}", String::from_utf8_lossy(&r.stdout));

        // The job ended with its code, and the reason the kubelet shows.
        let mut exited = None;
        for _ in 0..100 {
            let s = rt.container_status(cstatus(&job)).await.unwrap().into_inner().status.unwrap();
            if s.state == cri::ContainerState::ContainerExited as i32 {
                exited = Some(s);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let exited = exited.expect("the job exits");
        assert_eq!((exited.exit_code, exited.reason.as_str()), (3, "Error"));
        assert!(exited.finished_at >= exited.started_at);

        // Lists, filtered as the kubelet filters them.
        let list = |f: cri::ContainerFilter| cri::ListContainersRequest { filter: Some(f) };
        let ids = |r: cri::ListContainersResponse| r.containers.into_iter().map(|c| c.id).collect::<Vec<_>>();
        let in_pod = cri::ContainerFilter { pod_sandbox_id: pod.clone(), ..Default::default() };
        assert_eq!(ids(rt.list_containers(list(in_pod)).await.unwrap().into_inner()).len(), 2);
        let running = cri::ContainerFilter {
            state: Some(cri::ContainerStateValue { state: cri::ContainerState::ContainerRunning as i32 }),
            ..Default::default()
        };
        assert_eq!(ids(rt.list_containers(list(running)).await.unwrap().into_inner()), std::slice::from_ref(&server));
        let by_label = cri::ContainerFilter { label_selector: [("tier".to_owned(), "job".to_owned())].into(), ..Default::default() };
        assert_eq!(ids(rt.list_containers(list(by_label)).await.unwrap().into_inner()), std::slice::from_ref(&job));

        // Stopped, removed (twice), and what is not there is stopped and removed already.
        rt.stop_container(cri::StopContainerRequest { container_id: server.clone(), timeout: 1 }).await.unwrap();
        let s = rt.container_status(cstatus(&server)).await.unwrap().into_inner().status.unwrap();
        assert_eq!(s.state, cri::ContainerState::ContainerExited as i32);
        for _ in 0..2 {
            rt.remove_container(cri::RemoveContainerRequest { container_id: server.clone() }).await.unwrap();
        }
        assert_eq!(rt.container_status(cstatus(&server)).await.unwrap_err().code(), tonic::Code::NotFound);
        rt.stop_container(cri::StopContainerRequest { container_id: server.clone(), timeout: 1 }).await.unwrap();
        // The log stays where the kubelet reads it (it removes logs itself, with the rotated ones).
        assert!(std::fs::read_to_string(logs.join("web/0.log")).unwrap().contains("hello from the pod"));

        // The pod goes with what is left in it.
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
        assert!(ids(rt.list_containers(list(Default::default())).await.unwrap().into_inner()).is_empty());
    });
    assert_eq!(d.ok(&["--namespace", "k8s.io", "ps", "-aq"]), "");
}

#[test]
fn pods_outlive_an_agent_restart() {
    require_tool("runc", "runc");
    let mut d = Daemon::start();
    let path = d.file("busybox.tar", &oci_archive(&[("docker.io/library/busybox:latest", &ImageSpec::new(vec![busybox_layer()]))]));
    d.ok(&["--namespace", "k8s.io", "load", "-i", path.to_str().unwrap()]);
    let connect = |d: &Daemon| {
        let socket = d.state.join("cri.sock");
        async move { RuntimeServiceClient::new(berth_api::connect(socket, std::time::Duration::from_secs(5)).await.unwrap()) }
    };
    let status = |id: &str| cri::PodSandboxStatusRequest { pod_sandbox_id: id.to_owned(), verbose: false };
    let (pod, ctr, ip) = rt().block_on(async {
        let mut rt = connect(&d).await;
        let config = pod_config("lasting", false);
        let run = cri::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
        let pod = rt.run_pod_sandbox(run).await.unwrap().into_inner().pod_sandbox_id;
        let c = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata { name: "sleeper".into(), attempt: 0 }),
            image: spec("busybox"),
            command: vec!["sleep".into(), "600".into()],
            ..Default::default()
        };
        let create = cri::CreateContainerRequest { pod_sandbox_id: pod.clone(), config: Some(c), sandbox_config: Some(config) };
        let ctr = rt.create_container(create).await.unwrap().into_inner().container_id;
        rt.start_container(cri::StartContainerRequest { container_id: ctr.clone() }).await.unwrap();
        let ip = rt.pod_sandbox_status(status(&pod)).await.unwrap().into_inner().status.unwrap().network.unwrap().ip;
        exec_out(&mut rt, &ctr, &["sh", "-c", "echo kept > /dev/shm/note"]).await;
        (pod, ctr, ip)
    });
    d.kill9();
    d.spawn();
    d.wait_ready();
    rt().block_on(async {
        let mut rt = connect(&d).await;
        let s = rt.pod_sandbox_status(status(&pod)).await.unwrap().into_inner().status.unwrap();
        assert_eq!(s.state, cri::PodSandboxState::SandboxReady as i32);
        assert_eq!(s.network.unwrap().ip, ip, "the pod kept its address");
        let c = rt.container_status(cri::ContainerStatusRequest { container_id: ctr.clone(), verbose: false }).await.unwrap();
        assert_eq!(c.into_inner().status.unwrap().state, cri::ContainerState::ContainerRunning as i32);
        // The pod's /dev/shm outlives the agent too (its start's sweep leaves a live pod's):
        // a container made after the restart reads what one wrote before it.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let c = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata { name: "reader".into(), attempt: 0 }),
            image: spec("busybox"),
            command: vec!["sleep".into(), "600".into()],
            ..Default::default()
        };
        let config = pod_config("lasting", false);
        let create = cri::CreateContainerRequest { pod_sandbox_id: pod.clone(), config: Some(c), sandbox_config: Some(config) };
        let reader = rt.create_container(create).await.unwrap().into_inner().container_id;
        rt.start_container(cri::StartContainerRequest { container_id: reader.clone() }).await.unwrap();
        assert_eq!(exec_out(&mut rt, &reader, &["cat", "/dev/shm/note"]).await.trim(), "kept");
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
    });
}

/// Run `cmd` in a container with ExecSync; its stdout (it must succeed).
async fn exec_out(rt: &mut RuntimeServiceClient<tonic::transport::Channel>, id: &str, cmd: &[&str]) -> String {
    let req = cri::ExecSyncRequest { container_id: id.to_owned(), cmd: cmd.iter().map(|s| s.to_string()).collect(), timeout: 10 };
    let r = rt.exec_sync(req).await.unwrap().into_inner();
    assert_eq!(r.exit_code, 0, "{cmd:?}: {}", String::from_utf8_lossy(&r.stderr));
    String::from_utf8(r.stdout).unwrap()
}

#[test]
fn pods_share_ipc_and_processes_as_asked_with_their_sysctls_cgroup_and_security() {
    require_tool("runc", "runc");
    // Dropped after the agent (declared before it): the cgroups are empty by then.
    let parent = format!("/berth-cri-test-{}", std::process::id());
    let _cleanup = ParentCgroups(parent.clone());
    let d = Daemon::start();
    let path = d.file("busybox.tar", &oci_archive(&[("docker.io/library/busybox:latest", &ImageSpec::new(vec![busybox_layer()]))]));
    d.ok(&["--namespace", "k8s.io", "load", "-i", path.to_str().unwrap()]);
    rt().block_on(async {
        let channel = berth_api::connect(d.state.join("cri.sock"), std::time::Duration::from_secs(5)).await.unwrap();
        let mut rt = RuntimeServiceClient::new(channel);
        let mut config = pod_config("shared", false);
        let linux = config.linux.get_or_insert_with(Default::default);
        linux.cgroup_parent = format!("{parent}/pod-shared");
        linux.sysctls =
            [("kernel.shm_rmid_forced".to_owned(), "1".to_owned()), ("net.ipv4.ip_unprivileged_port_start".to_owned(), "99".to_owned())]
                .into();
        let pod = rt
            .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() })
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id;
        let container = |name: &str, pid: cri::NamespaceMode, sc: cri::LinuxContainerSecurityContext| cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata { name: name.into(), attempt: 0 }),
            image: spec("busybox"),
            command: vec!["sleep".into(), "1000".into()],
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(cri::NamespaceOption { pid: pid as i32, ..Default::default() }),
                    ..sc
                }),
                resources: Some(cri::LinuxContainerResources { cpu_shares: 512, ..Default::default() }),
            }),
            ..Default::default()
        };
        let confined = cri::LinuxContainerSecurityContext {
            seccomp: Some(cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                localhost_ref: String::new(),
            }),
            supplemental_groups: vec![1234],
            masked_paths: vec!["/proc/keys".into()],
            ..Default::default()
        };
        // The kubelet's event stream (evented PLEG), from before the containers are made.
        let mut events = rt.get_container_events(cri::GetEventsRequest {}).await.unwrap().into_inner();
        let mut ids = Vec::new();
        for c in [
            container("one", cri::NamespaceMode::Pod, confined.clone()),
            container("two", cri::NamespaceMode::Pod, Default::default()),
            container("own", cri::NamespaceMode::Container, Default::default()),
        ] {
            let req = cri::CreateContainerRequest { pod_sandbox_id: pod.clone(), config: Some(c), sandbox_config: Some(config.clone()) };
            let id = rt.create_container(req).await.unwrap().into_inner().container_id;
            rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.unwrap();
            ids.push(id);
        }
        let (one, two, own) = (&ids[0], &ids[1], &ids[2]);
        // A shared process namespace: the pod's pause process is pid 1, and each sees the other.
        let ps = exec_out(&mut rt, two, &["ps", "-o", "pid,args"]).await;
        assert!(ps.lines().any(|l| l.trim_start().starts_with("1 ") && l.contains("pause")), "{ps}");
        assert_eq!(ps.matches("sleep 1000").count(), 2, "{ps}");
        let ps = exec_out(&mut rt, own, &["ps", "-o", "pid,args"]).await;
        assert_eq!(ps.matches("sleep 1000").count(), 1, "its own namespace: {ps}");
        // One IPC namespace for the pod, with its sysctls (and the network's).
        let ipc: Vec<String> = exec_each(&mut rt, &ids, &["busybox", "readlink", "/proc/self/ns/ipc"]).await;
        assert!(ipc.iter().all(|i| i == &ipc[0]) && ipc[0].starts_with("ipc:"), "{ipc:?}");
        assert_eq!(exec_out(&mut rt, own, &["cat", "/proc/sys/kernel/shm_rmid_forced"]).await.trim(), "1");
        // One /dev/shm for the pod too (POSIX shared memory), on the host under the agent's state.
        exec_out(&mut rt, one, &["sh", "-c", "echo shared > /dev/shm/note"]).await;
        assert_eq!(exec_out(&mut rt, own, &["cat", "/dev/shm/note"]).await.trim(), "shared");
        let shm = d.state.join("pods").join(&pod).join("shm");
        assert_eq!(std::fs::read_to_string(shm.join("note")).unwrap().trim(), "shared");
        let mounted = |path: &std::path::Path| {
            std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().any(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap()))
        };
        assert!(mounted(&shm), "a tmpfs of its own");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(shm.parent().unwrap()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "only root enters the pod's directory");
        let df = exec_out(&mut rt, two, &["busybox", "df", "-k", "/dev/shm"]).await;
        assert!(df.lines().nth(1).is_some_and(|l| l.split_whitespace().nth(1) == Some("65536")), "64 MiB: {df}");
        assert_eq!(exec_out(&mut rt, one, &["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"]).await.trim(), "99");
        // The kubelet's cgroup parent.
        let cg = exec_out(&mut rt, one, &["cat", "/proc/self/cgroup"]).await;
        assert!(cg.lines().any(|l| l.ends_with(&format!("{parent}/pod-shared/{one}"))), "{cg}");
        // Seccomp as asked (filtered under RuntimeDefault, not when unset), extra groups,
        // the kubelet's masked paths.
        let status = exec_out(&mut rt, one, &["cat", "/proc/self/status"]).await;
        assert!(status.lines().any(|l| l.starts_with("Seccomp:") && l.ends_with('2')), "{status}");
        let status = exec_out(&mut rt, two, &["cat", "/proc/self/status"]).await;
        assert!(status.lines().any(|l| l.starts_with("Seccomp:") && l.ends_with('0')), "{status}");
        assert!(exec_out(&mut rt, one, &["id", "-G"]).await.split_whitespace().any(|g| g == "1234"));
        let size = |s: String| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap();
        assert!(size(exec_out(&mut rt, one, &["wc", "-c", "/proc/timer_list"]).await) > 0, "the kubelet's list replaces docker's");
        assert_eq!(size(exec_out(&mut rt, two, &["wc", "-c", "/proc/timer_list"]).await), 0, "an empty list keeps docker's");
        // Limits changed in place (the kubelet's resize), read back from the cgroups.
        let cgroup = |c: &str, file: &str| {
            std::fs::read_to_string(format!("/sys/fs/cgroup/{c}{parent}/pod-shared/{one}/{file}")).unwrap().trim().to_owned()
        };
        assert_eq!(cgroup("cpu", "cpu.shares"), "512");
        let resources = cri::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            cpu_shares: 256,
            ..Default::default()
        };
        let update = |id: &str| cri::UpdateContainerResourcesRequest {
            container_id: id.to_owned(),
            linux: Some(resources.clone()),
            ..Default::default()
        };
        rt.update_container_resources(update(one)).await.unwrap();
        assert_eq!(cgroup("memory", "memory.limit_in_bytes"), (64u64 << 20).to_string());
        assert_eq!((cgroup("cpu", "cpu.cfs_quota_us"), cgroup("cpu", "cpu.shares")), ("50000".into(), "256".into()));
        assert_eq!(rt.update_container_resources(update("nope")).await.unwrap_err().code(), tonic::Code::NotFound);
        // A second pod, reached from the first at its address.
        let peer_config = pod_config("peer", false);
        let run = cri::RunPodSandboxRequest { config: Some(peer_config.clone()), runtime_handler: String::new() };
        let peer = rt.run_pod_sandbox(run).await.unwrap().into_inner().pod_sandbox_id;
        let mut server = container("server", cri::NamespaceMode::Container, Default::default());
        server.command = ["busybox", "httpd", "-f", "-p", "8080", "-h", "/etc"].iter().map(|s| s.to_string()).collect();
        let req = cri::CreateContainerRequest { pod_sandbox_id: peer.clone(), config: Some(server), sandbox_config: Some(peer_config) };
        let server = rt.create_container(req).await.unwrap().into_inner().container_id;
        rt.start_container(cri::StartContainerRequest { container_id: server.clone() }).await.unwrap();
        let st = rt.pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: peer.clone(), verbose: false }).await.unwrap();
        let peer_ip = st.into_inner().status.unwrap().network.unwrap().ip;
        let url = format!("http://{peer_ip}:8080/hostname");
        let mut got = String::new();
        for _ in 0..50 {
            let req = cri::ExecSyncRequest {
                container_id: own.clone(),
                cmd: vec!["busybox".into(), "wget".into(), "-q".into(), "-O".into(), "-".into(), url.clone()],
                timeout: 5,
            };
            let r = rt.exec_sync(req).await.unwrap().into_inner();
            if r.exit_code == 0 {
                got = String::from_utf8(r.stdout).unwrap();
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(got.trim(), "peer-host", "pod to pod, by address");
        rt.stop_container(cri::StopContainerRequest { container_id: server, timeout: 0 }).await.unwrap();
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: peer.clone() }).await.unwrap();
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: peer }).await.unwrap();
        // A target namespace needs its target.
        let mut bad = container("bad", cri::NamespaceMode::Target, Default::default());
        bad.metadata.as_mut().unwrap().name = "bad".into();
        let req = cri::CreateContainerRequest { pod_sandbox_id: pod.clone(), config: Some(bad), sandbox_config: Some(config.clone()) };
        assert_eq!(rt.create_container(req).await.unwrap_err().code(), tonic::Code::InvalidArgument);
        for id in &ids {
            rt.stop_container(cri::StopContainerRequest { container_id: id.clone(), timeout: 0 }).await.unwrap();
        }
        rt.remove_container(cri::RemoveContainerRequest { container_id: one.clone() }).await.unwrap();
        // Container one's life, as the events told it, each with its pod's state.
        let mut seen = Vec::new();
        while !seen.contains(&cri::ContainerEventType::ContainerDeletedEvent) {
            let e = tokio::time::timeout(std::time::Duration::from_secs(10), events.message()).await.expect("an event").unwrap().unwrap();
            if e.container_id == *one {
                let kind = cri::ContainerEventType::try_from(e.container_event_type).unwrap();
                let p = e.pod_sandbox_status.as_ref().expect("the pod's status");
                assert_eq!(p.id, pod);
                if kind == cri::ContainerEventType::ContainerStartedEvent {
                    assert!(e.containers_statuses.iter().any(|c| c.id == *one && c.state == cri::ContainerState::ContainerRunning as i32));
                }
                seen.push(kind);
            }
        }
        use cri::ContainerEventType::*;
        assert_eq!(seen, [ContainerCreatedEvent, ContainerStartedEvent, ContainerStoppedEvent, ContainerDeletedEvent]);
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
        assert!(!mounted(&shm) && !shm.exists(), "the pod's /dev/shm goes with it");
    });
}

/// The parent cgroups the runtime made for a test, removed when it ends (passed or not;
/// the agent's own drop has stopped the containers in them first).
struct ParentCgroups(String);

impl Drop for ParentCgroups {
    fn drop(&mut self) {
        let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else { return };
        for h in hierarchies.flatten() {
            let dir = h.path().join(self.0.trim_start_matches('/'));
            let Ok(children) = std::fs::read_dir(&dir) else { continue };
            for c in children.flatten().filter(|c| c.path().is_dir()) {
                let _ = std::fs::remove_dir(c.path());
            }
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Run `cmd` in each container; their outputs, trimmed.
async fn exec_each(rt: &mut RuntimeServiceClient<tonic::transport::Channel>, ids: &[String], cmd: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for id in ids {
        out.push(exec_out(rt, id, cmd).await.trim().to_owned());
    }
    out
}

#[test]
fn cri_pulls_go_through_the_agent_s_mirrors_with_its_credentials() {
    // A local registry that asks for a login, standing in for a mirror of registry.k8s.io
    // (which this machine cannot reach: only the mirror can answer).
    let reg = Registry::start(Some(("mirror", "s3cret")));
    let mut d = Daemon::unstarted(&[]);
    let toml = format!(
        "[registries.\"registry.k8s.io\"]\nmirrors = [\"http://{0}\"]\n\n[registries.\"{0}\"]\nusername = \"mirror\"\npassword = \"s3cret\"\n",
        reg.addr
    );
    let cfg = d.file("berthd.toml", toml.as_bytes());
    d.extra_args = vec!["--config".into(), cfg.display().to_string()];
    d.spawn();
    d.wait_ready();
    let path = d.file("pause.tar", &oci_archive(&[("docker.io/library/pause:3.9", &ImageSpec::new(vec![busybox_layer()]))]));
    d.ok(&["load", "-i", path.to_str().unwrap()]);
    let mirrored = format!("{}/pause:3.9", reg.addr);
    d.ok(&["tag", "pause:3.9", &mirrored]);
    d.ok(&["push", "--creds", "mirror:s3cret", &mirrored]);
    rt().block_on(async {
        let channel = berth_api::connect(d.state.join("cri.sock"), std::time::Duration::from_secs(5)).await.unwrap();
        let mut images = ImageServiceClient::new(channel);
        // The kubelet passes no credentials: the agent's own for the mirror are used.
        let req = cri::PullImageRequest { image: spec("registry.k8s.io/pause:3.9"), auth: None, sandbox_config: None };
        let pulled = images.pull_image(req).await.unwrap().into_inner();
        let status =
            images.image_status(cri::ImageStatusRequest { image: spec("registry.k8s.io/pause:3.9"), verbose: false }).await.unwrap();
        let image = status.into_inner().image.expect("the pulled image");
        assert_eq!(image.id, pulled.image_ref);
        assert!(image.repo_tags.contains(&"registry.k8s.io/pause:3.9".to_owned()), "{:?}", image.repo_tags);
    });
}
