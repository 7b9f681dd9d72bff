//! Events service.

use std::sync::Arc;

use berth_api::v1::{self, events_server::EventsServer};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use super::{convert, MessageStream};
use crate::service::Services;

pub struct EventsApi {
    services: Arc<Services>,
}

pub fn service(services: Arc<Services>) -> EventsServer<EventsApi> {
    EventsServer::new(EventsApi { services })
}

#[tonic::async_trait]
impl v1::events_server::Events for EventsApi {
    type SubscribeStream = MessageStream<v1::Envelope>;

    async fn subscribe(&self, req: Request<v1::SubscribeRequest>) -> Result<Response<Self::SubscribeStream>, Status> {
        let r = req.get_ref();
        let nanos = |t: &prost_types::Timestamp| t.seconds.saturating_mul(1_000_000_000).saturating_add(t.nanos as i64);
        let rx = self.services.events.subscribe(&r.filters, r.since.as_ref().map(nanos), r.until.as_ref().map(nanos))?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(|e| {
            Ok(v1::Envelope {
                timestamp: convert::timestamp(e.timestamp),
                namespace: e.namespace,
                topic: e.topic.into(),
                id: e.id,
                attributes: e.attributes.into_iter().collect(),
            })
        }))))
    }
}
