//! berth-shim: one small process per container.
//!
//! The agent starts it with the task's bundle directory as its only argument.
//! It puts itself in its own session as a child subreaper, in a mount
//! namespace of its own (a slave of the host's) where it mounts the
//! container's rootfs, runs the OCI runtime CLI, holds the container's stdio,
//! writes the CRI log and records exit statuses. It outlives the agent: a
//! restarted agent reconnects to its socket. `protocol` is what the agent and
//! the shim say to each other; `log` is the log format, shared with the
//! agent's reader.

pub mod log;
pub mod protocol;
mod shim;

use std::fs;
use std::io::{self, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;

use protocol::{files, RootfsMount, ShimConfig};

/// The shim's entry point.
pub fn main() -> i32 {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let help = args.len() == 2 && (args[1] == "--help" || args[1] == "-h");
    if args.len() != 2 || help {
        eprintln!("usage: berth-shim BUNDLE_DIR\n\nberthd starts one berth-shim per running container; it is not meant to be run by hand.");
        return if help { 0 } else { 2 };
    }
    match serve(Path::new(&args[1])) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("berth-shim: {e}");
            1
        }
    }
}

fn serve(bundle: &Path) -> io::Result<()> {
    // Descriptors the agent's own parent left open must not reach the runtime or the container.
    close_inherited();
    // Its own session: a signal to the agent's process group or terminal does not reach it.
    let _ = rustix::process::setsid();
    // Processes the runtime leaves behind (the container's init) become the shim's children.
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
    rustix::process::chdir(bundle)?;
    let bundle = std::env::current_dir()?;
    let cfg: ShimConfig = serde_json::from_slice(&fs::read(files::CONFIG)?).map_err(io::Error::other)?;
    let host_mounts = cfg.host_mounts && !cfg.hide_cgroup2;
    if !host_mounts {
        private_mounts(cfg.hide_cgroup2)?;
    }
    mount_rootfs(&cfg.rootfs, &bundle)?;
    // Only the agent (root) may talk to the shim: the socket is created 0600.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let _ = fs::remove_file(files::SOCKET);
    let listener = UnixListener::bind(files::SOCKET);
    rustix::process::umask(old);
    let listener = listener?;
    listener.set_nonblocking(true)?;
    let root = bundle.join(files::ROOTFS);
    let shim = shim::Shim::new(cfg, bundle, listener)?;
    fs::write(files::SHIM_PID, std::process::id().to_string())?;
    // Tell the agent, then let go of the pipe it reads.
    let mut out = io::stdout().lock();
    writeln!(out, "{}", files::READY)?;
    out.flush()?;
    drop(out);
    let null = fs::OpenOptions::new().write(true).open("/dev/null")?;
    rustix::stdio::dup2_stdout(&null)?;
    let result = shim.run();
    if host_mounts {
        // In the host's namespace, the root does not go with the shim: unmount it (with
        // what the runtime mounted under it).
        let _ = rustix::mount::unmount(&root, rustix::mount::UnmountFlags::DETACH);
    }
    result
}

/// Close every inherited descriptor above stderr: nothing of the agent's (or
/// of whoever started the agent) reaches the runtime or the container, and no
/// pipe of a supervisor is held open by the shim.
#[allow(unsafe_code)]
fn close_inherited() {
    let Ok(dir) = fs::read_dir("/proc/self/fd") else { return };
    let fds: Vec<i32> = dir.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).filter(|&fd| fd > 2).collect();
    for fd in fds {
        // SAFETY: the shim has opened nothing of its own yet except the
        // directory listing, which is closed by now (its number is then not
        // open, and close fails harmlessly). No other code holds these
        // descriptors: they were inherited across exec.
        if rustix::io::fcntl_getfd(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }).is_ok() {
            unsafe { rustix::io::close(fd) };
        }
    }
}

