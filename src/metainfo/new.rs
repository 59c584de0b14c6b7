//! Torrent files made from scratch: what `shoal create` and the tests
//! build a torrent from, and its bytes.

use super::*;

/// What `shoal create` builds a torrent from.
#[derive(Clone, Debug, Default)]
pub struct NewTorrent {
    pub name: String,
    /// None: single-file torrent of the given length.
    pub files: Option<Vec<(Vec<String>, u64)>>,
    pub length: u64,
    pub piece_length: u64,
    pub pieces: Vec<u8>,
    pub trackers: Vec<Vec<String>>,
    pub web_seeds: Vec<String>,
    pub private: bool,
    pub comment: Option<String>,
    pub created_by: Option<String>,
    pub creation_date: Option<i64>,
    /// BEP 52: with `pieces` empty a v2-only torrent, else a hybrid (the
    /// v1 `files` must then hold the BEP 47 pad files that align each
    /// file to a piece, as [`NewTorrent::pad_files`] marks them).
    pub v2: Option<NewV2>,
    /// Indices in `files` of BEP 47 pad files (attr `p`).
    pub pad_files: Vec<usize>,
}

/// The BEP 52 part of a torrent being made.
#[derive(Clone, Debug, Default)]
pub struct NewV2 {
    /// Every file in tree order: path under the torrent's root (empty for
    /// a single-file torrent), length, pieces root (None when empty).
    pub tree: Vec<(Vec<String>, u64, Option<merkle::Hash>)>,
    /// Piece layers of the files larger than a piece: root, hashes.
    pub layers: Vec<(merkle::Hash, Vec<u8>)>,
}

impl NewV2 {
    fn file_tree(&self, name: &str) -> Value {
        let mut root: Dict = HashMap::new();
        for (path, len, hash) in &self.tree {
            let mut leaf: Dict = HashMap::new();
            leaf.insert(b"length".to_vec(), Value::Int(*len as i64));
            if let Some(h) = hash {
                leaf.insert(b"pieces root".to_vec(), Value::Bytes(h.to_vec()));
            }
            let mut file: Dict = HashMap::new();
            file.insert(Vec::new(), Value::Dict(leaf));
            let single = [name.to_string()];
            let elems: &[String] = if path.is_empty() { &single } else { path };
            let mut node = &mut root;
            for (i, e) in elems.iter().enumerate() {
                let k = e.as_bytes().to_vec();
                if i + 1 == elems.len() {
                    node.insert(k, Value::Dict(file));
                    break;
                }
                let entry = node.entry(k).or_insert_with(|| Value::Dict(HashMap::new()));
                let Value::Dict(d) = entry else { break };
                node = d;
            }
        }
        Value::Dict(root)
    }
}

impl NewTorrent {
    /// Bencodes a torrent file (keys sorted, as BEP 3 requires).
    pub fn to_bytes(&self) -> Vec<u8> {
        let s = |x: &str| Value::Bytes(x.as_bytes().to_vec());
        let mut info: Dict = HashMap::new();
        info.insert(b"name".to_vec(), s(&self.name));
        info.insert(
            b"piece length".to_vec(),
            Value::Int(self.piece_length as i64),
        );
        if self.v2.is_none() || !self.pieces.is_empty() {
            info.insert(b"pieces".to_vec(), Value::Bytes(self.pieces.clone()));
        }
        let v1 = !self.pieces.is_empty() || self.v2.is_none();
        if let Some(v2) = &self.v2 {
            info.insert(b"meta version".to_vec(), Value::Int(2));
            info.insert(b"file tree".to_vec(), v2.file_tree(&self.name));
        }
        if self.private {
            info.insert(b"private".to_vec(), Value::Int(1));
        }
        match &self.files {
            _ if !v1 => {}
            None => {
                info.insert(b"length".to_vec(), Value::Int(self.length as i64));
            }
            Some(files) => {
                let list = files
                    .iter()
                    .enumerate()
                    .map(|(i, (path, len))| {
                        let mut d: Dict = HashMap::new();
                        if self.pad_files.contains(&i) {
                            d.insert(b"attr".to_vec(), s("p"));
                        }
                        d.insert(b"length".to_vec(), Value::Int(*len as i64));
                        d.insert(
                            b"path".to_vec(),
                            Value::List(path.iter().map(|p| s(p)).collect()),
                        );
                        Value::Dict(d)
                    })
                    .collect();
                info.insert(b"files".to_vec(), Value::List(list));
            }
        }
        let mut top: Dict = HashMap::new();
        top.insert(b"info".to_vec(), Value::Dict(info));
        if let Some(v2) = &self.v2 {
            let layers: Dict = v2
                .layers
                .iter()
                .map(|(root, hashes)| (root.to_vec(), Value::Bytes(hashes.clone())))
                .collect();
            top.insert(b"piece layers".to_vec(), Value::Dict(layers));
        }
        if let Some(first) = self.trackers.first().and_then(|t| t.first()) {
            top.insert(b"announce".to_vec(), s(first));
        }
        if self.trackers.len() > 1 || self.trackers.first().is_some_and(|t| t.len() > 1) {
            let tiers = self
                .trackers
                .iter()
                .map(|t| Value::List(t.iter().map(|u| s(u)).collect()))
                .collect();
            top.insert(b"announce-list".to_vec(), Value::List(tiers));
        }
        if !self.web_seeds.is_empty() {
            top.insert(
                b"url-list".to_vec(),
                Value::List(self.web_seeds.iter().map(|u| s(u)).collect()),
            );
        }
        if let Some(c) = &self.comment {
            top.insert(b"comment".to_vec(), s(c));
        }
        if let Some(c) = &self.created_by {
            top.insert(b"created by".to_vec(), s(c));
        }
        if let Some(d) = self.creation_date {
            top.insert(b"creation date".to_vec(), Value::Int(d));
        }
        serde_bencode::to_bytes(&Value::Dict(top)).unwrap_or_default()
    }
}
