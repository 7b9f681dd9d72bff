//! The OCI runtime CLI (runc, crun or one that takes the same flags): one
//! call per verb, bounded in time, its error read back from its JSON log.

use std::fmt;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::Errno;
use rustix::process::Pid;

use crate::protocol::{files, ErrorKind, ShimConfig, ShimError};

/// A runtime call that failed.
#[derive(Debug)]
pub enum RuntimeError {
    /// The runtime could not be run at all.
    Spawn { runtime: String, source: io::Error },
    /// It did not finish in time, and was killed.
    Timeout { runtime: String, verb: String, timeout: Duration },
    /// It failed: `why` is the last error it logged, or how it exited.
    Failed { runtime: String, verb: String, why: String },
    /// It ran but wrote no pid file.
    NoPid,
    /// The shim's side of a call failed.
    Io { what: &'static str, source: io::Error },
}

impl RuntimeError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            RuntimeError::Spawn { .. } | RuntimeError::Failed { .. } | RuntimeError::NoPid => ErrorKind::Runtime,
            RuntimeError::Timeout { .. } => ErrorKind::Timeout,
            RuntimeError::Io { .. } => ErrorKind::Internal,
        }
    }

    /// Whether the error says that the container is not there (to delete).
    pub fn is_gone(&self) -> bool {
        let msg = self.to_string();
        ["does not exist", "not found", "No such file"].iter().any(|m| msg.contains(m))
    }
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeError::Spawn { runtime, source } => write!(f, "running {runtime}: {source}"),
            RuntimeError::Timeout { runtime, verb, timeout } => write!(f, "{runtime} {verb} did not finish within {timeout:?}"),
            RuntimeError::Failed { runtime, verb, why } => write!(f, "{runtime} {verb}: {why}"),
            RuntimeError::NoPid => f.write_str("the runtime wrote no pid file"),
            RuntimeError::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for RuntimeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RuntimeError::Spawn { source, .. } | RuntimeError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<RuntimeError> for ShimError {
    fn from(e: RuntimeError) -> Self {
        ShimError { kind: e.kind(), message: e.to_string() }
    }
}

type Result<T> = std::result::Result<T, RuntimeError>;

fn null_stdio() -> [Stdio; 3] {
    [Stdio::null(), Stdio::null(), Stdio::null()]
}

/// The runtime, as configured for this container.
pub struct Runtime {
    binary: String,
    /// Its state directory (`--root`).
    root: String,
    /// The container's id for it.
    id: String,
    bundle: String,
    log: PathBuf,
    timeout: Duration,
}

impl Runtime {
    pub fn new(cfg: &ShimConfig, bundle: &Path) -> Self {
        Runtime {
            binary: cfg.runtime.clone(),
            root: cfg.runtime_root.clone(),
            id: cfg.id.clone(),
            bundle: bundle.to_string_lossy().into_owned(),
            log: bundle.join(files::RUNTIME_LOG),
            timeout: Duration::from_secs(cfg.runtime_timeout_secs.max(1)),
        }
    }

    /// Create and start the container (`run --detach`); its init gets
    /// `stdio`, or a terminal sent over `console_socket`.
    pub fn run(&self, pid_file: &str, console_socket: Option<&str>, stdio: [Stdio; 3]) -> Result<()> {
        let mut args = vec!["run", "--detach", "--bundle", &self.bundle, "--pid-file", pid_file];
        if let Some(socket) = console_socket {
            args.extend(["--console-socket", socket]);
        }
        args.push(&self.id);
        self.call(&args, stdio)
    }

    /// Start the process described in `process_file` in the container.
    pub fn exec(&self, process_file: &str, pid_file: &str, console_socket: Option<&str>, stdio: [Stdio; 3]) -> Result<()> {
        let mut args = vec!["exec", "--detach", "--pid-file", pid_file, "--process", process_file];
        if let Some(socket) = console_socket {
            args.extend(["--console-socket", socket]);
        }
        args.push(&self.id);
        self.call(&args, stdio)
    }

    /// Signal the init, or (`all`) every process of the container.
    pub fn kill(&self, signal: i32, all: bool) -> Result<()> {
        let sig = signal.to_string();
        if all {
            self.call(&["kill", "--all", &self.id, &sig], null_stdio())
        } else {
            self.call(&["kill", &self.id, &sig], null_stdio())
        }
    }

