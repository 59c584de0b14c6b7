//! Message stream encryption (MSE, also called protocol encryption, PE):
//! a Diffie-Hellman key exchange that hides the BitTorrent handshake, after
//! which the two sides settle on plain text or RC4 for the rest of the
//! connection. Both ends are here: [`initiate`] for connections we dial,
//! [`accept`] for ones we take, and [`Stream`], the socket of a connection
//! whose bytes go through RC4 both ways when that was selected.
//!
//! What we offer and accept is the session's [`Policy`]. With `prefer`
//! (the default) we dial with MSE offering both methods and answer with
//! plain text when the peer offers it, RC4 when that is all it takes: the
//! handshake is hidden either way, the bulk of the data costs no cipher
//! unless the other side insists. Every byte read or written after an RC4
//! selection is transformed in place in the buffer it already sits in.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use num_bigint::BigUint;
use rand::{Rng, RngCore};
use sha1::{Digest, Sha1};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::transport::{Socket, SocketRead, SocketWrite};

/// The protocol's 768-bit Diffie-Hellman prime (generator 2).
const PRIME: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563";
/// Length of a public key or shared secret on the wire.
pub const KEY_LEN: usize = 96;
/// The longest padding the protocol allows (PadA, PadB, PadC, PadD).
pub const MAX_PAD: usize = 512;
/// `crypto_provide` / `crypto_select` bits.
pub const PLAINTEXT: u32 = 0x01;
pub const RC4_STREAM: u32 = 0x02;
/// Longest initial payload we take: a handshake, with room to spare.
const MAX_INITIAL_PAYLOAD: usize = 1024;

/// Which connections are encrypted (`--encryption`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Policy {
    /// Dial with MSE offering plain text and RC4, and retry a peer once in
    /// plain text when that fails; take plain and encrypted handshakes;
    /// select plain text when the peer offers it, RC4 when it insists.
    #[default]
    Prefer,
    /// MSE with RC4 only, both ways; plain-text handshakes are refused.
    Require,
    /// Never dial with MSE; an MSE handshake is answered selecting plain
    /// text, and a peer that offers only RC4 is refused.
    Plain,
}

impl Policy {
    pub const NAMES: [&'static str; 3] = ["prefer", "require", "plain"];

    pub fn name(self) -> &'static str {
        match self {
            Policy::Prefer => "prefer",
            Policy::Require => "require",
            Policy::Plain => "plain",
        }
    }

    /// The `crypto_provide` bits we dial with.
    pub fn provide(self) -> u32 {
        match self {
            Policy::Prefer => PLAINTEXT | RC4_STREAM,
            Policy::Require => RC4_STREAM,
            Policy::Plain => PLAINTEXT,
        }
    }

