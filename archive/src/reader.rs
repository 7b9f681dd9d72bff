//! Reading untrusted tar streams (layers, import archives) so that every tar reader lists the
//! same entries, or the stream is refused.
//!
//! Tar can describe one entry several times over, and readers resolve that differently:
//!
//! - Two `path` (or `size`, `linkpath`, ...) records in one PAX extended header (`x`): the `tar`
//!   crate reads the first; GNU tar, Python's tarfile and Go's archive/tar the last.
//! - A PAX `path` and a GNU long-name header (`L`), in either order: the `tar` crate and Go take
//!   the long name, GNU tar the PAX path, Python whichever header comes first. The same holds
//!   for a PAX `linkpath` and a GNU long-link header (`K`).
//! - A PAX global header (`g`) setting `path`, `size`, ...: GNU tar and Python apply it to every
//!   later entry, the `tar` crate and Go ignore it.
//! - PAX records the `tar` crate splits differently from a reader that follows their lengths
//!   (it cuts records at newlines and accepts a `+` before a length), numbers it falls back on
//!   the header for where Python reads 0 (`size=1x`), and extension headers it does not treat
//!   as such (an `x`, `L` or `K` header without ustar or GNU magic, Solaris `X` headers) but
//!   others apply to the next entry.
//!
//! An archive relying on any of these can carry a file that one reader lists and another never
//! sees, or sees with another size, so that whatever follows is read differently too: a layer
//! could hold what no scanner reports. Docker, containerd, BuildKit and GNU or BSD tar write
//! none of them (one `x` header per entry, each key once; `L`/`K` only in GNU format, never
//! with PAX names; `g` at most with a `comment`, as `git archive` writes it).
//!
//! [`Entries`] therefore refuses them. It drives the `tar` crate, and before it hands out an
//! entry it reads again the raw extension headers the crate consumed for it ([`Tracked`] keeps
//! them) and checks them:
//!
//! - each PAX record has the one form all readers split alike (`<length> <key>=<value>\n`,
//!   the length in decimal digits, no newline inside), and no key appears twice;
//! - `path` and `linkpath` are not empty and hold no NUL; `size`, `uid` and `gid` are decimal
//!   numbers; `mtime` is `[-]SECONDS[.FRACTION]`;
//! - a GNU long name or link has no NUL before its end (the `tar` crate drops one trailing NUL,
//!   the others stop at the first);
//! - no entry has both a GNU long name and a PAX `path`, or both a GNU long link and a PAX
//!   `linkpath`;
//! - a global header holds only `comment` records (it is skipped, as before: Docker and
//!   containerd ignore global headers too), and no extension header precedes it.
//!
//! PAX sparse files (`GNU.sparse.*` records) are refused as unsupported: Python reads their
//! `GNU.sparse.name` and `GNU.sparse.size` as the entry's name and size, the `tar` crate does not.
//!
//! The same reader also bounds what one entry's headers may hold ([`META_BUDGET`]): the `tar`
//! crate buffers long names and PAX records whole.

use std::cell::RefCell;
use std::collections::HashSet;
use std::io::{self, Read, Seek, SeekFrom};
use std::rc::Rc;

use tar::{EntryType, Header};

/// Most bytes the tar crate may read while producing one entry: its header blocks plus GNU
/// long-name/long-link and PAX extension data. The crate buffers those in memory without a
/// limit, so we cap them at the reader (see [`Tracked`]).
pub(crate) const META_BUDGET: u64 = 1 << 20;
/// Size of a tar block.
const BLOCK: usize = 512;

/// An entry refused by [`Entries`], or a stream that is not readable as tar.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    /// Truncated tar, corrupt headers, headers over [`META_BUDGET`], or an error of the
    /// underlying reader (whose message is kept as is: a size cap, corrupt gzip, ...).
    #[error(transparent)]
    Read(io::Error),
    /// An entry that tar readers do not all read alike (see the module docs).
    #[error("entry {path:?} is not read alike by all tar readers: {reason}")]
    Ambiguous { path: String, reason: String },
    /// A feature no reader of ours supports (PAX sparse files).
    #[error("unsupported entry {path:?}: {reason}")]
    Unsupported { path: String, reason: String },
}

