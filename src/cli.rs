//! The commands behind the `shoal` binary, as library functions returning
//! errors; `main.rs` only parses arguments and maps errors to exit codes.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::create::{create, CreateOptions};
use crate::magnet::Magnet;
use crate::metainfo::{Metainfo, MetainfoError};
use crate::store::{hash_threads, Layout, PieceCheck, Store};
use crate::ui::{format_date, human_bytes, with_counter_bar, Display};

/// A torrent given as a file path or a magnet URI.
pub enum Source {
    Torrent(Box<Metainfo>),
    Magnet(Magnet),
}

pub fn load_source(arg: &str) -> Result<Source> {
    if arg
        .get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("magnet:"))
    {
        return Ok(Source::Magnet(Magnet::parse(arg)?));
    }
    Ok(Source::Torrent(Box::new(load_torrent(Path::new(arg))?)))
}

pub fn load_torrent(path: &Path) -> Result<Metainfo> {
    let m = Metainfo::from_file(path).map_err(|e| match e {
        MetainfoError::Io { .. } | MetainfoError::FileTooLarge { .. } => anyhow::Error::new(e),
        e => anyhow::Error::new(e).context(format!("{}", path.display())),
    })?;
    for w in &m.warnings {
        tracing::warn!("{}: {w}", path.display());
    }
    Ok(m)
}

pub fn info_json(m: &Metainfo) -> serde_json::Value {
    json!({
        "source": "torrent",
        "name": m.name,
        "info_hash": m.info_hash.hex(),
        "total_size": m.total_length,
        "piece_length": m.piece_length,
        "piece_count": m.piece_count(),
        "private": m.private,
        "multi_file": m.multi_file,
        "trackers": m.tracker_tiers(),
        "web_seeds": m.url_list,
        "creation_date": m.creation_date,
        "created_by": m.created_by,
        "comment": m.comment,
        "files": m.files.iter().map(|f| json!({
            "path": f.path.to_string_lossy(),
            "size": f.length,
            "pad": f.pad,
        })).collect::<Vec<_>>(),
        "warnings": m.warnings,
    })
}

pub fn info(arg: &str, as_json: bool) -> Result<()> {
    match load_source(arg)? {
        Source::Torrent(m) => {
            if as_json {
                println!("{}", info_json(&m));
                return Ok(());
            }
            println!("name:          {}", m.name);
            println!("info-hash:     {}", m.info_hash);
            println!(
                "size:          {} ({} bytes)",
                human_bytes(m.total_length),
                m.total_length
            );
            println!(
                "piece length:  {} ({} bytes)",
                human_bytes(m.piece_length),
                m.piece_length
            );
            println!("pieces:        {}", m.piece_count());
            println!("private:       {}", if m.private { "yes" } else { "no" });
            let tiers = m.tracker_tiers();
            if tiers.is_empty() {
                println!("trackers:      none");
            } else {
                println!("trackers:");
                for (i, t) in tiers.iter().enumerate() {
                    println!("  tier {}: {}", i + 1, t.join(" "));
                }
            }
            if !m.url_list.is_empty() {
                println!("web seeds:");
                for u in &m.url_list {
                    println!("  {u}");
                }
            }
            if let Some(d) = m.creation_date {
                println!("created:       {}", format_date(d));
            }
            if let Some(c) = &m.created_by {
                println!("created by:    {c}");
            }
            if let Some(c) = &m.comment {
                println!("comment:       {c}");
            }
            println!("files ({}):", m.files.len());
            for f in &m.files {
                let tag = if f.pad { "  (pad)" } else { "" };
                println!("  {:>12}  {}{tag}", human_bytes(f.length), f.path.display());
            }
        }
        Source::Magnet(mg) => {
            if as_json {
                let v = json!({
                    "source": "magnet",
                    "name": mg.name,
                    "info_hash": mg.info_hash.hex(),
                    "trackers": mg.trackers.iter().map(|t| vec![t]).collect::<Vec<_>>(),
                    "web_seeds": mg.web_seeds,
                    "peers": mg.peers.iter().map(|p| p.to_string()).chain(mg.peer_hosts.iter().cloned()).collect::<Vec<_>>(),
                });
                println!("{v}");
                return Ok(());
            }
            println!("magnet link (metadata not fetched yet)");
            println!("name:          {}", mg.name.as_deref().unwrap_or("(none)"));
            println!("info-hash:     {}", mg.info_hash);
            for t in &mg.trackers {
                println!("tracker:       {t}");
            }
            for p in &mg.peers {
                println!("peer:          {p}");
            }
            for p in &mg.peer_hosts {
                println!("peer:          {p}");
            }
            for w in &mg.web_seeds {
                println!("web seed:      {w}");
            }
        }
    }
    Ok(())
}

