//! Registries: pull and push over the OCI distribution API.
//!
//! A pull resolves the name, fetches the manifest or index (picking the
//! platform), then the config and the layers (in parallel, each blob once even
//! when pulls race), verifies every digest and size, names the image and
//! unpacks it. Nothing of a failed pull is named; its blobs are leased while
//! it runs and collected afterwards unless an image uses them.

pub mod client;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::Read;
use std::sync::{Arc, Condvar, Mutex};

use client::{Client, Endpoint};

use crate::content::ContentError;
use crate::digest::Digest;
use crate::image::ingest::{Incoming, Ingest, IngestError, LayerHint};
use crate::image::oci::{self, Descriptor, Platform};
use crate::image::reference::Reference;
use crate::image::Progress;
use crate::image::{ImageError, Images};
use crate::metadata::ImageRecord;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("{0}")]
    Transport(String),
    #[error("registry protocol error: {0}")]
    Protocol(String),
    /// The registry refused the request (a 4xx other than 401, 403, 404, 429):
    /// a manifest it finds invalid, a method or a state it does not allow.
    #[error("the registry refused the request: {0}")]
    Refused(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch { what: String, expected: String, actual: String },
    #[error(transparent)]
    Image(#[from] ImageError),
}

impl From<crate::content::ContentError> for RegistryError {
    fn from(e: crate::content::ContentError) -> Self {
        RegistryError::Image(e.into())
    }
}

impl From<crate::image::reference::InvalidReference> for RegistryError {
    fn from(e: crate::image::reference::InvalidReference) -> Self {
        RegistryError::InvalidArgument(e.to_string())
    }
}

impl From<oci::FormatError> for RegistryError {
    fn from(e: oci::FormatError) -> Self {
        RegistryError::Image(e.into())
    }
}

/// Per-registry settings from the agent's configuration (`[registries."HOST"]`).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Talk plain HTTP to this registry.
    #[serde(default)]
    pub insecure: bool,
    /// Mirrors tried first, in order (`https://mirror.example` or `http://...`).
    #[serde(default)]
    pub mirrors: Vec<String>,
    /// A PEM file of CA certificates to trust for this registry (instead of the built-in roots).
    #[serde(default)]
    pub ca: Option<std::path::PathBuf>,
    /// Token realm hosts on other hosts that may receive this registry's credentials.
    #[serde(default)]
    pub token_hosts: Vec<String>,
    /// Credentials the agent uses for this registry (as a mirror too) when the caller
    /// gives none: a kubelet's pulls of a cluster's private images, a mirror's login.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

impl HostConfig {
    /// The configured credentials, if both parts are there.
    fn credentials(&self) -> Option<Credentials> {
        match (&self.username, &self.password) {
            (Some(u), Some(p)) => Some(Credentials { username: u.clone(), password: p.clone() }),
            _ => None,
        }
    }
}

pub type RegistriesConfig = BTreeMap<String, HostConfig>;

#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    pub reference: String,
    pub platform: Platform,
    pub all_platforms: bool,
    pub plain_http: bool,
    pub creds: Option<Credentials>,
}

#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    pub reference: String,
    pub plain_http: bool,
    pub creds: Option<Credentials>,
}

/// Label on a blob: the repository of `<host>` it was pulled from or pushed
/// to, so a push to another repository there can mount it instead of uploading.
pub const LABEL_SOURCE: &str = "berth.io/distribution.source.";

/// What the fetches of one pull share.
struct Transfer<'a, 's, 'i> {
    client: &'a Client,
    /// Tried in order for a blob `client` (a mirror) does not have.
    fallbacks: &'a [Client],
    /// Where the blobs go (and their layers are unpacked while they arrive).
    ingest: &'a Ingest<'s, 'i>,
    /// Whether every caller of the pull has gone: the transfers stop.
    gone: &'a (dyn Fn() -> bool + Sync),
}

