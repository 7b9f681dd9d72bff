//! Pull and push against a real registry: Debian's docker-registry (the CNCF
//! distribution registry) on 127.0.0.1, with and without htpasswd auth.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn daemon_with_image() -> Daemon {
    let d = Daemon::start();
    let spec = ImageSpec::new(vec![busybox_layer(), layer(&[Entry::File("etc/motd".into(), b"from the registry\n".to_vec(), 0o644)])]);
    let path = d.file("bb.tar", &oci_archive(&[("docker.io/library/busybox:latest", &spec)]));
    d.ok(&["load", "-i", path.to_str().unwrap()]);
    d
}

/// berthctl with its own docker config directory.
fn ctl_env(d: &Daemon, config: &Path, args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berthctl"));
    cmd.args(args).env("BERTH_ADDRESS", &d.socket).env("DOCKER_CONFIG", config);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(data) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(data).unwrap();
    }
    wait_output(child, Duration::from_secs(120))
}

fn digest_of(d: &Daemon, name: &str) -> String {
    d.inspect("default", name)["Digest"].as_str().unwrap().to_owned()
}

#[test]
fn run_and_create_pull_an_image_that_is_not_here() {
    let reg = Registry::start(None);
    let d = daemon_with_image();
    let name = format!("{}/x/busybox:1", reg.addr);
    d.ok(&["tag", "busybox", &name]);
    d.ok(&["push", "-q", &name]);
    d.ok(&["rmi", &name, "busybox"]);
    // --pull never refuses, saying why.
    let out = d.ctl(&["run", "--rm", "--pull", "never", &name, "echo", "hi"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("--pull never"), "{}", stderr(&out));
    // The default pulls it (its progress on standard error), then runs it.
    let out = d.ctl(&["run", "--rm", "--net", "none", &name, "echo", "hi"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hi\n");
    assert!(stderr(&out).contains("pulling it"), "{}", stderr(&out));
    // Present now: nothing is pulled.
    let out = d.ctl(&["run", "--rm", "--net", "none", &name, "echo", "again"]);
    assert_eq!(stdout(&out), "again\n");
    assert_eq!(stderr(&out), "");
    // --pull always asks the registry each time; -q keeps it quiet.
    let out = d.ctl(&["create", "-q", "--pull", "always", "--net", "none", &name, "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    d.ok(&["rm", stdout(&out).trim()]);
    // create pulls what is missing too.
    d.ok(&["rmi", &name]);
    let id = d.ok(&["create", "--net", "none", &name, "true"]);
    d.ok(&["rm", id.trim()]);
    // A name no registry has: the pull's error.
    let out = d.ctl(&["run", "--rm", &format!("{}/x/nothing:1", reg.addr), "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
}

#[test]
fn push_then_pull_gives_the_same_image_and_it_runs() {
    let reg = Registry::start(None);
    let d = daemon_with_image();
    let name = format!("{}/team/busybox:v1", reg.addr);
    d.ok(&["tag", "busybox", &name]);
    let pushed = d.ok(&["push", "-q", &name]).trim().to_owned();
    assert!(pushed.starts_with("sha256:"), "{pushed}");
    // A second push finds every blob there already.
    let again = d.ok(&["push", &name]);
    assert!(again.contains("Layer already exists") && !again.contains("Pushing"), "{again}");
    // Remove it locally: nothing is left; pull it back.
    d.ok(&["rmi", &name, "busybox"]);
    assert!(d.blobs().is_empty());
    let out = d.ok(&["pull", &name]);
    assert!(out.contains(&format!("Digest: {pushed}")), "{out}");
    assert_eq!(digest_of(&d, &name), pushed);
    assert_eq!(d.ok(&["run", "--rm", &name, "cat", "/etc/motd"]), "from the registry\n");
    // An independent client reads what Berth pushed.
    require_tool("skopeo", "skopeo");
    let inspect = run_ok(Command::new("skopeo").args(["inspect", "--tls-verify=false", &format!("docker://{name}")]));
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(v["Digest"], pushed);
    // The same layers pushed to another repository of the registry are mounted, not uploaded.
    let other = format!("{}/other/busybox:v1", reg.addr);
    d.ok(&["tag", &name, &other]);
    let out = d.ok(&["push", &other]);
    assert!(out.contains("Mounted from another repository") && !out.contains("Pushing"), "{out}");
    // Pulling again fetches nothing, and says so once per blob, in docker's words.
    let out = d.ok(&["pull", &name]);
    assert!(!out.contains("Downloading"), "{out}");
    let said: Vec<&str> = out.lines().filter(|l| l.contains("Already exists")).collect();
    let unique: std::collections::HashSet<&str> = said.iter().copied().collect();
    assert!(!said.is_empty() && said.len() == unique.len(), "{out}");
    // A login to a registry that asks for nothing succeeds, as docker's does (-p too).
    let config = d.dir.path().join("docker-config");
    let out = ctl_env(&d, &config, &["login", "-u", "someone", "-p", "pw", &reg.addr], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "Login Succeeded\n");
    assert!(stderr(&out).contains("insecure"), "{}", stderr(&out));
    assert!(config.join("config.json").exists());
    // Unknown tags and repositories are NotFound, with nothing left behind.
    let out = d.ctl(&["pull", &format!("{}/team/busybox:nope", reg.addr)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
}

#[test]
fn skopeo_and_umoci_interoperate_both_ways() {
    require_tool("skopeo", "skopeo");
    require_tool("umoci", "umoci");
    let reg = Registry::start(None);
    let d = Daemon::start();
    // skopeo puts an image in the registry; Berth pulls and runs it.
    let spec = ImageSpec::new(vec![busybox_layer()]);
    let archive = d.file("in.tar", &oci_archive(&[("docker.io/library/busybox:latest", &spec)]));
    let dest = format!("docker://{}/interop/by-skopeo:v1", reg.addr);
    run_ok(Command::new("skopeo").args(["copy", "--dest-tls-verify=false", &format!("oci-archive:{}", archive.display()), &dest]));
    let name = format!("{}/interop/by-skopeo:v1", reg.addr);
    d.ok(&["pull", &name]);
    assert_eq!(d.ok(&["run", "--rm", &name, "echo", "ok"]), "ok\n");
    // Berth pushes; skopeo copies it to an OCI layout that umoci unpacks.
    let pushed = format!("{}/interop/by-berth:v2", reg.addr);
    d.ok(&["tag", &name, &pushed]);
    d.ok(&["push", &pushed]);
    let layout = d.dir.path().join("layout");
    run_ok(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{pushed}"),
        &format!("oci:{}:v2", layout.display()),
    ]));
    let bundle = d.dir.path().join("bundle");
    run_ok(Command::new("umoci").args(["unpack", "--image", &format!("{}:v2", layout.display())]).arg(&bundle));
    assert_eq!(std::fs::read(bundle.join("rootfs/bin/busybox")).unwrap(), busybox());
}

#[test]
fn basic_auth_login_push_pull_logout() {
    let reg = Registry::start(Some(("berth", "s3cret")));
    let d = daemon_with_image();
    let config = d.dir.path().join("docker-config");
    let name = format!("{}/private/busybox:v1", reg.addr);
    d.ok(&["tag", "busybox", &name]);
    // Without credentials: refused, with a hint.
    let out = ctl_env(&d, &config, &["push", &name], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("requires authentication"), "{}", stderr(&out));
    // A wrong password does not log in and stores nothing.
    let out = ctl_env(&d, &config, &["login", "-u", "berth", "--password-stdin", &reg.addr], Some(b"wrong\n"));
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(!config.join("config.json").exists());
    // The right one is checked, then stored 0600 in docker's format.
    let out = ctl_env(&d, &config, &["login", "-u", "berth", "--password-stdin", &reg.addr], Some(b"s3cret\n"));
    assert!(out.status.success(), "{}", stderr(&out));
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(config.join("config.json")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(config.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["auths"][&reg.addr]["auth"], "YmVydGg6czNjcmV0", "{cfg}");
    // Push and pull with the stored credentials.
    let out = ctl_env(&d, &config, &["push", &name], None);
    assert!(out.status.success(), "{}", stderr(&out));
    d.ok(&["rmi", &name, "busybox"]);
    let out = ctl_env(&d, &config, &["pull", &name], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(d.ok(&["run", "--rm", &name, "cat", "/etc/motd"]), "from the registry\n");
    // --creds works without a login.
    d.ok(&["rmi", &name]);
    d.ok(&["pull", "--creds", "berth:s3cret", &name]);
    // Logout forgets them.
    let out = ctl_env(&d, &config, &["logout", &reg.addr], None);
    assert!(out.status.success());
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(config.join("config.json")).unwrap()).unwrap();
    assert!(cfg["auths"].get(&reg.addr).is_none(), "{cfg}");
}

#[test]
fn a_layer_with_the_wrong_content_is_refused_and_nothing_is_named() {
    let reg = Registry::start(None);
    let d = daemon_with_image();
    let name = format!("{}/bad/busybox:v1", reg.addr);
    d.ok(&["tag", "busybox", &name]);
    d.ok(&["push", &name]);
    let layers = d.inspect("default", &name)["Layers"].as_array().unwrap().clone();
    let layer = layers[1]["Digest"].as_str().unwrap().to_owned();
    d.ok(&["rmi", &name, "busybox"]);
    // The registry now serves other bytes of the same length for that layer.
    let file = reg.blob_file(&layer);
    let mut data = std::fs::read(&file).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(&file, &data).unwrap();
    let out = d.ctl(&["pull", &name]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("digest") || stderr(&out).contains("mismatch"), "{}", stderr(&out));
    // Nothing of the failed pull is visible.
    assert_eq!(d.ok(&["images", "-q"]).trim(), "");
    wait_until("the failed pull's blobs are collected", Duration::from_secs(10), || d.blobs().is_empty());
    assert!(d.ingest_files().is_empty(), "{:?}", d.ingest_files());
    // A longer body than the descriptor's size is cut off and refused.
    data[last] ^= 0xff;
    data.extend_from_slice(b"trailing bytes");
    std::fs::write(&file, &data).unwrap();
    let out = d.ctl(&["pull", &name]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(d.ok(&["images", "-q"]).trim(), "");
}

/// A bearer-token front for a registry, as Docker Hub's auth works: requests
/// without a valid token get a 401 challenge naming a token endpoint (served
/// here too); the token endpoint checks basic credentials; a token is good
/// for `uses` requests, then expires. Valid requests are forwarded to the registry.
struct TokenFront {
    addr: String,
    issued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    rejected: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl TokenFront {
    fn start(upstream: &str, user: &'static str, pass: &'static str, uses: usize) -> TokenFront {
        use std::io::{BufRead, BufReader, Read, Write};
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let tokens: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
        let issued = Arc::new(AtomicUsize::new(0));
        let rejected = Arc::new(AtomicUsize::new(0));
        let (up, me) = (upstream.to_owned(), addr.clone());
        let (issued2, rejected2) = (issued.clone(), rejected.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let (tokens, up, me, issued, rejected) = (tokens.clone(), up.clone(), me.clone(), issued2.clone(), rejected2.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let end = line == "\r\n";
                        head.push_str(&line);
                        if end {
                            break;
                        }
                    }
                    let header = |name: &str| {
                        head.lines()
                            .find(|l| l.to_ascii_lowercase().starts_with(&format!("{}:", name.to_ascii_lowercase())))
                            .map(|l| l.split_once(':').unwrap().1.trim().to_owned())
                    };
                    let len: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                    let mut body = vec![0u8; len];
                    reader.read_exact(&mut body).unwrap();
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    if path.starts_with("/token") {
                        let want = format!("Basic {}", base64_encode(&format!("{user}:{pass}")));
                        if header("authorization").as_deref() != Some(want.as_str()) {
                            let _ = conn.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                            return;
                        }
                        let token = format!("tok{}", issued.fetch_add(1, Ordering::SeqCst));
                        tokens.lock().unwrap().push((token.clone(), uses));
                        let json = format!("{{\"token\":\"{token}\",\"expires_in\":3600}}");
                        let _ = write!(
                            conn,
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
                            json.len()
                        );
                        return;
                    }
                    // Tokens expire after a few uses here, whatever they claimed: a client
                    // must re-authenticate in the middle of a transfer.
                    let valid = header("authorization").and_then(|a| a.strip_prefix("Bearer ").map(str::to_owned)).is_some_and(|t| {
                        let mut tokens = tokens.lock().unwrap();
                        match tokens.iter_mut().find(|(k, left)| *k == t && *left > 0) {
                            Some((_, left)) => {
                                *left -= 1;
                                true
                            }
                            None => false,
                        }
                    });
                    if !valid {
                        rejected.fetch_add(1, Ordering::SeqCst);
                        let challenge = format!(
                            "Bearer realm=\"http://{me}/token\",service=\"test-registry\",scope=\"repository:private/busybox:pull,push\""
                        );
                        let _ = write!(
                            conn,
                            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: {challenge}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        );
                        return;
                    }
                    // Forward to the registry, one request per connection.
                    let mut upstream = std::net::TcpStream::connect(&up).unwrap();
                    let mut fwd = String::new();
                    for (i, l) in head.lines().enumerate() {
                        let lower = l.to_ascii_lowercase();
                        if i > 0 && (lower.starts_with("connection:") || lower.starts_with("authorization:") || lower.starts_with("host:"))
                        {
                            continue;
                        }
                        if l.is_empty() {
                            break;
                        }
                        fwd.push_str(l);
                        fwd.push_str("\r\n");
                    }
                    fwd.push_str(&format!("Host: {up}\r\nConnection: close\r\n\r\n"));
                    upstream.write_all(fwd.as_bytes()).unwrap();
                    upstream.write_all(&body).unwrap();
                    let mut resp = Vec::new();
                    let _ = upstream.read_to_end(&mut resp);
                    // Locations the registry gives point at itself: point them back here (headers only).
                    let split = resp.windows(4).position(|w| w == b"\r\n\r\n").map_or(resp.len(), |i| i + 4);
                    let head = String::from_utf8_lossy(&resp[..split]).replace(&format!("http://{up}"), &format!("http://{me}"));
                    let _ = conn.write_all(head.as_bytes());
                    let _ = conn.write_all(&resp[split..]);
                });
            }
        });
        TokenFront { addr, issued, rejected }
    }
}

fn base64_encode(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn bearer_tokens_are_fetched_and_renewed_when_they_expire_mid_transfer() {
    use std::sync::atomic::Ordering;
    let reg = Registry::start(None);
    // A token is good for two requests: a pull (manifest, config, two layers) outlives its first one.
    let front = TokenFront::start(&reg.addr, "berth", "tok3n", 2);
    let d = daemon_with_image();
    let name = format!("{}/private/busybox:v1", front.addr);
    d.ok(&["tag", "busybox", &name]);
    let out = d.ctl(&["push", &name]);
    assert_eq!(out.status.code(), Some(1), "no credentials, no push");
    d.ok(&["push", "--creds", "berth:tok3n", &name]);
    d.ok(&["rmi", &name, "busybox"]);
    let issued_before = front.issued.load(Ordering::SeqCst);
    d.ok(&["pull", "--creds", "berth:tok3n", &name]);
    assert_eq!(d.ok(&["run", "--rm", &name, "cat", "/etc/motd"]), "from the registry\n");
    let issued = front.issued.load(Ordering::SeqCst) - issued_before;
    assert!(issued >= 2, "the token that expired mid-pull was renewed ({issued} issued)");
    assert!(front.rejected.load(Ordering::SeqCst) > 0);
    // A wrong password is refused by the token endpoint.
    d.ok(&["rmi", &name]);
    let out = d.ctl(&["pull", "--creds", "berth:nope", &name]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("refused"), "{}", stderr(&out));
}

/// What a fake registry answers on a path.
#[derive(Clone)]
enum Reply {
    /// Status, content type, body.
    Body(u16, &'static str, Vec<u8>),
    /// A body of this many bytes, streamed (not held in memory).
    Huge(&'static str, usize),
    /// A redirect to this URL.
    Redirect(String),
    /// Headers announcing the whole body, half of it, then silence.
    Stall(Vec<u8>),
    /// The whole body, one byte every 200 ms (never quite stalled).
    Trickle(Vec<u8>),
    /// Headers announcing the whole body (or, to a `Range` request when
    /// `ranges`, the rest of it with 206), then at most a third of the body
    /// and a closed connection. A registry that ignores ranges cuts only the
    /// first transfer.
    Cut { body: Vec<u8>, ranges: bool },
    /// 503 with `Retry-After: 1` while the counter is above zero, then the reply.
    Busy(std::sync::Arc<std::sync::atomic::AtomicUsize>, Box<Reply>),
}

/// Paths asked for, each with the Authorization header it came with.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, Option<String>)>>>;

/// A programmable registry on loopback that records what it was asked, with
/// which Authorization header.
struct Fake {
    addr: String,
    seen: Seen,
    /// The `Range` headers asked, in order.
    ranges: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Fake {
    fn start(routes: Vec<(String, Reply)>, basic: Option<&'static str>) -> Fake {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen: Seen = Default::default();
        let routes = std::sync::Arc::new(routes);
        let seen2 = seen.clone();
        let ranges: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let ranges2 = ranges.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let (routes, seen, ranges) = (routes.clone(), seen2.clone(), ranges2.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut head = Vec::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        head.push(line.trim_end().to_owned());
                    }
                    let path = head.first().and_then(|l| l.split_whitespace().nth(1)).unwrap_or("/").split('?').next().unwrap().to_owned();
                    let auth =
                        head.iter().find(|l| l.to_ascii_lowercase().starts_with("authorization:")).map(|l| l[14..].trim().to_owned());
                    seen.lock().unwrap().push((path.clone(), auth.clone()));
                    let range = head.iter().find_map(|l| l.to_ascii_lowercase().strip_prefix("range:").map(|r| r.trim().to_owned()));
                    if let Some(r) = &range {
                        ranges.lock().unwrap().push(r.clone());
                    }
                    if let Some(want) = basic {
                        if auth.as_deref() != Some(&format!("Basic {}", base64_encode(want))) {
                            let _ = conn.write_all(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"fake\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                            return;
                        }
                    }
                    let mut reply = routes.iter().find(|(p, _)| *p == path).map(|(_, r)| r.clone());
                    if let Some(Reply::Busy(left, inner)) = &reply {
                        let busy = left
                            .fetch_update(std::sync::atomic::Ordering::SeqCst, std::sync::atomic::Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                        if busy {
                            let _ = conn.write_all(
                                b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                            );
                            return;
                        }
                        reply = Some((**inner).clone());
                    }
                    let _ = match reply {
                        None if path == "/v2/" => conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"),
                        None => conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
                        Some(Reply::Body(status, ct, body)) => {
                            let _ = write!(
                                conn,
                                "HTTP/1.1 {status} X\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                body.len()
                            );
                            conn.write_all(&body)
                        }
                        Some(Reply::Huge(ct, len)) => {
                            let _ =
                                write!(conn, "HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n");
                            let chunk = vec![b' '; 1 << 20];
                            let mut sent = 0;
                            while sent < len {
                                if conn.write_all(&chunk).is_err() {
                                    break;
                                }
                                sent += chunk.len();
                            }
                            Ok(())
                        }
                        Some(Reply::Redirect(to)) => {
                            write!(
                                conn,
                                "HTTP/1.1 307 Temporary Redirect\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            )
                        }
                        Some(Reply::Busy(..)) => Ok(()),
                        Some(Reply::Trickle(body)) => {
                            let _ = write!(conn, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                            for b in body {
                                if conn.write_all(&[b]).and_then(|()| conn.flush()).is_err() {
                                    break;
                                }
                                std::thread::sleep(Duration::from_millis(200));
                            }
                            Ok(())
                        }
                        Some(Reply::Cut { body, ranges }) => {
                            let from = range
                                .as_deref()
                                .filter(|_| ranges)
                                .and_then(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse::<usize>().ok())
                                .filter(|&n| n < body.len());
                            let third = body.len() / 3;
                            let (rest, cut) = match from {
                                Some(n) => {
                                    let _ = write!(
                                        conn,
                                        "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {n}-{}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                        body.len() - 1,
                                        body.len(),
                                        body.len() - n
                                    );
                                    (&body[n..], true)
                                }
                                None => {
                                    let _ = write!(conn, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                                    (&body[..], ranges || range.is_none())
                                }
                            };
                            conn.write_all(if cut { &rest[..third.min(rest.len())] } else { rest })
                        }
                        Some(Reply::Stall(body)) => {
                            let _ = write!(conn, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                            let _ = conn.write_all(&body[..body.len() / 2]);
                            std::thread::sleep(Duration::from_secs(120));
                            Ok(())
                        }
                    };
                });
            }
        });
        Fake { addr, seen, ranges }
    }
}

/// Routes serving `built` as `repo:tag`, plus any extra routes first.
fn image_routes(repo: &str, tag: &str, built: &Built) -> Vec<(String, Reply)> {
    let mt = "application/vnd.oci.image.manifest.v1+json";
    let mut r = vec![
        (format!("/v2/{repo}/manifests/{tag}"), Reply::Body(200, mt, built.manifest.1.clone())),
        (format!("/v2/{repo}/manifests/{}", built.manifest.0), Reply::Body(200, mt, built.manifest.1.clone())),
        (format!("/v2/{repo}/blobs/{}", built.config.0), Reply::Body(200, "application/octet-stream", built.config.1.clone())),
    ];
    for (d, data, _) in &built.layers {
        r.push((format!("/v2/{repo}/blobs/{d}"), Reply::Body(200, "application/octet-stream", data.clone())));
    }
    r
}

#[test]
fn hostile_manifests_are_refused_and_nothing_is_named() {
    let d = Daemon::start();
    let mt = "application/vnd.oci.image.manifest.v1+json";
    let built = build(&ImageSpec::new(vec![busybox_layer()]));
    let mut both: serde_json::Value = serde_json::from_slice(&built.manifest.1).unwrap();
    both["manifests"] = serde_json::json!([]);
    let many_layers: Vec<serde_json::Value> = (0..10_000)
        .map(|i| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": format!("sha256:{:064x}", i), "size": 1}))
        .collect();
    let mut many: serde_json::Value = serde_json::from_slice(&built.manifest.1).unwrap();
    many["layers"] = serde_json::json!(many_layers);
    let fake = Fake::start(
        vec![
            ("/v2/x/manifests/both".into(), Reply::Body(200, mt, serde_json::to_vec(&both).unwrap())),
            ("/v2/x/manifests/many".into(), Reply::Body(200, mt, serde_json::to_vec(&many).unwrap())),
            ("/v2/x/manifests/huge".into(), Reply::Huge(mt, 100 << 20)),
        ],
        None,
    );
    for (tag, want) in [("both", "ambiguous"), ("many", "at most"), ("huge", "larger than")] {
        let t0 = std::time::Instant::now();
        let out = d.ctl(&["pull", &format!("{}/x:{tag}", fake.addr)]);
        assert_eq!(out.status.code(), Some(1), "{tag}");
        assert!(stderr(&out).contains(want), "{tag}: {}", stderr(&out));
        assert!(t0.elapsed() < Duration::from_secs(20), "{tag} took {:?}", t0.elapsed());
    }
    assert_eq!(d.ok(&["images", "-q"]).trim(), "");
    wait_until("nothing is left", Duration::from_secs(10), || d.blobs().is_empty());
    d.assert_healthy();
}

#[test]
fn a_redirect_to_another_host_carries_no_credentials() {
    let d = Daemon::start();
    let built = build(&ImageSpec::new(vec![busybox_layer()]));
    let (layer, data, _) = built.layers[0].clone();
    // The blob store ("a CDN") on another port: it serves the layer to anyone.
    let cdn = Fake::start(vec![("/cdn/layer".into(), Reply::Body(200, "application/octet-stream", data))], None);
    let mut routes = vec![(format!("/v2/x/blobs/{layer}"), Reply::Redirect(format!("http://{}/cdn/layer", cdn.addr)))];
    routes.extend(image_routes("x", "v1", &built));
    let reg = Fake::start(routes, Some("berth:pw"));
    let name = format!("{}/x:v1", reg.addr);
    d.ok(&["pull", "--creds", "berth:pw", &name]);
    assert_eq!(d.ok(&["run", "--rm", &name, "echo", "ok"]), "ok\n");
    // The registry got the credentials; the other host got none.
    assert!(reg.seen.lock().unwrap().iter().any(|(_, a)| a.is_some()));
    let cdn_seen = cdn.seen.lock().unwrap().clone();
    assert!(!cdn_seen.is_empty());
    assert!(cdn_seen.iter().all(|(_, a)| a.is_none()), "{cdn_seen:?}");
}

#[test]
fn a_registry_that_stalls_fails_the_pull_in_time_and_the_agent_stays_responsive() {
    let mut d = Daemon::unstarted(&[]);
    let cfg = d.file("berthd.toml", b"registry_stall_timeout = 2\n");
    d.extra_args = vec!["--config".into(), cfg.display().to_string()];
    d.spawn();
    let built = build(&ImageSpec::new(vec![busybox_layer()]));
    let (layer, data, _) = built.layers[0].clone();
    let mut routes = vec![(format!("/v2/x/blobs/{layer}"), Reply::Stall(data))];
    routes.extend(image_routes("x", "v1", &built));
    let reg = Fake::start(routes, None);
    let name = format!("{}/x:v1", reg.addr);
    let t0 = std::time::Instant::now();
    let pull = std::process::Command::new(env!("CARGO_BIN_EXE_berthctl"))
        .args(["pull", &name])
        .env("BERTH_ADDRESS", &d.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // While the transfer hangs, the agent answers.
    std::thread::sleep(Duration::from_millis(500));
    d.assert_healthy();
    let out = wait_output(pull, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1));
    assert!(t0.elapsed() < Duration::from_secs(30), "the pull took {:?}", t0.elapsed());
    assert!(stderr(&out).to_lowercase().contains("timed out") || stderr(&out).to_lowercase().contains("timeout"), "{}", stderr(&out));
    assert_eq!(d.ok(&["images", "-q"]).trim(), "");
    d.assert_healthy();
}

/// A CA, and a server certificate it signed for the IP address `ip`: (ca.pem, cert.pem, key.pem).
fn make_certs(dir: &Path, ip: &str) -> (PathBuf, PathBuf, PathBuf) {
    require_tool("openssl", "openssl");
    let (ca_key, ca, key, csr, cert, ext) = (
        dir.join("ca.key"),
        dir.join("ca.pem"),
        dir.join("server.key"),
        dir.join("server.csr"),
        dir.join("server.pem"),
        dir.join("ext.cnf"),
    );
    let o = |args: &[&str]| {
        run_ok(Command::new("openssl").args(args));
    };
    let p = |x: &PathBuf| x.display().to_string();
    o(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=berth test CA",
        "-keyout",
        &p(&ca_key),
        "-out",
        &p(&ca),
    ]);
    o(&["req", "-newkey", "rsa:2048", "-nodes", "-subj", &format!("/CN={ip}"), "-keyout", &p(&key), "-out", &p(&csr)]);
    std::fs::write(&ext, format!("subjectAltName=IP:{ip}\n")).unwrap();
    o(&[
        "x509",
        "-req",
        "-in",
        &p(&csr),
        "-CA",
        &p(&ca),
        "-CAkey",
        &p(&ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p(&ext),
        "-out",
        &p(&cert),
    ]);
    (ca, cert, key)
}

#[test]
fn tls_is_the_default_and_a_configured_ca_is_trusted() {
    // 127.0.0.2 is loopback but not "localhost": the agent speaks TLS to it.
    let certs = tempfile::tempdir_in(test_tmp()).unwrap();
    let (ca, cert, key) = make_certs(certs.path(), "127.0.0.2");
    let reg = Registry::start_on("127.0.0.2", None, Some((cert, key)));
    // Without the CA: the certificate is refused, nothing is pulled or pushed.
    let plain = daemon_with_image();
    let name = format!("{}/tls/busybox:v1", reg.addr);
    plain.ok(&["tag", "busybox", &name]);
    let out = plain.ctl(&["push", &name]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).to_lowercase().contains("certificate"), "{}", stderr(&out));
    // With the CA configured for that registry: push and pull over TLS.
    let mut d = Daemon::unstarted(&[]);
    let toml = format!("[registries.\"{}\"]\nca = \"{}\"\n", reg.addr, ca.display());
    let cfg = d.file("berthd.toml", toml.as_bytes());
    d.extra_args = vec!["--config".into(), cfg.display().to_string()];
    d.spawn();
    let spec = ImageSpec::new(vec![busybox_layer()]);
    let path = d.file("bb.tar", &oci_archive(&[(name.as_str(), &spec)]));
    d.ok(&["load", "-i", path.to_str().unwrap()]);
    d.ok(&["push", &name]);
    d.ok(&["rmi", &name]);
    d.ok(&["pull", &name]);
    assert_eq!(d.ok(&["run", "--rm", &name, "echo", "over tls"]), "over tls\n");
}

#[test]
fn concurrent_pulls_fetch_each_blob_once() {
    let d = Daemon::start();
    // Two images sharing their base layer, pulled at the same time, twice each.
    let base = busybox_layer();
    let a = build(&ImageSpec::new(vec![base.clone(), layer(&[Entry::File("a".into(), b"a".to_vec(), 0o644)])]));
    let b = build(&ImageSpec::new(vec![base, layer(&[Entry::File("b".into(), b"b".to_vec(), 0o644)])]));
    let mut routes = image_routes("x", "a", &a);
    routes.extend(image_routes("x", "b", &b));
    let reg = Fake::start(routes, None);
    let names = [format!("{}/x:a", reg.addr), format!("{}/x:b", reg.addr), format!("{}/x:a", reg.addr), format!("{}/x:b", reg.addr)];
    std::thread::scope(|s| {
        for n in &names {
            let d = &d;
            s.spawn(move || d.ok(&["pull", n]));
        }
    });
    let seen = reg.seen.lock().unwrap().clone();
    let mut gets: std::collections::HashMap<String, usize> = Default::default();
    for (path, _) in seen.iter().filter(|(p, _)| p.contains("/blobs/")) {
        *gets.entry(path.clone()).or_default() += 1;
    }
    assert!(gets.values().all(|&n| n == 1), "a blob was fetched twice: {gets:?}");
    assert_eq!(gets.len(), 5, "config a, config b, the shared base, layer a, layer b: {gets:?}");
    assert_eq!(d.ok(&["run", "--rm", &names[0], "cat", "/a"]), "a");
    assert_eq!(d.ok(&["run", "--rm", &names[1], "cat", "/b"]), "b");
}

#[test]
fn mirrors_platforms_and_retry_after() {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    let amd = build(&ImageSpec::new(vec![busybox_layer()]));
    let arm = build(&ImageSpec::new(vec![layer(&[Entry::File("arm".into(), b"arm".to_vec(), 0o644)])]));
    let mt = "application/vnd.oci.image.manifest.v1+json";
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": mt, "digest": arm.manifest.0, "size": arm.manifest.1.len(), "platform": {"os": "linux", "architecture": "arm64"}},
            {"mediaType": mt, "digest": amd.manifest.0, "size": amd.manifest.1.len(), "platform": {"os": "linux", "architecture": "amd64"}},
        ],
    });
    let index = serde_json::to_vec(&index).unwrap();
    let mut routes = vec![("/v2/x/manifests/multi".to_owned(), Reply::Body(200, "application/vnd.oci.image.index.v1+json", index))];
    routes.extend(image_routes("x", "amd", &amd));
    routes.extend(image_routes("x", "arm", &arm));
    // The mirror is busy at first: two 503s with Retry-After on the index.
    let busy = Arc::new(AtomicUsize::new(2));
    routes[0].1 = Reply::Busy(busy.clone(), Box::new(routes[0].1.clone()));
    let mirror = Fake::start(routes, None);
    // The origin (port 1) refuses connections: everything comes from the mirror.
    let mut d = Daemon::unstarted(&[]);
    let toml = format!("[registries.\"127.0.0.1:1\"]\nmirrors = [\"http://{}\"]\n", mirror.addr);
    let cfg = d.file("berthd.toml", toml.as_bytes());
    d.extra_args = vec!["--config".into(), cfg.display().to_string()];
    d.spawn();
    let t0 = std::time::Instant::now();
    d.ok(&["pull", "127.0.0.1:1/x:multi"]);
    assert!(t0.elapsed() >= Duration::from_secs(1), "Retry-After was not honoured");
    assert_eq!(busy.load(std::sync::atomic::Ordering::SeqCst), 0);
    // This machine's platform only: the amd64 layer was fetched, the arm64 one not.
    let fetched = |digest: &str| mirror.seen.lock().unwrap().iter().any(|(p, _)| p.ends_with(digest));
    assert!(fetched(&amd.layers[0].0));
    assert!(!fetched(&arm.layers[0].0));
    assert_eq!(d.ok(&["run", "--rm", "127.0.0.1:1/x:multi", "echo", "amd64"]), "amd64\n");
    // --platform picks another one; --all-platforms fetches every one.
    d.ok(&["rmi", "127.0.0.1:1/x:multi"]);
    d.ok(&["pull", "--platform", "linux/arm64", "127.0.0.1:1/x:multi"]);
    assert!(fetched(&arm.layers[0].0));
    d.ok(&["pull", "--all-platforms", "127.0.0.1:1/x:multi"]);
}

#[test]
fn a_token_realm_on_another_host_gets_no_credentials_unless_configured() {
    let d = Daemon::start();
    let token =
        Fake::start(vec![("/token".into(), Reply::Body(200, "application/json", br#"{"token":"t","expires_in":60}"#.to_vec()))], None);
    let challenge = format!("Bearer realm=\"http://{}/token\",service=\"s\",scope=\"repository:x:pull\"", token.addr);
    // The registry asks for a token from another host for everything.
    let reg = {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut conn = conn;
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    line.clear();
                }
                let _ = write!(
                    conn,
                    "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: {challenge}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        addr
    };
    let out = d.ctl(&["pull", "--creds", "berth:pw", &format!("{reg}/x:v1")]);
    assert_eq!(out.status.code(), Some(1));
    let seen = token.seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the token endpoint was asked");
    assert!(seen.iter().all(|(_, a)| a.is_none()), "credentials went to another host: {seen:?}");
}

#[test]
fn a_blob_the_mirror_lacks_comes_from_the_origin() {
    let built = build(&ImageSpec::new(vec![busybox_layer()]));
    let layer = built.layers[0].0.clone();
    let origin = Fake::start(image_routes("x", "v1", &built), None);
    // The mirror has the manifest and the config, not the layer.
    let partial: Vec<(String, Reply)> = image_routes("x", "v1", &built).into_iter().filter(|(p, _)| !p.ends_with(&layer)).collect();
    let mirror = Fake::start(partial, None);
    let mut d = Daemon::unstarted(&[]);
    let toml = format!("[registries.\"{}\"]\nmirrors = [\"http://{}\"]\n", origin.addr, mirror.addr);
    let cfg = d.file("berthd.toml", toml.as_bytes());
    d.extra_args = vec!["--config".into(), cfg.display().to_string()];
    d.spawn();
    let name = format!("{}/x:v1", origin.addr);
    d.ok(&["pull", &name]);
    assert_eq!(d.ok(&["run", "--rm", &name, "echo", "ok"]), "ok\n");
    let asked = |f: &Fake, suffix: &str| f.seen.lock().unwrap().iter().any(|(p, _)| p.ends_with(suffix));
    assert!(asked(&mirror, "/manifests/v1") && asked(&mirror, &layer), "the mirror is tried first");
    assert!(!asked(&origin, "/manifests/v1"), "the manifest came from the mirror");
    assert!(asked(&origin, &layer), "the missing layer came from the origin");
}

#[test]
fn a_blob_longer_or_shorter_than_its_descriptor_is_a_protocol_error_not_retried() {
    let built = build(&ImageSpec::new(vec![busybox_layer()]));
    let layer = &built.layers[0];
    let mut routes = image_routes("long", "v1", &built);
    let mut longer = layer.1.clone();
    longer.extend_from_slice(b"trailing bytes the descriptor does not count");
    routes.retain(|(p, _)| !p.ends_with(&layer.0));
    routes.push((format!("/v2/long/blobs/{}", layer.0), Reply::Body(200, "application/octet-stream", longer)));
    routes.extend(image_routes("short", "v1", &built));
    routes.retain(|(p, _)| !(p.starts_with("/v2/short/blobs/") && p.ends_with(&layer.0)));
    routes.push((
        format!("/v2/short/blobs/{}", layer.0),
        Reply::Body(200, "application/octet-stream", layer.1[..layer.1.len() / 2].to_vec()),
    ));
    let reg = Fake::start(routes, None);
    let d = Daemon::start();
    for (repo, want) in [("long", "longer than its descriptor"), ("short", "does not have its descriptor's")] {
        let out = d.ctl(&["pull", &format!("{}/{repo}:v1", reg.addr)]);
        assert_eq!(out.status.code(), Some(1), "{repo}");
        assert!(stderr(&out).contains(want), "{repo}: {}", stderr(&out));
        // A protocol violation is not a broken connection: fetched once.
        let asked = reg.seen.lock().unwrap().iter().filter(|(p, _)| p == &format!("/v2/{repo}/blobs/{}", layer.0)).count();
        assert_eq!(asked, 1, "{repo}: the blob was asked for {asked} times");
    }
    assert_eq!(d.ok(&["images", "-q"]).trim(), "");
    d.assert_healthy();
}

#[test]
fn a_registry_that_trickles_bytes_is_cut_off_by_the_minimum_rate() {
    let built = build(&ImageSpec::new(vec![busybox_layer()]));
    let layer = built.layers[0].clone();
    let mut routes = image_routes("x", "v1", &built);
    routes.retain(|(p, _)| !p.ends_with(&layer.0));
    routes.push((format!("/v2/x/blobs/{}", layer.0), Reply::Trickle(layer.1.clone())));
    let reg = Fake::start(routes, None);
    // A byte every 200 ms never trips a 2 s stall timer; the minimum rate does.
    let d = Daemon::start_with_config("registry_stall_timeout = 2\n");
    let t0 = std::time::Instant::now();
    let pull = std::process::Command::new(env!("CARGO_BIN_EXE_berthctl"))
        .args(["pull", &format!("{}/x:v1", reg.addr)])
        .env("BERTH_ADDRESS", &d.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(pull, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("bytes in"), "{}", stderr(&out));
    assert!(t0.elapsed() < Duration::from_secs(30), "took {:?}", t0.elapsed());
    assert_eq!(d.ok(&["images", "-q"]).trim(), "");
    d.assert_healthy();
}

#[test]
fn a_pull_whose_client_went_away_stops_and_does_not_block_the_next_one() {
    let built = build(&ImageSpec::new(vec![busybox_layer()]));
    let layer = built.layers[0].clone();
    // The same image under two names: its layer trickles from one, comes whole from the other.
    let mut routes = image_routes("slow", "v1", &built);
    routes.retain(|(p, _)| !p.ends_with(&layer.0));
    routes.push((format!("/v2/slow/blobs/{}", layer.0), Reply::Trickle(layer.1.clone())));
    routes.extend(image_routes("fast", "v1", &built));
    let reg = Fake::start(routes, None);
    // A long stall window: only the client's going away can stop the slow transfer.
    let d = Daemon::start_with_config("registry_stall_timeout = 300\n");
    let mut slow = std::process::Command::new(env!("CARGO_BIN_EXE_berthctl"))
        .args(["pull", &format!("{}/slow:v1", reg.addr)])
        .env("BERTH_ADDRESS", &d.socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let asked = |repo: &str| reg.seen.lock().unwrap().iter().any(|(p, _)| *p == format!("/v2/{repo}/blobs/{}", layer.0));
    wait_until("the slow transfer started", Duration::from_secs(30), || asked("slow"));
    let _ = slow.kill();
    let _ = slow.wait();
    // The next pull of the same blob is not held behind the abandoned one.
    let t0 = std::time::Instant::now();
    let out = d.ctl(&["pull", &format!("{}/fast:v1", reg.addr)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(t0.elapsed() < Duration::from_secs(20), "the pull waited {:?}", t0.elapsed());
    assert!(asked("fast"), "the blob was fetched again by the new pull");
    d.assert_healthy();
}

#[test]
fn a_cut_connection_resumes_with_range_and_falls_back_to_skipping() {
    let built = build(&ImageSpec::new(vec![busybox_layer()]));
    let layer = built.layers[0].clone();
    let len = layer.1.len();
    let mut routes = Vec::new();
    for (repo, ranges) in [("ranged", true), ("plain", false)] {
        let mut r = image_routes(repo, "v1", &built);
        r.retain(|(p, _)| !p.ends_with(&layer.0));
        r.push((format!("/v2/{repo}/blobs/{}", layer.0), Reply::Cut { body: layer.1.clone(), ranges }));
        routes.extend(r);
    }
    let reg = Fake::start(routes, None);
    let d = Daemon::start();
    let asked = |repo: &str| reg.seen.lock().unwrap().iter().filter(|(p, _)| *p == format!("/v2/{repo}/blobs/{}", layer.0)).count();

    // Each connection carries a third: the rest is asked for from where it broke.
    let out = d.ctl(&["pull", &format!("{}/ranged:v1", reg.addr)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let third = len / 3;
    assert_eq!(*reg.ranges.lock().unwrap(), vec![format!("bytes={third}-"), format!("bytes={}-", 2 * third)]);
    assert_eq!(asked("ranged"), 3);
    assert_eq!(d.ok(&["images", "-q"]).lines().count(), 1);
    d.ok(&["rmi", &format!("{}/ranged:v1", reg.addr)]);

    // A registry that ignores ranges sends it all again; the agent skips what it has.
    reg.ranges.lock().unwrap().clear();
    let out = d.ctl(&["pull", &format!("{}/plain:v1", reg.addr)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(*reg.ranges.lock().unwrap(), vec![format!("bytes={third}-")]);
    assert_eq!(asked("plain"), 2);
    assert_eq!(d.ok(&["run", "--rm", &format!("{}/plain:v1", reg.addr), "echo", "ok"]), "ok\n");
    d.assert_healthy();
}

#[test]
fn a_built_image_pushes_and_skopeo_reads_it_from_the_registry_and_an_archive() {
    require_tool("skopeo", "skopeo");
    let reg = Registry::start(None);
    let d = Daemon::start();
    let ctx = d.dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("busybox"), busybox()).unwrap();
    std::fs::set_permissions(ctx.join("busybox"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nLABEL built=by-berth\nCMD [\"echo\", \"pushed\"]\n",
    )
    .unwrap();
    let name = format!("{}/built/app:v1", reg.addr);
    let archive = d.dir.path().join("built.tar");
    d.ok(&["build", "-q", "-t", &name, "-o", &format!("type=oci,dest={}", archive.display()), &ctx.display().to_string()]);
    d.ok(&["push", &name]);
    let out = run_ok(Command::new("skopeo").args(["inspect", "--tls-verify=false", &format!("docker://{name}")]));
    let inspect: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(inspect["Labels"]["built"], "by-berth");
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 2);
    let out = run_ok(Command::new("skopeo").args(["inspect", &format!("oci-archive:{}", archive.display())]));
    let local: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(local["Digest"], inspect["Digest"]);
    // Pulled into another agent, it runs.
    let other = Daemon::start();
    other.ok(&["pull", &name]);
    assert_eq!(other.ok(&["run", "--rm", &name]), "pushed\n");
}

#[test]
fn a_build_pulls_a_missing_base_and_with_pull_a_newer_one() {
    require_tool("runc", "runc");
    let reg = Registry::start(None);
    let d = Daemon::start();
    let name = format!("{}/base/motd:v1", reg.addr);
    let load = |file: &str, motd: &str| {
        let spec = ImageSpec::new(vec![busybox_layer(), layer(&[Entry::File("etc/motd".into(), motd.as_bytes().to_vec(), 0o644)])]);
        let path = d.file(file, &oci_archive(&[(&name, &spec)]));
        d.ok(&["load", "-i", path.to_str().unwrap()]);
    };
    // The registry holds the newer image.
    load("new.tar", "new\n");
    d.ok(&["push", "-q", &name]);
    d.ok(&["rmi", &name]);
    let ctx = d.dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), format!("FROM {name}\nRUN cat /etc/motd > /seen\nCMD [\"cat\", \"/seen\"]\n")).unwrap();
    let ctx = ctx.display().to_string();
    // Missing: pulled (its progress shown), then built on.
    let out = d.ctl(&["build", "--progress", "plain", "-t", "built:1", &ctx]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), d.log());
    assert!(stderr(&out).contains(&format!("pull {name}")), "{}", stderr(&out));
    assert_eq!(d.ok(&["run", "--rm", "--net", "none", "built:1"]), "new\n");
    // An older image of the same name in the store: used as it is...
    d.ok(&["rmi", &name]);
    load("old.tar", "old\n");
    let out = d.ctl(&["build", "--progress", "plain", "-t", "built:2", &ctx]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("pull "), "{}", stderr(&out));
    assert_eq!(d.ok(&["run", "--rm", "--net", "none", "built:2"]), "old\n");
    // ...unless --pull: the registry's is pulled and named, and the build is on it.
    let out = d.ctl(&["build", "--progress", "plain", "--pull", "-t", "built:3", &ctx]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(d.ok(&["run", "--rm", "--net", "none", "built:3"]), "new\n");
    assert_eq!(d.ok(&["run", "--rm", "--net", "none", &name, "cat", "/etc/motd"]), "new\n");
}