/// Where the stream is, and what the tar crate read while it assembled the current entry.
#[derive(Default)]
struct Window {
    /// Bytes read from the stream so far. The tar crate's positions count the same bytes.
    pos: u64,
    /// While the tar crate assembles one entry: what it read from the first header on.
    capture: Option<Capture>,
}

#[derive(Default)]
struct Capture {
    /// Stream position of `bytes[0]`; None until the first read.
    start: Option<u64>,
    bytes: Vec<u8>,
}

/// The stream under the tar crate: counts what is read, keeps what is read while an entry is
/// assembled (at most [`META_BUDGET`] bytes), and seeks forward only, by reading. Seeking is
/// what lets the header bytes be told apart: the crate skips the rest of the previous entry
/// (and the padding after extension data) with a seek, never with a read.
pub struct Tracked<R> {
    inner: R,
    window: Rc<RefCell<Window>>,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut window = self.window.borrow_mut();
        let Window { pos, capture } = &mut *window;
        let n = match capture {
            None => self.inner.read(buf)?,
            Some(capture) => {
                let left = usize::try_from(META_BUDGET).unwrap_or(usize::MAX).saturating_sub(capture.bytes.len());
                if left == 0 && !buf.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        crate::InputLimit(format!("tar headers and extension records of one entry exceed {META_BUDGET} bytes")),
                    ));
                }
                let max = buf.len().min(left);
                let n = self.inner.read(&mut buf[..max])?;
                capture.start.get_or_insert(*pos);
                capture.bytes.extend_from_slice(&buf[..n]);
                n
            }
        };
        *pos += n as u64;
        Ok(n)
    }
}

impl<R: Read> Seek for Tracked<R> {
    /// Forward only (`SeekFrom::Current` with a count of at least 0), by reading.
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let SeekFrom::Current(by) = to else {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "a tar stream is only read forward"));
        };
        let by = u64::try_from(by).map_err(|_| io::Error::new(io::ErrorKind::Unsupported, "a tar stream is only read forward"))?;
        // Inside an entry's headers (the padding after extension data) the bytes are kept, so
        // the headers can be read again; before them (the rest of the previous entry) not.
        let inside = matches!(&self.window.borrow().capture, Some(Capture { start: Some(_), .. }));
        let skipped = if inside {
            io::copy(&mut self.by_ref().take(by), &mut io::sink())?
        } else {
            let n = io::copy(&mut (&mut self.inner).take(by), &mut io::sink())?;
            self.window.borrow_mut().pos += n;
            n
        };
        if skipped != by {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the archive ends inside an entry"));
        }
        Ok(self.window.borrow().pos)
    }
}

/// A tar stream read with the checks of this module.
pub struct TarReader<R: Read> {
    archive: tar::Archive<Tracked<R>>,
    window: Rc<RefCell<Window>>,
}

/// An entry handed out by [`Entries`].
pub type Entry<'a, R> = tar::Entry<'a, Tracked<R>>;

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> Self {
        let window = Rc::new(RefCell::new(Window::default()));
        Self { archive: tar::Archive::new(Tracked { inner, window: Rc::clone(&window) }), window }
    }

    /// The entries, in order. Each must be used (or dropped) before the next is asked for.
    pub fn entries(&mut self) -> Result<Entries<'_, R>, TarError> {
        let inner = self.archive.entries_with_seek().map_err(TarError::Read)?;
        Ok(Entries { inner, window: Rc::clone(&self.window) })
    }

    /// How many bytes of the stream have been read.
    pub fn position(&self) -> u64 {
        self.window.borrow().pos
    }

    /// The underlying reader, positioned after what was read of the archive.
    pub fn into_inner(self) -> R {
        self.archive.into_inner().inner
    }
}

/// The entries of a [`TarReader`]. PAX global headers are checked and skipped, not handed out.
pub struct Entries<'a, R: Read> {
    inner: tar::Entries<'a, Tracked<R>>,
    window: Rc<RefCell<Window>>,
}

