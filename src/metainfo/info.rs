//! The parts of a torrent file: the info dictionary (name, piece length,
//! files, v1 and v2 layouts, a hybrid's agreement between them), file
//! paths made safe to create, trackers and web seeds. Called by
//! [`Metainfo`]'s parse; bytes in, checked values out.

use super::*;

/// Offset of the `pieces` string's bytes in the info dictionary, and their length.
type PiecesAt = (usize, usize);

/// The info dictionary with its `pieces` string emptied, and where that
/// string's bytes start in `info` and how many there are (None when
/// `pieces` is absent or not a string).
pub(super) fn without_pieces(info: &[u8]) -> Result<(Vec<u8>, Option<PiecesAt>), MetainfoError> {
    let Some(ps) = bencode::top_level_span(info, b"pieces")? else {
        return Ok((info.to_vec(), None));
    };
    let value = &info[ps.clone()];
    let Some(colon) = value.iter().position(|&b| b == b':') else {
        return Ok((info.to_vec(), None));
    };
    if !value[0].is_ascii_digit() {
        return Ok((info.to_vec(), None));
    }
    let mut rest = info[..ps.start].to_vec();
    rest.extend_from_slice(b"0:");
    rest.extend_from_slice(&info[ps.end..]);
    Ok((rest, Some((ps.start + colon + 1, value.len() - colon - 1))))
}

pub(super) struct ParsedInfo {
    pub(super) name: String,
    pub(super) piece_length: u64,
    pub(super) piece_count: u32,
    pub(super) files: Vec<FileEntry>,
    pub(super) total_length: u64,
    pub(super) multi_file: bool,
    pub(super) private: bool,
}

pub(super) type Dict = HashMap<Vec<u8>, Value>;

pub(super) fn get<'a>(d: &'a Dict, key: &str) -> Option<&'a Value> {
    d.get(key.as_bytes())
}

pub(super) fn opt_str<'a>(d: &'a Dict, key: &str) -> Result<Option<&'a str>, MetainfoError> {
    match get(d, key) {
        None => Ok(None),
        Some(Value::Bytes(b)) => {
            std::str::from_utf8(b)
                .map(Some)
                .map_err(|_| MetainfoError::WrongType {
                    key: key.into(),
                    expected: "UTF-8 text",
                })
        }
        Some(_) => Err(MetainfoError::WrongType {
            key: key.into(),
            expected: "a string",
        }),
    }
}

