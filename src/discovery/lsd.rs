//! Local service discovery (BEP 14): torrents announce themselves by
//! multicast on the LAN, and peers of the same torrent on the same network
//! find each other without tracker or DHT. One socket per process, shared
//! by its torrents. The message codec is pure; the socket is at the edge.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::broadcast;

pub const GROUP: Ipv4Addr = Ipv4Addr::new(239, 192, 152, 143);
pub const PORT: u16 = 6771;
/// How often a torrent announces itself (BEP 14 asks for no more than one
/// announce a minute per torrent; libtorrent uses five minutes).
pub const INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Datagrams longer than this are not LSD announces.
const MAX_DATAGRAM: usize = 1400;

/// A peer's announce: where it listens, for which torrents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announce {
    pub port: u16,
    pub info_hashes: Vec<[u8; 20]>,
    pub cookie: Option<String>,
}

pub fn encode(port: u16, info_hashes: &[[u8; 20]], cookie: &str) -> Vec<u8> {
    let mut m = format!("BT-SEARCH * HTTP/1.1\r\nHost: {GROUP}:{PORT}\r\nPort: {port}\r\n");
    for h in info_hashes {
        m.push_str(&format!("Infohash: {}\r\n", hex::encode(h)));
    }
    m.push_str(&format!("cookie: {cookie}\r\n\r\n\r\n"));
    m.into_bytes()
}

/// Reads an announce; None for anything else (or anything malformed).
pub fn decode(msg: &[u8]) -> Option<Announce> {
    if msg.len() > MAX_DATAGRAM {
        return None;
    }
    let text = std::str::from_utf8(msg).ok()?;
    let mut lines = text.split("\r\n");
    if lines.next()? != "BT-SEARCH * HTTP/1.1" {
        return None;
    }
    let mut port = None;
    let mut info_hashes = Vec::new();
    let mut cookie = None;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.trim().to_ascii_lowercase().as_str() {
            "port" => port = v.parse::<u16>().ok().filter(|p| *p != 0),
            "infohash" => {
                let bytes = hex::decode(v).ok()?;
                info_hashes.push(<[u8; 20]>::try_from(bytes.as_slice()).ok()?);
            }
            "cookie" => cookie = Some(v.to_string()),
            _ => {}
        }
    }
    if info_hashes.is_empty() {
        return None;
    }
    Some(Announce {
        port: port?,
        info_hashes,
        cookie,
    })
}

/// The process's LSD socket: announces go out through it, and what others
/// announce is handed to every torrent that subscribed.
#[derive(Clone)]
pub struct Lsd {
    socket: Arc<UdpSocket>,
    cookie: String,
    heard: broadcast::Sender<(Announce, IpAddr)>,
}

impl Lsd {
    /// Joins the group on the default interface. Fails where multicast is
    /// not possible (no route for it, no network): the caller goes on
    /// without LSD.
    pub fn start() -> std::io::Result<Lsd> {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        // Every BitTorrent client on the machine listens on 6771.
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, PORT)).into())?;
        s.join_multicast_v4(&GROUP, &Ipv4Addr::UNSPECIFIED)?;
        s.set_multicast_loop_v4(true)?;
        s.set_multicast_ttl_v4(1)?;
        s.set_nonblocking(true)?;
        let socket = Arc::new(UdpSocket::from_std(s.into())?);
        let (heard, _) = broadcast::channel(64);
        let cookie = format!("shoal{:08x}", rand::random::<u32>());
        let lsd = Lsd {
            socket,
            cookie,
            heard,
        };
        tokio::spawn(lsd.clone().listen());
        Ok(lsd)
    }

    async fn listen(self) {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        loop {
            let (n, from) = match self.socket.recv_from(&mut buf).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!("LSD: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let Some(a) = decode(&buf[..n]) else {
                continue;
            };
            // Our own announces come back to us (multicast loop).
            if a.cookie.as_deref() == Some(self.cookie.as_str()) {
                continue;
            }
            let _ = self.heard.send((a, from.ip()));
        }
    }

    pub async fn announce(&self, info_hash: [u8; 20], port: u16) -> std::io::Result<()> {
        let msg = encode(port, &[info_hash], &self.cookie);
        self.socket
            .send_to(&msg, SocketAddrV4::new(GROUP, PORT))
            .await
            .map(|_| ())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<(Announce, IpAddr)> {
        self.heard.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announces_round_trip_and_junk_is_refused() {
        let h = [0xab; 20];
        let m = encode(6881, &[h, [1; 20]], "c00kie");
        assert_eq!(
            decode(&m),
            Some(Announce {
                port: 6881,
                info_hashes: vec![h, [1; 20]],
                cookie: Some("c00kie".into()),
            })
        );
        // From BEP 14's own layout, without a cookie and in other case.
        let theirs = b"BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nport: 51413\r\ninfohash: ABABABABABABABABABABABABABABABABABABABAB\r\n\r\n\r\n";
        assert_eq!(decode(theirs).map(|a| a.port), Some(51413));
        assert_eq!(decode(b"M-SEARCH * HTTP/1.1\r\n\r\n"), None);
        assert_eq!(decode(&encode(0, &[h], "x")), None);
        assert_eq!(decode(&encode(1, &[], "x")), None);
        let bad = b"BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nInfohash: zz\r\n\r\n";
        assert_eq!(decode(bad), None);
        assert_eq!(decode(&[b'A'; 5000]), None);
        assert_eq!(decode(&[0xff, 0xfe]), None);
    }
}
