//! The life of one torrent in the service: its metadata first if it came
//! as a magnet, then `Session::run_torrent` with the entry's settings;
//! how it ended (and the pieces it had) goes back into the entry.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

use super::{data_files, Priority, Service, METADATA_RETRY};
use crate::bitfield::Bitfield;
use crate::metainfo::magnet::Magnet;
use crate::metainfo::Metainfo;
use crate::peer::Shared;
use crate::session::{Control, ResolveError, TorrentOptions};
use crate::store::confine::Root;
use crate::store::ownership::OwnershipError;
use crate::store::resume;
use crate::torrent::Outcome;

/// How a run ended: an error to show, whether it finished, its pieces and
/// its fast-resume record.
pub(super) struct RunEnd {
    pub error: Option<String>,
    pub finished: bool,
    pub have: Option<Bitfield>,
    pub resume: Option<resume::Saved>,
}

impl RunEnd {
    fn failed(error: Option<String>) -> RunEnd {
        RunEnd {
            error,
            finished: false,
            have: None,
            resume: None,
        }
    }
}

/// The life of one torrent in the service: its metadata first if it came
/// as a magnet, then the run; its end is recorded in the entry.
pub(super) async fn drive(svc: Service, hash: [u8; 20], generation: u64, ctl: Control) {
    let end = run_entry(&svc, hash, generation, ctl).await;
    svc.ended(hash, generation, end);
}

async fn run_entry(svc: &Service, hash: [u8; 20], generation: u64, ctl: Control) -> RunEnd {
    let (meta, magnet, dir, peers, overwrite, readers, record) = {
        let mut entries = svc.entries();
        let Some(e) = entries.iter_mut().find(|e| e.hash == hash) else {
            return RunEnd::failed(None);
        };
        (
            e.meta.clone(),
            e.saved.magnet.clone(),
            e.saved.dir.clone(),
            e.saved.peers.clone(),
            // For this run only: files that appear in the way later are
            // asked about again.
            std::mem::take(&mut e.saved.overwrite),
            e.readers.clone(),
            e.saved.resume.clone(),
        )
    };
    let (meta, learned) = match meta {
        Some(m) => (m, Vec::new()),
        None => match fetch_meta(svc, hash, magnet.as_deref(), ctl.stop.clone()).await {
            Ok(got) => got,
            Err(error) => return RunEnd::failed(error),
        },
    };
    let Some((priorities, paused)) = svc
        .entries()
        .iter()
        .find(|e| e.hash == hash)
        .map(|e| (e.saved.priorities.clone(), e.saved.paused))
    else {
        return RunEnd::failed(None);
    };
    if paused {
        // Paused as its metadata came (`stop_after_metadata`): no data yet.
        return RunEnd::failed(None);
    }
    let (selection, high) = selection_of(&meta, &priorities);
    let resume = record.and_then(|r| r.read(meta.piece_count() as usize));
    // A run with a selection records nothing: some of its bytes live in the
    // part file, and a later run with another selection reads them elsewhere.
    let stamp_root = Root::under(&svc.inner.root, &dir).filter(|_| selection.is_none());
    let opts = TorrentOptions {
        dir,
        base: Some(svc.inner.root.clone()),
        peers: peers.clone(),
        sequential: false,
        readers: Some(readers),
        learned: learned
            .into_iter()
            .filter(|(a, _): &(SocketAddr, _)| !a.ip().is_unspecified() && !peers.contains(a))
            .collect(),
        require_complete: false,
        overwrite,
        selection,
        high,
        stall_timeout: None,
        torrent: crate::torrent::Options {
            keep_seeding: true,
            ..svc.inner.cfg.options.clone()
        },
        resume,
        lazy_lock: true,
    };
    // The running torrent's piece map is kept for when it no longer runs.
    let mut shared_rx = ctl.shared.subscribe();
    let mut last: Option<Arc<Shared>> = None;
    let run = svc.session().run_torrent(meta.clone(), opts, ctl);
    tokio::pin!(run);
    let result = loop {
        tokio::select! {
            r = &mut run => break r,
            Ok(()) = shared_rx.changed() => {
                let now = shared_rx.borrow_and_update().clone();
                if let Some(s) = now {
                    // Checked and live: a record now already holds for a
                    // run that never gets to record its end (killed, or
                    // slower to stop than the service's exit waits).
                    if let Some(root) = &stamp_root {
                        let record = take_record(&meta, root, s.have.snapshot()).await;
                        if let Some(e) = svc.entries().iter_mut().find(|e| e.hash == hash) {
                            // Not looked at: the previous record is wrong
                            // now all the same (a download may write).
                            e.saved.resume = record;
                        }
                    }
                    last = Some(s);
                }
            }
        }
    };
    let have = last.map(|s| s.have.snapshot());
    let resume = match (&have, &stamp_root) {
        (Some(h), Some(root)) => take_record(&meta, root, h.clone()).await,
        _ => None,
    };
    let end = |error, finished| RunEnd {
        error,
        finished,
        have: have.clone(),
        resume: resume.clone(),
    };
    match result {
        Ok(summary) => end(None, matches!(summary.outcome, Outcome::Complete)),
        Err(e) => {
            let clash = e.downcast_ref::<OwnershipError>();
            let msg = match clash {
                // The CLI's hint names `--overwrite`; here it is a resume.
                Some(OwnershipError::Foreign {
                    what,
                    verb,
                    them,
                    list,
                }) => format!(
                    "refusing to overwrite {what} not created by shoal that {verb} not match the \
                     torrent: {list}; move {them} away, or resume with overwrite to replace {them} \
                     (the page's Overwrite button, or `shoal resume --overwrite {}`)",
                    hex::encode(hash)
                ),
                _ => format!("{e:#}").replace(['\n', '\r'], " "),
            };
            let clash = matches!(clash, Some(OwnershipError::Foreign { .. }));
            if let Some(entry) = svc.entries().iter_mut().find(|x| {
                x.hash == hash && x.run.as_ref().is_some_and(|r| r.generation == generation)
            }) {
                entry.clash = clash;
            }
            end(Some(crate::out::escape(&msg).into_owned()), false)
        }
    }
}

