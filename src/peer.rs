//! One task per peer connection: runs the wire protocol over a socket. It
//! validates everything the peer sends, serves its requests from the store,
//! and reports what matters to the torrent, which decides what to request,
//! whom to choke and whom to trust.

pub mod holepunch;
pub mod metadata;
pub mod mse;
pub mod pex;
mod shared;
pub mod transport;
pub mod utp;
pub mod wire;

pub use shared::Shared;

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

use crate::bitfield::Bitfield;
use mse::Policy;
use transport::{Net, Socket, Transport};
use wire::{BlockRef, ExtendedHandshake, Handshake, HashRequest, Message};

pub type PeerKey = u64;

/// How many of a peer's requests we queue; advertised to it as `reqq`.
/// Transmission 3.00 sends at most one reqq's worth of requests per second
/// to a seeder, so this bounds how fast it can fetch from us: 500 held it
/// to 8 MB/s on loopback, 5000 to exactly 81.92 MB/s. The queue holds
/// 12-byte block references, so even a full one costs little memory.
pub const MAX_PEER_REQUESTS: usize = 20000;
/// Largest request we serve (we never ask for more than 16 KiB ourselves).
const MAX_REQUEST_LEN: u32 = 128 << 10;
/// Unrequested data tolerated before we decide the peer is hostile; some is
/// normal (blocks that crossed our cancel on the wire).
const MAX_UNREQUESTED_BYTES: u64 = 8 << 20;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// For the key exchange of a connection we dial: a peer that does not
/// speak MSE usually closes at once, but one that just waits must not cost
/// the plain-text retry much.
const MSE_TIMEOUT: Duration = Duration::from_secs(10);
/// We send a keep-alive after this much silence of our own.
const KEEPALIVE_AFTER: Duration = Duration::from_secs(90);
/// A peer silent for longer than this (not even keep-alives) is gone.
const IDLE_TIMEOUT: Duration = Duration::from_secs(150);
/// Upload data waiting in the writer before we stop reading more from disk.
const UPLOAD_HIGH_WATER: usize = 2 << 20;
/// One disk batch for uploads: bounded so one peer cannot hog the pool.
const UPLOAD_BATCH_BYTES: usize = 1 << 20;

/// Bytes of one upload batch: a batch waits for the upload limit as a
/// whole before it is sent, so under a limit it is what the limit lets
/// through in a quarter of a second (one block at least); a 1 MiB batch at
/// 40 KiB/s went out as one burst after 25 s of silence.
fn upload_batch_cap(limit: Option<u64>) -> usize {
    match limit {
        Some(rate) => usize::try_from(rate / 4)
            .unwrap_or(usize::MAX)
            .clamp(16 << 10, UPLOAD_BATCH_BYTES),
        None => UPLOAD_BATCH_BYTES,
    }
}
/// Leaf-hash answers (BEP 52, base layer 0) being computed for one peer:
/// each reads and hashes up to 8 MiB, so more wait for a reject.
const MAX_LEAF_JOBS: usize = 2;
/// Leaves one leaf-hash answer may read (a request's 512, or one piece
/// of up to this size when pieces are larger than a request).
const MAX_LEAF_READ: u64 = 1024;

/// Our peer id: the client and version, then random characters (a new
/// one per torrent run).
pub fn new_peer_id() -> [u8; 20] {
    let mut id = *b"-SH0100-000000000000";
    for b in &mut id[8..] {
        *b = b"0123456789abcdefghijklmnopqrstuvwxyz"[rand::random::<usize>() % 36];
    }
    id
}

/// Per-peer byte counters the torrent reads to compute rates for choking.
#[derive(Debug, Default)]
pub struct PeerStats {
    pub downloaded: AtomicU64,
    /// Written by the connection's writer task.
    pub uploaded: Arc<AtomicU64>,
}

/// Peer task → torrent.
#[derive(Debug)]
pub enum PeerEvent {
    Connected {
        addr: SocketAddr,
        peer_id: [u8; 20],
        fast: bool,
        /// Its handshake set the BEP 52 bit: it may answer hash requests.
        v2: bool,
        incoming: bool,
        /// What the connection runs over.
        transport: Transport,
    },
    Bitfield(Bitfield),
    HaveAll,
    HaveNone,
    Have(u32),
    Extended {
        reqq: Option<u32>,
        listen_port: Option<u16>,
        client: Option<String>,
        /// It takes part in peer exchange (BEP 11).
        pex: bool,
        /// It speaks `ut_holepunch` (BEP 55), and so do we.
        holepunch: bool,
    },
    /// Peers it named in a `ut_pex` message, with their flags.
    Pex(Vec<(SocketAddr, u8)>),
    /// A well-formed `ut_holepunch` message (BEP 55).
    Holepunch(holepunch::Message),
    Choked,
    Unchoked,
    Interested(bool),
    Block {
        block: BlockRef,
        data: Bytes,
    },
    Rejected(BlockRef),
    /// The answer to a hash request we sent (BEP 52): the requested nodes
    /// then the uncles, unchecked.
    Hashes {
        req: HashRequest,
        hashes: Vec<[u8; 32]>,
    },
    HashRejected(HashRequest),
    /// A piece we had no longer matches its hash on disk (found when a
    /// block of it was read for upload).
    PieceLost(u32),
    Gone(String),
}

