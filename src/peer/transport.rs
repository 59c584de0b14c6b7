//! The two ways a peer connection travels: TCP, or uTP (BEP 29) over the
//! session's UDP socket on the same port number. Everything above the
//! socket (MSE, the wire protocol, every extension) is one code path over
//! [`Socket`]; only dialling differs.
//!
//! The dialling policy is what the mature clients do: with both allowed
//! (`--transport both`, the default), an address is tried over uTP first
//! and over TCP when uTP does not answer or its handshake fails, and what
//! worked is remembered per address, so the next connection goes straight
//! to it. A PEX entry's uTP flag (0x04) moves uTP first for that address,
//! a flags byte without it TCP first.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use librqbit_utp::{UtpStream, UtpStreamReadHalf, UtpStreamWriteHalf};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::utp::{Sending, UtpNet};
use super::PeerError;

/// How long a uTP connect may take: a peer without uTP never answers.
pub const UTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// With both transports, the second is dialled too if the first has not
/// connected by then, and the first to connect is kept (a peer without
/// uTP costs this, not the whole uTP timeout).
pub const HEAD_START: Duration = Duration::from_secs(1);
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Addresses whose working transport is remembered, at most.
const MEMORY: usize = 8192;

/// What one connection runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Utp,
}

impl Transport {
    pub fn label(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Utp => "utp",
        }
    }

    fn other(self) -> Transport {
        match self {
            Transport::Tcp => Transport::Utp,
            Transport::Utp => Transport::Tcp,
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Which transports a session speaks (`--transport`), both ways.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    Utp,
    Tcp,
    #[default]
    Both,
}

impl Mode {
    pub const NAMES: [&'static str; 3] = ["both", "utp", "tcp"];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Utp => "utp",
            Mode::Tcp => "tcp",
            Mode::Both => "both",
        }
    }

    pub fn utp(self) -> bool {
        self != Mode::Tcp
    }

    pub fn tcp(self) -> bool {
        self != Mode::Utp
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "both" => Ok(Mode::Both),
            "utp" => Ok(Mode::Utp),
            "tcp" => Ok(Mode::Tcp),
            _ => Err(format!("{s:?}: expected both, utp or tcp")),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A peer connection's byte stream, over either transport.
pub enum Socket {
    Tcp(TcpStream),
    /// With its place among the connections an exit waits for.
    Utp(UtpStream, Sending),
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Socket({})", self.transport())
    }
}

impl Socket {
    pub fn transport(&self) -> Transport {
        match self {
            Socket::Tcp(_) => Transport::Tcp,
            Socket::Utp(..) => Transport::Utp,
        }
    }

    /// Splits it for a reader and a writer task.
    pub fn into_split(self) -> (SocketRead, SocketWrite) {
        match self {
            Socket::Tcp(s) => {
                let (r, w) = s.into_split();
                (SocketRead::Tcp(r), SocketWrite::Tcp(w))
            }
            Socket::Utp(s, sending) => {
                let (r, w) = s.split();
                (SocketRead::Utp(r), SocketWrite::Utp(w, sending))
            }
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Utp(s, _) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Utp(s, _) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_flush(cx),
            Socket::Utp(s, _) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Utp(s, _) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The reading half of a [`Socket`].
pub enum SocketRead {
    Tcp(OwnedReadHalf),
    Utp(UtpStreamReadHalf),
}

impl AsyncRead for SocketRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            SocketRead::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            SocketRead::Utp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

/// The writing half of a [`Socket`].
pub enum SocketWrite {
    Tcp(OwnedWriteHalf),
    Utp(UtpStreamWriteHalf, Sending),
}

impl AsyncWrite for SocketWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            SocketWrite::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            SocketWrite::Utp(s, _) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            SocketWrite::Tcp(s) => Pin::new(s).poll_flush(cx),
            SocketWrite::Utp(s, _) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            SocketWrite::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            SocketWrite::Utp(s, _) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Which transport worked for which address, oldest forgotten first.
#[derive(Default)]
struct Memory {
    map: HashMap<SocketAddr, Transport>,
    order: VecDeque<SocketAddr>,
}

impl Memory {
    fn set(&mut self, addr: SocketAddr, t: Transport) {
        if self.map.insert(addr, t).is_none() {
            self.order.push_back(addr);
            while self.order.len() > MEMORY {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }
}

/// What a session's peer connections may use: its mode, its uTP socket
/// (when uTP is on), and what worked for each address so far.
pub struct Net {
    mode: Mode,
    utp: Option<Arc<UtpNet>>,
    memory: Mutex<Memory>,
}

impl Default for Net {
    /// TCP only, no uTP socket: for tests and tools that need no uTP.
    fn default() -> Net {
        Net::new(Mode::Tcp, None)
    }
}

impl Net {
    pub fn new(mode: Mode, utp: Option<Arc<UtpNet>>) -> Net {
        let mode = match (mode, &utp) {
            (Mode::Both, None) => Mode::Tcp,
            (m, _) => m,
        };
        Net {
            mode,
            utp,
            memory: Mutex::default(),
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn utp(&self) -> Option<&Arc<UtpNet>> {
        self.utp.as_ref()
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The transports to try for `addr`, in order.
    pub fn order(&self, addr: SocketAddr) -> Vec<Transport> {
        match self.mode {
            Mode::Tcp => vec![Transport::Tcp],
            Mode::Utp => vec![Transport::Utp],
            Mode::Both => {
                let first = self
                    .memory()
                    .map
                    .get(&addr)
                    .copied()
                    .unwrap_or(Transport::Utp);
                vec![first, first.other()]
            }
        }
    }

    /// `addr` took a connection over `t`: dial it that way first next time.
    pub fn worked(&self, addr: SocketAddr, t: Transport) {
        if self.mode == Mode::Both {
            self.memory().set(addr, t);
        }
    }

    /// A PEX entry's flags for `addr` (BEP 11): 0x04 says it speaks uTP.
    /// What a connection taught us wins over hearsay.
    pub fn pex_hint(&self, addr: SocketAddr, flags: u8) {
        if self.mode != Mode::Both {
            return;
        }
        let t = if flags & crate::peer::pex::flags::UTP != 0 {
            Transport::Utp
        } else {
            Transport::Tcp
        };
        let mut m = self.memory();
        if !m.map.contains_key(&addr) {
            m.set(addr, t);
        }
    }

    /// Resolves when a uTP connection to `addr` opened at `since` is gone
    /// for good: its UDP port answered "port unreachable" (the peer's
    /// process ended). Never for TCP, whose socket says so itself.
    pub async fn gone(&self, addr: SocketAddr, t: Transport, since: std::time::Instant) {
        match (t, &self.utp) {
            (Transport::Utp, Some(u)) => u.unreachable().wait_since(addr, since).await,
            _ => std::future::pending().await,
        }
    }

    /// Opens a connection to `addr` over the first of `order` that
    /// connects: the first gets [`HEAD_START`], then the second is dialled
    /// beside it and whichever connects first is kept (the other attempt
    /// is dropped). With one transport, just that one.
    pub async fn dial_first(
        &self,
        addr: SocketAddr,
        order: &[Transport],
    ) -> Result<Socket, PeerError> {
        let (first, second) = match order {
            [] => return Err(PeerError::ConnectTimeout),
            [one] => return self.dial(addr, *one).await,
            [a, b, ..] => (*a, *b),
        };
        let a = self.dial(addr, first);
        tokio::pin!(a);
        let early = tokio::select! {
            r = &mut a => Some(r),
            _ = tokio::time::sleep(HEAD_START) => None,
        };
        match early {
            Some(Ok(s)) => Ok(s),
            // The first failed outright: the second alone.
            Some(Err(e)) => {
                tracing::debug!("{addr}: over {first}: {e}");
                self.dial(addr, second).await.map_err(|e2| telling(e, e2))
            }
            None => {
                let b = self.dial(addr, second);
                tokio::pin!(b);
                tokio::select! {
                    r = &mut a => match r {
                        Ok(s) => Ok(s),
                        Err(e) => b.await.map_err(|e2| telling(e, e2)),
                    },
                    r = &mut b => match r {
                        Ok(s) => Ok(s),
                        Err(e) => a.await.map_err(|e2| telling(e2, e)),
                    },
                }
            }
        }
    }

    /// Opens a connection to `addr` over `t`.
    pub async fn dial(&self, addr: SocketAddr, t: Transport) -> Result<Socket, PeerError> {
        match t {
            Transport::Tcp => {
                match tokio::time::timeout(TCP_CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                    Err(_) => Err(PeerError::ConnectTimeout),
                    Ok(Err(e)) => Err(PeerError::Connect(e)),
                    Ok(Ok(s)) => {
                        s.set_nodelay(true).ok();
                        Ok(Socket::Tcp(s))
                    }
                }
            }
            Transport::Utp => {
                let utp = self.utp.as_ref().ok_or_else(|| {
                    PeerError::Connect(std::io::Error::other("uTP is off (--transport tcp)"))
                })?;
                match tokio::time::timeout(UTP_CONNECT_TIMEOUT, utp.connect(addr)).await {
                    Err(_) => Err(PeerError::ConnectTimeout),
                    Ok(Err(e)) => Err(PeerError::Connect(e)),
                    Ok(Ok(s)) => Ok(Socket::Utp(s, utp.sending())),
                }
            }
        }
    }
}

/// Of two failures, the one that says more: "connection refused" over
/// TCP tells the user something, uTP's silence (a timeout) does not.
fn telling(a: PeerError, b: PeerError) -> PeerError {
    match a {
        PeerError::ConnectTimeout => b,
        a => a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], p))
    }

    fn both() -> Net {
        Net {
            mode: Mode::Both,
            utp: None,
            memory: Mutex::default(),
        }
    }

    #[test]
    fn utp_first_then_what_worked() {
        let n = both();
        assert_eq!(n.order(addr(1)), [Transport::Utp, Transport::Tcp]);
        n.worked(addr(1), Transport::Tcp);
        assert_eq!(n.order(addr(1)), [Transport::Tcp, Transport::Utp]);
        assert_eq!(n.order(addr(2)), [Transport::Utp, Transport::Tcp]);
        n.worked(addr(1), Transport::Utp);
        assert_eq!(n.order(addr(1)), [Transport::Utp, Transport::Tcp]);
    }

    #[test]
    fn pex_flags_order_unknown_addresses_only() {
        let n = both();
        n.pex_hint(addr(1), 0x10);
        assert_eq!(n.order(addr(1)), [Transport::Tcp, Transport::Utp]);
        n.pex_hint(addr(2), 0x04 | 0x10);
        assert_eq!(n.order(addr(2)), [Transport::Utp, Transport::Tcp]);
        n.worked(addr(3), Transport::Utp);
        n.pex_hint(addr(3), 0);
        assert_eq!(n.order(addr(3)), [Transport::Utp, Transport::Tcp]);
    }

    #[test]
    fn a_single_mode_dials_one_way_and_learns_nothing() {
        for (mode, t) in [(Mode::Tcp, Transport::Tcp), (Mode::Utp, Transport::Utp)] {
            let n = Net {
                mode,
                utp: None,
                memory: Mutex::default(),
            };
            n.worked(addr(1), t.other());
            n.pex_hint(addr(1), 0);
            assert_eq!(n.order(addr(1)), [t]);
        }
    }

    #[test]
    fn memory_is_bounded() {
        let n = both();
        for p in 0..(MEMORY as u32 + 100) {
            n.worked(
                SocketAddr::from(([10, 1, (p >> 8) as u8, p as u8], (p >> 16) as u16 + 1)),
                Transport::Tcp,
            );
        }
        let m = n.memory();
        assert_eq!(m.map.len(), MEMORY);
        assert_eq!(m.order.len(), MEMORY);
    }

    /// A TCP peer without uTP: with both transports the race connects
    /// over TCP after the head start, not after the whole uTP timeout.
    #[tokio::test]
    async fn the_race_falls_to_tcp_after_the_head_start() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        // Its UDP side is held by a socket that answers nothing.
        let _mute = std::net::UdpSocket::bind(addr).unwrap();
        let utp = UtpNet::bind(0, 16).unwrap();
        let n = Net::new(Mode::Both, Some(Arc::new(utp)));
        let start = std::time::Instant::now();
        let s = n.dial_first(addr, &n.order(addr)).await.unwrap();
        assert_eq!(s.transport(), Transport::Tcp);
        assert!(start.elapsed() >= HEAD_START);
        // uTP alone does not connect.
        let e = n.dial(addr, Transport::Utp).await.err().unwrap();
        assert!(matches!(e, PeerError::ConnectTimeout), "{e}");
    }

    /// A TCP peer whose UDP port is closed: the ICMP "port unreachable"
    /// ends the uTP attempt at once, so TCP is dialled without waiting
    /// out the head start.
    #[tokio::test]
    async fn a_closed_udp_port_falls_to_tcp_at_once() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let n = Net::new(Mode::Both, Some(Arc::new(UtpNet::bind(0, 16).unwrap())));
        let e = n.dial(addr, Transport::Utp).await.err().unwrap();
        assert!(
            matches!(&e, PeerError::Connect(io) if io.kind() == std::io::ErrorKind::ConnectionRefused),
            "{e}"
        );
        let s = n.dial_first(addr, &n.order(addr)).await.unwrap();
        assert_eq!(s.transport(), Transport::Tcp);
    }

    /// Two uTP endpoints on loopback: a dial connects over uTP at once and
    /// bytes cross both ways.
    #[tokio::test]
    async fn utp_connects_and_carries_bytes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let server = Arc::new(UtpNet::bind(0, 16).unwrap());
        let port = server.port();
        let accept = tokio::spawn({
            let server = server.clone();
            async move {
                let mut s = server.socket().accept().await.unwrap();
                let mut buf = [0u8; 5];
                s.read_exact(&mut buf).await.unwrap();
                s.write_all(b"world").await.unwrap();
                buf
            }
        });
        let n = Net::new(Mode::Both, Some(Arc::new(UtpNet::bind(0, 16).unwrap())));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut s = n.dial_first(addr, &n.order(addr)).await.unwrap();
        assert_eq!(s.transport(), Transport::Utp);
        s.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"world");
        assert_eq!(&accept.await.unwrap(), b"hello");
    }

    #[test]
    fn modes_parse_and_print() {
        for name in Mode::NAMES {
            assert_eq!(name.parse::<Mode>().unwrap().name(), name);
        }
        assert!("udp".parse::<Mode>().is_err());
        assert_eq!(Mode::default(), Mode::Both);
    }
}
