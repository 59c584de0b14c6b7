//! Magnet URIs (BEP 9 URI format; BEP 52 `urn:btmh:` for v2 torrents).
//! Fetching the metadata from peers is `discovery::fetch`.

use std::net::SocketAddr;

use thiserror::Error;
use url::Url;

use crate::metainfo::InfoHash;

/// A magnet link longer than this is refused: it is kept (a service saves
/// it until the metadata comes), so a 15 MB one must not get in.
pub const MAX_URI_LEN: usize = 64 << 10;
/// `dn` is cut to this many bytes: the name is shown everywhere and sent
/// in every live update of the service.
pub const MAX_NAME_LEN: usize = 1024;
/// Trackers, web seeds and `x.pe` peers kept from one link, at most each.
pub const MAX_ENTRIES: usize = 200;
/// A tracker, web seed or `x.pe` value longer than this is dropped (no
/// host name or URL of a real one is that long).
pub const MAX_VALUE_LEN: usize = 2048;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MagnetError {
    #[error("not a magnet URI (expected `magnet:?…`)")]
    NotMagnet,
    #[error("invalid magnet URI: {0}")]
    Url(String),
    #[error("magnet URI has no `xt=urn:btih:` or `xt=urn:btmh:` info-hash")]
    NoInfoHash,
    #[error("info-hash `{0}` is neither 40 hex nor 32 base32 characters")]
    BadInfoHash(String),
    /// Only SHA-256 (multihash `1220` + 64 hex) names a BitTorrent v2 torrent.
    #[error("v2 info-hash `{0}` is not a SHA-256 multihash (`1220` and 64 hex characters)")]
    BadInfoHashV2(String),
    #[error("magnet URI names two different info-hashes")]
    ConflictingInfoHash,
    #[error("magnet URI is {0} bytes long; over {MAX_URI_LEN} is refused")]
    TooLong(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Magnet {
    /// What handshakes, trackers and the DHT use: the v1 hash, or for a
    /// v2-only magnet the v2 hash cut to 20 bytes.
    pub info_hash: InfoHash,
    /// The BEP 52 info-hash (SHA-256 of the info dictionary), from
    /// `xt=urn:btmh:`.
    pub info_hash_v2: Option<[u8; 32]>,
    /// There was a `urn:btih:` (v1 or hybrid); without it the metadata
    /// is checked against the v2 hash.
    pub has_v1: bool,
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
        if uri.len() > MAX_URI_LEN {
            return Err(MagnetError::TooLong(uri.len()));
        }
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
            info_hash_v2: None,
            has_v1: false,
            name: None,
            trackers: Vec::new(),
            peers: Vec::new(),
            peer_hosts: Vec::new(),
            web_seeds: Vec::new(),
        };
        for (k, v) in url.query_pairs() {
            // Some clients number repeated keys: tr.1, tr.2 …
            let key = k.split('.').next().unwrap_or("");
            match (key, k.as_ref()) {
                ("xt", _) => {
                    if let Some(h) = strip_prefix_ci(&v, "urn:btmh:") {
                        let h = parse_btmh(h)?;
                        if m.info_hash_v2.is_some_and(|old| old != h) {
                            return Err(MagnetError::ConflictingInfoHash);
                        }
                        m.info_hash_v2 = Some(h);
                        continue;
                    }
                    let Some(h) = strip_prefix_ci(&v, "urn:btih:") else {
                        continue;
                    };
                    let h = parse_btih(h)?;
                    if info_hash.is_some_and(|old| old != h) {
                        return Err(MagnetError::ConflictingInfoHash);
                    }
                    info_hash = Some(h);
                }
                ("dn", _) => m.name = Some(cut(&v, MAX_NAME_LEN)),
                ("tr", _) => push_unique(&mut m.trackers, v.trim()),
                ("ws", _) => push_unique(&mut m.web_seeds, v.trim()),
                ("x", "x.pe") => match v.parse::<SocketAddr>() {
                    Ok(a) if m.peers.len() < MAX_ENTRIES && !m.peers.contains(&a) => {
                        m.peers.push(a)
                    }
                    Ok(_) => {}
                    Err(_) => push_unique(&mut m.peer_hosts, v.trim()),
                },
                _ => {}
            }
        }
        // A hybrid's magnet has both: the v1 hash names its swarm, as
        // before v2 magnets were understood.
        m.has_v1 = info_hash.is_some();
        m.info_hash = match (info_hash, m.info_hash_v2) {
            (Some(h), _) => h,
            (None, Some(v2)) => {
                let mut short = [0u8; 20];
                short.copy_from_slice(&v2[..20]);
                InfoHash(short)
            }
            (None, None) => return Err(MagnetError::NoInfoHash),
        };
        Ok(m)
    }
}

