//! The CRI's streaming server: the URLs that Exec, Attach and PortForward answer with are
//! served here, over HTTP/1.1 on a TCP address of the agent (loopback by default). A client
//! upgrades its request either to SPDY/3.1 (`X-Stream-Protocol-Version` names the protocol)
//! or to a WebSocket (`Sec-WebSocket-Protocol` names it), and then speaks Kubernetes'
//! remote-command protocol (`channel.k8s.io` to `v5.channel.k8s.io`) or its port-forward
//! protocol (`portforward.k8s.io`). The URL's one-time token stands for the request the CRI
//! call registered with the streams service.

mod portforward;
mod remotecommand;
pub mod spdy;
pub mod spdy_session;
pub mod ws;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::service::streams::StreamRequest;
use crate::service::Services;

/// The remote-command protocols, newest first, as SPDY negotiates them.
const SPDY_COMMAND: &[&str] = &["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"];
/// The port-forward protocol over SPDY.
const SPDY_PORTFORWARD: &str = "portforward.k8s.io";
/// The remote-command protocols over WebSocket, newest first.
const WS_COMMAND: &[&str] =
    &["v5.channel.k8s.io", "v4.channel.k8s.io", "v4.base64.channel.k8s.io", "channel.k8s.io", "base64.channel.k8s.io"];
/// The port-forward protocols over WebSocket.
const WS_PORTFORWARD: &[&str] = &["v4.channel.k8s.io", "v4.base64.channel.k8s.io", "channel.k8s.io", "base64.channel.k8s.io"];
/// How long a client has to send its request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The version of the remote-command protocol a session speaks (1 for `channel.k8s.io`).
fn command_version(protocol: &str) -> u8 {
    protocol.strip_prefix('v').and_then(|r| r.split('.').next()).and_then(|v| v.parse().ok()).unwrap_or(1)
}

/// One output of a session, on either transport.
#[derive(Clone)]
pub(crate) enum Writer {
    Spdy(spdy_session::StreamWriter),
    Ws(ws::ChannelWriter),
}

impl Writer {
    pub(crate) async fn write(&self, data: &[u8]) -> io::Result<()> {
        match self {
            Writer::Spdy(w) => w.write(data).await,
            Writer::Ws(w) => w.write(data).await,
        }
    }

    /// This side sends no more on it (a WebSocket channel has no such signal: its end is the
    /// connection's).
    pub(crate) async fn close(&self) {
        if let Writer::Spdy(w) = self {
            let _ = w.close().await;
        }
    }
}

/// Listen on `address` (`HOST:PORT`; port 0 picks one) and tell the streams service where.
pub async fn bind(services: &Services, address: &str) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(address).await?;
    let local = listener.local_addr()?;
    let host = match local {
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
        SocketAddr::V4(a) => a.ip().to_string(),
    };
    services.streams.set_base_url(format!("http://{host}:{}", local.port()));
    Ok(listener)
}

/// Serve the streaming URLs until `stop` turns true.
pub async fn serve(listener: TcpListener, services: Arc<Services>, mut stop: watch::Receiver<bool>) {
    loop {
        let (conn, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a streaming connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = until(&mut stop) => return,
        };
        let services = services.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let services = services.clone();
                async move { Ok::<_, Infallible>(route(services, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(conn), svc)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "a streaming connection ended");
            }
        });
    }
}

