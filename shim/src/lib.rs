//! berth-shim: one small process per container.
//!
//! The agent starts it; it puts itself in its own session as a child
//! subreaper, mounts the container's rootfs into the bundle, runs the OCI
//! runtime CLI, holds the container's stdio, writes the CRI log, and records
//! exit statuses. It outlives the agent: a restarted agent reconnects to its
//! socket. `protocol` is what the agent and the shim say to each other; `log`
//! is the log format, shared with the agent's reader.

pub mod log;
pub mod protocol;
pub mod time;

/// The shim's entry point.
pub fn main() -> i32 {
    eprintln!("berth-shim: not implemented yet");
    1
}
