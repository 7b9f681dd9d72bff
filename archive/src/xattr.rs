//! Extended attributes: bounded reads through file descriptors, and which names a layer may
//! carry.

use std::os::fd::BorrowedFd;

use rustix::io::Errno;

/// Largest xattr name list or value read (the Linux VFS limit is 64 KiB).
const MAX: usize = 64 * 1024;

/// An xattr: name and value.
pub type Xattr = (Vec<u8>, Vec<u8>);

/// Whether an xattr belongs to overlayfs. Such xattrs from an archive could forge whiteouts,
/// opaque directories or redirects, so they are never applied from one nor written into one
/// (`user.overlay.*` is what overlayfs uses when mounted with `userxattr`).
pub fn is_overlay_private(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// Whether a layer we write keeps this xattr: the user's own and file capabilities. Never
/// overlayfs' private ones, nor other `trusted.*` / `security.*` (host policy, e.g. SELinux
/// labels) or `system.*` ones.
pub fn kept_in_layer(name: &[u8]) -> bool {
    (name.starts_with(b"user.") && !is_overlay_private(name)) || name == b"security.capability"
}

/// The names of the xattrs of `fd` (none where the filesystem has no xattrs).
pub fn names(fd: BorrowedFd<'_>) -> rustix::io::Result<Vec<Vec<u8>>> {
    let mut buf = vec![0u8; 1024];
    loop {
        match rustix::fs::flistxattr(fd, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                break;
            }
            Err(Errno::RANGE) if buf.len() < MAX => buf.resize(MAX, 0),
            Err(Errno::OPNOTSUPP) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
    }
    Ok(buf.split(|b| *b == 0).filter(|n| !n.is_empty()).map(<[u8]>::to_vec).collect())
}

/// The value of xattr `name` of `fd`; None if it has none (or the filesystem has no xattrs).
pub fn get(fd: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<Option<Vec<u8>>> {
    let mut value = vec![0u8; 256];
    loop {
        match rustix::fs::fgetxattr(fd, name, &mut value[..]) {
            Ok(n) => {
                value.truncate(n);
                return Ok(Some(value));
            }
            Err(Errno::RANGE) if value.len() < MAX => value.resize(MAX, 0),
            Err(Errno::NODATA | Errno::OPNOTSUPP) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// Whether `fd` has xattr `name`, whatever its value.
pub fn has(fd: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<bool> {
    match rustix::fs::fgetxattr_query(fd, name) {
        Ok(_) | Err(Errno::RANGE) => Ok(true),
        Err(Errno::NODATA | Errno::OPNOTSUPP) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The xattrs of `fd` whose names `keep` accepts, sorted by name.
pub fn read(fd: BorrowedFd<'_>, keep: impl Fn(&[u8]) -> bool) -> rustix::io::Result<Vec<Xattr>> {
    let mut out = Vec::new();
    for name in names(fd)?.into_iter().filter(|n| keep(n)) {
        // Removed between the listing and the read: not there.
        if let Some(value) = get(fd, &name)? {
            out.push((name, value));
        }
    }
    out.sort();
    Ok(out)
}