    /// What we answer a peer that provides `provide` with.
    pub fn select(self, provide: u32) -> Result<u32, MseError> {
        match self {
            Policy::Prefer | Policy::Plain if provide & PLAINTEXT != 0 => Ok(PLAINTEXT),
            Policy::Prefer | Policy::Require if provide & RC4_STREAM != 0 => Ok(RC4_STREAM),
            Policy::Plain => Err(MseError::NoPlaintext),
            _ => Err(MseError::NoRc4),
        }
    }
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Policy, String> {
        match s {
            "prefer" => Ok(Policy::Prefer),
            "require" => Ok(Policy::Require),
            "plain" => Ok(Policy::Plain),
            _ => Err(format!("expected one of {}", Policy::NAMES.join(", "))),
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Error)]
pub enum MseError {
    #[error("encrypted handshake: {0}")]
    Io(#[from] io::Error),
    #[error("encrypted handshake: public key out of range")]
    BadKey,
    #[error("encrypted handshake: no synchronisation marker")]
    NoSync,
    #[error("encrypted handshake: for another torrent")]
    OtherTorrent,
    #[error("encrypted handshake: bad verification constant")]
    BadVc,
    #[error("encrypted handshake: peer accepts only an encrypted stream")]
    NoPlaintext,
    #[error("encrypted handshake: peer does not offer an encrypted stream")]
    NoRc4,
    #[error("encrypted handshake: peer selected method {0:#x}, which we did not offer")]
    BadSelect(u32),
    #[error("encrypted handshake: {0} too long")]
    TooLong(&'static str),
}

fn prime() -> BigUint {
    BigUint::parse_bytes(PRIME.as_bytes(), 16).unwrap_or_default()
}

fn hash(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn to_key_bytes(n: &BigUint) -> [u8; KEY_LEN] {
    let b = n.to_bytes_be();
    let mut out = [0u8; KEY_LEN];
    let at = KEY_LEN.saturating_sub(b.len());
    out[at..].copy_from_slice(&b[b.len().saturating_sub(KEY_LEN)..]);
    out
}

/// One side's Diffie-Hellman key pair.
pub struct KeyPair {
    private: BigUint,
    pub public: [u8; KEY_LEN],
}

impl KeyPair {
    pub fn generate() -> KeyPair {
        let mut x = [0u8; 20];
        rand::thread_rng().fill_bytes(&mut x);
        let private = BigUint::from_bytes_be(&x);
        let public = to_key_bytes(&BigUint::from(2u32).modpow(&private, &prime()));
        KeyPair { private, public }
    }

    /// The shared secret with the other side's public key, or None for a
    /// key outside 2..p-2 (which would make the secret guessable).
    pub fn secret(&self, theirs: &[u8]) -> Option<[u8; KEY_LEN]> {
        let p = prime();
        let y = BigUint::from_bytes_be(theirs);
        if y < BigUint::from(2u32) || y > &p - 2u32 {
            return None;
        }
        Some(to_key_bytes(&y.modpow(&self.private, &p)))
    }
}

/// RC4, written out here because it is the whole cost of an encrypted
/// connection: one tight loop over the buffer, in place (the `rc4` crate
/// goes through a generic one-byte-block stream-cipher layer and is
/// checked against in the tests).
#[derive(Clone)]
pub struct Rc4 {
    s: [u8; 256],
    i: u8,
    j: u8,
}

impl Rc4 {
    pub fn new(key: &[u8]) -> Rc4 {
        let mut s = [0u8; 256];
        for (i, x) in s.iter_mut().enumerate() {
            *x = i as u8;
        }
        let mut j = 0u8;
        for i in 0..256 {
            j = j.wrapping_add(s[i]).wrapping_add(key[i % key.len()]);
            s.swap(i, j as usize);
        }
        Rc4 { s, i: 0, j: 0 }
    }

    /// XORs the next `data.len()` bytes of the key stream into `data`.
    #[inline]
    pub fn apply(&mut self, data: &mut [u8]) {
        let (mut i, mut j) = (self.i, self.j);
        let s = &mut self.s;
        for b in data {
            i = i.wrapping_add(1);
            let si = s[i as usize];
            j = j.wrapping_add(si);
            let sj = s[j as usize];
            s[i as usize] = sj;
            s[j as usize] = si;
            *b ^= s[si.wrapping_add(sj) as usize];
        }
        self.i = i;
        self.j = j;
    }
}

/// RC4 keyed for one direction, with the first 1024 bytes of its stream
/// dropped as the protocol requires.
pub fn cipher(label: &[u8], secret: &[u8], skey: &[u8; 20]) -> Rc4 {
    let mut c = Rc4::new(&hash(&[label, secret, skey]));
    c.apply(&mut [0u8; 1024]);
    c
}

/// The marker the initiator sends after its padding, and the masked
/// torrent identifier that follows it.
pub fn req1(secret: &[u8]) -> [u8; 20] {
    hash(&[b"req1", secret])
}

pub fn req23(secret: &[u8], skey: &[u8; 20]) -> [u8; 20] {
    let a = hash(&[b"req2", skey]);
    let b = hash(&[b"req3", secret]);
    std::array::from_fn(|i| a[i] ^ b[i])
}

fn padding() -> Vec<u8> {
    let mut rng = rand::thread_rng();
    let mut pad = vec![0u8; rng.gen_range(0..=MAX_PAD)];
    rng.fill_bytes(&mut pad);
    pad
}

/// The two ciphers of a connection that selected RC4.
pub struct Ciphers {
    /// Applied to what we send.
    pub send: Rc4,
    /// Applied to what we receive.
    pub recv: Rc4,
}

/// What [`accept`] settled.
pub struct Accepted {
    /// The peer's initial payload, decrypted: the start of its BitTorrent
    /// handshake (all of it, from every client we know).
    pub initial: Vec<u8>,
    pub info_hash: [u8; 20],
    /// Some when RC4 was selected: the rest of the stream goes through it.
    pub rc4: Option<Ciphers>,
}

/// Completes the handshake as the receiving side. `first` holds the bytes
/// already read (the start of the peer's public key: they did not spell
/// a plain handshake); `info_hashes` are the torrents it may name. Reads
/// are bounded (the longest padding the protocol allows, a small initial
/// payload); the caller puts a deadline around the whole.
pub async fn accept<S>(
    stream: &mut S,
    first: &[u8],
    info_hashes: &[[u8; 20]],
    policy: Policy,
) -> Result<Accepted, MseError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut ya = [0u8; KEY_LEN];
    let have = first.len().min(KEY_LEN);
    ya[..have].copy_from_slice(&first[..have]);
    stream.read_exact(&mut ya[have..]).await?;
    let keys = KeyPair::generate();
    let mut out = keys.public.to_vec();
    out.extend_from_slice(&padding());
    stream.write_all(&out).await?;
    let secret = keys.secret(&ya).ok_or(MseError::BadKey)?;

    // The initiator's padding ends where HASH('req1', S) appears. Read a
    // byte at a time past the minimum: anything after the marker must not
    // be consumed here.
    let marker = req1(&secret);
    let mut seen = vec![0u8; 20];
    stream.read_exact(&mut seen).await?;
    while seen[seen.len() - 20..] != marker {
        if seen.len() >= MAX_PAD + 20 {
            return Err(MseError::NoSync);
        }
        seen.push(stream.read_u8().await?);
    }
    let mut masked = [0u8; 20];
    stream.read_exact(&mut masked).await?;
    // The masked hash names the torrent among the session's.
    let info_hash = *info_hashes
        .iter()
        .find(|h| masked == req23(&secret, h))
        .ok_or(MseError::OtherTorrent)?;
    let mut recv = cipher(b"keyA", &secret, &info_hash);
    let mut send = cipher(b"keyB", &secret, &info_hash);

    let mut head = [0u8; 14];
    stream.read_exact(&mut head).await?;
    recv.apply(&mut head);
    if head[..8] != [0u8; 8] {
        return Err(MseError::BadVc);
    }
    let provide = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
    let pad_len = u16::from_be_bytes([head[12], head[13]]) as usize;
    if pad_len > MAX_PAD {
        return Err(MseError::TooLong("padding"));
    }
    let mut pad = vec![0u8; pad_len + 2];
    stream.read_exact(&mut pad).await?;
    recv.apply(&mut pad);
    let ia_len = u16::from_be_bytes([pad[pad_len], pad[pad_len + 1]]) as usize;
    if ia_len > MAX_INITIAL_PAYLOAD {
        return Err(MseError::TooLong("initial payload"));
    }
    let mut initial = vec![0u8; ia_len];
    stream.read_exact(&mut initial).await?;
    recv.apply(&mut initial);
    let select = policy.select(provide)?;

    // VC, crypto_select, no padding (PadB already hid the lengths).
    let mut reply = [0u8; 14];
    reply[8..12].copy_from_slice(&select.to_be_bytes());
    send.apply(&mut reply);
    stream.write_all(&reply).await?;
    Ok(Accepted {
        initial,
        info_hash,
        rc4: (select == RC4_STREAM).then_some(Ciphers { send, recv }),
    })
}

/// Runs the handshake as the dialling side for the torrent `info_hash`,
/// offering what `policy` allows, with `initial` (our BitTorrent
/// handshake) sent encrypted inside it. Returns the ciphers when the peer
/// selected RC4, None when it selected plain text; what follows on the
/// stream is the peer's BitTorrent handshake either way. Reads are bounded;
/// the caller puts a deadline around the whole.
pub async fn initiate<S>(
    stream: &mut S,
    info_hash: &[u8; 20],
    policy: Policy,
    initial: &[u8],
) -> Result<Option<Ciphers>, MseError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let provide = policy.provide();
    let keys = KeyPair::generate();
    let mut out = keys.public.to_vec();
    out.extend_from_slice(&padding());
    stream.write_all(&out).await?;
    let mut yb = [0u8; KEY_LEN];
    stream.read_exact(&mut yb).await?;
    let secret = keys.secret(&yb).ok_or(MseError::BadKey)?;

    let mut send = cipher(b"keyA", &secret, info_hash);
    let mut msg = req1(&secret).to_vec();
    msg.extend_from_slice(&req23(&secret, info_hash));
    let at = msg.len();
    msg.extend_from_slice(&[0u8; 8]); // VC
    msg.extend_from_slice(&provide.to_be_bytes());
    msg.extend_from_slice(&0u16.to_be_bytes()); // no PadC
    msg.extend_from_slice(&(initial.len() as u16).to_be_bytes());
    msg.extend_from_slice(initial);
    send.apply(&mut msg[at..]);
    stream.write_all(&msg).await?;

    // The receiver's padding (PadB) ends where its encrypted VC appears:
    // eight bytes we can compute. Read a byte at a time so nothing past
    // the handshake is consumed.
    let mut recv = cipher(b"keyB", &secret, info_hash);
    let mut vc = [0u8; 8];
    recv.apply(&mut vc);
    let mut window = [0u8; 8];
    stream.read_exact(&mut window).await?;
    let mut read = 8;
    while window != vc {
        if read >= MAX_PAD + 8 {
            return Err(MseError::NoSync);
        }
        window.copy_within(1.., 0);
        window[7] = stream.read_u8().await?;
        read += 1;
    }
    let mut head = [0u8; 6];
    stream.read_exact(&mut head).await?;
    recv.apply(&mut head);
    let select = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if (select != PLAINTEXT && select != RC4_STREAM) || select & provide == 0 {
        return Err(MseError::BadSelect(select));
    }
    let pad_len = u16::from_be_bytes([head[4], head[5]]) as usize;
    if pad_len > MAX_PAD {
        return Err(MseError::TooLong("padding"));
    }
    let mut pad = vec![0u8; pad_len];
    stream.read_exact(&mut pad).await?;
    recv.apply(&mut pad);
    Ok((select == RC4_STREAM).then_some(Ciphers { send, recv }))
}

/// A peer connection's socket once the handshake settled: plain, or RC4
/// both ways. Reads are decrypted in place in the caller's buffer as they
/// arrive; a plain stream costs one branch per read.
pub struct Stream<S = Socket> {
    io: S,
    rc4: Option<Box<Ciphers>>,
}

impl<S> Stream<S> {
    pub fn new(io: S, rc4: Option<Ciphers>) -> Stream<S> {
        Stream {
            io,
            rc4: rc4.map(Box::new),
        }
    }

