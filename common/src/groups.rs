//! Local groups, as /etc/group names them (the agent's socket group, and
//! berthctl telling a refused user which group lets them in).

/// The id of group `name` in `/etc/group`.
pub fn gid_of(name: &str) -> Option<u32> {
    find(&std::fs::read_to_string("/etc/group").ok()?, |n, _| n == name).map(|(_, gid)| gid)
}

/// The name of group `gid` in `/etc/group`.
pub fn name_of(gid: u32) -> Option<String> {
    find(&std::fs::read_to_string("/etc/group").ok()?, |_, g| g == gid).map(|(name, _)| name.to_owned())
}

/// The first `name:password:gid:members` line that `want` accepts.
fn find(text: &str, want: impl Fn(&str, u32) -> bool) -> Option<(&str, u32)> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let gid = f.nth(1)?.trim().parse::<u32>().ok()?;
        want(name, gid).then_some((name, gid))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_as_etc_group_writes_them() {
        let text = "root:x:0:\n# a comment\nbroken\ndocker:x:998:alice,bob\nnogroup:x:65534:\n";
        assert_eq!(find(text, |n, _| n == "docker"), Some(("docker", 998)));
        assert_eq!(find(text, |_, g| g == 65534), Some(("nogroup", 65534)));
        assert_eq!(find(text, |n, _| n == "broken"), None);
        assert_eq!(find(text, |n, _| n == "dock"), None);
    }
}
