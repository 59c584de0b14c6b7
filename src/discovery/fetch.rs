//! The magnet phase: finds peers (the magnet's `x.pe`, `--peer`, its
//! trackers, the DHT), fetches the info dictionary from them with BEP 9, and checks
//! it against the info-hash. What comes out is an ordinary torrent, which
//! then downloads like any other.
//!
//! Each peer fetches a whole copy into its own assembler, a few peers at
//! once: the first copy that hashes right wins, and a copy that does not
//! hash right convicts exactly the peer that sent it, which is dropped and
//! never asked again (pooling pieces from several peers would leave a bad
//! copy's culprit unknown). Metadata is small, so the duplicate bytes cost
//! little.

mod plan;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use thiserror::Error;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};
use tokio::time::{timeout_at, Instant};

use crate::discovery::tracker::{self, AnnounceRequest, TrackerList};
use crate::metainfo::magnet::Magnet;
use crate::peer::metadata::{self, Assembler, InfoCheck, Msg};
use crate::peer::mse::Policy;
use crate::peer::wire::{self, ExtendedHandshake, Message};
use crate::torrent::PeerSource;
use plan::{Failure, Plan, Verdict};

/// Requests in flight per peer.
const WINDOW: usize = 4;
/// A peer must send its extended handshake, and then each metadata piece,
/// within this long of the last one, or it is given up on. Only those
/// count: keep-alives and other messages do not move the deadline.
const STEP_WAIT: Duration = Duration::from_secs(10);
/// Messages we accept before the metadata: a bitfield for up to 8 M pieces.
const MAX_MESSAGE: u32 = (1 << 20) + 64;

#[derive(Debug, Error)]
pub enum FetchError {
    #[error("no peer has the metadata (tried {tried}: {last})")]
    Exhausted { tried: usize, last: String },
    #[error("interrupted while fetching metadata")]
    Interrupted,
}

