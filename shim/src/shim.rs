//! The shim's event loop: one thread, `poll(2)` over the socket, the
//! connections, the processes' output and their pidfds.

use std::collections::VecDeque;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags};
use rustix::fs::{fcntl_setfl, OFlags};
use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitOptions};

use crate::log::{LogWriter, Stream};
use crate::protocol::{files, frame, ErrorKind, Event, ExitRecord, ProcessState, ProcessStatus, Request, Response, ShimConfig, TaskState};

/// Largest request line.
const MAX_REQUEST: usize = 1 << 20;
/// An attached client that falls this far behind is dropped (the container is never blocked).
const MAX_CONN_BACKLOG: usize = 4 << 20;
/// Input waiting for a process to read it; beyond this the client is not read.
const MAX_STDIN_BACKLOG: usize = 1 << 20;
/// A partial line waits this long before it is logged as a `P` record (a prompt).
const PARTIAL_FLUSH: Duration = Duration::from_millis(500);
/// How long a client may take to send its request (or to read its answer once complete).
const IDLE_CONNECTION: Duration = Duration::from_secs(60);
/// How long a deleted task's shim waits for its clients to read their answers.
const EXIT_FLUSH: Duration = Duration::from_secs(5);
/// Exited execs kept for Wait; older ones are forgotten beyond this.
const MAX_EXITED_EXECS: usize = 128;
/// How long a forced delete waits for the processes to die.
const KILL_WAIT: Duration = Duration::from_secs(10);

type Result<T> = std::result::Result<T, Response>;

fn fail(kind: ErrorKind, message: impl Into<String>) -> Response {
    Response::error(kind, message)
}

fn internal(what: &str, e: impl std::fmt::Display) -> Response {
    fail(ErrorKind::Internal, format!("{what}: {e}"))
}

fn now_nanos() -> i64 {
    let (s, n) = berth_common::time::now();
    s.saturating_mul(1_000_000_000).saturating_add(n as i64)
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    fcntl_setfl(fd, flags | OFlags::NONBLOCK)?;
    Ok(())
}

/// A pipe whose shim-side end is non-blocking; both ends close on exec.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    Ok((r, w))
}

/// One process the shim watches: the init or an exec.
struct Proc {
    exec_id: String,
    tty: bool,
    /// For an exec: the OCI process object, written to a file at start.
    process: Option<serde_json::Value>,
    status: ProcessStatus,
    pid: u32,
    pidfd: Option<OwnedFd>,
    exit_code: i32,
    started_at: i64,
    exited_at: i64,
    /// Ends handed to the runtime; dropped once it has started the process.
    child_stdin: Option<OwnedFd>,
    child_stdout: Option<OwnedFd>,
    child_stderr: Option<OwnedFd>,
    /// The shim's ends: input (pipe or terminal), output, error output.
    stdin: Option<OwnedFd>,
    stdin_buf: VecDeque<u8>,
    stdin_close: bool,
    /// Whether this process was given a stdin at all.
    want_stdin: bool,
    out: Option<OwnedFd>,
    err: Option<OwnedFd>,
    console: Option<OwnedFd>,
    /// Partial output lines started at (for the log's prompt flush).
    partial_since: [Option<Instant>; 2],
    /// A terminal size asked for before the terminal existed.
    pending_size: Option<(u16, u16)>,
}

impl Proc {
    fn new(exec_id: String, tty: bool, want_stdin: bool, process: Option<serde_json::Value>) -> io::Result<Self> {
        let mut p = Proc {
            exec_id,
            tty,
            process,
            status: ProcessStatus::Created,
            pid: 0,
            pidfd: None,
            exit_code: 0,
            started_at: 0,
            exited_at: 0,
            child_stdin: None,
            child_stdout: None,
            child_stderr: None,
            stdin: None,
            stdin_buf: VecDeque::new(),
            stdin_close: false,
            want_stdin,
            out: None,
            err: None,
            console: None,
            partial_since: [None, None],
            pending_size: None,
        };
        if !tty {
            let (r, w) = pipe()?;
            set_nonblocking(&r)?;
            p.out = Some(r);
            p.child_stdout = Some(w);
            let (r, w) = pipe()?;
            set_nonblocking(&r)?;
            p.err = Some(r);
            p.child_stderr = Some(w);
            if want_stdin {
                let (r, w) = pipe()?;
                set_nonblocking(&w)?;
                p.stdin = Some(w);
                p.child_stdin = Some(r);
            }
        }
        Ok(p)
    }

    fn state(&self) -> ProcessState {
        ProcessState {
            exec_id: self.exec_id.clone(),
            pid: self.pid,
            status: self.status,
            exit_code: self.exit_code,
            started_at: self.started_at,
            exited_at: self.exited_at,
        }
    }