/// Bytes a blob transfer must move per stall window (`registry_stall_timeout`):
/// one that trickles slower fails, and is fetched again, as a stalled one does.
const MIN_BYTES_PER_WINDOW: u64 = 64 << 10;

/// The pull's callers have all gone away.
#[derive(Debug)]
struct CallerGone;

impl std::fmt::Display for CallerGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client went away")
    }
}

impl std::error::Error for CallerGone {}

/// A blob's body, watched: it fails when the pull's callers are gone, and
/// when it moves fewer than [`MIN_BYTES_PER_WINDOW`] bytes in a window (a
/// registry that sends a byte now and then never trips the stall timer).
struct Watched<'a, R> {
    inner: R,
    gone: &'a (dyn Fn() -> bool + Sync),
    window: std::time::Duration,
    since: std::time::Instant,
    moved: u64,
}

impl<'a, R: Read> Watched<'a, R> {
    fn new(inner: R, gone: &'a (dyn Fn() -> bool + Sync), window: std::time::Duration) -> Self {
        Watched { inner, gone, window, since: std::time::Instant::now(), moved: 0 }
    }
}

impl<R: Read> Read for Watched<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if (self.gone)() {
            return Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, CallerGone));
        }
        let n = self.inner.read(buf)?;
        self.moved += n as u64;
        if self.since.elapsed() >= self.window {
            if self.moved < MIN_BYTES_PER_WINDOW && n > 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the transfer moved {} bytes in {:?}, under the {MIN_BYTES_PER_WINDOW} required", self.moved, self.window),
                ));
            }
            (self.since, self.moved) = (std::time::Instant::now(), 0);
        }
        Ok(n)
    }
}

/// Blobs being fetched right now, so two pulls fetch each blob once.
#[derive(Default)]
struct InFlight {
    set: Mutex<HashSet<Digest>>,
    done: Condvar,
}

pub struct Registries {
    images: Arc<Images>,
    content: Arc<crate::content::ContentStore>,
    config: RegistriesConfig,
    parallel: usize,
    stall: std::time::Duration,
    in_flight: InFlight,
}

/// `localhost`, `127.0.0.1`, `[::1]` (with any port) talk plain HTTP by default.
fn is_local(host: &str) -> bool {
    let h = host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
    matches!(h, "localhost" | "127.0.0.1" | "[::1]" | "::1")
}

fn is_index_doc(data: &[u8], media_type: &str) -> bool {
    if oci::is_index(media_type) {
        return true;
    }
    if oci::is_manifest(media_type) {
        return false;
    }
    serde_json::from_slice::<serde_json::Value>(data).ok().is_some_and(|v| v.get("manifests").is_some())
}

fn sniff_media_type(data: &[u8], header: &str, index: bool) -> String {
    let declared = serde_json::from_slice::<serde_json::Value>(data).ok().and_then(|v| v.get("mediaType")?.as_str().map(str::to_owned));
    match declared {
        Some(m) if !m.is_empty() => m,
        _ if oci::is_index(header) || oci::is_manifest(header) => header.to_owned(),
        _ if index => oci::MEDIA_OCI_INDEX.to_owned(),
        _ => oci::MEDIA_OCI_MANIFEST.to_owned(),
    }
}

impl Registries {
    pub fn new(
        images: Arc<Images>,
        content: Arc<crate::content::ContentStore>,
        config: RegistriesConfig,
        parallel: usize,
        stall: std::time::Duration,
    ) -> Self {
        Registries { images, content, config, parallel: parallel.clamp(1, 16), stall, in_flight: InFlight::default() }
    }

