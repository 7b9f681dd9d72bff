//! The CRI validation suite's specs (cri-tools' `critest`), as far as they run on this
//! machine without its images: each check below names the spec it follows and makes the
//! same calls with the same commands and the same expectations, on a busybox image built
//! here (the busybox-static binary with the applets those specs call).

mod common;

use std::time::Duration;

use berth_api::cri::{self, runtime_service_client::RuntimeServiceClient};
use common::*;

type Rt = RuntimeServiceClient<tonic::transport::Channel>;

const IMAGE: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// An agent with the suite's busybox image in `k8s.io`, and a CRI client.
fn agent() -> (Daemon, tokio::runtime::Runtime, Rt) {
    require_tool("runc", "runc");
    let d = Daemon::start();
    let mut applets = vec![Entry::Dir("bin".into(), 0o755)];
    for a in ["top", "pidof", "ping", "brctl", "netstat", "hostname", "mount", "dd", "grep", "chmod", "cut"] {
        applets.push(Entry::Symlink(format!("bin/{a}"), "busybox".into()));
    }
    applets.push(Entry::Dir("etc".into(), 0o755));
    applets.push(Entry::File("etc/secret".into(), b"masked\n".to_vec(), 0o644));
    // test-image-predefined-group's user: uid 1000, in a group of the image's.
    let passwd =
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\ndefault-user:x:1000:1000::/home/default-user:/bin/sh\n";
    let group = "root:x:0:\nnogroup:x:65534:\ndefault-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n";
    applets.push(Entry::File("etc/passwd".into(), passwd.as_bytes().to_vec(), 0o644));
    applets.push(Entry::File("etc/group".into(), group.as_bytes().to_vec(), 0o644));
    let image = ImageSpec::new(vec![busybox_layer(), layer(&applets)]);
    let path = d.file("busybox.tar", &oci_archive(&[(IMAGE, &image)]));
    d.ok(&["--namespace", "k8s.io", "load", "-i", path.to_str().unwrap()]);
    let runtime = rt();
    let channel = runtime.block_on(berth_api::connect(d.state.join("cri.sock"), Duration::from_secs(5))).unwrap();
    (d, runtime, RuntimeServiceClient::new(channel))
}

fn pod(name: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("cri-test-uid-{name}"),
            namespace: format!("cri-test-namespace-{name}"),
            attempt: 2,
        }),
        linux: Some(cri::LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

fn with_namespaces(mut p: cri::PodSandboxConfig, ns: cri::NamespaceOption) -> cri::PodSandboxConfig {
    let linux = p.linux.get_or_insert_with(Default::default);
    linux.security_context.get_or_insert_with(Default::default).namespace_options = Some(ns);
    p
}

fn container(name: &str, cmd: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: name.into(), attempt: 2 }),
        image: Some(cri::ImageSpec { image: IMAGE.into(), ..Default::default() }),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        linux: Some(cri::LinuxContainerConfig::default()),
        ..Default::default()
    }
}

fn secured(mut c: cri::ContainerConfig, sc: cri::LinuxContainerSecurityContext) -> cri::ContainerConfig {
    c.linux.get_or_insert_with(Default::default).security_context = Some(sc);
    c
}

async fn run_pod(rt: &mut Rt, config: &cri::PodSandboxConfig) -> String {
    let req = cri::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
    rt.run_pod_sandbox(req).await.unwrap().into_inner().pod_sandbox_id
}

async fn create(rt: &mut Rt, pod: &str, config: &cri::PodSandboxConfig, c: cri::ContainerConfig) -> Result<String, tonic::Status> {
    let req = cri::CreateContainerRequest { pod_sandbox_id: pod.into(), config: Some(c), sandbox_config: Some(config.clone()) };
    rt.create_container(req).await.map(|r| r.into_inner().container_id)
}

/// Create and start; the spec's `testStartContainer` then waits for RUNNING.
async fn started(rt: &mut Rt, pod: &str, config: &cri::PodSandboxConfig, c: cri::ContainerConfig) -> String {
    let id = create(rt, pod, config, c).await.unwrap();
    rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.unwrap();
    id
}

async fn status(rt: &mut Rt, id: &str) -> cri::ContainerStatus {
    let req = cri::ContainerStatusRequest { container_id: id.into(), verbose: false };
    rt.container_status(req).await.unwrap().into_inner().status.unwrap()
}

