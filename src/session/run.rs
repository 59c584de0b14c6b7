//! One torrent's life in a session, as named phases:
//!
//! 1. **check**: hash what is already on disk through a read-only store
//!    (cancellable), so a restart fetches only what is missing;
//! 2. **claim**: decide whether it may write into the folder
//!    (`store::ownership`) before it creates or changes a single file, and
//!    open the store for writing;
//! 3. **live**: the torrent's task with its route, trackers, DHT and local
//!    discovery, until it is complete (and done seeding) or stopped;
//! 4. **stop**: the `stopped` announce (acknowledged or given up on, so a
//!    dead tracker never holds up the exit), discovery loops ended.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::bitfield::{AtomicBitfield, Bitfield};
use crate::discovery::tracker::TrackerList;
use crate::discovery::{announce_loop, dht_loop, first_announce_delay, lsd_loop, AnnounceStart};
use crate::metainfo::Metainfo;
use crate::peer::{new_peer_id, Shared};
use crate::store::confine::Root;
use crate::store::ownership::{self, Claim};
use crate::store::{hash_threads, resume, Layout, PieceCheck, Store, StoreError};
use crate::torrent::{Outcome, PeerSource, Progress, Task};
use crate::units::human_duration;

use super::listen::RouteGuard;
use super::{CheckStats, Control, Notice, Session, Summary, TorrentOptions};

/// How a run is stopped: its owner's stop, or `--stall-timeout`, set the
/// flag the check of the data reads and the watch the live torrent waits
/// on.
struct Stop {
    cancel: Arc<AtomicBool>,
    rx: watch::Receiver<bool>,
    stall_tx: Option<oneshot::Sender<()>>,
    stalled: Arc<Mutex<Option<String>>>,
    _task: AbortOnDrop,
}

impl Stop {
    fn new(mut outer: watch::Receiver<bool>) -> Stop {
        let (tx, rx) = watch::channel(false);
        let cancel = Arc::new(AtomicBool::new(false));
        let (stall_tx, stall_rx) = oneshot::channel::<()>();
        let task = {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                tokio::select! {
                    Ok(_) = outer.wait_for(|s| *s) => {}
                    Ok(()) = stall_rx => {}
                    else => return,
                }
                cancel.store(true, Ordering::SeqCst);
                let _ = tx.send(true);
                std::future::pending::<()>().await;
            })
        };
        Stop {
            cancel,
            rx,
            stall_tx: Some(stall_tx),
            stalled: Arc::default(),
            _task: AbortOnDrop(task.abort_handle()),
        }
    }

    /// Stops the run once an incomplete download got no data for `limit`.
    fn watch_stall(
        &mut self,
        progress: watch::Receiver<Progress>,
        limit: Option<Duration>,
    ) -> AbortOnDrop {
        let (tx, stalled) = (self.stall_tx.take(), self.stalled.clone());
        let task = tokio::spawn(async move {
            let why = watch_stall(progress, limit).await;
            if let Ok(mut s) = stalled.lock() {
                *s = Some(why);
            }
            if let Some(tx) = tx {
                let _ = tx.send(());
            }
        });
        AbortOnDrop(task.abort_handle())
    }

    fn stalled(&self) -> Option<String> {
        self.stalled.lock().ok().and_then(|s| s.clone())
    }
}

/// Aborts a task when dropped, on every way out of a function.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the check found on disk.
struct Checked {
    /// The torrent's folder, reached without following links.
    root: Root,
    reader: Arc<Store>,
    checks: Vec<PieceCheck>,
    have: Bitfield,
    /// Files left out by a selection, and the part file for the bytes
    /// they share with wanted pieces.
    skip: Option<(Vec<bool>, PathBuf)>,
}

/// The store the torrent runs on, and its claim on the folder (held for
/// the run).
struct Claimed {
    store: Arc<Store>,
    have: Bitfield,
    _claim: Option<Claim>,
}

