//! uTP (BEP 29) on the UDP side of the listening port. shoal owns the UDP
//! socket and hands it to `librqbit-utp` as its transport, so every
//! datagram passes [`Guard`] before the uTP state machines see it:
//! malformed packets are dropped there, and connection attempts (SYNs)
//! are rate-limited per source address, so a flood of fake connection ids
//! costs a counter, not a connection slot. What is refused is counted and
//! said in one log line at most every [`LOG_EVERY`].
//!
//! Behind the guard, `librqbit-utp` keeps a connection table capped at
//! [`UtpNet::bind`]'s `max_connections` (beyond it a SYN is answered with
//! a RESET), times out peers that stop answering, and runs LEDBAT
//! (vendor/librqbit-utp/PATCHES.md), which keeps our uploads from filling
//! the user's uplink queue.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use librqbit_dualstack_sockets::{BindOpts, PollSendToVectored, UdpSocket};
use librqbit_utp::raw::{Type, UtpHeader};
use librqbit_utp::{
    CongestionConfig, CongestionControllerKind, DefaultUtpEnvironment, SocketOpts, UtpSocket,
};

/// Connection attempts one source address may make in a burst, and per
/// second after it. A client opens one connection per torrent to a peer;
/// on loopback every peer of a test shares one address, hence the room.
const SYN_BURST: f64 = 64.0;
const SYN_PER_SEC: f64 = 32.0;
/// Source addresses the SYN limiter keeps buckets for; past this the
/// oldest idle ones are forgotten (a spoofed flood cannot grow it).
const MAX_TRACKED: usize = 4096;
/// All sources together: the ceiling for a flood from many addresses.
const SYN_GLOBAL_BURST: f64 = 256.0;
const SYN_GLOBAL_PER_SEC: f64 = 128.0;
/// At most one log line about refused packets this often.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// The socket's kernel receive buffer: room for bursts of many peers
/// (the kernel caps it at net.core.rmem_max).
const RECV_BUFFER: usize = 8 << 20;

/// What the guard decides about one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A well-formed uTP packet: on to the uTP dispatcher.
    Utp,
    /// Not uTP, or uTP that breaks the format (bad version or type,
    /// truncated extensions, payload where none may be).
    Malformed,
    /// A SYN over its source's (or everyone's) rate.
    SynLimited,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    fn take(&mut self, now: Instant, burst: f64, rate: f64) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * rate).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Counts of what was refused since the last log line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refused {
    pub malformed: u64,
    pub syn_limited: u64,
}

/// The check every datagram passes before uTP sees it. Pure: no I/O, the
/// clock is passed in.
pub struct Guard {
    per_source: HashMap<IpAddr, Bucket>,
    global: Bucket,
    refused: Refused,
    /// Totals since the start, for tests and the log.
    pub total: Refused,
    last_log: Option<Instant>,
}

impl Guard {
    pub fn new(now: Instant) -> Guard {
        Guard {
            per_source: HashMap::new(),
            global: Bucket::full(SYN_GLOBAL_BURST, now),
            refused: Refused::default(),
            total: Refused::default(),
            last_log: None,
        }
    }

    /// Classifies `packet` from `from`.
    pub fn check(&mut self, packet: &[u8], from: SocketAddr, now: Instant) -> Verdict {
        let verdict = match parse(packet) {
            None => Verdict::Malformed,
            Some(h) if h.get_type() == Type::ST_SYN => self.admit_syn(from.ip(), now),
            Some(_) => Verdict::Utp,
        };
        match verdict {
            Verdict::Utp => {}
            Verdict::Malformed => {
                self.refused.malformed += 1;
                self.total.malformed += 1;
            }
            Verdict::SynLimited => {
                self.refused.syn_limited += 1;
                self.total.syn_limited += 1;
            }
        }
        verdict
    }