/// The spec's `Eventually(state, 1min, ...)`.
async fn wait_state(rt: &mut Rt, id: &str, state: cri::ContainerState) -> cri::ContainerStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(rt, id).await;
        if s.state == state as i32 || tokio::time::Instant::now() > deadline {
            assert_eq!(s.state, state as i32, "{s:?}");
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn exec(rt: &mut Rt, id: &str, cmd: &[&str], timeout: i64) -> Result<cri::ExecSyncResponse, tonic::Status> {
    let req = cri::ExecSyncRequest { container_id: id.into(), cmd: cmd.iter().map(|s| s.to_string()).collect(), timeout };
    rt.exec_sync(req).await.map(|r| r.into_inner())
}

/// The spec's `execSyncContainer`: no error, stderr empty, stdout returned.
async fn exec_ok(rt: &mut Rt, id: &str, cmd: &[&str]) -> String {
    let r = exec(rt, id, cmd, 30).await.unwrap();
    assert_eq!((r.exit_code, String::from_utf8_lossy(&r.stderr).as_ref()), (0, ""), "{cmd:?}");
    String::from_utf8(r.stdout).unwrap()
}

/// A command that must fail (an error, or a nonzero code): its stderr.
async fn exec_fails(rt: &mut Rt, id: &str, cmd: &[&str]) -> String {
    let r = exec(rt, id, cmd, 30).await.unwrap();
    assert_ne!(r.exit_code, 0, "{cmd:?} succeeded: {}", String::from_utf8_lossy(&r.stdout));
    String::from_utf8(r.stderr).unwrap()
}

async fn remove_pod(rt: &mut Rt, id: &str) {
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id.into() }).await.unwrap();
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id.into() }).await.unwrap();
}

/// The messages of a CRI log file, split as the suite's `parseCRILog` does (every line must
/// have its four fields and a time in RFC 3339).
fn log_messages(path: &std::path::Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(4, ' ').collect();
            assert_eq!(f.len(), 4, "a CRI log line has four fields: {l:?}");
            assert!(f[0].len() > 20 && f[0].ends_with('Z') && f[0].contains('T'), "an RFC 3339 time: {l:?}");
            (f[1].to_owned(), format!("{}\n", f[3]))
        })
        .collect()
}

