//! The CRI's streaming calls as a kubelet's clients use them: Exec, Attach and PortForward
//! answer with a URL, and the client upgrades a request to it, to SPDY/3.1 (the protocol
//! kubectl and the kubelet have spoken for years) or to a WebSocket (`v5.channel.k8s.io`).
//! The SPDY client here is written from the protocol: frames encoded by the agent's codec,
//! the session logic (stream ids, replies, FIN) by the test.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use berth_agent::api::cri::stream::spdy::{Codec, Frame};
use berth_api::cri::{self, runtime_service_client::RuntimeServiceClient};
use common::*;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(30);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Split `http://host:port/path` into the address and the path.
fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (addr, path) = rest.split_once('/').unwrap();
    (addr.to_owned(), format!("/{path}"))
}

/// Send an HTTP/1.1 upgrade request and read the response's head: (status, headers).
async fn upgrade(conn: &mut TcpStream, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>) {
    let mut req = format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(tokio::time::timeout(WAIT, conn.read(&mut b)).await.unwrap().unwrap(), 1, "the server closed: {head:?}");
        head.push(b[0]);
    }
    let text = String::from_utf8(head).unwrap();
    let mut lines = text.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())).collect();
    (status, headers)
}

/// The client side of a SPDY session.
struct Spdy {
    conn: TcpStream,
    tx: Codec,
    rx: Codec,
    next_id: u32,
    /// Data per stream, and the streams the server has ended.
    data: HashMap<u32, Vec<u8>>,
    fin: Vec<u32>,
    replied: Vec<u32>,
}

impl Spdy {
    async fn connect(url: &str, protocols: &[&str]) -> Result<(Spdy, String), u16> {
        let (addr, path) = split_url(url);
        let mut conn = TcpStream::connect(&addr).await.unwrap();
        let mut headers = vec![("Upgrade", "SPDY/3.1")];
        headers.extend(protocols.iter().map(|p| ("X-Stream-Protocol-Version", *p)));
        let (status, got) = upgrade(&mut conn, &path, &headers).await;
        if status != 101 {
            return Err(status);
        }
        let chosen = got.iter().find(|(k, _)| k == "x-stream-protocol-version").map(|(_, v)| v.clone()).unwrap_or_default();
        let s = Spdy { conn, tx: Codec::new(), rx: Codec::new(), next_id: 1, data: HashMap::new(), fin: vec![], replied: vec![] };
        Ok((s, chosen))
    }

    async fn send(&mut self, f: Frame) {
        let bytes = self.tx.encode(&f).unwrap();
        self.conn.write_all(&bytes).await.unwrap();
    }

    async fn open(&mut self, headers: &[(&str, &str)]) -> u32 {
        let id = self.next_id;
        self.next_id += 2;
        let headers = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.send(Frame::SynStream { stream: id, associated: 0, priority: 0, fin: false, headers }).await;
        id
    }

    async fn write(&mut self, id: u32, data: &[u8], fin: bool) {
        self.send(Frame::Data { stream: id, fin, data: data.to_vec() }).await;
    }

    /// Read frames until `done` holds (or the connection ends); bounded.
    async fn read_until(&mut self, done: impl Fn(&Spdy) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !done(self) {
            let f = tokio::time::timeout_at(deadline, self.rx.read(&mut self.conn)).await.expect("the server went quiet").unwrap();
            match f {
                Some(Frame::Data { stream, fin, data }) => {
                    self.data.entry(stream).or_default().extend(data);
                    if fin {
                        self.fin.push(stream);
                    }
                }
                Some(Frame::SynReply { stream, .. }) => self.replied.push(stream),
                Some(Frame::RstStream { stream, .. }) => self.fin.push(stream),
                Some(_) => {}
                None => return,
            }
        }
    }

    fn text(&self, id: u32) -> String {
        String::from_utf8_lossy(self.data.get(&id).map(|d| &d[..]).unwrap_or(b"")).into_owned()
    }
}

/// A WebSocket client of the channel protocol.
async fn websocket(url: &str, protocol: &str) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let (addr, path) = split_url(url);
    let conn = TcpStream::connect(&addr).await.unwrap();
    let req = tokio_tungstenite::tungstenite::handshake::client::Request::builder()
        .uri(format!("ws://{addr}{path}"))
        .header("Host", &addr)
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", tokio_tungstenite::tungstenite::handshake::client::generate_key());
    // An empty `protocol` offers none: the server takes `channel.k8s.io` and names nothing back.
    let req = if protocol.is_empty() { req } else { req.header("Sec-WebSocket-Protocol", protocol) };
    let (ws, resp) = tokio_tungstenite::client_async(req.body(()).unwrap(), conn).await.unwrap();
    assert_eq!(resp.headers().get("sec-websocket-protocol").map(|p| p.to_str().unwrap()).unwrap_or(""), protocol);
    ws
}

