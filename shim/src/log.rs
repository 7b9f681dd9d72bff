//! The container log: the Kubernetes CRI log format, with size-based rotation.
//!
//! One record per line:
//!
//! ```text
//! <RFC3339Nano timestamp> <stdout|stderr> <F|P> <content>\n
//! ```
//!
//! `F` marks a full line: the output line ended with `'\n'`, which is not
//! stored. `P` marks a partial line: content without its newline, because the
//! line was longer than [`MAX_LINE`] and was cut, or because the stream ended
//! or was flushed before a newline came. A reader reassembles a line by
//! concatenating `P` records of a stream up to and including its next `F`
//! record, then adding `'\n'`.
//!
//! The shim writes with [`LogWriter`]; the agent reads with [`LogReader`]
//! (on a blocking thread). Rotation renames `path` to `path.1`, `path.1` to
//! `path.2` and so on, dropping the oldest; readers find their place again by
//! inode.

use std::collections::VecDeque;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use berth_common::time;

/// The longest content of one record. A longer output line is cut into `P`
/// records of this size, the last piece being the `F` record.
pub const MAX_LINE: usize = 16 * 1024;

/// The writer hands the file its buffered records once they reach this size
/// (always at record boundaries), so one huge `write` stays bounded in memory.
const WRITE_BATCH: usize = 64 * 1024;

/// How much a reader reads from a file at a time.
const READ_BLOCK: usize = 32 * 1024;

/// A reader skips (as malformed) a line longer than this rather than buffer it.
/// Our own lines are at most `MAX_LINE` plus a header of about 40 bytes.
const READ_LINE_MAX: usize = 1024 * 1024;

/// The output stream a record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// The name used in the log line: `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// `path.{n}`.
fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).create(true).mode(0o600).open(path)
}

fn ignore_not_found(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Writes the CRI log of one container: both streams into one file, with
/// rotation. Single-threaded; writes block.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    /// Bytes in the current file (as far as we know: what was there at open
    /// plus what we wrote).
    size: u64,
    max_size: u64,
    max_files: u32,
    /// The buffered incomplete line of each stream, at most `MAX_LINE` bytes.
    partial: [Vec<u8>; 2],
    /// Records formatted but not yet written.
    out: Vec<u8>,
    /// The timestamp of the current `write` call, reused between calls.
    stamp: String,
}

impl LogWriter {
    /// Opens (append, create, mode 0600) `path`; rotation keeps at most
    /// `max_files` files in all (path, path.1, ... path.{max_files-1}) each up
    /// to about `max_size` bytes; max_size 0 = never rotate. `max_files` 0 is
    /// taken as 1: rotation then simply starts the file afresh.
    ///
    /// A record longer than `max_size` still goes whole into a file of its own.
    pub fn open(path: &Path, max_size: u64, max_files: u32) -> io::Result<Self> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            size,
            max_size,
            max_files: max_files.max(1),
            partial: [Vec::new(), Vec::new()],
            out: Vec::new(),
            stamp: String::with_capacity(32),
        })
    }

    /// Feed raw output bytes of one stream; complete lines are written at
    /// once; an incomplete tail is buffered per stream (up to MAX_LINE, then
    /// written as P).
    ///
    /// All records of one call carry the same timestamp and go to the file
    /// in as few `write_all` calls as possible (one, unless the batch is large
    /// or a rotation falls inside it), always ending at a record boundary.
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.set_stamp();
        let mut pending = std::mem::take(&mut self.partial[stream.index()]);
        let result = self.write_lines(stream, &mut pending, data);
        self.partial[stream.index()] = pending;
        result
    }

    fn write_lines(&mut self, stream: Stream, pending: &mut Vec<u8>, mut data: &[u8]) -> io::Result<()> {
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            self.emit(stream, pending, &data[..i], true)?;
            data = &data[i + 1..];
        }
        if !data.is_empty() {
            self.emit(stream, pending, data, false)?;
        }
        self.flush_out()
    }

    /// Write any buffered partial line of `stream` as a P record (called at
    /// EOF of that stream, and also by the shim when a partial line has
    /// waited too long — e.g. a shell prompt).
    pub fn flush_partial(&mut self, stream: Stream) -> io::Result<()> {
        if self.partial[stream.index()].is_empty() {
            return Ok(());
        }
        self.set_stamp();
        let pending = std::mem::take(&mut self.partial[stream.index()]);
        let result = self.record(stream, true, &pending, &[]).and_then(|()| self.flush_out());
        // Reuse the allocation; the content is gone either way.
        self.partial[stream.index()] = pending;
        self.partial[stream.index()].clear();
        result
    }

    /// Whether `stream` has an incomplete line buffered.
    pub fn has_partial(&self, stream: Stream) -> bool {
        !self.partial[stream.index()].is_empty()
    }

    fn set_stamp(&mut self) {
        let (secs, nanos) = time::now();
        self.stamp.clear();
        time::write_rfc3339_nano(&mut self.stamp, secs, nanos);
    }

    /// Emits the virtual line `pending ++ s`: `P` records of `MAX_LINE` bytes
    /// while more than `MAX_LINE` bytes remain, then either an `F` record of
    /// the rest (`ends_line`) or the rest kept as the new `pending`.
    fn emit(&mut self, stream: Stream, pending: &mut Vec<u8>, s: &[u8], ends_line: bool) -> io::Result<()> {
        let pl = pending.len();
        let total = pl + s.len();
        let piece = |from: usize, to: usize| (from.min(pl)..to.min(pl), from.saturating_sub(pl)..to.saturating_sub(pl));
        let mut pos = 0;
        while total - pos > MAX_LINE {
            let (a, b) = piece(pos, pos + MAX_LINE);
            self.record(stream, true, &pending[a], &s[b])?;
            pos += MAX_LINE;
        }
        if ends_line {
            let (a, b) = piece(pos, total);
            self.record(stream, false, &pending[a], &s[b])?;
            pending.clear();
        } else if pos <= pl {
            pending.drain(..pos);
            pending.extend_from_slice(s);
        } else {
            pending.clear();
            pending.extend_from_slice(&s[pos - pl..]);
        }
        Ok(())
    }

    /// Appends one record (content `a ++ b`) to the batch, rotating first if
    /// it would push a non-empty file past `max_size`.
    fn record(&mut self, stream: Stream, partial: bool, a: &[u8], b: &[u8]) -> io::Result<()> {
        let len = self.stamp.len() + " stdout F ".len() + a.len() + b.len() + 1;
        if self.max_size > 0 {
            let current = self.size + self.out.len() as u64;
            if current > 0 && current + len as u64 > self.max_size {
                self.flush_out()?;
                self.rotate()?;
            }
        }
        self.out.extend_from_slice(self.stamp.as_bytes());
        self.out.push(b' ');
        self.out.extend_from_slice(stream.as_str().as_bytes());
        self.out.extend_from_slice(if partial { b" P " } else { b" F " });
        self.out.extend_from_slice(a);
        self.out.extend_from_slice(b);
        self.out.push(b'\n');
        if self.out.len() >= WRITE_BATCH {
            self.flush_out()?;
        }
        Ok(())
    }

    fn flush_out(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let result = self.file.write_all(&self.out);
        match &result {
            Ok(()) => self.size += self.out.len() as u64,
            // Part may have been written (disk full): learn the real size.
            Err(_) => self.size = self.file.metadata().map_or(self.size, |m| m.len()),
        }
        self.out.clear();
        result
    }

    /// Close the file and open `path` again, created if it is gone: someone else rotated
    /// it (renamed it away). What was formatted goes to the old file first.
    pub fn reopen(&mut self) -> io::Result<()> {
        self.file.flush()?;
        self.file = open_append(&self.path)?;
        self.size = self.file.metadata()?.len();
        Ok(())
    }

    /// Shifts path.{n-2}→path.{n-1} ... path→path.1 (the rename over
    /// path.{n-1} drops the oldest) and starts a new `path`.
    fn rotate(&mut self) -> io::Result<()> {
        if self.max_files <= 1 {
            ignore_not_found(fs::remove_file(&self.path))?;
        } else {
            for i in (1..self.max_files - 1).rev() {
                ignore_not_found(fs::rename(numbered(&self.path, i), numbered(&self.path, i + 1)))?;
            }
            ignore_not_found(fs::rename(&self.path, numbered(&self.path, 1)))?;
        }
        self.file = open_append(&self.path)?;
        self.size = self.file.metadata()?.len();
        Ok(())
    }
}