/// Torrent → peer task.
#[derive(Debug)]
pub enum PeerCmd {
    Request(Vec<BlockRef>),
    Cancel(BlockRef),
    /// Ask for piece-layer hashes (BEP 52).
    HashRequest(HashRequest),
    Haves(Vec<u32>),
    Choke,
    Unchoke,
    Interested(bool),
    /// A `ut_pex` message to send (an encoded [`crate::peer::pex::Message`]).
    Pex(Vec<u8>),
    /// A `ut_holepunch` message to send, if the peer speaks it.
    Holepunch(holepunch::Message),
    Close(String),
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("handshake timed out")]
    HandshakeTimeout,
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Wire(#[from] wire::WireError),
    #[error("peer is for another torrent")]
    WrongInfoHash,
    #[error("connected to ourselves")]
    SelfConnection,
    #[error("{0}")]
    Protocol(String),
    #[error("idle for too long")]
    Idle,
    #[error("closed by torrent: {0}")]
    Closed(String),
    #[error("peer closed the connection")]
    Eof,
    /// Closed at our plain-text handshake, as a peer that takes only
    /// encrypted connections does (`--encryption plain` cannot reach it).
    #[error("dropped our plain-text handshake (it may require encryption)")]
    PlainDropped,
    #[error(transparent)]
    Mse(#[from] crate::peer::mse::MseError),
}

fn protocol(msg: impl Into<String>) -> PeerError {
    PeerError::Protocol(msg.into())
}

/// What a peer task reports to: its owner's event channel, whose event
/// type wraps ours (so this module needs nothing of the coordinator's).
pub trait Report: From<(PeerKey, PeerEvent)> + Send + 'static {}
impl<E: From<(PeerKey, PeerEvent)> + Send + 'static> Report for E {}

/// Connects out to `addr` and runs the connection to its end, taking
/// commands from `cmds` and counting its payload bytes into `stats`.
pub async fn run_outgoing<E: Report>(
    key: PeerKey,
    addr: SocketAddr,
    shared: Arc<Shared>,
    events: mpsc::Sender<E>,
    cmds: mpsc::UnboundedReceiver<PeerCmd>,
    stats: Arc<PeerStats>,
) {
    run_outgoing_over(key, addr, None, shared, events, cmds, stats).await
}

/// [`run_outgoing`], over `only` when given (hole punching dials uTP
/// alone: the NATs let through what the uTP socket sent out first).
pub async fn run_outgoing_over<E: Report>(
    key: PeerKey,
    addr: SocketAddr,
    only: Option<Transport>,
    shared: Arc<Shared>,
    events: mpsc::Sender<E>,
    cmds: mpsc::UnboundedReceiver<PeerCmd>,
    stats: Arc<PeerStats>,
) {
    let result = async {
        let ours = shared.handshake(shared.info_hash);
        let accept = shared.info_hashes();
        let (stream, theirs) =
            connect_over(&shared.net, addr, only, ours, shared.encryption, &accept).await?;
        let link = (cmds, stats);
        run(key, stream, addr, theirs, false, &shared, &events, link).await
    }
    .await;
    finish(key, result, &events).await;
}

/// Dials `addr` (see [`connect_over`]) over the transports `net` allows.
pub async fn connect(
    net: &Net,
    addr: SocketAddr,
    ours: Handshake,
    policy: Policy,
    accept: &[[u8; 20]],
) -> Result<(mse::Stream, Handshake), PeerError> {
    connect_over(net, addr, None, ours, policy, accept).await
}

/// Dials `addr` over `only` when given, else over the transports `net`
/// allows in the order it keeps for the address (uTP first unless TCP is
/// known to work better there), and runs the handshakes as `policy` says:
/// behind an MSE key exchange offering what it allows (`prefer`: plain
/// text and RC4, and a second connection in plain text if the exchange
/// fails; `require`: RC4 only), or plain (`plain`). A transport that does
/// not connect, or whose handshake times out, hands over to the next; the
/// one that worked is remembered. The peer's answer must name one of
/// `accept`, the hashes of the torrent (ours included): a hybrid's peer may
/// answer a v1 handshake under the v2 hash (BEP 52 upgrade).
pub async fn connect_over(
    net: &Net,
    addr: SocketAddr,
    only: Option<Transport>,
    ours: Handshake,
    policy: Policy,
    accept: &[[u8; 20]],
) -> Result<(mse::Stream, Handshake), PeerError> {
    let asked = ours.info_hash;
    let (stream, theirs) = match only {
        None => exchange_handshakes(net, addr, ours, policy).await?,
        Some(t) => {
            let socket = net.dial(addr, t).await?;
            handshake_over(net, addr, socket, &ours, policy).await?
        }
    };
    if theirs.info_hash != asked {
        if !accept.contains(&theirs.info_hash) {
            return Err(PeerError::WrongInfoHash);
        }
        tracing::debug!(
            "{addr}: answered under the torrent's other hash {} (BEP 52 upgrade)",
            hex::encode(theirs.info_hash)
        );
    }
    Ok((stream, theirs))
}

async fn exchange_handshakes(
    net: &Net,
    addr: SocketAddr,
    ours: Handshake,
    policy: Policy,
) -> Result<(mse::Stream, Handshake), PeerError> {
    let mut order = net.order(addr);
    // The first transport to connect is tried first; if its handshake
    // fails, the other is tried on its own.
    let socket = net.dial_first(addr, &order).await?;
    let t = socket.transport();
    order.retain(|o| *o != t);
    let mut failed = match handshake_over(net, addr, socket, &ours, policy).await {
        Ok(done) => {
            net.worked(addr, t);
            return Ok(done);
        }
        // A peer that answered and then closed (a duplicate connection, a
        // torrent it does not have) would do the same over the other
        // transport; one whose handshake never came back may not.
        Err(e) if !matches!(e, PeerError::HandshakeTimeout) => return Err(e),
        Err(e) => {
            tracing::debug!("{addr}: over {t}: {e}");
            e
        }
    };
    for t in order {
        let done = match net.dial(addr, t).await {
            Ok(socket) => handshake_over(net, addr, socket, &ours, policy).await,
            Err(e) => Err(e),
        };
        match done {
            Ok(done) => {
                net.worked(addr, t);
                return Ok(done);
            }
            Err(e) => {
                tracing::debug!("{addr}: over {t}: {e}");
                failed = e;
            }
        }
    }
    Err(failed)
}

/// The handshakes on a connection just dialled (`socket`); with `prefer`,
/// a failed key exchange is retried in plain text on a new connection
/// over the same transport.
async fn handshake_over(
    net: &Net,
    addr: SocketAddr,
    socket: Socket,
    ours: &Handshake,
    policy: Policy,
) -> Result<(mse::Stream, Handshake), PeerError> {
    let t = socket.transport();
    let info_hash = ours.info_hash;
    let ours = ours.encode();
    let mut socket = Some(socket);
    if policy != Policy::Plain {
        let Some(mut socket) = socket.take() else {
            return Err(PeerError::ConnectTimeout);
        };
        let exchange = timeout(
            MSE_TIMEOUT,
            mse::initiate(&mut socket, &info_hash, policy, &ours),
        )
        .await;
        let failed = match exchange {
            Ok(Ok(rc4)) => {
                tracing::debug!(
                    "{addr}: encrypted handshake, {} selected (over {t})",
                    if rc4.is_some() { "RC4" } else { "plain text" }
                );
                let mut stream = mse::Stream::new(socket, rc4);
                let theirs = read_handshake(&mut stream).await?;
                return Ok((stream, theirs));
            }
            Ok(Err(e)) => PeerError::Mse(e),
            Err(_) => PeerError::HandshakeTimeout,
        };
        if policy == Policy::Require {
            return Err(failed);
        }
        tracing::debug!("{addr}: {failed}; retrying in plain text");
    }
    let mut socket = match socket.take() {
        Some(s) => s,
        None => net.dial(addr, t).await?,
    };
    socket.write_all(&ours).await?;
    let mut stream = mse::Stream::plain(socket);
    let theirs = match read_handshake(&mut stream).await {
        Err(PeerError::Io(e)) if policy == Policy::Plain && dropped(&e) => {
            return Err(PeerError::PlainDropped)
        }
        r => r?,
    };
    Ok((stream, theirs))
}

/// The other side closed or reset the connection.
fn dropped(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

/// Runs a connection the listener accepted, whose handshake it already
/// read, as `run_outgoing` does.
#[allow(clippy::too_many_arguments)]
pub async fn run_incoming<E: Report>(
    key: PeerKey,
    mut stream: mse::Stream,
    addr: SocketAddr,
    theirs: Handshake,
    shared: Arc<Shared>,
    events: mpsc::Sender<E>,
    cmds: mpsc::UnboundedReceiver<PeerCmd>,
    stats: Arc<PeerStats>,
) {
    let result = async {
        if let Socket::Tcp(tcp) = stream.get_ref() {
            tcp.set_nodelay(true).ok();
        }
        let ours = shared.handshake(theirs.info_hash);
        stream.send(&ours.encode()).await?;
        let link = (cmds, stats);
        run(key, stream, addr, theirs, true, &shared, &events, link).await
    }
    .await;
    finish(key, result, &events).await;
}

async fn finish<E: Report>(key: PeerKey, result: Result<(), PeerError>, events: &mpsc::Sender<E>) {
    let reason = match result {
        Ok(()) => "done".to_string(),
        Err(e) => e.to_string(),
    };
    let _ = events.send(E::from((key, PeerEvent::Gone(reason)))).await;
}

/// Reads the 68-byte handshake with a deadline (slow-loris peers).
pub async fn read_handshake<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Handshake, PeerError> {
    let mut buf = [0u8; Handshake::LEN];
    match timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut buf)).await {
        Err(_) => Err(PeerError::HandshakeTimeout),
        Ok(Err(e)) => Err(PeerError::Io(e)),
        Ok(Ok(_)) => Ok(Handshake::decode(&buf)?),
    }
}

/// Reads the handshake of an incoming connection, plain or behind an
/// encrypted (MSE) key exchange for one of `info_hashes`, as `policy`
/// allows: `require` refuses a plain handshake, `plain` a peer that offers
/// only RC4. Everything is under one deadline. Returns the stream, which
/// runs through RC4 from here on if that was selected, the handshake, and
/// for an MSE exchange the info-hash it was keyed with (the handshake
/// inside may name another hash of the same torrent: the caller checks).
pub async fn read_incoming_handshake(
    mut tcp: Socket,
    info_hashes: &[[u8; 20]],
    policy: Policy,
) -> Result<(mse::Stream, Handshake, Option<[u8; 20]>), PeerError> {
    let work = async move {
        let mut buf = [0u8; Handshake::LEN];
        tcp.read_exact(&mut buf[..20]).await?;
        if buf[0] == 19 && buf[1..20] == wire::PROTOCOL[..] {
            if policy == Policy::Require {
                return Err(protocol(
                    "plain-text handshake refused: encryption is required",
                ));
            }
            tcp.read_exact(&mut buf[20..]).await?;
            return Ok((mse::Stream::plain(tcp), Handshake::decode(&buf)?, None));
        }
        let accepted = mse::accept(&mut tcp, &buf[..20], info_hashes, policy).await?;
        // The initial payload carries the start of the handshake (all
        // of it, from every client we know); the rest follows on the
        // stream, through RC4 if that was selected.
        let got = accepted.initial.len();
        if got > Handshake::LEN {
            return Err(protocol(
                "encrypted handshake: payload beyond the handshake",
            ));
        }
        buf[..got].copy_from_slice(&accepted.initial);
        let mut stream = mse::Stream::new(tcp, accepted.rc4);
        stream.read_exact(&mut buf[got..]).await?;
        Ok((stream, Handshake::decode(&buf)?, Some(accepted.info_hash)))
    };
    match timeout(HANDSHAKE_TIMEOUT, work).await {
        Err(_) => Err(PeerError::HandshakeTimeout),
        Ok(r) => r,
    }
}

/// The writer half lives in its own task so a slow reader on the other side
/// never stops us reading (two peers both blocked on writes would deadlock).
struct Writer {
    /// Bytes to write and how many of them are piece payload.
    tx: mpsc::UnboundedSender<(Bytes, u64)>,
    queued: Arc<AtomicUsize>,
    /// Signalled after each write, so an upload paused at the high-water
    /// mark resumes as soon as the socket drains.
    drained: Arc<tokio::sync::Notify>,
    last_write: Instant,
    buf: BytesMut,
}

