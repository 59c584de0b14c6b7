//! A core with nothing around it: the test plays the peers, the web
//! seeds, the disk and the clock. Inputs go in at the instants the test
//! chooses; the actions that come out are sorted into what each party
//! would have received.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha1::{Digest, Sha1};

use crate::bitfield::Bitfield;
use crate::limit::ConnectionCap;
use crate::metainfo::{merkle, Metainfo, NewTorrent, NewV2};
use crate::peer::wire::{BlockRef, HashRequest};
use crate::peer::{PeerCmd, PeerEvent, PeerKey};
use crate::store::{Layout, StoreError};
use crate::torrent::picker::BLOCK_LEN;
use crate::torrent::status::{Outcome, PeerSource};
use crate::torrent::webseed::WebEvent;

use super::super::{Action, Config, Core, Input, Options, PieceJob};

pub(super) const PIECE: usize = 2 * BLOCK_LEN as usize;
/// One tick of the runner's timer.
pub(super) const TICK: Duration = Duration::from_millis(100);

pub(super) struct Harness {
    pub(super) core: Core,
    /// The torrent's data, as honest sources send it.
    pub(super) data: Vec<u8>,
    pub(super) now: Instant,
    layout: Layout,
    /// Commands each source was sent and the test has not read yet.
    sent: HashMap<PeerKey, VecDeque<PeerCmd>>,
    jobs: VecDeque<Vec<PieceJob>>,
    pub(super) rechecks: Vec<std::ops::Range<u32>>,
    pub(super) connects: Vec<(PeerKey, SocketAddr)>,
    pub(super) accepts: Vec<(PeerKey, SocketAddr)>,
    pub(super) web_seeds: Vec<(PeerKey, String)>,
    pub(super) resets: Vec<PeerKey>,
    /// What the hash jobs wrote: the disk.
    pub(super) written: BTreeMap<u32, Vec<u8>>,
    pub(super) finished: Option<Outcome>,
    pub(super) failed: Option<StoreError>,
    pub(super) completes: usize,
    /// Every action, in order, as text (for comparing runs).
    pub(super) log: Vec<String>,
}

pub(super) fn options() -> Options {
    Options {
        max_peers: 10,
        upload_slots: 4,
        keep_seeding: false,
        ..Options::default()
    }
}

/// A v1 torrent of `pieces` pieces of two blocks, nothing had.
pub(super) fn harness(pieces: usize) -> Harness {
    harness_with(pieces, options())
}

pub(super) fn harness_with(pieces: usize, opts: Options) -> Harness {
    Harness::v1(pieces, opts, 7)
}

impl Harness {
    /// A v1 torrent as [`harness`] makes, its random choices seeded by `seed`.
    pub(super) fn new_v1(pieces: usize, seed: u64) -> Harness {
        Harness::v1(pieces, options(), seed)
    }

    fn v1(pieces: usize, opts: Options, seed: u64) -> Harness {
        let data: Vec<u8> = (0..pieces * PIECE).map(|i| (i * 7 % 251) as u8).collect();
        let hashes = data
            .chunks(PIECE)
            .flat_map(|c| <[u8; 20]>::from(Sha1::digest(c)))
            .collect();
        let nt = NewTorrent {
            name: "t".into(),
            length: data.len() as u64,
            piece_length: PIECE as u64,
            pieces: hashes,
            ..Default::default()
        };
        let meta = Arc::new(Metainfo::from_bytes(&nt.to_bytes()).unwrap());
        Harness::new(meta, data, &Bitfield::new(pieces), opts, seed)
    }
}

/// A v2-only torrent: a file of 6 pieces and one of a single piece;
/// `with_layers`: it carries its piece layers (as a .torrent file does),
/// else not (as from a magnet). Also the layer of the first file.
pub(super) fn harness_v2(with_layers: bool) -> (Harness, Vec<merkle::Hash>) {
    let a: Vec<u8> = (0..6 * PIECE - 100).map(|i| (i * 13 % 251) as u8).collect();
    let b: Vec<u8> = vec![7; 1000];
    let pl = PIECE as u64;
    let layer: Vec<merkle::Hash> = a
        .chunks(PIECE)
        .map(|p| merkle::piece_hash(p, pl, a.len() as u64))
        .collect();
    let root_a = merkle::file_root(&a, pl);
    let nt = NewTorrent {
        name: "t".into(),
        piece_length: pl,
        v2: Some(NewV2 {
            tree: vec![
                (vec!["a".into()], a.len() as u64, Some(root_a)),
                (
                    vec!["b".into()],
                    b.len() as u64,
                    Some(merkle::file_root(&b, pl)),
                ),
            ],
            layers: if with_layers {
                vec![(root_a, layer.concat())]
            } else {
                Vec::new()
            },
        }),
        ..Default::default()
    };
    let meta = Arc::new(Metainfo::from_bytes(&nt.to_bytes()).unwrap());
    assert_eq!(meta.piece_count(), 7);
    // The piece space: each file padded to a whole piece.
    let mut data = a;
    data.resize(6 * PIECE, 0);
    data.extend_from_slice(&b);
    data.resize(7 * PIECE, 0);
    let h = Harness::new(meta, data, &Bitfield::new(7), options(), 7);
    (h, layer)
}

