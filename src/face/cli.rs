//! The commands behind the `shoal` binary, as library functions returning
//! errors; `main.rs` only parses arguments and maps errors to exit codes.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::face::ui::{format_date, human_bytes, with_counter_bar, Display};
use crate::metainfo::magnet::Magnet;
use crate::metainfo::{Metainfo, MetainfoError, Version};
use crate::out::escape as esc;
use crate::store::create::{create, CreateOptions};
use crate::store::{hash_threads, Layout, PieceCheck, Store};

/// A torrent given as a file path or a magnet URI.
pub enum Source {
    Torrent(Box<Metainfo>),
    Magnet(Magnet),
}

/// A .torrent file, a magnet link, an http(s) URL of a .torrent, or a
/// bare info-hash (as a magnet link naming only it): what `download`,
/// `info` and `shoal add` all take. A file of that name wins.
pub fn load_source(arg: &str) -> Result<Source> {
    if arg
        .get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("magnet:"))
    {
        return Ok(Source::Magnet(Magnet::parse(arg)?));
    }
    let path = Path::new(arg);
    if !path.exists() {
        if let Some(uri) = crate::metainfo::magnet::from_bare_hash(arg) {
            return Ok(Source::Magnet(Magnet::parse(&uri)?));
        }
        let lower = arg.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let bytes = rt.block_on(crate::service::fetch_torrent(arg))?;
            let m = Metainfo::from_bytes(&bytes).with_context(|| esc(arg).into_owned())?;
            for w in &m.warnings {
                tracing::warn!("{}: {}", esc(arg), esc(w));
            }
            return Ok(Source::Torrent(Box::new(m)));
        }
    }
    Ok(Source::Torrent(Box::new(load_torrent(path)?)))
}

pub fn load_torrent(path: &Path) -> Result<Metainfo> {
    let m = crate::store::load_torrent(path).map_err(|e| match e {
        MetainfoError::Io { .. } | MetainfoError::FileTooLarge { .. } => anyhow::Error::new(e),
        e => anyhow::Error::new(e).context(format!("{}", path.display())),
    })?;
    for w in &m.warnings {
        tracing::warn!("{}: {}", esc(&path.display().to_string()), esc(w));
    }
    Ok(m)
}

/// The files `shoal info` lists, with their numbers (data files from 0,
/// as `--list` and `--select` count them; None for a pad file). A
/// v2-only torrent's pad entries are not in it (they only align its files
/// to pieces here), so they are left out.
fn listed_files(m: &Metainfo) -> Vec<(Option<usize>, &crate::metainfo::FileEntry)> {
    let mut n = 0;
    m.files
        .iter()
        .filter(|f| !(f.pad && m.version() == Version::V2))
        .map(|f| {
            let number = f.is_data().then(|| {
                n += 1;
                n - 1
            });
            (number, f)
        })
        .collect()
}

/// The size `shoal info` gives: for a v2-only torrent its files' content
/// (its pads are ours, not the torrent's), else the torrent's total.
fn listed_size(m: &Metainfo) -> u64 {
    if m.version() == Version::V2 {
        m.files.iter().filter(|f| !f.pad).map(|f| f.length).sum()
    } else {
        m.total_length
    }
}

