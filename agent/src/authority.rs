//! Any HTTP/2 `:authority` on the Unix socket.
//!
//! A gRPC client that dials a Unix socket has no host name to send, and each
//! kind fills `:authority` its own way: grpcio (gRPC core 1.57 and later) sends
//! the socket path percent-encoded (`run%2Fberth%2Fberthd.sock`), grpc-java
//! the bare path, grpc-go and older grpcio `localhost`. The `h2` crate under
//! tonic parses the field as a URI authority before any service sees the
//! request and resets the stream (RST_STREAM, PROTOCOL_ERROR) when it is not
//! one; no server setting relaxes that. On the socket the field names nothing
//! (one agent is at the other end), so berthd accepts whatever is there.
//!
//! [`AnyAuthority`] sits between the accepted socket and the HTTP/2 server. It
//! leaves the server's bytes alone and reads the client's frames: every header
//! block is decoded (HPACK, RFC 7541, tracking the client's dynamic table), an
//! `:authority` that is not a valid URI authority becomes `localhost`, and the
//! block is encoded again as plain literals (no indexing, no Huffman), so the
//! server's decoder never holds an entry the client doesn't know of. Every
//! other frame passes unchanged, and h2 goes on checking all of them. What h2
//! would have closed the connection for (an HPACK error, a header block that
//! is too large or interrupted) closes it here.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::codegen::http::uri::Authority;

/// The connection preface every HTTP/2 client sends first (RFC 9113, 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEAD: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

// These follow what berthd's HTTP/2 server announces (server.rs sets none of
// them, so they are hyper's and h2's defaults).
/// SETTINGS_MAX_FRAME_SIZE: a larger header frame is refused, as h2 would.
const MAX_FRAME: usize = 16_384;
/// SETTINGS_HEADER_TABLE_SIZE: the most a client's HPACK table may hold.
const TABLE_SIZE: usize = 4_096;
/// CONTINUATION frames before the last one of a header block: h2 takes no more
/// (its guard against CONTINUATION floods). A block is thus at most 7 frames.
const MAX_CONTINUATIONS: usize = 5;
/// A header list, decoded (RFC 7541 sizes): h2 closes the connection past four
/// times its 16 KiB limit. Re-encoded, such a list fits in four frames.
const MAX_LIST: usize = 64 * 1024;
/// What an unusable `:authority` becomes.
const LOCAL: &[u8] = b"localhost";

