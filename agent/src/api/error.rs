//! The one place domain errors become gRPC statuses. Every match is
//! exhaustive, so a new error variant must be given a status here.

use tonic::{Code, Status};

use crate::archive::apply::ApplyError;
use crate::archive::diff::DiffError;
use crate::container::files::FilesError;
use crate::container::ContainerError;
use crate::content::ContentError;
use crate::image::ImageError;
use crate::metadata::MetadataError;
use crate::registry::RegistryError;
use crate::runtime::TaskError;
use crate::service::Error as ServiceError;
use crate::snapshot::SnapshotError;

/// Disk full or over quota is ResourceExhausted, a read-only filesystem FailedPrecondition;
/// other I/O failures are Internal.
pub fn io_code(e: &std::io::Error) -> Code {
    match e.raw_os_error() {
        Some(code) if code == rustix::io::Errno::NOSPC.raw_os_error() || code == rustix::io::Errno::DQUOT.raw_os_error() => {
            Code::ResourceExhausted
        }
        // A read-only mount (a container run with --read-only): nothing to retry.
        Some(code) if code == rustix::io::Errno::ROFS.raw_os_error() => Code::FailedPrecondition,
        _ => Code::Internal,
    }
}

pub fn metadata_code(e: &MetadataError) -> Code {
    match e {
        MetadataError::NotFound { .. } => Code::NotFound,
        MetadataError::AlreadyExists { .. } => Code::AlreadyExists,
        MetadataError::HasChildren { .. } => Code::FailedPrecondition,
        MetadataError::Database(_) | MetadataError::Corrupt { .. } => Code::Internal,
        MetadataError::TooNew { .. } => Code::FailedPrecondition,
    }
}

pub fn content_code(e: &ContentError) -> Code {
    match e {
        ContentError::NotFound(_) => Code::NotFound,
        ContentError::DigestMismatch { .. } | ContentError::SizeMismatch { .. } => Code::InvalidArgument,
        ContentError::TooLarge { .. } => Code::InvalidArgument,
        ContentError::Io { source, .. } => io_code(source),
        ContentError::NoSpace { .. } => Code::ResourceExhausted,
    }
}

pub fn snapshot_code(e: &SnapshotError) -> Code {
    match e {
        SnapshotError::Metadata(m) => metadata_code(m),
        SnapshotError::WrongKind { .. } | SnapshotError::HasChildren { .. } => Code::FailedPrecondition,
        SnapshotError::InvalidKey(_) => Code::InvalidArgument,
        SnapshotError::ChainTooLong { .. } => Code::FailedPrecondition,
        SnapshotError::Io { source, .. } => io_code(source),
        SnapshotError::Copy { .. } => Code::Internal,
    }
}

pub fn image_code(e: &ImageError) -> Code {
    match e {
        ImageError::NotFound(_) => Code::NotFound,
        ImageError::Ambiguous(_) => Code::InvalidArgument,
        ImageError::AlreadyExists(_) => Code::AlreadyExists,
        ImageError::Reference(_) | ImageError::InvalidArgument(_) => Code::InvalidArgument,
        ImageError::InUse(_) => Code::FailedPrecondition,
        ImageError::Format(_) | ImageError::Archive(_) => Code::InvalidArgument,
        ImageError::NoPlatform(_) => Code::NotFound,
        ImageError::DiffIdMismatch { .. } | ImageError::Unpack { .. } => Code::InvalidArgument,
        ImageError::MissingContent { .. } => Code::FailedPrecondition,
        ImageError::Cancelled(_) => Code::Cancelled,
        ImageError::Stalled(_) => Code::DeadlineExceeded,
        ImageError::MessageTooLarge(_) => Code::ResourceExhausted,
        ImageError::Io { source, .. } => io_code(source),
        ImageError::Apply { source, .. } => apply_code(source),
        ImageError::Content(c) => content_code(c),
        ImageError::Metadata(m) => metadata_code(m),
        ImageError::Snapshot(s) => snapshot_code(s),
    }
}

