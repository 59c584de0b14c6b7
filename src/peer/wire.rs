//! Peer wire protocol codec (BEP 3, BEP 6 Fast extension, BEP 10 extension protocol).
//!
//! Pure: no I/O. Decoding reads from the connection's `BytesMut` read buffer and
//! encoding appends to a `BytesMut` write buffer, so the peer layer owns all sockets,
//! timers and policy (e.g. whether Fast messages are allowed on this connection).

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde_bencode::value::Value;
use thiserror::Error;

pub const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";
/// The block size we request (and the largest most peers serve).
pub const BLOCK_LEN: u32 = 16384;
/// The largest block we accept in incoming requests and pieces.
pub const MAX_BLOCK_LEN: u32 = 128 * 1024;

/// Message ids, as sent after the length prefix.
pub mod id {
    pub const CHOKE: u8 = 0;
    pub const UNCHOKE: u8 = 1;
    pub const INTERESTED: u8 = 2;
    pub const NOT_INTERESTED: u8 = 3;
    pub const HAVE: u8 = 4;
    pub const BITFIELD: u8 = 5;
    pub const REQUEST: u8 = 6;
    pub const PIECE: u8 = 7;
    pub const CANCEL: u8 = 8;
    pub const PORT: u8 = 9;
    pub const SUGGEST: u8 = 0x0d;
    pub const HAVE_ALL: u8 = 0x0e;
    pub const HAVE_NONE: u8 = 0x0f;
    pub const REJECT: u8 = 0x10;
    pub const ALLOWED_FAST: u8 = 0x11;
    pub const EXTENDED: u8 = 20;
    // BEP 52
    pub const HASH_REQUEST: u8 = 21;
    pub const HASHES: u8 = 22;
    pub const HASH_REJECT: u8 = 23;
}

/// Extended message id of the BEP 10 handshake.
pub const EXTENDED_HANDSHAKE_ID: u8 = 0;

/// Largest message length prefix to accept for a torrent with `piece_count` pieces:
/// room for a 128 KiB block, or for the whole bitfield if that is bigger.
pub fn max_message_len(piece_count: u32) -> u32 {
    let bitfield = piece_count.div_ceil(8) + 1;
    (MAX_BLOCK_LEN + 13).max(bitfield)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockRef {
    pub index: u32,
    pub begin: u32,
    pub length: u32,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    /// Checked on the length prefix alone, so an oversized body is never buffered.
    #[error("message length {len} exceeds limit {max}")]
    MessageTooLong { len: u32, max: u32 },
    /// `len` is the length prefix (id byte included).
    #[error("message id {id} has invalid length {len}")]
    BadLength { id: u8, len: u32 },
    #[error("handshake needs {need} bytes, got {got}")]
    HandshakeTooShort { need: usize, got: usize },
    #[error("handshake protocol length is {0}, expected 19")]
    BadPstrlen(u8),
    #[error("handshake protocol string is not \"BitTorrent protocol\"")]
    BadProtocol,
    #[error("extended message without an extended id")]
    EmptyExtended,
    #[error("bad extended handshake: {0}")]
    BadExtendedHandshake(String),
}

/// reserved[7]: the peer supports BitTorrent v2 (BEP 52).
pub const V2_BIT: u8 = 0x10;

/// Most hashes one BEP 52 request may ask for: the spec says requests
/// SHOULD NOT ask for more, and libtorrent asks for the piece layer in
/// chunks of exactly this many.
pub const MAX_HASH_REQUEST: u32 = 512;

/// A BEP 52 hash request, and the header of the `hashes` and `hash
/// reject` answers to it: which file (its pieces root), which layer
/// (`base`, counted up from the leaves), which nodes (`index`, `length`)
/// and how many layers of proof above them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HashRequest {
    pub root: [u8; 32],
    pub base: u32,
    pub index: u32,
    pub length: u32,
    pub proof_layers: u32,
}

impl HashRequest {
    const LEN: usize = 48;

    /// The shape BEP 52 allows, whatever the file: a power of two of at
    /// most [`MAX_HASH_REQUEST`] nodes at an index that is a multiple of
    /// it. (BEP 52 asks for at least two; libtorrent asks for one at the
    /// end of a layer, so one is allowed too.) Whether it fits the file's
    /// tree is for the answering side to check.
    pub fn well_formed(&self) -> bool {
        self.length.is_power_of_two()
            && self.length <= MAX_HASH_REQUEST
            && self.index.is_multiple_of(self.length)
            && self.base < 64
            && self.proof_layers < 64
    }

    fn put(&self, buf: &mut BytesMut) {
        buf.extend_from_slice(&self.root);
        buf.put_u32(self.base);
        buf.put_u32(self.index);
        buf.put_u32(self.length);
        buf.put_u32(self.proof_layers);
    }

