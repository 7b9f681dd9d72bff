//! Container networks through the CNI plugins: the default bridge,
//! published ports reached from the host, user networks that isolate, a
//! container sharing another's network, and nothing left behind.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;

fn daemon_with_busybox() -> Daemon {
    require_tool("runc", "runc");
    require_tool("iptables", "iptables");
    assert!(
        std::path::Path::new("/usr/lib/cni/bridge").exists(),
        "the CNI plugins are missing: install Debian's containernetworking-plugins (scripts/install-test-deps.sh)"
    );
    let d = Daemon::start();
    let spec = ImageSpec::new(vec![busybox_layer()]);
    let path = d.file("busybox.tar", &oci_archive(&[("docker.io/library/busybox:latest", &spec)]));
    d.ok(&["load", "-i", path.to_str().unwrap()]);
    d
}

/// `GET /index.html` on 127.0.0.1:`port`, retried for up to 10 s (the server starts).
fn http_get(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            s.write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        })();
        match attempt {
            Ok(b) if b.contains("200 OK") => return b,
            other => assert!(Instant::now() < deadline, "no page from 127.0.0.1:{port}: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A directory with the page the servers serve.
fn www(d: &Daemon) -> String {
    let dir = d.dir.path().join("www");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "hello from berth\n").unwrap();
    format!("{}:/www:ro", dir.display())
}

/// Whatever a container's networks leave on the machine, named by its id:
/// its namespace and record, address allocations, NAT rules.
fn leftovers(d: &Daemon, id: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(d.state.join("netns/default")).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(id) {
            found.push(e.path().display().to_string());
        }
    }
    for net in std::fs::read_dir("/run/berth/ipam").into_iter().flatten().flatten() {
        for f in std::fs::read_dir(net.path()).into_iter().flatten().flatten() {
            if std::fs::read_to_string(f.path()).unwrap_or_default().contains(id) {
                found.push(f.path().display().to_string());
            }
        }
    }
    let nat = std::process::Command::new("iptables-save").arg("-t").arg("nat").output().unwrap();
    for l in String::from_utf8_lossy(&nat.stdout).lines().filter(|l| l.contains(id)) {
        found.push(l.to_owned());
    }
    found
}

fn wait_no_leftovers(d: &Daemon, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = leftovers(d, id);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "left behind by {id}: {left:?}\n{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn id_of(d: &Daemon, name: &str) -> String {
    d.ok(&["ps", "-a", "-q", "--no-trunc", "--filter", &format!("name=={name}")]).trim().to_owned()
}

