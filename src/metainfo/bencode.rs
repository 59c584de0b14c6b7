//! Bencode checks that serde_bencode does not give us: strict validation with a
//! nesting limit (hostile files must not blow the stack), and the exact byte
//! span of a top-level value, which the info-hash is computed over.
//!
//! Decoding into values is left to serde_bencode, after [`validate`] passed.

use std::ops::Range;

use serde_bencode::value::Value;
use thiserror::Error;

/// Deeper than any real torrent (a v1 file list is 5 levels).
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BencodeError {
    #[error("unexpected end of data at byte {0}")]
    Eof(usize),
    #[error("invalid byte {byte:#04x} at byte {at}")]
    Unexpected { byte: u8, at: usize },
    #[error("invalid integer at byte {0}")]
    BadInt(usize),
    #[error("invalid string length at byte {0}")]
    BadStrLen(usize),
    #[error("dictionary key is not a string at byte {0}")]
    NonStringKey(usize),
    #[error("nesting deeper than {MAX_DEPTH} levels at byte {0}")]
    TooDeep(usize),
    #[error("trailing garbage after the end of the data at byte {0}")]
    Trailing(usize),
    #[error("{0}")]
    Decode(String),
}

/// Checks that `buf` is exactly one well-formed bencoded value.
pub fn validate(buf: &[u8]) -> Result<(), BencodeError> {
    let end = skip(buf, 0, 0)?;
    // A trailing newline is common in hand-edited files and harmless.
    if buf[end..].iter().any(|b| !b.is_ascii_whitespace()) {
        return Err(BencodeError::Trailing(end));
    }
    Ok(())
}

/// Where the first value in `buf` ends (messages such as BEP 9's carry
/// raw bytes after a bencoded dictionary).
pub fn value_end(buf: &[u8]) -> Result<usize, BencodeError> {
    skip(buf, 0, 0)
}

/// Decodes `buf` after validating it, so malformed or hostile input gets a
/// precise error instead of whatever the serde layer makes of it.
pub fn decode(buf: &[u8]) -> Result<Value, BencodeError> {
    validate(buf)?;
    let end = buf.len()
        - buf
            .iter()
            .rev()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
    serde_bencode::from_bytes(&buf[..end]).map_err(|e| BencodeError::Decode(e.to_string()))
}

/// Byte range of the value stored under `key` in the top-level dictionary,
/// if `buf` is a dictionary holding it. `buf` must already be valid.
pub fn top_level_span(buf: &[u8], key: &[u8]) -> Result<Option<Range<usize>>, BencodeError> {
    if buf.first() != Some(&b'd') {
        return Ok(None);
    }
    let mut pos = 1;
    let mut found = None;
    while buf.get(pos).copied().ok_or(BencodeError::Eof(pos))? != b'e' {
        let (k, after_key) = read_str(buf, pos)?;
        let end = skip(buf, after_key, 1)?;
        if k == key {
            // A duplicated key: the last one wins, as in serde_bencode's map.
            found = Some(after_key..end);
        }
        pos = end;
    }
    Ok(found)
}

fn read_str(buf: &[u8], pos: usize) -> Result<(&[u8], usize), BencodeError> {
    let colon = buf[pos..]
        .iter()
        .position(|&b| b == b':')
        .map(|i| pos + i)
        .ok_or(BencodeError::Eof(buf.len()))?;
    let digits = &buf[pos..colon];
    if digits.is_empty()
        || digits.len() > 19
        || !digits.iter().all(u8::is_ascii_digit)
        || (digits.len() > 1 && digits[0] == b'0')
    {
        return Err(BencodeError::BadStrLen(pos));
    }
    let len: usize = std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(BencodeError::BadStrLen(pos))?;
    let start = colon + 1;
    let end = start
        .checked_add(len)
        .filter(|&e| e <= buf.len())
        .ok_or(BencodeError::Eof(buf.len()))?;
    Ok((&buf[start..end], end))
}

