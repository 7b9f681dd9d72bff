//! A container's `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`:
//! written by the agent in the container's directory and bind-mounted over
//! the image's, so they never land in the container's layer.

use std::net::Ipv4Addr;
use std::path::Path;

/// The three files, by their name in `/etc`.
pub const FILES: [&str; 3] = ["hosts", "resolv.conf", "hostname"];

/// What the files say.
#[derive(Debug, Clone, Default)]
pub struct Input {
    pub hostname: String,
    /// The container's own addresses (hosts lines for its hostname).
    pub ips: Vec<Ipv4Addr>,
    /// `--add-host NAME:IP`.
    pub extra_hosts: Vec<(String, String)>,
    /// `--dns`; empty: `default_nameservers`.
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    /// The nameservers used without `--dns` (the host's, or the agent's resolver).
    pub default_nameservers: Vec<String>,
    /// The host's search domains, used without `--dns-search`.
    pub default_search: Vec<String>,
}

/// `/etc/hosts`.
pub fn hosts(i: &Input) -> String {
    let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n");
    for ip in &i.ips {
        s.push_str(&format!("{ip}\t{}\n", i.hostname));
    }
    for (name, ip) in &i.extra_hosts {
        s.push_str(&format!("{ip}\t{name}\n"));
    }
    s
}

/// `/etc/resolv.conf`.
pub fn resolv_conf(i: &Input) -> String {
    let mut s = String::new();
    let search = if i.dns_search.is_empty() { &i.default_search } else { &i.dns_search };
    if !search.is_empty() && search.iter().any(|d| d != ".") {
        s.push_str(&format!("search {}\n", search.join(" ")));
    }
    let servers = if i.dns.is_empty() { &i.default_nameservers } else { &i.dns };
    for ns in servers {
        s.push_str(&format!("nameserver {ns}\n"));
    }
    if !i.dns_options.is_empty() {
        s.push_str(&format!("options {}\n", i.dns_options.join(" ")));
    }
    s
}

/// The host's resolvers and search domains, from its `/etc/resolv.conf`;
/// with `own_netns`, loopback resolvers (unreachable from a container's
/// namespace) are left out, and when none is left, Google's public ones
/// are used, as docker does.
pub fn host_resolvers(own_netns: bool) -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut servers = Vec::new();
    let mut search = Vec::new();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("nameserver") => {
                if let Some(ip) = w.next() {
                    let local = ip.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback());
                    if !(own_netns && local) {
                        servers.push(ip.to_owned());
                    }
                }
            }
            Some("search") | Some("domain") => search = w.map(str::to_owned).collect(),
            _ => {}
        }
    }
    if servers.is_empty() && own_netns {
        servers = vec!["8.8.8.8".into(), "8.8.4.4".into()];
    }
    (servers, search)
}

/// Write the three files in `dir` (each replaced whole).
pub fn write(dir: &Path, i: &Input) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in [("hosts", hosts(i)), ("resolv.conf", resolv_conf(i)), ("hostname", format!("{}\n", i.hostname))] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
        std::fs::rename(&tmp, dir.join(name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_say_what_docker_writes() {
        let i = Input {
            hostname: "web".into(),
            ips: vec![Ipv4Addr::new(10, 77, 0, 2)],
            extra_hosts: vec![("db".into(), "10.0.0.9".into())],
            dns: vec![],
            dns_search: vec!["example.org".into()],
            dns_options: vec!["ndots:2".into()],
            default_nameservers: vec!["10.255.255.53".into()],
            default_search: vec!["host.lan".into()],
        };
        let h = hosts(&i);
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.contains("10.77.0.2\tweb\n") && h.contains("10.0.0.9\tdb\n"));
        assert_eq!(resolv_conf(&i), "search example.org\nnameserver 10.255.255.53\noptions ndots:2\n");
        let i2 = Input { dns: vec!["1.1.1.1".into()], dns_search: vec![], dns_options: vec![], ..i };
        assert_eq!(resolv_conf(&i2), "search host.lan\nnameserver 1.1.1.1\n");
    }
}