/// Why a client's byte stream was refused.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("HTTP/2 header frame of {0} bytes is larger than the {MAX_FRAME} allowed")]
    FrameTooLarge(usize),
    #[error("HTTP/2 header block in more than {MAX_CONTINUATIONS} CONTINUATION frames")]
    TooManyContinuations,
    #[error("HTTP/2 header block interrupted by another frame")]
    Interrupted,
    #[error("malformed HTTP/2 HEADERS frame: {0}")]
    Frame(&'static str),
    #[error("HPACK: {0}")]
    Hpack(&'static str),
}

/// A client connection whose header blocks reach the server with a usable
/// `:authority` (see the module comment). Writes pass straight through.
pub struct AnyAuthority<S> {
    inner: S,
    filter: Filter,
    chunk: Box<[u8]>,
    out: Vec<u8>,
    sent: usize,
    /// Why the client's bytes were refused: what came before is handed on,
    /// then only this error.
    failed: Option<String>,
}

impl<S> AnyAuthority<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, filter: Filter::default(), chunk: vec![0; MAX_FRAME].into_boxed_slice(), out: Vec::new(), sent: 0, failed: None }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AnyAuthority<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.sent < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.sent);
                buf.put_slice(&this.out[this.sent..this.sent + n]);
                this.sent += n;
                if this.sent == this.out.len() {
                    this.out.clear();
                    this.sent = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if let Some(why) = &this.failed {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why.clone())));
            }
            let mut read = ReadBuf::new(&mut this.chunk[..]);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            // A read that only completes a partial frame yields nothing yet: read on.
            if let Err(e) = this.filter.feed(read.filled(), &mut this.out) {
                tracing::debug!(error = %e, "client's HTTP/2 input refused");
                this.failed = Some(e.to_string());
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AnyAuthority<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for AnyAuthority<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[derive(Debug)]
enum Mode {
    /// This many bytes of the preface seen so far.
    Preface(usize),
    Frames,
    /// Not HTTP/2: the server will say so; nothing here is changed.
    Passthrough,
}

/// A header block waiting for its CONTINUATION frames.
#[derive(Debug)]
struct Open {
    stream: [u8; 4],
    end_stream: bool,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
    /// CONTINUATION frames so far, the last one aside.
    continuations: usize,
}

/// The client-to-server direction, as a byte-stream transformer.
#[derive(Debug)]
struct Filter {
    mode: Mode,
    /// Input not yet turned into output: at most a frame head or one header frame,
    /// plus the last read.
    pending: Vec<u8>,
    /// Bytes left of a frame being passed through.
    forward: usize,
    open: Option<Open>,
    hpack: Decoder,
}

impl Default for Filter {
    fn default() -> Self {
        Self { mode: Mode::Preface(0), pending: Vec::new(), forward: 0, open: None, hpack: Decoder::default() }
    }
}

impl Filter {
    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), FilterError> {
        if let Mode::Preface(seen) = self.mode {
            let n = input.len().min(PREFACE.len() - seen);
            if input[..n] == PREFACE[seen..seen + n] {
                out.extend_from_slice(&input[..n]);
                input = &input[n..];
                self.mode = if seen + n == PREFACE.len() { Mode::Frames } else { Mode::Preface(seen + n) };
            } else {
                self.mode = Mode::Passthrough;
            }
        }
        match self.mode {
            Mode::Passthrough => out.extend_from_slice(input),
            Mode::Preface(_) => {}
            Mode::Frames => {
                self.pending.extend_from_slice(input);
                let pending = std::mem::take(&mut self.pending);
                let result = self.frames(&pending, out);
                self.pending = pending;
                let used = result?;
                self.pending.drain(..used);
            }
        }
        Ok(())
    }

    /// Turn the whole frames (and parts of passed-through ones) at the start of
    /// `input` into output; returns how many bytes were used.
    fn frames(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, FilterError> {
        let mut at = 0;
        loop {
            if self.forward > 0 {
                let n = self.forward.min(input.len() - at);
                out.extend_from_slice(&input[at..at + n]);
                at += n;
                self.forward -= n;
                if self.forward > 0 {
                    return Ok(at);
                }
            }
            let Some(head) = input.get(at..at + FRAME_HEAD) else { return Ok(at) };
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let (kind, flags) = (head[3], head[4]);
            let stream = [head[5], head[6], head[7], head[8]];
            let is_continuation = kind == CONTINUATION && self.open.is_some();
            if kind != HEADERS && !is_continuation {
                if self.open.is_some() {
                    return Err(FilterError::Interrupted);
                }
                // Not a header block (a stray CONTINUATION too): h2 judges it as sent.
                out.extend_from_slice(head);
                at += FRAME_HEAD;
                self.forward = len;
                continue;
            }
            if len > MAX_FRAME {
                return Err(FilterError::FrameTooLarge(len));
            }
            let Some(payload) = input.get(at + FRAME_HEAD..at + FRAME_HEAD + len) else { return Ok(at) };
            at += FRAME_HEAD + len;
            if kind == HEADERS {
                if self.open.is_some() {
                    return Err(FilterError::Interrupted);
                }
                self.open = Some(headers_frame(flags, stream, payload)?);
            } else {
                let open = self.open.as_mut().expect("a block is open");
                if open.stream != stream {
                    return Err(FilterError::Interrupted);
                }
                if flags & END_HEADERS == 0 {
                    open.continuations += 1;
                    if open.continuations > MAX_CONTINUATIONS {
                        return Err(FilterError::TooManyContinuations);
                    }
                }
                open.block.extend_from_slice(payload);
            }
            if flags & END_HEADERS != 0 {
                let open = self.open.take().expect("a block is open");
                self.emit(open, out)?;
            }
        }
    }

    /// Decode a complete header block, mend its `:authority`, and write it out
    /// again in frames the server accepts.
    fn emit(&mut self, open: Open, out: &mut Vec<u8>) -> Result<(), FilterError> {
        let mut fields = self.hpack.decode(&open.block)?;
        for f in &mut fields {
            if f.name == b":authority" && Authority::try_from(&f.value[..]).is_err() {
                f.value = LOCAL.to_vec();
            }
        }
        let mut block = Vec::new();
        for f in &fields {
            encode_field(f, &mut block);
        }
        let mut first = Vec::with_capacity(MAX_FRAME);
        let mut flags = 0;
        if open.end_stream {
            flags |= END_STREAM;
        }
        if let Some(p) = open.priority {
            flags |= PRIORITY;
            first.extend_from_slice(&p);
        }
        let take = block.len().min(MAX_FRAME - first.len());
        first.extend_from_slice(&block[..take]);
        let mut rest = block[take..].chunks(MAX_FRAME).peekable();
        if rest.peek().is_none() {
            flags |= END_HEADERS;
        }
        frame(out, HEADERS, flags, open.stream, &first);
        while let Some(chunk) = rest.next() {
            let flags = if rest.peek().is_none() { END_HEADERS } else { 0 };
            frame(out, CONTINUATION, flags, open.stream, chunk);
        }
        Ok(())
    }
}

/// The parts of a HEADERS frame: padding goes, priority stays.
fn headers_frame(flags: u8, stream: [u8; 4], payload: &[u8]) -> Result<Open, FilterError> {
    let mut body = payload;
    let mut pad = 0;
    if flags & PADDED != 0 {
        let (&n, rest) = body.split_first().ok_or(FilterError::Frame("no pad length"))?;
        pad = usize::from(n);
        body = rest;
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        let p: [u8; 5] = body.get(..5).and_then(|p| p.try_into().ok()).ok_or(FilterError::Frame("short priority"))?;
        priority = Some(p);
        body = &body[5..];
    }
    if pad > body.len() {
        return Err(FilterError::Frame("padding longer than the frame"));
    }
    Ok(Open { stream, end_stream: flags & END_STREAM != 0, priority, block: body[..body.len() - pad].to_vec(), continuations: 0 })
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: [u8; 4], payload: &[u8]) {
    let len = payload.len();
    debug_assert!(len <= MAX_FRAME);
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream);
    out.extend_from_slice(payload);
}

