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

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use thiserror::Error;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

use crate::discovery::tracker::{self, AnnounceRequest, TrackerList};
use crate::metainfo::magnet::Magnet;
use crate::peer::metadata::{self, Assembler, InfoCheck, Msg};
use crate::peer::mse::Policy;
use crate::peer::wire::{self, ExtendedHandshake, Message};
use crate::torrent::PeerSource;

/// Peers fetching at once.
const PARALLEL: usize = 4;
/// Requests in flight per peer.
const WINDOW: usize = 4;
/// A peer that sends nothing useful for this long is given up on.
const PEER_IDLE: Duration = Duration::from_secs(20);
/// Tries per peer for failures that may pass (refused, silent, closed).
const RETRIES: u32 = 3;
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
    #[error("silent for {}s", PEER_IDLE.as_secs())]
    Idle,
    #[error("closed the connection")]
    Eof,
}

impl PeerFail {
    /// The peer sent something false or broken: it is not asked again.
    fn is_lie(&self) -> bool {
        matches!(
            self,
            PeerFail::Metadata(_) | PeerFail::Wire(_) | PeerFail::WrongInfoHash
        )
    }
}

/// What the magnet phase reports while it runs.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// Peers known so far, and being talked to now.
    pub known: usize,
    pub connected: usize,
    /// The size of the info dictionary, once a peer said it.
    pub size: Option<u64>,
    /// The last thing that went wrong (a peer's or tracker's failure).
    pub last_error: Option<String>,
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
    let (found_tx, mut found_rx) = mpsc::channel::<(PeerSource, Vec<SocketAddr>)>(16);
    let tracker_task = (!magnet.trackers.is_empty()).then(|| {
        let trackers = TrackerList::new(
            None,
            magnet.trackers.iter().map(|t| vec![t.clone()]).collect(),
        );
        tokio::spawn(announce(trackers, info_hash, peer_id, found_tx.clone()))
    });
    let dht_task = dht.map(|dht| {
        let (dht, found) = (dht.clone(), found_tx.clone());
        tokio::spawn(async move {
            loop {
                let peers = dht.get_peers(info_hash).await;
                if found.send((PeerSource::Dht, peers)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(15)).await;
            }
        })
    });
    let mut initial: Vec<SocketAddr> = magnet.peers.clone();
    initial.extend_from_slice(extra);
    for host in &magnet.peer_hosts {
        match tokio::net::lookup_host(host.as_str()).await {
            Ok(addrs) => initial.extend(addrs),
            Err(e) => tracing::warn!("magnet peer {host}: {e}"),
        }
    }
    let _ = found_tx.send((PeerSource::Manual, initial)).await;
    drop(found_tx);

    let mut known: Vec<(SocketAddr, PeerSource)> = Vec::new();
    let mut seen: HashSet<SocketAddr> = HashSet::new();
    let mut queue: std::collections::VecDeque<SocketAddr> = Default::default();
    let mut running = tokio::task::JoinSet::new();
    let mut tried = 0usize;
    // Peers that failed for reasons that may pass (refused, silent, gone)
    // are tried again a few times with growing waits; liars never are.
    let mut failures: std::collections::HashMap<SocketAddr, u32> = Default::default();
    let mut later: Vec<(tokio::time::Instant, SocketAddr)> = Vec::new();
    let mut last = String::from("no peers found");
    let mut sources_open = true;
    let update = |f: &dyn Fn(&mut Status)| status.send_modify(|s| f(s));
    let result = loop {
        while running.len() < PARALLEL {
            let Some(addr) = queue.pop_front() else { break };
            tried += 1;
            let net = net.clone();
            running.spawn(async move {
                (
                    addr,
                    from_peer(&net, addr, info_hash, check, peer_id, encryption).await,
                )
            });
        }
        let (n_known, n_running) = (known.len(), running.len());
        update(&|s| {
            s.known = n_known;
            s.connected = n_running;
        });
        if running.is_empty() && !sources_open && later.is_empty() {
            break Err(FetchError::Exhausted {
                tried,
                last: last.clone(),
            });
        }
        tokio::select! {
            got = found_rx.recv(), if sources_open => match got {
                Some((source, addrs)) => {
                    for a in addrs {
                        let a = SocketAddr::new(a.ip().to_canonical(), a.port());
                        if a.port() != 0 && seen.insert(a) {
                            known.push((a, source));
                            queue.push_back(a);
                        }
                    }
                }
                // Trackers gave up and every fixed source was read: only
                // the peers already queued or running are left.
                None => sources_open = false,
            },
            Some(done) = running.join_next(), if !running.is_empty() => match done {
                Ok((_, Ok(info))) => break Ok(info),
                Ok((addr, Err(e))) => {
                    let n = failures.entry(addr).or_insert(0);
                    *n += 1;
                    if e.is_lie() {
                        tracing::warn!("{addr}: {e}; dropped");
                    } else if *n < RETRIES {
                        let wait = Duration::from_secs(1 << *n);
                        tracing::info!("{addr}: {e}; retry in {}s", wait.as_secs());
                        later.push((tokio::time::Instant::now() + wait, addr));
                    } else {
                        tracing::info!("{addr}: {e}; giving up on it");
                    }
                    last = format!("{addr}: {e}");
                    let msg = last.clone();
                    update(&|s| s.last_error = Some(msg.clone()));
                }
                Err(e) => last = e.to_string(),
            },
            _ = tokio::time::sleep_until(later.iter().map(|l| l.0).min().unwrap_or_else(tokio::time::Instant::now)), if !later.is_empty() => {
                let now = tokio::time::Instant::now();
                later.retain(|(at, addr)| {
                    if *at <= now {
                        queue.push_back(*addr);
                        false
                    } else {
                        true
                    }
                });
            },
            _ = stop.changed() => break Err(FetchError::Interrupted),
        }
    };
    running.abort_all();
    for t in [tracker_task, dht_task].into_iter().flatten() {
        t.abort();
    }
    let info = result?;
    update(&|s| s.size = Some(info.len() as u64));
    Ok((info, known))
}

