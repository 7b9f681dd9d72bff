//! Containers: records, runtime specs, users, and the diff of a writable layer.

pub mod config;
pub mod diff;
pub mod spec;
pub mod user;