/// An archive's application (a layer, a copy): what the archive caused is the caller's to fix.
pub fn apply_code(e: &ApplyError) -> Code {
    match e {
        ApplyError::Hostile { .. }
        | ApplyError::Archive(_)
        | ApplyError::Unsupported { .. }
        | ApplyError::MissingLinkTarget { .. }
        | ApplyError::TooManyEntries { .. } => Code::InvalidArgument,
        ApplyError::KindConflict { .. } => Code::FailedPrecondition,
        // Errors an archive's own structure causes (a dangling link, a name
        // taken by a file, ...) are the archive's fault; others are the machine's.
        ApplyError::Io { source, .. } => {
            use rustix::io::Errno;
            let layer_caused = [
                Errno::NOENT,
                Errno::EXIST,
                Errno::NOTDIR,
                Errno::ISDIR,
                Errno::LOOP,
                Errno::NOTEMPTY,
                Errno::NAMETOOLONG,
                Errno::PERM,
                Errno::INVAL,
                Errno::XDEV,
                Errno::MLINK,
            ];
            match source.raw_os_error() {
                Some(code) if layer_caused.iter().any(|e| e.raw_os_error() == code) => Code::InvalidArgument,
                _ => io_code(source),
            }
        }
    }
}

pub fn files_code(e: &FilesError) -> Code {
    match e {
        FilesError::NotFound(_) => Code::NotFound,
        FilesError::Invalid(_) => Code::InvalidArgument,
        FilesError::Io { source, .. } => io_code(source),
        FilesError::Apply(a) => apply_code(a),
        // What a tree holds that a copy cannot (a `.wh.` name), or a read that failed.
        FilesError::Write(DiffError::Unsupported { .. }) => Code::InvalidArgument,
        FilesError::Write(DiffError::Io { source, .. } | DiffError::Write { source, .. }) => io_code(source),
        FilesError::Write(DiffError::TooDeep { .. }) => Code::OutOfRange,
        FilesError::Write(DiffError::Changed { .. }) => Code::Aborted,
    }
}

pub fn container_code(e: &ContainerError) -> Code {
    match e {
        ContainerError::NotFound(_) => Code::NotFound,
        ContainerError::Ambiguous(_) | ContainerError::InvalidName(_) | ContainerError::Invalid { .. } => Code::InvalidArgument,
        ContainerError::NameTaken(_) => Code::AlreadyExists,
        ContainerError::NotUnpacked { .. } => Code::FailedPrecondition,
        // Both are about what the user asked for: a bad override, a user the image lacks.
        ContainerError::Spec(_) | ContainerError::User(_) => Code::InvalidArgument,
        ContainerError::Image(i) => image_code(i),
        ContainerError::Snapshot(s) => snapshot_code(s),
        ContainerError::Metadata(m) => metadata_code(m),
        ContainerError::Io { source, .. } => io_code(source),
        ContainerError::Diff(_) => Code::Internal,
        ContainerError::Volume(v) => volume_code(v),
        ContainerError::Files(f) => files_code(f),
    }
}

pub fn volume_code(e: &crate::volume::VolumeError) -> Code {
    use crate::volume::VolumeError as V;
    match e {
        V::InvalidName(_) => Code::InvalidArgument,
        V::InUse { .. } => Code::FailedPrecondition,
        // The image's content could not be copied (a tree too deep, a name too long).
        V::Fill { .. } => Code::FailedPrecondition,
        V::Io { source, .. } => io_code(source),
        V::Metadata(m) => metadata_code(m),
    }
}

pub fn task_code(e: &TaskError) -> Code {
    match e {
        TaskError::NoTask(_) | TaskError::FailedPrecondition(_) => Code::FailedPrecondition,
        TaskError::AlreadyExists(_) => Code::AlreadyExists,
        TaskError::NotFound(_) => Code::NotFound,
        TaskError::InvalidArgument(_) => Code::InvalidArgument,
        // The runtime refused what the container asked for (a missing binary, a bad mount).
        TaskError::Runtime(_) => Code::FailedPrecondition,
        TaskError::Timeout(_) => Code::DeadlineExceeded,
        TaskError::ShimGone { .. } => Code::Unavailable,
        TaskError::Io { source, .. } => io_code(source),
        TaskError::Container(c) => container_code(c),
        TaskError::Internal(_) => Code::Internal,
    }
}

