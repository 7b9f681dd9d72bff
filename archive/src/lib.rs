//! The layer format, once: OCI layer changesets (tar streams) and the snapshot directories
//! they become.
//!
//! - [`whiteout`]: the whiteout vocabulary, in archives (`.wh.NAME`, `.wh..wh..opq`) and on
//!   disk (overlayfs' `0/0` devices and opaque xattr, or nothing for full copies).
//! - [`xattr`]: bounded xattr reads, and which xattrs a layer may carry.
//! - [`walk`]: the one tree walker (no symlink followed, a bounded number of fds).
//! - [`reader`]: reading untrusted tar streams the way every tar reader does, or not at all.
//! - [`apply`]: extracting an untrusted layer (or copy) into a directory.
//! - [`diff`] and [`write`]: a snapshot's changes, and the layer tar of them.
//! - [`copy`]: a file or tree written as a tar under a chosen name (`cp`).

pub mod apply;
pub mod copy;
pub mod diff;
pub mod reader;
pub mod stack;
pub mod walk;
pub mod whiteout;
pub mod write;
pub mod xattr;

/// An input that went over one of the limits of the agent (or of berthctl). Its message quotes no
/// input, so it can be shown as it is (errors of the parsers that read the
/// input may quote it, and are not).
#[derive(Debug)]
pub struct InputLimit(pub String);

impl std::fmt::Display for InputLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputLimit {}

/// Bytes that arrive as chunks (from a channel, an upload), read as one
/// stream. The source yields `None` at the end; an error ends the stream.
pub struct ChunkReader<I> {
    chunks: I,
    buf: Vec<u8>,
    pos: usize,
}

impl<I: Iterator<Item = std::io::Result<Vec<u8>>>> ChunkReader<I> {
    pub fn new(chunks: I) -> Self {
        Self { chunks, buf: Vec::new(), pos: 0 }
    }
}

impl<I: Iterator<Item = std::io::Result<Vec<u8>>>> std::io::Read for ChunkReader<I> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.chunks.next() {
                None => return Ok(0),
                Some(chunk) => {
                    self.buf = chunk?;
                    self.pos = 0;
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