/// A running torrent and the loops around it.
struct Live {
    task: Task,
    events: mpsc::Receiver<crate::torrent::Event>,
    shared_tx: watch::Sender<Option<Arc<Shared>>>,
    progress_rx: watch::Receiver<Progress>,
    tracker: Option<(JoinHandle<()>, mpsc::Sender<oneshot::Sender<()>>)>,
    loops: Vec<JoinHandle<()>>,
    _stall: AbortOnDrop,
    _route: RouteGuard,
    /// The claim on the folder (its locks), held until the run is over.
    _claim: Option<Claim>,
}

impl Session {
    /// Runs one torrent until it is complete (and done seeding, if asked
    /// to seed) or `ctl.stop` stops it.
    pub async fn run_torrent(
        &self,
        meta: Arc<Metainfo>,
        opts: TorrentOptions,
        ctl: Control,
    ) -> Result<Summary> {
        let started = Instant::now();
        let mut stop = Stop::new(ctl.stop.clone());
        let interrupted = |progress: Progress, stop: &Stop| Summary {
            outcome: Outcome::Interrupted,
            complete: progress.complete,
            progress,
            elapsed: started.elapsed(),
            signal: None,
            stalled: stop.stalled(),
        };
        let Some(checked) = check(&meta, &opts, &stop, &ctl, &self.inner.checks).await? else {
            let progress = Progress {
                total: meta.total_length,
                piece_count: meta.piece_count(),
                ..Progress::default()
            };
            return Ok(interrupted(progress, &stop));
        };
        let claimed = claim(&meta, &opts, checked, &ctl)?;
        let live = self.live(meta, opts, claimed, ctl, &mut stop)?;
        let (result, progress) = live.run(stop.rx.clone()).await;
        let outcome = result?;
        if outcome == Outcome::Interrupted {
            return Ok(interrupted(progress, &stop));
        }
        Ok(Summary {
            outcome,
            complete: progress.complete,
            progress,
            elapsed: started.elapsed(),
            signal: None,
            stalled: None,
        })
    }

    /// The live phase's start: the torrent's shared state and task, its
    /// route, its peers and web seeds, and its discovery loops.
    fn live(
        &self,
        meta: Arc<Metainfo>,
        opts: TorrentOptions,
        claimed: Claimed,
        ctl: Control,
        stop: &mut Stop,
    ) -> Result<Live> {
        let Claimed {
            store,
            have,
            _claim,
        } = claimed;
        let shared = Arc::new(self.shared(&meta, &opts, store, &have));
        let (events_tx, events) = mpsc::channel(1024);
        let progress_rx = ctl.progress.subscribe();
        let (complete_tx, complete_rx) = oneshot::channel();
        // Connections for this torrent now reach its task.
        let hashes = meta.info_hashes().iter().map(|h| h.0).collect();
        let route = RouteGuard::register(&self.inner.routes, hashes, &events_tx)?;
        ctl.shared.send_replace(Some(shared.clone()));
        let mut task = Task::new(
            meta.clone(),
            shared.clone(),
            &have,
            opts.torrent.clone(),
            events_tx.clone(),
            ctl.progress,
            complete_tx,
        );
        let trackers = TrackerList::new(meta.announce.clone(), meta.announce_list.clone());
        let announces = !(trackers.is_empty() || meta.tracker_tiers().is_empty());
        task.set_sources(
            if announces {
                trackers.views()
            } else {
                Vec::new()
            },
            self.inner.dht.is_some() && !meta.private,
        );
        if let Some(sel) = &opts.selection {
            task.set_unwanted(&crate::torrent::selection::unwanted_pieces(&meta, sel));
        }
        if let Some(high) = &opts.high {
            task.set_high(&crate::torrent::selection::wanted_pieces(&meta, high));
        }
        task.set_sequential(opts.sequential);
        if let Some(r) = &opts.readers {
            task.set_readers(r.clone());
        }
        // After the task published its first snapshot, so a display never
        // shows a torrent of 0 bytes.
        if let Some(tx) = &ctl.notices {
            let _ = tx.send(Notice::Ready);
        }
        task.add_peers(PeerSource::Manual, opts.peers.clone());
        for (addr, source) in &opts.learned {
            task.add_peers(*source, vec![*addr]);
        }
        if opts.torrent.web_seeds {
            task.add_web_seeds(&meta.url_list);
        }
        let tracker =
            self.start_trackers(&meta, &shared, &events_tx, complete_rx, &have, &progress_rx);
        // A seed's first DHT lookup is spread like its first announce.
        let first = first_announce_delay(have.is_full(), self.torrents(), rand::random());
        let loops = self.start_discovery(
            &meta,
            &events_tx,
            &progress_rx,
            opts.torrent.max_peers,
            first,
        );
        Ok(Live {
            task,
            events,
            shared_tx: ctl.shared,
            _stall: stop.watch_stall(progress_rx.clone(), opts.stall_timeout),
            progress_rx,
            tracker,
            loops,
            _route: route,
            _claim,
        })
    }