    fn admit_syn(&mut self, ip: IpAddr, now: Instant) -> Verdict {
        if self.per_source.len() >= MAX_TRACKED && !self.per_source.contains_key(&ip) {
            // Forget sources whose bucket has refilled: they are idle.
            let full = SYN_BURST / SYN_PER_SEC;
            self.per_source
                .retain(|_, b| now.saturating_duration_since(b.at).as_secs_f64() < full);
        }
        let admitted = if self.per_source.len() < MAX_TRACKED || self.per_source.contains_key(&ip) {
            self.per_source
                .entry(ip)
                .or_insert_with(|| Bucket::full(SYN_BURST, now))
                .take(now, SYN_BURST, SYN_PER_SEC)
        } else {
            true
        };
        if admitted && self.global.take(now, SYN_GLOBAL_BURST, SYN_GLOBAL_PER_SEC) {
            Verdict::Utp
        } else {
            Verdict::SynLimited
        }
    }

    /// Sources with a live SYN bucket (bounded by [`MAX_TRACKED`]).
    pub fn tracked(&self) -> usize {
        self.per_source.len()
    }

    /// What was refused since the last call, once per [`LOG_EVERY`]; None
    /// when nothing was or it is too soon.
    pub fn take_report(&mut self, now: Instant) -> Option<Refused> {
        if self.refused == Refused::default()
            || self
                .last_log
                .is_some_and(|t| now.saturating_duration_since(t) < LOG_EVERY)
        {
            return None;
        }
        self.last_log = Some(now);
        Some(std::mem::take(&mut self.refused))
    }
}

/// The uTP header of a well-formed packet: version 1, a known type, its
/// extension chain inside the packet, data only in ST_DATA (which must
/// carry some).
pub fn parse(packet: &[u8]) -> Option<UtpHeader> {
    let (h, len) = UtpHeader::deserialize(packet)?;
    let payload = packet.len().checked_sub(len)?;
    match (h.get_type(), payload) {
        (Type::ST_DATA, 0) => None,
        (Type::ST_DATA, _) | (_, 0) => Some(h),
        _ => None,
    }
}

/// Addresses whose UDP port answered "port unreachable" (ICMP) lately:
/// a uTP connect to one of them fails at once instead of timing out, so
/// a peer without uTP is dialled over TCP without waiting; and a uTP
/// connection to a peer whose process is gone ends at once, as a TCP
/// connection does on its RST, instead of after uTP's inactivity timeout
/// (libtorrent does the same).
#[derive(Default)]
pub struct Unreachable {
    recent: Mutex<HashMap<SocketAddr, Instant>>,
    notify: tokio::sync::Notify,
}

impl Unreachable {
    /// Entries kept at most, and for how long.
    const MAX: usize = 1024;
    const KEEP: Duration = Duration::from_secs(10);

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Instant>> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, addr: SocketAddr, now: Instant) {
        let mut m = self.lock();
        if m.len() >= Self::MAX {
            m.retain(|_, t| now.saturating_duration_since(*t) < Self::KEEP);
        }
        if m.len() < Self::MAX {
            m.insert(addr, now);
        }
        drop(m);
        self.notify.notify_waiters();
    }

    /// Resolves once `addr` is reported unreachable after `since`.
    pub async fn wait_since(&self, addr: SocketAddr, since: Instant) {
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lock().get(&addr).is_some_and(|t| *t >= since) {
                return;
            }
            notified.await;
        }
    }
}

/// The UDP socket as `librqbit-utp` sees it: reads pass the [`Guard`];
/// a read error (an ICMP error queued on the socket) is logged and
/// skipped rather than ending uTP for the whole session, and a "port
/// unreachable" is noted in [`Unreachable`].
pub struct UdpTransport {
    sock: UdpSocket,
    guard: Mutex<Guard>,
    unreachable: Arc<Unreachable>,
}

impl UdpTransport {
    fn guard(&self) -> std::sync::MutexGuard<'_, Guard> {
        self.guard.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn report(&self, now: Instant) {
        let report = self.guard().take_report(now);
        if let Some(r) = report {
            tracing::warn!(
                "uTP: refused {} malformed packets and {} connection attempts over the rate limit (a flood?) in the last {}s",
                r.malformed,
                r.syn_limited,
                LOG_EVERY.as_secs()
            );
        }
    }
}