impl Writer {
    /// `uploaded` are the counters that piece payload adds to once it is
    /// written: counting at queue time would count what is still queued
    /// when the connection or the run ends, which never goes out.
    fn spawn(half: mse::WriteHalf, uploaded: [Arc<AtomicU64>; 2]) -> Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let drained = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(write_loop(
            half,
            rx,
            queued.clone(),
            drained.clone(),
            uploaded,
        ));
        Writer {
            tx,
            queued,
            drained,
            last_write: Instant::now(),
            buf: BytesMut::with_capacity(4096),
        }
    }

    fn msg(&mut self, m: &Message) {
        wire::encode(m, &mut self.buf);
    }

    /// Hands what was encoded so far to the writer task.
    fn flush(&mut self) -> Result<(), PeerError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.send(chunk, 0)
    }

    fn send(&mut self, chunk: Bytes, payload: u64) -> Result<(), PeerError> {
        self.queued.fetch_add(chunk.len(), Ordering::Relaxed);
        self.last_write = Instant::now();
        self.tx
            .send((chunk, payload))
            .map_err(|_| PeerError::Io(std::io::ErrorKind::BrokenPipe.into()))
    }

    fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// What a blocking task needs to send a message on this connection.
    fn handle(&self) -> WriterHandle {
        WriterHandle {
            tx: self.tx.clone(),
            queued: self.queued.clone(),
        }
    }
}

/// Sends whole messages from outside the connection's task (answers
/// computed off the runtime); order against the task's own messages does
/// not matter for them.
struct WriterHandle {
    tx: mpsc::UnboundedSender<(Bytes, u64)>,
    queued: Arc<AtomicUsize>,
}

impl WriterHandle {
    fn msg(&self, m: &Message) {
        let mut buf = BytesMut::new();
        wire::encode(m, &mut buf);
        self.queued.fetch_add(buf.len(), Ordering::Relaxed);
        // A closed connection needs no answer.
        let _ = self.tx.send((buf.freeze(), 0));
    }
}

/// Most bytes of small messages gathered into one write (see [`write_loop`]).
const COALESCE_MAX: usize = 16 << 10;

async fn write_loop(
    mut half: mse::WriteHalf,
    mut rx: mpsc::UnboundedReceiver<(Bytes, u64)>,
    queued: Arc<AtomicUsize>,
    drained: Arc<tokio::sync::Notify>,
    uploaded: [Arc<AtomicU64>; 2],
) {
    let mut batch = BytesMut::new();
    let mut next = None;
    loop {
        let (first, mut payload) = match next.take() {
            Some(chunk) => chunk,
            None => match rx.recv().await {
                Some(chunk) => chunk,
                None => break,
            },
        };
        // Coalesce small messages that are ready (requests, haves) into
        // one write: each would otherwise cost a syscall. Big chunks (an
        // upload's blocks) go out as they are: copying them would cost
        // CPU, and a batch buffer grown to their size would stay with the
        // connection long after it stopped uploading.
        let (n, result) = if first.len() >= COALESCE_MAX || rx.is_empty() {
            let n = first.len();
            (n, half.write_bytes(first).await)
        } else {
            batch.clear();
            batch.extend_from_slice(&first);
            while let Ok((more, p)) = rx.try_recv() {
                if batch.len() + more.len() > COALESCE_MAX {
                    next = Some((more, p));
                    break;
                }
                batch.extend_from_slice(&more);
                payload += p;
            }
            let n = batch.len();
            (n, half.write_buf(&mut batch).await)
        };
        queued.fetch_sub(n, Ordering::Relaxed);
        drained.notify_one();
        if result.is_err() {
            break;
        }
        for counter in &uploaded {
            counter.fetch_add(payload, Ordering::Relaxed);
        }
    }
    let _ = half.shutdown().await;
}

struct Conn<'a> {
    shared: &'a Shared,
    fast: bool,
    writer: Writer,
    am_choking: bool,
    peer_choking: bool,
    /// Blocks we asked this peer for and have not received.
    requested: HashSet<BlockRef>,
    /// Hash requests sent and not answered: only their answers are taken.
    hash_requested: HashSet<HashRequest>,
    /// Leaf-hash answers being computed off the runtime.
    leaf_jobs: Arc<AtomicUsize>,
    unrequested_bytes: u64,
    /// The peer's requests waiting to be served.
    uploads: VecDeque<BlockRef>,
    stats: Arc<PeerStats>,
    /// The id the peer wants `ut_metadata` messages under (its handshake).
    their_ut_metadata: Option<u8>,
    their_ut_pex: Option<u8>,
    their_ut_holepunch: Option<u8>,
    /// When its last `ut_pex` arrived: one a minute is the rule, and a
    /// peer sending them faster is ignored until the minute is up.
    last_pex_in: Option<Instant>,
    /// The peer's address: its `yourip` (BEP 24) is a vote under it.
    addr: Option<SocketAddr>,
}

/// What an upload batch read: the `piece` messages to send, their payload
/// bytes, and the requests that cannot be served because their piece no
/// longer matches its hash on disk (with the pieces this batch found lost).
struct UploadRead {
    data: Bytes,
    payload: u64,
    refused: Vec<BlockRef>,
    lost: Vec<u32>,
}

type UploadBatch = tokio::task::JoinHandle<Result<UploadRead, crate::store::StoreError>>;

/// The commands and byte counters of one connection.
type Link = (mpsc::UnboundedReceiver<PeerCmd>, Arc<PeerStats>);

