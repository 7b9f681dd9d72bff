//! berthd as a process: one agent per root, a socket it will not be tricked
//! into, a clean stop on SIGTERM, the native snapshotter, namespaces, and
//! grpcio clients answered whatever `:authority` they send.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

/// Run berthd on `root` and `state` (and `address`) to completion; it must exit (not serve) within 20 s.
fn berthd_exits(root: &Path, state: &Path, address: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berthd"));
    cmd.arg("--root").arg(root).arg("--state").arg(state).env("RUST_LOG", "info");
    if let Some(a) = address {
        cmd.arg("--address").arg(a);
    }
    run_cmd(&mut cmd, Duration::from_secs(20))
}

/// SIGTERM the agent and wait (at most 5 s) for it to exit.
fn sigterm(d: &mut Daemon) -> std::process::ExitStatus {
    let mut child = d.child.take().expect("berthd is running");
    let sent = Instant::now();
    rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::TERM).unwrap();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if sent.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("berthd still running 5s after SIGTERM; log:\n{}", d.log());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn refused(out: &Output, needle: &str) {
    let err = stderr(out);
    assert!(!out.status.success(), "berthd should refuse to start: {err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

#[test]
fn a_second_agent_on_the_same_root_refuses_to_start() {
    let d = Daemon::start();
    let other_state = d.dir.path().join("state2");
    let out = berthd_exits(&d.root, &other_state, None);
    refused(&out, &format!("already using root {}", d.root.display()));
    assert!(!exists(&other_state.join("berthd.sock")));
    // The first one is undisturbed.
    d.assert_healthy();
    assert!(std::fs::symlink_metadata(&d.socket).unwrap().file_type().is_socket());
}

#[test]
fn an_agent_refuses_a_socket_path_that_is_a_symlink_or_a_regular_file() {
    let d = Daemon::unstarted(&[]);
    std::fs::create_dir_all(&d.state).unwrap();
    let precious = d.dir.path().join("precious");
    std::fs::write(&precious, b"keep me\n").unwrap();

    // A symlink (to a regular file, and dangling): never followed, never replaced.
    let link = d.state.join("link.sock");
    for target in [precious.clone(), d.dir.path().join("nowhere")] {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let out = berthd_exits(&d.root, &d.state, Some(&link));
        refused(&out, "is a symlink");
        assert_eq!(std::fs::read_link(&link).unwrap(), target);
    }
    assert!(!exists(&d.dir.path().join("nowhere")));
    assert_eq!(std::fs::read(&precious).unwrap(), b"keep me\n");

    // A regular file where the socket goes: left alone.
    let out = berthd_exits(&d.root, &d.state, Some(&precious));
    refused(&out, "is not a socket");
    assert_eq!(std::fs::read(&precious).unwrap(), b"keep me\n");
}

#[test]
fn sigterm_stops_the_agent_cleanly_and_removes_its_socket() {
    let mut d = Daemon::start();
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o660, "socket mode {mode:o}");
    let path = d.file("a.tar", &oci_archive(&[("busybox:latest", &ImageSpec::new(vec![busybox_layer()]))]));
    d.ok(&["load", "-i", path.to_str().unwrap()]);

    let status = sigterm(&mut d);
    assert!(status.success(), "berthd exited with {status}; log:\n{}", d.log());
    assert!(!exists(&d.socket), "the socket is left behind");
    assert!(d.log().contains("berthd stopped"), "{}", d.log());

    // The root is free again and the image is still there.
    d.spawn();
    assert_eq!(d.inspect("default", "busybox")["Unpacked"], true);
}

#[test]
fn the_native_snapshotter_keeps_a_full_copy_of_the_parent_in_each_layer() {
    let d = Daemon::start_with(&["--snapshotter", "native"]);
    let info = d.ok(&["info"]);
    assert!(info.lines().any(|l| l.starts_with("Snapshotter:") && l.contains("native")), "{info}");
    let base = busybox_layer();
    let a = ImageSpec::new(vec![base.clone()]);
    let b = ImageSpec::new(vec![
        base.clone(),
        layer(&[
            Entry::File("hello.txt".into(), b"hello\n".to_vec(), 0o644),
            // A whiteout removes the base's file from this layer's copy.
            Entry::File("etc/.wh.group".into(), Vec::new(), 0o644),
        ]),
    ]);
    let pa = d.file("a.tar", &oci_archive(&[("busybox:latest", &a)]));
    let pb = d.file("b.tar", &docker_archive(&["example.com/hello:v1"], &b));
    d.ok(&["load", "-i", pa.to_str().unwrap()]);
    d.ok(&["load", "-i", pb.to_str().unwrap()]);

    let snaps = d.ok(&["snapshot", "ls", "-q"]);
    assert_eq!(snaps.lines().count(), 2, "{snaps}");
    assert!(snaps.lines().any(|l| l == sha256(&base)), "{snaps}");
    assert!(d.snapshot_dirs("overlayfs").is_empty());
    let dirs = d.snapshot_fs_dirs("native");
    assert_eq!(dirs.len(), 2, "{dirs:?}");
    let (top, bottom): (Vec<_>, Vec<_>) = dirs.into_iter().partition(|fs| exists(&fs.join("hello.txt")));
    let (top, bottom) = (&top[0], &bottom[0]);
    // The child layer holds the base's files too, not just its own change.
    assert_eq!(std::fs::read(top.join("bin/busybox")).unwrap(), busybox());
    assert_eq!(std::fs::read_link(top.join("bin/sh")).unwrap(), Path::new("busybox"));
    assert_eq!(std::fs::read(top.join("hello.txt")).unwrap(), b"hello\n");
    assert!(!exists(&top.join("etc/group")) && !exists(&top.join("etc/.wh.group")));
    assert!(exists(&bottom.join("etc/group")), "the base keeps its file");
    assert!(!exists(&bottom.join("hello.txt")));
    // A copy, not a link to the same inode.
    use std::os::unix::fs::MetadataExt;
    assert_ne!(std::fs::metadata(top.join("bin/busybox")).unwrap().ino(), std::fs::metadata(bottom.join("bin/busybox")).unwrap().ino());

    d.ok(&["rmi", "example.com/hello:v1", "busybox"]);
    assert!(d.snapshot_dirs("native").is_empty());
    assert!(d.blobs().is_empty());
}

#[test]
fn an_image_imported_in_one_namespace_is_seen_only_there() {
    let d = Daemon::start();
    let spec = ImageSpec::new(vec![busybox_layer()]);
    let path = d.file("a.tar", &oci_archive(&[("busybox:latest", &spec)]));
    d.ok(&["--namespace", "other", "load", "-i", path.to_str().unwrap()]);

    assert_eq!(d.ok(&["images", "-q"]).trim(), "");
    assert_eq!(d.ok(&["snapshot", "ls", "-q"]).trim(), "");
    let out = d.ctl(&["image", "inspect", "busybox"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));

    let ls = d.ok(&["--namespace", "other", "images"]);
    assert!(ls.contains("busybox") && ls.contains("latest"), "{ls}");
    assert_eq!(d.inspect("other", "busybox")["Unpacked"], true);
    assert_eq!(d.ok(&["--namespace", "other", "snapshot", "ls", "-q"]).trim(), sha256(&busybox_layer()));
    // The environment variable selects the namespace too.
    let out = Command::new(env!("CARGO_BIN_EXE_berthctl"))
        .args(["images", "-q"])
        .env("BERTH_ADDRESS", &d.socket)
        .env("BERTH_NAMESPACE", "other")
        .output()
        .unwrap();
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stderr(&out));

    // Removing it in the default namespace does nothing to the other one.
    assert_eq!(d.ctl(&["rmi", "busybox"]).status.code(), Some(1));
    assert_eq!(d.ok(&["--namespace", "other", "images", "-q"]).lines().count(), 1);
    let info = d.ok(&["info"]);
    assert!(info.contains("other"), "{info}");
}

