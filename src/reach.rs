//! How others reach us: the address and port the router's port mapping
//! opened (`session::portmap`), read by the tracker announces of every
//! torrent. One per session, shared through `peer::Shared`; a small shared
//! piece so that the session (which writes it) and discovery (which reads
//! it) need not know each other.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;

/// The session's view of its own reachability.
#[derive(Debug, Default)]
pub struct Reach {
    /// External TCP port and, if the router said it, address of a
    /// mapping the router granted.
    mapped: Mutex<Option<(Option<IpAddr>, u16)>>,
    /// Our global IPv6 address, if we listen on IPv6 and have one.
    ipv6: Mutex<Option<Ipv6Addr>>,
}

impl Reach {
    /// What the port mapping got: the external address (if known) and
    /// port, or None when nothing is mapped.
    pub fn set_mapped(&self, mapped: Option<(Option<IpAddr>, u16)>) {
        if let Ok(mut m) = self.mapped.lock() {
            *m = mapped;
        }
    }

    pub fn mapped(&self) -> Option<(Option<IpAddr>, u16)> {
        self.mapped.lock().ok().and_then(|m| *m)
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
        self.mapped()
            .and_then(|(ip, _)| ip)
            .filter(|ip| is_public(*ip))
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
    fn announce_uses_the_mapping() {
        let r = Reach::default();
        assert_eq!(r.announce_port(6881), 6881);
        assert_eq!(r.announce_ip(), None);
        r.set_mapped(Some((Some("10.9.0.1".parse().unwrap()), 7000)));
        assert_eq!(r.announce_port(6881), 7000);
        assert_eq!(r.announce_ip(), None, "a private external address is not announced");
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