#[allow(clippy::too_many_arguments)]
async fn run<E: Report>(
    key: PeerKey,
    stream: mse::Stream,
    addr: SocketAddr,
    theirs: Handshake,
    incoming: bool,
    shared: &Shared,
    events: &mpsc::Sender<E>,
    (mut cmd_rx, stats): Link,
) -> Result<(), PeerError> {
    if theirs.peer_id == shared.peer_id {
        return Err(PeerError::SelfConnection);
    }
    let fast = theirs.supports_fast();
    let transport = stream.get_ref().transport();
    tracing::debug!(
        "{addr}: connected over {transport} ({})",
        if incoming { "incoming" } else { "outgoing" }
    );
    let (mut reader, write_half) = stream.into_split();
    let send = |ev: PeerEvent| events.send(E::from((key, ev)));
    send(PeerEvent::Connected {
        addr,
        peer_id: theirs.peer_id,
        fast,
        v2: theirs.reserved[7] & wire::V2_BIT != 0,
        incoming,
        transport,
    })
    .await
    .map_err(|_| PeerError::Closed("torrent stopped".into()))?;

    let mut c = Conn::new(shared, fast, write_half, stats);
    c.addr = Some(addr);

    if theirs.supports_extensions() {
        let ext = ExtendedHandshake {
            v: Some(format!("shoal {}", env!("CARGO_PKG_VERSION"))),
            // The port to dial back: the router's, once it forwards one.
            p: Some(shared.reach.announce_port(shared.listen_port)),
            reqq: Some(MAX_PEER_REQUESTS as u32),
            m: {
                let mut m = std::collections::BTreeMap::new();
                if !shared.metadata.is_empty() {
                    m.insert("ut_metadata".to_string(), metadata::UT_METADATA_ID);
                }
                if shared.pex {
                    m.insert("ut_pex".to_string(), crate::peer::pex::UT_PEX_ID);
                }
                if shared.holepunch {
                    m.insert(holepunch::NAME.to_string(), holepunch::UT_HOLEPUNCH_ID);
                }
                m
            },
            metadata_size: (!shared.metadata.is_empty()).then_some(shared.metadata.len() as u64),
            yourip: Some(match addr.ip() {
                std::net::IpAddr::V4(ip) => ip.octets().to_vec(),
                std::net::IpAddr::V6(ip) => ip.octets().to_vec(),
            }),
        };
        c.writer.msg(&Message::Extended {
            id: 0,
            payload: Bytes::from(ext.encode()),
        });
    }
    let have = shared.have.snapshot();
    if shared.super_seed.load(Ordering::Relaxed) {
        // Looks like a peer with nothing; the torrent sends `have`s.
        if fast {
            c.writer.msg(&Message::HaveNone);
        }
    } else if fast && have.is_full() {
        c.writer.msg(&Message::HaveAll);
    } else if fast && have.none() {
        c.writer.msg(&Message::HaveNone);
    } else if !have.none() {
        c.writer
            .msg(&Message::Bitfield(Bytes::copy_from_slice(have.as_bytes())));
    }
    c.writer.flush()?;

    let max_len = wire::max_message_len(shared.meta.piece_count());
    let mut rbuf = BytesMut::with_capacity(256 << 10);
    let mut last_read = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch: Option<UploadBatch> = None;
    let gone = shared.net.gone(addr, transport, std::time::Instant::now());
    tokio::pin!(gone);

    loop {
        if batch.is_none() && !c.am_choking && c.writer.queued() < UPLOAD_HIGH_WATER {
            batch = c.start_upload_batch();
        }
        tokio::select! {
            r = reader.read_buf(&mut rbuf) => {
                let n = r?;
                if n == 0 {
                    return Err(PeerError::Eof);
                }
                last_read = Instant::now();
                let wait = shared.download_limit.reserve(n as u64);
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                while let Some(msg) = wire::decode(&mut rbuf, max_len)? {
                    if let Some(ev) = c.on_message(msg)? {
                        if let PeerEvent::Block { data, .. } = &ev {
                            shared.backlog.take(data.len()).await;
                        }
                        send(ev).await.map_err(|_| PeerError::Closed("torrent stopped".into()))?;
                    }
                }
                // Little is left undecoded: start again at the front when
                // nothing cut from the buffer is alive (a leecher's
                // requests, decoded and dropped), so a stream of small
                // messages keeps to the same few pages instead of walking
                // through, and touching, the whole buffer. At most a few
                // KiB are moved, nothing is allocated; while blocks handed
                // on keep their part alive, nothing happens.
                if rbuf.len() < 4 << 10 {
                    let _ = rbuf.try_reclaim(128 << 10);
                }
                // Keep the buffer's allocation: reserve reclaims space once
                // the blocks split off it have been dropped.
                if rbuf.capacity() - rbuf.len() < 32 << 10 {
                    rbuf.reserve(128 << 10);
                }
            }
            cmd = cmd_rx.recv() => {
                match cmd {
                    None => return Err(PeerError::Closed("torrent stopped".into())),
                    Some(PeerCmd::Close(why)) => return Err(PeerError::Closed(why)),
                    Some(cmd) => c.on_cmd(cmd),
                }
                // Drain what else is queued so it goes out in one write.
                while let Ok(cmd) = cmd_rx.try_recv() {
                    match cmd {
                        PeerCmd::Close(why) => return Err(PeerError::Closed(why)),
                        cmd => c.on_cmd(cmd),
                    }
                }
            }
            done = async { batch.as_mut().expect("guarded by if").await }, if batch.is_some() => {
                batch = None;
                match done {
                    Ok(Ok(UploadRead { data, payload, refused, lost })) => {
                        for piece in lost {
                            shared.have_bytes.fetch_sub(shared.piece_size(piece), Ordering::AcqRel);
                            tracing::warn!(
                                "piece {piece} no longer matches its hash on disk; no longer served"
                            );
                            send(PeerEvent::PieceLost(piece))
                                .await
                                .map_err(|_| PeerError::Closed("torrent stopped".into()))?;
                        }
                        if !c.am_choking {
                            c.writer.flush()?;
                            c.writer.send(data, payload)?;
                        }
                        if !refused.is_empty() {
                            // There is no "un-have": a peer with the fast
                            // extension is told no; one without it would
                            // wait for the blocks forever, so it is closed
                            // and a new connection's bitfield leaves the
                            // pieces out.
                            if !c.fast {
                                return Err(PeerError::Closed("pieces lost on disk".into()));
                            }
                            for b in refused {
                                c.writer.msg(&Message::Reject(b));
                            }
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::warn!("reading blocks for upload: {e}");
                        return Err(PeerError::Closed(format!("disk read failed: {e}")));
                    }
                    Err(e) => return Err(PeerError::Closed(format!("upload task failed: {e}"))),
                }
            }
            _ = c.writer.drained.notified(),
                if batch.is_none() && !c.uploads.is_empty() && c.writer.queued() >= UPLOAD_HIGH_WATER => {}
            _ = &mut gone => {
                return Err(PeerError::Io(std::io::ErrorKind::ConnectionRefused.into()));
            }
            _ = tick.tick() => {
                if last_read.elapsed() > IDLE_TIMEOUT {
                    return Err(PeerError::Idle);
                }
                if c.writer.last_write.elapsed() > KEEPALIVE_AFTER {
                    c.writer.msg(&Message::KeepAlive);
                }
            }
        }
        c.writer.flush()?;
    }
}

impl<'a> Conn<'a> {
    /// A connection after the handshake: both sides choked, nothing
    /// asked; its writer task counts payload into `stats` and the
    /// torrent's total.
    fn new(
        shared: &'a Shared,
        fast: bool,
        half: mse::WriteHalf,
        stats: Arc<PeerStats>,
    ) -> Conn<'a> {
        Conn {
            shared,
            fast,
            writer: Writer::spawn(half, [stats.uploaded.clone(), shared.uploaded.clone()]),
            am_choking: true,
            peer_choking: true,
            requested: HashSet::new(),
            hash_requested: HashSet::new(),
            leaf_jobs: Arc::default(),
            unrequested_bytes: 0,
            uploads: VecDeque::new(),
            stats,
            their_ut_metadata: None,
            their_ut_pex: None,
            their_ut_holepunch: None,
            last_pex_in: None,
            addr: None,
        }
    }
}

