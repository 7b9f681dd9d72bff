//! The shim's event loop: one thread, `poll(2)` over the socket, the
//! connections, the processes' output and their pidfds. It answers requests
//! by asking the process table what is allowed, doing the I/O (the runtime,
//! signals, stdio), and telling the table and the clients what happened.
//!
//! - [`process`]: the process table and its state machine, plain data;
//! - [`runtime`]: the OCI runtime CLI;
//! - [`stdio`]: each process's pipes or terminal, and the init's log;
//! - [`conn`]: the clients, their requests, answers, events and frames.

mod conn;
mod process;
mod runtime;
mod stdio;

use std::fs;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitOptions};

use crate::log::Stream;
use crate::protocol::{files, ErrorKind, Event, Frame, ProcessStatus, Request, Response, ShimConfig, ShimError};
use conn::{Conns, Mode, Received, RequestLine};
use process::{Delivery, ProcessTable, INIT};
use runtime::{ConsoleSocket, Runtime};
use stdio::{InitLog, Output, ProcessIo};

/// How long a deleted task's shim waits for its clients to read their answers.
const EXIT_FLUSH: Duration = Duration::from_secs(5);
/// How long a forced delete waits for the processes to die.
const KILL_WAIT: Duration = Duration::from_secs(10);

type Result<T> = std::result::Result<T, ShimError>;

fn fail(kind: ErrorKind, message: impl Into<String>) -> ShimError {
    ShimError { kind, message: message.into() }
}

fn internal(what: &str, e: impl std::fmt::Display) -> ShimError {
    fail(ErrorKind::Internal, format!("{what}: {e}"))
}

fn now_nanos() -> i64 {
    let (s, n) = berth_common::time::now();
    s.saturating_mul(1_000_000_000).saturating_add(n as i64)
}

/// What the loop holds for one process: its pidfd (readable once it has
/// exited) and its stdio.
struct Handles {
    pidfd: Option<OwnedFd>,
    stdio: ProcessIo,
}

impl Handles {
    fn new(tty: bool, want_stdin: bool) -> io::Result<Self> {
        Ok(Handles { pidfd: None, stdio: ProcessIo::new(tty, want_stdin)? })
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
    listener: UnixListener,
    runtime: Runtime,
    log: InitLog,
    procs: ProcessTable<Handles>,
    conns: Conns,
    /// Set once the task is deleted: flush the answers, then exit.
    exiting: Option<Instant>,
    /// The runtime was asked to run the init: it may hold state to delete.
    runtime_used: bool,
}

impl Shim {
    pub fn new(cfg: ShimConfig, bundle: PathBuf, listener: UnixListener) -> io::Result<Self> {
        let log = InitLog::open(&cfg)?;
        let init = Handles::new(cfg.tty, cfg.stdin)?;
        Ok(Shim {
            listener,
            runtime: Runtime::new(&cfg, &bundle),
            log,
            procs: ProcessTable::new(init),
            conns: Conns::default(),
            exiting: None,
            runtime_used: false,
        })
    }

    /// Serve until the task is deleted.
    pub fn run(mut self) -> io::Result<()> {
        loop {
            self.reap();
            if let Some(since) = self.exiting {
                // Answers are flushed first, but a client that stops reading does not keep the shim.
                if self.conns.all_flushed() || since.elapsed() > EXIT_FLUSH {
                    return Ok(());
                }
            }
            let ready = self.poll_once()?;
            // Tokens name processes by position: after a removal they may name another.
            let generation = self.procs.generation();
            for (token, flags) in ready {
                if self.procs.generation() != generation && matches!(token, Token::Out(..) | Token::Stdin(_)) {
                    continue;
                }
                self.handle(token, flags);
            }
            self.log.flush_stale();
            self.conns.drop_idle();
        }
    }

    /// Whether input for `exec_id` may be read: there is room for it (or no such process).
    fn input_room(&self, exec_id: &str) -> bool {
        self.procs.position(exec_id).is_none_or(|pi| self.procs.handles(pi).stdio.has_input_room())
    }