fn plain(status: StatusCode, text: impl Into<String>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text.into() + "\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// The comma-separated values of every `name` header.
fn header_list(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

fn has_token(headers: &HeaderMap, name: &str, token: &str) -> bool {
    header_list(headers, name).iter().any(|v| v.eq_ignore_ascii_case(token))
}

async fn route(services: Arc<Services>, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().trim_matches('/').to_owned();
    let Some((kind, token)) = path.split_once('/') else { return plain(StatusCode::NOT_FOUND, "not found") };
    if !matches!(kind, "exec" | "attach" | "portforward") || token.contains('/') {
        return plain(StatusCode::NOT_FOUND, "not found");
    }
    let websocket = has_token(req.headers(), "upgrade", "websocket");
    let spdy = has_token(req.headers(), "upgrade", "SPDY/3.1");
    if !websocket && !spdy {
        return plain(StatusCode::BAD_REQUEST, "unable to upgrade: missing upgrade headers in request (SPDY/3.1 or websocket)");
    }
    // Negotiate before the token is spent: a client that cannot speak keeps nothing open.
    let portforward = kind == "portforward";
    let offered = header_list(req.headers(), if websocket { "sec-websocket-protocol" } else { "x-stream-protocol-version" });
    let protocol = if websocket && offered.is_empty() {
        // A WebSocket client naming no subprotocol gets the first binary one
        // (`channel.k8s.io`, or port-forwarding's), and no header names it back.
        Some(String::new())
    } else if websocket {
        let ours = if portforward { WS_PORTFORWARD } else { WS_COMMAND };
        offered.iter().find(|p| ours.contains(&p.as_str())).cloned()
    } else if portforward {
        // The first port-forward protocol is the only one; a client naming none means it.
        (offered.is_empty() || offered.iter().any(|p| p == SPDY_PORTFORWARD)).then(|| SPDY_PORTFORWARD.to_owned())
    } else if offered.is_empty() {
        Some("channel.k8s.io".to_owned())
    } else {
        SPDY_COMMAND.iter().find(|p| offered.iter().any(|o| o == *p)).map(|p| p.to_string())
    };
    let Some(protocol) = protocol else {
        let ours = match (websocket, portforward) {
            (true, true) => WS_PORTFORWARD.join(", "),
            (true, false) => WS_COMMAND.join(", "),
            (false, true) => SPDY_PORTFORWARD.to_owned(),
            (false, false) => SPDY_COMMAND.join(", "),
        };
        return plain(
            StatusCode::FORBIDDEN,
            format!("unable to upgrade: unable to negotiate protocol: client supports [{}], server supports [{ours}]", offered.join(", ")),
        );
    };
    let ws_key = req.headers().get("sec-websocket-key").map(|k| k.as_bytes().to_vec());
    if websocket && ws_key.is_none() {
        return plain(StatusCode::BAD_REQUEST, "a WebSocket upgrade needs Sec-WebSocket-Key");
    }
    let Some(request) = services.streams.take(kind, token) else {
        return plain(StatusCode::NOT_FOUND, "unknown or expired streaming token");
    };
    // WebSocket port-forwarding names its ports in the query (`?port=80&port=443`, or
    // `?port=80,443`).
    let query_ports: Vec<u16> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.strip_prefix("port="))
        .flat_map(|p| p.split(','))
        .filter_map(|p| p.parse().ok())
        .filter(|&p: &u16| p > 0)
        .collect();
    let upgrade = hyper::upgrade::on(&mut req);
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(hyper::header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Some(key) = ws_key {
        h.insert(hyper::header::UPGRADE, HeaderValue::from_static("websocket"));
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
        h.insert("sec-websocket-accept", HeaderValue::from_str(&accept).expect("base64 is a header value"));
        if !protocol.is_empty() {
            h.insert("sec-websocket-protocol", HeaderValue::from_str(&protocol).expect("a protocol we name is a header value"));
        }
    } else {
        h.insert(hyper::header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        h.insert("x-stream-protocol-version", HeaderValue::from_str(&protocol).expect("a protocol we name is a header value"));
    }
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!(error = %e, "a streaming upgrade failed");
                return;
            }
        };
        let what = request.kind();
        let result = match request {
            StreamRequest::Exec { .. } | StreamRequest::Attach { .. } => {
                let version = command_version(&protocol);
                if websocket {
                    remotecommand::serve_ws(&services, request, io, &protocol, version).await
                } else {
                    remotecommand::serve_spdy(&services, request, io, version).await
                }
            }
            StreamRequest::PortForward { ns, pod, ports } => {
                if websocket {
                    let ports = if query_ports.is_empty() { ports } else { query_ports };
                    portforward::serve_ws(&services, &ns, &pod, ports, io, protocol.contains("base64")).await
                } else {
                    portforward::serve_spdy(&services, &ns, &pod, io).await
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(session = what, error = %e, "a streaming session ended with an error");
        }
    });
    resp
}

/// Resolves when `flag` turns true (or its sender is gone).
pub(crate) async fn until(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|v| *v).await;
}
