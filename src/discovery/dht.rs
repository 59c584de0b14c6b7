//! The DHT (BEP 5): one node per process, shared by every torrent, through
//! the `mainline` crate. It finds peers for an info-hash (`get_peers`) and
//! tells the network that we have one (`announce_peer`).
//!
//! The node answers queries from the start (server mode), as BitTorrent
//! clients' nodes do: a swarm without trackers only works if its members'
//! nodes keep each other's routing going. Nodes known at exit are saved in
//! the state folder and given as extra bootstrap nodes next time, so a
//! restart does not depend on the bootstrap routers alone.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use mainline::async_dht::AsyncDht;
use mainline::Id;
use thiserror::Error;
use tokio::sync::Semaphore;

/// Most peers taken from one lookup: more than a download connects to.
const MAX_PEERS: usize = 400;
/// A lookup that has not finished by then is cut short with what it found.
const LOOKUP_TIME: Duration = Duration::from_secs(30);
const STATE_FILE: &str = "dht-nodes";
/// Seeds' lookup rounds (announce_peer, get_peers) in flight at once: a
/// thousand seeds wait their turn in one queue (first come, first served)
/// instead of sending a thousand lookups' queries together.
const SEED_LOOKUPS_AT_ONCE: usize = 8;

#[derive(Debug, Error)]
pub enum DhtError {
    #[error("DHT: cannot bind UDP port {port}: {err}")]
    Bind { port: u16, err: std::io::Error },
    #[error("DHT: --dht-bootstrap {0}: not a HOST:PORT that resolves to IPv4")]
    Bootstrap(String),
}

#[derive(Clone, Debug, Default)]
pub struct Config {
    /// UDP port; None picks a free one.
    pub port: Option<u16>,
    /// Bootstrap nodes (HOST:PORT); None means the well-known routers.
    pub bootstrap: Option<Vec<String>>,
    /// Where the routing table is kept between runs.
    pub state_dir: Option<PathBuf>,
}

#[derive(Clone)]
pub struct Dht {
    node: AsyncDht,
    state_file: Option<PathBuf>,
    queue: Arc<Semaphore>,
}

impl Dht {
    pub fn start(cfg: Config) -> Result<Dht, DhtError> {
        let mut b = mainline::Dht::builder();
        b.server_mode();
        if let Some(list) = &cfg.bootstrap {
            let mut addrs: Vec<SocketAddrV4> = Vec::new();
            for s in list {
                let found = std::net::ToSocketAddrs::to_socket_addrs(s.as_str())
                    .map_err(|_| DhtError::Bootstrap(s.clone()))?
                    .filter_map(|a| match a {
                        SocketAddr::V4(v4) => Some(v4),
                        SocketAddr::V6(_) => None,
                    })
                    .collect::<Vec<_>>();
                if found.is_empty() {
                    return Err(DhtError::Bootstrap(s.clone()));
                }
                addrs.extend(found);
            }
            b.bootstrap(&addrs);
        }
        let state_file = cfg.state_dir.map(|d| d.join(STATE_FILE));
        let saved: Vec<String> = state_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|s| {
                s.lines()
                    .filter(|l| l.parse::<SocketAddrV4>().is_ok())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if !saved.is_empty() {
            b.extra_bootstrap(&saved);
        }
        let port = cfg.port.unwrap_or(0);
        b.port(port).bind_address(Ipv4Addr::UNSPECIFIED);
        let node = b
            .build()
            .map_err(|err| DhtError::Bind { port, err })?
            .as_async();
        Ok(Dht {
            node,
            state_file,
            queue: Arc::new(Semaphore::new(SEED_LOOKUPS_AT_ONCE)),
        })
    }

    /// Waits for a seed's turn in the process's lookup queue; held while
    /// its lookups run. A download does not queue: it needs peers now,
    /// and a service runs few of them beside its seeds.
    pub async fn turn(&self, seeding: bool) -> Option<tokio::sync::SemaphorePermit<'_>> {
        match seeding {
            // Never closed, so the permit always comes.
            true => self.queue.acquire().await.ok(),
            false => None,
        }
    }

    /// The UDP port the node listens on.
    pub async fn port(&self) -> u16 {
        self.node.info().await.local_addr().port()
    }

