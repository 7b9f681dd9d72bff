//! Containers end to end: a real berthd, real shims, real runc and crun, driven through berthctl.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A daemon with the busybox test image imported as `busybox`.
fn daemon_with_busybox(args: &[&str]) -> Daemon {
    require_tool("runc", "runc");
    let d = Daemon::start_with(args);
    let spec = ImageSpec::new(vec![busybox_layer()]);
    let path = d.file("busybox.tar", &oci_archive(&[("docker.io/library/busybox:latest", &spec)]));
    d.ok(&["load", "-i", path.to_str().unwrap()]);
    d
}

fn code(o: &std::process::Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Bundles of live tasks on disk.
fn bundles(d: &Daemon) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d.state.join("tasks/default"))
        .map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// The cases every runtime must pass: output, exit codes, a detached container's life.
fn core_cases(runtime: &str) {
    if runtime == "crun" {
        require_tool("crun", "crun");
    }
    let d = daemon_with_busybox(&["--runtime", runtime]);
    // Attached: output and exit status, stdout and stderr kept apart.
    let out = d.ctl(&["run", "--rm", "busybox", "echo", "hello"]);
    assert_eq!((code(&out), stdout(&out).as_str()), (0, "hello\n"), "{}", stderr(&out));
    let out = d.ctl(&["run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(stderr(&out), "err\n");
    // --rm left nothing: no container, no task, only the image's snapshot.
    assert_eq!(d.ok(&["ps", "-aq"]).trim(), "");
    assert!(bundles(&d).is_empty(), "{:?}", bundles(&d));
    assert_eq!(d.snapshot_dirs("overlayfs").len(), 1);

    // Detached, as in docker: run -d, ps, logs, exec, stop, rm.
    let id = d.ok(&["run", "-d", "--name", "web", "busybox", "sh", "-c", "echo started; exec sleep 300"]).trim().to_owned();
    assert_eq!(id.len(), 64, "{id}");
    let ps = d.ok(&["ps"]);
    assert!(ps.contains("web") && ps.contains("Up"), "{ps}");
    wait_until("the container's first line is logged", Duration::from_secs(10), || d.ok(&["logs", "web"]) == "started\n");
    let ls = d.ok(&["exec", "web", "ls", "/"]);
    assert!(ls.lines().any(|l| l == "bin") && ls.lines().any(|l| l == "etc"), "{ls}");
    assert_eq!(code(&d.ctl(&["exec", "web", "sh", "-c", "exit 3"])), 3);
    // Names, full ids and id prefixes all work.
    assert!(d.ok(&["inspect", &id[..8]]).contains("\"Name\": \"/web\""));
    // sleep ignores SIGTERM as pid 1: stop falls back to SIGKILL after the timeout.
    d.ok(&["stop", "-t", "1", "web"]);
    let ps = d.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (137)"), "{ps}");
    assert_eq!(d.ok(&["ps", "-q"]).trim(), "", "a stopped container is not listed without -a");
    // A stopped container starts again.
    d.ok(&["start", "web"]);
    wait_until("restarted", Duration::from_secs(10), || d.ok(&["ps", "-q"]).trim() == &id[..12]);
    d.ok(&["rm", "-f", "web"]);
    assert_eq!(d.ok(&["ps", "-aq"]).trim(), "");
    wait_until("the task is gone", Duration::from_secs(10), || bundles(&d).is_empty() && d.shim_pids().is_empty());
    assert_eq!(d.snapshot_dirs("overlayfs").len(), 1, "the writable layer is discarded");
}

#[test]
fn runc_runs_attached_and_detached_containers_like_docker() {
    core_cases("runc");
}

#[test]
fn crun_runs_attached_and_detached_containers_like_docker() {
    core_cases("crun");
}

#[test]
fn fifty_containers_share_the_image_layers_and_each_writes_only_its_own() {
    let d = daemon_with_busybox(&[]);
    let image_dirs = d.snapshot_dirs("overlayfs");
    assert_eq!(image_dirs.len(), 1);
    let names: Vec<String> = (0..50).map(|i| format!("c{i}")).collect();
    std::thread::scope(|s| {
        for chunk in names.chunks(10) {
            let d = &d;
            s.spawn(move || {
                for n in chunk {
                    d.ok(&["run", "-d", "--name", n, "busybox", "sh", "-c", &format!("echo {n} > /tmp/{n}; exec sleep 300")]);
                }
            });
        }
    });
    // All fifty run at once.
    let running: Vec<String> = d.ok(&["ps", "-q"]).lines().map(str::to_owned).collect();
    assert_eq!(running.len(), 50, "{running:?}");
    // The image's layer is on disk once; each container has one writable layer of its own.
    let dirs = d.snapshot_dirs("overlayfs");
    assert_eq!(dirs.len(), 51, "{dirs:?}");
    assert!(dirs.contains(&image_dirs[0]));
    let committed = d.ok(&["snapshot", "ls"]).lines().filter(|l| l.contains("committed")).count();
    assert_eq!(committed, 1);
    // A file written in one container is not seen in another.
    for (a, b) in [(0, 1), (17, 42), (49, 0)] {
        let (na, nb) = (&names[a], &names[b]);
        wait_until("the file is written", Duration::from_secs(10), || d.ctl(&["exec", na, "cat", &format!("/tmp/{na}")]).status.success());
        assert_eq!(d.ok(&["exec", na, "cat", &format!("/tmp/{na}")]), format!("{na}\n"));
        let other = d.ctl(&["exec", nb, "cat", &format!("/tmp/{na}")]);
        assert_eq!(code(&other), 1, "{nb} sees {na}'s file");
    }
    // Each is on the default network, in a namespace of its own.
    let ids: Vec<String> = d.ok(&["ps", "-q", "--no-trunc"]).lines().map(str::to_owned).collect();
    let records = |d: &Daemon| {
        std::fs::read_dir(d.state.join("netns/default"))
            .map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(records(&d).iter().filter(|n| n.ends_with(".json")).count(), 50);
    let mut args = vec!["rm", "-f"];
    args.extend(names.iter().map(String::as_str));
    d.ok(&args);
    assert_eq!(d.ok(&["ps", "-aq"]).trim(), "");
    // The image is intact and no writable layer is left behind.
    assert_eq!(d.snapshot_dirs("overlayfs"), image_dirs);
    wait_until("all shims exit", Duration::from_secs(20), || d.shim_pids().is_empty() && bundles(&d).is_empty());
    // Nor any network: no namespace or record, no address held, no NAT rule, under their ids
    // (those that came from the pool went back to it, under the pool's own).
    wait_until("the networks are released", Duration::from_secs(30), || records(&d).is_empty());
    let allocations: String = std::fs::read_dir("/run/berth/ipam/bridge")
        .map(|r| r.flatten().map(|e| std::fs::read_to_string(e.path()).unwrap_or_default()).collect())
        .unwrap_or_default();
    let nat = String::from_utf8_lossy(&std::process::Command::new("iptables-save").output().unwrap().stdout).into_owned();
    for id in &ids {
        assert!(!allocations.contains(id.as_str()) && !nat.contains(id.as_str()), "{id} left an address or a rule");
    }
    assert_eq!(d.ok(&["run", "--rm", "busybox", "echo", "still here"]), "still here\n");
}

#[test]
fn removing_a_container_discards_its_writable_layer_and_commit_keeps_it() {
    let d = daemon_with_busybox(&[]);
    d.ok(&["run", "-d", "--name", "w", "busybox", "sleep", "300"]);
    d.ok(&["exec", "w", "sh", "-c", "echo data > /tmp/f; rm /etc/group"]);
    let diff = d.ok(&["diff", "w"]);
    let lines: HashSet<&str> = diff.lines().collect();
    for want in ["C /tmp", "A /tmp/f", "C /etc", "D /etc/group"] {
        assert!(lines.contains(want), "{want} missing from:\n{diff}");
    }
    assert!(!diff.contains("/bin/busybox"), "{diff}");
    // The runtime's mount points are not the user's changes.
    for hidden in ["A /proc", "A /dev", "A /sys", "A /etc/hosts", "A /etc/resolv.conf", "A /etc/hostname"] {
        assert!(!lines.contains(hidden), "{hidden} listed:\n{diff}");
    }
    let id = d.ok(&["commit", "-m", "add f", "w", "withfile:v1"]).trim().to_owned();
    assert!(id.starts_with("sha256:"), "{id}");
    d.ok(&["rm", "-f", "w"]);
    // A new container from the same image does not have the file.
    let out = d.ctl(&["run", "--rm", "busybox", "cat", "/tmp/f"]);
    assert_eq!(code(&out), 1);
    assert!(d.ok(&["run", "--rm", "busybox", "cat", "/etc/group"]).contains("root"));
    // The committed image has the change: the file, and the deletion.
    assert_eq!(d.ok(&["run", "--rm", "withfile:v1", "cat", "/tmp/f"]), "data\n");
    assert_eq!(code(&d.ctl(&["run", "--rm", "withfile:v1", "cat", "/etc/group"])), 1);
    let inspect = d.inspect("default", "withfile:v1");
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 2, "{inspect}");
    assert!(inspect.to_string().contains("add f"), "the history entry carries the message: {inspect}");
}

#[test]
fn containers_survive_an_agent_crash_and_exits_while_it_is_down_are_recorded() {
    let mut d = daemon_with_busybox(&[]);
    d.ok(&["run", "-d", "--name", "running", "busybox", "sleep", "300"]);
    d.ok(&["run", "-d", "--name", "exits-later", "busybox", "sh", "-c", "sleep 2; echo bye; exit 5"]);
    d.ok(&["run", "-d", "--name", "exited", "busybox", "sh", "-c", "exit 3"]);
    d.ok(&["create", "--name", "created", "busybox", "echo", "made"]);
    wait_until("exited has exited", Duration::from_secs(10), || d.ok(&["ps", "-a"]).contains("Exited (3)"));
    let shims = d.shim_pids();
    assert_eq!(shims.len(), 2, "one shim per live task");
    d.kill9();
    // The containers keep running without the agent; one exits meanwhile.
    std::thread::sleep(Duration::from_secs(3));
    for pid in &shims {
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists(), "shim {pid} died with the agent");
    }
    d.spawn();
    let ps = d.ok(&["ps", "-a"]);
    let line = |name: &str| ps.lines().find(|l| l.ends_with(name)).unwrap_or_default().to_owned();
    assert!(line("running").contains("Up"), "{ps}");
    assert!(line("exits-later").contains("Exited (5)"), "{ps}");
    assert!(line("exited").contains("Exited (3)"), "{ps}");
    assert!(line("created").contains("Created"), "{ps}");
    assert_eq!(d.ok(&["wait", "exits-later"]).trim(), "5");
    assert_eq!(d.ok(&["logs", "exits-later"]), "bye\n");
    // The running one is still fully manageable.
    assert_eq!(d.ok(&["exec", "running", "echo", "hi"]), "hi\n");
    d.ok(&["stop", "-t", "1", "running"]);
    assert!(d.ok(&["ps", "-a"]).lines().any(|l| l.ends_with("running") && l.contains("Exited (137)")));
    assert_eq!(d.ok(&["start", "-a", "created"]), "made\n");
    wait_until("every shim is gone", Duration::from_secs(10), || d.shim_pids().is_empty());
}

#[test]
fn bad_input_gets_a_clear_error() {
    let d = daemon_with_busybox(&[]);
    d.ok(&["run", "-d", "--name", "web", "busybox", "sleep", "300"]);
    d.ok(&["create", "--name", "idle", "busybox", "true"]);
    let cases: &[(&[&str], &str)] = &[
        (&["run", "--rm", "--pull", "never", "nosuchimage", "true"], "is not in the store, and --pull never"),
        (&["start", "nosuchcontainer"], "container \"nosuchcontainer\" not found"),
        (&["run", "--name", "web", "busybox", "true"], "the container name \"web\" is already in use"),
        (&["start", "web"], "already running"),
        (&["exec", "idle", "true"], "is not running"),
        (&["kill", "-s", "NOPE", "web"], "invalid signal"),
        (&["run", "--rm", "-v", "/no/such/dir:/x", "busybox", "true"], "/no/such/dir"),
        (&["run", "--rm", "-u", "nosuchuser", "busybox", "true"], "user \"nosuchuser\" not found"),
        (&["run", "--rm", "busybox", "nosuchcommand"], "executable file not found"),
        (&["run", "--rm", "--runtime", "nosuchruntime", "busybox", "true"], "unknown runtime"),
        (&["rm", "web"], "is running"),
    ];
    for (args, want) in cases {
        let out = d.ctl(args);
        // run, create and exec end as docker's: 127 for a command not found, 125 for the rest.
        let want_code = match args[0] {
            _ if args.contains(&"nosuchcommand") => 127,
            "run" | "create" | "exec" => 125,
            _ => 1,
        };
        assert_eq!(code(&out), want_code, "{args:?} should fail: {}", stdout(&out));
        let err = stderr(&out);
        assert!(err.starts_with("berthctl: ") && err.contains(want), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
    }
    // An image that is not here is pulled; a registry that cannot be reached
    // is named as what is unavailable (not the agent).
    let out = d.ctl(&["run", "--rm", "127.0.0.1:1/x/nothing:1", "true"]);
    assert_eq!(code(&out), 125);
    let err = stderr(&out);
    assert!(err.contains("pulling it") && err.contains("127.0.0.1:1") && !err.contains("berthd is unavailable"), "{err}");
    // The failed runs left no container behind; the others are untouched.
    let all = d.ok(&["ps", "-a"]);
    assert_eq!(all.lines().count(), 3, "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_carry_the_right_status() {
    use berth_api::v1::{self, containers_client::ContainersClient, tasks_client::TasksClient};
    use tonic::Code;
    let d = tokio::task::spawn_blocking(|| daemon_with_busybox(&[])).await.unwrap();
    let ch = d.channel().await;
    let mut c = ContainersClient::new(ch.clone());
    let mut t = TasksClient::new(ch);
    let create = |image: &str, name: &str| v1::CreateContainerRequest {
        image: image.into(),
        name: name.into(),
        config: Some(v1::ContainerConfig { command: vec!["sleep".into(), "300".into()], command_set: true, ..Default::default() }),
        ..Default::default()
    };
    assert_eq!(c.create(create("nosuch", "")).await.unwrap_err().code(), Code::NotFound);
    let web = c.create(create("busybox", "web")).await.unwrap().into_inner().container.unwrap();
    assert_eq!(c.create(create("busybox", "web")).await.unwrap_err().code(), Code::AlreadyExists);
    assert_eq!(c.create(create("busybox", "bad name")).await.unwrap_err().code(), Code::InvalidArgument);
    let mut bad_user = create("busybox", "");
    bad_user.config.as_mut().unwrap().user = "ghost".into();
    assert_eq!(c.create(bad_user).await.unwrap_err().code(), Code::InvalidArgument);
    let mut bad_mount = create("busybox", "");
    bad_mount.config.as_mut().unwrap().mounts =
        vec![v1::ContainerMount { r#type: "bind".into(), source: "/no/such".into(), destination: "/x".into(), ..Default::default() }];
    assert_eq!(c.create(bad_mount).await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(c.get(v1::GetContainerRequest { id: "nosuch".into() }).await.unwrap_err().code(), Code::NotFound);
    let exec = v1::ExecRequest { container_id: web.id.clone(), args: vec!["true".into()], ..Default::default() };
    assert_eq!(t.exec(exec.clone()).await.unwrap_err().code(), Code::FailedPrecondition);
    let start = v1::StartTaskRequest { container_id: web.id.clone(), exec_id: String::new() };
    t.start(start.clone()).await.unwrap();
    assert_eq!(t.start(start).await.unwrap_err().code(), Code::FailedPrecondition);
    let kill = v1::KillTaskRequest { container_id: web.id.clone(), signal: "SIGNOPE".into(), ..Default::default() };
    assert_eq!(t.kill(kill).await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(
        c.delete(v1::DeleteContainerRequest { id: web.id.clone(), force: false, ..Default::default() }).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    c.delete(v1::DeleteContainerRequest { id: web.id.clone(), force: true, ..Default::default() }).await.unwrap();
    tokio::task::spawn_blocking(move || drop(d)).await.unwrap();
}

#[test]
fn isolation_resources_and_mounts_reach_the_container() {
    let d = daemon_with_busybox(&[]);
    // Network none: only lo. The default network: lo and eth0. Host: the host's interfaces.
    let own = d.ok(&["run", "--rm", "--net", "none", "busybox", "cat", "/proc/net/dev"]);
    let ifaces = |s: &str| s.lines().skip(2).filter_map(|l| l.split(':').next()).map(|n| n.trim().to_owned()).collect::<Vec<_>>();
    assert_eq!(ifaces(&own), vec!["lo"], "{own}");
    let bridged = d.ok(&["run", "--rm", "busybox", "cat", "/proc/net/dev"]);
    assert_eq!(ifaces(&bridged), vec!["lo", "eth0"], "{bridged}");
    let host = d.ok(&["run", "--rm", "--net", "host", "busybox", "cat", "/proc/net/dev"]);
    // Veths of other tests' containers come and go: the host's lasting interfaces are there.
    let mine = ifaces(&std::fs::read_to_string("/proc/net/dev").unwrap());
    let theirs = ifaces(&host);
    for i in mine.iter().filter(|i| !i.starts_with("veth") && !i.starts_with("berth")) {
        assert!(theirs.contains(i), "{i} missing from {theirs:?}");
    }
    // Bind mounts, read-only and not; tmpfs; a read-only root.
    let dir = d.dir.path().join("shared");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("in"), "from host\n").unwrap();
    let v = format!("{}:/data", dir.display());
    assert_eq!(d.ok(&["run", "--rm", "-v", &v, "busybox", "sh", "-c", "cat /data/in; echo back > /data/out"]), "from host\n");
    assert_eq!(std::fs::read_to_string(dir.join("out")).unwrap(), "back\n");
    let ro = format!("{}:/data:ro", dir.display());
    assert_eq!(code(&d.ctl(&["run", "--rm", "-v", &ro, "busybox", "touch", "/data/x"])), 1);
    let mounts = d.ok(&["run", "--rm", "--tmpfs", "/scratch", "busybox", "cat", "/proc/mounts"]);
    assert!(mounts.lines().any(|l| l.starts_with("tmpfs /scratch tmpfs")), "{mounts}");
    assert_eq!(code(&d.ctl(&["run", "--rm", "--read-only", "busybox", "touch", "/file"])), 1);
    assert_eq!(code(&d.ctl(&["run", "--rm", "busybox", "touch", "/file"])), 0);
    // User, environment, working directory, host name.
    assert_eq!(d.ok(&["run", "--rm", "-u", "nobody", "busybox", "id", "-u"]), "65534\n");
    assert_eq!(d.ok(&["run", "--rm", "-u", "123:456", "busybox", "id", "-g"]), "456\n");
    let env = d.ok(&[
        "run",
        "--rm",
        "-e",
        "GREETING=hi there",
        "-w",
        "/tmp",
        "-h",
        "box",
        "busybox",
        "sh",
        "-c",
        "echo $GREETING; pwd; hostname",
    ]);
    assert_eq!(env, "hi there\n/tmp\nbox\n");
    // Limits land in the container's cgroups.
    let id = d.ok(&["run", "-d", "--memory", "64m", "--pids-limit", "20", "--cpus", "0.5", "busybox", "sleep", "300"]).trim().to_owned();
    let stats = d.ok(&["--format", "json", "stats", "--no-stream", &id]);
    let stats: serde_json::Value = serde_json::from_str(stats.trim()).unwrap();
    assert_eq!(stats["MemoryLimitBytes"], 64 << 20, "{stats}");
    assert_eq!(stats["PidsLimit"], 20, "{stats}");
    assert!(stats["PidsCurrent"].as_u64().unwrap() >= 1, "{stats}");
    assert!(stats["MemUsage"].as_str().unwrap().ends_with("/ 67.109MB"), "{stats}");
    // Through a template, and no terminal codes in a pipe.
    let t = d.ok(&["stats", "--no-stream", "--format", "{{.Name}}: {{.PIDs}}", &id]);
    assert!(t.ends_with(" / 20\n") && !t.contains('\x1b'), "{t:?}");
    let spec: serde_json::Value = serde_json::from_str(&d.ok(&["inspect", &id])).unwrap();
    assert_eq!(spec[0]["Spec"]["linux"]["resources"]["cpu"]["quota"], 50_000, "{}", spec[0]["Spec"]["linux"]["resources"]);
    d.ok(&["rm", "-f", &id]);
    // Capabilities: dropping one is enforced (chown needs CAP_CHOWN).
    assert_eq!(code(&d.ctl(&["run", "--rm", "--cap-drop", "CHOWN", "busybox", "sh", "-c", "touch /f; chown 1 /f"])), 1);
    assert_eq!(code(&d.ctl(&["run", "--rm", "busybox", "sh", "-c", "touch /f; chown 1 /f"])), 0);
}

#[test]
fn logs_follow_tail_and_timestamps() {
    let d = daemon_with_busybox(&[]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "talker",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3; do echo out$i; echo err$i >&2; done; sleep 1; echo last",
    ]);
    let follow = std::process::Command::new(env!("CARGO_BIN_EXE_berthctl"))
        .args(["logs", "-f", "talker"])
        .env("BERTH_ADDRESS", &d.socket)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // --follow ends by itself when the container exits.
    let out = wait_output(follow, Duration::from_secs(20));
    assert!(out.status.success());
    assert_eq!(stdout(&out), "out1\nout2\nout3\nlast\n");
    assert_eq!(stderr(&out), "err1\nerr2\nerr3\n");
    let tail = d.ctl(&["logs", "--tail", "2", "talker"]);
    assert_eq!(stdout(&tail), "last\n");
    assert_eq!(stderr(&tail), "err3\n");
    let ts = d.ok(&["logs", "-t", "--tail", "1", "talker"]);
    assert!(ts.starts_with("20") && ts.contains("Z last"), "{ts}");
    assert_eq!(d.ok(&["logs", "--since", "2000-01-01T00:00:00Z", "--tail", "1", "talker"]), "last\n");
    assert_eq!(d.ok(&["logs", "--since", "2100-01-01", "talker"]), "");
    // The file is the CRI format.
    let id = d.ok(&["ps", "-aq", "--no-trunc"]).trim().to_owned();
    let file = std::fs::read_to_string(d.root.join("containers/default").join(&id).join("container.log")).unwrap();
    let first = file.lines().next().unwrap();
    let parts: Vec<&str> = first.splitn(4, ' ').collect();
    assert!(parts[0].ends_with('Z') && parts[0].contains('T'), "{first}");
    assert!(matches!(parts[1], "stdout" | "stderr") && parts[2] == "F", "{first}");
}

#[test]
fn stdin_terminal_and_descriptors() {
    let d = daemon_with_busybox(&[]);
    // -i: standard input reaches the container and its end closes it.
    let out = d.ctl_stdin(&["run", "--rm", "-i", "busybox", "sh", "-c", "wc -c"], Some(b"twelve bytes"));
    assert_eq!(stdout(&out).trim(), "12", "{}", stderr(&out));
    // -t: the process gets a terminal.
    let out = d.ctl(&["run", "--rm", "-t", "busybox", "sh", "-c", "test -t 1 && echo tty"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "tty");
    // exec -i with input.
    d.ok(&["run", "-d", "--name", "box", "busybox", "sleep", "300"]);
    let out = d.ctl_stdin(&["exec", "-i", "box", "cat"], Some(b"piped\n"));
    assert_eq!(stdout(&out), "piped\n");
    // No descriptor of the agent or the shim reaches the container: only 0, 1, 2 (and ls's own).
    let fds = d.ok(&["run", "--rm", "busybox", "ls", "/proc/self/fd"]);
    let fds: Vec<&str> = fds.lines().collect();
    assert!(fds.len() <= 4 && fds[..3] == ["0", "1", "2"], "{fds:?}");
    // The shim's socket is a path socket, mode 0600.
    let id = d.ok(&["ps", "-q", "--no-trunc"]).trim().to_owned();
    let sock = d.state.join("tasks/default").join(&id).join("shim.sock");
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let m = std::fs::symlink_metadata(&sock).unwrap();
    assert!(m.file_type().is_socket());
    assert_eq!(m.permissions().mode() & 0o777, 0o600);
    let abstract_socks = std::fs::read_to_string("/proc/net/unix").unwrap();
    assert!(!abstract_socks.lines().any(|l| l.contains(&format!("@{}", &id[..12]))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_report_container_and_task_changes() {
    use berth_api::v1::{self, events_client::EventsClient};
    use tokio_stream::StreamExt;
    let d = tokio::task::spawn_blocking(|| daemon_with_busybox(&[])).await.unwrap();
    let mut ev = EventsClient::new(d.channel().await);
    let mut all = ev.subscribe(v1::SubscribeRequest { filters: vec![], ..Default::default() }).await.unwrap().into_inner();
    let mut exits =
        ev.subscribe(v1::SubscribeRequest { filters: vec!["topic==/tasks/exit".into()], ..Default::default() }).await.unwrap().into_inner();
    let d = tokio::task::spawn_blocking(move || {
        let out = d.ctl(&["run", "--name", "ev", "busybox", "sh", "-c", "exit 4"]);
        assert_eq!(out.status.code(), Some(4));
        d.ok(&["rm", "ev"]);
        d.ok(&["tag", "busybox", "copy:v1"]);
        d.ok(&["rmi", "copy:v1"]);
        d
    })
    .await
    .unwrap();
    let mut topics = Vec::new();
    // The task is deleted in the background after its exit: its event may come after the container's.
    let done = |t: &Vec<String>| ["/tasks/delete", "/images/delete"].iter().all(|w| t.iter().any(|x| x == w));
    while !done(&topics) {
        let e = tokio::time::timeout(Duration::from_secs(10), all.next()).await.expect("events stalled").unwrap().unwrap();
        topics.push(e.topic);
    }
    for want in
        ["/containers/create", "/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete", "/containers/delete", "/images/create"]
    {
        assert!(topics.iter().any(|t| t == want), "{want} missing from {topics:?}");
    }
    let pos = |t: &str| topics.iter().position(|x| x == t).unwrap();
    assert!(pos("/containers/create") < pos("/tasks/start") && pos("/tasks/start") < pos("/tasks/exit"));
    let exit = tokio::time::timeout(Duration::from_secs(10), exits.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(exit.attributes.get("exit_code").map(String::as_str), Some("4"));
    assert_eq!(exit.namespace, "default");
    tokio::task::spawn_blocking(move || drop(d)).await.unwrap();
}

#[test]
fn pause_top_and_auto_remove() {
    let d = daemon_with_busybox(&[]);
    d.ok(&["run", "-d", "--name", "p", "busybox", "sleep", "300"]);
    let top = d.ok(&["top", "p"]);
    assert!(top.contains("sleep 300"), "{top}");
    d.ok(&["pause", "p"]);
    assert!(d.ok(&["ps"]).contains("(Paused)"));
    assert_eq!(code(&d.ctl(&["pause", "p"])), 1, "already paused");
    d.ok(&["unpause", "p"]);
    assert!(!d.ok(&["ps"]).contains("(Paused)"));
    d.ok(&["rm", "-f", "p"]);
    // -d --rm: the agent removes the container when it exits.
    d.ok(&["run", "-d", "--rm", "--name", "gone", "busybox", "true"]);
    wait_until("the container removes itself", Duration::from_secs(10), || !d.ok(&["ps", "-a"]).contains("gone"));
}

#[test]
fn oom_kills_are_reported_and_privileged_gets_more_capabilities() {
    let d = daemon_with_busybox(&[]);
    // A process that outgrows --memory is killed by the kernel: 137 and OOMKilled.
    let out = d.ctl(&[
        "run",
        "--name",
        "oom",
        "--memory",
        "16m",
        "busybox",
        "busybox",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=64M",
        "count=1",
    ]);
    assert_eq!(code(&out), 137, "{}", stderr(&out));
    let state: serde_json::Value = serde_json::from_str(&d.ok(&["inspect", "oom"])).unwrap();
    assert_eq!(state[0]["State"]["OOMKilled"], true, "{}", state[0]["State"]);
    assert_eq!(state[0]["State"]["ExitCode"], 137);
    // docker's default capability set, and more with --privileged.
    let caps = |args: &[&str]| {
        let mut a = vec!["run", "--rm"];
        a.extend_from_slice(args);
        a.extend(["busybox", "busybox", "grep", "CapEff", "/proc/self/status"]);
        u64::from_str_radix(d.ok(&a).split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    assert_eq!(caps(&[]), 0xa80425fb);
    let privileged = caps(&["--privileged"]);
    assert!(privileged & 0xa80425fb == 0xa80425fb && privileged.count_ones() > 30, "{privileged:x}");
    assert_eq!(caps(&["--cap-add", "NET_ADMIN"]), 0xa80425fb | (1 << 12));
}

#[test]
fn detaching_keeps_stdin_and_racing_starts_make_one_task() {
    let d = daemon_with_busybox(&[]);
    // An attach that goes away does not close the container's stdin.
    d.ok(&["run", "-d", "-i", "--name", "cat", "busybox", "cat"]);
    let mut attach = std::process::Command::new(env!("CARGO_BIN_EXE_berthctl"))
        .args(["attach", "--no-stdin", "cat"])
        .env("BERTH_ADDRESS", &d.socket)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    attach.kill().unwrap();
    attach.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.ok(&["ps"]).contains("cat"), "the container must still run: {}", d.ok(&["ps", "-a"]));
    // Two starts at once: one task, one shim, and the loser is told why.
    d.ok(&["create", "--name", "once", "busybox", "sleep", "300"]);
    let outs: Vec<std::process::Output> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2).map(|_| s.spawn(|| d.ctl(&["start", "once"]))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = outs.iter().filter(|o| o.status.success()).count();
    assert!(ok >= 1, "{:?}", outs.iter().map(stderr).collect::<Vec<_>>());
    for o in outs.iter().filter(|o| !o.status.success()) {
        assert!(stderr(o).contains("already running"), "{}", stderr(o));
    }
    assert_eq!(d.shim_pids().len(), 2, "one shim per live task");
    // Execs come and go while another exec writes without pause: the shim stays.
    d.ok(&["exec", "-d", "once", "sh", "-c", "while :; do echo x; done"]);
    for _ in 0..15 {
        d.ok(&["exec", "once", "true"]);
    }
    assert!(d.ok(&["ps"]).contains("once"));
    assert_eq!(d.ok(&["exec", "once", "echo", "alive"]), "alive\n");
}

#[test]
fn user_lookup_never_follows_a_symlink_out_of_the_image() {
    require_tool("runc", "runc");
    let d = Daemon::start();
    // The image's /etc is a link to the host's /etc.
    let spec = ImageSpec::new(vec![busybox_layer(), layer(&[Entry::Symlink("etc".into(), "/etc".into())])]);
    let path = d.file("linked.tar", &oci_archive(&[("docker.io/library/linked:latest", &spec)]));
    d.ok(&["load", "-i", path.to_str().unwrap()]);
    // "daemon" is in the host's /etc/passwd, not in the image's.
    assert!(std::fs::read_to_string("/etc/passwd").unwrap().lines().any(|l| l.starts_with("daemon:")));
    let out = d.ctl(&["create", "-u", "daemon", "linked", "true"]);
    assert_eq!(code(&out), 125);
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    // Numeric users need no lookup.
    d.ok(&["create", "-u", "1:1", "linked", "true"]);
}

#[test]
fn user_lookup_sees_the_files_a_container_sees_through_opaque_directories_and_whiteouts() {
    require_tool("runc", "runc");
    let with_alice = layer(&[
        Entry::Dir("etc".into(), 0o755),
        Entry::File("etc/passwd".into(), b"root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/:/bin/sh\n".to_vec(), 0o644),
        Entry::File("etc/group".into(), b"root:x:0:\nstaff:x:50:alice\n".to_vec(), 0o644),
    ]);
    // The top layer replaces /etc as a whole: its own passwd (no alice), no group file.
    let opaque = layer(&[
        Entry::Dir("etc".into(), 0o755),
        Entry::File("etc/passwd".into(), b"root:x:0:0:root:/root:/bin/sh\nbob:x:1001:1001::/:/bin/sh\n".to_vec(), 0o644),
        Entry::File("etc/.wh..wh..opq".into(), Vec::new(), 0o644),
    ]);
    // Opaque too, with no passwd at all.
    let bare = layer(&[
        Entry::Dir("etc".into(), 0o755),
        Entry::File("etc/.wh..wh..opq".into(), Vec::new(), 0o644),
        Entry::File("etc/hostname".into(), b"bare\n".to_vec(), 0o644),
    ]);
    let whiteout = layer(&[Entry::File("etc/.wh.passwd".into(), Vec::new(), 0o644)]);
    for snapshotter in ["overlayfs", "native"] {
        let d = Daemon::start_with(&["--snapshotter", snapshotter]);
        let images = [
            ("docker.io/library/opaque:latest", ImageSpec::new(vec![busybox_layer(), with_alice.clone(), opaque.clone()])),
            ("docker.io/library/bare:latest", ImageSpec::new(vec![busybox_layer(), with_alice.clone(), bare.clone()])),
            ("docker.io/library/whiteout:latest", ImageSpec::new(vec![busybox_layer(), with_alice.clone(), whiteout.clone()])),
        ];
        let refs: Vec<(&str, &ImageSpec)> = images.iter().map(|(n, s)| (*n, s)).collect();
        let path = d.file("images.tar", &oci_archive(&refs));
        d.ok(&["load", "-i", path.to_str().unwrap()]);
        let refused = |args: &[&str], why: &str| {
            let out = d.ctl(args);
            // create fails as docker's does: 125.
            assert_eq!(code(&out), 125, "{snapshotter}: {args:?} was accepted");
            assert!(stderr(&out).contains(why), "{snapshotter}: {args:?}: {}", stderr(&out));
        };

        // The container does not see the lower /etc: neither may the lookup.
        assert!(!d.ok(&["run", "--rm", "opaque", "cat", "/etc/passwd"]).contains("alice"), "{snapshotter}");
        refused(&["create", "-u", "alice", "opaque", "true"], "user \"alice\" not found in the image's /etc/passwd");
        refused(&["create", "-u", "bob:staff", "opaque", "true"], "the image has no /etc/group");
        assert_eq!(d.ok(&["run", "--rm", "-u", "bob", "opaque", "id", "-u"]), "1001\n", "{snapshotter}");
        assert_eq!(code(&d.ctl(&["run", "--rm", "bare", "cat", "/etc/passwd"])), 1, "{snapshotter}");
        refused(&["create", "-u", "alice", "bare", "true"], "the image has no /etc/passwd");

        assert_eq!(code(&d.ctl(&["run", "--rm", "whiteout", "cat", "/etc/passwd"])), 1, "{snapshotter}");
        refused(&["create", "-u", "alice", "whiteout", "true"], "the image has no /etc/passwd");
        // The group file below the whiteout still counts.
        assert_eq!(d.ok(&["run", "--rm", "-u", "0:staff", "whiteout", "id", "-g"]), "50\n", "{snapshotter}");
    }
}

/// Whether the container's cgroup is frozen (cgroup v1 freezer, or v2).
fn frozen(cgroup: &str) -> bool {
    let v1 = std::fs::read_to_string(format!("/sys/fs/cgroup/freezer{cgroup}/freezer.state")).unwrap_or_default();
    let v2 = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .any(|base| std::fs::read_to_string(format!("{base}{cgroup}/cgroup.freeze")).is_ok_and(|s| s.trim() == "1"));
    v1.trim() == "FROZEN" || v2
}

#[test]
fn an_agent_killed_while_a_commit_froze_a_container_thaws_it_when_it_comes_back() {
    let mut d = daemon_with_busybox(&[]);
    // A writable layer big enough that reading it out takes a while (40 MB:
    // the debug build hashes it slowly).
    d.ok(&[
        "run",
        "-d",
        "--name",
        "big",
        "busybox",
        "sh",
        "-c",
        "dd if=/dev/zero of=/big bs=1M count=40 2>/dev/null; echo ready; exec sleep 300",
    ]);
    wait_until("the container wrote its layer", Duration::from_secs(60), || d.ok(&["logs", "big"]) == "ready\n");
    let spec: serde_json::Value = serde_json::from_str(&d.ok(&["inspect", "big"])).unwrap();
    let cgroup = spec[0]["Spec"]["linux"]["cgroupsPath"].as_str().unwrap().to_owned();
    assert!(!frozen(&cgroup));
    // Commit in the background; kill the agent while the container is frozen.
    let ctl = std::process::Command::new(env!("CARGO_BIN_EXE_berthctl"))
        .args(["--address", d.socket.to_str().unwrap(), "commit", "big", "snap:1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the commit froze the container", Duration::from_secs(30), || frozen(&cgroup));
    d.kill9();
    let _ = wait_output(ctl, Duration::from_secs(10));
    assert!(frozen(&cgroup), "the container thawed without the agent");
    // The agent comes back, finds the task and thaws it: the container is usable.
    d.spawn();
    wait_until("the container is thawed", Duration::from_secs(10), || !frozen(&cgroup));
    assert!(d.ok(&["ps"]).lines().any(|l| l.ends_with("big") && l.contains("Up") && !l.contains("Paused")), "{}", d.ok(&["ps"]));
    assert_eq!(d.ok(&["exec", "big", "echo", "hi"]), "hi\n");
    // Nothing half-written is left in the store's scratch space; a commit works again.
    assert_eq!(std::fs::read_dir(d.root.join("content/ingest")).unwrap().count(), 0);
    d.ok(&["commit", "big", "snap:2"]);
    assert!(!frozen(&cgroup));
    assert_eq!(d.ok(&["run", "--rm", "snap:2", "/bin/busybox", "stat", "-c", "%s", "/big"]), "41943040\n");
    d.ok(&["rm", "-f", "big"]);
}

#[test]
fn diff_escapes_control_characters_in_file_names() {
    let d = daemon_with_busybox(&[]);
    d.ok(&["run", "--name", "esc", "busybox", "sh", "-c", "touch \"/tmp/$(printf '\\033[2J')x\""]);
    let out = d.ok(&["diff", "esc"]);
    assert!(!out.contains('\u{1b}'), "a raw ESC reached the terminal: {out:?}");
    assert!(out.lines().any(|l| l == "A /tmp/\\u{1b}[2Jx"), "{out:?}");
    d.ok(&["rm", "esc"]);
}

#[test]
fn a_list_asks_no_shim_and_one_that_stops_answering_shows_as_unknown() {
    require_tool("runc", "runc");
    let d = Daemon::start_with_config("shim_check_interval = 1\n");
    let spec = ImageSpec::new(vec![busybox_layer()]);
    let path = d.file("busybox.tar", &oci_archive(&[("docker.io/library/busybox:latest", &spec)]));
    d.ok(&["load", "-i", path.to_str().unwrap()]);
    let id = d.ok(&["run", "-d", "--net", "none", "--name", "hung", "busybox", "sleep", "300"]).trim().to_owned();
    d.ok(&["run", "-d", "--net", "none", "--name", "fine", "busybox", "sleep", "300"]);
    let state = |name: &str| {
        // One object per line, as docker's `ps --format json`.
        let out = d.ok(&["ps", "-a", "--format", "json"]);
        let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let c = rows.iter().find(|c| c["Names"] == name).cloned().unwrap_or_default();
        c["State"].as_str().unwrap_or_default().to_owned()
    };
    let pid: i32 = std::fs::read_to_string(d.state.join("tasks/default").join(&id).join("shim.pid")).unwrap().trim().parse().unwrap();
    let signal = |sig: &str| assert!(std::process::Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
    signal("-STOP");
    // The state is the agent's own: a list does not wait for the frozen shim.
    assert_eq!(state("hung"), "running");
    // The background check finds that it does not answer; the others stay as they are.
    wait_until("the frozen shim shows as unknown", Duration::from_secs(15), || state("hung") == "unknown");
    assert_eq!(state("fine"), "running");
    signal("-CONT");
    wait_until("the shim answers again", Duration::from_secs(15), || state("hung") == "running");
    // Changes reach the list as they happen.
    d.ok(&["pause", "hung"]);
    assert_eq!(state("hung"), "paused");
    d.ok(&["unpause", "hung"]);
    assert_eq!(state("hung"), "running");
    d.ok(&["kill", "hung"]);
    wait_until("the kill shows", Duration::from_secs(10), || state("hung") == "exited");
    d.ok(&["rm", "-f", "hung", "fine"]);
}

#[test]
fn init_reaps_orphans_and_passes_stop_on_and_stop_flags_are_kept() {
    let d = daemon_with_busybox(&[]);
    // An orphan of the command: under berth-init it is reaped; with the
    // command as PID 1 (one that never waits) it stays a zombie.
    let orphan = "sh -c 'sleep 0.1 &'; exec sleep 60";
    d.ok(&["run", "-d", "--name", "with", "--init", "--net", "none", "busybox", "sh", "-c", orphan]);
    d.ok(&["run", "-d", "--name", "without", "--net", "none", "busybox", "sh", "-c", orphan]);
    std::thread::sleep(Duration::from_millis(800));
    let with = d.ok(&["exec", "with", "ps", "-o", "stat,comm"]);
    let without = d.ok(&["exec", "without", "ps", "-o", "stat,comm"]);
    assert!(with.contains("berth-init") && !with.contains("Z "), "{with}");
    assert!(without.contains("Z "), "the orphan should be a zombie without --init:\n{without}");
    // ps shows the command, not the init; top shows both.
    assert!(d.ok(&["ps", "--no-trunc", "--filter", "name==with"]).contains("\"sh -c"), "{}", d.ok(&["ps", "--no-trunc"]));
    d.ok(&["rm", "-f", "with", "without"]);

    // A shell loop ignores SIGTERM as PID 1; under berth-init it is PID 2 and ends at once.
    d.ok(&["run", "-d", "--name", "loop", "--init", "--net", "none", "busybox", "sh", "-c", "while :; do sleep 1; done"]);
    let t = Instant::now();
    d.ok(&["stop", "loop"]);
    assert!(t.elapsed() < Duration::from_secs(5), "stop took {:?}", t.elapsed());
    assert!(d.ok(&["ps", "-a", "--filter", "name==loop"]).contains("Exited (143)"));
    d.ok(&["rm", "loop"]);

    // --stop-timeout replaces the 10 s wait; --stop-signal the first signal.
    d.ok(&["run", "-d", "--name", "slow", "--stop-timeout", "1", "--net", "none", "busybox", "sleep", "60"]);
    let t = Instant::now();
    d.ok(&["stop", "slow"]);
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(6), "stop took {took:?}");
    d.ok(&["run", "-d", "--name", "quit", "--stop-signal", "SIGKILL", "--net", "none", "busybox", "sleep", "60"]);
    let t = Instant::now();
    d.ok(&["stop", "quit"]);
    assert!(t.elapsed() < Duration::from_secs(5), "stop took {:?}", t.elapsed());
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["inspect", "quit"])).unwrap();
    let v = if v.is_array() { v[0].clone() } else { v };
    assert_eq!(v["Config"]["StopSignal"], "SIGKILL", "{v}");
    let bad = d.ctl(&["create", "--stop-signal", "SIGNOPE", "--net", "none", "busybox", "true"]);
    assert!(!bad.status.success() && stderr(&bad).contains("SIGNOPE"), "{}", stderr(&bad));
    d.ok(&["rm", "slow", "quit"]);
}

fn inspect_one(d: &Daemon, name: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["inspect", name])).unwrap();
    if v.is_array() {
        v[0].clone()
    } else {
        v
    }
}

fn wait_for(d: &Daemon, what: &str, mut cond: impl FnMut(&Daemon) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond(d) {
        assert!(Instant::now() < deadline, "{what}: not within 20 s\n{}", d.ok(&["ps", "-a"]));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn restart_policies_start_containers_again_and_never_undo_a_user_s_stop() {
    let mut d = daemon_with_busybox(&[]);
    let state = |d: &Daemon, n: &str| inspect_one(d, n)["State"]["Status"].as_str().unwrap_or_default().to_owned();
    let count = |d: &Daemon, n: &str| inspect_one(d, n)["RestartCount"].as_u64().unwrap_or(0);

    // always: an exit brings it back (with an event), until the user stops it.
    let mut events = d.spawn_ctl(&["events", "--filter", "topic==/tasks/restart"]);
    d.ok(&["run", "-d", "--name", "always", "--restart", "always", "--net", "none", "busybox", "sh", "-c", "sleep 0.2; exit 1"]);
    wait_for(&d, "two restarts", |d| count(d, "always") >= 2);
    d.ok(&["stop", "-t", "1", "always"]);
    let after_stop = count(&d, "always");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(state(&d, "always"), "exited");
    assert_eq!(count(&d, "always"), after_stop, "a stop by the user was undone");
    assert_eq!(inspect_one(&d, "always")["StoppedByUser"], true);
    let _ = events.kill();
    let seen = String::from_utf8_lossy(&events.wait_with_output().unwrap().stdout).into_owned();
    assert!(seen.contains("/tasks/restart"), "no restart event: {seen}");

    // A kill (SIGKILL, or the stop signal) is a stop by the user too, as with docker.
    d.ok(&["run", "-d", "--name", "killed", "--restart", "always", "--net", "none", "busybox", "sleep", "600"]);
    d.ok(&["kill", "killed"]);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!((state(&d, "killed"), count(&d, "killed")), ("exited".to_owned(), 0));
    d.ok(&["rm", "killed"]);

    // on-failure:2 stops after two restarts; an exit 0 brings no restart.
    d.ok(&["run", "-d", "--name", "failing", "--restart", "on-failure:2", "--net", "none", "busybox", "sh", "-c", "exit 3"]);
    d.ok(&["run", "-d", "--name", "fine", "--restart", "on-failure", "--net", "none", "busybox", "true"]);
    wait_for(&d, "two restarts of failing", |d| count(d, "failing") == 2 && state(d, "failing") == "exited");
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(count(&d, "failing"), 2);
    assert_eq!((state(&d, "fine"), count(&d, "fine")), ("exited".to_owned(), 0));

    // A crash loop backs off: restarts are spaced more and more.
    d.ok(&["run", "-d", "--name", "loop", "--restart", "always", "--net", "none", "busybox", "true"]);
    std::thread::sleep(Duration::from_millis(2000));
    let in_two_seconds = count(&d, "loop");
    // 100 + 200 + 400 + 800 ms of delays fit in 2 s, not many more.
    assert!((2..=6).contains(&in_two_seconds), "{in_two_seconds} restarts in 2 s");
    // (Between an exit and the restart it brings, the container shows as exited for a moment.)
    wait_for(&d, "loop restarting or running", |d| {
        d.ok(&["ps", "-a", "--filter", "name==loop"]).contains("Restarting") || state(d, "loop") == "running"
    });
    d.ok(&["rm", "-f", "loop"]);

    // The agent is killed; the processes of two containers die while it is away.
    // At its start it brings back always and unless-stopped; the one the user stopped stays.
    d.ok(&["run", "-d", "--name", "svc", "--restart", "always", "--net", "none", "busybox", "sleep", "600"]);
    d.ok(&["run", "-d", "--name", "svc2", "--restart", "unless-stopped", "--net", "none", "busybox", "sleep", "600"]);
    let pids: Vec<String> = ["svc", "svc2"].iter().map(|n| inspect_one(&d, n)["State"]["Pid"].to_string()).collect();
    d.kill9();
    for pid in &pids {
        run_ok(Command::new("kill").args(["-9", pid]));
    }
    d.spawn();
    wait_for(&d, "svc and svc2 running again", |d| state(d, "svc") == "running" && state(d, "svc2") == "running");
    assert_eq!(count(&d, "svc"), 1);
    assert_eq!(state(&d, "always"), "exited", "the container the user stopped came back");
    // A user's start undoes the stop and counts from zero; restart keeps it running.
    d.ok(&["start", "always"]);
    assert_eq!(count(&d, "always"), 0);
    d.ok(&["update", "--restart", "no", "always"]);
    assert_eq!(inspect_one(&d, "always")["HostConfig"]["RestartPolicy"]["Name"], "no");
    d.ok(&["restart", "-t", "1", "svc2"]);
    assert_eq!(state(&d, "svc2"), "running");

    // A restart waiting out its delay when the agent dies still happens after the agent's start.
    d.ok(&["run", "-d", "--name", "crashy", "--restart", "always", "--net", "none", "busybox", "sh", "-c", "exit 2"]);
    wait_for(&d, "five restarts (the delay is 3.2 s now)", |d| count(d, "crashy") >= 5);
    let before = count(&d, "crashy");
    d.kill9();
    d.spawn();
    wait_for(&d, "a restart after the agent's start", |d| count(d, "crashy") > before);
    d.ok(&["rm", "-f", "crashy"]);

    // --rm and a policy do not go together.
    let out = d.ctl(&["run", "--rm", "--restart", "always", "busybox", "true"]);
    assert!(!out.status.success() && stderr(&out).contains("--rm"), "{}", stderr(&out));
    d.ok(&["rm", "-f", "always", "failing", "fine", "svc", "svc2"]);
}

#[test]
fn health_checks_run_on_schedule_and_show_in_ps_inspect_and_events() {
    let d = daemon_with_busybox(&[]);
    let mut events = d.spawn_ctl(&["events", "--filter", "topic==/tasks/health"]);
    // Passes while /ok exists: healthy, then three failures make it unhealthy.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--net",
        "none",
        "--health-cmd",
        "test -e /ok",
        "--health-interval",
        "200ms",
        "--health-retries",
        "3",
        "busybox",
        "sh",
        "-c",
        "touch /ok; sleep 600",
    ]);
    let health = |d: &Daemon| inspect_one(d, "web")["State"]["Health"].clone();
    wait_for(&d, "healthy", |d| health(d)["Status"] == "healthy");
    assert!(d.ok(&["ps", "--filter", "name==web"]).contains("(healthy)"));
    d.ok(&["exec", "web", "rm", "/ok"]);
    wait_for(&d, "unhealthy", |d| health(d)["Status"] == "unhealthy");
    let h = health(&d);
    assert!(h["FailingStreak"].as_u64().unwrap() >= 3, "{h}");
    let log = h["Log"].as_array().unwrap();
    assert!(log.len() <= 5 && log.last().unwrap()["ExitCode"] == 1, "{h}");
    assert!(d.ok(&["ps", "--filter", "name==web"]).contains("(unhealthy)"));
    d.ok(&["rm", "-f", "web"]);
    let _ = events.kill();
    let seen = String::from_utf8_lossy(&events.wait_with_output().unwrap().stdout).into_owned();
    assert!(seen.contains("health_status=healthy") || seen.contains("healthy"), "{seen}");
    assert!(seen.contains("unhealthy"), "{seen}");

    // A probe that outlives its timeout fails; --no-healthcheck runs none.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "slow",
        "--net",
        "none",
        "--health-cmd",
        "sleep 5",
        "--health-interval",
        "100ms",
        "--health-timeout",
        "200ms",
        "--health-retries",
        "1",
        "busybox",
        "sleep",
        "600",
    ]);
    wait_for(&d, "a timed-out probe", |d| inspect_one(d, "slow")["State"]["Health"]["Status"] == "unhealthy");
    assert_eq!(inspect_one(&d, "slow")["State"]["Health"]["Log"][0]["ExitCode"], -1);
    d.ok(&["run", "-d", "--name", "none", "--net", "none", "--no-healthcheck", "busybox", "sleep", "600"]);
    assert!(inspect_one(&d, "none")["Config"]["Healthcheck"].is_null());
    // The image's HEALTHCHECK runs without flags.
    let built = d.ctl_stdin(&["build", "-q", "-t", "checked", "-"], Some(b"FROM busybox\nHEALTHCHECK --interval=200ms CMD true\n"));
    assert!(built.status.success(), "{}", stderr(&built));
    d.ok(&["run", "-d", "--name", "img", "--net", "none", "checked", "sleep", "600"]);
    wait_for(&d, "the image's check passes", |d| inspect_one(d, "img")["State"]["Health"]["Status"] == "healthy");
    assert_eq!(inspect_one(&d, "img")["Config"]["Healthcheck"]["Interval"], 200_000_000);
    d.ok(&["rm", "-f", "img"]);
    let bad = d.ctl(&["create", "--health-interval", "soon", "busybox", "true"]);
    assert!(!bad.status.success() && stderr(&bad).contains("--health-interval"), "{}", stderr(&bad));
    d.ok(&["rm", "-f", "slow", "none"]);
}

#[test]
fn privileged_gives_the_host_s_devices() {
    let d = daemon_with_busybox(&[]);
    let count = "find /dev -type c -o -type b | grep -v -e ^/dev/pts -e ^/dev/console | wc -l";
    let host = run_ok(Command::new("sh").args(["-c", count]));
    let host: usize = stdout(&host).trim().parse().unwrap();
    let inside: usize = d.ok(&["run", "--rm", "--privileged", "--net", "none", "busybox", "sh", "-c", count]).trim().parse().unwrap();
    assert!(inside * 10 >= host * 9, "{inside} devices in a privileged container, {host} on the host");
    let plain: usize = d.ok(&["run", "--rm", "--net", "none", "busybox", "sh", "-c", count]).trim().parse().unwrap();
    assert!(plain < 20, "{plain} devices without --privileged");
    if exists(std::path::Path::new("/dev/kmsg")) {
        d.ok(&["run", "--rm", "--privileged", "--net", "none", "busybox", "sh", "-c", "test -c /dev/kmsg"]);
    }
}

#[test]
fn shm_size_ulimits_sysctls_added_groups_and_host_namespaces() {
    let d = daemon_with_busybox(&[]);
    let script = "df -k /dev/shm | tail -1; ulimit -n; ulimit -Hn; cat /proc/sys/kernel/shmmax; id -G";
    let o = d.ok(&[
        "run",
        "--rm",
        "--net",
        "none",
        "--shm-size",
        "16m",
        "--ulimit",
        "nofile=512:1024",
        "--sysctl",
        "kernel.shmmax=1048576",
        "--group-add",
        "nogroup",
        "--group-add",
        "4242",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    let lines: Vec<&str> = o.lines().collect();
    assert!(lines[0].split_whitespace().nth(1) == Some("16384"), "{o}");
    assert_eq!(&lines[1..4], ["512", "1024", "1048576"], "{o}");
    let groups: Vec<&str> = lines[4].split_whitespace().collect();
    assert!(groups.contains(&"65534") && groups.contains(&"4242"), "{o}");

    // The host's process and IPC namespaces.
    let own = d.ok(&["run", "--rm", "--net", "none", "busybox", "cat", "/proc/1/comm"]);
    let host = d.ok(&["run", "--rm", "--net", "none", "--pid", "host", "busybox", "cat", "/proc/1/comm"]);
    assert_eq!(own.trim(), "cat");
    assert_ne!(host.trim(), "cat", "PID 1 of --pid host is the host's");
    let host_ipc = std::fs::read_link("/proc/self/ns/ipc").unwrap().display().to_string();
    let ipc = d.ok(&["run", "--rm", "--net", "none", "--ipc", "host", "busybox", "busybox", "readlink", "/proc/self/ns/ipc"]);
    assert_eq!(ipc.trim(), host_ipc);
    // Another container's process and IPC namespaces.
    d.ok(&["run", "-d", "--name", "holder", "--net", "none", "busybox", "sleep", "300"]);
    let ps = d.ok(&["run", "--rm", "--net", "none", "--pid", "container:holder", "busybox", "ps", "-o", "args"]);
    assert!(ps.contains("sleep 300"), "{ps}");
    let theirs = d.ok(&["exec", "holder", "busybox", "readlink", "/proc/self/ns/ipc"]);
    let ipc = d.ok(&["run", "--rm", "--net", "none", "--ipc", "container:holder", "busybox", "busybox", "readlink", "/proc/self/ns/ipc"]);
    assert_eq!(ipc, theirs);
    d.ok(&["rm", "-f", "holder"]);

    // What a container may not set.
    let cases: &[(&[&str], &str)] = &[
        (&["--sysctl", "vm.swappiness=1"], "not namespaced"),
        (&["--net", "host", "--sysctl", "net.ipv4.ip_forward=1"], "host's network"),
        (&["--ipc", "host", "--sysctl", "kernel.shmmax=1"], "host's IPC"),
        (&["--ulimit", "nofile=1:99999999999"], "CAP_SYS_RESOURCE"),
        (&["--ulimit", "bogus=1"], "unknown ulimit"),
        (&["--group-add", "nosuchgroup"], "nosuchgroup"),
        (&["--pid", "container:x"], "\"x\" not found"),
        (&["--pid", "elsewhere"], "--pid"),
    ];
    for (flags, want) in cases {
        let mut args = vec!["create"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["busybox", "true"]);
        let out = d.ctl(&args);
        assert!(!out.status.success() && stderr(&out).contains(want), "{flags:?}: {}", stderr(&out));
    }
    assert_eq!(d.ok(&["ps", "-aq"]).trim(), "", "a refused create left a container");
}