pub fn info_json(m: &Metainfo) -> serde_json::Value {
    json!({
        "source": "torrent",
        "name": m.name,
        "info_hash": m.info_hash.hex(),
        "meta_version": match m.version() {
            Version::V1 => "v1",
            Version::V2 => "v2",
            Version::Hybrid => "hybrid",
        },
        "info_hash_v2": m.v2.as_ref().map(|v| hex::encode(v.info_hash)),
        "total_size": listed_size(m),
        "piece_length": m.piece_length,
        "piece_count": m.piece_count(),
        "private": m.private,
        "multi_file": m.multi_file,
        "trackers": m.tracker_tiers(),
        "web_seeds": m.url_list,
        "creation_date": m.creation_date,
        "created_by": m.created_by,
        "comment": m.comment,
        "files": listed_files(m).into_iter().map(|(n, f)| json!({
            "index": n,
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
                crate::outln!("{}", info_json(&m));
                return Ok(());
            }
            crate::outln!("name:          {}", esc(&m.name));
            crate::outln!("version:       {}", m.version());
            match (&m.v2, m.version()) {
                (Some(v2), Version::V2) => {
                    crate::outln!("info-hash v2:  {}", hex::encode(v2.info_hash));
                    crate::outln!("  (swarm: {}, the first 20 bytes)", m.info_hash);
                }
                (Some(v2), _) => {
                    crate::outln!("info-hash:     {}", m.info_hash);
                    crate::outln!("info-hash v2:  {}", hex::encode(v2.info_hash));
                }
                (None, _) => crate::outln!("info-hash:     {}", m.info_hash),
            }
            let size = listed_size(&m);
            crate::outln!("size:          {} ({size} bytes)", human_bytes(size));
            crate::outln!(
                "piece length:  {} ({} bytes)",
                human_bytes(m.piece_length),
                m.piece_length
            );
            crate::outln!("pieces:        {}", m.piece_count());
            crate::outln!("private:       {}", if m.private { "yes" } else { "no" });
            let tiers = m.tracker_tiers();
            if tiers.is_empty() {
                crate::outln!("trackers:      none");
            } else {
                crate::outln!("trackers:");
                for (i, t) in tiers.iter().enumerate() {
                    crate::outln!("  tier {}: {}", i + 1, esc(&t.join(" ")));
                }
            }
            if !m.url_list.is_empty() {
                crate::outln!("web seeds:");
                for u in &m.url_list {
                    crate::outln!("  {}", esc(u));
                }
            }
            if let Some(d) = m.creation_date {
                crate::outln!("created:       {}", format_date(d));
            }
            if let Some(c) = &m.created_by {
                crate::outln!("created by:    {}", esc(c));
            }
            if let Some(c) = &m.comment {
                crate::outln!("comment:       {}", esc(c));
            }
            let files = listed_files(&m);
            let data = files.iter().filter(|(n, _)| n.is_some()).count();
            let width = data.saturating_sub(1).to_string().len();
            crate::outln!("files ({data}, numbered as --select takes them):");
            for (n, f) in files {
                let tag = match (f.pad, f.symlink) {
                    (true, _) => "  (pad)",
                    (_, true) => "  (symlink)",
                    _ => "",
                };
                let n = n.map_or(String::new(), |n| n.to_string());
                crate::outln!(
                    "  {n:>width$}  {:>10}  {}{tag}",
                    human_bytes(f.length),
                    esc(&f.path.display().to_string())
                );
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
                crate::outln!("{v}");
                return Ok(());
            }
            crate::outln!("magnet link (metadata not fetched yet)");
            crate::outln!(
                "name:          {}",
                esc(mg.name.as_deref().unwrap_or("(none)"))
            );
            crate::outln!("info-hash:     {}", mg.info_hash);
            for t in &mg.trackers {
                crate::outln!("tracker:       {}", esc(t));
            }
            for p in &mg.peers {
                crate::outln!("peer:          {p}");
            }
            for p in &mg.peer_hosts {
                crate::outln!("peer:          {}", esc(p));
            }
            for w in &mg.web_seeds {
                crate::outln!("web seed:      {}", esc(w));
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
    pub format: crate::store::create::Format,
}

/// A tracker (http, https, udp) or web seed (http, https) URL, checked
/// before any hashing so a typo does not cost a long wait.
fn check_url(flag: &str, u: &str, schemes: &[&str]) -> Result<()> {
    let parsed =
        url::Url::parse(u).map_err(|e| anyhow::anyhow!("{flag} {u:?}: not a URL ({e})"))?;
    if !schemes.contains(&parsed.scheme()) || parsed.host_str().is_none_or(str::is_empty) {
        bail!(
            "{flag} {u:?}: expected a {} URL with a host",
            schemes.join("/")
        );
    }
    Ok(())
}

pub use crate::face::lines::plural;

pub fn create_cmd(a: CreateArgs) -> Result<()> {
    let trackers: Vec<String> = a
        .trackers
        .iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    for t in &trackers {
        check_url("--tracker", t, &["http", "https", "udp"])?;
    }
    for w in &a.web_seeds {
        check_url("--web-seed", w.trim(), &["http", "https"])?;
    }
    if let Some(p) = a.piece_length {
        if !p.is_power_of_two() || !(16 << 10..=256 << 20).contains(&p) {
            bail!("--piece-length {p}: must be a power of two between 16 KiB and 256 MiB");
        }
    }
    if !a.path.exists() {
        bail!("{}: no such file or folder", a.path.display());
    }
    // Where the torrent goes is known before hashing when -o is given;
    // otherwise it is <name>.torrent here, from the path's own name.
    let default_name = std::fs::canonicalize(&a.path).ok().and_then(|p| {
        p.file_name()
            .map(|n| format!("{}.torrent", n.to_string_lossy()))
    });
    let out = match (&a.output, default_name) {
        (Some(o), _) => o.clone(),
        (None, Some(n)) => PathBuf::from(n),
        (None, None) => bail!("{}: has no usable file name", a.path.display()),
    };
    if out.exists() && !a.force {
        bail!(
            "{} already exists (use --force to overwrite)",
            out.display()
        );
    }
    if out.is_dir() {
        bail!("{}: is a folder; give a file name with -o", out.display());
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        bail!(
            "{}: folder {} does not exist",
            out.display(),
            parent.display()
        );
    }
    let opts = CreateOptions {
        format: a.format,
        piece_length: a.piece_length,
        // Each -t is its own tier, in the order given: clients try them in turn.
        trackers: trackers.into_iter().map(|t| vec![t]).collect(),
        web_seeds: a.web_seeds.iter().map(|w| w.trim().to_string()).collect(),
        private: a.private,
        comment: a.comment.clone(),
        threads: hash_threads(),
    };
    let total = dir_size(&a.path);
    let created = with_counter_bar(total, "hashing", |done| create(&a.path, &opts, done))?;
    if !created.skipped.is_empty() {
        let names: Vec<String> = created
            .skipped
            .iter()
            .take(5)
            .map(|p| esc(&p.display().to_string()).into_owned())
            .collect();
        let more = created.skipped.len().saturating_sub(names.len());
        eprintln!(
            "skipped {} hidden or system {}: {}{}",
            created.skipped.len(),
            if created.skipped.len() == 1 {
                "file"
            } else {
                "files"
            },
            names.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
    }
    let bytes = created.torrent.to_bytes();
    let m = Metainfo::from_bytes(&bytes).context("created torrent does not load")?;
    std::fs::write(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    crate::outln!(
        "created {} ({}, {} of {}, info-hash {})",
        out.display(),
        human_bytes(m.total_length),
        plural(m.piece_count() as u64, "piece", "pieces"),
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
    // Without a file's piece layer its pieces cannot be checked at all;
    // "missing" would say the data is not there, which is not known.
    if let Some(v2) = m.v2.as_ref().filter(|v| m.v2_only() && !v.complete()) {
        let n = v2.files.iter().filter(|f| !f.checkable()).count();
        bail!(
            "{}: {} no piece layer in this torrent (a magnet's metadata has none), so their pieces cannot be checked; verify with the complete .torrent",
            torrent.display(),
            plural(n as u64, "file has", "files have")
        );
    }
    if !dir.is_dir() {
        bail!("{}: not a folder", dir.display());
    }
    let store = Store::open_read(Layout::from_metainfo(&m), dir);
    let lengths =
        crate::store::ownership::lengths_on_disk(&m, &crate::store::confine::Root::trusting(dir));
    if lengths.iter().all(Option::is_none) {
        if let Some(hint) =
            content_folder_hint(&m, dir, |parent| format!("shoal verify TORRENT {parent}"))
        {
            bail!("{hint}");
        }
    }
    // Bytes past a file's end are not in any piece, so the hashes cannot
    // see them: a file longer than the torrent says is bad all the same.
    let too_long: Vec<Option<u64>> = m
        .files
        .iter()
        .zip(&lengths)
        .map(|(f, len)| len.filter(|l| f.is_data() && *l > f.length))
        .collect();
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
                "size_on_disk": lengths[*i],
                "too_long": too_long[*i].is_some(),
                "good": t.good, "missing": t.missing, "bad": t.bad,
            })).collect::<Vec<_>>(),
        });
        crate::outln!("{v}");
    } else {
        for (i, t) in &files {
            let f = &m.files[*i];
            let state = if too_long[*i].is_some() {
                "bad"
            } else if t.missing == 0 && t.bad == 0 {
                "ok"
            } else if t.good == 0 && t.bad == 0 {
                "missing"
            } else {
                "incomplete"
            };
            let extra = too_long[*i].map_or(String::new(), |l| {
                format!("  (too long: {l} bytes on disk, torrent says {})", f.length)
            });
            crate::outln!(
                "{:<10} {:>12}  good {:>6}  missing {:>6}  bad {:>6}  {}{extra}",
                state,
                human_bytes(f.length),
                t.good,
                t.missing,
                t.bad,
                esc(&f.path.display().to_string())
            );
        }
        crate::outln!(
            "{}: {} good, {} missing, {} bad",
            plural(checks.len() as u64, "piece", "pieces"),
            total.good,
            total.missing,
            total.bad
        );
    }
    if total.good as usize != checks.len() {
        bail!(
            "incomplete: {} of {} missing, {} bad",
            total.missing,
            plural(checks.len() as u64, "piece", "pieces"),
            total.bad
        );
    }
    let long = too_long.iter().filter(|l| l.is_some()).count();
    if long > 0 {
        bail!(
            "{} longer than the torrent says",
            plural(long as u64, "file is", "files are")
        );
    }
    Ok(())
}

/// When `dir` holds none of the torrent's files but looks like its content
/// folder itself (a common slip: `verify T out/name` for `verify T out`,
/// `seed T --from out/name` for `--from out`), says so and what to type
/// instead (`command` of the folder that holds it).
fn content_folder_hint(
    m: &Metainfo,
    dir: &Path,
    command: impl Fn(&str) -> String,
) -> Option<String> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let looks_like = if m.multi_file {
        m.files.iter().filter(|f| f.is_data()).any(|f| {
            f.path
                .strip_prefix(&m.name)
                .is_ok_and(|rel| dir.join(rel).is_file())
        })
    } else {
        dir.file_name().is_some_and(|n| n == m.name.as_str()) && dir.is_file()
    };
    looks_like.then(|| {
        format!(
            "none of the torrent's files are under {}, which looks like its content folder itself; give the folder that holds {:?}: {}",
            dir.display(),
            m.name,
            command(&parent.display().to_string())
        )
    })
}

/// `download` and `seed`.
pub struct RunArgs {
    /// The .torrent file or magnet link.
    pub torrent: PathBuf,
    pub dir: PathBuf,
    /// `--peer`, resolved when the run starts.
    pub peers: Vec<String>,
    pub quiet: bool,
    pub json: bool,
    pub overwrite: bool,
    /// For a magnet: where to write the .torrent made of the fetched metadata.
    pub save_torrent: Option<PathBuf>,
    /// File selection: globs, numbers as `--list` shows them; list and exit.
    pub only: Vec<String>,
    pub select: Option<String>,
    pub list: bool,
    /// Seconds without data after which a download gives up.
    pub stall_timeout: Option<u64>,
    /// The session: port, DHT, local discovery, limits, encryption.
    pub session: crate::session::SessionConfig,
    /// The torrent's knobs.
    pub options: crate::torrent::Options,
    /// Pieces in order instead of rarest first (`--sequential`).
    pub sequential: bool,
}

/// `shoal serve`.
pub struct ServeArgs {
    pub listen: std::net::SocketAddr,
    pub state_dir: Option<PathBuf>,
    pub download_dir: PathBuf,
    pub token: Option<String>,
    pub allowed_hosts: Vec<String>,
    /// The session; its DHT keeps its nodes in the state folder.
    pub session: crate::session::SessionConfig,
    /// Every torrent's knobs.
    pub options: crate::torrent::Options,
    /// Torrents with more files are refused (`--max-files`).
    pub max_files: usize,
    /// `--watch-dir`: .torrent and .magnet files put there are added.
    pub watch_dir: Option<PathBuf>,
}

/// The token of a service on a non-loopback address: the one given, else
/// the one kept in the state folder, else a new one written there (0600).
fn service_token(state_dir: &Path, given: Option<String>, remote: bool) -> Result<Option<String>> {
    if given.as_deref().is_some_and(|t| t.trim().is_empty()) {
        // main refuses it as a usage error; a library caller gets this.
        bail!("the access token is empty");
    }
    if given.is_some() || !remote {
        return Ok(given);
    }
    let path = state_dir.join("token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_string();
        if !t.is_empty() {
            return Ok(Some(t));
        }
    }
    let token: String = (0..32)
        .map(|_| b"0123456789abcdef"[rand::random::<usize>() % 16] as char)
        .collect();
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut f, token.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(Some(token))
}

/// `shoal serve`: the session, the service and its HTTP API, until Ctrl-C
/// or SIGTERM (exit 0: stopping is how a service ends).
pub fn serve(a: ServeArgs) -> Result<()> {
    let state_dir = a
        .state_dir
        .clone()
        .or_else(crate::discovery::dht::default_state_dir)
        .context("no state folder: give --state-dir (HOME is not set)")?;
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("cannot create {}", state_dir.display()))?;
    let remote = !a.listen.ip().is_loopback();
    let token = service_token(&state_dir, a.token.clone(), remote)?;
    let rt = runtime()?;
    let mut session_cfg = a.session;
    if let Some(d) = session_cfg.dht.as_mut() {
        d.state_dir = Some(state_dir.clone());
    }
    rt.block_on(async {
        let session = crate::session::Session::start(session_cfg).await?;
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("cannot listen on {}", a.listen))?;
        let svc = crate::service::Service::start(
            session.clone(),
            crate::service::ServiceConfig {
                state_dir: state_dir.clone(),
                download_root: a.download_dir.clone(),
                options: a.options.clone(),
                max_files: a.max_files,
            },
        )
        .await?;
        let app = crate::service::api::router(
            svc.clone(),
            crate::service::api::ApiConfig {
                token: token.clone(),
                allowed_hosts: a.allowed_hosts.clone(),
                listen: a.listen,
            },
        );
        let shown = match a.listen.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
                format!("127.0.0.1:{}", a.listen.port())
            }
            std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
                format!("[::1]:{}", a.listen.port())
            }
            _ => a.listen.to_string(),
        };
        eprintln!(
            "shoal serve: http://{shown}/ ({}; data under {}; state in {}; peers on port {})",
            plural(svc.list().len() as u64, "torrent", "torrents"),
            esc(&svc.download_root().display().to_string()),
            esc(&state_dir.display().to_string()),
            session.port()
        );
        if token.is_some() {
            eprintln!(
                "access token required: {} (Authorization: Bearer TOKEN)",
                if a.token.is_some() {
                    "the one given with --token".to_string()
                } else {
                    format!("in {}", state_dir.join("token").display())
                }
            );
        }
        // What the router did with the peer port, once settled and on
        // each change (as `download` says it).
        let mapping = tokio::spawn({
            use crate::session::portmap::MappingStatus as Mapping;
            let mut rx = session.port_mapping();
            async move {
                loop {
                    let s = rx.borrow_and_update().clone();
                    if !matches!(s, Mapping::Off | Mapping::Trying { .. }) {
                        eprintln!("{}", s.line());
                    }
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            }
        });
        if let Some(w) = &a.watch_dir {
            std::fs::create_dir_all(w)
                .with_context(|| format!("cannot create the watch folder {}", w.display()))?;
            eprintln!(
                "watching {} for .torrent and .magnet files",
                esc(&w.display().to_string())
            );
            tokio::spawn(crate::service::watch_dir::run(svc.clone(), w.clone()));
        }
        let server = tokio::spawn(crate::service::http::serve(listener, app));
        let signal = tokio::select! {
            s = crate::session::wait_for_signal() => s,
            r = server => {
                r.context("the HTTP server failed")?.context("the HTTP server failed")?;
                0
            }
        };
        tracing::info!("signal {signal}: stopping");
        eprintln!("stopping: announcing to trackers and saving state");
        svc.shutdown().await;
        mapping.abort();
        session.close().await;
        session.save().await;
        anyhow::Ok(())
    })
}