    /// Clients to try for `reference`, mirrors first.
    fn clients(&self, r: &Reference, plain_http: bool, creds: &Option<Credentials>) -> Result<Vec<Client>, RegistryError> {
        let host_cfg = self.config.get(&r.domain).cloned().unwrap_or_default();
        let tls = match &host_cfg.ca {
            Some(path) => Some(tls_with_ca(path)?),
            None => None,
        };
        let plain = plain_http || host_cfg.insecure || is_local(&r.domain);
        let origin = if r.domain == "docker.io" { "registry-1.docker.io".to_owned() } else { r.domain.clone() };
        let mut out = Vec::new();
        for m in &host_cfg.mirrors {
            let base = m.trim_end_matches('/').to_owned();
            // A mirror's own entry (by its host) may hold its credentials.
            let mirror_host = base.split("://").nth(1).unwrap_or(&base).split('/').next().unwrap_or_default();
            let mirror_cfg = self.config.get(mirror_host);
            let mirror_creds = mirror_cfg.and_then(HostConfig::credentials);
            // Its credentials go only to the token hosts its own entry names.
            let token_hosts = match (&mirror_creds, mirror_cfg) {
                (Some(_), Some(c)) => c.token_hosts.clone(),
                _ => host_cfg.token_hosts.clone(),
            };
            let ep = Endpoint { base, host: r.domain.clone() };
            out.push(Client::new(ep, &r.path, mirror_creds, tls.clone(), token_hosts, self.stall));
        }
        let base = format!("{}://{origin}", if plain { "http" } else { "https" });
        let creds = creds.clone().or_else(|| host_cfg.credentials());
        out.push(Client::new(Endpoint { base, host: r.domain.clone() }, &r.path, creds, tls, host_cfg.token_hosts, self.stall));
        Ok(out)
    }

    /// Pull an image: fetch what is missing, verify it, name it, unpack it.
    pub fn pull(
        &self,
        ns: &str,
        opts: &PullOptions,
        progress: &(dyn Fn(Progress) + Sync),
        gone: &(dyn Fn() -> bool + Sync),
    ) -> Result<ImageRecord, RegistryError> {
        let r = Reference::parse(&opts.reference)?;
        let name = r.to_string();
        let wanted = match &r.digest {
            Some(d) => d.to_string(),
            None => r.tag.clone().unwrap_or_else(|| "latest".into()),
        };
        self.images.ingest(ns, true, progress, |ingest| self.pull_into(ingest, &r, &name, &wanted, opts, gone))
    }

