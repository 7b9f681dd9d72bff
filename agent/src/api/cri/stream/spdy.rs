//! SPDY/3.1 framing, as the kubelet's streaming clients speak it after an HTTP upgrade
//! (`Upgrade: SPDY/3.1`): frames, header blocks, and the header compression (zlib with the
//! protocol's fixed dictionary, one compression context per direction for the whole
//! connection, each block ending on a sync flush).
//!
//! A frame is 8 bytes of header and up to 16 MiB of payload:
//! - control: `1 | version(15) | type(16) | flags(8) | length(24)`;
//! - data: `0 | stream-id(31) | flags(8) | length(24)`.
//!
//! Flow control (WINDOW_UPDATE) is read and ignored: the clients that upgrade to SPDY here
//! do not send window updates either, and never wait for one.

use std::io;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt};

pub const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes used here.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_REFUSED_STREAM: u32 = 3;
pub const RST_CANCEL: u32 = 5;

/// The largest frame taken (the clients send data in 32 KiB pieces).
pub const MAX_FRAME: usize = 1 << 20;
/// The most a header block may inflate to (the clients send a handful of short headers).
const MAX_HEADER_BLOCK: usize = 256 << 10;

/// Header names (lower case, as SPDY sends them) and values.
pub type Headers = Vec<(String, String)>;

/// The first value of header `name` (names compare case-insensitively).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream: u32,
        fin: bool,
        data: Vec<u8>,
    },
    SynStream {
        stream: u32,
        associated: u32,
        priority: u8,
        fin: bool,
        headers: Headers,
    },
    SynReply {
        stream: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    Settings {
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_stream: u32,
        status: u32,
    },
    Headers {
        stream: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream: u32,
        delta: u32,
    },
    /// A control frame of a type this side does not know: skipped, as the protocol says.
    Unknown {
        kind: u16,
    },
}

/// One direction's header compression or decompression, for the life of a connection.
pub struct Codec {
    deflate: Compress,
    inflate: Decompress,
}

impl Default for Codec {
    fn default() -> Self {
        Self::new()
    }
}