/// `90`, `90s`, `30m`, `2h`, `1d`, `1h30m`: a duration for --seed-time.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{s:?}: expected a duration such as 90s, 30m, 2h or 1h30m");
    let t = s.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(secs));
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !num.is_empty() || t.is_empty() {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(total))
}

/// `download --list`: the files with the numbers `--select` takes (from
/// 0, as everywhere).
fn list_files(m: &Metainfo) {
    let data = crate::torrent::selection::data_files(m);
    let width = data.len().saturating_sub(1).to_string().len();
    for (n, &i) in data.iter().enumerate() {
        let f = &m.files[i];
        crate::outln!(
            "{:>width$}  {:>10}  {}",
            n,
            human_bytes(f.length),
            esc(&f.path.display().to_string())
        );
    }
}

/// A run stopped by a signal: not a failure, but scripts must tell it from
/// success, so it exits 128 + the signal's number (130 for Ctrl-C, 143
/// for SIGTERM), the shell's convention.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Interrupted {
    pub signal: i32,
    pub message: String,
}

impl Interrupted {
    pub fn exit_code(&self) -> u8 {
        (128 + self.signal).clamp(0, 255) as u8
    }
}

/// A byte count with an optional unit: `512k`, `1M`, `10MiB`, `2G`, or plain
/// bytes. A bare letter or one followed by `iB` is a power of 1024, as in
/// curl and aria2; `kB`, `MB`, `GB` are powers of 1000.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a size such as 4096, 512k, 1M or 10MiB"))?;
    let scale: u64 = match unit {
        "" | "b" | "B" => 1,
        "k" | "K" | "KiB" | "kiB" => 1 << 10,
        "m" | "M" | "MiB" => 1 << 20,
        "g" | "G" | "GiB" => 1 << 30,
        "t" | "T" | "TiB" => 1 << 40,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use k, M, G, KiB, MiB, GiB, kB, MB, GB)"
            ))
        }
    };
    let bytes = value * scale as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("{s:?}: too large"));
    }
    if bytes.fract() != 0.0 && scale == 1 {
        return Err(format!("{s:?}: not a whole number of bytes"));
    }
    Ok(bytes.round() as u64)
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

