//! Reading a container's cgroups: usage for `stats`, the OOM-kill counter at
//! exit. Works with cgroup v2 (a unified `/sys/fs/cgroup`) and v1 (a
//! hierarchy per controller, as on hybrid machines).

use std::fs;
use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub cpu_usage_ns: u64,
    pub memory_usage_bytes: u64,
    /// 0 = no limit.
    pub memory_limit_bytes: u64,
    pub pids_current: u64,
    /// 0 = no limit.
    pub pids_limit: u64,
}

/// Whether `/sys/fs/cgroup` is cgroup v2's (asked once: it does not change while
/// the agent runs).
fn unified() -> bool {
    static UNIFIED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    // CGROUP2_SUPER_MAGIC
    *UNIFIED.get_or_init(|| rustix::fs::statfs(ROOT).map(|s| s.f_type as u64 == 0x6367_7270).unwrap_or(false))
}

fn v1(controller: &str, path: &str) -> PathBuf {
    Path::new(ROOT).join(controller).join(path.trim_start_matches('/'))
}

fn v2(path: &str) -> PathBuf {
    Path::new(ROOT).join(path.trim_start_matches('/'))
}

fn read_u64(p: &Path) -> Option<u64> {
    fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// A limit file: "max" or an absurdly large v1 value mean none (0).
fn read_limit(p: &Path) -> u64 {
    match fs::read_to_string(p) {
        Ok(s) if s.trim() == "max" => 0,
        Ok(s) => s.trim().parse::<u64>().ok().filter(|&v| v < (1 << 62)).unwrap_or(0),
        Err(_) => 0,
    }
}

/// `key value` lines (memory.stat, cpu.stat, memory.events, memory.oom_control).
fn keyed(p: &Path, key: &str) -> Option<u64> {
    let s = fs::read_to_string(p).ok()?;
    s.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Usage of the cgroup at `path` (the spec's `cgroupsPath`); None when it does not exist.
pub fn stats(path: &str) -> Option<Stats> {
    if unified() {
        let d = v2(path);
        if !d.is_dir() {
            return None;
        }
        let usage = read_u64(&d.join("memory.current")).unwrap_or(0);
        let inactive = keyed(&d.join("memory.stat"), "inactive_file").unwrap_or(0);
        return Some(Stats {
            cpu_usage_ns: keyed(&d.join("cpu.stat"), "usage_usec").unwrap_or(0) * 1000,
            memory_usage_bytes: usage.saturating_sub(inactive),
            memory_limit_bytes: read_limit(&d.join("memory.max")),
            pids_current: read_u64(&d.join("pids.current")).unwrap_or(0),
            pids_limit: read_limit(&d.join("pids.max")),
        });
    }
    let mem = v1("memory", path);
    if !mem.is_dir() && !v1("pids", path).is_dir() {
        return None;
    }
    let cpu = [v1("cpuacct", path), v1("cpu,cpuacct", path)].into_iter().find_map(|d| read_u64(&d.join("cpuacct.usage"))).unwrap_or(0);
    let usage = read_u64(&mem.join("memory.usage_in_bytes")).unwrap_or(0);
    let inactive = keyed(&mem.join("memory.stat"), "total_inactive_file").unwrap_or(0);
    Some(Stats {
        cpu_usage_ns: cpu,
        memory_usage_bytes: usage.saturating_sub(inactive),
        memory_limit_bytes: read_limit(&mem.join("memory.limit_in_bytes")),
        pids_current: read_u64(&v1("pids", path).join("pids.current")).unwrap_or(0),
        pids_limit: read_limit(&v1("pids", path).join("pids.max")),
    })
}

/// Whether the kernel's OOM killer killed a process in the cgroup at `path`.
pub fn oom_killed(path: &str) -> bool {
    let n = if unified() {
        keyed(&v2(path).join("memory.events"), "oom_kill")
    } else {
        keyed(&v1("memory", path).join("memory.oom_control"), "oom_kill")
    };
    n.unwrap_or(0) > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_files_and_limits_parse() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("memory.stat");
        fs::write(&f, "cache 10\ntotal_inactive_file 4096\noom_kill 2\n").unwrap();
        assert_eq!(keyed(&f, "total_inactive_file"), Some(4096));
        assert_eq!(keyed(&f, "oom_kill"), Some(2));
        assert_eq!(keyed(&f, "missing"), None);
        let l = d.path().join("limit");
        fs::write(&l, "max\n").unwrap();
        assert_eq!(read_limit(&l), 0);
        fs::write(&l, "9223372036854771712\n").unwrap();
        assert_eq!(read_limit(&l), 0);
        fs::write(&l, "104857600\n").unwrap();
        assert_eq!(read_limit(&l), 104857600);
    }

    #[test]
    fn a_missing_cgroup_has_no_stats() {
        assert_eq!(stats("/berth/no-such-namespace/no-such-container"), None);
        assert!(!oom_killed("/berth/no-such-namespace/no-such-container"));
    }
}