    fn poll_once(&mut self) -> io::Result<Vec<(Token, PollFlags)>> {
        let mut tokens = Vec::new();
        let mut fds: Vec<PollFd<'_>> = Vec::new();
        let input = PollFlags::IN;
        if self.exiting.is_none() {
            fds.push(PollFd::new(&self.listener, input));
            tokens.push(Token::Listener);
        }
        for (i, c) in self.conns.iter() {
            let mut flags = PollFlags::empty();
            let reading = c.is_reading()
                && match c.mode() {
                    Mode::Attach(id) => self.input_room(id),
                    _ => true,
                };
            if reading {
                flags |= input;
            }
            if c.has_output() {
                flags |= PollFlags::OUT;
            }
            fds.push(PollFd::new(c.stream_fd(), flags));
            tokens.push(Token::Conn(i));
        }
        for (i, (_, h)) in self.procs.iter().enumerate() {
            for stream in [Stream::Stdout, Stream::Stderr] {
                if let Some(fd) = h.stdio.output_fd(stream) {
                    fds.push(PollFd::new(fd, input));
                    tokens.push(Token::Out(i, stream));
                }
            }
            if let Some(fd) = &h.pidfd {
                fds.push(PollFd::new(fd, input));
                tokens.push(Token::Pid);
            }
            if let Some(fd) = h.stdio.pending_input_fd() {
                fds.push(PollFd::new(fd, PollFlags::OUT));
                tokens.push(Token::Stdin(i));
            }
        }
        // Wake now and then to reap processes that were re-parented to the shim.
        let timeout = if self.log.has_waiting_partial() {
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
            Token::Listener => self.conns.accept(&self.listener),
            Token::Conn(i) => self.conn_ready(i, flags),
            Token::Out(i, stream) => self.read_output(i, stream),
            Token::Pid => self.reap(),
            Token::Stdin(i) => self.write_stdin(i),
        }
    }

    // ---- clients ----

    fn conn_ready(&mut self, i: usize, flags: PollFlags) {
        if flags.contains(PollFlags::OUT) && !self.conns.flush(i) {
            return;
        }
        if flags.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
            self.read_conn(i);
        }
    }

    fn read_conn(&mut self, i: usize) {
        loop {
            let Some(c) = self.conns.get_mut(i) else { return };
            match c.receive() {
                Received::End => {
                    // An attacher that finished sending still gets the output;
                    // anyone else who stops sending has gone away.
                    if matches!(c.mode(), Mode::Attach(_)) {
                        c.end_input();
                    } else {
                        self.conns.remove(i);
                    }
                    return;
                }
                Received::Data => self.process_input(i),
                Received::Nothing => return,
                Received::Broken => {
                    self.conns.remove(i);
                    return;
                }
            }
            if let Some(Mode::Attach(id)) = self.conns.get(i).map(|c| c.mode()) {
                if !self.input_room(id) {
                    return;
                }
            }
        }
    }

    fn process_input(&mut self, i: usize) {
        let Some(c) = self.conns.get_mut(i) else { return };
        match c.mode().clone() {
            Mode::Request => {
                match c.take_request() {
                    RequestLine::Incomplete => return,
                    RequestLine::TooLong => {
                        self.conns.remove(i);
                        return;
                    }
                    RequestLine::Parsed(Ok(req)) => self.request(i, req),
                    RequestLine::Parsed(Err(e)) => self.answer(i, Err(fail(ErrorKind::InvalidArgument, format!("bad request: {e}")))),
                }
                // Attach input may follow the request in the same read.
                if matches!(self.conns.get(i).map(|c| c.mode()), Some(Mode::Attach(_))) {
                    self.process_input(i);
                }
            }
            Mode::Attach(id) => {
                let Some(pi) = self.procs.position(&id) else { return };
                loop {
                    let Some(c) = self.conns.get_mut(i) else { return };
                    let (kind, payload) = match c.take_frame() {
                        Ok(Some(frame)) => frame,
                        Ok(None) => return,
                        Err(_) => {
                            self.conns.remove(i);
                            return;
                        }
                    };
                    let created = self.procs.process(pi).status() == ProcessStatus::Created;
                    let stdio = &mut self.procs.handles_mut(pi).stdio;
                    match Frame::from_parts(kind, payload) {
                        // Input for a process whose stdin is gone (closed, or exited) is dropped.
                        Ok(Frame::Stdin(data)) if stdio.accepts_input(created) => stdio.push_input(data),
                        Ok(Frame::CloseStdin) => stdio.close_input(),
                        Ok(Frame::Resize { width, height }) => stdio.resize(width, height),
                        // Frames a client has no business sending, and malformed ones, are ignored.
                        _ => {}
                    }
                    self.write_stdin(pi);
                }
            }
            // Anything else a waiter or subscriber sends is ignored.
            _ => c.discard_input(),
        }
    }