/// Read channel messages until `done` holds on what each channel got; bounded.
async fn ws_read_until(
    ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>,
    got: &mut HashMap<u8, Vec<u8>>,
    done: impl Fn(&HashMap<u8, Vec<u8>>) -> bool,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done(got) {
        match tokio::time::timeout_at(deadline, ws.next()).await.expect("the server went quiet") {
            Some(Ok(Message::Binary(b))) => {
                if let Some((&ch, rest)) = b.split_first() {
                    got.entry(ch).or_default().extend_from_slice(rest);
                }
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
            Some(Ok(_)) => {}
        }
    }
}

fn text(got: &HashMap<u8, Vec<u8>>, ch: u8) -> String {
    String::from_utf8_lossy(got.get(&ch).map(|d| &d[..]).unwrap_or(b"")).into_owned()
}

fn pod_config(name: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata { name: name.into(), uid: format!("uid-{name}"), namespace: "default".into(), attempt: 0 }),
        hostname: name.into(),
        ..Default::default()
    }
}

#[test]
fn exec_attach_and_port_forward_stream_over_spdy_and_websocket() {
    require_tool("runc", "runc");
    let d = Daemon::start();
    let path = d.file("busybox.tar", &oci_archive(&[("docker.io/library/busybox:latest", &ImageSpec::new(vec![busybox_layer()]))]));
    d.ok(&["--namespace", "k8s.io", "load", "-i", path.to_str().unwrap()]);
    let www = d.dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("page.html"), "<p>through the tunnel</p>\n").unwrap();
    let logs = d.dir.path().join("pod-logs");
    rt().block_on(async {
        let channel = berth_api::connect(d.state.join("cri.sock"), Duration::from_secs(5)).await.unwrap();
        let mut rt = RuntimeServiceClient::new(channel);
        let mut config = pod_config("streams");
        config.log_directory = logs.display().to_string();
        let run = cri::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
        let pod = rt.run_pod_sandbox(run).await.unwrap().into_inner().pod_sandbox_id;
        let container = |name: &str, script: &str, stdin: bool| cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata { name: name.into(), attempt: 0 }),
            image: Some(cri::ImageSpec { image: "busybox".into(), ..Default::default() }),
            command: vec!["sh".into(), "-c".into(), script.into()],
            mounts: vec![cri::Mount {
                container_path: "/www".into(),
                host_path: www.display().to_string(),
                readonly: true,
                ..Default::default()
            }],
            stdin,
            log_path: format!("{name}/0.log"),
            ..Default::default()
        };
        let mut ids = Vec::new();
        // A server on the pod's loopback only: the host cannot reach it but through the tunnel.
        for c in [
            container("web", "exec busybox httpd -f -p 127.0.0.1:8080 -h /www", false),
            container("echo", "while read l; do echo \"got $l\"; done", true),
        ] {
            let req = cri::CreateContainerRequest { pod_sandbox_id: pod.clone(), config: Some(c), sandbox_config: Some(config.clone()) };
            let id = rt.create_container(req).await.unwrap().into_inner().container_id;
            rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.unwrap();
            ids.push(id);
        }
        let (web, echo) = (ids[0].clone(), ids[1].clone());
        let exec = |cmd: &[&str], tty: bool, stdin: bool, stderr: bool| cri::ExecRequest {
            container_id: echo.clone(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty,
            stdin,
            stdout: true,
            stderr,
        };

        // Exec over SPDY (v4): stdin in, stdout and stderr apart, the exit code in the status.
        let url = rt
            .exec(exec(&["sh", "-c", "read x; echo \"out:$x\"; echo err >&2; exit 3"], false, true, true))
            .await
            .unwrap()
            .into_inner()
            .url;
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        let (mut s, chosen) = Spdy::connect(&url, &["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io"]).await.unwrap();
        assert_eq!(chosen, "v4.channel.k8s.io");
        let error = s.open(&[("streamType", "error")]).await;
        let stdin = s.open(&[("streamType", "stdin")]).await;
        let stdout = s.open(&[("streamType", "stdout")]).await;
        let stderr = s.open(&[("streamType", "stderr")]).await;
        s.read_until(|s| s.replied.len() == 4).await;
        s.write(stdin, b"hello\n", true).await;
        s.read_until(|s| s.fin.contains(&error)).await;
        assert_eq!(s.text(stdout), "out:hello\n", "status: {}\n{}", s.text(error), d.log());
        assert_eq!(s.text(stderr), "err\n");
        let status: serde_json::Value = serde_json::from_str(&s.text(error)).unwrap();
        assert_eq!(status["status"], "Failure", "{status}");
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["message"], "3");
        assert!(s.fin.contains(&stdout) && s.fin.contains(&stderr), "the outputs end before the status");
        // The URL was good once.
        assert_eq!(Spdy::connect(&url, &["v4.channel.k8s.io"]).await.err(), Some(404));

        // Exec over a WebSocket (v5) with a terminal: the size set through the resize
        // channel, what is typed echoed, the status a success.
        let url = rt
            .exec(exec(&["sh", "-c", "busybox stty size; read x; busybox stty size; echo \"tty:$x\""], true, true, false))
            .await
            .unwrap()
            .into_inner()
            .url;
        let mut ws = websocket(&url, "v5.channel.k8s.io").await;
        ws.send(Message::binary([&[4u8][..], br#"{"Width":100,"Height":40}"#].concat())).await.unwrap();
        let mut got = HashMap::new();
        ws_read_until(&mut ws, &mut got, |g| text(g, 1).contains('\n')).await;
        ws.send(Message::binary(b"\x00abc\n".to_vec())).await.unwrap();
        ws_read_until(&mut ws, &mut got, |g| g.get(&3).is_some_and(|e| !e.is_empty())).await;
        let out = text(&got, 1);
        assert!(out.contains("40 100"), "the size was set: {out:?}");
        assert!(out.contains("tty:abc"), "{out:?}");
        assert!(out.contains("abc\r\n"), "the terminal echoes: {out:?}");
        let status: serde_json::Value = serde_json::from_str(&text(&got, 3)).unwrap();
        assert_eq!(status["status"], "Success", "{status}");

        // v5's close signal ends stdin: `wc -c` counts what came and exits.
        let url = rt.exec(exec(&["wc", "-c"], false, true, false)).await.unwrap().into_inner().url;
        let mut ws = websocket(&url, "v5.channel.k8s.io").await;
        ws.send(Message::binary(b"\x0012345".to_vec())).await.unwrap();
        ws.send(Message::binary(vec![255, 0])).await.unwrap();
        let mut got = HashMap::new();
        ws_read_until(&mut ws, &mut got, |g| g.get(&3).is_some_and(|e| !e.is_empty())).await;
        assert_eq!(text(&got, 1).trim(), "5");

        // A WebSocket client that names no subprotocol speaks the first one, channel.k8s.io.
        let url = rt.exec(exec(&["echo", "plain"], false, false, false)).await.unwrap().into_inner().url;
        let mut ws = websocket(&url, "").await;
        let mut got = HashMap::new();
        ws_read_until(&mut ws, &mut got, |g| text(g, 1).contains('\n')).await;
        assert_eq!(text(&got, 1), "plain\n");

        // Attach (SPDY) to the container's own process: a line in, its answer out; leaving
        // leaves it running.
        let attach = cri::AttachRequest { container_id: echo.clone(), stdin: true, tty: false, stdout: true, stderr: true };
        let url = rt.attach(attach).await.unwrap().into_inner().url;
        let (mut s, _) = Spdy::connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
        let _error = s.open(&[("streamType", "error")]).await;
        let stdin = s.open(&[("streamType", "stdin")]).await;
        let stdout = s.open(&[("streamType", "stdout")]).await;
        let _stderr = s.open(&[("streamType", "stderr")]).await;
        s.read_until(|s| s.replied.len() == 4).await;
        s.write(stdin, b"ping\n", false).await;
        s.read_until(|s| s.text(stdout).contains('\n')).await;
        assert_eq!(s.text(stdout), "got ping\n");

        // The log, where the kubelet reads it; rotated as the kubelet does it (renamed
        // away, then ReopenContainerLog), the next line goes to a new file.
        let log = logs.join("echo/0.log");
        let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
        for _ in 0..100 {
            if read(&log).contains("got ping") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(read(&log).lines().any(|l| l.ends_with(" stdout F got ping")), "{}", read(&log));
        std::fs::rename(&log, logs.join("echo/0.log.1")).unwrap();
        rt.reopen_container_log(cri::ReopenContainerLogRequest { container_id: echo.clone() }).await.unwrap();
        s.write(stdin, b"pong\n", false).await;
        s.read_until(|s| s.text(stdout).contains("got pong")).await;
        for _ in 0..100 {
            if read(&log).contains("got pong") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!read(&log).contains("got ping") && read(&log).contains("got pong"), "{}", read(&log));
        assert!(!read(&logs.join("echo/0.log.1")).contains("pong"));
        // berthctl reads the same file.
        let shown = d.ok(&["--namespace", "k8s.io", "logs", &echo]);
        assert!(shown.contains("got pong"), "{shown}");
        drop(s);
        let st = rt.container_status(cri::ContainerStatusRequest { container_id: echo.clone(), verbose: false }).await.unwrap();
        assert_eq!(st.into_inner().status.unwrap().state, cri::ContainerState::ContainerRunning as i32);

        // Port-forward over SPDY: a data and error stream pair per connection.
        let url =
            rt.port_forward(cri::PortForwardRequest { pod_sandbox_id: pod.clone(), port: vec![8080] }).await.unwrap().into_inner().url;
        let (mut s, chosen) = Spdy::connect(&url, &["portforward.k8s.io"]).await.unwrap();
        assert_eq!(chosen, "portforward.k8s.io");
        let perr = s.open(&[("streamType", "error"), ("port", "8080"), ("requestID", "0")]).await;
        let pdata = s.open(&[("streamType", "data"), ("port", "8080"), ("requestID", "0")]).await;
        s.write(pdata, b"GET /page.html HTTP/1.0\r\n\r\n", true).await;
        s.read_until(|s| s.fin.contains(&pdata)).await;
        assert!(s.text(pdata).contains("through the tunnel"), "{}", s.text(pdata));
        // A second connection in the same session, to a port nothing listens on: the error
        // stream says so.
        let perr2 = s.open(&[("streamType", "error"), ("port", "9"), ("requestID", "1")]).await;
        let _pdata2 = s.open(&[("streamType", "data"), ("port", "9"), ("requestID", "1")]).await;
        s.read_until(|s| s.fin.contains(&perr2)).await;
        assert!(s.text(perr2).contains("error forwarding port 9"), "{}", s.text(perr2));
        assert!(s.text(perr).is_empty());

        // Port-forward over a WebSocket: the port first on both channels, then the data.
        let url =
            rt.port_forward(cri::PortForwardRequest { pod_sandbox_id: pod.clone(), port: vec![8080] }).await.unwrap().into_inner().url;
        let mut ws = websocket(&url, "v4.channel.k8s.io").await;
        let mut got = HashMap::new();
        ws_read_until(&mut ws, &mut got, |g| g.get(&0).is_some_and(|d| d.len() >= 2) && g.get(&1).is_some_and(|d| d.len() >= 2)).await;
        assert_eq!(got[&0][..2], 8080u16.to_le_bytes());
        assert_eq!(got[&1][..2], 8080u16.to_le_bytes());
        ws.send(Message::binary(b"\x00GET /page.html HTTP/1.0\r\n\r\n".to_vec())).await.unwrap();
        ws_read_until(&mut ws, &mut got, |g| text(g, 0).contains("tunnel")).await;
        assert!(text(&got, 0).contains("through the tunnel"));

        // What a kubelet can get wrong, refused: an unknown container, a bad pairing of
        // streams, a protocol nobody speaks, a path that is no session.
        let mut bad = exec(&["true"], false, false, false);
        bad.container_id = "nope".into();
        bad.stdout = true;
        assert_eq!(rt.exec(bad).await.unwrap_err().code(), tonic::Code::NotFound);
        let e = rt.exec(exec(&["true"], true, false, true)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "tty with stderr: {e}");
        let url = rt.exec(exec(&["true"], false, false, false)).await.unwrap().into_inner().url;
        assert_eq!(Spdy::connect(&url, &["v9.channel.k8s.io"]).await.err(), Some(403));
        let (base, _) = split_url(&url);
        assert_eq!(Spdy::connect(&format!("http://{base}/exec/0123"), &["v4.channel.k8s.io"]).await.err(), Some(404));
        assert_eq!(Spdy::connect(&format!("http://{base}/other/x"), &["v4.channel.k8s.io"]).await.err(), Some(404));

        // The web server was never reachable from the host at the pod's address.
        let st = rt.pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: pod.clone(), verbose: false }).await.unwrap();
        let ip = st.into_inner().status.unwrap().network.unwrap().ip;
        assert!(std::net::TcpStream::connect_timeout(&format!("{ip}:8080").parse().unwrap(), Duration::from_secs(2)).is_err());
        // Stopped at once (their shells, as pid 1, ignore SIGTERM), then the pod.
        for id in [&web, &echo] {
            rt.stop_container(cri::StopContainerRequest { container_id: id.clone(), timeout: 0 }).await.unwrap();
        }
        // A stopped container's log is not reopened.
        let e = rt.reopen_container_log(cri::ReopenContainerLogRequest { container_id: echo.clone() }).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
    });
}

