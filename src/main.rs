//! The `shoal` command line: argument parsing over the library.
//! Exit codes: 0 success, 1 failure (one-line error on stderr), 2 usage.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use shoal::cli;

#[derive(Parser)]
#[command(name = "shoal", version, about = "A fast, correct BitTorrent client")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Flags `download` and `seed` share.
#[derive(clap::Args)]
struct SwarmFlags {
    /// TCP port to listen on for peers (default: first free of 6881-6889).
    #[arg(long)]
    port: Option<u16>,
    /// Connect to this peer directly (HOST:PORT); repeatable.
    #[arg(long = "peer")]
    peers: Vec<String>,
    /// Most peers to be connected to at once.
    #[arg(long, default_value_t = 50)]
    max_peers: usize,
    /// Print only errors.
    #[arg(long)]
    quiet: bool,
    /// Print newline-delimited JSON progress events instead of bars.
    #[arg(long)]
    json: bool,
    /// Limit uploads to this many bytes per second.
    #[arg(long, value_name = "BYTES_PER_SEC")]
    upload_limit: Option<u64>,
}

#[derive(Subcommand)]
enum Command {
    /// Show what a .torrent file or magnet link holds.
    Info {
        /// A .torrent file or a magnet: URI.
        torrent: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Make a .torrent from a file or folder.
    Create {
        /// The file or folder to share.
        path: PathBuf,
        /// Where to write the torrent (default: <name>.torrent here).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Tracker announce URL; repeat for backup trackers (one tier each).
        #[arg(short = 't', long = "tracker")]
        trackers: Vec<String>,
        /// Piece length in bytes (power of two); chosen automatically if absent.
        #[arg(long)]
        piece_length: Option<u64>,
        /// Mark the torrent private (BEP 27: trackers only, no DHT/PEX).
        #[arg(long)]
        private: bool,
        /// A comment stored in the torrent.
        #[arg(long)]
        comment: Option<String>,
        /// Web seed URL (BEP 19); repeatable.
        #[arg(long = "web-seed")]
        web_seeds: Vec<String>,
        /// Overwrite the output file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Download a torrent into DIR, verifying every piece; exit 0 when done.
    Download {
        torrent: PathBuf,
        /// Folder to download into: files go to DIR/<name>.
        #[arg(short, long = "output", default_value = ".")]
        output: PathBuf,
        /// Keep seeding after the download completes, until Ctrl-C.
        #[arg(long)]
        seed: bool,
        #[command(flatten)]
        swarm: SwarmFlags,
    },
    /// Serve complete, verified data to the swarm until Ctrl-C.
    Seed {
        torrent: PathBuf,
        /// Folder holding the data (as with `download -o DIR`).
        #[arg(long = "from", default_value = ".")]
        from: PathBuf,
        #[command(flatten)]
        swarm: SwarmFlags,
    },
    /// Check data on disk against a torrent's piece hashes.
    Verify {
        torrent: PathBuf,
        /// The folder the data was downloaded into (as with `download -o DIR`).
        dir: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

impl SwarmFlags {
    fn into_args(self, torrent: PathBuf, dir: PathBuf, keep_seeding: bool) -> cli::RunArgs {
        cli::RunArgs {
            torrent,
            dir,
            port: self.port,
            peers: self.peers,
            keep_seeding,
            max_peers: self.max_peers,
            quiet: self.quiet,
            json: self.json,
            upload_limit: self.upload_limit,
        }
    }
}

fn init_logging(quiet: bool) {
    let default = if quiet { "error" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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

fn main() -> ExitCode {
    tune_allocator();
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
        } => cli::create_cmd(cli::CreateArgs {
            path,
            output,
            trackers,
            piece_length,
            private,
            comment,
            web_seeds,
            force,
        }),
        Command::Verify { torrent, dir, json } => cli::verify(&torrent, &dir, json),
        Command::Download {
            torrent,
            output,
            seed,
            swarm,
        } => cli::run_torrent(swarm.into_args(torrent, output, seed), false),
        Command::Seed {
            torrent,
            from,
            swarm,
        } => cli::run_torrent(swarm.into_args(torrent, from, true), true),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
    }
}
