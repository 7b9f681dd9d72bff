//! What changed in a container's writable layer. The snapshotter computes it
//! ([`crate::snapshot::Snapshots::changes`], [`crate::snapshot::Snapshots::write_changes`]) with
//! the layer format of [`crate::archive::diff`]; the types are re-exported here for the
//! container API.

pub use crate::archive::diff::{Change, ChangeKind, DiffError};

use super::ContainerError;
use crate::snapshot::ChangesError;

impl From<ChangesError> for ContainerError {
    fn from(e: ChangesError) -> Self {
        match e {
            ChangesError::Snapshot(e) => ContainerError::Snapshot(e),
            ChangesError::Diff(e) => ContainerError::Diff(e),
        }
    }
}
