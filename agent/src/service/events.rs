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

    /// Events published from now on that pass any of `filters` (all when none).
    /// A subscriber that falls behind misses events (logged), never blocks publishers.
    pub fn subscribe(&self, filters: &[String]) -> Result<mpsc::Receiver<Event>, Error> {
        let filters = filters.iter().map(|f| parse_filter(f)).collect::<Result<Vec<_>, _>>().map_err(Error::InvalidArgument)?;
        let mut rx = self.core.events.subscribe();
        let (tx, out) = mpsc::channel(QUEUE);
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    r = rx.recv() => r,
                    () = tx.closed() => return,
                };
                let e = match next {
                    Ok(e) => e,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "an event subscriber fell behind");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if matches(&filters, &e) && tx.send(e).await.is_err() {
                    return;
                }
            }
        });
        Ok(out)
    }
}
