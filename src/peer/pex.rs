//! Peer exchange (BEP 11, `ut_pex` over BEP 10): tell connected peers
//! which peers we are connected to, and learn theirs. Pure logic: the
//! message codec, what to accept, and what changed since the last message.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde_bencode::value::Value;

use crate::metainfo::bencode;

/// The id we ask peers to send `ut_pex` under.
pub const UT_PEX_ID: u8 = 4;
/// BEP 11: at most 50 added and 50 dropped per message.
pub const MAX_PER_MESSAGE: usize = 50;
/// BEP 11: no more than one message a minute to a peer.
pub const INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
/// Entries read from one message at most; a flood past it is ignored.
const MAX_READ: usize = 200;
/// Largest message we parse (200 IPv6 entries with flags is ~4 KiB).
const MAX_LEN: usize = 16 << 10;

/// Flags BEP 11 defines for each added peer.
pub mod flags {
    pub const PREFERS_ENCRYPTION: u8 = 0x01;
    pub const SEED: u8 = 0x02;
    /// It speaks uTP (BEP 29).
    pub const UTP: u8 = 0x04;
    pub const OUTGOING_OK: u8 = 0x10;
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    pub added: Vec<(SocketAddr, u8)>,
    pub dropped: Vec<SocketAddr>,
}

fn compact(addrs: impl Iterator<Item = SocketAddr>, v6: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for a in addrs {
        match (a.ip(), v6) {
            (IpAddr::V4(ip), false) => out.extend_from_slice(&ip.octets()),
            (IpAddr::V6(ip), true) => out.extend_from_slice(&ip.octets()),
            _ => continue,
        }
        out.extend_from_slice(&a.port().to_be_bytes());
    }
    out
}

fn parse_compact(b: &[u8], v6: bool) -> Vec<SocketAddr> {
    let width = if v6 { 18 } else { 6 };
    b.chunks_exact(width)
        .take(MAX_READ)
        .map(|c| {
            let port = u16::from_be_bytes([c[width - 2], c[width - 1]]);
            let ip = if v6 {
                let mut o = [0u8; 16];
                o.copy_from_slice(&c[..16]);
                IpAddr::V6(Ipv6Addr::from(o))
            } else {
                IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], c[3]))
            };
            SocketAddr::new(ip, port)
        })
        .collect()
}

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        let v4 = |a: &&(SocketAddr, u8)| a.0.is_ipv4();
        let v6 = |a: &&(SocketAddr, u8)| a.0.is_ipv6();
        let mut d: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
        d.insert(
            "added",
            compact(self.added.iter().filter(v4).map(|a| a.0), false),
        );
        d.insert(
            "added.f",
            self.added.iter().filter(v4).map(|a| a.1).collect(),
        );
        d.insert(
            "added6",
            compact(self.added.iter().filter(v6).map(|a| a.0), true),
        );
        d.insert(
            "added6.f",
            self.added.iter().filter(v6).map(|a| a.1).collect(),
        );
        d.insert("dropped", compact(self.dropped.iter().copied(), false));
        d.insert("dropped6", compact(self.dropped.iter().copied(), true));
        let mut out = b"d".to_vec();
        for (k, v) in d {
            out.extend_from_slice(format!("{}:{k}{}:", k.len(), v.len()).as_bytes());
            out.extend_from_slice(&v);
        }
        out.push(b'e');
        out
    }

    /// Reads a `ut_pex` payload; missing keys are empty lists, a message
    /// that is not a dictionary (or too big) is None. Only the first
    /// [`MAX_READ`] entries of each list are read.
    pub fn decode(payload: &[u8]) -> Option<Message> {
        if payload.len() > MAX_LEN {
            return None;
        }
        let end = bencode::value_end(payload).ok()?;
        let Ok(Value::Dict(d)) = bencode::decode(&payload[..end]) else {
            return None;
        };
        let bytes = |k: &str| match d.get(k.as_bytes()) {
            Some(Value::Bytes(b)) => b.as_slice(),
            _ => &[],
        };
        let mut added = Vec::new();
        for (list, fl, v6) in [("added", "added.f", false), ("added6", "added6.f", true)] {
            let f = bytes(fl);
            for (i, a) in parse_compact(bytes(list), v6).into_iter().enumerate() {
                added.push((a, f.get(i).copied().unwrap_or(0)));
            }
        }
        let mut dropped = parse_compact(bytes("dropped"), false);
        dropped.extend(parse_compact(bytes("dropped6"), true));
        Some(Message { added, dropped })
    }
}

fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_loopback() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// The addresses worth trying out of what `from` sent: no port 0, no
/// unspecified, multicast or broadcast address, not ourselves, and a
/// private or loopback address only from a peer that is itself on such a
/// network (a peer on the internet naming LAN addresses would send us
/// knocking on our own LAN).
pub fn accept(
    from: SocketAddr,
    ours: &[SocketAddr],
    added: &[(SocketAddr, u8)],
) -> Vec<SocketAddr> {
    let local_sender = is_local(from.ip());
    let mut seen = HashSet::new();
    added
        .iter()
        .map(|(a, _)| SocketAddr::new(a.ip().to_canonical(), a.port()))
        .filter(|a| {
            let ip = a.ip();
            a.port() != 0
                && !ip.is_unspecified()
                && !ip.is_multicast()
                && ip != IpAddr::V4(Ipv4Addr::BROADCAST)
                && (local_sender || !is_local(ip))
                && !ours.contains(a)
                && seen.insert(*a)
        })
        .collect()
}

