//! The session's listening port: binding it (IPv6 and IPv4 where the
//! system allows), and the accept loop that reads each incoming handshake
//! and hands the connection to the torrent it names.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::peer::mse::Policy;
use crate::peer::read_incoming_handshake;
use crate::peer::transport::Socket;
use crate::peer::utp::UtpNet;
use crate::torrent::Event;

/// Connections the accept loop hands on, by info-hash.
pub(super) type Routes = Arc<Mutex<HashMap<[u8; 20], mpsc::Sender<Event>>>>;

/// A torrent's entries in the route table, taken out when it is dropped
/// (on every way out of a run).
pub(super) struct RouteGuard {
    routes: Routes,
    info_hashes: Vec<[u8; 20]>,
}

impl RouteGuard {
    /// Routes connections under each of `info_hashes` to `events`; an
    /// error if one of them is running already.
    pub(super) fn register(
        routes: &Routes,
        info_hashes: Vec<[u8; 20]>,
        events: &mpsc::Sender<Event>,
    ) -> Result<RouteGuard> {
        let mut r = routes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = info_hashes.iter().find(|h| r.contains_key(*h)) {
            anyhow::bail!("{} is already running in this session", hex::encode(h));
        }
        for h in &info_hashes {
            r.insert(*h, events.clone());
        }
        Ok(RouteGuard {
            routes: routes.clone(),
            info_hashes,
        })
    }
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        if let Ok(mut r) = self.routes.lock() {
            for h in &self.info_hashes {
                r.remove(h);
            }
        }
    }
}

/// Listens on IPv6 and IPv4 at once where the system allows (a `[::]`
/// socket also takes IPv4 connections on Linux), else on IPv4 only.
async fn bind_port(port: u16) -> std::io::Result<TcpListener> {
    match TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)).await {
        Ok(l) => Ok(l),
        Err(_) => TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).await,
    }
}

/// Binds the listening port: TCP, and with `utp` (the size of its
/// connection table) the same number on UDP for uTP, so the one port
/// peers learn reaches us both ways. `port` None: the first of 6881–6889
/// free on both, else any port free on both.
pub(super) async fn bind(
    port: Option<u16>,
    utp: Option<usize>,
) -> Result<(TcpListener, Option<UtpNet>)> {
    let pair = |l: TcpListener| -> std::io::Result<(TcpListener, Option<UtpNet>)> {
        match utp {
            None => Ok((l, None)),
            Some(cap) => {
                let p = l.local_addr()?.port();
                Ok((l, Some(UtpNet::bind(p, cap)?)))
            }
        }
    };
    match port {
        Some(p) => {
            let l = bind_port(p)
                .await
                .with_context(|| format!("cannot listen on TCP port {p}"))?;
            pair(l).with_context(|| format!("cannot listen on UDP port {p} for uTP"))
        }
        None => {
            for p in 6881..=6889 {
                if let Ok(l) = bind_port(p).await {
                    if let Ok(both) = pair(l) {
                        return Ok(both);
                    }
                }
            }
            // Any port: the system picks a free TCP one, which may be
            // taken on UDP; a few tries find one free on both.
            let mut last = None;
            for _ in 0..20 {
                match pair(bind_port(0).await?) {
                    Ok(both) => return Ok(both),
                    Err(e) => last = Some(e),
                }
            }
            Err(anyhow::anyhow!(
                "cannot find a port free on both TCP and UDP: {}",
                last.map(|e| e.to_string()).unwrap_or_default()
            ))
        }
    }
}

/// Our global IPv6 address: the source the kernel would pick toward a
/// global destination (a connected UDP socket sends nothing), if public.
pub(super) fn global_ipv6() -> Option<Ipv6Addr> {
    let s = std::net::UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).ok()?;
    // Any global unicast address does; no packet leaves.
    s.connect(("2001:4860:4860::8888", 9)).ok()?;
    match s.local_addr().ok()?.ip() {
        std::net::IpAddr::V6(ip) if crate::reach::is_public(ip.into()) => Some(ip),
        _ => None,
    }
}