/// One parsed log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub secs: i64,
    pub nanos: u32,
    pub stream: Stream,
    /// `P`: the content does not end a line.
    pub partial: bool,
    pub content: Vec<u8>,
}

/// A log line's fields, without copying the content.
struct Header {
    secs: i64,
    nanos: u32,
    stream: Stream,
    partial: bool,
    /// Where the content starts in the line.
    content: usize,
}

fn parse_header(line: &[u8]) -> Option<Header> {
    let sp = line.iter().position(|&b| b == b' ')?;
    let (secs, nanos) = time::parse_rfc3339(std::str::from_utf8(&line[..sp]).ok()?)?;
    let rest = &line[sp + 1..];
    let (stream, rest) =
        if let Some(r) = rest.strip_prefix(b"stdout ") { (Stream::Stdout, r) } else { (Stream::Stderr, rest.strip_prefix(b"stderr ")?) };
    // Tags are `:`-separated; the first says full or partial (as in the kubelet).
    let sp = rest.iter().position(|&b| b == b' ')?;
    let partial = match rest[..sp].split(|&b| b == b':').next()? {
        b"F" => false,
        b"P" => true,
        _ => return None,
    };
    Some(Header { secs, nanos, stream, partial, content: line.len() - rest.len() + sp + 1 })
}

/// Parses one log line, without its trailing `'\n'`; `None` for a malformed
/// line. Timestamps with fewer than nine fractional digits (other writers)
/// are accepted.
pub fn parse_line(line: &[u8]) -> Option<Record> {
    let h = parse_header(line)?;
    Some(Record { secs: h.secs, nanos: h.nanos, stream: h.stream, partial: h.partial, content: line[h.content..].to_vec() })
}

/// All files of a log, oldest first (path.{n}..path.1, path) that exist.
/// `max_files` must be the writer's; 0 is taken as 1.
pub fn log_files(path: &Path, max_files: u32) -> Vec<PathBuf> {
    (1..max_files.max(1)).rev().map(|i| numbered(path, i)).chain([path.to_path_buf()]).filter(|p| p.exists()).collect()
}

/// What to read of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOptions {
    /// Only the last N lines existing at open, each whole: the N lines of the
    /// selected streams that end last, where an `F` record ends a line and a
    /// trailing group of `P` records with no `F` yet counts as a line too.
    /// Other lines interleaved with them are left out. Applied before
    /// `since`/`until`; records written after open all come. `None`:
    /// everything.
    pub tail: Option<usize>,
    /// Only records at or after this instant.
    pub since: Option<(i64, u32)>,
    /// Only records at or before this instant.
    pub until: Option<(i64, u32)>,
    /// Which streams: `(stdout, stderr)`.
    pub streams: (bool, bool),
}

impl Default for ReadOptions {
    /// Everything of both streams.
    fn default() -> Self {
        ReadOptions { tail: None, since: None, until: None, streams: (true, true) }
    }
}

/// The filters of [`ReadOptions`] applied to each line.
struct Filter {
    since: Option<(i64, u32)>,
    until: Option<(i64, u32)>,
    streams: [bool; 2],
    /// Per stream, where its records start (the tail).
    from: [Pos; 2],
}

impl Filter {
    /// The record of the line found at `pos`, if it is wanted.
    fn accept(&self, line: &[u8], pos: Pos) -> Option<Record> {
        let h = parse_header(line)?;
        let (s, t) = (h.stream.index(), (h.secs, h.nanos));
        if !self.streams[s] || pos < self.from[s] || self.since.is_some_and(|s| t < s) || self.until.is_some_and(|u| t > u) {
            return None;
        }
        Some(Record { secs: h.secs, nanos: h.nanos, stream: h.stream, partial: h.partial, content: line[h.content..].to_vec() })
    }
}

/// Identity of a file: (device, inode).
type FileId = (u64, u64);

fn file_id(m: &Metadata) -> FileId {
    (m.dev(), m.ino())
}

/// A file being read forward.
struct Cursor {
    file: File,
    id: FileId,
    /// Index in the list of files opened at `LogReader::open`; `usize::MAX`
    /// for files found later (all newer).
    ordinal: usize,
    /// File offset of the next read.
    pos: u64,
    /// Bytes read and not yet returned: `buf[start..]`. No `'\n'` in `buf[start..scan]`.
    buf: Vec<u8>,
    start: usize,
    scan: usize,
    /// Dropping an overlong line up to its `'\n'`.
    skipping: bool,
    /// `path` names another file now: read this one to its end, then move on.
    retired: bool,
}

impl Cursor {
    fn new(file: File, id: FileId, ordinal: usize, pos: u64) -> Self {
        Cursor { file, id, ordinal, pos, buf: Vec::new(), start: 0, scan: 0, skipping: false, retired: false }
    }

    fn reset(&mut self, pos: u64) {
        self.pos = pos;
        self.buf.clear();
        self.start = 0;
        self.scan = 0;
        self.skipping = false;
    }

    /// The next complete line (its offset in the file, and its range in
    /// `buf` without the `'\n'`), or `None` at the end of the file (an
    /// incomplete last line stays buffered).
    fn next_line(&mut self) -> io::Result<Option<(u64, std::ops::Range<usize>)>> {
        loop {
            if let Some(i) = self.buf[self.scan..].iter().position(|&b| b == b'\n') {
                let end = self.scan + i;
                let line = self.start..end;
                self.start = end + 1;
                self.scan = self.start;
                if std::mem::take(&mut self.skipping) {
                    continue;
                }
                let offset = self.pos - (self.buf.len() - line.start) as u64;
                return Ok(Some((offset, line)));
            }
            // Need more: keep only the incomplete line.
            self.buf.drain(..self.start);
            self.start = 0;
            self.scan = self.buf.len();
            if self.buf.len() > READ_LINE_MAX {
                self.buf.clear();
                self.scan = 0;
                self.skipping = true;
            }
            let old = self.buf.len();
            self.buf.resize(old + READ_BLOCK, 0);
            let n = loop {
                match self.file.read_at(&mut self.buf[old..], self.pos) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r,
                }
            };
            let n = match n {
                Ok(n) => n,
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e);
                }
            };
            self.buf.truncate(old + n);
            self.pos += n as u64;
            if n == 0 {
                return Ok(None);
            }
        }
    }
}

/// Walks the complete lines of a file backwards from a given size, reading
/// blocks from the end; used to find where the last N lines begin.
struct RevScanner<'a> {
    file: &'a File,
    /// `buf` holds the file's bytes `[lo, lo + buf.len())`.
    lo: u64,
    buf: Vec<u8>,
    /// Lines before this offset are still to be returned; the byte before it
    /// is a `'\n'` (or it is 0).
    limit: u64,
}

impl<'a> RevScanner<'a> {
    /// Starts at the last `'\n'` before `size`: a last line still being
    /// written is not counted.
    fn new(file: &'a File, size: u64) -> io::Result<Self> {
        let mut s = RevScanner { file, lo: size, buf: Vec::new(), limit: size };
        s.limit = s.newline_before(size)?.map_or(0, |p| p + 1);
        s.buf.truncate((s.limit - s.lo) as usize);
        Ok(s)
    }