/// Whether a failed send is, for uTP, a lost packet rather than an error
/// that must end the connection:
/// - ENOBUFS: the uplink's queue (qdisc) is full, as when a router drops
///   the packet; uTP's loss recovery deals with it, and ending the
///   connection would hit exactly when the link is busiest;
/// - ECONNREFUSED and the unreachables: with IP_RECVERR an ICMP error
///   from *another* destination is reported on the socket's next call,
///   which may be a send to a peer that is fine (the error queue says
///   whom it was about; see [`queued_errors`]).
fn lost_not_failed(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ENOBUFS
                | libc::ECONNREFUSED
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::EHOSTDOWN
        )
    )
}

impl UdpTransport {
    /// Binds UDP `port` (both families where the system allows).
    fn bind(port: u16) -> std::io::Result<UdpTransport> {
        let addr = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port));
        let sock = UdpSocket::bind_udp(
            addr,
            BindOpts {
                request_dualstack: true,
                reuseport: false,
                device: None,
            },
        )
        .or_else(|_| {
            UdpSocket::bind_udp(
                SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, port)),
                BindOpts::default(),
            )
        })
        .map_err(std::io::Error::other)?;
        let sref = socket2::SockRef::from(sock.socket());
        let _ = sref.set_recv_buffer_size(RECV_BUFFER);
        let _ = sref.set_send_buffer_size(RECV_BUFFER);
        dont_fragment(sock.socket());
        receive_errors(sock.socket());
        Ok(UdpTransport {
            sock,
            guard: Mutex::new(Guard::new(Instant::now())),
            unreachable: Arc::default(),
        })
    }

    /// A send's result as uTP should see it: [`lost_not_failed`] errors
    /// become a packet sent (and lost), and ICMP errors queued on the
    /// socket are read and noted.
    fn sent(&self, r: std::io::Result<usize>, len: usize) -> std::io::Result<usize> {
        match r {
            Err(e) if lost_not_failed(&e) => {
                tracing::trace!("uTP: a packet lost to {e}");
                let refused = queued_errors(self.sock.socket());
                let now = Instant::now();
                for a in refused {
                    self.unreachable.add(a, now);
                }
                Ok(len)
            }
            r => r,
        }
    }
}

impl PollSendToVectored for UdpTransport {
    fn poll_send_to_vectored(
        &self,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
        target: SocketAddr,
    ) -> Poll<std::io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        self.sock
            .poll_send_to_vectored(cx, bufs, target)
            .map(|r| self.sent(r, len))
    }
}