    // Only called once the length check guaranteed 48 buffered bytes.
    fn get(buf: &mut BytesMut) -> HashRequest {
        let mut root = [0u8; 32];
        buf.copy_to_slice(&mut root);
        HashRequest {
            root,
            base: buf.get_u32(),
            index: buf.get_u32(),
            length: buf.get_u32(),
            proof_layers: buf.get_u32(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handshake {
    pub reserved: [u8; 8],
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
}

impl Handshake {
    pub const LEN: usize = 68;

    /// Ours: advertises the Fast extension (reserved[7] & 0x04) and the
    /// extension protocol (reserved[5] & 0x10).
    pub fn new(info_hash: [u8; 20], peer_id: [u8; 20]) -> Self {
        let mut reserved = [0u8; 8];
        reserved[5] |= 0x10;
        reserved[7] |= 0x04;
        Handshake {
            reserved,
            info_hash,
            peer_id,
        }
    }

    pub fn encode(&self) -> [u8; 68] {
        let mut out = [0u8; 68];
        out[0] = 19;
        out[1..20].copy_from_slice(PROTOCOL);
        out[20..28].copy_from_slice(&self.reserved);
        out[28..48].copy_from_slice(&self.info_hash);
        out[48..68].copy_from_slice(&self.peer_id);
        out
    }

    /// Parses the first 68 bytes of `buf` (extra bytes are ignored); checks
    /// pstrlen 19 and the protocol string.
    pub fn decode(buf: &[u8]) -> Result<Handshake, WireError> {
        check_handshake_prefix(buf)?;
        let whole = buf.get(..Self::LEN).ok_or(WireError::HandshakeTooShort {
            need: Self::LEN,
            got: buf.len(),
        })?;
        let mut reserved = [0u8; 8];
        let mut info_hash = [0u8; 20];
        let mut peer_id = [0u8; 20];
        reserved.copy_from_slice(&whole[20..28]);
        info_hash.copy_from_slice(&whole[28..48]);
        peer_id.copy_from_slice(&whole[48..68]);
        Ok(Handshake {
            reserved,
            info_hash,
            peer_id,
        })
    }

    pub fn supports_fast(&self) -> bool {
        self.reserved[7] & 0x04 != 0
    }

    pub fn supports_extensions(&self) -> bool {
        self.reserved[5] & 0x10 != 0
    }

    /// BEP 5 DHT bit; we don't set it, but peers may.
    pub fn supports_dht(&self) -> bool {
        self.reserved[7] & 0x01 != 0
    }
}

/// Checks whatever part of pstrlen and the protocol string `buf` already holds,
/// so a non-BitTorrent peer is dropped after its first bytes.
fn check_handshake_prefix(buf: &[u8]) -> Result<(), WireError> {
    if let Some(&pstrlen) = buf.first() {
        if pstrlen != 19 {
            return Err(WireError::BadPstrlen(pstrlen));
        }
    }
    let got = buf.get(1..).unwrap_or_default();
    let n = got.len().min(PROTOCOL.len());
    if got[..n] != PROTOCOL[..n] {
        return Err(WireError::BadProtocol);
    }
    Ok(())
}

/// Streaming handshake decode: removes and returns the handshake once 68 bytes
/// are buffered, `Ok(None)` before that. A wrong pstrlen or protocol string is
/// reported as soon as its bytes arrive. On error nothing is consumed.
pub fn decode_handshake(buf: &mut BytesMut) -> Result<Option<Handshake>, WireError> {
    check_handshake_prefix(buf)?;
    if buf.len() < Handshake::LEN {
        return Ok(None);
    }
    let hs = Handshake::decode(buf)?;
    buf.advance(Handshake::LEN);
    Ok(Some(hs))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have(u32),
    Bitfield(Bytes),
    Request(BlockRef),
    Piece {
        index: u32,
        begin: u32,
        data: Bytes,
    },
    Cancel(BlockRef),
    Port(u16),
    // BEP 6
    Suggest(u32),
    HaveAll,
    HaveNone,
    Reject(BlockRef),
    AllowedFast(u32),
    // BEP 52
    HashRequest(HashRequest),
    /// The answer to `req`: 32-byte hashes, the requested nodes then the
    /// uncles (the decoder checks the payload is whole hashes).
    Hashes {
        req: HashRequest,
        hashes: Bytes,
    },
    HashReject(HashRequest),
    // BEP 10
    Extended {
        id: u8,
        payload: Bytes,
    },
    /// Unknown message id: the spec says ignore; the caller decides.
    /// `len` is the payload length (id byte excluded); the body was skipped.
    /// Decode-only: `encode` writes nothing for it.
    Unknown {
        id: u8,
        len: u32,
    },
}

impl Message {
    /// Wire id, `None` for keep-alive (which has none).
    pub fn id(&self) -> Option<u8> {
        Some(match self {
            Message::KeepAlive => return None,
            Message::Choke => id::CHOKE,
            Message::Unchoke => id::UNCHOKE,
            Message::Interested => id::INTERESTED,
            Message::NotInterested => id::NOT_INTERESTED,
            Message::Have(_) => id::HAVE,
            Message::Bitfield(_) => id::BITFIELD,
            Message::Request(_) => id::REQUEST,
            Message::Piece { .. } => id::PIECE,
            Message::Cancel(_) => id::CANCEL,
            Message::Port(_) => id::PORT,
            Message::Suggest(_) => id::SUGGEST,
            Message::HaveAll => id::HAVE_ALL,
            Message::HaveNone => id::HAVE_NONE,
            Message::Reject(_) => id::REJECT,
            Message::AllowedFast(_) => id::ALLOWED_FAST,
            Message::HashRequest(_) => id::HASH_REQUEST,
            Message::Hashes { .. } => id::HASHES,
            Message::HashReject(_) => id::HASH_REJECT,
            Message::Extended { .. } => id::EXTENDED,
            Message::Unknown { id, .. } => *id,
        })
    }

    /// BEP 6 messages are only legal when both handshakes set the Fast bit;
    /// the peer layer must drop a peer that sends them otherwise.
    pub fn requires_fast(&self) -> bool {
        matches!(
            self,
            Message::Suggest(_)
                | Message::HaveAll
                | Message::HaveNone
                | Message::Reject(_)
                | Message::AllowedFast(_)
        )
    }

    /// Bytes `encode` appends (prefix included); 0 for `Unknown`.
    pub fn encoded_len(&self) -> usize {
        match self.payload_len() {
            Some(n) => 4 + n,
            None => 0,
        }
    }

    /// Length prefix value (id byte included), `None` if not encodable.
    fn payload_len(&self) -> Option<usize> {
        Some(match self {
            Message::KeepAlive => 0,
            Message::Choke
            | Message::Unchoke
            | Message::Interested
            | Message::NotInterested
            | Message::HaveAll
            | Message::HaveNone => 1,
            Message::Have(_) | Message::Suggest(_) | Message::AllowedFast(_) => 5,
            Message::Request(_) | Message::Cancel(_) | Message::Reject(_) => 13,
            Message::Port(_) => 3,
            Message::HashRequest(_) | Message::HashReject(_) => 1 + HashRequest::LEN,
            Message::Hashes { hashes, .. } => 1 + HashRequest::LEN + hashes.len(),
            Message::Bitfield(b) => 1 + b.len(),
            Message::Piece { data, .. } => 9 + data.len(),
            Message::Extended { payload, .. } => 2 + payload.len(),
            Message::Unknown { .. } => return None,
        })
    }
}

/// Payload size (after the id byte) that each known id allows.
enum Body {
    Exact(u32),
    AtLeast(u32),
    /// A hash request's header, then whole 32-byte hashes.
    Hashes,
    Unknown,
}

fn body_rule(msg_id: u8) -> Body {
    match msg_id {
        id::CHOKE
        | id::UNCHOKE
        | id::INTERESTED
        | id::NOT_INTERESTED
        | id::HAVE_ALL
        | id::HAVE_NONE => Body::Exact(0),
        id::HAVE | id::SUGGEST | id::ALLOWED_FAST => Body::Exact(4),
        id::REQUEST | id::CANCEL | id::REJECT => Body::Exact(12),
        id::PORT => Body::Exact(2),
        id::HASH_REQUEST | id::HASH_REJECT => Body::Exact(HashRequest::LEN as u32),
        id::HASHES => Body::Hashes,
        id::PIECE => Body::AtLeast(8),
        id::BITFIELD => Body::AtLeast(0),
        id::EXTENDED => Body::AtLeast(1),
        _ => Body::Unknown,
    }
}

/// Decodes one message if `buf` holds a whole one (removing it from `buf`),
/// `Ok(None)` if more bytes are needed.
///
/// All errors are detected from the 5-byte header, before the body is buffered,
/// and consume nothing; the caller should drop the peer. While waiting for a
/// body, capacity for it is reserved so the next reads need no reallocation.
/// Bitfield, piece and extended payloads are zero-copy slices of `buf`.
pub fn decode(buf: &mut BytesMut, max_len: u32) -> Result<Option<Message>, WireError> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    if len > max_len {
        return Err(WireError::MessageTooLong { len, max: max_len });
    }
    if len == 0 {
        buf.advance(4);
        return Ok(Some(Message::KeepAlive));
    }
    let Some(&msg_id) = buf.get(4) else {
        return Ok(None);
    };
    let body_len = len - 1;
    let ok = match body_rule(msg_id) {
        Body::Exact(n) => body_len == n,
        Body::AtLeast(n) => body_len >= n,
        Body::Hashes => {
            body_len >= HashRequest::LEN as u32
                && (body_len - HashRequest::LEN as u32).is_multiple_of(32)
        }
        Body::Unknown => true,
    };
    if !ok {
        return Err(if msg_id == id::EXTENDED {
            WireError::EmptyExtended
        } else {
            WireError::BadLength { id: msg_id, len }
        });
    }
    // u32 always fits usize on the targets we build for; saturate otherwise.
    let total = usize::try_from(len).unwrap_or(usize::MAX).saturating_add(4);
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    buf.advance(5);
    let body_len = total - 5;
    let msg = match msg_id {
        id::CHOKE => Message::Choke,
        id::UNCHOKE => Message::Unchoke,
        id::INTERESTED => Message::Interested,
        id::NOT_INTERESTED => Message::NotInterested,
        id::HAVE_ALL => Message::HaveAll,
        id::HAVE_NONE => Message::HaveNone,
        id::HAVE => Message::Have(buf.get_u32()),
        id::SUGGEST => Message::Suggest(buf.get_u32()),
        id::ALLOWED_FAST => Message::AllowedFast(buf.get_u32()),
        id::REQUEST => Message::Request(get_block(buf)),
        id::CANCEL => Message::Cancel(get_block(buf)),
        id::REJECT => Message::Reject(get_block(buf)),
        id::PORT => Message::Port(buf.get_u16()),
        id::HASH_REQUEST => Message::HashRequest(HashRequest::get(buf)),
        id::HASH_REJECT => Message::HashReject(HashRequest::get(buf)),
        id::HASHES => {
            let req = HashRequest::get(buf);
            let hashes = buf.split_to(body_len - HashRequest::LEN).freeze();
            Message::Hashes { req, hashes }
        }
        id::BITFIELD => Message::Bitfield(buf.split_to(body_len).freeze()),
        id::PIECE => {
            let index = buf.get_u32();
            let begin = buf.get_u32();
            let data = buf.split_to(body_len - 8).freeze();
            Message::Piece { index, begin, data }
        }
        id::EXTENDED => {
            let id = buf.get_u8();
            let payload = buf.split_to(body_len - 1).freeze();
            Message::Extended { id, payload }
        }
        other => {
            buf.advance(body_len);
            Message::Unknown {
                id: other,
                len: len - 1,
            }
        }
    };
    Ok(Some(msg))
}

// Only called once the length check guaranteed 12 buffered bytes.
fn get_block(buf: &mut BytesMut) -> BlockRef {
    BlockRef {
        index: buf.get_u32(),
        begin: buf.get_u32(),
        length: buf.get_u32(),
    }
}

fn put_block(buf: &mut BytesMut, b: &BlockRef) {
    buf.put_u32(b.index);
    buf.put_u32(b.begin);
    buf.put_u32(b.length);
}

/// Appends `msg` to `buf`. A message whose length cannot be expressed in the
/// 32-bit prefix (over 4 GiB) is unrepresentable, and nothing is written for it,
/// as for `Unknown`.
pub fn encode(msg: &Message, buf: &mut BytesMut) {
    let Some(len) = msg.payload_len().and_then(|n| u32::try_from(n).ok()) else {
        return;
    };
    buf.reserve((len as usize).saturating_add(4));
    buf.put_u32(len);
    let Some(msg_id) = msg.id() else {
        return; // keep-alive: prefix only
    };
    buf.put_u8(msg_id);
    match msg {
        Message::Have(i) | Message::Suggest(i) | Message::AllowedFast(i) => buf.put_u32(*i),
        Message::Request(b) | Message::Cancel(b) | Message::Reject(b) => put_block(buf, b),
        Message::Port(p) => buf.put_u16(*p),
        Message::HashRequest(r) | Message::HashReject(r) => r.put(buf),
        Message::Hashes { req, hashes } => {
            req.put(buf);
            buf.extend_from_slice(hashes);
        }
        Message::Bitfield(b) => buf.extend_from_slice(b),
        Message::Piece { index, begin, data } => {
            buf.put_u32(*index);
            buf.put_u32(*begin);
            buf.extend_from_slice(data);
        }
        Message::Extended { id, payload } => {
            buf.put_u8(*id);
            buf.extend_from_slice(payload);
        }
        _ => {}
    }
}

/// Writes just the 13-byte header of a piece message with `data_len` bytes of
/// block to follow, so a seeder can read the block straight into the send buffer
/// after it (no extra copy). Writes nothing if `data_len + 9` overflows `u32`.
pub fn encode_piece_header(index: u32, begin: u32, data_len: u32, buf: &mut BytesMut) {
    let Some(len) = data_len.checked_add(9) else {
        return;
    };
    buf.reserve(13);
    buf.put_u32(len);
    buf.put_u8(id::PIECE);
    buf.put_u32(index);
    buf.put_u32(begin);
}

/// BEP 10 extended handshake (extended message id 0).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtendedHandshake {
    /// Extension name → the id the sender wants to receive it under; 0 means
    /// the sender disabled that extension (kept so the peer layer sees it).
    pub m: BTreeMap<String, u8>,
    pub v: Option<String>,
    pub p: Option<u16>,
    pub reqq: Option<u32>,
    pub yourip: Option<Vec<u8>>,
    pub metadata_size: Option<u64>,
}

/// Serialisation shape; `serde_bencode` sorts the keys.
#[derive(Serialize)]
struct ExtendedHandshakeOut<'a> {
    m: &'a BTreeMap<String, u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    v: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reqq: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    yourip: Option<&'a [u8]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata_size: Option<u64>,
}

/// Deepest list/dict nesting we hand to `serde_bencode`, which recurses per level.
const MAX_BENCODE_DEPTH: usize = 32;

impl ExtendedHandshake {
    /// Bencoded dictionary with sorted keys; `m` is always present.
    pub fn encode(&self) -> Vec<u8> {
        let out = ExtendedHandshakeOut {
            m: &self.m,
            v: self.v.as_deref(),
            p: self.p,
            reqq: self.reqq,
            yourip: self.yourip.as_deref(),
            metadata_size: self.metadata_size,
        };
        // Only strings, integers, byte strings and a string-keyed map: serde_bencode
        // has no failure path for these. Fall back to a minimal valid dict regardless.
        serde_bencode::to_bytes(&out).unwrap_or_else(|_| b"d1:mdee".to_vec())
    }