    /// What the torrent's tasks share.
    fn shared(
        &self,
        meta: &Arc<Metainfo>,
        opts: &TorrentOptions,
        store: Arc<Store>,
        have: &Bitfield,
    ) -> Shared {
        Shared {
            meta: meta.clone(),
            info_hash: meta.info_hash.0,
            peer_id: new_peer_id(),
            store,
            have: Arc::new(AtomicBitfield::from_bitfield(have)),
            listen_port: self.inner.port,
            upload_limit: self.inner.upload_limit.clone(),
            download_limit: self.inner.download_limit.clone(),
            connections: self.inner.connections.clone(),
            pex: opts.torrent.pex && !meta.private,
            // BEP 27: a private torrent's peers come from its tracker
            // alone, and a `connect` names a peer as PEX does.
            holepunch: self.inner.holepunch && !meta.private,
            encryption: self.inner.encryption,
            net: self.inner.net.clone(),
            // BEP 16 is for an initial seeder: one that has everything.
            super_seed: (opts.torrent.super_seed && have.is_full()).into(),
            metadata: match meta.info_bytes() {
                Ok(b) if b.len() as u64 <= crate::peer::metadata::MAX_SIZE => Arc::from(&b[..]),
                _ => Arc::from(&[][..]),
            },
            uploaded: Default::default(),
            downloaded: AtomicU64::new(0),
            have_bytes: AtomicU64::new(0),
            reach: self.inner.reach.clone(),
            backlog: Default::default(),
        }
    }

    /// The announce loop of a torrent with trackers, and the channel its
    /// `stopped` announce is asked for on.
    fn start_trackers(
        &self,
        meta: &Metainfo,
        shared: &Arc<Shared>,
        events: &mpsc::Sender<crate::torrent::Event>,
        complete: oneshot::Receiver<()>,
        have: &Bitfield,
        progress: &watch::Receiver<Progress>,
    ) -> Option<(JoinHandle<()>, mpsc::Sender<oneshot::Sender<()>>)> {
        let trackers = TrackerList::new(meta.announce.clone(), meta.announce_list.clone());
        if trackers.is_empty() || meta.tracker_tiers().is_empty() {
            return None;
        }
        let (ctl, ctl_rx) = mpsc::channel(4);
        let task = tokio::spawn(announce_loop(
            trackers,
            shared.clone(),
            events.clone(),
            ctl_rx,
            complete,
            AnnounceStart {
                complete: have.is_full(),
                delay: first_announce_delay(have.is_full(), self.torrents(), rand::random()),
            },
            Some(progress.clone()),
        ));
        Some((task, ctl))
    }

