//! Image references: the parser is shared with berthctl and lives in
//! `berth_common::reference`.

pub use berth_common::reference::*;