    pub fn pause(&self) -> Result<()> {
        self.call(&["pause", &self.id], null_stdio())
    }

    pub fn resume(&self) -> Result<()> {
        self.call(&["resume", &self.id], null_stdio())
    }

    /// Change the container's cgroup limits (`update --resources FILE`).
    pub fn update(&self, resources: &serde_json::Value) -> Result<()> {
        let path = "resources.json";
        fs::write(path, serde_json::to_vec(resources).unwrap_or_default())
            .map_err(|source| RuntimeError::Io { what: "resources file", source })?;
        let r = self.call(&["update", "--resources", path, &self.id], null_stdio());
        let _ = fs::remove_file(path);
        r
    }

    /// The pids of the container's processes.
    pub fn ps(&self) -> Result<Vec<u32>> {
        // The list goes to a file: a pipe could fill up and stall the runtime.
        let out_path = "pids.json";
        let out = fs::File::create(out_path).map_err(|source| RuntimeError::Io { what: "pids file", source })?;
        let r = self.call(&["ps", "--format", "json", &self.id], [Stdio::null(), Stdio::from(out), Stdio::null()]);
        let data = fs::read(out_path).unwrap_or_default();
        let _ = fs::remove_file(out_path);
        r?;
        Ok(serde_json::from_slice::<Option<Vec<u32>>>(&data).ok().flatten().unwrap_or_default())
    }

    /// Delete the container's state, killing what still runs.
    pub fn delete(&self) -> Result<()> {
        self.call(&["delete", "--force", &self.id], null_stdio())
    }

    /// Run the runtime with `args` after the global flags, bounded by the configured timeout.
    fn call(&self, args: &[&str], stdio: [Stdio; 3]) -> Result<()> {
        let log_start = fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let log_s = self.log.to_string_lossy().into_owned();
        let mut cmd = Command::new(&self.binary);
        cmd.args(["--root", &self.root, "--log", &log_s, "--log-format", "json"]).args(args);
        let [i, o, e] = stdio;
        cmd.stdin(i).stdout(o).stderr(e);
        let mut child = cmd.spawn().map_err(|source| RuntimeError::Spawn { runtime: self.binary.clone(), source })?;
        if !wait_exit(child.id(), self.timeout) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(RuntimeError::Timeout { runtime: self.binary.clone(), verb: args[0].to_owned(), timeout: self.timeout });
        }
        let status = child.wait().map_err(|source| RuntimeError::Io { what: "waiting for the runtime", source })?;
        if status.success() {
            return Ok(());
        }
        let why = last_error(&self.log, log_start).unwrap_or_else(|| format!("exited with {status}"));
        Err(RuntimeError::Failed { runtime: self.binary.clone(), verb: args[0].to_owned(), why })
    }
}

/// The pid the runtime wrote to `pid_file`.
pub fn read_pid_file(pid_file: &str) -> Result<u32> {
    fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|&p| p > 0 && p <= i32::MAX as u32)
        .ok_or(RuntimeError::NoPid)
}

/// The socket over which the runtime sends a new terminal's master side
/// (`--console-socket`).
pub struct ConsoleSocket(UnixListener);

impl ConsoleSocket {
    /// Bind at `path`, replacing what is there.
    pub fn bind(path: &str) -> Result<Self> {
        let _ = fs::remove_file(path);
        UnixListener::bind(path).map(ConsoleSocket).map_err(|source| RuntimeError::Io { what: "console socket", source })
    }

    /// Take the terminal the runtime sent.
    pub fn receive(&self) -> Result<OwnedFd> {
        receive_fd(&self.0).map_err(|source| RuntimeError::Io { what: "receiving the terminal from the runtime", source })
    }
}

fn receive_fd(listener: &UnixListener) -> io::Result<OwnedFd> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    use std::mem::MaybeUninit;
    listener.set_nonblocking(true)?;
    let (conn, _) = listener.accept()?;
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let mut buf = [0u8; 4096];
    rustix::net::recvmsg(&conn, &mut [io::IoSliceMut::new(&mut buf)], &mut cmsg, RecvFlags::CMSG_CLOEXEC)?;
    for msg in cmsg.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = msg {
            if let Some(fd) = fds.next() {
                return Ok(fd);
            }
        }
    }
    Err(io::Error::other("no terminal received"))
}

