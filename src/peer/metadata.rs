//! BEP 9 metadata exchange (`ut_metadata` over BEP 10): the message codec,
//! serving pieces of our info dictionary, and assembling one from peers.
//! Pure logic; the connections that carry it live in `peer` and `fetch`.

use std::collections::BTreeMap;

use serde_bencode::value::Value;
use sha1::{Digest, Sha1};
use thiserror::Error;

use crate::metainfo::bencode;

/// The id we ask peers to send `ut_metadata` messages under (ours to pick;
/// BEP 10 ids are per direction).
pub const UT_METADATA_ID: u8 = 3;
/// Metadata travels in pieces of 16 KiB (the last may be shorter).
pub const PIECE: usize = 16 << 10;
/// Largest info dictionary we accept from peers. Real torrents stay far
/// below it (a 1 M-piece torrent's is 20 MiB of hashes, and such torrents
/// are not shared by magnet); it bounds what a lying peer can make us hold.
pub const MAX_SIZE: u64 = 16 << 20;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MetadataError {
    #[error("ut_metadata message is not a bencoded dictionary: {0}")]
    Bencode(String),
    #[error("ut_metadata message lacks `{0}`")]
    Missing(&'static str),
    #[error("unknown ut_metadata message type {0}")]
    UnknownType(i64),
    #[error("metadata size {0} is over the {MAX_SIZE}-byte cap")]
    TooLarge(u64),
    #[error("metadata size 0")]
    Empty,
    #[error("peer says the metadata is {said} bytes, another said {known}")]
    SizeMismatch { said: u64, known: u64 },
    #[error("metadata piece {0} was not asked for")]
    Unrequested(u32),
    #[error("metadata piece {piece} is {got} bytes, expected {want}")]
    WrongLength { piece: u32, got: usize, want: usize },
    #[error("assembled metadata does not match the info-hash")]
    HashMismatch,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    Request(u32),
    Data {
        piece: u32,
        total_size: u64,
        data: Vec<u8>,
    },
    Reject(u32),
}

impl Msg {
    /// Reads a `ut_metadata` payload: a bencoded dictionary, followed by the
    /// piece's bytes for `data` messages.
    pub fn decode(payload: &[u8]) -> Result<Msg, MetadataError> {
        let end = bencode::value_end(payload).map_err(|e| MetadataError::Bencode(e.to_string()))?;
        let Ok(Value::Dict(d)) = bencode::decode(&payload[..end]) else {
            return Err(MetadataError::Bencode("not a dictionary".into()));
        };
        let int = |k: &'static str| match d.get(k.as_bytes()) {
            Some(Value::Int(i)) => Ok(*i),
            _ => Err(MetadataError::Missing(k)),
        };
        let piece = u32::try_from(int("piece")?).map_err(|_| MetadataError::Missing("piece"))?;
        match int("msg_type")? {
            0 => Ok(Msg::Request(piece)),
            1 => {
                let total_size = u64::try_from(int("total_size")?)
                    .map_err(|_| MetadataError::Missing("total_size"))?;
                Ok(Msg::Data {
                    piece,
                    total_size,
                    data: payload[end..].to_vec(),
                })
            }
            2 => Ok(Msg::Reject(piece)),
            t => Err(MetadataError::UnknownType(t)),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut d: BTreeMap<&str, i64> = BTreeMap::new();
        let (kind, piece) = match self {
            Msg::Request(p) => (0, *p),
            Msg::Data { piece, .. } => (1, *piece),
            Msg::Reject(p) => (2, *p),
        };
        d.insert("msg_type", kind);
        d.insert("piece", piece as i64);
        if let Msg::Data { total_size, .. } = self {
            d.insert("total_size", *total_size as i64);
        }
        let mut out = b"d".to_vec();
        for (k, v) in d {
            out.extend_from_slice(format!("{}:{k}i{v}e", k.len()).as_bytes());
        }
        out.push(b'e');
        if let Msg::Data { data, .. } = self {
            out.extend_from_slice(data);
        }
        out
    }
}

/// Number of 16 KiB pieces of metadata of `size` bytes.
pub fn piece_count(size: u64) -> u32 {
    size.div_ceil(PIECE as u64) as u32
}

/// The answer to a request for `piece` of our info dictionary `info`.
pub fn serve(info: &[u8], piece: u32) -> Msg {
    let start = piece as usize * PIECE;
    if start >= info.len() {
        return Msg::Reject(piece);
    }
    let end = (start + PIECE).min(info.len());
    Msg::Data {
        piece,
        total_size: info.len() as u64,
        data: info[start..end].to_vec(),
    }
}

/// Collects the pieces of an info dictionary from any number of peers and
/// checks the whole against the info-hash before anyone trusts it.
#[derive(Debug)]
pub struct Assembler {
    check: InfoCheck,
    size: Option<u64>,
    pieces: Vec<Option<Vec<u8>>>,
    /// Pieces asked for and not yet answered (any peer).
    asked: Vec<bool>,
}

/// What a fetched info dictionary must hash to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InfoCheck {
    /// SHA-1: a v1 or hybrid torrent's info-hash.
    V1([u8; 20]),
    /// SHA-256, all 32 bytes (BEP 52): the handshake carries only the first
    /// 20, so a dictionary matching those alone proves nothing.
    V2([u8; 32]),
}