    pub fn plain(io: S) -> Stream<S> {
        Stream { io, rc4: None }
    }

    /// Whether the stream runs through RC4.
    pub fn is_encrypted(&self) -> bool {
        self.rc4.is_some()
    }

    pub fn get_ref(&self) -> &S {
        &self.io
    }
}

impl<S: AsyncWrite + Unpin> Stream<S> {
    /// Writes all of `data`; an encrypted stream encrypts a copy (this is
    /// for handshakes and small messages; the peer task's bulk writes go
    /// through [`WriteHalf`], in place).
    pub async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        match &mut self.rc4 {
            None => self.io.write_all(data).await,
            Some(c) => {
                let mut copy = data.to_vec();
                c.send.apply(&mut copy);
                self.io.write_all(&copy).await
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        read_through(
            &mut this.io,
            this.rc4.as_mut().map(|c| &mut c.recv),
            cx,
            buf,
        )
    }
}

/// Reads into `buf` and decrypts just the bytes this read added.
fn read_through<R: AsyncRead + Unpin>(
    io: &mut R,
    rc4: Option<&mut Rc4>,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    let before = buf.filled().len();
    match Pin::new(io).poll_read(cx, buf) {
        Poll::Ready(Ok(())) => {
            if let Some(c) = rc4 {
                c.apply(&mut buf.filled_mut()[before..]);
            }
            Poll::Ready(Ok(()))
        }
        other => other,
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for Stream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("io", &self.io)
            .field("encrypted", &self.is_encrypted())
            .finish()
    }
}

impl Stream<Socket> {
    /// Splits the socket for a reader and a writer task, each with its
    /// direction's cipher.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        let (r, w) = self.io.into_split();
        let (recv, send) = match self.rc4 {
            Some(c) => {
                let Ciphers { send, recv } = *c;
                (Some(Box::new(recv)), Some(Box::new(send)))
            }
            None => (None, None),
        };
        (
            ReadHalf { io: r, rc4: recv },
            WriteHalf { io: w, rc4: send },
        )
    }
}

/// The reading half of a [`Stream`].
pub struct ReadHalf {
    io: SocketRead,
    rc4: Option<Box<Rc4>>,
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        read_through(&mut this.io, this.rc4.as_deref_mut(), cx, buf)
    }
}

/// The writing half of a [`Stream`]. It takes buffers it may change:
/// an encrypted stream encrypts them in place before writing.
pub struct WriteHalf {
    io: SocketWrite,
    rc4: Option<Box<Rc4>>,
}

impl WriteHalf {
    /// Writes a chunk. Encrypted, a chunk nobody else holds is encrypted
    /// where it is; a shared one is copied first.
    pub async fn write_bytes(&mut self, chunk: Bytes) -> io::Result<()> {
        match &mut self.rc4 {
            None => self.io.write_all(&chunk).await,
            Some(c) => {
                let mut owned = BytesMut::from(chunk);
                c.apply(&mut owned);
                self.io.write_all(&owned).await
            }
        }
    }