impl Codec {
    pub fn new() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        // The dictionary is set before the first byte, so the stream's header names it.
        deflate.set_dictionary(&dictionary()).expect("a fresh deflate stream takes a dictionary");
        Codec { deflate, inflate: Decompress::new(true) }
    }

    /// Encode `frame` (its header block compressed with this side's context).
    pub fn encode(&mut self, frame: &Frame) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(64);
        match frame {
            Frame::Data { stream, fin, data } => {
                check_len(data.len())?;
                out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
                push_flags_len(&mut out, if *fin { FLAG_FIN } else { 0 }, data.len());
                out.extend_from_slice(data);
            }
            Frame::SynStream { stream, associated, priority, fin, headers } => {
                let mut body = Vec::new();
                body.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
                body.extend_from_slice(&(associated & 0x7fff_ffff).to_be_bytes());
                body.push((priority & 0x7) << 5);
                body.push(0);
                body.extend(self.compress(headers)?);
                control(&mut out, SYN_STREAM, if *fin { FLAG_FIN } else { 0 }, &body)?;
            }
            Frame::SynReply { stream, fin, headers } | Frame::Headers { stream, fin, headers } => {
                let mut body = (stream & 0x7fff_ffff).to_be_bytes().to_vec();
                body.extend(self.compress(headers)?);
                let kind = if matches!(frame, Frame::SynReply { .. }) { SYN_REPLY } else { HEADERS };
                control(&mut out, kind, if *fin { FLAG_FIN } else { 0 }, &body)?;
            }
            Frame::RstStream { stream, status } => {
                let mut body = (stream & 0x7fff_ffff).to_be_bytes().to_vec();
                body.extend_from_slice(&status.to_be_bytes());
                control(&mut out, RST_STREAM, 0, &body)?;
            }
            Frame::Settings { entries } => {
                let mut body = (entries.len() as u32).to_be_bytes().to_vec();
                for (flags, id, value) in entries {
                    body.push(*flags);
                    body.extend_from_slice(&id.to_be_bytes()[1..]);
                    body.extend_from_slice(&value.to_be_bytes());
                }
                control(&mut out, SETTINGS, 0, &body)?;
            }
            Frame::Ping { id } => control(&mut out, PING, 0, &id.to_be_bytes())?,
            Frame::GoAway { last_stream, status } => {
                let mut body = (last_stream & 0x7fff_ffff).to_be_bytes().to_vec();
                body.extend_from_slice(&status.to_be_bytes());
                control(&mut out, GOAWAY, 0, &body)?;
            }
            Frame::WindowUpdate { stream, delta } => {
                let mut body = (stream & 0x7fff_ffff).to_be_bytes().to_vec();
                body.extend_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
                control(&mut out, WINDOW_UPDATE, 0, &body)?;
            }
            Frame::Unknown { kind } => control(&mut out, *kind, 0, &[])?,
        }
        Ok(out)
    }

    /// Read one frame; None at a clean end of the connection (between frames).
    pub async fn read(&mut self, r: &mut (impl AsyncRead + Unpin)) -> io::Result<Option<Frame>> {
        let mut head = [0u8; 8];
        match r.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if len > MAX_FRAME {
            return Err(bad(format!("a frame of {len} bytes (at most {MAX_FRAME})")));
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).await?;
        self.decode(head, payload).map(Some)
    }

    /// Decode a frame from its 8-byte header and its payload.
    pub fn decode(&mut self, head: [u8; 8], payload: Vec<u8>) -> io::Result<Frame> {
        let flags = head[4];
        let fin = flags & FLAG_FIN != 0;
        if head[0] & 0x80 == 0 {
            let stream = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
            return Ok(Frame::Data { stream, fin, data: payload });
        }
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != VERSION {
            return Err(bad(format!("SPDY version {version} (this side speaks 3)")));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let p = &payload;
        let u32_at = |at: usize| -> io::Result<u32> {
            p.get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| bad(format!("a short frame of type {kind}")))
        };
        Ok(match kind {
            SYN_STREAM => {
                let stream = u32_at(0)? & 0x7fff_ffff;
                let associated = u32_at(4)? & 0x7fff_ffff;
                let priority = p.get(8).copied().unwrap_or(0) >> 5;
                let headers = self.decompress(p.get(10..).ok_or_else(|| bad("a short SYN_STREAM".into()))?)?;
                Frame::SynStream { stream, associated, priority, fin, headers }
            }
            SYN_REPLY | HEADERS => {
                let stream = u32_at(0)? & 0x7fff_ffff;
                let headers = self.decompress(&p[4..])?;
                if kind == SYN_REPLY {
                    Frame::SynReply { stream, fin, headers }
                } else {
                    Frame::Headers { stream, fin, headers }
                }
            }
            RST_STREAM => Frame::RstStream { stream: u32_at(0)? & 0x7fff_ffff, status: u32_at(4)? },
            SETTINGS => {
                let n = u32_at(0)? as usize;
                if p.len() != 4 + n.saturating_mul(8) {
                    return Err(bad(format!("a SETTINGS frame of {} bytes for {n} entries", p.len())));
                }
                let entries =
                    (0..n).map(|i| (p[4 + 8 * i], u32_at(4 + 8 * i).unwrap_or(0) & 0x00ff_ffff, u32_at(8 + 8 * i).unwrap_or(0))).collect();
                Frame::Settings { entries }
            }
            PING => Frame::Ping { id: u32_at(0)? },
            GOAWAY => Frame::GoAway { last_stream: u32_at(0)? & 0x7fff_ffff, status: u32_at(4).unwrap_or(0) },
            WINDOW_UPDATE => Frame::WindowUpdate { stream: u32_at(0)? & 0x7fff_ffff, delta: u32_at(4)? & 0x7fff_ffff },
            kind => Frame::Unknown { kind },
        })
    }

    fn compress(&mut self, headers: &Headers) -> io::Result<Vec<u8>> {
        let mut block = (headers.len() as u32).to_be_bytes().to_vec();
        for (k, v) in headers {
            block.extend_from_slice(&(k.len() as u32).to_be_bytes());
            block.extend_from_slice(k.to_ascii_lowercase().as_bytes());
            block.extend_from_slice(&(v.len() as u32).to_be_bytes());
            block.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(block.len() + 64);
        let mut input = &block[..];
        loop {
            out.reserve(block.len() + 64);
            let before = self.deflate.total_in();
            self.deflate.compress_vec(input, &mut out, FlushCompress::Sync).map_err(|e| bad(format!("compressing headers: {e}")))?;
            input = &input[(self.deflate.total_in() - before) as usize..];
            // Done when all is in and the flush left room to spare (nothing more pending).
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    fn decompress(&mut self, mut input: &[u8]) -> io::Result<Headers> {
        let mut block = Vec::with_capacity(input.len() * 4 + 64);
        while !input.is_empty() {
            if block.len() >= MAX_HEADER_BLOCK {
                return Err(bad("a header block larger than 256 KiB".into()));
            }
            block.reserve(input.len() * 4 + 256);
            let before = self.inflate.total_in();
            match self.inflate.decompress_vec(input, &mut block, FlushDecompress::Sync) {
                Ok(Status::Ok | Status::BufError | Status::StreamEnd) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate.set_dictionary(&dictionary()).map_err(|e| bad(format!("the header dictionary: {e}")))?;
                }
                Err(e) => return Err(bad(format!("inflating headers: {e}"))),
            }
            let used = (self.inflate.total_in() - before) as usize;
            input = &input[used..];
            if used == 0 && block.len() < block.capacity() && !input.is_empty() && self.inflate.total_in() > 0 {
                // No progress with room to spare: the rest belongs to no deflate block.
                return Err(bad("trailing bytes after a header block".into()));
            }
        }
        parse_block(&block)
    }
}

fn parse_block(b: &[u8]) -> io::Result<Headers> {
    let mut at = 0usize;
    let mut next = |n: usize| -> io::Result<&[u8]> {
        let s = b.get(at..at + n).ok_or_else(|| bad("a header block cut short".into()))?;
        at += n;
        Ok(s)
    };
    let be = |s: &[u8]| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize;
    let count = be(next(4)?);
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let n = be(next(4)?);
        let name = String::from_utf8_lossy(next(n)?).to_ascii_lowercase();
        let n = be(next(4)?);
        let value = next(n)?;
        // Several values of one name are separated by NULs.
        for v in value.split(|&c| c == 0) {
            headers.push((name.clone(), String::from_utf8_lossy(v).into_owned()));
        }
    }
    Ok(headers)
}

