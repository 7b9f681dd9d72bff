//! Conversions between core records and API messages.

use std::time::SystemTime;

use berth_api::v1;

use crate::image::oci;
use crate::metadata::{ImageRecord, SnapshotKind, SnapshotRecord};
use crate::snapshot::Mount;

pub fn timestamp(nanos: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds: nanos.div_euclid(1_000_000_000), nanos: nanos.rem_euclid(1_000_000_000) as i32 })
}

pub fn system_time(t: SystemTime) -> Option<prost_types::Timestamp> {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    timestamp(d.as_nanos() as i64)
}

pub fn platform(p: &oci::Platform) -> v1::Platform {
    v1::Platform { os: p.os.clone(), architecture: p.architecture.clone(), variant: p.variant.clone(), os_version: p.os_version.clone() }
}

pub fn descriptor(d: &oci::Descriptor) -> v1::Descriptor {
    v1::Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.to_string(),
        size: d.size as i64,
        annotations: d.annotations.clone().into_iter().collect(),
        platform: d.platform.as_ref().map(platform),
    }
}

pub fn image(rec: &ImageRecord) -> v1::Image {
    v1::Image {
        name: rec.name.clone(),
        target: Some(v1::Descriptor {
            media_type: rec.target.media_type.clone(),
            digest: rec.target.digest.to_string(),
            size: rec.target.size as i64,
            annotations: Default::default(),
            platform: None,
        }),
        labels: rec.labels.clone().into_iter().collect(),
        created_at: timestamp(rec.created),
        updated_at: timestamp(rec.updated),
        ..Default::default()
    }
}

pub fn snapshot_kind(k: SnapshotKind) -> v1::SnapshotKind {
    match k {
        SnapshotKind::Committed => v1::SnapshotKind::Committed,
        SnapshotKind::Active => v1::SnapshotKind::Active,
        SnapshotKind::View => v1::SnapshotKind::View,
    }
}

pub fn snapshot(rec: &SnapshotRecord, snapshotter: &str) -> v1::Snapshot {
    v1::Snapshot {
        key: rec.key.clone(),
        parent: rec.parent.clone(),
        kind: snapshot_kind(rec.kind) as i32,
        labels: rec.labels.clone().into_iter().collect(),
        created_at: timestamp(rec.created),
        updated_at: timestamp(rec.updated),
        snapshotter: snapshotter.to_owned(),
    }
}

pub fn mount(m: &Mount) -> v1::Mount {
    v1::Mount { r#type: m.kind.clone(), source: m.source.clone(), target: m.target.clone(), options: m.options.clone() }
}

#[cfg(test)]
mod tests {
    #[test]
    fn negative_times_convert_to_valid_timestamps() {
        let t = super::timestamp(-1).unwrap();
        assert_eq!((t.seconds, t.nanos), (-1, 999_999_999));
    }
}
