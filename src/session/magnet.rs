//! A magnet link becomes a torrent here, for `shoal download MAGNET` and
//! the service alike: the info dictionary is fetched from the swarm (BEP 9,
//! `discovery::fetch`) through the session's DHT node and encryption
//! policy, made into a .torrent with the link's trackers and web seeds,
//! and parsed; the peers found on the way are kept for the download.

use std::net::SocketAddr;

use tokio::sync::watch;

use crate::discovery::fetch::{self, FetchError, Status};
use crate::metainfo::magnet::Magnet;
use crate::metainfo::{Metainfo, MetainfoError};
use crate::peer::new_peer_id;
use crate::torrent::PeerSource;

use super::Session;

/// A magnet link's torrent.
pub struct Resolved {
    pub meta: Metainfo,
    /// The .torrent file made of the fetched metadata.
    pub torrent: Vec<u8>,
    /// Bytes of the info dictionary fetched.
    pub info_len: usize,
    /// Peers found on the way (not those given), with where from.
    pub learned: Vec<(SocketAddr, PeerSource)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("interrupted while fetching metadata")]
    Interrupted,
    #[error(transparent)]
    Fetch(FetchError),
    #[error("the fetched metadata is not a valid torrent: {0}")]
    Invalid(MetainfoError),
}

impl Session {
    /// Fetches the metadata of `magnet` from the swarm and from `peers`
    /// (given by hand), telling how it goes on `status`, until it is in or
    /// `stop` is set.
    pub async fn resolve_magnet(
        &self,
        magnet: &Magnet,
        peers: &[SocketAddr],
        status: watch::Sender<Status>,
        stop: watch::Receiver<bool>,
    ) -> Result<Resolved, ResolveError> {
        let got = fetch::fetch(
            magnet,
            peers,
            self.inner.dht.as_ref(),
            fetch::Dialling {
                peer_id: new_peer_id(),
                encryption: self.inner.encryption,
                net: self.inner.net.clone(),
            },
            status,
            stop,
        )
        .await;
        let (info, found) = match got {
            Ok(x) => x,
            Err(FetchError::Interrupted) => return Err(ResolveError::Interrupted),
            Err(e) => return Err(ResolveError::Fetch(e)),
        };
        let torrent =
            crate::peer::metadata::torrent_file(&info, &magnet.trackers, &magnet.web_seeds);
        let meta = Metainfo::from_bytes(&torrent).map_err(ResolveError::Invalid)?;
        let learned = found
            .into_iter()
            .filter(|(a, _)| !a.ip().is_unspecified() && !peers.contains(a))
            .collect();
        Ok(Resolved {
            meta,
            torrent,
            info_len: info.len(),
            learned,
        })
    }
}