    /// Writes `buf`, encrypting it in place first when the stream is
    /// encrypted (its contents are then ciphertext).
    pub async fn write_buf(&mut self, buf: &mut BytesMut) -> io::Result<()> {
        if let Some(c) = &mut self.rc4 {
            c.apply(buf);
        }
        self.io.write_all(buf).await
    }

    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.io.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;

    const HASH: [u8; 20] = [9u8; 20];

    fn pair() -> (DuplexStream, DuplexStream) {
        tokio::io::duplex(1 << 16)
    }

    /// A responder that follows the protocol up to its reply, which says
    /// `select` with `pad_len` bytes of PadD: for initiators facing
    /// peers that answer oddly.
    async fn odd_responder(mut s: DuplexStream, select: u32, pad_len: u16) -> DuplexStream {
        let mut ya = [0u8; KEY_LEN];
        s.read_exact(&mut ya).await.unwrap();
        let keys = KeyPair::generate();
        s.write_all(&keys.public).await.unwrap();
        let secret = keys.secret(&ya).unwrap();
        let marker = req1(&secret);
        let mut seen = Vec::new();
        while seen.len() < 20 || seen[seen.len() - 20..] != marker {
            seen.push(s.read_u8().await.unwrap());
        }
        let mut rest = [0u8; 20 + 14 + 2];
        s.read_exact(&mut rest).await.unwrap();
        let mut recv = cipher(b"keyA", &secret, &HASH);
        recv.apply(&mut rest[20..]);
        let ia_len = u16::from_be_bytes([rest[34], rest[35]]) as usize;
        let mut ia = vec![0u8; ia_len];
        s.read_exact(&mut ia).await.unwrap();
        let mut reply = vec![0u8; 8];
        reply.extend_from_slice(&select.to_be_bytes());
        reply.extend_from_slice(&pad_len.to_be_bytes());
        reply.extend(std::iter::repeat_n(0, pad_len as usize));
        cipher(b"keyB", &secret, &HASH).apply(&mut reply);
        s.write_all(&reply).await.unwrap();
        s
    }