pub struct CreateArgs {
    pub path: PathBuf,
    pub output: Option<PathBuf>,
    pub trackers: Vec<String>,
    pub piece_length: Option<u64>,
    pub private: bool,
    pub comment: Option<String>,
    pub web_seeds: Vec<String>,
    pub force: bool,
}

pub fn create_cmd(a: CreateArgs) -> Result<()> {
    let opts = CreateOptions {
        piece_length: a.piece_length,
        // Each -t is its own tier, in the order given: clients try them in turn.
        trackers: a
            .trackers
            .iter()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .map(|t| vec![t])
            .collect(),
        web_seeds: a.web_seeds.clone(),
        private: a.private,
        comment: a.comment.clone(),
        threads: hash_threads(),
    };
    let total = dir_size(&a.path);
    let t = with_counter_bar(total, "hashing", |done| create(&a.path, &opts, done))?;
    let out = a
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.torrent", t.name)));
    if out.exists() && !a.force {
        bail!(
            "{} already exists (use --force to overwrite)",
            out.display()
        );
    }
    let bytes = t.to_bytes();
    let m = Metainfo::from_bytes(&bytes).context("created torrent does not load")?;
    std::fs::write(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "created {} ({}, {} pieces of {}, info-hash {})",
        out.display(),
        human_bytes(m.total_length),
        m.piece_count(),
        human_bytes(m.piece_length),
        m.info_hash
    );
    Ok(())
}

fn dir_size(p: &Path) -> u64 {
    match std::fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() => std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| dir_size(&e.path())).sum())
            .unwrap_or(0),
        Ok(md) if md.is_file() => md.len(),
        _ => 0,
    }
}

/// Per-file tallies of piece checks.
#[derive(Default, Clone, Copy)]
struct Tally {
    good: u32,
    missing: u32,
    bad: u32,
}