/// What to tell a peer, given what it was told before (`sent`) and the
/// peers we are connected to now (`now`, with their flags): at most 50
/// added and 50 dropped; `sent` is updated to what the peer now knows.
pub fn next_message(sent: &mut HashSet<SocketAddr>, now: &[(SocketAddr, u8)]) -> Option<Message> {
    let current: HashSet<SocketAddr> = now.iter().map(|a| a.0).collect();
    let added: Vec<(SocketAddr, u8)> = now
        .iter()
        .filter(|(a, _)| !sent.contains(a))
        .take(MAX_PER_MESSAGE)
        .copied()
        .collect();
    let dropped: Vec<SocketAddr> = sent
        .iter()
        .filter(|a| !current.contains(a))
        .take(MAX_PER_MESSAGE)
        .copied()
        .collect();
    if added.is_empty() && dropped.is_empty() {
        return None;
    }
    for (a, _) in &added {
        sent.insert(*a);
    }
    for a in &dropped {
        sent.remove(a);
    }
    Some(Message { added, dropped })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn round_trip_v4_and_v6_with_flags() {
        let m = Message {
            added: vec![
                (sa("1.2.3.4:6881"), flags::SEED),
                (sa("[2001:db8::1]:51413"), flags::OUTGOING_OK),
            ],
            dropped: vec![sa("5.6.7.8:1"), sa("[2001:db8::2]:2")],
        };
        assert_eq!(Message::decode(&m.encode()), Some(m));
        assert_eq!(Message::decode(b"de"), Some(Message::default()));
        assert_eq!(Message::decode(b"l1:ae"), None);
        assert_eq!(Message::decode(b"d5:added"), None);
        // Odd lengths: the whole entries are read, the rest ignored.
        let odd = b"d5:added8:\x01\x02\x03\x04\x1a\xe1\xff\xffe";
        assert_eq!(
            Message::decode(odd).unwrap().added,
            vec![(sa("1.2.3.4:6881"), 0)]
        );
    }

    #[test]
    fn floods_are_cut_and_junk_is_dropped() {
        let many: Vec<u8> = (0..10_000u32)
            .flat_map(|i| {
                let mut e = i.to_be_bytes().to_vec();
                e.extend_from_slice(&[0x1a, 0xe1]);
                e
            })
            .collect();
        let mut payload = format!("d5:added{}:", many.len()).into_bytes();
        payload.extend_from_slice(&many);
        payload.push(b'e');
        // 60 KB: over the size we parse at all.
        assert_eq!(Message::decode(&payload), None);
        let some = &many[..6 * 1000];
        let mut payload = format!("d5:added{}:", some.len()).into_bytes();
        payload.extend_from_slice(some);
        payload.push(b'e');
        assert_eq!(Message::decode(&payload).unwrap().added.len(), MAX_READ);

        let public = sa("8.8.8.8:1000");
        let added = [
            (sa("9.9.9.9:0"), 0),
            (sa("0.0.0.0:80"), 0),
            (sa("224.0.0.1:80"), 0),
            (sa("192.168.1.5:80"), 0),
            (sa("127.0.0.1:80"), 0),
            (sa("7.7.7.7:7"), 0),
            (sa("7.7.7.7:7"), 0),
            (sa("6.6.6.6:6881"), 0),
        ];
        let ours = [sa("6.6.6.6:6881")];
        assert_eq!(accept(public, &ours, &added), vec![sa("7.7.7.7:7")]);
        // From a loopback peer, loopback addresses are fine (tests, LANs).
        assert_eq!(
            accept(sa("127.0.0.1:5"), &ours, &added),
            vec![sa("192.168.1.5:80"), sa("127.0.0.1:80"), sa("7.7.7.7:7")]
        );
    }

    #[test]
    fn messages_carry_only_changes_capped_at_50() {
        let mut sent = HashSet::new();
        let now: Vec<(SocketAddr, u8)> = (0..70u16)
            .map(|i| (SocketAddr::from(([10, 0, 0, 1], 1000 + i)), 0))
            .collect();
        let m = next_message(&mut sent, &now).unwrap();
        assert_eq!(m.added.len(), 50);
        let m = next_message(&mut sent, &now).unwrap();
        assert_eq!(m.added.len(), 20);
        assert_eq!(next_message(&mut sent, &now), None);
        let m = next_message(&mut sent, &now[..10]).unwrap();
        assert_eq!((m.added.len(), m.dropped.len()), (0, 50));
        let m = next_message(&mut sent, &now[..10]).unwrap();
        assert_eq!(m.dropped.len(), 10);
        assert_eq!(sent.len(), 10);
    }
}
