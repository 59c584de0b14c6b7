//! Checking a torrent's data again (`POST …/recheck`, Transmission's
//! `torrent-verify`, qBittorrent's `recheck`, the page's Re-check). A
//! running torrent's run is started anew, since a run hashes what is on
//! disk before it goes on. One that is not running (paused, done,
//! failed) is hashed where it stands, read-only, and stays as it was:
//! paused stays paused. Only a finished torrent whose check found less
//! than it had goes back to fetch what is missing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::bitfield::Bitfield;
use crate::metainfo::Metainfo;
use crate::session::check_data;

use super::run::selection_of;
use super::{find_entry, parse_hash, Service, ServiceError, TorrentView};

impl Service {
    /// Checks a torrent's data again (see the module's doc).
    pub async fn recheck(&self, hex_hash: &str) -> Result<TorrentView, ServiceError> {
        let hash = parse_hash(hex_hash)?;
        let run = {
            let mut entries = self.entries();
            let e = find_entry(&mut entries, hash, hex_hash)?;
            let run = e.run.take();
            // Whatever it finds, the fast-resume record no longer stands
            // for the data: the next run hashes everything.
            e.saved.resume = None;
            if run.is_none() && e.rechecking.is_none() {
                if let Some(meta) = e.meta.clone() {
                    let cancel = Arc::new(AtomicBool::new(false));
                    let checked = Arc::new(AtomicU64::new(0));
                    e.rechecking = Some(cancel.clone());
                    e.checked = checked.clone();
                    let (selection, _) = selection_of(&meta, &e.saved.priorities);
                    let (dir, base) = (e.saved.dir.clone(), self.inner.root.clone());
                    let svc = self.clone();
                    tokio::spawn(async move {
                        let sel = selection.as_deref();
                        let got =
                            check_data(&meta, &dir, Some(&base), sel, checked, cancel.clone())
                                .await
                                .map_err(|e| format!("{e:#}").replace(['\n', '\r'], " "));
                        svc.rechecked(hash, &meta, selection.as_deref(), &cancel, got);
                    });
                }
            }
            run
        };
        if run.is_some() {
            super::finish_run(run).await;
            // The run's end may have recorded one.
            if let Some(e) = self.entries().iter_mut().find(|e| e.hash == hash) {
                e.saved.resume = None;
            }
            self.start_entry(hash);
        }
        self.view_of(hash, hex_hash)
    }

    /// The end of a check of a torrent that was not running: its piece map
    /// and bytes are what the check found.
    fn rechecked(
        &self,
        hash: [u8; 20],
        meta: &Metainfo,
        selection: Option<&[bool]>,
        cancel: &Arc<AtomicBool>,
        got: Result<Option<Bitfield>, String>,
    ) {
        let restart = {
            let mut entries = self.entries();
            let Some(e) = entries.iter_mut().find(|e| e.hash == hash) else {
                return;
            };
            // Superseded (the torrent started, which checks anew) or cancelled.
            if !e
                .rechecking
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(c, cancel))
            {
                return;
            }
            e.rechecking = None;
            match got {
                Ok(None) => false,
                Ok(Some(have)) => {
                    let bytes = wanted_bytes(meta, &have, selection);
                    let lost = bytes < e.saved.have_bytes;
                    tracing::info!(
                        "{}: checked, {} of {} pieces good",
                        e.saved.name,
                        have.count_ones(),
                        have.len()
                    );
                    e.saved.have_bytes = bytes;
                    e.have = Some(have);
                    let restart = lost && e.finished && !e.saved.paused && e.error.is_none();
                    if restart {
                        e.finished = false;
                        e.saved.done = false;
                    }
                    restart
                }
                Err(error) => {
                    e.error = Some(crate::out::escape(&error).into_owned());
                    false
                }
            }
        };
        if restart {
            self.start_entry(hash);
        }
        self.save();
    }
}

/// Bytes of the pieces in `have` that hold some of a wanted file: what
/// a run counts as had (pieces only in files left out do not count).
fn wanted_bytes(meta: &Metainfo, have: &Bitfield, selection: Option<&[bool]>) -> u64 {
    have.iter_ones()
        .filter(|&i| {
            selection.is_none_or(|sel| {
                meta.piece_slices(i as u32)
                    .iter()
                    .any(|s| sel.get(s.file).copied().unwrap_or(true))
            })
        })
        .map(|i| meta.piece_size(i as u32))
        .sum()
}

/// Marks a check of a torrent not running as no longer wanted (it starts,
/// or is removed): the check stops at its next piece.
pub(super) fn cancel(rechecking: &mut Option<Arc<AtomicBool>>) {
    if let Some(c) = rechecking.take() {
        c.store(true, Ordering::SeqCst);
    }
}
