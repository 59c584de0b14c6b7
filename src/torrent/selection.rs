//! Which files of a torrent to download (`--only GLOB`, `--select 0,2-4`),
//! and which pieces that leaves out. Pure: no I/O.
//!
//! Files are numbered from 0, pad files left out, everywhere a number
//! names one: `download --list` and `--select`, `shoal info`, `shoal add
//! --only`, and the service's API (`index`, `only`, priorities).

use thiserror::Error;

use crate::bitfield::Bitfield;
use crate::metainfo::Metainfo;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SelectionError {
    #[error("{0:?}: expected file numbers and ranges such as 0,2-4, from 0 (see --list)")]
    Syntax(String),
    #[error("--select: file {0} does not exist; the torrent's files are 0 to {} (see --list)", .1.saturating_sub(1))]
    OutOfRange(usize, usize),
    #[error("--only {0:?}: {1}")]
    Glob(String, String),
    #[error("the selection matches no file (see --list)")]
    Empty,
}

/// The torrent's data files (pads left out), as `--list` numbers them from 0.
pub fn data_files(meta: &Metainfo) -> Vec<usize> {
    (0..meta.files.len())
        .filter(|&i| meta.files[i].is_data())
        .collect()
}

/// "0,2-4" → [0, 2, 3, 4], checked against `count` files (numbered from 0).
pub fn parse_numbers(spec: &str, count: usize) -> Result<Vec<usize>, SelectionError> {
    let bad = || SelectionError::Syntax(spec.to_string());
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let a: usize = a.parse().map_err(|_| bad())?;
        let b: usize = b.parse().map_err(|_| bad())?;
        if b < a {
            return Err(bad());
        }
        if b >= count {
            return Err(SelectionError::OutOfRange(b, count));
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Which of `meta.files` are selected: None when no flag narrows it down
/// (everything). A file is in when its number is selected or its path
/// (with or without the torrent's folder) matches one of the globs.
pub fn choose(
    meta: &Metainfo,
    only: &[String],
    select: Option<&str>,
) -> Result<Option<Vec<bool>>, SelectionError> {
    if only.is_empty() && select.is_none() {
        return Ok(None);
    }
    let data = data_files(meta);
    let mut chosen = vec![false; meta.files.len()];
    if let Some(spec) = select {
        for n in parse_numbers(spec, data.len())? {
            chosen[data[n]] = true;
        }
    }
    let opts = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: false,
        require_literal_leading_dot: false,
    };
    for g in only {
        let pat =
            glob::Pattern::new(g).map_err(|e| SelectionError::Glob(g.clone(), e.to_string()))?;
        for &i in &data {
            let full = meta.files[i].path.to_string_lossy().into_owned();
            let inner = meta.files[i]
                .path
                .strip_prefix(&meta.name)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|_| full.clone());
            if pat.matches_with(&full, opts) || pat.matches_with(&inner, opts) {
                chosen[i] = true;
            }
        }
    }
    if !chosen.iter().any(|c| *c) {
        return Err(SelectionError::Empty);
    }
    Ok(Some(chosen))
}

/// Pieces that touch a chosen file.
pub fn wanted_pieces(meta: &Metainfo, chosen: &[bool]) -> Bitfield {
    let mut wanted = Bitfield::new(meta.piece_count() as usize);
    for (i, _) in chosen.iter().enumerate().filter(|(_, c)| **c) {
        for p in meta.file_pieces(i) {
            wanted.set(p as usize);
        }
    }
    wanted
}

/// Pieces that touch no selected file: nothing in them is wanted.
pub fn unwanted_pieces(meta: &Metainfo, chosen: &[bool]) -> Bitfield {
    let n = meta.piece_count() as usize;
    let wanted = wanted_pieces(meta, chosen);
    let mut unwanted = Bitfield::new(n);
    for p in (0..n).filter(|&p| !wanted.get(p)) {
        unwanted.set(p);
    }
    unwanted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::NewTorrent;

    fn meta() -> Metainfo {
        let t = NewTorrent {
            name: "pack".into(),
            files: Some(vec![
                (vec!["a.mkv".into()], 20),
                (vec!["b.txt".into()], 20),
                (vec!["sub".into(), "c.mkv".into()], 24),
            ]),
            piece_length: 16,
            pieces: vec![0; 20 * 4],
            ..Default::default()
        };
        Metainfo::from_bytes(&t.to_bytes()).unwrap()
    }

    #[test]
    fn numbers_and_ranges() {
        assert_eq!(parse_numbers("0,2-4", 5), Ok(vec![0, 2, 3, 4]));
        assert_eq!(parse_numbers(" 1 , 1-2 ", 3), Ok(vec![1, 2]));
        assert_eq!(parse_numbers("3", 3), Err(SelectionError::OutOfRange(3, 3)));
        for bad in ["", "3-1", "a", "1,,2", "-2"] {
            assert!(parse_numbers(bad, 9).is_err(), "{bad}");
        }
    }

    #[test]
    fn globs_numbers_and_the_pieces_left_out() {
        let m = meta();
        assert_eq!(choose(&m, &[], None), Ok(None));
        let c = choose(&m, &["*.mkv".into()], None).unwrap().unwrap();
        assert_eq!(c, vec![true, false, true]);
        let c = choose(&m, &["pack/b.*".into()], Some("2"))
            .unwrap()
            .unwrap();
        assert_eq!(c, vec![false, true, true]);
        assert_eq!(
            choose(&m, &["*.iso".into()], None),
            Err(SelectionError::Empty)
        );
        // Files 0 and 2: bytes 0-19 and 40-63; piece 1 (16-31) touches
        // file 0, piece 2 (32-47) touches file 2: nothing is left out.
        let c = choose(&m, &[], Some("0,2")).unwrap().unwrap();
        assert!(unwanted_pieces(&m, &c).none());
        // File 1 alone: pieces 1 and 2 only.
        let c = choose(&m, &[], Some("1")).unwrap().unwrap();
        let u = unwanted_pieces(&m, &c);
        assert_eq!(u.iter_ones().collect::<Vec<_>>(), vec![0, 3]);
    }
}
