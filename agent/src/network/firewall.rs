//! The host's rules for the agent's bridge networks, as docker has them, kept
//! by the agent per network rather than by CNI plugins per container (the
//! bridge plugin's `ipMasq` and the `firewall` plugin ran six to ten iptables
//! processes for each container, most of the CPU time of a burst of starts):
//! - isolation: a container on one network does not reach one on another, and
//!   an internal network reaches nothing beyond its bridge;
//! - forwarding: what comes from a bridge, the replies to it and the
//!   connections to its published ports pass (where `FORWARD`'s policy drops,
//!   as docker's hosts have it);
//! - masquerade: what leaves a non-internal network's subnet for another
//!   interface goes out with the host's address.
//!
//! Per conf dir: the isolating drops in a filter chain jumped to first from
//! `FORWARD` (`BERTH-ISO-<hash>`), what passes in one jumped to last
//! (`BERTH-FWD-<hash>`: the host's own rules, and every agent's drops, come
//! before it), the masquerade in a nat chain from `POSTROUTING`
//! (`BERTH-MASQ-<hash>`); all rebuilt whole in one commit whenever a network
//! is made or removed, and at start, before any container starts.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::Network;

/// Longest one iptables call may take (it waits for the xtables lock within this).
const IPTABLES_TIMEOUT: Duration = Duration::from_secs(10);

/// The agent's chain `kind` (`ISO`, `FWD`, `MASQ`) of the networks configured in `conf_dir`.
fn named(kind: &str, conf_dir: &Path) -> String {
    let h = <sha2::Sha256 as sha2::Digest>::digest(conf_dir.as_os_str().as_encoded_bytes());
    format!("BERTH-{kind}-{}", &hex::encode(h)[..8])
}

/// The isolation chain of the networks configured in `conf_dir`.
pub fn chain(conf_dir: &Path) -> String {
    named("ISO", conf_dir)
}

