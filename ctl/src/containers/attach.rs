//! Attaching: the local terminal and standard input on one side, a task's
//! attach stream on the other (`run`, `start -a`, `exec`, `attach`).

use std::io::{IsTerminal, Write};

use anyhow::Result;
use berth_api::v1;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::Conn;

/// docker's default detach keys: Ctrl-P Ctrl-Q.
pub const DEFAULT_DETACH_KEYS: &str = "ctrl-p,ctrl-q";

/// `--detach-keys`: comma-separated keys, each a character or `ctrl-X`
/// (X a letter, or one of `@[\\]^_`), as docker takes them. An empty
/// string turns detaching off.
pub fn parse_detach_keys(s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for k in s.split(',').filter(|k| !k.is_empty()) {
        let b = match k.strip_prefix("ctrl-") {
            Some(c) if c.len() == 1 => {
                let c = c.as_bytes()[0].to_ascii_uppercase();
                if !(b'@'..=b'_').contains(&c) {
                    anyhow::bail!("invalid detach key {k:?}: ctrl- takes a letter or one of @[\\]^_");
                }
                c - b'@'
            }
            None if k.len() == 1 && k.is_ascii() => k.as_bytes()[0],
            _ => anyhow::bail!("invalid detach key {k:?}: use a character or ctrl-X, comma-separated (ctrl-p,ctrl-q)"),
        };
        out.push(b);
    }
    Ok(out)
}

/// How an attachment ended: the process's exit code, or the user detached
/// (the process goes on).
pub type Ended = Option<i32>;

/// Create the task (unless `exec_id` names an exec), attach, start, and relay
/// stdio until the process exits (its exit code) or the user detaches (None).
pub async fn run_attached(conn: &Conn, id: &str, exec_id: &str, stdin: bool, tty: bool, detach: &[u8]) -> Result<Ended> {
    if exec_id.is_empty() {
        conn.tasks().create(v1::CreateTaskRequest { container_id: id.to_owned() }).await?;
    }
    let (tx, output) = open(conn, id, exec_id).await?;
    conn.tasks().start(v1::StartTaskRequest { container_id: id.to_owned(), exec_id: exec_id.to_owned() }).await?;
    relay(conn, id, exec_id, tx, output, stdin, tty, detach).await
}

/// Attach to the main process of a running container and relay stdio until
/// it exits or the user detaches.
pub async fn attach_running(conn: &Conn, id: &str, stdin: bool, tty: bool, detach: &[u8]) -> Result<Ended> {
    let (tx, output) = open(conn, id, "").await?;
    relay(conn, id, "", tx, output, stdin, tty, detach).await
}

/// How long an attached client waits for an agent that went away to come back.
pub const RECONNECT_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether a stream's error is the agent going away (it may come back), not
/// an answer of the agent's.
pub fn is_disconnect(s: &tonic::Status) -> bool {
    matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled)
}

/// `call` again while the agent is away (within [`RECONNECT_FOR`], a
/// pause between tries): its first answer, or the error it ended with.
pub async fn while_away<T, Fut: std::future::Future<Output = Result<T, tonic::Status>>>(
    mut call: impl FnMut() -> Fut,
) -> Result<T, tonic::Status> {
    let until = std::time::Instant::now() + RECONNECT_FOR;
    loop {
        match call().await {
            Err(s) if is_disconnect(&s) && std::time::Instant::now() < until => {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
            answer => return answer,
        }
    }
}

/// The exit code of a process, asking again while the agent is away.
async fn wait_exit(conn: &Conn, id: &str, exec_id: &str) -> Result<i32> {
    let req = v1::WaitTaskRequest { container_id: id.to_owned(), exec_id: exec_id.to_owned(), timeout_ms: 0 };
    Ok(while_away(|| async { conn.tasks().wait(req.clone()).await }).await?.into_inner().exit_code)
}

/// Finds the detach keys in standard input: what it passes on, and whether
/// the whole sequence was typed. Bytes of a sequence begun are held until it
/// completes (dropped) or breaks (passed on).
struct DetachScanner {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachScanner {
    fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if self.keys.is_empty() {
                out.push(b);
                continue;
            }
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return (out, true);
                }
            } else {
                out.extend_from_slice(&self.keys[..self.matched]);
                self.matched = 0;
                if b == self.keys[0] {
                    self.matched = 1;
                    if self.keys.len() == 1 {
                        return (out, true);
                    }
                } else {
                    out.push(b);
                }
            }
        }
        (out, false)
    }
}

/// Open a process's attach stream: the first message names the process and
/// gives the terminal's size.
async fn open(
    conn: &Conn,
    id: &str,
    exec_id: &str,
) -> Result<(mpsc::Sender<v1::AttachRequest>, tonic::Streaming<v1::AttachResponse>), tonic::Status> {
    let (tx, rx) = mpsc::channel::<v1::AttachRequest>(16);
    let size = terminal_size();
    tx.send(v1::AttachRequest {
        container_id: id.to_owned(),
        exec_id: exec_id.to_owned(),
        width: size.map_or(0, |s| s.0),
        height: size.map_or(0, |s| s.1),
        ..Default::default()
    })
    .await
    .ok();
    let output = conn.tasks().attach(ReceiverStream::new(rx)).await?.into_inner();
    Ok((tx, output))
}

