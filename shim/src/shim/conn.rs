//! The shim's clients. Each connection starts with one request line; most
//! get one answer line and close, while `wait`, `subscribe` and `attach`
//! turn the connection into a stream. Sockets are non-blocking, with a read
//! and a write buffer each: what a client sends is taken out as a request
//! line or as frames, what it is sent goes in as JSON lines or frames.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use crate::protocol::{frame, Event, Frame, FrameError, ProcessState, Request, Response};

/// Largest request line.
const MAX_REQUEST: usize = 1 << 20;
/// An attached client that falls this far behind is dropped (the container is never blocked).
const MAX_CONN_BACKLOG: usize = 4 << 20;
/// How long a client may take to send its request (or to read its answer once complete).
const IDLE_CONNECTION: Duration = Duration::from_secs(60);

/// What a connection is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Waiting for the request line.
    Request,
    /// Answer written (or being written); close when flushed.
    Closing,
    /// Waiting for this process's exit.
    Wait(String),
    /// Taking events.
    Subscribe,
    /// Attached to this process: output and its exit go out as frames, input comes in as frames.
    Attach(String),
}

/// What a read from a client gave.
pub enum Received {
    /// Bytes, now in the read buffer.
    Data,
    /// The client finished sending.
    End,
    /// Nothing now.
    Nothing,
    /// The connection broke.
    Broken,
}

/// The request line a client sent, as far as it has come.
pub enum RequestLine {
    Incomplete,
    /// Over [`MAX_REQUEST`] with no end in sight.
    TooLong,
    Parsed(Result<Request, serde_json::Error>),
}