/// Asks the magnet's trackers for peers until the fetch ends: at once,
/// then on the tracker's interval (or sooner after a failure).
async fn announce(
    mut trackers: TrackerList,
    info_hash: [u8; 20],
    peer_id: [u8; 20],
    found: mpsc::Sender<(PeerSource, Vec<SocketAddr>)>,
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
        };
        let wait = match trackers.announce(&req).await {
            Ok((_, resp)) => {
                failures = 0;
                if found.send((PeerSource::Tracker, resp.peers)).await.is_err() {
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
                tracing::warn!("tracker: {e}");
                tracker::retry_delay(failures).min(Duration::from_secs(30))
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Fetches the whole info dictionary from one peer and checks its hash.
async fn from_peer(
    net: &crate::peer::transport::Net,
    addr: SocketAddr,
    info_hash: [u8; 20],
    check: InfoCheck,
    peer_id: [u8; 20],
    encryption: Policy,
) -> Result<Vec<u8>, PeerFail> {
    use crate::peer::PeerError;
    let mut ours = wire::Handshake::new(info_hash, peer_id);
    if matches!(check, InfoCheck::V2(_)) {
        ours.reserved[7] |= wire::V2_BIT;
    }
    let (mut stream, theirs) = match crate::peer::connect(net, addr, ours, encryption).await {
        Err(PeerError::ConnectTimeout) => return Err(PeerFail::Connect("timed out".into())),
        Err(PeerError::Connect(e)) => return Err(PeerFail::Connect(e.to_string())),
        r => r?,
    };
    if theirs.info_hash != info_hash {
        return Err(PeerFail::WrongInfoHash);
    }
    if !theirs.supports_extensions() {
        return Err(PeerFail::NoMetadata);
    }
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

    let mut a = Assembler::with_check(check);
    let mut their_id = None;
    let mut in_flight = 0usize;
    let mut buf = BytesMut::with_capacity(64 << 10);
    loop {
        let n = match timeout(PEER_IDLE, stream.read_buf(&mut buf)).await {
            Err(_) => return Err(PeerFail::Idle),
            Ok(r) => r?,
        };
        if n == 0 {
            return Err(PeerFail::Eof);
        }
        let mut out = BytesMut::new();
        while let Some(msg) = wire::decode(&mut buf, MAX_MESSAGE)? {
            let Message::Extended { id, payload } = msg else {
                continue; // bitfield, have, …: not for this phase
            };
            if id == 0 {
                let Ok(h) = ExtendedHandshake::decode(&payload) else {
                    continue;
                };
                let id = h.m.get("ut_metadata").copied().filter(|i| *i != 0);
                let (Some(id), Some(size)) = (id, h.metadata_size) else {
                    return Err(PeerFail::NoMetadata);
                };
                a.set_size(size)?;
                their_id = Some(id);
            } else if id == metadata::UT_METADATA_ID {
                match Msg::decode(&payload)? {
                    Msg::Data {
                        piece,
                        total_size,
                        data,
                    } => {
                        in_flight = in_flight.saturating_sub(1);
                        if let Some(info) = a.on_data(piece, total_size, data)? {
                            return Ok(info);
                        }
                    }
                    Msg::Reject(piece) => return Err(PeerFail::Rejected(piece)),
                    // It asks us; we have nothing to give yet.
                    Msg::Request(piece) => {
                        if let Some(their) = their_id {
                            wire::encode(
                                &Message::Extended {
                                    id: their,
                                    payload: Bytes::from(Msg::Reject(piece).encode()),
                                },
                                &mut out,
                            );
                        }
                    }
                }
            }
            if let Some(their) = their_id {
                while in_flight < WINDOW {
                    let Some(piece) = a.next_request() else { break };
                    in_flight += 1;
                    wire::encode(
                        &Message::Extended {
                            id: their,
                            payload: Bytes::from(Msg::Request(piece).encode()),
                        },
                        &mut out,
                    );
                }
            }
        }
        if !out.is_empty() {
            stream.send(&out).await?;
        }
    }
}