    /// Peers the DHT knows for `info_hash`, at most [`MAX_PEERS`], within
    /// [`LOOKUP_TIME`].
    pub async fn get_peers(&self, info_hash: [u8; 20]) -> Vec<SocketAddr> {
        let Ok(id) = Id::from_bytes(info_hash) else {
            return Vec::new();
        };
        let mut stream = self.node.get_peers(id);
        let mut out: Vec<SocketAddr> = Vec::new();
        let collect = async {
            while let Some(batch) =
                std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await
            {
                for a in batch {
                    let a = SocketAddr::V4(a);
                    if a.port() != 0 && !out.contains(&a) {
                        out.push(a);
                    }
                }
                if out.len() >= MAX_PEERS {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LOOKUP_TIME, collect).await;
        out
    }

    /// Tells the nodes closest to `info_hash` that we serve it on `port`.
    pub async fn announce(&self, info_hash: [u8; 20], port: u16) -> Result<(), String> {
        let id = Id::from_bytes(info_hash).map_err(|e| e.to_string())?;
        match tokio::time::timeout(LOOKUP_TIME, self.node.announce_peer(id, Some(port))).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    /// How many nodes the routing table holds (for the service's metrics).
    pub async fn node_count(&self) -> usize {
        self.node.to_bootstrap().await.len()
    }

    /// Saves the nodes we know, for the next start.
    pub async fn save(&self) {
        let Some(file) = &self.state_file else {
            return;
        };
        let nodes = self.node.to_bootstrap().await;
        if nodes.is_empty() {
            return;
        }
        if let Some(dir) = file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = file.with_extension("tmp");
        let written = std::fs::write(&tmp, nodes.join("\n") + "\n")
            .and_then(|()| std::fs::rename(&tmp, file));
        if let Err(e) = written {
            tracing::debug!("{}: {e}", file.display());
        }
    }
}

/// The state folder: `--state-dir`, else `$XDG_DATA_HOME/shoal`, else
/// `~/.local/share/shoal`.
pub fn default_state_dir() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("shoal"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".local/share/shoal"))
}

/// How often a torrent asks the DHT: soon and often while it has few
/// peers, every 15 minutes once it has enough (BEP 5 nodes forget
/// announces after about 30 minutes).
pub fn next_lookup(peers: usize, wanted: usize) -> Duration {
    if peers < wanted.min(10) {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(15 * 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three local nodes: one announces, another finds it. Nothing leaves
    /// loopback: the first node has no bootstrap, the others use it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn announce_then_find_on_loopback() {
        let boot = mainline::Dht::builder()
            .server_mode()
            .no_bootstrap()
            .bind_address(Ipv4Addr::LOCALHOST)
            .build()
            .unwrap()
            .as_async();
        let boot_addr = boot.info().await.local_addr().to_string();
        let node = |b: &str| {
            Dht::start(Config {
                port: None,
                bootstrap: Some(vec![b.to_string()]),
                state_dir: None,
            })
            .unwrap()
        };
        let a = node(&boot_addr);
        let b = node(&boot_addr);
        let hash = [9u8; 20];
        a.announce(hash, 45678).await.unwrap();
        let mut found = Vec::new();
        for _ in 0..20 {
            found = b.get_peers(hash).await;
            if !found.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(found.iter().any(|p| p.port() == 45678), "{found:?}");
    }

    /// Seeds take turns, SEED_LOOKUPS_AT_ONCE at a time, in order of
    /// arrival; a download never waits for them.
    #[tokio::test]
    async fn seeds_queue_for_lookups_downloads_do_not() {
        let dht = Dht::start(Config {
            port: None,
            bootstrap: Some(Vec::new()),
            state_dir: None,
        })
        .unwrap();
        let mut held = Vec::new();
        for _ in 0..SEED_LOOKUPS_AT_ONCE {
            held.push(dht.turn(true).await);
        }
        assert!(held.iter().all(Option::is_some));
        let wait = Duration::from_millis(50);
        assert!(tokio::time::timeout(wait, dht.turn(true)).await.is_err());
        assert!(tokio::time::timeout(wait, dht.turn(false)).await.is_ok());
        let next = tokio::spawn({
            let dht = dht.clone();
            async move { dht.turn(true).await.is_some() }
        });
        held.pop();
        assert!(next.await.unwrap());
    }

    #[test]
    fn lookups_come_sooner_with_few_peers() {
        assert_eq!(next_lookup(0, 50), Duration::from_secs(30));
        assert_eq!(next_lookup(20, 50), Duration::from_secs(900));
    }
}