pub fn registry_code(e: &RegistryError) -> Code {
    match e {
        RegistryError::InvalidArgument(_) => Code::InvalidArgument,
        RegistryError::NotFound(_) => Code::NotFound,
        RegistryError::Unauthorized(_) => Code::PermissionDenied,
        RegistryError::Transport(_) => Code::Unavailable,
        RegistryError::Refused(_) => Code::FailedPrecondition,
        RegistryError::Protocol(_) | RegistryError::TooLarge(_) | RegistryError::DigestMismatch { .. } => Code::DataLoss,
        RegistryError::Image(i) => image_code(i),
    }
}

pub fn service_code(e: &ServiceError) -> Code {
    match e {
        ServiceError::InvalidArgument(_) => Code::InvalidArgument,
        ServiceError::NotFound(_) => Code::NotFound,
        ServiceError::FailedPrecondition(_) => Code::FailedPrecondition,
        ServiceError::OutOfRange(_) => Code::OutOfRange,
        ServiceError::Internal(_) => Code::Internal,
        ServiceError::Aborted(_) => Code::Aborted,
        ServiceError::Cancelled(_) => Code::Cancelled,
        ServiceError::DeadlineExceeded(_) => Code::DeadlineExceeded,
        ServiceError::Unavailable(_) => Code::Unavailable,
        ServiceError::ResourceExhausted(_) => Code::ResourceExhausted,
        ServiceError::Context { inner, .. } => service_code(inner),
        ServiceError::Metadata(m) => metadata_code(m),
        ServiceError::Content(c) => content_code(c),
        ServiceError::Snapshot(s) => snapshot_code(s),
        ServiceError::Image(i) => image_code(i),
        ServiceError::Container(c) => container_code(c),
        ServiceError::Task(t) => task_code(t),
        ServiceError::Registry(r) => registry_code(r),
        ServiceError::Network(n) => network_code(n),
        ServiceError::Volume(v) => volume_code(v),
    }
}

pub fn network_code(e: &crate::network::NetworkError) -> Code {
    use crate::network::cni::CniError;
    use crate::network::NetworkError as N;
    match e {
        N::NotFound(_) => Code::NotFound,
        N::AlreadyExists(_) | N::Conflict(_) => Code::AlreadyExists,
        N::Invalid(_) => Code::InvalidArgument,
        N::InUse(_) => Code::FailedPrecondition,
        N::Exhausted(_) => Code::ResourceExhausted,
        N::Cni(CniError::Timeout { .. }) => Code::DeadlineExceeded,
        N::Cni(_) => Code::FailedPrecondition,
        N::Io { source, .. } => io_code(source),
    }
}

macro_rules! to_status {
    ($t:ty, $f:ident) => {
        impl From<$t> for Status {
            fn from(e: $t) -> Status {
                let code = $f(&e);
                // Names from archives and containers reach the message: no control characters.
                let message = berth_common::text::printable(&e.to_string()).into_owned();
                if code == Code::Internal {
                    tracing::error!(error = %message, "internal error");
                }
                Status::new(code, message)
            }
        }
    };
}

