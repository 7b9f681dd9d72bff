//! The names of containers on a network, answered by the agent: a small DNS
//! server on each user network's gateway address (UDP and TCP port 53), as
//! docker's embedded DNS. A container's name, its aliases on the network and
//! its short id resolve to its addresses there (`A`; an `AAAA` of a known
//! name has no answer); every other question goes to the host's resolvers
//! and their answer comes back as is. An internal network forwards nothing.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

/// How long a forwarded question waits for the host's resolver.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a TCP client may take to send its question.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);
/// Time to live of the answers about containers (they come and go).
const TTL: u32 = 10;

const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
const RCODE_SERVFAIL: u8 = 2;
const RCODE_NXDOMAIN: u8 = 3;
const RCODE_REFUSED: u8 = 5;

/// Names on one network: lower-case name → addresses.
pub type Names = HashMap<String, Vec<Ipv4Addr>>;

/// One question of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Lower-case, without the final dot.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// Where the question section ends in the message.
    end: usize,
}

/// The question of a query (one question, not a response), or None.
pub fn parse_query(msg: &[u8]) -> Option<Question> {
    if msg.len() < 12 || msg[2] & 0x80 != 0 || u16::from_be_bytes([msg[4], msg[5]]) != 1 {
        return None;
    }
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *msg.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        // No compression in a question; labels of at most 63 bytes.
        if len > 63 {
            return None;
        }
        let label = msg.get(i..i + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        i += len;
        if i > 12 + 255 {
            return None;
        }
    }
    let qtype = u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?]);
    let qclass = u16::from_be_bytes([*msg.get(i + 2)?, *msg.get(i + 3)?]);
    Some(Question { name: labels.join("."), qtype, qclass, end: i + 4 })
}

/// The reply to `query` (whose question is `q`) from `names`, or None when
/// the name is not one of them (the question is forwarded).
pub fn answer(query: &[u8], q: &Question, names: &Names) -> Option<Vec<u8>> {
    if q.qclass != CLASS_IN {
        return None;
    }
    let ips = names.get(&q.name)?;
    let mut out = reply_header(query, q, 0);
    let answers: &[Ipv4Addr] = if q.qtype == TYPE_A { ips } else { &[] };
    out[6..8].copy_from_slice(&(answers.len() as u16).to_be_bytes());
    for ip in answers {
        // The name as a pointer to the question's (offset 12).
        out.extend_from_slice(&[0xc0, 12]);
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&TTL.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&ip.octets());
    }
    Some(out)
}

/// A reply carrying the query's id and question, no records, and `rcode`.
fn reply_header(query: &[u8], q: &Question, rcode: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(q.end + 64);
    out.extend_from_slice(&query[..2]);
    // QR, opcode 0, AA; RD as asked; RA.
    out.push(0x84 | (query[2] & 0x01));
    out.push(0x80 | rcode);
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&query[12..q.end]);
    out
}

/// An error reply (no records).
pub fn error_reply(query: &[u8], q: &Question, rcode: u8) -> Vec<u8> {
    let mut out = reply_header(query, q, rcode);
    // Not authoritative for what it does not know.
    out[2] &= !0x04;
    out
}

/// What one network's server answers from.
pub struct Zone {
    pub names: Mutex<Names>,
    /// The host's resolvers; empty: nothing is forwarded (an internal network).
    pub upstream: Vec<SocketAddr>,
    /// Who is answered: the network's own subnet (the server's address is
    /// the host's, reachable from elsewhere too).
    pub clients: Option<super::subnet::Subnet>,
}

/// Most questions one server works on at once; more are dropped (clients retry).
const MAX_IN_FLIGHT: usize = 256;

impl Zone {
    fn answers(&self, peer: SocketAddr) -> bool {
        match (peer.ip(), &self.clients) {
            (IpAddr::V4(ip), Some(s)) => s.contains(ip),
            _ => false,
        }
    }
}