/// The nat chain of the networks configured in `conf_dir`.
pub fn nat_chain(conf_dir: &Path) -> String {
    named("MASQ", conf_dir)
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

/// The agent's bridge networks: (bridge, subnet, internal).
fn bridges(nets: &[Network]) -> Vec<(&str, &str, bool)> {
    nets.iter()
        .filter(|n| n.managed && n.driver == "bridge")
        .filter_map(|n| bridge_of(n).map(|b| (b, n.subnet.as_str(), n.internal)))
        .collect()
}

/// The filter chain of what passes, of the networks configured in `conf_dir`.
pub fn accept_chain(conf_dir: &Path) -> String {
    named("FWD", conf_dir)
}

/// The isolating rules for `nets` (the agent's bridge networks), each as iptables arguments
/// after `-A CHAIN`.
pub fn rules(nets: &[Network]) -> Vec<Vec<String>> {
    let bridges = bridges(nets);
    let mut out = Vec::new();
    for (b, _, internal) in &bridges {
        if *internal {
            out.push(words(&["-i", b, "!", "-o", b, "-j", "DROP"]));
            out.push(words(&["-o", b, "!", "-i", b, "-j", "DROP"]));
        }
        for (other, _, _) in &bridges {
            if other != b {
                out.push(words(&["-i", b, "-o", other, "-j", "DROP"]));
            }
        }
    }
    out
}

/// What passes for `nets`: in a chain of its own, appended to `FORWARD`, so that the
/// host's own rules, and every agent's isolating drops, come first.
pub fn accept_rules(nets: &[Network]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (b, _, _) in bridges(nets) {
        out.push(words(&["-i", b, "-j", "ACCEPT"]));
        out.push(words(&["-o", b, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"]));
        // A published port's connections from other machines (portmap's DNAT), and no other.
        out.push(words(&["-o", b, "-m", "conntrack", "--ctstate", "DNAT", "-j", "ACCEPT"]));
    }
    out
}

/// The nat rules for `nets`: each non-internal network's subnet masqueraded where it
/// leaves by another interface than its bridge.
pub fn nat_rules(nets: &[Network]) -> Vec<Vec<String>> {
    bridges(nets)
        .into_iter()
        .filter(|(_, subnet, internal)| !internal && !subnet.is_empty())
        .map(|(b, subnet, _)| words(&["-s", subnet, "!", "-o", b, "-j", "MASQUERADE"]))
        .collect()
}

fn bridge_of(n: &Network) -> Option<&str> {
    Some(n.bridge.as_str()).filter(|b| !b.is_empty())
}

/// Make the chain hold exactly the rules for `nets`, and `FORWARD` jump to it.
pub fn sync(conf_dir: &Path, nets: &[Network]) -> Result<(), String> {
    // Agents sharing a conf dir share the chain: one rebuilds it at a time
    // (each holder's iptables calls are bounded, so the wait is too).
    let lock_path = conf_dir.join(".berth-firewall.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("{}: {e}", lock_path.display()))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).map_err(|e| format!("locking {}: {e}", lock_path.display()))?;
    let chains = Chains { iso: chain(conf_dir), accept: accept_chain(conf_dir), nat: nat_chain(conf_dir) };
    // One commit of iptables-restore: the chains are never seen half-filled
    // (declared, each is made or emptied; the rules follow in the same commit).
    run_with_input("iptables-restore", &["-w", "5", "--noflush"], restore_input(&chains, nets).as_bytes())?;
    jump("filter", &["-I", "FORWARD", "1"], &chains.iso)?;
    jump("filter", &["-A", "FORWARD"], &chains.accept)?;
    jump("nat", &["-A", "POSTROUTING"], &chains.nat)
}

/// Make `table`'s hook (`place`: `-I HOOK N` or `-A HOOK`) jump to `chain`, unless it does.
fn jump(table: &str, place: &[&str], chain: &str) -> Result<(), String> {
    let hook = place[1];
    if iptables(&["-t", table, "-C", hook, "-j", chain]).is_ok() {
        return Ok(());
    }
    let mut add = vec!["-t", table];
    add.extend_from_slice(place);
    add.extend_from_slice(&["-j", chain]);
    iptables(&add)
}

/// The agent's chains of one conf dir.
struct Chains {
    /// Filter, first in `FORWARD`: isolation.
    iso: String,
    /// Filter, last in `FORWARD`: what passes.
    accept: String,
    /// Nat, in `POSTROUTING`: masquerade.
    nat: String,
}

/// The iptables-restore text that sets the chains to the rules for `nets`.
fn restore_input(c: &Chains, nets: &[Network]) -> String {
    let mut text = format!("*filter\n:{} - [0:0]\n:{} - [0:0]\n", c.iso, c.accept);
    for r in rules(nets) {
        text.push_str(&format!("-A {} {}\n", c.iso, r.join(" ")));
    }
    for r in accept_rules(nets) {
        text.push_str(&format!("-A {} {}\n", c.accept, r.join(" ")));
    }
    text.push_str(&format!("COMMIT\n*nat\n:{} - [0:0]\n", c.nat));
    for r in nat_rules(nets) {
        text.push_str(&format!("-A {} {}\n", c.nat, r.join(" ")));
    }
    text.push_str("COMMIT\n");
    text
}

fn iptables(args: &[&str]) -> Result<(), String> {
    let mut all = vec!["-w", "5"];
    all.extend_from_slice(args);
    run("iptables", &all)
}

/// Run a host networking tool (iptables, ip), bounded; its stderr is the error.
pub(super) fn run(tool: &str, args: &[&str]) -> Result<(), String> {
    run_with_input(tool, args, &[])
}

/// [`run`], with `input` on its standard input.
fn run_with_input(tool: &str, args: &[&str], input: &[u8]) -> Result<(), String> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(if input.is_empty() { std::process::Stdio::null() } else { std::process::Stdio::piped() })
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {tool}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A few kilobytes at most: within the pipe's buffer, so this does not wait on the tool.
        let _ = std::io::Write::write_all(&mut stdin, input);
    }
    let t0 = std::time::Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(_)) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Err(format!("{tool} {}: {}", args.join(" "), err.trim()));
            }
            Ok(None) if t0.elapsed() < IPTABLES_TIMEOUT => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{tool} {} did not finish within {IPTABLES_TIMEOUT:?}", args.join(" ")));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bridge(name: &str, bridge: &str, subnet: &str, internal: bool) -> Network {
        Network {
            name: name.into(),
            id: String::new(),
            driver: "bridge".into(),
            subnet: subnet.into(),
            gateway: String::new(),
            internal,
            options: Default::default(),
            labels: Default::default(),
            created: 0,
            managed: true,
            plugins: vec![],
            path: Default::default(),
            bridge: bridge.into(),
            dns: true,
        }
    }

    #[test]
    fn the_chains_are_set_in_one_commit_isolating_forwarding_and_masquerading_each_bridge() {
        let nets = [bridge("a", "berth-a", "10.1.0.0/16", false), bridge("i", "berth-i", "10.2.0.0/16", true)];
        let chains = Chains { iso: "BERTH-ISO-x".into(), accept: "BERTH-FWD-x".into(), nat: "BERTH-MASQ-x".into() };
        let text = restore_input(&chains, &nets);
        assert_eq!(
            text,
            "*filter\n:BERTH-ISO-x - [0:0]\n:BERTH-FWD-x - [0:0]\n\
             -A BERTH-ISO-x -i berth-a -o berth-i -j DROP\n\
             -A BERTH-ISO-x -i berth-i ! -o berth-i -j DROP\n\
             -A BERTH-ISO-x -o berth-i ! -i berth-i -j DROP\n\
             -A BERTH-ISO-x -i berth-i -o berth-a -j DROP\n\
             -A BERTH-FWD-x -i berth-a -j ACCEPT\n\
             -A BERTH-FWD-x -o berth-a -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
             -A BERTH-FWD-x -o berth-a -m conntrack --ctstate DNAT -j ACCEPT\n\
             -A BERTH-FWD-x -i berth-i -j ACCEPT\n\
             -A BERTH-FWD-x -o berth-i -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
             -A BERTH-FWD-x -o berth-i -m conntrack --ctstate DNAT -j ACCEPT\n\
             COMMIT\n\
             *nat\n:BERTH-MASQ-x - [0:0]\n\
             -A BERTH-MASQ-x -s 10.1.0.0/16 ! -o berth-a -j MASQUERADE\n\
             COMMIT\n"
        );
        let dir = Path::new("/etc/berth/cni/net.d");
        assert_eq!(nat_chain(dir), chain(dir).replace("ISO", "MASQ"));
        assert_eq!(accept_chain(dir), chain(dir).replace("ISO", "FWD"));
    }
}
