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
    /// Stay in the host's mount namespace (its root mounted there, and unmounted by the
    /// shim when it ends): a container mount that propagates back to the host (rshared)
    /// needs it. Ignored with `hide_cgroup2`.
    #[serde(default)]
    pub host_mounts: bool,
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
    /// Change the running container's cgroup limits: `resources` is an OCI runtime spec
    /// `linux.resources` object (the runtime's `update --resources`).
    Update {
        resources: serde_json::Value,
    },
    /// Close the log file and open its path again (created if it was moved away): what
    /// follows a rotation made by someone else (the kubelet's).
    ReopenLog,
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
        /// Nanoseconds since the Unix epoch (0 from a shim before 0.2).
        #[serde(default)]
        started_at: i64,
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
/// big-endian u32) and the payload. [`Frame`] is the typed form.
pub mod frame {
    /// Shim to agent: output.
    pub(crate) const STDOUT: u8 = 1;
    pub(crate) const STDERR: u8 = 2;
    /// Shim to agent: the process exited and its output is drained; the
    /// payload is the exit code (big-endian i32).
    pub(crate) const EXIT: u8 = 3;
    /// Agent to shim: input bytes.
    pub(crate) const STDIN: u8 = 10;
    /// Agent to shim: end of input.
    pub(crate) const CLOSE_STDIN: u8 = 11;
    /// Agent to shim: terminal size (width, height as big-endian u16).
    pub(crate) const RESIZE: u8 = 12;
    /// Largest payload either side sends.
    pub const MAX_PAYLOAD: usize = 64 * 1024;
    /// Bytes of a header.
    pub const HEADER_LEN: usize = 5;

    pub(crate) fn header(kind: u8, len: usize) -> [u8; 5] {
        let l = (len as u32).to_be_bytes();
        [kind, l[0], l[1], l[2], l[3]]
    }

    /// Parse a header; None when the length is over [`MAX_PAYLOAD`].
    pub fn parse_header(h: &[u8; 5]) -> Option<(u8, usize)> {
        let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
        (len <= MAX_PAYLOAD).then_some((h[0], len))
    }
}

/// One attach frame, typed: what the constants in [`frame`] name, with its
/// payload decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Shim to agent: output.
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// Shim to agent: the process exited (with this code) and its output is drained.
    Exit(i32),
    /// Agent to shim: input bytes.
    Stdin(Vec<u8>),
    /// Agent to shim: end of input.
    CloseStdin,
    /// Agent to shim: the terminal's size.
    Resize {
        width: u16,
        height: u16,
    },
}

/// A frame that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A kind byte that no frame has.
    UnknownKind(u8),
    /// A payload whose length does not fit its kind: an exit code and a
    /// terminal size are 4 bytes, the end of input is empty.
    BadLength { kind: u8, len: usize },
    /// A payload over [`frame::MAX_PAYLOAD`].
    TooLong(usize),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::UnknownKind(kind) => write!(f, "unknown frame kind {kind}"),
            FrameError::BadLength { kind, len } => write!(f, "a frame of kind {kind} cannot carry {len} bytes"),
            FrameError::TooLong(len) => write!(f, "a frame of {len} bytes is over the limit of {}", frame::MAX_PAYLOAD),
        }
    }
}

impl std::error::Error for FrameError {}

impl Frame {
    /// The kind byte of the header.
    pub fn kind(&self) -> u8 {
        match self {
            Frame::Stdout(_) => frame::STDOUT,
            Frame::Stderr(_) => frame::STDERR,
            Frame::Exit(_) => frame::EXIT,
            Frame::Stdin(_) => frame::STDIN,
            Frame::CloseStdin => frame::CLOSE_STDIN,
            Frame::Resize { .. } => frame::RESIZE,
        }
    }

    /// The frame's bytes, header included. Data longer than
    /// [`frame::MAX_PAYLOAD`] becomes several frames of the same kind, which
    /// mean the same to the reader.
    pub fn encode(&self) -> Vec<u8> {
        let fixed: [u8; 4];
        let payload: &[u8] = match self {
            Frame::Stdout(data) | Frame::Stderr(data) | Frame::Stdin(data) => data,
            Frame::Exit(code) => {
                fixed = code.to_be_bytes();
                &fixed
            }
            Frame::CloseStdin => &[],
            Frame::Resize { width, height } => {
                let (w, h) = (width.to_be_bytes(), height.to_be_bytes());
                fixed = [w[0], w[1], h[0], h[1]];
                &fixed
            }
        };
        let kind = self.kind();
        let mut out = Vec::with_capacity(payload.len() + frame::HEADER_LEN);
        let mut chunks = payload.chunks(frame::MAX_PAYLOAD);
        // An empty payload is still one frame.
        let first = chunks.next().unwrap_or_default();
        for chunk in std::iter::once(first).chain(chunks) {
            out.extend(frame::header(kind, chunk.len()));
            out.extend_from_slice(chunk);
        }
        out
    }

    /// The frame of this kind with this payload (read after its header).
    pub fn from_parts(kind: u8, payload: Vec<u8>) -> Result<Frame, FrameError> {
        if payload.len() > frame::MAX_PAYLOAD {
            return Err(FrameError::TooLong(payload.len()));
        }
        let bad_length = || FrameError::BadLength { kind, len: payload.len() };
        Ok(match kind {
            frame::STDOUT => Frame::Stdout(payload),
            frame::STDERR => Frame::Stderr(payload),
            frame::STDIN => Frame::Stdin(payload),
            frame::EXIT => Frame::Exit(i32::from_be_bytes(payload.as_slice().try_into().map_err(|_| bad_length())?)),
            frame::CLOSE_STDIN if payload.is_empty() => Frame::CloseStdin,
            frame::CLOSE_STDIN => return Err(bad_length()),
            frame::RESIZE => match payload[..] {
                [w0, w1, h0, h1] => Frame::Resize { width: u16::from_be_bytes([w0, w1]), height: u16::from_be_bytes([h0, h1]) },
                _ => return Err(bad_length()),
            },
            other => return Err(FrameError::UnknownKind(other)),
        })
    }