impl Conn<'_> {
    fn valid_block(&self, b: &BlockRef) -> bool {
        b.index < self.shared.meta.piece_count()
            && b.length > 0
            && b.length <= MAX_REQUEST_LEN
            && b.begin as u64 + b.length as u64 <= self.shared.piece_size(b.index)
    }

    fn need_fast(&self, what: &str) -> Result<(), PeerError> {
        if self.fast {
            Ok(())
        } else {
            Err(protocol(format!(
                "{what} without the fast extension negotiated"
            )))
        }
    }

    fn on_message(&mut self, msg: Message) -> Result<Option<PeerEvent>, PeerError> {
        let n = self.shared.meta.piece_count();
        Ok(match msg {
            Message::KeepAlive | Message::Port(_) | Message::Unknown { .. } => None,
            Message::Choke => {
                self.peer_choking = true;
                // Pending requests die with a choke; the torrent re-requests
                // them (elsewhere if need be). Late blocks are still taken.
                self.requested.clear();
                Some(PeerEvent::Choked)
            }
            Message::Unchoke => {
                self.peer_choking = false;
                Some(PeerEvent::Unchoked)
            }
            Message::Interested => Some(PeerEvent::Interested(true)),
            Message::NotInterested => Some(PeerEvent::Interested(false)),
            Message::Have(i) => {
                if i >= n {
                    return Err(protocol(format!("have {i} out of range ({n} pieces)")));
                }
                Some(PeerEvent::Have(i))
            }
            Message::Bitfield(bytes) => {
                // BEP 3 sends it once, first; aria2 sends a fresh one later
                // instead of many `have`s, so a later one is an update.
                let b =
                    Bitfield::from_wire(&bytes, n as usize).map_err(|e| protocol(e.to_string()))?;
                Some(PeerEvent::Bitfield(b))
            }
            Message::HaveAll => {
                self.need_fast("have-all")?;
                Some(PeerEvent::HaveAll)
            }
            Message::HaveNone => {
                self.need_fast("have-none")?;
                Some(PeerEvent::HaveNone)
            }
            Message::Request(b) => {
                if !self.valid_block(&b) {
                    return Err(protocol(format!("invalid request {b:?}")));
                }
                let ok = !self.am_choking
                    && self.shared.have.get(b.index as usize)
                    && self.uploads.len() < MAX_PEER_REQUESTS;
                if ok {
                    self.uploads.push_back(b);
                } else if self.fast {
                    self.writer.msg(&Message::Reject(b));
                }
                None
            }
            Message::Cancel(b) => {
                if let Some(pos) = self.uploads.iter().position(|x| *x == b) {
                    self.uploads.remove(pos);
                }
                None
            }
            Message::Piece { index, begin, data } => {
                let block = BlockRef {
                    index,
                    begin,
                    length: data.len() as u32,
                };
                let len = data.len() as u64;
                if self.requested.remove(&block) {
                    self.stats.downloaded.fetch_add(len, Ordering::Relaxed);
                    self.shared.downloaded.fetch_add(len, Ordering::Relaxed);
                    Some(PeerEvent::Block { block, data })
                } else {
                    // Blocks that crossed our cancel (or a choke) are normal
                    // in small amounts; a stream of them is not.
                    self.unrequested_bytes += len;
                    if self.unrequested_bytes > MAX_UNREQUESTED_BYTES {
                        return Err(protocol("too much unrequested data"));
                    }
                    None
                }
            }
            Message::Reject(b) => {
                self.need_fast("reject")?;
                if self.requested.remove(&b) {
                    Some(PeerEvent::Rejected(b))
                } else {
                    None
                }
            }
            Message::HashRequest(req) => {
                self.on_hash_request(req);
                None
            }
            Message::Hashes { req, hashes } => {
                if self.hash_requested.remove(&req) {
                    let hashes = hashes
                        .chunks_exact(32)
                        .filter_map(|c| <[u8; 32]>::try_from(c).ok())
                        .collect();
                    Some(PeerEvent::Hashes { req, hashes })
                } else {
                    // Like a block after a cancel: tolerated, within limits.
                    self.unrequested_bytes += hashes.len() as u64;
                    if self.unrequested_bytes > MAX_UNREQUESTED_BYTES {
                        return Err(protocol("too much unrequested data"));
                    }
                    None
                }
            }
            Message::HashReject(req) => self
                .hash_requested
                .remove(&req)
                .then_some(PeerEvent::HashRejected(req)),
            Message::Suggest(_) | Message::AllowedFast(_) => {
                self.need_fast("suggest/allowed-fast")?;
                None
            }
            Message::Extended { id: 0, payload } => {
                // A broken extended handshake is not worth a disconnect.
                match ExtendedHandshake::decode(&payload) {
                    Ok(h) => Some({
                        self.their_ut_metadata =
                            h.m.get("ut_metadata").copied().filter(|id| *id != 0);
                        self.their_ut_pex = h.m.get("ut_pex").copied().filter(|id| *id != 0);
                        self.their_ut_holepunch =
                            h.m.get(holepunch::NAME).copied().filter(|id| *id != 0);
                        if let (Some(addr), Some(ip)) = (self.addr, &h.yourip) {
                            self.shared.reach.heard_yourip(addr.ip(), ip);
                        }
                        PeerEvent::Extended {
                            pex: self.shared.pex && self.their_ut_pex.is_some(),
                            holepunch: self.shared.holepunch && self.their_ut_holepunch.is_some(),
                            reqq: h.reqq,
                            listen_port: h.p,
                            client: h.v,
                        }
                    }),
                    Err(e) => {
                        tracing::debug!("ignoring extended handshake: {e}");
                        None
                    }
                }
            }
            Message::Extended { id, payload } if id == metadata::UT_METADATA_ID => {
                self.on_metadata(&payload);
                None
            }
            Message::Extended { id, payload }
                if id == crate::peer::pex::UT_PEX_ID && self.shared.pex =>
            {
                let now = Instant::now();
                let early = self
                    .last_pex_in
                    .is_some_and(|t| now.duration_since(t) < crate::peer::pex::INTERVAL / 2);
                if early {
                    tracing::debug!("ut_pex again within the minute; ignored");
                    return Ok(None);
                }
                self.last_pex_in = Some(now);
                match crate::peer::pex::Message::decode(&payload) {
                    Some(m) if !m.added.is_empty() => Some(PeerEvent::Pex(m.added)),
                    Some(_) => None,
                    None => {
                        tracing::debug!("ignoring a malformed ut_pex message");
                        None
                    }
                }
            }
            Message::Extended { id, payload }
                if id == holepunch::UT_HOLEPUNCH_ID && self.shared.holepunch =>
            {
                match holepunch::Message::decode(&payload) {
                    Ok(m) => Some(PeerEvent::Holepunch(m)),
                    Err(e) => {
                        tracing::debug!("ignoring a malformed ut_holepunch message: {e}");
                        None
                    }
                }
            }
            Message::Extended { .. } => None,
        })
    }

    /// Answers a BEP 52 hash request for a piece layer we know, with the
    /// hashes and their proof up to the file's root, or for leaves of
    /// pieces we have ([`Conn::start_leaf_answer`]); anything else
    /// (another layer, a file we lack the layer of, a malformed request,
    /// a full send queue) gets a hash reject, which BEP 52 requires in
    /// place of silence.
    fn on_hash_request(&mut self, req: HashRequest) {
        // With 16 KiB pieces the leaves are the piece layer, known whole.
        let leaves = self
            .shared
            .store
            .layout()
            .v2
            .as_ref()
            .is_some_and(|v2| v2.piece_level() > 0);
        if req.base == 0 && leaves && self.start_leaf_answer(req) {
            return;
        }
        let layout = self.shared.store.layout();
        let answer = layout
            .v2
            .as_ref()
            .filter(|v2| {
                req.well_formed()
                    && req.base == v2.piece_level()
                    && self.writer.queued() <= UPLOAD_HIGH_WATER
            })
            .and_then(|v2| v2.by_root(&req.root))
            .and_then(|f| f.answer(req.base, req.index, req.length, req.proof_layers));
        match answer {
            Some(hashes) => {
                tracing::debug!(
                    "hash request answered: piece hashes {}..{}, {} uncles",
                    req.index,
                    req.index.saturating_add(req.length),
                    hashes.len().saturating_sub(req.length as usize)
                );
                self.writer.msg(&Message::Hashes {
                    req,
                    hashes: Bytes::from(hashes.concat()),
                });
            }
            None => {
                tracing::debug!("hash request rejected: {req:?}");
                self.writer.msg(&Message::HashReject(req));
            }
        }
    }

    /// Starts answering a request for leaf hashes (base layer 0) of a
    /// file: they are not kept, so the pieces covered are read and hashed
    /// off the runtime, and the answer (or a reject, when a piece is
    /// missing or the request does not fit) is sent from there. False
    /// when it is refused at once.
    fn start_leaf_answer(&mut self, req: HashRequest) -> bool {
        let Some(v2) = self.shared.store.layout().v2.clone() else {
            return false;
        };
        if !req.well_formed()
            || self.writer.queued() > UPLOAD_HIGH_WATER
            || v2.by_root(&req.root).is_none()
            || self.leaf_jobs.load(Ordering::Relaxed) >= MAX_LEAF_JOBS
        {
            return false;
        }
        self.leaf_jobs.fetch_add(1, Ordering::Relaxed);
        let jobs = self.leaf_jobs.clone();
        let out = self.writer.handle();
        let store = self.shared.store.clone();
        let have = self.shared.have.clone();
        tokio::task::spawn_blocking(move || {
            let read = |p: u32| {
                if !have.get(p as usize) {
                    return None;
                }
                let mut buf = Vec::new();
                match store.read_piece(p, &mut buf) {
                    Ok(true) => Some(buf),
                    Ok(false) => None,
                    Err(e) => {
                        tracing::debug!("reading piece {p} for leaf hashes: {e}");
                        None
                    }
                }
            };
            let answer = v2.by_root(&req.root).and_then(|f| {
                f.answer_leaves(
                    v2.piece_length,
                    req.index,
                    req.length,
                    req.proof_layers,
                    MAX_LEAF_READ,
                    read,
                )
            });
            match answer {
                Some(hashes) => {
                    tracing::debug!(
                        "leaf hash request answered: leaves {}..{}, {} uncles",
                        req.index,
                        req.index.saturating_add(req.length),
                        hashes.len().saturating_sub(req.length as usize)
                    );
                    out.msg(&Message::Hashes {
                        req,
                        hashes: Bytes::from(hashes.concat()),
                    });
                }
                None => {
                    tracing::debug!("leaf hash request rejected: {req:?}");
                    out.msg(&Message::HashReject(req));
                }
            }
            jobs.fetch_sub(1, Ordering::Relaxed);
        });
        true
    }

    /// Serves pieces of our info dictionary (BEP 9) so magnet users can get
    /// the torrent from us; anything else on this id is ignored. A peer
    /// that floods requests gets rejects once its send queue is full.
    fn on_metadata(&mut self, payload: &[u8]) {
        let Some(their_id) = self.their_ut_metadata else {
            return;
        };
        match metadata::Msg::decode(payload) {
            Ok(metadata::Msg::Request(piece)) => {
                let answer = if self.writer.queued() > UPLOAD_HIGH_WATER {
                    metadata::Msg::Reject(piece)
                } else {
                    metadata::serve(&self.shared.metadata, piece)
                };
                let sent = matches!(answer, metadata::Msg::Data { .. });
                tracing::debug!(
                    "metadata piece {piece} {}",
                    if sent { "sent" } else { "refused" }
                );
                self.writer.msg(&Message::Extended {
                    id: their_id,
                    payload: Bytes::from(answer.encode()),
                });
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("ignoring ut_metadata message: {e}"),
        }
    }

    fn on_cmd(&mut self, cmd: PeerCmd) {
        match cmd {
            PeerCmd::Request(blocks) => {
                for b in blocks {
                    if self.requested.insert(b) {
                        self.writer.msg(&Message::Request(b));
                    }
                }
            }
            PeerCmd::Cancel(b) => {
                if self.requested.remove(&b) {
                    self.writer.msg(&Message::Cancel(b));
                }
            }
            PeerCmd::HashRequest(req) => {
                // Sent again even if an earlier copy is unanswered: the
                // torrent gave up on that one and asks anew.
                self.hash_requested.insert(req);
                self.writer.msg(&Message::HashRequest(req));
            }
            PeerCmd::Haves(pieces) => {
                for i in pieces {
                    self.writer.msg(&Message::Have(i));
                }
            }
            PeerCmd::Choke => {
                if !self.am_choking {
                    self.am_choking = true;
                    self.writer.msg(&Message::Choke);
                    // Queued requests die with the choke; with the fast
                    // extension the peer must be told each one.
                    for b in std::mem::take(&mut self.uploads) {
                        if self.fast {
                            self.writer.msg(&Message::Reject(b));
                        }
                    }
                }
            }
            PeerCmd::Unchoke => {
                if self.am_choking {
                    self.am_choking = false;
                    self.writer.msg(&Message::Unchoke);
                }
            }
            PeerCmd::Interested(true) => self.writer.msg(&Message::Interested),
            PeerCmd::Interested(false) => self.writer.msg(&Message::NotInterested),
            PeerCmd::Pex(payload) => {
                if let Some(id) = self.their_ut_pex {
                    self.writer.msg(&Message::Extended {
                        id,
                        payload: Bytes::from(payload),
                    });
                }
            }
            PeerCmd::Holepunch(m) => {
                if let Some(id) = self.their_ut_holepunch {
                    self.writer.msg(&Message::Extended {
                        id,
                        payload: Bytes::from(m.encode()),
                    });
                }
            }
            PeerCmd::Close(_) => {}
        }
    }

    /// Reads a batch of requested blocks on the blocking pool, straight into
    /// one send buffer behind their message headers.
    fn start_upload_batch(&mut self) -> Option<UploadBatch> {
        if self.uploads.is_empty() {
            return None;
        }
        let mut blocks = Vec::new();
        let mut bytes = 0usize;
        let most = upload_batch_cap(self.shared.upload_limit.rate());
        while let Some(b) = self.uploads.front() {
            if bytes > 0 && bytes + b.length as usize > most {
                break;
            }
            bytes += b.length as usize;
            blocks.push(*b);
            self.uploads.pop_front();
        }
        let store = self.shared.store.clone();
        let have = self.shared.have.clone();
        let wait = self.shared.upload_limit.reserve(bytes as u64);
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = BytesMut::with_capacity(bytes + blocks.len() * 13);
            let mut payload = 0u64;
            let (mut refused, mut lost) = (Vec::new(), Vec::new());
            for b in blocks {
                let header = buf.len();
                wire::encode_piece_header(b.index, b.begin, b.length, &mut buf);
                let start = buf.len();
                buf.resize(start + b.length as usize, 0);
                let good = have.get(b.index as usize)
                    && store.read_block_for_upload(b.index, b.begin, &mut buf[start..])?;
                if !good {
                    buf.truncate(header);
                    refused.push(b);
                    // Later bitfields and requests see it gone.
                    if have.clear(b.index as usize) {
                        lost.push(b.index);
                    }
                    continue;
                }
                payload += b.length as u64;
            }
            Ok(UploadRead {
                data: buf.freeze(),
                payload,
                refused,
                lost,
            })
        });
        Some(tokio::spawn(async move {
            let r = read.await;
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            r.unwrap_or_else(|e| {
                Err(crate::store::StoreError::Io {
                    path: PathBuf::new(),
                    err: std::io::Error::other(format!("upload read task failed: {e}")),
                })
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitfield::AtomicBitfield;
    use crate::metainfo::{Metainfo, NewTorrent};
    use crate::store::{Layout, Store};

    /// A connection's writer on one end of a loopback TCP pair, and the
    /// other end to read what it wrote.
    async fn writer_on_loopback(counters: [Arc<AtomicU64>; 2]) -> (Writer, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (b, _) = l.accept().await.unwrap();
        let (_r, w) = mse::Stream::plain(Socket::Tcp(a)).into_split();
        (Writer::spawn(w, counters), b)
    }

    /// Small messages are gathered and big chunks go out on their own,
    /// but the bytes leave in the order they were queued, and each
    /// chunk's payload is counted once it is written.
    #[tokio::test]
    async fn writer_keeps_order_when_small_and_big_chunks_mix() {
        use tokio::io::AsyncReadExt;
        let counters: [Arc<AtomicU64>; 2] = Default::default();
        let counted = counters[0].clone();
        let (mut writer, mut b) = writer_on_loopback(counters).await;
        // Queued all at once: runs of small chunks, big ones between them,
        // and small ones that fill a batch past COALESCE_MAX.
        let mut want = Vec::new();
        let mut payload = 0u64;
        for i in 0..200u32 {
            let len = match i % 10 {
                3 => 100 << 10,
                7 => COALESCE_MAX,
                _ => 1 + (i as usize * 997) % 3000,
            };
            let chunk: Vec<u8> = (0..len).map(|k| (i as usize + k) as u8).collect();
            want.extend_from_slice(&chunk);
            payload += u64::from(i);
            writer.send(Bytes::from(chunk), u64::from(i)).unwrap();
        }
        drop(writer);
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "bytes out of order");
        assert_eq!(counted.load(Ordering::Relaxed), payload);
    }

    /// Under an upload limit a batch is a quarter second of it (a block at
    /// least), so data leaves as it is allowed to, not as one late burst.
    #[test]
    fn upload_batches_follow_the_limit() {
        assert_eq!(upload_batch_cap(None), UPLOAD_BATCH_BYTES);
        assert_eq!(upload_batch_cap(Some(40 << 10)), 16 << 10);
        assert_eq!(upload_batch_cap(Some(1 << 20)), 256 << 10);
        assert_eq!(upload_batch_cap(Some(u64::MAX)), UPLOAD_BATCH_BYTES);
    }

    /// A connection's message handling over a real loopback socket.
    async fn with_conn<T>(pieces: u32, f: impl FnOnce(&mut Conn<'_>) -> T) -> T {
        let t = NewTorrent {
            name: "t".into(),
            length: pieces as u64 * 16384,
            piece_length: 16384,
            pieces: vec![0; 20 * pieces as usize],
            ..Default::default()
        };
        let meta = Metainfo::from_bytes(&t.to_bytes()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let shared = Shared {
            peer_id: [1; 20],
            ..Shared::for_test(
                &meta,
                Store::open_read(Layout::from_metainfo(&meta), dir.path()),
                AtomicBitfield::from_bitfield(&Bitfield::new(pieces as usize)),
            )
        };
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let _b = l.accept().await.unwrap();
        let (_r, w) = mse::Stream::plain(Socket::Tcp(a)).into_split();
        let mut c = Conn::new(&shared, true, w, Arc::default());
        f(&mut c)
    }

    /// The answering side of BEP 52 hash requests over a real socket: a
    /// piece-layer request of a file whose layer we know gets the hashes
    /// and the uncles that lead to its root; anything else gets a hash
    /// reject, never silence and never a dropped connection. Answers are
    /// only taken for requests we sent.
    #[tokio::test]
    async fn hash_requests_are_answered_or_rejected() {
        use crate::metainfo::merkle::{self, Hash};
        use crate::metainfo::NewV2;
        const PL: u64 = 16384;
        // A 600-piece file (its layer a 1024-wide tree) and a one-piece one.
        let big: Vec<u8> = (0..600 * PL as usize - 9)
            .map(|i| (i % 253) as u8)
            .collect();
        let layer: Vec<Hash> = big
            .chunks(PL as usize)
            .map(|p| merkle::piece_hash(p, PL, big.len() as u64))
            .collect();
        let root = merkle::root_from_layer(&layer, PL);
        let small_root = merkle::file_root(b"tiny", PL);
        let t = NewTorrent {
            name: "t".into(),
            piece_length: PL,
            v2: Some(NewV2 {
                tree: vec![
                    (vec!["big".into()], big.len() as u64, Some(root)),
                    (vec!["small".into()], 4, Some(small_root)),
                ],
                layers: vec![(root, layer.concat())],
            }),
            ..Default::default()
        };
        let meta = Metainfo::from_bytes(&t.to_bytes()).unwrap();
        let pieces = meta.piece_count();
        let dir = tempfile::tempdir().unwrap();
        let shared = Shared {
            peer_id: [1; 20],
            ..Shared::for_test(
                &meta,
                Store::open_read(Layout::from_metainfo(&meta), dir.path()),
                AtomicBitfield::from_bitfield(&Bitfield::new(pieces as usize)),
            )
        };
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (mut b, _) = l.accept().await.unwrap();
        let (_r, w) = mse::Stream::plain(Socket::Tcp(a)).into_split();
        let mut c = Conn::new(&shared, true, w, Arc::default());
        let good = HashRequest {
            root,
            base: 0,
            index: 512,
            length: 128,
            proof_layers: 9,
        };
        // Another layer than the piece layer (16 KiB pieces: 0), not a
        // power of two, not aligned, past the layer, proofs beyond the
        // root, a file with no layer, no such file.
        let bad = [
            HashRequest { base: 1, ..good },
            HashRequest { length: 3, ..good },
            HashRequest { index: 64, ..good },
            HashRequest {
                index: 1024,
                ..good
            },
            HashRequest {
                proof_layers: 10,
                ..good
            },
            HashRequest {
                root: small_root,
                ..good
            },
            HashRequest {
                root: [9; 32],
                ..good
            },
        ];
        for r in std::iter::once(good).chain(bad.iter().copied()) {
            assert!(matches!(c.on_message(Message::HashRequest(r)), Ok(None)));
        }
        c.writer.flush().unwrap();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        while got.len() < 1 + bad.len() {
            match wire::decode(&mut buf, 1 << 20).unwrap() {
                Some(m) => got.push(m),
                None => {
                    b.read_buf(&mut buf).await.unwrap();
                }
            }
        }
        let Message::Hashes { req, hashes } = &got[0] else {
            panic!("{:?}", got[0]);
        };
        assert_eq!(*req, good);
        let hashes: Vec<Hash> = hashes
            .chunks_exact(32)
            .map(|c| c.try_into().unwrap())
            .collect();
        // 128 nodes, then the uncles of layers 7, 8 and 9.
        assert_eq!(hashes.len(), 128 + 3);
        let (nodes, uncles) = hashes.split_at(128);
        assert_eq!(&nodes[..88], &layer[512..]);
        assert!(nodes[88..].iter().all(|h| *h == merkle::pad(0)));
        assert!(merkle::check_proof(&root, 0, 10, 512, nodes, uncles));
        for (m, r) in got[1..].iter().zip(bad.iter()) {
            assert_eq!(*m, Message::HashReject(*r));
        }
        // Answers to requests we never sent are not passed on.
        let answer = Message::Hashes {
            req: good,
            hashes: Bytes::from(hashes.concat()),
        };
        assert!(matches!(c.on_message(answer.clone()), Ok(None)));
        assert!(matches!(c.on_message(Message::HashReject(good)), Ok(None)));
        c.on_cmd(PeerCmd::HashRequest(good));
        assert!(matches!(
            c.on_message(answer.clone()),
            Ok(Some(PeerEvent::Hashes { req, ref hashes })) if req == good && hashes.len() == 131
        ));
        // Once: a second copy is unrequested.
        assert!(matches!(c.on_message(answer), Ok(None)));
        c.on_cmd(PeerCmd::HashRequest(good));
        assert!(matches!(
            c.on_message(Message::HashReject(good)),
            Ok(Some(PeerEvent::HashRejected(r))) if r == good
        ));
    }

    /// Leaf hashes (base layer 0) over a real socket, read from the
    /// store: the leaves of a piece we have, with uncles up to the root,
    /// check against the file's root; a request covering a piece we lack
    /// gets a hash reject.
    #[tokio::test]
    async fn leaf_hash_requests_are_served_from_the_data() {
        use crate::metainfo::merkle::{self, Hash};
        use crate::metainfo::NewV2;
        const PL: u64 = 4 * merkle::BLOCK as u64;
        // 3 pieces of 4 blocks, the last one short: a tree 16 leaves wide.
        let data: Vec<u8> = (0..(2 * PL + 2 * merkle::BLOCK as u64 + 7) as usize)
            .map(|i| (i % 249) as u8)
            .collect();
        let layer: Vec<Hash> = data
            .chunks(PL as usize)
            .map(|p| merkle::piece_hash(p, PL, data.len() as u64))
            .collect();
        let root = merkle::root_from_layer(&layer, PL);
        let t = NewTorrent {
            name: "t".into(),
            piece_length: PL,
            v2: Some(NewV2 {
                tree: vec![(vec![], data.len() as u64, Some(root))],
                layers: vec![(root, layer.concat())],
            }),
            ..Default::default()
        };
        let meta = Metainfo::from_bytes(&t.to_bytes()).unwrap();
        let pieces = meta.piece_count();
        assert_eq!(pieces, 3);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_write(Layout::from_metainfo(&meta), dir.path()).unwrap();
        let have = AtomicBitfield::from_bitfield(&Bitfield::new(3));
        for p in [0u32, 2] {
            let start = (u64::from(p) * PL) as usize;
            let end = (start + PL as usize).min(data.len());
            store.write_piece(p, &data[start..end]).unwrap();
            have.set(p as usize);
        }
        let shared = Shared {
            peer_id: [1; 20],
            ..Shared::for_test(&meta, store, have)
        };
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (mut b, _) = l.accept().await.unwrap();
        let (_r, w) = mse::Stream::plain(Socket::Tcp(a)).into_split();
        let mut c = Conn::new(&shared, true, w, Arc::default());
        let mut read = BytesMut::new();
        let mut next = async || loop {
            if let Some(m) = wire::decode(&mut read, 1 << 20).unwrap() {
                return m;
            }
            b.read_buf(&mut read).await.unwrap();
        };
        // The last piece's leaves (2 real, 2 past the file's end), with
        // uncles up to the root (layers 2 and 3).
        let last = HashRequest {
            root,
            base: 0,
            index: 8,
            length: 4,
            proof_layers: 3,
        };
        assert!(matches!(c.on_message(Message::HashRequest(last)), Ok(None)));
        let Message::Hashes { req, hashes } = next().await else {
            panic!("no hashes");
        };
        assert_eq!(req, last);
        let hashes: Vec<Hash> = hashes
            .chunks_exact(32)
            .map(|c| c.try_into().unwrap())
            .collect();
        assert_eq!(hashes.len(), 4 + 2);
        let (nodes, uncles) = hashes.split_at(4);
        assert_eq!(&nodes[..3], &merkle::leaves(&data[2 * PL as usize..])[..]);
        assert_eq!(nodes[3], merkle::pad(0));
        assert!(merkle::check_proof(&root, 0, 4, 8, nodes, uncles));
        // Two leaves inside piece 0, their uncle inside the piece too.
        let two = HashRequest {
            index: 2,
            length: 2,
            proof_layers: 1,
            ..last
        };
        assert!(matches!(c.on_message(Message::HashRequest(two)), Ok(None)));
        let Message::Hashes { hashes, .. } = next().await else {
            panic!("no hashes");
        };
        assert_eq!(hashes.len(), 3 * 32);
        // Piece 1 is not had.
        let lacking = HashRequest {
            index: 4,
            proof_layers: 1,
            ..last
        };
        assert!(matches!(
            c.on_message(Message::HashRequest(lacking)),
            Ok(None)
        ));
        // While both earlier jobs are still counted the reject comes from
        // the connection's own writer, which the run loop flushes after
        // each message; so does the test (it hung once in a few runs).
        c.writer.flush().unwrap();
        assert_eq!(next().await, Message::HashReject(lacking));
    }

    /// Payload counts as uploaded when the socket took it, not when it was
    /// queued: to a peer that reads nothing, at most the kernel's buffers'
    /// worth is counted, and the rest once it reads.
    #[tokio::test]
    async fn uploads_count_when_written() {
        use tokio::io::AsyncReadExt;
        let counters: [Arc<AtomicU64>; 2] = Default::default();
        let (mut writer, mut b) = writer_on_loopback(counters.clone()).await;
        let total: u64 = 64 << 20;
        let chunk = Bytes::from(vec![7u8; 1 << 20]);
        for _ in 0..total >> 20 {
            writer.send(chunk.clone(), chunk.len() as u64).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let early = counters[0].load(Ordering::Relaxed);
        assert!(early < total / 2, "{early} of {total} counted unread");
        assert!(writer.queued() > 0);
        let mut got = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        while got < total {
            let n = b.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got += n as u64;
        }
        for _ in 0..100 {
            if counters[1].load(Ordering::Relaxed) == total {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(counters[0].load(Ordering::Relaxed), total);
        assert_eq!(counters[1].load(Ordering::Relaxed), total);
    }

    /// Regression (interop with aria2): aria2 sends a fresh bitfield
    /// mid-connection instead of `have`s; it is an update, not an error.
    #[tokio::test]
    async fn a_later_bitfield_is_an_update() {
        with_conn(10, |c| {
            let first = c.on_message(Message::Bitfield(Bytes::from_static(&[0x80, 0x00])));
            assert!(matches!(first, Ok(Some(PeerEvent::Bitfield(ref b))) if b.count_ones() == 1));
            let later = c.on_message(Message::Bitfield(Bytes::from_static(&[0xc0, 0x40])));
            assert!(matches!(later, Ok(Some(PeerEvent::Bitfield(ref b))) if b.count_ones() == 3));
            // Still refused when malformed.
            assert!(c
                .on_message(Message::Bitfield(Bytes::from_static(&[0xff, 0xff])))
                .is_err());
            assert!(c
                .on_message(Message::Bitfield(Bytes::from_static(&[0xff])))
                .is_err());
            // have-all after a bitfield, as aria2 sends once finished.
            assert!(matches!(
                c.on_message(Message::HaveAll),
                Ok(Some(PeerEvent::HaveAll))
            ));
        })
        .await;
    }

    /// BEP 24: a peer's `yourip` is one vote under its address; one peer
    /// (even over several connections) never decides our address, two
    /// that agree do, and a malformed claim is ignored without a
    /// disconnect.
    #[tokio::test]
    async fn yourip_is_a_vote_of_one_peer() {
        let hs = |ip: &[u8]| {
            let ext = ExtendedHandshake {
                yourip: Some(ip.to_vec()),
                ..Default::default()
            };
            Message::Extended {
                id: 0,
                payload: Bytes::from(ext.encode()),
            }
        };
        with_conn(4, |c| {
            c.addr = Some("198.51.100.1:6881".parse().unwrap());
            assert!(c.on_message(hs(&[9, 9, 9, 9])).is_ok());
            assert!(c.on_message(hs(&[9, 9, 9, 9])).is_ok());
            assert_eq!(c.shared.reach.seen_by_peers(), None, "a liar alone");
            assert!(c.on_message(hs(&[1, 2, 3])).is_ok(), "malformed: ignored");
            c.addr = Some("203.0.114.9:51413".parse().unwrap());
            assert!(c.on_message(hs(&[9, 9, 9, 9])).is_ok());
            assert_eq!(c.shared.reach.seen_by_peers(), Some([9, 9, 9, 9].into()));
        })
        .await;
    }

    #[tokio::test]
    async fn requests_are_checked_before_queueing() {
        with_conn(4, |c| {
            c.am_choking = false;
            let ok = BlockRef {
                index: 3,
                begin: 0,
                length: 16384,
            };
            assert!(c.on_message(Message::Request(ok)).is_ok());
            // We do not have piece 3: with the fast extension, a reject.
            assert!(c.uploads.is_empty());
            for bad in [
                BlockRef {
                    index: 4,
                    begin: 0,
                    length: 16384,
                },
                BlockRef {
                    index: 0,
                    begin: 16000,
                    length: 1000,
                },
                BlockRef {
                    index: 0,
                    begin: 0,
                    length: 0,
                },
                BlockRef {
                    index: 0,
                    begin: 0,
                    length: 256 << 10,
                },
            ] {
                assert!(c.on_message(Message::Request(bad)).is_err(), "{bad:?}");
            }
            assert!(c.on_message(Message::Have(4)).is_err());
        })
        .await;
    }

    /// We advertise `reqq` = MAX_PEER_REQUESTS and hold to it: requests past
    /// it are rejected (fast extension), not queued.
    #[tokio::test]
    async fn our_reqq_bounds_the_upload_queue() {
        with_conn(4, |c| {
            c.am_choking = false;
            c.shared.have.set(0);
            let b = BlockRef {
                index: 0,
                begin: 0,
                length: 16384,
            };
            for _ in 0..MAX_PEER_REQUESTS + 100 {
                assert!(c.on_message(Message::Request(b)).is_ok());
            }
            assert_eq!(c.uploads.len(), MAX_PEER_REQUESTS);
        })
        .await;
    }

    #[tokio::test]
    async fn unrequested_data_is_ignored_then_refused() {
        with_conn(4, |c| {
            let data = Bytes::from(vec![0u8; 16384]);
            let mut dropped = false;
            for _ in 0..600 {
                match c.on_message(Message::Piece {
                    index: 0,
                    begin: 0,
                    data: data.clone(),
                }) {
                    Ok(None) => {}
                    Ok(Some(_)) => panic!("unrequested block forwarded"),
                    Err(_) => {
                        dropped = true;
                        break;
                    }
                }
            }
            assert!(dropped);
            // A requested block is forwarded once.
            let b = BlockRef {
                index: 1,
                begin: 0,
                length: 16384,
            };
            c.requested.insert(b);
            let got = c.on_message(Message::Piece {
                index: 1,
                begin: 0,
                data: data.clone(),
            });
            assert!(matches!(got, Ok(Some(PeerEvent::Block { .. }))));
        })
        .await;
    }

    /// A peer without MSE: it drops a connection that does not open with
    /// the plain handshake, and answers one that does. Counts connections.
    async fn plain_only_peer() -> (SocketAddr, Arc<AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                seen.fetch_add(1, Ordering::SeqCst);
                let mut hs = [0u8; Handshake::LEN];
                if s.read_exact(&mut hs[..20]).await.is_err()
                    || hs[0] != 19
                    || hs[1..20] != wire::PROTOCOL[..]
                {
                    continue; // dropped: closed
                }
                let Ok(_) = s.read_exact(&mut hs[20..]).await else {
                    continue;
                };
                let Ok(theirs) = Handshake::decode(&hs) else {
                    continue;
                };
                let ours = Handshake::new(theirs.info_hash, [7u8; 20]);
                s.write_all(&ours.encode()).await.unwrap();
                // Stay open until the other side closes.
                let _ = s.read(&mut [0u8; 1]).await;
            }
        });
        (addr, count)
    }

    #[tokio::test]
    async fn prefer_retries_a_peer_without_mse_in_plain_text_once() {
        let (addr, count) = plain_only_peer().await;
        let (stream, theirs) = connect(
            &Net::default(),
            addr,
            Handshake::new([5; 20], [6; 20]),
            Policy::Prefer,
            &[],
        )
        .await
        .unwrap();
        assert!(!stream.is_encrypted());
        assert_eq!(theirs.peer_id, [7; 20]);
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn require_never_falls_back_to_plain_text() {
        let (addr, count) = plain_only_peer().await;
        let err = connect(
            &Net::default(),
            addr,
            Handshake::new([5; 20], [6; 20]),
            Policy::Require,
            &[],
        )
        .await
        .err()
        .unwrap();
        assert!(matches!(err, PeerError::Mse(_)), "{err}");
        assert_eq!(count.load(Ordering::SeqCst), 1);
        // And plain dials plain at once.
        let (stream, _) = connect(
            &Net::default(),
            addr,
            Handshake::new([5; 20], [6; 20]),
            Policy::Plain,
            &[],
        )
        .await
        .unwrap();
        assert!(!stream.is_encrypted());
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    /// Our dialling side against our answering side over a real socket,
    /// each policy pair that agrees: the handshakes cross, and a message
    /// after them arrives intact through the split halves.
    #[tokio::test]
    async fn dialled_and_accepted_streams_talk_through_the_halves() {
        use Policy::*;
        for (ours, theirs, rc4) in [
            (Prefer, Prefer, false),
            (Prefer, Require, true),
            (Require, Prefer, true),
            (Plain, Prefer, false),
        ] {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let (tcp, _) = l.accept().await.unwrap();
                let (mut s, hs, _) = read_incoming_handshake(Socket::Tcp(tcp), &[[5; 20]], theirs)
                    .await
                    .unwrap();
                s.send(&Handshake::new(hs.info_hash, [8; 20]).encode())
                    .await
                    .unwrap();
                let (mut r, mut w) = s.into_split();
                let mut got = vec![0u8; 300_000];
                r.read_exact(&mut got).await.unwrap();
                w.write_bytes(Bytes::from(got)).await.unwrap();
                (hs, w)
            });
            let (s, hs) = connect(
                &Net::default(),
                addr,
                Handshake::new([5; 20], [6; 20]),
                ours,
                &[],
            )
            .await
            .unwrap();
            assert_eq!(s.is_encrypted(), rc4, "{ours}/{theirs}");
            assert_eq!(hs.peer_id, [8; 20]);
            let (mut r, mut w) = s.into_split();
            let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
            let mut buf = BytesMut::from(&data[..]);
            w.write_buf(&mut buf).await.unwrap();
            let mut echo = vec![0u8; data.len()];
            r.read_exact(&mut echo).await.unwrap();
            assert!(echo == data, "{ours}/{theirs}: echo differs");
            let (their_hs, _w) = server.await.unwrap();
            assert_eq!(their_hs.peer_id, [6; 20]);
        }
    }

    /// A hybrid's peer may answer our v1 handshake under the torrent's
    /// other (v2) hash, in plain text or inside MSE: taken when it is one
    /// of the torrent's hashes, refused when it is not.
    #[tokio::test]
    async fn an_answer_under_another_hash_of_the_torrent_is_taken() {
        for policy in [Policy::Plain, Policy::Require] {
            for (accept, ok) in [(&[[5; 20], [9; 20]][..], true), (&[[5; 20]][..], false)] {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = l.local_addr().unwrap();
                let server = tokio::spawn(async move {
                    let (tcp, _) = l.accept().await.unwrap();
                    let (mut s, hs, _) =
                        read_incoming_handshake(Socket::Tcp(tcp), &[[5; 20]], Policy::Prefer)
                            .await
                            .unwrap();
                    assert_eq!(hs.info_hash, [5; 20]);
                    s.send(&Handshake::new([9; 20], [8; 20]).encode())
                        .await
                        .unwrap();
                    let _ = s.read(&mut [0u8; 1]).await;
                });
                let hs = Handshake::new([5; 20], [6; 20]);
                let got = connect(&Net::default(), addr, hs, policy, accept).await;
                match got {
                    Ok((_, theirs)) if ok => assert_eq!(theirs.info_hash, [9; 20]),
                    Err(PeerError::WrongInfoHash) if !ok => {}
                    other => panic!("{policy}, accept {accept:?}: {:?}", other.map(|r| r.1)),
                }
                server.abort();
            }
        }
    }

    #[tokio::test]
    async fn require_refuses_a_plain_handshake_and_plain_an_rc4_only_peer() {
        for (dial, answer) in [
            (Policy::Plain, Policy::Require),
            (Policy::Require, Policy::Plain),
        ] {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let (tcp, _) = l.accept().await.unwrap();
                read_incoming_handshake(Socket::Tcp(tcp), &[[5; 20]], answer)
                    .await
                    .err()
            });
            assert!(connect(
                &Net::default(),
                addr,
                Handshake::new([5; 20], [6; 20]),
                dial,
                &[]
            )
            .await
            .is_err());
            assert!(server.await.unwrap().is_some(), "{dial}/{answer}");
        }
    }
}
