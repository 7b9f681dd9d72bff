//! Safe application of a tar changeset (to be written).