impl<'a, R: Read> Iterator for Entries<'a, R> {
    type Item = Result<Entry<'a, R>, TarError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.window.borrow_mut().capture = Some(Capture::default());
            let next = self.inner.next();
            let capture = self.window.borrow_mut().capture.take().unwrap_or_default();
            let mut entry = match next? {
                Ok(entry) => entry,
                Err(e) => return Some(Err(TarError::Read(e))),
            };
            if let Err(e) = check_entry(&entry, &capture) {
                return Some(Err(e));
            }
            if entry.header().entry_type() != EntryType::XGlobalHeader {
                return Some(Ok(entry));
            }
            if let Err(e) = check_global(&mut entry) {
                return Some(Err(e));
            }
        }
    }
}

/// Checks the extension headers the tar crate read for `entry` (kept in `capture`).
fn check_entry<R: Read>(entry: &tar::Entry<'_, R>, capture: &Capture) -> Result<(), TarError> {
    let ambiguous = |reason: &str| TarError::Ambiguous { path: show(&entry.path_bytes()), reason: reason.to_owned() };
    let kind = entry.header().entry_type();
    match kind.as_byte() {
        // The crate hands these out as entries when their header has neither ustar nor GNU
        // magic; Python, Go and GNU tar apply them to the next entry all the same.
        b'x' | b'L' | b'K' => return Err(ambiguous("an extension header without ustar or GNU magic")),
        b'X' => return Err(ambiguous("a Solaris extended header (GNU tar and Python apply it to the next entry)")),
        _ => {}
    }
    let at = entry.raw_header_position();
    let start = capture.start.unwrap_or(at);
    let headers = at
        .checked_sub(start)
        .and_then(|n| usize::try_from(n).ok())
        .and_then(|n| capture.bytes.get(..n))
        .ok_or_else(|| ambiguous("its extension headers could not be read again"))?;
    let exts = Extensions::split(headers).map_err(|reason| ambiguous(&reason))?;
    if kind == EntryType::XGlobalHeader && !headers.is_empty() {
        return Err(ambiguous("extension headers describe a PAX global header"));
    }
    for (data, what) in [(exts.long_name, "name"), (exts.long_link, "link")] {
        // The crate drops one trailing NUL; GNU tar, Python and Go stop at the first.
        if data.is_some_and(|d| d.iter().position(|&b| b == 0).is_some_and(|i| i + 1 != d.len())) {
            return Err(ambiguous(&format!("its GNU long {what} holds a NUL byte")));
        }
    }
    let Some(pax) = exts.pax else { return Ok(()) };
    let records = pax_records(pax).map_err(|reason| ambiguous(&reason))?;
    let mut seen = HashSet::new();
    for (key, value) in records {
        let key_shown = show(key);
        if !seen.insert(key) {
            return Err(ambiguous(&format!(
                "its PAX header gives {key_shown:?} twice (the tar crate reads the first, GNU tar, Python and Go the last)"
            )));
        }
        if key.starts_with(b"GNU.sparse.") {
            return Err(TarError::Unsupported { path: show(&entry.path_bytes()), reason: "PAX sparse files are not supported".into() });
        }
        let valid = match key {
            b"path" | b"linkpath" => !value.is_empty() && !value.contains(&0),
            b"uname" | b"gname" => !value.contains(&0),
            b"size" | b"uid" | b"gid" => decimal(value).is_some(),
            b"mtime" => pax_time(value),
            _ => true,
        };
        if !valid {
            return Err(ambiguous(&format!("its PAX record {key_shown:?} has the value {:?}", show(value))));
        }
    }
    if exts.long_name.is_some() && seen.contains(&b"path"[..]) {
        return Err(ambiguous("it is named both by a GNU long-name header and by a PAX path (readers disagree on which one counts)"));
    }
    if exts.long_link.is_some() && seen.contains(&b"linkpath"[..]) {
        return Err(ambiguous(
            "its link target is given both by a GNU long-link header and by a PAX linkpath (readers disagree on which one counts)",
        ));
    }
    Ok(())
}