/// One decoded header field.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Field {
    name: Vec<u8>,
    value: Vec<u8>,
    /// Sent as "never indexed" (a secret): kept so on the way out.
    sensitive: bool,
}

/// A literal without indexing (or never indexed), with a literal name, no Huffman.
fn encode_field(f: &Field, out: &mut Vec<u8>) {
    out.push(if f.sensitive { 0x10 } else { 0x00 });
    for s in [&f.name, &f.value] {
        encode_int(s.len(), 7, 0x00, out);
        out.extend_from_slice(s);
    }
}

/// An HPACK integer with an `n`-bit prefix, `high` holding the first byte's other bits.
fn encode_int(mut v: usize, n: u32, high: u8, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(high | v as u8);
        return;
    }
    out.push(high | max as u8);
    v -= max;
    while v >= 0x80 {
        out.push((v & 0x7f) as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The HPACK decoding side of one connection: the client's dynamic table.
#[derive(Debug)]
struct Decoder {
    /// Newest first.
    table: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self { table: VecDeque::new(), size: 0, max: TABLE_SIZE }
    }
}

/// An entry's size in the table, and its weight in a header list (RFC 7541, 4.1).
fn entry_size(name: &[u8], value: &[u8]) -> usize {
    name.len() + value.len() + 32
}

impl Decoder {
    fn decode(&mut self, mut b: &[u8]) -> Result<Vec<Field>, FilterError> {
        let mut fields = Vec::new();
        let mut list = 0;
        while let Some(&first) = b.first() {
            let field = if first & 0x80 != 0 {
                let (name, value) = self.get(decode_int(&mut b, 7)?)?;
                Field { name: name.to_vec(), value: value.to_vec(), sensitive: false }
            } else if first & 0x40 != 0 {
                let field = self.literal(&mut b, 6, false)?;
                self.insert(&field.name, &field.value);
                field
            } else if first & 0x20 != 0 {
                // A table size change belongs before the block's first field.
                if !fields.is_empty() {
                    return Err(FilterError::Hpack("table size update after a field"));
                }
                let max = decode_int(&mut b, 5)?;
                if max > TABLE_SIZE {
                    return Err(FilterError::Hpack("table size over the allowed size"));
                }
                self.max = max;
                self.evict(0);
                continue;
            } else {
                self.literal(&mut b, 4, first & 0x10 != 0)?
            };
            list += entry_size(&field.name, &field.value);
            if list > MAX_LIST {
                return Err(FilterError::Hpack("header list too large"));
            }
            fields.push(field);
        }
        Ok(fields)
    }

    /// A literal field whose name is indexed (with an `n`-bit prefix) or literal.
    fn literal(&self, b: &mut &[u8], n: u32, sensitive: bool) -> Result<Field, FilterError> {
        let name = match decode_int(b, n)? {
            0 => decode_string(b)?,
            i => self.get(i)?.0.to_vec(),
        };
        Ok(Field { name, value: decode_string(b)?, sensitive })
    }

    fn get(&self, index: usize) -> Result<(&[u8], &[u8]), FilterError> {
        match index {
            0 => Err(FilterError::Hpack("index 0")),
            i if i <= STATIC.len() => {
                let (n, v) = STATIC[i - 1];
                Ok((n.as_bytes(), v.as_bytes()))
            }
            i => {
                let (n, v) = self.table.get(i - STATIC.len() - 1).ok_or(FilterError::Hpack("index past the table"))?;
                Ok((n, v))
            }
        }
    }

    fn insert(&mut self, name: &[u8], value: &[u8]) {
        let size = entry_size(name, value);
        self.evict(size);
        // An entry larger than the whole table empties it and is not kept (RFC 7541, 4.4).
        if size <= self.max {
            self.table.push_front((name.to_vec(), value.to_vec()));
            self.size += size;
        }
    }

    /// Drop the oldest entries until `room` more bytes fit.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max {
            let Some((n, v)) = self.table.pop_back() else { break };
            self.size -= entry_size(&n, &v);
        }
    }
}

