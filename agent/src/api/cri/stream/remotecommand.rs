//! Kubernetes' remote-command protocol (Exec and Attach) over either transport: the client's
//! stdin and terminal sizes go to the process, its output comes back on stdout and stderr,
//! and the error stream says how it ended (from `v4.channel.k8s.io` on, a JSON `Status`:
//! `Success`, or `Failure` with reason `NonZeroExitCode` and the code as a cause; before,
//! the text of the error, or nothing for success).

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::spdy_session::{self, Incoming};
use super::{ws, Writer};
use crate::runtime::{AttachInput, AttachOutput, Proc};
use crate::service::streams::{StreamIo, StreamRequest};
use crate::service::tasks::ExecRequest;
use crate::service::Services;

/// How long a SPDY client has to open the streams its request named (the kubelet's bound).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The streams of one session, whatever carries them.
struct CommandIo {
    stdin: Option<mpsc::Receiver<Vec<u8>>>,
    resize: Option<mpsc::Receiver<Vec<u8>>>,
    stdout: Option<Writer>,
    stderr: Option<Writer>,
    error: Writer,
    version: u8,
    gone: watch::Receiver<bool>,
}

fn io_of(req: &StreamRequest) -> StreamIo {
    match req {
        StreamRequest::Exec { io, .. } | StreamRequest::Attach { io, .. } => *io,
        StreamRequest::PortForward { .. } => StreamIo::default(),
    }
}

/// Serve a session over SPDY: wait for the streams the request named (each accepted as it
/// comes), then run it.
pub(super) async fn serve_spdy<S>(services: &Services, req: StreamRequest, conn: S, version: u8) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let opts = io_of(&req);
    let mut session = spdy_session::serve(conn);
    let mut wanted: Vec<&str> = vec!["error"];
    if opts.stdin {
        wanted.push("stdin");
    }
    if opts.stdout {
        wanted.push("stdout");
    }
    if opts.stderr {
        wanted.push("stderr");
    }
    if opts.tty && version >= 3 {
        wanted.push("resize");
    }
    let mut got: Vec<(String, Incoming)> = Vec::new();
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    while got.len() < wanted.len() {
        let s = match tokio::time::timeout_at(deadline, session.streams.recv()).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "the client left before opening its streams")),
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "the client did not open its streams in time")),
        };
        let kind = spdy_session_header(&s, "streamtype").to_ascii_lowercase();
        if !wanted.contains(&kind.as_str()) || got.iter().any(|(k, _)| *k == kind) {
            let _ = s.writer.reset(super::spdy::RST_PROTOCOL_ERROR).await;
            continue;
        }
        s.writer.reply().await?;
        got.push((kind, s));
    }
    let mut take = |kind: &str| got.iter().position(|(k, _)| k == kind).map(|i| got.swap_remove(i).1);
    let error = take("error").expect("the error stream is always wanted");
    let stdin = take("stdin");
    let stdout = take("stdout");
    let stderr = take("stderr");
    let resize = take("resize");
    // Nothing the client sends on the output streams matters; their data is dropped.
    let io = CommandIo {
        stdin: stdin.map(|s| s.data),
        resize: resize.map(|s| s.data),
        stdout: stdout.map(|s| Writer::Spdy(s.writer)),
        stderr: stderr.map(|s| Writer::Spdy(s.writer)),
        error: Writer::Spdy(error.writer),
        version,
        gone: session.gone.clone(),
    };
    drop(session);
    run(services, req, io).await;
    Ok(())
}

fn spdy_session_header(s: &Incoming, name: &str) -> String {
    super::spdy::header(&s.headers, name).unwrap_or("").to_owned()
}

/// Serve a session over a WebSocket: channels stdin 0, stdout 1, stderr 2, error 3, resize 4.
pub(super) async fn serve_ws<S>(services: &Services, req: StreamRequest, conn: S, protocol: &str, version: u8) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let opts = io_of(&req);
    let framing = ws::Framing { base64: protocol.contains("base64"), close_signal: version >= 5 };
    let mut ch = ws::serve(conn, &[opts.stdin, false, false, false, opts.tty], framing).await;
    let writer = |i: usize| Writer::Ws(ch.writers[i].clone());
    let io = CommandIo {
        stdin: ch.inputs[0].take(),
        resize: ch.inputs[4].take(),
        stdout: opts.stdout.then(|| writer(1)),
        stderr: opts.stderr.then(|| writer(2)),
        error: writer(3),
        version,
        gone: ch.gone.clone(),
    };
    drop(ch.writers);
    // The client learns the session is up from an empty message on its first output.
    let first = io.stdout.as_ref().or(io.stderr.as_ref()).unwrap_or(&io.error);
    first.write(&[]).await?;
    run(services, req, io).await;
    Ok(())
}