/// The fast-resume record of `have`: the files' stamps are taken after the
/// piece map, so a write that lands between the two changes a stamp and
/// the next run checks instead of trusting.
async fn take_record(meta: &Arc<Metainfo>, root: &Root, have: Bitfield) -> Option<resume::Saved> {
    let (m, root) = (meta.clone(), root.clone());
    tokio::task::spawn_blocking(move || {
        let files = resume::stamps(&m, &root)?;
        Some(resume::Saved::of(&resume::Resume { have, files }))
    })
    .await
    .ok()
    .flatten()
}

/// A magnet's metadata, fetched from peers until it comes or the run is
/// stopped (Err(None)); Err(Some) for an error to show.
async fn fetch_meta(
    svc: &Service,
    hash: [u8; 20],
    magnet: Option<&str>,
    mut stop: watch::Receiver<bool>,
) -> Result<(Arc<Metainfo>, Vec<(SocketAddr, crate::torrent::PeerSource)>), Option<String>> {
    let Some(Ok(magnet)) = magnet.map(Magnet::parse) else {
        return Err(Some("no torrent file and no magnet link".into()));
    };
    loop {
        let (status_tx, status_rx) = watch::channel(crate::discovery::fetch::Status::default());
        if let Some(e) = svc.entries().iter_mut().find(|e| e.hash == hash) {
            e.fetching = Some(status_rx);
        }
        let got = svc
            .session()
            .resolve_magnet(&magnet, &[], status_tx, stop.clone())
            .await;
        match got {
            Ok(r) => {
                let m = Arc::new(r.meta);
                svc.set_meta(hash, m.clone(), &r.torrent).map_err(Some)?;
                return Ok((m, r.learned));
            }
            Err(ResolveError::Interrupted) => return Err(None),
            Err(e @ ResolveError::Invalid(_)) => return Err(Some(e.to_string())),
            Err(e) => {
                tracing::info!("{}: {e}; trying again", hex::encode(hash));
                tokio::select! {
                    _ = tokio::time::sleep(METADATA_RETRY) => {}
                    _ = stop.wait_for(|s| *s) => return Err(None),
                }
            }
        }
    }
}

/// The session's file selection and high-priority files (over all of
/// `meta.files`) from the API's priorities (over its data files).
pub(super) fn selection_of(
    meta: &Metainfo,
    priorities: &[Priority],
) -> (Option<Vec<bool>>, Option<Vec<bool>>) {
    let files = data_files(meta);
    let pr = |i: usize| priorities.get(i).copied().unwrap_or(Priority::Normal);
    let mut selected = vec![false; meta.files.len()];
    let mut high = vec![false; meta.files.len()];
    for (i, &f) in files.iter().enumerate() {
        selected[f] = pr(i) != Priority::Skip;
        high[f] = pr(i) == Priority::High;
    }
    let all = files.iter().all(|&f| selected[f]);
    (
        (!all).then_some(selected),
        high.iter().any(|h| *h).then_some(high),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_become_a_selection() {
        use crate::metainfo::NewTorrent;
        let t = NewTorrent {
            name: "pack".into(),
            files: Some(vec![
                (vec!["a".into()], 20),
                (vec!["b".into()], 20),
                (vec!["c".into()], 24),
            ]),
            piece_length: 16,
            pieces: vec![0; 20 * 4],
            ..Default::default()
        };
        let m = Metainfo::from_bytes(&t.to_bytes()).unwrap();
        let p = [Priority::Normal, Priority::Skip, Priority::High];
        let (sel, high) = selection_of(&m, &p);
        assert_eq!(sel, Some(vec![true, false, true]));
        assert_eq!(high, Some(vec![false, false, true]));
        assert_eq!(selection_of(&m, &[Priority::Normal; 3]), (None, None));
    }
}
