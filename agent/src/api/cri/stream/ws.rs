//! Kubernetes' channel protocol over WebSocket: each message starts with its channel's
//! number (stdin 0, stdout 1, stderr 2, error 3, resize 4; for port-forwarding, data and
//! error of each port in turn), then the data. The `base64.` protocols send text messages
//! with the channel as an ASCII digit and the data in base64. From `v5.channel.k8s.io` on, a
//! message on channel 255 whose one byte names a channel closes it (the client's end of
//! stdin).

use std::io;
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::{Message, Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use super::spdy_session::IDLE_TIMEOUT;

/// The channel of the close signal.
const CLOSE_CHANNEL: u8 = 255;
/// Once this side has said all it had to, how long the client has to close.
const LINGER: Duration = Duration::from_secs(5);
const MAX_MESSAGE: usize = 32 << 10;

/// How a session's messages are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    pub base64: bool,
    /// Channel 255 closes a channel (v5).
    pub close_signal: bool,
}

/// This side of one channel.
#[derive(Clone)]
pub struct ChannelWriter {
    channel: u8,
    base64: bool,
    out: mpsc::Sender<Message>,
}

impl ChannelWriter {
    pub async fn write(&self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return self.send(self.message(&[])).await;
        }
        for chunk in data.chunks(MAX_MESSAGE) {
            self.send(self.message(chunk)).await?;
        }
        Ok(())
    }

    fn message(&self, data: &[u8]) -> Message {
        if self.base64 {
            let mut text = String::with_capacity(1 + data.len() * 4 / 3 + 4);
            text.push(char::from(b'0' + self.channel));
            base64::engine::general_purpose::STANDARD.encode_string(data, &mut text);
            Message::text(text)
        } else {
            let mut bin = Vec::with_capacity(1 + data.len());
            bin.push(self.channel);
            bin.extend_from_slice(data);
            Message::binary(bin)
        }
    }

    async fn send(&self, m: Message) -> io::Result<()> {
        self.out.send(m).await.map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the WebSocket is closed"))
    }
}

/// A session's channels: what the client sends on each readable one, a writer for each,
/// and a signal that turns true when the connection has ended.
pub struct Channels {
    pub inputs: Vec<Option<mpsc::Receiver<Vec<u8>>>>,
    pub writers: Vec<ChannelWriter>,
    pub gone: watch::Receiver<bool>,
}

/// Run the channel protocol on an upgraded connection with `readable.len()` channels, the
/// client sending on those marked readable. The WebSocket is closed when every writer is
/// dropped.
pub async fn serve<S>(conn: S, readable: &[bool], framing: Framing) -> Channels
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    // Messages of at most 1 MiB (the clients send small pieces): a larger one ends the session.
    let config = WebSocketConfig::default().max_message_size(Some(1 << 20)).max_frame_size(Some(1 << 20));
    let ws = WebSocketStream::from_raw_socket(conn, Role::Server, Some(config)).await;
    let (mut sink, mut source) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(64);
    let (gone_tx, gone_rx) = watch::channel(false);
    let (written_tx, mut written_rx) = watch::channel(false);
    let mut senders = Vec::new();
    let mut inputs = Vec::new();
    for &r in readable {
        if r {
            // A few pieces per stream: a reader that stops holds back the connection.
            let (tx, rx) = mpsc::channel(8);
            senders.push(Some(tx));
            inputs.push(Some(rx));
        } else {
            senders.push(None);
            inputs.push(None);
        }
    }
    let writers = (0..readable.len()).map(|i| ChannelWriter { channel: i as u8, base64: framing.base64, out: out_tx.clone() }).collect();
    drop(out_tx);
    tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
        let _ = sink.send(Message::Close(None)).await;
        let _ = sink.close().await;
        let _ = written_tx.send(true);
    });
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                m = tokio::time::timeout(IDLE_TIMEOUT, source.next()) => match m {
                    Ok(Some(Ok(m))) => m,
                    _ => break,
                },
                () = super::until(&mut written_rx) => {
                    // The client gets a moment to answer the close.
                    let _ = tokio::time::timeout(LINGER, async { while let Some(Ok(_)) = source.next().await {} }).await;
                    break;
                }
            };
            let data = match next {
                Message::Binary(b) => b.to_vec(),
                Message::Text(t) if framing.base64 => {
                    let t = t.as_bytes();
                    let Some((&ch, rest)) = t.split_first() else { continue };
                    let Ok(mut data) = base64::engine::general_purpose::STANDARD.decode(rest) else {
                        tracing::debug!("a base64 channel message that is not base64");
                        continue;
                    };
                    data.insert(0, ch.wrapping_sub(b'0'));
                    data
                }
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&ch, payload)) = data.split_first() else { continue };
            if framing.close_signal && ch == CLOSE_CHANNEL {
                if let Some(&closed) = payload.first() {
                    let closed = if framing.base64 { closed.wrapping_sub(b'0') } else { closed };
                    if let Some(s) = senders.get_mut(closed as usize) {
                        *s = None;
                    }
                }
                continue;
            }
            if let Some(Some(tx)) = senders.get(ch as usize) {
                if !payload.is_empty() && tx.send(payload.to_vec()).await.is_err() {
                    senders[ch as usize] = None;
                }
            }
        }
        drop(senders);
        let _ = gone_tx.send(true);
    });
    Channels { inputs, writers, gone: gone_rx }
}
