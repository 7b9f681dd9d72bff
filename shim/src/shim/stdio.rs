//! The processes' stdio as the shim holds it: the ends of the pipes (or the
//! terminal) a process gets from the runtime, the input waiting for it, and
//! the init's output on its way to the CRI log.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::fs::{fcntl_setfl, OFlags};
use rustix::io::Errno;

use crate::log::{LogWriter, Stream};
use crate::protocol::ShimConfig;

/// Input waiting for a process to read it; beyond this the client is not read.
const MAX_STDIN_BACKLOG: usize = 1 << 20;
/// A partial line waits this long before it is logged as a `P` record (a prompt).
const PARTIAL_FLUSH: Duration = Duration::from_millis(500);

pub fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    fcntl_setfl(fd, flags | OFlags::NONBLOCK)?;
    Ok(())
}

/// A pipe whose ends both close on exec (the runtime gets its end as stdio).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    Ok((r, w))
}

/// What one read of a process's output gave.
pub enum Output {
    /// This many bytes.
    Data(usize),
    /// The end: the descriptor is closed now.
    Ended,
    /// Nothing now, or no such output.
    Nothing,
    Failed(Errno),
}

/// One process's stdio, the shim's side of it.
pub struct ProcessIo {
    tty: bool,
    /// Whether this process was given a stdin at all.
    want_stdin: bool,
    /// Ends handed to the runtime; dropped once it has started the process.
    child_stdin: Option<OwnedFd>,
    child_stdout: Option<OwnedFd>,
    child_stderr: Option<OwnedFd>,
    /// Input (pipe or terminal), output, error output. Non-blocking.
    stdin: Option<OwnedFd>,
    stdin_buf: VecDeque<u8>,
    stdin_close: bool,
    out: Option<OwnedFd>,
    err: Option<OwnedFd>,
    console: Option<OwnedFd>,
    /// A terminal size asked for before the terminal existed.
    pending_size: Option<(u16, u16)>,
}