impl InfoCheck {
    pub fn matches(&self, info: &[u8]) -> bool {
        match self {
            InfoCheck::V1(h) => <[u8; 20]>::from(Sha1::digest(info)) == *h,
            InfoCheck::V2(h) => <[u8; 32]>::from(sha2::Sha256::digest(info)) == *h,
        }
    }
}

impl Assembler {
    pub fn new(info_hash: [u8; 20]) -> Assembler {
        Assembler::with_check(InfoCheck::V1(info_hash))
    }

    pub fn with_check(check: InfoCheck) -> Assembler {
        Assembler {
            check,
            size: None,
            pieces: Vec::new(),
            asked: Vec::new(),
        }
    }

    pub fn size(&self) -> Option<u64> {
        self.size
    }

    /// Takes the size a peer announced (`metadata_size`). The first valid
    /// size wins; a peer that disagrees is wrong (or the first was, which
    /// the hash check finds out, and `reset` starts over).
    pub fn set_size(&mut self, size: u64) -> Result<(), MetadataError> {
        if size == 0 {
            return Err(MetadataError::Empty);
        }
        if size > MAX_SIZE {
            return Err(MetadataError::TooLarge(size));
        }
        match self.size {
            Some(known) if known != size => Err(MetadataError::SizeMismatch { said: size, known }),
            Some(_) => Ok(()),
            None => {
                self.size = Some(size);
                let n = piece_count(size) as usize;
                self.pieces = vec![None; n];
                self.asked = vec![false; n];
                Ok(())
            }
        }
    }

    /// The next piece nobody has been asked for, marked as asked.
    pub fn next_request(&mut self) -> Option<u32> {
        let i = (0..self.pieces.len()).find(|&i| self.pieces[i].is_none() && !self.asked[i])?;
        self.asked[i] = true;
        Some(i as u32)
    }

    /// A peer will not answer `piece` (rejected, or went away): ask another.
    pub fn unask(&mut self, piece: u32) {
        if let Some(a) = self.asked.get_mut(piece as usize) {
            *a = false;
        }
    }

    fn want_len(&self, piece: u32) -> usize {
        let size = self.size.unwrap_or(0) as usize;
        (size - piece as usize * PIECE).min(PIECE)
    }