async fn wait_log(path: &std::path::Path, done: impl Fn(&[(String, String)]) -> bool) -> Vec<(String, String)> {
    for _ in 0..300 {
        let m = log_messages(path);
        if done(&m) {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the log {path:?} never held what was expected: {:?}", log_messages(path));
}

#[test]
fn runtime_info_pods_containers_and_idempotence() {
    let (d, runtime, mut rt) = agent();
    runtime.block_on(async {
        // "runtime should return version info", "runtime should return runtime conditions".
        rt.version(cri::VersionRequest { version: "0.1.0".into() }).await.unwrap();
        let st = rt.status(cri::StatusRequest { verbose: false }).await.unwrap().into_inner();
        let ready = st
            .status
            .unwrap()
            .conditions
            .iter()
            .filter(|c| matches!(c.r#type.as_str(), "RuntimeReady" | "NetworkReady") && c.status)
            .count();
        assert_eq!(ready, 2);
        // The default handler's features gate the recursive read-only specs: runc 1.1 makes them.
        let h = st.runtime_handlers.iter().find(|h| h.name.is_empty()).expect("the default handler");
        assert!(h.features.as_ref().unwrap().recursive_read_only_mounts);
        // The cgroupfs driver: the suite's pods then name no cgroup parent.
        let cfg = rt.runtime_config(cri::RuntimeConfigRequest {}).await.unwrap().into_inner();
        assert_eq!(cfg.linux.unwrap().cgroup_driver, cri::CgroupDriver::Cgroupfs as i32);

        // PodSandbox: running, stopping (twice), removing.
        let config = pod("PodSandbox-for-create-test-1");
        let p = run_pod(&mut rt, &config).await;
        let s = rt.pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: p.clone(), verbose: false }).await.unwrap();
        assert_eq!(s.into_inner().status.unwrap().state, cri::PodSandboxState::SandboxReady as i32);
        let listed = |rt: &mut Rt, id: String| {
            let filter = cri::PodSandboxFilter { id, ..Default::default() };
            let mut rt = rt.clone();
            async move { rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: Some(filter) }).await.unwrap().into_inner().items }
        };
        assert_eq!(listed(&mut rt, p.clone()).await.len(), 1);

        // Container: creating, starting, execSync, execSync with timeout, stats, stopping
        // `top` (pid 1 keeps running through SIGTERM: the stop kills it), removing.
        let c = create(&mut rt, &p, &config, container("container-for-create-1", &["top"])).await.unwrap();
        let f = cri::ContainerFilter { id: c.clone(), ..Default::default() };
        assert_eq!(rt.list_containers(cri::ListContainersRequest { filter: Some(f) }).await.unwrap().into_inner().containers.len(), 1);
        rt.start_container(cri::StartContainerRequest { container_id: c.clone() }).await.unwrap();
        wait_state(&mut rt, &c, cri::ContainerState::ContainerRunning).await;
        assert_eq!(exec_ok(&mut rt, &c, &["echo", "-n", "hello"]).await, "hello");
        let e = exec(&mut rt, &c, &["sleep", "4321"], 1).await.expect_err("execSync with timeout must fail");
        assert_eq!(e.code(), tonic::Code::DeadlineExceeded);
        // (The suite's `pgrep sleep`: this busybox has no pgrep.)
        let left = exec_ok(&mut rt, &c, &["sh", "-c", "ps -o args | grep -v grep | grep sleep || true"]).await;
        assert_eq!(left.trim(), "", "the timed-out command is killed");
        let stats = rt.container_stats(cri::ContainerStatsRequest { container_id: c.clone() }).await.unwrap().into_inner().stats.unwrap();
        let attrs = stats.attributes.unwrap();
        assert_eq!(attrs.id, c);
        assert!(attrs.metadata.unwrap().name.contains("container-for-create-"));
        assert!(stats.cpu.unwrap().timestamp != 0 && stats.memory.unwrap().timestamp != 0);
        // Three more, one labelled: stats with no filter list all; a label selector filters.
        let mut labelled = container("container-for-stats-with-labels-1", &["top"]);
        labelled.labels = [("foo".to_owned(), "bar".to_owned())].into();
        let l = started(&mut rt, &p, &config, labelled).await;
        let mut others = Vec::new();
        for i in 0..2 {
            others.push(started(&mut rt, &p, &config, container(&format!("container-for-stats-{i}"), &["top"])).await);
        }
        let all = rt.list_container_stats(cri::ListContainerStatsRequest { filter: None }).await.unwrap().into_inner().stats;
        let ids: Vec<String> = all.iter().map(|s| s.attributes.as_ref().unwrap().id.clone()).collect();
        assert!([&c, &l, &others[0], &others[1]].iter().all(|id| ids.contains(id)), "{ids:?}");
        for (value, found) in [("bar", true), ("baz", false)] {
            let filter = cri::ContainerStatsFilter { label_selector: [("foo".to_owned(), value.to_owned())].into(), ..Default::default() };
            let got = rt.list_container_stats(cri::ListContainerStatsRequest { filter: Some(filter) }).await.unwrap().into_inner().stats;
            assert_eq!(got.iter().any(|s| s.attributes.as_ref().unwrap().id == l), found, "foo={value}");
        }
        let t0 = std::time::Instant::now();
        rt.stop_container(cri::StopContainerRequest { container_id: c.clone(), timeout: 2 }).await.unwrap();
        assert!(t0.elapsed() < Duration::from_secs(30));
        wait_state(&mut rt, &c, cri::ContainerState::ContainerExited).await;
        // Removing: stopped, running (forced), never started; then again (idempotence).
        rt.remove_container(cri::RemoveContainerRequest { container_id: c.clone() }).await.unwrap();
        rt.remove_container(cri::RemoveContainerRequest { container_id: c.clone() }).await.unwrap();
        rt.remove_container(cri::RemoveContainerRequest { container_id: l.clone() }).await.unwrap();
        let created = create(&mut rt, &p, &config, container("container-for-remove-created-1", &["sh", "-c", "top"])).await.unwrap();
        rt.remove_container(cri::RemoveContainerRequest { container_id: created.clone() }).await.unwrap();
        let left = rt.list_containers(cri::ListContainersRequest { filter: None }).await.unwrap().into_inner().containers;
        assert!(!left.iter().any(|x| [&c, &l, &created].contains(&&x.id)));

        // A pod with running containers stops, twice, and goes.
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: p.clone() }).await.unwrap();
        let s = rt.pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: p.clone(), verbose: false }).await.unwrap();
        assert_eq!(s.into_inner().status.unwrap().state, cri::PodSandboxState::SandboxNotready as i32);
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: p.clone() }).await.unwrap();
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: p.clone() }).await.unwrap();
        assert!(listed(&mut rt, p.clone()).await.is_empty());

        // Idempotence: what is not there stops and goes without an error.
        let unknown = "8c4d8a8e-2b9e-4f6f-9d7a-0a3c0f1e2d3b".to_owned();
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: unknown.clone() }).await.unwrap();
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: unknown.clone() }).await.unwrap();
        rt.stop_container(cri::StopContainerRequest { container_id: unknown.clone(), timeout: 0 }).await.unwrap();
        rt.remove_container(cri::RemoveContainerRequest { container_id: unknown }).await.unwrap();
        let channel = berth_api::connect(d.state.join("cri.sock"), Duration::from_secs(5)).await.unwrap();
        let mut images = cri::image_service_client::ImageServiceClient::new(channel);
        for _ in 0..2 {
            let spec = Some(cri::ImageSpec { image: "0".repeat(64), ..Default::default() });
            images.remove_image(cri::RemoveImageRequest { image: spec }).await.unwrap();
        }

        // "should support unsafe sysctls" (IPC's, on the pod's IPC namespace).
        let mut config = pod("pod-sandbox-with-sysctls-1");
        config.linux.as_mut().unwrap().sysctls = [("fs.mqueue.msg_max".to_owned(), "100".to_owned())].into();
        let p = run_pod(&mut rt, &config).await;
        let c = started(&mut rt, &p, &config, container("container-fs-mqueue-msg-max-1", &["top"])).await;
        assert_eq!(exec_ok(&mut rt, &c, &["cat", "/proc/sys/fs/mqueue/msg_max"]).await.trim(), "100");
        remove_pod(&mut rt, &p).await;
    });
}

