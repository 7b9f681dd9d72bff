//! Events service.

use std::sync::Arc;

use berth_api::v1::{self, events_server::EventsServer};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::convert;
use crate::events::{matches, parse_filter};
use crate::server::Agent;

pub struct EventsService {
    agent: Arc<Agent>,
}

pub fn service(agent: Arc<Agent>) -> EventsServer<EventsService> {
    EventsServer::new(EventsService { agent })
}

#[tonic::async_trait]
impl v1::events_server::Events for EventsService {
    type SubscribeStream = ReceiverStream<Result<v1::Envelope, Status>>;

    async fn subscribe(&self, req: Request<v1::SubscribeRequest>) -> Result<Response<Self::SubscribeStream>, Status> {
        let filters =
            req.get_ref().filters.iter().map(|f| parse_filter(f)).collect::<Result<Vec<_>, _>>().map_err(Status::invalid_argument)?;
        let mut rx = self.agent.events.subscribe();
        let (tx, out) = mpsc::channel(256);
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
                if !matches(&filters, &e) {
                    continue;
                }
                let env = v1::Envelope {
                    timestamp: convert::timestamp(e.timestamp),
                    namespace: e.namespace,
                    topic: e.topic.into(),
                    id: e.id,
                    attributes: e.attributes.into_iter().collect(),
                };
                if tx.send(Ok(env)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out)))
    }
}