    fn answer(&mut self, i: usize, result: Result<Response>) {
        let resp = result.unwrap_or_else(|e| Response { error: Some(e), ..Default::default() });
        self.conns.answer(i, &resp);
    }

    /// Turn connection `i` into a stream: it gets an empty answer, then `mode`'s lines or frames.
    fn stream(&mut self, i: usize, mode: Mode) {
        if let Some(c) = self.conns.get_mut(i) {
            c.send_line(&Response::default());
            c.set_mode(mode);
        }
    }

    fn request(&mut self, i: usize, req: Request) {
        let result = match req {
            Request::State => Ok(Response { state: Some(self.procs.task_state(std::process::id())), ..Default::default() }),
            Request::Start { exec_id } => self.start(&exec_id),
            Request::Exec { exec_id, process, tty, stdin } => self
                .procs
                .add_exec(exec_id, process, || Handles::new(tty, stdin).map_err(|e| internal("pipes", e)))
                .map(|state| Response { process: Some(state), ..Default::default() }),
            Request::Kill { exec_id, signal, all } => self.kill(&exec_id, signal, all),
            Request::Wait { exec_id } => match self.procs.wait(&exec_id) {
                Ok(Some(state)) => Ok(Response { process: Some(state), ..Default::default() }),
                Ok(None) => {
                    if let Some(c) = self.conns.get_mut(i) {
                        c.set_mode(Mode::Wait(exec_id));
                    }
                    return;
                }
                Err(e) => Err(e.into()),
            },
            Request::Delete { exec_id, force } => self.delete(&exec_id, force),
            Request::Pause => self.pause(true),
            Request::Resume => self.pause(false),
            Request::Pids => self.pids(),
            Request::Update { resources } => self.update(&resources),
            Request::ReopenLog => self.log.reopen().map(|()| Response::default()).map_err(|e| internal("reopening the log", e)),
            Request::Resize { exec_id, width, height } => self.procs.find(&exec_id).map_err(ShimError::from).map(|pi| {
                self.procs.handles_mut(pi).stdio.resize(width, height);
                Response::default()
            }),
            Request::CloseStdin { exec_id } => self.procs.find(&exec_id).map_err(ShimError::from).map(|pi| {
                self.procs.handles_mut(pi).stdio.close_input();
                self.write_stdin(pi);
                Response::default()
            }),
            Request::Attach { exec_id } => match self.procs.find(&exec_id) {
                Ok(pi) => {
                    let exit_code = self.procs.process(pi).exit_code();
                    self.stream(i, Mode::Attach(exec_id));
                    if let (Some(code), Some(c)) = (exit_code, self.conns.get_mut(i)) {
                        c.send_frame(&Frame::Exit(code));
                        c.close();
                    }
                    self.conns.flush(i);
                    return;
                }
                Err(e) => Err(e.into()),
            },
            Request::Subscribe => {
                self.stream(i, Mode::Subscribe);
                self.conns.flush(i);
                return;
            }
        };
        self.answer(i, result);
    }

    // ---- requests that act on processes ----

