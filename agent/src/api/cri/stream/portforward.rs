//! Kubernetes' port-forward protocol: each forwarded connection is a pair of streams, data
//! and error, for one port of the pod. Over SPDY the client opens the pair per connection
//! (headers `streamType`, `port`, `requestID`); over a WebSocket each port of the URL's query
//! has two channels, data and error, and the first message on each is the port (16 bits,
//! little-endian). The agent connects to the port on the pod's loopback, from inside its
//! network namespace, and copies both ways until either side ends.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::spdy::{header, RST_PROTOCOL_ERROR};
use super::spdy_session::{self, Incoming};
use super::{ws, Writer};
use crate::service::Services;

/// How long one direction of a forwarded connection may go on after the other ended.
const HALF_CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Most connections one session forwards at once (and halves of pairs waiting).
const MAX_CONNECTIONS: usize = 128;
/// How long the second stream of a pair may keep the first waiting.
const PAIR_TIMEOUT: Duration = Duration::from_secs(30);

/// Serve a SPDY port-forward session: a connection per pair of streams, until the client
/// closes the session.
pub(super) async fn serve_spdy<S>(services: &Services, ns: &str, pod: &str, conn: S) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut session = spdy_session::serve(conn);
    // requestID -> (data, error, since)
    let mut halves: HashMap<String, (Option<Incoming>, Option<Incoming>, Instant)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let s = tokio::select! {
            s = session.streams.recv() => match s {
                Some(s) => s,
                None => break,
            },
            _ = tick.tick() => {
                // A pair that never completed is given up.
                let now = Instant::now();
                let stale: Vec<String> = halves.iter().filter(|(_, (_, _, at))| now.duration_since(*at) > PAIR_TIMEOUT).map(|(k, _)| k.clone()).collect();
                for k in stale {
                    if let Some((d, e, _)) = halves.remove(&k) {
                        for s in [d, e].into_iter().flatten() {
                            let _ = s.writer.reset(RST_PROTOCOL_ERROR).await;
                        }
                    }
                }
                continue;
            }
        };
        let kind = header(&s.headers, "streamtype").unwrap_or("").to_ascii_lowercase();
        let port = header(&s.headers, "port").and_then(|p| p.parse::<u16>().ok()).filter(|&p| p > 0);
        let (Some(port), true) = (port, kind == "data" || kind == "error") else {
            tracing::debug!(headers = ?s.headers, "a port-forward stream without a valid streamType or port");
            let _ = s.writer.reset(RST_PROTOCOL_ERROR).await;
            continue;
        };
        let request = header(&s.headers, "requestid").map(str::to_owned).unwrap_or_else(|| format!("port-{port}"));
        if !halves.contains_key(&request) && halves.len() >= MAX_CONNECTIONS {
            let _ = s.writer.reset(RST_PROTOCOL_ERROR).await;
            continue;
        }
        s.writer.reply().await?;
        let entry = halves.entry(request.clone()).or_insert_with(|| (None, None, Instant::now()));
        let slot = if kind == "data" { &mut entry.0 } else { &mut entry.1 };
        if slot.is_some() {
            let _ = s.writer.reset(RST_PROTOCOL_ERROR).await;
            continue;
        }
        *slot = Some(s);
        if let (Some(_), Some(_)) = (&entry.0, &entry.1) {
            let (data, error, _) = halves.remove(&request).expect("just seen");
            let (data, error) = (data.expect("checked"), error.expect("checked"));
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                // As many connections as a session may forward are open.
                let _ = error.writer.write(format!("more than {MAX_CONNECTIONS} connections at once").as_bytes()).await;
                let _ = error.writer.close().await;
                let _ = data.writer.reset(RST_PROTOCOL_ERROR).await;
                continue;
            };
            let (ns, pod, gone) = (ns.to_owned(), pod.to_owned(), session.gone.clone());
            let pods = services.pods.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let Incoming { data: input, writer, .. } = data;
                let conn = pods.connect_port(&ns, &pod, port).await;
                forward(conn, port, &pod, input, Writer::Spdy(writer), Writer::Spdy(error.writer), gone).await;
            });
        }
    }
    Ok(())
}

/// Serve a WebSocket port-forward session: one connection per port, on channels 2i (data)
/// and 2i+1 (error).
pub(super) async fn serve_ws<S>(services: &Services, ns: &str, pod: &str, ports: Vec<u16>, conn: S, base64: bool) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    if ports.is_empty() || ports.len() > 64 {
        // Two channels a port, each named by one byte.
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "a WebSocket port-forward needs 1 to 64 ports (?port=) in its URL"));
    }
    let readable: Vec<bool> = ports.iter().flat_map(|_| [true, false]).collect();
    let mut ch = ws::serve(conn, &readable, ws::Framing { base64, close_signal: false }).await;
    let mut jobs = Vec::new();
    for (i, &port) in ports.iter().enumerate() {
        let (data, error) = (Writer::Ws(ch.writers[2 * i].clone()), Writer::Ws(ch.writers[2 * i + 1].clone()));
        data.write(&port.to_le_bytes()).await?;
        error.write(&port.to_le_bytes()).await?;
        let input = ch.inputs[2 * i].take().expect("data channels are readable");
        let (ns, pod, gone, pods) = (ns.to_owned(), pod.to_owned(), ch.gone.clone(), services.pods.clone());
        jobs.push(tokio::spawn(async move {
            let conn = pods.connect_port(&ns, &pod, port).await;
            forward(conn, port, &pod, input, data, error, gone).await;
        }));
    }
    drop(ch.writers);
    for j in jobs {
        let _ = j.await;
    }
    Ok(())
}

/// Copy between the client's stream and the connection to the pod's port until both
/// directions end (or the session does); a connection that failed is reported on the
/// error stream.
async fn forward(
    conn: Result<tokio::net::TcpStream, crate::service::Error>,
    port: u16,
    pod: &str,
    mut input: mpsc::Receiver<Vec<u8>>,
    data: Writer,
    error: Writer,
    mut gone: watch::Receiver<bool>,
) {
    let conn = match conn {
        Ok(c) => c,
        Err(e) => {
            let _ = error.write(format!("error forwarding port {port} to pod {pod}: {e}").as_bytes()).await;
            error.close().await;
            data.close().await;
            return;
        }
    };
    let (mut rd, mut wr) = conn.into_split();
    let to_pod = async {
        while let Some(buf) = input.recv().await {
            if wr.write_all(&buf).await.is_err() {
                break;
            }
        }
        // The client's end: the pod's server reads EOF.
        let _ = wr.shutdown().await;
    };
    let from_pod = async {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if data.write(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    // When one direction ends the other gets a moment (a second, as containerd gives it),
    // then the connection and the streams close. The pod's end is passed on at once: a
    // client waits for the streams' end before it closes its side.
    tokio::pin!(to_pod, from_pod);
    tokio::select! {
        () = &mut to_pod => {
            let _ = tokio::time::timeout(HALF_CLOSE_GRACE, &mut from_pod).await;
            data.close().await;
            error.close().await;
        }
        () = &mut from_pod => {
            data.close().await;
            error.close().await;
            let _ = tokio::time::timeout(HALF_CLOSE_GRACE, &mut to_pod).await;
        }
        () = super::until(&mut gone) => {}
    }
}
