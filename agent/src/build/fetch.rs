//! `ADD <url>`: a file fetched over HTTP(S) into a build's scratch
//! directory, bounded in size and time, checked against `--checksum`.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use sha2::Digest as _;

use crate::digest::Digest;

/// Bound on connecting and on waiting for the response's headers.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const HEADERS_TIMEOUT: Duration = Duration::from_secs(60);
/// A transfer that moves nothing for this long fails.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A file fetched for ADD.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Its name: the URL path's last part.
    pub name: String,
    pub digest: Digest,
    pub size: u64,
}

/// The name ADD gives what `url` serves: the last part of its path.
pub fn file_name(url: &str) -> Result<String, String> {
    let path = url.split_once("://").map_or(url, |(_, r)| r).split(['?', '#']).next().unwrap_or("");
    let name = path.split_once('/').map_or("", |(_, p)| p).rsplit('/').next().unwrap_or("");
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("{url}: the URL names no file; give ADD a destination file name"));
    }
    Ok(name.to_owned())
}

/// Fetch `url` into `dir/<its name>` (mode 0600), at most `max_bytes`; the
/// sha256 must be `checksum` when one is given (`sha256:<hex>`).
pub fn fetch(url: &str, dir: &Path, max_bytes: u64, checksum: Option<&str>) -> Result<Fetched, String> {
    let name = file_name(url)?;
    let shown = berth_common::text::printable(url).into_owned();
    let agent = ureq::Agent::config_builder()
        .max_redirects(5)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_recv_response(Some(HEADERS_TIMEOUT))
        .timeout_per_read(Some(STALL_TIMEOUT))
        .user_agent(concat!("berthd/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent();
    let resp = agent.get(url).call().map_err(|e| format!("fetching {shown}: {e}"))?;
    let mut body = resp.into_body().into_reader();
    let path = dir.join(&name);
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = body.read(&mut buf).map_err(|e| format!("fetching {shown}: {e}"))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > max_bytes {
            return Err(format!("{shown} is larger than {max_bytes} bytes"));
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let digest = Digest::from_hex(&hex::encode(hasher.finalize())).map_err(|e| e.to_string())?;
    if let Some(want) = checksum {
        if want != digest.as_str() {
            return Err(format!("{shown}: its sha256 is {digest}, --checksum says {want}"));
        }
    }
    Ok(Fetched { name, digest, size })
}

use std::os::unix::fs::OpenOptionsExt;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_url_path() {
        assert_eq!(file_name("http://127.0.0.1:8080/files/tool.tar.gz?x=1").unwrap(), "tool.tar.gz");
        assert_eq!(file_name("https://example.com/a/b/c").unwrap(), "c");
        assert!(file_name("http://example.com/").is_err());
        assert!(file_name("http://example.com").is_err());
    }
}