#[test]
fn volumes_logs_propagation_read_only_mounts_and_oom() {
    let (d, runtime, mut rt) = agent();
    runtime.block_on(async {
        let host = d.dir.path().join("vol");
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(host.join("testVolume.file"), "").unwrap();
        let logs = d.dir.path().join("podLogTest");
        std::fs::create_dir_all(&logs).unwrap();
        let mut config = pod("PodSandbox-with-log-directory-1");
        config.log_directory = logs.display().to_string();
        let p = run_pod(&mut rt, &config).await;

        // "starting container with volume" and "... when host path is a symlink".
        let link = d.dir.path().join("vol-symlink");
        std::os::unix::fs::symlink(&host, &link).unwrap();
        for path in [&host, &link] {
            let path = path.display().to_string();
            let mut c = container(&format!("container-with-volume-{}", path.len()), &["sh", "-c", "top"]);
            c.linux = None;
            c.mounts =
                vec![cri::Mount { host_path: path.clone(), container_path: path.clone(), selinux_relabel: true, ..Default::default() }];
            let id = started(&mut rt, &p, &config, c).await;
            wait_state(&mut rt, &id, cri::ContainerState::ContainerRunning).await;
            assert!(!exec_ok(&mut rt, &id, &["ls", "-A", &path]).await.is_empty(), "{path}");
        }

        // "starting container with log": the line, on stdout, in the four fields.
        let mut c = container("container-for-log-1", &["echo", "hello World"]);
        c.linux = None;
        c.log_path = "container-for-log-1.log".into();
        let id = started(&mut rt, &p, &config, c).await;
        let st = wait_state(&mut rt, &id, cri::ContainerState::ContainerExited).await;
        // ContainerStatus' log path is the file itself (the multi-container spec reads it).
        assert_eq!(st.log_path, logs.join("container-for-log-1.log").display().to_string());
        let m = wait_log(&logs.join("container-for-log-1.log"), |m| !m.is_empty()).await;
        assert!(m.contains(&("stdout".into(), "hello World\n".into())), "{m:?}");

        // "reopening container log": renamed away, reopened, a new file at once; the old one
        // is written no more.
        let mut c = container("container-for-reopen-1", &["sh", "-c", "while true; do echo hello World; sleep 1; done"]);
        c.log_path = "reopen.log".into();
        let id = started(&mut rt, &p, &config, c).await;
        let (log, old) = (logs.join("reopen.log"), logs.join("reopen.log.new"));
        wait_log(&log, |m| !m.is_empty()).await;
        std::fs::rename(&log, &old).unwrap();
        rt.reopen_container_log(cri::ReopenContainerLogRequest { container_id: id.clone() }).await.unwrap();
        assert!(log.exists(), "the new file is there when the call returns");
        wait_log(&log, |m| !m.is_empty()).await;
        let before = log_messages(&old).len();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(log_messages(&old).len(), before);
        remove_pod(&mut rt, &p).await;

        // Mount propagation, in a privileged pod: rprivate, rshared, rslave.
        let mut config = pod("create-Privileged-PodSandbox-for-container-1");
        config.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext { privileged: true, ..Default::default() });
        let p = run_pod(&mut rt, &config).await;
        for (n, propagation, inside, back) in [
            (0, cri::MountPropagation::PropagationPrivate, false, false),
            (1, cri::MountPropagation::PropagationBidirectional, true, true),
            (2, cri::MountPropagation::PropagationHostToContainer, true, false),
        ] {
            let root = d.dir.path().join(format!("prop{n}"));
            let source = root.join("mnt");
            let point = source.join("propagationMnt");
            let src_dir = root.join("propagationSrcDir");
            std::fs::create_dir_all(&point).unwrap();
            std::fs::create_dir_all(&src_dir).unwrap();
            std::fs::write(src_dir.join("flagFile"), "").unwrap();
            let s = source.to_str().unwrap();
            let shared = if propagation == cri::MountPropagation::PropagationPrivate { "--make-rprivate" } else { "--make-rshared" };
            run_ok("mount", &["--bind", s, s]);
            run_ok("mount", &[shared, s]);
            let mut c = secured(
                container(&format!("mount-propagation-{n}"), &["sh", "-c", "top"]),
                cri::LinuxContainerSecurityContext { privileged: true, ..Default::default() },
            );
            c.mounts =
                vec![cri::Mount { host_path: s.into(), container_path: s.into(), propagation: propagation as i32, ..Default::default() }];
            let id = create(&mut rt, &p, &config, c).await.unwrap();
            let st = rt.container_status(cri::ContainerStatusRequest { container_id: id.clone(), verbose: true }).await.unwrap();
            let mounts = st.into_inner().status.unwrap().mounts;
            assert_eq!(mounts.len(), 1);
            assert_eq!((mounts[0].container_path.as_str(), mounts[0].host_path.as_str()), (s, s));
            assert_eq!((mounts[0].readonly, mounts[0].selinux_relabel, mounts[0].propagation), (false, false, propagation as i32));
            rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.unwrap();
            wait_state(&mut rt, &id, cri::ContainerState::ContainerRunning).await;
            run_ok("mount", &["--bind", src_dir.to_str().unwrap(), point.to_str().unwrap()]);
            let seen = exec_ok(&mut rt, &id, &["ls", "-A", point.to_str().unwrap()]).await;
            assert_eq!(!seen.trim().is_empty(), inside, "{propagation:?}: host to container");
            let cpoint = format!("{s}/containerMntPoint");
            exec_ok(&mut rt, &id, &["sh", "-c", &format!("mkdir -p {cpoint}")]).await;
            exec_ok(&mut rt, &id, &["sh", "-c", &format!("mount --bind /etc {cpoint}")]).await;
            let on_host = std::fs::read_dir(&cpoint).map(|r| r.count()).unwrap_or(0);
            assert_eq!(on_host > 0, back, "{propagation:?}: container to host");
            rt.remove_container(cri::RemoveContainerRequest { container_id: id }).await.unwrap();
            let _ = std::process::Command::new("umount").args(["-R", "-l", s]).status();
        }
        remove_pod(&mut rt, &p).await;

        // Read-only mounts: a plain one leaves the mounts below it writable; a recursive one
        // does not; a recursive one that is not read-only, or that propagates, is refused.
        let config = pod("rro-1");
        let p = run_pod(&mut rt, &config).await;
        let root = d.dir.path().join("rro");
        std::fs::create_dir_all(root.join("tmpfs")).unwrap();
        run_ok("mount", &["-t", "tmpfs", "tmpfs", root.join("tmpfs").to_str().unwrap()]);
        let ro_mount = |recursive: bool, readonly: bool, propagation: cri::MountPropagation| cri::Mount {
            host_path: root.display().to_string(),
            container_path: "/mnt".into(),
            readonly,
            recursive_read_only: recursive,
            selinux_relabel: true,
            propagation: propagation as i32,
            ..Default::default()
        };
        let mut c = container("test-mount-plain", &["sh", "-c", "top"]);
        c.mounts = vec![ro_mount(false, true, cri::MountPropagation::PropagationPrivate)];
        let id = started(&mut rt, &p, &config, c).await;
        exec_ok(&mut rt, &id, &["touch", "/mnt/tmpfs/file"]).await;
        let mut c = container("test-mount-recursive", &["sh", "-c", "top"]);
        c.mounts = vec![ro_mount(true, true, cri::MountPropagation::PropagationPrivate)];
        let id = started(&mut rt, &p, &config, c).await;
        exec_ok(&mut rt, &id, &["sh", "-c", "touch /mnt/tmpfs/foo 2>&1 | grep -q \"Read-only file system\""]).await;
        for (n, readonly, propagation) in [
            (1, true, cri::MountPropagation::PropagationHostToContainer),
            (2, true, cri::MountPropagation::PropagationBidirectional),
            (3, false, cri::MountPropagation::PropagationPrivate),
        ] {
            let mut c = container(&format!("test-mount-bad-{n}"), &["sh", "-c", "top"]);
            c.mounts = vec![ro_mount(true, readonly, propagation)];
            assert!(create(&mut rt, &p, &config, c).await.is_err(), "{readonly} {propagation:?}");
        }
        remove_pod(&mut rt, &p).await;
        let _ = std::process::Command::new("umount").arg(root.join("tmpfs")).status();

        // "should terminate with exitCode 137 and reason OOMKilled" (15 MiB, swap the same).
        let config = pod("oom-1");
        let p = run_pod(&mut rt, &config).await;
        let mut c = container("oom-container", &["sh", "-c", "dd if=/dev/zero of=/dev/null bs=20M"]);
        c.linux.as_mut().unwrap().resources = Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 15 << 20,
            memory_swap_limit_in_bytes: 15 << 20,
            ..Default::default()
        });
        let id = started(&mut rt, &p, &config, c).await;
        let st = wait_state(&mut rt, &id, cri::ContainerState::ContainerExited).await;
        assert_eq!((st.reason.as_str(), st.exit_code), ("OOMKilled", 137));
        remove_pod(&mut rt, &p).await;
    });
}