impl ProcessIo {
    /// Pipes for a process without a terminal; a process with one gets it at start.
    pub fn new(tty: bool, want_stdin: bool) -> io::Result<Self> {
        let mut p = ProcessIo {
            tty,
            want_stdin,
            child_stdin: None,
            child_stdout: None,
            child_stderr: None,
            stdin: None,
            stdin_buf: VecDeque::new(),
            stdin_close: false,
            out: None,
            err: None,
            console: None,
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

    pub fn tty(&self) -> bool {
        self.tty
    }

    /// The process's ends, for the runtime (null where it has none). Once.
    pub fn take_child_stdio(&mut self) -> [std::process::Stdio; 3] {
        use std::process::Stdio;
        [
            self.child_stdin.take().map_or_else(Stdio::null, Stdio::from),
            self.child_stdout.take().map_or_else(Stdio::null, Stdio::from),
            self.child_stderr.take().map_or_else(Stdio::null, Stdio::from),
        ]
    }

    /// The terminal's master side, from the runtime: it is the input (if the
    /// process has one) and the output, and gets the size asked for so far.
    pub fn set_terminal(&mut self, master: OwnedFd) -> io::Result<()> {
        set_nonblocking(&master)?;
        if self.want_stdin {
            self.stdin = master.try_clone().ok();
        }
        self.out = master.try_clone().ok();
        self.console = Some(master);
        if let Some((w, h)) = self.pending_size.take() {
            self.resize(w, h);
        }
        Ok(())
    }

    /// Set the terminal's size, now or once there is a terminal.
    pub fn resize(&mut self, width: u16, height: u16) {
        match &self.console {
            Some(fd) => {
                let ws = rustix::termios::Winsize { ws_row: height, ws_col: width, ws_xpixel: 0, ws_ypixel: 0 };
                let _ = rustix::termios::tcsetwinsize(fd, ws);
            }
            None => self.pending_size = Some((width, height)),
        }
    }

    pub fn output_fd(&self, stream: Stream) -> Option<&OwnedFd> {
        match stream {
            Stream::Stdout => self.out.as_ref(),
            Stream::Stderr => self.err.as_ref(),
        }
    }

    /// Read some output into `buf`.
    pub fn read_output(&mut self, stream: Stream, buf: &mut [u8]) -> Output {
        loop {
            let Some(fd) = self.output_fd(stream) else { return Output::Nothing };
            match rustix::io::read(fd, &mut *buf) {
                Ok(0) | Err(Errno::IO) => {
                    // End of output (EIO: the terminal's other side closed).
                    match stream {
                        Stream::Stdout => self.out = None,
                        Stream::Stderr => self.err = None,
                    }
                    return Output::Ended;
                }
                Ok(n) => return Output::Data(n),
                Err(Errno::AGAIN) => return Output::Nothing,
                Err(Errno::INTR) => continue,
                Err(e) => return Output::Failed(e),
            }
        }
    }

    /// Stop reading output (the process never started).
    pub fn close_output(&mut self) {
        self.out = None;
        self.err = None;
    }

    /// Whether input sent now would reach the process: it has a stdin that
    /// is not closed, or will have one once it starts (`created`).
    pub fn accepts_input(&self, created: bool) -> bool {
        self.want_stdin && !self.stdin_close && (self.stdin.is_some() || created)
    }

    pub fn push_input(&mut self, data: Vec<u8>) {
        self.stdin_buf.extend(data);
    }

    /// Whether there is room for more input.
    pub fn has_input_room(&self) -> bool {
        self.stdin_buf.len() < MAX_STDIN_BACKLOG
    }

    /// The input descriptor, when input is waiting to be written.
    pub fn pending_input_fd(&self) -> Option<&OwnedFd> {
        self.stdin.as_ref().filter(|_| !self.stdin_buf.is_empty())
    }

    /// End the input once what is waiting has been written.
    pub fn close_input(&mut self) {
        self.stdin_close = true;
    }

    /// The process has gone: drop its input.
    pub fn input_gone(&mut self) {
        self.stdin = None;
        self.stdin_buf.clear();
    }

    /// Write what input is waiting, as far as the process takes it; then
    /// close the input if asked to.
    pub fn write_input(&mut self) {
        let Some(fd) = &self.stdin else { return };
        while !self.stdin_buf.is_empty() {
            let (a, _) = self.stdin_buf.as_slices();
            match rustix::io::write(fd, a) {
                Ok(n) => {
                    self.stdin_buf.drain(..n);
                }
                Err(Errno::AGAIN) => return,
                Err(Errno::INTR) => continue,
                Err(_) => {
                    self.stdin_buf.clear();
                    self.stdin = None;
                    return;
                }
            }
        }
        if self.stdin_close {
            if self.tty {
                // A terminal has no half-close: send end-of-file (^D), once.
                let _ = rustix::io::write(fd, &[4]);
            }
            self.stdin = None;
        }
    }
}

/// The init's output on its way to the CRI log. A partial line (a prompt) is
/// logged as a `P` record once it has waited [`PARTIAL_FLUSH`].
pub struct InitLog {
    writer: LogWriter,
    /// When the partial line of each stream started waiting.
    partial_since: [Option<Instant>; 2],
}

impl InitLog {
    pub fn open(cfg: &ShimConfig) -> io::Result<Self> {
        let writer = LogWriter::open(Path::new(&cfg.log_path), cfg.log_max_size, cfg.log_max_files)?;
        Ok(InitLog { writer, partial_since: [None, None] })
    }

    pub fn write(&mut self, stream: Stream, data: &[u8]) {
        if let Err(e) = self.writer.write(stream, data) {
            eprintln!("berth-shim: writing the log: {e}");
        }
        let since = &mut self.partial_since[stream as usize];
        if self.writer.has_partial(stream) {
            since.get_or_insert_with(Instant::now);
        } else {
            *since = None;
        }
    }

    /// Open the log's path again (see [`LogWriter::reopen`]).
    pub fn reopen(&mut self) -> io::Result<()> {
        self.writer.reopen()
    }

    /// The stream ended: log its partial line.
    pub fn end(&mut self, stream: Stream) {
        let _ = self.writer.flush_partial(stream);
        self.partial_since[stream as usize] = None;
    }

    /// The init exited: log both partial lines.
    pub fn end_all(&mut self) {
        for s in [Stream::Stdout, Stream::Stderr] {
            let _ = self.writer.flush_partial(s);
        }
        self.partial_since = [None, None];
    }

    /// Log the partial lines now (the task is going). Their timers run out
    /// in [`InitLog::flush_stale`], which then finds nothing left.
    pub fn write_partials(&mut self) {
        for s in [Stream::Stdout, Stream::Stderr] {
            let _ = self.writer.flush_partial(s);
        }
    }

    /// Log the partial lines that have waited long enough.
    pub fn flush_stale(&mut self) {
        for s in [Stream::Stdout, Stream::Stderr] {
            let since = &mut self.partial_since[s as usize];
            if since.is_some_and(|t| t.elapsed() >= PARTIAL_FLUSH) {
                *since = None;
                let _ = self.writer.flush_partial(s);
            }
        }
    }

    /// Whether a partial line is waiting (the event loop then wakes sooner).
    pub fn has_waiting_partial(&self) -> bool {
        self.partial_since.iter().any(Option::is_some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn read_all(fd: OwnedFd) -> Vec<u8> {
        let mut out = Vec::new();
        std::fs::File::from(fd).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn a_process_without_a_terminal_gets_pipes() {
        let p = ProcessIo::new(false, true).unwrap();
        assert!(p.child_stdin.is_some() && p.child_stdout.is_some() && p.child_stderr.is_some());
        assert!(p.output_fd(Stream::Stdout).is_some() && p.output_fd(Stream::Stderr).is_some());
        let p = ProcessIo::new(false, false).unwrap();
        assert!(p.child_stdin.is_none() && p.stdin.is_none());
        // A terminal comes from the runtime at start.
        let p = ProcessIo::new(true, true).unwrap();
        assert!(p.child_stdout.is_none() && p.output_fd(Stream::Stdout).is_none());
    }

    #[test]
    fn output_is_read_until_the_process_s_end_closes() {
        let mut p = ProcessIo::new(false, false).unwrap();
        let child_out = p.child_stdout.take().unwrap();
        let mut buf = [0u8; 64];
        assert!(matches!(p.read_output(Stream::Stdout, &mut buf), Output::Nothing));
        rustix::io::write(&child_out, b"hello").unwrap();
        assert!(matches!(p.read_output(Stream::Stdout, &mut buf), Output::Data(5)));
        assert_eq!(&buf[..5], b"hello");
        drop(child_out);
        assert!(matches!(p.read_output(Stream::Stdout, &mut buf), Output::Ended));
        assert!(p.output_fd(Stream::Stdout).is_none());
        assert!(matches!(p.read_output(Stream::Stdout, &mut buf), Output::Nothing));
    }

    #[test]
    fn input_is_written_in_order_then_closed_when_asked() {
        let mut p = ProcessIo::new(false, true).unwrap();
        let child_in = p.child_stdin.take().unwrap();
        // Input sent before the start waits for the process.
        assert!(p.accepts_input(true));
        p.push_input(b"one ".to_vec());
        p.push_input(b"two".to_vec());
        assert!(p.pending_input_fd().is_some());
        p.close_input();
        assert!(!p.accepts_input(false));
        p.write_input();
        assert!(p.pending_input_fd().is_none());
        assert!(p.stdin.is_none(), "closed once written");
        assert_eq!(read_all(child_in), b"one two");
    }

    #[test]
    fn input_is_refused_when_the_process_has_no_stdin_or_it_is_gone() {
        let p = ProcessIo::new(false, false).unwrap();
        assert!(!p.accepts_input(true));
        let mut p = ProcessIo::new(false, true).unwrap();
        p.input_gone();
        assert!(!p.accepts_input(false));
        // A process that has not started yet gets its stdin at start.
        assert!(p.accepts_input(true));
    }

    #[test]
    fn input_past_the_backlog_limit_leaves_no_room() {
        let mut p = ProcessIo::new(false, true).unwrap();
        assert!(p.has_input_room());
        p.push_input(vec![0; MAX_STDIN_BACKLOG]);
        assert!(!p.has_input_room());
    }

    #[test]
    fn a_size_asked_for_before_the_terminal_exists_is_kept_for_it() {
        let mut p = ProcessIo::new(true, false).unwrap();
        p.resize(120, 40);
        assert_eq!(p.pending_size, Some((120, 40)));
    }

    #[test]
    fn a_prompt_waits_in_the_init_log_until_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("c.log");
        let cfg: ShimConfig = serde_json::from_value(serde_json::json!({
            "id": "c", "namespace": "default", "runtime": "runc", "runtime_root": "/run/runc", "rootfs": [],
            "log_path": log_path, "log_max_size": 0, "log_max_files": 1, "tty": false, "stdin": false,
        }))
        .unwrap();
        let mut log = InitLog::open(&cfg).unwrap();
        log.write(Stream::Stdout, b"line\n");
        assert!(!log.has_waiting_partial());
        log.write(Stream::Stdout, b"$ ");
        assert!(log.has_waiting_partial());
        log.flush_stale();
        assert!(log.has_waiting_partial(), "not stale yet");
        log.end(Stream::Stdout);
        assert!(!log.has_waiting_partial());
        let text = std::fs::read_to_string(&log_path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].ends_with(" stdout F line") && lines[1].ends_with(" stdout P $ "), "{text}");
    }
}