    /// An initiator that sends `vc`, `provide`, `pad_len` bytes of PadC and
    /// `ia_len` as given (the payload itself stays short).
    async fn odd_initiator(
        s: &mut DuplexStream,
        vc: [u8; 8],
        provide: u32,
        pad_len: u16,
        ia_len: u16,
    ) {
        let keys = KeyPair::generate();
        s.write_all(&keys.public).await.unwrap();
        let mut yb = [0u8; KEY_LEN];
        s.read_exact(&mut yb).await.unwrap();
        let secret = keys.secret(&yb).unwrap();
        let mut msg = req1(&secret).to_vec();
        msg.extend_from_slice(&req23(&secret, &HASH));
        let mut enc = vc.to_vec();
        enc.extend_from_slice(&provide.to_be_bytes());
        enc.extend_from_slice(&pad_len.to_be_bytes());
        enc.extend(std::iter::repeat_n(0, (pad_len as usize).min(600)));
        enc.extend_from_slice(&ia_len.to_be_bytes());
        enc.extend_from_slice(&[1u8; 16]);
        cipher(b"keyA", &secret, &HASH).apply(&mut enc);
        msg.extend_from_slice(&enc);
        let _ = s.write_all(&msg).await;
    }

    /// Answers on `b`; on failure `b` is dropped (closed), as a real
    /// responder does, so the initiator sees the end.
    async fn accept_on(
        mut b: DuplexStream,
        policy: Policy,
    ) -> Result<(Accepted, DuplexStream), (MseError, Vec<u8>)> {
        let mut first = [0u8; 20];
        b.read_exact(&mut first).await.unwrap();
        match accept(&mut b, &first, &[[1u8; 20], HASH], policy).await {
            Ok(a) => Ok((a, b)),
            Err(e) => {
                // What the peer sent that we never read.
                let mut left = Vec::new();
                let _ = tokio::time::timeout(
                    std::time::Duration::from_millis(200),
                    b.read_to_end(&mut left),
                )
                .await;
                Err((e, left))
            }
        }
    }

