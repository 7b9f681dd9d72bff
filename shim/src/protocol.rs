//! What the agent and a shim say to each other over the shim's socket
//! (`<bundle>/shim.sock`, a path socket with mode 0600).
//!
//! Each connection starts with one request: a JSON object on one line. Most
//! get one JSON response line and the connection is done. Three change the
//! connection: `wait` answers only when the process has exited; `subscribe`
//! turns it into a stream of [`Event`] lines; `attach` turns it into a stream
//! of frames (see [`frame`]).

use serde::{Deserialize, Serialize};

/// File names inside a task's bundle directory.
pub mod files {
    /// The shim's configuration, written by the agent before it starts the shim.
    pub const CONFIG: &str = "shim.json";
    /// The OCI runtime spec.
    pub const SPEC: &str = "config.json";
    pub const ROOTFS: &str = "rootfs";
    pub const SOCKET: &str = "shim.sock";
    /// The init's exit status ([`super::ExitRecord`]), written when it exits.
    pub const INIT_EXIT: &str = "init.exit";
    pub const INIT_PID: &str = "init.pid";
    /// The shim's own pid, written when it is ready.
    pub const SHIM_PID: &str = "shim.pid";
    /// The OCI runtime's log (JSON lines); errors are read from here.
    pub const RUNTIME_LOG: &str = "runtime.log";
    /// The shim's own diagnostics (its stderr).
    pub const SHIM_LOG: &str = "shim.log";
    /// The line the shim prints on stdout once it serves.
    pub const READY: &str = "ready";
}

/// How to assemble the container's root filesystem at `<bundle>/rootfs`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RootfsMount {
    /// "overlay" or "bind".
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

/// The shim's configuration (`shim.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimConfig {
    /// The container id, also its id for the OCI runtime.
    pub id: String,
    pub namespace: String,
    /// The OCI runtime binary.
    pub runtime: String,
    /// The runtime's state directory (`--root`).
    pub runtime_root: String,
    /// Run the runtime in a mount namespace where the cgroup2 mount at
    /// `/sys/fs/cgroup/unified` is hidden (for runtimes that refuse a hybrid
    /// cgroup layout, such as crun 1.8).
    #[serde(default)]
    pub hide_cgroup2: bool,
    pub rootfs: Vec<RootfsMount>,
    /// The container's CRI log file and its rotation.
    pub log_path: String,
    pub log_max_size: u64,
    pub log_max_files: u32,
    /// The init has a terminal / keeps stdin open.
    pub tty: bool,
    pub stdin: bool,
    /// Bound on each call of the OCI runtime, in seconds.
    #[serde(default = "default_runtime_timeout")]
    pub runtime_timeout_secs: u64,
}

fn default_runtime_timeout() -> u64 {
    30
}

/// One request line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The state of the init and every exec.
    State,
    /// Start the init (`exec_id` empty) or a created exec.
    Start {
        #[serde(default)]
        exec_id: String,
    },
    /// Register an extra process; `process` is an OCI runtime spec `process` object.
    Exec {
        exec_id: String,
        process: serde_json::Value,
        tty: bool,
        stdin: bool,
    },
    Kill {
        #[serde(default)]
        exec_id: String,
        signal: i32,
        #[serde(default)]
        all: bool,
    },
    /// Answered when the process has exited.
    Wait {
        #[serde(default)]
        exec_id: String,
    },
    /// Delete an exec, or (empty `exec_id`) the task: the runtime's state and
    /// the rootfs mount go, and the shim exits after answering.
    Delete {
        #[serde(default)]
        exec_id: String,
        #[serde(default)]
        force: bool,
    },
    Pause,
    Resume,
    /// Pids of the container's processes, from the runtime.
    Pids,
    Resize {
        #[serde(default)]
        exec_id: String,
        width: u16,
        height: u16,
    },
    CloseStdin {
        #[serde(default)]
        exec_id: String,
    },
    /// Stream the process's output as frames; take stdin frames.
    Attach {
        #[serde(default)]
        exec_id: String,
    },
    /// Stream [`Event`]s.
    Subscribe,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    /// The process is not in a state that allows this (start a running task, exec into a stopped one).
    FailedPrecondition,
    InvalidArgument,
    /// The OCI runtime failed; the message is its own.
    Runtime,
    /// The OCI runtime did not finish in time (it was killed).
    Timeout,
    Internal,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShimError {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProcessStatus {
    Created,
    Running,
    Paused,
    Exited,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessState {
    /// Empty for the init.
    pub exec_id: String,
    pub pid: u32,
    pub status: ProcessStatus,
    pub exit_code: i32,
    /// Nanoseconds since the Unix epoch; 0 when not yet.
    pub started_at: i64,
    pub exited_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TaskState {
    pub init: ProcessState,
    pub execs: Vec<ProcessState>,
    /// The shim's pid.
    pub shim_pid: u32,
}

/// The answer to a request: `error` or the fields the request fills.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Response {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ShimError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<TaskState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<Vec<u32>>,
}

impl Response {
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        Response { error: Some(ShimError { kind, message: message.into() }), ..Default::default() }
    }
}

/// The init's exit, as written to [`files::INIT_EXIT`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitRecord {
    pub pid: u32,
    pub exit_code: i32,
    pub started_at: i64,
    pub exited_at: i64,
}

/// A line of a `subscribe` stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Started {
        exec_id: String,
        pid: u32,
    },
    Exited {
        exec_id: String,
        pid: u32,
        exit_code: i32,
        #[serde(default)]
        started_at: i64,
        exited_at: i64,
    },
    /// The kernel's OOM killer killed a process of the container.
    Oom,
    Paused,
    Resumed,
}

/// Attach frames: a 5-byte header (kind, then the payload length as a
/// big-endian u32) and the payload.
pub mod frame {
    /// Shim to agent: output.
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    /// Shim to agent: the process exited and its output is drained; the
    /// payload is the exit code (big-endian i32).
    pub const EXIT: u8 = 3;
    /// Agent to shim: input bytes.
    pub const STDIN: u8 = 10;
    /// Agent to shim: end of input.
    pub const CLOSE_STDIN: u8 = 11;
    /// Agent to shim: terminal size (width, height as big-endian u16).
    pub const RESIZE: u8 = 12;
    /// Largest payload either side sends.
    pub const MAX_PAYLOAD: usize = 64 * 1024;

    pub fn header(kind: u8, len: usize) -> [u8; 5] {
        let l = (len as u32).to_be_bytes();
        [kind, l[0], l[1], l[2], l[3]]
    }

    /// Parse a header; None when the length is over [`MAX_PAYLOAD`].
    pub fn parse_header(h: &[u8; 5]) -> Option<(u8, usize)> {
        let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
        (len <= MAX_PAYLOAD).then_some((h[0], len))
    }
}