fn decode_int(b: &mut &[u8], n: u32) -> Result<usize, FilterError> {
    let (&first, rest) = b.split_first().ok_or(FilterError::Hpack("truncated integer"))?;
    *b = rest;
    let max = (1usize << n) - 1;
    let mut v = usize::from(first) & max;
    if v < max {
        return Ok(v);
    }
    // Four continuation bytes reach 2^28, far past anything a header block holds.
    for shift in [0, 7, 14, 21] {
        let (&byte, rest) = b.split_first().ok_or(FilterError::Hpack("truncated integer"))?;
        *b = rest;
        v += usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(FilterError::Hpack("integer too large"))
}

fn decode_string(b: &mut &[u8]) -> Result<Vec<u8>, FilterError> {
    let huffman = b.first().is_some_and(|f| f & 0x80 != 0);
    let len = decode_int(b, 7)?;
    if len > b.len() {
        return Err(FilterError::Hpack("truncated string"));
    }
    let (s, rest) = b.split_at(len);
    *b = rest;
    if huffman {
        huffman_decode(s)
    } else {
        Ok(s.to_vec())
    }
}

/// HPACK's static table (RFC 7541, Appendix A): name and value of indexes 1 to 61.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The length in bits of the Huffman code of each byte, then of EOS (RFC 7541,
/// Appendix B). The code is canonical: codes of one length are consecutive and
/// in symbol order, shorter ones first, so these lengths are the whole code.
#[rustfmt::skip]
const CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
     6, 10, 10, 12, 13,  6,  8, 11, 10, 10,  8, 11,  8,  6,  6,  6,
     5,  5,  5,  6,  6,  6,  6,  6,  6,  6,  7,  8, 15,  6, 12, 10,
    13,  6,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,
     7,  7,  7,  7,  7,  7,  7,  7,  8,  7,  8, 13, 19, 13, 14,  6,
    15,  5,  6,  5,  6,  5,  6,  6,  6,  5,  7,  7,  6,  6,  6,  5,
     6,  7,  6,  5,  5,  6,  7,  7,  7,  7,  7, 15, 11, 14, 13, 28,
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
    30,
];
const EOS: u16 = 256;
const LONGEST: usize = 30;

/// The canonical code laid out for decoding: for each length, its first code,
/// how many symbols have it, and where they start in `symbols`.
struct Canonical {
    first: [u32; LONGEST + 1],
    count: [u32; LONGEST + 1],
    start: [usize; LONGEST + 1],
    symbols: Vec<u16>,
}

fn canonical() -> &'static Canonical {
    static CODE: OnceLock<Canonical> = OnceLock::new();
    CODE.get_or_init(|| {
        let mut count = [0u32; LONGEST + 1];
        for &len in &CODE_LENGTHS {
            count[usize::from(len)] += 1;
        }
        let mut symbols: Vec<u16> = (0..=EOS).collect();
        symbols.sort_by_key(|&s| (CODE_LENGTHS[usize::from(s)], s));
        let (mut first, mut start) = ([0u32; LONGEST + 1], [0usize; LONGEST + 1]);
        let (mut code, mut index) = (0u32, 0usize);
        for len in 1..=LONGEST {
            first[len] = code;
            start[len] = index;
            code = (code + count[len]) << 1;
            index += count[len] as usize;
        }
        Canonical { first, count, start, symbols }
    })
}