/// The `done` event of a `--json` run: `outcome` is `complete`,
/// `interrupted` or `stalled` (docs/json.md).
pub(crate) fn emit_done(outcome: &str, path: &Path, p: &crate::torrent::Progress, secs: f64) {
    crate::face::ui::emit(
        "done",
        json!({
            "complete": p.complete,
            "outcome": outcome,
            "path": path.to_string_lossy(),
            "downloaded": p.downloaded,
            "uploaded": p.uploaded,
            "have_bytes": p.have_bytes,
            "total": p.total,
            "hash_failures": p.hash_failures,
            "banned": p.banned,
            "seconds": secs,
            "ratio": ratio(p),
        }),
    );
}

/// Copies of the torrent sent: what --seed-ratio counts, so the two agree.
fn ratio(p: &crate::torrent::Progress) -> f64 {
    p.uploaded as f64 / p.total.max(1) as f64
}

/// `download` (seed = false) and `seed` (seed = true). With `--json` an
/// error is also an `error` event, so a reader of stdout alone learns why.
pub fn run_torrent(a: RunArgs, seed: bool) -> Result<()> {
    let json = a.json;
    let r = run_torrent_inner(a, seed);
    if let (true, Err(e)) = (json, &r) {
        let message = format!("{e:#}").replace('\n', " ");
        crate::face::ui::emit("error", json!({ "message": message }));
    }
    r
}

