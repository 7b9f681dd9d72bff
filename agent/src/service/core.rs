//! The stores and managers of one agent, as the services see them.

use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::container::Containers;
use crate::content::ContentStore;
use crate::events::Events;
use crate::image::Images;
use crate::metadata::Metadata;
use crate::registry::Registries;
use crate::runtime::Tasks;
use crate::snapshot::Snapshots;

/// The stores and managers of one agent. Only `service/` reads these
/// fields (the wiring in `agent.rs` fills them); the API layers see
/// [`Services`](super::Services).
pub struct Core {
    pub(crate) config: Config,
    pub(crate) meta: Arc<Metadata>,
    pub(crate) content: Arc<ContentStore>,
    pub(crate) snapshots: Arc<Snapshots>,
    pub(crate) images: Arc<Images>,
    pub(crate) containers: Arc<Containers>,
    pub(crate) tasks: Arc<Tasks>,
    pub(crate) networks: Arc<crate::network::Networks>,
    pub(crate) volumes: Arc<crate::volume::Volumes>,
    pub(crate) events: Events,
    pub(crate) registries: Arc<Registries>,
    pub(crate) snapshotter_reason: String,
    pub(crate) started: Instant,
    /// The health of containers with a check.
    pub(crate) health: super::health::Health,
}
