//! The Python and TypeScript clients (clients/) against a real berthd: each
//! language's own test suite (pytest, node --test) and its examples, run on
//! an agent, a registry and an image archive made here. Their packages are
//! installed by scripts/install-client-deps.sh (the test command runs it).
//! Also: the API compatibility check fails on a removed field.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use common::*;

/// One suite at a time: their output goes out whole, and two agents with
/// their containers do not share the 2 cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    let py = repo().join("target/py/bin/python");
    assert!(py.is_file(), "{} is missing: run scripts/install-client-deps.sh", py.display());
    py
}

fn node_client() -> PathBuf {
    let dir = repo().join("clients/node");
    assert!(dir.join("dist/src/index.js").is_file(), "the Node client is not built: run scripts/install-client-deps.sh");
    dir
}

/// An agent, a registry, and the busybox image's archive the suites load.
struct Setup {
    daemon: Daemon,
    registry: Registry,
    archive: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let daemon = Daemon::start();
        let registry = Registry::start(None);
        let spec = ImageSpec::new(vec![busybox_layer()]);
        let archive = daemon.file("busybox.tar", &oci_archive(&[("docker.io/library/busybox:latest", &spec)]));
        Setup { daemon, registry, archive }
    }

    /// Run `program args` in `dir` with the agent's address and the suite's inputs.
    fn run(&self, dir: &Path, program: &Path, args: &[&str]) -> Output {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(dir)
            .env("BERTH_ADDRESS", &self.daemon.socket)
            .env("BERTH_TEST_ARCHIVE", &self.archive)
            .env("BERTH_TEST_REGISTRY", &self.registry.addr)
            .env_remove("BERTH_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        wait_output(cmd.spawn().unwrap(), Duration::from_secs(300))
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.daemon.kill_containers();
    }
}

/// Show a suite's output as it is (outside the test harness's capture, so
/// that the test command counts its summary line), and fail when it failed.
fn report(what: &str, out: &Output) {
    let mut shown = Vec::new();
    shown.extend_from_slice(format!("--- {what}\n").as_bytes());
    shown.extend_from_slice(&out.stdout);
    shown.extend_from_slice(&out.stderr);
    shown.extend_from_slice(format!("--- end of {what}\n").as_bytes());
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&shown).unwrap();
    stdout.flush().unwrap();
    assert!(out.status.success(), "{what} failed: {}", out.status);
}

#[test]
fn python_suite_passes_against_the_agent() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Setup::new();
    let out = s.run(&repo().join("clients/python"), &python(), &["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]);
    report("pytest clients/python/tests", &out);
    s.daemon.assert_healthy();
}

#[test]
fn python_examples_run() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Setup::new();
    let archive = s.archive.to_str().unwrap();
    let dir = repo().join("clients/python");
    let out = s.run(&dir, &python(), &["examples/quickstart.py", archive]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("hello from python\n") && text.contains("exit code: 0\n"), "{text}");
    let out = s.run(&dir, &python(), &["examples/events.py", archive]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    for topic in ["/tasks/start", "/tasks/exit", "/containers/delete"] {
        assert!(text.contains(topic), "{topic} missing from:\n{text}");
    }
    assert_eq!(s.daemon.ok(&["ps", "-aq"]).trim(), "", "the examples remove their containers");
}

#[test]
fn node_suite_passes_against_the_agent() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = node_client();
    let s = Setup::new();
    let out = s.run(&dir, Path::new("node"), &["--test", "--test-reporter=tap", "dist/test/"]);
    report("node --test clients/node/dist/test", &out);
    s.daemon.assert_healthy();
}

#[test]
fn node_examples_run() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = node_client();
    let s = Setup::new();
    let archive = s.archive.to_str().unwrap();
    let out = s.run(&dir, Path::new("node"), &["dist/examples/quickstart.js", archive]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("hello from typescript\n") && text.contains("exit code: 0\n"), "{text}");
    let out = s.run(&dir, Path::new("node"), &["dist/examples/events.js", archive]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    for topic in ["/tasks/start", "/tasks/exit"] {
        assert!(text.contains(topic), "{topic} missing from:\n{text}");
    }
    assert_eq!(s.daemon.ok(&["ps", "-aq"]).trim(), "", "the examples remove their containers");
}

/// The compatibility check passes on the protos as they are and fails when
/// a field of a v1 message is removed (or renumbered).
#[test]
fn api_check_refuses_a_removed_field() {
    let check = repo().join("scripts/check-api-compat.sh");
    let run = |dir: &Path| run_cmd(Command::new("sh").arg(&check).arg(dir), Duration::from_secs(120));
    let ok = run(&repo().join("proto"));
    assert!(ok.status.success(), "{}{}", stdout(&ok), stderr(&ok));

    let tmp = tempfile::tempdir_in(test_tmp()).unwrap();
    let copy = tmp.path().join("proto");
    run_ok(Command::new("cp").arg("-r").arg(repo().join("proto")).arg(&copy));
    let file = copy.join("berth/v1/containers.proto");
    let text = std::fs::read_to_string(&file).unwrap();
    let edited = text.replace("  string snapshot_key = 10;\n", "");
    assert_ne!(edited, text);
    std::fs::write(&file, edited).unwrap();
    let broken = run(&copy);
    assert!(!broken.status.success(), "a removed field passed the check:\n{}{}", stdout(&broken), stderr(&broken));
    let said = format!("{}{}", stdout(&broken), stderr(&broken));
    assert!(said.contains("snapshot_key"), "{said}");

    let renumbered = text.replace("  string snapshot_key = 10;\n", "  string snapshot_key = 40;\n");
    std::fs::write(&file, renumbered).unwrap();
    assert!(!run(&copy).status.success(), "a renumbered field passed the check");
}