pub struct Conn {
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
    fn new(stream: UnixStream) -> Self {
        Conn { stream, rbuf: Vec::new(), wbuf: VecDeque::new(), mode: Mode::Request, since: Instant::now(), input_done: false }
    }

    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// Turn a connection that has its request into a stream.
    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
    }

    /// Close once what is written has been read.
    pub fn close(&mut self) {
        self.mode = Mode::Closing;
        self.since = Instant::now();
    }

    /// Whether the client is still read from (its own state allowing).
    pub fn is_reading(&self) -> bool {
        !self.input_done && self.mode != Mode::Closing
    }

    /// The client finished sending; it still gets what it is sent.
    pub fn end_input(&mut self) {
        self.input_done = true;
    }

    /// For `poll`.
    pub fn stream_fd(&self) -> &UnixStream {
        &self.stream
    }

    pub fn has_output(&self) -> bool {
        !self.wbuf.is_empty()
    }

    pub fn send_line(&mut self, value: &impl serde::Serialize) {
        if let Ok(mut line) = serde_json::to_vec(value) {
            line.push(b'\n');
            self.wbuf.extend(line);
        }
    }

    pub fn send_frame(&mut self, frame: &Frame) {
        self.send_encoded(&frame.encode());
    }

    fn send_encoded(&mut self, bytes: &[u8]) {
        self.wbuf.extend(bytes);
    }

    /// Answer the request and close.
    pub fn answer(&mut self, resp: &Response) {
        self.send_line(resp);
        self.close();
    }

    /// Read what the client sent into the read buffer.
    pub fn receive(&mut self) -> Received {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match (&self.stream).read(&mut buf) {
                Ok(0) => return Received::End,
                Ok(n) => {
                    self.rbuf.extend_from_slice(&buf[..n]);
                    return Received::Data;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Received::Nothing,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Received::Broken,
            }
        }
    }

    /// Take the request line out of the read buffer.
    pub fn take_request(&mut self) -> RequestLine {
        let Some(nl) = self.rbuf.iter().position(|&b| b == b'\n') else {
            return if self.rbuf.len() > MAX_REQUEST { RequestLine::TooLong } else { RequestLine::Incomplete };
        };
        let line: Vec<u8> = self.rbuf.drain(..=nl).collect();
        RequestLine::Parsed(serde_json::from_slice(&line[..nl]))
    }

    /// Take the next whole frame out of the read buffer, as its kind and
    /// payload: `None` until it has all come; an error for a header over the
    /// size limit, past which the stream cannot be followed.
    pub fn take_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, FrameError> {
        let Some(header) = self.rbuf.first_chunk::<{ frame::HEADER_LEN }>() else { return Ok(None) };
        let Some((kind, len)) = frame::parse_header(header) else {
            return Err(FrameError::TooLong(u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize));
        };
        if self.rbuf.len() < frame::HEADER_LEN + len {
            return Ok(None);
        }
        let payload = self.rbuf.drain(..frame::HEADER_LEN + len).skip(frame::HEADER_LEN).collect();
        Ok(Some((kind, payload)))
    }

    /// Drop what the client sent (waiters and subscribers have nothing to say).
    pub fn discard_input(&mut self) {
        self.rbuf.clear();
    }

    /// Write what is pending, as far as the client takes it. False when the
    /// connection is done: closed and flushed, broken, or too far behind.
    fn flush(&mut self) -> bool {
        while !self.wbuf.is_empty() {
            let (a, _) = self.wbuf.as_slices();
            match (&self.stream).write(a) {
                Ok(0) => break,
                Ok(n) => {
                    self.wbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        if self.wbuf.is_empty() && self.mode == Mode::Closing {
            return false;
        }
        if self.wbuf.len() > MAX_CONN_BACKLOG {
            eprintln!("berth-shim: dropping a client that does not read its output");
            return false;
        }
        true
    }
}

/// The open connections, by slot: a slot is reused once its connection is gone.
#[derive(Default)]
pub struct Conns {
    slots: Vec<Option<Conn>>,
}

impl Conns {
    /// Take every connection waiting on `listener`.
    pub fn accept(&mut self, listener: &UnixListener) {
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let conn = Conn::new(stream);
                    match self.slots.iter().position(Option::is_none) {
                        Some(i) => self.slots[i] = Some(conn),
                        None => self.slots.push(Some(conn)),
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

    pub fn get(&self, i: usize) -> Option<&Conn> {
        self.slots.get(i)?.as_ref()
    }

    pub fn get_mut(&mut self, i: usize) -> Option<&mut Conn> {
        self.slots.get_mut(i)?.as_mut()
    }

    /// The open connections with their slots.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Conn)> {
        self.slots.iter().enumerate().filter_map(|(i, c)| Some((i, c.as_ref()?)))
    }

    /// Close connection `i` at once, unflushed.
    pub fn remove(&mut self, i: usize) {
        self.slots[i] = None;
    }

    /// Write what is pending on connection `i`; false when it is gone (now or before).
    pub fn flush(&mut self, i: usize) -> bool {
        let Some(c) = self.get_mut(i) else { return false };
        if !c.flush() {
            self.slots[i] = None;
            return false;
        }
        true
    }

    /// Whether every answer has been written.
    pub fn all_flushed(&self) -> bool {
        self.iter().all(|(_, c)| !c.has_output())
    }

    /// Answer connection `i`'s request and close it.
    pub fn answer(&mut self, i: usize, resp: &Response) {
        if let Some(c) = self.get_mut(i) {
            c.answer(resp);
            self.flush(i);
        }
    }

    /// Whether a client is attached to `exec_id`.
    pub fn has_attached(&self, exec_id: &str) -> bool {
        self.iter().any(|(_, c)| matches!(&c.mode, Mode::Attach(id) if id == exec_id))
    }

    /// Send output to the clients attached to `exec_id`.
    pub fn send_output(&mut self, exec_id: &str, frame: &Frame) {
        let bytes = frame.encode();
        let mut touched = Vec::new();
        for (i, c) in self.slots.iter_mut().enumerate() {
            if let Some(c) = c {
                if matches!(&c.mode, Mode::Attach(id) if id == exec_id) {
                    c.send_encoded(&bytes);
                    touched.push(i);
                }
            }
        }
        for i in touched {
            self.flush(i);
        }
    }

    /// A process exited: its waiters get its state, its attached clients the
    /// exit frame, and both are closed.
    pub fn exited(&mut self, state: &ProcessState) {
        for i in 0..self.slots.len() {
            let Some(c) = self.slots[i].as_mut() else { continue };
            match &c.mode {
                Mode::Wait(id) if *id == state.exec_id => {
                    c.send_line(&Response { process: Some(state.clone()), ..Default::default() });
                    c.close();
                }
                Mode::Attach(id) if *id == state.exec_id => {
                    c.send_frame(&Frame::Exit(state.exit_code));
                    c.close();
                }
                _ => continue,
            }
            self.flush(i);
        }
    }

    /// Send an event to every subscriber.
    pub fn publish(&mut self, event: &Event) {
        for i in 0..self.slots.len() {
            if let Some(c) = self.slots[i].as_mut() {
                if c.mode == Mode::Subscribe {
                    c.send_line(event);
                    self.flush(i);
                }
            }
        }
    }

    /// Close the connections that have not sent their request line in time,
    /// or whose answer has not been read in time.
    pub fn drop_idle(&mut self) {
        for c in self.slots.iter_mut() {
            if c.as_ref().is_some_and(|c| matches!(c.mode, Mode::Request | Mode::Closing) && c.since.elapsed() > IDLE_CONNECTION) {
                *c = None;
            }
        }
    }
}

