//! An OCI distribution API client for one registry and one repository:
//! endpoints, TLS or plain HTTP, authentication (basic, bearer token), bounded
//! retries and timeouts. Blocking: pulls and pushes run on blocking threads.

use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use ureq::http::{header, Response, StatusCode};
use ureq::Body;

use super::{Credentials, RegistryError};

/// Bound on connecting, on waiting for response headers, and on a transfer
/// that stops moving (each read).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
pub const HEADERS_TIMEOUT: Duration = Duration::from_secs(60);
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts for a request that fails with a connection error, 429 or 5xx.
const ATTEMPTS: u32 = 4;
/// The longest pause a `Retry-After` may ask for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Where a registry is reached and how.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `https://host[:port]` or `http://...`.
    pub base: String,
    /// The host as written in image names (`docker.io`, `localhost:5000`).
    pub host: String,
}

#[derive(Debug, Clone)]
enum Auth {
    None,
    Basic(String),
    Bearer { token: String, scope: String, expires: Option<Instant> },
}

pub struct Client {
    http: ureq::Agent,
    /// Whether the credentials were presented to anyone (basic, or to a token realm).
    pub creds_used: std::sync::atomic::AtomicBool,
    pub endpoint: Endpoint,
    pub repository: String,
    creds: Option<Credentials>,
    /// What the last challenge asked for, reused on later requests.
    auth: Mutex<Auth>,
    /// Token realms on other hosts that may receive the credentials.
    trusted_realms: Vec<String>,
}

/// A response the caller reads.
pub struct Reply {
    pub status: StatusCode,
    pub headers: ureq::http::HeaderMap,
    pub body: Body,
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#']).next().unwrap_or(rest).rsplit('@').next().unwrap_or(rest)
}

/// Scheme, lower-cased host and effective port: what must match for
/// credentials to go along.
fn origin_of(url: &str) -> (String, String) {
    let scheme = url.split_once("://").map_or("", |(s, _)| s).to_ascii_lowercase();
    let host = host_of(url).to_ascii_lowercase();
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let host = if host.rsplit_once(':').is_some_and(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())) && !host.ends_with(']') {
        host
    } else {
        format!("{host}{default_port}")
    };
    (scheme, host)
}

/// Parse `Bearer realm="...",service="...",scope="..."` (or `Basic realm=...`).
pub fn parse_challenge(h: &str) -> Option<(String, Vec<(String, String)>)> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = Vec::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (k, after) = s.split_once('=')?;
        let after = after.trim_start();
        let (v, tail) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (q[..end].to_owned(), &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        params.push((k.trim().to_ascii_lowercase(), v));
        s = tail.trim_start().trim_start_matches(',').trim_start();
    }
    Some((scheme.to_ascii_lowercase(), params))
}

/// A `Retry-After` header in seconds (an HTTP date is treated as a short wait).
fn retry_after(headers: &ureq::http::HeaderMap) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    Some(v.parse::<u64>().map(Duration::from_secs).unwrap_or(Duration::from_secs(1)).min(MAX_RETRY_AFTER))
}

