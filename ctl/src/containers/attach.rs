//! Attaching: the local terminal and standard input on one side, a task's
//! attach stream on the other (`run`, `start -a`, `exec`, `attach`).

use std::io::{IsTerminal, Write};

use anyhow::Result;
use berth_api::v1;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::Conn;

/// Create the task (unless `exec_id` names an exec), attach, start, and relay
/// stdio until the process exits; return its exit code.
pub async fn run_attached(conn: &Conn, id: &str, exec_id: &str, stdin: bool, tty: bool) -> Result<i32> {
    if exec_id.is_empty() {
        conn.tasks().create(v1::CreateTaskRequest { container_id: id.to_owned() }).await?;
    }
    let (tx, mut output) = open(conn, id, exec_id).await?;
    conn.tasks().start(v1::StartTaskRequest { container_id: id.to_owned(), exec_id: exec_id.to_owned() }).await?;
    relay(conn, id, exec_id, tx, &mut output, stdin, tty).await
}

/// Attach to the main process of a running container and relay stdio until it exits.
pub async fn attach_running(conn: &Conn, id: &str, stdin: bool, tty: bool) -> Result<i32> {
    let (tx, mut output) = open(conn, id, "").await?;
    relay(conn, id, "", tx, &mut output, stdin, tty).await
}

/// Open a process's attach stream: the first message names the process and
/// gives the terminal's size.
async fn open(conn: &Conn, id: &str, exec_id: &str) -> Result<(mpsc::Sender<v1::AttachRequest>, tonic::Streaming<v1::AttachResponse>)> {
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

/// Attach stdio to a running process: terminal mode, input, resizes, signals.
async fn relay(
    conn: &Conn,
    id: &str,
    exec_id: &str,
    tx: mpsc::Sender<v1::AttachRequest>,
    output: &mut tonic::Streaming<v1::AttachResponse>,
    stdin: bool,
    tty: bool,
) -> Result<i32> {
    let _raw = if tty && stdin && std::io::stdin().is_terminal() { RawMode::enter() } else { None };
    if stdin {
        let tx = tx.clone();
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
                        if tx.blocking_send(v1::AttachRequest { stdin: buf[..n].to_vec(), ..Default::default() }).is_err() {
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
    loop {
        tokio::select! {
            msg = output.next() => match msg {
                Some(Ok(m)) => {
                    if m.exited {
                        return Ok(m.exit_code);
                    }
                    let w: &mut dyn Write = if m.stream == "stderr" { &mut err } else { &mut out };
                    w.write_all(&m.data)?;
                    w.flush()?;
                }
                Some(Err(e)) => return Err(e.into()),
                None => break,
            },
            Some(_) = recv(&mut winch) => {
                if let Some((w, h)) = terminal_size() {
                    let _ = tx.send(v1::AttachRequest { width: w, height: h, ..Default::default() }).await;
                }
            }
            // Without a terminal, ^C and SIGTERM go to the container (docker's sig-proxy).
            Some(_) = recv(&mut int) => forward(conn, id, exec_id, "INT").await,
            Some(_) = recv(&mut term) => forward(conn, id, exec_id, "TERM").await,
        }
    }
    // The stream ended without an exit message: ask for the exit.
    let w = conn.tasks().wait(v1::WaitTaskRequest { container_id: id.to_owned(), exec_id: exec_id.to_owned(), timeout_ms: 0 }).await?;
    Ok(w.into_inner().exit_code)
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
