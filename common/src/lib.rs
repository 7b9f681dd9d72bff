//! berth-common: the rules berthd, berthctl and berth-shim must agree on.
//!
//! - [`reference`]: image references, normalized the way docker reads them.
//! - [`time`]: wall-clock instants, RFC 3339 text, and the `--since` forms.
//! - [`labels`]: `KEY=VALUE` parsing and the limits every user label obeys.
//! - [`text`]: outside text made safe to show on a terminal.
//! - [`ignore`]: `.dockerignore` patterns, matched the way `docker build` does.
//!
//! Only std and thiserror: the shim links this crate, and one shim runs per
//! container.

pub mod groups;
pub mod ignore;
pub mod labels;
pub mod reference;
pub mod text;
pub mod time;