#[test]
fn an_invalid_namespace_is_refused_with_a_clear_message() {
    let d = Daemon::start();
    for ns in ["Bad!", "UPPER", "-leading-dash", &"x".repeat(77)] {
        let out = d.ctl(&[&format!("--namespace={ns}"), "images"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{ns}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("invalid namespace"), "{ns}: {err}");
        assert!(err.contains("lowercase letters, digits"), "{ns}: {err}");
    }
    // Also on import, before any byte is stored.
    let path = d.file("a.tar", &oci_archive(&[("busybox:latest", &ImageSpec::new(vec![busybox_layer()]))]));
    let out = d.ctl(&["--namespace", "Bad!", "load", "-i", path.to_str().unwrap()]);
    assert!(stderr(&out).contains("invalid namespace \"Bad!\""), "{}", stderr(&out));
    d.assert_nothing_left("default");
}

#[test]
fn sigterm_with_an_upload_in_flight_still_stops_the_agent_within_five_seconds() {
    use berth_api::v1;
    use tonic::codegen::tokio_stream::{self, StreamExt};
    let mut d = Daemon::start();
    let full = oci_archive(&[("busybox:latest", &ImageSpec::new(vec![busybox_layer()]))]);
    // A worker thread keeps the upload going while this thread watches the agent.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let ns = berth_api::NamespaceInterceptor::new("default").unwrap();
    let mut client = rt.block_on(async { v1::images_client::ImagesClient::with_interceptor(d.channel().await, ns) });
    let msgs = vec![
        v1::ImportRequest { payload: Some(v1::import_request::Payload::Options(v1::ImportOptions::default())) },
        v1::ImportRequest { payload: Some(v1::import_request::Payload::Chunk(full[..full.len() / 2].to_vec())) },
    ];
    // Half an archive, then the client stalls without closing the stream.
    let call =
        rt.spawn(async move { client.import(tokio_stream::iter(msgs).chain(tokio_stream::pending())).await.map(|r| r.into_inner()) });
    wait_until("the upload reached the content store", Duration::from_secs(20), || !d.ingest_files().is_empty() || !d.blobs().is_empty());

    // In-flight calls get a bounded grace period, then the agent exits anyway.
    let status = sigterm(&mut d);
    assert!(status.success(), "berthd exited with {status}; log:\n{}", d.log());
    assert!(!exists(&d.socket));
    call.abort();
    drop(rt);
    d.spawn();
    d.assert_nothing_left("default");
}

/// Every path below `dir`, walked as root.
fn all_paths(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        out.push(p.clone());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            all_paths(&p, out);
        }
    }
}

