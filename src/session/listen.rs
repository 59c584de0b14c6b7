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

/// `port`, or the first free of 6881–6889, else any.
pub(super) async fn bind(port: Option<u16>) -> Result<TcpListener> {
    match port {
        Some(p) => bind_port(p)
            .await
            .with_context(|| format!("cannot listen on port {p}")),
        None => {
            for p in 6881..=6889 {
                if let Ok(l) = bind_port(p).await {
                    return Ok(l);
                }
            }
            Ok(bind_port(0).await?)
        }
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

/// Accepts connections, reads their handshake with a deadline, and hands
/// each to the task of the torrent it names. Encrypted (MSE) handshakes
/// are answered for any running torrent, selecting what `encryption`
/// allows; anything refused (a torrent not running here, a plain
/// handshake under `require`, an RC4-only peer under `plain`) is dropped at
/// once, so the other side can retry the way it can.
pub(super) async fn accept_loop(listener: TcpListener, routes: Routes, encryption: Policy) {
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
        let routes = routes.clone();
        tokio::spawn(async move {
            let hashes: Vec<[u8; 20]> = match routes.lock() {
                Ok(r) => r.keys().copied().collect(),
                Err(_) => return,
            };
            match read_incoming_handshake(stream, &hashes, encryption).await {
                Ok((stream, hs, keyed)) => {
                    if stream.is_encrypted() {
                        tracing::debug!("{addr}: encrypted handshake, RC4 selected");
                    }
                    let route = routes.lock().ok().and_then(|r| {
                        let to = r.get(&hs.info_hash)?;
                        // Inside MSE, the handshake may name the torrent's
                        // other hash (a hybrid's), never another torrent.
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
                Err(e) => tracing::debug!("{addr}: bad handshake: {e}"),
            }
        });
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
        let task = tokio::spawn(accept_loop(listener, routes, Policy::Prefer));
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