    /// The offset of the last `'\n'` before `before` (which is at most
    /// `lo + buf.len()`), reading further back as needed. While a line grows
    /// past `READ_LINE_MAX` its bytes are dropped (it is skipped as malformed).
    fn newline_before(&mut self, before: u64) -> io::Result<Option<u64>> {
        let upto = (before - self.lo) as usize;
        if let Some(i) = self.buf[..upto].iter().rposition(|&b| b == b'\n') {
            return Ok(Some(self.lo + i as u64));
        }
        while self.lo > 0 {
            if before - self.lo > READ_LINE_MAX as u64 {
                self.buf.clear();
            }
            let n = READ_BLOCK.min(self.lo as usize);
            let lo = self.lo - n as u64;
            let old = self.buf.len();
            self.buf.resize(old + n, 0);
            self.buf.copy_within(0..old, n);
            self.file.read_exact_at(&mut self.buf[..n], lo)?;
            self.lo = lo;
            if let Some(i) = self.buf[..n].iter().rposition(|&b| b == b'\n') {
                return Ok(Some(lo + i as u64));
            }
        }
        Ok(None)
    }

    /// The previous line: its start offset, its end offset (after its
    /// `'\n'`) and its header, `None` if malformed.
    fn prev_line(&mut self) -> io::Result<Option<(u64, u64, Option<Header>)>> {
        if self.limit == 0 {
            return Ok(None);
        }
        let end = self.limit;
        let nl = end - 1;
        let start = self.newline_before(nl)?.map_or(0, |p| p + 1);
        let whole = start >= self.lo && nl <= self.lo + self.buf.len() as u64;
        let header = if whole { parse_header(&self.buf[(start - self.lo) as usize..(nl - self.lo) as usize]) } else { None };
        self.limit = start;
        self.buf.truncate((start - self.lo) as usize);
        Ok(Some((start, end, header)))
    }
}

/// An open file of the log, with its identity.
struct Opened {
    file: File,
    id: FileId,
}