#[test]
fn security_contexts_as_the_suite_asks() {
    let (d, runtime, mut rt) = agent();
    runtime.block_on(async {
        let logs = d.dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let mut config = pod("security-1");
        config.log_directory = logs.display().to_string();
        config.dns_config = Some(cri::DnsConfig::default());
        let p = run_pod(&mut rt, &config).await;
        let sc = |f: fn(&mut cri::LinuxContainerSecurityContext)| {
            let mut s = cri::LinuxContainerSecurityContext::default();
            f(&mut s);
            s
        };
        let top = |name: &str, s: cri::LinuxContainerSecurityContext| secured(container(name, &["sh", "-c", "top"]), s);

        // SupplementalGroups, RunAsUser, RunAsUserName.
        let id = started(&mut rt, &p, &config, top("groups", sc(|s| s.supplemental_groups = vec![1234, 5678]))).await;
        let groups = exec_ok(&mut rt, &id, &["id", "-G"]).await;
        assert!(["1234", "5678"].iter().all(|g| groups.split_whitespace().any(|x| x == *g)), "{groups}");
        let id = started(&mut rt, &p, &config, top("user", sc(|s| s.run_as_user = Some(cri::Int64Value { value: 1001 })))).await;
        assert_eq!(exec_ok(&mut rt, &id, &["id", "-u"]).await, "1001\n");
        let id = started(&mut rt, &p, &config, top("username", sc(|s| s.run_as_username = "nobody".into()))).await;
        assert_eq!(exec_ok(&mut rt, &id, &["id", "-nu"]).await, "nobody\n");
        // SupplementalGroupsPolicy (advertised): Merge adds the image's groups of the user,
        // Strict does not; ContainerStatus.user says so.
        let st = rt.status(cri::StatusRequest { verbose: false }).await.unwrap().into_inner();
        assert!(st.features.is_some_and(|f| f.supplemental_groups_policy));
        for (policy, want) in
            [(cri::SupplementalGroupsPolicy::Merge, "1000 1234 50000"), (cri::SupplementalGroupsPolicy::Strict, "1000 1234")]
        {
            let mut c = secured(
                container(&format!("container-with-SupplementalGroupsPolicy{}", policy as i32), &["sh", "-c", "id -G; sleep 1000"]),
                cri::LinuxContainerSecurityContext {
                    run_as_user: Some(cri::Int64Value { value: 1000 }),
                    supplemental_groups: vec![1234],
                    supplemental_groups_policy: policy as i32,
                    ..Default::default()
                },
            );
            c.log_path = format!("groups-{}.log", policy as i32);
            let id = started(&mut rt, &p, &config, c).await;
            let user = status(&mut rt, &id).await.user.and_then(|u| u.linux).unwrap();
            let groups: Vec<String> = user.supplemental_groups.iter().map(|g| g.to_string()).collect();
            assert_eq!((user.uid, user.gid, groups.join(" ")), (1000, 1000, want.to_owned()));
            let m = wait_log(&logs.join(format!("groups-{}.log", policy as i32)), |m| !m.is_empty()).await;
            assert_eq!(m, vec![("stdout".into(), format!("{want}\n"))]);
            assert_eq!(exec_ok(&mut rt, &id, &["id", "-G"]).await, format!("{want}\n"));
        }
        // RunAsGroup (through the log), and refused without a user.
        let mut c = secured(
            container("group", &["sh", "-c", "echo $(id -u):$(id -g)"]),
            sc(|s| {
                s.run_as_user = Some(cri::Int64Value { value: 1001 });
                s.run_as_group = Some(cri::Int64Value { value: 1002 });
            }),
        );
        c.log_path = "group.log".into();
        started(&mut rt, &p, &config, c).await;
        let m = wait_log(&logs.join("group.log"), |m| !m.is_empty()).await;
        assert_eq!(m, vec![("stdout".into(), "1001:1002\n".into())]);
        let c = top("group-alone", sc(|s| s.run_as_group = Some(cri::Int64Value { value: 1002 })));
        assert_eq!(create(&mut rt, &p, &config, c).await.unwrap_err().code(), tonic::Code::InvalidArgument);
        // ReadOnlyRootfs false and true (the working directory is the image's, /).
        for (n, ro, want) in [(0, false, ("stdout", "Found\n")), (1, true, ("stderr", "touch: test.go: Read-only file system\n"))] {
            let mut c = secured(
                container(&format!("rootfs-{n}"), &["sh", "-c", "touch test.go && [ -f test.go ] && echo 'Found'"]),
                cri::LinuxContainerSecurityContext { readonly_rootfs: ro, ..Default::default() },
            );
            c.log_path = format!("rootfs-{n}.log");
            started(&mut rt, &p, &config, c).await;
            let m = wait_log(&logs.join(format!("rootfs-{n}.log")), |m| !m.is_empty()).await;
            assert!(m.contains(&(want.0.to_owned(), want.1.to_owned())), "{m:?}");
        }
        // Capabilities: none of NET_ADMIN by default, added; NET_RAW dropped; ALL.
        let id = started(&mut rt, &p, &config, container("default-caps", &["top"])).await;
        exec_fails(&mut rt, &id, &["brctl", "addbr", "foobar"]).await;
        let c = top(
            "net-admin",
            sc(|s| s.capabilities = Some(cri::Capability { add_capabilities: vec!["NET_ADMIN".into()], ..Default::default() })),
        );
        let id = started(&mut rt, &p, &config, c).await;
        exec_ok(&mut rt, &id, &["brctl", "addbr", "foobar"]).await;
        let c = top(
            "no-net-raw",
            sc(|s| s.capabilities = Some(cri::Capability { drop_capabilities: vec!["NET_RAW".into()], ..Default::default() })),
        );
        let id = started(&mut rt, &p, &config, c).await;
        let err = exec_fails(&mut rt, &id, &["ping", "-c", "1", "127.0.0.1"]).await;
        assert!(err.contains("permission denied"), "{err}");
        let all = |add: bool| {
            let caps = if add {
                cri::Capability { add_capabilities: vec!["ALL".into()], ..Default::default() }
            } else {
                cri::Capability { drop_capabilities: vec!["ALL".into()], ..Default::default() }
            };
            cri::LinuxContainerSecurityContext { capabilities: Some(caps), ..Default::default() }
        };
        for add in [true, false] {
            let id = started(&mut rt, &p, &config, top(&format!("all-{add}"), all(add))).await;
            let status = exec_ok(&mut rt, &id, &["cat", "/proc/self/status"]).await;
            let empty = status.lines().any(|l| l.starts_with("CapBnd:") && l.ends_with("0000000000000000"));
            assert_eq!(empty, !add, "{status}");
        }
        // Masked and read-only paths (a file masked: executing or reading it is refused).
        let c = top("masked", sc(|s| s.masked_paths = vec!["/etc/secret".into()]));
        let id = started(&mut rt, &p, &config, c).await;
        assert_eq!(exec_ok(&mut rt, &id, &["cat", "/etc/secret"]).await, "", "masked by an empty file");
        let c = top("readonly-paths", sc(|s| s.readonly_paths = vec!["/tmp".into()]));
        let id = started(&mut rt, &p, &config, c).await;
        assert_eq!(exec_fails(&mut rt, &id, &["touch", "/tmp/test"]).await, "touch: /tmp/test: Read-only file system\n");

        // Seccomp: unconfined, a profile of the host's (its absolute path), the runtime's
        // default for an empty profile message, none when there is none; SYS_ADMIN's hostname,
        // blocked by a profile, which a privileged container does not get.
        let dir = d.dir.path().join("seccomp-tests");
        std::fs::create_dir_all(&dir).unwrap();
        let hostname = dir.join("block-host-name.json");
        std::fs::write(
            &hostname,
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        let chmod = dir.join("block-chmod.json");
        std::fs::write(
            &chmod,
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        use cri::security_profile::ProfileType;
        let profile = |t: ProfileType, path: &std::path::Path| {
            Some(cri::SecurityProfile { profile_type: t as i32, localhost_ref: path.display().to_string() })
        };
        let none = std::path::Path::new("");
        for (n, seccomp, want) in
            [(0, profile(ProfileType::Unconfined, none), "0"), (1, Some(cri::SecurityProfile::default()), "2"), (2, None, "0")]
        {
            let c = top(&format!("seccomp-{n}"), cri::LinuxContainerSecurityContext { seccomp, ..Default::default() });
            let id = started(&mut rt, &p, &config, c).await;
            assert!(exec_ok(&mut rt, &id, &["grep", "Seccomp:", "/proc/self/status"]).await.contains(want), "{n}");
        }
        let c = top(
            "seccomp-chmod",
            cri::LinuxContainerSecurityContext { seccomp: profile(ProfileType::Localhost, &chmod), ..Default::default() },
        );
        let id = started(&mut rt, &p, &config, c).await;
        assert!(exec_fails(&mut rt, &id, &["chmod", "400", "/"]).await.contains("Operation not permitted"));
        // SYS_ADMIN's hostname: allowed unconfined, refused by a profile that blocks it, and
        // allowed to a privileged container, which gets no profile.
        let sys_admin = |seccomp, privileged| cri::LinuxContainerSecurityContext {
            privileged,
            capabilities: (!privileged).then(|| cri::Capability { add_capabilities: vec!["SYS_ADMIN".into()], ..Default::default() }),
            seccomp,
            ..Default::default()
        };
        let c = secured(container("hostname-0", &["sleep", "60"]), sys_admin(profile(ProfileType::Unconfined, none), false));
        let id = started(&mut rt, &p, &config, c).await;
        exec_ok(&mut rt, &id, &["hostname", "ANewHostName"]).await;
        let c = secured(container("hostname-1", &["sleep", "60"]), sys_admin(profile(ProfileType::Localhost, &hostname), false));
        let id = started(&mut rt, &p, &config, c).await;
        exec_fails(&mut rt, &id, &["hostname", "ANewHostName"]).await;
        remove_pod(&mut rt, &p).await;
        let mut privileged = pod("seccomp-privileged-1");
        privileged.linux.as_mut().unwrap().security_context =
            Some(cri::LinuxSandboxSecurityContext { privileged: true, ..Default::default() });
        let pp = run_pod(&mut rt, &privileged).await;
        let c = secured(container("hostname-2", &["sleep", "60"]), sys_admin(profile(ProfileType::Localhost, &hostname), true));
        let id = started(&mut rt, &pp, &privileged, c).await;
        exec_ok(&mut rt, &id, &["hostname", "ANewHostName"]).await;
        // "Privileged is true": a bridge can be made.
        let id = started(&mut rt, &pp, &privileged, top("privileged", sc(|s| s.privileged = true))).await;
        exec_ok(&mut rt, &id, &["brctl", "addbr", "foobar"]).await;
        remove_pod(&mut rt, &pp).await;
    });
}

#[test]
fn namespace_options_as_the_suite_asks() {
    let (d, runtime, mut rt) = agent();
    runtime.block_on(async {
        let ns = |pid: cri::NamespaceMode, ipc: cri::NamespaceMode, network: cri::NamespaceMode| cri::NamespaceOption {
            pid: pid as i32,
            ipc: ipc as i32,
            network: network as i32,
            ..Default::default()
        };
        use cri::NamespaceMode::{Container, Node, Pod};
        let in_ns = |c: cri::ContainerConfig, o: &cri::NamespaceOption| {
            secured(c, cri::LinuxContainerSecurityContext { namespace_options: Some(o.clone()), ..Default::default() })
        };

        // HostPID: a host process is seen (the suite's `pidof nginx || true`, literally).
        let o = ns(Node, Pod, Pod);
        let config = with_namespaces(pod("NamespaceOption-PodSandbox-hostpid"), o.clone());
        let p = run_pod(&mut rt, &config).await;
        let mut marker = std::process::Command::new("sleep").arg("300").spawn().unwrap();
        let id = started(&mut rt, &p, &config, in_ns(container("container-with-HostPID-test", &["sh", "-c", "sleep 1000"]), &o)).await;
        let pids = exec_ok(&mut rt, &id, &["sh", "-c", "pidof sleep || true"]).await;
        assert!(pids.split_whitespace().any(|x| x == marker.id().to_string()), "{pids}");
        remove_pod(&mut rt, &p).await;
        let _ = marker.kill();
        let _ = marker.wait();

        // HostIpc true and false: a segment of the host's is seen only through the host's IPC.
        let out = std::process::Command::new("ipcmk").args(["-M", "1048576"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let segment = text.trim().rsplit(' ').next().unwrap().to_owned();
        for (host, o) in [(true, ns(Pod, Node, Pod)), (false, ns(Pod, Pod, Pod))] {
            let config = with_namespaces(pod(&format!("NamespaceOption-PodSandbox-ipc-{host}")), o.clone());
            let p = run_pod(&mut rt, &config).await;
            let id = started(&mut rt, &p, &config, in_ns(container("ipc", &["sh", "-c", "top"]), &o)).await;
            // (The suite's `ipcs -m`: this busybox has none; the same table.)
            let seen = exec_ok(&mut rt, &id, &["cat", "/proc/sysvipc/shm"]).await;
            let ids: Vec<&str> = seen.lines().skip(1).filter_map(|l| l.split_whitespace().nth(1)).collect();
            assert_eq!(ids.contains(&segment.as_str()), host, "{seen}");
            remove_pod(&mut rt, &p).await;
        }
        let _ = std::process::Command::new("ipcrm").args(["-m", &segment]).status();

        // PodPID: pid 1 is the pod's, not the workload; ContainerPID: the workload is pid 1.
        for (mode, workload_first) in [(Pod, false), (Container, true)] {
            let o = ns(mode, Pod, Pod);
            let config = with_namespaces(pod(&format!("NamespaceOption-PodSandbox-pid-{workload_first}")), o.clone());
            let p = run_pod(&mut rt, &config).await;
            let id = started(&mut rt, &p, &config, in_ns(container("pid", &["sleep", "1000"]), &o)).await;
            let one = exec_ok(&mut rt, &id, &["cat", "/proc/1/cmdline"]).await;
            assert_eq!(one.starts_with("sleep"), workload_first, "{one:?}");
            remove_pod(&mut rt, &p).await;
        }

        // HostNetwork true and false: a port the host listens on is seen only on the host's.
        let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = format!(":{}", listener.local_addr().unwrap().port());
        let logs = d.dir.path().join("netlogs");
        std::fs::create_dir_all(&logs).unwrap();
        for host in [true, false] {
            let o = ns(Pod, Pod, if host { Node } else { Pod });
            let mut config = with_namespaces(pod(&format!("NamespaceOption-PodSandbox-net-{host}")), o.clone());
            config.log_directory = logs.display().to_string();
            let p = run_pod(&mut rt, &config).await;
            let mut c = in_ns(container("net", &["sh", "-c", "netstat -ln"]), &o);
            c.log_path = format!("net-{host}.log");
            let id = started(&mut rt, &p, &config, c).await;
            wait_state(&mut rt, &id, cri::ContainerState::ContainerExited).await;
            let m = wait_log(&logs.join(format!("net-{host}.log")), |m| !m.is_empty()).await;
            assert_eq!(m.iter().any(|(_, l)| l.contains(&port)), host, "{m:?}");
            remove_pod(&mut rt, &p).await;
        }

        // DNS config and hostname ("runtime should support DNS config", "set hostname").
        let mut config = pod("create-PodSandbox-with-DNS-config");
        config.hostname = "test-hostname".into();
        config.dns_config = Some(cri::DnsConfig {
            servers: vec!["10.10.10.10".into()],
            searches: vec!["google.com".into()],
            options: vec!["ndots:8".into()],
        });
        let p = run_pod(&mut rt, &config).await;
        let id = started(&mut rt, &p, &config, container("container-for-DNS-config-test", &["top"])).await;
        let conf = exec_ok(&mut rt, &id, &["cat", "/etc/resolv.conf"]).await;
        assert!(["nameserver 10.10.10.10", "search google.com", "options ndots:8"].iter().all(|l| conf.contains(l)), "{conf}");
        assert_eq!(exec_ok(&mut rt, &id, &["hostname"]).await.trim(), "test-hostname");
        remove_pod(&mut rt, &p).await;
    });
}

fn run_ok(program: &str, args: &[&str]) {
    let status = std::process::Command::new(program).args(args).status().unwrap();
    assert!(status.success(), "{program} {args:?}");
}
