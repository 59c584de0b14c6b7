//! v2 piece layers (BEP 52) for a v2-only torrent that came without them
//! (from a magnet): the pieces of files larger than a piece are held back
//! in the picker while peers are asked for each file's layer, chunk by
//! chunk, each chunk checked against the file's root (`torrent::hashes`).
//! A whole layer goes into the torrent's `V2File`, what is on disk of
//! its file is checked ([`Action::Recheck`]), and its pieces are released.

use crate::bitfield::Bitfield;
use crate::peer::wire::HashRequest;
use crate::peer::{PeerCmd, PeerKey};
use crate::torrent::hashes;

use super::{Action, Core};

impl Core {
    /// For a v2-only torrent missing piece layers: holds back the pieces
    /// that cannot be checked until peers give their file's layer (a
    /// single-piece file is checked against its root and never waits).
    pub(super) fn start_layer_fetch(&mut self) {
        let Some(v2) = self.meta.v2.as_ref().filter(|_| self.meta.v2_only()) else {
            return;
        };
        let Some(fetch) = hashes::LayerFetch::new(v2) else {
            return;
        };
        let mut held = Bitfield::new(self.meta.piece_count() as usize);
        for r in fetch.waiting() {
            for p in r {
                held.set(p as usize);
            }
        }
        tracing::info!(
            "{} file(s) need their piece layer from peers; {} pieces wait for it",
            fetch.waiting().count(),
            held.count_ones()
        );
        self.picker.hold(&held);
        self.layers = Some(fetch);
    }

    /// Tops up the hash requests in flight to `key`, if it may be asked.
    pub(super) fn request_hashes(&mut self, key: PeerKey) {
        let (Some(fetch), Some(p)) = (self.layers.as_mut(), self.sources.peer(key)) else {
            return;
        };
        if !p.hashes_ok {
            return;
        }
        while fetch.in_flight(key) < hashes::PER_PEER {
            let Some(req) = fetch.next(key, |i| p.seed || p.bits.get(i as usize), self.now) else {
                break;
            };
            tracing::debug!(
                "{}: asking for piece hashes {}..{} of a file",
                p.addr,
                req.index,
                req.index + req.length
            );
            self.out
                .push_back(Action::Send(key, PeerCmd::HashRequest(req)));
        }
    }

    pub(super) fn request_hashes_all(&mut self) {
        if self.layers.is_none() {
            return;
        }
        for k in self.sources.peer_keys() {
            self.request_hashes(k);
        }
    }

    pub(super) fn on_hashes(&mut self, key: PeerKey, req: HashRequest, got: Vec<[u8; 32]>) {
        let Some(fetch) = self.layers.as_mut() else {
            return;
        };
        match fetch.on_hashes(key, &req, &got, self.now) {
            hashes::Outcome::Kept | hashes::Outcome::Unknown => {}
            hashes::Outcome::Bad => {
                self.strike(
                    key,
                    "piece hashes that do not lead to the file's root; not asked again",
                );
                if let Some(p) = self.sources.peer_mut(key) {
                    p.hashes_ok = false;
                }
                self.progress.hash_failures += 1;
                self.request_hashes_all();
            }
            hashes::Outcome::Layer { files, layer } => self.on_layer(&files, layer),
        }
        self.request_hashes(key);
    }

    pub(super) fn on_hash_rejected(&mut self, key: PeerKey, req: HashRequest) {
        if let Some(l) = self.layers.as_mut() {
            l.on_reject(key, &req, self.now);
        }
        self.request_hashes_all();
    }

    /// A piece layer came in whole: the pieces of the files that have it
    /// can be checked now. What is on disk of them (a resumed download has
    /// some: they could not be checked at start) is checked first; they
    /// stay held until the answer, so nothing is written to them meanwhile.
    fn on_layer(&mut self, files: &[usize], layer: Vec<[u8; 32]>) {
        let Some(v2) = self.meta.v2.clone() else {
            return;
        };
        for f in files.iter().filter_map(|i| v2.files.get(*i)) {
            match f.set_layer(layer.clone(), self.meta.piece_length) {
                Ok(()) => {
                    tracing::info!(
                        "piece layer of file {} is in: pieces {}..{} can be checked",
                        f.file,
                        f.first_piece,
                        f.first_piece + f.pieces
                    );
                    let range = f.first_piece..f.first_piece + f.pieces;
                    self.out.push_back(Action::Recheck(range));
                }
                Err(e) => {
                    // Each chunk was checked against the root, so this
                    // should not happen; start over rather than stall.
                    tracing::warn!("piece layer of file {}: {e}; fetching it again", f.file);
                    if let Some(l) = self.layers.as_mut() {
                        l.restart(&v2, f.root);
                    }
                    self.request_hashes_all();
                    return;
                }
            }
        }
        if self.layers.as_ref().is_some_and(|l| l.is_done()) {
            self.layers = None;
        }
    }

    /// The pieces of a file whose layer came: those found good on disk
    /// are had, the rest may be asked for.
    pub(super) fn on_rechecked(&mut self, range: std::ops::Range<u32>, good: Vec<u32>) {
        if !good.is_empty() {
            tracing::info!("{} pieces already on disk", good.len());
        }
        for p in good {
            if !self.picker.have().get(p as usize) {
                self.piece_had(p);
            }
        }
        self.picker.release_held(range);
        self.recount_have();
        if self.picker.is_complete() {
            self.on_complete();
        } else {
            self.fill_all();
        }
    }
}
