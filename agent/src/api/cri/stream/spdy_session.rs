//! A SPDY/3.1 connection, server side: the client opens the streams (SYN_STREAM, each named
//! by its headers), this side replies (SYN_REPLY) and both send data until FIN. One task
//! reads frames and routes each stream's data to its receiver; one task writes what the
//! streams send. PINGs are answered; GOAWAY or the end of the connection ends every stream.

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::spdy::{Codec, Frame, Headers};

/// A connection that sends nothing for this long is closed (the kubelet's default idle
/// timeout of streaming connections).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4 * 3600);
/// Data frames this side sends are cut to this size.
const MAX_DATA: usize = 32 << 10;
/// Once this side has said all it had to, how long the client has to close.
const LINGER: Duration = Duration::from_secs(5);

/// A stream the client opened.
pub struct Incoming {
    pub id: u32,
    pub headers: Headers,
    /// Its data, until the client's FIN (or a reset, or the connection's end).
    pub data: mpsc::Receiver<Vec<u8>>,
    pub writer: StreamWriter,
}

/// This side of one stream.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    out: mpsc::Sender<Frame>,
}

impl StreamWriter {
    /// Accept the stream.
    pub async fn reply(&self) -> io::Result<()> {
        self.send(Frame::SynReply { stream: self.id, fin: false, headers: Vec::new() }).await
    }

    pub async fn write(&self, data: &[u8]) -> io::Result<()> {
        for chunk in data.chunks(MAX_DATA) {
            self.send(Frame::Data { stream: self.id, fin: false, data: chunk.to_vec() }).await?;
        }
        Ok(())
    }

    /// Half-close: this side sends no more on the stream.
    pub async fn close(&self) -> io::Result<()> {
        self.send(Frame::Data { stream: self.id, fin: true, data: Vec::new() }).await
    }

    pub async fn reset(&self, status: u32) -> io::Result<()> {
        self.send(Frame::RstStream { stream: self.id, status }).await
    }

    async fn send(&self, f: Frame) -> io::Result<()> {
        self.out.send(f).await.map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the SPDY connection is closed"))
    }
}

/// The server side of a connection: the streams as the client opens them, and a signal
/// that turns true when the connection has ended.
pub struct Session {
    pub streams: mpsc::Receiver<Incoming>,
    pub gone: watch::Receiver<bool>,
    /// Keeps the writing side open while the session is held.
    _out: mpsc::Sender<Frame>,
}

/// Run the SPDY protocol on `conn`. The connection is closed when the session, and every
/// writer of its streams, are dropped (and the client has had a moment to close first).
pub fn serve<S>(conn: S) -> Session
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(conn);
    let (out_tx, mut out_rx) = mpsc::channel::<Frame>(64);
    let (streams_tx, streams_rx) = mpsc::channel(16);
    let (gone_tx, gone_rx) = watch::channel(false);
    let (written_tx, mut written_rx) = watch::channel(false);
    // Writer: encode and send until every sender is gone, then end this side.
    tokio::spawn(async move {
        let mut codec = Codec::new();
        while let Some(f) = out_rx.recv().await {
            let bytes = match codec.encode(&f) {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!(error = %e, "encoding a SPDY frame");
                    break;
                }
            };
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = wr.flush().await;
        let _ = wr.shutdown().await;
        let _ = written_tx.send(true);
    });
    // Reader: route frames until the end of the connection.
    let weak_out = out_tx.downgrade();
    tokio::spawn(async move {
        let mut codec = Codec::new();
        let mut open: HashMap<u32, mpsc::Sender<Vec<u8>>> = HashMap::new();
        let mut last_id = 0u32;
        let mut streams_tx = Some(streams_tx);
        loop {
            let frame = tokio::select! {
                r = tokio::time::timeout(IDLE_TIMEOUT, codec.read(&mut rd)) => match r {
                    Ok(Ok(Some(f))) => f,
                    Ok(Ok(None)) => break,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "reading the SPDY connection");
                        break;
                    }
                    Err(_) => break,
                },
                // This side has said all it had to: the client gets a moment to close (what
                // it still sends is read and dropped, so the close is not a reset).
                () = super::until(&mut written_rx) => {
                    let drain = async {
                        let mut buf = [0u8; 4096];
                        while matches!(rd.read(&mut buf).await, Ok(n) if n > 0) {}
                    };
                    let _ = tokio::time::timeout(LINGER, drain).await;
                    break;
                }
            };
            match frame {
                Frame::SynStream { stream, fin, headers, .. } => {
                    let Some(out) = weak_out.upgrade() else { continue };
                    // Client streams are odd and increasing; anything else is refused.
                    if stream % 2 == 0 || stream <= last_id {
                        let _ = out.send(Frame::RstStream { stream, status: super::spdy::RST_PROTOCOL_ERROR }).await;
                        continue;
                    }
                    last_id = stream;
                    // A few pieces per stream: a stream whose reader stops holds back the connection
                    // (SPDY here has no flow control), not the agent's memory.
                    let (tx, rx) = mpsc::channel(8);
                    if !fin {
                        open.insert(stream, tx);
                    }
                    let incoming = Incoming { id: stream, headers, data: rx, writer: StreamWriter { id: stream, out: out.clone() } };
                    let refused = match &streams_tx {
                        Some(s) => s.send(incoming).await.is_err(),
                        None => true,
                    };
                    if refused {
                        open.remove(&stream);
                        let _ = out.send(Frame::RstStream { stream, status: super::spdy::RST_REFUSED_STREAM }).await;
                    }
                }
                Frame::Data { stream, fin, data } => {
                    if let Some(tx) = open.get(&stream) {
                        if !data.is_empty() && tx.send(data).await.is_err() {
                            // Nobody reads this stream any more: its data is dropped.
                            open.remove(&stream);
                        }
                    }
                    if fin {
                        open.remove(&stream);
                    }
                }
                Frame::RstStream { stream, .. } => {
                    open.remove(&stream);
                }
                Frame::Ping { id } => {
                    if let Some(out) = weak_out.upgrade() {
                        let _ = out.send(Frame::Ping { id }).await;
                    }
                }
                Frame::GoAway { .. } => {
                    // No new streams; the open ones go on.
                    streams_tx = None;
                }
                Frame::SynReply { .. }
                | Frame::Headers { .. }
                | Frame::Settings { .. }
                | Frame::WindowUpdate { .. }
                | Frame::Unknown { .. } => {}
            }
        }
        drop(open);
        drop(streams_tx);
        let _ = gone_tx.send(true);
    });
    Session { streams: streams_rx, gone: gone_rx, _out: out_tx }
}
