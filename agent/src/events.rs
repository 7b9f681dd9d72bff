//! The event bus: every change of an image, container or task is published
//! here, and `Events.Subscribe` streams what is published after it joined,
//! after the recent ones it asks for (the last [`HISTORY`] are kept).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

/// Events a slow subscriber may fall behind by before it misses some.
const BACKLOG: usize = 1024;
/// Past events kept for a subscriber that asks for them (`--since`).
pub const HISTORY: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Nanoseconds since the Unix epoch.
    pub timestamp: i64,
    pub namespace: String,
    pub topic: &'static str,
    /// A container id or an image name.
    pub id: String,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<Event>,
    /// The last events, oldest first. Held while an event is sent, so a
    /// subscriber gets the past and the future without a gap or a repeat.
    history: Arc<Mutex<VecDeque<Event>>>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    pub fn new() -> Self {
        Events { tx: broadcast::channel(BACKLOG).0, history: Arc::new(Mutex::new(VecDeque::with_capacity(HISTORY))) }
    }

    pub fn publish(&self, namespace: &str, topic: &'static str, id: &str, attributes: &[(&str, String)]) {
        let mut event = Event {
            timestamp: 0,
            namespace: namespace.to_owned(),
            topic,
            id: id.to_owned(),
            attributes: attributes.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
        };
        tracing::debug!(topic, namespace, id, "event");
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        // Stamped under the lock: events go out in the order of their times.
        event.timestamp = crate::metadata::now_nanos();
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(event.clone());
        // No subscriber is not an error.
        let _ = self.tx.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// The kept events published at or after `since` (nanoseconds), and a
    /// receiver of every later one.
    pub fn subscribe_since(&self, since: i64) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let past = history.iter().filter(|e| e.timestamp >= since).cloned().collect();
        (past, self.tx.subscribe())
    }
}

/// One condition of an event filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    Equals(String, String),
    Contains(String, String),
}

/// A filter: conditions that must all hold. A list of filters passes an event when any filter does.
pub type Filter = Vec<Condition>;

/// Parse `topic==/tasks/exit,namespace==default` style filters.
pub fn parse_filter(s: &str) -> Result<Filter, String> {
    s.split(',')
        .map(|c| {
            let c = c.trim();
            if let Some((k, v)) = c.split_once("==") {
                Ok(Condition::Equals(k.trim().to_owned(), v.trim().to_owned()))
            } else if let Some((k, v)) = c.split_once("~=") {
                Ok(Condition::Contains(k.trim().to_owned(), v.trim().to_owned()))
            } else {
                Err(format!("invalid event filter {c:?}: use KEY==VALUE or KEY~=SUBSTRING (keys: topic, namespace, id, or an attribute)"))
            }
        })
        .collect()
}

fn field<'a>(e: &'a Event, key: &str) -> Option<&'a str> {
    match key {
        "topic" => Some(e.topic),
        "namespace" => Some(&e.namespace),
        "id" | "container" => Some(&e.id),
        other => e.attributes.get(other.strip_prefix("attributes.").unwrap_or(other)).map(String::as_str),
    }
}

pub fn matches(filters: &[Filter], e: &Event) -> bool {
    filters.is_empty()
        || filters.iter().any(|f| {
            f.iter().all(|c| match c {
                Condition::Equals(k, v) => field(e, k) == Some(v.as_str()),
                Condition::Contains(k, v) => field(e, k).is_some_and(|x| x.contains(v.as_str())),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(topic: &'static str, ns: &str, id: &str) -> Event {
        Event { timestamp: 0, namespace: ns.into(), topic, id: id.into(), attributes: BTreeMap::from([("exit_code".into(), "7".into())]) }
    }

    #[test]
    fn filters_and_within_or_across() {
        let f = vec![parse_filter("topic==/tasks/exit,namespace==default").unwrap(), parse_filter("id~=abc").unwrap()];
        assert!(matches(&f, &ev("/tasks/exit", "default", "x")));
        assert!(!matches(&f, &ev("/tasks/exit", "other", "x")));
        assert!(matches(&f, &ev("/tasks/start", "other", "zabcz")));
        assert!(matches(&[parse_filter("exit_code==7").unwrap()], &ev("/tasks/exit", "d", "x")));
        assert!(!matches(&[parse_filter("exit_code==0").unwrap()], &ev("/tasks/exit", "d", "x")));
        assert!(matches(&[], &ev("/x", "d", "x")));
        assert!(parse_filter("topic=/x").is_err());
    }

    #[tokio::test]
    async fn subscribers_get_what_is_published_after_they_join() {
        let bus = Events::new();
        bus.publish("d", "/images/create", "before", &[]);
        let mut rx = bus.subscribe();
        bus.publish("d", "/images/delete", "after", &[("k", "v".into())]);
        let e = rx.recv().await.unwrap();
        assert_eq!((e.topic, e.id.as_str()), ("/images/delete", "after"));
        assert_eq!(e.attributes.get("k").map(String::as_str), Some("v"));
    }
}