    /// Takes a `data` message. Returns the verified info dictionary once
    /// every piece is in. A hash mismatch clears everything: the caller
    /// drops the peers that contributed and starts over.
    pub fn on_data(
        &mut self,
        piece: u32,
        total_size: u64,
        data: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, MetadataError> {
        self.set_size(total_size)?;
        let i = piece as usize;
        if i >= self.pieces.len() || !self.asked[i] || self.pieces[i].is_some() {
            return Err(MetadataError::Unrequested(piece));
        }
        let want = self.want_len(piece);
        if data.len() != want {
            self.asked[i] = false;
            return Err(MetadataError::WrongLength {
                piece,
                got: data.len(),
                want,
            });
        }
        self.pieces[i] = Some(data);
        if self.pieces.iter().any(Option::is_none) {
            return Ok(None);
        }
        let info: Vec<u8> = self
            .pieces
            .iter_mut()
            .flat_map(|p| p.take().unwrap_or_default())
            .collect();
        if !self.check.matches(&info) {
            self.reset();
            return Err(MetadataError::HashMismatch);
        }
        Ok(Some(info))
    }

    /// Forgets the size and every piece.
    pub fn reset(&mut self) {
        self.size = None;
        self.pieces.clear();
        self.asked.clear();
    }
}

/// A .torrent file made of a fetched info dictionary (kept byte for byte,
/// so its hash is the magnet's) and the magnet's trackers and web seeds.
pub fn torrent_file(info: &[u8], trackers: &[String], web_seeds: &[String]) -> Vec<u8> {
    fn bytes(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(format!("{}:", b.len()).as_bytes());
        out.extend_from_slice(b);
    }
    let mut out = b"d".to_vec();
    if let Some(first) = trackers.first() {
        bytes(&mut out, b"announce");
        bytes(&mut out, first.as_bytes());
        bytes(&mut out, b"announce-list");
        out.push(b'l');
        for t in trackers {
            out.push(b'l');
            bytes(&mut out, t.as_bytes());
            out.push(b'e');
        }
        out.push(b'e');
    }
    bytes(&mut out, b"info");
    out.extend_from_slice(info);
    if !web_seeds.is_empty() {
        bytes(&mut out, b"url-list");
        out.push(b'l');
        for w in web_seeds {
            bytes(&mut out, w.as_bytes());
        }
        out.push(b'e');
    }
    out.push(b'e');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(n: usize) -> Vec<u8> {
        let body: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
        let mut v = format!("d4:name{}:", body.len()).into_bytes();
        v.extend_from_slice(&body);
        v.push(b'e');
        v
    }

    #[test]
    fn messages_round_trip() {
        for m in [
            Msg::Request(7),
            Msg::Reject(0),
            Msg::Data {
                piece: 2,
                total_size: 40_000,
                data: b"xyz".to_vec(),
            },
        ] {
            assert_eq!(Msg::decode(&m.encode()), Ok(m.clone()));
        }
        // From the BEP's own example.
        assert_eq!(
            Msg::decode(b"d8:msg_typei0e5:piecei0ee"),
            Ok(Msg::Request(0))
        );
        assert!(Msg::decode(b"d8:msg_typei9e5:piecei0ee").is_err());
        assert!(Msg::decode(b"d5:piecei0ee").is_err());
        assert!(Msg::decode(b"d8:msg_typei0e5:piecei-1ee").is_err());
        assert!(Msg::decode(b"le").is_err());
        assert!(Msg::decode(b"d8:msg_type").is_err());
        assert!(Msg::decode(b"").is_err());
    }

    #[test]
    fn serving_and_rejects() {
        let info = info(40_000);
        let Msg::Data {
            data, total_size, ..
        } = serve(&info, 2)
        else {
            panic!("expected data")
        };
        assert_eq!(total_size, info.len() as u64);
        assert_eq!(data, &info[2 * PIECE..]);
        assert_eq!(serve(&info, 3), Msg::Reject(3));
        assert_eq!(serve(&info, u32::MAX), Msg::Reject(u32::MAX));
    }

    #[test]
    fn assembles_from_pieces_and_checks_the_hash() {
        let info = info(40_000);
        let hash: [u8; 20] = Sha1::digest(&info).into();
        let mut a = Assembler::new(hash);
        a.set_size(info.len() as u64).unwrap();
        let asked: Vec<u32> = std::iter::from_fn(|| a.next_request()).collect();
        assert_eq!(asked, vec![0, 1, 2]);
        let total = info.len() as u64;
        let piece = |p: u32| serve(&info, p);
        let mut done = None;
        for p in [2, 0, 1] {
            let Msg::Data { data, .. } = piece(p) else {
                unreachable!()
            };
            done = a.on_data(p, total, data).unwrap();
        }
        assert_eq!(done, Some(info));
    }

    /// A v2 magnet's metadata is checked against the whole SHA-256 hash:
    /// a dictionary whose SHA-1 or first 20 bytes of SHA-256 would do is
    /// refused unless all 32 bytes match.
    #[test]
    fn v2_metadata_is_checked_with_sha256() {
        let info = info(40_000);
        let full: [u8; 32] = sha2::Sha256::digest(&info).into();
        let fetch = |check| {
            let mut a = Assembler::with_check(check);
            a.set_size(info.len() as u64).unwrap();
            let mut last = Ok(None);
            while let Some(p) = a.next_request() {
                let Msg::Data { data, .. } = serve(&info, p) else {
                    panic!("no data")
                };
                last = a.on_data(p, info.len() as u64, data);
            }
            last
        };
        assert_eq!(fetch(InfoCheck::V2(full)).unwrap(), Some(info.clone()));
        let mut wrong = full;
        wrong[31] ^= 1;
        assert!(matches!(
            fetch(InfoCheck::V2(wrong)),
            Err(MetadataError::HashMismatch)
        ));
        let sha1: [u8; 20] = Sha1::digest(&info).into();
        assert!(fetch(InfoCheck::V1(sha1)).is_ok());
    }

    #[test]
    fn bad_input_is_refused() {
        let info = info(20_000);
        let hash: [u8; 20] = Sha1::digest(&info).into();
        let mut a = Assembler::new(hash);
        assert_eq!(a.set_size(0), Err(MetadataError::Empty));
        assert_eq!(
            a.set_size(MAX_SIZE + 1),
            Err(MetadataError::TooLarge(MAX_SIZE + 1))
        );
        a.set_size(20_000).unwrap();
        assert!(matches!(
            a.set_size(20_001),
            Err(MetadataError::SizeMismatch { .. })
        ));
        // Never asked for: refused.
        assert_eq!(
            a.on_data(0, 20_000, vec![0; PIECE]),
            Err(MetadataError::Unrequested(0))
        );
        assert_eq!(a.next_request(), Some(0));
        // Wrong length: refused, and the piece may be asked again.
        assert!(matches!(
            a.on_data(0, 20_000, vec![0; 100]),
            Err(MetadataError::WrongLength { .. })
        ));
        assert_eq!(a.next_request(), Some(0));
        assert_eq!(a.next_request(), Some(1));
        // Right lengths, wrong bytes: the hash check throws it all away.
        a.on_data(0, 20_000, vec![0; PIECE]).unwrap();
        assert_eq!(
            a.on_data(1, 20_000, vec![0; 20_000 - PIECE]),
            Err(MetadataError::HashMismatch)
        );
        assert_eq!(a.size(), None);
        assert_eq!(a.next_request(), None);
    }

    #[test]
    fn torrent_file_keeps_the_info_bytes() {
        let info = b"d6:lengthi5e4:name1:x12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaae";
        let t = torrent_file(info, &["http://127.0.0.1:1/announce".into()], &[]);
        let m = crate::metainfo::Metainfo::from_bytes(&t).unwrap();
        assert_eq!(m.info_hash.0, <[u8; 20]>::from(Sha1::digest(info)));
        assert_eq!(
            m.tracker_tiers(),
            vec![vec!["http://127.0.0.1:1/announce".to_string()]]
        );
    }
}