    /// The pull, with what it fetches going through `ingest`.
    fn pull_into(
        &self,
        ingest: &Ingest<'_, '_>,
        r: &Reference,
        name: &str,
        wanted: &str,
        opts: &PullOptions,
        gone: &(dyn Fn() -> bool + Sync),
    ) -> Result<ImageRecord, RegistryError> {
        // The first endpoint that has the manifest serves the whole pull.
        let mut last_err = None;
        let mut found = None;
        let mut clients = self.clients(r, opts.plain_http, &opts.creds)?;
        for (i, c) in clients.iter().enumerate() {
            match c.get_manifest(wanted, oci::MAX_DOCUMENT) {
                Ok(doc) => {
                    found = Some((i, doc));
                    break;
                }
                Err(e) => {
                    tracing::debug!(endpoint = %c.endpoint.base, error = %e, "manifest not fetched");
                    last_err = Some(e);
                }
            }
        }
        // The endpoints after the one that answered (the origin last) serve
        // the blobs a mirror lacks.
        let Some((i, (top, header_type))) = found else {
            return Err(last_err.unwrap_or(RegistryError::NotFound(name.to_owned())));
        };
        let fallbacks = clients.split_off(i + 1);
        let client = clients.pop().expect("the endpoint that answered");
        let top_digest = Digest::of(&top);
        if let Some(d) = &r.digest {
            if *d != top_digest.as_str() {
                return Err(RegistryError::DigestMismatch {
                    what: name.to_owned(),
                    expected: d.to_string(),
                    actual: top_digest.to_string(),
                });
            }
        }
        let index = is_index_doc(&top, &header_type);
        let media_type = sniff_media_type(&top, &header_type, index);
        let top_desc = Descriptor {
            media_type: media_type.clone(),
            digest: top_digest.clone(),
            size: top.len() as u64,
            annotations: Default::default(),
            platform: None,
        };
        // The manifests to fetch: the one, or the platform's (or all) from the index.
        let manifests: Vec<Descriptor> = if index {
            let idx = oci::parse_index(&top, &media_type)?;
            let all: Vec<Descriptor> = idx.manifests.into_iter().filter(|m| oci::is_manifest(&m.media_type)).collect();
            let chosen: Vec<Descriptor> = if opts.all_platforms {
                all
            } else {
                // The same choice `resolve` makes later, from the stored index.
                ingest.put(&top_digest, &top)?;
                vec![self.images.select_manifest(&top_desc, &opts.platform)?.0]
            };
            if chosen.is_empty() {
                return Err(RegistryError::Image(ImageError::NoPlatform(opts.platform.to_string())));
            }
            chosen
        } else {
            oci::parse_manifest(&top, &media_type)?;
            Vec::new()
        };
        ingest.put(&top_digest, &top)?;
        ingest.progress(Progress::Blob { digest: top_digest.clone(), size: top.len() as u64, status: "fetched" });
        let mut docs: Vec<(Descriptor, Vec<u8>)> = Vec::new();
        if index {
            for m in &manifests {
                let (data, _) = client.get_manifest(m.digest.as_str(), oci::MAX_DOCUMENT)?;
                self.check(&m.digest, m.size, &data, "manifest")?;
                oci::parse_manifest(&data, &m.media_type)?;
                ingest.put(&m.digest, &data)?;
                docs.push((m.clone(), data));
            }
        } else {
            docs.push((top_desc.clone(), top.clone()));
        }
        // Config and layers, each fetched once.
        let mut blobs: Vec<Descriptor> = Vec::new();
        let mut seen = HashSet::new();
        for (d, data) in &docs {
            let m = oci::parse_manifest(data, &d.media_type)?;
            if m.config.size > oci::MAX_DOCUMENT {
                return Err(RegistryError::TooLarge(format!("image config of {} bytes", m.config.size)));
            }
            for b in std::iter::once(m.config).chain(m.layers) {
                if seen.insert(b.digest.clone()) {
                    blobs.push(b);
                }
            }
        }
        // Each layer is unpacked while it arrives (one pass over its bytes,
        // where the snapshotter allows); the ordered commit below uses what matches.
        let transfer = Transfer { client: &client, fallbacks: &fallbacks, ingest, gone };
        self.fetch_all(&transfer, &blobs)?;
        self.finish_pull(ingest, r, name, &top_desc, &blobs, opts)
    }

    fn finish_pull(
        &self,
        ingest: &Ingest<'_, '_>,
        r: &Reference,
        name: &str,
        top_desc: &Descriptor,
        blobs: &[Descriptor],
        opts: &PullOptions,
    ) -> Result<ImageRecord, RegistryError> {
        self.note_source(r, blobs.iter().map(|b| &b.digest));
        // Unpack this machine's platform, then name the image, with collection
        // held off in between: a pull that fails anywhere names nothing, and
        // a named image is unpacked.
        let now = crate::metadata::now_nanos();
        let staged = ImageRecord {
            name: name.to_owned(),
            target: crate::metadata::DescriptorRecord {
                media_type: top_desc.media_type.clone(),
                digest: top_desc.digest.clone(),
                size: top_desc.size,
            },
            labels: Default::default(),
            created: now,
            updated: now,
        };
        ingest.finish_writes();
        let _gc = self.images.hold_gc();
        match self.images.resolve(&staged, &opts.platform) {
            Ok(resolved) => ingest.unpack(&resolved)?,
            Err(ImageError::NoPlatform(_)) if opts.all_platforms => {}
            Err(e) => return Err(e.into()),
        }
        let (record, _) = self.images.put(ingest.namespace(), name, top_desc, &BTreeMap::new())?;
        drop(_gc);
        ingest.progress(Progress::Image { name: name.to_owned(), status: "stored" });
        Ok(record)
    }