fn huffman_decode(s: &[u8]) -> Result<Vec<u8>, FilterError> {
    let c = canonical();
    let mut out = Vec::with_capacity(s.len() * 8 / 5 + 1);
    let (mut code, mut len) = (0u32, 0usize);
    for byte in s {
        for bit in (0..8).rev() {
            code = code << 1 | u32::from(byte >> bit & 1);
            len += 1;
            // Every string of 30 bits starts with a code, so `len` never passes 30.
            let offset = code.wrapping_sub(c.first[len]);
            if offset < c.count[len] {
                let symbol = c.symbols[c.start[len] + offset as usize];
                if symbol == EOS {
                    return Err(FilterError::Hpack("EOS in a Huffman string"));
                }
                out.push(symbol as u8);
                code = 0;
                len = 0;
            }
        }
    }
    // What is left must be padding: fewer than 8 bits, all ones (EOS's first bits).
    if len > 7 || code != (1 << len) - 1 {
        return Err(FilterError::Hpack("bad Huffman padding"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn field(name: &str, value: &str) -> Field {
        Field { name: name.into(), value: value.into(), sensitive: false }
    }

    fn fields(list: &[(&str, &str)]) -> Vec<Field> {
        list.iter().map(|(n, v)| field(n, v)).collect()
    }

    /// A Huffman encoder from the same lengths, for the tests only.
    fn huffman_encode(s: &[u8]) -> Vec<u8> {
        let c = canonical();
        let code_of = |sym: u16| {
            let len = usize::from(CODE_LENGTHS[usize::from(sym)]);
            let rank = c.symbols[c.start[len]..].iter().position(|&x| x == sym).unwrap() as u32;
            (c.first[len] + rank, len)
        };
        let (mut out, mut acc, mut bits) = (Vec::new(), 0u64, 0);
        for &b in s {
            let (code, len) = code_of(u16::from(b));
            acc = acc << len | u64::from(code);
            bits += len;
            while bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        if bits > 0 {
            out.push((acc << (8 - bits)) as u8 | (0xff >> bits));
        }
        out
    }

    #[test]
    fn the_huffman_code_reads_the_strings_of_rfc_7541() {
        // Appendix C.4 and C.6.
        for (hex, text) in [
            ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"),
            ("a8eb 1064 9cbf", "no-cache"),
            ("25a8 49e9 5ba9 7d7f", "custom-key"),
            ("25a8 49e9 5bb8 e8b4 bf", "custom-value"),
            ("6402", "302"),
            ("aec3 771a 4b", "private"),
            ("d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff", "Mon, 21 Oct 2013 20:13:21 GMT"),
            ("9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3", "https://www.example.com"),
        ] {
            assert_eq!(huffman_decode(&unhex(hex)).unwrap(), text.as_bytes(), "{hex}");
            assert_eq!(huffman_encode(text.as_bytes()), unhex(hex), "{text}");
        }
        let every: Vec<u8> = (0..=255).collect();
        assert_eq!(huffman_decode(&huffman_encode(&every)).unwrap(), every);
        // The lengths make a complete prefix code.
        let kraft: f64 = CODE_LENGTHS.iter().map(|&l| 0.5f64.powi(i32::from(l))).sum();
        assert_eq!(kraft, 1.0);
    }

    #[test]
    fn bad_huffman_padding_and_eos_are_refused() {
        // "0" is 00000: three padding bits of ones make 0x07; zeros are not padding.
        assert_eq!(huffman_decode(&[0x07]).unwrap(), b"0");
        assert!(huffman_decode(&[0x00]).is_err());
        // A whole byte of padding.
        assert!(huffman_decode(&[0x07, 0xff]).is_err());
        // EOS itself: thirty ones.
        assert!(huffman_decode(&[0xff, 0xff, 0xff, 0xfc]).is_err());
    }

    #[test]
    fn the_decoder_follows_the_request_examples_of_rfc_7541() {
        let first = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")];
        let mut second = first.to_vec();
        second.push(("cache-control", "no-cache"));
        let third = [
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/index.html"),
            (":authority", "www.example.com"),
            ("custom-key", "custom-value"),
        ];
        // C.3 without Huffman, C.4 with it; each is three requests on one connection.
        for blocks in [
            [
                "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                "8286 84be 5808 6e6f 2d63 6163 6865",
                "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
            ],
            [
                "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
                "8286 84be 5886 a8eb 1064 9cbf",
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
            ],
        ] {
            let mut d = Decoder::default();
            assert_eq!(d.decode(&unhex(blocks[0])).unwrap(), fields(&first));
            assert_eq!(d.size, 57);
            assert_eq!(d.decode(&unhex(blocks[1])).unwrap(), fields(&second));
            assert_eq!(d.size, 110);
            assert_eq!(d.decode(&unhex(blocks[2])).unwrap(), fields(&third));
            assert_eq!(d.size, 164);
        }
    }

    #[test]
    fn the_table_evicts_and_takes_size_updates_only_first() {
        let mut d = Decoder::default();
        // Size update to 100, then a literal with indexing of 40 + 32 bytes, twice.
        let mut b = vec![0x3f, 100 - 31];
        for v in ["a", "b"] {
            b.push(0x40);
            encode_int(3, 7, 0, &mut b);
            b.extend_from_slice(b"key");
            encode_int(37, 7, 0, &mut b);
            b.extend_from_slice(v.repeat(37).as_bytes());
        }
        assert_eq!(d.decode(&b).unwrap().len(), 2);
        assert_eq!(d.table.len(), 1, "the first entry made room for the second");
        assert_eq!(d.get(62).unwrap().1, "b".repeat(37).as_bytes());
        assert!(d.get(63).is_err());
        assert!(d.decode(&[0x82, 0x20]).is_err(), "a size update after a field");
        assert!(Decoder::default().decode(&[0x3f, 0xe2, 0x1f]).is_err(), "a table larger than the server allows");
        assert!(Decoder::default().decode(&[0x80]).is_err(), "index 0");
        assert!(Decoder::default().decode(&[0x41, 0x05, b'a']).is_err(), "a truncated string");
        assert!(Decoder::default().decode(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]).is_err(), "an oversized integer");
    }

    /// The client side of a connection: the preface, SETTINGS, then frames.
    fn client(frames: &[(u8, u8, u32, Vec<u8>)]) -> Vec<u8> {
        let mut out = PREFACE.to_vec();
        frame(&mut out, 0x4, 0, [0; 4], &[0, 3, 0, 0, 0, 100]);
        for (kind, flags, stream, payload) in frames {
            let mut v = Vec::new();
            let len = payload.len();
            v.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, *kind, *flags]);
            v.extend_from_slice(&stream.to_be_bytes());
            v.extend_from_slice(payload);
            out.extend_from_slice(&v);
        }
        out
    }

    /// Feed `input` in pieces of `step` bytes; the output, or the first error.
    fn filter(input: &[u8], step: usize) -> Result<Vec<u8>, FilterError> {
        let mut f = Filter::default();
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            f.feed(piece, &mut out)?;
        }
        assert!(f.pending.is_empty() && f.open.is_none(), "whole frames in, whole frames out");
        Ok(out)
    }

    /// Split filtered output into its preface-less frames: (kind, flags, stream, payload).
    fn parse(out: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        assert_eq!(&out[..PREFACE.len()], PREFACE);
        let mut b = &out[PREFACE.len()..];
        let mut frames = Vec::new();
        while !b.is_empty() {
            let len = usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]);
            frames.push((b[3], b[4], u32::from_be_bytes([b[5], b[6], b[7], b[8]]), b[9..9 + len].to_vec()));
            b = &b[9 + len..];
        }
        frames
    }

    /// A literal with incremental indexing and an indexed name.
    fn indexed_literal(name_index: usize, value: &[u8], huffman: bool, out: &mut Vec<u8>) {
        encode_int(name_index, 6, 0x40, out);
        let v = if huffman { huffman_encode(value) } else { value.to_vec() };
        encode_int(v.len(), 7, if huffman { 0x80 } else { 0 }, out);
        out.extend_from_slice(&v);
    }

    fn request(authority: &str) -> Vec<(&str, &str)> {
        vec![(":method", "POST"), (":scheme", "http"), (":path", "/berth.v1.Version/Version"), (":authority", authority)]
    }

    #[test]
    fn an_authority_that_is_no_uri_authority_becomes_localhost_and_all_else_passes() {
        let path = "tmp%2Fberth-test%2Fstate%2Fberthd.sock";
        // Request 1 indexes its Huffman-coded authority, request 2 names it by index,
        // with DATA between them and a custom header that must arrive as sent.
        let mut first = vec![0x83, 0x86];
        indexed_literal(4, b"/berth.v1.Version/Version", false, &mut first);
        indexed_literal(1, path.as_bytes(), true, &mut first);
        first.extend_from_slice(&[0x10, 0x0f]);
        first.extend_from_slice(b"berth-namespace");
        first.extend_from_slice(&[0x07]);
        first.extend_from_slice(b"default");
        let second = vec![0x83, 0x86, 0xbf, 0xbe];
        let data = vec![0, 0, 0, 0, 0];
        let input =
            client(&[(HEADERS, END_HEADERS, 1, first), (0x0, END_STREAM, 1, data.clone()), (HEADERS, END_HEADERS | END_STREAM, 3, second)]);
        for step in [1, 7, input.len()] {
            let frames = parse(&filter(&input, step).unwrap());
            assert_eq!(frames.len(), 4);
            assert_eq!(frames[0], (0x4, 0, 0, vec![0, 3, 0, 0, 0, 100]), "SETTINGS unchanged");
            assert_eq!(frames[2], (0x0, END_STREAM, 1, data.clone()), "DATA unchanged");
            // The server's decoder needs no table: each block decodes afresh.
            let mut expected = fields(&request("localhost"));
            expected.push(Field { name: b"berth-namespace".to_vec(), value: b"default".to_vec(), sensitive: true });
            assert_eq!((frames[1].0, frames[1].1, frames[1].2), (HEADERS, END_HEADERS, 1));
            assert_eq!(Decoder::default().decode(&frames[1].3).unwrap(), expected);
            assert_eq!((frames[3].0, frames[3].1, frames[3].2), (HEADERS, END_HEADERS | END_STREAM, 3));
            assert_eq!(Decoder::default().decode(&frames[3].3).unwrap(), fields(&request("localhost")));
        }
    }

    #[test]
    fn a_valid_authority_and_headers_without_one_are_kept() {
        for authority in ["localhost", "localhost:1234", "berthd", "[::1]:80"] {
            let mut block = vec![0x83, 0x86];
            indexed_literal(4, b"/berth.v1.Version/Version", true, &mut block);
            indexed_literal(1, authority.as_bytes(), false, &mut block);
            let frames = parse(&filter(&client(&[(HEADERS, END_HEADERS, 1, block)]), 5).unwrap());
            assert_eq!(Decoder::default().decode(&frames[1].3).unwrap(), fields(&request(authority)));
        }
        for authority in ["/run/berth/berthd.sock", "", "a b", "x:1:2"] {
            let mut block = vec![0x83, 0x86];
            indexed_literal(4, b"/berth.v1.Version/Version", false, &mut block);
            indexed_literal(1, authority.as_bytes(), false, &mut block);
            let frames = parse(&filter(&client(&[(HEADERS, END_HEADERS, 1, block)]), 5).unwrap());
            assert_eq!(Decoder::default().decode(&frames[1].3).unwrap(), fields(&request("localhost")), "{authority:?}");
        }
    }

    #[test]
    fn padding_goes_priority_stays_and_a_long_block_is_split() {
        let long = "v".repeat(2 * MAX_FRAME);
        let mut block = vec![0x82];
        indexed_literal(58, long.as_bytes(), false, &mut block);
        // The client's own split: HEADERS (padded, with priority), then CONTINUATIONs.
        let mut head = vec![3];
        head.extend_from_slice(&[0, 0, 0, 0, 15]);
        head.extend_from_slice(&block[..100]);
        head.extend_from_slice(&[0; 3]);
        let mut frames = vec![(HEADERS, PADDED | PRIORITY | END_STREAM, 5, head)];
        for chunk in block[100..].chunks(MAX_FRAME) {
            frames.push((CONTINUATION, 0, 5, chunk.to_vec()));
        }
        frames.last_mut().unwrap().1 = END_HEADERS;
        let out = parse(&filter(&client(&frames), 1000).unwrap());
        let (kind, flags, stream, payload) = &out[1];
        assert_eq!((*kind, *flags, *stream), (HEADERS, PRIORITY | END_STREAM, 5));
        assert_eq!(payload.len(), MAX_FRAME);
        assert_eq!(&payload[..5], &[0, 0, 0, 0, 15]);
        let mut joined = payload[5..].to_vec();
        for (i, (kind, flags, stream, payload)) in out[2..].iter().enumerate() {
            let last = i == out.len() - 3;
            assert_eq!((*kind, *flags, *stream), (CONTINUATION, if last { END_HEADERS } else { 0 }, 5));
            assert!(payload.len() <= MAX_FRAME);
            joined.extend_from_slice(payload);
        }
        assert_eq!(Decoder::default().decode(&joined).unwrap(), fields(&[(":method", "GET"), ("user-agent", &long)]));
    }

    #[test]
    fn what_h2_would_refuse_closes_the_connection() {
        let block = vec![0x82];
        // A header frame over the frame size.
        assert!(matches!(
            filter(&client(&[(HEADERS, END_HEADERS, 1, vec![0x82; MAX_FRAME + 1])]), 100),
            Err(FilterError::FrameTooLarge(_))
        ));
        // Another frame inside a header block; a CONTINUATION of another stream.
        for other in [(0x0, 0, 1, vec![]), (CONTINUATION, END_HEADERS, 3, block.clone())] {
            let input = client(&[(HEADERS, 0, 1, block.clone()), other]);
            assert!(matches!(filter(&input, 100), Err(FilterError::Interrupted)));
        }
        // Padding longer than the frame.
        assert!(filter(&client(&[(HEADERS, END_HEADERS | PADDED, 1, vec![9, 0x82])]), 100).is_err());
        // A header list that decodes far larger than it is sent (one table entry, repeated).
        let mut bomb = Vec::new();
        indexed_literal(58, &[b'x'; 4000], false, &mut bomb);
        bomb.extend(std::iter::repeat_n(0xbe, 20));
        assert!(matches!(filter(&client(&[(HEADERS, END_HEADERS, 1, bomb)]), 100), Err(FilterError::Hpack(_))));
        // Endless CONTINUATION frames, however small.
        let mut frames = vec![(HEADERS, 0, 1, vec![0x82])];
        frames.extend(std::iter::repeat_n((CONTINUATION, 0, 1, vec![0x82]), MAX_CONTINUATIONS + 1));
        assert!(matches!(filter(&client(&frames), MAX_FRAME), Err(FilterError::TooManyContinuations)));
        // As many as h2 takes pass.
        frames.truncate(1 + MAX_CONTINUATIONS);
        frames.push((CONTINUATION, END_HEADERS, 1, vec![0x82]));
        let out = parse(&filter(&client(&frames), 3).unwrap());
        assert_eq!(Decoder::default().decode(&out[1].3).unwrap().len(), 2 + MAX_CONTINUATIONS);
    }

    #[test]
    fn a_stray_continuation_and_what_is_not_http2_pass_unchanged() {
        let input = client(&[(CONTINUATION, END_HEADERS, 1, vec![0x82])]);
        assert_eq!(filter(&input, 3).unwrap(), input);
        let http1 = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        assert_eq!(filter(&http1, 4).unwrap(), http1);
        let almost = b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n\x00\x00\x01\x01\x04".to_vec();
        assert_eq!(filter(&almost, 2).unwrap(), almost);
    }

    #[test]
    fn the_stream_wrapper_hands_on_filtered_bytes_and_writes_through() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let (client_end, server_end) = tokio::io::duplex(64);
            let mut block = vec![0x83, 0x86, 0x84];
            indexed_literal(1, b"%2Fsock", false, &mut block);
            let input = client(&[(HEADERS, END_HEADERS, 1, block)]);
            let mut server = AnyAuthority::new(server_end);
            let (mut client_read, mut client_write) = tokio::io::split(client_end);
            let writer = tokio::spawn(async move {
                client_write.write_all(&input).await.unwrap();
                client_write.shutdown().await.unwrap();
            });
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            writer.await.unwrap();
            let frames = parse(&got);
            assert_eq!(Decoder::default().decode(&frames[1].3).unwrap()[3], field(":authority", "localhost"));
            server.write_all(b"answer").await.unwrap();
            let mut answer = [0; 6];
            client_read.read_exact(&mut answer).await.unwrap();
            assert_eq!(&answer, b"answer");

            // What came before a refused frame is handed on, then the error, for good.
            let good = client(&[(0x0, 0, 1, vec![1, 2, 3])]);
            let mut input = good.clone();
            input.extend_from_slice(&[0, 0, 1, HEADERS, END_HEADERS | PADDED, 0, 0, 0, 1, 9]);
            let mut server = AnyAuthority::new(&input[..]);
            let mut got = vec![0; good.len()];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(got, good);
            for _ in 0..2 {
                let e = server.read(&mut [0; 10]).await.unwrap_err();
                assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
                assert!(e.to_string().contains("HEADERS"), "{e}");
            }
        });
    }
}