impl librqbit_utp::Transport for UdpTransport {
    async fn recv_from(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        loop {
            match self.sock.recv_from(buf).await {
                Ok((n, from)) => {
                    let from = SocketAddr::new(from.ip().to_canonical(), from.port());
                    let now = Instant::now();
                    let verdict = self.guard().check(&buf[..n], from, now);
                    if verdict == Verdict::Utp {
                        return Ok((n, from));
                    }
                    self.report(now);
                }
                Err(e) => {
                    let refused = queued_errors(self.sock.socket());
                    tracing::debug!("uTP socket: {e} (port unreachable: {refused:?})");
                    let now = Instant::now();
                    for a in &refused {
                        self.unreachable.add(*a, now);
                    }
                    if refused.is_empty() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        }
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> std::io::Result<usize> {
        self.sent(self.sock.send_to(buf, target).await, buf.len())
    }

    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddr,
    ) -> Poll<std::io::Result<usize>> {
        self.sock
            .poll_send_to(cx, buf, target)
            .map(|r| self.sent(r, buf.len()))
    }

    fn bind_addr(&self) -> SocketAddr {
        self.sock.bind_addr()
    }
}

type Inner = UtpSocket<UdpTransport, DefaultUtpEnvironment>;

/// The session's uTP endpoint: one UDP socket, every uTP connection.
/// Dropping it ends the uTP tasks and closes the socket.
pub struct UtpNet {
    socket: Arc<Inner>,
    port: u16,
    cancel: tokio_util::sync::CancellationToken,
    unreachable: Arc<Unreachable>,
    outbox: Arc<Outbox>,
}

/// uTP connections whose sending is not over. Their unsent bytes live in
/// this process (TCP's live in the kernel and outlast it), so an exit
/// waits for them, a bounded time: [`UtpNet::flushed`].
#[derive(Default)]
struct Outbox {
    open: AtomicUsize,
    idle: tokio::sync::Notify,
}

/// One connection's place in the [`Outbox`]: held by its write half until
/// the half is shut down (every byte acknowledged) or dropped.
pub struct Sending(Arc<Outbox>);

impl Drop for Sending {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Drop for UtpNet {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl UtpNet {
    /// Binds UDP `port` (both families where the system allows) and starts
    /// uTP on it, with at most `max_connections` uTP connections at once.
    pub fn bind(port: u16, max_connections: usize) -> std::io::Result<UtpNet> {
        let transport = UdpTransport::bind(port)?;
        let bound = transport.sock.bind_addr().port();
        let unreachable = transport.unreachable.clone();
        let cancel = tokio_util::sync::CancellationToken::new();
        let opts = SocketOpts {
            cancellation_token: cancel.clone(),
            congestion: CongestionConfig {
                kind: CongestionControllerKind::Ledbat,
                tracing: false,
            },
            max_live_vsocks: NonZeroUsize::new(max_connections.max(1)),
            // A BitTorrent connection needs no ACK of its FIN.
            dont_wait_for_lastack: true,
            remote_inactivity_timeout: Some(Duration::from_secs(20)),
            ..Default::default()
        };
        let socket = UtpSocket::new_with_opts(transport, DefaultUtpEnvironment::default(), opts)
            .map_err(std::io::Error::other)?;
        Ok(UtpNet {
            socket,
            port: bound,
            cancel,
            unreachable,
            outbox: Arc::default(),
        })
    }

    /// Counts a new connection as sending until its [`Sending`] drops.
    pub fn sending(&self) -> Sending {
        self.outbox.open.fetch_add(1, Ordering::SeqCst);
        Sending(self.outbox.clone())
    }

    /// Waits until no connection has bytes left to send, or `within`
    /// passed: whether they all went.
    pub async fn flushed(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let idle = self.outbox.idle.notified();
            if self.outbox.open.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return false;
            }
        }
    }

    pub fn socket(&self) -> &Arc<Inner> {
        &self.socket
    }

    /// Opens a uTP connection to `addr`; fails at once with "connection
    /// refused" when its UDP port answers "port unreachable".
    pub async fn connect(&self, addr: SocketAddr) -> std::io::Result<librqbit_utp::UtpStream> {
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        let since = Instant::now();
        tokio::select! {
            r = self.socket.connect(addr) => r.map_err(std::io::Error::other),
            // Said as TCP says it: the status line shows it as is.
            _ = self.unreachable.wait_since(addr, since) => {
                Err(std::io::ErrorKind::ConnectionRefused.into())
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where "port unreachable" answers are noted.
    pub fn unreachable(&self) -> &Unreachable {
        &self.unreachable
    }
}

/// Asks for ICMP errors on the socket (IP_RECVERR): without it Linux
/// keeps "port unreachable" from an unconnected UDP socket, and a uTP
/// dial to a peer without uTP could only time out.
fn receive_errors(sock: &tokio::net::UdpSocket) {
    use std::os::fd::AsRawFd;
    let fd = sock.as_raw_fd();
    let on: libc::c_int = 1;
    for (level, opt) in [
        (libc::IPPROTO_IP, libc::IP_RECVERR),
        (libc::IPPROTO_IPV6, libc::IPV6_RECVERR),
    ] {
        // SAFETY: a valid socket, and an int option of the right size.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                opt,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// Reads the socket's error queue (MSG_ERRQUEUE, without blocking) and
/// returns the destinations that answered "port unreachable".
fn queued_errors(sock: &tokio::net::UdpSocket) -> Vec<SocketAddr> {
    use std::os::fd::AsRawFd;
    let fd = sock.as_raw_fd();
    let mut out = Vec::new();
    // A bounded drain: the queue is short, and a loop must end.
    for _ in 0..64 {
        // SAFETY: plain C structs, zeroed, handed to recvmsg with their
        // sizes; the control messages are walked with the CMSG macros
        // within `msg_controllen`, and read unaligned.
        unsafe {
            let mut name: libc::sockaddr_storage = std::mem::zeroed();
            let mut data = [0u8; 64];
            let mut control = [0u8; 256];
            let mut iov = libc::iovec {
                iov_base: data.as_mut_ptr().cast(),
                iov_len: data.len(),
            };
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = control.len() as _;
            if libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) < 0 {
                break;
            }
            let mut refused = false;
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                let h = &*c;
                let ours = (h.cmsg_level == libc::IPPROTO_IP && h.cmsg_type == libc::IP_RECVERR)
                    || (h.cmsg_level == libc::IPPROTO_IPV6 && h.cmsg_type == libc::IPV6_RECVERR);
                if ours {
                    let e: libc::sock_extended_err =
                        std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    refused |= e.ee_errno == libc::ECONNREFUSED as u32
                        && (e.ee_origin == libc::SO_EE_ORIGIN_ICMP
                            || e.ee_origin == libc::SO_EE_ORIGIN_ICMP6);
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
            if refused {
                if let Some(a) = sockaddr(&name) {
                    out.push(SocketAddr::new(a.ip().to_canonical(), a.port()));
                }
            }
        }
    }
    out
}

/// The address in a `sockaddr_storage` filled by the kernel.
fn sockaddr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in, which fits.
            let a: libc::sockaddr_in =
                unsafe { std::ptr::read_unaligned((s as *const libc::sockaddr_storage).cast()) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6, which fits.
            let a: libc::sockaddr_in6 =
                unsafe { std::ptr::read_unaligned((s as *const libc::sockaddr_storage).cast()) };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::from((ip, u16::from_be(a.sin6_port))))
        }
        _ => None,
    }
}

/// Sets "don't fragment", so that too large a packet fails at once and
/// uTP's path MTU probing shrinks its segments (as `librqbit-utp` does on
/// sockets it binds itself).
fn dont_fragment(sock: &tokio::net::UdpSocket) {
    use std::os::fd::AsRawFd;
    let fd = sock.as_raw_fd();
    let v: libc::c_int = libc::IP_PMTUDISC_DO;
    for (level, opt) in [
        (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER),
        (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER),
    ] {
        // SAFETY: a valid socket, and an int option of the right size.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(t: Type) -> Vec<u8> {
        let h = UtpHeader {
            htype: t,
            connection_id: 7.into(),
            ..Default::default()
        };
        let mut b = vec![0u8; 64];
        let n = h.serialize(&mut b).unwrap();
        b.truncate(n);
        b
    }

    fn from(ip: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::from((ip, port))
    }

    #[test]
    fn well_formed_packets_pass_malformed_ones_do_not() {
        let mut g = Guard::new(Instant::now());
        let now = Instant::now();
        let a = from([127, 0, 0, 1], 1);
        for t in [Type::ST_STATE, Type::ST_FIN, Type::ST_RESET, Type::ST_SYN] {
            assert_eq!(g.check(&header(t), a, now), Verdict::Utp, "{t:?}");
        }
        let mut data = header(Type::ST_DATA);
        assert_eq!(g.check(&data, a, now), Verdict::Malformed, "empty ST_DATA");
        data.extend_from_slice(b"payload");
        assert_eq!(g.check(&data, a, now), Verdict::Utp);
        let mut state = header(Type::ST_STATE);
        state.push(1);
        assert_eq!(
            g.check(&state, a, now),
            Verdict::Malformed,
            "ST_STATE with data"
        );
        // Version 2, type 5, short, a DHT query, an extension past the end.
        let mut v2 = header(Type::ST_STATE);
        v2[0] = (2 << 4) | 2;
        let mut t5 = header(Type::ST_STATE);
        t5[0] = (5 << 4) | 1;
        let mut ext = header(Type::ST_STATE);
        ext[1] = 1;
        ext.extend_from_slice(&[0, 8, 1, 2]);
        for bad in [
            v2,
            t5,
            ext,
            header(Type::ST_STATE)[..19].to_vec(),
            b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe".to_vec(),
            Vec::new(),
        ] {
            assert_eq!(g.check(&bad, a, now), Verdict::Malformed, "{bad:?}");
        }
        assert_eq!(g.total.malformed, 8);
    }

    #[test]
    fn a_syn_flood_from_one_address_is_cut_to_the_rate() {
        let start = Instant::now();
        let mut g = Guard::new(start);
        let syn = header(Type::ST_SYN);
        let flooder = from([127, 0, 0, 9], 4000);
        let passed = (0..10_000)
            .filter(|_| g.check(&syn, flooder, start) == Verdict::Utp)
            .count();
        assert_eq!(passed, SYN_BURST as usize);
        // Another source is not held back by it.
        assert_eq!(g.check(&syn, from([10, 0, 0, 2], 1), start), Verdict::Utp);
        // A second later the flooder has a second's worth again.
        let later = start + Duration::from_secs(1);
        let passed = (0..1000)
            .filter(|_| g.check(&syn, flooder, later) == Verdict::Utp)
            .count();
        assert_eq!(passed, SYN_PER_SEC as usize);
        // Other packets from it are not limited.
        assert_eq!(
            g.check(&header(Type::ST_STATE), flooder, later),
            Verdict::Utp
        );
        assert_eq!(g.total.syn_limited, 10_000 - 64 + 1000 - 32);
    }

    #[test]
    fn many_sources_are_held_by_the_global_rate_and_bounded_memory() {
        let start = Instant::now();
        let mut g = Guard::new(start);
        let syn = header(Type::ST_SYN);
        let mut passed = 0;
        for i in 0..20_000u32 {
            let ip = [10, (i >> 16) as u8, (i >> 8) as u8, i as u8];
            if g.check(&syn, from(ip, 1), start) == Verdict::Utp {
                passed += 1;
            }
        }
        assert_eq!(passed, SYN_GLOBAL_BURST as usize);
        assert!(g.tracked() <= MAX_TRACKED);
    }

    #[test]
    fn a_full_queue_or_someone_elses_icmp_error_is_a_lost_packet() {
        for errno in [libc::ENOBUFS, libc::ECONNREFUSED, libc::EHOSTUNREACH] {
            assert!(lost_not_failed(&std::io::Error::from_raw_os_error(errno)));
        }
        for errno in [libc::EBADF, libc::EMSGSIZE, libc::EINVAL] {
            assert!(!lost_not_failed(&std::io::Error::from_raw_os_error(errno)));
        }
    }

    /// With IP_RECVERR, a "port unreachable" from one peer surfaces on the
    /// socket's next call, here a send to another: that send must not be
    /// an error, and the refusal is noted for the right address.
    #[tokio::test]
    async fn an_icmp_error_for_one_peer_does_not_fail_a_send_to_another() {
        use librqbit_utp::Transport;
        let t = UdpTransport::bind(0).unwrap();
        let closed = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap()
        };
        let alive = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let since = Instant::now();
        for _ in 0..20 {
            t.send_to(b"x", closed).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            t.send_to(b"y", alive.local_addr().unwrap()).await.unwrap();
        }
        tokio::time::timeout(
            Duration::from_secs(30),
            t.unreachable.wait_since(closed, since),
        )
        .await
        .expect("the refusal was noted");
        assert!(!t
            .unreachable
            .lock()
            .contains_key(&alive.local_addr().unwrap()));
    }

    #[test]
    fn refusals_are_reported_at_most_once_per_interval() {
        let start = Instant::now();
        let mut g = Guard::new(start);
        assert_eq!(g.take_report(start), None);
        g.check(b"junk", from([127, 0, 0, 1], 1), start);
        assert_eq!(
            g.take_report(start),
            Some(Refused {
                malformed: 1,
                syn_limited: 0
            })
        );
        g.check(b"junk", from([127, 0, 0, 1], 1), start);
        assert_eq!(g.take_report(start + Duration::from_secs(1)), None);
        assert_eq!(
            g.take_report(start + LOG_EVERY).map(|r| r.malformed),
            Some(1)
        );
    }
}