impl Zone {
    /// The reply to one message, or None to drop it.
    async fn reply(&self, msg: &[u8]) -> Option<Vec<u8>> {
        let q = parse_query(msg)?;
        let known = {
            let names = self.names.lock().unwrap_or_else(|e| e.into_inner());
            answer(msg, &q, &names)
        };
        if let Some(r) = known {
            return Some(r);
        }
        if self.upstream.is_empty() {
            // A single-label name is a container's that is not there.
            let rcode = if q.name.contains('.') { RCODE_REFUSED } else { RCODE_NXDOMAIN };
            return Some(error_reply(msg, &q, rcode));
        }
        for server in &self.upstream {
            if let Some(r) = forward(msg, *server).await {
                return Some(r);
            }
        }
        Some(error_reply(msg, &q, RCODE_SERVFAIL))
    }
}

/// Ask `server` over UDP; its reply if it came in time and matches the id.
async fn forward(msg: &[u8], server: SocketAddr) -> Option<Vec<u8>> {
    let bind: SocketAddr = if server.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let sock = UdpSocket::bind(bind).await.ok()?;
    sock.connect(server).await.ok()?;
    sock.send(msg).await.ok()?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(FORWARD_TIMEOUT, sock.recv(&mut buf)).await.ok()?.ok()?;
    (n >= 12 && buf[..2] == msg[..2]).then(|| buf[..n].to_vec())
}

/// Serve `zone` on `addr` port 53 (UDP and TCP) until the returned handle is aborted.
pub async fn serve(addr: Ipv4Addr, zone: Arc<Zone>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let udp = Arc::new(UdpSocket::bind((addr, 53)).await?);
    let tcp = TcpListener::bind((addr, 53)).await?;
    let busy = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    Ok(tokio::spawn(async move {
        let (z, b) = (zone.clone(), busy.clone());
        let udp_loop = async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (n, peer) = match udp.recv_from(&mut buf).await {
                    Ok(r) => r,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                if !z.answers(peer) {
                    continue;
                }
                let Ok(permit) = b.clone().try_acquire_owned() else { continue };
                let (msg, udp, z) = (buf[..n].to_vec(), udp.clone(), z.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Some(mut r) = z.reply(&msg).await {
                        // Over UDP a reply is at most 512 bytes unless the client said more (EDNS): truncate.
                        if r.len() > 4096 {
                            r.truncate(12);
                            r[2] |= 0x02;
                        }
                        let _ = udp.send_to(&r, peer).await;
                    }
                });
            }
        };
        let tcp_loop = async move {
            loop {
                let (mut conn, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    // Out of descriptors, say: not a busy loop.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if !zone.answers(peer) {
                    continue;
                }
                let Ok(permit) = busy.clone().try_acquire_owned() else { continue };
                let z = zone.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let read = async {
                        let len = conn.read_u16().await? as usize;
                        let mut msg = vec![0u8; len];
                        conn.read_exact(&mut msg).await?;
                        Ok::<_, std::io::Error>(msg)
                    };
                    let Ok(Ok(msg)) = tokio::time::timeout(TCP_TIMEOUT, read).await else { return };
                    if let Some(r) = z.reply(&msg).await {
                        let _ = conn.write_u16(r.len() as u16).await;
                        let _ = conn.write_all(&r).await;
                    }
                });
            }
        };
        tokio::join!(udp_loop, tcp_loop);
    }))
}

