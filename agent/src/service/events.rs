//! Events: what the agent published, streamed to subscribers that filter it.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};

use super::Core;
use super::Error;
use crate::events::{matches, parse_filter, Event};

/// Events queued for one subscriber beyond the bus's own backlog.
const QUEUE: usize = 256;

#[derive(Clone)]
pub struct EventService {
    core: Arc<Core>,
}

impl EventService {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        EventService { core }
    }

    /// Events that pass any of `filters` (all when none): the kept ones
    /// published since `since` (nanoseconds), when given, then those
    /// published from now on; none after `until`, where the stream ends.
    /// A subscriber that falls behind misses events (logged), never blocks publishers.
    pub fn subscribe(&self, filters: &[String], since: Option<i64>, until: Option<i64>) -> Result<mpsc::Receiver<Event>, Error> {
        let filters = filters.iter().map(|f| parse_filter(f)).collect::<Result<Vec<_>, _>>().map_err(Error::InvalidArgument)?;
        if let (Some(s), Some(u)) = (since, until) {
            if u < s {
                return Err(Error::InvalidArgument("--until is before --since".into()));
            }
        }
        // An `until` alone asks for the recent events up to it, as docker's does.
        let (past, mut rx) = match (since, until) {
            (Some(s), _) => self.core.events.subscribe_since(s),
            (None, Some(_)) => self.core.events.subscribe_since(i64::MIN),
            (None, None) => (Vec::new(), self.core.events.subscribe()),
        };
        let (tx, out) = mpsc::channel(QUEUE);
        let before_until = move |e: &Event| until.is_none_or(|u| e.timestamp <= u);
        tokio::spawn(async move {
            for e in past.into_iter().filter(|e| before_until(e) && matches(&filters, e)) {
                if tx.send(e).await.is_err() {
                    return;
                }
            }
            // How long until `until`, from now.
            let ends = until.map(|u| {
                let left = u.saturating_sub(crate::metadata::now_nanos()).max(0) as u64;
                tokio::time::Instant::now() + std::time::Duration::from_nanos(left)
            });
            let deadline = async move {
                match ends {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(deadline);
            loop {
                let next = tokio::select! {
                    r = rx.recv() => r,
                    () = tx.closed() => return,
                    () = &mut deadline => return,
                };
                let e = match next {
                    Ok(e) => e,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "an event subscriber fell behind");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if !before_until(&e) {
                    return;
                }
                // A `since` still ahead: what comes before it is not asked for.
                if since.is_some_and(|s| e.timestamp < s) {
                    continue;
                }
                if matches(&filters, &e) && tx.send(e).await.is_err() {
                    return;
                }
            }
        });
        Ok(out)
    }
}