impl Client {
    pub fn new(
        endpoint: Endpoint,
        repository: &str,
        creds: Option<Credentials>,
        tls: Option<ureq::tls::TlsConfig>,
        trusted_realms: Vec<String>,
        stall: Duration,
    ) -> Self {
        let mut cfg = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Redirects are followed by hand: credentials never go to another host.
            .max_redirects(0)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(HEADERS_TIMEOUT.max(stall)))
            .timeout_per_read(Some(stall))
            .timeout_per_write(Some(stall))
            .user_agent(concat!("berthd/", env!("CARGO_PKG_VERSION")));
        if let Some(t) = tls {
            cfg = cfg.tls_config(t);
        }
        Client {
            http: cfg.build().new_agent(),
            endpoint,
            repository: repository.to_owned(),
            creds,
            auth: Mutex::new(Auth::None),
            trusted_realms,
            creds_used: Default::default(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{}", self.endpoint.base, self.repository, path)
    }

    fn scope(&self, push: bool) -> String {
        format!("repository:{}:{}", self.repository, if push { "pull,push" } else { "pull" })
    }

    fn authorization(&self) -> Option<String> {
        match &*self.auth.lock().unwrap_or_else(|e| e.into_inner()) {
            Auth::None => None,
            Auth::Basic(b) => Some(format!("Basic {b}")),
            Auth::Bearer { token, expires, .. } => {
                if expires.is_some_and(|e| Instant::now() >= e) {
                    None
                } else {
                    Some(format!("Bearer {token}"))
                }
            }
        }
    }

    /// Answer a 401 challenge; false when there is nothing (more) to try.
    fn authenticate(&self, challenge: &str, push: bool) -> Result<bool, RegistryError> {
        let Some((scheme, params)) = parse_challenge(challenge) else { return Ok(false) };
        let param = |k: &str| params.iter().find(|(pk, _)| pk == k).map(|(_, v)| v.clone());
        match scheme.as_str() {
            "basic" => {
                let Some(c) = &self.creds else { return Ok(false) };
                let b = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password));
                let mut a = self.auth.lock().unwrap_or_else(|e| e.into_inner());
                if matches!(&*a, Auth::Basic(x) if *x == b) {
                    return Ok(false);
                }
                *a = Auth::Basic(b);
                self.creds_used.store(true, std::sync::atomic::Ordering::Relaxed);
                Ok(true)
            }
            "bearer" => {
                let realm = param("realm").ok_or_else(|| RegistryError::Protocol("bearer challenge without a realm".into()))?;
                if !realm.starts_with("https://") && !realm.starts_with("http://") {
                    return Err(RegistryError::Protocol(format!("token realm {realm:?} is not an http(s) URL")));
                }
                self.check_scheme(&realm)?;
                let scope = param("scope").unwrap_or_else(|| self.scope(push));
                let mut url = realm.clone();
                let mut q = Vec::new();
                if let Some(s) = param("service") {
                    q.push(format!("service={}", urlencode(&s)));
                }
                q.push(format!("scope={}", urlencode(&scope)));
                url.push(if url.contains('?') { '&' } else { '?' });
                url.push_str(&q.join("&"));
                let mut req = self.http.get(&url);
                // Credentials go to the realm only on the registry's own host, or a trusted one.
                let realm_host = host_of(&realm).to_ascii_lowercase();
                let trusted = origin_of(&realm) == origin_of(&self.endpoint.base)
                    || (realm.starts_with("https://") && self.trusted_realms.iter().any(|h| h.to_ascii_lowercase() == realm_host));
                if let (Some(c), true) = (&self.creds, trusted) {
                    let b = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password));
                    req = req.header(header::AUTHORIZATION, format!("Basic {b}"));
                    self.creds_used.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                let mut resp = req.call().map_err(|e| RegistryError::Transport(format!("token endpoint {realm}: {e}")))?;
                if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
                    return Err(RegistryError::Unauthorized(format!("the token endpoint {realm} refused the credentials")));
                }
                if !resp.status().is_success() {
                    return Err(RegistryError::Protocol(format!("token endpoint {realm} answered {}", resp.status())));
                }
                let body = resp
                    .body_mut()
                    .with_config()
                    .limit(1 << 20)
                    .read_to_vec()
                    .map_err(|e| RegistryError::Transport(format!("token endpoint {realm}: {e}")))?;
                let v: serde_json::Value =
                    serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol(format!("token endpoint {realm}: {e}")))?;
                let token = v
                    .get("token")
                    .or_else(|| v.get("access_token"))
                    .and_then(|t| t.as_str())
                    .ok_or_else(|| RegistryError::Protocol(format!("token endpoint {realm} sent no token")))?
                    .to_owned();
                let expires_in = v.get("expires_in").and_then(|e| e.as_u64()).unwrap_or(60);
                // Renew a little early so a long transfer does not start with a dying token.
                let expires = Instant::now() + Duration::from_secs(expires_in.saturating_sub(5).max(1));
                let mut a = self.auth.lock().unwrap_or_else(|e| e.into_inner());
                if matches!(&*a, Auth::Bearer { token: t, scope: s, expires: Some(e) } if *t == token && *s == scope && *e > Instant::now())
                {
                    return Ok(false);
                }
                *a = Auth::Bearer { token, scope, expires: Some(expires) };
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Plain HTTP only where the registry itself is spoken to in plain HTTP.
    fn check_scheme(&self, url: &str) -> Result<(), RegistryError> {
        if url.starts_with("http://") && self.endpoint.base.starts_with("https://") {
            return Err(RegistryError::Protocol(format!("{} sent the agent to plain HTTP ({url}); refused", self.endpoint.host)));
        }
        Ok(())
    }

    /// Send a request (retrying transient failures, answering auth challenges,
    /// following redirects without credentials). `body` is re-sent on retries.
    pub fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: Option<&[u8]>,
        push: bool,
    ) -> Result<Reply, RegistryError> {
        let mut url = url.to_owned();
        let mut auth_tries = 0;
        let mut redirects = 0;
        let mut attempt = 0;
        loop {
            self.check_scheme(&url)?;
            let same_host = origin_of(&url) == origin_of(&self.endpoint.base);
            let mut req = ureq::http::Request::builder().method(method).uri(&url);
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            if same_host {
                if let Some(a) = self.authorization() {
                    req = req.header(header::AUTHORIZATION, a);
                }
            }
            let result = match body {
                Some(b) => req
                    .body(b.to_vec())
                    .map_err(|e| RegistryError::Protocol(e.to_string()))
                    .and_then(|r| self.http.run(r).map_err(|e| RegistryError::Transport(format!("{method} {url}: {e}")))),
                None => req
                    .body(())
                    .map_err(|e| RegistryError::Protocol(e.to_string()))
                    .and_then(|r| self.http.run(r).map_err(|e| RegistryError::Transport(format!("{method} {url}: {e}")))),
            };
            attempt += 1;
            let resp: Response<Body> = match result {
                Ok(r) => r,
                Err(e) if attempt < ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, "retrying");
                    std::thread::sleep(backoff(attempt));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && same_host && auth_tries < 2 {
                auth_tries += 1;
                let challenge = resp.headers().get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).map(str::to_owned);
                if let Some(c) = challenge {
                    if self.authenticate(&c, push)? {
                        continue;
                    }
                }
                return Err(RegistryError::Unauthorized(if self.creds.is_some() {
                    format!("{} refused the credentials", self.endpoint.host)
                } else {
                    format!("{} requires authentication: run berthctl login {}", self.endpoint.host, self.endpoint.host)
                }));
            }
            if (status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()) && attempt < ATTEMPTS {
                let wait = retry_after(resp.headers()).unwrap_or_else(|| backoff(attempt));
                std::thread::sleep(wait);
                continue;
            }
            if status.is_redirection() {
                redirects += 1;
                if redirects > 5 {
                    return Err(RegistryError::Protocol(format!("too many redirects from {url}")));
                }
                let loc = resp
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| RegistryError::Protocol(format!("redirect from {url} without a location")))?;
                url = resolve_location(&url, loc);
                continue;
            }
            let (parts, body) = resp.into_parts();
            return Ok(Reply { status, headers: parts.headers, body });
        }
    }

    /// GET a manifest or index: (bytes, media type). At most `limit` bytes.
    pub fn get_manifest(&self, reference: &str, limit: u64) -> Result<(Vec<u8>, String), RegistryError> {
        let url = self.url(&format!("manifests/{reference}"));
        let mut r = self.send("GET", &url, &[("Accept", MANIFEST_ACCEPT.to_owned())], None, false)?;
        if r.status == StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound(format!("{}/{}:{reference}", self.endpoint.host, self.repository)));
        }
        if !r.status.is_success() {
            return Err(error_from(&url, r));
        }
        let media_type = r
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_owned();
        let data = read_limited(&mut r.body, limit, &url)?;
        Ok((data, media_type))
    }

    /// GET a blob as a reader that resumes a cut connection with `Range`.
    /// It is not limited here: the ingest that reads it refuses the first
    /// byte past the descriptor's size, as a protocol error (a broken
    /// connection is resumed or fetched again; that is not).
    pub fn get_blob(&self, digest: &str) -> Result<BlobReader<'_>, RegistryError> {
        let inner = self.open_blob_at(digest, 0)?;
        Ok(BlobReader { client: self, digest: digest.to_owned(), inner, pos: 0, opened_at: 0, resumes: 0 })
    }

    /// The blob's bytes from `offset` on: a `Range` request, answered with
    /// 206 from that offset, or with 200 from byte 0 by a registry that
    /// ignores ranges (the first `offset` bytes are then read and dropped).
    fn open_blob_at(&self, digest: &str, offset: u64) -> Result<Box<dyn Read + Send>, RegistryError> {
        let url = self.url(&format!("blobs/{digest}"));
        let range = [("Range", format!("bytes={offset}-"))];
        let r = self.send("GET", &url, if offset > 0 { &range } else { &[] }, None, false)?;
        if r.status == StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound(format!("blob {digest} in {}/{}", self.endpoint.host, self.repository)));
        }
        if !r.status.is_success() {
            return Err(error_from(&url, r));
        }
        if offset > 0 && r.status == StatusCode::PARTIAL_CONTENT {
            let content_range = r.headers.get(header::CONTENT_RANGE).and_then(|v| v.to_str().ok()).unwrap_or("");
            if !content_range.strip_prefix("bytes ").is_some_and(|c| c.starts_with(&format!("{offset}-"))) {
                return Err(RegistryError::Protocol(format!(
                    "{url} answered a range from byte {offset} with Content-Range {:?}",
                    berth_common::text::printable(content_range)
                )));
            }
            return Ok(Box::new(r.body.into_reader()));
        }
        let mut body = r.body.into_reader();
        if offset > 0 {
            let skipped = std::io::copy(&mut (&mut body).take(offset), &mut std::io::sink())
                .map_err(|e| RegistryError::Transport(format!("GET {url} again, to byte {offset}: {e}")))?;
            if skipped < offset {
                return Err(RegistryError::Protocol(format!("{url} is {skipped} bytes long now, not past byte {offset}")));
            }
        }
        Ok(Box::new(body))
    }

    /// Answer the challenge of a 401 reply (a token that expired mid-upload);
    /// false when there is nothing new to try.
    pub fn answer_challenge(&self, reply: &Reply, push: bool) -> Result<bool, RegistryError> {
        match reply.headers.get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()) {
            Some(c) => self.authenticate(c, push),
            None => Ok(false),
        }
    }

    /// PUT a file's bytes (streamed, with its length) to `url`, once; the
    /// caller restarts the upload on failure.
    pub fn put_file(&self, url: &str, file: std::fs::File, size: u64) -> Result<Reply, RegistryError> {
        self.check_scheme(url)?;
        let mut req = ureq::http::Request::builder()
            .method("PUT")
            .uri(url)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", size.to_string());
        if origin_of(url) == origin_of(&self.endpoint.base) {
            if let Some(a) = self.authorization() {
                req = req.header(header::AUTHORIZATION, a);
            }
        }
        let req = req.body(file).map_err(|e| RegistryError::Protocol(e.to_string()))?;
        let resp = self.http.run(req).map_err(|e| RegistryError::Transport(format!("PUT {url}: {e}")))?;
        let (parts, body) = resp.into_parts();
        Ok(Reply { status: parts.status, headers: parts.headers, body })
    }

    pub fn blob_exists(&self, digest: &str, push: bool) -> Result<bool, RegistryError> {
        let url = self.url(&format!("blobs/{digest}"));
        let r = self.send("HEAD", &url, &[], None, push)?;
        Ok(r.status.is_success())
    }
}

