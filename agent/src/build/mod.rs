//! Building images from a Dockerfile, in the agent: the Dockerfile frontend
//! ([`dockerfile`]), the mirror of a client's context ([`context`]), what a
//! COPY copies ([`copy`]) and from where ([`source`]), a stage's state between steps ([`state`]) and
//! the cache keys ([`cache`]). The use case that runs a build (stages,
//! steps, RUN containers, the cache table) is `service::build`.

pub mod cache;
pub mod context;
pub mod copy;
pub mod dockerfile;
pub mod fetch;
pub mod source;
pub mod state;

/// Label on the containers and snapshots a build makes while it runs: the
/// build's id. What carries it after a crash is removed at start.
pub const LABEL_BUILD: &str = "berth.io/build";