/// The host's resolvers as socket addresses (loopback ones included: the agent runs on the host).
pub fn host_upstream() -> Vec<SocketAddr> {
    let (servers, _) = super::files::host_resolvers(false);
    servers.iter().filter_map(|s| Some(SocketAddr::new(s.split('%').next()?.parse::<IpAddr>().ok()?, 53))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TYPE_AAAA: u16 = 28;

    /// A query for `name` of `qtype`, id 0x1234, RD set.
    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&CLASS_IN.to_be_bytes());
        m
    }

    #[test]
    fn a_known_name_is_answered_with_its_addresses() {
        let names: Names = HashMap::from([("web".to_owned(), vec![Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)])]);
        let m = query("WEB", TYPE_A);
        let q = parse_query(&m).unwrap();
        assert_eq!(q.name, "web");
        let r = answer(&m, &q, &names).unwrap();
        assert_eq!(&r[..2], &[0x12, 0x34]);
        assert_eq!(r[2] & 0x80, 0x80, "a response");
        assert_eq!(r[3] & 0x0f, 0, "NOERROR");
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 2, "two answers");
        assert_eq!(&r[r.len() - 4..], &[10, 0, 0, 3]);
        // AAAA of a known name: no answer, no error.
        let m6 = query("web", TYPE_AAAA);
        let r6 = answer(&m6, &parse_query(&m6).unwrap(), &names).unwrap();
        assert_eq!(u16::from_be_bytes([r6[6], r6[7]]), 0);
        // Unknown: forwarded.
        let mu = query("example.org", TYPE_A);
        assert!(answer(&mu, &parse_query(&mu).unwrap(), &names).is_none());
    }

    #[test]
    fn malformed_messages_are_not_queries() {
        assert!(parse_query(&[0; 5]).is_none());
        let mut resp = query("web", TYPE_A);
        resp[2] |= 0x80;
        assert!(parse_query(&resp).is_none(), "a response");
        let mut cut = query("web", TYPE_A);
        cut.truncate(cut.len() - 3);
        assert!(parse_query(&cut).is_none(), "cut short");
        let mut big = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12];
        big.extend_from_slice(&[0, 1, 0, 1]);
        assert!(parse_query(&big).is_none(), "a compression pointer in a question");
    }

    /// A resolver on 127.0.0.1 that answers each question once with `reply(question)`.
    async fn fake_resolver(reply: fn(&[u8]) -> Vec<u8>) -> SocketAddr {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
                let _ = sock.send_to(&reply(&buf[..n]), peer).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn other_names_go_to_the_host_s_resolvers_and_their_answer_comes_back_as_is() {
        // One that keeps quiet, one that answers with another id, one that answers.
        let quiet = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let wrong_id = fake_resolver(|q| {
            let mut r = q.to_vec();
            r[0] ^= 0xff;
            r[2] |= 0x80;
            r
        })
        .await;
        let good = fake_resolver(|q| {
            let mut r = q.to_vec();
            r[2] |= 0x80;
            r[7] = 1;
            r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]);
            r
        })
        .await;
        let zone = Zone {
            names: Mutex::new(HashMap::from([("db".to_owned(), vec![Ipv4Addr::new(10, 0, 0, 9)])])),
            upstream: vec![quiet.local_addr().unwrap(), wrong_id, good],
            clients: super::super::subnet::Subnet::parse("10.0.0.0/24").ok(),
        };
        let t0 = std::time::Instant::now();
        let r = zone.reply(&query("example.org", TYPE_A)).await.unwrap();
        assert!(t0.elapsed() < FORWARD_TIMEOUT * 3, "{:?}", t0.elapsed());
        assert_eq!(&r[..2], &[0x12, 0x34]);
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1, "the resolver's one answer");
        assert_eq!(&r[r.len() - 4..], &[192, 0, 2, 7]);
        // The zone's own names are not asked of anyone.
        let r = zone.reply(&query("db", TYPE_A)).await.unwrap();
        assert_eq!(&r[r.len() - 4..], &[10, 0, 0, 9]);
        // No resolver answers: SERVFAIL, within the bound.
        let silent = Zone { upstream: vec![quiet.local_addr().unwrap()], ..zone };
        let t0 = std::time::Instant::now();
        let r = silent.reply(&query("example.org", TYPE_A)).await.unwrap();
        assert_eq!(r[3] & 0x0f, RCODE_SERVFAIL);
        assert!(t0.elapsed() < FORWARD_TIMEOUT * 2, "{:?}", t0.elapsed());
    }

    #[tokio::test]
    async fn an_internal_zone_answers_what_it_knows_and_refuses_the_rest() {
        let zone = Zone {
            names: Mutex::new(HashMap::from([("db".to_owned(), vec![Ipv4Addr::new(10, 0, 0, 9)])])),
            upstream: vec![],
            clients: super::super::subnet::Subnet::parse("10.0.0.0/24").ok(),
        };
        assert!(zone.answers("10.0.0.7:5353".parse().unwrap()));
        assert!(!zone.answers("10.1.0.7:5353".parse().unwrap()), "another network");
        let r = zone.reply(&query("db", TYPE_A)).await.unwrap();
        assert_eq!(&r[r.len() - 4..], &[10, 0, 0, 9]);
        let r = zone.reply(&query("nope", TYPE_A)).await.unwrap();
        assert_eq!(r[3] & 0x0f, RCODE_NXDOMAIN);
        let r = zone.reply(&query("example.org", TYPE_A)).await.unwrap();
        assert_eq!(r[3] & 0x0f, RCODE_REFUSED);
    }
}
