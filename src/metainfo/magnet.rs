//! Magnet URIs (BEP 9 URI format). Fetching metadata from peers comes later.

use std::net::SocketAddr;

use thiserror::Error;
use url::Url;

use crate::metainfo::InfoHash;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MagnetError {
    #[error("not a magnet URI (expected `magnet:?…`)")]
    NotMagnet,
    #[error("invalid magnet URI: {0}")]
    Url(String),
    #[error("magnet URI has no `xt=urn:btih:` info-hash")]
    NoInfoHash,
    #[error(
        "v2-only magnet links (`xt=urn:btmh:` without `xt=urn:btih:`) are not supported yet: use the .torrent file, or a hybrid's magnet link"
    )]
    V2Only,
    #[error("info-hash `{0}` is neither 40 hex nor 32 base32 characters")]
    BadInfoHash(String),
    #[error("magnet URI names two different info-hashes")]
    ConflictingInfoHash,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Magnet {
    pub info_hash: InfoHash,
    pub name: Option<String>,
    pub trackers: Vec<String>,
    pub peers: Vec<SocketAddr>,
    /// `x.pe` entries that were not plain socket addresses (host names).
    pub peer_hosts: Vec<String>,
    pub web_seeds: Vec<String>,
}

impl Magnet {
    pub fn parse(uri: &str) -> Result<Magnet, MagnetError> {
        let uri = uri.trim();
        if !uri
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("magnet:"))
        {
            return Err(MagnetError::NotMagnet);
        }
        let url = Url::parse(uri).map_err(|e| MagnetError::Url(e.to_string()))?;
        let mut info_hash = None;
        let mut m = Magnet {
            info_hash: InfoHash([0; 20]),
            name: None,
            trackers: Vec::new(),
            peers: Vec::new(),
            peer_hosts: Vec::new(),
            web_seeds: Vec::new(),
        };
        let mut v2 = false;
        for (k, v) in url.query_pairs() {
            // Some clients number repeated keys: tr.1, tr.2 …
            let key = k.split('.').next().unwrap_or("");
            match (key, k.as_ref()) {
                ("xt", _) => {
                    let Some(h) = strip_prefix_ci(&v, "urn:btih:") else {
                        // A hybrid's magnet has both; the v1 hash is enough.
                        v2 |= strip_prefix_ci(&v, "urn:btmh:").is_some();
                        continue;
                    };
                    let h = parse_btih(h)?;
                    if info_hash.is_some_and(|old| old != h) {
                        return Err(MagnetError::ConflictingInfoHash);
                    }
                    info_hash = Some(h);
                }
                ("dn", _) => m.name = Some(v.into_owned()),
                ("tr", _) => push_unique(&mut m.trackers, v.trim()),
                ("ws", _) => push_unique(&mut m.web_seeds, v.trim()),
                ("x", "x.pe") => match v.parse::<SocketAddr>() {
                    Ok(a) => m.peers.push(a),
                    Err(_) => push_unique(&mut m.peer_hosts, v.trim()),
                },
                _ => {}
            }
        }
        m.info_hash = info_hash.ok_or(if v2 {
            MagnetError::V2Only
        } else {
            MagnetError::NoInfoHash
        })?;
        Ok(m)
    }
}

fn push_unique(list: &mut Vec<String>, v: &str) {
    if !v.is_empty() && !list.iter().any(|x| x == v) {
        list.push(v.to_string());
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn parse_btih(s: &str) -> Result<InfoHash, MagnetError> {
    let bad = || MagnetError::BadInfoHash(s.to_string());
    let bytes = match s.len() {
        40 => hex::decode(s).map_err(|_| bad())?,
        32 => data_encoding::BASE32
            .decode(s.to_ascii_uppercase().as_bytes())
            .map_err(|_| bad())?,
        _ => return Err(bad()),
    };
    Ok(InfoHash(bytes.try_into().map_err(|_| bad())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";

    #[test]
    fn hex_and_base32_agree() {
        let a = Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}")).unwrap();
        let b32 = data_encoding::BASE32.encode(&hex::decode(HEX).unwrap());
        let b = Magnet::parse(&format!("magnet:?xt=urn:btih:{}", b32.to_lowercase())).unwrap();
        assert_eq!(a.info_hash, b.info_hash);
        assert_eq!(a.info_hash.hex(), HEX);
        let upper = Magnet::parse(&format!("MAGNET:?xt=URN:BTIH:{}", HEX.to_uppercase())).unwrap();
        assert_eq!(upper.info_hash, a.info_hash);
    }

    #[test]
    fn all_fields() {
        let m = Magnet::parse(&format!(
            "magnet:?xt=urn:btih:{HEX}&dn=Some+File%20name&tr=http%3A%2F%2Ft1%2Fannounce&tr=udp://t2:80&tr.1=udp://t2:80\
             &x.pe=127.0.0.1:6881&x.pe=[::1]:7000&x.pe=host.example:1&ws=http://w/f&foo=bar"
        ))
        .unwrap();
        assert_eq!(m.name.as_deref(), Some("Some File name"));
        assert_eq!(m.trackers, vec!["http://t1/announce", "udp://t2:80"]);
        assert_eq!(
            m.peers,
            vec![
                "127.0.0.1:6881".parse().unwrap(),
                "[::1]:7000".parse().unwrap()
            ]
        );
        assert_eq!(m.peer_hosts, vec!["host.example:1"]);
        assert_eq!(m.web_seeds, vec!["http://w/f"]);
    }

    #[test]
    fn errors() {
        assert_eq!(Magnet::parse("http://x"), Err(MagnetError::NotMagnet));
        assert_eq!(Magnet::parse("magnet:?dn=x"), Err(MagnetError::NoInfoHash));
        assert!(matches!(
            Magnet::parse("magnet:?xt=urn:btih:1234"),
            Err(MagnetError::BadInfoHash(_))
        ));
        assert!(matches!(
            Magnet::parse(&format!("magnet:?xt=urn:btih:{}", "z".repeat(40))),
            Err(MagnetError::BadInfoHash(_))
        ));
        assert!(matches!(
            Magnet::parse(&format!("magnet:?xt=urn:btih:{}", "1".repeat(32))),
            Err(MagnetError::BadInfoHash(_))
        ));
        assert_eq!(
            Magnet::parse(&format!(
                "magnet:?xt=urn:btih:{HEX}&xt=urn:btih:{}",
                "0".repeat(40)
            )),
            Err(MagnetError::ConflictingInfoHash)
        );
        assert_eq!(
            Magnet::parse("magnet:?xt=urn:btmh:1220abcd"),
            Err(MagnetError::V2Only)
        );
    }
}