    fn live(&self) -> bool {
        matches!(self.status, ProcessStatus::Running | ProcessStatus::Paused)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// Waiting for the request line.
    Request,
    /// Answer written (or being written); close when flushed.
    Closing,
    Wait(String),
    Subscribe,
    Attach(String),
}

struct Conn {
    stream: UnixStream,
    rbuf: Vec<u8>,
    wbuf: VecDeque<u8>,
    mode: Mode,
    /// When the connection was opened, or started closing.
    since: Instant,
    /// The client finished sending (an attach goes on writing output).
    input_done: bool,
}

impl Conn {
    fn close(&mut self) {
        self.mode = Mode::Closing;
        self.since = Instant::now();
    }

    fn send_line(&mut self, value: &impl serde::Serialize) {
        if let Ok(mut line) = serde_json::to_vec(value) {
            line.push(b'\n');
            self.wbuf.extend(line);
        }
    }

    fn send_frame(&mut self, kind: u8, data: &[u8]) {
        for chunk in data.chunks(frame::MAX_PAYLOAD) {
            self.wbuf.extend(frame::header(kind, chunk.len()));
            self.wbuf.extend(chunk);
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Token {
    Listener,
    Conn(usize),
    Out(usize, Stream),
    Pid,
    Stdin(usize),
}

pub struct Shim {
    cfg: ShimConfig,
    bundle: PathBuf,
    listener: UnixListener,
    log: LogWriter,
    procs: Vec<Proc>,
    conns: Vec<Option<Conn>>,
    /// Set once the task is deleted: flush the answers, then exit.
    exiting: Option<Instant>,
    /// The runtime was asked to run the init: it may hold state to delete.
    runtime_used: bool,
    /// Bumped whenever a process leaves `procs`: poll tokens name processes
    /// by position, so tokens from before a removal are stale.
    layout: u64,
}

impl Shim {
    pub fn new(cfg: ShimConfig, bundle: PathBuf, listener: UnixListener) -> io::Result<Self> {
        let log = LogWriter::open(Path::new(&cfg.log_path), cfg.log_max_size, cfg.log_max_files)?;
        let init = Proc::new(String::new(), cfg.tty, cfg.stdin, None)?;
        Ok(Shim { cfg, bundle, listener, log, procs: vec![init], conns: Vec::new(), exiting: None, layout: 0, runtime_used: false })
    }

    /// Serve until the task is deleted.
    pub fn run(mut self) -> io::Result<()> {
        loop {
            self.reap();
            if let Some(since) = self.exiting {
                // Answers are flushed first, but a client that stops reading does not keep the shim.
                if self.conns.iter().flatten().all(|c| c.wbuf.is_empty()) || since.elapsed() > EXIT_FLUSH {
                    return Ok(());
                }
            }
            let ready = self.poll_once()?;
            let layout = self.layout;
            for (token, flags) in ready {
                if self.layout != layout && matches!(token, Token::Out(..) | Token::Stdin(_)) {
                    continue;
                }
                self.handle(token, flags);
            }
            self.flush_stale_partials();
            self.drop_idle_connections();
        }
    }

    fn poll_once(&mut self) -> io::Result<Vec<(Token, PollFlags)>> {
        let mut tokens = Vec::new();
        let mut fds: Vec<PollFd<'_>> = Vec::new();
        let input = PollFlags::IN;
        if self.exiting.is_none() {
            fds.push(PollFd::new(&self.listener, input));
            tokens.push(Token::Listener);
        }
        for (i, c) in self.conns.iter().enumerate() {
            let Some(c) = c else { continue };
            let mut flags = PollFlags::empty();
            let reading = !c.input_done
                && match &c.mode {
                    Mode::Attach(id) => self.procs.iter().find(|p| &p.exec_id == id).is_none_or(|p| p.stdin_buf.len() < MAX_STDIN_BACKLOG),
                    Mode::Closing => false,
                    _ => true,
                };
            if reading {
                flags |= input;
            }
            if !c.wbuf.is_empty() {
                flags |= PollFlags::OUT;
            }
            fds.push(PollFd::new(&c.stream, flags));
            tokens.push(Token::Conn(i));
        }
        for (i, p) in self.procs.iter().enumerate() {
            if let Some(fd) = &p.out {
                fds.push(PollFd::new(fd, input));
                tokens.push(Token::Out(i, Stream::Stdout));
            }
            if let Some(fd) = &p.err {
                fds.push(PollFd::new(fd, input));
                tokens.push(Token::Out(i, Stream::Stderr));
            }
            if let Some(fd) = &p.pidfd {
                fds.push(PollFd::new(fd, input));
                tokens.push(Token::Pid);
            }
            if let (Some(fd), false) = (&p.stdin, p.stdin_buf.is_empty()) {
                fds.push(PollFd::new(fd, PollFlags::OUT));
                tokens.push(Token::Stdin(i));
            }
        }
        let partial = self.procs.iter().any(|p| p.partial_since.iter().any(Option::is_some));
        // Wake now and then to reap processes that were re-parented to the shim.
        let timeout = if partial {
            rustix::event::Timespec { tv_sec: 0, tv_nsec: 200_000_000 }
        } else {
            rustix::event::Timespec { tv_sec: 5, tv_nsec: 0 }
        };
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) => {}
            Err(Errno::INTR) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
        Ok(fds.iter().zip(tokens).filter(|(f, _)| !f.revents().is_empty()).map(|(f, t)| (t, f.revents())).collect())
    }

    fn handle(&mut self, token: Token, flags: PollFlags) {
        match token {
            Token::Listener => self.accept(),
            Token::Conn(i) => self.conn_ready(i, flags),
            Token::Out(i, stream) => self.read_output(i, stream),
            Token::Pid => self.reap(),
            Token::Stdin(i) => self.write_stdin(i),
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let conn = Conn {
                        stream,
                        rbuf: Vec::new(),
                        wbuf: VecDeque::new(),
                        mode: Mode::Request,
                        since: Instant::now(),
                        input_done: false,
                    };
                    match self.conns.iter().position(Option::is_none) {
                        Some(i) => self.conns[i] = Some(conn),
                        None => self.conns.push(Some(conn)),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("berth-shim: accept: {e}");
                    return;
                }
            }
        }
    }

    fn conn_ready(&mut self, i: usize, flags: PollFlags) {
        if flags.contains(PollFlags::OUT) && !self.flush_conn(i) {
            return;
        }
        if flags.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
            self.read_conn(i);
        }
    }