    /// Tolerant decode: unknown keys, wrongly typed or out-of-range optional fields
    /// and bad `m` entries are ignored, since peers disagree on details; only a
    /// payload that is not a bencoded dictionary is an error. Bytes after the
    /// dictionary are ignored. `reqq` above `u32::MAX` is clamped; `v` that is not
    /// UTF-8 is converted lossily.
    pub fn decode(payload: &[u8]) -> Result<Self, WireError> {
        let bad = |s: &str| WireError::BadExtendedHandshake(s.to_string());
        if payload.first() != Some(&b'd') {
            return Err(bad("not a dictionary"));
        }
        check_bencode(payload, MAX_BENCODE_DEPTH).map_err(bad)?;
        let value: Value = serde_bencode::from_bytes(payload)
            .map_err(|e| WireError::BadExtendedHandshake(e.to_string()))?;
        let Value::Dict(dict) = value else {
            return Err(bad("not a dictionary"));
        };
        let int = |key: &[u8]| match dict.get(key) {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        };
        let bytes = |key: &[u8]| match dict.get(key) {
            Some(Value::Bytes(b)) => Some(b.clone()),
            _ => None,
        };
        let mut m = BTreeMap::new();
        if let Some(Value::Dict(entries)) = dict.get(&b"m"[..]) {
            for (k, v) in entries {
                if let (Ok(name), Value::Int(i)) = (std::str::from_utf8(k), v) {
                    if let Ok(ext_id) = u8::try_from(*i) {
                        m.insert(name.to_string(), ext_id);
                    }
                }
            }
        }
        Ok(ExtendedHandshake {
            m,
            v: bytes(b"v").map(|b| String::from_utf8_lossy(&b).into_owned()),
            p: int(b"p").and_then(|i| u16::try_from(i).ok()),
            reqq: int(b"reqq")
                .filter(|i| *i >= 0)
                .map(|i| u32::try_from(i).unwrap_or(u32::MAX)),
            yourip: bytes(b"yourip"),
            metadata_size: int(b"metadata_size").and_then(|i| u64::try_from(i).ok()),
        })
    }
}

/// Validates the structure of the first bencoded value in `input` without
/// recursion, refusing nesting deeper than `max_depth`, so the recursive
/// `serde_bencode` parser that runs next cannot overflow the stack.
/// Integer contents are left to `serde_bencode`.
fn check_bencode(input: &[u8], max_depth: usize) -> Result<(), &'static str> {
    let mut pos = 0usize;
    let mut depth = 0usize;
    loop {
        let c = *input.get(pos).ok_or("truncated bencode")?;
        match c {
            b'd' | b'l' => {
                depth += 1;
                if depth > max_depth {
                    return Err("bencode nested too deeply");
                }
                pos += 1;
            }
            b'e' => {
                depth = depth.checked_sub(1).ok_or("unexpected end marker")?;
                pos += 1;
            }
            b'i' => {
                let rest = input.get(pos + 1..).unwrap_or_default();
                let end = rest
                    .iter()
                    .position(|&b| b == b'e')
                    .ok_or("unterminated integer")?;
                pos += end + 2;
            }
            b'0'..=b'9' => {
                let mut len = 0usize;
                loop {
                    let d = *input.get(pos).ok_or("truncated string length")?;
                    pos += 1;
                    match d {
                        b':' => break,
                        b'0'..=b'9' => {
                            len = len
                                .checked_mul(10)
                                .and_then(|l| l.checked_add(usize::from(d - b'0')))
                                .ok_or("string length overflow")?;
                        }
                        _ => return Err("bad string length"),
                    }
                }
                let end = pos.checked_add(len).ok_or("string length overflow")?;
                if end > input.len() {
                    return Err("truncated string");
                }
                pos = end;
            }
            _ => return Err("invalid bencode byte"),
        }
        if depth == 0 {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: u32 = 131_085;

    fn enc(msg: &Message) -> Vec<u8> {
        let mut b = BytesMut::new();
        encode(msg, &mut b);
        b.to_vec()
    }

    fn dec_all(bytes: &[u8], max: u32) -> Result<Vec<Message>, WireError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(m) = decode(&mut buf, max)? {
            out.push(m);
        }
        assert!(buf.is_empty(), "leftover bytes: {buf:?}");
        Ok(out)
    }

    fn dec_one(bytes: &[u8]) -> Result<Option<Message>, WireError> {
        decode(&mut BytesMut::from(bytes), MAX)
    }

    fn block(index: u32, begin: u32, length: u32) -> BlockRef {
        BlockRef {
            index,
            begin,
            length,
        }
    }

    fn all_messages() -> Vec<Message> {
        vec![
            Message::KeepAlive,
            Message::Choke,
            Message::Unchoke,
            Message::Interested,
            Message::NotInterested,
            Message::Have(7),
            Message::Bitfield(Bytes::from_static(&[0xff, 0x80])),
            Message::Bitfield(Bytes::new()),
            Message::Request(block(1, 16384, 16384)),
            Message::Piece {
                index: 3,
                begin: 0,
                data: Bytes::from_static(b"hello"),
            },
            Message::Piece {
                index: 3,
                begin: 5,
                data: Bytes::new(),
            },
            Message::Cancel(block(1, 0, 16384)),
            Message::Port(6881),
            Message::Suggest(9),
            Message::HaveAll,
            Message::HaveNone,
            Message::Reject(block(2, 32768, 16384)),
            Message::AllowedFast(u32::MAX),
            Message::Extended {
                id: 0,
                payload: Bytes::from_static(b"d1:mdee"),
            },
            Message::Extended {
                id: 3,
                payload: Bytes::new(),
            },
            Message::HashRequest(hash_req(4, 512)),
            Message::Hashes {
                req: hash_req(0, 2),
                hashes: Bytes::from(vec![0xabu8; 3 * 32]),
            },
            Message::Hashes {
                req: hash_req(0, 2),
                hashes: Bytes::new(),
            },
            Message::HashReject(hash_req(2, 2)),
        ]
    }

    fn hash_req(index: u32, length: u32) -> HashRequest {
        HashRequest {
            root: [7; 32],
            base: 1,
            index,
            length,
            proof_layers: 3,
        }
    }

    #[test]
    fn hash_messages_byte_exact() {
        let r = HashRequest {
            root: [0x11; 32],
            base: 2,
            index: 0x0200,
            length: 0x0200,
            proof_layers: 5,
        };
        let mut header = vec![0x11u8; 32];
        header.extend_from_slice(&[0, 0, 0, 2, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 0, 5]);
        let mut want = vec![0, 0, 0, 49, 21];
        want.extend_from_slice(&header);
        assert_eq!(enc(&Message::HashRequest(r)), want);
        want[4] = 23;
        assert_eq!(enc(&Message::HashReject(r)), want);
        let mut want = vec![0, 0, 0, 49 + 64, 22];
        want.extend_from_slice(&header);
        want.extend_from_slice(&[0xcd; 64]);
        let m = Message::Hashes {
            req: r,
            hashes: Bytes::from(vec![0xcdu8; 64]),
        };
        assert_eq!(enc(&m), want);
        assert_eq!(dec_all(&want, MAX).unwrap(), vec![m]);
    }

    /// Hash messages of the wrong size are refused from the header alone:
    /// a request or reject that is not 48 bytes, hashes that are not whole.
    #[test]
    fn hash_messages_with_wrong_length() {
        for (msg_id, body) in [
            (id::HASH_REQUEST, 47u32),
            (id::HASH_REQUEST, 49),
            (id::HASH_REQUEST, 80),
            (id::HASH_REJECT, 0),
            (id::HASH_REJECT, 50),
            (id::HASHES, 0),
            (id::HASHES, 47),
            (id::HASHES, 49),
            (id::HASHES, 48 + 31),
            (id::HASHES, 48 + 33),
        ] {
            let len = body + 1;
            let mut bytes = len.to_be_bytes().to_vec();
            bytes.push(msg_id);
            let mut buf = BytesMut::from(&bytes[..]);
            assert_eq!(
                decode(&mut buf, MAX),
                Err(WireError::BadLength { id: msg_id, len }),
                "id {msg_id} body {body}"
            );
            assert_eq!(buf.len(), 5, "error must not consume");
        }
        // Hashes beyond the message cap never get buffered.
        let mut bytes = (MAX + 32).to_be_bytes().to_vec();
        bytes.push(id::HASHES);
        assert!(matches!(
            dec_one(&bytes),
            Err(WireError::MessageTooLong { .. })
        ));
    }

    #[test]
    fn hash_request_shapes() {
        assert!(hash_req(0, 1).well_formed());
        assert!(hash_req(512, 512).well_formed());
        assert!(hash_req(6, 2).well_formed());
        for bad in [
            hash_req(0, 0),
            hash_req(0, 3),
            hash_req(2, 4),
            hash_req(0, 1024),
            hash_req(u32::MAX, 512),
            HashRequest {
                proof_layers: u32::MAX,
                ..hash_req(0, 2)
            },
            HashRequest {
                base: 99,
                ..hash_req(0, 2)
            },
        ] {
            assert!(!bad.well_formed(), "{bad:?}");
        }
    }

    #[test]
    fn round_trip_every_type() {
        for m in all_messages() {
            let bytes = enc(&m);
            assert_eq!(bytes.len(), m.encoded_len(), "{m:?}");
            assert_eq!(dec_all(&bytes, MAX).unwrap(), vec![m.clone()], "{m:?}");
        }
    }

    #[test]
    fn byte_exact_encodings() {
        let cases: Vec<(Message, &[u8])> = vec![
            (Message::KeepAlive, &[0, 0, 0, 0]),
            (Message::Choke, &[0, 0, 0, 1, 0]),
            (Message::Unchoke, &[0, 0, 0, 1, 1]),
            (Message::Interested, &[0, 0, 0, 1, 2]),
            (Message::NotInterested, &[0, 0, 0, 1, 3]),
            (Message::Have(7), &[0, 0, 0, 5, 4, 0, 0, 0, 7]),
            (
                Message::Bitfield(Bytes::from_static(&[0xa5, 0x80])),
                &[0, 0, 0, 3, 5, 0xa5, 0x80],
            ),
            (
                Message::Request(block(1, 0x4000, 0x4000)),
                &[0, 0, 0, 13, 6, 0, 0, 0, 1, 0, 0, 0x40, 0, 0, 0, 0x40, 0],
            ),
            (
                Message::Piece {
                    index: 2,
                    begin: 0x10,
                    data: Bytes::from_static(b"ab"),
                },
                &[0, 0, 0, 11, 7, 0, 0, 0, 2, 0, 0, 0, 0x10, b'a', b'b'],
            ),
            (
                Message::Cancel(block(1, 0, 0x4000)),
                &[0, 0, 0, 13, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x40, 0],
            ),
            (Message::Port(0x1ae1), &[0, 0, 0, 3, 9, 0x1a, 0xe1]),
            (Message::Suggest(1), &[0, 0, 0, 5, 0x0d, 0, 0, 0, 1]),
            (Message::HaveAll, &[0, 0, 0, 1, 0x0e]),
            (Message::HaveNone, &[0, 0, 0, 1, 0x0f]),
            (
                Message::Reject(block(0, 0, 1)),
                &[0, 0, 0, 13, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            ),
            (
                Message::AllowedFast(0x0102_0304),
                &[0, 0, 0, 5, 0x11, 1, 2, 3, 4],
            ),
            (
                Message::Extended {
                    id: 2,
                    payload: Bytes::from_static(b"de"),
                },
                &[0, 0, 0, 4, 20, 2, b'd', b'e'],
            ),
        ];
        for (m, bytes) in cases {
            assert_eq!(enc(&m), bytes, "{m:?}");
            assert_eq!(dec_all(bytes, MAX).unwrap(), vec![m]);
        }
    }

    #[test]
    fn piece_header_matches_full_encoding() {
        let data = Bytes::from(vec![7u8; 100]);
        let full = enc(&Message::Piece {
            index: 5,
            begin: 16384,
            data: data.clone(),
        });
        let mut b = BytesMut::new();
        encode_piece_header(5, 16384, 100, &mut b);
        assert_eq!(b.len(), 13);
        b.extend_from_slice(&data);
        assert_eq!(&b[..], &full[..]);
        let mut none = BytesMut::new();
        encode_piece_header(0, 0, u32::MAX, &mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn partial_data_returns_none_and_keeps_buffer() {
        for m in all_messages() {
            let bytes = enc(&m);
            for cut in 0..bytes.len() {
                let mut buf = BytesMut::from(&bytes[..cut]);
                assert_eq!(decode(&mut buf, MAX), Ok(None), "{m:?} cut {cut}");
                assert_eq!(&buf[..], &bytes[..cut]);
            }
        }
    }

    #[test]
    fn partial_reserves_room_for_body() {
        let mut buf = BytesMut::from(&[0u8, 0, 0x40, 9, 7][..]);
        assert_eq!(decode(&mut buf, MAX), Ok(None));
        assert!(buf.capacity() >= 0x4009 + 4);
    }

    #[test]
    fn several_messages_in_one_buffer() {
        let mut bytes = Vec::new();
        for m in all_messages() {
            bytes.extend(enc(&m));
        }
        // plus half of one more
        let have = enc(&Message::Have(1));
        bytes.extend(&have[..6]);
        let mut buf = BytesMut::from(&bytes[..]);
        let mut got = Vec::new();
        while let Some(m) = decode(&mut buf, MAX).unwrap() {
            got.push(m);
        }
        assert_eq!(got, all_messages());
        assert_eq!(&buf[..], &have[..6]);
        buf.extend_from_slice(&have[6..]);
        assert_eq!(decode(&mut buf, MAX), Ok(Some(Message::Have(1))));
        assert!(buf.is_empty());
    }

    #[test]
    fn keep_alive() {
        assert_eq!(dec_all(&[0, 0, 0, 0, 0, 0, 0, 0], MAX).unwrap().len(), 2);
        // keep-alive is fine even with a zero cap
        assert_eq!(dec_one(&[0, 0, 0, 0]), Ok(Some(Message::KeepAlive)));
        assert_eq!(
            decode(&mut BytesMut::from(&[0u8, 0, 0, 0][..]), 0),
            Ok(Some(Message::KeepAlive))
        );
    }

    #[test]
    fn piece_data_is_zero_copy() {
        let bytes = enc(&Message::Piece {
            index: 0,
            begin: 0,
            data: Bytes::from(vec![9u8; 1000]),
        });
        let mut buf = BytesMut::from(&bytes[..]);
        let base = buf.as_ptr() as usize;
        let Some(Message::Piece { data, .. }) = decode(&mut buf, MAX).unwrap() else {
            panic!("not a piece");
        };
        assert_eq!(data.as_ptr() as usize, base + 13);
    }

    #[test]
    fn unknown_id_is_skipped() {
        let bytes = [0, 0, 0, 4, 0x42, 1, 2, 3, 0, 0, 0, 1, 1];
        assert_eq!(
            dec_all(&bytes, MAX).unwrap(),
            vec![Message::Unknown { id: 0x42, len: 3 }, Message::Unchoke]
        );
        assert!(enc(&Message::Unknown { id: 0x42, len: 3 }).is_empty());
        assert_eq!(Message::Unknown { id: 0x42, len: 3 }.encoded_len(), 0);
        // still waits for the whole body
        assert_eq!(dec_one(&bytes[..7]), Ok(None));
    }

    #[test]
    fn huge_length_rejected_from_prefix_alone() {
        let mut buf = BytesMut::from(&[0xffu8, 0xff, 0xff, 0xff][..]);
        assert_eq!(
            decode(&mut buf, MAX),
            Err(WireError::MessageTooLong {
                len: u32::MAX,
                max: MAX
            })
        );
        assert_eq!(buf.len(), 4, "error must not consume");
        assert!(buf.capacity() < 1 << 20, "must not reserve for the body");
    }

    #[test]
    fn message_longer_than_cap() {
        let too_long = MAX + 1;
        let mut bytes = too_long.to_be_bytes().to_vec();
        bytes.push(id::PIECE);
        assert_eq!(
            dec_one(&bytes),
            Err(WireError::MessageTooLong {
                len: too_long,
                max: MAX
            })
        );
        // exactly at the cap is fine (once complete)
        assert_eq!(dec_one(&MAX.to_be_bytes()), Ok(None));
        // unknown ids are capped too
        let mut unknown = 1000u32.to_be_bytes().to_vec();
        unknown.push(0x99);
        assert_eq!(
            decode(&mut BytesMut::from(&unknown[..]), 999),
            Err(WireError::MessageTooLong {
                len: 1000,
                max: 999
            })
        );
    }

    #[test]
    fn max_message_len_values() {
        assert_eq!(max_message_len(0), 131_085);
        assert_eq!(max_message_len(1000), 131_085);
        assert_eq!(max_message_len(2_000_000), 250_001);
        assert_eq!(max_message_len(2_000_001), 250_002);
        assert_eq!(max_message_len(u32::MAX), 536_870_913);
    }

    #[test]
    fn fixed_size_ids_with_wrong_length() {
        let fixed: [(u8, u32); 13] = [
            (id::CHOKE, 0),
            (id::UNCHOKE, 0),
            (id::INTERESTED, 0),
            (id::NOT_INTERESTED, 0),
            (id::HAVE, 4),
            (id::REQUEST, 12),
            (id::CANCEL, 12),
            (id::PORT, 2),
            (id::SUGGEST, 4),
            (id::HAVE_ALL, 0),
            (id::HAVE_NONE, 0),
            (id::REJECT, 12),
            (id::ALLOWED_FAST, 4),
        ];
        for (msg_id, body) in fixed {
            for wrong in [0, 1, 3, 4, 5, 11, 12, 13, 100] {
                if wrong == body {
                    continue;
                }
                let len = wrong + 1;
                // only the header is buffered: rejected before the body arrives
                let mut bytes = len.to_be_bytes().to_vec();
                bytes.push(msg_id);
                let mut buf = BytesMut::from(&bytes[..]);
                assert_eq!(
                    decode(&mut buf, MAX),
                    Err(WireError::BadLength { id: msg_id, len }),
                    "id {msg_id} body {wrong}"
                );
                assert_eq!(buf.len(), 5);
                // and with the whole body too
                bytes.resize(4 + len as usize, 0);
                assert_eq!(
                    dec_one(&bytes),
                    Err(WireError::BadLength { id: msg_id, len })
                );
            }
        }
    }

    #[test]
    fn short_piece() {
        for body in 0..8u32 {
            let len = body + 1;
            let mut bytes = len.to_be_bytes().to_vec();
            bytes.push(id::PIECE);
            bytes.resize(4 + len as usize, 0);
            assert_eq!(
                dec_one(&bytes),
                Err(WireError::BadLength { id: id::PIECE, len })
            );
        }
    }

    #[test]
    fn extended_with_empty_payload() {
        assert_eq!(dec_one(&[0, 0, 0, 1, 20]), Err(WireError::EmptyExtended));
    }

    #[test]
    fn handshake_round_trip_and_bits() {
        let hs = Handshake::new([1; 20], [2; 20]);
        assert!(hs.supports_fast());
        assert!(hs.supports_extensions());
        assert!(!hs.supports_dht());
        let bytes = hs.encode();
        assert_eq!(bytes[0], 19);
        assert_eq!(&bytes[1..20], PROTOCOL);
        assert_eq!(&bytes[20..28], &[0, 0, 0, 0, 0, 0x10, 0, 0x04]);
        assert_eq!(&bytes[28..48], &[1; 20]);
        assert_eq!(&bytes[48..68], &[2; 20]);
        assert_eq!(Handshake::decode(&bytes), Ok(hs.clone()));

        let plain = Handshake {
            reserved: [0; 8],
            ..hs.clone()
        };
        assert!(!plain.supports_fast() && !plain.supports_extensions());

        // streaming: byte by byte, then a message right behind it
        let mut stream = bytes.to_vec();
        stream.extend(enc(&Message::Interested));
        let mut buf = BytesMut::new();
        for (i, b) in stream[..68].iter().enumerate() {
            buf.put_u8(*b);
            let got = decode_handshake(&mut buf).unwrap();
            assert_eq!(got.is_some(), i == 67);
            if let Some(h) = got {
                assert_eq!(h, hs);
            }
        }
        buf.extend_from_slice(&stream[68..]);
        assert_eq!(decode(&mut buf, MAX), Ok(Some(Message::Interested)));
    }

    #[test]
    fn handshake_malformed() {
        let good = Handshake::new([1; 20], [2; 20]).encode();
        let mut bad_len = good;
        bad_len[0] = 18;
        assert_eq!(Handshake::decode(&bad_len), Err(WireError::BadPstrlen(18)));
        // detected from the first byte alone when streaming
        let mut one = BytesMut::from(&bad_len[..1]);
        assert_eq!(decode_handshake(&mut one), Err(WireError::BadPstrlen(18)));
        assert_eq!(one.len(), 1);

        let mut bad_proto = good;
        bad_proto[1] = b'b';
        assert_eq!(Handshake::decode(&bad_proto), Err(WireError::BadProtocol));
        let mut part = BytesMut::from(&bad_proto[..3]);
        assert_eq!(decode_handshake(&mut part), Err(WireError::BadProtocol));
        let mut last = good;
        last[19] = b'X';
        assert_eq!(Handshake::decode(&last), Err(WireError::BadProtocol));

        assert_eq!(
            Handshake::decode(&good[..67]),
            Err(WireError::HandshakeTooShort { need: 68, got: 67 })
        );
        assert_eq!(
            Handshake::decode(&[]),
            Err(WireError::HandshakeTooShort { need: 68, got: 0 })
        );
        let mut empty = BytesMut::new();
        assert_eq!(decode_handshake(&mut empty), Ok(None));
        // a plain HTTP request is not a handshake
        assert_eq!(
            Handshake::decode(b"GET / HTTP/1.1\r\n"),
            Err(WireError::BadPstrlen(b'G'))
        );
    }

    fn ext_hs_full() -> ExtendedHandshake {
        let mut m = BTreeMap::new();
        m.insert("ut_metadata".to_string(), 3);
        m.insert("ut_pex".to_string(), 1);
        ExtendedHandshake {
            m,
            v: Some("shoal 0.1".into()),
            p: Some(6881),
            reqq: Some(500),
            yourip: Some(vec![127, 0, 0, 1]),
            metadata_size: Some(31_235),
        }
    }

    #[test]
    fn extended_handshake_encoding_is_sorted_and_exact() {
        let bytes = ext_hs_full().encode();
        let expected: &[u8] = b"d1:md11:ut_metadatai3e6:ut_pexi1ee13:metadata_sizei31235e\
1:pi6881e4:reqqi500e1:v9:shoal 0.16:yourip4:\x7f\x00\x00\x01e";
        assert_eq!(bytes, expected);
        assert_eq!(ExtendedHandshake::decode(&bytes), Ok(ext_hs_full()));
        let empty = ExtendedHandshake::default();
        assert_eq!(empty.encode(), b"d1:mdee");
        assert_eq!(ExtendedHandshake::decode(b"d1:mdee"), Ok(empty.clone()));
        assert_eq!(ExtendedHandshake::decode(b"de"), Ok(empty));
    }

    #[test]
    fn extended_handshake_not_a_dict() {
        for bad in [
            &b""[..],
            b"i3e",
            b"4:spam",
            b"li1ee",
            b"e",
            b"d",
            b"d1:m",
            b"d1:mi3e",
            b"di3ei4ee",
            b"\xff\xfe",
            b"d1:m4:sp",
            b"d1:m99999999999999999999999:x",
        ] {
            assert!(
                matches!(
                    ExtendedHandshake::decode(bad),
                    Err(WireError::BadExtendedHandshake(_))
                ),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn extended_handshake_deep_nesting_rejected_not_overflowed() {
        let mut deep = b"d1:x".to_vec();
        deep.extend(std::iter::repeat_n(b'l', 100_000));
        deep.extend(std::iter::repeat_n(b'e', 100_000));
        deep.push(b'e');
        assert!(matches!(
            ExtendedHandshake::decode(&deep),
            Err(WireError::BadExtendedHandshake(_))
        ));
        // modest nesting in an unknown key is fine
        let ok = b"d1:xlllleeee1:pi1ee";
        assert_eq!(ExtendedHandshake::decode(ok).unwrap().p, Some(1));
    }

    #[test]
    fn extended_handshake_garbage_fields_ignored() {
        let payload: &[u8] = b"d\
1:md11:ut_metadatai3e6:ut_pex3:abc4:big!i256e4:negii-1e2:\xff\xfei2e7:disablei0ee\
13:metadata_size3:abc\
1:pi70000e\
4:reqqi-5e\
1:vi5e\
6:yourip2:ab\
7:unknownld1:ai1eee\
e";
        let hs = ExtendedHandshake::decode(payload).unwrap();
        let mut m = BTreeMap::new();
        m.insert("ut_metadata".to_string(), 3);
        m.insert("disable".to_string(), 0);
        assert_eq!(hs.m, m);
        assert_eq!(hs.metadata_size, None);
        assert_eq!(hs.p, None);
        assert_eq!(hs.reqq, None);
        assert_eq!(hs.v, None);
        assert_eq!(hs.yourip, Some(b"ab".to_vec()));

        // wrongly typed m, huge reqq clamped, negative metadata_size, non-UTF-8 v
        let hs = ExtendedHandshake::decode(
            b"d1:mli1ee13:metadata_sizei-1e1:pi-1e4:reqqi99999999999e1:v2:\xc3\x28e",
        )
        .unwrap();
        assert!(hs.m.is_empty());
        assert_eq!(hs.metadata_size, None);
        assert_eq!(hs.p, None);
        assert_eq!(hs.reqq, Some(u32::MAX));
        assert_eq!(hs.v.as_deref(), Some("\u{fffd}("));

        // trailing bytes after the dictionary are ignored
        assert_eq!(
            ExtendedHandshake::decode(b"d1:pi1eeTRAILING").unwrap().p,
            Some(1)
        );
    }

    fn arb_block() -> impl Strategy<Value = BlockRef> {
        (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(i, b, l)| block(i, b, l))
    }

    fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            Just(Message::KeepAlive),
            Just(Message::Choke),
            Just(Message::Unchoke),
            Just(Message::Interested),
            Just(Message::NotInterested),
            any::<u32>().prop_map(Message::Have),
            arb_bytes(64).prop_map(Message::Bitfield),
            arb_block().prop_map(Message::Request),
            (any::<u32>(), any::<u32>(), arb_bytes(300))
                .prop_map(|(index, begin, data)| Message::Piece { index, begin, data }),
            arb_block().prop_map(Message::Cancel),
            any::<u16>().prop_map(Message::Port),
            any::<u32>().prop_map(Message::Suggest),
            Just(Message::HaveAll),
            Just(Message::HaveNone),
            arb_block().prop_map(Message::Reject),
            any::<u32>().prop_map(Message::AllowedFast),
            (any::<u8>(), arb_bytes(64))
                .prop_map(|(id, payload)| Message::Extended { id, payload }),
            arb_hash_req().prop_map(Message::HashRequest),
            arb_hash_req().prop_map(Message::HashReject),
            (arb_hash_req(), 0usize..6).prop_map(|(req, n)| Message::Hashes {
                req,
                hashes: Bytes::from(vec![n as u8; n * 32]),
            }),
        ]
    }

    fn arb_hash_req() -> impl Strategy<Value = HashRequest> {
        (any::<[u8; 32]>(), any::<[u32; 4]>()).prop_map(|(root, [base, index, length, p])| {
            HashRequest {
                root,
                base,
                index,
                length,
                proof_layers: p,
            }
        })
    }

    /// Frames with plausible headers (small lengths, mostly known ids) so the
    /// fuzzing reaches the body-parsing paths, mixed with raw noise.
    fn arb_wire_bytes() -> impl Strategy<Value = Vec<u8>> {
        let frame = (
            prop_oneof![0u32..40, 40u32..120],
            prop_oneof![0u8..=23, any::<u8>()],
            proptest::collection::vec(any::<u8>(), 0..120),
        )
            .prop_map(|(len, id, mut body)| {
                let mut v = len.to_be_bytes().to_vec();
                v.push(id);
                v.append(&mut body);
                v
            });
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            proptest::collection::vec(frame, 0..8).prop_map(|f| f.concat()),
        ]
    }

    proptest! {
        #[test]
        fn prop_round_trip(msgs in proptest::collection::vec(arb_message(), 0..8),
                           chunk in 1usize..64) {
            let mut wire = BytesMut::new();
            for m in &msgs {
                encode(m, &mut wire);
            }
            let expected_len: usize = msgs.iter().map(Message::encoded_len).sum();
            prop_assert_eq!(wire.len(), expected_len);
            // whole buffer at once
            prop_assert_eq!(&dec_all(&wire, MAX).unwrap(), &msgs);
            // fed in chunks, as from a socket
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(m) = decode(&mut buf, MAX).unwrap() {
                    got.push(m);
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(got, msgs);
        }

        #[test]
        fn prop_decode_never_panics_and_progresses(bytes in arb_wire_bytes(), max in 0u32..64) {
            let mut buf = BytesMut::from(&bytes[..]);
            loop {
                let before = buf.clone();
                match decode(&mut buf, max) {
                    Ok(Some(_)) => prop_assert!(buf.len() < before.len()),
                    Ok(None) => {
                        prop_assert_eq!(&buf, &before);
                        break;
                    }
                    Err(_) => {
                        prop_assert_eq!(&buf, &before);
                        break;
                    }
                }
            }
        }

        #[test]
        fn prop_ext_handshake_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = ExtendedHandshake::decode(&bytes);
            let mut dict = b"d".to_vec();
            dict.extend(&bytes);
            let _ = ExtendedHandshake::decode(&dict);
        }

        #[test]
        fn prop_ext_handshake_round_trip(
            m in proptest::collection::btree_map("[a-z_]{1,12}", any::<u8>(), 0..5),
            v in proptest::option::of(".{0,20}"),
            p in proptest::option::of(any::<u16>()),
            reqq in proptest::option::of(any::<u32>()),
            yourip in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..17)),
            metadata_size in proptest::option::of(0..=i64::MAX as u64),
        ) {
            let hs = ExtendedHandshake { m, v, p, reqq, yourip, metadata_size };
            prop_assert_eq!(ExtendedHandshake::decode(&hs.encode()), Ok(hs));
        }

        #[test]
        fn prop_handshake_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = Handshake::decode(&bytes);
            let mut buf = BytesMut::from(&bytes[..]);
            let before = buf.clone();
            match decode_handshake(&mut buf) {
                Ok(Some(_)) => prop_assert_eq!(buf.len(), before.len() - 68),
                _ => prop_assert_eq!(&buf, &before),
            }
        }
    }
}