/// Returns the position just past the value starting at `pos`.
fn skip(buf: &[u8], pos: usize, depth: usize) -> Result<usize, BencodeError> {
    let b = *buf.get(pos).ok_or(BencodeError::Eof(pos))?;
    match b {
        b'i' => {
            let end = buf[pos + 1..]
                .iter()
                .position(|&b| b == b'e')
                .map(|i| pos + 1 + i)
                .ok_or(BencodeError::Eof(buf.len()))?;
            let digits = &buf[pos + 1..end];
            let body = digits.strip_prefix(b"-").unwrap_or(digits);
            let ok = !body.is_empty()
                && body.iter().all(u8::is_ascii_digit)
                && (body.len() == 1 || body[0] != b'0')
                && (digits[0] != b'-' || body != b"0")
                && std::str::from_utf8(digits)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .is_some();
            if !ok {
                return Err(BencodeError::BadInt(pos));
            }
            Ok(end + 1)
        }
        b'l' | b'd' => {
            if depth >= MAX_DEPTH {
                return Err(BencodeError::TooDeep(pos));
            }
            let mut p = pos + 1;
            loop {
                let c = *buf.get(p).ok_or(BencodeError::Eof(p))?;
                if c == b'e' {
                    return Ok(p + 1);
                }
                if b == b'd' {
                    if !c.is_ascii_digit() {
                        return Err(BencodeError::NonStringKey(p));
                    }
                    p = read_str(buf, p)?.1;
                }
                p = skip(buf, p, depth + 1)?;
            }
        }
        b'0'..=b'9' => Ok(read_str(buf, pos)?.1),
        _ => Err(BencodeError::Unexpected { byte: b, at: pos }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_well_formed() {
        for ok in [
            &b"i0e"[..],
            b"i-5e",
            b"i9223372036854775807e",
            b"0:",
            b"3:abc",
            b"le",
            b"de",
            b"l3:abci1ee",
            b"d1:b1:x1:a1:ye", // unsorted keys are tolerated
            b"d1:ai1e1:ai2ee", // duplicate keys too
            b"i1e\n",          // and a trailing newline
        ] {
            assert_eq!(validate(ok), Ok(()), "{:?}", String::from_utf8_lossy(ok));
        }
    }

    #[test]
    fn refuses_malformed() {
        use BencodeError::*;
        let cases: &[(&[u8], BencodeError)] = &[
            (b"", Eof(0)),
            (b"i-0e", BadInt(0)),
            (b"i03e", BadInt(0)),
            (b"ie", BadInt(0)),
            (b"i-e", BadInt(0)),
            (b"i1", Eof(2)),
            (b"i9223372036854775808e", BadInt(0)),
            (b"i1x2e", BadInt(0)),
            (b"03:abc", BadStrLen(0)),
            (b"4:abc", Eof(5)),
            (b"-1:a", Unexpected { byte: b'-', at: 0 }),
            (b"99999999999999999999:a", BadStrLen(0)),
            (b"l", Eof(1)),
            (b"di1ei2ee", NonStringKey(1)),
            (b"d1:ae", Unexpected { byte: b'e', at: 4 }),
            (b"i1ei2e", Trailing(3)),
            (b"i1e\nx", Trailing(3)),
            (b"x", Unexpected { byte: b'x', at: 0 }),
        ];
        for (input, err) in cases {
            assert_eq!(
                validate(input).as_ref(),
                Err(err),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn depth_limit() {
        let ok = format!("{}{}", "l".repeat(MAX_DEPTH), "e".repeat(MAX_DEPTH));
        assert_eq!(validate(ok.as_bytes()), Ok(()));
        let deep = format!("{}{}", "l".repeat(100_000), "e".repeat(100_000));
        assert_eq!(
            validate(deep.as_bytes()),
            Err(BencodeError::TooDeep(MAX_DEPTH))
        );
    }

    #[test]
    fn spans_are_exact_bytes() {
        let buf = b"d3:zzzi1e4:infod1:b1:x1:a1:ye1:ci2ee";
        validate(buf).unwrap();
        let span = top_level_span(buf, b"info").unwrap().unwrap();
        assert_eq!(&buf[span], b"d1:b1:x1:a1:ye");
        assert_eq!(top_level_span(buf, b"nope").unwrap(), None);
        assert_eq!(top_level_span(b"li1ee", b"info").unwrap(), None);
    }
}
