//! How others reach us: the address and port the router's port mapping
//! opened (`session::portmap`), and what peers say they see us as (BEP 24
//! `yourip`), read by the tracker announces of every torrent. One per
//! session, shared through `peer::Shared`; a small shared piece so that
//! the session (which writes it), peer tasks (which vote) and discovery
//! (which reads it) need not know each other.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;

/// Peers whose `yourip` is remembered; the oldest vote goes first.
const MAX_VOTERS: usize = 64;
/// Distinct peers (by address) that must agree before a `yourip` counts.
const MIN_AGREEING: usize = 2;

/// The session's view of its own reachability.
#[derive(Debug)]
pub struct Reach {
    /// External TCP port and, if the router said it, address of a
    /// mapping the router granted; announce loops watch it, so trackers
    /// learn a new external port at once.
    mapped: tokio::sync::watch::Sender<Option<(Option<IpAddr>, u16)>>,
    /// Our global IPv6 address, if we listen on IPv6 and have one.
    ipv6: Mutex<Option<Ipv6Addr>>,
    votes: Mutex<Votes>,
}

/// BEP 24 claims: the address each peer (one vote per peer address) says
/// it sees us at. A single peer's word is never taken: it may lie, or sit
/// behind another NAT.
#[derive(Debug, Default)]
pub struct Votes {
    by_voter: HashMap<IpAddr, IpAddr>,
    order: VecDeque<IpAddr>,
    /// A claim that contradicts the port mapping was logged already.
    warned: bool,
}

impl Votes {
    /// Takes `voter`'s claim (4 or 16 bytes, as BEP 24 sends it). Claims
    /// of addresses that are not public (a LAN peer sees our LAN address)
    /// and malformed ones are dropped. Returns the claimed address if kept.
    pub fn vote(&mut self, voter: IpAddr, claim: &[u8]) -> Option<IpAddr> {
        let ip = match claim.len() {
            4 => IpAddr::from(<[u8; 4]>::try_from(claim).ok()?),
            16 => IpAddr::from(<[u8; 16]>::try_from(claim).ok()?).to_canonical(),
            _ => return None,
        };
        if !is_public(ip) {
            return None;
        }
        let voter = voter.to_canonical();
        if self.by_voter.insert(voter, ip).is_none() {
            self.order.push_back(voter);
            if self.order.len() > MAX_VOTERS {
                if let Some(old) = self.order.pop_front() {
                    self.by_voter.remove(&old);
                }
            }
        }
        Some(ip)
    }

    /// The address most peers name, if at least `MIN_AGREEING` do and no
    /// other address is named as often.
    pub fn consensus(&self) -> Option<IpAddr> {
        let mut count: HashMap<IpAddr, usize> = HashMap::new();
        for ip in self.by_voter.values() {
            *count.entry(*ip).or_default() += 1;
        }
        let mut best: Vec<(IpAddr, usize)> = count.into_iter().collect();
        best.sort_by_key(|b| std::cmp::Reverse(b.1));
        match best.as_slice() {
            [(ip, n), rest @ ..] if *n >= MIN_AGREEING && rest.first().is_none_or(|r| r.1 < *n) => {
                Some(*ip)
            }
            _ => None,
        }
    }
}

impl Default for Reach {
    fn default() -> Reach {
        Reach {
            mapped: tokio::sync::watch::Sender::new(None),
            ipv6: Mutex::default(),
            votes: Mutex::default(),
        }
    }
}

impl Reach {
    /// What the port mapping got: the external address (if known) and
    /// port, or None when nothing is mapped. Watchers hear of changes.
    pub fn set_mapped(&self, mapped: Option<(Option<IpAddr>, u16)>) {
        self.mapped.send_if_modified(|m| {
            let changed = *m != mapped;
            *m = mapped;
            changed
        });
    }

    pub fn mapped(&self) -> Option<(Option<IpAddr>, u16)> {
        *self.mapped.borrow()
    }