    /// Remember where these blobs live in a registry (best effort).
    fn note_source<'a>(&self, r: &Reference, digests: impl Iterator<Item = &'a Digest>) {
        let key = format!("{LABEL_SOURCE}{}", r.domain);
        let entries: Vec<(Digest, String, String)> = digests.map(|d| (d.clone(), key.clone(), r.path.clone())).collect();
        if let Err(e) = self.images.meta.add_content_labels(&entries) {
            tracing::warn!(error = %e, "recording where blobs came from");
        }
    }

    fn check(&self, digest: &Digest, size: u64, data: &[u8], what: &str) -> Result<(), RegistryError> {
        if data.len() as u64 != size {
            return Err(RegistryError::Protocol(format!("{what} {digest} has {} bytes, its descriptor says {size}", data.len())));
        }
        let actual = Digest::of(data);
        if actual != *digest {
            return Err(RegistryError::DigestMismatch { what: what.into(), expected: digest.to_string(), actual: actual.to_string() });
        }
        Ok(())
    }

    /// Fetch the blobs that are missing, `parallel` at a time.
    fn fetch_all(&self, t: &Transfer<'_, '_, '_>, blobs: &[Descriptor]) -> Result<(), RegistryError> {
        let queue = Mutex::new(blobs.iter().collect::<VecDeque<_>>());
        let first_error: Mutex<Option<RegistryError>> = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..self.parallel.min(blobs.len().max(1)) {
                s.spawn(|| loop {
                    if first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                        return;
                    }
                    let Some(b) = queue.lock().ok().and_then(|mut q| q.pop_front()) else { return };
                    if let Err(e) = self.fetch_one(t, b) {
                        if let Ok(mut fe) = first_error.lock() {
                            fe.get_or_insert(e);
                        }
                        return;
                    }
                });
            }
        });
        match first_error.into_inner().unwrap_or(None) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn fetch_one(&self, t: &Transfer<'_, '_, '_>, b: &Descriptor) -> Result<(), RegistryError> {
        let ingest = t.ingest;
        // Wait while another pull fetches the same blob; then it may be there.
        {
            let mut set = self.in_flight.set.lock().unwrap_or_else(|e| e.into_inner());
            while set.contains(&b.digest) {
                set = self.in_flight.done.wait(set).unwrap_or_else(|e| e.into_inner());
            }
            if ingest.have(&b.digest, None) {
                ingest.progress(Progress::Blob { digest: b.digest.clone(), size: b.size, status: "exists" });
                return Ok(());
            }
            set.insert(b.digest.clone());
        }
        // The claim is released however this ends (a panic included).
        struct Claim<'a>(&'a InFlight, Digest);
        impl Drop for Claim<'_> {
            fn drop(&mut self) {
                let mut set = self.0.set.lock().unwrap_or_else(|e| e.into_inner());
                set.remove(&self.1);
                self.0.done.notify_all();
            }
        }
        let claim = Claim(&self.in_flight, b.digest.clone());
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            match self.fetch_blob(t, b) {
                // A connection that broke mid-blob: fetch it again, a few times.
                Err(RegistryError::Transport(e)) if attempt < 3 => tracing::debug!(blob = %b.digest, error = %e, "fetching again"),
                r => break r,
            }
        };
        drop(claim);
        if result.is_ok() {
            ingest.progress(Progress::Blob { digest: b.digest.clone(), size: b.size, status: "fetched" });
        }
        result
    }

    /// Fetch one blob into the store, from the endpoint that served the
    /// manifest or, when it lacks the blob, from the next ones.
    fn fetch_blob(&self, t: &Transfer<'_, '_, '_>, b: &Descriptor) -> Result<(), RegistryError> {
        t.ingest.progress(Progress::Blob { digest: b.digest.clone(), size: b.size, status: "fetching" });
        let body = match t.client.get_blob(b.digest.as_str()) {
            Ok(body) => body,
            Err(e @ (RegistryError::NotFound(_) | RegistryError::Transport(_))) if !t.fallbacks.is_empty() => {
                tracing::debug!(blob = %b.digest, error = %e, "trying the next endpoint");
                let mut found = Err(e);
                for c in t.fallbacks {
                    found = c.get_blob(b.digest.as_str());
                    if found.is_ok() {
                        break;
                    }
                }
                found?
            }
            Err(e) => return Err(e),
        };
        let layer = if oci::is_layer(&b.media_type) { LayerHint::Layer } else { LayerHint::NotLayer };
        let mut body = Watched::new(body, t.gone, self.stall);
        let blob = Incoming { src: &mut body, digest: Some(&b.digest), size: Some(b.size), layer, report_bytes: true };
        t.ingest.write(blob).map_err(|e| match e {
            IngestError::Read(e) if e.get_ref().is_some_and(|i| i.is::<CallerGone>()) => {
                RegistryError::Image(ImageError::Cancelled(format!("blob {}: {e}", b.digest)))
            }
            IngestError::Read(e) => RegistryError::Transport(format!("blob {}: {e}", b.digest)),
            IngestError::TooLong { .. } => {
                RegistryError::Protocol(format!("blob {} is longer than its descriptor's {} bytes", b.digest, b.size))
            }
            IngestError::Short { .. } | IngestError::Store(ContentError::SizeMismatch { .. }) => {
                RegistryError::Protocol(format!("blob {} does not have its descriptor's {} bytes", b.digest, b.size))
            }
            // The registry sent other bytes than the descriptor names.
            IngestError::Store(ContentError::DigestMismatch { expected, actual }) => {
                RegistryError::DigestMismatch { what: "blob".into(), expected: expected.to_string(), actual: actual.to_string() }
            }
            IngestError::Store(e) => e.into(),
        })?;
        Ok(())
    }

    /// Push an image: its blobs the registry lacks, then its manifests and the tag.
    pub fn push(&self, ns: &str, opts: &PushOptions, progress: &(dyn Fn(Progress) + Sync)) -> Result<Digest, RegistryError> {
        let r = Reference::parse(&opts.reference)?;
        let rec = self.images.find_one(ns, &opts.reference)?;
        let target = crate::image::target_descriptor(&rec);
        let tag = match (&r.tag, &r.digest) {
            (Some(t), _) => t.clone(),
            (None, Some(d)) => d.to_string(),
            (None, None) => "latest".into(),
        };
        let client = self.clients(&r, opts.plain_http, &opts.creds)?.pop().expect("the origin is always there");
        // Children before parents: blobs, then manifests, then the index. What is
        // pushed is leased (not locked): a slow upload never holds up the collector.
        let lease = self.images.lease();
        let mut order: Vec<Descriptor> = Vec::new();
        {
            let publish = lease.publish();
            self.push_order(&target, &mut order, 0)?;
            for d in &order {
                if !publish.have(&d.digest, None) {
                    return Err(RegistryError::Image(ImageError::MissingContent {
                        digest: d.digest.clone(),
                        what: "a blob to push".into(),
                    }));
                }
            }
        }
        for d in &order {
            let is_doc = oci::is_manifest(&d.media_type) || oci::is_index(&d.media_type);
            if is_doc {
                let data = self.content.read_all(&d.digest, oci::MAX_DOCUMENT)?;
                let reference = if d.digest == target.digest { tag.clone() } else { d.digest.to_string() };
                push_manifest(&client, &reference, &d.media_type, &data)?;
                if d.digest == target.digest && reference != d.digest.to_string() {
                    progress(Progress::Image { name: rec.name.clone(), status: "pushed" });
                }
                continue;
            }
            if client.blob_exists(d.digest.as_str(), true)? {
                progress(Progress::Blob { digest: d.digest.clone(), size: d.size, status: "exists" });
                continue;
            }
            // Another repository of this registry has it: ask for a mount, not an upload.
            let source =
                self.images.meta.content_labels(&d.digest).ok().and_then(|l| l.get(&format!("{LABEL_SOURCE}{}", r.domain)).cloned());
            if let Some(from) = source.filter(|f| *f != r.path) {
                if mount_blob(&client, &d.digest, &from)? {
                    progress(Progress::Blob { digest: d.digest.clone(), size: d.size, status: "mounted" });
                    continue;
                }
            }
            progress(Progress::Blob { digest: d.digest.clone(), size: d.size, status: "pushing" });
            self.push_blob(&client, &d.digest, d.size)?;
            progress(Progress::Blob { digest: d.digest.clone(), size: d.size, status: "pushed" });
        }
        self.note_source(&r, order.iter().filter(|d| !oci::is_manifest(&d.media_type) && !oci::is_index(&d.media_type)).map(|d| &d.digest));
        drop(lease);
        Ok(target.digest)
    }

    /// A monolithic upload (POST for a session, then PUT the bytes with the
    /// digest), streamed from the content store; restarted from the POST on
    /// failure, a few times.
    fn push_blob(&self, client: &Client, digest: &Digest, size: u64) -> Result<(), RegistryError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let url = client.url("blobs/uploads/");
            let reply = client.send("POST", &url, &[("Content-Length", "0".into())], Some(&[]), true)?;
            if reply.status != ureq::http::StatusCode::ACCEPTED {
                return Err(client::error_from(&url, reply));
            }
            let loc = reply
                .headers
                .get("location")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| RegistryError::Protocol("upload session without a location".into()))?
                .to_owned();
            let mut put =
                if loc.starts_with("http://") || loc.starts_with("https://") { loc } else { format!("{}{loc}", client.endpoint.base) };
            put.push(if put.contains('?') { '&' } else { '?' });
            put.push_str(&format!("digest={}", client::urlencode(digest.as_str())));
            let file = self.content.open_blob(digest)?;
            match client.put_file(&put, file, size) {
                Ok(reply) if reply.status.is_success() => return Ok(()),
                // A token that expired during the upload: a new one, and the upload again.
                Ok(reply)
                    if reply.status == ureq::http::StatusCode::UNAUTHORIZED && attempt < 3 && client.answer_challenge(&reply, true)? =>
                {
                    continue
                }
                Ok(reply)
                    if attempt >= 3 || !(reply.status.is_server_error() || reply.status == ureq::http::StatusCode::TOO_MANY_REQUESTS) =>
                {
                    return Err(client::error_from(&put, reply))
                }
                Err(e @ RegistryError::Transport(_)) if attempt >= 3 => return Err(e),
                Err(e @ RegistryError::Transport(_)) => tracing::debug!(error = %e, attempt, "restarting the upload"),
                Err(e) => return Err(e),
                Ok(_) => {}
            }
            std::thread::sleep(std::time::Duration::from_millis(500 * attempt as u64));
        }
    }

    fn push_order(&self, d: &Descriptor, out: &mut Vec<Descriptor>, depth: u32) -> Result<(), RegistryError> {
        if depth > 4 || out.iter().any(|x| x.digest == d.digest) {
            return Ok(());
        }
        if oci::is_index(&d.media_type) {
            let data = self.content.read_all(&d.digest, oci::MAX_DOCUMENT)?;
            let idx = oci::parse_index(&data, &d.media_type)?;
            for m in &idx.manifests {
                // Only what is here can be pushed (an index may list other platforms).
                if self.content.exists(&m.digest) {
                    self.push_order(m, out, depth + 1)?;
                }
            }
        } else if oci::is_manifest(&d.media_type) {
            let data = self.content.read_all(&d.digest, oci::MAX_DOCUMENT)?;
            let m = oci::parse_manifest(&data, &d.media_type)?;
            for b in std::iter::once(&m.config).chain(&m.layers) {
                if !out.iter().any(|x| x.digest == b.digest) {
                    out.push(b.clone());
                }
            }
        }
        out.push(d.clone());
        Ok(())
    }

    /// Check credentials against a registry (the `/v2/` endpoint).
    pub fn check_login(&self, host: &str, plain_http: bool, creds: &Credentials) -> Result<(), RegistryError> {
        let r = Reference::parse(&format!("{host}/login-check"))?;
        if r.domain != host && !(host == "docker.io" && r.domain == "docker.io") {
            return Err(RegistryError::InvalidArgument(format!(
                "{host:?} is not a registry host (use a name with a dot or a port, or localhost)"
            )));
        }
        let client = self.clients(&r, plain_http, &Some(creds.clone()))?.pop().expect("origin");
        let url = format!("{}/v2/", client.endpoint.base);
        let reply = client.send("GET", &url, &[], None, false)?;
        if !reply.status.is_success() {
            return Err(client::error_from(&url, reply));
        }
        // A registry that lets anyone in never asks for the credentials: the
        // login succeeds, as docker's does (nothing refused them). The agent
        // says so in its log, for a token service on another host would look
        // the same until it is listed in `token_hosts`.
        if !client.creds_used.load(std::sync::atomic::Ordering::Relaxed) {
            tracing::info!(registry = %host, "login: the registry asked for no credentials (a token service on another host needs token_hosts)");
        }
        Ok(())
    }
}