/// Opens the files of a log, oldest first, each once. A rotation racing the
/// opening is detected (a name no longer names the file we opened) and the
/// opening retried, so no file is missed or taken twice.
fn open_files(path: &Path, max_files: u32) -> io::Result<Vec<Opened>> {
    let names: Vec<PathBuf> = (1..max_files.max(1)).rev().map(|i| numbered(path, i)).chain([path.to_path_buf()]).collect();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut files = Vec::with_capacity(names.len());
        let mut opened_names = Vec::with_capacity(names.len());
        for name in &names {
            match File::open(name) {
                Ok(file) => {
                    let id = file_id(&file.metadata()?);
                    if !files.iter().any(|f: &Opened| f.id == id) {
                        files.push(Opened { file, id });
                        opened_names.push(name);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let stable = files.iter().zip(&opened_names).all(|(f, name)| fs::metadata(name).is_ok_and(|m| file_id(&m) == f.id));
        if stable || attempt >= 5 {
            return Ok(files);
        }
    }
}

/// A position in the files a reader opened: (index in that list, offset).
type Pos = (usize, u64);

/// How much further back than the N-th line the tail looks for the P records
/// that may precede a line's F record (interleaved with the other stream).
/// An F whose stream shows no earlier record within this distance is taken
/// as the start of its line, so the tail never reads a huge file backwards
/// just because one stream is quiet.
const TAIL_RESOLVE_WINDOW: u64 = 1024 * 1024;

/// Where each stream's records start for the last `n` lines: the lines are
/// the last `n` to end (over the selected streams), each whole. A stream
/// with none of them starts at the end of what exists (new records only).
fn tail_starts(files: &[Opened], n: usize, streams: [bool; 2]) -> io::Result<[Pos; 2]> {
    /// What is known of a stream's earliest line taken so far.
    #[derive(Clone, Copy, PartialEq)]
    enum Line {
        /// No record of it seen yet.
        Fresh,
        /// Its earliest taken record is a P: the line goes on further back.
        Continues,
        /// Its earliest taken record is an F: the line may have P records further back.
        Maybe,
        /// Complete: nothing further back is taken.
        Done,
    }
    let settled = |state: &[Line; 2]| state.iter().all(|s| matches!(s, Line::Fresh | Line::Done));
    let Some(last) = files.len().checked_sub(1) else { return Ok([(0, 0); 2]) };
    // Set to the end of the live file's complete lines first thing below.
    let mut starts = [(last, 0); 2];
    let mut state = [Line::Fresh; 2];
    let mut count = 0;
    // Bytes left to look back for P records once `n` lines are counted.
    let mut window: Option<u64> = None;
    for (idx, f) in files.iter().enumerate().rev() {
        let mut scan = RevScanner::new(&f.file, f.file.metadata()?.len())?;
        if idx == last {
            starts = [(last, scan.limit); 2];
            if n == 0 {
                return Ok(starts);
            }
        }
        while let Some((start, end, header)) = scan.prev_line()? {
            if let Some(w) = window.as_mut() {
                *w = w.saturating_sub(end - start);
                if *w == 0 {
                    state = state.map(|s| if s == Line::Maybe { Line::Done } else { s });
                }
            }
            if let Some(h) = header.filter(|h| streams[h.stream.index()]) {
                let s = h.stream.index();
                match (state[s], h.partial) {
                    (Line::Done, _) => {}
                    // Part of the line taken last for this stream.
                    (Line::Continues | Line::Maybe, true) => {
                        starts[s] = (idx, start);
                        state[s] = Line::Continues;
                    }
                    // The end of a line (an F, or a trailing P group), earlier
                    // than all lines taken so far.
                    (Line::Fresh | Line::Continues | Line::Maybe, _) => {
                        if count < n {
                            count += 1;
                            starts[s] = (idx, start);
                            state[s] = if h.partial { Line::Continues } else { Line::Maybe };
                            if count == n {
                                window = Some(TAIL_RESOLVE_WINDOW);
                            }
                        } else {
                            state[s] = Line::Done;
                        }
                    }
                }
            }
            if count >= n && settled(&state) {
                return Ok(starts);
            }
        }
    }
    Ok(starts)
}

/// Reads the records of a log in order: the rotated files oldest first, then
/// the live file; and keeps reading the live file (and its successors) as it
/// grows and rotates, for `--follow`.
pub struct LogReader {
    path: PathBuf,
    max_files: u32,
    filter: Filter,
    cur: Option<Cursor>,
    /// Files to read after `cur`, in order.
    queue: VecDeque<Cursor>,
    /// Tests: runs between reaching the end of the live file and looking at
    /// `path`, where a writer's append-then-rotate can fall.
    #[cfg(test)]
    at_live_end: Option<Box<dyn FnMut() + Send>>,
}

impl LogReader {
    /// Opens the log at `path` (with the writer's `max_files`). The log need
    /// not exist yet: a follower then sees it when it appears.
    pub fn open(path: &Path, max_files: u32, opts: &ReadOptions) -> io::Result<Self> {
        let streams = [opts.streams.0, opts.streams.1];
        let files = open_files(path, max_files)?;
        let from = match opts.tail {
            Some(n) => tail_starts(&files, n, streams)?,
            None => [(0, 0); 2],
        };
        // Start where the first selected stream starts; the filter skips the
        // other stream's records before its own start.
        let (first, offset) = match streams {
            [true, false] => from[0],
            [false, true] => from[1],
            _ => from[0].min(from[1]),
        };
        let queue = files
            .into_iter()
            .enumerate()
            .skip(first)
            .map(|(i, f)| Cursor::new(f.file, f.id, i, if i == first { offset } else { 0 }))
            .collect();
        Ok(LogReader {
            path: path.to_path_buf(),
            max_files,
            filter: Filter { since: opts.since, until: opts.until, streams, from },
            cur: None,
            queue,
            #[cfg(test)]
            at_live_end: None,
        })
    }

    /// Next record, or None at the current end (non-follow: done; follow:
    /// the caller waits a little and calls again). Handles the live file
    /// being rotated while following (detect by inode change / size shrink
    /// of `path`: finish the old open file, then continue with the new one),
    /// and a partially written last line (do not return it until its '\n'
    /// arrives). Malformed lines are skipped.
    pub fn next_record(&mut self) -> io::Result<Option<Record>> {
        loop {
            let Some(cur) = self.cur.as_mut() else {
                if self.queue.is_empty() {
                    // Nothing open yet: the log did not exist at open.
                    self.queue = self.successors(None)?;
                }
                match self.queue.pop_front() {
                    Some(c) => self.cur = Some(c),
                    None => return Ok(None),
                }
                continue;
            };
            if let Some((offset, range)) = cur.next_line()? {
                if let Some(rec) = self.filter.accept(&cur.buf[range], (cur.ordinal, offset)) {
                    return Ok(Some(rec));
                }
                continue;
            }
            // At the end of `cur`. A file followed by others in the queue was
            // rotated away before we got to it: it is complete.
            if let Some(next) = self.queue.pop_front() {
                self.cur = Some(next);
                continue;
            }
            if cur.retired {
                // Read to its end after the rotation was seen: nothing more
                // can come into it. Continue with the files that followed it.
                let id = cur.id;
                self.queue = self.successors(Some(id))?;
                match self.queue.pop_front() {
                    Some(next) => self.cur = Some(next),
                    None => return Ok(None),
                }
                continue;
            }
            #[cfg(test)]
            if let Some(hook) = self.at_live_end.as_mut() {
                hook();
            }
            match fs::metadata(&self.path) {
                Ok(m) if file_id(&m) == cur.id => {
                    if m.len() < cur.pos {
                        // Truncated in place (copytruncate): start over.
                        cur.reset(0);
                        continue;
                    }
                    return Ok(None);
                }
                // Rotated: the writer may have appended to our file between
                // our last read and the rename, so read it to its end again.
                Ok(_) => cur.retired = true,
                // Between the rename and the creation of the new file.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// The files of the log newer than the file `after` (all of them if it is
    /// `None` or no longer among them, having been dropped as the oldest).
    fn successors(&self, after: Option<FileId>) -> io::Result<VecDeque<Cursor>> {
        let files = open_files(&self.path, self.max_files)?;
        let skip = after.and_then(|id| files.iter().position(|f| f.id == id)).map_or(0, |i| i + 1);
        Ok(files.into_iter().skip(skip).map(|f| Cursor::new(f.file, f.id, usize::MAX, 0)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctr.log");
        (dir, path)
    }

    fn read_all(path: &Path, max_files: u32, opts: &ReadOptions) -> Vec<Record> {
        let mut r = LogReader::open(path, max_files, opts).unwrap();
        let mut out = Vec::new();
        while let Some(rec) = r.next_record().unwrap() {
            out.push(rec);
        }
        out
    }

    fn all(path: &Path, max_files: u32) -> Vec<Record> {
        read_all(path, max_files, &ReadOptions::default())
    }

    /// Reassembles lines: P contents concatenate; an F ends the line (adds
    /// '\n'); a trailing P group is returned without a newline.
    fn lines(records: &[Record]) -> Vec<(Stream, String)> {
        let mut out = Vec::new();
        let mut open: [Option<usize>; 2] = [None, None];
        for r in records {
            let i = match open[r.stream.index()] {
                Some(i) => i,
                None => {
                    out.push((r.stream, String::new()));
                    out.len() - 1
                }
            };
            out[i].1.push_str(std::str::from_utf8(&r.content).unwrap());
            if r.partial {
                open[r.stream.index()] = Some(i);
            } else {
                out[i].1.push('\n');
                open[r.stream.index()] = None;
            }
        }
        out
    }

    fn kinds(records: &[Record]) -> Vec<(Stream, bool, usize)> {
        records.iter().map(|r| (r.stream, r.partial, r.content.len())).collect()
    }

    fn raw_lines(path: &Path) -> Vec<Vec<u8>> {
        let data = fs::read(path).unwrap();
        assert!(data.is_empty() || data.ends_with(b"\n"));
        data.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect()
    }

    fn line_at(secs: i64, stream: Stream, tag: &str, content: &str) -> String {
        format!("{} {} {tag} {content}\n", time::format_rfc3339_nano(secs, 0), stream.as_str())
    }

    fn append(path: &Path, data: &[u8]) {
        let mut f = OpenOptions::new().append(true).create(true).open(path).unwrap();
        f.write_all(data).unwrap();
    }

    const OUT: Stream = Stream::Stdout;
    const ERR: Stream = Stream::Stderr;

    #[test]
    fn a_line_split_over_three_writes_is_one_full_record() {
        let (_d, path) = temp();
        let mut w = LogWriter::open(&path, 0, 1).unwrap();
        let before = time::now();
        w.write(OUT, b"hel").unwrap();
        w.write(OUT, b"lo wor").unwrap();
        assert!(w.has_partial(OUT));
        assert_eq!(fs::metadata(&path).unwrap().len(), 0, "nothing written before the newline");
        w.write(OUT, b"ld\n").unwrap();
        assert!(!w.has_partial(OUT));
        let raw = raw_lines(&path);
        assert_eq!(raw.len(), 1);
        let text = String::from_utf8(raw[0].clone()).unwrap();
        assert!(text.ends_with(" stdout F hello world"), "{text}");
        assert_eq!(text.len(), 30 + " stdout F hello world".len());
        let rec = parse_line(&raw[0]).unwrap();
        assert_eq!((rec.stream, rec.partial, rec.content.as_slice()), (OUT, false, &b"hello world"[..]));
        assert!((rec.secs, rec.nanos) >= before && (rec.secs, rec.nanos) <= time::now());
    }

    #[test]
    fn several_lines_in_one_chunk_and_empty_lines() {
        let (_d, path) = temp();
        let mut w = LogWriter::open(&path, 0, 1).unwrap();
        w.write(OUT, b"a\nbb\n\nccc\nrest").unwrap();
        let recs = all(&path, 1);
        assert_eq!(kinds(&recs), vec![(OUT, false, 1), (OUT, false, 2), (OUT, false, 0), (OUT, false, 3)]);
        assert!(w.has_partial(OUT));
        w.write(OUT, b"\n").unwrap();
        let recs = all(&path, 1);
        assert_eq!(lines(&recs).last().unwrap(), &(OUT, "rest\n".to_string()));
        // One write call: one timestamp.
        assert!(recs[..4].iter().all(|r| (r.secs, r.nanos) == (recs[0].secs, recs[0].nanos)));
    }

    #[test]
    fn long_lines_are_cut_into_partial_records_and_reassemble() {
        let (_d, path) = temp();
        let mut w = LogWriter::open(&path, 0, 1).unwrap();
        let long: String = (0..40_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        // Fed in odd-sized pieces, the newline in the last one.
        let mut data = long.clone().into_bytes();
        data.push(b'\n');
        for chunk in data.chunks(7_001) {
            w.write(OUT, chunk).unwrap();
        }
        // A line of exactly MAX_LINE is one F record; MAX_LINE + 1 is P + F.
        let exact = "x".repeat(MAX_LINE);
        w.write(ERR, format!("{exact}\n{exact}y\n").as_bytes()).unwrap();
        let recs = all(&path, 1);
        assert_eq!(
            kinds(&recs),
            vec![
                (OUT, true, MAX_LINE),
                (OUT, true, MAX_LINE),
                (OUT, false, 40_000 - 2 * MAX_LINE),
                (ERR, false, MAX_LINE),
                (ERR, true, MAX_LINE),
                (ERR, false, 1),
            ]
        );
        assert_eq!(lines(&recs), vec![(OUT, format!("{long}\n")), (ERR, format!("{exact}\n")), (ERR, format!("{exact}y\n"))]);
    }

    #[test]
    fn an_unterminated_long_line_is_written_as_it_exceeds_max_line() {
        let (_d, path) = temp();
        let mut w = LogWriter::open(&path, 0, 1).unwrap();
        w.write(OUT, &vec![b'z'; MAX_LINE]).unwrap();
        assert!(all(&path, 1).is_empty(), "exactly MAX_LINE stays buffered");
        w.write(OUT, b"zz").unwrap();
        assert_eq!(kinds(&all(&path, 1)), vec![(OUT, true, MAX_LINE)]);
        w.write(OUT, &vec![b'z'; 3 * MAX_LINE]).unwrap();
        assert_eq!(kinds(&all(&path, 1)).len(), 4);
        assert!(w.has_partial(OUT));
        w.flush_partial(OUT).unwrap();
        let recs = all(&path, 1);
        assert_eq!(recs.iter().map(|r| r.content.len()).sum::<usize>(), 4 * MAX_LINE + 2);
        assert!(recs.iter().all(|r| r.partial && r.content.len() <= MAX_LINE));
    }

    #[test]
    fn flush_partial_writes_a_partial_record() {
        let (_d, path) = temp();
        let mut w = LogWriter::open(&path, 0, 1).unwrap();
        w.flush_partial(OUT).unwrap(); // nothing buffered: nothing written
        assert_eq!(fs::metadata(&path).unwrap().len(), 0);
        w.write(OUT, b"$ ").unwrap();
        assert!(w.has_partial(OUT));
        assert!(!w.has_partial(ERR));
        w.flush_partial(OUT).unwrap();
        assert!(!w.has_partial(OUT));
        let recs = all(&path, 1);
        assert_eq!(recs.len(), 1);
        assert!(recs[0].partial);
        assert_eq!(recs[0].content, b"$ ");
        w.write(OUT, b"ls\n").unwrap();
        let recs = all(&path, 1);
        assert_eq!(kinds(&recs), vec![(OUT, true, 2), (OUT, false, 2)]);
        assert_eq!(lines(&recs), vec![(OUT, "$ ls\n".to_string())]);
    }

    #[test]
    fn streams_are_buffered_separately_and_interleaving_is_kept() {
        let (_d, path) = temp();
        let mut w = LogWriter::open(&path, 0, 1).unwrap();
        w.write(OUT, b"out1 ").unwrap();
        w.write(ERR, b"err1\nerr").unwrap();
        w.write(OUT, b"out2\nout3\n").unwrap();
        w.write(ERR, b"2\n").unwrap();
        w.write(ERR, b"tail").unwrap();
        w.flush_partial(ERR).unwrap();
        let recs = all(&path, 1);
        let got: Vec<(Stream, bool, String)> =
            recs.iter().map(|r| (r.stream, r.partial, String::from_utf8(r.content.clone()).unwrap())).collect();
        let want = [(ERR, false, "err1"), (OUT, false, "out1 out2"), (OUT, false, "out3"), (ERR, false, "err2"), (ERR, true, "tail")];
        assert_eq!(got, want.map(|(s, p, c)| (s, p, c.to_string())));
        // Filtering by stream.
        let only_err = read_all(&path, 1, &ReadOptions { streams: (false, true), ..Default::default() });
        assert_eq!(only_err.len(), 3);
        assert!(only_err.iter().all(|r| r.stream == ERR));
        let only_out = read_all(&path, 1, &ReadOptions { streams: (true, false), ..Default::default() });
        assert_eq!(lines(&only_out), vec![(OUT, "out1 out2\n".to_string()), (OUT, "out3\n".to_string())]);
    }

    #[test]
    fn the_file_is_created_0600_and_appended_to() {
        let (_d, path) = temp();
        let mut w = LogWriter::open(&path, 0, 1).unwrap();
        w.write(OUT, b"one\n").unwrap();
        drop(w);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let mut w = LogWriter::open(&path, 0, 1).unwrap();
        w.write(OUT, b"two\n").unwrap();
        assert_eq!(lines(&all(&path, 1)), vec![(OUT, "one\n".to_string()), (OUT, "two\n".to_string())]);
    }

    fn numbered_lines(recs: &[Record]) -> Vec<usize> {
        recs.iter().map(|r| std::str::from_utf8(&r.content).unwrap()[5..].parse().unwrap()).collect()
    }

    #[test]
    fn rotation_keeps_max_files_drops_the_oldest_and_reads_in_order() {
        let (_d, path) = temp();
        // Each record is 30 + 10 + 9 + 1 = 50 bytes: 4 per 200-byte file.
        let mut w = LogWriter::open(&path, 200, 3).unwrap();
        for i in 0..50 {
            w.write(OUT, format!("line-{i:04}\n").as_bytes()).unwrap();
        }
        assert!(path.exists() && numbered(&path, 1).exists() && numbered(&path, 2).exists());
        assert!(!numbered(&path, 3).exists());
        for p in [path.clone(), numbered(&path, 1), numbered(&path, 2)] {
            assert!(fs::metadata(&p).unwrap().len() <= 200, "{p:?}");
        }
        assert_eq!(log_files(&path, 3), vec![numbered(&path, 2), numbered(&path, 1), path.clone()]);
        let recs = all(&path, 3);
        // 50 records, 4 per file: files hold 40..44, 44..48, 48..50.
        assert_eq!(numbered_lines(&recs), (40..50).collect::<Vec<_>>());
        // The oldest file is the previous live file's predecessor.
        assert_eq!(numbered_lines(&all(&numbered(&path, 2), 1)), vec![40, 41, 42, 43]);
    }

    #[test]
    fn rotation_counts_what_the_file_held_at_open_and_oversized_records_go_whole() {
        let (_d, path) = temp();
        let mut w = LogWriter::open(&path, 120, 2).unwrap();
        w.write(OUT, b"line-0000\nline-0001\n").unwrap();
        drop(w);
        let mut w = LogWriter::open(&path, 120, 2).unwrap();
        w.write(OUT, b"line-0002\n").unwrap();
        assert_eq!(numbered_lines(&all(&numbered(&path, 1), 1)), vec![0, 1]);
        assert_eq!(numbered_lines(&all(&path, 1)), vec![2]);
        // Bigger than max_size: a file of its own, nothing lost; into an
        // empty file without a rotation.
        let (_d2, fresh) = temp();
        let mut w2 = LogWriter::open(&fresh, 120, 2).unwrap();
        w2.write(OUT, format!("{}\n", "b".repeat(300)).as_bytes()).unwrap();
        assert!(!numbered(&fresh, 1).exists());
        assert_eq!(all(&fresh, 2).len(), 1);
        let big = "b".repeat(300);
        w.write(ERR, format!("{big}\n").as_bytes()).unwrap();
        w.write(OUT, b"line-0003\n").unwrap();
        assert_eq!(lines(&all(&numbered(&path, 1), 1)), vec![(ERR, format!("{big}\n"))]);
        assert_eq!(numbered_lines(&all(&path, 1)), vec![3]);
    }

    #[test]
    fn one_file_rotation_starts_the_file_afresh_and_zero_size_never_rotates() {
        let (_d, path) = temp();
        let mut w = LogWriter::open(&path, 120, 1).unwrap();
        for i in 0..5 {
            w.write(OUT, format!("line-{i:04}\n").as_bytes()).unwrap();
        }
        assert!(!numbered(&path, 1).exists());
        assert_eq!(numbered_lines(&all(&path, 1)), vec![4]);

        let (_d, path) = temp();
        let mut w = LogWriter::open(&path, 0, 3).unwrap();
        for i in 0..500 {
            w.write(OUT, format!("line-{i:04}\n").as_bytes()).unwrap();
        }
        assert!(!numbered(&path, 1).exists());
        assert_eq!(all(&path, 3).len(), 500);
    }

    #[test]
    fn tail_returns_the_last_lines() {
        let (_d, path) = temp();
        let mut w = LogWriter::open(&path, 0, 1).unwrap();
        for i in 0..10 {
            w.write(OUT, format!("line-{i:04}\n").as_bytes()).unwrap();
        }
        let tail = |n| numbered_lines(&read_all(&path, 1, &ReadOptions { tail: Some(n), ..Default::default() }));
        assert_eq!(tail(3), vec![7, 8, 9]);
        assert_eq!(tail(1), vec![9]);
        assert_eq!(tail(10), (0..10).collect::<Vec<_>>());
        assert_eq!(tail(100), (0..10).collect::<Vec<_>>());
        assert_eq!(tail(0), Vec::<usize>::new());
    }

    #[test]
    fn tail_zero_then_follow_sees_only_new_lines() {
        let (_d, path) = temp();
        let mut w = LogWriter::open(&path, 0, 1).unwrap();
        w.write(OUT, b"line-0000\nline-0001\n").unwrap();
        let mut r = LogReader::open(&path, 1, &ReadOptions { tail: Some(0), ..Default::default() }).unwrap();
        assert_eq!(r.next_record().unwrap(), None);
        w.write(OUT, b"line-0002\n").unwrap();
        assert_eq!(r.next_record().unwrap().unwrap().content, b"line-0002");
        assert_eq!(r.next_record().unwrap(), None);
    }

    #[test]
    fn tail_counts_lines_not_records_and_takes_each_line_whole() {
        let (_d, path) = temp();
        let mut w = LogWriter::open(&path, 0, 1).unwrap();
        w.write(OUT, b"first\n").unwrap();
        w.write(OUT, format!("{}\n", "L".repeat(2 * MAX_LINE + 5)).as_bytes()).unwrap(); // P P F
        w.write(OUT, b"a").unwrap();
        w.flush_partial(OUT).unwrap(); // P "a"
        w.write(ERR, b"x\n").unwrap(); // F "x", inside stdout's line
        w.write(OUT, b"b\n").unwrap(); // F "b" ends "ab"
        let tail = |n| read_all(&path, 1, &ReadOptions { tail: Some(n), ..Default::default() });
        // The last line is stdout's "ab", which began before stderr's "x":
        // whole, and without "x", which ended earlier.
        assert_eq!(kinds(&tail(1)), vec![(OUT, true, 1), (OUT, false, 1)]);
        assert_eq!(lines(&tail(1)), vec![(OUT, "ab\n".to_string())]);
        assert_eq!(lines(&tail(2)), vec![(OUT, "ab\n".to_string()), (ERR, "x\n".to_string())]);
        // Then the long line, whole.
        let t3 = tail(3);
        assert_eq!(kinds(&t3)[..3], [(OUT, true, MAX_LINE), (OUT, true, MAX_LINE), (OUT, false, 5)]);
        assert_eq!(lines(&t3).len(), 3);
        assert_eq!(lines(&tail(4)).len(), 4);
        assert_eq!(lines(&tail(4))[0], (OUT, "first\n".to_string()));
        assert_eq!(lines(&tail(5)), lines(&tail(4)));
        // Stderr only: its one line.
        let err = read_all(&path, 1, &ReadOptions { tail: Some(1), streams: (false, true), ..Default::default() });
        assert_eq!(lines(&err), vec![(ERR, "x\n".to_string())]);
    }

    #[test]
    fn tail_finds_the_start_of_a_line_interleaved_with_the_other_stream() {
        let (_d, path) = temp();
        let mut w = LogWriter::open(&path, 0, 1).unwrap();
        w.write(OUT, b"o0\n").unwrap();
        w.write(ERR, b"e1 ").unwrap();
        w.flush_partial(ERR).unwrap();
        for i in 1..=50 {
            w.write(OUT, format!("o{i}\n").as_bytes()).unwrap();
        }
        w.write(ERR, b"e2\n").unwrap();
        w.write(OUT, b"o51\n").unwrap();
        let tail = |n| lines(&read_all(&path, 1, &ReadOptions { tail: Some(n), ..Default::default() }));
        let out = |i: usize| (OUT, format!("o{i}\n"));
        assert_eq!(tail(1), vec![out(51)]);
        // stderr's line began 50 lines back: it comes whole, the stdout lines
        // in between do not.
        assert_eq!(tail(2), vec![(ERR, "e1 e2\n".to_string()), out(51)]);
        assert_eq!(tail(3), vec![(ERR, "e1 e2\n".to_string()), out(50), out(51)]);
        let mut want: Vec<_> = (1..=51).map(out).collect();
        want.insert(0, (ERR, "e1 e2\n".to_string()));
        assert_eq!(tail(52), want);
        want.insert(0, out(0));
        assert_eq!(tail(53), want);
        // Records written after open come from both streams.
        let mut r = LogReader::open(&path, 1, &ReadOptions { tail: Some(1), ..Default::default() }).unwrap();
        assert_eq!(r.next_record().unwrap().unwrap().content, b"o51");
        assert_eq!(r.next_record().unwrap(), None);
        w.write(ERR, b"e3\n").unwrap();
        assert_eq!(r.next_record().unwrap().unwrap().content, b"e3");
    }

    #[test]
    fn tail_counts_a_trailing_partial_group_as_a_line() {
        let (_d, path) = temp();
        let mut w = LogWriter::open(&path, 0, 1).unwrap();
        w.write(OUT, b"done\n$ ").unwrap();
        w.flush_partial(OUT).unwrap();
        w.write(OUT, b"ec").unwrap();
        w.flush_partial(OUT).unwrap();
        let tail = |n| read_all(&path, 1, &ReadOptions { tail: Some(n), ..Default::default() });
        assert_eq!(kinds(&tail(1)), vec![(OUT, true, 2), (OUT, true, 2)]);
        assert_eq!(lines(&tail(2)), vec![(OUT, "done\n".to_string()), (OUT, "$ ec".to_string())]);
    }

    #[test]
    fn tail_per_stream() {
        let (_d, path) = temp();
        let mut w = LogWriter::open(&path, 0, 1).unwrap();
        for i in 0..20 {
            w.write(if i % 2 == 0 { OUT } else { ERR }, format!("line-{i:04}\n").as_bytes()).unwrap();
        }
        let opts = ReadOptions { tail: Some(3), streams: (false, true), ..Default::default() };
        assert_eq!(numbered_lines(&read_all(&path, 1, &opts)), vec![15, 17, 19]);
        let opts = ReadOptions { tail: Some(3), ..Default::default() };
        assert_eq!(numbered_lines(&read_all(&path, 1, &opts)), vec![17, 18, 19]);
    }

    #[test]
    fn tail_reaches_back_across_rotated_files() {
        let (_d, path) = temp();
        let mut w = LogWriter::open(&path, 200, 3).unwrap();
        for i in 0..9 {
            w.write(OUT, format!("line-{i:04}\n").as_bytes()).unwrap();
        }
        // Files: path.2 = 0..4, path.1 = 4..8, path = 8.
        assert_eq!(numbered_lines(&all(&path, 1)), vec![8]);
        let tail = |n| numbered_lines(&read_all(&path, 3, &ReadOptions { tail: Some(n), ..Default::default() }));
        assert_eq!(tail(1), vec![8]);
        assert_eq!(tail(2), vec![7, 8]);
        assert_eq!(tail(5), vec![4, 5, 6, 7, 8]);
        assert_eq!(tail(6), vec![3, 4, 5, 6, 7, 8]);
        assert_eq!(tail(50), (0..9).collect::<Vec<_>>());
        assert_eq!(tail(0), Vec::<usize>::new());
        // A live file just rotated (empty): the tail comes from the older ones.
        w.write(OUT, b"line-0009\nline-0010\nline-0011\n").unwrap();
        fs::rename(&path, numbered(&path, 1)).unwrap();
        fs::write(&path, b"").unwrap();
        assert_eq!(tail(2), vec![10, 11]);
    }

    #[test]
    fn tail_of_a_large_file_reads_blocks_backwards() {
        let (_d, path) = temp();
        let mut w = LogWriter::open(&path, 0, 1).unwrap();
        let mut want = Vec::new();
        let mut chunk = Vec::new();
        for i in 0..6000usize {
            // Lengths vary from 0 to ~300 bytes, so lines straddle block edges.
            let line = format!("{i}:{}", "v".repeat(i * 7919 % 300));
            chunk.extend_from_slice(line.as_bytes());
            chunk.push(b'\n');
            want.push((OUT, format!("{line}\n")));
            if i % 37 == 0 {
                w.write(OUT, &chunk).unwrap();
                chunk.clear();
            }
        }
        w.write(OUT, &chunk).unwrap();
        assert!(fs::metadata(&path).unwrap().len() > 10 * READ_BLOCK as u64);
        for n in [0, 1, 2, 500, 1234, 5999, 6000, 7000] {
            let got = lines(&read_all(&path, 1, &ReadOptions { tail: Some(n), ..Default::default() }));
            assert_eq!(got, want[want.len().saturating_sub(n)..], "tail {n}");
        }
    }

    #[test]
    fn tail_reads_no_further_back_than_it_needs() {
        let (_d, path) = temp();
        let mut w = LogWriter::open(&path, 0, 2).unwrap();
        for i in 0..5 {
            w.write(OUT, format!("line-{i:04}\n").as_bytes()).unwrap();
        }
        // An older "file" that fails when read: the tail must not touch it.
        fs::create_dir(numbered(&path, 1)).unwrap();
        let tail = |n| read_all(&path, 2, &ReadOptions { tail: Some(n), ..Default::default() });
        assert_eq!(numbered_lines(&tail(3)), vec![2, 3, 4]);
        assert!(LogReader::open(&path, 2, &ReadOptions { tail: Some(50), ..Default::default() }).is_err());
    }

    #[test]
    fn an_overlong_line_is_not_held_in_memory() {
        let (_d, path) = temp();
        let mut text = line_at(1, OUT, "F", "line-0000");
        text.push_str(&"q".repeat(8 * READ_LINE_MAX));
        text.push('\n');
        text.push_str(&line_at(2, OUT, "F", "line-0001"));
        fs::write(&path, &text).unwrap();
        let file = File::open(&path).unwrap();
        // Growth by doubling may reach twice the limit, not the line's length.
        let bound = 2 * (READ_LINE_MAX + READ_BLOCK);
        let mut scan = RevScanner::new(&file, text.len() as u64).unwrap();
        let mut headers = Vec::new();
        while let Some((_, _, h)) = scan.prev_line().unwrap() {
            headers.push(h.map(|h| h.secs));
            assert!(scan.buf.capacity() <= bound, "{}", scan.buf.capacity());
        }
        assert_eq!(headers, vec![Some(2), None, Some(1)]);
        let mut cur = Cursor::new(file, (0, 0), 0, 0);
        let mut found = Vec::new();
        while let Some((offset, range)) = cur.next_line().unwrap() {
            found.push((offset, parse_line(&cur.buf[range]).map(|r| r.secs)));
            assert!(cur.buf.capacity() <= bound, "{}", cur.buf.capacity());
        }
        let second = (text.len() - line_at(2, OUT, "F", "line-0001").len()) as u64;
        assert_eq!(found, vec![(0, Some(1)), (second, Some(2))]);
    }

    #[test]
    fn since_and_until_filter_by_timestamp() {
        let (_d, path) = temp();
        let mut text = String::new();
        for t in 100..=110 {
            text.push_str(&line_at(t, OUT, "F", &format!("line-{t:04}")));
        }
        // One with nanoseconds, written Go-style (trimmed fraction).
        text.push_str("1970-01-01T00:01:51.5Z stdout F line-0111\n");
        fs::write(&path, text).unwrap();
        let read = |since, until| numbered_lines(&read_all(&path, 1, &ReadOptions { since, until, ..Default::default() }));
        assert_eq!(read(Some((103, 0)), Some((106, 0))), vec![103, 104, 105, 106]);
        assert_eq!(read(Some((103, 1)), None), (104..=111).collect::<Vec<_>>());
        assert_eq!(read(None, Some((101, 999_999_999))), vec![100, 101]);
        assert_eq!(read(Some((111, 500_000_000)), None), vec![111]);
        assert_eq!(read(Some((111, 500_000_001)), None), Vec::<usize>::new());
        assert_eq!(read(Some((200, 0)), None), Vec::<usize>::new());
        // Tail first, then since.
        let opts = ReadOptions { tail: Some(3), since: Some((110, 0)), ..Default::default() };
        assert_eq!(numbered_lines(&read_all(&path, 1, &opts)), vec![110, 111]);
    }

    #[test]
    fn follow_sees_appended_records_and_survives_rotations() {
        let (_d, path) = temp();
        let mut w = LogWriter::open(&path, 200, 3).unwrap();
        w.write(OUT, b"line-0000\nline-0001\n").unwrap();
        let mut r = LogReader::open(&path, 3, &ReadOptions::default()).unwrap();
        let mut seen = Vec::new();
        fn drain(r: &mut LogReader, seen: &mut Vec<usize>) {
            while let Some(rec) = r.next_record().unwrap() {
                seen.extend(numbered_lines(&[rec]));
            }
        }
        drain(&mut r, &mut seen);
        assert_eq!(seen, vec![0, 1]);
        assert_eq!(r.next_record().unwrap(), None);
        // One record at a time, rotating every fourth.
        for i in 2..30 {
            w.write(OUT, format!("line-{i:04}\n").as_bytes()).unwrap();
            drain(&mut r, &mut seen);
        }
        assert_eq!(seen, (0..30).collect::<Vec<_>>());
        // Two rotations between calls: the file we were reading is path.2 now.
        w.write(OUT, b"line-0030\nline-0031\nline-0032\nline-0033\nline-0034\nline-0035\nline-0036\n").unwrap();
        drain(&mut r, &mut seen);
        assert_eq!(seen, (0..37).collect::<Vec<_>>());
        // A rotation whose new file has no data yet.
        w.write(OUT, b"line-0037\n").unwrap();
        drain(&mut r, &mut seen);
        fs::rename(&path, numbered(&path, 1)).unwrap();
        assert_eq!(r.next_record().unwrap(), None);
        let mut w = LogWriter::open(&path, 200, 3).unwrap();
        assert_eq!(r.next_record().unwrap(), None);
        w.write(OUT, b"line-0038\n").unwrap();
        drain(&mut r, &mut seen);
        assert_eq!(seen, (0..39).collect::<Vec<_>>());
    }

    #[test]
    fn follow_reads_what_was_appended_just_before_a_rotation() {
        let (_d, path) = temp();
        fs::write(&path, line_at(1, OUT, "F", "line-0000")).unwrap();
        let mut r = LogReader::open(&path, 2, &ReadOptions::default()).unwrap();
        assert_eq!(numbered_lines(&[r.next_record().unwrap().unwrap()]), vec![0]);
        assert_eq!(r.next_record().unwrap(), None);
        // Appended to the old file after our last read, then rotated.
        append(&path, line_at(2, OUT, "F", "line-0001").as_bytes());
        fs::rename(&path, numbered(&path, 1)).unwrap();
        fs::write(&path, line_at(3, OUT, "F", "line-0002")).unwrap();
        let mut seen = Vec::new();
        while let Some(rec) = r.next_record().unwrap() {
            seen.push(rec);
        }
        assert_eq!(numbered_lines(&seen), vec![1, 2]);
    }

    #[test]
    fn follow_reads_what_was_appended_between_its_last_read_and_seeing_the_rotation() {
        let (_d, path) = temp();
        fs::write(&path, line_at(1, OUT, "F", "line-0000")).unwrap();
        let mut r = LogReader::open(&path, 2, &ReadOptions::default()).unwrap();
        // The writer appends and rotates right after the reader hit the end.
        let p = path.clone();
        let mut once = Some(move || {
            append(&p, line_at(2, OUT, "F", "line-0001").as_bytes());
            fs::rename(&p, numbered(&p, 1)).unwrap();
            fs::write(&p, line_at(3, OUT, "F", "line-0002")).unwrap();
        });
        r.at_live_end = Some(Box::new(move || {
            if let Some(f) = once.take() {
                f();
            }
        }));
        let mut seen = Vec::new();
        while let Some(rec) = r.next_record().unwrap() {
            seen.push(rec);
        }
        assert_eq!(numbered_lines(&seen), vec![0, 1, 2]);
    }

    #[test]
    fn follow_starts_over_after_a_truncation() {
        let (_d, path) = temp();
        fs::write(&path, line_at(1, OUT, "F", "line-0000") + &line_at(1, OUT, "F", "line-0001")).unwrap();
        let mut r = LogReader::open(&path, 1, &ReadOptions::default()).unwrap();
        assert!(r.next_record().unwrap().is_some());
        assert!(r.next_record().unwrap().is_some());
        assert_eq!(r.next_record().unwrap(), None);
        OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
        append(&path, line_at(2, OUT, "F", "line-0002").as_bytes());
        assert_eq!(numbered_lines(&[r.next_record().unwrap().unwrap()]), vec![2]);
    }

    #[test]
    fn a_log_that_does_not_exist_yet_is_followed_once_it_appears() {
        let (_d, path) = temp();
        let mut r = LogReader::open(&path, 3, &ReadOptions { tail: Some(10), ..Default::default() }).unwrap();
        assert_eq!(r.next_record().unwrap(), None);
        let mut w = LogWriter::open(&path, 0, 3).unwrap();
        assert_eq!(r.next_record().unwrap(), None);
        w.write(ERR, b"line-0000\n").unwrap();
        assert_eq!(r.next_record().unwrap().unwrap().stream, ERR);
    }

    #[test]
    fn a_half_written_line_is_returned_only_when_complete() {
        let (_d, path) = temp();
        let first = line_at(5, OUT, "F", "line-0000");
        let second = line_at(6, ERR, "P", "line-0001 with more");
        fs::write(&path, &first).unwrap();
        // Cut inside the timestamp, then inside the content, then complete.
        let cuts = [10, 40, second.len() - 1, second.len()];
        append(&path, &second.as_bytes()[..cuts[0]]);
        let mut r = LogReader::open(&path, 1, &ReadOptions::default()).unwrap();
        assert_eq!(r.next_record().unwrap().unwrap().content, b"line-0000");
        assert_eq!(r.next_record().unwrap(), None);
        for w in cuts.windows(2) {
            assert_eq!(r.next_record().unwrap(), None);
            append(&path, &second.as_bytes()[w[0]..w[1]]);
        }
        let rec = r.next_record().unwrap().unwrap();
        assert_eq!(rec, Record { secs: 6, nanos: 0, stream: ERR, partial: true, content: b"line-0001 with more".to_vec() });
        assert_eq!(r.next_record().unwrap(), None);
        // Tail at open does not count the unfinished line, but the reader
        // returns it once it is finished.
        append(&path, &first.as_bytes()[..20]);
        let mut r = LogReader::open(&path, 1, &ReadOptions { tail: Some(1), ..Default::default() }).unwrap();
        assert_eq!(r.next_record().unwrap().unwrap().secs, 6);
        assert_eq!(r.next_record().unwrap(), None);
        append(&path, &first.as_bytes()[20..]);
        assert_eq!(r.next_record().unwrap().unwrap().secs, 5);
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let (_d, path) = temp();
        let mut text = String::new();
        text.push_str(&line_at(1, OUT, "F", "line-0000"));
        text.push_str("garbage\n\n");
        text.push_str("1970-01-01T00:00:02Z stdout X line-9999\n"); // bad tag
        text.push_str("1970-01-01T00:00:02Z stdin F line-9999\n"); // bad stream
        text.push_str("1970-13-01T00:00:02Z stdout F line-9999\n"); // bad time
        text.push_str("1970-01-01T00:00:02Z stdout F\n"); // no content separator
        text.push_str(&line_at(2, ERR, "F", "line-0001"));
        text.push_str(&"q".repeat(READ_LINE_MAX + 3 * READ_BLOCK)); // overlong
        text.push('\n');
        text.push_str(&line_at(3, OUT, "F", "line-0002"));
        fs::write(&path, text).unwrap();
        assert_eq!(numbered_lines(&all(&path, 1)), vec![0, 1, 2]);

        // The rest of an overlong line is dropped too, even where it looks
        // like a record: the forward reader drops the buffered part at the
        // first block end past READ_LINE_MAX and reads on from there.
        let mut text = line_at(1, OUT, "F", "line-0000");
        let cut = ((text.len() + READ_LINE_MAX) / READ_BLOCK + 1) * READ_BLOCK;
        text.push_str(&"q".repeat(cut - text.len()));
        text.push_str(&line_at(2, OUT, "F", "line-9999"));
        text.push_str(&line_at(3, OUT, "F", "line-0001"));
        fs::write(&path, &text).unwrap();
        assert_eq!(numbered_lines(&all(&path, 1)), vec![0, 1]);
        assert_eq!(numbered_lines(&read_all(&path, 1, &ReadOptions { tail: Some(2), ..Default::default() })), vec![0, 1]);

        let mut text = String::new();
        text.push_str(&line_at(1, OUT, "F", "line-0000"));
        text.push_str("garbage\n\n");
        text.push_str("1970-01-01T00:00:02Z stdout X line-9999\n");
        text.push_str(&line_at(2, ERR, "F", "line-0001"));
        text.push_str(&"q".repeat(READ_LINE_MAX + 3 * READ_BLOCK));
        text.push('\n');
        text.push_str(&line_at(3, OUT, "F", "line-0002"));
        fs::write(&path, text).unwrap();
        let tail = |n| numbered_lines(&read_all(&path, 1, &ReadOptions { tail: Some(n), ..Default::default() }));
        assert_eq!(tail(2), vec![1, 2]);
        assert_eq!(tail(3), vec![0, 1, 2]);
    }

    #[test]
    fn parse_line_round_trip() {
        let (_d, path) = temp();
        let mut w = LogWriter::open(&path, 0, 1).unwrap();
        w.write(OUT, b"plain\n  spaces  and\ttabs \n\n").unwrap();
        w.write(ERR, "ünïcode F P stdout\n".as_bytes()).unwrap();
        w.write(ERR, b"\xff\xfe binary\r\n").unwrap();
        let raw = raw_lines(&path);
        let recs: Vec<Record> = raw.iter().map(|l| parse_line(l).unwrap()).collect();
        let contents: Vec<&[u8]> = recs.iter().map(|r| r.content.as_slice()).collect();
        assert_eq!(contents, vec![&b"plain"[..], b"  spaces  and\ttabs ", b"", "ünïcode F P stdout".as_bytes(), b"\xff\xfe binary\r"]);
        // Writing a parsed record back out gives the same bytes.
        for (line, r) in raw.iter().zip(&recs) {
            let mut again = time::format_rfc3339_nano(r.secs, r.nanos).into_bytes();
            again.extend_from_slice(format!(" {} {} ", r.stream.as_str(), if r.partial { "P" } else { "F" }).as_bytes());
            again.extend_from_slice(&r.content);
            assert_eq!(&again, line);
        }
        // Other writers: trimmed fractions, offsets, extra tags.
        assert_eq!(
            parse_line(b"2024-02-29T12:34:56.5+01:00 stderr P:x hi there"),
            Some(Record { secs: 1_709_206_496, nanos: 500_000_000, stream: ERR, partial: true, content: b"hi there".to_vec() })
        );
        assert_eq!(parse_line(b"1970-01-01T00:00:00Z stdout F ").unwrap().content, b"");
        for bad in [
            &b""[..],
            b"x",
            b"1970-01-01T00:00:00Z",
            b"1970-01-01T00:00:00Z stdout",
            b"1970-01-01T00:00:00Z stdout F",
            b"1970-01-01T00:00:00Z  stdout F x",
            b"1970-01-01T00:00:00Z stdout FP x",
            b"1970-01-01T00:00:00Z stdout  x",
        ] {
            assert_eq!(parse_line(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(serde_json::to_string(&ERR).unwrap(), "\"stderr\"");
        assert_eq!(serde_json::from_str::<Stream>("\"stdout\"").unwrap(), OUT);
    }

    #[test]
    fn log_files_lists_existing_files_oldest_first() {
        let (_d, path) = temp();
        assert!(log_files(&path, 3).is_empty());
        fs::write(&path, b"").unwrap();
        fs::write(numbered(&path, 2), b"").unwrap();
        fs::write(numbered(&path, 5), b"").unwrap();
        assert_eq!(log_files(&path, 3), vec![numbered(&path, 2), path.clone()]);
        assert_eq!(log_files(&path, 1), vec![path.clone()]);
        assert_eq!(log_files(&path, 0), vec![path.clone()]);
        assert_eq!(log_files(&path, 6), vec![numbered(&path, 5), numbered(&path, 2), path.clone()]);
    }
}
