//! The application services: every use case of the agent, once, for every
//! API surface (the v1 gRPC services today; the Build RPC, networks and the
//! CRI call the same methods).
//!
//! A service validates what the core cannot (labels, namespaces, filters),
//! runs the use case on the core (off the async threads when it blocks),
//! applies the policy around it (garbage collection, events, auto-removal),
//! and returns domain types. It knows nothing of gRPC: a handler converts.

pub mod build;
pub mod containers;
pub mod content;
mod core;
mod error;
pub mod events;
pub mod files;
pub mod health;
pub mod images;
pub mod networks;
pub mod pods;
mod restart;
pub mod snapshots;
pub mod streams;
pub mod system;
pub mod tasks;
pub mod volumes;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};

pub use self::core::Core;
use crate::image::Progress;
pub use error::Error;

/// Every service of one agent.
pub struct Services {
    pub images: images::ImageService,
    pub build: build::BuildService,
    pub content: content::ContentService,
    pub snapshots: snapshots::SnapshotService,
    pub containers: containers::ContainerService,
    pub tasks: tasks::TaskService,
    pub events: events::EventService,
    pub networks: networks::NetworkService,
    pub pods: pods::PodService,
    /// The CRI's streaming sessions (Exec, Attach, PortForward).
    pub streams: streams::StreamService,
    pub volumes: volumes::VolumeService,
    pub system: system::SystemService,
}

impl Services {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        let images = images::ImageService::new(core.clone());
        let pods = pods::PodService::new(
            core.clone(),
            containers::ContainerService::new(core.clone()),
            tasks::TaskService::new(core.clone()),
            images.clone(),
        );
        Services {
            build: build::BuildService::new(core.clone(), images.clone()),
            images: images.clone(),
            content: content::ContentService::new(core.clone()),
            snapshots: snapshots::SnapshotService::new(core.clone()),
            streams: streams::StreamService::new(pods.clone()),
            pods,
            containers: containers::ContainerService::new(core.clone()),
            tasks: tasks::TaskService::new(core.clone()),
            events: events::EventService::new(core.clone()),
            networks: networks::NetworkService::new(core.clone()),
            volumes: volumes::VolumeService::new(core.clone()),
            system: system::SystemService::new(core),
        }
    }

    /// Start the services' background work.
    pub(crate) fn start_background(&self) {
        self.containers.start_exit_policies();
        let pods = self.pods.clone();
        tokio::spawn(async move { pods.sweep(pods::NAMESPACE).await });
    }
}

/// Bytes per chunk of a stream to a client (an export, a copy out of a container).
const CHUNK: usize = 1 << 20;
/// Chunks queued for the client: a slow reader holds the writer back.
pub(crate) const CHUNK_QUEUE: usize = 4;
/// A client that takes no chunk for this long is abandoned.
pub(crate) const CHUNK_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Run blocking core work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, Error> + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Internal(format!("task failed: {e}")))?
}

/// A namespace is 1-76 characters of `[a-z0-9._-]`, starting with a letter or digit.
pub fn validate_namespace(ns: &str) -> Result<(), Error> {
    let ok = !ns.is_empty()
        && ns.len() <= 76
        && ns.as_bytes()[0].is_ascii_alphanumeric()
        && ns.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid namespace {:?}: use 1-76 lowercase letters, digits, '.', '_' or '-'",
            ns.chars().take(80).collect::<String>()
        )))
    }
}

/// Labels a user sets on images, containers, snapshots and blobs: one rule
/// for all of them, shared with berthctl (bounded sizes, keys under
/// `berth.io/` reserved).
pub fn validate_labels<'a>(labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> Result<(), Error> {
    berth_common::labels::validate(labels.into_iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|e| Error::InvalidArgument(e.to_string()))
}

/// One list filter: `KEY==VALUE` (equal), `KEY~=VALUE` (contains) or `KEY` (present).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub key: String,
    pub value: Option<String>,
    pub contains: bool,
}

impl Filter {
    /// Parse filters, each key checked by `known`.
    pub fn parse_all(filters: &[String], known: impl Fn(&str) -> bool, keys: &str) -> Result<Vec<Filter>, Error> {
        filters
            .iter()
            .map(|f| {
                let (key, value, contains) = if let Some((k, v)) = f.split_once("==") {
                    (k, Some(v.trim().to_owned()), false)
                } else if let Some((k, v)) = f.split_once("~=") {
                    (k, Some(v.trim().to_owned()), true)
                } else if !f.is_empty() && !f.contains('=') {
                    (f.as_str(), None, false)
                } else {
                    return Err(Error::InvalidArgument(format!("invalid filter {f:?}: use KEY==VALUE, KEY~=SUBSTRING or KEY")));
                };
                let key = key.trim().to_owned();
                if !known(&key) {
                    return Err(Error::InvalidArgument(format!("unknown filter key {key:?}: use {keys}")));
                }
                Ok(Filter { key, value, contains })
            })
            .collect()
    }

    /// Whether `field` (None when the object has no such field) passes.
    pub fn matches(&self, field: Option<&str>) -> bool {
        match (field, &self.value) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(f), Some(v)) if self.contains => f.contains(v.as_str()),
            (Some(f), Some(v)) => f == v,
        }
    }

    /// A `label.KEY` filter against `labels`; None when this is not a label filter.
    pub fn matches_label(&self, labels: &BTreeMap<String, String>) -> Option<bool> {
        let key = self.key.strip_prefix("label.")?;
        Some(self.matches(labels.get(key).map(String::as_str)))
    }
}