    /// Decode the frame at the start of `buf`: the frame and the number of
    /// bytes it took, or `None` when `buf` holds only part of it.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        let Some(header) = buf.first_chunk::<{ frame::HEADER_LEN }>() else { return Ok(None) };
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let Some((kind, len)) = frame::parse_header(header) else { return Err(FrameError::TooLong(len)) };
        let Some(payload) = buf.get(frame::HEADER_LEN..frame::HEADER_LEN + len) else { return Ok(None) };
        Ok(Some((Frame::from_parts(kind, payload.to_vec())?, frame::HEADER_LEN + len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_frame() -> Vec<Frame> {
        vec![
            Frame::Stdout(b"out\n".to_vec()),
            Frame::Stderr(b"err\n".to_vec()),
            Frame::Exit(-1),
            Frame::Exit(137),
            Frame::Stdin(b"in".to_vec()),
            Frame::Stdin(Vec::new()),
            Frame::CloseStdin,
            Frame::Resize { width: 80, height: 24 },
            Frame::Resize { width: u16::MAX, height: 0 },
        ]
    }

    #[test]
    fn every_frame_decodes_to_what_was_encoded() {
        for f in every_frame() {
            let bytes = f.encode();
            assert_eq!(Frame::decode(&bytes), Ok(Some((f.clone(), bytes.len()))), "{f:?}");
        }
    }

    #[test]
    fn frames_keep_the_byte_layout_the_agent_writes_by_hand() {
        assert_eq!(Frame::Exit(1).encode(), [frame::EXIT, 0, 0, 0, 4, 0, 0, 0, 1]);
        assert_eq!(Frame::Resize { width: 0x0102, height: 0x0304 }.encode(), [frame::RESIZE, 0, 0, 0, 4, 1, 2, 3, 4]);
        assert_eq!(Frame::CloseStdin.encode(), [frame::CLOSE_STDIN, 0, 0, 0, 0]);
        assert_eq!(Frame::Stdout(b"hi".to_vec()).encode(), [&frame::header(frame::STDOUT, 2)[..], b"hi"].concat());
    }

    #[test]
    fn frames_follow_one_another_in_a_buffer() {
        let frames = every_frame();
        let buf: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        let mut rest = &buf[..];
        let mut got = Vec::new();
        while let Some((f, n)) = Frame::decode(rest).unwrap() {
            got.push(f);
            rest = &rest[n..];
        }
        assert_eq!(got, frames);
        assert!(rest.is_empty());
    }

    #[test]
    fn a_partial_frame_decodes_to_nothing_yet() {
        let bytes = Frame::Stdout(b"hello".to_vec()).encode();
        for end in 0..bytes.len() {
            assert_eq!(Frame::decode(&bytes[..end]), Ok(None), "{end} bytes");
        }
    }

    #[test]
    fn data_over_the_payload_limit_is_encoded_as_several_frames() {
        let data: Vec<u8> = (0..frame::MAX_PAYLOAD * 2 + 3).map(|i| i as u8).collect();
        let bytes = Frame::Stdin(data.clone()).encode();
        let mut rest = &bytes[..];
        let mut sizes = Vec::new();
        let mut joined = Vec::new();
        while let Some((f, n)) = Frame::decode(rest).unwrap() {
            let Frame::Stdin(part) = f else { panic!("{f:?}") };
            sizes.push(part.len());
            joined.extend(part);
            rest = &rest[n..];
        }
        assert_eq!(sizes, [frame::MAX_PAYLOAD, frame::MAX_PAYLOAD, 3]);
        assert_eq!(joined, data);
    }

    #[test]
    fn an_unknown_kind_is_refused() {
        let mut bytes = frame::header(99, 1).to_vec();
        bytes.push(0);
        assert_eq!(Frame::decode(&bytes), Err(FrameError::UnknownKind(99)));
        assert_eq!(Frame::from_parts(0, Vec::new()), Err(FrameError::UnknownKind(0)));
    }

    #[test]
    fn a_payload_of_the_wrong_length_for_its_kind_is_refused() {
        for (kind, len) in
            [(frame::EXIT, 0), (frame::EXIT, 3), (frame::EXIT, 5), (frame::RESIZE, 2), (frame::RESIZE, 8), (frame::CLOSE_STDIN, 1)]
        {
            let bytes = [&frame::header(kind, len)[..], &vec![7; len]].concat();
            assert_eq!(Frame::decode(&bytes), Err(FrameError::BadLength { kind, len }));
        }
    }

    #[test]
    fn a_header_over_the_payload_limit_is_refused_before_its_payload_arrives() {
        let bytes = frame::header(frame::STDOUT, frame::MAX_PAYLOAD + 1);
        assert_eq!(Frame::decode(&bytes), Err(FrameError::TooLong(frame::MAX_PAYLOAD + 1)));
        assert_eq!(Frame::from_parts(frame::STDIN, vec![0; frame::MAX_PAYLOAD + 1]), Err(FrameError::TooLong(frame::MAX_PAYLOAD + 1)));
    }

    #[test]
    fn frame_errors_read_as_sentences() {
        assert_eq!(FrameError::UnknownKind(9).to_string(), "unknown frame kind 9");
        assert_eq!(FrameError::BadLength { kind: 3, len: 2 }.to_string(), "a frame of kind 3 cannot carry 2 bytes");
    }
}