#[derive(Debug, Error)]
enum PeerFail {
    #[error("connect: {0}")]
    Connect(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Peer(#[from] crate::peer::PeerError),
    #[error("{0}")]
    Wire(#[from] wire::WireError),
    #[error("handshake for another torrent")]
    WrongInfoHash,
    #[error("does not support metadata exchange (BEP 9)")]
    NoMetadata,
    #[error("{0}")]
    Metadata(#[from] metadata::MetadataError),
    #[error("rejected metadata piece {0}")]
    Rejected(u32),
    #[error("no {0} within {}s", STEP_WAIT.as_secs())]
    Stalled(&'static str),
    #[error("closed the connection")]
    Eof,
}

impl PeerFail {
    fn failure(&self) -> Failure {
        match self {
            // It sent something false or broken (a bad extended handshake
            // is a `Wire` error): it is not asked again.
            PeerFail::Metadata(_) | PeerFail::Wire(_) | PeerFail::WrongInfoHash => Failure::Lie,
            PeerFail::Stalled(_) => Failure::Stalled,
            _ => Failure::Transient,
        }
    }
}

/// What the magnet phase reports while it runs.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// Peers known so far, and being talked to now.
    pub known: usize,
    pub connected: usize,
    /// Bytes of metadata pieces received so far, from all peers (what
    /// `--stall-timeout` watches).
    pub received: u64,
    /// The size of the info dictionary, once a peer said it.
    pub size: Option<u64>,
    /// The last thing that went wrong (a peer's or tracker's failure).
    pub last_error: Option<String>,
}

/// A peer's fetch got somewhere: its handshake came (0 bytes) or a
/// metadata piece of this many bytes.
type Progress = (SocketAddr, usize);

/// What a source of peers says.
enum Found {
    Peers(PeerSource, Vec<SocketAddr>),
    /// It failed, as one line for the status ("tracker H: connection
    /// refused, retry in 5s").
    Trouble(String),
}

/// How the metadata phase dials peers: as whom, encrypted how, over what.
pub struct Dialling {
    pub peer_id: [u8; 20],
    pub encryption: Policy,
    pub net: std::sync::Arc<crate::peer::transport::Net>,
}

/// Fetches and verifies the info dictionary of `magnet`. `extra` are peers
/// given on the command line. Returns the info bytes and every peer
/// address learned, with where it came from (for the download to start
/// from).
pub async fn fetch(
    magnet: &Magnet,
    extra: &[SocketAddr],
    dht: Option<&crate::discovery::dht::Dht>,
    how: Dialling,
    status: watch::Sender<Status>,
    mut stop: watch::Receiver<bool>,
) -> Result<(Vec<u8>, Vec<(SocketAddr, PeerSource)>), FetchError> {
    let Dialling {
        peer_id,
        encryption,
        net,
    } = how;
    let info_hash = magnet.info_hash.0;
    let check = match magnet.info_hash_v2 {
        Some(v2) if !magnet.has_v1 => InfoCheck::V2(v2),
        _ => InfoCheck::V1(info_hash),
    };
    // Every hash the magnet names (a hybrid's v1 and cut v2): a peer may
    // answer under either.
    let mut hashes = vec![info_hash];
    hashes.extend(magnet.info_hash_v2.map(|v2| {
        let mut short = [0u8; 20];
        short.copy_from_slice(&v2[..20]);
        short
    }));
    hashes.dedup();
    let (mut found_rx, sources) = start_sources(magnet, extra, dht, peer_id).await;
    let (progress_tx, mut progress_rx) = mpsc::unbounded_channel::<Progress>();
    let peer = Dial {
        hashes: hashes.into(),
        check,
        peer_id,
        encryption,
        net,
        progress: progress_tx,
    };
    let mut plan = Plan::default();
    let mut known: Vec<(SocketAddr, PeerSource)> = Vec::new();
    let mut running = tokio::task::JoinSet::new();
    let mut tasks: HashMap<tokio::task::Id, SocketAddr> = HashMap::new();
    let mut tried = 0usize;
    let mut last = String::from("no peers found");
    let mut sources_open = true;
    let result = loop {
        let now = Instant::now();
        while let Some(addr) = plan.next(now.into_std()) {
            tried += 1;
            tasks.insert(running.spawn(from_peer(addr, peer.clone())).id(), addr);
        }
        status.send_modify(|s| {
            s.known = known.len();
            s.connected = plan.running();
        });
        if plan.is_idle() && !sources_open {
            break Err(FetchError::Exhausted {
                tried,
                last: last.clone(),
            });
        }
        let wake = plan.wake_at(now.into_std()).map(Instant::from_std);
        tokio::select! {
            got = found_rx.recv(), if sources_open => match got {
                Some(Found::Trouble(why)) => {
                    last.clone_from(&why);
                    status.send_modify(|s| s.last_error = Some(why));
                }
                Some(Found::Peers(source, addrs)) => learn(&mut plan, &mut known, source, addrs),
                // Trackers gave up and every fixed source was read: only
                // the peers already learned are left.
                None => sources_open = false,
            },
            Some((addr, bytes)) = progress_rx.recv() => {
                plan.progress(addr, Instant::now().into_std());
                status.send_modify(|s| s.received += bytes as u64);
            }
            Some(done) = running.join_next_with_id(), if !running.is_empty() => match done {
                Ok((_, Ok(info))) => break Ok(info),
                Ok((id, Err(e))) => {
                    if let Some(addr) = tasks.remove(&id) {
                        let line;
                        (last, line) = judge(&mut plan, addr, &e);
                        status.send_modify(|s| s.last_error = Some(line));
                    }
                }
                Err(e) => {
                    if let Some(addr) = tasks.remove(&e.id()) {
                        plan.ended(addr);
                    }
                    last = e.to_string();
                }
            },
            _ = tokio::time::sleep_until(wake.unwrap_or(now)), if wake.is_some() => {}
            _ = stop.changed() => break Err(FetchError::Interrupted),
        }
    };
    running.abort_all();
    for t in sources {
        t.abort();
    }
    let info = result?;
    status.send_modify(|s| s.size = Some(info.len() as u64));
    Ok((info, known))
}

/// Takes the addresses a source found into the plan; new ones are known
/// from then on, with where they came from.
fn learn(
    plan: &mut Plan,
    known: &mut Vec<(SocketAddr, PeerSource)>,
    source: PeerSource,
    addrs: Vec<SocketAddr>,
) {
    for a in addrs {
        let a = SocketAddr::new(a.ip().to_canonical(), a.port());
        if plan.learn(a) {
            known.push((a, source));
        }
    }
}

/// Logs a peer's failure with what becomes of it. Returns it as one line
/// in full (for the error if no peer serves) and in short, for the status
/// ("peer 10.0.0.2:6881: connection refused, retry in 2s").
fn judge(plan: &mut Plan, addr: SocketAddr, e: &PeerFail) -> (String, String) {
    let then = match plan.failed(addr, e.failure(), Instant::now().into_std()) {
        Verdict::Dropped => {
            tracing::warn!("{addr}: {e}; dropped");
            "dropped".to_string()
        }
        Verdict::RetryIn(wait) => {
            tracing::info!("{addr}: {e}; retry in {}s", wait.as_secs());
            format!("retry in {}s", wait.as_secs())
        }
        Verdict::GaveUp => {
            tracing::info!("{addr}: {e}; giving up on it");
            "given up".to_string()
        }
    };
    let why = match e {
        PeerFail::Connect(_) | PeerFail::Io(_) => crate::torrent::short_reason(&e.to_string()),
        _ => e.to_string(),
    };
    (
        format!("{addr}: {e}"),
        format!("peer {addr}: {why}, {then}"),
    )
}

/// Starts the sources of peer addresses: the magnet's trackers and the DHT
/// (tasks that run until aborted), and the fixed ones (the magnet's `x.pe`
/// and `extra`), sent at once. The channel closes when the tasks are gone
/// and the fixed ones were read.
async fn start_sources(
    magnet: &Magnet,
    extra: &[SocketAddr],
    dht: Option<&crate::discovery::dht::Dht>,
    peer_id: [u8; 20],
) -> (mpsc::Receiver<Found>, Vec<tokio::task::JoinHandle<()>>) {
    let info_hash = magnet.info_hash.0;
    let (found_tx, found_rx) = mpsc::channel::<Found>(16);
    let mut tasks = Vec::new();
    if !magnet.trackers.is_empty() {
        let trackers = TrackerList::new(
            None,
            magnet.trackers.iter().map(|t| vec![t.clone()]).collect(),
        );
        tasks.push(tokio::spawn(announce(
            trackers,
            info_hash,
            peer_id,
            found_tx.clone(),
        )));
    }
    if let Some(dht) = dht {
        let (dht, found) = (dht.clone(), found_tx.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let peers = dht.get_peers(info_hash).await;
                if found
                    .send(Found::Peers(PeerSource::Dht, peers))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(15)).await;
            }
        }));
    }
    let mut initial: Vec<SocketAddr> = magnet.peers.clone();
    initial.extend_from_slice(extra);
    for host in &magnet.peer_hosts {
        match tokio::net::lookup_host(host.as_str()).await {
            Ok(addrs) => initial.extend(addrs),
            Err(e) => tracing::warn!("magnet peer {host}: {e}"),
        }
    }
    let _ = found_tx
        .send(Found::Peers(PeerSource::Manual, initial))
        .await;
    (found_rx, tasks)
}