/// What a long operation reports: progress as it goes, then its result.
#[derive(Debug)]
pub enum Update<T> {
    Progress(Progress),
    Done(Result<T, Error>),
}

/// How long the result of a long operation waits for a client that stopped reading.
const RESULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Run `work` on a blocking thread. Progress goes out as it comes and is
/// dropped when the reader is slower (it is advisory); the result is always
/// sent, within a bound.
pub(crate) fn with_progress<T: Send + 'static>(
    work: impl FnOnce(&(dyn Fn(Progress) + Sync)) -> Result<T, Error> + Send + 'static,
) -> mpsc::Receiver<Update<T>> {
    queued(None, "", move |progress, _gone| work(progress))
}

/// Tells long work whether its caller has gone away (it may stop then).
pub(crate) type Gone<'a> = &'a (dyn Fn() -> bool + Sync);

/// [`with_progress`], once a slot of `slots` is free: until then the work
/// waits, says so (`what` names it), and is dropped if its caller goes away.
/// The work is told when its caller has gone ([`Gone`]).
pub(crate) fn queued<T: Send + 'static>(
    slots: Option<Arc<Semaphore>>,
    what: &str,
    work: impl FnOnce(&(dyn Fn(Progress) + Sync), Gone<'_>) -> Result<T, Error> + Send + 'static,
) -> mpsc::Receiver<Update<T>> {
    let (tx, rx) = mpsc::channel(64);
    let what = what.to_owned();
    tokio::spawn(async move {
        let _slot = match slots {
            None => None,
            Some(slots) => match slots.clone().try_acquire_owned() {
                Ok(slot) => Some(slot),
                Err(_) => {
                    let status = "waiting: as many transfers as max_transfers run";
                    let _ = tx.try_send(Update::Progress(Progress::Image { name: what, status }));
                    tokio::select! {
                        slot = slots.acquire_owned() => slot.ok(),
                        // The caller went away while it waited: nothing to do.
                        () = tx.closed() => return,
                    }
                }
            },
        };
        let handle = tokio::runtime::Handle::current();
        let _ = tokio::task::spawn_blocking(move || {
            let ptx = tx.clone();
            let progress = move |p: Progress| {
                let _ = ptx.try_send(Update::Progress(p));
            };
            let gtx = tx.clone();
            let gone = move || gtx.is_closed();
            let result = work(&progress, &gone);
            let _ = handle.block_on(tokio::time::timeout(RESULT_SEND_TIMEOUT, tx.send(Update::Done(result))));
        })
        .await;
        // An import, pull, push or export has freed its buffers: they go back to the system.
        drop(_slot);
        tokio::task::spawn_blocking(crate::memory::trim);
    });
    rx
}

/// A writer's sink for a stream to a client (an export, a copy out of a
/// container): `CHUNK`-byte chunks into a bounded
/// channel, sent from a blocking thread. Fails when the client has gone or
/// stopped reading.
pub(crate) struct ChunkSender {
    buf: Vec<u8>,
    pub(crate) tx: mpsc::Sender<Result<Vec<u8>, Error>>,
    handle: tokio::runtime::Handle,
    /// Why the client no longer takes chunks, once it does not.
    pub(crate) abandoned: Option<&'static str>,
}

impl ChunkSender {
    pub(crate) fn new(tx: mpsc::Sender<Result<Vec<u8>, Error>>, handle: tokio::runtime::Handle) -> Self {
        ChunkSender { buf: Vec::with_capacity(CHUNK), tx, handle, abandoned: None }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        let why = match self.handle.block_on(tokio::time::timeout(CHUNK_IDLE_TIMEOUT, self.tx.send(Ok(data)))) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(_)) => "the client went away",
            Err(_) => "the client stopped reading",
        };
        self.abandoned = Some(why);
        Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, why))
    }
}

impl std::io::Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_one_rule() {
        let ok = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
        assert!(validate_labels(&ok).is_ok());
        for (k, v) in [("", "x"), ("berth.io/x", "y"), (&"k".repeat(1025)[..], "v")] {
            let bad = BTreeMap::from([(k.to_owned(), v.to_owned())]);
            assert!(validate_labels(&bad).is_err(), "{k:?}");
        }
        let big = BTreeMap::from([("k".to_owned(), "v".repeat(4097))]);
        assert!(validate_labels(&big).is_err());
        let many: BTreeMap<String, String> = (0..257).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(validate_labels(&many).is_err());
    }

    #[test]
    fn filters_parse_and_match() {
        let known = |k: &str| k == "name" || k.starts_with("label.");
        let f = Filter::parse_all(&["name==web".into(), "name~=we".into(), "label.app".into()], known, "name").unwrap();
        assert!(f[0].matches(Some("web")) && !f[0].matches(Some("web2")));
        assert!(f[1].matches(Some("aweb")));
        let labels = BTreeMap::from([("app".to_owned(), "x".to_owned())]);
        assert_eq!(f[2].matches_label(&labels), Some(true));
        assert_eq!(f[0].matches_label(&labels), None);
        assert!(Filter::parse_all(&["size==1".into()], known, "name").is_err());
        assert!(Filter::parse_all(&["name=web".into()], known, "name").is_err());
    }

    #[test]
    fn namespaces_are_checked() {
        assert!(validate_namespace("default").is_ok());
        assert!(validate_namespace("k8s.io").is_ok());
        for bad in ["", "-x", "A", "a b", &"a".repeat(77)] {
            assert!(validate_namespace(bad).is_err(), "{bad:?}");
        }
    }
}