pub(super) fn lossy_opt(d: &Dict, key: &str) -> Option<String> {
    match get(d, key) {
        Some(Value::Bytes(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

fn int(d: &Dict, key: &'static str, ctx: &str) -> Result<i64, MetainfoError> {
    match get(d, key) {
        Some(Value::Int(i)) => Ok(*i),
        Some(_) => Err(MetainfoError::WrongType {
            key: format!("{ctx}{key}"),
            expected: "an integer",
        }),
        None => Err(MetainfoError::Missing(key)),
    }
}

pub(super) fn parse_info(
    info: &Dict,
    pieces_len: Option<usize>,
    info_hash: InfoHash,
    warnings: &mut Vec<String>,
) -> Result<ParsedInfo, MetainfoError> {
    let piece_length = match get(info, "piece length") {
        Some(Value::Int(n)) if *n > 0 => *n as u64,
        Some(Value::Int(n)) => {
            return Err(invalid(format!(
                "`piece length` is {n}; it must be positive"
            )))
        }
        Some(_) => {
            return Err(MetainfoError::WrongType {
                key: "info.piece length".into(),
                expected: "an integer",
            })
        }
        None => return Err(MetainfoError::Missing("piece length")),
    };
    if piece_length > MAX_PIECE_LENGTH {
        return Err(invalid(format!(
            "`piece length` is {piece_length}; over {MAX_PIECE_LENGTH} is refused"
        )));
    }
    if !piece_length.is_power_of_two() {
        warnings.push(format!("piece length {piece_length} is not a power of two"));
    }

    let raw_name = match get(info, "name.utf-8").or_else(|| get(info, "name")) {
        Some(Value::Bytes(b)) => b.clone(),
        Some(_) => {
            return Err(MetainfoError::WrongType {
                key: "info.name".into(),
                expected: "a string",
            })
        }
        None => return Err(MetainfoError::Missing("name")),
    };
    if raw_name.contains(&0) {
        return Err(invalid("`name` contains NUL bytes"));
    }
    let name = sanitize_element(&raw_name).unwrap_or_else(|| info_hash.hex());

    let pieces_len = match (get(info, "pieces"), pieces_len) {
        (Some(Value::Bytes(_)), Some(len)) => len,
        (Some(Value::Bytes(b)), None) => b.len(),
        (Some(_), _) => {
            return Err(MetainfoError::WrongType {
                key: "info.pieces".into(),
                expected: "a string",
            })
        }
        (None, _) => return Err(MetainfoError::Missing("pieces")),
    };
    if pieces_len % 20 != 0 {
        return Err(invalid(format!(
            "`pieces` is {pieces_len} bytes, not a multiple of 20"
        )));
    }

    let private = matches!(get(info, "private"), Some(Value::Int(1)));

    let (mut files, multi_file) = match (get(info, "files"), get(info, "length")) {
        (Some(Value::List(list)), _) => (parse_files(list, &name)?, true),
        (Some(_), _) => {
            return Err(MetainfoError::WrongType {
                key: "info.files".into(),
                expected: "a list",
            })
        }
        (None, Some(Value::Int(len))) => {
            if *len < 0 {
                return Err(invalid(format!("`length` is negative ({len})")));
            }
            let entry = FileEntry {
                path: PathBuf::from(&name),
                length: *len as u64,
                offset: 0,
                pad: false,
                symlink: false,
            };
            (vec![entry], false)
        }
        (None, Some(_)) => {
            return Err(MetainfoError::WrongType {
                key: "info.length".into(),
                expected: "an integer",
            })
        }
        (None, None) => return Err(MetainfoError::Missing("length or files")),
    };

    let mut total: u64 = 0;
    for f in &mut files {
        f.offset = total;
        total = total
            .checked_add(f.length)
            .filter(|t| *t <= MAX_TOTAL_LENGTH)
            .ok_or_else(|| invalid("total size overflows"))?;
    }
    if total == 0 {
        return Err(invalid("total size is zero"));
    }
    let expected = total.div_ceil(piece_length);
    if expected != (pieces_len / 20) as u64 {
        return Err(invalid(format!(
            "`pieces` holds {} hashes but {total} bytes in pieces of {piece_length} need {expected}",
            pieces_len / 20
        )));
    }
    if expected > u32::MAX as u64 {
        return Err(invalid("too many pieces"));
    }
    if multi_file {
        dedupe_paths(&mut files)?;
    }
    Ok(ParsedInfo {
        name,
        piece_length,
        piece_count: expected as u32,
        files,
        total_length: total,
        multi_file,
        private,
    })
}

fn parse_files(list: &[Value], name: &str) -> Result<Vec<FileEntry>, MetainfoError> {
    if list.is_empty() {
        return Err(invalid("`files` is empty: no files in torrent"));
    }
    if list.len() > MAX_FILES {
        return Err(invalid(format!(
            "{} files; over {MAX_FILES} is refused",
            list.len()
        )));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, f) in list.iter().enumerate() {
        let Value::Dict(d) = f else {
            return Err(MetainfoError::WrongType {
                key: format!("info.files[{i}]"),
                expected: "a dictionary",
            });
        };
        let ctx = format!("info.files[{i}].");
        let attr = match get(d, "attr") {
            Some(Value::Bytes(a)) => a.clone(),
            _ => Vec::new(),
        };
        let pad = attr.contains(&b'p');
        let symlink = attr.contains(&b'l');
        let length = match int(d, "length", &ctx) {
            Err(MetainfoError::Missing(_)) if symlink => 0,
            other => other?,
        };
        if length < 0 {
            return Err(invalid(format!(
                "file {i} has a negative length ({length})"
            )));
        }
        let path_value = get(d, "path.utf-8").or_else(|| get(d, "path"));
        let mut path = PathBuf::from(name);
        match path_value {
            Some(Value::List(elems)) => {
                if elems.len() > MAX_PATH_DEPTH {
                    return Err(invalid(format!(
                        "file {i} path is {} levels deep; over {MAX_PATH_DEPTH} is refused",
                        elems.len()
                    )));
                }
                let mut any = false;
                for e in elems {
                    let Value::Bytes(b) = e else {
                        return Err(invalid(format!(
                            "file {i} has an invalid name: a path element is not a string"
                        )));
                    };
                    if b.contains(&0) {
                        return Err(invalid(format!("file {i} path contains NUL bytes")));
                    }
                    if let Some(s) = sanitize_element(b) {
                        path.push(s);
                        any = true;
                    }
                }
                if !any {
                    path.push("_");
                }
            }
            Some(_) => {
                return Err(MetainfoError::WrongType {
                    key: format!("{ctx}path"),
                    expected: "a list of strings",
                })
            }
            None if pad => {
                path.push(".pad");
                path.push(length.to_string());
            }
            None => return Err(invalid(format!("file {i} has no `path`: invalid name"))),
        }
        if let Some(Value::List(target)) = get(d, "symlink path") {
            if target.iter().any(|e| !matches!(e, Value::Bytes(_))) {
                return Err(invalid(format!("file {i} has an invalid symlink path")));
            }
        }
        out.push(FileEntry {
            path,
            // We never create symlinks, so they hold no data of ours.
            length: if symlink { 0 } else { length as u64 },
            offset: 0,
            pad,
            symlink,
        });
    }
    Ok(out)
}

/// A hybrid torrent's v1 and v2 file lists must describe the same files in
/// the same order, each v2 file with data starting on a piece boundary of
/// the v1 layout (BEP 47 pad files between them), or v1 and v2 peers would
/// disagree about the content. Returns where each v2 file with data lies:
/// its index in `parsed.files` and its offset.
pub(super) fn check_hybrid(
    info: &Dict,
    parsed: &ParsedInfo,
    entries: &[v2::TreeEntry],
) -> Result<Vec<(usize, u64)>, MetainfoError> {
    v2::check_piece_length(parsed.piece_length)?;
    let inconsistent =
        |what: String| invalid(format!("hybrid torrent: {what}: inconsistent files"));
    // The v1 files that are not padding, with their raw paths.
    let mut v1: Vec<(usize, Vec<Vec<u8>>)> = Vec::new();
    if parsed.multi_file {
        if let Some(Value::List(files)) = get(info, "files") {
            for (i, f) in files.iter().enumerate() {
                let Value::Dict(d) = f else { continue };
                if parsed.files.get(i).is_some_and(|e| e.pad) {
                    continue;
                }
                let path = match get(d, "path") {
                    Some(Value::List(p)) => p
                        .iter()
                        .filter_map(|e| match e {
                            Value::Bytes(b) => Some(b.clone()),
                            _ => None,
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                v1.push((i, path));
            }
        }
    } else {
        let name = match get(info, "name") {
            Some(Value::Bytes(b)) => b.clone(),
            _ => Vec::new(),
        };
        v1.push((0, vec![name]));
    }
    if v1.len() != entries.len() {
        return Err(inconsistent(format!(
            "{} v1 files but {} v2 files",
            v1.len(),
            entries.len()
        )));
    }
    let mut placed = Vec::new();
    for ((i, path), e) in v1.iter().zip(entries) {
        let f = &parsed.files[*i];
        let shown = || String::from_utf8_lossy(&e.path.join(&b'/')).into_owned();
        if *path != e.path || f.length != e.length {
            return Err(inconsistent(format!(
                "v2 file `{}` differs from v1 file {i}",
                shown()
            )));
        }
        if e.root.is_some() {
            if !f.offset.is_multiple_of(parsed.piece_length) {
                return Err(inconsistent(format!(
                    "file `{}` does not start on a piece boundary",
                    shown()
                )));
            }
            placed.push((*i, f.offset));
        }
    }
    Ok(placed)
}

/// The files and geometry of a v2-only torrent: each file with data is
/// followed by a virtual pad file up to the next piece boundary (never on
/// disk), so pieces never span two files and the store needs nothing new.
pub(super) fn parse_v2_only(
    info: &Dict,
    entries: &[v2::TreeEntry],
    info_hash: InfoHash,
) -> Result<(ParsedInfo, Vec<(usize, u64)>), MetainfoError> {
    let piece_length = match get(info, "piece length") {
        Some(Value::Int(n)) if *n > 0 => *n as u64,
        Some(_) => return Err(invalid("invalid piece length: not a positive integer")),
        None => return Err(MetainfoError::Missing("piece length")),
    };
    v2::check_piece_length(piece_length)?;
    if piece_length > MAX_PIECE_LENGTH {
        return Err(invalid(format!(
            "`piece length` is {piece_length}; over {MAX_PIECE_LENGTH} is refused"
        )));
    }
    let raw_name = match get(info, "name") {
        Some(Value::Bytes(b)) => b.clone(),
        Some(_) => {
            return Err(MetainfoError::WrongType {
                key: "info.name".into(),
                expected: "a string",
            })
        }
        None => return Err(MetainfoError::Missing("name")),
    };
    if raw_name.contains(&0) {
        return Err(invalid("`name` contains NUL bytes"));
    }
    let single = entries.len() == 1 && entries[0].path.len() == 1;
    let name = if single {
        sanitize_element(&entries[0].path[0])
    } else {
        sanitize_element(&raw_name)
    }
    .unwrap_or_else(|| info_hash.hex());
    let private = matches!(get(info, "private"), Some(Value::Int(1)));

    let mut files = Vec::new();
    let mut placed = Vec::new();
    let mut total: u64 = 0;
    let last_data = entries.iter().rposition(|e| e.root.is_some());
    for (n, e) in entries.iter().enumerate() {
        let mut path = PathBuf::from(&name);
        if !single {
            let mut any = false;
            for el in &e.path {
                if el.contains(&0) {
                    return Err(invalid("a file path contains NUL bytes"));
                }
                if let Some(s) = sanitize_element(el) {
                    path.push(s);
                    any = true;
                }
            }
            if !any {
                path.push("_");
            }
        }
        if e.root.is_some() {
            placed.push((files.len(), total));
        }
        files.push(FileEntry {
            path,
            length: e.length,
            offset: total,
            pad: false,
            symlink: e.symlink.is_some(),
        });
        total = total
            .checked_add(e.length)
            .filter(|t| *t <= MAX_TOTAL_LENGTH)
            .ok_or_else(|| invalid("total size overflows: too many pieces"))?;
        // Every file, the last one too, is padded to the end of its last
        // piece: v2 peers (libtorrent) ask for whole final pieces and get
        // zeros past the file's end.
        let gap = (piece_length - total % piece_length) % piece_length;
        if gap > 0 && last_data.is_some_and(|l| n <= l) {
            let mut path = PathBuf::from(&name);
            path.push(".pad");
            path.push(gap.to_string());
            files.push(FileEntry {
                path,
                length: gap,
                offset: total,
                pad: true,
                symlink: false,
            });
            total += gap;
        }
    }
    if total == 0 {
        return Err(invalid("total size is zero"));
    }
    let pieces = total.div_ceil(piece_length);
    if pieces > u32::MAX as u64 {
        return Err(invalid("too many pieces"));
    }
    if !single {
        dedupe_paths(&mut files)?;
    }
    Ok((
        ParsedInfo {
            name,
            piece_length,
            piece_count: pieces as u32,
            files,
            total_length: total,
            multi_file: !single,
            private,
        },
        placed,
    ))
}

/// Renames clashing paths (`a.txt` → `a.1.txt`), including a file that
/// sits where another file needs a directory.
fn dedupe_paths(files: &mut [FileEntry]) -> Result<(), MetainfoError> {
    let mut dirs: HashSet<PathBuf> = HashSet::new();
    for f in files.iter() {
        let mut p = f.path.parent();
        while let Some(d) = p {
            if !dirs.insert(d.to_path_buf()) {
                break;
            }
            p = d.parent();
        }
    }
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut copies: HashMap<PathBuf, usize> = HashMap::new();
    for f in files.iter_mut() {
        if !f.is_data() {
            continue;
        }
        let n = copies.entry(f.path.clone()).or_insert(0);
        *n += 1;
        if *n > MAX_SAME_PATH {
            return Err(invalid(format!(
                "too many duplicate file names: `{}` appears more than {MAX_SAME_PATH} times",
                f.path.display()
            )));
        }
        if !seen.contains(&f.path) && !dirs.contains(&f.path) {
            seen.insert(f.path.clone());
            continue;
        }
        let stem = f
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ext = f
            .path
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()))
            .unwrap_or_default();
        let mut k = 1;
        loop {
            let candidate = f.path.with_file_name(format!("{stem}.{k}{ext}"));
            if !seen.contains(&candidate) && !dirs.contains(&candidate) {
                seen.insert(candidate.clone());
                f.path = candidate;
                break;
            }
            k += 1;
            if k > MAX_FILES {
                return Err(invalid("too many duplicate file names"));
            }
        }
    }
    Ok(())
}

const RESERVED: [&str; 22] = [
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// Makes one path element safe to create on any common filesystem.
/// Returns None when nothing of it should appear in the path (empty, `.`,
/// `..`). Separators inside an element are removed, as libtorrent does, and
/// an element made only of them becomes `_`.
pub fn sanitize_element(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    if text.is_empty() || text == "." || text == ".." {
        return None;
    }
    let mut s: String = text
        .chars()
        .filter(|c| *c != '/' && *c != '\\')
        .map(|c| match c {
            '<' | '>' | ':' | '"' | '|' | '?' | '*' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect();
    if s.is_empty() {
        return Some("_".into());
    }
    if s == "." || s == ".." {
        return None;
    }
    let stem = s.split('.').next().unwrap_or("").trim_end();
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(stem)) {
        s.insert(stem.len(), '_');
    }
    if s.len() > MAX_ELEMENT_BYTES {
        s = truncate_keeping_extension(&s, MAX_ELEMENT_BYTES);
    }
    Some(s)
}

fn truncate_keeping_extension(s: &str, max: usize) -> String {
    let ext = match s.rfind('.') {
        Some(i) if s.len() - i <= 16 && i > 0 => &s[i..],
        _ => "",
    };
    let mut cut = max - ext.len();
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{}", &s[..cut], ext)
}

/// Joins a torrent path onto the output folder, refusing anything that could
/// leave it. Paths from [`Metainfo`] always pass; this is the last guard.
pub fn safe_join(root: &Path, rel: &Path) -> Option<PathBuf> {
    if rel.as_os_str().is_empty() {
        return None;
    }
    for c in rel.components() {
        match c {
            Component::Normal(_) => {}
            _ => return None,
        }
    }
    Some(root.join(rel))
}

pub(super) fn parse_announce_list(
    v: Option<&Value>,
    warnings: &mut Vec<String>,
) -> Vec<Vec<String>> {
    let Some(v) = v else { return Vec::new() };
    let Value::List(tiers) = v else {
        warnings.push("`announce-list` is not a list; ignored".into());
        return Vec::new();
    };
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for tier in tiers {
        let Value::List(urls) = tier else { continue };
        let t: Vec<String> = urls
            .iter()
            .filter_map(|u| match u {
                Value::Bytes(b) => std::str::from_utf8(b).ok(),
                _ => None,
            })
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty() && seen.insert(u.clone()))
            .collect();
        if !t.is_empty() {
            out.push(t);
        }
    }
    out
}

/// BEP 19 web seeds. For multi-file torrents the URL names a folder, so it
/// gets a trailing `/`; spaces are percent-encoded.
pub(super) fn parse_url_list(
    v: Option<&Value>,
    multi: bool,
    warnings: &mut Vec<String>,
) -> Vec<String> {
    let raw: Vec<&[u8]> = match v {
        None => return Vec::new(),
        Some(Value::Bytes(b)) => vec![b],
        Some(Value::List(l)) => l
            .iter()
            .filter_map(|u| match u {
                Value::Bytes(b) => Some(b.as_slice()),
                _ => None,
            })
            .collect(),
        Some(_) => {
            warnings.push("`url-list` is neither a string nor a list; ignored".into());
            return Vec::new();
        }
    };
    let mut out: Vec<String> = Vec::new();
    for b in raw {
        let Ok(u) = std::str::from_utf8(b) else {
            continue;
        };
        let mut u = u.trim().replace(' ', "%20");
        if u.is_empty() {
            continue;
        }
        if multi && !u.ends_with('/') {
            u.push('/');
        }
        if !out.contains(&u) {
            out.push(u);
        }
    }
    out
}