/// Where test peer `n` listens, and its id.
pub(super) fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 1, n], 6881))
}

fn id(n: u8) -> [u8; 20] {
    [n; 20]
}

impl Harness {
    pub(super) fn new(
        meta: Arc<Metainfo>,
        data: Vec<u8>,
        have: &Bitfield,
        opts: Options,
        seed: u64,
    ) -> Harness {
        let now = Instant::now();
        let cfg = Config {
            options: opts,
            peer_id: [0; 20],
            listen_port: 1,
            seed,
            hash_jobs: 2,
            connections: Arc::new(ConnectionCap::new(None)),
            holepunch: true,
        };
        let mut h = Harness {
            layout: Layout::from_metainfo(&meta),
            core: Core::new(now, meta, have, cfg),
            data,
            now,
            sent: HashMap::new(),
            jobs: VecDeque::new(),
            rechecks: Vec::new(),
            connects: Vec::new(),
            accepts: Vec::new(),
            web_seeds: Vec::new(),
            resets: Vec::new(),
            written: BTreeMap::new(),
            finished: None,
            failed: None,
            completes: 0,
            log: Vec::new(),
        };
        h.pump();
        h
    }

    /// Sorts the core's actions to whom they are for.
    fn pump(&mut self) {
        while let Some(a) = self.core.poll_action() {
            self.log.push(format!("{a:?}"));
            match a {
                Action::Send(k, cmd) => self.sent.entry(k).or_default().push_back(cmd),
                Action::Verify(jobs) => self.jobs.push_back(jobs),
                Action::Recheck(r) => self.rechecks.push(r),
                Action::Connect { key, addr, .. } => self.connects.push((key, addr)),
                Action::Accept { key, addr } => self.accepts.push((key, addr)),
                Action::StartWebSeed { key, url, .. } => self.web_seeds.push((key, url)),
                Action::ResetWebSeed(k) => self.resets.push(k),
                Action::Complete => self.completes += 1,
                Action::Finished(o) => self.finished = Some(o),
                Action::Failed(e) => self.failed = Some(e),
                Action::Have(_)
                | Action::HaveBytes(_)
                | Action::SuperSeedOver
                | Action::Publish => {}
            }
        }
    }

    pub(super) fn input(&mut self, input: Input) {
        self.core.handle(self.now, input);
        self.pump();
    }

    pub(super) fn peer(&mut self, key: PeerKey, ev: PeerEvent) {
        self.input(Input::Peer(key, ev));
    }

    /// One tick at the present instant.
    pub(super) fn tick(&mut self) {
        self.core.tick(self.now);
        self.pump();
    }

