//! The `shoal` command line: argument parsing over the library.
//! Exit codes: 0 success, 1 failure (one-line error on stderr), 2 usage.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use shoal::face::cli;
use shoal::peer::mse::Policy;
use shoal::peer::transport::Mode;

#[derive(Parser)]
#[command(name = "shoal", version, about = "A fast, correct BitTorrent client")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How peers are found and reached: the same for `download`, `seed` and
/// `serve`.
#[derive(clap::Args)]
struct NetFlags {
    /// Do not use the DHT to find peers (also: SHOAL_NO_DHT=1).
    #[arg(long, env = "SHOAL_NO_DHT", value_parser = clap::builder::FalseyValueParser::new())]
    no_dht: bool,
    /// DHT node to join the network through, instead of the well-known routers; repeatable.
    #[arg(long = "dht-bootstrap", value_name = "HOST:PORT", value_parser = parse_peer)]
    dht_bootstrap: Vec<String>,
    /// UDP port of the DHT node (default: the port after --port when uTP is on, the same number with --transport tcp, else a free one).
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    dht_port: Option<u16>,
    /// Do not exchange peer lists with peers (PEX, BEP 11).
    #[arg(long)]
    no_pex: bool,
    /// Encrypt peer connections (MSE): prefer (dial encrypted offering plain text too, retry in plain text), require (RC4 both ways, never plain), plain (never dial encrypted; refuse RC4-only peers).
    #[arg(long, value_name = "MODE", default_value = "prefer", value_parser = encryption_parser())]
    encryption: Policy,
    /// How peers connect, both ways: both (uTP first, TCP when uTP does not answer; accept both), utp (uTP only, LEDBAT-paced), tcp (TCP only). uTP uses the UDP side of --port.
    #[arg(long, value_name = "MODE", default_value = "both", value_parser = transport_parser())]
    transport: Mode,
    /// Do not announce or look for peers on the local network (BEP 14; also: SHOAL_NO_LSD=1).
    #[arg(long, env = "SHOAL_NO_LSD", value_parser = clap::builder::FalseyValueParser::new())]
    no_lsd: bool,
    /// Do not ask the router to forward the listening port (UPnP, NAT-PMP/PCP; also: SHOAL_NO_PORT_MAPPING=1).
    #[arg(long, env = "SHOAL_NO_PORT_MAPPING", value_parser = clap::builder::FalseyValueParser::new())]
    no_port_mapping: bool,
    /// Do not punch holes through NATs to reach peers nobody can dial, nor relay for others (BEP 55 over uTP; also: SHOAL_NO_HOLEPUNCH=1).
    #[arg(long, env = "SHOAL_NO_HOLEPUNCH", value_parser = clap::builder::FalseyValueParser::new())]
    no_holepunch: bool,
}

/// Flags `download` and `seed` share.
#[derive(clap::Args)]
struct SwarmFlags {
    /// Port to listen on for peers, TCP and (uTP) UDP (default: first free of 6881-6889).
    #[arg(short, long, value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// Connect to this peer directly (HOST:PORT, [IPv6]:PORT); repeatable.
    #[arg(long = "peer", value_name = "HOST:PORT", value_parser = parse_peer)]
    peers: Vec<String>,
    /// Most peers to be connected to at once (at least 1).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    max_peers: u64,
    /// Print only errors.
    #[arg(short, long)]
    quiet: bool,
    /// Print newline-delimited JSON events instead of bars (docs/json.md).
    #[arg(long)]
    json: bool,
    /// Limit uploads to this rate: bytes per second, or with a unit (512k, 1M, 10MiB).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    upload_limit: Option<u64>,
    /// Limit downloads to this rate: bytes per second, or with a unit (512k, 1M, 10MiB).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    download_limit: Option<u64>,
    #[command(flatten)]
    net: NetFlags,
    /// Do not download from the torrent's web seeds (HTTP servers in its `url-list`, BEP 19).
    #[arg(long)]
    no_web_seeds: bool,
    /// Stop seeding once uploads reach this many times the torrent's size (e.g. 2.0).
    #[arg(long, value_name = "RATIO", value_parser = parse_ratio)]
    seed_ratio: Option<f64>,
    /// Stop seeding after this long (90s, 30m, 2h, 1h30m).
    #[arg(long, value_name = "DURATION", value_parser = cli::parse_duration)]
    seed_time: Option<std::time::Duration>,
    /// Super-seed (BEP 16) when the data is complete at the start: show each peer a few pieces at a time, so each piece leaves here about once.
    #[arg(long)]
    super_seed: bool,
    /// Folder for state kept between runs, such as DHT nodes (default: $XDG_DATA_HOME/shoal or ~/.local/share/shoal).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Give up (exit 1, saying why) when an incomplete download received
    /// no data for this many seconds (for a magnet link, from the start:
    /// the metadata counts). Off by default: a watched download waits.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    stall_timeout: Option<u64>,
    #[command(flatten)]
    harness: HarnessFlags,
}