fn run_torrent_inner(a: RunArgs, seed: bool) -> Result<()> {
    let display = Display::choose(a.json, a.quiet);
    // Held until the bars are gone, before the summary is printed below
    // them (log notes then become lines above it).
    let live = (display == Display::Bars).then(crate::face::term::Live::hold);
    let peers = resolve_peers(&a.peers)?;
    let source = load_source(&a.torrent.to_string_lossy())?;
    // Listing a .torrent's files needs no network at all.
    if let (true, Source::Torrent(m)) = (a.list, &source) {
        list_files(m);
        return Ok(());
    }
    runtime()?.block_on(run_in_session(a, seed, display, peers, source, live))
}

/// How long an exit waits for uTP connections to send what is queued.
const FLUSH_WITHIN: std::time::Duration = std::time::Duration::from_secs(15);

/// A session of its own for one torrent: its magnet phase if it came as
/// a link, then its run, then the report.
async fn run_in_session(
    mut a: RunArgs,
    seed: bool,
    display: Display,
    peers: Vec<std::net::SocketAddr>,
    source: Source,
    live: Option<crate::face::term::Live>,
) -> Result<()> {
    let stop = crate::face::single::Stop::on_signals();
    let session_cfg = std::mem::take(&mut a.session);
    let session = crate::session::Session::start(session_cfg).await?;
    let (m, learned) = match source {
        Source::Torrent(m) => (*m, Vec::new()),
        Source::Magnet(mg) => {
            let resolved =
                crate::face::magnet::resolve(&session, &mg, &a, &peers, display, &stop).await;
            // Nodes learned while the metadata was sought count next time,
            // whether or not it came.
            if resolved.is_err() {
                session.close().await;
                session.save().await;
            }
            let r = resolved?;
            (r.meta, r.learned)
        }
    };
    if a.list {
        list_files(&m);
        return Ok(());
    }
    if seed
        && crate::store::ownership::lengths_on_disk(
            &m,
            &crate::store::confine::Root::trusting(&a.dir),
        )
        .iter()
        .all(Option::is_none)
    {
        if let Some(hint) = content_folder_hint(&m, &a.dir, |parent| {
            format!("shoal seed TORRENT --from {parent}")
        }) {
            bail!("{hint}");
        }
    }
    let selection = crate::torrent::selection::choose(&m, &a.only, a.select.as_deref())?;
    if let Some(sel) = &selection {
        let (n, bytes) = sel
            .iter()
            .zip(&m.files)
            .filter(|(s, _)| **s)
            .fold((0, 0), |(n, b), (_, f)| (n + 1, b + f.length));
        if display != Display::Silent && display != Display::Json {
            eprintln!(
                "selected {} ({}) of {}",
                plural(n, "file", "files"),
                human_bytes(bytes),
                plural(
                    crate::torrent::selection::data_files(&m).len() as u64,
                    "file",
                    "files"
                )
            );
        }
    }
    let name = esc(&m.name).into_owned();
    let dest = a.dir.join(&m.name);
    let opts = crate::session::TorrentOptions {
        dir: a.dir.clone(),
        base: None,
        peers,
        sequential: a.sequential,
        readers: None,
        learned,
        require_complete: seed,
        overwrite: a.overwrite,
        selection,
        high: None,
        stall_timeout: a.stall_timeout.map(std::time::Duration::from_secs),
        torrent: a.options.clone(),
        resume: None,
        lazy_lock: false,
    };
    let summary = crate::face::single::run(&session, m, opts, display, &stop).await;
    if (seed || a.options.keep_seeding) && stop.which().is_none() {
        // A seed goal met with pieces still queued for a peer: they go
        // out first (a signal cuts the wait short). A download that ends
        // when complete does not wait: its peers, left with requests it
        // will not answer, learn it at once from its closed port and ask
        // others (docs/swarm.md: waiting here stalled a swarm 15 s).
        let mut flag = stop.flag();
        tokio::select! {
            _ = session.flush_uploads(FLUSH_WITHIN) => {}
            _ = flag.wait_for(|s| *s) => {}
        }
    }
    drop(live);
    session.save().await;
    report(&a, &name, &dest, summary?)
}