    /// Lets `d` pass, ticking as the runner does.
    pub(super) fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += TICK;
            self.tick();
        }
    }

    /// We dial peer `n` (known from its address) and it answers; its key.
    pub(super) fn dial(&mut self, n: u8) -> PeerKey {
        self.input(Input::Peers(PeerSource::Manual, vec![addr(n)]));
        let (key, _) = *self
            .connects
            .iter()
            .rev()
            .find(|(_, a)| *a == addr(n))
            .expect("dialled");
        self.connected(key, n, false);
        key
    }

    /// A peer `n` with every piece connects (we dialled it); its key.
    pub(super) fn seed(&mut self, n: u8) -> PeerKey {
        let key = self.dial(n);
        self.peer(key, PeerEvent::HaveAll);
        key
    }

    /// Peer `n` connects to us and says nothing more; its key, unless it
    /// was refused.
    pub(super) fn accept(&mut self, n: u8) -> Option<PeerKey> {
        self.input(Input::Incoming {
            addr: addr(n),
            peer_id: id(n),
        });
        let (key, _) = *self.accepts.iter().rev().find(|(_, a)| *a == addr(n))?;
        self.connected(key, n, true);
        (!self.closed(key)).then_some(key)
    }

    fn connected(&mut self, key: PeerKey, n: u8, incoming: bool) {
        self.peer(
            key,
            PeerEvent::Connected {
                addr: addr(n),
                peer_id: id(n),
                fast: true,
                v2: false,
                incoming,
                transport: crate::peer::transport::Transport::Tcp,
            },
        );
    }

    /// A web seed joins; its key.
    pub(super) fn web(&mut self) -> PeerKey {
        self.input(Input::WebSeed("http://127.0.0.1/t".into()));
        self.web_seeds.last().expect("web seed started").0
    }

    /// Honest (or corrupted) data of a block.
    pub(super) fn data_of(&self, b: BlockRef, corrupt: bool) -> Bytes {
        let start = b.index as usize * PIECE + b.begin as usize;
        let mut data = self.data[start..start + b.length as usize].to_vec();
        if corrupt {
            data[0] ^= 0xff;
        }
        Bytes::from(data)
    }

    pub(super) fn block(&mut self, key: PeerKey, b: BlockRef, corrupt: bool) {
        let data = self.data_of(b, corrupt);
        self.peer(key, PeerEvent::Block { block: b, data });
    }

    pub(super) fn web_block(&mut self, key: PeerKey, b: BlockRef, corrupt: bool) {
        let data = self.data_of(b, corrupt);
        self.input(Input::Web(key, WebEvent::Block { block: b, data }));
    }

    /// Commands `key` got since last asked.
    pub(super) fn commands(&mut self, key: PeerKey) -> Vec<PeerCmd> {
        self.sent.remove(&key).map(Vec::from).unwrap_or_default()
    }

    /// Blocks `key` was asked for since last asked, and whether it was
    /// told to close for a ban.
    pub(super) fn requests(&mut self, key: PeerKey) -> (Vec<BlockRef>, bool) {
        let mut blocks = Vec::new();
        let mut banned = false;
        for cmd in self.commands(key) {
            match cmd {
                PeerCmd::Request(b) => blocks.extend(b),
                PeerCmd::Close(why) => banned |= why.starts_with("banned"),
                _ => {}
            }
        }
        (blocks, banned)
    }

    /// Hash requests and block requests `key` got since last asked.
    pub(super) fn v2_requests(&mut self, key: PeerKey) -> (Vec<HashRequest>, Vec<BlockRef>) {
        let (mut hashes, mut blocks) = (Vec::new(), Vec::new());
        for cmd in self.commands(key) {
            match cmd {
                PeerCmd::HashRequest(r) => hashes.push(r),
                PeerCmd::Request(b) => blocks.extend(b),
                _ => {}
            }
        }
        (hashes, blocks)
    }

    /// Blocks cancelled to `key` since last asked.
    pub(super) fn cancels(&mut self, key: PeerKey) -> Vec<BlockRef> {
        let cmds = self.commands(key);
        cmds.into_iter()
            .filter_map(|c| match c {
                PeerCmd::Cancel(b) => Some(b),
                _ => None,
            })
            .collect()
    }

    /// Whether `key` was told to close since last asked.
    pub(super) fn closed(&mut self, key: PeerKey) -> bool {
        let cmds = self.commands(key);
        cmds.iter().any(|c| matches!(c, PeerCmd::Close(_)))
    }

    /// The oldest hash job asked for and not yet run.
    pub(super) fn take_job(&mut self) -> Option<Vec<PieceJob>> {
        self.jobs.pop_front()
    }

    /// Runs the hash jobs asked for (writing to the test's disk) and
    /// answers them, until none are left.
    pub(super) fn settle(&mut self) {
        while let Some(jobs) = self.jobs.pop_front() {
            let written = &mut self.written;
            let done = jobs
                .into_iter()
                .map(|j| {
                    j.run(&self.layout, |p, d| {
                        written.insert(p, d.to_vec());
                        Ok(())
                    })
                })
                .collect();
            self.core.handle(self.now, Input::Verified(done));
            self.pump();
        }
    }

    /// Peer `key` unchokes us and sends the first piece it is asked for
    /// (all honest or all corrupt), which is checked; that piece.
    pub(super) fn send_one_piece(&mut self, key: PeerKey, corrupt: bool) -> u32 {
        self.peer(key, PeerEvent::Unchoked);
        let (asked, _) = self.requests(key);
        let p = asked[0].index;
        for b in asked.into_iter().filter(|b| b.index == p) {
            self.block(key, b, corrupt);
        }
        self.settle();
        p
    }

    /// Peer `key` answers every request honestly until the download is
    /// complete; it must never be banned.
    pub(super) fn serve_until_complete(&mut self, key: PeerKey) {
        for _ in 0..20 {
            let (asked, banned) = self.requests(key);
            assert!(!banned, "peer {key} was banned");
            for b in asked {
                self.block(key, b, false);
            }
            self.settle();
            if self.core.is_complete() {
                break;
            }
        }
        assert!(self.core.is_complete());
    }
}
