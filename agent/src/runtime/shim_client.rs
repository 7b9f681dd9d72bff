//! The agent's side of a shim connection: one request line, then an answer,
//! a stream of event lines, or attach frames.

use std::path::Path;
use std::time::Duration;

use berth_shim::protocol::{files, frame, Frame, FrameError, Request, Response};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::TaskError;

/// Longest event or answer line taken from a shim.
const MAX_LINE: usize = 1 << 20;

pub struct ShimConnection {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl ShimConnection {
    /// Connect to the shim of `bundle`. A socket path longer than `sun_path`
    /// holds is reached through `/proc/self/fd/<dir>/shim.sock`.
    pub async fn connect(bundle: &Path) -> Result<Self, String> {
        let path = bundle.join(files::SOCKET);
        let stream = if path.as_os_str().len() < 100 {
            UnixStream::connect(&path).await
        } else {
            let dir = rustix::fs::open(
                bundle,
                rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| format!("{}: {e}", bundle.display()))?;
            use std::os::fd::AsRawFd;
            let short = format!("/proc/self/fd/{}/{}", dir.as_raw_fd(), files::SOCKET);
            let r = UnixStream::connect(&short).await;
            drop(dir);
            r
        };
        let stream = stream.map_err(|e| format!("{}: {e}", path.display()))?;
        let (r, w) = stream.into_split();
        Ok(ShimConnection { reader: BufReader::new(r), writer: w })
    }

    /// Send a request and read its answer line; a shim error becomes a [`TaskError`].
    pub async fn request(&mut self, req: &Request, timeout: Duration) -> Result<Response, TaskError> {
        let mut line = serde_json::to_vec(req).map_err(|e| TaskError::Internal(e.to_string()))?;
        line.push(b'\n');
        let fut = async {
            self.writer.write_all(&line).await.map_err(|e| TaskError::ShimGone { id: String::new(), why: e.to_string() })?;
            match self.next_line::<Response>().await {
                Ok(Some(r)) => Ok(r),
                Ok(None) => Err(TaskError::ShimGone { id: String::new(), why: "the shim closed the connection".into() }),
                Err(e) => Err(e),
            }
        };
        let resp = tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| TaskError::Timeout(format!("the shim did not answer within {timeout:?}")))??;
        match resp.error {
            Some(e) => Err(TaskError::from_shim(e)),
            None => Ok(resp),
        }
    }

    /// The next JSON line, or None at the end of the connection.
    pub async fn next_line<T: serde::de::DeserializeOwned>(&mut self) -> Result<Option<T>, TaskError> {
        let mut buf = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
            .await
            .map_err(|e| TaskError::ShimGone { id: String::new(), why: e.to_string() })?;
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_slice(&buf).map(Some).map_err(|e| TaskError::Internal(format!("bad line from the shim: {e}")))
    }

    /// Wait until the shim closes the connection.
    pub async fn closed(&mut self) {
        let mut buf = [0u8; 256];
        while let Ok(n) = self.reader.read(&mut buf).await {
            if n == 0 {
                return;
            }
        }
    }

    /// Split into a frame reader and a frame writer.
    pub fn split(self) -> (FrameReader, FrameWriter) {
        (FrameReader { inner: self.reader }, FrameWriter { inner: self.writer })
    }
}

/// What an attached client sends to a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachInput {
    Stdin(Vec<u8>),
    /// End of input: the process reads EOF.
    CloseStdin,
    /// The terminal's size.
    Resize {
        width: u16,
        height: u16,
    },
}

/// What an attached client receives from a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachOutput {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The process exited (its output is drained) with this code.
    Exit(i32),
}

pub struct FrameReader {
    inner: BufReader<tokio::net::unix::OwnedReadHalf>,
}

impl FrameReader {
    /// The next output of the process; None at the end of the connection.
    /// Frames of kinds this agent does not know are skipped.
    pub async fn next_output(&mut self) -> std::io::Result<Option<AttachOutput>> {
        loop {
            let mut h = [0u8; frame::HEADER_LEN];
            match self.inner.read_exact(&mut h).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(e),
            }
            let (kind, len) = frame::parse_header(&h).ok_or_else(|| std::io::Error::other("oversized frame from the shim"))?;
            let mut payload = vec![0u8; len];
            self.inner.read_exact(&mut payload).await?;
            let out = match Frame::from_parts(kind, payload) {
                Ok(Frame::Stdout(data)) => AttachOutput::Stdout(data),
                Ok(Frame::Stderr(data)) => AttachOutput::Stderr(data),
                Ok(Frame::Exit(code)) => AttachOutput::Exit(code),
                // Input frames, and kinds of a newer shim, are not output.
                Ok(_) | Err(FrameError::UnknownKind(_)) => continue,
                Err(e) => return Err(std::io::Error::other(format!("bad frame from the shim: {e}"))),
            };
            return Ok(Some(out));
        }
    }
}

pub struct FrameWriter {
    inner: tokio::net::unix::OwnedWriteHalf,
}

impl FrameWriter {
    /// Send one input to the process.
    pub async fn send(&mut self, input: &AttachInput) -> std::io::Result<()> {
        let frame = match input {
            AttachInput::Stdin(data) => Frame::Stdin(data.clone()),
            AttachInput::CloseStdin => Frame::CloseStdin,
            AttachInput::Resize { width, height } => Frame::Resize { width: *width, height: *height },
        };
        self.inner.write_all(&frame.encode()).await
    }
}
