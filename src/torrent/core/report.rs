//! The progress snapshot: the state and the one line that explains it,
//! totals and rates, and the peer list.

use std::sync::Arc;
use std::time::Duration;

use crate::torrent::status::{client_name, PeerView, State, WEB_SEED_LABEL};

use super::{Action, Core};

impl Core {
    /// The state and the line that explains it. Endgame needs sources
    /// with blocks in flight: with nobody to ask, every piece merely looks
    /// "requested by no one", which is not the end of anything.
    pub(super) fn status(&self) -> (State, String) {
        let state = match self.state {
            State::Endgame | State::Downloading | State::Connecting => {
                let in_flight = self.sources.keys().any(|k| self.picker.outstanding(k) > 0);
                if self.sources.peer_count() == 0 && self.sources.active_webs() == 0 {
                    State::Connecting
                } else if self.picker.in_endgame() && in_flight {
                    State::Endgame
                } else {
                    State::Downloading
                }
            }
            s => s,
        };
        if state == State::Seeding && self.super_seed.is_some() {
            return (state, "super-seeding".to_string());
        }
        if state != State::Connecting {
            return (state, state.label().to_string());
        }
        (state, self.waiting_line())
    }

    /// Why no source is connected, as best known.
    fn waiting_line(&self) -> String {
        let connecting = self.dialer.connecting.len();
        if connecting > 0 {
            return match self.dialer.last_failure.as_ref() {
                Some((addr, why, _)) if connecting == 1 => {
                    format!("connecting (last: peer {addr}: {why})")
                }
                _ if connecting == 1 => "connecting to 1 peer".to_string(),
                _ => format!("connecting to {connecting} peers"),
            };
        }
        if let Some((addr, why, wait)) = &self.dialer.last_failure {
            let wait = crate::units::human_eta(Duration::from_secs(*wait));
            format!("peer {addr}: {why}, retry in {wait}")
        } else if let Some((url, why, wait)) = &self.web_failure {
            match wait {
                Some(wait) => format!(
                    "web seed {url}: {why}, retry in {}",
                    crate::units::human_eta(Duration::from_secs(*wait))
                ),
                None => format!("web seed {url}: banned: {why}"),
            }
        } else {
            self.waiting_for_peers()
        }
    }

    /// "waiting for peers: tracker 10.0.0.1:6969 unreachable, DHT off":
    /// why no peer came, from what the trackers said and which sources
    /// are off.
    fn waiting_for_peers(&self) -> String {
        let (trackers, dht) = self.origins;
        let mut why: Vec<String> = Vec::new();
        match &self.tracker_status {
            Some(t) => why.push(t.clone()),
            None if !trackers => why.push("no tracker".into()),
            None => {}
        }
        if self.meta.private {
            why.push("private: trackers only".into());
        } else if !dht {
            why.push("DHT off".into());
        }
        if why.is_empty() {
            "waiting for peers".into()
        } else {
            format!("waiting for peers: {}", why.join(", "))
        }
    }

    /// Brings the snapshot up to date and asks for it to be shown.
    pub(super) fn publish(&mut self) {
        let (state, status) = self.status();
        let p = &mut self.progress;
        p.state = state;
        p.status = status;
        p.down_rate = self.down_rate.get();
        p.up_rate = self.up_rate.get();
        p.downloaded = self.traffic.downloaded;
        p.uploaded = self.traffic.uploaded;
        let web = self.sources.active_webs();
        p.peers = self.sources.peer_count() + web;
        p.known_peers = self.dialer.known.len().max(self.sources.peer_count());
        p.peer_sources.clear();
        for (_, peer) in self.sources.peers() {
            *p.peer_sources.entry(peer.source.label()).or_default() += 1;
        }
        if web > 0 {
            p.peer_sources.insert(WEB_SEED_LABEL, web);
        }
        p.peer_transports.clear();
        for (_, peer) in self.sources.peers() {
            *p.peer_transports.entry(peer.transport.label()).or_default() += 1;
        }
        let now = self.now;
        if self
            .peer_list_at
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.peer_list_at = Some(now);
            self.progress.peer_list = Arc::new(self.peer_views());
        }
        self.out.push_back(Action::Publish);
    }

    fn peer_views(&self) -> Vec<PeerView> {
        let count = self.meta.piece_count().max(1) as f64;
        let mut v: Vec<PeerView> = self
            .sources
            .iter()
            .filter_map(|(_, s)| {
                let p = s.as_peer()?;
                Some(PeerView {
                    addr: p.addr,
                    source: p.source.label(),
                    transport: p.transport,
                    client: client_name(&p.peer_id),
                    progress: if p.seed {
                        1.0
                    } else {
                        p.bits.count_ones() as f64 / count
                    },
                    down_rate: s.down.get(),
                    up_rate: p.up.get(),
                    downloaded: s.downloaded,
                    uploaded: s.uploaded,
                    choked: p.peer_choking,
                    interested: p.am_interested,
                })
            })
            .collect();
        v.sort_by(|a, b| b.down_rate.cmp(&a.down_rate).then(a.addr.cmp(&b.addr)));
        v
    }
}
