//! Message stream encryption (MSE, also called protocol encryption), the
//! receiving side. aria2, Transmission and libtorrent open connections with
//! it by default and fall back to a plain handshake only after a refused
//! attempt (aria2 waits a second before retrying). We complete the key
//! exchange and settle on plain text for the rest of the stream, which
//! every client that offers it accepts; a peer that insists on RC4 for the
//! whole stream is refused.

use num_bigint::BigUint;
use rand::{Rng, RngCore};
use rc4::consts::U20;
use rc4::{KeyInit, Rc4, StreamCipher};
use sha1::{Digest, Sha1};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The protocol's 768-bit Diffie-Hellman prime (generator 2).
const PRIME: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563";
/// Length of a public key or shared secret on the wire.
pub const KEY_LEN: usize = 96;
const MAX_PAD: usize = 512;
/// `crypto_provide` / `crypto_select` bits.
pub const PLAINTEXT: u32 = 0x01;
pub const RC4_STREAM: u32 = 0x02;
/// Longest initial payload we take: a handshake, with room to spare.
const MAX_INITIAL_PAYLOAD: usize = 1024;

#[derive(Debug, Error)]
pub enum MseError {
    #[error("encrypted handshake: {0}")]
    Io(#[from] std::io::Error),
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

/// RC4 keyed for one direction, with the first 1024 bytes of its stream
/// dropped as the protocol requires.
pub fn cipher(label: &[u8], secret: &[u8], skey: &[u8; 20]) -> Rc4<U20> {
    let key = hash(&[label, secret, skey]);
    let mut c = Rc4::<U20>::new(&key.into());
    let mut discard = [0u8; 1024];
    c.apply_keystream(&mut discard);
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

/// Completes the handshake as the receiving side. `first` holds the bytes
/// already read (the start of the peer's public key: they did not spell
/// a plain handshake). Returns the peer's initial payload, decrypted: the
/// start of its BitTorrent handshake, which continues in plain text.
pub async fn accept<S>(
    stream: &mut S,
    first: &[u8],
    info_hashes: &[[u8; 20]],
) -> Result<(Vec<u8>, [u8; 20]), MseError>
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
    let mut decrypt = cipher(b"keyA", &secret, &info_hash);
    let mut encrypt = cipher(b"keyB", &secret, &info_hash);

    let mut head = [0u8; 14];
    stream.read_exact(&mut head).await?;
    decrypt.apply_keystream(&mut head);
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
    decrypt.apply_keystream(&mut pad);
    let ia_len = u16::from_be_bytes([pad[pad_len], pad[pad_len + 1]]) as usize;
    if ia_len > MAX_INITIAL_PAYLOAD {
        return Err(MseError::TooLong("initial payload"));
    }
    let mut ia = vec![0u8; ia_len];
    stream.read_exact(&mut ia).await?;
    decrypt.apply_keystream(&mut ia);
    if provide & PLAINTEXT == 0 {
        return Err(MseError::NoPlaintext);
    }

    // VC, crypto_select = plain text, no padding; plain text from here on.
    let mut reply = [0u8; 14];
    reply[8..12].copy_from_slice(&PLAINTEXT.to_be_bytes());
    encrypt.apply_keystream(&mut reply);
    stream.write_all(&reply).await?;
    Ok((ia, info_hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The initiating side, as aria2 and Transmission run it: returns the
    /// selected crypto method and what the receiver sent after it.
    async fn initiate<S: AsyncRead + AsyncWrite + Unpin>(
        s: &mut S,
        skey: &[u8; 20],
        provide: u32,
        ia: &[u8],
    ) -> Result<u32, MseError> {
        let keys = KeyPair::generate();
        let mut out = keys.public.to_vec();
        out.extend_from_slice(&padding());
        s.write_all(&out).await?;
        let mut yb = [0u8; KEY_LEN];
        s.read_exact(&mut yb).await?;
        let secret = keys.secret(&yb).ok_or(MseError::BadKey)?;
        let mut encrypt = cipher(b"keyA", &secret, skey);
        let mut msg = req1(&secret).to_vec();
        msg.extend_from_slice(&req23(&secret, skey));
        let pad_c = [7u8; 33];
        let mut enc = vec![0u8; 8];
        enc.extend_from_slice(&provide.to_be_bytes());
        enc.extend_from_slice(&(pad_c.len() as u16).to_be_bytes());
        enc.extend_from_slice(&pad_c);
        enc.extend_from_slice(&(ia.len() as u16).to_be_bytes());
        enc.extend_from_slice(ia);
        encrypt.apply_keystream(&mut enc);
        msg.extend_from_slice(&enc);
        s.write_all(&msg).await?;
        // The receiver's padding ends where the encrypted VC decrypts to zeros.
        let mut window = Vec::new();
        let mut decrypt = loop {
            window.push(s.read_u8().await?);
            if window.len() >= 8 {
                let mut probe = cipher(b"keyB", &secret, skey);
                let mut vc: [u8; 8] = window[window.len() - 8..].try_into().unwrap();
                probe.apply_keystream(&mut vc);
                if vc == [0; 8] {
                    break probe;
                }
            }
            if window.len() > MAX_PAD + 8 {
                return Err(MseError::NoSync);
            }
        };
        let mut rest = [0u8; 6];
        s.read_exact(&mut rest).await?;
        decrypt.apply_keystream(&mut rest);
        Ok(u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]))
    }

    async fn pair() -> (tokio::io::DuplexStream, tokio::io::DuplexStream) {
        tokio::io::duplex(1 << 16)
    }

    #[test]
    fn both_sides_derive_the_same_secret() {
        let (a, b) = (KeyPair::generate(), KeyPair::generate());
        assert_eq!(a.secret(&b.public), b.secret(&a.public));
        assert!(a.secret(&[0u8; KEY_LEN]).is_none());
        assert!(a.secret(&to_key_bytes(&(prime() - 1u32))).is_none());
    }

    #[tokio::test]
    async fn plain_text_is_selected_and_the_stream_continues_plain() {
        let (mut a, mut b) = pair().await;
        let skey = [9u8; 20];
        let server = tokio::spawn(async move {
            let mut first = [0u8; 20];
            b.read_exact(&mut first).await.unwrap();
            let (ia, _) = accept(&mut b, &first, &[[9u8; 20]]).await.unwrap();
            let mut after = [0u8; 5];
            b.read_exact(&mut after).await.unwrap();
            b.write_all(b"plain").await.unwrap();
            (ia, after)
        });
        let select = initiate(&mut a, &skey, PLAINTEXT | RC4_STREAM, b"handshake!")
            .await
            .unwrap();
        assert_eq!(select, PLAINTEXT);
        a.write_all(b"hello").await.unwrap();
        let mut back = [0u8; 5];
        a.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"plain");
        let (ia, after) = server.await.unwrap();
        assert_eq!(ia, b"handshake!");
        assert_eq!(&after, b"hello");
    }

    #[tokio::test]
    async fn refused_for_another_torrent_or_rc4_only() {
        for (skey, provide, want) in [
            ([1u8; 20], PLAINTEXT, "another torrent"),
            ([9u8; 20], RC4_STREAM, "only an encrypted stream"),
        ] {
            let (mut a, mut b) = pair().await;
            let server = tokio::spawn(async move {
                let mut first = [0u8; 20];
                b.read_exact(&mut first).await.unwrap();
                accept(&mut b, &first, &[[9u8; 20]]).await
            });
            let _ = initiate(&mut a, &skey, provide, b"").await;
            let err = server.await.unwrap().unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
    }

    /// Junk instead of a key exchange never finds the marker, and stops
    /// after the longest padding the protocol allows.
    #[tokio::test]
    async fn junk_finds_no_marker() {
        let (mut a, mut b) = pair().await;
        let server = tokio::spawn(async move {
            let mut first = [0u8; 20];
            b.read_exact(&mut first).await.unwrap();
            accept(&mut b, &first, &[[9u8; 20]]).await
        });
        a.write_all(&[0x42; 2000]).await.unwrap();
        let err = server.await.unwrap().unwrap_err();
        assert!(matches!(err, MseError::NoSync | MseError::BadKey), "{err}");
    }
}