fn push_unique(list: &mut Vec<String>, v: &str) {
    if !v.is_empty()
        && v.len() <= MAX_VALUE_LEN
        && list.len() < MAX_ENTRIES
        && !list.iter().any(|x| x == v)
    {
        list.push(v.to_string());
    }
}

/// `s` cut to at most `max` bytes, at a character boundary, marked with
/// an ellipsis when cut.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A bare info-hash (40 hex or 32 base32 characters for v1, 64 hex for
/// v2) as the magnet link that names it, so every command that takes a
/// magnet takes the hash alone too; None for anything else.
pub fn from_bare_hash(s: &str) -> Option<String> {
    let s = s.trim();
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(format!("magnet:?xt=urn:btmh:1220{s}"));
    }
    parse_btih(s)
        .ok()
        .map(|_| format!("magnet:?xt=urn:btih:{s}"))
}

/// What a magnet link's values escape: all but unreserved characters.
const ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'.')
    .remove(b'-')
    .remove(b'_')
    .remove(b'~');

/// The magnet link that names `meta`, as clients share it: its v1
/// info-hash (`btih`, none for a v2-only torrent), its v2 hash (`btmh`)
/// when it has one, its name, trackers and web seeds (at most
/// [`MAX_ENTRIES`] each).
pub fn link_for(meta: &crate::metainfo::Metainfo) -> String {
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, ESCAPED).to_string();
    let mut xt = Vec::new();
    if !meta.v2_only() {
        xt.push(format!("xt=urn:btih:{}", meta.info_hash.hex()));
    }
    if let Some(v2) = &meta.v2 {
        xt.push(format!("xt=urn:btmh:1220{}", hex::encode(v2.info_hash)));
    }
    let mut link = format!("magnet:?{}&dn={}", xt.join("&"), enc(&meta.name));
    let mut trackers: Vec<String> = Vec::new();
    for t in meta.tracker_tiers().into_iter().flatten() {
        if !trackers.contains(&t) && trackers.len() < MAX_ENTRIES {
            trackers.push(t);
        }
    }
    for t in &trackers {
        link.push_str("&tr=");
        link.push_str(&enc(t));
    }
    for w in meta.url_list.iter().take(MAX_ENTRIES) {
        link.push_str("&ws=");
        link.push_str(&enc(w));
    }
    link
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// A BEP 52 `urn:btmh:` value: the multihash of SHA-256 (code 0x12,
/// length 0x20) in hex.
fn parse_btmh(s: &str) -> Result<[u8; 32], MagnetError> {
    let bad = || MagnetError::BadInfoHashV2(s.to_string());
    let hex = strip_prefix_ci(s, "1220")
        .filter(|h| h.len() == 64)
        .ok_or_else(bad)?;
    let bytes = hex::decode(hex).map_err(|_| bad())?;
    bytes.try_into().map_err(|_| bad())
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
    fn a_torrent_links_to_itself() {
        use crate::metainfo::{Metainfo, NewTorrent};
        let t = NewTorrent {
            name: "a b&c".into(),
            piece_length: 16384,
            pieces: vec![0; 20],
            length: 100,
            trackers: vec![vec!["http://t.example/announce?k=1&x".into()]],
            ..Default::default()
        };
        let meta = Metainfo::from_bytes(&t.to_bytes()).unwrap();
        let link = link_for(&meta);
        assert!(
            link.starts_with(&format!(
                "magnet:?xt=urn:btih:{}&dn=a%20b%26c",
                meta.info_hash.hex()
            )),
            "{link}"
        );
        let m = Magnet::parse(&link).unwrap();
        assert_eq!(m.info_hash, meta.info_hash);
        assert_eq!(m.name.as_deref(), Some("a b&c"));
        assert_eq!(
            m.trackers,
            vec!["http://t.example/announce?k=1&x".to_string()]
        );
    }

    #[test]
    fn bare_hashes_become_magnets() {
        let m = Magnet::parse(&from_bare_hash(HEX).unwrap()).unwrap();
        assert_eq!(m.info_hash.hex(), HEX);
        let b32 = data_encoding::BASE32.encode(&hex::decode(HEX).unwrap());
        let m = Magnet::parse(&from_bare_hash(&b32.to_lowercase()).unwrap()).unwrap();
        assert_eq!(m.info_hash.hex(), HEX);
        let v2 = "a".repeat(64);
        let m = Magnet::parse(&from_bare_hash(&v2).unwrap()).unwrap();
        assert_eq!(m.info_hash_v2, Some([0xaa; 32]));
        for not in ["", "t.torrent", &HEX[..39], "zz".repeat(20).as_str()] {
            assert_eq!(from_bare_hash(not), None, "{not}");
        }
    }

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
        assert!(matches!(
            Magnet::parse("magnet:?xt=urn:btmh:1220abcd"),
            Err(MagnetError::BadInfoHashV2(_))
        ));
        // Another multihash (SHA-1, code 0x11) names no v2 torrent.
        assert!(matches!(
            Magnet::parse(&format!("magnet:?xt=urn:btmh:1114{HEX}")),
            Err(MagnetError::BadInfoHashV2(_))
        ));
        assert!(matches!(
            Magnet::parse(&format!("magnet:?xt=urn:btmh:1220{}", "g".repeat(64))),
            Err(MagnetError::BadInfoHashV2(_))
        ));
        assert_eq!(
            Magnet::parse(&format!(
                "magnet:?xt=urn:btmh:1220{V2}&xt=urn:btmh:1220{}",
                "0".repeat(64)
            )),
            Err(MagnetError::ConflictingInfoHash)
        );
    }

    /// Huge names, values and lists are capped: nothing of a link's size
    /// is kept but the link itself, and that is at most 64 KiB.
    #[test]
    fn lengths_are_capped() {
        let long = Magnet::parse(&format!(
            "magnet:?xt=urn:btih:{HEX}&dn={}",
            "x".repeat(15 << 20)
        ));
        assert_eq!(long, Err(MagnetError::TooLong(15 * 1024 * 1024 + 64)));
        let name = "é".repeat(3000);
        let m = Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}&dn={name}")).unwrap();
        let got = m.name.unwrap();
        assert!(
            got.len() <= MAX_NAME_LEN && got.ends_with('…'),
            "{}",
            got.len()
        );
        assert!(got.starts_with("éé"));
        let mut uri = format!(
            "magnet:?xt=urn:btih:{HEX}&x.pe=h.example:1{}",
            "x".repeat(3000)
        );
        for i in 0..1000 {
            uri.push_str(&format!(
                "&x.pe=10.0.{}.{}:1&tr=udp://t{i}:1",
                i / 250,
                i % 250
            ));
        }
        let m = Magnet::parse(&uri).unwrap();
        assert_eq!(m.peers.len(), MAX_ENTRIES);
        assert_eq!(m.trackers.len(), MAX_ENTRIES);
        assert!(m.peer_hosts.is_empty(), "an over-long value is dropped");
    }

    const V2: &str = "caf1e1c30e81cb361b9ee167c4aa64228a7fa4fa9f6105232b28ad099f3a302e";

    /// A v2-only magnet: its swarm is the v2 hash cut to 20 bytes, and the
    /// metadata is to be checked against the whole v2 hash.
    #[test]
    fn v2_only() {
        let m = Magnet::parse(&format!("magnet:?xt=urn:btmh:1220{V2}&dn=x")).unwrap();
        assert!(!m.has_v1);
        assert_eq!(m.info_hash_v2.map(hex::encode).as_deref(), Some(V2));
        assert_eq!(m.info_hash.hex(), V2[..40]);
        let upper =
            Magnet::parse(&format!("magnet:?xt=URN:BTMH:1220{}", V2.to_uppercase())).unwrap();
        assert_eq!(upper, m.clone_with_name(None));
    }

    /// A hybrid's magnet carries both: the v1 hash names the swarm.
    #[test]
    fn hybrid_keeps_the_v1_hash() {
        let m = Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}&xt=urn:btmh:1220{V2}")).unwrap();
        assert!(m.has_v1);
        assert_eq!(m.info_hash.hex(), HEX);
        assert_eq!(m.info_hash_v2.map(hex::encode).as_deref(), Some(V2));
    }

    impl Magnet {
        fn clone_with_name(&self, name: Option<String>) -> Magnet {
            Magnet {
                name,
                ..self.clone()
            }
        }
    }
}