/// Build the spdystream peer (`tests/peers/spdystream`): Debian's golang-go and
/// golang-github-docker-spdystream-dev, in GOPATH mode.
fn spdystream_peer(dir: &std::path::Path) -> std::path::PathBuf {
    let src = dir.join("gopath/src/peer");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/spdystream/main.go"), src.join("main.go")).unwrap();
    let bin = dir.join("spdystream-peer");
    let out = std::process::Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(&src)
        .env("GO111MODULE", "off")
        .env("GOPATH", format!("{}:/usr/share/gocode", dir.join("gopath").display()))
        .env("GOCACHE", dir.join("gocache"))
        .output()
        .expect("go (apt-get install golang-go golang-github-docker-spdystream-dev)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    bin
}

/// The same sessions driven by spdystream, the SPDY library of the kubelet's and
/// kubectl's clients: an independent peer of the agent's SPDY code (its header
/// compression dictionary, framing and stream handling). Not in CI: it needs Go.
#[test]
#[ignore = "needs Go and Debian's golang-github-docker-spdystream-dev"]
fn a_spdystream_client_execs_and_forwards() {
    require_tool("runc", "runc");
    let d = Daemon::start();
    let peer = spdystream_peer(d.dir.path());
    let path = d.file("busybox.tar", &oci_archive(&[("docker.io/library/busybox:latest", &ImageSpec::new(vec![busybox_layer()]))]));
    d.ok(&["--namespace", "k8s.io", "load", "-i", path.to_str().unwrap()]);
    let www = d.dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "<p>spdystream</p>\n").unwrap();
    let run_peer = move |args: &[&str]| {
        let out = std::process::Command::new(&peer).args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    rt().block_on(async {
        let channel = berth_api::connect(d.state.join("cri.sock"), Duration::from_secs(5)).await.unwrap();
        let mut rt = RuntimeServiceClient::new(channel);
        let config = pod_config("peer");
        let run = cri::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
        let pod = rt.run_pod_sandbox(run).await.unwrap().into_inner().pod_sandbox_id;
        let c = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata { name: "web".into(), attempt: 0 }),
            image: Some(cri::ImageSpec { image: "busybox".into(), ..Default::default() }),
            command: vec!["busybox".into(), "httpd".into(), "-f".into(), "-p".into(), "127.0.0.1:8080".into(), "-h".into(), "/www".into()],
            mounts: vec![cri::Mount {
                container_path: "/www".into(),
                host_path: www.display().to_string(),
                readonly: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        let req = cri::CreateContainerRequest { pod_sandbox_id: pod.clone(), config: Some(c), sandbox_config: Some(config) };
        let web = rt.create_container(req).await.unwrap().into_inner().container_id;
        rt.start_container(cri::StartContainerRequest { container_id: web.clone() }).await.unwrap();

        let exec = cri::ExecRequest {
            container_id: web.clone(),
            cmd: ["sh", "-c", "read x; echo \"out:$x\"; echo err >&2; exit 4"].iter().map(|s| s.to_string()).collect(),
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        };
        let url = rt.exec(exec).await.unwrap().into_inner().url;
        let out = tokio::task::spawn_blocking({
            let run_peer = run_peer.clone();
            move || run_peer(&["exec", &url, "from go\n"])
        })
        .await
        .unwrap();
        assert!(out.contains("stdout:\"out:from go\\n\""), "{out}");
        assert!(out.contains("stderr:\"err\\n\""), "{out}");
        assert!(out.contains("\"reason\":\"NonZeroExitCode\"") && out.contains("\"message\":\"4\""), "{out}");

        let url =
            rt.port_forward(cri::PortForwardRequest { pod_sandbox_id: pod.clone(), port: vec![8080] }).await.unwrap().into_inner().url;
        let out = tokio::task::spawn_blocking(move || run_peer(&["forward", &url, "8080", "GET / HTTP/1.0\\n\\n"])).await.unwrap();
        assert!(out.contains("spdystream"), "{out}");
        rt.stop_container(cri::StopContainerRequest { container_id: web, timeout: 0 }).await.unwrap();
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
    });
}