/// The run's last words: the `done` event or the summary line, and its
/// end as an error when it did not complete.
fn report(a: &RunArgs, name: &str, dest: &Path, summary: crate::session::Summary) -> Result<()> {
    let p = &summary.progress;
    let secs = summary.elapsed.as_secs_f64();
    let ratio = ratio(p);
    let outcome = if summary.stalled.is_some() {
        "stalled".to_string()
    } else {
        format!("{:?}", summary.outcome).to_lowercase()
    };
    if a.json {
        emit_done(&outcome, dest, p, secs);
    } else if !a.quiet {
        // Bytes, and their average rate when there were any.
        let moved = |n: u64| match n {
            0 => "0 B".to_string(),
            n => format!(
                "{} ({}/s)",
                human_bytes(n),
                human_bytes((n as f64 / secs.max(0.001)) as u64)
            ),
        };
        let ratio = if a.options.keep_seeding {
            format!(", ratio {ratio:.2}")
        } else {
            String::new()
        };
        crate::outln!(
            "{}",
            crate::face::ui::join_to_fit(&[
                (
                    "",
                    format!(
                        "{name}: {} of {} verified",
                        human_bytes(p.have_bytes),
                        human_bytes(p.total)
                    )
                ),
                (" ", format!("in {}", esc(&dest.display().to_string()))),
                (
                    "; ",
                    format!(
                        "received {}, sent {}{ratio} in {}",
                        moved(p.downloaded),
                        moved(p.uploaded),
                        crate::face::ui::human_duration(summary.elapsed)
                    )
                ),
            ])
        );
    }
    if let Some(why) = summary.stalled {
        bail!("{why}");
    }
    // Seeding ends with Ctrl-C by design: that is success, not an interruption.
    if let Some(signal) = summary.signal.filter(|_| !summary.complete) {
        return Err(Interrupted {
            signal,
            message: format!(
                "interrupted with {} of {} verified; run the same command again to resume",
                p.pieces_have,
                plural(p.piece_count.into(), "piece", "pieces")
            ),
        }
        .into());
    }
    if !summary.complete {
        bail!(
            "stopped with {} of {} verified; run the same command again to resume",
            p.pieces_have,
            plural(p.piece_count.into(), "piece", "pieces")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("1.5 MiB"), Ok(3 << 19));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("").is_err());
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("1.5").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn durations() {
        use std::time::Duration as D;
        assert_eq!(parse_duration("90"), Ok(D::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(D::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(D::from_secs(1800)));
        assert_eq!(parse_duration("1h30m"), Ok(D::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(D::from_secs(172_800)));
        for bad in ["", "m", "1x", "1h30", "-5", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