#[test]
fn a_user_other_than_root_can_read_nothing_the_agent_keeps() {
    require_tool("runc", "runc");
    require_tool("setpriv", "util-linux");
    // (Debian's python3: another one may live where nobody can reach it.)
    require_tool("/usr/bin/python3", "python3");
    let mut d = Daemon::unstarted(&[]);
    // The test's own directories let everyone through, so only the agent's
    // modes count (a directory above them that does not would make the test
    // pass for nothing).
    let top = test_tmp();
    for p in d.dir.path().ancestors() {
        let mode = std::fs::metadata(p).unwrap().permissions().mode();
        if mode & 0o001 == 0 {
            assert!(p.starts_with(&top), "{} is not traversable by other users: set BERTH_TEST_TMP to a directory that is", p.display());
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode | 0o011)).unwrap();
        }
    }
    // A root a first release left readable: the agent tightens it at start.
    for dir in [&d.root, &d.state, &d.root.join("content/blobs/sha256")] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    d.spawn();
    let spec = ImageSpec::new(vec![busybox_layer()]);
    let path = d.file("busybox.tar", &oci_archive(&[("docker.io/library/busybox:latest", &spec)]));
    d.ok(&["load", "-i", path.to_str().unwrap()]);
    d.ok(&["run", "-d", "--name", "db", "-e", "DB_PASSWORD=hunter2-secret", "busybox", "sleep", "300"]);
    d.ok(&["run", "--name", "done", "-e", "DB_PASSWORD=hunter2-secret", "busybox", "echo", "hunter2-secret"]);

    let mut paths = vec![d.root.clone(), d.state.clone()];
    all_paths(&d.root, &mut paths);
    all_paths(&d.state, &mut paths);
    assert!(paths.len() > 20, "{paths:?}");
    assert!(paths.iter().any(|p| p.ends_with("config.json")), "no task bundle found");
    // One process as nobody tries every path: list a directory, read a file.
    let list: String = paths.iter().filter(|p| !p.ends_with("berthd.sock")).map(|p| format!("{}\n", p.display())).collect();
    let script = r#"
