//! The swarm: many real torrent cores (`shoal::torrent::Core`, the
//! client's own picker, choker and super-seeder) on virtual time, wired
//! through the modelled network of `net.rs`. This file plays what the
//! client's tasks do around a core: the peer tasks (a command of one core
//! becomes an event of the other after the path's delay; requests are
//! served from what the uploader has, while it does not choke), the hash
//! jobs and the disk, a tracker, and the scenario (who joins when, who is
//! killed and comes back).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha1::{Digest, Sha1};

use shoal::bitfield::Bitfield;
use shoal::limit::ConnectionCap;
use shoal::metainfo::{Metainfo, NewTorrent};
use shoal::peer::pex;
use shoal::peer::wire::BlockRef;
use shoal::peer::{PeerCmd, PeerEvent, PeerKey};
use shoal::store::Layout;
use shoal::torrent::picker::BLOCK_LEN;
use shoal::torrent::{Action, Config, Core, Input, Options, PeerSource, Traffic, Verified};

use super::net::{Calendar, Net};
use super::scenario::{Join, Params, Report, Rng, Sample};

/// One host and the core running on it (none while it is away).
struct Node {
    core: Option<Core>,
    /// Bumped at each start: events for an older run are dropped.
    gen: u32,
    addr: SocketAddr,
    id: [u8; 20],
    have: Bitfield,
    /// Its connections by its own key for them (in key order: a run
    /// must not depend on a hash map's order).
    conns: BTreeMap<PeerKey, usize>,
    seeder: bool,
    super_seeding: bool,
    /// Its delay to the network's core (half its round-trip time), and
    /// its access link's loss.
    delay: f64,
    loss: f64,
    /// A connection dialled to it, waiting for its core's answer.
    incoming: Option<usize>,
    /// Times each piece was verified here (over all its runs).
    verified: Vec<u8>,
    /// Blocks received (to count duplicates).
    got: Vec<bool>,
    uploaded: u64,
    downloaded: u64,
    started: Option<f64>,
    done_at: Option<f64>,
    next_announce: f64,
}

/// One direction of a connection: from `ends[d]` to `ends[1 - d]`.
struct Dir {
    /// Requests the sender's peer task will serve, in order.
    queue: VecDeque<BlockRef>,
    /// Bytes of the head of the queue already sent.
    sent: f64,
    /// The sender chokes the receiver (its task refuses requests).
    choking: bool,
    flow: usize,
    bytes_sent: u64,
    bytes_received: u64,
}

struct Conn {
    /// (node, its run, its key for this connection).
    ends: [(usize, u32, PeerKey); 2],
    /// Both handshakes done and not closed.
    open: bool,
    closed: bool,
    dirs: [Dir; 2],
}

enum Ev {
    /// A dial reaches its target (side 1 of the connection).
    Dial(usize),
    /// What the other end's peer task reports to the core at `side`.
    Peer(usize, usize, PeerEvent),
    Haves(usize, usize, Vec<u32>),
    /// Requests reach the sender of direction `dir`.
    Requests(usize, usize, Vec<BlockRef>),
    Cancel(usize, usize, BlockRef),
    /// A block's last byte reaches the receiver of direction `dir`.
    Block(usize, usize, BlockRef),
    /// To a node's core directly (its run, the input).
    Input(usize, u32, Input),
    Join(usize),
    Kill(usize),
    Restart(usize),
}

pub struct Swarm {
    p: Params,
    meta: Arc<Metainfo>,
    layout: Layout,
    zeros: Bytes,
    base: Instant,
    nodes: Vec<Node>,
    conns: Vec<Conn>,
    by_addr: HashMap<SocketAddr, usize>,
    net: Net,
    cal: Calendar<Ev>,
    rng: Rng,
    pieces: usize,
    blocks_per_piece: usize,
    /// Copies of each piece among the leechers present.
    avail: Vec<u32>,
    seeder_present: bool,
    /// Nodes by the step within a tick at which they tick.
    tick_groups: Vec<Vec<usize>>,
    tick_steps: u64,
    report: Report,
    events: u64,
    /// Leechers done.
    done: usize,
    first_start: Option<f64>,
    /// SIM_TRACE set: every command and event but blocks and haves on
    /// stderr (for finding out why a run went as it did).
    trace: bool,
}