/// How many times one blob's transfer is resumed after a cut connection.
const MAX_RESUMES: u32 = 5;

/// A blob's body that, when the connection breaks, asks for the rest with
/// `Range`, so the bytes already hashed and written are not fetched again.
/// It resumes only a connection that moved bytes (one that broke before any
/// is an error for the caller), at most [`MAX_RESUMES`] times.
pub struct BlobReader<'c> {
    client: &'c Client,
    digest: String,
    inner: Box<dyn Read + Send>,
    pos: u64,
    /// Where the current connection started.
    opened_at: u64,
    resumes: u32,
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.inner.read(buf) {
                Ok(n) => {
                    self.pos += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if self.pos > self.opened_at && self.resumes < MAX_RESUMES => {
                    self.resumes += 1;
                    self.opened_at = self.pos;
                    tracing::debug!(blob = %self.digest, at = self.pos, error = %e, "resuming the transfer");
                    self.inner = self
                        .client
                        .open_blob_at(&self.digest, self.pos)
                        .map_err(|again| std::io::Error::new(e.kind(), format!("{e}; resuming at byte {} failed: {again}", self.pos)))?;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200u64 << attempt.min(5))
}

fn resolve_location(base: &str, loc: &str) -> String {
    if loc.starts_with("http://") || loc.starts_with("https://") {
        return loc.to_owned();
    }
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    if loc.starts_with('/') {
        format!("{}{loc}", &base[..host_end])
    } else {
        let dir_end = base.rfind('/').filter(|&i| i >= host_end).map_or(base.len(), |i| i + 1);
        format!("{}{loc}", &base[..dir_end])
    }
}

pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn read_limited(body: &mut Body, limit: u64, what: &str) -> Result<Vec<u8>, RegistryError> {
    let mut data = Vec::new();
    body.as_reader().take(limit + 1).read_to_end(&mut data).map_err(|e| RegistryError::Transport(format!("{what}: {e}")))?;
    if data.len() as u64 > limit {
        return Err(RegistryError::TooLarge(format!("{what} is larger than {limit} bytes")));
    }
    Ok(data)
}

/// An error from a registry's error body (`{"errors":[{"code","message"}]}`).
pub fn error_from(url: &str, mut r: Reply) -> RegistryError {
    let body = read_limited(&mut r.body, 64 << 10, url).unwrap_or_default();
    let msg = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let e = v.get("errors")?.get(0)?;
            Some(format!("{}: {}", e.get("code")?.as_str()?, e.get("message").and_then(|m| m.as_str()).unwrap_or("")))
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
    match r.status {
        StatusCode::NOT_FOUND => RegistryError::NotFound(format!("{url}: {msg}")),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RegistryError::Unauthorized(format!("{url}: {msg}")),
        s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => RegistryError::Transport(format!("{url} answered {s}: {msg}")),
        s if s.is_client_error() => RegistryError::Refused(format!("{url} answered {s}: {msg}")),
        s => RegistryError::Protocol(format!("{url} answered {s}: {msg}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let (s, p) =
            parse_challenge(r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#).unwrap();
        assert_eq!(s, "bearer");
        assert_eq!(p[0], ("realm".into(), "https://auth.example/token".into()));
        assert_eq!(p[1], ("service".into(), "registry.example".into()));
        assert_eq!(p[2], ("scope".into(), "repository:a/b:pull".into()));
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!((s.as_str(), p[0].1.as_str()), ("basic", "Registry Realm"));
        assert!(parse_challenge(r#"Bearer realm="unterminated"#).is_none());
    }

    #[test]
    fn hosts_and_locations() {
        assert_eq!(host_of("https://user@example.com:5000/v2/x?y"), "example.com:5000");
        assert_eq!(host_of("http://127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(resolve_location("http://a:1/v2/x/blobs/y", "/other"), "http://a:1/other");
        assert_eq!(resolve_location("http://a:1/v2/x/blobs/y", "https://cdn/b"), "https://cdn/b");
        assert_eq!(resolve_location("http://a:1/v2/x/blobs/y", "z"), "http://a:1/v2/x/blobs/z");
        assert_eq!(urlencode("repository:a/b:pull,push"), "repository%3Aa%2Fb%3Apull%2Cpush");
        assert_eq!(origin_of("https://Reg.example/v2/"), ("https".into(), "reg.example:443".into()));
        assert_ne!(origin_of("https://reg/v2/"), origin_of("http://reg/v2/"));
        assert_eq!(origin_of("http://127.0.0.1:5000/x"), origin_of("http://127.0.0.1:5000/y"));
    }
}