/// Reads and checks a PAX global header: only `comment` records, each once.
fn check_global<R: Read>(entry: &mut Entry<'_, R>) -> Result<(), TarError> {
    let size = entry.size();
    if size > META_BUDGET {
        return Err(TarError::Read(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a PAX global header of {size} bytes; at most {META_BUDGET} are read"),
        )));
    }
    let mut data = Vec::new();
    entry.by_ref().take(size).read_to_end(&mut data).map_err(TarError::Read)?;
    if data.len() as u64 != size {
        return Err(TarError::Read(io::Error::new(io::ErrorKind::UnexpectedEof, "the archive ends inside a PAX global header")));
    }
    let ambiguous = |reason: String| TarError::Ambiguous { path: show(&entry.path_bytes()), reason };
    let records = pax_records(&data).map_err(ambiguous)?;
    let mut seen = HashSet::new();
    for (key, _) in records {
        if !seen.insert(key) {
            return Err(ambiguous(format!("the PAX global header gives {:?} twice", show(key))));
        }
        if key != b"comment" {
            return Err(ambiguous(format!(
                "a PAX global header sets {:?}: GNU tar and Python apply it to every later entry, the tar crate and Go do not",
                show(key)
            )));
        }
    }
    Ok(())
}

/// The extension headers before one entry, by kind.
#[derive(Default)]
struct Extensions<'a> {
    long_name: Option<&'a [u8]>,
    long_link: Option<&'a [u8]>,
    pax: Option<&'a [u8]>,
}

impl<'a> Extensions<'a> {
    /// Splits the raw header blocks the tar crate read before an entry's own header. It took
    /// them as extension headers, so anything else means this reading went wrong: refused.
    fn split(mut headers: &'a [u8]) -> Result<Self, String> {
        let mismatch = || "its extension headers could not be read again".to_owned();
        let mut exts = Extensions::default();
        while !headers.is_empty() {
            let header = Header::from_byte_slice(headers.get(..BLOCK).ok_or_else(mismatch)?);
            if header.as_ustar().is_none() && header.as_gnu().is_none() {
                return Err(mismatch());
            }
            let size = header.entry_size().ok().and_then(|s| usize::try_from(s).ok()).ok_or_else(mismatch)?;
            let data = headers.get(BLOCK..).and_then(|rest| rest.get(..size)).ok_or_else(mismatch)?;
            let slot = match header.entry_type() {
                EntryType::GNULongName => &mut exts.long_name,
                EntryType::GNULongLink => &mut exts.long_link,
                EntryType::XHeader => &mut exts.pax,
                _ => return Err(mismatch()),
            };
            if slot.replace(data).is_some() {
                // The tar crate refuses these itself.
                return Err("two extension headers of one kind describe it".into());
            }
            headers = headers.get(BLOCK + size.div_ceil(BLOCK) * BLOCK..).ok_or_else(mismatch)?;
        }
        Ok(exts)
    }
}

/// One PAX record: key and value.
type Record<'a> = (&'a [u8], &'a [u8]);

/// Splits PAX extended header data into (key, value) records, accepting only the form every
/// reader splits alike: `<length> <key>=<value>\n`, the length in decimal digits counting the
/// whole record, no newline inside a record (the tar crate cuts records at newlines), a
/// non-empty key without NUL, and nothing after the last record.
fn pax_records(mut data: &[u8]) -> Result<Vec<Record<'_>>, String> {
    let mut records = Vec::new();
    while !data.is_empty() {
        let malformed = |what: &str| format!("a malformed PAX record ({what}) at {:?}", show(&data[..data.len().min(32)]));
        let digits = data.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || data.get(digits) != Some(&b' ') {
            return Err(malformed("no decimal length"));
        }
        let len = std::str::from_utf8(&data[..digits])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&len| len > digits + 1 && len <= data.len())
            .ok_or_else(|| malformed("a length past its end"))?;
        let Some((&b'\n', body)) = data[digits + 1..len].split_last() else {
            return Err(malformed("no newline at its end"));
        };
        if body.contains(&b'\n') {
            return Err(malformed("a newline inside"));
        }
        let eq = body.iter().position(|&b| b == b'=').ok_or_else(|| malformed("no '='"))?;
        let (key, value) = (&body[..eq], &body[eq + 1..]);
        if key.is_empty() || key.contains(&0) {
            return Err(malformed("an empty key or a NUL in the key"));
        }
        records.push((key, value));
        data = &data[len..];
    }
    Ok(records)
}

