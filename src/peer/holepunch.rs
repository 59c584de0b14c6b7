//! Hole punching (BEP 55, `ut_holepunch` over BEP 10): the message codec.
//! A peer behind a NAT that cannot be dialled is reached through a peer
//! connected to both (the relay): the initiator sends it `rendezvous`
//! naming the target, the relay sends `connect` to both, naming the other,
//! and both dial uTP at once so each NAT sees an outgoing flow first.
//! What to do with a message is the coordinator's (`torrent::holepunch`).
//!
//! Wire form (binary, not bencoded): message type (1 byte), address type
//! (1 byte: 0 IPv4, 1 IPv6), address (4 or 16 bytes), port (2 bytes),
//! error code (4 bytes, 0 except in `error`); integers big-endian. We send
//! that; libtorrent (2.0.8) leaves the error code out of `rendezvous` and
//! `connect`, so those are read with or without it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The id we ask peers to send `ut_holepunch` under.
pub const UT_HOLEPUNCH_ID: u8 = 5;
/// The extension's name in the extended handshake's `m`.
pub const NAME: &str = "ut_holepunch";
/// PEX flag (BEP 11): the peer supports `ut_holepunch`.
pub const PEX_FLAG: u8 = 0x08;

/// What a message asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Initiator → relay: connect me to `addr`.
    Rendezvous,
    /// Relay → both: dial `addr` (uTP) now.
    Connect,
    /// Relay → initiator: the rendezvous for `addr` failed.
    Error(ErrorCode),
}

/// BEP 55's error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The target endpoint is invalid.
    NoSuchPeer,
    /// The relay is not connected to the target.
    NotConnected,
    /// The target does not support hole punching.
    NoSupport,
    /// The target is the relay itself.
    NoSelf,
    /// A code BEP 55 does not define (kept so it can be logged).
    Other(u32),
}

impl ErrorCode {
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::NoSuchPeer => 1,
            ErrorCode::NotConnected => 2,
            ErrorCode::NoSupport => 3,
            ErrorCode::NoSelf => 4,
            ErrorCode::Other(c) => c,
        }
    }

    fn from_code(c: u32) -> ErrorCode {
        match c {
            1 => ErrorCode::NoSuchPeer,
            2 => ErrorCode::NotConnected,
            3 => ErrorCode::NoSupport,
            4 => ErrorCode::NoSelf,
            c => ErrorCode::Other(c),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            ErrorCode::NoSuchPeer => "no such peer",
            ErrorCode::NotConnected => "relay not connected to it",
            ErrorCode::NoSupport => "it does not support hole punching",
            ErrorCode::NoSelf => "that is the relay itself",
            ErrorCode::Other(_) => "unknown error code",
        }
    }
}

/// One `ut_holepunch` message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    pub kind: Kind,
    pub addr: SocketAddr,
}

/// Why a payload is not a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{0} bytes, not 12 (IPv4) or 24 (IPv6), or 8 / 20 without the error code")]
    Length(usize),
    #[error("unknown message type {0}")]
    Type(u8),
    #[error("unknown address type {0}")]
    AddrType(u8),
    #[error("error code in a non-error message")]
    StrayCode,
}

impl Message {
    pub fn new(kind: Kind, addr: SocketAddr) -> Message {
        Message { kind, addr }
    }

    pub fn encode(&self) -> Vec<u8> {
        let (ty, code) = match self.kind {
            Kind::Rendezvous => (0u8, 0u32),
            Kind::Connect => (1, 0),
            Kind::Error(e) => (2, e.code()),
        };
        // An IPv4-mapped IPv6 address goes out as IPv4: what the peer
        // would dial.
        let ip = self.addr.ip().to_canonical();
        let mut out = Vec::with_capacity(24);
        out.push(ty);
        match ip {
            IpAddr::V4(v4) => {
                out.push(0);
                out.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                out.push(1);
                out.extend_from_slice(&v6.octets());
            }
        }
        out.extend_from_slice(&self.addr.port().to_be_bytes());
        out.extend_from_slice(&code.to_be_bytes());
        out
    }