pub fn verify(torrent: &Path, dir: &Path, as_json: bool) -> Result<()> {
    let m = load_torrent(torrent)?;
    if !dir.is_dir() {
        bail!("{}: not a folder", dir.display());
    }
    let store = Store::open_read(Layout::from_metainfo(&m), dir);
    let checks = with_counter_bar(m.total_length, "verifying", |done| {
        store.check_all(hash_threads(), done)
    })?;
    let mut total = Tally::default();
    for c in &checks {
        match c {
            PieceCheck::Good => total.good += 1,
            PieceCheck::Missing => total.missing += 1,
            PieceCheck::Bad => total.bad += 1,
        }
    }
    let files: Vec<(usize, Tally)> = m
        .files
        .iter()
        .enumerate()
        .filter(|(_, f)| f.is_data())
        .map(|(i, _)| {
            let mut t = Tally::default();
            for p in m.file_pieces(i) {
                match checks[p as usize] {
                    PieceCheck::Good => t.good += 1,
                    PieceCheck::Missing => t.missing += 1,
                    PieceCheck::Bad => t.bad += 1,
                }
            }
            (i, t)
        })
        .collect();
    if as_json {
        let v = json!({
            "info_hash": m.info_hash.hex(),
            "pieces": checks.len(),
            "good": total.good, "missing": total.missing, "bad": total.bad,
            "complete": total.good as usize == checks.len(),
            // The good pieces as a bitfield in wire order, hex: scripts can
            // compare what several folders hold.
            "have": hex::encode({
                let mut b = crate::bitfield::Bitfield::new(checks.len());
                for (i, c) in checks.iter().enumerate() {
                    if *c == PieceCheck::Good {
                        b.set(i);
                    }
                }
                b.as_bytes().to_vec()
            }),
            "files": files.iter().map(|(i, t)| json!({
                "path": m.files[*i].path.to_string_lossy(),
                "size": m.files[*i].length,
                "good": t.good, "missing": t.missing, "bad": t.bad,
            })).collect::<Vec<_>>(),
        });
        println!("{v}");
    } else {
        for (i, t) in &files {
            let f = &m.files[*i];
            let state = if t.missing == 0 && t.bad == 0 {
                "ok"
            } else if t.good == 0 && t.bad == 0 {
                "missing"
            } else {
                "incomplete"
            };
            println!(
                "{:<10} {:>12}  good {:>6}  missing {:>6}  bad {:>6}  {}",
                state,
                human_bytes(f.length),
                t.good,
                t.missing,
                t.bad,
                f.path.display()
            );
        }
        println!(
            "{} pieces: {} good, {} missing, {} bad",
            checks.len(),
            total.good,
            total.missing,
            total.bad
        );
    }
    if total.good as usize != checks.len() {
        bail!(
            "incomplete: {} of {} pieces missing, {} bad",
            total.missing,
            checks.len(),
            total.bad
        );
    }
    Ok(())
}

pub struct RunArgs {
    pub torrent: PathBuf,
    pub dir: PathBuf,
    pub port: Option<u16>,
    pub peers: Vec<String>,
    pub keep_seeding: bool,
    pub max_peers: usize,
    pub quiet: bool,
    pub json: bool,
    pub upload_limit: Option<u64>,
}

fn resolve_peers(peers: &[String]) -> Result<Vec<std::net::SocketAddr>> {
    use std::net::ToSocketAddrs;
    let mut out = Vec::new();
    for p in peers {
        let addrs = p
            .to_socket_addrs()
            .with_context(|| format!("--peer {p}: expected HOST:PORT"))?;
        out.extend(addrs);
    }
    Ok(out)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// `download` (seed = false) and `seed` (seed = true).
pub fn run_torrent(a: RunArgs, seed: bool) -> Result<()> {
    let m = load_torrent(&a.torrent)?;
    let display = Display::choose(a.json, a.quiet);
    let name = m.name.clone();
    let opts = crate::session::Options {
        dir: a.dir.clone(),
        port: a.port,
        peers: resolve_peers(&a.peers)?,
        keep_seeding: seed || a.keep_seeding,
        require_complete: seed,
        max_peers: a.max_peers,
        display,
        upload_limit: a.upload_limit,
    };
    let summary = runtime()?.block_on(crate::session::run(m, opts))?;
    let p = &summary.progress;
    let secs = summary.elapsed.as_secs_f64();
    if a.json {
        println!(
            "{}",
            json!({
                "event": "done",
                "complete": summary.complete,
                "outcome": format!("{:?}", summary.outcome).to_lowercase(),
                "downloaded": p.downloaded,
                "uploaded": p.uploaded,
                "have_bytes": p.have_bytes,
                "total": p.total,
                "hash_failures": p.hash_failures,
                "banned": p.banned,
                "seconds": secs,
            })
        );
    } else if !a.quiet {
        println!(
            "{name}: {} of {} verified; received {}, sent {} in {:.1}s",
            human_bytes(p.have_bytes),
            human_bytes(p.total),
            human_bytes(p.downloaded),
            human_bytes(p.uploaded),
            secs
        );
    }
    if !summary.complete {
        bail!(
            "interrupted with {} of {} pieces verified; run the same command again to resume",
            p.pieces_have,
            p.piece_count
        );
    }
    Ok(())
}