/// Knobs for the swarm harness (benches/swarm, docs/swarm.md), not a user
/// interface: hidden, and usually set through the environment.
#[derive(clap::Args)]
struct HarnessFlags {
    /// Regular upload slots of the choker.
    #[arg(
        long,
        hide = true,
        env = "SHOAL_TEST_UPLOAD_SLOTS",
        default_value_t = 4
    )]
    test_upload_slots: usize,
    /// Never unchoke anyone: an honest free rider.
    #[arg(long, hide = true, env = "SHOAL_TEST_FREE_RIDE", value_parser = clap::builder::FalseyValueParser::new())]
    test_free_ride: bool,
}

impl NetFlags {
    /// The session these flags ask for; the DHT keeps its nodes in
    /// `state_dir`.
    fn session(
        &self,
        port: Option<u16>,
        state_dir: Option<PathBuf>,
    ) -> shoal::session::SessionConfig {
        shoal::session::SessionConfig {
            port,
            dht: (!self.no_dht).then(|| shoal::discovery::dht::Config {
                port: self.dht_port,
                bootstrap: (!self.dht_bootstrap.is_empty()).then(|| self.dht_bootstrap.clone()),
                state_dir: state_dir.or_else(shoal::discovery::dht::default_state_dir),
            }),
            lsd: !self.no_lsd,
            encryption: self.encryption,
            port_mapping: (!self.no_port_mapping).then(shoal::session::portmap::Config::from_env),
            transport: self.transport,
            holepunch: !self.no_holepunch,
            ..Default::default()
        }
    }
}

/// `--encryption`: its three values, shown in the help.
fn encryption_parser() -> impl clap::builder::TypedValueParser<Value = Policy> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Policy::NAMES).try_map(|s| s.parse::<Policy>())
}

/// `--transport`: its three values, shown in the help.
fn transport_parser() -> impl clap::builder::TypedValueParser<Value = Mode> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Mode::NAMES).try_map(|s| s.parse::<Mode>())
}

fn parse_rate(s: &str) -> Result<u64, String> {
    match cli::parse_size(s)? {
        0 => Err("must be at least 1 byte per second (leave the flag out for no limit)".into()),
        n => Ok(n),
    }
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("{s:?}: expected a ratio above 0, such as 1.5")),
    }
}

/// An access token: never empty (an empty one would let an empty cookie in).
fn parse_token(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err(
            "the access token is empty; give one, or leave out --token and SHOAL_TOKEN".into(),
        );
    }
    Ok(s.to_string())
}

fn parse_selection(s: &str) -> Result<String, String> {
    shoal::torrent::selection::parse_numbers(s, usize::MAX).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}

fn parse_piece_length(s: &str) -> Result<u64, String> {
    cli::parse_size(s)
}

/// HOST:PORT with a port of 1-65535; the name is resolved when the run
/// starts (a name that does not resolve is an error then).
fn parse_peer(s: &str) -> Result<String, String> {
    if s.parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.port() != 0)
    {
        return Ok(s.to_string());
    }
    let bad = || format!("{s:?}: expected HOST:PORT, e.g. 127.0.0.1:6881 or [::1]:6881");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 || host.contains(':') {
        return Err(bad());
    }
    Ok(s.to_string())
}

fn is_magnet(s: &str) -> bool {
    s.get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("magnet:"))
}

/// A .torrent path or a magnet link, the latter checked here so a typo is
/// a usage error.
fn parse_download_source(s: &str) -> Result<PathBuf, String> {
    if is_magnet(s) {
        shoal::metainfo::magnet::Magnet::parse(s).map_err(|e| e.to_string())?;
    }
    Ok(PathBuf::from(s))
}