import os, sys
for p in sys.stdin.read().splitlines():
    try:
        if os.path.isdir(p): os.listdir(p)
        else: open(p, 'rb').read(1)
        print(p)
    except OSError:
        pass
"#;
    let mut child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(list.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let readable = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(readable, "", "readable by nobody:\n{readable}");
    // The secret is in root's files, not anywhere another user reaches.
    let meta = std::fs::metadata(d.root.join("metadata.redb")).unwrap().permissions().mode() & 0o777;
    assert_eq!(meta, 0o600);
    for blob in d.blobs() {
        let mode = std::fs::metadata(d.root.join("content/blobs/sha256").join(&blob)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{blob}");
    }
    assert_eq!(std::fs::metadata(d.root.join("content/blobs/sha256")).unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(std::fs::metadata(&d.root).unwrap().permissions().mode() & 0o777, 0o700);
    // The socket's directory still lets clients through; the socket is 0660.
    assert_eq!(std::fs::metadata(&d.state).unwrap().permissions().mode() & 0o777, 0o711);
    d.ok(&["rm", "-f", "db", "done"]);
}

/// Debian's interpreter: python3-grpcio installs for it, whatever else `PATH` holds.
const DEBIAN_PYTHON: &str = "/usr/bin/python3";

/// Calls the agent the way docs/api.md shows, with grpcio and no generated
/// stubs (raw bytes in and out), once per `:authority` that gRPC clients send
/// on a Unix socket. Prints one JSON object: authority label -> call -> the
/// answer's bytes in hex, or "error: CODE details".
const GRPCIO_CALLS: &str = r#"
import json, sys, urllib.parse
import grpc

sock = sys.argv[1]
raw = dict(request_serializer=lambda b: b, response_deserializer=lambda b: b)

def attempt(f):
    try:
        return f()
    except grpc.RpcError as e:
        return "error: %s %s" % (e.code().name, e.details())

def calls(ch):
    out = {}
    out["version"] = attempt(lambda: ch.unary_unary("/berth.v1.Version/Version", **raw)(b"", timeout=20).hex())
    def watch():
        answers = ch.unary_stream("/grpc.health.v1.Health/Watch", **raw)(b"", timeout=20)
        first = next(answers)
        answers.cancel()
        return first.hex()
    out["health"] = attempt(watch)
    # ServerReflectionRequest { list_services: "" }, on a bidirectional stream.
    out["reflection"] = attempt(lambda: b"".join(
        ch.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", **raw)(iter([b"\x3a\x00"]), timeout=20)).hex())
    out["reflection_v1alpha"] = attempt(lambda: b"".join(
        ch.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", **raw)(iter([b"\x3a\x00"]), timeout=20)).hex())
    # Metadata reaches the agent: an invalid namespace is refused.
    out["namespace"] = attempt(lambda: ch.unary_unary("/berth.v1.Images/List", **raw)(
        b"", metadata=[("berth-namespace", "Not A Namespace")], timeout=20).hex())
    return out

authorities = {
    # What the installed grpcio sends by itself: Debian 12's (1.51) sends
    # localhost; 1.57 and later send the next one, which is set here by hand.
    "default": None,
    # grpcio 1.57 and later: the socket path without its leading slash, percent-encoded.
    "percent-encoded path": urllib.parse.quote(sock.lstrip("/"), safe=""),
    # grpc-java: the path as it is.
    "path": sock,
    "localhost": "localhost",
}
result = {}
for label, authority in authorities.items():
    options = [] if authority is None else [("grpc.default_authority", authority)]
    with grpc.insecure_channel("unix://" + sock, options=options) as ch:
        result[label] = calls(ch)
print(json.dumps(result))
"#;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn grpcio_clients_are_answered_whatever_authority_they_send() {
    use prost::Message as _;
    let probe = Command::new(DEBIAN_PYTHON).args(["-c", "import grpc"]).output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "{DEBIAN_PYTHON} cannot import grpc ({probe:?}): install Debian's python3-grpcio (scripts/install-test-deps.sh)"
    );
    let d = Daemon::start();
    let out = run_cmd(Command::new(DEBIAN_PYTHON).args(["-c", GRPCIO_CALLS]).arg(&d.socket), Duration::from_secs(120));
    assert!(out.status.success(), "the grpcio script failed: {}{}", stderr(&out), stdout(&out));
    let result: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    for label in ["default", "percent-encoded path", "path", "localhost"] {
        let calls = &result[label];
        let text = |call: &str| calls[call].as_str().unwrap_or_else(|| panic!("{label}: no {call} in {result}")).to_owned();
        let bytes = |call: &str| {
            let answer = text(call);
            assert!(!answer.starts_with("error:"), "{call} with authority {label}: {answer}");
            unhex(&answer)
        };
        let version = berth_api::v1::VersionResponse::decode(&bytes("version")[..]).unwrap();
        assert_eq!(version.version.unwrap().version, env!("CARGO_PKG_VERSION"), "{label}");
        let health = tonic_health::pb::HealthCheckResponse::decode(&bytes("health")[..]).unwrap();
        assert_eq!(health.status(), tonic_health::pb::health_check_response::ServingStatus::Serving, "{label}");
        let reflection = bytes("reflection");
        assert!(reflection.windows(16).any(|w| w == b"berth.v1.Version"), "{label}: {reflection:?}");
        let reflection = bytes("reflection_v1alpha");
        assert!(reflection.windows(16).any(|w| w == b"berth.v1.Version"), "{label}: {reflection:?}");
        assert!(text("namespace").starts_with("error: INVALID_ARGUMENT"), "{label}: {}", text("namespace"));
    }
    d.assert_healthy();
}

/// berthctl as another user (nobody, with group `gid` only).
fn ctl_as(d: &Daemon, gid: u32, args: &[&str]) -> std::process::Output {
    let child = Command::new("setpriv")
        .args(["--reuid=65534", &format!("--regid={gid}"), "--clear-groups", env!("CARGO_BIN_EXE_berthctl")])
        .args(args)
        .env("BERTH_ADDRESS", &d.socket)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(30))
}

#[test]
fn the_socket_s_group_lets_its_members_in_and_others_are_told_why_not() {
    require_tool("setpriv", "util-linux");
    let mut d = Daemon::unstarted(&["--group", "nogroup"]);
    // The test's own directories let everyone through: only the socket's mode counts.
    let top = test_tmp();
    for p in d.dir.path().ancestors() {
        let mode = std::fs::metadata(p).unwrap().permissions().mode();
        if mode & 0o001 == 0 {
            assert!(p.starts_with(&top), "{} is not traversable by other users: set BERTH_TEST_TMP to a directory that is", p.display());
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode | 0o011)).unwrap();
        }
    }
    d.spawn();
    let meta = std::fs::metadata(&d.socket).unwrap();
    assert_eq!((meta.permissions().mode() & 0o777, meta.gid()), (0o660, 65534));
    // A member of the group (nogroup is nobody's) lists containers.
    let out = ctl_as(&d, 65534, &["ps", "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Someone outside it is told what to do, not asked whether berthd runs.
    let out = ctl_as(&d, 4242, &["ps", "-q"]);
    assert_eq!(out.status.code(), Some(1));
    let said = stderr(&out);
    assert!(said.contains("permission denied on") && said.contains("join group nogroup"), "{said}");
    // Without --group, the socket is root's only.
    drop(d);
    let d = Daemon::start();
    assert_eq!(std::fs::metadata(&d.socket).unwrap().gid(), 0);
    // A group that does not exist stops the agent before it makes anything.
    let root = d.dir.path().join("other-root");
    let out = Command::new(env!("CARGO_BIN_EXE_berthd"))
        .arg("--root")
        .arg(&root)
        .arg("--state")
        .arg(d.dir.path().join("other-state"))
        .args(["--group", "no-such-group-berth"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!root.exists(), "the agent made its root before refusing");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-group-berth"), "{}", String::from_utf8_lossy(&out.stderr));
}