    /// Changes of the mapping, for whoever announces our address.
    pub fn watch_mapped(&self) -> tokio::sync::watch::Receiver<Option<(Option<IpAddr>, u16)>> {
        self.mapped.subscribe()
    }

    pub fn set_ipv6(&self, ip: Option<Ipv6Addr>) {
        if let Ok(mut m) = self.ipv6.lock() {
            *m = ip.filter(|ip| is_public_v6(*ip));
        }
    }

    /// Our global IPv6 address, for `ipv6=` in announces (BEP 7).
    pub fn ipv6(&self) -> Option<Ipv6Addr> {
        self.ipv6.lock().ok().and_then(|m| *m)
    }

    /// A peer at `voter` says it sees us at `claim` (BEP 24). Logged once
    /// when it contradicts the address the router told us.
    pub fn heard_yourip(&self, voter: IpAddr, claim: &[u8]) {
        let Ok(mut v) = self.votes.lock() else {
            return;
        };
        let Some(ip) = v.vote(voter, claim) else {
            return;
        };
        let mapped = self
            .mapped()
            .and_then(|(ip, _)| ip)
            .filter(|m| is_public(*m));
        if mapped.is_some_and(|m| m != ip) && !v.warned {
            v.warned = true;
            tracing::info!(
                "peer {voter} says our address is {ip}, the router says {}; the router is believed",
                mapped.map(|m| m.to_string()).unwrap_or_default()
            );
        }
    }

    /// What peers agree our address is (BEP 24), if enough of them do.
    pub fn seen_by_peers(&self) -> Option<IpAddr> {
        self.votes.lock().ok().and_then(|v| v.consensus())
    }

    /// Our public address: the router's word first, else the peers'.
    pub fn external_ip(&self) -> Option<IpAddr> {
        self.mapped()
            .and_then(|(ip, _)| ip)
            .filter(|ip| is_public(*ip))
            .or_else(|| self.seen_by_peers())
    }

    /// The external address and port, when both are known.
    pub fn external(&self) -> Option<SocketAddr> {
        match self.mapped() {
            Some((Some(ip), port)) => Some(SocketAddr::new(ip, port)),
            _ => None,
        }
    }

    /// The port to announce: the router's external one once mapped, else
    /// the one we listen on.
    pub fn announce_port(&self, listen_port: u16) -> u16 {
        self.mapped().map_or(listen_port, |(_, port)| port)
    }

    /// The address to put in announces (`ip=`, the UDP announce's IP),
    /// only when it is one the whole internet can reach: a private or
    /// carrier-grade NAT address would send other peers nowhere.
    pub fn announce_ip(&self) -> Option<IpAddr> {
        self.external_ip()
    }
}