    /// Write what is pending; false when the connection was closed.
    fn flush_conn(&mut self, i: usize) -> bool {
        let Some(c) = self.conns[i].as_mut() else { return false };
        while !c.wbuf.is_empty() {
            let (a, _) = c.wbuf.as_slices();
            match (&c.stream).write(a) {
                Ok(0) => break,
                Ok(n) => {
                    c.wbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.conns[i] = None;
                    return false;
                }
            }
        }
        if c.wbuf.is_empty() && c.mode == Mode::Closing {
            self.conns[i] = None;
            return false;
        }
        if c.wbuf.len() > MAX_CONN_BACKLOG {
            eprintln!("berth-shim: dropping a client that does not read its output");
            self.conns[i] = None;
            return false;
        }
        true
    }

    fn read_conn(&mut self, i: usize) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let Some(c) = self.conns[i].as_mut() else { return };
            match (&c.stream).read(&mut buf) {
                Ok(0) => {
                    // An attacher that finished sending still gets the output;
                    // anyone else who stops sending has gone away.
                    if matches!(c.mode, Mode::Attach(_)) {
                        c.input_done = true;
                    } else {
                        self.conns[i] = None;
                    }
                    return;
                }
                Ok(n) => {
                    c.rbuf.extend_from_slice(&buf[..n]);
                    self.process_input(i);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.conns[i] = None;
                    return;
                }
            }
            if let Some(Conn { mode: Mode::Attach(id), .. }) = &self.conns[i] {
                if self.procs.iter().find(|p| &p.exec_id == id).is_some_and(|p| p.stdin_buf.len() >= MAX_STDIN_BACKLOG) {
                    return;
                }
            }
        }
    }

    fn process_input(&mut self, i: usize) {
        let Some(c) = self.conns[i].as_mut() else { return };
        match c.mode.clone() {
            Mode::Request => {
                let Some(nl) = c.rbuf.iter().position(|&b| b == b'\n') else {
                    if c.rbuf.len() > MAX_REQUEST {
                        self.conns[i] = None;
                    }
                    return;
                };
                let line: Vec<u8> = c.rbuf.drain(..=nl).collect();
                let req: std::result::Result<Request, _> = serde_json::from_slice(&line[..nl]);
                match req {
                    Ok(req) => self.request(i, req),
                    Err(e) => self.answer(i, fail(ErrorKind::InvalidArgument, format!("bad request: {e}"))),
                }
                // Attach input may follow the request in the same read.
                if matches!(self.conns[i].as_ref().map(|c| &c.mode), Some(Mode::Attach(_))) {
                    self.process_input(i);
                }
            }
            Mode::Attach(id) => {
                let Some(pi) = self.procs.iter().position(|p| p.exec_id == id) else { return };
                loop {
                    let Some(c) = self.conns[i].as_mut() else { return };
                    if c.rbuf.len() < 5 {
                        return;
                    }
                    let header: [u8; 5] = [c.rbuf[0], c.rbuf[1], c.rbuf[2], c.rbuf[3], c.rbuf[4]];
                    let Some((kind, len)) = frame::parse_header(&header) else {
                        self.conns[i] = None;
                        return;
                    };
                    if c.rbuf.len() < 5 + len {
                        return;
                    }
                    let payload: Vec<u8> = c.rbuf.drain(..5 + len).skip(5).collect();
                    let p = &mut self.procs[pi];
                    match kind {
                        // Input for a process whose stdin is gone (closed, or exited) is dropped.
                        frame::STDIN if p.want_stdin && !p.stdin_close && (p.stdin.is_some() || p.status == ProcessStatus::Created) => {
                            p.stdin_buf.extend(payload)
                        }
                        frame::CLOSE_STDIN => p.stdin_close = true,
                        frame::RESIZE if payload.len() == 4 => {
                            let w = u16::from_be_bytes([payload[0], payload[1]]);
                            let h = u16::from_be_bytes([payload[2], payload[3]]);
                            resize(p, w, h);
                        }
                        _ => {}
                    }
                    self.write_stdin(pi);
                }
            }
            // Anything else a waiter or subscriber sends is ignored.
            _ => c.rbuf.clear(),
        }
    }

    fn answer(&mut self, i: usize, resp: Response) {
        if let Some(c) = self.conns[i].as_mut() {
            c.send_line(&resp);
            c.close();
            self.flush_conn(i);
        }
    }

    fn proc_index(&self, exec_id: &str) -> Result<usize> {
        self.procs.iter().position(|p| p.exec_id == exec_id).ok_or_else(|| fail(ErrorKind::NotFound, format!("exec {exec_id:?} not found")))
    }

    fn request(&mut self, i: usize, req: Request) {
        let result = match req {
            Request::State => Ok(Response { state: Some(self.state()), ..Default::default() }),
            Request::Start { exec_id } => self.start(&exec_id),
            Request::Exec { exec_id, process, tty, stdin } => self.add_exec(exec_id, process, tty, stdin),
            Request::Kill { exec_id, signal, all } => self.kill(&exec_id, signal, all),
            Request::Wait { exec_id } => match self.proc_index(&exec_id) {
                Ok(pi) if self.procs[pi].status == ProcessStatus::Exited => {
                    Ok(Response { process: Some(self.procs[pi].state()), ..Default::default() })
                }
                Ok(_) => {
                    if let Some(c) = self.conns[i].as_mut() {
                        c.mode = Mode::Wait(exec_id);
                    }
                    return;
                }
                Err(e) => Err(e),
            },
            Request::Delete { exec_id, force } => self.delete(&exec_id, force),
            Request::Pause => self.pause(true),
            Request::Resume => self.pause(false),
            Request::Pids => self.pids(),
            Request::Resize { exec_id, width, height } => self.proc_index(&exec_id).map(|pi| {
                resize(&mut self.procs[pi], width, height);
                Response::default()
            }),
            Request::CloseStdin { exec_id } => self.proc_index(&exec_id).map(|pi| {
                self.procs[pi].stdin_close = true;
                self.write_stdin(pi);
                Response::default()
            }),
            Request::Attach { exec_id } => match self.proc_index(&exec_id) {
                Ok(pi) => {
                    let exited = self.procs[pi].status == ProcessStatus::Exited;
                    let code = self.procs[pi].exit_code;
                    if let Some(c) = self.conns[i].as_mut() {
                        c.send_line(&Response::default());
                        c.mode = Mode::Attach(exec_id);
                        if exited {
                            c.send_frame(frame::EXIT, &code.to_be_bytes());
                            c.close();
                        }
                    }
                    self.flush_conn(i);
                    return;
                }
                Err(e) => Err(e),
            },
            Request::Subscribe => {
                if let Some(c) = self.conns[i].as_mut() {
                    c.send_line(&Response::default());
                    c.mode = Mode::Subscribe;
                }
                self.flush_conn(i);
                return;
            }
        };
        self.answer(i, result.unwrap_or_else(|e| e));
    }

    fn state(&self) -> TaskState {
        TaskState { init: self.procs[0].state(), execs: self.procs[1..].iter().map(Proc::state).collect(), shim_pid: std::process::id() }
    }

    fn publish(&mut self, event: &Event) {
        for i in 0..self.conns.len() {
            if let Some(c) = self.conns[i].as_mut() {
                if c.mode == Mode::Subscribe {
                    c.send_line(event);
                    self.flush_conn(i);
                }
            }
        }
    }

    // ---- the OCI runtime ----

    /// Run the runtime with `args` after the global flags, bounded by the configured timeout.
    fn runtime(&self, args: &[&str], stdio: [Stdio; 3]) -> Result<()> {
        let log = self.bundle.join(files::RUNTIME_LOG);
        let log_start = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let log_s = log.to_string_lossy().into_owned();
        let mut cmd = Command::new(&self.cfg.runtime);
        cmd.args(["--root", &self.cfg.runtime_root, "--log", &log_s, "--log-format", "json"]).args(args);
        let [i, o, e] = stdio;
        cmd.stdin(i).stdout(o).stderr(e);
        let mut child = cmd.spawn().map_err(|e| fail(ErrorKind::Runtime, format!("running {}: {e}", self.cfg.runtime)))?;
        let timeout = Duration::from_secs(self.cfg.runtime_timeout_secs.max(1));
        if !wait_exit(child.id(), timeout) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(ErrorKind::Timeout, format!("{} {} did not finish within {timeout:?}", self.cfg.runtime, args[0])));
        }
        let status = child.wait().map_err(|e| internal("waiting for the runtime", e))?;
        if status.success() {
            return Ok(());
        }
        let why = runtime_error(&log, log_start).unwrap_or_else(|| format!("exited with {status}"));
        Err(fail(ErrorKind::Runtime, format!("{} {}: {why}", self.cfg.runtime, args[0])))
    }

    fn start(&mut self, exec_id: &str) -> Result<Response> {
        let pi = self.proc_index(exec_id)?;
        let p = &self.procs[pi];
        match p.status {
            ProcessStatus::Created => {}
            ProcessStatus::Exited => {
                return Err(fail(ErrorKind::FailedPrecondition, "the process has already run; delete the task to start again"))
            }
            _ => return Err(fail(ErrorKind::FailedPrecondition, "the process is already running")),
        }
        if pi != 0 && !self.procs[0].live() {
            return Err(fail(ErrorKind::FailedPrecondition, "the container is not running"));
        }
        let tag = if pi == 0 { "init".to_owned() } else { format!("exec-{exec_id}") };
        let pid_file = format!("{tag}.pid");
        let console_path = format!("{tag}.console");
        let _ = fs::remove_file(&pid_file);
        let console = if p.tty {
            let _ = fs::remove_file(&console_path);
            let l = UnixListener::bind(&console_path).map_err(|e| internal("console socket", e))?;
            Some(l)
        } else {
            None
        };
        let bundle = self.bundle.to_string_lossy().into_owned();
        let process_file = format!("{tag}.json");
        let mut args: Vec<&str> = Vec::new();
        if pi == 0 {
            args.extend(["run", "--detach", "--bundle", &bundle, "--pid-file", &pid_file]);
        } else {
            let body = serde_json::to_vec(p.process.as_ref().unwrap_or(&serde_json::Value::Null)).unwrap_or_default();
            fs::write(&process_file, body).map_err(|e| internal("writing the exec process", e))?;
            args.extend(["exec", "--detach", "--pid-file", &pid_file, "--process", &process_file]);
        }
        if console.is_some() {
            args.extend(["--console-socket", &console_path]);
        }
        args.push(&self.cfg.id);
        let p = &mut self.procs[pi];
        let stdio = [
            p.child_stdin.take().map_or_else(Stdio::null, Stdio::from),
            p.child_stdout.take().map_or_else(Stdio::null, Stdio::from),
            p.child_stderr.take().map_or_else(Stdio::null, Stdio::from),
        ];
        let started = self.runtime(&args, stdio);
        let _ = fs::remove_file(&console_path);
        if pi == 0 {
            // From here the runtime may hold state for the container, even if the call failed.
            self.runtime_used = true;
        }
        let started = started.and_then(|()| self.take_started(pi, &pid_file, console.as_ref()));
        if pi != 0 {
            let _ = fs::remove_file(&pid_file);
            let _ = fs::remove_file(&process_file);
        }
        let pid = match started {
            Ok(pid) => pid,
            Err(e) => {
                let p = &mut self.procs[pi];
                // A failed start leaves nothing running; the process reads as exited.
                p.status = ProcessStatus::Exited;
                p.exit_code = 128;
                p.exited_at = now_nanos();
                p.out = None;
                p.err = None;
                if pi == 0 {
                    // The runtime may have started the process before the failure
                    // (or kept its state): kill and forget it.
                    if self.runtime(&["delete", "--force", &self.cfg.id], [Stdio::null(), Stdio::null(), Stdio::null()]).is_ok() {
                        self.runtime_used = false;
                    }
                } else if p.pid != 0 {
                    let _ = rustix::process::kill_process(Pid::from_raw(p.pid as i32).expect("nonzero"), Signal::KILL);
                }
                self.finish_exit(pi);
                return Err(e);
            }
        };
        let p = &mut self.procs[pi];
        p.status = ProcessStatus::Running;
        p.started_at = now_nanos();
        let state = p.state();
        self.write_stdin(pi);
        self.publish(&Event::Started { exec_id: exec_id.to_owned(), pid });
        Ok(Response { process: Some(state), ..Default::default() })
    }

    /// After the runtime started a process: its pid, its pidfd, its terminal.
    fn take_started(&mut self, pi: usize, pid_file: &str, console: Option<&UnixListener>) -> Result<u32> {
        let pid: u32 = fs::read_to_string(pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .filter(|&p| p > 0 && p <= i32::MAX as u32)
            .ok_or_else(|| fail(ErrorKind::Runtime, "the runtime wrote no pid file"))?;
        let p = &mut self.procs[pi];
        p.pid = pid;
        p.pidfd = Pid::from_raw(pid as i32).and_then(|pid| rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok());
        if let Some(l) = console {
            let master = receive_console(l).map_err(|e| internal("receiving the terminal from the runtime", e))?;
            set_nonblocking(&master).map_err(|e| internal("terminal", e))?;
            if p.want_stdin {
                p.stdin = master.try_clone().ok();
            }
            p.out = master.try_clone().ok();
            p.console = Some(master);
            if let Some((w, h)) = p.pending_size.take() {
                resize(p, w, h);
            }
        }
        Ok(pid)
    }

    fn add_exec(&mut self, exec_id: String, process: serde_json::Value, tty: bool, stdin: bool) -> Result<Response> {
        if exec_id.is_empty() || self.procs.iter().any(|p| p.exec_id == exec_id) {
            return Err(fail(ErrorKind::AlreadyExists, format!("exec {exec_id:?} already exists")));
        }
        if !self.procs[0].live() {
            return Err(fail(ErrorKind::FailedPrecondition, "the container is not running"));
        }
        // Clients that never delete their execs must not grow the shim without bound.
        let exited: Vec<usize> = (1..self.procs.len()).filter(|&i| self.procs[i].status == ProcessStatus::Exited).collect();
        if exited.len() >= MAX_EXITED_EXECS {
            let oldest = exited.into_iter().min_by_key(|&i| self.procs[i].exited_at).unwrap_or(1);
            self.procs.remove(oldest);
            self.layout += 1;
        }
        let p = Proc::new(exec_id, tty, stdin, Some(process)).map_err(|e| internal("pipes", e))?;
        let state = p.state();
        self.procs.push(p);
        Ok(Response { process: Some(state), ..Default::default() })
    }

    fn kill(&mut self, exec_id: &str, signal: i32, all: bool) -> Result<Response> {
        let pi = self.proc_index(exec_id)?;
        let p = &self.procs[pi];
        if !p.live() {
            return Err(fail(ErrorKind::FailedPrecondition, "the process is not running"));
        }
        if pi == 0 && all {
            let sig = signal.to_string();
            self.runtime(&["kill", "--all", &self.cfg.id, &sig], [Stdio::null(), Stdio::null(), Stdio::null()])?;
            return Ok(Response::default());
        }
        // The process is the shim's child (or its zombie), so its pid cannot be reused under us.
        let Some(sig) = Signal::from_named_raw(signal) else {
            // Real-time signals have no name here; the runtime sends those.
            if pi != 0 {
                return Err(fail(ErrorKind::InvalidArgument, format!("signal {signal} can only be sent to the main process")));
            }
            let sig = signal.to_string();
            self.runtime(&["kill", &self.cfg.id, &sig], [Stdio::null(), Stdio::null(), Stdio::null()])?;
            return Ok(Response::default());
        };
        match &p.pidfd {
            Some(fd) => rustix::process::pidfd_send_signal(fd, sig),
            None => rustix::process::kill_process(Pid::from_raw(p.pid as i32).ok_or_else(|| fail(ErrorKind::Internal, "no pid"))?, sig),
        }
        .or_else(|e| if e == Errno::SRCH { Ok(()) } else { Err(e) })
        .map_err(|e| internal("signalling", e))?;
        Ok(Response::default())
    }

    fn pause(&mut self, pause: bool) -> Result<Response> {
        let p = &self.procs[0];
        match (pause, p.status) {
            (true, ProcessStatus::Running) | (false, ProcessStatus::Paused) => {}
            (true, ProcessStatus::Paused) => return Err(fail(ErrorKind::FailedPrecondition, "the container is already paused")),
            (false, ProcessStatus::Running) => return Err(fail(ErrorKind::FailedPrecondition, "the container is not paused")),
            _ => return Err(fail(ErrorKind::FailedPrecondition, "the container is not running")),
        }
        self.runtime(&[if pause { "pause" } else { "resume" }, &self.cfg.id], [Stdio::null(), Stdio::null(), Stdio::null()])?;
        for p in &mut self.procs {
            match (pause, p.status) {
                (true, ProcessStatus::Running) => p.status = ProcessStatus::Paused,
                (false, ProcessStatus::Paused) => p.status = ProcessStatus::Running,
                _ => {}
            }
        }
        self.publish(if pause { &Event::Paused } else { &Event::Resumed });
        Ok(Response::default())
    }

    fn pids(&mut self) -> Result<Response> {
        if !self.procs[0].live() {
            return Ok(Response { pids: Some(Vec::new()), ..Default::default() });
        }
        // The list goes to a file: a pipe could fill up and stall the runtime.
        let out_path = "pids.json";
        let out = fs::File::create(out_path).map_err(|e| internal("pids file", e))?;
        let r = self.runtime(&["ps", "--format", "json", &self.cfg.id], [Stdio::null(), Stdio::from(out), Stdio::null()]);
        let data = fs::read(out_path).unwrap_or_default();
        let _ = fs::remove_file(out_path);
        r?;
        let pids: Vec<u32> = serde_json::from_slice::<Option<Vec<u32>>>(&data).ok().flatten().unwrap_or_default();
        Ok(Response { pids: Some(pids), ..Default::default() })
    }

    fn delete(&mut self, exec_id: &str, force: bool) -> Result<Response> {
        let pi = self.proc_index(exec_id)?;
        if self.procs[pi].live() {
            if !force {
                return Err(fail(ErrorKind::FailedPrecondition, "the process is still running; stop it first"));
            }
            if pi == 0 && self.procs[0].status == ProcessStatus::Paused {
                let _ = self.pause(false);
            }
            let _ = self.kill(exec_id, 9, pi == 0);
            let _ = self.kill(exec_id, 9, false);
            let deadline = Instant::now() + KILL_WAIT;
            while self.procs[pi].live() && Instant::now() < deadline {
                match &self.procs[pi].pidfd {
                    Some(fd) => {
                        let mut fds = [PollFd::new(fd, PollFlags::IN)];
                        let _ = poll(&mut fds, Some(&rustix::event::Timespec { tv_sec: 0, tv_nsec: 100_000_000 }));
                    }
                    None => std::thread::sleep(Duration::from_millis(50)),
                }
                self.reap();
            }
            if self.procs[pi].live() {
                return Err(fail(ErrorKind::Internal, format!("the process did not die within {KILL_WAIT:?} of SIGKILL")));
            }
        }
        if pi != 0 {
            let p = self.procs.remove(pi);
            self.layout += 1;
            return Ok(Response { process: Some(p.state()), ..Default::default() });
        }
        if self.runtime_used {
            if let Err(e) = self.runtime(&["delete", "--force", &self.cfg.id], [Stdio::null(), Stdio::null(), Stdio::null()]) {
                // Gone already is fine; anything else is reported and the shim stays.
                let msg = e.error.as_ref().map(|e| e.message.as_str()).unwrap_or_default();
                if !["does not exist", "not found", "No such file"].iter().any(|m| msg.contains(m)) {
                    return Err(e);
                }
            }
        }
        let _ = rustix::mount::unmount(files::ROOTFS, rustix::mount::UnmountFlags::DETACH);
        for s in [Stream::Stdout, Stream::Stderr] {
            let _ = self.log.flush_partial(s);
        }
        self.exiting = Some(Instant::now());
        Ok(Response { process: Some(self.procs[0].state()), ..Default::default() })
    }

    // ---- processes and their output ----

    /// Reap every exited child; record the exits of the processes the shim watches.
    fn reap(&mut self) {
        loop {
            match rustix::process::wait(WaitOptions::NOHANG) {
                Ok(Some((pid, status))) => {
                    let code = match (status.exit_status(), status.terminating_signal()) {
                        (Some(c), _) => c,
                        (None, Some(sig)) => 128 + sig,
                        _ => continue,
                    };
                    let raw = pid.as_raw_nonzero().get() as u32;
                    if let Some(pi) = self.procs.iter().position(|p| p.pid == raw && p.live()) {
                        let p = &mut self.procs[pi];
                        p.status = ProcessStatus::Exited;
                        p.exit_code = code;
                        p.exited_at = now_nanos();
                        p.pidfd = None;
                        self.finish_exit(pi);
                    }
                }
                Ok(None) => return,
                Err(Errno::INTR) => continue,
                Err(_) => return,
            }
        }
    }

    /// After an exit: drain what output is there, record it, tell everyone.
    fn finish_exit(&mut self, pi: usize) {
        for s in [Stream::Stdout, Stream::Stderr] {
            self.read_output(pi, s);
        }
        if pi == 0 {
            for s in [Stream::Stdout, Stream::Stderr] {
                let _ = self.log.flush_partial(s);
            }
            self.procs[0].partial_since = [None, None];
            let p = &self.procs[0];
            let rec = ExitRecord { pid: p.pid, exit_code: p.exit_code, started_at: p.started_at, exited_at: p.exited_at };
            if let Err(e) = write_atomic(Path::new(files::INIT_EXIT), &serde_json::to_vec(&rec).unwrap_or_default()) {
                eprintln!("berth-shim: recording the exit: {e}");
            }
        }
        // Stop writing to a process that has gone.
        let p = &mut self.procs[pi];
        p.stdin = None;
        p.stdin_buf.clear();
        let state = p.state();
        let event = Event::Exited {
            exec_id: state.exec_id.clone(),
            pid: state.pid,
            exit_code: state.exit_code,
            started_at: state.started_at,
            exited_at: state.exited_at,
        };
        for i in 0..self.conns.len() {
            let Some(c) = self.conns[i].as_mut() else { continue };
            match &c.mode {
                Mode::Wait(id) if *id == state.exec_id => {
                    c.send_line(&Response { process: Some(state.clone()), ..Default::default() });
                    c.close();
                }
                Mode::Attach(id) if *id == state.exec_id => {
                    c.send_frame(frame::EXIT, &state.exit_code.to_be_bytes());
                    c.close();
                }
                _ => continue,
            }
            self.flush_conn(i);
        }
        self.publish(&event);
    }

    fn read_output(&mut self, pi: usize, stream: Stream) {
        let mut buf = [0u8; 32 * 1024];
        loop {
            let Some(p) = self.procs.get_mut(pi) else { return };
            let fd = match stream {
                Stream::Stdout => p.out.as_ref(),
                Stream::Stderr => p.err.as_ref(),
            };
            let Some(fd) = fd else { return };
            match rustix::io::read(fd, &mut buf) {
                Ok(0) | Err(Errno::IO) => {
                    // End of output (EIO: the terminal's other side closed).
                    match stream {
                        Stream::Stdout => p.out = None,
                        Stream::Stderr => p.err = None,
                    }
                    if pi == 0 {
                        let _ = self.log.flush_partial(stream);
                        self.procs[0].partial_since[stream as usize] = None;
                    }
                    return;
                }
                Ok(n) => self.output(pi, stream, &buf[..n]),
                Err(Errno::AGAIN) => return,
                Err(Errno::INTR) => continue,
                Err(e) => {
                    eprintln!("berth-shim: reading output: {e}");
                    return;
                }
            }
        }
    }

    fn output(&mut self, pi: usize, stream: Stream, data: &[u8]) {
        if pi == 0 {
            if let Err(e) = self.log.write(stream, data) {
                eprintln!("berth-shim: writing the log: {e}");
            }
            let since = &mut self.procs[0].partial_since[stream as usize];
            if self.log.has_partial(stream) {
                since.get_or_insert_with(Instant::now);
            } else {
                *since = None;
            }
        }
        let kind = match stream {
            Stream::Stdout => frame::STDOUT,
            Stream::Stderr => frame::STDERR,
        };
        let exec_id = &self.procs[pi].exec_id;
        let mut touched = Vec::new();
        for (i, c) in self.conns.iter_mut().enumerate() {
            if let Some(c) = c {
                if matches!(&c.mode, Mode::Attach(id) if id == exec_id) {
                    c.send_frame(kind, data);
                    touched.push(i);
                }
            }
        }
        for i in touched {
            self.flush_conn(i);
        }
    }

    /// A connection that has not sent its request line in time, or whose
    /// answer has not been read in time, is closed.
    fn drop_idle_connections(&mut self) {
        for c in self.conns.iter_mut() {
            if c.as_ref().is_some_and(|c| matches!(c.mode, Mode::Request | Mode::Closing) && c.since.elapsed() > IDLE_CONNECTION) {
                *c = None;
            }
        }
    }

    fn flush_stale_partials(&mut self) {
        for s in [Stream::Stdout, Stream::Stderr] {
            let since = &mut self.procs[0].partial_since[s as usize];
            if since.is_some_and(|t| t.elapsed() >= PARTIAL_FLUSH) {
                *since = None;
                let _ = self.log.flush_partial(s);
            }
        }
    }

    fn write_stdin(&mut self, pi: usize) {
        let Some(p) = self.procs.get_mut(pi) else { return };
        if let Some(fd) = &p.stdin {
            while !p.stdin_buf.is_empty() {
                let (a, _) = p.stdin_buf.as_slices();
                match rustix::io::write(fd, a) {
                    Ok(n) => {
                        p.stdin_buf.drain(..n);
                    }
                    Err(Errno::AGAIN) => return,
                    Err(Errno::INTR) => continue,
                    Err(_) => {
                        p.stdin_buf.clear();
                        p.stdin = None;
                        return;
                    }
                }
            }
            if p.stdin_close {
                if p.tty {
                    // A terminal has no half-close: send end-of-file (^D), once.
                    let _ = rustix::io::write(fd, &[4]);
                }
                p.stdin = None;
            }
        }
    }
}

fn resize(p: &mut Proc, width: u16, height: u16) {
    match &p.console {
        Some(fd) => {
            let ws = rustix::termios::Winsize { ws_row: height, ws_col: width, ws_xpixel: 0, ws_ypixel: 0 };
            let _ = rustix::termios::tcsetwinsize(fd, ws);
        }
        None => p.pending_size = Some((width, height)),
    }
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
fn runtime_error(log: &Path, from: u64) -> Option<String> {
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

/// Take the terminal's master side that the runtime sends over the console socket.
fn receive_console(listener: &UnixListener) -> io::Result<OwnedFd> {
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

/// Write a file whole or not at all. Not synced: the record has to survive
/// the agent, not the machine (containers do not survive a reboot either, and
/// the state directory is meant to be a tmpfs such as /run).
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(data)?;
    fs::rename(&tmp, path)
}