/// Seeding needs the data's hashes before anything is served; a magnet
/// link has none until its metadata is fetched.
fn parse_seed_source(s: &str) -> Result<PathBuf, String> {
    let bare_hash =
        !std::path::Path::new(s).exists() && shoal::metainfo::magnet::from_bare_hash(s).is_some();
    if is_magnet(s) || bare_hash {
        return Err(
            "seed needs a .torrent file; for a magnet link use `shoal download MAGNET --seed`"
                .into(),
        );
    }
    Ok(PathBuf::from(s))
}

#[derive(Subcommand)]
enum Command {
    /// Show what a .torrent file or magnet link holds.
    Info {
        /// A .torrent file, a magnet: URI, an http(s) URL of a .torrent, or a bare info-hash.
        torrent: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Make a .torrent from a file or folder.
    Create {
        /// The file or folder to share (hidden and system files are left out).
        path: PathBuf,
        /// Where to write the torrent (default: <name>.torrent here).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Tracker announce URL; repeat for backup trackers (one tier each).
        #[arg(short = 't', long = "tracker", value_name = "URL")]
        trackers: Vec<String>,
        /// Piece length: a power of two from 16 KiB to 256 MiB, in bytes or with a unit (256k, 1M); chosen automatically if absent.
        #[arg(long, value_name = "SIZE", value_parser = parse_piece_length)]
        piece_length: Option<u64>,
        /// Mark the torrent private (BEP 27: trackers only, no DHT/PEX).
        #[arg(long)]
        private: bool,
        /// A comment stored in the torrent.
        #[arg(long)]
        comment: Option<String>,
        /// Web seed URL (BEP 19); repeatable.
        #[arg(long = "web-seed", value_name = "URL")]
        web_seeds: Vec<String>,
        /// Overwrite the output file if it exists.
        #[arg(long)]
        force: bool,
        /// Make a BitTorrent v2 torrent (BEP 52: SHA-256 merkle trees); only v2 clients can use it.
        #[arg(long, conflicts_with = "hybrid")]
        v2: bool,
        /// Make a hybrid torrent: v1 and v2 in one, files aligned to pieces with pad files (BEP 47/52).
        #[arg(long)]
        hybrid: bool,
    },
    /// Download a torrent into DIR, verifying every piece; exit 0 when done.
    Download {
        /// The .torrent file, magnet link, http(s) URL of a .torrent, or bare info-hash to download.
        #[arg(value_parser = parse_download_source)]
        torrent: PathBuf,
        /// Folder to download into: files go to DIR/<name>.
        #[arg(short, long = "output", value_name = "DIR", default_value = ".")]
        output: PathBuf,
        /// Keep seeding after the download completes, until Ctrl-C.
        #[arg(long)]
        seed: bool,
        /// Replace files in the way that shoal did not create and that do not match the torrent (they are refused otherwise).
        #[arg(long)]
        overwrite: bool,
        /// For a magnet link: also write the torrent made of the fetched metadata here.
        #[arg(long, value_name = "PATH")]
        save_torrent: Option<PathBuf>,
        /// Download only the files whose path matches this glob (e.g. '*.mkv'); repeatable.
        #[arg(long, value_name = "GLOB")]
        only: Vec<String>,
        /// Download only these files, by the numbers --list shows (from 0, e.g. 0,2-4).
        #[arg(long, value_name = "LIST", value_parser = parse_selection)]
        select: Option<String>,
        /// List the torrent's files with their numbers and sizes, then exit.
        #[arg(long)]
        list: bool,
        /// Download pieces in order, from the start (for a player reading the growing file), instead of rarest first.
        #[arg(long)]
        sequential: bool,
        #[command(flatten)]
        swarm: SwarmFlags,
    },
    /// Serve complete, verified data to the swarm until Ctrl-C.
    Seed {
        /// The .torrent file whose data is served.
        #[arg(value_parser = parse_seed_source)]
        torrent: PathBuf,
        /// Folder holding the data (as with `download -o DIR`).
        #[arg(long = "from", value_name = "DIR", default_value = ".")]
        from: PathBuf,
        #[command(flatten)]
        swarm: SwarmFlags,
    },
    /// Check data on disk against a torrent's piece hashes.
    Verify {
        /// The .torrent file to check against.
        torrent: PathBuf,
        /// The folder the data was downloaded into (as with `download -o DIR`).
        dir: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run many torrents as a service with an HTTP API and a web page (docs/api.md).
    Serve {
        /// Address of the HTTP API and web page; other than loopback needs --allow-remote.
        #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:3030")]
        listen: std::net::SocketAddr,
        /// Allow --listen on an address other than loopback (a token is then required).
        #[arg(long)]
        allow_remote: bool,
        /// Require this access token on every API request (default: none on loopback; generated into the state folder otherwise).
        #[arg(long, env = "SHOAL_TOKEN", hide_env_values = true, value_parser = parse_token)]
        token: Option<String>,
        /// Also accept requests whose Host is NAME (e.g. the machine's DNS name); repeatable.
        #[arg(long = "allow-host", value_name = "NAME")]
        allow_hosts: Vec<String>,
        /// Folder every torrent's data goes under; requests cannot leave it.
        #[arg(long, value_name = "DIR", default_value = ".")]
        download_dir: PathBuf,
        /// Port for peers, TCP and (uTP) UDP (default: first free of 6881-6889).
        #[arg(short, long, value_parser = clap::value_parser!(u16).range(1..))]
        port: Option<u16>,
        /// Most peers per torrent at once (at least 1).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        max_peers: u64,
        /// Most connections of all torrents together (at least 1).
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        max_connections: u64,
        /// Stop seeding a torrent once its uploads reach this many times its size.
        #[arg(long, value_name = "RATIO", value_parser = parse_ratio)]
        seed_ratio: Option<f64>,
        /// Stop seeding a torrent after this long (90s, 30m, 2h).
        #[arg(long, value_name = "DURATION", value_parser = cli::parse_duration)]
        seed_time: Option<std::time::Duration>,
        /// Limit uploads of all torrents together (512k, 1M, 10MiB; changeable over the API).
        #[arg(long, value_name = "RATE", value_parser = parse_rate)]
        upload_limit: Option<u64>,
        /// Limit downloads of all torrents together.
        #[arg(long, value_name = "RATE", value_parser = parse_rate)]
        download_limit: Option<u64>,
        /// Folder for the service's state: its torrents, DHT nodes, token (default: $XDG_DATA_HOME/shoal or ~/.local/share/shoal).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Add each .torrent or .magnet file that appears in DIR (renamed NAME.added, or NAME.invalid with the reason in NAME.invalid.txt); a sub-folder's files go to that sub-folder of --download-dir.
        #[arg(long, value_name = "DIR")]
        watch_dir: Option<PathBuf>,
        /// Refuse torrents with more files than this.
        #[arg(long, value_name = "N", default_value_t = shoal::service::DEFAULT_MAX_FILES as u64, value_parser = clap::value_parser!(u64).range(1..=shoal::metainfo::MAX_FILES as u64))]
        max_files: u64,
        #[command(flatten)]
        net: NetFlags,
    },
    /// Add torrents to a running service: .torrent files, magnet links, URLs or info-hashes.
    Add {
        /// .torrent files, magnet: links, http(s) URLs of .torrent files, or bare info-hashes.
        #[arg(required = true, value_name = "TORRENT")]
        sources: Vec<String>,
        /// Folder under the service's download folder.
        #[arg(long, value_name = "DIR")]
        dir: Option<String>,
        /// Download only these files, by the numbers `download --list` shows (from 0, e.g. 0,2-4).
        #[arg(long, value_name = "LIST", value_parser = parse_selection)]
        only: Option<String>,
        /// Add without starting.
        #[arg(long)]
        paused: bool,
        /// Replace files in the way that shoal did not create and that do not match the torrent (they are refused otherwise).
        #[arg(long)]
        overwrite: bool,
        /// A category for the torrents; without --dir their data goes to the sub-folder of that name.
        #[arg(long, value_name = "NAME")]
        category: Option<String>,
        #[command(flatten)]
        remote: RemoteFlags,
    },
    /// List a running service's torrents.
    List {
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: RemoteFlags,
    },
    /// Pause torrents of a running service (by info-hash or its first digits).
    Pause {
        #[arg(required = true, value_name = "HASH")]
        hashes: Vec<String>,
        #[command(flatten)]
        remote: RemoteFlags,
    },
    /// Resume paused (or failed) torrents of a running service.
    Resume {
        #[arg(required = true, value_name = "HASH")]
        hashes: Vec<String>,
        /// Let the next run replace files in the way that shoal did not create (a torrent stopped by them).
        #[arg(long)]
        overwrite: bool,
        #[command(flatten)]
        remote: RemoteFlags,
    },
    /// Remove torrents from a running service.
    Remove {
        #[arg(required = true, value_name = "HASH")]
        hashes: Vec<String>,
        /// Also delete the files the torrent wrote (never files that were there before).
        #[arg(long)]
        delete_data: bool,
        #[command(flatten)]
        remote: RemoteFlags,
    },
    /// Print a shell completion script (e.g. `shoal completions bash > /etc/bash_completion.d/shoal`).
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the manual page in roff (e.g. `shoal man | man -l -`).
    Man,
}

/// Where the client verbs find the service.
#[derive(clap::Args)]
struct RemoteFlags {
    /// The service's address.
    #[arg(long, env = "SHOAL_URL", default_value = shoal::face::remote::DEFAULT_URL)]
    url: String,
    /// Its access token, if it requires one.
    #[arg(long, env = "SHOAL_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl RemoteFlags {
    fn connect(self) -> anyhow::Result<shoal::face::remote::Remote> {
        shoal::face::remote::Remote::new(&self.url, self.token)
    }
}

impl SwarmFlags {
    fn into_args(
        self,
        torrent: PathBuf,
        dir: PathBuf,
        keep_seeding: bool,
        overwrite: bool,
    ) -> cli::RunArgs {
        let mut session = self.net.session(self.port, self.state_dir);
        session.upload_limit = self.upload_limit;
        session.download_limit = self.download_limit;
        cli::RunArgs {
            torrent,
            dir,
            peers: self.peers,
            quiet: self.quiet,
            json: self.json,
            overwrite,
            save_torrent: None,
            only: Vec::new(),
            select: None,
            list: false,
            stall_timeout: self.stall_timeout,
            session,
            options: shoal::torrent::Options {
                max_peers: self.max_peers as usize,
                upload_slots: self.harness.test_upload_slots,
                keep_seeding: keep_seeding || self.seed_ratio.is_some() || self.seed_time.is_some(),
                seed_ratio: self.seed_ratio,
                seed_time: self.seed_time,
                super_seed: self.super_seed,
                pex: !self.net.no_pex,
                web_seeds: !self.no_web_seeds,
                free_ride: self.harness.test_free_ride,
            },
            sequential: false,
        }
    }
}

/// On a terminal, log records are short human lines, a cause's repeats
/// counted on its line (`face::log`); with `SHOAL_LOG` set, or a stderr
/// that is not a terminal (a log file), tracing's full format.
fn init_logging(quiet: bool) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let given = std::env::var_os("SHOAL_LOG").is_some();
    if !given && std::io::stderr().is_terminal() {
        let level = if quiet {
            tracing::Level::ERROR
        } else {
            tracing::Level::WARN
        };
        // shoal's own info records may be repeats of a warning shown.
        let filter = tracing_subscriber::filter::Targets::new()
            .with_target("shoal", if quiet { level } else { tracing::Level::INFO })
            .with_default(level);
        tracing_subscriber::registry()
            .with(shoal::face::log::HumanLayer.with_filter(filter))
            .init();
        return;
    }
    let default = if quiet { "error" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Through the bars' MultiProgress: a log line lifts the bars out of
        // the way instead of leaving a stale copy of them above it.
        .with_writer(shoal::face::log::LogWriter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// Blocks and pieces are buffers of 16 KiB to a few MiB, allocated and
/// freed all day. glibc serves those from fresh mmaps by default, so each
/// one costs page faults and zeroing before we even copy into it; keeping
/// them on the heap lets freed buffers be reused warm. One arena: a piece
/// buffer is filled on a runtime thread and freed on a hashing thread, and
/// with an arena per thread the memory freed in one was not reused by the
/// other (1 GiB download: 26 MiB peak instead of 41-43, same speed).
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

/// Each file being written holds a descriptor for its lock (see
/// `store`), so a torrent of thousands of files needs more than the usual
/// soft limit of 1024; the hard limit is the system's real bound.
fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn main() -> ExitCode {
    tune_allocator();
    raise_open_file_limit();
    let cli = Cli::parse();
    let quiet = match &cli.command {
        Command::Download { swarm, .. } | Command::Seed { swarm, .. } => swarm.quiet,
        _ => false,
    };
    init_logging(quiet);
    let result = match cli.command {
        Command::Info { torrent, json } => cli::info(&torrent, json),
        Command::Create {
            path,
            output,
            trackers,
            piece_length,
            private,
            comment,
            web_seeds,
            force,
            v2,
            hybrid,
        } => cli::create_cmd(cli::CreateArgs {
            path,
            output,
            trackers,
            piece_length,
            private,
            comment,
            web_seeds,
            force,
            format: match (v2, hybrid) {
                (true, _) => shoal::store::create::Format::V2,
                (_, true) => shoal::store::create::Format::Hybrid,
                _ => shoal::store::create::Format::V1,
            },
        }),
        Command::Verify { torrent, dir, json } => cli::verify(&torrent, &dir, json),
        Command::Download {
            torrent,
            output,
            seed,
            overwrite,
            save_torrent,
            only,
            select,
            list,
            sequential,
            swarm,
        } => {
            let mut args = swarm.into_args(torrent, output, seed, overwrite);
            args.sequential = sequential;
            args.save_torrent = save_torrent;
            args.only = only;
            args.select = select;
            args.list = list;
            cli::run_torrent(args, false)
        }
        Command::Seed {
            torrent,
            from,
            swarm,
        } => cli::run_torrent(swarm.into_args(torrent, from, true, false), true),
        Command::Serve {
            listen,
            allow_remote,
            token,
            allow_hosts,
            download_dir,
            port,
            max_peers,
            max_connections,
            seed_ratio,
            seed_time,
            upload_limit,
            download_limit,
            state_dir,
            max_files,
            watch_dir,
            net,
        } => {
            if !listen.ip().is_loopback() && !allow_remote {
                Cli::command()
                    .error(
                        clap::error::ErrorKind::ArgumentConflict,
                        format!("--listen {listen} is reachable from other machines: add --allow-remote (a token is then required)"),
                    )
                    .exit();
            }
            let mut session = net.session(port, None);
            session.upload_limit = upload_limit;
            session.download_limit = download_limit;
            session.max_connections = Some(max_connections as usize);
            cli::serve(cli::ServeArgs {
                listen,
                state_dir,
                download_dir,
                token,
                allowed_hosts: allow_hosts,
                session,
                max_files: max_files as usize,
                watch_dir,
                options: shoal::torrent::Options {
                    max_peers: max_peers as usize,
                    keep_seeding: true,
                    seed_ratio,
                    seed_time,
                    pex: !net.no_pex,
                    ..Default::default()
                },
            })
        }
        Command::Add {
            sources,
            dir,
            only,
            paused,
            overwrite,
            category,
            remote,
        } => remote.connect().and_then(|r| {
            shoal::face::remote::add(
                &r,
                shoal::face::remote::AddArgs {
                    sources: &sources,
                    dir,
                    only,
                    paused,
                    overwrite,
                    category,
                },
            )
        }),
        Command::List { json, remote } => remote
            .connect()
            .and_then(|r| shoal::face::remote::list(&r, json)),
        Command::Pause { hashes, remote } => remote
            .connect()
            .and_then(|r| shoal::face::remote::pause_resume(&r, &hashes, "pause", false)),
        Command::Resume {
            hashes,
            overwrite,
            remote,
        } => remote
            .connect()
            .and_then(|r| shoal::face::remote::pause_resume(&r, &hashes, "resume", overwrite)),
        Command::Remove {
            hashes,
            delete_data,
            remote,
        } => remote
            .connect()
            .and_then(|r| shoal::face::remote::remove(&r, &hashes, delete_data)),
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            // Into memory first: clap_complete panics on a write error.
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "shoal", &mut buf);
            shoal::out::bytes(&buf);
            Ok(())
        }
        Command::Man => shoal::face::manual::render(Cli::command())
            .map(|page| shoal::out::bytes(&page))
            .map_err(anyhow::Error::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(i) = e.downcast_ref::<cli::Interrupted>() {
                shoal::face::term::say(&i.to_string());
                return ExitCode::from(i.exit_code());
            }
            shoal::face::term::say(&format!("error: {}", one_line(&e)));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes on one line, each fact once: a cause whose
/// text its parent already shows (thiserror's `{0}` with `#[from]`) is
/// not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    // Causes may quote torrent or tracker text: one line, and no control
    // characters reach the terminal.
    shoal::out::escape(&msg.replace(['\n', '\r'], " ")).into_owned()
}