fn check_len(len: usize) -> io::Result<()> {
    if len >= 1 << 24 {
        return Err(bad(format!("a frame of {len} bytes (at most 16 MiB)")));
    }
    Ok(())
}

fn push_flags_len(out: &mut Vec<u8>, flags: u8, len: usize) {
    out.push(flags);
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
}

fn control(out: &mut Vec<u8>, kind: u16, flags: u8, body: &[u8]) -> io::Result<()> {
    check_len(body.len())?;
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    push_flags_len(out, flags, body.len());
    out.extend_from_slice(body);
    Ok(())
}

fn bad(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("SPDY: {why}"))
}

/// The zlib dictionary of SPDY/3 header blocks (the spec's section 2.6.10.1): common
/// header names and values, each after its 32-bit length, then a run of common text.
pub fn dictionary() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TEXT: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized",
        "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable",
        "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
        "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
        "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    );
    let mut d = Vec::with_capacity(1423);
    for w in WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(TEXT.as_bytes());
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdrs(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn roundtrip(tx: &mut Codec, rx: &mut Codec, f: &Frame) -> Frame {
        let bytes = tx.encode(f).unwrap();
        let head: [u8; 8] = bytes[..8].try_into().unwrap();
        rx.decode(head, bytes[8..].to_vec()).unwrap()
    }

    #[test]
    fn the_dictionary_has_the_specs_size() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\0\0\0\x07options");
        assert!(d.ends_with(b",*,enq=0."));
    }

    #[test]
    fn frames_have_the_specs_layout() {
        let mut c = Codec::new();
        // Data: stream id with the high bit clear, flags, 24-bit length.
        let b = c.encode(&Frame::Data { stream: 5, fin: true, data: b"hi".to_vec() }).unwrap();
        assert_eq!(b, [0, 0, 0, 5, 1, 0, 0, 2, b'h', b'i']);
        // PING: control bit, version 3, type 6, length 4.
        let b = c.encode(&Frame::Ping { id: 7 }).unwrap();
        assert_eq!(b, [0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 7]);
        let b = c.encode(&Frame::RstStream { stream: 3, status: RST_CANCEL }).unwrap();
        assert_eq!(b, [0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 3, 0, 0, 0, 5]);
        let b = c.encode(&Frame::GoAway { last_stream: 9, status: 0 }).unwrap();
        assert_eq!(b, [0x80, 3, 0, 7, 0, 0, 0, 8, 0, 0, 0, 9, 0, 0, 0, 0]);
        // SETTINGS: a count, then flags(8) id(24) value(32) per entry.
        let b = c.encode(&Frame::Settings { entries: vec![(0, 7, 65536)] }).unwrap();
        assert_eq!(b, [0x80, 3, 0, 4, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 7, 0, 1, 0, 0]);
    }

    #[test]
    fn header_blocks_go_through_one_context_per_direction() {
        let (mut client, mut server) = (Codec::new(), Codec::new());
        let first = Frame::SynStream {
            stream: 1,
            associated: 0,
            priority: 0,
            fin: false,
            headers: hdrs(&[("streamtype", "error"), ("port", "80")]),
        };
        assert_eq!(roundtrip(&mut client, &mut server, &first), first);
        // The second block refers back to the first's text: only the same context reads it.
        let second =
            Frame::SynStream { stream: 3, associated: 0, priority: 0, fin: true, headers: hdrs(&[("streamtype", "data"), ("port", "80")]) };
        assert_eq!(roundtrip(&mut client, &mut server, &second), second);
        let reply = Frame::SynReply { stream: 3, fin: false, headers: vec![] };
        assert_eq!(roundtrip(&mut server, &mut client, &reply), reply);
        // A new context cannot read the middle of another's stream.
        let bytes = client.encode(&Frame::Headers { stream: 3, fin: false, headers: hdrs(&[("a", "b")]) }).unwrap();
        assert!(Codec::new().decode(bytes[..8].try_into().unwrap(), bytes[8..].to_vec()).is_err());
    }

    #[test]
    fn the_first_block_names_the_dictionary_and_a_plain_zlib_reader_needs_it() {
        let mut c = Codec::new();
        let bytes = c.encode(&Frame::SynReply { stream: 1, fin: false, headers: hdrs(&[("content-type", "text/plain")]) }).unwrap();
        let z = &bytes[12..];
        // zlib header with FDICT set, then the dictionary's Adler-32.
        assert_eq!(z[1] & 0x20, 0x20);
        let id = u32::from_be_bytes([z[2], z[3], z[4], z[5]]);
        assert_eq!(id, adler32(&dictionary()));
    }

    fn adler32(d: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &x in d {
            a = (a + x as u32) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    }

    #[test]
    fn values_split_on_nul_and_names_are_lower_case() {
        let mut block = 1u32.to_be_bytes().to_vec();
        block.extend_from_slice(&4u32.to_be_bytes());
        block.extend_from_slice(b"Port");
        block.extend_from_slice(&6u32.to_be_bytes());
        block.extend_from_slice(b"80\x00443");
        assert_eq!(parse_block(&block).unwrap(), hdrs(&[("port", "80"), ("port", "443")]));
        assert!(parse_block(&block[..block.len() - 1]).is_err(), "a cut block is refused");
        assert!(parse_block(&[0, 0, 0, 9]).is_err());
    }

    #[test]
    fn unknown_versions_and_short_frames_are_refused() {
        let mut c = Codec::new();
        assert!(c.decode([0x80, 2, 0, 6, 0, 0, 0, 4], vec![0, 0, 0, 1]).is_err(), "SPDY/2");
        assert!(c.decode([0x80, 3, 0, 3, 0, 0, 0, 4], vec![0, 0, 0, 1]).is_err(), "a short RST_STREAM");
        assert!(c.decode([0x80, 3, 0, 4, 0, 0, 0, 4], vec![0, 0, 0, 2]).is_err(), "SETTINGS entries missing");
        assert_eq!(c.decode([0x80, 3, 0, 42, 0, 0, 0, 0], vec![]).unwrap(), Frame::Unknown { kind: 42 });
    }
}