    #[test]
    fn both_sides_derive_the_same_secret() {
        let (a, b) = (KeyPair::generate(), KeyPair::generate());
        assert_eq!(a.secret(&b.public), b.secret(&a.public));
        assert!(a.secret(&[0u8; KEY_LEN]).is_none());
        assert!(a.secret(&to_key_bytes(&(prime() - 1u32))).is_none());
    }

    #[test]
    fn rc4_matches_the_reference_implementation() {
        use rc4::{KeyInit, StreamCipher};
        for key in [[0x01u8; 20], *b"a twenty-byte key!!!"] {
            let mut ours = Rc4::new(&key);
            let mut theirs = rc4::Rc4::<rc4::consts::U20>::new(&key.into());
            let (mut a, mut b) = (vec![0x5au8; 5000], vec![0x5au8; 5000]);
            // In uneven pieces, as reads arrive.
            for chunk in a.chunks_mut(777) {
                ours.apply(chunk);
            }
            theirs.apply_keystream(&mut b);
            assert_eq!(a, b);
        }
        // RFC 6229, 40-bit key 0x0102030405: the first key stream bytes.
        let mut z = [0u8; 8];
        Rc4::new(&[1, 2, 3, 4, 5]).apply(&mut z);
        assert_eq!(z, [0xb2, 0x39, 0x63, 0x05, 0xf0, 0x3d, 0xc0, 0x27]);
    }