    fn start(&mut self, exec_id: &str) -> Result<Response> {
        let pi = self.procs.check_start(exec_id)?;
        let tag = if pi == INIT { "init".to_owned() } else { format!("exec-{exec_id}") };
        let pid_file = format!("{tag}.pid");
        let console_path = format!("{tag}.console");
        let _ = fs::remove_file(&pid_file);
        let console = if self.procs.handles(pi).stdio.tty() { Some(ConsoleSocket::bind(&console_path)?) } else { None };
        let process_file = format!("{tag}.json");
        if pi != INIT {
            let body = serde_json::to_vec(self.procs.process(pi).spec().unwrap_or(&serde_json::Value::Null)).unwrap_or_default();
            fs::write(&process_file, body).map_err(|e| internal("writing the exec process", e))?;
        }
        let console_socket = console.as_ref().map(|_| console_path.as_str());
        let stdio = self.procs.handles_mut(pi).stdio.take_child_stdio();
        let started = if pi == INIT {
            self.runtime.run(&pid_file, console_socket, stdio)
        } else {
            self.runtime.exec(&process_file, &pid_file, console_socket, stdio)
        };
        let _ = fs::remove_file(&console_path);
        if pi == INIT {
            // From here the runtime may hold state for the container, even if the call failed.
            self.runtime_used = true;
        }
        let started = started.map_err(ShimError::from).and_then(|()| self.take_started(pi, &pid_file, console.as_ref()));
        if pi != INIT {
            let _ = fs::remove_file(&pid_file);
            let _ = fs::remove_file(&process_file);
        }
        let pid = match started {
            Ok(pid) => pid,
            Err(e) => {
                // A failed start leaves nothing running; the process reads as exited.
                self.procs.start_failed(pi, now_nanos());
                self.procs.handles_mut(pi).stdio.close_output();
                let pid = self.procs.process(pi).pid();
                if pi == INIT {
                    // The runtime may have started the process before the failure
                    // (or kept its state): kill and forget it.
                    if self.runtime.delete().is_ok() {
                        self.runtime_used = false;
                    }
                } else if pid != 0 {
                    let _ = rustix::process::kill_process(Pid::from_raw(pid as i32).expect("nonzero"), Signal::KILL);
                }
                self.finish_exit(pi);
                return Err(e);
            }
        };
        let state = self.procs.started(pi, now_nanos());
        self.write_stdin(pi);
        self.conns.publish(&Event::Started { exec_id: exec_id.to_owned(), pid, started_at: state.started_at });
        Ok(Response { process: Some(state), ..Default::default() })
    }

    /// After the runtime started a process: its pid, its pidfd, its terminal.
    fn take_started(&mut self, pi: usize, pid_file: &str, console: Option<&ConsoleSocket>) -> Result<u32> {
        let pid = runtime::read_pid_file(pid_file)?;
        self.procs.set_pid(pi, pid);
        let h = self.procs.handles_mut(pi);
        h.pidfd = Pid::from_raw(pid as i32).and_then(|pid| rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok());
        if let Some(console) = console {
            let master = console.receive()?;
            h.stdio.set_terminal(master).map_err(|e| internal("terminal", e))?;
        }
        Ok(pid)
    }

    fn kill(&mut self, exec_id: &str, signal: i32, all: bool) -> Result<Response> {
        match self.procs.kill(exec_id, signal, all)? {
            Delivery::RuntimeAll => self.runtime.kill(signal, true)?,
            // Real-time signals have no name here; the runtime sends those.
            Delivery::Runtime => self.runtime.kill(signal, false)?,
            Delivery::Direct { index, signal } => {
                let pid = self.procs.process(index).pid();
                match &self.procs.handles(index).pidfd {
                    Some(fd) => rustix::process::pidfd_send_signal(fd, signal),
                    None => {
                        rustix::process::kill_process(Pid::from_raw(pid as i32).ok_or_else(|| fail(ErrorKind::Internal, "no pid"))?, signal)
                    }
                }
                .or_else(|e| if e == Errno::SRCH { Ok(()) } else { Err(e) })
                .map_err(|e| internal("signalling", e))?;
            }
        }
        Ok(Response::default())
    }

    fn pause(&mut self, pause: bool) -> Result<Response> {
        self.procs.check_pause(pause)?;
        if pause {
            self.runtime.pause()?;
        } else {
            self.runtime.resume()?;
        }
        self.procs.set_paused(pause);
        self.conns.publish(if pause { &Event::Paused } else { &Event::Resumed });
        Ok(Response::default())
    }

    fn update(&mut self, resources: &serde_json::Value) -> Result<Response> {
        if !self.procs.init().is_live() {
            return Err(ShimError { kind: ErrorKind::FailedPrecondition, message: "the container is not running".into() });
        }
        self.runtime.update(resources)?;
        Ok(Response::default())
    }

    fn pids(&mut self) -> Result<Response> {
        if !self.procs.init().is_live() {
            return Ok(Response { pids: Some(Vec::new()), ..Default::default() });
        }
        let pids = self.runtime.ps()?;
        Ok(Response { pids: Some(pids), ..Default::default() })
    }