/// How a session ended.
enum Outcome {
    Success,
    /// The command exited with this non-zero code.
    Exit(i32),
    Failed(String),
}

/// Run an exec or an attach on `io` to its end, and say how it ended on the error stream.
async fn run(services: &Services, req: StreamRequest, mut io: CommandIo) {
    let outcome = match relay(services, &req, &mut io).await {
        Ok(o) => o,
        Err(e) => Outcome::Failed(match &req {
            StreamRequest::Attach { .. } => format!("error attaching to container: {e}"),
            _ => format!("error executing command in container: {e}"),
        }),
    };
    for w in [&io.stdout, &io.stderr].into_iter().flatten() {
        w.close().await;
    }
    let _ = io.error.write(&status(&outcome, io.version, &req)).await;
    io.error.close().await;
}

/// The error stream's message for `outcome` in protocol `version`.
fn status(outcome: &Outcome, version: u8, req: &StreamRequest) -> Vec<u8> {
    let cmd = match req {
        StreamRequest::Exec { cmd, .. } => format!("[{}]", cmd.join(" ")),
        _ => String::new(),
    };
    if version < 4 {
        return match outcome {
            Outcome::Success => Vec::new(),
            Outcome::Exit(code) => {
                format!("command terminated with non-zero exit code: error executing command {cmd}, exit code {code}").into_bytes()
            }
            Outcome::Failed(m) => m.clone().into_bytes(),
        };
    }
    let v = match outcome {
        Outcome::Success => serde_json::json!({"metadata": {}, "status": "Success"}),
        Outcome::Exit(code) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command {cmd}, exit code {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Outcome::Failed(m) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": m,
            "reason": "InternalError",
            "details": {"causes": [{"message": m}]},
            "code": 500,
        }),
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

/// A terminal size as the resize stream sends it: `{"Width":80,"Height":24}`.
#[derive(serde::Deserialize)]
struct Size {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

async fn relay(services: &Services, req: &StreamRequest, io: &mut CommandIo) -> Result<Outcome, crate::service::Error> {
    let tasks = &services.tasks;
    // Whether the client's end of input is the process's (an exec's always is).
    let (ns, id, proc, is_exec, closes_stdin) = match req {
        StreamRequest::Exec { ns, container, cmd, io: o } => {
            let r = ExecRequest { args: cmd.clone(), tty: o.tty, stdin: o.stdin, ..Default::default() };
            let exec_id = tasks.exec(ns, container, r).await?;
            (ns.as_str(), container.as_str(), Proc::Exec(exec_id), true, true)
        }
        StreamRequest::Attach { ns, container, stdin_once, .. } => (ns.as_str(), container.as_str(), Proc::Init, false, *stdin_once),
        StreamRequest::PortForward { .. } => return Err(crate::service::Error::Internal("not a command session".into())),
    };
    let (in_tx, in_rx) = mpsc::channel::<Vec<AttachInput>>(16);
    let (mut stdin, mut resize) = (io.stdin.take(), io.resize.take());
    tokio::spawn(async move {
        while stdin.is_some() || resize.is_some() {
            let input = tokio::select! {
                d = async { stdin.as_mut().expect("guarded").recv().await }, if stdin.is_some() => match d {
                    Some(d) => AttachInput::Stdin(d),
                    None => {
                        stdin = None;
                        // The client's end of stdin: the exec reads EOF. An attached client
                        // that stops sending leaves the container's stdin as it is, unless
                        // the container was made `stdin_once`.
                        if !closes_stdin {
                            continue;
                        }
                        AttachInput::CloseStdin
                    }
                },
                r = async { resize.as_mut().expect("guarded").recv().await }, if resize.is_some() => match r {
                    Some(json) => match serde_json::Deserializer::from_slice(&json).into_iter::<Size>().last() {
                        Some(Ok(s)) => AttachInput::Resize { width: s.width, height: s.height },
                        _ => continue,
                    },
                    None => {
                        resize = None;
                        continue;
                    }
                },
            };
            if in_tx.send(vec![input]).await.is_err() {
                return;
            }
        }
    });
    let result = async {
        let mut frames = tasks.attach(ns, id, &proc, ReceiverStream::new(in_rx)).await?;
        if is_exec {
            tasks.start(ns, id, &proc).await?;
        }
        let mut gone = io.gone.clone();
        loop {
            let next = tokio::select! {
                f = frames.recv() => f,
                () = super::until(&mut gone) => return Ok(client_gone(tasks, ns, id, &proc, is_exec).await),
            };
            match next {
                Some(Ok(AttachOutput::Stdout(d))) => {
                    if !pass(&io.stdout, &d).await {
                        return Ok(client_gone(tasks, ns, id, &proc, is_exec).await);
                    }
                }
                Some(Ok(AttachOutput::Stderr(d))) => {
                    if !pass(&io.stderr, &d).await {
                        return Ok(client_gone(tasks, ns, id, &proc, is_exec).await);
                    }
                }
                Some(Ok(AttachOutput::Exit(code))) => {
                    return Ok(if code == 0 || !is_exec { Outcome::Success } else { Outcome::Exit(code) })
                }
                Some(Err(e)) => return Err(e),
                None if is_exec => {
                    let exit = tasks.wait(ns, id, &proc, Some(Duration::from_secs(5))).await?;
                    return Ok(if exit.exit_code == 0 { Outcome::Success } else { Outcome::Exit(exit.exit_code) });
                }
                None => return Ok(Outcome::Success),
            }
        }
    }
    .await;
    if is_exec {
        // The exec's record goes whatever happened (killed first if it still runs).
        if let Err(e) = tasks.delete(ns, id, &proc, true).await {
            tracing::debug!(container = %id, error = %e, "removing a streamed exec");
        }
    }
    result
}

/// Pass output to the client's stream (if it asked for it); false when the connection
/// takes no more (the client is gone).
async fn pass(w: &Option<Writer>, data: &[u8]) -> bool {
    match w {
        Some(w) => w.write(data).await.is_ok(),
        None => true,
    }
}

/// The client left: an exec is killed (nobody can see it any more); an attached container
/// goes on.
async fn client_gone(tasks: &crate::service::tasks::TaskService, ns: &str, id: &str, proc: &Proc, is_exec: bool) -> Outcome {
    if is_exec {
        let _ = tasks.kill(ns, id, proc, "KILL", false).await;
    }
    Outcome::Success
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::streams::StreamIo;

    fn exec() -> StreamRequest {
        StreamRequest::Exec {
            ns: "k8s.io".into(),
            container: "c".into(),
            cmd: vec!["sh".into(), "-c".into(), "exit 3".into()],
            io: StreamIo::default(),
        }
    }

    #[test]
    fn statuses_as_each_version_writes_them() {
        assert_eq!(status(&Outcome::Success, 4, &exec()), br#"{"metadata":{},"status":"Success"}"#);
        assert!(status(&Outcome::Success, 3, &exec()).is_empty(), "before v4, success is silence");
        let v: serde_json::Value = serde_json::from_slice(&status(&Outcome::Exit(3), 5, &exec())).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        assert_eq!(v["message"], "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3");
        let text = String::from_utf8(status(&Outcome::Failed("boom".into()), 2, &exec())).unwrap();
        assert_eq!(text, "boom");
        let v: serde_json::Value = serde_json::from_slice(&status(&Outcome::Failed("boom".into()), 4, &exec())).unwrap();
        assert_eq!((v["reason"].as_str(), v["code"].as_i64()), (Some("InternalError"), Some(500)));
    }

    #[test]
    fn protocol_versions() {
        assert_eq!(super::super::command_version("v5.channel.k8s.io"), 5);
        assert_eq!(super::super::command_version("v4.base64.channel.k8s.io"), 4);
        assert_eq!(super::super::command_version("channel.k8s.io"), 1);
        assert_eq!(super::super::command_version("base64.channel.k8s.io"), 1);
    }
}
