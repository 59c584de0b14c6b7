//! What is particular to web seeds (BEP 19) in the table of sources:
//! they join by URL, count as a seed while usable, and back off after a
//! failed request (5 s doubling to 10 min; they stop counting meanwhile).

use std::time::Duration;

use crate::peer::{PeerCmd, PeerKey};
use crate::torrent::status::{web_reason, State};
use crate::torrent::webseed::WebEvent;

use super::sources::Source;
use super::{Action, Core};

/// Wait before asking a web seed again after `failures` failed requests in
/// a row: 5 s, 10 s, 20 s … capped at 10 min.
fn web_retry_delay(failures: u32) -> Duration {
    Duration::from_secs((5u64 << failures.saturating_sub(1).min(7)).min(600))
}

impl Core {
    /// Starts using the web seed `url` (already checked usable), unless it
    /// is in use or nothing is missing.
    pub(super) fn add_web_seed(&mut self, url: String) {
        let shown = crate::out::escape(&url).into_owned();
        if self.picker.is_complete() || self.sources.webs().any(|(_, w)| w.url == shown) {
            return;
        }
        let key = self.new_key();
        tracing::debug!("web seed {shown}: in use");
        self.picker.add_seed();
        self.sources.insert(key, Source::web(shown, self.now));
        let unwanted = self.picker.unwanted().cloned();
        self.out
            .push_back(Action::StartWebSeed { key, url, unwanted });
        if self.state == State::Connecting {
            self.state = State::Downloading;
        }
        self.fill(key);
    }

    pub(super) fn on_web_event(&mut self, key: PeerKey, ev: WebEvent) {
        // A banned server's late data is not taken.
        let Some(w) = self.sources.get(key).and_then(|s| s.as_web()) else {
            return;
        };
        match ev {
            WebEvent::Block { block, data } => self.on_block(key, block, data),
            WebEvent::Offered { block, data } => {
                // A new piece only while hashing keeps up (memory stays
                // bounded); a later read of the file brings it again.
                // Asked of it a moment ago: the ask is answered.
                if self.picker.is_requested(key, block) {
                    self.send(key, PeerCmd::Cancel(block));
                }
                if !self.assembly.backlogged(self.meta.piece_length) {
                    self.picker.start_if_free(block.index);
                }
                self.on_block(key, block, data);
            }
            WebEvent::IgnoresRanges => {
                let Some(w) = self.sources.get_mut(key).and_then(|s| s.as_web_mut()) else {
                    return;
                };
                w.whole_files = true;
                tracing::info!(
                    "web seed {}: ignores Range requests; reading whole files from the start",
                    w.url
                );
            }
            WebEvent::Failed { blocks, why } => {
                let active = w.active();
                for b in blocks {
                    self.picker.release(key, b);
                }
                if active {
                    self.web_failed(key, &why);
                }
                self.fill_all();
            }
        }
    }

    /// A request to a web seed failed: its blocks go back to the picker and
    /// it is left alone for a while, longer after each failure in a row.
    pub(super) fn web_failed(&mut self, key: PeerKey, why: &str) {
        let now = self.now;
        let Some(w) = self.sources.get_mut(key).and_then(|s| s.as_web_mut()) else {
            return;
        };
        w.failures += 1;
        let wait = web_retry_delay(w.failures);
        w.retry_at = Some(now + wait);
        let counted = std::mem::replace(&mut w.counted, false);
        let url = w.url.clone();
        self.out.push_back(Action::ResetWebSeed(key));
        if counted {
            self.picker.remove_seed();
        }
        self.picker.peer_gone(key);
        tracing::warn!(retry_in = wait.as_secs(), "web seed {url}: {why}");
        self.web_failure = Some((url, web_reason(why), Some(wait.as_secs())));
    }

    /// A web seed's back-off is over: it counts as a seed and is asked again.
    pub(super) fn web_retry(&mut self, key: PeerKey) {
        let Some(s) = self.sources.get_mut(key) else {
            return;
        };
        s.last_block = self.now;
        let Some(w) = s.as_web_mut() else {
            return;
        };
        w.retry_at = None;
        if !w.counted {
            w.counted = true;
            self.picker.add_seed();
        }
    }

    /// Stops using a web seed (banned, or nothing left to fetch): its task
    /// ends. Its URL, if it was one.
    pub(super) fn drop_web_seed(&mut self, key: PeerKey, why: &str) -> Option<String> {
        let w = self.sources.get(key)?.as_web()?;
        let (url, counted) = (w.url.clone(), w.counted);
        self.sources.remove(key);
        if counted {
            self.picker.remove_seed();
        }
        self.picker.peer_gone(key);
        self.send(key, PeerCmd::Close(why.to_string()));
        Some(url)
    }
}