/// Whether `ip` is a globally routable unicast address (not private,
/// shared (CGNAT), loopback, link-local, documentation, multicast or
/// unspecified).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_unspecified()
        || ip.is_multicast()
        || o[0] == 0
        || o[0] >= 240
        // 100.64.0.0/10: carrier-grade NAT.
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
        // 192.0.0.0/24 and 198.18.0.0/15: protocol assignments, benchmarks.
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 198 && (o[1] & 0xfe) == 18))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // 2000::/3 is the global unicast space; 2001:db8::/32 is documentation.
    (s[0] & 0xe000) == 0x2000 && !(s[0] == 0x2001 && s[1] == 0x0db8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses() {
        for ok in ["8.8.8.8", "1.2.3.4", "2a00:1450::1", "::ffff:8.8.4.4"] {
            assert!(is_public(ok.parse().unwrap()), "{ok}");
        }
        for no in [
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "169.254.1.1",
            "203.0.113.7",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "198.18.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "2001:db8::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(no.parse().unwrap()), "{no}");
        }
    }

    #[test]
    fn one_lying_peer_is_not_believed() {
        let mut v = Votes::default();
        let me = [8, 8, 8, 8];
        assert_eq!(
            v.vote("1.1.1.1".parse().unwrap(), &me),
            Some("8.8.8.8".parse().unwrap())
        );
        assert_eq!(v.consensus(), None, "one peer's word is not enough");
        // The same peer again (another connection) is still one voice.
        v.vote("1.1.1.1".parse().unwrap(), &me);
        assert_eq!(v.consensus(), None);
        v.vote("2.2.2.2".parse().unwrap(), &me);
        assert_eq!(v.consensus(), Some("8.8.8.8".parse().unwrap()));
        // Two liars agreeing on another address make a tie: nothing.
        v.vote("3.3.3.3".parse().unwrap(), &[9, 9, 9, 9]);
        v.vote("4.4.4.4".parse().unwrap(), &[9, 9, 9, 9]);
        assert_eq!(v.consensus(), None);
        v.vote("5.5.5.5".parse().unwrap(), &me);
        assert_eq!(v.consensus(), Some("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn malformed_and_private_claims_are_dropped() {
        let mut v = Votes::default();
        for bad in [
            &[][..],
            &[1, 2, 3],
            &[1; 5],
            &[10, 0, 0, 1],
            &[127, 0, 0, 1],
            &[0; 16],
        ] {
            assert_eq!(v.vote("1.1.1.1".parse().unwrap(), bad), None, "{bad:?}");
        }
        let mut v6 = [0u8; 16];
        v6[..2].copy_from_slice(&[0x2a, 0x00]);
        v6[15] = 1;
        assert_eq!(
            v.vote("1.1.1.1".parse().unwrap(), &v6),
            Some("2a00::1".parse().unwrap())
        );
        // An IPv4-mapped IPv6 claim is the IPv4 address.
        let mapped = "::ffff:8.8.4.4".parse::<Ipv6Addr>().unwrap().octets();
        assert_eq!(
            v.vote("1.1.1.2".parse().unwrap(), &mapped),
            Some("8.8.4.4".parse().unwrap())
        );
    }

    #[test]
    fn votes_are_bounded() {
        let mut v = Votes::default();
        for i in 0..10_000u32 {
            v.vote(IpAddr::from((i + 1).to_be_bytes()), &[8, 8, 8, 8]);
        }
        assert_eq!(v.by_voter.len(), MAX_VOTERS);
        assert_eq!(v.order.len(), MAX_VOTERS);
        assert_eq!(v.consensus(), Some("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn the_router_beats_the_peers() {
        let r = Reach::default();
        r.heard_yourip("1.1.1.1".parse().unwrap(), &[9, 9, 9, 9]);
        r.heard_yourip("2.2.2.2".parse().unwrap(), &[9, 9, 9, 9]);
        assert_eq!(r.announce_ip(), Some("9.9.9.9".parse().unwrap()));
        r.set_mapped(Some((Some("8.8.8.8".parse().unwrap()), 6881)));
        assert_eq!(r.announce_ip(), Some("8.8.8.8".parse().unwrap()));
        assert_eq!(r.seen_by_peers(), Some("9.9.9.9".parse().unwrap()));
    }

    #[test]
    fn announce_uses_the_mapping() {
        let r = Reach::default();
        assert_eq!(r.announce_port(6881), 6881);
        assert_eq!(r.announce_ip(), None);
        r.set_mapped(Some((Some("10.9.0.1".parse().unwrap()), 7000)));
        assert_eq!(r.announce_port(6881), 7000);
        assert_eq!(
            r.announce_ip(),
            None,
            "a private external address is not announced"
        );
        assert_eq!(r.external(), Some("10.9.0.1:7000".parse().unwrap()));
        r.set_mapped(Some((Some("8.8.8.8".parse().unwrap()), 7000)));
        assert_eq!(r.announce_ip(), Some("8.8.8.8".parse().unwrap()));
        r.set_mapped(Some((None, 7001)));
        assert_eq!(r.announce_port(6881), 7001);
        assert_eq!(r.external(), None);
        r.set_mapped(None);
        assert_eq!(r.announce_port(6881), 6881);
    }
}