/// Attach stdio to a running process: terminal mode, input (watched for the
/// detach keys on a terminal), resizes, signals.
#[allow(clippy::too_many_arguments)]
async fn relay(
    conn: &Conn,
    id: &str,
    exec_id: &str,
    mut tx: mpsc::Sender<v1::AttachRequest>,
    mut output: tonic::Streaming<v1::AttachResponse>,
    stdin: bool,
    tty: bool,
    detach: &[u8],
) -> Result<Ended> {
    let _raw = if tty && stdin && std::io::stdin().is_terminal() { RawMode::enter() } else { None };
    let (detached_tx, mut detached) = mpsc::channel::<()>(1);
    // Input goes through here to the current attach stream (a new one after
    // the agent came back).
    let (in_tx, mut input_rx) = mpsc::channel::<v1::AttachRequest>(16);
    if stdin {
        let tx = in_tx.clone();
        // As docker: the keys detach a terminal's session (-it).
        let mut scan = DetachScanner { keys: if tty { detach.to_vec() } else { Vec::new() }, matched: 0 };
        // Standard input is read on a thread of its own: a blocking read cannot be cancelled.
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 8192];
            let mut input = std::io::stdin().lock();
            loop {
                match input.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.blocking_send(v1::AttachRequest { close_stdin: true, ..Default::default() });
                        return;
                    }
                    Ok(n) => {
                        let (pass, detach) = scan.feed(&buf[..n]);
                        if !pass.is_empty() && tx.blocking_send(v1::AttachRequest { stdin: pass, ..Default::default() }).is_err() {
                            return;
                        }
                        if detach {
                            let _ = detached_tx.blocking_send(());
                            return;
                        }
                    }
                }
            }
        });
    }
    use tokio::signal::unix::{signal, SignalKind};
    let mut winch = signal(SignalKind::window_change()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut term = signal(SignalKind::terminate()).ok();
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    drop(in_tx);
    loop {
        tokio::select! {
            msg = output.next() => match msg {
                Some(Ok(m)) => {
                    if m.exited {
                        return Ok(Some(m.exit_code));
                    }
                    let w: &mut dyn Write = if m.stream == "stderr" { &mut err } else { &mut out };
                    w.write_all(&m.data)?;
                    w.flush()?;
                }
                // The agent went away (a restart): attach again when it is back.
                Some(Err(e)) if is_disconnect(&e) => match reattach(conn, id, exec_id).await? {
                    Some((t, o)) => {
                        tx = t;
                        output = o;
                    }
                    // The process is not there to attach to any more: its exit is.
                    None => break,
                },
                Some(Err(e)) => return Err(e.into()),
                None => break,
            },
            Some(req) = input_rx.recv() => {
                let _ = tx.send(req).await;
            }
            Some(_) = recv(&mut winch) => {
                if let Some((w, h)) = terminal_size() {
                    let _ = tx.send(v1::AttachRequest { width: w, height: h, ..Default::default() }).await;
                }
            }
            // Without a terminal, ^C and SIGTERM go to the container (docker's sig-proxy).
            Some(_) = recv(&mut int) => forward(conn, id, exec_id, "INT").await,
            Some(_) = recv(&mut term) => forward(conn, id, exec_id, "TERM").await,
            Some(()) = detached.recv() => return Ok(None),
        }
    }
    // The stream ended without an exit message: ask for the exit.
    Ok(Some(wait_exit(conn, id, exec_id).await?))
}

/// Attach again once the agent is back (within [`RECONNECT_FOR`]): the new
/// stream, or None when the process no longer runs.
async fn reattach(
    conn: &Conn,
    id: &str,
    exec_id: &str,
) -> Result<Option<(mpsc::Sender<v1::AttachRequest>, tonic::Streaming<v1::AttachResponse>)>> {
    match while_away(|| open(conn, id, exec_id)).await {
        Ok(s) => Ok(Some(s)),
        Err(s) if matches!(s.code(), tonic::Code::FailedPrecondition | tonic::Code::NotFound) => Ok(None),
        Err(s) => Err(s.into()),
    }
}

async fn recv(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

async fn forward(conn: &Conn, id: &str, exec_id: &str, sig: &str) {
    let _ = conn
        .tasks()
        .kill(v1::KillTaskRequest { container_id: id.to_owned(), exec_id: exec_id.to_owned(), signal: sig.into(), all: false })
        .await;
}

fn terminal_size() -> Option<(u32, u32)> {
    let ws = rustix::termios::tcgetwinsize(std::io::stdout()).ok()?;
    (ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col as u32, ws.ws_row as u32))
}

/// The local terminal in raw mode while attached; restored on drop.
struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    fn enter() -> Option<Self> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(std::io::stdin(), rustix::termios::OptionalActions::Now, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse_and_are_found_in_input() {
        assert_eq!(parse_detach_keys(DEFAULT_DETACH_KEYS).unwrap(), [0x10, 0x11]);
        assert_eq!(parse_detach_keys("ctrl-a,x").unwrap(), [0x01, b'x']);
        assert_eq!(parse_detach_keys("").unwrap(), Vec::<u8>::new());
        assert!(parse_detach_keys("ctrl-1").is_err() && parse_detach_keys("abc").is_err());
        let mut s = DetachScanner { keys: vec![0x10, 0x11], matched: 0 };
        assert_eq!(s.feed(b"ab\x10c"), (b"ab\x10c".to_vec(), false));
        assert_eq!(s.feed(b"x\x10"), (b"x".to_vec(), false));
        assert_eq!(s.feed(b"\x11rest"), (Vec::new(), true));
        let mut s = DetachScanner { keys: vec![0x10, 0x11], matched: 0 };
        assert_eq!(s.feed(b"\x10\x10\x11"), (b"\x10".to_vec(), true));
        let mut off = DetachScanner { keys: Vec::new(), matched: 0 };
        assert_eq!(off.feed(b"\x10\x11"), (b"\x10\x11".to_vec(), false));
    }
}