    #[test]
    fn policies_choose_as_documented() {
        use Policy::*;
        let both = PLAINTEXT | RC4_STREAM;
        assert_eq!(Prefer.select(both).unwrap(), PLAINTEXT);
        assert_eq!(Prefer.select(RC4_STREAM).unwrap(), RC4_STREAM);
        assert_eq!(Require.select(both).unwrap(), RC4_STREAM);
        assert!(matches!(Require.select(PLAINTEXT), Err(MseError::NoRc4)));
        assert_eq!(Plain.select(both).unwrap(), PLAINTEXT);
        assert!(matches!(
            Plain.select(RC4_STREAM),
            Err(MseError::NoPlaintext)
        ));
        assert!(Prefer.select(0).is_err());
        for p in [Prefer, Require, Plain] {
            assert_eq!(p.name().parse::<Policy>().unwrap(), p);
        }
    }

    /// Every pair of policies: the method both ends agree on (or the
    /// refusal), then a conversation through [`Stream`] both ways.
    #[tokio::test]
    async fn each_pair_of_policies_agrees_and_talks() {
        use Policy::*;
        for (ours, theirs, want) in [
            (Prefer, Prefer, Some(false)),
            (Prefer, Require, Some(true)),
            (Prefer, Plain, Some(false)),
            (Require, Prefer, Some(true)),
            (Require, Require, Some(true)),
            (Require, Plain, None),
            (Plain, Require, None),
        ] {
            let (mut a, b) = pair();
            let server = tokio::spawn(accept_on(b, theirs));
            let dialled = initiate(&mut a, &HASH, ours, b"handshake!").await;
            let accepted = server.await.unwrap();
            let Some(rc4) = want else {
                assert!(accepted.is_err(), "{ours}/{theirs}");
                assert!(dialled.is_err(), "{ours}/{theirs}");
                continue;
            };
            let (accepted, b) = accepted.ok().unwrap();
            let dialled = dialled.unwrap();
            assert_eq!(accepted.initial, b"handshake!");
            assert_eq!(accepted.info_hash, HASH);
            assert_eq!(accepted.rc4.is_some(), rc4, "{ours}/{theirs}");
            assert_eq!(dialled.is_some(), rc4, "{ours}/{theirs}");
            let mut a = Stream::new(a, dialled);
            let mut b = Stream::new(b, accepted.rc4);
            let big: Vec<u8> = (0..50_000u32).map(|i| (i * 7) as u8).collect();
            a.send(&big).await.unwrap();
            let mut got = vec![0u8; big.len()];
            b.read_exact(&mut got).await.unwrap();
            assert!(got == big, "{ours}/{theirs}: payload differs");
            b.send(b"and back").await.unwrap();
            let mut back = [0u8; 8];
            a.read_exact(&mut back).await.unwrap();
            assert_eq!(&back, b"and back");
        }
    }

    #[tokio::test]
    async fn refused_for_another_torrent() {
        let (mut a, b) = pair();
        let server = tokio::spawn(accept_on(b, Policy::Prefer));
        let _ = initiate(&mut a, &[3u8; 20], Policy::Prefer, b"").await;
        let err = server.await.unwrap().err().unwrap().0;
        assert!(matches!(err, MseError::OtherTorrent), "{err}");
    }

    /// Junk instead of a key exchange never finds the marker, and stops
    /// after the longest padding the protocol allows: it reads no more.
    #[tokio::test]
    async fn junk_finds_no_marker_and_reads_a_bounded_amount() {
        let (mut a, b) = pair();
        let server = tokio::spawn(accept_on(b, Policy::Prefer));
        a.write_all(&[0x42; 5000]).await.unwrap();
        let (err, left) = server.await.unwrap().err().unwrap();
        assert!(matches!(err, MseError::NoSync | MseError::BadKey), "{err}");
        assert!(
            5000 - left.len() <= KEY_LEN + MAX_PAD + 20,
            "{}",
            left.len()
        );
    }