/// Bits a second to bytes a second of payload.
fn payload(bits: f64, overhead: f64) -> f64 {
    bits / 8.0 * (1.0 - overhead)
}

/// The torrent: `size` bytes of zeros, so every piece's hash is known
/// and a block's data is a slice of one buffer.
fn torrent(size: u64, piece: u64) -> Arc<Metainfo> {
    let full = <[u8; 20]>::from(Sha1::digest(vec![0u8; piece as usize]));
    let count = size.div_ceil(piece);
    let mut pieces = Vec::with_capacity(count as usize * 20);
    for i in 0..count {
        let len = (size - i * piece).min(piece);
        if len == piece {
            pieces.extend_from_slice(&full);
        } else {
            pieces.extend_from_slice(&Sha1::digest(vec![0u8; len as usize]));
        }
    }
    let nt = NewTorrent {
        name: "sim".into(),
        length: size,
        piece_length: piece,
        pieces,
        ..Default::default()
    };
    Arc::new(Metainfo::from_bytes(&nt.to_bytes()).expect("a valid torrent"))
}

impl Swarm {
    pub fn new(p: Params) -> Swarm {
        let meta = torrent(p.size, p.piece);
        let pieces = meta.piece_count() as usize;
        let blocks_per_piece = p.piece.div_ceil(BLOCK_LEN as u64) as usize;
        let mut rng = Rng::new(p.seed);
        let n = p.peers + 1;
        let mut caps = Vec::with_capacity(2 * n);
        let mut nodes = Vec::with_capacity(n);
        let mut by_addr = HashMap::new();
        for i in 0..n {
            let up = if i == 0 { p.seed_up } else { p.up_of(i) };
            caps.push(payload(up, p.overhead));
            caps.push(payload(p.down, p.overhead));
            let rtt = if i == 0 {
                p.rtt_ms[0]
            } else {
                p.rtt_ms[(i - 1) % p.rtt_ms.len()]
            };
            let addr = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 6881));
            by_addr.insert(addr, i);
            nodes.push(Node {
                core: None,
                gen: 0,
                addr,
                id: [0; 20],
                have: if i == 0 {
                    Bitfield::full(pieces)
                } else {
                    Bitfield::new(pieces)
                },
                conns: BTreeMap::new(),
                seeder: i == 0,
                super_seeding: false,
                delay: rtt / 4000.0,
                loss: p.loss,
                incoming: None,
                verified: vec![0; pieces],
                got: vec![false; pieces * blocks_per_piece],
                uploaded: 0,
                downloaded: 0,
                started: None,
                done_at: None,
                next_announce: 0.0,
            });
        }
        let tick_steps = ((0.1 / p.dt).round() as u64).max(1);
        let mut s = Swarm {
            layout: Layout::from_metainfo(&meta),
            meta,
            zeros: Bytes::from(vec![0u8; BLOCK_LEN as usize]),
            base: Instant::now(),
            nodes,
            conns: Vec::new(),
            by_addr,
            net: Net::new(caps),
            cal: Calendar::new(),
            avail: vec![0; pieces],
            seeder_present: false,
            tick_groups: vec![Vec::new(); tick_steps as usize],
            tick_steps,
            report: Report {
                n: p.peers,
                t_star: p.t_star(),
                min_all_with_seeder: u32::MAX,
                ..Default::default()
            },
            events: 0,
            done: 0,
            first_start: None,
            trace: std::env::var_os("SIM_TRACE").is_some(),
            pieces,
            blocks_per_piece,
            rng: Rng::new(rng.next()),
            p,
        };
        s.schedule_joins(&mut rng);
        s
    }

    fn schedule_joins(&mut self, rng: &mut Rng) {
        // The seeder first, as in the harness.
        self.cal.at(0, Ev::Join(0));
        for i in 1..=self.p.peers {
            let at = match self.p.join {
                Join::All => 0.0,
                Join::Flash(w) => rng.unit() * w,
                Join::Staggered(s) => (i - 1) as f64 * s,
            };
            let step = self.step_of(at) + 1;
            self.cal.at(step, Ev::Join(i));
        }
        if self.p.churn > 0 {
            let at = self.p.churn_at.unwrap_or(self.report.t_star / 2.0);
            let back = at + self.p.churn_down;
            for i in self.p.peers + 1 - self.p.churn.min(self.p.peers)..=self.p.peers {
                let (a, b) = (self.step_of(at), self.step_of(back));
                self.cal.at(a, Ev::Kill(i));
                self.cal.at(b, Ev::Restart(i));
            }
        }
    }

    fn step_of(&self, secs: f64) -> u64 {
        (secs / self.p.dt).round().max(0.0) as u64
    }

    fn now_secs(&self) -> f64 {
        self.cal.now as f64 * self.p.dt
    }

    fn instant(&self) -> Instant {
        self.base + Duration::from_secs_f64(self.now_secs())
    }

    /// Steps a message from node `a` to node `b` takes: the path's delay,
    /// and the queue of a full uplink at `a` (and full downlink at `b`).
    fn delay(&self, a: usize, b: usize) -> u64 {
        let mut secs = self.nodes[a].delay + self.nodes[b].delay;
        if self.net.saturated(2 * a) {
            secs += self.p.queue_ms / 1000.0;
        }
        if self.net.saturated(2 * b + 1) {
            secs += self.p.queue_ms / 1000.0;
        }
        // At least a step: a message never arrives in the step it left.
        self.cal.now + ((secs / self.p.dt).round() as u64).max(1)
    }

    /// Starts node `i`'s core (a join or a restart) with what it has.
    fn start(&mut self, i: usize) {
        let now = self.instant();
        let t = self.now_secs();
        let leecher = !self.nodes[i].seeder;
        let p = &self.p;
        let node = &mut self.nodes[i];
        node.gen += 1;
        let gen = node.gen;
        node.id = [0; 20];
        node.id[..8].copy_from_slice(&(i as u64).to_be_bytes());
        node.id[8..12].copy_from_slice(&gen.to_be_bytes());
        let options = Options {
            max_peers: p.max_peers,
            keep_seeding: !leecher || p.linger,
            seed_ratio: (!leecher && p.seed_leaves).then_some(1.0),
            super_seed: !leecher && p.super_seed,
            free_ride: leecher && i <= p.free_riders,
            pex: true,
            web_seeds: false,
            ..Options::default()
        };
        node.super_seeding = options.super_seed;
        let cfg = Config {
            options,
            peer_id: node.id,
            listen_port: 6881,
            seed: p
                .seed
                .wrapping_mul(1_000_003)
                .wrapping_add(i as u64 * 7919 + gen as u64),
            hash_jobs: 2,
            connections: Arc::new(ConnectionCap::new(None)),
            // The simulated swarm has no NATs: every host is dialled.
            holepunch: false,
        };
        node.core = Some(Core::new(now, self.meta.clone(), &node.have, cfg));
        node.started.get_or_insert(t);
        node.next_announce = t;
        if leecher {
            self.first_start.get_or_insert(t);
            for pc in node.have.iter_ones() {
                self.avail[pc] += 1;
            }
        } else {
            self.seeder_present = true;
        }
        let phase = (i as u64 * 7) % self.tick_steps;
        self.tick_groups[phase as usize].push(i);
        self.announce(i);
        self.carry(i);
    }

    /// The tracker's answer: up to `numwant` random others that are up.
    fn announce(&mut self, i: usize) {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&j| j != i && self.nodes[j].core.is_some())
            .collect();
        let mut pick = up;
        let want = self.p.numwant.min(pick.len());
        for k in 0..want {
            let j = k + self.rng.below(pick.len() - k);
            pick.swap(k, j);
        }
        let addrs = pick[..want].iter().map(|&j| self.nodes[j].addr).collect();
        self.nodes[i].next_announce = self.now_secs() + self.p.announce_every;
        self.input(i, Input::Peers(PeerSource::Tracker, addrs));
    }

    /// Node `i` goes away (done, or killed): its connections close, the
    /// others hear of it after their path's delay.
    fn leave(&mut self, i: usize) {
        let Some(_) = self.nodes[i].core.take() else {
            return;
        };
        if self.nodes[i].seeder {
            self.seeder_present = false;
        } else {
            for pc in self.nodes[i].have.iter_ones() {
                self.avail[pc] -= 1;
            }
        }
        for g in self.tick_groups.iter_mut() {
            g.retain(|&n| n != i);
        }
        self.nodes[i].incoming = None;
        let conns: Vec<usize> = std::mem::take(&mut self.nodes[i].conns)
            .into_values()
            .collect();
        for c in conns {
            self.close(c, "peer closed the connection");
        }
    }

    /// Ends connection `c`: both flows stop, each end still up hears
    /// `Gone` (at once for a closing core, after the delay for the other).
    fn close(&mut self, c: usize, why: &str) {
        if self.conns[c].closed {
            return;
        }
        if self.trace {
            let e = self.conns[c].ends;
            eprintln!(
                "{:.3} close {}:{} {}:{} {why}",
                self.now_secs(),
                e[0].0,
                e[0].2,
                e[1].0,
                e[1].2
            );
        }
        let conn = &mut self.conns[c];
        conn.closed = true;
        conn.open = false;
        let ends = conn.ends;
        for d in 0..2 {
            let dir = &mut self.conns[c].dirs[d];
            dir.queue.clear();
            let f = dir.flow;
            self.net.deactivate(f);
        }
        for (node, gen, key) in ends {
            if key == 0 || self.nodes[node].gen != gen || self.nodes[node].core.is_none() {
                continue;
            }
            if self.nodes[node].conns.remove(&key).is_some() {
                let other = if node == ends[0].0 {
                    ends[1].0
                } else {
                    ends[0].0
                };
                let at = self.delay(other, node);
                let gone = Input::Peer(key, PeerEvent::Gone(why.into()));
                self.cal.at(at, Ev::Input(node, gen, gone));
            }
        }
    }

    fn input(&mut self, i: usize, input: Input) {
        let now = self.instant();
        let Some(core) = self.nodes[i].core.as_mut() else {
            return;
        };
        core.handle(now, input);
        self.carry(i);
    }

    /// Carries out node `i`'s actions, as its task and peer tasks would.
    fn carry(&mut self, i: usize) {
        let mut actions = Vec::new();
        loop {
            let Some(core) = self.nodes[i].core.as_mut() else {
                return;
            };
            actions.extend(std::iter::from_fn(|| core.poll_action()));
            if actions.is_empty() {
                return;
            }
            for a in actions.drain(..) {
                self.act(i, a);
            }
        }
    }

    fn act(&mut self, i: usize, a: Action) {
        match a {
            Action::Connect { key, addr, .. } => self.dial(i, key, addr),
            Action::Accept { key, .. } => self.accepted(i, key),
            Action::Send(key, cmd) => self.command(i, key, cmd),
            Action::Verify(jobs) => {
                let gen = self.nodes[i].gen;
                let done: Vec<Verified> = jobs.into_iter().map(|j| self.verify(j)).collect();
                for v in done.iter().filter(|v| v.ok) {
                    self.nodes[i].verified[v.piece as usize] += 1;
                }
                let at = self.cal.now + 1;
                self.cal.at(at, Ev::Input(i, gen, Input::Verified(done)));
            }
            Action::Have(p) => {
                if self.nodes[i].have.set(p as usize) && !self.nodes[i].seeder {
                    self.avail[p as usize] += 1;
                }
            }
            Action::Complete => {
                if !self.nodes[i].seeder && self.nodes[i].done_at.is_none() {
                    self.nodes[i].done_at = Some(self.now_secs());
                    self.done += 1;
                }
            }
            Action::SuperSeedOver => self.nodes[i].super_seeding = false,
            Action::Finished(_) => self.leave(i),
            Action::Failed(e) => panic!("node {i}: {e}"),
            Action::HaveBytes(_)
            | Action::Publish
            | Action::Recheck(_)
            | Action::StartWebSeed { .. }
            | Action::ResetWebSeed(_) => {}
        }
    }

    fn verify(&self, job: shoal::torrent::PieceJob) -> Verified {
        if self.p.verify {
            return job.run(&self.layout, |_, _| Ok(()));
        }
        Verified {
            piece: job.piece,
            ok: true,
            write: Ok(()),
            block_hashes: Vec::new(),
            leaves: Vec::new(),
            pad_bad: Vec::new(),
            senders: job.senders,
            data: job.data,
        }
    }

    /// Node `i` dials `addr` under `key`.
    fn dial(&mut self, i: usize, key: PeerKey, addr: SocketAddr) {
        let gen = self.nodes[i].gen;
        let target = self.by_addr.get(&addr).copied();
        let Some(t) = target.filter(|&t| self.nodes[t].core.is_some()) else {
            let at = self.cal.now + self.step_of(2.0 * self.nodes[i].delay).max(1);
            let gone = PeerEvent::Gone("connect: Connection refused (os error 111)".into());
            self.cal.at(at, Ev::Input(i, gen, Input::Peer(key, gone)));
            return;
        };
        let c = self.conns.len();
        let mut dirs = Vec::with_capacity(2);
        for (from, to) in [(i, t), (t, i)] {
            let loss = 1.0 - (1.0 - self.nodes[from].loss) * (1.0 - self.nodes[to].loss);
            let rtt = 2.0 * (self.nodes[from].delay + self.nodes[to].delay);
            let cap = if loss > 0.0 {
                // Mathis et al.: MSS / RTT · sqrt(3 / 2p).
                1448.0 / rtt.max(0.001) * (1.5 / loss).sqrt()
            } else {
                f64::INFINITY
            };
            let flow = self.net.add_flow(2 * from, 2 * to + 1, cap);
            dirs.push(Dir {
                queue: VecDeque::new(),
                sent: 0.0,
                choking: true,
                flow,
                bytes_sent: 0,
                bytes_received: 0,
            });
        }
        let d1 = dirs.pop().expect("two");
        let d0 = dirs.pop().expect("two");
        self.conns.push(Conn {
            ends: [(i, gen, key), (t, self.nodes[t].gen, 0)],
            open: false,
            closed: false,
            dirs: [d0, d1],
        });
        self.nodes[i].conns.insert(key, c);
        let at = self.delay(i, t);
        self.cal.at(at, Ev::Dial(c));
    }

    /// A dial reaches its target: its core accepts it or not.
    fn on_dial(&mut self, c: usize) {
        let (dialer, dgen, _) = self.conns[c].ends[0];
        let (t, tgen, _) = self.conns[c].ends[1];
        if self.conns[c].closed || self.nodes[dialer].gen != dgen {
            self.conns[c].closed = true;
            return;
        }
        if self.nodes[t].core.is_none() || self.nodes[t].gen != tgen {
            self.close(c, "connect: Connection refused (os error 111)");
            return;
        }
        self.nodes[t].incoming = Some(c);
        let (addr, peer_id) = (self.nodes[dialer].addr, self.nodes[dialer].id);
        self.input(t, Input::Incoming { addr, peer_id });
        if self.nodes[t].incoming.take().is_some() {
            // Not taken: the dialer sees the connection closed.
            self.close(c, "peer closed the connection");
        }
    }

    /// Node `i`'s core took the incoming connection under `key`: both
    /// sides hear of each other, their bitfields and extensions.
    fn accepted(&mut self, i: usize, key: PeerKey) {
        let Some(c) = self.nodes[i].incoming.take() else {
            let gen = self.nodes[i].gen;
            let gone = PeerEvent::Gone("connection lost before it was taken".into());
            let at = self.cal.now;
            self.cal.at(at, Ev::Input(i, gen, Input::Peer(key, gone)));
            return;
        };
        self.conns[c].ends[1].2 = key;
        self.conns[c].open = true;
        self.nodes[i].conns.insert(key, c);
        let (a, b) = (self.conns[c].ends[0].0, i);
        for (side, incoming) in [(1usize, true), (0usize, false)] {
            let other = if side == 1 { a } else { b };
            let at = if side == 1 {
                self.cal.now
            } else {
                self.delay(b, a)
            };
            let o = &self.nodes[other];
            let evs = [
                PeerEvent::Connected {
                    addr: o.addr,
                    peer_id: o.id,
                    fast: true,
                    v2: false,
                    incoming,
                    transport: shoal::peer::transport::Transport::Tcp,
                },
                PeerEvent::Extended {
                    reqq: Some(500),
                    listen_port: Some(6881),
                    client: Some("shoal".into()),
                    pex: true,
                    holepunch: false,
                },
                if o.super_seeding || o.have.none() {
                    PeerEvent::HaveNone
                } else if o.have.is_full() {
                    PeerEvent::HaveAll
                } else {
                    PeerEvent::Bitfield(o.have.clone())
                },
            ];
            for ev in evs {
                self.cal.at(at, Ev::Peer(c, side, ev));
            }
        }
    }

    /// A command of node `i`'s core for its connection `key`.
    fn command(&mut self, i: usize, key: PeerKey, cmd: PeerCmd) {
        if self.trace
            && !matches!(
                cmd,
                PeerCmd::Haves(_) | PeerCmd::Request(_) | PeerCmd::Cancel(_)
            )
        {
            let t = format!("{cmd:?}");
            eprintln!(
                "{:.3} {i} -> {key}: {}",
                self.now_secs(),
                &t[..t.len().min(60)]
            );
        }
        let Some(&c) = self.nodes[i].conns.get(&key) else {
            return;
        };
        let side = if self.conns[c].ends[0].0 == i { 0 } else { 1 };
        let other = self.conns[c].ends[1 - side].0;
        if let PeerCmd::Close(why) = cmd {
            self.close(c, &format!("closed by torrent: {why}"));
            return;
        }
        if !self.conns[c].open {
            return;
        }
        let at = self.delay(i, other);
        let to = 1 - side;
        let ev = match cmd {
            PeerCmd::Request(blocks) => Ev::Requests(c, to, blocks),
            PeerCmd::Cancel(b) => Ev::Cancel(c, to, b),
            PeerCmd::Haves(ps) => Ev::Haves(c, to, ps),
            PeerCmd::Choke | PeerCmd::Unchoke => {
                let choke = matches!(cmd, PeerCmd::Choke);
                let dir = &mut self.conns[c].dirs[side];
                dir.choking = choke;
                if choke {
                    // Its task drops what it had not sent yet.
                    dir.queue.clear();
                    dir.sent = 0.0;
                    let f = dir.flow;
                    self.net.deactivate(f);
                }
                let ev = if choke {
                    PeerEvent::Choked
                } else {
                    PeerEvent::Unchoked
                };
                Ev::Peer(c, to, ev)
            }
            PeerCmd::Interested(yes) => Ev::Peer(c, to, PeerEvent::Interested(yes)),
            PeerCmd::Pex(bytes) => {
                let Some(m) = pex::Message::decode(&bytes) else {
                    return;
                };
                Ev::Peer(c, to, PeerEvent::Pex(m.added))
            }
            // No NATs in the model: nothing to punch.
            PeerCmd::HashRequest(_) | PeerCmd::Close(_) | PeerCmd::Holepunch(_) => return,
        };
        self.cal.at(at, ev);
    }

    /// Requests reach the sender of direction `dir` of `c`: queued to be
    /// sent, or refused (it chokes, or lacks the piece).
    fn on_requests(&mut self, c: usize, d: usize, blocks: Vec<BlockRef>) {
        if !self.conns[c].open {
            return;
        }
        let sender = self.conns[c].ends[d].0;
        let receiver = self.conns[c].ends[1 - d].0;
        let mut refused = Vec::new();
        for b in blocks {
            let dir = &self.conns[c].dirs[d];
            if dir.choking || !self.nodes[sender].have.get(b.index as usize) {
                refused.push(b);
            } else {
                self.conns[c].dirs[d].queue.push_back(b);
            }
        }
        let dir = &self.conns[c].dirs[d];
        if !dir.queue.is_empty() {
            let f = dir.flow;
            self.net.activate(f);
        }
        if !refused.is_empty() {
            let at = self.delay(sender, receiver);
            for b in refused {
                self.cal.at(at, Ev::Peer(c, 1 - d, PeerEvent::Rejected(b)));
            }
        }
    }

    fn on_cancel(&mut self, c: usize, d: usize, b: BlockRef) {
        let dir = &mut self.conns[c].dirs[d];
        // The head is on the wire already.
        if let Some(pos) = dir.queue.iter().skip(1).position(|x| *x == b) {
            dir.queue.remove(pos + 1);
        }
    }

    /// A block arrives at the receiver of direction `d` of `c`.
    fn on_block(&mut self, c: usize, d: usize, b: BlockRef) {
        if !self.conns[c].open {
            return;
        }
        let r = self.conns[c].ends[1 - d].0;
        let len = b.length as u64;
        self.conns[c].dirs[d].bytes_received += len;
        let node = &mut self.nodes[r];
        node.downloaded += len;
        self.report.bytes += len;
        let k = b.index as usize * self.blocks_per_piece + (b.begin / BLOCK_LEN) as usize;
        if std::mem::replace(&mut node.got[k], true) {
            self.report.dup_bytes += len;
        }
        let data = self.zeros.slice(..b.length as usize);
        self.deliver(c, 1 - d, PeerEvent::Block { block: b, data });
    }

    /// An event for the core at `side` of `c`, if the connection is open.
    fn deliver(&mut self, c: usize, side: usize, ev: PeerEvent) {
        let conn = &self.conns[c];
        if !conn.open {
            return;
        }
        let (node, gen, key) = conn.ends[side];
        if self.nodes[node].gen != gen {
            return;
        }
        if self.trace
            && !matches!(
                ev,
                PeerEvent::Block { .. } | PeerEvent::Have(_) | PeerEvent::Rejected(_)
            )
        {
            let t = format!("{ev:?}");
            eprintln!(
                "{:.3} {node} <- {key}: {}",
                self.now_secs(),
                &t[..t.len().min(60)]
            );
        }
        self.input(node, Input::Peer(key, ev));
    }

    fn handle(&mut self, ev: Ev) {
        self.events += 1;
        match ev {
            Ev::Dial(c) => self.on_dial(c),
            Ev::Peer(c, side, ev) => self.deliver(c, side, ev),
            Ev::Haves(c, side, ps) => {
                for p in ps {
                    self.deliver(c, side, PeerEvent::Have(p));
                }
            }
            Ev::Requests(c, d, blocks) => self.on_requests(c, d, blocks),
            Ev::Cancel(c, d, b) => self.on_cancel(c, d, b),
            Ev::Block(c, d, b) => self.on_block(c, d, b),
            Ev::Input(i, gen, input) => {
                if self.nodes[i].gen == gen {
                    self.input(i, input);
                }
            }
            Ev::Join(i) | Ev::Restart(i) => self.start(i),
            Ev::Kill(i) => self.leave(i),
        }
    }

    /// Moves the data of every active flow on by one step; blocks whose
    /// last byte went out arrive after the path's delay.
    fn advance_flows(&mut self) {
        self.net.update_rates();
        let dt = self.p.dt;
        let active: Vec<usize> = self.net.active.clone();
        for f in active {
            let rate = self.net.flows[f].rate;
            // Flows are made two per connection, in order.
            let (c, d) = (f / 2, f % 2);
            let (sender, receiver) = (self.conns[c].ends[d].0, self.conns[c].ends[1 - d].0);
            let at = self.cal.now
                + 1
                + self.step_of(self.nodes[sender].delay + self.nodes[receiver].delay);
            let dir = &mut self.conns[c].dirs[d];
            dir.sent += rate * dt;
            let mut done = Vec::new();
            while let Some(&b) = dir.queue.front() {
                if dir.sent < b.length as f64 {
                    break;
                }
                dir.sent -= b.length as f64;
                dir.queue.pop_front();
                dir.bytes_sent += b.length as u64;
                done.push(b);
            }
            if dir.queue.is_empty() {
                dir.sent = 0.0;
                self.net.deactivate(f);
            }
            let sent: u64 = done.iter().map(|b| b.length as u64).sum();
            self.nodes[sender].uploaded += sent;
            for b in done {
                self.cal.at(at, Ev::Block(c, d, b));
            }
        }
    }

    /// The byte counters and the 100 ms tick of the nodes whose turn it is.
    fn tick_nodes(&mut self) {
        let group = (self.cal.now % self.tick_steps) as usize;
        let nodes = self.tick_groups[group].clone();
        let now = self.instant();
        let t = self.now_secs();
        for i in nodes {
            let node = &self.nodes[i];
            let sources = node
                .conns
                .iter()
                .map(|(&k, &c)| {
                    let side = if self.conns[c].ends[0].0 == i { 0 } else { 1 };
                    let dirs = &self.conns[c].dirs;
                    (k, dirs[1 - side].bytes_received, dirs[side].bytes_sent)
                })
                .collect();
            let traffic = Traffic {
                downloaded: node.downloaded,
                uploaded: node.uploaded,
                sources,
            };
            let announce = !node.seeder && t >= node.next_announce;
            if let Some(core) = self.nodes[i].core.as_mut() {
                core.handle(now, Input::Traffic(traffic));
                core.tick(now);
            }
            self.carry(i);
            if announce && self.nodes[i].core.is_some() {
                self.announce(i);
            }
        }
    }

    fn sample(&mut self) {
        let t = self.now_secs();
        let leechers = (1..self.nodes.len())
            .filter(|&i| self.nodes[i].core.is_some())
            .count();
        let min_leechers = self.avail.iter().copied().min().unwrap_or(0);
        let min_all = min_leechers + u32::from(self.seeder_present);
        if self.seeder_present {
            self.report.min_all_with_seeder = self.report.min_all_with_seeder.min(min_all);
        }
        let sum: u64 = self.avail.iter().map(|&a| a as u64).sum();
        let exist = self.avail.iter().filter(|&&a| a > 0).count();
        if exist == self.pieces && self.report.seed_up_at_all.is_none() {
            let f = self.p.size as f64;
            self.report.seed_up_at_all = Some((self.nodes[0].uploaded as f64 / f, t));
        }
        self.report.samples.push(Sample {
            t,
            min_leechers,
            min_all,
            mean: sum as f64 / self.pieces as f64,
            exist: exist as f64 / self.pieces as f64,
            leechers,
            done: self.nodes[1..]
                .iter()
                .filter(|n| n.done_at.is_some())
                .count(),
        });
    }

    /// No core is running (and nothing is due): nothing can happen.
    fn idle(&self) -> bool {
        self.nodes.iter().all(|n| n.core.is_none())
    }

    fn all_done(&self) -> bool {
        self.done == self.p.peers
    }

    /// Handles the events due at the present step, and those they cause
    /// at it.
    fn run_due(&mut self, due: &mut Vec<Ev>) {
        loop {
            self.cal.take_now(due);
            if due.is_empty() {
                return;
            }
            for ev in due.drain(..) {
                self.handle(ev);
            }
        }
    }

    /// Runs to the end (every leecher done, or the timeout); the report.
    pub fn run(mut self) -> Report {
        let timeout = if self.p.timeout > 0.0 {
            self.p.timeout
        } else {
            60.0 + 10.0 * self.report.t_star
        };
        let last = self.step_of(timeout);
        let sample_steps = self.step_of(self.p.sample_every).max(1);
        let mut due = Vec::new();
        let debug = std::env::var_os("SIM_DEBUG").is_some();
        while self.cal.now <= last {
            self.run_due(&mut due);
            self.tick_nodes();
            // What the ticks sent with no delay is due now too.
            self.run_due(&mut due);
            if debug && self.cal.now.is_multiple_of(200) {
                let done = self.nodes[1..]
                    .iter()
                    .filter(|n| n.done_at.is_some())
                    .count();
                let have: usize = self.nodes[1..].iter().map(|n| n.have.count_ones()).sum();
                eprintln!(
                    "t={:.1}s open={} unchoked={} events={} active flows={} done={done} pieces={have}",
                    self.now_secs(),
                    self.conns.iter().filter(|c| c.open).count(),
                    self.conns.iter().filter(|c| c.open).map(|c| c.dirs.iter().filter(|d| !d.choking).count()).sum::<usize>(),
                    self.events,
                    self.net.active.len()
                );
            }
            if self.cal.now.is_multiple_of(sample_steps) {
                self.sample();
            }
            // Checked after the step's events, so a departure is seen.
            if self.all_done() || (self.cal.pending == 0 && self.idle()) {
                self.sample();
                break;
            }
            self.advance_flows();
            self.cal.advance();
        }
        self.finish()
    }

    fn finish(mut self) -> Report {
        let mut r = std::mem::take(&mut self.report);
        let start = self.first_start.unwrap_or(0.0);
        let leechers = &self.nodes[1..];
        r.done = leechers.iter().filter(|n| n.done_at.is_some()).count();
        r.times = leechers
            .iter()
            .filter_map(|n| Some(n.done_at? - n.started?))
            .collect();
        if r.done == leechers.len() {
            r.t = leechers
                .iter()
                .filter_map(|n| n.done_at)
                .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))))
                .map(|end| end - start);
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            (!v.is_empty()).then(|| v[v.len() / 2])
        };
        let k = self.p.free_riders;
        let time = |n: &Node| Some(n.done_at? - n.started?);
        r.free_rider_median = median(leechers[..k].iter().filter_map(time).collect());
        r.contributor_median = median(leechers[k..].iter().filter_map(time).collect());
        r.pieces_twice = self
            .nodes
            .iter()
            .map(|n| n.verified.iter().filter(|&&v| v > 1).count())
            .sum();
        r.verified = leechers
            .iter()
            .map(|n| n.verified.iter().filter(|&&v| v > 0).count())
            .collect();
        r.pieces = self.pieces;
        r.seed_uploaded = self.nodes[0].uploaded as f64 / self.p.size as f64;
        r.events = self.events;
        r.steps = self.cal.now;
        r.recomputes = self.net.recomputes;
        r
    }
}