    fn delete(&mut self, exec_id: &str, force: bool) -> Result<Response> {
        let pi = self.procs.check_delete(exec_id, force)?;
        if self.procs.process(pi).is_live() {
            if pi == INIT && self.procs.init().status() == ProcessStatus::Paused {
                let _ = self.pause(false);
            }
            let _ = self.kill(exec_id, 9, pi == INIT);
            let _ = self.kill(exec_id, 9, false);
            let deadline = Instant::now() + KILL_WAIT;
            while self.procs.process(pi).is_live() && Instant::now() < deadline {
                match &self.procs.handles(pi).pidfd {
                    Some(fd) => {
                        let mut fds = [PollFd::new(fd, PollFlags::IN)];
                        let _ = poll(&mut fds, Some(&rustix::event::Timespec { tv_sec: 0, tv_nsec: 100_000_000 }));
                    }
                    None => std::thread::sleep(Duration::from_millis(50)),
                }
                self.reap();
            }
            if self.procs.process(pi).is_live() {
                return Err(fail(ErrorKind::Internal, format!("the process did not die within {KILL_WAIT:?} of SIGKILL")));
            }
        }
        if let Some(state) = self.procs.remove_exec(pi) {
            return Ok(Response { process: Some(state), ..Default::default() });
        }
        // The init: the task goes.
        if self.runtime_used {
            if let Err(e) = self.runtime.delete() {
                // Gone already is fine; anything else is reported and the shim stays.
                if !e.is_gone() {
                    return Err(e.into());
                }
            }
        }
        let _ = rustix::mount::unmount(files::ROOTFS, rustix::mount::UnmountFlags::DETACH);
        self.log.write_partials();
        self.exiting = Some(Instant::now());
        Ok(Response { process: Some(self.procs.init().state()), ..Default::default() })
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
                    if let Some(pi) = self.procs.exited(raw, code, now_nanos()) {
                        self.procs.handles_mut(pi).pidfd = None;
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
        if pi == INIT {
            self.log.end_all();
            let rec = self.procs.init().exit_record();
            if let Err(e) = write_atomic(Path::new(files::INIT_EXIT), &serde_json::to_vec(&rec).unwrap_or_default()) {
                eprintln!("berth-shim: recording the exit: {e}");
            }
        }
        // Stop writing to a process that has gone.
        self.procs.handles_mut(pi).stdio.input_gone();
        let state = self.procs.process(pi).state();
        let event = Event::Exited {
            exec_id: state.exec_id.clone(),
            pid: state.pid,
            exit_code: state.exit_code,
            started_at: state.started_at,
            exited_at: state.exited_at,
        };
        self.conns.exited(&state);
        self.conns.publish(&event);
    }

    fn read_output(&mut self, pi: usize, stream: Stream) {
        let mut buf = [0u8; 32 * 1024];
        loop {
            let Some((_, h)) = self.procs.get_mut(pi) else { return };
            match h.stdio.read_output(stream, &mut buf) {
                Output::Data(n) => self.output(pi, stream, &buf[..n]),
                Output::Ended => {
                    if pi == INIT {
                        self.log.end(stream);
                    }
                    return;
                }
                Output::Nothing => return,
                Output::Failed(e) => {
                    eprintln!("berth-shim: reading output: {e}");
                    return;
                }
            }
        }
    }

    fn output(&mut self, pi: usize, stream: Stream, data: &[u8]) {
        if pi == INIT {
            self.log.write(stream, data);
        }
        let exec_id = self.procs.process(pi).exec_id();
        if self.conns.has_attached(exec_id) {
            let frame = match stream {
                Stream::Stdout => Frame::Stdout(data.to_vec()),
                Stream::Stderr => Frame::Stderr(data.to_vec()),
            };
            self.conns.send_output(exec_id, &frame);
        }
    }

    fn write_stdin(&mut self, pi: usize) {
        if let Some((_, h)) = self.procs.get_mut(pi) {
            h.stdio.write_input();
        }
    }
}

/// Write a file whole or not at all. Not synced: the record has to survive
/// the agent, not the machine (containers do not survive a reboot either, and
/// the state directory is meant to be a tmpfs such as /run).
fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(data)?;
    fs::rename(&tmp, path)
}
