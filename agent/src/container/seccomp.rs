//! Seccomp profiles, made the runtime spec's `linux.seccomp` for one
//! container. The default profile is this project's data (`seccomp.json`);
//! a user's (`--security-opt seccomp=PATH`) is read the same way. Both are
//! the OCI runtime spec's form plus what docker's profiles add: per rule,
//! `includes`/`excludes` of capabilities and architectures (`minKernel` is
//! not checked: the rule applies), and `archMap` for the architectures.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::{json, Value};

/// The default profile.
pub const DEFAULT_PROFILE: &str = include_str!("seccomp.json");

/// This machine's architecture as profiles name it: libseccomp's and Go's.
#[cfg(target_arch = "aarch64")]
const HOST_ARCH: (&str, &str) = ("SCMP_ARCH_AARCH64", "arm64");
#[cfg(not(target_arch = "aarch64"))]
const HOST_ARCH: (&str, &str) = ("SCMP_ARCH_X86_64", "amd64");

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    syscalls: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    names: Vec<String>,
    /// The old single-name form.
    #[serde(default)]
    name: Option<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Vec<Value>,
    #[serde(default)]
    includes: Condition,
    #[serde(default)]
    excludes: Condition,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Condition {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
}

fn is_host_arch(a: &str) -> bool {
    a == HOST_ARCH.0 || a == HOST_ARCH.1 || a == std::env::consts::ARCH
}

/// The spec's seccomp for a container holding capabilities `caps`
/// ("CAP_SYS_ADMIN", ...), from `profile` (JSON).
pub fn for_container(profile: &str, caps: &HashSet<String>) -> Result<oci_spec::runtime::LinuxSeccomp, String> {
    let p: Profile = serde_json::from_str(profile).map_err(|e| format!("not a seccomp profile: {e}"))?;
    let mut architectures = p.architectures;
    if architectures.is_empty() {
        for m in p.arch_map.into_iter().filter(|m| m.architecture == HOST_ARCH.0) {
            architectures.push(m.architecture);
            architectures.extend(m.sub_architectures);
        }
    }
    let mut syscalls = Vec::new();
    for r in p.syscalls {
        let inc = &r.includes;
        let exc = &r.excludes;
        let applies = inc.caps.iter().all(|c| caps.contains(c))
            && (inc.arches.is_empty() || inc.arches.iter().any(|a| is_host_arch(a)))
            && !exc.caps.iter().any(|c| caps.contains(c))
            && !exc.arches.iter().any(|a| is_host_arch(a));
        if !applies {
            continue;
        }
        let mut names = r.names;
        names.extend(r.name);
        if names.is_empty() {
            continue;
        }
        let mut s = json!({"names": names, "action": r.action});
        if let Some(e) = r.errno_ret {
            s["errnoRet"] = json!(e);
        }
        if !r.args.is_empty() {
            s["args"] = Value::Array(r.args);
        }
        syscalls.push(s);
    }
    let mut out = json!({"defaultAction": p.default_action, "architectures": architectures, "syscalls": syscalls});
    if let Some(e) = p.default_errno_ret {
        out["defaultErrnoRet"] = json!(e);
    }
    if !p.flags.is_empty() {
        out["flags"] = json!(p.flags);
    }
    serde_json::from_value(out).map_err(|e| format!("not a seccomp profile: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_allowed(s: &oci_spec::runtime::LinuxSeccomp) -> HashSet<String> {
        s.syscalls()
            .iter()
            .flatten()
            .filter(|r| format!("{:?}", r.action()).contains("Allow") && r.args().as_ref().is_none_or(|a| a.is_empty()))
            .flat_map(|r| r.names().clone())
            .collect()
    }

    #[test]
    fn the_default_profile_follows_the_containers_capabilities() {
        let plain: HashSet<String> = ["CAP_CHOWN", "CAP_SYS_CHROOT"].iter().map(|s| s.to_string()).collect();
        let s = for_container(DEFAULT_PROFILE, &plain).unwrap();
        let allowed = names_allowed(&s);
        for n in ["read", "openat", "execve", "chroot", "socket", "futex"] {
            assert!(allowed.contains(n), "{n} must be allowed");
        }
        for n in ["mount", "unshare", "keyctl", "add_key", "setns", "reboot", "init_module", "io_uring_setup"] {
            assert!(!allowed.contains(n), "{n} must not be allowed");
        }
        // clone only without namespace flags; clone3 says ENOSYS.
        let clone = s.syscalls().iter().flatten().find(|r| r.names().contains(&"clone".to_owned())).unwrap();
        assert!(clone.args().as_ref().is_some_and(|a| !a.is_empty()));
        let clone3 = s.syscalls().iter().flatten().find(|r| r.names().contains(&"clone3".to_owned())).unwrap();
        assert_eq!(clone3.errno_ret(), Some(38));
        assert_eq!(s.default_errno_ret(), Some(1));

        let admin: HashSet<String> = ["CAP_SYS_ADMIN"].iter().map(|s| s.to_string()).collect();
        let allowed = names_allowed(&for_container(DEFAULT_PROFILE, &admin).unwrap());
        for n in ["mount", "unshare", "setns", "clone", "clone3"] {
            assert!(allowed.contains(n), "{n} must be allowed with CAP_SYS_ADMIN");
        }
        assert!(!allowed.contains("chroot") && !allowed.contains("keyctl"));
    }

    #[test]
    fn docker_style_profiles_are_read() {
        let p = r#"{"defaultAction":"SCMP_ACT_ALLOW","archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_X86"]},
            {"architecture":"SCMP_ARCH_AARCH64","subArchitectures":["SCMP_ARCH_ARM"]}],
            "syscalls":[{"name":"mkdir","action":"SCMP_ACT_ERRNO","errnoRet":13},
                        {"names":["chmod"],"action":"SCMP_ACT_ERRNO","includes":{"arches":["arm64"]}}]}"#;
        let s = for_container(p, &HashSet::new()).unwrap();
        assert_eq!(s.architectures().as_ref().unwrap().len(), 2);
        let rules = s.syscalls().clone().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].names(), &vec!["mkdir".to_owned()]);
        assert!(for_container("{}", &HashSet::new()).is_err());
        assert!(for_container(r#"{"defaultAction":"SCMP_ACT_NOPE"}"#, &HashSet::new()).is_err());
    }
}