    /// The DHT and local discovery loops of a public torrent (BEP 27: a
    /// private torrent's peers come from its trackers only).
    fn start_discovery(
        &self,
        meta: &Metainfo,
        events: &mpsc::Sender<crate::torrent::Event>,
        progress: &watch::Receiver<Progress>,
        max_peers: usize,
        first: std::time::Duration,
    ) -> Vec<JoinHandle<()>> {
        if meta.private {
            return Vec::new();
        }
        let port = self.inner.port;
        let hash = meta.info_hash.0;
        let mut loops = Vec::new();
        if let Some(dht) = &self.inner.dht {
            let dht = dht.clone();
            let (events, progress) = (events.clone(), progress.clone());
            loops.push(tokio::spawn(dht_loop(
                dht,
                hash,
                port,
                self.inner.reach.clone(),
                events,
                progress,
                max_peers,
                first,
            )));
        }
        if let Some(lsd) = &self.inner.lsd {
            loops.push(tokio::spawn(lsd_loop(
                lsd.clone(),
                hash,
                port,
                events.clone(),
            )));
        }
        loops
    }
}

/// The check phase: everything on disk is checked through a read-only
/// store, so a download decides whether it may write into the folder
/// before it touches a file. None when stopped meanwhile.
async fn check(
    meta: &Arc<Metainfo>,
    opts: &TorrentOptions,
    stop: &Stop,
    ctl: &Control,
    stats: &CheckStats,
) -> Result<Option<Checked>> {
    // Everything on disk is checked through a read-only store first: a
    // download decides whether it may write into the folder (ownership)
    // before it creates or changes a single file.
    let root = confined_root(&opts.dir, opts.base.as_deref())?;
    if !opts.require_complete {
        root.create_dirs(Path::new("")).map_err(|e| {
            if crate::store::confine::is_link_error(&e) {
                anyhow::Error::new(StoreError::Symlink(opts.dir.clone()))
            } else {
                anyhow::Error::new(e).context(format!("cannot create {}", opts.dir.display()))
            }
        })?;
    }
    // Seeding reads the user's folder as they laid it out (links too).
    let read_root = if opts.require_complete {
        root.clone().trust_links()
    } else {
        root.clone()
    };
    let (reader, skip) = reader_of(meta, read_root.clone(), opts.selection.as_deref());
    let checks = match fast_resume(meta, opts, &read_root, stats).await? {
        Some(checks) => Ok(checks),
        None => {
            let (reader, cancel) = (reader.clone(), stop.cancel.clone());
            let (checked, notices) = (ctl.checked.clone(), ctl.notices.clone());
            let checks = tokio::task::spawn_blocking(move || {
                initial_check(&reader, &notices, &checked, &cancel)
            })
            .await
            .context("check task failed")?;
            stats
                .hashed
                .fetch_add(ctl.checked.load(Ordering::Relaxed), Ordering::Relaxed);
            checks
        }
    };
    let checks = match checks {
        Ok(c) => c,
        Err(StoreError::Interrupted) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let have = have_of(&checks);
    if opts.require_complete && !have.is_full() {
        let count = meta.piece_count();
        let missing = count as usize - have.count_ones();
        bail!(
            "data under {} is incomplete: {missing} of {count} pieces missing or bad (run `shoal verify` for details)",
            opts.dir.display()
        );
    }
    Ok(Some(Checked {
        root,
        reader,
        checks,
        have,
        skip,
    }))
}

/// The torrent's folder: `dir` under `base` (when given) and reached
/// without following links.
fn confined_root(dir: &Path, base: Option<&Path>) -> Result<Root> {
    Ok(match base {
        Some(base) => Root::under(base, dir)
            .with_context(|| format!("{} is not inside {}", dir.display(), base.display()))?,
        None => Root::at(dir),
    })
}

/// A read-only store over `root`. Files left out by `selection` are never
/// created: the bytes they share with wanted pieces live in a sparse part
/// file beside the ownership record (returned with the skipped files).
fn reader_of(
    meta: &Metainfo,
    root: Root,
    selection: Option<&[bool]>,
) -> (Arc<Store>, Option<(Vec<bool>, PathBuf)>) {
    let skip = selection.map(|sel| {
        let skipped: Vec<bool> = sel.iter().map(|s| !s).collect();
        (skipped, ownership::part_path(&meta.info_hash.hex()))
    });
    let mut reader = Store::open_read_in(Layout::from_metainfo(meta), root);
    if let Some((skipped, part)) = &skip {
        reader.set_skipped(skipped.clone(), part.clone());
    }
    (Arc::new(reader), skip)
}

/// Hashes what is on disk and changes nothing: no folder is created and
/// no file opened for writing (the service's re-check of a torrent that
/// is not running). The verified pieces; None when `cancel` was set.
pub async fn check_data(
    meta: &Metainfo,
    dir: &Path,
    base: Option<&Path>,
    selection: Option<&[bool]>,
    checked: Arc<AtomicU64>,
    cancel: Arc<AtomicBool>,
) -> Result<Option<Bitfield>> {
    let (reader, _) = reader_of(meta, confined_root(dir, base)?, selection);
    let checks =
        tokio::task::spawn_blocking(move || initial_check(&reader, &None, &checked, &cancel))
            .await
            .context("check task failed")?;
    match checks {
        Ok(c) => Ok(Some(have_of(&c))),
        Err(StoreError::Interrupted) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The piece checks the last run's fast-resume record gives, when every
/// file is as it recorded; None: hash the data. Not with a selection (the
/// part file is not recorded), nor for a v2 torrent whose piece layers
/// come from peers (its pieces are checked as the layers come, and the
/// check is what asks for them).
fn may_fast_resume(meta: &Metainfo, opts: &TorrentOptions) -> bool {
    let layers_missing = meta
        .v2
        .as_ref()
        .filter(|_| meta.v2_only())
        .is_some_and(|v2| crate::torrent::hashes::LayerFetch::new(v2).is_some());
    opts.selection.is_none() && !layers_missing
}

async fn fast_resume(
    meta: &Arc<Metainfo>,
    opts: &TorrentOptions,
    root: &Root,
    stats: &CheckStats,
) -> Result<Option<Vec<PieceCheck>>> {
    let Some(record) = opts.resume.as_ref() else {
        return Ok(None);
    };
    if !may_fast_resume(meta, opts) {
        return Ok(None);
    }
    let (m, r) = (meta.clone(), root.clone());
    let now = tokio::task::spawn_blocking(move || resume::stamps(&m, &r))
        .await
        .context("stat task failed")?;
    let Some(now) = now else {
        // Could not look: hash, as without a record (never "files gone").
        stats.distrusted.fetch_add(1, Ordering::Relaxed);
        return Ok(None);
    };
    let name = crate::out::escape(&meta.name);
    match resume::distrust(record, meta.piece_count() as usize, &now) {
        None => {
            stats.trusted.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("{name}: fast resume: every file as recorded, not hashed again");
            let good = |i| {
                if record.have.get(i) {
                    PieceCheck::Good
                } else {
                    PieceCheck::Missing
                }
            };
            Ok(Some((0..record.have.len()).map(good).collect()))
        }
        Some(why) => {
            stats.distrusted.fetch_add(1, Ordering::Relaxed);
            let gone = resume::vanished(record, &now);
            if let Some(&first) = gone.first() {
                let path = root.path().join(&meta.files[first].path);
                bail!(
                    "{} of its files are gone since the last run ({} first): moved away? \
                     Put them back, or resume the torrent to download them again",
                    gone.len(),
                    crate::out::escape(&path.display().to_string())
                );
            }
            tracing::info!("{name}: checking the data again: {why}");
            Ok(None)
        }
    }
}

/// The claim phase: a seed serves from the read-only store; a download
/// claims the folder (refusing foreign files in the way) and opens the
/// store for writing.
fn claim(meta: &Metainfo, opts: &TorrentOptions, c: Checked, ctl: &Control) -> Result<Claimed> {
    let (store, claim) = if opts.require_complete {
        (c.reader, None)
    } else {
        drop(c.reader);
        let claim = ownership::prepare(
            meta,
            &c.root,
            &c.checks,
            opts.overwrite,
            opts.selection.as_deref(),
        )?;
        for p in &claim.truncated {
            tracing::warn!(
                "{}: cut to the torrent's length",
                crate::out::escape(&p.display().to_string())
            );
        }
        let layout = Layout::from_metainfo(meta);
        let store = Store::open_write_selected(layout, c.root, c.skip)?;
        let mut claim = claim;
        if opts.lazy_lock && c.have.is_full() {
            // Complete: no descriptor held for the lock while it seeds.
            store.lock_on_write(meta.info_hash.hex());
            claim.lock = None;
        }
        (Arc::new(store), Some(claim))
    };
    let have = c.have;
    if have.count_ones() > 0 && !opts.require_complete {
        if let Some(tx) = &ctl.notices {
            let _ = tx.send(Notice::Resuming {
                have_bytes: have.iter_ones().map(|i| meta.piece_size(i as u32)).sum(),
                total: meta.total_length,
                pieces_have: have.count_ones(),
                piece_count: meta.piece_count(),
            });
        }
    }
    Ok(Claimed {
        store,
        have,
        _claim: claim,
    })
}

impl Live {
    /// The live phase until the end, then the stop phase: how it ended,
    /// and the last snapshot.
    async fn run(self, stop: watch::Receiver<bool>) -> (Result<Outcome, StoreError>, Progress) {
        let Live {
            task,
            events,
            shared_tx,
            progress_rx,
            tracker,
            loops,
            _stall,
            _route,
            _claim,
        } = self;
        let result = task.run(events, stop).await;
        drop(_stall);
        shared_tx.send_replace(None);
        if let Some((task, ctl)) = tracker {
            let (ack_tx, ack_rx) = oneshot::channel();
            if ctl.send(ack_tx).await.is_ok() {
                // A dead tracker must not hold up the exit.
                let _ = tokio::time::timeout(Duration::from_secs(6), ack_rx).await;
            }
            task.abort();
        }
        for task in loops {
            task.abort();
        }
        let progress = progress_rx.borrow().clone();
        (result, progress)
    }
}

/// Hashes what is already on disk, on all cores, so a restart fetches only
/// what is missing. Stops early (StoreError::Interrupted) once `cancel` is set.
fn initial_check(
    store: &Store,
    notices: &Option<mpsc::UnboundedSender<Notice>>,
    done: &AtomicU64,
    cancel: &AtomicBool,
) -> Result<Vec<PieceCheck>, StoreError> {
    let count = store.layout().piece_count() as usize;
    if !store.any_file_on_disk() {
        return Ok(vec![PieceCheck::Missing; count]);
    }
    let notify = |n: Notice| {
        if let Some(tx) = notices {
            let _ = tx.send(n);
        }
    };
    notify(Notice::Checking {
        total: store.layout().total_length,
    });
    let checks = store.check_all_until(hash_threads(), done, cancel);
    notify(Notice::Checked);
    checks
}

fn have_of(checks: &[PieceCheck]) -> Bitfield {
    let mut have = Bitfield::new(checks.len());
    for (i, c) in checks.iter().enumerate() {
        if *c == PieceCheck::Good {
            have.set(i);
        }
    }
    have
}

/// Resolves when an incomplete download got neither a verified piece nor
/// a received byte for `limit` (never without a limit, never once
/// complete: a seed waits for leechers as long as it is asked to), with
/// the one line that says why.
async fn watch_stall(mut rx: watch::Receiver<Progress>, limit: Option<Duration>) -> String {
    let Some(limit) = limit else {
        return std::future::pending().await;
    };
    let p = super::wait_stalled(&mut rx, limit, |p| {
        (!p.complete).then_some((p.have_bytes, p.downloaded))
    })
    .await;
    format!(
        "stalled: no data for {} ({} peers; {})",
        human_duration(limit),
        p.peers,
        crate::out::escape(&p.status)
    )
}