/// A PAX number: decimal digits only (no sign, no spaces), fitting in 64 bits.
fn decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// A PAX time: `[-]SECONDS[.FRACTION]`, the seconds fitting in an i64.
fn pax_time(value: &[u8]) -> bool {
    let unsigned = value.strip_prefix(b"-").unwrap_or(value);
    let (secs, frac) = match unsigned.iter().position(|&b| b == b'.') {
        Some(dot) => (&unsigned[..dot], &unsigned[dot + 1..]),
        None => (unsigned, &b""[..]),
    };
    decimal(secs).is_some_and(|s| i64::try_from(s).is_ok()) && frac.iter().all(u8::is_ascii_digit)
}

/// A name for messages: lossy UTF-8, cut short if huge.
pub(crate) fn show(bytes: &[u8]) -> String {
    const MAX: usize = 256;
    if bytes.len() > MAX {
        format!("{}…", String::from_utf8_lossy(&bytes[..MAX]))
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// The magic of a hand-built header.
    #[derive(Clone, Copy)]
    enum Magic {
        Ustar,
        Gnu,
        /// Old (v7) format: no magic at all.
        None,
    }

    /// One 512-byte header, written field by field, with its checksum computed here (not by the
    /// tar crate under test).
    fn header(name: &[u8], kind: u8, size: usize, magic: Magic) -> Vec<u8> {
        let mut h = vec![0u8; BLOCK];
        h[..name.len()].copy_from_slice(name);
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[136..148].copy_from_slice(b"14400000000\0");
        h[156] = kind;
        match magic {
            Magic::Ustar => h[257..265].copy_from_slice(b"ustar\x0000"),
            Magic::Gnu => h[257..265].copy_from_slice(b"ustar  \0"),
            Magic::None => {}
        }
        // The checksum is the sum of all bytes, its own field counted as spaces.
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    /// A header and its data, padded to whole blocks.
    fn member(name: &[u8], kind: u8, data: &[u8], magic: Magic) -> Vec<u8> {
        let mut m = header(name, kind, data.len(), magic);
        m.extend_from_slice(data);
        m.resize(m.len().div_ceil(BLOCK) * BLOCK, 0);
        m
    }

    fn file(name: &str, data: &[u8]) -> Vec<u8> {
        member(name.as_bytes(), b'0', data, Magic::Ustar)
    }

    /// PAX records, `<length> <key>=<value>\n`, each length counting its whole record.
    fn records(records: &[(&str, &[u8])]) -> Vec<u8> {
        let mut data = Vec::new();
        for (key, value) in records {
            let body = key.len() + value.len() + 3;
            let mut len = body + 1;
            while len != body + len.to_string().len() {
                len = body + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        data
    }

    /// A PAX extended header (`x`) holding `data`.
    fn pax_raw(data: &[u8]) -> Vec<u8> {
        member(b"PaxHeaders/x", b'x', data, Magic::Ustar)
    }

    fn pax(recs: &[(&str, &[u8])]) -> Vec<u8> {
        pax_raw(&records(recs))
    }

    fn global(recs: &[(&str, &[u8])]) -> Vec<u8> {
        member(b"pax_global_header", b'g', &records(recs), Magic::Ustar)
    }

    /// A GNU long-name header (`L`), as GNU tar writes it: the name and a NUL.
    fn long_name(name: &str) -> Vec<u8> {
        member(b"././@LongLink", b'L', &[name.as_bytes(), b"\0"].concat(), Magic::Gnu)
    }

    /// The members, then the two zero blocks that end an archive.
    fn archive(members: &[Vec<u8>]) -> Vec<u8> {
        let mut out = members.concat();
        out.resize(out.len() + 2 * BLOCK, 0);
        out
    }

    /// The names [`Entries`] hands out, each entry's data read; or its refusal.
    fn listing(bytes: &[u8]) -> Result<Vec<String>, TarError> {
        let mut reader = TarReader::new(bytes);
        let mut names = Vec::new();
        for entry in reader.entries()? {
            let mut entry = entry?;
            names.push(show(&entry.path_bytes()));
            io::copy(&mut entry, &mut io::sink()).map_err(TarError::Read)?;
        }
        Ok(names)
    }

    /// The names the tar crate alone lists.
    fn tar_crate_listing(bytes: &[u8]) -> Vec<String> {
        let mut archive = tar::Archive::new(bytes);
        archive.entries().unwrap().map(|e| show(&e.unwrap().path_bytes())).collect()
    }

    /// The names reference readers list, from the bytes written to a file: Python's tarfile,
    /// then GNU tar.
    fn reference_listings(bytes: &[u8]) -> (Vec<String>, Vec<String>) {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), bytes).unwrap();
        let python = Command::new("python3")
            .args(["-c", "import json, sys, tarfile; print(json.dumps([m.name for m in tarfile.open(sys.argv[1])]))"])
            .arg(tmp.path())
            .output()
            .unwrap_or_else(|e| panic!("python3 is the reference tar reader ({e}): install Debian's python3"));
        assert!(python.status.success(), "python3: {}", String::from_utf8_lossy(&python.stderr));
        // GNU tar complains (and exits with 2) about some of these archives; what it lists counts.
        let gnu = Command::new("tar")
            .arg("-tf")
            .arg(tmp.path())
            .output()
            .unwrap_or_else(|e| panic!("GNU tar is the second reference reader ({e}): install Debian's tar"));
        let gnu = String::from_utf8_lossy(&gnu.stdout).lines().map(str::to_owned).collect();
        (serde_json::from_slice(&python.stdout).unwrap(), gnu)
    }

    /// Refused as ambiguous, with `needle` in the message.
    fn assert_refused(bytes: &[u8], needle: &str) {
        match listing(bytes) {
            Err(e @ TarError::Ambiguous { .. }) => assert!(e.to_string().contains(needle), "{needle:?} not in: {e}"),
            other => panic!("expected a refusal mentioning {needle:?}, got {other:?}"),
        }
    }

    #[test]
    fn two_path_records_in_one_pax_header_are_refused_as_python_and_gnu_tar_take_the_last() {
        let bytes = archive(&[pax(&[("path", b"first"), ("path", b"second")]), file("header", b"data")]);
        assert_eq!(tar_crate_listing(&bytes), ["first"]);
        assert_eq!(reference_listings(&bytes), (vec!["second".to_owned()], vec!["second".to_owned()]));
        assert_refused(&bytes, "gives \"path\" twice");
    }

    #[test]
    fn two_size_records_in_one_pax_header_are_refused_as_they_hide_or_show_the_next_entry() {
        // With the first size (0) the next entry is "hidden"; with the last (1024) it is data.
        let bytes = archive(&[pax(&[("size", b"0"), ("size", b"1024")]), file("header", b""), file("hidden", b"x")]);
        assert_eq!(tar_crate_listing(&bytes), ["header", "hidden"]);
        assert_eq!(reference_listings(&bytes), (vec!["header".to_owned()], vec!["header".to_owned()]));
        assert_refused(&bytes, "gives \"size\" twice");
    }

    #[test]
    fn a_pax_path_then_a_gnu_long_name_for_one_entry_is_refused() {
        let bytes = archive(&[pax(&[("path", b"pax")]), long_name("gnu"), file("header", b"data")]);
        assert_eq!(tar_crate_listing(&bytes), ["gnu"]);
        assert_eq!(reference_listings(&bytes), (vec!["pax".to_owned()], vec!["pax".to_owned()]));
        assert_refused(&bytes, "both by a GNU long-name header and by a PAX path");
    }

    #[test]
    fn a_gnu_long_name_then_a_pax_path_for_one_entry_is_refused() {
        // Python takes the first header here, GNU tar the PAX path: the readers disagree.
        let bytes = archive(&[long_name("gnu"), pax(&[("path", b"pax")]), file("header", b"data")]);
        assert_eq!(tar_crate_listing(&bytes), ["gnu"]);
        assert_eq!(reference_listings(&bytes), (vec!["gnu".to_owned()], vec!["pax".to_owned()]));
        assert_refused(&bytes, "both by a GNU long-name header and by a PAX path");
    }

    #[test]
    fn a_gnu_long_link_beside_a_pax_linkpath_is_refused() {
        let long_link = member(b"././@LongLink", b'K', b"gnu\0", Magic::Gnu);
        let bytes = archive(&[long_link, pax(&[("linkpath", b"pax")]), member(b"link", b'2', b"", Magic::Ustar)]);
        assert_refused(&bytes, "GNU long-link header and by a PAX linkpath");
    }

    #[test]
    fn a_pax_global_header_setting_a_path_is_refused_as_python_names_every_later_entry_by_it() {
        let bytes = archive(&[global(&[("path", b"glob")]), file("a", b"1"), file("b", b"2")]);
        assert_eq!(tar_crate_listing(&bytes), ["pax_global_header", "a", "b"]);
        let glob = vec!["glob".to_owned(), "glob".to_owned()];
        assert_eq!(reference_listings(&bytes), (glob.clone(), glob));
        assert_refused(&bytes, "global header sets \"path\"");
    }

    #[test]
    fn a_pax_record_with_a_newline_inside_is_refused_as_the_tar_crate_splits_it_in_two() {
        // The tar crate cuts at the newline and finds "13 path=evil" in the xattr's value.
        let bytes = archive(&[pax(&[("SCHILY.xattr.user.a", b"v\n13 path=evil")]), file("header", b"data")]);
        assert_eq!(tar_crate_listing(&bytes), ["evil"]);
        assert_eq!(reference_listings(&bytes).0, ["header"]);
        assert_refused(&bytes, "a newline inside");
    }

    #[test]
    fn a_pax_record_length_with_a_plus_sign_is_refused() {
        // 13 bytes; the tar crate parses "+13" as a length, Python stops at the '+'.
        let bytes = archive(&[pax_raw(b"+13 path=pax\n"), file("header", b"data")]);
        assert_eq!(tar_crate_listing(&bytes), ["pax"]);
        assert_eq!(reference_listings(&bytes).0, ["header"]);
        assert_refused(&bytes, "no decimal length");
    }

    #[test]
    fn a_pax_size_that_is_not_a_plain_number_is_refused() {
        // The tar crate falls back on the header's size (1024: "hidden" is data), Python reads 0.
        let bytes = archive(&[pax(&[("size", b"1x")]), member(b"header", b'0', &file("hidden", b"x"), Magic::Ustar)]);
        assert_eq!(tar_crate_listing(&bytes), ["header"]);
        assert_eq!(reference_listings(&bytes).0, ["header", "hidden"]);
        assert_refused(&bytes, "\"size\" has the value \"1x\"");
    }

    #[test]
    fn an_extension_header_without_magic_is_refused_as_other_readers_apply_it() {
        let v7_pax = member(b"PaxHeaders/x", b'x', &records(&[("path", b"pax")]), Magic::None);
        let bytes = archive(&[v7_pax, file("header", b"data")]);
        assert_eq!(tar_crate_listing(&bytes), ["PaxHeaders/x", "header"]);
        assert_eq!(reference_listings(&bytes).0, ["pax"]);
        assert_refused(&bytes, "without ustar or GNU magic");
    }

    #[test]
    fn a_gnu_long_name_with_a_nul_inside_is_refused() {
        let bytes = archive(&[member(b"././@LongLink", b'L', b"good\0evil\0", Magic::Gnu), file("header", b"data")]);
        assert_eq!(tar_crate_listing(&bytes), ["good\0evil"]);
        assert_eq!(reference_listings(&bytes).0, ["good"]);
        assert_refused(&bytes, "GNU long name holds a NUL byte");
    }

    #[test]
    fn pax_sparse_records_are_unsupported() {
        let bytes = archive(&[pax(&[("GNU.sparse.name", b"other")]), file("header", b"data")]);
        assert!(matches!(listing(&bytes), Err(TarError::Unsupported { .. })), "{:?}", listing(&bytes));
    }

    #[test]
    fn extension_headers_all_readers_read_alike_are_listed_as_python_and_gnu_tar_list_them() {
        let long_pax = format!("pax/{}", "p".repeat(150));
        let long_gnu = format!("gnu/{}", "g".repeat(150));
        let bytes = archive(&[
            global(&[("comment", b"written by git archive")]),
            pax(&[("path", long_pax.as_bytes()), ("mtime", b"1600000000.25"), ("SCHILY.xattr.user.a", b"v"), ("size", b"4")]),
            file(&long_pax[..100], b"data"),
            long_name(&long_gnu),
            file(&long_gnu[..100], b"data"),
            pax(&[("uid", b"1000"), ("gid", b"1000"), ("uname", b"u"), ("comment", b"")]),
            file("plain", b""),
        ]);
        let ours = listing(&bytes).unwrap();
        assert_eq!(ours, [long_pax, long_gnu, "plain".to_owned()]);
        assert_eq!(reference_listings(&bytes), (ours.clone(), ours));
    }

    #[test]
    fn entries_whose_data_is_left_unread_are_skipped_and_the_next_headers_still_checked() {
        let long = format!("d/{}", "n".repeat(150));
        let bytes = archive(&[file("big", &[7; 3000]), pax(&[("path", long.as_bytes())]), file("short", b"x"), file("last", b"")]);
        let mut reader = TarReader::new(&bytes[..]);
        let names: Vec<String> = reader.entries().unwrap().map(|e| show(&e.unwrap().path_bytes())).collect();
        assert_eq!(names, ["big".to_owned(), long, "last".to_owned()]);

        let bytes = archive(&[file("big", &[7; 3000]), pax(&[("path", b"a"), ("path", b"b")]), file("short", b"x")]);
        let mut reader = TarReader::new(&bytes[..]);
        let mut entries = reader.entries().unwrap();
        assert!(entries.next().unwrap().is_ok());
        assert!(matches!(entries.next(), Some(Err(TarError::Ambiguous { .. }))));
    }

    #[test]
    fn headers_over_the_budget_are_refused() {
        let big = vec![b'c'; META_BUDGET as usize];
        let bytes = archive(&[pax(&[("comment", &big)]), file("f", b"x")]);
        match listing(&bytes) {
            Err(TarError::Read(e)) => assert!(e.to_string().contains("exceed"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pax_records_are_split_by_their_lengths_only_in_the_plain_form() {
        assert_eq!(pax_records(b"").unwrap(), Vec::<Record<'_>>::new());
        assert_eq!(pax_records(b"8 a=b=c\n6 k=v\n").unwrap(), [(&b"a"[..], &b"b=c"[..]), (&b"k"[..], &b"v"[..])]);
        assert_eq!(pax_records(b"009 k=vv\n").unwrap(), [(&b"k"[..], &b"vv"[..])]);
        let bad: [&[u8]; 10] =
            [b"6 k=v\n\n", b"5 k=v\n", b"7 k=v\n", b"6 kv\n\n", b"6 kvv\n", b"6 =vv\n", b" 6 k=v\n", b"6k=vv\n", b"+7 k=v\n", b"6 k=v\nx"];
        for bad in bad {
            assert!(pax_records(bad).is_err(), "{:?}", show(bad));
        }
        assert!(
            decimal(b"0012").is_some() && decimal(b"+1").is_none() && decimal(b"").is_none() && decimal(b"99999999999999999999").is_none()
        );
        assert!(pax_time(b"-1.5") && pax_time(b"7") && pax_time(b"7.") && !pax_time(b"1e9") && !pax_time(b".5") && !pax_time(b""));
    }
}
