//! A scripted peer for hostile-input tests: speaks just enough of the wire
//! protocol (through shoal's own codec) to misbehave on purpose.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use shoal::peer::wire::{self, Handshake, Message};

pub struct Fake {
    pub s: TcpStream,
    buf: BytesMut,
}

impl Fake {
    pub fn new(s: TcpStream) -> Fake {
        s.set_nodelay(true).ok();
        Fake {
            s,
            buf: BytesMut::new(),
        }
    }

    /// Connects and completes a handshake for `info_hash`.
    pub fn connect(port: u16, info_hash: [u8; 20], peer_id: [u8; 20]) -> (Fake, Handshake) {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let mut f = Fake::new(s);
        f.send_raw(&Handshake::new(info_hash, peer_id).encode());
        let hs = f.read_handshake().expect("handshake");
        (f, hs)
    }

    pub fn read_handshake(&mut self) -> std::io::Result<Handshake> {
        let mut hs = [0u8; 68];
        self.s.set_read_timeout(Some(Duration::from_secs(10)))?;
        self.s.read_exact(&mut hs)?;
        Handshake::decode(&hs).map_err(std::io::Error::other)
    }

    pub fn send_raw(&mut self, b: &[u8]) -> bool {
        self.s.write_all(b).is_ok()
    }

    pub fn send(&mut self, m: &Message) -> bool {
        let mut out = BytesMut::new();
        wire::encode(m, &mut out);
        self.send_raw(&out)
    }

    /// Next message within `limit`; None on timeout. Err on EOF/reset.
    pub fn recv(&mut self, limit: Duration) -> std::io::Result<Option<Message>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(m) = wire::decode(&mut self.buf, 1 << 24).map_err(std::io::Error::other)? {
                return Ok(Some(m));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.s.set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 65536];
            match self.s.read(&mut chunk) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits for a message matching `f`, skipping others.
    pub fn wait_for(&mut self, limit: Duration, f: impl Fn(&Message) -> bool) -> Option<Message> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match self.recv(deadline.saturating_duration_since(Instant::now())) {
                Ok(Some(m)) if f(&m) => return Some(m),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return None,
            }
        }
        None
    }

    /// True when the other side closes the connection within `limit`
    /// (reading and discarding whatever it still sends).
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if self
                .s
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .is_err()
            {
                return true;
            }
            let mut chunk = [0u8; 65536];
            match self.s.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                    return false
                }
                Err(_) => return true,
            }
        }
        false
    }
}

/// A magnet peer that does everything right up to the metadata and then
/// only sends keep-alives: plain handshake with the extension bit, an
/// extended handshake advertising `ut_metadata` and the real metadata
/// size, and never an answer to a request. Encrypted (MSE) attempts are
/// closed, as a peer without encryption does. Every connection lives until
/// the peer is dropped, which stops and joins its threads.
pub struct SilentPeer {
    pub port: u16,
    /// `ut_metadata` requests received, over all connections.
    pub requests: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Plain-text handshakes for our torrent received (connections).
    pub handshakes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentPeer {
    pub fn start(info_hash: [u8; 20], size: u64) -> SilentPeer {
        let ext = format!("d1:md11:ut_metadatai7ee13:metadata_sizei{size}ee");
        SilentPeer::with_handshake(info_hash, ext.into_bytes())
    }

    /// The same, sending `ext` as its extended handshake.
    pub fn with_handshake(info_hash: [u8; 20], ext: Vec<u8>) -> SilentPeer {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        let port = l.local_addr().expect("addr").port();
        let requests = Arc::new(AtomicU64::new(0));
        let handshakes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let counts = (requests.clone(), handshakes.clone());
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut conns = Vec::new();
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let (counts, st, ext) = (counts.clone(), st.clone(), ext.clone());
                        conns.push(std::thread::spawn(move || {
                            silent(s, info_hash, &ext, (&counts.0, &counts.1), &st);
                        }));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        SilentPeer {
            port,
            requests,
            handshakes,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SilentPeer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn silent(
    s: TcpStream,
    info_hash: [u8; 20],
    ext: &[u8],
    (requests, handshakes): (&std::sync::atomic::AtomicU64, &std::sync::atomic::AtomicU64),
    stop: &std::sync::atomic::AtomicBool,
) {
    use std::sync::atomic::Ordering;
    let _ = s.set_nonblocking(false);
    let mut f = Fake::new(s);
    let Ok(hs) = f.read_handshake() else { return };
    if hs.info_hash != info_hash {
        return;
    }
    handshakes.fetch_add(1, Ordering::Relaxed);
    let mut ours = Handshake::new(info_hash, *b"-XX0001-silentsilent");
    ours.reserved[5] |= 0x10;
    if !f.send_raw(&ours.encode())
        || !f.send(&Message::Extended {
            id: 0,
            payload: ext.to_vec().into(),
        })
    {
        return;
    }
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match f.recv(Duration::from_millis(200)) {
            Ok(Some(Message::Extended { id: 7, .. })) => {
                requests.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(_) => return,
        }
        if last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            if !f.send_raw(&[0, 0, 0, 0]) {
                return;
            }
        }
    }
}