    /// Strict decode: the length must match the address type exactly
    /// (with the error code, or without it outside `error` messages).
    pub fn decode(b: &[u8]) -> Result<Message, DecodeError> {
        if b.len() < 2 {
            return Err(DecodeError::Length(b.len()));
        }
        let ip_len = match b[1] {
            0 => 4,
            1 => 16,
            t => return Err(DecodeError::AddrType(t)),
        };
        let with_code = b.len() == 2 + ip_len + 6;
        let without = b.len() == 2 + ip_len + 2 && b[0] != 2;
        if !with_code && !without {
            return Err(DecodeError::Length(b.len()));
        }
        let ip = if ip_len == 4 {
            let mut o = [0u8; 4];
            o.copy_from_slice(&b[2..6]);
            IpAddr::V4(Ipv4Addr::from(o))
        } else {
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[2..18]);
            IpAddr::V6(Ipv6Addr::from(o))
        };
        let rest = &b[2 + ip_len..];
        let port = u16::from_be_bytes([rest[0], rest[1]]);
        let code = if with_code {
            u32::from_be_bytes([rest[2], rest[3], rest[4], rest[5]])
        } else {
            0
        };
        let kind = match b[0] {
            0 | 1 if code != 0 => return Err(DecodeError::StrayCode),
            0 => Kind::Rendezvous,
            1 => Kind::Connect,
            2 => Kind::Error(ErrorCode::from_code(code)),
            t => return Err(DecodeError::Type(t)),
        };
        Ok(Message {
            kind,
            addr: SocketAddr::new(ip.to_canonical(), port),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_bep_55_layout() {
        let m = Message::new(Kind::Rendezvous, a("1.2.3.4:6881"));
        assert_eq!(m.encode(), [0, 0, 1, 2, 3, 4, 0x1a, 0xe1, 0, 0, 0, 0]);
        let e = Message::new(Kind::Error(ErrorCode::NoSupport), a("1.2.3.4:6881"));
        assert_eq!(e.encode(), [2, 0, 1, 2, 3, 4, 0x1a, 0xe1, 0, 0, 0, 3]);
        let c = Message::new(Kind::Connect, a("[2001:db8::1]:80"));
        let b = c.encode();
        assert_eq!((b.len(), b[0], b[1]), (24, 1, 1));
        assert_eq!(&b[18..], &[0, 80, 0, 0, 0, 0]);
    }

    #[test]
    fn every_kind_round_trips() {
        let kinds = [
            Kind::Rendezvous,
            Kind::Connect,
            Kind::Error(ErrorCode::NoSuchPeer),
            Kind::Error(ErrorCode::NotConnected),
            Kind::Error(ErrorCode::NoSupport),
            Kind::Error(ErrorCode::NoSelf),
            Kind::Error(ErrorCode::Other(77)),
        ];
        for kind in kinds {
            for addr in [a("10.0.0.1:1"), a("[::1]:65535")] {
                let m = Message::new(kind, addr);
                assert_eq!(Message::decode(&m.encode()), Ok(m));
            }
        }
    }

    /// libtorrent 2.0.8 sends `connect` and `rendezvous` without the
    /// error code (8 bytes for IPv4, 20 for IPv6).
    #[test]
    fn libtorrents_short_form_is_read() {
        let m = Message::decode(&[1, 0, 10, 218, 20, 1, 0x1a, 0xe1]).unwrap();
        assert_eq!(m, Message::new(Kind::Connect, a("10.218.20.1:6881")));
        let mut v6 = vec![0, 1];
        v6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0, 80]);
        let m = Message::decode(&v6).unwrap();
        assert_eq!(m, Message::new(Kind::Rendezvous, a("[2001:db8::1]:80")));
    }

    #[test]
    fn a_mapped_address_goes_out_as_ipv4() {
        let m = Message::new(Kind::Connect, a("[::ffff:1.2.3.4]:7"));
        assert_eq!(m.encode().len(), 12);
        assert_eq!(Message::decode(&m.encode()).unwrap().addr, a("1.2.3.4:7"));
    }

    #[test]
    fn malformed_payloads_are_refused() {
        let good = Message::new(Kind::Connect, a("1.2.3.4:5")).encode();
        assert_eq!(Message::decode(&[]), Err(DecodeError::Length(0)));
        assert_eq!(Message::decode(&good[..11]), Err(DecodeError::Length(11)));
        // An error without its code is not one.
        let e = Message::new(Kind::Error(ErrorCode::NoSelf), a("1.2.3.4:5")).encode();
        assert_eq!(Message::decode(&e[..8]), Err(DecodeError::Length(8)));
        let mut long = good.clone();
        long.push(0);
        assert_eq!(Message::decode(&long), Err(DecodeError::Length(13)));
        // Claims IPv6 with an IPv4-sized body.
        let mut v6 = good.clone();
        v6[1] = 1;
        assert_eq!(Message::decode(&v6), Err(DecodeError::Length(12)));
        let mut ty = good.clone();
        ty[0] = 9;
        assert_eq!(Message::decode(&ty), Err(DecodeError::Type(9)));
        let mut at = good.clone();
        at[1] = 2;
        assert_eq!(Message::decode(&at), Err(DecodeError::AddrType(2)));
        let mut stray = good;
        stray[11] = 1;
        assert_eq!(Message::decode(&stray), Err(DecodeError::StrayCode));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u32 = 12345;
        for len in 0..40 {
            for _ in 0..50 {
                let b: Vec<u8> = (0..len)
                    .map(|_| {
                        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                        (x >> 16) as u8 % 4
                    })
                    .collect();
                let _ = Message::decode(&b);
            }
        }
    }
}