/// Enter a mount namespace of the shim's own, a slave of the host's: the
/// rootfs mount lives (and dies) with the shim and the container, and host
/// mounts made later (bind-mount sources) still show up in it.
#[allow(unsafe_code)]
fn private_mounts(hide_cgroup2: bool) -> io::Result<()> {
    use rustix::mount::{mount_change, MountPropagationFlags};
    // SAFETY: the shim is single-threaded here and only the mount namespace is
    // unshared (not the file table), which is what `unshare_unsafe` warns about.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS)? };
    mount_change("/", MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC)?;
    if hide_cgroup2 {
        // Runtimes such as crun 1.8 refuse a hybrid layout (cgroup v1
        // controllers plus a cgroup2 mount); hide the cgroup2 mount from them.
        match rustix::mount::unmount("/sys/fs/cgroup/unified", rustix::mount::UnmountFlags::DETACH) {
            Ok(()) | Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::INVAL) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Mount the container's root filesystem at `<bundle>/rootfs`.
fn mount_rootfs(mounts: &[RootfsMount], bundle: &Path) -> io::Result<()> {
    use rustix::mount::{mount, mount_bind, mount_remount, MountFlags};
    let target = bundle.join(files::ROOTFS);
    fs::create_dir_all(&target)?;
    for m in mounts {
        match m.kind.as_str() {
            "bind" => {
                mount_bind(m.source.as_str(), &target)?;
                if m.options.iter().any(|o| o == "ro") {
                    mount_remount(&target, MountFlags::BIND | MountFlags::RDONLY, "")?;
                }
            }
            "overlay" => {
                // Options can outgrow the one page mount(2) takes (a deep image):
                // then the paths are made relative to their common directory.
                let (dir, options) = shorten_overlay_options(&m.options);
                if let Some(dir) = &dir {
                    rustix::process::chdir(dir.as_str())?;
                }
                let data = std::ffi::CString::new(options.join(",")).map_err(io::Error::other)?;
                let r = mount(m.source.as_str(), &target, "overlay", MountFlags::empty(), Some(data.as_c_str()));
                rustix::process::chdir(bundle)?;
                r?;
            }
            other => return Err(io::Error::other(format!("unsupported rootfs mount type {other:?}"))),
        }
    }
    Ok(())
}

/// Options longer than a page minus a margin get their paths made relative to
/// the deepest directory they share; returns that directory when it did.
pub fn shorten_overlay_options(options: &[String]) -> (Option<String>, Vec<String>) {
    const LIMIT: usize = 4000;
    if options.iter().map(|o| o.len() + 1).sum::<usize>() < LIMIT {
        return (None, options.to_vec());
    }
    let mut paths: Vec<&str> = Vec::new();
    for o in options {
        if let Some((k, v)) = o.split_once('=') {
            if matches!(k, "lowerdir" | "upperdir" | "workdir") {
                paths.extend(v.split(':'));
            }
        }
    }
    let Some(first) = paths.first() else { return (None, options.to_vec()) };
    let mut common: &str = first.rsplit_once('/').map_or("", |(d, _)| d);
    for p in &paths {
        let under = |c: &str| p.starts_with(c) && p.as_bytes().get(c.len()) == Some(&b'/');
        while !common.is_empty() && !under(common) {
            common = common.rsplit_once('/').map_or("", |(d, _)| d);
        }
    }
    if common.is_empty() {
        return (None, options.to_vec());
    }
    let strip = |v: &str| v.split(':').map(|p| p[common.len() + 1..].to_owned()).collect::<Vec<_>>().join(":");
    let out = options
        .iter()
        .map(|o| match o.split_once('=') {
            Some((k, v)) if matches!(k, "lowerdir" | "upperdir" | "workdir") => format!("{k}={}", strip(v)),
            _ => o.clone(),
        })
        .collect();
    (Some(common.to_owned()), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_overlay_options_are_kept() {
        let o = vec!["lowerdir=/a/1/fs:/a/2/fs".to_owned(), "upperdir=/a/3/fs".to_owned()];
        assert_eq!(shorten_overlay_options(&o), (None, o.clone()));
    }

    #[test]
    fn long_overlay_options_become_relative() {
        let lowers: Vec<String> = (0..200).map(|i| format!("/var/lib/berth/snapshots/overlayfs/{i}/fs")).collect();
        let o = vec![
            "workdir=/var/lib/berth/snapshots/overlayfs/999/work".to_owned(),
            "upperdir=/var/lib/berth/snapshots/overlayfs/999/fs".to_owned(),
            format!("lowerdir={}", lowers.join(":")),
        ];
        let (dir, out) = shorten_overlay_options(&o);
        assert_eq!(dir.as_deref(), Some("/var/lib/berth/snapshots/overlayfs"));
        assert_eq!(out[0], "workdir=999/work");
        assert_eq!(out[1], "upperdir=999/fs");
        assert!(out[2].starts_with("lowerdir=0/fs:1/fs:"), "{}", &out[2][..40]);
        assert!(out.iter().map(String::len).sum::<usize>() < 4000);
    }
}