/// Whether a `[::]` listener also takes IPv4 (IPV6_V6ONLY off, the Linux
/// default, but a sysctl can change it).
pub(super) fn listen_dual_stack(listener: &TcpListener) -> bool {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        if !listener.local_addr().is_ok_and(|a| a.is_ipv6()) {
            return false;
        }
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid socket, and a buffer of the option's size.
        let r = unsafe {
            libc::getsockopt(
                listener.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        r == 0 && v == 0
    }
    #[cfg(not(unix))]
    {
        listener.local_addr().is_ok_and(|a| a.is_ipv6())
    }
}

/// What the accept loops share.
#[derive(Clone)]
pub(super) struct AcceptCtx {
    pub(super) routes: Routes,
    pub(super) encryption: Policy,
}

/// Accepts TCP connections and hands each to [`hand_on`].
pub(super) async fn accept_loop(listener: TcpListener, ctx: AcceptCtx) {
    loop {
        let (stream, addr) = match listener.accept().await {
            // IPv4 peers on a dual-stack socket show up as ::ffff:a.b.c.d.
            Ok((s, a)) => (s, SocketAddr::new(a.ip().to_canonical(), a.port())),
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(hand_on(Socket::Tcp(stream), addr, ctx.clone()));
    }
}

/// Accepts uTP connections and hands each to [`hand_on`], like TCP's.
pub(super) async fn utp_accept_loop(utp: Arc<UtpNet>, ctx: AcceptCtx) {
    loop {
        match utp.socket().accept().await {
            Ok(stream) => {
                let a = stream.remote_addr();
                let addr = SocketAddr::new(a.ip().to_canonical(), a.port());
                let socket = Socket::Utp(stream, utp.sending());
                tokio::spawn(hand_on(socket, addr, ctx.clone()));
            }
            Err(e) => {
                tracing::warn!("uTP accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads an incoming connection's handshake with a deadline and hands it
/// to the task of the torrent it names. Encrypted (MSE) handshakes are
/// answered for any running torrent, selecting what the session's
/// encryption policy allows; anything refused (a torrent not running
/// here, a plain handshake under `require`, an RC4-only peer under
/// `plain`) is dropped at once, so the other side can retry the way it
/// can. TCP and uTP connections take this one path.
async fn hand_on(socket: Socket, addr: SocketAddr, ctx: AcceptCtx) {
    let transport = socket.transport();
    let hashes: Vec<[u8; 20]> = match ctx.routes.lock() {
        Ok(r) => r.keys().copied().collect(),
        Err(_) => return,
    };
    match read_incoming_handshake(socket, &hashes, ctx.encryption).await {
        Ok((stream, hs, keyed)) => {
            if stream.is_encrypted() {
                tracing::debug!("{addr}: encrypted handshake, RC4 selected (over {transport})");
            }
            let route = ctx.routes.lock().ok().and_then(|r| {
                let to = r.get(&hs.info_hash)?;
                // Inside MSE, the handshake may name the torrent's other
                // hash (a hybrid's), never another torrent.
                match keyed.map(|k| r.get(&k)) {
                    Some(Some(k)) if !k.same_channel(to) => None,
                    _ => Some(to.clone()),
                }
            });
            match route {
                Some(events) => {
                    let _ = events
                        .send(Event::Incoming {
                            stream,
                            addr,
                            handshake: hs,
                        })
                        .await;
                }
                None => tracing::debug!("{addr}: handshake for a torrent not running here"),
            }
        }
        Err(e) => tracing::debug!("{addr}: bad handshake over {transport}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::mse::{self, Policy};
    use crate::peer::wire::Handshake;
    use tokio::io::AsyncReadExt;

    /// Inside MSE, the handshake may name the other hash of the torrent
    /// the exchange was keyed with (a hybrid's v1 and cut v2), and is
    /// routed to it; a hash of another torrent of the session is not.
    #[tokio::test]
    async fn an_encrypted_handshake_is_routed_only_within_its_torrent() {
        let (hybrid_tx, mut hybrid_rx) = mpsc::channel(4);
        let (other_tx, mut other_rx) = mpsc::channel(4);
        let routes: Routes = Arc::default();
        {
            let mut r = routes.lock().unwrap();
            r.insert([1; 20], hybrid_tx.clone());
            r.insert([2; 20], hybrid_tx);
            r.insert([3; 20], other_tx);
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ctx = AcceptCtx {
            routes,
            encryption: Policy::Prefer,
        };
        let task = tokio::spawn(accept_loop(listener, ctx));
        for (key, named) in [([1; 20], [2; 20]), ([2; 20], [1; 20]), ([1; 20], [3; 20])] {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let hs = Handshake::new(named, [9; 20]).encode();
            mse::initiate(&mut tcp, &key, Policy::Require, &hs)
                .await
                .unwrap();
            if named == [3; 20] {
                // Dropped: the connection closes and nobody got it.
                let mut byte = [0u8; 1];
                let closed = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut byte));
                assert!(matches!(closed.await, Ok(Ok(0)) | Ok(Err(_))));
                assert!(other_rx.try_recv().is_err(), "routed to another torrent");
                continue;
            }
            let got = tokio::time::timeout(Duration::from_secs(10), hybrid_rx.recv())
                .await
                .unwrap();
            match got {
                Some(Event::Incoming { handshake, .. }) => assert_eq!(handshake.info_hash, named),
                _ => panic!("not routed to the hybrid"),
            }
        }
        task.abort();
    }
}