/// Asks the magnet's trackers for peers until the fetch ends: at once,
/// then on the tracker's interval (or sooner after a failure).
async fn announce(
    mut trackers: TrackerList,
    info_hash: [u8; 20],
    peer_id: [u8; 20],
    found: mpsc::Sender<Found>,
) {
    let mut failures = 0u32;
    loop {
        let req = AnnounceRequest {
            info_hash,
            peer_id,
            port: 0,
            uploaded: 0,
            downloaded: 0,
            // Unknown until the metadata is in; not 0, or we would pass
            // for a seed and be given no seeds.
            left: 1,
            event: tracker::Event::Started,
            numwant: 80,
            key: rand::random(),
            ip: None,
            ipv6: None,
        };
        let wait = match trackers.announce(&req).await {
            Ok((_, resp)) => {
                failures = 0;
                let peers = Found::Peers(PeerSource::Tracker, resp.peers);
                if found.send(peers).await.is_err() {
                    return;
                }
                // Sooner than the tracker's interval while we still lack
                // the metadata, but never under its floor.
                resp.interval
                    .min(Duration::from_secs(60))
                    .max(tracker::earliest_reannounce(resp.min_interval))
            }
            Err(e) => {
                failures += 1;
                // The status says it each time; the log once per tracker
                // until it answers (TrackerList::log_failures).
                tracing::debug!("tracker: {e}");
                let wait = tracker::retry_delay(failures).min(Duration::from_secs(30));
                let why = trackers.failure_summary().unwrap_or_else(|| {
                    format!("tracker: {}", crate::torrent::short_reason(&e.to_string()))
                });
                trackers.log_failures(wait);
                let line = format!("{why}, retry in {}", crate::units::human_eta(wait));
                if found.send(Found::Trouble(line)).await.is_err() {
                    return;
                }
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// What every peer's fetch is given.
#[derive(Clone)]
struct Dial {
    /// The magnet's hashes: the first is dialled with, and a peer may
    /// answer under any (a hybrid's v2 hash cut to 20 bytes: BEP 52).
    hashes: Arc<[[u8; 20]]>,
    check: InfoCheck,
    peer_id: [u8; 20],
    encryption: Policy,
    /// TCP, uTP: the session's, or the magnet phase's own.
    net: std::sync::Arc<crate::peer::transport::Net>,
    /// Told each time a peer gets somewhere.
    progress: mpsc::UnboundedSender<Progress>,
}

/// Fetches the whole info dictionary from one peer and checks its hash.
async fn from_peer(addr: SocketAddr, dial: Dial) -> Result<Vec<u8>, PeerFail> {
    use crate::peer::PeerError;
    let Dial {
        hashes,
        check,
        peer_id,
        encryption,
        net,
        progress,
    } = dial;
    let mut ours = wire::Handshake::new(hashes[0], peer_id);
    // The upgrade bit when the magnet names a v2 hash.
    if matches!(check, InfoCheck::V2(_)) || hashes.len() > 1 {
        ours.reserved[7] |= wire::V2_BIT;
    }
    let (mut stream, theirs) =
        match crate::peer::connect(&net, addr, ours, encryption, &hashes).await {
            Err(PeerError::ConnectTimeout) => return Err(PeerFail::Connect("timed out".into())),
            Err(PeerError::Connect(e)) => return Err(PeerFail::Connect(e.to_string())),
            Err(PeerError::WrongInfoHash) => return Err(PeerFail::WrongInfoHash),
            r => r?,
        };
    if !theirs.supports_extensions() {
        return Err(PeerFail::NoMetadata);
    }
    let _ = progress.send((addr, 0));
    let hs = ExtendedHandshake {
        m: [("ut_metadata".to_string(), metadata::UT_METADATA_ID)].into(),
        v: Some(format!("shoal {}", env!("CARGO_PKG_VERSION"))),
        ..Default::default()
    };
    let mut out = BytesMut::new();
    wire::encode(
        &Message::Extended {
            id: 0,
            payload: Bytes::from(hs.encode()),
        },
        &mut out,
    );
    stream.send(&out).await?;

    let mut x = Exchange::new(check);
    let mut buf = BytesMut::with_capacity(64 << 10);
    // Moved only by what `Exchange` counts as a step forward.
    let mut deadline = Instant::now() + STEP_WAIT;
    loop {
        let n = match timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Err(_) => return Err(PeerFail::Stalled(x.waiting_for())),
            Ok(r) => r?,
        };
        if n == 0 {
            return Err(PeerFail::Eof);
        }
        let mut out = BytesMut::new();
        while let Some(msg) = wire::decode(&mut buf, MAX_MESSAGE)? {
            match x.on_message(msg, &mut out)? {
                Step::Nothing => {}
                Step::Forward(bytes) => {
                    deadline = Instant::now() + STEP_WAIT;
                    let _ = progress.send((addr, bytes));
                }
                Step::Done(info) => return Ok(info),
            }
        }
        if !out.is_empty() {
            stream.send(&out).await?;
        }
    }
}

/// What one message of the exchange did.
enum Step {
    /// Not for this phase (bitfield, have, keep-alive …), or a request of
    /// theirs that we rejected.
    Nothing,
    /// The extended handshake (0) or a metadata piece (its length).
    Forward(usize),
    /// The whole dictionary, verified.
    Done(Vec<u8>),
}

/// The BEP 9 exchange with one peer once the handshakes are done: reads
/// its messages, writes our requests and answers. No I/O of its own.
struct Exchange {
    a: Assembler,
    /// The id the peer gave `ut_metadata` in its extended handshake.
    their_id: Option<u8>,
    in_flight: usize,
}

impl Exchange {
    fn new(check: InfoCheck) -> Exchange {
        Exchange {
            a: Assembler::with_check(check),
            their_id: None,
            in_flight: 0,
        }
    }

    /// What the peer owes us next, for the error when it does not come.
    fn waiting_for(&self) -> &'static str {
        if self.their_id.is_none() {
            "extended handshake"
        } else {
            "metadata piece"
        }
    }

    fn on_message(&mut self, msg: Message, out: &mut BytesMut) -> Result<Step, PeerFail> {
        let Message::Extended { id, payload } = msg else {
            return Ok(Step::Nothing);
        };
        let step = if id == 0 {
            // Not a dictionary: a broken or hostile peer (a `Wire` error,
            // which drops it for good).
            let h = ExtendedHandshake::decode(&payload)?;
            let id = h.m.get("ut_metadata").copied().filter(|i| *i != 0);
            let (Some(id), Some(size)) = (id, h.metadata_size) else {
                return Err(PeerFail::NoMetadata);
            };
            self.a.set_size(size)?;
            self.their_id = Some(id);
            Step::Forward(0)
        } else if id == metadata::UT_METADATA_ID {
            match Msg::decode(&payload)? {
                Msg::Data {
                    piece,
                    total_size,
                    data,
                } => {
                    self.in_flight = self.in_flight.saturating_sub(1);
                    let len = data.len();
                    match self.a.on_data(piece, total_size, data)? {
                        Some(info) => return Ok(Step::Done(info)),
                        None => Step::Forward(len),
                    }
                }
                Msg::Reject(piece) => return Err(PeerFail::Rejected(piece)),
                // It asks us; we have nothing to give yet.
                Msg::Request(piece) => {
                    self.send(Msg::Reject(piece), out);
                    Step::Nothing
                }
            }
        } else {
            Step::Nothing
        };
        while self.their_id.is_some() && self.in_flight < WINDOW {
            let Some(piece) = self.a.next_request() else {
                break;
            };
            self.in_flight += 1;
            self.send(Msg::Request(piece), out);
        }
        Ok(step)
    }

    fn send(&self, m: Msg, out: &mut BytesMut) {
        if let Some(their) = self.their_id {
            wire::encode(
                &Message::Extended {
                    id: their,
                    payload: Bytes::from(m.encode()),
                },
                out,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha1::{Digest, Sha1};

    fn ext(id: u8, payload: &[u8]) -> Message {
        Message::Extended {
            id,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    /// Requests written to `out`, by piece.
    fn requests(out: &mut BytesMut) -> Vec<u32> {
        let mut got = Vec::new();
        while let Ok(Some(Message::Extended { id: 7, payload })) = wire::decode(out, 1 << 20) {
            if let Ok(Msg::Request(p)) = Msg::decode(&payload) {
                got.push(p);
            }
        }
        got
    }

    /// Only the extended handshake and metadata pieces move a peer
    /// forward; keep-alives and other messages do not (they reset the read
    /// timeout before, so a peer could hold its slot with them forever).
    #[test]
    fn only_handshake_and_pieces_are_steps_forward() {
        let info = vec![b'x'; 20_000];
        let hash: [u8; 20] = Sha1::digest(&info).into();
        let mut x = Exchange::new(InfoCheck::V1(hash));
        let mut out = BytesMut::new();
        assert_eq!(x.waiting_for(), "extended handshake");
        for m in [Message::KeepAlive, Message::Unchoke, Message::Have(3)] {
            assert!(matches!(x.on_message(m, &mut out), Ok(Step::Nothing)));
        }
        let hs = b"d1:md11:ut_metadatai7ee13:metadata_sizei20000ee";
        assert!(matches!(
            x.on_message(ext(0, hs), &mut out),
            Ok(Step::Forward(0))
        ));
        assert_eq!(x.waiting_for(), "metadata piece");
        assert_eq!(requests(&mut out), vec![0, 1]);
        assert!(matches!(
            x.on_message(Message::KeepAlive, &mut out),
            Ok(Step::Nothing)
        ));
        let piece = |p: u32| {
            ext(
                metadata::UT_METADATA_ID,
                &metadata::serve(&info, p).encode(),
            )
        };
        assert!(matches!(
            x.on_message(piece(0), &mut out),
            Ok(Step::Forward(16384))
        ));
        match x.on_message(piece(1), &mut out) {
            Ok(Step::Done(got)) => assert_eq!(got, info),
            _ => panic!("not done"),
        }
    }

    /// An extended handshake that is not a dictionary convicts the peer.
    #[test]
    fn a_broken_extended_handshake_is_a_lie() {
        let mut x = Exchange::new(InfoCheck::V1([0; 20]));
        let mut out = BytesMut::new();
        for bad in [&b"li1ei2ee"[..], b"i5e", b"", b"d1:m"] {
            let e = x.on_message(ext(0, bad), &mut out).err().expect("refused");
            assert_eq!(e.failure(), Failure::Lie, "{bad:?}: {e}");
        }
        // A dictionary without `ut_metadata` is honest, just of no use.
        let e = x
            .on_message(ext(0, b"d1:md6:ut_pexi1eee"), &mut out)
            .err()
            .expect("refused");
        assert!(matches!(e, PeerFail::NoMetadata));
        assert_eq!(e.failure(), Failure::Transient);
        assert_eq!(
            PeerFail::Stalled("metadata piece").failure(),
            Failure::Stalled
        );
        assert_eq!(
            PeerFail::Stalled("metadata piece").to_string(),
            "no metadata piece within 10s"
        );
    }
}
