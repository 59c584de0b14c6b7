//! A fixed-length set of piece indices, stored in the wire's byte order
//! (piece 0 is the high bit of byte 0) so it can be sent without conversion.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BitfieldError {
    #[error("bitfield is {got} bytes, expected {expected} for {pieces} pieces")]
    WrongLength {
        got: usize,
        expected: usize,
        pieces: usize,
    },
    #[error("bitfield has spare bits set past piece {pieces}")]
    SpareBits { pieces: usize },
}

#[derive(Clone, PartialEq, Eq)]
pub struct Bitfield {
    bytes: Vec<u8>,
    len: usize,
    ones: usize,
}

impl std::fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bitfield({}/{})", self.ones, self.len)
    }
}

impl Bitfield {
    pub fn new(len: usize) -> Self {
        Bitfield {
            bytes: vec![0; len.div_ceil(8)],
            len,
            ones: 0,
        }
    }

    pub fn full(len: usize) -> Self {
        let mut b = Bitfield::new(len);
        b.set_all();
        b
    }

    /// Parses a peer's bitfield message, refusing a wrong length or set spare
    /// bits (BEP 3 says a peer sending either should be dropped).
    pub fn from_wire(bytes: &[u8], len: usize) -> Result<Self, BitfieldError> {
        let expected = len.div_ceil(8);
        if bytes.len() != expected {
            return Err(BitfieldError::WrongLength {
                got: bytes.len(),
                expected,
                pieces: len,
            });
        }
        let spare = expected * 8 - len;
        if spare > 0 {
            let mask = (1u8 << spare) - 1;
            if bytes[expected - 1] & mask != 0 {
                return Err(BitfieldError::SpareBits { pieces: len });
            }
        }
        let ones = bytes.iter().map(|b| b.count_ones() as usize).sum();
        Ok(Bitfield {
            bytes: bytes.to_vec(),
            len,
            ones,
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn count_ones(&self) -> usize {
        self.ones
    }

    pub fn is_full(&self) -> bool {
        self.ones == self.len
    }

    pub fn none(&self) -> bool {
        self.ones == 0
    }

    /// Out-of-range indices read as absent rather than panicking, since
    /// indices often come from the network.
    pub fn get(&self, i: usize) -> bool {
        i < self.len && self.bytes[i / 8] & (0x80 >> (i % 8)) != 0
    }

    /// Returns true when the bit changed. Out-of-range indices are ignored.
    pub fn set(&mut self, i: usize) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.bytes[i / 8] |= 0x80 >> (i % 8);
        self.ones += 1;
        true
    }

    /// Returns true when the bit changed.
    pub fn clear(&mut self, i: usize) -> bool {
        if !self.get(i) {
            return false;
        }
        self.bytes[i / 8] &= !(0x80 >> (i % 8));
        self.ones -= 1;
        true
    }

    pub fn set_all(&mut self) {
        for b in &mut self.bytes {
            *b = 0xff;
        }
        let spare = self.bytes.len() * 8 - self.len;
        if spare > 0 {
            if let Some(last) = self.bytes.last_mut() {
                *last &= !((1u8 << spare) - 1);
            }
        }
        self.ones = self.len;
    }

    pub fn iter_ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b != 0)
            .flat_map(|(i, b)| {
                (0..8)
                    .filter(move |bit| b & (0x80 >> bit) != 0)
                    .map(move |bit| i * 8 + bit)
            })
    }

    /// True when `other` has at least one piece this set lacks.
    pub fn lacks_any_of(&self, other: &Bitfield) -> bool {
        self.bytes
            .iter()
            .zip(&other.bytes)
            .any(|(mine, theirs)| theirs & !mine != 0)
    }
}

/// Our own "have" set, shared read-mostly between the torrent (the only
/// writer) and the peer tasks that check it before serving a request.
pub struct AtomicBitfield {
    words: Vec<std::sync::atomic::AtomicU64>,
    len: usize,
}

impl AtomicBitfield {
    pub fn from_bitfield(b: &Bitfield) -> Self {
        let words = (0..b.len().div_ceil(64))
            .map(|_| std::sync::atomic::AtomicU64::new(0))
            .collect();
        let a = AtomicBitfield {
            words,
            len: b.len(),
        };
        for i in b.iter_ones() {
            a.set(i);
        }
        a
    }

    pub fn get(&self, i: usize) -> bool {
        i < self.len
            && self.words[i / 64].load(std::sync::atomic::Ordering::Acquire) & (1 << (i % 64)) != 0
    }

    pub fn set(&self, i: usize) {
        if i < self.len {
            self.words[i / 64].fetch_or(1 << (i % 64), std::sync::atomic::Ordering::Release);
        }
    }

    /// Clears bit `i`; true if it was set (so only one caller acts on it).
    pub fn clear(&self, i: usize) -> bool {
        if i >= self.len {
            return false;
        }
        let bit = 1 << (i % 64);
        self.words[i / 64].fetch_and(!bit, std::sync::atomic::Ordering::AcqRel) & bit != 0
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn snapshot(&self) -> Bitfield {
        let mut b = Bitfield::new(self.len);
        for i in 0..self.len {
            if self.get(i) {
                b.set(i);
            }
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_order_and_counts() {
        let mut b = Bitfield::new(10);
        assert!(b.set(0));
        assert!(!b.set(0));
        assert!(b.set(9));
        assert!(!b.set(10));
        assert_eq!(b.as_bytes(), &[0x80, 0x40]);
        assert_eq!(b.count_ones(), 2);
        assert_eq!(b.iter_ones().collect::<Vec<_>>(), vec![0, 9]);
        assert!(b.clear(0));
        assert!(!b.get(0));
        assert!(!b.get(1000));
    }

    #[test]
    fn from_wire_checks_length_and_spare_bits() {
        assert!(Bitfield::from_wire(&[0xff, 0xc0], 10).is_ok());
        assert_eq!(
            Bitfield::from_wire(&[0xff, 0xe0], 10),
            Err(BitfieldError::SpareBits { pieces: 10 })
        );
        assert!(matches!(
            Bitfield::from_wire(&[0xff], 10),
            Err(BitfieldError::WrongLength { .. })
        ));
        let full = Bitfield::from_wire(&[0xff, 0xc0], 10).unwrap();
        assert!(full.is_full());
        assert_eq!(full, Bitfield::full(10));
    }

    #[test]
    fn atomic_snapshot() {
        let mut b = Bitfield::new(130);
        b.set(0);
        b.set(129);
        let a = AtomicBitfield::from_bitfield(&b);
        assert!(a.get(129) && !a.get(1) && !a.get(500));
        a.set(64);
        b.set(64);
        assert_eq!(a.snapshot(), b);
    }

    #[test]
    fn lacks_any_of() {
        let mut a = Bitfield::new(9);
        let mut b = Bitfield::new(9);
        assert!(!a.lacks_any_of(&b));
        b.set(8);
        assert!(a.lacks_any_of(&b));
        a.set(8);
        assert!(!a.lacks_any_of(&b));
    }
}