#[test]
fn published_ports_reach_the_container_and_nothing_is_left() {
    let d = daemon_with_busybox();
    let www = www(&d);
    // The default network: an address on eth0, the files written by the agent.
    let out = d.ok(&[
        "run",
        "--rm",
        "-h",
        "box1",
        "--add-host",
        "db:10.9.9.9",
        "--dns",
        "10.1.1.1",
        "busybox",
        "sh",
        "-c",
        "busybox ip -4 -o addr show eth0; cat /etc/hostname /etc/hosts /etc/resolv.conf",
    ]);
    assert!(out.contains("eth0") && out.contains("inet 10.77."), "{out}");
    assert!(out.contains("box1\n") && out.contains("10.9.9.9\tdb") && out.contains("nameserver 10.1.1.1"), "{out}");

    // The first run on the default network fills the pool of namespaces attached ahead of
    // time; later runs take one and give it back when they end.
    let pool = |d: &Daemon| {
        std::fs::read_dir(d.state.join("netns/.pool"))
            .map(|r| r.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".json")).count())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while pool(&d) < 4 {
        assert!(Instant::now() < deadline, "the pool did not fill: {}\n{}", pool(&d), d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..3 {
        let o = d.ok(&["run", "--rm", "busybox", "busybox", "ip", "-o", "-4", "addr", "show", "eth0"]);
        assert!(o.contains("inet 10.77."), "{o}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool(&d) != 4 {
        assert!(Instant::now() < deadline, "the pool holds {} after the runs", pool(&d));
        std::thread::sleep(Duration::from_millis(50));
    }

    // A fixed host port, on the host's loopback.
    let port = free_port();
    let p = format!("127.0.0.1:{port}:8080");
    d.ok(&["run", "-d", "--name", "web", "-p", &p, "-v", &www, "busybox", "busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]);
    assert!(http_get(port).contains("hello from berth"));
    // A picked host port, shown by `port`.
    d.ok(&["run", "-d", "--name", "web2", "-p", "8080", "-v", &www, "busybox", "busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]);
    let shown = d.ok(&["port", "web2", "8080"]);
    let picked: u16 = shown.trim().rsplit(':').next().unwrap().parse().unwrap_or_else(|_| panic!("{shown}"));
    assert!(http_get(picked).contains("hello from berth"));
    assert!(d.ok(&["port", "web2"]).contains(&format!("8080/tcp -> 0.0.0.0:{picked}")));

    // -P: every port the image exposes, each on a free host port.
    let ctx = d.dir.path().join("exposing");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nEXPOSE 8080 9090/udp\n").unwrap();
    d.ok(&["build", "-q", "-t", "exposing", ctx.to_str().unwrap()]);
    d.ok(&["run", "-d", "--name", "pall", "-P", "exposing", "sleep", "600"]);
    let all = d.ok(&["port", "pall"]);
    assert!(all.contains("8080/tcp -> 0.0.0.0:") && all.contains("9090/udp -> 0.0.0.0:"), "{all}");
    d.ok(&["rm", "-f", "pall"]);

    // ps and inspect show the ports and the address.
    let ps = d.ok(&["ps"]);
    assert!(ps.contains("PORTS") && ps.contains(&format!("127.0.0.1:{port}->8080/tcp")), "{ps}");
    let j: serde_json::Value = serde_json::from_str(&d.ok(&["inspect", "web"])).unwrap();
    let j = if j.is_array() { j[0].clone() } else { j };
    assert!(j["NetworkSettings"]["Networks"]["bridge"]["IPAddress"].as_str().unwrap().starts_with("10.77."), "{j}");
    assert_eq!(j["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"], port.to_string());

    // UDP: a datagram sent to the host port reaches the container's namespace
    // (busybox's nc has no UDP: the test listens there itself).
    let uport = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let up = format!("127.0.0.1:{uport}:9999/udp");
    d.ok(&["run", "-d", "--name", "udp", "-p", &up, "busybox", "sleep", "600"]);
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.state.join("netns/default").join(format!("{}.json", id_of(&d, "udp")))).unwrap()).unwrap();
    let netns = std::path::PathBuf::from(record["netns"].as_str().unwrap());
    let inside = std::thread::spawn(move || {
        use std::os::fd::AsFd;
        let f = std::fs::File::open(&netns).unwrap();
        rustix::thread::move_into_link_name_space(f.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network)).unwrap();
        std::net::UdpSocket::bind("0.0.0.0:9999").unwrap()
    })
    .join()
    .unwrap();
    inside.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"over udp", ("127.0.0.1", uport)).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = inside.recv_from(&mut buf).expect("no datagram reached the container");
    assert_eq!(&buf[..n], b"over udp");
    d.ok(&["rm", "-f", "udp"]);

    // A container on the default network reaches a server on the host's address (its gateway).
    let host = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let hport = host.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut c, _) = host.accept().unwrap();
        c.write_all(b"from the host\n").unwrap();
    });
    let o = d.ok(&["run", "--rm", "busybox", "sh", "-c", &format!("busybox nc -w 3 10.77.0.1 {hport}")]);
    assert!(o.contains("from the host"), "{o}");
    server.join().unwrap();

    // Bad input: one clear line each, nothing made.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = format!("127.0.0.1:{}:80", busy.local_addr().unwrap().port());
    let o = d.ctl(&["run", "--rm", "-p", &busy_port, "busybox", "true"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("in use"), "{}", String::from_utf8_lossy(&o.stderr));
    let taken = d.ctl(&["run", "-d", "--name", "web3", "-p", &p, "busybox", "sleep", "30"]);
    assert!(!taken.status.success());
    let err = String::from_utf8_lossy(&taken.stderr).into_owned();
    assert!(err.contains("already published"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    for bad in ["80:", "x:80", "1.2.3:80:80", "80/sctp", "70000"] {
        let o = d.ctl(&["run", "--rm", "-p", bad, "busybox", "true"]);
        assert!(!o.status.success(), "-p {bad} accepted");
        assert!(String::from_utf8_lossy(&o.stderr).contains("invalid -p"), "{bad}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let unknown = d.ctl(&["run", "--rm", "--net", "no-such-net", "busybox", "true"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not found"), "{}", String::from_utf8_lossy(&unknown.stderr));

    let ids = [id_of(&d, "web"), id_of(&d, "web2")];
    d.ok(&["rm", "-f", "web", "web2"]);
    for id in &ids {
        wait_no_leftovers(&d, id);
    }

    // A graceful stop releases the pool: its namespaces, records and addresses.
    let pooled: Vec<String> = std::fs::read_dir(d.state.join("netns/.pool"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().strip_suffix(".json").map(str::to_owned))
        .collect();
    assert!(!pooled.is_empty());
    let mut d = d;
    let mut child = d.child.take().unwrap();
    rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::TERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "berthd did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in &pooled {
        let left = leftovers(&d, p);
        let pool_left: Vec<String> = left
            .into_iter()
            .chain(std::fs::read_dir(d.state.join("netns/.pool")).unwrap().flatten().map(|e| e.path().display().to_string()))
            .collect();
        assert!(pool_left.is_empty(), "the pool is not released: {pool_left:?}");
    }
}

#[test]
fn user_networks_isolate_and_a_container_can_share_another_s_network() {
    let d = daemon_with_busybox();
    let www = www(&d);
    let tag = free_subnet_tag(&[201, 202, 203, 205, 206]);
    let (a, b) = (format!("tnet{tag}a"), format!("tnet{tag}b"));
    let (sa, sb) = (format!("10.201.{tag}.0/24"), format!("10.202.{tag}.0/24"));
    d.ok(&["network", "create", "--subnet", &sa, &a]);
    d.ok(&["network", "create", "--subnet", &sb, &b]);
    let ls = d.ok(&["network", "ls"]);
    assert!(ls.contains(&a) && ls.contains(&sa) && ls.contains("bridge"), "{ls}");
    // Overlap and a taken name: refused.
    let o = d.ctl(&["network", "create", "--subnet", &format!("10.201.{tag}.128/25"), "tnet-overlap"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("overlaps"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!d.ctl(&["network", "create", &a]).status.success());

    d.ok(&[
        "run",
        "-d",
        "--name",
        "srv",
        "--net",
        &a,
        "--network-alias",
        "db",
        "-v",
        &www,
        "busybox",
        "busybox",
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/www",
    ]);
    let ip = d.ok(&["exec", "srv", "busybox", "hostname", "-i"]).trim().to_owned();
    // Its name, its alias and its short id resolve on its network (the agent's server on the gateway)...
    let short = id_of(&d, "srv")[..12].to_owned();
    for name in ["srv", "db", short.as_str()] {
        let o = d.ok(&["run", "--rm", "--net", &a, "busybox", "busybox", "nslookup", name]);
        assert!(o.contains(&format!("Address: {ip}")), "{name}: {o}");
    }
    let o = d.ok(&["run", "--rm", "--net", &a, "busybox", "busybox", "ping", "-c", "1", "-W", "2", "db"]);
    assert!(o.contains("1 packets received"), "{o}");
    // ... and not on another.
    let o = d.ctl(&["run", "--rm", "--net", &b, "busybox", "busybox", "nslookup", "srv"]);
    assert!(!String::from_utf8_lossy(&o.stdout).contains(&ip), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(ip.starts_with(&format!("10.201.{tag}.")), "{ip}");
    // busybox-static's wget crashes (a glibc NSS lookup in a static binary): nc speaks HTTP here.
    let get = format!("printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 2 {ip} 8080");
    // Same network: reached (the server may take a moment to listen).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = d.ctl(&["run", "--rm", "--net", &a, "busybox", "sh", "-c", &get]);
        if String::from_utf8_lossy(&o.stdout).contains("200 OK") {
            assert!(String::from_utf8_lossy(&o.stdout).contains("hello from berth"));
            break;
        }
        assert!(Instant::now() < deadline, "not reached on its own network: {}", String::from_utf8_lossy(&o.stderr));
        std::thread::sleep(Duration::from_millis(200));
    }
    // Another network: not reached.
    let o = d.ctl(&["run", "--rm", "--net", &b, "busybox", "sh", "-c", &get]);
    assert!(!String::from_utf8_lossy(&o.stdout).contains("200 OK"), "reached from another network");
    // Sharing srv's network: same address, its server on localhost.
    let o = d.ok(&[
        "run",
        "--rm",
        "--net",
        "container:srv",
        "busybox",
        "sh",
        "-c",
        "busybox hostname -i; printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 2 127.0.0.1 8080",
    ]);
    assert!(o.contains(&ip) && o.contains("hello from berth"), "{o}");

    // A build's RUN steps: on the default network, on none, and on this one, where srv's name resolves.
    let ctx = d.dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nRUN busybox ip -o -4 addr > /addrs && busybox nslookup srv > /srv || true\n")
        .unwrap();
    let ctx = ctx.to_str().unwrap();
    d.ok(&["build", "-q", "--network", &a, "-t", "onnet", ctx]);
    let o = d.ok(&["run", "--rm", "--net", "none", "onnet", "cat", "/addrs", "/srv"]);
    assert!(o.contains("eth0") && o.contains(&format!("Address: {ip}")), "{o}");
    d.ok(&["build", "-q", "--network", "none", "-t", "nonet", ctx]);
    let o = d.ok(&["run", "--rm", "--net", "none", "nonet", "cat", "/addrs"]);
    assert!(!o.contains("eth0"), "{o}");
    d.ok(&["build", "-q", "-t", "defnet", ctx]);
    let o = d.ok(&["run", "--rm", "--net", "none", "defnet", "cat", "/addrs"]);
    assert!(o.contains("eth0") && o.contains("inet 10.77."), "{o}");

    // connect adds an interface to a running container, disconnect takes it away; the last network stays.
    // An alias that is not a host name is refused, as at create.
    let bad = d.ctl(&["network", "connect", "--alias", "not a/host", &b, "srv"]);
    assert!(!bad.status.success() && stderr(&bad).contains("is not a host name"), "{}", stderr(&bad));
    d.ok(&["network", "connect", "--alias", "two", &b, "srv"]);
    let addrs = d.ok(&["exec", "srv", "busybox", "ip", "-o", "-4", "addr"]);
    assert!(addrs.contains("eth1") && addrs.contains(&format!("10.202.{tag}.")), "{addrs}");
    let o = d.ok(&["run", "--rm", "--net", &b, "busybox", "busybox", "nslookup", "two"]);
    assert!(o.contains(&format!("Address: 10.202.{tag}.")), "{o}");
    assert!(!d.ctl(&["network", "connect", &b, "srv"]).status.success(), "connected twice");
    d.ok(&["network", "disconnect", &b, "srv"]);
    let addrs = d.ok(&["exec", "srv", "busybox", "ip", "-o", "-4", "addr"]);
    assert!(!addrs.contains("eth1"), "{addrs}");
    let o = d.ctl(&["network", "disconnect", &a, "srv"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("last network"), "{}", String::from_utf8_lossy(&o.stderr));

    // An internal network: no route out, not even to the host's other networks.
    let i = format!("tnet{tag}i");
    let _ = d.ctl(&["network", "rm", &i]);
    d.ok(&["network", "create", "--internal", "--subnet", &format!("10.203.{tag}.0/24"), &i]);
    // A server on the host's address: reached from the default network (above), not from here.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let probe = format!("busybox ip route; busybox nc -w 2 10.77.0.1 {} </dev/null && echo REACHED", listener.local_addr().unwrap().port());
    let o = d.ctl(&["run", "--rm", "--net", &i, "busybox", "sh", "-c", &probe]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!out.contains("default") && !out.contains("REACHED"), "{out}");
    d.ok(&["network", "rm", &i]);

    // A macvlan network (on the interface of the default route): an address, no published port.
    let mv = format!("tnet{tag}m");
    let _ = d.ctl(&["network", "rm", &mv]);
    d.ok(&["network", "create", "-d", "macvlan", "--subnet", &format!("10.205.{tag}.0/24"), &mv]);
    let o = d.ok(&["run", "--rm", "--net", &mv, "busybox", "busybox", "ip", "-o", "-4", "addr"]);
    assert!(o.contains(&format!("inet 10.205.{tag}.")), "{o}");
    let o = d.ctl(&["run", "--rm", "--net", &mv, "-p", "8080", "busybox", "true"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("publishes no port"), "{}", String::from_utf8_lossy(&o.stderr));
    d.ok(&["network", "rm", &mv]);

    // A CNI list dropped in the conf dir is a network, used by its name (and not removed by the agent).
    let own = format!("tnet{tag}own");
    let file = d.net_conf.join(format!("{own}.conflist"));
    let list = serde_json::json!({"cniVersion": "1.0.0", "name": own, "plugins": [{"type": "bridge", "bridge": format!("tb{tag}own"),
        "isGateway": true, "ipam": {"type": "host-local", "ranges": [[{"subnet": format!("10.206.{tag}.0/24")}]]}}]});
    std::fs::write(&file, serde_json::to_vec(&list).unwrap()).unwrap();
    let ls = d.ok(&["network", "ls"]);
    assert!(ls.contains(&own) && ls.contains(&format!("10.206.{tag}.0/24")), "{ls}");
    let o = d.ok(&["run", "--rm", "--net", &own, "busybox", "busybox", "ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(o.contains(&format!("inet 10.206.{tag}.")), "{o}");
    let o = d.ctl(&["network", "rm", &own]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("did not make"), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_file(&file).unwrap();
    let _ = std::process::Command::new("ip").args(["link", "delete", &format!("tb{tag}own")]).status();

    // In use: refused; then removed.
    let o = d.ctl(&["network", "rm", &a]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("containers attached"), "{}", String::from_utf8_lossy(&o.stderr));
    let id = id_of(&d, "srv");
    d.ok(&["rm", "-f", "srv"]);
    wait_no_leftovers(&d, &id);
    let bridge_of = |n: &str| {
        let j: serde_json::Value = serde_json::from_str(&d.ok(&["network", "inspect", n])).unwrap();
        j[0]["Bridge"].as_str().unwrap().to_owned()
    };
    let bridges = [bridge_of(&a), bridge_of(&b)];
    d.ok(&["network", "rm", &a, &b]);
    for br in &bridges {
        assert!(!std::path::Path::new("/sys/class/net").join(br).exists(), "bridge {br} stays");
    }
    assert!(!d.ok(&["network", "ls", "-q"]).contains(&a));
}

#[test]
fn a_container_keeps_its_address_and_port_across_an_agent_crash() {
    let mut d = daemon_with_busybox();
    let www = www(&d);
    let port = free_port();
    let p = format!("127.0.0.1:{port}:8080");
    d.ok(&["run", "-d", "--name", "web", "-p", &p, "-v", &www, "busybox", "busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]);
    d.ok(&["run", "-d", "--name", "short", "busybox", "sleep", "1"]);
    let ip = d.ok(&["exec", "web", "busybox", "hostname", "-i"]).trim().to_owned();
    let short = id_of(&d, "short");
    d.kill9();
    // `short` exits and is... left for the agent to find when it is back.
    std::thread::sleep(Duration::from_millis(1500));
    d.spawn();
    assert!(http_get(port).contains("hello from berth"));
    assert_eq!(d.ok(&["exec", "web", "busybox", "hostname", "-i"]).trim(), ip);
    assert!(d.ok(&["port", "web"]).contains(&port.to_string()));
    // The one that ended while the agent was down gave its network back.
    wait_no_leftovers(&d, &short);
    let web = id_of(&d, "web");
    d.ok(&["rm", "-f", "web", "short"]);
    wait_no_leftovers(&d, &web);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_errors_carry_the_right_status() {
    use berth_api::v1::{self, containers_client::ContainersClient, networks_client::NetworksClient, tasks_client::TasksClient};
    use tonic::Code;
    let d = tokio::task::spawn_blocking(daemon_with_busybox).await.unwrap();
    let ch = d.channel().await;
    let mut n = NetworksClient::new(ch.clone());
    let mut c = ContainersClient::new(ch.clone());
    let mut t = TasksClient::new(ch);
    let tag = free_subnet_tag(&[204]);
    let name = format!("tnet{tag}e");
    let _ = n.remove(v1::RemoveNetworkRequest { name: name.clone() }).await;
    let create = |name: &str, subnet: &str| v1::CreateNetworkRequest { name: name.into(), subnet: subnet.into(), ..Default::default() };
    n.create(create(&name, &format!("10.204.{tag}.0/24"))).await.unwrap();
    let code = |r: Result<tonic::Response<v1::CreateNetworkResponse>, tonic::Status>| r.unwrap_err().code();
    assert_eq!(code(n.create(create(&name, "")).await), Code::AlreadyExists, "a taken name");
    assert_eq!(code(n.create(create("tnet-o", &format!("10.204.{tag}.0/25"))).await), Code::AlreadyExists, "an overlap");
    assert_eq!(code(n.create(create("bad name", "")).await), Code::InvalidArgument);
    assert_eq!(code(n.create(create("tnet-x", "10.0.0.1/8")).await), Code::InvalidArgument, "host bits");
    assert_eq!(code(n.create(create("host", "")).await), Code::InvalidArgument, "a mode's name");
    assert_eq!(n.get(v1::GetNetworkRequest { name: "nosuch".into() }).await.unwrap_err().code(), Code::NotFound);
    let rm_default = n.remove(v1::RemoveNetworkRequest { name: "bridge".into() }).await;
    assert_eq!(rm_default.unwrap_err().code(), Code::FailedPrecondition);

    let container = |name: &str, config: v1::ContainerConfig| v1::CreateContainerRequest {
        image: "busybox".into(),
        name: name.into(),
        config: Some(v1::ContainerConfig { command: vec!["sleep".into(), "300".into()], command_set: true, ..config }),
        ..Default::default()
    };
    let on = |net: &str| v1::ContainerConfig {
        networks: vec![v1::NetworkEndpoint { network: net.into(), ..Default::default() }],
        ..Default::default()
    };
    assert_eq!(c.create(container("", on("nosuch"))).await.unwrap_err().code(), Code::NotFound);
    let bad_mode = v1::ContainerConfig { network: "bogus:x".into(), ..Default::default() };
    assert_eq!(c.create(container("", bad_mode)).await.unwrap_err().code(), Code::InvalidArgument);
    let none_port = v1::ContainerConfig {
        network: "none".into(),
        ports: vec![v1::PortMapping { container_port: 80, ..Default::default() }],
        ..Default::default()
    };
    assert_eq!(c.create(container("", none_port)).await.unwrap_err().code(), Code::InvalidArgument);
    let out_of_subnet = v1::ContainerConfig {
        networks: vec![v1::NetworkEndpoint { network: name.clone(), ipv4_address: "10.99.99.9".into(), ..Default::default() }],
        ..Default::default()
    };
    assert_eq!(c.create(container("", out_of_subnet)).await.unwrap_err().code(), Code::InvalidArgument);

    // A host port another container publishes: the second start is refused, and nothing of it stays.
    let port = free_port();
    let publish = |p: u16| v1::ContainerConfig {
        ports: vec![v1::PortMapping { host_ip: "127.0.0.1".into(), host_port: p.into(), container_port: 80, protocol: "tcp".into() }],
        ..Default::default()
    };
    let first = c.create(container("p1", publish(port))).await.unwrap().into_inner().container.unwrap();
    let second = c.create(container("p2", publish(port))).await.unwrap().into_inner().container.unwrap();
    let start = |id: &str| v1::StartTaskRequest { container_id: id.into(), exec_id: String::new() };
    t.start(start(&first.id)).await.unwrap();
    assert_eq!(t.start(start(&second.id)).await.unwrap_err().code(), Code::AlreadyExists);
    let d2 = &d;
    assert!(leftovers(d2, &second.id).is_empty(), "{:?}", leftovers(d2, &second.id));
    // In use: FailedPrecondition.
    let on_net = c.create(container("onnet", on(&name))).await.unwrap().into_inner().container.unwrap();
    t.start(start(&on_net.id)).await.unwrap();
    assert_eq!(n.remove(v1::RemoveNetworkRequest { name: name.clone() }).await.unwrap_err().code(), Code::FailedPrecondition);
    for id in [&first.id, &second.id, &on_net.id] {
        c.delete(v1::DeleteContainerRequest { id: id.clone(), force: true, ..Default::default() }).await.unwrap();
    }
    n.remove(v1::RemoveNetworkRequest { name }).await.unwrap();
    tokio::task::spawn_blocking(move || drop(d)).await.unwrap();
}

/// The namespace a container's attachment record names.
fn netns_of(d: &Daemon, name: &str) -> String {
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.state.join("netns/default").join(format!("{}.json", id_of(d, name)))).unwrap()).unwrap();
    record["netns"].as_str().unwrap().to_owned()
}

/// The namespaces the pool's records name.
fn pool_namespaces(d: &Daemon) -> Vec<String> {
    std::fs::read_dir(d.state.join("netns/.pool"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| serde_json::from_slice::<serde_json::Value>(&std::fs::read(e.path()).ok()?).ok())
        .filter_map(|v| v["netns"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_namespace_goes_back_to_the_pool_only_as_it_came() {
    let mut d = daemon_with_busybox();
    let tag = free_subnet_tag(&[207]);
    // Fill the pool.
    d.ok(&["run", "--rm", "busybox", "true"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while pool_namespaces(&d).len() < 4 {
        assert!(Instant::now() < deadline, "the pool did not fill");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A plain container comes from the pool and goes back to it.
    d.ok(&["run", "-d", "--name", "plain", "busybox", "sleep", "600"]);
    let plain = netns_of(&d, "plain");
    assert!(plain.contains("/.pool/"), "{plain}");
    // Shared with another container: not given back while that one runs in it.
    d.ok(&["run", "-d", "--name", "owner", "busybox", "sleep", "600"]);
    d.ok(&["run", "-d", "--name", "joiner", "--net", "container:owner", "busybox", "sleep", "600"]);
    let owner = netns_of(&d, "owner");
    // Connected to another network: not given back either.
    let x = format!("tnet{tag}p");
    let _ = d.ctl(&["network", "rm", &x]);
    d.ok(&["network", "create", "--subnet", &format!("10.207.{tag}.0/24"), &x]);
    d.ok(&["run", "-d", "--name", "connected", "busybox", "sleep", "600"]);
    let connected = netns_of(&d, "connected");
    d.ok(&["network", "connect", &x, "connected"]);
    d.ok(&["rm", "-f", "owner", "connected"]);
    std::thread::sleep(Duration::from_millis(500));
    let pool = pool_namespaces(&d);
    assert!(!pool.contains(&owner), "a shared namespace went back to the pool");
    assert!(!pool.contains(&connected), "a namespace on another network went back to the pool");
    // The joiner runs on (its namespace's networks went with their owner, as with docker).
    assert!(d.ok(&["ps"]).contains("joiner"));
    // After a crash and a restart, a running container's pooled namespace stays its own,
    // even when the crash came as the container took it: its record saved, the pool's
    // record of that namespace not yet removed (planted here).
    let record = d.state.join("netns/default").join(format!("{}.json", id_of(&d, "plain")));
    d.kill9();
    let copy = d.state.join("netns/.pool/crash-copy.json");
    std::fs::copy(&record, &copy).unwrap();
    d.spawn();
    assert!(std::path::Path::new(&plain).exists(), "{plain} was removed at the restart");
    assert!(!copy.exists(), "the pool's stale record of a taken namespace stayed");
    assert!(!pool_namespaces(&d).contains(&plain), "the pool still names {plain}");
    let o = d.ok(&["run", "--rm", "--net", "container:plain", "busybox", "busybox", "ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(o.contains("inet 10.77."), "{o}");
    d.ok(&["rm", "-f", "plain", "joiner"]);
    d.ok(&["network", "rm", &x]);
}

#[test]
fn a_chosen_gateway_and_prune() {
    require_tool("runc", "runc");
    // The daemon's conf dir is its own: prune cannot take other tests' networks.
    let d = Daemon::start();
    let spec = ImageSpec::new(vec![busybox_layer()]);
    let path = d.file("busybox.tar", &oci_archive(&[("docker.io/library/busybox:latest", &spec)]));
    d.ok(&["load", "-i", path.to_str().unwrap()]);
    let tag = free_subnet_tag(&[208, 209]);
    let (kept, gone) = (format!("tnet{tag}k"), format!("tnet{tag}g"));
    d.ok(&["network", "create", "--subnet", &format!("10.209.{tag}.0/24"), &kept]);
    d.ok(&["run", "-d", "--name", "user", "--net", &kept, "busybox", "sleep", "600"]);
    // A gateway of one's choosing.
    d.ok(&["network", "create", "--subnet", &format!("10.208.{tag}.0/24"), "--gateway", &format!("10.208.{tag}.254"), &gone]);
    let o = d.ok(&["run", "--rm", "--net", &gone, "busybox", "busybox", "ip", "route"]);
    assert!(o.contains(&format!("default via 10.208.{tag}.254")), "{o}");
    // prune: the unused networks the agent made go; one in use and the default stay.
    let pruned = d.ok(&["network", "prune"]);
    assert!(pruned.contains(&gone) && !pruned.contains(&kept), "{pruned}");
    let ls = d.ok(&["network", "ls", "-q"]);
    assert!(!ls.contains(&gone) && ls.contains(&kept) && ls.contains("bridge"), "{ls}");
    d.ok(&["rm", "-f", "user"]);
    d.ok(&["network", "rm", &kept]);
}

/// The host interfaces enslaved to `bridge` (one veth per container attached).
fn ports_of(bridge: &str) -> Vec<String> {
    let o = std::process::Command::new("ip").args(["-o", "link", "show", "master", bridge]).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap().to_owned())
        .collect()
}

/// Addresses host-local still holds in the IPAM directory of network `net`.
fn held_addresses(net: &str) -> Vec<String> {
    std::fs::read_dir(format!("/run/berth/ipam/{net}"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
        .collect()
}

#[test]
fn fifty_containers_on_a_user_network_leave_no_interface_address_or_rule() {
    let d = daemon_with_busybox();
    let tag = free_subnet_tag(&[210, 211]);
    let (net, other, bridge) = (format!("tnet{tag}f"), format!("tnet{tag}o"), format!("tbr{tag}f"));
    // Options: the bridge's name and the interfaces' MTU.
    d.ok(&[
        "network",
        "create",
        "--subnet",
        &format!("10.210.{tag}.0/24"),
        "-o",
        &format!("com.docker.network.bridge.name={bridge}"),
        "-o",
        "mtu=1400",
        &net,
    ]);
    d.ok(&["network", "create", "--subnet", &format!("10.211.{tag}.0/24"), &other]);
    let bad = d.ctl(&["network", "create", "-o", "colour=blue", &format!("tnet{tag}x")]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("colour"), "{bad:?}");

    // A fixed address and search domain; a container on two networks.
    let fixed = format!("10.210.{tag}.200");
    d.ok(&["run", "-d", "--name", "fixed", "--net", &net, "--ip", &fixed, "--dns-search", "corp.example", "busybox", "sleep", "600"]);
    assert_eq!(d.ok(&["exec", "fixed", "busybox", "hostname", "-i"]).trim(), fixed);
    let resolv = d.ok(&["exec", "fixed", "cat", "/etc/resolv.conf"]);
    assert!(resolv.lines().any(|l| l == "search corp.example"), "{resolv}");
    assert_eq!(d.ok(&["exec", "fixed", "cat", "/sys/class/net/eth0/mtu"]).trim(), "1400");
    let taken = d.ctl(&["run", "-d", "--name", "again", "--net", &net, "--ip", &fixed, "busybox", "sleep", "600"]);
    assert!(!taken.status.success(), "a second container took {fixed}");
    d.ok(&["run", "-d", "--name", "both", "--net", &net, "--net", &other, "busybox", "sleep", "600"]);
    let addrs = d.ok(&["exec", "both", "busybox", "ip", "-o", "-4", "addr"]);
    assert!(addrs.contains(&format!("10.210.{tag}.")) && addrs.contains(&format!("10.211.{tag}.")), "{addrs}");

    // Forty-eight more, five of them publishing a port.
    let names: Vec<String> = (0..48).map(|i| if i < 5 { format!("p{i}") } else { format!("n{i}") }).collect();
    std::thread::scope(|s| {
        for chunk in names.chunks(12) {
            let (d, net) = (&d, &net);
            s.spawn(move || {
                for n in chunk {
                    let mut args = vec!["run", "-d", "--name", n.as_str(), "--net", net.as_str()];
                    if n.starts_with('p') {
                        args.extend(["-p", "8080"]);
                    }
                    args.extend(["busybox", "sleep", "600"]);
                    d.ok(&args);
                }
            });
        }
    });
    let mut all: Vec<String> = names.clone();
    all.extend(["fixed".into(), "both".into()]);
    assert_eq!(ports_of(&bridge).len(), 50, "{:?}", ports_of(&bridge));
    assert_eq!(held_addresses(&net).len(), 50, "{:?}", held_addresses(&net));
    let ips: Vec<String> = all.iter().map(|n| d.ok(&["exec", n, "busybox", "ip", "-o", "-4", "addr", "show", "eth0"])).collect();
    let ips: Vec<String> = ips.iter().map(|l| l.split_whitespace().nth(3).unwrap().split('/').next().unwrap().to_owned()).collect();
    let ids: Vec<String> = all.iter().map(|n| id_of(&d, n)).collect();
    let rules = || String::from_utf8_lossy(&std::process::Command::new("iptables-save").output().unwrap().stdout).into_owned();
    // A rule names an address as IP/32, or as a port's destination (IP:PORT).
    let names = |line: &str, ip: &str| line.contains(&format!("{ip}/32 ")) || line.contains(&format!("{ip}:"));
    let before = rules();
    let published = before.lines().filter(|l| ips.iter().any(|ip| names(l, ip))).count();
    assert!(published >= 5, "the five published ports' rules name their containers' addresses:\n{before}");

    let mut args = vec!["rm", "-f"];
    args.extend(all.iter().map(String::as_str));
    d.ok(&args);
    // No host interface on the bridge, no address held, no rule naming an
    // address or an id, no namespace: on either network.
    let left = || {
        let after = rules();
        let mut left: Vec<String> = ports_of(&bridge);
        left.extend(held_addresses(&net).into_iter().chain(held_addresses(&other)));
        for (ip, id) in ips.iter().zip(&ids) {
            left.extend(after.lines().filter(|l| names(l, ip) || l.contains(id.as_str())).map(str::to_owned));
            left.extend(leftovers(&d, id));
        }
        left
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !left().is_empty() {
        assert!(Instant::now() < deadline, "left behind: {:#?}", left());
        std::thread::sleep(Duration::from_millis(200));
    }
    d.ok(&["network", "rm", &net, &other]);
}

/// A network namespace standing for a machine beyond the host, reached through a veth
/// pair on 198.51.100.0/30 (TEST-NET-2) and with no route to the containers' subnets:
/// what answers there from a container was masqueraded on its way out.
struct Outside {
    ns: String,
    host_if: String,
}

impl Outside {
    fn new() -> Outside {
        let pid = std::process::id();
        let (ns, host_if, peer) = (format!("berth-out-{pid}"), format!("bout{pid}"), format!("boutp{pid}"));
        let ip = |args: &[&str]| {
            let out = std::process::Command::new("ip").args(args).output().unwrap();
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        ip(&["netns", "add", &ns]);
        let outside = Outside { ns: ns.clone(), host_if: host_if.clone() };
        ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &ns]);
        ip(&["addr", "add", "198.51.100.1/30", "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&["-n", &ns, "addr", "add", "198.51.100.2/30", "dev", &peer]);
        ip(&["-n", &ns, "link", "set", &peer, "up"]);
        outside
    }

    /// A server on 198.51.100.2:`port` that writes each peer's address to its output,
    /// for `secs` seconds.
    fn serve(&self, port: u16, secs: u32) -> std::process::Child {
        let code = format!(
            "import socket, sys, time\n\
             s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('198.51.100.2', {port})); s.listen(8); s.settimeout(1)\n\
             end = time.time() + {secs}\n\
             while time.time() < end:\n    \
                 try:\n        c, a = s.accept()\n    except OSError:\n        continue\n    \
                 print(a[0], flush=True); c.sendall(b'hello from outside\\n'); c.close()\n"
        );
        std::process::Command::new("ip")
            .args(["netns", "exec", &self.ns, "python3", "-c", &code])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["link", "del", &self.host_if]).status();
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// FORWARD's policy set to DROP (as on a host with docker) for as long as it lives, then
/// set back to what it was.
struct ForwardDrops(String);

impl ForwardDrops {
    fn new() -> ForwardDrops {
        let rules = std::process::Command::new("iptables").args(["-w", "5", "-S", "FORWARD"]).output().unwrap();
        let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
        let was = rules.lines().find_map(|l| l.strip_prefix("-P FORWARD ")).unwrap_or("ACCEPT").trim().to_owned();
        assert!(std::process::Command::new("iptables").args(["-w", "5", "-P", "FORWARD", "DROP"]).status().unwrap().success());
        ForwardDrops(was)
    }
}

impl Drop for ForwardDrops {
    fn drop(&mut self) {
        let _ = std::process::Command::new("iptables").args(["-w", "5", "-P", "FORWARD", &self.0]).status();
    }
}

#[test]
fn where_forward_drops_a_container_reaches_beyond_the_host_with_its_address_and_is_reached_by_its_ports_only() {
    require_tool("python3", "python3");
    let d = daemon_with_busybox();
    let outside = Outside::new();
    let mut server = outside.serve(9999, 30);
    // Every forwarded packet passes by the agent's rules alone.
    let _drops = ForwardDrops::new();
    // The default network: out through the host, masqueraded (the outside has no route
    // back to the container's subnet, so an answer at all says so).
    let mut said = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !said.contains("hello from outside") {
        assert!(Instant::now() < deadline, "no answer from outside: {said:?}\n{}", d.log());
        said = String::from_utf8_lossy(&d.ctl(&["run", "--rm", "busybox", "busybox", "nc", "-w", "3", "198.51.100.2", "9999"]).stdout)
            .into_owned();
    }
    // A network the agent makes is masqueraded too; an internal one has no way out.
    let t = free_subnet_tag(&[231, 232]);
    d.ok(&["network", "create", "--subnet", &format!("10.231.{t}.0/24"), "outnet"]);
    d.ok(&["network", "create", "--internal", "--subnet", &format!("10.232.{t}.0/24"), "innet"]);
    let on = |net: &str| {
        let out = d.ctl(&["run", "--rm", "--net", net, "busybox", "busybox", "nc", "-w", "3", "198.51.100.2", "9999"]);
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    assert!(on("outnet").contains("hello from outside"), "{}", d.log());
    let inside = on("innet");
    assert!(!inside.contains("hello from outside"), "an internal network reached out: {inside}");
    // From outside, a published port reaches its container; the container's own address
    // does not, even with a route to it through the host.
    let port = free_port().to_string();
    let publish = format!("{port}:7777");
    d.ok(&["run", "-d", "--name", "srv", "--net", "outnet", "-p", &publish, "busybox", "busybox", "httpd", "-f", "-p", "7777", "-h", "/"]);
    let line = d.ok(&["exec", "srv", "busybox", "ip", "-o", "-4", "addr", "show", "eth0"]);
    let addr = line.split_whitespace().nth(3).unwrap().split('/').next().unwrap().to_owned();
    let route = ["-n", &outside.ns, "route", "add", &format!("10.231.{t}.0/24"), "via", "198.51.100.1"];
    let out = std::process::Command::new("ip").args(route).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let connects = |addr: &str, port: &str| {
        let code = format!("import socket; socket.create_connection(('{addr}', {port}), timeout=2).close()");
        std::process::Command::new("ip").args(["netns", "exec", &outside.ns, "python3", "-c", &code]).output().unwrap().status.success()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !connects("198.51.100.1", &port) {
        assert!(Instant::now() < deadline, "the published port is not reached from outside\n{}", d.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!connects(&addr, "7777"), "the container was reached from outside at its own address");
    d.ok(&["rm", "-f", "srv"]);
    d.ok(&["network", "rm", "outnet", "innet"]);
    let _ = server.kill();
    let out = server.wait_with_output().unwrap();
    let peers = String::from_utf8_lossy(&out.stdout);
    assert!(!peers.is_empty() && peers.lines().all(|p| p == "198.51.100.1"), "every peer is the host's address: {peers}");
}