fn tls_with_ca(path: &std::path::Path) -> Result<ureq::tls::TlsConfig, RegistryError> {
    use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
    let pem = std::fs::read(path).map_err(|e| RegistryError::InvalidArgument(format!("CA file {}: {e}", path.display())))?;
    let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|i| match i {
            Ok(PemItem::Certificate(c)) => Some(c.to_owned()),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(RegistryError::InvalidArgument(format!("CA file {} holds no certificate", path.display())));
    }
    Ok(TlsConfig::builder().root_certs(RootCerts::Specific(Arc::new(certs))).build())
}

fn push_manifest(client: &Client, reference: &str, media_type: &str, data: &[u8]) -> Result<(), RegistryError> {
    let url = client.url(&format!("manifests/{reference}"));
    let reply = client.send("PUT", &url, &[("Content-Type", media_type.to_owned())], Some(data), true)?;
    if reply.status.is_success() {
        Ok(())
    } else {
        Err(client::error_from(&url, reply))
    }
}

/// A cross-repository mount; true when the registry mounted the blob.
fn mount_blob(client: &Client, digest: &Digest, from: &str) -> Result<bool, RegistryError> {
    let url = client.url(&format!("blobs/uploads/?mount={}&from={}", client::urlencode(digest.as_str()), client::urlencode(from)));
    let reply = client.send("POST", &url, &[("Content-Length", "0".into())], Some(&[]), true)?;
    Ok(reply.status == ureq::http::StatusCode::CREATED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_local() {
        for h in ["localhost", "localhost:5000", "127.0.0.1:5000", "127.0.0.1", "[::1]:5000"] {
            assert!(is_local(h), "{h}");
        }
        for h in ["example.com", "registry-1.docker.io", "10.0.0.1:5000", "localhost.example.com"] {
            assert!(!is_local(h), "{h}");
        }
    }

    #[test]
    fn media_types_are_sniffed() {
        let idx = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(is_index_doc(idx, ""));
        assert_eq!(sniff_media_type(idx, "text/plain", true), oci::MEDIA_OCI_INDEX);
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{},"layers":[]}"#;
        assert!(!is_index_doc(m, ""));
        assert_eq!(sniff_media_type(m, "", false), oci::MEDIA_DOCKER_MANIFEST);
    }
}