    #[tokio::test]
    async fn a_wrong_verification_constant_is_refused() {
        let (mut a, b) = pair();
        let server = tokio::spawn(accept_on(b, Policy::Prefer));
        odd_initiator(&mut a, [1, 0, 0, 0, 0, 0, 0, 0], 3, 0, 4).await;
        let err = server.await.unwrap().err().unwrap().0;
        assert!(matches!(err, MseError::BadVc), "{err}");
    }

    #[tokio::test]
    async fn over_long_padding_or_payload_is_refused_before_reading_it() {
        for (pad, ia, want) in [(513u16, 4u16, "padding"), (0, 60_000, "initial payload")] {
            let (mut a, b) = pair();
            let server = tokio::spawn(accept_on(b, Policy::Prefer));
            odd_initiator(&mut a, [0; 8], 3, pad, ia).await;
            let err = server.await.unwrap().err().unwrap().0;
            assert!(matches!(err, MseError::TooLong(w) if w == want), "{err}");
        }
    }

    #[tokio::test]
    async fn a_method_we_did_not_offer_is_refused() {
        for (policy, select) in [
            (Policy::Require, PLAINTEXT),
            (Policy::Plain, RC4_STREAM),
            (Policy::Prefer, PLAINTEXT | RC4_STREAM),
            (Policy::Prefer, 0x08),
        ] {
            let (mut a, b) = pair();
            let peer = tokio::spawn(odd_responder(b, select, 0));
            let err = initiate(&mut a, &HASH, policy, b"hs").await.err().unwrap();
            assert!(
                matches!(err, MseError::BadSelect(s) if s == select),
                "{err}"
            );
            let _ = peer.await;
        }
    }

    #[tokio::test]
    async fn an_over_long_reply_padding_is_refused() {
        let (mut a, b) = pair();
        let peer = tokio::spawn(odd_responder(b, PLAINTEXT, 600));
        let err = initiate(&mut a, &HASH, Policy::Prefer, b"hs")
            .await
            .err()
            .unwrap();
        assert!(matches!(err, MseError::TooLong("padding")), "{err}");
        let _ = peer.await;
    }

    /// A responder that answers our key with junk: no VC within the
    /// longest padding, and a bounded read.
    #[tokio::test]
    async fn a_junk_answer_finds_no_verification_constant() {
        let (mut a, mut b) = pair();
        let peer = tokio::spawn(async move {
            let mut ya = [0u8; KEY_LEN];
            b.read_exact(&mut ya).await.unwrap();
            let _ = b.write_all(&KeyPair::generate().public).await;
            let _ = b.write_all(&[0x17; 4000]).await;
            b
        });
        let err = initiate(&mut a, &HASH, Policy::Prefer, b"hs")
            .await
            .err()
            .unwrap();
        assert!(matches!(err, MseError::NoSync), "{err}");
        let mut b = peer.await.unwrap();
        let _ = b.shutdown().await;
        // Our side read at most the key, the longest padding and a VC.
        let mut left = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            a.read_to_end(&mut left),
        )
        .await;
        assert!(4000 - left.len() <= MAX_PAD + 8, "{}", left.len());
    }

    /// A peer that stops mid-handshake leaves both sides waiting: the
    /// callers' deadlines (peer.rs) end them. Here: nothing completes, and
    /// nothing fails early either.
    #[tokio::test]
    async fn a_stalled_peer_never_completes_a_handshake() {
        let (mut a, b) = pair();
        let server = tokio::spawn(accept_on(b, Policy::Prefer));
        a.write_all(&KeyPair::generate().public[..60])
            .await
            .unwrap();
        let waited = tokio::time::timeout(std::time::Duration::from_millis(300), server).await;
        assert!(waited.is_err());
        let (mut c, _d) = pair();
        let waited = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            initiate(&mut c, &HASH, Policy::Require, b"hs"),
        )
        .await;
        assert!(waited.is_err());
    }
}