to_status!(MetadataError, metadata_code);
to_status!(ContentError, content_code);
to_status!(SnapshotError, snapshot_code);
to_status!(ImageError, image_code);
to_status!(ContainerError, container_code);
to_status!(TaskError, task_code);
to_status!(RegistryError, registry_code);
to_status!(ServiceError, service_code);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::image::oci::FormatError;

    #[test]
    fn domain_errors_map_to_the_right_status() {
        let d = Digest::of(b"x");
        let nf = || MetadataError::NotFound { kind: "image", name: "x".into() };
        let cases: Vec<(Status, Code)> = vec![
            (nf().into(), Code::NotFound),
            (MetadataError::AlreadyExists { kind: "image", name: "x".into() }.into(), Code::AlreadyExists),
            (MetadataError::Database("x".into()).into(), Code::Internal),
            (ContentError::NotFound(d.clone()).into(), Code::NotFound),
            (ContentError::DigestMismatch { expected: d.clone(), actual: d.clone() }.into(), Code::InvalidArgument),
            (SnapshotError::HasChildren { key: "k".into(), children: 1 }.into(), Code::FailedPrecondition),
            (SnapshotError::InvalidKey("".into()).into(), Code::InvalidArgument),
            (SnapshotError::Metadata(nf()).into(), Code::NotFound),
            (ImageError::NotFound("x".into()).into(), Code::NotFound),
            (ImageError::AlreadyExists("x".into()).into(), Code::AlreadyExists),
            (ImageError::Format(FormatError::Invalid("x".into())).into(), Code::InvalidArgument),
            (ImageError::Archive("x".into()).into(), Code::InvalidArgument),
            (ImageError::DiffIdMismatch { layer: d.clone(), expected: d.clone(), actual: d.clone() }.into(), Code::InvalidArgument),
            (ImageError::MissingContent { digest: d.clone(), what: "x".into() }.into(), Code::FailedPrecondition),
            (ImageError::Metadata(nf()).into(), Code::NotFound),
            (ImageError::Content(ContentError::NotFound(d.clone())).into(), Code::NotFound),
            (ContentError::NoSpace { needed: 1, available: 0 }.into(), Code::ResourceExhausted),
            (
                ContentError::Io { path: "/x".into(), source: std::io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error()) }
                    .into(),
                Code::ResourceExhausted,
            ),
            (ImageError::Stalled("x".into()).into(), Code::DeadlineExceeded),
            (ImageError::MessageTooLarge("x".into()).into(), Code::ResourceExhausted),
            (ImageError::Cancelled("x".into()).into(), Code::Cancelled),
            (
                ImageError::Apply { layer: d.clone(), source: ApplyError::Hostile { path: "../x".into(), reason: "r".into() } }.into(),
                Code::InvalidArgument,
            ),
            (
                ImageError::Apply {
                    layer: d,
                    source: ApplyError::Io {
                        path: "x".into(),
                        source: std::io::Error::from_raw_os_error(rustix::io::Errno::NOENT.raw_os_error()),
                    },
                }
                .into(),
                Code::InvalidArgument,
            ),
        ];
        let service: Vec<(Status, Code)> = vec![
            (ServiceError::InvalidArgument("x".into()).into(), Code::InvalidArgument),
            (ServiceError::NotFound("x".into()).into(), Code::NotFound),
            (ServiceError::FailedPrecondition("x".into()).into(), Code::FailedPrecondition),
            (ServiceError::OutOfRange("x".into()).into(), Code::OutOfRange),
            (ServiceError::Image(ImageError::NotFound("x".into())).into(), Code::NotFound),
            (ServiceError::Container(ContainerError::NameTaken("x".into())).into(), Code::AlreadyExists),
            (ServiceError::Task(TaskError::NoTask("x".into())).into(), Code::FailedPrecondition),
            (ServiceError::Task(TaskError::ShimGone { id: "x".into(), why: "y".into() }).into(), Code::Unavailable),
            (ServiceError::Registry(RegistryError::Unauthorized("x".into())).into(), Code::PermissionDenied),
            (ServiceError::Registry(RegistryError::Transport("x".into())).into(), Code::Unavailable),
            (
                ServiceError::Registry(RegistryError::DigestMismatch { what: "x".into(), expected: "a".into(), actual: "b".into() }).into(),
                Code::DataLoss,
            ),
        ];
        for (status, code) in cases.into_iter().chain(service) {
            assert_eq!(status.code(), code, "{}", status.message());
        }
    }
}