/// Wait up to `timeout` for child `pid` to exit, without reaping it.
fn wait_exit(pid: u32, timeout: Duration) -> bool {
    let Some(pid) = Pid::from_raw(pid as i32) else { return true };
    let Ok(fd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) else { return true };
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let ts = rustix::event::Timespec { tv_sec: left.as_secs() as i64, tv_nsec: left.subsec_nanos() as i64 };
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(n) if n > 0 => return true,
            Ok(_) => return false,
            Err(Errno::INTR) => continue,
            Err(_) => return true,
        }
    }
}

/// The last error message the runtime logged after byte `from` of its log.
fn last_error(log: &Path, from: u64) -> Option<String> {
    let data = fs::read(log).ok()?;
    let tail = data.get(from as usize..)?;
    let mut last = None;
    for line in tail.split(|&b| b == b'\n') {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else { continue };
        let level = v.get("level").and_then(|l| l.as_str()).unwrap_or("");
        if matches!(level, "error" | "fatal" | "panic") {
            if let Some(m) = v.get("msg").and_then(|m| m.as_str()) {
                last = Some(m.to_owned());
            }
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_error_the_runtime_logged_after_the_call_began_is_its_message() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("runtime.log");
        let before = "{\"level\":\"error\",\"msg\":\"an older call\"}\n";
        let during = "{\"level\":\"info\",\"msg\":\"starting\"}\nnot json\n{\"level\":\"error\",\"msg\":\"first\"}\n{\"level\":\"fatal\",\"msg\":\"exec: \\\"nope\\\": executable file not found\"}\n{\"level\":\"warning\",\"msg\":\"later\"}\n";
        fs::write(&log, format!("{before}{during}")).unwrap();
        assert_eq!(last_error(&log, before.len() as u64).as_deref(), Some("exec: \"nope\": executable file not found"));
        assert_eq!(last_error(&log, (before.len() + during.len()) as u64), None);
        assert_eq!(last_error(&dir.path().join("missing"), 0), None);
    }

    #[test]
    fn a_runtime_saying_the_container_is_gone_is_told_apart() {
        let failed = |why: &str| RuntimeError::Failed { runtime: "runc".into(), verb: "delete".into(), why: why.into() };
        assert!(failed("container \"x\" does not exist").is_gone());
        assert!(failed("open /run/runc/x/state.json: No such file or directory").is_gone());
        assert!(!failed("permission denied").is_gone());
        assert!(!RuntimeError::Timeout { runtime: "runc".into(), verb: "delete".into(), timeout: Duration::from_secs(1) }.is_gone());
    }

    #[test]
    fn runtime_errors_keep_their_kinds_and_messages() {
        let e = RuntimeError::Failed { runtime: "crun".into(), verb: "exec".into(), why: "exited with exit status: 1".into() };
        assert_eq!(ShimError::from(e), ShimError { kind: ErrorKind::Runtime, message: "crun exec: exited with exit status: 1".into() });
        let e = RuntimeError::Timeout { runtime: "runc".into(), verb: "kill".into(), timeout: Duration::from_secs(30) };
        assert_eq!(ShimError::from(e), ShimError { kind: ErrorKind::Timeout, message: "runc kill did not finish within 30s".into() });
        assert_eq!(ShimError::from(RuntimeError::NoPid).kind, ErrorKind::Runtime);
        let e = RuntimeError::Io { what: "pids file", source: io::Error::other("disk full") };
        assert_eq!(ShimError::from(e), ShimError { kind: ErrorKind::Internal, message: "pids file: disk full".into() });
    }

    #[test]
    fn a_pid_file_must_hold_a_positive_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        fs::write(path("good"), "1234\n").unwrap();
        fs::write(path("zero"), "0").unwrap();
        fs::write(path("junk"), "pid").unwrap();
        fs::write(path("huge"), "4294967295").unwrap();
        assert_eq!(read_pid_file(&path("good")).unwrap(), 1234);
        for bad in ["zero", "junk", "huge", "missing"] {
            assert!(matches!(read_pid_file(&path(bad)), Err(RuntimeError::NoPid)), "{bad}");
        }
    }
}
