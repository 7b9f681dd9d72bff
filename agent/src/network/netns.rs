//! Named network namespaces: a namespace kept alive by a bind mount of its
//! nsfs file on an empty file under the agent's state directory, as
//! `ip netns add` does, so that the runtime spec can name it by path and the
//! CNI plugins can enter it.

use std::io;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};

/// Make `dir` and let mounts made in it reach other mount namespaces (the
/// shims' copies, made slaves of the agent's): a namespace unmounted here is
/// unmounted there too, so none is kept alive by a stale copy.
pub fn prepare_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    if !is_mount_point(dir)? {
        rustix::mount::mount_bind(dir, dir).map_err(io::Error::from)?;
    }
    rustix::mount::mount_change(dir, MountPropagationFlags::SHARED).map_err(io::Error::from)?;
    Ok(())
}

/// Whether `dir` is the root of a mount (its mount id differs from its parent's).
fn is_mount_point(dir: &Path) -> io::Result<bool> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    let dir = std::fs::canonicalize(dir)?;
    Ok(mounts.lines().any(|l| l.split(' ').nth(4).is_some_and(|m| unescape(m) == dir.as_os_str().to_string_lossy())))
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v as char);
            i += 4;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Create a new network namespace bound at `path` (which must not exist),
/// with its loopback interface up.
#[allow(unsafe_code)]
pub fn create(path: &Path) -> io::Result<()> {
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o400).open(path)?;
    }
    let target: PathBuf = path.to_owned();
    // A thread of its own enters the new namespace (a network namespace is
    // per thread) and ends there; the bind mount keeps the namespace.
    let made = std::thread::Builder::new().name("netns".into()).spawn(move || -> io::Result<()> {
        // SAFETY: only the network namespace is unshared (not the file
        // table, which is what `unshare_unsafe` warns about), in a thread
        // that holds nothing else and ends right after.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }.map_err(io::Error::from)?;
        let own = format!("/proc/self/task/{}/ns/net", rustix::thread::gettid().as_raw_nonzero());
        rustix::mount::mount(own.as_str(), &target, "", MountFlags::BIND, None).map_err(io::Error::from)?;
        loopback_up()
    });
    let result = match made {
        Ok(handle) => handle.join().unwrap_or_else(|_| Err(io::Error::other("the netns thread panicked"))),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        let _ = remove(path);
        return Err(e);
    }
    Ok(())
}

/// Unmount and delete a namespace made by [`create`]; a missing one is not an error.
pub fn remove(path: &Path) -> io::Result<()> {
    match rustix::mount::unmount(path, UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether `path` holds a live namespace (a bind-mounted nsfs file).
pub fn exists(path: &Path) -> bool {
    // NSFS_MAGIC
    rustix::fs::statfs(path).map(|s| s.f_type as u64 == 0x6e73_6673).unwrap_or(false)
}

/// `struct ifreq` with the flags member of its union.
#[repr(C)]
struct IfreqFlags {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

const SIOCGIFFLAGS: rustix::ioctl::Opcode = 0x8913;
const SIOCSIFFLAGS: rustix::ioctl::Opcode = 0x8914;
const IFF_UP: i16 = 1;

/// Set `lo` up in the calling thread's network namespace.
#[allow(unsafe_code)]
fn loopback_up() -> io::Result<()> {
    use rustix::ioctl::{ioctl, Updater};
    let sock = rustix::net::socket(rustix::net::AddressFamily::INET, rustix::net::SocketType::DGRAM, None).map_err(io::Error::from)?;
    let mut req = IfreqFlags { name: [0; 16], flags: 0, _pad: [0; 22] };
    req.name[..2].copy_from_slice(b"lo");
    // SAFETY: both requests read and write a `struct ifreq`, which IfreqFlags lays out.
    unsafe {
        ioctl(&sock, Updater::<{ SIOCGIFFLAGS }, IfreqFlags>::new(&mut req)).map_err(io::Error::from)?;
        req.flags |= IFF_UP;
        ioctl(&sock, Updater::<{ SIOCSIFFLAGS }, IfreqFlags>::new(&mut req)).map_err(io::Error::from)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(unsafe_code)]
    fn a_namespace_is_made_with_lo_up_and_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("netns");
        prepare_dir(&dir).unwrap();
        let ns = dir.join("one");
        create(&ns).unwrap();
        assert!(exists(&ns));
        assert!(create(&ns).is_err(), "a name is made once");
        // lo is up inside: enter it from a thread and read the flags back.
        let p = ns.clone();
        let up = std::thread::spawn(move || {
            let f = std::fs::File::open(&p).unwrap();
            rustix::thread::move_into_link_name_space(std::os::fd::AsFd::as_fd(&f), Some(rustix::thread::LinkNameSpaceType::Network))
                .unwrap();
            let flags = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
            let sock = rustix::net::socket(rustix::net::AddressFamily::INET, rustix::net::SocketType::DGRAM, None).unwrap();
            let mut req = IfreqFlags { name: [0; 16], flags: 0, _pad: [0; 22] };
            req.name[..2].copy_from_slice(b"lo");
            // SAFETY: SIOCGIFFLAGS reads and writes a `struct ifreq`.
            unsafe { rustix::ioctl::ioctl(&sock, rustix::ioctl::Updater::<{ SIOCGIFFLAGS }, IfreqFlags>::new(&mut req)).unwrap() };
            (flags.lines().count(), req.flags & IFF_UP != 0)
        })
        .join()
        .unwrap();
        assert_eq!(up.0, 3, "only lo in a new namespace (two header lines)");
        assert!(up.1, "lo is up");
        remove(&ns).unwrap();
        assert!(!ns.exists());
        remove(&ns).unwrap();
        let _ = rustix::mount::unmount(&dir, UnmountFlags::DETACH);
    }
}
