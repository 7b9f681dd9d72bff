//! What `top` shows about a process, read from /proc; and a process's root directory.

use std::fs;

/// The root directory of process `pid` (`/proc/PID/root`), if the process is in cgroup
/// `cgroup` (a path of `/proc/PID/cgroup`, or a parent of one) when the descriptor is opened.
/// `/proc/PID` is opened first: what is read through it is that process's, or fails once it
/// is gone, so a pid reused by another process is never mistaken for it.
pub fn root_of(pid: u32, cgroup: &str) -> Option<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    if cgroup.trim_matches('/').is_empty() {
        return None;
    }
    let proc_dir = rustix::fs::open(format!("/proc/{pid}"), OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).ok()?;
    let root = rustix::fs::openat(&proc_dir, "root", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).ok()?;
    let file = rustix::fs::openat(&proc_dir, "cgroup", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ok()?;
    let mut cgroups = String::new();
    std::io::Read::read_to_string(&mut fs::File::from(file), &mut cgroups).ok()?;
    let cgroup = cgroup.trim_end_matches('/');
    let inside = cgroups
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .any(|p| p == cgroup || p.strip_prefix(cgroup).is_some_and(|rest| rest.starts_with('/')));
    inside.then_some(root)
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub command: String,
    pub state: String,
    pub elapsed_secs: u64,
    pub cpu_ms: u64,
    pub rss_bytes: u64,
}

/// Read `/proc/<pid>`; None when the process is gone.
pub fn info(pid: u32) -> Option<ProcInfo> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: split after the last ')'.
    let (_, rest) = stat.rsplit_once(") ")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields from "state" (3rd in the man page) on: state=0, ppid=1, utime=11, stime=12, starttime=19, rss=21.
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let ticks = rustix::param::clock_ticks_per_second().max(1);
    let page = rustix::param::page_size() as u64;
    let uptime: f64 = fs::read_to_string("/proc/uptime").ok()?.split_whitespace().next()?.parse().ok()?;
    let started = num(19) as f64 / ticks as f64;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut command = cmdline.split(|&b| b == 0).filter(|a| !a.is_empty()).map(String::from_utf8_lossy).collect::<Vec<_>>().join(" ");
    if command.is_empty() {
        command = format!("[{}]", stat.split_once('(').and_then(|(_, r)| r.rsplit_once(')')).map(|(n, _)| n).unwrap_or(""));
    }
    Some(ProcInfo {
        pid,
        ppid: num(1) as u32,
        uid,
        command,
        state: f.first().copied().unwrap_or("?").to_owned(),
        elapsed_secs: (uptime - started).max(0.0) as u64,
        cpu_ms: (num(11) + num(12)) * 1000 / ticks,
        rss_bytes: num(21) * page,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let me = super::info(std::process::id()).unwrap();
        assert_eq!(me.pid, std::process::id());
        assert_eq!(me.uid, rustix::process::getuid().as_raw());
        assert!(me.rss_bytes > 0);
        assert!(!me.command.is_empty());
        assert_eq!(me.ppid, rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32).unwrap_or(0));
        assert!(super::info(u32::MAX - 1).is_none());
    }
}
