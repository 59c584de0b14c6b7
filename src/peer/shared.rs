//! What the tasks of one running torrent share: the torrent, our
//! identity in its swarm, the store, the have bitfield, byte counters and
//! the session's limits. Read-only or atomic, so peer tasks, web seed
//! tasks, discovery loops and the service read it without asking the
//! torrent's task; the torrent's task is the one that writes the have
//! bitfield and the verified byte count.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use crate::bitfield::AtomicBitfield;
use crate::limit::{ConnectionCap, RateLimit};
use crate::metainfo::Metainfo;
use crate::store::Store;

use super::mse::Policy;
use super::wire::{self, Handshake};

pub struct Shared {
    pub meta: Arc<Metainfo>,
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
    pub store: Arc<Store>,
    pub have: Arc<AtomicBitfield>,
    pub listen_port: u16,
    pub upload_limit: Arc<RateLimit>,
    /// Shared by all peers: a peer whose bytes overdraw it stops reading
    /// its socket for a while, so TCP slows the sender down.
    pub download_limit: Arc<RateLimit>,
    /// The session's cap on connections of all torrents.
    pub connections: Arc<ConnectionCap>,
    /// The info dictionary, served to magnet users (BEP 9); empty when it
    /// is over the metadata size cap and so not offered.
    pub metadata: Arc<[u8]>,
    /// Peer exchange allowed (not for private torrents, BEP 27).
    pub pex: bool,
    /// Hole punching (BEP 55): `ut_holepunch` advertised and answered
    /// (uTP on, not `--no-holepunch`, not a private torrent).
    pub holepunch: bool,
    /// Which connections are encrypted (the session's `--encryption`).
    pub encryption: Policy,
    /// How connections are dialled: TCP, uTP, and what worked for whom.
    pub net: Arc<super::transport::Net>,
    /// Super-seeding (BEP 16): peers are told we have nothing, and the
    /// torrent reveals pieces to each with `have`s.
    pub super_seed: AtomicBool,
    /// Payload bytes, for trackers and progress. Uploads count when the
    /// writer task has handed them to the socket (shared with it).
    pub uploaded: Arc<AtomicU64>,
    pub downloaded: AtomicU64,
    /// Verified bytes on disk; trackers get `left` from it.
    pub have_bytes: AtomicU64,
    /// How others reach us (the session's port mapping), for announces.
    pub reach: Arc<crate::reach::Reach>,
    /// Received blocks on their way to the torrent's task.
    pub backlog: Backlog,
}

/// A bound on the bytes of received blocks that peer tasks have handed
/// to the torrent's task and it has not yet copied into its pieces. Each
/// block keeps the read buffer it was cut from alive, so without it a
/// task that falls behind holds megabytes of them; with it a peer task
/// waits, stops reading its socket, and the kernel's buffer and TCP's
/// window hold the rest.
pub struct Backlog(tokio::sync::Semaphore);

impl Backlog {
    /// A few milliseconds of a fast download: the torrent's task copies a
    /// block in microseconds.
    pub const BYTES: usize = 1 << 20;

    /// Waits until `len` more bytes fit.
    pub async fn take(&self, len: usize) {
        // Never closed, so acquiring only waits.
        if let Ok(permit) = self.0.acquire_many(Self::cost(len)).await {
            permit.forget();
        }
    }

    /// The torrent's task is done with a block of `len` bytes.
    pub fn give(&self, len: usize) {
        self.0.add_permits(Self::cost(len) as usize);
    }

    /// Bytes in flight now.
    pub fn held(&self) -> usize {
        Self::BYTES - self.0.available_permits()
    }

    /// A block bigger than the whole bound takes all of it.
    fn cost(len: usize) -> u32 {
        len.min(Self::BYTES) as u32
    }
}

impl Default for Backlog {
    fn default() -> Backlog {
        Backlog(tokio::sync::Semaphore::new(Self::BYTES))
    }
}

impl std::fmt::Debug for Backlog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Backlog({} bytes)", self.held())
    }
}

impl Shared {
    /// Our handshake under `info_hash`, one of this torrent's hashes (a
    /// hybrid answers under the one the peer used). Torrents with a v2
    /// side set the BEP 52 upgrade bit.
    pub fn handshake(&self, info_hash: [u8; 20]) -> Handshake {
        let layout = self.store.layout();
        let ours = match &layout.v2 {
            Some(v2) if info_hash == v2.short_hash() => info_hash,
            _ => self.info_hash,
        };
        let mut hs = Handshake::new(ours, self.peer_id);
        if layout.v2.is_some() {
            hs.reserved[7] |= wire::V2_BIT;
        }
        hs
    }

    /// The hashes this torrent's swarm is known by: the v1 hash (or a
    /// v2-only torrent's cut v2 hash) and, for a hybrid, its v2 hash cut to
    /// 20 bytes. A peer may answer a handshake under any of them: a BEP 52
    /// peer answers a hybrid's v1 handshake under the v2 hash when both
    /// set the upgrade bit.
    pub fn info_hashes(&self) -> Vec<[u8; 20]> {
        let mut out = vec![self.info_hash];
        if let Some(v2) = &self.store.layout().v2 {
            if v2.short_hash() != self.info_hash {
                out.push(v2.short_hash());
            }
        }
        out
    }

    pub fn piece_size(&self, piece: u32) -> u64 {
        self.meta.piece_size(piece)
    }
}

#[cfg(test)]
impl Shared {
    /// A torrent of `meta` over `store`, having `have`, with no limits,
    /// peers or metadata: the state unit tests give peer tasks. Peer id
    /// all zeros, listening on port 1.
    pub(crate) fn for_test(meta: &Metainfo, store: Store, have: AtomicBitfield) -> Shared {
        Shared {
            meta: Arc::new(meta.clone()),
            info_hash: meta.info_hash.0,
            peer_id: [0; 20],
            store: Arc::new(store),
            have: Arc::new(have),
            listen_port: 1,
            upload_limit: Default::default(),
            download_limit: Default::default(),
            connections: Default::default(),
            metadata: Arc::from(&[][..]),
            pex: false,
            holepunch: false,
            encryption: Policy::default(),
            net: Default::default(),
            super_seed: Default::default(),
            uploaded: Default::default(),
            downloaded: AtomicU64::new(0),
            have_bytes: AtomicU64::new(0),
            reach: Default::default(),
            backlog: Default::default(),
        }
    }
}
