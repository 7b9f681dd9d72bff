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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ProcessStatus;
    use std::io::BufRead;

    /// A connection and the client's end of it.
    fn pair() -> (Conn, UnixStream) {
        let (shim, client) = UnixStream::pair().unwrap();
        shim.set_nonblocking(true).unwrap();
        (Conn::new(shim), client)
    }

    /// Connections accepted from clients in these modes, and the clients' ends.
    fn conns(modes: &[Mode]) -> (Conns, Vec<UnixStream>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("s")).unwrap();
        listener.set_nonblocking(true).unwrap();
        let clients: Vec<UnixStream> = modes.iter().map(|_| UnixStream::connect(dir.path().join("s")).unwrap()).collect();
        let mut conns = Conns::default();
        conns.accept(&listener);
        for (i, mode) in modes.iter().enumerate() {
            conns.get_mut(i).unwrap().set_mode(mode.clone());
        }
        (conns, clients, dir)
    }

    fn state(exec_id: &str, exit_code: i32) -> ProcessState {
        ProcessState { exec_id: exec_id.into(), pid: 9, status: ProcessStatus::Exited, exit_code, started_at: 1, exited_at: 2 }
    }

    #[test]
    fn a_request_line_split_across_reads_is_taken_whole() {
        let (mut c, mut client) = pair();
        client.write_all(b"{\"op\":\"wa").unwrap();
        assert!(matches!(c.receive(), Received::Data));
        assert!(matches!(c.take_request(), RequestLine::Incomplete));
        client.write_all(b"it\",\"exec_id\":\"e1\"}\n").unwrap();
        assert!(matches!(c.receive(), Received::Data));
        assert!(matches!(c.take_request(), RequestLine::Parsed(Ok(Request::Wait { exec_id })) if exec_id == "e1"));
        assert!(matches!(c.receive(), Received::Nothing));
        drop(client);
        assert!(matches!(c.receive(), Received::End));
    }

    #[test]
    fn a_bad_request_line_is_a_parse_error() {
        let (mut c, mut client) = pair();
        client.write_all(b"{\"op\":\"fly\"}\n").unwrap();
        c.receive();
        assert!(matches!(c.take_request(), RequestLine::Parsed(Err(_))));
    }

    #[test]
    fn a_request_line_without_an_end_past_the_limit_is_too_long() {
        let (mut c, _client) = pair();
        c.rbuf = vec![b' '; MAX_REQUEST + 1];
        assert!(matches!(c.take_request(), RequestLine::TooLong));
        c.rbuf.truncate(MAX_REQUEST);
        assert!(matches!(c.take_request(), RequestLine::Incomplete));
    }

    #[test]
    fn frames_an_attached_client_sends_come_out_one_by_one() {
        let (mut c, _client) = pair();
        let frames = [Frame::Stdin(b"ls\n".to_vec()), Frame::Resize { width: 80, height: 24 }, Frame::CloseStdin];
        let bytes: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        // All but the last byte: the last frame waits.
        c.rbuf = bytes[..bytes.len() - 1].to_vec();
        let mut got = Vec::new();
        while let Some((kind, payload)) = c.take_frame().unwrap() {
            got.push(Frame::from_parts(kind, payload).unwrap());
        }
        assert_eq!(got, frames[..2]);
        c.rbuf.push(*bytes.last().unwrap());
        let (kind, payload) = c.take_frame().unwrap().unwrap();
        assert_eq!(Frame::from_parts(kind, payload), Ok(Frame::CloseStdin));
        assert!(c.rbuf.is_empty());
    }

    #[test]
    fn a_frame_header_over_the_size_limit_breaks_the_stream() {
        let (mut c, _client) = pair();
        c.rbuf = frame::header(frame::STDIN, frame::MAX_PAYLOAD + 1).to_vec();
        assert_eq!(c.take_frame(), Err(FrameError::TooLong(frame::MAX_PAYLOAD + 1)));
    }

    #[test]
    fn an_answer_closes_the_connection_once_it_is_read() {
        let (mut conns, clients, _dir) = conns(&[Mode::Request]);
        conns.answer(0, &Response::default());
        // Written whole at once: the connection is done.
        assert!(conns.get(0).is_none());
        let mut line = String::new();
        io::BufReader::new(&clients[0]).read_line(&mut line).unwrap();
        assert_eq!(line, "{}\n");
    }

    #[test]
    fn an_exit_answers_the_waiters_and_ends_the_attached_clients_of_that_process_only() {
        let (mut conns, clients, _dir) = conns(&[
            Mode::Wait("e1".into()),
            Mode::Attach("e1".into()),
            Mode::Wait("e2".into()),
            Mode::Subscribe,
            Mode::Attach(String::new()),
        ]);
        conns.exited(&state("e1", 3));
        assert!(conns.get(0).is_none() && conns.get(1).is_none());
        assert_eq!(conns.iter().map(|(i, _)| i).collect::<Vec<_>>(), [2, 3, 4]);
        let mut line = String::new();
        io::BufReader::new(&clients[0]).read_line(&mut line).unwrap();
        let resp: Response = serde_json::from_str(&line).unwrap();
        assert_eq!(resp.process, Some(state("e1", 3)));
        let mut bytes = Vec::new();
        (&clients[1]).read_to_end(&mut bytes).unwrap();
        assert_eq!(Frame::decode(&bytes), Ok(Some((Frame::Exit(3), bytes.len()))));
    }

    #[test]
    fn output_goes_to_the_clients_attached_to_its_process() {
        let (mut conns, clients, _dir) = conns(&[Mode::Attach("e1".into()), Mode::Attach("e2".into()), Mode::Subscribe]);
        assert!(conns.has_attached("e1") && !conns.has_attached(""));
        conns.send_output("e1", &Frame::Stdout(b"hello\n".to_vec()));
        let expected = Frame::Stdout(b"hello\n".to_vec()).encode();
        let mut got = vec![0; expected.len()];
        (&clients[0]).read_exact(&mut got).unwrap();
        assert_eq!(got, expected);
        for (i, c) in conns.iter() {
            assert!(!c.has_output(), "{i}");
        }
        clients[1].set_nonblocking(true).unwrap();
        assert_eq!((&clients[1]).read(&mut [0; 1]).map_err(|e| e.kind()), Err(io::ErrorKind::WouldBlock));
    }

    #[test]
    fn events_go_to_subscribers_only() {
        let (mut conns, clients, _dir) = conns(&[Mode::Subscribe, Mode::Wait(String::new()), Mode::Subscribe]);
        conns.publish(&Event::Paused);
        for i in [0, 2] {
            let mut line = String::new();
            io::BufReader::new(&clients[i]).read_line(&mut line).unwrap();
            assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), Event::Paused);
        }
        clients[1].set_nonblocking(true).unwrap();
        assert_eq!((&clients[1]).read(&mut [0; 1]).map_err(|e| e.kind()), Err(io::ErrorKind::WouldBlock));
        assert!(conns.all_flushed());
    }

    #[test]
    fn a_client_that_does_not_read_its_output_is_dropped() {
        let (mut conns, _clients, _dir) = conns(&[Mode::Attach(String::new())]);
        let chunk = Frame::Stdout(vec![b'x'; frame::MAX_PAYLOAD]);
        let mut sent = 0;
        while conns.get(0).is_some() {
            conns.send_output("", &chunk);
            sent += frame::MAX_PAYLOAD;
            assert!(sent <= 2 * MAX_CONN_BACKLOG + (8 << 20), "never dropped");
        }
    }
}
